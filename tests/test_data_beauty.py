"""Integration: the shared Amazon Beauty files (GRAM sequences + RecBole items) give the published facts."""

from __future__ import annotations

from pathlib import Path

import pytest

from gramc.config import Config
from gramc.data.dataset import SeqDataset
from gramc.data.prepare import prepare
from gramc.data.stats import dataset_stats
from gramc.data.text import item_texts

BEAUTY = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets" / "amazon-beauty"

pytestmark = [
    pytest.mark.shared,
    pytest.mark.skipif(not (BEAUTY / "user_sequence.txt").is_file(), reason="../shared Beauty data not present"),
]


def test_beauty_prepare_and_stats(tmp_path):
    out = tmp_path / "beauty"
    prepare(BEAUTY / "user_sequence.txt", BEAUTY / "Amazon_Beauty.item", out, Config())
    ds = SeqDataset.load(out)
    st = dataset_stats(ds, max_his=20, top_k=3)
    assert (st.users, st.items, st.interactions) == (22363, 12101, 198502)
    assert (st.train_samples, st.valid_samples, st.test_samples) == (131413, 22363, 22363)
    assert st.top_items == [("B004OHQR1Q", 431), ("B0043OYFKU", 403), ("B0069FDR96", 391)]
    assert st.top_train_items == [("B004OHQR1Q", 369), ("B0043OYFKU", 314), ("B000ZMBSPE", 311)]
    assert (st.lengths.min, st.lengths.max, round(st.lengths.mean, 2)) == (5, 204, 8.88)
    assert ds.meta["dropped"]["items_without_metadata"] == 0
    assert ds.meta["sources"]["sequences"]["sha256"].startswith("47197cbe")
    assert ds.meta["sources"]["items"]["sha256"].startswith("e56c8cbc")
    # metadata facts of the README: 7 items without title, 2,098 without brand, 585 without price
    assert sum("title" not in f for f in ds.item_fields) == 7
    assert sum("brand" not in f for f in ds.item_fields) == 2098
    assert sum("price" not in f for f in ds.item_fields) == 585
    texts = item_texts(ds, Config().data)
    assert all("&amp;" not in t and t == t.lower() for t in texts)
    i = ds.index_of("9788072216")
    assert texts[i].startswith("title: prada candy by prada eau de parfum spray 1.7 oz for women; brand: prada; "
                               "categories: beauty, fragrance, women's, eau de parfum; price: 65.86")
