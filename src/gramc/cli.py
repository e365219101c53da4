"""The `gramc` command: one subcommand per pipeline stage.

Each stage's folder owns its commands in a `cli.py` with `register(subparsers)`; this module
only collects them. Shared helpers give every command the same `--config FILE key.sub=value`
interface, so settings always come from the one typed `Config`.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys

from .config import Config, load_config
from .errors import GramcError

# pipeline order; each module defines register(subparsers)
_COMMAND_MODULES = [
    "gramc.data.cli",  # data prepare | download | stats
    "gramc.ids.cli",  # ids build | check
    "gramc.graph.cli",  # gcn train
    "gramc.train.cli",  # train
    "gramc.eval.cli",  # evaluate
    "gramc.serve.cli",  # recommend
    "gramc.baselines.cli",  # baseline pop | sasrec | lightgcn
    "gramc.doctor.cli",  # doctor ...
    "gramc.pipeline.cli",  # quickstart | pipeline | report | plot
]


def add_config_args(p: argparse.ArgumentParser, required: bool = False) -> None:
    """`--config FILE` plus trailing `key.sub=value` overrides."""
    p.add_argument("--config", required=required, help="YAML config file (see configs/)")
    p.add_argument("overrides", nargs="*", metavar="key.sub=value",
                   help="config overrides, e.g. train.lr=1e-3 model.prefix.enabled=false")


def config_from_args(args: argparse.Namespace) -> Config:
    return load_config(getattr(args, "config", None), getattr(args, "overrides", None))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gramc",
        description="GRAM-C: generative recommendation with late fusion and a collaborative prefix.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in _COMMAND_MODULES:
        if importlib.util.find_spec(name) is None:
            continue
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        rc = args.func(args)
    except GramcError as e:  # the one exit path for every gramc error: no traceback
        print(f"gramc {args.command}: error: {e}", file=sys.stderr)
        return e.exit_code
    return int(rc or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
