"""Property test: whatever a client sends, the collector answers 2xx/4xx/503, never a 5xx crash."""

from __future__ import annotations

import asyncio
import base64
import gzip
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from touchline.collect.app import AddressBudget, Collector
from touchline.collect.keys import KeyRing
from touchline.collect.webhooks import SourceMapping
from touchline.config import Settings

KEY = "tlw_fuzz-key"
SERVER_KEY = "tls_fuzz-key"
WEBHOOKS = {
    "chat": SourceMapping("chat", "event", {
        "anonymousId": "visitor", "properties": "chat", "properties.email": "visitor.email",
        "context.page.url": "url", "timestamp": "at"}, {"type": "track", "event": "Chat"}),
    "crm": SourceMapping("crm", "deal", {
        "deal_id": "objectId", "amount": "properties.amount", "created_at": "anonymousId",
        "closed_at": "timestamp"}),
}
PATHS = [
    "/v1/track",
    "/v1/page",
    "/v1/identify",
    "/v1/alias",
    "/v1/group",
    "/v1/screen",
    "/v1/batch",
    "/v1/webhooks/chat",
    "/v1/webhooks/crm",
    "/v1/dni/lease",
    "/v1/nope",
    "/t.js",
]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)
segment_keys = st.sampled_from(
    [
        "type",
        "event",
        "anonymousId",
        "userId",
        "messageId",
        "timestamp",
        "properties",
        "traits",
        "context",
        "groupId",
        "previousId",
        "sentAt",
        "writeKey",
        "batch",
        # the fuzz webhook mappings' payload fields
        "visitor",
        "chat",
        "url",
        "at",
        "objectId",
    ]
)
messages = st.dictionaries(segment_keys, json_values | st.text(max_size=30), max_size=8)
bodies = st.one_of(
    messages.map(orjson.dumps),
    st.lists(messages, max_size=5).map(lambda b: orjson.dumps({"batch": b})),
    json_values.map(orjson.dumps),
    st.binary(max_size=200),
    # nesting past every JSON reader's and writer's recursion limit
    st.integers(1, 2000).map(lambda n: b'{"batch":' + b"[" * n + b"]" * n + b"}"),
)


async def _call(
    app: Collector, method: str, path: str, body: bytes, headers: list[tuple[bytes, bytes]]
) -> int:
    sent: list[dict[str, Any]] = []
    chunks = [body[: len(body) // 2], body[len(body) // 2 :]]

    async def receive() -> dict[str, Any]:
        chunk = chunks.pop(0) if chunks else b""
        return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "headers": headers,
        "query_string": b"",
        "client": ("127.0.0.1", 5000),
    }
    await app(scope, receive, send)
    return int(sent[0]["status"])


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Collector:
    folder: Path = tmp_path_factory.mktemp("fuzz")
    collector = Collector(
        Settings(
            spool_dir=folder / "spool",
            spool_min_free_bytes=0,
            dni_pools={"default": ["+15550100001"]},
        ),
        keys=KeyRing.from_clear({KEY: ("fuzz", "write"), SERVER_KEY: ("crm", "server")}),
        webhooks=WEBHOOKS,
    )
    collector.start()
    return collector


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    method=st.sampled_from(["POST", "POST", "POST", "GET", "OPTIONS", "PUT"]),
    path=st.sampled_from(PATHS),
    body=bodies,
    auth=st.sampled_from(["basic", "server", "none", "wrong", "garbage"]),
    compress=st.sampled_from([None, "gzip", "truncated", "zstd"]),
)
def test_no_input_yields_a_server_error(
    app: Collector, method: str, path: str, body: bytes, auth: str, compress: str | None
) -> None:
    app.auth_failures = AddressBudget()  # each example starts unthrottled
    headers: list[tuple[bytes, bytes]] = []
    if auth in ("basic", "server"):
        key = KEY if auth == "basic" else SERVER_KEY
        headers.append((b"authorization", b"Basic " + base64.b64encode(f"{key}:".encode())))
    elif auth == "wrong":
        headers.append((b"authorization", b"Basic " + base64.b64encode(b"other:")))
    elif auth == "garbage":
        headers.append((b"authorization", b"Basic %%%"))
    if compress == "gzip":
        body, headers = gzip.compress(body), [*headers, (b"content-encoding", b"gzip")]
    elif compress == "truncated":
        body, headers = gzip.compress(body)[:-5], [*headers, (b"content-encoding", b"gzip")]
    elif compress == "zstd":
        headers.append((b"content-encoding", b"zstd"))
    status = asyncio.run(_call(app, method, path, body, headers))
    assert status < 500 or status == 503
