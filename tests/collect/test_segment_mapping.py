"""Segment JSON → canonical ``events``: the vectorised mapping and the per-message checks."""

from __future__ import annotations

from datetime import datetime

import orjson
import pyarrow as pa
import pytest

from touchline.collect.segment import SegmentMapper, check_message, map_segment, truncate_ip
from touchline.store import EVENTS, REJECTS


def _map(*messages: object) -> tuple[list[dict[str, object]], list[dict[str, object]]]:
    raw = [m if isinstance(m, str) or m is None else orjson.dumps(m).decode() for m in messages]
    split = map_segment(
        pa.table({"raw": pa.array(raw, pa.string())}), source="f.ndjson", ingest_id="i1"
    )
    assert split.events.schema == EVENTS.schema.to_pyarrow()
    assert split.rejects.schema == REJECTS.schema.to_pyarrow()
    return split.events.to_pylist(), split.rejects.to_pylist()


PAGE = {
    "type": "page",
    "messageId": "m1",
    "anonymousId": "a1",
    "timestamp": "2025-03-01T10:00:00.250+01:00",
    "sentAt": "2025-03-01T09:00:01Z",
    "receivedAt": "2025-03-01T09:00:02Z",
    "context": {
        "ip": "2001:db8:85a3::8a2e:370:7334",
        "userAgent": "Mozilla/5.0",
        "page": {
            "url": "https://acme.example/pricing?utm_source=Google&utm_medium=cpc&utm_term=crm+tool&msclkid=M1",
            "referrer": "https://www.google.com/",
            "title": "Pricing",
        },
        "campaign": {"name": "Spring Sale", "source": "google-ads"},
    },
    "properties": {"total": "99.5", "currency": "eur"},
}


def test_page_fields_come_from_context_campaign_first_then_the_url() -> None:
    [row], rejects = _map(PAGE)
    assert rejects == []
    assert {k: row[k] for k in ("path", "referrer", "title", "user_agent", "ip")} == {
        "path": "/pricing",
        "referrer": "https://www.google.com/",
        "title": "Pricing",
        "user_agent": "Mozilla/5.0",
        "ip": "2001:db8:85a3::",
    }
    assert {
        k: row[k] for k in ("utm_source", "utm_medium", "utm_campaign", "utm_term", "msclkid")
    } == {
        "utm_source": "google-ads",
        "utm_medium": "cpc",
        "utm_campaign": "Spring Sale",
        "utm_term": "crm tool",
        "msclkid": "M1",
    }
    assert (row["timestamp"], row["sent_at"]) == (
        datetime(2025, 3, 1, 9, 0, 0, 250000),
        datetime(2025, 3, 1, 9, 0, 1),
    )
    assert (row["revenue"], row["currency"], row["source"], row["ingest_id"]) == (
        99.5,
        "EUR",
        "import",
        "i1",
    )
    assert "ip" not in orjson.loads(row["context"])  # kept only truncated, in `ip`


def test_email_and_phone_come_from_traits_and_missing_ids_get_a_content_hash() -> None:
    identify = {
        "type": "identify",
        "userId": "u1",
        "timestamp": "2025-03-01T10:00:00Z",
        "traits": {"email": " Ann@Example.COM ", "phone": "+1 555 0100"},
    }
    [row], _ = _map(identify)
    assert (row["email"], row["phone"], row["user_id"]) == ("ann@example.com", "+1 555 0100", "u1")
    assert str(row["message_id"]).startswith("md5:")
    assert orjson.loads(row["traits"]) == identify["traits"]


def test_bad_lines_become_rejects_with_line_and_reason() -> None:
    ok = {
        "type": "track",
        "event": "x",
        "anonymousId": "a",
        "messageId": "ok",
        "timestamp": "2025-03-01T10:00:00Z",
    }
    events, rejects = _map(
        ok,
        "{not json",
        {"type": "launch", "timestamp": "2025-03-01T10:00:00Z"},
        {"type": "track", "event": "x", "timestamp": "yesterday"},
        {"type": "track", "event": "x"},
        ok,
        None,
    )
    assert [e["message_id"] for e in events] == ["ok"]
    assert [(r["line"], r["reason_code"], r["field"], r["ref"]) for r in rejects] == [
        (2, "bad_json", "raw", None),
        (3, "bad_type", "type", None),
        (4, "bad_timestamp", "timestamp", None),
        (5, "missing_timestamp", "timestamp", None),
        (6, "duplicate", "messageId", "ok"),
        (7, "bad_json", "raw", None),
    ]
    assert {r["source"] for r in rejects} == {"f.ndjson"}


def test_one_mapper_maps_chunk_after_chunk_each_as_if_alone() -> None:
    """The loader keeps one :class:`SegmentMapper`, its statements planned once on empty
    tables: every chunk, whatever came before it, gets its own events and rejects (a plan
    that trusted the empty tables' statistics dropped the reason filter), and nothing of a
    chunk stays for the next."""
    ok = {"type": "track", "event": "x", "anonymousId": "a", "messageId": "ok",
          "timestamp": "2025-03-01T10:00:00Z"}
    clean = [ok, {**ok, "messageId": "ok2", "type": "page"}]
    mixed = [
        ok,
        "{not json",
        {"type": "launch", "timestamp": "2025-03-01T10:00:00Z"},
        {**ok, "messageId": "late", "originalTimestamp": "yesterday"},
        {"type": "track", "event": "x"},
        ok,
    ]

    def table(messages: list[object]) -> pa.Table:
        raw = [m if isinstance(m, str) else orjson.dumps(m).decode() for m in messages]
        return pa.table({"raw": pa.array(raw, pa.string())})

    with SegmentMapper(threads=1) as mapper:
        first, second, third, empty = (
            mapper.map(table(chunk), source="f.ndjson", ingest_id="i1")
            for chunk in (clean, mixed, clean, [])
        )
    assert [e["message_id"] for e in first.events.to_pylist()] == ["ok", "ok2"]
    assert [e["message_id"] for e in second.events.to_pylist()] == ["ok"]
    assert [(r["line"], r["reason_code"], r["field"]) for r in second.rejects.to_pylist()] == [
        (2, "bad_json", "raw"),
        (3, "bad_type", "type"),
        (4, "bad_timestamp", "timestamp"),
        (5, "missing_timestamp", "timestamp"),
        (6, "duplicate", "messageId"),
    ]
    assert third.events.equals(first.events) and third.rejects.num_rows == 0
    assert empty.events.num_rows == 0 and empty.rejects.num_rows == 0


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ({"type": "track", "anonymousId": "a", "event": "x"}, None),
        ({"type": "track", "anonymousId": "a"}, "missing_event"),
        ({"type": "track", "event": "x"}, "missing_id"),
        ({"type": "track", "event": "x", "userId": ""}, "missing_id"),
        ({"type": "track", "event": "x", "anonymousId": 5}, "bad_id"),
        ({"type": "alias", "userId": "u"}, "missing_previous_id"),
        ({"type": "group", "userId": "u"}, "missing_group_id"),
        ({"type": "page", "userId": "u", "messageId": 12}, "bad_message_id"),
        ({"type": "page", "userId": "u", "properties": []}, "bad_field"),
        ({"type": "page", "userId": "u", "sentAt": "13/13/2025"}, "bad_timestamp"),
        ({"type": "jump", "userId": "u"}, "bad_type"),
        ("text", "not_an_object"),
    ],
)
def test_check_message_names_the_first_problem(message: object, code: str | None) -> None:
    problem = check_message(message)
    assert (problem.code if problem else None) == code


def test_truncate_ip_zeroes_the_host_part() -> None:
    assert truncate_ip("192.0.2.255") == "192.0.2.0"
    assert truncate_ip("2001:db8:1:2:3:4:5:6") == "2001:db8:1::"
    assert truncate_ip("localhost") is None


def test_a_crm_contact_id_comes_from_traits_or_properties() -> None:
    rows, rejects = _map(
        {"type": "identify", "messageId": "c1", "userId": "u1", "timestamp": "2025-03-01T10:00:00Z",
         "traits": {"email": "ann@acme.com", "crm_contact_id": "hs-501"}},
        {"type": "track", "event": "Deal Created", "messageId": "c2", "userId": "u1",
         "timestamp": "2025-03-01T10:00:00Z", "properties": {"crm_contact_id": "hs-502"}},
        {"type": "track", "event": "x", "messageId": "c3", "userId": "u1",
         "timestamp": "2025-03-01T10:00:00Z"},
    )
    assert rejects == []
    assert [r["contact_id"] for r in rows] == ["hs-501", "hs-502", None]


@pytest.mark.parametrize(
    "raw",
    [
        '{"type":"track","event":"x","anonymousId":"","anonymousId":"real","messageId":"d1",'
        '"timestamp":"2025-03-01T10:00:00Z"}',
        '{"type":"page","anonymousId":"a","messageId":"d2","timestamp":"2025-03-01T10:00:00Z",'
        '"context":{"page":{"url":"https://x.io/?a","url":"https://y.io/"}}}',
    ],
)
def test_a_key_twice_in_one_object_is_rejected_as_duplicate_key(raw: str) -> None:
    events, rejects = _map(raw)
    assert events == []
    assert [(r["reason_code"], r["line"]) for r in rejects] == [("duplicate_key", 1)]


def _layout(db, line: str):
    from touchline.collect.segment import object_keys_sql

    return db.execute(f"SELECT {object_keys_sql('?')}", [line]).fetchone()[0]


@pytest.mark.parametrize(
    "keys",
    [["a\x00b", "it's", "", "{source}", "br}ce", "\x00"], ["NULL", "a, b", "[x]", "x\\'y"]],
)
def test_a_layout_written_as_sql_equals_the_layout_duckdb_reads(keys: list[str]) -> None:
    """Keys with a NUL, a quote, braces, commas, brackets or that read as NULL survive the
    literal: a layout is recognised only by being equal, key for key."""
    import duckdb

    from touchline.collect.segment import layout_sql, object_keys_sql

    db = duckdb.connect()
    line = orjson.dumps({"context": dict.fromkeys(keys, 1), "traits": 5}).decode()
    layout = _layout(db, line)
    assert layout[1] == keys and layout[5] == []
    assert db.execute(f"SELECT {object_keys_sql('?')} = {layout_sql(layout)}", [line]).fetchone()[0]
    other = orjson.dumps({"context": dict.fromkeys([*keys[:-1], keys[-1] + " "], 1),
                          "traits": 5}).decode()  # one key differs by a space
    assert not db.execute(
        f"SELECT {object_keys_sql('?')} = {layout_sql(layout)}", [other]).fetchone()[0]


def test_a_known_clean_layout_never_hides_a_repeated_key() -> None:
    """Lines of the known layouts but one key more, repeated (at the root, nested, in an
    object of 40 keys, a key spelled with an escape), are still found; a key that differs
    only in case is no repeat; a line of an unknown layout is checked key by key."""
    import duckdb

    from touchline.collect.segment import repeated_key_sql, repeats_key

    db = duckdb.connect()
    wide = ",".join(f'"k{i}":{i}' for i in range(40))
    clean = ['{"a":1,"b":2}', '{"a":1,"context":{"page":{"url":"u"}}}',
             '{"a":1,"properties":{' + wide + "}}"]
    layouts = [_layout(db, line) for line in clean]
    assert not any(repeats_key(layout) for layout in layouts)
    lines = {
        '{"a":1,"b":2}': False, '{"a":1,"b":2,"a":3}': True, '{"a":1,"b":2,"A":3}': False,
        '{"a":1,"context":{"page":{"url":"u","url":"v"}}}': True,
        '{"a":1,"context":{"page":{"url":"u"},"page":{}}}': True,
        '{"a":1,"properties":{' + wide + ',"k3":0}}': True,
        '{"a":1,"properties":{' + wide + ',"K3":0}}': False,
        '{"a":1,"\\u0061":2}': True, '{"c":1,"c":1}': True, "[1,2]": False,
    }
    from touchline.collect.segment import object_keys_sql

    query = (f"SELECT {repeated_key_sql('k', layouts)}, {repeated_key_sql('k')} "
             f"FROM (SELECT {object_keys_sql('?')} AS k)")
    for line, repeats in lines.items():
        assert db.execute(query, [line]).fetchone() == (repeats, repeats), line
    assert repeats_key([["a", "b", "a"], None]) and not repeats_key([["a", "A"], None, []])
