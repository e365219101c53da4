"""Where this process runs: its device, its rank and world, and joining the process group.

Below every stage: training, evaluation, the baselines, LightGCN and the doctor all resolve
devices and ranks here, so that they agree.

* `launch()` -> `Launch(rank, world, local_rank)`: what torchrun put in the environment
  (`RANK`, `WORLD_SIZE`, `LOCAL_RANK`; 0, 1, 0 when started without it). Read it *before* a
  process group exists (e.g. to decide whether to join one, or which rank writes a folder).
* `rank_world()` -> `(rank, world)` of the joined process group; `(0, 1)` when there is none.
  Read it wherever work is sharded or gathered: without a group nothing may be gathered.
* `resolve_device(spec, local_rank=None, key="run.device")`: `auto` = this process's GPU when
  CUDA is available, else the CPU; `cuda` = this process's GPU; `cpu`, `cuda:N` as given.
  "This process's GPU" is `cuda:<LOCAL_RANK>`: torchrun numbers the processes of one machine
  0..n-1 there, one per GPU, which is the rule DDP training always used. (The evaluator used to
  take the *global* rank modulo the GPU count, which agrees on one machine and picks another
  machine's numbering on several; the baselines and LightGCN took `cuda`, the current device,
  which is `cuda:<LOCAL_RANK>` once `init_distributed` has set it and `cuda:0` otherwise.)
* `init_distributed(device_spec)` -> `DistInfo(rank, world, local_rank, device)`: joins the group
  torchrun set up (gloo on CPU, nccl on GPU; the GPU made current first); one process otherwise.
* `barrier(info)`: wait for every rank (a no-op in one process); `leave_distributed(wait=True)`:
  barrier and destroy the group, if one was joined.
* `shard(items, rank, world)`: this rank's share of a list, `items[rank::world]` (no padding, no
  duplicates): the one sharding rule of evaluation (the doctor checks it covers every user once).
* `say(info, text)`: print on rank 0 only, through tqdm so that progress bars stay intact.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import Optional, Sequence, TypeVar

import torch
import torch.distributed as dist
from tqdm import tqdm

from .config import ConfigError

T = TypeVar("T")


@dataclass(frozen=True)
class Launch:
    """The process's place as torchrun launched it (before any process group is joined)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    text = os.environ.get(name, "")
    if not text.strip():
        return default
    try:
        return int(text)
    except ValueError as e:
        raise ConfigError(f"environment variable {name}={text!r} is not an integer (torchrun sets it)") from e


def launch() -> Launch:
    """RANK / WORLD_SIZE / LOCAL_RANK from the environment (0 / 1 / 0 without torchrun)."""
    return Launch(_env_int("RANK", 0), _env_int("WORLD_SIZE", 1), _env_int("LOCAL_RANK", 0))


def rank_world() -> tuple[int, int]:
    """(rank, world) of the joined process group; (0, 1) when this process joined none."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def resolve_device(spec: str, local_rank: Optional[int] = None, key: str = "run.device") -> torch.device:
    """A device setting (`auto | cpu | cuda | cuda:N`) -> torch.device; see the module docstring.

    `local_rank` defaults to the environment's LOCAL_RANK; `key` names the setting in errors."""
    if local_rank is None:
        local_rank = launch().local_rank
    if spec == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    if spec == "cuda":
        return torch.device(f"cuda:{local_rank}")
    try:
        return torch.device(spec)
    except (RuntimeError, TypeError) as e:
        raise ConfigError(f"config key '{key}' is not a device: {spec!r} (expected auto, cpu, cuda or cuda:N)") from e


@dataclass
class DistInfo:
    """This process in a (possibly one-process) group: rank, world size, local rank, device."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def init_distributed(device_spec: str = "auto") -> DistInfo:
    """Join the process group torchrun set up (RANK/WORLD_SIZE/LOCAL_RANK); one process otherwise."""
    env = launch()
    device = resolve_device(device_spec, env.local_rank)
    if env.world > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    rank, world = rank_world() if dist.is_initialized() else (env.rank, env.world)
    return DistInfo(rank, world, env.local_rank, device)


def barrier(info: DistInfo) -> None:
    """Wait for every rank of `info`'s group (a no-op in one process)."""
    if info.distributed:
        dist.barrier()


def say(info: DistInfo, text: str) -> None:
    """Print on rank 0 only (through tqdm, so progress bars stay intact)."""
    if info.is_main:
        tqdm.write(text, file=sys.stderr)


def leave_distributed(wait: bool = True) -> None:
    """Leave the process group, if this process joined one (after a barrier when `wait`: every
    rank has finished writing; skip it on an error path, where another rank may never arrive)."""
    if dist.is_available() and dist.is_initialized():
        if wait:
            dist.barrier()
        dist.destroy_process_group()


def shard(items: Sequence[T], rank: int, world: int) -> list[T]:
    """This rank's share of `items`: every `world`-th item from position `rank`."""
    return list(items[rank::world])


_ALLOCATOR: dict[str, object] = {}


def keep_freed_memory() -> dict[str, object]:
    """Let glibc's malloc keep freed memory for reuse instead of returning it to the system.

    A CPU training step allocates and frees the same large activations every step. By default glibc
    serves blocks above 32 MiB with a fresh `mmap` and unmaps them on free, so every step pays page
    faults to zero them again (a third of the step as system time on a 2-core machine). Here every
    block comes from the heap (`M_MMAP_MAX=0`) and the heap's top is never trimmed (`M_TRIM_THRESHOLD`
    at its maximum): the process keeps its peak memory and reuses it. Applies once per process, on
    Linux with glibc; returns what it did (recorded in `run_info.json`).
    """
    if _ALLOCATOR:
        return dict(_ALLOCATOR)
    import ctypes
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        _ALLOCATOR.update(applied=False, why=f"not glibc ({platform.system()} {platform.libc_ver()[0] or '-'})")
        return dict(_ALLOCATOR)
    M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
    try:
        libc = ctypes.CDLL("libc.so.6")
        ok = bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1))
    except (OSError, AttributeError) as err:
        ok, why = False, str(err)
    else:
        why = "glibc malloc: no mmap blocks, no trimming" if ok else "mallopt refused"
    _ALLOCATOR.update(applied=ok, why=why)
    return dict(_ALLOCATOR)
