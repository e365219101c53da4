"""gramc.runtime: the one device rule, torchrun's environment, the process group and sharding."""

from __future__ import annotations

import pytest
import torch

from gramc import runtime
from gramc.config import ConfigError
from gramc.runtime import DistInfo, Launch, init_distributed, launch, rank_world, resolve_device, shard


@pytest.fixture
def no_torchrun(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)


def test_launch_reads_torchrun_environment(monkeypatch, no_torchrun):
    assert launch() == Launch(0, 1, 0) and launch().is_main
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert launch() == Launch(3, 4, 1) and not launch().is_main
    monkeypatch.setenv("WORLD_SIZE", "four")
    with pytest.raises(ConfigError, match="WORLD_SIZE='four'"):
        launch()


def test_rank_world_without_a_group_is_one_process(monkeypatch):
    monkeypatch.setenv("RANK", "2")  # the environment alone is no process group: nothing may be gathered
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert rank_world() == (0, 1)


@pytest.mark.parametrize("cuda", [False, True])
def test_device_rule_is_the_local_rank_gpu(monkeypatch, no_torchrun, cuda):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    assert resolve_device("auto") == (torch.device("cuda:0") if cuda else torch.device("cpu"))
    assert resolve_device("auto", local_rank=3) == (torch.device("cuda:3") if cuda else torch.device("cpu"))
    monkeypatch.setenv("LOCAL_RANK", "2")  # torchrun's numbering on this machine, not the global rank
    monkeypatch.setenv("RANK", "6")
    assert resolve_device("auto") == (torch.device("cuda:2") if cuda else torch.device("cpu"))
    assert resolve_device("cuda") == torch.device("cuda:2")
    assert resolve_device("cuda:1") == torch.device("cuda:1")
    assert resolve_device("cpu") == torch.device("cpu")


def test_bad_device_names_the_key():
    with pytest.raises(ConfigError, match="'gcn.device' is not a device: 'gpu0'"):
        resolve_device("gpu0", key="gcn.device")
    with pytest.raises(ConfigError, match="'run.device'"):
        resolve_device("tpu")


def test_init_distributed_single_process(monkeypatch, no_torchrun):
    info = init_distributed("cpu")
    assert info == DistInfo(0, 1, 0, torch.device("cpu")) and info.is_main and not info.distributed
    assert not torch.distributed.is_initialized()  # one process joins no group


def test_every_stage_resolves_devices_through_runtime(monkeypatch, no_torchrun):
    """The evaluator, the trainer, LightGCN and the baselines share the one rule (no copies left)."""
    import gramc.baselines.sasrec as sasrec
    import gramc.graph.lightgcn as lightgcn
    import gramc.model.runs as runs
    import gramc.train.trainer as trainer

    assert sasrec.resolve_device is lightgcn.resolve_device is runs.resolve_device is runtime.resolve_device
    assert trainer.init_distributed is runtime.init_distributed and trainer.DistInfo is runtime.DistInfo


@pytest.mark.parametrize("n,world", [(0, 2), (1, 3), (7, 2), (10, 3), (5, 8)])
def test_shard_covers_every_item_once(n, world):
    items = list(range(n))
    parts = [shard(items, r, world) for r in range(world)]
    assert sorted(x for p in parts for x in p) == items
    assert max(map(len, parts)) - min(map(len, parts)) <= 1  # no padding: sizes differ by at most one
    assert shard(range(n), 0, 1) == items


def test_leave_distributed_destroys_a_joined_group():
    import datetime
    import socket

    import torch.distributed as dist

    runtime.leave_distributed()  # no group: a no-op
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1,
                            timeout=datetime.timedelta(seconds=30))
    try:
        assert dist.is_initialized() and rank_world() == (0, 1)
        runtime.barrier(DistInfo(world=1))  # one process: no collective
    finally:
        runtime.leave_distributed()
    assert not dist.is_initialized()
