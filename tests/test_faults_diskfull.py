"""A full disk, for real: commands writing into a small tmpfs end with one line naming the error,
exit 1, leave no traceback, and keep what was already written. Needs Linux and the right to mount
a tmpfs (root in a container that allows it); skipped with the reason elsewhere."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = ["data.synthetic.num_users=30", "data.synthetic.num_items=20", "data.synthetic.num_topics=3",
        "ids.vocab_size=300", "ids.clusters=4", "ids.levels=2", "gcn.dim=8", "gcn.epochs=1", "gcn.eval_every=0",
        "gcn.similar_k=5", "model.similar_items=2", "model.passage_len=24", "model.user_passage_len=24"]


@pytest.fixture
def small_disk(tmp_path):
    """A 256 KiB tmpfs at tmp_path/small, unmounted afterwards."""
    where = tmp_path / "small"
    where.mkdir()
    if sys.platform != "linux":
        pytest.skip("mounting a small tmpfs needs Linux")
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(where)],
                              capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as e:
        pytest.skip(f"cannot mount a small tmpfs here: {e}")
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.strip() or done.returncode}")
    yield where
    subprocess.run(["umount", str(where)], capture_output=True)


def gramc(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "gramc", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def one_line_disk_full(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 1, proc.stderr[-2000:]
    errors = [x for x in re.split(r"[\r\n]", proc.stderr) if "error:" in x]  # a progress bar may share its line
    assert "Traceback" not in proc.stderr and len(errors) == 1, proc.stderr[-2000:]
    assert "No space left on device" in errors[0] and "nothing already written was removed" in errors[0]


def test_data_prepare_on_a_full_disk_keeps_the_dataset_already_there(small_disk, tmp_path):
    first = gramc("data", "prepare", "--synthetic", "--out", str(small_disk / "data"), *TINY, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    before = digest(small_disk / "data")
    big = gramc("data", "prepare", "--synthetic", "--out", str(small_disk / "big"), "data.synthetic.num_users=20000",
                "data.synthetic.num_items=2000", cwd=tmp_path)
    one_line_disk_full(big)
    assert digest(small_disk / "data") == before
    assert not (small_disk / "big" / "dataset.json").exists()


def test_train_on_a_full_disk_stops_with_one_line(small_disk, tmp_path):
    data = tmp_path / "data"
    assert gramc("data", "prepare", "--synthetic", "--out", str(data), *TINY, cwd=tmp_path).returncode == 0
    proc = gramc("train", f"data.path={data}", f"run.out={small_disk / 'run'}", "run.device=cpu", "train.max_steps=2",
                 "train.final_eval=false", *TINY, cwd=tmp_path)
    one_line_disk_full(proc)


def _fill(small: Path, leave: int) -> None:
    """Fill the tmpfs with one file, then give back `leave` bytes."""
    fd = os.open(small / "filler.bin", os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError:
        pass
    finally:
        os.close(fd)
    os.truncate(small / "filler.bin", max(0, (small / "filler.bin").stat().st_size - leave))


def test_gcn_train_on_a_full_disk_stops_with_one_line(small_disk, tmp_path):
    """torch.save on a full disk fails inside torch's zip writer (a RuntimeError): still one line."""
    data = tmp_path / "data"
    assert gramc("data", "prepare", "--synthetic", "--out", str(data), *TINY, cwd=tmp_path).returncode == 0
    _fill(small_disk, leave=12 * 1024)
    proc = gramc("gcn", "train", "--data", str(data), "--out", str(small_disk / "gcn"), *TINY, "gcn.dim=512",
                 cwd=tmp_path)
    one_line_disk_full(proc)
    assert not (small_disk / "gcn").exists()


def test_a_torch_write_that_fails_is_an_os_error_naming_the_file(tmp_path, monkeypatch):
    import torch

    from gramc.io import torch_save

    def failing(obj, path):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 832 vs 726")

    monkeypatch.setattr(torch, "save", failing)
    with pytest.raises(OSError) as e:
        torch_save({"x": 1}, tmp_path / "t.pt")
    assert e.value.filename == str(tmp_path / "t.pt") and not list(tmp_path.iterdir())
