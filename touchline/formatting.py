"""How a number reads in a terminal table, a report or a chart label: one rule everywhere."""

from __future__ import annotations

import math

#: from this size on, a number is written whole (64,580, not 6.458e+04)
WHOLE_FROM = 1e4


def readable_number(value: float | None) -> str:
    """``value`` with four significant digits while it is small (0.1235, 12.35, 1,235) and
    whole, with thousands separators, from :data:`WHOLE_FROM` on (64,580; 1,107,000): never
    scientific notation, which a marketer reading revenue should not have to decode. An absent
    or not-a-number value is empty; an infinity is ``∞`` / ``-∞``."""
    if value is None or value != value:
        return ""
    if math.isinf(value):
        return "∞" if value > 0 else "-∞"
    if abs(value) >= WHOLE_FROM:
        return f"{value:,.0f}"
    text = f"{value:,.4g}"
    return text if "e" not in text else f"{value:,.6f}".rstrip("0").rstrip(".")
