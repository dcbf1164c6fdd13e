"""The one engine layer: ``connect(url)`` for DuckDB or Spark, and every engine quirk.

All table logic in touchline is written once as Ibis expressions. Differences between the
engines that Ibis does not hide live here and nowhere else:

* DuckDB spills to ``./.tmp`` of the working directory unless ``temp_directory`` is set: we
  put it beside the warehouse file (or where the settings say) and pass ``memory_limit``.
* Spark binds to 127.0.0.1 with the UI off, the session time zone is UTC and
  ``spark.sql.warehouse.dir`` is a temporary folder (else ``./spark-warehouse`` is left behind).
  ANSI mode is off so that failed casts and division by zero give NULL, as on DuckDB.
* Uploading pandas data to Spark through ``ibis.memtable`` turns string nulls into the text
  ``'NaN'``: :func:`load_table` goes through Parquet on Spark instead.
* DuckDB has transactions; Spark's tables are folders of Parquet files without them:
  :func:`all_or_nothing` gives a block of writes to several tables one outcome on both.
* Spark plans the whole of every query again, DuckDB in milliseconds: :func:`stage_input`
  stores on Spark only an expression that many later queries read.
* DuckDB lets go of Python's lock while a query runs: :func:`fetch_each` runs many small
  queries on a cursor in a worker thread while Python builds and compiles the next; on Spark
  they are one query (one job).
* Neither Ibis nor Spark's Parquet tables have ``DELETE``: :func:`delete_where` runs DuckDB's
  own and rewrites the kept rows on Spark.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import re
import tempfile
import uuid
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import ibis
import ibis.expr.datatypes as dt
import ibis.expr.operations as ops
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from touchline.config import Settings, load_settings
from touchline.errors import ConfigError, EngineError, MissingExtraError

if TYPE_CHECKING:
    import ibis.expr.types as ir
    import pandas as pd
    from ibis.backends import BaseBackend

log = logging.getLogger(__name__)

T = TypeVar("T")

SPARK_SCHEME = "spark://"
DUCKDB_SCHEME = "duckdb://"


def connect(url: str | None = None, settings: Settings | None = None) -> BaseBackend:
    """Open the warehouse named by ``url`` (default: ``settings.database_url``).

    ``duckdb:///path/to/file.duckdb`` opens (creating) one file, ``duckdb://`` an in-memory
    database, ``spark://local[2]`` a local Spark session (needs the ``spark`` extra and Java 17).
    """
    settings = settings or load_settings()
    url = url or settings.database_url
    if url.startswith(DUCKDB_SCHEME):
        # SQLAlchemy's convention: duckdb:///rel.duckdb is relative, duckdb:////abs/x absolute
        return _connect_duckdb(url[len(DUCKDB_SCHEME) :].removeprefix("/"), settings)
    if url.startswith(SPARK_SCHEME):
        return _connect_spark(url[len(SPARK_SCHEME) :] or "local[2]", settings)
    raise ConfigError(
        f"database url {url!r} is not understood: use duckdb:///file.duckdb, duckdb:// or "
        "spark://local[2]"
    )


def warehouse_version(settings: Settings) -> str | None:
    """A token that changes whenever the warehouse of ``settings`` is written, so a reader may
    keep what it computed from it until then (the dashboard's pages); None when there is no
    cheap way to know (Spark, an in-memory DuckDB), and so nothing may be kept.

    A DuckDB file: the modification time and size of the file and of its write-ahead log.
    Every commit (``ingest``, ``prepare``, ``run``, a new key or user) writes one of them;
    reading writes neither."""
    url = settings.database_url
    path = url[len(DUCKDB_SCHEME):].removeprefix("/") if url.startswith(DUCKDB_SCHEME) else ""
    if path in ("", ":memory:"):
        return None
    file = Path(path).expanduser()
    parts = []
    for part in (file, file.with_name(file.name + ".wal")):
        try:
            stat = part.stat()
        except FileNotFoundError:
            parts.append("-")
            continue
        parts.append(f"{stat.st_mtime_ns}:{stat.st_size}")
    return "|".join(parts)


#: DuckDB storage format of new warehouse files (readable by DuckDB >= 1.4, pinned in
#: pyproject.toml)
STORAGE_VERSION = "v1.4.0"


@contextmanager
def connected(url: str | None = None,
              settings: Settings | None = None) -> Iterator[BaseBackend]:
    """:func:`connect` for the length of a ``with`` block, then disconnect (also on error):
    short-lived connections leave a DuckDB file free for its other writer."""
    con = connect(url, settings)
    try:
        yield con
    finally:
        con.disconnect()


@contextmanager
def schemas_read_once(con: BaseBackend) -> Iterator[BaseBackend]:
    """Within the block, ``con.table(name)`` asks the engine for each table's schema once
    and hands back the same table after: a reader that builds many expressions over the same
    tables (a dashboard page of 50 KPIs called it ~100 times, each a catalog query on
    DuckDB) pays for it once. And a query asked again (an equal expression run by
    ``to_pyarrow``, ``to_pandas`` or ``execute``: the KPIs' checks of the conversion type
    and the model, the charts' choice of conversion) is answered from its first run, so it
    is compiled and run once. Only for a block that writes no table (a page, a report);
    nested blocks share the outer one's tables and answers."""
    if "table" in vars(con):  # already inside a block
        yield con
        return
    con.table = functools.cache(con.table)  # type: ignore[method-assign]
    answers: dict[tuple[Any, ...], Any] = {}

    def once(run: Callable[..., Any], kind: str) -> Callable[..., Any]:
        def asked(expr: ir.Expr, *args: Any, **kwargs: Any) -> Any:
            try:
                key = (kind, expr.op(), args, tuple(sorted(kwargs.items())))
                found = answers.get(key)
            except TypeError:  # an argument that cannot be a key: run it
                return run(expr, *args, **kwargs)
            if found is None:
                found = answers[key] = run(expr, *args, **kwargs)
            # a frame's reader may change it: each gets its own copy (Arrow is immutable)
            return found.copy() if hasattr(found, "iloc") else found

        return asked

    con.to_pyarrow = once(con.to_pyarrow, "arrow")  # type: ignore[method-assign]
    con.execute = once(con.execute, "execute")  # type: ignore[method-assign]
    con._touchline_read_once = {}  # type: ignore[attr-defined]
    try:
        yield con
    finally:
        del con.table, con.to_pyarrow, con.execute, con._touchline_read_once


def read_once_memo(con: BaseBackend) -> dict[Hashable, Any] | None:
    """Inside :func:`schemas_read_once`, a dict that lives as long as the block (a reader
    keeps there what it built from the block's unchanging tables: the KPIs' shared
    expressions, built once per page); None outside one."""
    return vars(con).get("_touchline_read_once")


def _connect_duckdb(path: str, settings: Settings) -> BaseBackend:
    config: dict[str, Any] = {}
    if settings.memory_limit:
        config["memory_limit"] = settings.memory_limit
    if settings.threads:
        config["threads"] = settings.threads
    if path in ("", ":memory:"):
        database = ":memory:"
        temp = settings.temp_directory or Path(tempfile.gettempdir()) / "touchline-spill"
    else:
        file = Path(path).expanduser()
        if file.parent and not file.parent.exists():
            file.parent.mkdir(parents=True, exist_ok=True)
        database = str(file)
        temp = settings.temp_directory or file.with_name(file.name + ".tmp")
    config["temp_directory"] = str(temp)
    # a new warehouse file in DuckDB 1.4's storage format: its compression (dictionary + FSST
    # strings, ALP floats) makes touchpoints ~15 % smaller on disk and their write ~15 %
    # faster than the 1.0 format DuckDB picks by default; existing files keep theirs
    config["storage_compatibility_version"] = STORAGE_VERSION
    try:
        con = _duckdb_session(ibis.duckdb.connect(database, **config))
        # under a memory limit, scratch tables go into the warehouse file (compressed) rather
        # than temporary tables, which spill uncompressed: at 50M events those filled 58 GB
        con._touchline_scratch_in_file = bool(settings.memory_limit) and database != ":memory:"
        con._touchline_plain_ids = not settings.compress_id_columns
        return con
    except Exception as exc:  # duckdb raises its own IOException for locks and bad files
        hint = ("; another process has it open (DuckDB lets one process at a time open a "
                "warehouse file): run the commands one after another, or wait until that "
                "one ends") if "conflicting lock" in str(exc).lower() else ""
        raise EngineError(f"cannot open DuckDB warehouse {database!r}: {exc}{hint}") from exc


#: what :func:`_connect_duckdb` notes on a connection from the settings, which a second
#: connection to the same database (:func:`side_by_side`) takes over: scratch tables in the
#: warehouse file (under a memory limit), uuid id columns plain (:func:`write_table`)
_SESSION_FLAGS = {"_touchline_scratch_in_file": False, "_touchline_plain_ids": True}


def _duckdb_session(con: BaseBackend) -> BaseBackend:
    """What each DuckDB connection of touchline sets up: UTC and the macros the engine
    functions below compile to (both belong to the connection, not the database)."""
    con.raw_sql("SET TimeZone = 'UTC'")  # naive timestamps are UTC everywhere
    con.raw_sql(_DUCKDB_GET_JSON_OBJECT)
    con.raw_sql(_DUCKDB_HMAC)
    return con


def side_by_side(con: BaseBackend, tasks: Sequence[Callable[[BaseBackend], T]]) -> list[T]:
    """``[task(c) for task in tasks]``, the tasks at once: on DuckDB the first on ``con`` in
    the calling thread, each other in a thread of its own on a second connection to the same
    database (:meth:`duckdb.DuckDBPyConnection.cursor`: same tables, its own session), so
    one task's query runs in the engine while another builds and compiles its next one in
    Python (a dashboard page's charts: the engine ran one query at a time on one of the two
    cores while Python held the other). On Spark, one after another on ``con`` (its session
    is the one way in). A task must not hand expressions on to another (each is bound to its
    connection). Every task runs to its end; then the error of the first that failed, in the
    order given, is raised."""
    if len(tasks) < 2 or engine_name(con) != "duckdb":
        done: list[T] = []
        failed: list[Exception] = []
        for task in tasks:
            try:
                done.append(task(con))
            except Exception as exc:  # raised once the other tasks ran, as on DuckDB
                failed.append(exc)
        if failed:
            raise failed[0]
        return done
    from concurrent.futures import ThreadPoolExecutor

    # each made here, not in its thread: a DuckDB connection is used by one thread at a time
    # (the first task may be querying ``con`` already)
    others = []
    for _ in tasks[1:]:
        other = _duckdb_session(ibis.duckdb.from_connection(
            con.con.cursor()))  # type: ignore[attr-defined]
        for flag, default in _SESSION_FLAGS.items():
            setattr(other, flag, getattr(con, flag, default))
        others.append(other)
    try:
        with ThreadPoolExecutor(max_workers=len(others),
                                thread_name_prefix="touchline-side") as pool:
            futures = [pool.submit(task, other)
                       for task, other in zip(tasks[1:], others, strict=True)]
            try:
                first = tasks[0](con)
            finally:
                errors = [f.exception() for f in futures]  # each waited for
    finally:
        for other in others:
            other.disconnect()
    for error in errors:
        if error is not None:
            raise error
    return [first, *(f.result() for f in futures)]


def _session_only_names(con: BaseBackend) -> frozenset[str]:
    """The names of the tables and views only ``con``'s DuckDB session sees (temporary ones:
    :func:`materialise`'s, registered in-memory tables), which a cursor does not."""
    rows = con.raw_sql(  # type: ignore[attr-defined]
        "SELECT table_name FROM duckdb_tables() WHERE temporary UNION ALL "
        "SELECT view_name FROM duckdb_views() WHERE temporary").fetchall()
    return frozenset(str(name) for name, in rows)


def fetch_each(con: BaseBackend, parts: Iterable[ir.Table]) -> list[pa.Table | Exception]:
    """The rows of each of ``parts`` (tables of one schema), in order, as Arrow tables; a
    part that fails gives its exception instead (the caller says which errors it shows and
    raises the others). ``parts`` may build each part as it is asked for (a generator).

    DuckDB: each part is compiled in the calling thread as it comes, then run by a worker
    thread on a cursor of ``con`` (:meth:`duckdb.DuckDBPyConnection.cursor`: the same
    database, a session of its own), so DuckDB runs one part (it lets go of Python's lock
    while it runs) while Python builds and compiles the next: the dashboard's KPI page spent
    0.65 s in Ibis and 0.35 s in DuckDB, one after the other (compiling the parts one by one
    costs Ibis what one union of them does). A part that reads what only ``con``'s session
    sees (a temporary table of :func:`materialise`) runs on ``con``, in the calling thread.
    For readers (a page, a report): the cursor sees what is committed, not the writes of a
    transaction ``con`` has open.

    Spark: every part in one query (a union of the parts, each row tagged with its part's
    number: one job, not one per part); if that query fails, each part alone, so only the
    failing ones give their error."""
    if engine_name(con) != "duckdb":
        return _fetch_each_in_one_query(con, list(parts))
    from concurrent.futures import Future, ThreadPoolExecutor

    from ibis.backends.duckdb.converter import DuckDBPyArrowData

    local = _session_only_names(con)
    other = _duckdb_session(ibis.duckdb.from_connection(
        con.con.cursor()))  # type: ignore[attr-defined]

    def run(expr: ir.Table, sql: str) -> pa.Table:  # in the worker, on the cursor
        other._run_pre_execute_hooks(expr)  # type: ignore[attr-defined]  # memtables
        rows = other.con.sql(sql).to_arrow_table()  # type: ignore[attr-defined]
        return expr.__pyarrow_result__(rows, data_mapper=DuckDBPyArrowData)

    done: list[Future[pa.Table] | pa.Table | Exception] = []
    try:
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="touchline-fetch") as pool:
            for expr in parts:
                try:
                    if local and {t.name for t in expr.op().find(ops.DatabaseTable)} & local:
                        done.append(con.to_pyarrow(expr))
                    else:
                        done.append(pool.submit(run, expr, con.compile(expr)))
                except Exception as exc:  # this part's error: the others still run
                    done.append(exc)
    finally:  # every query ended (the pool waited for them) before the cursor closes
        other.disconnect()
    out: list[pa.Table | Exception] = []
    for part in done:
        if isinstance(part, Future):
            error = part.exception()
            out.append(error if isinstance(error, Exception) else part.result())
        else:
            out.append(part)
    return out


def _fetch_each_in_one_query(con: BaseBackend, parts: Sequence[ir.Table]
                             ) -> list[pa.Table | Exception]:
    if not parts:
        return []
    tagged = [p.mutate(_touchline_part=ibis.literal(i)) for i, p in enumerate(parts)]
    try:
        rows = ibis.union(*tagged, distinct=False).to_pyarrow()
    except Exception:  # which part failed is found below, one by one
        log.warning("%d parts in one query failed: one query per part", len(parts),
                    exc_info=True)
    else:
        number = rows.column("_touchline_part")
        rows = rows.drop_columns(["_touchline_part"])
        return [rows.filter(pc.equal(number, i)) for i in range(len(parts))]
    out: list[pa.Table | Exception] = []
    for part in parts:
        try:
            out.append(part.to_pyarrow())
        except Exception as exc:  # this part's error: the caller says if it shows
            out.append(exc)
    return out


def _fix_spark_strip() -> None:
    """Make ``strip()`` (and ``lstrip``/``rstrip``) remove white space on Spark, not letters.

    Ibis 12 compiles ``strip()`` to ``TRIM(' \\t\\n\\r\\v\\f' FROM s)``; Spark's SQL parser knows
    no ``\\v`` or ``\\f`` escape and reads them as the letters ``v`` and ``f``, so ``'facebook'``
    came out as ``'acebook'`` (found by the 1M-event DuckDB/Spark parity benchmark). A regular
    expression on ``\\s`` (the same six characters in Java as in Python's ``string.whitespace``)
    does what DuckDB's ``trim`` does. Pinned by ``tests/test_engine.py``.
    """
    from ibis.backends.sql.compilers.pyspark import PySparkCompiler

    def replacing(pattern: str):  # type: ignore[no-untyped-def]
        def visit(self, op, *, arg):  # type: ignore[no-untyped-def]
            return self.f.regexp_replace(arg, pattern, "")
        return visit

    PySparkCompiler.visit_Strip = replacing(r"^\s+|\s+$")  # type: ignore[method-assign]
    PySparkCompiler.visit_LStrip = replacing(r"^\s+")  # type: ignore[method-assign]
    PySparkCompiler.visit_RStrip = replacing(r"\s+$")  # type: ignore[method-assign]


def _connect_spark(master: str, settings: Settings) -> BaseBackend:
    try:
        from pyspark.sql import SparkSession
    except ImportError as exc:
        raise MissingExtraError(
            "the Spark engine needs pyspark: pip install 'touchline[spark]' (and Java 17)"
        ) from exc
    _fix_spark_strip()
    # Spark otherwise binds its block manager to the first non-loopback interface
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    warehouse = settings.spark_warehouse_dir or Path(tempfile.mkdtemp(prefix="touchline-spark-"))
    builder = (
        SparkSession.builder.master(master)
        .appName("touchline")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.ansi.enabled", "false")
        .config("spark.sql.shuffle.partitions", str(settings.spark_shuffle_partitions))
        .config("spark.sql.warehouse.dir", str(warehouse))
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        # constraint propagation re-derives every filter a plan implies after each rule; with
        # scratch tables held as checkpointed data (see materialise) it fails on unions
        # ("key not found" in UnionBase.rewriteConstraints), and on prepare's long plans it
        # costs more planning time than the inferred filters save
        .config("spark.sql.constraintPropagation.enabled", "false")
    )
    conf = dict(settings.spark_conf)
    # the JVM's scratch files go beside the warehouse; options the user gives are kept
    java = f"-Djava.io.tmpdir={warehouse} {conf.pop('spark.driver.extraJavaOptions', '')}"
    builder = builder.config("spark.driver.extraJavaOptions", java.strip())
    for key, value in conf.items():
        builder = builder.config(key, value)
    try:
        session = builder.getOrCreate()
    except Exception as exc:
        raise EngineError(f"cannot start Spark ({master}): {exc}") from exc
    session.sparkContext.setLogLevel("ERROR")
    return ibis.pyspark.connect(session)


def epoch_ms(ts: ir.TimestampValue) -> ir.IntegerValue:
    """Milliseconds since 1970 as an integer: cheap to compare and sort on every engine.

    .. math:: ms = 1000 \\cdot \\lfloor epoch(ts) \\rfloor + millisecond(ts)

    The whole seconds come from the timestamp truncated to the second: DuckDB's ``EPOCH``
    keeps the fraction and casting it to an integer *rounds* (10:00:00.600 became 1.6 s
    after 10:00:01.200), while Spark's ``unix_timestamp`` drops it.
    """
    return ts.truncate("s").epoch_seconds().cast("int64") * 1000 + ts.millisecond().cast("int64")


def seconds_between(start: ir.TimestampValue, end: ir.TimestampValue) -> ir.FloatingValue:
    """``end - start`` in seconds, to the millisecond, the same on every engine (through
    :func:`epoch_ms`; ``epoch_seconds`` keeps the fraction on DuckDB and drops it on Spark)."""
    return (epoch_ms(end) - epoch_ms(start)).cast("float64") / 1000.0


#: Spark's ``get_json_object`` for DuckDB: null (not an error) when the text is not JSON
_DUCKDB_GET_JSON_OBJECT = (
    "CREATE OR REPLACE TEMP MACRO get_json_object(text, path) AS "
    "CASE WHEN json_valid(text) THEN json_extract_string(text, path) END")
_JSON_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@ibis.udf.scalar.builtin(name="get_json_object")
def _get_json_object(text: str, path: str) -> str:  # type: ignore[empty-body]
    """Spark's function; a macro of the same name on DuckDB (made at connect)."""


def json_value(text: ir.StringValue, key: str) -> ir.StringValue:
    """The value under ``key`` at the top of a JSON object held as text, as a string: numbers
    as written (``95``, ``12.5``), ``true``/``false``, nested objects as JSON; null when the
    text is null, not JSON, or has no such key.

    Why not Ibis's JSON type: casting text to JSON fails the whole query on one malformed row
    on DuckDB, and its typed unwraps turn a number where a string was expected into null.
    Spark's ``get_json_object`` has the lenient behaviour wanted; DuckDB gets a macro of the
    same name (``json_valid`` then ``json_extract_string``) when :func:`connect` opens it.
    """
    if not _JSON_KEY.match(key):
        raise ValueError(f"JSON key {key!r}: letters, digits and _ only")
    return _get_json_object(text, f"$.{key}")


@ibis.udf.scalar.builtin(name="to_json")
def _map_to_json(value: dt.Map(dt.string, dt.string)) -> str:  # type: ignore[empty-body,valid-type]
    """DuckDB's and Spark's ``to_json``, on a map of text."""


def json_object(fields: Mapping[str, ir.Value]) -> ir.StringValue:
    """A JSON object as text, one key per entry of ``fields`` (values as text; null as
    ``null``): how a row is shown in ``rejects.raw``, written the same way on both engines
    (``to_json`` of a map, which escapes quotes and control characters)."""
    keys = ibis.array([ibis.literal(k) for k in fields])
    values = ibis.array([v.cast("string") for v in fields.values()])
    return _map_to_json(ibis.map(keys, values))


def joined_in_order(values: ir.StringColumn, order: ir.Column, sep: str) -> ir.StringScalar:
    """An aggregate: ``values`` joined with ``sep`` in the order of ``order`` (null for none).

    Why not ``collect(order_by=...)``: Ibis 12 compiles it for DuckDB but refuses it for Spark
    (order-sensitive aggregations); collecting ``(order, value)`` structs and sorting the array
    gives the same answer on both (a struct array sorts by its first field).
    """
    pairs = ibis.struct({"order": order, "value": values}).collect()
    return pairs.sort().map(lambda pair: pair.value).join(sep)


#: HMAC-SHA256 on DuckDB, from the key's inner and outer pads (hex): no builtin does it
_DUCKDB_HMAC = (
    "CREATE OR REPLACE TEMP MACRO touchline_hmac_sha256(m, ipad, opad) AS "
    "sha256(unhex(opad) || unhex(sha256(unhex(ipad) || encode(m))))")
_HMAC_BLOCK_BYTES = 64


@ibis.udf.scalar.builtin(name="touchline_hmac_sha256")
def _duckdb_hmac(m: str, ipad: str, opad: str) -> str:  # type: ignore[empty-body]
    """The macro :func:`connect` makes on DuckDB."""


@ibis.udf.scalar.builtin(name="unhex")
def _unhex(text: str) -> dt.binary:  # type: ignore[empty-body,valid-type]
    """Spark's ``unhex``: hex text to bytes."""


@ibis.udf.scalar.builtin(name="encode")
def _encode(text: str, charset: str) -> dt.binary:  # type: ignore[empty-body,valid-type]
    """Spark's ``encode``: text to bytes in ``charset``."""


@ibis.udf.scalar.builtin(name="concat")
def _concat_binary(a: dt.binary, b: dt.binary) -> dt.binary:  # type: ignore[empty-body,valid-type]
    """Spark's ``concat`` of two byte strings (a byte string)."""


@ibis.udf.scalar.builtin(name="sha2")
def _sha2(data: dt.binary, bits: int) -> str:  # type: ignore[empty-body,valid-type]
    """Spark's ``sha2``: hex digest."""


def hmac_sha256(con: BaseBackend, value: ir.StringValue, key: str) -> ir.StringValue:
    r"""HMAC-SHA256 (RFC 2104) of the UTF-8 text ``value`` under ``key``, lower-case hex, the
    same on both engines as Python's ``hmac.new(key, value, sha256).hexdigest()``.

    .. math:: HMAC(K, m) = H\big((K' \oplus opad) \,\|\, H((K' \oplus ipad) \,\|\, m)\big)

    Why in the engine: the keyed hash touchline keeps instead of an e-mail or phone
    (``pii_at_rest = "hashed"``) must be computed where the rows are. The pads are computed
    here (a key longer than SHA-256's 64-byte block is hashed first, as the RFC says); the
    engines only concatenate bytes and hash: a DuckDB macro (made at connect), Spark's
    ``unhex``, ``concat`` and ``sha2``.
    """
    raw = key.encode()
    if len(raw) > _HMAC_BLOCK_BYTES:
        raw = hashlib.sha256(raw).digest()
    padded = raw.ljust(_HMAC_BLOCK_BYTES, b"\0")
    ipad = bytes(b ^ 0x36 for b in padded).hex()
    opad = bytes(b ^ 0x5C for b in padded).hex()
    if engine_name(con) != "spark":
        return _duckdb_hmac(value, ipad, opad)
    inner = _sha2(_concat_binary(_unhex(ibis.literal(ipad)), _encode(value, "UTF-8")), 256)
    return _sha2(_concat_binary(_unhex(ibis.literal(opad)), _unhex(inner)), 256)


@ibis.udf.scalar.builtin(name="url_decode")
def _url_decode(text: str) -> str:  # type: ignore[empty-body]
    """DuckDB's and Spark's function of that name."""


def url_parameter(url: ir.StringValue, name: str) -> ir.StringValue:
    """The value of query parameter ``name`` in ``url``, ``+`` and percent-decoded; null when
    absent or empty.

    Only a value whose every ``%`` starts an ASCII escape (``%20``, ``%2B``) is decoded; any
    other is kept as written (``caf%E9``, ``%C3%A9``, ``100%``). Why: DuckDB's ``url_decode``
    raises on bytes that are not UTF-8, and its ``try()`` around it nulled the *input* column
    of the failing row (DuckDB 1.4); Spark's returns null. Decoding only what is always valid
    gives one answer on both engines and never fails a run on a visitor's URL.
    """
    if not _JSON_KEY.match(name):
        raise ValueError(f"query parameter {name!r}: letters, digits and _ only")
    raw = url.re_extract(f"[?&#]{name}=([^&#]*)", 1).nullif("")
    spaced = raw.replace("+", " ")
    unsafe = spaced.re_replace("%[0-7][0-9A-Fa-f]", "").contains("%")
    return ibis.ifelse(unsafe, spaced, _url_decode(spaced)).strip().nullif("")


def engine_name(con: BaseBackend) -> str:
    """``"duckdb"`` or ``"spark"``: for messages and the few places that must know."""
    return "spark" if con.name == "pyspark" else con.name


def _scratch_dir(con: BaseBackend) -> Path:
    conf = con._session.conf.get("spark.sql.warehouse.dir")  # type: ignore[attr-defined]
    path = Path(str(conf).removeprefix("file:")) / "_uploads"
    path.mkdir(parents=True, exist_ok=True)
    return path


def load_table(
    con: BaseBackend, name: str, data: pa.Table | pd.DataFrame, *, overwrite: bool = True
) -> ibis.Table:
    """Create table ``name`` from in-memory data, the same way on every engine.

    On Spark the data go through a Parquet file (see the module docstring for why).
    """
    table = data if isinstance(data, pa.Table) else pa.Table.from_pandas(data, preserve_index=False)
    if engine_name(con) == "spark":
        path = _scratch_dir(con) / f"{name}-{uuid.uuid4().hex}.parquet"
        pq.write_table(table, path)
        return con.create_table(name, con.read_parquet(str(path)), overwrite=overwrite)
    return con.create_table(name, table, overwrite=overwrite)


def scratch_lookup(con: BaseBackend, name: str, data: pa.Table) -> ibis.Table:
    """A Python-side table (reference data, per-value library results) as the scratch table
    ``name`` for later queries to join; drop it with :func:`drop_materialised`.

    DuckDB: a table as :func:`load_table` makes it. Spark: a data frame made from the Arrow
    data under a temporary view, not a table written through Parquet: the rows travel as Arrow
    (nulls stay nulls; the ``'NaN'`` of the module docstring is pandas'), and up to
    ``spark.sql.execution.arrow.localRelationThreshold`` (48 MB) they sit in the plan itself,
    so no job writes them; a Spark prepare of a dozen rows wrote five such tables, two jobs
    each (1.2 s of its ~20 s).
    """
    if engine_name(con) == "spark":
        frame = con._session.createDataFrame(data)  # type: ignore[attr-defined]
        frame.createOrReplaceTempView(name)
        return con.table(name)
    return load_table(con, name, data)


def read_parquet_dir(con: BaseBackend, folder: Path) -> ibis.Table:
    """All ``*.parquet`` files of one folder as one table (Spark reads folders, DuckDB globs)."""
    if engine_name(con) == "spark":
        return con.read_parquet(str(folder))
    return con.read_parquet(str(folder / "*.parquet"))


def _spark_frame(con: BaseBackend, expr: ibis.Table) -> Any:
    """``expr`` as a Spark data frame (its in-memory tables registered first)."""
    con._run_pre_execute_hooks(expr)  # type: ignore[attr-defined]  # registers memtables
    return con._session.sql(con.compile(expr))  # type: ignore[attr-defined]


def materialise(con: BaseBackend, name: str, expr: ibis.Table, *,
                in_memory: bool = False) -> ibis.Table:
    """Compute ``expr`` once into a session-scoped table, so several later queries reuse it.

    DuckDB: a temporary table (in memory, fastest), or under ``settings.memory_limit`` a table
    in the warehouse file, which DuckDB compresses (temporary tables spill uncompressed),
    unless ``in_memory`` (a reader such as a dashboard page, which must not write the
    warehouse: a write is a new warehouse state, and its kept pages would go). Spark:
    the rows computed once and kept by the executors (``localCheckpoint``: memory, spilling to
    their local disk) under a temporary view. The checkpoint cuts the plan's lineage, so the
    view does not read the scratch views it was made from (a merely cached view that reads
    another fails to resolve once that one is dropped), and nothing is written to the
    warehouse: a Spark prepare of a dozen rows ran 2.6x faster than with scratch tables, which
    wrote some forty Parquet tables per run. The price is Spark's for local checkpoints: an
    executor lost mid-run fails the run (run it again), where a scratch table would have been
    re-read. Drop it with :func:`drop_materialised`.
    """
    if engine_name(con) == "spark":
        _spark_frame(con, expr).localCheckpoint(eager=True).createOrReplaceTempView(name)
        return con.table(name)
    if getattr(con, "_touchline_scratch_in_file", False) and not in_memory:
        return con.create_table(name, expr, overwrite=True)
    # not overwrite=True: for temporary tables Ibis 12 then writes every row twice (into a
    # scratch table, then a copy under the final name)
    con.drop_table(name, force=True)
    return con.create_table(name, expr, temp=True)


def materialise_counted(con: BaseBackend, name: str, expr: ibis.Table) -> tuple[ibis.Table, int]:
    """:func:`materialise`, and the number of rows stored.

    Why: a step that stores a small look-up and then asks whether it is empty ran two queries.
    Spark: one job, the count that fills the local checkpoint (marked lazily, it is computed
    and kept by the first job that reads it, here the count), not one to store and one to
    count; the rows are computed once either way. DuckDB: the table stored, then counted (a
    stored table's count, as before).
    """
    if engine_name(con) == "spark":
        frame = _spark_frame(con, expr).localCheckpoint(eager=False)
        rows = int(frame.count())
        frame.createOrReplaceTempView(name)
        return con.table(name), rows
    table = materialise(con, name, expr)
    return table, int(table.count().execute())


_SIZE_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
               "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def _bytes(size: str) -> int:
    """DuckDB's spelling of a size (``"1.1 GiB"``, ``"6GB"``) in bytes."""
    found = re.fullmatch(r"\s*([0-9.]+)\s*([A-Za-z]*)\s*", size)
    if found is None or found.group(2).lower() not in _SIZE_UNITS:
        raise EngineError(f"not a size DuckDB would print: {size!r}")
    return int(float(found.group(1)) * _SIZE_UNITS[found.group(2).lower()])


def window_parts(con: BaseBackend, rows: ir.IntegerScalar, row_bytes: int) -> int:
    """Into how many parts (each a set of whole partitions) a window over ``rows`` rows of
    about ``row_bytes`` bytes each must be split to fit the engine's memory.

    DuckDB 1.4's window operator keeps its whole input in memory and spills little of it, so
    a window over more rows than the memory limit holds fails with an out-of-memory error; a
    part holds at most ``memory_limit / row_bytes`` rows: parts =
    ``ceil(rows / (memory_limit / row_bytes))`` (``rows`` is evaluated only here). Spark sorts
    out of core: always 1, and ``rows`` is not evaluated.
    """
    if engine_name(con) == "spark":
        return 1
    limit = con.con.execute(  # type: ignore[attr-defined]
        "SELECT current_setting('memory_limit')").fetchone()[0]
    per_part = max(1, _bytes(limit) // max(1, row_bytes))
    count = int(rows.execute() or 0)
    return max(1, -(-count // per_part))


def materialise_with_row_ids(con: BaseBackend, name: str, expr: ibis.Table,
                             column: str = "_row") -> ibis.Table:
    """``expr`` stored once (:func:`materialise`) with ``column``, an int64 unique on each row
    and fixed for as long as the table lives, so that a narrow projection of it (a key, the
    columns a window orders by, ``column``) can be ranked and its winners or losers joined
    back to the full rows by ``column`` alone: no window or sort holds the wide rows.

    Why it is engine-specific: SQL has no portable row identity, and ``row_number() over ()``
    is one partition (Spark moves every row to one task) whose numbers need not repeat when
    the query runs again. DuckDB: the stored table's ``rowid`` (0 … n-1 in a table that was
    never deleted from; no column is written). Spark: ``monotonically_increasing_id()``
    (partition index × 2^33 + position in the partition), made fixed by the local checkpoint
    that stores the rows. The values differ between the engines; what is unique does not.
    """
    if engine_name(con) == "spark":
        from pyspark.sql import functions as F  # Spark's own spelling

        frame = _spark_frame(con, expr).withColumn(column, F.monotonically_increasing_id())
        frame.localCheckpoint(eager=True).createOrReplaceTempView(name)
        return con.table(name)
    stored = materialise(con, name, expr)
    return stored.mutate(**{column: stored.rowid()})


#: string columns that hold a (nearly) unique uuid-like id on every row: on DuckDB they are stored
#: uncompressed by :func:`write_table`
UNCOMPRESSED_ID_COLUMNS = ("message_id", "device_id", "anonymous_id", "session_id")


def write_table(con: BaseBackend, name: str, expr: ibis.Table) -> ibis.Table:
    """Store ``expr`` as table ``name`` (replacing it): a prepared table's one write.

    On DuckDB the columns of :data:`UNCOMPRESSED_ID_COLUMNS` are declared ``USING COMPRESSION
    uncompressed``. Why: DuckDB 1.4's string compression (``DICT_FSST``) trains a symbol table
    on each segment, and on uuid strings, nearly all distinct, that was half the write: 3M
    touch-like rows (27 columns) took 8.4 s of CPU to write, 4.0-4.4 s with the three uuid
    columns plain, for 1.7x the bytes (225 to 380 MB); scans of the plain columns cost no
    more. Low-cardinality strings keep their (cheap, effective) compression. Spark: a plain
    ``create_table``. With ``Settings.compress_id_columns`` DuckDB compresses them too: at 10M
    events `touches` took 1.23 GiB plain and 0.46 GiB compressed (a device's repeated ids
    compress well) for 24 against 35 s of write CPU: the choice for a disk that is too small.
    """
    schema = expr.schema()
    plain = [c for c in UNCOMPRESSED_ID_COLUMNS if c in schema and schema[c].is_string()
             and getattr(con, "_touchline_plain_ids", _SESSION_FLAGS["_touchline_plain_ids"])]
    if engine_name(con) != "duckdb" or not plain:
        return con.create_table(name, expr, overwrite=True)
    dialect = con.dialect  # type: ignore[attr-defined]
    columns = ", ".join(
        column.sql(dialect) + (" USING COMPRESSION uncompressed"
                               if column.name in plain else "")
        for column in schema.to_sqlglot_column_defs(dialect))
    con._run_pre_execute_hooks(expr)  # type: ignore[attr-defined]  # registers memtables
    query = con.compile(expr)

    def build(building: str) -> None:
        con.raw_sql(f'CREATE TABLE "{building}" ({columns})')
        con.raw_sql(f'INSERT INTO "{building}" {query}')

    return _replace_by_building(con, name, build)


def _replace_by_building(con: BaseBackend, name: str,
                         build: Callable[[str], object]) -> ibis.Table:
    """Table ``name`` replaced by the one ``build`` fills under a new name, then renamed.

    Why a new name first (as Ibis does for ``overwrite=True``): what ``build`` reads may be
    the table it replaces. A ``build`` that fails leaves ``name`` as it was and no half-built
    table behind.
    """
    building = f"{name}_{uuid.uuid4().hex[:8]}"
    try:
        build(building)
    except Exception:
        con.drop_table(building, force=True)
        raise
    con.drop_table(name, force=True)
    rename_table(con, building, name)
    return con.table(name)


def write_union(con: BaseBackend, name: str, parts: Sequence[ibis.Table], *,
                scratch: bool = False) -> ibis.Table:
    """Store the rows of every table of ``parts`` (one schema) as ``name``, replacing it; a
    session-scoped table (:func:`materialise`) if ``scratch``, else one in the warehouse.

    DuckDB: one query per part, the first creating the table, each other inserting. Why: a
    union whose parts read one unstored chain of steps compiles to a common table expression
    that DuckDB stores whole, at full width, before the parts filter it. Prepare's rejects of
    the five filters before its first checkpoint, written as one union, copied all 10M input
    rows to find none: 28 s of CPU of a 225 s run. Alone, each part is one streaming scan of
    the columns it reads. Spark: one union, one job (Spark plans a shared subplan under each
    part and copies nothing), which cannot overwrite a table it reads: there ``name`` must
    not be one of the tables the parts read.
    """
    if not parts:
        raise ValueError(f"no parts to write as {name}")
    if engine_name(con) == "spark" or len(parts) == 1:
        union = ibis.union(*parts, distinct=False)
        return (materialise(con, name, union) if scratch
                else con.create_table(name, union, overwrite=True))

    def build(target: str) -> None:
        if scratch:
            materialise(con, target, parts[0])
        else:
            con.create_table(target, parts[0])
        for part in parts[1:]:
            con.insert(target, part)

    if not scratch:
        return _replace_by_building(con, name, build)
    try:  # a scratch name is new: nothing reads it yet
        build(name)
    except Exception:
        con.drop_table(name, force=True)
        raise
    return con.table(name)


def detach(con: BaseBackend, name: str, parts: Sequence[ibis.Table]) -> ibis.Table:
    """The rows of ``parts`` (one schema) under ``name``, readable after the scratch tables
    they read are dropped.

    DuckDB: stored (:func:`write_union`, scratch); its views are SQL text, read again by name.
    Spark: no job, a temporary view of the analysed query: it holds the plan with the rows of
    the local checkpoints it reads (:func:`materialise`), not their views' names, so dropping
    those views leaves it whole, and the rows are computed once, by the query that reads it.
    Prepare stored each step's rejects and audit rows this way before a checkpoint they read
    was dropped: on Spark seven jobs, 2.5 s of a ~20 s prepare of a dozen rows. The price: the
    checkpoints it reads stay in the executors until it is dropped.
    """
    if engine_name(con) == "spark":
        _spark_frame(con, ibis.union(*parts, distinct=False)).createOrReplaceTempView(name)
        return con.table(name)
    return write_union(con, name, parts, scratch=True)


def stage_input(con: BaseBackend, name: str, expr: ibis.Table) -> ibis.Table:
    """``expr`` as the input of several later queries: stored on Spark (:func:`materialise`,
    drop it with :func:`drop_materialised`), unchanged on DuckDB.

    Why Spark: it analyses and optimises the whole plan of every query again, so a large
    expression composed under many queries is planned once for each. Prepare's working
    events (campaign values read out of ``properties``: ~54 KB of SQL) sat under every step up
    to the first checkpoint and every reject read from them; one cross-source dedupe of four
    rows on top of them compiled to 64 KB of SQL and spent 8.6-10.5 s planning, against 1.0 s
    on the stored rows. Why not DuckDB: it plans the composed query in milliseconds and fuses
    it into one scan, faster than writing the rows and reading them back.
    """
    if engine_name(con) == "spark":
        return materialise(con, name, expr)
    return expr


def drop_materialised(con: BaseBackend, name: str, *, in_memory: bool = False) -> None:
    """Drop what :func:`materialise` made (``in_memory`` as it was made).

    A scratch table in the warehouse file frees its blocks for reuse only at a checkpoint: one
    follows the drop, else a 50M-event prepare under a memory limit grew the file to 33 GB.
    """
    if engine_name(con) == "spark":
        con._session.catalog.dropTempView(name)  # type: ignore[attr-defined]
        return
    con.drop_table(name, force=True)
    if getattr(con, "_touchline_scratch_in_file", False) and not in_memory:
        con.raw_sql("CHECKPOINT")


def drop_scratch(con: BaseBackend, prefix: str) -> None:
    """Drop every table and view whose name starts with ``prefix`` (a run's scratch tables).

    Spark: a temporary view (what :func:`materialise` made) through the catalog, not by a
    ``DROP TABLE`` statement parsed and analysed for each: a Spark prepare of a dozen rows
    dropped some forty at its end, 0.7 s as statements.
    """
    spark = engine_name(con) == "spark"
    for name in con.list_tables():
        if not name.startswith(prefix):
            continue
        if spark and con._session.catalog.dropTempView(name):  # type: ignore[attr-defined]
            continue
        con.drop_table(name, force=True)


def is_view(con: BaseBackend, name: str) -> bool:
    """Whether ``name`` on ``con`` is a view (on Spark: also a temporary view)."""
    if engine_name(con) == "spark":
        # SHOW VIEWS, not catalog.listTables(): its rows are SQL rows, decoded without
        # generated code (listTables' Table objects fail under interpreted expressions)
        views = con._session.sql("SHOW VIEWS").collect()  # type: ignore[attr-defined]
        return any(row.viewName == name for row in views)
    row = con.con.execute(  # type: ignore[attr-defined]
        "SELECT table_type FROM information_schema.tables "
        "WHERE table_name = ? AND table_schema = current_schema()", [name]).fetchone()
    return row is not None and row[0] == "VIEW"


def drop_any(con: BaseBackend, name: str) -> None:
    """Drop the table or view ``name`` if there is one: DuckDB refuses ``DROP VIEW`` on a
    table and ``DROP TABLE`` on a view, and a warehouse made by an older version may hold
    either."""
    if name not in con.list_tables():
        return
    if is_view(con, name):
        con.drop_view(name)
    else:
        con.drop_table(name)


def rename_table(con: BaseBackend, old: str, new: str) -> None:
    """Rename a stored table (a catalog change: no rows are copied). Ibis 12's DuckDB
    backend has no ``rename_table``."""
    if engine_name(con) == "spark":
        con.rename_table(old, new)
    else:
        con.raw_sql(f'ALTER TABLE "{old}" RENAME TO "{new}"')


def add_missing_columns(con: BaseBackend, name: str, schema: ibis.Schema) -> list[str]:
    """Add to stored table ``name`` the columns of ``schema`` it lacks (as nulls); return them.

    Why: a warehouse made by an older version must accept rows with a newer column. A catalog
    change on both engines; no rows are rewritten.
    """
    have = set(con.table(name).columns)
    missing = [(c, t) for c, t in schema.items() if c not in have]
    for column, dtype in missing:
        if engine_name(con) == "spark":
            from ibis.backends.sql.datatypes import PySparkType

            con.raw_sql(f"ALTER TABLE `{name}` ADD COLUMNS (`{column}` "
                        f"{PySparkType.to_string(dtype)})")
        else:
            sql_type = con.compiler.type_mapper.to_string(dtype)  # type: ignore[attr-defined]
            con.raw_sql(f'ALTER TABLE "{name}" ADD COLUMN "{column}" {sql_type}')
    return [c for c, _ in missing]


def delete_where(con: BaseBackend, name: str,
                 where: Callable[[ir.Table], ir.BooleanValue]) -> int:
    """Delete the rows of stored table ``name`` for which ``where(table)`` is true; return how
    many. A null predicate keeps the row.

    DuckDB: one ``DELETE … WHERE`` compiled from the Ibis predicate (through the ``SELECT``
    Ibis compiles for the filter, so subqueries such as ``isin(other.column)`` work). Spark: its
    Parquet tables cannot delete rows, and Spark refuses to overwrite a table it reads, so the
    kept rows go to a scratch table first, then ``INSERT OVERWRITE`` the table from it (the
    table keeps its definition; the scratch table is dropped after).
    """
    table = con.table(name)
    doomed = where(table).fill_null(False)
    count = int(table.filter(doomed).count().execute())
    if not count:
        return 0
    if engine_name(con) == "spark":
        scratch = f"tmp_delete_{name}_{uuid.uuid4().hex[:8]}"
        kept = con.create_table(scratch, table.filter(~doomed))
        try:
            con.insert(name, kept, overwrite=True)
            con._session.catalog.refreshTable(name)  # type: ignore[attr-defined]
        finally:
            con.drop_table(scratch, force=True)
        return count
    import sqlglot

    query = con.compiler.to_sqlglot(table.filter(doomed))  # type: ignore[attr-defined]
    shape = {k for k, v in query.args.items() if v} - {"with_"}
    if shape != {"expressions", "from_", "where"}:
        raise EngineError(f"cannot delete from {name}: the predicate compiles to {shape}")
    # Ibis hoists a subquery used twice into a CTE: DuckDB takes WITH … DELETE as well
    statement = sqlglot.exp.Delete(this=query.args["from_"].this, where=query.args["where"],
                                   with_=query.args.get("with_"))
    con.raw_sql(statement.sql("duckdb"))
    return count


def replace_view(con: BaseBackend, name: str, expr: ibis.Table) -> ibis.Table:
    """Make ``name`` the view ``expr``, whatever held the name before."""
    drop_any(con, name)
    return con.create_view(name, expr)


def append(con: BaseBackend, name: str, data: pa.Table | ibis.Table) -> None:
    """Append rows (Arrow data or an expression on ``con``) to table ``name``."""
    if isinstance(data, pa.Table) and engine_name(con) == "spark":
        path = _scratch_dir(con) / f"{name}-{uuid.uuid4().hex}.parquet"
        pq.write_table(data, path)
        data = con.read_parquet(str(path))
    con.insert(name, data)


@contextmanager
def transaction(con: BaseBackend) -> Iterator[None]:
    """A block of deletes and writes as one transaction on DuckDB; on Spark, as they come.

    Unlike :func:`all_or_nothing`, for blocks that *rewrite* tables (:func:`delete_where`):
    Spark replaces a rewritten table's files, which no roll-back of added files can undo, so
    such a writer must make a rerun finish the job instead (``touchline erase`` is idempotent).
    """
    if engine_name(con) == "spark":
        yield
        return
    con.raw_sql("BEGIN TRANSACTION")
    try:
        yield
    except BaseException:
        con.raw_sql("ROLLBACK")
        raise
    con.raw_sql("COMMIT")


@contextmanager
def unordered_writes(con: BaseBackend) -> Iterator[None]:
    """Writes inside the block may store rows in any order.

    DuckDB keeps the order of a query's rows in the table it writes unless told otherwise
    (``preserve_insertion_order``), which makes a parallel insert hold and re-order its row
    groups; a writer whose rows carry their own order (an ingest's line numbers) need not pay
    for it. Spark never keeps it: nothing to do there.
    """
    if engine_name(con) != "duckdb":
        yield
        return
    db = con.con  # type: ignore[attr-defined]
    before = db.execute("SELECT current_setting('preserve_insertion_order')").fetchone()[0]
    db.execute("SET preserve_insertion_order = false")
    try:
        yield
    finally:
        db.execute(f"SET preserve_insertion_order = {'true' if before else 'false'}")


@contextmanager
def all_or_nothing(con: BaseBackend, tables: Sequence[str]) -> Iterator[None]:
    """Writes to ``tables`` inside the ``with`` block land together or not at all.

    DuckDB: one transaction (``BEGIN`` … ``COMMIT``, ``ROLLBACK`` on an exception).

    Spark has no transaction over several tables. Its tables here are folders of Parquet files,
    and an ``INSERT`` only adds files to a folder (Spark's commit protocol makes each insert
    land whole or not at all), so the files of each table are listed before the block; on an
    exception the files added since are deleted and the tables refreshed, and the block's
    writes are gone. What holds on Spark, unlike on DuckDB: another reader may see the rows
    while the block runs, a concurrent writer to the same tables during the block is not
    isolated from the roll-back, and a process killed inside the block (no chance to clean up)
    leaves what it wrote, so a writer must make a rerun harmless (ingest anti-joins on each
    table's key and on reject ids: a rerun adds nothing twice). Pinned by
    ``tests/collect/test_ingest.py`` on both engines.
    """
    if engine_name(con) != "spark":
        con.raw_sql("BEGIN TRANSACTION")
        try:
            yield
        except BaseException:
            con.raw_sql("ROLLBACK")
            raise
        con.raw_sql("COMMIT")
        return
    before = {name: _spark_table_files(con, name) for name in tables}
    try:
        yield
    except BaseException:
        for name, files in before.items():
            _spark_remove_files_since(con, name, files)
        raise


def _spark_table_location(con: BaseBackend, name: str) -> Any:
    """The Hadoop file system and folder of Spark table ``name`` (local, HDFS, S3 alike)."""
    session = con._session  # type: ignore[attr-defined]
    rows = session.sql(f"DESCRIBE TABLE EXTENDED `{name}`").collect()
    location = next(r.data_type for r in rows if r.col_name == "Location")
    jvm = session.sparkContext._jvm
    path = jvm.org.apache.hadoop.fs.Path(location)
    return path.getFileSystem(session.sparkContext._jsc.hadoopConfiguration()), path


def _spark_table_files(con: BaseBackend, name: str) -> set[str]:
    fs, folder = _spark_table_location(con, name)
    found: set[str] = set()
    files = fs.listFiles(folder, True)
    while files.hasNext():
        found.add(files.next().getPath().toString())
    return found


def _spark_remove_files_since(con: BaseBackend, name: str, kept: set[str]) -> None:
    fs, _ = _spark_table_location(con, name)
    added = _spark_table_files(con, name) - kept
    jvm = con._session.sparkContext._jvm  # type: ignore[attr-defined]
    for file in added:
        fs.delete(jvm.org.apache.hadoop.fs.Path(file), False)
    con._session.catalog.refreshTable(name)  # type: ignore[attr-defined]
    log.warning("rolled back %d file(s) written to Spark table %s", len(added), name)
