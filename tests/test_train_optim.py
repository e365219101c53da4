"""Optimiser groups (by actual names and module types), LR schedule, scheduler length, batching."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from gramc.config import Config
from gramc.data.splits import Sample
from gramc.train.batching import Batcher, global_micro_batches, make_units, shard, steps_per_epoch
from gramc.train.optim import build_optimizer, build_scheduler, decay_groups, linear_factor, warmup_steps
from train_toy import build_model, toy_dataset, toy_samples


def tiny_gramc(prefix: bool = True):
    from gramc.model.gramc import GramC

    cfg = Config()
    cfg.model.prefix.enabled = prefix
    table = torch.randn(11, 16)
    table[0] = 0
    return GramC(cfg.model, cfg.data.max_his, 64, table if prefix else None)


def test_every_norm_embedding_and_scale_of_gramc_is_excluded_from_decay():
    model = tiny_gramc()
    groups = decay_groups(model)
    no_decay = set(groups.no_decay)
    norm_params = {f"{mn}.{pn}" if mn else pn
                   for mn, m in model.named_modules() if "norm" in type(m).__name__.lower()
                   for pn, _ in m.named_parameters(recurse=False)}
    assert norm_params, "the model should have norm layers (T5 RMSNorm, adapter LayerNorm)"
    assert norm_params <= no_decay, sorted(norm_params - no_decay)
    emb = {f"{mn}.weight" for mn, m in model.named_modules() if isinstance(m, nn.Embedding)}
    emb &= {n for n, _ in model.named_parameters()}  # tied embeddings are listed once
    assert emb <= no_decay, sorted(emb - no_decay)
    assert "passage_pos.weight" in no_decay and "t5.shared.weight" in no_decay
    assert "prefix.scale" in no_decay
    # the big matrices are decayed: attention, feed-forward, adapter linears
    linears = {f"{mn}.weight" for mn, m in model.named_modules() if isinstance(m, nn.Linear)}
    assert linears and linears <= set(groups.decay), sorted(linears - set(groups.decay))
    # the frozen GCN table is a buffer: not optimised at all
    assert not any("table" in n for n in groups.decay + groups.no_decay)


def test_optimizer_groups_cover_each_trainable_parameter_once():
    model = tiny_gramc()
    opt = build_optimizer(model, Config().train)
    ids = [id(p) for g in opt.param_groups for p in g["params"]]
    assert len(ids) == len(set(ids))
    assert set(ids) == {id(p) for p in model.parameters() if p.requires_grad}
    assert opt.param_groups[0]["weight_decay"] == Config().train.weight_decay
    assert opt.param_groups[1]["weight_decay"] == 0.0


def test_toy_groups():
    g = decay_groups(build_model(toy_dataset(), 0))
    assert set(g.decay) == {"hidden.weight", "out.weight"}
    assert set(g.no_decay) == {"emb.weight", "layer_norm.weight", "layer_norm.bias", "pos_emb",
                               "hidden.bias", "out.bias", "prefix_scale"}


def test_linear_schedule_shape():
    total, w = 20, warmup_steps(20, 0.1)
    assert w == 2
    f = [linear_factor(s, total, w) for s in range(total)]
    assert f[0] > 0 and f[0] < f[1] < f[2] == 1.0
    assert all(a > b for a, b in zip(f[2:], f[3:]))  # strictly decreasing after warmup
    assert f[-1] > 0 and linear_factor(total, total, w) == 0.0  # the last real step is not at LR 0
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=2.0)
    sch = build_scheduler(opt, total, 0.1)
    lrs = []
    for _ in range(total):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sch.step()
    assert lrs == pytest.approx([2.0 * x for x in f])


def test_scheduler_length_counts_the_epoch_tail():
    ds = toy_dataset()
    train, _ = toy_samples(ds)
    b = Batcher(train, "sample", batch_size=4, grad_accum=3, seed=1)
    micro = math.ceil(len(train) / 4)
    assert micro % 3 != 0, "fixture should have an epoch tail"
    assert b.steps_per_epoch() == math.ceil(micro / 3) == steps_per_epoch(micro, 3)
    assert b.total_steps(epochs=5) == 5 * math.ceil(micro / 3)
    assert b.total_steps(epochs=5, max_steps=7) == 7
    # 2 ranks: ceil(micro/2) micro-batches each, then the tail
    b2 = Batcher(train, "sample", batch_size=4, grad_accum=3, seed=1, rank=1, world=2)
    assert b2.steps_per_epoch() == math.ceil(math.ceil(micro / 2) / 3)


def test_sequence_units_keep_users_together_and_cap_size():
    ds = toy_dataset()
    train, _ = toy_samples(ds)
    units = make_units(train, "sequence", 3)
    assert [s for u in units for s in u] == train  # nothing lost, order kept
    assert all(len({s.user for s in u}) == 1 and 1 <= len(u) <= 3 for u in units)
    # consecutive units of one user only when the previous one is full
    for a, b in zip(units, units[1:]):
        if a[0].user == b[0].user:
            assert len(a) == 3
    assert all(len(u) == 1 for u in make_units(train, "sample", 3))


def test_batches_are_deterministic_disjoint_and_equal_in_count_across_ranks():
    ds = toy_dataset()
    train, _ = toy_samples(ds)
    world = 3
    plans = [Batcher(train, "sequence", 4, 2, seed=5, rank=r, world=world).plan(2) for r in range(world)]
    again = Batcher(train, "sequence", 4, 2, seed=5, rank=1, world=world).plan(2)
    assert again.micro_batches == plans[1].micro_batches
    assert len({len(p.micro_batches) for p in plans}) == 1
    assert all(len(mb) <= 4 for p in plans for mb in p.micro_batches)
    g = global_micro_batches(make_units(train, "sequence", 4), 4, 5, 2)
    seen = [s for p in plans for mb in p.micro_batches for s in mb]
    assert sorted(set(seen), key=train.index) == train  # every sample covered
    pad = len(plans[0].micro_batches) * world - len(g)
    assert 0 <= pad < world
    # a different epoch shuffles differently
    assert Batcher(train, "sequence", 4, 2, seed=5).plan(3).micro_batches != \
        Batcher(train, "sequence", 4, 2, seed=5).plan(2).micro_batches


def test_shard_pads_with_own_batches():
    batches = [[Sample(i, (0,), 1)] for i in range(5)]
    assert shard(batches, 0, 2) == [batches[0], batches[2], batches[4]]
    assert shard(batches, 1, 2) == [batches[1], batches[3], batches[1]]
    assert shard(batches[:1], 1, 2) == [batches[0]]


def test_bf16_autocast_step_runs_matmuls_in_bf16():
    from gramc.config import TrainConfig
    from gramc.train.trainer import DistInfo, Trainer
    from train_toy import collate

    ds = toy_dataset()
    train, _ = toy_samples(ds)
    model = build_model(ds, 0).float()
    seen = []
    model.hidden.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    before = model.out.weight.detach().clone()
    trainer = Trainer(model, TrainConfig(bf16=True, warmup=0.0), total_steps=5, info=DistInfo())
    stats = trainer.train_step([collate(train[:6])])
    assert seen == [torch.bfloat16]
    assert math.isfinite(stats.loss) and stats.tokens > 0
    assert model.out.weight.dtype == torch.float32 and not torch.equal(model.out.weight, before)


def test_short_tail_step_is_a_full_token_mean_not_scaled_down():
    """GRAM divided the epoch's last (short) accumulation step by grad_accum anyway, halving it."""
    from gramc.config import TrainConfig
    from gramc.train.trainer import DistInfo, Trainer
    from train_toy import collate

    ds = toy_dataset()
    train, _ = toy_samples(ds)
    batch = collate(train[:5])
    ref = build_model(ds, 0)
    loss_sum, n = ref(batch)
    (loss_sum / n).backward()
    expected = {k: p.grad.clone() for k, p in ref.named_parameters()}
    got = []
    trainer = Trainer(build_model(ds, 0), TrainConfig(grad_accum=4), total_steps=3, info=DistInfo(),
                      after_sync=lambda g: got.append({k: v.clone() for k, v in g.items()}))
    trainer.train_step([batch])  # a tail step: 1 micro-batch where grad_accum is 4
    for k, g in expected.items():
        torch.testing.assert_close(got[0][k], g, rtol=0, atol=1e-12)
