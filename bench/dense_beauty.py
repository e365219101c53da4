"""Issue 30 on the Beauty subset: GRAM-C with a dense retrieval head and/or the item-indexing task,
under the protocol of the fused-ranking benchmark (bench/fusion_beauty.py).

    python bench/dense_beauty.py --work WORK train both,both-index   # resumable trainings
    python bench/dense_beauty.py --work WORK evaluate both,both-index
    python bench/dense_beauty.py --work WORK summary

WORK is the evidence benchmark's work folder (its prepared subset in WORK/data, LightGCN in
WORK/models/gcn); the variants train into WORK/dense/NAME. Variants (`VARIANTS`): GRAM-C
user_passage (configs/beauty-subset.yaml, the GRAM-C rows of the fusion benchmark) plus

* `both`: the dense head, item vectors from the passage encoding and the LightGCN row;
* `text` / `gcn`: the same head reading one input only (the ablation);
* `index`: the item-indexing task alone; `both-index`: the head and the task;
* `both-detached`: the head trained without its gradient reaching the backbone;
* `posthoc-both`: no training of the backbone: `gramc train-head` fits the head (both inputs) on the
  plain GRAM-C run of the same seed (WORK/models/gramc-user_passage[-s2]/train), frozen;
  `posthoc-text` / `posthoc-gcn`: the same with one input, scored alone (the input ablation);
  `index-posthoc`: the head (both inputs) fitted on the `index` variant's run;
* `NAME-s2`: seed 2024.

Every variant trains the whole 12-epoch schedule (train.patience=0; the best checkpoint by validation
ndcg@10 on 1,000 validation users is kept, as the GRAM-C rows'). `evaluate` scores every test user
with history excluded and random ties, once, with both scorers (dense head first, then LightGCN
fold-in): the candidates are the beam's 50 items, then the dense head's top 50, then LightGCN's top 50.
From that one pass come the rows: the beam alone; each scorer alone (full ranking); fused with the
dense head (its candidates: the first 100 columns) and fused with both; the weights tuned on 1,000
seeded validation users (the fusion benchmark's), then frozen for test. A variant without a dense head
is fused with LightGCN only.

Results: bench/results/dense_beauty.json, per-user ranks in bench/results/dense_beauty_ranks/, the
plot dense_beauty.png, and the section "Dense head and item indexing on Beauty (issue 30)" of
docs/benchmarks.md. The baseline rows (pop, LightGCN, SASRec-CE, GRAM-C plain and fused with LightGCN)
are read from bench/results/fusion_beauty_ranks/, scored under the same protocol.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

import evidence_beauty as ev  # noqa: E402
import fusion_beauty as fb  # noqa: E402
from gramc.config import load_config  # noqa: E402
from gramc.io import atomic_path, pyplot, read_json, write_json  # noqa: E402
from gramc.metrics import bootstrap_ci, paired_bootstrap_ci, summarize, tercile_groups  # noqa: E402
from _docs import replace_section  # noqa: E402

DENSE = ["model.dense.enabled=true"]
VARIANTS = {"both": DENSE + ["model.dense.item=both"],
            "text": DENSE + ["model.dense.item=text"],
            "gcn": DENSE + ["model.dense.item=gcn"],
            "index": ["train.indexing.enabled=true"],
            "both-index": DENSE + ["model.dense.item=both", "train.indexing.enabled=true"],
            "both-detached": DENSE + ["model.dense.item=both", "model.dense.detach=true"]}
# heads fitted by `gramc train-head` (item input, backbone frozen): on the plain GRAM-C run of the same
# seed, or on the `index` variant's run
POSTHOC = {"posthoc-both": ("both", "gramc"), "posthoc-text": ("text", "gramc"), "posthoc-gcn": ("gcn", "gramc"),
           "index-posthoc": ("both", "index")}
ALONE_ONLY = ("posthoc-text", "posthoc-gcn")  # the input ablation: each head alone, no beam pass
SCHEDULE = ["train.patience=0", "train.final_eval=false"]
CANDIDATES = 50
TUNE_USERS = 1000
RESULTS = ROOT / "bench" / "results" / "dense_beauty.json"
SECTION = "## Dense head and item indexing on Beauty (issue 30)"
KS = fb.KS
REFERENCE = ("pop", "lightgcn", "lightgcn-foldin", "sasrec", "gramc", "gramc-fused-lightgcn")


def split_name(name: str) -> tuple[str, bool]:
    """(variant, is it the second seed's) of `NAME` / `NAME-s2`; unknown names stop the bench."""
    base, s2 = (name[:-3], True) if name.endswith("-s2") else (name, False)
    if base not in VARIANTS and base not in POSTHOC:
        raise SystemExit(f"unknown variant {name!r}; choose from {sorted(VARIANTS) + sorted(POSTHOC)} "
                         "(each also as NAME-s2)")
    return base, s2


def variant_overrides(name: str, seed: int) -> list[str]:
    base, s2 = split_name(name)
    return VARIANTS[base] + ([f"run.seed={seed + ev.SEED2_OFFSET}"] if s2 else [])


# ---- train -------------------------------------------------------------------------------------


def train(b: "ev.Bench", name: str, threads: int) -> None:
    """`gramc train` of one variant into WORK/dense/NAME, resumed when the folder holds a run."""
    folder = b.work / "dense" / name
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT / "src")}
    base, s2 = split_name(name)
    if base in POSTHOC:
        if (folder / "checkpoints" / "best" / "model.safetensors").is_file():
            return
        item, backbone = POSTHOC[base]
        source = (b.work / "models" / fb.SEEDS["gramc"][int(s2)] / "train" if backbone == "gramc"
                  else b.work / "dense" / (backbone + ("-s2" if s2 else "")))
        cmd = ["train-head", "--run", str(source), "--out", str(folder), f"model.dense.item={item}"]
    elif (folder / "config.yaml").is_file():
        cmd = ["train", "--resume", str(folder)]
    else:
        seed = load_config(b.config, []).run.seed
        over = ev.common_overrides(b, folder) + SCHEDULE + variant_overrides(name, seed) + b.extra
        cmd = ["train", "--config", str(b.config), *over]
    print(f"== train {name}: gramc {' '.join(cmd)}", flush=True)
    subprocess.run([sys.executable, "-m", "gramc", *cmd], check=True, env=env)


# ---- evaluate ----------------------------------------------------------------------------------


def fused_rows(valid: dict, test: dict, names: tuple[str, ...], beams: int) -> dict[str, Any]:
    """Per fused row: weights tuned on `valid`, test ranks. Dense first: its candidates are the first
    `beams + CANDIDATES` columns."""
    from gramc.eval.fusion import fused_order, tune_weight
    from gramc.metrics import ranks_from_lists

    rows = {}
    plans = [("fused-" + names[0], beams + CANDIDATES, [0])]
    if len(names) == 2:
        plans.append(("fused-both", None, [0, 1]))
    for row, width, cols in plans:
        def part(x: dict) -> tuple:
            return x["cand"][:, :width], x["gen"][:, :width], x["cf"][:, :width][..., cols]

        weight, curve = tune_weight(*part(valid), valid["targets"])
        ranks = ranks_from_lists(fused_order(*part(test), weight)[0], test["targets"])
        rows[row] = {"weight": weight, "valid_ndcg@10": max(curve.values()), "ranks": ranks.tolist(),
                     "scorers": [names[c] for c in cols]}
    return rows


OVERRIDES = fb.FAIR + [f"eval.fusion.candidates={CANDIDATES}", f"eval.fusion.tune_users={TUNE_USERS}"]


def evaluate(b: "ev.Bench", name: str) -> dict[str, Any]:
    """`evaluate_model` of the variant's best checkpoint, once (its record is kept in the run folder)."""
    from gramc.model.runs import load_model_from_run

    out = b.work / "dense" / name / "fair" / "metrics.json"
    if out.is_file():
        return read_json(out)
    run = b.work / "dense" / name
    model, assets, cfg = load_model_from_run(run, "best", overrides=OVERRIDES)
    alone = split_name(name)[0] in ALONE_ONLY
    rec = {"name": name, **(scorers_alone(model, assets, cfg) if alone else evaluate_model(model, assets, cfg)),
           "epochs": epoch_seconds(run)}
    if (run / "head_fit.json").is_file():
        fit = read_json(run / "head_fit.json")
        rec["head_fit"] = {"backbone": "WORK/" + str(Path(fit["source"]["run"]).relative_to(b.work.resolve())),
                           **{k: fit[k] for k in ("best_epoch", "cache_seconds", "fit_seconds")}}
    write_json(out, rec)
    return rec


def scorers_alone(model, assets, cfg) -> dict[str, Any]:
    """Every test user's rank under the dense head alone and LightGCN fold-in alone (each ranking every
    item, the fused evaluation's exclusions and ties: `scorer_ranks`); no beam search."""
    from gramc.data.splits import item_training_counts, samples
    from gramc.eval.evaluate import encode_all_items, search_collator
    from gramc.eval.fusion import Collaborative, DenseScores, scorer_ranks
    from gramc.eval.search import history_exclusions

    t0 = time.perf_counter()
    test = samples(assets.ds, "test", cfg.data.max_his)
    items = encode_all_items(model, assets.cache, cfg, torch.device("cpu"))
    scorers = [DenseScores(model, items), Collaborative.for_run(cfg, assets)]
    collate, ranks = search_collator(assets, cfg), []
    with torch.no_grad():
        for s in range(0, len(test), cfg.eval.batch_size):
            chunk = test[s: s + cfg.eval.batch_size]
            memory, mask = model.memory(collate(chunk), items=items)
            ranks.append(scorer_ranks([x.scores(chunk, memory, mask).float() for x in scorers], chunk,
                                      history_exclusions(chunk), cfg))
    ranks = np.concatenate(ranks)
    counts = np.array(item_training_counts(assets.ds))
    return {"seed": cfg.run.seed, "threads": torch.get_num_threads(), "scorers": ["dense", "lightgcn"],
            "tune_seconds": 0.0, "test_seconds": round(time.perf_counter() - t0, 1),
            "users": [assets.ds.users[x.user] for x in test], "target_counts": [int(counts[x.target]) for x in test],
            "rows": {"dense-alone": {"ranks": ranks[:, 0].tolist()}, "lightgcn-alone": {"ranks": ranks[:, 1].tolist()}}}


def evaluate_model(model, assets, cfg) -> dict[str, Any]:
    """One pass over the tuning users and one over every test user (both scorers); every row's ranks.
    `cfg` carries `OVERRIDES` (the fair protocol, the candidate count)."""
    from gramc.data.splits import item_training_counts, samples
    from gramc.eval.evaluate import evaluate_samples, tuning_samples
    from gramc.eval.fusion import Collaborative, Fusion

    dense = getattr(model, "dense", None) is not None
    names = ("dense", "lightgcn") if dense else ("lightgcn",)
    fusion = Fusion(names, Collaborative.for_run(cfg, assets))
    t0 = time.perf_counter()
    valid = evaluate_samples(model, assets, cfg, tuning_samples(assets, cfg), fusion=fusion)
    t1 = time.perf_counter()
    test = evaluate_samples(model, assets, cfg, samples(assets.ds, "test", cfg.data.max_his), fusion=fusion)
    return {"seed": cfg.run.seed, "threads": torch.get_num_threads(), "scorers": list(names),
            "tune_seconds": round(t1 - t0, 1), "test_seconds": round(time.perf_counter() - t1, 1),
            "users": [assets.ds.users[u] for u in test["users"]],
            "target_counts": [int(c) for c in np.array(item_training_counts(assets.ds))[test["targets"]]],
            "rows": {"beam": {"ranks": test["ranks"].tolist()},
                     **{f"{n}-alone": {"ranks": test["alone"][:, s].tolist()} for s, n in enumerate(names)},
                     **fused_rows(valid, test, names, cfg.eval.beams)},
            "target_is_candidate": float((test["cand"] == test["targets"][:, None]).any(1).mean())}


def epoch_seconds(run: Path) -> list[float]:
    """Wall seconds of each training epoch (log.jsonl), validation excluded; none for a fitted head."""
    if not (run / "log.jsonl").is_file():
        return []
    recs = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines() if x.strip()]
    return [round(r["seconds"], 1) for r in recs if r.get("kind") == "epoch"]


# ---- summary -----------------------------------------------------------------------------------


def collect(b: "ev.Bench", names: list[str]) -> dict[str, dict[str, Any]]:
    """Per row its per-user ranks, every row in the fusion benchmark's user order."""
    runs: dict[str, dict[str, Any]] = {}
    folder = ROOT / "bench" / "results" / "fusion_beauty_ranks"
    for name in [*REFERENCE, "gramc-s2", "gramc-fused-lightgcn-s2"]:
        with gzip.open(folder / f"{name}.json.gz") as f:
            runs[name] = json.loads(f.read())
    order = runs["gramc"]["users"]
    for name in names:
        path = b.work / "dense" / name / "fair" / "metrics.json"
        if not path.is_file():
            continue
        rec = read_json(path)
        pos = {u: i for i, u in enumerate(rec["users"])}
        for row, r in rec["rows"].items():
            ranks = [r["ranks"][pos[u]] for u in order]
            if row == "lightgcn-alone":  # the reference fold-in row, under the same rule: a check, not a row
                if ranks != runs["lightgcn-foldin"]["ranks"]:
                    raise SystemExit(f"{name}: its LightGCN fold-in ranks differ from the reference row's")
                continue
            base, s2 = (name[:-3], "-s2") if name.endswith("-s2") else (name, "")
            runs[f"{base}:{row}{s2}"] = {"users": order, "ranks": ranks}
        runs.setdefault("_counts", {"counts": [rec["target_counts"][pos[u]] for u in order]})
    return runs


def pairs(rows: list[str]) -> list[tuple[str, str]]:
    """Each variant row (but `fused-dense`, a step between the beam and `fused-both`) against GRAM-C
    (plain and fused with LightGCN), SASRec-CE and LightGCN fold-in (the fused ranker's LightGCN
    scorer, the stronger LightGCN row); each one-input head of the ablation (`posthoc-text`,
    `posthoc-gcn`, fitted by `gramc train-head`) against the head that reads both inputs; the head
    fitted on the indexing run against the one fitted on plain GRAM-C, row by row (what item
    indexing adds once a head is fitted)."""
    out = [(r, a) for r in rows if ":" in r and not r.endswith(":fused-dense")
           for a in ("gramc", "gramc-fused-lightgcn", "sasrec", "lightgcn-foldin")]
    both = "posthoc-both:dense-alone"
    out += [(r, both) for r in rows
            if r.startswith("posthoc-") and r.endswith(":dense-alone") and r != both and both in rows]
    return out + [(f"index-posthoc:{row}", f"posthoc-both:{row}") for row in ("dense-alone", "fused-both")
                  if f"index-posthoc:{row}" in rows and f"posthoc-both:{row}" in rows]


def summarise(runs: dict[str, dict[str, Any]], seed: int, n_boot: int = 1000) -> dict[str, Any]:
    counts = np.array(runs.pop("_counts")["counts"])
    rows = [r for r in runs if not r.endswith("-s2")]
    table = {}
    for row in rows:
        names = fb.group(runs, row)
        per = fb.row_means(runs, names)
        recall50 = np.mean([(np.array(runs[n]["ranks"]) >= 0) & (np.array(runs[n]["ranks"]) < 50) for n in names], 0)
        table[row] = {"runs": names, "metrics": {k: float(v.mean()) for k, v in per.items()},
                      "ci": {k: list(v) for k, v in bootstrap_ci(per, n=n_boot, seed=seed).items()},
                      "seeds": {n: summarize(np.array(runs[n]["ranks"]), KS)["ndcg@10"] for n in names},
                      "segments": [{"train_count": [lo, hi], "users": int(m.sum()),
                                    "ndcg@10": float(per["ndcg@10"][m].mean()),
                                    "recall@50": float(recall50[m].mean())}
                                   for lo, hi, m in tercile_groups(counts)]}
    paired = {}
    for bname, aname in pairs(rows):
        d = paired_bootstrap_ci(fb.row_means(runs, fb.group(runs, aname)), fb.row_means(runs, fb.group(runs, bname)),
                                n=n_boot, seed=seed)
        paired[f"{bname} - {aname}"] = {k: d[k] for k in ("ndcg@10", "hit@10")}
    return {"rows": table, "paired": paired}


def render(res: dict[str, Any], runs_info: dict[str, Any], cmd: str) -> str:
    f = lambda x: f"{x:.4f}"  # noqa: E731
    lines = [SECTION, "", f"`{cmd}` (WORK: the evidence benchmark's work folder; AMD EPYC, 1 thread per "
             "process, two processes sharing the 2-core CPU); protocol of \"Fused ranking on Beauty (issue 29)\" (every test user, history "
             "excluded, random ties; fused weights tuned on 1,000 seeded validation users). Rows `NAME:ROW`: "
             "`beam` the beam search alone, `dense-alone` / `lightgcn-alone` the scorer ranking every item, "
             "`fused-dense` beam + the dense top 50, `fused-both` beam + dense + LightGCN top 50 each.", "",
             "| row | runs | ndcg@10 [95% CI] | hit@10 | seeds' ndcg@10 |", "|---|---|---|---|---|"]
    for row, r in res["rows"].items():
        m, ci = r["metrics"], r["ci"]["ndcg@10"]
        lines.append(f"| {row} | {len(r['runs'])} | {f(m['ndcg@10'])} [{f(ci[0])}, {f(ci[1])}] | {f(m['hit@10'])} | "
                     f"{', '.join(f(v) for v in r['seeds'].values())} |")
    lines += fb.paired_lines(res["paired"])
    first = next(iter(res["rows"].values()))["segments"]
    lines += ["", "ndcg@10 (recall@50) by tercile of the target's training interactions:", "",
              "| row | " + " | ".join(f"{s['train_count'][0]}-{s['train_count'][1]} ({s['users']} users)" for s in first)
              + " |", "|---|" + "---|" * len(first)]
    for row, r in res["rows"].items():
        lines.append(f"| {row} | " + " | ".join(f"{f(s['ndcg@10'])} ({s['recall@50']:.3f})" for s in r["segments"]) + " |")
    lines += ["", "Per run: tuned weights (dense, LightGCN), seconds of the tuning and test passes (1 thread), "
              "training seconds per epoch:", "", "| run | fused-dense w | fused-both w | tune s | test s | epoch s |",
              "|---|---|---|---|---|---|"]
    for n, x in runs_info.items():
        rows = x["rows"]
        if not any(k.startswith("fused-") for k in rows):
            continue
        lines.append(f"| {n} | {rows[next(k for k in rows if k.startswith('fused-'))]['weight']} | "
                     f"{rows.get('fused-both', {}).get('weight', '')} | {x['tune_seconds']} | {x['test_seconds']} | "
                     f"{', '.join(f'{s:.0f}' for s in x['epochs'])} |")
    fits = {n: x["head_fit"] for n, x in runs_info.items() if "head_fit" in x}
    if fits:
        lines += ["", "Post-hoc heads (`gramc train-head` on the finished run named in `backbone`, of the same "
                  "seed, frozen; seconds at 1 thread):", "",
                  "| run | backbone | epoch kept (of 20) | cache s | fit s | test s |", "|---|---|---|---|---|---|"]
        lines += [f"| {n} | `{f['backbone']}` | {f['best_epoch']} | {f['cache_seconds']:.0f} | {f['fit_seconds']:.0f} | "
                  f"{runs_info[n]['test_seconds']:.0f} |" for n, f in fits.items()]
    lines += ["", "Plot: `bench/results/dense_beauty.png`. Per-user ranks: `bench/results/dense_beauty_ranks/`."]
    return "\n".join(lines) + "\n"


# the rows the tercile panels compare (all rows would be unreadable): references, the best variant,
# the fitted head on plain GRAM-C and the head that reaches the tail best
TERCILE_ROWS = ("sasrec", "lightgcn-foldin", "gramc", "gramc-fused-lightgcn", "posthoc-both:fused-both",
                "posthoc-text:dense-alone", "index-posthoc:dense-alone", "index-posthoc:fused-both")


def plot(res: dict[str, Any], path: Path) -> None:
    """Left: every row's ndcg@10 with its interval. Right: one panel per tercile of the target's
    training interactions, the rows of TERCILE_ROWS only."""
    plt = pyplot()
    if plt is None:
        return
    rows = list(res["rows"])
    key = [r for r in TERCILE_ROWS if r in res["rows"]]
    fig = plt.figure(figsize=(14, 0.35 * len(rows) + 2))
    grid = fig.add_gridspec(3, 2, width_ratios=(1.1, 1))
    fb.ndcg_bars(fig.add_subplot(grid[:, 0]), res, rows)
    for t, seg in enumerate(res["rows"][rows[0]]["segments"]):
        ax = fig.add_subplot(grid[t, 1])
        values = [res["rows"][r]["segments"][t]["ndcg@10"] for r in key]
        ax.barh(key, values, color=["tab:red" if r == "sasrec" else "tab:blue" for r in key])
        for y, v in enumerate(values):
            ax.text(v, y, f" {v:.4f}", va="center", fontsize=7)
        ax.set_xlim(0, max(values) * 1.25 or 1)
        ax.tick_params(labelsize=7)
        ax.set_title(f"targets seen {seg['train_count'][0]}-{seg['train_count'][1]} times in training "
                     f"({seg['users']} users): ndcg@10", fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("stage", choices=("train", "evaluate", "summary"))
    ap.add_argument("names", nargs="?", default="both,both-index", help="variants, comma-separated")
    ap.add_argument("--work", default=str(ROOT / "runs" / "evidence_beauty"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--results", default=str(RESULTS))
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    b = fb.bench_of(Path(a.work))
    names = [n for n in a.names.split(",") if n]
    if a.stage == "train":
        for name in names:
            train(b, name, a.threads)
    elif a.stage == "evaluate":
        for name in names:
            rec = evaluate(b, name)
            print(name, {row: round(summarize(np.array(r["ranks"]), KS)["ndcg@10"], 4) for row, r in rec["rows"].items()},
                  flush=True)
    else:
        runs = collect(b, names)
        res = summarise(runs, load_config(b.config, []).run.seed)
        info = {n: read_json(b.work / "dense" / n / "fair" / "metrics.json") for n in names
                if (b.work / "dense" / n / "fair" / "metrics.json").is_file()}
        info = {n: {k: v for k, v in x.items() if k not in ("users", "target_counts")} for n, x in info.items()}
        args = argv if argv is not None else sys.argv[1:]
        cmd = "python bench/dense_beauty.py " + " ".join("WORK" if x == a.work else x for x in args)
        results = Path(a.results)
        write_json(results, {"command": cmd, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **res,
                             "runs": {n: {k: v for k, v in x.items() if k != "rows"} for n, x in info.items()}})
        fb.keep_ranks({k.replace(":", "__"): v for k, v in runs.items() if ":" in k},  # file names: no ":"
                      results.with_name(results.stem + "_ranks"))
        plot(res, results.with_suffix(".png"))
        replace_section(SECTION, render(res, info, cmd), ROOT / "docs" / "benchmarks.md")
        print(render(res, info, cmd))
    return 0


if __name__ == "__main__":
    sys.exit(main())
