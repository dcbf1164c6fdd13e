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

from touchline.attribution import attribute, compare, evaluate
from touchline.config import Settings, load_settings
from touchline.engine import connect
from touchline.warehouse import Warehouse, open

__all__ = ["Settings", "Warehouse", "attribute", "compare", "connect", "evaluate",
           "load_settings", "open"]
__version__ = "0.1.0"
