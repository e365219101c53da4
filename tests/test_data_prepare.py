"""`gramc data prepare` / `stats`: atomic output, provenance, synthetic determinism, CLI."""

from __future__ import annotations

import json

import pytest

import gramc.data.prepare as prepare_mod
from gramc.cli import main
from gramc.config import Config
from gramc.data.dataset import SeqDataset
from gramc.data.prepare import prepare


def _sources(tmp_path):
    seq = tmp_path / "user_sequence.txt"
    seq.write_text("u1 a b c d\nu2 b c a\n")
    items = tmp_path / "x.item"
    items.write_text("item_id:token\ttitle:token\tcategories:token_seq\n"
                     "a\tA\t'Beauty'\nb\tB\t'Beauty'\nc\tC\t'Beauty'\nd\tD\t'Beauty', 'Face'\n")
    return seq, items


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_prepare_writes_canonical_folder_with_provenance(tmp_path):
    seq, items = _sources(tmp_path)
    out = tmp_path / "out"
    prepare(seq, items, out, Config())
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "dataset.json", "items.jsonl",
                                                     "run_info.json", "sequences.txt"]
    assert (out / "sequences.txt").read_text() == "u1 a b c d\nu2 b c a\n"
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["sources"]["sequences"]["format"] == "gram"
    assert meta["sources"]["items"]["format"] == "recbole-item"
    assert len(meta["sources"]["items"]["sha256"]) == 64
    assert meta["counts"] == {"users": 2, "items": 4, "interactions": 7}
    info = json.loads((out / "run_info.json").read_text())
    assert set(info["inputs"]) == {"sequences", "items"}
    back = SeqDataset.load(out)
    assert back.item_fields[3] == {"title": "D", "categories": ["Beauty", "Face"]}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]  # no temp leftovers


def test_failure_midway_leaves_old_output_intact(tmp_path, monkeypatch):
    seq, items = _sources(tmp_path)
    out = tmp_path / "out"
    prepare(seq, items, out, Config())
    before = _snapshot(out)

    def boom(*args, **kwargs):
        raise RuntimeError("injected failure after the dataset files were written")

    monkeypatch.setattr(prepare_mod, "write_run_info", boom)
    seq.write_text("u9 d c b a\n")  # a different dataset that must never appear
    with pytest.raises(RuntimeError, match="injected"):
        prepare(seq, items, out, Config())
    assert _snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "user_sequence.txt", "x.item"]


def test_failure_on_first_prepare_leaves_nothing(tmp_path, monkeypatch):
    seq, items = _sources(tmp_path)
    monkeypatch.setattr(SeqDataset, "save", lambda self, folder: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        prepare(seq, items, tmp_path / "out", Config())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["user_sequence.txt", "x.item"]


def test_cli_synthetic_is_deterministic(tmp_path, capsys):
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        assert main(["data", "prepare", "--synthetic", "--out", str(tmp_path / name),
                     "data.synthetic.num_users=40", "data.synthetic.num_items=30",
                     "data.synthetic.num_topics=3", f"data.synthetic.seed={seed}"]) == 0
    a, b, c = (_snapshot(tmp_path / n) for n in "abc")
    for f in ("items.jsonl", "sequences.txt", "dataset.json", "config.yaml"):
        assert a[f] == b[f]
    assert a["sequences.txt"] != c["sequences.txt"]
    assert "wrote" in capsys.readouterr().out


def test_cli_prepare_and_stats(tmp_path, capsys):
    seq, items = _sources(tmp_path)
    out = tmp_path / "ds"
    assert main(["data", "prepare", "--sequences", str(seq), "--items", str(items), "--out", str(out)]) == 0
    capsys.readouterr()
    png = tmp_path / "len.png"
    assert main(["data", "stats", str(out), "--json", "--plot", str(png)]) == 0
    st = json.loads(capsys.readouterr().out)
    assert (st["users"], st["items"], st["interactions"]) == (2, 4, 7)
    assert (st["train_samples"], st["valid_samples"], st["test_samples"]) == (1, 2, 2)
    assert st["top_items"][0] == ["a", 2]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["data", "stats", str(out)]) == 0
    assert "interactions   7" in capsys.readouterr().out


def test_cli_help_for_every_subcommand(capsys):
    for sub in ("prepare", "download", "stats"):
        with pytest.raises(SystemExit) as e:
            main(["data", sub, "--help"])
        assert e.value.code == 0
        assert f"gramc data {sub}" in capsys.readouterr().out


def test_cli_stats_on_missing_folder(tmp_path, capsys):
    assert main(["data", "stats", str(tmp_path)]) == 2
    assert "not a prepared gramc dataset" in capsys.readouterr().err
