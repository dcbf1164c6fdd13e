"""Call tracking: number leases, and calls matched to the session that saw the number."""

from __future__ import annotations

import json
import re
import sqlite3
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest
from collector_kit import LiveCollector, Warehouse, make_settings, make_warehouse
from ibis.backends import BaseBackend

from touchline import engine, store
from touchline.collect.dni import LeaseBook, match_calls, match_new_calls, to_e164, with_e164
from touchline.config import Settings
from touchline.errors import ConfigError

T0 = 1_700_000_000.0  # a fixed clock for the lease book
GOOGLE = {"utm_source": "google", "utm_medium": "cpc", "utm_term": "crm"}


def _book(tmp_path: Path, numbers: list[str], **kwargs: object) -> LeaseBook:
    return LeaseBook(
        tmp_path / "leases.sqlite",
        {"google/cpc": numbers, "default": ["+15550109999"]},
        lease_minutes=30,
        grace_minutes=60,
        **kwargs,  # type: ignore[arg-type]
    )


def test_to_e164_normalises_national_and_international_forms() -> None:
    assert to_e164("(555) 010-0001", "US") == "+15550100001"
    assert to_e164("+44 20 7946 0018", "US") == "+442079460018"
    assert to_e164("020 7946 0018", "GB") == "+442079460018"
    assert to_e164("call me", "US") is None


def test_visitor_leases_are_exclusive_renewed_and_exhausted(tmp_path: Path) -> None:
    book = _book(tmp_path, ["+1 555 010 0001", "+1 555 010 0002"])
    a = book.lease(anonymous_id="a", session_id="s-a", utm=GOOGLE, now=T0)
    b = book.lease(anonymous_id="b", session_id="s-b", utm=GOOGLE, now=T0 + 1)
    a_again = book.lease(anonymous_id="a", session_id="s-a", utm=GOOGLE, now=T0 + 600)
    c = book.lease(anonymous_id="c", session_id="s-c", utm=GOOGLE, now=T0 + 2)
    assert a is not None and b is not None and a_again is not None and c is not None
    assert (a.number, b.number) == ("+15550100001", "+15550100002")
    assert (a_again.lease_id, a_again.expires_at) == (a.lease_id, T0 + 600 + 1800)
    assert (c.number, c.status) == (None, "exhausted")


def test_a_number_is_reused_only_after_the_grace_period(tmp_path: Path) -> None:
    book = _book(tmp_path, ["+15550100001"])
    first = book.lease(anonymous_id="a", session_id="s-a", utm=GOOGLE, now=T0)
    in_grace = book.lease(anonymous_id="b", session_id="s-b", utm=GOOGLE, now=T0 + 1800 + 60)
    after = book.lease(anonymous_id="c", session_id="s-c", utm=GOOGLE, now=T0 + 1800 + 3601)
    assert first is not None and in_grace is not None and after is not None
    assert (in_grace.status, after.number) == ("exhausted", "+15550100001")


def _rows(book: LeaseBook) -> int:
    with sqlite3.connect(book.path) as db:
        return int(db.execute("SELECT count(*) FROM leases").fetchone()[0])


def test_exhausted_requests_are_counted_per_pool_and_day_not_stored(tmp_path: Path) -> None:
    book = _book(tmp_path, ["+15550100001"])
    book.lease(anonymous_id="a", session_id="s-a", utm=GOOGLE, now=T0)
    flood = [
        book.lease(anonymous_id=None, session_id=f"rnd-{i}", utm=GOOGLE, now=T0 + i)
        for i in range(1, 51)
    ]
    book.lease(anonymous_id="a", session_id="s-a", utm=GOOGLE, now=T0 + 6_000)  # a new lease
    # T0 is 22:13 UTC: T0 + 6500 s is the next UTC day
    next_day = book.lease(anonymous_id=None, session_id="rnd-x", utm=GOOGLE, now=T0 + 6_500)
    assert {(lease.number, lease.status) for lease in flood if lease} == {(None, "exhausted")}
    assert next_day is not None and next_day.status == "exhausted"
    assert _rows(book) == 4  # two leases, and one counted row for each of the two days
    rows, _ = book.changed_since(0)
    counted = [
        (r["lease_id"], r["session_id"], r["request_count"], r["leased_at"].day)
        for r in rows.to_pylist()
        if r["status"] == "exhausted"
    ]
    assert counted == [
        ("exhausted:google/cpc:2023-11-14", None, 50, 14),
        ("exhausted:google/cpc:2023-11-15", None, 1, 15),
    ]
    assert rows.column("expires_at")[1].as_py() == datetime(2023, 11, 15)  # the day's end


def test_lease_store_stops_at_its_limit_and_frees_rows_the_loader_copied(tmp_path: Path) -> None:
    book = _book(tmp_path, ["+15550100001"], mode="channel", max_rows=3)
    leases = [
        book.lease(anonymous_id=None, session_id=f"rnd-{i}", utm=GOOGLE, now=T0 + i)
        for i in range(5)
    ]
    assert [lease.status for lease in leases if lease] == ["leased"] * 3 + ["store_full"] * 2
    assert _rows(book) == 4  # 3 leases and the counted row, however long the flood
    _, copied = book.changed_since(0)
    ended = T0 + 5 + 1800 + 3600 + 1  # after every lease's end and the grace period
    # the three leases go; the counted row was changed after the copy (and its day is not over)
    assert book.prune(copied_seq=copied - 1, now=ended) == 3
    after = book.lease(anonymous_id="b", session_id="s-b", utm=GOOGLE, now=ended)
    assert after is not None and after.status == "leased"
    new, _ = book.changed_since(copied)
    assert new.column("session_id").to_pylist() == ["s-b"]  # seq keeps growing after a prune


def test_pool_choice_falls_back_from_source_medium_to_default(tmp_path: Path) -> None:
    book = _book(tmp_path, ["+15550100001"])
    assert book.pool_for("Google", "CPC") == "google/cpc"
    assert book.pool_for("bing", "cpc") == "default"
    lease = book.lease(anonymous_id="a", session_id="s", utm={"utm_source": "bing"}, now=T0)
    assert lease is not None and lease.number == "+15550109999"


def test_channel_mode_shares_the_pool_number(tmp_path: Path) -> None:
    book = _book(tmp_path, ["+15550100001"], mode="channel")
    numbers = {
        lease.number
        for s in ("s1", "s2", "s3")
        if (lease := book.lease(anonymous_id=s, session_id=s, utm=GOOGLE, now=T0))
    }
    assert numbers == {"+15550100001"}


def test_bad_pool_number_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not phone numbers"):
        LeaseBook(tmp_path / "l.sqlite", {"default": ["not a number"]})


def _at(minutes: float) -> datetime:
    return datetime(2025, 3, 1, 12, 0) + timedelta(minutes=minutes)


def _leases() -> pa.Table:
    rows = [
        # lease_id, number, status, session, source, start, end (minutes after noon)
        ("L1", "+15550100001", "leased", "s1", "google", 0, 30),
        ("L2", "+15550100002", "leased", "s2", "bing", 0, 30),
        ("L3", "+15550100003", "leased", "s3", "fb", 0, 30),
        ("L4", "+15550100003", "leased", "s4", "fb", 10, 40),
        ("L5", None, "exhausted", None, "google", 0, 1440),
    ]
    columns = {c.name: [] for c in store.NUMBER_LEASES.columns}  # type: ignore[var-annotated]
    for lease_id, number, status, session, source, start, end in rows:
        values = {
            "lease_id": lease_id,
            "number": number,
            "pool": source,
            "status": status,
            "anonymous_id": f"anon-{session}" if session else None,
            "session_id": session,
            "utm_source": source,
            "utm_medium": "cpc",
            "utm_term": f"kw-{session}",
            "leased_at": _at(start),
            "expires_at": _at(end),
            "request_count": 1 if number else 3,
        }
        for name in columns:
            columns[name].append(values.get(name))
    return pa.table(columns, schema=store.NUMBER_LEASES.schema.to_pyarrow())


def _calls() -> pa.Table:
    return pa.table(
        {
            "call_id": ["c-in", "c-grace", "c-two", "c-none", "c-late"],
            "caller_number": [
                "(555) 123-4567",
                "555 123 9999",
                "+1 555 123 0000",
                "x",
                "5551230001",
            ],
            "tracking_number": [
                "(555) 010-0001",
                "555-010-0002",
                "+15550100003",
                "+15550100009",
                "5550100001",
            ],
            "started_at": [_at(10), _at(50), _at(20), _at(10), _at(200)],
            "duration_seconds": [120, 30, 300, 10, 90],
            "answered": [True, True, True, False, True],
            "outcome": ["lead", None, "sale", None, None],
        }
    )


def test_calls_match_covering_expired_ambiguous_and_missing_leases(con: BaseBackend) -> None:
    leases = engine.load_table(con, "number_leases", _leases())
    calls = with_e164(engine.load_table(con, "calls_raw", _calls()), "US")
    got = (
        match_calls(calls, leases, grace=timedelta(minutes=60))
        .select("call_id", "match_status", "session_id", "utm_source", "utm_term")
        .order_by("call_id")
        .to_pyarrow()
        .to_pylist()
    )
    assert [tuple(r.values()) for r in got] == [
        ("c-grace", "expired", "s2", "bing", "kw-s2"),
        ("c-in", "matched", "s1", "google", "kw-s1"),
        ("c-late", "unmatched", None, None, None),
        ("c-none", "unmatched", None, None, None),
        ("c-two", "ambiguous", "s4", "fb", "kw-s4"),
    ]


def test_new_calls_become_touches_once(con: BaseBackend) -> None:
    store.init(con)
    engine.append(con, "number_leases", _leases())
    calls = (
        _calls()
        .append_column("source", pa.array(["calls"] * 5))
        .append_column("ingest_id", pa.array(["t"] * 5))
    )
    engine.append(con, "calls", pa.Table.from_pylist(calls.to_pylist(),
                                                    schema=store.CALLS.schema.to_pyarrow()))
    settings = Settings(dni_grace_minutes=60, call_conversion_seconds=60, phone_region="US")
    first = match_new_calls(con, settings)
    second = match_new_calls(con, settings)
    assert first == {
        "matched": 1,
        "expired": 1,
        "ambiguous": 1,
        "unmatched": 2,
        "pool_exhausted": 3,
    }
    assert second == {"pool_exhausted": 3}
    events = con.table("events")
    rows = (
        events.filter(events.message_id == "call:c-in")
        .select("message_id", "event", "anonymous_id", "utm_source", "phone", "properties")
        .to_pyarrow()
        .to_pylist()
    )
    message_id, event, anonymous_id, source, phone, properties = rows[0].values()
    assert (message_id, event, anonymous_id, source, phone) == (
        "call:c-in",
        "Phone Call",
        "anon-s1",
        "google",
        "+15551234567",
    )
    assert json.loads(properties)["conversion"] is True
    assert con.table("events").count().execute() == 5


def test_lease_endpoint_hands_out_numbers(
    tmp_path: Path, start_collector: Callable[[Warehouse], LiveCollector]
) -> None:
    settings = make_settings(tmp_path, dni_pools={"google/cpc": ["+15550100001"]})
    live = start_collector(make_warehouse(settings))
    body = {
        "sessionId": "s1",
        "anonymousId": "a1",
        "campaign": {"source": "google", "medium": "cpc"},
    }
    with live.client(auth=(live.warehouse.write_key, "")) as http:
        first = http.post("/v1/dni/lease", json=body).json()
        second = http.post("/v1/dni/lease", json={**body, "sessionId": "s2"}).json()
        third = http.post("/v1/dni/lease", json={**body, "sessionId": "s3"}).json()
        missing = http.post("/v1/dni/lease", json={"anonymousId": "a1"})
    assert (first["number"], first["status"]) == ("+15550100001", "leased")
    assert {(r["number"], r["status"]) for r in (second, third)} == {(None, "exhausted")}
    assert (missing.status_code, missing.json()["code"]) == (400, "missing_session")
    live.warehouse.load()
    assert live.warehouse.query(
        "SELECT session_id, status, request_count FROM number_leases ORDER BY status"
    ) == [(None, "exhausted", 2), ("s1", "leased", 1)]


def test_loader_frees_lease_rows_it_copied_once_they_ended(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, dni_pools={"google/cpc": ["+15550100001"]})
    warehouse = make_warehouse(settings)
    book = LeaseBook(Path(settings.spool_dir) / "leases.sqlite", settings.dni_pools)
    book.lease(anonymous_id="a", session_id="s-old", utm=GOOGLE, now=T0)  # ended long ago
    book.lease(anonymous_id="b", session_id="s-now", utm=GOOGLE, now=time.time())
    warehouse.load()
    assert warehouse.query("SELECT session_id FROM number_leases ORDER BY 1") == [
        ("s-now",),
        ("s-old",),
    ]
    assert _rows(book) == 1  # s-old is in the warehouse and over: the store forgot it


# --- leases imported with their own times: back-filled calls can be matched ---------------

#: hand-made leases of March 2022, as a DNI vendor's export or an older tracker's log gives them
LEASES_CSV = "\n".join([
    "lease_id,number,pool,anonymous_id,session_id,utm_source,utm_medium,utm_term,leased_at,"
    "expires_at",
    "L1,+1 (555) 010-0001,google/cpc,anon-1,s1,google,cpc,crm,"
    "2022-03-01T10:00:00Z,2022-03-01T10:30:00Z",
    ",+1.555.010.0002,,anon-2,s2,bing,cpc,,2022-03-01T11:00:00Z,2022-03-01T11:30:00Z",
    "L3,555-010-0003,,anon-3,s3,,,,2022-03-01T12:00:00Z,2022-03-01T12:30:00Z",
    "L4,+15550100004,,anon-4,s4,,,,2022-03-01T13:00:00Z,2022-03-01T12:00:00Z",
    "L5,+15550100005,,anon-5,s5,,,,,2022-03-01T12:00:00Z",
]) + "\n"
CALLS_CSV = """call_id,caller_number,tracking_number,started_at,duration_seconds,answered
k1,+1 555 123 4567,+15550100001,2022-03-01T10:10:00Z,120,true
k2,+1 555 123 9999,+15550100002,2022-03-01T11:45:00Z,30,true
k3,+1 555 123 0000,+15550100001,2022-03-02T10:10:00Z,60,false
"""


def _import_leases(con: BaseBackend, tmp_path: Path, settings: Settings) -> object:
    from touchline.collect.ingest import ingest_file

    leases, calls = tmp_path / "leases.csv", tmp_path / "calls.csv"
    leases.write_text(LEASES_CSV)
    calls.write_text(CALLS_CSV)
    result = ingest_file(con, leases, "number_leases", settings=settings)
    ingest_file(con, calls, "calls", settings=settings)
    return result


def test_imported_leases_keep_their_own_times_and_match_back_filled_calls(
    con: BaseBackend, tmp_path: Path
) -> None:
    """Before, leases came only from the collector's clock: a 2022 call found no lease and was
    ``unmatched``. k1 rang L1's number inside its lease; k2 rang the second lease's number 15
    minutes after it ended (within the 60-minute grace); k3 rang L1's number a day later."""
    settings = Settings(database_url="duckdb://", dni_grace_minutes=60, phone_region="US",
                        temp_directory=tmp_path)
    result = _import_leases(con, tmp_path, settings)
    assert (result.loaded, result.rejected) == (2, 3)  # type: ignore[attr-defined]
    rejects = con.table("rejects").select("line", "field", "reason_code").to_pyarrow()
    assert sorted(tuple(r.values()) for r in rejects.to_pylist()) == [
        (4, "number", "bad_phone"),  # a national number: its country would be a guess
        (5, "expires_at", "bad_lease_period"),
        (6, "leased_at", "missing_leased_at"),
    ]
    leases = con.table("number_leases").order_by("leased_at").to_pyarrow().to_pylist()
    assert [(r["number"], r["pool"], r["status"], r["request_count"]) for r in leases] == [
        ("+15550100001", "google/cpc", "leased", 1),
        ("+15550100002", "import", "leased", 1),
    ]
    assert leases[0]["leased_at"] == datetime(2022, 3, 1, 10, 0)
    assert leases[1]["lease_id"].startswith("h-")  # no id given: one from its content

    assert match_new_calls(con, settings) == {
        "matched": 1, "expired": 1, "unmatched": 1, "pool_exhausted": 0,
    }
    touches = con.table("events").select("message_id", "anonymous_id", "utm_source", "utm_term")
    assert sorted(tuple(r.values()) for r in touches.to_pyarrow().to_pylist()) == [
        ("call:k1", "anon-1", "google", "crm"),
        ("call:k2", "anon-2", "bing", None),
        ("call:k3", None, None, None),
    ]


def test_importing_the_same_leases_twice_adds_nothing(con: BaseBackend, tmp_path: Path) -> None:
    settings = Settings(database_url="duckdb://", temp_directory=tmp_path)
    _import_leases(con, tmp_path, settings)
    again = _import_leases(con, tmp_path, settings)
    assert (again.loaded, again.duplicates) == (0, 2)  # type: ignore[attr-defined]
    assert con.table("number_leases").count().to_pyarrow().as_py() == 2


def test_cli_imports_leases_and_matches_the_calls(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from touchline.cli import app

    (tmp_path / "leases.csv").write_text(LEASES_CSV)
    (tmp_path / "calls.csv").write_text(CALLS_CSV)
    database = f"duckdb:///{tmp_path / 'wh.duckdb'}"
    runner = CliRunner()
    for name, kind in (("leases.csv", "number_leases"), ("calls.csv", "calls")):
        done = runner.invoke(app, ["ingest", str(tmp_path / name), "--kind", kind,
                                   "--database", database])
        assert done.exit_code == 0, done.output
    matched = runner.invoke(app, ["calls", "match", "--database", database],
                            env={"TOUCHLINE_PHONE_REGION": "US",
                                 "TOUCHLINE_DNI_GRACE_MINUTES": "60"})
    assert matched.exit_code == 0, matched.output
    counts = dict(re.findall(r"\b(matched|expired|unmatched)\W+(\d+)", matched.output))
    assert counts == {"matched": "1", "expired": "1", "unmatched": "1"}


def test_call_touches_rows_are_pinned_column_by_column(con: BaseBackend) -> None:
    """Every column of the ``events`` rows calls become, pinned (the JSON text too), so that
    building them in the engine instead of a Python loop changes no row. ``c-odd`` has a
    quote and a backslash in its outcome, no duration and no answer."""
    store.init(con)
    engine.append(con, "number_leases", _leases())
    odd = pa.table({"call_id": ["c-odd"], "caller_number": [None],
                    "tracking_number": ["+15550100001"], "started_at": [_at(5)],
                    "duration_seconds": pa.array([None], pa.int64()),
                    "answered": pa.array([None], pa.bool_()),
                    "outcome": ['said "call back" \\ later']})
    calls = pa.concat_tables([_calls(), odd.cast(_calls().schema)])
    calls = (calls.append_column("source", pa.array(["calls"] * 6))
             .append_column("ingest_id", pa.array(["file-1"] * 6)))
    engine.append(con, "calls", pa.Table.from_pylist(calls.to_pylist(),
                                                    schema=store.CALLS.schema.to_pyarrow()))
    match_new_calls(con, Settings(dni_grace_minutes=60, call_conversion_seconds=60,
                                  phone_region="US"))
    rows = con.table("events").order_by("message_id").to_pyarrow().to_pylist()
    ingest_ids = {r.pop("ingest_id") for r in rows}
    assert len(ingest_ids) == 1 and re.fullmatch(r"[0-9a-f]{32}", ingest_ids.pop() or "")
    empty = {c.name: None for c in store.EVENTS.columns if c.name != "ingest_id"}

    def row(call_id: str, anon: str | None, source: str | None, term: str | None,
            phone: str | None, started: datetime, props: str, session: str | None) -> dict:
        return empty | {
            "message_id": f"call:{call_id}", "type": "track", "event": "Phone Call",
            "anonymous_id": anon, "timestamp": started, "original_timestamp": started,
            "utm_source": source, "utm_medium": "cpc" if source else None, "utm_term": term,
            "phone": phone, "properties": props, "source": "calls",
            "context": '{"session_id": ' + (f'"{session}"' if session else "null") + "}"}

    assert rows == [
        row("c-grace", "anon-s2", "bing", "kw-s2", "+15551239999", _at(50),
            '{"call_id": "c-grace", "tracking_number": "+15550100002", "duration_seconds": 30, '
            '"answered": true, "outcome": null, "match_status": "expired", "lease_id": "L2", '
            '"session_id": "s2", "pool": "bing", "conversion": false}', "s2"),
        row("c-in", "anon-s1", "google", "kw-s1", "+15551234567", _at(10),
            '{"call_id": "c-in", "tracking_number": "+15550100001", "duration_seconds": 120, '
            '"answered": true, "outcome": "lead", "match_status": "matched", "lease_id": "L1", '
            '"session_id": "s1", "pool": "google", "conversion": true}', "s1"),
        row("c-late", None, None, None, "+15551230001", _at(200),
            '{"call_id": "c-late", "tracking_number": "+15550100001", "duration_seconds": 90, '
            '"answered": true, "outcome": null, "match_status": "unmatched", "lease_id": null, '
            '"session_id": null, "pool": null, "conversion": true}', None),
        row("c-none", None, None, None, None, _at(10),
            '{"call_id": "c-none", "tracking_number": "+15550100009", "duration_seconds": 10, '
            '"answered": false, "outcome": null, "match_status": "unmatched", "lease_id": null, '
            '"session_id": null, "pool": null, "conversion": false}', None),
        row("c-odd", "anon-s1", "google", "kw-s1", None, _at(5),
            '{"call_id": "c-odd", "tracking_number": "+15550100001", "duration_seconds": null, '
            '"answered": null, "outcome": "said \\"call back\\" \\\\ later", "match_status": '
            '"matched", "lease_id": "L1", "session_id": "s1", "pool": "google", '
            '"conversion": false}', "s1"),
        row("c-two", "anon-s4", "fb", "kw-s4", "+15551230000", _at(20),
            '{"call_id": "c-two", "tracking_number": "+15550100003", "duration_seconds": 300, '
            '"answered": true, "outcome": "sale", "match_status": "ambiguous", "lease_id": "L4", '
            '"session_id": "s4", "pool": "fb", "conversion": true}', "s4"),
    ]
