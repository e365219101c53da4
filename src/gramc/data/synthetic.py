"""A small synthetic dataset with real sequential structure, built deterministically from a seed.

Items belong to latent topics; their titles, brands and categories are made of topic words plus
item-specific words, so item text carries signal. Each item has a few "successor" items; a user's
next item is, with high probability, a successor of their current item, otherwise an item of
the current (or a neighbouring) topic, otherwise a popular item. A first-order Markov model
therefore beats popularity by a wide margin (tests/test_data_synthetic.py checks >= 3x hit@10).
See docs/synthetic.md for the generative process.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ..config import SyntheticConfig
from .dataset import DataError, SeqDataset

_CONSONANTS = list("bcdfghklmnprstvz")
_VOWELS = list("aeiou")
_NOUNS = ["cream", "serum", "lotion", "gel", "mask", "oil", "balm", "spray", "powder", "tonic",
          "cleanser", "shampoo", "polish", "liner", "palette", "brush", "scrub", "mist"]


def _word(rng: np.random.Generator, syllables: int) -> str:
    c = rng.integers(0, len(_CONSONANTS), syllables)
    v = rng.integers(0, len(_VOWELS), syllables)
    return "".join(_CONSONANTS[a] + _VOWELS[b] for a, b in zip(c, v))


def _unique_words(rng: np.random.Generator, n: int, syllables: int, taken: set[str]) -> list[str]:
    out: list[str] = []
    while len(out) < n:
        w = _word(rng, syllables)
        if w not in taken:
            taken.add(w)
            out.append(w)
    return out


def _validate(cfg: SyntheticConfig) -> None:
    problems = []
    if cfg.num_users < 1:
        problems.append("data.synthetic.num_users must be >= 1")
    if cfg.num_items < 10:
        problems.append("data.synthetic.num_items must be >= 10")
    if not 1 <= cfg.num_topics <= cfg.num_items:
        problems.append("data.synthetic.num_topics must be in [1, num_items]")
    if cfg.min_len < 5 or cfg.max_len < cfg.min_len:
        problems.append("data.synthetic.min_len must be >= 5 and <= max_len")
    if not 0 < cfg.num_successors < cfg.num_items:
        problems.append("data.synthetic.num_successors must be in [1, num_items)")
    if not 0.0 <= cfg.successor_prob <= 1.0 or not 0.0 <= cfg.topic_prob <= 1.0 - cfg.successor_prob:
        problems.append("data.synthetic.successor_prob and topic_prob must be probabilities summing to <= 1")
    if problems:
        raise DataError("invalid synthetic data settings: " + "; ".join(problems))


@dataclass
class _Catalogue:
    """The hidden structure users walk through: each item's topic, popularity and successors."""

    topic: np.ndarray        # item -> topic
    popularity: np.ndarray   # item -> probability, sums to 1
    members: list[np.ndarray]  # topic -> its items
    next_topic: np.ndarray   # topic -> the neighbouring topic users drift to
    successors: np.ndarray   # item -> its successor items, most likely first


def _item_fields(rng: np.random.Generator, cfg: SyntheticConfig) -> tuple[list[dict], np.ndarray, np.ndarray]:
    """Every item's text fields, topic and popularity; words are shared within a topic."""
    n_items, n_topics = cfg.num_items, cfg.num_topics
    taken: set[str] = set()
    topic_words = [_unique_words(rng, 6, 2, taken) for _ in range(n_topics)]
    topic_brands = [[w.capitalize() for w in _unique_words(rng, 3, 3, taken)] for _ in range(n_topics)]
    topic_category = [w.capitalize() + " Care" for w in _unique_words(rng, n_topics, 2, taken)]
    topic_subcats = [[w.capitalize() for w in _unique_words(rng, 3, 2, taken)] for _ in range(n_topics)]
    item_topic = np.concatenate([np.arange(n_topics), rng.integers(0, n_topics, n_items - n_topics)])
    rng.shuffle(item_topic)
    popularity = 1.0 / np.arange(1, n_items + 1) ** 0.8  # Zipf-like
    rng.shuffle(popularity)
    popularity /= popularity.sum()
    own_words = _unique_words(rng, 2 * n_items, 3, taken)
    fields = []
    for i in range(n_items):
        t = int(item_topic[i])
        tw = rng.choice(len(topic_words[t]), size=2, replace=False)
        title = " ".join([topic_words[t][tw[0]].capitalize(), own_words[2 * i].capitalize(),
                          topic_words[t][tw[1]], own_words[2 * i + 1], str(rng.choice(_NOUNS))])
        fields.append({
            "title": title,
            "brand": topic_brands[t][int(rng.integers(0, 3))],
            "categories": ["Beauty", topic_category[t], topic_subcats[t][int(rng.integers(0, 3))]],
            "price": round(float(rng.uniform(3.0, 60.0)), 2),
            "salesrank": 0,  # filled from the popularity rank below
        })
    for rank, i in enumerate(np.argsort(-popularity, kind="stable"), 1):
        fields[int(i)]["salesrank"] = rank
    return fields, item_topic, popularity


def _catalogue(rng: np.random.Generator, cfg: SyntheticConfig, item_topic: np.ndarray,
               popularity: np.ndarray) -> _Catalogue:
    """Each item's successors: mostly of its own topic, the last from the next topic on a ring."""
    n_items, n_topics = cfg.num_items, cfg.num_topics
    members = [np.flatnonzero(item_topic == t) for t in range(n_topics)]
    next_topic = (np.arange(n_topics) + 1) % n_topics
    successors = np.zeros((n_items, cfg.num_successors), dtype=np.int64)
    for i in range(n_items):
        t = int(item_topic[i])
        chosen: list[int] = []
        for k in range(cfg.num_successors):
            topic = int(next_topic[t]) if k == cfg.num_successors - 1 else t
            pool = [int(j) for j in members[topic] if j != i and j not in chosen]
            if not pool:  # tiny topics: fall back to any other item
                pool = [j for j in range(n_items) if j != i and j not in chosen]
            chosen.append(pool[int(rng.integers(0, len(pool)))])
        successors[i] = chosen
    return _Catalogue(item_topic, popularity, members, next_topic, successors)


def _walks(rng: np.random.Generator, cfg: SyntheticConfig, cat: _Catalogue) -> list[list[int]]:
    """One item sequence per user: a walk over successors, topics and popular items."""
    succ_weights = np.array([0.5 ** k for k in range(cfg.num_successors)])
    succ_cdf = np.cumsum(succ_weights / succ_weights.sum())
    pop_cdf = np.cumsum(cat.popularity)
    topic_cdf = [np.cumsum(cat.popularity[m] / cat.popularity[m].sum()) for m in cat.members]

    def draw(cdf: np.ndarray) -> int:  # inverse-CDF sampling: one uniform draw per choice
        return min(int(np.searchsorted(cdf, rng.random() * cdf[-1], side="right")), len(cdf) - 1)

    lengths = np.minimum(cfg.min_len + rng.geometric(0.25, size=cfg.num_users) - 1, cfg.max_len)
    starts = rng.permutation(cfg.num_items)  # the first users together start from every item once
    walks: list[list[int]] = []
    for u in range(cfg.num_users):
        cur = int(starts[u]) if u < cfg.num_items else draw(pop_cdf)
        seq = [cur]
        while len(seq) < lengths[u]:
            r = rng.random()
            if r < cfg.successor_prob:
                nxt = int(cat.successors[cur][draw(succ_cdf)])
            elif r < cfg.successor_prob + cfg.topic_prob:
                t = int(cat.topic[cur])
                if rng.random() < 0.3:
                    t = int(cat.next_topic[t])
                nxt = int(cat.members[t][draw(topic_cdf[t])])
            else:
                nxt = draw(pop_cdf)
            if nxt != cur:
                seq.append(nxt)
                cur = nxt
        walks.append(seq)
    return walks


def make_synthetic(cfg: SyntheticConfig) -> SeqDataset:
    """Build the synthetic dataset described by `cfg` (same settings -> identical dataset)."""
    _validate(cfg)
    rng = np.random.default_rng(cfg.seed)
    fields, item_topic, popularity = _item_fields(rng, cfg)
    walks = _walks(rng, cfg, _catalogue(rng, cfg, item_topic, popularity))
    # canonical order: items indexed by first appearance; items no user reached are dropped
    first: dict[int, int] = {}
    for seq in walks:
        for i in seq:
            first.setdefault(i, len(first))
    raw_of = sorted(first, key=first.__getitem__)
    sequences = [[first[i] for i in seq] for seq in walks]
    users = [f"U{u:05d}" for u in range(cfg.num_users)]
    meta = {
        "source": "synthetic",
        "synthetic": asdict(cfg),
        "counts": {"users": len(users), "items": len(raw_of),
                   "interactions": int(sum(len(s) for s in sequences))},
        "dropped": {"items_never_used": cfg.num_items - len(raw_of)},
    }
    return SeqDataset([f"S{i:05d}" for i in raw_of], [fields[i] for i in raw_of], users, sequences, meta)
