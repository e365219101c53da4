"""The compact T5 backbone (gramc.model.t5) against the alternatives it replaces.

1. Beam decoding with cross-attention keys/values shared by the G beams of a user (`decode` with
   dec_ids [B, G, 1]) vs the usual way of copying the encoder memory per beam (B*G rows), same
   weights, same greedy-per-beam token choice: seconds per search (cross K/V included) and the
   bytes of cross K/V held. Also checks both give the same logits.
2. A training step (forward + backward, teacher forcing) of our T5 vs transformers'
   T5ForConditionalGeneration with identical weights (`T5.to_hf_model()`), plus the max logit gap.

Random weights (speed does not depend on them), float32, CPU, `--threads` threads. Median of
`--repeats` timed runs after one warm-up. Writes bench/results/t5_backbone.json.

    .venv/bin/python bench/t5_backbone.py                 # tiny and small presets
    .venv/bin/python bench/t5_backbone.py --presets tiny  # quicker
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from gramc.io import write_json  # noqa: E402
from gramc.model.t5 import T5, T5Dims  # noqa: E402

VOCAB = 32100  # the T5 sentencepiece vocabulary


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def beam_decode(model: T5, memory: torch.Tensor, mask: torch.Tensor, beams: int, steps: int, shared: bool):
    """Greedy continuation of `beams` hypotheses per user for `steps` steps; returns all logits."""
    B = memory.shape[0]
    if shared:
        ckv, mm, shape = model.cross_kv(memory), mask, (B, beams)
    else:
        ckv = model.cross_kv(memory.repeat_interleave(beams, 0))
        mm, shape = mask.repeat_interleave(beams, 0), (B * beams, 1)
    tok = (torch.arange(B * beams) % 7).view(*shape, 1)  # distinct start tokens per beam
    cache, out = None, []
    for t in range(steps):
        logits, cache = model.decode(tok, ckv, mm, cache, start=t)
        out.append(logits.reshape(B, beams, -1))
        tok = logits[..., -1:, :].argmax(-1)
    kv_bytes = sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in ckv)
    return torch.stack(out, 2), kv_bytes


def bench_decode(preset: str, users: int, beams: int, mem_len: int, steps: int, repeats: int) -> dict:
    torch.manual_seed(0)
    model = T5(T5Dims.preset(preset, VOCAB)).eval()
    memory = torch.randn(users, mem_len, model.dims.d_model)
    mask = torch.ones(users, mem_len, dtype=torch.bool)
    mask[users // 2:, mem_len * 3 // 4:] = False
    with torch.no_grad():
        shared_logits, shared_bytes = beam_decode(model, memory, mask, beams, steps, True)
        copied_logits, copied_bytes = beam_decode(model, memory, mask, beams, steps, False)
        t_shared = timed(lambda: beam_decode(model, memory, mask, beams, steps, True), repeats)
        t_copied = timed(lambda: beam_decode(model, memory, mask, beams, steps, False), repeats)
    return {"preset": preset, "users": users, "beams": beams, "memory_tokens": mem_len, "steps": steps,
            "shared_s": round(t_shared, 4), "copied_s": round(t_copied, 4),
            "speedup": round(t_copied / t_shared, 2),
            "cross_kv_mib_shared": round(shared_bytes / 2**20, 1), "cross_kv_mib_copied": round(copied_bytes / 2**20, 1),
            "max_logit_diff": float((shared_logits - copied_logits).abs().max())}


def bench_train(preset: str, passages: int, length: int, target: int, repeats: int) -> dict:
    torch.manual_seed(0)
    ours = T5(T5Dims.preset(preset, VOCAB, dropout_rate=0.0)).train()
    hf = ours.to_hf_model().train()
    ids = torch.randint(3, VOCAB, (passages, length))
    mask = torch.ones(passages, length, dtype=torch.bool)
    mask[:, length * 3 // 4:] = False
    labels = torch.randint(3, VOCAB, (passages, target))

    def step_ours():
        ours.zero_grad(set_to_none=True)
        logits = ours(ids, mask, labels)
        logits.square().mean().backward()
        return logits

    def step_hf():
        hf.zero_grad(set_to_none=True)
        logits = hf(input_ids=ids, attention_mask=mask.long(), labels=labels).logits
        logits.square().mean().backward()
        return logits

    gap = float((step_ours().detach() - step_hf().detach()).abs().max())
    t_ours, t_hf = timed(step_ours, repeats), timed(step_hf, repeats)
    return {"preset": preset, "passages": passages, "passage_len": length, "target_len": target,
            "ours_s": round(t_ours, 4), "hf_s": round(t_hf, 4), "hf_over_ours": round(t_hf / t_ours, 2),
            "max_logit_diff_vs_hf": gap}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", default="tiny,small")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "t5_backbone.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    presets = [p for p in args.presets.split(",") if p]
    decode = [bench_decode(p, users=16, beams=20, mem_len=1024 if p == "tiny" else 512, steps=4,
                           repeats=args.repeats) for p in presets]
    train = [bench_train(p, passages=32 if p == "tiny" else 8, length=128, target=8, repeats=args.repeats)
             for p in presets]
    result = {"machine": {"cpu": platform.processor() or platform.machine(), "threads": args.threads,
                          "torch": torch.__version__},
              "decode_shared_vs_copied": decode, "train_step_vs_hf": train}
    for row in decode:
        print(f"decode {row['preset']}: {row['users']} users x {row['beams']} beams, {row['memory_tokens']} memory "
              f"tokens, {row['steps']} steps: shared {row['shared_s']:.3f}s vs copied {row['copied_s']:.3f}s "
              f"(x{row['speedup']}), cross K/V {row['cross_kv_mib_shared']} vs {row['cross_kv_mib_copied']} MiB, "
              f"max logit diff {row['max_logit_diff']:.1e}")
    for row in train:
        print(f"train step {row['preset']}: {row['passages']} x {row['passage_len']} tokens -> {row['target_len']}: "
              f"ours {row['ours_s']:.3f}s vs HF {row['hf_s']:.3f}s (HF/ours {row['hf_over_ours']}), "
              f"max logit diff {row['max_logit_diff_vs_hf']:.1e}")
    write_json(Path(args.out), result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
