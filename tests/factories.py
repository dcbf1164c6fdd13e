"""Readable test rows as Arrow tables with a canonical table's exact schema, on any engine."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ibis.expr.datatypes as dt
import pyarrow as pa

from touchline import engine, store

if TYPE_CHECKING:
    from ibis.backends import BaseBackend

    from touchline.config import Settings

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


def any_of(texts: Sequence[str]) -> str:
    """A regular expression matching any of ``texts`` as written (:func:`re.escape`: its
    escapes read the same in DuckDB's RE2 and Spark's Java patterns)."""
    return "|".join(map(re.escape, texts))


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


#: the brief's John (organic → a Google Ads click with its gclid and keyword → chat lead →
#: direct on his phone → a tracked call → a CRM deal won): journeys' and exports' end-to-end
JOHN = [
    # organic search on his laptop
    {"anonymous_id": "laptop", "timestamp": "2026-03-01 09:00:00",
     "url": "https://plumb.example/", "referrer": "https://www.google.com/"},
    # a Google Ads click on "emergency plumber" (its gclid read off the URL, as the collector
    # does), then a live chat with his e-mail: a lead
    {"anonymous_id": "laptop", "timestamp": "2026-03-05 20:00:00",
     "url": "https://plumb.example/emergency?gclid=abc", "gclid": "abc", "utm_source": "google",
     "utm_medium": "cpc", "utm_campaign": "spring", "utm_term": "emergency plumber"},
    {"anonymous_id": "laptop", "type": "track", "event": "Chat Started", "source": "chat",
     "email": "John@Gmail.com", "timestamp": "2026-03-05 20:03:00"},
    # back direct on his phone, where he gives his number
    {"anonymous_id": "phone", "timestamp": "2026-03-12 08:00:00",
     "url": "https://plumb.example/contact"},
    {"anonymous_id": "phone", "type": "identify", "email": "john@gmail.com",
     "phone": "+1 202 555 0143", "timestamp": "2026-03-12 08:01:00"},
    # he phones in: no DNI lease matched the call, but the graph knows his number; four
    # minutes of talk (a call conversion needs call_conversion_seconds, 60 by default)
    {"type": "track", "event": "Phone Call", "source": "calls", "phone": "+12025550143",
     "timestamp": "2026-03-12 09:00:00", "properties": '{"duration_seconds": 240}'},
]
JOHN_DEAL = [{"deal_id": "D1", "status": "Closed Won", "amount": 1800.0, "currency": "usd",
              "contact_emails": "john@gmail.com", "created_at": "2026-03-12 10:00:00",
              "closed_at": "2026-03-20 10:00:00"}]


def john_run_file(path: Path, settings: Settings,
                  deals: Sequence[dict[str, Any]] = JOHN_DEAL) -> str:
    """John's events and won deal (:data:`JOHN`, :data:`JOHN_DEAL`, or ``deals``) through
    ``run`` into the DuckDB file ``path`` (``settings`` with its ``database_url`` replaced): a
    warehouse a test drives through the CLI. Returns the file's URL."""
    from touchline.pipeline import run

    url = f"duckdb:///{path}"
    settings = settings.model_copy(update={"database_url": url})
    con = engine.connect(settings=settings)
    engine.load_table(con, "events", arrow_table(store.EVENTS, event_rows(JOHN)))
    engine.load_table(con, "deals", arrow_table(store.DEALS, list(deals)))
    run(con, settings)
    con.disconnect()
    return url


def prepare_on_duckdb(con: BaseBackend, settings: Settings, events: Sequence[dict[str, Any]],
                      deals: Sequence[dict[str, Any]]) -> None:
    """``events`` and ``deals`` prepared on DuckDB and copied to ``con`` (Spark): prepare's own
    tests prove both engines prepare alike, and a Spark prepare costs a minute of the suite;
    ``run`` then builds journeys, stages and credits on Spark."""
    from touchline.prepare import run_prepare

    duck = engine.connect(settings=settings)
    engine.load_table(duck, "events", arrow_table(store.EVENTS, event_rows(events)))
    engine.load_table(duck, "deals", arrow_table(store.DEALS, deals))
    run_prepare(duck, settings)
    # not the audit log of exports: prepare never writes it, and a copy would empty ``con``'s
    stored = [spec.name for spec in (*store.TABLES.values(),) if spec.view is None
              and spec not in (*store.EXPORT_TABLES, *store.CRM_TABLES)
              and spec.name in duck.list_tables()]
    for name in stored:
        engine.load_table(con, name, duck.table(name).to_pyarrow())
    store.init(con)
    engine.replace_view(con, "touchpoints", store.TOUCHPOINTS.view(con))  # type: ignore[misc]
