"""bench/evidence_segments.py on hand-made ranks: groups, paired differences inside them, outputs."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from gramc.data.dataset import SeqDataset
from gramc.metrics import per_user_metrics

ROOT = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("evidence_segments", ROOT / "bench" / "evidence_segments.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["evidence_segments"] = mod
    spec.loader.exec_module(mod)
    return mod


# nine users: histories of 2, 3 or 5 items before the test item (three each); item 0 is every
# user's first item, so it is popular in the training part; the test items are 1..9, each seen once
SEQS = [[0, 10 + u % 3, u + 1] if u < 3 else [0, 10, 11, u + 1] if u < 6 else [0, 10, 11, 12, 13, u + 1]
        for u in range(9)]
USERS = [f"U{u}" for u in range(9)]


def _setup(tmp: Path, gramc_ranks: list[int], cf_ranks: list[int]) -> tuple[Path, Path]:
    items = [f"I{i}" for i in range(14)]
    ds = SeqDataset(items, [{"title": i} for i in items], list(USERS), [list(s) for s in SEQS])
    ds.save(tmp / "data")
    rows = {}
    for name, ranks in {"gram": [-1] * 9, "gram-s2": [-1] * 9, "gramc-user_passage": gramc_ranks,
                        "lightgcn": cf_ranks, "sasrec": [5] * 9}.items():
        out = tmp / "models" / name
        gen = name.startswith("gram")
        path = out / "test" / "ranks.json" if gen else out / "ranks_test.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps({"users": USERS, "ranks": ranks}))
        ndcg = float(per_user_metrics(np.array(ranks), [10])["ndcg@10"].mean())  # as the bench's rows have it
        rows[name] = {"kind": "generative" if gen else "baseline", "out": str(out),
                      "test": {"metrics": {"ndcg@10": ndcg}}}
    results = tmp / "ev.json"
    results.write_text(json.dumps({"subset": {"models": rows}}))
    return tmp / "data", results


def test_the_gain_sits_in_the_group_it_comes_from(tmp_path):
    bench = _bench()
    # GRAM-C finds the test item of the three longest histories only; LightGCN finds users 0 and 6
    data, results = _setup(tmp_path, [-1] * 6 + [0] * 3, [0, -1, -1, -1, -1, -1, 0, -1, -1])
    per, features, users = bench.load(results, SeqDataset.load(data))
    assert users == USERS
    assert features["history"].tolist() == [2] * 3 + [3] * 3 + [5] * 3
    assert features["target popularity"].tolist() == [0] * 9  # each test item is unseen in training
    assert features["LightGCN finds it"].tolist() == [1, 0, 0, 0, 0, 0, 1, 0, 0]
    seg = bench.segment(per, features, boot=200, seed=0)
    hist = seg["history"]
    assert [g["group"] for g in hist] == ["2", "3", "5"] and [g["users"] for g in hist] == [3, 3, 3]
    key = "gramc-user_passage - GRAM (2 seeds)"
    assert [g["paired"][key]["ndcg@10"]["mean"] for g in hist] == [0.0, 0.0, 1.0]
    assert hist[2]["paired"][key]["hit@10"] == {"mean": 1.0, "lo": 1.0, "hi": 1.0}
    assert [g["paired"]["gram-s2 - gram"]["ndcg@10"]["mean"] for g in hist] == [0.0, 0.0, 0.0]
    # sasrec at rank 5 everywhere: ndcg@10 = 1/log2(7) in every group
    assert hist[0]["metrics"]["sasrec"]["ndcg@10"] == pytest.approx(1 / np.log2(7))
    cf = seg["LightGCN finds it"]
    assert [g["users"] for g in cf] == [7, 2]
    assert cf[1]["paired"][key]["ndcg@10"]["mean"] == pytest.approx(0.5)  # user 6 of users 0 and 6
    assert cf[0]["paired"][key]["ndcg@10"]["mean"] == pytest.approx(2 / 7)
    assert len(seg["target popularity"]) == 1  # one value: one group, not three empty ones
    assert "parent_share" not in hist[0]


def test_groups_drawn_on_the_subset_give_the_full_splits_shares():
    bench = _bench()
    assert bench.shares(np.array([0, 1, 2, 3, 5, 6, 50, 80]), [0, 2, 6]) == [0.25, 0.375, 0.375]
    seg = bench.segment({"gram": {k: np.zeros(9) for k in bench.METRICS}},
                        {"history": np.array([2] * 3 + [3] * 3 + [5] * 3)}, boot=20, seed=0,
                        parent={"history": np.array([2, 3, 4, 4, 5, 9, 40, 1])})
    # groups 2, 3, 5 (lower bounds 2, 3, 5): the parent's 1 and 2 in the first, 3-4 in the second
    assert [g["parent_share"] for g in seg["history"]] == [0.25, 0.375, 0.375]


def test_test_users_missing_from_the_dataset_are_refused(tmp_path):
    bench = _bench()
    data, results = _setup(tmp_path, [-1] * 9, [-1] * 9)
    ds = SeqDataset.load(data)
    ds.users[4] = "someone else"
    with pytest.raises(SystemExit, match="U4.*--data must be the folder"):
        bench.load(results, SeqDataset(ds.item_ids, ds.item_fields, ds.users, ds.sequences))


def test_main_writes_json_plot_and_its_doc_section_only(tmp_path):
    bench = _bench()
    data, results = _setup(tmp_path, [-1] * 6 + [0] * 3, [0] * 9)  # LightGCN finds all: one group
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\n## Other\n\nkept\n")
    out = tmp_path / "res" / "seg.json"
    assert bench.main(["--data", str(data), "--results", str(results), "--out", str(out), "--doc", str(doc),
                       "--bootstrap", "50", "--parent", str(data)]) == 0
    res = json.loads(out.read_text())
    assert res["users"] == 9 and res["models"] == sorted(["gram", "gram-s2", "gramc-user_passage", "lightgcn",
                                                          "sasrec"])
    assert res["data_fingerprint"] == SeqDataset.load(data).fingerprint()
    assert out.with_suffix(".png").stat().st_size > 0
    text = doc.read_text()
    assert "## Other\n\nkept" in text and bench.SECTION in text
    assert "| 5 | 3 (33%) | 33% |" in text and "+1.0000 [+1.0000, +1.0000]" in text
    assert "not in LightGCN's top" not in text  # an empty group is left out, not shown as nan


def test_part_full_reads_the_full_rows_into_its_own_files_and_section(tmp_path):
    bench = _bench()
    data, results = _setup(tmp_path, [-1] * 6 + [0] * 3, [0] * 9)
    ev = json.loads(results.read_text())
    full = {k: v for k, v in ev["subset"]["models"].items() if k != "gram-s2"}  # one GRAM seed, as --full runs
    results.write_text(json.dumps({"subset": {"models": {}}, "full": {"models": full}}))
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\n## Evidence on Beauty (by segment)\n\nthe subset's, kept\n")
    with pytest.raises(SystemExit, match="no 'subset' models"):
        bench.main(["--data", str(data), "--results", str(results), "--doc", str(doc), "--out", str(tmp_path / "s.json")])
    out = tmp_path / "seg_full.json"
    assert bench.main(["--part", "full", "--data", str(data), "--results", str(results), "--out", str(out),
                       "--doc", str(doc), "--bootstrap", "50"]) == 0
    res = json.loads(out.read_text())
    assert res["part"] == "full" and "gram-s2" not in res["models"]
    hist = res["segments"]["history"]
    assert hist[2]["paired"]["gramc-user_passage - GRAM (1 seed)"]["ndcg@10"]["mean"] == 1.0
    assert out.with_suffix(".png").stat().st_size > 0
    text = doc.read_text()
    assert "the subset's, kept" in text and bench.SECTIONS["full"] in text
    assert "Test users of the full split (9)" in text
