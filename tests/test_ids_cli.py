"""`gramc ids build` and `gramc ids check`: outputs, provenance, exit codes 0 / 1 / 2."""

import json
from pathlib import Path

import pytest

from gramc.cli import main
from gramc.data.prepare import prepare_synthetic
from gramc.ids.tokenizer import load_tokenizer

SMALL = ["data.synthetic.num_items=60", "data.synthetic.num_users=40", "data.synthetic.num_topics=4"]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("ids_cli")
    from gramc.config import load_config

    cfg = load_config(None, SMALL)
    prepare_synthetic(root / "data", cfg)
    out = root / "ids" / "item_ids.txt"
    rc = main(["ids", "build", "--data", str(root / "data"), "--tokenizer", "train", "--out", str(out),
               "--quiet", "ids.clusters=4", "ids.levels=2", "ids.vocab_size=300", "ids.threads=1"])
    return root, out, rc


def test_build_writes_ids_report_provenance_plot(built):
    root, out, rc = built
    assert rc == 0
    for suffix in ("", ".stats.json", ".run_info.json", ".png"):
        assert Path(str(out) + suffix).is_file(), suffix
    tok_dir = Path(str(out) + ".tokenizer")
    tok = load_tokenizer(tok_dir)
    stats = json.loads(Path(str(out) + ".stats.json").read_text())
    info = json.loads(Path(str(out) + ".run_info.json").read_text())
    assert stats["report"]["ok"] is True
    assert stats["tokenizer"]["fingerprint"] == tok.fingerprint == info["tokenizer"]["fingerprint"]
    assert info["config"]["ids"]["clusters"] == 4 and info["seed"] == 42
    assert info["inputs"]["data/sequences.txt"]["sha256"]
    assert len(info["data_fingerprint"]) == 64
    assert stats["build"]["dedup_items"] >= 0 and stats["build"]["levels"] == 2
    lines = out.read_text(encoding="utf-8").splitlines()
    assert all(" |" in line for line in lines) and len(lines) == stats["stats"]["items"]


def test_check_passes_on_built_ids_and_prints_json(built, capsys):
    root, out, _ = built
    capsys.readouterr()
    rc = main(["ids", "check", "--data", str(root / "data"), "--ids", str(out),
               "--tokenizer", str(out) + ".tokenizer", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert rc == 0 and report["ok"] is True
    assert {c["name"] for c in report["checks"]} >= {"ids.unique_ids", "ids.levels", "ids.branching"}


def test_check_exit_1_on_violation_and_2_on_bad_args(built, tmp_path, capsys):
    root, out, _ = built
    lines = out.read_text(encoding="utf-8").splitlines()
    asin0, id0 = lines[0].split(" ", 1)
    asin1 = lines[1].split(" ", 1)[0]
    bad = tmp_path / "bad.txt"
    bad.write_text("\n".join([lines[0], f"{asin1} {id0}"] + lines[2:]) + "\n", encoding="utf-8")
    tok = str(out) + ".tokenizer"
    rc = main(["ids", "check", "--data", str(root / "data"), "--ids", str(bad), "--tokenizer", tok])
    text = capsys.readouterr().out
    assert rc == 1
    assert "FAIL  ids.duplicate_ids" in text and f"bad.txt:2: duplicate ID {id0}" in text
    assert main(["ids", "check", "--data", str(root / "data"), "--ids", str(tmp_path / "none.txt"),
                 "--tokenizer", tok]) == 2
    assert main(["ids", "check", "--data", str(root / "data"), "--ids", str(out),
                 "--tokenizer", str(tmp_path / "no_tokenizer")]) == 2
    assert main(["ids", "check", "--data", str(tmp_path / "no_data"), "--ids", str(out),
                 "--tokenizer", tok]) == 2
    err = capsys.readouterr().err
    assert "none.txt' does not exist" in err and "no_tokenizer' does not exist" in err


def test_failed_build_leaves_existing_output_intact(built, tmp_path):
    root, out, _ = built
    before = out.read_bytes()
    rc = main(["ids", "build", "--data", str(root / "data"), "--tokenizer", str(out) + ".tokenizer",
               "--out", str(out), "--quiet", "ids.embedding=npy", f"ids.embedding_file={tmp_path / 'x.npy'}"])
    assert rc == 2
    assert out.read_bytes() == before


def test_build_twice_gives_identical_files(built):
    root, out, _ = built
    again = root / "again" / "item_ids.txt"
    rc = main(["ids", "build", "--data", str(root / "data"), "--tokenizer", "train", "--out", str(again),
               "--quiet", "ids.clusters=4", "ids.levels=2", "ids.vocab_size=300", "ids.threads=1"])
    assert rc == 0
    assert again.read_bytes() == out.read_bytes()
    tok_a = (Path(str(out) + ".tokenizer") / "tokenizer.json").read_bytes()
    tok_b = (Path(str(again) + ".tokenizer") / "tokenizer.json").read_bytes()
    assert tok_a == tok_b
