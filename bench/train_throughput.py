"""Training throughput: GRAM-C's inputs (pre-tokenised, real passages only) vs GRAM's feed.

Beauty-like batches from the real Beauty data in ../shared (GRAM's ID file, the T5 vocabulary,
GRAM's similar_item_sasrec.txt; max_his 20, 128-token passages, 10 similar items). For each
backbone preset and dtype, the *same* model (same weights, same AdamW) is trained a few steps
fed three ways:

* `gram`:     GRAM's feed. Every step tokenises every passage string of the batch with the HF fast
              tokenizer (padded to 999, `|` tokens filtered, cut to 128, eos ensured, like GRAM's
              collator), pads every sample to max_his+1 = 21 passages of 128 tokens, encodes all of
              them and fuses the padded B x (21*128) memory. No prefix (GRAM has none).
* `sample`:   gramc's Collator, per-sample rows (dedupe=False), collaborative prefix on.
* `sequence`: gramc's Collator, sequence-level rows (train.batching=sequence), prefix on.
* `sequence-dense`: `sequence` + the dense retrieval head (model.dense.enabled=true, item=both,
              its LightGCN rows from the same stand-in table as the prefix): the collator adds each
              batch's targets and `model.dense.negatives` uniform items as item rows.
* `sequence-dense-index`: `sequence-dense` with the item-indexing task (train.indexing, ratio
              `--indexing-ratio`, 0.25 by default): the units of the measured `sequence` batches, in
              their order, with `round(ratio * interactions)` indexing samples interleaved as the
              epoch's shuffle interleaves them, packed into batch_size as training packs them (about
              1 + ratio times as many steps, run alongside the other arms' rounds; the units of one
              more plain batch fill the last one and the short tail batch is dropped). Its cost is
              charged to its interaction samples (`interaction_samples_per_s`): one epoch = n_train
              interaction samples + ratio * n_train indexing samples, in that many more steps.
* `sequence-index`: `sequence` with the item-indexing task and no dense head: the same mixed batches
              as `sequence-dense-index`, charged the same way.

`epoch_time_vs_plain` (gramc arms): CPU time of one epoch relative to plain `sequence` (same softmax
and dtype) = `sequence`'s samples/CPU-s over the arm's interaction samples/CPU-s; issue 30 asks for
at most 1.3x.

With `--softmax vocab trie` the gramc arms run twice, with `model.softmax=vocab` (the loss over
the whole vocabulary) and `model.softmax=trie` (the loss over the trie children of each target
prefix, logits only for those; arms named `sample-trie`, `sequence-trie`), same initial weights,
each with its own AdamW; `speedup_vs_vocab` compares the two on the same batches.

`--dtypes fp32 bf16` runs every arm in fp32 and under bf16 autocast on the same batches
(`speedup_vs_fp32`); bf16 pays only where the processor multiplies bf16 natively (AMX,
AVX512-BF16, Arm BF16), which the first printed line says along with the processor's name.
`--baseline OLD.json` takes the fp32 rows of this script run at an earlier commit (same machine,
same batches) as the reference of `speedup_vs_baseline`: how much faster training got. The
optimiser is gramc's (`build_optimizer`) and the allocator is set as `fit` sets it.

Per arm: samples/s, encoder tokens/s (real and padded positions), share of the step spent
outside forward/backward (collation + optimiser), and the fraction of encoded passages that are
all padding. Measured after warm-up steps, arms interleaved step by step. The CPU may be shared
with other jobs, so rates are computed on this process's CPU time (`time.process_time`), which
other jobs' load does not inflate; wall-clock figures are reported beside them.

    .venv/bin/python bench/train_throughput.py            # writes bench/results/train_throughput.json
    .venv/bin/python bench/train_throughput.py --presets tiny --batch-size 16 --arms sample sequence \
        --softmax vocab trie --out bench/results/train_throughput_trie.json
    .venv/bin/python bench/train_throughput.py --presets tiny small --batch-size 32 8 --dtypes fp32 bf16 \
        --arms sequence --steps 6 --baseline bench/results/train_speed_cpu_baseline.json \
        --out bench/results/train_speed_cpu.json           # the CPU speed figures of docs/benchmarks.md
    .venv/bin/python bench/train_throughput.py --presets tiny --batch-size 64 --dtypes fp32 bf16 \
        --arms sequence sequence-dense sequence-dense-index --steps 8 \
        --out bench/results/train_speed_dense.json         # issue 30: dense head + item indexing cost
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from gramc.ids.tokens import IGNORE_INDEX  # HF's -100, the label padding both feeds use

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT / ".." / "shared"
BEAUTY = SHARED / "datasets" / "amazon-beauty"
T5_VOCAB = SHARED / "tokenizers" / "t5-base-spm"
IDS_FILE = BEAUTY / "item_generative_indexing_hierarchy_v1_c128_l7_len32768_split.txt"

MAX_HIS = 20
PASSAGE_LEN = 128
SIMILAR = 10


@dataclass
class Step:
    samples: int
    collate_s: float
    fwdbwd_s: float
    opt_s: float
    passages: int
    pad_passages: int
    positions: int
    real_tokens: int
    interactions: int = -1  # samples that are not item-indexing samples (-1: all of them)


@dataclass
class ArmResult:
    arm: str
    preset: str
    dtype: str
    batch_size: int
    steps: list[Step] = field(default_factory=list)

    def summary(self) -> dict:
        s = self.steps
        total = sum(x.collate_s + x.fwdbwd_s + x.opt_s for x in s)
        outside = sum(x.collate_s + x.opt_s for x in s)
        interactions = sum(x.samples if x.interactions < 0 else x.interactions for x in s)
        extra = {}
        if interactions != sum(x.samples for x in s):
            extra = {"interaction_samples_per_s": interactions / total,
                     "indexing_share": 1 - interactions / sum(x.samples for x in s)}
        return {
            "arm": self.arm, "preset": self.preset, "dtype": self.dtype, "batch_size": self.batch_size,
            "measured_steps": len(s),
            "samples_per_s": sum(x.samples for x in s) / total,
            "encoder_real_tokens_per_s": sum(x.real_tokens for x in s) / total,
            "encoder_positions_per_s": sum(x.positions for x in s) / total,
            "step_s": total / len(s),
            "collate_s": sum(x.collate_s for x in s) / len(s),
            "opt_s": sum(x.opt_s for x in s) / len(s),
            "share_outside_fwd_bwd": outside / total,
            "padding_passage_fraction": sum(x.pad_passages for x in s) / sum(x.passages for x in s),
            "passages_per_sample": sum(x.passages for x in s) / sum(x.samples for x in s),
            **extra,
        }


# ------------------------------------------------------------------------------------------------
# GRAM's feed (reproduced for comparison only; gramc never does this)
# ------------------------------------------------------------------------------------------------


class GramFeed:
    """Strings built once per item (as GRAM does), tokenised at every step (as GRAM does)."""

    def __init__(self, hf_tok, item_ids, texts: list[str], similar: list[list[int]]) -> None:
        self.tok = hf_tok
        self.ids = [item_ids.id_string(i) for i in range(item_ids.num_items)]
        self.item_passages = [
            f"item: {self.ids[i]}; similar items: {', '.join(self.ids[j] for j in similar[i])}; {texts[i]}"
            for i in range(item_ids.num_items)
        ]
        self.bars = torch.tensor([t for t in (hf_tok.convert_tokens_to_ids("|"), hf_tok.convert_tokens_to_ids("▁|"))
                                  if t is not None and t != hf_tok.unk_token_id])

    def _encode(self, texts: list[str], max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        enc = self.tok(texts, padding="max_length", max_length=999, truncation=True, return_tensors="pt")
        ids, mask = enc["input_ids"], enc["attention_mask"].bool()
        keep = ~torch.isin(ids, self.bars)
        out_ids = torch.zeros(len(texts), max_len, dtype=torch.long)
        out_mask = torch.zeros(len(texts), max_len, dtype=torch.bool)
        for r in range(len(texts)):  # GRAM filters row by row
            row, m = ids[r][keep[r]][:max_len], mask[r][keep[r]][:max_len]
            n_real = int(m.sum())
            if 1 not in row[:n_real].tolist():
                row[n_real - 1] = 1
            out_ids[r, : len(row)] = row
            out_mask[r, : len(m)] = m
        return out_ids, out_mask

    def __call__(self, samples) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b = len(samples)
        ids = torch.zeros(b, MAX_HIS + 1, PASSAGE_LEN, dtype=torch.long)
        mask = torch.zeros(b, MAX_HIS + 1, PASSAGE_LEN, dtype=torch.bool)
        targets = []
        for r, s in enumerate(samples):
            his = list(s.history[-MAX_HIS:])[::-1]
            passages = ["What would user purchase after " + " ; ".join(self.ids[i] for i in his) + " ?"]
            passages += [self.item_passages[i] for i in his]
            pi, pm = self._encode(passages, PASSAGE_LEN)
            ids[r, : len(passages)] = pi
            mask[r, : len(passages)] = pm
            targets.append(self.ids[s.target])
        enc = self.tok(targets, padding="max_length", max_length=99, truncation=True, return_tensors="pt")
        t, tm = enc["input_ids"], enc["attention_mask"].bool()
        keep = ~torch.isin(t, self.bars) & tm
        labels = torch.full((b, 32), IGNORE_INDEX, dtype=torch.long)
        for r in range(b):
            row = t[r][keep[r]][:32]
            labels[r, : len(row)] = row
        width = int((labels != IGNORE_INDEX).sum(1).max())
        return ids, mask, labels[:, :width]


def gram_loss(model, ids: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """GRAM's forward: encode all B*N passages (padding included), add E[j], fuse the padded memory."""
    from gramc.model.t5 import shift_right

    b, n, length = ids.shape
    states = model.t5.encode(ids.view(b * n, length), mask.view(b * n, length))
    d = states.shape[-1]
    states = states.view(b, n, length, d) + model.passage_pos.weight[:n][None, :, None, :].to(states.dtype)
    memory = states.reshape(b, n * length, d)
    logits, _ = model.t5.decode(shift_right(labels)[:, None], model.t5.cross_kv(memory), mask.view(b, n * length))
    return F.cross_entropy(logits[:, 0].float().reshape(-1, logits.shape[-1]), labels.reshape(-1),
                           ignore_index=IGNORE_INDEX)


# ------------------------------------------------------------------------------------------------
# Measurement
# ------------------------------------------------------------------------------------------------


def _clock() -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process): the CPU clock is robust to other jobs' load."""
    return time.perf_counter(), time.process_time()


def run_step(arm: str, model, opt, samples, collate, dtype: str) -> tuple[Step, Step, float]:
    """One training step; returns (wall-clock Step, CPU-time Step, loss)."""
    model.train()
    c0 = _clock()
    fed = collate(samples)
    c1 = _clock()
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if dtype == "bf16" else _Null()
    with ctx:
        if arm == "gram":
            ids, mask, labels = fed
            loss = gram_loss(model, ids, mask, labels)
            passages = ids.shape[0] * ids.shape[1]
            pad = int((~mask.any(-1)).sum())
            positions = ids.numel()
            real = int(mask.sum())
        else:
            loss_sum, n_tok = model(fed)
            loss = loss_sum / n_tok
            k_pre = fed.recent_item_ids.shape[1] if (model.prefix is not None and
                                                     model.placement == "user_passage") else 0
            passages = fed.user_input.shape[0] + fed.item_input.shape[0]
            pad = int((~fed.item_mask.any(-1)).sum()) + int((~fed.user_mask.any(-1)).sum())
            positions = fed.user_input.shape[0] * (fed.user_input.shape[1] + k_pre) + fed.item_input.numel()
            real = int(fed.user_mask.sum()) + int(fed.item_mask.sum()) + \
                (int((fed.recent_item_ids != 0).sum()) if k_pre else 0)
    loss.backward()
    c2 = _clock()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    c3 = _clock()
    interactions = sum(not s.indexing for s in samples)
    steps = tuple(Step(len(samples), c1[k] - c0[k], c2[k] - c1[k], c3[k] - c2[k], passages, pad, positions, real,
                       interactions)
                  for k in (0, 1))
    return steps[0], steps[1], float(loss.detach())


def build_model(cfg, softmax: str, vocab_size: int, table, trie, dense=None):
    """(GramC with `model.softmax=softmax`, gramc's AdamW as training builds it); the same initial
    weights for every mode (the dense head, built last, adds its own). `dense`: the DenseTables of
    a model whose `cfg.model.dense.enabled` is true."""
    import copy

    from gramc.config import TrainConfig
    from gramc.model.gramc import GramC
    from gramc.train.optim import build_optimizer

    mcfg = copy.deepcopy(cfg.model)
    mcfg.softmax = softmax
    torch.manual_seed(0)
    model = GramC(mcfg, MAX_HIS, vocab_size, table, trie if softmax == "trie" else None, dense)
    opt = build_optimizer(model, TrainConfig(lr=1e-3, weight_decay=0.01, eps=1e-6))
    return model, opt


def bf16_probe() -> dict:
    """CPU seconds of one fp32 and one bf16 matmul: tells whether bf16 training makes sense here."""
    a, b = torch.randn(1024, 512), torch.randn(512, 1024)
    out = {}
    for name, dt in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        x, y = a.to(dt), b.to(dt)
        x @ y
        t = time.process_time()
        for _ in range(3):
            x @ y
        out[name] = (time.process_time() - t) / 3
    out["bf16_over_fp32"] = out["bf16"] / out["fp32"]
    return out


def profile_rounds(rows: int):
    """`torch.profiler` over the measured rounds when `--profile N` asks for its top N ops (CPU time
    then includes the profiler's overhead), else a context that does nothing."""
    if not rows:
        return _Null()
    from torch.profiler import ProfilerActivity, profile

    return profile(activities=[ProfilerActivity.CPU])


def units_by_batch(units: list, bsz: int, seed: int) -> list[list]:
    """The units of each micro-batch of epoch 0 of plain batching (`global_micro_batches(units, bsz,
    seed, 0)`): the same shuffle and the same packing, the units kept apart."""
    from gramc.train.batching import global_micro_batches

    g = torch.Generator().manual_seed(seed)
    out: list[list] = [[]]
    for i in torch.randperm(len(units), generator=g).tolist():
        if out[-1] and sum(len(u) for u in out[-1]) + len(units[i]) > bsz:
            out.append([])
        out[-1].append(units[i])
    assert [[s for u in b for s in u] for b in out] == global_micro_batches(units, bsz, seed, 0)
    return out


def mixed_batches(units: list, ratio: float, bsz: int, ds, items: str, seed: int) -> list[list]:
    """The micro-batches an epoch with item indexing has over the interaction samples of `units`
    (those of consecutive plain micro-batches, in order): `round(ratio * interactions)` item-indexing
    units (`indexing_samples`) inserted at uniformly drawn places, as the shuffle of all units
    (`global_micro_batches`) interleaves them, packed into `bsz` (`pack`). The last batch, short
    unless by chance, is left out (an epoch has one short batch in thousands): pass a batch's worth
    of units more than are to be measured."""
    from gramc.data.splits import indexing_samples
    from gramc.train.batching import pack

    units = list(units)
    count = round(ratio * sum(len(u) for u in units))
    g = torch.Generator().manual_seed(seed)
    places = sorted(torch.randint(len(units) + 1, (count,), generator=g).tolist(), reverse=True)
    for place, sample in zip(places, indexing_samples(ds, items, count, seed)):
        units.insert(place, (sample,))
    return pack(units, bsz)[:-1]


def relative_to_plain(results: list[dict]) -> None:
    """`epoch_time_vs_plain`: CPU time of one epoch of each gramc arm relative to plain `sequence` of
    the same preset, dtype, batch size and softmax: plain's samples/CPU-s over the arm's interaction
    samples/CPU-s (an indexing arm's indexing samples and extra steps are part of its epoch's cost)."""
    for r in results:
        ref = next((x for x in results if x["feed"] == "sequence" and x["softmax"] == r["softmax"]
                    and (x["preset"], x["dtype"], x["batch_size"]) == (r["preset"], r["dtype"], r["batch_size"])),
                   None)
        if ref is None or r["feed"] not in ("sequence", "sequence-dense", "sequence-dense-index", "sequence-index"):
            continue
        r["epoch_time_vs_plain"] = ref["samples_per_s"] / r.get("interaction_samples_per_s", r["samples_per_s"])
        r["wall"]["epoch_time_vs_plain"] = (ref["wall"]["samples_per_s"] /
                                            r["wall"].get("interaction_samples_per_s", r["wall"]["samples_per_s"]))


def relative_to_fp32(results: list[dict], preset: str) -> None:
    """`speedup_vs_fp32`: each row of `preset` against the fp32 row of the same arm (same batches)."""
    rows = [r for r in results if r["preset"] == preset]
    for r in rows:
        ref = next((x for x in rows if x["arm"] == r["arm"] and x["dtype"] == "fp32"), None)
        if ref is not None and r["dtype"] != "fp32":
            r["speedup_vs_fp32"] = r["samples_per_s"] / ref["samples_per_s"]
            r["wall"]["speedup_vs_fp32"] = r["wall"]["samples_per_s"] / ref["wall"]["samples_per_s"]


def load_baseline(path: str) -> dict:
    """An earlier results JSON of this script: its command, machine, and fp32 rows by (preset, arm)."""
    old = json.loads(Path(path).read_text(encoding="utf-8"))
    rows = {(r["preset"], r["arm"], r["batch_size"]): r for r in old["results"] if r["dtype"] == "fp32"}
    return {"file": str(path), "command": old.get("command"), "machine": old.get("machine"),
            "git_commit": old.get("git_commit"), "rows": rows}


def relative_to_baseline(results: list[dict], rows: dict) -> None:
    """`speedup_vs_baseline`: each row against the baseline's fp32 row of the same preset, feed and
    batch size (a trie arm against the baseline's vocab arm of its feed)."""
    for r in results:
        ref = rows.get((r["preset"], r.get("feed", r["arm"]), r["batch_size"]))
        if ref is not None:
            r["speedup_vs_baseline"] = r["samples_per_s"] / ref["samples_per_s"]
            r["wall"]["speedup_vs_baseline"] = r["wall"]["samples_per_s"] / ref["wall"]["samples_per_s"]


def plot_results(report: dict, path: str | Path) -> None:
    """Bar chart per preset: samples per CPU-second of each arm and dtype, with the speed-up over the
    baseline's fp32 (when given) or over this run's fp32 on the bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    presets = sorted({r["preset"] for r in report["results"]}, key=lambda p: p != "tiny")
    fig, axes = plt.subplots(1, len(presets), figsize=(5.2 * len(presets), 3.8), squeeze=False)
    for ax, preset in zip(axes[0], presets):
        rows = [r for r in report["results"] if r["preset"] == preset]
        before = [{**r, "dtype": "fp32", "before": True} for r in (report.get("baseline") or {}).get("rows", [])
                  if r["preset"] == preset]
        rows = before + rows
        labels = [f"{r['arm']}\n{r['dtype']}" + ("\n(before)" if r.get("before") else "") for r in rows]
        colours = ["#999999" if r.get("before") else "#dd8452" if r["dtype"] == "bf16" else "#4c72b0" for r in rows]
        bars = ax.bar(labels, [r["samples_per_s"] for r in rows], color=colours)
        for bar, r in zip(bars, rows):
            ratio = r.get("speedup_vs_baseline", r.get("speedup_vs_fp32"))
            if ratio is not None:
                ax.annotate(f"{ratio:.2f}x", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                            ha="center", va="bottom", fontsize=8)
        ax.tick_params(axis="x", labelsize=7)
        ax.set_title(f"{preset}, batch {rows[-1]['batch_size']}", fontsize=9)
        ax.set_ylabel("training samples / CPU-second")
    ref = "over the baseline's fp32" if report.get("baseline") else "over fp32"
    fig.suptitle(f"{report['machine']['cpu']}, {report['machine']['threads']} thread(s): speed-up {ref}",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


class _Null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--presets", nargs="+", default=["tiny", "small"])
    p.add_argument("--dtypes", nargs="+", default=["fp32"], choices=["fp32", "bf16"],
                   help="bf16 only where the CPU has native bf16 matmul (see the probe in the output)")
    p.add_argument("--batch-size", nargs="+", type=int, default=[16, 4],
                   help="samples per micro-batch, one per preset")
    p.add_argument("--warmup", type=int, default=1, help="warm-up rounds (one sample per arm each)")
    p.add_argument("--steps", type=int, default=3, help="measured rounds (one full batch per arm each)")
    p.add_argument("--max-seconds", type=float, default=600.0,
                   help="wall budget per preset x dtype: stop after the round that exceeds it (>= 1 measured)")
    p.add_argument("--threads", type=int, default=1,
                   help="1 by default: on a loaded machine OpenMP threads spin and inflate CPU time")
    p.add_argument("--arms", nargs="+", default=["gram", "sample", "sequence"],
                   choices=["gram", "sample", "sequence", "sequence-dense", "sequence-dense-index",
                            "sequence-index"])
    p.add_argument("--indexing-ratio", type=float, default=0.25,
                   help="item-indexing samples per interaction sample in the indexing arms "
                        "(train.indexing.ratio)")
    p.add_argument("--softmax", nargs="+", default=["vocab"], choices=["vocab", "trie"],
                   help="output normalisations of the gramc arms (model.softmax)")
    p.add_argument("--allocator", choices=["keep", "system"], default="keep",
                   help="keep: glibc keeps freed memory, as training on the CPU does (gramc.runtime."
                        "keep_freed_memory); system: the C library's defaults")
    p.add_argument("--profile", type=int, default=0, metavar="N",
                   help="print the N ops with the most CPU time over the measured rounds (torch.profiler)")
    p.add_argument("--baseline", default="",
                   help="a results JSON of this script from an earlier commit: each arm's fp32 row there is the "
                        "reference of speedup_vs_baseline (same machine and batches)")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "train_throughput.json"))
    args = p.parse_args(argv)
    baseline = load_baseline(args.baseline) if args.baseline else None
    if baseline is not None and (baseline["machine"] or {}).get("threads") != args.threads:
        raise SystemExit(f"--baseline {args.baseline} ran with {(baseline['machine'] or {}).get('threads')} "
                         f"thread(s), this run with {args.threads}: compare like with like")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    from transformers import PreTrainedTokenizerFast

    from gramc.config import load_config
    from gramc.data.prepare import build_dataset
    from gramc.data.splits import indexing_samples, item_training_counts
    from gramc.data.splits import samples as split_samples
    from gramc.data.text import item_texts
    from gramc.graph.similar import read_similar_items
    from gramc.ids.itemids import load_gram_ids
    from gramc.ids.trie import trie_for
    from gramc.ids.tokenizer import load_tokenizer
    from gramc.io import write_json
    from gramc.model.dense import DenseTables
    from gramc.model.inputs import Collator, PassageCache
    from gramc.train.batching import global_micro_batches, make_units

    from gramc.runinfo import cpu_model, git_commit
    from gramc.runtime import keep_freed_memory
    from gramc.train.precision import CpuBf16

    native = CpuBf16.detect()
    allocator = keep_freed_memory() if args.allocator == "keep" else {"applied": False, "why": "system default"}
    print(f"processor: {cpu_model()}; torch {torch.__version__} ({torch.backends.cpu.get_cpu_capability()}), "
          f"{args.threads} thread(s); native bf16: {native.native} ({native}); allocator: {allocator['why']}",
          flush=True)
    probe = bf16_probe()
    print(f"bf16 matmul probe (1024x512 @ 512x1024, CPU s): {probe}", flush=True)
    t0 = time.perf_counter()
    cfg = load_config(None, [f"data.max_his={MAX_HIS}", f"model.passage_len={PASSAGE_LEN}",
                             f"model.user_passage_len={PASSAGE_LEN}", f"model.similar_items={SIMILAR}"])
    ds = build_dataset(BEAUTY / "user_sequence.txt", BEAUTY / "Amazon_Beauty.item", cfg)
    texts = item_texts(ds, cfg.data)
    tok = load_tokenizer(T5_VOCAB)
    item_ids = load_gram_ids(IDS_FILE, ds, tok)
    similar = read_similar_items(BEAUTY / "similar_item_sasrec.txt", ds, SIMILAR)
    t_load = time.perf_counter() - t0
    t0 = time.perf_counter()
    cache = PassageCache.build(tok, item_ids, texts, similar, cfg.model)
    t_cache = time.perf_counter() - t0
    trunc = {k: {"kept": v.kept, "cut": v.cut, "share_cut": v.share_cut} for k, v in cache.truncation().items()}
    print(f"Beauty: {ds.num_items} items, {ds.num_users} users; loaded in {t_load:.1f} s; "
          f"passage cache built once in {t_cache:.1f} s; truncation {trunc}", flush=True)
    hf_tok = PreTrainedTokenizerFast(tokenizer_file=str(T5_VOCAB / "tokenizer.json"), eos_token="</s>",
                                     pad_token="<pad>", unk_token="<unk>")
    gram_feed = GramFeed(hf_tok, item_ids, texts, similar)
    # a random frozen table stands in for LightGCN (values do not change the cost)
    g = torch.Generator().manual_seed(0)
    table = torch.nn.functional.normalize(torch.randn(ds.num_items + 1, cfg.gcn.dim, generator=g), dim=1)
    table[0] = 0
    gcn_rows = torch.arange(1, ds.num_items + 1)
    train = split_samples(ds, "train", MAX_HIS)
    dense_arms = [a for a in args.arms if a.startswith("sequence-dense")]
    # the dense head's tables: the same stand-in LightGCN table and rows as the prefix
    dense_tables = DenseTables(ds.num_items, torch.tensor(item_training_counts(ds), dtype=torch.float32),
                               table, gcn_rows)

    results = []
    for preset, bsz in zip(args.presets, args.batch_size):
        n_batches = args.warmup + args.steps
        seq_batches = global_micro_batches(make_units(train, "sequence", bsz), bsz, 2023, 0)[:n_batches]
        smp_batches = global_micro_batches(make_units(train, "sample", bsz), bsz, 2023, 0)[:n_batches]
        cfg.model.preset = preset
        dcfg = copy.deepcopy(cfg)  # + the dense head (item vectors from text and LightGCN)
        dcfg.model.dense.enabled, dcfg.model.dense.item = True, "both"
        # per arm and round, the micro-batches it runs: warm-up rounds a single sample (one-time
        # kernel/allocator set-up), measured rounds one plain batch (the indexing arm: its share of
        # the mixed batches that cover the same interaction samples)
        def plain_rounds(batches):
            return [[b[:1]] if k < args.warmup else [b] for k, b in enumerate(batches)]

        idx_rounds = []
        if {"sequence-dense-index", "sequence-index"} & set(args.arms):
            seq_units = units_by_batch(make_units(train, "sequence", bsz), bsz, 2023)
            mixed = mixed_batches([u for b in seq_units[args.warmup:n_batches + 1] for u in b],
                                  args.indexing_ratio, bsz, ds, cfg.train.indexing.items, cfg.run.seed)
            spare = iter(indexing_samples(ds, cfg.train.indexing.items, args.warmup, cfg.run.seed + 1))
            idx_rounds = [[seq_batches[k][:1] + [next(spare)]] for k in range(args.warmup)]
            cuts = [round(j * len(mixed) / args.steps) for j in range(args.steps + 1)]
            idx_rounds += [mixed[cuts[j]:cuts[j + 1]] for j in range(args.steps)]
            n_int = sum(not x.indexing for b in mixed for x in b)
            print(f"indexing arm: {len(mixed)} mixed batches for {sum(len(b) for b in seq_batches[args.warmup:])} "
                  f"plain samples in {args.steps} batches; {n_int} interaction + "
                  f"{sum(len(b) for b in mixed) - n_int} indexing samples", flush=True)
        for dtype in args.dtypes:
            models = {(sm, False): build_model(cfg, sm, tok.vocab_size, table, trie_for(item_ids))
                      for sm in args.softmax}
            if dense_arms:
                models.update({(sm, True): build_model(dcfg, sm, tok.vocab_size, table, trie_for(item_ids),
                                                       dense_tables) for sm in args.softmax})
            n_params = sum(p.numel() for p in next(iter(models.values()))[0].parameters())
            print(f"== {preset} ({n_params / 1e6:.1f} M params), {dtype}, batch {bsz}", flush=True)
            dense_collate = Collator(cache, dcfg, gcn_rows, dedupe=True) if dense_arms else None
            feeds = {"gram": (plain_rounds(smp_batches), gram_feed, "vocab"),
                     "sample": (plain_rounds(smp_batches), Collator(cache, cfg, gcn_rows, dedupe=False), None),
                     "sequence": (plain_rounds(seq_batches), Collator(cache, cfg, gcn_rows, dedupe=True), None),
                     "sequence-index": (idx_rounds, Collator(cache, cfg, gcn_rows, dedupe=True), None),
                     "sequence-dense": (plain_rounds(seq_batches), dense_collate, None),
                     "sequence-dense-index": (idx_rounds, dense_collate, None)}
            arms = []  # (name, rounds, collate, (softmax, dense), feed)
            for a in args.arms:
                rounds, collate, only = feeds[a]
                for sm in ([only] if only else args.softmax):
                    if (sm, False) in models:
                        arms.append((a if sm == "vocab" else f"{a}-{sm}", rounds, collate,
                                     (sm, a.startswith("sequence-dense")), a))
            kinds = {name: (key[0], a) for name, _, _, key, a in arms}
            # arms interleaved step by step, so that they share whatever load the machine has
            wall = {a: ArmResult(a, preset, dtype, bsz) for a, *_ in arms}
            cpu = {a: ArmResult(a, preset, dtype, bsz) for a, *_ in arms}
            t_cfg = time.perf_counter()
            profiler = profile_rounds(args.profile)
            for k in range(n_batches):
                if k == args.warmup:
                    profiler.__enter__()
                for arm, rounds, collate, key, feed in arms:
                    model, opt = models[key]
                    for fed in rounds[k]:
                        w, c, loss = run_step(feed, model, opt, fed, collate, dtype)
                        tag = " (warm-up)" if k < args.warmup else ""
                        print(f"  {arm:8s} step {k}{tag}: wall {w.collate_s + w.fwdbwd_s + w.opt_s:6.2f} s, "
                              f"cpu {c.collate_s + c.fwdbwd_s + c.opt_s:6.2f} s (collate {c.collate_s:.3f}, "
                              f"fwd+bwd {c.fwdbwd_s:.2f}, opt {c.opt_s:.3f}) loss {loss:.3f}", flush=True)
                        if k >= args.warmup:
                            wall[arm].steps.append(w)
                            cpu[arm].steps.append(c)
                if k >= args.warmup and time.perf_counter() - t_cfg > args.max_seconds:
                    break
            profiler.__exit__(None, None, None)
            if args.profile:
                print(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.profile),
                      flush=True)
            for arm, *_ in arms:
                res = cpu[arm].summary()
                res["softmax"], res["feed"] = kinds[arm]
                res["clock"] = "process CPU time"
                res["wall"] = {k: v for k, v in wall[arm].summary().items()
                               if k in ("samples_per_s", "step_s", "share_outside_fwd_bwd",
                                        "encoder_real_tokens_per_s", "interaction_samples_per_s")}
                results.append(res)
                print(f"  -> {arm}: {res['samples_per_s']:.2f} samples/CPU-s "
                      f"({res['wall']['samples_per_s']:.2f}/wall-s), "
                      f"{res['encoder_real_tokens_per_s']:.0f} real enc tok/CPU-s, "
                      f"outside fwd/bwd {100 * res['share_outside_fwd_bwd']:.1f}%, "
                      f"padding passages {100 * res['padding_passage_fraction']:.1f}%", flush=True)
            mine = [r for r in results if r["preset"] == preset and r["dtype"] == dtype]
            base = next((r for r in mine if r["arm"] == "gram"), None)
            for r in mine:
                if base is not None:
                    r["speedup_vs_gram"] = r["samples_per_s"] / base["samples_per_s"]
                    r["wall"]["speedup_vs_gram"] = r["wall"]["samples_per_s"] / base["wall"]["samples_per_s"]
                vocab = next((v for v in mine if v["feed"] == r["feed"] and v["softmax"] == "vocab"), None)
                if r["softmax"] != "vocab" and vocab is not None:
                    r["speedup_vs_vocab"] = r["samples_per_s"] / vocab["samples_per_s"]
                    r["wall"]["speedup_vs_vocab"] = r["wall"]["samples_per_s"] / vocab["wall"]["samples_per_s"]
        relative_to_fp32(results, preset)
    relative_to_plain(results)
    if baseline is not None:
        relative_to_baseline(results, baseline["rows"])

    report = {
        "command": "python bench/train_throughput.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d"),
        "git_commit": git_commit(),
        "machine": {"cpu": cpu_model(), "arch": platform.machine(), "threads": args.threads,
                    "torch": torch.__version__, "capability": torch.backends.cpu.get_cpu_capability()},
        "data": {"dataset": "amazon-beauty", "items": ds.num_items, "train_samples": len(train),
                 "max_his": MAX_HIS, "passage_len": PASSAGE_LEN, "similar_items": SIMILAR,
                 "cache_build_s": t_cache, "truncation": trunc},
        "bf16_matmul_probe": probe,
        "native_bf16": {"native": native.native, **dataclasses.asdict(native)},
        "cpu_allocator": allocator,
        **({"dense": dataclasses.asdict(dcfg.model.dense), "indexing": {
            "ratio": args.indexing_ratio, "items": cfg.train.indexing.items,
            "epoch": f"n_train interaction samples + round({args.indexing_ratio} * n_train) indexing samples"}}
           if dense_arms else {}),
        "baseline": None if baseline is None else {
            **{k: v for k, v in baseline.items() if k != "rows"},
            "rows": [{"preset": k[0], "arm": k[1], "batch_size": k[2], "samples_per_s": r["samples_per_s"]}
                     for k, r in baseline["rows"].items()]},
        "targets": {"share_outside_fwd_bwd": "< 0.10", "padding_passage_fraction": "0",
                    "speedup_sample": ">= 2.5", "speedup_sequence": ">= 5", "epoch_time_vs_plain": "<= 1.3"},
        "results": results,
    }
    write_json(args.out, report)
    plot_results(report, Path(args.out).with_suffix(".png"))
    refs = ("speedup_vs_gram", "speedup_vs_vocab", "speedup_vs_fp32", "speedup_vs_baseline")
    print(f"\n{'preset':6s} {'dtype':5s} {'arm':18s} {'samples/CPU-s':>13s} {'enc tok/CPU-s':>13s} "
          f"{'outside':>8s} {'pad psg':>8s}  speed-ups (CPU time; wall in brackets)")
    for r in results:
        ups = ", ".join(f"{k[len('speedup_'):]} {r[k]:.2f}x ({r['wall'].get(k, float('nan')):.2f}x)"
                        for k in refs if k in r)
        if "interaction_samples_per_s" in r:
            ups += f"{', ' if ups else ''}{r['interaction_samples_per_s']:.2f} interaction samples/CPU-s"
        if "epoch_time_vs_plain" in r:
            ups += (f"{', ' if ups else ''}epoch time vs plain {r['epoch_time_vs_plain']:.2f}x "
                    f"({r['wall']['epoch_time_vs_plain']:.2f}x)")
        print(f"{r['preset']:6s} {r['dtype']:5s} {r['arm']:18s} {r['samples_per_s']:13.2f} "
              f"{r['encoder_real_tokens_per_s']:13.0f} {100 * r['share_outside_fwd_bwd']:7.1f}% "
              f"{100 * r['padding_passage_fraction']:7.1f}%  {ups}")
    print(f"wrote {args.out} and {Path(args.out).with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
