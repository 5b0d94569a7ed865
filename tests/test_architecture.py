"""Dependencies point one way: the import graph of s2s/, read from the source with `ast`,
has no cycle, and no module imports from a layer above its own. Imports inside functions
count (a deferred import is still a dependency); imports under ``if TYPE_CHECKING:`` do
not, as they never run (type hints only). Functions stay under 60 lines."""

from __future__ import annotations

import ast
import itertools
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "s2s"

# low to high: a module may import from its own layer or lower ones
LAYERS: dict[str, int] = {
    "s2s": 0,  # the package itself (__version__)
    "errors": 0,
    "config": 0,
    "progress": 0,
    "atomic": 0,
    "cpu": 0,
    "scores": 0,
    "kernels": 1,
    "data": 2,
    "cells": 2,
    "testing": 3,  # the cell kit runs the core's own state handling (s2s.core.decoding)
    "core": 3,
    "run": 4,
    "train": 4,
    "tasks": 5,
    "inspect": 6,
    "api": 6,  # s2s.load: a run of any task loaded through its task, for users' programs
    "serve": 6,  # s2s serve's app over s2s.api: a library the CLI starts, as inspect is
    "export": 6,  # reads a trained run through its task (s2s.tasks.loading), as inspect does
    "exported": 6,  # runs an exported model; drives translation's streaming (s2s.tasks)
    "cli": 7,
    "__main__": 7,
}
# edges the layers alone allow but the design forbids: the cell contract, which plugins
# import, must not pull in the kernels
FORBIDDEN = {("cells", "kernels")}
# The one documented upward edge: the package root re-exports the public API (`s2s.load`)
# lazily, through a module-level __getattr__, so `import s2s` imports neither it nor torch.
LAZY_PUBLIC_API = {("s2s", "s2s.api")}
# Cycles not yet broken: remove an entry when its cycle is broken; add none.
KNOWN_CYCLE_EDGES: set[tuple[str, str]] = set()
MAX_FUNCTION_LINES = 60


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def area(module: str) -> str:
    """The top-level part of s2s a module belongs to (its layer's key)."""
    return module.split(".")[1] if "." in module else module


def is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and (
        (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING")
        or (isinstance(node.test, ast.Attribute) and node.test.attr == "TYPE_CHECKING")
    )


def runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node of ``tree`` except what sits under ``if TYPE_CHECKING:``."""
    found, stack = [], [tree]
    while stack:
        node = stack.pop()
        found.append(node)
        children = list(ast.iter_child_nodes(node))
        if is_type_checking(node):
            children = list(node.orelse)
        stack.extend(children)
    return found


def imported_modules(node: ast.AST) -> list[str]:
    """The s2s modules an import statement names (``from m import x`` names m.x when x is a
    module)."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        names = [f"{node.module}.{alias.name}" for alias in node.names]
        names = [name if name in MODULES else node.module for name in names]
    else:
        return []
    return [name for name in names if name in MODULES]


def import_edges() -> dict[str, dict[str, str]]:
    """module -> {imported module: 'file:line' of the first import of it}."""
    graph: dict[str, dict[str, str]] = {}
    for module, path in MODULES.items():
        edges: dict[str, str] = {}
        for node in runtime_nodes(ast.parse(path.read_text(encoding="utf-8"))):
            for target in imported_modules(node):
                where = f"{path.relative_to(PACKAGE.parent)}:{node.lineno}"
                if target != module and (target not in edges or where < edges[target]):
                    edges[target] = where
        graph[module] = edges
    return graph


def find_cycle(graph: dict[str, dict[str, str]]) -> list[str] | None:
    """One cycle of the graph as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state and (cycle := visit(module)):
            return cycle
    return None


def test_every_module_has_a_layer() -> None:
    assert sorted({area(m) for m in MODULES} - LAYERS.keys()) == []


def test_the_import_graph_has_no_cycle() -> None:
    graph = import_edges()
    for module, target in KNOWN_CYCLE_EDGES:
        assert graph[module].pop(target, None), f"{module} -> {target} is gone: unlist it"
    for module, target in LAZY_PUBLIC_API:  # runs after `s2s` is imported, on first use
        graph[module].pop(target)
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(
        f"{a} ({graph[a][b]})" for a, b in itertools.pairwise(cycle)
    )


def test_imports_point_down_the_layers() -> None:
    upward = [
        f"{where}: {module} imports {target}"
        for module, edges in import_edges().items()
        for target, where in edges.items()
        if (LAYERS[area(target)] > LAYERS[area(module)] and (module, target) not in LAZY_PUBLIC_API)
        or (area(module), area(target)) in FORBIDDEN
    ]
    assert upward == [], "imports against the layer order:\n" + "\n".join(sorted(upward))


def test_the_walk_sees_deferred_imports_and_skips_type_checking() -> None:
    """The test's own premise: an import in a function counts, one for type hints does not."""
    tree = ast.parse(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    import s2s.cli\n"
        "def f():\n    from s2s.tasks import registry\n"
    )
    seen = [m for node in runtime_nodes(tree) for m in imported_modules(node)]
    assert seen == ["s2s.tasks.registry"]


def test_no_function_is_longer_than_sixty_lines() -> None:
    long = [
        f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name} "
        f"({node.end_lineno - node.lineno + 1} lines)"
        for module, path in MODULES.items()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert long == [], "functions over 60 lines:\n" + "\n".join(long)


def test_the_package_root_imports_the_public_api_only_lazily() -> None:
    """The one upward edge is the lazy re-export: `s2s.api` is imported inside the root's
    module-level __getattr__, never when `import s2s` runs."""
    tree = ast.parse((PACKAGE / "__init__.py").read_text(encoding="utf-8"))
    at_import = [
        name
        for node in tree.body
        if not is_type_checking(node)
        for inner in ast.walk(node)
        if not isinstance(node, ast.FunctionDef)
        for name in imported_modules(inner)
    ]
    assert at_import == []
    assert set(import_edges()["s2s"]) == {target for _, target in LAZY_PUBLIC_API}


def test_tools_use_the_library_not_the_command_line() -> None:
    """Benchmarks and data scripts import what they need from the library layers; the CLI
    only parses arguments, so nothing else may depend on it."""
    tools = PACKAGE.parent / "tools"
    offenders = [
        f"{path.name}:{node.lineno}"
        for path in sorted(tools.glob("*.py"))
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        for name in imported_modules(node)
        if name == "s2s.cli" or name.startswith("s2s.cli.")
    ]
    assert offenders == [], f"tools importing s2s.cli: {offenders}"


def test_every_package_is_listed_for_installation() -> None:
    """pyproject lists packages by name: one left out is missing from a wheel (an editable
    install, as CI's, would not notice)."""
    import tomllib

    pyproject = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text(encoding="utf-8"))
    listed = set(pyproject["tool"]["setuptools"]["packages"])
    found = {module_name(init) for init in PACKAGE.rglob("__init__.py")}
    assert sorted(found - listed) == []
