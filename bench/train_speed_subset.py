"""One Beauty-subset GRAM-C model on the fast CPU path, against the committed run of the same seed.

The model is trained and tested by the evidence bench, one 1-thread lane, nothing else on the CPU:

    python bench/evidence_beauty.py --work WORK --models gramc-user_passage --threads 1 --lanes 1 \\
        --results WORK/evidence_beauty.json --doc WORK/benchmarks.md
    python bench/train_speed_subset.py --work WORK      # -> bench/results/train_speed_subset.json

This script reads what that run left (its results row, its run folder's log and files, its kept
per-user test ranks) and sets it beside the committed `gramc-user_passage-rerun` row of
bench/results/evidence_beauty.json (same seed, same schedule, fp32 training on an earlier machine):
wall time of the optimiser steps, of the whole 12-epoch schedule (steps + 12 validations on 1,000
users + the patience continuation), of the test pass, and test ndcg@10 with the paired 95% interval
of new - old on every test user. It also copies the new run's per-user ranks into bench/results so
the pairing can be recomputed on another machine.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import json
import shutil
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from gramc.io import read_json, write_json  # noqa: E402
from gramc.metrics import paired_bootstrap_ci, per_user_metrics  # noqa: E402

NAME = "gramc-user_passage"
OLD = "gramc-user_passage-rerun"
RESULTS = ROOT / "bench" / "results"


def ranks_by_user(path: Path) -> dict[int, int]:
    """The kept per-user test ranks (a gzip JSON of users and 0-based ranks, -1 = missed)."""
    with gzip.open(path, "rt", encoding="utf-8") as f:
        data = json.load(f)
    return dict(zip(data["users"], data["ranks"]))


def _when(stamp: str) -> dt.datetime:
    return dt.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S%z")


def schedule_minutes(train: Path) -> dict[str, float]:
    """Minutes of the optimiser steps (epoch records) and of the whole train stage (run start to the
    last log write, validations and the continuation included)."""
    records = [json.loads(line) for line in train.joinpath("log.jsonl").read_text(encoding="utf-8").splitlines()]
    steps_s = sum(r["seconds"] for r in records if r.get("kind") == "epoch")
    start = _when(read_json(train / "run_info.json")["time"])
    end = dt.datetime.fromtimestamp(train.joinpath("log.jsonl").stat().st_mtime, tz=dt.timezone.utc)
    return {"steps_min": steps_s / 60, "schedule_min": (end - start).total_seconds() / 60}


def paired_row(new: dict[int, int], old: dict[int, int], ks: list[int], seed: int = 2023) -> dict:
    users = sorted(new)
    if sorted(old) != users:
        raise SystemExit("the two runs' kept ranks cover different test users: not pairable")
    a = per_user_metrics(np.array([old[u] for u in users]), ks)
    b = per_user_metrics(np.array([new[u] for u in users]), ks)
    return {"users": len(users), "diff_new_minus_old": paired_bootstrap_ci(a, b, n=1000, seed=seed)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", required=True, help="the evidence bench's --work folder of the run")
    p.add_argument("--out", default=str(RESULTS / "train_speed_subset.json"))
    args = p.parse_args(argv)
    work = Path(args.work)
    row = read_json(work / "evidence_beauty.json")["subset"]["models"][NAME]
    old = read_json(RESULTS / "evidence_beauty.json")["subset"]["models"][OLD]
    run = work / "models" / NAME
    info = read_json(run / "train" / "run_info.json")
    kept = RESULTS / "train_speed_subset_ranks.json.gz"
    shutil.copyfile(work / "evidence_beauty_ranks" / "subset" / f"{NAME}.json.gz", kept)
    ks = [5, 10, 20]
    test = read_json(run / "test" / "metrics.json")
    report = {
        "commands": [("python " + " ".join(read_json(run / "pipeline_run_info.json")["command"])).replace(str(work), "WORK"),
                     "python bench/train_speed_subset.py --work WORK"],
        "machine": {"cpu": info["versions"].get("cpu"), "torch": info["versions"].get("torch"),
                    "capability": info["versions"].get("torch_cpu_capability"), "threads": 1,
                    "load": "one 1-thread lane, nothing else on the CPU during the run"},
        "git_commit": info.get("git_commit"), "date": info["time"][:10],
        "precision": info.get("precision"), "cpu_allocator": info.get("cpu_allocator"),
        "new": {**schedule_minutes(run / "train"), "test_pass_min": test["time_s"] / 60,
                "test": {k: row["test"]["metrics"][k] for k in ("hit@10", "ndcg@10")},
                "test_ci": {k: row["test"]["ci"][k] for k in ("hit@10", "ndcg@10")},
                "best_valid": row["valid"], "continued": row.get("continued"), "ranks_kept": str(kept.relative_to(ROOT))},
        "old": {"row": OLD, "steps_min": old["train_seconds"] / 60, "schedule_min": old["train_stage_seconds"] / 60,
                "test_pass_min": old["test"]["time_s"] / 60,
                "test": {k: old["test"]["metrics"][k] for k in ("hit@10", "ndcg@10")},
                "note": "fp32 training, same seed and schedule, earlier machine (CPU model not recorded)"},
        "paired": paired_row(ranks_by_user(kept), ranks_by_user(ROOT / old["ranks_kept"]), ks),
    }
    new, was = report["new"], report["old"]
    report["speedup"] = {"steps": was["steps_min"] / new["steps_min"],
                         "schedule": was["schedule_min"] / new["schedule_min"],
                         "schedule_plus_test": (was["schedule_min"] + was["test_pass_min"])
                         / (new["schedule_min"] + new["test_pass_min"])}
    write_json(args.out, report)
    d = report["paired"]["diff_new_minus_old"]["ndcg@10"]
    print(f"steps {new['steps_min']:.1f} min (was {was['steps_min']:.1f}), schedule {new['schedule_min']:.1f} min "
          f"(was {was['schedule_min']:.1f}), test pass {new['test_pass_min']:.1f} min; test ndcg@10 "
          f"{new['test']['ndcg@10']:.4f} (was {was['test']['ndcg@10']:.4f}), paired new - old {d['mean']:+.4f} "
          f"[{d['lo']:+.4f}, {d['hi']:+.4f}]\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
