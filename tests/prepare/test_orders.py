"""Orders through prepare: the order id read from properties, a repeated order counted once,
zero-revenue orders audited. Hand-computed; both engines (``con``)."""

from __future__ import annotations

from factories import arrow_table, event_rows
from ibis.backends import BaseBackend

from touchline import engine, store
from touchline.prepare import dedupe
from touchline.prepare.runner import working_events

ORDERS = event_rows([
    {"type": "track", "event": "Order Completed", "timestamp": "10:00", "revenue": 100.0,
     "properties": '{"order_id": "O1"}'},
    # the thank-you page reloaded: the same order again, even with another amount
    {"type": "track", "event": "Order Completed", "timestamp": "10:05", "revenue": 80.0,
     "properties": '{"orderId": "O1"}'},
    # a refund names its order and stays
    {"type": "track", "event": "Order Refunded", "timestamp": "11:00", "revenue": -30.0,
     "properties": '{"order_id": "O1"}'},
    # GA4's key, a number; revenue 0: kept and audited
    {"type": "track", "event": "purchase", "timestamp": "12:00", "revenue": 0.0,
     "properties": '{"transaction_id": 42, "duration_seconds": "x"}'},
    # a page view's properties are not read; a call's talk time is
    {"type": "page", "timestamp": "12:30", "properties": '{"order_id": "O9"}'},
    {"type": "track", "event": "Phone Call", "timestamp": "13:00",
     "properties": '{"duration_seconds": 95.6}'},
    {"type": "track", "event": "Order Completed", "timestamp": "14:00", "revenue": 10.0,
     "properties": "{broken"},
])


def test_prepare_reads_the_order_id_and_call_seconds_from_properties(con: BaseBackend) -> None:
    raw = engine.load_table(con, "events", arrow_table(store.EVENTS, ORDERS))
    got = working_events(raw).order_by("message_id").to_pandas()
    assert got.order_id.tolist() == ["O1", "O1", "O1", "42", None, None, None]
    assert got.call_seconds.fillna(-1).tolist() == [-1, -1, -1, -1, -1, 96, -1]


def test_a_repeated_order_counts_once_and_zero_revenue_is_audited(con: BaseBackend) -> None:
    raw = engine.load_table(con, "events", arrow_table(store.EVENTS, ORDERS))
    events = working_events(raw)
    losers = dedupe.order_copies(events)
    split = dedupe.dedupe_orders(events, losers)
    assert sorted(split.kept.message_id.to_pandas()) == ["m1", "m3", "m4", "m5", "m6", "m7"]
    rejected = split.rejected.to_pandas()
    assert rejected[["message_id", "reason_code", "ref", "field"]].values.tolist() == [
        ["m2", "duplicate_order_id", "m1", "order_id"]]
    audit = dedupe.zero_revenue_orders(events).to_pandas()
    assert audit[["message_id", "reason_code", "old_value"]].values.tolist() == [
        ["m4", "zero_revenue_order", "42"]]


def test_a_spam_call_is_no_touch(con: BaseBackend) -> None:
    from touchline.prepare import clean

    rows = event_rows([
        {"type": "track", "event": "Phone Call", "source": "calls", "phone": "+12025550100",
         "properties": '{"call_id": "c1", "outcome": " Spam ", "duration": 4}'},
        {"type": "track", "event": "Phone Call", "source": "calls", "phone": "+12025550101",
         "properties": '{"call_id": "c2", "outcome": "sale", "duration": 300}'},
        # a form whose properties say spam is not a call: kept
        {"type": "track", "event": "Form Submitted", "source": "forms",
         "properties": '{"outcome": "spam"}'},
    ])
    raw = engine.load_table(con, "events", arrow_table(store.EVENTS, rows))
    split = clean.drop_spam_calls(working_events(raw), outcomes=["spam", "robocall"])
    assert sorted(split.kept.message_id.to_pandas()) == ["m2", "m3"]
    assert split.rejected.select("message_id", "reason_code").to_pandas().values.tolist() == [
        ["m1", "spam_call"]]
    assert working_events(raw).order_by("message_id").call_seconds.to_pandas().fillna(
        -1).tolist() == [4, 300, -1]
