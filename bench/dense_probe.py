"""Issue 30 probe: can the dense head alone, trained on a FROZEN plain GRAM-C, reach rare targets?

    PYTHONPATH=src OMP_NUM_THREADS=1 python bench/dense_probe.py --run /work/ev/models/gramc-user_passage/train \
        --item both --budget 720

Loads the trained plain GRAM-C (best checkpoint), attaches a fresh `DenseHead` (model.dense.item=ITEM,
detach=true), freezes every backbone parameter and trains the head alone with the project's loss path
(training Collator with the dense rows, `memory_and_rows` -> `_decode` -> `dense_losses`; the frozen
forward under no_grad), batches of 64, AdamW lr 2e-3, for `--budget` seconds or `--epochs` epochs.
Then ranks every item for 1,000 seeded validation users (history excluded) with the head alone and
with LightGCN fold-in, and reports recall@10/50 and ndcg@10 overall and per tercile of the target's
training count. Results: bench/results/dense_probe.json.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from gramc.data.splits import item_training_counts, samples  # noqa: E402
from gramc.eval.evaluate import encode_all_items, search_collator  # noqa: E402
from gramc.eval.fusion import Collaborative  # noqa: E402
from gramc.metrics import tercile_groups  # noqa: E402
from gramc.model.dense import DenseHead, DenseTables  # noqa: E402
from gramc.model.inputs import Collator  # noqa: E402
from gramc.model.runs import load_model_from_run  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "dense_probe.json"
USERS = 1000
EVAL_SEED = 2023


def metrics(ranks: np.ndarray) -> dict[str, float]:
    r = np.asarray(ranks)
    return {"recall@10": float((r < 10).mean()), "recall@50": float((r < 50).mean()),
            "ndcg@10": float(np.where(r < 10, 1.0 / np.log2(r + 2.0), 0.0).mean()), "users": int(len(r))}


def table(ranks: np.ndarray, counts: np.ndarray) -> dict[str, dict]:
    out = {"all": metrics(ranks)}
    for lo, hi, m in tercile_groups(counts):
        out[f"{lo}-{hi}"] = metrics(ranks[m])
    return out


def above(scores: torch.Tensor, chunk) -> np.ndarray:
    """Non-excluded items scoring above each target (every earlier item excluded, never the target)."""
    s = scores.float().clone()
    t = torch.tensor([x.target for x in chunk])
    for i, x in enumerate(chunk):
        seen = [j for j in x.seen if j != x.target]
        if seen:
            s[i, seen] = -math.inf
    ts = s[torch.arange(len(t)), t].unsqueeze(1)
    return (s > ts).sum(1).numpy()


SECTION = "## Dense head on a frozen GRAM-C (probe, issue 30)"


def merge_and_document(parts: list[str], out: Path) -> None:
    """Merge per-item result files into `out`; put the docs/benchmarks.md section in place."""
    import datetime
    import platform
    import subprocess

    sys.path.insert(0, str(ROOT / "bench"))
    from _docs import replace_section

    res = json.loads(out.read_text()) if out.is_file() else {}
    for p in parts:
        res.update(json.loads(Path(p).read_text()))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1) + "\n")
    cpu = next((ln.split(":", 1)[1].strip() for ln in subprocess.run(["lscpu"], capture_output=True, text=True)
                .stdout.splitlines() if ln.startswith("Model name")), platform.processor())
    first = next(iter(res.values()))
    groups = list(first["dense"])
    lines = [SECTION, "",
             "    PYTHONPATH=src OMP_NUM_THREADS=1 python bench/dense_probe.py --item ITEM --budget 660 --out PART   # gcn: --budget 420",
             "    PYTHONPATH=src python bench/dense_probe.py --joint /work/ev/dense/both --out PART   # reference row",
             "    PYTHONPATH=src python bench/dense_probe.py --merge PART...", "",
             f"Processor \"{cpu}\" (lscpu Model name), torch {torch.__version__}, "
             f"{datetime.date.today().isoformat()}, 1 thread per process (the items' runs two at a time on the "
             "2-core CPU). Backbone: the plain GRAM-C user_passage run of the evidence benchmark "
             f"(`{first['run']}`, best checkpoint), every parameter frozen. A fresh dense head "
             "(`model.dense.*` defaults: dim 128, temperature 0.05, 32 uniform negatives, log-q; detach=true) is "
             "trained alone with the project's loss path (training Collator with the dense rows, "
             "`memory_and_rows` -> `_decode` -> `dense_losses`, the frozen forward under no_grad), batches of 64 "
             "shuffled training samples, AdamW lr 2e-3, fp32, for a wall-clock budget. Evaluation: 1,000 seeded "
             "validation users (`default_rng(2023)`), every item ranked, every earlier item excluded; rank = "
             "non-excluded items scoring above the target. Terciles of the target's training interactions over "
             "these users. LightGCN fold-in on the same users is the reference. Raw figures: "
             "`bench/results/dense_probe.json`.", "",
             "| item | steps (epochs) | train s | final loss (last 20) |", "|---|---:|---:|---:|"]
    for item, r in res.items():
        if item.startswith("joint-"):
            continue
        lines.append(f"| {item} | {r['steps']} ({r['epochs']:.2f}) | {r['train_seconds']:.0f} | "
                     f"{r['loss_log'][-1]['loss'] if r['loss_log'] else float('nan'):.3f} |")
    lines += ["", "recall@10 / recall@50 / ndcg@10:", "",
              "| scorer | " + " | ".join(f"{g} ({first['dense'][g]['users']} users)" for g in groups) + " |",
              "|---|" + "---|" * len(groups)]
    rows = [(f"dense head, item={item[6:]}, trained jointly 12 epochs (`--joint`, no probe training)"
             if item.startswith("joint-") else f"dense head, item={item}, frozen backbone", r["dense"])
            for item, r in res.items()]
    rows.append(("lightgcn-foldin", first["lightgcn-foldin"]))
    for name, t in rows:
        lines.append(f"| {name} | " + " | ".join(
            f"{t[g]['recall@10']:.3f} / {t[g]['recall@50']:.3f} / {t[g]['ndcg@10']:.4f}" for g in groups) + " |")
    replace_section(SECTION, "\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", default="/work/ev/models/gramc-user_passage/train")
    ap.add_argument("--item", default="both", choices=["text", "gcn", "both"])
    ap.add_argument("--budget", type=float, default=720.0, help="training seconds")
    ap.add_argument("--epochs", type=float, default=0.0, help="stop after this many epochs too (0 = budget only)")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast for the frozen forward")
    ap.add_argument("--seed", type=int, default=2023)
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--joint", default="",
                    help="no training: evaluate the jointly trained head of this dense run (reference row)")
    ap.add_argument("--merge", nargs="*", default=None,
                    help="merge these per-item result files into --out, write the docs section, and stop")
    args = ap.parse_args()
    if args.merge is not None:
        merge_and_document(args.merge, Path(args.out))
        return
    torch.manual_seed(args.seed)

    if args.joint:
        model, assets, cfg = load_model_from_run(args.joint, "best", progress=False)
        device = next(model.parameters()).device
        head, args.run, args.item = model.dense, args.joint, "joint-" + cfg.model.dense.item
        model.eval()
        trainable, train, log, step, per_epoch, t0 = 0, [], [], 0, 1, time.perf_counter()
        print(f"joint head of {args.joint}: item={cfg.model.dense.item}, no training", flush=True)
    else:
        model, assets, cfg = load_model_from_run(args.run, "best", progress=False)
        device = next(model.parameters()).device
        cfg = copy.deepcopy(cfg)
        cfg.model.dense.enabled = True
        cfg.model.dense.item = args.item
        cfg.model.dense.detach = True
        tables = DenseTables.from_assets(cfg.model.dense, assets)
        head = DenseHead(cfg.model.dense, model.d_model, tables.num_items, tables.gcn_table, tables.gcn_rows,
                         tables.counts).to(device)
        for p in model.parameters():
            p.requires_grad_(False)
        model.dense = head
        model.cfg = copy.deepcopy(model.cfg)
        model.cfg.dense = cfg.model.dense
        model.eval()
        head.train()
        trainable = sum(p.numel() for p in head.parameters() if p.requires_grad)
        print(f"head item={args.item}: {trainable} trainable parameters; backbone frozen", flush=True)

        # ---- train the head ----
        collate = Collator(assets.cache, cfg, gcn_rows=assets.gcn_rows)
        train = samples(assets.ds, "train", cfg.data.max_his)
        rng = random.Random(args.seed)
        opt = torch.optim.AdamW([p for p in head.parameters() if p.requires_grad], lr=args.lr)
        per_epoch = math.ceil(len(train) / 64)
        max_steps = int(args.epochs * per_epoch) if args.epochs else 10 ** 9
        step, t0, losses, log = 0, time.perf_counter(), [], []
        done = False
        while not done:
            order = list(range(len(train)))
            rng.shuffle(order)
            for s in range(0, len(order), 64):
                batch = collate([train[i] for i in order[s: s + 64]]).to(device)
                with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
                    memory, mask, rows = model.memory_and_rows(batch)
                    hidden = model._decode(batch.labels, memory, mask)
                hidden, rows = hidden.float(), (rows[0].float(), rows[1])
                loss = model.dense_losses(batch, hidden, rows).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
                step += 1
                losses.append(loss.item())
                el = time.perf_counter() - t0
                if step % 20 == 0:
                    mean = float(np.mean(losses[-20:]))
                    log.append({"step": step, "seconds": round(el, 1), "loss": round(mean, 4)})
                    print(f"step {step} ({step / per_epoch:.2f} ep) {el:.0f}s loss {mean:.4f} "
                          f"({step / el:.2f} steps/s)", flush=True)
                if el >= args.budget or step >= max_steps:
                    done = True
                    break
    train_seconds = time.perf_counter() - t0
    print(f"trained {step} steps ({step / per_epoch:.2f} epochs) in {train_seconds:.0f}s", flush=True)

    # ---- evaluate: head alone vs LightGCN fold-in, 1,000 seeded validation users ----
    head.eval()
    valid = samples(assets.ds, "valid", cfg.data.max_his)
    keep = np.sort(np.random.default_rng(EVAL_SEED).choice(len(valid), USERS, replace=False))
    users = [valid[i] for i in keep]
    counts_all = np.array(item_training_counts(assets.ds))
    counts = counts_all[[u.target for u in users]]
    t1 = time.perf_counter()
    with torch.no_grad():
        states, smask = encode_all_items(model, assets.cache, cfg, device, progress=False)
        items = head.items(states, smask, torch.arange(states.shape[0], device=device))
        ecoll = search_collator(assets, cfg)
        cf = Collaborative.for_run(cfg, assets)
        dense_r, cf_r = [], []
        for s in range(0, len(users), 64):
            chunk = users[s: s + 64]
            batch = ecoll(chunk).to(device)
            memory, mask = model.memory(batch, items=(states, smask))
            dense_r.append(above(head.scores(model.dense_users(memory, mask), items).cpu(), chunk))
            cf_r.append(above(cf.scores(chunk).cpu(), chunk))
    dense_r, cf_r = np.concatenate(dense_r), np.concatenate(cf_r)
    eval_seconds = time.perf_counter() - t1
    res = {"run": args.run, "item": args.item, "lr": args.lr, "bf16": args.bf16, "batch_size": 64,
           "steps": step, "epochs": round(step / per_epoch, 3), "train_seconds": round(train_seconds, 1),
           "eval_seconds": round(eval_seconds, 1), "threads": torch.get_num_threads(),
           "train_samples": len(train), "trainable_parameters": trainable, "loss_log": log,
           "eval_users": USERS, "eval_seed": EVAL_SEED, "split": "valid",
           "dense": table(dense_r, counts), "lightgcn-foldin": table(cf_r, counts)}
    out = Path(args.out)
    old = json.loads(out.read_text()) if out.is_file() else {}
    old[args.item] = res
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(old, indent=1) + "\n")
    for name in ("dense", "lightgcn-foldin"):
        for g, m in res[name].items():
            print(f"{name:16s} {g:8s} n={m['users']:4d} R@10 {m['recall@10']:.4f} R@50 {m['recall@50']:.4f} "
                  f"ndcg@10 {m['ndcg@10']:.4f}")


if __name__ == "__main__":
    main()
