"""bench/fusion_beauty.py: rows of one or two seeds, paired intervals over the same users, segments."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def mod():
    sys.path.insert(0, str(ROOT / "bench"))
    spec = importlib.util.spec_from_file_location("fusion_beauty", ROOT / "bench" / "fusion_beauty.py")
    m = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(m)
    return m


def fake_runs(n: int = 300):
    rng = np.random.default_rng(0)
    users = [f"u{i}" for i in range(n)]
    counts = rng.integers(1, 30, n).tolist()
    miss = lambda p: np.where(rng.random(n) < p, rng.integers(0, 20, n), -1).tolist()  # noqa: E731
    gen = {"fused": {"fusion": {"weight": 0.3, "target_is_candidate": 0.5, "tune_seconds": 1.0}}}
    runs = {b: {"users": users[::-1], "ranks": miss(0.1)[::-1], "record": {"protocol": {"history_window": 50}}}
            for b in ("pop", "lightgcn", "sasrec")}
    for fam in ("gram", "gramc"):
        for seed in ("", "-s2"):
            rec = {**gen, "fused_pass_seconds": 2.0}
            runs[fam + seed] = {"users": users, "ranks": miss(0.1), "counts": counts, "record": rec}
            runs[f"{fam}-fused-lightgcn{seed}"] = {"users": users, "ranks": [0] * n, "record": rec}
    return runs


def test_summary_pairs_seed_means_on_the_same_users(mod):
    runs = fake_runs()
    res = mod.summarise(runs, seed=1, n_boot=200)
    assert res["rows"]["gramc"]["runs"] == ["gramc", "gramc-s2"] and res["rows"]["sasrec"]["runs"] == ["sasrec"]
    # every fused user is a hit at rank 0: ndcg@10 = 1, and its paired gain over gramc = 1 - gramc's mean
    assert res["rows"]["gramc-fused-lightgcn"]["metrics"]["ndcg@10"] == 1.0
    d = res["paired"]["gramc-fused-lightgcn - gramc"]["ndcg@10"]
    assert d["mean"] == pytest.approx(1 - res["rows"]["gramc"]["metrics"]["ndcg@10"]) and d["lo"] <= d["mean"] <= d["hi"]
    assert sum(s["users"] for s in res["rows"]["pop"]["segments"]) == 300
    text = mod.render(res, "python bench/fusion_beauty.py summary")
    assert text.startswith(mod.SECTION) and "| gramc-fused-lightgcn - sasrec |" in text

