"""The training loop: the same model on 1 process or N, with or without accumulation, resumed or not.

Two layers:

* `Trainer` does one optimiser step (`train_step(micro_batches) -> StepStats`) on any module whose
  ``forward(batch)`` returns ``(loss_sum, n_target_tokens)``. Under DDP it calls the DDP wrapper
  (never ``.module``), uses ``no_sync()`` on accumulation micro-steps, and normalises by the
  *global* number of target tokens of the step: the step's token count is all-reduced first, then
  each micro-batch backpropagates ``loss_sum * world / global_tokens`` (DDP averages over ranks).
  The gradient is then exactly d(sum of token losses)/d(theta) / (tokens of the step), whatever
  the number of ranks or accumulation steps and however tokens are spread over ranks.
* `fit(parts, cfg, run_dir)` runs a whole training: a loop over epochs, each ending with one
  outcome (finished / stopped at `train.max_steps` / interrupted by `stop_after`); batches
  (`batching.Batcher` through `loader.host_loader`), step-0 audit and final-evaluation estimate,
  logs (`StepWindow`), checkpoints and resume, validation and best-checkpoint selection, then the
  final evaluation of the best checkpoint (`TrainRun.final_evaluation`). `fit` knows no model: a
  model's parts (`TrainParts`) are composed from the config by a recipe (`gramc.recipes`, above
  train and eval).

Processes are started by torchrun (RANK, WORLD_SIZE, LOCAL_RANK); gloo on CPU, nccl on GPU. Only
rank 0 writes the run folder.

On a GPU: training batches are collated by a `torch.utils.data.DataLoader` over the epoch's plan
(`train.num_workers` worker processes, pinned memory, `non_blocking` copies), so collation overlaps
compute and the copy overlaps the previous step; target tokens are counted on the host before the
copy; loss and token figures stay on the device and are read only at logging steps, while the
gradient norm's finiteness is read every step (one scalar sync before the optimiser applies it, so
that a NaN or infinite step is never applied); fp32 matmuls use TF32 during training steps. On any device, forward passes run under
bf16 autocast when `train.bf16` says so ("auto": where the GPU or CPU multiplies bf16 natively, see
`precision`), the loss itself in fp32.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Optional, Sequence

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..checks import Check, Report
from ..checkpoint import (TrainState, copy_checkpoint, load_checkpoint, load_weights, rng_state, save_checkpoint,
                          verify_assets)
from ..config import Config, TrainConfig
from ..data.splits import Sample
from ..errors import GramcError
from ..io import read_jsonl, write_json, write_text
from ..runinfo import write_run_info
from ..runtime import DistInfo, barrier as _barrier, init_distributed, keep_freed_memory, say
from ..seeding import seed_everything
from .batching import Batcher, EpochPlan
from .validation import (Evaluate, FinalEvalEstimate, evaluate_without_grad, final_eval_users, validation_loss,
                         valid_loss_subset)
from .loader import count_target_tokens, host_loader, num_samples
from .optim import build_optimizer, build_scheduler
from .precision import autocast, resolve_precision, tf32_matmuls

Fault = Literal["double_reduce", "module_call"]
FAULTS = ("double_reduce", "module_call")

# A run without beam-search evaluation selects by the validation loss (lower is better).
FALLBACK_SELECTION = ("valid_loss", "min")


def selection(tc: TrainConfig, has_beam_metrics: bool) -> tuple[str, str]:
    """(validation figure that picks the best checkpoint, "max" | "min"): `train.select_metric`."""
    if not has_beam_metrics or tc.select_metric == "valid_loss":
        return FALLBACK_SELECTION
    return tc.select_metric, "max"


class TrainError(GramcError, RuntimeError):
    """Training cannot start or continue; the message says why and what to do."""

    exit_code = 1


class NonFiniteStep(TrainError):
    """An optimiser step's loss or gradient is not finite: the step was not applied."""


# --------------------------------------------------------------------------------------------
# One optimiser step
# --------------------------------------------------------------------------------------------


@dataclass
class StepStats:
    """What one optimiser step did (global figures: summed over ranks).

    The loss sum and the gradient norm stay tensors on the device (reading them is a host sync):
    the properties `loss`, `grad_norm`, `tokens`, `samples` read them as Python numbers.
    """

    loss_sum: torch.Tensor  # float64: target-token cross-entropy summed over the step
    token_count: float | torch.Tensor  # target tokens of the step
    sample_count: int | torch.Tensor  # samples (targets) of the step
    grad_norm_t: torch.Tensor  # global L2 norm of the synchronised gradient, before clipping
    lr: float  # learning rate used by this step
    compute_s: float  # wall time of train_step on this rank (host time: kernels may still run)

    @property
    def loss(self) -> float:
        """Mean target-token cross-entropy of the step."""
        return float(self.loss_sum) / float(self.token_count)

    @property
    def tokens(self) -> int:
        return int(self.token_count)

    @property
    def samples(self) -> int:
        return int(self.sample_count)

    @property
    def grad_norm(self) -> float:
        return float(self.grad_norm_t)


class Trainer:
    """Owns model (+ DDP wrapper), optimiser and scheduler; `train_step` runs one optimiser step.

    `fault` is a test-only switch that breaks gradient synchronisation on purpose, so tests and
    `gramc doctor` can prove their checks catch it: "double_reduce" adds a SUM all-reduce of every
    gradient after backward; "module_call" calls ``ddp.module`` instead of the wrapper (GRAM's bug).
    `after_sync(named_grads)` is called every step with the synchronised, unclipped gradients.
    It never seeds: dropout draws from the process's RNG, seeded once per run by `fit`.
    """

    def __init__(self, model: nn.Module, cfg: TrainConfig, total_steps: int, info: DistInfo | None = None,
                 fault: Optional[Fault] = None,
                 after_sync: Optional[Callable[[dict[str, torch.Tensor]], None]] = None,
                 count_tokens: Callable[[Any], torch.Tensor] = count_target_tokens) -> None:
        if fault is not None and fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; expected one of {FAULTS}")
        self.info = info or DistInfo()
        self.cfg = cfg
        self.fault = fault
        self.after_sync = after_sync
        self.count_tokens = count_tokens
        self.model = model.to(self.info.device)
        self.ddp: Optional[DDP] = None
        if self.info.distributed:
            # DDP broadcasts rank 0's parameters and buffers: every rank starts from the same init.
            # Every trainable parameter takes part in every forward (a model that drops a part keeps its
            # parameters in the graph even when dropped), so no unused-parameter search is needed.
            ids = [self.info.device.index] if self.info.device.type == "cuda" else None
            self.ddp = DDP(self.model, device_ids=ids, find_unused_parameters=False)
        self.precision = resolve_precision(cfg.bf16, self.info.device)
        self.optimizer = build_optimizer(self.model, cfg)
        self.scheduler = build_scheduler(self.optimizer, total_steps, cfg.warmup)
        self.total_steps = total_steps
        self.params = [p for p in self.model.parameters() if p.requires_grad]

    @property
    def net(self) -> nn.Module:
        """What training calls: the DDP wrapper when distributed, else the model."""
        return self.ddp if self.ddp is not None else self.model

    def _forward(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        if self.ddp is not None and self.fault == "module_call":
            return self.ddp.module(batch)  # the fault: DDP's reducer is never armed
        return self.net(batch)

    @property
    def bf16(self) -> bool:
        return self.precision.bf16

    def _autocast(self) -> contextlib.AbstractContextManager:
        return autocast(self.info.device, self.bf16)

    def _global_counts(self, micro_batches: Sequence[Any], tokens: Optional[Sequence[int]]
                       ) -> tuple[float | torch.Tensor, int | torch.Tensor, float | torch.Tensor]:
        """(global target tokens, global samples, loss scale world / global tokens).

        Single process with host counts: Python numbers, no device work. Under DDP the counts are
        all-reduced on the device and stay there (no host read unless this rank has no tokens).
        """
        dev = self.info.device
        if tokens is None:  # counted on the device (one host read)
            tokens = [int(self.count_tokens(b)) for b in micro_batches]
        local_tokens, local_samples = float(sum(tokens)), sum(num_samples(b) for b in micro_batches)
        if not self.info.distributed:
            if local_tokens <= 0:
                raise TrainError(_NO_TOKENS)
            return local_tokens, local_samples, self.info.world / local_tokens
        host = torch.tensor([local_tokens, float(local_samples)], dtype=torch.float64)
        local = host.pin_memory().to(dev, non_blocking=True) if dev.type == "cuda" else host.to(dev)
        dist.all_reduce(local)
        if local_tokens <= 0 and float(local[0]) <= 0:
            raise TrainError(_NO_TOKENS)
        return local[0], local[1], self.info.world / local[0]

    def train_step(self, micro_batches: Sequence[Any], tokens: Optional[Sequence[int]] = None) -> StepStats:
        """One optimiser step over this rank's micro-batches (already on the device).

        `tokens`: target tokens of each micro-batch, counted on the host (`HostStep.tokens`);
        None = count them here (a device-to-host read)."""
        if not micro_batches:
            raise ValueError("train_step needs at least one micro-batch")
        t0 = time.perf_counter()
        with tf32_matmuls(self.info.device):
            return self._step(micro_batches, tokens, t0)

    def _step(self, micro_batches: Sequence[Any], tokens: Optional[Sequence[int]], t0: float) -> StepStats:
        self.model.train()
        dev = self.info.device
        global_tokens, global_samples, scale = self._global_counts(micro_batches, tokens)
        loss_total = torch.zeros((), dtype=torch.float64, device=dev)
        last = len(micro_batches) - 1
        for i, batch in enumerate(micro_batches):
            sync_ctx = self.ddp.no_sync() if (self.ddp is not None and i < last) else contextlib.nullcontext()
            with sync_ctx:
                with self._autocast():
                    loss_sum, _ = self._forward(batch)
                step_scale = scale.to(loss_sum.dtype) if isinstance(scale, torch.Tensor) else scale
                (loss_sum * step_scale).backward()
            loss_total += loss_sum.detach().to(torch.float64)
        if self.fault == "double_reduce" and self.info.distributed:
            for p in self.params:
                if p.grad is not None:
                    dist.all_reduce(p.grad)
        if self.after_sync is not None:
            self.after_sync({n: p.grad for n, p in self.model.named_parameters() if p.grad is not None})
        grads = [p for p in self.params if p.grad is not None]
        if self.cfg.clip > 0:
            grad_norm = torch.nn.utils.clip_grad_norm_(grads, self.cfg.clip)
        else:
            grad_norm = total_norm(grads)
        if not bool(torch.isfinite(grad_norm)):  # the same on every rank: gradients are synchronised
            self.optimizer.zero_grad(set_to_none=True)
            raise NonFiniteStep(f"the gradient norm is {float(grad_norm)} (loss {float(loss_total)}): "
                                "the step was not applied")
        lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.info.distributed:
            dist.all_reduce(loss_total)
        return StepStats(loss_sum=loss_total, token_count=global_tokens, sample_count=global_samples,
                         grad_norm_t=grad_norm.detach(), lr=lr, compute_s=time.perf_counter() - t0)


_NO_TOKENS = ("an optimiser step has no target tokens on any rank (all labels are padding); "
              "check the collator's labels")


def total_norm(params: Sequence[torch.Tensor]) -> torch.Tensor:
    """Global L2 norm of the gradients of `params` (torch >= 2.6 has `nn.utils.get_total_norm`; the
    fallback is `clip_grad_norm_` with an infinite bound, which scales every gradient by exactly 1)."""
    if hasattr(torch.nn.utils, "get_total_norm"):
        return torch.nn.utils.get_total_norm([p.grad for p in params])
    return torch.nn.utils.clip_grad_norm_(params, float("inf"))  # pragma: no cover (torch < 2.6)


# --------------------------------------------------------------------------------------------
# A whole run
# --------------------------------------------------------------------------------------------


@dataclass
class TrainParts:
    """What `fit` trains: a model, how to batch, what to validate and test on."""

    model: nn.Module  # forward(batch) -> (loss_sum, n_target_tokens)
    collate: Callable[[list[Sample]], Any]  # list[Sample] -> batch (with `.labels`)
    train_samples: list[Sample]
    valid_samples: list[Sample]
    # (model, split "valid"/"test", max users; 0 = all) -> metrics record with a "metrics" dict
    # (`EvalResult.to_json()`); called on every rank (evaluation is sharded); None = loss only
    evaluate: Optional[Evaluate] = None
    # step-0 audit of the first batch: list of Checks (any failure refuses training)
    audit: Optional[Callable[[Any, nn.Module], list[Check]]] = None
    inputs: dict[str, str | Path] = field(default_factory=dict)  # fingerprinted in run_info.json
    # `Assets.fingerprints()`: written into every checkpoint (assets.json), verified on resume
    assets: Optional[dict[str, Any]] = None
    count_tokens: Callable[[Any], torch.Tensor] = count_target_tokens
    # users per split for the final-evaluation estimate ({"valid": n, "test": n}; missing = valid samples)
    split_users: dict[str, int] = field(default_factory=dict)
    # fields written into both metrics records of the final evaluation (e.g. the model's name)
    results: dict[str, Any] = field(default_factory=dict)
    # model -> learned scalars logged with every `step` record, by name; None = none
    scalars: Optional[Callable[[nn.Module], dict[str, float]]] = None


@dataclass
class TrainResult:
    run_dir: Path
    state: TrainState
    interrupted: bool = False
    metrics: dict[str, Any] = field(default_factory=dict)


class JsonlLog:
    """Append-only log.jsonl on rank 0 (one JSON object per line)."""

    def __init__(self, path: Path, enabled: bool, keep_until_step: Optional[int] = None) -> None:
        self.path = path
        self.enabled = enabled
        if enabled and keep_until_step is not None and path.exists():
            # resuming: drop records of steps the checkpoint does not contain (they will be redone),
            # and a torn last line a crash left (read_jsonl says so)
            kept = [r for r in read_jsonl(path, repair=True) if r.get("step", 0) <= keep_until_step]
            write_text(path, "".join(json_line(r) for r in kept))
        elif enabled and keep_until_step is None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        if self.enabled:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json_line(record))


def json_line(record: dict[str, Any]) -> str:
    """One strict JSON line: a non-finite number (which JSON cannot hold) is written as null."""
    def finite(v: Any) -> Any:
        v = float(v) if isinstance(v, torch.Tensor) else v
        return None if isinstance(v, float) and not math.isfinite(v) else v
    return json.dumps({k: finite(v) for k, v in record.items()}, allow_nan=False, default=float) + "\n"


def _better(value: float, best: Optional[float], mode: str) -> bool:
    if value is None or math.isnan(value):
        return False
    return best is None or (value > best if mode == "max" else value < best)


def _patience_spent(patience: int, epoch: int, state: TrainState, info: DistInfo) -> bool:
    """Early stopping: `patience` > 0 epochs have passed since the best validation (resumable: it
    reads only the checkpointed state)."""
    if patience <= 0 or epoch - state.best_epoch < patience:
        return False
    say(info, f"early stop after epoch {epoch}: no better validation {state.best_metric} for "
                 f"{epoch - state.best_epoch} epochs (train.patience={patience}); best epoch {state.best_epoch}")
    return True


def run_audit(parts: TrainParts, batch: Any, run_dir: Path, info: DistInfo) -> list[Check]:
    """Step-0 audit: print, save audit.json (rank 0), refuse to train on a failure."""
    checks = parts.audit(batch, parts.model) if parts.audit is not None else []
    report = Report(list(checks))
    if info.is_main:
        write_json(run_dir / "audit.json", report.to_dict())
        say(info, "step-0 audit\n" + report.table())
    if not report.ok:
        fails = [c for c in report.checks if not c.ok]
        raise TrainError("training refused by the step-0 audit:\n" + "\n".join(
            f"  {c.name}: {c.message}" for c in fails) + f"\n(see {run_dir / 'audit.json'})")
    return checks


@dataclass
class StepWindow:
    """The figures of the optimiser steps since the last `step` log record. Loss, tokens and
    gradient norms are summed on the device; `record` reads them (the one host sync of a window)."""

    loss_sum: Any = 0.0  # summed token cross-entropy (a device tensor once a step was added)
    tokens: Any = 0.0
    samples: Any = 0
    grad_norm: Any = 0.0  # sum of the steps' gradient norms
    data_s: float = 0.0  # host time spent waiting for batches
    steps: int = 0
    t0: float = field(default_factory=time.perf_counter)

    def add(self, stats: StepStats, data_s: float) -> None:
        self.loss_sum = self.loss_sum + stats.loss_sum
        self.tokens = self.tokens + stats.token_count
        self.samples = self.samples + stats.sample_count
        self.grad_norm = self.grad_norm + stats.grad_norm_t
        self.data_s += data_s
        self.steps += 1

    def record(self, step: int, epoch: int, lr: float, scalars: dict[str, float]) -> dict[str, Any]:
        tokens, samples = float(self.tokens), float(self.samples)
        elapsed = max(1e-9, time.perf_counter() - self.t0)  # after the read above: kernels are done
        return {"kind": "step", "step": step, "epoch": epoch, "loss": float(self.loss_sum) / max(1.0, tokens),
                "lr": lr, "grad_norm": float(self.grad_norm) / max(1, self.steps),
                "tokens_per_s": tokens / elapsed, "samples_per_s": samples / elapsed,
                "data_s": self.data_s, "compute_s": max(0.0, elapsed - self.data_s), **scalars}


Outcome = Literal["finished", "stopped", "interrupted"]  # epoch done / train.max_steps reached / stop_after


def step_loader(parts: TrainParts, cfg: Config, plan: EpochPlan, start: int, device: torch.device) -> DataLoader:
    """`fit`'s loader: one `HostStep` per optimiser step of `plan` from step `start` on, collated by
    `train.num_workers` workers, with a generator seeded by `run.seed + epoch`."""
    return host_loader([plan.step(i) for i in range(start, plan.num_steps)], parts.collate, parts.count_tokens,
                       cfg.train.num_workers, device, seed=cfg.run.seed + plan.epoch)


@dataclass
class TrainRun:
    """What one `fit` call works with (built once; the loop mutates only `state`)."""

    parts: TrainParts
    cfg: Config
    info: DistInfo
    run_dir: Path
    trainer: Trainer
    batcher: Batcher
    state: TrainState
    log: JsonlLog
    total: int
    metric: tuple[str, str]
    valid_loss_samples: list[Sample]
    stop_after: Optional[int]
    audited: bool

    @property
    def ckpt_dir(self) -> Path:
        return self.run_dir / "checkpoints"

    def save(self, where: str = "last") -> None:
        info = self.info
        rngs: list[Any] = [None] * info.world
        if info.distributed:
            dist.all_gather_object(rngs, rng_state())
        else:
            rngs = [rng_state()]
        if info.is_main:
            save_checkpoint(self.ckpt_dir / where, self.trainer.model, self.trainer.optimizer,
                            self.trainer.scheduler, self.state, rngs, assets=self.parts.assets)
        _barrier(info)

    def scalars(self) -> dict[str, float]:
        """The model's learned scalars to log (`TrainParts.scalars`)."""
        return self.parts.scalars(self.trainer.model) if self.parts.scalars is not None else {}

    def valid_loss(self) -> float:
        tc = self.cfg.train
        return validation_loss(self.trainer.model, self.parts.collate, self.valid_loss_samples, tc.batch_size,
                               self.info, self.trainer.bf16, tc.num_workers)

    def validate(self, epoch: int) -> dict[str, Any]:
        """Validation loss (+ beam metrics), best-checkpoint bookkeeping, then checkpoints/last (+ best)."""
        model, state = self.trainer.model, self.state
        record: dict[str, Any] = {"kind": "valid", "epoch": epoch, "step": state.step, "valid_loss": self.valid_loss()}
        if self.parts.evaluate is not None:  # every rank takes part (evaluation is sharded)
            ev = evaluate_without_grad(model, self.parts.evaluate, ("valid",), self.cfg.train.eval_users)
            record.update(ev["valid"]["metrics"])
        name, mode = self.metric
        value = record.get(name)
        if _better(value, state.best_value, mode):
            state.best_value, state.best_step, state.best_epoch = float(value), state.step, epoch
            record["best"] = True
        self.log.write(record)
        say(self.info, f"epoch {epoch} validation: " + ", ".join(
            f"{k}={v:.4f}" for k, v in record.items() if isinstance(v, float)))
        return record

    def run_epoch(self, epoch: int, pbar: tqdm) -> tuple[Outcome, Any, float]:
        """The optimiser steps of `epoch` from where the state stands -> (outcome, summed loss, tokens)."""
        tc, state, info = self.cfg.train, self.state, self.info
        plan = self.batcher.plan(epoch)
        start = state.step_in_epoch if epoch == state.epoch else 0
        state.epoch = epoch
        batches = iter(step_loader(self.parts, self.cfg, plan, start, info.device))
        loss_sum, tokens, window = 0.0, 0.0, StepWindow()
        for i in range(start, plan.num_steps):
            if tc.max_steps and state.step >= tc.max_steps:
                return "stopped", loss_sum, tokens
            t0 = time.perf_counter()
            host = next(batches)
            micro = host.to(info.device)
            data_s = time.perf_counter() - t0
            if not self.audited:
                run_audit(self.parts, micro[0], self.run_dir, info)
                self.audited = True
                self.announce_final_eval()
                window = StepWindow()
            try:
                stats = self.trainer.train_step(micro, host.tokens)
            except NonFiniteStep as err:
                raise NonFiniteStep(f"step {state.step + 1} (epoch {epoch}): {err}. Training stopped; the run folder "
                                    f"keeps its last checkpoint ({self.ckpt_dir / 'last'}, if one was saved) and "
                                    f"log. Lower train.lr or train.clip, or check the data, then `gramc train "
                                    f"--resume {self.run_dir}` or start again") from None
            state.step, state.step_in_epoch = state.step + 1, i + 1
            loss_sum, tokens = loss_sum + stats.loss_sum, tokens + stats.token_count
            window.add(stats, data_s)
            pbar.update(1)
            if state.step % max(1, tc.log_every) == 0 or state.step == self.total:
                record = window.record(state.step, epoch, stats.lr, self.scalars())
                self.log.write(record)
                if info.is_main:
                    pbar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{stats.lr:.2e}",
                                     sps=f"{record['samples_per_s']:.1f}")
                window = StepWindow()
            if self.stop_after is not None and state.step == self.stop_after:
                self.save()
                return "interrupted", loss_sum, tokens
            if tc.save_every and state.step % tc.save_every == 0:
                self.save()
        return "finished", loss_sum, tokens

    def end_epoch(self, epoch: int, outcome: Outcome, loss_sum: Any, tokens: Any, t0: float) -> None:
        """Epoch record, validation when due (always at the end of the run), checkpoints."""
        tc, state = self.cfg.train, self.state
        if outcome == "finished":
            self.log.write({"kind": "epoch", "epoch": epoch, "step": state.step,
                            "loss": float(loss_sum) / max(1.0, float(tokens)), "seconds": time.perf_counter() - t0})
            state.epoch, state.step_in_epoch = epoch + 1, 0
        end_of_run = outcome == "stopped" or epoch == tc.epochs - 1 or bool(tc.max_steps and state.step >= tc.max_steps)
        if not (end_of_run or (epoch + 1) % max(1, tc.eval_every) == 0):
            self.save("last")
            return
        record = self.validate(epoch)
        state.done = end_of_run or _patience_spent(tc.patience, epoch, state, self.info)
        self.save("last")
        if record.get("best") and self.info.is_main:
            copy_checkpoint(self.ckpt_dir / "last", self.ckpt_dir / "best")
        _barrier(self.info)


    def probe_final_eval(self) -> FinalEvalEstimate:
        """Time one evaluation call on k = 2 x `eval.batch_size` validation users: the seconds it spent
        on its once-per-call work (its `encode_s`) are the per-call cost, the rest per user (the first
        batch's warm-up included: the estimate errs long); then the validation loss on two batches."""
        parts, cfg, model = self.parts, self.cfg, self.trainer.model
        valid_n, test_n = final_eval_users(parts.split_users, len(parts.valid_samples), cfg.train.final_eval_users)
        call_s = user_s = 0.0
        if parts.evaluate is not None:
            k = max(1, min(2 * cfg.eval.batch_size, len(parts.valid_samples)))
            t0 = time.perf_counter()
            record = evaluate_without_grad(model, parts.evaluate, ("valid",), k)["valid"]
            call_s = float(record.get("encode_s", 0.0))
            user_s = max(0.0, time.perf_counter() - t0 - call_s) / k
        few = self.valid_loss_samples[:2 * cfg.train.batch_size]
        t0 = time.perf_counter()
        validation_loss(model, parts.collate, few, cfg.train.batch_size, self.info, self.trainer.bf16, 0)
        loss_sample_s = (time.perf_counter() - t0) / max(1, len(few))
        return FinalEvalEstimate(valid_n, test_n, len(self.valid_loss_samples), call_s, user_s, loss_sample_s)

    def announce_final_eval(self) -> None:
        """At step 0: the estimated time of the final evaluation (from a probe), or how to run it later."""
        cfg = self.cfg
        if not cfg.train.final_eval:
            say(self.info, "train.final_eval=false: no evaluation after training; evaluate the best checkpoint "
                f"later with: gramc evaluate --run {self.run_dir} --checkpoint best --split test (and --split valid)")
            return
        est = self.probe_final_eval()
        self.log.write(est.to_json())
        say(self.info, f"final evaluation (best checkpoint, after training): {est.valid_users:,} valid + "
            f"{est.test_users:,} test users at beam {cfg.eval.beams}, validation loss on "
            f"{est.valid_loss_samples:,} samples: about {est.seconds / 60:.1f} min on this device "
            f"(probe: {est.call_s:.1f} s per call + {est.user_s * 1e3:.1f} ms per user); "
            "train.final_eval_users=N caps it, train.final_eval=false skips it")

    def final_evaluation(self) -> dict[str, Any]:
        """Load the best checkpoint (not the last epoch), evaluate it on validation and test
        (`train.final_eval_users` users each, 0 = all), and write metrics_valid.json + metrics.json
        (test) in `gramc evaluate`'s schema, plus which checkpoint was selected and how."""
        parts, state, info, model = self.parts, self.state, self.info, self.trainer.model
        source = "best" if (self.ckpt_dir / "best").is_dir() else "last"
        load_weights(self.ckpt_dir / source, model)
        extra: dict[str, Any] = {**parts.results, "checkpoint": source, "selection": {
            "metric": state.best_metric, "value": state.best_value, "step": state.best_step,
            "epoch": state.best_epoch}}
        extra["valid_loss"] = self.valid_loss()
        extra["valid_loss_samples"] = len(self.valid_loss_samples)
        users = self.cfg.train.final_eval_users
        if parts.evaluate is not None:  # every rank takes part
            records = evaluate_without_grad(model, parts.evaluate, ("valid", "test"), users)
            valid, test = {**records["valid"], **extra}, {**records["test"], **extra}
        else:
            valid, test = {"split": "valid", **extra}, {"split": "test", **extra}
        if info.is_main:
            write_json(self.run_dir / "metrics_valid.json", valid)
            write_json(self.run_dir / "metrics.json", test)
            say(info, f"{source} checkpoint (step {state.best_step}) evaluated: {self.run_dir / 'metrics.json'}")
        _barrier(info)
        return {"valid": valid, "test": test}

    def skip_final_evaluation(self) -> dict[str, Any]:
        """train.final_eval=false: no metrics files; say how to evaluate the selected checkpoint later."""
        which = "best" if (self.ckpt_dir / "best").is_dir() else "last"
        say(self.info, f"final evaluation skipped (train.final_eval=false); run it later with: gramc evaluate "
            f"--run {self.run_dir} --checkpoint {which} --split test (and --split valid)")
        return {}


def fit(parts: TrainParts, cfg: Config, run_dir: str | Path, resume: bool = False,
        fault: Optional[Fault] = None, stop_after: Optional[int] = None,
        after_sync: Optional[Callable[[dict[str, torch.Tensor]], None]] = None,
        info: Optional[DistInfo] = None) -> TrainResult:
    """Train `parts.model` per `cfg.train`, writing the run folder `run_dir` (see docs/runs.md).

    `resume=True` continues from `run_dir/checkpoints/last` exactly where it stopped.
    `stop_after=k` saves a checkpoint after global step k and returns (tests use it to simulate
    an interruption). The run's one seeding point: the process RNGs from `run.seed + rank` (dropout
    differs per rank, on purpose); a resume then restores every rank's RNG state from the checkpoint.
    """
    info = info or init_distributed(cfg.run.device)
    if info.device.type == "cpu":
        keep_freed_memory()
    seed_everything(cfg.run.seed, info.rank)
    run = start_run(parts, cfg, Path(run_dir), resume, fault, stop_after, after_sync, info)
    state = run.state
    pbar = tqdm(total=run.total, initial=state.step, disable=not run.info.is_main, desc="train", unit="step",
                dynamic_ncols=True)
    for epoch in range(state.epoch, cfg.train.epochs):
        if state.done:
            break
        t0 = time.perf_counter()
        outcome, loss_sum, tokens = run.run_epoch(epoch, pbar)
        if outcome == "interrupted":
            pbar.close()
            return TrainResult(run.run_dir, state, interrupted=True)
        run.end_epoch(epoch, outcome, loss_sum, tokens, t0)
    pbar.close()
    if not state.done:  # e.g. the loop ended exactly on an epoch boundary without validation
        state.done = True
        run.save("last")
    metrics = run.final_evaluation() if cfg.train.final_eval else run.skip_final_evaluation()
    return TrainResult(run.run_dir, state, metrics=metrics)


def start_run(parts: TrainParts, cfg: Config, run_dir: Path, resume: bool, fault: Optional[Fault],
              stop_after: Optional[int], after_sync: Optional[Callable], info: DistInfo) -> TrainRun:
    """Batcher, trainer, state (fresh or resumed) and log of a `fit` call."""
    tc = cfg.train
    batcher = Batcher.from_config(cfg, parts.train_samples, info.rank, info.world)
    total = batcher.total_steps(tc.epochs, tc.max_steps)
    trainer = Trainer(parts.model, tc, total, info, fault=fault, after_sync=after_sync,
                      count_tokens=parts.count_tokens)
    metric = selection(tc, parts.evaluate is not None)
    if resume:
        state = load_checkpoint(run_dir / "checkpoints" / "last", trainer.model, trainer.optimizer,
                                trainer.scheduler, info.rank, info.world)
        verify_assets(run_dir / "checkpoints" / "last", parts.assets)
        say(info, f"resumed {run_dir} at epoch {state.epoch}, step {state.step}")
        if state.done:
            state.done = state.step >= total  # more epochs / steps than the finished run had: train on
            say(info, f"the run had finished; training on to step {total} (train.epochs={tc.epochs}, "
                         f"train.max_steps={tc.max_steps})" if not state.done else
                   "the run had finished and train.epochs / train.max_steps ask for no more steps: "
                   "nothing to train (raise them to train on); evaluating the best checkpoint again")
    else:
        state = TrainState(world=info.world, best_metric=metric[0])
        if info.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
            write_run_info(run_dir, cfg, parts.inputs,
                           extra={"world_size": info.world, "total_steps": total,
                                  "train_samples": len(parts.train_samples),
                                  "precision": trainer.precision.to_json(),
                                  "cpu_allocator": keep_freed_memory() if info.device.type == "cpu" else None})
    say(info, f"precision: {trainer.precision.describe()}")
    log = JsonlLog(run_dir / "log.jsonl", info.is_main, keep_until_step=state.step if resume else None)
    subset = valid_loss_subset(parts.valid_samples, tc.valid_loss_samples, cfg.run.seed)
    return TrainRun(parts, cfg, info, run_dir, trainer, batcher, state, log, total, metric, subset, stop_after,
                audited=state.step > 0)
