"""Imports run down the pipeline, never up, and never in a circle (docs/architecture.md, "Layers").

Every module under src/gramc is parsed with `ast`; every `import` / `from ... import` of a gramc
module counts, at module level and inside functions alike (an import in a function body still
ties the two modules together: it only moves the cost to the first call).

Layers, bottom to top (a module may import its own layer and the layers below it):

    base      gramc (the package), errors < config < metrics < io < lock < runinfo < checks < runtime
              < checkpoint < cliargs   (shared building blocks; within base, only leftwards)
    data < ids < graph < model < train < eval < doctor < serve      (the pipeline's stages)
    recipes   composition of stages into a product (GRAM-C training: model + train + eval)
    pipeline  the whole pipeline, the quickstart and the report (may also use the baselines)
    cli       gramc.cli and gramc.__main__ (collects every stage's own cli.py; the top)

    baselines a side branch: base, data, ids and graph only (a baseline ranks items with no
              generative model); only pipeline and cli import it.

A stage's own `cli.py` belongs to its stage. Besides the direction, the test refuses:
* any import cycle between modules, function-level imports included (a function-level import
  may not hide a cycle); imports under `if TYPE_CHECKING:` are annotations only and are left out
  of the cycle check (not of the direction check);
* a function-level gramc import in a module that does not say why (the reason allowed is
  start-up time: the module must say "start-up time" in a comment or docstring);
* a module the map below does not place (a new top-level module must be given a layer here).
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

BASE = ["gramc", "gramc.errors", "gramc.config", "gramc.metrics", "gramc.io", "gramc.lock", "gramc.runinfo",
        "gramc.checks", "gramc.runtime", "gramc.seeding", "gramc.checkpoint", "gramc.cliargs"]
STAGES = ["data", "ids", "graph", "model", "train", "eval", "doctor", "serve"]
ORDER = ["base", *STAGES, "recipes", "pipeline", "cli"]
# what each layer may import: itself and everything below it in ORDER; baselines is a side branch
ALLOWED = {layer: set(ORDER[: i + 1]) for i, layer in enumerate(ORDER)}
ALLOWED["baselines"] = {"base", "data", "ids", "graph", "baselines"}
for _top in ("pipeline", "cli"):
    ALLOWED[_top].add("baselines")
REASON = "start-up time"


@dataclass(frozen=True)
class Edge:
    src: str
    dst: str
    line: int
    in_function: bool
    type_only: bool


def layer_of(module: str) -> str:
    """The layer of a gramc module name (KeyError for a module the map does not place)."""
    if module in BASE:
        return "base"
    if module in ("gramc.cli", "gramc.__main__"):
        return "cli"
    parts = module.split(".")
    if len(parts) >= 2 and (parts[1] in STAGES or parts[1] in ("recipes", "pipeline", "baselines")):
        return parts[1]
    raise KeyError(f"{module} is in no layer: place it in tests/test_layering.py (and docs/architecture.md)")


def module_name(path: Path, root: Path = SRC) -> str:
    parts = list(path.with_suffix("").relative_to(root).parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports_of(source: str, module: str, is_package: bool, known: set[str]) -> list[Edge]:
    """Every import of a gramc module in `source` (the module `module`)."""
    package = module if is_package else module.rpartition(".")[0]
    edges: list[Edge] = []

    def targets(node: ast.AST) -> list[str]:
        if isinstance(node, ast.Import):
            return [a.name for a in node.names]
        assert isinstance(node, ast.ImportFrom)
        if node.level:
            base = package.split(".")
            base = base[: len(base) - (node.level - 1)]
            base_name = ".".join(base + ([node.module] if node.module else []))
        else:
            base_name = node.module or ""
        # `from gramc import runtime` imports the module gramc.runtime; `from gramc.x import name` gramc.x
        return [f"{base_name}.{a.name}" if f"{base_name}.{a.name}" in known else base_name for a in node.names]

    def visit(node: ast.AST, in_function: bool, type_only: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                for t in targets(child):
                    if t == "gramc" or t.startswith("gramc."):
                        edges.append(Edge(module, t, child.lineno, in_function, type_only))
            elif isinstance(child, ast.If) and _is_type_checking(child.test):
                for stmt in child.body:
                    visit(ast.Module(body=[stmt], type_ignores=[]), in_function, True)
                for stmt in child.orelse:
                    visit(ast.Module(body=[stmt], type_ignores=[]), in_function, type_only)
            else:
                visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)),
                      type_only)

    visit(ast.parse(source), False, False)
    return edges


def collect(root: Path = SRC) -> tuple[dict[str, str], list[Edge]]:
    """({module: source}, import edges) of every module under root/gramc."""
    files = sorted((root / "gramc").rglob("*.py"))
    sources = {module_name(p, root): (p, p.read_text(encoding="utf-8")) for p in files}
    known = set(sources)
    edges = [e for m, (p, text) in sources.items() for e in imports_of(text, m, p.name == "__init__.py", known)]
    return {m: text for m, (_, text) in sources.items()}, edges


def upward(edges: list[Edge]) -> list[str]:
    """The imports that break the layering, as `src:line -> dst (layer -> layer)`."""
    bad = []
    for e in edges:
        src, dst = layer_of(e.src), layer_of(e.dst)
        wrong_layer = dst not in ALLOWED[src]
        wrong_base = src == dst == "base" and e.dst != "gramc" and BASE.index(e.dst) >= BASE.index(e.src)
        if wrong_layer or wrong_base:
            bad.append(f"{e.src}:{e.line} -> {e.dst} ({src} -> {dst})")
    return bad


def cycles(edges: list[Edge]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan), type-only imports left out."""
    graph: dict[str, set[str]] = {}
    for e in edges:
        if not e.type_only and e.src != e.dst and e.dst != "gramc":
            graph.setdefault(e.src, set()).add(e.dst)
            graph.setdefault(e.dst, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def strongconnect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    return found


def unexplained_lazy(sources: dict[str, str], edges: list[Edge]) -> list[str]:
    """Modules with function-level gramc imports that do not say the reason (start-up time)."""
    lazy = sorted({e.src for e in edges if e.in_function and not e.type_only})
    return [m for m in lazy if REASON not in sources[m]]


# --------------------------------------------------------------------------------------------
# the package itself
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def package() -> tuple[dict[str, str], list[Edge]]:
    sources, edges = collect()
    assert len(sources) > 50 and len(edges) > 100  # the walk found the package
    return sources, edges


def test_every_module_has_a_layer(package):
    sources, _ = package
    unplaced = []
    for m in sources:
        try:
            layer_of(m)
        except KeyError as e:
            unplaced.append(str(e))
    assert not unplaced, "\n".join(unplaced)


def test_imports_run_down_the_pipeline(package):
    _, edges = package
    bad = upward(edges)
    assert not bad, "imports against the layering (docs/architecture.md):\n" + "\n".join(bad)


def test_no_import_cycles(package):
    _, edges = package
    assert not cycles(edges), f"import cycles (function-level imports included): {cycles(edges)}"


def test_function_level_imports_say_why(package):
    sources, edges = package
    bad = unexplained_lazy(sources, edges)
    assert not bad, (f"function-level gramc imports without a reason in {bad}: import at the top, or say "
                     f"in a comment that the import is deferred for {REASON}")


def test_no_private_names_imported_across_modules(package):
    """A name another module needs is public where it lives (`from x import _helper` is refused)."""
    _, edges = package
    bad = []
    for p in sorted((SRC / "gramc").rglob("*.py")):
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("gramc")):
                bad += [f"{module_name(p)}:{node.lineno} imports {a.name}" for a in node.names
                        if a.name.startswith("_") and not a.name.startswith("__")]
    assert not bad, "\n".join(bad)


def test_the_command_line_starts_without_torch():
    """What the function-level imports of the cli.py modules buy: building the whole `gramc`
    parser (every stage's commands) loads neither torch nor any stage's working code."""
    import subprocess
    import sys

    code = ("import sys; from gramc.cli import build_parser; build_parser(); "
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith(('gramc.model', 'gramc.train.'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**__import__("os").environ, "PYTHONPATH": str(SRC)})
    assert out.stdout.strip() == "['gramc.train.cli']"


# --------------------------------------------------------------------------------------------
# the checks themselves can fail
# --------------------------------------------------------------------------------------------


def _synthetic(tmp_path: Path, files: dict[str, str]) -> tuple[dict[str, str], list[Edge]]:
    for rel, text in files.items():
        p = tmp_path / "gramc" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text, encoding="utf-8")
    return collect(tmp_path)


def test_checks_catch_upward_cyclic_and_unexplained_imports(tmp_path):
    sources, edges = _synthetic(tmp_path, {
        "__init__.py": "",
        "errors.py": "from .config import Config\n",  # base, but rightwards within base
        "config.py": "",
        "train/__init__.py": "",
        "train/trainer.py": "def f():\n    from ..eval.evaluate import evaluate_split\n",  # upward, in a function
        "eval/__init__.py": "",
        "eval/evaluate.py": "from gramc.train import trainer\nfrom ..recipes.train_gramc import train\n",
        "model/__init__.py": "",
        "model/a.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .b import B\n",
        "model/b.py": "from . import a\n",  # a -> b only for annotations: no cycle
        "recipes/__init__.py": "",
        "recipes/train_gramc.py": "from ..baselines import pop\n",  # recipes may not use the baselines
        "baselines/__init__.py": "",
        "baselines/pop.py": "from ..model import a\n",  # side branch: no model
    })
    bad = upward(edges)
    assert "gramc.train.trainer:2 -> gramc.eval.evaluate (train -> eval)" in bad
    assert "gramc.eval.evaluate:2 -> gramc.recipes.train_gramc (eval -> recipes)" in bad
    assert "gramc.errors:1 -> gramc.config (base -> base)" in bad
    assert "gramc.recipes.train_gramc:1 -> gramc.baselines.pop (recipes -> baselines)" in bad
    assert "gramc.baselines.pop:1 -> gramc.model.a (baselines -> model)" in bad
    assert not any(b.startswith("gramc.eval.evaluate:1") for b in bad)  # eval -> train is downward
    assert not any(b.startswith("gramc.model.") for b in bad)
    assert cycles(edges) == [["gramc.eval.evaluate", "gramc.train.trainer"]]  # the hidden train <-> eval one
    assert unexplained_lazy(sources, edges) == ["gramc.train.trainer"]
    with pytest.raises(KeyError, match="gramc.newthing is in no layer"):
        layer_of("gramc.newthing")


def test_a_stated_reason_and_type_only_imports_pass(tmp_path):
    sources, edges = _synthetic(tmp_path, {
        "__init__.py": "",
        "data/__init__.py": "",
        "data/cli.py": "# imported in the command, for start-up time\ndef f():\n    from .readers import read\n",
        "data/readers.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .cli import f\n",
    })
    assert upward(edges) == [] and cycles(edges) == [] and unexplained_lazy(sources, edges) == []
    assert [(e.src, e.dst, e.in_function, e.type_only) for e in edges] == [
        ("gramc.data.cli", "gramc.data.readers", True, False), ("gramc.data.readers", "gramc.data.cli", False, True)]


def test_the_train_layer_knows_no_product():
    """`gramc.train` trains any model with `forward(batch) -> (loss_sum, n_target_tokens)`: what is
    GRAM-C's (its prefix, passages, name, audit, logged scalars) comes in through `TrainParts`."""
    words = re.compile(r"prefix|passage|recent_item|GRAM-?C|GramC\b", re.IGNORECASE)
    bad = []
    for p in sorted((SRC / "gramc" / "train").rglob("*.py")):
        for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
            # the package's own name (gramc, GramcError, `gramc train`) is not the model's
            if words.search(re.sub(r"\bgramc\b|Gramc\w*|gramc\.\w+", "", line)):
                bad.append(f"{p.relative_to(SRC)}:{n}: {line.strip()}")
    assert not bad, "product words in gramc.train:\n" + "\n".join(bad)
