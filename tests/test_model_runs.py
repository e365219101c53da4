"""gramc.model.runs: a run folder's config read back by load_config's rules; clear RunErrors."""

from __future__ import annotations

import pytest

from gramc.config import ConfigError, dump_yaml, load_config
from gramc.model.runs import RunError, checkpoint_folder, run_config


@pytest.fixture
def run(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "config.yaml").write_text(dump_yaml(load_config(None, ["train.lr=0.002"])), encoding="utf-8")
    return folder


def test_overrides_follow_load_config(run):
    over = ["ids.tokenizer=123", "train.lr=1e-3", "eval.beams=70"]
    got, want = run_config(run, over), load_config(None, over)
    assert got.ids.tokenizer == want.ids.tokenizer == "123"  # a str field keeps the text, by the one rule
    assert got.train.lr == want.train.lr == 1e-3 and got.eval.beams == want.eval.beams == 70
    assert run_config(run).train.lr == 0.002  # the saved value when not overridden
    assert run_config(run).run.out == str(run)  # run.out is the folder itself
    with pytest.raises(ConfigError, match="train.no_such_key"):
        run_config(run, ["train.no_such_key=1"])


def test_run_errors_name_the_folder(run, tmp_path):
    with pytest.raises(RunError, match="no config.yaml"):
        run_config(tmp_path / "nothing")
    with pytest.raises(RunError, match="is a file"):
        run_config(run / "config.yaml")
    (run / "config.yaml").write_text("run: [unclosed", encoding="utf-8")
    with pytest.raises(RunError, match="damaged"):
        run_config(run)
    assert RunError("x").exit_code == 2


def test_checkpoint_folder(run):
    with pytest.raises(RunError, match="has the run been trained"):
        checkpoint_folder(run, "best")
    last = run / "checkpoints" / "last"
    last.mkdir(parents=True)
    (last / "model.safetensors").write_bytes(b"")
    with pytest.raises(RunError, match="try --checkpoint last"):
        checkpoint_folder(run, "best")
    assert checkpoint_folder(run, "last") == last
    assert checkpoint_folder(run, str(last / "model.safetensors")) == last == checkpoint_folder(run, str(last))
    with pytest.raises(RunError, match="neither best, last"):
        checkpoint_folder(run, str(run / "elsewhere"))


def test_weights_with_non_finite_values_are_refused_naming_the_tensor(tmp_path):
    import torch
    from safetensors.torch import save_model

    from gramc.checkpoint import CheckpointError, load_weights

    torch.manual_seed(0)
    good = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    save_model(good, str(tmp_path / "model.safetensors"))
    load_weights(tmp_path, torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2)))  # finite: loads
    with torch.no_grad():
        good[1].bias[0] = float("nan")
    save_model(good, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"model.safetensors holds non-finite values .*'1.bias'"):
        load_weights(tmp_path, torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2)))


def test_a_run_saved_by_an_earlier_gramc_loads_under_the_current_key_names(tmp_path):
    """A run's own config.yaml with the flat SASRec keys and pipeline.eval_users (written before they
    moved) is read under the new names; a config file a person passes with them is refused."""
    import yaml

    from gramc.config import to_dict

    tree = to_dict(load_config(None, [f"run.out={tmp_path}"]))
    sasrec = tree["baseline"].pop("sasrec")
    tree["baseline"] = {f"sasrec_{k}": v for k, v in sasrec.items()}
    tree["baseline"]["sasrec_dim"] = 32
    tree["pipeline"]["eval_users"] = 700
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(tree, sort_keys=False))
    cfg = run_config(tmp_path)
    assert cfg.baseline.sasrec.dim == 32 and cfg.baseline.sasrec.heads == sasrec["heads"]
    assert cfg.train.final_eval_users == 700
    with pytest.raises(ConfigError, match="baseline.sasrec.dim"):
        load_config(tmp_path / "config.yaml")
