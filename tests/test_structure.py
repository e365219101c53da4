"""Size limits and packaging facts of the source tree, measured with `ast` (no import of gramc).

* No function in the layers that run training and evaluation (`train/`, `eval/`, `pipeline/`,
  `recipes/`) is longer than `MAX_LINES` lines, from its `def` line to its last line (docstring and
  comments included; a nested function counts in its own right and inside its parent). Today's
  longer ones are listed in `LONG_FUNCTIONS` with the reason; an entry that is no longer needed
  (the function got shorter, moved or was renamed) is an error too, so the list can only shrink.
* Every `package-data` pattern of pyproject.toml matches a file.

Import cycles are refused by tests/test_layering.py.
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "gramc"
MAX_LINES = 60
CHECKED = ("train", "eval", "pipeline", "recipes")

# "folder/module.py:qualified.name" -> why it is longer than MAX_LINES (remove the entry once it is not)
LONG_FUNCTIONS = {
    "eval/beam.py:beam_search":
        "one tensor loop whose per-step state (nodes, scores, tokens, finished beams) helpers would have to thread",
}


def function_lengths(source: str) -> dict[str, int]:
    """{qualified name: lines from `def` to the end} of every function and method in `source`
    (nested functions as `outer.<locals>.inner`, methods as `Class.method`)."""
    out: dict[str, int] = {}

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = prefix + child.name
                out[name] = child.end_lineno - child.lineno + 1
                visit(child, f"{name}.<locals>.")
            elif isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")
            else:
                visit(child, prefix)

    visit(ast.parse(source), "")
    return out


def long_functions(package: Path = PACKAGE, folders: tuple[str, ...] = CHECKED,
                   limit: int = MAX_LINES) -> dict[str, int]:
    """{"folder/module.py:name": lines} of every function over `limit` lines under `folders`."""
    found = {}
    for folder in folders:
        for path in sorted((package / folder).rglob("*.py")):
            rel = path.relative_to(package).as_posix()
            for name, lines in function_lengths(path.read_text(encoding="utf-8")).items():
                if lines > limit:
                    found[f"{rel}:{name}"] = lines
    return found


def test_no_long_functions_in_the_training_and_evaluation_layers():
    assert sum(1 for f in CHECKED for _ in (PACKAGE / f).rglob("*.py")) > 15  # the walk found the code
    found = long_functions()
    new = {k: v for k, v in found.items() if k not in LONG_FUNCTIONS}
    assert not new, (f"functions over {MAX_LINES} lines: {new}; split them, or add each to LONG_FUNCTIONS in "
                     f"tests/test_structure.py with the reason")
    stale = sorted(set(LONG_FUNCTIONS) - set(found))
    assert not stale, f"no longer over {MAX_LINES} lines (or gone): remove {stale} from LONG_FUNCTIONS"


def test_the_length_check_can_fail(tmp_path):
    def body(indent: int) -> str:  # 59 lines
        return "".join(f"{' ' * indent}x{i} = {i}\n" for i in range(59))

    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "a.py").write_text(
        f"def fits():\n{body(4)}\n"  # 60 lines with its def
        f"class C:\n    def method(self):\n{body(8)}        pass\n\n"  # 61
        f"def outer():\n    def inner():\n{body(8)}        pass\n    return inner\n",  # inner 61, outer 63
        encoding="utf-8")
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "b.py").write_text(f"def elsewhere():\n{body(4)}    pass\n", encoding="utf-8")
    assert long_functions(tmp_path, ("train",)) == {
        "train/a.py:C.method": 61, "train/a.py:outer": 63, "train/a.py:outer.<locals>.inner": 61}
    assert function_lengths((tmp_path / "model" / "b.py").read_text())["elsewhere"] == 61


def test_every_package_data_pattern_matches_a_file():
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    patterns = setuptools["package-data"]["gramc"]
    assert patterns
    assert [p for p in patterns if not list(PACKAGE.glob(p))] == []
