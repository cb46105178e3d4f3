"""The library's layers: each imports only the layers below it, and no module imports itself back.

Imports under ``TYPE_CHECKING`` count too: a circle there is still a circle a reader has to follow.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "gpo_vae"
#: Each top-level part of gpo_vae and its rank: a module imports only from ranks at or below its own.
LAYERS = {
    "version": 0,
    "errors": 0,
    "_lazy": 0,
    "stats": 0,
    "config": 1,
    "interrupt": 1,
    "io": 1,
    "runtime": 1,
    "sweeps": 2,
    "data": 2,
    "preprocessing": 3,
    "module": 4,
    "models": 4,  # the old name of module, re-exported for one release
    "grn": 5,
    "leaderboard": 5,
    "wandb_logging": 6,
    "training": 7,
    "report": 7,
    "evaluation": 8,
    "run_config": 9,
    "presets": 10,
    "prediction_settings": 11,
    "pp": 12,
    "model": 12,
}


def _modules() -> dict[str, Path]:
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    return modules


def _imports(path: Path, name: str, modules: dict[str, Path]) -> set[str]:
    found = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            if not base.startswith("gpo_vae"):
                continue
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("gpo_vae")}
    return found - {name}


#: The package root (``gpo_vae/__init__.py``) ranks above every part: its faces load the parts,
#: so a part that imported the root (for its version, say) would close a loop.
ROOT = "<root>"
LAYERS[ROOT] = max(LAYERS.values()) + 1


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ROOT


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(path, name, modules) & set(modules) for name, path in modules.items()}


def test_every_part_of_the_library_has_a_layer(graph: dict[str, set[str]]):
    parts = {_part(name) for name in graph}
    assert parts <= set(LAYERS), f"give {sorted(parts - set(LAYERS))} a rank in LAYERS"


def test_each_layer_imports_only_the_layers_below_it(graph: dict[str, set[str]]):
    upward = []
    for name, targets in graph.items():
        own = _part(name)
        for target in targets:
            other = _part(target)
            if LAYERS[other] > LAYERS[own]:
                upward.append(f"{name} → {target}")
    assert not upward, "imports that reach up a layer:\n" + "\n".join(sorted(upward))


def test_no_module_imports_itself_back(graph: dict[str, set[str]]):
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    assert not circles, f"import circles: {circles}"


def test_pyproject_lists_every_package():
    """pyproject lists the packages (gpo_vae.configs is configs/): a new subpackage must be added."""
    import tomllib

    listed = set(
        tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    found = {".".join(p.parent.relative_to(PACKAGE.parent).parts) for p in PACKAGE.rglob("__init__.py")}
    assert found | {"gpo_vae.configs"} == listed
