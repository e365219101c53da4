"""Leave-one-out split sample counts and contents on a hand-built dataset."""

from __future__ import annotations

from gramc.data.dataset import SeqDataset
from gramc.data.splits import Sample, samples, training_sequences
from gramc.data.stats import dataset_stats


def _ds():
    # u0: 0 1 2 3 4 (5 items), u1: 5 6 7 (3 items: no training sample), u2: 2 0 (too short: skipped)
    return SeqDataset([f"i{k}" for k in range(8)], [{} for _ in range(8)], ["u0", "u1", "u2"],
                      [[0, 1, 2, 3, 4], [5, 6, 7], [2, 0]])


def test_exact_samples():
    ds = _ds()
    assert samples(ds, "test", 20) == [Sample(0, (0, 1, 2, 3), 4), Sample(1, (5, 6), 7)]
    assert samples(ds, "valid", 20) == [Sample(0, (0, 1, 2), 3), Sample(1, (5,), 6)]
    assert samples(ds, "train", 20) == [Sample(0, (0,), 1), Sample(0, (0, 1), 2)]
    assert training_sequences(ds) == [[0, 1, 2], [5], []]


def test_max_his_keeps_most_recent():
    ds = _ds()
    assert samples(ds, "test", 2) == [Sample(0, (2, 3), 4, (0, 1, 2, 3)), Sample(1, (5, 6), 7)]
    # every earlier item stays known (eval.exclude_history removes them all), also past the window
    assert [s.seen for s in samples(ds, "test", 2)] == [(0, 1, 2, 3), (5, 6)]
    assert [s.seen for s in samples(ds, "valid", 1)] == [(0, 1, 2), (5,)]
    assert samples(ds, "train", 1) == [Sample(0, (0,), 1), Sample(0, (1,), 2)]


def test_stats_on_hand_built_example():
    st = dataset_stats(_ds(), max_his=20, top_k=3)
    assert (st.users, st.items, st.interactions) == (3, 8, 10)
    assert (st.train_samples, st.valid_samples, st.test_samples) == (2, 2, 2)
    assert (st.lengths.min, st.lengths.max, st.lengths.median) == (2, 5, 3.0)
    assert abs(st.lengths.mean - 10 / 3) < 1e-9
    assert sum(st.lengths.bin_counts) == 3 and st.lengths.bin_edges[0] == 2 and st.lengths.bin_edges[-1] == 6
    # whole sequences: i0 and i2 twice (tie: lower index first), then i1
    assert st.top_items == [("i0", 2), ("i2", 2), ("i1", 1)]
    # training parts: [0 1 2], [5], []
    assert st.top_train_items == [("i0", 1), ("i1", 1), ("i2", 1)]
