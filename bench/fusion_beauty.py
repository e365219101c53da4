"""Issue 29 on the Beauty subset: every model under one protocol, and GRAM / GRAM-C fused with LightGCN.

    python bench/fusion_beauty.py --work WORK baselines         # pop, LightGCN, SASRec-CE, history excluded
    python bench/fusion_beauty.py --work WORK models            # plain + fused test pass of each trained run
    python bench/fusion_beauty.py --work WORK summary           # intervals, segments, table, plot, doc

WORK is the evidence benchmark's work folder (`bench/evidence_beauty.py --work WORK --placements
user_passage --models gram,gram-s2,gramc-user_passage,gramc-user_passage-s2` trains the four runs).
Every stage is resumable: a finished part is skipped (baselines: the pipeline's stage fingerprints;
models: the `fair/metrics.json` of each run).

Protocol (every row): every test user of the subset; `eval.exclude_history=true` (every earlier item
removed, also those older than a model's history window); full ranking breaks ties at a seeded random
place (`eval.ties=random`, run.seed); the generative models' best checkpoint is the one their training
selected (validation ndcg@10 on 1,000 validation users, history not excluded). Fused rows tune their
weight on 1,000 seeded validation users (`eval.fusion.tune_users`), then score the test users once.

Results: bench/results/fusion_beauty.json, per-user ranks in bench/results/fusion_beauty_ranks/,
the plot fusion_beauty.png, and the section "Fused ranking on Beauty (issue 29)" of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import gzip
import json
import platform
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
from gramc.config import load_config  # noqa: E402
from gramc.io import atomic_path, pyplot, read_json, write_json  # noqa: E402
from gramc.metrics import bootstrap_ci, paired_bootstrap_ci, per_user_metrics, summarize, tercile_groups  # noqa: E402
from _docs import replace_section  # noqa: E402

BASELINES = ("pop", "lightgcn", "sasrec")
GENERATIVE = ("gram", "gram-s2", "gramc-user_passage", "gramc-user_passage-s2")
FAIR = ["eval.exclude_history=true", "eval.ties=random"]
RESULTS = ROOT / "bench" / "results" / "fusion_beauty.json"
SECTION = "## Fused ranking on Beauty (issue 29)"
KS = (5, 10, 20)
SEEDS = {"gram": ("gram", "gram-s2"), "gramc": ("gramc-user_passage", "gramc-user_passage-s2")}
# paired comparisons: (b, a) = b minus a, each side the per-user mean over its runs
PAIRS = [("gramc-fused-lightgcn", "gramc"), ("gram-fused-lightgcn", "gram"),
         ("gramc-fused-lightgcn", "sasrec"), ("gramc-fused-lightgcn", "lightgcn"),
         ("gram-fused-lightgcn", "sasrec"), ("gram-fused-lightgcn", "lightgcn"),
         ("gramc-fused-lightgcn", "gram-fused-lightgcn"), ("gramc", "gram"), ("sasrec", "lightgcn"),
         ("gramc-fused-lightgcn", "lightgcn-foldin"), ("lightgcn-foldin", "lightgcn")]


def bench_of(work: Path) -> "ev.Bench":
    _, b = ev.parse(["--work", str(work), "--placements", "user_passage"])
    return b


def run_baselines(b: "ev.Bench") -> dict[str, Any]:
    """pop, LightGCN and SASRec-CE as `gramc pipeline` baseline stages under the fair protocol."""
    from gramc.pipeline.pipeline import run_pipeline

    root = b.models_dir / "reference-fair"
    extra = [f"pipeline.baselines=[{','.join(BASELINES)}]", f"baseline.sasrec.max_minutes={b.sasrec_minutes}"]
    cfg = load_config(b.config, ev.common_overrides(b, root) + extra + FAIR + b.extra)
    stages = ("gcn", *(f"baseline-{n}" for n in BASELINES))
    done = {r.name: r for r in run_pipeline(cfg, stages=stages, progress=True)}
    rows = {}
    for name in BASELINES:
        folder = Path(done[f"baseline-{name}"].folder)
        rows[name] = {"kind": "baseline", "folder": str(folder), "test": read_json(folder / "metrics.json"),
                      "ranks": read_json(folder / "ranks_test.json")}
    return rows


FUSION = ["eval.fusion.candidates=50", "eval.fusion.weight=null", "eval.fusion.tune_users=1000"]


def run_model(b: "ev.Bench", name: str, plain_timing: bool) -> dict[str, Any]:
    """The best checkpoint of run `name`: test split, history excluded, beam search and fused ranking in one
    pass (the weight tuned on 1,000 seeded validation users first); `plain_timing` also times a plain pass."""
    from gramc.data.splits import item_training_counts
    from gramc.eval.evaluate import evaluate_split
    from gramc.model.runs import load_model_from_run

    root = b.models_dir / name
    out = root / "fair"
    if (out / "metrics.json").is_file():
        return read_json(out / "metrics.json")
    model, assets, cfg = load_model_from_run(root / "train", "best", overrides=FAIR + FUSION)
    rec: dict[str, Any] = {"name": name, "seed": cfg.run.seed, "threads": torch.get_num_threads(),
                           "cpu": platform.processor() or platform.machine()}
    if plain_timing:  # the plain search alone, same process: the yardstick of fusion's cost
        t0 = time.perf_counter()
        plain = evaluate_split(model, assets, cfg, "test")
        rec["plain_pass_seconds"] = round(time.perf_counter() - t0, 1)
    t0 = time.perf_counter()
    res = evaluate_split(model, assets, cfg, "test", fused=True)
    rec["fused_pass_seconds"] = round(time.perf_counter() - t0, 1)  # tuning included
    if plain_timing:
        rec["plain_ranks_identical"] = bool(np.array_equal(plain.ranks, res.plain_ranks))
    rec.update(fused=res.to_json(), users=[assets.ds.users[u] for u in res.users],
               plain_ranks=[int(r) for r in res.plain_ranks], fused_ranks=[int(r) for r in res.ranks],
               target_counts=[int(c) for c in np.array(item_training_counts(assets.ds))[res.targets]])
    write_json(out / "metrics.json", rec)
    return rec


def collect(b: "ev.Bench") -> dict[str, dict[str, Any]]:
    """Every row's per-user ranks (run by run) in one user order, with the targets' training counts."""
    runs: dict[str, dict[str, Any]] = {}
    for name in BASELINES:
        folder = b.models_dir / "reference-fair" / "baselines" / name
        r = read_json(folder / "ranks_test.json")
        runs[name] = {"users": r["users"], "ranks": r["ranks"], "record": read_json(folder / "metrics.json")}
    for family, names in SEEDS.items():
        for name in names:
            path = b.models_dir / name / "fair" / "metrics.json"
            if not path.is_file():
                continue
            rec = read_json(path)
            seed = "" if name == names[0] else "-s2"
            runs[family + seed] = {"users": rec["users"], "ranks": rec["plain_ranks"], "counts": rec["target_counts"],
                                   "record": rec}
            runs[f"{family}-fused-lightgcn{seed}"] = {"users": rec["users"], "ranks": rec["fused_ranks"],
                                                      "record": rec}
    runs["lightgcn-foldin"] = foldin_ranks(b)
    order = next(r["users"] for r in runs.values() if "counts" in r)
    for name, r in runs.items():  # every row in the generative runs' user order
        if r["users"] != order:
            pos = {u: i for i, u in enumerate(r["users"])}
            r["ranks"] = [r["ranks"][pos[u]] for u in order]
            r["users"] = order
    return runs


def foldin_ranks(b: "ev.Bench") -> dict[str, Any]:
    """The fused ranker's collaborative scorer alone (LightGCN fold-in over the 20 history items the
    generative models read), full ranking under the same protocol: is fusion more than its scorer?"""
    from gramc.data.dataset import SeqDataset
    from gramc.data.splits import samples
    from gramc.eval.fusion import Collaborative
    from gramc.graph.lightgcn import final_embeddings
    from gramc.metrics import ranks_from_scores

    cfg = load_config(b.config, ev.common_overrides(b, b.models_dir / "gram") + FAIR)
    ds = SeqDataset.load(b.data)
    collab = Collaborative(final_embeddings(b.models_dir / "gcn", ds)[1])
    smp = samples(ds, "test", cfg.data.max_his)
    ranks = []
    for s in range(0, len(smp), 1024):
        chunk = smp[s: s + 1024]
        exclude = torch.zeros(len(chunk), ds.num_items, dtype=torch.bool)
        for r, x in enumerate(chunk):
            exclude[r, list(x.seen)] = True
        ranks += ranks_from_scores(collab.scores(chunk), [x.target for x in chunk], exclude,
                                   keys=[x.user for x in chunk], seed=cfg.run.seed, ties=cfg.eval.ties).tolist()
    return {"users": [ds.users[x.user] for x in smp], "ranks": ranks,
            "record": {"protocol": {"history_window": cfg.data.max_his}}}


def group(runs: dict[str, dict[str, Any]], row: str) -> list[str]:
    """The runs of a row: a baseline alone, a generative row with each seed it has."""
    return [n for n in (row, f"{row}-s2") if n in runs]


def row_means(runs, names: list[str]) -> dict[str, np.ndarray]:
    per = [per_user_metrics(np.array(runs[n]["ranks"]), KS) for n in names]
    return {k: sum(p[k] for p in per) / len(per) for k in per[0]}


def summarise(runs: dict[str, dict[str, Any]], seed: int, n_boot: int = 1000) -> dict[str, Any]:
    rows = [r for r in ("pop", "lightgcn", "lightgcn-foldin", "sasrec", "gram", "gramc", "gram-fused-lightgcn", "gramc-fused-lightgcn")
            if group(runs, r)]
    counts = np.array(next(r["counts"] for r in runs.values() if "counts" in r))
    terciles = tercile_groups(counts)
    table = {}
    for row in rows:
        names = group(runs, row)
        per = row_means(runs, names)
        table[row] = {"runs": names, "users": len(per["mrr"]),
                      "metrics": {k: float(v.mean()) for k, v in per.items()},
                      "ci": {k: list(v) for k, v in bootstrap_ci(per, n=n_boot, seed=seed).items()},
                      "seeds": {n: summarize(np.array(runs[n]["ranks"]), KS)["ndcg@10"] for n in names},
                      "segments": [{"train_count": [lo, hi], "users": int(m.sum()),
                                    "ndcg@10": float(per["ndcg@10"][m].mean()), "hit@10": float(per["hit@10"][m].mean())}
                                   for lo, hi, m in terciles]}
    paired = {}
    for bname, aname in PAIRS:
        if group(runs, bname) and group(runs, aname):
            d = paired_bootstrap_ci(row_means(runs, group(runs, aname)), row_means(runs, group(runs, bname)),
                                    n=n_boot, seed=seed)
            paired[f"{bname} - {aname}"] = {k: d[k] for k in ("ndcg@10", "hit@10", "ndcg@20")}
    fusion = {n: {"weight": r["record"]["fused"]["fusion"]["weight"],
                  "target_is_candidate": r["record"]["fused"]["fusion"]["target_is_candidate"],
                  "tune_seconds": r["record"]["fused"]["fusion"].get("tune_seconds"),
                  "fused_pass_seconds": r["record"]["fused_pass_seconds"],
                  "plain_pass_seconds": r["record"].get("plain_pass_seconds"),
                  "plain_ranks_identical": r["record"].get("plain_ranks_identical")}
              for n, r in runs.items() if "fused" in n}
    return {"rows": table, "paired": paired, "fusion": fusion, "protocol": {
        "users": "every test user of the subset", "exclude_history": "every earlier item, every model",
        "ties": f"random, seeded per user (run.seed {seed}), full ranking", "generative_history_window": 20,
        "sasrec_history_window": runs["sasrec"]["record"]["protocol"]["history_window"],
        "checkpoint": "best by validation ndcg@10 during training (1,000 validation users, no exclusion)",
        "fusion": "beam 50 + LightGCN fold-in top 50; weight tuned on 1,000 seeded validation users"}}


def paired_lines(paired: dict[str, Any]) -> list[str]:
    """The table of paired differences (ndcg@10 and hit@10 with their intervals)."""
    lines = ["", "Paired differences (per user, the same test users; a row with two seeds is their per-user mean):", "",
             "| b - a | ndcg@10 [95% CI] | hit@10 [95% CI] |", "|---|---|---|"]
    for name, d in paired.items():
        n, h = d["ndcg@10"], d["hit@10"]
        lines.append(f"| {name} | {n['mean']:+.4f} [{n['lo']:+.4f}, {n['hi']:+.4f}] | "
                     f"{h['mean']:+.4f} [{h['lo']:+.4f}, {h['hi']:+.4f}] |")
    return lines


def render(res: dict[str, Any], cmd: str) -> str:
    f = lambda x: f"{x:.4f}"  # noqa: E731
    lines = [SECTION, "", f"`{cmd}` (AMD EPYC, 1 thread per process). Protocol: "
             + "; ".join(f"{k}: {v}" for k, v in res["protocol"].items()) + ".", "",
             "| row | runs | ndcg@10 [95% CI] | hit@10 | ndcg@5 | ndcg@20 | seeds' ndcg@10 |", "|---|---|---|---|---|---|---|"]
    for row, r in res["rows"].items():
        m, ci = r["metrics"], r["ci"]["ndcg@10"]
        lines.append(f"| {row} | {len(r['runs'])} | {f(m['ndcg@10'])} [{f(ci[0])}, {f(ci[1])}] | {f(m['hit@10'])} | "
                     f"{f(m['ndcg@5'])} | {f(m['ndcg@20'])} | {', '.join(f(v) for v in r['seeds'].values())} |")
    for name, (r5, n5, r10, n10) in ev.PUBLISHED.items():  # another split and protocol: their own rows
        lines.append(f"| {name}: full Beauty split, history not excluded | - | {n10:.4f} | {r10:.4f} | {n5:.4f} | - | - |")
    lines += paired_lines(res["paired"])
    first = next(iter(res["rows"].values()))["segments"]
    lines += ["", "ndcg@10 by tercile of the target's training interactions:", "",
              "| row | " + " | ".join(f"{s['train_count'][0]}-{s['train_count'][1]} ({s['users']} users)" for s in first)
              + " |", "|---|" + "---|" * len(first)]
    for row, r in res["rows"].items():
        lines.append(f"| {row} | " + " | ".join(f(s["ndcg@10"]) for s in r["segments"]) + " |")
    lines += ["", "Fusion per run (weight tuned on validation; seconds of one 1-thread process):", "",
              "| run | weight | target among candidates | tuning s | fused pass s (tuning incl.) | plain pass s |",
              "|---|---|---|---|---|---|"]
    for n, x in res["fusion"].items():
        lines.append(f"| {n} | {x['weight']} | {x['target_is_candidate']:.3f} | {x['tune_seconds']} | "
                     f"{x['fused_pass_seconds']} | {x['plain_pass_seconds'] or ''} |")
    lines += ["", "Plot: `bench/results/fusion_beauty.png`. Per-user ranks: `bench/results/fusion_beauty_ranks/`."]
    return "\n".join(lines) + "\n"


def ndcg_bars(ax, res: dict[str, Any], rows: list[str]) -> None:
    """Each row's test ndcg@10 as a horizontal bar with its 95% interval."""
    m = [res["rows"][r]["metrics"]["ndcg@10"] for r in rows]
    lo = [m[i] - res["rows"][r]["ci"]["ndcg@10"][0] for i, r in enumerate(rows)]
    hi = [res["rows"][r]["ci"]["ndcg@10"][1] - m[i] for i, r in enumerate(rows)]
    ax.barh(rows, m, xerr=[lo, hi], color="tab:blue")
    ax.set_xlabel("test ndcg@10 (95% CI), history excluded")


def plot(res: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    if plt is None:
        return
    rows = list(res["rows"])
    fig, ax = plt.subplots(1, 2, figsize=(12, 4))
    ndcg_bars(ax[0], res, rows)
    segs = res["rows"][rows[0]]["segments"]
    width = 0.8 / len(rows)
    for i, r in enumerate(rows):
        ax[1].bar(np.arange(len(segs)) + i * width, [s["ndcg@10"] for s in res["rows"][r]["segments"]], width, label=r)
    ax[1].set_xticks(np.arange(len(segs)) + 0.4, [f"{s['train_count'][0]}-{s['train_count'][1]}" for s in segs])
    ax[1].set_xlabel("target's training interactions (terciles)"), ax[1].set_ylabel("ndcg@10"), ax[1].legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def keep_ranks(runs: dict[str, dict[str, Any]], folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, r in runs.items():
        with atomic_path(folder / f"{name}.json.gz") as tmp, open(tmp, "wb") as raw, \
                gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as f:  # no name, no time: same bytes
            f.write(json.dumps({"users": r["users"], "ranks": r["ranks"]}, separators=(",", ":")).encode())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("stage", choices=("baselines", "models", "summary"))
    ap.add_argument("--work", default=str(ROOT / "runs" / "evidence_beauty"))
    ap.add_argument("--models", default=",".join(GENERATIVE))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--results", default=str(RESULTS))
    ap.add_argument("--plain-timing", default="gramc-user_passage", help="models also timed with a plain pass")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    b = bench_of(Path(a.work))
    if a.stage == "baselines":
        rows = run_baselines(b)
        for name, row in rows.items():
            print(name, {k: round(v, 4) for k, v in row["test"]["metrics"].items()})
    elif a.stage == "models":
        for name in [m for m in a.models.split(",") if m]:
            rec = run_model(b, name, name in a.plain_timing.split(","))
            print(name, "fused", {k: round(v, 4) for k, v in rec["fused"]["metrics"].items() if "@10" in k},
                  "plain", {k: round(v, 4) for k, v in rec["fused"]["unfused"]["metrics"].items() if "@10" in k},
                  "weight", rec["fused"]["fusion"]["weight"], flush=True)
    else:
        runs = collect(b)
        res = summarise(runs, load_config(b.config, []).run.seed)
        cmd = "python bench/fusion_beauty.py " + " ".join(argv if argv is not None else sys.argv[1:])
        results = Path(a.results)
        write_json(results, {"command": cmd, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **res})
        keep_ranks(runs, results.with_name(results.stem + "_ranks"))
        plot(res, results.with_suffix(".png"))
        replace_section(SECTION, render(res, cmd), ROOT / "docs" / "benchmarks.md")
        print(render(res, cmd))
    return 0


if __name__ == "__main__":
    sys.exit(main())
