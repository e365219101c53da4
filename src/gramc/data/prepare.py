"""`gramc data prepare`: read one sequence source and one item source, write one canonical dataset.

The output folder is built in a temporary sibling (gramc.io.atomic_dir) and renamed into place
only when complete, so a failure never leaves a half-written dataset nor damages an existing one.
What was read (paths, formats, sha256) and dropped (items without metadata, too-short sequences,
k-core) is recorded in `dataset.json`; `config.yaml` + `run_info.json` record how it was made.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..config import Config
from ..io import atomic_dir, claim_output, sha256_file
from ..runinfo import write_run_info
from .dataset import DataError, SeqDataset
from .readers import read_items, read_sequences
from .splits import MIN_LEN
from .synthetic import make_synthetic


DATASET_FILES = ("items.jsonl", "sequences.txt", "dataset.json", "config.yaml", "run_info.json")


def _source(path: Path, fmt: str) -> dict[str, Any]:
    return {"path": str(path), "format": fmt, "sha256": sha256_file(path), "bytes": path.stat().st_size}


def build_dataset(sequences: str | Path, items: str | Path | None, cfg: Config,
                  seq_format: str = "auto", item_format: str = "auto") -> SeqDataset:
    """Read and combine the sources into a SeqDataset (nothing written)."""
    seq_path = Path(sequences)
    src, seq_fmt = read_sequences(seq_path, seq_format, cfg.data.kcore)
    meta_items: dict[str, dict[str, Any]] | None = None
    sources = {"sequences": _source(seq_path, seq_fmt)}
    if items:
        item_path = Path(items)
        meta_items, item_fmt = read_items(item_path, item_format)
        sources["items"] = _source(item_path, item_fmt)

    dropped: dict[str, Any] = {}
    if src.notes.get("kcore"):
        dropped["kcore"] = src.notes["kcore"]
    seqs = src.sequences
    if meta_items is not None:
        missing: dict[str, int] = {}
        for s in seqs:
            for a in s:
                if a not in meta_items:
                    missing[a] = missing.get(a, 0) + 1
        if missing and cfg.data.missing_metadata == "error":
            examples = ", ".join(list(missing)[:5])
            raise DataError(f"{seq_path}: {len(missing)} items ({sum(missing.values())} interactions) have no "
                            f"metadata in {items} (e.g. {examples}); set data.missing_metadata=drop to drop them")
        dropped["items_without_metadata"] = len(missing)
        dropped["interactions_without_metadata"] = sum(missing.values())
        dropped["items_without_metadata_examples"] = list(missing)[:20]
        if missing:
            seqs = [[a for a in s if a not in missing] for s in seqs]

    users: list[str] = []
    kept: list[list[str]] = []
    short = 0
    for u, s in zip(src.users, seqs):
        if len(s) < MIN_LEN:
            short += 1
            continue
        users.append(u)
        kept.append(s)
    dropped["users_too_short"] = short
    dropped["min_len"] = MIN_LEN
    if not users:
        raise DataError(f"{seq_path}: no user has {MIN_LEN} or more interactions left after filtering "
                        f"(dropped: {dropped})")

    index: dict[str, int] = {}
    for s in kept:
        for a in s:
            index.setdefault(a, len(index))
    item_ids = list(index)
    item_fields = [dict(meta_items.get(a, {})) if meta_items is not None else {} for a in item_ids]
    sequences_idx = [[index[a] for a in s] for s in kept]
    if meta_items is not None:
        dropped["metadata_items_unused"] = sum(1 for a in meta_items if a not in index)
    meta = {
        "sources": sources,
        "counts": {"users": len(users), "items": len(item_ids),
                   "interactions": sum(len(s) for s in sequences_idx)},
        "dropped": dropped,
        "split_protocol": "leave-one-out: test s[-1], valid s[-2], train s[1..n-3] (gramc.data.splits)",
    }
    return SeqDataset(item_ids, item_fields, users, sequences_idx, meta)


def write_dataset(ds: SeqDataset, out: str | Path, cfg: Config, inputs: dict[str, str | Path],
                  extra: dict[str, Any] | None = None) -> Path:
    """Write `ds` + run info (with `extra` fields) into `out` atomically (all or nothing)."""
    out = Path(out)
    claim_output(out, "dataset", inputs=inputs.values(), what="dataset folder", own=DATASET_FILES)
    # an earlier dataset with other content (runs are bound to it by fingerprint) is kept aside
    with atomic_dir(out, keep="dataset folder", same_if=("run_info.json", "config.yaml")) as tmp:
        ds.save(tmp)
        write_run_info(tmp, cfg, inputs, extra=extra)
    return out


def prepare(sequences: str | Path, items: str | Path | None, out: str | Path, cfg: Config,
            seq_format: str = "auto", item_format: str = "auto") -> SeqDataset:
    """Read the sources and write the canonical dataset folder `out`."""
    ds = build_dataset(sequences, items, cfg, seq_format, item_format)
    inputs: dict[str, str | Path] = {"sequences": sequences}
    if items:
        inputs["items"] = items
    write_dataset(ds, out, cfg, inputs)
    return ds


def prepare_synthetic(out: str | Path, cfg: Config) -> SeqDataset:
    """Write the synthetic dataset of `cfg.data.synthetic` as a prepared folder."""
    ds = make_synthetic(cfg.data.synthetic)
    write_dataset(ds, out, cfg, {})
    return ds
