"""Benchmark: LightGCN on Amazon Beauty (training interactions only), as GRAM-C's table and a baseline.

    .venv/bin/python bench/lightgcn_beauty.py [--sweep-epochs 4] [--epochs 10] [--reuse-sweep] [--batch-size 8192]

1. Reads ../shared/datasets/amazon-beauty/user_sequence.txt into a SeqDataset (items in order of
   first appearance; LightGCN needs no item metadata).
2. Small lr x reg sweep of short runs, chosen by validation ndcg@10.
3. Final run with the chosen values; validation and test recall@10 / ndcg@10 with full ranking
   over all 12,101 items (the model trained on s[:-2] also scores the test split), against
   popularity (training counts) from the same code.
4. `check_gcn` on the final folder.
Writes bench/results/lightgcn_beauty.json and the "LightGCN" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from gramc.config import GcnConfig, to_dict  # noqa: E402
from gramc.data.dataset import SeqDataset  # noqa: E402
from gramc.metrics import summarize  # noqa: E402
from gramc.graph.checks import check_gcn  # noqa: E402
from gramc.graph.lightgcn import lightgcn_ranks, popularity_ranks, train_lightgcn  # noqa: E402
from gramc.io import write_json  # noqa: E402
from _docs import replace_section  # noqa: E402  (bench/ is on sys.path when run as a script)

BEAUTY = ROOT / ".." / "shared" / "datasets" / "amazon-beauty"
RESULTS = ROOT / "bench" / "results" / "lightgcn_beauty.json"
DOC = ROOT / "docs" / "benchmarks.md"
SECTION = "## LightGCN"


def load_beauty() -> SeqDataset:
    ids: dict[str, int] = {}
    users, seqs = [], []
    with open(BEAUTY / "user_sequence.txt", encoding="utf-8") as f:
        for line in f:
            parts = line.split()
            users.append(parts[0])
            seqs.append([ids.setdefault(a, len(ids)) for a in parts[1:]])
    return SeqDataset(list(ids), [{} for _ in ids], users, seqs,
                      meta={"source": str(BEAUTY / "user_sequence.txt")})


def reused_sweep(args: argparse.Namespace) -> list[dict]:
    """The sweep of an earlier run of this script if it used the same grid, epochs and batch."""
    if not RESULTS.is_file():
        return []
    old = json.loads(RESULTS.read_text(encoding="utf-8"))
    grid = {(float(a), float(b)) for a in args.lrs.split(",") for b in args.regs.split(",")}
    sweep = old.get("sweep", [])
    same = ({(s["lr"], s["reg"]) for s in sweep} == grid and all(s["epochs"] == args.sweep_epochs for s in sweep)
            and old.get("final_config", {}).get("batch_size") == args.batch_size)
    if same:
        print(f"reusing the sweep of {RESULTS}")
    return sweep if same else []


def metrics(ranks) -> dict[str, float]:
    m = summarize(ranks, ks=(10, 20))
    return {"recall@10": round(m["hit@10"], 5), "ndcg@10": round(m["ndcg@10"], 5),
            "recall@20": round(m["hit@20"], 5), "ndcg@20": round(m["ndcg@20"], 5), "users": m["users"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sweep-epochs", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=8192)
    ap.add_argument("--lrs", default="1e-2,2e-2")
    ap.add_argument("--regs", default="1e-4,1e-3")
    ap.add_argument("--eval-every", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", default="", help="folder for the GCN folders (default: a temporary one)")
    ap.add_argument("--reuse-sweep", action="store_true",
                    help="take the sweep from an earlier results JSON with the same sweep settings")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t_all = time.time()
    load_start = os.getloadavg()[0]

    ds = load_beauty()
    work = Path(args.work or tempfile.mkdtemp(prefix="lightgcn_beauty_"))
    print(f"Beauty: {ds.num_users} users, {ds.num_items} items, {ds.num_interactions} interactions; work {work}")
    pop = {"valid": metrics(popularity_ranks(ds, "valid")), "test": metrics(popularity_ranks(ds, "test"))}
    print("popularity", pop)

    base = GcnConfig(batch_size=args.batch_size, eval_every=0, similar_k=0)
    sweep = reused_sweep(args) if args.reuse_sweep else []
    sweep_reused = bool(sweep)
    for lr in (float(x) for x in args.lrs.split(",")) if not sweep else ():
        for reg in (float(x) for x in args.regs.split(",")):
            cfg = replace(base, lr=lr, reg=reg, epochs=args.sweep_epochs)
            meta = train_lightgcn(ds, cfg, work / f"sweep_lr{lr:g}_reg{reg:g}")
            sweep.append({"lr": lr, "reg": reg, "epochs": args.sweep_epochs, "valid": meta["valid"],
                          "final_loss": meta["final_loss"], "train_s": meta["time_s"]["train"]})
            print("sweep", sweep[-1])
    best = max(sweep, key=lambda r: r["valid"]["ndcg@10"])

    cfg = replace(base, lr=best["lr"], reg=best["reg"], epochs=args.epochs, eval_every=args.eval_every,
                  similar_k=20)
    final_dir = work / "final"
    meta = train_lightgcn(ds, cfg, final_dir)
    result_valid = metrics(lightgcn_ranks(final_dir, ds, "valid"))
    result_test = metrics(lightgcn_ranks(final_dir, ds, "test"))
    excl = {"valid": metrics(lightgcn_ranks(final_dir, ds, "valid", exclude_history=True)),
            "test": metrics(lightgcn_ranks(final_dir, ds, "test", exclude_history=True))}
    checks = check_gcn(ds, final_dir)
    out = {
        "command": "python bench/lightgcn_beauty.py " + " ".join(sys.argv[1:]),
        "machine": {"cpus": os.cpu_count(), "torch_threads": args.threads, "platform": platform.platform(),
                    "load_avg_1min_at_start": round(load_start, 2),
                    "note": "CPU shared with other jobs; times are upper bounds"},
        "dataset": {"users": ds.num_users, "items": ds.num_items, "interactions": ds.num_interactions,
                    "training_interactions": meta["interactions"]["count"]},
        "sweep": sweep,
        "sweep_reused": sweep_reused,
        "chosen": {"lr": best["lr"], "reg": best["reg"], "by": "validation ndcg@10 after the sweep epochs"},
        "final_config": to_dict(cfg),
        "final_train_s": meta["time_s"]["train"],
        "final_loss": meta["final_loss"],
        "kept_epoch": meta["kept_epoch"],
        "valid_curve": meta["valid_curve"],
        "lightgcn": {"valid": result_valid, "test": result_test},
        "lightgcn_exclude_history": excl,
        "popularity": pop,
        "check_gcn": [{"name": c.name, "level": c.level, "value": c.value} for c in checks],
        "check_gcn_ok": all(c.ok for c in checks),
        "total_s": round(time.time() - t_all, 1),
    }
    write_json(RESULTS, out)
    write_section(out)
    print(json.dumps({k: out[k] for k in ("chosen", "final_train_s", "lightgcn", "popularity", "check_gcn_ok")},
                     indent=2))


def _fmt(m: dict[str, float]) -> str:
    return f"{m['recall@10']:.4f} | {m['ndcg@10']:.4f} | {m['recall@20']:.4f} | {m['ndcg@20']:.4f}"


def write_section(r: dict) -> None:
    """Replace (or append) this benchmark's section of docs/benchmarks.md, leaving others' intact."""
    c = {x["name"]: x for x in r["check_gcn"]}
    top = ", ".join(f"{t['item']} (count {t['count']}, row {t['index']}, norm {t['norm']:.6f})"
                    for t in c["gcn.consistency.top_items"]["value"])
    sweep_rows = "\n".join(f"| {s['lr']:g} | {s['reg']:g} | {s['valid']['recall@10']:.4f} | "
                           f"{s['valid']['ndcg@10']:.4f} | {s['train_s']:.0f} |" for s in r["sweep"])
    curve = ", ".join(f"{v['epoch']}: {v['recall@10']:.4f}" for v in r["valid_curve"])
    fc = r["final_config"]
    lines = [
        SECTION,
        "",
        f"`{r['command']}` (writes `bench/results/lightgcn_beauty.json`). Amazon Beauty, "
        f"{r['dataset']['users']:,} users, {r['dataset']['items']:,} items; LightGCN trained on the "
        f"{r['dataset']['training_interactions']:,} training interactions only (each user's s[:-2]). "
        f"{r['machine']['cpus']}-core CPU shared with other jobs (1-min load {r['machine']['load_avg_1min_at_start']} "
        f"at start), {r['machine']['torch_threads']} torch threads.",
        "",
        f"Sweep ({r['sweep'][0]['epochs']} epochs each, batch {fc['batch_size']}, dim {fc['dim']}, "
        f"{fc['layers']} layers{'; reused from an identical earlier run' if r.get('sweep_reused') else ''}), "
        f"chosen by validation ndcg@10: lr {r['chosen']['lr']:g}, reg {r['chosen']['reg']:g}. Train times vary "
        f"with the machine's load, not only with the settings.",
        "",
        "| lr | reg | valid recall@10 | valid ndcg@10 | train s |",
        "|---|---|---|---|---|",
        sweep_rows,
        "",
        f"Final run: {fc['epochs']} epochs in {r['final_train_s']:.0f} s including the validation "
        f"points (final BPR loss {r['final_loss']:.4f}); validation recall@10 by epoch: {curve}; "
        f"embeddings kept from epoch {r['kept_epoch']} (best validation ndcg@10, gcn.keep_best).",
        "",
        "Full ranking over all items (ties count against the target), one held-out item per user:",
        "",
        "| model | split | recall@10 | ndcg@10 | recall@20 | ndcg@20 |",
        "|---|---|---|---|---|---|",
        f"| LightGCN | valid | {_fmt(r['lightgcn']['valid'])} |",
        f"| LightGCN | test | {_fmt(r['lightgcn']['test'])} |",
        f"| LightGCN, history items excluded | valid | {_fmt(r['lightgcn_exclude_history']['valid'])} |",
        f"| LightGCN, history items excluded | test | {_fmt(r['lightgcn_exclude_history']['test'])} |",
        f"| popularity (training counts) | valid | {_fmt(r['popularity']['valid'])} |",
        f"| popularity (training counts) | test | {_fmt(r['popularity']['test'])} |",
        "",
        f"`check_gcn` on the final folder ({'all pass' if r['check_gcn_ok'] else 'FAILURES'}): "
        f"mapping {c['gcn.mapping.entries']['value']['entries']:,} entries, indices "
        f"{c['gcn.mapping.contiguous']['value']['span'][0]}..{c['gcn.mapping.contiguous']['value']['span'][1]} "
        f"contiguous ({c['gcn.mapping.contiguous']['value']['gaps']} gaps), lookup rate "
        f"{c['gcn.mapping.lookup']['value']['rate']:.0%}; table {c['gcn.embeddings.shape']['value']['shape']} "
        f"{c['gcn.embeddings.dtype']['value']}, row 0 max |x| {c['gcn.embeddings.row0_zero']['value']['max_abs_row0']}, "
        f"norms min/mean/max {c['gcn.embeddings.norms']['value']['min']:.6f}/"
        f"{c['gcn.embeddings.norms']['value']['mean']:.6f}/{c['gcn.embeddings.norms']['value']['max']:.6f}, "
        f"values mean {c['gcn.embeddings.stats']['value']['mean']} std {c['gcn.embeddings.stats']['value']['std']}, "
        f"NaN/Inf rows {c['gcn.embeddings.nan_inf_rows']['value']['rows']}, zero rows "
        f"{c['gcn.embeddings.zero_rows']['value']['rows']}; most frequent items: {top}; leakage: trained on "
        f"'{c['gcn.leakage.interactions']['value']['split']}', fingerprint matches the training pairs: "
        f"{c['gcn.leakage.fingerprint']['level'] == 'pass'}.",
        "",
    ]
    replace_section(SECTION, "\n".join(lines), DOC)


if __name__ == "__main__":
    main()
