"""Validation loss and the final evaluation of a training run.

* `validation_loss` on a seeded subset (`train.valid_loss_samples`, the same at every validation),
  under the run's bf16 autocast, batches collated by the run's DataLoader workers.
* `final_test`: the best checkpoint on the first `train.final_eval_users` validation and test
  users (0 = all) -> metrics_valid.json / metrics.json; `skip_final_test` when
  `train.final_eval` is false (says how to run `gramc evaluate` later).
* `announce_final_eval` at step 0: the final evaluation's estimated time from a measured probe.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Sequence

import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from ..checkpoint import load_weights
from ..config import Config
from ..data.splits import Sample
from ..io import write_json
from ..runtime import DistInfo, barrier, shard
from .loader import count_target_tokens, host_loader
from .precision import autocast

if TYPE_CHECKING:  # pragma: no cover
    from .trainer import TrainParts, TrainRun  # annotations only: the trainer imports this module


def say(info: DistInfo, text: str) -> None:
    """Print on rank 0 only (through tqdm, so progress bars stay intact)."""
    if info.is_main:
        tqdm.write(text, file=sys.stderr)


def valid_loss_subset(samples: Sequence[Sample], n: int, seed: int) -> list[Sample]:
    """`train.valid_loss_samples`: n samples drawn once with `seed` (kept in split order), the same
    at every validation of a run; n = 0 or n >= len(samples) = all of them."""
    if n <= 0 or n >= len(samples):
        return list(samples)
    keep = torch.randperm(len(samples), generator=torch.Generator().manual_seed(seed))[:n]
    return [samples[i] for i in sorted(keep.tolist())]


def validation_loss(model: nn.Module, collate: Callable, samples: Sequence[Sample], batch_size: int,
                    info: DistInfo, bf16: bool = False, num_workers: int = 0) -> float:
    """Token-mean cross-entropy on `samples` (under bf16 autocast if `bf16`, the loss in fp32),
    split across ranks and summed; batches collated by `num_workers` DataLoader workers."""
    model.eval()
    totals = torch.zeros(2, dtype=torch.float64, device=info.device)
    mine = shard(samples, info.rank, info.world)
    groups = [[mine[i:i + batch_size]] for i in range(0, len(mine), batch_size)]
    loader = host_loader(groups, collate, count_target_tokens, num_workers, info.device, seed=0)
    with torch.no_grad(), autocast(info.device, bf16):
        for host in loader:
            loss_sum, n = model(host.to(info.device)[0])
            totals[0] += loss_sum.to(torch.float64)
            totals[1] += n.to(torch.float64) if isinstance(n, torch.Tensor) else float(n)
    if info.distributed:
        dist.all_reduce(totals)
    model.train()
    return float(totals[0] / totals[1]) if totals[1] > 0 else float("nan")


@dataclass
class FinalEvalEstimate:
    """Step-0 estimate of the final evaluation, from a measured probe on this model and device."""

    valid_users: int
    test_users: int
    valid_loss_samples: int
    call_s: float  # fixed cost of one evaluation call (every item passage encoded once per call)
    user_s: float  # beam search per user
    loss_sample_s: float  # validation loss per sample

    @property
    def seconds(self) -> float:
        beam = 2 * self.call_s + (self.valid_users + self.test_users) * self.user_s
        return beam + self.valid_loss_samples * self.loss_sample_s

    def to_json(self) -> dict[str, Any]:
        return {"kind": "final_eval_estimate", "step": 0, **dataclasses.asdict(self), "seconds": self.seconds}


def final_eval_users(parts: "TrainParts", cfg: Config) -> tuple[int, int]:
    """(valid, test) users of the final evaluation: `train.final_eval_users` caps both (0 = all)."""
    cap = cfg.train.final_eval_users
    sizes = [parts.split_users.get(s, len(parts.valid_samples)) for s in ("valid", "test")]
    return tuple(min(cap, n) if cap > 0 else n for n in sizes)  # type: ignore[return-value]


def probe_final_eval(run: "TrainRun") -> FinalEvalEstimate:
    """Time one evaluation call on k = 2 x `eval.batch_size` validation users: the seconds it spent
    encoding item passages (its `encode_s`) are the per-call cost, the rest per user (the first
    beam batch's warm-up included: the estimate errs long); then the validation loss on two batches."""
    parts, cfg, model = run.parts, run.cfg, run.trainer.model
    valid_n, test_n = final_eval_users(parts, cfg)
    call_s = user_s = 0.0
    if parts.evaluate is not None:
        k = max(1, min(2 * cfg.eval.batch_size, len(parts.valid_samples)))
        t0 = time.perf_counter()
        model.eval()
        with torch.no_grad():
            record = parts.evaluate(model, "valid", k)
        model.train()
        call_s = float(record.get("encode_s", 0.0))
        user_s = max(0.0, time.perf_counter() - t0 - call_s) / k
    few = run.valid_loss_samples[:2 * cfg.train.batch_size]
    t0 = time.perf_counter()
    validation_loss(model, parts.collate, few, cfg.train.batch_size, run.info, run.trainer.bf16, 0)
    loss_sample_s = (time.perf_counter() - t0) / max(1, len(few))
    return FinalEvalEstimate(valid_n, test_n, len(run.valid_loss_samples), call_s, user_s, loss_sample_s)


def announce_final_eval(run: "TrainRun") -> None:
    """At step 0: the estimated time of the final evaluation (from a probe), or how to run it later."""
    cfg = run.cfg
    if not cfg.train.final_eval:
        say(run.info, "train.final_eval=false: no evaluation after training; evaluate the best checkpoint "
            f"later with: gramc evaluate --run {run.run_dir} --checkpoint best --split test (and --split valid)")
        return
    est = probe_final_eval(run)
    run.log.write(est.to_json())
    say(run.info, f"final evaluation (best checkpoint, after training): {est.valid_users:,} valid + "
        f"{est.test_users:,} test users at beam {cfg.eval.beams}, validation loss on "
        f"{est.valid_loss_samples:,} samples: about {est.seconds / 60:.1f} min on this device "
        f"(probe: {est.call_s:.1f} s per call + {est.user_s * 1e3:.1f} ms per user); "
        "train.final_eval_users=N caps it, train.final_eval=false skips it")


def final_test(run: "TrainRun") -> dict[str, Any]:
    """Load the best checkpoint (not the last epoch), evaluate it on validation and test
    (`train.final_eval_users` users each, 0 = all), and write metrics.json (test) +
    metrics_valid.json in `gramc evaluate`'s schema, plus which checkpoint was selected and how."""
    parts, state, info, model = run.parts, run.state, run.info, run.trainer.model
    best = run.ckpt_dir / "best"
    source = "best" if best.is_dir() else "last"
    load_weights(run.ckpt_dir / source, model)
    extra: dict[str, Any] = {"model": "gramc", "checkpoint": source, "selection": {
        "metric": state.best_metric, "value": state.best_value, "step": state.best_step,
        "epoch": state.best_epoch}}
    extra["valid_loss"] = run.valid_loss()
    extra["valid_loss_samples"] = len(run.valid_loss_samples)
    users = run.cfg.train.final_eval_users
    if parts.evaluate is not None:  # every rank takes part
        model.eval()
        with torch.no_grad():
            valid = {**parts.evaluate(model, "valid", users), **extra}
            test = {**parts.evaluate(model, "test", users), **extra}
        model.train()
    else:
        valid, test = {"split": "valid", **extra}, {"split": "test", **extra}
    if info.is_main:
        write_json(run.run_dir / "metrics_valid.json", valid)
        write_json(run.run_dir / "metrics.json", test)
        say(info, f"{source} checkpoint (step {state.best_step}) evaluated: {run.run_dir / 'metrics.json'}")
    barrier(info)
    return {"valid": valid, "test": test}


def skip_final_test(run: "TrainRun") -> dict[str, Any]:
    """train.final_eval=false: no metrics files; say how to evaluate the selected checkpoint later."""
    which = "best" if (run.ckpt_dir / "best").is_dir() else "last"
    say(run.info, f"final evaluation skipped (train.final_eval=false); run it later with: gramc evaluate "
        f"--run {run.run_dir} --checkpoint {which} --split test (and --split valid)")
    return {}
