"""What every full-ranking baseline shares: loading the dataset, ranking all items, metrics.json.

A baseline is a scorer `score(samples) -> Tensor [len(samples), num_items]`; `evaluate_scorer`
ranks every item for every user of a split (same leave-one-out samples as GRAM-C, same metrics
code as `gramc evaluate`) and returns the record written to `metrics_<split>.json`:

    {"split", "model", "users", "metrics": {name: mean}, "ci": {name: [lo, hi]}, "protocol": {...}}
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from tqdm import tqdm

from ..config import Config
from ..data.dataset import SeqDataset
from ..data.source import load_dataset
from ..data.splits import Sample, item_training_counts, samples
from ..io import write_json
from ..metrics import bootstrap_ci, per_user_metrics, popularity_stats, ranks_from_scores, repeat_stats, summarize

Scorer = Callable[[Sequence[Sample]], torch.Tensor]


def load_data(cfg: Config) -> SeqDataset:
    """The dataset named by `cfg.data` (a prepared folder, or the synthetic one)."""
    return load_dataset(cfg.data)


def split_ranks(ds: SeqDataset, split: str, max_his: int, score: Scorer, exclude_history: bool = False,
                batch_users: int = 1024, desc: str = "", top: list | None = None, ties: str = "random",
                seed: int = 0) -> tuple[np.ndarray, list[Sample]]:
    """0-based rank of each sample's target among all items (`ranks_from_scores`: `ties` drawn from
    `seed` per user). `max_his`: the history window the scorer reads; `exclude_history` removes
    every earlier item (`Sample.seen`), also those older than the window.

    `top`: if given, each chunk's top-10 item indices are appended to it (for `repeat_stats`).
    """
    smp = samples(ds, split, max_his)  # type: ignore[arg-type]
    ranks = np.zeros(len(smp), dtype=np.int64)
    bar = tqdm(range(0, len(smp), batch_users), desc=desc or f"rank {split}", unit="batch",
               leave=False, disable=len(smp) <= batch_users)
    for start in bar:
        chunk = smp[start:start + batch_users]
        with torch.no_grad():
            scores = score(chunk).float().cpu()
        if scores.shape != (len(chunk), ds.num_items):
            raise ValueError(f"scorer returned shape {tuple(scores.shape)}, expected "
                             f"({len(chunk)}, {ds.num_items})")
        exclude = None
        if exclude_history:
            exclude = torch.zeros_like(scores, dtype=torch.bool)
            for r, s in enumerate(chunk):
                exclude[r, list(s.seen)] = True
        targets = [s.target for s in chunk]
        ranks[start:start + len(chunk)] = ranks_from_scores(scores, targets, exclude, keys=[s.user for s in chunk],
                                                            seed=seed, ties=ties)
        if top is not None:
            masked = scores if exclude is None else scores.masked_fill(exclude, float("-inf"))
            top.append(masked.topk(min(10, scores.shape[1]), dim=1).indices.numpy())
    return ranks, smp


def full_ranking_protocol(cfg: Config, history_window: int | None) -> dict:
    """What a full-ranking evaluation did, as recorded in its metrics.json: the history window the
    scorer read (None: it reads no history), which items were removed, how ties were placed."""
    return {"ranking": "full", "history_window": history_window,
            "exclude_history": "every earlier item" if cfg.eval.exclude_history else False,
            "ties": f"random (seed {cfg.run.seed}, per user)" if cfg.eval.ties == "random" else "worst place",
            "ks": list(cfg.eval.ks), "bootstrap": cfg.eval.bootstrap}


def metrics_record(ranks: np.ndarray, split: str, model: str, cfg: Config,
                   extra: dict | None = None, history_window: int | None = None) -> dict:
    """metrics.json record in the schema of `gramc evaluate` (means, bootstrap CIs, protocol)."""
    ks = list(cfg.eval.ks)
    means = summarize(ranks, ks)
    users = means.pop("users")
    ci = bootstrap_ci(per_user_metrics(ranks, ks), n=cfg.eval.bootstrap, seed=cfg.run.seed)
    rec = {
        "split": split,
        "model": model,
        "users": users,
        "metrics": means,
        "ci": {k: [lo, hi] for k, (lo, hi) in ci.items()},
        "protocol": full_ranking_protocol(cfg, history_window),
    }
    if extra:
        rec.update(extra)
    return rec


def evaluate_scorer(ds: SeqDataset, cfg: Config, score: Scorer, model: str, out: str | Path | None,
                    history_window: int | None = None, splits: Sequence[str] = ("valid", "test"),
                    extra: dict | None = None) -> dict[str, dict]:
    """Rank all items for every user of each split; write metrics_<split>.json (+ metrics.json = test).

    `history_window`: the most recent items of each history the scorer is given (None: it reads no
    history; its samples then carry `data.max_his` items it ignores). The protocol records it."""
    records = {}
    counts = np.array(item_training_counts(ds), dtype=np.int64)
    for split in splits:
        top: list = []
        ranks, smp = split_ranks(ds, split, history_window or cfg.data.max_his, score,
                                 exclude_history=cfg.eval.exclude_history, desc=f"{model} {split}", top=top,
                                 ties=cfg.eval.ties, seed=cfg.run.seed)
        records[split] = metrics_record(ranks, split, model, cfg, extra, history_window)
        records[split]["repeats"] = repeat_stats(np.concatenate(top), [s.history for s in smp],
                                                 [s.target for s in smp])
        records[split]["popularity"] = popularity_stats(ranks, counts[[s.target for s in smp]])
        if out is not None:
            write_json(Path(out) / f"metrics_{split}.json", records[split])
            # per-user ranks (0-based, -1 = miss) by user ID: what paired comparisons need
            write_json(Path(out) / f"ranks_{split}.json", {"users": [ds.users[s.user] for s in smp],
                                                           "ranks": [int(r) for r in ranks]})
    if out is not None and "test" in records:
        write_json(Path(out) / "metrics.json", records["test"])
    return records


def format_row(name: str, rec: dict, keys: Sequence[str] = ("hit@5", "ndcg@5", "hit@10", "ndcg@10")) -> str:
    """One markdown table row of a metrics record."""
    m = rec["metrics"]
    return "| " + name + " | " + " | ".join(f"{m.get(k, float('nan')):.4f}" for k in keys) + " |"
