"""Benchmark: `ids build` on Amazon Beauty (12,101 items, T5 vocabulary), against GRAM's released IDs.

    .venv/bin/python bench/ids_build.py [--runs tfidf,tfidf-c128-l7,minilm] [--threads 2] [--out DIR] [--keep]

1. Reads ../shared/datasets/amazon-beauty/ (user_sequence.txt + Amazon_Beauty.item) with the data
   layer's readers and renders item texts (`gramc.data.text.item_texts`).
2. For each run, `build_ids` with the T5 vocabulary (../shared/tokenizers/t5-base-spm): wall time
   (embedding + clustering + labels + de-duplication), collisions (`check_ids`), mean number of
   levels, items with a de-duplication level, level-1 tokens, and "grounding" (share of an item's
   tree-level tokens that occur in its own text).
3. The same figures for GRAM's released file (c128, l7), for comparison.
Writes bench/results/ids_build.json and the "Item IDs" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from gramc.checks import Report  # noqa: E402
from gramc.config import Config, to_dict  # noqa: E402
from gramc.data.prepare import build_dataset  # noqa: E402
from gramc.data.text import item_texts  # noqa: E402
from gramc.ids.build import build_ids_detailed, save_built_ids  # noqa: E402
from gramc.ids.itemids import ItemIds, check_ids, id_stats, load_gram_ids  # noqa: E402
from gramc.ids.tokenizer import load_tokenizer  # noqa: E402
from gramc.io import write_json  # noqa: E402
from _docs import replace_section  # noqa: E402  (bench/ is on sys.path when run as a script)

SHARED = ROOT / ".." / "shared"
BEAUTY = SHARED / "datasets" / "amazon-beauty"
GRAM_FILE = BEAUTY / "item_generative_indexing_hierarchy_v1_c128_l7_len32768_split.txt"
T5 = SHARED / "tokenizers" / "t5-base-spm"
RESULTS = ROOT / "bench" / "results" / "ids_build.json"
DOC = ROOT / "docs" / "benchmarks.md"
SECTION = "## Item IDs"

RUNS = {  # name -> IdsConfig overrides
    "tfidf": {"embedding": "tfidf"},
    "minilm": {"embedding": "minilm"},
    "tfidf-c128-l7": {"embedding": "tfidf", "clusters": 128, "levels": 7},
}


def grounding(ids: ItemIds, text_tokens: list[set[int]], tree_levels: list[int]) -> float:
    """Mean share of an item's tree-level tokens (no de-dup level) found in its own text."""
    total = 0.0
    for i, toks in enumerate(ids.tokens):
        levels = toks[: tree_levels[i]]
        total += sum(t in text_tokens[i] for t in levels) / len(levels)
    return round(total / len(ids.tokens), 4)


def figures(ids: ItemIds, ds, tok, text_tokens, tree_levels) -> dict:
    report = Report(check_ids(ids, ds, tok))
    st = id_stats(ids.pieces)
    collisions = report.by_name("ids.duplicate_ids").value + report.by_name("ids.decoded_collisions").value
    dedup = sum(len(p) > n for p, n in zip(ids.pieces, tree_levels))
    return {"ok": report.ok, "unique_ids": report.by_name("ids.unique_ids").value, "collisions": collisions,
            "mean_levels": st["mean_levels"], "levels": st["levels"], "dedup_items": dedup,
            "dedup_share": round(dedup / ids.num_items, 4), "level1_tokens": st["level1_tokens"],
            "items_per_level1_token": st["items_per_level1_token"],
            "grounding": grounding(ids, text_tokens, tree_levels)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", default="tfidf,tfidf-c128-l7,minilm", help=f"comma list of {list(RUNS)}")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--minilm-sample", type=float, default=0.0,
                    help="also time MiniLM on this share of the texts (CPU-time estimate of an idle run)")
    ap.add_argument("--out", default="", help="keep the built ID files here (default: a temp folder)")
    ap.add_argument("--keep", action="store_true",
                    help="keep the results of runs not repeated now from bench/results/ids_build.json")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)

    cfg = Config()
    t0 = time.perf_counter()
    ds = build_dataset(BEAUTY / "user_sequence.txt", BEAUTY / "Amazon_Beauty.item", cfg)
    texts = item_texts(ds, cfg.data)
    tok = load_tokenizer(T5)
    text_tokens = [set(t[: cfg.ids.text_tokens]) for t in tok.encode_batch(texts)]
    print(f"Beauty: {ds.num_items:,} items, texts and tokenizer in {time.perf_counter() - t0:.1f} s")

    gram = load_gram_ids(GRAM_FILE, ds, tok)
    gram_tree = [min(len(p), 7) for p in gram.pieces]
    result = {"dataset": {"items": ds.num_items, "users": ds.num_users},
              "tokenizer": tok.describe(), "threads": args.threads,
              "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count()},
              "gram_file": figures(gram, ds, tok, text_tokens, gram_tree), "runs": {}}
    if args.keep and RESULTS.is_file():  # keep earlier runs that are not repeated now
        import json

        result["runs"] = json.loads(RESULTS.read_text(encoding="utf-8")).get("runs", {})
    print("GRAM file:", result["gram_file"])

    out_dir = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="ids_build_"))
    if args.minilm_sample > 0:
        result["minilm_sample"] = minilm_sample(texts, args.minilm_sample, args.threads)
        print("MiniLM sample:", result["minilm_sample"])
        write_json(RESULTS, result)
        update_doc(result)
    for name in [r for r in args.runs.split(",") if r]:
        ids_cfg = replace(cfg.ids, threads=args.threads, **RUNS[name])
        t, cpu, load0 = time.perf_counter(), time.process_time(), os.getloadavg()[0]
        ids, tree_levels = build_ids_detailed(ds, texts, tok, ids_cfg, progress=True)
        seconds, cpu = time.perf_counter() - t, time.process_time() - cpu
        fig = figures(ids, ds, tok, text_tokens, tree_levels)
        run_cfg = Config(ids=ids_cfg)
        save_built_ids(ids, ds, tok, run_cfg, out_dir / f"{name}.txt", {}, {"build_seconds": round(seconds, 2)})
        result["runs"][name] = {"config": to_dict(ids_cfg), "seconds": round(seconds, 1),
                                "cpu_seconds": round(cpu, 1),
                                "load_average_1min_before": round(load0, 1),
                                "load_average_1min_after": round(os.getloadavg()[0], 1),
                                "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **fig}
        print(f"{name}: {seconds:.1f} s, {fig}")
        result["ids_files"] = str(out_dir)
        write_json(RESULTS, result)  # after every run, so a stopped benchmark keeps what it measured
        update_doc(result)
    print(f"wrote {RESULTS} and the '{SECTION}' section of {DOC}")


def minilm_sample(texts: list[str], share: float, threads: int) -> dict:
    """Wall and process-CPU time of MiniLM on every k-th text, scaled to all texts: an estimate of
    the embedding cost on an idle machine (CPU seconds / threads) when the CPU is shared."""
    from gramc.config import IdsConfig
    from gramc.ids.build import item_embeddings

    step = max(1, round(1 / share))
    sample = texts[::step]
    t, cpu = time.perf_counter(), time.process_time()
    item_embeddings(sample, IdsConfig(embedding="minilm", threads=threads), progress=False)
    wall, cpu = time.perf_counter() - t, time.process_time() - cpu
    scale = len(texts) / len(sample)
    return {"texts": len(sample), "of": len(texts), "wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
            "load_average_1min_after": round(os.getloadavg()[0], 1),
            "estimated_idle_wall_s_all": round(cpu * scale / threads, 1)}


def _sample_cmd(r: dict) -> str:
    m = r.get("minilm_sample")
    if not m:
        return ""
    return (f"\n    .venv/bin/python bench/ids_build.py --keep --runs '' --threads {r['threads']} "
            f"--minilm-sample {m['texts'] / m['of']:.2f}")


def _sample_line(r: dict) -> str:
    m = r.get("minilm_sample")
    if not m:
        return ""
    return (f"MiniLM without contention (estimate): embedding {m['texts']:,} of {m['of']:,} texts took "
            f"{m['wall_s']:.0f} s wall and {m['cpu_s']:.0f} s of process CPU time ({r['threads']} threads, load "
            f"{m['load_average_1min_after']} after); scaled to all texts and divided by the threads, about "
            f"{m['estimated_idle_wall_s_all'] / 60:.1f} minutes on an idle 2-core machine (`--minilm-sample`).\n\n")


def update_doc(r: dict) -> None:
    """Replace (or append) the 'Item IDs' section of docs/benchmarks.md, leaving others intact."""
    g = r["gram_file"]
    rows = [f"| GRAM's released file (c128, l7) | - | {g['collisions']} | {g['mean_levels']:.3f} | "
            f"{g['dedup_items']:,} ({100 * g['dedup_share']:.1f}%) | {g['level1_tokens']} | {g['grounding']:.3f} |"]
    for name, x in r["runs"].items():
        c = x["config"]
        rows.append(f"| `{name}` ({c['embedding']}, c{c['clusters']}, l{c['levels']}) | {x['seconds']:.0f} s "
                    f"({x.get('load_average_1min_after', '?')}) | "
                    f"{x['collisions']} | {x['mean_levels']:.3f} | {x['dedup_items']:,} "
                    f"({100 * x['dedup_share']:.1f}%) | {x['level1_tokens']} | {x['grounding']:.3f} |")
    body = f"""{SECTION}

`ids build` on Amazon Beauty ({r['dataset']['items']:,} items) with the T5 vocabulary, on this
shared 2-core CPU ({r['threads']} threads; other engineers' jobs were running: the 1-minute load average after each
run is in brackets, so times are upper bounds).
Targets: TF-IDF+SVD under 2 minutes, MiniLM under 10 minutes; 0 collisions.

    .venv/bin/python bench/ids_build.py --runs {','.join(r['runs'])} --threads {r['threads']}{_sample_cmd(r)}

| IDs | build time (load avg) | collisions | mean levels | items with a de-dup level | level-1 tokens | grounding |
|---|---|---|---|---|---|---|
{chr(10).join(rows)}

{_sample_line(r)}*Build time* covers embedding, hierarchical k-means, labels and de-duplication (not data loading).
*Collisions*: items sharing a token sequence plus decoded strings that collide (`ids check`).
*Grounding*: mean share of an item's tree-level tokens that occur in its own text (first 128
tokens). *Mean levels*: built IDs end where the tree ends (groups of at most c items are
enumerated), so c128/l7 gives 2-3 levels on 12k items, where GRAM's file always has 7 (+1).
Each built file passes `gramc ids check`; `gramc ids build` in a separate process with the same
settings wrote byte-identical files. Raw numbers: `bench/results/ids_build.json`.
"""
    replace_section(SECTION, body, DOC)


if __name__ == "__main__":
    main()
