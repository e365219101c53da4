"""Metrics on hand-computed rankings (hit@k, ndcg@k, MRR) and ranks from ranked lists."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gramc.metrics import bootstrap_ci, per_user_metrics, ranks_from_lists, summarize


def test_hand_computed_metrics():
    ranks = np.array([0, 2, -1, 9])
    per = per_user_metrics(ranks, ks=(1, 5, 10))
    assert per["hit@1"].tolist() == [1, 0, 0, 0]
    assert per["hit@5"].tolist() == [1, 1, 0, 0]
    assert per["hit@10"].tolist() == [1, 1, 0, 1]
    assert per["ndcg@5"].tolist() == pytest.approx([1.0, 0.5, 0.0, 0.0])
    assert per["ndcg@10"].tolist() == pytest.approx([1.0, 0.5, 0.0, 1 / math.log2(11)])
    assert per["mrr"].tolist() == pytest.approx([1.0, 1 / 3, 0.0, 0.1])
    mean = summarize(ranks, ks=(1, 5, 10))
    assert mean["hit@10"] == pytest.approx(0.75)
    assert mean["ndcg@10"] == pytest.approx((1.5 + 1 / math.log2(11)) / 4)
    assert mean["mrr"] == pytest.approx((1 + 1 / 3 + 0.1) / 4)
    assert mean["users"] == 4


def test_ranks_from_lists():
    items = np.array([[5, 3, 9, -1], [1, 2, 3, 4], [-1, -1, -1, -1]])
    assert ranks_from_lists(items, [9, 7, -2]).tolist() == [2, -1, -1]
    assert ranks_from_lists(items, np.array([5, 4, 0])).tolist() == [0, 3, -1]


def test_bootstrap_interval_brackets_the_mean_and_collapses_for_constant_data():
    rng = np.random.default_rng(0)
    ranks = rng.integers(-1, 30, size=400)
    per = per_user_metrics(ranks, ks=(10,))
    ci = bootstrap_ci(per, n=200, seed=1)
    for k, (lo, hi) in ci.items():
        assert lo < per[k].mean() < hi
    const = per_user_metrics(np.zeros(50, dtype=int), ks=(10,))
    assert bootstrap_ci(const, n=50)["hit@10"] == (1.0, 1.0)


def test_repeat_stats_counts_history_items_in_the_top_slots():
    from gramc.metrics import repeat_stats, repeat_warning

    top = np.array([[3, 1, 2], [5, 6, -1], [4, 0, 1], [9, 8, 7]])
    histories = [(1, 3), (0,), (4, 2), ()]
    targets = [2, 0, 9, 1]  # only user 1's target (0) is a history item
    st = repeat_stats(top, histories, targets, k=3)
    assert st["top1_in_history"] == pytest.approx(2 / 4)  # users 0 and 2
    assert st["history_items_in_top3"] == pytest.approx((2 + 0 + 1 + 0) / 4)  # -1 padding never counts
    assert st["target_in_history"] == pytest.approx(1 / 4)
    assert "50% of users" in repeat_warning(dict(st, target_in_history=0.0), "sasrec")
    assert "baseline.sasrec.tied_output" in repeat_warning(dict(st, target_in_history=0.0), "sasrec")
    # repeats are fine when the data repeats as often
    assert repeat_warning({"top1_in_history": 0.5, "target_in_history": 0.45}) == ""
    assert repeat_warning({"top1_in_history": 0.05, "target_in_history": 0.0}) == ""


def test_paired_bootstrap_of_a_difference():
    from gramc.metrics import paired_bootstrap_ci

    rng = np.random.default_rng(0)
    ranks_a = np.where(rng.random(3000) < 0.3, rng.integers(0, 10, 3000), -1)
    ranks_b = ranks_a.copy()
    better = (ranks_a < 0) & (rng.random(3000) < 0.1)  # b finds 10% of a's misses at rank 0
    ranks_b[better] = 0
    a, b = per_user_metrics(ranks_a, (10,)), per_user_metrics(ranks_b, (10,))
    d = paired_bootstrap_ci(a, b, n=500, seed=1)
    assert d["hit@10"]["mean"] == pytest.approx(better.mean())
    assert 0 < d["hit@10"]["lo"] < d["hit@10"]["mean"] < d["hit@10"]["hi"]
    # pairing matters: the same per-user gain is far more certain than two independent intervals say
    ci_a, ci_b = bootstrap_ci(a, n=500, seed=1), bootstrap_ci(b, n=500, seed=1)
    assert d["hit@10"]["hi"] - d["hit@10"]["lo"] < 0.5 * ((ci_a["hit@10"][1] - ci_a["hit@10"][0])
                                                          + (ci_b["hit@10"][1] - ci_b["hit@10"][0]))
    same = paired_bootstrap_ci(a, a, n=100)
    assert same["ndcg@10"] == {"mean": 0.0, "lo": 0.0, "hi": 0.0}
    with pytest.raises(ValueError, match="same users"):
        paired_bootstrap_ci(a, per_user_metrics(ranks_b[:10], (10,)))


def test_terciles_keep_ties_together_and_drop_empty_groups():
    from gramc.metrics import tercile_groups

    g = tercile_groups([5, 1, 1, 9, 3, 7, 2, 8, 4])
    assert [(lo, hi) for lo, hi, _ in g] == [(1, 2), (3, 5), (7, 9)]
    assert g[0][2].tolist() == [False, True, True, False, False, False, True, False, False]
    # most values tied: two groups (the tie cannot be split), never an empty one
    assert [(lo, hi, int(m.sum())) for lo, hi, m in tercile_groups([0] * 7 + [4, 6])] == [(0, 0, 7), (4, 6, 2)]
    assert [(lo, hi) for lo, hi, _ in tercile_groups([3, 3, 3])] == [(3, 3)]
    assert tercile_groups([]) == []


def test_popularity_stats_and_the_warning_on_a_model_that_never_hits_rare_targets():
    from gramc.metrics import popularity_stats, popularity_warning

    counts = np.array([0, 1, 1, 10, 12, 15, 40, 50, 60])
    ranks = np.array([-1, -1, -1, 3, -1, 0, 0, 1, 20])  # no rare target found, 5 of 6 others in the top 20
    st = popularity_stats(ranks, counts, k=10)
    assert [g["train_count"] for g in st["groups"]] == [[0, 1], [10, 15], [40, 60]]
    assert [g["users"] for g in st["groups"]] == [3, 3, 3]
    assert [g["hit@10"] for g in st["groups"]] == pytest.approx([0.0, 2 / 3, 2 / 3])
    assert st["groups"][2]["ndcg@10"] == pytest.approx((1.0 + 1 / np.log2(3)) / 3)
    msg = popularity_warning(st, "gramc")
    assert "gramc: hit@10 is 0.0000 for the 33% of users whose target was seen 0-1 times" in msg
    assert "40+ times" in msg
    assert popularity_warning(st, "pop") == ""  # popularity's own ranking is popular by design
    # a model that finds rare targets at a fair rate, or too few rare targets to matter: no warning
    assert popularity_warning(popularity_stats(np.array([1, -1, -1, 3, -1, 0, 0, 1, 20]), counts)) == ""
    few = popularity_stats(np.array([-1] + [0] * 9), np.array([0] + [5] * 9))
    assert few["groups"][0]["share"] == pytest.approx(0.1) and popularity_warning(few) == ""
    assert popularity_warning({}) == ""

