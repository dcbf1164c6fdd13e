"""The package's shape: imports point one way (STYLE.md), the public surface is curated."""

from __future__ import annotations

import ast
from pathlib import Path
from types import ModuleType

import pytest

import touchline

PACKAGE = Path(touchline.__file__).parent
# layer → layers it may import from (besides itself)
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "config": {"errors"},
    "engine": {"config", "errors"},
    "store": {"config", "errors", "engine"},
    "simulate": {"config", "errors", "store"},
    "collect": {"config", "errors", "engine", "store"},
    "prepare": {"config", "errors", "engine", "store"},
    "journeys": {"config", "errors", "engine", "store", "prepare"},
    "attribution": {"config", "errors", "engine", "store", "journeys"},
    "metrics": {"config", "errors", "engine", "store", "journeys"},
}
TOP = {"pipeline", "demo", "warehouse", "cli", "terminal", "serve", "__init__"}


def _layer(path: Path) -> str:
    return path.relative_to(PACKAGE).parts[0].removesuffix(".py")


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if (isinstance(node, ast.ImportFrom) and node.module
                and node.module.startswith("touchline.")):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.ImportFrom) and node.module == "touchline":
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(
                a.name.split(".")[1] for a in node.names if a.name.startswith("touchline."))
    return found


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if _layer(p) not in TOP and
                 p.relative_to(PACKAGE).parts[-1] != "commands.py")


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_one_way(path: Path) -> None:
    layer = _layer(path)
    assert layer in ALLOWED, f"new top-level module {layer}: add it to ALLOWED with its layer"
    wrong = {m for m in _imports(path) if m != layer and m not in ALLOWED[layer]}
    assert not wrong, f"{path.relative_to(PACKAGE)} ({layer}) imports {sorted(wrong)}"


def test_all_lists_every_public_name_sorted() -> None:
    names = [n for n, v in vars(touchline).items()
             if not n.startswith("_") and not isinstance(v, ModuleType) and n != "annotations"]
    assert touchline.__all__ == sorted(names)
