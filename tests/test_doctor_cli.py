"""`gramc doctor ...` end to end (in-process): table / --json output, exit codes 0 / 1 / 2, the
`--data/--gcn` and `--ids/--tokenizer` shortcuts, and the hidden `--inject-fault` flag."""

from __future__ import annotations

import json

import pytest

from gramc.cli import build_parser, main
from gramc.data.prepare import prepare_synthetic
from gramc.model.assets import Assets
from doctor_setup import tiny_config


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("doctor_cli")
    cfg = tiny_config(root / "run")
    prepare_synthetic(root / "data", cfg)
    overrides = [f"run.out={root / 'run'}", f"data.path={root / 'data'}"]
    cfg = tiny_config(root / "run", f"data.path={root / 'data'}")
    Assets.from_config(cfg, progress=False)  # tokenizer, ids.txt, gcn/ in run.out
    from doctor_setup import OVERRIDES

    return root, overrides + OVERRIDES


def _json(capsys):
    out = capsys.readouterr().out
    return json.loads(out)


def test_data_shortcut_table_and_json(run, capsys):
    root, _ = run
    assert main(["doctor", "data", "--data", str(root / "data"), "--gcn", str(root / "run" / "gcn"), "--quiet"]) == 0
    table = capsys.readouterr().out
    assert "PASS  gcn.mapping.lookup" in table and "0 failed" in table
    assert main(["doctor", "data", "--data", str(root / "data"), "--gcn", str(root / "run" / "gcn"), "--json",
                 "--quiet"]) == 0
    rep = _json(capsys)
    assert rep["ok"] is True and rep["checks"]
    assert set(rep["checks"][0]) == {"name", "ok", "level", "value", "message"}


def test_unusable_arguments_exit_2(run, capsys):
    root, over = run
    assert main(["doctor", "data", "--data", str(root / "missing"), "--gcn", str(root / "run" / "gcn")]) == 2
    assert "missing" in capsys.readouterr().err
    assert main(["doctor", "recipe", "--recipe", "nope", *over]) == 2
    assert "unknown recipe" in capsys.readouterr().err
    assert main(["doctor", "ids", "--ids", str(root / "nope.txt"), "--data", str(root / "data")]) == 2


def test_ids_shortcut_and_broken_file(run, capsys, tmp_path):
    root, _ = run
    args = ["doctor", "ids", "--data", str(root / "data"), "--tokenizer", str(root / "run" / "tokenizer"), "--quiet"]
    assert main([*args, "--ids", str(root / "run" / "ids.txt")]) == 0
    assert "PASS  ids.unique_ids" in capsys.readouterr().out
    lines = (root / "run" / "ids.txt").read_text().splitlines()
    first, second = lines[0].split(" ", 1), lines[1].split(" ", 1)
    bad = tmp_path / "ids.txt"
    bad.write_text("\n".join([lines[0], f"{second[0]} {first[1]}", *lines[2:]]) + "\n")  # two items, one ID
    assert main([*args, "--ids", str(bad), "--json"]) == 1
    rep = _json(capsys)
    assert rep["ok"] is False and "ids.duplicate_ids" in [c["name"] for c in rep["checks"] if not c["ok"]]


def test_recipe_trap_exits_1(run, capsys):
    _, over = run
    assert main(["doctor", "recipe", *over, "train.lr=1e-4", "--json"]) == 1
    rep = _json(capsys)
    failed = {c["name"]: c for c in rep["checks"] if not c["ok"]}
    assert list(failed) == ["recipe.lr"] and "10x below" in failed["recipe.lr"]["message"]


def test_eval_and_leakage_on_the_config(run, capsys):
    _, over = run
    assert main(["doctor", "eval", *over, "--json", "--quiet"]) == 0
    names = [c["name"] for c in _json(capsys)["checks"]]
    assert names[:2] == ["eval.id_token_collisions", "eval.id_string_collisions"] and "eval.sharding" in names
    assert main(["doctor", "leakage", *over, "eval.beams=50", "--quiet"]) == 0
    assert "PASS  leakage.gcn_fingerprint" in capsys.readouterr().out


def test_hidden_inject_fault_flag():
    parser = build_parser()
    args = parser.parse_args(["doctor", "grad-sync", "--inject-fault", "double_reduce", "--nproc", "2"])
    assert args.inject_fault == "double_reduce" and args.nproc == 2
    sub = parser._subparsers._group_actions[0].choices["doctor"]._subparsers._group_actions[0].choices["grad-sync"]
    assert "inject" not in sub.format_help()
    with pytest.raises(SystemExit) as e:
        parser.parse_args(["doctor", "grad-sync", "--inject-fault", "bogus"])
    assert e.value.code == 2
