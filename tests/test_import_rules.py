"""The layering rules, checked over the source's AST: who may import whom (docs/architecture.md)."""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "pipelex_server"


def _modules() -> dict[str, Path]:
    found = {}
    for path in (SRC / PACKAGE).rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


@cache
def imported_names(module: str) -> frozenset[str]:
    """Every name a module imports, at any depth (functions included), except under ``if TYPE_CHECKING:``."""
    path = MODULES[module]
    tree = ast.parse(path.read_text())
    base = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    names: set[str] = set()
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _is_type_checking(node):
            skipped.update(id(child) for child in ast.walk(node))
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                prefix = base[: len(base) - (node.level - 1)]
                source = ".".join([*prefix, *([node.module] if node.module else [])])
            else:
                source = node.module or ""
            names.add(source)
            names.update(f"{source}.{alias.name}" for alias in node.names)
    return frozenset(names)


def internal_imports(module: str) -> set[str]:
    """The project's modules that ``module`` imports (a name resolves to the longest module it falls in)."""
    found = set()
    for name in imported_names(module):
        candidate = name
        while candidate and candidate not in MODULES:
            candidate = candidate.rpartition(".")[0]
        if candidate and candidate != module:
            found.add(candidate)
    return found


def _imports_package(module: str, package: str) -> bool:
    return any(name == package or name.startswith(package + ".") for name in imported_names(module))


def test_only_the_engine_imports_the_runtime():
    offenders = sorted(
        module
        for module in MODULES
        if not module.startswith(f"{PACKAGE}.engine") and any(_imports_package(module, package) for package in ("pipelex", "pipelex_tools"))
    )
    assert offenders == []


def test_the_api_never_reaches_the_run_store():
    offenders = sorted(module for module in MODULES if module.startswith(f"{PACKAGE}.api") and _imports_package(module, f"{PACKAGE}.store"))
    assert offenders == []


def test_the_temporal_workflows_never_load_the_runtime_even_indirectly():
    module = f"{PACKAGE}.temporal.workflows"
    seen: set[str] = set()
    frontier = [module]
    while frontier:
        current = frontier.pop()
        if current in seen:
            continue
        seen.add(current)
        assert not _imports_package(current, "pipelex"), f"{current} (reached from the workflows) imports pipelex"
        frontier.extend(internal_imports(current))
    assert f"{PACKAGE}.engine.runtime" not in seen


def _cycles() -> list[frozenset[str]]:
    """The import graph's strongly connected components of more than one module (Tarjan, iterative)."""
    graph = {module: internal_imports(module) for module in MODULES}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[frozenset[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(frozenset(component))
    return components


def test_no_new_import_cycle():
    new = [sorted(cycle) for cycle in _cycles()]
    assert new == []


def test_the_checker_sees_what_it_checks():
    # the rules are only worth something if the parser finds real imports: spot-check known edges
    assert f"{PACKAGE}.composition" in internal_imports(f"{PACKAGE}.api.deps")
    assert _imports_package(f"{PACKAGE}.engine.runtime", "pipelex")
    assert f"{PACKAGE}.store.runs" in internal_imports(f"{PACKAGE}.runs.lifecycle")


MAX_MODULE_LINES = 400


def test_every_module_is_a_small_room_that_says_what_it_owns():
    too_long, unexplained = [], []
    for module, path in MODULES.items():
        text = path.read_text()
        if len(text.splitlines()) > MAX_MODULE_LINES:
            too_long.append(module)
        if text.strip() and not ast.get_docstring(ast.parse(text)):  # empty package markers need no docstring
            unexplained.append(module)
    assert too_long == [] and unexplained == [], {"over 400 lines": too_long, "no opening docstring": unexplained}
