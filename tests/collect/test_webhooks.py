"""Webhooks: declarative per-source mappings turn chat/form/CRM payloads into canonical rows."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import orjson
import pytest
from collector_kit import LiveCollector, Warehouse, make_settings, make_warehouse

from touchline.collect.webhooks import load_mappings, map_payload
from touchline.errors import ConfigError
from touchline.signing import sign

MAPPINGS = """
[sources.livechat]
kind = "event"
type = "track"
event = "Chat Started"
[sources.livechat.fields]
messageId = "chat.id"
anonymousId = "visitor.touchline_id"
timestamp = "chat.started_at"
"traits.email" = "visitor.email"
"properties.chat_id" = "chat.id"

[sources.hubspot]
kind = "deal"
[sources.hubspot.fields]
deal_id = "objectId"
account_name = "properties.company"
stage = "properties.dealstage"
status = "properties.status"
amount = "properties.amount"
currency = "properties.currency"
created_at = "properties.createdate"
updated_at = "occurredAt"

[sources.forms]
kind = "event"
type = "track"
event = "Form Submitted"
[sources.forms.fields]
anonymousId = "visitor"
properties = "answers"
"properties.email" = "email"

[sources.phones]
kind = "call"
[sources.phones.fields]
call_id = "id"
tracking_number = "to"
started_at = "start"
duration_seconds = "seconds"
answered = "answered"
"""

CHAT = {
    "chat": {"id": "chat-9", "started_at": "2025-03-01T10:00:00Z"},
    "visitor": {"touchline_id": "anon-7", "email": "John@Example.com"},
}


def _deal(stage: str, updated: str) -> dict[str, object]:
    return {
        "objectId": 4711,
        "occurredAt": updated,
        "properties": {
            "company": "Acme",
            "dealstage": stage,
            "status": "won" if stage == "closedwon" else "open",
            "amount": "1200.50",
            "currency": "EUR",
            "createdate": "2025-02-01T09:00:00Z",
        },
    }


@pytest.fixture
def hooked(tmp_path: Path, start_collector: Callable[[Warehouse], LiveCollector]) -> LiveCollector:
    path = tmp_path / "webhooks.toml"
    path.write_text(MAPPINGS)
    return start_collector(make_warehouse(make_settings(tmp_path, webhook_mappings_file=path)))


def test_mapping_builds_a_segment_message_from_dotted_paths(tmp_path: Path) -> None:
    path = tmp_path / "m.toml"
    path.write_text(MAPPINGS)
    message = map_payload(load_mappings(path)["livechat"], CHAT)
    assert message == {
        "type": "track",
        "event": "Chat Started",
        "messageId": "chat-9",
        "anonymousId": "anon-7",
        "timestamp": "2025-03-01T10:00:00Z",
        "traits": {"email": "John@Example.com"},
        "properties": {"chat_id": "chat-9"},
    }


def test_deal_mapping_with_unknown_column_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "m.toml"
    path.write_text('[sources.crm]\nkind = "deal"\n[sources.crm.fields]\ndeal_value = "x"\n')
    with pytest.raises(ConfigError, match="deal_value"):
        load_mappings(path)


def test_chat_webhook_becomes_an_event_with_the_source_name(hooked: LiveCollector) -> None:
    with hooked.client(auth=(hooked.warehouse.server_key, "")) as http:
        response = http.post("/v1/webhooks/livechat", json=CHAT)
        unknown = http.post("/v1/webhooks/drift", json=CHAT)
        invalid = http.post("/v1/webhooks/livechat", json={"chat": {}})
    assert response.json() == {"success": True, "accepted": 1, "rejected": 0}
    assert (unknown.status_code, unknown.json()["code"]) == (404, "unknown_source")
    assert (invalid.status_code, invalid.json()["code"]) == (400, "missing_id")
    hooked.warehouse.load()
    assert hooked.warehouse.query(
        "SELECT message_id, event, anonymous_id, email, source, timestamp FROM events"
    ) == [
        (
            "chat-9",
            "Chat Started",
            "anon-7",
            "john@example.com",
            "livechat",
            datetime(2025, 3, 1, 10, 0),
        )
    ]


def test_crm_deal_updates_add_deal_snapshots_once(hooked: LiveCollector) -> None:
    with hooked.client(auth=(hooked.warehouse.server_key, "")) as http:
        for payload in (
            _deal("qualified", "2025-02-10T09:00:00Z"),
            _deal("closedwon", "2025-03-10T09:00:00Z"),
            _deal("closedwon", "2025-03-10T09:00:00Z"),  # a redelivered webhook
        ):
            assert http.post("/v1/webhooks/hubspot", json=payload).status_code == 200
    hooked.warehouse.load()
    assert hooked.warehouse.query(
        "SELECT deal_id, account_name, stage, status, amount, currency, source FROM deals "
        "ORDER BY updated_at"
    ) == [
        ("4711", "Acme", "qualified", "open", 1200.5, "EUR", "hubspot"),
        ("4711", "Acme", "closedwon", "won", 1200.5, "EUR", "hubspot"),
    ]


def test_a_webhook_record_named_only_by_email_is_accepted_and_keeps_no_placeholder(  # type: ignore[no-untyped-def]
        hooked: LiveCollector) -> None:
    """A chat with a visitor the tag never saw still names its person by e-mail; one with no
    id at all is still refused."""
    walk_in = {"chat": {"id": "chat-10", "started_at": "2025-03-01T11:00:00Z"},
               "visitor": {"email": "ann@acme.com"}}
    nobody = {"chat": {"id": "chat-11", "started_at": "2025-03-01T11:00:00Z"}, "visitor": {}}
    with hooked.client(headers={"x-touchline-key": hooked.warehouse.server_key}) as http:
        accepted = http.post("/v1/webhooks/livechat", json=walk_in)
        refused = http.post("/v1/webhooks/livechat", json=nobody)
    assert accepted.json() == {"success": True, "accepted": 1, "rejected": 0}
    assert (refused.status_code, refused.json()["code"]) == (400, "missing_id")
    hooked.warehouse.load()
    assert hooked.warehouse.query(
        "SELECT message_id, anonymous_id, user_id, email FROM events") == [
        ("chat-10", None, None, "ann@acme.com")]


FAKE_DEAL = {"objectId": "FAKE-1", "properties": {"amount": "999999999"}}


@pytest.mark.parametrize("kind", ["write", "import"])
def test_the_public_write_key_cannot_post_deals_or_calls(
    hooked: LiveCollector, kind: str
) -> None:
    """t.js puts the write key in every page: with it anyone could inject CRM revenue."""
    key = hooked.warehouse.write_key if kind == "write" else hooked.warehouse.import_key
    with hooked.client(auth=(key, "")) as http:
        response = http.post("/v1/webhooks/hubspot", json=FAKE_DEAL)
        unknown_source = http.post("/v1/webhooks/nowhere", json=FAKE_DEAL)
    assert (response.status_code, response.json()["code"]) == (403, "key_not_allowed")
    assert unknown_source.status_code == 403  # no key of the wrong kind learns source names
    hooked.warehouse.load()
    assert hooked.warehouse.query("SELECT count(*) FROM deals") == [(0,)]


def test_a_key_in_the_query_string_is_refused_even_when_valid(hooked: LiveCollector) -> None:
    with hooked.client() as http:
        response = http.post(
            f"/v1/webhooks/livechat?key={hooked.warehouse.server_key}", json=CHAT
        )
        tracked = http.post(
            f"/v1/track?writeKey={hooked.warehouse.write_key}",
            json={"event": "x", "anonymousId": "a"},
        )
    assert (response.status_code, response.json()["code"]) == (400, "key_in_query")
    assert (tracked.status_code, tracked.json()["code"]) == (400, "key_in_query")
    hooked.warehouse.load()
    assert hooked.warehouse.query("SELECT count(*) FROM events") == [(0,)]


@pytest.fixture
def signed(
    tmp_path: Path, start_collector: Callable[[Warehouse], LiveCollector],
    monkeypatch: pytest.MonkeyPatch,
) -> LiveCollector:
    monkeypatch.setenv("HUBSPOT_SECRET", "s3cret")
    path = tmp_path / "webhooks.toml"
    path.write_text(MAPPINGS.replace('kind = "deal"', 'kind = "deal"\nsigning_secret_env = '
                                     '"HUBSPOT_SECRET"'))
    return start_collector(make_warehouse(make_settings(tmp_path, webhook_mappings_file=path)))


def test_a_signed_source_takes_only_requests_signed_with_its_secret_and_recent(
    signed: LiveCollector,
) -> None:
    body = orjson.dumps(_deal("closedwon", "2025-03-10T09:00:00Z"))
    now = int(time.time())
    cases = {
        "good": sign(b"s3cret", body, now),
        "wrong_secret": sign(b"guess", body, now),
        "replayed": sign(b"s3cret", body, now - 3600),
        "other_body": sign(b"s3cret", body + b" ", now),
        "garbage": "v1=zz",
    }
    statuses = {}
    with signed.client() as http:
        for name, signature in cases.items():
            response = http.post(
                "/v1/webhooks/hubspot", content=body,
                headers={"x-touchline-signature": signature},
            )
            statuses[name] = (response.status_code, response.json().get("code"))
        unsigned = http.post(
            "/v1/webhooks/hubspot", content=body, auth=(signed.warehouse.server_key, "")
        )
    assert statuses == {
        "good": (200, None),
        "wrong_secret": (401, "bad_signature"),
        "replayed": (401, "bad_signature"),
        "other_body": (401, "bad_signature"),
        "garbage": (401, "bad_signature"),
    }
    assert (unsigned.status_code, unsigned.json()["code"]) == (401, "bad_signature")
    signed.warehouse.load()
    assert signed.warehouse.query("SELECT deal_id, source FROM deals") == [("4711", "hubspot")]


def test_a_signing_secret_from_an_unset_variable_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "m.toml"
    path.write_text('[sources.crm]\nkind = "deal"\nsigning_secret_env = "TL_TEST_UNSET_SECRET"\n')
    with pytest.raises(ConfigError, match="TL_TEST_UNSET_SECRET"):
        load_mappings(path)


def test_a_deeply_nested_webhook_is_a_400_not_a_500(hooked: LiveCollector) -> None:
    body = b'{"chat":' * 254 + b"{}" + b"}" * 254
    with hooked.client(auth=(hooked.warehouse.server_key, "")) as http:
        response = http.post("/v1/webhooks/livechat", content=body)
    assert (response.status_code, response.json()["code"]) == (400, "too_deep")


@pytest.mark.parametrize(
    "payload",
    [
        {"visitor": "v1", "answers": "plain text", "email": "ann@acme.com"},
        {"visitor": "v1", "answers": ["a", "list"], "email": "ann@acme.com"},
    ],
)
def test_a_payload_shape_the_mapping_cannot_hold_is_a_400_naming_the_field(
    hooked: LiveCollector, payload: dict[str, object]
) -> None:
    good = {"visitor": "v2", "answers": {"plan": "pro"}, "email": "bo@acme.com"}
    with hooked.client(auth=(hooked.warehouse.server_key, "")) as http:
        single = http.post("/v1/webhooks/forms", json=payload)
        batch = http.post("/v1/webhooks/forms", json=[good, payload])
    assert (single.status_code, single.json()["code"]) == (400, "bad_shape")
    assert "properties" in single.json()["message"]
    assert batch.json() == {"success": True, "accepted": 1, "rejected": 1}
    hooked.warehouse.load()
    assert hooked.warehouse.query("SELECT anonymous_id, email FROM events") == [
        ("v2", "bo@acme.com")
    ]
    # the refused single payload and the refused list member, both recorded
    assert sorted(hooked.warehouse.query("SELECT reason_code, field, line FROM rejects")) == [
        ("bad_shape", "properties", 1), ("bad_shape", "properties", 2)
    ]


GOOD_CALL = {"id": "c1", "to": "+15550100001", "start": "2025-03-01T10:00:00+01:00",
             "seconds": "75", "answered": "yes"}


@pytest.mark.parametrize(
    ("source", "payload", "code", "field"),
    [
        ("hubspot", {}, "missing_deal_id", "deal_id"),
        ("hubspot", {"objectId": {"a": 1}, "properties": {"createdate": "2025-02-01"}},
         "bad_shape", "deal_id"),
        ("hubspot", {**_deal("open", "2025-03-10T09:00:00Z"),
                     "properties": {"amount": "lots", "createdate": "2025-02-01"}},
         "bad_number", "amount"),
        ("hubspot", {"objectId": 1, "properties": {"createdate": "someday"}},
         "bad_timestamp", "created_at"),
        ("hubspot", {"objectId": 7, "properties": {"amount": "5"}}, "missing_deal_time",
         "created_at"),
        ("phones", {**GOOD_CALL, "id": None}, "missing_call_id", "call_id"),
        ("phones", {**GOOD_CALL, "seconds": "long"}, "bad_integer", "duration_seconds"),
        ("phones", {**GOOD_CALL, "answered": "maybe"}, "bad_boolean", "answered"),
    ],
)
def test_webhook_deals_and_calls_are_checked_like_files_and_rejected_with_the_field(
    hooked: LiveCollector, source: str, payload: dict[str, object], code: str, field: str
) -> None:
    good = _deal("open", "2025-03-10T09:00:00Z") if source == "hubspot" else GOOD_CALL
    with hooked.client(auth=(hooked.warehouse.server_key, "")) as http:
        single = http.post(f"/v1/webhooks/{source}", json=payload)
        batch = http.post(f"/v1/webhooks/{source}", json=[payload, good])
    assert (single.status_code, single.json()["code"]) == (400, code)
    assert batch.json() == {"success": True, "accepted": 1, "rejected": 1}
    hooked.warehouse.load()
    assert hooked.warehouse.query("SELECT reason_code, field, line FROM rejects") == [
        (code, field, 1), (code, field, 1)  # the refused single payload and the list member
    ]
    table = "deals" if source == "hubspot" else "calls"
    assert hooked.warehouse.query(f"SELECT count(*) FROM {table}") == [(1,)]


def test_a_webhook_call_is_typed_as_a_file_row_is(hooked: LiveCollector) -> None:
    with hooked.client(auth=(hooked.warehouse.server_key, "")) as http:
        assert http.post("/v1/webhooks/phones", json=GOOD_CALL).status_code == 200
    hooked.warehouse.load()
    assert hooked.warehouse.query(
        "SELECT call_id, started_at, duration_seconds, answered, source FROM calls"
    ) == [("c1", datetime(2025, 3, 1, 9, 0), 75, True, "phones")]


@pytest.mark.parametrize(
    ("source", "body", "field"),
    [
        ("hubspot", b'{"objectId": "A", "objectId": "B", "properties": {"amount": "5", '
                    b'"createdate": "2025-02-01"}}', "objectId"),
        ("hubspot", b'{"objectId": "A", "properties": {"amount": "5", "amount": "999999", '
                    b'"createdate": "2025-02-01"}}', "properties.amount"),
        ("livechat", b'{"chat": {"id": "c1", "started_at": "2025-03-01T10:00:00Z"}, '
                     b'"visitor": {"touchline_id": "a", "touchline_id": "b"}}',
         "visitor.touchline_id"),
    ],
)
def test_a_webhook_field_given_twice_is_refused_as_duplicate_key(
    hooked: LiveCollector, source: str, body: bytes, field: str
) -> None:
    """The JSON reader keeps a repeated key's last copy, so which deal id, amount or visitor
    was meant is unknown: the record is refused as every other path refuses it; a repeated
    key the mapping never reads is payload and does not matter."""
    unread = b'{"objectId": "C", "junk": 1, "junk": 2, "properties": {"amount": "5", ' \
             b'"createdate": "2025-02-01"}}'
    with hooked.client(auth=(hooked.warehouse.server_key, "")) as http:
        single = http.post(f"/v1/webhooks/{source}", content=body,
                           headers={"content-type": "application/json"})
        batch = http.post(f"/v1/webhooks/{source}", content=b"[" + body + b"," + body + b"]",
                          headers={"content-type": "application/json"})
        fine = http.post("/v1/webhooks/hubspot", content=unread,
                         headers={"content-type": "application/json"})
    assert (single.status_code, single.json()["code"]) == (400, "duplicate_key")
    assert batch.json() == {"success": True, "accepted": 0, "rejected": 2}
    assert fine.status_code == 200
    hooked.warehouse.load()
    assert hooked.warehouse.query("SELECT reason_code, field FROM rejects") == [
        ("duplicate_key", field)] * 3
    assert hooked.warehouse.query("SELECT deal_id FROM deals") == [("C",)]
