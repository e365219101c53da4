"""`gramc doctor search --run DIR`: when a trained model misses a target, is it the beam search or
the model?

Seeded samples of a split are ranked by the run's own beam search (`eval.beams` and the other eval
settings), and each target's exact score is computed teacher forced: the score the search itself
uses, the sum of the ID tokens' log-probabilities (end of sequence included) under `model.softmax`,
divided by `n ** eval.length_penalty`. With s_k the score of the k-th item the search returned:

* **hit**: the target is in the search's top k;
* **search error**: it is not, yet it scores above s_k. An exhaustive ranking puts it above an item
  the search returned, so a wider beam would rank it higher;
* **model error**: it scores at or below s_k. At least k items score higher, so no search can
  rank it in the top k: the model, not the search, has to change.

Checks:

* `search.consistency`: for the targets the search found, its score equals the teacher-forced one
  (|difference| < 1e-3 nats). Fails otherwise: the two code paths score differently, a bug.
* `search.errors`: the share of samples with a search error, and `model_error_gap`, the median
  nats by which a model error's target falls short of the k-th item (`by_popularity`: the same per
  tercile of the target's training interactions). Warns above 1% search errors: raise `eval.beams`.
* `search.fusion` (with `eval.fusion.enabled`): how the fused ranker changes the same samples. Was
  the target a candidate at all (from the beam or from the collaborative top K), did fusion lift it
  into the top k the beam missed, or push out a hit of the beam; overall and per popularity tercile.
  The weight is `eval.fusion.weight`, or tuned as `gramc evaluate` tunes it (on validation users:
  when the doctor reads the validation split, the tuned weight has seen some of these samples).
  Warns when, on a popularity tercile, one scorer alone hits the target in its top k for clearly
  more samples than the fused ranker does (McNemar's exact test on the samples the two disagree
  on, p < 0.05 after a Bonferroni correction over the terciles and scorers tested): one weight for
  every user then suits some targets and costs others.
* `search.scorers` (with `eval.fusion.enabled`, or for a model with a dense head): each fused scorer
  (LightGCN fold-in, the dense head; without fusion the dense head) ranking the whole catalogue by itself: its recall of the target at k and at
  `eval.fusion.candidates`, overall and per popularity tercile. It says whether a scorer reaches the
  rare targets the beam cannot.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from scipy.stats import binomtest
from tqdm.auto import tqdm

from ..checks import Check, failed, passed, warned
from ..config import Config
from ..data.splits import Sample, item_training_counts, samples as split_samples
from ..eval.evaluate import encode_all_items, evaluate_samples, fusion_weight, search_collator, uses_global_items
from ..eval.fusion import Fusion, fused_order, weight_text
from ..eval.search import search_batch
from ..ids.tokens import IGNORE_INDEX
from ..ids.trie import trie_for
from ..metrics import ranks_from_lists, tercile_groups
from ..model.inputs import Collator
from .prefix import pick_samples

TOLERANCE = 1e-3  # nats: the search's and the teacher-forced score of one item agree this well
MAX_SEARCH_ERRORS = 0.01  # share of samples
FUSED_BELOW_P = 0.05  # family-wise level of the scorer-beats-fused tests (Bonferroni over terciles x scorers)


@dataclass
class Outcome:
    """Per sample: the target's teacher-forced score, the search's k-th score, the target's rank in
    the search (-1: not returned) and, when returned, the search's own score of it."""

    target_score: np.ndarray  # [N]
    kth_score: np.ndarray  # [N], -inf when the search returned fewer than k items
    rank: np.ndarray  # [N]
    found_score: np.ndarray  # [N], NaN when not returned

    def classes(self, k: int) -> np.ndarray:
        """0 = hit, 1 = search error, 2 = model error, per sample."""
        hit = (self.rank >= 0) & (self.rank < k)
        return np.where(hit, 0, np.where(self.target_score > self.kth_score, 1, 2))


@torch.no_grad()
def outcomes(model, assets: Any, cfg: Config, smp: Sequence[Sample], k: int, progress: bool = False) -> Outcome:
    """Beam-search `smp` as `gramc evaluate` does and score each target teacher forced."""
    device = next(model.parameters()).device
    trie = trie_for(assets.item_ids).to(device)
    glob = uses_global_items(cfg)
    search_collate = search_collator(assets, cfg)
    collate = Collator(assets.cache, cfg, gcn_rows=assets.gcn_rows)
    items = encode_all_items(model, assets.cache, cfg, device, progress=False) if glob else None
    lp = cfg.eval.length_penalty
    parts: dict[str, list[np.ndarray]] = {"target": [], "kth": [], "rank": [], "found": []}
    bs = max(1, cfg.eval.batch_size)
    bar = tqdm(total=len(smp), desc=f"search (beams={cfg.eval.beams})", unit="user", disable=not progress,
               leave=False, dynamic_ncols=True)
    for s in range(0, len(smp), bs):
        chunk = smp[s: s + bs]
        res = search_batch(model, search_collate, chunk, trie, cfg, cfg.eval.beams, items=items)
        found, scores = res.items.cpu().numpy(), res.scores.double().cpu().numpy()
        batch = collate(chunk).to(device)
        real = batch.labels != IGNORE_INDEX
        nll = model.token_losses(batch).double().masked_fill(~real, 0.0).sum(1)
        tokens = real.sum(1).double()
        parts["target"].append((-nll / tokens.pow(lp) if lp else -nll).cpu().numpy())
        parts["kth"].append(scores[:, k - 1] if scores.shape[1] >= k else np.full(len(chunk), -np.inf))
        targets = np.array([c.target for c in chunk])
        hit = found == targets[:, None]
        rank = np.where(hit.any(1), hit.argmax(1), -1)
        parts["rank"].append(rank)
        parts["found"].append(np.where(rank >= 0, scores[np.arange(len(chunk)), rank.clip(min=0)], np.nan))
        bar.update(len(chunk))
    bar.close()
    cat = {n: np.concatenate(v) for n, v in parts.items()}
    kth = np.where(np.isfinite(cat["kth"]), cat["kth"], -np.inf)
    return Outcome(cat["target"], kth, cat["rank"].astype(np.int64), cat["found"])


def _shares(cls: np.ndarray, gap: np.ndarray) -> dict[str, float | None]:
    """Share of each class, and the median nats a model error's target lacks to reach the k-th item."""
    n = max(len(cls), 1)
    out: dict[str, float | None] = {name: round(float((cls == c).sum() / n), 4)
                                    for c, name in enumerate(("hit", "search_error", "model_error"))}
    out["model_error_gap"] = round(float(np.median(gap[cls == 2])), 3) if (cls == 2).any() else None
    return out


def search_checks(model, assets: Any, cfg: Config, split: str = "valid", users: int = 1000, k: int = 10,
                  seed: int | None = None, progress: bool = False) -> list[Check]:
    """`search.consistency` and `search.errors` on `users` seeded samples of `split` (all when 0)."""
    if k > cfg.eval.beams:
        return [failed("search.k", k, f"k={k} exceeds eval.beams={cfg.eval.beams}: the search returns fewer items "
                                      f"than the cut-off; pass eval.beams={k} or more")]
    seed = cfg.run.seed if seed is None else seed
    smp = pick_samples(split_samples(assets.ds, split, cfg.data.max_his), users, seed)
    if not smp:
        return [failed("search.samples", 0, f"the {split} split has no samples")]
    model.eval()
    out = outcomes(model, assets, cfg, smp, k, progress)
    seen = np.isfinite(out.found_score)
    gap = np.abs(out.found_score[seen] - out.target_score[seen])
    worst = float(gap.max()) if seen.any() else 0.0
    value = {"found": int(seen.sum()), "samples": len(smp), "max_abs_diff": round(worst, 6)}
    checks = [passed("search.consistency", value) if worst < TOLERANCE else
              failed("search.consistency", value, f"the beam search and the teacher-forced loss score the same "
                                                  f"target {worst:.4f} nats apart: the two paths disagree "
                                                  "(softmax, length penalty or exclusions); report this as a bug")]
    cls = out.classes(k)
    gap = out.kth_score - out.target_score  # > 0 for a model error: how far below the k-th item it scores
    counts = np.array(item_training_counts(assets.ds))[[s.target for s in smp]]
    value = {"k": k, "beams": cfg.eval.beams, "samples": len(smp), **_shares(cls, gap),
             "by_popularity": [{"train_count": [lo, hi], "users": int(m.sum()), **_shares(cls[m], gap[m])}
                               for lo, hi, m in tercile_groups(counts)]}
    share = value["search_error"]
    if share > MAX_SEARCH_ERRORS:
        checks.append(warned("search.errors", value, f"for {share:.1%} of samples the target scores above the "
                                                     f"search's {k}th item but was not returned: the beam prunes "
                                                     f"targets the model ranks in its top {k}; raise eval.beams"))
    else:
        checks.append(passed("search.errors", value, f"misses are the model's ({value['model_error']:.1%} of "
                                                     f"samples), not the search's ({share:.1%})"))
    if cfg.eval.fusion.enabled:
        checks += fusion_checks(model, assets, cfg, smp, k, counts, progress)
    elif getattr(model, "dense", None) is not None:  # the dense head's reach, without fusing it
        out = evaluate_samples(model, assets, cfg, smp, progress=progress, fusion=Fusion(("dense",)))
        checks.append(scorers_check(out["alone"], ("dense",), k, cfg.eval.fusion.candidates, counts))
    return checks


def _fusion_shares(cand: np.ndarray, plain: np.ndarray, fused: np.ndarray, k: int) -> dict[str, float]:
    n = max(len(plain), 1)
    hit_p, hit_f = (plain >= 0) & (plain < k), (fused >= 0) & (fused < k)
    return {"target_is_candidate": round(float(cand.sum() / n), 4), "beam_hit": round(float(hit_p.sum() / n), 4),
            "fused_hit": round(float(hit_f.sum() / n), 4), "lifted": round(float((hit_f & ~hit_p).sum() / n), 4),
            "pushed_out": round(float((hit_p & ~hit_f).sum() / n), 4)}


def _recall(ranks: np.ndarray, k: int) -> float:
    return round(float(((ranks >= 0) & (ranks < k)).mean()), 4) if len(ranks) else 0.0


def scorers_check(alone: np.ndarray, names: Sequence[str], k: int, depth: int, counts: np.ndarray) -> Check:
    """`search.scorers`: each scorer's recall of the target at k and at `depth` (its candidates),
    ranking the whole catalogue alone, overall and per popularity tercile."""
    def shares(m: np.ndarray) -> dict[str, dict[str, float]]:
        return {name: {f"recall@{k}": _recall(alone[m, s], k), f"recall@{depth}": _recall(alone[m, s], depth)}
                for s, name in enumerate(names)}

    groups = tercile_groups(counts)
    value = {"k": k, "candidates": depth, **shares(np.ones(len(alone), dtype=bool)),
             "by_popularity": [{"train_count": [lo, hi], "users": int(m.sum()), **shares(m)} for lo, hi, m in groups]}
    rare = value["by_popularity"][0]
    said = "; ".join(f"{n}: recall@{depth} {value[n][f'recall@{depth}']:.1%} overall, "
                     f"{rare[n][f'recall@{depth}']:.1%} on the rarest third of targets" for n in names)
    return passed("search.scorers", value, f"each scorer alone over the whole catalogue: {said}")


def fused_below_scorers(alone: np.ndarray, fused: np.ndarray, names: Sequence[str], k: int,
                        counts: np.ndarray) -> list[dict[str, Any]]:
    """The (tercile, scorer) pairs where the scorer alone (`alone[:, s]`, its rank over the whole
    catalogue) hits the target in its top k for more samples than the fused ranking (`fused`),
    by McNemar's exact one-sided test on the discordant samples, p < FUSED_BELOW_P divided by the
    number of (tercile, scorer) pairs (Bonferroni)."""
    out = []
    fused_hit = (fused >= 0) & (fused < k)
    groups = tercile_groups(counts)
    level = FUSED_BELOW_P / max(len(groups) * len(names), 1)
    for lo, hi, m in groups:
        for s, name in enumerate(names):
            hit = (alone[m, s] >= 0) & (alone[m, s] < k)
            only_scorer, only_fused = int((hit & ~fused_hit[m]).sum()), int((fused_hit[m] & ~hit).sum())
            if only_scorer <= only_fused:
                continue
            p = binomtest(only_scorer, only_scorer + only_fused, 0.5, alternative="greater").pvalue
            if p < level:
                out.append({"train_count": [lo, hi], "users": int(m.sum()), "scorer": name,
                            f"scorer_hit@{k}": round(float(hit.mean()), 4),
                            f"fused_hit@{k}": round(float(fused_hit[m].mean()), 4),
                            "only_scorer": only_scorer, "only_fused": only_fused, "p": round(float(p), 4)})
    return out


def fusion_checks(model, assets: Any, cfg: Config, smp: Sequence[Sample], k: int, counts: np.ndarray,
                  progress: bool = False) -> list[Check]:
    """`search.fusion` (candidates, beam hits and fused hits at k, per tercile) and `search.scorers`."""
    fusion = Fusion.for_run(cfg, assets)
    weight, record = fusion_weight(model, assets, cfg, fusion, cfg.eval.beams, progress)
    out = evaluate_samples(model, assets, cfg, smp, progress=progress, fusion=fusion)
    fused = ranks_from_lists(fused_order(out["cand"], out["gen"], out["cf"], weight)[0], out["targets"])
    cand = (out["cand"] == out["targets"][:, None]).any(1)
    value = {"k": k, "weight": weight, "tuned": record["tuned"], "samples": len(smp),
             **_fusion_shares(cand, out["ranks"], fused, k),
             "by_popularity": [{"train_count": [lo, hi], "users": int(m.sum()),
                                **_fusion_shares(cand[m], out["ranks"][m], fused[m], k)}
                               for lo, hi, m in tercile_groups(counts)]}
    missing = 1 - value["target_is_candidate"]
    depth = cfg.eval.fusion.candidates
    said = (f"fusion: hit@{k} {value['beam_hit']:.1%} (beam) -> {value['fused_hit']:.1%} (fused, weight "
            f"{weight_text(weight, fusion.names)}): {value['lifted']:.1%} of samples lifted into the top {k}, "
            f"{value['pushed_out']:.1%} pushed out; for {missing:.1%} the target was no candidate (neither the "
            f"beam's nor a scorer's top {depth})")
    value["fused_below_scorer"] = below = fused_below_scorers(out["alone"], fused, fusion.names, k, counts)
    scorers = scorers_check(out["alone"], fusion.names, k, depth, counts)
    if not below:
        return [passed("search.fusion", value, said), scorers]
    where = "; ".join(f"targets seen {b['train_count'][0]}-{b['train_count'][1]} times ({b['users']} samples): "
                      f"{b['scorer']} alone {b[f'scorer_hit@{k}']:.1%}, fused {b[f'fused_hit@{k}']:.1%}"
                      for b in below)
    return [warned("search.fusion", value, f"{said}. A scorer alone hits more targets at {k} than the fused "
                   f"ranker on part of the catalogue ({where}; McNemar, Bonferroni-corrected p < "
                   f"{FUSED_BELOW_P}): one weight for every user suits the other targets and costs these. "
                   "Compare the fused ranking with eval.fusion.weight set by hand, or report that segment "
                   "from the scorer alone"), scorers]
