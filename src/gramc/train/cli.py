"""`gramc train` (also under `torchrun --nproc_per_node=N -m gramc train ...`) and `gramc plot RUN_DIR`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..cli import add_config_args, config_from_args


def _train(args: argparse.Namespace) -> int:
    from .checkpoint import CheckpointError
    from .trainer import TrainError, train

    if args.resume:
        if args.config:
            print("gramc train: error: --resume continues a run with the config saved in RUN_DIR/config.yaml; "
                  "drop --config (key=value overrides are still applied)", file=sys.stderr)
            return 2
        from ..eval.evaluate import EvalError, run_config

        try:
            cfg = run_config(args.resume, args.overrides or [])
        except EvalError as e:
            print(f"gramc train: error: cannot resume: {e}", file=sys.stderr)
            return 2
    else:
        cfg = config_from_args(args)
    import torch.distributed as dist

    try:
        result = train(cfg, resume=bool(args.resume))
    except (TrainError, CheckpointError) as e:
        print(f"gramc train: error: {e}", file=sys.stderr)
        return 1
    finally:
        if dist.is_initialized():
            rank = dist.get_rank()
            dist.destroy_process_group()
        else:
            rank = 0
    if rank != 0:
        return 0
    test = result.metrics.get("test", {})
    metrics = test.get("metrics") if isinstance(test, dict) else None
    if metrics:
        print("test metrics of the " + str(test.get("checkpoint")) + " checkpoint: "
              + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items() if isinstance(v, float)))
    print(f"run folder: {result.run_dir}")
    return 0


def _plot(args: argparse.Namespace) -> int:
    from .plot import PlotError, plot_run

    try:
        paths = plot_run(args.run_dir, args.out)
    except PlotError as e:
        print(f"gramc plot: error: {e}", file=sys.stderr)
        return 2
    for p in paths:
        print(p)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train", help="train GRAM-C (DDP under torchrun), validate, test the best checkpoint",
        description="Train GRAM-C into run.out: checkpoints/{last,best}, log.jsonl, audit.json, metrics.json "
                    "(see docs/runs.md). Multi-process: torchrun --nproc_per_node=N -m gramc train ...")
    add_config_args(p)
    p.add_argument("--resume", metavar="RUN_DIR", help="continue RUN_DIR exactly where it stopped "
                   "(config from RUN_DIR/config.yaml; overrides still apply)")
    p.set_defaults(func=_train)

    if "plot" not in subparsers.choices:
        q = subparsers.add_parser("plot", help="loss / learning-rate / validation-metric curves of a run as PNG",
                                  description="Write loss.png, lr.png and metrics.png from RUN_DIR/log.jsonl.")
        q.add_argument("run_dir", type=Path, metavar="RUN_DIR")
        q.add_argument("--out", type=Path, default=None, help="folder for the PNGs (default: RUN_DIR)")
        q.set_defaults(func=_plot)
