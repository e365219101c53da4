"""GRAM-C training, composed: the model (gramc.model), the loop (gramc.train.trainer.fit) and
validation by beam search (gramc.eval), tied together from one Config.

* `gramc_parts(cfg, info) -> TrainParts`: assets, model, collator, samples, the `evaluate` and
  `audit` callbacks `fit` calls;
* `train(cfg, resume=False, ...) -> TrainResult`: `gramc train` and the pipeline's train stage end
  to end (run folder locked, claimed or resumed, process group joined, parts built, an optional
  time budget, `fit`).

This module is the only place where training meets evaluation: `gramc.train` trains any module
with `forward(batch) -> (loss_sum, n_target_tokens)` and takes evaluation as a callback.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import torch
from torch import nn

from ..checks import Check
from ..config import Config
from ..data.splits import samples, training_samples
from ..doctor.batch_audit import audit_first_batch
from ..eval.evaluate import evaluate_splits
from ..ids.trie import trie_for
from ..lock import output_lock
from ..model.assets import Assets
from ..model.gramc import GramC
from ..model.inputs import Collator
from ..runtime import DistInfo, barrier, init_distributed
from ..train.budget import apply_time_budget
from ..train.runfolder import open_run
from ..seeding import seeded
from ..train.trainer import Fault, TrainParts, TrainResult, fit

# what `Assets.from_config` builds into a run folder before training starts
RUN_ASSETS = ("tokenizer", "tokenizer.assets.json", "ids.txt", "ids.txt.assets.json", "ids.txt.stats.json",
              "ids.txt.run_info.json", "ids.txt.png", "gcn", "passage_cache.pt")
# the model's name in the metrics records of a run
MODEL_NAME = "gramc"
# learned scalars logged with every step record (those the model has as parameters)
LOGGED_SCALARS = ("prefix.scale",)


def logged_scalars(model: nn.Module) -> dict[str, float]:
    """The model's parameters named in LOGGED_SCALARS, as numbers."""
    params = dict(model.named_parameters())
    return {n: float(params[n].detach().float()) for n in LOGGED_SCALARS if n in params}


def gramc_parts(cfg: Config, info: DistInfo) -> TrainParts:
    """GRAM-C's model, collator, samples, evaluation and audit, built from one Config.

    Assets (tokenizer, IDs, GCN, passage cache) are built by rank 0 first; the other ranks then
    reuse them from run.out. The model is initialised from a stream of its own seeded by
    `run.seed` (`seeding.seeded`: the same weights whatever ran before; DDP broadcasts rank 0's
    anyway); `fit` seeds the run. The trie of the item IDs is moved to the device once, here, for every
    evaluation of the run.
    """
    assets = Assets.from_config(cfg, progress=True) if info.is_main else None
    barrier(info)
    if assets is None:
        assets = Assets.from_config(cfg, progress=False)
    with seeded(cfg.run.seed):  # a stream of its own: the same weights whatever ran before; fit seeds the run
        model = GramC.from_config(cfg, assets)
    collate = Collator(assets.cache, cfg, gcn_rows=assets.gcn_rows)
    train_samples = training_samples(assets.ds, cfg.data.max_his, cfg.train.indexing, cfg.run.seed)
    valid_samples = samples(assets.ds, "valid", cfg.data.max_his)
    trie = trie_for(assets.item_ids).to(info.device)

    def evaluate(m: nn.Module, splits: tuple[str, ...], max_users: int) -> dict[str, dict[str, Any]]:
        results = evaluate_splits(m, assets, cfg, splits, max_users=max_users, progress=info.is_main, trie=trie)
        return {split: res.to_json() for split, res in results.items()}

    def audit(batch: Any, m: nn.Module) -> list[Check]:
        return audit_first_batch(batch, m, cfg, assets.gcn_rows, train_samples, assets.cache)

    split_users = {"valid": len(valid_samples), "test": len(samples(assets.ds, "test", cfg.data.max_his))}
    return TrainParts(model=model, collate=collate, train_samples=train_samples, valid_samples=valid_samples,
                      evaluate=evaluate, audit=audit, inputs=dict(assets.inputs), split_users=split_users,
                      assets=assets.fingerprints(), results={"model": MODEL_NAME}, scalars=logged_scalars)


def train(cfg: Config, resume: bool = False, fault: Optional[Fault] = None, stop_after: Optional[int] = None,
          after_sync: Optional[Callable[[dict[str, torch.Tensor]], None]] = None,
          overwrite: bool = False, saved: Optional[Config] = None, budget_minutes: float = 0.0,
          stage: bool = False) -> TrainResult:
    """Train GRAM-C as `cfg` says into `cfg.run.out` (resume=True: continue that run folder; a
    fresh run into a folder holding one is refused unless overwrite=True; `saved`: the run's
    config.yaml when the caller read it already; see train.runfolder).

    `budget_minutes` > 0 lowers `train.max_steps` to the steps measured to fit that many minutes
    (`train.budget`, recorded in train_budget.json). `stage=True`: `run.out` is a pipeline stage's
    folder, claimed and checked by the stage (`train.runfolder.open_run`).
    The run folder's lock (gramc.lock) is held from the check of the folder to the last write, so
    no other process trains into it, resumes it or moves it aside meanwhile."""
    with output_lock(cfg.run.out, "run folder (run.out)"):
        cfg, resume = open_run(cfg, resume, overwrite, saved=saved, stage=stage, assets=RUN_ASSETS)
        info = init_distributed(cfg.run.device)
        parts = gramc_parts(cfg, info)
        if budget_minutes > 0:
            cfg, _ = apply_time_budget(cfg, parts, info, budget_minutes, cfg.run.out, resume)
        return fit(parts, cfg, cfg.run.out, resume=resume, fault=fault, stop_after=stop_after,
                   after_sync=after_sync, info=info)
