"""`gramc train` (also under `torchrun --nproc_per_node=N -m gramc train ...`): the GRAM-C recipe;
`gramc train-head`: a dense head fitted on a trained run's frozen backbone (recipes.dense_head).

The commands' code is imported inside `_train` / `_train_head`, not at the top, for start-up time:
`gramc --help` and argument errors should not load torch and the model.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..cliargs import add_config_args, add_run_args, config_from_args


def _train(args: argparse.Namespace) -> int:
    from ..runtime import leave_distributed, rank_world
    from ..train.runfolder import RunFolderError, resume_configs
    from .train_gramc import train

    saved = None
    if args.resume:
        # the run's own config.yaml plus overrides; train() refuses overrides of keys that may not
        # change on resume (train.runfolder.RESUMABLE_KEYS)
        if args.config:
            raise RunFolderError("--resume continues a run with the config saved in RUN_DIR/config.yaml; "
                                 "drop --config (key=value overrides are still applied, and checked)")
        saved, cfg = resume_configs(Path(args.resume), args.overrides or [])
    else:
        cfg = config_from_args(args)
    try:
        result = train(cfg, resume=bool(args.resume), overwrite=args.overwrite, saved=saved)
    finally:
        rank, _ = rank_world()
        leave_distributed(wait=False)  # also after an error, when another rank may never reach a barrier
    if rank != 0:
        return 0
    test = result.metrics.get("test", {})
    metrics = test.get("metrics") if isinstance(test, dict) else None
    if metrics:
        print("test metrics of the " + str(test.get("checkpoint")) + " checkpoint: "
              + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items() if isinstance(v, float)))
    print(f"run folder: {result.run_dir}")
    return 0


def _train_head(args: argparse.Namespace) -> int:
    from .dense_head import fit_head

    rec = fit_head(args.run, args.out, args.overrides or [], checkpoint=args.checkpoint)
    curve = rec["valid_ndcg@10"]
    print(f"dense head ({rec['head']['item']}) fitted in {rec['fit_seconds']:.0f} s after {rec['cache_seconds']:.0f} s "
          f"of cached states; epoch {rec['best_epoch']} of {len(curve)} kept (ndcg@10 {max(curve):.4f} on "
          f"{rec['tune_users']} validation users, the head alone)")
    print(f"run folder: {args.out}  (fuse it: gramc evaluate --run {args.out} eval.fusion.enabled=true "
          "eval.fusion.scorer=both)")
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

    h = subparsers.add_parser(
        "train-head", help="fit a dense retrieval head on a trained run, its backbone frozen",
        description="Fit a dense head (model.dense.*) on RUN's frozen model from cached states, with a full "
                    "softmax over the catalogue; the epoch kept is the best on eval.fusion.tune_users validation "
                    "users. Writes OUT: a run folder with RUN's weights plus the head (docs/evaluation.md).")
    add_run_args(h, "model.dense.item=both (model.dense.* and train.head.* only)")
    h.add_argument("--out", required=True, metavar="OUT_DIR", help="the new run folder, beside RUN (an earlier "
                   "one there is kept beside it as OUT.replaced-<time>)")
    h.set_defaults(func=_train_head)
