"""The package's imports form no cycle, and the API never imports the web console.

Every import of a ``ccpush`` module counts, at module level or inside a function (a lazy
import is how a cycle hides), except under ``if TYPE_CHECKING:``, which never runs. The
modules are read with ``ast``, not imported.
"""

from __future__ import annotations

import ast
import pkgutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

import ccpush

ROOT = "ccpush"
Graph = Mapping[str, frozenset[str]]


@dataclass(frozen=True, slots=True)
class Module:
    name: str
    path: Path
    is_package: bool


def package_modules(directory: Path, prefix: str = ROOT) -> Iterator[Module]:
    """The package ``prefix`` (at ``directory``) and every module and package below it."""
    yield Module(prefix, directory / "__init__.py", is_package=True)
    for info in pkgutil.iter_modules([str(directory)]):
        name = f"{prefix}.{info.name}"
        if info.ispkg:
            yield from package_modules(directory / info.name, name)
        else:
            yield Module(name, directory / f"{info.name}.py", is_package=False)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement that can run: not the body of ``if TYPE_CHECKING:``."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            for branch in node.orelse:
                yield from _runtime_imports(ast.Module(body=[branch], type_ignores=[]))
        else:
            yield from _runtime_imports(node)


def _absolute(node: ast.ImportFrom, module: Module) -> str:
    """The module a ``from ... import`` names, relative imports resolved."""
    if not node.level:
        return node.module or ""
    package = module.name if module.is_package else module.name.rpartition(".")[0]
    base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
    return f"{base}.{node.module}" if node.module else base


def _ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:end]) for end in range(1, len(parts))]


def imports_of(source: str, module: Module, known: frozenset[str]) -> frozenset[str]:
    """The package's modules that running ``module`` imports: each one named, and the
    packages above it that are not above ``module`` too (importing ``a.b.c`` runs ``a/b``'s
    ``__init__``; a module's own packages are already running when it is)."""
    named: set[str] = set()
    for node in _runtime_imports(ast.parse(source)):
        if isinstance(node, ast.Import):
            named.update(alias.name for alias in node.names)
            continue
        base = _absolute(node, module)
        named.add(base)
        named.update(f"{base}.{alias.name}" for alias in node.names)  # submodules
    own = {*_ancestors(module.name), module.name}
    found = {
        name
        for target in named & known
        for name in (*_ancestors(target), target)
        if name in known and name not in own
    }
    return frozenset(found)


def import_graph(modules: list[Module]) -> dict[str, frozenset[str]]:
    known = frozenset(module.name for module in modules)
    return {
        module.name: imports_of(module.path.read_text(encoding="utf-8"), module, known)
        for module in modules
    }


def cycles(graph: Graph) -> list[list[str]]:
    """One cycle through each strongly connected group of modules, as the chain of
    imports that closes it (``[a, b, a]``); none: the graph has no cycle."""
    found = []
    for group in _strongly_connected(graph):
        start = min(group)
        if len(group) > 1 or start in graph.get(start, ()):
            found.append(_cycle_through(start, group, graph))
    return sorted(found)


def _strongly_connected(graph: Graph) -> list[set[str]]:
    """Tarjan's algorithm, iterative (no recursion limit to meet)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    group = set()
                    while (member := stack.pop()) != node:
                        on_stack.discard(member)
                        group.add(member)
                    on_stack.discard(node)
                    groups.append({*group, node})
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph.get(child, ())))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return groups


def _cycle_through(start: str, group: set[str], graph: Graph) -> list[str]:
    """The shortest chain of imports from ``start`` back to it, within ``group``."""
    came_from: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for child in sorted(graph.get(node, ())):
                if child == start:
                    chain = [node]
                    while chain[-1] != start:
                        chain.append(came_from[chain[-1]])
                    return [*reversed(chain), start]
                if child in group and child not in came_from:
                    came_from[child] = node
                    following.append(child)
        frontier = following
    raise AssertionError(f"{start} is in a cycle but no chain leads back to it")


def reachable(graph: Graph, start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for child in graph.get(todo.pop(), ()):
            if child not in seen:
                seen.add(child)
                todo.append(child)
    return seen


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


@pytest.fixture(scope="module")
def graph() -> dict[str, frozenset[str]]:
    return import_graph(list(package_modules(Path(ccpush.__file__).parent)))


# The package


def test_the_package_has_no_import_cycle(graph: dict[str, frozenset[str]]) -> None:
    assert {"ccpush.app", "ccpush.api.app", "ccpush.web.app", "ccpush.cli"} <= graph.keys()
    assert "ccpush.web" in graph["ccpush.app"]
    found = cycles(graph)
    assert not found, "import cycles:\n" + "\n".join(" -> ".join(chain) for chain in found)


def test_the_api_never_imports_the_web_console(graph: dict[str, frozenset[str]]) -> None:
    api = [name for name in graph if _within(name, "ccpush.api")]
    assert "ccpush.api.routes.records" in api
    leaks = {
        f"{name} -> {reached}"
        for name in api
        for reached in reachable(graph, name)
        if _within(reached, "ccpush.web")
    }
    assert not leaks, "ccpush.api reaches ccpush.web:\n" + "\n".join(sorted(leaks))


# Reading imports

KNOWN = frozenset({"ccpush", "ccpush.a", "ccpush.b", "ccpush.pkg", "ccpush.pkg.c", "ccpush.pkg.d"})


@pytest.mark.parametrize(
    ("source", "imported"),
    [
        ("import ccpush.b", {"ccpush.b"}),
        ("from ccpush.b import thing", {"ccpush.b"}),
        ("from ccpush import b", {"ccpush.b"}),
        ("from ccpush.pkg.c import thing", {"ccpush.pkg", "ccpush.pkg.c"}),
        ("from ccpush.pkg import c, d", {"ccpush.pkg", "ccpush.pkg.c", "ccpush.pkg.d"}),
        ("from . import b", {"ccpush.b"}),
        ("from .pkg.d import thing", {"ccpush.pkg", "ccpush.pkg.d"}),
        ("from ccpush import __version__", set()),
        ("import json\nfrom fastapi import FastAPI", set()),
        ("def lazy():\n    from ccpush.b import thing", {"ccpush.b"}),
        ("class C:\n    def m(self):\n        import ccpush.b", {"ccpush.b"}),
        ("if TYPE_CHECKING:\n    from ccpush.b import Thing", set()),
        ("if typing.TYPE_CHECKING:\n    import ccpush.b", set()),
        ("if TYPE_CHECKING:\n    pass\nelse:\n    from ccpush.b import thing", {"ccpush.b"}),
        ("try:\n    import ccpush.b\nexcept ImportError:\n    pass", {"ccpush.b"}),
    ],
)
def test_imports_are_read_from_the_source(source: str, imported: set[str]) -> None:
    module = Module("ccpush.a", Path("a.py"), is_package=False)
    assert imports_of(source, module, KNOWN) == imported


def test_a_module_does_not_depend_on_the_packages_it_is_in() -> None:
    module = Module("ccpush.pkg.c", Path("pkg/c.py"), is_package=False)
    source = "from ccpush.pkg.d import thing\nfrom ccpush.pkg import d\nfrom .. import a"
    assert imports_of(source, module, KNOWN) == {"ccpush.pkg.d", "ccpush.a"}


# Finding cycles


@pytest.mark.parametrize(
    ("edges", "found"),
    [
        ({"a": {"b"}, "b": {"c"}, "c": set()}, []),
        ({"a": {"b", "c"}, "b": {"c"}, "c": set()}, []),
        ({"a": {"b"}, "b": {"a"}}, [["a", "b", "a"]]),
        ({"a": {"a"}}, [["a", "a"]]),
        ({"x": {"a"}, "a": {"b"}, "b": {"c"}, "c": {"a"}}, [["a", "b", "c", "a"]]),
        ({"a": {"b"}, "b": {"a"}, "c": {"d"}, "d": {"c"}}, [["a", "b", "a"], ["c", "d", "c"]]),
        ({"a": {"b", "c"}, "b": {"d"}, "c": {"a"}, "d": {"a"}}, [["a", "c", "a"]]),
    ],
)
def test_cycles_are_reported_as_chains(edges: dict[str, set[str]], found: list[list[str]]) -> None:
    assert cycles({name: frozenset(targets) for name, targets in edges.items()}) == found


def test_a_lazy_import_back_into_a_package_is_a_cycle() -> None:
    """As ``ccpush.api`` once imported ``ccpush.web`` inside ``create_api``."""
    sources = {
        "ccpush.api": "from ccpush.api.app import create_api",
        "ccpush.api.app": "def create_api():\n    from ccpush.web import create_console",
        "ccpush.web": "from ccpush.web.console import Console",
        "ccpush.web.console": "from ccpush.api.auth import Caller",
        "ccpush.api.auth": "",
    }
    packages = {"ccpush.api", "ccpush.web"}
    known = frozenset(sources)
    graph = {
        name: imports_of(source, Module(name, Path(), name in packages), known)
        for name, source in sources.items()
    }
    assert cycles(graph) == [
        ["ccpush.api", "ccpush.api.app", "ccpush.web", "ccpush.web.console", "ccpush.api"]
    ]
