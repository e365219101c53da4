"""GRAM's own passage strings and their tokenisation, as a reference for `PassageCache`.

GRAM renders each passage as text and tokenises it with the T5 fast tokenizer (spec §2.1-2.4):

    user:  What would user purchase after ID_1 ; ID_2 ; ... ; ID_m ?      (most recent ID first)
    item:  item: ID; similar items: ID_1, ID_2, ..., ID_k; <item text>

where every ID is its raw `|tok|tok|...` string. The token ids of the pieces `|` and `▁|` are then
removed, the rest is cut to 128 tokens, and when `</s>` was cut the last position becomes `</s>`.
gramc never builds these strings for training (the cache assembles token ids); this module exists
so that tests and `bench/passage_tokens.py` can check the two give the same tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

GRAM_PASSAGE_LEN = 128


def user_string(id_strings: Sequence[str]) -> str:
    """GRAM's user passage; `id_strings` most recent first."""
    return "What would user purchase after " + " ; ".join(id_strings) + " ?"


def item_string(own: str, similar: Sequence[str], text: str, id_linking: bool = True) -> str:
    """GRAM's item passage (CF verbalisation, then ID linking, as indexing.py builds it)."""
    body = "similar items: " + ", ".join(similar) + "; " + text
    return f"item: {own}; {body}" if id_linking else body


@dataclass
class GramTokens:
    """GRAM's tokens of one passage: `tokens` after truncation, and whether nothing was cut."""

    tokens: list[int]
    fits: bool
    full_len: int  # tokens (separators dropped, `</s>` included) before truncation


def gram_tokens(hf_tokenizer, text: str, max_len: int = GRAM_PASSAGE_LEN) -> GramTokens:
    """Tokenise `text` as GRAM's collator does, with a `transformers` T5 tokenizer."""
    eos = hf_tokenizer.eos_token_id
    drop = {hf_tokenizer.convert_tokens_to_ids("|"), hf_tokenizer.convert_tokens_to_ids("▁|")}
    ids = [t for t in hf_tokenizer(text, max_length=999, truncation=True)["input_ids"] if t not in drop]
    full = len(ids)
    ids = ids[:max_len]
    if eos not in ids:
        ids[-1] = eos
    return GramTokens(tokens=ids, fits=full <= max_len, full_len=full)
