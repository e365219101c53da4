"""Similar-item files (GRAM format) and the GCN artefact loader."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from gramc.config import load_config
from gramc.data.dataset import DataError, SeqDataset
from gramc.data.prepare import build_dataset
from gramc.graph.artifacts import EMBEDDINGS_FILE, MAPPING_FILE, GcnArtifacts
from gramc.graph.similar import read_similar_items, top_k_cosine, write_similar_items

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets" / "amazon-beauty"


def tiny_ds() -> SeqDataset:
    ids = ["B000000001", "B000000002", "B000000003", "B000000004"]
    return SeqDataset(ids, [{} for _ in ids], ["u1", "u2"], [[0, 1, 2, 3], [3, 2, 1]])


def test_write_read_roundtrip(tmp_path):
    ds = tiny_ds()
    nb = [[1, 2], [0, 3], [3, 0], [2, 1]]
    write_similar_items(tmp_path / "s.txt", ds, nb)
    lines = (tmp_path / "s.txt").read_text().splitlines()
    assert lines[0] == "anchor top1 top2"
    assert lines[1] == "B000000001 B000000002 B000000003"
    assert read_similar_items(tmp_path / "s.txt", ds, 2) == nb
    assert read_similar_items(tmp_path / "s.txt", ds, 1) == [[1], [0], [3], [2]]


@pytest.mark.parametrize("body, where, what", [
    ("B000000001 B000000002\nB000000002 B000000001\nXYZ B000000001\nB000000004 B000000001\n", ":4:", "XYZ"),
    ("B000000001 B000000002\nB000000002 NOPE\nB000000003 B000000001\nB000000004 B000000001\n", ":3:", "NOPE"),
    ("B000000001 B000000002\nB000000002\nB000000003 B000000001\nB000000004 B000000001\n", ":3:", "0 similar"),
    ("B000000001 B000000002\nB000000001 B000000003\nB000000003 B000000001\nB000000004 B000000001\n", ":3:", "second"),
    ("B000000001 B000000002\nB000000002 B000000001\nB000000003 B000000001\n", "", "B000000004"),
])
def test_read_errors_name_the_line(tmp_path, body, where, what):
    p = tmp_path / "s.txt"
    p.write_text("anchor top1\n" + body)
    with pytest.raises(DataError) as e:
        read_similar_items(p, tiny_ds(), 1)
    assert str(p) + where in str(e.value)
    assert what in str(e.value)


def test_too_few_neighbours_is_an_error(tmp_path):
    ds = tiny_ds()
    write_similar_items(tmp_path / "s.txt", ds, [[1], [0], [3], [2]])
    with pytest.raises(DataError, match="has 1 similar items, 2 were asked"):
        read_similar_items(tmp_path / "s.txt", ds, 2)


def test_top_k_cosine_excludes_self_and_orders():
    x = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.4, 0.6]])
    nb = top_k_cosine(x, 2, chunk=3)
    sims = torch.nn.functional.normalize(x, dim=1) @ torch.nn.functional.normalize(x, dim=1).T
    sims.fill_diagonal_(float("-inf"))
    expected = torch.topk(sims, 2, dim=1).indices
    assert torch.equal(nb, expected)
    assert all(i not in nb[i].tolist() for i in range(4))


def test_artifacts_rows_for_and_duplicate_keys(tmp_path):
    ds = tiny_ds()
    torch.save(torch.zeros(5, 3), tmp_path / EMBEDDINGS_FILE)
    (tmp_path / MAPPING_FILE).write_text(
        '{"B000000001": 1, "B000000002": 9, "B000000003": 3, "B000000003": 2}')
    art = GcnArtifacts.load(tmp_path)
    assert art.duplicate_keys == ["B000000003"]
    assert art.meta == {}
    # 9 is out of range (5 rows), B000000004 is missing -> 0
    assert art.rows_for(ds).tolist() == [1, 0, 2, 0]


def test_artifacts_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match=MAPPING_FILE):
        torch.save(torch.zeros(5, 3), tmp_path / EMBEDDINGS_FILE)
        GcnArtifacts.load(tmp_path)
    (tmp_path / MAPPING_FILE).write_text(json.dumps([1, 2]))
    with pytest.raises(DataError, match="expected a JSON object"):
        GcnArtifacts.load(tmp_path)


@pytest.mark.shared
def test_reads_grams_released_file():
    seq = SHARED / "user_sequence.txt"
    if not seq.is_file():
        pytest.skip("shared Beauty data not available")
    ds = build_dataset(seq, None, load_config())  # the project's GRAM reader, no item metadata
    nb = read_similar_items(SHARED / "similar_item_sasrec.txt", ds, 10)
    assert len(nb) == 12101 and all(len(r) == 10 for r in nb)
    first = (SHARED / "similar_item_sasrec.txt").read_text().splitlines()[1].split()
    assert [ds.item_ids[j] for j in nb[ds.index_of(first[0])]] == first[1:11]
    with pytest.raises(DataError, match="has 20 similar items, 21 were asked"):
        read_similar_items(SHARED / "similar_item_sasrec.txt", ds, 21)
