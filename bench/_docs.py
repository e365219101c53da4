"""Shared by the bench scripts: replace one `## ` section of docs/benchmarks.md, keep the rest."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks.md"
sys.path.insert(0, str(ROOT / "src"))

from gramc.io import write_text  # noqa: E402


def replace_section(heading: str, body: str, doc: Path = DOC) -> None:
    """Put `body` (which starts with `heading`) in place of that section, or append it.

    A section runs from its heading line to the next `## ` heading; the file is rewritten
    atomically, so the other benchmarks' sections are never lost.
    """
    if not body.startswith(heading):
        raise ValueError(f"section body must start with its heading {heading!r}")
    body = body.rstrip("\n") + "\n"
    text = doc.read_text(encoding="utf-8") if doc.is_file() else "# Benchmarks\n"
    start = text.find(heading + "\n")
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + body
    else:
        end = text.find("\n## ", start + len(heading))
        text = text[:start] + body + ("\n" + text[end + 1:] if end >= 0 else "")
    write_text(doc, text)
