"""Recommender.from_run(...).recommend(...) and `gramc recommend`."""

from __future__ import annotations

import json

import pytest
import torch

from gramc.cli import main
from gramc.eval.beam import beam_search
from gramc.ids.trie import trie_for
from gramc.model.inputs import Collator
from gramc.data.splits import Sample
from gramc.serve.recommend import Recommender, UnknownItemsError

from eval_fakes import make_run


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    d = tmp_path_factory.mktemp("serverun") / "run"
    cfg, assets, model = make_run(d)
    return d, cfg, assets, model


def test_recommend_matches_the_beam_search_of_the_model(run):
    d, cfg, assets, model = run
    rec = Recommender.from_run(d)
    ids = assets.ds.item_ids
    history = [ids[3], ids[7], ids[1]]
    recs = rec.recommend(history, k=5)
    assert len(recs) == 5
    assert [r.score for r in recs] == sorted((r.score for r in recs), reverse=True)
    # reference: the same model and search on the same history
    batch = Collator(assets.cache, cfg, assets.gcn_rows)([Sample(0, (3, 7, 1), 1)])
    with torch.no_grad():
        mem, mask = model.eval().memory(batch)
        ref = beam_search(model.t5, mem, mask, trie_for(assets.item_ids), beams=cfg.eval.beams)
    assert [r.item_id for r in recs] == [ids[i] for i in ref.items[0, :5].tolist()]
    assert [r.score for r in recs] == pytest.approx(ref.scores[0, :5].tolist(), abs=1e-5)
    assert all(r.title == assets.ds.item_fields[ids.index(r.item_id)].get("title", "") for r in recs)
    # k larger than eval.beams widens the beam
    assert len(rec.recommend(history, k=12)) == 12


def test_unknown_items_error_or_skip(run):
    d, cfg, assets, _ = run
    ids = assets.ds.item_ids
    rec = Recommender.from_run(d)
    with pytest.raises(UnknownItemsError, match="NOPE1, NOPE2"):
        rec.recommend([ids[0], "NOPE1", "NOPE2"], k=3)
    skip = Recommender.from_run(d, overrides=["eval.unknown_history=skip"])
    with pytest.warns(UserWarning, match="NOPE1"):
        got = skip.recommend([ids[0], "NOPE1", ids[2]], k=3)
    assert [r.item_id for r in got] == [r.item_id for r in skip.recommend([ids[0], ids[2]], k=3)]
    with pytest.raises(UnknownItemsError, match="no known items"), pytest.warns(UserWarning):
        skip.recommend(["NOPE1"], k=3)


def test_recommend_command(run, capsys):
    d, cfg, assets, _ = run
    ids = assets.ds.item_ids
    assert main(["recommend", "--run", str(d), "--history", f"{ids[3]},{ids[7]}", "--k", "4", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert len(got) == 4 and set(got[0]) == {"item_id", "score", "title"}
    assert main(["recommend", "--run", str(d), "--history", f"{ids[3]},BAD9"]) == 2
    assert "BAD9" in capsys.readouterr().err


@pytest.mark.parametrize("exclude", [False, True])
def test_recommend_and_evaluate_give_the_same_lists_for_the_same_user(run, exclude):
    import copy

    from gramc.data.splits import samples
    from gramc.eval.evaluate import evaluate_split

    d, cfg, assets, _ = run
    over = [f"eval.exclude_history={str(exclude).lower()}"]
    rec = Recommender.from_run(d, overrides=over)
    ecfg = copy.deepcopy(rec.cfg)
    res = evaluate_split(rec.model, rec.assets, ecfg, "test", max_users=12, progress=False)
    test = samples(rec.assets.ds, "test", ecfg.data.max_his)[:12]
    ids = rec.assets.ds.item_ids
    compared = 0
    for s, items, scores in zip(test, res.items, res.scores):
        if exclude and s.target in s.seen:
            continue  # evaluation spares a repeated target, a recommendation request has none to spare
        # the whole history: the model reads its last data.max_his items, exclusion removes every one
        got = rec.recommend([ids[i] for i in s.seen], k=ecfg.eval.beams)
        assert [r.item_id for r in got] == [ids[i] for i in items if i >= 0]
        assert [r.score for r in got] == pytest.approx([float(x) for x in scores if x > float("-inf")], abs=1e-4)
        if exclude:
            assert not {ids[i] for i in s.seen} & {r.item_id for r in got}
        compared += 1
    assert compared >= 8


def test_fused_recommend_gives_the_fused_lists_of_evaluate(run, monkeypatch):
    import copy

    from gramc.data.splits import samples
    from gramc.eval.evaluate import evaluate_split
    from gramc.eval.fusion import Collaborative

    d, cfg, assets, _ = run
    table = torch.randn(assets.ds.num_items, 8, generator=torch.Generator().manual_seed(3))
    monkeypatch.setattr(Collaborative, "for_run", classmethod(lambda cls, c, a: Collaborative(table)))
    rec = Recommender.from_run(d, overrides=["eval.fusion.enabled=true", "eval.fusion.weight=0.5",
                                             "eval.exclude_history=true", "eval.fusion.candidates=7"])
    ecfg = copy.deepcopy(rec.cfg)
    res = evaluate_split(rec.model, rec.assets, ecfg, "test", max_users=10, progress=False, fused=True)
    ids = rec.assets.ds.item_ids
    compared = 0
    for s, items, scores in zip(samples(rec.assets.ds, "test", ecfg.data.max_his)[:10], res.items, res.scores):
        if s.target in s.seen:
            continue
        k = ecfg.eval.beams  # the search's width; the fused list holds up to 7 more candidates
        got = rec.recommend([ids[i] for i in s.seen], k=k)
        assert [r.item_id for r in got] == [ids[i] for i in items if i >= 0][:k]
        assert [r.score for r in got] == pytest.approx([float(x) for x in scores if x > float("-inf")][:k], abs=1e-4)
        compared += 1
    assert compared >= 6 and rec.fusion["weight"] == 0.5


@pytest.fixture(scope="module")
def dense_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("serverun_dense") / "run"
    make_run(d, "model.dense.enabled=true", "model.dense.item=both")
    return d


def test_recommend_with_the_dense_scorer_gives_the_fused_lists_of_evaluate(dense_run):
    """The dense head and LightGCN fold-in fused: `recommend` encodes every item once at load, as
    `evaluate` does per call, and returns the same lists."""
    import copy

    from gramc.data.splits import samples
    from gramc.eval.evaluate import evaluate_split

    rec = Recommender.from_run(dense_run, overrides=["eval.fusion.enabled=true", "eval.fusion.scorer=both",
                                                     "eval.fusion.weight=0.6", "eval.exclude_history=true",
                                                     "eval.fusion.candidates=5"])
    assert rec.items is not None and [s.name for s in rec.scorers] == ["lightgcn", "dense"]
    ecfg = copy.deepcopy(rec.cfg)
    res = evaluate_split(rec.model, rec.assets, ecfg, "test", max_users=8, progress=False, fused=True)
    ids = rec.assets.ds.item_ids
    compared = 0
    for s, items, scores in zip(samples(rec.assets.ds, "test", ecfg.data.max_his)[:8], res.items, res.scores):
        if s.target in s.seen:
            continue
        got = rec.recommend([ids[i] for i in s.seen], k=ecfg.eval.beams)
        assert [r.item_id for r in got] == [ids[i] for i in items if i >= 0][: ecfg.eval.beams]
        assert [r.score for r in got] == pytest.approx([float(x) for x in scores if x > float("-inf")][: ecfg.eval.beams],
                                                       abs=1e-4)
        compared += 1
    assert compared >= 5 and rec.fusion["weight"] == [0.3, 0.3]
    assert set(res.alone_ranks) == {"lightgcn", "dense"}
