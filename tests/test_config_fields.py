"""A config field that nothing reads is a bug: every field of every section of `gramc.config` is
read (an attribute load `.field`) somewhere in src/gramc outside config.py.

An AST scan, not a type analysis: `x.seed` counts for `run.seed` whatever `x` is, so the test
finds fields that no code mentions at all (the dead ones), not every misrouted read; which keys
each pipeline stage reads is tested exactly in tests/test_pipeline_reads.py.
"""

from __future__ import annotations

import ast
import dataclasses
import typing
from pathlib import Path

from gramc import config

SRC = Path(__file__).resolve().parents[1] / "src" / "gramc"

# fields consumed by Config.validate itself (a read in config.py is their whole job)
READ_BY_VALIDATION = {
    "eval.allow_capped",  # permits eval.beams < max(eval.ks), which validation otherwise refuses
}


def config_fields(cls: type = config.Config, prefix: str = "") -> list[tuple[str, str]]:
    """(dotted key, field name) of every leaf field of `cls` and its sections."""
    out = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            out += config_fields(hints[f.name], f"{prefix}{f.name}.")
        else:
            out.append((f"{prefix}{f.name}", f.name))
    return out


def attribute_loads(files: list[Path]) -> set[str]:
    """Names `n` of every attribute read `x.n` (not assignments `x.n = ...`) in `files`."""
    names: set[str] = set()
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load):
                names.add(node.attr)
    return names


def unread(fields: list[tuple[str, str]], files: list[Path], allowed: set[str] = frozenset()) -> list[str]:
    loads = attribute_loads(files)
    return [key for key, name in fields if name not in loads and key not in allowed]


def test_every_config_field_is_read_outside_config_py():
    files = [p for p in SRC.rglob("*.py") if p != SRC / "config.py"]
    assert len(files) > 50 and len(config_fields()) > 100
    assert unread(config_fields(), files, READ_BY_VALIDATION) == []
    # the allow-list holds only fields that really are read by nothing else
    assert unread(config_fields(), files) == sorted(READ_BY_VALIDATION)


@dataclasses.dataclass
class _Section:
    used: int = 1
    forgotten: int = 2


@dataclasses.dataclass
class _Root:
    sec: _Section = dataclasses.field(default_factory=_Section)


def test_the_scan_finds_a_field_only_config_mentions(tmp_path):
    code = tmp_path / "user.py"
    code.write_text("def f(cfg):\n    cfg.sec.forgotten = 3  # an assignment is not a read\n    return cfg.sec.used\n")
    assert unread(config_fields(_Root), [code]) == ["sec.forgotten"]
