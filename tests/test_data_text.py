"""Item text rendering: GRAM's `key: value; ...` format, cleaning, categories in every shape."""

from __future__ import annotations

from gramc.config import DataConfig
from gramc.data.dataset import SeqDataset
from gramc.data.text import item_texts, parse_categories, render_item_text


def test_render_full_item_in_gram_format():
    fields = {"title": "Crabtree &amp; Evelyn  Hand\tTherapy", "brand": "Crabtree &amp; Evelyn",
              "categories": "'Beauty', 'Skin Care', \"Women's\"", "price": 9.5, "salesrank": 24399.0}
    assert render_item_text(fields, DataConfig()) == (
        "title: crabtree & evelyn hand therapy; brand: crabtree & evelyn; "
        "categories: beauty, skin care, women's; price: 9.5; salesrank: 24399")


def test_case_kept_when_lowercase_off_and_field_order_from_config():
    cfg = DataConfig(lowercase=False, text_fields=["brand", "title"])
    assert render_item_text({"title": "Big Gel", "brand": "Acme", "price": 3.0}, cfg) == "brand: Acme; title: Big Gel"


def test_missing_and_empty_fields_are_omitted():
    fields = {"title": "Gel", "brand": "", "categories": [], "price": float("nan"), "salesrank": None}
    assert render_item_text(fields, DataConfig()) == "title: gel"
    assert render_item_text({}, DataConfig()) == ""


def test_aliases_of_recbole_and_amazon_field_names():
    assert render_item_text({"sales_rank": 12.0}, DataConfig()) == "salesrank: 12"
    assert render_item_text({"salesRank": {"Beauty": 77}}, DataConfig()) == "salesrank: 77"


def test_categories_in_every_shape():
    want = ["Beauty", "Makeup", "Face"]
    assert parse_categories(["Beauty", "Makeup", "Face"]) == want
    assert parse_categories([["Beauty", "Makeup"], ["Beauty", "Face"]]) == want
    assert parse_categories("'Beauty', 'Makeup', 'Face'") == want
    assert parse_categories("[['Beauty', 'Makeup', 'Face'], ['Beauty']]") == want
    assert parse_categories("Beauty, Makeup, Face") == want
    assert parse_categories("'Beauty'") == ["Beauty"]
    assert parse_categories("'Home &amp; Kitchen', 'Beauty'") == ["Home & Kitchen", "Beauty"]
    assert parse_categories("") == [] and parse_categories(None) == []


def test_item_texts_by_index():
    ds = SeqDataset(["a", "b"], [{"title": "A"}, {"title": "B", "brand": "X"}], ["u"], [[0, 1]])
    assert item_texts(ds, DataConfig()) == ["title: a", "title: b; brand: x"]
