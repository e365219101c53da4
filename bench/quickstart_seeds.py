"""Quickstart quality over seeds: GRAM-C (prefix on) and GRAM (prefix off) against popularity.

Runs `gramc quickstart` (configs/quickstart.yaml, the default synthetic data) once per seed and
variant, in separate processes (`--jobs` at a time, `--threads` torch threads each), and reports
test hit@10 / ndcg@10 with their bootstrap intervals, the ratio to popularity, and each run's
wall time. Only `run.seed` changes between seeds (model init, batch order); the dataset and
LightGCN (its own `gcn.seed`) are the same.

    .venv/bin/python bench/quickstart_seeds.py --seeds 1,2,3 --variants gramc,gram --jobs 2 --threads 1
    .venv/bin/python bench/quickstart_seeds.py --seeds 1,2,3 --variants gramc,gramc-trie --paired gramc-trie,gramc \
        --results bench/results/quickstart_softmax.json --section "## Quickstart: trie vs vocab softmax"
    .venv/bin/python bench/quickstart_seeds.py --seeds 1,2,3 --variants gramc,gramc-fp32 --paired gramc,gramc-fp32 \
        --results bench/results/quickstart_bf16.json --section "## Quickstart: bf16 vs fp32 training"

(`gramc` trains with `train.bf16=auto`: bf16 autocast where the CPU has native bf16, so the last
command pairs bf16 against fp32 on such a processor and two fp32 runs elsewhere.)

`--paired A,B` also evaluates each run's best checkpoint on every test user with predictions
(`gramc evaluate`) and reports, per seed, the paired bootstrap 95% interval of A - B (same users).

Writes bench/results/quickstart_seeds.json, bench/results/quickstart_seeds.png and the
"Quickstart quality" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from gramc.io import atomic_path, read_json, write_json  # noqa: E402
from _docs import replace_section  # noqa: E402  (bench/ is on sys.path when run as a script)

RESULTS = ROOT / "bench" / "results" / "quickstart_seeds.json"
PLOT = ROOT / "bench" / "results" / "quickstart_seeds.png"
SECTION = "## Quickstart quality"
VARIANTS = {"gramc": [], "gram": ["model.prefix.enabled=false"], "gramc-trie": ["model.softmax=trie"],
            "gramc-fp32": ["train.bf16=false"]}


def run_one(variant: str, seed: int, work: Path, threads: int, extra: list[str], paired: bool = False) -> dict:
    out = work / f"{variant}-seed{seed}"
    cmd = [sys.executable, "-m", "gramc", "quickstart", "--out", str(out), f"run.seed={seed}",
           *VARIANTS[variant], *extra]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    t0 = time.time()
    with open(work / f"{variant}-seed{seed}.log", "w", encoding="utf-8") as log:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    wall = time.time() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed (rc {proc.returncode}); see {work / f'{variant}-seed{seed}.log'}")
    if paired:  # per-user ranks of the best checkpoint on every test user, for paired differences
        ev = [sys.executable, "-m", "gramc", "evaluate", "--run", str(out / "train"), "--split", "test",
              "--out", str(out / "eval-test-predictions")]
        with open(work / f"{variant}-seed{seed}.log", "a", encoding="utf-8") as log:
            subprocess.run(ev, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, check=True)
    test = read_json(out / "eval" / "metrics.json")
    pop = read_json(out / "baselines" / "pop" / "metrics.json")
    lgcn = read_json(out / "baselines" / "lightgcn" / "metrics.json")
    row = {"variant": variant, "seed": seed, "wall_s": round(wall, 1), "out": str(out),
           "hit@10": test["metrics"]["hit@10"], "hit@10_ci": test["ci"]["hit@10"],
           "ndcg@10": test["metrics"]["ndcg@10"], "ndcg@10_ci": test["ci"]["ndcg@10"],
           "pop_hit@10": pop["metrics"]["hit@10"], "lightgcn_hit@10": lgcn["metrics"]["hit@10"],
           "users": test["users"]}
    row["ratio_pop"] = row["hit@10"] / row["pop_hit@10"]
    print(f"{variant} seed {seed}: hit@10 {row['hit@10']:.4f} ({row['ratio_pop']:.2f}x pop), "
          f"ndcg@10 {row['ndcg@10']:.4f}, {wall:.0f} s", flush=True)
    return row


def paired_differences(rows: list[dict], a: str, b: str, n: int = 2000) -> list[dict]:
    """Per seed: mean of A - B per test user (hit@10, ndcg@10) with its paired bootstrap 95% interval."""
    import json

    import numpy as np

    from gramc.metrics import bootstrap_ci, per_user_metrics

    def ranks(row):
        lines = (Path(row["out"]) / "eval-test-predictions" / "predictions.jsonl").read_text().splitlines()
        recs = [json.loads(x) for x in lines]
        return [r["user"] for r in recs], np.array([r["hit_rank"] - 1 for r in recs])  # 0-based, -1 = miss

    out = []
    for seed in sorted({r["seed"] for r in rows}):
        ra = next(r for r in rows if r["variant"] == a and r["seed"] == seed)
        rb = next(r for r in rows if r["variant"] == b and r["seed"] == seed)
        (ua, ka), (ub, kb) = ranks(ra), ranks(rb)
        if ua != ub:
            raise RuntimeError(f"seed {seed}: {a} and {b} were evaluated on different users")
        ma, mb = per_user_metrics(ka, (10,)), per_user_metrics(kb, (10,))
        diff = {k: ma[k] - mb[k] for k in ("hit@10", "ndcg@10")}
        ci = bootstrap_ci(diff, n=n, seed=seed)
        out.append({"seed": seed, "users": len(ka), **{f"{k}_{a}": float(ma[k].mean()) for k in diff},
                    **{f"{k}_{b}": float(mb[k].mean()) for k in diff},
                    **{f"{k}_diff": float(v.mean()) for k, v in diff.items()},
                    **{f"{k}_diff_ci": list(ci[k]) for k in diff}})
    return out


def summarise(rows: list[dict]) -> dict:
    out = {}
    for v in sorted({r["variant"] for r in rows}):
        rs = [r for r in rows if r["variant"] == v]
        ratios = [r["ratio_pop"] for r in rs]
        hits = [r["hit@10"] for r in rs]
        out[v] = {"runs": len(rs), "hit@10_mean": statistics.mean(hits),
                  "hit@10_sd": statistics.stdev(hits) if len(hits) > 1 else 0.0,
                  "ratio_mean": statistics.mean(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
                  "ndcg@10_mean": statistics.mean(r["ndcg@10"] for r in rs)}
    return out


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.4))
    labels, x = [], 0
    for v in sorted({r["variant"] for r in rows}):
        for r in sorted((r for r in rows if r["variant"] == v), key=lambda r: r["seed"]):
            lo, hi = r["hit@10_ci"]
            ax.bar(x, r["hit@10"], color={"gramc": "tab:blue", "gram": "tab:orange"}.get(v, "tab:green"),
                   yerr=[[r["hit@10"] - lo], [hi - r["hit@10"]]], capsize=3)
            labels.append(f"{v}\nseed {r['seed']}")
            x += 1
    pop = rows[0]["pop_hit@10"]
    ax.axhline(pop, color="grey", ls="--", label=f"popularity {pop:.3f}")
    ax.axhline(2 * pop, color="black", ls=":", label="2x popularity")
    ax.set_xticks(range(len(labels)), labels, fontsize=8)
    ax.set_ylabel("test hit@10 (95% CI)")
    ax.legend(fontsize=8)
    ax.set_title("gramc quickstart over seeds")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def render(res: dict, section: str = SECTION) -> str:
    lines = [section, "",
             f"`{res['command']}` ({res['machine']}; {res['jobs']} runs at a time, {res['threads']} torch "
             f"thread(s) each, so wall times are longer than a lone `make quickstart`). Default synthetic "
             f"data (600 users, 300 items), configs/quickstart.yaml, test split ({res['rows'][0]['users']} "
             f"users), GRAM-C beam {res['beams']}; popularity and LightGCN rank all items. "
             "`gram` is the same run with `model.prefix.enabled=false`.", "",
             "| variant | seed | hit@10 [95% CI] | x popularity | ndcg@10 [95% CI] | LightGCN hit@10 | wall s |",
             "|---|---|---|---|---|---|---|"]
    for r in sorted(res["rows"], key=lambda r: (r["variant"], r["seed"])):
        lines.append(f"| {r['variant']} | {r['seed']} | {r['hit@10']:.4f} [{r['hit@10_ci'][0]:.4f}, "
                     f"{r['hit@10_ci'][1]:.4f}] | {r['ratio_pop']:.2f} | {r['ndcg@10']:.4f} "
                     f"[{r['ndcg@10_ci'][0]:.4f}, {r['ndcg@10_ci'][1]:.4f}] | {r['lightgcn_hit@10']:.4f} | "
                     f"{r['wall_s']:.0f} |")
    lines += ["", "| variant | runs | mean hit@10 (sd) | x popularity: mean (min-max) | mean ndcg@10 |",
              "|---|---|---|---|---|"]
    for v, s in res["summary"].items():
        lines.append(f"| {v} | {s['runs']} | {s['hit@10_mean']:.4f} ({s['hit@10_sd']:.4f}) | "
                     f"{s['ratio_mean']:.2f} ({s['ratio_min']:.2f}-{s['ratio_max']:.2f}) | {s['ndcg@10_mean']:.4f} |")
    lines += ["", f"Popularity hit@10 is {res['rows'][0]['pop_hit@10']:.4f} in every run (it does not depend on "
              "the seed).", "", f"![quickstart over seeds](../bench/results/{res.get('plot', 'quickstart_seeds.png')})", ""]
    if res.get("paired"):
        a, b = res["paired_variants"]
        lines += ["", f"Paired differences {a} - {b} on the same test users (each seed's best checkpoint, "
                  "`gramc evaluate`, paired bootstrap 95% interval):", "",
                  "| seed | users | hit@10 diff [95% CI] | ndcg@10 diff [95% CI] |", "|---|---|---|---|"]
        for d in res["paired"]:
            lines.append(f"| {d['seed']} | {d['users']} | {d['hit@10_diff']:+.4f} [{d['hit@10_diff_ci'][0]:+.4f}, "
                         f"{d['hit@10_diff_ci'][1]:+.4f}] | {d['ndcg@10_diff']:+.4f} "
                         f"[{d['ndcg@10_diff_ci'][0]:+.4f}, {d['ndcg@10_diff_ci'][1]:+.4f}] |")
    for note in res.get("notes", []):
        lines.append(f"* {note}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="1,2,3", help="comma list of run.seed values")
    ap.add_argument("--variants", default="gramc,gram", help=f"comma list of {list(VARIANTS)}")
    ap.add_argument("--jobs", type=int, default=1, help="runs at a time")
    ap.add_argument("--threads", type=int, default=2, help="torch threads per run")
    ap.add_argument("--work", default=str(ROOT / "runs" / "bench_quickstart"), help="run folders (not committed)")
    ap.add_argument("--note", action="append", default=[], help="a line added under the table")
    ap.add_argument("--render-only", action="store_true",
                    help="only rewrite the docs section (and plot) from the results file, with --note lines")
    ap.add_argument("--paired", default="", help="A,B: paired per-user differences A - B per seed")
    ap.add_argument("--results", default=str(RESULTS), help="results JSON (the plot goes beside it as .png)")
    ap.add_argument("--section", default=SECTION, help="docs/benchmarks.md section the table replaces")
    ap.add_argument("overrides", nargs="*", help="extra key=value overrides for every run")
    args = ap.parse_args(argv)
    results, plot_path = Path(args.results), Path(args.results).with_suffix(".png")
    if args.render_only:
        res = read_json(results)
        res["notes"] = args.note or res.get("notes", [])
        write_json(results, res)
        plot(res["rows"], plot_path)
        replace_section(args.section, render(res, args.section))
        return 0
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    for v in variants:
        if v not in VARIANTS:
            ap.error(f"unknown variant {v!r}; choose from {list(VARIANTS)}")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    jobs = [(v, s) for s in seeds for v in variants]
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        rows = list(pool.map(lambda j: run_one(j[0], j[1], work, args.threads, args.overrides, bool(args.paired)),
                             jobs))
    beams = read_json(Path(rows[0]["out"]) / "eval" / "metrics.json").get("beams", "see config")
    res = {"command": "python bench/quickstart_seeds.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "machine": f"{platform.machine()} {os.cpu_count()} cores", "jobs": args.jobs, "threads": args.threads,
           "beams": beams, "rows": rows, "summary": summarise(rows), "notes": args.note, "plot": plot_path.name}
    if args.paired:
        res["paired_variants"] = args.paired.split(",")
        res["paired"] = paired_differences(rows, *res["paired_variants"])
    write_json(results, res)
    plot(rows, plot_path)
    replace_section(args.section, render(res, args.section))
    for v, s in res["summary"].items():
        print(f"{v}: {s['runs']} runs, hit@10 {s['hit@10_mean']:.4f} ± {s['hit@10_sd']:.4f}, "
              f"{s['ratio_mean']:.2f}x popularity (min {s['ratio_min']:.2f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
