"""Trie-constrained beam search over many users at once, returning items (not strings).

The decoder only needs three things (`gramc.model.t5.T5` provides them):

* `cross_kv(memory [B, M, d])`: cross-attention keys/values, computed **once per user**; every
  beam of user b attends to row b (no per-beam copies, never reordered);
* `decode_states(dec_ids [B, G, 1], cross_kv, memory_mask [B, M], cache, start) -> (states [B, G, 1, d], cache)`:
  one step for G hypotheses per user with an incremental self-attention cache (rows B*G), which
  is reordered after each step by `gramc.model.t5.reorder_cache` (small: one row per hypothesis);
* `head() -> (weight [V, d], scale)`: the LM head, so that only the logits a step needs are made.

**Scores.** Allowed tokens come from `Trie.allowed` (one gather per step, cut to the widest node
of the step). A continuation scores `sum of log p(token)`, with `log p` from
`gramc.model.softmax.token_log_probs` for live beams only, under `softmax`:
"vocab" normalises over the whole vocabulary (as Hugging Face, where the trie mask is applied
after the log-softmax; GRAM), "trie" over the trie children of the beam's node only (logits of
those children alone; the model must have been trained so, `model.softmax=trie`).

**Selection** follows Hugging Face `generate`, so that both give the same hypotheses: per step the
top 2*beams continuations are taken; those ending in eos among the first `beams` become finished
hypotheses with score `sum_logprob / n**length_penalty` (n = generated tokens including eos, i.e.
ID levels + 1 = GRAM's "start token included, eos excluded" length), the best `beams` non-eos
continuations keep running; a finished hypothesis is never extended.

**Stopping.** A user stops collecting hypotheses once `beams` are finished and no running beam can
beat the worst of them, judged by `early_stopping`:

* "heuristic" (HF 5 `early_stopping=False`): the best *running* beam divided by the current length
  `(step + 1)**length_penalty`; exact when length_penalty = 0;
* "hf4" (HF 4.x `BeamHypotheses.is_done`, as GRAM ran it with HF 4.26): the best *candidate* of the
  step (finished ones included) divided by the same length; it stops later than "heuristic" when
  an eos candidate outscores every running beam;
* "never" (HF "never"): the best running beam divided by the longest length `trie.max_len`, an
  exact bound also for length_penalty > 0;
* "finished" (HF `True`): as soon as `beams` hypotheses are finished.

The search always ends after `trie.max_len` steps, when every beam has reached a leaf.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol

import torch

from ..ids.tokens import IGNORE_INDEX
from ..ids.trie import Trie
from ..model.softmax import Softmax, check_softmax, token_log_probs
from ..model.t5 import reorder_cache

EarlyStopping = Literal["heuristic", "hf4", "never", "finished"]
EARLY_STOPPING = ("heuristic", "hf4", "never", "finished")
NEG_INF = float("-inf")


class StepDecoder(Protocol):
    """What the beam search needs from a model (implemented by `gramc.model.t5.T5`)."""

    def cross_kv(self, memory: torch.Tensor) -> Any: ...

    def decode_states(self, dec_ids: torch.Tensor, cross_kv: Any, memory_mask: torch.Tensor, cache: Any = None,
                      start: int = 0) -> tuple[torch.Tensor, Any]: ...

    def head(self) -> tuple[torch.Tensor, float]: ...


@dataclass
class BeamResult:
    """Per user the finished hypotheses, best first."""

    items: torch.Tensor  # long [B, beams], dataset item index, -1 where fewer were found
    scores: torch.Tensor  # float [B, beams], -inf where fewer were found
    invalid: int  # finished sequences that map to no item (impossible by construction; reported)
    steps: int  # decoder steps run


@dataclass
class _Step:
    """The best continuations of one step per user, sorted: `[B, K]` each."""

    score: torch.Tensor  # running sum of log-probabilities
    token: torch.Tensor
    node: torch.Tensor  # trie node reached
    source: torch.Tensor  # beam it extends
    item: torch.Tensor  # item of an eos continuation, -1 otherwise
    eos: torch.Tensor  # bool: ends in eos


def _length(step: int, length_penalty: float) -> float:
    """Denominator of a hypothesis finished at `step` (0-based): `(step + 1)**length_penalty`."""
    return float(step + 1) ** length_penalty if length_penalty != 0 else 1.0


def _excluded_eos(ctok: torch.Tensor, cnode: torch.Tensor, trie: Trie, exclude: torch.Tensor) -> torch.Tensor:
    """`[B, g, C]` True at the eos continuations that would finish an item of `exclude [B, H]`."""
    is_eos = ctok == trie.eos_id
    leaf = trie.item_at_leaf[cnode.clamp(min=0)].masked_fill(~is_eos, -1)
    node_item = leaf.amax(-1)  # a node has at most one eos child: its item, -1 if none
    banned = (node_item.unsqueeze(-1) == exclude.to(ctok.device).unsqueeze(1)).any(-1) & (node_item >= 0)
    return is_eos & banned.unsqueeze(-1)


def _expand(decoder: StepDecoder, hidden: torch.Tensor, run: torch.Tensor, nodes: torch.Tensor, trie: Trie,
            width: int, softmax: Softmax, exclude: torch.Tensor | None = None) -> _Step:
    """Score every allowed continuation of every beam (`hidden [B, g, d]`); keep the best `width`.

    A continuation that would finish an excluded item scores -inf: it takes no place in the step's
    top `width`, so the search looks past excluded items instead of spending beams on them."""
    B, g = nodes.shape
    ctok, cnode = trie.allowed(nodes, trim=True)  # [B, g, C]
    C = ctok.shape[-1]
    live = (nodes.reshape(-1) >= 0).nonzero().squeeze(1)  # the LM head runs for live beams only
    logp = torch.full((B * g, C), NEG_INF, device=run.device)
    logp[live] = token_log_probs(decoder, hidden.reshape(B * g, -1)[live], ctok.view(B * g, C)[live], softmax)
    logp = logp.view(B, g, C)
    if exclude is not None and exclude.numel():
        logp = logp.masked_fill(_excluded_eos(ctok, cnode, trie, exclude), NEG_INF)
    cand = (run.unsqueeze(-1) + logp).view(B, g * C)
    top, idx = cand.topk(min(width, g * C), dim=1)  # sorted, best first
    tok = ctok.view(B, -1).gather(1, idx)
    nxt = cnode.view(B, -1).gather(1, idx)
    eos = (tok == trie.eos_id) & (top > NEG_INF)
    item = trie.item_at_leaf[nxt.clamp(min=0)].masked_fill(~eos, -1)
    return _Step(top, tok, nxt, idx // C, item, eos)


def _finish(st: _Step, fin_scores: torch.Tensor, fin_items: torch.Tensor, allowed: torch.Tensor, beams: int,
            denom: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Merge the eos continuations ranked within the first `beams` (and `allowed`) into the finished lists."""
    rank_ok = torch.arange(st.score.shape[1], device=st.score.device) < beams
    add = allowed & rank_ok.unsqueeze(0)
    new = (st.score / denom).masked_fill(~add, NEG_INF)
    fin_scores, pick = torch.cat([fin_scores, new], 1).topk(beams, dim=1)
    fin_items = torch.cat([fin_items, st.item.masked_fill(~add, -1)], 1).gather(1, pick)
    return fin_scores, fin_items


def _bound(early_stopping: EarlyStopping, st: _Step, run: torch.Tensor, step: int, max_len: int,
           lp: float) -> torch.Tensor:
    """Best score `[B]` a user's search can still reach, per the early-stopping rule."""
    if early_stopping == "hf4":
        return st.score[:, 0] / _length(step, lp)  # best candidate of the step, eos ones included
    if early_stopping == "never" and lp > 0:
        return run[:, 0] / float(max_len) ** lp
    return run[:, 0] / _length(step, lp)


@torch.no_grad()
def beam_search(decoder: StepDecoder, memory: torch.Tensor | None, memory_mask: torch.Tensor, trie: Trie,
                beams: int = 50, length_penalty: float = 0.0, early_stopping: EarlyStopping = "heuristic",
                exclude: torch.Tensor | None = None, start_id: int = 0, cross_kv: Any = None,
                softmax: Softmax = "vocab") -> BeamResult:
    """Constrained beam search for B users; returns the top-`beams` items per user with scores.

    `memory [B, M, d]` / `memory_mask [B, M]`: each user's fused encoder memory (pass `cross_kv`
    instead of `memory` when it is already computed). `exclude [B, H]`: item indices (-1 pad) a
    user may not be recommended (their finishing eos scores -inf, so they take no beam; off unless
    given). `softmax`:
    the model's output normalisation (`model.softmax`).
    """
    if beams < 1:
        raise ValueError(f"beams must be >= 1, got {beams}")
    if early_stopping not in EARLY_STOPPING:
        raise ValueError(f"early_stopping must be one of {EARLY_STOPPING}, got {early_stopping!r}")
    check_softmax(softmax)
    dev = memory_mask.device
    trie = trie.to(dev)
    B, G, lp = int(memory_mask.shape[0]), beams, float(length_penalty)
    ckv = decoder.cross_kv(memory) if cross_kv is None else cross_kv
    rows = torch.arange(B, device=dev).unsqueeze(1)

    nodes = torch.zeros(B, 1, dtype=torch.long, device=dev)  # one real beam per user at the start
    run = torch.zeros(B, 1, device=dev)
    tokens = torch.full((B, 1), start_id, dtype=torch.long, device=dev)
    cache = None
    fin_scores = torch.full((B, G), NEG_INF, device=dev)
    fin_items = torch.full((B, G), -1, dtype=torch.long, device=dev)
    active = torch.ones(B, dtype=torch.bool, device=dev)  # finished list can still improve
    invalid = steps = 0
    for step in range(trie.max_len):
        g = nodes.shape[1]
        hidden, cache = decoder.decode_states(tokens.unsqueeze(-1), ckv, memory_mask, cache, start=step)
        steps += 1
        st = _expand(decoder, hidden[:, :, -1], run, nodes, trie, 2 * G, softmax, exclude)
        invalid += int((st.eos & (st.item < 0)).sum())

        # finished hypotheses: eos continuations ranked within the first `beams` (an excluded item's
        # eos scored -inf in _expand and is no candidate at all)
        add = st.eos & (st.item >= 0) & active.unsqueeze(1)
        if early_stopping == "finished":
            add &= ~(fin_scores > NEG_INF).all(1, keepdim=True)
        fin_scores, fin_items = _finish(st, fin_scores, fin_items, add, G, _length(step, lp))

        # running hypotheses: the best non-eos continuations
        rs, ridx = st.score.masked_fill(st.eos, NEG_INF).topk(min(G, st.score.shape[1]), dim=1)
        alive = rs > NEG_INF
        n_alive = int(alive.sum(1).max())
        if n_alive == 0 or step + 1 == trie.max_len:
            break
        rs, ridx, alive = rs[:, :n_alive], ridx[:, :n_alive], alive[:, :n_alive]
        run = rs
        nodes = st.node.gather(1, ridx).masked_fill(~alive, -1)
        tokens = st.token.gather(1, ridx).clamp(min=0)
        cache = reorder_cache(cache, (rows * g + st.source.gather(1, ridx)).reshape(-1))

        # can the search still beat the worst finished hypothesis?
        full = (fin_scores > NEG_INF).all(1)
        best = _bound(early_stopping, st, run, step, trie.max_len, lp)
        active &= (~full | (best > fin_scores.min(1).values)) & (run[:, 0] > NEG_INF)
        if not bool(active.any()):
            break
        if early_stopping == "finished" and bool(full.all()):
            break
    return BeamResult(fin_items, fin_scores, invalid, steps)


@torch.no_grad()
def score_sequences(decoder, memory: torch.Tensor, memory_mask: torch.Tensor,
                    targets: list[list[int]] | list[tuple[int, ...]], start_id: int = 0,
                    length_penalty: float = 0.0, softmax: Softmax = "vocab", trie: Trie | None = None) -> torch.Tensor:
    """Teacher-forced score of every target for every user: `[B, len(targets)]`.

    Score = sum of token log-probabilities divided by `len(target)**length_penalty`, from the full
    `[V]` logits of `decoder.decode`: a log-softmax over the whole vocabulary ("vocab"), or over the
    children of each target prefix in `trie` ("trie": the other logits masked to -inf with
    `Trie.mask`). The exhaustive reference the beam search is tested against.
    """
    check_softmax(softmax)
    if softmax == "trie" and trie is None:
        raise ValueError("score_sequences: softmax='trie' needs the trie of the targets")
    B = int(memory_mask.shape[0])
    n = len(targets)
    T = max(len(t) for t in targets)
    dev = memory_mask.device
    tgt = torch.full((n, T), IGNORE_INDEX, dtype=torch.long, device=dev)
    for i, t in enumerate(targets):
        tgt[i, : len(t)] = torch.tensor(list(t))
    valid = tgt >= 0
    dec_in = torch.cat([torch.full((n, 1), start_id, dtype=torch.long, device=dev), tgt[:, :-1].clamp(min=0)], 1)
    logits, _ = decoder.decode(dec_in.unsqueeze(0).expand(B, n, T).contiguous(), decoder.cross_kv(memory),
                               memory_mask, None, start=0)
    logits = logits.float()  # [B, n, T, V]
    if softmax == "trie":
        nodes = trie.to(dev).prefix_nodes(tgt)  # [n, T]
        logits = logits + trie.to(dev).mask(nodes.clamp(min=0), logits.shape[-1])
    logp = torch.log_softmax(logits, dim=-1)
    tok_lp = logp.gather(-1, tgt.clamp(min=0).unsqueeze(0).expand(B, n, T).unsqueeze(-1)).squeeze(-1)
    total = tok_lp.masked_fill(~valid, 0.0).sum(-1)
    lengths = valid.sum(-1).float()
    return total / lengths.pow(length_penalty) if length_penalty != 0 else total
