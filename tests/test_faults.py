"""Fault injection, one test per case of issue 16: bad input, misuse and crashes never destroy what
gramc did not write, never score a checkpoint against other assets, never end in a traceback.

Every test here failed on the main branch before this change (data deleted, a silent result, or a
library exception instead of a gramc error). Kill -9 loops are in tests/test_faults_kill.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gramc.cli import main
from gramc.config import ConfigError, load_config
from gramc.errors import GramcError

from eval_fakes import make_run
from train_toy import build_model, collate, toy_config, toy_dataset, toy_samples

SYN = ["data.synthetic.num_users=30", "data.synthetic.num_items=20", "data.synthetic.num_topics=3",
       "ids.vocab_size=300", "ids.clusters=4", "ids.levels=2", "gcn.dim=8", "gcn.epochs=1", "gcn.eval_every=0",
       "gcn.similar_k=5", "model.similar_items=2", "model.passage_len=24", "model.user_passage_len=24"]


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _write_sequences(folder: Path) -> Path:
    """A small GRAM user_sequence.txt inside `folder` (9 users x 6 items)."""
    folder.mkdir(parents=True, exist_ok=True)
    p = folder / "user_sequence.txt"
    p.write_text("".join(f"u{u} " + " ".join(f"i{(u + j) % 12}" for j in range(6)) + "\n" for u in range(9)))
    return p


# --------------------------------------------------------------------------------------------
# Data lost: outputs that are not gramc's own
# --------------------------------------------------------------------------------------------


def test_prepare_refuses_a_folder_that_is_not_a_gramc_dataset(tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("my own notes")
    rc = main(["data", "prepare", "--synthetic", "--out", str(mine), *SYN])
    err = capsys.readouterr().err
    assert rc == 2 and "gramc data: error:" in err and str(mine) in err and "notes.txt" in err
    assert _tree(mine) == {"notes.txt": b"my own notes"}
    # an existing gramc dataset is replaced, as before
    assert main(["data", "prepare", "--synthetic", "--out", str(tmp_path / "ds"), *SYN]) == 0
    assert main(["data", "prepare", "--synthetic", "--out", str(tmp_path / "ds"), *SYN]) == 0


def test_prepare_refuses_an_output_that_holds_its_own_inputs(tmp_path, capsys):
    seqs = _write_sequences(tmp_path / "mybeauty")
    before = _tree(tmp_path / "mybeauty")
    rc = main(["data", "prepare", "--sequences", str(seqs), "--out", str(tmp_path / "mybeauty")])
    err = capsys.readouterr().err
    assert rc == 2 and "contains the input" in err
    assert _tree(tmp_path / "mybeauty") == before  # both inputs still there, untouched
    # --out equal to the input file
    assert main(["data", "prepare", "--sequences", str(seqs), "--out", str(seqs)]) == 2
    assert "is the input" in capsys.readouterr().err and seqs.read_bytes() == before["user_sequence.txt"]


def test_prepare_refuses_the_working_directory(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "keep.txt").write_text("x")
    assert main(["data", "prepare", "--synthetic", "--out", ".", *SYN]) == 2
    assert "working directory" in capsys.readouterr().err and (tmp_path / "keep.txt").read_text() == "x"


def _atomic_stage(folder: Path, build=None):
    from gramc.pipeline.pipeline import Stage

    def default_build(out: Path) -> dict:
        (out / "metrics.json").write_text("{}")
        return {"ok": True}

    return Stage("evaluate", folder, {"k": 1}, {}, build or default_build)


def test_pipeline_stage_never_deletes_files_it_did_not_write(tmp_path):
    from gramc.pipeline.pipeline import run_stage

    eval_dir = tmp_path / "eval"
    eval_dir.mkdir()
    (eval_dir / "my_analysis.ipynb").write_text("precious")
    with pytest.raises(GramcError, match="my_analysis.ipynb"):
        run_stage(_atomic_stage(eval_dir), log=lambda s: None)
    assert _tree(eval_dir) == {"my_analysis.ipynb": b"precious"}

    # a stage folder the pipeline wrote is rebuilt; a user's file dropped into it later is refused
    own = tmp_path / "report"
    assert run_stage(_atomic_stage(own), log=lambda s: None).status == "ran"
    assert json.loads((own / ".stage.json").read_text())["files"] == ["metrics.json"]
    stage2 = _atomic_stage(own)
    stage2.config = {"k": 2}
    assert run_stage(stage2, log=lambda s: None).status == "ran"  # replaced: only its own files
    (own / "added_by_me.csv").write_text("1,2")
    stage3 = _atomic_stage(own)
    stage3.config = {"k": 3}
    with pytest.raises(GramcError, match="added_by_me.csv"):
        run_stage(stage3, log=lambda s: None)
    assert (own / "added_by_me.csv").read_text() == "1,2"


def test_pipeline_refuses_a_root_with_foreign_files(tmp_path):
    from gramc.pipeline.pipeline import run_pipeline

    root = tmp_path / "exp"
    (root / "eval").mkdir(parents=True)
    (root / "eval" / "mine.txt").write_text("x")
    (root / "config.yaml").write_text("my: own config\n")
    cfg = load_config(None, [f"run.out={root}", *SYN])
    with pytest.raises(GramcError, match="config.yaml"):
        run_pipeline(cfg, progress=False, log=lambda s: None)
    assert (root / "config.yaml").read_text() == "my: own config\n" and (root / "eval" / "mine.txt").is_file()


def _fake_run(run: Path, *overrides: str) -> None:
    """A run folder as `gramc train` leaves it (config, run info, a finished last checkpoint)."""
    from gramc.runinfo import write_run_info

    cfg = load_config(None, [f"run.out={run}", *SYN, *overrides])
    write_run_info(run, cfg)
    (run / "log.jsonl").write_text('{"kind": "step", "step": 1}\n')
    last = run / "checkpoints" / "last"
    last.mkdir(parents=True)
    (last / "state.json").write_text(json.dumps({"step": 7, "epoch": 2, "done": True}))
    (last / "model.safetensors").write_bytes(b"old weights")


def test_train_into_an_existing_run_is_refused_without_resume_or_overwrite(tmp_path, capsys):
    run = tmp_path / "run"
    _fake_run(run)
    before = _tree(run)
    rc = main(["train", f"run.out={run}", *SYN])
    err = capsys.readouterr().err
    assert rc == 2 and "already holds a run" in err and "--resume" in err and "--overwrite" in err
    assert "step 7" in err and _tree(run) == before


def test_overwrite_moves_the_old_run_aside(tmp_path):
    from gramc.train.runfolder import claim_run

    run = tmp_path / "run"
    _fake_run(run)
    before = _tree(run)
    aside = claim_run(load_config(None, [f"run.out={run}", *SYN]), overwrite=True)
    assert aside is not None and not run.exists() and _tree(aside) == before


def test_resume_refuses_a_changed_config_naming_the_keys(tmp_path, capsys):
    run = tmp_path / "run"
    _fake_run(run)
    rc = main(["train", "--resume", str(run), "train.lr=0.5", "model.dropout=0.2"])
    err = capsys.readouterr().err
    assert rc == 2 and "train.lr" in err and "model.dropout" in err and "train.epochs" in err


def test_resume_with_best_but_no_last_never_trains_from_step_0(tmp_path, capsys):
    """checkpoints/last gone, checkpoints/best there: --resume refuses, says how to resume from best
    (naming its step), and leaves every file of the run as it was."""
    run = tmp_path / "run"
    _fake_run(run)
    (run / "checkpoints" / "last").rename(run / "checkpoints" / "best")
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    rc = main(["train", "--resume", str(run)])
    err = capsys.readouterr().err
    assert rc == 2 and "checkpoints/last is missing" in err and "best: step 7" in err
    assert f"cp -r {run / 'checkpoints' / 'best'} {run / 'checkpoints' / 'last'}" in err
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


def test_resume_of_a_finished_run_with_more_epochs_trains_on(tmp_path, capsys):
    from gramc.train.trainer import TrainParts, fit

    ds = toy_dataset(12)
    train, valid = toy_samples(ds)
    run = tmp_path / "run"
    first = fit(TrainParts(build_model(ds, 1), collate, train, valid), toy_config(epochs=2), run)
    assert first.state.done
    more = fit(TrainParts(build_model(ds, 1), collate, train, valid), toy_config(epochs=3), run, resume=True)
    assert more.state.done and more.state.step > first.state.step and more.state.epoch == 3
    assert "training on" in capsys.readouterr().err
    epochs = [json.loads(line)["epoch"] for line in (run / "log.jsonl").read_text().splitlines()
              if json.loads(line)["kind"] == "epoch"]
    assert epochs == [0, 1, 2]


# --------------------------------------------------------------------------------------------
# Silently wrong: checkpoints scored against other assets
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def asset_runs(tmp_path_factory):
    """A: assets built in its own folder. B: a checkpoint trained on A's assets given by path."""
    root = tmp_path_factory.mktemp("assets")
    make_run(root / "A")
    given = [f"ids.file={root / 'A' / 'ids.txt'}", f"ids.tokenizer={root / 'A' / 'tokenizer'}",
             f"gcn.out={root / 'A' / 'gcn'}"]
    make_run(root / "B", *given)
    make_run(root / "C", "ids.seed=5")  # other IDs for the same items
    return root


def test_evaluate_refuses_a_changed_id_file_given_by_path(asset_runs, capsys):
    root = asset_runs
    ids = root / "A" / "ids.txt"
    saved = ids.read_bytes()
    try:
        shutil.copy(root / "C" / "ids.txt", ids)  # the ID file the run names changed on disk
        rc = main(["evaluate", "--run", str(root / "B"), "--split", "valid", "--max-users", "3"])
        err = capsys.readouterr().err
        assert rc == 2 and "item-ID table" in err and str(ids) in err
        assert not (root / "B" / "eval").exists()
        from gramc.serve.recommend import Recommender

        with pytest.raises(GramcError, match="item-ID table"):
            Recommender.from_run(root / "B")
    finally:
        ids.write_bytes(saved)
    assert main(["evaluate", "--run", str(root / "B"), "--split", "valid", "--max-users", "3"]) == 0


def test_evaluate_refuses_a_changed_dataset_when_assets_are_given_by_path(asset_runs, capsys):
    """The Beauty recipe's way (ids.file, ids.tokenizer, gcn.out given): other interactions, same items."""
    rc = main(["evaluate", "--run", str(asset_runs / "B"), "--split", "valid", "--max-users", "3",
               "data.synthetic.seed=8"])
    err = capsys.readouterr().err
    assert rc == 2 and "dataset: trained with synthetic data" in err


def test_rebuilt_assets_are_never_used_with_an_old_checkpoint(asset_runs, capsys):
    """Deleting built IDs (what the old advice said) rebuilds them; the checkpoint then refuses them."""
    run = asset_runs / "A"
    keep = {p: p.read_bytes() for p in (run / "ids.txt", run / "ids.txt.assets.json", run / "passage_cache.pt")}
    try:
        for p in keep:
            p.unlink()
        rc = main(["evaluate", "--run", str(run), "--split", "valid", "--max-users", "3", "ids.seed=5"])
        err = capsys.readouterr().err
        assert rc == 2 and "item-ID table" in err and "delete" not in err
    finally:
        for p, b in keep.items():
            p.write_bytes(b)


def test_doctor_eval_checks_the_run_checkpoints_against_its_assets(asset_runs):
    from gramc.doctor.evalchecks import checkpoint_asset_checks
    from gramc.model.runs import load_model_from_run

    _, assets_a, _ = load_model_from_run(asset_runs / "A", progress=False)
    _, assets_c, _ = load_model_from_run(asset_runs / "C", progress=False)
    ok = checkpoint_asset_checks(asset_runs / "A", assets_a.fingerprints())
    bad = checkpoint_asset_checks(asset_runs / "A", assets_c.fingerprints())
    assert [c.level for c in ok] == ["pass"] and [c.level for c in bad] == ["fail"]
    assert "item-ID table" in bad[0].message


def test_resume_refuses_other_assets(tmp_path):
    from gramc.errors import AssetMismatchError
    from gramc.train.trainer import TrainParts, fit

    ds = toy_dataset(12)
    train, valid = toy_samples(ds)
    rec = {"dataset": {"fingerprint": "aaa", "source": "d1"}}
    run = tmp_path / "run"
    fit(TrainParts(build_model(ds, 1), collate, train, valid, assets=rec), toy_config(), run, stop_after=2)
    assert json.loads((run / "checkpoints" / "last" / "assets.json").read_text()) == rec
    other = {"dataset": {"fingerprint": "bbb", "source": "d2"}}
    with pytest.raises(AssetMismatchError, match="dataset: trained with d1"):
        fit(TrainParts(build_model(ds, 1), collate, train, valid, assets=other), toy_config(), run, resume=True)


# --------------------------------------------------------------------------------------------
# Config combinations
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("overrides, key", [
    (["eval.beams=10"], "eval.beams"),  # default ks go to 50
    (["train.weight_decay=-0.01"], "train.weight_decay"),
    (["train.epochs=0"], "train.epochs"),
    (["gcn.epochs=0"], "gcn.epochs"),
    (["baseline.sasrec.epochs=0"], "baseline.sasrec.epochs"),
    (["model.dropout=1.5"], "model.dropout"),
    (["eval.ks=[5,5]"], "eval.ks"),
    (["train.max_steps=-1"], "train.max_steps"),
])
def test_config_combinations_are_refused_naming_the_key(overrides, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(None, overrides)


def test_capped_metrics_need_allow_capped_and_problems_come_together():
    cfg = load_config(None, ["eval.beams=10", "eval.allow_capped=true"])
    assert cfg.eval.allow_capped and cfg.eval.beams == 10
    assert load_config(None, ["eval.beams=10", "eval.ks=[1,5,10]"]).eval.ks == [1, 5, 10]
    with pytest.raises(ConfigError) as e:
        load_config(None, ["train.epochs=0", "train.weight_decay=-1"])
    assert "train.epochs" in str(e.value) and "train.weight_decay" in str(e.value)


def test_train_with_zero_epochs_fails_before_building_anything(tmp_path, capsys):
    assert main(["train", f"run.out={tmp_path / 'r'}", "train.epochs=0", *SYN]) == 2
    assert "train.epochs" in capsys.readouterr().err and not (tmp_path / "r").exists()


def test_evaluate_with_fewer_beams_than_k_is_refused(asset_runs, capsys, tmp_path):
    rc = main(["evaluate", "--run", str(asset_runs / "A"), "--split", "valid", "--beams", "6",
               "eval.allow_capped=false"])
    assert rc == 2 and "eval.beams" in capsys.readouterr().err
    # allowed explicitly: the record says which cut-offs are capped
    assert main(["evaluate", "--run", str(asset_runs / "A"), "--split", "valid", "--beams", "6", "--max-users", "3",
                 "--out", str(tmp_path / "e"), "eval.allow_capped=true"]) == 0
    assert json.loads((tmp_path / "e" / "metrics.json").read_text())["capped_ks"] == [10, 20, 50]


# --------------------------------------------------------------------------------------------
# Tracebacks instead of errors
# --------------------------------------------------------------------------------------------


def _toy_checkpoint(folder: Path):
    from gramc.checkpoint import TrainState, rng_state, save_checkpoint
    from gramc.train.optim import build_optimizer, build_scheduler

    ds = toy_dataset(12)
    cfg = toy_config()
    model = build_model(ds, 1)
    opt = build_optimizer(model, cfg.train)
    sched = build_scheduler(opt, 10, cfg.train.warmup)
    save_checkpoint(folder, model, opt, sched, TrainState(step=3), [rng_state()])
    return model, opt, sched


@pytest.mark.parametrize("name", ["model.safetensors", "optimizer.pt", "rng.pt", "state.json"])
def test_a_truncated_checkpoint_file_is_a_gramc_error_naming_it(tmp_path, name):
    from gramc.checkpoint import CheckpointError, load_checkpoint

    folder = tmp_path / "last"
    model, opt, sched = _toy_checkpoint(folder)
    data = (folder / name).read_bytes()
    (folder / name).write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=name.replace(".", r"\.")):
        load_checkpoint(folder, model, opt, sched)


def test_a_torn_last_log_line_is_cut_on_resume(tmp_path, capsys):
    from gramc.train.trainer import TrainParts, fit

    ds = toy_dataset(12)
    train, valid = toy_samples(ds)
    full = fit(TrainParts(build_model(ds, 1), collate, train, valid), toy_config(), tmp_path / "full")
    run = tmp_path / "run"
    fit(TrainParts(build_model(ds, 1), collate, train, valid), toy_config(), run, stop_after=2)
    with open(run / "log.jsonl", "a") as f:
        f.write('{"kind": "step", "step": 3, "lo')  # what a kill during a write leaves
    res = fit(TrainParts(build_model(ds, 1), collate, train, valid), toy_config(), run, resume=True)
    assert "torn" in capsys.readouterr().err and res.state.step == full.state.step
    lines = (run / "log.jsonl").read_text().splitlines()
    assert all(json.loads(line) for line in lines)  # every line is a record again
    from gramc.train.plot import read_log

    with open(run / "log.jsonl", "a") as f:
        f.write('{"kind": "st')
    assert len(read_log(run)) == len(lines)  # gramc plot reads a crashed run's log


def test_a_corrupt_log_line_in_the_middle_names_the_line(tmp_path):
    from gramc.io import read_jsonl

    p = tmp_path / "log.jsonl"
    p.write_text('{"a": 1}\nnot json\n{"b": 2}\n')
    with pytest.raises(GramcError, match="line 2"):
        read_jsonl(p, repair=True)


def test_a_non_utf8_id_file_is_an_error_naming_file_and_line(tmp_path):
    from gramc.ids.itemids import IdsError, check_ids
    from gramc.ids.tokenizer import train_tokenizer

    ds = toy_dataset(12)
    tok = train_tokenizer([f"item {k} title" for k in range(ds.num_items)] * 5, 120)
    p = tmp_path / "ids.txt"
    p.write_bytes(b"i0 |a|b|\ni1 |\xff\xfe|\n")
    with pytest.raises(IdsError, match=r"ids.txt:2: not valid UTF-8"):
        check_ids(p, ds, tok)
    with pytest.raises(IdsError, match="is a folder"):
        check_ids(tmp_path, ds, tok)


def test_recommend_k_zero_is_an_error_not_a_traceback(asset_runs, capsys):
    rc = main(["recommend", "--run", str(asset_runs / "A"), "--history", "x", "--k", "0"])
    assert rc == 2 and "--k must be >= 1" in capsys.readouterr().err


def test_no_traceback_from_the_command_line(asset_runs, tmp_path):
    """A truncated checkpoint seen through the real `gramc` entry point: one error line, no traceback."""
    run = tmp_path / "run"
    shutil.copytree(asset_runs / "A", run)
    weights = run / "checkpoints" / "best" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "gramc", "evaluate", "--run", str(run), "--split", "valid"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "gramc evaluate: error:" in proc.stderr and "model.safetensors" in proc.stderr


# --------------------------------------------------------------------------------------------
# Litter of killed writes
# --------------------------------------------------------------------------------------------


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_stale_temporaries_are_removed_on_the_next_write(tmp_path):
    from gramc.io import atomic_dir, write_text

    dead = _dead_pid()
    (tmp_path / f".last.{dead}.abc12345.tmp").mkdir()  # a killed checkpoint write
    (tmp_path / ".last.k2j3h4m5.tmp").mkdir()  # an older gramc's name (no pid)
    (tmp_path / f".metrics.json.{dead}.x1y2z3w4.tmp").write_text("{")
    alive = tmp_path / f".last.{os.getppid()}.zzzzzzzz.tmp"  # a write in progress in another process
    alive.mkdir()
    neighbour = tmp_path / f".last.copy.{dead}.abcdefgh.tmp"  # a temporary of `last.copy`, not of `last`
    (tmp_path / f".last.{os.getpid()}.samepid1.tmp").mkdir()  # an earlier process under this pid
    neighbour.mkdir()
    (tmp_path / "other.tmp").write_text("not gramc's")
    with atomic_dir(tmp_path / "last") as tmp:
        (tmp / "state.json").write_text("{}")
    write_text(tmp_path / "metrics.json", "{}")
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted(["last", "metrics.json", alive.name, neighbour.name, "other.tmp"])


def test_a_swap_killed_halfway_is_restored(tmp_path):
    """The two-rename fallback: killed between them, the old folder is at .name.old; the next
    write puts it back before building (never an empty path afterwards)."""
    from gramc.io import clean_stale_temporaries

    old = tmp_path / ".gcn.old"
    old.mkdir()
    (old / "gcn_meta.json").write_text("{}")
    clean_stale_temporaries(tmp_path / "gcn")
    assert (tmp_path / "gcn" / "gcn_meta.json").is_file() and not old.exists()


# --------------------------------------------------------------------------------------------
# Parsers that refuse ambiguity
# --------------------------------------------------------------------------------------------


def test_mixed_separators_name_the_first_odd_line(tmp_path):
    from gramc.data.dataset import DataError
    from gramc.data.readers import read_sequences

    p = tmp_path / "user_sequence.txt"
    p.write_text("u1 a b c d e\nu2 a b c d e\nu3\ta\tb\tc\td\te\n")
    with pytest.raises(DataError, match=r"user_sequence.txt:3: separated by tabs but line 1 by spaces"):
        read_sequences(p)
    p.write_text("u1 a b c d e\nu2 a,b,c,d,e\n")
    with pytest.raises(DataError, match=r":2: separated by spaces and commas"):
        read_sequences(p)


def test_a_folder_given_for_a_file_says_so(tmp_path, capsys):
    from gramc.data.dataset import DataError
    from gramc.data.readers import read_sequences
    from gramc.io import write_text

    with pytest.raises(DataError, match="is a folder"):
        read_sequences(tmp_path)
    with pytest.raises(GramcError, match="is a folder"):
        write_text(tmp_path, "x")
    with pytest.raises(ConfigError, match="is a folder"):
        load_config(tmp_path)
    assert main(["data", "prepare", "--sequences", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "is a folder" in capsys.readouterr().err


def test_python_api_refuses_str_and_int_histories(asset_runs):
    from gramc.serve.recommend import Recommender

    rec = Recommender.from_run(asset_runs / "A")
    first = rec.assets.ds.item_ids[0]
    with pytest.raises(TypeError, match="not one string"):
        rec.recommend(first)
    with pytest.raises(TypeError, match=r"item_ids\[i\]"):
        rec.recommend([0, 1])
    assert len(rec.recommend([first], k=3)) == 3


def test_python_api_names_a_history_of_the_wrong_type(asset_runs):
    from gramc.errors import GramcError
    from gramc.serve.recommend import HistoryTypeError, Recommender

    rec = Recommender.from_run(asset_runs / "A")
    for bad in (None, 42, 3.5):
        with pytest.raises(HistoryTypeError, match="a history is a list of item IDs") as err:
            rec.recommend(bad)
        assert isinstance(err.value, GramcError) and type(bad).__name__ in str(err.value)
    assert len(rec.recommend((rec.assets.ds.item_ids[0],), k=2)) == 2  # a tuple is a history too


def test_run_configs_store_absolute_paths(tmp_path, monkeypatch):
    from gramc.config import absolute_paths
    from gramc.model.runs import run_config
    from gramc.train.runfolder import open_run

    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    cfg, resume = open_run(load_config(None, ["run.out=runs/x", "data.path=data", "ids.tokenizer=t5-base"]),
                           resume=False, overwrite=False)
    assert not resume and cfg.run.out == str(tmp_path / "runs" / "x") and cfg.data.path == str(tmp_path / "data")
    assert cfg.ids.tokenizer == "t5-base"  # a hub name stays a name
    # an older run's relative paths are resolved against the run folder, from any working directory
    run = tmp_path / "runs" / "old"
    (run / "mydata").mkdir(parents=True)
    (run / "config.yaml").write_text("data:\n  path: mydata\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert run_config(run).data.path == str(run / "mydata")
    assert absolute_paths(load_config(None, ["gcn.out=g"]), elsewhere).gcn.out == str(elsewhere / "g")


def test_resume_allows_the_resumable_keys_and_restarts_a_run_without_checkpoint(tmp_path, capsys):
    import copy

    from gramc.train.runfolder import RESUMABLE_KEYS, open_run, resume_config, saved_config

    run = tmp_path / "run"
    _fake_run(run)
    saved = saved_config(run)
    more = copy.deepcopy(saved)
    more.train.epochs, more.train.eval_users, more.eval.batch_size = 99, 10, 7
    resume_config(saved, more)  # no error: budgets and evaluation speed may change
    assert {"train.epochs", "train.max_steps"} <= set(RESUMABLE_KEYS)
    cfg, resume = open_run(more, resume=True, overwrite=False)
    assert resume and cfg.train.epochs == 99
    shutil.rmtree(run / "checkpoints")  # died before its first checkpoint
    cfg, resume = open_run(more, resume=True, overwrite=False)
    assert not resume and "training it from step 0" in capsys.readouterr().out
