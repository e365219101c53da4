"""`gramc doctor search`: are a trained run's misses the beam search's or the model's?"""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
from gramc.cli import main
from gramc.data.splits import samples
from gramc.doctor.search import Outcome, outcomes, search_checks

import eval_fakes
from eval_fakes import N_ITEMS, make_run


@pytest.fixture(scope="module")
def tiny():
    return eval_fakes.setup(num_users=16, beams=2)


def _by(checks, name):
    return next(c for c in checks if c.name == name)


def test_classes_follow_the_scores():
    out = Outcome(target_score=np.array([-1.0, -2.0, -2.0, -1.5]), kth_score=np.array([-2.0, -1.0, -2.5, -np.inf]),
                  rank=np.array([0, -1, 5, -1]), found_score=np.array([-1.0, np.nan, -2.0, np.nan]))
    # hit; below the k-th: the model's; not in the top 2 but above its 2nd: the search's; fewer than k returned
    assert out.classes(2).tolist() == [0, 2, 1, 1]


def test_a_model_error_is_one_no_search_can_fix(tiny):
    cfg, assets, model = tiny
    smp = samples(assets.ds, "valid", cfg.data.max_his)
    narrow = outcomes(model, assets, cfg, smp, k=2)
    wide_cfg = copy.deepcopy(cfg)
    wide_cfg.eval.beams = N_ITEMS  # full width: the search is exhaustive
    wide = outcomes(model, assets, wide_cfg, smp, k=2)
    assert (wide.rank >= 0).all() and (wide.classes(2) != 1).all()  # an exhaustive search makes no search error
    np.testing.assert_allclose(wide.found_score, wide.target_score, atol=1e-4)  # the search's score is the loss's
    cls = narrow.classes(2)
    assert (wide.rank[cls == 2] >= 2).all()  # "model error": the exact ranking has 2 items above the target
    assert (cls == 2).any() and np.array_equal(narrow.target_score, wide.target_score)


def test_checks_on_a_real_model_and_on_a_search_that_scores_differently(tiny):
    cfg, assets, model = tiny
    checks = search_checks(model, assets, cfg, users=0, k=2)
    cons, err = _by(checks, "search.consistency"), _by(checks, "search.errors")
    assert cons.level == "pass" and cons.value["max_abs_diff"] < 1e-3
    assert err.value["samples"] == 16 and sum(err.value[c] for c in ("hit", "search_error", "model_error")) \
        == pytest.approx(1.0, abs=1e-3)
    assert sum(g["users"] for g in err.value["by_popularity"]) == 16
    # a random model over 40 items misses most targets, each scoring below the search's 2nd item
    assert err.value["model_error"] > 0.5 and err.value["model_error_gap"] > 0

    class Off(type(model)):  # the loss path scores every target 0.5 nats worse than the search does
        def token_losses(self, batch, items=None):
            loss = super().token_losses(batch, items).clone()
            loss[:, 0] += 0.5  # the first ID token is every target's
            return loss

    off = copy.copy(model)
    off.__class__ = Off
    bad = _by(search_checks(off, assets, cfg, users=0, k=2), "search.consistency")
    assert bad.value["found"] > 0 and bad.level == "fail" and "disagree" in bad.message
    assert bad.value["max_abs_diff"] == pytest.approx(0.5, abs=1e-4)
    (too_big,) = search_checks(model, assets, cfg, k=3)
    assert too_big.level == "fail" and "eval.beams=3" in too_big.message


def test_command_on_a_run_folder(tmp_path, capsys):
    run = tmp_path / "run"
    make_run(run)
    rc = main(["doctor", "search", "--run", str(run), "--users", "12", "--k", "5", "--json", "--quiet"])
    rep = json.loads(capsys.readouterr().out)
    assert rc == 0 and {c["name"] for c in rep["checks"]} == {"search.consistency", "search.errors"}
    err = next(c for c in rep["checks"] if c["name"] == "search.errors")
    assert err["value"]["samples"] == 12 and err["value"]["k"] == 5 and err["value"]["beams"] == 8
    assert main(["doctor", "search", "--run", str(tmp_path / "nope")]) == 2


def _fuse_with_an_oracle(cfg, assets, monkeypatch, weight: float) -> None:
    """Fusion on, at `weight`, with a collaborative scorer that knows every validation target."""
    import torch

    from gramc.eval.fusion import Collaborative

    cfg.eval.fusion.enabled, cfg.eval.fusion.weight, cfg.eval.fusion.candidates = True, weight, 3
    targets = {s.history: s.target for s in samples(assets.ds, "valid", cfg.data.max_his)}
    oracle = Collaborative(torch.eye(N_ITEMS))
    monkeypatch.setattr(oracle, "scores", lambda chunk, *memory: torch.stack(
        [torch.nn.functional.one_hot(torch.tensor(targets[s.history]), N_ITEMS).float() for s in chunk]))
    monkeypatch.setattr(Collaborative, "for_run", classmethod(lambda cls, c, a: oracle))


def test_fusion_check_says_whether_the_target_was_a_candidate_and_whether_fusion_lifted_it(tiny, monkeypatch):
    cfg, assets, model = tiny
    cfg = copy.deepcopy(cfg)
    _fuse_with_an_oracle(cfg, assets, monkeypatch, 1.0)  # weight 1: fusion lifts every target
    checks = search_checks(model, assets, cfg, users=0, k=2)
    fus = _by(checks, "search.fusion")
    v = fus.value
    assert v["target_is_candidate"] == 1.0 and v["fused_hit"] == 1.0
    assert v["lifted"] == pytest.approx(1.0 - v["beam_hit"], abs=1e-3) and v["pushed_out"] == 0.0
    assert sum(g["users"] for g in v["by_popularity"]) == 16 and "lifted" in fus.message
    assert fus.level == "pass" and v["fused_below_scorer"] == []  # fused hits all the scorer hits
    alone = _by(checks, "search.scorers").value  # the oracle alone ranks every target first
    assert alone["lightgcn"] == {"recall@2": 1.0, "recall@3": 1.0}
    assert all(g["lightgcn"]["recall@2"] == 1.0 for g in alone["by_popularity"] if g["users"])


def test_a_dense_heads_reach_is_reported_without_fusion():
    cfg, assets, model = eval_fakes.setup(num_users=16, beams=2, dense="text")
    cfg.eval.fusion.candidates = 5
    alone = _by(search_checks(model, assets, cfg, users=0, k=2), "search.scorers")
    v = alone.value
    assert set(v) >= {"dense", "by_popularity"} and set(v["dense"]) == {"recall@2", "recall@5"}
    assert 0 <= v["dense"]["recall@2"] <= v["dense"]["recall@5"] <= 1
    assert sum(g["users"] for g in v["by_popularity"]) == 16 and "rarest third" in alone.message
    plain_cfg, plain_assets, plain = eval_fakes.setup(num_users=16, beams=2)
    assert "search.scorers" not in {c.name for c in search_checks(plain, plain_assets, plain_cfg, users=0, k=2)}


def test_fused_below_scorers_flags_a_tercile_where_a_scorer_alone_clearly_hits_more():
    from gramc.doctor.search import fused_below_scorers

    counts = np.repeat([1, 4, 9], 40)  # three terciles of 40 samples
    fused = np.where(np.arange(120) % 2 == 0, 0, 20)  # the fused ranking hits half of every tercile
    alone = np.stack([fused.copy(), fused.copy()], 1)  # scorers [a, b] rank as fused does...
    alone[:40, 0] = 0  # ...but a alone hits every rare target: 20 discordant samples, all for a
    alone[40:80:2, 1] = 20  # b alone misses half of fused's middle hits: b is worse, not flagged
    # b hits 6 popular targets fused misses: p = 0.5 ** 6 = 0.016 < 0.05, yet above 0.05 / 6 (3 terciles
    # x 2 scorers tested): not flagged after the Bonferroni correction
    alone[81:92:2, 1] = 0
    got = fused_below_scorers(alone, fused, ("a", "b"), 10, counts)
    assert [(g["train_count"], g["scorer"]) for g in got] == [([1, 1], "a")]
    assert got[0]["scorer_hit@10"] == 1.0 and got[0]["fused_hit@10"] == 0.5
    assert (got[0]["only_scorer"], got[0]["only_fused"]) == (20, 0) and got[0]["p"] < 1e-5


def test_fusion_check_warns_when_a_scorer_alone_beats_the_fused_ranking(monkeypatch):
    cfg, assets, model = eval_fakes.setup(num_users=48, beams=2)  # terciles of 14-18 samples
    # weight 0: the fused ranking is the beam's, while the oracle scorer alone knows every target
    _fuse_with_an_oracle(cfg, assets, monkeypatch, 0.0)
    fus = _by(search_checks(model, assets, cfg, users=0, k=2), "search.fusion")
    below = fus.value["fused_below_scorer"]
    assert fus.level == "warn" and len(below) == len(fus.value["by_popularity"]) == 3
    assert all(b["scorer"] == "lightgcn" for b in below)
    assert all(b["scorer_hit@2"] == 1.0 and b["only_fused"] == 0 for b in below)
    assert "lightgcn alone 100.0%" in fus.message and "eval.fusion.weight" in fus.message
