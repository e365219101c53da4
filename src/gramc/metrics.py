"""Ranking metrics with a single held-out item per user: hit@k (= recall@k), ndcg@k, MRR.

All models (GRAM-C's beam search and the full-ranking baselines) report through these
functions, so every number in a table comes from the same code. A rank is the 0-based position
of the target in the model's ranked list, or -1 when the target is not in the list.
"""

from __future__ import annotations

import numpy as np

DEFAULT_KS = (1, 5, 10, 20, 50)


def per_user_metrics(ranks: np.ndarray, ks=DEFAULT_KS) -> dict[str, np.ndarray]:
    """Per-user hit@k, ndcg@k and reciprocal rank (0 for misses), each an array of len(ranks)."""
    ranks = np.asarray(ranks, dtype=np.int64)
    found = ranks >= 0
    out: dict[str, np.ndarray] = {}
    for k in ks:
        hit = found & (ranks < k)
        out[f"hit@{k}"] = hit.astype(np.float64)
        out[f"ndcg@{k}"] = np.where(hit, 1.0 / np.log2(np.maximum(ranks, 0) + 2.0), 0.0)
    out["mrr"] = np.where(found, 1.0 / (np.maximum(ranks, 0) + 1.0), 0.0)
    return out


def summarize(ranks: np.ndarray, ks=DEFAULT_KS) -> dict[str, float]:
    """Means over users of `per_user_metrics`, plus the user count."""
    per = per_user_metrics(ranks, ks)
    out = {k: float(v.mean()) if len(v) else 0.0 for k, v in per.items()}
    out["users"] = int(len(ranks))
    return out


# resamples x users drawn at once; above it they come in chunks (the intervals of every run so far
# fit in one chunk, so their numbers are unchanged)
BOOTSTRAP_CHUNK = 1 << 25


def bootstrap_ci(per_user: dict[str, np.ndarray], n: int = 1000, seed: int = 0,
                 alpha: float = 0.05) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap confidence intervals of each metric's mean (users resampled)."""
    if n <= 0:
        return {}
    rng = np.random.default_rng(seed)
    names = list(per_user)
    m = len(per_user[names[0]]) if names else 0
    if m == 0:
        return {k: (0.0, 0.0) for k in names}
    means: dict[str, list[np.ndarray]] = {k: [] for k in names}
    rows = n if n * m <= BOOTSTRAP_CHUNK else max(1, BOOTSTRAP_CHUNK // m)  # bounded memory: 16 bytes an entry
    for start in range(0, n, rows):
        idx = rng.integers(0, m, size=(min(rows, n - start), m))
        for k in names:
            means[k].append(per_user[k][idx].mean(axis=1))
    out = {}
    for k in names:
        every = np.concatenate(means[k])
        out[k] = (float(np.quantile(every, alpha / 2)), float(np.quantile(every, 1 - alpha / 2)))
    return out


def paired_bootstrap_ci(per_user_a: dict[str, np.ndarray], per_user_b: dict[str, np.ndarray], n: int = 1000,
                        seed: int = 0, alpha: float = 0.05) -> dict[str, dict[str, float]]:
    """Mean and percentile bootstrap interval of `b - a` per metric, the same users resampled in both.

    Both dicts hold per-user arrays for the same users in the same order (e.g. `per_user_metrics`
    of two models on one split). Returns {metric: {"mean", "lo", "hi"}} for the metrics of both.
    """
    names = [k for k in per_user_a if k in per_user_b]
    for k in names:
        if len(per_user_a[k]) != len(per_user_b[k]):
            raise ValueError(f"paired bootstrap of {k!r}: {len(per_user_a[k])} users vs {len(per_user_b[k])}; "
                             "both models must be evaluated on the same users")
    diff = {k: np.asarray(per_user_b[k], dtype=np.float64) - np.asarray(per_user_a[k], dtype=np.float64)
            for k in names}
    ci = bootstrap_ci(diff, n=n, seed=seed, alpha=alpha)
    return {k: {"mean": float(diff[k].mean()) if len(diff[k]) else 0.0, "lo": ci[k][0], "hi": ci[k][1]}
            for k in names if k in ci}


TIES = ("random", "worst")  # how full ranking places a target tied with other items


def tie_uniforms(keys, seed: int) -> np.ndarray:
    """One uniform draw in [0, 1) per integer key, a fixed function of (seed, key) (SplitMix64).

    Keys are user indices: a user gets the same draw whatever the chunk it is ranked in."""
    with np.errstate(over="ignore"):
        x = np.asarray(keys, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        x = x + np.uint64(seed % (1 << 64)) * np.uint64(0xBF58476D1CE4E5B9) + np.uint64(0x94D049BB133111EB)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    return (x >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def place_among_ties(above, tied, keys, seed: int, ties: str = "random") -> np.ndarray:
    """0-based rank of a target with `above` items scoring higher and `tied` others scoring the same.

    "random": each of the tied + 1 places with equal probability (seeded per key, `tie_uniforms`),
    so a constant scorer ranks the target uniformly, as a random list would; "worst": every tied
    item ahead of the target (a conservative bound)."""
    above, tied = np.asarray(above, dtype=np.int64), np.asarray(tied, dtype=np.int64)
    if ties == "worst":
        return above + tied
    if ties != "random":
        raise ValueError(f"ties must be one of {TIES}, got {ties!r}")
    return above + np.floor(tie_uniforms(keys, seed) * (tied + 1)).astype(np.int64)


def ranks_from_scores(scores, targets, exclude=None, keys=None, seed: int = 0, ties: str = "random"):
    """0-based rank of each target under full ranking of `scores` [users, items] (torch or numpy).

    Ties with the target are broken by `place_among_ties` (`ties`, drawn from `seed` and `keys`, one
    integer per row, e.g. user indices; default the row numbers). `exclude`: optional boolean mask
    of the same shape whose True entries are removed from the ranking (never the target itself).
    """
    import torch

    s = torch.as_tensor(scores, dtype=torch.float32).clone()
    t = torch.as_tensor(targets, dtype=torch.long)
    if exclude is not None:
        ex = torch.as_tensor(exclude, dtype=torch.bool).clone()
        ex[torch.arange(len(t)), t] = False
        s[ex] = float("-inf")
    target_score = s[torch.arange(len(t)), t].unsqueeze(1)
    above = (s > target_score).sum(dim=1).numpy()
    tied = (s == target_score).sum(dim=1).numpy() - 1
    keys = np.arange(len(t)) if keys is None else np.asarray(keys)
    return place_among_ties(above, tied, keys, seed, ties)


def ranks_from_lists(items, targets) -> np.ndarray:
    """0-based position of each target in its ranked list `items` [users, n] (-1 if absent).

    For generative models, which return a ranked list (e.g. the beam search's items) rather than a
    score for every item. Padding entries (e.g. -1) never match a target.
    """
    items = np.asarray(items)
    targets = np.asarray(targets).reshape(-1, 1)
    hit = items == targets
    return np.where(hit.any(axis=1), hit.argmax(axis=1), -1).astype(np.int64)


def repeat_stats(top_items, histories, targets, k: int = 10) -> dict[str, float]:
    """How much a model recommends what the user already has, next to how often that is right.

    `top_items` [users, >=k] ranked item indices (-1 = none), `histories` the items each user's
    input held, `targets` the held-out items. Returns the share of users whose top-1 is a history
    item, the mean number of history items in the top `k`, and the share of targets that are
    history items. A model that fills its top slots with history items on data whose targets
    never repeat (Amazon 5-core: 0%) wastes them; see `repeat_warning`.
    """
    top = np.asarray(top_items)[:, :k]
    seen = [set(int(i) for i in h) for h in histories]
    in_hist = np.array([[int(i) in s for i in row] for row, s in zip(top, seen)], dtype=bool)
    n = max(len(seen), 1)
    return {"top1_in_history": float(in_hist[:, 0].mean()) if len(top) else 0.0,
            f"history_items_in_top{k}": float(in_hist.sum(axis=1).mean()) if len(top) else 0.0,
            "target_in_history": sum(int(t) in s for t, s in zip(targets, seen)) / n}


def repeat_warning(stats: dict[str, float], model: str = "model") -> str:
    """A one-line warning when the top-1 is a history item far more often than targets repeat, else ''."""
    top1, truth = stats.get("top1_in_history", 0.0), stats.get("target_in_history", 0.0)
    if top1 >= 0.2 and top1 > 2 * truth + 0.1:
        hint = " (try baseline.sasrec.tied_output=false)" if model == "sasrec" else ""
        return (f"{model}: the top-1 recommendation is an item already in the user's history for "
                f"{top1:.0%} of users, but only {truth:.0%} of targets are; the model is spending its top "
                f"slots on repeats{hint}")
    return ""


def tercile_groups(values) -> list[tuple[int, int, np.ndarray]]:
    """(smallest, largest, mask) per tercile of the integer `values`, low to high.

    Each cut sits before the distinct value whose share of smaller values is closest to 1/3
    (2/3), so ties stay in one group and a heavy tie cannot swallow its neighbours; a cut that
    would leave a group empty is dropped (fewer than three groups).
    """
    values = np.asarray(values)
    if len(values) == 0:
        return []
    distinct = np.unique(values)
    below = np.searchsorted(np.sort(values), distinct, side="left") / len(values)
    cuts = sorted({distinct[np.argmin(np.abs(below - q))] for q in (1 / 3, 2 / 3)} - {distinct[0]})
    which = np.searchsorted(np.array(cuts), values, side="right")
    return [(int(values[m].min()), int(values[m].max()), m) for g in range(len(cuts) + 1)
            if (m := which == g).any()]


def popularity_stats(ranks, target_counts, k: int = 10) -> dict:
    """hit@k and ndcg@k per tercile of the target's training interactions (`target_counts`, one per
    user): does the model retrieve rarely seen items at all? See `popularity_warning`."""
    per = per_user_metrics(ranks, (k,))
    n = max(len(per[f"hit@{k}"]), 1)
    return {"k": k, "groups": [{"train_count": [lo, hi], "users": int(m.sum()), "share": float(m.sum() / n),
                                f"hit@{k}": float(per[f"hit@{k}"][m].mean()),
                                f"ndcg@{k}": float(per[f"ndcg@{k}"][m].mean())}
                               for lo, hi, m in tercile_groups(target_counts)]}


def popularity_warning(stats: dict, model: str = "model") -> str:
    """A one-line warning when the rarest targets (a fifth of the users or more) are hit at under a
    tenth of the rate of the most popular ones, else ''. Never for `pop`, popular by construction."""
    groups, k = stats.get("groups", []), stats.get("k", 10)
    if len(groups) < 2 or model == "pop":
        return ""
    tail, head = groups[0], groups[-1]
    if tail["share"] >= 0.2 and head[f"hit@{k}"] > 0 and tail[f"hit@{k}"] < 0.1 * head[f"hit@{k}"]:
        lo, hi = tail["train_count"]
        return (f"{model}: hit@{k} is {tail[f'hit@{k}']:.4f} for the {tail['share']:.0%} of users whose target was "
                f"seen {lo}-{hi} times in training, {head[f'hit@{k}']:.4f} for those whose target was seen "
                f"{head['train_count'][0]}+ times: the model almost never ranks a rarely seen item in its top {k} "
                "(a popularity bias; metrics.json 'popularity' has the groups, a baseline's the same)")
    return ""

