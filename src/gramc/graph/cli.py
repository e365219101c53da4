"""`gramc gcn {train,check}`: build the LightGCN artefacts, and check a GCN folder against a dataset.

    gramc gcn train [--data DIR] [--out GCN_DIR] [--config FILE] [gcn.epochs=30 ...]
    gramc gcn check --data DIR --gcn GCN_DIR [--json]

`check` prints the checks as a table (or `{"ok", "checks": [...]}` with --json) and exits 1 when a
check fails, 2 when the arguments are unusable (no such dataset or folder).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..cliargs import add_config_args, config_from_args
from ..config import Config
from ..data.dataset import SeqDataset
from ..lock import output_lock

# Each command imports the code it runs inside its own function, not here, for start-up time:
# `gramc --help` and argument errors then load neither torch nor the other stages.


def _dataset(args: argparse.Namespace, cfg: Config) -> tuple[SeqDataset, dict[str, Path]]:
    """The dataset from --data (a prepared folder) or from the config (data.path / synthetic)."""
    if args.data:
        return SeqDataset.load(args.data), {"data": Path(args.data)}
    from ..data.source import load_dataset

    inputs = {"data": Path(cfg.data.path)} if cfg.data.path else {}
    return load_dataset(cfg.data), inputs


def _train(args: argparse.Namespace) -> int:
    from .artifacts import gcn_folder
    from .lightgcn import train_lightgcn

    cfg = config_from_args(args)
    ds, inputs = _dataset(args, cfg)
    out = Path(args.out) if args.out else gcn_folder(cfg)
    with output_lock(out, "--out"):  # one writer per GCN folder
        meta = train_lightgcn(ds, cfg.gcn, out, run_cfg=cfg, inputs=inputs)
    v, p = meta["valid"], meta["popularity_valid"]
    if meta["interactions"]["leaks_valid_or_test"]:
        print(f"WARNING: trained on gcn.interactions={cfg.gcn.interactions}, which includes validation/test "
              f"targets; any validation/test number of a model reading this table is inflated "
              f"(`gramc gcn check` fails its leakage checks)", file=sys.stderr)
    print(f"wrote {out}: {ds.num_items:,} items x {cfg.gcn.dim} dims, trained on "
          f"{meta['interactions']['count']:,} '{meta['interactions']['split']}' interactions "
          f"in {meta['time_s']['train']:.0f}s; final loss {meta['final_loss']:.4f}")
    print(f"LightGCN validation recall@10 {v['recall@10']:.4f} ndcg@10 {v['ndcg@10']:.4f} "
          f"(popularity {p['recall@10']:.4f} / {p['ndcg@10']:.4f}); next: gramc gcn check "
          f"--data DIR --gcn {out}")
    return 0


def _check(args: argparse.Namespace) -> int:
    from ..checks import Report
    from ..data.dataset import DataError
    from .checks import check_gcn

    ds = SeqDataset.load(args.data)
    if not Path(args.gcn).is_dir():
        raise DataError(f"--gcn {args.gcn}: no such folder; build one with `gramc gcn train --out {args.gcn}`")
    report = Report(check_gcn(ds, args.gcn))
    print(report.to_json() if args.json else report.table())
    return report.exit_code


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("gcn", help="LightGCN item embeddings for the collaborative prefix")
    sub = p.add_subparsers(dest="gcn_command", metavar="SUBCOMMAND")
    sub.required = True

    t = sub.add_parser("train", help="train LightGCN on training interactions and write the GCN folder")
    t.add_argument("--data", help="prepared dataset folder (default: data.path, else synthetic data)")
    t.add_argument("--out", help="GCN folder to write (default: gcn.out, else <run.out>/gcn)")
    add_config_args(t)
    t.set_defaults(func=_train)

    c = sub.add_parser("check", help="check a GCN folder (mapping, table, leakage) against a dataset")
    c.add_argument("--data", required=True, help="prepared dataset folder")
    c.add_argument("--gcn", required=True, help="GCN folder (from `gramc gcn train`)")
    c.add_argument("--json", action="store_true", help='print {"ok", "checks": [...]} instead of a table')
    c.set_defaults(func=_check)
