"""Evaluation speed: gramc's batched trie beam search vs Hugging Face `generate` (GRAM's way).

Real Beauty data from ../shared (GRAM's ID file with the T5 vocabulary, GRAM's similar items,
max_his 20, 128-token passages), test users in dataset order, beam 50, 50 returned, length
penalty 0, random weights of the given preset (no weights exist on this machine; speed does not
depend on them). The collaborative prefix is off (it changes only the encoder input, not the search).

Both arms search the *same* fused memories (built once by GramC.memory from item states encoded
once), with the *same* weights:

* `gramc`: `gramc.eval.beam.beam_search`, `eval.batch_size` users at a time, cross K/V once per
  user, tensor trie.
* `hf`:    `T5ForConditionalGeneration.generate` (from `T5.to_hf_model()`), one user per call as
  GRAM evaluates, `num_beams = num_return_sequences = 50`, a GRAM-style dict-trie
  `prefix_allowed_tokens_fn`, a fresh `BaseModelOutput` per call. HF runs until `--hf-users` or
  `--hf-budget` seconds, whichever comes first; gramc is then timed on exactly those users.

Reported: users/s of both, speed-up, identical top-50 lists (items in order) and the largest score
difference, peak resident memory added by each search (VmHWM, reset before each phase) and how it
grows with the beam size, and the full Beauty test set (22,363 users) with gramc end to end
(all items encoded once + memories + search): measured on `--full-users` users (and the items
they need) and extrapolated, unless `--full-users 0 --all-items` is given.

    .venv/bin/python bench/eval_speed.py                      # tiny preset
    .venv/bin/python bench/eval_speed.py --presets tiny,small  # both
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
SHARED = ROOT / ".." / "shared"
BEAUTY = SHARED / "datasets" / "amazon-beauty"
T5_VOCAB = SHARED / "tokenizers" / "t5-base-spm"
IDS_FILE = BEAUTY / "item_generative_indexing_hierarchy_v1_c128_l7_len32768_split.txt"
WORK = ROOT / "runs" / "bench_eval"


def _status(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024.0  # MiB
    return float("nan")


class PeakRSS:
    """Peak resident memory added during a block (Linux VmHWM, reset on entry via clear_refs)."""

    def __enter__(self):
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            pass
        self.base = _status("VmRSS")
        return self

    def __exit__(self, *exc):
        self.delta_mb = max(0.0, _status("VmHWM") - self.base)


def build(preset: str):
    from gramc.config import load_config
    from gramc.data.prepare import prepare
    from gramc.model.assets import Assets
    from gramc.model.gramc import GramC

    data = WORK / "beauty"
    if not (data / "items.jsonl").is_file():
        prepare(BEAUTY / "user_sequence.txt", BEAUTY / "Amazon_Beauty.item", data, load_config(None, []))
    cfg = load_config(None, [
        f"run.out={WORK / 'run'}", "run.device=cpu", f"data.path={data}", f"ids.file={IDS_FILE}",
        f"ids.tokenizer={T5_VOCAB}", f"model.similar_source={BEAUTY / 'similar_item_sasrec.txt'}",
        "model.similar_items=10", "model.prefix.enabled=false", f"model.preset={preset}", "model.dropout=0.0",
        "eval.beams=50", "eval.length_penalty=0.0", "eval.batch_size=64",
    ])
    assets = Assets.from_config(cfg, progress=True)
    torch.manual_seed(0)
    model = GramC.from_config(cfg, assets).eval()
    return cfg, assets, model


def dict_trie_fn(targets):
    """GRAM's constraint: a nested-dict trie walked from the root for every beam at every step."""
    root: dict = {}
    for t in targets:
        node = root
        for tok in t:
            node = node.setdefault(tok, {})

    def fn(batch_id, sent):
        node = root
        for tok in sent.tolist()[1:]:
            node = node.get(tok)
            if node is None:
                return [0]  # transformers 5 refuses []; dead beams only
        return list(node) or [0]
    return fn


def memories(model, assets, cfg, smp, table):
    from gramc.model.inputs import Collator

    collate = Collator(assets.cache, cfg, gcn_rows=assets.gcn_rows, items="global")
    out = []
    bs = cfg.eval.batch_size
    with torch.no_grad():
        for s in range(0, len(smp), bs):
            out.append(model.memory(collate(smp[s: s + bs]), items=table))
    return out


def gramc_search(model, mems, trie, beams):
    from gramc.eval.beam import beam_search

    items, scores, invalid = [], [], 0
    for mem, mask in mems:
        r = beam_search(model.t5, mem, mask, trie, beams=beams)
        items.append(r.items)
        scores.append(r.scores)
        invalid += r.invalid
    return torch.cat(items), torch.cat(scores), invalid


def hf_search(hf, mems, trie, targets, beams, max_users, budget_s):
    from transformers.modeling_outputs import BaseModelOutput

    fn = dict_trie_fn(targets)
    items, scores = [], []
    t0 = time.perf_counter()
    done = False
    for mem, mask in mems:
        for b in range(mem.shape[0]):
            n = int(mask[b].sum())
            with torch.no_grad():
                out = hf.generate(encoder_outputs=BaseModelOutput(last_hidden_state=mem[b:b + 1, :n].clone()),
                                  attention_mask=torch.ones(1, n, dtype=torch.long), num_beams=beams,
                                  num_return_sequences=beams, do_sample=False, prefix_allowed_tokens_fn=fn,
                                  max_length=trie.max_len + 1, length_penalty=0.0, early_stopping=False,
                                  decoder_start_token_id=0, output_scores=True, return_dict_in_generate=True)
            row_i, row_s = [], []
            for seq, sc in zip(out.sequences.tolist(), out.sequences_scores.tolist()):
                toks = seq[1:]
                if sc < -1e6 or 1 not in toks:
                    continue
                item = trie.item_of(toks[: toks.index(1) + 1])
                row_i.append(-2 if item is None else item)  # -2: a sequence that is no item
                row_s.append(sc)
            row_i += [-1] * (beams - len(row_i))
            row_s += [float("-inf")] * (beams - len(row_s))
            items.append(row_i)
            scores.append(row_s)
            if len(items) >= max_users or time.perf_counter() - t0 > budget_s:
                done = True
                break
        if done:
            break
    return torch.tensor(items), torch.tensor(scores), time.perf_counter() - t0


def run_preset(preset: str, args) -> dict:
    from gramc.data.splits import samples
    from gramc.eval.evaluate import encode_all_items
    from gramc.eval.trie import trie_for

    t0 = time.perf_counter()
    cfg, assets, model = build(preset)
    setup_s = time.perf_counter() - t0
    smp = samples(assets.ds, "test", cfg.data.max_his)
    trie = trie_for(assets.item_ids)
    targets = [tuple(assets.item_ids.target(i)) for i in range(assets.ds.num_items)]
    beams = 50
    res: dict = {"preset": preset, "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
                 "test_users": len(smp), "items": assets.ds.num_items, "trie_nodes": trie.num_nodes,
                 "trie_max_children": trie.max_children, "max_id_len": trie.max_len, "beams": beams,
                 "setup_s": round(setup_s, 1)}
    print(f"[{preset}] setup {setup_s:.0f}s; {len(smp)} test users, {trie.num_nodes} trie nodes", flush=True)

    cmp_users = smp[: args.hf_users]
    m_users = smp if args.full_users == 0 else smp[: args.full_users]
    only = None
    if not args.all_items:  # encode the items these users need; time for all items is extrapolated
        only = sorted({i for s in list(cmp_users) + list(m_users) for i in s.history})
    t = time.perf_counter()
    with torch.no_grad():
        table = encode_all_items(model, assets.cache, cfg, torch.device("cpu"), progress=True, only=only)
    encoded = assets.ds.num_items if only is None else len(only)
    item_s = (time.perf_counter() - t) * assets.ds.num_items / encoded
    res["encode_all_items"] = {"encoded": encoded, "s": round(item_s, 1), "extrapolated": only is not None}
    print(f"[{preset}] {encoded} item passages encoded; all {assets.ds.num_items}: {item_s:.1f}s"
          f"{' (extrapolated)' if only is not None else ''}", flush=True)

    # ---- comparison on the same users -----------------------------------------------------
    mems = memories(model, assets, cfg, cmp_users, table)
    hf = model.t5.to_hf_model()
    with PeakRSS() as hf_mem:
        hf_items, hf_scores, hf_s = hf_search(hf, mems, trie, targets, beams, args.hf_users, args.hf_budget)
    n = len(hf_items)
    same = cmp_users[:n]
    mems_same = memories(model, assets, cfg, same, table)
    gramc_search(model, memories(model, assets, cfg, same[: min(8, n)], table), trie, beams)  # warm-up
    t = time.perf_counter()
    with PeakRSS() as g_mem:
        g_items, g_scores, invalid = gramc_search(model, mems_same, trie, beams)
    g_s = time.perf_counter() - t
    identical = sum(int(torch.equal(a, b)) for a, b in zip(g_items, hf_items))
    fin = torch.isfinite(g_scores) & torch.isfinite(hf_scores)
    max_diff = float((g_scores - hf_scores).abs()[fin].max()) if bool(fin.any()) else float("nan")
    res["comparison"] = {
        "users": n, "hf_users_requested": args.hf_users, "hf_budget_s": args.hf_budget,
        "hf_s": round(hf_s, 2), "gramc_s": round(g_s, 2),
        "hf_users_per_s": round(n / hf_s, 2), "gramc_users_per_s": round(n / g_s, 2),
        "speedup": round(hf_s / g_s, 1),
        "identical_top50_lists": identical, "max_abs_score_diff": max_diff, "invalid": invalid,
        "hf_peak_rss_added_mb": round(hf_mem.delta_mb, 1), "gramc_peak_rss_added_mb": round(g_mem.delta_mb, 1),
        "gramc_batch_users": cfg.eval.batch_size,
    }
    print(f"[{preset}] same {n} users: HF {n / hf_s:.2f} users/s, gramc {n / g_s:.2f} users/s "
          f"({hf_s / g_s:.1f}x); identical top-50 lists {identical}/{n}, max |score diff| {max_diff:.2e}, "
          f"peak RSS added HF {hf_mem.delta_mb:.0f} MiB, gramc {g_mem.delta_mb:.0f} MiB", flush=True)
    del hf

    # ---- memory against beam size (one batch of users) ---------------------------------------
    growth = {}
    one = mems_same[:1]
    for b in (10, 25, 50):
        with PeakRSS() as m:
            gramc_search(model, one, trie, b)
        growth[str(b)] = round(m.delta_mb, 1)
    mem_tokens = int(one[0][1].sum(1).float().mean())
    d, layers = model.t5.dims.d_model, model.t5.dims.num_decoder_layers
    res["memory_vs_beams"] = {
        "batch_users": int(one[0][0].shape[0]), "mean_memory_tokens": mem_tokens,
        "gramc_peak_rss_added_mb": growth,
        "hf_cross_kv_copies_mb_per_user_at_50": round(50 * mem_tokens * d * 2 * layers * 4 / 2**20, 1),
        "gramc_cross_kv_mb_per_user": round(mem_tokens * d * 2 * layers * 4 / 2**20, 2),
    }
    print(f"[{preset}] gramc peak RSS added for {one[0][0].shape[0]} users vs beams: {growth}", flush=True)

    # ---- full test set, gramc end to end -------------------------------------------------------
    t = time.perf_counter()
    mm = memories(model, assets, cfg, m_users, table)
    mem_s = time.perf_counter() - t
    t = time.perf_counter()
    _, _, inv = gramc_search(model, mm, trie, beams)
    search_s = time.perf_counter() - t
    per_user = (mem_s + search_s) / len(m_users)
    full_s = item_s + per_user * len(smp)
    res["full_test"] = {
        "measured_users": len(m_users), "extrapolated": len(m_users) < len(smp) or only is not None,
        "encode_items_s": round(item_s, 1), "memories_s": round(mem_s, 1), "search_s": round(search_s, 1),
        "users_per_s": round(len(m_users) / (mem_s + search_s), 2), "invalid": inv,
        "full_test_wall_s": round(full_s, 0), "full_test_wall_min": round(full_s / 60, 1),
    }
    print(f"[{preset}] full test ({len(smp)} users) {'extrapolated from ' + str(len(m_users)) if len(m_users) < len(smp) else 'measured'}: "
          f"{full_s / 60:.1f} min ({len(m_users) / (mem_s + search_s):.2f} users/s + {item_s:.0f}s item encoding)",
          flush=True)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", default="tiny")
    ap.add_argument("--hf-users", type=int, default=500)
    ap.add_argument("--hf-budget", type=float, default=200.0, help="seconds of HF generate per preset")
    ap.add_argument("--full-users", type=int, default=128, help="users measured for the full-test estimate (0 = all)")
    ap.add_argument("--all-items", action="store_true", help="encode all items (else only those the users need)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "eval_speed.json"))
    args = ap.parse_args()
    if os.environ.get("MALLOC_MMAP_THRESHOLD_") is None:
        # large blocks via mmap (returned on free), so resident memory tracks live tensors and the
        # per-phase peaks (VmHWM) are meaningful; re-run this script with that setting
        env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
        os.execve(sys.executable, [sys.executable, *sys.argv], env)
    torch.set_num_threads(args.threads)
    if not BEAUTY.is_dir():
        sys.exit(f"{BEAUTY} not found: the benchmark needs the real Beauty data in ../shared")
    import transformers

    results = {"command": " ".join(["bench/eval_speed.py"] + sys.argv[1:]), "threads": args.threads,
               "cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
               "transformers": transformers.__version__, "length_penalty": 0.0, "presets": []}
    for p in args.presets.split(","):
        results["presets"].append(run_preset(p.strip(), args))
        from gramc.io import write_json

        write_json(args.out, results)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
