"""The Segment-compatible HTTP API over real HTTP: status codes, auth, limits, durability."""

from __future__ import annotations

import gzip
from collections.abc import Callable
from pathlib import Path

import hypothesis
import hypothesis.strategies as st
import orjson
import pytest
from collector_kit import LiveCollector, Warehouse, make_settings, make_warehouse

from touchline.collect.app import AUTH_FAILURE_BURST, AddressBudget
from touchline.collect.segment import (
    MAX_BATCH_BYTES,
    MAX_EVENT_BYTES,
    MAX_JSON_DEPTH,
    check_message,
    decode_marking_repeats,
    fast_batch,
    json_depth,
    may_repeat_key,
    repeated_key,
)
from touchline.store import REJECT_RAW_MAX_CHARS


def _track(message_id: str, **extra: object) -> dict[str, object]:
    return {"event": "Signed Up", "anonymousId": "anon-1", "messageId": message_id, **extra}


def test_single_track_is_acknowledged_and_loaded_with_server_receipt_time(
    collector: LiveCollector,
) -> None:
    with collector.client(auth=(collector.warehouse.write_key, "")) as http:
        response = http.post("/v1/track", json=_track("m-1", properties={"revenue": 42}))
    assert (response.status_code, response.json()) == (200, {"success": True})
    collector.warehouse.load()
    rows = collector.warehouse.query(
        "SELECT message_id, type, event, revenue, write_key, source, received_at IS NOT NULL "
        "FROM events"
    )
    assert rows == [("m-1", "track", "Signed Up", 42.0, "web", "web", True)]


def test_import_key_keeps_the_messages_receipt_time_a_write_key_does_not(
    collector: LiveCollector,
) -> None:
    """Back-fills keep history: an import key's ``receivedAt`` survives every route."""
    past = "2024-03-01T10:00:00Z"
    fast = [{"type": "page", "anonymousId": "a", "messageId": "fast-1", "receivedAt": past}]
    detailed = [
        {"type": "alias", "userId": "u", "previousId": "a", "messageId": "slow-1",
         "receivedAt": past},
        {"type": "page", "anonymousId": "a", "messageId": "slow-2", "receivedAt": "yesterday"},
        {"type": "page", "anonymousId": "a", "messageId": "slow-3"},
    ]
    with collector.client(auth=(collector.warehouse.import_key, "")) as http:
        single = http.post("/v1/track", json=_track("single-1", receivedAt=past))
        bad = http.post("/v1/track", json=_track("single-2", receivedAt=17))
        fast_batch = http.post("/v1/batch", json={"batch": fast})
        slow_batch = http.post("/v1/batch", json={"batch": detailed})
    with collector.client(auth=(collector.warehouse.write_key, "")) as http:
        live = http.post("/v1/track", json=_track("live-1", receivedAt=past))
    assert [r.status_code for r in (single, fast_batch, slow_batch, live)] == [200] * 4
    assert (bad.status_code, bad.json()["code"]) == (400, "bad_timestamp")
    assert "receivedAt" in bad.json()["message"]
    assert slow_batch.json() == {"success": True, "accepted": 2, "rejected": 1}
    collector.warehouse.load()
    rows = dict(
        collector.warehouse.query(
            "SELECT message_id, strftime(received_at, '%Y-%m-%dT%H:%M:%SZ') FROM events"
        )
    )
    assert {k: rows[k] for k in ("single-1", "fast-1", "slow-1")} == dict.fromkeys(
        ("single-1", "fast-1", "slow-1"), past
    )
    # no receivedAt from an import key, or any from a write key: the server's clock
    assert rows["slow-3"] > "2026" and rows["live-1"] > "2026"
    assert set(rows) == {"single-1", "fast-1", "slow-1", "slow-3", "live-1"}
    # the refused single event and the refused batch member, both recorded
    assert collector.warehouse.query(
        "SELECT source, line, field, reason_code FROM rejects ORDER BY source"
    ) == [("/v1/batch", 2, "receivedAt", "bad_timestamp"),
          ("/v1/track", 1, "receivedAt", "bad_timestamp")]


def test_write_key_in_a_text_plain_body_is_accepted_like_a_beacon(collector: LiveCollector) -> None:
    body = orjson.dumps({"writeKey": collector.warehouse.write_key, **_track("m-beacon")})
    with collector.client() as http:
        response = http.post("/v1/track", content=body, headers={"content-type": "text/plain"})
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("auth", "code"),
    [(None, "missing_write_key"), (("not-a-key", ""), "unknown_write_key")],
)
def test_missing_or_unknown_write_key_is_401_and_not_stored(
    collector: LiveCollector, auth: tuple[str, str] | None, code: str
) -> None:
    with collector.client(auth=auth) as http:
        response = http.post("/v1/track", json=_track("m-401"))
    assert (response.status_code, response.json()["code"]) == (401, code)
    collector.warehouse.load()
    assert collector.warehouse.query("SELECT count(*) FROM events") == [(0,)]
    assert collector.warehouse.query("SELECT count(*) FROM rejects") == [(0,)]


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b'{"event": "x", "anonym', "bad_json"),
        (orjson.dumps({"event": "Signed Up"}), "missing_id"),
        (orjson.dumps({"event": "x", "userId": 17}), "bad_id"),
        (orjson.dumps({"anonymousId": "a"}), "missing_event"),
        (orjson.dumps({"event": "x", "anonymousId": "a", "timestamp": "soon"}), "bad_timestamp"),
        (orjson.dumps(["not", "an", "object"]), "not_an_object"),
    ],
)
def test_invalid_single_event_is_400_with_code_and_message(
    collector: LiveCollector, body: bytes, code: str
) -> None:
    with collector.client(auth=(collector.warehouse.write_key, "")) as http:
        response = http.post("/v1/track", content=body)
    assert response.status_code == 400
    assert response.json()["code"] == code
    assert response.json()["message"]


def test_event_over_32_kb_is_400(collector: LiveCollector) -> None:
    big = _track("m-big", properties={"blob": "x" * MAX_EVENT_BYTES})
    with collector.client(auth=(collector.warehouse.write_key, "")) as http:
        response = http.post("/v1/track", json=big)
    assert (response.status_code, response.json()["code"]) == (400, "event_too_large")


def test_batch_over_500_kb_is_400(collector: LiveCollector) -> None:
    batch = [
        {"type": "track", **_track(f"m-{i}", properties={"blob": "x" * 20_000})} for i in range(30)
    ]
    assert len(orjson.dumps({"batch": batch})) > MAX_BATCH_BYTES
    with collector.client(auth=(collector.warehouse.write_key, "")) as http:
        response = http.post("/v1/batch", json={"batch": batch})
    assert (response.status_code, response.json()["code"]) == (400, "body_too_large")


def test_batch_stores_good_events_and_rejects_bad_ones_with_reasons(
    collector: LiveCollector,
) -> None:
    batch = [
        {"type": "page", "anonymousId": "a", "messageId": "good-1"},
        {"type": "track", "anonymousId": "a", "messageId": "bad-1"},
        {"type": "track", "event": "Bought", "userId": "u", "messageId": "good-2"},
        {"type": "launch", "anonymousId": "a"},
    ]
    with collector.client(auth=(collector.warehouse.write_key, "")) as http:
        response = http.post("/v1/batch", json={"batch": batch})
    assert response.status_code == 200
    assert response.json() == {"success": True, "accepted": 2, "rejected": 2}
    collector.warehouse.load()
    assert collector.warehouse.query("SELECT message_id FROM events ORDER BY 1") == [
        ("good-1",),
        ("good-2",),
    ]
    assert collector.warehouse.query(
        "SELECT source, line, field, reason_code FROM rejects ORDER BY line"
    ) == [("/v1/batch", 2, "event", "missing_event"), ("/v1/batch", 4, "type", "bad_type")]


def test_repeated_message_id_is_200_and_stored_once_counted_as_duplicate(
    collector: LiveCollector,
) -> None:
    with collector.client(auth=(collector.warehouse.write_key, "")) as http:
        first = http.post("/v1/track", json=_track("m-dup"))
        collector.warehouse.load()
        second = http.post("/v1/track", json=_track("m-dup"))
        third = http.post("/v1/track", json=_track("m-dup"))
    assert [r.status_code for r in (first, second, third)] == [200, 200, 200]
    collector.warehouse.load()
    assert collector.warehouse.query("SELECT count(*) FROM events") == [(1,)]
    assert collector.warehouse.query(
        "SELECT reason_code, ref, count(*) FROM rejects GROUP BY ALL"
    ) == [("duplicate", "m-dup", 2)]


def test_gzip_batch_with_shared_context_is_unpacked(collector: LiveCollector) -> None:
    body = {
        "batch": [{"type": "page", "anonymousId": "a", "messageId": "gz-1"}],
        "context": {"page": {"url": "https://shop.example/p?utm_source=news&gclid=G1"}},
    }
    with collector.client(auth=(collector.warehouse.write_key, "")) as http:
        response = http.post(
            "/v1/batch",
            content=gzip.compress(orjson.dumps(body)),
            headers={"content-encoding": "gzip", "content-type": "application/json"},
        )
    assert response.status_code == 200
    collector.warehouse.load()
    assert collector.warehouse.query("SELECT path, utm_source, gclid FROM events") == [
        ("/p", "news", "G1")
    ]


def test_truncated_gzip_is_400(collector: LiveCollector) -> None:
    packed = gzip.compress(orjson.dumps(_track("m-gz")))
    with collector.client(auth=(collector.warehouse.write_key, "")) as http:
        response = http.post(
            "/v1/track", content=packed[:-12], headers={"content-encoding": "gzip"}
        )
    assert (response.status_code, response.json()["code"]) == (400, "bad_gzip")


def test_client_ip_is_stored_truncated(collector: LiveCollector) -> None:
    with collector.client(auth=(collector.warehouse.write_key, "")) as http:
        http.post("/v1/track", json=_track("m-ip", context={"ip": "203.0.113.77"}))
    collector.warehouse.load()
    assert collector.warehouse.query("SELECT ip, context FROM events") == [("203.0.113.0", "{}")]


def test_cors_preflight_allows_the_page_origin(collector: LiveCollector) -> None:
    origin = "https://shop.example"
    with collector.client() as http:
        response = http.options(
            "/v1/batch",
            headers={"origin": origin, "access-control-request-method": "POST"},
        )
    assert response.status_code == 204
    assert response.headers["access-control-allow-origin"] == "*"  # the default: any page
    assert "Content-Type" in response.headers["access-control-allow-headers"]


def test_full_spool_answers_503_with_retry_after(
    tmp_path: object, start_collector: Callable[[Warehouse], LiveCollector]
) -> None:
    from pathlib import Path

    wh = make_warehouse(make_settings(Path(str(tmp_path)), spool_limit_bytes=1))
    live = start_collector(wh)
    with live.client(auth=(wh.write_key, "")) as http:
        first = http.post("/v1/track", json=_track("m-first"))  # the empty spool is under 1 byte
        responses = [http.post("/v1/track", json=_track(f"m-{i}")) for i in range(3)]
        refused = [r for r in responses if r.status_code == 503]
    assert first.status_code == 200
    assert refused, "the spool is over its 1-byte limit"
    assert refused[0].headers["retry-after"] == "5"
    assert refused[0].json()["code"] == "overloaded"


def test_unknown_route_is_404_json(collector: LiveCollector) -> None:
    with collector.client() as http:
        response = http.post("/v2/track", json={})
    assert (response.status_code, response.json()["code"]) == (404, "not_found")


def test_tracker_is_served_with_defaults(collector: LiveCollector) -> None:
    with collector.client() as http:
        response = http.get("/t.js")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/javascript")
    assert response.text.startswith(
        'var __touchline_defaults={"dnt":false,"consent":"granted","stripParams":[]}'
    )
    assert len(gzip.compress(response.content)) < 5 * 1024


def test_every_message_type_has_its_endpoint(collector: LiveCollector) -> None:
    calls = {
        "/v1/page": {"anonymousId": "a", "name": "Home"},
        "/v1/screen": {"anonymousId": "a", "name": "Home"},
        "/v1/identify": {"userId": "u", "traits": {"email": "Ann@Example.com"}},
        "/v1/alias": {"userId": "u", "previousId": "a"},
        "/v1/group": {"userId": "u", "groupId": "acme"},
    }
    with collector.client(auth=(collector.warehouse.write_key, "")) as http:
        codes = [http.post(path, json=body).status_code for path, body in calls.items()]
    assert codes == [200] * 5
    collector.warehouse.load()
    assert collector.warehouse.query(
        "SELECT type, email, group_id, previous_id FROM events ORDER BY type"
    ) == [
        ("alias", None, None, "a"),
        ("group", None, "acme", None),
        ("identify", "ann@example.com", None, None),
        ("page", None, None, None),
        ("screen", None, None, None),
    ]


@pytest.mark.parametrize(
    ("headers", "status", "code"),
    [
        ({"authorization": "Basic !!!notbase64"}, 401, "bad_authorization"),
        ({"content-encoding": "br"}, 400, "bad_encoding"),
    ],
)
def test_garbage_headers_are_client_errors(
    collector: LiveCollector, headers: dict[str, str], status: int, code: str
) -> None:
    with collector.client() as http:
        response = http.post("/v1/track", content=b"{}", headers=headers)
    assert (response.status_code, response.json()["code"]) == (status, code)


def test_valid_batch_without_message_ids_gets_server_ids_per_request(
    collector: LiveCollector,
) -> None:
    """As Segment does: a message without messageId gets the server's id, so a body sent
    twice is two sets of events (clients that retry send their own messageId)."""
    body = {
        "batch": [
            {"type": "page", "anonymousId": "a", "timestamp": "2025-03-01T10:00:00Z"},
            {
                "type": "track",
                "event": "Bought",
                "userId": "u",
                "timestamp": "2025-03-01T10:01:00Z",
                "context": {"ip": "198.51.100.23"},
            },
        ],
        "context": {"library": {"name": "analytics-python"}},
        "sentAt": "2025-03-01T10:02:00Z",
    }
    with collector.client(auth=(collector.warehouse.write_key, "")) as http:
        first = http.post("/v1/batch", json=body)
        retry = http.post("/v1/batch", json=body)
    assert [first.status_code, retry.status_code] == [200, 200]
    collector.warehouse.load()
    rows = collector.warehouse.query(
        "SELECT type, ip, sent_at, context, write_key FROM events ORDER BY timestamp"
    )
    assert [(t, ip, str(sent), key) for t, ip, sent, _, key in rows] == [
        ("page", "127.0.0.0", "2025-03-01 10:02:00", "web"),
        ("page", "127.0.0.0", "2025-03-01 10:02:00", "web"),
        ("track", "198.51.100.0", "2025-03-01 10:02:00", "web"),
        ("track", "198.51.100.0", "2025-03-01 10:02:00", "web"),
    ]
    assert all(orjson.loads(r[3])["library"] == {"name": "analytics-python"} for r in rows)
    assert collector.warehouse.query("SELECT count(DISTINCT message_id) FROM events") == [(4,)]
    assert collector.warehouse.query("SELECT count(*) FROM rejects") == [(0,)]


def test_cors_never_reflects_an_origin_with_credentials(
    tmp_path: Path, start_collector: Callable[[Warehouse], LiveCollector],
    collector: LiveCollector,
) -> None:
    (tmp_path / "listed").mkdir()
    listed = start_collector(make_warehouse(make_settings(
        tmp_path / "listed", cors_origins=["https://shop.example"])))
    answers = {}
    for name, live, origin in (
        ("any", collector, "https://evil.example"),
        ("listed", listed, "https://shop.example"),
        ("unlisted", listed, "https://evil.example"),
    ):
        with live.client() as http:
            response = http.options("/v1/batch", headers={"origin": origin})
        answers[name] = (
            response.headers.get("access-control-allow-origin"),
            response.headers.get("access-control-allow-credentials"),
        )
    assert answers == {
        "any": ("*", None),
        "listed": ("https://shop.example", None),
        "unlisted": (None, None),
    }


def test_stats_need_an_admin_key(collector: LiveCollector) -> None:
    wh = collector.warehouse
    statuses = {}
    for name, auth in (("none", None), ("write", (wh.write_key, "")),
                       ("server", (wh.server_key, "")), ("admin", (wh.admin_key, ""))):
        with collector.client(auth=auth) as http:
            statuses[name] = http.get("/v1/stats").status_code
    assert statuses == {"none": 401, "write": 403, "server": 403, "admin": 200}


def test_repeated_failed_authentication_from_one_address_is_throttled(
    collector: LiveCollector,
) -> None:
    """Wrong keys spend the address's tokens; then even a good key waits (429 with
    Retry-After), so keys cannot be guessed at full speed."""
    with collector.client(auth=("tlw_guess", "")) as http:
        codes = [http.post("/v1/track", json=_track(f"g{i}")).status_code for i in range(12)]
    with collector.client(auth=(collector.warehouse.write_key, "")) as http:
        after = http.post("/v1/track", json=_track("good"))
    assert codes == [401] * AUTH_FAILURE_BURST + [429] * (12 - AUTH_FAILURE_BURST)
    assert after.status_code == 429
    assert int(after.headers["retry-after"]) >= 1


def test_the_failure_limiter_refills_and_forgets_the_oldest_address() -> None:
    limiter = AddressBudget(burst=2, refill_per_second=1.0, max_addresses=2)
    limiter.spend("a", 0.0)
    limiter.spend("a", 0.0)
    assert (limiter.exhausted("a", 0.0), limiter.exhausted("a", 1.0)) == (True, False)
    limiter.spend("b", 0.0)
    limiter.spend("c", 0.0)
    assert limiter.exhausted("a", 0.0) is False  # forgotten: memory stays bounded


def nested_track(depth: int) -> bytes:
    """A track whose properties make the whole message ``depth`` levels deep, as bytes (JSON
    writers refuse to write what the test needs to send)."""
    inner = b'{"a":' * (depth - 2) + b"{}" + b"}" * (depth - 2)
    return b'{"event":"Deep","anonymousId":"a","properties":' + inner + b"}"


@pytest.mark.parametrize(
    ("path", "depth", "auth"),
    [
        ("/v1/batch", 1000, False),  # decoded before the key check, it used to be a 500
        ("/v1/track", 254, True),
        ("/v1/batch", 254, True),
        ("/v1/track", MAX_JSON_DEPTH + 1, True),
    ],
)
def test_deep_nesting_is_a_400_with_the_reason_never_a_500(
    collector: LiveCollector, path: str, depth: int, auth: bool
) -> None:
    body = nested_track(depth) if path == "/v1/track" else (
        b'{"batch":[' + nested_track(depth - 2) + b"]}"
    )
    with collector.client(auth=(collector.warehouse.write_key, "") if auth else None) as http:
        response = http.post(path, content=body)
    assert (response.status_code, response.json()["code"]) == (400, "too_deep")
    assert str(MAX_JSON_DEPTH) in response.json()["message"]


def test_nesting_up_to_the_limit_is_accepted(collector: LiveCollector) -> None:
    with collector.client(auth=(collector.warehouse.write_key, "")) as http:
        response = http.post("/v1/track", content=nested_track(MAX_JSON_DEPTH))
    assert response.status_code == 200
    collector.warehouse.load()
    assert collector.warehouse.query("SELECT event FROM events") == [("Deep",)]


def _nesting(value: object) -> int:
    """The JSON nesting depth of a Python value, recursively: what json_depth must count."""
    if isinstance(value, dict):
        return 1 + max((_nesting(x) for x in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_nesting(x) for x in value), default=0)
    return 0


@pytest.mark.parametrize(
    "value",
    [{"a": '[[{"x'}, ["}", "]]", '\\"[['], {"k\\\\\"": [[{"v": "\\\\"}]]}, 1, "x", [[], [[[]]]]],
)
def test_json_depth_counts_brackets_outside_strings_as_the_parser_does(value: object) -> None:
    assert json_depth(orjson.dumps(value)) == _nesting(value)


@pytest.mark.parametrize(
    ("field", "value", "fast"),
    [
        ("properties", {"a": {"b": [1, None]}}, True),
        ("context", {}, True),
        ("traits", None, True),
        ("properties", [1], False),
        ("context", "x", False),
        ("integrations", 3, False),
        ("messageId", "", False),
        ("timestamp", "", False),
        ("timestamp", "2025-03-01T10:00:00Z", True),
        ("sentAt", "yesterday", False),
    ],
)
def test_the_fast_batch_path_takes_objects_and_times_only_and_leaves_the_rest_to_the_checks(
    field: str, value: object, fast: bool
) -> None:
    message = {"type": "track", "event": "e", "anonymousId": "a", field: value}
    assert (fast_batch(orjson.dumps({"batch": [message]})) is not None) is fast
    # whichever path it takes, the per-message check agrees on whether the message is valid
    assert (check_message(message) is None) is fast


_TRICKY_TEXT = st.text(alphabet='"[]{}\\,: a', max_size=6)
_JSON_VALUES = st.recursive(
    st.none() | st.integers(-(2**63), 2**63 - 1) | _TRICKY_TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_TRICKY_TEXT, inner, max_size=4),
    max_leaves=30,
)


@hypothesis.settings(max_examples=300, deadline=None)
@hypothesis.given(_JSON_VALUES)
def test_json_depth_equals_the_nesting_of_any_value_with_brackets_quotes_escapes_in_text(
    value: object,
) -> None:
    assert json_depth(orjson.dumps(value)) == _nesting(value)
    assert json_depth(orjson.dumps({"batch": [value, value]})) == 2 + _nesting(value)


_KEYS = st.sampled_from(["a", "b", "é", "context", "page", "properties", 'q"', "\\u0061"])
_PAIRS = st.recursive(
    st.lists(st.tuples(_KEYS, st.sampled_from(["1", '"a"', '"b"', "null"])), max_size=4),
    lambda inner: st.lists(st.tuples(_KEYS, inner), max_size=4),
    max_leaves=12,
)


def _object_text(pairs: object) -> bytes:
    """JSON text of an object given as (key, value) pairs: a key may repeat, as on the wire."""
    if isinstance(pairs, str):
        return pairs.encode()
    assert isinstance(pairs, list)
    # "\\u0061" stands for the key "a" spelled with an escape
    keys = [b'"\\u0061"' if key == "\\u0061" else orjson.dumps(key) for key, _ in pairs]
    values = [_object_text(value) for _, value in pairs]
    return b"{" + b",".join(k + b":" + v for k, v in zip(keys, values, strict=True)) + b"}"


@hypothesis.settings(max_examples=400, deadline=None)
@hypothesis.given(_PAIRS, _PAIRS, _PAIRS)
def test_the_second_parse_is_skipped_only_when_no_read_object_repeats_a_key(
    root: list[tuple[str, object]], context: list[tuple[str, object]],
    properties: list[tuple[str, object]],
) -> None:
    raw = _object_text([*root, ("context", context), ("properties", properties)])
    if may_repeat_key(raw, orjson.loads(raw)):
        return
    assert repeated_key(decode_marking_repeats(raw)) is None


def test_rejects_and_the_spool_never_keep_a_write_key_or_a_full_ip(
    collector: LiveCollector,
) -> None:
    wh = collector.warehouse
    bad = {"event": "x", "anonymousId": 5, "writeKey": wh.write_key,
           "context": {"ip": "203.0.113.77"}, "properties": {"password": "hunter2"}}
    good = {"type": "track", "event": "ok", "anonymousId": "a", "messageId": "fine"}
    with collector.client() as http:
        fast = http.post("/v1/batch", json={"writeKey": wh.write_key, "batch": [good]})
        mixed = http.post("/v1/batch", json={"writeKey": wh.write_key,
                                             "batch": [{**bad, "type": "track"}, bad]})
    assert (fast.status_code, mixed.json()["rejected"]) == (200, 2)
    spooled = b"".join(p.read_bytes() for p in Path(wh.settings.spool_dir).glob("*.seg"))
    assert wh.write_key.encode() not in spooled
    assert b"hunter2" not in spooled
    collector.warehouse.load()
    rows = wh.query("SELECT reject_id, raw FROM rejects ORDER BY line")
    assert len({reject_id for reject_id, _ in rows}) == 2
    for _, raw in rows:
        context = orjson.loads(raw)["context"]
        assert (orjson.loads(raw)["writeKey"], context["ip"]) == ("[removed]", "203.0.113.0")
        assert orjson.loads(raw)["properties"] == {"password": "[removed]"}
    assert wh.query("SELECT message_id FROM events") == [("fine",)]


REFUSED_SINGLES = {
    "event_too_large": (orjson.dumps(_track("m-big", properties={"blob": "x" * MAX_EVENT_BYTES})),
                        {}),
    "bad_json": (b'{"event": "x", "anonym', {}),
    "form_encoded": (b"event=x&anonymousId=a",
                     {"content-type": "application/x-www-form-urlencoded"}),
    "bad_gzip": (orjson.dumps(_track("m-gz")), {"content-encoding": "gzip"}),
    "missing_id": (orjson.dumps({"event": "Signed Up", "userId": ""}), {}),
    "bad_id": (orjson.dumps({"event": "x", "userId": 17}), {}),
    "missing_event": (orjson.dumps({"anonymousId": "a"}), {}),
}


@pytest.mark.parametrize("case", sorted(REFUSED_SINGLES))
def test_a_refused_single_event_is_recorded_in_rejects_with_its_reason(
    collector: LiveCollector, case: str
) -> None:
    body, headers = REFUSED_SINGLES[case]
    with collector.client(auth=(collector.warehouse.write_key, "")) as http:
        response = http.post("/v1/track", content=body, headers=headers)
    assert response.status_code == 400
    collector.warehouse.load()
    [(code, reason, raw, source, step)] = collector.warehouse.query(
        "SELECT reason_code, reason, raw, source, step FROM rejects")
    assert (code, reason) == (response.json()["code"], response.json()["message"])
    assert (source, step) == ("/v1/track", "collect:api")
    if case != "bad_gzip":  # a body that does not gunzip is not read
        assert raw == body.decode()[:REJECT_RAW_MAX_CHARS]


def test_a_truncated_beacon_is_recorded_under_the_key_in_its_text(
    collector: LiveCollector,
) -> None:
    """t.js sends the key in the body: even a body cut off mid-JSON names its sender."""
    key = collector.warehouse.write_key
    body = orjson.dumps({"writeKey": key, "batch": [_track("m-cut")]})[:-12]
    with collector.client() as http:
        response = http.post("/v1/batch", content=body, headers={"content-type": "text/plain"})
        anonymous = http.post("/v1/track", content=b'{"event": "x", "anonym')
    assert (response.status_code, anonymous.status_code) == (400, 400)
    collector.warehouse.load()
    [(code, raw)] = collector.warehouse.query("SELECT reason_code, raw FROM rejects")
    assert code == "bad_json"
    assert key not in raw and '"writeKey":"[removed]"' in raw.replace(" ", "")


def test_refusals_recorded_per_client_address_are_bounded(collector: LiveCollector) -> None:
    collector.app.recorded_refusals = AddressBudget(burst=3, refill_per_second=1e-6)
    with collector.client(auth=(collector.warehouse.write_key, "")) as http:
        codes = {http.post("/v1/track", json={"anonymousId": "a"}).status_code
                 for _ in range(6)}
    assert codes == {400}
    collector.warehouse.load()
    assert collector.warehouse.query("SELECT count(*) FROM rejects") == [(3,)]
    assert collector.app.stats["refusals_not_recorded"] == 3


@pytest.mark.parametrize("route", ["/v1/track", "fast batch", "checked batch"])
def test_identical_messages_without_message_id_are_separate_events(
    collector: LiveCollector, route: str
) -> None:
    """Segment gives each call its own id: a content hash would store two real clicks once."""
    message = {"type": "track", "event": "Clicked", "anonymousId": "a",
               "timestamp": "2025-03-01T10:00:00Z"}
    with collector.client(auth=(collector.warehouse.write_key, "")) as http:
        if route == "/v1/track":
            statuses = [http.post(route, json=message).status_code for _ in range(2)]
        else:
            # an alias beside them sends the batch through the per-message checks
            alias = {"type": "alias", "userId": "u", "previousId": "a"}
            extra = [alias] if "checked" in route else []
            statuses = [http.post("/v1/batch", json={"batch": [message, message, *extra]}
                                  ).status_code]
    assert set(statuses) == {200}
    collector.warehouse.load()
    rows = collector.warehouse.query(
        "SELECT count(*), count(DISTINCT message_id) FROM events WHERE event = 'Clicked'")
    assert rows == [(2, 2)]
    assert collector.warehouse.query("SELECT count(*) FROM rejects") == [(0,)]


@pytest.mark.parametrize("path", ["fast", "checked"])
def test_the_32_kb_limit_counts_bytes_on_both_batch_paths(
    collector: LiveCollector, path: str
) -> None:
    """17,000 'é' are 17,000 characters but 34,000 bytes: over the limit on either path."""
    wide = {"type": "track", "event": "Wide", "anonymousId": "a", "messageId": "wide",
            "properties": {"text": "é" * 17_000}}
    narrow = {**wide, "messageId": "narrow", "properties": {"text": "e" * 17_000}}
    extra = [{"type": "alias", "userId": "u", "previousId": "a", "messageId": "al"}]
    batch = [wide, narrow, *(extra if path == "checked" else [])]
    with collector.client(auth=(collector.warehouse.write_key, "")) as http:
        assert http.post("/v1/batch", json={"batch": batch}).status_code == 200
    collector.warehouse.load()
    assert collector.warehouse.query("SELECT message_id FROM events WHERE event = 'Wide'") == [
        ("narrow",)
    ]
    assert collector.warehouse.query("SELECT reason_code FROM rejects") == [("event_too_large",)]


@pytest.mark.parametrize(
    "timestamp",
    ["9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+23:59", "2025-W01-1", "2025-060",
     "20250301T100000"],
)
def test_times_the_warehouse_cannot_store_as_meant_are_refused_at_the_door(
    collector: LiveCollector, timestamp: str
) -> None:
    message = {"type": "track", "event": "x", "anonymousId": "a", "timestamp": timestamp}
    with collector.client(auth=(collector.warehouse.write_key, "")) as http:
        single = http.post("/v1/track", json=message)
        batch = http.post("/v1/batch", json={"batch": [message]})
    assert (single.status_code, single.json()["code"]) == (400, "bad_timestamp")
    assert batch.json()["rejected"] == 1
    collector.warehouse.load()
    assert collector.warehouse.query("SELECT count(*) FROM events") == [(0,)]
    assert collector.warehouse.query("SELECT DISTINCT reason_code FROM rejects") == [
        ("bad_timestamp",)
    ]


def test_a_batch_member_with_a_key_twice_is_rejected_not_stored_with_the_other_copy(
    collector: LiveCollector,
) -> None:
    """The collector's parser checked the last anonymousId, the loader's read the first (empty):
    an event without id was stored. Now the message goes to rejects as duplicate_key."""
    body = (b'{"batch":[{"type":"track","event":"x","anonymousId":"","anonymousId":"real",'
            b'"messageId":"twice"},{"type":"track","event":"x","anonymousId":"a",'
            b'"messageId":"once"}]}')
    with collector.client(auth=(collector.warehouse.write_key, "")) as http:
        assert http.post("/v1/batch", content=body).status_code == 200
    collector.warehouse.load()
    assert collector.warehouse.query("SELECT message_id, anonymous_id FROM events") == [
        ("once", "a")
    ]
    assert collector.warehouse.query("SELECT reason_code FROM rejects") == [("duplicate_key",)]


TWICE = (b'{"type":"track","event":"x","anonymousId":"","anonymousId":"real",'
         b'"messageId":"twice","timestamp":"2025-03-01T10:00:00Z"}')


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (TWICE, "anonymousId"),
        (b'{"type":"page","anonymousId":"a","messageId":"p","context":{"page":'
         b'{"url":"https://x.io/?utm_source=a","url":"https://y.io/"}}}', "context.page.url"),
    ],
)
def test_a_single_event_with_a_key_twice_is_refused_and_recorded_as_duplicate_key(
    collector: LiveCollector, body: bytes, field: str
) -> None:
    """orjson kept the last copy: the event was stored with anonymousId "real" (or the second
    URL), where the loader and file ingest reject the same message."""
    with collector.client(auth=(collector.warehouse.write_key, "")) as http:
        response = http.post("/v1/track" if b"track" in body else "/v1/page", content=body)
    assert (response.status_code, response.json()["code"]) == (400, "duplicate_key")
    collector.warehouse.load()
    assert collector.warehouse.query("SELECT count(*) FROM events") == [(0,)]
    assert collector.warehouse.query("SELECT reason_code, field FROM rejects") == [
        ("duplicate_key", field)
    ]


def test_a_batch_the_fast_path_declines_still_rejects_the_member_with_a_key_twice(
    collector: LiveCollector,
) -> None:
    """An alias call sends the batch down the detailed path, which re-encoded each member
    with orjson: the repeated key vanished and the message was stored with its last copy."""
    body = (b'{"batch":[' + TWICE + b',{"type":"alias","previousId":"old","userId":"new",'
            b'"messageId":"al","timestamp":"2025-03-01T10:00:00Z"}]}')
    with collector.client(auth=(collector.warehouse.write_key, "")) as http:
        response = http.post("/v1/batch", content=body)
    assert response.json() == {"success": True, "accepted": 1, "rejected": 1}
    collector.warehouse.load()
    assert collector.warehouse.query("SELECT message_id FROM events") == [("al",)]
    assert collector.warehouse.query("SELECT reason_code, field, line FROM rejects") == [
        ("duplicate_key", "anonymousId", 1)
    ]


def test_a_batch_body_with_batch_twice_is_refused_whole(collector: LiveCollector) -> None:
    """msgspec validated the last ``batch``, the loader exploded the first: 2 acknowledged,
    1 different one stored."""
    one = b'{"type":"track","event":"x","anonymousId":"a","messageId":"first"}'
    two = b'{"type":"track","event":"x","anonymousId":"a","messageId":"second"}'
    three = two.replace(b"second", b"3rd")
    body = b'{"batch":[' + one + b'],"batch":[' + two + b"," + three + b"]}"
    with collector.client(auth=(collector.warehouse.write_key, "")) as http:
        response = http.post("/v1/batch", content=body)
    assert (response.status_code, response.json()["code"]) == (400, "duplicate_key")
    collector.warehouse.load()
    assert collector.warehouse.query("SELECT count(*) FROM events") == [(0,)]
    assert collector.warehouse.query("SELECT reason_code, field FROM rejects") == [
        ("duplicate_key", "batch")
    ]


def test_a_valid_batch_with_its_context_twice_loads_nothing_and_rejects_every_member(
    collector: LiveCollector,
) -> None:
    """The fast path spools a valid batch as received (msgspec checked the last ``context``);
    the loader merged the first into every message. Now each member is a duplicate_key."""
    body = (b'{"context":{"ip":"198.51.100.1"},"context":{"ip":"203.0.113.9"},"batch":['
            b'{"type":"track","event":"x","anonymousId":"a","messageId":"one"},'
            b'{"type":"track","event":"x","anonymousId":"a","messageId":"two"}]}')
    with collector.client(auth=(collector.warehouse.write_key, "")) as http:
        assert http.post("/v1/batch", content=body).json()["accepted"] == 2
    collector.warehouse.load()
    assert collector.warehouse.query("SELECT count(*) FROM events") == [(0,)]
    assert collector.warehouse.query("SELECT reason_code, count(*) FROM rejects GROUP BY 1") == [
        ("duplicate_key", 2)
    ]
