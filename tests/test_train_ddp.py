"""DDP correctness: 2 processes x 2 accumulation steps == 1 process on the combined batches.

Real DDP (torchrun --nproc_per_node=2, gloo on CPU) on the float64 toy model. Tolerance: 1e-10
absolute on parameters and gradients after 3 AdamW steps. The two runs add the same per-token
losses in a different order, so they agree to ~1e-15 relative; Adam's g/sqrt(v) is insensitive
to such rounding for gradients well above eps=1e-6. The faults ("double_reduce": gradients summed
once more; "module_call": DDP bypassed, no synchronisation) must break the equality, which
proves the test can fail.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from gramc.train.batching import Batcher
from gramc.runtime import DistInfo
from gramc.train.trainer import Trainer, TrainParts, fit
from train_toy import build_model, collate, toy_config, toy_dataset, toy_samples

ROOT = Path(__file__).resolve().parents[1]
TOL = 1e-10
STEPS = 3


@pytest.fixture(scope="module")
def ddp_out(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ddp")
    torchrun = Path(sys.executable).with_name("torchrun")
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([str(torchrun), "--nproc_per_node=2", "--master_port=0", "--standalone",
                           str(ROOT / "tests" / "train_ddp_helper.py"), str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return out


def reference_steps() -> tuple[dict[str, torch.Tensor], list[dict[str, torch.Tensor]]]:
    """One process, grad_accum = 2 ranks x 2 = 4, the same global micro-batches."""
    ds = toy_dataset()
    train, _ = toy_samples(ds)
    cfg = toy_config(grad_accum=4)
    model = build_model(ds, cfg.run.seed)
    grads: list[dict[str, torch.Tensor]] = []
    trainer = Trainer(model, cfg.train, total_steps=10, info=DistInfo(),
                      after_sync=lambda g: grads.append({k: v.detach().clone() for k, v in g.items()}))
    plan = Batcher(train, cfg.train.batching, cfg.train.batch_size, 4, cfg.run.seed).plan(0)
    for s in range(STEPS):
        trainer.train_step([collate(mb).to(torch.device("cpu")) for mb in plan.step(s)])
    return model.state_dict(), grads


def max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


@pytest.fixture(scope="module")
def reference():
    return reference_steps()


def test_ranks_hold_different_token_counts(ddp_out):
    tokens = torch.load(ddp_out / "steps_none.pt")["tokens"]
    assert len(tokens) == 2 and len(tokens[0]) == STEPS
    assert any(a != b for a, b in zip(tokens[0], tokens[1])), tokens


def test_ddp_with_accumulation_equals_one_process(ddp_out, reference):
    ref_params, ref_grads = reference
    got = torch.load(ddp_out / "steps_none.pt")
    for s in range(STEPS):
        assert max_diff(got["grads"][s], ref_grads[s]) < TOL, f"gradients differ at step {s}"
    assert max_diff(got["params"], ref_params) < TOL


@pytest.mark.parametrize("fault", ["double_reduce", "module_call"])
def test_faults_break_equality(ddp_out, reference, fault):
    ref_params, ref_grads = reference
    got = torch.load(ddp_out / f"steps_{fault}.pt")
    assert max_diff(got["grads"][0], ref_grads[0]) > 1e-4, f"{fault} was not detected on gradients"
    assert max_diff(got["params"], ref_params) > 1e-8, f"{fault} was not detected on parameters"


def last_weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "checkpoints" / "last" / "model.safetensors"))


def test_fit_on_two_processes_equals_one_process(ddp_out, tmp_path):
    ds = toy_dataset()
    train, valid = toy_samples(ds)
    cfg = toy_config(max_steps=STEPS, grad_accum=4)
    fit(TrainParts(build_model(ds, cfg.run.seed), collate, train, valid), cfg, tmp_path / "one")
    assert max_diff(last_weights(ddp_out / "fit"), last_weights(tmp_path / "one")) < TOL


def test_ddp_resume_equals_uninterrupted(ddp_out):
    # dropout on, different per rank; the interrupted run restarted from a different init
    a, b = last_weights(ddp_out / "fit_dropout"), last_weights(ddp_out / "fit_resumed")
    assert max_diff(a, b) == 0.0
