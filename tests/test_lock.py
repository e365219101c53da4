"""One writer per output (issue 31): every command that writes a run or artefact folder holds an
exclusive OS lock on it (gramc.lock) while it writes. A second writer is refused at once, in one
line naming the first (pid and command), and touches nothing; a killed holder leaves no stale lock.

Real processes throughout: the holder is a separate Python process that takes the lock and sleeps,
the refused writer a real `python -m gramc ...` with this checkout's src/ first on PYTHONPATH. A
refused command exits well before the holder's sleep ends (the timeout of `_gramc` is shorter), so
it did not wait.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

from gramc.cli import main
from gramc.config import load_config

SRC = Path(__file__).resolve().parents[1] / "src"
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
       "OMP_NUM_THREADS": "1"}
ENV.pop("RANK", None)
SYN = ["data.synthetic.num_users=30", "data.synthetic.num_items=20", "data.synthetic.num_topics=3",
       "ids.vocab_size=300", "ids.clusters=4", "ids.levels=2", "gcn.dim=8", "gcn.epochs=1", "gcn.eval_every=0",
       "gcn.similar_k=5", "model.similar_items=2", "model.passage_len=24", "model.user_passage_len=24"]
BUSY = 75  # OutputBusyError.exit_code

# takes the lock of argv[1], says so, and holds it for two minutes (the tests kill it long before)
HOLDER = """
import sys, time
from gramc.lock import output_lock
with output_lock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(120)
"""


@contextlib.contextmanager
def holder(folder: Path) -> Iterator[subprocess.Popen]:
    """A separate process holding `folder`'s lock for the `with` block (killed at its end)."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder), "the-holder"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        line = proc.stdout.readline()
        assert line.strip() == "locked", f"the holder did not take the lock: {line!r} {proc.stderr.read()!r}"
        yield proc
    finally:
        proc.kill()
        proc.wait()


def _gramc(*args: object, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gramc", *map(str, args)], capture_output=True, text=True,
                          env=ENV, cwd=cwd, timeout=90)


def _assert_refused(proc: subprocess.CompletedProcess, who: subprocess.Popen, command: str) -> None:
    """Refused as busy: one error line, naming the holder's pid and command, no traceback."""
    errors = [line for line in proc.stderr.splitlines() if ": error:" in line]
    assert proc.returncode == BUSY, proc.stderr
    assert "Traceback" not in proc.stderr and len(errors) == 1, proc.stderr
    line = errors[0]
    assert proc.stderr.strip().splitlines()[-1] == line  # nothing after it (the holder's script is multi-line)
    assert line.startswith(f"{command}: error:") and "is being written by another process" in line
    assert f"pid {who.pid}" in line and "the-holder" in line and f"kill {who.pid}" in line


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _fake_run(run: Path, checkpoint: str = "last") -> None:
    """A run folder as `gramc train` leaves it: config, run info, log, a finished checkpoint."""
    from gramc.runinfo import write_run_info

    write_run_info(run, load_config(None, [f"run.out={run}", *SYN]))
    (run / "log.jsonl").write_text('{"kind": "step", "step": 1}\n')
    ckpt = run / "checkpoints" / checkpoint
    ckpt.mkdir(parents=True)
    (ckpt / "state.json").write_text(json.dumps({"step": 7, "epoch": 2, "done": True}))
    (ckpt / "model.safetensors").write_bytes(b"old weights")


# --------------------------------------------------------------------------------------------
# gramc train: fresh, --overwrite, --resume
# --------------------------------------------------------------------------------------------


def test_train_into_a_run_folder_another_process_writes_is_refused(tmp_path):
    run = tmp_path / "run"
    with holder(run) as who:
        proc = _gramc("train", f"run.out={run}", *SYN, cwd=tmp_path)
    _assert_refused(proc, who, "gramc train")
    assert not run.exists()  # nothing was written


def test_overwrite_never_moves_a_run_another_process_writes(tmp_path):
    """The probe of issue 31: a second `gramc train --overwrite` moved the first's run aside
    mid-training. Now it is refused while the first runs, and the run stays where it is."""
    run = tmp_path / "run"
    _fake_run(run)
    before = _tree(run)
    with holder(run) as who:
        proc = _gramc("train", "--overwrite", f"run.out={run}", *SYN, cwd=tmp_path)
    _assert_refused(proc, who, "gramc train")
    assert _tree(run) == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("run")) == ["run"]  # no run.replaced-*


def test_resume_of_a_run_another_process_writes_is_refused(tmp_path):
    run = tmp_path / "run"
    _fake_run(run)
    before = _tree(run)
    with holder(run) as who:
        proc = _gramc("train", "--resume", run, cwd=tmp_path)
    _assert_refused(proc, who, "gramc train")
    assert _tree(run) == before


def test_claim_run_moves_a_run_aside_only_under_its_lock(tmp_path):
    """The library call behind --overwrite refuses too, not only the command."""
    from gramc.errors import OutputBusyError
    from gramc.train.runfolder import claim_run

    run = tmp_path / "run"
    _fake_run(run)
    before = _tree(run)
    with holder(run) as who:
        with pytest.raises(OutputBusyError, match=f"pid {who.pid}"):
            claim_run(load_config(None, [f"run.out={run}", *SYN]), overwrite=True)
    assert _tree(run) == before
    aside = claim_run(load_config(None, [f"run.out={run}", *SYN]), overwrite=True)  # holder gone: moved
    assert aside is not None and _tree(aside) == before and not run.exists()


# --------------------------------------------------------------------------------------------
# evaluate --out, data prepare / subset, gcn train, baseline, pipeline
# --------------------------------------------------------------------------------------------


def test_evaluate_into_an_out_folder_another_process_writes_is_refused(tmp_path):
    """Refused once the run and its checkpoint are checked and loaded, before evaluating."""
    from eval_fakes import make_run

    run = tmp_path / "run"
    make_run(run)
    out = tmp_path / "ev"
    out.mkdir()
    (out / "metrics.json").write_text('{"users": 3}\n')  # an earlier evaluation's output
    (out / "run_info.json").write_text("{}\n")
    before = _tree(out)
    with holder(out) as who:
        proc = _gramc("evaluate", "--run", run, "--split", "test", "--out", out, cwd=tmp_path)
    _assert_refused(proc, who, "gramc evaluate")
    assert _tree(out) == before


@pytest.fixture()
def dataset(tmp_path: Path) -> Path:
    folder = tmp_path / "data"
    assert main(["data", "prepare", "--synthetic", "--out", str(folder), *SYN]) == 0
    return folder


@pytest.mark.parametrize("command", ["data subset", "gcn train", "baseline pop"])
def test_artefact_commands_refuse_an_out_folder_another_process_writes(command, dataset, tmp_path):
    out = tmp_path / "out"
    args = {"data subset": ["data", "subset", "--data", dataset, "--users", 10, "--out", out],
            "gcn train": ["gcn", "train", "--data", dataset, "--out", out, *SYN],
            "baseline pop": ["baseline", "pop", "--data", dataset, "--out", out, *SYN]}[command]
    with holder(out) as who:
        proc = _gramc(*args, cwd=tmp_path)
    _assert_refused(proc, who, f"gramc {command.split()[0]}")
    assert not out.exists()


def test_pipeline_into_a_root_another_process_writes_is_refused(tmp_path):
    config = tmp_path / "pipeline.yaml"
    config.write_text("pipeline:\n  baselines: []\n")
    root = tmp_path / "root"
    with holder(root) as who:
        proc = _gramc("pipeline", "--config", config, f"run.out={root}", *SYN, cwd=tmp_path)
    _assert_refused(proc, who, "gramc pipeline")
    assert not root.exists()


def test_a_run_folder_holding_only_a_lock_file_may_be_trained_into(tmp_path):
    """`gramc gcn train` into its default <run.out>/gcn leaves its lock file `.gcn.lock` in the run
    folder (also when it fails); that file is gramc's own, so a fresh `gramc train` into the run is
    not refused for it."""
    from gramc.lock import lock_path, output_lock
    from gramc.train.runfolder import claim_run

    run = tmp_path / "run"
    with output_lock(run / "gcn"):  # as `gramc gcn train run.out=RUN` takes it
        pass
    assert lock_path(run / "gcn") == run / ".gcn.lock" and (run / ".gcn.lock").is_file()
    assert claim_run(load_config(None, [f"run.out={run}", *SYN])) is None  # only the lock file: allowed


def test_a_pipeline_stage_folder_is_locked_by_the_stage(tmp_path):
    """While a stage runs, its folder's lock is held: `gramc train` into the pipeline's train
    folder would be refused (checked here from inside the stage's build)."""
    from gramc.lock import holds_lock
    from gramc.pipeline.stage import Stage, run_stage

    folder = tmp_path / "root" / "stage"
    seen = []
    stage = Stage("demo", folder, {}, {}, lambda tmp: seen.append(holds_lock(folder)) or {})
    run_stage(stage, log=lambda _: None)
    assert seen == [True] and not holds_lock(folder)


def test_a_finished_stage_is_read_while_another_process_holds_its_lock(tmp_path):
    """Processes sharing a finished stage (the benchmark's parallel lanes) only read it: no lock, no
    refusal. A stage that needs building still waits for no one: it is refused at once."""
    from gramc.lock import OutputBusyError
    from gramc.pipeline.stage import Stage, run_stage

    folder = tmp_path / "root" / "stage"
    built = Stage("demo", folder, {"k": 1}, {}, lambda tmp: {"n": 1})
    assert run_stage(built, log=lambda _: None).status == "ran"
    with holder(folder):
        assert run_stage(built, log=lambda _: None).status == "skipped"
        with pytest.raises(OutputBusyError, match="another process"):
            run_stage(Stage("demo", folder, {"k": 2}, {}, lambda tmp: {"n": 2}), log=lambda _: None)


# --------------------------------------------------------------------------------------------
# no stale lock, release on return, one process, forks, ranks
# --------------------------------------------------------------------------------------------


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    """kill -9 of the process holding the lock: the kernel drops the lock, the next writer goes on."""
    out = tmp_path / "data"
    with holder(out) as who:
        refused = _gramc("data", "prepare", "--synthetic", "--out", out, *SYN, cwd=tmp_path)
        os.kill(who.pid, signal.SIGKILL)
        who.wait()
        proc = _gramc("data", "prepare", "--synthetic", "--out", out, *SYN, cwd=tmp_path)
    _assert_refused(refused, who, "gramc data")
    assert proc.returncode == 0, proc.stderr
    assert (out / "dataset.json").is_file() and (tmp_path / ".data.lock").is_file()  # the file stays, unlocked


def test_the_lock_ends_when_the_command_returns_and_names_its_holder(dataset, tmp_path):
    """In one process, a command releases its lock when it returns (a second command on the same
    output then writes it), and while it holds it the lock file names it."""
    from gramc.lock import lock_path, output_lock

    assert main(["data", "prepare", "--synthetic", "--out", str(dataset), *SYN]) == 0  # again: not refused
    with holder(dataset):  # another process can take it at once
        pass
    with output_lock(dataset):
        record = json.loads(lock_path(dataset).read_text())
        assert record["pid"] == os.getpid() and record["command"] and record["started"]


def test_the_holder_is_named_by_the_command_a_user_typed(monkeypatch):
    from gramc.lock import command_line

    monkeypatch.setattr(sys, "argv", [str(SRC / "gramc" / "__main__.py"), "train", "run.out=my run"])
    assert command_line() == "gramc train 'run.out=my run'"  # what `python -m gramc train ...` shows
    monkeypatch.setattr(sys, "argv", ["/usr/bin/gramc", "data", "prepare"])
    assert command_line() == "gramc data prepare"


def test_the_lock_is_reentrant_in_one_process(tmp_path):
    from gramc.lock import holds_lock, output_lock

    out = tmp_path / "out"
    with output_lock(out):
        with output_lock(tmp_path / "." / "out"):  # the same folder, spelled otherwise
            assert holds_lock(out)
        assert holds_lock(out)  # the inner `with` does not release the outer one's lock
    assert not holds_lock(out)


def test_a_forked_child_does_not_keep_the_lock(tmp_path):
    """A forked child (a DataLoader worker) still running after its parent released the lock does
    not hold it for the parent."""
    from gramc.lock import output_lock

    out = tmp_path / "out"
    with output_lock(out):
        child = os.fork()
        if child == 0:  # the child: outlive the parent's `with`, then leave without cleanup
            time.sleep(30)
            os._exit(0)
    try:
        with holder(out):
            pass
    finally:
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)


def test_under_torchrun_only_rank_0_takes_the_lock(tmp_path, monkeypatch):
    """The ranks of one job are one writer: rank 0 holds the lock, the other ranks take none."""
    from gramc.lock import holds_lock, output_lock

    out = tmp_path / "out"
    monkeypatch.setenv("RANK", "1")
    with output_lock(out):
        assert not holds_lock(out)
        with holder(out):  # nobody holds it: another process can take it
            pass
    monkeypatch.setenv("RANK", "0")
    with output_lock(out):
        assert holds_lock(out)
