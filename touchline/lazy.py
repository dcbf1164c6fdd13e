"""Modules imported on first use, so that ``touchline --help`` stays light.

Why: every CLI command is registered when ``touchline`` starts, and registering the attribution
commands imports the models, whose maths needs :mod:`scipy.sparse`. SciPy costs a second or
more of start-up that ``touchline --help`` or ``touchline ingest`` never uses (issue 19,
start-up). A module that needs SciPy writes ``sparse = lazy_module("scipy.sparse")`` at the
top and uses ``sparse.csr_matrix`` as before; the import happens at the first attribute read.
"""

from __future__ import annotations

import importlib
import types
from typing import Any


class LazyModule(types.ModuleType):
    """Stands for the module ``name``; any attribute read imports it and answers from it."""

    def __getattr__(self, attribute: str) -> Any:
        # called only for attributes this stand-in lacks: all of the real module's
        return getattr(importlib.import_module(self.__name__), attribute)


def lazy_module(name: str) -> Any:
    """A stand-in for the module ``name`` (dotted), imported when first used.

    Typed ``Any``: annotations name the real module's types under ``TYPE_CHECKING``.
    """
    return LazyModule(name)
