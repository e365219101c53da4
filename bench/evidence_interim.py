"""Interim test row of a run that is still training: its best checkpoint so far on every test user,
and the paired interval against a finished model's per-user test ranks (issue 15's second run).

    python bench/evidence_interim.py --run /work/ev2/models/gram/train --against /work/ev2/models/gramc-user_passage/test/ranks.json \
        --out bench/results/evidence_beauty_gram_interim.json

The checkpoint is copied first (training keeps replacing `best`); the figures are an interim
reading, labelled as such wherever they are quoted.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from gramc.eval.evaluate import evaluate_split  # noqa: E402
from gramc.io import read_json, write_json  # noqa: E402
from gramc.metrics import paired_bootstrap_ci, per_user_metrics  # noqa: E402
from gramc.model.runs import load_model_from_run  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="train folder of the run (still training is fine)")
    ap.add_argument("--against", required=True, help="ranks.json of a finished model on the same test users")
    ap.add_argument("--out", required=True)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "best"
        shutil.copytree(Path(a.run) / "checkpoints" / "best", ckpt)
        state = read_json(ckpt / "state.json")
        model, assets, cfg = load_model_from_run(a.run, str(ckpt))
        with torch.no_grad():
            res = evaluate_split(model, assets, cfg, "test")
    users = [assets.ds.users[u] for u in res.users]
    other = read_json(a.against)
    if other["users"] != users:
        raise SystemExit(f"{a.against} holds other test users than {a.run}'s test split")
    ks = list(cfg.eval.ks)
    mine, theirs = per_user_metrics(np.array(res.ranks), ks), per_user_metrics(np.array(other["ranks"]), ks)
    write_json(Path(a.out), {"run": a.run, "checkpoint_step": state["step"], "checkpoint_epoch": state["epoch"] + 1,
                             "test": res.to_json(), "against": a.against,
                             "paired_against_minus_run": paired_bootstrap_ci(mine, theirs, n=cfg.eval.bootstrap,
                                                                             seed=cfg.run.seed)})
    print(f"{a.run} best (step {state['step']}): test ndcg@10 {res.metrics['ndcg@10']:.4f}; written {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
