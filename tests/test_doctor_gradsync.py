"""grad-sync: 1 process vs 2 torchrun processes (gloo, CPU) through gramc's own Trainer.

One torchrun launch runs the healthy trainer and both of the trainer's test-only faults:
"double_reduce" (an extra SUM all-reduce: ratio = world size) and "module_call" (DDP bypassed:
ranks keep their own gradients). Each must fail exactly the checks that describe it; the healthy
trainer passes all, with the gradient ratio within 1e-6 of 1. The check logic itself is also
tested on hand-made worker summaries (no processes).
"""

from __future__ import annotations

import pytest

from gramc.checks import Report
from gramc.doctor.gradsync import (DEFAULT_STEPS, GRAD_TOL, grad_sync_checks, make_bundle, plan_steps,
                                   run_grad_sync_modes, sync_config)
from gramc.model.assets import Assets
from doctor_setup import tiny_config


@pytest.fixture(scope="module")
def modes(tmp_path_factory):
    cfg = tiny_config(tmp_path_factory.mktemp("gs") / "run")
    assets = Assets.from_config(cfg, progress=False)
    return run_grad_sync_modes(cfg, [None, "double_reduce", "module_call"], nproc=2, quiet=True, assets=assets)


def failing(checks):
    return sorted(c.name for c in checks if c.level == "fail")


@pytest.mark.slow
def test_healthy_trainer_is_synchronised_exactly_once(modes):
    rep = Report(modes["none"])
    assert rep.ok, rep.table()
    ratio = rep.by_name("grad_sync.ratio").value
    assert ratio["world"] == 2
    assert ratio["max_abs_ratio_minus_1"] <= GRAD_TOL and ratio["rel_err"] <= GRAD_TOL
    assert rep.by_name("grad_sync.no_grad_params").value["count"] == 0


@pytest.mark.slow
def test_double_reduce_is_reported_as_ratio_world_size(modes):
    checks = modes["double_reduce"]
    assert failing(checks) == ["grad_sync.ratio"], Report(checks).table()
    c = Report(checks).by_name("grad_sync.ratio")
    assert abs(c.value["ratio"][0][0] - 2.0) < 1e-6
    assert "reduced twice" in c.message
    # AdamW hides the doubling: the parameters barely move differently (the seed report's misdiagnosis)
    assert Report(checks).by_name("grad_sync.params_vs_single").level == "pass"


@pytest.mark.slow
def test_module_call_is_reported_as_unsynchronised_ranks(modes):
    checks = modes["module_call"]
    assert failing(checks) == ["grad_sync.params_across_ranks", "grad_sync.params_vs_single",
                               "grad_sync.ranks_agree", "grad_sync.ratio"], Report(checks).table()
    rep = Report(checks)
    assert "not synchronised" in rep.by_name("grad_sync.ratio").message
    assert ".module" in rep.by_name("grad_sync.ranks_agree").message


def _summary(ratios, spread=0.0, pspread=0.0, pdiff=0.0, no_grad=()):
    ranks = [{"rank": r, "no_grad": list(no_grad), "steps": [
        {"step": 0, "ratio": x, "rel_err": abs(x - 1), "param_ratio_min": x, "param_ratio_max": x,
         "worst_param": "w", "grad_spread": spread, "param_spread": pspread, "param_vs_single": pdiff}]}
        for r, x in enumerate(ratios)]
    return {"world": len(ratios), "backend": "gloo", "device": "cpu", "steps": 1, "per_rank": 2,
            "dtype": "float64", "fault": None, "ranks": ranks}


def test_check_logic_on_made_up_summaries():
    assert Report(grad_sync_checks(_summary([1.0, 1.0]))).ok
    three = grad_sync_checks(_summary([3.0, 3.0, 3.0]))
    assert failing(three) == ["grad_sync.ratio"] and "reduced twice" in three[1].message
    skew = grad_sync_checks(_summary([0.8, 1.2], spread=0.5, pspread=1e-3, pdiff=0.3))
    assert "not synchronised" in Report(skew).by_name("grad_sync.ratio").message
    half = grad_sync_checks(_summary([0.5, 0.5]))
    assert failing(half) == ["grad_sync.ratio"] and "normalised differently" in half[1].message
    dead = grad_sync_checks(_summary([1.0, 1.0], no_grad=["t5.unused"]))
    assert failing(dead) == ["grad_sync.no_grad_params"] and "t5.unused" in dead[-1].message


def test_plan_and_config_helpers():
    plan = plan_steps(list(range(100)), steps=2, world=2, per_rank=3)
    flat = [x for step in plan for rank in step for x in rank]
    assert len(flat) == 12 and len(set(flat)) == 12  # disjoint micro-batches
    with pytest.raises(ValueError, match="needs 12 training samples"):
        plan_steps(list(range(5)), 2, 2, 3)
    cfg = sync_config(tiny_config("/tmp/unused", "model.dropout=0.3", "train.bf16=true"))
    assert cfg.model.dropout == 0 and cfg.model.prefix.prefix_dropout == 0 and not cfg.train.bf16


@pytest.mark.slow
def test_the_dense_head_and_indexing_samples_are_synchronised_exactly_once(tmp_path):
    """Two processes equal one with the dense head on (its loss reads every rank's own item rows and
    negatives) and item-indexing samples among the training samples' rows."""
    cfg = tiny_config(tmp_path / "run", "model.dense.enabled=true", "model.dense.item=both",
                      "model.dense.negatives=3", "train.indexing.enabled=true", "train.indexing.ratio=1.0")
    assets = Assets.from_config(cfg, progress=False)
    plan = make_bundle(cfg, assets, 2, DEFAULT_STEPS)["plan"]
    assert any(s.indexing for step in plan for rank in step for s in rank)
    rep = Report(run_grad_sync_modes(cfg, [None], nproc=2, quiet=True, assets=assets)["none"])
    assert rep.ok, rep.table()
    ratio = rep.by_name("grad_sync.ratio").value
    assert ratio["max_abs_ratio_minus_1"] <= GRAD_TOL and ratio["rel_err"] <= GRAD_TOL
    assert rep.by_name("grad_sync.no_grad_params").value["count"] == 0
