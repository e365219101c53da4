"""kill -9 during every kind of atomic write, at random points: the previous output stays
readable at its path, and the next write succeeds and leaves no temporaries behind.

Each loop forks a child that rewrites the output over and over and SIGKILLs it after a random
delay (at least 10 kill points per kind, seeded); the parent then reads the output back. Tiny
synthetic data keeps each loop to a few seconds. The last test kills one rank of a 2-process
DDP training (torchrun, gloo) and checks that the resumed run equals an uninterrupted one.
"""

from __future__ import annotations

import json
import os
import random
import signal
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import pytest
import torch
from tqdm import tqdm

from gramc.config import load_config

KILLS = 12


def _litter(path: Path) -> list[str]:
    """What killed writes left beside `path` (its lock file `.<name>.lock` stays by design: it holds
    no lock once its process is gone, docs/runs.md)."""
    return sorted(p.name for p in path.parent.iterdir()
                  if p.name.startswith(f".{path.name}.") and p.name != f".{path.name}.lock")


def kill_loop(path: Path, write: Callable[[int], None], read: Callable[[], int], seed: int) -> dict:
    """Write once, then KILLS times: fork a child rewriting `path` in a loop, SIGKILL it after a
    random delay and check `read()` (which returns the version it found) still works. Returns
    counts of the versions seen and of kills that left a temporary (i.e. landed inside a write)."""
    write(0)  # the first write pays one-off imports: time the second
    t0 = time.perf_counter()
    write(0)
    one = time.perf_counter() - t0
    assert read() == 0
    rng = random.Random(seed)
    seen, mid_write = set(), 0
    for k in range(1, KILLS + 1):
        ready_r, ready_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: rewrite until killed
            try:
                os.close(ready_r)
                # tqdm's default write lock holds a semaphore shared with the parent and every earlier
                # child: one killed while holding it would leave it locked for good (the parent's
                # tqdm_monitor thread and the next child would wait forever). A lock of its own.
                tqdm.set_lock(threading.RLock())
                torch.set_num_threads(1)
                t = time.perf_counter()
                write(k * 1000)
                # one whole write done: say how long it took here (on a loaded CPU far longer than
                # the parent's `one`, and a kill timed by `one` would land before the write began)
                os.write(ready_w, struct.pack("d", time.perf_counter() - t))
                v = 0
                while True:
                    v += 1
                    write(k * 1000 + v)
            finally:
                os._exit(1)
        os.close(ready_w)
        child_one = struct.unpack("d", os.read(ready_r, 8))[0]  # the delay counts from then, scaled to it
        os.close(ready_r)
        time.sleep(rng.uniform(0.2, 2.5) * max(one, child_one))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        seen.add(read())  # the previous (or a complete newer) output, never a broken one
        mid_write += bool(_litter(path))
    write(1)
    assert read() == 1 and _litter(path) == []  # the next write succeeds and sweeps the litter
    return {"versions": len(seen), "mid_write": mid_write}


def test_kill_during_dataset_write(tmp_path):
    from gramc.data.dataset import SeqDataset
    from gramc.data.prepare import write_dataset
    from train_toy import toy_dataset

    out = tmp_path / "data"
    cfg = load_config(None, [])

    def write(v: int) -> None:
        ds = toy_dataset(40, 30, seed=v % 7)
        ds.meta = {"version": v}
        write_dataset(ds, out, cfg, {})

    def read() -> int:
        ds = SeqDataset.load(out)
        ref = toy_dataset(40, 30, seed=ds.meta["version"] % 7)  # the version it says it is, complete
        assert ds.sequences == ref.sequences and ds.item_ids == ref.item_ids
        return ds.meta["version"]

    stats = kill_loop(out, write, read, seed=1)
    assert stats["mid_write"] >= 1


def test_kill_during_gcn_write(tmp_path):
    from gramc.graph.artifacts import GcnArtifacts
    from gramc.graph.lightgcn import train_lightgcn
    from gramc.io import read_json
    from train_toy import toy_dataset

    ds = toy_dataset(40, 30)
    out = tmp_path / "gcn"

    def write(v: int) -> None:
        cfg = load_config(None, ["gcn.dim=8", "gcn.epochs=1", "gcn.eval_every=0", "gcn.similar_k=5",
                                 f"gcn.seed={v}"]).gcn
        train_lightgcn(ds, cfg, out, progress=False)

    def read() -> int:
        art = GcnArtifacts.load(out)
        assert art.embeddings.shape == (ds.num_items + 1, 8) and len(art.mapping) == ds.num_items
        return int(read_json(out / "gcn_meta.json")["hyper_parameters"]["seed"])

    stats = kill_loop(out, write, read, seed=2)
    assert stats["mid_write"] >= 1


def test_kill_during_checkpoint_write(tmp_path):
    from gramc.checkpoint import TrainState, load_checkpoint, rng_state, save_checkpoint
    from gramc.train.optim import build_optimizer, build_scheduler
    from train_toy import build_model, toy_config, toy_dataset

    ds = toy_dataset(12)
    cfg = toy_config()
    model = build_model(ds, 1)
    opt = build_optimizer(model, cfg.train)
    sched = build_scheduler(opt, 10, cfg.train.warmup)
    folder = tmp_path / "checkpoints" / "last"

    def write(v: int) -> None:
        with torch.no_grad():
            for p in model.parameters():
                p.fill_(float(v))
        save_checkpoint(folder, model, opt, sched, TrainState(step=v), [rng_state()])

    def read() -> int:
        m = build_model(ds, 2)
        o = build_optimizer(m, cfg.train)
        state = load_checkpoint(folder, m, o, build_scheduler(o, 10, cfg.train.warmup))
        assert all(torch.all(p == float(state.step)) for p in m.parameters())  # weights of that step
        return state.step

    stats = kill_loop(folder, write, read, seed=3)
    assert stats["mid_write"] >= 1


def test_kill_during_pipeline_stage_write(tmp_path):
    from gramc.io import read_json, sha256_file
    from gramc.pipeline.pipeline import STAGE_FILE, Stage, run_stage

    folder = tmp_path / "eval"

    def write(v: int) -> None:
        def build(out: Path) -> dict:
            blob = out / "predictions.jsonl"
            blob.write_bytes(os.urandom(1 << 19))
            return {"sha256": sha256_file(blob), "version": v}

        run_stage(Stage("evaluate", folder, {"version": v}, {}, build), log=lambda s: None)

    def read() -> int:
        rec = read_json(folder / STAGE_FILE)
        assert rec["summary"]["sha256"] == sha256_file(folder / "predictions.jsonl")  # record matches content
        return rec["summary"]["version"]

    stats = kill_loop(folder, write, read, seed=4)
    assert stats["mid_write"] >= 1


ROOT = Path(__file__).resolve().parents[1]


def _torchrun(out: Path, mode: str) -> subprocess.CompletedProcess:
    torchrun = Path(sys.executable).with_name("torchrun")
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(ROOT / "tests"), str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([str(torchrun), "--nproc_per_node=2", "--master_port=0", "--standalone",
                           str(ROOT / "tests" / "ddp_kill_helper.py"), str(out), mode],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)


def test_ddp_run_killed_on_one_rank_resumes_to_the_uninterrupted_result(tmp_path):
    from safetensors.torch import load_file

    killed = _torchrun(tmp_path, "kill")
    assert killed.returncode != 0  # rank 1 died by SIGKILL, torchrun stopped the group
    state = json.loads((tmp_path / "cut" / "checkpoints" / "last" / "state.json").read_text())
    assert 1 <= state["step"] < 6 and not state["done"]  # stopped part-way
    resumed = _torchrun(tmp_path, "resume")
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert f"resumed {tmp_path / 'cut'} at epoch" in resumed.stderr
    a = load_file(str(tmp_path / "full" / "checkpoints" / "last" / "model.safetensors"))
    b = load_file(str(tmp_path / "cut" / "checkpoints" / "last" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [p.name for p in (tmp_path / "cut" / "checkpoints").iterdir() if p.name.startswith(".")] == []


if not hasattr(os, "fork"):  # pragma: no cover
    pytestmark = pytest.mark.skip("kill loops need os.fork")
