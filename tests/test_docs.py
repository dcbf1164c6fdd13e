"""Every example in the docstrings runs (STYLE.md: examples in the docs are tests)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import touchline


def _modules() -> list[str]:
    names = ["touchline"]
    for info in pkgutil.walk_packages(touchline.__path__, prefix="touchline."):
        names.append(info.name)
    return sorted(names)


def _with_examples(name: str) -> bool:
    module = importlib.import_module(name)
    return bool(doctest.DocTestFinder().find(module)) and any(
        test.examples for test in doctest.DocTestFinder().find(module)
    )


@pytest.mark.parametrize("name", [n for n in _modules() if _with_examples(n)])
def test_docstring_examples_run(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"
    assert result.attempted > 0
