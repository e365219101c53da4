"""Validation during training, and the figures of the final evaluation.

* `validation_loss` on a seeded subset (`valid_loss_subset`: `train.valid_loss_samples`, the same
  at every validation), under the run's bf16 autocast, batches collated by the run's DataLoader
  workers.
* `evaluate_without_grad`: one call of the run's `evaluate` callback in eval mode.
* `final_eval_users`: the users of the final evaluation (`train.final_eval_users` caps both splits).
* `FinalEvalEstimate`: the step-0 estimate of the final evaluation's time, from a measured probe.

The run-level steps that use them (the step-0 probe, the final evaluation of the best
checkpoint) are `TrainRun` methods in `trainer`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
import torch.distributed as dist
from torch import nn

from ..data.splits import Sample
from ..runtime import DistInfo, shard
from .loader import count_target_tokens, host_loader
from .precision import autocast

# (model, splits ("valid",) or ("valid", "test"), max users per split; 0 = all) -> per split a
# metrics record with a "metrics" dict; the splits of one call may share work (one item encoding)
Evaluate = Callable[[nn.Module, tuple[str, ...], int], dict[str, dict[str, Any]]]


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


def evaluate_without_grad(model: nn.Module, evaluate: Evaluate, splits: tuple[str, ...],
                          users: int) -> dict[str, dict[str, Any]]:
    """`evaluate(model, splits, users)` in eval mode without gradients; the model is left in train
    mode. Every rank calls it (evaluation is sharded)."""
    model.eval()
    with torch.no_grad():
        records = evaluate(model, splits, users)
    model.train()
    return records


def final_eval_users(split_users: dict[str, int], default: int, cap: int) -> tuple[int, int]:
    """(valid, test) users of the final evaluation: `split_users` per split (`default` where a split
    is missing), each capped by `cap` (`train.final_eval_users`; 0 = all)."""
    sizes = [split_users.get(s, default) for s in ("valid", "test")]
    return tuple(min(cap, n) if cap > 0 else n for n in sizes)  # type: ignore[return-value]


@dataclass
class FinalEvalEstimate:
    """Step-0 estimate of the final evaluation, from a measured probe on this model and device."""

    valid_users: int
    test_users: int
    valid_loss_samples: int
    call_s: float  # fixed cost of one evaluation call (the work it does once per call, its `encode_s`):
    # the final evaluation is one call for both splits
    user_s: float  # evaluation per user
    loss_sample_s: float  # validation loss per sample

    @property
    def seconds(self) -> float:
        search = self.call_s + (self.valid_users + self.test_users) * self.user_s
        return search + self.valid_loss_samples * self.loss_sample_s

    def to_json(self) -> dict[str, Any]:
        return {"kind": "final_eval_estimate", "step": 0, **dataclasses.asdict(self), "seconds": self.seconds}
