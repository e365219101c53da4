"""Fused ranking: exact against brute force (every item teacher forced, then fused), tuning on
validation only, and the settings' errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gramc.config import ConfigError, load_config
from gramc.data.splits import samples
from gramc.eval.beam import score_sequences
from gramc.eval.evaluate import evaluate_split
from gramc.eval.fusion import Collaborative, FusionError, fused_scores, standardise, tune_weight
from gramc.ids.trie import trie_for
from gramc.model.inputs import Collator

from eval_fakes import N_ITEMS, setup


def fake_collab(monkeypatch, seed: int = 1) -> Collaborative:
    g = torch.Generator().manual_seed(seed)
    collab = Collaborative(torch.randn(N_ITEMS, 8, generator=g))
    monkeypatch.setattr(Collaborative, "for_run", classmethod(lambda cls, cfg, assets: collab))
    return collab


def brute_force(cfg, assets, model, collab, split):
    """Per user: every item's teacher-forced score and collaborative score (excluded items: -inf)."""
    trie = trie_for(assets.item_ids)
    targets = [assets.item_ids.target(i) for i in range(N_ITEMS)]
    collate = Collator(assets.cache, cfg, assets.gcn_rows, dedupe=False)
    gen, cf = [], []
    with torch.no_grad():
        for s in samples(assets.ds, split, cfg.data.max_his):
            mem, mask = model.memory(collate([s]))
            g = score_sequences(model.t5, mem, mask, targets, length_penalty=cfg.eval.length_penalty,
                                softmax=cfg.model.softmax, trie=trie)[0].numpy()
            c = collab.scores([s])[0].numpy().astype(np.float64)
            if cfg.eval.exclude_history:
                seen = [i for i in s.seen if i != s.target]
                g[seen], c[seen] = -np.inf, -np.inf
            gen.append(g), cf.append(c)
    return np.stack(gen), np.stack(cf)


@pytest.mark.parametrize("softmax,lp", [("vocab", 0.0), ("trie", 1.0)])
def test_fused_ranking_equals_brute_force_over_every_item(monkeypatch, softmax, lp):
    cfg, assets, model = setup(num_users=6, beams=N_ITEMS)
    cfg.model.softmax, cfg.eval.length_penalty, cfg.eval.exclude_history = softmax, lp, True
    cfg.eval.fusion.candidates, cfg.eval.fusion.weight = N_ITEMS, 0.4
    collab = fake_collab(monkeypatch)
    res = evaluate_split(model, assets, cfg, "test", progress=False, fused=True)
    gen, cf = brute_force(cfg, assets, model, collab, "test")
    want = fused_scores(gen, cf, 0.4)
    for u in range(len(want)):
        n = int(np.isfinite(want[u]).sum())
        order = np.argsort(-want[u], kind="stable")[:n]
        np.testing.assert_array_equal(res.items[u][:n], order)
        np.testing.assert_allclose(res.scores[u][:n], want[u][order], atol=1e-4)
    assert res.extra["fusion"]["target_is_candidate"] == 1.0


def test_a_candidate_the_beam_missed_gets_the_score_the_beam_would_give_it(monkeypatch):
    cfg, assets, model = setup(num_users=6, beams=4)  # the fake users had most items: nothing excluded here
    cfg.eval.fusion.candidates, cfg.eval.fusion.weight = 6, 0.5
    collab = fake_collab(monkeypatch)
    res = evaluate_split(model, assets, cfg, "test", progress=False, fused=True)
    gen, cf = brute_force(cfg, assets, model, collab, "test")
    # the fused list holds the beam's 4 items and the collaborative top 6 the beam missed, each
    # with the exhaustive generative score: re-fusing those exact scores gives the same list
    for u in range(len(gen)):
        got = res.items[u][res.items[u] >= 0]
        assert 6 < len(got) <= 10 and len(set(got.tolist())) == len(got)
        top_cf = set(np.argsort(-cf[u], kind="stable")[:6].tolist())
        assert top_cf <= set(got.tolist())
        want = fused_scores(gen[u][got][None], cf[u][got][None], 0.5)[0]
        np.testing.assert_allclose(res.scores[u][: len(got)], want, atol=1e-4)
    assert res.plain_ranks is not None and res.extra["unfused"]["metrics"].keys() == res.metrics.keys()


def dense_brute_force(cfg, assets, model, split):
    """Per user: every item's dense score, each item's vector from its own passage encoded alone
    (excluded items: -inf)."""
    collate = Collator(assets.cache, cfg, assets.gcn_rows, dedupe=False)
    items = []
    with torch.no_grad():
        for i in range(N_ITEMS):
            ids, mask = assets.cache.item_rows(torch.tensor([i]))
            states, smask = model.item_states(ids, mask)
            items.append(model.dense.items(states, smask, torch.tensor([i]))[0])
        items = torch.stack(items)
        out = []
        for s in samples(assets.ds, split, cfg.data.max_his):
            mem, mask = model.memory(collate([s]))
            d = model.dense.scores(model.dense_users(mem, mask), items)[0].numpy().astype(np.float64)
            if cfg.eval.exclude_history:
                d[[i for i in s.seen if i != s.target]] = -np.inf
            out.append(d)
    return np.stack(out)


def test_fusion_with_the_dense_head_and_lightgcn_equals_brute_force(monkeypatch):
    cfg, assets, model = setup(num_users=6, beams=N_ITEMS, dense="both")
    cfg.eval.exclude_history = True
    cfg.eval.fusion.scorer, cfg.eval.fusion.candidates, cfg.eval.fusion.weight = "both", N_ITEMS, 0.6
    collab = fake_collab(monkeypatch)
    res = evaluate_split(model, assets, cfg, "test", progress=False, fused=True)
    gen, cf = brute_force(cfg, assets, model, collab, "test")
    dense = dense_brute_force(cfg, assets, model, "test")
    assert res.extra["fusion"]["weight"] == [0.3, 0.3] and res.extra["fusion"]["scorers"] == ["lightgcn", "dense"]
    want = fused_scores(gen, np.stack([cf, dense], -1), [0.3, 0.3])
    for u in range(len(want)):
        n = int(np.isfinite(want[u]).sum())
        order = np.argsort(-want[u], kind="stable")[:n]
        np.testing.assert_array_equal(res.items[u][:n], order)
        np.testing.assert_allclose(res.scores[u][:n], want[u][order], atol=1e-4)
    # each scorer alone: the target's place in its full ranking, exclusions applied
    targets = res.targets
    for name, scores in (("lightgcn", cf), ("dense", dense)):
        above = (scores > scores[np.arange(len(targets)), targets][:, None]).sum(1)
        np.testing.assert_array_equal(res.alone_ranks[name], above)
        assert res.extra["fusion"]["alone"][name]["metrics"].keys() == res.metrics.keys()


def test_the_dense_scorer_alone_proposes_its_own_top_k(monkeypatch):
    cfg, assets, model = setup(num_users=6, beams=3, dense="text")
    cfg.eval.fusion.scorer, cfg.eval.fusion.candidates, cfg.eval.fusion.weight = "dense", 5, 1.0
    res = evaluate_split(model, assets, cfg, "test", progress=False, fused=True)
    dense = dense_brute_force(cfg, assets, model, "test")
    for u in range(len(dense)):
        got = res.items[u][res.items[u] >= 0]
        assert set(np.argsort(-dense[u], kind="stable")[:5].tolist()) <= set(got.tolist())
        # weight 1: the dense head's order alone
        np.testing.assert_array_equal(got[:5], np.argsort(-dense[u], kind="stable")[:5])


def test_two_scorers_are_tuned_jointly():
    # the second scorer ranks every target first, the first ranks it last
    cand = np.array([[0, 1, 2]] * 5)
    gen = np.array([[-1.0, -2.0, -3.0]] * 5)
    cf = np.stack([np.array([[5.0, 0.1, 0.0]] * 5), np.array([[0.0, 0.1, 5.0]] * 5)], -1)
    w, curve = tune_weight(cand, gen, cf, np.array([2] * 5))
    assert len(curve) == 231 and isinstance(w, list) and w[1] > w[0]
    assert curve[",".join(f"{x:.2f}" for x in w)] == max(curve.values()) > curve["0.00,0.00"]


def test_the_dense_scorer_needs_a_dense_head(monkeypatch):
    cfg, assets, model = setup(num_users=4, beams=4)
    cfg.eval.fusion.scorer = "dense"
    with pytest.raises(FusionError, match="dense head"):
        evaluate_split(model, assets, cfg, "test", progress=False, fused=True)


def test_weight_zero_and_one_are_the_two_scorers_alone():
    gen = np.array([[-1.0, -2.0, -3.0, -np.inf]])
    cf = np.array([[0.1, 0.5, 0.3, 9.0]])
    assert np.argsort(-fused_scores(gen, cf, 0.0))[0][:3].tolist() == [0, 1, 2]
    assert np.argsort(-fused_scores(gen, cf, 1.0))[0][:3].tolist() == [1, 2, 0]
    z = standardise(np.array([[1.0, 3.0, 5.0]]), np.ones((1, 3), dtype=bool))
    np.testing.assert_allclose(z, [[-1.2247449, 0.0, 1.2247449]], atol=1e-6)


def test_tuning_picks_the_weight_that_ranks_validation_targets_best():
    # users whose target the collaborative scorer ranks first and the generative model last
    cand = np.array([[0, 1, 2]] * 5)
    gen = np.array([[-1.0, -2.0, -3.0]] * 5)
    cf = np.array([[0.0, 0.1, 5.0]] * 5)
    w, curve = tune_weight(cand, gen, cf, np.array([2] * 5))
    assert curve["0.00"] < curve[f"{w:.2f}"] == max(curve.values()) and w > 0.3


def test_tuned_weight_comes_from_validation_users_only(monkeypatch):
    import gramc.eval.evaluate as ev

    cfg, assets, model = setup(num_users=8, beams=6)
    cfg.eval.fusion.candidates, cfg.eval.fusion.tune_users = 4, 5
    fake_collab(monkeypatch)
    seen_targets = []
    real = ev.tune_weight

    def spy(cand, gen, cf, targets, *a):
        seen_targets.append(targets.copy())
        return real(cand, gen, cf, targets, *a)

    monkeypatch.setattr(ev, "tune_weight", spy)
    res = evaluate_split(model, assets, cfg, "test", progress=False, fused=True)
    valid = {s.target for s in samples(assets.ds, "valid", cfg.data.max_his)}
    assert len(seen_targets) == 1 and len(seen_targets[0]) == 5 and set(seen_targets[0].tolist()) <= valid
    assert res.extra["fusion"]["tuned"] and res.extra["fusion"]["tune_users"] == 5
    assert res.extra["protocol"]["ranking"].endswith(f"(weight {res.extra['fusion']['weight']:g})")


def test_fusion_settings_and_a_missing_lightgcn_are_named_errors(tmp_path):
    for bad, key in (("eval.fusion.weight=1.5", "eval.fusion.weight"), ("eval.fusion.candidates=0",
                                                                        "eval.fusion.candidates")):
        with pytest.raises(ConfigError, match=key):
            load_config(None, [bad])
    cfg = load_config(None, [f"gcn.out={tmp_path / 'nogcn'}"])
    with pytest.raises(FusionError, match="gramc gcn train"):
        Collaborative.for_run(cfg, type("A", (), {"gcn": None, "ds": None})())
