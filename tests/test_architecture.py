"""The package's layers (docs/architecture.md): no import circle, and a registry that imports no family.

Imports are read with ``ast`` from the source, every ``import`` statement counted (also those
inside functions, which only defer a cycle to run time); imports under ``if TYPE_CHECKING:``
are for type checkers only and are left out.
"""

from __future__ import annotations

import ast
from pathlib import Path

import lttoolkit

PACKAGE = Path(lttoolkit.__file__).parent
FAMILIES = ("samplers", "losses", "schedules", "backbones", "methods", "data")


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for stmt in node.body:
                skipped.update(id(n) for n in ast.walk(stmt))
    return skipped


def import_graph(root: Path) -> dict[str, set[str]]:
    """module -> the package's modules it imports (a name imported from a package counts as the package)."""
    files = {_module_name(p, root): p for p in sorted(root.rglob("*.py"))}
    top = root.name

    def resolve(name: str) -> str | None:
        while name and name not in files:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        skipped = _type_checking_nodes(tree)
        deps: set[str | None] = set()
        for node in ast.walk(tree):
            if id(node) in skipped:
                continue
            if isinstance(node, ast.Import):
                deps.update(resolve(a.name) for a in node.names if a.name.split(".")[0] == top)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    name = ".".join(base + ([node.module] if node.module else []))
                else:
                    name = node.module or ""
                if name.split(".")[0] != top:
                    continue
                for alias in node.names:
                    full = f"{name}.{alias.name}"
                    deps.add(full if full in files else resolve(name))
        deps.discard(None)
        deps.discard(module)
        graph[module] = {d for d in deps if d is not None}
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def test_the_package_has_no_import_circle():
    cycles = find_cycles(import_graph(PACKAGE))
    assert not cycles, f"import circles (break each by moving the shared piece to the lower floor): {cycles}"


def test_the_registry_imports_no_component_family():
    graph = import_graph(PACKAGE)
    offending = {
        module: sorted(d for d in deps if d.split(".")[1] in FAMILIES)
        for module, deps in graph.items()
        if module.startswith("lttoolkit.registry")
    }
    offending = {m: d for m, d in offending.items() if d}
    assert not offending, f"the registry is the ground floor; inject what is family-specific instead: {offending}"
    assert "lttoolkit.registry._registry" in graph  # the walk saw the registry


def test_the_ground_floor_imports_nothing_above_it():
    graph = import_graph(PACKAGE)
    for module in ("lttoolkit.errors", "lttoolkit._constants", "lttoolkit._introspect", "lttoolkit.registry._entry",
                   "lttoolkit.registry._spec"):
        above = sorted(d for d in graph[module] if d not in {"lttoolkit.errors"})
        assert not above, f"{module} imports {above}"


def test_the_checks_find_a_circle_and_a_family_import(tmp_path):
    # The checks above can fail: a small package with a circle through a deferred import.
    pkg = tmp_path / "lttoolkit"
    (pkg / "registry").mkdir(parents=True)
    (pkg / "backbones").mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "registry" / "__init__.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from lttoolkit.methods import x\n"
        "def fallback():\n    from lttoolkit.backbones._timm import f\n"
    )
    (pkg / "backbones" / "__init__.py").write_text("")
    (pkg / "backbones" / "_timm.py").write_text("from lttoolkit.registry import accepted_options\n")
    graph = import_graph(pkg)
    assert graph["lttoolkit.registry"] == {"lttoolkit.backbones._timm"}
    assert find_cycles(graph) == [["lttoolkit.backbones._timm", "lttoolkit.registry"]]


def test_the_architecture_page_names_where_each_new_piece_goes():
    text = (PACKAGE.parent / "docs" / "architecture.md").read_text(encoding="utf-8")
    for piece in ("sampler", "loss", "schedule", "backbone", "method", "dataset"):
        assert f"new {piece}" in text.lower(), f"docs/architecture.md does not say where a new {piece} goes"
    assert "docs/architecture.md" in (PACKAGE.parent / "README.md").read_text(encoding="utf-8")
