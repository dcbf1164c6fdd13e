"""clean steps: each drops exactly the rows it should, with its reason; kept + rejected = input."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from pydantic import ValidationError

from touchline import engine
from touchline.config import Settings
from touchline.prepare import clean
from touchline.prepare.base import Split
from touchline.prepare.runner import working_events

from .conftest import NOW, load, working


def ids(table) -> list[str]:  # type: ignore[no-untyped-def]
    return sorted(table.message_id.to_pandas().tolist())


def assert_partition(split: Split, total: int) -> None:
    assert split.kept.count().execute() + split.rejected.count().execute() == total


def test_drop_missing_ids_rejects_rows_without_message_id_or_any_identity(con) -> None:  # type: ignore[no-untyped-def]
    events = working(con, [
        {"anonymous_id": "a", "timestamp": "09:00"},
        {"message_id": None, "anonymous_id": "a", "timestamp": "09:00"},
        {"timestamp": "09:00"},
        {"email": "x@y.com", "timestamp": "09:00"},
    ])
    split = clean.drop_missing_ids(events)
    assert ids(split.kept) == ["m1", "m4"]
    got = split.rejected.select("message_id", "reason_code").to_pandas()
    assert sorted(got.reason_code) == ["missing_message_id", "no_identity"]
    assert_partition(split, 4)


def test_clock_skew_uses_received_minus_client_interval_and_flags_large_skew(con) -> None:  # type: ignore[no-untyped-def]
    events = working(con, [
        # client clock 10 minutes slow: event 10 s before the send, received at 10:10:10
        {"anonymous_id": "a", "timestamp": "10:00", "original_timestamp": "10:00:00",
         "sent_at": "10:00:10", "received_at": "10:10:10"},
        {"anonymous_id": "b", "timestamp": "10:00", "original_timestamp": "10:00:00",
         "sent_at": "10:00:10", "received_at": "10:00:11"},
        {"anonymous_id": "c", "timestamp": "10:00", "received_at": "10:00:11"},
    ])
    fixed, audit = clean.correct_clock_skew(events, flag_seconds=300)
    got = fixed.order_by("message_id").timestamp.to_pandas().tolist()
    assert got == [datetime(2025, 3, 3, 10, 10, 0), datetime(2025, 3, 3, 10, 0, 1),
                   datetime(2025, 3, 3, 10, 0, 0)]
    rows = audit.order_by("message_id").to_pandas()
    assert rows.message_id.tolist() == ["m1", "m2"]
    assert rows.reason_code.tolist() == ["large_clock_skew", "clock_skew"]


def test_impossible_and_future_timestamps_are_dropped_within_tolerance(con) -> None:  # type: ignore[no-untyped-def]
    events = working(con, [
        {"anonymous_id": "a", "timestamp": "1970-01-01 00:00:00"},
        {"anonymous_id": "a", "timestamp": None},
        {"anonymous_id": "a", "timestamp": "2099-01-01 00:00:00"},
        {"anonymous_id": "a", "timestamp": "10:05", "received_at": "10:00"},
        {"anonymous_id": "a", "timestamp": "10:20", "received_at": "10:00"},
        {"anonymous_id": "a", "timestamp": "10:00"},
    ])
    first = clean.drop_impossible_timestamps(events, earliest=datetime(2000, 1, 1))
    assert ids(first.rejected) == ["m1", "m2"]
    second = clean.drop_future_timestamps(first.kept, now=NOW, tolerance=timedelta(minutes=10))
    assert ids(second.rejected) == ["m3", "m5"]
    assert ids(second.kept) == ["m4", "m6"]
    assert_partition(first, 6)
    assert_partition(second, 4)


def test_crawler_user_agents_come_from_the_maintained_list() -> None:
    agents = ["Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
              "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
              "Chrome/120.0 Safari/537.36", "python-requests/2.31", "curl/8.0"]
    assert clean.bot_user_agents(agents) == [agents[0], agents[2], agents[3]]



def test_the_bot_check_can_be_extended_narrowed_or_switched_off() -> None:
    agents = ["Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
              "python-requests/2.31", "Acme-Uptime-Monitor/3.0", "Mozilla/5.0 Firefox/120.0"]
    assert clean.bot_user_agents(agents, patterns=[r"uptime-monitor"],
                                 allow=[r"^python-requests/"]) == [agents[0], agents[2]]
    assert clean.bot_user_agents(agents, crawler_list=False, patterns=["UPTIME"]) == [agents[2]]
    assert clean.bot_user_agents(agents, crawler_list=False) == []


def test_a_bot_pattern_that_is_not_a_regex_is_refused_with_its_text() -> None:
    with pytest.raises(ValidationError, match=r"'\[unclosed' is not a regular expression"):
        Settings(bot_user_agent_patterns=["[unclosed"])


def test_epoch_milliseconds_keep_the_fraction_on_both_engines(con) -> None:  # type: ignore[no-untyped-def]
    # DuckDB's EPOCH rounded the fraction when cast: .600 sorted after 01.200
    events = working(con, [{"anonymous_id": "a", "timestamp": f"2025-03-03 10:00:{s}"}
                           for s in ("00.600", "01.200", "59.999")])
    got = events.select(ms=engine.epoch_ms(events.timestamp)).to_pandas().ms.sort_values()
    base = 1740996000000  # 2025-03-03 10:00:00 UTC
    assert (got - base).tolist() == [600, 1200, 59999]


def test_drop_bot_bursts_removes_every_hit_of_a_device_over_the_rate(con) -> None:  # type: ignore[no-untyped-def]
    rows = [{"anonymous_id": "script", "timestamp": f"10:00:{i % 60:02d}"} for i in range(12)]
    rows += [{"anonymous_id": "script", "timestamp": "11:00"},
             {"anonymous_id": "human", "timestamp": "10:00:01"},
             {"anonymous_id": "human", "timestamp": "10:00:30"}]
    split = clean.drop_bot_bursts(working(con, rows), max_per_minute=10)
    assert split.kept.anonymous_id.to_pandas().tolist() == ["human", "human"]
    assert split.rejected.count().execute() == 13
    assert set(split.rejected.reason_code.to_pandas()) == {"bot_behaviour"}


def _burst_ids(con, rows, limit: int) -> list[str]:  # type: ignore[no-untyped-def]
    events = working(con, rows)
    return sorted(clean.burst_devices(events, max_per_minute=limit)
                  .to_pandas()["_device"].tolist())


def test_a_burst_across_a_minute_boundary_is_a_burst_on_both_engines(con) -> None:  # type: ignore[no-untyped-def]
    # 12 hits 5 s apart from 10:00:30: 6 in each calendar minute, 12 within 60 s
    rows = [{"anonymous_id": "script",
             "timestamp": f"10:0{(30 + 5 * i) // 60}:{(30 + 5 * i) % 60:02d}"} for i in range(12)]
    # 11 hits 6 s apart: 0 s .. 60 s; any 60 s (half open) holds at most 10 of them
    rows += [{"anonymous_id": "steady", "timestamp": f"11:0{(6 * i) // 60}:{(6 * i) % 60:02d}"}
             for i in range(11)]
    # exactly the limit within one second
    rows += [{"anonymous_id": "fast_human", "timestamp": "12:00:01"} for _ in range(10)]
    assert _burst_ids(con, rows, limit=10) == ["script"]
    split = clean.drop_bot_bursts(working(con, rows), max_per_minute=10)
    assert split.rejected.count().execute() == 12
    assert split.kept.count().execute() == 21


def test_burst_devices_equal_a_brute_force_sliding_count(con) -> None:  # type: ignore[no-untyped-def]
    """Property: a device is a burst exactly when some [t, t + 60 s) holds more than the limit
    (times in milliseconds: a fraction of a second must not be rounded away). Spark tries
    fewer examples: each costs it a table write and a query of a second or two."""
    start = datetime(2025, 3, 3, 10, 0, 0)

    @hypothesis_settings(max_examples=40 if engine.engine_name(con) == "duckdb" else 8,
                         deadline=None)
    @given(hits=st.lists(st.tuples(st.sampled_from(["a", "b", "c"]),
                                   st.integers(0, 300_000)
                                   | st.sampled_from([0, 600, 59_999, 60_000])),
                         max_size=40),
           limit=st.integers(1, 6))
    def check(hits: list[tuple[str, int]], limit: int) -> None:
        rows = [{"message_id": f"m{i}", "anonymous_id": d,
                 "timestamp": start + timedelta(milliseconds=ms)}
                for i, (d, ms) in enumerate(hits)]
        expected = sorted({d for d, ms in hits
                           if sum(1 for d2, ms2 in hits if d2 == d and ms <= ms2 < ms + 60_000)
                           > limit})
        got = clean.burst_devices(working_events(load(con, rows)),
                                  max_per_minute=limit).to_pandas()
        assert sorted(got["_device"].tolist()) == expected

    check()
