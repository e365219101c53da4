"""The training loop ready for a GPU, checked on CPU: DataLoader workers change nothing, the
validation-loss subset is seeded, bf16 'auto' resolves per device, and the final evaluation
follows train.final_eval / train.final_eval_users (with its step-0 estimate)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from gramc.config import ConfigError, load_config
from gramc.ids.tokens import IGNORE_INDEX
from gramc.train.loader import count_target_tokens, host_loader
from gramc.train.precision import CpuBf16, arm_bf16, resolve_precision
from gramc.train.trainer import Trainer, TrainParts, fit
from gramc.train.validation import valid_loss_subset
from gramc.train.batching import Batcher
from train_toy import build_model, collate, toy_config, toy_dataset, toy_samples


def toy_parts(seed: int, evaluate=None) -> TrainParts:
    ds = toy_dataset(12)
    train, valid = toy_samples(ds)
    return TrainParts(build_model(ds, seed, dropout=0.3), collate, train, valid, evaluate=evaluate)


def plan_steps(cfg, train):
    plan = Batcher.from_config(cfg, train).plan(0)
    return [plan.step(i) for i in range(plan.num_steps)]


def test_worker_collation_equals_in_process():
    cfg = toy_config()
    train, _ = toy_samples(toy_dataset(12))
    groups = plan_steps(cfg, train)
    cpu = torch.device("cpu")
    inproc = list(host_loader(groups, collate, count_target_tokens, 0, cpu, seed=1))
    workers = list(host_loader(groups, collate, count_target_tokens, 2, cpu, seed=1))
    assert len(inproc) == len(workers) == len(groups)
    for g, a, b in zip(groups, inproc, workers):
        direct = [collate(mb) for mb in g]
        assert a.tokens == b.tokens == [int((d.labels != IGNORE_INDEX).sum()) for d in direct]
        assert a.samples == b.samples == [len(mb) for mb in g]
        for x, y, d in zip(a.batches, b.batches, direct):
            assert torch.equal(x.history, y.history) and torch.equal(x.history, d.history)
            assert torch.equal(x.labels, y.labels) and torch.equal(x.labels, d.labels)


def test_the_loader_leaves_the_global_rng_alone():
    """Dropout draws from the global torch RNG: a loader that drew its worker seeds from it would
    change every run against the in-process collation it replaced."""
    cfg = toy_config()
    groups = plan_steps(cfg, toy_samples(toy_dataset(12))[0])
    for workers in (0, 2):
        before = torch.get_rng_state()
        steps = list(host_loader(groups, collate, count_target_tokens, workers, torch.device("cpu"), 1))
        assert len(steps) == len(groups)
        assert torch.equal(before, torch.get_rng_state())


def _one_step(workers: int):
    cfg = toy_config(num_workers=workers)
    ds = toy_dataset(12)
    train, _ = toy_samples(ds)
    torch.manual_seed(5)
    trainer = Trainer(build_model(ds, 3, dropout=0.3), cfg.train, 10)
    host = next(iter(host_loader(plan_steps(cfg, train), collate, count_target_tokens, workers,
                                 torch.device("cpu"), seed=cfg.run.seed)))
    stats = trainer.train_step(host.to(torch.device("cpu")), host.tokens)
    return stats, {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}


def test_a_training_step_with_two_workers_equals_one_without():
    s0, w0 = _one_step(0)
    s2, w2 = _one_step(2)
    assert s0.loss == s2.loss and s0.tokens == s2.tokens and s0.grad_norm == s2.grad_norm
    assert all(torch.equal(w0[k], w2[k]) for k in w0)
    # and the host token count agrees with the device count a caller without one gets
    cfg = toy_config()
    ds = toy_dataset(12)
    trainer = Trainer(build_model(ds, 3), cfg.train, 10)
    mbs = [collate(mb) for mb in plan_steps(cfg, toy_samples(ds)[0])[0]]
    assert trainer.train_step(mbs).tokens == s0.tokens


def test_fit_with_workers_equals_fit_without(tmp_path):
    runs = {}
    for w in (0, 2):
        cfg = toy_config(epochs=2, num_workers=w)
        fit(toy_parts(cfg.run.seed), cfg, tmp_path / f"w{w}")
        runs[w] = load_file(str(tmp_path / f"w{w}" / "checkpoints" / "last" / "model.safetensors"))
    assert all(torch.equal(runs[0][k], runs[2][k]) for k in runs[0])


def test_valid_loss_subset_is_seeded_and_capped():
    _, valid = toy_samples(toy_dataset(40))
    a, b = valid_loss_subset(valid, 7, seed=3), valid_loss_subset(valid, 7, seed=3)
    assert len(a) == 7 and a == b
    assert valid_loss_subset(valid, 7, seed=4) != a
    positions = [valid.index(s) for s in a]
    assert positions == sorted(positions)  # split order kept
    assert valid_loss_subset(valid, 0, seed=3) == list(valid)
    assert valid_loss_subset(valid, 10_000, seed=3) == list(valid)


def test_bf16_auto_follows_the_cpu_and_config_values_are_strict():
    cpu = torch.device("cpu")
    plain, avx, amx, arm = (CpuBf16(False, False, False), CpuBf16(False, True, False), CpuBf16(True, True, False),
                            CpuBf16(False, False, True))
    assert not resolve_precision("auto", cpu, plain).bf16
    assert all(resolve_precision("auto", cpu, c).bf16 for c in (avx, amx, arm))
    assert resolve_precision(True, cpu, plain).bf16 and not resolve_precision(False, cpu, amx).bf16
    rec = resolve_precision("auto", cpu, avx).to_json()
    assert rec["bf16"] and rec["cpu_bf16"] == {"amx_tile": False, "avx512_bf16": True, "arm_bf16": False}
    assert "avx512_bf16" in rec["reason"] and "no native bf16" in resolve_precision("auto", cpu, plain).describe()
    # the detection asks torch: this machine's answer is what `auto` uses
    found = CpuBf16.detect()
    assert found.avx512_bf16 == torch.cpu._is_avx512_bf16_supported()
    assert resolve_precision("auto", cpu).bf16 == found.native
    assert load_config(None, []).train.bf16 == "auto"
    assert load_config(None, ["train.bf16=true"]).train.bf16 is True


def test_arm_bf16_is_read_from_the_feature_list(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\n", encoding="utf-8")
    assert arm_bf16(info, "aarch64") and not arm_bf16(info, "x86_64")
    info.write_text("processor\t: 0\nFeatures\t: fp asimd sve svebf16\n", encoding="utf-8")
    assert not arm_bf16(info, "aarch64")
    assert not arm_bf16(tmp_path / "missing", "aarch64")


def test_run_info_records_the_precision_used(tmp_path):
    for setting in (False, True):
        cfg = toy_config(epochs=1, max_steps=1, bf16=setting)
        fit(toy_parts(cfg.run.seed), cfg, tmp_path / f"run-{setting}")
        rec = json.loads((tmp_path / f"run-{setting}" / "run_info.json").read_text())
        assert rec["precision"]["setting"] is setting and rec["precision"]["bf16"] is setting
        assert rec["precision"]["cpu_bf16"]["avx512_bf16"] == CpuBf16.detect().avx512_bf16
        assert rec["cpu_allocator"]["applied"] in (True, False) and rec["cpu_allocator"]["why"]
    for bad in ("1", "sometimes", "0"):
        with pytest.raises(ConfigError, match="train.bf16"):
            load_config(None, [f"train.bf16={bad}"])
    with pytest.raises(ConfigError, match="train.valid_loss_samples"):
        load_config(None, ["train.valid_loss_samples=-1"])


def test_validation_loss_uses_the_seeded_subset(tmp_path):
    cfg = toy_config(epochs=1, valid_loss_samples=5)
    parts = toy_parts(cfg.run.seed)
    fit(parts, cfg, tmp_path / "r")
    m = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert m["valid_loss_samples"] == 5 < len(parts.valid_samples)


class FakeEval:
    """Records the evaluation calls `fit` makes (split, max_users) and returns a fixed record."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def __call__(self, model, splits: tuple[str, ...], max_users: int) -> dict:
        out = {}
        for split in splits:
            self.calls.append((split, max_users))
            out[split] = {"split": split, "users": max_users, "metrics": {"ndcg@10": 0.5 + 0.01 * len(self.calls)},
                          "encode_s": 0.25}
        return out


def test_final_eval_users_caps_the_final_evaluation_and_step0_estimates_it(tmp_path, capsys):
    cfg = toy_config(epochs=1, final_eval_users=3, eval_users=2)
    ev = FakeEval()
    fit(toy_parts(cfg.run.seed, evaluate=ev), cfg, tmp_path / "r")
    k = min(2 * cfg.eval.batch_size, len(toy_samples(toy_dataset(12))[1]))
    assert ev.calls[0] == ("valid", k)  # the step-0 probe
    assert ev.calls[-2:] == [("valid", 3), ("test", 3)]  # the final evaluation
    assert ev.calls[1:-2] == [("valid", 2)]  # validation during training keeps train.eval_users
    log = [json.loads(x) for x in (tmp_path / "r" / "log.jsonl").read_text().splitlines()]
    est = [r for r in log if r["kind"] == "final_eval_estimate"]
    assert len(est) == 1 and est[0]["valid_users"] == est[0]["test_users"] == 3
    # the call's encode_s is per call, and the final evaluation is one call for both splits
    e = est[0]
    assert e["call_s"] == 0.25 and e["seconds"] == pytest.approx(
        0.25 + 6 * e["user_s"] + e["valid_loss_samples"] * e["loss_sample_s"])
    assert "final evaluation (best checkpoint, after training)" in capsys.readouterr().err
    assert json.loads((tmp_path / "r" / "metrics.json").read_text())["users"] == 3


def test_final_eval_false_skips_it_and_says_how_to_run_it_later(tmp_path, capsys):
    cfg = toy_config(epochs=1, final_eval=False)
    ev = FakeEval()
    res = fit(toy_parts(cfg.run.seed, evaluate=ev), cfg, tmp_path / "r")
    assert res.metrics == {} and res.state.done
    assert not (tmp_path / "r" / "metrics.json").exists()
    assert all(split == "valid" for split, _ in ev.calls) and len(ev.calls) == 1  # no probe, no test
    err = capsys.readouterr().err
    assert "train.final_eval=false" in err and f"gramc evaluate --run {tmp_path / 'r'} --checkpoint best" in err


def test_the_pipelines_final_evaluation_users_are_train_final_eval_users(tmp_path):
    """One count of final-evaluation users: the train stage's (`train.final_eval_users`, read by fit)
    is the one the evaluate stage expects; `pipeline.eval_users` is gone, and naming it says where to go."""
    from gramc.config import ConfigError
    from gramc.pipeline.pipeline import build_stages

    with pytest.raises(ConfigError, match="pipeline.eval_users.*train.final_eval_users"):
        load_config(None, [f"run.out={tmp_path}", "pipeline.eval_users=5"])
    cfg = load_config(None, [f"run.out={tmp_path}", "train.final_eval_users=7"])
    stages = {s.name: s for s in build_stages(cfg, progress=False)}
    assert stages["evaluate"].config["train.final_eval_users"] == 7
    assert stages["train"].config["train"]["final_eval_users"] == 7
    assert not any("pipeline.eval_users" in s.config or "eval_users" in s.config.get("pipeline", {})
                   for s in stages.values())


class Poisoned(torch.nn.Module):
    """The toy model, whose training loss turns NaN from its `at`-th training forward on."""

    def __init__(self, inner: torch.nn.Module, at: int) -> None:
        super().__init__()
        self.inner, self.at, self.calls = inner, at, 0

    def forward(self, batch):
        loss, tokens = self.inner(batch)
        if self.training:
            self.calls += 1
            if self.calls >= self.at:
                loss = loss * float("nan")
        return loss, tokens


@pytest.mark.parametrize("clip", [0.0, 1.0])
def test_a_non_finite_step_stops_training_and_keeps_the_last_good_checkpoint(tmp_path, clip):
    """The loss turns NaN at step 3 (2 micro-batches a step): that step is not applied, training
    stops with a named error, the last checkpoint (step 2) holds the finite weights it had, and
    log.jsonl is strict JSON (no NaN / Infinity tokens)."""
    from gramc.train.trainer import NonFiniteStep

    cfg = toy_config(epochs=3, clip=clip, save_every=1)
    parts = toy_parts(cfg.run.seed)
    parts.model = Poisoned(parts.model, at=5)
    run = tmp_path / "run"
    with pytest.raises(NonFiniteStep, match=r"step 3 .*gradient norm is nan.*not applied.*--resume"):
        fit(parts, cfg, run)
    state = json.loads((run / "checkpoints" / "last" / "state.json").read_text())
    weights = load_file(str(run / "checkpoints" / "last" / "model.safetensors"))
    assert state["step"] == 2 and all(torch.isfinite(w).all() for w in weights.values())
    assert all(torch.isfinite(p).all() for p in parts.model.parameters())  # the poisoned step changed nothing

    def strict(token):
        raise ValueError(f"log.jsonl holds {token}")

    lines = (run / "log.jsonl").read_text().splitlines()
    assert lines and all(json.loads(line, parse_constant=strict) for line in lines)
    assert max(r["step"] for r in map(json.loads, lines)) <= state["step"]


def test_log_lines_write_non_finite_numbers_as_null(tmp_path):
    from gramc.train.trainer import JsonlLog

    log = JsonlLog(tmp_path / "log.jsonl", True)
    log.write({"kind": "valid", "step": 3, "valid_loss": float("nan"), "ndcg@10": float("inf"),
               "loss": torch.tensor(1.5)})
    assert json.loads((tmp_path / "log.jsonl").read_text()) == {"kind": "valid", "step": 3, "valid_loss": None,
                                                                "ndcg@10": None, "loss": 1.5}
