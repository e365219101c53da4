"""Fused ranking (`eval.fusion.*`): the beam's items and each scorer's top K, every candidate
scored exactly by the generative model, combined per user with one weight per scorer.

1. **Candidates.** The beam search's items (`eval.beams`) together with the top
   `eval.fusion.candidates` items of each scorer, all under the same exclusions
   (`eval.exclude_history`).
2. **Generative score.** The score the beam search gives an item: the sum of its ID tokens'
   log-probabilities (eos included) under `model.softmax`, divided by `n ** eval.length_penalty`.
   The beam's items keep the beam's own score; every other candidate is scored by teacher forcing
   over the same cross-attention memory, so it gets exactly the score the beam would have given it
   (`gramc doctor search` checks the two paths agree).
3. **Scorers** (`eval.fusion.scorer`: `lightgcn`, `dense` or `both`).
   * `lightgcn`: LightGCN fold-in. The user vector is the mean of the final LightGCN embeddings
     of the items the generative model reads (its history window), the score its dot product with
     every item's. It needs no user row, so `gramc recommend` scores a new history the way
     `gramc evaluate` scores a test user.
   * `dense`: the model's own dense head (`gramc.model.dense`): the decoder's first-position state
     over the same memory against every item's vector, taken from the one encoding of every item
     passage the evaluation makes anyway.
4. **Fusion.** Each score is standardised over the user's candidates (mean 0, deviation 1), and
   the final score is `(1 - sum(w)) * generative + sum(w_s * scorer_s)`. `eval.fusion.weight`
   sets the scorers' total weight (split equally between two); null tunes the weights on
   `eval.fusion.tune_users` seeded validation users (every weight on the grid 0, 0.05, ..., 1 whose
   sum is at most 1, by validation ndcg@10), and they are then frozen for the test split.
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
from ..metrics import per_user_metrics, ranks_from_lists, ranks_from_scores
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

    name = "lightgcn"

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

    def scores(self, chunk: Sequence[Sample], cross: Any = None, mask: torch.Tensor | None = None) -> torch.Tensor:
        """`[B, num_items]` scores after each sample's history (the model's memory is not read)."""
        users = torch.stack([self.items[list(s.history)].mean(0) for s in chunk])
        return users @ self.items.T


class DenseScores:
    """The model's dense head: first-position decoder state over the memory · every item's vector."""

    name = "dense"

    def __init__(self, model, items: tuple[torch.Tensor, torch.Tensor] | None):
        self.model = model
        if items is None:  # no users to score in this process
            self.items = None
        else:
            states, mask = items
            index = torch.arange(states.shape[0], device=states.device)
            self.items = model.dense.items(states, mask, index)  # [num_items, dim]

    def scores(self, chunk: Sequence[Sample], cross: Any, mask: torch.Tensor) -> torch.Tensor:
        """`[B, num_items]` cosine / temperature; `cross` is the batch's `t5.cross_kv` (or memory)."""
        return self.model.dense.scores(self.model.dense_users(cross, mask), self.items)


SCORERS = {"lightgcn": ("lightgcn",), "dense": ("dense",), "both": ("lightgcn", "dense")}


@dataclass
class Fusion:
    """The scorers `eval.fusion.scorer` names, for one run. `bind` gives them for one evaluation
    call: the dense head's item vectors come from that call's encoding of every item."""

    names: tuple[str, ...]
    lightgcn: Collaborative | None = None

    @classmethod
    def for_run(cls, cfg: Config, assets: Any) -> "Fusion":
        names = SCORERS[cfg.eval.fusion.scorer]
        return cls(names, Collaborative.for_run(cfg, assets) if "lightgcn" in names else None)

    @property
    def needs_item_table(self) -> bool:
        """Whether scoring needs every item encoded (the dense head's item vectors)."""
        return "dense" in self.names

    def bind(self, model, items: tuple[torch.Tensor, torch.Tensor] | None) -> list:
        if "dense" in self.names and getattr(model, "dense", None) is None:
            raise FusionError("eval.fusion.scorer uses the dense head but the model has none "
                              "(train it with model.dense.enabled=true)")
        return [self.lightgcn if n == "lightgcn" else DenseScores(model, items) for n in self.names]

    def weights(self, weight: float) -> list[float]:
        """A set `eval.fusion.weight`, split equally between the scorers."""
        return [weight / len(self.names)] * len(self.names)


@dataclass
class Candidates:
    """One batch: per user the candidates `[B, C]`, their generative scores `[B, C]` and each
    scorer's `[B, C, S]` (-1 / -inf where a user has fewer), and the plain beam result."""

    items: torch.Tensor
    gen: torch.Tensor
    cf: torch.Tensor
    beam: BeamResult
    alone: np.ndarray | None = None  # [B, S] the target's 0-based rank under each scorer alone (full ranking)


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


def _extra_candidates(scores: Sequence[torch.Tensor], beam_items: torch.Tensor, exclude: torch.Tensor | None,
                      k: int) -> torch.Tensor:
    """`[B, k * S]` each scorer's top-k items that neither the beam nor an earlier scorer returned
    (-1 where fewer)."""
    taken = beam_items
    for all_scores in scores:
        masked = all_scores.clone()
        if exclude is not None:
            rows, cols = (exclude >= 0).nonzero(as_tuple=True)
            masked[rows, exclude[rows, cols]] = float("-inf")
        found = taken >= 0
        masked[found.nonzero(as_tuple=True)[0], taken[found]] = float("-inf")
        top, idx = masked.topk(min(k, masked.shape[1]), dim=1)
        taken = torch.cat([taken, idx.masked_fill(torch.isinf(top), -1)], 1)
    return taken[:, beam_items.shape[1]:]


@torch.no_grad()
def candidates_batch(model, collate: Callable, chunk: Sequence[Sample], trie: Trie, cfg: Config, beams: int,
                     scorers: Sequence[Any], targets: torch.Tensor, items: Any = None,
                     spare_target: bool = True) -> Candidates:
    """Beam search, each scorer's top K and exact scores of every candidate, for one batch of users."""
    device = next(model.parameters()).device
    batch = collate(chunk).to(device)
    exclude = history_exclusions(chunk, spare_target).to(device) if cfg.eval.exclude_history else None
    with autocast(device, cfg.eval.bf16 and device.type == "cuda"):
        memory, mask = model.memory(batch, items=items)
    ckv = model.t5.cross_kv(memory.float())
    beam = beam_search(model.t5, None, mask, trie, beams=beams, length_penalty=cfg.eval.length_penalty,
                       early_stopping=cfg.eval.early_stopping, exclude=exclude, softmax=cfg.model.softmax,
                       cross_kv=ckv)
    every = [scorer.scores(chunk, ckv, mask).to(device).float() for scorer in scorers]
    extra = _extra_candidates(every, beam.items, exclude, cfg.eval.fusion.candidates)
    per_call = max(1, QUERY_ROWS // max(1, extra.shape[1] * targets.shape[1]))
    gen_extra = torch.cat([teacher_forced_scores(model, [(k[s: s + per_call], v[s: s + per_call]) for k, v in ckv],
                                                 mask[s: s + per_call], extra[s: s + per_call], targets, trie,
                                                 cfg.model.softmax, cfg.eval.length_penalty)
                           for s in range(0, len(chunk), per_call)])
    cand = torch.cat([beam.items, extra], 1)
    gen = torch.cat([beam.scores.float(), gen_extra], 1)
    cf = torch.stack([a.gather(1, cand.clamp(min=0)) for a in every], -1).masked_fill((cand < 0)[..., None],
                                                                                        float("-inf"))
    alone = scorer_ranks(every, chunk, exclude, cfg) if spare_target else None
    return Candidates(cand, gen, cf, beam, alone)


def scorer_ranks(every: Sequence[torch.Tensor], chunk: Sequence[Sample], exclude: torch.Tensor | None,
                 cfg: Config) -> np.ndarray:
    """`[B, S]` each target's rank under each scorer's full ranking, with the evaluation's exclusions
    and tie rule (`eval.ties`, seeded by run.seed and the user)."""
    targets = np.array([s.target for s in chunk])
    mask = None
    if exclude is not None:
        mask = np.zeros(tuple(every[0].shape), dtype=bool)
        rows, cols = (exclude >= 0).nonzero(as_tuple=True)
        mask[rows.cpu().numpy(), exclude[rows, cols].cpu().numpy()] = True
    keys = np.array([s.user for s in chunk])
    return np.stack([ranks_from_scores(a.cpu().numpy(), targets, mask, keys, cfg.run.seed, cfg.eval.ties)
                     for a in every], 1)


def standardise(x: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Each row standardised over its valid entries (mean 0, deviation 1; 0 where constant)."""
    n = np.maximum(valid.sum(1, keepdims=True), 1)
    v = np.where(valid, x, 0.0)
    mean = v.sum(1, keepdims=True) / n
    dev = np.sqrt((np.where(valid, (x - mean) ** 2, 0.0)).sum(1, keepdims=True) / n)
    return np.where(valid, (v - mean) / np.where(dev > 0, dev, 1.0), 0.0)


def _per_scorer(cf: np.ndarray) -> np.ndarray:
    """Scorer scores as `[U, C, S]` (a `[U, C]` array is one scorer's)."""
    return cf[..., None] if cf.ndim == 2 else cf


def fused_scores(gen: np.ndarray, cf: np.ndarray, weight: float | Sequence[float]) -> np.ndarray:
    """`[U, C]` final scores: (1 - sum(w)) * standardised generative + sum(w_s * standardised
    scorer s) (-inf where there is no candidate). `cf`: `[U, C]` (one scorer) or `[U, C, S]`."""
    cf = _per_scorer(cf)
    w = np.atleast_1d(np.asarray(weight, dtype=np.float64))
    if len(w) != cf.shape[-1]:
        raise ValueError(f"{len(w)} fusion weights for {cf.shape[-1]} scorers")
    valid = np.isfinite(gen) & np.isfinite(cf).all(-1)
    out = (1 - w.sum()) * standardise(gen, valid)
    for s in range(len(w)):
        out = out + w[s] * standardise(cf[..., s], valid)
    return np.where(valid, out, -np.inf)


def fused_order(cand: np.ndarray, gen: np.ndarray, cf: np.ndarray,
                weight: float | Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """(items, scores) `[U, C]`, each user's candidates best first under the fused score."""
    score = fused_scores(gen, cf, weight)
    order = np.argsort(-score, axis=1, kind="stable")
    return np.take_along_axis(np.where(np.isfinite(score), cand, -1), order, 1), np.take_along_axis(score, order, 1)


def weight_text(weight: float | Sequence[float], names: Sequence[str]) -> str:
    """A fusion weight as people read it: `0.25`, or `lightgcn 0.25, dense 0.4`."""
    if isinstance(weight, (int, float)):
        return f"{weight:g}"
    return ", ".join(f"{n} {w:g}" for n, w in zip(names, weight))


def weight_grid(scorers: int, grid: Sequence[float] = GRID) -> list[tuple[float, ...]]:
    """Every weight vector with entries on `grid` whose sum is at most 1."""
    if scorers == 1:
        return [(w,) for w in grid]
    return [(w,) + rest for w in grid for rest in weight_grid(scorers - 1, grid) if w + sum(rest) <= 1 + 1e-9]


def tune_weight(cand: np.ndarray, gen: np.ndarray, cf: np.ndarray, targets: np.ndarray,
                grid: Sequence[float] = GRID) -> tuple[float | list[float], dict[str, float]]:
    """The weights with the best mean ndcg@10 over these users (ties: the smaller total weight,
    then the earlier on the grid), and the mean at every point. One scorer: a float; several: a list."""
    curve, points = {}, weight_grid(_per_scorer(cf).shape[-1], grid)
    for w in points:
        ranks = ranks_from_lists(fused_order(cand, gen, cf, w)[0], targets)
        curve[",".join(f"{x:.2f}" for x in w)] = float(per_user_metrics(ranks, (10,))[TUNE_METRIC].mean())
    best = max(points, key=lambda w: (curve[",".join(f"{x:.2f}" for x in w)], -sum(w)))
    return (float(best[0]) if len(best) == 1 else [float(x) for x in best]), curve
