"""The canonical dataset: items with metadata and per-user chronological sequences.

Every reader (GRAM files, RecBole atomic files, Amazon 2014 dumps, synthetic) produces a
`SeqDataset`; `gramc data prepare` writes it to a folder in one documented layout:

    DIR/items.jsonl     one JSON object per item: {"id": ASIN, "title": ..., "brand": ..., ...}
    DIR/sequences.txt   one line per user: `USER item_1 ... item_n`, oldest first (GRAM's format)
    DIR/dataset.json    provenance: sources with sha256, counts, what was dropped and why

Items are indexed 0..num_items-1 in the order of their first appearance in the sequences
(user order, then position). That order is also the GCN mapping's order (index = position + 1).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import DataError
from ..io import atomic_path, read_json, sha256_text


@dataclass
class SeqDataset:
    item_ids: list[str]  # index -> item ID (ASIN/ISBN string)
    item_fields: list[dict[str, Any]]  # index -> metadata fields (title, brand, categories, ...)
    users: list[str]  # user index -> user ID
    sequences: list[list[int]]  # user index -> item indices, chronological (oldest first)
    meta: dict[str, Any] = field(default_factory=dict)  # provenance (sources, counts, dropped)

    def __post_init__(self) -> None:
        self._index = {a: i for i, a in enumerate(self.item_ids)}
        if len(self._index) != len(self.item_ids):
            raise DataError("duplicate item IDs in the dataset")

    @property
    def num_items(self) -> int:
        return len(self.item_ids)

    @property
    def num_users(self) -> int:
        return len(self.users)

    @property
    def num_interactions(self) -> int:
        return sum(len(s) for s in self.sequences)

    def index_of(self, item_id: str) -> int:
        """Item index of an item ID; KeyError if unknown."""
        return self._index[item_id]

    def has_item(self, item_id: str) -> bool:
        return item_id in self._index

    def fingerprint(self) -> str:
        """sha256 of the content that every stage reads: item IDs in index order and the sequences."""
        return sha256_text("\n".join(self.item_ids) + "\n" + "\n".join(" ".join(map(str, s)) for s in self.sequences))

    # ---- persistence -------------------------------------------------------------------

    def save(self, folder: str | Path) -> None:
        """Write the three canonical files into `folder` (each file atomically)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(folder / "items.jsonl") as tmp:
            with open(tmp, "w", encoding="utf-8") as f:
                for iid, fields in zip(self.item_ids, self.item_fields):
                    f.write(json.dumps({"id": iid, **fields}, ensure_ascii=False) + "\n")
        with atomic_path(folder / "sequences.txt") as tmp:
            with open(tmp, "w", encoding="utf-8") as f:
                for user, seq in zip(self.users, self.sequences):
                    f.write(user + " " + " ".join(self.item_ids[i] for i in seq) + "\n")
        with atomic_path(folder / "dataset.json") as tmp:
            tmp.write_text(json.dumps(self.meta, indent=2, default=str) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, folder: str | Path) -> "SeqDataset":
        """Read a folder written by `save` (i.e. by `gramc data prepare`); a damaged file is a
        DataError naming it."""
        folder = Path(folder)
        try:
            return cls._load(folder)
        except UnicodeDecodeError as e:
            raise DataError(f"{folder}: a file of the dataset is not UTF-8 text ({e.reason} at byte {e.start}); "
                            f"the folder is damaged: prepare it again with `gramc data prepare`") from e

    @classmethod
    def _load(cls, folder: Path) -> "SeqDataset":
        for name in ("items.jsonl", "sequences.txt"):
            if not (folder / name).is_file():
                raise DataError(f"{folder}: not a prepared gramc dataset (missing {name}); "
                                f"run `gramc data prepare ... --out {folder}` first")
        item_ids: list[str] = []
        item_fields: list[dict[str, Any]] = []
        with open(folder / "items.jsonl", encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                try:
                    obj = json.loads(line)
                    iid = obj.pop("id")
                except (json.JSONDecodeError, KeyError, AttributeError) as e:
                    raise DataError(f"{folder / 'items.jsonl'}:{n}: expected a JSON object with 'id' ({e})") from e
                item_ids.append(iid)
                item_fields.append(obj)
        index = {a: i for i, a in enumerate(item_ids)}
        users: list[str] = []
        sequences: list[list[int]] = []
        with open(folder / "sequences.txt", encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                parts = line.split()
                if not parts:
                    continue
                try:
                    seq = [index[a] for a in parts[1:]]
                except KeyError as e:
                    raise DataError(f"{folder / 'sequences.txt'}:{n}: item {e.args[0]} is not in items.jsonl") from e
                users.append(parts[0])
                sequences.append(seq)
        meta: Any = {}
        if (folder / "dataset.json").is_file():
            try:
                meta = read_json(folder / "dataset.json")
            except ValueError as e:
                raise DataError(f"{folder / 'dataset.json'}: not valid JSON ({e}); the folder is damaged: "
                                f"prepare it again with `gramc data prepare`") from e
            if not isinstance(meta, dict):
                raise DataError(f"{folder / 'dataset.json'}: expected a JSON object, got {type(meta).__name__}")
        return cls(item_ids, item_fields, users, sequences, meta)
