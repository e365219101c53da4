"""The arguments every `gramc` command that reads a Config shares: `--config FILE key.sub=value`.

Below every stage's `cli.py` (and below `gramc.cli`, which only collects the stages' commands),
so that settings always come from the one typed `Config` by the one rule of `load_config`.
"""

from __future__ import annotations

import argparse

from .config import Config, load_config


def add_config_args(p: argparse.ArgumentParser, required: bool = False) -> None:
    """`--config FILE` plus trailing `key.sub=value` overrides."""
    p.add_argument("--config", required=required, help="YAML config file (see configs/)")
    p.add_argument("overrides", nargs="*", metavar="key.sub=value",
                   help="config overrides, e.g. train.lr=1e-3 model.prefix.enabled=false")


def config_from_args(args: argparse.Namespace) -> Config:
    """The validated Config of a parsed command line (`--config` and overrides, both optional)."""
    return load_config(getattr(args, "config", None), getattr(args, "overrides", None))
