"""Item text as GRAM renders it: `title: ...; brand: ...; categories: a, b, c; price: ...; salesrank: ...`.

Rendered once per item from its metadata fields: HTML entities unescaped, whitespace normalised,
missing or empty fields omitted, optionally lower-cased; which fields and in which order come
from `DataConfig.text_fields`. Categories may arrive as a list, nested lists (Amazon meta) or a
Python-literal string (`'Beauty', 'Makeup', 'Face'`, RecBole): they are flattened, de-duplicated
and kept in order.
"""

from __future__ import annotations

import ast
import html
import math
from typing import Any, Iterable

from ..config import DataConfig
from .dataset import SeqDataset

# other spellings of canonical field names met in the sources (RecBole, Amazon meta)
ALIASES: dict[str, tuple[str, ...]] = {
    "salesrank": ("sales_rank", "salesRank"),
    "categories": ("category",),
}


def clean(text: str) -> str:
    """Unescape HTML entities (also doubly escaped ones like `&amp;amp;`) and normalise whitespace."""
    for _ in range(3):
        unescaped = html.unescape(text)
        if unescaped == text:
            break
        text = unescaped
    return " ".join(text.split())


def _flatten(value: Any) -> Iterable[Any]:
    if isinstance(value, (list, tuple)):
        for v in value:
            yield from _flatten(v)
    else:
        yield value


def parse_categories(value: Any) -> list[str]:
    """Categories as a flat, de-duplicated, ordered list of clean strings.

    Accepts a list, nested lists, or a string: a Python literal (`'Beauty', 'Makeup'` or
    `[['Beauty', 'Makeup']]`, parsed with ast.literal_eval, never eval) or, failing that, a
    comma-separated list.
    """
    if value is None:
        return []
    if isinstance(value, str):
        s = value.strip()
        if not s:
            return []
        parsed: Any = None
        for candidate in (s, "[" + s + "]"):
            try:
                parsed = ast.literal_eval(candidate)
            except (ValueError, SyntaxError, MemoryError, RecursionError):
                continue
            if isinstance(parsed, (list, tuple)) or (isinstance(parsed, str) and candidate == s):
                break
            parsed = None
        value = parsed if parsed is not None else s.split(",")
        if isinstance(value, str):
            value = [value]
    out: list[str] = []
    seen: set[str] = set()
    for v in _flatten(value):
        if v is None:
            continue
        c = clean(str(v))
        if c and c not in seen:
            seen.add(c)
            out.append(c)
    return out


def _format_value(value: Any) -> str:
    """A scalar as text: integral floats without `.0`, NaN/None as empty."""
    if value is None or isinstance(value, bool):
        return "" if value is None else str(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return ""
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, dict):  # Amazon salesRank: {"Beauty": 1234}
        return ", ".join(_format_value(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return ", ".join(s for s in (_format_value(v) for v in _flatten(value)) if s)
    return clean(str(value))


def field_value(fields: dict[str, Any], name: str) -> Any:
    """The value of a canonical field, looking at known aliases when it is absent."""
    if name in fields:
        return fields[name]
    for alias in ALIASES.get(name, ()):
        if alias in fields:
            return fields[alias]
    return None


def render_item_text(fields: dict[str, Any], cfg: DataConfig) -> str:
    """One item's text, e.g. `title: x; brand: y; categories: a, b; price: 9.99; salesrank: 12`."""
    parts = []
    for name in cfg.text_fields:
        value = field_value(fields, name)
        if name in ("categories", "category"):
            text = ", ".join(parse_categories(value))
        else:
            text = _format_value(value)
        text = clean(text)
        if not text:
            continue
        parts.append(f"{name}: {text}")
    out = "; ".join(parts)
    return out.lower() if cfg.lowercase else out


def item_texts(ds: SeqDataset, cfg: DataConfig) -> list[str]:
    """The text of every item, by dataset item index."""
    return [render_item_text(f, cfg) for f in ds.item_fields]
