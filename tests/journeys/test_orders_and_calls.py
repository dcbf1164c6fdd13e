"""Orders, refunds by order id, call talk time and property filters in conversion conditions.

Expectations are computed by hand; every table test runs on DuckDB and Spark (``con``).
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from factories import arrow_table
from ibis.backends import BaseBackend

from touchline import engine, store
from touchline.config import ConversionSpec
from touchline.journeys.conversions import apply_refunds, find_conversions, touch_conversions

T0 = datetime(2026, 3, 1, 9, 0)


def _touchpoints(con: BaseBackend, rows: list[dict]) -> object:
    data = [{"touchpoint_id": f"t{i}", "person_id": "p1", "type": "track",
             "event": "Order Completed", **row,
             "occurred_at": T0 + timedelta(days=row.get("day", 0))}
            for i, row in enumerate(rows)]
    for row in data:
        row.pop("day", None)
    return engine.load_table(con, "touchpoints", arrow_table(store.TOUCHPOINTS, data))


def test_a_refund_naming_its_order_lowers_that_order_not_the_latest(con: BaseBackend) -> None:
    tp = _touchpoints(con, [
        {"day": 1, "revenue": 100.0, "order_id": "O1"},
        {"day": 2, "revenue": 50.0, "order_id": "O2"},
        {"day": 3, "revenue": -30.0, "order_id": "O1"},   # refunds part of O1, not O2
        {"day": 4, "revenue": -10.0},                    # no order named: the latest, O2
        {"day": 5, "revenue": -5.0, "order_id": "O-unknown"},  # unknown order: the latest
    ])
    spec = ConversionSpec(name="purchase", revenue=True, value="revenue")
    found = touch_conversions(tp, spec, {})
    values = apply_refunds(found, tp, "person").order_by("converted_at").value.to_pandas()
    assert values.tolist() == [70.0, 35.0]  # O1 100 - 30; O2 50 - 10 - 5


def test_under_count_first_a_refund_of_an_uncounted_order_changes_nothing(
        con: BaseBackend) -> None:
    _touchpoints(con, [
        {"day": 1, "revenue": 100.0, "order_id": "O1"},
        {"day": 2, "revenue": 50.0, "order_id": "O2"},
        {"day": 3, "revenue": -50.0, "order_id": "O2"},   # O2 is not a conversion: no change
        {"day": 4, "revenue": -20.0},                     # no order: the counted O1
    ])
    first = ConversionSpec(name="purchase", revenue=True, value="revenue", count="first")
    got = find_conversions(con, first, touch_events={}, statuses={}, rates={}).to_pandas()
    assert got.value.tolist() == [80.0]


@pytest.mark.parametrize(("setting", "spec_seconds", "expected"), [
    (60, None, ["t1"]),        # the default: 240 s counts, 30 s and an untimed call do not
    (None, None, ["t0", "t1", "t2"]),  # no threshold: every call
    (60, 20, ["t0", "t1"]),    # the conversion's own threshold wins over the setting
])
def test_a_call_conversion_needs_its_talk_time(con: BaseBackend, setting: int | None,
                                               spec_seconds: int | None,
                                               expected: list[str]) -> None:
    tp = _touchpoints(con, [{"event": "Phone Call", "call_seconds": 30},
                            {"event": "Phone Call", "call_seconds": 240},
                            {"event": "Phone Call"}])
    spec = ConversionSpec(name="call", touches=["call"], call_seconds=spec_seconds)
    found = touch_conversions(tp, spec, {"call": ["Phone Call"]}, call_seconds=setting)
    assert sorted(found.ref.to_pandas()) == expected


def test_a_property_filter_reads_the_events_properties(con: BaseBackend) -> None:
    tp = _touchpoints(con, [{"event": "Signed Up"}, {"event": "Signed Up"},
                            {"event": "Signed Up"}, {"event": "Signed Up"}])
    events = engine.load_table(con, "events", arrow_table(store.EVENTS, [
        {"message_id": "t0", "properties": '{"plan": "pro", "seats": 5, "trial": false}'},
        {"message_id": "t1", "properties": '{"plan": "free", "seats": 5}'},
        {"message_id": "t2", "properties": "not json"},       # never stops the run
        {"message_id": "t3", "properties": '{"plan": "pro", "seats": "5", "trial": false}'},
    ]))
    spec = ConversionSpec(name="pro_signup", events=["Signed Up"],
                          properties={"plan": "pro", "seats": 5, "trial": False})
    found = touch_conversions(tp, spec, {}, events=events)
    assert sorted(found.ref.to_pandas()) == ["t0", "t3"]  # compared as text: 5 is "5"


def test_properties_and_call_seconds_are_checked_at_load() -> None:
    with pytest.raises(ValueError, match="call_seconds applies to"):
        ConversionSpec(name="x", events=["A"], call_seconds=10)
    with pytest.raises(ValueError, match=r"property 'a\.b'"):
        ConversionSpec(name="x", properties={"a.b": "1"})
    assert ConversionSpec(name="x", properties={"plan": "pro"}).properties == {"plan": "pro"}
