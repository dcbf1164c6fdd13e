"""sessionise: 30-minute inactivity, no midnight split, optional campaign split."""

from __future__ import annotations

from datetime import timedelta

import pandas as pd

from touchline.prepare import sessions, standardise

from .conftest import working

GAP = timedelta(minutes=30)


def run(con, rows, **options):  # type: ignore[no-untyped-def]
    touches = sessions.sessionise(sessions.device_ids(working(con, rows)), gap=GAP, **options)
    return touches.order_by(["device_id", "timestamp"])


def test_gap_longer_than_timeout_starts_a_session_but_midnight_does_not(con) -> None:  # type: ignore[no-untyped-def]
    rows = [{"anonymous_id": "ann", "timestamp": t} for t in
            ("09:00", "09:10", "09:40", "10:11", "2025-03-03 23:50:00", "2025-03-04 00:10:00")]
    rows.append({"anonymous_id": "bob", "timestamp": "09:05"})
    got = run(con, rows).to_pandas()
    assert got.session_index.tolist() == [1, 1, 1, 2, 3, 3, 1]
    assert got.is_landing.tolist() == [True, False, False, True, True, False, True]
    assert got.session_id.tolist()[3] == "anon:ann#2"


def test_touches_without_a_device_are_sessionised_on_their_best_id(con) -> None:  # type: ignore[no-untyped-def]
    got = run(con, [{"user_id": "u1", "timestamp": "09:00"},
                   {"email": "a@b.co", "timestamp": "09:00"},
                   {"phone": "+12025550143", "timestamp": "09:00"}]).to_pandas()
    assert sorted(got.device_id) == ["email:a@b.co", "phone:+12025550143", "user:u1"]


def test_new_campaign_starts_a_session_only_when_asked(con) -> None:  # type: ignore[no-untyped-def]
    rows = [{"anonymous_id": "ann", "timestamp": "09:00", "utm_source": "google"},
            {"anonymous_id": "ann", "timestamp": "09:05"},
            {"anonymous_id": "ann", "timestamp": "09:10", "utm_source": "google"},
            {"anonymous_id": "ann", "timestamp": "09:15", "utm_source": "newsletter"}]
    assert run(con, rows).session_index.to_pandas().tolist() == [1, 1, 1, 1]
    split = run(con, rows, new_on_campaign=True).session_index.to_pandas().tolist()
    assert split == [1, 1, 1, 2]


def test_session_table_has_landing_values_duration_and_pages(con) -> None:  # type: ignore[no-untyped-def]
    rows = [{"anonymous_id": "ann", "timestamp": "09:00", "url": "https://shop.com/a",
             "utm_source": "google"},
            {"anonymous_id": "ann", "timestamp": "09:10", "url": "https://shop.com/b"},
            {"anonymous_id": "ann", "type": "track", "event": "Order Completed",
             "timestamp": "09:12", "revenue": 30.0}]
    base, _ = standardise.standardise_urls(working(con, rows))
    touches = sessions.sessionise(sessions.device_ids(base), gap=GAP)
    got = sessions.session_table(touches).to_pandas().iloc[0]
    assert (got.landing_page, got.utm_source, got.event_count, got.pageview_count) == (
        "https://shop.com/a", "google", 3, 2)
    assert (got.duration_seconds, got.conversion_count, got.revenue) == (720.0, 1, 30.0)


def test_numbers_by_parts_of_devices_equal_one_window_over_all(con) -> None:  # type: ignore[no-untyped-def]
    # twelve devices, each with a gap and a campaign switch: split by a hash of the device,
    # every part holds whole devices, so the parts' numbers are exactly the whole one's
    rows = []
    for d in range(12):
        for t, source in (("09:00", "google"), ("09:10", None), ("09:45", "google"),
                          ("09:50", "newsletter"), ("11:00", None)):
            rows.append({"anonymous_id": f"dev{d}", "timestamp": t, "utm_source": source})
    events = sessions.device_ids(working(con, rows))
    for on_campaign, expected in ((False, [1, 1, 2, 2, 3]), (True, [1, 1, 2, 3, 4])):
        keys = sessions.session_keys(events, new_on_campaign=on_campaign)
        whole = sessions.session_numbers(keys, gap=GAP, new_on_campaign=on_campaign)
        parts = [sessions.session_numbers(keys, gap=GAP, new_on_campaign=on_campaign,
                                          part=(k, 3)).to_pandas() for k in range(3)]
        assert sum(len(p) > 0 for p in parts) >= 2, "the hash put every device in one part"
        split = (pd.concat(parts).sort_values("_sid").reset_index(drop=True))
        one = whole.to_pandas().sort_values("_sid").reset_index(drop=True)
        pd.testing.assert_frame_equal(split, one, check_dtype=False)
        by_time = (split.merge(events.select("message_id", "device_id", "timestamp").to_pandas(),
                               left_on="_sid", right_on="message_id")
                   .sort_values(["device_id", "timestamp"]))
        assert by_time.groupby("device_id").session_index.agg(list).tolist() == [expected] * 12
