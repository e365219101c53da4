"""The training loop: the same model on 1 process or N, with or without accumulation, resumed or not.

Two layers:

* `Trainer` does one optimiser step (`train_step(micro_batches) -> StepStats`) on any module whose
  ``forward(batch)`` returns ``(loss_sum, n_target_tokens)``. Under DDP it calls the DDP wrapper
  (never ``.module``), uses ``no_sync()`` on accumulation micro-steps, and normalises by the
  *global* number of target tokens of the step: the step's token count is all-reduced first, then
  each micro-batch backpropagates ``loss_sum * world / global_tokens`` (DDP averages over ranks).
  The gradient is then exactly d(sum of token losses)/d(theta) / (tokens of the step), whatever
  the number of ranks or accumulation steps and however tokens are spread over ranks.
* `fit(parts, cfg, run_dir)` runs a whole training: batches (`batching.Batcher`), step-0 audit,
  logs, checkpoints and resume, validation and best-checkpoint selection, test of the best
  checkpoint. `train(cfg)` builds GRAM-C's parts from the config and calls `fit`.

Processes are started by torchrun (RANK, WORLD_SIZE, LOCAL_RANK); gloo on CPU, nccl on GPU. Only
rank 0 writes the run folder.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Optional, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from ..checks import Check, Report
from ..config import Config, TrainConfig
from ..data.splits import Sample
from ..errors import GramcError
from ..io import read_jsonl, write_json, write_text
from ..runinfo import write_run_info
from .batching import Batcher
from .checkpoint import (CheckpointError, TrainState, copy_checkpoint, load_checkpoint, load_weights,
                         rng_state, save_checkpoint, verify_assets)
from .optim import build_optimizer, build_scheduler

Fault = Literal["double_reduce", "module_call"]
FAULTS = ("double_reduce", "module_call")

# The validation figure that picks the best checkpoint, and whether higher is better. Until beam
# metrics are available in a run, selection falls back to the validation loss (lower is better).
SELECTION = ("ndcg@10", "max")
FALLBACK_SELECTION = ("valid_loss", "min")


class TrainError(GramcError, RuntimeError):
    """Training cannot start or continue; the message says why and what to do."""

    exit_code = 1


# --------------------------------------------------------------------------------------------
# Processes and devices
# --------------------------------------------------------------------------------------------


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def resolve_device(spec: str, local_rank: int = 0) -> torch.device:
    """run.device -> torch.device: auto = this rank's GPU if there is one, else CPU."""
    if spec == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    if spec == "cuda":
        return torch.device(f"cuda:{local_rank}")
    return torch.device(spec)


def init_distributed(device_spec: str = "auto") -> DistInfo:
    """Join the process group torchrun set up (RANK/WORLD_SIZE/LOCAL_RANK); single process otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_spec, local_rank)
    if world > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
    return DistInfo(rank, world, local_rank, device)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()


# --------------------------------------------------------------------------------------------
# One optimiser step
# --------------------------------------------------------------------------------------------


def count_target_tokens(batch: Any) -> torch.Tensor:
    """Target tokens of a batch: labels that are not -100."""
    return (batch.labels != -100).sum()


def to_device(batch: Any, device: torch.device) -> Any:
    """Move a batch (an object with `.to`, or a dataclass of tensors) to `device`."""
    if hasattr(batch, "to") and callable(batch.to):
        return batch.to(device)
    if dataclasses.is_dataclass(batch):
        changes = {f.name: getattr(batch, f.name).to(device) for f in dataclasses.fields(batch)
                   if isinstance(getattr(batch, f.name), torch.Tensor)}
        return dataclasses.replace(batch, **changes)
    raise TypeError(f"cannot move a {type(batch).__name__} to {device}")


@dataclass
class StepStats:
    """What one optimiser step did (global figures: summed over ranks)."""

    loss: float  # mean target-token cross-entropy of the step
    tokens: int  # target tokens of the step
    samples: int  # samples (targets) of the step
    grad_norm: float  # global L2 norm of the synchronised gradient, before clipping
    lr: float  # learning rate used by this step
    compute_s: float  # wall time of forward/backward/step on this rank


class Trainer:
    """Owns model (+ DDP wrapper), optimiser and scheduler; `train_step` runs one optimiser step.

    `fault` is a test-only switch that breaks gradient synchronisation on purpose, so tests and
    `gramc doctor` can prove their checks catch it: "double_reduce" adds a SUM all-reduce of every
    gradient after backward; "module_call" calls ``ddp.module`` instead of the wrapper (GRAM's bug).
    `after_sync(named_grads)` is called every step with the synchronised, unclipped gradients.
    """

    def __init__(self, model: nn.Module, cfg: TrainConfig, total_steps: int, info: DistInfo | None = None,
                 fault: Optional[Fault] = None,
                 after_sync: Optional[Callable[[dict[str, torch.Tensor]], None]] = None,
                 seed: Optional[int] = None,
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
            # Every trainable parameter takes part in every forward (GramC's prefix keeps its
            # parameters in the graph even when dropped), so no unused-parameter search is needed.
            ids = [self.info.device.index] if self.info.device.type == "cuda" else None
            self.ddp = DDP(self.model, device_ids=ids, find_unused_parameters=False)
        if seed is not None:  # dropout differs per rank, on purpose
            torch.manual_seed(seed + self.info.rank)
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

    def _autocast(self) -> contextlib.AbstractContextManager:
        return torch.autocast(self.info.device.type, dtype=torch.bfloat16, enabled=self.cfg.bf16)

    def train_step(self, micro_batches: Sequence[Any]) -> StepStats:
        """One optimiser step over this rank's micro-batches (already on the device)."""
        if not micro_batches:
            raise ValueError("train_step needs at least one micro-batch")
        t0 = time.perf_counter()
        self.model.train()
        dev = self.info.device
        counts = torch.stack([self.count_tokens(b).to(dev, torch.float64) for b in micro_batches])
        local = torch.stack([counts.sum(), torch.tensor(float(sum(_num_samples(b) for b in micro_batches)),
                                                        dtype=torch.float64, device=dev)])
        if self.info.distributed:
            dist.all_reduce(local)
        global_tokens, global_samples = float(local[0]), int(local[1])
        if global_tokens <= 0:
            raise TrainError("an optimiser step has no target tokens on any rank (all labels are -100); "
                             "check the collator's labels")
        scale = self.info.world / global_tokens
        loss_total = torch.zeros((), dtype=torch.float64, device=dev)
        last = len(micro_batches) - 1
        for i, batch in enumerate(micro_batches):
            sync_ctx = self.ddp.no_sync() if (self.ddp is not None and i < last) else contextlib.nullcontext()
            with sync_ctx:
                with self._autocast():
                    loss_sum, _ = self._forward(batch)
                (loss_sum * scale).backward()
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
            grad_norm = torch.nn.utils.get_total_norm([p.grad for p in grads])
        lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.info.distributed:
            dist.all_reduce(loss_total)
        return StepStats(loss=float(loss_total) / global_tokens, tokens=int(global_tokens),
                         samples=global_samples, grad_norm=float(grad_norm), lr=lr,
                         compute_s=time.perf_counter() - t0)


def _num_samples(batch: Any) -> int:
    labels = getattr(batch, "labels", None)
    return int(labels.shape[0]) if labels is not None else 1


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
    evaluate: Optional[Callable[[nn.Module, str, int], dict[str, Any]]] = None
    # step-0 audit of the first batch: list of Checks (any failure refuses training)
    audit: Optional[Callable[[Any, nn.Module], list[Check]]] = None
    inputs: dict[str, str | Path] = field(default_factory=dict)  # fingerprinted in run_info.json
    # `Assets.fingerprints()`: written into every checkpoint (assets.json), verified on resume
    assets: Optional[dict[str, Any]] = None
    count_tokens: Callable[[Any], torch.Tensor] = count_target_tokens


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
            write_text(path, "".join(json.dumps(r, default=float) + "\n" for r in kept))
        elif enabled and keep_until_step is None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        if self.enabled:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record, default=float) + "\n")


def model_scalars(model: nn.Module) -> dict[str, float]:
    """Learned scalar parameters worth logging (e.g. the prefix scale), by name."""
    return {n: float(p.detach().float()) for n, p in model.named_parameters()
            if p.numel() == 1 and "scale" in n.lower()}


def validation_loss(model: nn.Module, collate: Callable, samples: Sequence[Sample], batch_size: int,
                    info: DistInfo, count_tokens: Callable = count_target_tokens) -> float:
    """Token-mean cross-entropy on `samples`, split across ranks and summed."""
    model.eval()
    totals = torch.zeros(2, dtype=torch.float64, device=info.device)
    mine = list(samples[info.rank::info.world])
    with torch.no_grad():
        for i in range(0, len(mine), batch_size):
            batch = to_device(collate(mine[i:i + batch_size]), info.device)
            loss_sum, n = model(batch)
            totals[0] += loss_sum.to(torch.float64)
            totals[1] += float(n)
    if info.distributed:
        dist.all_reduce(totals)
    model.train()
    return float(totals[0] / totals[1]) if totals[1] > 0 else float("nan")


def _better(value: float, best: Optional[float], mode: str) -> bool:
    if value is None or math.isnan(value):
        return False
    return best is None or (value > best if mode == "max" else value < best)


def _patience_spent(patience: int, epoch: int, state: TrainState, info: DistInfo) -> bool:
    """Early stopping: `patience` > 0 epochs have passed since the best validation (resumable: it
    reads only the checkpointed state)."""
    if patience <= 0 or epoch - state.best_epoch < patience:
        return False
    _print(info, f"early stop after epoch {epoch}: no better validation {state.best_metric} for "
                 f"{epoch - state.best_epoch} epochs (train.patience={patience}); best epoch {state.best_epoch}")
    return True


def _print(info: DistInfo, text: str) -> None:
    if info.is_main:
        tqdm.write(text, file=sys.stderr)


def run_audit(parts: TrainParts, batch: Any, run_dir: Path, info: DistInfo) -> list[Check]:
    """Step-0 audit: print, save audit.json (rank 0), refuse to train on a failure."""
    checks = parts.audit(batch, parts.model) if parts.audit is not None else []
    report = Report(list(checks))
    if info.is_main:
        write_json(run_dir / "audit.json", report.to_dict())
        _print(info, "step-0 audit\n" + report.table())
    if not report.ok:
        fails = [c for c in report.checks if not c.ok]
        raise TrainError("training refused by the step-0 audit:\n" + "\n".join(
            f"  {c.name}: {c.message}" for c in fails) + f"\n(see {run_dir / 'audit.json'})")
    return checks


def fit(parts: TrainParts, cfg: Config, run_dir: str | Path, resume: bool = False,
        fault: Optional[Fault] = None, stop_after: Optional[int] = None,
        after_sync: Optional[Callable[[dict[str, torch.Tensor]], None]] = None,
        info: Optional[DistInfo] = None) -> TrainResult:
    """Train `parts.model` per `cfg.train`, writing the run folder `run_dir` (see docs/runs.md).

    `resume=True` continues from `run_dir/checkpoints/last` exactly where it stopped.
    `stop_after=k` saves a checkpoint after global step k and returns (tests use it to simulate
    an interruption).
    """
    tc = cfg.train
    info = info or init_distributed(cfg.run.device)
    run_dir = Path(run_dir)
    ckpt_dir = run_dir / "checkpoints"
    batcher = Batcher(parts.train_samples, tc.batching, tc.batch_size, tc.grad_accum, cfg.run.seed,
                      info.rank, info.world)
    total = batcher.total_steps(tc.epochs, tc.max_steps)
    trainer = Trainer(parts.model, tc, total, info, fault=fault, after_sync=after_sync, seed=cfg.run.seed,
                      count_tokens=parts.count_tokens)
    model = trainer.model
    metric_name, metric_mode = SELECTION if parts.evaluate is not None else FALLBACK_SELECTION

    if resume:
        state = load_checkpoint(ckpt_dir / "last", model, trainer.optimizer, trainer.scheduler,
                                info.rank, info.world)
        verify_assets(ckpt_dir / "last", parts.assets)
        _print(info, f"resumed {run_dir} at epoch {state.epoch}, step {state.step}")
        if state.done:
            state.done = state.step >= total  # more epochs / steps than the finished run had: train on
            _print(info, f"the run had finished; training on to step {total} (train.epochs={tc.epochs}, "
                         f"train.max_steps={tc.max_steps})" if not state.done else
                   "the run had finished and train.epochs / train.max_steps ask for no more steps: "
                   "nothing to train (raise them to train on); evaluating the best checkpoint again")
    else:
        state = TrainState(world=info.world, best_metric=metric_name)
        if info.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
            write_run_info(run_dir, cfg, parts.inputs,
                           extra={"world_size": info.world, "total_steps": total,
                                  "train_samples": len(parts.train_samples)})
    log = JsonlLog(run_dir / "log.jsonl", info.is_main, keep_until_step=state.step if resume else None)

    def save(where: str = "last") -> None:
        rngs: list[Any] = [None] * info.world
        if info.distributed:
            dist.all_gather_object(rngs, rng_state())
        else:
            rngs = [rng_state()]
        if info.is_main:
            save_checkpoint(ckpt_dir / where, model, trainer.optimizer, trainer.scheduler, state, rngs,
                            assets=parts.assets)
        _barrier(info)

    def validate(epoch: int) -> dict[str, Any]:
        record: dict[str, Any] = {"kind": "valid", "epoch": epoch, "step": state.step}
        record["valid_loss"] = validation_loss(model, parts.collate, parts.valid_samples, tc.batch_size,
                                               info, parts.count_tokens)
        if parts.evaluate is not None:  # every rank takes part (evaluation is sharded)
            model.eval()
            with torch.no_grad():
                record.update(parts.evaluate(model, "valid", tc.eval_users)["metrics"])
            model.train()
        value = record.get(metric_name)
        if _better(value, state.best_value, metric_mode):
            state.best_value, state.best_step, state.best_epoch = float(value), state.step, epoch
            record["best"] = True
        log.write(record)
        _print(info, f"epoch {epoch} validation: " + ", ".join(
            f"{k}={v:.4f}" for k, v in record.items() if isinstance(v, float)))
        return record

    pbar = tqdm(total=total, initial=state.step, disable=not info.is_main, desc="train", unit="step",
                dynamic_ncols=True)
    interrupted = False
    window = {"loss": 0.0, "tokens": 0, "samples": 0, "data_s": 0.0, "compute_s": 0.0, "grad_norm": 0.0, "n": 0}
    audited = state.step > 0
    stop = False
    for epoch in range(state.epoch, tc.epochs):
        if state.done:
            break
        plan = batcher.plan(epoch)
        start = state.step_in_epoch if epoch == state.epoch else 0
        state.epoch = epoch
        epoch_loss, epoch_tokens, epoch_t0 = 0.0, 0, time.perf_counter()
        for i in range(start, plan.num_steps):
            if tc.max_steps and state.step >= tc.max_steps:
                stop = True
                break
            t0 = time.perf_counter()
            batches = [to_device(parts.collate(mb), info.device) for mb in plan.step(i)]
            data_s = time.perf_counter() - t0
            if not audited:
                run_audit(parts, batches[0], run_dir, info)
                audited = True
            stats = trainer.train_step(batches)
            state.step += 1
            state.step_in_epoch = i + 1
            epoch_loss += stats.loss * stats.tokens
            epoch_tokens += stats.tokens
            for k, v in (("loss", stats.loss * stats.tokens), ("tokens", stats.tokens), ("samples", stats.samples),
                         ("data_s", data_s), ("compute_s", stats.compute_s), ("grad_norm", stats.grad_norm)):
                window[k] += v
            window["n"] += 1
            pbar.update(1)
            if info.is_main:
                pbar.set_postfix(loss=f"{stats.loss:.4f}", lr=f"{stats.lr:.2e}",
                                 sps=f"{stats.samples / max(1e-9, data_s + stats.compute_s):.1f}")
            if state.step % max(1, tc.log_every) == 0 or state.step == total:
                elapsed = window["data_s"] + window["compute_s"]
                log.write({"kind": "step", "step": state.step, "epoch": epoch,
                           "loss": window["loss"] / max(1, window["tokens"]), "lr": stats.lr,
                           "grad_norm": window["grad_norm"] / window["n"],
                           "tokens_per_s": window["tokens"] / max(1e-9, elapsed),
                           "samples_per_s": window["samples"] / max(1e-9, elapsed),
                           "data_s": window["data_s"], "compute_s": window["compute_s"],
                           **model_scalars(model)})
                window = {k: 0 for k in window}
            if stop_after is not None and state.step == stop_after:
                save()
                interrupted = True
                break
            if tc.save_every and state.step % tc.save_every == 0:
                save()
        if interrupted:
            break
        finished_epoch = state.step_in_epoch >= plan.num_steps
        last_epoch = epoch == tc.epochs - 1 or (tc.max_steps and state.step >= tc.max_steps)
        if finished_epoch:
            log.write({"kind": "epoch", "epoch": epoch, "step": state.step,
                       "loss": epoch_loss / max(1, epoch_tokens), "seconds": time.perf_counter() - epoch_t0})
            state.epoch, state.step_in_epoch = epoch + 1, 0
        if finished_epoch or last_epoch or stop:
            if last_epoch or stop or (epoch + 1) % max(1, tc.eval_every) == 0:
                record = validate(epoch)
                state.done = bool(last_epoch or stop) or _patience_spent(tc.patience, epoch, state, info)
                save("last")
                if record.get("best") and info.is_main:
                    copy_checkpoint(ckpt_dir / "last", ckpt_dir / "best")
                _barrier(info)
            else:
                save("last")
        if stop or state.done:
            break
    pbar.close()
    if interrupted:
        return TrainResult(run_dir, state, interrupted=True)
    if not state.done:  # e.g. the loop ended exactly on an epoch boundary without validation
        state.done = True
        save("last")
    metrics = final_test(parts, cfg, run_dir, state, model, info)
    return TrainResult(run_dir, state, metrics=metrics)


def final_test(parts: TrainParts, cfg: Config, run_dir: Path, state: TrainState, model: nn.Module,
               info: DistInfo) -> dict[str, Any]:
    """Load the best checkpoint (not the last epoch), evaluate it on validation and test, and write
    metrics.json (test) + metrics_valid.json in `gramc evaluate`'s schema, plus which checkpoint
    was selected and how."""
    best = run_dir / "checkpoints" / "best"
    source = "best" if best.is_dir() else "last"
    load_weights(run_dir / "checkpoints" / source, model)
    extra: dict[str, Any] = {"model": "gramc", "checkpoint": source, "selection": {
        "metric": state.best_metric, "value": state.best_value, "step": state.best_step,
        "epoch": state.best_epoch}}
    extra["valid_loss"] = validation_loss(model, parts.collate, parts.valid_samples, cfg.train.batch_size,
                                          info, parts.count_tokens)
    if parts.evaluate is not None:  # every rank takes part
        model.eval()
        with torch.no_grad():
            valid = {**parts.evaluate(model, "valid", 0), **extra}
            test = {**parts.evaluate(model, "test", 0), **extra}
        model.train()
    else:
        valid, test = {"split": "valid", **extra}, {"split": "test", **extra}
    if info.is_main:
        write_json(run_dir / "metrics_valid.json", valid)
        write_json(run_dir / "metrics.json", test)
        _print(info, f"{source} checkpoint (step {state.best_step}) evaluated: {run_dir / 'metrics.json'}")
    _barrier(info)
    return {"valid": valid, "test": test}


# --------------------------------------------------------------------------------------------
# GRAM-C
# --------------------------------------------------------------------------------------------


def gramc_parts(cfg: Config, info: DistInfo) -> TrainParts:
    """GRAM-C's model, collator, samples, evaluation and audit, built from one Config.

    Assets (tokenizer, IDs, GCN, passage cache) are built by rank 0 first; the other ranks then
    reuse them from run.out. The model is initialised from `run.seed` (DDP then broadcasts rank
    0's weights anyway).
    """
    from ..data.splits import samples
    from ..eval.evaluate import evaluate_split
    from ..model.assets import Assets
    from ..model.gramc import GramC
    from ..model.inputs import Collator
    from .audit import audit_first_batch

    assets = Assets.from_config(cfg, progress=True) if info.is_main else None
    _barrier(info)
    if assets is None:
        assets = Assets.from_config(cfg, progress=False)
    seed_everything(cfg.run.seed)
    model = GramC.from_config(cfg, assets)
    collate = Collator(assets.cache, cfg, gcn_rows=assets.gcn_rows)
    train_samples = samples(assets.ds, "train", cfg.data.max_his)
    valid_samples = samples(assets.ds, "valid", cfg.data.max_his)

    def evaluate(m: nn.Module, split: str, max_users: int) -> dict[str, Any]:
        return evaluate_split(m, assets, cfg, split, max_users=max_users, progress=info.is_main).to_json()

    def audit(batch: Any, m: nn.Module) -> list[Check]:
        return audit_first_batch(batch, m, cfg, assets.gcn_rows, train_samples, assets.cache)

    return TrainParts(model=model, collate=collate, train_samples=train_samples, valid_samples=valid_samples,
                      evaluate=evaluate, audit=audit, inputs=dict(assets.inputs), assets=assets.fingerprints())


def train(cfg: Config, resume: bool = False, fault: Optional[Fault] = None, stop_after: Optional[int] = None,
          after_sync: Optional[Callable[[dict[str, torch.Tensor]], None]] = None,
          overwrite: bool = False) -> TrainResult:
    """Train GRAM-C as `cfg` says into `cfg.run.out` (resume=True: continue that run folder; a
    fresh run into a folder holding one is refused unless overwrite=True: see train.runfolder)."""
    from .runfolder import open_run

    cfg, resume = open_run(cfg, resume, overwrite)
    info = init_distributed(cfg.run.device)
    parts = gramc_parts(cfg, info)
    return fit(parts, cfg, cfg.run.out, resume=resume, fault=fault, stop_after=stop_after,
               after_sync=after_sync, info=info)
