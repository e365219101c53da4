"""Where a run's dataset comes from: a prepared folder (`data.path`) or the synthetic generator."""

from __future__ import annotations

from pathlib import Path

from ..config import DataConfig
from .dataset import DataError, SeqDataset
from .synthetic import make_synthetic


def load_dataset(cfg: DataConfig) -> SeqDataset:
    """`cfg.path` (a folder written by `gramc data prepare`) if set, else `make_synthetic(cfg.synthetic)`."""
    if cfg.path:
        folder = Path(cfg.path)
        if not folder.is_dir():
            raise DataError(f"data.path '{folder}' is not a folder; prepare one with "
                            f"`gramc data prepare ... --out {folder}` (or leave data.path empty for synthetic data)")
        return SeqDataset.load(folder)
    return make_synthetic(cfg.synthetic)
