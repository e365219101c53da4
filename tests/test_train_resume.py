"""Resume equivalence: an interrupted and resumed run ends with the same parameters as an
uninterrupted one (dropout on, RNG restored), and the run folder has the documented layout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from gramc.train.batching import Batcher
from gramc.checkpoint import CheckpointError
from gramc.train.trainer import TrainParts, fit
from train_toy import build_model, collate, toy_config, toy_dataset, toy_samples


USERS = 12  # small: every test here runs whole trainings


def parts(seed: int) -> TrainParts:
    ds = toy_dataset(USERS)
    train, valid = toy_samples(ds)
    return TrainParts(build_model(ds, seed, dropout=0.3), collate, train, valid)


def weights(run: Path, which: str = "last") -> dict[str, torch.Tensor]:
    return load_file(str(run / "checkpoints" / which / "model.safetensors"))


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("full") / "run"
    cfg = toy_config(epochs=2, save_every=0)
    res = fit(parts(cfg.run.seed), cfg, run)
    assert not res.interrupted and res.state.done
    return run


def test_run_folder_layout(uninterrupted):
    for name in ("config.yaml", "run_info.json", "log.jsonl", "audit.json", "metrics.json"):
        assert (uninterrupted / name).is_file(), name
    for ck in ("last", "best"):
        for name in ("model.safetensors", "optimizer.pt", "rng.pt", "state.json"):
            assert (uninterrupted / "checkpoints" / ck / name).is_file()
    records = [json.loads(x) for x in (uninterrupted / "log.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in records if r["kind"] == "step"]
    assert steps == list(range(1, len(steps) + 1))
    assert [r["epoch"] for r in records if r["kind"] == "epoch"] == [0, 1]
    assert len([r for r in records if r["kind"] == "valid"]) == 2
    m = json.loads((uninterrupted / "metrics.json").read_text())
    assert m["checkpoint"] == "best" and m["selection"]["metric"] == "valid_loss"
    valid = [r["valid_loss"] for r in records if r["kind"] == "valid"]
    assert m["selection"]["value"] == pytest.approx(min(valid))


def epoch_steps(cfg) -> int:
    train, _ = toy_samples(toy_dataset(USERS))
    return Batcher.from_config(cfg, train).plan(0).num_steps


@pytest.mark.parametrize("where", ["mid_epoch", "epoch_end"])
def test_stop_and_resume_equals_uninterrupted(uninterrupted, tmp_path, where):
    cfg = toy_config(epochs=2, save_every=0)
    stop = epoch_steps(cfg) - (2 if where == "mid_epoch" else 0)
    run = tmp_path / "run"
    res = fit(parts(cfg.run.seed), cfg, run, stop_after=stop)
    assert res.interrupted and res.state.step == stop
    res = fit(parts(cfg.run.seed + 99), cfg, run, resume=True)  # a different init is overwritten
    assert res.state.done
    assert_same(weights(run), weights(uninterrupted))
    assert_same(weights(run, "best"), weights(uninterrupted, "best"))
    a = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    b = [json.loads(x) for x in (uninterrupted / "log.jsonl").read_text().splitlines()]
    assert [(r["kind"], r["step"]) for r in a] == [(r["kind"], r["step"]) for r in b]
    assert [r["loss"] for r in a if r["kind"] == "step"] == [r["loss"] for r in b if r["kind"] == "step"]


def test_crash_then_resume_from_periodic_checkpoint(uninterrupted, tmp_path):
    cfg = toy_config(epochs=2, save_every=2)
    run = tmp_path / "run"
    calls = {"n": 0}

    def crash(_grads):
        calls["n"] += 1
        if calls["n"] == 5:
            raise RuntimeError("simulated crash during step 5")

    with pytest.raises(RuntimeError, match="simulated crash"):
        fit(parts(cfg.run.seed), cfg, run, after_sync=crash)
    state = json.loads((run / "checkpoints" / "last" / "state.json").read_text())
    assert state["step"] == 4
    fit(parts(cfg.run.seed), cfg, run, resume=True)
    assert_same(weights(run), weights(uninterrupted))


def test_without_restored_rng_the_run_differs(uninterrupted, tmp_path):
    """Guard that the equality above is not trivial: dropout really draws from the RNG."""
    cfg = toy_config(epochs=2, save_every=0)
    cfg.run.seed += 1  # different shuffles and dropout masks, same init
    ds = toy_dataset(USERS)
    train, valid = toy_samples(ds)
    fit(TrainParts(build_model(ds, cfg.run.seed - 1, dropout=0.3), collate, train, valid), cfg, tmp_path / "r")
    a, b = weights(tmp_path / "r"), weights(uninterrupted)
    assert any(not torch.equal(a[k], b[k]) for k in a)


def test_resume_without_checkpoint_is_a_clear_error(tmp_path):
    cfg = toy_config()
    with pytest.raises(CheckpointError, match="does not exist"):
        fit(parts(cfg.run.seed), cfg, tmp_path / "nothing", resume=True)


def test_cli_resume_errors_are_clear(tmp_path, capsys):
    from gramc.cli import main

    assert main(["train", "--resume", str(tmp_path / "missing")]) == 2
    assert "cannot resume" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path), "--config", "x.yaml"]) == 2
    assert "drop --config" in capsys.readouterr().err


def test_a_state_written_with_the_removed_extra_field_still_loads():
    from dataclasses import asdict

    from gramc.checkpoint import TrainState

    old = {"epoch": 2, "step": 7, "step_in_epoch": 1, "world": 1, "best_metric": "ndcg@10", "best_value": 0.5,
           "best_step": 6, "best_epoch": 1, "done": False, "extra": {}}  # a state.json from before the change
    state = TrainState.from_dict(old)
    assert state.step == 7 and state.best_value == 0.5 and "extra" not in asdict(state)
    assert TrainState.from_dict(asdict(state)) == state
