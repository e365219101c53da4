"""Textual item IDs: GRAM's `ASIN |tok|tok|...` files, their token mapping, and their checks.

An item's ID is a tuple of *level pieces*, each one piece of the tokenizer's vocabulary (with or
without the leading `▁`), optionally followed by a numeric de-duplication level such as `0`.
The decoder generates the level tokens, then `</s>`.

* `pieces_to_tokens` / `tokens_to_pieces`: the one mapping ID <-> token tuple (by piece lookup,
  never by hard-coded token ids), used everywhere.
* `ItemIds`: per dataset item index `pieces[i]`, `tokens[i]`, `target(i)` (+ eos), and the inverse
  `item_of(seq)`; `save(path)` writes GRAM's format atomically.
* `load_gram_ids(path, ds, tok)` reads a GRAM file (raising `IdsError` naming file and lines);
  `check_ids(path_or_ids, ds, tok)` reports every violation and the ID statistics as `Check`s.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from ..checks import Check
from ..data.dataset import DataError, SeqDataset
from ..io import atomic_path, text_lines
from .tokenizer import Tokenizer
from .trie import targets_fingerprint

MAX_LISTED = 10  # problems quoted in one error message / check message


class IdsError(DataError):
    """An item-ID file or item-ID table is unusable; the message names the file, line and problem."""


# --------------------------------------------------------------------------------------------
# The one mapping between level pieces and token ids
# --------------------------------------------------------------------------------------------


def pieces_to_tokens(pieces: Sequence[str], tok: Tokenizer, where: str = "") -> tuple[int, ...]:
    """Token id of every level piece; IdsError (naming `where`) if a level is not one piece."""
    out = []
    for level, piece in enumerate(pieces, 1):
        i = tok.piece_to_id(piece)
        if i is None or tok.is_special(i):
            raise IdsError(f"{where}level {level} {piece!r}: {_piece_problem(piece, tok)}")
        out.append(i)
    return tuple(out)


def tokens_to_pieces(tokens: Iterable[int], tok: Tokenizer) -> tuple[str, ...]:
    """The inverse of `pieces_to_tokens` (a trailing eos is not part of the ID and is dropped)."""
    toks = _strip_eos(tokens, tok.eos_id)
    return tuple(tok.id_to_piece(t) for t in toks)


def _strip_eos(tokens: Iterable[int], eos_id: int) -> tuple[int, ...]:
    toks = tuple(int(t) for t in tokens)
    return toks[:-1] if toks and toks[-1] == eos_id else toks


def _piece_problem(piece: str, tok: Tokenizer) -> str:
    """Why `piece` is not usable as a level: a special token, several pieces, or unknown."""
    i = tok.piece_to_id(piece)
    if i is not None:
        return f"is the special token {piece!r} (id {i}), not an ID piece"
    text = piece.replace("▁", " ")
    split = tok.tokenize(text)
    ids = tok.encode(text)
    if tok.unk_id in ids or not split:
        return f"unknown piece: not in the vocabulary of {tok.source or 'the tokenizer'}"
    return (f"multi-piece level: not one vocabulary piece (it tokenizes into {len(split)} pieces "
            f"{split}); every level must be a single piece")


def id_string(pieces: Sequence[str]) -> str:
    """GRAM's rendering of an ID: `|tok|tok|...`."""
    return "|" + "|".join(pieces)


# --------------------------------------------------------------------------------------------
# ItemIds
# --------------------------------------------------------------------------------------------


class ItemIds:
    """Item IDs of a dataset, indexed by dataset item index 0..num_items-1."""

    def __init__(self, item_ids: Sequence[str], pieces: Sequence[Sequence[str]], tok: Tokenizer,
                 source: str = "") -> None:
        if len(item_ids) != len(pieces):
            raise IdsError(f"{len(item_ids)} items but {len(pieces)} IDs")
        self.item_ids = list(item_ids)
        self.pieces: list[tuple[str, ...]] = [tuple(p) for p in pieces]
        self.tokenizer = tok
        self.tokenizer_fingerprint = tok.fingerprint
        self.eos_id = tok.eos_id
        self.source = source
        self.meta: dict = {}  # how the IDs were made (filled by build_ids; empty for loaded files)
        for i, p in enumerate(self.pieces):
            if not p:
                raise IdsError(f"item {self.item_ids[i]} (index {i}) has an empty ID")
        # a tuple: the table cannot change in place under its cached `fingerprint`
        self.tokens: tuple[tuple[int, ...], ...] = tuple(
            pieces_to_tokens(p, tok, where=f"item {self.item_ids[i]}: ") for i, p in enumerate(self.pieces))
        self._index: dict[tuple[int, ...], int] = {}
        for i, t in enumerate(self.tokens):
            j = self._index.setdefault(t, i)
            if j != i:
                raise IdsError(f"duplicate ID: items {self.item_ids[j]} and {self.item_ids[i]} "
                               f"share {id_string(self.pieces[i])}")

    @classmethod
    def from_tokens(cls, item_ids: Sequence[str], tokens: Sequence[Sequence[int]], tok: Tokenizer,
                    source: str = "") -> "ItemIds":
        return cls(item_ids, [tokens_to_pieces(t, tok) for t in tokens], tok, source)

    def __len__(self) -> int:
        return len(self.item_ids)

    @property
    def fingerprint(self) -> str:
        """sha256 of the decoder targets (`trie_for`'s cache key), hashed once per token table: the
        memo holds the `tokens` object it was computed from, so a table given other tokens rehashes."""
        memo = self.__dict__.get("_fingerprint")
        if memo is None or memo[0] is not self.tokens or memo[1] != self.eos_id:
            targets = [self.target(i) for i in range(len(self.tokens))]
            memo = (self.tokens, self.eos_id, targets_fingerprint(targets, self.eos_id))
            self.__dict__["_fingerprint"] = memo
        return memo[2]

    @property
    def num_items(self) -> int:
        return len(self.item_ids)

    @property
    def max_len(self) -> int:
        """Longest target length: levels + eos."""
        return max(len(t) for t in self.tokens) + 1

    def num_levels(self, i: int) -> int:
        return len(self.tokens[i])

    def target(self, i: int) -> tuple[int, ...]:
        """Decoder target of item `i`: its level tokens, then eos."""
        return self.tokens[i] + (self.eos_id,)

    def item_of(self, seq: Iterable[int]) -> int | None:
        """Dataset item index whose ID is `seq` (level tokens, optionally followed by eos)."""
        return self._index.get(_strip_eos(seq, self.eos_id))

    def id_string(self, i: int) -> str:
        """`|tok|tok|...` of item `i` (GRAM's textual form, e.g. for passages)."""
        return id_string(self.pieces[i])

    def save(self, path: str | Path) -> None:
        """Write GRAM's format (`ASIN |tok|tok|...`, dataset order) atomically."""
        with atomic_path(path) as tmp:
            with open(tmp, "w", encoding="utf-8", newline="\n") as f:
                for asin, p in zip(self.item_ids, self.pieces):
                    f.write(f"{asin} {id_string(p)}\n")


# --------------------------------------------------------------------------------------------
# Reading GRAM files
# --------------------------------------------------------------------------------------------


@dataclass
class IdProblem:
    """One violation found in an ID file; `line` is 1-based (None when it concerns no line)."""

    kind: str  # malformed | duplicate_asin | multi_piece | unknown_piece | special_piece |
    #            duplicate_id | decoded_collision | missing_item | extra_item
    line: int | None
    message: str

    def render(self, path: str) -> str:
        return f"{path}:{self.line}: {self.message}" if self.line else f"{path}: {self.message}"


FATAL = ("malformed", "duplicate_asin", "multi_piece", "unknown_piece", "special_piece",
         "duplicate_id", "decoded_collision", "missing_item")


@dataclass
class _Parsed:
    path: str
    pieces: dict[str, tuple[str, ...]]  # ASIN -> level pieces
    lines: dict[str, int]  # ASIN -> line number
    problems: list[IdProblem]


def _parse_file(path: str | Path, tok: Tokenizer) -> _Parsed:
    """Read `ASIN |tok|tok|...` lines; collect (don't raise) format and vocabulary problems."""
    path = Path(path)
    if path.is_dir():
        raise IdsError(f"ID file '{path}' is a folder; give the ID file (`ASIN |tok|tok|...` lines)")
    if not path.is_file():
        raise IdsError(f"ID file '{path}' does not exist")
    pieces: dict[str, tuple[str, ...]] = {}
    lines: dict[str, int] = {}
    problems: list[IdProblem] = []
    bad_piece: dict[str, tuple[str, str]] = {}  # cache: piece -> (kind, message)
    for n, raw in text_lines(path, IdsError):
        line = raw.rstrip()  # trailing whitespace / CRLF; pieces never end in whitespace
        if not line.strip():
            continue
        asin, sep, rest = line.partition(" ")
        if not sep or not asin or not rest.startswith("|") or len(rest) < 2:
            problems.append(IdProblem("malformed", n, f"malformed line {line[:80]!r}: expected "
                                                     f"'ASIN |tok|tok|...'"))
            continue
        levels = tuple(rest[1:].split("|"))
        if any(lv == "" or lv != lv.strip() for lv in levels):
            problems.append(IdProblem("malformed", n, f"malformed line {line[:80]!r}: empty level "
                                                     f"or whitespace inside '|...|'"))
            continue
        if asin in lines:
            problems.append(IdProblem("duplicate_asin", n, f"duplicate ASIN line: {asin} already "
                                                          f"has an ID on line {lines[asin]}"))
            continue
        for level, piece in enumerate(levels, 1):
            i = tok.piece_to_id(piece)
            if i is not None and not tok.is_special(i):
                continue
            if piece not in bad_piece:
                msg = _piece_problem(piece, tok)
                kind = ("multi_piece" if msg.startswith("multi-piece") else
                        "special_piece" if msg.startswith("is the special") else "unknown_piece")
                bad_piece[piece] = (kind, msg)
            kind, msg = bad_piece[piece]
            problems.append(IdProblem(kind, n, f"{asin} level {level} {piece!r}: {msg}"))
        pieces[asin] = levels
        lines[asin] = n
    return _Parsed(str(path), pieces, lines, problems)


def _dataset_problems(parsed: _Parsed, ds: SeqDataset) -> list[IdProblem]:
    problems = []
    missing = [a for a in ds.item_ids if a not in parsed.pieces]
    if missing:
        shown = ", ".join(missing[:MAX_LISTED]) + (" ..." if len(missing) > MAX_LISTED else "")
        problems.append(IdProblem("missing_item", None, f"missing item: {len(missing)} dataset items "
                                                        f"have no ID line ({shown})"))
    for a, n in parsed.lines.items():
        if not ds.has_item(a):
            problems.append(IdProblem("extra_item", n, f"{a} is not a dataset item (ignored)"))
    return problems


def _collision_problems(item_ids: Sequence[str], pieces: Sequence[tuple[str, ...]], tok: Tokenizer,
                        lines: dict[str, int] | None = None) -> list[IdProblem]:
    """Two items with the same level sequence, or whose decoded strings collide."""
    problems = []
    by_seq: dict[tuple[str, ...], list[int]] = defaultdict(list)
    for i, p in enumerate(pieces):
        by_seq[p].append(i)
    line_of = (lambda i: (lines or {}).get(item_ids[i]))
    for p, members in by_seq.items():
        if len(members) > 1:
            names = ", ".join(f"{item_ids[i]}" + (f" (line {line_of(i)})" if line_of(i) else "")
                              for i in members[:MAX_LISTED])
            problems.append(IdProblem("duplicate_id", line_of(members[-1]),
                                      f"duplicate ID {id_string(p)}: shared by {names}"))
    # decoded strings (what GRAM's evaluation compares), only for sequences that are unique
    reps = [m[0] for m in by_seq.values()]
    valid = [i for i in reps if all(tok.piece_to_id(x) is not None for x in pieces[i])]
    decoded = tok.decode_batch([[tok.piece_to_id(x) for x in pieces[i]] for i in valid])
    by_text: dict[str, list[int]] = defaultdict(list)
    for i, text in zip(valid, decoded):
        by_text[text].append(i)
    for text, members in by_text.items():
        if len(members) > 1:
            names = ", ".join(f"{item_ids[i]} {id_string(pieces[i])}" for i in members[:MAX_LISTED])
            problems.append(IdProblem("decoded_collision", line_of(members[-1]),
                                      f"decoded IDs collide ({text!r}): {names}"))
    return problems


def _raise_if_fatal(path: str, problems: list[IdProblem]) -> None:
    fatal = [p for p in problems if p.kind in FATAL]
    if fatal:
        shown = "\n  ".join(p.render(path) for p in fatal[:MAX_LISTED])
        more = f"\n  ... and {len(fatal) - MAX_LISTED} more" if len(fatal) > MAX_LISTED else ""
        raise IdsError(f"{path}: {len(fatal)} problem(s) in the item-ID file:\n  {shown}{more}")


def load_gram_ids(path: str | Path, ds: SeqDataset, tok: Tokenizer) -> ItemIds:
    """Read a GRAM ID file for the items of `ds` (in dataset order); IdsError on any violation.

    Lines for items outside the dataset are ignored (see `check_ids` for a warning about them).
    """
    parsed = _parse_file(path, tok)
    problems = parsed.problems + _dataset_problems(parsed, ds)
    _raise_if_fatal(parsed.path, problems)
    pieces = [parsed.pieces[a] for a in ds.item_ids]
    _raise_if_fatal(parsed.path, _collision_problems(ds.item_ids, pieces, tok, parsed.lines))
    return ItemIds(ds.item_ids, pieces, tok, source=parsed.path)


# --------------------------------------------------------------------------------------------
# Checks and statistics
# --------------------------------------------------------------------------------------------


def id_stats(pieces: Sequence[tuple[str, ...]]) -> dict:
    """Levels distribution, items per level-1 token, branching factor per level."""
    levels = Counter(len(p) for p in pieces)
    first = Counter(p[0] for p in pieces if p)
    per_first = sorted(first.values())
    depth = max(levels) if levels else 0
    branching = {}
    for d in range(1, depth + 1):
        children: dict[tuple[str, ...], set[str]] = defaultdict(set)
        for p in pieces:
            if len(p) >= d:
                children[p[: d - 1]].add(p[d - 1])
        counts = [len(c) for c in children.values()]
        branching[str(d)] = {"nodes": len(counts), "mean": round(sum(counts) / len(counts), 3),
                             "max": max(counts)}
    modal = levels.most_common(1)[0][0] if levels else 0
    return {
        "items": len(pieces),
        "levels": {str(k): v for k, v in sorted(levels.items())},
        "mean_levels": round(sum(len(p) for p in pieces) / max(len(pieces), 1), 4),
        "items_with_extra_level": sum(1 for p in pieces if len(p) > modal),
        "level1_tokens": len(first),
        "items_per_level1_token": {"min": per_first[0] if per_first else 0,
                                   "median": statistics.median(per_first) if per_first else 0,
                                   "max": per_first[-1] if per_first else 0},
        "branching": branching,
    }


def _problem_check(name: str, kinds: tuple[str, ...], problems: list[IdProblem], path: str,
                   what: str, level_if_any: str = "fail") -> Check:
    hits = [p for p in problems if p.kind in kinds]
    if not hits:
        return Check(name, "pass", 0)
    shown = "; ".join(p.render(path) for p in hits[:MAX_LISTED])
    more = f" (and {len(hits) - MAX_LISTED} more)" if len(hits) > MAX_LISTED else ""
    return Check(name, level_if_any, len(hits), f"{what}: {shown}{more}")  # type: ignore[arg-type]


def check_ids(ids: str | Path | ItemIds, ds: SeqDataset, tok: Tokenizer) -> list[Check]:
    """Every violation and the statistics of an ID file (or an in-memory `ItemIds`) for `ds`."""
    if isinstance(ids, ItemIds):
        path = ids.source or "(item IDs)"
        lines: dict[str, int] = {}
        problems: list[IdProblem] = []
        same_tok = ids.tokenizer_fingerprint == tok.fingerprint
        by_asin = dict(zip(ids.item_ids, ids.pieces))
        if list(ids.item_ids) != list(ds.item_ids):
            missing = [a for a in ds.item_ids if a not in by_asin]
            if missing:
                problems.append(IdProblem("missing_item", None, f"missing item: {len(missing)} dataset "
                                                                f"items have no ID ({', '.join(missing[:MAX_LISTED])})"))
        pieces = [by_asin[a] for a in ds.item_ids if a in by_asin]
        asins = [a for a in ds.item_ids if a in by_asin]
    else:
        parsed = _parse_file(ids, tok)
        path, lines, same_tok = parsed.path, parsed.lines, True
        problems = parsed.problems + _dataset_problems(parsed, ds)
        asins = [a for a in ds.item_ids if a in parsed.pieces]
        pieces = [parsed.pieces[a] for a in asins]
    problems += _collision_problems(asins, pieces, tok, lines)
    stats = id_stats(pieces)
    n_unique = len(set(pieces))
    checks = [
        _problem_check("ids.format", ("malformed",), problems, path, "malformed lines"),
        _problem_check("ids.duplicate_asin", ("duplicate_asin",), problems, path, "ASINs listed twice"),
        _problem_check("ids.single_piece_levels", ("multi_piece", "special_piece"), problems, path,
                       "levels that are not one vocabulary piece"),
        _problem_check("ids.unknown_pieces", ("unknown_piece",), problems, path, "levels not in the vocabulary"),
        _problem_check("ids.missing_items", ("missing_item",), problems, path,
                       "every dataset item needs an ID"),
        _problem_check("ids.duplicate_ids", ("duplicate_id",), problems, path,
                       "two items share a token sequence; add a de-duplication level"),
        _problem_check("ids.decoded_collisions", ("decoded_collision",), problems, path,
                       "decoded ID strings collide after removing separators"),
        _problem_check("ids.extra_items", ("extra_item",), problems, path,
                       "ID lines for items outside the dataset", level_if_any="warn"),
        Check("ids.unique_ids", "pass" if n_unique == ds.num_items else "fail", n_unique,
              "" if n_unique == ds.num_items else f"{n_unique} unique IDs for {ds.num_items} items"),
        Check("ids.levels", "pass", stats["levels"]),
        Check("ids.mean_levels", "pass", stats["mean_levels"]),
        Check("ids.items_with_extra_level", "pass", stats["items_with_extra_level"]),
        Check("ids.level1_tokens", "pass", stats["level1_tokens"]),
        Check("ids.items_per_level1_token", "pass", stats["items_per_level1_token"]),
        Check("ids.branching", "pass", {k: v["mean"] for k, v in stats["branching"].items()}),
        Check("ids.tokenizer", "pass" if same_tok else "fail", tok.fingerprint[:16],
              "" if same_tok else "the IDs were made with another tokenizer (fingerprint "
                                  f"{getattr(ids, 'tokenizer_fingerprint', '')[:16]})"),
    ]
    return checks
