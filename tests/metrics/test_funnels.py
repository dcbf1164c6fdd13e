"""Funnels by hand: ordered, strict and any order; the window's edge; time between steps;
first-touch breakdowns. Both engines."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from factories import arrow_table
from ibis.backends import BaseBackend

from touchline import engine, store
from touchline.errors import ConfigError
from touchline.metrics.commands import parse_window
from touchline.metrics.funnels import funnel

T0 = datetime(2026, 3, 1)
STEPS = ["Viewed", "Form Submitted", "Order Completed"]
A, B, C, X = (*STEPS, "Other")
HOUR, DAY = timedelta(hours=1), timedelta(days=1)
TOUCHES = {  # person: [(event, time after T0)]
    "p1": [(A, 0 * HOUR), (B, 1 * HOUR), (C, 2 * HOUR)],
    "p2": [(A, 0 * HOUR), (X, HOUR / 2), (B, 1 * HOUR)],  # another touch between A and B
    "p3": [(B, 0 * HOUR), (A, 1 * HOUR), (C, 2 * HOUR)],  # B before A
    "p4": [(A, 0 * HOUR), (B, DAY)],  # exactly at the window's edge
    "p5": [(A, 0 * HOUR), (B, DAY + timedelta(seconds=1))],  # one second past it
}
CHANNELS = {"p1": "Email", "p2": "Email", "p3": "Direct", "p4": "Direct", "p5": "Direct"}


@pytest.fixture(scope="module")
def warehouse(module_con: BaseBackend) -> BaseBackend:
    """Loaded once per engine: every test here only reads it."""
    con = module_con
    rows = [{"touchpoint_id": f"{p}-{i}", "person_id": p, "event": event, "type": "track",
             "occurred_at": T0 + offset, "session_id": f"{p}#1"}
            for p, touches in TOUCHES.items() for i, (event, offset) in enumerate(touches)]
    engine.load_table(con, "touchpoints", arrow_table(store.TOUCHPOINTS, rows))
    sessions = [{"session_id": f"{p}#1", "person_id": p, "started_at": T0, "channel": c}
                for p, c in CHANNELS.items()]
    engine.load_table(con, "sessions", arrow_table(store.SESSIONS, sessions))
    return con


def _entered(frame: object) -> list[int]:
    return frame.entered.tolist()  # type: ignore[attr-defined]


def test_ordered_funnel_with_a_window_counts_the_edge_in(warehouse: BaseBackend) -> None:
    got = funnel(warehouse, STEPS, window=DAY).to_pandas()
    assert _entered(got) == [5, 3, 1]  # B: p1, p2, p4 (at the edge); not p3 (B first), p5
    assert got.converted.tolist()[:2] == [3, 1]
    assert got.dropped.tolist()[:2] == [2, 2]
    assert got.from_previous.tolist()[1:] == pytest.approx([3 / 5, 1 / 3])
    assert got.from_first.tolist() == pytest.approx([1, 3 / 5, 1 / 5])
    # A → B took 1 h, 1 h and 24 h
    assert got["median"][1] == pytest.approx(3600)
    assert got.p25[1] == pytest.approx(3600)
    assert got["median"][2] == pytest.approx(3600)  # p1's B → C
    assert _entered(funnel(warehouse, STEPS).to_pandas()) == [5, 4, 1]  # no window: p5 too


def test_strict_funnel_needs_the_very_next_touch(warehouse: BaseBackend) -> None:
    got = funnel(warehouse, STEPS, window=DAY, mode="strict").to_pandas()
    assert _entered(got) == [5, 2, 1]  # p2 had another touch between A and B


def test_any_order_funnel(warehouse: BaseBackend) -> None:
    got = funnel(warehouse, STEPS, window=DAY, mode="any").to_pandas()
    assert _entered(got) == [5, 4, 2]  # p3's B before A counts; p5 is one second too late
    two_hours = funnel(warehouse, STEPS, window=2 * HOUR, mode="any").to_pandas()
    assert _entered(two_hours) == [5, 3, 2]  # p1 and p3 span exactly 2 h: in


def test_breakdown_by_first_touch_channel_keeps_steps_nobody_reached(
        warehouse: BaseBackend) -> None:
    got = funnel(warehouse, STEPS, window=DAY, by="channel").to_pandas()
    by_group = {g: _entered(rows) for g, rows in got.groupby("group")}
    assert by_group == {"Direct": [3, 1, 0], "Email": [2, 2, 1]}


def test_bad_funnels_say_why(warehouse: BaseBackend) -> None:
    with pytest.raises(ConfigError, match="at least two steps"):
        funnel(warehouse, [A])
    with pytest.raises(ConfigError, match="mode 'loose'"):
        funnel(warehouse, STEPS, mode="loose")
    with pytest.raises(ConfigError, match="breakdown 'chanel'"):
        funnel(warehouse, STEPS, by="chanel")
    assert parse_window("30d") == timedelta(days=30)
    assert parse_window("90m") == timedelta(minutes=90)
    with pytest.raises(ConfigError, match=r"e\.g\. 30d"):
        parse_window("a month")
