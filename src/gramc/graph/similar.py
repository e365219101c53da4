"""Similar-item lists in GRAM's file format, read and written.

Format (GRAM's `similar_item_sasrec.txt`, and gramc's `similar_items.txt`):

    anchor top1 top2 ... topK
    ITEM_ID sim_1 sim_2 ... sim_K        (most similar first, whitespace separated)

`read_similar_items` returns, for every dataset item index, the dataset indices of its first `k`
neighbours. It is strict: an item the dataset does not know, a malformed or short line, a repeated
anchor or a dataset item without a line is an error naming the file and line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from ..data.dataset import DataError, SeqDataset
from ..io import atomic_path, text_lines


def read_similar_items(path: str | Path, ds: SeqDataset, k: int) -> list[list[int]]:
    """Dataset indices of the top-`k` neighbours of every dataset item (most similar first)."""
    path = Path(path)
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    if not path.is_file() and not path.is_dir():
        raise DataError(f"{path}: similar-items file does not exist")
    out: list[list[int] | None] = [None] * ds.num_items
    for n, line in text_lines(path, DataError):
        parts = line.split()
        if not parts:
            continue
        if n == 1 and parts[0] == "anchor":
            continue  # header: anchor top1 ... topK
        anchor = parts[0]
        if not ds.has_item(anchor):
            raise DataError(f"{path}:{n}: anchor item '{anchor}' is not an item of the dataset")
        a = ds.index_of(anchor)
        if out[a] is not None:
            raise DataError(f"{path}:{n}: anchor item '{anchor}' appears a second time")
        if len(parts) - 1 < k:
            raise DataError(f"{path}:{n}: item '{anchor}' has {len(parts) - 1} similar items, "
                            f"{k} were asked for (lower the number of similar items)")
        row: list[int] = []
        for j, sim in enumerate(parts[1:k + 1], 1):
            if not ds.has_item(sim):
                raise DataError(f"{path}:{n}: similar item {j} '{sim}' of '{anchor}' is not an item "
                                f"of the dataset")
            row.append(ds.index_of(sim))
        out[a] = row
    missing = [ds.item_ids[i] for i, r in enumerate(out) if r is None]
    if missing:
        raise DataError(f"{path}: {len(missing)} dataset items have no line, e.g. '{missing[0]}'; "
                        f"the file must list every item of the dataset")
    return out  # type: ignore[return-value]


def write_similar_items(path: str | Path, ds: SeqDataset,
                        neighbours: Sequence[Sequence[int]] | torch.Tensor) -> None:
    """Write `neighbours[i]` (dataset indices, most similar first) for every item, atomically."""
    rows = neighbours.tolist() if isinstance(neighbours, torch.Tensor) else [list(r) for r in neighbours]
    if len(rows) != ds.num_items:
        raise ValueError(f"need one neighbour list per item ({ds.num_items}), got {len(rows)}")
    k = len(rows[0]) if rows else 0
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(" ".join(["anchor"] + [f"top{j}" for j in range(1, k + 1)]) + "\n")
            for i, row in enumerate(rows):
                if len(row) != k:
                    raise ValueError(f"item {ds.item_ids[i]}: {len(row)} neighbours, expected {k}")
                f.write(" ".join([ds.item_ids[i]] + [ds.item_ids[j] for j in row]) + "\n")


def top_k_cosine(embeddings: torch.Tensor, k: int, chunk: int = 2048) -> torch.Tensor:
    """LongTensor [n, k]: for each row, the k other rows of highest cosine similarity (self excluded).

    Ties are broken by lower index (stable), so the result is deterministic.
    """
    n = embeddings.shape[0]
    if not 0 <= k < n:
        raise ValueError(f"similar_k must be in [0, {n - 1}] for {n} items, got {k}")
    x = torch.nn.functional.normalize(embeddings.float(), dim=1)
    out = torch.empty((n, k), dtype=torch.long)
    for start in range(0, n, chunk):
        sims = x[start:start + chunk] @ x.T
        rows = torch.arange(start, min(start + chunk, n))
        sims[rows - start, rows] = float("-inf")
        out[start:start + chunk] = torch.sort(sims, dim=1, descending=True, stable=True).indices[:, :k]
    return out
