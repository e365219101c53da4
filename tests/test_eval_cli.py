"""`gramc evaluate` on a run folder: files, schema, table, errors; load_model_from_run."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gramc.cli import main
from gramc.eval.evaluate import evaluate_split
from gramc.model.runs import load_model_from_run

from eval_fakes import make_run


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    d = tmp_path_factory.mktemp("evalrun") / "run"
    make_run(d)
    return d


def test_evaluate_command_writes_metrics_predictions_and_plot(run, capsys):
    rc = main(["evaluate", "--run", str(run), "--split", "valid", "--beams", "6", "--max-users", "10"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "ndcg@10" in out and "95% CI" in out
    folder = run / "eval" / "valid-best"
    rec = json.loads((folder / "metrics.json").read_text())
    assert rec["split"] == "valid" and rec["users"] == 10 and rec["beams"] == 6 and rec["invalid"] == 0
    assert rec["length_penalty"] == 0.0 and rec["checkpoint"].endswith("best")
    assert set(rec["metrics"]) == {f"{m}@{k}" for m in ("hit", "ndcg") for k in (1, 5, 10, 20, 50)} | {"mrr"}
    assert set(rec["ci"]) == set(rec["metrics"])
    preds = [json.loads(line) for line in (folder / "predictions.jsonl").read_text().splitlines()]
    assert len(preds) == 10 and all(len(p["items"]) == len(p["scores"]) <= 6 for p in preds)
    hits = np.array([p["hit_rank"] for p in preds])
    assert rec["metrics"]["hit@5"] == pytest.approx(np.mean((hits >= 1) & (hits <= 5)))
    assert (folder / "metrics.png").stat().st_size > 1000
    assert (folder / "run_info.json").is_file() and (folder / "config.yaml").is_file()

    # the loaded model gives the same numbers as the command; overrides apply on top of config.yaml
    model, assets, cfg = load_model_from_run(run, "best", ["eval.beams=6"], progress=False)
    res = evaluate_split(model, assets, cfg, "valid", max_users=10, progress=False)
    assert res.metrics == pytest.approx(rec["metrics"])
    assert [p["hit_rank"] for p in preds] == [int(r) + 1 if r >= 0 else 0 for r in res.ranks]


def test_json_output_and_length_penalty_override(run, capsys):
    rc = main(["evaluate", "--run", str(run), "--split", "test", "--max-users", "4", "--json",
               "eval.length_penalty=1.0", "--out", str(run / "lp1")])
    assert rc == 0
    rec = json.loads(capsys.readouterr().out)
    assert rec["length_penalty"] == 1.0 and rec["users"] == 4
    assert json.loads((run / "lp1" / "metrics.json").read_text()) == rec


def test_missing_checkpoint_is_a_clear_error(run, capsys):
    rc = main(["evaluate", "--run", str(run), "--split", "valid", "--checkpoint", "last"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "checkpoints/last/model.safetensors" in err and "--checkpoint best" in err
    rc = main(["evaluate", "--run", str(run / "nope"), "--split", "valid"])
    assert rc == 2 and "no config.yaml" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["evaluate", "recommend"])
def test_help_renders(command, capsys):
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0 and "--run" in capsys.readouterr().out


def test_trie_softmax_run_evaluates_in_its_mode_and_refuses_the_other(tmp_path, capsys):
    d = tmp_path / "trie-run"
    make_run(d, "model.softmax=trie")
    rc = main(["evaluate", "--run", str(d), "--split", "valid", "--beams", "6", "--max-users", "6", "--json"])
    assert rc == 0
    rec = json.loads(capsys.readouterr().out)
    assert rec["users"] == 6 and rec["invalid"] == 0
    rc = main(["evaluate", "--run", str(d), "--split", "valid", "--max-users", "2", "model.softmax=vocab"])
    err = capsys.readouterr().err
    assert rc == 2 and "model.softmax=trie" in err and "model.softmax=vocab" in err


def test_evaluate_out_never_replaces_a_users_own_metrics_json(run, tmp_path, capsys):
    """A folder holding somebody's metrics.json (and no run_info.json gramc wrote) is not an
    evaluation folder: --out there is refused and the file stays as it was."""
    mine = tmp_path / "analysis"
    mine.mkdir()
    (mine / "metrics.json").write_text('{"mine": true}')
    rc = main(["evaluate", "--run", str(run), "--split", "valid", "--beams", "6", "--max-users", "5", "--out", str(mine)])
    assert rc == 2 and "already holds files gramc did not write" in capsys.readouterr().err
    assert (mine / "metrics.json").read_text() == '{"mine": true}' and sorted(p.name for p in mine.iterdir()) == ["metrics.json"]
    # gramc's own evaluation folder is rewritten as before
    own = tmp_path / "own"
    for _ in range(2):
        assert main(["evaluate", "--run", str(run), "--split", "valid", "--beams", "6", "--max-users", "5",
                     "--out", str(own)]) == 0
    assert json.loads((own / "metrics.json").read_text())["split"] == "valid"


def test_evaluate_fuses_when_eval_fusion_is_on_and_keeps_the_beams_own_metrics(run, tmp_path, capsys, monkeypatch):
    import torch

    from gramc.eval.fusion import Collaborative

    d = run
    monkeypatch.setattr(Collaborative, "for_run", classmethod(lambda cls, c, a: Collaborative(
        torch.randn(a.ds.num_items, 8, generator=torch.Generator().manual_seed(0)))))
    out = tmp_path / "fused"
    assert main(["evaluate", "--run", str(d), "--split", "test", "--out", str(out), "eval.fusion.enabled=true",
                 "eval.fusion.weight=0.5", "eval.fusion.candidates=5"]) == 0
    printed = capsys.readouterr().out
    rec = json.loads((out / "metrics.json").read_text())
    assert rec["fusion"]["weight"] == 0.5 and not rec["fusion"]["tuned"] and "unfused" in rec
    assert "(weight 0.5)" in rec["protocol"]["ranking"] and "fused with lightgcn" in printed
    plain = tmp_path / "plain"
    assert main(["evaluate", "--run", str(d), "--split", "test", "--out", str(plain)]) == 0
    assert json.loads((plain / "metrics.json").read_text())["metrics"] == rec["unfused"]["metrics"]


def test_evaluate_fuses_the_dense_head_of_a_run_that_has_one(tmp_path, capsys):
    d = tmp_path / "dense"
    make_run(d, "model.dense.enabled=true", "model.dense.item=text")
    out = tmp_path / "fused"
    assert main(["evaluate", "--run", str(d), "--split", "test", "--out", str(out), "eval.fusion.enabled=true",
                 "eval.fusion.scorer=dense", "eval.fusion.candidates=4", "eval.fusion.tune_users=6"]) == 0
    rec = json.loads((out / "metrics.json").read_text())
    assert rec["fusion"]["scorers"] == ["dense"] and rec["fusion"]["tuned"]
    assert set(rec["fusion"]["alone"]["dense"]["metrics"]) == set(rec["metrics"])
    assert "dense top 4, fused" in rec["protocol"]["ranking"]
    # a run without a dense head is told so, in one line
    plain = tmp_path / "plain"
    make_run(plain)
    assert main(["evaluate", "--run", str(plain), "--split", "test", "--out", str(tmp_path / "x"),
                 "eval.fusion.enabled=true", "eval.fusion.scorer=dense"]) != 0
    assert "model.dense.enabled" in capsys.readouterr().err


def test_split_both_writes_each_split_from_one_item_pass(run, tmp_path, monkeypatch, capsys):
    import gramc.eval.evaluate as ev

    passes = []
    real = ev.encode_all_items
    monkeypatch.setattr(ev, "encode_all_items", lambda *a, **k: passes.append(1) or real(*a, **k))
    out = tmp_path / "both"
    assert main(["evaluate", "--run", str(run), "--split", "both", "--beams", "6", "--max-users", "5",
                 "--out", str(out)]) == 0
    assert len(passes) == 1
    for split in ("valid", "test"):
        rec = json.loads((out / split / "metrics.json").read_text())
        assert rec["split"] == split and rec["users"] == 5
        single = tmp_path / f"one-{split}"
        assert main(["evaluate", "--run", str(run), "--split", split, "--beams", "6", "--max-users", "5",
                     "--out", str(single)]) == 0
        assert json.loads((single / "metrics.json").read_text())["metrics"] == rec["metrics"]


def test_evaluate_prints_the_weights_of_two_fused_scorers(tmp_path, capsys):
    d = tmp_path / "dense"
    make_run(d, "model.dense.enabled=true", "model.dense.item=both")
    assert main(["evaluate", "--run", str(d), "--split", "test", "--out", str(tmp_path / "f"), "eval.fusion.enabled=true",
                 "eval.fusion.scorer=both", "eval.fusion.weight=0.5", "eval.fusion.candidates=3"]) == 0
    assert "weight lightgcn 0.25, dense 0.25" in capsys.readouterr().out


def test_evaluate_reads_the_runs_config_once(run, tmp_path, monkeypatch):
    import gramc.model.runs as runs

    calls = []
    real = runs.run_config
    monkeypatch.setattr(runs, "run_config", lambda *a, **k: calls.append(a) or real(*a, **k))
    assert main(["evaluate", "--run", str(run), "--split", "valid", "--beams", "6", "--max-users", "3",
                 "--out", str(tmp_path / "once")]) == 0
    assert len(calls) == 1
