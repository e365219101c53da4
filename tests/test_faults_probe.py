"""Cases found by bench/fault_probe.py (issue 31's re-run with new variants), one test each: a
damaged dataset folder, an ID with a Unicode space in the readers that missed it, and `--resume`
pointed at a folder that is not a run."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from gramc.cli import main

SYN = ["data.synthetic.num_users=30", "data.synthetic.num_items=20", "data.synthetic.num_topics=3"]


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_dataset_json_that_is_not_json_is_named(tmp_path, capsys):
    d = tmp_path / "ds"
    assert main(["data", "prepare", "--synthetic", "--out", str(d), *SYN]) == 0
    (d / "dataset.json").write_text("{not json")
    capsys.readouterr()
    assert main(["data", "stats", str(d)]) == 2
    err = capsys.readouterr().err
    assert f"{d / 'dataset.json'}: not valid JSON" in err and err.count("\n") == 1


def test_a_dataset_file_that_is_not_utf8_is_named(tmp_path, capsys):
    d = tmp_path / "ds"
    assert main(["data", "prepare", "--synthetic", "--out", str(d), *SYN]) == 0
    (d / "sequences.txt").write_bytes(b"u1 \xff\xfe\n")
    capsys.readouterr()
    assert main(["data", "stats", str(d)]) == 2
    err = capsys.readouterr().err
    assert str(d) in err and "not UTF-8" in err


def _inter(tmp: Path) -> Path:
    rows = ["user_id:token\titem_id:token\ttimestamp:float"]
    rows += [f"u{u}\ti{(u + j) % 10}\t{j}" for u in range(8) for j in range(6)]
    p = tmp / "x.inter"
    p.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return p


def test_a_recbole_item_id_with_a_unicode_space_is_refused_naming_the_line(tmp_path, capsys):
    items = tmp_path / "x.item"
    items.write_text("item_id:token\ttitle:token_seq\n" +
                     "".join(f"i{n}{chr(0xa0) if n == 4 else ''}\tthing {n}\n" for n in range(10)), encoding="utf-8")
    rc = main(["data", "prepare", "--sequences", str(_inter(tmp_path)), "--items", str(items),
               "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2 and f"{items}:6" in err and "NO-BREAK SPACE" in err
    assert not (tmp_path / "out").exists()


def test_an_amazon_review_id_error_says_what_is_wrong_once(tmp_path, capsys):
    rows = [json.dumps({"reviewerID": f"R{u}", "asin": f"B{(u + j) % 10:04d}" + ("\u00a0" if (u, j) == (1, 2) else ""),
                        "unixReviewTime": 1000 + j}) for u in range(8) for j in range(6)]
    p = tmp_path / "reviews_X_5.json.gz"
    p.write_bytes(gzip.compress(("\n".join(rows) + "\n").encode()))
    assert main(["data", "prepare", "--sequences", str(p), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"{p}:9: item ID" in err and "NO-BREAK SPACE" in err
    assert "expected keys" not in err and err.count(str(p)) == 1


def test_resume_of_a_dataset_folder_is_refused_and_writes_nothing(tmp_path, capsys):
    d = tmp_path / "ds"
    assert main(["data", "prepare", "--synthetic", "--out", str(d), *SYN]) == 0
    before = _tree(d)
    capsys.readouterr()
    assert main(["train", "--resume", str(d), "train.max_steps=1", "train.final_eval=false"]) == 2
    err = capsys.readouterr().err
    assert "not a training run" in err and "dataset.json" in err and str(d) in err
    assert _tree(d) == before
