"""LightGCN as a full-ranking baseline: user·item scores of gramc.graph's model.

The GCN folder is `gcn.out` if set, else `<out>/gcn`; it is trained (on training interactions
only) when it holds no complete model yet, and reused otherwise, so the same LightGCN that feeds
GRAM-C's collaborative prefix is the one measured here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from ..config import Config
from ..data.dataset import SeqDataset
from ..data.splits import Sample
from ..graph.artifacts import META_FILE, MODEL_FILE, gcn_folder
from ..graph.lightgcn import final_embeddings, train_lightgcn
from ..runinfo import write_run_info
from .common import Scorer, evaluate_scorer


def make_scorer(gcn_dir: Path, ds: SeqDataset) -> Scorer:
    """user·item dot products of the saved final embeddings, rows matched to `ds` by ID."""
    users, items = final_embeddings(gcn_dir, ds)

    def score(chunk: Sequence[Sample]) -> torch.Tensor:
        return users[torch.tensor([s.user for s in chunk])] @ items.T

    return score


def run_lightgcn(ds: SeqDataset, cfg: Config, out: str | Path, inputs: dict | None = None) -> dict[str, dict]:
    """Train LightGCN if needed, then rank all items for valid and test users (evaluate_scorer)."""
    out = Path(out)
    gcn_dir = gcn_folder(cfg, out)
    if not ((gcn_dir / META_FILE).is_file() and (gcn_dir / MODEL_FILE).is_file()):
        train_lightgcn(ds, cfg.gcn, gcn_dir, run_cfg=cfg, inputs=inputs)
    write_run_info(out, cfg, {**(inputs or {}), "gcn_model": gcn_dir / MODEL_FILE})
    return evaluate_scorer(ds, cfg, make_scorer(gcn_dir, ds), "lightgcn", out,
                           extra={"gcn_dir": str(gcn_dir)})
