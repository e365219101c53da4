"""Fused ranking (`eval.fusion.*`): the beam's items and a collaborative scorer's top K, every
candidate scored exactly by the generative model, combined per user with one weight.

1. **Candidates.** The beam search's items (`eval.beams`) together with the top
   `eval.fusion.candidates` items of the collaborative scorer, both under the same exclusions
   (`eval.exclude_history`).
2. **Generative score.** The score the beam search gives an item: the sum of its ID tokens'
   log-probabilities (eos included) under `model.softmax`, divided by `n ** eval.length_penalty`.
   The beam's items keep the beam's own score; every other candidate is scored by teacher forcing
   over the same cross-attention memory, so it gets exactly the score the beam would have given it
   (`gramc doctor search` checks the two paths agree).
3. **Collaborative score** (`scorer: lightgcn`): LightGCN fold-in. The user vector is the mean of
   the final LightGCN embeddings of the items the generative model reads (its history window), the
   score its dot product with every item's. It needs no user row, so `gramc recommend` scores a new
   history the way `gramc evaluate` scores a test user.
4. **Fusion.** Each score is standardised over the user's candidates (mean 0, deviation 1), and
   the final score is `(1 - w) * generative + w * collaborative`. `eval.fusion.weight` sets w; null
   tunes it on `eval.fusion.tune_users` seeded validation users (grid 0, 0.05, ..., 1, by
   validation ndcg@10), and it is then frozen for the test split.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..config import Config
from ..data.splits import Sample
from ..errors import GramcError
from ..graph.artifacts import MODEL_FILE, gcn_folder
from ..graph.lightgcn import final_embeddings
from ..ids.tokens import IGNORE_INDEX
from ..ids.trie import Trie
from ..metrics import per_user_metrics, ranks_from_lists
from ..model.softmax import token_log_probs, trie_log_probs
from ..model.t5 import shift_right
from ..train.precision import autocast
from .beam import BeamResult, beam_search
from .search import history_exclusions

GRID = tuple(round(0.05 * i, 2) for i in range(21))  # collaborative weights tried when tuning
TUNE_METRIC = "ndcg@10"
QUERY_ROWS = 4096  # teacher-forced decoder positions per call (bounds the cross-attention scores)


class FusionError(GramcError):
    """Fusion cannot run (no LightGCN model for the run, a bad setting); the message says what to do."""


class Collaborative:
    """LightGCN fold-in scores: mean of the history items' final embeddings · every item's."""

    def __init__(self, items: torch.Tensor):
        self.items = items.float()  # [num_items, d], dataset item order

    @classmethod
    def for_run(cls, cfg: Config, assets: Any) -> "Collaborative":
        folder = Path(assets.gcn.folder) if getattr(assets, "gcn", None) is not None else gcn_folder(cfg)
        if not (folder / MODEL_FILE).is_file():
            raise FusionError(f"eval.fusion needs the run's LightGCN model {folder / MODEL_FILE}; train it with "
                              f"`gramc gcn train --out {folder}` (gcn.out), or set eval.fusion.enabled=false")
        _, items = final_embeddings(folder, assets.ds)
        return cls(items)

    def scores(self, chunk: Sequence[Sample]) -> torch.Tensor:
        """`[B, num_items]` scores after each sample's history."""
        users = torch.stack([self.items[list(s.history)].mean(0) for s in chunk])
        return users @ self.items.T


@dataclass
class Candidates:
    """One batch: per user the candidates, their generative and collaborative scores (`[B, C]`,
    -1 / -inf where a user has fewer), and the plain beam result."""

    items: torch.Tensor
    gen: torch.Tensor
    cf: torch.Tensor
    beam: BeamResult


def teacher_forced_scores(model, cross: Any, mask: torch.Tensor, items: torch.Tensor, targets: torch.Tensor,
                          trie: Trie, softmax: str, length_penalty: float) -> torch.Tensor:
    """`[B, K]` beam-search score of each item of `items [B, K]` (-1 = none: -inf), teacher forced.

    `cross`: the users' cross-attention keys/values (`model.t5.cross_kv`), `mask [B, M]` their memory
    mask, `targets [num_items, T]` every item's ID tokens + eos (IGNORE_INDEX padded)."""
    B, K = items.shape
    labels = targets.to(items.device)[items.clamp(min=0)]  # [B, K, T]
    T = labels.shape[-1]
    hidden, _ = model.t5.decode_states(shift_right(labels.reshape(B * K, T)).view(B, K, T), cross, mask)
    real = labels != IGNORE_INDEX
    flat = hidden[real].float()
    if softmax == "trie":
        nodes = trie.prefix_nodes(labels.reshape(B * K, T)).view(B, K, T)
        children, _ = trie.allowed(nodes[real], trim=True)
        logp = trie_log_probs(model.t5, flat, children)
        picked = logp.gather(1, (children == labels[real].unsqueeze(1)).long().argmax(1, keepdim=True))[:, 0]
    else:
        picked = token_log_probs(model.t5, flat, labels[real].unsqueeze(1), "vocab")[:, 0]
    total = torch.zeros(B, K, T, device=flat.device).masked_scatter(real, picked).sum(-1)
    n = real.sum(-1).float()
    score = total / n.pow(length_penalty) if length_penalty != 0 else total
    return score.masked_fill(items < 0, float("-inf"))


def _extra_candidates(cf: torch.Tensor, beam_items: torch.Tensor, exclude: torch.Tensor | None,
                      k: int) -> torch.Tensor:
    """`[B, k]` the collaborative top-k items that the beam did not return (-1 where fewer)."""
    masked = cf.clone()
    if exclude is not None:
        rows, cols = (exclude >= 0).nonzero(as_tuple=True)
        masked[rows, exclude[rows, cols]] = float("-inf")
    found = beam_items >= 0
    masked[found.nonzero(as_tuple=True)[0], beam_items[found]] = float("-inf")
    top, idx = masked.topk(min(k, masked.shape[1]), dim=1)
    return idx.masked_fill(torch.isinf(top), -1)


@torch.no_grad()
def candidates_batch(model, collate: Callable, chunk: Sequence[Sample], trie: Trie, cfg: Config, beams: int,
                     collab: Collaborative, targets: torch.Tensor, items: Any = None,
                     spare_target: bool = True) -> Candidates:
    """Beam search, collaborative top K and exact scores of every candidate, for one batch of users."""
    device = next(model.parameters()).device
    batch = collate(chunk).to(device)
    exclude = history_exclusions(chunk, spare_target).to(device) if cfg.eval.exclude_history else None
    with autocast(device, cfg.eval.bf16 and device.type == "cuda"):
        memory, mask = model.memory(batch, items=items)
    ckv = model.t5.cross_kv(memory.float())
    beam = beam_search(model.t5, None, mask, trie, beams=beams, length_penalty=cfg.eval.length_penalty,
                       early_stopping=cfg.eval.early_stopping, exclude=exclude, softmax=cfg.model.softmax,
                       cross_kv=ckv)
    cf_all = collab.scores(chunk).to(device)
    extra = _extra_candidates(cf_all, beam.items, exclude, cfg.eval.fusion.candidates)
    per_call = max(1, QUERY_ROWS // max(1, extra.shape[1] * targets.shape[1]))
    gen_extra = torch.cat([teacher_forced_scores(model, [(k[s: s + per_call], v[s: s + per_call]) for k, v in ckv],
                                                 mask[s: s + per_call], extra[s: s + per_call], targets, trie,
                                                 cfg.model.softmax, cfg.eval.length_penalty)
                           for s in range(0, len(chunk), per_call)])
    cand = torch.cat([beam.items, extra], 1)
    gen = torch.cat([beam.scores.float(), gen_extra], 1)
    cf = cf_all.gather(1, cand.clamp(min=0)).masked_fill(cand < 0, float("-inf"))
    return Candidates(cand, gen, cf, beam)


def standardise(x: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Each row standardised over its valid entries (mean 0, deviation 1; 0 where constant)."""
    n = np.maximum(valid.sum(1, keepdims=True), 1)
    v = np.where(valid, x, 0.0)
    mean = v.sum(1, keepdims=True) / n
    dev = np.sqrt((np.where(valid, (x - mean) ** 2, 0.0)).sum(1, keepdims=True) / n)
    return np.where(valid, (v - mean) / np.where(dev > 0, dev, 1.0), 0.0)


def fused_scores(gen: np.ndarray, cf: np.ndarray, weight: float) -> np.ndarray:
    """`[U, C]` final scores: (1 - w) * standardised generative + w * standardised collaborative (-inf
    where there is no candidate)."""
    valid = np.isfinite(gen) & np.isfinite(cf)
    out = (1 - weight) * standardise(gen, valid) + weight * standardise(cf, valid)
    return np.where(valid, out, -np.inf)


def fused_order(cand: np.ndarray, gen: np.ndarray, cf: np.ndarray, weight: float) -> tuple[np.ndarray, np.ndarray]:
    """(items, scores) `[U, C]`, each user's candidates best first under the fused score."""
    score = fused_scores(gen, cf, weight)
    order = np.argsort(-score, axis=1, kind="stable")
    return np.take_along_axis(np.where(np.isfinite(score), cand, -1), order, 1), np.take_along_axis(score, order, 1)


def tune_weight(cand: np.ndarray, gen: np.ndarray, cf: np.ndarray, targets: np.ndarray,
                grid: Sequence[float] = GRID) -> tuple[float, dict[str, float]]:
    """The grid weight with the best mean ndcg@10 over these users (ties: the smaller weight), and
    the mean at every weight."""
    curve = {}
    for w in grid:
        ranks = ranks_from_lists(fused_order(cand, gen, cf, w)[0], targets)
        curve[f"{w:.2f}"] = float(per_user_metrics(ranks, (10,))[TUNE_METRIC].mean())
    best = max(grid, key=lambda w: (curve[f"{w:.2f}"], -w))
    return float(best), curve
