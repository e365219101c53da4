"""The arguments every `gramc` command that reads a Config shares: `--config FILE key.sub=value`,
and for the commands that load a trained run, `--run RUN [--checkpoint C] key.sub=value`.

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


def add_run_args(p: argparse.ArgumentParser, example: str) -> None:
    """`--run RUN`, `--checkpoint best|last|FOLDER` and trailing overrides on top of the run's
    config.yaml (`gramc.model.runs.load_model_from_run` reads them); `example`: an override to show."""
    p.add_argument("--run", required=True, help="run folder (config.yaml + checkpoints/)")
    p.add_argument("--checkpoint", default="best", help="best | last | a checkpoint folder or model.safetensors")
    p.add_argument("overrides", nargs="*", metavar="key.sub=value",
                   help=f"config overrides on top of the run's config.yaml, e.g. {example}")


def config_from_args(args: argparse.Namespace) -> Config:
    """The validated Config of a parsed command line (`--config` and overrides, both optional)."""
    return load_config(getattr(args, "config", None), getattr(args, "overrides", None))
