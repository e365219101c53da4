"""Readers of the supported source formats, each returning plain per-user sequences or item fields.

Sequence sources (who interacted with what, in time order):
  * `gram`            GRAM `user_sequence.txt`: `USER item_1 ... item_n`, oldest first
  * `recbole-inter`   RecBole `.inter` atomic file (`user_id:token item_id:token ... timestamp:float`)
  * `amazon-reviews`  Amazon 2014 `reviews_<Category>_5.json.gz` (JSON lines: reviewerID, asin, unixReviewTime)
Item sources (metadata per item):
  * `gram-text`       GRAM `item_plain_text.txt`: `ASIN title: ...; brand: ...; categories: ...; ...`
  * `recbole-item`    RecBole `.item` atomic file (tab separated, CSV-quoted fields)
  * `amazon-meta`     Amazon 2014 `meta_<Category>.json.gz` (one Python dict literal per line)

Every problem raises `DataError` naming the file, the line and what was expected. Interaction
sources order each user's items by timestamp with a stable tie-break: equal timestamps keep the
order of the lines in the file.
"""

from __future__ import annotations

import ast
import bz2
import csv
import gzip
import json
import lzma
import re
import stat
import unicodedata
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from tqdm import tqdm

from .dataset import DataError
from .text import parse_categories

SEQUENCE_FORMATS = ("gram", "recbole-inter", "amazon-reviews")
ITEM_FORMATS = ("gram-text", "recbole-item", "amazon-meta")
RECBOLE_TYPES = ("token", "token_seq", "float", "float_seq")


@dataclass
class Sequences:
    """Users (source order) and their item-ID sequences, oldest first."""

    users: list[str]
    sequences: list[list[str]]
    notes: dict[str, Any] = field(default_factory=dict)  # what the reader filtered (e.g. k-core)


@dataclass
class Interaction:
    user: str
    item: str
    time: float
    line: int  # file order: the tie-break for equal timestamps


# --------------------------------------------------------------------------------------------
# Lines: gzip-aware, UTF-8 checked per line
# --------------------------------------------------------------------------------------------


# compressed formats by their first bytes: (name, opener over the raw file); None = not read here
_MAGIC: list[tuple[bytes, str, Any]] = [
    (b"\x1f\x8b", "gzip", lambda f: gzip.GzipFile(fileobj=f, mode="rb")),
    (b"BZh", "bzip2", lambda f: bz2.BZ2File(f, mode="rb")),
    (b"\xfd7zXZ\x00", "xz", lambda f: lzma.LZMAFile(f, mode="rb")),
    (b"(\xb5/\xfd", "zstd", None),
    (b"PK\x03\x04", "zip", None),
]


def _regular_file(path: Path) -> None:
    """DataError unless `path` is a regular file, saying what it is instead."""
    if path.is_dir():
        raise DataError(f"{path}: is a folder; a file is expected here")
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    if stat.S_ISREG(mode):
        return
    what = ("a named pipe or a process substitution such as <(cmd)" if stat.S_ISFIFO(mode) else
            "a socket" if stat.S_ISSOCK(mode) else "a character device" if stat.S_ISCHR(mode) else
            "a block device" if stat.S_ISBLK(mode) else "not a regular file")
    raise DataError(f"{path}: is {what}; gramc reads an input more than once (its format, then its data), "
                    f"so give a regular file (e.g. `cmd > file.txt` first)")


def _compression(path: Path, head: bytes) -> tuple[str, Any]:
    """(format name, opener) from the file's first bytes; ("text", None) for anything else. A file
    named `.gz` must be gzip: anything else there is a damaged download."""
    for magic, name, opener in _MAGIC:
        if head.startswith(magic):
            if opener is None:
                raise DataError(f"{path}: is a {name} file; gramc reads plain text, gzip, bzip2 or xz: "
                                f"extract it first")
            return name, opener
    if path.name.endswith(".gz"):
        raise DataError(f"{path}: corrupt gzip file (it does not start with gzip's bytes 1f 8b: "
                        f"{head[:4]!r}); download it again")
    return "text", None


def iter_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """(line number, text without the newline) for every line; gzip, bzip2 and xz read transparently,
    recognised by their first bytes whatever the file is called.

    Non-UTF-8 bytes, a truncated or corrupt compressed stream, an empty file and anything but a
    regular file are DataErrors that name the file (and the line for bad bytes). A byte-based tqdm
    bar (of the file on disk) shows progress on large files. A UTF-8 byte-order mark is ignored.
    """
    path = Path(path)
    _regular_file(path)
    n = 0
    size = path.stat().st_size
    kind = "text"
    try:
        with open(path, "rb") as disk, tqdm(total=size, unit="B", unit_scale=True, desc=f"reading {path.name}",
                                            leave=False, disable=size < (16 << 20)) as bar:
            kind, opener = _compression(path, disk.read(6))
            disk.seek(0)
            f = opener(disk) if opener is not None else disk
            done = 0
            for n, raw in enumerate(f, 1):
                if n % 4096 == 0:
                    pos = disk.tell()
                    bar.update(pos - done)
                    done = pos
                try:
                    text = raw.decode("utf-8-sig" if n == 1 else "utf-8")
                except UnicodeDecodeError as e:
                    raise DataError(f"{path}:{n}: not valid UTF-8 (byte {raw[e.start:e.start + 1]!r} "
                                    f"at column {e.start + 1}); re-encode the file as UTF-8") from e
                yield n, text.rstrip("\r\n")
    except EOFError as e:
        raise DataError(f"{path}: truncated {kind} file (ended after line {n}); download it again") from e
    except (gzip.BadGzipFile, zlib.error, lzma.LZMAError, OSError) as e:
        if isinstance(e, OSError) and kind == "text":
            raise
        raise DataError(f"{path}: corrupt {kind} file ({e})") from e
    if n == 0:
        raise DataError(f"{path}: file is empty")


def _content_lines(path: Path) -> Iterator[tuple[int, str]]:
    """Non-blank lines; an all-blank file is an empty-file error."""
    any_line = False
    for n, line in iter_lines(path):
        if line.strip():
            any_line = True
            yield n, line
    if not any_line:
        raise DataError(f"{path}: file has no data lines")


def check_id(path: Path, n: int, kind: str, value: str) -> str:
    """`value` if it is a usable user or item ID: no whitespace (Unicode spaces such as U+00A0
    included) and no control or invisible format characters, which would split one ID into several
    or make two IDs look alike; else a DataError naming the file, line and character."""
    for ch in value:
        if ch.isspace() or unicodedata.category(ch) in ("Cc", "Cf", "Zs", "Zl", "Zp"):
            raise DataError(f"{path}:{n}: {kind} ID {value!r} contains {unicodedata.name(ch, 'a control character')} "
                            f"(U+{ord(ch):04X}); IDs may not contain whitespace or control characters")
    return value


def _line_ids(path: Path, n: int, line: str) -> list[str]:
    """The fields of a whitespace-separated sequence line, split on spaces and tabs only: any other
    whitespace (e.g. a non-breaking space) stays inside its field, where `check_id` refuses it."""
    return [check_id(path, n, "user" if i == 0 else "item", part)
            for i, part in enumerate(p for p in re.split(r"[ \t]+", line.strip(" \t\r\n")) if p)]


# --------------------------------------------------------------------------------------------
# Sequence sources
# --------------------------------------------------------------------------------------------


_SEPARATORS = {" ": "spaces", "\t": "tabs", ",": "commas", ";": "semicolons"}


def _separators(line: str) -> frozenset[str]:
    text = line.strip()
    return frozenset(c for c in _SEPARATORS if c in text)


def _sep_names(seps: frozenset[str]) -> str:
    return " and ".join(_SEPARATORS[c] for c in _SEPARATORS if c in seps) or "nothing"


def read_gram_sequences(path: str | Path) -> Sequences:
    """GRAM `user_sequence.txt`; a user listed twice is an error."""
    path = Path(path)
    users: list[str] = []
    seqs: list[list[str]] = []
    seen: dict[str, int] = {}
    first: tuple[int, frozenset[str]] | None = None
    for n, line in _content_lines(path):
        parts = _line_ids(path, n, line)
        if len(parts) < 2:
            raise DataError(f"{path}:{n}: expected `USER item_1 ... item_n` (a user and at least one item), "
                            f"got {line.strip()[:80]!r}")
        seps = _separators(line)
        first = first or (n, seps)
        if seps != first[1]:
            raise DataError(f"{path}:{n}: separated by {_sep_names(seps)} but line {first[0]} by "
                            f"{_sep_names(first[1])}; a sequence file uses one separator throughout "
                            f"(GRAM: `USER item_1 item_2 ...` with single spaces)")
        if parts[0] in seen:
            raise DataError(f"{path}:{n}: duplicate user {parts[0]!r} (first on line {seen[parts[0]]})")
        seen[parts[0]] = n
        users.append(parts[0])
        seqs.append(parts[1:])
    return Sequences(users, seqs)


def group_sequences(interactions: list[Interaction]) -> Sequences:
    """Per-user chronological sequences; users in order of first appearance; ties by file line."""
    by_user: dict[str, list[Interaction]] = {}
    for x in interactions:
        by_user.setdefault(x.user, []).append(x)
    users = list(by_user)
    seqs = [[x.item for x in sorted(by_user[u], key=lambda x: (x.time, x.line))] for u in users]
    return Sequences(users, seqs)


def kcore(interactions: list[Interaction], k: int) -> tuple[list[Interaction], dict[str, int]]:
    """Keep interactions whose user and item both have >= k of them, repeated to a fixpoint."""
    before_users = len({x.user for x in interactions})
    before_items = len({x.item for x in interactions})
    before = len(interactions)
    rounds = 0
    if k > 1:
        while True:
            rounds += 1
            uc: dict[str, int] = {}
            ic: dict[str, int] = {}
            for x in interactions:
                uc[x.user] = uc.get(x.user, 0) + 1
                ic[x.item] = ic.get(x.item, 0) + 1
            kept = [x for x in interactions if uc[x.user] >= k and ic[x.item] >= k]
            if len(kept) == len(interactions):
                break
            interactions = kept
    notes = {
        "k": k, "rounds": rounds,
        "users_dropped": before_users - len({x.user for x in interactions}),
        "items_dropped": before_items - len({x.item for x in interactions}),
        "interactions_dropped": before - len(interactions),
    }
    return interactions, notes


def _header_types(path: Path, n: int, header: list[str]) -> list[tuple[str, str]]:
    cols = []
    for h in header:
        name, sep, tp = h.strip().partition(":")
        if not sep:
            raise DataError(f"{path}:{n}: header column {h!r} must look like name:type")
        if tp not in RECBOLE_TYPES:
            raise DataError(f"{path}:{n}: column {name!r} has unknown type {tp!r}; "
                            f"expected one of {', '.join(RECBOLE_TYPES)}")
        cols.append((name, tp))
    return cols


def _recbole_rows(path: Path) -> Iterator[tuple[int, list[tuple[str, str]], list[str]]]:
    """(line, columns, values) of a RecBole atomic file; the header is `name:type` per column."""
    lines = _content_lines(path)
    numbered: list[int] = []

    def text_lines() -> Iterator[str]:
        for n, line in lines:
            numbered.append(n)
            yield line + "\n"

    reader = csv.reader(text_lines(), delimiter="\t", strict=True)  # strict: an unclosed quote is an error
    cols: list[tuple[str, str]] | None = None
    rows = 0
    begun = 0  # lines read before the current record: it starts on the next one
    try:
        for row in reader:
            n = numbered[-1]
            begun = len(numbered)
            if cols is None:
                cols = _header_types(path, n, row)
                continue
            if len(row) != len(cols):
                raise DataError(f"{path}:{n}: expected {len(cols)} tab-separated fields "
                                f"({', '.join(c for c, _ in cols)}), got {len(row)}")
            rows += 1
            yield n, cols, row
    except csv.Error as e:
        # a quote left open swallows the lines after it: the record, and the quote, start here
        start = numbered[begun] if begun < len(numbered) else (numbered[-1] if numbered else 1)
        unclosed = "end of data" in str(e) or "EOF" in str(e)
        raise DataError(f"{path}:{start}: malformed CSV ({e})" + ("; a field that opens a quote (\") on this line "
                                                                  "never closes it" if unclosed else "")) from e
    if not rows:
        raise DataError(f"{path}: has a header but no data rows")


# ID columns lose only ASCII blanks at their ends: a Unicode space there (NBSP, ideographic space)
# stays in the value, so check_id refuses it as it does inside an ID
_ID_COLUMNS = ("user_id", "item_id")


def _convert(path: Path, n: int, name: str, tp: str, raw: str) -> Any:
    raw = raw.strip(" \t\r\n") if name in _ID_COLUMNS else raw.strip()
    if tp == "token":
        return raw or None
    if tp == "token_seq":
        return raw.split() if raw else []
    try:
        if tp == "float":
            return float(raw) if raw else None
        return [float(v) for v in raw.split()]
    except ValueError as e:
        raise DataError(f"{path}:{n}: column {name!r} ({tp}) expects numbers, got {raw[:40]!r}") from e


def read_recbole_inter(path: str | Path) -> Sequences:
    """RecBole `.inter`: needs user_id and item_id columns; timestamp orders (else file order)."""
    path = Path(path)
    interactions: list[Interaction] = []
    for n, cols, row in _recbole_rows(path):
        names = [c for c, _ in cols]
        for need in ("user_id", "item_id"):
            if need not in names:
                raise DataError(f"{path}: header has no {need!r} column (columns: {', '.join(names)})")
        rec = {c: _convert(path, n, c, tp, v) for (c, tp), v in zip(cols, row)}
        if not rec["user_id"] or not rec["item_id"]:
            raise DataError(f"{path}:{n}: empty user_id or item_id")
        t = rec.get("timestamp")
        interactions.append(Interaction(check_id(path, n, "user", str(rec["user_id"])),
                                        check_id(path, n, "item", str(rec["item_id"])), float(t or 0.0), n))
    return group_sequences(interactions)


def read_amazon_reviews(path: str | Path, k: int = 5) -> Sequences:
    """Amazon 2014 reviews (JSON lines), k-core filtered to a fixpoint, ordered by unixReviewTime."""
    path = Path(path)
    interactions: list[Interaction] = []
    for n, line in _content_lines(path):
        try:
            obj = json.loads(line)
            interactions.append(Interaction(check_id(path, n, "user", str(obj["reviewerID"])),
                                            check_id(path, n, "item", str(obj["asin"])),
                                            float(obj["unixReviewTime"]), n))
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{n}: not a JSON object ({e.msg})") from e
        except DataError:  # an ID that check_id refused: its message names the file, line and character
            raise
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(f"{path}:{n}: expected keys reviewerID, asin, unixReviewTime (number); "
                            f"problem with {e}") from e
    interactions, notes = kcore(interactions, k)
    seqs = group_sequences(interactions)
    seqs.notes["kcore"] = notes
    return seqs


# --------------------------------------------------------------------------------------------
# Item sources: item ID -> canonical fields (title, brand, categories list, price, salesrank, ...)
# --------------------------------------------------------------------------------------------


def _number(value: Any) -> Any:
    """Price/salesrank as a number when it is one, else the cleaned text (None when empty)."""
    if value is None or isinstance(value, (int, float)):
        return value
    s = str(value).strip().lstrip("$").replace(",", "")
    if not s:
        return None
    try:
        f = float(s)
        return int(f) if f.is_integer() and "." not in s else f
    except ValueError:
        return str(value).strip()


def _canonical(fields: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in fields.items():
        key = {"sales_rank": "salesrank", "salesRank": "salesrank"}.get(key, key)
        if key == "categories":
            value = parse_categories(value)
        elif key == "salesrank" and isinstance(value, dict):  # Amazon: {"Beauty": 1234}
            value = next(iter(value.values()), None)
        if key in ("price", "salesrank"):
            value = _number(value)
        if value is None or value == "" or value == []:
            continue
        out[key] = value
    return out


def _put(items: dict[str, dict[str, Any]], where: dict[str, int], path: Path, n: int, iid: str,
         fields: dict[str, Any]) -> None:
    check_id(path, n, "item", iid)
    if iid in items:
        raise DataError(f"{path}:{n}: duplicate item {iid!r} (first on line {where[iid]})")
    where[iid] = n
    items[iid] = _canonical(fields)


_GRAM_FIELD = re.compile(r"; (?=[A-Za-z_]+: )")


def parse_gram_text(text: str) -> dict[str, str]:
    """`title: x; brand: y; ...` -> {"title": "x", "brand": "y", ...} (split at `; key: `)."""
    out: dict[str, str] = {}
    for part in _GRAM_FIELD.split(text.strip()):
        key, sep, value = part.partition(": ")
        if sep:
            out[key.strip()] = value.strip()
    return out


def read_gram_item_text(path: str | Path) -> dict[str, dict[str, Any]]:
    """GRAM `item_plain_text.txt`: `ASIN title: ...; brand: ...; categories: a, b; ...`."""
    path = Path(path)
    items: dict[str, dict[str, Any]] = {}
    where: dict[str, int] = {}
    for n, line in _content_lines(path):
        iid, _, text = line.strip().partition(" ")
        fields = parse_gram_text(text)
        if text.strip() and not fields:
            raise DataError(f"{path}:{n}: expected `ITEM key: value; key: value ...`, got {line.strip()[:80]!r}")
        _put(items, where, path, n, iid, fields)
    return items


def read_recbole_item(path: str | Path) -> dict[str, dict[str, Any]]:
    """RecBole `.item`: `item_id:token` plus any typed columns; `sales_rank` becomes `salesrank`."""
    path = Path(path)
    items: dict[str, dict[str, Any]] = {}
    where: dict[str, int] = {}
    for n, cols, row in _recbole_rows(path):
        names = [c for c, _ in cols]
        if "item_id" not in names:
            raise DataError(f"{path}: header has no 'item_id' column (columns: {', '.join(names)})")
        rec: dict[str, Any] = {}
        for (c, tp), v in zip(cols, row):
            # categories are a Python-literal list, not a space-separated token sequence
            rec[c] = v.strip() if c == "categories" else _convert(path, n, c, tp, v)
        iid = rec.pop("item_id")
        if not iid:
            raise DataError(f"{path}:{n}: empty item_id")
        _put(items, where, path, n, check_id(path, n, "item", str(iid)), rec)
    return items


def read_amazon_meta(path: str | Path) -> dict[str, dict[str, Any]]:
    """Amazon 2014 `meta_<Category>.json.gz`: Python dict literals (ast.literal_eval) or JSON."""
    path = Path(path)
    items: dict[str, dict[str, Any]] = {}
    where: dict[str, int] = {}
    for n, line in _content_lines(path):
        try:
            obj = ast.literal_eval(line)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{n}: expected a Python dict literal or JSON object per line") from e
        if not isinstance(obj, dict) or "asin" not in obj:
            raise DataError(f"{path}:{n}: expected a dict with an 'asin' key")
        iid = str(obj.pop("asin"))
        keep = {k: obj[k] for k in ("title", "brand", "categories", "price", "salesRank", "description")
                if k in obj}
        _put(items, where, path, n, iid, keep)
    return items


# --------------------------------------------------------------------------------------------
# Format detection
# --------------------------------------------------------------------------------------------


def _first_line(path: Path) -> str:
    for _, line in iter_lines(path):
        if line.strip():
            return line
    raise DataError(f"{path}: file has no data lines")


def detect_sequence_format(path: str | Path) -> str:
    """`gram`, `recbole-inter` or `amazon-reviews`, from the extension, then the first line."""
    path = Path(path)
    if path.name.endswith(".inter"):
        return "recbole-inter"
    first = _first_line(path)
    if first.lstrip().startswith("{") and "reviewerID" in first:
        return "amazon-reviews"
    if ":token" in first and "\t" in first:
        return "recbole-inter"
    if len(first.split()) >= 2 and ":" not in first:
        return "gram"
    raise DataError(f"{path}: cannot tell the sequence format from the first line {first[:80]!r}; "
                    f"pass --format one of {', '.join(SEQUENCE_FORMATS)}")


def detect_item_format(path: str | Path) -> str:
    """`gram-text`, `recbole-item` or `amazon-meta`, from the extension, then the first line."""
    path = Path(path)
    if path.name.endswith(".item"):
        return "recbole-item"
    first = _first_line(path)
    if first.lstrip().startswith("{"):
        return "amazon-meta"
    if first.startswith("item_id:") or ("\t" in first and ":token" in first):
        return "recbole-item"
    if re.match(r"^\S+ [A-Za-z_]+: ", first):
        return "gram-text"
    raise DataError(f"{path}: cannot tell the item format from the first line {first[:80]!r}; "
                    f"pass --item-format one of {', '.join(ITEM_FORMATS)}")


def read_sequences(path: str | Path, fmt: str = "auto", kcore_k: int = 5) -> tuple[Sequences, str]:
    fmt = detect_sequence_format(path) if fmt == "auto" else fmt
    if fmt == "gram":
        return read_gram_sequences(path), fmt
    if fmt == "recbole-inter":
        return read_recbole_inter(path), fmt
    if fmt == "amazon-reviews":
        return read_amazon_reviews(path, kcore_k), fmt
    raise DataError(f"unknown sequence format {fmt!r}; expected one of {', '.join(SEQUENCE_FORMATS)}")


def read_items(path: str | Path, fmt: str = "auto") -> tuple[dict[str, dict[str, Any]], str]:
    fmt = detect_item_format(path) if fmt == "auto" else fmt
    if fmt == "gram-text":
        return read_gram_item_text(path), fmt
    if fmt == "recbole-item":
        return read_recbole_item(path), fmt
    if fmt == "amazon-meta":
        return read_amazon_meta(path), fmt
    raise DataError(f"unknown item format {fmt!r}; expected one of {', '.join(ITEM_FORMATS)}")
