"""Fault injection for `check_gcn`: each fault fails exactly the checks it concerns."""

from __future__ import annotations

import json
import shutil
from collections import Counter

import pytest
import torch

from gramc.checks import Report
from gramc.config import GcnConfig, SyntheticConfig
from gramc.data.synthetic import make_synthetic
from gramc.graph.checks import check_gcn
from gramc.graph.lightgcn import train_lightgcn

ALL_CHECKS = {
    "gcn.files", "gcn.mapping.entries", "gcn.mapping.key_format", "gcn.mapping.index_range",
    "gcn.mapping.contiguous", "gcn.mapping.duplicates", "gcn.mapping.lookup", "gcn.embeddings.shape",
    "gcn.embeddings.dtype", "gcn.embeddings.row0_zero", "gcn.embeddings.norms", "gcn.embeddings.stats",
    "gcn.embeddings.nan_inf_rows", "gcn.embeddings.zero_rows", "gcn.embeddings.rows_vs_max_index",
    "gcn.consistency.top_items", "gcn.leakage.interactions", "gcn.leakage.fingerprint",
    "gcn.leakage.similar_items",
}
CFG = GcnConfig(epochs=2, lr=1e-2, batch_size=1024, eval_every=0, similar_k=5)


@pytest.fixture(scope="module")
def healthy(tmp_path_factory):
    torch.set_num_threads(1)
    ds = make_synthetic(SyntheticConfig())
    out = tmp_path_factory.mktemp("healthy")
    train_lightgcn(ds, CFG, out, progress=False)
    counts = Counter(i for s in ds.sequences for i in s)
    top = {i for i, _ in sorted(counts.items(), key=lambda t: (-t[1], t[0]))[:3]}
    # rare items away from both ends of the index range: safe places to inject row faults
    rare = [i for i, _ in sorted(counts.items(), key=lambda t: (t[1], t[0]))
            if i not in top and 0 < i < ds.num_items - 1][:2]
    return ds, out, top, rare


@pytest.fixture()
def folder(healthy, tmp_path):
    ds, out, top, rare = healthy
    dst = tmp_path / "gcn"
    shutil.copytree(out, dst)
    return ds, dst, top, rare


def failing(ds, folder) -> set[str]:
    checks = check_gcn(ds, folder)
    return {c.name for c in checks if not c.ok}


def edit_mapping(folder, fn):
    p = folder / "item_id_to_gcn_index.json"
    m = json.loads(p.read_text())
    p.write_text(json.dumps(fn(m)))


def edit_table(folder, fn):
    p = folder / "gcn_item_embeddings.pt"
    t = torch.load(p)
    torch.save(fn(t), p)


def edit_meta(folder, fn):
    p = folder / "gcn_meta.json"
    m = json.loads(p.read_text())
    fn(m)
    p.write_text(json.dumps(m))


def test_healthy_folder_passes_everything(healthy):
    ds, out, _, _ = healthy
    checks = check_gcn(ds, out)
    assert {c.name for c in checks} == ALL_CHECKS
    assert [c.name for c in checks if c.level != "pass"] == []
    r = Report(checks)
    assert r.by_name("gcn.mapping.lookup").value["rate"] == 1.0
    assert r.by_name("gcn.embeddings.shape").value["shape"] == [ds.num_items + 1, 64]
    top = r.by_name("gcn.consistency.top_items").value
    assert [t["count"] for t in top] == sorted((t["count"] for t in top), reverse=True)
    assert all(t["index"] == ds.index_of(t["item"]) + 1 for t in top)


def test_mapping_keyed_by_item_text(folder):
    ds, f, _, _ = folder
    edit_mapping(f, lambda m: {ds.item_fields[ds.index_of(k)]["title"]: v for k, v in m.items()})
    checks = {c.name: c for c in check_gcn(ds, f)}
    assert failing(ds, f) == {"gcn.mapping.key_format", "gcn.mapping.lookup", "gcn.consistency.top_items"}
    assert "item text" in checks["gcn.mapping.key_format"].message
    assert checks["gcn.mapping.lookup"].value["rate"] == 0.0


def test_mapping_keyed_by_numeric_strings(folder):
    ds, f, _, _ = folder
    edit_mapping(f, lambda m: {str(v): v for v in m.values()})
    checks = {c.name: c for c in check_gcn(ds, f)}
    assert "numeric string" in checks["gcn.mapping.key_format"].message


def test_off_by_one_mapping(folder):
    ds, f, top, _ = folder
    assert 0 not in top  # premise: item 0 (row 0 after the shift) is not a top item
    edit_mapping(f, lambda m: {k: v - 1 for k, v in m.items()})
    assert failing(ds, f) == {"gcn.mapping.index_range"}
    msg = {c.name: c for c in check_gcn(ds, f)}["gcn.mapping.index_range"].message
    assert "0-based" in msg


def test_missing_item(folder):
    ds, f, _, rare = folder
    gone = ds.item_ids[rare[0]]
    edit_mapping(f, lambda m: {k: v for k, v in m.items() if k != gone})
    assert failing(ds, f) == {"gcn.mapping.entries", "gcn.mapping.lookup", "gcn.mapping.contiguous"}
    lookup = {c.name: c for c in check_gcn(ds, f)}["gcn.mapping.lookup"]
    assert lookup.value["found"] == ds.num_items - 1 and gone in lookup.message


def test_duplicated_index(folder):
    ds, f, _, rare = folder
    a, b = (ds.item_ids[i] for i in rare)
    edit_mapping(f, lambda m: {**m, b: m[a]})
    assert failing(ds, f) == {"gcn.mapping.duplicates", "gcn.mapping.contiguous"}


def test_duplicated_last_index_keeps_range_contiguous(folder):
    ds, f, top, _ = folder
    last = ds.item_ids[-1]
    assert ds.num_items - 1 not in top
    edit_mapping(f, lambda m: {**m, last: 1})
    assert failing(ds, f) == {"gcn.mapping.duplicates"}


def test_repeated_key_in_the_json_file(folder):
    ds, f, _, _ = folder
    p = f / "item_id_to_gcn_index.json"
    text = p.read_text().rstrip().rstrip("}")
    p.write_text(text + f', "{ds.item_ids[0]}": 1}}')
    assert failing(ds, f) == {"gcn.mapping.duplicates"}


@pytest.mark.parametrize("fault, expected", [
    ("not_normalised", {"gcn.embeddings.norms"}),
    ("nan_row", {"gcn.embeddings.nan_inf_rows"}),
    ("inf_row", {"gcn.embeddings.nan_inf_rows"}),
    ("zero_row", {"gcn.embeddings.zero_rows"}),
    ("row0_nonzero", {"gcn.embeddings.row0_zero"}),
    ("float64", {"gcn.embeddings.dtype"}),
    ("too_few_rows", {"gcn.embeddings.shape", "gcn.embeddings.rows_vs_max_index"}),
])
def test_table_faults(folder, fault, expected):
    ds, f, _, rare = folder
    row = rare[0] + 1

    def inject(t):
        t = t.clone()
        if fault == "not_normalised":
            t[row] *= 1.5
        elif fault == "nan_row":
            t[row, 3] = float("nan")
        elif fault == "inf_row":
            t[row, 0] = float("inf")
        elif fault == "zero_row":
            t[row] = 0
        elif fault == "row0_nonzero":
            t[0, 0] = 0.01
        elif fault == "float64":
            t = t.double()
        elif fault == "too_few_rows":
            t = t[:-1]
        return t

    edit_table(f, inject)
    assert failing(ds, f) == expected


def test_norms_check_reports_the_worst_row(folder):
    ds, f, _, rare = folder
    row = rare[1] + 1
    edit_table(f, lambda t: torch.cat([t[:row], t[row:row + 1] * 0.5, t[row + 1:]]))
    c = {c.name: c for c in check_gcn(ds, f)}["gcn.embeddings.norms"]
    assert c.value["rows_off"] == 1 and f"row {row}" in c.message and c.value["min"] == pytest.approx(0.5)


def test_meta_says_all_interactions(folder):
    ds, f, _, _ = folder

    def say_all(m):
        m["interactions"]["split"] = "all"
    edit_meta(f, say_all)
    assert failing(ds, f) == {"gcn.leakage.interactions", "gcn.leakage.similar_items"}


def test_fingerprint_mismatch(folder):
    ds, f, _, _ = folder

    def tamper(m):
        m["interactions"]["sha256"] = "0" * 64
    edit_meta(f, tamper)
    assert failing(ds, f) == {"gcn.leakage.fingerprint"}


def test_trained_with_test_interactions(healthy, tmp_path):
    ds = healthy[0]
    cfg = GcnConfig(**{**CFG.__dict__, "interactions": "all"})
    train_lightgcn(ds, cfg, tmp_path, progress=False)
    assert failing(ds, tmp_path) == {"gcn.leakage.interactions", "gcn.leakage.fingerprint",
                                     "gcn.leakage.similar_items"}


def test_foreign_similar_items_and_missing_meta_warn(folder):
    ds, f, _, _ = folder
    p = f / "similar_items.txt"
    p.write_text(p.read_text().replace("top5", "top5 ") + "\n")
    checks = {c.name: c for c in check_gcn(ds, f)}
    assert checks["gcn.leakage.similar_items"].level == "warn"
    (f / "gcn_meta.json").unlink()
    checks = check_gcn(ds, f)
    assert [c.name for c in checks if not c.ok] == []
    assert {c.name for c in checks if c.level == "warn"} == {
        "gcn.leakage.interactions", "gcn.leakage.fingerprint", "gcn.leakage.similar_items"}


def test_missing_file_fails_only_files(folder):
    ds, f, _, _ = folder
    (f / "gcn_item_embeddings.pt").unlink()
    checks = check_gcn(ds, f)
    assert [(c.name, c.ok) for c in checks] == [("gcn.files", False)]
    assert "gcn_item_embeddings.pt" in checks[0].message


@pytest.mark.shared
def test_beauty_figures_with_a_well_formed_table(tmp_path):
    """On the real Beauty data: the report's figures (12,101 entries, top items 431/403/391)."""
    from pathlib import Path

    from gramc.config import load_config
    from gramc.data.prepare import build_dataset
    from gramc.graph.lightgcn import pairs_fingerprint

    seq = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets" / "amazon-beauty" / "user_sequence.txt"
    if not seq.is_file():
        pytest.skip("shared Beauty data not available")
    ds = build_dataset(seq, None, load_config())  # the project's GRAM reader, no item metadata
    table = torch.nn.functional.normalize(torch.randn(ds.num_items + 1, 64, generator=torch.Generator().manual_seed(0)), dim=1)
    table[0] = 0
    torch.save(table, tmp_path / "gcn_item_embeddings.pt")
    (tmp_path / "item_id_to_gcn_index.json").write_text(json.dumps({a: i + 1 for i, a in enumerate(ds.item_ids)}))
    (tmp_path / "gcn_meta.json").write_text(json.dumps({"interactions": {
        "split": "train", "count": 153776, "sha256": pairs_fingerprint(ds, [s[:-2] for s in ds.sequences])}}))
    checks = {c.name: c for c in check_gcn(ds, tmp_path)}
    assert [n for n, c in checks.items() if not c.ok] == []
    assert checks["gcn.mapping.entries"].value == {"entries": 12101, "dataset_items": 12101}
    assert checks["gcn.mapping.contiguous"].value["span"] == [1, 12101]
    assert checks["gcn.mapping.lookup"].value["rate"] == 1.0
    assert checks["gcn.mapping.key_format"].value["format"].startswith("ASIN")
    assert checks["gcn.embeddings.shape"].value["shape"] == [12102, 64]
    top = checks["gcn.consistency.top_items"].value
    assert [(t["item"], t["count"]) for t in top] == [("B004OHQR1Q", 431), ("B0043OYFKU", 403), ("B0069FDR96", 391)]
    # a mapping keyed by title-like text is named as such
    (tmp_path / "item_id_to_gcn_index.json").write_text(json.dumps({f"Some product {i}": i + 1 for i in range(12101)}))
    assert "item text" in {c.name: c for c in check_gcn(ds, tmp_path)}["gcn.mapping.key_format"].message
