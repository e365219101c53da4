"""Integration: on real Beauty data the cached passages are token-identical to GRAM's rendered strings.

GRAM renders `item: ID; similar items: ID, ...; text` and `What would user purchase after ID ; ... ?`
with raw `|tok|...` IDs, tokenises them with the T5 fast tokenizer (`transformers`), drops the `|`
tokens and cuts to 128 (gramc.model.gram_reference). gramc assembles the same passages from cached
token ids; both must agree whenever GRAM's passage fits its 128 tokens.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gramc.config import Config
from gramc.data.dataset import SeqDataset
from gramc.data.prepare import prepare
from gramc.data.splits import samples
from gramc.data.text import item_texts
from gramc.graph.similar import read_similar_items
from gramc.ids.itemids import load_gram_ids
from gramc.ids.tokenizer import load_tokenizer
from gramc.model.gram_reference import gram_tokens, item_string, user_string
from gramc.model.inputs import PassageCache

ROOT = Path(__file__).resolve().parents[1] / ".." / "shared"
BEAUTY = ROOT / "datasets" / "amazon-beauty"
T5_VOCAB = ROOT / "tokenizers" / "t5-base-spm"
ID_FILE = BEAUTY / "item_generative_indexing_hierarchy_v1_c128_l7_len32768_split.txt"

pytestmark = [
    pytest.mark.shared,
    pytest.mark.skipif(not (BEAUTY / "user_sequence.txt").is_file() or not (T5_VOCAB / "tokenizer.json").is_file(),
                       reason="../shared Beauty data or T5 vocabulary not present"),
]


@pytest.fixture(scope="module")
def beauty(tmp_path_factory):
    from transformers import T5TokenizerFast

    out = tmp_path_factory.mktemp("beauty") / "data"
    prepare(BEAUTY / "user_sequence.txt", BEAUTY / "Amazon_Beauty.item", out, Config())
    ds = SeqDataset.load(out)
    cfg = Config()  # GRAM's passages: 128 tokens, 10 similar items, ID linking
    texts = item_texts(ds, cfg.data)
    tok = load_tokenizer(T5_VOCAB)
    ids = load_gram_ids(ID_FILE, ds, tok)
    similar = read_similar_items(BEAUTY / "similar_item_sasrec.txt", ds, cfg.model.similar_items)
    cache = PassageCache.build(tok, ids, texts, similar, cfg.model, progress=False)
    return ds, cfg, texts, ids, similar, cache, T5TokenizerFast.from_pretrained(str(T5_VOCAB))


def test_item_passages_equal_gram_tokens(beauty):
    ds, cfg, texts, ids, similar, cache, hf = beauty
    k = cfg.model.similar_items
    checked = fitting = 0
    for i in range(0, len(ds.item_ids), 4):  # 3,026 of the 12,101 items
        ref = gram_tokens(hf, item_string(ids.id_string(i), [ids.id_string(j) for j in similar[i][:k]], texts[i]))
        row = cache.item_table[i, : cache.item_len[i]].tolist()
        if ref.fits or int(cache.similar_cut[i]) == 0:  # GRAM cuts only the text then, as gramc does
            assert row == ref.tokens, (i, hf.convert_ids_to_tokens(row), hf.convert_ids_to_tokens(ref.tokens))
            checked += 1
            fitting += ref.fits
    assert checked > 2500 and fitting > 10  # most Beauty passages overflow 128: text is cut in both


def test_user_passages_equal_gram_tokens_when_they_fit(beauty):
    ds, cfg, texts, ids, similar, cache, hf = beauty
    fitting = 0
    for s in samples(ds, "test", cfg.data.max_his)[::5]:
        hist = list(s.history[-cfg.data.max_his:])
        ref = gram_tokens(hf, user_string([ids.id_string(j) for j in reversed(hist)]))
        mine, _, cut = cache.user_passage(hist, "recent_first")
        if ref.fits:
            assert mine == ref.tokens and cut == 0
            fitting += 1
        else:
            assert cut > 0 and len(mine) <= cfg.model.user_passage_len
    assert fitting > 3000
