"""PassageCache and Collator: budgets, orders, rows, no tokenisation after the cache is built."""

from __future__ import annotations

import pytest
import torch

from gramc.data.splits import Sample, samples
from gramc.ids.tokens import EOS_ID, IGNORE_INDEX
from gramc.model.inputs import Collator, PassageCache

from test_model_fakes import FakeIds, FakeTokenizer, make_dataset, make_similar, make_texts, tiny_config

N_ITEMS = 40


def _cache(cfg=None, texts=None, similar=None, tok=None):
    cfg = cfg or tiny_config()
    tok = tok or FakeTokenizer()
    return PassageCache.build(tok, FakeIds(N_ITEMS), texts or make_texts(N_ITEMS),
                              similar if similar is not None else make_similar(N_ITEMS), cfg.model,
                              progress=False)


def _gcn_rows():
    return torch.arange(1, N_ITEMS + 1) * 1  # row = index + 1, as gramc writes it


def test_no_tokenizer_call_after_cache_is_built():
    cfg = tiny_config()
    tok = FakeTokenizer()
    cache = _cache(cfg, tok=tok)
    tok.frozen = True
    ds = make_dataset()
    batch_samples = samples(ds, "train", cfg.data.max_his)[:16]
    for dedupe in (True, False):
        Collator(cache, cfg, _gcn_rows(), dedupe=dedupe)(batch_samples)
    Collator(cache, cfg, _gcn_rows(), items="global")(batch_samples)
    cache.all_items()
    cache.truncation(batch_samples)


def test_item_passage_layout_and_eos():
    cfg = tiny_config(passage_len=128)
    ids = FakeIds(N_ITEMS)
    cache = _cache(cfg)
    tok = FakeTokenizer()
    i = 5
    row = cache.item_table[i, : cache.item_len[i]].tolist()
    sim = make_similar(N_ITEMS)[i][:3]
    # GRAM's `item: ID; similar items: ID, ID, ID; text`: each mark is glued to the ID before it
    def glued(j, mark):
        return list(ids.tokens[j][:-1]) + tok.glue(ids.tokens[j][-1], mark)

    expected = tok.encode("item:") + glued(i, ";") + tok.encode("similar items:")
    for n, j in enumerate(sim):
        expected += glued(j, "," if n + 1 < len(sim) else ";")
    expected += tok.encode(make_texts(N_ITEMS)[i]) + [EOS_ID]
    assert row == expected
    assert tok.encode(";")[0] not in row  # no standalone separator token


def test_id_linking_off_and_no_similar_items():
    cfg = tiny_config(passage_len=128, id_linking=False, similar_items=0)
    cache = _cache(cfg, similar=None)
    tok = FakeTokenizer()
    row = cache.item_table[3, : cache.item_len[3]].tolist()
    assert row == tok.encode(make_texts(N_ITEMS)[3]) + [EOS_ID]


def test_long_text_is_cut_before_ids():
    cfg = tiny_config(passage_len=30)
    texts = make_texts(N_ITEMS, words=200)
    cache = _cache(cfg, texts=texts)
    ids = FakeIds(N_ITEMS)
    for i in range(N_ITEMS):
        row = cache.item_table[i, : cache.item_len[i]].tolist()
        assert len(row) == 30 and row[-1] == EOS_ID
        own = list(ids.tokens[i])
        h = len(FakeTokenizer().encode("item:"))
        assert row[h: h + len(own)] == own  # right after "item:"
        for j in make_similar(N_ITEMS)[i][:3]:  # every similar ID is whole in the passage
            sub = list(ids.tokens[j])
            assert any(row[p: p + len(sub)] == sub for p in range(len(row)))
    tr = cache.truncation()
    assert tr["item_text"].cut > 0 and tr["similar_ids"].cut == 0
    assert 0 < tr["item_text"].share_cut < 1


def test_ids_overflow_drops_whole_least_similar_items_and_no_text():
    cfg = tiny_config(passage_len=16, similar_items=5)
    cache = _cache(cfg)
    ids = FakeIds(N_ITEMS)
    tok = FakeTokenizer()
    i = 1
    row = cache.item_table[i, : cache.item_len[i]].tolist()
    assert len(row) <= 16 and row[-1] == EOS_ID
    own = list(ids.tokens[i])
    assert row[len(tok.encode("item:")): len(tok.encode("item:")) + len(own)] == own
    sim = make_similar(N_ITEMS)[i]
    first = list(ids.tokens[sim[0]])
    assert any(row[p: p + len(first)] == first for p in range(len(row)))
    last = list(ids.tokens[sim[4]])
    assert not any(row[p: p + len(last)] == last for p in range(len(row)))
    assert cache.similar_cut[i] > 0 and cache.text_kept[i] == 0


def test_own_id_that_cannot_fit_is_an_error():
    cfg = tiny_config(passage_len=8)
    with pytest.raises(ValueError, match="passage_len"):
        PassageCache.build(FakeTokenizer(), FakeIds(N_ITEMS), make_texts(N_ITEMS), make_similar(N_ITEMS),
                           _shrink(cfg.model, 5), progress=False)


def _shrink(mcfg, n):
    mcfg.passage_len = n
    return mcfg


def test_user_passage_keeps_most_recent_ids_in_configured_order():
    cfg = tiny_config(user_passage_len=30)
    cache = _cache(cfg)
    ids = FakeIds(N_ITEMS)
    history = list(range(10, 18))  # oldest first; 8 IDs of 3-4 tokens cannot fit in 30 tokens
    toks, kept, cut = cache.user_passage(history, "recent_first")
    assert len(toks) <= 30 and toks[-1] == EOS_ID and cut > 0
    head = len(cache.user_head)
    # the first ID after the head is the most recent item
    assert toks[head: head + len(ids.tokens[17])] == list(ids.tokens[17])
    present = [i for i in history if _contains(toks, ids.tokens[i])]
    assert present == history[-len(present):]  # a suffix: the oldest are the ones dropped
    toks_old, kept_old, cut_old = cache.user_passage(history, "oldest_first")
    assert (kept_old, cut_old) == (kept, cut)
    first_kept = present[0]
    assert toks_old[head: head + len(ids.tokens[first_kept])] == list(ids.tokens[first_kept])


def _contains(row, sub):
    sub = list(sub)
    return any(row[p: p + len(sub)] == sub for p in range(len(row) - len(sub) + 1))


@pytest.mark.parametrize("order", ["recent_first", "oldest_first"])
@pytest.mark.parametrize("dedupe", [True, False])
def test_history_rows_follow_order_and_match_user_passage(order, dedupe):
    cfg = tiny_config(history_order=order, user_passage_len=200)
    cache = _cache(cfg)
    ids = FakeIds(N_ITEMS)
    ss = [Sample(0, (3, 4, 5, 6), 7), Sample(1, (5, 9), 2), Sample(2, (11,), 3)]
    batch = Collator(cache, cfg, _gcn_rows(), dedupe=dedupe)(ss)
    head = len(cache.user_head)
    for b, s in enumerate(ss):
        expect = list(s.history)[::-1] if order == "recent_first" else list(s.history)
        rows = batch.history[b][batch.history[b] >= 0]
        assert batch.item_index[rows].tolist() == expect
        assert (batch.history[b][len(expect):] == -1).all()
        # user passage lists the IDs in the same order
        pos = head
        toks = batch.user_input[b].tolist()
        for n, it in enumerate(expect):
            if n:
                pos += len(cache.user_sep)
            assert toks[pos: pos + len(ids.tokens[it])] == list(ids.tokens[it])
            pos += len(ids.tokens[it])
        # item row content = the cached passage of that item
        for r in rows.tolist():
            it = int(batch.item_index[r])
            n_real = int(batch.item_mask[r].sum())
            assert batch.item_input[r, :n_real].tolist() == cache.item_table[it, : cache.item_len[it]].tolist()
    if dedupe:
        assert len(batch.item_index) == len({i for s in ss for i in s.history})
        assert (batch.item_owner == -1).all()
    else:
        assert len(batch.item_index) == sum(len(s.history) for s in ss)
        assert batch.item_owner.tolist() == [0, 0, 0, 0, 1, 1, 2]


def test_never_all_padding_rows_and_trimmed_to_longest():
    cfg = tiny_config()
    cache = _cache(cfg)
    ds = make_dataset(num_users=20)
    ss = samples(ds, "train", cfg.data.max_his)[:32]
    for dedupe in (True, False):
        batch = Collator(cache, cfg, _gcn_rows(), dedupe=dedupe)(ss)
        assert batch.item_mask.any(1).all() and batch.user_mask.any(1).all()
        assert batch.item_mask[:, -1].any() and batch.user_mask[:, -1].any()  # trimmed
        # masks are prefixes and end on eos
        lens = batch.item_mask.sum(1)
        assert (batch.item_input[torch.arange(len(lens)), lens - 1] == EOS_ID).all()
        assert (batch.item_input[~batch.item_mask] == 0).all()


def test_every_passage_placement_forces_per_sample_rows():
    cfg = tiny_config()
    cfg.model.prefix.placement = "every_passage"
    cache = _cache(cfg)
    ss = [Sample(0, (3, 4), 7), Sample(1, (3, 4), 2)]
    batch = Collator(cache, cfg, _gcn_rows(), dedupe=True)(ss)
    assert batch.item_owner.tolist() == [0, 0, 1, 1]
    with pytest.raises(ValueError, match="every_passage"):
        Collator(cache, cfg, _gcn_rows(), items="global")


def test_global_items_history_holds_dataset_indices():
    cfg = tiny_config()
    cache = _cache(cfg)
    ss = [Sample(0, (3, 4, 5), 7), Sample(1, (9,), 2)]
    batch = Collator(cache, cfg, _gcn_rows(), items="global")(ss)
    assert batch.global_items and batch.item_input.shape[0] == 0
    assert batch.history.tolist() == [[5, 4, 3], [9, -1, -1]]
    inp, mask = cache.all_items()
    assert inp.shape[0] == N_ITEMS and mask.any(1).all()


def test_recent_item_ids_are_k_most_recent_gcn_rows_without_target():
    cfg = tiny_config()
    cfg.model.prefix.num_items = 3
    cache = _cache(cfg)
    gcn_rows = torch.randperm(N_ITEMS) + 1  # arbitrary mapping, read through gcn_rows
    ss = [Sample(0, (1, 2, 3, 4, 5), 6), Sample(1, (8,), 9)]
    batch = Collator(cache, cfg, gcn_rows)(ss)
    assert batch.recent_item_ids.tolist() == [
        [int(gcn_rows[5]), int(gcn_rows[4]), int(gcn_rows[3])],
        [int(gcn_rows[8]), 0, 0],
    ]
    for b, s in enumerate(ss):
        assert int(gcn_rows[s.target]) not in batch.recent_item_ids[b].tolist()


def test_labels_and_batch_helpers():
    cfg = tiny_config()
    cache = _cache(cfg)
    ids = FakeIds(N_ITEMS)
    ss = [Sample(0, (1, 2), 7), Sample(1, (8,), 9)]  # item 7 has 4 levels, item 9 has 3
    batch = Collator(cache, cfg, _gcn_rows())(ss)
    assert batch.labels.tolist() == [list(ids.target(7)), list(ids.target(9)) + [IGNORE_INDEX]]
    assert int((batch.labels != IGNORE_INDEX).sum()) == 5 + 4
    moved = batch.to("cpu")
    assert moved.prefix_enabled and torch.equal(moved.labels, batch.labels)


def test_prefix_enabled_without_gcn_rows_is_an_error():
    cfg = tiny_config()
    with pytest.raises(ValueError, match="GCN rows"):
        Collator(_cache(cfg), cfg, None)
    cfg.model.prefix.enabled = False
    batch = Collator(_cache(cfg), cfg, None)([Sample(0, (1,), 2)])
    assert not batch.prefix_enabled and (batch.recent_item_ids == 0).all()


def test_cache_save_load_and_fingerprint(tmp_path):
    cfg = tiny_config()
    texts = make_texts(N_ITEMS)
    tok = FakeTokenizer()
    path = tmp_path / "cache.pt"
    c1 = PassageCache.load_or_build(path, tok, FakeIds(N_ITEMS), texts, make_similar(N_ITEMS), cfg.model,
                                    progress=False)
    assert path.is_file()
    calls = tok.calls
    c2 = PassageCache.load_or_build(path, tok, FakeIds(N_ITEMS), texts, make_similar(N_ITEMS), cfg.model,
                                    progress=False)
    assert tok.calls == calls  # reused, not re-tokenised
    assert torch.equal(c1.item_table, c2.item_table) and c1.fingerprint == c2.fingerprint
    texts[0] = "something else entirely"
    c3 = PassageCache.load_or_build(path, tok, FakeIds(N_ITEMS), texts, make_similar(N_ITEMS), cfg.model,
                                    progress=False)
    assert c3.fingerprint != c1.fingerprint and not torch.equal(c3.item_table[0], c1.item_table[0])


def test_user_truncation_stats_over_samples():
    cfg = tiny_config(user_passage_len=20)
    cache = _cache(cfg)
    ss = [Sample(0, tuple(range(8)), 9)]
    tr = cache.truncation(ss, max_his=8)
    assert tr["user_ids"].cut > 0 and tr["user_ids"].kept > 0


def test_batch_encoding_path_gives_the_same_cache():
    class BatchTokenizer(FakeTokenizer):
        def encode_batch(self, texts):
            return [self.encode(t) for t in texts]

    cfg = tiny_config(passage_len=64)
    a = _cache(cfg, tok=FakeTokenizer())
    b = _cache(cfg, tok=BatchTokenizer())
    assert torch.equal(a.item_table, b.item_table) and torch.equal(a.text_cut, b.text_cut)
