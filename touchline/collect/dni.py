"""Call tracking with dynamic number insertion (DNI): number leases, and calls matched to them.

A site shows one phone number; ``t.js`` swaps it (elements marked ``data-touchline-phone``) for
a *tracking number* leased to the visitor's session. When that number rings, the lease that
covered it at that moment says who called: the session's anonymous id, channel and keyword.

* :class:`LeaseBook` hands out leases. In ``visitor`` mode a number belongs to one session at a
  time (and is not reused until ``dni_grace_minutes`` after its lease ended, so a late call
  still finds the right visitor); in ``channel`` mode the pool's number is shared by everyone
  from that channel. When every number of a pool is taken the visitor keeps the site's own
  number and an ``exhausted`` lease row records it. Leases live in SQLite in the spool folder
  because several collector workers lease at once and only the loader may write the
  warehouse; the loader copies them into ``number_leases``.
* :func:`match_calls` joins calls to leases (an Ibis expression, any engine) and
  :func:`call_touches` turns the result into ``events`` rows: every call is a touch.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import ibis
import phonenumbers
import pyarrow as pa

from touchline import engine, store
from touchline.config import Settings
from touchline.errors import ConfigError
from touchline.store import EVENTS, NUMBER_LEASES

if TYPE_CHECKING:
    import ibis.expr.types as ir
    from ibis.backends import BaseBackend

LEASES_FILE = "leases.sqlite"
CALL_EVENT = "Phone Call"
MATCH_STATUSES = ("matched", "ambiguous", "expired", "unmatched")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS leases (
    lease_id TEXT PRIMARY KEY, number TEXT, pool TEXT, status TEXT, anonymous_id TEXT,
    session_id TEXT, utm_source TEXT, utm_medium TEXT, utm_campaign TEXT, utm_term TEXT,
    leased_at REAL, expires_at REAL, seq INTEGER
);
CREATE INDEX IF NOT EXISTS leases_number ON leases (number, expires_at);
CREATE INDEX IF NOT EXISTS leases_session ON leases (session_id, pool);
CREATE INDEX IF NOT EXISTS leases_seq ON leases (seq);
"""


def to_e164(number: str | None, region: str) -> str | None:
    """``number`` in E.164 (``+15550100001``), or ``None`` when it is not a possible number."""
    if not number or not number.strip():
        return None
    try:
        parsed = phonenumbers.parse(number, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(parsed):
        return None
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


@dataclass(frozen=True)
class Lease:
    """What ``t.js`` is told: the number to show (``None``: keep the site's own)."""

    lease_id: str
    number: str | None
    pool: str | None
    status: str
    expires_at: float


class LeaseBook:
    """Leases of tracking numbers, shared by the collector's worker processes via SQLite."""

    def __init__(
        self,
        path: Path,
        pools: dict[str, list[str]],
        *,
        mode: str = "visitor",
        lease_minutes: int = 30,
        grace_minutes: int = 60,
        region: str = "US",
    ) -> None:
        self.path = path
        self.mode = mode
        self.lease_seconds = lease_minutes * 60.0
        self.grace_seconds = grace_minutes * 60.0
        self.pools: dict[str, list[str]] = {}
        for key, numbers in pools.items():
            normal = [to_e164(n, region) for n in numbers]
            bad = [n for n, e in zip(numbers, normal, strict=True) if e is None]
            if bad:
                raise ConfigError(
                    f"dni_pools[{key!r}] has numbers that are not phone numbers: {bad}"
                )
            self.pools[key.lower()] = [e for e in normal if e]
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._db() as db:
            db.executescript(_SCHEMA)

    def _db(self) -> sqlite3.Connection:
        # one connection per call: leases run on executor threads, and opening is ~0.1 ms
        db = sqlite3.connect(self.path, timeout=10.0, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        return db

    def pool_for(self, source: str | None, medium: str | None) -> str | None:
        """The pool serving a session: 'source/medium', then 'source', 'medium', 'default'."""
        s, m = (source or "").strip().lower(), (medium or "").strip().lower()
        for key in (f"{s}/{m}", s, m, "default"):
            if key and key in self.pools:
                return key
        return None

    def lease(
        self,
        *,
        anonymous_id: str | None,
        session_id: str,
        utm: dict[str, str | None],
        now: float | None = None,
    ) -> Lease | None:
        """Lease (or renew) a number for ``session_id``; ``None`` when no pool serves it."""
        now = time.time() if now is None else now
        pool = self.pool_for(utm.get("utm_source"), utm.get("utm_medium"))
        if pool is None:
            return None
        db = self._db()
        try:
            db.execute("BEGIN IMMEDIATE")
            seq = db.execute("SELECT coalesce(max(seq), 0) + 1 FROM leases").fetchone()[0]
            held = db.execute(
                "SELECT lease_id, number FROM leases WHERE session_id = ? AND pool = ? "
                "AND status = 'leased' AND expires_at > ? ORDER BY leased_at DESC LIMIT 1",
                (session_id, pool, now),
            ).fetchone()
            if held:
                expires = now + self.lease_seconds
                db.execute(
                    "UPDATE leases SET expires_at = ?, seq = ? WHERE lease_id = ?",
                    (expires, seq, held[0]),
                )
                db.execute("COMMIT")
                return Lease(held[0], held[1], pool, "leased", expires)
            number = self._free_number(db, pool, session_id, now)
            lease = Lease(
                uuid.uuid4().hex,
                number,
                pool,
                "leased" if number else "exhausted",
                now + self.lease_seconds if number else now,
            )
            db.execute(
                "INSERT INTO leases VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    lease.lease_id,
                    number,
                    pool,
                    lease.status,
                    anonymous_id,
                    session_id,
                    utm.get("utm_source"),
                    utm.get("utm_medium"),
                    utm.get("utm_campaign"),
                    utm.get("utm_term"),
                    now,
                    lease.expires_at,
                    seq,
                ),
            )
            db.execute("COMMIT")
            return lease
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        finally:
            db.close()

    def _free_number(
        self, db: sqlite3.Connection, pool: str, session_id: str, now: float
    ) -> str | None:
        numbers = self.pools[pool]
        if self.mode == "channel":
            digest = int(hashlib.sha256(session_id.encode()).hexdigest(), 16)
            return numbers[digest % len(numbers)]
        last_end = dict(
            db.execute(
                "SELECT number, max(expires_at) FROM leases WHERE pool = ? AND status = 'leased' "
                "GROUP BY number",
                (pool,),
            ).fetchall()
        )
        # free: never leased, or ended longer than the grace period ago; least recently used first
        free = [n for n in numbers if last_end.get(n, 0.0) + self.grace_seconds <= now]
        if not free:
            return None
        return min(free, key=lambda n: last_end.get(n, 0.0))

    def changed_since(self, seq: int) -> tuple[pa.Table, int]:
        """Leases created or renewed after ``seq``, as ``number_leases`` rows, and the new seq."""
        db = self._db()
        try:
            rows = db.execute(
                "SELECT lease_id, number, pool, status, anonymous_id, session_id, utm_source, "
                "utm_medium, utm_campaign, utm_term, leased_at, expires_at, seq FROM leases "
                "WHERE seq > ? ORDER BY seq",
                (seq,),
            ).fetchall()
        finally:
            db.close()
        names = [c.name for c in NUMBER_LEASES.columns]
        columns: dict[str, list[object]] = {n: [] for n in names}
        for row in rows:
            for name, value in zip(names, row[:12], strict=True):
                if name in ("leased_at", "expires_at"):
                    value = datetime.fromtimestamp(float(value), UTC).replace(tzinfo=None)
                columns[name].append(value)
        table = pa.table(columns, schema=NUMBER_LEASES.schema.to_pyarrow())
        return table, (rows[-1][12] if rows else seq)


def with_e164(calls: pa.Table, region: str) -> pa.Table:
    """Add ``caller_e164`` and ``tracking_e164`` (phonenumbers; each distinct number once)."""
    out = calls
    for source, target in (("caller_number", "caller_e164"), ("tracking_number", "tracking_e164")):
        values = calls.column(source).to_pylist()
        cache = {v: to_e164(v, region) for v in set(values)}
        out = out.append_column(target, pa.array([cache[v] for v in values], pa.string()))
    return out


def match_calls(calls: ir.Table, leases: ir.Table, *, grace: timedelta) -> ir.Table:
    """One row per call with the lease that explains it and a ``match_status``.

    A lease *covers* a call when ``leased_at <= started_at <= expires_at``. Status: ``matched``
    (one covering lease), ``ambiguous`` (several: a shared channel number; the latest wins),
    ``expired`` (no covering lease, but one on that number ended within ``grace``: the latest
    is used) and ``unmatched``. ``calls`` needs ``call_id``, ``started_at``, ``tracking_e164``.
    """
    live = leases.filter(leases.status == "leased").select(
        lease_number=leases.number,
        lease_id=leases.lease_id,
        pool=leases.pool,
        anonymous_id=leases.anonymous_id,
        session_id=leases.session_id,
        utm_source=leases.utm_source,
        utm_medium=leases.utm_medium,
        utm_campaign=leases.utm_campaign,
        utm_term=leases.utm_term,
        leased_at=leases.leased_at,
        expires_at=leases.expires_at,
    )
    joined = calls.left_join(
        live,
        [
            calls.tracking_e164 == live.lease_number,
            live.leased_at <= calls.started_at,
            calls.started_at <= live.expires_at + ibis.interval(seconds=int(grace.total_seconds())),
        ],
    )
    covering = (joined.started_at <= joined.expires_at).fill_null(False)
    joined = joined.mutate(covering=covering)
    ranked = joined.mutate(
        rank=ibis.row_number().over(
            group_by=joined.call_id,
            order_by=[ibis.desc(joined.covering), ibis.desc(joined.leased_at)],
        ),
        covering_count=joined.covering.cast("int64").sum().over(group_by=joined.call_id),
    )
    best = ranked.filter(ranked.rank == 0)
    status = ibis.cases(
        (best.lease_id.isnull(), "unmatched"),
        (~best.covering, "expired"),
        (best.covering_count > 1, "ambiguous"),
        else_="matched",
    )
    return best.mutate(match_status=status).drop(
        "rank", "covering", "covering_count", "lease_number"
    )


def call_touches(matched: pa.Table, *, conversion_seconds: int | None, ingest_id: str) -> pa.Table:
    """``events`` rows for matched calls: a ``Phone Call`` track per call, id ``call:<call_id>``.

    The visitor's anonymous id and campaign come from the lease; the caller's E.164 number goes
    to ``phone`` for identity. ``properties.conversion`` is true for answered calls of at least
    ``conversion_seconds`` (``None``: calls are touches only).
    """
    rows = matched.to_pylist()
    out: dict[str, list[object]] = {c.name: [] for c in EVENTS.columns}
    for row in rows:
        duration = row.get("duration_seconds")
        conversion = bool(
            conversion_seconds is not None
            and row.get("answered")
            and duration is not None
            and duration >= conversion_seconds
        )
        properties = {
            "call_id": row["call_id"],
            "tracking_number": row.get("tracking_e164") or row.get("tracking_number"),
            "duration_seconds": duration,
            "answered": row.get("answered"),
            "outcome": row.get("outcome"),
            "match_status": row["match_status"],
            "lease_id": row.get("lease_id"),
            "session_id": row.get("session_id"),
            "pool": row.get("pool"),
            "conversion": conversion,
        }
        values: dict[str, object] = {
            "message_id": f"call:{row['call_id']}",
            "type": "track",
            "event": CALL_EVENT,
            "anonymous_id": row.get("anonymous_id"),
            "timestamp": row["started_at"],
            "original_timestamp": row["started_at"],
            "utm_source": row.get("utm_source"),
            "utm_medium": row.get("utm_medium"),
            "utm_campaign": row.get("utm_campaign"),
            "utm_term": row.get("utm_term"),
            "phone": row.get("caller_e164"),
            "properties": json.dumps(properties, default=str),
            "context": json.dumps({"session_id": row.get("session_id")}),
            "source": "calls",
            "ingest_id": ingest_id,
        }
        for column in out:
            out[column].append(values.get(column))
    return pa.table(out, schema=EVENTS.schema.to_pyarrow())


def match_new_calls(con: BaseBackend, settings: Settings) -> dict[str, int]:
    """Turn calls not yet in ``events`` into touches; count them by match status.

    Also counts ``pool_exhausted``: visitors who saw the site's own number because every
    tracking number was leased (their calls cannot be matched).
    """
    calls = con.table(store.CALLS.name)
    events = con.table(store.EVENTS.name)
    known = events.filter(events.source == "calls").select(call_id=events.message_id.substr(5))
    new = calls.anti_join(known, "call_id").to_pyarrow()
    summary: dict[str, int] = {}
    if new.num_rows:
        calls_e164 = ibis.memtable(with_e164(new, settings.phone_region))
        leases = con.table(store.NUMBER_LEASES.name)
        matched = match_calls(
            calls_e164, leases, grace=timedelta(minutes=settings.dni_grace_minutes)
        ).to_pyarrow()
        touches = call_touches(
            matched, conversion_seconds=settings.call_conversion_seconds, ingest_id=uuid.uuid4().hex
        )
        engine.append(con, store.EVENTS.name, touches)
        for status in matched.column("match_status").to_pylist():
            summary[status] = summary.get(status, 0) + 1
    leases = con.table(store.NUMBER_LEASES.name)
    summary["pool_exhausted"] = int(leases.filter(leases.status == "exhausted").count().execute())
    return summary
