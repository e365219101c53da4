"""`gramc data subset`: a smaller dataset derived from a prepared one, deterministically.

A seeded sample of users (a fraction or a count) keeps each chosen user's full sequence; items
are re-indexed to those the sample touches (order of first appearance, as `prepare` does), with
their metadata carried over; an optional k-core re-filter (`gramc.data.readers.kcore`) then runs
to a fixpoint. The result is written atomically in the prepared-dataset layout (so every command
reads it unchanged), with the parent's fingerprint, its own and the sampling parameters in
`dataset.json` (`subset`) and the parent's files fingerprinted in `run_info.json`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..config import Config
from .dataset import DataError, SeqDataset
from .prepare import write_dataset
from .readers import Interaction, group_sequences, kcore
from .splits import MIN_LEN


@dataclass(frozen=True)
class SubsetSpec:
    """How users are drawn: `fraction` of them or exactly `users` (one of the two), with `seed`."""

    fraction: float = 0.0  # share of the parent's users, in (0, 1]; 0 = use `users`
    users: int = 0  # number of users; 0 = use `fraction`
    seed: int = 0
    kcore: int = 0  # re-filter the sample to a k-core (users and items >= k interactions); 0 = off

    def check(self, num_users: int) -> None:
        """Raise DataError naming the option that is wrong."""
        if (self.fraction > 0) == (self.users > 0):
            raise DataError("give exactly one of --fraction F (0 < F <= 1) or --users N (N >= 1); "
                            f"got fraction={self.fraction}, users={self.users}")
        if self.fraction and not 0.0 < self.fraction <= 1.0:
            raise DataError(f"--fraction must be in (0, 1], got {self.fraction}")
        if self.users < 0 or self.users > num_users:
            raise DataError(f"--users must be in 1..{num_users} (the parent's users), got {self.users}")
        if self.kcore and self.kcore < MIN_LEN:
            raise DataError(f"--kcore must be 0 (off) or >= {MIN_LEN} (the split protocol needs {MIN_LEN} "
                            f"items per user), got {self.kcore}")

    def count(self, num_users: int) -> int:
        return self.users if self.users else max(1, int(round(self.fraction * num_users)))


def sample_users(num_users: int, spec: SubsetSpec) -> list[int]:
    """Indices of the drawn users, in the parent's order (numpy's seeded generator, no replacement)."""
    rng = np.random.default_rng(spec.seed)
    return sorted(int(i) for i in rng.choice(num_users, size=spec.count(num_users), replace=False))


def _kcore_sequences(users: list[str], seqs: list[list[str]], k: int) -> tuple[list[str], list[list[str]], dict]:
    """The one k-core helper (readers.kcore) on positions as timestamps, so order is kept."""
    inter = [Interaction(u, a, float(p), p) for u, s in zip(users, seqs) for p, a in enumerate(s)]
    kept, notes = kcore(inter, k)
    grouped = group_sequences(kept)
    return grouped.users, grouped.sequences, notes


def build_subset(parent: SeqDataset, spec: SubsetSpec, parent_path: str | Path = "") -> SeqDataset:
    """The subset as a SeqDataset (nothing written); `dataset.json`'s `subset` says how it was made."""
    spec.check(parent.num_users)
    chosen = sample_users(parent.num_users, spec)
    users = [parent.users[u] for u in chosen]
    seqs = [[parent.item_ids[i] for i in parent.sequences[u]] for u in chosen]
    dropped: dict[str, Any] = {}
    if spec.kcore:
        users, seqs, dropped["kcore"] = _kcore_sequences(users, seqs, spec.kcore)
        if not users:
            raise DataError(f"--kcore {spec.kcore}: no user of the {len(chosen)} drawn keeps {spec.kcore} "
                            "interactions; lower --kcore or draw more users")
    index: dict[str, int] = {}
    for s in seqs:
        for a in s:
            index.setdefault(a, len(index))
    item_ids = list(index)
    fields = [dict(parent.item_fields[parent.index_of(a)]) for a in item_ids]
    ds = SeqDataset(item_ids, fields, users, [[index[a] for a in s] for s in seqs])
    ds.meta = {
        "sources": parent.meta.get("sources", {}),
        "counts": {"users": ds.num_users, "items": ds.num_items, "interactions": ds.num_interactions},
        "dropped": dropped,
        "split_protocol": parent.meta.get("split_protocol", ""),
        "subset": {
            "parent": {"path": str(parent_path), "fingerprint": parent.fingerprint(),
                       "users": parent.num_users, "items": parent.num_items,
                       "interactions": parent.num_interactions},
            "sampling": {**asdict(spec), "drawn_users": len(chosen),
                         "method": "numpy default_rng(seed).choice(users, n, replace=False), parent order kept"},
            "fingerprint": ds.fingerprint(),
        },
    }
    return ds


def write_subset(parent_dir: str | Path, out: str | Path, spec: SubsetSpec, cfg: Config) -> SeqDataset:
    """Load the prepared folder `parent_dir`, derive the subset and write it to `out` atomically."""
    parent_dir, out = Path(parent_dir), Path(out)
    if not parent_dir.is_dir():
        raise DataError(f"--data {parent_dir}: no such folder (a folder written by `gramc data prepare`)")
    if out.resolve() == parent_dir.resolve():
        raise DataError(f"--out {out} is the parent folder itself; write the subset elsewhere")
    ds = build_subset(SeqDataset.load(parent_dir), spec, parent_dir)
    write_dataset(ds, out, cfg, {"parent": parent_dir}, extra={"subset": ds.meta["subset"]})
    return ds
