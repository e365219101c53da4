"""Evaluation speed: gramc's batched trie beam search, before and after issue 14, and vs Hugging Face.

Real Beauty data from ../shared (GRAM's ID file with the T5 vocabulary, GRAM's similar items,
max_his 20, 128-token passages), test users in dataset order, beam 50, 50 returned, length
penalty 0, random weights of the given preset (no weights exist on this machine; speed does not
depend on them). The collaborative prefix is off (it changes only the encoder input, not the search).

Every arm searches the *same* fused memories (built once by GramC.memory from item states encoded
once), with the *same* weights, in one process:

* `old`:   `frozen_search` below, gramc's search as it was before issue 14 (full `[B, g, V]` logits
           and `torch.logsumexp` each step), kept here verbatim as the baseline;
* `vocab`: `gramc.eval.beam.beam_search(softmax="vocab")`: the same scores, normaliser chunked in
           place, LM head for live beams only (lists must be identical to `old`, scores to 1e-5);
* `trie`:  `beam_search(softmax="trie")`: softmax over the trie children, logits only for those
           (other scores by design, so other lists with these random weights);
* `hf`:    `T5ForConditionalGeneration.generate` (from `T5.to_hf_model()`), one user per call as
           GRAM evaluates, a GRAM-style dict-trie `prefix_allowed_tokens_fn` (`--hf-users 0`: skipped).

Reported per arm: users/s, user and system CPU seconds, minor page faults, and the peak resident
memory it adds (VmHWM, reset before each arm). Then the full Beauty test set (22,363 users) end to
end (all items encoded once, then memories and search batch by batch) in `--full-softmax` mode,
measured in full with `--full-users 0 --all-items`, stopped after `--full-budget` seconds (the
record says how far it got).

    .venv/bin/python bench/eval_speed.py --hf-users 0 --cmp-users 256            # old / vocab / trie
    .venv/bin/python bench/eval_speed.py --hf-users 0 --cmp-users 0 --full-users 0 --all-items \
        --out bench/results/eval_speed_full.json                                 # whole test set, trie
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
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
NEG_INF = float("-inf")

from gramc.eval.beam import BeamResult  # noqa: E402  (the frozen search's helpers)
from gramc.model.t5 import reorder_cache  # noqa: E402


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


class CpuTime:
    """Wall, user and system CPU seconds and minor/major page faults of this process during a block."""

    def __enter__(self):
        self.r0, self.t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        return self

    def __exit__(self, *exc):
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        self.wall = time.perf_counter() - self.t0
        self.user = r1.ru_utime - self.r0.ru_utime
        self.sys = r1.ru_stime - self.r0.ru_stime
        self.minflt = r1.ru_minflt - self.r0.ru_minflt
        self.majflt = r1.ru_majflt - self.r0.ru_majflt


@torch.no_grad()
def frozen_search(decoder, memory: torch.Tensor | None, memory_mask: torch.Tensor, trie,
                beams: int = 50, length_penalty: float = 0.0, early_stopping: str = "heuristic",
                exclude: torch.Tensor | None = None, start_id: int = 0, cross_kv=None):
    """gramc's beam search as it was before issue 14 (commit 941549c), frozen for the comparison:
    full `[B, g, V]` logits and `torch.logsumexp` per step, every beam, the full trie width."""
    if beams < 1:
        raise ValueError(f"beams must be >= 1, got {beams}")
    if early_stopping not in ("heuristic", "never", "finished"):
        raise ValueError(f"early_stopping must be heuristic, never or finished, got {early_stopping!r}")
    dev = memory_mask.device
    trie = trie.to(dev)
    B = int(memory_mask.shape[0])
    G = beams
    lp = float(length_penalty)
    ckv = decoder.cross_kv(memory) if cross_kv is None else cross_kv
    rows = torch.arange(B, device=dev).unsqueeze(1)

    nodes = torch.zeros(B, 1, dtype=torch.long, device=dev)  # one real beam per user at the start
    run = torch.zeros(B, 1, device=dev)
    tokens = torch.full((B, 1), start_id, dtype=torch.long, device=dev)
    cache = None
    fin_scores = torch.full((B, G), NEG_INF, device=dev)
    fin_items = torch.full((B, G), -1, dtype=torch.long, device=dev)
    active = torch.ones(B, dtype=torch.bool, device=dev)  # finished list can still improve
    rank_ok = None
    invalid = 0
    steps = 0
    for step in range(trie.max_len):
        g = nodes.shape[1]
        logits, cache = decoder.decode(tokens.unsqueeze(-1), ckv, memory_mask, cache, start=step)
        steps += 1
        logits = logits[:, :, -1].float()  # [B, g, V]
        lse = torch.logsumexp(logits, dim=-1, keepdim=True)
        ctok, cnode = trie.allowed(nodes)  # [B, g, C]
        C = ctok.shape[-1]
        cand = run.unsqueeze(-1) + (logits.gather(-1, ctok.clamp(min=0)) - lse)
        cand = cand.masked_fill(ctok < 0, NEG_INF).view(B, g * C)
        K = min(2 * G, g * C)
        top, idx = cand.topk(K, dim=1)  # sorted, best first
        tok = ctok.view(B, -1).gather(1, idx)
        nxt = cnode.view(B, -1).gather(1, idx)
        finite = top > NEG_INF
        eos = (tok == trie.eos_id) & finite
        item = trie.item_at_leaf[nxt.clamp(min=0)].masked_fill(~eos, -1)
        invalid += int((eos & (item < 0)).sum())
        blocked = eos & (item < 0)
        if exclude is not None and exclude.numel():
            blocked |= eos & (item.unsqueeze(-1) == exclude.to(dev).unsqueeze(1)).any(-1)

        # finished hypotheses: eos continuations ranked within the first `beams`
        if rank_ok is None or rank_ok.shape[0] != K:
            rank_ok = torch.arange(K, device=dev) < G
        add = eos & ~blocked & rank_ok.unsqueeze(0) & active.unsqueeze(1)
        if early_stopping == "finished":
            add &= ~(fin_scores > NEG_INF).all(1, keepdim=True)
        denom = float(step + 1) ** lp if lp != 0 else 1.0  # generated tokens incl. eos
        new = (top / denom).masked_fill(~add, NEG_INF)
        fin_scores, pick = torch.cat([fin_scores, new], 1).topk(G, dim=1)
        fin_items = torch.cat([fin_items, item.masked_fill(~add, -1)], 1).gather(1, pick)

        # running hypotheses: the best non-eos continuations
        runc = top.masked_fill(eos, NEG_INF)
        rs, ridx = runc.topk(min(G, K), dim=1)
        alive = rs > NEG_INF
        n_alive = int(alive.sum(1).max())
        if n_alive == 0 or step + 1 == trie.max_len:
            break
        rs, ridx, alive = rs[:, :n_alive], ridx[:, :n_alive], alive[:, :n_alive]
        run = rs
        nodes = nxt.gather(1, ridx).masked_fill(~alive, -1)
        tokens = tok.gather(1, ridx).clamp(min=0)
        src = (idx // C).gather(1, ridx)
        cache = reorder_cache(cache, (rows * g + src).reshape(-1))

        # can a running beam still beat the worst finished one?
        if early_stopping == "never" and lp > 0:
            best = run[:, 0] / float(trie.max_len) ** lp
        else:
            best = run[:, 0] / (float(step + 1) ** lp if lp != 0 else 1.0)
        full = (fin_scores > NEG_INF).all(1)
        active &= (~full | (best > fin_scores.min(1).values)) & (run[:, 0] > NEG_INF)
        if not bool(active.any()):
            break
        if early_stopping == "finished" and bool(full.all()):
            break
    return BeamResult(fin_items, fin_scores, invalid, steps)



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


def search_arm(arm: str, model, mems, trie, beams):
    """Run one arm (old | vocab | trie) over prepared memories; (items, scores, invalid)."""
    from gramc.eval.beam import beam_search

    items, scores, invalid = [], [], 0
    for mem, mask in mems:
        if arm == "old":
            r = frozen_search(model.t5, mem, mask, trie, beams=beams)
        else:
            r = beam_search(model.t5, mem, mask, trie, beams=beams, softmax=arm)
        items.append(r.items)
        scores.append(r.scores)
        invalid += r.invalid
    return torch.cat(items), torch.cat(scores), invalid


def gramc_search(model, mems, trie, beams):
    return search_arm("vocab", model, mems, trie, beams)


def timed_arm(arm: str, model, mems, trie, beams, users: int, label: str = "") -> tuple[dict, torch.Tensor, torch.Tensor]:
    """Warm up on the first batch, then time the arm on all `mems`: rates, CPU times, faults, peak RSS."""
    search_arm(arm, model, mems[:1], trie, beams)
    with PeakRSS() as mem, CpuTime() as t:
        items, scores, invalid = search_arm(arm, model, mems, trie, beams)
    rec = {"users": users, "wall_s": round(t.wall, 2), "users_per_s": round(users / t.wall, 2),
           "user_cpu_s": round(t.user, 2), "sys_cpu_s": round(t.sys, 2), "minor_faults": int(t.minflt),
           "major_faults": int(t.majflt), "peak_rss_added_mb": round(mem.delta_mb, 1), "invalid": invalid,
           "cpu_ms_per_user": round(1000 * (t.user + t.sys) / users, 1)}
    print(f"  {label or arm:>10}: {rec['users_per_s']:7.2f} users/s  user {t.user:6.1f}s  sys {t.sys:6.1f}s  "
          f"faults {t.minflt:>9}  peak +{mem.delta_mb:.0f} MiB", flush=True)
    return rec, items, scores


def same_lists(a_items, a_scores, b_items, b_scores) -> dict:
    """Identical top lists (items in order) and the largest score difference between two arms."""
    identical = sum(int(torch.equal(x, y)) for x, y in zip(a_items, b_items))
    fin = torch.isfinite(a_scores) & torch.isfinite(b_scores)
    diff = float((a_scores - b_scores).abs()[fin].max()) if bool(fin.any()) else float("nan")
    return {"identical_lists": identical, "of": len(a_items), "max_abs_score_diff": diff}


def compare_arms(model, mems, trie, beams, users: int, arms: list[str], sorted_mems=None, order=None) -> dict:
    """old vs vocab vs trie on the same memories: per-arm records, speed-ups and list identity vs old.

    With `sorted_mems` (the same users batched longest history first, as `gramc evaluate` batches
    them; `order[i]` = the user in position i) the new arms also run as `vocab+sort`, `trie+sort`,
    their lists put back in user order before they are compared.
    """
    out: dict = {"users": users, "batch_users": int(mems[0][0].shape[0]) if mems else 0}
    lists = {}
    for arm in arms:
        out[arm], *lists[arm] = timed_arm(arm, model, mems, trie, beams, users)
    for arm in ([a for a in arms if a != "old"] if sorted_mems is not None else []):
        out[f"{arm}+sort"], items, scores = timed_arm(arm, model, sorted_mems, trie, beams, users, f"{arm}+sort")
        back = torch.as_tensor(np.argsort(order))
        lists[f"{arm}+sort"] = [items[back], scores[back]]
    arms = list(lists)
    if "old" in out:
        for arm in arms:
            if arm != "old":
                out[f"{arm}_speedup_vs_old"] = round(out[arm]["users_per_s"] / out["old"]["users_per_s"], 2)
                out[f"{arm}_cpu_speedup_vs_old"] = round(out["old"]["cpu_ms_per_user"] / out[arm]["cpu_ms_per_user"], 2)
        for arm in ("vocab", "vocab+sort"):
            if arm in lists:
                out[f"{arm}_vs_old"] = same_lists(*lists[arm], *lists["old"])
    if "trie" in lists and "vocab" in lists:
        t, v = lists["trie"][0], lists["vocab"][0]
        out["trie_vs_vocab_top10_overlap"] = round(float(np.mean(
            [len(set(a[:10].tolist()) & set(b[:10].tolist())) / 10 for a, b in zip(t, v)])), 3)
    return out


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


def hf_comparison(model, mems, trie, targets, beams, args, cfg, assets, cmp_users, table) -> dict:
    """HF generate one user at a time vs gramc's vocab search on the users HF managed in its budget."""
    hf = model.t5.to_hf_model()
    with PeakRSS() as hf_mem:
        hf_items, hf_scores, hf_s = hf_search(hf, mems, trie, targets, beams, args.hf_users, args.hf_budget)
    n = len(hf_items)
    mems_same = memories(model, assets, cfg, cmp_users[:n], table)
    rec, g_items, g_scores = timed_arm("vocab", model, mems_same, trie, beams, n)
    same = same_lists(g_items, g_scores, hf_items, hf_scores)
    print(f"  HF {n / hf_s:.2f} users/s vs gramc {rec['users_per_s']:.2f} users/s; identical lists "
          f"{same['identical_lists']}/{n}, max |score diff| {same['max_abs_score_diff']:.2e}", flush=True)
    return {"users": n, "hf_users_requested": args.hf_users, "hf_budget_s": args.hf_budget,
            "hf_s": round(hf_s, 2), "hf_users_per_s": round(n / hf_s, 2), "gramc": rec,
            "speedup": round(rec["users_per_s"] / (n / hf_s), 1), **same,
            "hf_peak_rss_added_mb": round(hf_mem.delta_mb, 1)}


def full_test(model, assets, cfg, smp, trie, beams, softmax, budget_s, table_s, table) -> dict:
    """The test users batch by batch (memory, then search), until done or `budget_s` seconds."""
    from tqdm import tqdm

    from gramc.eval.beam import beam_search
    from gramc.model.inputs import Collator

    from gramc.eval.evaluate import length_order

    collate = Collator(assets.cache, cfg, gcn_rows=assets.gcn_rows, items="global")
    smp = [smp[i] for i in length_order(smp, range(len(smp)))]  # as gramc evaluate batches them
    bs, done, inv = cfg.eval.batch_size, 0, 0
    bar = tqdm(total=len(smp), desc=f"full test ({softmax})", unit="user", smoothing=0.1, mininterval=5)
    with PeakRSS() as mem, CpuTime() as t, torch.no_grad():
        for s in range(0, len(smp), bs):
            m, mask = model.memory(collate(smp[s: s + bs]), items=table)
            r = beam_search(model.t5, m, mask, trie, beams=beams, softmax=softmax)
            inv += r.invalid
            done += m.shape[0]
            bar.update(m.shape[0])
            if time.perf_counter() - t.t0 > budget_s:
                break
    bar.close()
    rec = {"softmax": softmax, "users_done": done, "test_users": len(smp), "complete": done == len(smp),
           "budget_s": budget_s, "encode_items_s": round(table_s, 1), "memories_and_search_s": round(t.wall, 1),
           "users_per_s": round(done / t.wall, 2), "user_cpu_s": round(t.user, 1), "sys_cpu_s": round(t.sys, 1),
           "minor_faults": int(t.minflt), "peak_rss_added_mb": round(mem.delta_mb, 1), "invalid": inv,
           "total_wall_s": round(table_s + t.wall, 1), "total_wall_min": round((table_s + t.wall) / 60, 2)}
    print(f"[full test] {done}/{len(smp)} users in {t.wall:.0f}s ({rec['users_per_s']:.2f} users/s) + "
          f"{table_s:.0f}s item encoding = {rec['total_wall_min']:.1f} min"
          f"{'' if rec['complete'] else ' (stopped by the budget)'}", flush=True)
    return rec


def run_preset(preset: str, args) -> dict:
    from gramc.data.splits import samples
    from gramc.eval.evaluate import encode_all_items
    from gramc.ids.trie import trie_for

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

    cmp_users = smp[: max(args.cmp_users, args.hf_users)]
    full_users = smp if args.full_users == 0 else smp[: args.full_users]
    only = None
    if not args.all_items:  # encode the items these users need
        only = sorted({i for s in list(cmp_users) + list(full_users if args.full_budget > 0 else []) for i in s.history})
    t = time.perf_counter()
    with torch.no_grad():
        table = encode_all_items(model, assets.cache, cfg, torch.device("cpu"), progress=True, only=only)
    encoded = assets.ds.num_items if only is None else len(only)
    table_s = time.perf_counter() - t
    res["encode_items"] = {"encoded": encoded, "s": round(table_s, 1),
                           "all_items_s_estimate": round(table_s * assets.ds.num_items / max(1, encoded), 1)}

    if args.cmp_users > 0:
        from gramc.eval.evaluate import length_order

        users = cmp_users[: args.cmp_users]
        mems = memories(model, assets, cfg, users, table)
        order = length_order(users, range(len(users)))
        by_len = memories(model, assets, cfg, [users[i] for i in order], table)
        print(f"[{preset}] {args.cmp_users} users, beam {beams}, {args.threads} threads:", flush=True)
        res["arms"] = compare_arms(model, mems, trie, beams, args.cmp_users, args.arms.split(","), by_len, order)
        del mems, by_len
    if args.hf_users > 0:
        mems = memories(model, assets, cfg, cmp_users[: args.hf_users], table)
        res["hf_comparison"] = hf_comparison(model, mems, trie, targets, beams, args, cfg, assets, cmp_users, table)
        del mems
    if args.full_budget > 0:
        table_full_s = table_s if only is None else res["encode_items"]["all_items_s_estimate"]
        res["full_test"] = full_test(model, assets, cfg, full_users, trie, beams, args.full_softmax,
                                     args.full_budget, table_full_s, table)
        res["full_test"]["items_encoding_extrapolated"] = only is not None
        res["full_test"]["users_extrapolated"] = len(full_users) < len(smp)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", default="tiny")
    ap.add_argument("--cmp-users", type=int, default=256, help="users of the old/vocab/trie comparison (0 = skip)")
    ap.add_argument("--arms", default="old,vocab,trie")
    ap.add_argument("--hf-users", type=int, default=0, help="users for HF generate (0 = skip)")
    ap.add_argument("--hf-budget", type=float, default=200.0, help="seconds of HF generate per preset")
    ap.add_argument("--full-users", type=int, default=0, help="test users of the end-to-end run (0 = all)")
    ap.add_argument("--full-softmax", default="trie", choices=["vocab", "trie"])
    ap.add_argument("--full-budget", type=float, default=0.0, help="seconds for the end-to-end run (0 = skip)")
    ap.add_argument("--all-items", action="store_true", help="encode all items (else only those the users need)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--malloc", default="mmap", choices=["mmap", "default"],
                    help="mmap: MALLOC_MMAP_THRESHOLD_=65536, so that peak RSS tracks live tensors; default: glibc's")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "eval_speed.json"))
    args = ap.parse_args()
    if args.malloc == "mmap" and os.environ.get("MALLOC_MMAP_THRESHOLD_") is None:
        # large blocks via mmap (returned on free), so resident memory tracks live tensors and the
        # per-phase peaks (VmHWM) are meaningful; re-run this script with that setting
        env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
        os.execve(sys.executable, [sys.executable, *sys.argv], env)
    torch.set_num_threads(args.threads)
    if not BEAUTY.is_dir():
        sys.exit(f"{BEAUTY} not found: the benchmark needs the real Beauty data in ../shared")
    import transformers

    results = {"command": " ".join(["bench/eval_speed.py"] + sys.argv[1:]), "threads": args.threads,
               "malloc": args.malloc, "cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
               "transformers": transformers.__version__, "length_penalty": 0.0,
               "load_average_at_start": os.getloadavg(), "presets": []}
    for p in args.presets.split(","):
        results["presets"].append(run_preset(p.strip(), args))
        results["load_average_at_end"] = os.getloadavg()
        from gramc.io import write_json

        write_json(args.out, results)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
