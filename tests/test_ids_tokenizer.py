"""Tokenizer wrapper: T5 vocabulary loading, trained unigram tokenizer save/load, special ids."""

from pathlib import Path

import pytest

from gramc.ids.tokenizer import TokenizerError, Tokenizer, load_tokenizer, train_tokenizer

ROOT = Path(__file__).resolve().parents[1]
T5 = ROOT.parent / "shared" / "tokenizers" / "t5-base-spm"

TEXTS = [f"title: shampoo {w} for dry hair; brand: acme{i % 7}; categories: beauty, hair care; price: {i}.99"
         for i, w in enumerate(["argan", "coconut", "mint", "rose", "tea tree", "lavender"] * 30)]


def test_trained_tokenizer_round_trip(tmp_path):
    tok = train_tokenizer(TEXTS, vocab_size=120, out_dir=tmp_path / "tok")
    assert (tok.pad_id, tok.eos_id, tok.unk_id) == (0, 1, 2)
    assert [tok.id_to_piece(i) for i in range(3)] == ["<pad>", "</s>", "<unk>"]
    assert tok.piece_to_id("</s>") == 1 and tok.piece_to_id("no-such-piece-xyz") is None
    again = load_tokenizer(tmp_path / "tok")
    assert again.fingerprint == tok.fingerprint
    assert again.vocab_size == tok.vocab_size
    text = "title: shampoo rose for dry hair; price: 12.99"
    ids = tok.encode(text)
    assert ids == again.encode(text) and 1 not in ids and len(ids) > 3
    assert again.decode(ids) == text
    # the post-processor appends </s> only when asked for special tokens
    assert tok.backend.encode(text).ids == ids + [1]
    # single digits are pieces (needed for de-duplication levels)
    assert all(tok.piece_to_id(d) is not None for d in "0123456789")


def test_trained_tokenizer_fingerprint_depends_on_vocabulary(tmp_path):
    a = train_tokenizer(TEXTS, vocab_size=120)
    b = train_tokenizer(TEXTS[:40] + ["completely different words here"] * 20, vocab_size=100)
    assert a.fingerprint != b.fingerprint and len(a.fingerprint) == 64
    # the unigram trainer's scores differ in the last bits between runs; the fingerprint must not
    assert all(train_tokenizer(TEXTS, vocab_size=120).fingerprint == a.fingerprint for _ in range(3))


def test_transformers_can_load_saved_tokenizer(tmp_path):
    from transformers import AutoTokenizer

    tok = train_tokenizer(TEXTS, vocab_size=120, out_dir=tmp_path / "tok")
    hf = AutoTokenizer.from_pretrained(str(tmp_path / "tok"))
    assert hf.pad_token_id == 0 and hf.eos_token_id == 1 and hf.unk_token_id == 2
    assert hf.encode("mint hair", add_special_tokens=False) == tok.encode("mint hair")


def test_bad_specs_give_clear_errors(tmp_path):
    with pytest.raises(TokenizerError, match="does not exist"):
        load_tokenizer(tmp_path / "nope")
    with pytest.raises(TokenizerError, match="vocab_size"):
        train_tokenizer(TEXTS, vocab_size=3)
    # a vocabulary without T5's special layout is rejected, naming the id
    from tokenizers import Tokenizer as Backend, models

    backend = Backend(models.WordLevel({"a": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}, unk_token="<unk>"))
    with pytest.raises(TokenizerError, match="id 0 is 'a'"):
        Tokenizer(backend, source="x")


@pytest.mark.shared
def test_t5_vocabulary_matches_transformers():
    from transformers import AutoTokenizer

    tok = load_tokenizer(T5)
    hf = AutoTokenizer.from_pretrained(str(T5))
    assert tok.vocab_size == 32100
    assert tok.piece_to_id("▁loss") == 1453 and tok.piece_to_id("ren") == 1536
    assert tok.id_to_piece(1453) == "▁loss"
    text = "title: wawo 15 color professionl makeup eyeshadow; brand: coka"
    assert tok.encode(text) == hf.encode(text, add_special_tokens=False)
    assert tok.is_special(32000) and not tok.is_special(1453) and tok.is_special(0)
    # the saved copy keeps the fingerprint
    assert load_tokenizer(str(T5 / "tokenizer.json")).fingerprint == tok.fingerprint
