"""The layers of docs/design.md §2, read from the source with ``ast``: who may import whom, and no cycles.

Every ``import`` counts — at module top and inside functions — except those under ``if TYPE_CHECKING:``
(annotations only, never executed). Layers, lowest first:

- ``core``: the modules directly in ``ambient_science/`` (operator algebra, families, network, EMA, ...);
- ``training`` and ``sampling``: core, and sampling may read checkpoints from training;
- ``operators`` then ``datasets``: core only (datasets also operators);
- ``metrics``, ``audit``: core, operators, datasets;
- ``pipelines``, ``pretrained``, ``cli`` and the package namespace ``ambient_science/__init__.py``: anything.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

LOW_TO_HIGH = ["core", "training", "sampling", "operators", "datasets", "metrics", "pipelines", "pretrained", "cli"]
ALLOWED: dict[str, set[str]] = {
    "core": {"core"},
    "training": {"core", "training"},
    "sampling": {"core", "sampling", "training"},
    "operators": {"core", "operators"},
    "datasets": {"core", "operators", "datasets"},
    "metrics": {"core", "operators", "datasets", "metrics"},
    "pipelines": set(LOW_TO_HIGH) - {"cli"},
    "pretrained": {"core", "training", "sampling", "operators", "datasets", "pretrained"},
    "cli": set(LOW_TO_HIGH),
    "facade": set(LOW_TO_HIGH),
}


def _module_files() -> dict[str, Path]:
    """Installed module name -> source file, for the three source folders."""
    out = {}
    for folder, package in (("ambient_science", "ambient_science"), ("operators", "ambient_science.operators"),
                            ("datasets", "ambient_science.datasets")):  # fmt: skip
        for path in (ROOT / folder).rglob("*.py"):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([package, *parts])] = path
    return out


def layer_of(module: str) -> str:
    parts = module.split(".")
    if module == "ambient_science":
        return "facade"
    sub = parts[1]
    if sub in ("training", "sampling", "operators", "datasets", "pipelines", "pretrained", "cli", "metrics"):
        return sub
    if sub == "audit":
        return "metrics"
    return "core"


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(path: Path, module: str, known: set[str]) -> dict[str, list[int]]:
    """Project modules imported by ``path`` (resolved to known module names) -> the lines that import them."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: dict[str, list[int]] = {}

    def add(name: str, line: int) -> None:
        while name and name not in known:  # `from a.b import c` where c is a name, not a module
            name = name.rpartition(".")[0]
        if name and name != module:
            found.setdefault(name, []).append(line)

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("ambient_science"):
                    add(alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("ambient_science"):
            for alias in node.names:
                add(f"{node.module}.{alias.name}", node.lineno)
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "import_module":
            if node.args and isinstance(node.args[0], ast.Constant) and str(node.args[0].value).startswith(
                "ambient_science"
            ):
                add(str(node.args[0].value), node.lineno)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, dict[str, list[int]]]:
    files = _module_files()
    known = set(files)
    return {m: imports_of(p, m, known) for m, p in files.items()}


def test_layers_import_only_what_they_may(graph):
    bad = []
    for module, deps in graph.items():
        mine = layer_of(module)
        for dep, lines in deps.items():
            theirs = layer_of(dep)
            if theirs == "facade" and mine != "facade":
                bad.append(f"{module}:{lines} imports the package namespace `ambient_science` (import the module)")
            elif theirs != "facade" and theirs not in ALLOWED[mine]:
                bad.append(f"{module} ({mine}) imports {dep} ({theirs}) at line(s) {lines}")
    assert not bad, "layering violations (docs/design.md §2):\n" + "\n".join(sorted(bad))


def test_no_import_cycles(graph):
    """Module-level cycles (a -> b -> a) hide which part depends on which; packages' ``__init__`` re-exports of
    their own submodules are not cycles."""
    def edges(m: str) -> list[str]:
        return [d for d in graph[m] if not (m.startswith(d + ".") or d.startswith(m + "."))]

    state: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def dfs(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for d in edges(m):
            if state.get(d) == 1:
                cycles.append(" -> ".join([*stack[stack.index(d):], d]))
            elif d not in state:
                dfs(d)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            dfs(m)
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_the_checker_sees_function_level_imports(tmp_path):
    """A self-test: a function-level import of a higher layer is caught."""
    src = tmp_path / "m.py"
    src.write_text("def f():\n    from ambient_science.operators.mri import fft2c\n    return fft2c\n")
    deps = imports_of(src, "ambient_science.linop", {"ambient_science.operators.mri", "ambient_science.linop"})
    assert deps == {"ambient_science.operators.mri": [2]}
    assert layer_of("ambient_science.linop") == "core" and "operators" not in ALLOWED["core"]
