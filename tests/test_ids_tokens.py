"""One definition of the token constants and of the cache reorder: everything else imports them."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import torch
import torch.nn.functional as F

from gramc.ids import tokens
from gramc.ids.tokenizer import Tokenizer
from gramc.ids.trie import Trie

SRC = Path(__file__).resolve().parents[1] / "src" / "gramc"


def _sources() -> dict[str, str]:
    return {str(p.relative_to(SRC)): p.read_text(encoding="utf-8") for p in SRC.rglob("*.py")}


def test_ignore_index_is_torch_and_hf_label_padding():
    # labels stay interchangeable with PyTorch's / Hugging Face's (-100 is their default ignore_index)
    assert inspect.signature(F.cross_entropy).parameters["ignore_index"].default == tokens.IGNORE_INDEX
    logits = torch.randn(3, 7)
    labels = torch.tensor([1, tokens.IGNORE_INDEX, 4])
    assert torch.allclose(F.cross_entropy(logits, labels), F.cross_entropy(logits[[0, 2]], labels[[0, 2]]))


def test_special_ids_are_the_ones_the_tokenizer_and_trie_use():
    assert (Tokenizer.pad_id, Tokenizer.eos_id, Tokenizer.unk_id) == (tokens.PAD_ID, tokens.EOS_ID, tokens.UNK_ID)
    trie = Trie.build([[5, tokens.EOS_ID], [6, 7, tokens.EOS_ID]])
    assert trie.eos_id == tokens.EOS_ID
    labels = torch.tensor([[6, 7, tokens.EOS_ID], [5, tokens.EOS_ID, tokens.IGNORE_INDEX]])
    assert trie.prefix_nodes(labels)[1, 2].item() == -1  # the default ignore index is the shared one


def test_token_constants_are_defined_once():
    defined = re.compile(r"^(PAD_ID|EOS_ID|UNK_ID|IGNORE|IGNORE_INDEX)\s*(,|=)", re.M)
    owners = sorted(name for name, text in _sources().items() if defined.search(text))
    assert owners == ["ids/tokens.py"]


def test_no_literal_label_padding_left():
    # io.py's AT_FDCWD (-100 in Linux's ABI) is a file-descriptor constant, not a label
    hits = sorted(name for name, text in _sources().items()
                  if re.search(r"(?<![\w.])-100\b", text) and name not in ("ids/tokens.py", "io.py"))
    assert hits == []


def test_one_reorder_cache():
    owners = sorted(name for name, text in _sources().items() if re.search(r"^def reorder_cache\b", text, re.M))
    assert owners == ["model/t5.py"]
