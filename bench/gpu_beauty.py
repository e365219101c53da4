"""One prepared GPU benchmark: GRAM and GRAM-C trained from scratch on Amazon Beauty, in ~10 minutes.

On one GPU it trains GRAM (prefix off) and GRAM-C (prefix on, user passage) from random init (no
weights can be downloaded there) for the same wall-clock budget each (`--train-minutes`, turned
into `train.max_steps` by a measured probe of 3 steps), then evaluates each on the same fixed user
subset (the first `--eval-users` test users) at beam 50. It prints and saves, per model:
samples/s and seconds per optimiser step (from the run's log.jsonl, first logging window left
out), peak GPU memory, evaluation users/s, and test metrics with 95% bootstrap intervals.
Everything goes into `--out` (results JSON `gpu_beauty.json`, the two run folders, the prepared data).

Inputs (the GPU machine cannot see ../shared): copy them into an ignored folder that the run carries,

    mkdir -p outputs/gpu_inputs/beauty outputs/gpu_inputs/t5
    cp ../shared/datasets/amazon-beauty/{user_sequence.txt,Amazon_Beauty.item,item_generative_indexing_hierarchy_v1_c128_l7_len32768_split.txt} outputs/gpu_inputs/beauty/
    cp ../shared/tokenizers/t5-base-spm/* outputs/gpu_inputs/t5/

then, on the GPU machine, from the repository root, with no install (gramc from src/):

    PYTHONPATH=src python bench/gpu_beauty.py --beauty outputs/gpu_inputs/beauty \
        --tokenizer outputs/gpu_inputs/t5 --out $OUT/gpu_beauty

and back here `python bench/gpu_beauty.py --render FETCHED/gpu_beauty/gpu_beauty.json` copies the
JSON to bench/results/ and writes the "GPU run on Beauty" section of docs/benchmarks.md.
`--synthetic` runs the same code on the built-in synthetic data (the CPU test does, with tiny
settings). Needs only torch, transformers, sentencepiece, scikit-learn, SciPy, safetensors,
PyYAML and tqdm (no matplotlib).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from gramc.config import Config, load_config  # noqa: E402
from gramc.io import read_json, write_json  # noqa: E402

ID_FILE = "item_generative_indexing_hierarchy_v1_c128_l7_len32768_split.txt"
RESULTS = ROOT / "bench" / "results" / "gpu_beauty.json"
SECTION = "## GPU run on Beauty"
MODELS = {"gram": ["model.prefix.enabled=false"],
          "gramc": ["model.prefix.enabled=true", "model.prefix.placement=user_passage"]}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--beauty", type=Path, help="folder with user_sequence.txt, Amazon_Beauty.item and GRAM's ID file")
    p.add_argument("--tokenizer", type=Path, help="the T5 tokenizer folder (t5-base-spm)")
    p.add_argument("--synthetic", action="store_true", help="the built-in synthetic data instead of Beauty")
    p.add_argument("--out", type=Path, help="output folder (results JSON, runs, prepared data)")
    p.add_argument("--models", default="gram,gramc", help="comma-separated: gram, gramc")
    p.add_argument("--train-minutes", type=float, default=2.5, help="training budget per model")
    p.add_argument("--max-steps", type=int, default=0, help="> 0: this many optimiser steps instead of the budget")
    p.add_argument("--eval-users", type=int, default=1000, help="first N test users, the same for every model")
    p.add_argument("--beams", type=int, default=50)
    p.add_argument("--render", type=Path, help="render a results JSON into docs/benchmarks.md and stop")
    p.add_argument("overrides", nargs="*", help="extra key.sub=value config overrides (applied last)")
    args = p.parse_args(argv)
    if args.render is None and (args.out is None or not (args.synthetic or (args.beauty and args.tokenizer))):
        p.error("give --out and either --synthetic or both --beauty and --tokenizer")
    return args


# GPU settings: t5-small dims from random init, GRAM's 128 samples per optimiser step as 2 x 64,
# bf16 autocast ("auto" on CUDA), 4 collation workers; the one validation at the end (it only picks
# the checkpoint: best = last) uses at most 200 users, the test subset --eval-users
GPU_SETTINGS = [
    "model.preset=small", "train.batching=sample", "train.batch_size=64", "train.grad_accum=2",
    "train.num_workers=4", "train.log_every=10", "train.final_eval=false", "train.valid_loss_samples=2048",
    "eval.batch_size=100", "eval.ks=[1,5,10,20,50]", "eval.length_penalty=1.0", "gcn.epochs=10",
]


def prepared_data(args: argparse.Namespace) -> list[str]:
    """Config overrides naming the data, IDs and tokenizer (Beauty prepared once into out/data)."""
    if args.synthetic:
        return []
    from gramc.data.prepare import prepare

    folder = args.out / "data"
    if not (folder / "sequences.txt").is_file():
        prepare(args.beauty / "user_sequence.txt", args.beauty / "Amazon_Beauty.item", folder, load_config(None, []))
    return [f"data.path={folder}", f"ids.file={args.beauty / ID_FILE}", f"ids.tokenizer={args.tokenizer}"]


def model_config(args: argparse.Namespace, name: str, data: list[str]) -> Config:
    out = args.out / name
    return load_config(None, [*GPU_SETTINGS, *data, f"run.out={out}", f"gcn.out={args.out / 'gcn'}",
                              "gcn.device=auto",
                              f"eval.beams={args.beams}", f"train.eval_users={min(200, args.eval_users)}",
                              *MODELS[name], *args.overrides])


def step_figures(run_dir: Path) -> dict:
    """samples/s and s/step from log.jsonl's step windows (the first window, with warm-up, left out)."""
    records = [json.loads(x) for x in (run_dir / "log.jsonl").read_text().splitlines()]
    steps = [r for r in records if r.get("kind") == "step"]
    windows = [(r, r["step"] - prev) for prev, r in zip([0] + [x["step"] for x in steps[:-1]], steps)]
    later = windows[1:] or windows
    seconds = sum(r["data_s"] + r["compute_s"] for r, _ in later)
    samples = sum(r["samples_per_s"] * (r["data_s"] + r["compute_s"]) for r, _ in later)
    return {"steps": steps[-1]["step"] if steps else 0, "samples_per_s": samples / max(seconds, 1e-9),
            "step_s": seconds / max(1, sum(n for _, n in later)),
            "data_wait_share": sum(r["data_s"] for r, _ in later) / max(seconds, 1e-9),
            "last_loss": steps[-1]["loss"] if steps else None}


def bench_model(args: argparse.Namespace, name: str, data: list[str]) -> dict:
    from gramc.checkpoint import load_weights
    from gramc.recipes.train_gramc import gramc_parts
    from gramc.runtime import init_distributed
    from gramc.train.budget import measure_step_seconds
    from gramc.train.trainer import fit

    cfg = model_config(args, name, data)
    info = init_distributed(cfg.run.device)
    t0 = time.perf_counter()
    parts = gramc_parts(cfg, info)
    assets_s = time.perf_counter() - t0
    probe_s = measure_step_seconds(parts, cfg, info)
    cfg.train.max_steps = args.max_steps or max(1, int(args.train_minutes * 60 / probe_s))
    cuda = info.device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(info.device)
    t0 = time.perf_counter()
    result = fit(parts, cfg, cfg.run.out, info=info)
    train_s = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated(info.device) / 2**30 if cuda else None
    run_dir = Path(cfg.run.out)
    best = "best" if (run_dir / "checkpoints" / "best").is_dir() else "last"
    load_weights(run_dir / "checkpoints" / best, parts.model)
    parts.model.to(info.device).eval()
    if cuda:
        torch.cuda.reset_peak_memory_stats(info.device)
    t0 = time.perf_counter()
    with torch.no_grad():
        test = parts.evaluate(parts.model, ("test",), args.eval_users)["test"]  # the run's device trie, its beams
    eval_s = time.perf_counter() - t0
    peak_eval = torch.cuda.max_memory_allocated(info.device) / 2**30 if cuda else None
    write_json(run_dir / "metrics_test_subset.json", test)
    return {"model": name, "prefix": cfg.model.prefix.enabled, "assets_s": round(assets_s, 1),
            "probe_step_s": round(probe_s, 4), "max_steps": cfg.train.max_steps, "train_s": round(train_s, 1),
            **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in step_figures(run_dir).items()},
            "samples_trained": result.state.step * cfg.train.batch_size * cfg.train.grad_accum,
            "peak_gpu_gib": round(peak, 2) if peak is not None else None,
            "peak_eval_gpu_gib": round(peak_eval, 2) if peak_eval is not None else None, "checkpoint": best,
            "eval_users": test["users"], "eval_s": round(eval_s, 1),
            "eval_users_per_s": round(test["users"] / eval_s, 2),
            "metrics": test["metrics"], "ci": test["ci"], "beams": test["beams"]}


def environment() -> dict:
    import transformers

    cuda = torch.cuda.is_available()
    return {"device": torch.cuda.get_device_name(0) if cuda else f"CPU ({platform.processor() or platform.machine()})",
            "torch": torch.__version__, "transformers": transformers.__version__,
            "cuda": torch.version.cuda if cuda else None, "threads": torch.get_num_threads(),
            "python": platform.python_version()}


def summary(results: dict) -> str:
    lines = [f"{results['environment']['device']}, torch {results['environment']['torch']}, "
             f"{results['wall_s']:.0f} s in all",
             f"{'model':<6} {'steps':>6} {'samples/s':>10} {'s/step':>7} {'GPU GiB':>8} {'eval u/s':>9} "
             f"{'hit@10':>7} {'ndcg@10':>8}"]
    for r in results["models"]:
        gib = "-" if r["peak_gpu_gib"] is None else f"{r['peak_gpu_gib']:.1f}"
        lines.append(f"{r['model']:<6} {r['steps']:>6} {r['samples_per_s']:>10.1f} {r['step_s']:>7.3f} {gib:>8} "
                     f"{r['eval_users_per_s']:>9.1f} {r['metrics'].get('hit@10', float('nan')):>7.4f} "
                     f"{r['metrics'].get('ndcg@10', float('nan')):>8.4f}")
    return "\n".join(lines)


def render(path: Path) -> None:
    """bench/results/gpu_beauty.json + the docs section, from a fetched results JSON."""
    sys.path.insert(0, str(ROOT / "bench"))
    from _docs import replace_section

    results = read_json(path)
    write_json(RESULTS, results)
    rows = ["| model | steps (samples) | samples/s | s/step | waiting for data | peak GPU GiB train / eval "
            "| eval users/s | test hit@10 [95% CI] | test ndcg@10 [95% CI] |", "|---|---|---|---|---|---|---|---|---|"]
    for r in results["models"]:
        ci = r["ci"]
        rows.append(f"| {r['model']} | {r['steps']} ({r['samples_trained']:,}) | {r['samples_per_s']:.1f} | "
                    f"{r['step_s']:.3f} | {r['data_wait_share']:.0%} | "
                    f"{r['peak_gpu_gib']} / {r.get('peak_eval_gpu_gib')} | "
                    f"{r['eval_users_per_s']:.1f} | "
                    f"{r['metrics']['hit@10']:.4f} [{ci['hit@10'][0]:.4f}, {ci['hit@10'][1]:.4f}] | "
                    f"{r['metrics']['ndcg@10']:.4f} [{ci['ndcg@10'][0]:.4f}, {ci['ndcg@10'][1]:.4f}] |")
    env = results["environment"]
    body = "\n".join([SECTION, "", f"`{results['command']}` on {env['device']} (torch {env['torch']}), "
                      f"{results['wall_s']:.0f} s in all; a smoke test (minutes of training), not a quality result.",
                      "", *rows, "", HOWTO])
    replace_section(SECTION, body)


HOWTO = ("How to run it: see the docstring of bench/gpu_beauty.py (copy the Beauty files and the T5 tokenizer "
         "into outputs/gpu_inputs/, carry that folder, run with PYTHONPATH=src, then `--render` the fetched JSON).")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render is not None:
        render(args.render)
        return 0
    t0 = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    data = prepared_data(args)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        raise SystemExit(f"--models: unknown {unknown}; expected some of {sorted(MODELS)}")
    command = " ".join(["python", "bench/gpu_beauty.py", *(argv if argv is not None else sys.argv[1:])])
    results = {"environment": environment(), "command": command,
               "settings": GPU_SETTINGS + list(args.overrides), "train_minutes": args.train_minutes,
               "models": []}
    for name in models:
        results["models"].append(bench_model(args, name, data))
        results["wall_s"] = round(time.perf_counter() - t0, 1)
        write_json(args.out / "gpu_beauty.json", results)  # kept after each model: a timeout loses less
    print(summary(results))
    print(f"results: {args.out / 'gpu_beauty.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
