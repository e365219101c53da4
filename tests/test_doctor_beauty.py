"""Doctor checks on the real Amazon Beauty files: GRAM's released IDs have no token or string
collisions (the README's fact), the leave-one-out split holds for every user, and the default
config differs from GRAM's recipe only by warnings."""

from __future__ import annotations

from pathlib import Path

import pytest

from gramc.config import Config
from gramc.data.prepare import build_dataset
from gramc.doctor.evalchecks import collision_checks, sharding_check
from gramc.doctor.leakage import split_check
from gramc.doctor.recipe import load_recipe, recipe_checks
from gramc.ids.itemids import load_gram_ids
from gramc.ids.tokenizer import load_tokenizer

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared"
BEAUTY = SHARED / "datasets" / "amazon-beauty"
IDS = BEAUTY / "item_generative_indexing_hierarchy_v1_c128_l7_len32768_split.txt"

pytestmark = [
    pytest.mark.shared,
    pytest.mark.skipif(not IDS.is_file(), reason="../shared Beauty data not present"),
]


def test_beauty_ids_split_and_recipe():
    ds = build_dataset(BEAUTY / "user_sequence.txt", BEAUTY / "Amazon_Beauty.item", Config())
    ids = load_gram_ids(IDS, ds, load_tokenizer(str(SHARED / "tokenizers" / "t5-base-spm")))
    tokens, strings = collision_checks(ids, ids.tokenizer)
    assert tokens.level == "pass" and tokens.value == {"items": 12101, "shared_sequences": 0}
    assert strings.level == "pass" and strings.value["colliding_strings"] == 0
    split = split_check(ds, 20)
    assert split.level == "pass" and split.value == {"users": 22363, "train_samples": 131413}
    assert sharding_check(22363).level == "pass"
    checks = recipe_checks(Config(), load_recipe("gram-beauty"))
    assert [c.name for c in checks if c.level == "fail"] == []
