"""Training step: cross-attention keys/values gathered from the distinct passages vs projected
from the fused memory, on the batches of a trained run (same weights, same batches, one process).

* `projected`: `t5.cross_kv(memory)` with `memory, mask = GramC.memory(batch)`, what training did
  until this bench: every decoder layer projects the memory's B x M slots (M = the longest sample's
  real tokens, so most slots of a batch of mixed history lengths are padding).
* `gathered`: `GramC.memory_kv(batch)`, what training does now: every decoder layer projects the
  distinct passage states of the batch (user passages, shared item rows) and the passage-position
  table, then gathers them per sample. The maps are linear, so the two are equal
  (tests/test_model_gramc.py::test_cross_kv_of_the_distinct_passages_equals_projecting_the_fused_memory).

Forward + backward of the target-ID loss on the run's first training batches of an epoch, arms interleaved (the order alternating per
round), timed in this process's CPU seconds (`time.process_time`), which other jobs' load does not
inflate (it still shares caches with them: say so when quoting).

    .venv/bin/python bench/fused_kv.py --run RUN_FOLDER        # writes bench/results/fused_kv.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from gramc.data.splits import samples  # noqa: E402
from gramc.ids.tokens import IGNORE_INDEX  # noqa: E402
from gramc.io import write_json  # noqa: E402
from gramc.model.inputs import Collator  # noqa: E402
from gramc.model.runs import load_model_from_run  # noqa: E402
from gramc.model.t5 import shift_right  # noqa: E402
from gramc.train.batching import global_micro_batches, make_units  # noqa: E402


def loss_projected(model, batch) -> torch.Tensor:
    memory, mask = model.memory(batch)
    logits, _ = model.t5.decode(shift_right(batch.labels)[:, None, :], model.t5.cross_kv(memory), mask)
    return F.cross_entropy(logits[:, 0].float().reshape(-1, logits.shape[-1]), batch.labels.reshape(-1),
                           ignore_index=IGNORE_INDEX, reduction="sum")


def loss_gathered(model, batch) -> torch.Tensor:
    return model.token_losses(batch).sum()


ARMS = {"projected": loss_projected, "gathered": loss_gathered}


def timed(model, fn, batch) -> float:
    model.zero_grad(set_to_none=True)
    t = time.process_time()
    fn(model, batch).backward()
    return time.process_time() - t


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="a trained run folder (its config, assets and last checkpoint)")
    p.add_argument("--batches", type=int, default=6, help="measured batches (each through both arms)")
    p.add_argument("--batch-size", type=int, default=0, help="samples per batch (0: the run's train.batch_size)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--epoch", type=int, default=0, help="the first batches of this epoch's plan")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "fused_kv.json"))
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    model, assets, cfg = load_model_from_run(a.run, "last", progress=False)
    collate = Collator(assets.cache, cfg, gcn_rows=assets.gcn_rows)
    pool = samples(assets.ds, "train", cfg.data.max_his)
    size = a.batch_size or cfg.train.batch_size
    plan = global_micro_batches(make_units(pool, cfg.train.batching, size), size, cfg.run.seed, a.epoch)
    batches = [collate(b) for b in plan[: a.batches + 1]]  # the run's own batching (train.batching)

    model.eval()  # the two arms compute the same loss (no dropout here)
    with torch.no_grad():
        check = {k: float(fn(model, batches[0])) for k, fn in ARMS.items()}
    model.train()
    for fn in ARMS.values():  # warm-up on the extra batch
        timed(model, fn, batches[0])
    secs: dict[str, list[float]] = {k: [] for k in ARMS}
    slots = distinct = 0
    for i, batch in enumerate(batches[1:]):
        order = list(ARMS) if i % 2 == 0 else list(ARMS)[::-1]
        for k in order:
            secs[k].append(timed(model, ARMS[k], batch))
        slots += batch.user_input.shape[0] * model.memory_width(batch, model.prefix is not None)
        distinct += batch.user_mask.numel() + batch.item_mask.numel()
        print(f"batch {i + 1}/{a.batches}: " + ", ".join(f"{k} {secs[k][-1]:.2f} s" for k in ARMS), flush=True)
    mean = {k: sum(v) / len(v) for k, v in secs.items()}
    report = {
        "command": "python bench/fused_kv.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "run": str(a.run),
        "machine": f"{platform.machine()} {torch.get_num_threads()} threads, torch {torch.__version__}",
        "placement": cfg.model.prefix.placement if cfg.model.prefix.enabled else "off",
        "batch_size": size, "batches": a.batches,
        "loss_check": {**check, "abs_diff": abs(check["projected"] - check["gathered"])},
        "memory_slots_per_batch": slots / a.batches, "distinct_passage_tokens_per_batch": distinct / a.batches,
        "fwd_bwd_cpu_s": mean, "per_batch_cpu_s": secs,
        "speedup_gathered_vs_projected": mean["projected"] / mean["gathered"],
    }
    print(json.dumps({k: report[k] for k in ("loss_check", "memory_slots_per_batch",
                                             "distinct_passage_tokens_per_batch", "fwd_bwd_cpu_s",
                                             "speedup_gathered_vs_projected")}, indent=1))
    write_json(a.out, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
