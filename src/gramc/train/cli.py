"""`gramc train` (also under `torchrun --nproc_per_node=N -m gramc train ...`) and `gramc plot RUN_DIR`."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..cli import add_config_args, config_from_args


def _train(args: argparse.Namespace) -> int:
    from .trainer import train

    if args.resume:
        # the run's own config.yaml plus overrides; train() refuses overrides of keys that may not
        # change on resume (train.runfolder.RESUMABLE_KEYS)
        from ..eval.evaluate import run_config
        from .runfolder import RunFolderError, saved_config

        if args.config:
            raise RunFolderError("--resume continues a run with the config saved in RUN_DIR/config.yaml; "
                                 "drop --config (key=value overrides are still applied, and checked)")
        saved_config(Path(args.resume))  # "cannot resume: ..." when RUN_DIR is no run folder
        cfg = run_config(args.resume, args.overrides or [])
    else:
        cfg = config_from_args(args)
    import torch.distributed as dist

    try:
        result = train(cfg, resume=bool(args.resume), overwrite=args.overwrite)
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
    from .plot import plot_run

    paths = plot_run(args.run_dir, args.out)  # a PlotError is printed by gramc.cli.main
    for p in paths:
        print(p)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train", help="train GRAM-C (DDP under torchrun), validate, test the best checkpoint",
        description="Train GRAM-C into run.out: checkpoints/{last,best}, log.jsonl, audit.json, metrics.json "
                    "(see docs/runs.md). Multi-process: torchrun --nproc_per_node=N -m gramc train ...")
    add_config_args(p)
    p.add_argument("--resume", metavar="RUN_DIR", help="continue RUN_DIR exactly where it stopped (config "
                   "from RUN_DIR/config.yaml, or --config; only budget/logging/eval-speed keys such as "
                   "train.epochs may differ, see docs/runs.md)")
    p.add_argument("--overwrite", action="store_true", help="run.out already holds a run: move it aside to "
                   "RUN.replaced-<time> and train a new one (without this, training into a run is refused)")
    p.set_defaults(func=_train)

    if "plot" not in subparsers.choices:
        q = subparsers.add_parser("plot", help="loss / learning-rate / validation-metric curves of a run as PNG",
                                  description="Write loss.png, lr.png and metrics.png from RUN_DIR/log.jsonl.")
        q.add_argument("run_dir", type=Path, metavar="RUN_DIR")
        q.add_argument("--out", type=Path, default=None, help="folder for the PNGs (default: RUN_DIR)")
        q.set_defaults(func=_plot)
