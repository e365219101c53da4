"""Tests of the compact T5 (gramc.model.t5): parity with Hugging Face, masking, prefix, cache, shared cross K/V."""

from __future__ import annotations

import pytest
import torch

from gramc.ids.tokens import IGNORE_INDEX
from gramc.model.t5 import (T5, T5Dims, dropout, dropout_mask, key_mask_bias, reorder_cache, relative_position_bucket,
                            shift_right)

VOCAB = 97


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny matrices: one thread is faster than two on a busy shared CPU (restored afterwards)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def small_dims(proj: str = "relu", tied: bool = True, **kw) -> T5Dims:
    base = dict(vocab_size=VOCAB, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=3, num_heads=4,
                relative_attention_num_buckets=8, relative_attention_max_distance=20, dropout_rate=0.1,
                feed_forward_proj=proj, tie_word_embeddings=tied)
    base.update(kw)
    return T5Dims(**base)


def make_model(dims: T5Dims | None = None, seed: int = 0, dtype=torch.float32) -> T5:
    torch.manual_seed(seed)
    m = T5(dims or small_dims()).to(dtype).eval()
    with torch.no_grad():  # random norm weights, so a wrong norm mapping would show
        for name, p in m.named_parameters():
            if name.endswith("norm.weight"):
                p.uniform_(0.5, 1.5)
    return m


def random_batch(P: int = 3, L: int = 11, T: int = 6, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, VOCAB, (P, L), generator=g)
    lengths = torch.tensor([L, L - 4, 2][:P])
    mask = torch.arange(L)[None, :] < lengths[:, None]
    ids = ids.masked_fill(~mask, 0)
    labels = torch.randint(3, VOCAB, (P, T), generator=g)
    labels[1, -2:] = IGNORE_INDEX
    return ids, mask, labels


def hf_roundtrip(tmp_path, proj: str, tied: bool):
    """A randomly initialised HF T5, saved and reloaded from disk by HF, and our T5 loaded from the same folder."""
    from transformers import T5ForConditionalGeneration

    torch.manual_seed(3)
    hf = T5ForConditionalGeneration(small_dims(proj, tied).to_hf_config())
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if name.endswith("layer_norm.weight"):
                p.uniform_(0.5, 1.5)
    if not tied:  # a real separate LM head (transformers 5 ties at construction)
        hf.lm_head.weight = torch.nn.Parameter(torch.randn(VOCAB, 32))
    hf.save_pretrained(tmp_path)
    hf = T5ForConditionalGeneration.from_pretrained(tmp_path).eval()
    ours = T5.from_pretrained(str(tmp_path)).eval()
    return hf, ours


# ---------------------------------------------------------------------------------------------
# Hugging Face parity
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("proj,tied", [("relu", True), ("gated-gelu", False)])
def test_logits_match_huggingface(tmp_path, proj, tied):
    hf, ours = hf_roundtrip(tmp_path, proj, tied)
    assert ours.dims.feed_forward_proj == proj and ours.dims.tie_word_embeddings == tied
    assert (ours.lm_head is None) == tied
    ids, mask, labels = random_batch()
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask.long(), labels=labels).logits
        got = ours(ids, mask, labels)
    assert got.shape == ref.shape == (3, 6, VOCAB)
    assert ref.abs().max() > 1e-2  # a meaningful comparison, not two near-zero tensors
    assert (got - ref).abs().max().item() < 1e-4


def test_long_inputs_use_log_buckets_like_huggingface(tmp_path):
    """Sequences longer than max_distance exercise the log-spaced and the capped buckets."""
    hf, ours = hf_roundtrip(tmp_path, "relu", True)
    ids, mask, labels = random_batch(P=2, L=45, T=30, seed=5)
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask.long(), labels=labels).logits
        got = ours(ids, mask, labels)
    assert (got - ref).abs().max().item() < 1e-4


def test_relative_buckets_match_huggingface():
    from transformers.models.t5.modeling_t5 import T5Attention

    rel = torch.arange(-300, 300)[None, :] - torch.arange(0, 5)[:, None]
    for bidirectional in (True, False):
        for nb, md in ((32, 128), (8, 20)):
            ref = T5Attention._relative_position_bucket(rel, bidirectional=bidirectional, num_buckets=nb, max_distance=md)
            got = relative_position_bucket(rel, bidirectional, nb, md)
            assert torch.equal(got, ref), (bidirectional, nb, md)


@pytest.mark.parametrize("proj,tied", [("relu", True), ("gated-gelu", False)])
def test_hf_state_dict_roundtrip(proj, tied):
    ours = make_model(small_dims(proj, tied), seed=7)
    hf = ours.to_hf_model()
    assert hf.config.decoder_start_token_id == 0 and hf.config.pad_token_id == 0 and hf.config.eos_token_id == 1
    ids, mask, labels = random_batch(seed=8)
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask.long(), labels=labels).logits
        got = ours(ids, mask, labels)
    assert (got - ref).abs().max().item() < 1e-4
    back = T5.from_hf_model(hf)
    for (n1, p1), (n2, p2) in zip(ours.named_parameters(), back.named_parameters()):
        assert n1 == n2 and torch.equal(p1, p2), n1
    if not tied:
        assert not torch.equal(hf.lm_head.weight, hf.shared.weight)


def test_hf_generate_matches_our_greedy_decode():
    # symmetric depths: transformers 5.x generate() sizes its cache by the encoder depth
    ours = make_model(small_dims(num_decoder_layers=2), seed=9)
    hf = ours.to_hf_model()
    ids, mask, _ = random_batch(seed=10)
    with torch.no_grad():
        ref = hf.generate(input_ids=ids, attention_mask=mask.long(), max_new_tokens=5, do_sample=False,
                          num_beams=1, min_new_tokens=5)
        ckv = ours.cross_kv(ours.encode(ids, mask))
        tok = torch.zeros(3, 1, 1, dtype=torch.long)
        out, cache = [tok[:, 0, 0]], None
        for t in range(5):
            logits, cache = ours.decode(tok, ckv, mask, cache, start=t)
            tok = logits[:, :, -1].argmax(-1, keepdim=True)
            out.append(tok[:, 0, 0])
    assert torch.equal(torch.stack(out, 1), ref[:, :6])


def test_load_hf_state_dict_errors_name_the_problem():
    ours = make_model(small_dims("gated-gelu", False))
    sd = dict(ours.hf_state_dict())
    del sd["lm_head.weight"]
    with pytest.raises(KeyError, match="lm_head"):
        ours.load_hf_state_dict(sd)
    sd = dict(ours.hf_state_dict())
    sd["encoder.block.0.layer.0.SelfAttention.q.weight"] = torch.zeros(3, 3)
    with pytest.raises(ValueError, match=r"encoder\.block\.0\.layer\.0\.SelfAttention\.q\.weight"):
        ours.load_hf_state_dict(sd)
    relu = make_model(small_dims("relu", True))
    with pytest.raises(KeyError, match=r"lacks .*DenseReluDense\.wi\.weight.*feed_forward_proj='relu'"):
        relu.load_hf_state_dict(ours.hf_state_dict())


def test_dims_presets_and_validation():
    tiny = T5Dims.preset("tiny", 1000)
    assert (tiny.d_model, tiny.d_ff, tiny.num_layers, tiny.num_decoder_layers, tiny.num_heads, tiny.d_kv) == \
        (128, 512, 2, 2, 4, 32)
    small = T5Dims.preset("small", 32128)
    assert (small.d_model, small.d_ff, small.num_layers, small.num_heads, small.d_kv) == (512, 2048, 6, 8, 64)
    assert T5Dims.from_hf_config(small.to_hf_config()) == small
    flan = small_dims("gated-gelu", False)
    assert T5Dims.from_hf_config(flan.to_hf_config()) == flan
    with pytest.raises(ValueError, match="preset"):
        T5Dims.preset("huge", 10)
    with pytest.raises(ValueError, match="feed_forward_proj"):
        small_dims("swiglu")


# ---------------------------------------------------------------------------------------------
# Encoder: masks and prefix
# ---------------------------------------------------------------------------------------------


def test_masked_tokens_do_not_change_unmasked_outputs():
    m = make_model()
    ids, mask, _ = random_batch()
    other = ids.clone()
    other[~mask] = torch.randint(3, VOCAB, (int((~mask).sum()),))
    with torch.no_grad():
        a, b = m.encode(ids, mask), m.encode(other, mask)
        c = m.encode(other, torch.ones_like(mask))
    assert (a[mask] - b[mask]).abs().max().item() < 1e-6
    assert (a[mask] - c[mask]).abs().max().item() > 1e-3  # the tokens do matter once unmasked


def test_fully_masked_prefix_equals_leading_masked_pads():
    m = make_model()
    ids, mask, _ = random_batch()
    K, P = 4, ids.shape[0]
    prefix = torch.randn(P, K, m.dims.d_model) * 5
    with torch.no_grad():
        got = m.encode(ids, mask, prefix, torch.zeros(P, K, dtype=torch.bool))
        pads = torch.cat([torch.zeros(P, K, dtype=torch.long), ids], 1)
        ref = m.encode(pads, torch.cat([torch.zeros(P, K, dtype=torch.bool), mask], 1))
        no_prefix = m.encode(ids, mask)
    assert got.shape == (P, K + ids.shape[1], m.dims.d_model)
    assert (got[:, K:][mask] - ref[:, K:][mask]).abs().max().item() < 1e-6
    # T5 only sees relative positions, which a prefix shifts uniformly: a masked prefix == no prefix
    assert (got[:, K:][mask] - no_prefix[mask]).abs().max().item() < 1e-5


def test_active_prefix_changes_outputs_and_is_differentiable():
    m = make_model()
    ids, mask, _ = random_batch()
    P, K = ids.shape[0], 2
    prefix = torch.randn(P, K, m.dims.d_model, requires_grad=True)
    on = m.encode(ids, mask, prefix)  # no prefix_mask: all prefix positions real
    off = m.encode(ids, mask, prefix.detach(), torch.zeros(P, K, dtype=torch.bool))
    assert (on[:, K:][mask] - off[:, K:][mask]).abs().max().item() > 1e-3
    on[:, K:][mask].sum().backward()
    assert prefix.grad is not None and prefix.grad.abs().sum() > 0


def test_fully_masked_rows_are_finite():
    m = make_model()
    ids, mask, _ = random_batch()
    mask[1] = False
    with torch.no_grad():
        states = m.encode(ids, mask)
        logits, _ = m.decode(torch.zeros(3, 2, 1, dtype=torch.long), m.cross_kv(states), mask)
    assert torch.isfinite(states).all() and torch.isfinite(logits).all()


def test_encode_rejects_bad_shapes():
    m = make_model()
    ids, mask, _ = random_batch()
    with pytest.raises(ValueError, match="same shape"):
        m.encode(ids, mask[:, :-1])
    with pytest.raises(ValueError, match="prefix"):
        m.encode(ids, mask, torch.zeros(3, 2, 7))


# ---------------------------------------------------------------------------------------------
# Decoder: cache, shared memory rows, reordering
# ---------------------------------------------------------------------------------------------


def _memory(m: T5, seed: int = 2):
    ids, mask, _ = random_batch(seed=seed)
    with torch.no_grad():
        return m.encode(ids, mask), mask


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-10)])
def test_stepwise_decode_with_cache_equals_full_decode(dtype, tol):
    m = make_model(dtype=dtype)
    memory, mask = _memory(m)
    ckv = m.cross_kv(memory)
    dec = torch.randint(0, VOCAB, (3, 2, 7))
    with torch.no_grad():
        full, full_cache = m.decode(dec, ckv, mask)
        steps, cache = [], None
        for t in range(7):
            logits, cache = m.decode(dec[:, :, t:t + 1], ckv, mask, cache, start=t)
            steps.append(logits)
        # and in two chunks (prompt of 3, then 4)
        a, c2 = m.decode(dec[:, :, :3], ckv, mask)
        b, _ = m.decode(dec[:, :, 3:], ckv, mask, c2, start=3)
    assert full.shape == (3, 2, 7, VOCAB)
    assert (torch.cat(steps, 2) - full).abs().max().item() < tol
    assert (torch.cat([a, b], 2) - full).abs().max().item() < tol
    assert len(cache) == m.dims.num_decoder_layers
    assert cache[0][0].shape == (6, m.dims.num_heads, 7, m.dims.d_kv)
    assert all(torch.allclose(x, y, atol=tol) for (x, _), (y, _) in zip(cache, full_cache))


def test_beams_sharing_a_memory_row_equal_separate_rows():
    m = make_model()
    memory, mask = _memory(m)
    B, G, T = 3, 4, 5
    dec = torch.randint(0, VOCAB, (B, G, T))
    with torch.no_grad():
        shared, _ = m.decode(dec, m.cross_kv(memory), mask)
        copied_memory = memory.repeat_interleave(G, 0)
        separate, _ = m.decode(dec.reshape(B * G, 1, T), m.cross_kv(copied_memory), mask.repeat_interleave(G, 0))
    assert (shared - separate.view(B, G, T, VOCAB)).abs().max().item() < 1e-5
    # beams really differ from each other (the test would be vacuous otherwise)
    assert (shared[:, 0] - shared[:, 1]).abs().max().item() > 1e-3


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-10)])
def test_memory_as_cross_input_equals_projected_keys_values(dtype, tol):
    """The folded cross-attention (memory passed as is) gives the logits and the gradients of the
    projected keys/values, for a memory row with masked positions and several hypotheses per row."""
    m = make_model(dtype=dtype)
    m.set_dropout(0.0)
    m.train()  # gradients too: training uses the folded form
    ids, mask, _ = random_batch()
    dec = torch.randint(0, VOCAB, (3, 2, 5))
    grads, outs = [], []
    for folded in (False, True):
        m.zero_grad()
        memory = m.encode(ids, mask)
        logits, _ = m.decode(dec, memory if folded else m.cross_kv(memory), mask)
        (logits.square().mean()).backward()
        outs.append(logits.detach())
        grads.append({n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None})
    assert (outs[0] - outs[1]).abs().max().item() < tol * outs[0].abs().max().item()
    assert grads[0].keys() == grads[1].keys() and "decoder.layers.0.cross_attn.k.weight" in grads[1]
    for name, g in grads[0].items():
        assert (g - grads[1][name]).abs().max().item() <= tol * max(1.0, g.abs().max().item()), name


def test_folded_cross_attention_ignores_masked_memory():
    """Masked memory positions change nothing, whatever they hold (here: huge values)."""
    m = make_model()
    memory, mask = _memory(m)
    dec = torch.randint(0, VOCAB, (3, 1, 4))
    noisy = memory.masked_fill(~mask[:, :, None], 1e4)
    with torch.no_grad():
        a, _ = m.decode(dec, memory, mask)
        b, _ = m.decode(dec, noisy, mask)
    assert torch.isfinite(b).all() and (a - b).abs().max().item() < 1e-5


def test_cache_reorder_with_index_select():
    m = make_model()
    memory, mask = _memory(m)
    ckv = m.cross_kv(memory)
    B, G = 3, 3
    dec = torch.randint(0, VOCAB, (B, G, 4))
    nxt = torch.randint(0, VOCAB, (B, G, 1))
    # beam step: every row b keeps hypotheses perm[b] of its own row
    perm = torch.tensor([[2, 2, 0], [1, 0, 1], [0, 1, 2]])
    idx = (torch.arange(B)[:, None] * G + perm).reshape(-1)
    with torch.no_grad():
        _, cache = m.decode(dec, ckv, mask)
        got, new_cache = m.decode(nxt, ckv, mask, reorder_cache(cache, idx), start=4)
        reordered = torch.gather(dec, 1, perm[:, :, None].expand(-1, -1, 4))
        ref, _ = m.decode(torch.cat([reordered, nxt], 2), ckv, mask)
    assert (got[:, :, 0] - ref[:, :, -1]).abs().max().item() < 1e-5
    assert new_cache[0][0].shape[2] == 5


def test_decode_checks_cache_and_memory_rows():
    m = make_model()
    memory, mask = _memory(m)
    ckv = m.cross_kv(memory)
    _, cache = m.decode(torch.zeros(3, 2, 1, dtype=torch.long), ckv, mask)
    with pytest.raises(ValueError, match="cache"):
        m.decode(torch.zeros(3, 2, 1, dtype=torch.long), ckv, mask, cache, start=2)
    with pytest.raises(ValueError, match="B=2"):
        m.decode(torch.zeros(2, 2, 1, dtype=torch.long), ckv, mask)
    with pytest.raises(ValueError, match="B=2"):
        m.decode(torch.zeros(2, 2, 1, dtype=torch.long), memory, mask)
    with pytest.raises(ValueError, match="positions"):
        m.decode(torch.zeros(3, 2, 1, dtype=torch.long), memory[:, 1:], mask)


def test_shift_right_replaces_ignored_labels():
    labels = torch.tensor([[5, 6, 7], [8, IGNORE_INDEX, IGNORE_INDEX]])
    assert shift_right(labels).tolist() == [[0, 5, 6], [0, 8, 0]]


# ---------------------------------------------------------------------------------------------
# Mixed precision and training
# ---------------------------------------------------------------------------------------------


def test_bfloat16_autocast_is_close_and_finite():
    m = make_model()
    ids, mask, labels = random_batch()
    mask[2] = False  # a fully masked row as well
    with torch.no_grad():
        ref = m(ids, mask, labels)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = m(ids, mask, labels)
    assert torch.isfinite(got).all()
    rel = (got.float() - ref).norm() / ref.norm()
    assert rel.item() < 0.05
    # cached step-by-step decoding under autocast: finite and close to the float32 full decode
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        ckv = m.cross_kv(m.encode(ids, mask))
        dec = shift_right(labels)[:, None].expand(-1, 2, -1)
        steps, cache = [], None
        for t in range(dec.shape[2]):
            logits, cache = m.decode(dec[:, :, t:t + 1], ckv, mask, cache, start=t)
            steps.append(logits.float())
    steps = torch.cat(steps, 2)
    assert torch.isfinite(steps).all()
    assert ((steps[:, 0] - ref).norm() / ref.norm()).item() < 0.05


def test_training_step_reduces_loss():
    torch.manual_seed(0)
    m = T5(small_dims(dropout_rate=0.0))
    ids, mask, labels = random_batch()
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    losses = []
    for _ in range(15):
        logits = m(ids, mask, labels)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB), labels.reshape(-1),
                                                 ignore_index=IGNORE_INDEX)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_dropout_only_in_training():
    m = make_model(small_dims(dropout_rate=0.5))
    ids, mask, labels = random_batch()
    with torch.no_grad():
        assert torch.equal(m(ids, mask, labels), m(ids, mask, labels))
        m.train()
        assert not torch.equal(m(ids, mask, labels), m(ids, mask, labels))
        m.set_dropout(0.0)  # reaches every dropout, attention weights included
        assert torch.equal(m(ids, mask, labels), m(ids, mask, labels))
        m.set_dropout(0.5)
        for module in m.modules():  # only attention-weight dropout active: still random
            if isinstance(module, torch.nn.Dropout) and not any(module is a.attn_dropout for a in m.modules()
                                                                 if hasattr(a, "attn_dropout")):
                module.p = 0.0
        assert not torch.equal(m(ids, mask, labels), m(ids, mask, labels))


@pytest.mark.parametrize("p", [0.1, 0.3, 0.5])
def test_cpu_dropout_mask_keeps_the_rate_and_the_expectation(p):
    """The 16-bit mask keeps 1 - p of the elements (binomial 5-sigma band over 10^6 draws) and
    rescales by the exact inverse of its keep probability, so E[dropout(x)] = x."""
    torch.manual_seed(0)
    n = 1_000_000
    keep, scale = dropout_mask(torch.Size([n]), p, torch.device("cpu"))
    q = 1 - round(p * 65536) / 65536
    assert abs(q - (1 - p)) < 1e-5 and scale == pytest.approx(1 / q, rel=1e-12)
    assert abs(keep.float().mean().item() - q) < 5 * (q * (1 - q) / n) ** 0.5
    out = dropout(torch.ones(n), p, training=True)
    values = out.unique().tolist()
    assert len(values) == 2 and values[0] == 0.0 and values[1] == pytest.approx(scale, rel=1e-6)
    assert abs(out.mean().item() - 1.0) < 5 * ((1 - q) / (q * n)) ** 0.5
    # every bit pattern is used: neighbouring elements (the two halves of one 32-bit draw) are independent
    pairs = keep[: n // 2 * 2].view(-1, 2).float()
    assert abs((pairs[:, 0] * pairs[:, 1]).mean().item() - q * q) < 5 * (q * q * (1 - q * q) / (n // 2)) ** 0.5
    # off in evaluation, and seeded by torch's generator (a resumed run replays it)
    x = torch.randn(64, 32)
    assert dropout(x, p, training=False) is x
    torch.manual_seed(5)
    a = dropout(x, p, True)
    torch.manual_seed(5)
    assert torch.equal(a, dropout(x, p, True))


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-6), (torch.float64, 1e-12)])
def test_written_out_attention_equals_sdpa(dtype, tol):
    """`attend_explicit` (the CPU training path) computes what `scaled_dot_product_attention` does,
    masked keys and a fully masked row included; with dropout its mask is `dropout`'s."""
    m = make_model(dtype=dtype)
    attn = m.encoder.layers[0].attn
    g = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(3, 4, 6, 8, generator=g, dtype=dtype) for _ in range(3))
    allowed = torch.rand(3, 1, 1, 6, generator=g) > 0.3
    allowed[1] = False
    bias = key_mask_bias(torch.randn(1, 4, 6, 6, generator=g, dtype=dtype), allowed, dtype)
    attn.attn_dropout.p = 0.0
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=1.0)
    assert (attn.attend_explicit(q, k, v, bias) - ref).abs().max().item() < tol
    attn.attn_dropout.p = 0.5
    attn.train()
    torch.manual_seed(1)
    dropped = attn.attend_explicit(q, k, v, bias)
    torch.manual_seed(1)
    probs = torch.softmax(torch.matmul(q, k.transpose(-1, -2)) + bias, -1)
    keep, scale = dropout_mask(probs.shape, 0.5, probs.device)
    assert (dropped - torch.matmul(probs * keep * scale, v)).abs().max().item() < tol


def test_cpu_training_attention_takes_the_written_out_path(monkeypatch):
    """Training with dropout on the CPU goes through `attend_explicit`; evaluation through SDPA."""
    m = make_model()
    ids, mask, labels = random_batch()
    calls = []
    real = m.encoder.layers[0].attn.attend_explicit.__func__
    monkeypatch.setattr(type(m.encoder.layers[0].attn), "attend_explicit",
                        lambda self, *a: calls.append(1) or real(self, *a))
    with torch.no_grad():
        m(ids, mask, labels)
        assert not calls
        m.train()
        m(ids, mask, labels)
    assert len(calls) == m.dims.num_layers + m.dims.num_decoder_layers  # self-attention of both stacks


def test_gradient_checkpointing_gives_the_same_gradients():
    ids, mask, labels = random_batch()
    grads, calls = [], []
    for enabled in (False, True):
        m = make_model(small_dims(dropout_rate=0.2), seed=4).train()
        m.set_gradient_checkpointing(enabled)
        count, layer = [0], m.decoder.layers[0]
        plain_forward = layer.forward

        def counting_forward(*args, _plain=plain_forward, _count=count):
            _count[0] += 1
            return _plain(*args)

        layer.forward = counting_forward
        prefix = torch.randn(3, 2, m.dims.d_model, generator=torch.Generator().manual_seed(1), requires_grad=True)
        torch.manual_seed(11)  # same dropout masks in both runs (checkpoint replays the RNG state)
        memory = m.encode(ids, mask, prefix)
        full_mask = torch.cat([torch.ones(3, 2, dtype=torch.bool), mask], 1)
        logits, _ = m.decode(shift_right(labels)[:, None], m.cross_kv(memory), full_mask)
        logits.square().mean().backward()
        grads.append([prefix.grad] + [p.grad for p in m.parameters()])
        calls.append(count[0])
    assert calls == [1, 2]  # with checkpointing the layer really is recomputed in backward
    assert all(g is not None for g in grads[1])
    assert max((a - b).abs().max().item() for a, b in zip(*grads)) < 1e-5
    assert grads[0][0].abs().sum() > 0


def test_reorder_cache_selects_rows_of_every_layer_k_and_v():
    k = [torch.arange(4.0).view(4, 1, 1, 1) + 10 * layer for layer in range(2)]
    cache = [(kk, -kk) for kk in k]
    idx = torch.tensor([2, 2, 0, 3])
    out = reorder_cache(cache, idx)
    assert len(out) == 2
    for layer, (ok, ov) in enumerate(out):
        assert ok.flatten().tolist() == [v + 10 * layer for v in (2.0, 2.0, 0.0, 3.0)]
        assert torch.equal(ov, -ok)
    assert cache[0][0].flatten().tolist() == [0.0, 1.0, 2.0, 3.0]  # the input cache is left as it was
