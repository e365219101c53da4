"""`gramc plot RUN_DIR`: a run's curves. (`gramc train` composes model, train and eval, so it is the
recipe's command: `gramc.recipes.cli`.) `plot_run` is imported in `_plot` for start-up time."""

from __future__ import annotations

import argparse
from pathlib import Path


def _plot(args: argparse.Namespace) -> int:
    from .plot import plot_run

    paths = plot_run(args.run_dir, args.out)  # a PlotError is printed by gramc.cli.main
    for p in paths:
        print(p)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    if "plot" not in subparsers.choices:
        q = subparsers.add_parser("plot", help="loss / learning-rate / validation-metric curves of a run as PNG",
                                  description="Write loss.png, lr.png and metrics.png from RUN_DIR/log.jsonl.")
        q.add_argument("run_dir", type=Path, metavar="RUN_DIR")
        q.add_argument("--out", type=Path, default=None, help="folder for the PNGs (default: RUN_DIR)")
        q.set_defaults(func=_plot)
