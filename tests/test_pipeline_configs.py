"""The shipped configs: they load, gram-beauty.yaml is GRAM's recipe, gramc-beauty.yaml is it plus the
prefix, and `gramc doctor recipe` names every deviation of the others (never a failure)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from gramc.cli import main
from gramc.config import flatten, load_config, to_dict

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
SHARED = ROOT / ".." / "shared"
ALL = sorted(p.name for p in CONFIGS.glob("*.yaml"))
SCRATCH_DEVIATIONS = {"recipe.init", "recipe.tokenizer", "recipe.ids", "recipe.neighbours", "recipe.batching",
                      "recipe.early_stopping"}
needs_shared = pytest.mark.skipif(not (SHARED / "datasets" / "amazon-beauty" / "user_sequence.txt").is_file(),
                                  reason="../shared Beauty data not present")


def header_overrides(name: str) -> list[str]:
    """The data overrides of the command in a config's header comment (what the README shows too)."""
    lines = [ln[1:].strip() for ln in (CONFIGS / name).read_text(encoding="utf-8").splitlines() if ln.startswith("#")]
    found = [t for ln in lines for t in ln.split() if re.fullmatch(r"[a-z_]+\.[a-z_.]+=\.\./shared/\S+", t)]
    return [t.replace("../shared", str(SHARED), 1) for t in found]


def doctor(capsys, name: str, *over: str) -> tuple[int, dict]:
    code = main(["doctor", "recipe", "--config", str(CONFIGS / name), "--json", *over])
    report = json.loads(capsys.readouterr().out)
    return code, {c["name"]: c for c in report["checks"]}


def levels(checks: dict, level: str) -> set[str]:
    return {n for n, c in checks.items() if c["level"] == level}


@pytest.mark.parametrize("name", ALL)
def test_config_loads_without_paths(name):
    cfg = load_config(CONFIGS / name)
    assert cfg.data.path == "" and cfg.pipeline.sequences == "" and cfg.ids.file == ""  # paths are overrides only


def test_gram_beauty_is_the_gram_recipe():
    c = load_config(CONFIGS / "gram-beauty.yaml")
    assert (c.model.preset, c.model.pretrained, c.ids.tokenizer) == ("pretrained", "t5-small", "t5-small")
    assert c.data.max_his == 20 and c.model.passage_len == c.model.user_passage_len == 128
    assert c.model.similar_items == 10 and c.model.id_linking and c.model.softmax == "vocab"
    assert c.train.batching == "sample" and c.train.batch_size * c.train.grad_accum == 128
    assert (c.train.lr, c.train.weight_decay, c.train.eps, c.train.warmup, c.train.clip) == (1e-3, 0.01, 1e-6, 0.05, 1.0)
    assert c.train.epochs == 30 and not c.train.bf16 and c.run.seed == 2023
    assert c.eval.beams == 50 and c.eval.length_penalty == 1.0 and c.eval.early_stopping == "hf4"
    assert c.eval.ks == [1, 5, 10, 20, 50] and not c.model.prefix.enabled


def test_gramc_beauty_is_gram_beauty_plus_the_prefix():
    gram = flatten(to_dict(load_config(CONFIGS / "gram-beauty.yaml")))
    gramc = flatten(to_dict(load_config(CONFIGS / "gramc-beauty.yaml")))
    diff = {k for k in gram.keys() | gramc.keys() if gram.get(k) != gramc.get(k)}
    assert diff == {"run.out", "model.prefix.enabled"}
    assert gramc["model.prefix.enabled"] and gramc["gcn.interactions"] == "train"


def test_beauty_scratch_keeps_gram_shapes():
    c = load_config(CONFIGS / "beauty-scratch.yaml")
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


@pytest.mark.parametrize("name", ALL)
def test_doctor_recipe_has_no_failure_on_any_config(name, capsys):
    code, checks = doctor(capsys, name)
    assert code == 0 and levels(checks, "fail") == set(), checks
    assert "recipe.batching" in checks and "measured_mean" in checks["recipe.batching"]["value"]


def test_doctor_names_each_deviation_of_the_scratch_config(capsys):
    code, checks = doctor(capsys, "beauty-scratch.yaml")
    assert code == 0 and levels(checks, "warn") == SCRATCH_DEVIATIONS
    assert "sequence" in checks["recipe.batching"]["message"] and "measured" in checks["recipe.batching"]["message"]


@needs_shared
def test_doctor_gram_beauty_with_readme_overrides_is_clean(capsys):
    over = header_overrides("gram-beauty.yaml")
    assert {o.split("=")[0] for o in over} == {"pipeline.sequences", "pipeline.items", "ids.file", "ids.tokenizer",
                                               "model.similar_source"}
    assert all(o.split("=", 1)[1].replace(str(SHARED), "../shared") in (ROOT / "README.md").read_text() for o in over)
    code, checks = doctor(capsys, "gram-beauty.yaml", *over)
    assert code == 0 and levels(checks, "warn") == set() and levels(checks, "fail") == set(), checks
    batching = checks["recipe.batching"]["value"]
    assert 127.5 <= batching["measured_mean"] <= 128 and batching["steps_per_epoch"] == 1027  # 131,413 samples
    code, checks = doctor(capsys, "gramc-beauty.yaml", *header_overrides("gramc-beauty.yaml"))
    assert code == 0 and levels(checks, "warn") == set()


@needs_shared
def test_doctor_scratch_on_beauty_measures_sequence_batching(capsys):
    beauty = SHARED / "datasets" / "amazon-beauty"
    code, checks = doctor(capsys, "beauty-scratch.yaml", f"pipeline.sequences={beauty / 'user_sequence.txt'}")
    assert code == 0 and levels(checks, "warn") == SCRATCH_DEVIATIONS
    measured = checks["recipe.batching"]["value"]["measured_mean"]
    assert 100 < measured < 120  # whole user sequences pack fewer than the nominal 128 samples per step


@pytest.mark.parametrize("name,leaky", [("gram-beauty.yaml", True), ("gramc-beauty.yaml", True),
                                        ("beauty-scratch.yaml", False), ("beauty-cpu.yaml", False)])
def test_leakage_doctor_says_which_configs_use_a_possibly_leaky_similar_items_file(name, leaky):
    """The README's table: the faithful configs read GRAM's similar_item_sasrec.txt (may carry
    validation/test interactions), the others LightGCN neighbours from training interactions."""
    from gramc.doctor.leakage import similar_source_check

    over = [o for o in header_overrides(name) if o.startswith("model.similar_source=")]
    assert bool(over) == leaky
    check = similar_source_check(load_config(CONFIGS / name, over))
    assert check.level == ("warn" if leaky else "pass")
    if leaky:
        assert "similar_item_sasrec.txt" in check.message
