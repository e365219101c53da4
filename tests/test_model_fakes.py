"""Small stand-ins shared by the model tests: a word tokenizer, fake item IDs, a synthetic dataset.

They implement exactly the parts of `gramc.ids` / `gramc.data` the model stage relies on, so the
model tests run in milliseconds and do not depend on the other stages.
"""

from __future__ import annotations

import random
import zlib

from gramc.config import Config
from gramc.data.dataset import SeqDataset

VOCAB = 1300  # fake vocabulary: words 100..899, ID tokens 1000..1299


class FakeTokenizer:
    """Word-level hashing tokenizer; `frozen=True` makes every encode call fail."""

    fingerprint = "fake-tokenizer-v1"
    vocab_size = VOCAB

    def __init__(self) -> None:
        self.frozen = False
        self.calls = 0

    def encode(self, text: str) -> list[int]:
        if self.frozen:
            raise AssertionError("tokenizer called after the passage cache was built")
        self.calls += 1
        words = text.replace(";", " ; ").replace(",", " , ").replace("?", " ? ").split()
        return [100 + zlib.crc32(w.encode()) % 800 for w in words]

    def separator_ids(self) -> set[int]:
        return {100 + zlib.crc32(b"|") % 800}

    def glue(self, token: int, mark: str) -> list[int]:
        """A mark written against a token: that token, then the mark's own id in 900..999 (a glued
        mark differs from a standalone one, as in SentencePiece)."""
        if self.frozen:
            raise AssertionError("tokenizer called after the passage cache was built")
        return [token, 900 + zlib.crc32(mark.encode()) % 100]


class FakeIds:
    """Unique IDs of 3 levels (every 7th item gets a 4th suffix level)."""

    def __init__(self, n: int) -> None:
        self.tokens = []
        for i in range(n):
            t = tuple(1000 + 100 * lv + (i // 20 ** lv) % 20 for lv in range(3))
            if i % 7 == 0:
                t = t + (1299,)
            self.tokens.append(t)

    def target(self, i: int) -> tuple[int, ...]:
        return tuple(self.tokens[i]) + (1,)


def make_dataset(num_users: int = 12, num_items: int = 40, min_len: int = 4, max_len: int = 14,
                 seed: int = 0) -> SeqDataset:
    rng = random.Random(seed)
    seqs = [[rng.randrange(num_items) for _ in range(rng.randint(min_len, max_len))] for _ in range(num_users)]
    # dataset order = first appearance; make sure every item appears once
    seqs[0] = list(range(num_items)) + seqs[0]
    return SeqDataset(item_ids=[f"I{i}" for i in range(num_items)], item_fields=[{} for _ in range(num_items)],
                      users=[f"U{u}" for u in range(num_users)], sequences=seqs)


def make_texts(n: int, words: int = 12) -> list[str]:
    return [f"title: item {i} " + " ".join(f"w{(i * 31 + j) % 97}" for j in range(words)) for i in range(n)]


def make_similar(n: int, k: int = 5) -> list[list[int]]:
    return [[(i + d) % n for d in range(1, k + 1)] for i in range(n)]


def tiny_config(**model_overrides) -> Config:
    cfg = Config()
    cfg.data.max_his = 8
    cfg.model.preset = "tiny"
    cfg.model.dropout = 0.0
    cfg.model.similar_items = 3
    cfg.model.passage_len = 40
    cfg.model.user_passage_len = 48
    cfg.model.prefix.num_items = 3
    for k, v in model_overrides.items():
        setattr(cfg.model, k, v)
    return cfg


def test_fake_ids_are_unique():
    ids = FakeIds(300)
    assert len(set(ids.tokens)) == 300
