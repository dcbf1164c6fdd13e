"""touchline: self-hosted customer-journey tracking and multi-touch attribution.

The curated public surface: open a warehouse (:func:`open`) and read its journeys, credits,
funnels, paths and timelines as Ibis tables, or attribute and compare paths::

    >>> import touchline
    >>> from touchline.attribution import PathSet
    >>> paths = PathSet.from_lists([["search", "email"], ["email"]], conversions=[1, 1])
    >>> touchline.attribute(paths, "linear")[["channel", "conversions"]]
      channel  conversions
    0   email          1.5
    1  search          0.5
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from touchline.attribution import attribute, compare, evaluate
    from touchline.config import Settings, load_settings
    from touchline.engine import connect
    from touchline.warehouse import Warehouse, open

#: each public name and the module it lives in, imported on first use (PEP 562): ``import
#: touchline`` and ``touchline --help`` then load neither scipy (the attribution models) nor
#: the engines, which took seconds before any command ran
_LAZY = {"attribute": "touchline.attribution", "compare": "touchline.attribution",
         "evaluate": "touchline.attribution", "Settings": "touchline.config",
         "load_settings": "touchline.config", "connect": "touchline.engine",
         "Warehouse": "touchline.warehouse", "open": "touchline.warehouse"}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'touchline' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value

__all__ = ["Settings", "Warehouse", "attribute", "compare", "connect", "evaluate",
           "load_settings", "open"]
__version__ = "0.1.0"
