"""One rule for how a number reads: never scientific notation in a table or a report."""

from __future__ import annotations

import math
from datetime import datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from touchline.errors import ConfigError
from touchline.formatting import parse_day, readable_number


@pytest.mark.parametrize(("value", "text"), [
    (None, ""), (math.nan, ""), (math.inf, "∞"), (-math.inf, "-∞"),
    (0.0, "0"), (0.5, "0.5"), (0.123456, "0.1235"), (12.3456, "12.35"), (1234.56, "1,235"),
    (5969.0, "5,969"), (9999.4, "9,999"),
    # what `attribute` and the report printed as 6.458e+04 and 1.107e+05
    (64580.2, "64,580"), (110700.0, "110,700"), (-64580.4, "-64,580"),
    (1.2e-05, "0.000012"),
])
def test_readable_number_by_hand(value: float | None, text: str) -> None:
    assert readable_number(value) == text


@given(st.floats(allow_nan=False, allow_infinity=False, min_value=-1e15, max_value=1e15))
def test_no_number_reads_in_scientific_notation(value: float) -> None:
    text = readable_number(value)
    assert "e" not in text.lower()
    if abs(value) >= 1e4:  # whole from there on, and it reads back as the value rounded
        assert float(text.replace(",", "")) == round(value)


def test_one_function_reads_every_since_and_until() -> None:
    """``--since``/``--until`` of every command and the dashboard's URL: a day is its start;
    ``attribute`` may cut at a time (``time=True``), the others refuse one (``kpis`` and
    ``clv fit`` take the ``.date()``)."""
    assert parse_day(None, "--since") is None
    assert parse_day("2025-03-01", "--since") == datetime(2025, 3, 1)
    assert parse_day("2025-03-01T10:30", "--until", time=True) == datetime(2025, 3, 1, 10, 30)
    assert parse_day("2025-03-01", "--until", time=True) == datetime(2025, 3, 1)
    with pytest.raises(ConfigError, match=r"--since '2025-03-01T10:30': expected a date "
                       r"YYYY-MM-DD$"):
        parse_day("2025-03-01T10:30", "--since")
    with pytest.raises(ConfigError, match=r"--until 'May': expected a date YYYY-MM-DD \(or a "
                       "date and time"):
        parse_day("May", "--until", time=True)
    import touchline.cli.attribution as attribution_cli
    import touchline.cli.metrics as metrics_cli

    assert not hasattr(attribution_cli, "_day") and not hasattr(metrics_cli, "_day")
