"""Evaluate a GRAM-C model on the validation or test split: item-level, batched, DDP-safe.

1. Every item passage is encoded **once per model** (`GramC.item_states` over all items in
   chunks; bf16 autocast on CUDA when `eval.bf16`, encoder side only: the beam search always
   scores in fp32), and each user's fused memory is gathered from
   those states plus the user's own passage (`GramC.memory(batch, items=...)`). With the prefix in
   `every_passage` placement the item passages depend on the user, so each batch encodes its own.
2. `beam_search` (trie-constrained, `eval.beams`, `eval.length_penalty`, `eval.early_stopping`,
   the model's `model.softmax`) returns items, not strings; the rank of the target is its position
   in that list (-1 if absent). Users are batched longest history first (similar memory lengths,
   little padding; results keep the sample order). A progress bar counts users (users/s and ETA).
3. Under DDP (torchrun) rank r takes samples r::world (no padding, no duplicates); the per-user
   results of all ranks are gathered and checked to cover every sample exactly once.

`evaluate_split(model, assets, cfg, split)` is what GRAM-C training validates with (through the
recipe `gramc.recipes.train_gramc`: the trainer itself never imports evaluation), what the doctor
and the pipeline call; `gramc evaluate` (eval/cli.py) adds files and a table.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from ..config import Config
from ..data.splits import Sample, item_training_counts, samples as split_samples
from ..errors import GramcError
from ..ids.trie import Trie, trie_for
from ..metrics import bootstrap_ci, per_user_metrics, popularity_stats, ranks_from_lists, repeat_stats, summarize
from ..model.inputs import Collator
from ..runtime import rank_world, shard
from ..train.precision import autocast
from .fusion import Fusion, candidates_batch, fused_order, tune_weight, weight_text
from .search import search_batch


class EvalError(GramcError, RuntimeError):
    """Evaluation cannot run (missing checkpoint, inconsistent shards, ...); the message says why."""

    exit_code = 2


@dataclass
class EvalResult:
    """Per-user results of one split plus the summary that goes into metrics.json."""

    split: str
    metrics: dict[str, float]  # mean hit@k, ndcg@k, mrr
    ci: dict[str, tuple[float, float]]  # bootstrap 95% intervals
    users: np.ndarray  # [U] user index per sample
    targets: np.ndarray  # [U] target item index
    ranks: np.ndarray  # [U] 0-based rank of the target in the beam list, -1 = not found
    items: np.ndarray  # [U, beams] recommended items, best first, -1 = none
    scores: np.ndarray  # [U, beams] beam scores, -inf = none
    invalid: int  # finished beams that map to no item (must be 0)
    beams: int
    length_penalty: float
    time_s: float
    checkpoint: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    plain_ranks: np.ndarray | None = None  # fused evaluation: the ranks of the beam search alone
    alone_ranks: dict[str, np.ndarray] | None = None  # fused evaluation: the ranks under each scorer alone

    @property
    def num_users(self) -> int:
        return int(len(self.users))

    def to_json(self) -> dict[str, Any]:
        """The metrics.json record (same schema as the baselines')."""
        return {"split": self.split, "users": self.num_users, "metrics": dict(self.metrics),
                "ci": {k: [lo, hi] for k, (lo, hi) in self.ci.items()}, "beams": self.beams,
                "length_penalty": self.length_penalty, "invalid": self.invalid,
                "checkpoint": self.checkpoint, "time_s": round(self.time_s, 3), **self.extra}

    def predictions(self, item_ids: Sequence[str], user_ids: Sequence[str] | None = None,
                    top: int = 50) -> Iterator[dict[str, Any]]:
        """One JSON-able record per user: user, target, top items with scores, hit rank (1-based, 0 = miss)."""
        for u, t, r, items, scores in zip(self.users, self.targets, self.ranks, self.items, self.scores):
            keep = items[:top] >= 0
            yield {"user": user_ids[u] if user_ids is not None else int(u), "target": item_ids[t],
                   "items": [item_ids[i] for i in items[:top][keep]],
                   "scores": [round(float(s), 5) for s in scores[:top][keep]],
                   "hit_rank": int(r) + 1 if r >= 0 else 0}




def search_protocol(cfg: Config, beams: int) -> dict[str, Any]:
    """What a generative evaluation did, as recorded in its metrics.json (the baselines record the
    same keys, `gramc.baselines.common.full_ranking_protocol`)."""
    return {"ranking": f"trie-constrained beam search, {beams} beams", "history_window": cfg.data.max_his,
            "exclude_history": "every earlier item" if cfg.eval.exclude_history else False,
            "ties": "none: items ordered by their exact scores", "ks": list(cfg.eval.ks),
            "bootstrap": cfg.eval.bootstrap}


def uses_global_items(cfg: Config) -> bool:
    """Item passages can be encoded once for all users unless the prefix enters every passage."""
    return not (cfg.model.prefix.enabled and cfg.model.prefix.placement == "every_passage")


def search_collator(assets, cfg: Config) -> Collator:
    """The collator beam search reads: item passages encoded once for all users (`items="global"`)
    unless the prefix enters every passage, then each batch's own, not deduplicated."""
    glob = uses_global_items(cfg)
    return Collator(assets.cache, cfg, gcn_rows=assets.gcn_rows, items="global" if glob else "batch",
                    dedupe=None if glob else False)


@torch.no_grad()
def encode_all_items(model, cache, cfg: Config, device: torch.device, progress: bool = True,
                     only: Sequence[int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """States `[I, L, d]` and mask `[I, L]` of every item passage, `eval.item_batch_size` at a time.

    `only`: encode just these items (the other rows stay zero), e.g. the history items of a subset
    of users.
    """
    ids, mask = cache.all_items()
    n, width = ids.shape
    bf16 = cfg.eval.bf16 and device.type == "cuda"
    out = torch.zeros(n, width, model.d_model, device=device, dtype=torch.bfloat16 if bf16 else torch.float32)
    rows = torch.arange(n) if only is None else torch.as_tensor(sorted(set(int(i) for i in only)), dtype=torch.long)
    step = max(1, cfg.eval.item_batch_size)
    bar = tqdm(range(0, len(rows), step), desc="encode items", unit="chunk", disable=not progress, leave=False)
    for s in bar:
        idx = rows[s: s + step]
        chunk_ids, chunk_mask = cache.item_rows(idx)
        w = chunk_ids.shape[1]
        with autocast(device, bf16):
            states, _ = model.item_states(chunk_ids.to(device), chunk_mask.to(device))
        out[idx.to(device), :w] = states.to(out.dtype)
    return out, mask.to(device)


class EncodedItems:
    """Every item passage's encoder states, kept while the weights that made them are unchanged, so
    that the splits of one evaluation call (and a fused ranker's tuning pass) share one item pass.

    The key is each parameter's version counter, which every in-place update advances (an optimiser
    step, a checkpoint loaded into the model): states from other weights are never reused."""

    def __init__(self) -> None:
        self.key: tuple | None = None
        self.table: tuple[torch.Tensor, torch.Tensor] | None = None
        self.passes = 0  # item passes made (the tests count them)
        self.seconds = 0.0  # time of the last one

    def get(self, model, cache, cfg: Config, device: torch.device, progress: bool) -> tuple[torch.Tensor, torch.Tensor]:
        key = (id(model), str(device), tuple(p._version for p in model.parameters()))
        if key != self.key:
            self.table = None  # the old states go before the new ones are made
            t0 = time.perf_counter()
            self.table = encode_all_items(model, cache, cfg, device, progress)
            self.key, self.passes, self.seconds = key, self.passes + 1, time.perf_counter() - t0
        return self.table


def _gather(local: dict[str, Any], world: int) -> list[dict[str, Any]]:
    if world == 1:
        return [local]
    parts: list = [None] * world
    dist.all_gather_object(parts, local)
    return parts


def merge_shards(parts: list[dict[str, Any]], total: int) -> dict[str, np.ndarray]:
    """Concatenate per-rank results in sample order; error unless every sample appears exactly once."""
    index = np.concatenate([p["index"] for p in parts]) if parts else np.zeros(0, dtype=np.int64)
    counts = np.bincount(index, minlength=total) if len(index) else np.zeros(total, dtype=np.int64)
    if len(counts) != total or not np.all(counts == 1):
        missing = np.flatnonzero(counts[:total] == 0)[:5].tolist()
        dup = np.flatnonzero(counts[:total] > 1)[:5].tolist()
        raise EvalError(f"distributed evaluation covered {len(index)} results for {total} samples "
                        f"(missing e.g. {missing}, duplicated e.g. {dup}); every sample must be evaluated once")
    order = np.argsort(index, kind="stable")
    out = {}
    for key in parts[0]:
        if key == "invalid":
            out[key] = int(sum(p[key] for p in parts))
        elif key == "encode_s":  # ranks encode in parallel: the slowest one
            out[key] = float(max(p[key] for p in parts))
        else:
            out[key] = np.concatenate([p[key] for p in parts])[order]
    return out


def length_order(smp: Sequence[Sample], positions: Sequence[int]) -> np.ndarray:
    """Indices into `positions`, longest history first (stable): a batch then holds users of similar
    memory length, so that little cross-attention runs over padding. Results go back in order."""
    lengths = np.array([len(smp[i].history) for i in positions], dtype=np.int64)
    return np.argsort(-lengths, kind="stable")


def evaluate_samples(model, assets, cfg: Config, smp: Sequence[Sample], beams: int | None = None,
                     progress: bool = True, trie: Trie | None = None,
                     fusion: Fusion | None = None, encoded: EncodedItems | None = None) -> dict[str, Any]:
    """Beam-search this process's share of `smp`; return its per-sample arrays (keys: index, users,
    targets, ranks, items, scores, invalid, encode_s = seconds spent encoding item passages), indices
    into `smp`. `trie`: the item trie on the model's device (None = built here). `fusion`: also the
    fused ranker's candidates, their generative and scorer scores, and each target's rank under each
    scorer alone (keys cand, gen, cf `[n, C, S]`, alone `[n, S]`; `gramc.eval.fusion`). `encoded`:
    item states shared with other calls on the same weights (None = encoded here)."""
    rank, world = rank_world()
    beams = beams or cfg.eval.beams
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    trie = (trie if trie is not None else trie_for(assets.item_ids)).to(device)  # no copy when already there
    mine = shard(range(len(smp)), rank, world)
    glob = uses_global_items(cfg)
    collate = search_collator(assets, cfg)
    show = progress and rank == 0
    encoded = encoded if encoded is not None else EncodedItems()
    passes = encoded.passes
    items_table = encoded.get(model, assets.cache, cfg, device, show) if glob and mine else None
    encode_s = encoded.seconds if encoded.passes > passes else 0.0  # 0: states made by an earlier call
    n = len(mine)
    out_items = np.full((n, beams), -1, dtype=np.int64)
    out_scores = np.full((n, beams), -np.inf, dtype=np.float32)
    invalid = 0
    scorers = fusion.bind(model, items_table) if fusion is not None else None
    fused: dict[str, list] = {"pos": [], "cand": [], "gen": [], "cf": [], "alone": []}
    bs = max(1, cfg.eval.batch_size)
    order = length_order(smp, mine)
    bar = tqdm(total=n, desc=f"beam search (beams={beams}, softmax={cfg.model.softmax})", unit="user",
               disable=not show, leave=False, dynamic_ncols=True, smoothing=0.1)
    for s in range(0, n, bs):
        pos = order[s: s + bs]
        chunk = [smp[mine[p]] for p in pos]
        if scorers is None:
            res = search_batch(model, collate, chunk, trie, cfg, beams, items=items_table)
        else:
            c = candidates_batch(model, collate, chunk, trie, cfg, beams, scorers, assets.cache.target_table,
                                 items=items_table)
            res = c.beam
            for key, value in (("pos", pos), ("cand", c.items), ("gen", c.gen), ("cf", c.cf), ("alone", c.alone)):
                fused[key].append(np.asarray(value.cpu()) if torch.is_tensor(value) else value)
        out_items[pos] = res.items.cpu().numpy()
        out_scores[pos] = res.scores.float().cpu().numpy()
        invalid += res.invalid
        bar.update(len(chunk))  # users/s and ETA
    bar.close()
    if was_training:
        model.train()
    targets = np.array([smp[i].target for i in mine], dtype=np.int64)
    ranks = ranks_from_lists(out_items, targets)
    out = {"index": np.array(mine, dtype=np.int64), "users": np.array([smp[i].user for i in mine], dtype=np.int64),
           "targets": targets, "ranks": ranks, "items": out_items, "scores": out_scores, "invalid": invalid,
           "encode_s": encode_s}
    if fusion is not None:
        out.update(_in_sample_order(fused, n, beams + cfg.eval.fusion.candidates * len(fusion.names),
                                    len(fusion.names)))
    return out


def _in_sample_order(fused: dict[str, list], n: int, width: int, n_s: int) -> dict[str, np.ndarray]:
    """The fused ranker's per-batch arrays (`pos`, `cand`, `gen`, `cf`, `alone`) as `[n, ...]` arrays
    in sample order, like evaluate_samples' others (-1 / -inf where a user has fewer candidates)."""
    out = {}
    for key, fill, dtype, shape in (("cand", -1, np.int64, (width,)), ("gen", -np.inf, np.float32, (width,)),
                                    ("cf", -np.inf, np.float32, (width, n_s)), ("alone", -1, np.int64, (n_s,))):
        arr = np.full((n,) + shape, fill, dtype=dtype)
        for pos, part in zip(fused["pos"], fused[key]):
            arr[pos, : part.shape[1]] = part
        out[key] = arr
    return out


def tuning_samples(assets, cfg: Config) -> list[Sample]:
    """The validation users that tune the fusion weights (and pick a fitted head's epoch):
    `eval.fusion.tune_users` of them drawn with run.seed, in split order (0 or more than there are: all)."""
    smp = split_samples(assets.ds, "valid", cfg.data.max_his)  # type: ignore[arg-type]
    n = cfg.eval.fusion.tune_users
    if 0 < n < len(smp):
        keep = np.sort(np.random.default_rng(cfg.run.seed).choice(len(smp), n, replace=False))
        smp = [smp[i] for i in keep]
    return list(smp)


def fusion_weight(model, assets, cfg: Config, fusion: Fusion, beams: int, progress: bool = True,
                  trie: Trie | None = None, encoded: EncodedItems | None = None
                  ) -> tuple[float | list[float], dict[str, Any]]:
    """`eval.fusion.weight` (split equally between two scorers), or the weights tuned on
    `eval.fusion.tune_users` seeded validation users (`gramc.eval.fusion.tune_weight`); and what to
    record about them. One scorer: a float; two: a list, in `fusion.names` order."""
    f = cfg.eval.fusion
    if f.weight is not None:
        weight = f.weight if len(fusion.names) == 1 else fusion.weights(f.weight)
        return weight, {"weight": weight, "tuned": False}
    t0 = time.perf_counter()
    smp = tuning_samples(assets, cfg)
    _, world = rank_world()
    local = evaluate_samples(model, assets, cfg, smp, beams=beams, progress=progress, trie=trie, fusion=fusion,
                             encoded=encoded)
    merged = merge_shards(_gather(local, world), len(smp))
    weight, curve = tune_weight(merged["cand"], merged["gen"], merged["cf"], merged["targets"])
    return weight, {"weight": weight, "tuned": True, "tune_users": len(smp), "tune_seed": cfg.run.seed,
                    "valid_ndcg@10_by_weight": curve, "tune_seconds": round(time.perf_counter() - t0, 1)}


def alone_record(ranks: np.ndarray, ks: Sequence[int], cfg: Config) -> dict[str, Any]:
    """Metrics and intervals of one scorer ranking the whole catalogue by itself."""
    means = summarize(ranks, ks)
    means.pop("users")
    return {"metrics": means, "ci": {k: list(v) for k, v in bootstrap_ci(per_user_metrics(ranks, ks),
                                                                       n=cfg.eval.bootstrap, seed=cfg.run.seed).items()}}


def apply_fusion(merged: dict[str, Any], fusion: Fusion, weight: float | list[float], extra: dict[str, Any],
                 cfg: Config) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Re-rank `merged` (one split's gathered results) by the fused score, in place, and record the
    beam search's own metrics and each scorer's alone in `extra`. Returns (the beam's ranks, each
    scorer's ranks)."""
    ks = list(cfg.eval.ks)
    plain_ranks = merged["ranks"]
    extra["unfused"] = alone_record(plain_ranks, ks, cfg)
    merged["items"], merged["scores"] = fused_order(merged["cand"], merged["gen"], merged["cf"], weight)
    merged["ranks"] = ranks_from_lists(merged["items"], merged["targets"])
    alone_ranks = {name: merged["alone"][:, s] for s, name in enumerate(fusion.names)}
    extra["fusion"].update(scorer=cfg.eval.fusion.scorer, scorers=list(fusion.names),
                           candidates=cfg.eval.fusion.candidates,
                           target_is_candidate=float((merged["cand"] == merged["targets"][:, None]).any(1).mean()),
                           alone={name: alone_record(r, ks, cfg) for name, r in alone_ranks.items()})
    extra["protocol"]["ranking"] += (f" + {cfg.eval.fusion.scorer} top {cfg.eval.fusion.candidates}, fused "
                                     f"(weight {weight_text(weight, fusion.names)})")
    return plain_ranks, alone_ranks


def evaluate_split(model, assets, cfg: Config, split: str, max_users: int = 0, beams: int | None = None,
                   progress: bool = True, trie: Trie | None = None, fused: bool = False,
                   encoded: EncodedItems | None = None) -> EvalResult:
    """Evaluate `split` ("valid" or "test"): metrics, per-user ranks and predictions.

    Every process of a DDP group must call it (each evaluates its own share); all of them return
    the same, complete result. `max_users` > 0 keeps the first users of the split. `fused`: rank
    with `gramc.eval.fusion` (`eval.fusion.*`); the result's metrics are the fused ones, and
    `extra["unfused"]` / `plain_ranks` hold the beam search's own. `encoded`: item states shared
    with the caller's other splits (`evaluate_splits`); the fused ranker's tuning pass shares them too.
    """
    if split not in ("valid", "test"):
        raise EvalError(f"split must be 'valid' or 'test', got {split!r}")
    t0 = time.perf_counter()
    smp = split_samples(assets.ds, split, cfg.data.max_his)  # type: ignore[arg-type]
    if max_users and max_users > 0:
        smp = smp[:max_users]
    if not smp:
        raise EvalError(f"the {split} split has no users (sequences need at least 3 items)")
    _, world = rank_world()
    model = getattr(model, "module", model)  # a DDP wrapper: search with the module itself
    beams = beams or cfg.eval.beams
    ks = list(cfg.eval.ks)
    fusion = Fusion.for_run(cfg, assets) if fused else None
    encoded = encoded if encoded is not None else EncodedItems()
    extra: dict[str, Any] = {"protocol": search_protocol(cfg, beams)}
    if fusion is not None:
        weight, extra["fusion"] = fusion_weight(model, assets, cfg, fusion, beams, progress, trie, encoded)
        t0 = time.perf_counter()  # the split's own time; tuning is timed apart
    local = evaluate_samples(model, assets, cfg, smp, beams=beams, progress=progress, trie=trie, fusion=fusion,
                             encoded=encoded)
    merged = merge_shards(_gather(local, world), len(smp))
    plain_ranks, alone_ranks = (None, None) if fusion is None else apply_fusion(merged, fusion, weight, extra, cfg)
    means = summarize(merged["ranks"], ks)
    means.pop("users")
    ci = bootstrap_ci(per_user_metrics(merged["ranks"], ks), n=cfg.eval.bootstrap, seed=cfg.run.seed)
    counts = np.array(item_training_counts(assets.ds), dtype=np.int64)
    return EvalResult(split=split, metrics=means, ci=ci, users=merged["users"], targets=merged["targets"],
                      ranks=merged["ranks"], items=merged["items"], scores=merged["scores"],
                      invalid=int(merged["invalid"]), beams=beams,
                      length_penalty=cfg.eval.length_penalty, time_s=time.perf_counter() - t0,
                      plain_ranks=plain_ranks, alone_ranks=alone_ranks,
                      extra={**extra, "world": world,
                             "encode_s": round(float(merged.get("encode_s", 0.0)), 3),
                             "repeats": repeat_stats(merged["items"], [s.history for s in smp], merged["targets"]),
                             "popularity": popularity_stats(merged["ranks"], counts[merged["targets"]]),
                             # eval.allow_capped: these cut-offs exceed the beam, so their hits are capped
                             **({"capped_ks": capped} if (capped := [k for k in ks if k > (beams or cfg.eval.beams)])
                                else {})})


def evaluate_splits(model, assets, cfg: Config, splits: Sequence[str], max_users: int = 0, progress: bool = True,
                    trie: Trie | None = None, fused: bool = False) -> dict[str, EvalResult]:
    """`evaluate_split` of each split with the same weights, every item passage encoded once and the
    trie moved to the model's device once for all."""
    encoded = EncodedItems()
    trie = trie if trie is not None else trie_for(assets.item_ids).to(next(model.parameters()).device)
    return {split: evaluate_split(model, assets, cfg, split, max_users=max_users, progress=progress, trie=trie,
                                  fused=fused, encoded=encoded) for split in splits}
