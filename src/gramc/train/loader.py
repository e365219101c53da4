"""Training batches from the host to the device: a DataLoader over an epoch's plan.

Each item is one optimiser step (`HostStep`: its micro-batches collated on the host, with target
tokens and samples counted there). A batch is a dataclass of tensors with `labels` and a
`.to(device, non_blocking=False)` that moves it (the one way a batch reaches the device). `train.num_workers` processes collate ahead of the training
loop; on CUDA the DataLoader pins the batches and `HostStep.to` copies them with
`non_blocking=True`, so the copy overlaps the step already queued. The loader has its own seeded
generator: the global torch RNG (dropout) is never touched, so a run does not depend on the
number of workers.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from ..data.splits import Sample
from ..ids.tokens import IGNORE_INDEX


def count_target_tokens(batch: Any) -> torch.Tensor:
    """Target tokens of a batch: labels that are not IGNORE_INDEX (padding)."""
    return (batch.labels != IGNORE_INDEX).sum()


def pinned(batch: Any) -> Any:
    """A dataclass batch (or a tensor) with every tensor field in pinned host memory."""
    if isinstance(batch, torch.Tensor):
        return batch.pin_memory()
    if dataclasses.is_dataclass(batch):
        changes = {f.name: getattr(batch, f.name).pin_memory() for f in dataclasses.fields(batch)
                   if isinstance(getattr(batch, f.name), torch.Tensor)}
        return dataclasses.replace(batch, **changes)
    raise TypeError(f"a batch must be a tensor or a dataclass of tensors, got {type(batch).__name__}")


@dataclass
class HostStep:
    """One optimiser step's micro-batches as collated on the host, with their target-token and
    sample counts (counted on the host, so the training step needs no device-to-host read)."""

    batches: list[Any]
    tokens: list[int]
    samples: list[int]

    def pin_memory(self) -> "HostStep":
        """Called by the DataLoader's pin-memory thread (CUDA only)."""
        return dataclasses.replace(self, batches=[pinned(b) for b in self.batches])

    def to(self, device: torch.device) -> list[Any]:
        """The micro-batches on `device` (each batch's own `.to`; from pinned memory the copies
        return at once and overlap the work already queued)."""
        return [b.to(device, non_blocking=True) for b in self.batches]


class _Steps(Dataset):
    """Item j = the collated micro-batches of group j (an optimiser step, or a validation batch)."""

    def __init__(self, groups: Sequence[Sequence[list[Sample]]], collate: Callable, count_tokens: Callable) -> None:
        self.groups, self.collate, self.count_tokens = groups, collate, count_tokens

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, j: int) -> HostStep:
        batches = [self.collate(list(mb)) for mb in self.groups[j]]
        return HostStep(batches, [int(self.count_tokens(b)) for b in batches], [num_samples(b) for b in batches])


def _unwrap(item: HostStep) -> HostStep:
    return item


def host_loader(groups: Sequence[Sequence[list[Sample]]], collate: Callable, count_tokens: Callable,
                num_workers: int, device: torch.device, seed: int) -> DataLoader:
    """A DataLoader yielding one `HostStep` per group, in order: `num_workers` processes collate
    ahead of the training loop (0 = in this process), pinned memory on CUDA. Its own seeded
    generator keeps the global torch RNG (dropout) untouched, so results do not depend on workers."""
    fork = "fork" in torch.multiprocessing.get_all_start_methods()
    return DataLoader(_Steps(groups, collate, count_tokens), batch_size=None, shuffle=False,
                      num_workers=num_workers, collate_fn=_unwrap, pin_memory=device.type == "cuda",
                      generator=torch.Generator().manual_seed(seed),
                      multiprocessing_context=("fork" if fork else None) if num_workers > 0 else None)


def num_samples(batch: Any) -> int:
    """Samples of a batch: rows of its `labels` (1 when it has none)."""
    labels = getattr(batch, "labels", None)
    return int(labels.shape[0]) if labels is not None else 1
