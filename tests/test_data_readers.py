"""Readers of every supported source format, on small fixture files written by the tests."""

from __future__ import annotations

import gzip
import json

import pytest

from gramc.config import Config
from gramc.data.dataset import DataError
from gramc.data.prepare import build_dataset
from gramc.data.readers import (Interaction, detect_item_format, detect_sequence_format, kcore,
                                parse_gram_text, read_amazon_meta, read_amazon_reviews,
                                read_gram_item_text, read_gram_sequences, read_recbole_inter,
                                read_recbole_item)


def write(path, text, gz=False):
    data = text.encode("utf-8")
    if gz:
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)
    return path


RECBOLE_ITEM = (
    "item_id:token\ttitle:token\tsales_type:token\tsales_rank:float\tcategories:token_seq\tprice:float\tbrand:token\n"
    "A1\tRose &amp; Oud Cream\tBeauty\t10486.0\t'Beauty', 'Skin Care', 'Face'\t5.04\tCOKA\n"
    'A2\tPrada "Candy" Spray\tBeauty\t78916.0\t"\'Beauty\', \'Fragrance\', ""Women\'s"""\t65.86\tPrada\n'
    "A3\tNo Brand Gel\tBeauty\t\t'Beauty'\t\t\n"
)


def test_gram_sequences(tmp_path):
    p = write(tmp_path / "user_sequence.txt", "u1 a b c\n\nu2 c a b d\n")
    s = read_gram_sequences(p)
    assert s.users == ["u1", "u2"] and s.sequences == [["a", "b", "c"], ["c", "a", "b", "d"]]
    assert detect_sequence_format(p) == "gram"


def test_gram_item_text(tmp_path):
    p = write(tmp_path / "item_plain_text.txt",
              "a title: nail polish; brand: opi; categories: beauty, makeup, nails; price: 12.5; salesrank: 344\n"
              "b title: gel; price: 3\n")
    items = read_gram_item_text(p)
    assert items["a"] == {"title": "nail polish", "brand": "opi", "categories": ["beauty", "makeup", "nails"],
                          "price": 12.5, "salesrank": 344}
    assert items["b"] == {"title": "gel", "price": 3}
    assert detect_item_format(p) == "gram-text"
    assert parse_gram_text("title: a; b; brand: x") == {"title": "a; b", "brand": "x"}


def test_recbole_inter_orders_by_time_with_stable_ties(tmp_path):
    p = write(tmp_path / "x.inter",
              "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
              "u1\ta\t5\t30\n"
              "u2\tb\t4\t10\n"
              "u1\tb\t5\t10\n"
              "u1\tc\t3\t20\n"
              "u1\td\t3\t20\n")  # c and d tie: file order c, d
    s = read_recbole_inter(p)
    assert s.users == ["u1", "u2"]
    assert s.sequences == [["b", "c", "d", "a"], ["b"]]
    assert detect_sequence_format(p) == "recbole-inter"


def test_recbole_item_csv_quoting_and_types(tmp_path):
    p = write(tmp_path / "x.item", RECBOLE_ITEM)
    items = read_recbole_item(p)
    assert items["A1"] == {"title": "Rose &amp; Oud Cream", "sales_type": "Beauty", "salesrank": 10486.0,
                           "categories": ["Beauty", "Skin Care", "Face"], "price": 5.04, "brand": "COKA"}
    assert items["A2"]["categories"] == ["Beauty", "Fragrance", "Women's"]
    assert items["A2"]["title"] == 'Prada "Candy" Spray'
    assert items["A3"] == {"title": "No Brand Gel", "sales_type": "Beauty", "categories": ["Beauty"]}
    assert detect_item_format(p) == "recbole-item"


def _review(u, i, t):
    return json.dumps({"reviewerID": u, "asin": i, "unixReviewTime": t, "overall": 5.0})


def test_amazon_reviews_gz_chronological_with_stable_ties(tmp_path):
    lines = [_review("u1", "c", 300), _review("u1", "a", 100), _review("u1", "b", 100), _review("u2", "a", 5)]
    p = write(tmp_path / "reviews_Beauty_5.json.gz", "\n".join(lines) + "\n", gz=True)
    s = read_amazon_reviews(p, k=0)
    assert s.users == ["u1", "u2"] and s.sequences == [["a", "b", "c"], ["a"]]
    assert detect_sequence_format(p) == "amazon-reviews"


def test_kcore_iterates_to_fixpoint():
    # k=2. Round 1 drops users u3 and u5 (1 interaction each); that leaves items y and z with 1
    # each -> round 2 drops them, which leaves u2 with none; round 3 changes nothing.
    pairs = [("u1", "x"), ("u1", "w"), ("u4", "x"), ("u4", "w"),
             ("u2", "y"), ("u2", "z"), ("u5", "y"), ("u3", "z")]
    inter = [Interaction(u, i, float(n), n) for n, (u, i) in enumerate(pairs)]
    kept, notes = kcore(inter, 2)
    assert sorted((x.user, x.item) for x in kept) == [("u1", "w"), ("u1", "x"), ("u4", "w"), ("u4", "x")]
    assert notes["rounds"] >= 3 and notes["users_dropped"] == 3 and notes["items_dropped"] == 2
    uc, ic = {}, {}
    for x in kept:
        uc[x.user] = uc.get(x.user, 0) + 1
        ic[x.item] = ic.get(x.item, 0) + 1
    assert min(uc.values()) >= 2 and min(ic.values()) >= 2


def test_amazon_meta_python_literals(tmp_path):
    lines = [
        "{'asin': 'a', 'title': 'Rose &amp; Oud', 'categories': [['Beauty', 'Makeup', 'Face'], ['Beauty', 'Nails']], "
        "'salesRank': {'Beauty': 1234}, 'price': 9.99, 'related': {'also_bought': ['b']}}",
        "{'asin': 'b', 'brand': \"L'Oreal\", 'categories': [['Beauty']]}",
    ]
    p = write(tmp_path / "meta_Beauty.json.gz", "\n".join(lines) + "\n", gz=True)
    items = read_amazon_meta(p)
    assert items["a"] == {"title": "Rose &amp; Oud", "categories": ["Beauty", "Makeup", "Face", "Nails"],
                          "salesrank": 1234, "price": 9.99}
    assert items["b"] == {"brand": "L'Oreal", "categories": ["Beauty"]}
    assert detect_item_format(p) == "amazon-meta"


def test_amazon_meta_never_evaluates_code(tmp_path):
    p = write(tmp_path / "meta_X.json", "{'asin': 'a', 'title': __import__('os').getcwd()}\n")
    with pytest.raises(DataError, match="meta_X.json:1"):
        read_amazon_meta(p)


def test_amazon_dumps_end_to_end_with_kcore(tmp_path):
    # 5 users x 5 items all reviewing each other (a 5-core) + one user/item pair below the core
    lines = [_review(f"u{u}", f"i{(u + j) % 5}", 1000 * u + j) for u in range(5) for j in range(5)]
    lines += [_review("lonely", "i0", 1), _review("u0", "rare", 99999)]
    rev = write(tmp_path / "reviews_Beauty_5.json.gz", "\n".join(lines) + "\n", gz=True)
    meta = write(tmp_path / "meta_Beauty.json.gz",
                 "\n".join(f"{{'asin': 'i{i}', 'title': 'item {i}'}}" for i in range(5)) + "\n", gz=True)
    ds = build_dataset(rev, meta, Config())
    assert ds.num_users == 5 and ds.num_items == 5 and ds.num_interactions == 25
    assert ds.users[0] == "u0" and [ds.item_ids[i] for i in ds.sequences[0]] == ["i0", "i1", "i2", "i3", "i4"]
    k = ds.meta["dropped"]["kcore"]
    assert k["users_dropped"] == 1 and k["items_dropped"] == 1 and k["interactions_dropped"] == 2
    assert ds.item_fields[0] == {"title": "item 0"}


@pytest.mark.parametrize("seq_name,seq_text", [
    ("user_sequence.txt", "u1 A1 A2 A3\nu2 A3 A2 A1 A2\n"),
    ("x.inter", "user_id:token\titem_id:token\ttimestamp:float\n"
                "u1\tA1\t1\nu1\tA2\t2\nu1\tA3\t3\nu2\tA3\t1\nu2\tA2\t2\nu2\tA1\t3\nu2\tA2\t4\n"),
])
@pytest.mark.parametrize("item_name,item_text", [
    ("x.item", RECBOLE_ITEM),
    ("item_plain_text.txt", "A1 title: rose cream\nA2 title: candy\nA3 title: gel\n"),
])
def test_any_sequence_source_with_any_item_source(tmp_path, seq_name, seq_text, item_name, item_text):
    seq = write(tmp_path / seq_name, seq_text)
    items = write(tmp_path / item_name, item_text)
    ds = build_dataset(seq, items, Config())
    assert ds.users == ["u1", "u2"] and ds.item_ids == ["A1", "A2", "A3"]
    assert ds.sequences == [[0, 1, 2], [2, 1, 0, 1]]
    assert all(f["title"] for f in ds.item_fields)


def test_forced_format_overrides_detection(tmp_path):
    # a GRAM sequence file with an unhelpful name and content that looks like nothing in particular
    p = write(tmp_path / "data.bin", "u1 a b c\n")
    ds = build_dataset(p, None, Config(), seq_format="gram")
    assert ds.item_ids == ["a", "b", "c"] and ds.item_fields == [{}, {}, {}]


def test_utf8_byte_order_mark_is_ignored(tmp_path):
    p = tmp_path / "x.inter"
    p.write_bytes("\ufeffuser_id:token\titem_id:token\nu\ta\n".encode("utf-8"))
    assert read_recbole_inter(p).sequences == [["a"]]


BAD_CHARS = [("\u00a0", "NO-BREAK SPACE"), ("\u2009", "THIN SPACE"), ("\u200b", "ZERO WIDTH SPACE"),
             ("\x07", "a control character")]


@pytest.mark.parametrize("ch,name", BAD_CHARS)
def test_ids_with_whitespace_or_control_characters_are_refused_in_every_reader(tmp_path, ch, name):
    """One ID with a Unicode space or a control character in it: each reader names file:line and the
    character, instead of splitting it into two items or keeping an ID that looks like another."""
    bad = f"B{ch}X"
    cases = [
        (read_gram_sequences, write(tmp_path / "seq.txt", f"u1 A B C\nu2 A {bad} C\n"), 2),
        (read_gram_sequences, write(tmp_path / "seq_user.txt", f"u1 A B C\nu{ch}2 A B C\n"), 2),
        (read_recbole_inter, write(tmp_path / "x.inter", "user_id:token\titem_id:token\ttimestamp:float\n"
                                                        f"u1\tA\t1\nu1\t{bad}\t2\n"), 3),
        (read_amazon_reviews, write(tmp_path / "r.json", json.dumps({"reviewerID": "u1", "asin": bad,
                                                                      "unixReviewTime": 1}) + "\n"), 1),
        (read_gram_item_text, write(tmp_path / "items.txt", f"A title: a\n{bad} title: b\n"), 2),
        (read_recbole_item, write(tmp_path / "x.item", f"item_id:token\ttitle:token\nA\ta\n{bad}\tb\n"), 3),
        (read_amazon_meta, write(tmp_path / "meta.json", str({"asin": bad, "title": "b"}) + "\n"), 1),
    ]
    for reader, path, line in cases:
        with pytest.raises(DataError, match=rf"{path.name}:{line}: .*ID .* contains {name}") as err:
            reader(path) if reader is not read_amazon_reviews else reader(path, k=1)
        assert "whitespace or control characters" in str(err.value), reader.__name__


def test_plain_spaces_and_tabs_still_separate_gram_sequences(tmp_path):
    seqs = read_gram_sequences(write(tmp_path / "seq.txt", "u1 A  B C\nu2 B C D \n"))
    assert seqs.users == ["u1", "u2"] and seqs.sequences == [["A", "B", "C"], ["B", "C", "D"]]
