"""The loader: the warehouse's one writer for the collector, moving the spool into tables.

Each cycle reads the whole lines of every spool segment past what ``spool_offsets`` says is
loaded, maps them (:class:`touchline.collect.segment.SegmentMapper`), drops messages whose
``messageId`` is already in ``events`` (recorded in ``rejects`` as ``duplicate``), and commits
rows *and* the new offset in one DuckDB transaction. A crash before the commit reloads the same
bytes; after it, the offset says they are in. A segment is deleted only when it is sealed and
fully loaded. The loader also copies number leases into ``number_leases`` and exports the live
API keys for the workers.

The loader process keeps a :class:`LoaderState` across its cycles: the planned mapping, the
hashes of the message ids already in ``events`` (:class:`StoredMessageIds`: the duplicate check
looks the chunk's ids up there instead of scanning ``events``), and whether the tables and the
exported keys are known good. All of it is read again from the warehouse whenever another
process has written it since the loader's last cycle.

The collector's warehouse is DuckDB: the transaction that ties rows to offsets is what makes a
load exactly-once, and DuckDB allows one writer process, which the loader is.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import duckdb
import ibis
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from touchline import engine, store
from touchline.collect import at_rest
from touchline.collect.dni import LEASES_FILE, LeaseBook
from touchline.collect.keys import export_keys
from touchline.collect.segment import (
    EXPLODE_REASONS,
    SegmentMapper,
    SegmentSplit,
)
from touchline.collect.spool import (
    BATCH,
    CALL,
    DEAL,
    ERASED,
    EVENT,
    REJECT,
    read_complete,
    replay_rewrites,
    segments,
    trailing_partial,
)
from touchline.config import Settings
from touchline.errors import EngineError
from touchline.store import RejectRecord, reject_rows

if TYPE_CHECKING:
    from ibis.backends import BaseBackend

log = logging.getLogger(__name__)

LOCK_FILE = "loader.lock"
LOADER_NICENESS = 10
LOADER_THREADS = 1  # DuckDB threads of the loader (see run_loader)
LEASES_OFFSET_KEY = "@" + LEASES_FILE  # spool_offsets row holding the last copied lease seq
#: a cycle that loaded for at least this share of ``load_interval_seconds`` keeps the
#: warehouse open for the next one (see run_loader)
BUSY_SHARE = 0.5
#: the longest the loader keeps the warehouse open over busy cycles before closing it once
HOLD_SECONDS = 10.0
#: spool_offsets row of every load: bytes loaded in all and when last (a segment's own row
#: goes once it is loaded and deleted; this one stays, for "data last loaded")
LOADED_KEY = "@loaded"


@dataclass
class LoadReport:
    """What one load did: rows per table, duplicates skipped, segments finished."""

    events: int = 0
    rejects: int = 0
    duplicates: int = 0
    deals: int = 0
    calls: int = 0
    leases: int = 0
    segments_removed: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)

    def add(self, other: LoadReport) -> None:
        for name in (
            "events",
            "rejects",
            "duplicates",
            "deals",
            "calls",
            "leases",
            "segments_removed",
        ):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for reason, count in other.by_reason.items():
            self.by_reason[reason] = self.by_reason.get(reason, 0) + count


def _duckdb(con: BaseBackend) -> duckdb.DuckDBPyConnection:
    if engine.engine_name(con) != "duckdb":
        raise EngineError(
            "the collector's loader needs a DuckDB warehouse (it commits rows and spool offsets "
            f"in one transaction); {engine.engine_name(con)} is not supported here"
        )
    return con.con  # type: ignore[no-any-return]


def load_spool(
    con: BaseBackend, settings: Settings, *, max_rounds: int = 1_000,
    state: LoaderState | None = None,
) -> LoadReport:
    """Load everything currently in the spool; return what was loaded.

    Bounded: at most ``max_rounds`` transactions of ``load_batch_bytes`` each. ``state``: the
    loader process keeps one across its cycles (:class:`LoaderState`); without it, one is made
    for this call, which reads the stored message ids once and checks the tables.
    """
    if state is None:
        with SegmentMapper() as own:
            return load_spool(con, settings, max_rounds=max_rounds, state=LoaderState(own))
    db = _duckdb(con)
    if not state.settled:
        ensure_tables(con)
    if state.stored_ids is None:
        state.stored_ids = StoredMessageIds.read(db)
    spool_dir = Path(settings.spool_dir)
    spool_dir.mkdir(parents=True, exist_ok=True)
    replay_rewrites(spool_dir)  # an erasure cut off by a crash is finished before reading
    report = LoadReport()
    offsets = dict(db.execute("SELECT segment, loaded_bytes FROM spool_offsets").fetchall())
    with segments(spool_dir) as found:
        for seg in found:
            offset = int(offsets.get(seg.name, 0))
            for _ in range(max_rounds):
                data = read_complete(seg.path, offset, settings.load_batch_bytes)
                if not data:
                    break
                report.add(_load_chunk(con, settings, state, seg.name, offset, data))
                offset += len(data)
            if not seg.sealed or read_complete(seg.path, offset, settings.load_batch_bytes):
                continue
            partial = trailing_partial(seg.path, offset)
            if partial:
                # a write cut off by a crash: never acknowledged, but not dropped silently
                report.add(_record_partial(db, seg.name, offset, partial))
            seg.path.unlink()
            db.execute("DELETE FROM spool_offsets WHERE segment = ?", [seg.name])
            report.segments_removed += 1
    report.leases = _sync_leases(db, settings, spool_dir)
    if not state.settled:  # a key created or revoked since is a write by another process
        export_keys(con, spool_dir)
    return report


#: bytes per stored message id that :class:`StoredMessageIds` keeps in memory
STORED_ID_BYTES = np.dtype(np.uint64).itemsize


class StoredMessageIds:
    r"""The 64-bit hashes (DuckDB's ``hash``) of every ``message_id`` in ``events``: a chunk's
    ids are looked up here, and only those found are checked exactly against ``events``.

    Why: the duplicate check joined each chunk with all of ``events``, a scan per cycle that
    grows with the warehouse (~96 ms at 3M rows). A lookup costs :math:`O(m \log n)` for
    ``m`` ids of the chunk against ``n`` stored ones, and a scan of ``events`` is left only
    for a chunk that holds an id already seen (a real repeat, or a hash collision, with odds of
    about :math:`m n / 2^{64}`: the exact check makes it harmless). An id erased from
    ``events`` since stays here: a later copy is checked exactly, found new and loaded.

    Memory: :data:`STORED_ID_BYTES` per stored event (80 MB at 10M). The hashes are kept as
    sorted runs of sizes growing by at least doubling (a log-structured merge): adding ``m``
    sorts ``m`` and sometimes merges runs, each hash is merged :math:`O(\log n)` times, and a
    lookup searches each of the :math:`O(\log n)` runs.
    """

    def __init__(self) -> None:
        self._runs: list[np.ndarray] = []

    @classmethod
    def read(cls, db: duckdb.DuckDBPyConnection) -> StoredMessageIds:
        """The hashes of every id in ``events`` now (one scan)."""
        known = cls()
        hashes = db.execute(
            "SELECT hash(message_id) AS message_hash FROM events WHERE message_id IS NOT NULL"
        ).fetchnumpy()["message_hash"]
        known.add(np.asarray(hashes, dtype=np.uint64))
        return known

    def __len__(self) -> int:
        return sum(len(run) for run in self._runs)

    def add(self, hashes: np.ndarray) -> None:
        """Remember ``hashes`` (of ids now committed to ``events``)."""
        if not len(hashes):
            return
        run = np.sort(hashes)
        while self._runs and len(self._runs[-1]) <= 2 * len(run):
            run = np.sort(np.concatenate([self._runs.pop(), run]))
        self._runs.append(run)

    def may_contain(self, hashes: np.ndarray) -> np.ndarray:
        """For each hash, whether an id with that hash was stored (True may be a collision)."""
        found = np.zeros(len(hashes), dtype=bool)
        for run in self._runs:
            at = np.minimum(np.searchsorted(run, hashes), len(run) - 1)
            found |= run[at] == hashes
        return found


@dataclass
class LoaderState:
    """What the loader keeps from one cycle to the next; all of it can be read again.

    ``settled``: the warehouse is as this state's last load left it (no other process wrote it
    since), so its tables are there and the exported keys are current; ``stored_ids`` is None
    until read from ``events``. :meth:`forget` when another process may have written.
    """

    mapper: SegmentMapper
    stored_ids: StoredMessageIds | None = None
    settled: bool = False
    #: :func:`touchline.engine.warehouse_version` as :func:`load_once` left the warehouse
    left_version: str | None = None

    def forget(self) -> None:
        """Another process wrote the warehouse (or a load failed): read it all again."""
        self.stored_ids = None
        self.settled = False


@functools.cache
def _expected_columns() -> frozenset[tuple[str, str]]:
    """(table, column) of every canonical table, and (view, "") of every view."""
    return frozenset(
        pair
        for spec in store.TABLES.values()
        for pair in (
            [(spec.name, "")] if spec.view is not None
            else [(spec.name, column) for column in spec.schema.names]
        )
    )


def ensure_tables(con: BaseBackend) -> None:
    """:func:`touchline.store.init`, unless one catalog query shows it has nothing to do.

    Why: the loader opens the warehouse every cycle (so other commands can use it in
    between), and ``store.init`` reads each table's schema through Ibis, ~0.15 s of CPU:
    every second, on the cores the collector's workers answer on.
    """
    rows = _duckdb(con).execute(
        "SELECT table_name, column_name FROM information_schema.columns "
        "WHERE table_catalog = current_database() AND table_schema = current_schema()"
    ).fetchall()
    have = set(rows) | {(table, "") for table, _ in rows}
    if not _expected_columns() <= have:
        store.init(con)


def _load_chunk(
    con: BaseBackend, settings: Settings, state: LoaderState, segment_name: str,
    offset: int, data: bytes,
) -> LoadReport:
    db = _duckdb(con)
    mapper = state.mapper
    assert state.stored_ids is not None  # read by load_spool
    region = settings.phone_region if settings.pii_at_rest == "hashed" else None
    report = LoadReport()
    now = datetime.now(UTC).replace(tzinfo=None)
    ingest_id = f"collector:{segment_name}:{offset}"
    source = f"spool:{segment_name}"
    events_raw: list[str] = []
    event_lines: list[int] = []
    refused: list[RejectRecord] = []  # refused by the collector, or unreadable in the spool
    unmapped: list[RejectRecord] = []  # records the mapping itself fails on
    batch_lines: list[int] = []
    batch_headers: list[str] = []
    batch_bodies: list[str] = []
    deals: list[dict[str, Any]] = []
    calls: list[dict[str, Any]] = []
    for number, line in enumerate(data.split(b"\n")[:-1], start=1):
        kind, payload = line[:1], line[1:]
        if kind == ERASED:  # `touchline erase` blanked it in place
            continue
        if kind == EVENT:
            events_raw.append(payload.decode(errors="replace"))
            event_lines.append(number)
            continue
        if kind == BATCH and b"\t" in payload:
            header, body = payload.split(b"\t", 1)
            batch_lines.append(number)
            batch_headers.append(header.decode(errors="replace"))
            batch_bodies.append(body.decode(errors="replace"))
            continue
        try:
            record = orjson.loads(payload)
        except orjson.JSONDecodeError:
            record = None
        if kind == REJECT and isinstance(record, dict):
            given_line, field_name, raw = record.get("line"), record.get("field"), record.get("raw")
            refused.append(RejectRecord(
                str(record.get("code")), str(record.get("message")),
                raw if isinstance(raw, str) else None,
                line=given_line if isinstance(given_line, int) else number,
                field=field_name if isinstance(field_name, str) else None,
                source=str(record.get("source")),
            ))
        elif kind == DEAL and isinstance(record, dict):
            deals.append(record)
        elif kind == CALL and isinstance(record, dict):
            calls.append(record)
        else:
            refused.append(RejectRecord(
                "bad_spool_line", "unreadable spool record", line.decode(errors="replace"),
                line=number,
            ))
    lines = pa.table(
        {"line": pa.array(event_lines, pa.int64()), "raw": pa.array(events_raw, pa.string())}
    )
    if batch_lines:
        batches = pa.table(
            {
                "line": pa.array(batch_lines, pa.int64()),
                "header": pa.array(batch_headers, pa.string()),
                "body": pa.array(batch_bodies, pa.string()),
            }
        )
        exploded_parts, failed = _isolating(
            batches, lambda part: mapper.explode(part, origin=ingest_id)
        )
        unmapped += [
            _unmappable(exc, bad["body"][0].as_py(), bad["line"][0].as_py())
            for bad, exc in failed
        ]
        lines = pa.concat_tables(
            [lines, *(exploded.cast(lines.schema) for exploded, _ in exploded_parts)]
        )
        refused += [
            RejectRecord(code, EXPLODE_REASONS[code], raw, line=line, source="/v1/batch")
            for _, out in exploded_parts
            for line, raw, code in zip(*(out[c].to_pylist() for c in ("line", "raw", "refused")),
                                       strict=True)
        ]
    lines = lines.append_column("position", pa.array(range(lines.num_rows), pa.int64()))
    splits, failed = _isolating(
        lines,
        lambda part: mapper.map(
            part,
            source=source,
            ingest_id=ingest_id,
            default_source="web",
            # a keyed or dropped address is made from the full one (collect/at_rest.py)
            ip_truncate=settings.ip_truncate and settings.ip_at_rest == "truncated",
            step="collect:spool",
            now=now,
            # a bisected chunk maps in parts: each part's rejects need ids of their own
            origin=f"{ingest_id}#{part['position'][0].as_py() if part.num_rows else 0}",
            contacts_region=region,
        ),
    )
    unmapped += [
        _unmappable(exc, bad["raw"][0].as_py(), bad["line"][0].as_py()) for bad, exc in failed
    ]
    unmappable = reject_rows(
        unmapped, step="collect:spool", source=source, origin=f"{ingest_id}#unmappable",
        ingest_id=ingest_id, now=now, contacts_region=region,
    )
    split, repeated = _merged(splits)
    early = reject_rows(
        refused, step="collect:api", source=source, origin=ingest_id, ingest_id=ingest_id,
        now=now, contacts_region=region,
    )
    db.begin()
    try:
        _register_protected(con, settings, "batch_events", store.EVENTS, split.events)
        batch_ids = db.execute(
            "SELECT message_id, hash(message_id) AS message_hash FROM batch_events "
            "WHERE message_id IS NOT NULL"
        ).fetch_arrow_table()
        stored = _stored_among(db, state.stored_ids, batch_ids)
        db.register("stored_ids", stored)
        db.register("repeated_ids", repeated.append_column(
            "position", pa.array(range(repeated.num_rows), pa.int64())))
        duplicate_count = _insert_duplicate_rejects(db, source, ingest_id, now)
        db.execute(
            "INSERT INTO events BY NAME "
            "SELECT * FROM batch_events b ANTI JOIN stored_ids s USING (message_id)"
        )
        _unregister(db, "batch_events")
        db.unregister("stored_ids")
        db.unregister("repeated_ids")
        for table in (split.rejects, unmappable, early):
            if table.num_rows:
                db.register("batch_rejects", table)
                db.execute("INSERT INTO rejects BY NAME SELECT * FROM batch_rejects")
                db.unregister("batch_rejects")
        report.deals = _insert_rows(con, settings, store.DEALS, deals, ingest_id)
        report.calls = _insert_rows(con, settings, store.CALLS, calls, ingest_id)
        db.execute("DELETE FROM spool_offsets WHERE segment = ?", [segment_name])
        db.execute(
            "INSERT INTO spool_offsets VALUES (?, ?, ?)", [segment_name, offset + len(data), now]
        )
        loaded = db.execute(
            "SELECT loaded_bytes FROM spool_offsets WHERE segment = ?", [LOADED_KEY]
        ).fetchone()
        db.execute("DELETE FROM spool_offsets WHERE segment = ?", [LOADED_KEY])
        db.execute(
            "INSERT INTO spool_offsets VALUES (?, ?, ?)",
            [LOADED_KEY, (int(loaded[0]) if loaded else 0) + len(data), now],
        )
        db.commit()
    except BaseException:
        db.rollback()
        raise
    # only once committed: a rolled-back chunk's ids are not in events
    inserted = batch_ids if not stored.num_rows else batch_ids.filter(
        pc.invert(pc.is_in(batch_ids.column("message_id"), value_set=stored.column("message_id"))))
    state.stored_ids.add(inserted.column("message_hash").to_numpy())
    report.events = split.events.num_rows - (duplicate_count - repeated.num_rows)
    repeated_in_split = pc.sum(
        pc.equal(split.rejects.column("reason_code"), "duplicate")
    ).as_py()
    report.duplicates = duplicate_count + (repeated_in_split or 0)
    all_rejects = [split.rejects, unmappable, early]
    report.rejects = sum(t.num_rows for t in all_rejects) + duplicate_count
    for table in all_rejects:  # counted in Arrow: a bad batch may hold many rejects
        for item in pc.value_counts(table.column("reason_code")).to_pylist():
            code = item["values"]
            report.by_reason[code] = report.by_reason.get(code, 0) + item["counts"]
    if duplicate_count:
        report.by_reason["duplicate"] = report.by_reason.get("duplicate", 0) + duplicate_count
    return report


#: what the in-process mapping raises on data it cannot take; anything else (the disk, the
#: warehouse) propagates, and the loader retries the chunk in its next cycle
_DATA_ERRORS = (duckdb.Error, pa.ArrowException)
_ERROR_SHOWN = 200  # characters of a mapping error quoted in a reject reason

T = TypeVar("T")


def _isolating(
    rows: pa.Table, attempt: Callable[[pa.Table], T]
) -> tuple[list[T], list[tuple[pa.Table, Exception]]]:
    """``attempt(rows)``, or, when the data makes it fail, ``attempt`` on halves, recursively.

    Why: one message the mapping cannot take must not keep the rest of its chunk (and so
    every chunk after it) out of the warehouse. The common case costs one call; a bad row
    costs about twice the chunk's mapping and ends up alone in the failures, with its error.
    """
    try:
        return [attempt(rows)], []
    except _DATA_ERRORS as exc:
        if rows.num_rows <= 1:
            log.warning("a spool record cannot be mapped and goes to rejects: %s", exc)
            return [], [(rows, exc)] if rows.num_rows else []
        half = rows.num_rows // 2
        done_a, failed_a = _isolating(rows.slice(0, half), attempt)
        done_b, failed_b = _isolating(rows.slice(half), attempt)
        return done_a + done_b, failed_a + failed_b


def _unmappable(exc: Exception, raw: str, line: int) -> RejectRecord:
    first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    reason = f"the loader cannot map this record: {first_line[:_ERROR_SHOWN]}"
    return RejectRecord("unmappable", reason, raw, line=line)


def _merged(splits: list[SegmentSplit]) -> tuple[SegmentSplit, pa.Table]:
    """One split from the parts :func:`_isolating` mapped, and the ``message_id``s repeated
    across parts (each part deduplicated only itself): only the first copy is kept."""
    empty_ids = pa.table({"message_id": pa.array([], pa.string())})
    if len(splits) == 1:
        return splits[0], empty_ids
    if not splits:
        nothing = SegmentSplit(
            store.EVENTS.schema.to_pyarrow().empty_table(),
            store.REJECTS.schema.to_pyarrow().empty_table(),
        )
        return nothing, empty_ids
    events = pa.concat_tables([s.events for s in splits])
    rejects = pa.concat_tables([s.rejects for s in splits])
    position = pa.array(range(events.num_rows), pa.int64())
    indexed = pa.table({"message_id": events.column("message_id"), "_i": position})
    firsts = indexed.group_by("message_id", use_threads=False).aggregate([("_i", "min")])
    first = pc.is_in(position, value_set=firsts.column("_i_min"))
    repeated = events.filter(pc.invert(first)).select(["message_id"])
    return SegmentSplit(events.filter(first), rejects), repeated


def _stored_among(
    db: duckdb.DuckDBPyConnection, stored_ids: StoredMessageIds, batch_ids: pa.Table
) -> pa.Table:
    """The ids of ``batch_ids(message_id, message_hash)`` already in ``events``, exactly:
    ``events`` is read only when a hash is known (``stored_ids``), and then for those ids only.
    """
    known = stored_ids.may_contain(batch_ids.column("message_hash").to_numpy())
    candidates = batch_ids.filter(pa.array(known)).select(["message_id"])
    if not candidates.num_rows:
        return candidates
    db.register("candidate_ids", candidates)
    try:
        return db.execute(
            "SELECT DISTINCT message_id FROM events SEMI JOIN candidate_ids USING (message_id)"
        ).fetch_arrow_table()
    finally:
        db.unregister("candidate_ids")


#: why a message id met again is refused, in ``rejects.reason``
DUPLICATE_REASON = "messageId is already in events; the first copy is kept"


def duplicate_rejects_sql() -> str:
    """DuckDB SQL for the ``rejects`` rows of repeated message ids, built by the one rejects
    builder (:func:`touchline.store.reject_rows_expr`) and run in the load's transaction.

    Reads ``batch_events`` and ``stored_ids(message_id)``, those of its ids already in
    ``events`` (:func:`_stored_among`; they come first, in id order),
    ``repeated_ids(message_id, position)`` (ids repeated across the parts of a bisected chunk,
    in their order) and the one-row ``duplicate_meta(source, origin, ingest_id, now)``: the
    chunk's names are data, so the query is compiled once, at import. Why in the engine: a
    replayed chunk repeats every id it holds, and one Python object per duplicate made such a
    load as slow as its duplicates are many.
    """
    batch = ibis.table({"message_id": "string"}, name="batch_events")
    known = ibis.table({"message_id": "string"}, name="stored_ids")
    repeated = ibis.table({"message_id": "string", "position": "int64"}, name="repeated_ids")
    meta = ibis.table({"source": "string", "origin": "string", "ingest_id": "string",
                       "now": "timestamp"}, name="duplicate_meta")
    seen = batch.semi_join(known, "message_id")
    ids = seen.select(
        "message_id", _part=ibis.literal(0),
        _order=ibis.row_number().over(order_by=seen.message_id),
    ).union(
        repeated.select("message_id", _part=ibis.literal(1), _order=repeated.position),
        distinct=False,
    )
    records = ids.cross_join(meta).select(
        line=ibis.null("int64"), field=ibis.literal("messageId"),
        reason_code=ibis.literal("duplicate"), reason=ibis.literal(DUPLICATE_REASON),
        ref=ids.message_id, _part=ids._part, _order=ids._order,
        _source=meta.source, _origin=meta.origin, _ingest_id=meta.ingest_id, _now=meta.now,
    )
    rows = store.reject_rows_expr(
        records, step="collect:spool", source=records._source, origin=records._origin,
        ingest_id=records._ingest_id, now=records._now, order_by=("_part", "_order"),
    )
    return str(ibis.to_sql(rows, dialect="duckdb"))


_DUPLICATE_REJECTS_SQL = duplicate_rejects_sql()


def _insert_duplicate_rejects(
    db: duckdb.DuckDBPyConnection, source: str, ingest_id: str, now: datetime
) -> int:
    """Insert the ``duplicate`` rejects of this chunk; return how many."""
    meta = pa.table({
        "source": pa.array([source], pa.string()),
        "origin": pa.array([f"{ingest_id}#duplicates"], pa.string()),
        "ingest_id": pa.array([ingest_id], pa.string()),
        "now": pa.array([now], pa.timestamp("us")),
    })
    db.register("duplicate_meta", meta)
    try:
        inserted = db.execute(f"INSERT INTO rejects BY NAME {_DUPLICATE_REJECTS_SQL}").fetchone()
    finally:
        db.unregister("duplicate_meta")
    return int(inserted[0]) if inserted else 0


def _register_protected(con: BaseBackend, settings: Settings, name: str,
                        spec: store.TableSpec, rows: pa.Table) -> None:
    """Make ``rows`` readable as ``name`` on the loader's connection as settings want them
    stored (:func:`touchline.collect.at_rest.protect`: keyed e-mails and phones, keyed or
    dropped IPs); as they are when nothing changes them."""
    db = _duckdb(con)
    if not at_rest.changes_rows(settings):
        db.register(name, rows)
        return
    db.register(f"{name}_received", rows)
    protected = at_rest.protect(con, spec.name, con.table(f"{name}_received"), settings)
    con.create_table(name, protected, temp=True, overwrite=True)
    db.unregister(f"{name}_received")


def _unregister(db: duckdb.DuckDBPyConnection, name: str) -> None:
    """Undo :func:`_register_protected`."""
    db.unregister(name)
    db.execute(f"DROP TABLE IF EXISTS {name}")


def _insert_rows(
    con: BaseBackend,
    settings: Settings,
    spec: store.TableSpec,
    rows: list[dict[str, Any]],
    ingest_id: str,
) -> int:
    """Insert webhook rows into ``deals``/``calls``, cast by the table, skipping known keys."""
    if not rows:
        return 0
    db = _duckdb(con)
    names = [c.name for c in spec.columns]
    columns = {n: [None if r.get(n) is None else str(r.get(n)) for r in rows] for n in names}
    columns["ingest_id"] = [ingest_id] * len(rows)
    db.register("batch_rows", pa.table({n: pa.array(v, pa.string()) for n, v in columns.items()}))
    try:
        casts = ", ".join(
            f"try_cast({n} AS {_sql_type(c.dtype)}) AS {n}"
            for n, c in zip(names, spec.columns, strict=True)
        )
        typed = db.execute(
            f"SELECT DISTINCT ON ({spec.key}) {casts} FROM batch_rows").fetch_arrow_table()
        _register_protected(con, settings, "batch_typed", spec, typed)
        before = db.execute(f"SELECT count(*) FROM {spec.name}").fetchone()[0]  # type: ignore[index]
        db.execute(
            f"INSERT INTO {spec.name} BY NAME SELECT * FROM batch_typed b "
            f"ANTI JOIN {spec.name} t USING ({spec.key})"
        )
        after = db.execute(f"SELECT count(*) FROM {spec.name}").fetchone()[0]  # type: ignore[index]
    finally:
        db.unregister("batch_rows")
        _unregister(db, "batch_typed")
    return int(after - before)


def _sql_type(dtype: Any) -> str:
    if dtype.is_timestamp():
        return "TIMESTAMP"
    if dtype.is_float64():
        return "DOUBLE"
    if dtype.is_int64():
        return "BIGINT"
    if dtype.is_boolean():
        return "BOOLEAN"
    if dtype.is_date():
        return "DATE"
    return "VARCHAR"


def _record_partial(
    db: duckdb.DuckDBPyConnection, segment_name: str, offset: int, partial: bytes
) -> LoadReport:
    now = datetime.now(UTC).replace(tzinfo=None)
    record = RejectRecord(
        "spool_partial_write", "a spool write cut off by a crash (never acknowledged)",
        partial.decode(errors="replace"), line=0,
    )
    ingest_id = f"collector:{segment_name}:{offset}"
    table = reject_rows(
        [record], step="collect:spool", source=f"spool:{segment_name}@{offset}",
        origin=f"{ingest_id}#partial", ingest_id=ingest_id, now=now,
    )
    db.register("batch_rejects", table)
    db.execute("INSERT INTO rejects BY NAME SELECT * FROM batch_rejects")
    db.unregister("batch_rejects")
    log.warning("spool segment %s ended in a partial write of %d bytes", segment_name, len(partial))
    return LoadReport(rejects=1, by_reason={"spool_partial_write": 1})


def _sync_leases(db: duckdb.DuckDBPyConnection, settings: Settings, spool_dir: Path) -> int:
    path = spool_dir / LEASES_FILE
    if not path.exists():
        return 0
    book = LeaseBook(
        path,
        {},
        mode=settings.dni_mode,
        grace_minutes=settings.dni_grace_minutes,
        max_rows=settings.dni_lease_store_max_rows,
    )
    row = db.execute(
        "SELECT loaded_bytes FROM spool_offsets WHERE segment = ?", [LEASES_OFFSET_KEY]
    ).fetchone()
    changed, seq = book.changed_since(int(row[0]) if row else 0)
    if not changed.num_rows:
        return 0
    now = datetime.now(UTC).replace(tzinfo=None)
    db.begin()
    try:
        db.register("batch_leases", changed)
        db.execute(
            "DELETE FROM number_leases WHERE lease_id IN (SELECT lease_id FROM batch_leases)"
        )
        db.execute("INSERT INTO number_leases BY NAME SELECT * FROM batch_leases")
        db.unregister("batch_leases")
        db.execute("DELETE FROM spool_offsets WHERE segment = ?", [LEASES_OFFSET_KEY])
        db.execute("INSERT INTO spool_offsets VALUES (?, ?, ?)", [LEASES_OFFSET_KEY, seq, now])
        db.commit()
    except BaseException:
        db.rollback()
        raise
    book.prune(copied_seq=seq)  # only after the commit: the warehouse holds what is forgotten
    return int(changed.num_rows)


@contextlib.contextmanager
def loader_lock(spool_dir: Path, stop: Any) -> Iterator[bool]:
    """Hold the spool's loader lock (one loader per spool); yields False if stopped first."""
    spool_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(spool_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o640)
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if stop.wait(0.2):
                    yield False
                    return
        yield True
    finally:
        os.close(fd)


@contextlib.contextmanager
def open_warehouse(settings: Settings, state: LoaderState) -> Iterator[BaseBackend]:
    """The warehouse for one or more loads with ``state``, closed at the end of the block.

    What ``state`` knows is read again when the warehouse changed since the loader last closed
    it (a key created, a file ingested, an erasure: any other writer changes the file or its
    log, see :func:`touchline.engine.warehouse_version`). The version is taken right after
    the close: DuckDB lets one process open the file, and another's write needs an open and a
    commit, far longer than the gap.
    """
    version = engine.warehouse_version(settings)
    if version is None or version != state.left_version:  # None: no file to tell by
        state.forget()
    with engine.connected(settings=settings) as con:
        yield con
    state.left_version = engine.warehouse_version(settings)


def load_once(settings: Settings, state: LoaderState) -> LoadReport:
    """One cycle of the loader with the warehouse closed after it: open, load, close."""
    with open_warehouse(settings, state) as con:
        report = load_spool(con, settings, state=state)
    state.settled = True
    return report


def run_loader(settings: Settings, stop: Any, parent_pid: int | None = None) -> None:
    """Load the spool every ``load_interval_seconds`` until ``stop`` is set, then once more.

    The warehouse is closed between cycles, so ``touchline keys create``, the dashboard and
    other commands can use it between loads, except while the loader is busy: after a cycle
    that loaded for at least :data:`BUSY_SHARE` of the interval (so the warehouse was free for
    at most the rest of it anyway), it stays open for the next one, for at most
    :data:`HOLD_SECONDS`, then is closed for at least one interval. Why: each close makes
    DuckDB checkpoint what the cycle wrote and each open reads the catalog again: measured,
    ~0.1 s of CPU per cycle of 4,000 single events (300 → 200 ms) and ~0.35 s per cycle of
    64,000 in batches of 100 (2.28 → 1.92 s), on the cores the workers answer on. Kept open,
    DuckDB checkpoints when its log reaches ``checkpoint_threshold``. Exits when its parent
    (``touchline serve``) is gone.
    """
    logging.basicConfig(level=logging.WARNING)
    # acknowledging requests is urgent, loading is not: under CPU pressure the workers win and
    # the loader catches up in bigger batches (the spool absorbs the difference)
    os.nice(LOADER_NICENESS)
    # one DuckDB thread, on the warehouse and in the mapping: measured on a loaded 2-core
    # machine, a chunk of 32,000 messages took ~0.86 s of CPU instead of ~1.35 s with two
    # (the second thread mostly waits, on cores the workers need); the spool absorbs the rest
    settings = settings.model_copy(update={"threads": LOADER_THREADS})
    spool_dir = Path(settings.spool_dir)
    with loader_lock(spool_dir, stop) as locked:
        if not locked:
            return
        state: LoaderState | None = None  # kept across cycles: the mapping is planned once
        held = contextlib.ExitStack()  # closes the warehouse kept open between cycles
        con: BaseBackend | None = None
        held_since = 0.0
        try:
            while True:
                stopping = stop.is_set() or (
                    parent_pid is not None and os.getppid() != parent_pid)
                started = time.monotonic()
                try:
                    state = state or LoaderState(SegmentMapper(threads=LOADER_THREADS))
                    if con is None:
                        con = held.enter_context(open_warehouse(settings, state))
                        held_since = started
                    report = load_spool(con, settings, state=state)
                    state.settled = True
                    if report.events or report.rejects:
                        log.info("loaded %d events, %d rejects", report.events, report.rejects)
                    busy = bool(report.events or report.rejects) and (
                        time.monotonic() - started >= BUSY_SHARE * settings.load_interval_seconds)
                    if stopping or not busy or started - held_since >= HOLD_SECONDS:
                        con = None
                        held.close()
                except EngineError as exc:  # warehouse busy (another command holds it)
                    log.warning("load skipped: %s", exc)
                except (duckdb.Error, OSError) as exc:  # retried; the spool keeps the data
                    log.exception("load failed, retrying in the next cycle: %s", exc)
                    con = None
                    with contextlib.suppress(duckdb.Error, OSError):
                        held.close()
                    if state is not None:  # a fresh mapper, should the failure be its own
                        state.mapper.close()
                        state = None
                if stopping:
                    return
                stop.wait(max(0.0, settings.load_interval_seconds - (time.monotonic() - started)))
        finally:
            held.close()
            if state is not None:
                state.mapper.close()


def new_ingest_id() -> str:
    """An id for one run, e.g. for ``calls match``."""
    return uuid.uuid4().hex
