"""The layout the README's Architecture section draws: packages in layers, each importing only from its own
layer or the ones below, and no import cycle between modules (imports inside functions count too)."""
import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
# Bottom to top. conf and rdd_io (the typed config, records and storage) import no other package.
LAYERS = [{"conf", "rdd_io"}, {"distributed"}, {"models"}, {"jobs"}, {"bench"}]
LEVEL = {package: level for level, packages in enumerate(LAYERS) for package in packages}


def imports(path: Path) -> set[str]:
    """Project modules `path` imports (`from rdd_io import storage` names rdd_io.storage)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [f"{node.module}.{alias.name}" for alias in node.names]
            found.update(n if module_path(n) else node.module for n in names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name.split(".")[0] in LEVEL and module_path(name)}


def module_path(name: str) -> Path | None:
    base = REPO.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.exists():
            return path
    return None


def graph() -> dict[str, set[str]]:
    modules = {}
    for package in LEVEL:
        for path in sorted((REPO / package).glob("*.py")):
            name = package if path.stem == "__init__" else f"{package}.{path.stem}"
            modules[name] = imports(path) - {name}
    return modules


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
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
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle():
    assert cycles(graph()) == []


def test_each_package_imports_only_its_own_layer_or_lower():
    upward = [f"{module} imports {target}" for module, targets in graph().items() for target in sorted(targets)
              if LEVEL[target.split(".")[0]] > LEVEL[module.split(".")[0]]
              or (LEVEL[target.split(".")[0]] == LEVEL[module.split(".")[0]]
                  and target.split(".")[0] != module.split(".")[0])]
    assert upward == []


def test_the_checks_see_a_cycle_and_an_upward_import():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert "jobs.redshift_tables" in graph()["jobs.redshift_figures"]  # function-level and top-level alike
    assert "rdd_io.landcover_patches" in graph()["jobs.redshift_roles"]  # an import inside a function
