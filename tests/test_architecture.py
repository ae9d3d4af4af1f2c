"""The import graph of the apps: no cycles, and dependencies run one way (docs/architecture.md).

    common  <  patients  <  workflows  <  integrations      (config sits above them all)

A module may import its own package and the packages to its left; `config` (settings, the
Celery app, the URLs) may import any of them, and nothing imports `config` (settings are read
through `django.conf.settings`). Every import counts, wherever it is written: at the top of a
module, inside a function, under `if TYPE_CHECKING:`, so an import moved into a function to
dodge a cycle fails here as the cycle itself would.

CAREFLOW_ARCH_ROOT points the test at another checkout (e.g. to see it fail on an older tree).
"""

import ast
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(os.environ.get("CAREFLOW_ARCH_ROOT") or Path(__file__).resolve().parent.parent)

# Lower layers first: a package may import only itself and the packages before it.
LAYERS = ("common", "patients", "workflows", "integrations")
TOP = "config"
PACKAGES = (*LAYERS, TOP)


@dataclass(frozen=True)
class Import:
    source: str  # the importing module, dotted
    target: str  # the imported module of ours, dotted
    where: str  # file:line


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _sources() -> dict[str, Path]:
    modules = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "migrations" in path.relative_to(ROOT).parts:
                continue
            modules[_module_name(path)] = path
    return modules


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The longest prefix of `name` that is one of our modules (`a.b.C` -> `a.b`)."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return None


def _imports(modules: dict[str, Path]) -> Iterator[Import]:
    for source, path in modules.items():
        is_package = path.name == "__init__.py"
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    package = source.split(".") if is_package else source.split(".")[:-1]
                    package = package[: len(package) - (node.level - 1)]
                    base = ".".join([*package, base] if base else package)
                # `from pkg import module` imports the module; `from module import name` not.
                names = [f"{base}.{alias.name}" for alias in node.names]
            for name in names:
                if name.split(".")[0] not in PACKAGES:
                    continue
                target = _resolve(name, modules)
                if target is not None and target != source:
                    where = f"{path.relative_to(ROOT)}:{node.lineno}"
                    yield Import(source, target, where)


def _layer(module: str) -> int:
    package = module.split(".")[0]
    return len(LAYERS) if package == TOP else LAYERS.index(package)


@pytest.fixture(scope="module")
def graph() -> list[Import]:
    modules = _sources()
    assert modules, f"no modules found under {ROOT}"
    return list(_imports(modules))


def _against_the_direction(edge: Import) -> bool:
    source, target = edge.source.split(".")[0], edge.target.split(".")[0]
    if target == TOP:
        return source != TOP  # config's own modules import each other
    return _layer(edge.target) > _layer(edge.source)


def test_dependencies_run_one_way(graph: list[Import]) -> None:
    against = [edge for edge in graph if _against_the_direction(edge)]
    wrong = [f"{edge.where}: {edge.source} imports {edge.target}" for edge in against]
    assert not wrong, (
        f"imports against the direction {' < '.join(LAYERS)} (config above all, imported "
        "by nothing):\n" + "\n".join(wrong)
    )


def _cycles(graph: list[Import]) -> list[list[Import]]:
    """One cycle for each strongly connected set of modules (Tarjan), as the imports on it."""
    edges: dict[str, dict[str, Import]] = {}
    for edge in graph:
        edges.setdefault(edge.source, {}).setdefault(edge.target, edge)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in edges.get(node, {}):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(component)

    for node in sorted(edges):
        if node not in index:
            visit(node)

    cycles = []
    for component in components:
        # The shortest way back from the component's first module to itself (breadth first).
        start = min(component)
        came_from: dict[str, Import] = {}
        frontier = [start]
        while frontier and start not in came_from:
            following = []
            for node in frontier:
                for target, edge in sorted(edges.get(node, {}).items()):
                    if target in component and target not in came_from:
                        came_from[target] = edge
                        following.append(target)
            frontier = following
        path = [came_from[start]]
        while path[-1].source != start:
            path.append(came_from[path[-1].source])
        cycles.append(path[::-1])
    return cycles


def test_no_import_cycles(graph: list[Import]) -> None:
    cycles = _cycles(graph)
    shown = [
        " -> ".join([cycle[0].source, *(edge.target for edge in cycle)])
        + "".join(f"\n    {edge.where}: {edge.source} imports {edge.target}" for edge in cycle)
        for cycle in cycles
    ]
    assert not cycles, f"{len(cycles)} import cycle(s) between modules:\n" + "\n".join(shown)


def test_the_graph_sees_every_kind_of_import(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The test's own premise, on a tree of its own: imports inside functions, relative ones
    and `from package import module` are edges, and a cycle through them is found."""
    (tmp_path / "patients").mkdir()
    (tmp_path / "workflows").mkdir()
    (tmp_path / "patients" / "__init__.py").write_text("")
    (tmp_path / "workflows" / "__init__.py").write_text("")
    (tmp_path / "patients" / "models.py").write_text("def f():\n    from workflows import engine\n")
    (tmp_path / "workflows" / "engine.py").write_text("from . import tasks\n")
    (tmp_path / "workflows" / "tasks.py").write_text("from patients.models import X\n")
    monkeypatch.setattr(__import__(__name__, fromlist=["ROOT"]), "ROOT", tmp_path)
    edges = list(_imports(_sources()))
    assert {(edge.source, edge.target, edge.where) for edge in edges} == {
        ("patients.models", "workflows.engine", "patients/models.py:2"),
        ("workflows.engine", "workflows.tasks", "workflows/engine.py:1"),
        ("workflows.tasks", "patients.models", "workflows/tasks.py:1"),
    }
    [cycle] = _cycles(edges)
    assert [edge.source for edge in cycle] == [
        "patients.models",
        "workflows.engine",
        "workflows.tasks",
    ]
    assert [edge for edge in edges if _against_the_direction(edge)] == [edges[0]]
