"""Training batches: units of samples, seeded per-epoch shuffling, packing and sharding across ranks.

A *unit* is the smallest group of training samples that always travels together:

* ``batching="sequence"`` (default): one user's consecutive training targets, at most
  ``batch_size`` of them (a long sequence is cut into several units). A micro-batch then holds
  whole user sequences, so a collator can share what samples of one user have in common.
* ``batching="sample"``: one sample per unit.

An item-indexing sample (``Sample.indexing``) is always a unit of its own, so the shuffle mixes
them among the users' units.

Each epoch the units are shuffled with a generator seeded by ``seed + epoch`` (the same order on
every rank), packed in that order into micro-batches of at most ``batch_size`` targets, and the
*global* list of micro-batches is dealt round-robin to the ranks: rank ``r`` gets global
micro-batches ``r, r + W, r + 2W, ...``. Consequently optimiser step ``s`` of ``W`` ranks with
``A`` accumulation steps consumes exactly the global micro-batches ``s*W*A .. (s+1)*W*A - 1``,
the same ones a single process with ``grad_accum = W*A`` consumes: the run does not depend on
how the work is split.

Every rank does the same number of micro-batches (``ceil(G / W)`` for ``G`` global ones). When
``G`` is not a multiple of ``W``, the ranks that are short repeat their *own* first
micro-batches (a rank that has none repeats global micro-batch ``r mod G``). This is the
standard DistributedSampler padding for training: at most ``W - 1`` micro-batches per epoch are
seen twice. A single process never pads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import torch

from ..config import Config
from ..data.splits import Sample

Unit = tuple[Sample, ...]


def make_units(samples: Sequence[Sample], batching: Literal["sequence", "sample"],
               batch_size: int) -> list[Unit]:
    """Group training samples (as `gramc.data.splits.samples` orders them) into units."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if batching == "sample":
        return [(s,) for s in samples]
    if batching != "sequence":
        raise ValueError(f"train.batching must be 'sequence' or 'sample', got {batching!r}")
    units: list[Unit] = []
    current: list[Sample] = []
    for s in samples:
        if s.indexing:  # an item-indexing sample travels alone
            units.append((s,))
            continue
        if current and (s.user != current[-1].user or len(current) == batch_size):
            units.append(tuple(current))
            current = []
        current.append(s)
    if current:
        units.append(tuple(current))
    return units


def pack(units: Sequence[Unit], batch_size: int) -> list[list[Sample]]:
    """Pack units in order into micro-batches of at most `batch_size` samples (targets)."""
    batches: list[list[Sample]] = []
    current: list[Sample] = []
    for u in units:
        if len(u) > batch_size:
            raise ValueError(f"a unit holds {len(u)} samples, more than batch_size={batch_size}")
        if current and len(current) + len(u) > batch_size:
            batches.append(current)
            current = []
        current.extend(u)
    if current:
        batches.append(current)
    return batches


def global_micro_batches(units: Sequence[Unit], batch_size: int, seed: int, epoch: int) -> list[list[Sample]]:
    """All micro-batches of one epoch, in the order every rank agrees on."""
    g = torch.Generator().manual_seed(seed + epoch)
    order = torch.randperm(len(units), generator=g).tolist()
    return pack([units[i] for i in order], batch_size)


def shard(batches: Sequence[list[Sample]], rank: int, world: int) -> list[list[Sample]]:
    """Rank `rank`'s micro-batches: round-robin share, padded with its own to ceil(G / world)."""
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} is not in [0, {world})")
    n = len(batches)
    if n == 0:
        return []
    per_rank = -(-n // world)
    own = list(batches[rank::world])
    if not own:
        own = [batches[rank % n]]
    out = list(own)
    i = 0
    while len(out) < per_rank:
        out.append(own[i % len(own)])
        i += 1
    return out


@dataclass
class EpochPlan:
    """The micro-batches one rank runs in one epoch, grouped into optimiser steps."""

    epoch: int
    micro_batches: list[list[Sample]]
    grad_accum: int

    @property
    def num_steps(self) -> int:
        """Optimiser steps in this epoch, the shorter tail step included."""
        return steps_per_epoch(len(self.micro_batches), self.grad_accum)

    def step(self, i: int) -> list[list[Sample]]:
        """The micro-batches of optimiser step `i` (0-based) of this epoch."""
        a = self.grad_accum
        return self.micro_batches[i * a:(i + 1) * a]


def steps_per_epoch(num_micro_batches: int, grad_accum: int) -> int:
    """ceil(micro-batches / grad_accum): the epoch's tail step counts."""
    return -(-num_micro_batches // grad_accum)


class Batcher:
    """Deterministic training batches for (seed, epoch, rank, world)."""

    def __init__(self, samples: Sequence[Sample], batching: Literal["sequence", "sample"], batch_size: int,
                 grad_accum: int, seed: int, rank: int = 0, world: int = 1) -> None:
        if not samples:
            raise ValueError("no training samples: every user needs at least 4 interactions "
                             "(training targets are s[1:-2])")
        self.units = make_units(samples, batching, batch_size)
        self.batch_size = batch_size
        self.grad_accum = grad_accum
        self.seed = seed
        self.rank = rank
        self.world = world

    @classmethod
    def from_config(cls, cfg: Config, samples: Sequence[Sample], rank: int = 0, world: int = 1) -> "Batcher":
        """The batches `cfg` trains with (`train.batching`, `batch_size`, `grad_accum`, `run.seed`)."""
        t = cfg.train
        return cls(samples, t.batching, t.batch_size, t.grad_accum, cfg.run.seed, rank, world)

    def plan(self, epoch: int) -> EpochPlan:
        batches = global_micro_batches(self.units, self.batch_size, self.seed, epoch)
        return EpochPlan(epoch, shard(batches, self.rank, self.world), self.grad_accum)

    def steps_per_epoch(self, epoch: int = 0) -> int:
        """Optimiser steps per epoch (identical on every rank; may vary slightly per epoch in
        `sequence` mode because packing depends on the shuffle)."""
        return self.plan(epoch).num_steps

    def total_steps(self, epochs: int, max_steps: int = 0) -> int:
        """The real number of optimiser steps of a run: the sum over epochs, capped by max_steps."""
        total = sum(self.plan(e).num_steps for e in range(epochs))
        return min(total, max_steps) if max_steps > 0 else total
