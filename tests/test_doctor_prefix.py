"""`gramc doctor prefix`: the counterfactual prefix checks of a trained GRAM-C run."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from gramc.cli import main
from gramc.data.splits import samples
from gramc.doctor.prefix import pick_samples, prefix_checks, token_nll, variant
from gramc.ids.tokens import IGNORE_INDEX
from gramc.model.inputs import Collator
from gramc.model.prefix import PrefixNormStats

import eval_fakes
from eval_fakes import make_run


@pytest.fixture(scope="module")
def tiny():
    return eval_fakes.setup(num_users=16, beams=6)


def _batch(tiny, n=6):
    cfg, assets, _ = tiny
    smp = samples(assets.ds, "valid", cfg.data.max_his)[:n]
    return smp, Collator(assets.cache, cfg, gcn_rows=assets.gcn_rows)(smp)


def test_variants_change_only_the_prefix(tiny):
    _, batch = _batch(tiny)
    ids = batch.recent_item_ids
    assert ids.count_nonzero() > 0 and batch.host_counts
    own, none, other = (variant(batch, v) for v in ("own", "none", "other"))
    assert torch.equal(own.recent_item_ids, ids)
    assert none.recent_item_ids.count_nonzero() == 0
    assert torch.equal(other.recent_item_ids[1:], ids[:-1]) and torch.equal(other.recent_item_ids[0], ids[-1])
    for v in (own, none, other):
        assert v.host_counts == () and torch.equal(v.user_input, batch.user_input)
        assert torch.equal(v.labels, batch.labels)
    given = torch.ones_like(ids)
    assert torch.equal(variant(batch, "other", given).recent_item_ids, given)
    with pytest.raises(ValueError, match="own"):
        variant(batch, "shuffled")


def test_own_likelihood_is_the_training_loss(tiny):
    cfg, assets, model = tiny
    smp, batch = _batch(tiny, 10)
    collate = Collator(assets.cache, cfg, gcn_rows=assets.gcn_rows)
    nll = {v: np.nansum(t, axis=1) for v, t in token_nll(model, collate, smp, batch_size=4).items()}
    with torch.no_grad():
        loss, _ = model(batch)
    assert nll["own"].shape == (10,) and nll["own"].sum() == pytest.approx(float(loss), rel=1e-5)
    # the prefix reaches the output of this random model: removing it changes every sample's figure
    assert np.all(np.abs(nll["none"] - nll["own"]) > 0)


def test_pick_samples_is_seeded_and_in_split_order():
    smp = list(range(100))
    a, b = pick_samples(smp, 10, 3), pick_samples(smp, 10, 3)
    assert a == b == sorted(a) and len(set(a)) == 10 and a != pick_samples(smp, 10, 4)
    assert pick_samples(smp, 0, 3) == smp and pick_samples(smp, 500, 3) == smp


class _Fake(torch.nn.Module):
    """Target NLL set by the prefix it is given: `own` (the user's recent items), `none`, `other`."""

    def __init__(self, expected: dict[int, torch.Tensor], own: float, none: float, other: float, scale: float = 0.3):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.expected, self.losses = expected, (own, none, other)
        self.prefix = SimpleNamespace(scale=torch.tensor(scale))

    def token_losses(self, batch):
        rows = []
        for u, ids in zip(batch.users.tolist(), batch.recent_item_ids):
            if ids.count_nonzero() == 0:
                rows.append(self.losses[1])
            else:
                rows.append(self.losses[0] if torch.equal(ids, self.expected[u]) else self.losses[2])
        out = torch.zeros(batch.labels.shape, dtype=torch.float64)
        out[:, 0] = torch.tensor(rows)  # the whole effect on the first token of the ID
        return out

    def prefix_norm_stats(self, batch):
        return PrefixNormStats(prefix_norm=1.0, token_norm=2.0, ratio=0.5, slots=3)


def _fake(tiny, **kw):
    cfg, assets, _ = tiny
    smp = samples(assets.ds, "valid", cfg.data.max_his)
    batch = Collator(assets.cache, cfg, gcn_rows=assets.gcn_rows)(smp)
    expected = {int(u): ids for u, ids in zip(batch.users, batch.recent_item_ids)}
    return _Fake(expected, **kw)


def _levels(checks):
    return {c.name: c.level for c in checks}


def test_a_model_that_reads_the_users_signal_passes(tiny):
    cfg, assets, _ = tiny
    checks = prefix_checks(_fake(tiny, own=1.0, none=2.0, other=1.8), assets, cfg, users=0, batch_size=5)
    lv = _levels(checks)
    assert lv == {"prefix.scale": "pass", "prefix.norm": "pass", "prefix.reliance": "pass",
                  "prefix.specificity": "pass"}
    rel = next(c for c in checks if c.name == "prefix.reliance").value
    spec = next(c for c in checks if c.name == "prefix.specificity").value
    assert rel["mean"] == pytest.approx(1.0) and rel["samples"] == 16 and rel["own_nll"] == pytest.approx(1.0)
    assert rel["by_token"][0] == pytest.approx(1.0) and all(d == 0 for d in rel["by_token"][1:])
    labels = Collator(assets.cache, cfg, gcn_rows=assets.gcn_rows)(samples(assets.ds, "valid", cfg.data.max_his)).labels
    assert len(rel["by_token"]) == int((labels != IGNORE_INDEX).sum(1).max())
    # every sample, the one alone in the last batch too, reads another sample's prefix
    assert spec["mean"] == pytest.approx(0.8)


def test_a_prefix_that_helps_whoever_it_belongs_to_is_capacity(tiny):
    cfg, assets, _ = tiny
    checks = prefix_checks(_fake(tiny, own=1.0, none=2.0, other=1.0), assets, cfg, users=0, batch_size=5)
    lv = _levels(checks)
    assert lv["prefix.reliance"] == "pass" and lv["prefix.specificity"] == "warn"
    assert "does not depend on the user" in next(c for c in checks if c.name == "prefix.specificity").message


def test_an_ignored_or_switched_off_prefix_warns(tiny):
    cfg, assets, _ = tiny
    checks = prefix_checks(_fake(tiny, own=1.0, none=1.0, other=1.0, scale=0.01), assets, cfg, users=0)
    lv = _levels(checks)
    assert lv["prefix.scale"] == "warn" and lv["prefix.reliance"] == "warn" and lv["prefix.specificity"] == "warn"
    assert "ignores its prefix" in next(c for c in checks if c.name == "prefix.reliance").message
    hurts = prefix_checks(_fake(tiny, own=2.0, none=1.0, other=1.0), assets, cfg, users=0)
    assert "higher" in next(c for c in hurts if c.name == "prefix.reliance").message


def test_ranking_check_on_a_real_model(tiny):
    cfg, assets, model = tiny
    checks = prefix_checks(model, assets, cfg, users=12, rank_users=8, beams=6)
    rank = next(c for c in checks if c.name == "prefix.ranking")
    assert rank.value["users"] == 8 and rank.value["beams"] == 6
    own, none = rank.value["ndcg@6"]["own"], rank.value["ndcg@6"]["none"]
    assert 0 <= own <= 1 and 0 <= none <= 1
    assert rank.value["ndcg@6"]["own_minus_none"][0] == pytest.approx(own - none, abs=1e-3)


def test_a_run_without_prefix_fails_clearly():
    cfg, assets, model = eval_fakes.setup(enabled=False)
    (c,) = prefix_checks(model, assets, cfg)
    assert c.name == "prefix.enabled" and c.level == "fail" and "nothing to diagnose" in c.message


def test_command_on_a_run_folder(tmp_path, capsys):
    run = tmp_path / "run"
    make_run(run)
    rc = main(["doctor", "prefix", "--run", str(run), "--users", "12", "--rank-users", "4", "--beams", "6",
               "--json", "--quiet"])
    rep = json.loads(capsys.readouterr().out)
    assert rc == 0 and rep["ok"]
    assert {c["name"] for c in rep["checks"]} == {"prefix.scale", "prefix.norm", "prefix.reliance",
                                                 "prefix.specificity", "prefix.ranking"}
    assert next(c for c in rep["checks"] if c["name"] == "prefix.reliance")["value"]["samples"] == 12
    assert main(["doctor", "prefix", "--run", str(tmp_path / "nope")]) == 2
    assert "no config.yaml" in capsys.readouterr().err
