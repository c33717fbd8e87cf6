"""The package's layers keep to their own rooms: imports point down only, a layer reaches
another only through its public package or its ``_internal`` seam, OpenTelemetry stays out
of the api layer, and test helpers stay out of production code."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "llamatelemetry"
# Lower floors never import higher ones; a layer never imports one on its own floor.
FLOORS = {
    "_closing": 0,
    "_fastpath": 0,
    "_running": 0,
    "_nvml": 0,
    "_instrument": 3,  # instrument(): loads the telemetry layer on use
    "_version": 0,
    "api": 1,
    "server": 2,
    "telemetry": 2,
    "bench": 3,
    "testing": 3,
    "cli": 4,
}
# Inside a layer, module groups on a floor above the rest of it: the layer's other modules
# never import the group; only the layer's package re-exports it.
UPPER_GROUPS = {
    f"{PACKAGE}.server._engine": "the inference engine and its measurements",
}


def _modules() -> list[tuple[str, Path]]:
    found = []
    for path in sorted((SRC / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found.append((".".join(parts), path))
    return found


def _imports(module: str, path: Path) -> list[tuple[str, int]]:
    """Every module ``module`` imports (at any depth: functions, TYPE_CHECKING blocks)."""
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names.append((target, node.lineno))
            # "from . import _deadline_backend" imports a module too
            names += [(f"{target}.{alias.name}", node.lineno) for alias in node.names]
    return names


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == PACKAGE else None


def _internal_modules(names: list[tuple[str, int]]) -> list[tuple[str, int]]:
    modules = {m for m, _ in _modules()}
    return [(name, line) for name, line in names if name in modules]


def test_the_package_is_found() -> None:
    layers = {_layer(m) for m, _ in _modules()}
    assert set(FLOORS) <= layers, layers  # a renamed layer must be renamed here too
    assert set(UPPER_GROUPS) <= {m for m, _ in _modules()}  # and so must a renamed group


def test_imports_point_down_through_public_packages_or_seams() -> None:
    wrong = []
    for module, path in _modules():
        here = _layer(module)
        if here is None:  # the root package re-exports the public API
            continue
        for target, line in _internal_modules(_imports(module, path)):
            there = _layer(target)
            if there is None or there == here:
                continue
            where = f"{path.relative_to(SRC)}:{line} imports {target}"
            if FLOORS[there] >= FLOORS[here]:
                wrong.append(f"{where}: an arrow up or sideways ({here} -> {there})")
            elif FLOORS[there] > 0 and target not in (
                f"{PACKAGE}.{there}",
                f"{PACKAGE}.{there}._internal",
            ):
                wrong.append(f"{where}: a private module of {there} (use its _internal seam)")
    assert wrong == []


def _in_group(module: str, group: str) -> bool:
    return module == group or module.startswith(f"{group}.")


@pytest.mark.parametrize("group", sorted(UPPER_GROUPS))
def test_groups_stand_above_the_rest_of_their_layer(group: str) -> None:
    """E.g. process management (``server._manager``, ``_options``, ...) never reaches up
    into the engine that runs on top of it."""
    layer_package = f"{PACKAGE}.{_layer(group)}"
    wrong = [
        f"{path.relative_to(SRC)}:{line} imports {target}"
        for module, path in _modules()
        if _layer(module) == _layer(group)
        and module != layer_package
        and not _in_group(module, group)
        for target, line in _internal_modules(_imports(module, path))
        if _in_group(target, group)
    ]
    assert wrong == []


def _module_edges(module: str, path: Path, modules: set[str]) -> set[str]:
    """The package's modules ``module`` imports, at any depth. ``from . import _deadline_backend``
    is an edge to ``_deadline_backend`` only: a package is imported before any of its modules
    anyway."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            target = node.module or ""
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            for alias in node.names:
                whole = f"{target}.{alias.name}"
                found.add(whole if whole in modules else target)
    return (found & modules) - {module}


def test_the_api_layer_has_no_import_circle() -> None:
    """Its modules stand on floors (``_calls_and_callers`` near the bottom, resources above it,
    the clients on top): no module imports, even inside a function or for typing only, one
    that imports it back."""
    found = {m: p for m, p in _modules() if _layer(m) == "api"}
    edges = {m: _module_edges(m, p, set(found)) for m, p in found.items()}
    floors: dict[str, int] = {}
    visiting: list[str] = []

    def floor(module: str) -> int:
        if module in visiting:
            circle = visiting[visiting.index(module) :] + [module]
            raise AssertionError("an import circle: " + " -> ".join(circle))
        if module not in floors:
            visiting.append(module)
            floors[module] = 1 + max((floor(m) for m in edges[module]), default=-1)
            visiting.pop()
        return floors[module]

    for module in edges:
        floor(module)
    assert floors[f"{PACKAGE}.api._calls_and_callers"] <= 1  # the seam stands on (almost) nothing


def test_the_api_layer_does_not_import_opentelemetry() -> None:
    found = [
        f"{path.relative_to(SRC)}:{line} imports {name}"
        for module, path in _modules()
        if _layer(module) == "api"
        for name, line in _imports(module, path)
        if name.split(".")[0] == "opentelemetry"
    ]
    assert found == []


def test_production_code_does_not_import_the_test_helpers() -> None:
    found = [
        f"{path.relative_to(SRC)}:{line} imports {name}"
        for module, path in _modules()
        if _layer(module) not in ("testing", None)
        for name, line in _imports(module, path)
        if _layer(name) == "testing" and name.startswith(f"{PACKAGE}.")
    ]
    assert found == []


@pytest.mark.parametrize(
    "source, expected",
    [
        ("from ..api._calls_and_callers import Call", "llamatelemetry.api._calls_and_callers"),
        ("from ..api import LlamaCppClient", "llamatelemetry.api"),
        ("from . import _bulk", "llamatelemetry.telemetry._bulk"),
    ],
)
def test_relative_imports_resolve(tmp_path: Path, source: str, expected: str) -> None:
    path = tmp_path / "mod.py"
    path.write_text(source + "\n")
    assert expected in [name for name, _ in _imports("llamatelemetry.telemetry.mod", path)]
