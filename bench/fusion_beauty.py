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
from gramc.io import atomic_path, read_json, write_json  # noqa: E402

BASELINES = ("pop", "lightgcn", "sasrec")
GENERATIVE = ("gram", "gram-s2", "gramc-user_passage", "gramc-user_passage-s2")
FAIR = ["eval.exclude_history=true", "eval.ties=random"]
RESULTS = ROOT / "bench" / "results" / "fusion_beauty.json"


def bench_of(work: Path) -> "ev.Bench":
    _, b = ev.parse(["--work", str(work), "--placements", "user_passage"])
    return b


def run_baselines(b: "ev.Bench") -> dict[str, Any]:
    """pop, LightGCN and SASRec-CE as `gramc pipeline` baseline stages under the fair protocol."""
    from gramc.pipeline.pipeline import run_pipeline

    root = b.models_dir / "reference-fair"
    extra = [f"pipeline.baselines=[{','.join(BASELINES)}]", f"baseline.sasrec_max_minutes={b.sasrec_minutes}"]
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
               target_counts=[int(c) for c in np.bincount(
                   [i for s in assets.ds.sequences for i in s[:-2]], minlength=assets.ds.num_items)[res.targets]])
    write_json(out / "metrics.json", rec)
    return rec


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
    return 0


if __name__ == "__main__":
    sys.exit(main())
