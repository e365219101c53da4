"""A training run within a wall-clock budget: `train.max_steps` from the measured step time.

* `measure_step_seconds(parts, cfg, info)`: seconds per optimiser step, timed on a throw-away
  copy of the model through `fit`'s own loader (`trainer.step_loader`) and `Trainer.train_step`.
* `apply_time_budget(cfg, parts, info, minutes, run_dir, resume)`: the config with `train.max_steps`
  lowered to the steps that fit `minutes`; the choice is kept in `run_dir/train_budget.json`, and
  a resume reads it back instead of measuring again.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

from ..config import Config
from ..io import read_json, write_json
from ..runtime import DistInfo
from .batching import Batcher
from .trainer import Trainer, TrainParts, step_loader

BUDGET_FILE = "train_budget.json"


def measure_step_seconds(parts: TrainParts, cfg: Config, info: DistInfo, steps: int = 3) -> float:
    """Seconds per optimiser step of this model and batching (the first of steps + 1 is left out:
    it pays one-off costs), measured on a throw-away copy of the model."""
    model = copy.deepcopy(parts.model)
    plan = Batcher.from_config(cfg, parts.train_samples, info.rank, info.world).plan(0)
    trainer = Trainer(model, cfg.train, max(steps + 1, 10), info, count_tokens=parts.count_tokens)
    loader = iter(step_loader(parts, cfg, plan, 0, info.device))
    times = []
    for _ in range(min(steps + 1, plan.num_steps)):
        t0 = time.perf_counter()
        host = next(loader)
        stats = trainer.train_step(host.to(info.device), host.tokens)
        stats.loss  # reads the loss: waits for the device, so the time is the step's, not its launch's
        times.append(time.perf_counter() - t0)
    del trainer, model, loader  # the dropout draws it made do not matter: `fit` seeds the run
    later = times[1:] or times
    return sum(later) / len(later)


def apply_time_budget(cfg: Config, parts: TrainParts, info: DistInfo, minutes: float, run_dir: Path,
                      resume: bool) -> tuple[Config, dict[str, Any]]:
    """(config with `train.max_steps` fitting `minutes`, the budget record of train_budget.json)."""
    budget_file = Path(run_dir) / BUDGET_FILE
    cfg = copy.deepcopy(cfg)
    if resume and budget_file.is_file():
        record = read_json(budget_file)
        cfg.train.max_steps = record["max_steps"]
        return cfg, record
    sec_per_step = measure_step_seconds(parts, cfg, info)
    steps = max(1, int(minutes * 60 / sec_per_step))
    if cfg.train.max_steps == 0 or steps < cfg.train.max_steps:
        cfg.train.max_steps = steps
    record = {"seconds_per_step": round(sec_per_step, 3), "max_steps": cfg.train.max_steps, "train_minutes": minutes}
    if info.is_main:
        write_json(budget_file, record)
    return cfg, record
