"""Pipeline stage machinery: fingerprints, skipping, restart after a crash, reruns on changes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gramc.config import load_config
from gramc.io import read_json, sha256_file, write_json
from gramc.pipeline import pipeline as pl
from gramc.pipeline.report import write_report

SMALL = ["data.synthetic.num_users=120", "data.synthetic.num_items=60", "ids.vocab_size=300", "ids.clusters=4",
         "ids.levels=2", "gcn.epochs=2", "gcn.eval_every=0", "gcn.dim=16", "gcn.similar_k=5",
         "model.similar_items=3", "eval.bootstrap=20", "eval.ks=[1,5,10]", "run.device=cpu",
         "pipeline.baselines=[pop]"]


def _fake_train(sc, folder: Path, train_minutes, resume):
    """Stands in for training: writes what the evaluate/report stages read."""
    (folder / "log.jsonl").write_text(json.dumps({"kind": "step", "step": 1, "loss": 3.0}) + "\n")
    (folder / "config.yaml").write_text("run: {seed: 1}\n")
    for name, split in (("metrics.json", "test"), ("metrics_valid.json", "valid")):
        write_json(folder / name, {"split": split, "users": 1, "metrics": {"hit@10": 0.5, "ndcg@10": 0.25},
                                   "ci": {"hit@10": [0.4, 0.6]}, "model": "gramc"})
    return {"fake": True, "resume": resume}


def _fake_eval(sc, train_folder: Path, folder: Path, eval_users):
    for name in ("metrics.json", "metrics_valid.json"):
        write_json(folder / name, read_json(train_folder / name))
    write_json(folder / "source.json", {"train_run": str(train_folder), "how": "copied"})
    return {}


def _snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): sha256_file(p) for p in sorted(root.rglob("*"))
            if p.is_file() and p.parts[len(root.parts)] in ("ids", "gcn")}


def test_fingerprint_changes_with_config_and_inputs(tmp_path):
    f = tmp_path / "x.txt"
    f.write_text("a")
    a = pl.stage_fingerprint({"gcn": {"epochs": 1}}, {"data": pl.input_fingerprint(f)})
    assert a == pl.stage_fingerprint({"gcn": {"epochs": 1}}, {"data": pl.input_fingerprint(f)})
    assert a != pl.stage_fingerprint({"gcn": {"epochs": 2}}, {"data": pl.input_fingerprint(f)})
    f.write_text("b")
    assert a != pl.stage_fingerprint({"gcn": {"epochs": 1}}, {"data": pl.input_fingerprint(f)})
    with pytest.raises(pl.PipelineError, match="does not exist"):
        pl.input_fingerprint(tmp_path / "missing")


def test_crash_restart_skips_finished_stages(tmp_path, monkeypatch):
    root = tmp_path / "run"
    cfg = load_config(None, SMALL + [f"run.out={root}"])

    def boom(*a, **k):
        raise RuntimeError("injected crash in training")

    monkeypatch.setattr(pl, "train_stage", boom)
    with pytest.raises(RuntimeError, match="injected crash"):
        pl.run_pipeline(cfg, progress=False, log=lambda s: None)
    assert (root / "ids" / ".stage.json").is_file() and (root / "gcn" / ".stage.json").is_file()
    assert not (root / "train" / ".stage.json").exists()  # the crashed stage is not marked done
    assert (root / "train" / pl.PENDING_FILE).is_file()
    before = _snapshot(root)
    assert any(k.startswith("ids/ids.txt") for k in before) and any(k.startswith("gcn/") for k in before)

    monkeypatch.setattr(pl, "train_stage", _fake_train)
    monkeypatch.setattr(pl, "evaluate_stage", _fake_eval)
    results = {r.name: r for r in pl.run_pipeline(cfg, progress=False, log=lambda s: None)}
    assert results["ids"].status == "skipped" and results["gcn"].status == "skipped"
    assert results["train"].status == "ran" and results["evaluate"].status == "ran"
    assert _snapshot(root) == before  # earlier outputs untouched by the restart
    assert (root / "report" / "report.md").is_file()
    assert (root / "baselines" / "pop" / "metrics.json").is_file()

    # a third run does nothing at all
    again = pl.run_pipeline(cfg, progress=False, log=lambda s: None)
    assert all(r.status == "skipped" for r in again)


def test_changed_config_reruns_stage_and_downstream_only(tmp_path, monkeypatch):
    root = tmp_path / "run"
    monkeypatch.setattr(pl, "train_stage", _fake_train)
    monkeypatch.setattr(pl, "evaluate_stage", _fake_eval)
    cfg = load_config(None, SMALL + [f"run.out={root}"])
    pl.run_pipeline(cfg, progress=False, log=lambda s: None)
    ids_before = sha256_file(root / "ids" / ".stage.json")
    cfg2 = load_config(None, SMALL + [f"run.out={root}", "gcn.epochs=3"])
    res = {r.name: r.status for r in pl.run_pipeline(cfg2, progress=False, log=lambda s: None)}
    assert res["ids"] == "skipped" and res["baseline-pop"] == "skipped"
    assert res["gcn"] == res["train"] == res["evaluate"] == res["report"] == "ran"
    assert sha256_file(root / "ids" / ".stage.json") == ids_before
    assert read_json(root / "gcn" / ".stage.json")["config"]["gcn"]["epochs"] == 3
    # the previous training folder is kept aside, not deleted
    assert list(tmp_path.glob("run/train.replaced-*"))


def test_prepare_stage_from_raw_files(tmp_path):
    from gramc.data.synthetic import make_synthetic

    cfg0 = load_config(None, SMALL)
    ds = make_synthetic(cfg0.data.synthetic)
    raw = tmp_path / "raw"
    ds.save(raw)
    root = tmp_path / "run"
    cfg = load_config(None, SMALL + [f"run.out={root}", f"pipeline.sequences={raw / 'sequences.txt'}"])
    res = pl.run_pipeline(cfg, stages=["prepare"], progress=False, log=lambda s: None)
    assert [r.name for r in res] == ["prepare"] and res[0].summary["users"] == ds.num_users
    assert [r.name for r in pl.run_pipeline(cfg, stages=["prepare", "baselines"], progress=False,
                                            log=lambda s: None)] == ["prepare", "baseline-pop"]
    assert (root / "data" / "sequences.txt").read_text() == (raw / "sequences.txt").read_text()
    assert pl.run_pipeline(cfg, stages=["prepare"], progress=False, log=lambda s: None)[0].status == "skipped"


def test_report_compares_runs(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for folder, lr, hit in ((a, 0.001, 0.3), (b, 0.01, 0.1)):
        folder.mkdir()
        (folder / "config.yaml").write_text(f"train: {{lr: {lr}, epochs: 3}}\nrun: {{out: {folder}}}\n")
        write_json(folder / "metrics.json", {"split": "test", "users": 10, "metrics": {"hit@10": hit, "ndcg@10": hit / 2},
                                             "ci": {"hit@10": [hit - 0.05, hit + 0.05]}})
        (folder / "log.jsonl").write_text("".join(json.dumps({"kind": "step", "step": s, "loss": 5 - s}) + "\n"
                                                  for s in range(1, 4)) + '{"kind": "valid", "step": 3, "ndc')
    out = write_report([a, b], tmp_path / "rep" / "report.md")
    text = out.read_text()
    assert "`train.lr`" in text and "`train.epochs`" not in text  # only differing keys
    assert "0.3000 [0.2500, 0.3500]" in text
    assert (tmp_path / "rep" / "report_curves.png").stat().st_size > 0
    assert (tmp_path / "rep" / "report_metrics.png").stat().st_size > 0


def test_gcn_folder_from_gcn_train_is_adopted_only_if_it_matches(tmp_path, monkeypatch):
    from gramc.data.synthetic import make_synthetic
    from gramc.graph.lightgcn import train_lightgcn

    monkeypatch.setattr(pl, "train_stage", _fake_train)
    monkeypatch.setattr(pl, "evaluate_stage", _fake_eval)
    cfg = load_config(None, SMALL + [f"run.out={tmp_path / 'run'}", f"gcn.out={tmp_path / 'g'}"])
    train_lightgcn(make_synthetic(cfg.data.synthetic), cfg.gcn, tmp_path / "g", progress=False)
    stamp = (tmp_path / "g" / "gcn_item_embeddings.pt").stat().st_mtime_ns
    res = {r.name: r.status for r in pl.run_pipeline(cfg, stages=["gcn"], progress=False, log=lambda s: None)}
    assert res["gcn"] == "adopted"
    assert (tmp_path / "g" / "gcn_item_embeddings.pt").stat().st_mtime_ns == stamp
    # other settings: the folder is not adopted but rebuilt
    cfg2 = load_config(None, SMALL + [f"run.out={tmp_path / 'run2'}", f"gcn.out={tmp_path / 'g2'}"])
    train_lightgcn(make_synthetic(cfg.data.synthetic), load_config(None, SMALL + ["gcn.seed=5"]).gcn,
                   tmp_path / "g2", progress=False)
    res2 = {r.name: r.status for r in pl.run_pipeline(cfg2, stages=["gcn"], progress=False, log=lambda s: None)}
    assert res2["gcn"] == "ran"


def test_unfinished_training_continues_when_only_budgets_changed(tmp_path):
    """An interrupted in-place stage keeps its folder when only resumable keys (train.patience,
    train.epochs) changed, and names them; any other change still moves the folder aside."""
    from gramc.pipeline.stage import Stage, run_stage

    found: list[bool] = []

    def stage(overrides: list[str], interrupt: bool) -> Stage:
        cfg = load_config(None, overrides)
        config = {"train": {"epochs": cfg.train.epochs, "patience": cfg.train.patience, "lr": cfg.train.lr}}

        def build(folder: Path) -> dict:
            found.append((folder / "checkpoint").is_file())  # whether it found its earlier work
            (folder / "checkpoint").write_text("step 100")
            if interrupt:
                raise KeyboardInterrupt  # interrupted mid-training
            return {}

        return Stage("train", tmp_path / "train", config, {}, build, atomic=False, kinds=("run",),
                     resumable=("train.epochs", "train.patience"))

    with pytest.raises(KeyboardInterrupt):
        run_stage(stage(["train.patience=2"], interrupt=True), log=lambda s: None)
    logs: list[str] = []
    with pytest.raises(KeyboardInterrupt):
        run_stage(stage(["train.patience=3", "train.epochs=12"], interrupt=True), log=logs.append)
    assert found == [False, True] and not list(tmp_path.glob("train.replaced-*"))  # continued in place
    said = " ".join(logs)
    assert "train.patience 2 -> 3" in said and "train.epochs" in said and "train.lr" not in said

    run_stage(stage(["train.patience=3", "train.epochs=12", "train.lr=0.5"], interrupt=False), log=lambda s: None)
    assert found[-1] is False and len(list(tmp_path.glob("train.replaced-*"))) == 1  # another lr: started over
