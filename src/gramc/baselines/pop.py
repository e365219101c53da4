"""Popularity baseline: every user gets the items ranked by their training interaction count.

Counts come from the training part of each sequence only (s[:-2]), so the validation and test
items never inform the ranking. Ties (items with equal counts) are placed by the shared metrics
code (`eval.ties`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from ..config import Config
from ..data.dataset import SeqDataset
from ..data.splits import Sample, item_training_counts
from ..runinfo import write_run_info
from .common import evaluate_scorer


def popularity_counts(ds: SeqDataset) -> torch.Tensor:
    """Interactions per item in the training sequences, float tensor [num_items]."""
    return torch.tensor(item_training_counts(ds), dtype=torch.float32)


def run_pop(ds: SeqDataset, cfg: Config, out: str | Path | None,
            inputs: dict | None = None) -> dict[str, dict]:
    """Evaluate popularity on valid and test; write metrics + run info into `out`."""
    counts = popularity_counts(ds)

    def score(chunk: Sequence[Sample]) -> torch.Tensor:
        return counts.unsqueeze(0).expand(len(chunk), -1)

    if out is not None:
        write_run_info(out, cfg, inputs)
    return evaluate_scorer(ds, cfg, score, "pop", out)
