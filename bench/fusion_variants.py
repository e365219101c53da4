"""Which fusion rule would do better? Validation users only (the test split stays unread).

    python bench/fusion_variants.py --run WORK/models/gramc-user_passage/train --users 1000

Candidates and scores come from one fused pass over `--users` seeded validation users (history
excluded), then each rule is tried at every grid weight: the z-score rule gramc uses
(`gramc.eval.fusion.fused_scores`), reciprocal-rank fusion over the candidates, and each scorer
alone. Prints the best validation ndcg@10 of each rule; the fold-in's full ranking is printed for
reference. Results: bench/results/fusion_variants.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from gramc.data.splits import samples  # noqa: E402
from gramc.eval.evaluate import evaluate_samples  # noqa: E402
from gramc.eval.fusion import GRID, Collaborative, Fusion, fused_order  # noqa: E402
from gramc.io import write_json  # noqa: E402
from gramc.metrics import per_user_metrics, ranks_from_lists, ranks_from_scores  # noqa: E402
from gramc.model.runs import load_model_from_run  # noqa: E402


def ndcg10(ranks: np.ndarray) -> float:
    return float(per_user_metrics(ranks, (10,))["ndcg@10"].mean())


def rrf_order(cand, gen, cf, w, k=60.0):
    """Reciprocal-rank fusion over each user's candidates: (1-w)/(k+rank_gen) + w/(k+rank_cf)."""
    valid = np.isfinite(gen) & np.isfinite(cf)
    rg = np.argsort(np.argsort(-np.where(valid, gen, -np.inf), 1, kind="stable"), 1)
    rc = np.argsort(np.argsort(-np.where(valid, cf, -np.inf), 1, kind="stable"), 1)
    score = np.where(valid, (1 - w) / (k + rg) + w / (k + rc), -np.inf)
    order = np.argsort(-score, 1, kind="stable")
    return np.take_along_axis(np.where(valid, cand, -1), order, 1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True)
    ap.add_argument("--users", type=int, default=1000)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "fusion_variants.json"))
    a = ap.parse_args()
    torch.set_num_threads(1)
    model, assets, cfg = load_model_from_run(a.run, "best", overrides=["eval.exclude_history=true"], progress=False)
    smp = samples(assets.ds, "valid", cfg.data.max_his)
    keep = np.sort(np.random.default_rng(cfg.run.seed).choice(len(smp), min(a.users, len(smp)), replace=False))
    smp = [smp[i] for i in keep]
    collab = Collaborative.for_run(cfg, assets)
    t0 = time.perf_counter()
    out = evaluate_samples(model, assets, cfg, smp, fusion=Fusion(("lightgcn",), collab), progress=True)
    cand, gen, cf, tgt = out["cand"], out["gen"], out["cf"][..., 0], out["targets"]
    rules = {"zscore": lambda w: fused_order(cand, gen, cf, w)[0], "rrf": lambda w: rrf_order(cand, gen, cf, w)}
    res: dict = {"run": a.run, "users": len(smp), "beam_alone": ndcg10(out["ranks"])}
    for name, rule in rules.items():
        curve = {f"{w:.2f}": ndcg10(ranks_from_lists(rule(w), tgt)) for w in GRID}
        best = max(curve, key=curve.get)
        res[name] = {"best_weight": float(best), "best": curve[best], "curve": curve}
    scores = collab.scores(smp)
    exclude = torch.zeros_like(scores, dtype=torch.bool)
    for r, s in enumerate(smp):
        exclude[r, [i for i in s.seen if i != s.target]] = True
    res["foldin_full_ranking"] = ndcg10(ranks_from_scores(scores, tgt, exclude, keys=[s.user for s in smp],
                                                         seed=cfg.run.seed))
    res["target_is_candidate"] = float((cand == tgt[:, None]).any(1).mean())
    res["seconds"] = round(time.perf_counter() - t0, 1)
    res["command"] = "python bench/fusion_variants.py " + " ".join(sys.argv[1:])
    write_json(a.out, res)
    print(json.dumps({k: (v if not isinstance(v, dict) else {x: v[x] for x in ("best_weight", "best")})
                      for k, v in res.items()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
