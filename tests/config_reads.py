"""Test helper: a Config whose sections record every field the code reads, as dotted keys.

`recording(cfg)` returns a copy of `cfg` whose section objects are subclasses of the real section
dataclasses (so isinstance, copy.deepcopy, dataclasses.asdict and to_dict keep working) and whose
field reads are added to the innermost `reads()` block. Reads made while the whole config is
copied into a record are not counted: `dataclasses.asdict` (to_dict, dump_yaml: config.yaml,
run_info.json, a stage's fingerprint), `absolute_paths` (rewrites every path the config names) and
`write_run_info` (records the seed beside the config).
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
from typing import Any, Iterator

_ACTIVE: list[set[str]] = []
# functions that copy or record the whole config without acting on any value (see the docstring)
_RECORDERS = {"_asdict_inner", "asdict", "absolute_paths", "absolute_paths.<locals>.fix", "write_run_info"}
_CLASSES: dict[type, type] = {}


def _recording_class(tp: type) -> type:
    if tp in _CLASSES:
        return _CLASSES[tp]
    names = {f.name for f in dataclasses.fields(tp)}

    def __getattribute__(self: Any, name: str) -> Any:
        value = object.__getattribute__(self, name)
        if _ACTIVE and name in names and not dataclasses.is_dataclass(value):
            if sys._getframe(1).f_code.co_qualname not in _RECORDERS:
                _ACTIVE[-1].add(object.__getattribute__(self, "_reads_prefix") + name)
        return value

    cls = type(f"Recording{tp.__name__}", (tp,), {"__getattribute__": __getattribute__})
    _CLASSES[tp] = cls
    return cls


def recording(section: Any, prefix: str = "") -> Any:
    """A copy of `section` (a Config or any section) that records its field reads."""
    tp = type(section)
    out = object.__new__(_recording_class(tp))
    for f in dataclasses.fields(tp):
        value = getattr(section, f.name)
        if dataclasses.is_dataclass(value):
            value = recording(value, f"{prefix}{f.name}.")
        object.__setattr__(out, f.name, value)
    object.__setattr__(out, "_reads_prefix", prefix)
    return out


@contextlib.contextmanager
def reads(into: set[str]) -> Iterator[set[str]]:
    """Collect the field reads of recording configs made inside the block into `into`."""
    _ACTIVE.append(into)
    try:
        yield into
    finally:
        _ACTIVE.pop()
