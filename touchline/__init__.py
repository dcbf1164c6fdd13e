"""touchline: self-hosted customer-journey tracking and multi-touch attribution.

The curated public surface: open a warehouse, then attribute and compare paths::

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

__all__ = ["Settings", "attribute", "compare", "connect", "evaluate", "load_settings"]
__version__ = "0.1.0"
