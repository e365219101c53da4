"""The tensor trie against a reference dict trie, and its error messages."""

from __future__ import annotations

import random

import pytest
import torch

from gramc.ids.trie import Trie, trie_for


def random_catalog(n: int, seed: int, first: int = 6, deeper: int = 4, max_levels: int = 4) -> list[tuple[int, ...]]:
    """Unique targets (tokens + eos 1) of 1..max_levels levels with many shared prefixes."""
    rng = random.Random(seed)
    out: set[tuple[int, ...]] = set()
    while len(out) < n:
        levels = rng.randint(1, max_levels)
        seq = [rng.randint(2, 1 + first)] + [rng.randint(2, 1 + deeper) for _ in range(levels - 1)]
        out.add(tuple(seq) + (1,))
    return sorted(out, key=lambda s: rng.random())


def dict_trie(targets):
    root: dict = {}
    for i, t in enumerate(targets):
        node = root
        for tok in t:
            node = node.setdefault(tok, {})
        node["item"] = i
    return root


def ref_allowed(root, prefix):
    node = root
    for t in prefix:
        if t not in node:
            return []
        node = node[t]
    return sorted(k for k in node if k != "item")


def test_allowed_tokens_match_reference_dict_trie():
    targets = random_catalog(80, seed=1)
    # make sure one ID is a strict prefix of another (both must stay reachable)
    assert any(a[:-1] == b[: len(a) - 1] and len(b) > len(a) for a in targets for b in targets)
    trie = Trie.build(targets)
    ref = dict_trie(targets)
    rng = random.Random(2)
    prefixes = [t[:k] for t in targets for k in range(len(t) + 1)]
    prefixes += [tuple(rng.randint(1, 8) for _ in range(rng.randint(0, 5))) for _ in range(200)]
    for p in prefixes:
        assert trie.allowed_tokens(p) == ref_allowed(ref, p), p
    # batched gather agrees with the per-prefix answer
    nodes = torch.tensor([trie.walk(p) for p in prefixes])
    toks, nxt = trie.allowed(nodes)
    for p, row, nrow in zip(prefixes, toks.tolist(), nxt.tolist()):
        got = [t for t in row if t >= 0]
        assert got == ref_allowed(ref, p)
        assert all((t >= 0) == (n >= 0) for t, n in zip(row, nrow))
    # leaves map back to items, and only full targets do
    for i, t in enumerate(targets):
        assert trie.item_of(t) == i
        assert trie.item_of(t[:-1]) == i
        leaf = trie.walk(t)
        assert int(trie.item_at_leaf[leaf]) == i
        assert trie.allowed_tokens(t) == []
    assert int((trie.item_at_leaf >= 0).sum()) == len(targets)
    assert trie.max_len == max(len(t) for t in targets)


def test_mask_scatters_minus_inf_outside_children():
    targets = random_catalog(30, seed=3)
    trie = Trie.build(targets)
    ref = dict_trie(targets)
    prefixes = [(), targets[0][:1], targets[5][:2], (99,)]
    nodes = torch.tensor([trie.walk(p) for p in prefixes])
    m = trie.mask(nodes, vocab_size=12)
    for p, row in zip(prefixes, m):
        assert torch.nonzero(row == 0).flatten().tolist() == ref_allowed(ref, p)
        assert torch.isinf(row).sum() == 12 - len(ref_allowed(ref, p))


def test_bad_targets_name_the_item():
    with pytest.raises(ValueError, match="items 0 and 2 have the same ID"):
        Trie.build([(3, 4, 1), (3, 5, 1), (3, 4, 1)])
    with pytest.raises(ValueError, match="item 1: .* must end with eos"):
        Trie.build([(3, 4, 1), (3, 5)])
    with pytest.raises(ValueError, match="item 0: .* eos .* before its end"):
        Trie.build([(3, 1, 4, 1)])


class _Ids:
    def __init__(self, targets):
        self.tokens = [t[:-1] for t in targets]

    def target(self, i):
        return tuple(self.tokens[i]) + (1,)


def test_trie_is_cached_per_id_table():
    targets = random_catalog(20, seed=4)
    a = trie_for(_Ids(targets))
    b = trie_for(_Ids(list(targets)))
    assert a is b
    c = trie_for(_Ids(targets[:-1]))
    assert c is not a and c.num_items == len(targets) - 1


@pytest.mark.shared
def test_beauty_gram_ids_trie():
    from pathlib import Path

    from gramc.config import load_config
    from gramc.data.prepare import build_dataset
    from gramc.ids.itemids import load_gram_ids
    from gramc.ids.tokenizer import load_tokenizer

    shared = Path(__file__).resolve().parents[1] / ".." / "shared"
    beauty = shared / "datasets" / "amazon-beauty"
    if not beauty.is_dir():
        pytest.skip("../shared/datasets/amazon-beauty is not available")
    ds = build_dataset(beauty / "user_sequence.txt", None, load_config(None, []))
    tok = load_tokenizer(shared / "tokenizers" / "t5-base-spm")
    ids = load_gram_ids(beauty / "item_generative_indexing_hierarchy_v1_c128_l7_len32768_split.txt", ds, tok)
    trie = trie_for(ids)
    assert trie.num_items == ds.num_items == 12101
    assert int((trie.item_at_leaf >= 0).sum()) == 12101
    lengths = [len(ids.target(i)) for i in range(ds.num_items)]
    assert trie.max_len == max(lengths) == 9 and min(lengths) == 8
    assert sum(n == 9 for n in lengths) == 433  # GRAM's suffix level
    assert int(trie.num_children[0]) == 108  # distinct level-1 tokens
    for i in range(0, ds.num_items, 97):
        assert trie.item_of(ids.target(i)) == i


def test_trie_for_an_id_table_hashes_its_targets_once(tmp_path, monkeypatch):
    """The cache key of an ItemIds is its own fingerprint: a repeated call neither rebuilds the
    targets nor hashes them; a table with other tokens still gets its own trie."""
    import gramc.ids.itemids as itemids_mod
    import gramc.ids.trie as trie_mod
    from gramc.ids.itemids import ItemIds
    from test_ids_itemids import tiny_tokenizer

    tok = tiny_tokenizer()
    ids = ItemIds(["A1", "A2", "A3"], [("▁loss", "▁brake"), ("▁loss", "brake", "0"), ("▁oil", "ren")], tok)
    first = trie_for(ids)
    hashed, targets = [], []
    real_fp, real_target = trie_mod.targets_fingerprint, ItemIds.target
    monkeypatch.setattr(trie_mod, "targets_fingerprint", lambda *a, **k: hashed.append(1) or real_fp(*a, **k))
    monkeypatch.setattr(itemids_mod, "targets_fingerprint", lambda *a, **k: hashed.append(1) or real_fp(*a, **k))
    monkeypatch.setattr(ItemIds, "target", lambda self, i: targets.append(i) or real_target(self, i))
    assert trie_for(ids) is first and trie_for(ids) is first
    assert hashed == [] and targets == []  # the shortcut fired: no hashing, no target list
    other = object.__new__(ItemIds)  # a copy of the table whose tokens differ (as the doctor's test makes)
    other.__dict__.update(ids.__dict__)
    other.tokens = (ids.tokens[0], ids.tokens[2], ids.tokens[1])
    swapped = trie_for(other)
    assert swapped is not first and hashed and int(swapped.item_at_leaf[swapped.item_at_leaf >= 0].numel()) == 3
    assert ItemIds.fingerprint.fget(other) != ItemIds.fingerprint.fget(ids)
