"""Bad input: every problem is a DataError naming the file, the line and what was expected."""

from __future__ import annotations

import gzip
import json

import pytest

from gramc.cli import main
from gramc.config import Config, load_config
from gramc.data.dataset import DataError
from gramc.data.prepare import build_dataset
from gramc.data.readers import (read_amazon_meta, read_amazon_reviews, read_gram_item_text,
                                read_gram_sequences, read_recbole_inter, read_recbole_item)


def test_malformed_gram_sequence_line(tmp_path):
    p = tmp_path / "user_sequence.txt"
    p.write_text("u1 a b c\nlonely\n")
    with pytest.raises(DataError, match=r"user_sequence.txt:2: expected `USER item_1"):
        read_gram_sequences(p)


def test_duplicate_user(tmp_path):
    p = tmp_path / "user_sequence.txt"
    p.write_text("u1 a b c\nu2 a b c\nu1 c d e\n")
    with pytest.raises(DataError, match=r"user_sequence.txt:3: duplicate user 'u1' \(first on line 1\)"):
        read_gram_sequences(p)


def test_duplicate_item_in_metadata(tmp_path):
    p = tmp_path / "item_plain_text.txt"
    p.write_text("a title: x\nb title: y\na title: z\n")
    with pytest.raises(DataError, match=r"item_plain_text.txt:3: duplicate item 'a'"):
        read_gram_item_text(p)


def test_unknown_recbole_column_type(tmp_path):
    p = tmp_path / "x.item"
    p.write_text("item_id:token\ttitle:string\nA\tB\n")
    with pytest.raises(DataError, match=r"x.item:1: column 'title' has unknown type 'string'"):
        read_recbole_item(p)


def test_recbole_header_without_type(tmp_path):
    p = tmp_path / "x.inter"
    p.write_text("user_id\titem_id:token\nu\ta\n")
    with pytest.raises(DataError, match=r"x.inter:1: header column 'user_id' must look like name:type"):
        read_recbole_inter(p)


def test_recbole_wrong_field_count_and_bad_number(tmp_path):
    p = tmp_path / "x.inter"
    p.write_text("user_id:token\titem_id:token\ttimestamp:float\nu\ta\t1\nu\tb\n")
    with pytest.raises(DataError, match=r"x.inter:3: expected 3 tab-separated fields"):
        read_recbole_inter(p)
    p.write_text("user_id:token\titem_id:token\ttimestamp:float\nu\ta\tyesterday\n")
    with pytest.raises(DataError, match=r"x.inter:2: column 'timestamp' \(float\) expects numbers"):
        read_recbole_inter(p)


def test_recbole_inter_without_item_column(tmp_path):
    p = tmp_path / "x.inter"
    p.write_text("user_id:token\tthing:token\nu\ta\n")
    with pytest.raises(DataError, match=r"x.inter: header has no 'item_id' column"):
        read_recbole_inter(p)


def test_malformed_review_json_and_missing_keys(tmp_path):
    p = tmp_path / "reviews.json"
    p.write_text(json.dumps({"reviewerID": "u", "asin": "a", "unixReviewTime": 1}) + "\n{not json\n")
    with pytest.raises(DataError, match=r"reviews.json:2: not a JSON object"):
        read_amazon_reviews(p)
    p.write_text(json.dumps({"reviewerID": "u", "unixReviewTime": 1}) + "\n")
    with pytest.raises(DataError, match=r"reviews.json:1: expected keys reviewerID, asin, unixReviewTime"):
        read_amazon_reviews(p)


def test_meta_line_that_is_not_a_dict(tmp_path):
    p = tmp_path / "meta.json"
    p.write_text("{'asin': 'a'}\n['asin', 'b']\n")
    with pytest.raises(DataError, match=r"meta.json:2: expected a dict with an 'asin' key"):
        read_amazon_meta(p)


def test_non_utf8_bytes_name_the_line(tmp_path):
    p = tmp_path / "user_sequence.txt"
    p.write_bytes(b"u1 a b c\nu2 a \xff b c\n")
    with pytest.raises(DataError, match=r"user_sequence.txt:2: not valid UTF-8 \(byte b'\\xff' at column 6\)"):
        read_gram_sequences(p)


@pytest.mark.parametrize("content", [b"", b"\n\n  \n"])
def test_empty_files(tmp_path, content):
    p = tmp_path / "user_sequence.txt"
    p.write_bytes(content)
    with pytest.raises(DataError, match=r"user_sequence.txt: file (is empty|has no data lines)"):
        read_gram_sequences(p)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"nope.txt: file not found"):
        read_gram_sequences(tmp_path / "nope.txt")


def test_truncated_gzip(tmp_path):
    full = gzip.compress(b"".join(json.dumps({"reviewerID": f"u{i}", "asin": "a", "unixReviewTime": i}).encode()
                                  + b"\n" for i in range(2000)))
    p = tmp_path / "reviews_Beauty_5.json.gz"
    p.write_bytes(full[: len(full) // 2])
    with pytest.raises(DataError, match=r"reviews_Beauty_5.json.gz: truncated gzip file"):
        read_amazon_reviews(p)


def test_corrupt_gzip(tmp_path):
    p = tmp_path / "meta_Beauty.json.gz"
    p.write_bytes(b"this is not gzip at all\n")
    with pytest.raises(DataError, match=r"meta_Beauty.json.gz: corrupt gzip file"):
        read_amazon_meta(p)


def _sources(tmp_path):
    seq = tmp_path / "user_sequence.txt"
    seq.write_text("u1 a b c d\nu2 a x b\nu3 x y a b c\n")
    items = tmp_path / "item_plain_text.txt"
    items.write_text("a title: A\nb title: B\nc title: C\nd title: D\nz title: unused\n")
    return seq, items


def test_items_without_metadata_dropped_and_counted(tmp_path):
    seq, items = _sources(tmp_path)
    ds = build_dataset(seq, items, Config())
    d = ds.meta["dropped"]
    assert d["items_without_metadata"] == 2 and d["interactions_without_metadata"] == 3
    assert d["items_without_metadata_examples"] == ["x", "y"]
    # u2 keeps [a, b] (< 3 after filtering): dropped and counted
    assert d["users_too_short"] == 1 and ds.users == ["u1", "u3"]
    assert [[ds.item_ids[i] for i in s] for s in ds.sequences] == [["a", "b", "c", "d"], ["a", "b", "c"]]
    assert d["metadata_items_unused"] == 1


def test_items_without_metadata_fatal_when_configured(tmp_path):
    seq, items = _sources(tmp_path)
    cfg = load_config(None, ["data.missing_metadata=error"])
    with pytest.raises(DataError, match=r"user_sequence.txt: 2 items \(3 interactions\) have no metadata"):
        build_dataset(seq, items, cfg)


def test_nothing_left_is_an_error(tmp_path):
    seq = tmp_path / "user_sequence.txt"
    seq.write_text("u1 a b\nu2 c\n")
    with pytest.raises(DataError, match=r"no user has 3 or more interactions"):
        build_dataset(seq, None, Config())


def test_cli_reports_data_errors_without_traceback(tmp_path, capsys):
    p = tmp_path / "user_sequence.txt"
    p.write_text("u1 a b c\nu1 a b c\n")
    rc = main(["data", "prepare", "--sequences", str(p), "--out", str(tmp_path / "out")])
    assert rc == 2
    assert "user_sequence.txt:2: duplicate user 'u1'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_recbole_header_without_rows(tmp_path):
    p = tmp_path / "x.item"
    p.write_text("item_id:token\ttitle:token\n")
    with pytest.raises(DataError, match=r"x.item: has a header but no data rows"):
        read_recbole_item(p)


def test_undetectable_format_asks_for_format_flag(tmp_path):
    from gramc.data.readers import detect_sequence_format

    p = tmp_path / "weird.txt"
    p.write_text("just-one-token\n")
    with pytest.raises(DataError, match=r"weird.txt: cannot tell the sequence format.*--format"):
        detect_sequence_format(p)


@pytest.mark.parametrize("compress", ["gzip", "bz2", "lzma"])
def test_compressed_input_is_read_by_its_magic_bytes_whatever_its_name(tmp_path, compress):
    import bz2
    import lzma

    text = b"u1 a b c d\nu2 a x b\n"
    data = {"gzip": gzip.compress, "bz2": bz2.compress, "lzma": lzma.compress}[compress](text)
    p = tmp_path / "user_sequence.txt"  # compressed data under a plain-text name
    p.write_bytes(data)
    assert read_gram_sequences(p).sequences == [["a", "b", "c", "d"], ["a", "x", "b"]]
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"user_sequence.txt: (truncated|corrupt) (gzip|bzip2|xz) file"):
        read_gram_sequences(p)


@pytest.mark.parametrize("head,name", [(b"PK\x03\x04rest-of-zip", "zip"), (b"(\xb5/\xfdzstd-frame", "zstd")])
def test_archives_gramc_cannot_read_are_named(tmp_path, head, name):
    p = tmp_path / "user_sequence.txt"
    p.write_bytes(head)
    with pytest.raises(DataError, match=rf"user_sequence.txt: is a {name} file; .* extract it first"):
        read_gram_sequences(p)


def test_a_named_pipe_is_refused_saying_what_it_is(tmp_path):
    import os

    fifo = tmp_path / "seq.fifo"
    os.mkfifo(fifo)
    with pytest.raises(DataError, match=r"seq.fifo: is a named pipe or a process substitution .* regular file"):
        read_gram_sequences(fifo)
    with pytest.raises(DataError, match=r"nope.txt: file not found"):
        read_gram_sequences(tmp_path / "nope.txt")


def test_an_unclosed_quote_is_reported_where_it_opens(tmp_path):
    """RecBole files are tab-separated CSV: a quote left open used to swallow the lines after it."""
    from gramc.data.readers import read_recbole_item

    p = tmp_path / "x.item"
    p.write_text('item_id:token\ttitle:token\nA1\tfine\nA2\t"opens and never closes\nA3\tthird\nA4\tfourth\n',
                 encoding="utf-8")
    with pytest.raises(DataError, match=r"x.item:3: malformed CSV .*opens a quote .* never closes it"):
        read_recbole_item(p)
    p.write_text('item_id:token\ttitle:token\nA1\t"a ""quoted"" title"\nA2\tPrada "Candy" Spray\n', encoding="utf-8")
    assert {k: v["title"] for k, v in read_recbole_item(p).items()} == {"A1": 'a "quoted" title',
                                                                         "A2": 'Prada "Candy" Spray'}
