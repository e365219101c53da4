"""Which beam length penalty ranks better: 0 (raw sum of log-probabilities) or GRAM's 1.0?

Evaluates one trained run's best checkpoint on the *validation* split (never test) with both
settings (GRAM's early stopping rule, `eval.early_stopping=heuristic`, in both), on the same
users and beams, and reports every metric plus a paired bootstrap 95% interval of the per-user
difference (lp=1 minus lp=0) of ndcg@10 and hit@10. Also counts IDs by length, since the penalty
only matters when IDs have different lengths.

    .venv/bin/python bench/length_penalty.py --run runs/quickstart [--beams 50]
    # writes bench/results/length_penalty.json
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def main() -> None:
    from gramc.eval.evaluate import evaluate_split
    from gramc.model.runs import load_model_from_run
    from gramc.metrics import per_user_metrics
    from gramc.io import write_json

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default=str(ROOT / "runs" / "quickstart"))
    ap.add_argument("--checkpoint", default="best")
    ap.add_argument("--beams", type=int, default=50)
    ap.add_argument("--penalties", default="0,1")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "length_penalty.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    model, assets, cfg = load_model_from_run(args.run, args.checkpoint, [f"eval.beams={args.beams}"])
    lengths = Counter(len(assets.item_ids.target(i)) for i in range(assets.ds.num_items))
    out = {"run": args.run, "checkpoint": args.checkpoint, "split": "valid", "beams": args.beams,
           "id_lengths_incl_eos": dict(sorted(lengths.items())), "results": {}}
    per = {}
    for lp in [float(x) for x in args.penalties.split(",")]:
        cfg.eval.length_penalty = lp
        t = time.perf_counter()
        res = evaluate_split(model, assets, cfg, "valid")
        out["results"][str(lp)] = {**res.to_json(), "wall_s": round(time.perf_counter() - t, 1)}
        per[lp] = per_user_metrics(res.ranks, cfg.eval.ks)
        print(f"length_penalty={lp}: " + ", ".join(f"{k} {v:.4f}" for k, v in res.metrics.items()), flush=True)
    lps = sorted(per)
    if len(lps) >= 2:
        a, b = lps[0], lps[-1]
        rng = np.random.default_rng(cfg.run.seed)
        n = len(per[a]["mrr"])
        idx = rng.integers(0, n, size=(cfg.eval.bootstrap, n))
        diffs = {}
        for name in ("ndcg@10", "hit@10", "mrr"):
            d = per[b][name] - per[a][name]
            boot = d[idx].mean(axis=1)
            diffs[name] = {"mean": float(d.mean()), "ci": [float(np.quantile(boot, 0.025)),
                                                         float(np.quantile(boot, 0.975))]}
        out["paired_difference"] = {"of": f"lp={b} minus lp={a}", **diffs}
        print(f"paired difference lp={b} - lp={a}: " + ", ".join(
            f"{k} {v['mean']:+.4f} [{v['ci'][0]:+.4f}, {v['ci'][1]:+.4f}]" for k, v in diffs.items()))
    write_json(args.out, out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
