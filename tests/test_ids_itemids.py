"""GRAM ID files: parsing, token mapping round trip, and every violation named with its line."""

from pathlib import Path

import pytest

from gramc.checks import Report
from gramc.data.dataset import SeqDataset
from gramc.ids.itemids import (IdsError, check_ids, load_gram_ids, pieces_to_tokens,
                               tokens_to_pieces)
from gramc.ids.tokenizer import Tokenizer, load_tokenizer

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
BEAUTY = SHARED / "datasets" / "amazon-beauty"
GRAM_FILE = BEAUTY / "item_generative_indexing_hierarchy_v1_c128_l7_len32768_split.txt"

PIECES = ["▁loss", "▁brake", "brake", "▁fur", "ren", "▁scalp", "▁oil", "▁nail", "0", "1", "▁", "x"]


def tiny_tokenizer() -> Tokenizer:
    """A hand-made unigram vocabulary (T5 special layout), so these tests need no shared files."""
    from tokenizers import Tokenizer as Backend, decoders, models, pre_tokenizers

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + [(p, -2.0) for p in PIECES]
    backend = Backend(models.Unigram(vocab, unk_id=2))
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    backend.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    return Tokenizer(backend, source="tiny")


def tiny_dataset(items=("A1", "A2", "A3", "A4")) -> SeqDataset:
    items = list(items)
    return SeqDataset(items, [{} for _ in items], ["u1", "u2"],
                      [[0, 1, 2], [3, 2, 1]] if len(items) >= 4 else [[0, 1], [1, 2]])


GOOD = ("A1 |▁loss|▁brake\n"
        "A2 |▁loss|brake|0\n"
        "A3 |▁loss|brake|1\n"
        "A4 |▁oil|ren|▁scalp\n")


def write(tmp_path, text, name="ids.txt"):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_load_and_round_trip(tmp_path):
    tok, ds = tiny_tokenizer(), tiny_dataset()
    ids = load_gram_ids(write(tmp_path, GOOD), ds, tok)
    assert ids.pieces[1] == ("▁loss", "brake", "0")
    assert ids.tokens[0] == (tok.piece_to_id("▁loss"), tok.piece_to_id("▁brake"))
    assert ids.max_len == 4 and ids.num_levels(3) == 3
    for i in range(ds.num_items):
        assert ids.target(i) == ids.tokens[i] + (1,)
        assert ids.item_of(ids.tokens[i]) == i
        assert ids.item_of(list(ids.target(i))) == i
        assert tokens_to_pieces(ids.tokens[i], tok) == ids.pieces[i]
        assert pieces_to_tokens(ids.pieces[i], tok) == ids.tokens[i]
    assert ids.item_of([tok.piece_to_id("▁loss")]) is None  # a prefix is not an item
    assert ids.item_of([0] + list(ids.tokens[0])) is None  # exact: no decoder-start token
    # save writes GRAM's format back byte for byte (dataset order == file order here)
    ids.save(tmp_path / "out.txt")
    assert (tmp_path / "out.txt").read_text(encoding="utf-8") == GOOD
    assert load_gram_ids(tmp_path / "out.txt", ds, tok).tokens == ids.tokens
    assert Report(check_ids(ids, ds, tok)).ok


def test_dataset_order_not_file_order(tmp_path):
    tok = tiny_tokenizer()
    ds = tiny_dataset(("A4", "A3", "A2", "A1"))
    ids = load_gram_ids(write(tmp_path, GOOD), ds, tok)
    assert ids.item_ids == ["A4", "A3", "A2", "A1"]
    assert ids.pieces[0] == ("▁oil", "ren", "▁scalp")


@pytest.mark.parametrize("bad_line, pattern", [
    ("A4 |▁oil|▁lossbrake|▁scalp\n", r"ids.txt:4: A4 level 2 '▁lossbrake': multi-piece level"),
    ("A4 |▁oil|qqq\n", r"ids.txt:4: A4 level 2 'qqq': unknown piece"),
    ("A4 |▁loss|▁brake\n", r"duplicate ID \|▁loss\|▁brake: shared by A1 \(line 1\), A4 \(line 4\)"),
    ("A4 ▁oil ren\n", r"ids.txt:4: malformed line"),
    ("A4 |▁oil||ren\n", r"ids.txt:4: malformed line"),
    ("A4 |</s>\n", r"ids.txt:4: A4 level 1 '</s>': is the special token"),
])
def test_bad_line_is_named(tmp_path, bad_line, pattern):
    tok, ds = tiny_tokenizer(), tiny_dataset()
    path = write(tmp_path, GOOD.rsplit("A4", 1)[0] + bad_line)
    with pytest.raises(IdsError, match=pattern):
        load_gram_ids(path, ds, tok)
    report = Report(check_ids(path, ds, tok))
    assert not report.ok and report.exit_code == 1


def test_duplicate_asin_and_missing_item(tmp_path):
    tok, ds = tiny_tokenizer(), tiny_dataset()
    path = write(tmp_path, GOOD + "A2 |▁nail\n")
    with pytest.raises(IdsError, match=r"ids.txt:5: duplicate ASIN line: A2 already has an ID on line 2"):
        load_gram_ids(path, ds, tok)
    path = write(tmp_path, "".join(GOOD.splitlines(keepends=True)[:3]))
    with pytest.raises(IdsError, match=r"missing item: 1 dataset items have no ID line \(A4\)"):
        load_gram_ids(path, ds, tok)
    report = Report(check_ids(path, ds, tok))
    assert report.failed_names() == ["ids.missing_items", "ids.unique_ids"]


def test_decoded_collision_is_a_violation(tmp_path):
    # '▁loss'+'ren' and '▁lossren' do not exist; use ('▁fur','ren') vs ('▁fur', 'ren') split as
    # different pieces that decode alike: '▁brake' vs '▁'+'brake'
    tok, ds = tiny_tokenizer(), tiny_dataset()
    path = write(tmp_path, "A1 |▁oil|▁brake\nA2 |▁oil|▁|brake\nA3 |▁nail\nA4 |▁fur\n")
    with pytest.raises(IdsError, match="decoded IDs collide"):
        load_gram_ids(path, ds, tok)
    assert "ids.decoded_collisions" in Report(check_ids(path, ds, tok)).failed_names()


def test_extra_items_only_warn(tmp_path):
    tok, ds = tiny_tokenizer(), tiny_dataset()
    path = write(tmp_path, GOOD + "ZZ |▁nail\n")
    assert load_gram_ids(path, ds, tok).num_items == 4
    report = Report(check_ids(path, ds, tok))
    assert report.ok and report.by_name("ids.extra_items").level == "warn"


def test_check_reports_statistics(tmp_path):
    tok, ds = tiny_tokenizer(), tiny_dataset()
    report = Report(check_ids(write(tmp_path, GOOD), ds, tok))
    assert report.by_name("ids.levels").value == {"2": 1, "3": 3}
    assert report.by_name("ids.level1_tokens").value == 2
    assert report.by_name("ids.items_per_level1_token").value == {"min": 1, "median": 2.0, "max": 3}
    assert report.by_name("ids.branching").value == {"1": 2.0, "2": 1.5, "3": 1.5}


def beauty_dataset() -> SeqDataset:
    """Beauty's sequences parsed directly (items in order of first appearance, no metadata)."""
    items, index, users, seqs = [], {}, [], []
    for line in open(BEAUTY / "user_sequence.txt", encoding="utf-8"):
        user, *asins = line.split()
        seq = []
        for a in asins:
            if a not in index:
                index[a] = len(items)
                items.append(a)
            seq.append(index[a])
        users.append(user)
        seqs.append(seq)
    return SeqDataset(items, [{} for _ in items], users, seqs)


@pytest.mark.shared
def test_gram_beauty_file_passes_with_t5_vocabulary():
    tok = load_tokenizer(SHARED / "tokenizers" / "t5-base-spm")
    ds = beauty_dataset()
    ids = load_gram_ids(GRAM_FILE, ds, tok)
    assert ds.num_items == 12101 and len(set(ids.tokens)) == 12101
    assert ids.max_len == 9
    for i in range(ds.num_items):
        assert ids.item_of(ids.target(i)) == i
        assert tokens_to_pieces(ids.tokens[i], tok) == ids.pieces[i]
    report = Report(check_ids(GRAM_FILE, ds, tok))
    assert report.ok, report.table()
    assert report.by_name("ids.unique_ids").value == 12101
    assert report.by_name("ids.items_with_extra_level").value == 433
    assert report.by_name("ids.levels").value == {"7": 11668, "8": 433}
    assert report.by_name("ids.level1_tokens").value == 108
