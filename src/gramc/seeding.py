"""One seeding point per run, and streams of their own for the parts that need them.

* `seed_everything(seed, rank)`: the python, numpy and torch (CPU and every GPU) global RNGs of
  this process from `seed + rank`, once, where a run starts (`train.trainer.fit` for every
  training, `baselines.sasrec.train_sasrec`); each rank draws its own dropout masks.
* `seeded(seed)`: a block whose torch draws on the CPU come from a stream seeded by `seed`, the
  global stream left exactly as it was; for model initialisation (`nn.init` draws from the global
  generator), so initial weights never depend on what ran before them.

Everything else with randomness takes a generator of its own seeded from the config: batch order
(`torch.Generator`, run.seed + epoch), the validation-loss subset, the prefix-table permutation,
DataLoader workers, LightGCN and the synthetic data (`numpy.random.default_rng`).
"""

from __future__ import annotations

import contextlib
import random
from typing import Iterator

import numpy as np
import torch


def seed_everything(seed: int, rank: int = 0) -> None:
    """Seed this process's global RNGs (python, numpy, torch CPU + CUDA) with `seed + rank`."""
    s = seed + rank
    random.seed(s)
    np.random.seed(s % 2**32)
    torch.manual_seed(s)  # every CUDA device too


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Torch CPU draws inside the block come from a stream seeded by `seed`; afterwards the global
    stream continues as if the block had not run."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield
