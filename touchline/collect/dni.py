"""Call tracking with dynamic number insertion (DNI): number leases, and calls matched to them.

A site shows one phone number; ``t.js`` swaps it (elements marked ``data-touchline-phone``) for
a *tracking number* leased to the visitor's session. When that number rings, the lease that
covered it at that moment says who called: the session's anonymous id, channel and keyword.

* :class:`LeaseBook` hands out leases. In ``visitor`` mode a number belongs to one session at a
  time (and is not reused until ``dni_grace_minutes`` after its lease ended, so a late call
  still finds the right visitor); in ``channel`` mode the pool's number is shared by everyone
  from that channel. When every number of a pool is taken the visitor keeps the site's own
  number and the request is *counted*, in one ``exhausted`` row per pool and UTC day (not one
  row per request: a flood of random session ids must not grow the store). Leases live in
  SQLite in the spool folder because several collector workers lease at once and only the
  loader may write the warehouse; the loader copies them into ``number_leases`` and then
  prunes the rows it copied that can no longer matter (ended longer than the grace period
  ago). The store holds at most ``max_rows`` rows: beyond it new sessions keep the site's own
  number too, counted as ``store_full`` per pool and day, until the loader prunes.
* :func:`match_calls` joins calls to leases and :func:`call_touches` turns the result into
  ``events`` rows (every call is a touch): Ibis expressions, so the calls stay in the engine;
  only their distinct phone numbers come to Python, for phonenumbers (:func:`with_e164`).
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
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
LEASE_STORE_MAX_ROWS_DEFAULT = 1_000_000
DAY_SECONDS = 86_400.0
# statuses of the per-pool, per-day rows that count refused requests instead of storing them
COUNTED_STATUSES = ("exhausted", "store_full")
CALL_EVENT = "Phone Call"
MATCH_STATUSES = ("matched", "ambiguous", "expired", "unmatched")
#: the matched new calls, computed once by :func:`match_new_calls` (a name per run: on Spark it
#: is a table in the warehouse, and two runs must not share it)
MATCHED_SCRATCH_PREFIX = "tmp_dni_matched_calls_"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS leases (
    lease_id TEXT PRIMARY KEY, number TEXT, pool TEXT, status TEXT, anonymous_id TEXT,
    session_id TEXT, utm_source TEXT, utm_medium TEXT, utm_campaign TEXT, utm_term TEXT,
    leased_at REAL, expires_at REAL, seq INTEGER, request_count INTEGER DEFAULT 1
);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER);
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
        max_rows: int = LEASE_STORE_MAX_ROWS_DEFAULT,
    ) -> None:
        self.path = path
        self.mode = mode
        self.max_rows = max_rows
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
        db = self._db()
        try:
            db.executescript(_SCHEMA)
            columns = {row[1] for row in db.execute("PRAGMA table_info(leases)")}
            if "request_count" not in columns:  # a store made by an older version
                db.execute("ALTER TABLE leases ADD COLUMN request_count INTEGER DEFAULT 1")
            db.execute(
                "INSERT OR IGNORE INTO meta VALUES ('rows', (SELECT count(*) FROM leases)), "
                "('copied_seq', 0)"
            )
        finally:
            db.close()

    def _db(self) -> sqlite3.Connection:
        # one connection per call: leases run on executor threads, and opening is ~0.1 ms
        db = sqlite3.connect(self.path, timeout=10.0, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        return db

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (``BEGIN IMMEDIATE``): committed when the block ends, rolled
        back when it raises; the connection is closed either way."""
        db = self._db()
        try:
            db.execute("BEGIN IMMEDIATE")
            yield db
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        finally:
            db.close()

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
        with self._transaction() as db:
            # never below what the loader copied: pruning may have deleted the highest seq
            seq = db.execute(
                "SELECT max(coalesce((SELECT max(seq) FROM leases), 0), "
                "(SELECT value FROM meta WHERE name = 'copied_seq')) + 1"
            ).fetchone()[0]
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
                return Lease(held[0], held[1], pool, "leased", expires)
            stored = db.execute("SELECT value FROM meta WHERE name = 'rows'").fetchone()[0]
            if stored >= self.max_rows:
                lease = self._count_refusal(db, pool, "store_full", now, seq)
                return lease
            number = self._free_number(db, pool, session_id, now)
            if number is None:
                lease = self._count_refusal(db, pool, "exhausted", now, seq)
                return lease
            lease = Lease(uuid.uuid4().hex, number, pool, "leased", now + self.lease_seconds)
            db.execute(
                "INSERT INTO leases VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1)",
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
            db.execute("UPDATE meta SET value = value + 1 WHERE name = 'rows'")
            return lease

    def _count_refusal(
        self, db: sqlite3.Connection, pool: str, status: str, now: float, seq: int
    ) -> Lease:
        """Count a request that got no number in its pool's row for the UTC day.

        The row spans the day (``leased_at`` its start, ``expires_at`` its end), so it is
        pruned like a lease once the day is over and copied, and the count only grows while
        the loader may still copy it.
        """
        day = now - now % DAY_SECONDS
        lease_id = f"{status}:{pool}:{datetime.fromtimestamp(day, UTC).date().isoformat()}"
        updated = db.execute(
            "UPDATE leases SET request_count = request_count + 1, seq = ? WHERE lease_id = ?",
            (seq, lease_id),
        ).rowcount
        if not updated:  # bounded by pools x days x 2: allowed past max_rows
            db.execute(
                "INSERT INTO leases (lease_id, number, pool, status, leased_at, expires_at, seq, "
                "request_count) VALUES (?, NULL, ?, ?, ?, ?, ?, 1)",
                (lease_id, pool, status, day, day + DAY_SECONDS, seq),
            )
            db.execute("UPDATE meta SET value = value + 1 WHERE name = 'rows'")
        return Lease(lease_id, None, pool, status, now)

    def prune(self, *, copied_seq: int, now: float | None = None) -> int:
        """Forget rows the loader copied (``seq <= copied_seq``) that ended over the grace ago.

        Such a row can no longer change a lease (a number ended longer than the grace period
        ago is free either way) nor be renewed, and ``number_leases`` holds it. Returns the
        number of rows deleted.
        """
        now = time.time() if now is None else now
        with self._transaction() as db:
            deleted = db.execute(
                "DELETE FROM leases WHERE seq <= ? AND expires_at + ? < ?",
                (copied_seq, self.grace_seconds, now),
            ).rowcount
            db.execute(
                "UPDATE meta SET value = max(value, ?) WHERE name = 'copied_seq'", (copied_seq,)
            )
            db.execute("UPDATE meta SET value = value - ? WHERE name = 'rows'", (deleted,))
            return int(deleted)

    def forget(self, anonymous_ids: list[str]) -> int:
        """Delete the leases of these visitors (``touchline erase``); return how many.

        A number leased to one of them is free again at once: a call on it no longer finds
        the erased visitor, which is the point.
        """
        if not anonymous_ids:
            return 0
        marks = ", ".join("?" * len(anonymous_ids))
        with self._transaction() as db:
            deleted = db.execute(
                f"DELETE FROM leases WHERE anonymous_id IN ({marks})", anonymous_ids).rowcount
            db.execute("UPDATE meta SET value = value - ? WHERE name = 'rows'", (deleted,))
            return int(deleted)

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
                "utm_medium, utm_campaign, utm_term, leased_at, expires_at, "
                "coalesce(request_count, 1), seq FROM leases WHERE seq > ? ORDER BY seq",
                (seq,),
            ).fetchall()
        finally:
            db.close()
        names = [c.name for c in NUMBER_LEASES.columns]
        columns: dict[str, list[object]] = {n: [] for n in names}
        for row in rows:
            for name, value in zip(names, row[:13], strict=True):
                if name in ("leased_at", "expires_at"):
                    value = datetime.fromtimestamp(float(value), UTC).replace(tzinfo=None)
                columns[name].append(value)
        table = pa.table(columns, schema=NUMBER_LEASES.schema.to_pyarrow())
        return table, (rows[-1][13] if rows else seq)


def e164_lookup(numbers: list[str], region: str) -> pa.Table:
    """``number -> e164`` for distinct raw numbers (phonenumbers, in Python: each number once)."""
    return pa.table({"number": pa.array(numbers, pa.string()),
                     "e164": pa.array([to_e164(n, region) for n in numbers], pa.string())})


def with_e164(calls: ir.Table, region: str) -> ir.Table:
    """Add ``caller_e164`` and ``tracking_e164`` to ``calls``.

    phonenumbers runs in Python, so only the distinct numbers come out of the engine; the
    small lookup goes back in and is joined on, the calls themselves never leave the engine.
    """
    raw = ibis.union(calls.select(number=calls.caller_number),
                     calls.select(number=calls.tracking_number), distinct=True)
    numbers = [n for n in raw.to_pyarrow().column("number").to_pylist() if n is not None]
    lookup = ibis.memtable(e164_lookup(numbers, region))
    out = calls
    for source, target in (("caller_number", "caller_e164"), ("tracking_number", "tracking_e164")):
        side = lookup.select(**{f"_{target}_raw": lookup.number, target: lookup.e164})
        out = out.left_join(side, out[source] == side[f"_{target}_raw"]).drop(f"_{target}_raw")
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


def _json_text(value: ir.Value) -> ir.StringValue:
    """``value`` written as JSON, as ``json.dumps`` writes it (``null``, ``true``, ``12``,
    ``"text"`` with ``"``, ``\\`` and line breaks escaped), the same text on every engine.

    Why not the engines' own JSON functions: DuckDB's ``to_json`` and Spark's ``to_json`` differ
    in spacing and in how they write nulls, and the text of ``events.properties`` must not depend
    on the engine. Non-ASCII characters stay as they are (``json.dumps`` would write ``\\u00e9``;
    both parse to the same value).
    """
    if value.type().is_boolean():
        # not ifelse alone: a null condition takes the else branch, and null must stay null
        text = ibis.ifelse(value.isnull(), ibis.null("string"), ibis.ifelse(value, "true", "false"))
    elif value.type().is_numeric():
        text = value.cast("string")
    else:
        escaped = value.cast("string")
        for char, code in (("\\", "\\\\"), ('"', '\\"'), ("\n", "\\n"), ("\r", "\\r"),
                           ("\t", "\\t")):
            escaped = escaped.replace(char, code)
        text = '"' + escaped + '"'
    return text.fill_null("null")


def _json_object(fields: dict[str, ir.Value],
                 if_set: dict[str, ir.Value] | None = None) -> ir.StringValue:
    """A JSON object of ``fields`` in their order, with ``json.dumps``'s separators; then each
    of ``if_set`` whose value is not null (absent, not ``null``, when it is)."""
    parts: list[ir.StringValue] = []
    for name, value in fields.items():
        parts.append(ibis.literal(("{" if not parts else ", ") + f'"{name}": ')
                     + _json_text(value))
    for name, value in (if_set or {}).items():
        parts.append(ibis.ifelse(value.isnull(), "",
                                 ibis.literal(f', "{name}": ') + _json_text(value)))
    return ibis.literal("").concat(*parts) + "}"


def call_touches(
    matched: ir.Table, *, conversion_seconds: int | None, ingest_id: str
) -> ir.Table:
    """``events`` rows for matched calls: a ``Phone Call`` track per call, id ``call:<call_id>``.

    The visitor's anonymous id and campaign come from the lease; the caller's E.164 number goes
    to ``phone`` for identity. ``properties.conversion`` is true for answered calls of at least
    ``conversion_seconds`` (``None``: calls are touches only). The call's own UTM and
    landing-page properties (a call tracker's export) follow, when it has them; prepare reads
    the campaign from them when the lease named none. One expression on the engine:
    a back-fill of a million calls never passes through a Python loop.
    """
    m = matched
    # the call tracker's campaign and landing page, for prepare to read when no lease named one
    carried: dict[str, ir.Value] = {}
    if "properties" in m.columns:
        own = m.properties.cast("string")
        carried = {key: engine.json_value(own, key)
                   for key in (*store.UTM_COLUMNS, *store.LANDING_URL_KEYS)}
    if conversion_seconds is None:
        conversion = ibis.literal(False)
    else:
        conversion = (m.answered & (m.duration_seconds >= conversion_seconds)).fill_null(False)
    properties = _json_object({
        "call_id": m.call_id,
        "tracking_number": m.tracking_e164.coalesce(m.tracking_number),
        "duration_seconds": m.duration_seconds,
        "answered": m.answered,
        "outcome": m.outcome,
        "match_status": m.match_status,
        "lease_id": m.lease_id,
        "session_id": m.session_id,
        "pool": m.pool,
        "conversion": conversion,
    }, carried)
    values: dict[str, ir.Value] = {
        "message_id": ibis.literal("call:") + m.call_id,
        "type": ibis.literal("track"),
        "event": ibis.literal(CALL_EVENT),
        "anonymous_id": m.anonymous_id,
        "timestamp": m.started_at,
        "original_timestamp": m.started_at,
        "utm_source": m.utm_source,
        "utm_medium": m.utm_medium,
        "utm_campaign": m.utm_campaign,
        "utm_term": m.utm_term,
        "phone": m.caller_e164,
        "properties": properties,
        "context": _json_object({"session_id": m.session_id}),
        "source": ibis.literal("calls"),
        "ingest_id": ibis.literal(ingest_id),
    }
    return m.select(**{
        name: (values[name] if name in values else ibis.null()).cast(dtype)
        for name, dtype in EVENTS.schema.items()
    })


def match_new_calls(con: BaseBackend, settings: Settings) -> dict[str, int]:
    """Turn calls not yet in ``events`` into touches; count them by match status.

    Also counts ``pool_exhausted``: lease requests answered with the site's own number because
    every tracking number was leased or the lease store was full (their calls cannot be
    matched).
    """
    calls = con.table(store.CALLS.name)
    events = con.table(store.EVENTS.name)
    # a call already in events: one this made (``call:<id>``) or one a telephony integration
    # sent as a track with its ``call_id`` property
    recorded = events.filter(events.source == "calls")
    known = recorded.select(call_id=engine.json_value(recorded.properties.cast("string"),
                                                      "call_id").coalesce(
        recorded.message_id.substr(5)))
    new = calls.anti_join(known, "call_id")
    summary: dict[str, int] = {}
    if new.count().execute():
        leases = con.table(store.NUMBER_LEASES.name)
        matched = match_calls(with_e164(new, settings.phone_region), leases,
                              grace=timedelta(minutes=settings.dni_grace_minutes))
        # computed once: appending to events changes what ``new`` (an anti-join on events) is
        ingest_id = uuid.uuid4().hex
        scratch = MATCHED_SCRATCH_PREFIX + ingest_id
        matched = engine.materialise(con, scratch, matched)
        try:
            counts = matched.group_by("match_status").aggregate(calls=matched.count())
            for row in counts.to_pyarrow().to_pylist():
                summary[row["match_status"]] = int(row["calls"])
            touches = call_touches(matched, conversion_seconds=settings.call_conversion_seconds,
                                   ingest_id=ingest_id)
            engine.append(con, store.EVENTS.name, touches)
        finally:
            engine.drop_materialised(con, scratch)
    leases = con.table(store.NUMBER_LEASES.name)
    refused = leases.filter(leases.status.isin(COUNTED_STATUSES))
    # request_count is null in rows copied by an older version: one row was one request then
    summary["pool_exhausted"] = int(refused.request_count.fill_null(1).sum().fill_null(0).execute())
    return summary
