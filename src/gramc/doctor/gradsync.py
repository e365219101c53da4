"""`gramc doctor grad-sync`: are gradients synchronised exactly once across processes?

The configured GRAM-C model takes a few optimiser steps on a small slice of training samples
through gramc's own `Trainer`, twice: once in one process (world size 1, no process group) over
all micro-batches of a step, and once under `torchrun` with N processes (gloo on CPU, N = 2; on
GPU, nccl with every visible GPU), each rank taking one of those micro-batches. Dropout is off and
the model runs in float64, so the two runs differ only by summation order (~1e-15). Both runs
happen inside each torchrun worker (the 1-process run first, without any collective). The parent
process resolves the assets once (`Assets.from_config`) and hands the workers what the model and
the collator need (passage cache, GCN table and rows, vocabulary size) and the planned samples, in
one file, so no worker re-reads the dataset.

The trainer's `after_sync(named_grads)` hook exposes the synchronised gradients. Per step:

* `grad_sync.ratio`: <g_N, g_1> / <g_1, g_1> on every rank (1.0 expected, within 1e-6): equal to N
  on every rank means gradients were reduced twice (a SUM all-reduce on top of DDP's average);
  a ratio that differs across ranks means they were not synchronised (e.g. `ddp.module(batch)`
  was called, bypassing DDP's reducer: the bug of the GRAM code the seed report started from);
* `grad_sync.ranks_agree`: every rank holds the same gradient;
* `grad_sync.params_across_ranks`: parameters stay identical across ranks after each step;
* `grad_sync.params_vs_single`: the N-process parameters match the 1-process ones (relative to the
  size of the update; AdamW hides a doubled gradient almost entirely, as the notes measured);
* `grad_sync.no_grad_params`: trainable parameters that received no gradient.

`run_grad_sync(cfg, ...)` launches the workers and returns the checks; `python -m
gramc.doctor.gradsync` is the worker (started by torchrun). `fault` passes the trainer's
test-only switch ("double_reduce", "module_call") to prove the checks catch both faults.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
import torch.distributed as dist

from ..checks import Check, check, failed, passed
from ..config import Config, dump_yaml, load_config
from ..data.splits import training_samples
from ..ids.trie import trie_for
from ..io import write_json
from ..model.assets import Assets
from ..model.dense import DenseTables
from ..model.gramc import GramC
from ..model.inputs import Collator
from ..runtime import DistInfo, init_distributed, leave_distributed, rank_world
from ..train.trainer import Trainer
from ..seeding import seeded

GRAD_TOL = 1e-6  # |ratio - 1| and relative gradient error allowed (float64: ~1e-15 expected)
RANK_TOL = 1e-9  # relative spread across ranks of gradients / parameters
PARAM_TOL = 1e-4  # parameter difference vs the 1-process run, relative to the update size
DEFAULT_STEPS = 2
DEFAULT_PER_RANK = 2  # training samples per rank per step


def sync_config(cfg: Config, per_rank: int = DEFAULT_PER_RANK, device: str = "cpu") -> Config:
    """The config with every source of rank-dependent randomness off (dropout, prefix dropout)."""
    c = copy.deepcopy(cfg)
    c.model.dropout = 0.0
    c.model.prefix.dropout = 0.0
    c.model.prefix.prefix_dropout = 0.0
    c.train.bf16 = False
    c.train.batch_size = per_rank
    c.train.grad_accum = 1
    c.run.device = device
    return c


def plan_steps(train: Sequence[Any], steps: int, world: int, per_rank: int) -> list[list[list[Any]]]:
    """`plan[s][r]`: the samples of rank r at step s (a spread-out slice of the training samples)."""
    need = steps * world * per_rank
    if len(train) < need:
        raise ValueError(f"grad-sync needs {need} training samples, the dataset has {len(train)}")
    stride = max(1, len(train) // need)
    pool = list(train[::stride][:need])
    return [[pool[(s * world + r) * per_rank: (s * world + r + 1) * per_rank] for r in range(world)]
            for s in range(steps)]


def _flat(tensors: dict[str, torch.Tensor], names: Sequence[str], like: dict[str, torch.Tensor] | None = None
          ) -> torch.Tensor:
    """All `names` concatenated (zeros, shaped as in `like`, where `tensors` lacks one)."""
    parts = [tensors[n].detach().reshape(-1).double() if n in tensors
             else torch.zeros_like(like[n]).reshape(-1).double() for n in names]  # type: ignore[index]
    return torch.cat(parts) if parts else torch.zeros(0)


def _spread(x: torch.Tensor) -> float:
    """max over elements of (max - min across ranks), relative to max |x|; 0 on one process."""
    if rank_world()[1] == 1:
        return 0.0
    hi, lo = x.clone(), x.clone()
    dist.all_reduce(hi, op=dist.ReduceOp.MAX)
    dist.all_reduce(lo, op=dist.ReduceOp.MIN)
    scale = float(hi.abs().max().clamp(min=1e-300)) if hi.numel() else 1.0
    return float((hi - lo).abs().max()) / scale if hi.numel() else 0.0


def _build_model(cfg: Config, bundle: dict[str, Any], device: torch.device) -> torch.nn.Module:
    table = bundle["gcn_table"] if cfg.model.prefix.enabled else None
    with seeded(cfg.run.seed):  # the same initial weights for the reference and every DDP run
        model = GramC(cfg.model, cfg.data.max_his, bundle["vocab_size"], table, bundle.get("trie"), bundle.get("dense"))
    return model.double().to(device)


def make_bundle(cfg: Config, assets: Any, world: int, steps: int) -> dict[str, Any]:
    """What a worker needs from the assets: passage cache, GCN table and rows, vocabulary size, and
    the planned samples (`plan[step][rank]`)."""
    train = training_samples(assets.ds, cfg.data.max_his, cfg.train.indexing, cfg.run.seed)
    plan = plan_steps(train, steps, world, cfg.train.batch_size)
    table = GramC.prefix_table(cfg, assets)
    trie = trie_for(assets.item_ids) if cfg.model.softmax == "trie" else None  # the trie softmax's
    dense = DenseTables.from_assets(cfg.model.dense, assets) if cfg.model.dense.enabled else None
    return {"cache": assets.cache, "gcn_rows": assets.gcn_rows, "gcn_table": table,
            "vocab_size": assets.tokenizer.vocab_size, "plan": plan, "trie": trie, "dense": dense}


def worker(cfg: Config, bundle: dict[str, Any], steps: int, faults: Sequence[Optional[str]], out: Optional[Path]
           ) -> dict[str, Any]:
    """One torchrun rank: the 1-process reference run, then one DDP run per fault mode (None =
    healthy), each compared with the reference. Rank 0 writes `{mode: summary}` to `out`."""
    t0 = time.perf_counter()
    info = init_distributed(cfg.run.device)
    collate = Collator(bundle["cache"], cfg, gcn_rows=bundle["gcn_rows"])
    plan = bundle["plan"]
    if len(plan) < steps or any(len(step) != info.world for step in plan):
        raise ValueError(f"the plan has {len(plan)} steps for {len(plan[0]) if plan else 0} ranks; "
                         f"expected {steps} steps for {info.world}")
    dev = info.device
    total = max(20, steps)

    # 1 process: every rank's micro-batch accumulated in one step (world size 1, no collective)
    ref = _build_model(cfg, bundle, dev)
    names = [n for n, p in ref.named_parameters() if p.requires_grad]
    init = {n: p.detach().clone() for n, p in ref.named_parameters()}
    ref_grads: list[dict[str, torch.Tensor]] = []
    ref_params: list[dict[str, torch.Tensor]] = []
    ref_missing: set[str] = set()

    def keep_ref(g: dict[str, torch.Tensor]) -> None:
        ref_missing.update(n for n in names if n not in g)
        ref_grads.append({n: v.detach().clone() for n, v in g.items()})

    single = Trainer(ref, cfg.train, total_steps=total, info=DistInfo(device=dev), after_sync=keep_ref)
    for s in range(steps):
        single.train_step([collate(mb).to(dev) for mb in plan[s]])
        ref_params.append({n: p.detach().clone() for n, p in ref.named_parameters()})
    del single, ref
    t_ref = time.perf_counter()

    summaries = {}
    for fault in faults:
        t1 = time.perf_counter()
        summaries[fault or "none"] = _distributed_run(cfg, bundle, collate, plan, info, steps, total, fault, names,
                                                      init, ref_grads, ref_params, ref_missing)
        summaries[fault or "none"]["seconds"] = {"reference": round(t_ref - t0, 2),
                                                 "distributed": round(time.perf_counter() - t1, 2)}
    if info.is_main and out is not None:
        write_json(out, summaries)
    leave_distributed()
    return summaries


def _distributed_run(cfg: Config, bundle: dict[str, Any], collate: Any, plan: list, info: Any, steps: int, total: int,
                     fault: Optional[str], names: list[str], init: dict, ref_grads: list, ref_params: list,
                     ref_missing: set) -> dict[str, Any]:
    """The N-process run (one rank's share), compared step by step with the 1-process run."""
    dev = info.device
    model = _build_model(cfg, bundle, dev)
    records: list[dict[str, Any]] = []
    missing: set[str] = set()

    def compare(g: dict[str, torch.Tensor]) -> None:
        s = len(records)
        missing.update(n for n in names if n not in g)
        common = [n for n in names if n in g and n in ref_grads[s]]
        dot = ref_sq = diff_sq = 0.0
        per_param: list[tuple[float, str]] = []
        total_ref = sum(float(ref_grads[s][n].double().pow(2).sum()) for n in common)
        for n in common:
            a, b = g[n].detach().double(), ref_grads[s][n].double()
            d, r2 = float((a * b).sum()), float(b.pow(2).sum())
            dot, ref_sq, diff_sq = dot + d, ref_sq + r2, diff_sq + float((a - b).pow(2).sum())
            if r2 > 1e-12 * total_ref:
                per_param.append((d / r2, n))
        ratios = [x for x, _ in per_param]
        worst = max(per_param, key=lambda t: abs(t[0] - 1.0)) if per_param else (1.0, "")
        records.append({"step": s, "ratio": dot / ref_sq if ref_sq else float("nan"),
                        "rel_err": (diff_sq / ref_sq) ** 0.5 if ref_sq else float("nan"),
                        "param_ratio_min": min(ratios) if ratios else None,
                        "param_ratio_max": max(ratios) if ratios else None,
                        "worst_param": worst[1], "grad_spread": _spread(_flat(g, names, init))})

    trainer = Trainer(model, cfg.train, total_steps=total, info=info, fault=fault, after_sync=compare)
    for s in range(steps):
        mine = plan[s][info.rank]
        trainer.train_step([collate(mine).to(dev)])
        now = {n: p.detach() for n, p in model.named_parameters()}
        upd = (_flat(ref_params[s], names) - _flat(init, names)).norm()
        diff = (_flat(now, names) - _flat(ref_params[s], names)).norm()
        records[s]["param_vs_single"] = float(diff / upd.clamp(min=1e-300))
        records[s]["param_spread"] = _spread(_flat(now, names))
    result = {"rank": info.rank, "steps": records, "no_grad": sorted(missing | ref_missing)}
    everyone = [result]
    if info.distributed:
        everyone = [None] * info.world
        dist.all_gather_object(everyone, result)
    summary = {"world": info.world, "device": str(dev), "backend": dist.get_backend() if info.distributed else "none",
               "steps": steps, "per_rank": cfg.train.batch_size, "fault": fault, "dtype": "float64",
               "ranks": everyone}
    return summary


# --------------------------------------------------------------------------------------------
# From worker results to checks
# --------------------------------------------------------------------------------------------


def grad_sync_checks(summary: dict[str, Any]) -> list[Check]:
    """The checks of a worker summary (see the module docstring)."""
    world = int(summary["world"])
    ranks = summary["ranks"]
    steps = int(summary["steps"])
    setup = {k: summary[k] for k in ("world", "backend", "device", "steps", "per_rank", "dtype")}
    if summary.get("seconds"):
        setup["worker_seconds"] = summary["seconds"]
    if summary.get("fault"):
        setup["injected_fault"] = summary["fault"]
    out = [passed("grad_sync.setup", setup)]

    ratios = [[r["steps"][s]["ratio"] for r in ranks] for s in range(steps)]  # [step][rank]
    flat = [x for row in ratios for x in row]
    rel_err = max(r["steps"][s]["rel_err"] for r in ranks for s in range(steps))
    lo = min((r["steps"][s]["param_ratio_min"] for r in ranks for s in range(steps)
              if r["steps"][s]["param_ratio_min"] is not None), default=None)
    hi = max((r["steps"][s]["param_ratio_max"] for r in ranks for s in range(steps)
              if r["steps"][s]["param_ratio_max"] is not None), default=None)
    worst = max(abs(x - 1.0) for x in flat)
    across = max(max(row) - min(row) for row in ratios)
    value = {"world": world, "ratio": [[round(x, 9) for x in row] for row in ratios],
             "max_abs_ratio_minus_1": worst, "rel_err": rel_err, "param_ratio_range": [lo, hi]}
    if worst <= GRAD_TOL and rel_err <= GRAD_TOL:
        out.append(passed("grad_sync.ratio", value))
    elif world > 1 and across <= GRAD_TOL * world and all(abs(x - world) <= 1e-3 * world for x in flat):
        out.append(failed("grad_sync.ratio", value,
                          f"the {world}-process gradient is {flat[0]:.6g}x the 1-process gradient on every rank: "
                          f"gradients are reduced twice (an extra SUM all-reduce on top of DDP's average). "
                          f"Remove the manual all_reduce or stop dividing by world size; under AdamW the "
                          f"update barely changes, so this alone does not explain slow learning"))
    elif world > 1 and across > GRAD_TOL:
        out.append(failed("grad_sync.ratio", value,
                          f"the gradient ratio differs across ranks ({', '.join(f'{x:.4g}' for x in ratios[0])} at "
                          f"step 0): each rank kept its own gradient, i.e. the ranks are not synchronised "
                          f"(DDP bypassed, e.g. `ddp.module(batch)` was called). Call the DDP wrapper"))
    else:
        out.append(failed("grad_sync.ratio", value,
                          f"the {world}-process gradient differs from the 1-process gradient (ratio {flat[0]:.6g}, "
                          f"relative error {rel_err:.3g}): the loss is normalised differently per process count; "
                          f"normalise by the global number of target tokens"))

    spread = max(r["steps"][s]["grad_spread"] for r in ranks for s in range(steps))
    out.append(check("grad_sync.ranks_agree", spread <= RANK_TOL, {"max_relative_spread": spread},
                     f"ranks hold different gradients after synchronisation (relative spread {spread:.3g}): DDP's "
                     f"reducer did not run (the wrapped `.module` was called, or no_sync was left on)"))
    pspread = max(r["steps"][s]["param_spread"] for r in ranks for s in range(steps))
    out.append(check("grad_sync.params_across_ranks", pspread <= RANK_TOL, {"max_relative_spread": pspread},
                     f"parameters diverge across ranks after the optimiser step (relative spread {pspread:.3g}): "
                     f"each rank trains its own model; checkpoints then hold rank 0's only"))
    pdiff = max(r["steps"][s]["param_vs_single"] for r in ranks for s in range(steps))
    out.append(check("grad_sync.params_vs_single", pdiff <= PARAM_TOL, {"relative_to_update": pdiff},
                     f"after the optimiser step the {world}-process parameters differ from the 1-process ones by "
                     f"{pdiff:.3g} of the update size: multi-process training is not the same training"))
    no_grad = sorted({n for r in ranks for n in r["no_grad"]})
    out.append(check("grad_sync.no_grad_params", not no_grad, {"count": len(no_grad), "names": no_grad[:10]},
                     f"{len(no_grad)} trainable parameters received no gradient (e.g. {no_grad[:3]}): they are not "
                     f"connected to the loss; freeze or remove them (DDP then also needs find_unused_parameters)"))
    return out


def default_world() -> tuple[int, str]:
    """Processes and device for the check: every visible GPU when there are 2+, else 2 CPU processes."""
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return (n, "cuda") if n >= 2 else (2, "cpu")


def run_grad_sync(cfg: Config, nproc: int = 0, steps: int = DEFAULT_STEPS, per_rank: int = DEFAULT_PER_RANK,
                  fault: Optional[str] = None, timeout: float = 900.0, quiet: bool = False,
                  assets: Any = None) -> list[Check]:
    """Launch `nproc` torchrun workers on the configured model and return the grad-sync checks."""
    return run_grad_sync_modes(cfg, [fault], nproc, steps, per_rank, timeout, quiet, assets)[fault or "none"]


def run_grad_sync_modes(cfg: Config, faults: Sequence[Optional[str]], nproc: int = 0, steps: int = DEFAULT_STEPS,
                        per_rank: int = DEFAULT_PER_RANK, timeout: float = 900.0, quiet: bool = False,
                        assets: Any = None) -> dict[str, list[Check]]:
    """One torchrun launch, one reference run, then one N-process run per fault mode (None = the
    healthy trainer): `{mode or "none": checks}`. `assets`: the config's `Assets` (built if None)."""
    n, device = default_world()
    n = nproc or n
    keys = [f or "none" for f in faults]
    if n < 2:
        return {k: [failed("grad_sync.setup", {"world": n}, "grad-sync needs at least 2 processes (--nproc 2)")]
                for k in keys}
    scfg = sync_config(cfg, per_rank, device)
    if assets is None:
        assets = Assets.from_config(cfg, progress=not quiet)
    try:
        bundle = make_bundle(scfg, assets, n, steps)
    except ValueError as e:
        return {k: [failed("grad_sync.setup", {"world": n}, str(e))] for k in keys}
    with tempfile.TemporaryDirectory(prefix="gramc-gradsync-") as tmp:
        cfg_path = Path(tmp) / "config.yaml"
        cfg_path.write_text(dump_yaml(scfg), encoding="utf-8")
        torch.save(bundle, Path(tmp) / "bundle.pt")
        out = Path(tmp) / "summary.json"
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={n}", "--standalone",
               "-m", "gramc.doctor.gradsync", "--config", str(cfg_path), "--bundle", str(Path(tmp) / "bundle.pt"),
               "--steps", str(steps), "--out", str(out),
               "--faults", ",".join(keys)]
        env = dict(os.environ)
        env.setdefault("OMP_NUM_THREADS", "1")
        if not quiet:
            print(f"grad-sync: {steps} steps x {n} processes ({device}) vs 1 process ...", file=sys.stderr)
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {k: [failed("grad_sync.setup", {"world": n}, f"the workers did not finish within {timeout:.0f}s")]
                    for k in keys}
        if proc.returncode != 0 or not out.is_file():
            tail = (proc.stdout[-1500:] + proc.stderr[-2500:]).strip()
            return {k: [failed("grad_sync.setup", {"world": n, "returncode": proc.returncode},
                               f"the torchrun workers failed: {tail}")] for k in keys}
        summaries = json.loads(out.read_text(encoding="utf-8"))
    seconds = round(time.perf_counter() - t0, 1)
    result = {}
    for k in keys:
        checks = grad_sync_checks(summaries[k])
        checks[0].value["seconds"] = seconds
        result[k] = checks
    return result


def main(argv: Optional[list[str]] = None) -> int:
    """Worker entry point (`torchrun ... -m gramc.doctor.gradsync --config FILE ...`)."""
    p = argparse.ArgumentParser(prog="python -m gramc.doctor.gradsync")
    p.add_argument("--config", required=True)
    p.add_argument("--bundle", required=True, type=Path, help="worker inputs written by run_grad_sync")
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    p.add_argument("--faults", default="none", help="comma-separated modes: none, double_reduce, module_call")
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    faults = [None if f == "none" else f for f in args.faults.split(",")]
    bad = [f for f in faults if f is not None and f not in ("double_reduce", "module_call")]
    if bad:
        p.error(f"unknown fault modes {bad}")
    bundle = torch.load(args.bundle, map_location="cpu", weights_only=False)
    worker(load_config(args.config), bundle, args.steps, faults, args.out)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
