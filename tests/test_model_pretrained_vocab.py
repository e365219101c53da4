"""Pretrained weights only with their own vocabulary (model.pretrained + ids.tokenizer).

A tiny random-weight HF T5 is saved with the T5 vocabulary (../shared) as if it were a pretrained
checkpoint; it is loaded through `model.pretrained=<folder>`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from gramc.config import load_config
from gramc.data.dataset import DataError
from gramc.ids.tokenizer import load_tokenizer, train_tokenizer, vocabulary_mismatch
from gramc.model.assets import Assets, check_pretrained_vocabulary
from gramc.model.gramc import build_backbone

T5_VOCAB = Path(__file__).resolve().parents[1] / ".." / "shared" / "tokenizers" / "t5-base-spm"

pytestmark = pytest.mark.skipif(not (T5_VOCAB / "tokenizer.json").is_file(), reason="../shared T5 vocabulary not present")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A t5-small-like folder: config.json + model.safetensors (random tiny dims, 32,128 rows) + tokenizer."""
    from transformers import T5Config, T5ForConditionalGeneration

    folder = tmp_path_factory.mktemp("ckpt") / "tiny-t5"
    torch.manual_seed(0)
    hf = T5ForConditionalGeneration(T5Config(vocab_size=32128, d_model=16, d_kv=4, d_ff=32, num_layers=1,
                                             num_decoder_layers=1, num_heads=2, decoder_start_token_id=0))
    hf.save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "spiece.model"):
        shutil.copy(T5_VOCAB / name, folder / name)
    return folder


def _cfg(folder, *extra):
    return load_config(None, ["model.preset=pretrained", f"model.pretrained={folder}", "model.dropout=0.0", *extra])


def test_default_tokenizer_is_the_checkpoints_own(checkpoint):
    cfg = _cfg(checkpoint)
    assert cfg.ids.tokenizer == str(checkpoint)
    tok = load_tokenizer(cfg.ids.tokenizer)
    check_pretrained_vocabulary(cfg, tok)
    assert vocabulary_mismatch(tok, load_tokenizer(T5_VOCAB)) == ""


def test_logits_equal_huggingface(checkpoint):
    from transformers import T5ForConditionalGeneration

    cfg = _cfg(checkpoint)
    ours = build_backbone(cfg.model, load_tokenizer(cfg.ids.tokenizer).vocab_size).eval()
    hf = T5ForConditionalGeneration.from_pretrained(checkpoint).eval()
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, 32100, (2, 9), generator=g)
    mask = torch.ones_like(ids, dtype=torch.bool)
    mask[1, 6:] = False
    labels = torch.randint(3, 32100, (2, 5), generator=g)
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask.long(), labels=labels).logits
        got = ours(ids, mask, labels)
    assert got.shape == ref.shape == (2, 5, 32128)
    assert ref.abs().max() > 1e-3
    assert (got - ref).abs().max().item() < 1e-4


def test_same_vocabulary_from_another_folder_is_accepted(checkpoint):
    cfg = _cfg(checkpoint, f"ids.tokenizer={T5_VOCAB}")
    check_pretrained_vocabulary(cfg, load_tokenizer(cfg.ids.tokenizer))


def test_trained_tokenizer_is_refused_naming_both(checkpoint, tmp_path):
    foreign = tmp_path / "trained"
    train_tokenizer([f"title: item {i} lipstick shade {i % 7} brand b{i % 5}" for i in range(200)], 60, out_dir=foreign)
    cfg = _cfg(checkpoint, f"ids.tokenizer={foreign}")
    with pytest.raises(DataError) as e:
        check_pretrained_vocabulary(cfg, load_tokenizer(foreign))
    assert str(foreign) in str(e.value) and str(checkpoint) in str(e.value)
    # and through Assets, before any ID or passage is built
    cfg.run.out = str(tmp_path / "run")
    with pytest.raises(DataError, match="not the vocabulary of model.pretrained"):
        Assets.from_config(cfg, progress=False)
    assert not (tmp_path / "run" / "passage_cache.pt").exists()


def test_same_size_other_pieces_is_refused(checkpoint, tmp_path):
    """Piece tables are compared, not sizes: two swapped pieces are a different vocabulary."""
    tree = json.loads((T5_VOCAB / "tokenizer.json").read_text(encoding="utf-8"))
    vocab = tree["model"]["vocab"]
    vocab[100], vocab[101] = vocab[101], vocab[100]
    (tmp_path / "swapped").mkdir()
    (tmp_path / "swapped" / "tokenizer.json").write_text(json.dumps(tree), encoding="utf-8")
    tok = load_tokenizer(tmp_path / "swapped")
    assert tok.vocab_size == load_tokenizer(T5_VOCAB).vocab_size
    with pytest.raises(DataError, match="id 100"):
        check_pretrained_vocabulary(_cfg(checkpoint, f"ids.tokenizer={tmp_path / 'swapped'}"), tok)


def test_checkpoint_without_tokenizer_cannot_be_checked(tmp_path, checkpoint):
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(checkpoint / name, bare / name)
    with pytest.raises(DataError, match="own tokenizer"):
        check_pretrained_vocabulary(_cfg(bare, f"ids.tokenizer={T5_VOCAB}"), load_tokenizer(T5_VOCAB))


def test_recipe_doctor_reads_a_local_checkpoint_folder(checkpoint, tmp_path):
    """No download: architecture from the folder's config.json, tokenizer against the folder's own."""
    from gramc.doctor.recipe import load_recipe, recipe_checks

    def checks(cfg):
        return {c.name: c for c in recipe_checks(cfg, load_recipe("gram-beauty"))}

    own = checks(_cfg(checkpoint))
    assert own["recipe.init"].level == "pass" and own["recipe.tokenizer_model"].level == "pass"
    assert own["recipe.tokenizer"].level == "pass"  # the T5 vocabulary, by piece-table sha256
    assert own["recipe.model"].level == "warn"  # tiny dims, not t5-small's
    foreign = tmp_path / "trained"
    train_tokenizer([f"title: item {i} shade {i % 7}" for i in range(200)], 60, out_dir=foreign)
    bad = checks(_cfg(checkpoint, f"ids.tokenizer={foreign}"))
    assert bad["recipe.tokenizer_model"].level == "fail" and bad["recipe.tokenizer"].level == "warn"
    flan = checks(load_config(None, ["model.preset=pretrained", "model.pretrained=google/flan-t5-small"]))
    assert flan["recipe.model"].level == "warn" and flan["recipe.init"].level == "warn"
