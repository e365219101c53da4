"""`gramc train-head`: a dense retrieval head fitted on a trained GRAM-C run, its backbone frozen.

A head trained jointly with generation (`model.dense.enabled` during `gramc train`) shares the
backbone's training; on the Beauty subset that cost the beam search about 0.005 ndcg@10 and kept
the head from the rare items (docs/benchmarks.md, issue 30). Here the finished run stays exactly as
it is, and only the head learns:

1. every item passage is encoded once and averaged over its real tokens (`[I, d]`);
2. the first-position decoder state (what the head reads, `GramC.first_states`) of every training
   sample is computed once, and those of the tuning users (`eval.fusion.tune_users` seeded
   validation users, the users that tune the fusion weights);
3. a fresh `DenseHead` (the run's `model.dense.*` plus overrides) trains on these cached tensors
   with `DenseHead.loss` over the whole catalogue: a full softmax (no sampled negatives, so no
   log-q), each sample's own earlier items masked, `train.head.{epochs,lr,batch_size}`;
4. after each epoch the head ranks every item for the tuning users, with the evaluation's
   exclusions and ties; the epoch with the best ndcg@10 is kept.

The output is a run folder like any other: the source's config with `model.dense.enabled=true`
(detach=true, logq=false), `checkpoints/best` with the source's weights plus the head, the
source's run-local assets copied, `run_info.json`, and `head_fit.json` (the source run and
checkpoint, the validation curve, the epoch kept, timings). `gramc evaluate --run OUT
eval.fusion.enabled=true eval.fusion.scorer=both` fuses it with the beam and LightGCN.
"""

from __future__ import annotations

import copy
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from tqdm import tqdm

from ..checkpoint import ASSETS_FILE, save_model_file
from ..config import Config
from ..data.splits import Sample, samples
from ..errors import GramcError
from ..eval.evaluate import encode_all_items, search_collator, tuning_samples, uses_global_items
from ..eval.fusion import scorer_ranks
from ..eval.search import history_exclusions
from ..io import atomic_dir, claim_output, write_json
from ..metrics import per_user_metrics
from ..model.dense import DenseHead, DenseTables, pooled
from ..model.runs import checkpoint_folder, load_model_from_run, run_config
from ..runinfo import write_run_info
from ..seeding import seeded
from .train_gramc import RUN_ASSETS

HEAD_FILE = "head_fit.json"
OVERRIDABLE = ("model.dense.", "train.head.")
FORCED = ("model.dense.enabled=true", "model.dense.detach=true", "model.dense.logq=false")


class HeadFitError(GramcError):
    """The head cannot be fitted on this run (it has one already, an override that changes the run)."""

    exit_code = 2


def head_configs(run_dir: Path, overrides: Sequence[str]) -> tuple[Config, Config]:
    """(the run's config, the config of the run with the head): overrides of `model.dense.*` and
    `train.head.*` only, then `FORCED`."""
    wrong = [o for o in overrides if not o.split("=", 1)[0].strip().startswith(OVERRIDABLE)]
    if wrong:
        raise HeadFitError(f"override {wrong[0]!r}: gramc train-head takes model.dense.* and train.head.* "
                           "overrides only (anything else would change the trained run; train a new one)")
    source = run_config(run_dir)
    if source.model.dense.enabled:
        raise HeadFitError(f"{run_dir} already has a dense head (model.dense.enabled=true, trained jointly); "
                           "fit a head on a run without one")
    return source, run_config(run_dir, [*overrides, *FORCED])


@dataclass
class Cached:
    """The frozen model's states the head trains on."""

    items: torch.Tensor  # [I, 1, d] each item passage's mean encoding, as a one-token passage
    train: torch.Tensor  # [N, d] first-position states of the training samples
    targets: torch.Tensor  # [N]
    history: torch.Tensor  # [N, H] each training sample's earlier items (-1 pad)
    tune: torch.Tensor  # [U, d] first-position states of the tuning users
    tune_samples: list[Sample]


@torch.no_grad()
def first_states(model, assets, cfg: Config, smp: Sequence[Sample], items: tuple[torch.Tensor, torch.Tensor],
                 progress: bool = False, what: str = "states") -> torch.Tensor:
    """`[N, d]` (fp32) each sample's first-position decoder state under the frozen `model`."""
    collate, glob = search_collator(assets, cfg), uses_global_items(cfg)
    device, size, out = next(model.parameters()).device, cfg.eval.batch_size, []
    for s in tqdm(range(0, len(smp), size), desc=what, unit="batch", disable=not progress, leave=False):
        batch = collate(smp[s: s + size]).to(device)
        out.append(model.first_states(*model.memory(batch, items=items if glob else None)).float())
    return torch.cat(out)


def cache_states(model, assets, cfg: Config, progress: bool = True) -> Cached:
    device = next(model.parameters()).device
    states, mask = encode_all_items(model, assets.cache, cfg, device, progress=progress)
    train, tune = samples(assets.ds, "train", cfg.data.max_his), tuning_samples(assets, cfg)
    return Cached(items=pooled(states, mask).unsqueeze(1),
                  train=first_states(model, assets, cfg, train, (states, mask), progress, "training states"),
                  targets=torch.tensor([x.target for x in train], dtype=torch.long, device=device),
                  history=history_exclusions(train).to(device),
                  tune=first_states(model, assets, cfg, tune, (states, mask), progress, "tuning states"),
                  tune_samples=tune)


def tune_ndcg(head: DenseHead, cached: Cached, cfg: Config) -> float:
    """ndcg@10 of the head alone over the tuning users (every item ranked; the evaluation's rules)."""
    head.eval()
    every = torch.arange(len(cached.items), device=cached.items.device)
    with torch.no_grad():
        scores = head.scores(head.users(cached.tune), head.items(cached.items, torch.ones_like(every[:, None],
                                                                 dtype=torch.bool), every))
    exclude = history_exclusions(cached.tune_samples).to(scores.device) if cfg.eval.exclude_history else None
    ranks = scorer_ranks([scores], cached.tune_samples, exclude, cfg)[:, 0]
    return float(per_user_metrics(ranks, (10,))["ndcg@10"].mean())


def train_head(head: DenseHead, cached: Cached, cfg: Config, progress: bool = True) -> tuple[int, list[float]]:
    """Full-softmax epochs over the cached states; the head ends with its best epoch's weights.
    Returns (that epoch, 1-based; tuning ndcg@10 after each epoch)."""
    hc, n = cfg.train.head, len(cached.items)
    every = torch.arange(n, device=cached.items.device)
    mask = torch.ones(n, 1, dtype=torch.bool, device=every.device)
    opt = torch.optim.AdamW(head.parameters(), lr=hc.lr)
    order = torch.Generator().manual_seed(cfg.run.seed)
    curve: list[float] = []
    best: dict[str, Any] = {}
    bar = tqdm(range(hc.epochs), desc="train head", unit="epoch", disable=not progress)
    for _ in bar:
        head.train()
        for rows in torch.randperm(len(cached.train), generator=order).split(hc.batch_size):
            rows = rows.to(every.device)
            loss = head.loss(head.users(cached.train[rows]), head.items(cached.items, mask, every), every,
                             cached.targets[rows], cached.history[rows], 0).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        curve.append(tune_ndcg(head, cached, cfg))
        if curve[-1] > max(curve[:-1], default=-1.0):
            best = copy.deepcopy(head.state_dict())
        bar.set_postfix(valid_ndcg10=f"{curve[-1]:.4f}")
    head.load_state_dict(best)
    return curve.index(max(curve)) + 1, curve


def write_head_run(out: Path, source: Path, cfg: Config, model, assets, record: dict[str, Any]) -> None:
    """The run folder of the model with its head, built aside and moved into place whole."""
    with atomic_dir(out, keep="run folder", same_if=("run_info.json", HEAD_FILE)) as tmp:
        for name in RUN_ASSETS:  # the source's run-local assets, so the new run stands alone
            src = source / name
            if src.is_dir():
                shutil.copytree(src, tmp / name)
            elif src.is_file():
                shutil.copy2(src, tmp / name)
        best = tmp / "checkpoints" / "best"
        best.mkdir(parents=True)
        save_model_file(best / "model.safetensors", model)
        write_json(best / ASSETS_FILE, assets.fingerprints())
        write_json(tmp / HEAD_FILE, record)
        saved = copy.deepcopy(cfg)
        saved.run.out = str(out)
        inputs = {**dict(assets.inputs), "source_weights": Path(record["source"]["checkpoint"]) / "model.safetensors"}
        write_run_info(tmp, saved, inputs, extra={"head_fit": HEAD_FILE})


def fit_head(run_dir: str | Path, out: str | Path, overrides: Sequence[str] = (), checkpoint: str = "best",
             progress: bool = True) -> dict[str, Any]:
    """Fit a dense head on the run's `checkpoint`, write the run with it to `out`; the fit's record."""
    run_dir, out = Path(run_dir), Path(out)
    source_cfg, cfg = head_configs(run_dir, overrides)
    if out.resolve().is_relative_to(run_dir.resolve()):
        raise HeadFitError(f"--out {out} is inside the input run {run_dir}; write the new run beside it "
                           "(gramc never writes into a command's own input)")
    out = claim_output(out, "run", inputs=[run_dir], what="gramc train-head output")
    folder = checkpoint_folder(run_dir, checkpoint)
    t0 = time.perf_counter()
    model, assets, _ = load_model_from_run(run_dir, checkpoint, progress=progress, cfg=source_cfg, folder=folder)
    cached = cache_states(model, assets, cfg, progress)
    t1 = time.perf_counter()
    tables = DenseTables.from_assets(cfg.model.dense, assets)
    with seeded(cfg.run.seed):
        head = DenseHead(cfg.model.dense, model.d_model, tables.num_items, tables.gcn_table, tables.gcn_rows,
                         tables.counts).to(cached.items.device)
    best, curve = train_head(head, cached, cfg, progress)
    model.attach_dense(head, cfg.model.dense)
    record = {"source": {"run": str(run_dir.resolve()), "checkpoint": str(folder.resolve())},
              "head": {"item": cfg.model.dense.item, "dim": cfg.model.dense.dim,
                       "temperature": cfg.model.dense.temperature},
              "fit": {"loss": "full softmax over the catalogue", **vars(cfg.train.head)},
              "tune_users": len(cached.tune_samples), "train_samples": len(cached.train),
              "best_epoch": best, "valid_ndcg@10": curve,
              "cache_seconds": round(t1 - t0, 1), "fit_seconds": round(time.perf_counter() - t1, 1)}
    write_head_run(out, run_dir, cfg, model, assets, record)
    return record
