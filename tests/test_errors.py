"""One error base and one exit path: every gramc exception is a GramcError, and `gramc.cli.main`
prints each as `gramc <command>: error: ...` with its exit code, never a traceback; a loaded run
never rebuilds a missing asset."""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import shutil
from pathlib import Path

import pytest

import gramc
from gramc.cli import main
from gramc.errors import GramcError, MissingAssetError
from gramc.pipeline.pipeline import PipelineError

from eval_fakes import make_run

SRC = Path(gramc.__file__).resolve().parent


def _gramc_modules():
    for m in pkgutil.walk_packages([str(SRC)], "gramc."):
        if not m.name.endswith("__main__"):
            yield importlib.import_module(m.name)


def _exception_classes() -> list[type]:
    found = {}
    for mod in _gramc_modules():
        for _, obj in inspect.getmembers(mod, inspect.isclass):
            if issubclass(obj, BaseException) and obj.__module__.startswith("gramc"):
                found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return [found[k] for k in sorted(found)]


def test_every_gramc_exception_derives_from_gramc_error():
    classes = _exception_classes()
    assert len(classes) >= 12  # the walk found them (ConfigError, DataError, EvalError, ...)
    assert [c.__name__ for c in classes if not issubclass(c, GramcError)] == []


@pytest.mark.parametrize("cls", _exception_classes(), ids=lambda c: c.__name__)
def test_main_prints_every_gramc_error_the_same_way(cls, monkeypatch, capsys):
    import gramc.data.cli as data_cli

    def fail(args):
        raise cls("the reason, and what to do")

    monkeypatch.setattr(data_cli, "_stats", fail)
    rc = main(["data", "stats", "somewhere"])
    err = capsys.readouterr().err
    assert rc == cls.exit_code != 0
    assert err == "gramc data: error: the reason, and what to do\n"  # one line, no traceback


def test_no_stage_cli_catches_its_own_errors():
    # errors go up to main's one exit path: no `except` in any command module (try/finally is cleanup)
    offenders = []
    for path in sorted(SRC.glob("*/cli.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        offenders += [f"{path.parent.name}/cli.py:{n.lineno}" for n in ast.walk(tree)
                      if isinstance(n, ast.Try) and n.handlers]
    assert offenders == []


def test_pipeline_report_and_plot_errors_reach_the_user_as_one_line(tmp_path, capsys):
    (tmp_path / "c.yaml").write_text("{}\n")
    rc = main(["pipeline", "--config", str(tmp_path / "c.yaml"), f"run.out={tmp_path / 'p'}",
               f"pipeline.sequences={tmp_path / 'missing.txt'}"])
    err = capsys.readouterr().err
    assert rc == PipelineError.exit_code and err.startswith("gramc pipeline: error: input ") and "missing.txt" in err
    (tmp_path / "afile").write_text("x")
    rc = main(["report", str(tmp_path / "afile")])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("gramc report: error: ") and "not a folder" in err  # ReportError
    rc = main(["plot", str(tmp_path / "norun")])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("gramc plot: error: ") and "log.jsonl" in err  # PlotError


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    d = tmp_path_factory.mktemp("errrun") / "run"
    cfg, assets, _ = make_run(d)
    return d, assets


def test_damaged_checkpoint_reaches_the_user_as_gramc_evaluate_error(run, tmp_path, capsys):
    d, _ = run
    copy = tmp_path / "run"
    shutil.copytree(d, copy)
    (copy / "checkpoints" / "best" / "model.safetensors").write_bytes(b"not a safetensors file")
    rc = main(["evaluate", "--run", str(copy), "--split", "valid", "--max-users", "2"])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("gramc evaluate: error: ") and "model.safetensors" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("command", ["evaluate", "recommend", "doctor"])
def test_loading_a_run_never_rebuilds_a_missing_asset(run, tmp_path, capsys, command):
    d, assets = run
    copy = tmp_path / "run"
    shutil.copytree(d, copy)
    (copy / "ids.txt").unlink()
    args = {"evaluate": ["evaluate", "--run", str(copy), "--split", "valid", "--max-users", "2"],
            "recommend": ["recommend", "--run", str(copy), "--history", assets.ds.item_ids[0]],
            "doctor": ["doctor", "eval", "--quiet", "--config", str(copy / "config.yaml"), f"run.out={copy}"]}[command]
    rc = main(args)
    err = capsys.readouterr().err
    assert rc == MissingAssetError.exit_code == 2
    assert err.startswith(f"gramc {command}: error: {copy / 'ids.txt'} is missing") and "gramc ids build" in err
    assert not (copy / "ids.txt").exists()


def _help(words: list[str], capsys) -> str:
    with pytest.raises(SystemExit):
        main([*words, "--help"])
    return capsys.readouterr().out


def test_readme_says_which_commands_take_a_config(capsys):
    import re

    text = " ".join((SRC.parents[1] / "README.md").read_text(encoding="utf-8").split())
    with_config = re.search(r"from a config \(([^)]*)\) take `--config FILE`", text).group(1)
    loaders = re.search(r"load a trained run \(([^)]*)\) read the run's own `config.yaml`", text).group(1)
    no_config = re.search(r"\. ([^.]*) take no config", text).group(1)
    names = lambda part: [n.split() for n in re.findall(r"`([^`]+)`", part)]  # noqa: E731
    expand = {"baseline": [["baseline", m] for m in ("pop", "sasrec", "lightgcn")],
              "doctor": [["doctor", c] for c in
                         ("data", "ids", "flow", "recipe", "leakage", "eval", "grad-sync", "all")]}
    for words in names(with_config):
        for cmd in expand.get(" ".join(words), [words]):
            usage = _help(cmd, capsys)
            assert "--config" in usage and "key.sub=value" in usage, cmd
    for words in names(loaders):
        usage = _help(words[:2] if words[0] == "doctor" else words[:1], capsys)
        assert "key.sub=value" in usage and ("--run" in usage or "--resume" in usage), words
    assert "--config" not in _help(["evaluate"], capsys) and "--config" not in _help(["recommend"], capsys)
    checked = names(no_config)
    assert len(checked) == 4
    for words in checked:
        usage = _help(words, capsys)
        assert "--config" not in usage and "key.sub=value" not in usage, words


def test_ctrl_c_is_one_line_with_the_resume_hint_where_a_run_can_resume(monkeypatch, capsys):
    import gramc.data.cli as data_cli
    import gramc.recipes.cli as recipes_cli

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(recipes_cli, "_train", interrupted)
    monkeypatch.setattr(data_cli, "_stats", interrupted)
    assert main(["train", "train.epochs=1"]) == 130
    err = capsys.readouterr().err.strip()
    assert err.startswith("gramc train: interrupted (Ctrl-C)") and "gramc train --resume" in err and "\n" not in err
    assert main(["data", "stats", "somewhere"]) == 130
    assert capsys.readouterr().err.strip() == "gramc data: interrupted (Ctrl-C)"


@pytest.mark.parametrize("error", [PermissionError(13, "Permission denied", "/runs/x/log.jsonl"),
                                   OSError(28, "No space left on device", "/runs/x/checkpoints/last"),
                                   OSError(30, "Read-only file system", "/mnt/ro/run")])
def test_os_errors_are_one_line_naming_the_path(monkeypatch, capsys, error):
    import gramc.data.cli as data_cli

    def fail(args):
        raise error

    monkeypatch.setattr(data_cli, "_stats", fail)
    assert main(["data", "stats", "somewhere"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"gramc data: error: {error.strerror}: {error.filename}")


def test_a_closed_pipe_ends_quietly(tmp_path):
    """`gramc data stats DIR | head -1`: the reader is gone when the output comes; no traceback follows,
    and the exit status is the shell's for SIGPIPE (141), as for other Unix tools."""
    import subprocess
    import sys

    assert main(["data", "prepare", "--synthetic", "--out", str(tmp_path / "data")]) == 0
    proc = subprocess.Popen([sys.executable, "-m", "gramc", "data", "stats", str(tmp_path / "data"), "--top", "5000"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader leaves before the command writes (it is still importing torch)
    err = proc.stderr.read().decode()
    rc = proc.wait(timeout=120)
    assert "Traceback" not in err and "BrokenPipe" not in err, err
    assert rc == 141 and err == ""
