"""Atomic writes, run records, the shared check report, and the metrics every model reports through."""

import json

import numpy as np
import pytest
import torch

from gramc.checks import Report, check, failed, passed, warned
from gramc.config import load_config
from gramc.metrics import bootstrap_ci, per_user_metrics, ranks_from_scores, summarize
from gramc.io import atomic_dir, atomic_path, sha256_file, write_json
from gramc.runinfo import write_run_info


def test_atomic_path_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_atomic_dir_replaces_only_on_success(tmp_path):
    d = tmp_path / "ds"
    with atomic_dir(d) as tmp:
        (tmp / "a").write_text("1")
    assert (d / "a").read_text() == "1"
    with pytest.raises(ValueError):
        with atomic_dir(d) as tmp:
            (tmp / "a").write_text("2")
            raise ValueError("injected")
    assert (d / "a").read_text() == "1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


def test_run_info_records_config_versions_and_fingerprints(tmp_path):
    cfg = load_config(None, ["run.seed=11"])
    inp = tmp_path / "input.txt"
    inp.write_text("data")
    write_json(tmp_path / "x.json", {"a": 1})
    info = write_run_info(tmp_path / "run", cfg, {"input": inp})
    saved = json.loads((tmp_path / "run" / "run_info.json").read_text())
    assert saved["seed"] == 11 and info["seed"] == 11
    assert saved["inputs"]["input"]["sha256"] == sha256_file(inp)
    assert "torch" in saved["versions"]
    assert saved["versions"]["cpu"] not in ("", "unknown")  # float results depend on it
    assert saved["versions"]["torch_cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert load_config(tmp_path / "run" / "config.yaml") == cfg


def test_report_ok_json_and_exit_code():
    r = Report().add(passed("a", 1), warned("b", 2, "careful"), check("c", True, 3, "bad"))
    assert r.ok and r.exit_code == 0
    r.add(failed("d", 0.5, "mapping resolves 50% of items: rebuild it from ASINs"))
    assert not r.ok and r.exit_code == 1 and r.failed_names() == ["d"]
    d = json.loads(r.to_json())
    assert d["ok"] is False and [c["name"] for c in d["checks"]] == ["a", "b", "c", "d"]
    assert set(d["checks"][0]) == {"name", "ok", "level", "value", "message"}
    assert "rebuild it from ASINs" in r.table()


def test_metrics_on_hand_computed_ranks():
    ranks = np.array([0, 1, 4, 9, -1])
    m = summarize(ranks, ks=(1, 5, 10))
    assert m["hit@1"] == pytest.approx(1 / 5)
    assert m["hit@5"] == pytest.approx(3 / 5)
    assert m["hit@10"] == pytest.approx(4 / 5)
    assert m["ndcg@5"] == pytest.approx((1 + 1 / np.log2(3) + 1 / np.log2(6)) / 5)
    assert m["mrr"] == pytest.approx((1 + 1 / 2 + 1 / 5 + 1 / 10) / 5)
    assert m["users"] == 5


def test_full_ranking_worst_ties_and_exclusion():
    scores = np.array([[0.1, 0.9, 0.5], [1.0, 1.0, 1.0]])
    assert list(ranks_from_scores(scores, [2, 0], ties="worst")) == [1, 2]
    ex = np.array([[False, True, False], [False, False, False]])
    assert list(ranks_from_scores(scores, [2, 0], exclude=ex, ties="worst")) == [0, 2]


def test_random_ties_are_uniform_seeded_per_key_and_leave_strict_order_alone():
    n_items, users = 5, 20000
    const = np.zeros((users, n_items))  # a constant scorer: every place equally likely, none favoured
    ranks = ranks_from_scores(const, np.zeros(users, dtype=int), keys=np.arange(users), seed=3)
    counts = np.bincount(ranks, minlength=n_items) / users
    assert counts.shape == (n_items,) and np.all(np.abs(counts - 1 / n_items) < 0.015), counts
    # the same key gets the same place whatever the chunk, another seed other places
    again = np.concatenate([ranks_from_scores(const[:7], np.zeros(7, dtype=int), keys=np.arange(7), seed=3),
                            ranks_from_scores(const[7:20], np.zeros(13, dtype=int), keys=np.arange(7, 20), seed=3)])
    assert np.array_equal(again, ranks[:20])
    assert not np.array_equal(ranks_from_scores(const, np.zeros(users, dtype=int), keys=np.arange(users), seed=4),
                              ranks)
    # only ties move: items strictly above always stay above, strictly below stay below
    scores = np.array([[0.1, 0.9, 0.5, 0.5, 0.5, 0.0]] * 400)
    r = ranks_from_scores(scores, np.full(400, 2), keys=np.arange(400), seed=1)
    assert set(r.tolist()) == {1, 2, 3}
    ex = np.zeros_like(scores, dtype=bool)
    ex[:, 1] = True
    assert set(ranks_from_scores(scores, np.full(400, 2), exclude=ex, keys=np.arange(400)).tolist()) == {0, 1, 2}


def test_bootstrap_ci_brackets_mean():
    per = per_user_metrics(np.array([0, -1] * 50), ks=(1,))
    lo, hi = bootstrap_ci(per, n=200)["hit@1"]
    assert lo < 0.5 < hi


def test_atomic_outputs_get_umask_permissions(tmp_path):
    import os
    import stat

    mask = os.umask(0o022)
    try:
        with atomic_path(tmp_path / "f.txt") as tmp:
            tmp.write_text("x")
        with atomic_dir(tmp_path / "d") as tmp:
            (tmp / "a").write_text("1")
    finally:
        os.umask(mask)
    assert stat.S_IMODE((tmp_path / "f.txt").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o755


def test_bootstrap_in_chunks_keeps_memory_bounded_and_small_runs_unchanged(monkeypatch):
    """Resamples x users above BOOTSTRAP_CHUNK are drawn in chunks (16 bytes an entry would need
    35 GB for 100,000 resamples of the full split's 22,363 users); below it the draw, and so every
    interval already reported, is the one it was."""
    import gramc.metrics as metrics

    rng = np.random.default_rng(0)
    per_user = {"hit@10": (rng.random(5000) < 0.05).astype(float)}
    one_draw = metrics.bootstrap_ci(per_user, n=400, seed=3)
    idx = np.random.default_rng(3).integers(0, 5000, size=(400, 5000))
    means = per_user["hit@10"][idx].mean(axis=1)
    assert one_draw["hit@10"] == (float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975)))
    monkeypatch.setattr(metrics, "BOOTSTRAP_CHUNK", 5000 * 7)  # 7 resamples a chunk
    chunked = metrics.bootstrap_ci(per_user, n=400, seed=3)["hit@10"]
    lo, hi = one_draw["hit@10"]
    assert chunked[0] < per_user["hit@10"].mean() < chunked[1]
    assert abs((chunked[1] - chunked[0]) - (hi - lo)) < 0.25 * (hi - lo)  # the same interval, other draws


def test_eval_bootstrap_is_bounded_when_the_config_loads():
    from gramc.config import ConfigError, load_config

    assert load_config(None, ["eval.bootstrap=100000"]).eval.bootstrap == 100000
    with pytest.raises(ConfigError, match="eval.bootstrap.*between 0 and 100,000"):
        load_config(None, ["eval.bootstrap=10000000"])
