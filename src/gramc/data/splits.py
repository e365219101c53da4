"""Leave-one-out splits exactly as GRAM and the published numbers use them.

For a user sequence s = [i_1 .. i_n] (oldest first):
  * test:        target s[-1], history s[:-1]
  * validation:  target s[-2], history s[:-2]
  * training:    target s[j] for 1 <= j <= n-3 (0-based j), history s[:j]; empty histories skipped
Histories keep the most recent `max_his` items. Anything trained on interactions (LightGCN,
SASRec, popularity, similar items) must see only `training_sequences` = s[:-2].
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Literal

from .dataset import SeqDataset

Split = Literal["train", "valid", "test"]
MIN_LEN = 3  # a user needs at least one training target, a validation and a test item


INDEXING_USER = -1  # the user of an item-indexing sample (`indexing_samples`): there is none


@dataclass(frozen=True)
class Sample:
    user: int  # user index; INDEXING_USER for an item-indexing sample
    history: tuple[int, ...]  # item indices, chronological (oldest first), at most max_his
    target: int  # item index
    # valid/test samples whose history window cut items off: every item before the target
    earlier: tuple[int, ...] | None = None

    @property
    def seen(self) -> tuple[int, ...]:
        """Every item the user had before the target, as far as known (`eval.exclude_history` removes them)."""
        return self.history if self.earlier is None else self.earlier

    @property
    def indexing(self) -> bool:
        """An item-indexing sample: read the target item's own passage, generate its ID."""
        return self.user == INDEXING_USER


def training_sequences(ds: SeqDataset) -> list[list[int]]:
    """Each user's training part s[:-2]: the only interactions a model may learn from."""
    return [s[:-2] for s in ds.sequences]


def item_training_counts(ds: SeqDataset) -> list[int]:
    """Per item index, its interactions in the training part (`training_sequences`)."""
    counts = [0] * ds.num_items
    for s in training_sequences(ds):
        for i in s:
            counts[i] += 1
    return counts


def samples(ds: SeqDataset, split: Split, max_his: int) -> list[Sample]:
    """All samples of a split, users in dataset order, targets in time order."""
    out: list[Sample] = []
    for u, s in enumerate(ds.sequences):
        if len(s) < MIN_LEN:
            continue
        if split in ("valid", "test"):
            before = s[:-1] if split == "test" else s[:-2]
            out.append(Sample(u, tuple(before[-max_his:]), s[len(before)],
                              tuple(before) if len(before) > max_his else None))
        elif split == "train":
            items = s[:-2]
            for j in range(1, len(items)):
                out.append(Sample(u, tuple(items[:j][-max_his:]), items[j]))
        else:
            raise ValueError(f"unknown split {split!r}; expected train, valid or test")
    return out


def training_samples(ds: SeqDataset, max_his: int, indexing: Any, seed: int) -> list[Sample]:
    """A run's training samples: every interaction sample (`samples(ds, "train")`), then, with
    `train.indexing.enabled`, `round(ratio * their number)` item-indexing samples."""
    out = samples(ds, "train", max_his)
    if indexing.enabled:
        out += indexing_samples(ds, indexing.items, round(indexing.ratio * len(out)), seed)
    return out


def indexing_samples(ds: SeqDataset, items: Literal["train", "catalogue"], count: int, seed: int) -> list[Sample]:
    """`count` item-indexing samples (no user, no history; the target is the item): the items of the
    training part ("train") or of the whole dataset ("catalogue"), in a seeded order, repeated
    until `count` are drawn, so that every item is drawn once before any is drawn twice."""
    if items not in ("train", "catalogue"):
        raise ValueError(f"indexing items must be 'train' or 'catalogue', got {items!r}")
    pool = [i for i, c in enumerate(item_training_counts(ds)) if c > 0] if items == "train" else list(range(ds.num_items))
    out: list[Sample] = []
    rng = random.Random(seed)
    while pool and len(out) < count:
        order = list(pool)
        rng.shuffle(order)
        out += [Sample(INDEXING_USER, (), i) for i in order[: count - len(out)]]
    return out
