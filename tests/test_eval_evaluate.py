"""evaluate_split: items encoded once give the per-user results; ranks, exclusion, DDP sharding."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from gramc.data.splits import samples
from gramc.eval.beam import beam_search
from gramc.eval.evaluate import EvalError, evaluate_split, merge_shards
from gramc.ids.trie import trie_for
from gramc.metrics import summarize
from gramc.model.inputs import Collator

from eval_fakes import setup

ROOT = Path(__file__).resolve().parents[1]


def per_user_reference(cfg, assets, model, split):
    """Each user alone, with its own item passages encoded in its own batch (no shared table)."""
    trie = trie_for(assets.item_ids)
    collate = Collator(assets.cache, cfg, assets.gcn_rows, dedupe=False)
    items, scores = [], []
    with torch.no_grad():
        for s in samples(assets.ds, split, cfg.data.max_his):
            mem, mask = model.memory(collate([s]))
            res = beam_search(model.t5, mem, mask, trie, beams=cfg.eval.beams,
                              length_penalty=cfg.eval.length_penalty, early_stopping=cfg.eval.early_stopping)
            items.append(res.items[0].numpy())
            scores.append(res.scores[0].numpy())
    return np.stack(items), np.stack(scores)


@pytest.mark.parametrize("placement,enabled", [("user_passage", True), ("every_passage", True),
                                               ("memory", True), ("user_passage", False)])
def test_batched_evaluation_equals_per_user_search(placement, enabled):
    cfg, assets, model = setup(placement=placement, enabled=enabled, num_users=6)
    res = evaluate_split(model, assets, cfg, "valid", progress=False)
    ref_items, ref_scores = per_user_reference(cfg, assets, model, "valid")
    assert res.num_users == 6 and res.invalid == 0
    np.testing.assert_array_equal(res.items, ref_items)
    np.testing.assert_allclose(res.scores, ref_scores, atol=1e-4)
    smp = samples(assets.ds, "valid", cfg.data.max_his)
    assert res.targets.tolist() == [s.target for s in smp]
    for r, t, row in zip(res.ranks, res.targets, res.items):
        assert r == (row.tolist().index(t) if t in row else -1)
    expected = summarize(res.ranks, cfg.eval.ks)
    expected.pop("users")
    assert res.metrics == expected
    for name, (lo, hi) in res.ci.items():
        assert lo <= res.metrics[name] + 1e-12 and res.metrics[name] <= hi + 1e-12
    rec = res.to_json()
    assert set(rec) >= {"split", "users", "metrics", "ci", "beams", "length_penalty", "invalid", "checkpoint",
                        "time_s", "repeats", "popularity"}
    assert sum(g["users"] for g in rec["popularity"]["groups"]) == len(smp)
    top1_seen = [int(row[0]) in set(s.history) for row, s in zip(res.items, smp)]
    assert rec["repeats"]["top1_in_history"] == pytest.approx(sum(top1_seen) / len(smp))
    preds = list(res.predictions(assets.ds.item_ids, assets.ds.users, top=5))
    assert len(preds) == 6 and all(len(p["items"]) <= 5 for p in preds)
    assert preds[0]["target"] == assets.ds.item_ids[smp[0].target]


def test_exclude_history_removes_history_items_but_never_the_target():
    cfg, assets, model = setup(num_users=8, beams=40)
    cfg.eval.exclude_history = True
    cfg.data.max_his = 3  # shorter than most sequences: items older than the window are excluded too
    res = evaluate_split(model, assets, cfg, "test", progress=False)
    smp = samples(assets.ds, "test", cfg.data.max_his)
    assert any(len(s.seen) > len(s.history) for s in smp)
    for s, row, r in zip(smp, res.items, res.ranks):
        got = set(row[row >= 0].tolist())
        earlier = set(assets.ds.sequences[s.user][:-1]) - {s.target}
        assert not (got & earlier)
        assert r >= 0  # beams = catalogue size: the target is always found
        assert len(got) == 40 - len(earlier)


def test_merge_shards_checks_coverage():
    part = lambda idx: {"index": np.array(idx), "ranks": np.array(idx) * 10, "invalid": 0}  # noqa: E731
    merged = merge_shards([part([0, 3]), part([1, 4]), part([2])], 5)
    assert merged["ranks"].tolist() == [0, 10, 20, 30, 40]
    with pytest.raises(EvalError, match="duplicated e.g. \\[1\\]"):
        merge_shards([part([0, 1]), part([1, 2])], 3)
    with pytest.raises(EvalError, match="missing e.g. \\[2\\]"):
        merge_shards([part([0, 1])], 3)


def test_bad_split_is_an_error():
    cfg, assets, model = setup(num_users=3)
    with pytest.raises(EvalError, match="split must be"):
        evaluate_split(model, assets, cfg, "train", progress=False)


@pytest.mark.slow
def test_ddp_evaluation_with_three_processes_counts_each_user_once(tmp_path):
    n = 10  # not divisible by 3
    out = tmp_path / "ddp.json"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT / "src"))
    torchrun = Path(sys.executable).with_name("torchrun")
    proc = subprocess.run([str(torchrun), "--nproc_per_node=3", "--master_port=29517",
                           str(ROOT / "tests" / "eval_ddp_helper.py"), str(out), str(n)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(out.read_text())
    assert got["world"] == 3
    cfg, assets, model = setup(num_users=n)
    single = evaluate_split(model, assets, cfg, "test", progress=False)
    assert got["users"] == single.users.tolist() == list(range(n))
    assert got["ranks"] == single.ranks.tolist()
    assert got["items"] == single.items.tolist()
    assert got["metrics"] == pytest.approx(single.metrics)


def test_recorded_protocol_is_what_the_search_read(monkeypatch):
    import gramc.eval.evaluate as ev

    cfg, assets, model = setup(num_users=6, beams=12)
    cfg.eval.exclude_history = True
    read, excluded = [], []
    search = ev.search_batch

    def spy(model, collate, chunk, *a, **k):
        read.extend(len(s.history) for s in chunk)
        res = search(model, collate, chunk, *a, **k)
        excluded.extend(bool(set(row.tolist()) & (set(s.seen) - {s.target})) for s, row in zip(chunk, res.items))
        return res

    monkeypatch.setattr(ev, "search_batch", spy)
    rec = evaluate_split(model, assets, cfg, "test", progress=False).to_json()
    assert rec["protocol"]["history_window"] == max(read) == cfg.data.max_his
    assert rec["protocol"]["exclude_history"] == "every earlier item" and not any(excluded)
    assert rec["protocol"]["ranking"].endswith("12 beams")


def test_the_splits_of_one_call_share_one_item_pass_and_new_weights_make_a_new_one(monkeypatch):
    import gramc.eval.evaluate as ev

    cfg, assets, model = setup(num_users=6, beams=4)
    passes = []
    real = ev.encode_all_items
    monkeypatch.setattr(ev, "encode_all_items", lambda *a, **k: passes.append(1) or real(*a, **k))
    both = ev.evaluate_splits(model, assets, cfg, ("valid", "test"), progress=False)
    assert len(passes) == 1 and set(both) == {"valid", "test"}
    assert both["valid"].extra["encode_s"] > 0 and both["test"].extra["encode_s"] == 0  # made once, then reused
    for split in ("valid", "test"):  # the same results as one split per call
        alone = ev.evaluate_split(model, assets, cfg, split, progress=False)
        np.testing.assert_array_equal(alone.ranks, both[split].ranks)
        np.testing.assert_array_equal(alone.items, both[split].items)
    assert len(passes) == 3
    encoded = ev.EncodedItems()
    ev.evaluate_split(model, assets, cfg, "valid", progress=False, encoded=encoded)
    with torch.no_grad():
        next(model.parameters()).add_(0.01)  # new weights: the kept states no longer describe the model
    ev.evaluate_split(model, assets, cfg, "valid", progress=False, encoded=encoded)
    assert encoded.passes == 2 and len(passes) == 5


def test_the_fused_rankers_tuning_pass_shares_the_splits_item_pass(monkeypatch):
    import gramc.eval.evaluate as ev
    from gramc.eval.fusion import Collaborative

    cfg, assets, model = setup(num_users=6, beams=4)
    cfg.eval.fusion.candidates, cfg.eval.fusion.tune_users = 3, 4
    table = torch.randn(assets.ds.num_items, 8, generator=torch.Generator().manual_seed(0))
    monkeypatch.setattr(Collaborative, "for_run", classmethod(lambda cls, c, a: Collaborative(table)))
    passes = []
    real = ev.encode_all_items
    monkeypatch.setattr(ev, "encode_all_items", lambda *a, **k: passes.append(1) or real(*a, **k))
    ev.evaluate_split(model, assets, cfg, "test", progress=False, fused=True)
    assert len(passes) == 1
