"""The collector: a Segment-compatible HTTP API that acknowledges only what is on disk.

A raw ASGI application, not a framework: the ingestion routes run per event, and measured here
a lean path with orjson is 4-5x faster than FastAPI with per-request pydantic models. Routes:

==============================================  ===========================================
``POST /v1/track|page|screen|identify|alias|group``  one Segment message (also ``/v1/t`` ...)
``POST /v1/batch`` (and ``/v1/import``)          ``{"batch": [...]}``; bad items → ``rejects``
``POST /v1/webhooks/{source}``                   chat/form/CRM payloads, mapped by config
``POST /v1/dni/lease``                           a tracking number for the visitor's session
``GET /t.js``                                    the browser tracker
``GET /health``, ``GET /v1/stats``               liveness and counters
``GET /openapi.json``                            this API as OpenAPI 3.0 (``openapi.json``)
==============================================  ===========================================

Status codes follow Segment, because its SDKs drop a whole batch on any 4xx except 429 and retry
on 429/5xx: 200 with a small JSON body once durable; 400 ``{"code", "message"}`` for malformed
JSON, bodies over the limits (32 KB per message, 500 KB per batch) or an invalid single message;
401 for a missing or unknown write key (counted, never stored); 503 with ``Retry-After`` when
the spool or disk is over its limit. Bad input never yields a 5xx.

Keys have scopes (:data:`TRACKING_KINDS`, :data:`WEBHOOK_KINDS`, :data:`STATS_KINDS`): the
write key is public (t.js puts it in every page), so it opens only the tracking endpoints; a
key of the wrong kind gets 403. Keys come in the Basic user, the ``X-Touchline-Key`` header or
(tracking only, as Segment's beacons send it) ``writeKey`` in the body, never in the query
string, which ends up in access logs. A client address that keeps failing authentication gets
429 for a while (:class:`AddressBudget`).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import os
import re
import time
import uuid
import zlib
from collections import Counter
from collections.abc import Awaitable, Callable, MutableMapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import orjson

from touchline.collect import segment
from touchline.collect.dni import LEASES_FILE, LeaseBook
from touchline.collect.keys import KEYS_FILE, ApiKey, KeyRing
from touchline.collect.segment import (
    MAX_BATCH_BYTES,
    MAX_EVENT_BYTES,
    MAX_JSON_DEPTH,
    Problem,
    truncate_ip,
)
from touchline.collect.spool import (
    BATCH,
    CALL,
    DEAL,
    EVENT,
    REJECT,
    SpoolError,
    SpoolFullError,
    SpoolWriter,
)
from touchline.collect.webhooks import (
    SIGNATURE_HEADER,
    PayloadShapeError,
    SourceMapping,
    check_row,
    load_mappings,
    map_payload,
    repeated_mapped_key,
    verify_signature,
)
from touchline.config import Settings, load_settings
from touchline.store import CALLS, DEALS, safe_raw

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

SETTINGS_ENV = "TL_COLLECTOR_SETTINGS_JSON"
RETRY_AFTER_SECONDS = 5
SINGLE_ROUTES = {
    f"/v1/{name}": kind
    for kind, names in {
        "track": ("track", "t"),
        "page": ("page", "p"),
        "screen": ("screen", "s"),
        "identify": ("identify", "i"),
        "alias": ("alias", "a"),
        "group": ("group", "g"),
    }.items()
    for name in names
}
BATCH_ROUTES = frozenset({"/v1/batch", "/v1/import", "/v1/b"})
WEBHOOK_PREFIX = "/v1/webhooks/"
TRACKER_FILE = "t.js"
OPENAPI_FILE = "openapi.json"
OK_BODY = b'{"success":true}'
#: key kinds each door takes: the public write key must never write deals, calls or read stats
TRACKING_KINDS = frozenset({"write", "server", "import", "admin"})
WEBHOOK_KINDS = frozenset({"server", "admin"})
STATS_KINDS = frozenset({"admin"})
#: failed authentications a client address may make at once, and how fast it earns them back
AUTH_FAILURE_BURST = 10
AUTH_FAILURE_REFILL_PER_SECOND = 0.2
#: refused requests an address may have written to rejects at once, and how fast it earns
#: them back: enough to debug an integration, too few to fill a disk
REFUSALS_RECORDED_BURST = 100
REFUSALS_RECORDED_PER_SECOND = 1.0
BUDGET_ADDRESSES = 10_000  # addresses remembered; a flood of new ones evicts the oldest
QUERY_KEY_NAMES = frozenset({"key", "writekey", "write_key", "api_key", "apikey"})
_WRITE_KEY_IN_BODY = re.compile(rb'"writeKey"\s*:\s*"(?:[^"\\]|\\.)*"')
_WRITE_KEY_TEXT = re.compile(rb'"writeKey"\s*:\s*"([A-Za-z0-9_-]{1,100})"')
#: what a request carries from the routes to :meth:`Collector._record_refusal`
KEY_STATE, BODY_STATE = "touchline.key", "touchline.body"


class ClientError(Exception):
    """A request the client must fix: becomes a 4xx with ``{"code", "message"}``."""

    def __init__(
        self, status: int, code: str, message: str,
        headers: list[tuple[bytes, bytes]] | None = None, *, field: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field
        self.headers = headers or []


class AddressBudget:
    """A token bucket per client address: what one address may do at once, and how fast it
    earns it back.

    Why: two things must not run at a client's pace. Failed authentications (keys are long and
    random, but nothing should let a client try them at full speed), and refused requests
    written to ``rejects`` (a client sending garbage in a loop must not fill the disk). Memory
    is bounded: past ``max_addresses`` the least recently seen address is forgotten.
    """

    def __init__(
        self, *, burst: int = AUTH_FAILURE_BURST,
        refill_per_second: float = AUTH_FAILURE_REFILL_PER_SECOND,
        max_addresses: int = BUDGET_ADDRESSES,
    ) -> None:
        self.burst, self.refill, self.max_addresses = burst, refill_per_second, max_addresses
        self._buckets: dict[str, tuple[float, float]] = {}  # address -> (tokens, at)

    def _tokens(self, address: str, now: float) -> float:
        tokens, at = self._buckets.get(address, (float(self.burst), now))
        return min(float(self.burst), tokens + (now - at) * self.refill)

    def exhausted(self, address: str, now: float) -> bool:
        """Whether ``address`` has no token left to spend."""
        return address in self._buckets and self._tokens(address, now) < 1.0

    def spend(self, address: str, now: float) -> None:
        """Spend one token of ``address``."""
        tokens = self._tokens(address, now) - 1.0
        self._buckets.pop(address, None)
        self._buckets[address] = (tokens, now)  # re-inserted: dict order is recency
        if len(self._buckets) > self.max_addresses:
            del self._buckets[next(iter(self._buckets))]

    def retry_after(self, address: str, now: float) -> int:
        """Whole seconds until ``address`` has a token again."""
        return max(1, int((1.0 - self._tokens(address, now)) / self.refill) + 1)


def tracker_source() -> bytes:
    """The t.js source: packaged beside this module, or ``tracker/t.js`` in a checkout."""
    for path in (
        Path(__file__).with_name(TRACKER_FILE),
        Path(__file__).resolve().parents[2] / "tracker" / TRACKER_FILE,
    ):
        if path.is_file():
            return path.read_bytes()
    raise FileNotFoundError(f"{TRACKER_FILE} is neither packaged nor in tracker/")


def openapi_document() -> bytes:
    """The collector's OpenAPI description, a static document written by hand beside this
    module: every route, the key schemes and the error body. Served as is, so a client (and
    the schemathesis test) reads exactly what is documented."""
    return Path(__file__).with_name(OPENAPI_FILE).read_bytes()


_CLOCK: list[Any] = [-1, ""]  # the millisecond _now_iso last formatted, and its text


def _now_iso() -> str:
    """The server's clock in UTC, ISO 8601 to the millisecond (``2026-12-06T02:00:00.123Z``).

    Formatted once per millisecond: a busy worker stamps many requests in one, and formatting
    a datetime cost about as much as the rest of a single event's checks.
    """
    now_ms = time.time_ns() // 1_000_000
    if now_ms != _CLOCK[0]:
        moment = datetime.fromtimestamp(now_ms // 1000, UTC).replace(
            microsecond=now_ms % 1000 * 1000)
        _CLOCK[0], _CLOCK[1] = now_ms, moment.isoformat(timespec="milliseconds").replace(
            "+00:00", "Z")
    return _CLOCK[1]  # type: ignore[no-any-return]


class Collector:
    """The ASGI application. One instance per worker process; the spool opens at startup."""

    def __init__(
        self,
        settings: Settings,
        *,
        keys: KeyRing | None = None,
        webhooks: dict[str, SourceMapping] | None = None,
    ) -> None:
        self.settings = settings
        self.spool_dir = Path(settings.spool_dir)
        self.keys = keys or KeyRing(self.spool_dir / KEYS_FILE)
        self.webhooks = (
            webhooks if webhooks is not None else load_mappings(settings.webhook_mappings_file)
        )
        self.spool: SpoolWriter | None = None
        self.leases: LeaseBook | None = None
        self.stats: Counter[str] = Counter()
        self.auth_failures = AddressBudget()
        self.recorded_refusals = AddressBudget(
            burst=REFUSALS_RECORDED_BURST, refill_per_second=REFUSALS_RECORDED_PER_SECOND
        )
        self._tracker: bytes | None = None
        self._openapi: bytes | None = None
        self._truncate_ip = settings.ip_truncate
        self._cors_any = "*" in settings.cors_origins
        self._cors = {o.encode() for o in settings.cors_origins}

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Open this worker's spool segment and the lease book (idempotent)."""
        if self.spool is None:
            self.spool = SpoolWriter(
                self.spool_dir,
                segment_bytes=self.settings.spool_segment_bytes,
                limit_bytes=self.settings.spool_limit_bytes,
                min_free_bytes=self.settings.spool_min_free_bytes,
            )
        if self.leases is None and self.settings.dni_pools:
            self.leases = LeaseBook(
                self.spool_dir / LEASES_FILE,
                self.settings.dni_pools,
                mode=self.settings.dni_mode,
                lease_minutes=self.settings.dni_lease_minutes,
                grace_minutes=self.settings.dni_grace_minutes,
                region=self.settings.phone_region,
                max_rows=self.settings.dni_lease_store_max_rows,
            )

    def stop(self) -> None:
        """Seal this worker's segment."""
        if self.spool is not None:
            self.spool.close()
            self.spool = None

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    self.start()
                except OSError as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

    # --- dispatch -------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        cors = self._cors_headers(scope)
        try:
            status, body, headers = await self._route(scope, receive)
        except ClientError as exc:
            self.stats[f"http_{exc.status}"] += 1
            status, headers = exc.status, exc.headers
            if exc.status == 400 and _records_refusals(scope["path"]):
                await self._record_refusal(scope, exc)
            body = orjson.dumps({"code": exc.code, "message": exc.message})
        except SpoolFullError as exc:
            self.stats["overloaded"] += 1
            status, headers = 503, [(b"retry-after", str(RETRY_AFTER_SECONDS).encode())]
            body = orjson.dumps({"code": "overloaded", "message": str(exc)})
        except SpoolError as exc:
            self.stats["spool_errors"] += 1
            status, headers = 503, [(b"retry-after", str(RETRY_AFTER_SECONDS).encode())]
            body = orjson.dumps({"code": "spool_error", "message": str(exc)})
        content_type = b"application/json"
        for name, value in headers:
            if name == b"content-type":
                content_type = value
        headers = [(n, v) for n, v in headers if n != b"content-type"]
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", content_type),
                    (b"content-length", str(len(body)).encode()),
                    *cors,
                    *headers,
                ],
            }
        )
        await send(
            {"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body}
        )

    def _cors_headers(self, scope: Scope) -> list[tuple[bytes, bytes]]:
        """CORS for browsers: ``*`` (any page may send events) or the listed origins.

        Never with ``allow-credentials``: the collector authenticates by key, not by cookie,
        and reflecting any origin with credentials would let every site read answers in a
        visitor's name.
        """
        origin = next((v for k, v in scope["headers"] if k == b"origin"), None)
        if origin is None:
            return []
        if self._cors_any:
            return [(b"access-control-allow-origin", b"*")]
        if origin not in self._cors:
            return []
        return [(b"access-control-allow-origin", origin), (b"vary", b"Origin")]

    async def _route(
        self, scope: Scope, receive: Receive
    ) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        method, path = scope["method"], scope["path"]
        if method == "OPTIONS":
            return (
                204,
                b"",
                [
                    (b"access-control-allow-methods", b"GET, POST, OPTIONS"),
                    (
                        b"access-control-allow-headers",
                        b"Authorization, Content-Type, Content-Encoding, X-Touchline-Key",
                    ),
                    (b"access-control-max-age", b"86400"),
                ],
            )
        if method == "POST":
            if path in SINGLE_ROUTES:
                return await self._single(scope, receive, SINGLE_ROUTES[path])
            if path in BATCH_ROUTES:
                return await self._batch(scope, receive)
            if path.startswith(WEBHOOK_PREFIX):
                return await self._webhook(scope, receive, path[len(WEBHOOK_PREFIX) :])
            if path == "/v1/dni/lease":
                return await self._lease(scope, receive)
        elif method in ("GET", "HEAD"):
            if path in ("/t.js", "/v1/t.js"):
                return self._tracker_js()
            if path == "/health":
                return 200, b'{"status":"ok"}', []
            if path == "/openapi.json":
                if self._openapi is None:
                    self._openapi = openapi_document()
                return 200, self._openapi, []
            if path == "/v1/stats":
                self._authenticate(scope, _header_key(scope), STATS_KINDS)
                return 200, orjson.dumps(dict(self.stats)), []
        else:
            raise ClientError(405, "method_not_allowed", f"{method} is not supported")
        raise ClientError(404, "not_found", f"no route {method} {path}")

    # --- request parts --------------------------------------------------------------------

    async def _keyed_json(
        self, scope: Scope, receive: Receive, limit: int
    ) -> tuple[Any, bytes, ApiKey]:
        """The decoded JSON body, its text and the tracking key that sent it.

        A key in the headers is checked before the body is read; a key in the body
        (``writeKey``, as beacons send it) only after.
        """
        header_key = _header_key(scope)
        key = None if header_key is None else self._authenticate(scope, header_key, TRACKING_KINDS)
        raw = await self._read_body(scope, receive, limit)
        body = _parse(raw)
        if key is None:
            key = self._authenticate(scope, _body_key(body), TRACKING_KINDS)
        return body, raw, key

    async def _read_body(self, scope: Scope, receive: Receive, limit: int) -> bytes:
        """The request body, gunzipped, refused (400) over ``limit`` bytes, when empty or when
        nested over :data:`MAX_JSON_DEPTH` levels."""
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise ClientError(400, "body_too_large", f"the body is over {limit} bytes")
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientError(400, "disconnected", "the client went away mid-body")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise ClientError(400, "body_too_large", f"the body is over {limit} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        encoding = headers.get(b"content-encoding", b"identity").strip().lower()
        if encoding == b"gzip":
            body = _gunzip(body, limit)
        elif encoding not in (b"identity", b""):
            raise ClientError(
                400,
                "bad_encoding",
                f"content-encoding {encoding.decode(errors='replace')!r} is not gzip",
            )
        if not body:
            raise ClientError(400, "empty_body", "the body is empty; send JSON")
        scope[BODY_STATE] = body  # kept for the reject, should the request be refused
        if segment.json_depth(body) > MAX_JSON_DEPTH:  # before any parser recurses into it
            raise ClientError(
                400, "too_deep", f"the JSON nests objects and lists over {MAX_JSON_DEPTH} levels"
            )
        return body

    def _refuse_if_throttled(self, address: str, now: float) -> None:
        if self.auth_failures.exhausted(address, now):
            self.stats["auth_throttled"] += 1
            wait = str(self.auth_failures.retry_after(address, now)).encode()
            raise ClientError(
                429, "too_many_auth_failures",
                "too many failed authentications from this address; retry later",
                [(b"retry-after", wait)],
            )

    def _authenticate(self, scope: Scope, key: str | None, allowed: frozenset[str]) -> ApiKey:
        """The live key ``key`` if its kind is in ``allowed``; else 401/403, or 429 once the
        client address has failed too often (the key is then not even looked up)."""
        address, now = _client_ip(scope) or "-", time.monotonic()
        self._refuse_if_throttled(address, now)
        if key is None:
            self.stats["auth_missing"] += 1
            self.auth_failures.spend(address, now)
            raise ClientError(
                401, "missing_write_key",
                "send the key as the HTTP Basic user, the X-Touchline-Key header or writeKey",
            )
        found = self.keys.lookup(key, now)
        if found is None:
            self.stats["auth_unknown"] += 1
            self.auth_failures.spend(address, now)
            raise ClientError(401, "unknown_write_key", "the write key is unknown or revoked")
        if found.kind not in allowed:
            self.stats["auth_wrong_kind"] += 1
            self.auth_failures.spend(address, now)
            raise ClientError(
                403, "key_not_allowed",
                f"a {found.kind} key cannot use this endpoint; it takes a key of kind "
                f"{' or '.join(sorted(allowed))} (touchline keys create --kind ...)",
            )
        scope[KEY_STATE] = found
        return found

    async def _record_refusal(self, scope: Scope, exc: ClientError) -> None:
        """Write a refused request to ``rejects`` (through the spool), as a batch's refused
        messages are, so an operator sees what clients send wrong.

        Only for a sender with a live key (a malformed body's ``writeKey`` is looked for in its
        text), and at most :data:`REFUSALS_RECORDED_BURST` at once per client address: a
        client looping on garbage is counted in the stats, not written to disk.
        """
        body: bytes | None = scope.get(BODY_STATE)
        key: ApiKey | None = scope.get(KEY_STATE)
        found = _WRITE_KEY_TEXT.search(body) if key is None and body else None
        if found is not None:
            key = self.keys.lookup(found.group(1).decode(), time.monotonic())
        address, now = _client_ip(scope) or "-", time.monotonic()
        if key is None or self.recorded_refusals.exhausted(address, now):
            self.stats["refusals_not_recorded"] += 1
            return
        self.recorded_refusals.spend(address, now)
        record = {
            "source": scope["path"],
            "line": 1,
            "code": exc.code,
            "field": exc.field,
            "message": exc.message,
            "raw": safe_raw(body.decode(errors="replace")) if body else None,
            "receivedAt": _now_iso(),
            "writeKey": key.name,
        }
        try:
            await self._spool().append(REJECT + orjson.dumps(record) + b"\n")
        except SpoolError:
            self.stats["refusals_not_recorded"] += 1
        else:
            self.stats["refusals_recorded"] += 1

    def _stamp(
        self, message: dict[str, Any], key: ApiKey, received_at: str, client_ip: str | None
    ) -> bytes:
        """The spool line of an accepted message: server time, key name, a message id.

        An import key's message keeps its own ``receivedAt`` (already checked to be a time):
        back-fills and replays of historical data must not look as if they happened now.
        """
        message.pop("writeKey", None)
        if "messageId" not in message:  # each request is its own event, as Segment has it
            message["messageId"] = f"srv-{uuid.uuid4().hex}"
        context = message.get("context")
        if context is None:
            context = message["context"] = {}
        ip = context.get("ip")
        if not isinstance(ip, str) or not ip:
            ip = client_ip
        if ip is not None:
            context["ip"] = truncate_ip(ip) if self._truncate_ip else ip
        if key.kind != "import" or message.get("receivedAt") is None:
            message["receivedAt"] = received_at
        message["writeKey"] = key.name
        message.setdefault("source", key.name)
        return EVENT + orjson.dumps(message) + b"\n"

    def _spool(self) -> SpoolWriter:
        if self.spool is None:
            self.start()
        assert self.spool is not None
        return self.spool

    # --- routes ---------------------------------------------------------------------------

    async def _single(
        self, scope: Scope, receive: Receive, kind: str
    ) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        body, raw, key = await self._keyed_json(scope, receive, MAX_BATCH_BYTES)
        if len(raw) > MAX_EVENT_BYTES:
            raise ClientError(
                400,
                "event_too_large",
                f"a message may be at most {MAX_EVENT_BYTES} bytes; this one is {len(raw)}",
            )
        # first: the other checks saw only the last copy of a repeated key
        problem = (
            segment.repeated_key(segment.decode_marking_repeats(raw))
            if segment.may_repeat_key(raw, body) else None
        ) or segment.check_message(
            body, expected_type=kind, keep_received_at=key.kind == "import"
        )
        if problem is not None:
            self.stats["invalid"] += 1
            raise ClientError(400, problem.code, problem.message, field=problem.field)
        body["type"] = kind
        line = self._stamp(body, key, _now_iso(), _client_ip(scope))
        await self._spool().append(line)
        self.stats["accepted"] += 1
        return 200, OK_BODY, []

    async def _batch(
        self, scope: Scope, receive: Receive
    ) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        header_key = _header_key(scope)
        key = None if header_key is None else self._authenticate(scope, header_key, TRACKING_KINDS)
        raw = await self._read_body(scope, receive, MAX_BATCH_BYTES)
        fast = None if segment.may_repeat_batch(raw) else segment.fast_batch(raw)
        if fast is not None:
            if key is None:
                key = self._authenticate(scope, fast.write_key or None, TRACKING_KINDS)
            return await self._batch_as_received(scope, raw, fast, key)
        body = _parse(raw)
        if key is None:
            key = self._authenticate(scope, _body_key(body), TRACKING_KINDS)
        batch = body.get("batch") if isinstance(body, dict) else None
        if not isinstance(batch, list):
            raise ClientError(400, "bad_batch", 'a batch body is {"batch": [message, ...]}')
        marked = segment.decode_marking_repeats(raw)
        twice = segment.repeated_envelope_key(marked)
        if twice is not None:
            raise ClientError(400, twice.code, twice.message, field=twice.field)
        # the same messages, each object that repeats a key marked (parsed as orjson did)
        twins = marked.get("batch") if isinstance(marked, dict) else None
        if not isinstance(twins, list) or len(twins) != len(batch):
            twins = [None] * len(batch)
        shared_context = body.get("context") if isinstance(body.get("context"), dict) else None
        shared_integrations = body.get("integrations")
        sent_at = body.get("sentAt")
        received_at, client_ip = _now_iso(), _client_ip(scope)
        lines: list[bytes] = []
        rejected = 0
        for index, message in enumerate(batch, start=1):
            too_large = segment.message_bytes(message) > MAX_EVENT_BYTES
            if isinstance(message, dict):
                if shared_context is not None:
                    own = message.get("context")
                    message["context"] = (
                        {**shared_context, **own} if isinstance(own, dict) else dict(shared_context)
                    )
                if shared_integrations is not None:
                    message.setdefault("integrations", shared_integrations)
                if sent_at is not None:
                    message.setdefault("sentAt", sent_at)
            problem = segment.repeated_key(twins[index - 1]) or segment.check_message(
                message, keep_received_at=key.kind == "import"
            )
            if problem is None and too_large:
                problem = Problem(
                    "event_too_large", None, f"a message may be at most {MAX_EVENT_BYTES} bytes"
                )
            line = b"" if problem is not None else self._stamp(
                message, key, received_at, client_ip
            )
            if problem is not None:
                rejected += 1
                line = (
                    REJECT
                    + orjson.dumps(
                        {
                            "source": scope["path"],
                            "line": index,
                            "code": problem.code,
                            "field": problem.field,
                            "message": problem.message,
                            "raw": safe_raw(orjson.dumps(message).decode()),
                            "receivedAt": received_at,
                            "writeKey": key.name,
                        }
                    )
                    + b"\n"
                )
            lines.append(line)
        if lines:
            await self._spool().append(b"".join(lines))
        self.stats["accepted"] += len(lines) - rejected
        self.stats["rejected"] += rejected
        return (
            200,
            orjson.dumps(
                {"success": True, "accepted": len(lines) - rejected, "rejected": rejected}
            ),
            [],
        )

    async def _batch_as_received(
        self, scope: Scope, raw: bytes, fast: segment.FastBatch, key: ApiKey
    ) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        """Spool a batch whose every message is valid as it came: no per-message Python work.

        The loader stamps each message (receipt time, key name, merged context) in DuckDB;
        JSON allows newlines only between tokens, so they become spaces to keep one line.
        """
        client_ip = _client_ip(scope)
        header = {
            "receivedAt": _now_iso(),
            "writeKey": key.name,
            "keepReceivedAt": key.kind == "import",
            "ip": (truncate_ip(client_ip) if self._truncate_ip else client_ip)
            if client_ip
            else None,
        }
        if b'"writeKey"' in raw:  # the spool keeps the key's name (header), never the key
            raw = _WRITE_KEY_IN_BODY.sub(b'"writeKey":null', raw)
        line = BATCH + orjson.dumps(header) + b"\t" + raw.replace(b"\n", b" ") + b"\n"
        await self._spool().append(line)
        self.stats["accepted"] += fast.count
        return 200, orjson.dumps({"success": True, "accepted": fast.count, "rejected": 0}), []

    async def _webhook(
        self, scope: Scope, receive: Receive, source: str
    ) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        mapping = self.webhooks.get(source)
        signed = mapping is not None and mapping.signing_secret is not None
        if not signed:  # the key, from the headers only, before the body is read
            key = self._authenticate(scope, _header_key(scope), WEBHOOK_KINDS)
        if mapping is None:
            raise ClientError(
                404,
                "unknown_source",
                f"no webhook mapping for source {source!r}; add it to webhook_mappings_file",
            )
        raw = await self._read_body(scope, receive, MAX_BATCH_BYTES)
        if signed:
            key = self._verify_signed(scope, mapping, raw)
        body = _parse(raw)
        items = body if isinstance(body, list) else [body]
        # the same items with objects that repeat a key marked (small bodies: a CRM posts a
        # record or a page of them); None when only orjson reads the body
        marked = segment.decode_marking_repeats(raw)
        marked_items = marked if isinstance(marked, list) else [marked] * len(items)
        received_at, lines, problems = _now_iso(), [], []
        table = {"deal": DEALS, "call": CALLS}.get(mapping.kind)
        for index, item in enumerate(items, start=1):
            repeated = repeated_mapped_key(mapping, marked_items[index - 1])
            if repeated is not None:
                problems.append((index, repeated, item))
                continue
            try:
                row = map_payload(mapping, item)
            except PayloadShapeError as exc:
                problems.append((index, Problem("bad_shape", exc.field, str(exc)), item))
                continue
            row["source"] = source
            if table is None:
                problem = segment.check_message(row, offline_ids=True)
                if problem is None:
                    lines.append(self._stamp(row, key, received_at, None))
                    continue
            else:  # typed and checked as file ingest checks a deals or calls file
                row, problem = check_row(table, row)
                if problem is None:
                    kind = DEAL if mapping.kind == "deal" else CALL
                    lines.append(kind + orjson.dumps(row) + b"\n")
                    continue
            problems.append((index, problem, item))
        if len(items) == 1 and problems:
            _, problem, _ = problems[0]
            raise ClientError(400, problem.code, problem.message, field=problem.field)
        for index, problem, item in problems:
            lines.append(
                REJECT
                + orjson.dumps(
                    {
                        "source": scope["path"],
                        "line": index,
                        "code": problem.code,
                        "field": problem.field,
                        "message": problem.message,
                        "raw": safe_raw(orjson.dumps(item).decode()),
                        "receivedAt": received_at,
                        "writeKey": key.name,
                    }
                )
                + b"\n"
            )
        if lines:
            await self._spool().append(b"".join(lines))
        self.stats["webhooks"] += len(items)
        return (
            200,
            orjson.dumps(
                {"success": True, "accepted": len(items) - len(problems), "rejected": len(problems)}
            ),
            [],
        )

    def _verify_signed(self, scope: Scope, mapping: SourceMapping, raw: bytes) -> ApiKey:
        """Check a signed source's signature; the sender is then known by the source name."""
        address, now = _client_ip(scope) or "-", time.monotonic()
        self._refuse_if_throttled(address, now)
        header = next((v for k, v in scope["headers"] if k == SIGNATURE_HEADER), None)
        problem = verify_signature(mapping, header, raw, time.time())
        if problem is not None:
            self.stats["auth_bad_signature"] += 1
            self.auth_failures.spend(address, now)
            raise ClientError(401, "bad_signature", problem)
        scope[KEY_STATE] = ApiKey(f"signed:{mapping.name}", mapping.name, "server")
        return scope[KEY_STATE]  # type: ignore[no-any-return]

    async def _lease(
        self, scope: Scope, receive: Receive
    ) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        body, _, _ = await self._keyed_json(scope, receive, MAX_EVENT_BYTES)
        if (
            not isinstance(body, dict)
            or not isinstance(body.get("sessionId"), str)
            or not body["sessionId"]
        ):
            raise ClientError(400, "missing_session", "a lease needs sessionId (string)")
        if self.leases is None:
            return 200, b'{"number":null,"status":"no_pool"}', []
        given = body.get("campaign")
        campaign: dict[str, Any] = given if isinstance(given, dict) else {}
        utm = {
            f"utm_{k}": (str(campaign[k]) if campaign.get(k) is not None else None)
            for k in ("source", "medium", "campaign", "term")
        }
        anonymous_id = body.get("anonymousId") if isinstance(body.get("anonymousId"), str) else None
        loop = asyncio.get_running_loop()
        leases = self.leases
        lease = await loop.run_in_executor(
            None,
            lambda: leases.lease(anonymous_id=anonymous_id, session_id=body["sessionId"], utm=utm),
        )
        if lease is None:
            return 200, b'{"number":null,"status":"no_pool"}', []
        self.stats[f"lease_{lease.status}"] += 1
        return (
            200,
            orjson.dumps(
                {
                    "number": lease.number,
                    "status": lease.status,
                    "leaseId": lease.lease_id,
                    "expiresAt": lease.expires_at,
                }
            ),
            [],
        )

    def _tracker_js(self) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        if self._tracker is None:
            defaults = orjson.dumps(
                {
                    "dnt": self.settings.tracker_respect_dnt,
                    "consent": self.settings.tracker_consent,
                    "stripParams": self.settings.tracker_strip_params,
                }
            )
            self._tracker = b"var __touchline_defaults=" + defaults + b";\n" + tracker_source()
        return (
            200,
            self._tracker,
            [
                (b"content-type", b"application/javascript; charset=utf-8"),
                (b"cache-control", b"public, max-age=300"),
            ],
        )


def _parse(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ClientError(400, "bad_json", f"the body is not valid JSON: {exc}") from None


def _gunzip(body: bytes, limit: int) -> bytes:
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise ClientError(400, "bad_gzip", f"the gzip body cannot be decompressed: {exc}") from None
    if len(out) > limit:
        raise ClientError(400, "body_too_large", f"the decompressed body is over {limit} bytes")
    if not inflater.eof:
        raise ClientError(400, "bad_gzip", "the gzip body is truncated")
    return out


def _basic_user(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, encoded = value.partition(b" ")
            if scheme.lower() != b"basic":
                return None
            try:
                decoded = base64.b64decode(encoded.strip(), validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                raise ClientError(
                    401, "bad_authorization", "the Basic credentials are not base64 of 'key:'"
                ) from None
            return decoded.partition(":")[0] or None
    return None


def _header_key(scope: Scope) -> str | None:
    """The key from the Basic user or ``X-Touchline-Key``; a key in the query string is
    refused (400), as URLs end up in access logs, proxies and browser histories."""
    query = scope.get("query_string", b"")
    if query and QUERY_KEY_NAMES & {n.lower() for n in parse_qs(query.decode(errors="replace"))}:
        raise ClientError(
            400, "key_in_query",
            "never put a key in the URL (it ends up in access logs); send it as the HTTP Basic "
            "user or the X-Touchline-Key header",
        )
    key = _basic_user(scope)
    if key is None:
        given = dict(scope["headers"]).get(b"x-touchline-key", b"").decode(errors="replace")
        key = given or None
    return key


def _records_refusals(path: str) -> bool:
    """Whether a 400 on ``path`` is written to ``rejects``: event and webhook routes."""
    return path in SINGLE_ROUTES or path in BATCH_ROUTES or path.startswith(WEBHOOK_PREFIX)


def _body_key(body: Any) -> str | None:
    written = body.get("writeKey") if isinstance(body, dict) else None
    return written if isinstance(written, str) and written else None


def _client_ip(scope: Scope) -> str | None:
    client = scope.get("client")
    return client[0] if client else None


def create_app(settings: Settings | None = None, *, keys: KeyRing | None = None) -> Collector:
    """The collector for ``settings`` (default: from the environment)."""
    return Collector(settings or load_settings(), keys=keys)


def app_from_env() -> Collector:
    """uvicorn factory for worker processes: the settings come from ``touchline serve``."""
    raw = os.environ.get(SETTINGS_ENV)
    settings = Settings.model_validate_json(raw) if raw else load_settings()
    return Collector(settings)
