"""Restartable stages: fingerprints, records, and running (or skipping) one stage.

A stage's fingerprint is the sha256 of the config keys it declares (`Reads`) and of its inputs'
fingerprints (an upstream stage's fingerprint, or a file's sha256). It is stored in
`<stage>/.stage.json`, written atomically and last; a stage whose `.stage.json` holds the current
fingerprint is skipped. An in-place stage (training) marks its folder with `.stage.pending.json`
while it runs, so a crashed run resumes there with an unchanged fingerprint.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from ..config import Config, flatten, to_dict
from ..errors import GramcError
from ..io import aside_path, atomic_dir, claim_output, read_json, sha256_file, sha256_text, write_json
from ..lock import output_lock

STAGE_FILE = ".stage.json"
PENDING_FILE = ".stage.pending.json"


class PipelineError(GramcError, RuntimeError):
    """A stage cannot run; the message names the stage and what is missing."""

    exit_code = 1


# --------------------------------------------------------------------------------------------
# What a stage reads
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reads:
    """The config a stage reads, declared next to its builder (tests/test_pipeline_reads.py runs
    every stage and checks that it reads nothing else).

    The fingerprint holds the values of exactly `keys` (sections or dotted fields) less `ignore`;
    everything else a stage reads reaches its fingerprint through its inputs: the stages (or
    "data", the dataset) named in `after`, and the files or folders that `paths` name (by content).
    """

    keys: tuple[str, ...] = ()
    after: tuple[str, ...] = ()  # upstream stages ("data" = the dataset) whose fingerprints are inputs
    paths: tuple[str, ...] = ()  # keys naming files/folders read: their content fingerprint is an input
    ignore: tuple[str, ...] = ()  # read, but they cannot change the output (each says why where declared)
    outputs: tuple[str, ...] = ()  # keys that point downstream stages at this stage's output
    when: tuple[str, ...] = ()  # keys that decide whether the stage runs at all, not what it computes

    def config(self, cfg: Config) -> dict[str, Any]:
        """The fingerprinted config: the declared keys' values, without the ignored ones."""
        return sections(cfg, *self.keys, drop=self.ignore)


def sections(cfg: Config, *names: str, drop: tuple[str, ...] | list[str] = ()) -> dict[str, Any]:
    """The named config sections or fields (dotted names), without the `drop` keys (dotted)."""
    full = to_dict(cfg)
    out: dict[str, Any] = {}
    for name in names:
        node: Any = full
        for part in name.split("."):
            node = node[part]
        out[name] = json.loads(json.dumps(node))
    for key in drop:  # a dropped key inside a named section leaves that section
        for name, node in out.items():
            if key.startswith(name + "."):
                *path, leaf = key[len(name) + 1:].split(".")
                for part in path:
                    node = node.get(part, {})
                node.pop(leaf, None)
    return out


def covers(declared: tuple[str, ...] | list[str], key: str) -> bool:
    """True when `key` is one of `declared` or lies inside a declared section."""
    return any(key == d or key.startswith(d + ".") for d in declared)


# --------------------------------------------------------------------------------------------
# Fingerprints and stage records
# --------------------------------------------------------------------------------------------


def input_fingerprint(path: str | Path) -> str:
    """A stage folder's recorded fingerprint, a file's sha256, or a folder's combined file hashes."""
    p = Path(path)
    if (p / STAGE_FILE).is_file():
        return read_json(p / STAGE_FILE)["fingerprint"]
    if p.is_file():
        return sha256_file(p)
    if p.is_dir():
        parts = [f"{f.relative_to(p)}:{sha256_file(f)}" for f in sorted(p.rglob("*"))
                 if f.is_file() and not any(x.startswith(".") for x in f.relative_to(p).parts)]
        return sha256_text("\n".join(parts))
    raise PipelineError(f"input {p} does not exist")


def stage_fingerprint(config: dict[str, Any], inputs: dict[str, str]) -> str:
    """sha256 of the stage's config section(s) and its inputs' fingerprints (order-independent)."""
    return sha256_text(json.dumps({"config": config, "inputs": inputs}, sort_keys=True, default=str))


def stage_done(folder: Path, fingerprint: str) -> bool:
    rec = folder / STAGE_FILE
    return rec.is_file() and read_json(rec).get("fingerprint") == fingerprint


@dataclass
class Stage:
    """One step: its output folder, the config it depends on, its inputs, and how to build it."""

    name: str
    folder: Path
    config: dict[str, Any]
    inputs: dict[str, str]  # name -> fingerprint
    build: Callable[[Path], dict[str, Any] | None]  # builds into the given folder; returns a summary
    atomic: bool = True  # build in a temporary sibling and swap in (False: build in place, e.g. training)
    # an output without a record that provably matches this stage's settings and inputs (e.g. a
    # GCN folder trained by `gramc gcn train`): returns a summary to adopt it, None to rebuild
    adopt: Callable[[Path], dict[str, Any] | None] | None = None
    # gramc.io.MARKERS kinds besides "stage" that mark an existing folder as replaceable (e.g. "gcn")
    kinds: tuple[str, ...] = ("stage",)
    # files a folder without a record may hold and still be replaced (e.g. what `gramc gcn train` writes)
    own_files: tuple[str, ...] = ()
    reads: Optional[Reads] = None  # the config keys the stage declares (`config` is computed from them)
    # in-place stages: dotted config keys an unfinished build may see changed and still continue
    # (budgets such as train.epochs or train.patience: `gramc train --resume` accepts the same ones)
    resumable: tuple[str, ...] = ()

    @property
    def fingerprint(self) -> str:
        return stage_fingerprint(self.config, self.inputs)

    def flat_config(self) -> dict[str, Any]:
        """The stage's config as dotted keys -> values."""
        return flatten(self.config)

    @property
    def resume_fingerprint(self) -> str:
        """The fingerprint without the resumable keys: equal for an unfinished build that may continue."""
        kept = {k: v for k, v in self.flat_config().items() if k not in self.resumable}
        return stage_fingerprint(kept, self.inputs)


@dataclass
class StageResult:
    name: str
    status: str  # "skipped" (up to date) | "ran" | "adopted" (matching output without a record)
    folder: str
    fingerprint: str
    seconds: float = 0.0
    summary: dict[str, Any] = field(default_factory=dict)


def _written_files(folder: Path) -> list[str]:
    """Top-level names a stage build wrote (recorded so that a rebuild replaces only those)."""
    return sorted(p.name for p in folder.iterdir() if p.name not in (STAGE_FILE, PENDING_FILE))


def claim_stage_folder(stage: Stage) -> None:
    """Refuse to replace a stage folder that holds anything the pipeline did not write there."""
    folder = stage.folder
    own = None
    if not stage.atomic:  # an in-place stage never deletes: an old folder is moved aside whole
        pass
    elif (folder / STAGE_FILE).is_file():
        files = read_json(folder / STAGE_FILE).get("files")
        own = None if files is None else [*files, STAGE_FILE, PENDING_FILE]
    elif stage.own_files:
        own = [*stage.own_files, STAGE_FILE, PENDING_FILE]
    claim_output(folder, ("stage", *stage.kinds), what=f"[{stage.name}] stage folder", own=own)


def run_stage(stage: Stage, log: Callable[[str], None] = print) -> StageResult:
    """Skip the stage when its record matches, else build it and write the record last.

    A stage folder is only ever replaced when it holds nothing but what this pipeline wrote there
    (its `.stage.json` lists the files); anything else is refused (gramc.io.claim_output). The
    stage folder's lock (gramc.lock) is held meanwhile: no other command writes it. A stage that is up
    to date is only read, without the lock (its record is written last, atomically), so processes
    that share a finished stage (the benchmark's parallel lanes) do not refuse each other."""
    if stage_done(stage.folder, stage.fingerprint):
        return _skipped(stage, log)
    with output_lock(stage.folder, f"[{stage.name}] stage folder"):
        return _run_locked(stage, log)


def _skipped(stage: Stage, log: Callable[[str], None]) -> StageResult:
    log(f"[{stage.name}] up to date ({stage.folder}), skipped")
    return StageResult(stage.name, "skipped", str(stage.folder), stage.fingerprint,
                       summary=read_json(stage.folder / STAGE_FILE).get("summary", {}))


def _run_locked(stage: Stage, log: Callable[[str], None]) -> StageResult:
    """run_stage's work, under the stage folder's lock (the stage is checked again: another process
    may have finished it meanwhile)."""
    fp = stage.fingerprint
    if stage_done(stage.folder, fp):
        return _skipped(stage, log)
    t0 = time.time()
    record = {"stage": stage.name, "fingerprint": fp, "config": stage.config, "inputs": stage.inputs,
              "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    adopted = stage.adopt(stage.folder) if stage.adopt is not None and stage.folder.is_dir() else None
    if adopted is not None:
        record.update(summary={"adopted": True, **adopted}, seconds=0.0)
        write_json(stage.folder / STAGE_FILE, record)
        log(f"[{stage.name}] existing output matches the settings and inputs: adopted ({stage.folder})")
        return StageResult(stage.name, "adopted", str(stage.folder), fp, 0.0, record["summary"])
    log(f"[{stage.name}] running -> {stage.folder}")
    claim_stage_folder(stage)
    (_build_atomic if stage.atomic else _build_in_place)(stage, record, t0, log)
    log(f"[{stage.name}] done in {time.time() - t0:.1f} s")
    return StageResult(stage.name, "ran", str(stage.folder), fp, record["seconds"], record["summary"])


def _build_atomic(stage: Stage, record: dict[str, Any], t0: float, log: Callable[[str], None]) -> None:
    """Build in a temporary sibling, write the record into it, then swap it in."""
    # the output of other settings is kept aside when the new one differs (gramc.io.atomic_dir)
    with atomic_dir(stage.folder, keep=f"[{stage.name}] stage folder", same_if=("run_info.json", "config.yaml")) as tmp:
        summary = stage.build(tmp) or {}
        record.update(summary=summary, seconds=round(time.time() - t0, 2), files=_written_files(tmp))
        write_json(tmp / STAGE_FILE, record)


def _build_in_place(stage: Stage, record: dict[str, Any], t0: float, log: Callable[[str], None]) -> None:
    """Build in the folder itself (resumable: `.stage.pending.json` marks it); a folder built from
    other settings is moved aside whole, never deleted."""
    folder, fp = stage.folder, record["fingerprint"]
    pending = folder / PENDING_FILE
    if folder.exists() and not _continues(stage, pending, log):
        if any(folder.iterdir()):
            aside = aside_path(folder)
            log(f"[{stage.name}] settings changed: previous output kept as {aside}")
            folder.rename(aside)
    folder.mkdir(parents=True, exist_ok=True)
    write_json(pending, {"stage": stage.name, "fingerprint": fp, "resume_fingerprint": stage.resume_fingerprint,
                         "config": stage.flat_config()})
    summary = stage.build(folder) or {}
    record.update(summary=summary, seconds=round(time.time() - t0, 2), files=_written_files(folder))
    write_json(folder / STAGE_FILE, record)
    pending.unlink(missing_ok=True)


def _continues(stage: Stage, pending: Path, log: Callable[[str], None]) -> bool:
    """Whether an unfinished build in `pending`'s folder continues: the same settings, or settings
    that differ only in the stage's resumable keys (which are then named)."""
    if not pending.is_file():
        return False
    rec = read_json(pending)
    if rec.get("fingerprint") == stage.fingerprint:
        return True
    if not stage.resumable or rec.get("resume_fingerprint") != stage.resume_fingerprint:
        return False
    old, new = rec.get("config", {}), stage.flat_config()
    changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    log(f"[{stage.name}] continuing the unfinished build with changed budget settings: "
        + ", ".join(f"{k} {old.get(k)!r} -> {new.get(k)!r}" for k in changed))
    return True
