"""Readable test rows as Arrow tables with a canonical table's exact schema, on any engine."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import ibis.expr.datatypes as dt
import pyarrow as pa

from touchline import store

DAY = "2025-03-03"
#: ``../shared`` beside the checkout: real data sets (``data/``) and benchmark references
SHARED = Path(__file__).resolve().parents[2] / "shared"
#: why a test that drives the CLI in-process is marked ``duckdb_only``
CLI_OWN_CONNECTION = (
    "the CLI opens its own connection from --database and disconnects it when done; on Spark "
    "that stops the session every other Spark test shares"
)


def _arrow(dtype: dt.DataType) -> pa.DataType:
    if dtype.is_timestamp():
        return pa.timestamp("us")
    if dtype.is_int64():
        return pa.int64()
    if dtype.is_float64():
        return pa.float64()
    if dtype.is_boolean():
        return pa.bool_()
    if dtype.is_date():
        return pa.date32()
    return pa.string()


def arrow_table(spec: store.TableSpec, rows: Sequence[dict[str, Any]]) -> pa.Table:
    """Rows (dicts) as an Arrow table with ``spec``'s exact schema; absent fields are null."""
    unknown = {k for r in rows for k in r} - {c.name for c in spec.columns}
    assert not unknown, f"not columns of {spec.name}: {unknown}"
    cols = {}
    for c in spec.columns:
        values = [r.get(c.name) for r in rows]
        if c.dtype.is_timestamp():
            values = [datetime.fromisoformat(v) if isinstance(v, str) else v for v in values]
        cols[c.name] = pa.array(values, _arrow(c.dtype))
    return pa.table(cols)


def at(clock: str, day: str = DAY) -> str:
    """``"09:10"`` → ``"2025-03-03 09:10:00"``."""
    return f"{day} {clock}:00" if clock.count(":") == 1 else f"{day} {clock}"


def event_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Defaults for test events: ids m1, m2 ..., type page, source web, timestamps as clocks."""
    out = []
    for i, row in enumerate(rows, start=1):
        r = {"message_id": f"m{i}", "type": "page", "source": "web", **row}
        for key in ("timestamp", "original_timestamp", "sent_at", "received_at"):
            if isinstance(r.get(key), str) and len(r[key]) <= 8:
                r[key] = at(r[key])
        out.append(r)
    return out

#: Debian's chromium, driven by Playwright through ``executable_path`` (no browser downloads)
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
