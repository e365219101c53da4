"""`gramc gcn train` and `gramc gcn check` end to end on a small prepared dataset."""

from __future__ import annotations

import json

import pytest
import torch

from gramc.cli import main
from gramc.config import SyntheticConfig
from gramc.data.synthetic import make_synthetic


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("cli")
    ds = make_synthetic(SyntheticConfig(num_users=200, num_items=120))
    ds.save(root / "data")
    rc = main(["gcn", "train", "--data", str(root / "data"), "--out", str(root / "gcn"),
               "gcn.epochs=2", "gcn.batch_size=512", "gcn.similar_k=4", "gcn.eval_every=0"])
    assert rc == 0
    return root


def test_train_writes_the_folder_with_config(prepared):
    gcn = prepared / "gcn"
    for name in ("gcn_item_embeddings.pt", "item_id_to_gcn_index.json", "similar_items.txt",
                 "gcn_meta.json", "gcn_model.pt", "run_info.json", "config.yaml"):
        assert (gcn / name).is_file(), name
    meta = json.loads((gcn / "gcn_meta.json").read_text())
    assert meta["hyper_parameters"]["epochs"] == 2 and meta["hyper_parameters"]["similar_k"] == 4
    info = json.loads((gcn / "run_info.json").read_text())
    assert info["config"]["gcn"]["batch_size"] == 512
    assert any(k.startswith("data/") for k in info["inputs"])


def test_check_passes_and_prints_json(prepared, capsys):
    assert main(["gcn", "check", "--data", str(prepared / "data"), "--gcn", str(prepared / "gcn"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] is True and len(out["checks"]) == 19
    assert main(["gcn", "check", "--data", str(prepared / "data"), "--gcn", str(prepared / "gcn")]) == 0
    assert "19 checks: 19 passed, 0 warnings, 0 failed" in capsys.readouterr().out


def test_check_exit_codes_on_failure_and_unusable_arguments(prepared, tmp_path, capsys):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(prepared / "gcn", bad)
    t = torch.load(bad / "gcn_item_embeddings.pt")
    t[5] = float("nan")
    torch.save(t, bad / "gcn_item_embeddings.pt")
    assert main(["gcn", "check", "--data", str(prepared / "data"), "--gcn", str(bad)]) == 1
    out = capsys.readouterr().out
    assert "FAIL  gcn.embeddings.nan_inf_rows" in out and "1 failed" in out
    assert main(["gcn", "check", "--data", str(prepared / "data"), "--gcn", str(tmp_path / "nope")]) == 2
    assert "no such folder" in capsys.readouterr().err
    assert main(["gcn", "check", "--data", str(tmp_path / "nodata"), "--gcn", str(bad)]) == 2
    assert main(["gcn", "train", "--data", str(prepared / "data"), "--out", str(tmp_path / "x"),
                 "gcn.interactions=everything"]) == 2
    assert "gcn.interactions" in capsys.readouterr().err
