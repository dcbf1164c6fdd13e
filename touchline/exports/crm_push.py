"""``push_leads``: lead records to the CRM, as signed webhook POSTs and as a CSV / NDJSON file.

The steps of one push: build the lead records (:func:`~touchline.exports.crm.lead_records`),
map each to the CRM object's properties (:mod:`~touchline.exports.crm_mapping`), write them to
``out`` when asked, then POST each lead not yet delivered to ``settings.crm_webhook_url``, one
request per lead, and log the push in ``exports`` (destination ``crm``).

Delivery, lead by lead:

1. a ``crm_outbox`` row says the lead is about to be sent;
2. the POST carries the JSON body, ``Idempotency-Key`` (the same on every send of the lead),
   ``X-Touchline-Timestamp`` and ``X-Touchline-Signature`` (HMAC-SHA256 over the timestamp and
   the raw body: :mod:`touchline.signing`, the scheme the collector's webhooks verify);
3. a 2xx answer is a delivery (``crm_deliveries``); a connection error, a timeout, 408, 425,
   429 or a 5xx is retried after ``base · 2^(n-1)`` seconds (at most ``crm_retry_max_seconds``;
   a ``Retry-After`` in seconds is honoured up to that), up to ``crm_retry_attempts`` POSTs;
   any other answer, or the last failure, puts the lead in ``crm_dead_letters`` with the last
   status and error.

One push runs at a time on a warehouse (a DuckDB file has one writer, and a push holds it
from choosing the leads to recording the last; on Spark, run one follower). A lead in
``crm_deliveries`` is never sent again; one in ``crm_dead_letters`` only with
``retry_dead_letters``. What no table can close is a crash after the receiver accepted a POST
and before ``crm_deliveries`` recorded it: the next push finds the outbox row without an
outcome, sends the lead again with the *same* ``Idempotency-Key``, logs a warning and marks the
delivery ``resent``. A receiver that remembers the keys it accepted (or upserts on
``touchline_lead_id`` / an External ID) turns that second send into no change; touchline never
sends a second time silently.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import ibis
import orjson
import pandas as pd
import pyarrow as pa
from ibis.backends import BaseBackend

from touchline import engine, store
from touchline.config import Settings
from touchline.errors import ConfigError, EngineError, UnknownModelError, did_you_mean
from touchline.exports import audit
from touchline.exports.crm import lead_records
from touchline.exports.crm_mapping import Mapping, load_mapping
from touchline.exports.rows import refused_consent
from touchline.signing import SIGNATURE_HEADER, sign

log = logging.getLogger(__name__)

DESTINATION = "crm"
IDEMPOTENCY_HEADER = "Idempotency-Key"
TIMESTAMP_HEADER = "X-Touchline-Timestamp"
#: characters of a receiver's answer kept in crm_deliveries / crm_dead_letters
ANSWER_MAX_CHARS = 4 * 1024
#: answers worth another try: the request timed out, too early, too many, or the server failed
RETRY_STATUSES = frozenset({408, 425, 429})
FILE_SUFFIXES = {".csv": "csv", ".ndjson": "ndjson", ".jsonl": "ndjson"}


@dataclass(frozen=True)
class Retry:
    """How often and how patiently a lead is POSTed again."""

    attempts: int = 5
    base_seconds: float = 1.0
    max_seconds: float = 60.0

    def delay(self, failed: int, retry_after: float | None = None) -> float:
        """Seconds to wait after the ``failed``-th POST (1-based) failed.

        .. math:: d_n = \\min(d_{max},\\ \\max(b \\cdot 2^{n-1},\\ retry\\_after))

        >>> [Retry(base_seconds=1, max_seconds=5).delay(n) for n in (1, 2, 3, 4)]
        [1.0, 2.0, 4.0, 5.0]
        """
        wait = max(self.base_seconds * 2.0 ** (failed - 1), retry_after or 0.0)
        return float(min(self.max_seconds, wait))


@dataclass(frozen=True)
class Outcome:
    """How the POSTs of one lead ended."""

    delivered: bool
    attempts: int
    status: int | None
    answer: str
    first_attempt_at: datetime
    ended_at: datetime


@dataclass(frozen=True)
class PushResult:
    """What one push did."""

    push_id: str
    mapping: str
    #: leads written to the file (``out``): new ones and changed ones (``rewritten``)
    written: int = 0
    #: of them, leads a file had before whose record changed since
    rewritten: int = 0
    #: leads due for the webhook (not yet delivered)
    pending: int = 0
    delivered: int = 0
    dead_letters: int = 0
    resent: int = 0
    stopped: bool = False
    path: Path | None = None
    destination: str | None = None
    #: leads not pushed nor written: their person refused consent (``refused_consent``)
    withheld: int = 0


def idempotency_key(lead_id: str) -> str:
    """The ``Idempotency-Key`` of a lead: the same for every send of it, from any host.

    >>> idempotency_key("lead:m3")
    'tl-lead-87ccd5e21fbc6eb0de6a49acf2ddd392'
    """
    return "tl-lead-" + hashlib.sha256(lead_id.encode()).hexdigest()[:32]


def _utc_now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def body(mapping: Mapping, record: dict[str, Any]) -> bytes:
    """The JSON body POSTed for one lead record: the exact bytes that are signed."""
    lead_id = record["lead_id"]
    return orjson.dumps({
        "lead_id": lead_id, "idempotency_key": idempotency_key(lead_id),
        "mapping": mapping.versioned, "object": mapping.object,
        "properties": mapping.properties(record)})


def send(client: httpx.Client, url: str, payload: bytes, *, key: str, secret: bytes,
         retry: Retry, clock: Callable[[], datetime], wait: Callable[[float], bool],
         resent: bool = False) -> Outcome:
    """POST ``payload`` until it is accepted, refused for good, or ``retry.attempts`` are spent.
    ``wait(seconds)`` sleeps between tries and returns True when asked to stop (then the lead
    is given up as it stands)."""
    first = clock()
    status: int | None = None
    answer = ""
    attempt = 0
    while attempt < retry.attempts:
        attempt += 1
        stamp = int(time.time())
        headers = {"Content-Type": "application/json", IDEMPOTENCY_HEADER: key,
                   TIMESTAMP_HEADER: str(stamp), SIGNATURE_HEADER: sign(secret, payload, stamp),
                   "X-Touchline-Attempt": str(attempt)}
        if resent:
            headers["X-Touchline-Resent"] = "true"
        retry_after = None
        try:
            response = client.post(url, content=payload, headers=headers)
        except httpx.TransportError as exc:
            status, answer = None, f"{type(exc).__name__}: {exc}"
            retryable = True
        else:
            status, answer = response.status_code, response.text
            if 200 <= status < 300:
                return Outcome(True, attempt, status, answer, first, clock())
            retryable = status in RETRY_STATUSES or status >= 500
            after = response.headers.get("Retry-After", "")
            retry_after = float(after) if after.strip().isdigit() else None
        if not retryable or attempt == retry.attempts:
            break
        if wait(retry.delay(attempt, retry_after)):
            break
    return Outcome(False, attempt, status, answer, first, clock())


def ensure_tables(con: BaseBackend) -> None:
    """Create the CRM delivery tables and the audit log when the warehouse lacks them."""
    audit.ensure_tables(con)
    existing = set(con.list_tables())
    for spec in store.CRM_TABLES:
        if spec.name not in existing:
            con.create_table(spec.name, schema=spec.schema)


def _check_inputs(con: BaseBackend, settings: Settings, model: str) -> None:
    names = [c.name for c in settings.conversions]
    for name in settings.crm_lead_conversions:
        if name not in names:
            raise ConfigError(f"crm_lead_conversions names {name!r}{did_you_mean(name, names)}, "
                              f"not a conversion type; choose from {', '.join(names)} "
                              "(settings.conversions)")
    if model not in settings.attribution_models:
        raise UnknownModelError(f"crm_model {model!r}"
                                f"{did_you_mean(model, settings.attribution_models)}: credits are "
                                f"stored for {', '.join(settings.attribution_models)}")
    tables = set(con.list_tables())
    missing = [t for t in ("journeys", "journey_steps", "sessions", "touches", "events",
                           "identities", "persons", "accounts", "stages", "credits")
               if t not in tables]
    if missing:
        raise ConfigError(f"the warehouse {settings.database_url} has no "
                          f"{', '.join(missing)}: run `touchline run` first")
    if settings.crm_webhook_url and settings.crm_webhook_secret is None:
        raise ConfigError("crm_webhook_url is set but crm_webhook_secret is not: every lead "
                          "POST is signed; set TOUCHLINE_CRM_WEBHOOK_SECRET")


def write_file(path: Path, mapping: Mapping, records: list[dict[str, Any]]) -> None:
    """The mapped leads as CSV (one column per property) or NDJSON (one object per line)."""
    kind = FILE_SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise ConfigError(f"--out {path}: the file must end in "
                          f"{', '.join(FILE_SUFFIXES)} (CSV or NDJSON)")
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [mapping.properties(r) for r in records]
    if kind == "ndjson":
        path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
        return
    frame = pd.DataFrame(rows, columns=mapping.columns(records))
    path.write_text(store.to_csv(frame))


def _append_row(con: BaseBackend, table: str, row: dict[str, Any]) -> None:
    """Append one row to a CRM table (each lead's record lands as soon as it is known)."""
    spec = store.TABLES[table]
    engine.append(con, table, pa.Table.from_pylist([row], schema=spec.schema.to_pyarrow()))


def _in_doubt(con: BaseBackend) -> set[str]:
    """Leads whose send began in some push that recorded no outcome for them (see the
    module): the process stopped between the POST and its record."""
    outbox, done, dead = (con.table(t) for t in ("crm_outbox", "crm_deliveries",
                                                  "crm_dead_letters"))
    ended = done.select("push_id", "lead_id").union(dead.select("push_id", "lead_id"))
    delivered = done.select(_lead="lead_id")
    open_ = outbox.anti_join(ended, [outbox.push_id == ended.push_id,
                                     outbox.lead_id == ended.lead_id])
    open_ = open_.anti_join(delivered, open_.lead_id == delivered._lead)
    return set(open_.select("lead_id").distinct().to_pyarrow().column("lead_id").to_pylist())


def push_leads(con: BaseBackend, settings: Settings, *, mapping: Mapping | None = None,
               since: datetime | None = None, out: Path | None = None,
               retry_dead_letters: bool = False, clock: Callable[[], datetime] = _utc_now,
               stop: threading.Event | None = None,
               transport: httpx.BaseTransport | None = None) -> PushResult:
    """One push of the leads (see the module): the file ``out`` (every lead made at or after
    ``since``), then the webhook (those not yet delivered). ``mapping``: default
    ``settings.crm_mapping``; ``clock``: UTC now; ``stop``: set it to end the push after the
    lead in flight; ``transport``: httpx's (tests mount one; default: the network)."""
    mapping = mapping or load_mapping(settings.crm_mapping)
    model = settings.crm_model or settings.default_model
    _check_inputs(con, settings, model)
    ensure_tables(con)
    url = settings.crm_webhook_url
    push_id = "crm_" + uuid.uuid4().hex[:16]
    records = lead_records(con, model=model, stage_model=settings.stage_model,
                           conversions=settings.crm_lead_conversions, since=since,
                           properties=mapping.property_keys)
    # no consent, no upload: a lead whose person's latest stated consent is not granted (and
    # with export_require_consent, one who never stated it) goes nowhere, as in every export
    refused = refused_consent(con, require=settings.export_require_consent)
    withheld = records.filter(records.person_id.isin(refused.person_id))
    withheld_count = int(withheld.count().to_pyarrow().as_py())
    if withheld_count:
        log.info("%d lead(s) withheld: their person's latest consent is not granted",
                 withheld_count)
        records = records.filter(records.person_id.isnull()
                                 | ~records.person_id.isin(refused.person_id))
    if not url and out is None:
        raise ConfigError("nothing to push to: set crm_webhook_url (and crm_webhook_secret) "
                          "or give --out FILE")
    written = rewritten = 0
    filed: list[tuple[dict[str, Any], str, bool]] = []
    if out is not None:
        # like the ad exports: only leads no file had, or whose record changed since
        every = records.order_by(["lead_at", "lead_id"]).to_pyarrow().to_pylist()
        before = filed_state(con)
        for record in every:
            digest = hashlib.sha256(body(mapping, record)).hexdigest()
            if before.get(record["lead_id"]) != digest:
                filed.append((record, digest, record["lead_id"] in before))
        write_file(out, mapping, [record for record, _, _ in filed])
        written, rewritten = len(filed), sum(changed for _, _, changed in filed)
    if not url:
        result = PushResult(push_id, mapping.versioned, written=written, rewritten=rewritten,
                            path=out, withheld=withheld_count)
        _audit(con, settings, result, mapping, model, since, clock(), filed)
        return result

    done = con.table("crm_deliveries").select(_done="lead_id")
    pending = records.anti_join(done, records.lead_id == done._done)
    if not retry_dead_letters:
        dead = con.table("crm_dead_letters").select(_dead="lead_id")
        pending = pending.anti_join(dead, pending.lead_id == dead._dead)
    todo = pending.order_by(["lead_at", "lead_id"]).to_pyarrow().to_pylist()
    doubtful = _in_doubt(con) if todo else set()
    assert settings.crm_webhook_secret is not None  # _check_inputs
    signing_key = settings.crm_webhook_secret.get_secret_value().encode()
    retry = Retry(settings.crm_retry_attempts, settings.crm_retry_base_seconds,
                  settings.crm_retry_max_seconds)
    stop = stop or threading.Event()
    where = audit.public_url(url)
    delivered = dead_letters = resent = 0
    stopped = False
    with httpx.Client(timeout=settings.crm_timeout_seconds, transport=transport) as client:
        for record in todo:
            if stop.is_set():
                stopped = True
                break
            lead_id = record["lead_id"]
            key = idempotency_key(lead_id)
            again = lead_id in doubtful
            if again:
                log.warning("lead %s: a push stopped after it began sending; sending again with "
                            "the same Idempotency-Key (the receiver's dedupe)", lead_id)
            common = {"lead_id": lead_id, "idempotency_key": key, "push_id": push_id,
                      "mapping": mapping.versioned, "destination": where}
            _append_row(con, "crm_outbox", {**common, "queued_at": clock()})
            payload = body(mapping, record)
            outcome = send(client, url, payload, key=key, secret=signing_key, retry=retry,
                           clock=clock, wait=stop.wait, resent=again)
            if outcome.delivered:
                delivered += 1
                resent += again
                _append_row(con, "crm_deliveries", {
                    **common, "payload_sha256": hashlib.sha256(payload).hexdigest(),
                    "attempts": outcome.attempts, "status": outcome.status,
                    "response": outcome.answer[:ANSWER_MAX_CHARS],
                    "first_attempt_at": outcome.first_attempt_at,
                    "delivered_at": outcome.ended_at, "resent": again})
            elif stop.is_set():  # given up mid-retry: the next push sends it (marked resent)
                stopped = True
                break
            else:
                dead_letters += 1
                log.warning("lead %s: not accepted after %d POSTs (last HTTP %s): to "
                            "crm_dead_letters", lead_id, outcome.attempts, outcome.status)
                _append_row(con, "crm_dead_letters", {
                    **common, "attempts": outcome.attempts, "last_status": outcome.status,
                    "last_error": outcome.answer[:ANSWER_MAX_CHARS],
                    "failed_at": outcome.ended_at})
    result = PushResult(push_id, mapping.versioned, written=written, rewritten=rewritten,
                        pending=len(todo),
                        delivered=delivered, dead_letters=dead_letters, resent=resent,
                        stopped=stopped, path=out, destination=where, withheld=withheld_count)
    if todo or out is not None:
        _audit(con, settings, result, mapping, model, since, clock(), filed)
    return result


def filed_state(con: BaseBackend) -> dict[str, str]:
    """``lead_id`` → the SHA-256 of the record last written to a file for it (by
    ``push crm --out``; ``exported_conversions`` of destination ``crm``)."""
    sent = con.table("exported_conversions")
    sent = sent.filter((sent.destination == DESTINATION) & sent.payload_sha256.notnull())
    latest = ibis.row_number().over(group_by=sent.conversion_id,
                                    order_by=[ibis.desc(sent.exported_at),
                                              ibis.desc(sent.export_id)])
    last = sent.mutate(_rank=latest).filter(lambda t: t._rank == 0)
    table = last.select("conversion_id", "payload_sha256").to_pyarrow()
    return dict(zip(table.column("conversion_id").to_pylist(),
                    table.column("payload_sha256").to_pylist(), strict=True))


def _audit(con: BaseBackend, settings: Settings, result: PushResult, mapping: Mapping,
           model: str, since: datetime | None, now: datetime,
           filed: list[tuple[dict[str, Any], str, bool]]) -> None:
    """The push's row in ``exports`` (``touchline audit exports --destination crm``): the
    leads it delivered to the webhook, or without one the leads it wrote to the file, new
    (``conversion_count``) and changed (``adjustment_count``), and where (the file, the URL
    without its query string); each lead written to the file in ``exported_conversions``
    with the SHA-256 of its record (no e-mail, no phone), what keeps the next file to the new
    and changed leads."""
    new = result.written - result.rewritten
    row = audit.export_row(
        export_id=result.push_id, destination=DESTINATION, format_id=result.mapping,
        conversion=",".join(settings.crm_lead_conversions), platform_name=mapping.object,
        value_basis=f"model:{model}", since=since, exported_at=now,
        conversion_count=result.delivered if result.destination else new,
        adjustment_count=0 if result.destination else result.rewritten,
        rejected_count=result.dead_letters, path=str(result.path) if result.path else "",
        adjustments_path=None, push_url=settings.crm_webhook_url if result.pending else None,
        push_status=None, push_response=None)
    leads = pa.Table.from_pylist([{
        "export_id": result.push_id, "destination": DESTINATION,
        "conversion": record["conversion"], "conversion_id": record["lead_id"],
        "journey_id": record["journey_id"], "kind": "restatement" if changed else "conversion",
        "converted_at": record["lead_at"], "exported_at": now, "payload_sha256": digest,
    } for record, digest, changed in filed],
        schema=store.EXPORTED_CONVERSIONS.schema.to_pyarrow())
    audit.record(con, row, leads)


def follow(settings: Settings, *, stop: threading.Event, mapping: Mapping | None = None,
           since: datetime | None = None, max_iterations: int | None = None,
           on_push: Callable[[PushResult], None] | None = None) -> int:
    """Push the new leads every ``settings.crm_follow_interval_seconds`` until ``stop`` is set
    (or after ``max_iterations``); return the pushes made. The warehouse is opened per push and
    closed after, as the collector's loader does, so ``touchline serve`` and ``touchline run``
    can write it in between; a busy warehouse skips one round."""
    mapping = mapping or load_mapping(settings.crm_mapping)
    rounds = 0
    while not stop.is_set():
        try:
            with engine.connected(settings=settings) as con:
                result = push_leads(con, settings, mapping=mapping, since=since, stop=stop)
            if on_push is not None:
                on_push(result)
        except EngineError as exc:
            log.warning("push skipped, the warehouse is busy: %s", exc)
        rounds += 1
        if max_iterations is not None and rounds >= max_iterations:
            break
        stop.wait(settings.crm_follow_interval_seconds)
    return rounds

