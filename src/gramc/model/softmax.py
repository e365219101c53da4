"""Output normalisation of the decoder (`model.softmax`): log-probabilities of chosen tokens.

* `vocab` (GRAM): `log p(t) = logit_t - logsumexp(all V logits)`. The beam search needs it only
  for the allowed children of each beam, so `vocab_log_probs` runs the LM head over a few rows at
  a time (`chunk` rows x V logits stay in the CPU cache) and normalises each block in place:
  no `[rows, V]` tensor of the whole step, no extra full-size temporaries, no page faults.
* `trie`: `log p(t) = logit_t - logsumexp(logits of the allowed tokens)`, the softmax over the
  trie children of the prefix only. Logits are computed for those tokens alone, by gathering their
  LM-head rows (`trie_log_probs`); the vocabulary is never scored. The training loss
  (`trie_token_losses`) and the beam search use the same function.

Both take decoder states `hidden [N, d]` and candidate tokens `tokens [N, C]` (-1 = none) and return
`[N, C]` float32 log-probabilities, -inf where there is no token.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import torch

from ..ids.tokens import IGNORE_INDEX

if TYPE_CHECKING:  # pragma: no cover
    from ..ids.trie import Trie
    from .t5 import T5

Softmax = Literal["vocab", "trie"]
SOFTMAX_MODES = ("vocab", "trie")
NEG_INF = float("-inf")


def token_log_probs(t5: "T5", hidden: torch.Tensor, tokens: torch.Tensor, softmax: Softmax,
                    chunk: int = 128) -> torch.Tensor:
    """`[N, C]` log-probabilities of `tokens` (-1 = none) after states `hidden [N, d]` under `softmax`."""
    if softmax == "vocab":
        return vocab_log_probs(t5, hidden, tokens, chunk)
    if softmax == "trie":
        return trie_log_probs(t5, hidden, tokens)
    raise ValueError(f"model.softmax must be one of {SOFTMAX_MODES}, got {softmax!r}")


@torch.no_grad()
def vocab_log_probs(t5: "T5", hidden: torch.Tensor, tokens: torch.Tensor, chunk: int = 128) -> torch.Tensor:
    """Full-vocabulary log-softmax at `tokens`, `chunk` rows at a time (inference only)."""
    weight, scale = t5.head()
    x = (hidden * scale).to(weight.dtype)
    n = x.shape[0]
    out = torch.full(tokens.shape, NEG_INF, device=x.device)
    buf = torch.empty(min(chunk, n), weight.shape[0], device=x.device, dtype=weight.dtype)
    wt = weight.t()
    for s in range(0, n, chunk):
        logits = torch.mm(x[s: s + chunk], wt, out=buf[: min(chunk, n - s)]).float()
        tok = tokens[s: s + chunk]
        picked = logits.gather(1, tok.clamp(min=0))  # before the block is overwritten below
        top = logits.amax(1, keepdim=True)
        lse = logits.sub_(top).exp_().sum(1, keepdim=True).log_().add_(top)  # = torch.logsumexp
        out[s: s + chunk] = (picked - lse).masked_fill_(tok < 0, NEG_INF)
    return out


def trie_log_probs(t5: "T5", hidden: torch.Tensor, tokens: torch.Tensor, pairs: int = 8192) -> torch.Tensor:
    """Log-softmax over each row's own `tokens` only; one logit per real (row, token) pair.

    Differentiable (the training loss uses it). Rows without any token come out all -inf.
    """
    weight, scale = t5.head()
    rows, cols = (tokens >= 0).nonzero(as_tuple=True)
    x = (hidden * scale).to(weight.dtype)
    toks = tokens[rows, cols]
    # one dot product per pair, `pairs` at a time (bounded temporaries at the wide first levels)
    pair = torch.cat([(x[rows[s: s + pairs]] * weight[toks[s: s + pairs]]).sum(-1)
                      for s in range(0, len(rows), pairs)] or [x.new_zeros(0)]).float()
    logits = torch.full(tokens.shape, NEG_INF, device=x.device).index_put((rows, cols), pair)
    lse = torch.logsumexp(logits, 1, keepdim=True)
    return logits - lse.masked_fill(torch.isinf(lse), 0.0)


def trie_token_losses(t5: "T5", hidden: torch.Tensor, labels: torch.Tensor, trie: "Trie",
                      ignore: int = IGNORE_INDEX) -> torch.Tensor:
    """Cross-entropy `[B, T]` of `labels` with the softmax over trie children (0 where `ignore`).

    `hidden [B, T, d]`: decoder states of the teacher-forced targets (position t predicts label t).
    """
    nodes = trie.prefix_nodes(labels, ignore)  # node before each label, -1 at padding
    real = labels != ignore
    children, _ = trie.allowed(nodes[real], trim=True)  # [P, C]
    logp = trie_log_probs(t5, hidden[real], children)
    col = (children == labels[real].unsqueeze(1)).long().argmax(1, keepdim=True)
    loss = -logp.gather(1, col).squeeze(1)
    return torch.zeros(labels.shape, device=hidden.device, dtype=loss.dtype).masked_scatter(real, loss)


def check_softmax(softmax: str) -> None:
    """ValueError unless `softmax` is a known mode."""
    if softmax not in SOFTMAX_MODES:
        raise ValueError(f"model.softmax must be one of {SOFTMAX_MODES}, got {softmax!r}")
