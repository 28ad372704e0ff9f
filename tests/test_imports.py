"""The import graph of data_prep and audiostem: one direction of data (data_prep never imports
audiostem), no circles, and no module importing its own package's ``__init__`` or ``__main__``
(which sit above it). Every import counts, also those inside functions: a circle closed at run
time is still a circle for a reader. Read with ``ast``, nothing is imported."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("data_prep", "audiostem")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules that module ``name`` imports (``from P import X`` counts as an import
    of ``P.X`` when that is a module, else of ``P``)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:      # `import a.b.c` of a non-module c
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, set(modules)) for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
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
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_graph_is_read():
    graph = _graph()
    assert "data_prep.cache_writer" in graph["data_prep.prepare"]
    assert "data_prep.cache" in graph["data_prep.cache_writer"]
    assert "data_prep.config" in graph["data_prep.cache"]         # a relative `from .config import`
    assert "data_prep.cache" in graph["audiostem.data"]           # an absolute one, across packages


def test_data_prep_never_imports_audiostem():
    graph = _graph()
    upward = sorted(f"{m} -> {t}" for m, targets in graph.items() if m.startswith("data_prep")
                    for t in targets if t.split(".")[0] == "audiostem")
    assert upward == []


@pytest.mark.parametrize("package", ["data_prep", "data_prep.sources", "audiostem", "audiostem.stems",
                                     "audiostem.study"])
def test_modules_do_not_import_their_package_init_or_main(package):
    graph = _graph()
    above = {package, f"{package}.__main__"}
    inside = [m for m in graph if m.rpartition(".")[0] == package and m != f"{package}.__main__"]
    upward = sorted(f"{m} -> {t}" for m in inside for t in graph[m] & above)
    assert upward == []


@pytest.mark.parametrize("package", [
    "data_prep",
    "audiostem",
])
def test_no_circles(package):
    cycles = [c for c in _cycles(_graph()) if c[0].split(".")[0] == package]
    assert cycles == []
