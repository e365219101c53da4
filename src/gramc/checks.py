"""Check results shared by `ids check`, `doctor data` and every `gramc doctor` check.

A check measures one thing, reports its figure (`value`), a level (pass / warn / fail) and, when
it is not a pass, a sentence saying what is wrong and what to do. JSON schema:
`{"ok": bool, "checks": [{"name", "ok", "level", "value", "message"}]}`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Level = Literal["pass", "warn", "fail"]


@dataclass
class Check:
    name: str
    level: Level
    value: Any
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.level != "fail"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "level": self.level, "value": self.value,
                "message": self.message}


def passed(name: str, value: Any, message: str = "") -> Check:
    return Check(name, "pass", value, message)


def failed(name: str, value: Any, message: str) -> Check:
    return Check(name, "fail", value, message)


def warned(name: str, value: Any, message: str) -> Check:
    return Check(name, "warn", value, message)


def check(name: str, ok: bool, value: Any, fail_message: str, pass_message: str = "") -> Check:
    """A pass or a fail depending on `ok`."""
    return passed(name, value, pass_message) if ok else failed(name, value, fail_message)


@dataclass
class Report:
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def add(self, *checks: Check) -> "Report":
        self.checks.extend(checks)
        return self

    def extend(self, checks: list[Check]) -> "Report":
        self.checks.extend(checks)
        return self

    def by_name(self, name: str) -> Check:
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(name)

    def failed_names(self) -> list[str]:
        return [c.name for c in self.checks if not c.ok]

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "checks": [c.to_dict() for c in self.checks]}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=_jsonable)

    def table(self) -> str:
        """Human-readable table: level, name, value, then the message on failures/warnings."""
        rows = []
        width = max([len(c.name) for c in self.checks] + [5])
        for c in self.checks:
            mark = {"pass": "PASS", "warn": "WARN", "fail": "FAIL"}[c.level]
            value = _short(c.value)
            rows.append(f"{mark:4}  {c.name:<{width}}  {value}")
            if c.message and c.level != "pass":
                rows.append(f"{'':4}  {'':<{width}}  -> {c.message}")
        n_fail = sum(c.level == "fail" for c in self.checks)
        n_warn = sum(c.level == "warn" for c in self.checks)
        rows.append(f"{len(self.checks)} checks: {len(self.checks) - n_fail - n_warn} passed, "
                    f"{n_warn} warnings, {n_fail} failed")
        return "\n".join(rows)

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1


def _short(value: Any, limit: int = 100) -> str:
    text = json.dumps(value, default=_jsonable) if not isinstance(value, str) else value
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _jsonable(x: Any) -> Any:
    try:
        return x.item()  # numpy / torch scalars
    except AttributeError:
        pass
    if hasattr(x, "tolist"):
        return x.tolist()
    if hasattr(x, "__dataclass_fields__"):
        return asdict(x)
    return str(x)
