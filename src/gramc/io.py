"""Safe file output and fingerprints: atomic writes, atomic folders, output ownership, sha256.

Guarantees (docs/runs.md, "What gramc may overwrite"):

* Every write goes to a temporary sibling `.<name>.<pid>.<random>.tmp` and is renamed into place;
  a folder is swapped in with one atomic exchange (Linux renameat2), so the previous output stays
  readable at its path until the new one is complete, also under kill -9.
* Temporaries a killed gramc process left beside a path are removed on the next write to that
  path (those of a process that is still running are left alone).
* `claim_output(path, kind, inputs)` is the one ownership rule: gramc replaces a folder only when
  it is empty or holds gramc's own marker for that kind of output; an output can never equal or
  contain one of the command's inputs, nor the working directory.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import glob
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable, Iterator

from .errors import GramcError, OwnershipError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            block = f.read(chunk)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# what follows `.<name>.` in a temporary's name: `<pid>.<8 random chars>.tmp` (older gramc: no pid)
_TMP_NAME = re.compile(r"^(?:(\d+)\.)?[a-z0-9_]{8}\.tmp$")


# temporaries of this process's writes in progress (a same-pid leftover of an earlier process,
# e.g. in a container that always starts gramc under the same pid, is stale)
_IN_PROGRESS: set[Path] = set()


def _tmp_prefix(path: Path) -> str:
    return f".{path.name}.{os.getpid()}."


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale_temporaries(path: str | Path) -> list[Path]:
    """Remove `.<name>.*.tmp` / `.<name>.old` siblings of `path` left by killed gramc writes.

    A temporary whose writer (the pid in its name) still runs is kept; names without a pid (older
    gramc) count as stale. Returns what was removed.
    """
    path = Path(path)
    if not path.parent.is_dir():
        return []
    removed = []
    for cand in path.parent.glob(f".{glob.escape(path.name)}.*"):
        rest = cand.name[len(path.name) + 2:]
        if rest == "old":
            if not path.exists():  # killed between the two renames of the fallback swap: restore
                os.replace(cand, path)
                continue
        else:
            m = _TMP_NAME.match(rest)
            if m is None:
                continue  # not a temporary of this path (e.g. one of `<name>.suffix`)
            pid = int(m.group(1)) if m.group(1) else None
            if cand in _IN_PROGRESS or (pid is not None and pid != os.getpid() and _pid_alive(pid)):
                continue  # a write in progress (this process's, or another running process's)
        shutil.rmtree(cand) if cand.is_dir() and not cand.is_symlink() else cand.unlink(missing_ok=True)
        removed.append(cand)
    return removed


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success rename it over `path`, else delete it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_dir():
        raise OwnershipError(f"{path} is a folder; a file is written there (give a file path)")
    clean_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(prefix=_tmp_prefix(path), suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    _IN_PROGRESS.add(tmp_path)
    try:
        yield tmp_path
        if tmp_path.exists():  # mkstemp makes 0600 files: give them the usual umask permissions
            os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, path)
    finally:
        _IN_PROGRESS.discard(tmp_path)
        if tmp_path.exists():
            tmp_path.unlink()


def write_text(path: str | Path, text: str) -> None:
    """Write text atomically (temporary file, then rename)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def torch_write(obj: Any, path: str | Path, target: str | Path | None = None) -> None:
    """torch.save to `path`; a failed write is an OSError naming `target` (default `path`).

    torch's zip writer reports a write that failed (a full disk, an I/O error) as a RuntimeError
    ("[enforce fail at inline_container.cc] ... unexpected pos"); it becomes ENOSPC when the
    filesystem has (almost) no space left, else EIO, so `gramc` prints it as one line."""
    import torch

    try:
        torch.save(obj, path)
    except RuntimeError as e:
        text = str(e)
        if "inline_container" not in text and "file write failed" not in text:
            raise
        try:
            st = os.statvfs(Path(path).parent)
            full = st.f_bavail * st.f_frsize < (1 << 20)
        except OSError:
            full = False
        code = errno.ENOSPC if full else errno.EIO
        raise OSError(code, os.strerror(code), str(target or path)) from e


def torch_save(obj: Any, path: str | Path) -> None:
    """torch.save atomically."""
    with atomic_path(path) as tmp:
        torch_write(obj, tmp, target=path)


_RENAME_EXCHANGE = 2


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd = -100
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def replace_dir(new: Path, path: Path) -> None:
    """Put folder `new` at `path`; the old folder there stays readable until the swap (then deleted)."""
    if not path.exists():
        os.replace(new, path)
    elif _exchange(new, path):
        shutil.rmtree(new)  # `new` now holds the old folder
    else:  # two renames; a kill in between leaves `.name.old`, restored by the next write
        old = path.with_name(f".{path.name}.old")
        if old.exists():
            shutil.rmtree(old)
        os.replace(path, old)
        os.replace(new, path)
        shutil.rmtree(old)


@contextlib.contextmanager
def atomic_dir(path: str | Path, keep: str | None = None, same_if: Iterable[str] = ()) -> Iterator[Path]:
    """Build a folder in a temporary sibling; on success replace `path` with it.

    An existing folder at `path` stays intact until the new one is complete, and is left
    untouched if the build fails. Callers that may replace a folder they did not write check
    `claim_output` first. With `keep` (what the folder is, for the message) an existing folder
    whose files differ from the new one's is first kept as `<name>.replaced-<time>` beside it
    (`keep_copy`); one that differs only in the `same_if` files (run info, timings) is replaced.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temporaries(path)
    tmp = Path(tempfile.mkdtemp(prefix=_tmp_prefix(path), suffix=".tmp", dir=path.parent))
    _IN_PROGRESS.add(tmp)
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700 folders
        if keep is not None and path.is_dir() and not same_files(tmp, path, ignore=same_if):
            keep_copy(path, keep)
        replace_dir(tmp, path)
    finally:
        _IN_PROGRESS.discard(tmp)
        if tmp.exists():
            shutil.rmtree(tmp)


# --------------------------------------------------------------------------------------------
# Earlier outputs kept aside
# --------------------------------------------------------------------------------------------


def aside_path(path: str | Path) -> Path:
    """A free name beside `path` for its earlier version: `<name>.replaced-<YYYYmmdd-HHMMSS>` for a
    folder, `<stem>.replaced-<time><suffix>` for a file; `-2`, `-3`, ... when taken."""
    path = Path(path)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    stem, suffix = (path.name, "") if path.is_dir() else (path.stem, path.suffix)
    cand, n = path.with_name(f"{stem}.replaced-{stamp}{suffix}"), 2
    while cand.exists() or cand.is_symlink():
        cand, n = path.with_name(f"{stem}.replaced-{stamp}-{n}{suffix}"), n + 1
    return cand


def _say_kept(what: str, path: Path, aside: Path) -> None:
    print(f"gramc: {what} {path} held an earlier output: kept as {aside}", file=sys.stderr)


def move_aside(path: str | Path, what: str) -> Path | None:
    """Rename an existing `path` (file or folder) to `aside_path(path)` and say so in one line on
    stderr; the new name, or None when there was nothing at `path`."""
    path = Path(path)
    if not (path.exists() or path.is_symlink()):
        return None
    aside = aside_path(path)
    os.rename(path, aside)
    _say_kept(what, path, aside)
    return aside


def keep_copy(path: str | Path, what: str) -> Path:
    """Copy the folder `path` to `aside_path(path)` (hard links where the filesystem allows: the
    atomic writes replace files by rename, so linked files never change) and say so on stderr.
    The copy is built in a temporary and renamed into place: a kill leaves no partial copy, and
    `path` itself is untouched."""
    path = Path(path)
    aside = aside_path(path)
    with atomic_dir(aside) as tmp:
        os.rmdir(tmp)
        try:
            shutil.copytree(path, tmp, symlinks=True, copy_function=os.link)
        except OSError:  # no hard links here (another filesystem type): real copies
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(path, tmp, symlinks=True)
    _say_kept(what, path, aside)
    return aside


@contextlib.contextmanager
def keep_file(path: str | Path, what: str) -> Iterator[None]:
    """Around a rewrite of the file `path`: its earlier version is kept as `aside_path(path)` when
    the rewrite changed it (said in one line on stderr), and dropped when the bytes are the same.
    The earlier version is linked (or copied) aside before the body runs, so no kill loses it."""
    import filecmp

    path = Path(path)
    if not path.is_file():
        yield
        return
    aside = aside_path(path)
    try:
        os.link(path, aside)
    except OSError:  # no hard links here
        shutil.copy2(path, aside)
    try:
        yield
    finally:
        if path.is_file() and filecmp.cmp(path, aside, shallow=False):
            aside.unlink()
        else:
            _say_kept(what, path, aside)


def same_files(a: str | Path, b: str | Path, ignore: Iterable[str] = ()) -> bool:
    """Whether folders `a` and `b` hold the same files with the same bytes, leaving out the
    top-level names in `ignore` and gramc's hidden temporaries and locks."""
    import filecmp

    a, b = Path(a), Path(b)
    skip = set(ignore)

    def files(root: Path) -> set[str]:
        return {str(p.relative_to(root)) for p in root.rglob("*")
                if (p.is_file() or p.is_symlink()) and p.relative_to(root).parts[0] not in skip
                and not _gramc_hidden(p.relative_to(root).parts[0])}

    names = files(a)
    return names == files(b) and all(filecmp.cmp(a / n, b / n, shallow=False) for n in names)


# --------------------------------------------------------------------------------------------
# Ownership of output paths
# --------------------------------------------------------------------------------------------

# the files that mark a folder as gramc's own output of each kind (any one of them suffices)
MARKERS: dict[str, tuple[str, ...]] = {
    "dataset": ("dataset.json",),
    "gcn": ("gcn_meta.json",),
    "run": ("run_info.json", "checkpoints", "log.jsonl"),
    "stage": (".stage.json", ".stage.pending.json"),
    "pipeline": ("pipeline_run_info.json", "pipeline.json"),
    "eval": ("run_info.json",),  # a metrics.json alone may be anybody's
    "ids": ("ids.txt", "ids_check.json", "tokenizer"),
    "tokenizer": ("tokenizer.json",),
}


def _within(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def _listing(folder: Path, n: int = 5) -> str:
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())
    return ", ".join(names[:n]) + (f" (+{len(names) - n} more)" if len(names) > n else "")


def holds_marker(folder: str | Path, *kinds: str) -> bool:
    folder = Path(folder)
    return any((folder / m).exists() for k in kinds for m in MARKERS[k])


def is_lock_name(name: str) -> bool:
    """`.<name>.lock`: the lock file of an output beside it (gramc.lock); it stays after the lock ends."""
    return name.startswith(".") and name.endswith(".lock")


def _gramc_hidden(name: str) -> bool:
    """Dot-names gramc itself writes: stage records, write temporaries and output locks."""
    return name in (".stage.json", ".stage.pending.json") or name.endswith((".tmp", ".old")) or is_lock_name(name)


def claim_output(path: str | Path, kinds: str | Iterable[str], inputs: Iterable[str | Path | None] = (),
                 what: str = "output", own: Iterable[str] | None = None) -> Path:
    """Check that gramc may (re)write the folder `path` as one of `kinds`; return it resolved.

    Allowed: an absent path, an empty folder, or a folder holding a marker of one of `kinds`
    (MARKERS) and, when `own` (the names gramc writes there) is given, nothing else. Refused with
    an OwnershipError naming the path: a file where a folder goes, a folder with other content, a
    path that is or contains one of `inputs` or the working directory.
    """
    kinds = (kinds,) if isinstance(kinds, str) else tuple(kinds)
    target = Path(path).expanduser().resolve()
    for inp in inputs:
        if not inp:
            continue
        src = Path(inp).expanduser().resolve()
        if _within(src, target):
            rel = "is" if src == target else "contains"
            raise OwnershipError(f"{what} {path} {rel} the input {inp}; write to another folder "
                                 f"(gramc never replaces a command's own input)")
    if _within(Path.cwd().resolve(), target):
        raise OwnershipError(f"{what} {path} is the working directory (or a folder above it); "
                             f"give a new folder, e.g. {Path(path) / 'out'}")
    if not target.exists():
        return target
    if not target.is_dir():
        raise OwnershipError(f"{what} {path} is a file; a folder is written there (give a folder path)")
    if all(is_lock_name(p.name) for p in target.iterdir()):
        return target  # empty, but for the lock files of outputs written inside it
    if holds_marker(target, *kinds):
        if own is None:
            return target
        own = set(own)
        foreign = sorted(p.name for p in target.iterdir() if p.name not in own and not _gramc_hidden(p.name))
        if not foreign:
            return target
        raise OwnershipError(f"{what} {path} is replaced as a whole, but it also holds files gramc did not "
                             f"write there ({', '.join(foreign[:5])}); move them away first")
    markers = " or ".join(m for k in kinds for m in MARKERS[k])
    raise OwnershipError(f"{what} {path} already holds files gramc did not write ({_listing(target)}; "
                         f"no {markers}); refusing to replace it. Give a new or empty folder, or move "
                         f"those files away")


def claim_file(path: str | Path, inputs: Iterable[str | Path | None] = (), what: str = "output file") -> Path:
    """Check that gramc may write the file `path`: not a folder, not one of `inputs` (nor inside an
    input file's place); return it resolved."""
    target = Path(path).expanduser().resolve()
    if target.is_dir():
        raise OwnershipError(f"{what} {path} is a folder; give a file path")
    for inp in inputs:
        if inp and Path(inp).expanduser().resolve() == target:
            raise OwnershipError(f"{what} {path} is the input {inp}; write to another file "
                                 f"(gramc never replaces a command's own input)")
    return target


def text_lines(path: str | Path, error: type[Exception] = GramcError) -> Iterator[tuple[int, str]]:
    """(line number, line) of a UTF-8 text file; a folder or a non-UTF-8 line is `error` naming
    the file and line."""
    path = Path(path)
    if path.is_dir():
        raise error(f"{path}: is a folder; a file is expected here")
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            try:
                yield n, raw.decode("utf-8-sig" if n == 1 else "utf-8")
            except UnicodeDecodeError as e:
                raise error(f"{path}:{n}: not valid UTF-8 (byte {raw[e.start:e.start + 1]!r} at column "
                            f"{e.start + 1}); re-encode the file as UTF-8") from e


def read_jsonl(path: str | Path, repair: bool = False) -> list[dict]:
    """Records of a JSON-lines file. A torn last line (what a crash leaves) is dropped, and with
    `repair` cut from the file with a message; a bad line elsewhere is an error naming it."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise GramcError(f"{path} is not UTF-8 text ({e}); it is not a gramc log") from e
    lines = text.split("\n")
    records: list[dict] = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            if not isinstance(rec, dict):
                raise ValueError("not a JSON object")
        except ValueError as e:
            if any(x.strip() for x in lines[i + 1:]):
                raise GramcError(f"{path}, line {i + 1}: not a JSON record ({e}); the file is damaged "
                                 f"(only a torn last line is repaired)") from e
            if repair:
                import sys

                print(f"{path}: line {i + 1} is torn (an interrupted write): removed it", file=sys.stderr)
                write_text(path, "".join(x + "\n" for x in lines[:i] if x.strip()))
            break
        records.append(rec)
    return records


_NO_MATPLOTLIB_SAID = False


def pyplot() -> Any:
    """`matplotlib.pyplot` on the file-only Agg backend, or None when matplotlib is not installed:
    the caller then skips its PNG (one warning per process; every plotted figure is also written
    as numbers). Imported here, on first use, because matplotlib is slow to import."""
    global _NO_MATPLOTLIB_SAID
    try:
        import matplotlib
    except ImportError:
        if not _NO_MATPLOTLIB_SAID:
            import sys

            print("gramc: matplotlib is not installed: PNG plots are skipped (the numbers are in the JSON files)",
                  file=sys.stderr)
            _NO_MATPLOTLIB_SAID = True
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
