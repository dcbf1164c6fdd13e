"""dedupe: exact copies and the same touch from two systems become one row with a pointer."""

from __future__ import annotations

import hashlib
import uuid

import ibis

from touchline import engine
from touchline.prepare import dedupe, standardise

from .conftest import working

FORM = {"type": "track", "event": "Form Submitted"}


def numbered(con, rows):  # type: ignore[no-untyped-def]
    """Rows as the working table stored with its row id, as the dedupe_exact step stores it."""
    return engine.materialise_with_row_ids(con, f"_test_numbered_{uuid.uuid4().hex[:8]}",
                                           working(con, rows), dedupe.ROW)


def test_exact_duplicates_keep_the_earliest_copy_and_point_to_it(con) -> None:  # type: ignore[no-untyped-def]
    events = numbered(con, [
        {"message_id": "x", "anonymous_id": "a", "timestamp": "09:00:05", "url": "late"},
        {"message_id": "x", "anonymous_id": "a", "timestamp": "09:00:00", "url": "first"},
        {"message_id": "x", "anonymous_id": "a", "timestamp": "09:00:10", "url": "later"},
        {"message_id": "y", "anonymous_id": "a", "timestamp": "09:01"},
    ])
    split = dedupe.dedupe_exact(events)
    kept = split.kept.order_by("message_id").select("message_id", "url").to_pandas()
    assert kept.values.tolist() == [["x", "first"], ["y", None]]
    rejected = split.rejected.to_pandas()
    assert sorted(rejected.url) == ["late", "later"]
    assert set(rejected.ref) == {"x"} and set(rejected.reason_code) == {"duplicate_message_id"}
    assert dedupe.ROW not in split.kept.columns and dedupe.ROW not in split.rejected.columns


def test_identical_copies_of_a_message_are_one_kept_row_and_the_rest_rejected(con) -> None:  # type: ignore[no-untyped-def]
    """A retried batch repeats a row exactly: the order columns tie on every copy, and only
    the row id tells them apart. One copy stays, every other one is rejected, none is lost."""
    copy = {"message_id": "x", "anonymous_id": "a", "user_id": "u", "timestamp": "09:00",
            "received_at": "09:00:01", "url": "https://a.example/", "event": "Signed Up",
            "type": "track"}
    events = numbered(con, [copy, copy, copy, {**copy, "message_id": "y"}, copy])
    split = dedupe.dedupe_exact(events)
    kept = split.kept.to_pandas()
    assert sorted(kept.message_id) == ["x", "y"]
    rejected = split.rejected.to_pandas()
    assert rejected.message_id.tolist() == ["x"] * 3 and set(rejected.ref) == {"x"}


def test_copies_tied_on_the_time_are_ordered_by_receipt_then_recorder_then_page(con) -> None:  # type: ignore[no-untyped-def]
    """The kept copy is the first by ``COPY_ORDER``: the earliest time, then the earliest
    receipt, then the recording system, the URL and the referrer (alphabetically; a missing
    value last), whatever the rows' order in the input."""
    ts = {"anonymous_id": "a", "timestamp": "09:00"}
    events = numbered(con, [
        # earliest receipt wins over an earlier-sorting system and URL
        {**ts, "message_id": "r", "received_at": "09:00:02", "source": "crm", "url": "a"},
        {**ts, "message_id": "r", "received_at": "09:00:01", "source": "web", "url": "z"},
        # same receipt: the system first
        {**ts, "message_id": "s", "received_at": "09:00:01", "source": "web", "url": "a"},
        {**ts, "message_id": "s", "received_at": "09:00:01", "source": "crm", "url": "z"},
        # same system: the URL, then the referrer
        {**ts, "message_id": "u", "url": "https://b.example/", "referrer": "a"},
        {**ts, "message_id": "u", "url": "https://a.example/", "referrer": "z"},
        {**ts, "message_id": "u", "url": "https://a.example/", "referrer": "y"},
        # an earlier time beats everything after it
        {"anonymous_id": "b", "message_id": "t", "timestamp": "09:00:01",
         "received_at": "09:00:00", "source": "crm"},
        {"anonymous_id": "z", "message_id": "t", "timestamp": "09:00:00",
         "received_at": "09:05:00", "source": "web"},
    ])
    split = dedupe.dedupe_exact(events)
    kept = split.kept.order_by("message_id").select(
        "message_id", "recorded_by", "url", "referrer", "anonymous_id").to_pandas()
    assert kept.values.tolist() == [
        ["r", "web", "z", None, "a"],
        ["s", "crm", "z", None, "a"],
        ["t", "web", None, None, "z"],
        ["u", "web", "https://a.example/", "y", "a"],
    ]
    assert split.rejected.count().to_pyarrow().as_py() == 5


def test_same_form_from_two_systems_within_tolerance_is_one_touch(con) -> None:  # type: ignore[no-untyped-def]
    events = working(con, [
        {**FORM, "anonymous_id": "a", "timestamp": "11:05", "email": "ann@acme.com"},
        {**FORM, "user_id": "u1", "timestamp": "11:06", "email": "ann@acme.com", "source": "crm"},
        {**FORM, "user_id": "u1", "timestamp": "13:00", "email": "ann@acme.com", "source": "crm"},
        {**FORM, "anonymous_id": "a", "timestamp": "11:07", "email": "ann@acme.com"},
        {"type": "track", "event": "Call", "timestamp": "12:00", "phone": "+12025550143",
         "source": "calls"},
        {"type": "track", "event": "Call", "timestamp": "12:02", "phone": "+12025550143",
         "source": "crm"},
    ])
    events, _ = standardise.standardise_urls(events)
    losers = dedupe.cross_source_losers(
        events, link_seconds={"Form Submitted": 600, "Call": 300},
        priority=["web", "calls", "crm"])
    split = dedupe.link_cross_source(events, losers)
    assert sorted(split.kept.message_id.to_pandas()) == ["m1", "m3", "m4", "m5"]
    got = split.rejected.order_by("message_id").select("message_id", "ref").to_pandas()
    assert got.values.tolist() == [["m2", "m1"], ["m6", "m5"]]


def test_a_copy_that_carries_only_the_hashed_email_or_phone_is_the_same_touch(con) -> None:  # type: ignore[no-untyped-def]
    """An export or an ad platform's lead form names the person by SHA-256 only: its copy of
    a form fill is still the web copy's touch; another person's hash is another touch."""
    ann = hashlib.sha256(b"ann@acme.com").hexdigest()
    bob = hashlib.sha256(b"bob@acme.com").hexdigest()
    phone = hashlib.sha256(b"+12025550143").hexdigest()
    events = working(con, [
        {**FORM, "anonymous_id": "a", "timestamp": "11:05", "email": "ann@acme.com"},
        {**FORM, "timestamp": "11:06", "email_sha256": ann, "source": "ads"},
        {**FORM, "timestamp": "11:06", "email_sha256": bob, "source": "ads"},
        {"type": "track", "event": "Call", "timestamp": "12:00", "phone": "+12025550143",
         "source": "calls"},
        {"type": "track", "event": "Call", "timestamp": "12:01", "phone_sha256": phone,
         "source": "crm"},
    ])
    events, _ = standardise.standardise_urls(events)
    losers = dedupe.cross_source_losers(
        events, link_seconds={"Form Submitted": 600, "Call": 300},
        priority=["web", "calls", "ads", "crm"])
    split = dedupe.link_cross_source(events, losers)
    assert sorted(split.kept.message_id.to_pandas()) == ["m1", "m3", "m4"]
    got = split.rejected.order_by("message_id").select("message_id", "ref").to_pandas()
    assert got.values.tolist() == [["m2", "m1"], ["m5", "m4"]]


def test_a_touch_seen_by_three_systems_points_every_copy_at_the_kept_one(con) -> None:  # type: ignore[no-untyped-def]
    events = working(con, [
        {**FORM, "message_id": "m9", "anonymous_id": "a", "timestamp": "11:05",
         "email": "ann@acme.com"},
        {**FORM, "message_id": "m1", "timestamp": "11:06", "email": "ann@acme.com",
         "source": "forms"},
        {**FORM, "message_id": "m5", "timestamp": "11:07", "email": "ann@acme.com",
         "source": "crm"},
        # a chain: the chat copy shares only the phone with the CRM copy, which the web row
        # does not have; it is still the web row's touch
        {**FORM, "message_id": "m7", "timestamp": "11:08", "phone": "+12025550143",
         "source": "chat"},
    ])
    events = events.mutate(phone=ibis.ifelse(events.message_id == "m5", "+12025550143",
                                             events.phone))
    events, _ = standardise.standardise_urls(events)
    losers = dedupe.cross_source_losers(
        events, link_seconds={"Form Submitted": 600}, priority=["web", "forms", "crm", "chat"])
    split = dedupe.link_cross_source(events, losers)
    assert split.kept.message_id.to_pandas().tolist() == ["m9"]
    got = split.rejected.order_by("message_id").select("message_id", "ref").to_pandas()
    assert got.values.tolist() == [["m1", "m9"], ["m5", "m9"], ["m7", "m9"]]


def test_a_server_side_copy_without_a_cookie_matches_on_user_and_page(con) -> None:  # type: ignore[no-untyped-def]
    url = "https://shop.example.com/contact"
    events = working(con, [
        {**FORM, "anonymous_id": "a", "user_id": "u1", "timestamp": "11:05", "url": url},
        # the server saw the same submission: the user, the page, no cookie, no e-mail
        {**FORM, "user_id": "u1", "timestamp": "11:05:30", "url": url + "?utm_source=x",
         "source": "server"},
        # another user on the same page at the same time is another touch
        {**FORM, "user_id": "u2", "timestamp": "11:05:40", "url": url, "source": "server"},
        # the same user on another page too
        {**FORM, "user_id": "u1", "timestamp": "11:05:50", "url": url + "/sales",
         "source": "server"},
    ])
    events, _ = standardise.standardise_urls(events)
    losers = dedupe.cross_source_losers(
        events, link_seconds={"Form Submitted": 600}, priority=["web", "server"])
    split = dedupe.link_cross_source(events, losers)
    assert sorted(split.kept.message_id.to_pandas()) == ["m1", "m3", "m4"]
    got = split.rejected.select("message_id", "ref").to_pandas()
    assert got.values.tolist() == [["m2", "m1"]]


def test_the_crm_and_an_import_of_one_deal_match_on_the_crm_contact_id(con) -> None:  # type: ignore[no-untyped-def]
    deal = {"type": "track", "event": "Deal Created"}
    events = working(con, [
        {**deal, "contact_id": "hs-7", "timestamp": "11:00", "source": "crm"},
        {**deal, "contact_id": "hs-7", "timestamp": "11:30", "source": "import"},
        {**deal, "contact_id": "hs-8", "timestamp": "11:30", "source": "import"},
    ])
    events, _ = standardise.standardise_urls(events)
    losers = dedupe.cross_source_losers(events, link_seconds={"Deal Created": 3600},
                                        priority=["crm", "import"])
    split = dedupe.link_cross_source(events, losers)
    assert sorted(split.kept.message_id.to_pandas()) == ["m1", "m3"]
    assert split.rejected.select("message_id", "ref").to_pandas().values.tolist() == [["m2", "m1"]]
