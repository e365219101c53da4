"""The typed configuration: YAML + overrides, unknown keys and wrong types are errors naming the key."""

import pytest

from gramc.config import Config, ConfigError, dump_yaml, flatten, from_dict, load_config, to_dict


def test_defaults_validate():
    cfg = load_config()
    assert isinstance(cfg, Config)
    assert cfg.model.prefix.enabled is True
    assert cfg.eval.ks == [1, 5, 10, 20, 50]


def test_yaml_and_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("train:\n  lr: 0.001\n  epochs: 3\nmodel:\n  prefix:\n    placement: memory\n")
    cfg = load_config(p, ["train.lr=5e-4", "model.prefix.enabled=false", "eval.ks=[1,10]", "run.out=123"])
    assert cfg.train.lr == 5e-4 and cfg.train.epochs == 3
    assert cfg.model.prefix.placement == "memory" and cfg.model.prefix.enabled is False
    assert cfg.eval.ks == [1, 10]
    assert cfg.run.out == "123"  # a string field stays a string even when YAML would read a number


@pytest.mark.parametrize("override, key", [
    ("train.lrr=1", "train.lrr"),
    ("nosuch.section=1", "nosuch"),
    ("model.prefix.enable=true", "model.prefix.enable"),
])
def test_unknown_override_names_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(None, [override])


def test_unknown_yaml_key_names_key(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("model:\n  prefix:\n    use_collaborative_prefix: 1\n")
    with pytest.raises(ConfigError, match=r"model\.prefix\.use_collaborative_prefix"):
        load_config(p)


@pytest.mark.parametrize("override, key", [
    ("train.epochs=abc", "train.epochs"),
    ("train.epochs=1.5", "train.epochs"),
    ("model.prefix.enabled=1", "model.prefix.enabled"),
    ("model.prefix.placement=everywhere", "model.prefix.placement"),
    ("eval.beams=0", "eval.beams"),
    ("train.warmup=1.5", "train.warmup"),
])
def test_wrong_types_and_values_name_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(None, [override])


def test_bad_yaml_file(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("- a list\n- not a mapping\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(p)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")


def test_round_trip_through_dict_and_yaml(tmp_path):
    cfg = load_config(None, ["train.lr=3e-4", "model.prefix.num_items=7"])
    again = from_dict(to_dict(cfg))
    assert again == cfg
    p = tmp_path / "resolved.yaml"
    p.write_text(dump_yaml(cfg))
    assert load_config(p) == cfg
    flat = flatten(to_dict(cfg))
    assert flat["model.prefix.num_items"] == 7


def test_unknown_keys_and_wrong_types_are_reported_together(tmp_path):
    from gramc.config import ConfigError

    path = tmp_path / "c.yaml"
    path.write_text("train:\n  lr: fast\n  epochz: 3\nmodel:\n  prefix:\n    enabled: 2\n")
    with pytest.raises(ConfigError) as e:
        load_config(path, ["eval.beams=many", "nokey.x=1", "bad"])
    msg = str(e.value)
    assert msg.startswith("6 config problems:")
    for part in ("'train.lr'", "'train.epochz'", "'model.prefix.enabled'", "'eval.beams'", "'nokey'", "'bad'"):
        assert part in msg


def test_gcn_section_problems_come_together_also_without_load_config():
    from gramc.config import ConfigError, GcnConfig
    from gramc.data.dataset import SeqDataset
    from gramc.graph.lightgcn import train_lightgcn

    ds = SeqDataset(["a", "b", "c"], [{}] * 3, ["u"], [[0, 1, 2]])
    with pytest.raises(ConfigError) as e:
        train_lightgcn(ds, GcnConfig(lr=0.0, epochs=0, similar_k=3), "unused", progress=False)
    assert all(k in str(e.value) for k in ("gcn.lr", "gcn.epochs", "gcn.similar_k"))
    with pytest.raises(ConfigError) as e:
        load_config(None, ["gcn.lr=0", "gcn.similar_k=-1"])
    assert "gcn.lr" in str(e.value) and "gcn.similar_k' must be >= 0" in str(e.value)


def test_select_metric_must_be_a_figure_validation_reports():
    assert load_config(None, []).train.select_metric == "ndcg@10"
    with pytest.raises(ConfigError) as e:
        load_config(None, ["eval.ks=[1,5]"])
    assert "train.select_metric" in str(e.value) and "eval.ks" in str(e.value) and "ndcg@10" in str(e.value)
    # collected with the other problems of the same config, not one at a time
    with pytest.raises(ConfigError, match=r"2 config problems") as e:
        load_config(None, ["eval.ks=[1,5]", "train.lr=0"])
    assert "train.select_metric" in str(e.value) and "train.lr" in str(e.value)
    for ok in (["eval.ks=[1,5]", "train.select_metric=hit@5"], ["eval.ks=[1,5]", "train.select_metric=mrr"],
               ["eval.ks=[1,5]", "train.select_metric=valid_loss"], ["train.select_metric=ndcg@50"]):
        load_config(None, ok)
    for bad in ("recall@10", "ndcg@", "ndcg@x", "hit@7", "loss"):
        with pytest.raises(ConfigError, match="train.select_metric"):
            load_config(None, [f"train.select_metric={bad}"])


def test_unknown_baseline_is_reported_with_the_other_problems():
    from gramc.config import BASELINES
    from gramc.pipeline.pipeline import BASELINE_READS

    assert set(BASELINES) == set(BASELINE_READS)  # every name the config accepts has a pipeline stage
    with pytest.raises(ConfigError, match=r"2 config problems") as e:
        load_config(None, ["pipeline.baselines=[pop,bert4rec]", "train.lr=0"])
    assert "unknown baseline 'bert4rec'" in str(e.value) and "train.lr" in str(e.value)


@pytest.mark.parametrize("text,key,lines", [
    ("train:\n  lr: 0.001\n  epochs: 3\n  lr: 0.5\n", "lr", (2, 4)),
    ("train:\n  lr: 0.001\nmodel:\n  preset: tiny\ntrain:\n  lr: 0.5\n", "train", (1, 5)),
])
def test_a_key_given_twice_is_an_error_naming_it_and_both_lines(tmp_path, text, key, lines):
    path = tmp_path / "cfg.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_config(path, [])
    msg = str(err.value)
    assert f"key '{key}' is given twice, at lines {lines[0]} and {lines[1]}" in msg and str(path) in msg


def test_a_run_config_with_a_key_given_twice_is_refused(tmp_path):
    from gramc.model.runs import RunError, run_config

    (tmp_path / "config.yaml").write_text("run:\n  seed: 1\n  seed: 2\n", encoding="utf-8")
    with pytest.raises(RunError, match="'seed' is given twice, at lines 2 and 3"):
        run_config(tmp_path)


@pytest.mark.parametrize("value", ["inf", "-inf", ".nan", ".inf", "1e999", "nan"])
def test_numbers_must_be_finite(tmp_path, value):
    with pytest.raises(ConfigError, match="config key 'train.lr' must be a finite number"):
        load_config(None, [f"train.lr={value}"])
    path = tmp_path / "cfg.yaml"
    path.write_text(f"train:\n  weight_decay: {value}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="config key 'train.weight_decay' must be a finite number"):
        load_config(path, [])


def _sections(cls: type = Config, prefix: str = "") -> list[tuple[str, type]]:
    """(dotted key, class) of every section of the Config, nested ones included."""
    import dataclasses
    import typing

    out = []
    for f in dataclasses.fields(cls):
        tp = typing.get_type_hints(cls)[f.name]
        if dataclasses.is_dataclass(tp):
            out += [(f"{prefix}{f.name}", tp), *_sections(tp, f"{prefix}{f.name}.")]
    return out


def test_every_section_checks_itself_and_names_full_keys():
    import re

    sections = _sections()
    assert {"baseline.sasrec", "eval.fusion", "model.prefix", "data.synthetic"} <= {k for k, _ in sections}
    assert [k for k, cls in sections if "problems" not in vars(cls)] == []
    # one bad value per section: each section reports it under the key's full dotted name
    bad = ["data.max_his=0", "data.synthetic.min_len=2", "ids.levels=0", "gcn.lr=0", "model.dropout=1.5",
           "model.prefix.num_items=0", "train.lr=0", "eval.batch_size=0", "eval.fusion.candidates=0",
           "baseline.sasrec.lr=0", "pipeline.train_minutes=-1"]
    with pytest.raises(ConfigError) as e:
        load_config(None, bad)
    named = re.findall(r"config key '([^']+)'", str(e.value))
    assert sorted(named) == sorted(b.split("=")[0] for b in bad)
    cfg = Config()
    cfg.baseline.sasrec.heads = 3
    assert cfg.baseline.problems() == cfg.baseline.sasrec.problems() != []
    assert "baseline.sasrec.heads" in cfg.baseline.sasrec.problems()[0]
    assert Config().problems() == []


def test_validate_changes_nothing_and_resolved_fills_the_tokenizer():
    cfg = Config()
    cfg.model.preset, cfg.model.pretrained = "pretrained", "some/t5"
    assert cfg.validate() is cfg and cfg.ids.tokenizer == "train"  # no side effect
    res = cfg.resolved()
    assert res.ids.tokenizer == "some/t5" and cfg.ids.tokenizer == "train" and res.resolved() == res
    over = ["model.preset=pretrained", "model.pretrained=some/t5"]
    assert load_config(None, over).ids.tokenizer == "some/t5"
    assert load_config(None, [*over, "ids.tokenizer=other/tok"]).ids.tokenizer == "other/tok"  # given: kept
    assert load_config(None, ["model.pretrained=some/t5"]).ids.tokenizer == "train"  # not pretrained
    assert from_dict({"model": {"preset": "pretrained", "pretrained": "some/t5"}}).ids.tokenizer == "some/t5"


def test_sasrec_settings_are_a_section_and_flat_keys_name_it(tmp_path):
    cfg = load_config(None, ["baseline.sasrec.dim=32", "baseline.sasrec.heads=2"])
    assert (cfg.baseline.sasrec.dim, cfg.baseline.sasrec.heads, cfg.baseline.sasrec.max_len) == (32, 2, 50)
    assert sorted(to_dict(cfg)["baseline"]) == ["sasrec"]
    with pytest.raises(ConfigError, match=r"'baseline\.sasrec_dim'.*write 'baseline\.sasrec\.dim'"):
        load_config(None, ["baseline.sasrec_dim=32"])
    path = tmp_path / "c.yaml"
    path.write_text("baseline:\n  sasrec_max_len: 20\n  sasrec_lr: 0.01\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="2 config problems") as e:
        load_config(path)
    assert "write 'baseline.sasrec.max_len'" in str(e.value) and "write 'baseline.sasrec.lr'" in str(e.value)
    with pytest.raises(ConfigError, match=r"unknown config key 'baseline\.sasrec\.sasrec_dim'"):
        load_config(None, ["baseline.sasrec.sasrec_dim=32"])


def test_default_comments_carry_no_benchmark_figures():
    """Measured figures belong in docs/benchmarks.md; config.py's comments say what a setting does."""
    from pathlib import Path

    import gramc.config

    text = Path(gramc.config.__file__).read_text(encoding="utf-8")
    comments = [line.split("#", 1)[1] for line in text.splitlines() if "#" in line]
    assert len(comments) > 50
    assert [c for c in comments if any(w in c for w in ("Beauty", "benchmarks.md", "bench/"))] == []
