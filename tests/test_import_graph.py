"""The package's import graph: no cycles, and problems know no solver.

The graph is read from the source (``ast``), counting every ``import`` and ``from ...
import`` of a ``neurosolve`` module, including imports inside functions: a lazy import is
still a dependency.
"""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1] / "neurosolve"


def _module_name(path: pathlib.Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, pathlib.Path]:
    return {_module_name(p): p for p in ROOT.rglob("*.py")}


def _resolve(name: str, modules) -> str | None:
    """The module ``name`` refers to: itself, or its longest prefix that is a module."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def _imports(mod: str, path: pathlib.Path, modules) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    out = set()
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package
                for _ in range(node.level - 1):
                    base = base.rpartition(".")[0]
                stem = f"{base}.{node.module}" if node.module else base
            else:
                stem = node.module or ""
            # "from pkg import name" may import the submodule pkg.name
            targets = [f"{stem}.{a.name}" for a in node.names] + [stem]
        for t in targets:
            if t.startswith("neurosolve"):
                r = _resolve(t, modules)
                if r is not None and r != mod:
                    out.add(r)
    return out


def _graph():
    modules = _modules()
    return {m: _imports(m, p, modules) for m, p in modules.items()}


def _lazy_table_targets(mod: str, path: pathlib.Path) -> set[str]:
    """Modules named in a ``lazy_getattr`` table (string targets)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and node.value.startswith("neurosolve.") and " " not in node.value:
            out.add(node.value)
    return out


def _find_cycle(graph):
    WHITE, GREY, BLACK = 0, 1, 2
    color = dict.fromkeys(graph, WHITE)
    stack = []

    def visit(u):
        color[u] = GREY
        stack.append(u)
        for v in sorted(graph.get(u, ())):
            if color.get(v) == GREY:
                return stack[stack.index(v):] + [v]
            if color.get(v) == WHITE:
                cyc = visit(v)
                if cyc:
                    return cyc
        stack.pop()
        color[u] = BLACK
        return None

    for u in sorted(graph):
        if color[u] == WHITE:
            cyc = visit(u)
            if cyc:
                return cyc
    return None


def _without_package_inits(graph):
    """Drop the edges from a package's ``__init__`` to its own submodules.

    Those are re-exports: ``import neurosolve.solvers.cg`` runs ``solvers/__init__``
    first, so a submodule importing a sibling through the package is not a dependency
    cycle. Every other edge, into or out of an ``__init__``, is kept.
    """
    out = {}
    for u, vs in graph.items():
        path = _modules()[u]
        if path.name == "__init__.py":
            vs = {v for v in vs if not v.startswith(u + ".")}
        out[u] = vs
    return out


def test_graph_is_read():
    graph = _graph()
    assert "neurosolve.core" in graph and "neurosolve.solvers.cg" in graph
    assert "neurosolve.core" in graph["neurosolve.solvers.cg"]


def test_no_import_cycle():
    cycle = _find_cycle(_without_package_inits(_graph()))
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_cycle_detector_finds_a_cycle():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize("mod", sorted(m for m in _modules() if m.startswith("neurosolve.problems")))
def test_problems_import_no_solver(mod):
    graph = _graph()
    bad = sorted(v for v in graph[mod] if v.startswith("neurosolve.solvers"))
    path = _modules()[mod]
    bad += sorted(t for t in _lazy_table_targets(mod, path) if t.startswith("neurosolve.solvers")
                  and path.name == "__init__.py")
    assert not bad, f"{mod} imports {bad}: problems must not know solvers"
