"""`gramc baseline {pop,sasrec,lightgcn} [--data DIR] --out OUT [--config FILE] [key=value ...]`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from ..cliargs import add_config_args, config_from_args
from ..config import Config
from ..lock import output_lock

if TYPE_CHECKING:
    from ..data.dataset import SeqDataset

# Each command imports the code it runs inside its own function, not here, for start-up time:
# `gramc --help` and argument errors then load neither torch nor the other stages.


def _run_model(model: str, ds: SeqDataset, cfg: Config, out: Path) -> dict:
    """Run baseline `model` on `ds` and write its metrics into `out`; its records per split."""
    inputs = {"data": cfg.data.path} if cfg.data.path else {}
    if model == "pop":
        from .pop import run_pop

        return run_pop(ds, cfg, out, inputs)
    if model == "sasrec":
        from .sasrec import run_sasrec

        return run_sasrec(ds, cfg, out, inputs)
    from .lightgcn import run_lightgcn

    return run_lightgcn(ds, cfg, out, inputs)


def _run(args: argparse.Namespace) -> int:
    from .common import format_row, load_data  # torch: imported when a baseline runs, not for --help

    from ..io import claim_output, is_lock_name, move_aside

    cfg = config_from_args(args)
    if args.data:
        cfg.data.path = args.data
    out = Path(args.out)
    with output_lock(out, "--out"):  # one writer per output folder
        claim_output(out, ("eval", "stage"), inputs=[cfg.data.path, cfg.gcn.out], what="--out")
        if out.is_dir() and not all(is_lock_name(p.name) for p in out.iterdir()):
            move_aside(out, "--out")  # an earlier baseline's metrics: kept whole beside it, never replaced
        recs = _run_model(args.model, load_data(cfg), cfg, out)
    print("| split | hit@5 | ndcg@5 | hit@10 | ndcg@10 |\n|---|---|---|---|---|")
    for split, rec in recs.items():
        print(format_row(f"{args.model} {split}", rec))
    print(f"metrics written to {out / 'metrics.json'} (test) and {out / 'metrics_valid.json'}")
    from ..metrics import popularity_warning, repeat_warning

    for warning in (repeat_warning(recs["test"].get("repeats", {}), args.model),
                    popularity_warning(recs["test"].get("popularity", {}), args.model)):
        if warning:
            print(f"WARNING {warning}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("baseline", help="full-ranking baselines: popularity, SASRec (cross-entropy), LightGCN",
                       description="Train/evaluate a baseline on the same splits and metrics as GRAM-C; "
                                   "writes metrics.json (test), metrics_valid.json, config + run info.")
    models = p.add_subparsers(dest="model", metavar="MODEL")
    models.required = True
    helps = {"pop": "popularity (training interaction counts)",
             "sasrec": "SASRec trained with cross-entropy over all items, early stopping on validation",
             "lightgcn": "LightGCN (gramc.graph) user-item scores, trained if its folder is missing"}
    for name, text in helps.items():
        q = models.add_parser(name, help=text, description=text)
        q.add_argument("--data", default="", help="prepared dataset folder (default: the synthetic dataset)")
        q.add_argument("--out", required=True, help="output folder")
        add_config_args(q)
        q.set_defaults(func=_run)
