"""The audit log of exports: ``exports`` (one row per export) and ``exported_conversions`` (what
each delivered), appended, never rewritten; and the rejects of the validators.

Why a log and not a flag on the conversion: the platforms count what they are sent, so the
only safe record is of what was sent, when, in which format and with which value, including
the platform's answer; it is what keeps a conversion from going twice to one destination and
what an adjustment is computed against.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from urllib.parse import urlsplit, urlunsplit

import ibis
import ibis.expr.types as ir
import orjson
import pyarrow as pa
from ibis.backends import BaseBackend

from touchline import engine, store
from touchline.exports.formats import Conversion, Rejection

#: characters of a push's answer kept in ``exports.push_response``
RESPONSE_MAX_CHARS = 64 * 1024


def ensure_tables(con: BaseBackend) -> None:
    """Create ``exports``, ``exported_conversions`` and ``rejects`` when a warehouse made by an
    older version lacks them, and add the columns an older version's tables lack."""
    existing = set(con.list_tables())
    for spec in (*store.EXPORT_TABLES, store.REJECTS):
        if spec.name not in existing:
            con.create_table(spec.name, schema=spec.schema)
        else:
            engine.add_missing_columns(con, spec.name, spec.schema)


def new_export_id() -> str:
    return "exp_" + uuid.uuid4().hex[:16]


def public_url(url: str | None) -> str | None:
    """``url`` without its query string and user info: an access token in either never
    reaches the audit log."""
    if url is None:
        return None
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def export_row(*, export_id: str, destination: str, format_id: str, conversion: str,
               platform_name: str, value_basis: str, since: datetime | None,
               exported_at: datetime, conversion_count: int, adjustment_count: int,
               rejected_count: int, path: str, adjustments_path: str | None,
               push_url: str | None, push_status: int | None,
               push_response: str | None, as_of: datetime | None = None) -> pa.Table:
    """The ``exports`` row of one export (Arrow, in the table's schema). ``exported_at``: when
    it ran; ``as_of``: the clock its validators used, when told one (``--as-of``)."""
    row = {
        "export_id": export_id, "destination": destination, "format": format_id,
        "conversion": conversion, "platform_name": platform_name, "value_basis": value_basis,
        "since": since, "exported_at": exported_at, "as_of": as_of,
        "conversion_count": conversion_count,
        "adjustment_count": adjustment_count, "rejected_count": rejected_count, "path": path,
        "adjustments_path": adjustments_path, "push_url": public_url(push_url),
        "push_status": push_status,
        "push_response": None if push_response is None else push_response[:RESPONSE_MAX_CHARS],
    }
    return pa.Table.from_pylist([row], schema=store.EXPORTS.schema.to_pyarrow())


def delivered_rows(rows: Sequence[Conversion], *, export_id: str, destination: str,
                   conversion: str, exported_at: datetime) -> pa.Table:
    """The ``exported_conversions`` rows of what an export delivered."""
    data = [{
        "export_id": export_id, "destination": destination, "conversion": conversion,
        "conversion_id": r.conversion_id, "journey_id": r.journey_id, "kind": r.kind,
        "order_id": r.order_id, "click_id": r.click_id, "click_id_param": r.click_id_param,
        "converted_at": r.converted_at,
        "value": 0.0 if r.kind == "retraction" else float(r.value),  # type: ignore[arg-type]
        "currency": r.currency, "exported_at": exported_at,
    } for r in rows]
    return pa.Table.from_pylist(data, schema=store.EXPORTED_CONVERSIONS.schema.to_pyarrow())


def reject_table(rejections: Sequence[Rejection], *, destination: str, format_id: str,
                 export_id: str, now: datetime) -> pa.Table:
    """``rejects`` rows for what a validator refused: step ``export:<destination>``, the
    platform's error name as ``reason_code``, the conversion id as ``ref``. The id is a hash of
    step, conversion and code: a conversion refused again by a later export for the same
    reason adds no second row. ``raw`` names the conversion, never its person's contacts."""
    step = f"export:{destination}"
    parts = []
    for rejection in rejections:
        row = rejection.conversion
        raw = orjson.dumps({
            "conversion_id": row.conversion_id, "kind": row.kind, "order_id": row.order_id,
            "click_id_param": row.click_id_param, "click_id": row.click_id,
            "converted_at": row.converted_at.isoformat(),
            "click_at": row.click_at.isoformat() if row.click_at else None,
            "value": row.value, "currency": row.currency}, default=str).decode()
        record = store.RejectRecord(reason_code=rejection.code, reason=rejection.reason,
                                    raw=raw, field=rejection.field, ref=row.conversion_id)
        parts.append(store.reject_rows([record], step=step, source=format_id,
                                       origin=f"{row.conversion_id}|{row.kind}",
                                       ingest_id=export_id, now=now))
    if not parts:
        return pa.Table.from_pylist([], schema=store.REJECTS.schema.to_pyarrow())
    return pa.concat_tables(parts)


def append_new_rejects(con: BaseBackend, rejects: pa.Table) -> int:
    """Append the ``rejects`` rows whose id is not stored yet; return how many were new."""
    if rejects.num_rows == 0:
        return 0
    ids = rejects.column("reject_id").to_pylist()
    stored = con.table("rejects")
    known = set(stored.filter(stored.reject_id.isin(ids)).reject_id.to_pyarrow().to_pylist())
    fresh = rejects.filter(pa.array([i not in known for i in ids]))
    if fresh.num_rows:
        engine.append(con, "rejects", fresh)
    return fresh.num_rows


def record(con: BaseBackend, export: pa.Table, delivered: pa.Table) -> None:
    """Append one export and what it delivered, together (one transaction on DuckDB)."""
    with engine.all_or_nothing(con, ["exports", "exported_conversions"]):
        engine.append(con, "exports", export)
        if delivered.num_rows:
            engine.append(con, "exported_conversions", delivered)


def list_exports(con: BaseBackend, *, destination: str | None = None,
                 limit: int | None = None) -> ir.Table:
    """The audit log, newest first (``touchline audit exports``)."""
    exports = con.table("exports")
    if destination is not None:
        exports = exports.filter(exports.destination == destination)
    exports = exports.order_by([ibis.desc("exported_at"), ibis.desc("export_id")])
    return exports.limit(limit) if limit else exports
