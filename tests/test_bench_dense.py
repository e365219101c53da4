"""bench/dense_beauty.py: the fused rows it derives from one two-scorer pass (dense candidates are
the first columns; weights tuned on the validation arrays only), and the variants' overrides."""

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
    spec = importlib.util.spec_from_file_location("dense_beauty", ROOT / "bench" / "dense_beauty.py")
    m = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(m)
    return m


def pass_arrays(n: int, target_col: int, rng):
    """One beam column, one dense column, one LightGCN column; the target sits in `target_col`, which
    the dense scorer (column 0 of cf) ranks first and everything else ranks last."""
    cand = np.tile(np.array([10, 11, 12]), (n, 1))
    gen = np.tile(np.array([-1.0, -2.0, -3.0]), (n, 1)) + rng.normal(0, 0.01, (n, 3))
    dense = np.zeros((n, 3))
    dense[:, target_col] = 5.0
    lgcn = np.tile(np.array([3.0, 2.0, 1.0]), (n, 1))
    return {"cand": cand, "gen": gen, "cf": np.stack([dense, lgcn], -1), "targets": cand[:, target_col]}


def test_fused_rows_tune_on_validation_and_keep_the_dense_candidates_first(mod, monkeypatch):
    monkeypatch.setattr(mod, "CANDIDATES", 1)
    rng = np.random.default_rng(0)
    valid, test = pass_arrays(20, 1, rng), pass_arrays(30, 1, rng)
    rows = mod.fused_rows(valid, test, ("dense", "lightgcn"), beams=1)
    assert set(rows) == {"fused-dense", "fused-both"}
    assert rows["fused-dense"]["scorers"] == ["dense"] and rows["fused-both"]["scorers"] == ["dense", "lightgcn"]
    assert rows["fused-dense"]["weight"] > 0.3 and rows["fused-dense"]["ranks"] == [0] * 30
    w = rows["fused-both"]["weight"]
    assert isinstance(w, list) and w[0] > w[1] and rows["fused-both"]["ranks"] == [0] * 30


def test_the_dense_row_never_sees_the_lightgcn_candidates(mod, monkeypatch):
    monkeypatch.setattr(mod, "CANDIDATES", 1)
    rng = np.random.default_rng(1)
    valid, test = pass_arrays(20, 2, rng), pass_arrays(30, 2, rng)  # the target is LightGCN's candidate only
    rows = mod.fused_rows(valid, test, ("dense", "lightgcn"), beams=1)
    assert rows["fused-dense"]["ranks"] == [-1] * 30
    assert rows["fused-both"]["ranks"] == [0] * 30


def test_variants_and_their_second_seed(mod):
    assert "model.dense.item=both" in mod.variant_overrides("both", 2023)
    assert mod.variant_overrides("both-index-s2", 2023)[-1] == "run.seed=2024"
    assert "train.indexing.enabled=true" in mod.variant_overrides("index", 2023)
    with pytest.raises(SystemExit, match="unknown variant"):
        mod.variant_overrides("dense", 2023)
