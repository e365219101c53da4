"""Training the tiny GRAM-C: end to end run folder, resume equivalence, step-0 audit refusals, overfit."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from gramc.cli import main as gramc_main
from gramc.config import load_config
from gramc.model.t5 import shift_right
from gramc.doctor.batch_audit import audit_first_batch
from gramc.recipes.train_gramc import gramc_parts, train
from gramc.train.trainer import DistInfo, TrainError, Trainer, fit

BASE = [
    "data.synthetic.num_users=60", "data.synthetic.num_items=40", "data.synthetic.num_topics=4",
    "data.max_his=3", "ids.vocab_size=300", "ids.clusters=4", "ids.levels=2", "gcn.dim=8", "gcn.epochs=2",
    "gcn.eval_every=0", "gcn.similar_k=5", "model.similar_items=2", "model.passage_len=24",
    "model.user_passage_len=24", "train.batch_size=16", "train.log_every=1", "eval.beams=5",
    "eval.ks=[1,5,10]", "eval.allow_capped=true", "eval.bootstrap=20", "eval.batch_size=32",
]


def tiny_cfg(out: Path, *extra: str):
    return load_config(None, [f"run.out={out}", *BASE, *extra])


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: with several, CPU float32 reductions (e.g. embedding gradients) may add
    in a different order from run to run (~1e-7 differences), which would hide what the resume
    test checks (bitwise equality). It is also faster on this shared 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def assets_dir(tmp_path_factory) -> Path:
    """Tokenizer, IDs, GCN and passage cache built once; every test reuses them (run.out)."""
    out = tmp_path_factory.mktemp("assets")
    gramc_parts(tiny_cfg(out), DistInfo())
    return out


def test_train_writes_a_complete_run_and_tests_the_best_checkpoint(tmp_path, assets_dir):
    run = tmp_path / "run"
    # assets are reused from assets_dir through their own paths; the run folder is fresh
    cfg = tiny_cfg(run, f"gcn.out={assets_dir / 'gcn'}", f"ids.tokenizer={assets_dir / 'tokenizer'}",
                   f"ids.file={assets_dir / 'ids.txt'}", "train.epochs=2", "train.max_steps=4",
                   "train.eval_users=12")
    res = train(cfg)
    assert res.state.done and res.state.step == 4
    for name in ("config.yaml", "run_info.json", "audit.json", "log.jsonl", "metrics.json", "metrics_valid.json"):
        assert (run / name).is_file(), name
    audit = json.loads((run / "audit.json").read_text())
    assert audit["ok"] and {c["name"] for c in audit["checks"]} >= {
        "audit.batch_fields", "audit.prefix_config_agrees", "audit.recent_item_ids", "audit.gcn_mapping",
        "audit.prefix_norm", "audit.passages_per_sample", "audit.target_lengths", "audit.truncation"}
    records = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    valids = [r for r in records if r["kind"] == "valid"]
    assert valids and all("ndcg@10" in r and "valid_loss" in r for r in valids)
    steps = [r for r in records if r["kind"] == "step"]
    assert [r["step"] for r in steps] == list(range(1, 5))
    assert all("prefix.scale" in r and r["tokens_per_s"] > 0 for r in steps)
    test = json.loads((run / "metrics.json").read_text())
    assert test["split"] == "test" and test["checkpoint"] == "best"
    assert test["selection"]["metric"] == "ndcg@10"
    best = max(valids, key=lambda r: r["ndcg@10"])  # first maximum wins
    assert test["selection"]["step"] == best["step"]
    assert set(test["metrics"]) >= {"ndcg@10", "hit@10"} and test["users"] == 60
    # item encoding timed apart (the step-0 probe's per-call cost), once for both splits: the validation
    # split encodes every item, the test split reuses those states
    valid_rec = json.loads((run / "metrics_valid.json").read_text())
    assert 0 < valid_rec["encode_s"] < valid_rec["time_s"] and test["encode_s"] == 0
    est = [r for r in records if r["kind"] == "final_eval_estimate"]
    assert len(est) == 1 and est[0]["call_s"] > 0 and est[0]["user_s"] > 0 and est[0]["valid_users"] == 60
    # the tested weights are the best checkpoint's
    assert (run / "checkpoints" / "best" / "model.safetensors").is_file()
    assert json.loads((run / "checkpoints" / "best" / "state.json").read_text())["step"] == best["step"]
    # gramc plot
    assert gramc_main(["plot", str(run)]) == 0
    for png in ("loss.png", "lr.png", "metrics.png"):
        assert (run / png).stat().st_size > 1000


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "checkpoints" / "last" / "model.safetensors"))


DENSE = ("model.dense.enabled=true", "model.dense.item=both", "model.dense.negatives=4", "train.indexing.enabled=true")


@pytest.mark.parametrize("bf16,extra", [("false", ()), ("true", ()), ("false", DENSE)], ids=["fp32", "bf16", "dense"])
def test_gramc_resume_equals_uninterrupted(tmp_path, assets_dir, bf16, extra):
    cfg = tiny_cfg(assets_dir, "train.epochs=2", "train.max_steps=4", "train.batch_size=8",
                   "model.dropout=0.2", "model.prefix.prefix_dropout=0.3", f"train.bf16={bf16}", *extra)

    def parts():
        p = gramc_parts(cfg, DistInfo())
        return dataclasses.replace(p, evaluate=None)  # validation loss only: fast

    fit(parts(), cfg, tmp_path / "full")
    res = fit(parts(), cfg, tmp_path / "cut", stop_after=2)
    assert res.interrupted
    fit(parts(), cfg, tmp_path / "cut", resume=True)
    a, b = _weights(tmp_path / "full"), _weights(tmp_path / "cut")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert any(k.startswith("dense.") for k in a) == bool(extra)


@pytest.mark.slow  # 2 x 30 optimiser steps of the tiny T5
def test_bf16_training_tracks_fp32(assets_dir):
    """The same 30 steps (same init, same batches, no dropout) in fp32 and under bf16 autocast.

    Tolerances: the first step sees the same weights, so only the forward's rounding differs (bf16
    keeps 8 mantissa bits, a relative error of 2^-9 per operand): its loss must agree to 0.5%. Later
    steps follow slightly different trajectories (AdamW amplifies early rounding differences), which
    measured up to 3.5% apart on single noisy batches but 0.2% apart on average: every step within
    8%, the mean of the last 10 within 2%, and both curves falling by the same factor within 5%.
    Weights and AdamW's moments stay fp32 (autocast casts only the matmuls' operands)."""
    curves, models = {}, {}
    for bf16 in ("false", "true"):
        cfg = tiny_cfg(assets_dir, "model.dropout=0.0", "model.prefix.dropout=0.0", "model.prefix.prefix_dropout=0.0",
                       "train.lr=3e-3", "train.warmup=0.0", "train.batch_size=16", f"train.bf16={bf16}")
        parts = gramc_parts(cfg, DistInfo())
        trainer = Trainer(parts.model, cfg.train, total_steps=30, info=DistInfo())
        assert trainer.bf16 == (bf16 == "true")
        smp = parts.train_samples
        curves[bf16] = [trainer.train_step([parts.collate(smp[(s * 16) % (len(smp) - 16):][:16])]).loss
                        for s in range(30)]
        models[bf16] = trainer
    a, b = torch.tensor(curves["false"]), torch.tensor(curves["true"])
    rel = (a - b).abs() / a
    assert rel[0] < 0.005 and rel.max() < 0.08, rel
    assert abs(a[-10:].mean() - b[-10:].mean()) / a[-10:].mean() < 0.02
    assert abs(a[0] / a[-10:].mean() - b[0] / b[-10:].mean()) / (a[0] / a[-10:].mean()) < 0.05
    assert a[-10:].mean() < 0.5 * a[0]  # it did learn
    trainer = models["true"]
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())
    assert all(v.dtype == torch.float32 for st in trainer.optimizer.state.values() for k, v in st.items()
               if k in ("exp_avg", "exp_avg_sq"))


def test_training_refuses_all_zero_recent_item_ids(tmp_path, assets_dir):
    cfg = tiny_cfg(assets_dir, "train.max_steps=2")
    parts = gramc_parts(cfg, DistInfo())
    collate = parts.collate

    def broken(samples):
        b = collate(samples)
        return dataclasses.replace(b, recent_item_ids=torch.zeros_like(b.recent_item_ids))

    with pytest.raises(TrainError, match="recent_item_ids"):
        fit(dataclasses.replace(parts, collate=broken), cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints").exists()  # refused before the first step
    audit = json.loads((tmp_path / "run" / "audit.json").read_text())
    assert not audit["ok"]


def test_audit_fails_a_mapping_under_99_percent(assets_dir):
    cfg = tiny_cfg(assets_dir)
    parts = gramc_parts(cfg, DistInfo())
    from gramc.model.assets import Assets

    assets = Assets.from_config(cfg, progress=False)
    batch = parts.collate(parts.train_samples[:8])
    ok = {c.name: c for c in audit_first_batch(batch, parts.model, cfg, assets.gcn_rows, parts.train_samples)}
    assert ok["audit.gcn_mapping"].level == "pass" and ok["audit.gcn_mapping"].value["share"] == 1.0
    rows = assets.gcn_rows.clone()
    rows[: max(1, len(rows) // 10)] = 0  # ~10% of the items lose their GCN row
    bad = {c.name: c for c in audit_first_batch(batch, parts.model, cfg, rows, parts.train_samples)}
    assert bad["audit.gcn_mapping"].level == "fail" and bad["audit.gcn_mapping"].value["share"] < 0.99
    assert "gcn" in bad["audit.gcn_mapping"].message.lower()
    # a batch collated without the prefix for a model that has one: disagreement is a failure
    off = dataclasses.replace(batch, prefix_enabled=False)
    names = {c.name: c for c in audit_first_batch(off, parts.model, cfg, assets.gcn_rows, parts.train_samples)}
    assert names["audit.prefix_config_agrees"].level == "fail"


@pytest.mark.slow  # ~35 optimiser steps of the tiny T5 on 64 samples
def test_tiny_gramc_memorises_64_samples(assets_dir):
    cfg = tiny_cfg(assets_dir, "model.dropout=0.0", "model.prefix.dropout=0.0", "model.prefix.prefix_dropout=0.0",
                   "train.lr=3e-3", "train.warmup=0.0", "train.weight_decay=0.0", "train.batch_size=64",
                   "model.similar_items=0", "model.passage_len=16")
    parts = gramc_parts(cfg, DistInfo())
    seen, smp = set(), []
    for s in parts.train_samples:  # distinct histories, so the mapping is learnable
        if s.history not in seen:
            seen.add(s.history)
            smp.append(s)
    smp = smp[:64]
    assert len(smp) == 64
    batch = parts.collate(smp)
    model = parts.model
    trainer = Trainer(model, cfg.train, total_steps=80, info=DistInfo())

    def first_token_accuracy() -> float:
        model.eval()
        with torch.no_grad():
            mem, mask = model.memory(batch)
            logits, _ = model.t5.decode(shift_right(batch.labels)[:, None, :], model.t5.cross_kv(mem), mask)
        model.train()
        return float((logits[:, 0, 0].argmax(-1) == batch.labels[:, 0]).float().mean())

    start = first_token_accuracy()
    acc = start
    for step in range(80):
        trainer.train_step([batch])
        if step % 5 == 4:
            acc = first_token_accuracy()
            if acc > 0.95:
                break
    assert acc > 0.95, f"first-token accuracy {acc:.3f} after {step + 1} steps (start {start:.3f})"


def _fields_equal(a, b) -> bool:
    return all(torch.equal(getattr(a, f.name), getattr(b, f.name)) if isinstance(getattr(a, f.name), torch.Tensor)
               else getattr(a, f.name) == getattr(b, f.name) for f in dataclasses.fields(a))


def test_gramc_collation_in_workers_equals_in_process(assets_dir):
    from gramc.train.batching import Batcher
    from gramc.train.loader import host_loader
    from gramc.train.loader import count_target_tokens

    cfg = tiny_cfg(assets_dir, "train.batch_size=8")
    parts = gramc_parts(cfg, DistInfo())
    plan = Batcher(parts.train_samples, "sequence", 8, 2, cfg.run.seed).plan(0)
    groups = [plan.step(i) for i in range(min(4, plan.num_steps))]
    cpu = torch.device("cpu")
    for a, b, g in zip(host_loader(groups, parts.collate, count_target_tokens, 0, cpu, 0),
                       host_loader(groups, parts.collate, count_target_tokens, 2, cpu, 0), groups):
        assert a.tokens == b.tokens and a.samples == b.samples
        assert all(_fields_equal(x, y) and _fields_equal(x, parts.collate(mb))
                   for x, y, mb in zip(a.batches, b.batches, g))


@pytest.mark.parametrize("placement", ["user_passage", "every_passage", "memory"])
def test_host_memory_len_equals_the_device_count(assets_dir, placement):
    """The Collator's host-side memory width is exact without prefix dropout (same memory, bit for
    bit, as counting on the device) and an upper bound giving the same losses with it."""
    cfg = tiny_cfg(assets_dir, f"model.prefix.placement={placement}", "model.prefix.prefix_dropout=0.5")
    parts = gramc_parts(cfg, DistInfo())
    model = parts.model
    batch = parts.collate(parts.train_samples[:12])
    assert len(batch.host_counts) == 12 and model.memory_width(batch, True) > 0
    unknown = dataclasses.replace(batch, host_counts=())
    model.eval()
    with torch.no_grad():
        (m1, k1), (m0, k0) = model.memory(batch), model.memory(unknown)
        assert torch.equal(m1, m0) and torch.equal(k1, k0)
    model.train()
    with torch.no_grad():
        torch.manual_seed(1)
        with_hint = model.token_losses(batch)
        torch.manual_seed(1)
        without = model.token_losses(unknown)
    torch.testing.assert_close(with_hint, without, rtol=1e-5, atol=1e-6)


def test_gramc_initial_weights_do_not_depend_on_the_rng_state(assets_dir):
    cfg = tiny_cfg(assets_dir)
    torch.manual_seed(1)
    a = {k: v.clone() for k, v in gramc_parts(cfg, DistInfo()).model.state_dict().items()}
    torch.manual_seed(2)
    torch.rand(7)
    b = gramc_parts(cfg, DistInfo()).model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
