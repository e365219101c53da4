"""Run by tests/test_train_ddp.py under `torchrun --nproc_per_node=2` (gloo, CPU, float64).

Writes into OUT (argv[1]), from rank 0:
  steps_<mode>.pt   parameters after 3 optimiser steps (grad_accum 2) driven through
                    Trainer.train_step, the synchronised gradients of every step, and the
                    target-token counts of every rank per step; mode = none | double_reduce | module_call
  fit/, fit_dropout/, fit_resumed/   run folders of whole `fit` runs (3 steps; the last one
                    interrupted after step 1 and resumed), compared by the test with 1-process runs
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist

from gramc.ids.tokens import IGNORE_INDEX
from gramc.train.batching import Batcher
from gramc.runtime import init_distributed
from gramc.train.trainer import Trainer, TrainParts, fit
from train_toy import build_model, collate, toy_config, toy_dataset, toy_samples

STEPS = 3


def step_run(out: Path, mode: str) -> None:
    info = init_distributed("cpu")
    ds = toy_dataset()
    train, _ = toy_samples(ds)
    cfg = toy_config()
    model = build_model(ds, cfg.run.seed)
    grads: list[dict[str, torch.Tensor]] = []
    trainer = Trainer(model, cfg.train, total_steps=10, info=info,
                      fault=None if mode == "none" else mode,
                      after_sync=lambda g: grads.append({k: v.detach().clone() for k, v in g.items()}))
    plan = Batcher.from_config(cfg, train, info.rank, info.world).plan(0)
    tokens = []
    for s in range(STEPS):
        batches = [collate(mb).to(info.device) for mb in plan.step(s)]
        tokens.append(int(sum((b.labels != IGNORE_INDEX).sum() for b in batches)))
        trainer.train_step(batches)
    every = [None] * info.world
    dist.all_gather_object(every, tokens)
    if info.is_main:
        torch.save({"params": {k: v.detach().clone() for k, v in model.state_dict().items()},
                    "grads": grads, "tokens": every}, out / f"steps_{mode}.pt")
    dist.barrier()


def fit_run(out: Path, name: str, dropout: float, stop_after: int | None) -> None:
    ds = toy_dataset()
    train, valid = toy_samples(ds)
    cfg = toy_config(max_steps=STEPS)
    parts = TrainParts(build_model(ds, cfg.run.seed, dropout), collate, train, valid)
    if stop_after is None:
        fit(parts, cfg, out / name)
        return
    res = fit(parts, cfg, out / name, stop_after=stop_after)
    assert res.interrupted
    parts = TrainParts(build_model(ds, cfg.run.seed + 1, dropout), collate, train, valid)  # other init
    fit(parts, cfg, out / name, resume=True)


def main() -> None:
    out = Path(sys.argv[1])
    for mode in ("none", "double_reduce", "module_call"):
        step_run(out, mode)
    fit_run(out, "fit", 0.0, None)
    fit_run(out, "fit_dropout", 0.3, None)
    fit_run(out, "fit_resumed", 0.3, 1)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
