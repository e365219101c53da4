"""`gramc doctor prefix --run DIR`: does a trained GRAM-C use its collaborative prefix, and is what
it uses the collaborative signal or only extra capacity?

The trained weights read the same validation (or test) samples three ways:

* `own`: each user's own recent items (what the model was trained on);
* `none`: `recent_item_ids` all 0, so every prefix slot is masked out: the GRAM input to the same
  weights (prefix dropout trained the model on such inputs too);
* `other`: the recent items of another sample (sample i gets those of sample i-1 of the checked
  list, the first those of the last): real LightGCN vectors, of the wrong user.

Per sample the figure is the target ID's negative log-likelihood (its tokens' cross-entropy summed,
teacher forced, `model.softmax`), and each check reports the mean paired difference with a 95%
bootstrap interval over samples:

* `prefix.reliance` = NLL(none) - NLL(own) (`own_nll`: the mean NLL it is a share of; `by_token`:
  the difference at each token of the ID, coarse level first, so a prefix that only narrows the
  first level shows as such): > 0 when the model gets something from the prefix;
* `prefix.specificity` = NLL(other) - NLL(own): > 0 when what it gets is *this user's* signal. A
  prefix that lowers the loss whoever's items it holds acts as a user-independent bias (capacity).
* `prefix.ranking` (`rank_users` > 0): the same users beam-searched with `own` and `none`, paired
  hit/ndcg@10, because a lower loss need not move the top of the ranking.
* `prefix.scale`: the learnt scale against its initial value (a scale driven to ~0 switched the
  prefix off); `prefix.norm`: the trained prefix vectors' norm next to the token embeddings.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from ..checks import Check, failed, passed, warned
from ..config import Config
from ..data.splits import Sample, samples as split_samples
from ..eval.evaluate import encode_all_items, search_collator, uses_global_items
from ..eval.search import search_batch
from ..ids.tokens import IGNORE_INDEX
from ..ids.trie import trie_for
from ..metrics import bootstrap_ci, paired_bootstrap_ci, per_user_metrics, ranks_from_lists
from ..model.inputs import Batch, Collator

VARIANTS = ("own", "none", "other")
MIN_EFFECT = 0.01  # nats per target ID: a smaller mean difference is read as no effect


def pick_samples(smp: Sequence[Sample], n: int, seed: int) -> list[Sample]:
    """`n` samples drawn without replacement by `seed` (all of them when n <= 0 or n >= len), in split order."""
    if n <= 0 or n >= len(smp):
        return list(smp)
    keep = np.sort(np.random.default_rng(seed).choice(len(smp), size=n, replace=False))
    return [smp[i] for i in keep]


def variant(batch: Batch, name: str, other: torch.Tensor | None = None) -> Batch:
    """`batch` with the prefix of `name` (see the module docstring); `other`: the recent items for
    "other" (default: the batch's rows rolled by one). The host counts are dropped because they
    count the own prefix's slots; the model then counts on the device."""
    ids = batch.recent_item_ids
    if name == "own":
        new = ids
    elif name == "none":
        new = torch.zeros_like(ids)
    elif name == "other":
        new = ids.roll(1, dims=0) if other is None else other.to(ids.device)
    else:
        raise ValueError(f"prefix variant must be one of {VARIANTS}, got {name!r}")
    return dataclasses.replace(batch, recent_item_ids=new, host_counts=())


@torch.no_grad()
def token_nll(model, collate: Collator, smp: Sequence[Sample], batch_size: int) -> dict[str, np.ndarray]:
    """Per sample and target token `[N, T]` (NaN past the target's end), the cross-entropy under each
    prefix variant; T is the longest target (ID tokens then end of sequence)."""
    device = next(model.parameters()).device
    out: dict[str, list[np.ndarray]] = {v: [] for v in VARIANTS}
    donors = [smp[-1], *smp[:-1]]  # sample i reads the recent items of sample i-1
    for s in range(0, len(smp), batch_size):
        batch = collate(smp[s: s + batch_size]).to(device)
        other = collate(donors[s: s + batch_size]).recent_item_ids
        real = (batch.labels != IGNORE_INDEX).cpu().numpy()
        for v in VARIANTS:
            loss = model.token_losses(variant(batch, v, other)).double().cpu().numpy()
            out[v].append(np.where(real, loss, np.nan))
    width = max(a.shape[1] for a in out["own"])
    pad = lambda a: np.pad(a, ((0, 0), (0, width - a.shape[1])), constant_values=np.nan)  # noqa: E731
    return {v: np.concatenate([pad(a) for a in parts]) for v, parts in out.items()}


def by_token(diff: np.ndarray) -> list[float]:
    """Mean of a `[N, T]` difference per target token position, over the samples that have it."""
    return [round(float(np.nanmean(col)), 4) for col in diff.T if np.isfinite(col).any()]


def effect_check(name: str, tokens: np.ndarray, own: np.ndarray, seed: int, n_boot: int, what: str,
                 absent: str) -> Check:
    """Pass when the 95% interval of the mean per-sample sum of `tokens` (a `[N, T]` NLL difference)
    lies above 0 (and the mean above MIN_EFFECT); `own` (`[N, T]`, the own prefix's NLL) gives the
    scale (`own_nll`, its per-sample mean); `by_token`: the mean difference at each target token."""
    diff = np.nansum(tokens, axis=1)
    lo, hi = bootstrap_ci({"d": diff}, n=n_boot, seed=seed)["d"]
    mean = float(diff.mean()) if len(diff) else 0.0
    value = {"mean": round(mean, 4), "ci95": [round(lo, 4), round(hi, 4)], "samples": int(len(diff)),
             "own_nll": round(float(np.nansum(own, axis=1).mean()), 4) if len(own) else None,
             "by_token": by_token(tokens)}
    if len(diff) and lo > 0 and mean >= MIN_EFFECT:
        return passed(name, value, what)
    if len(diff) and hi < 0:
        return warned(name, value, f"{absent}; the prefix variant gives the target a *higher* likelihood "
                                   f"than the user's own prefix")
    return warned(name, value, absent)


def ranking_check(model, assets: Any, cfg: Config, smp: Sequence[Sample], beams: int, seed: int,
                  n_boot: int, progress: bool = False) -> Check:
    """Beam search with the own prefix and with none, paired per user (hit@10, ndcg@10)."""
    device = next(model.parameters()).device
    trie = trie_for(assets.item_ids).to(device)
    glob = uses_global_items(cfg)
    collate = search_collator(assets, cfg)
    items = encode_all_items(model, assets.cache, cfg, device, progress=False) if glob else None
    targets = np.array([s.target for s in smp], dtype=np.int64)
    found: dict[str, list[np.ndarray]] = {"own": [], "none": []}
    bs = max(1, cfg.eval.batch_size)
    bar = tqdm(total=len(smp), desc=f"prefix.ranking (own and none, beams={beams})", unit="user",
               disable=not progress, leave=False, dynamic_ncols=True)
    for s in range(0, len(smp), bs):
        chunk = smp[s: s + bs]
        for v in found:
            res = search_batch(model, lambda c, v=v: variant(collate(c), v), chunk, trie, cfg, beams, items=items)
            found[v].append(res.items.cpu().numpy())
        bar.update(len(chunk))  # users/s and ETA
    bar.close()
    ks = [k for k in (10,) if k <= beams] or [beams]
    per = {v: per_user_metrics(ranks_from_lists(np.concatenate(found[v]), targets), ks) for v in found}
    diff = paired_bootstrap_ci(per["none"], per["own"], n=n_boot, seed=seed)
    value = {"users": len(smp), "beams": beams,
             **{f"{m}@{ks[0]}": {"own": round(float(per["own"][f"{m}@{ks[0]}"].mean()), 4),
                                 "none": round(float(per["none"][f"{m}@{ks[0]}"].mean()), 4),
                                 "own_minus_none": [round(diff[f"{m}@{ks[0]}"][q], 4) for q in ("mean", "lo", "hi")]}
                for m in ("hit", "ndcg")}}
    d = diff[f"ndcg@{ks[0]}"]
    if d["lo"] > 0:
        return passed("prefix.ranking", value, "the prefix raises ndcg on these users")
    return warned("prefix.ranking", value, "removing the prefix does not lower ndcg on these users by a margin "
                                           "the interval can see: whatever the prefix lowers in the loss does "
                                           "not reach the top of the ranking")


def scale_checks(model, batch: Batch, cfg: Config) -> list[Check]:
    """The learnt scale against its initial value, and the trained prefix's loudness."""
    pre = model.prefix
    init = float(cfg.model.prefix.init_scale)
    now = float(pre.scale.detach())
    value = {"scale": round(now, 4), "init_scale": init, "learnt": bool(cfg.model.prefix.learn_scale)}
    if cfg.model.prefix.learn_scale and abs(now) < 0.1 * abs(init):
        out = [warned("prefix.scale", value, "training drove the prefix scale below a tenth of its initial value: "
                                             "the model switched the prefix (nearly) off")]
    else:
        out = [passed("prefix.scale", value)]
    st = model.prefix_norm_stats(batch)
    out.append(passed("prefix.norm", {"prefix_norm": round(st.prefix_norm, 4), "token_norm": round(st.token_norm, 4),
                                      "ratio": round(st.ratio, 4), "slots": st.slots}))
    return out


def prefix_checks(model, assets: Any, cfg: Config, split: str = "valid", users: int = 1000, rank_users: int = 0,
                  beams: int = 0, batch_size: int = 64, seed: int | None = None, progress: bool = False) -> list[Check]:
    """Every check of this module on `users` seeded samples of `split` (all when 0); `rank_users` of
    them (the first, in split order) are also beam-searched with `beams` (default `eval.beams`);
    `progress`: a bar (rate, ETA) over the beam search."""
    if getattr(model, "prefix", None) is None:
        return [failed("prefix.enabled", False, "this run has no collaborative prefix (model.prefix.enabled is "
                                                "false): there is nothing to diagnose; train GRAM-C")]
    seed = cfg.run.seed if seed is None else seed
    n_boot = max(200, cfg.eval.bootstrap)
    smp = pick_samples(split_samples(assets.ds, split, cfg.data.max_his), users, seed)
    if not smp:
        return [failed("prefix.samples", 0, f"the {split} split has no samples")]
    model.eval()
    collate = Collator(assets.cache, cfg, gcn_rows=assets.gcn_rows)
    out = scale_checks(model, collate(smp[:batch_size]).to(next(model.parameters()).device), cfg)
    nll = token_nll(model, collate, smp, batch_size)
    out.append(effect_check(
        "prefix.reliance", nll["none"] - nll["own"], nll["own"], seed, n_boot,
        "the model gives its targets a higher likelihood with the prefix than without it",
        "removing the prefix does not lower the targets' likelihood by a margin the interval can see: the trained "
        "model ignores its prefix, or gets nothing from it that its passages do not already give"))
    out.append(effect_check(
        "prefix.specificity", nll["other"] - nll["own"], nll["own"], seed, n_boot,
        "another user's prefix is worse than the user's own: the model reads the user's collaborative signal",
        "another user's prefix serves as well as the user's own: whatever the prefix adds does not depend on "
        "the user (capacity or a bias, not the collaborative signal)"))
    if rank_users > 0:
        out.append(ranking_check(model, assets, cfg, smp[:rank_users], beams or cfg.eval.beams, seed, n_boot,
                                 progress))
    return out
