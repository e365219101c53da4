"""How wide are test CIs on a subset of N users? Bootstrap of simulated per-user ranks (issue 15 plan).

    python bench/evidence_ci.py --users 3150 4216 6625 22363 --ndcg 0.03 0.04 0.05

Ranks of hits follow P(rank = r) ~ 1/(r+1) over the top 50 (a harmonic decay, as ranked lists
look); the hit probability is set so that the mean ndcg@10 equals the target. Prints the 95%
bootstrap half-width of ndcg@10 for one model and of a paired difference of two models whose
per-user outcomes agree as often as two runs of similar models do (a share `--shared` of the
users hit or miss together), using gramc.metrics' bootstrap code. Results:
bench/results/evidence_ci.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from gramc.metrics import bootstrap_ci, paired_bootstrap_ci, per_user_metrics  # noqa: E402
from gramc.io import write_json  # noqa: E402


def ranks(n: int, ndcg10: float, rng: np.random.Generator) -> np.ndarray:
    r = np.arange(50)
    p = 1.0 / (r + 1)
    p /= p.sum()
    gain10 = float((p[:10] / np.log2(r[:10] + 2)).sum())  # E[ndcg@10 | hit in the top 50]
    hit = rng.random(n) < ndcg10 / gain10
    return np.where(hit, rng.choice(50, size=n, p=p), -1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, nargs="+", default=[3150, 4216, 6625, 22363])
    ap.add_argument("--ndcg", type=float, nargs="+", default=[0.03, 0.04, 0.05])
    ap.add_argument("--shared", type=float, default=0.5, help="share of users whose outcome two models share")
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    rows = []
    for n in args.users:
        for nd in args.ndcg:
            a = ranks(n, nd, rng)
            b = np.where(rng.random(n) < args.shared, a, ranks(n, nd, rng))  # same mean, correlated
            pa, pb = per_user_metrics(a, (10,)), per_user_metrics(b, (10,))
            lo, hi = bootstrap_ci(pa, n=args.bootstrap, seed=args.seed)["ndcg@10"]
            d = paired_bootstrap_ci(pa, pb, n=args.bootstrap, seed=args.seed)["ndcg@10"]
            rows.append({"users": n, "ndcg@10": nd, "measured": float(pa["ndcg@10"].mean()),
                         "hit@10": float(pa["hit@10"].mean()), "half_width": (hi - lo) / 2,
                         "relative_half_width": (hi - lo) / 2 / nd, "paired_diff_half_width": (d["hi"] - d["lo"]) / 2})
            r = rows[-1]
            print(f"users {n:6d}  ndcg@10 {nd:.3f}: one model ±{r['half_width']:.4f} ({r['relative_half_width']:.0%}), "
                  f"paired difference ±{r['paired_diff_half_width']:.4f}")
    write_json(ROOT / "bench" / "results" / "evidence_ci.json", {"args": vars(args), "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
