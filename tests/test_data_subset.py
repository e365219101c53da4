"""`gramc data subset`: deterministic seeded users, re-indexed items, k-core fixpoint, provenance, errors."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from gramc.cli import main
from gramc.config import Config
from gramc.data.dataset import DataError, SeqDataset
from gramc.data.prepare import prepare_synthetic
from gramc.data.subset import SubsetSpec, build_subset, write_subset

DATA_FILES = ("items.jsonl", "sequences.txt", "dataset.json")


@pytest.fixture(scope="module")
def parent(tmp_path_factory):
    folder = tmp_path_factory.mktemp("parent") / "data"
    cfg = Config()
    cfg.data.synthetic.num_users = 300
    prepare_synthetic(folder, cfg)
    return folder


def _bytes(folder):
    return {n: (folder / n).read_bytes() for n in DATA_FILES}


def test_same_seed_gives_identical_files_other_seed_other_users(parent, tmp_path):
    spec = SubsetSpec(fraction=0.3, seed=4)
    write_subset(parent, tmp_path / "a", spec, Config())
    write_subset(parent, tmp_path / "b", spec, Config())
    assert _bytes(tmp_path / "a") == _bytes(tmp_path / "b")
    write_subset(parent, tmp_path / "c", SubsetSpec(fraction=0.3, seed=5), Config())
    a, c = SeqDataset.load(tmp_path / "a"), SeqDataset.load(tmp_path / "c")
    assert a.num_users == c.num_users == 90
    assert set(a.users) != set(c.users)


def test_users_keep_full_sequences_and_items_are_reindexed(parent, tmp_path):
    full = SeqDataset.load(parent)
    ds = build_subset(full, SubsetSpec(users=40, seed=1))
    assert ds.num_users == 40
    assert ds.users == [u for u in full.users if u in set(ds.users)]  # parent order kept
    pos = {u: i for i, u in enumerate(full.users)}
    for u, seq in zip(ds.users, ds.sequences):
        assert [ds.item_ids[i] for i in seq] == [full.item_ids[i] for i in full.sequences[pos[u]]]
    used = {i for s in ds.sequences for i in s}
    assert used == set(range(ds.num_items)) and ds.num_items < full.num_items
    first = list(dict.fromkeys(i for s in ds.sequences for i in s))
    assert first == list(range(ds.num_items))  # indexed by first appearance, as prepare does
    for iid, fields in zip(ds.item_ids, ds.item_fields):
        assert fields == full.item_fields[full.index_of(iid)] and fields


def test_kcore_reaches_a_fixpoint(parent):
    full = SeqDataset.load(parent)
    plain = build_subset(full, SubsetSpec(fraction=0.5, seed=3))
    ds = build_subset(full, SubsetSpec(fraction=0.5, seed=3, kcore=4))
    item_counts = Counter(i for s in ds.sequences for i in s)
    assert min(len(s) for s in ds.sequences) >= 4 and min(item_counts.values()) >= 4
    assert ds.num_items < plain.num_items and ds.num_users < plain.num_users  # it removed something here
    notes = ds.meta["dropped"]["kcore"]
    assert notes["k"] == 4 and notes["rounds"] >= 2 and notes["interactions_dropped"] > 0
    assert ds.num_interactions == plain.num_interactions - notes["interactions_dropped"]


def test_provenance_records_parent_self_and_sampling(parent, tmp_path):
    spec = SubsetSpec(fraction=0.25, seed=9, kcore=3)
    ds = write_subset(parent, tmp_path / "s", spec, Config())
    meta = json.loads((tmp_path / "s" / "dataset.json").read_text())
    sub = meta["subset"]
    assert sub["parent"]["fingerprint"] == SeqDataset.load(parent).fingerprint()
    assert sub["fingerprint"] == SeqDataset.load(tmp_path / "s").fingerprint() == ds.fingerprint()
    assert sub["sampling"]["fraction"] == 0.25 and sub["sampling"]["seed"] == 9 and sub["sampling"]["kcore"] == 3
    assert meta["counts"] == {"users": ds.num_users, "items": ds.num_items, "interactions": ds.num_interactions}
    info = json.loads((tmp_path / "s" / "run_info.json").read_text())
    assert info["subset"] == sub
    assert info["inputs"]["parent/sequences.txt"]["sha256"] == __import__("hashlib").sha256(
        (parent / "sequences.txt").read_bytes()).hexdigest()


def test_cli_prints_stats_and_every_command_reads_the_subset(parent, tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["data", "subset", "--data", str(parent), "--out", str(out), "--users", "50", "--seed", "2"]) == 0
    text = capsys.readouterr().out
    assert "50 of 300 users (seed 2)" in text and "samples (max_his=20)" in text
    assert main(["data", "stats", str(out)]) == 0


def test_kcore_that_leaves_nobody_is_a_clear_error(parent):
    with pytest.raises(DataError, match="--kcore 5: no user of the 60 drawn"):
        build_subset(SeqDataset.load(parent), SubsetSpec(fraction=0.2, seed=3, kcore=5))


@pytest.mark.parametrize("spec, match", [
    (SubsetSpec(fraction=1.5, seed=0), "--fraction must be in"),
    (SubsetSpec(fraction=0.0, users=0), "exactly one of --fraction"),
    (SubsetSpec(fraction=0.5, users=3), "exactly one of --fraction"),
    (SubsetSpec(users=10_000), "--users must be in 1..300"),
    (SubsetSpec(fraction=0.5, kcore=2), "--kcore must be 0"),
])
def test_bad_parameters_name_the_option(parent, tmp_path, spec, match):
    with pytest.raises(DataError, match=match):
        write_subset(parent, tmp_path / "x", spec, Config())
    assert not (tmp_path / "x").exists()


def test_missing_parent_and_out_equal_parent_are_clear_errors(parent, tmp_path):
    with pytest.raises(DataError, match="--data .*nowhere: no such folder"):
        write_subset(tmp_path / "nowhere", tmp_path / "x", SubsetSpec(fraction=0.5), Config())
    before = _bytes(parent)
    with pytest.raises(DataError, match="is the parent folder itself"):
        write_subset(parent, parent, SubsetSpec(fraction=0.5), Config())
    assert _bytes(parent) == before
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="missing items.jsonl"):
        write_subset(empty, tmp_path / "x", SubsetSpec(fraction=0.5), Config())
