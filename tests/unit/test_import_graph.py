"""The package's shape: no runtime import cycle between qemu_panthor modules, no module over
700 lines.

The graph is built from the source with ``ast``, at module granularity, from the imports that
run when a module is imported: top-level statements (and the bodies of top-level ``if`` /
``try`` / ``with`` / class statements), not ``if TYPE_CHECKING:`` blocks and not imports
inside functions. Importing ``a.b.c`` also imports the packages ``a`` and ``a.b`` (their
``__init__``), except those the importing module is itself inside (already being imported);
``from p import x`` imports the submodule ``p.x`` when there is one, else only ``p``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import qemu_panthor

ROOT = Path(qemu_panthor.__file__).resolve().parent
PACKAGE = ROOT.name
MAX_LINES = 700


def _modules() -> dict[str, Path]:
    """Dotted name -> file of every module of the package (packages by their __init__)."""
    out: dict[str, Path] = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = (PACKAGE, *path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_imports(body: list[ast.stmt]) -> Iterator[ast.Import | ast.ImportFrom]:
    """Import statements executed when the module body runs (functions excluded)."""
    for node in body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.If):
            if not _is_type_checking(node.test):
                yield from _runtime_imports(node.body)
            yield from _runtime_imports(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody):
                yield from _runtime_imports(block)
            for handler in node.handlers:
                yield from _runtime_imports(handler.body)
        elif isinstance(node, ast.With | ast.ClassDef):
            yield from _runtime_imports(node.body)


def _with_packages(target: str, importer: str) -> set[str]:
    """``target`` plus the packages above it that importing it runs, within the package."""
    parts = target.split(".")
    out = set()
    for i in range(1, len(parts) + 1):
        name = ".".join(parts[:i])
        if name in MODULES and not importer.startswith(name + "."):
            out.add(name)
    out.discard(importer)
    return out


def _resolve(importer: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = importer.split(".")
    if not _is_package(importer):
        base = base[:-1]  # a module's relative imports start from its package
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules importing it runs."""
    graph: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        edges: set[str] = set()
        tree = ast.parse(path.read_text(), str(path))
        for node in _runtime_imports(tree.body):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                src = _resolve(name, node)
                targets = [src]
                targets += [f"{src}.{a.name}" for a in node.names if f"{src}.{a.name}" in MODULES]
            for target in targets:
                if target == PACKAGE or target.startswith(PACKAGE + "."):
                    edges |= _with_packages(target, name)
        graph[name] = edges
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

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
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in graph.get(v, ()):
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _path(graph: dict[str, set[str]], comp: list[str]) -> list[str]:
    """One concrete cycle inside a strongly connected component, for the failure message."""
    members = set(comp)
    start = comp[0]
    prev: dict[str, str] = {}
    todo = [start]
    while todo:
        v = todo.pop(0)
        for w in sorted(graph[v] & members):
            if w == start:
                cycle = [v]
                while cycle[-1] != start:
                    cycle.append(prev[cycle[-1]])
                return [start, *reversed(cycle[:-1]), start]
            if w not in prev:
                prev[w] = v
                todo.append(w)
    return comp


def test_the_checker_sees_relative_and_package_imports() -> None:
    g = import_graph()
    assert "qemu_panthor.mmu.engine" in g["qemu_panthor.mmu"]  # from .engine import Mmu
    assert "qemu_panthor.mmu.regs" in g["qemu_panthor.mmu.engine"]  # from . import regs
    assert "qemu_panthor.exceptions" in g["qemu_panthor.mmu.engine"]  # from .. import exc
    assert "qemu_panthor.mmu" in g["qemu_panthor.gpu.device"]  # from ..mmu import Mmu
    assert "qemu_panthor.mmu" not in g["qemu_panthor.mmu.engine"]  # its own package
    assert "qemu_panthor.mmu.engine" not in g["qemu_panthor.mmu.introspect"]  # TYPE_CHECKING
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_no_runtime_import_cycle() -> None:
    graph = import_graph()
    cycles = find_cycles(graph)
    assert not cycles, "runtime import cycles:\n" + "\n".join(
        " -> ".join(_path(graph, comp)) for comp in cycles
    )


def test_no_module_over_700_lines() -> None:
    long = {name: n for name, path in MODULES.items()
            if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"
