"""The GCN artefacts folder: file names, and `GcnArtifacts` to read it back.

A GCN folder (written by `gramc gcn train`, or brought by the user) holds:

    gcn_item_embeddings.pt      float32 [num_items + 1, dim]; row 0 = padding (zeros), other rows
                                L2-normalised: the frozen table the collaborative prefix reads
    item_id_to_gcn_index.json   item ID (ASIN/ISBN string) -> row 1..num_items; gramc writes
                                row = dataset item index + 1, but readers always use the mapping
    similar_items.txt           GRAM's similar-items format, top-K cosine of the embeddings
    gcn_meta.json               interactions used (split, count, sha256), hyper-parameters, loss,
                                LightGCN's own validation metrics, time taken
    gcn_model.pt                un-normalised final user and item embeddings (dataset order), to
                                score users later (`lightgcn_ranks`)

Only the embeddings and the mapping are required to load; the rest is optional so that a user
may bring a table of their own (`gramc gcn check` then says what cannot be verified).

`gcn_needed(cfg)` / `gcn_folder(cfg)`: whether a config reads a GCN folder at all and where it is;
every stage asks these two instead of reading `gcn.out` and the prefix settings itself.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..config import Config
from ..data.dataset import DataError, SeqDataset

EMBEDDINGS_FILE = "gcn_item_embeddings.pt"
MAPPING_FILE = "item_id_to_gcn_index.json"
SIMILAR_FILE = "similar_items.txt"
META_FILE = "gcn_meta.json"
MODEL_FILE = "gcn_model.pt"


def gcn_needed(cfg: Config) -> bool:
    """Whether GRAM-C reads a GCN folder: the prefix is on, similar items come from the GCN, or the
    dense head's item vectors read LightGCN rows."""
    m = cfg.model
    return (m.prefix.enabled or (m.similar_items > 0 and m.similar_source == "gcn")
            or (m.dense.enabled and m.dense.item != "text"))


def gcn_folder(cfg: Config, root: str | Path | None = None) -> Path:
    """The GCN folder: `gcn.out` when set, else `<root>/gcn` (root defaults to `run.out`)."""
    return Path(cfg.gcn.out) if cfg.gcn.out else Path(cfg.run.out if root is None else root) / "gcn"


@dataclass
class GcnArtifacts:
    """A loaded GCN folder. Contents are not validated here (that is `check_gcn`'s job)."""

    folder: Path
    embeddings: torch.Tensor  # [num_items + 1, dim], row 0 = padding
    mapping: dict[str, Any]  # item ID -> GCN row (ints, unless the file is broken)
    meta: dict[str, Any] = field(default_factory=dict)  # gcn_meta.json ({} when absent)
    duplicate_keys: list[str] = field(default_factory=list)  # keys repeated in the JSON file

    @classmethod
    def load(cls, folder: str | Path) -> "GcnArtifacts":
        """Read a GCN folder; DataError naming the file when one is missing or unreadable."""
        folder = Path(folder)
        if not folder.is_dir():
            raise DataError(f"{folder}: GCN folder does not exist; run `gramc gcn train --out {folder}` first")
        emb_path, map_path, meta_path = folder / EMBEDDINGS_FILE, folder / MAPPING_FILE, folder / META_FILE
        for p in (emb_path, map_path):
            if not p.is_file():
                raise DataError(f"{p}: missing; a GCN folder needs {EMBEDDINGS_FILE} and {MAPPING_FILE}")
        try:
            emb = torch.load(emb_path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - any unpickling problem is a bad file
            raise DataError(f"{emb_path}: not a readable torch tensor file ({e})") from e
        if not isinstance(emb, torch.Tensor):
            raise DataError(f"{emb_path}: expected a tensor [num_items + 1, dim], got {type(emb).__name__}")
        mapping, dups = _read_mapping(map_path)
        meta: dict[str, Any] = {}
        if meta_path.is_file():
            try:
                meta = json.loads(meta_path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as e:
                raise DataError(f"{meta_path}: not valid JSON ({e})") from e
            if not isinstance(meta, dict):
                raise DataError(f"{meta_path}: expected a JSON object")
        return cls(folder, emb, mapping, meta, dups)

    @property
    def num_rows(self) -> int:
        return int(self.embeddings.shape[0]) if self.embeddings.dim() >= 1 else 0

    def row_of(self, item_id: str) -> int:
        """GCN row of an item ID; 0 when the mapping has no usable entry (missing, out of range)."""
        v = self.mapping.get(item_id)
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v < self.num_rows:
            return 0
        return v

    def rows_for(self, ds: SeqDataset) -> torch.Tensor:
        """LongTensor [num_items]: GCN row per dataset item index (0 where no usable entry)."""
        return torch.tensor([self.row_of(a) for a in ds.item_ids], dtype=torch.long)


def _read_mapping(path: Path) -> tuple[dict[str, Any], list[str]]:
    """The mapping JSON object, plus the keys that appear more than once in the file."""
    dups: list[str] = []

    def pairs_hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in pairs:
            if k in out:
                dups.append(k)
            out[k] = v
        return out

    try:
        obj = json.loads(path.read_text(encoding="utf-8"), object_pairs_hook=pairs_hook)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected a JSON object {{item ID: row}}, got {type(obj).__name__}")
    return obj, dups
