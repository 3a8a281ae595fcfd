"""The package's shape, read from its source with ``ast`` (nothing is imported).

Three rules, each checked once outside ``signout.stores`` and once for it:

- the module import graph has no cycle: every ``import`` and ``from`` statement
  counts, those under ``if TYPE_CHECKING:`` and inside functions too;
- no module imports a private name (one leading underscore) from another signout
  module: what a module shares, it names without one;
- no module is named like a standard library module (``signout/http.py`` read as
  ``http`` wherever ``src/signout`` ends up on ``sys.path``, and confuses readers).

Each test lists every offender, not just the first.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "signout"
STORES = "signout.stores"


@dataclass(frozen=True)
class Edge:
    """One import: ``source`` imports ``target`` at ``line`` (``names``: what it takes from it)."""

    source: str
    target: str
    line: int
    names: tuple[str, ...]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def source_files() -> dict[str, Path]:
    """Every module of the package by its dotted name, ``stores`` included."""
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def in_stores(module: str) -> bool:
    return module == STORES or module.startswith(STORES + ".")


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def imports(module: str, path: Path, modules: set[str]) -> Iterator[Edge]:
    """The imports of one module that reach another signout module, wherever they stand in it."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in modules:
                    yield Edge(module, alias.name, node.lineno, ())
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                origin = f"{base}.{node.module}" if node.module else base
            else:
                origin = node.module or ""
            if origin not in modules:
                continue
            for alias in node.names:
                # "from . import kinds" imports the module signout.kinds; "from .web import Answer"
                # takes a name from signout.web.
                sub = f"{origin}.{alias.name}"
                if sub in modules:
                    yield Edge(module, sub, node.lineno, ())
                else:
                    yield Edge(module, origin, node.lineno, (alias.name,))


def import_graph() -> tuple[dict[str, Path], list[Edge]]:
    files = source_files()
    edges = [edge for module, path in files.items() for edge in imports(module, path, set(files))]
    return files, edges


def cycles(nodes: set[str], edges: list[Edge]) -> list[list[str]]:
    """The strongly connected components with a cycle in them (Tarjan), each sorted."""
    successors: dict[str, set[str]] = {node: set() for node in nodes}
    for edge in edges:
        if edge.source in nodes and edge.target in nodes:
            successors[edge.source].add(edge.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for after in sorted(successors[node]):
            if after not in index:
                visit(after)
                low[node] = min(low[node], low[after])
            elif after in on_stack:
                low[node] = min(low[node], index[after])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in successors[node]:
                found.append(sorted(component))

    for node in sorted(nodes):
        if node not in index:
            visit(node)
    return sorted(found)


def describe(components: list[list[str]], edges: list[Edge], files: dict[str, Path]) -> str:
    lines = []
    for component in components:
        lines.append("cycle among " + ", ".join(component) + ":")
        members = set(component)
        for edge in sorted({(e.source, e.target, e.line) for e in edges if {e.source, e.target} <= members}):
            source, target, line = edge
            lines.append(f"  {files[source].relative_to(PACKAGE.parent.parent)}:{line} imports {target}")
    return "\n".join(lines)


def private_imports(files: dict[str, Path], edges: list[Edge]) -> list[tuple[Edge, str]]:
    return [(edge, name) for edge in edges for name in edge.names if is_private(name) and edge.source != edge.target]


def report_private(offenders: list[tuple[Edge, str]], files: dict[str, Path]) -> str:
    return "\n".join(
        f"{files[e.source].relative_to(PACKAGE.parent.parent)}:{e.line} imports {name} from {e.target}"
        for e, name in offenders
    )


def stdlib_named(files: dict[str, Path]) -> list[str]:
    return [module for module in files if module.rpartition(".")[2] in sys.stdlib_module_names]


# ---- outside signout.stores -------------------------------------------------------


def test_the_package_is_found() -> None:
    files = source_files()
    assert "signout.core" in files
    assert "signout.stores.base" in files


def test_no_import_cycle_outside_stores() -> None:
    files, edges = import_graph()
    outside = {module for module in files if not in_stores(module)}
    found = cycles(outside, edges)
    assert not found, "\n" + describe(found, edges, files)


def test_no_private_name_imported_outside_stores() -> None:
    """Neither side of the import is in signout.stores."""
    files, edges = import_graph()
    offenders = [
        (e, name) for e, name in private_imports(files, edges) if not in_stores(e.source) and not in_stores(e.target)
    ]
    assert not offenders, "\n" + report_private(offenders, files)


def test_no_module_outside_stores_named_like_the_standard_library() -> None:
    offenders = [module for module in stdlib_named(source_files()) if not in_stores(module)]
    assert not offenders


# ---- signout.stores (being restructured separately; issue 12) ---------------------


def test_stores_no_import_cycle() -> None:
    """Every cycle of the whole graph that passes through a module of signout.stores."""
    files, edges = import_graph()
    found = [component for component in cycles(set(files), edges) if any(in_stores(m) for m in component)]
    assert not found, "\n" + describe(found, edges, files)


def test_stores_no_private_name_imported() -> None:
    """Imports that take a private name from, or into, a module of signout.stores."""
    files, edges = import_graph()
    offenders = [(e, name) for e, name in private_imports(files, edges) if in_stores(e.source) or in_stores(e.target)]
    assert not offenders, "\n" + report_private(offenders, files)


def test_stores_no_module_named_like_the_standard_library() -> None:
    offenders = [module for module in stdlib_named(source_files()) if in_stores(module)]
    assert not offenders
