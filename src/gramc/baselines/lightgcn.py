"""LightGCN as a full-ranking baseline: user·item scores of gramc.graph's model.

The GCN folder is `gcn.out` if set, else `<out>/gcn`; it is trained (on training interactions
only) when it holds no complete model yet, and reused otherwise, so the same LightGCN that feeds
GRAM-C's collaborative prefix is the one measured here.
"""

from __future__ import annotations

from pathlib import Path

from ..config import Config
from ..data.dataset import SeqDataset
from ..graph.artifacts import META_FILE, MODEL_FILE
from ..graph.lightgcn import lightgcn_ranks, train_lightgcn
from ..io import write_json
from ..runinfo import write_run_info
from .common import metrics_record


def run_lightgcn(ds: SeqDataset, cfg: Config, out: str | Path, inputs: dict | None = None) -> dict[str, dict]:
    """Train LightGCN if needed, then rank all items for valid and test users."""
    out = Path(out)
    gcn_dir = Path(cfg.gcn.out) if cfg.gcn.out else out / "gcn"
    if not ((gcn_dir / META_FILE).is_file() and (gcn_dir / MODEL_FILE).is_file()):
        train_lightgcn(ds, cfg.gcn, gcn_dir, run_cfg=cfg, inputs=inputs)
    write_run_info(out, cfg, {**(inputs or {}), "gcn_model": gcn_dir / MODEL_FILE})
    recs = {}
    for split in ("valid", "test"):
        ranks = lightgcn_ranks(gcn_dir, ds, split, cfg.data.max_his, cfg.eval.exclude_history)
        recs[split] = metrics_record(ranks, split, "lightgcn", cfg, {"gcn_dir": str(gcn_dir)})
        write_json(out / f"metrics_{split}.json", recs[split])
    write_json(out / "metrics.json", recs["test"])
    return recs
