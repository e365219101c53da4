"""bench/dense_beauty.py: the fused rows it derives from one two-scorer pass (dense candidates are
the first columns; weights tuned on the validation arrays only), and the variants' overrides."""

from __future__ import annotations

import gzip
import importlib.util
import json
import sys
from pathlib import Path
from types import SimpleNamespace

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


def write_record(work: Path, name: str, users: list, foldin: list, dense: list) -> None:
    out = work / "dense" / name / "fair" / "metrics.json"
    out.parent.mkdir(parents=True)
    out.write_text(json.dumps({"users": users[::-1], "target_counts": [1] * len(users),
                               "rows": {"dense-alone": {"ranks": dense[::-1]},
                                        "lightgcn-alone": {"ranks": foldin[::-1]}}}))


def test_collect_aligns_users_and_checks_the_lightgcn_row_against_the_reference(mod, tmp_path):
    ref = ROOT / "bench" / "results" / "fusion_beauty_ranks" / "lightgcn-foldin.json.gz"
    with gzip.open(ref) as f:
        foldin = json.loads(f.read())
    users, ranks = foldin["users"], foldin["ranks"]
    dense = list(range(len(users)))
    write_record(tmp_path, "posthoc-text", users, ranks, dense)  # stored in reverse user order
    runs = mod.collect(SimpleNamespace(work=tmp_path), ["posthoc-text"])
    assert runs["posthoc-text:dense-alone"]["ranks"] == dense  # back in the reference order
    assert "posthoc-text:lightgcn-alone" not in runs  # the check passed, the duplicate row is dropped
    bad = list(ranks)
    bad[0] += 1
    write_record(tmp_path, "posthoc-gcn", users, bad, dense)
    with pytest.raises(SystemExit, match="posthoc-gcn: its LightGCN fold-in ranks differ"):
        mod.collect(SimpleNamespace(work=tmp_path), ["posthoc-gcn"])


def test_pairs_compare_with_the_references_and_the_ablation_with_the_two_input_head(mod):
    rows = ["gramc", "sasrec", "both:beam", "posthoc-both:dense-alone", "posthoc-text:dense-alone", "posthoc-both:beam",
            "both:fused-dense"]
    got = mod.pairs(rows)
    for r in ("both:beam", "posthoc-text:dense-alone", "posthoc-both:dense-alone"):
        assert {a for b, a in got if b == r} >= {"gramc", "gramc-fused-lightgcn", "sasrec", "lightgcn-foldin"}
    assert ("posthoc-text:dense-alone", "posthoc-both:dense-alone") in got
    assert ("posthoc-both:dense-alone", "posthoc-both:dense-alone") not in got
    assert ("posthoc-both:beam", "posthoc-both:dense-alone") not in got
    assert not any(b in ("gramc", "sasrec", "both:fused-dense") for b, _ in got)


def test_pairs_compare_the_head_on_the_indexing_run_with_the_head_on_plain_gramc(mod):
    rows = ["gramc", "posthoc-both:beam", "posthoc-both:dense-alone", "posthoc-both:fused-both",
            "posthoc-both:fused-dense", "index-posthoc:beam", "index-posthoc:dense-alone", "index-posthoc:fused-both",
            "index-posthoc:fused-dense"]
    got = [(b, a) for b, a in mod.pairs(rows) if b.startswith("index-posthoc:") and a.startswith("posthoc-")]
    assert sorted(got) == [("index-posthoc:dense-alone", "posthoc-both:dense-alone"),
                           ("index-posthoc:fused-both", "posthoc-both:fused-both")]


def test_posthoc_variants_fit_a_head_on_the_plain_run_of_their_seed(mod, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(mod.subprocess, "run", lambda cmd, **kw: calls.append(cmd))
    bench = SimpleNamespace(work=tmp_path)
    mod.train(bench, "posthoc-both-s2", 1)
    mod.train(bench, "posthoc-text", 1)
    assert calls[0][3:] == ["train-head", "--run", str(tmp_path / "models" / "gramc-user_passage-s2" / "train"),
                            "--out", str(tmp_path / "dense" / "posthoc-both-s2"), "model.dense.item=both"]
    assert calls[1][5] == str(tmp_path / "models" / "gramc-user_passage" / "train") and calls[1][-1].endswith("=text")
    best = tmp_path / "dense" / "posthoc-text" / "checkpoints" / "best"
    best.mkdir(parents=True)
    (best / "model.safetensors").write_bytes(b"")
    mod.train(bench, "posthoc-text", 1)  # fitted already: nothing runs
    assert len(calls) == 2
    mod.train(bench, "index-posthoc", 1)
    assert calls[2][5] == str(tmp_path / "dense" / "index")
    with pytest.raises(SystemExit, match="unknown variant"):
        mod.split_name("posthoc-dense")


def test_plot_draws_every_row_and_one_tercile_panel_per_segment(mod, tmp_path):
    pytest.importorskip("matplotlib")
    segs = lambda v: [{"train_count": [lo, hi], "users": 10, "ndcg@10": v, "recall@50": v}  # noqa: E731
                      for lo, hi in ((0, 2), (3, 5), (6, 79))]
    rows = {r: {"metrics": {"ndcg@10": 0.02}, "ci": {"ndcg@10": [0.01, 0.03]}, "segments": segs(0.01 * k)}
            for k, r in enumerate(("sasrec", "gramc", "both:beam", "index-posthoc:fused-both"))}
    out = tmp_path / "p.png"
    mod.plot({"rows": rows}, out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.pyplot as plt
    assert not plt.get_fignums()  # the figure is closed
