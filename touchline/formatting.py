"""How a number reads in a terminal table, a report or a chart label: one rule everywhere;
and how a day given as ``--since`` / ``--until`` (or the dashboard's URL) is read."""

from __future__ import annotations

import math
from datetime import date, datetime

from touchline.errors import ConfigError

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


def parse_day(text: str | None, name: str, *, time: bool = False) -> datetime | None:
    """A ``since``/``until`` bound given as ``YYYY-MM-DD`` (UTC): the start of that day,
    ``None`` when not given; ``time``: a time may follow (``2025-03-01T10:30``, ISO 8601), for
    the callers that cut at one. The CLI's options and the dashboard's URL read days by this
    one function; a caller that wants the day takes ``.date()``.

    >>> parse_day("2025-03-01", "--since")
    datetime.datetime(2025, 3, 1, 0, 0)
    >>> parse_day("2025-03-01T10:30", "--since", time=True)
    datetime.datetime(2025, 3, 1, 10, 30)
    """
    if text is None:
        return None
    try:
        if time:
            return datetime.fromisoformat(text)
        day = date.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"{name} {text!r}: expected a date YYYY-MM-DD"
                          + (" (or a date and time, YYYY-MM-DDTHH:MM)" if time else "")
                          ) from None
    return datetime(day.year, day.month, day.day)
