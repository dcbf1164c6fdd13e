"""truth.json agrees with counts recomputed from the written files."""

from __future__ import annotations

import csv
import re
from collections import Counter
from datetime import datetime
from itertools import pairwise
from typing import Any

import pyarrow.parquet as pq
import pytest
from sim_kit import Output

from touchline import store
from touchline.simulate import SIMULATED_SKIP, channels
from touchline.simulate.mess import BOT_PATTERN

BOT = re.compile(BOT_PATTERN)
SESSION_GAP_SECONDS = 30 * 60


def _agent(event: dict[str, Any]) -> str:
    context = event["context"]
    return context.get("userAgent") or context.get("user_agent") or ""


def _unique_humans(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen: set[str] = set()
    out = []
    for e in events:
        if e["messageId"] not in seen and not BOT.search(_agent(e)):
            seen.add(e["messageId"])
            out.append(e)
    return out


def _seconds(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def _sessions(events: list[dict[str, Any]]) -> int:
    """A reference sessionisation: a new session after 30 minutes without events."""
    times: dict[str, list[float]] = {}
    for e in events:
        if e["anonymousId"] is not None:
            times.setdefault(e["anonymousId"], []).append(_seconds(e["timestamp"]))
    total = 0
    for stamps in times.values():
        stamps.sort()
        total += 1 + sum(b - a > SESSION_GAP_SECONDS for a, b in pairwise(stamps))
    return total


def _csv(path: Any) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(params=["b2c", "b2b"])
def output(request: pytest.FixtureRequest) -> Output:
    return request.getfixturevalue(request.param)


def test_written_and_unique_event_counts_match_the_file(output: Output) -> None:
    counts = output.truth["counts"]
    ids = Counter(e["messageId"] for e in output.events)
    bots = sum(bool(BOT.search(_agent(e))) for e in output.events)
    assert counts["events_written"] == len(output.lines)
    assert counts["bot_events"] == bots
    assert counts["duplicate_events"] == len(output.lines) - len(ids)
    assert counts["unique_events"] == len(_unique_humans(output.events))


def test_people_devices_and_sessions_match_the_file(output: Output) -> None:
    counts = output.truth["counts"]
    humans = _unique_humans(output.events)
    assert counts["anonymous_ids"] == len({e["anonymousId"] for e in humans} - {None})
    assert counts["identified_persons"] == len({e["userId"] for e in humans} - {None})
    assert counts["sessions"] == _sessions(humans)
    assert counts["persons"] == output.truth["people"]


def test_exact_duplicates_are_byte_identical_lines(output: Output) -> None:
    repeated = Counter(output.lines)
    exact = sum(n - 1 for n in repeated.values())
    assert exact == output.truth["mess"]["duplicate_exact"]


def test_b2c_orders_give_conversions_and_revenue(b2c: Output) -> None:
    orders = {e["messageId"]: e for e in b2c.events if e.get("event") == "Order Completed"}
    revenue = sum(o["properties"].get("revenue", o["properties"].get("total")) for o in
                  orders.values())
    counts = b2c.truth["counts"]
    assert len({o["userId"] for o in orders.values()}) == counts["conversions"]
    assert len(orders) == counts["orders"]
    assert round(revenue, 2) == pytest.approx(counts["revenue"], abs=0.01)


def test_b2b_won_deals_give_conversions_and_revenue(b2b: Output) -> None:
    deals = _csv(b2b.path / "deals.csv")
    won = [d for d in deals if d["status"] == "won"]
    first_won = {d["account_id"] for d in won}
    counts = b2b.truth["counts"]
    assert len(first_won) == counts["conversions"]
    assert len(won) == counts["conversions"] + counts["expansion_deals"]
    assert sum(float(d["amount"]) for d in won) == pytest.approx(counts["revenue"])
    groups = {e["groupId"] for e in b2b.events if e["type"] == "group"}
    assert 0 < len(groups) <= counts["accounts"]


def test_paths_file_sums_to_the_journeys(output: Output) -> None:
    rows = _csv(output.path / "paths.csv")
    counts = output.truth["counts"]
    assert sum(int(r["conversions"]) for r in rows) == counts["conversions"]
    assert sum(int(r["conversions"]) + int(r["nulls"]) for r in rows) == counts["journeys"]
    assert sum(float(r["value"]) for r in rows) == pytest.approx(counts["first_order_revenue"])
    assert all(set(r["path"].split(" > ")) <= set(channels.NAMES) for r in rows)
    assert len(rows) == counts["distinct_paths"]


def test_channel_truth_covers_every_touch(output: Output) -> None:
    truth = output.truth
    per_channel = truth["channels"]
    assert len(per_channel) >= 12
    assert sum(c["touches"] for c in per_channel.values()) == truth["counts"]["touches"]
    assert all(c["conversions_with_channel"] <= truth["counts"]["conversions"]
               for c in per_channel.values())


def test_calls_file_and_call_events_agree(output: Output) -> None:
    calls = _csv(output.path / "calls.csv")
    events = {e["properties"]["call_id"] for e in output.events
              if e.get("event") == "Call Completed"}
    counts, mess = output.truth["counts"], output.truth["mess"]
    assert len(events) == counts["calls"]
    assert len(calls) == counts["calls"] + mess["spam_calls"]
    assert events <= {c["call_id"] for c in calls}


def test_cross_source_form_copies_are_counted(output: Output) -> None:
    copies = {e["messageId"] for e in output.events
              if e.get("event") == "Form Submitted" and e["source"] == "forms"}
    assert len(copies) == output.truth["mess"]["cross_source_forms"]


def test_schema_change_renames_fields_from_its_date(output: Output) -> None:
    renamed = [e for e in output.events if "user_agent" in e["context"]]
    assert len(renamed) == output.truth["mess"]["schema_change_user_agent"]
    assert all(e["timestamp"] >= "2025-07-01" for e in renamed)
    assert any("userAgent" in e["context"] for e in output.events)


def test_parquet_holds_the_same_rows_with_canonical_columns(output: Output) -> None:
    table = pq.read_table(output.path / "events.parquet")
    assert table.column_names == [c.name for c in store.EVENTS.columns]
    assert table.num_rows == len(output.lines)
    assert table.column("message_id").to_pylist() == [e["messageId"] for e in output.events]


@pytest.mark.parametrize("name", ["deals", "calls", "surveys", "spend", "search_console"])
def test_csv_headers_use_canonical_column_names(b2c: Output, name: str) -> None:
    with open(b2c.path / f"{name}.csv", newline="") as handle:
        header = next(csv.reader(handle))
    canonical = [c.name for c in store.TABLES[name].columns]
    assert header == [c for c in canonical if c not in SIMULATED_SKIP]
