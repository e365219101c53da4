"""The dense head (model.dense) and the item-indexing task (train.indexing): loss against a direct
computation, the user state against generation's, rows and negatives of the collator, indexing
samples and their passages."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from gramc.data.splits import INDEXING_USER, Sample, indexing_samples, item_training_counts
from gramc.ids.tokens import IGNORE_INDEX
from gramc.model.dense import DenseTables
from gramc.model.gramc import GramC
from gramc.model.inputs import Collator, PassageCache
from gramc.train.batching import make_units

from test_model_fakes import VOCAB, FakeIds, FakeTokenizer, make_dataset, make_similar, make_texts, tiny_config

N_ITEMS = 40
GCN_DIM = 16
SAMPLES = [
    Sample(0, (3, 4, 5, 6, 7, 8), 9),
    Sample(1, (5, 9), 2),
    Sample(2, (11, 2), 11),  # a repeat: the target is also a history item
    Sample(3, (4, 12, 5, 20, 21), 22),
]


def _setup(item="text", negatives=0, logq=True, prefix=True, seed=0, weight=1.0):
    cfg = tiny_config()
    cfg.model.prefix.enabled = prefix
    cfg.model.prefix.dropout = cfg.model.prefix.prefix_dropout = cfg.model.dropout = 0.0
    d = cfg.model.dense
    d.enabled, d.item, d.negatives, d.logq, d.weight = True, item, negatives, logq, weight
    cache = PassageCache.build(FakeTokenizer(), FakeIds(N_ITEMS), make_texts(N_ITEMS), make_similar(N_ITEMS),
                               cfg.model, progress=False)
    g = torch.Generator().manual_seed(seed)
    table = torch.randn(N_ITEMS + 1, GCN_DIM, generator=g)
    table[0] = 0
    rows = torch.arange(1, N_ITEMS + 1)
    counts = torch.arange(N_ITEMS, dtype=torch.float32)
    torch.manual_seed(seed)
    model = GramC(cfg.model, cfg.data.max_his, VOCAB, table if prefix else None,
                  dense=DenseTables(N_ITEMS, counts, table, rows)).eval()
    return cfg, cache, model, rows


@torch.no_grad()
def _reference_dense_loss(model, cache, batch, negatives):
    """Each sample's target against every distinct batch item, computed item by item."""
    head = model.dense
    memory, mask = model.memory(batch)
    users = model.dense_users(memory, mask)
    items = sorted(set(batch.item_index.tolist()))
    first_row = {i: batch.item_index.tolist().index(i) for i in items}
    ids, imask = cache.item_rows(torch.tensor(items))
    states, smask = model.item_states(ids, imask)
    vecs = head.items(states, smask, torch.tensor(items))
    counts = torch.arange(N_ITEMS, dtype=torch.float64) + 1
    p = counts / counts.sum()
    out = []
    for b in range(batch.users.shape[0]):
        hist = {int(batch.item_index[r]) for r in batch.history[b].tolist() if r >= 0}
        target = int(batch.targets[b])
        logits = []
        for j, i in enumerate(items):
            if i in hist and i != target:
                continue
            s = float(users[b] @ vecs[j]) / head.cfg.temperature
            if head.cfg.logq:
                s -= math.log((len(items) - negatives) * float(p[i]) + negatives / N_ITEMS)
            logits.append((i, s))
        z = math.log(sum(math.exp(s) for _, s in logits))
        out.append(z - dict(logits)[target])
        assert first_row[target] >= 0
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("item,logq,negatives", [("text", True, 0), ("gcn", False, 3), ("both", True, 5)])
def test_dense_loss_equals_a_direct_computation(item, logq, negatives):
    cfg, cache, model, rows = _setup(item, negatives=negatives, logq=logq)
    batch = Collator(cache, cfg, rows)(SAMPLES)
    memory, mask, (states, smask) = model.memory_and_rows(batch)
    hidden = model._decode(batch.labels, memory, mask)
    got = model.dense_losses(batch, hidden, (states, smask))
    want = _reference_dense_loss(model, cache, batch, negatives)
    torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-4)


def test_user_vector_is_the_state_that_predicts_the_first_id_token():
    cfg, cache, model, rows = _setup()
    batch = Collator(cache, cfg, rows)(SAMPLES)
    memory, mask = model.memory(batch)
    hidden = model._decode(batch.labels, memory, mask)
    torch.testing.assert_close(model.dense.users(hidden[:, 0]), model.dense_users(memory, mask), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(model.dense_users(model.t5.cross_kv(memory), mask), model.dense_users(memory, mask),
                               rtol=1e-5, atol=1e-6)


def test_forward_adds_the_weighted_dense_loss_once_per_target_token():
    cfg, cache, model, rows = _setup(weight=0.7)
    batch = Collator(cache, cfg, rows)(SAMPLES)
    total, n = model(batch)
    tokens = (batch.labels != IGNORE_INDEX).sum(1)
    memory, mask, got_rows = model.memory_and_rows(batch)
    hidden = model._decode(batch.labels, memory, mask)
    dense = model.dense_losses(batch, hidden, got_rows)
    generation = model.token_losses(batch).sum()
    assert int(n) == int(tokens.sum())
    torch.testing.assert_close(total, generation + 0.7 * (dense * tokens).sum(), rtol=1e-5, atol=1e-5)
    assert float(dense.detach().min()) > 0


def test_sequence_and_per_sample_batching_agree_with_the_dense_head():
    cfg, cache, model, rows = _setup(item="both", negatives=4)
    model.train()  # every dropout is 0
    results = []
    for dedupe in (True, False):
        model.zero_grad()
        loss, _ = model(Collator(cache, cfg, rows, dedupe=dedupe)(SAMPLES))
        loss.backward()
        results.append((loss.detach(), {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}))
    (l1, g1), (l2, g2) = results
    torch.testing.assert_close(l1, l2, rtol=1e-5, atol=1e-5)
    assert any(k.startswith("dense.") for k in g1) and g1.keys() == g2.keys()
    for k in g1:
        torch.testing.assert_close(g1[k], g2[k], rtol=1e-4, atol=1e-6)


def test_collator_adds_targets_and_seeded_negatives_as_rows():
    cfg, cache, _, rows = _setup(negatives=6)
    collate = Collator(cache, cfg, rows)
    a, b = collate(SAMPLES), collate(SAMPLES)
    assert set(s.target for s in SAMPLES) <= set(a.item_index.tolist())
    assert torch.equal(a.item_index, b.item_index)  # the same batch draws the same negatives
    other = collate(SAMPLES[:3])
    hist_a = {i for s in SAMPLES for i in s.history} | {s.target for s in SAMPLES}
    assert len(set(a.item_index.tolist()) - hist_a) >= 1  # negatives really were drawn
    assert set(other.item_index.tolist()) - {i for s in SAMPLES[:3] for i in s.history + (s.target,)} != \
        set(a.item_index.tolist()) - hist_a
    cfg.model.dense.enabled = False
    plain = Collator(cache, cfg, rows)(SAMPLES)
    assert set(plain.item_index.tolist()) == {i for s in SAMPLES for i in s.history}


def test_evaluation_batches_get_no_extra_rows():
    cfg, cache, _, rows = _setup(negatives=6)
    batch = Collator(cache, cfg, rows, items="global")(SAMPLES)
    assert batch.item_input.shape[0] == 0


def test_indexing_samples_read_the_bare_passage_and_carry_no_dense_loss():
    cfg, cache, model, rows = _setup(negatives=2)
    ix = [Sample(INDEXING_USER, (), 7), Sample(INDEXING_USER, (), 14)]
    batch = Collator(cache, cfg, rows)(SAMPLES[:2] + ix)
    for r, s in zip((2, 3), ix):
        passage = batch.user_input[r][batch.user_mask[r]].tolist()
        full = cache.item_table[s.target, : int(cache.item_len[s.target])].tolist()
        own = full[: int(cache.own_len[s.target])]
        assert passage == full[len(own):] and passage[-1] == 1
        ident = list(FakeIds(N_ITEMS).tokens[s.target])
        assert ident == full[len(own) - len(ident) - 1: len(own) - 1]  # the item's own ID, before its ';'
        assert all(passage[k: k + len(ident)] != ident for k in range(len(passage)))  # ... is not read
        assert (batch.history[r] == -1).all() and (batch.recent_item_ids[r] == 0).all()
    assert 7 not in batch.item_index.tolist() or 7 in {i for s in SAMPLES[:2] for i in s.history}
    memory, mask, got_rows = model.memory_and_rows(batch)
    dense = model.dense_losses(batch, model._decode(batch.labels, memory, mask), got_rows)
    assert dense[2:].abs().sum() == 0 and bool((dense[:2] > 0).all())
    assert torch.equal(batch.labels[2, :4], cache.target_table[7, :4])


def test_indexing_samples_cover_every_item_before_repeating_one():
    ds = make_dataset(num_users=12, num_items=40)
    once = indexing_samples(ds, "catalogue", 40, seed=3)
    assert sorted(s.target for s in once) == list(range(40)) and all(s.indexing for s in once)
    twice = indexing_samples(ds, "catalogue", 90, seed=3)
    assert [twice[:40].count(s) for s in once] == [1] * 40
    assert sorted(s.target for s in twice[:80]) == sorted(list(range(40)) * 2)
    trained = {i for i, c in enumerate(item_training_counts(ds)) if c > 0}
    assert {s.target for s in indexing_samples(ds, "train", 200, seed=3)} == trained
    assert indexing_samples(ds, "catalogue", 40, seed=3) == once  # seeded
    with pytest.raises(ValueError, match="indexing items"):
        indexing_samples(ds, "everything", 5, seed=3)  # type: ignore[arg-type]


def test_indexing_samples_are_units_of_their_own():
    ix = [Sample(INDEXING_USER, (), i) for i in range(5)]
    units = make_units(list(SAMPLES) + ix, "sequence", batch_size=8)
    assert [u for u in units if u[0].indexing] == [(s,) for s in ix]


def test_dense_config_is_checked():
    from gramc.config import ConfigError

    cfg = tiny_config()
    cfg.model.dense.enabled = True
    cfg.model.prefix.placement = "every_passage"
    with pytest.raises(ConfigError, match="model.dense.enabled"):
        cfg.validate()
    cfg = tiny_config()
    cfg.eval.fusion.enabled, cfg.eval.fusion.scorer = True, "dense"
    with pytest.raises(ConfigError, match="eval.fusion.scorer"):
        cfg.validate()
    cfg = tiny_config()
    cfg.model.dense.temperature = 0
    with pytest.raises(ConfigError, match="model.dense.temperature"):
        cfg.validate()


def test_gcn_item_vectors_need_a_table():
    cfg = tiny_config()
    cfg.model.prefix.enabled = False
    cfg.model.dense.enabled, cfg.model.dense.item = True, "gcn"
    with pytest.raises(ValueError, match="LightGCN"):
        GramC(cfg.model, cfg.data.max_his, VOCAB, None, dense=DenseTables(N_ITEMS))


def test_item_vectors_of_the_gcn_head_are_the_projected_rows():
    cfg, cache, model, rows = _setup(item="gcn")
    idx = torch.tensor([3, 0, 17])
    want = F.normalize(model.dense.graph(model.dense.graph_table[rows[idx]]), dim=-1)
    torch.testing.assert_close(model.dense.items(torch.zeros(3, 2, 128), torch.ones(3, 2, dtype=torch.bool), idx), want)


def test_a_detached_head_leaves_the_generation_gradients_as_they_are_without_it():
    grads = {}
    for name, weight, detach in (("none", 0.0, False), ("detached", 1.0, True), ("joint", 1.0, False)):
        cfg, cache, model, rows = _setup(item="both", negatives=3, weight=weight)
        cfg.model.dense.detach = detach
        model.cfg.dense.detach = detach
        model.zero_grad()
        loss, _ = model(Collator(cache, cfg, rows)(SAMPLES))
        loss.backward()
        grads[name] = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
    backbone = [k for k in grads["none"] if not k.startswith("dense.")]
    for k in backbone:
        torch.testing.assert_close(grads["detached"][k], grads["none"][k], rtol=1e-6, atol=1e-8)
    assert any(not torch.allclose(grads["joint"][k], grads["none"][k]) for k in backbone)  # the joint head does reach them
    assert any(k.startswith("dense.") and grads["detached"][k].abs().sum() > 0 for k in grads["detached"])
