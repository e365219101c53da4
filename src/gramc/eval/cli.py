"""`gramc evaluate`: beam-search evaluation of a trained run's checkpoint on valid or test.

    gramc evaluate --run RUN_DIR [--checkpoint best|last|PATH] --split valid|test|both [--beams 50]
                   [--max-users N] [--out DIR] [--json] [eval.length_penalty=1.0 ...]

Reads RUN_DIR/config.yaml (trailing `key.sub=value` overrides apply on top of it, e.g. eval
settings) and the checkpoint's model.safetensors; prints a metrics table with bootstrap 95%
confidence intervals and writes, atomically, into `--out` (default RUN_DIR/eval/SPLIT-CHECKPOINT):
metrics.json (`split, users, metrics, ci, beams, length_penalty, invalid, checkpoint, time_s`),
predictions.jsonl (user, target, top items with scores, 1-based hit rank, 0 = miss), metrics.png
and run_info.json; an earlier evaluation in `--out` is first moved to `<out>.replaced-<time>`
(said on stderr). It holds the output folder's lock (gramc.lock: a second writer of the same --out
is refused). Works under `torchrun` (users sharded over processes, rank 0 locks and writes).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path
from typing import Any

from ..cliargs import add_run_args
from ..config import Config
from ..io import atomic_path, claim_output, is_lock_name, move_aside, pyplot, write_json
from ..lock import output_lock
from ..metrics import popularity_warning, repeat_warning

# the evaluator and the model are imported inside `_evaluate`, not here, for start-up time:
# `gramc --help` and argument errors should not load torch


def format_table(rec: dict) -> str:
    """Metric | value | 95% CI, one line per metric."""
    lines = [f"{rec['split']}: {rec['users']:,} users, beams {rec['beams']}, length penalty "
             f"{rec['length_penalty']}, invalid beams {rec['invalid']}, {rec['time_s']:.1f}s "
             f"({rec['users'] / max(rec['time_s'], 1e-9):.1f} users/s), checkpoint {rec['checkpoint']}",
             f"{'metric':<10} {'value':>8}   95% CI"]
    for name, value in rec["metrics"].items():
        lo, hi = rec["ci"].get(name, (float("nan"), float("nan")))
        lines.append(f"{name:<10} {value:>8.4f}   [{lo:.4f}, {hi:.4f}]")
    return "\n".join(lines)


def plot_metrics(rec: dict, path: Path) -> None:
    """hit@k and ndcg@k against k with their confidence intervals (PNG)."""
    plt = pyplot()
    if plt is None:
        return

    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for kind in ("hit", "ndcg"):
        names = [n for n in rec["metrics"] if n.startswith(kind + "@")]
        ks = [int(n.split("@")[1]) for n in names]
        vals = [rec["metrics"][n] for n in names]
        lo = [vals[i] - rec["ci"].get(n, (vals[i], vals[i]))[0] for i, n in enumerate(names)]
        hi = [rec["ci"].get(n, (vals[i], vals[i]))[1] - vals[i] for i, n in enumerate(names)]
        ax.errorbar(ks, vals, yerr=[lo, hi], marker="o", capsize=3, label=f"{kind}@k")
    ax.set_xscale("log")
    ax.set_xlabel("k")
    ax.set_ylabel("metric (95% CI)")
    ax.set_title(f"{rec['split']} ({rec['users']:,} users, beams {rec['beams']})")
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def _outputs(args: argparse.Namespace, name: str) -> dict[str, Path]:
    """The output folder of each split: `--out` (`--out/<split>` with `--split both`), else
    `RUN/eval/<split>-<checkpoint>`."""
    splits = ("valid", "test") if args.split == "both" else (args.split,)
    if args.out:
        return {s: Path(args.out) / s if args.split == "both" else Path(args.out) for s in splits}
    return {s: Path(args.run) / "eval" / f"{s}-{name}" for s in splits}


def _evaluate(args: argparse.Namespace) -> int:
    from ..model.runs import checkpoint_folder, load_model_from_run, run_config
    from ..runtime import init_distributed, launch, leave_distributed, rank_world
    from .evaluate import evaluate_splits

    overrides = list(args.overrides or [])
    if args.beams is not None:
        overrides.append(f"eval.beams={args.beams}")
    cfg = run_config(args.run, overrides)  # a GramcError here is printed by gramc.cli.main
    folder = checkpoint_folder(args.run, args.checkpoint)
    outs = _outputs(args, args.checkpoint if args.checkpoint in ("best", "last") else Path(folder).name)
    for out in outs.values():
        claim_output(out, ("eval", "stage"), inputs=[args.run, folder], what="--out")
    if launch().world > 1:
        init_distributed(cfg.run.device)  # gloo on CPU, nccl on GPUs
    main = rank_world()[0] == 0
    # a RunError (e.g. a checkpoint trained with the other model.softmax) is printed by gramc.cli.main
    model, assets, cfg = load_model_from_run(args.run, args.checkpoint, progress=main, cfg=cfg, folder=folder)
    # the inputs are checked (a refusal up to here leaves no trace, not even the lock file): lock the
    # outputs, evaluate and write, so that no other command writes them meanwhile (the run is only read)
    with contextlib.ExitStack() as locks:
        for out in outs.values():
            locks.enter_context(output_lock(out, "--out"))
        results = evaluate_splits(model, assets, cfg, tuple(outs), max_users=args.max_users, progress=main,
                                  fused=cfg.eval.fusion.enabled)  # with `both`: one item pass for the two
        for split, res in results.items():
            res.checkpoint = str(folder)
            if main:
                _write_outputs(outs[split], args, cfg, folder, res, assets)
    leave_distributed()
    return 0 if all(res.invalid == 0 for res in results.values()) else 1


def _write_outputs(out: Path, args: argparse.Namespace, cfg: Config, folder: Path, res: Any, assets: Any) -> None:
    """Write metrics.json, predictions.jsonl, metrics.png and run_info.json into `out`; print the table."""
    from ..runinfo import write_run_info
    from .fusion import weight_text

    rec = res.to_json()
    if out.is_dir() and not all(is_lock_name(p.name) for p in out.iterdir()):
        move_aside(out, "--out")  # an earlier evaluation: kept whole beside it, never replaced
    out.mkdir(parents=True, exist_ok=True)
    write_run_info(out, cfg, inputs={"checkpoint": folder / "model.safetensors"},
                   extra={"split": res.split, "max_users": args.max_users})
    write_json(out / "metrics.json", rec)
    with atomic_path(out / "predictions.jsonl") as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            for p in res.predictions(assets.ds.item_ids, assets.ds.users, top=cfg.eval.predictions_top):
                f.write(json.dumps(p) + "\n")
    plot_metrics(rec, out / "metrics.png")
    if args.json:
        print(json.dumps(rec, indent=2))
    else:
        print(format_table(rec))
        if "fusion" in rec:
            f, plain = rec["fusion"], rec["unfused"]["metrics"]
            how = f"tuned on {f['tune_users']} validation users" if f["tuned"] else "eval.fusion.weight"
            print(f"fused with {f['scorer']} (top {f['candidates']}, weight {weight_text(f['weight'], f['scorers'])}, "
                  f"{how}): ndcg@10 "
                  f"{plain['ndcg@10']:.4f} -> {rec['metrics']['ndcg@10']:.4f} (the beam search alone -> fused)")
        print(f"wrote {out}/metrics.json, predictions.jsonl, metrics.png")
    for warning in (repeat_warning(rec.get("repeats", {}), "gramc"),
                    popularity_warning(rec.get("popularity", {}), "gramc")):
        if warning:
            print(f"WARNING {warning}", file=sys.stderr)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("evaluate", help="beam-search evaluation of a trained run (metrics with 95%% CIs)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_args(p, "eval.length_penalty=1.0")
    p.add_argument("--split", required=True, choices=["valid", "test", "both"],
                   help="both: valid and test in one call, every item passage encoded once for the two")
    p.add_argument("--beams", type=int, default=None, help="beam size (default: the run's eval.beams)")
    p.add_argument("--max-users", type=int, default=0, help="evaluate only the first N users (0 = all)")
    p.add_argument("--out", default="", help="output folder (default RUN_DIR/eval/SPLIT-CHECKPOINT)")
    p.add_argument("--json", action="store_true", help="print metrics.json instead of the table")
    p.set_defaults(func=_evaluate)
