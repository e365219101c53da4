"""GramC: late fusion over real passages, batching equivalence, masks, the prefix and its dropout."""

from __future__ import annotations

import copy

import pytest
import torch

from gramc.data.splits import Sample
from gramc.ids.tokens import IGNORE_INDEX
from gramc.model.gramc import GramC
from gramc.model.inputs import Collator, PassageCache
from gramc.model.t5 import shift_right
from gramc.train.loader import count_target_tokens

from test_model_fakes import VOCAB, FakeIds, FakeTokenizer, make_similar, make_texts, tiny_config

N_ITEMS = 40
GCN_DIM = 16
PLACEMENTS = ["user_passage", "every_passage", "memory"]

SAMPLES = [
    Sample(0, (3, 4, 5, 6, 7, 8), 9),
    Sample(1, (5, 9), 2),
    Sample(2, (11,), 3),
    Sample(3, (4, 12, 5, 20, 21), 22),
]


def _setup(placement="user_passage", enabled=True, seed=0, **model_kw):
    cfg = tiny_config(**model_kw)
    cfg.model.prefix.enabled = enabled
    cfg.model.prefix.placement = placement
    cfg.model.prefix.dropout = 0.0
    cfg.model.prefix.prefix_dropout = 0.0
    cache = PassageCache.build(FakeTokenizer(), FakeIds(N_ITEMS), make_texts(N_ITEMS), make_similar(N_ITEMS),
                               cfg.model, progress=False)
    g = torch.Generator().manual_seed(seed)
    table = torch.randn(N_ITEMS + 1, GCN_DIM, generator=g)
    table[0] = 0
    torch.manual_seed(seed)
    model = GramC(cfg.model, cfg.data.max_his, VOCAB, table if enabled else None).eval()
    gcn_rows = torch.arange(1, N_ITEMS + 1)
    return cfg, cache, model, gcn_rows


def _grads(model):
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("placement", PLACEMENTS + ["off"])
def test_sequence_level_and_per_sample_batching_agree(placement):
    cfg, cache, model, rows = _setup(placement if placement != "off" else "user_passage", enabled=placement != "off")
    results = []
    for dedupe in (True, False):
        batch = Collator(cache, cfg, rows, dedupe=dedupe)(SAMPLES)
        model.zero_grad()
        loss, n = model(batch)
        loss.backward()
        results.append((loss.detach(), int(n), _grads(model), batch.item_input.shape[0]))
    (l1, n1, g1, p1), (l2, n2, g2, p2) = results
    if placement != "every_passage":
        assert p1 < p2  # shared rows really were shared
    assert n1 == n2 == sum(len(FakeIds(N_ITEMS).target(s.target)) for s in SAMPLES)
    torch.testing.assert_close(l1, l2, rtol=1e-5, atol=1e-5)
    assert g1.keys() == g2.keys() and len(g1) > 10
    for k in g1:
        torch.testing.assert_close(g1[k], g2[k], rtol=1e-4, atol=1e-6)


def test_fused_memory_equals_grams_padded_memory():
    """Reference: GRAM's B x (N+1) x L padded passages, all encoded, concatenated, mask-fused."""
    cfg, cache, model, rows = _setup(enabled=False)
    batch = Collator(cache, cfg, rows, dedupe=False)(SAMPLES)
    t5 = model.t5
    b, n = batch.history.shape
    width = max(batch.user_input.shape[1], batch.item_input.shape[1])
    ids = torch.zeros(b, n + 1, width, dtype=torch.long)
    mask = torch.zeros(b, n + 1, width, dtype=torch.bool)
    ids[:, 0, : batch.user_input.shape[1]] = batch.user_input
    mask[:, 0, : batch.user_mask.shape[1]] = batch.user_mask
    for s in range(b):
        for j in range(n):
            r = int(batch.history[s, j])
            if r >= 0:
                ids[s, j + 1, : batch.item_input.shape[1]] = batch.item_input[r]
                mask[s, j + 1, : batch.item_mask.shape[1]] = batch.item_mask[r]
    with torch.no_grad():
        states = t5.encode(ids.view(-1, width), mask.view(-1, width)).view(b, n + 1, width, -1)
        states = states + model.passage_pos.weight[: n + 1][None, :, None, :]
        memory = states.reshape(b, (n + 1) * width, -1)
        logits, _ = t5.decode(shift_right(batch.labels)[:, None], t5.cross_kv(memory), mask.view(b, -1))
        ref = torch.nn.functional.cross_entropy(logits[:, 0].reshape(-1, VOCAB), batch.labels.reshape(-1),
                                                ignore_index=IGNORE_INDEX, reduction="sum")
        loss, _ = model(batch)
        mem, mem_mask = model.memory(batch)
    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-5)
    assert mem.shape[1] == int(mask.view(b, -1).sum(1).max())  # only real tokens
    assert mem_mask.sum() == mask.sum()


@pytest.mark.parametrize("placement", PLACEMENTS)
def test_each_sample_is_independent_of_its_batch(placement):
    """Padding positions and absent passages added by other samples change nothing."""
    cfg, cache, model, rows = _setup(placement)
    with torch.no_grad():
        together = model.token_losses(Collator(cache, cfg, rows)(SAMPLES))
        for i, s in enumerate(SAMPLES):
            alone = model.token_losses(Collator(cache, cfg, rows)([s]))
            torch.testing.assert_close(together[i, : alone.shape[1]], alone[0], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("placement", PLACEMENTS)
def test_padded_positions_and_padded_prefix_slots_change_nothing(placement):
    cfg, cache, model, rows = _setup(placement)
    batch = Collator(cache, cfg, rows)(SAMPLES)
    assert (batch.recent_item_ids == 0).any() and (~batch.item_mask).any() and (~batch.user_mask).any()
    with torch.no_grad():
        base = model.token_losses(batch)
        noisy = copy.deepcopy(batch)
        g = torch.Generator().manual_seed(1)
        noisy.item_input[~noisy.item_mask] = torch.randint(3, VOCAB, (int((~noisy.item_mask).sum()),), generator=g)
        noisy.user_input[~noisy.user_mask] = torch.randint(3, VOCAB, (int((~noisy.user_mask).sum()),), generator=g)
        torch.testing.assert_close(model.token_losses(noisy), base)
        model.prefix.table[0] = torch.randn(GCN_DIM) * 5  # the row padding slots point to
        torch.testing.assert_close(model.token_losses(batch), base)
        # control: a row that a real slot points to does matter
        real = int(batch.recent_item_ids[0, 0])
        model.prefix.table[real] = torch.randn(GCN_DIM) * 5
        assert not torch.allclose(model.token_losses(batch)[0], base[0])


def test_prefix_disabled_is_gram():
    cfg, cache, with_prefix, rows = _setup(enabled=True)
    cfg_off, _, gram, _ = _setup(enabled=False)
    assert not any("prefix" in n for n, _ in gram.named_parameters())
    assert not any("prefix" in n for n in gram.state_dict())
    missing, unexpected = gram.load_state_dict(with_prefix.state_dict(), strict=False)
    assert missing == [] and unexpected and all(k.startswith("prefix.") for k in unexpected)
    n_prefix = sum(p.numel() for p in with_prefix.prefix.parameters())
    assert sum(p.numel() for p in with_prefix.parameters()) - sum(p.numel() for p in gram.parameters()) == n_prefix
    removed = copy.deepcopy(with_prefix)
    removed.prefix = None
    with torch.no_grad():
        a = gram.token_losses(Collator(cache, cfg_off, None)(SAMPLES))
        b = removed.token_losses(Collator(cache, cfg, rows)(SAMPLES))
        c = with_prefix.token_losses(Collator(cache, cfg, rows)(SAMPLES))
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)  # the prefix really does something when present


@pytest.mark.parametrize("prefix_dropout", [0.1, 0.95])
@pytest.mark.parametrize("placement", PLACEMENTS)
def test_prefix_dropout_keeps_gradients_on_every_adapter_parameter(placement, prefix_dropout):
    cfg, cache, model, rows = _setup(placement)
    model.prefix.prefix_dropout = prefix_dropout
    model.prefix.dropout.p = 0.1
    model.train()
    torch.manual_seed(3)
    loss, _ = model(Collator(cache, cfg, rows)(SAMPLES))
    loss.backward()
    params = dict(model.prefix.named_parameters())
    assert "scale" in params and len(params) >= 9
    for name, p in params.items():
        assert p.grad is not None, name
    if prefix_dropout < 0.5:
        assert float(params["scale"].grad.abs()) > 0
    assert not any(n == "table" for n, _ in model.prefix.named_parameters())  # frozen buffer


def test_prefix_dropout_drops_whole_prefixes_per_sample():
    cfg, cache, model, rows = _setup()
    model.prefix.prefix_dropout = 0.5
    model.prefix.train()
    ids = torch.randint(1, N_ITEMS + 1, (200, 3))
    torch.manual_seed(0)
    x, mask = model.prefix(ids)
    dropped = ~mask.any(1)
    assert 60 < int(dropped.sum()) < 140
    assert (x[dropped] == 0).all() and (x[~dropped].abs().sum((1, 2)) > 0).all()


def test_global_items_give_the_same_loss():
    cfg, cache, model, rows = _setup("memory")
    with torch.no_grad():
        ref = model.token_losses(Collator(cache, cfg, rows)(SAMPLES))
        items = model.item_states(*cache.all_items(), chunk=16)
        glob = Collator(cache, cfg, rows, items="global")(SAMPLES)
        out = model.token_losses(glob, items=items)
        with pytest.raises(ValueError, match="global"):
            model.memory(glob)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


def test_memory_placement_appends_k_slots_and_prefix_stats():
    cfg, cache, model, rows = _setup("memory")
    batch = Collator(cache, cfg, rows)(SAMPLES)
    _, off_model_mask = _setup(enabled=False)[2].memory(Collator(cache, tiny_config(), rows)(SAMPLES))
    with torch.no_grad():
        mem, mask = model.memory(batch)
    assert mem.shape[1] == off_model_mask.shape[1] + cfg.model.prefix.num_items
    torch.testing.assert_close(mask[:, -cfg.model.prefix.num_items:], batch.recent_item_ids != 0)
    stats = model.prefix_norm_stats(batch)
    assert stats.slots == int((batch.recent_item_ids != 0).sum())
    assert stats.prefix_norm > 0 and stats.token_norm > 0
    assert abs(stats.ratio - stats.prefix_norm / stats.token_norm) < 1e-9


def test_forward_returns_sum_and_count_not_mean():
    cfg, cache, model, rows = _setup()
    batch = Collator(cache, cfg, rows)(SAMPLES)
    with torch.no_grad():
        s, n = model(batch)
        tok = model.token_losses(batch)
    assert int(n) == int(count_target_tokens(batch))
    torch.testing.assert_close(s, tok.sum())
    assert (tok[batch.labels == IGNORE_INDEX] == 0).all()


def test_prefix_model_refuses_batch_without_prefix_and_needs_table():
    cfg, cache, model, rows = _setup()
    cfg_off = tiny_config()
    cfg_off.model.prefix.enabled = False
    with pytest.raises(ValueError, match="prefix"):
        model(Collator(cache, cfg_off, None)(SAMPLES))
    with pytest.raises(ValueError, match="GCN table"):
        GramC(cfg.model, cfg.data.max_his, VOCAB, None)


@pytest.mark.parametrize("placement", PLACEMENTS)
def test_empty_history_sample_is_served(placement):
    """A cold user (no history) gets the user passage only, alone or next to other samples."""
    cfg, cache, model, rows = _setup(placement)
    cold = Sample(9, (), 3)
    with torch.no_grad():
        alone = model.token_losses(Collator(cache, cfg, rows)([cold]))
        mixed = model.token_losses(Collator(cache, cfg, rows)([SAMPLES[0], cold]))
    assert torch.isfinite(alone).all()
    torch.testing.assert_close(mixed[1, : alone.shape[1]], alone[0], rtol=1e-4, atol=1e-5)


def test_pretrained_backbone_from_a_folder(tmp_path):
    """model.preset=pretrained loads HF T5 weights (here: a tiny T5 saved by ourselves) with model.dropout."""
    from gramc.model.t5 import T5, T5Dims

    src = T5(T5Dims.preset("tiny", vocab_size=VOCAB, dropout_rate=0.3))
    src.to_hf_model().save_pretrained(tmp_path / "t5")
    cfg = tiny_config(preset="pretrained", pretrained=str(tmp_path / "t5"), dropout=0.05)
    cfg.model.prefix.enabled = False
    model = GramC(cfg.model, cfg.data.max_his, VOCAB, None)
    torch.testing.assert_close(model.t5.shared.weight, src.shared.weight)
    assert all(m.p == 0.05 for m in model.t5.modules() if isinstance(m, torch.nn.Dropout))
    with pytest.raises(ValueError, match="tokenizer"):
        GramC(cfg.model, cfg.data.max_his, VOCAB + 10, None)


def test_trie_softmax_loss_equals_masked_full_softmax_and_trains_only_allowed_rows():
    from gramc.ids.trie import trie_for

    cfg, cache, vocab_model, rows = _setup(enabled=False)
    assert vocab_model.trie is None
    cfg.model.softmax = "trie"
    with pytest.raises(ValueError, match="trie"):
        GramC(cfg.model, cfg.data.max_his, VOCAB, None)  # the trie mode needs the trie
    trie = trie_for(FakeIds(N_ITEMS))
    torch.manual_seed(0)
    model = GramC(cfg.model, cfg.data.max_his, VOCAB, None, trie).eval()
    batch = Collator(cache, cfg, rows)(SAMPLES)
    got = model.token_losses(batch)
    got.sum().backward()
    got = got.detach()
    # reference: full-vocabulary logits with every token outside the prefix's trie children at -inf
    labels = batch.labels
    with torch.no_grad():
        memory, mask = model.memory(batch)
        logits = model.t5.decode(shift_right(labels)[:, None, :], model.t5.cross_kv(memory), mask)[0][:, 0].float()
    nodes = trie.prefix_nodes(labels)
    masked = logits + trie.mask(nodes.clamp(min=0), VOCAB)
    ref = torch.nn.functional.cross_entropy(masked.reshape(-1, VOCAB), labels.reshape(-1), ignore_index=IGNORE_INDEX,
                                            reduction="none").view_as(labels)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    vocab = torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB), labels.reshape(-1), ignore_index=IGNORE_INDEX,
                                              reduction="none").view_as(labels)
    assert bool((got <= vocab + 1e-6).all()) and float((vocab - got).sum()) > 1.0  # a narrower normaliser
    # the LM head (tied embedding) gets gradient from allowed tokens only: never from a token no ID uses
    used = {t for i in range(N_ITEMS) for t in FakeIds(N_ITEMS).target(i)}
    grad = model.t5.shared.weight.grad
    unused = [t for t in range(VOCAB) if t not in used and t not in set(batch.user_input.flatten().tolist())
              and t not in set(batch.item_input.flatten().tolist()) and t != 0]
    assert unused and float(grad[unused].abs().sum()) == 0.0


def test_checkpoint_records_the_softmax_mode(tmp_path):
    from gramc.ids.trie import trie_for
    from gramc.checkpoint import CheckpointError, load_weights, save_model_file

    cfg, cache, vocab_model, rows = _setup(enabled=False)
    save_model_file(tmp_path / "model.safetensors", vocab_model)
    load_weights(tmp_path, vocab_model)  # same mode: fine
    cfg_t = copy.deepcopy(cfg)
    cfg_t.model.softmax = "trie"
    trie_model = GramC(cfg_t.model, cfg_t.data.max_his, VOCAB, None, trie_for(FakeIds(N_ITEMS)))
    (tmp_path / "trie").mkdir()
    save_model_file(tmp_path / "trie" / "model.safetensors", trie_model)
    load_weights(tmp_path / "trie", trie_model)
    with pytest.raises(CheckpointError, match="model.softmax=trie"):
        load_weights(tmp_path / "trie", vocab_model)
    with pytest.raises(CheckpointError, match="model.softmax=vocab"):
        load_weights(tmp_path, trie_model)
