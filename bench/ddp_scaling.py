"""DDP scaling of the GRAM-C training step on this machine: 1 process vs 2 (torchrun, gloo, CPU).

    .venv/bin/python bench/ddp_scaling.py [--steps 12] [--warmup 2] [key.sub=value ...]

Builds the tiny GRAM-C assets once (synthetic data), then times `--steps` optimiser steps of
`Trainer.train_step` (after `--warmup` untimed ones) with `train.batch_size` targets per process
and micro-batch, once in 1 process and once under `torchrun --nproc_per_node=2`; every process
uses one intra-op thread, so 2 processes use the 2 cores. Reports global samples/s and target
tokens/s, the speed-up and the scaling efficiency (speed-up / 2), and writes
bench/results/ddp_scaling.json. Weak scaling: each process keeps its per-process batch.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULTS = [
    "data.synthetic.num_users=300", "data.synthetic.num_items=120", "data.max_his=10", "ids.vocab_size=500",
    "ids.clusters=8", "ids.levels=2", "gcn.dim=16", "gcn.epochs=3", "gcn.eval_every=0", "model.similar_items=3",
    "model.passage_len=48", "model.user_passage_len=64", "train.batch_size=16", "run.device=cpu",
]


def worker(args: argparse.Namespace) -> None:
    import torch
    import torch.distributed as dist

    from gramc.config import load_config
    from gramc.train.batching import Batcher
    from gramc.recipes.train_gramc import gramc_parts
    from gramc.runtime import init_distributed
    from gramc.train.trainer import Trainer

    torch.set_num_threads(1)
    cfg = load_config(None, [f"run.out={args.assets}", *DEFAULTS, *args.overrides])
    info = init_distributed("cpu")
    parts = gramc_parts(cfg, info)
    trainer = Trainer(parts.model, cfg.train, total_steps=1000, info=info)
    plan = Batcher.from_config(cfg, parts.train_samples, info.rank, info.world).plan(0)
    if plan.num_steps < args.warmup + args.steps:
        raise SystemExit(f"only {plan.num_steps} steps per epoch; lower --steps or enlarge the dataset")
    for i in range(args.warmup):
        trainer.train_step([parts.collate(mb).to(info.device) for mb in plan.step(i)])
    if info.distributed:
        dist.barrier()
    t0 = time.perf_counter()
    samples = tokens = 0
    data_s = 0.0
    for i in range(args.warmup, args.warmup + args.steps):
        t = time.perf_counter()
        batches = [parts.collate(mb).to(info.device) for mb in plan.step(i)]
        data_s += time.perf_counter() - t
        st = trainer.train_step(batches)
        samples += st.samples
        tokens += st.tokens
    if info.distributed:
        dist.barrier()
    wall = time.perf_counter() - t0
    if info.is_main:
        Path(args.result).write_text(json.dumps({
            "world": info.world, "steps": args.steps, "batch_size_per_process": cfg.train.batch_size,
            "samples": samples, "tokens": tokens, "seconds": wall, "samples_per_s": samples / wall,
            "tokens_per_s": tokens / wall, "data_s_rank0": data_s}))
    if info.distributed:
        dist.destroy_process_group()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--assets", default=str(ROOT / "runs" / "bench_ddp_assets"))
    p.add_argument("--result", default="")
    p.add_argument("--timeout", type=int, default=600)
    p.add_argument("overrides", nargs="*")
    args = p.parse_args()
    if args.worker:
        worker(args)
        return

    env = dict(os.environ, OMP_NUM_THREADS="1")
    py = sys.executable
    torchrun = str(Path(py).with_name("torchrun"))
    common = [str(Path(__file__).resolve()), "--worker", "--assets", args.assets, "--steps", str(args.steps),
              "--warmup", str(args.warmup), *args.overrides]
    results = {}
    out_dir = ROOT / "bench" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    # build the assets once, untimed (first launch of the 1-process run does it)
    for world in (1, 2):
        res = out_dir / f".ddp_scaling_{world}.json"
        cmd = ([py] if world == 1 else [torchrun, "--standalone", f"--nproc_per_node={world}"]) + common + [
            "--result", str(res)]
        print(f"world={world}: {' '.join(cmd[:3])} ...", flush=True)
        subprocess.run(cmd, cwd=ROOT, env=env, check=True, timeout=args.timeout)
        results[world] = json.loads(res.read_text())
        res.unlink()
    one, two = results[1], results[2]
    speedup = two["samples_per_s"] / one["samples_per_s"]
    summary = {
        "machine": {"cpus": os.cpu_count(), "loadavg_at_end": os.getloadavg()},
        "command": " ".join(["bench/ddp_scaling.py", *sys.argv[1:]]),
        "config_overrides": DEFAULTS + list(args.overrides),
        "one_process": one, "two_processes": two,
        "speedup_samples_per_s": speedup, "scaling_efficiency": speedup / 2,
    }
    from gramc.io import write_json

    write_json(out_dir / "ddp_scaling.json", summary)
    print(f"1 process : {one['samples_per_s']:.2f} samples/s ({one['tokens_per_s']:.1f} target tokens/s)")
    print(f"2 processes: {two['samples_per_s']:.2f} samples/s ({two['tokens_per_s']:.1f} target tokens/s)")
    print(f"speed-up {speedup:.2f}x, efficiency {speedup / 2:.0%}; load average {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} CPUs -> bench/results/ddp_scaling.json")


if __name__ == "__main__":
    main()
