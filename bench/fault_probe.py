"""Fault probe: bad input, misuse and crashes tried against the real `gramc` command on tiny synthetic data.

    PYTHONPATH=src python bench/fault_probe.py [--out bench/results/fault_probe.json] [--only NAME ...]
    PYTHONPATH=src python bench/fault_probe.py --table     # the Markdown table of docs/runs.md

Each case runs `python -m gramc ...` (a separate process, as a user would) in a temporary folder and
is classified from what a user sees:

* `traceback`: stderr holds "Traceback (most recent call last)";
* `lost`: an output that existed before the command (a dataset, a run, an evaluation) changed or
  vanished without being kept aside;
* `silent`: the command exited 0 although the input was bad (or its result is wrong);
* `unclear`: it failed, but the message does not name what is wrong (the file, key or value);
* `good`: none of these.

Classes are those of issue 31: config, ids, files, runs, concurrency, disk, signals, replace.
Cases that need something the machine lacks (mounting a tmpfs as root) are `skipped` with the
reason. The result is a JSON list of cases plus the counts per verdict.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
TINY = ["data.synthetic.num_users=30", "data.synthetic.num_items=20", "data.synthetic.num_topics=3",
        "ids.vocab_size=300", "ids.clusters=4", "ids.levels=2", "gcn.dim=8", "gcn.epochs=1", "gcn.eval_every=0",
        "gcn.similar_k=5", "model.similar_items=2", "model.passage_len=24", "model.user_passage_len=24"]
TRACE = "Traceback (most recent call last)"


@dataclass
class Outcome:
    case: str
    cls: str
    command: str
    rc: int | None = None
    traceback: bool = False
    named: bool | None = None  # the message names the file / key / value
    intact: bool | None = None  # outputs that existed before are unchanged (or kept aside)
    verdict: str = ""
    seconds: float = 0.0
    message: str = ""  # the error line(s) a user sees
    note: str = ""
    extra: dict = field(default_factory=dict)


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def gramc(*args: str, cwd: Path, timeout: float = 240, stdin=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gramc", *args], cwd=cwd, env=env(), capture_output=True,
                          text=True, timeout=timeout, stdin=stdin)


def digest(path: Path) -> dict[str, str]:
    """sha256 of every file under `path` (or of the file itself)."""
    if path.is_file():
        return {path.name: hashlib.sha256(path.read_bytes()).hexdigest()}
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


def kept_or_same(path: Path, before: dict[str, str]) -> bool:
    """`path` still holds `before`, or an aside copy `<name>.replaced-*` beside it does."""
    if path.exists() and digest(path) == before:
        return True
    stem = path.name.split(".")[0]
    return any(digest(p) == before for p in path.parent.glob(f"{stem}.replaced-*"))


def error_lines(stderr: str) -> str:
    lines = [x for x in stderr.replace("\r", "\n").splitlines() if "error" in x.lower() or "interrupted" in x]
    return "\n".join(lines[-3:])[:600]


# --------------------------------------------------------------------------------------------
# Shared fixtures (built once per probe)
# --------------------------------------------------------------------------------------------


class World:
    """The tiny dataset, run and evaluation every case may start from (copied, never changed)."""

    def __init__(self, root: Path):
        self.root = root
        self.data = root / "base" / "data"
        self.run = root / "base" / "run"

    def build(self) -> None:
        base = self.root / "base"
        base.mkdir(parents=True)
        p = gramc("data", "prepare", "--synthetic", "--out", str(self.data), *TINY, cwd=base)
        assert p.returncode == 0, p.stderr[-2000:]
        p = gramc("train", f"data.path={self.data}", f"run.out={self.run}", "run.device=cpu", "train.max_steps=2",
                  "train.final_eval=false", "eval.beams=10", "eval.allow_capped=true",
                  "eval.bootstrap=20", *TINY, cwd=base, timeout=400)
        assert p.returncode == 0, p.stderr[-3000:]
        best = self.run / "checkpoints" / "best"
        if not best.is_dir():
            shutil.copytree(self.run / "checkpoints" / "last", best)

    def copy_run(self, where: Path) -> Path:
        shutil.copytree(self.run, where, symlinks=True)
        return where


# --------------------------------------------------------------------------------------------
# Cases
# --------------------------------------------------------------------------------------------

Case = Callable[[World, Path], Outcome]
CASES: list[tuple[str, str, Case]] = []


def case(name: str, cls: str):
    def deco(fn: Case) -> Case:
        CASES.append((name, cls, fn))
        return fn
    return deco


def expect_error(o: Outcome, p: subprocess.CompletedProcess, names: list[str]) -> Outcome:
    """A refusal: non-zero exit, no traceback, every one of `names` in stderr."""
    o.rc, o.traceback = p.returncode, TRACE in p.stderr
    o.message = error_lines(p.stderr) or p.stderr.strip()[-400:]
    o.named = all(n in p.stderr for n in names)
    if o.rc == 0:
        o.note = o.note or "exit 0 on bad input"
    return o


def prepare_args(seqs: Path, items: Path | None, out: Path) -> list[str]:
    return ["data", "prepare", "--sequences", str(seqs), *(["--items", str(items)] if items else []), "--out", str(out)]


# ---- config ----------------------------------------------------------------------------------

def _config_case(name: str, write: Callable[[Path], Path], names: list[str]):
    @case(name, "config")
    def run(w: World, tmp: Path) -> Outcome:
        cfg = write(tmp)
        o = Outcome(name, "config", f"gramc data stats DATA --config {cfg.name}")
        p = gramc("data", "stats", str(w.data), "--config", str(cfg), cwd=tmp)
        return expect_error(o, p, [n.replace("{cfg}", str(cfg)) for n in names])


def _dangling(tmp: Path) -> Path:
    (tmp / "cfg.yaml").symlink_to(tmp / "gone.yaml")
    return tmp / "cfg.yaml"


def _folder(tmp: Path) -> Path:
    (tmp / "cfg.yaml").mkdir()
    return tmp / "cfg.yaml"


def _text(body: str, name: str = "cfg.yaml"):
    def write(tmp: Path) -> Path:
        (tmp / name).write_text(body, encoding="utf-8")
        return tmp / name
    return write


def _fifo(tmp: Path) -> Path:
    os.mkfifo(tmp / "cfg.yaml")
    return tmp / "cfg.yaml"


def _binary(tmp: Path) -> Path:
    (tmp / "cfg.yaml").write_bytes(gzip.compress(b"train:\n  lr: 0.1\n"))
    return tmp / "cfg.yaml"


_config_case("config: a dangling symlink", _dangling, ["{cfg}"])
_config_case("config: a folder", _folder, ["{cfg}", "folder"])
_config_case("config: YAML list, not a mapping", _text("- train\n- eval\n"), ["{cfg}"])
_config_case("config: YAML scalar", _text("just text\n"), ["{cfg}"])
_config_case("config: gzip bytes", _binary, ["{cfg}"])
_config_case("config: duplicate key, nested", _text("train:\n  lr: 0.1\n  lr: 0.2\n"), ["lr", "{cfg}"])
_config_case("config: unknown section", _text("trian:\n  lr: 0.1\n"), ["trian"])
_config_case("config: tab indentation", _text("train:\n\tlr: 0.1\n"), ["{cfg}"])
_config_case("config: .inf in YAML", _text("train:\n  lr: .inf\n"), ["train.lr"])
_config_case("config: .nan in YAML", _text("gcn:\n  lr: .nan\n"), ["gcn.lr"])


def _override_case(key: str, value: str, cmd: str = "stats"):
    name = f"config: {key}={value}"

    @case(name, "config")
    def run(w: World, tmp: Path) -> Outcome:
        o = Outcome(name, "config", f"gramc data stats DATA {key}={value}")
        p = gramc("data", "stats", str(w.data), f"{key}={value}", cwd=tmp)
        return expect_error(o, p, [key])


for _k, _v in [("train.lr", "-1"), ("train.lr", "nan"), ("train.lr", "1e999"), ("train.weight_decay", "1e999"),
               ("gcn.lr", "-0.5"), ("model.dropout", "nan"), ("eval.length_penalty", "nan"),
               ("eval.length_penalty", "1e999"), ("train.clip", "-inf"), ("eval.beams", "-5"),
               ("data.max_his", "0"), ("train.warmup", "1e999"), ("train.eps", "nan"), ("run.seed", "1e999")]:
    _override_case(_k, _v)


# ---- ids -------------------------------------------------------------------------------------

def _gram_seqs(tmp: Path, bad: str, line: int = 3) -> Path:
    rows = [f"u{u} " + " ".join(f"i{(u + j) % 12}" for j in range(6)) for u in range(9)]
    rows[line - 1] = rows[line - 1].replace("i", "i" + bad, 1) if bad else rows[line - 1]
    p = tmp / "user_sequence.txt"
    p.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return p


def _id_case(name: str, build: Callable[[Path], tuple[Path, Path | None]], names: list[str]):
    @case(name, "ids")
    def run(w: World, tmp: Path) -> Outcome:
        seqs, items = build(tmp)
        o = Outcome(name, "ids", "gramc data prepare --sequences ... --out OUT")
        p = gramc(*prepare_args(seqs, items, tmp / "out"), cwd=tmp)
        return expect_error(o, p, [n.replace("{seqs}", str(seqs)).replace("{items}", str(items)) for n in names])


_id_case("ids: zero-width space in a gram item ID", lambda t: (_gram_seqs(t, "\u200b"), None), ["{seqs}:3"])
_id_case("ids: NBSP in a gram item ID", lambda t: (_gram_seqs(t, "\u00a0"), None), ["{seqs}:3"])
_id_case("ids: BEL control char in a gram item ID", lambda t: (_gram_seqs(t, "\x07"), None), ["{seqs}:3"])


def _inter(tmp: Path, bad_item: str = "", bad_user: str = "") -> Path:
    rows = ["user_id:token\titem_id:token\ttimestamp:float"]
    for u in range(8):
        for j in range(6):
            rows.append(f"u{u}{bad_user if (u, j) == (2, 0) else ''}\ti{(u + j) % 10}"
                        f"{bad_item if (u, j) == (2, 1) else ''}\t{j}")
    p = tmp / "x.inter"
    p.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return p


_id_case("ids: NBSP inside a RecBole .inter item_id", lambda t: (_inter(t, bad_item="\u00a0x"), None), ["{seqs}:15"])
_id_case("ids: zero-width space in a RecBole user_id", lambda t: (_inter(t, bad_user="\u200b"), None), ["{seqs}:14"])
_id_case("ids: ideographic space in a RecBole item_id", lambda t: (_inter(t, bad_item="\u3000y"), None), ["{seqs}:15"])


def _reviews(tmp: Path, bad: str) -> Path:
    rows = []
    for u in range(8):
        for j in range(6):
            asin = f"B{(u + j) % 10:04d}" + (bad if (u, j) == (1, 2) else "")
            rows.append(json.dumps({"reviewerID": f"R{u}", "asin": asin, "unixReviewTime": 1000 + j}))
    p = tmp / "reviews_X_5.json.gz"
    p.write_bytes(gzip.compress(("\n".join(rows) + "\n").encode()))
    return p


_id_case("ids: NBSP in an Amazon review asin", lambda t: (_reviews(t, "\u00a0"), None), ["{seqs}:9"])
_id_case("ids: tab in an Amazon review asin", lambda t: (_reviews(t, "\t"), None), ["{seqs}:9"])


def _items_gram(tmp: Path, bad: str) -> tuple[Path, Path]:
    seqs = _gram_seqs(tmp, "")
    rows = [f"i{n}{bad if n == 4 else ''} title: thing {n}; brand: b; categories: c" for n in range(12)]
    items = tmp / "item_plain_text.txt"
    items.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return seqs, items


_id_case("ids: zero-width space in an item_plain_text ASIN", lambda t: _items_gram(t, "\u200b"), ["{items}:5"])


def _items_recbole(tmp: Path, bad: str) -> tuple[Path, Path]:
    seqs = _inter(tmp)
    rows = ["item_id:token\ttitle:token_seq"] + [f"i{n}{bad if n == 4 else ''}\tthing {n}" for n in range(10)]
    items = tmp / "x.item"
    items.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return seqs, items


_id_case("ids: trailing NBSP on a RecBole .item item_id", lambda t: _items_recbole(t, "\u00a0"), ["{items}:6"])


def _items_meta(tmp: Path, bad: str) -> tuple[Path, Path]:
    seqs = _reviews(tmp, "")
    rows = [repr({"asin": f"B{n:04d}" + (bad if n == 3 else ""), "title": f"thing {n}"}) for n in range(10)]
    items = tmp / "meta_X.json.gz"
    items.write_bytes(gzip.compress(("\n".join(rows) + "\n").encode()))
    return seqs, items


_id_case("ids: zero-width joiner in an Amazon meta asin", lambda t: _items_meta(t, "\u200d"), ["{items}:4"])


# ---- files -----------------------------------------------------------------------------------

def _file_case(name: str, build: Callable[[Path], tuple[Path, Path | None]], names: list[str]):
    @case(name, "files")
    def run(w: World, tmp: Path) -> Outcome:
        seqs, items = build(tmp)
        o = Outcome(name, "files", "gramc data prepare --sequences ... --out OUT")
        p = gramc(*prepare_args(seqs, items, tmp / "out"), cwd=tmp)
        return expect_error(o, p, [n.replace("{seqs}", str(seqs)).replace("{items}", str(items)) for n in names])


def _empty(tmp: Path) -> tuple[Path, None]:
    (tmp / "user_sequence.txt").write_text("")
    return tmp / "user_sequence.txt", None


def _blank_lines(tmp: Path) -> tuple[Path, None]:
    (tmp / "user_sequence.txt").write_text("\n\n   \n")
    return tmp / "user_sequence.txt", None


def _empty_items(tmp: Path) -> tuple[Path, Path]:
    seqs = _gram_seqs(tmp, "")
    (tmp / "item_plain_text.txt").write_text("")
    return seqs, tmp / "item_plain_text.txt"


def _truncated_gz(tmp: Path) -> tuple[Path, None]:
    p = _reviews(tmp, "")
    p.write_bytes(p.read_bytes()[:-30])
    return p, None


def _header_only(tmp: Path) -> tuple[Path, None]:
    p = tmp / "x.inter"
    p.write_text("user_id:token\titem_id:token\ttimestamp:float\n")
    return p, None


def _gz_in_txt(tmp: Path) -> tuple[Path, None]:
    p = _gram_seqs(tmp, "")
    p.write_bytes(gzip.compress(p.read_bytes()))
    return p, None


def _zstd_magic(tmp: Path) -> tuple[Path, None]:
    p = tmp / "user_sequence.txt"
    p.write_bytes(b"\x28\xb5\x2f\xfd" + os.urandom(64))
    return p, None


def _missing(tmp: Path) -> tuple[Path, None]:
    return tmp / "nope.txt", None


def _utf16(tmp: Path) -> tuple[Path, None]:
    p = _gram_seqs(tmp, "")
    p.write_bytes(p.read_text().encode("utf-16"))
    return p, None


_file_case("files: empty sequences file", _empty, ["{seqs}"])
_file_case("files: sequences file of blank lines", _blank_lines, ["{seqs}"])
_file_case("files: empty item file", _empty_items, ["{items}"])
_file_case("files: truncated gzip", _truncated_gz, ["{seqs}"])
_file_case("files: RecBole .inter with a header only", _header_only, ["{seqs}"])


@case("files: gzip bytes in a .txt (read by magic bytes)", "files")
def _gz_txt_read(w: World, tmp: Path) -> Outcome:
    seqs, _ = _gz_in_txt(tmp)
    o = Outcome("files: gzip bytes in a .txt (read by magic bytes)", "files", "gramc data prepare --sequences X.txt")
    p = gramc(*prepare_args(seqs, None, tmp / "out"), cwd=tmp)
    o.rc, o.traceback, o.message = p.returncode, TRACE in p.stderr, error_lines(p.stderr)
    users = (tmp / "out" / "sequences.txt").read_text().count("\n") if (tmp / "out" / "sequences.txt").is_file() else 0
    o.named = p.returncode == 0 and users == 9  # read as the text it holds: all 9 users
    o.note = f"{users} users read"
    return o


@case("files: prepared sequences.txt not UTF-8", "files")
def _ds_not_utf8(w: World, tmp: Path) -> Outcome:
    d = tmp / "d"
    shutil.copytree(w.data, d)
    (d / "sequences.txt").write_bytes(b"u1 \xff\xfe\n")
    o = Outcome("files: prepared sequences.txt not UTF-8", "files", "gramc data stats DIR")
    return expect_error(o, gramc("data", "stats", str(d), cwd=tmp), [str(d), "UTF-8"])
_file_case("files: zstd magic in a .txt", _zstd_magic, ["{seqs}", "zstd"])
_file_case("files: missing sequences file", _missing, ["{seqs}"])
_file_case("files: UTF-16 sequences file", _utf16, ["{seqs}"])


@case("files: data stats of a folder that is not a dataset", "files")
def _stats_not_dataset(w: World, tmp: Path) -> Outcome:
    (tmp / "d").mkdir()
    (tmp / "d" / "x.txt").write_text("x")
    o = Outcome("files: data stats of a folder that is not a dataset", "files", "gramc data stats DIR")
    return expect_error(o, gramc("data", "stats", str(tmp / "d"), cwd=tmp), [str(tmp / "d")])


@case("files: dataset.json that is not JSON", "files")
def _bad_dataset_json(w: World, tmp: Path) -> Outcome:
    d = tmp / "d"
    shutil.copytree(w.data, d)
    (d / "dataset.json").write_text("{not json")
    o = Outcome("files: dataset.json that is not JSON", "files", "gramc data stats DIR")
    return expect_error(o, gramc("data", "stats", str(d), cwd=tmp), ["dataset.json"])


# ---- runs ------------------------------------------------------------------------------------

@case("runs: --resume of an empty folder", "runs")
def _resume_empty(w: World, tmp: Path) -> Outcome:
    (tmp / "r").mkdir()
    o = Outcome("runs: --resume of an empty folder", "runs", "gramc train --resume DIR")
    return expect_error(o, gramc("train", "--resume", str(tmp / "r"), cwd=tmp), [str(tmp / "r")])


@case("runs: --resume of a dataset folder", "runs")
def _resume_dataset(w: World, tmp: Path) -> Outcome:
    d = tmp / "d"
    shutil.copytree(w.data, d)
    before = digest(d)
    o = Outcome("runs: --resume of a dataset folder", "runs", "gramc train --resume DATASET")
    expect_error(o, gramc("train", "--resume", str(d), cwd=tmp), [str(d)])
    o.intact = digest(d) == before
    return o


@case("runs: --resume of a missing folder", "runs")
def _resume_missing(w: World, tmp: Path) -> Outcome:
    o = Outcome("runs: --resume of a missing folder", "runs", "gramc train --resume NOPE")
    return expect_error(o, gramc("train", "--resume", str(tmp / "nope"), cwd=tmp), [str(tmp / "nope")])


def _corrupt_case(name: str, corrupt: Callable[[Path], None], names: list[str]):
    @case(name, "runs")
    def run(w: World, tmp: Path) -> Outcome:
        r = w.copy_run(tmp / "r")
        corrupt(r / "checkpoints" / "best" / "model.safetensors")
        o = Outcome(name, "runs", "gramc evaluate --run RUN --split valid")
        p = gramc("evaluate", "--run", str(r), "--split", "valid", "--max-users", "3", cwd=tmp)
        return expect_error(o, p, names)


def _garbage_header(f: Path) -> None:
    b = bytearray(f.read_bytes())
    b[8:40] = b"\xff" * 32
    f.write_bytes(bytes(b))


def _zero(f: Path) -> None:
    f.write_bytes(b"")


def _huge_length(f: Path) -> None:
    b = bytearray(f.read_bytes())
    b[0:8] = (2**62).to_bytes(8, "little")
    f.write_bytes(bytes(b))


def _nan_tail(f: Path) -> None:
    b = bytearray(f.read_bytes())
    b[-64:] = b"\x00\x00\xc0\x7f" * 16  # float32 NaN in the last tensor's data
    f.write_bytes(bytes(b))


_corrupt_case("runs: safetensors with a garbage header", _garbage_header, ["model.safetensors"])
_corrupt_case("runs: zero-byte safetensors", _zero, ["model.safetensors"])
_corrupt_case("runs: safetensors header length 2**62", _huge_length, ["model.safetensors"])
_corrupt_case("runs: NaN bytes written into safetensors data", _nan_tail, ["model.safetensors"])


@case("runs: evaluate a folder that is not a run", "runs")
def _eval_not_run(w: World, tmp: Path) -> Outcome:
    o = Outcome("runs: evaluate a folder that is not a run", "runs", "gramc evaluate --run DATASET")
    return expect_error(o, gramc("evaluate", "--run", str(w.data), "--split", "valid", cwd=tmp), [str(w.data)])


@case("runs: evaluate --checkpoint of a missing name", "runs")
def _eval_missing_ckpt(w: World, tmp: Path) -> Outcome:
    o = Outcome("runs: evaluate --checkpoint of a missing name", "runs", "gramc evaluate --checkpoint step9")
    p = gramc("evaluate", "--run", str(w.run), "--checkpoint", "step9", "--split", "valid", cwd=tmp)
    return expect_error(o, p, ["step9"])


def _recommend_case(name: str, history: str, names: list[str]):
    @case(name, "runs")
    def run(w: World, tmp: Path) -> Outcome:
        o = Outcome(name, "runs", f"gramc recommend --history {history!r}")
        return expect_error(o, gramc("recommend", "--run", str(w.run), "--history", history, cwd=tmp), names)


_recommend_case("runs: recommend with an unknown item", "NOT_AN_ITEM", ["NOT_AN_ITEM"])
_recommend_case("runs: recommend with an empty history", "", ["--history"])
_recommend_case("runs: recommend with only commas", ",,,", ["--history"])


@case("runs: plot of a folder without a log", "runs")
def _plot_nolog(w: World, tmp: Path) -> Outcome:
    (tmp / "r").mkdir()
    o = Outcome("runs: plot of a folder without a log", "runs", "gramc plot DIR")
    return expect_error(o, gramc("plot", str(tmp / "r"), cwd=tmp), ["log.jsonl"])


# ---- concurrency -----------------------------------------------------------------------------

@case("concurrency: two data prepare into one folder", "concurrency")
def _two_prepares(w: World, tmp: Path) -> Outcome:
    out = tmp / "ds"
    big = ["data.synthetic.num_users=60000", "data.synthetic.num_items=3000"]
    args = [sys.executable, "-m", "gramc", "data", "prepare", "--synthetic", "--out", str(out), *big]
    a = subprocess.Popen(args, cwd=tmp, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    t0 = time.time()
    while a.poll() is None and not (tmp / ".ds.lock").exists() and time.time() - t0 < 60:
        time.sleep(0.1)  # the first holds the lock from here on
    b = subprocess.run(args + ["data.synthetic.seed=3"], cwd=tmp, env=env(), capture_output=True, text=True,
                       timeout=200)
    ea = a.communicate(timeout=200)[1]
    o = Outcome("concurrency: two data prepare into one folder", "concurrency",
                "gramc data prepare --out DS & gramc data prepare --out DS")
    o.extra = {"first_rc": a.returncode, "second_rc": b.returncode}
    o.rc, o.traceback = b.returncode, TRACE in b.stderr or TRACE in ea
    o.message = error_lines(b.stderr)
    complete = (out / "dataset.json").is_file()
    if b.returncode == 75:
        o.named = "pid" in b.stderr and str(a.pid) in b.stderr
    elif b.returncode == 0:  # the first had finished already: then both wrote, one after the other
        o.named = True
        o.note = "the first finished before the second started: no overlap to test"
    o.intact = complete and a.returncode == 0
    return o


@case("concurrency: two evaluate into one --out at once", "concurrency")
def _two_evals(w: World, tmp: Path) -> Outcome:
    r = w.copy_run(tmp / "r")
    args = [sys.executable, "-m", "gramc", "evaluate", "--run", str(r), "--split", "valid", "--out", str(tmp / "ev"),
            "eval.bootstrap=100000"]  # a long bootstrap: the first to take the lock holds it a while
    procs = [subprocess.Popen(args, cwd=tmp, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    errs = [p.communicate(timeout=300)[1] for p in procs]
    o = Outcome("concurrency: two evaluate into one --out at once", "concurrency",
                "gramc evaluate --out EV & gramc evaluate --out EV")
    rcs = [p.returncode for p in procs]
    o.extra = {"rcs": rcs}
    o.traceback = any(TRACE in e for e in errs)
    refused = [i for i, rc in enumerate(rcs) if rc == 75]
    if refused:
        i = refused[0]
        o.rc, o.message = 75, error_lines(errs[i])
        o.named = str(procs[1 - i].pid) in errs[i]
    else:
        o.rc = rcs[1]
        o.named = True
        o.note = "one finished before the other took the lock: no overlap to test"
    o.intact = (tmp / "ev" / "metrics.json").is_file()
    return o


# ---- disk ------------------------------------------------------------------------------------

def _mount_small(where: Path, size: str = "192k") -> str | None:
    where.mkdir(parents=True, exist_ok=True)
    if sys.platform != "linux" or os.geteuid() != 0:
        return "mounting a tmpfs needs root on Linux"
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                          capture_output=True, text=True)
    return None if done.returncode == 0 else f"cannot mount a tmpfs: {done.stderr.strip()}"


def _fill(small: Path, leave: int) -> None:
    """Fill the tmpfs `small` with one file, then give back `leave` bytes: the command starts, then fails."""
    filler = small / "filler.bin"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError:
        pass
    finally:
        os.close(fd)
    size = filler.stat().st_size
    os.truncate(filler, max(0, size - leave))


def _disk_case(name: str, cmd: Callable[[World, Path, Path], list[str]], keep: Callable[[World, Path, Path], Path | None]):
    @case(name, "disk")
    def run(w: World, tmp: Path) -> Outcome:
        small = tmp / "small"
        o = Outcome(name, "disk", " ".join(cmd(w, tmp, Path("SMALL"))[:3]) + " ... (192 KiB tmpfs)")
        why = _mount_small(small)
        if why:
            o.verdict, o.note = "skipped", why
            return o
        try:
            kept = keep(w, tmp, small)
            before = digest(kept) if kept else None
            _fill(small, leave=12 * 1024)
            p = gramc(*cmd(w, tmp, small), cwd=tmp)
            expect_error(o, p, ["No space left on device"])
            if kept:
                o.intact = kept_or_same(kept, before)
        finally:
            subprocess.run(["umount", str(small)], capture_output=True)
        return o


def _ev_keep(w: World, tmp: Path, small: Path) -> Path:
    p = gramc("data", "prepare", "--synthetic", "--out", str(small / "data"), *TINY, cwd=tmp)
    assert p.returncode == 0, p.stderr[-1000:]
    return small / "data"


_disk_case("disk: gcn train into a full tmpfs",
           lambda w, t, s: ["gcn", "train", "--data", str(w.data), "--out", str(s / "gcn"), *TINY, "gcn.dim=512"],
           _ev_keep)
_disk_case("disk: evaluate --out into a full tmpfs",
           lambda w, t, s: ["evaluate", "--run", str(w.run), "--split", "valid", "--out", str(s / "ev"),
                            "eval.predictions_top=20000"],
           _ev_keep)
_disk_case("disk: data subset into a full tmpfs",
           lambda w, t, s: ["data", "subset", "--data", str(t / "big"), "--out", str(s / "sub"), "--fraction", "1"],
           lambda w, t, s: (gramc("data", "prepare", "--synthetic", "--out", str(t / "big"),
                                  "data.synthetic.num_users=3000", "data.synthetic.num_items=300", cwd=t),
                            _ev_keep(w, t, s))[1])


# ---- signals ---------------------------------------------------------------------------------

def _sigint_case(name: str, cmd: Callable[[World, Path], list[str]], ready: Callable[[Path], bool],
                 keep: Callable[[World, Path], Path | None]):
    @case(name, "signals")
    def run(w: World, tmp: Path) -> Outcome:
        kept = keep(w, tmp)
        before = digest(kept) if kept else None
        a = subprocess.Popen([sys.executable, "-m", "gramc", *cmd(w, tmp)], cwd=tmp, env=env(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        t0 = time.time()
        while a.poll() is None and not ready(tmp) and time.time() - t0 < 60:
            time.sleep(0.1)
        time.sleep(0.5)
        a.send_signal(signal.SIGINT)
        out, err = a.communicate(timeout=120)
        o = Outcome(name, "signals", " ".join(["gramc", *cmd(w, tmp)[:2]]) + " + Ctrl-C")
        o.rc, o.traceback = a.returncode, TRACE in err
        o.message = error_lines(err) or err.strip()[-300:]
        # what is left once progress bars (tqdm: `...%|###|...`) are set aside: one line saying so
        # and the line saying an earlier output was kept aside
        said = [x for x in err.replace("\r", "\n").splitlines()
                if x.strip() and "%|" not in x and "held an earlier output: kept as" not in x]
        o.named = a.returncode == 130 and len(said) == 1 and "interrupted (Ctrl-C)" in said[0]
        o.extra = {"stderr_lines": said[-4:]}
        if a.returncode == 0:
            o.note = "finished before the signal came"
            o.named = True
        if kept:
            o.intact = kept_or_same(kept, before)
        return o


def _prepare_ds(w: World, tmp: Path) -> Path:
    shutil.copytree(w.data, tmp / "ds")
    return tmp / "ds"


_sigint_case("signals: Ctrl-C during data prepare over a dataset",
             lambda w, t: ["data", "prepare", "--synthetic", "--out", str(t / "ds"), "data.synthetic.num_users=40000",
                           "data.synthetic.num_items=3000"],
             lambda t: any(t.glob(".ds.*.tmp")) or (t / ".ds.lock").exists(), _prepare_ds)


def _eval_keep(w: World, tmp: Path) -> Path:
    r = w.copy_run(tmp / "r")
    p = gramc("evaluate", "--run", str(r), "--split", "valid", "--max-users", "3", "--out", str(tmp / "ev"), cwd=tmp)
    assert p.returncode in (0, 1), p.stderr[-1000:]
    (tmp / ".ev.lock").unlink()  # held by nobody now: its return marks when the next evaluate takes the lock
    return tmp / "ev"


_sigint_case("signals: Ctrl-C during evaluate over an earlier evaluation",
             lambda w, t: ["evaluate", "--run", str(t / "r"), "--split", "valid", "--out", str(t / "ev"),
                           "eval.bootstrap=100000"],
             lambda t: (t / ".ev.lock").exists(), _eval_keep)


@case("signals: closed pipe on data stats | head -1", "signals")
def _pipe(w: World, tmp: Path) -> Outcome:
    cmd = f"{sys.executable} -m gramc data stats {w.data} --top 5000 | head -1"
    p = subprocess.run(["bash", "-c", f"set -o pipefail; {cmd}"], cwd=tmp, env=env(), capture_output=True,
                       text=True, timeout=120)
    o = Outcome("signals: closed pipe on data stats | head -1", "signals", "gramc data stats DATA | head -1")
    o.rc, o.traceback = p.returncode, TRACE in p.stderr
    o.message = p.stderr.strip()[-300:]
    o.named = p.stderr.strip() == "" and p.stdout.count("\n") == 1
    if not o.named:
        o.note = "expected a quiet stop (no stderr) and one line on stdout"
    o.verdict = "good" if o.named and not o.traceback and p.returncode in (0, 141) else ""
    return o


@case("signals: SIGTERM during data prepare over a dataset", "signals")
def _sigterm(w: World, tmp: Path) -> Outcome:
    ds = _prepare_ds(w, tmp)
    before = digest(ds)
    a = subprocess.Popen([sys.executable, "-m", "gramc", "data", "prepare", "--synthetic", "--out", str(ds),
                          "data.synthetic.num_users=40000", "data.synthetic.num_items=3000"], cwd=tmp, env=env(),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    t0 = time.time()
    while a.poll() is None and not (tmp / ".ds.lock").exists() and time.time() - t0 < 60:
        time.sleep(0.1)
    time.sleep(0.5)
    a.terminate()
    _, err = a.communicate(timeout=60)
    o = Outcome("signals: SIGTERM during data prepare over a dataset", "signals", "gramc data prepare + kill -TERM")
    o.rc, o.traceback, o.message = a.returncode, TRACE in err, err.strip()[-300:]
    o.named = True  # a killed process says nothing; what counts is the dataset
    o.intact = kept_or_same(ds, before)
    return o


# ---- replace ---------------------------------------------------------------------------------

@case("replace: evaluate again into the same --out", "replace")
def _eval_twice(w: World, tmp: Path) -> Outcome:
    ev = _eval_keep(w, tmp)
    before = digest(ev)
    o = Outcome("replace: evaluate again into the same --out", "replace", "gramc evaluate --out EV (twice)")
    p = gramc("evaluate", "--run", str(tmp / "r"), "--split", "valid", "--max-users", "4", "--out", str(ev), cwd=tmp)
    o.rc, o.traceback, o.message = p.returncode, TRACE in p.stderr, error_lines(p.stderr) or p.stderr.strip()[-300:]
    o.named = "kept as" in p.stderr
    o.intact = kept_or_same(ev, before)
    if o.rc == 1 and "invalid" in p.stdout:  # exit 1 = invalid beams of an untrained model, not a failure
        o.rc = 0
    return o


@case("replace: data prepare over another dataset", "replace")
def _prepare_over(w: World, tmp: Path) -> Outcome:
    ds = _prepare_ds(w, tmp)
    before = digest(ds)
    o = Outcome("replace: data prepare over another dataset", "replace", "gramc data prepare --synthetic --out DS (other seed)")
    p = gramc("data", "prepare", "--synthetic", "--out", str(ds), *TINY, "data.synthetic.seed=11", cwd=tmp)
    o.rc, o.traceback, o.message = p.returncode, TRACE in p.stderr, p.stderr.strip()[-300:]
    o.named = "kept as" in p.stderr
    o.intact = kept_or_same(ds, before)
    return o


@case("replace: gcn train over an earlier GCN folder", "replace")
def _gcn_over(w: World, tmp: Path) -> Outcome:
    g = tmp / "gcn"
    p = gramc("gcn", "train", "--data", str(w.data), "--out", str(g), *TINY, cwd=tmp)
    assert p.returncode == 0, p.stderr[-1000:]
    before = digest(g)
    o = Outcome("replace: gcn train over an earlier GCN folder", "replace", "gramc gcn train --out G (other seed)")
    p = gramc("gcn", "train", "--data", str(w.data), "--out", str(g), *TINY, "gcn.seed=4", cwd=tmp)
    o.rc, o.traceback, o.message = p.returncode, TRACE in p.stderr, p.stderr.strip()[-300:]
    o.named = "kept as" in p.stderr
    o.intact = kept_or_same(g, before)
    return o


@case("replace: train --overwrite twice in one second", "replace")
def _overwrite_twice(w: World, tmp: Path) -> Outcome:
    from importlib import import_module

    sys.path.insert(0, str(ROOT / "src"))
    io = import_module("gramc.io")
    r = w.copy_run(tmp / "r")
    before = digest(r)
    first = io.aside_path(r)
    first.mkdir()  # an earlier --overwrite of this second
    o = Outcome("replace: train --overwrite twice in one second", "replace", "gramc train --overwrite (aside name taken)")
    p = gramc("train", "--overwrite", "--config", str(r / "config.yaml"), f"run.out={r}", "train.max_steps=1",
              cwd=tmp, timeout=300)
    o.rc, o.traceback, o.message = p.returncode, TRACE in p.stderr, error_lines(p.stderr) or p.stdout.strip()[-200:]
    o.named = "previous run moved to" in p.stdout
    o.intact = kept_or_same(r, before)
    return o


# --------------------------------------------------------------------------------------------


def classify(o: Outcome) -> str:
    if o.verdict:
        return o.verdict
    if o.traceback:
        return "traceback"
    if o.intact is False:
        return "lost"
    if o.rc == 0 and o.cls not in ("replace",) and o.note == "exit 0 on bad input":
        return "silent"
    if o.named is False:
        return "unclear"
    return "good"


def outcome_text(o: dict) -> str:
    """One cell: what the user got."""
    if o["verdict"] == "skipped":
        return f"skipped ({o['note']})"
    if o["rc"] is not None and o["rc"] < 0:
        parts = [f"killed by signal {-o['rc']} (prints nothing)"]
    else:
        parts = [f"exit {o['rc']}"]
    if o["rc"] is not None and o["rc"] > 0:
        parts.append("one named line" if o["named"] else "message does not name it")
    if o["cls"] == "replace" or "kept as" in (o["message"] or ""):
        parts.append("earlier output kept aside" if o["named"] else "")
    if o["intact"] is not None:
        parts.append("earlier output intact" if o["intact"] else "EARLIER OUTPUT CHANGED")
    if o["traceback"]:
        parts.append("TRACEBACK")
    if o["note"] and o["verdict"] == "good" and o["cls"] != "files":
        parts.append(o["note"])
    return ", ".join(p for p in parts if p)


def markdown_table(report: dict) -> str:
    rows = ["| case | class | outcome | verdict |", "|---|---|---|---|"]
    for o in report["results"]:
        name = o["case"].split(": ", 1)[-1].replace("|", "\\|")
        rows.append(f"| {name} | {o['cls']} | {outcome_text(o)} | {o['verdict']} |")
    return "\n".join(rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "fault_probe.json"))
    ap.add_argument("--only", nargs="*", default=None, help="run only cases whose name contains one of these")
    ap.add_argument("--table", action="store_true", help="print the Markdown table of --out (no cases run)")
    args = ap.parse_args()
    if args.table:
        print(markdown_table(json.loads(Path(args.out).read_text(encoding="utf-8"))))
        return 0
    t_start = time.time()
    results: list[Outcome] = []
    with tempfile.TemporaryDirectory(prefix="gramc-probe-") as d:
        world = World(Path(d))
        t0 = time.time()
        world.build()
        print(f"fixtures (dataset + 2-step run) in {time.time() - t0:.0f} s", flush=True)
        for i, (name, cls, fn) in enumerate(CASES):
            if args.only and not any(s in name for s in args.only):
                continue
            tmp = Path(d) / f"case{i}"
            tmp.mkdir()
            t0 = time.time()
            try:
                o = fn(world, tmp)
            except Exception as e:  # the probe's own failure: recorded, never hidden
                o = Outcome(name, cls, "", verdict="probe-error", note=f"{type(e).__name__}: {e}"[:500])
            o.seconds = round(time.time() - t0, 1)
            o.verdict = classify(o)
            results.append(o)
            print(f"{o.verdict:<10} {o.seconds:>5.1f}s  [{cls}] {name}  rc={o.rc}  {o.message.splitlines()[-1] if o.message else ''}"[:220],
                  flush=True)
    counts: dict[str, int] = {}
    for o in results:
        counts[o.verdict] = counts.get(o.verdict, 0) + 1
    report = {"cases": len(results), "counts": counts, "seconds": round(time.time() - t_start, 1),
              "python": sys.version.split()[0], "results": [asdict(o) for o in results]}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(json.dumps({"cases": len(results), "counts": counts, "seconds": report["seconds"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
