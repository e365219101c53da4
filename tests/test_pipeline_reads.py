"""Every config key a pipeline stage reads is in its declared `Reads`, and the declaration decides
what reruns: eval.ks / eval.exclude_history / train.select_metric rerun training, logging does not.

The whole pipeline (prepare from raw files, ids, gcn, a real tiny training with a time budget,
evaluate, the three baselines, report) runs on a recording Config (tests/config_reads.py) that
notes every field each stage's code reads; a read that is neither a declared key, nor ignored
with a reason, nor reaching the stage through an upstream stage's fingerprint, fails the test.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from config_reads import reads, recording
from gramc.config import load_config
from gramc.pipeline import pipeline as pl
from gramc.pipeline.stage import Reads, Stage, covers

TINY = ["data.synthetic.num_users=60", "data.synthetic.num_items=40", "ids.vocab_size=300", "ids.clusters=4",
        "ids.levels=2", "gcn.epochs=1", "gcn.eval_every=0", "gcn.dim=8", "gcn.similar_k=3", "model.similar_items=2",
        "eval.bootstrap=5", "eval.ks=[1,5]", "eval.beams=5", "run.device=cpu", "data.max_his=3",
        "model.passage_len=16", "model.user_passage_len=16", "model.target_len=6", "train.epochs=1",
        "train.max_steps=2", "train.select_metric=hit@5", "baseline.sasrec.epochs=1", "train.final_eval_users=5",
        "pipeline.train_minutes=0.05", "pipeline.baselines=[pop,sasrec,lightgcn]"]


def _raw_inputs(tmp: Path) -> list[str]:
    """A raw sequence file and Amazon-style metadata of the synthetic dataset (for the prepare stage)."""
    from gramc.data.synthetic import make_synthetic

    raw = tmp / "raw"
    make_synthetic(load_config(None, TINY).data.synthetic).save(raw)
    items = [json.loads(line) for line in (raw / "items.jsonl").read_text().splitlines()]
    (raw / "meta.json").write_text("".join(json.dumps({"asin": d.pop("id"), **d}) + "\n" for d in items))
    return [f"pipeline.sequences={raw / 'sequences.txt'}", f"pipeline.items={raw / 'meta.json'}"]


def _run_recorded(cfg) -> tuple[dict[str, Stage], dict[str, set[str]], dict[str, tuple[set[str], list[str]]]]:
    """Plan and run every stage of `cfg` (a recording Config): (stages by name, reads of each
    stage's build/adopt, reads of each builder while planning with the stages it made)."""
    plan = pl.Plan(cfg, Path(cfg.run.out), pl.stage_config(cfg, Path(cfg.run.out)), progress=False)
    planned: dict[str, tuple[set[str], list[str]]] = {}
    for make in pl.BUILDERS:
        seen: set[str] = set()
        with reads(seen):
            made = make(plan)
        plan.stages.extend(made)
        planned[make.__name__] = (seen, [s.name for s in made])
    ran: dict[str, set[str]] = {}
    for st in plan.stages:
        seen = ran.setdefault(st.name, set())
        for attr in ("build", "adopt"):
            fn = getattr(st, attr)
            if fn is not None:
                setattr(st, attr, lambda folder, fn=fn, seen=seen: _recorded(fn, folder, seen))
        pl.run_stage(st, log=lambda s: None)
    return {s.name: s for s in plan.stages}, ran, planned


def _recorded(fn, folder, seen):
    with reads(seen):
        return fn(folder)


def _reads(name: str, stages: dict[str, Stage]) -> Reads:
    return pl.DATA_READS if name == "data" else stages[name].reads


def upstream(r: Reads, stages: dict[str, Stage]) -> list[str]:
    """Keys whose values reach a stage through the fingerprints of the stages it runs after: their
    keys, paths and outputs, transitively (not what they ignore)."""
    keys: list[str] = []
    for up in r.after:
        if up == "data" or up in stages:
            u = _reads(up, stages)
            keys += [*u.keys, *u.paths, *u.outputs, *upstream(u, stages)]
    return keys


def declared(name: str, stages: dict[str, Stage], own: Reads | None = None) -> list[str]:
    """Keys a stage may read: its own keys, paths and ignored keys, and what reaches it upstream."""
    r = own or _reads(name, stages)
    return [*r.keys, *r.paths, *r.ignore, *upstream(r, stages)]


def undeclared(name: str, seen: set[str], stages: dict[str, Stage], own: Reads | None = None) -> set[str]:
    allowed = declared(name, stages, own)
    return {k for k in seen if not covers(allowed, k)}


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("reads")
    cfg = recording(load_config(None, TINY + _raw_inputs(tmp) + [f"run.out={tmp / 'run'}"]))
    stages, ran, planned = _run_recorded(cfg)
    # a second run with other eval settings: the evaluate stage cannot reuse the train stage's
    # metrics and evaluates the best checkpoint itself (the other code path of that stage)
    cfg2 = recording(load_config(None, TINY + _raw_inputs(tmp) + [f"run.out={tmp / 'run'}", "eval.bootstrap=7"]))
    stages2, ran2, _ = _run_recorded(cfg2)
    return stages, ran, planned, stages2, ran2


def test_every_stage_reads_only_what_it_declares(recorded):
    stages, ran, planned, stages2, ran2 = recorded
    assert set(ran) == {"prepare", "ids", "gcn", "train", "evaluate", "baseline-pop", "baseline-sasrec",
                        "baseline-lightgcn", "report"}
    assert {"eval.ks", "eval.exclude_history", "train.select_metric", "model.prefix.placement"} <= ran["train"]
    for name, seen in ran.items():
        assert not undeclared(name, seen, stages), f"stage {name} reads undeclared keys"
    # the evaluate stage that evaluates a checkpoint itself (eval.bootstrap differs from training's)
    assert "eval.beams" in ran2["evaluate"] and "eval.beams" not in ran["evaluate"]
    for name, seen in ran2.items():
        assert not undeclared(name, seen, stages2), f"stage {name} reads undeclared keys (second run)"
    # planning: a builder reads only what its stages declare, or what decides whether they run
    for make, (seen, made) in planned.items():
        allowed = [k for n in made for k in [*declared(n, stages), *stages[n].reads.when]]
        assert made and not {k for k in seen if not covers(allowed, k)}, f"{make} reads undeclared keys planning"


def test_a_missing_declaration_is_caught(recorded):
    stages, ran, *_ = recorded
    short = dataclasses.replace(pl.TRAIN_READS, keys=tuple(k for k in pl.TRAIN_READS.keys
                                                            if k not in ("eval.ks", "train")))
    missing = undeclared("train", ran["train"], stages, own=short)
    assert "eval.ks" in missing and "train.select_metric" in missing and "train.lr" in missing


def test_the_fingerprint_holds_exactly_the_declared_keys(recorded):
    stages, *_ = recorded
    for st in stages.values():
        assert set(st.config) == set(st.reads.keys), st.name
    assert "num_workers" not in stages["train"].config["train"]  # ignored: the same batches either way
    assert "out" not in stages["gcn"].config["gcn"] and "device" not in stages["gcn"].config["gcn"]


def _fake_train(sc, folder: Path, train_minutes, resume):
    (folder / "config.yaml").write_text("run: {seed: 1}\n")
    (folder / "log.jsonl").write_text("")
    for name, split in (("metrics.json", "test"), ("metrics_valid.json", "valid")):
        (folder / name).write_text(json.dumps({"split": split, "users": 1, "metrics": {"hit@1": 0.5}}))
    return {}


def _fake_eval(sc, train_folder: Path, folder: Path, eval_users):
    for name in ("metrics.json", "metrics_valid.json"):
        (folder / name).write_text((train_folder / name).read_text())
    return {}


@pytest.mark.parametrize("change, reruns", [
    ("eval.ks=[1,5,10,20]", True), ("eval.exclude_history=true", True), ("train.select_metric=hit@5", True),
    ("train.final_eval_users=3", True), ("train.log_every=7", False), ("eval.bootstrap=9", False),
    ("train.num_workers=2", False)])
def test_selection_settings_rerun_training_and_logging_does_not(tmp_path, monkeypatch, change, reruns):
    monkeypatch.setattr(pl, "train_stage", _fake_train)
    monkeypatch.setattr(pl, "evaluate_stage", _fake_eval)
    base = ["data.synthetic.num_users=60", "data.synthetic.num_items=40", "ids.vocab_size=300", "ids.clusters=4",
            "ids.levels=2", "model.prefix.enabled=false", "model.similar_items=0", "eval.ks=[1,5,10]",
            "run.device=cpu", "pipeline.baselines=[]", f"run.out={tmp_path / 'run'}"]
    pl.run_pipeline(load_config(None, base), progress=False, log=lambda s: None)
    res = {r.name: r.status for r in pl.run_pipeline(load_config(None, base + [change]), progress=False,
                                                       log=lambda s: None)}
    assert res["ids"] == "skipped"
    assert res["train"] == ("ran" if reruns else "skipped"), (change, res)
