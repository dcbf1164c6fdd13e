"""Writers: events as Segment NDJSON (gzip) and/or canonical Parquet, the other sources as CSV.

Output is byte-identical for the same seed and arguments: gzip headers carry a fixed file name
and ``mtime=0``, Parquet files are written with fixed settings, CSV rows come in a fixed order.
Compression runs on a background thread: zlib releases the GIL, so it overlaps with the
generation of the next chunk on a second core while memory stays bounded by a two-chunk queue.
"""

from __future__ import annotations

import zlib
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from types import TracebackType

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from touchline import store
from touchline.simulate import mess, text
from touchline.simulate.events import (
    CURRENCY,
    EVENT_COLUMNS,
    EVENT_NAMES,
    LIBRARIES,
    ROW_CAMPAIGN_KEYS,
    SOURCES,
    TYPES,
    Rendered,
)

GZIP_LEVEL_DEFAULT = 1  # zlib's fastest: compression is most of the NDJSON cost
NDJSON_SLICE_ROWS = 100_000  # lines built and compressed at a time (one gzip member each)
EVENTS_NDJSON = "events.ndjson.gz"
EVENTS_PARQUET = "events.parquet"


def pick(table: pa.Array, index: np.ndarray) -> pa.Array:
    """Gather from an entity table whose last entry stands for "none" (index -1)."""
    index = np.asarray(index)
    return table.take(pa.array(np.where(index < 0, len(table) - 1, index)))


def _context_parts(rendered: Rendered) -> list[pa.Array | str]:
    rows, tables = rendered.rows, rendered.tables
    devices = (len(tables.device_tail) - 1) // 2
    renamed = rows.timestamp >= mess.SCHEMA_CHANGE_AT_MS
    tail = np.where(rows.device >= 0, rows.device + devices * renamed, 2 * devices)
    # a record without a page may carry its own campaign (webinars); else the landing page's
    own = text.concat(',"campaign":{"source":"', rows.utm_source, '","medium":"',
                      rows.utm_medium, '","name":"', rows.utm_campaign, '"}')
    return ['{"library":', text.take(LIBRARIES, rows.source),
            pick(tables.page_member, rows.page_row),
            pc.coalesce(own, pick(tables.campaign_member, rows.page_row)),
            tables.device_tail.take(pa.array(tail))]


def context_json(rendered: Rendered) -> pa.Array:
    """Segment's ``context`` object of each row: library, page, campaign, user agent and IP.

    From ``mess.SCHEMA_CHANGE_AT_MS`` on the user agent key is ``user_agent`` instead of
    ``userAgent`` (the export's schema change).
    """
    return text.concat(*_context_parts(rendered))


def schema_change_rows(rendered: Rendered) -> int:
    """Written rows whose context names the user agent ``user_agent`` (the schema change)."""
    rows = rendered.rows
    return int(((rows.timestamp >= mess.SCHEMA_CHANGE_AT_MS) & (rows.device >= 0)).sum())


def canonical_table(rendered: Rendered, context: pa.Array) -> pa.Table:
    """The written rows as the flat canonical ``events`` columns of ``touchline/store.py``."""
    rows, tables = rendered.rows, rendered.tables
    n = len(rows)
    nulls = pa.nulls(n, pa.string())
    has_revenue = ~np.isnan(rows.revenue)
    values: dict[str, pa.Array] = {
        "message_id": rows.message_id,
        "type": text.take(TYPES, rows.type),
        "event": text.take(EVENT_NAMES, rows.event),
        "anonymous_id": pick(tables.anonymous_id, rows.device),
        "user_id": pick(tables.user_id, np.where(rows.knows_user, rows.person, -1)),
        "group_id": pick(tables.account_id, np.where(rows.is_group, rows.unit, -1)),
        "previous_id": pick(tables.anonymous_id, np.where(rows.is_alias, rows.device, -1)),
        "contact_id": rows.contact_id,
        "timestamp": _ms(rows.timestamp),
        "original_timestamp": _ms(rows.original_timestamp),
        "sent_at": _ms(rendered.sent_at),
        "received_at": _ms(rendered.received_at),
        **{k: pick(v, rows.page_row) for k, v in tables.page.items()},
        **{k: pc.coalesce(getattr(rows, k), pick(tables.page[k], rows.page_row))
           for k in ROW_CAMPAIGN_KEYS},
        "utm_id": nulls,
        "email": rows.email, "phone": rows.phone, "email_sha256": nulls, "phone_sha256": nulls,
        "email_domain": nulls,  # set at load, and only when e-mails are hashed there
        "user_agent": pick(tables.user_agent, rows.device),
        "ip": pick(tables.ip, rows.device),
        "revenue": pa.array(rows.revenue, pa.float64(), mask=~has_revenue),
        "currency": text.where(has_revenue, CURRENCY, nulls),
        "properties": rows.properties, "traits": rows.traits, "context": context,
        "source": text.take(SOURCES, rows.source), "ingest_id": nulls, "write_key": nulls,
        "consent": nulls,  # the simulated site asks for none: nothing stated
    }
    return pa.table({name: values[name] for name in EVENT_COLUMNS})


def _ms(values: np.ndarray) -> pa.Array:
    return pa.array(np.asarray(values, np.int64).astype("datetime64[ms]"), pa.timestamp("ms"))


_HEADS = [f'","type":"{t}"' + (f',"event":"{e}"' if e else "")
          for t in TYPES for e in (None, *EVENT_NAMES)]


def ndjson_bytes(rendered: Rendered, context: pa.Array | None = None) -> memoryview:
    """The written rows as Segment export lines (one bytes-like object, built column-wise in
    a single concatenation; ``context`` is reused if the caller built it already)."""
    rows, tables = rendered.rows, rendered.tables
    user_json = pc.fill_null(text.concat('"', tables.user_id, '"'), "null")
    anon_json = pc.fill_null(text.concat('"', tables.anonymous_id, '"'), "null")
    group_member = pc.fill_null(text.concat(',"groupId":"', tables.account_id, '"'), "")
    previous_member = pc.fill_null(text.concat(',"previousId":"', tables.anonymous_id, '"'), "")
    lines = text.concat(
        '{"messageId":"', rows.message_id,
        text.take(_HEADS, rows.type * (len(EVENT_NAMES) + 1) + rows.event + 1),
        ',"anonymousId":', pick(anon_json, rows.device),
        ',"userId":', pick(user_json, np.where(rows.knows_user, rows.person, -1)),
        pick(group_member, np.where(rows.is_group, rows.unit, -1)),
        pick(previous_member, np.where(rows.is_alias, rows.device, -1)),
        ',"timestamp":"', text.iso_ms(rows.timestamp),
        '","originalTimestamp":"', text.iso_ms(rows.original_timestamp),
        '","sentAt":"', text.iso_ms(rendered.sent_at),
        '","receivedAt":"', text.iso_ms(rendered.received_at),
        '","context":', *([context] if context is not None else _context_parts(rendered)),
        pc.fill_null(text.concat(',"properties":', rows.properties), ""),
        pc.fill_null(text.concat(',"traits":', rows.traits), ""),
        text.take([f',"source":"{s}"}}\n' for s in SOURCES], rows.source),
    )
    return _buffer_bytes(lines)


def _buffer_bytes(lines: pa.Array) -> memoryview:
    """The concatenated values of a string array without nulls, straight from its buffers."""
    if lines.null_count:
        raise AssertionError("an NDJSON line came out null: a required field is missing")
    if len(lines) == 0:
        return memoryview(b"")
    start = lines.offset
    offsets = np.frombuffer(lines.buffers()[1], np.int32)[start: start + len(lines) + 1]
    return memoryview(lines.buffers()[2])[int(offsets[0]): int(offsets[-1])]


class GzipWriter:
    """A deterministic gzip file compressed by a small thread pool.

    Each piece written becomes one gzip member (``zlib`` header: no file name, mtime 0), so
    pieces compress in parallel and the file is still one valid gzip stream (readers
    decompress concatenated members as one). zlib releases the GIL while it works; at most
    ``max_pending`` pieces wait, which bounds memory.
    """

    def __init__(self, path: Path, *, level: int = GZIP_LEVEL_DEFAULT, workers: int = 2,
                 max_pending: int = 3) -> None:
        self._file = path.open("wb")
        self._level = level
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="touchline-gzip")
        self._pending: deque[Future[bytes]] = deque()
        self._max_pending = max_pending

    def write(self, data: memoryview | bytes) -> None:
        if not len(data):
            return
        self._pending.append(self._pool.submit(zlib.compress, data, self._level, 31))
        while len(self._pending) > self._max_pending:
            self._file.write(self._pending.popleft().result())

    def close(self) -> None:
        try:
            while self._pending:
                self._file.write(self._pending.popleft().result())
            if self._file.tell() == 0:  # an empty stream is still a valid gzip file
                self._file.write(zlib.compress(b"", self._level, 31))
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._file.close()

    def __enter__(self) -> GzipWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class EventWriter:
    """Writes event chunks in the chosen formats (``ndjson``, ``parquet`` or ``both``)."""

    def __init__(self, out: Path, fmt: str, *, gzip_level: int = GZIP_LEVEL_DEFAULT) -> None:
        self.formats = ("ndjson", "parquet") if fmt == "both" else (fmt,)
        self._gzip = GzipWriter(out / EVENTS_NDJSON, level=gzip_level) \
            if "ndjson" in self.formats else None
        self._parquet: pq.ParquetWriter | None = None
        self._parquet_path = out / EVENTS_PARQUET
        self.files = [out / EVENTS_NDJSON] if self._gzip else []
        if "parquet" in self.formats:
            self.files.append(self._parquet_path)

    def write(self, rendered: Rendered) -> None:
        context = context_json(rendered) if "parquet" in self.formats else None
        if self._gzip is not None:
            for lo in range(0, rendered.written, NDJSON_SLICE_ROWS):
                piece = rendered.slice(lo, lo + NDJSON_SLICE_ROWS)
                part = None if context is None else context.slice(lo, NDJSON_SLICE_ROWS)
                self._gzip.write(ndjson_bytes(piece, part))
        if context is not None:
            table = canonical_table(rendered, context)
            if self._parquet is None:
                self._parquet = pq.ParquetWriter(self._parquet_path, table.schema,
                                                 compression="zstd", write_statistics=True)
            self._parquet.write_table(table, row_group_size=len(table) or 1)

    def close(self) -> None:
        if self._gzip is not None:
            self._gzip.close()
        if "parquet" in self.formats:
            if self._parquet is None:  # no events at all: still an empty, typed file
                empty = {k: pa.array([], pa.string()) for k in EVENT_COLUMNS}
                self._parquet = pq.ParquetWriter(self._parquet_path, pa.table(empty).schema)
            self._parquet.close()


class CsvWriter:
    """Appends chunks of string columns to one CSV file (header once, quoting as needed)."""

    def __init__(self, path: Path, columns: tuple[str, ...]) -> None:
        self.path = path
        self.columns = columns
        self._sink = pa.OSFile(str(path), "wb")
        schema = pa.schema([pa.field(c, pa.string()) for c in columns])
        self._writer = pacsv.CSVWriter(self._sink, schema,
                                       write_options=pacsv.WriteOptions(quoting_style="needed"))
        self.rows = 0

    def write(self, values: dict[str, pa.Array]) -> None:
        arrays = [values[c].cast(pa.string()) if values[c].type != pa.string() else values[c]
                  for c in self.columns]
        table = pa.Table.from_arrays(arrays, names=list(self.columns))
        self._writer.write_table(table)
        self.rows += len(table)

    def close(self) -> None:
        self._writer.close()
        self._sink.close()


def table_columns(name: str, *, skip: tuple[str, ...] = ("row_hash", "source", "ingest_id")
                  ) -> tuple[str, ...]:
    """The canonical columns of ``store`` table ``name`` that a source file carries (the
    load columns and content hashes are the ingest's to fill)."""
    return tuple(c.name for c in store.TABLES[name].columns if c.name not in skip)
