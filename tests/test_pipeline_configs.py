"""The shipped configs load, and beauty.yaml is GRAM's official recipe with the prefix on."""

from __future__ import annotations

from pathlib import Path

import pytest

from gramc.config import load_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("name", ["quickstart.yaml", "beauty.yaml", "beauty-cpu.yaml", "beauty-subset.yaml"])
def test_config_loads_without_paths(name):
    cfg = load_config(CONFIGS / name)
    assert cfg.data.path == "" and cfg.pipeline.sequences == ""  # data paths are overrides only


def test_beauty_is_the_gram_recipe():
    c = load_config(CONFIGS / "beauty.yaml")
    assert c.model.preset == "small" and c.data.max_his == 20 and c.model.passage_len == 128
    assert c.model.similar_items == 10 and c.model.id_linking
    assert c.train.batch_size * c.train.grad_accum == 128
    assert (c.train.lr, c.train.weight_decay, c.train.eps, c.train.warmup, c.train.clip) == (1e-3, 0.01, 1e-6, 0.05, 1.0)
    assert c.train.epochs == 30 and not c.train.bf16
    assert c.eval.beams == 50 and c.eval.length_penalty == 1.0 and c.eval.ks == [1, 5, 10, 20, 50]
    assert c.model.prefix.enabled and c.gcn.interactions == "train"


def test_beauty_data_paths_by_override(tmp_path):
    c = load_config(CONFIGS / "beauty-cpu.yaml", [f"pipeline.sequences={tmp_path / 's.txt'}", "ids.file=x.txt"])
    assert c.pipeline.sequences.endswith("s.txt") and c.ids.file == "x.txt"
