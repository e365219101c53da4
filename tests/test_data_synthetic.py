"""Synthetic data: deterministic, well-formed, and with sequential structure a Markov model exploits."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from gramc.config import DataConfig, SyntheticConfig
from gramc.data.dataset import DataError, SeqDataset
from gramc.data.source import load_dataset
from gramc.data.splits import samples, training_sequences
from gramc.data.stats import sequential_signal
from gramc.data.synthetic import make_synthetic
from gramc.metrics import ranks_from_scores, summarize


def _folder_bytes(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_defaults_are_well_formed():
    cfg = SyntheticConfig()
    ds = make_synthetic(cfg)
    assert ds.num_users == cfg.num_users
    assert ds.num_items == cfg.num_items
    assert all(len(s) >= 5 for s in ds.sequences)
    assert all(len(s) <= cfg.max_len for s in ds.sequences)
    # no immediate repeats, and items indexed by first appearance
    assert all(a != b for s in ds.sequences for a, b in zip(s, s[1:]))
    seen: list[int] = []
    for s in ds.sequences:
        for i in s:
            if i not in seen:
                seen.append(i)
    assert seen == list(range(ds.num_items))
    f = ds.item_fields[0]
    assert f["title"] and f["brand"] and len(f["categories"]) == 3 and f["price"] > 0


def test_same_seed_same_bytes_different_seed_differs(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    make_synthetic(SyntheticConfig(seed=3)).save(a)
    make_synthetic(SyntheticConfig(seed=3)).save(b)
    make_synthetic(SyntheticConfig(seed=4)).save(c)
    assert _folder_bytes(a) == _folder_bytes(b)
    assert _folder_bytes(a)["sequences.txt"] != _folder_bytes(c)["sequences.txt"]
    assert _folder_bytes(a)["items.jsonl"] != _folder_bytes(c)["items.jsonl"]


def test_roundtrip_through_folder(tmp_path):
    ds = make_synthetic(SyntheticConfig(num_users=50, num_items=40, num_topics=4))
    ds.save(tmp_path / "d")
    back = load_dataset(DataConfig(path=str(tmp_path / "d")))
    assert back.item_ids == ds.item_ids and back.sequences == ds.sequences
    assert back.item_fields == ds.item_fields and back.users == ds.users


def test_load_dataset_without_path_is_synthetic():
    cfg = DataConfig(synthetic=SyntheticConfig(num_users=30, num_items=20, num_topics=3, seed=11))
    assert load_dataset(cfg).sequences == make_synthetic(cfg.synthetic).sequences


def test_missing_path_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="not a folder"):
        load_dataset(DataConfig(path=str(tmp_path / "nope")))


def test_bad_settings_are_rejected():
    with pytest.raises(DataError, match="min_len"):
        make_synthetic(SyntheticConfig(min_len=2))
    with pytest.raises(DataError, match="num_topics"):
        make_synthetic(SyntheticConfig(num_topics=0))


def _validation_hit10(ds: SeqDataset) -> tuple[float, float]:
    """hit@10 on the validation split of a first-order Markov model and of popularity."""
    n = ds.num_items
    trans = np.zeros((n, n))
    pop = np.zeros(n)
    for s in training_sequences(ds):
        np.add.at(pop, s, 1)
        for a, b in zip(s, s[1:]):
            trans[a, b] += 1
    valid = samples(ds, "valid", max_his=20)
    targets = np.array([x.target for x in valid])
    pop_scores = np.tile(pop, (len(valid), 1))
    # Markov: transition counts from the last history item, popularity breaks ties
    markov_scores = np.stack([trans[x.history[-1]] for x in valid]) + pop / (pop.max() + 1.0)
    pop_hit = summarize(ranks_from_scores(pop_scores, targets, ties="worst"), ks=(10,))["hit@10"]
    markov_hit = summarize(ranks_from_scores(markov_scores, targets, ties="worst"), ks=(10,))["hit@10"]
    return markov_hit, pop_hit


def test_markov_beats_popularity_by_3x():
    ds = make_synthetic(SyntheticConfig())
    markov, pop = _validation_hit10(ds)
    assert pop > 0
    assert markov >= 3 * pop, (markov, pop)
    # the sparse version that `gramc data stats` prints agrees with this dense one exactly
    assert sequential_signal(ds, 10) == (markov, pop)


def test_sparse_signal_matches_dense_on_small_irregular_data():
    cfg = SyntheticConfig(num_users=80, num_items=60, num_topics=5, successor_prob=0.3, topic_prob=0.3, seed=1)
    ds = make_synthetic(cfg)
    assert sequential_signal(ds, 10) == _validation_hit10(ds)


def test_structure_check_can_fail_on_unstructured_data():
    # with no successors and no topic moves, next items are popularity draws: Markov gains nothing
    cfg = dataclasses.replace(SyntheticConfig(), successor_prob=0.0, topic_prob=0.0)
    markov, pop = _validation_hit10(make_synthetic(cfg))
    assert markov < 3 * pop
