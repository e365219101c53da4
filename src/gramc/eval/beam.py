"""Trie-constrained beam search over many users at once, returning items (not strings).

The decoder only needs two calls (`gramc.model.t5.T5` provides them):

* `cross_kv(memory [B, M, d])`: cross-attention keys/values, computed **once per user**; every
  beam of user b attends to row b (no per-beam copies, never reordered);
* `decode(dec_ids [B, G, 1], cross_kv, memory_mask [B, M], cache, start) -> (logits [B, G, 1, V], cache)`:
  one step for G hypotheses per user with an incremental self-attention cache (rows B*G), which
  is reordered after each step with `index_select` (it is small: one row per hypothesis).

Allowed tokens come from `Trie.allowed` (one gather per step): scores are computed only for the
children of each beam's trie node, as `logit - logsumexp(logits)` (log-probabilities normalised
over the whole vocabulary, as in Hugging Face, where the trie mask is applied after log-softmax).

The selection rules are those of Hugging Face `generate` beam search, so that both give the same
hypotheses: per step the top 2*beams continuations are taken; those ending in eos among the first
`beams` become finished hypotheses with score `sum_logprob / n**length_penalty` (n = generated
tokens including eos, i.e. ID levels + 1, which is GRAM's "start token included, eos excluded"
length), the best `beams` non-eos continuations keep running; a finished hypothesis is never
extended. `early_stopping`: "heuristic" (HF `False`, GRAM's setting: stop once the best running
beam, divided by the current length, cannot beat the worst of `beams` finished ones; exact when
length_penalty = 0), "never" (HF "never": exact bound also for length_penalty > 0), "finished"
(HF `True`: stop as soon as `beams` hypotheses are finished). The search always ends after
`trie.max_len` steps, when every beam has reached a leaf.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol

import torch

from .trie import Trie

EarlyStopping = Literal["heuristic", "never", "finished"]
NEG_INF = float("-inf")


class StepDecoder(Protocol):
    """What the beam search needs from a model (implemented by `gramc.model.t5.T5`)."""

    def cross_kv(self, memory: torch.Tensor) -> Any: ...

    def decode(self, dec_ids: torch.Tensor, cross_kv: Any, memory_mask: torch.Tensor, cache: Any = None,
               start: int = 0) -> tuple[torch.Tensor, Any]: ...


@dataclass
class BeamResult:
    """Per user the finished hypotheses, best first."""

    items: torch.Tensor  # long [B, beams], dataset item index, -1 where fewer were found
    scores: torch.Tensor  # float [B, beams], -inf where fewer were found
    invalid: int  # finished sequences that map to no item (impossible by construction; reported)
    steps: int  # decoder steps run


def reorder_cache(cache: Any, index: torch.Tensor) -> Any:
    """`index_select(0, index)` on every tensor of a (nested list/tuple/dict) self-attention cache."""
    if cache is None:
        return None
    if isinstance(cache, torch.Tensor):
        return cache.index_select(0, index)
    if isinstance(cache, list):
        return [reorder_cache(c, index) for c in cache]
    if isinstance(cache, tuple):
        return tuple(reorder_cache(c, index) for c in cache)
    if isinstance(cache, dict):
        return {k: reorder_cache(v, index) for k, v in cache.items()}
    if hasattr(cache, "index_select"):
        return cache.index_select(index)
    raise TypeError(f"cannot reorder a decoder cache of type {type(cache).__name__}")


@torch.no_grad()
def beam_search(decoder: StepDecoder, memory: torch.Tensor | None, memory_mask: torch.Tensor, trie: Trie,
                beams: int = 50, length_penalty: float = 0.0, early_stopping: EarlyStopping = "heuristic",
                exclude: torch.Tensor | None = None, start_id: int = 0, cross_kv: Any = None) -> BeamResult:
    """Constrained beam search for B users; returns the top-`beams` items per user with scores.

    `memory [B, M, d]` / `memory_mask [B, M]`: each user's fused encoder memory (pass `cross_kv`
    instead of `memory` when it is already computed). `exclude [B, H]`: item indices (-1 pad) a
    user may not be recommended (their finishing eos is blocked; off unless given).
    """
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


@torch.no_grad()
def score_sequences(decoder: StepDecoder, memory: torch.Tensor, memory_mask: torch.Tensor,
                    targets: list[list[int]] | list[tuple[int, ...]], start_id: int = 0,
                    length_penalty: float = 0.0) -> torch.Tensor:
    """Teacher-forced score of every target for every user: `[B, len(targets)]`.

    Score = sum of token log-probabilities (softmax over the whole vocabulary) divided by
    `len(target)**length_penalty`. The exhaustive reference the beam search is tested against.
    """
    B = int(memory_mask.shape[0])
    n = len(targets)
    T = max(len(t) for t in targets)
    tgt = torch.zeros(n, T, dtype=torch.long, device=memory_mask.device)
    valid = torch.zeros(n, T, dtype=torch.bool, device=memory_mask.device)
    for i, t in enumerate(targets):
        tgt[i, : len(t)] = torch.tensor(list(t))
        valid[i, : len(t)] = True
    dec_in = torch.cat([torch.full((n, 1), start_id, dtype=torch.long, device=tgt.device), tgt[:, :-1]], 1)
    logits, _ = decoder.decode(dec_in.unsqueeze(0).expand(B, n, T).contiguous(), decoder.cross_kv(memory),
                               memory_mask, None, start=0)
    logp = torch.log_softmax(logits.float(), dim=-1)  # [B, n, T, V]
    tok_lp = logp.gather(-1, tgt.unsqueeze(0).expand(B, n, T).unsqueeze(-1)).squeeze(-1)
    total = (tok_lp * valid).sum(-1)
    lengths = valid.sum(-1).float()
    return total / lengths.pow(length_penalty) if length_penalty != 0 else total
