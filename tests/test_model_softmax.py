"""Output normalisation: chosen-token log-probabilities equal the full-vocabulary computation."""

from __future__ import annotations

import pytest
import torch

from gramc.model.softmax import token_log_probs
from gramc.model.t5 import T5, T5Dims

V = 60


def _model(tied: bool) -> T5:
    torch.manual_seed(0)
    return T5(T5Dims(vocab_size=V, d_model=16, d_kv=4, d_ff=32, num_layers=1, num_decoder_layers=1, num_heads=4,
                     dropout_rate=0.0, tie_word_embeddings=tied)).eval()


def _tokens(n: int, width: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    toks = torch.stack([torch.randperm(V, generator=g)[:width] for _ in range(n)])
    k = torch.randint(0, width + 1, (n,), generator=g)  # some rows get no token at all
    return toks.masked_fill(torch.arange(width)[None] >= k[:, None], -1)


@pytest.mark.parametrize("tied", [True, False])
def test_vocab_and_trie_log_probs_equal_the_full_logits(tied):
    t5 = _model(tied)
    hidden = torch.randn(23, 16)
    tokens = _tokens(23, 6, seed=1)
    logits = t5.logits(hidden).detach()
    pad = tokens < 0
    with torch.no_grad():
        vocab = token_log_probs(t5, hidden, tokens, "vocab", chunk=5)  # several chunks, a ragged last one
        trie = token_log_probs(t5, hidden, tokens, "trie")
    ref_vocab = torch.log_softmax(logits, -1).gather(1, tokens.clamp(min=0)).masked_fill(pad, float("-inf"))
    torch.testing.assert_close(vocab, ref_vocab, atol=1e-5, rtol=0)
    allowed = torch.full_like(logits, float("-inf"))
    for r, row in enumerate(tokens.tolist()):
        allowed[r, [t for t in row if t >= 0]] = 0.0
    masked = logits + allowed
    some = ~pad.all(1)
    ref_trie = torch.log_softmax(masked[some], -1).gather(1, tokens[some].clamp(min=0)).masked_fill(pad[some], float("-inf"))
    torch.testing.assert_close(trie[some], ref_trie, atol=1e-5, rtol=0)
    assert torch.isinf(trie[~some]).all() and bool((~some).any())  # rows without tokens: all -inf, no NaN
    assert not torch.allclose(vocab[some & ~pad[:, 1]], trie[some & ~pad[:, 1]])  # different normalisers


def test_trie_log_probs_backpropagate_to_the_chosen_head_rows_only():
    t5 = _model(False)
    hidden = torch.randn(5, 16, requires_grad=True)
    tokens = torch.tensor([[3, 7, -1], [7, -1, -1], [10, 11, 12], [3, -1, -1], [20, 3, -1]])
    lp = token_log_probs(t5, hidden, tokens, "trie")
    lp[:, 0].sum().backward()
    grad = t5.lm_head.weight.grad
    used = {3, 7, 10, 11, 12, 20}
    assert all(float(grad[t].abs().sum()) > 0 for t in used)
    assert float(grad[[t for t in range(V) if t not in used]].abs().sum()) == 0.0
    assert torch.isfinite(hidden.grad).all()
    assert float(lp[1, 0].detach()) == 0.0 and float(lp[3, 0].detach()) == 0.0  # a single allowed token has probability 1
