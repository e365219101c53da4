"""One writer per output: an exclusive OS lock on each folder a command writes (docs/runs.md).

    with output_lock(out, "run folder (run.out)"):
        ...  # check, move aside, write: no other process writes `out` meanwhile

* The lock is `fcntl.flock(LOCK_EX | LOCK_NB)` on the file `<parent>/.<name>.lock`, beside the
  output (not in it): it exists before the output does, and moving the output aside
  (`train --overwrite`) does not move the lock. The path is resolved first, so two spellings of
  one folder (relative, absolute, through a symlink) share one lock.
* The kernel holds the lock for the process and drops it when the process ends, however it ends
  (kill -9 included): a lock is never stale. The file itself stays behind, empty of meaning; the
  next writer reuses it.
* A second writer is refused at once, never kept waiting: `OutputBusyError` (exit 75, "try again
  later") naming the holder's pid, command line and start time, which the holder writes into the
  lock file right after taking the lock.
* The lock belongs to the process that took it: a program it starts does not inherit it, and a
  forked child (a DataLoader worker) closes its copy at once, so nothing outlives the holder.
* Reentrant per process and path: taking a lock this process already holds is a no-op, so a
  command that writes the same output at two levels (quickstart -> pipeline) does not refuse
  itself. The outermost `with` releases it.
* Under torchrun only rank 0 takes the lock (the `RANK` variable, as `gramc.runtime.launch`
  reads it; read here because gramc.runtime loads torch). The ranks of one job are one writer: a
  flock is per process, so they cannot all hold it, and rank 0 is the rank that claims, moves and
  writes the folder. torchrun ends every rank when one exits, so the lock lives as long as the
  job; a refused rank 0 ends the job before any rank has written.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shlex
import socket
import sys
import time
from pathlib import Path
from typing import Iterator

from .errors import OutputBusyError

# lock files this process holds: lock path -> open file descriptor (closing it releases the lock)
_HELD: dict[Path, int] = {}


def _forget_in_child() -> None:
    """In a forked child (e.g. a DataLoader worker): close the inherited lock descriptors, so that
    the lock ends with the process that took it, not with the last of its children. (Closing a
    copy never releases the parent's lock; `flock(LOCK_UN)` would, so it is not called here.)"""
    for fd in _HELD.values():
        os.close(fd)
    _HELD.clear()


os.register_at_fork(after_in_child=_forget_in_child)


def lock_path(path: str | Path) -> Path:
    """The lock file of output `path`: `<parent>/.<name>.lock` (of the resolved path)."""
    target = Path(path).expanduser().resolve()
    return target.with_name(f".{target.name}.lock")


def holds_lock(path: str | Path) -> bool:
    """Whether this process holds the lock of output `path`."""
    return lock_path(path) in _HELD


@contextlib.contextmanager
def output_lock(path: str | Path, what: str = "output") -> Iterator[None]:
    """Hold the exclusive lock of output `path` for the `with` block (see the module docstring).

    Raises OutputBusyError at once when another process holds it; `what` names the output in that
    message (e.g. "--out", "run folder (run.out)")."""
    lock = lock_path(path)
    outermost = _is_rank0() and lock not in _HELD
    if outermost:
        _HELD[lock] = _acquire(lock, path, what)
    try:
        yield
    finally:
        fd = _HELD.pop(lock, None) if outermost else None  # (None in a forked child: see above)
        if fd is not None:
            os.close(fd)  # closing the descriptor releases the lock


def _is_rank0() -> bool:
    """Whether this process is a plain process or torchrun's rank 0 (a RANK that is no integer is
    left to gramc.runtime.launch to report)."""
    try:
        return int(os.environ.get("RANK", "0") or 0) == 0
    except ValueError:
        return True


def _acquire(lock: Path, path: str | Path, what: str) -> int:
    """Take the lock file's flock without waiting and write this process into it; return the fd."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    # O_CLOEXEC: a program this process starts does not inherit (and so cannot keep) the lock
    fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:  # another process holds it
        holder = _read_holder(fd)
        os.close(fd)
        raise OutputBusyError(_busy_message(path, what, lock, holder)) from None
    except BaseException:
        os.close(fd)
        raise
    _write_holder(fd)
    return fd


def command_line() -> str:
    """This process's command line: `gramc train ...` for gramc (`python -m gramc train ...` too),
    else the interpreter's whole command line (e.g. `python -c ...` of a script using the lock)."""
    first = Path(sys.argv[0]) if sys.argv else Path()
    if first.name == "gramc" or (first.name == "__main__.py" and first.parent.name == "gramc"):
        return shlex.join(["gramc", *sys.argv[1:]])
    return shlex.join(getattr(sys, "orig_argv", sys.argv))


def _write_holder(fd: int) -> None:
    """Replace the lock file's content with who holds it: pid, command line, host, start time."""
    record = {"pid": os.getpid(), "command": command_line(), "host": socket.gethostname(),
              "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    data = (json.dumps(record) + "\n").encode("utf-8")
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)


def _read_holder(fd: int) -> dict:
    """The holder's record from the lock file; {} if it cannot be read. The holder writes it just
    after taking the lock, so an empty file is retried for a moment."""
    for _ in range(20):
        try:
            record = json.loads(os.pread(fd, 1 << 16, 0).decode("utf-8"))
            if isinstance(record, dict):
                return record
        except (OSError, ValueError):
            pass
        time.sleep(0.01)
    return {}


def _busy_message(path: str | Path, what: str, lock: Path, holder: dict) -> str:
    """One line: which output, who writes it (pid, command, since when), and what to do."""
    if "pid" not in holder:  # the holder has not written its record (yet): it is not named
        return (f"{what} {path} is being written by another process (its lock file {lock} does not "
                f"name it yet); one command writes an output at a time: run this one again when it is done")
    pid = holder["pid"]
    command = " ".join(str(holder.get("command", "?")).split())  # one line, even for `python -c '...'`
    if len(command) > 300:
        command = command[:297] + "..."
    host = holder.get("host")
    where = f" on host {host}" if host and host != socket.gethostname() else ""
    since = f", since {holder['started']}" if holder.get("started") else ""
    return (f"{what} {path} is being written by another process: pid {pid}{where} (`{command}`){since}. "
            f"One command writes an output at a time: wait for that one to finish, or stop it "
            f"(kill {pid}), then run this command again (lock file {lock})")
