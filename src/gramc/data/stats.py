"""`gramc data stats`: size, sequence lengths, split sample counts and most frequent items of a dataset."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..io import atomic_path, pyplot
from .dataset import SeqDataset
from .splits import samples, training_sequences


@dataclass
class LengthStats:
    min: int
    mean: float
    median: float
    max: int
    bin_edges: list[int]  # histogram bins [edge_i, edge_{i+1}), the last one closed
    bin_counts: list[int]


@dataclass
class DatasetStats:
    users: int
    items: int
    interactions: int
    lengths: LengthStats
    train_samples: int
    valid_samples: int
    test_samples: int
    max_his: int
    top_items: list[tuple[str, int]]  # over whole sequences, most frequent first
    top_train_items: list[tuple[str, int]]  # over training parts s[:-2]
    markov_hit10: float  # validation hit@10 of a first-order Markov model (training transitions)
    popularity_hit10: float  # validation hit@10 of training popularity

    def to_dict(self) -> dict:
        return asdict(self)


def _top(ds: SeqDataset, seqs: list[list[int]], k: int) -> list[tuple[str, int]]:
    """Most frequent items; ties by item index (first appearance) so the list is deterministic."""
    counts = Counter(i for s in seqs for i in s)
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:k]
    return [(ds.item_ids[i], int(c)) for i, c in ranked]


def _length_stats(lengths: np.ndarray, bins: int) -> LengthStats:
    lo, hi = int(lengths.min()), int(lengths.max())
    edges = np.unique(np.linspace(lo, hi + 1, min(bins, hi + 1 - lo) + 1).round().astype(int))
    counts, _ = np.histogram(lengths, bins=edges)
    return LengthStats(lo, float(lengths.mean()), float(np.median(lengths)), hi,
                       [int(e) for e in edges], [int(c) for c in counts])


def sequential_signal(ds: SeqDataset, k: int = 10) -> tuple[float, float]:
    """Validation hit@k of a first-order Markov model and of popularity, both fit on s[:-2].

    Markov scores an item by its transition count from the last history item, with training
    popularity (scaled below 1) breaking ties; ties with the target count against it, as
    gramc.metrics.ranks_from_scores with ties="worst" (tests check both agree): a conservative
    diagnostic, not a model comparison. Ranks are computed from the
    sparse transition rows, so this stays fast on real catalogues. A large ratio means the
    data has sequential structure.
    """
    import scipy.sparse as sp

    n = ds.num_items
    train = training_sequences(ds)
    valid = samples(ds, "valid", 1)
    if not valid or n == 0:
        return 0.0, 0.0
    pop = np.bincount(np.array([i for s in train for i in s], dtype=np.int64), minlength=n).astype(np.float64)
    src = np.array([a for s in train for a in s[:-1]], dtype=np.int64)
    dst = np.array([b for s in train for b in s[1:]], dtype=np.int64)
    trans = sp.csr_matrix((np.ones(len(src)), (src, dst)), shape=(n, n))
    trans.sum_duplicates()
    # popularity rank: items other than the target with a count >= the target's
    sorted_pop = np.sort(pop)
    pop_rank = n - np.searchsorted(sorted_pop, pop, side="left") - 1
    score_tie = pop / (pop.max() + 1.0)  # < 1: only breaks ties between equal counts
    markov_hits = pop_hits = 0
    for x in valid:
        last, t = x.history[-1], x.target
        lo, hi = trans.indptr[last], trans.indptr[last + 1]
        cols, counts = trans.indices[lo:hi], trans.data[lo:hi]
        hit_t = np.flatnonzero(cols == t)
        if len(hit_t):  # the target follows `last` in training: compete with the other successors
            score = counts + score_tie[cols]
            rank = int(np.sum(score >= score[hit_t[0]])) - 1
        else:  # every successor beats it; among the rest, popularity decides
            rank = len(cols) + int(pop_rank[t]) - int(np.sum(pop[cols] >= pop[t]))
        markov_hits += rank < k
        pop_hits += int(pop_rank[t]) < k
    return markov_hits / len(valid), pop_hits / len(valid)


def dataset_stats(ds: SeqDataset, max_his: int = 20, top_k: int = 10, bins: int = 20) -> DatasetStats:
    """All numbers of `gramc data stats` for one dataset."""
    lengths = np.array([len(s) for s in ds.sequences], dtype=np.int64)
    if len(lengths) == 0:
        lengths = np.zeros(1, dtype=np.int64)
    return DatasetStats(
        users=ds.num_users, items=ds.num_items, interactions=ds.num_interactions,
        lengths=_length_stats(lengths, bins),
        train_samples=len(samples(ds, "train", max_his)),
        valid_samples=len(samples(ds, "valid", max_his)),
        test_samples=len(samples(ds, "test", max_his)),
        max_his=max_his,
        top_items=_top(ds, ds.sequences, top_k),
        top_train_items=_top(ds, training_sequences(ds), top_k),
        **dict(zip(("markov_hit10", "popularity_hit10"), sequential_signal(ds, 10))),
    )


def format_stats(st: DatasetStats) -> str:
    """A human-readable report."""
    L = st.lengths
    lines = [
        f"users          {st.users:,}",
        f"items          {st.items:,}",
        f"interactions   {st.interactions:,}",
        f"sequence length  min {L.min}  mean {L.mean:.2f}  median {L.median:g}  max {L.max}",
        f"samples (max_his={st.max_his})  train {st.train_samples:,}  valid {st.valid_samples:,}  "
        f"test {st.test_samples:,}",
        "length histogram:",
    ]
    peak = max(L.bin_counts) if L.bin_counts else 1
    for a, b, c in zip(L.bin_edges, L.bin_edges[1:], L.bin_counts):
        bar = "#" * max(1 if c else 0, round(40 * c / max(peak, 1)))
        lines.append(f"  [{a:>4}, {b:>4})  {c:>7,}  {bar}")
    ratio = st.markov_hit10 / st.popularity_hit10 if st.popularity_hit10 else float("inf")
    lines.append(f"sequential signal (validation hit@10)  first-order Markov {st.markov_hit10:.4f}  "
                 f"popularity {st.popularity_hit10:.4f}  ({ratio:.1f}x)")
    lines.append("most frequent items (whole sequences):")
    lines += [f"  {i:<14} {c:,}" for i, c in st.top_items]
    lines.append("most frequent items (training parts s[:-2]):")
    lines += [f"  {i:<14} {c:,}" for i, c in st.top_train_items]
    return "\n".join(lines)


def plot_lengths(st: DatasetStats, path: str | Path, title: str = "") -> None:
    """PNG bar chart of the sequence-length histogram (written atomically)."""
    plt = pyplot()
    if plt is None:
        return

    L = st.lengths
    fig, ax = plt.subplots(figsize=(7, 4))
    widths = np.diff(L.bin_edges)
    ax.bar(L.bin_edges[:-1], L.bin_counts, width=widths, align="edge", edgecolor="black")
    ax.set_xlabel("interactions per user")
    ax.set_ylabel("users")
    nonzero = [c for c in L.bin_counts if c]
    if nonzero and max(nonzero) > 50 * min(nonzero):  # long tails: show the rare long sequences
        ax.set_yscale("log")
    ax.set_title(title or f"{st.users:,} users, {st.items:,} items, {st.interactions:,} interactions "
                          f"(median length {L.median:g})", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
