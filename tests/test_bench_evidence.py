"""bench/evidence_beauty.py end to end on tiny synthetic settings: stages, filters, resume, outputs."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

from gramc.config import Config
from gramc.data.prepare import prepare_synthetic

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _bench():
    spec = importlib.util.spec_from_file_location("evidence_beauty", ROOT / "bench" / "evidence_beauty.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["evidence_beauty"] = mod  # dataclasses look their module up while the class is built
    spec.loader.exec_module(mod)
    return mod


TINY = ["train.epochs=1", "train.max_steps=2", "train.eval_users=8", "train.log_every=1", "eval.beams=20",
        "eval.bootstrap=50", "gcn.epochs=2", "gcn.eval_every=0", "baseline.sasrec.epochs=1",
        "model.passage_len=32", "model.user_passage_len=32", "ids.vocab_size=300", "ids.clusters=6"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("evidence")
    cfg = Config()
    cfg.data.synthetic.num_users = 120
    cfg.data.synthetic.num_items = 80
    prepare_synthetic(tmp / "parent", cfg)
    doc = tmp / "benchmarks.md"
    doc.write_text("# Benchmarks\n\n## Other\n\nkept\n")
    args = ["--parent", str(tmp / "parent"), "--work", str(tmp / "work"), "--config",
            str(ROOT / "configs" / "quickstart.yaml"), "--ids-file", "", "--tokenizer", "train",
            "--fraction", "0.5", "--kcore", "0", "--placements", "user_passage,memory", "--train-minutes", "0",
            "--sasrec-minutes", "0.05", "--threads", "1", "--results", str(tmp / "results" / "ev.json"),
            "--doc", str(doc)]
    for o in TINY:
        args += ["--set", o]
    return tmp, args


def _records(work: Path) -> dict[str, str]:
    """`started` of every stage record: a stage that was redone gets a new one."""
    return {str(p.relative_to(work)): json.loads(p.read_text())["started"] for p in work.rglob(".stage.json")}


def test_subset_benchmark_runs_filters_and_resumes(setup, monkeypatch):
    tmp, args = setup
    bench = _bench()
    assert bench.main(args + ["--models", "pop,gram"]) == 0
    res = json.loads((tmp / "results" / "ev.json").read_text())["subset"]
    assert list(res["models"]) == ["pop", "gram"]
    gram = res["models"]["gram"]
    assert gram["test"]["users"] == 60 and gram["test"]["beams"] == 20 and not gram["prefix"]["enabled"]
    assert gram["curve"] and gram["steps"] == 2
    info = json.loads((tmp / "work" / "models" / "gram" / "test" / "run_info.json").read_text())
    assert info["config"]["model"]["prefix"]["enabled"] is False and "checkpoint/model.safetensors" in info["inputs"]
    before = _records(tmp / "work")

    # an interruption after GRAM-C's training, before its test evaluation
    real = bench.run_test_stage

    def crash(cfg, root, fp, users, valid_too=False):
        if root.name == "gramc-user_passage":
            raise RuntimeError("simulated interruption")
        return real(cfg, root, fp, users, valid_too)

    monkeypatch.setattr(bench, "run_test_stage", crash)
    with pytest.raises(RuntimeError, match="simulated"):
        bench.main(args + ["--models", "pop,gram,gramc-user_passage"])
    monkeypatch.setattr(bench, "run_test_stage", real)
    mid = _records(tmp / "work")
    assert all(mid[k] == v for k, v in before.items())  # nothing finished was redone
    assert "models/gramc-user_passage/train/.stage.json" in mid

    # phase 2 needs every placement: a clear error naming the missing one
    with pytest.raises(SystemExit, match="gramc-user_passage has not finished"):  # its test is missing
        bench.main(args + ["--models", "abl-shuffled"])

    assert bench.main(args + ["--models", "pop,gram,gramc-user_passage,gramc-memory,abl-shuffled"]) == 0
    after = _records(tmp / "work")
    assert all(after[k] == v for k, v in mid.items())  # GRAM-C's training was not redone either
    res = json.loads((tmp / "results" / "ev.json").read_text())["subset"]
    best = res["best_placement"]
    assert best in ("user_passage", "memory")
    abl = res["models"]["abl-shuffled"]
    assert abl["prefix"]["shuffle_table"] and abl["prefix"]["placement"] == best
    assert {"gramc-user_passage - gram", "gramc-memory - gram", f"abl-shuffled - gramc-{best}"} <= set(res["paired"])
    d = res["paired"]["gramc-memory - gram"]
    assert d["users"] == 60 and d["diff"]["ndcg@10"]["lo"] <= d["diff"]["ndcg@10"]["mean"] <= d["diff"]["ndcg@10"]["hi"]
    assert Path(res["curves"]).is_file()
    doc = (tmp / "benchmarks.md").read_text()
    assert "## Other\n\nkept" in doc and "## Evidence on Beauty (results)" in doc
    assert "| abl-shuffled |" in doc and "gramc-memory - gram" in doc


def test_second_seeds_pair_over_both_runs_and_full_mode_uses_the_best_placement(setup):
    tmp, args = setup
    bench = _bench()
    best = json.loads((tmp / "results" / "ev.json").read_text())["subset"]["best_placement"]
    assert bench.main(args + ["--models", f"gram-s2,gramc-{best}-s2"]) == 0
    res = json.loads((tmp / "results" / "ev.json").read_text())["subset"]
    assert res["models"]["gram-s2"]["seed"] == res["models"]["gram"]["seed"] + 1
    both = res["paired"]["GRAM-C (best, 2 seeds) - GRAM (2 seeds)"]
    assert both["a"] == ["gram", "gram-s2"] and both["b"] == [f"gramc-{best}", f"gramc-{best}-s2"]
    assert res["paired"]["gram-s2 - gram"]["a"] == ["gram"] and res["paired"]["gram-s2 - gram"]["b"] == ["gram-s2"]
    assert res["paired"][f"gramc-{best} - GRAM (2 seeds)"]["a"] == ["gram", "gram-s2"]
    vs_pop = res["paired"]["GRAM-C (best, 2 seeds) - pop"]  # baselines keep per-user ranks too
    assert vs_pop["users"] == 60 and vs_pop["a"] == ["pop"]

    assert bench.main(args + ["--full"]) == 0
    full = json.loads((tmp / "results" / "ev.json").read_text())["full"]
    assert list(full["models"]) == ["gram", f"gramc-{best}"]
    assert full["models"]["gram"]["test"]["users"] == 120  # every user of the parent
    assert (tmp / "work" / "full" / f"gramc-{best}" / "test" / "ranks.json").is_file()
    doc = (tmp / "benchmarks.md").read_text()
    assert "### Full Beauty split" in doc and "GRAM, published (GPU, pretrained t5-small, 30 epochs) | 0.0641" in doc


def test_redundancy_control_trains_the_pair_without_similar_items_on_the_best_placement(setup):
    from gramc.model.inputs import PassageCache

    tmp, args = setup
    bench = _bench()
    best = json.loads((tmp / "results" / "ev.json").read_text())["subset"]["best_placement"]
    assert bench.main(args + ["--models", "nosim-gram,nosim-gramc"]) == 0
    res = json.loads((tmp / "results" / "ev.json").read_text())["subset"]
    rows = res["models"]
    assert rows["nosim-gram"]["similar_items"] == rows["nosim-gramc"]["similar_items"] == 0
    assert rows["gram"]["similar_items"] > 0
    assert not rows["nosim-gram"]["prefix"]["enabled"]
    assert rows["nosim-gramc"]["prefix"]["enabled"] and rows["nosim-gramc"]["prefix"]["placement"] == best
    models = tmp / "work" / "models"  # the passages themselves: no neighbour token kept, where GRAM's have some
    assert int(PassageCache.load(models / "nosim-gramc" / "train" / "passage_cache.pt").similar_kept.sum()) == 0
    assert int(PassageCache.load(models / "gram" / "train" / "passage_cache.pt").similar_kept.sum()) > 0
    pair = res["paired"]["nosim-gramc - nosim-gram"]
    assert pair["a"] == ["nosim-gram"] and pair["b"] == ["nosim-gramc"] and pair["users"] == 60
    assert res["paired"]["nosim-gram - gram"]["a"] == ["gram"]
    assert res["paired"][f"nosim-gramc - gramc-{best}"]["a"] == [f"gramc-{best}"]
    assert "| nosim-gramc |" in (tmp / "benchmarks.md").read_text()


def test_probe_measures_training_and_search_rates(setup):
    tmp, args = setup
    bench = _bench()
    assert bench.main(args + ["--probe", "--probe-steps", "2", "--probe-users", "5"]) == 0
    runs = json.loads((tmp / "results" / "ev_probe.json").read_text())["runs"]
    assert len(runs) == 1 and runs[0]["steps"] == 2 and runs[0]["eval_users"] == 5
    assert runs[0]["train_samples_per_s"] > 0 and runs[0]["eval_users_per_s"] > 0
    assert runs[0]["train_samples_per_epoch"] > runs[0]["samples"] > 0 and "--probe" in runs[0]["command"]


def test_a_work_folder_of_another_subset_is_refused(setup):
    tmp, args = setup
    bench = _bench()
    other = [a if a != "0.5" else "0.4" for a in args]  # --fraction 0.5 -> 0.4, same --work
    with pytest.raises(SystemExit, match="holds another subset"):
        bench.main(other + ["--models", "pop"])
    results = (tmp / "results" / "ev.json").read_text()
    with pytest.raises(SystemExit, match=r"unknown model\(s\) \['nope'\]"):
        bench.main(args + ["--models", "pop,nope"])
    assert (tmp / "results" / "ev.json").read_text() == results  # refused before anything ran


def test_lanes_run_models_in_parallel_children_and_merge_their_rows(setup):
    tmp, args = setup
    bench = _bench()
    args = list(args)
    args[args.index("--work") + 1] = str(tmp / "work-lanes")
    args[args.index("--results") + 1] = str(tmp / "results" / "lanes.json")
    assert bench.main(args + ["--lanes", "2", "--models", "pop,lightgcn,gram,gramc-memory"]) == 0
    res = json.loads((tmp / "results" / "lanes.json").read_text())["subset"]
    assert set(res["models"]) == {"pop", "lightgcn", "gram", "gramc-memory"}  # no lane lost another's row
    assert len(res["commands"]) == 1 and "--no-summary" not in res["commands"][0]  # the call, not its children
    assert res["models"]["gramc-memory"]["prefix"]["placement"] == "memory"
    assert "gramc-memory - gram" in res["paired"] and "x 2 lanes" in res["machine"]
    logs = tmp / "work-lanes" / "lanes"
    assert (logs / "pop.log").is_file() and (logs / "gram.log").is_file()  # baselines share one lane
    assert not (logs / "lightgcn.log").exists()
    assert "gramc-memory - pop" in res["paired"] and "gramc-memory - lightgcn" in res["paired"]
    before = _records(tmp / "work-lanes")
    assert bench.main(args + ["--lanes", "2", "--models", "gram,gramc-memory"]) == 0
    assert _records(tmp / "work-lanes") == before  # a rerun resumes: nothing redone

    # --render-only recomputes the summary from the rows alone (lanes' children write rows only)
    path = tmp / "results" / "lanes.json"
    full = json.loads(path.read_text())
    paired_before = full["subset"].pop("paired")
    path.write_text(json.dumps(full))
    assert bench.main(args + ["--render-only"]) == 0
    assert json.loads(path.read_text())["subset"]["paired"] == paired_before
    assert _records(tmp / "work-lanes") == before

    # the summary keeps a gzip copy of every row's ranks: without the run folders' ranks (a new machine),
    # the same intervals come back from the copies alone
    rows = json.loads(path.read_text())["subset"]["models"]
    assert all(Path(r["ranks_kept"]).is_file() for r in rows.values())
    for r in rows.values():
        own = Path(r["out"]) / ("test/ranks.json" if r["kind"] == "generative" else "ranks_test.json")
        own.unlink()
    full = json.loads(path.read_text())
    full["subset"].pop("paired")
    path.write_text(json.dumps(full))
    assert bench.main(args + ["--render-only"]) == 0
    assert json.loads(path.read_text())["subset"]["paired"] == paired_before


def test_progress_reads_the_curves_of_finished_and_running_models(setup):
    tmp, args = setup
    bench = _bench()
    running = tmp / "work" / "models" / "gramc-every_passage" / "train"  # a run that has not finished
    running.mkdir(parents=True)
    (running / "log.jsonl").write_text(json.dumps({"kind": "valid", "epoch": 0, "step": 3, "valid_loss": 5.0,
                                                   "ndcg@10": 0.01, "hit@10": 0.02}) + "\n")
    assert bench.main(args + ["--progress"]) == 0
    out = json.loads((tmp / "results" / "ev_progress.json").read_text())["models"]
    assert out["gram"]["finished"] and out["gram"]["curve"][0]["step"] == 2
    assert not out["gramc-every_passage"]["finished"] and out["gramc-every_passage"]["curve"][0]["ndcg@10"] == 0.01
    assert (tmp / "results" / "ev_progress.png").is_file()


def test_interim_reading_of_a_run_pairs_its_best_checkpoint_with_a_finished_model(setup):
    tmp, _ = setup
    spec = importlib.util.spec_from_file_location("evidence_interim", ROOT / "bench" / "evidence_interim.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    models = tmp / "work" / "models"
    out = tmp / "results" / "interim.json"
    assert mod.main(["--run", str(models / "gram" / "train"), "--against",
                     str(models / "gramc-user_passage" / "test" / "ranks.json"), "--out", str(out)]) == 0
    rec = json.loads(out.read_text())
    gram = json.loads((models / "gram" / "test" / "metrics.json").read_text())
    assert rec["test"]["users"] == 60 and rec["checkpoint_step"] >= 1
    assert abs(rec["test"]["metrics"]["ndcg@10"] - gram["metrics"]["ndcg@10"]) < 1e-9  # same checkpoint, same users
    d = rec["paired_against_minus_run"]["ndcg@10"]
    assert d["lo"] <= d["mean"] <= d["hi"]


def test_a_run_early_stopping_stopped_trains_on_to_the_end_of_its_schedule(setup, tmp_path, monkeypatch):
    import shutil

    import yaml

    from gramc.pipeline import pipeline as pipeline_module

    tmp, args = setup
    bench = _bench()
    assert bench.main(args + ["--models", "gram"]) == 0  # already done when the first test has run
    finished = tmp / "work" / "models" / "gram" / "train"
    assert bench.train_to_schedule_end(finished) is None  # trained to its schedule's end: left alone
    assert not (finished / bench.CONTINUED_FILE).exists()

    # a copy whose schedule is 4 steps, stopped (done) at step 2: what early stopping leaves
    run = tmp_path / "train"
    shutil.copytree(finished, run)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["train"]["max_steps"] = 4
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    info = json.loads((run / "run_info.json").read_text())
    (run / "run_info.json").write_text(json.dumps({**info, "total_steps": 4}))
    state = json.loads((run / "checkpoints" / "last" / "state.json").read_text())
    assert state["done"] and state["step"] == 2

    rec = bench.train_to_schedule_end(run)
    after = json.loads((run / "checkpoints" / "last" / "state.json").read_text())
    assert after["done"] and after["step"] == 4
    assert rec == {"stopped_step": 2, "stopped_epoch": state["epoch"], "best_epoch_then": state["best_epoch"],
                   "best_value_then": state["best_value"], "to_step": 4, "finished": True}
    assert bench.train_to_schedule_end(run) == rec  # done: not trained again

    # the test stage of a continued run is another stage than the stopped run's (its best may have moved)
    seen = {}
    monkeypatch.setattr(pipeline_module, "run_stage", lambda st: seen.setdefault("config", st.config))
    bench.run_test_stage(Config(), run.parent, "fp", 0)
    assert seen["config"]["continued_to_step"] == 4
    row = {"kind": "generative", "epochs_run": 12, "valid": {"epoch": 11}, "continued": rec | {"stopped_epoch": 7}}
    assert bench.epochs_cell(row) == "12 (best 12); stopped at 7, trained on"
    assert bench.epochs_cell({**row, "continued": None}) == "12 (best 12)" and bench.epochs_cell({"kind": "baseline"}) == "-"


def test_best_placement_falls_back_to_the_recorded_one_when_the_run_folders_are_gone(tmp_path):
    bench = _bench()
    b = bench.Bench(parent=tmp_path / "parent", work=tmp_path / "work", config=ROOT / "configs" / "quickstart.yaml",
                    ids_file="", tokenizer="train", fraction=0.5, subset_seed=0, kcore=0, threads=1,
                    train_minutes=0, sasrec_minutes=0, eval_users=0, placements=("user_passage", "memory"),
                    results=tmp_path / "ev.json")
    with pytest.raises(SystemExit, match="gramc-user_passage has not finished"):
        bench.best_placement(b)  # no run folders, no results file
    b.results.write_text(json.dumps({"subset": {"best_placement": "every_passage"}}))
    with pytest.raises(SystemExit, match="has not finished"):
        bench.best_placement(b)  # recorded, but not one of this bench's placements
    b.results.write_text(json.dumps({"subset": {"best_placement": "memory"}}))
    assert bench.best_placement(b) == "memory"
    assert bench.model_overrides("abl-items1", b, bench.best_placement(b))[:2] == [
        "model.prefix.enabled=true", "model.prefix.placement=memory"]


def test_a_pairing_whose_ranks_are_gone_is_carried_only_while_its_rows_are_unchanged():
    bench = _bench()
    rows = {n: {"test": {"metrics": {"ndcg@10": v}}} for n, v in (("gram", 0.01), ("gramc-memory", 0.02))}
    rec = {"a": ["gram"], "b": ["gramc-memory"], "users": 9, "rows": bench.row_stamps(rows, ["gram", "gramc-memory"]),
           "diff": {"ndcg@10": {"mean": 0.01}}}
    old = {"gramc-memory - gram": rec, "unstamped": {k: v for k, v in rec.items() if k != "rows"}}
    kept = bench.carry_pairings(old, {}, rows)
    assert list(kept) == ["gramc-memory - gram"] and kept["gramc-memory - gram"]["carried"]
    assert kept["gramc-memory - gram"]["diff"] == rec["diff"]
    fresh = {"gramc-memory - gram": {**rec, "diff": {"ndcg@10": {"mean": 0.03}}}}
    assert bench.carry_pairings(old, fresh, rows) == fresh  # what can be recomputed is
    rows["gramc-memory"]["test"]["metrics"]["ndcg@10"] = 0.025  # gramc-memory rerun since
    assert bench.carry_pairings(old, {}, rows) == {}
    del rows["gram"]
    assert bench.carry_pairings(old, {}, rows) == {}


def test_ablations_pair_with_a_rerun_of_the_best_placement_when_the_first_run_lost_its_ranks(tmp_path):
    bench = _bench()
    rows = {}
    for name, ranks in (("gramc-memory", None), ("gramc-memory-rerun", [1, -1, 3, -1]), ("abl-items1", [-1, -1, 0, -1])):
        out = tmp_path / name
        (out / "test").mkdir(parents=True)
        if ranks is not None:  # 0-based; -1: the target was not in the beam
            (out / "test" / "ranks.json").write_text(json.dumps({"users": ["a", "b", "c", "d"], "ranks": ranks}))
        ndcg = sum(1 / math.log2(r + 2) for r in ranks if 0 <= r < 10) / 4 if ranks else 0.1
        rows[name] = {"kind": "generative", "out": str(out), "test": {"metrics": {"ndcg@10": ndcg}}}
    out = bench.comparisons(rows, "memory", [10], 50, 0)
    assert list(out) == ["abl-items1 - gramc-memory-rerun"]
    rec = out["abl-items1 - gramc-memory-rerun"]
    assert rec["a"] == ["gramc-memory-rerun"] and rec["b"] == ["abl-items1"] and rec["users"] == 4
    assert rec["diff"]["hit@10"]["mean"] == pytest.approx(-0.25)  # 1 hit against 2, of 4 users

    # a later run in gramc-memory's folder (a rerun on a new machine) does not stand in for its ranks
    (tmp_path / "gramc-memory" / "test" / "ranks.json").write_text(
        json.dumps({"users": ["a", "b", "c", "d"], "ranks": [0, 0, 0, 0]}))
    assert bench.ranks_path(rows["gramc-memory"]) is None
    assert list(bench.comparisons(rows, "memory", [10], 50, 0)) == ["abl-items1 - gramc-memory-rerun"]
    rows["gramc-memory"]["test"]["metrics"]["ndcg@10"] = 1.0  # now they are its own
    assert "abl-items1 - gramc-memory" in bench.comparisons(rows, "memory", [10], 50, 0)
