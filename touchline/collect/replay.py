"""Replay a Segment NDJSON export through the collector's HTTP API (``demo --via-http``).

File ingest and the collector map Segment messages with different code (``ingest.py`` versus
``segment.SegmentMapper`` in the loader), so sending the simulator's export through a real
collector is the end-to-end check that both paths give the same ``events``. The replay runs the
same pieces as ``touchline serve`` (the :class:`~touchline.collect.app.Collector` under uvicorn,
the spawned :func:`~touchline.collect.loader.run_loader`), bound to 127.0.0.1 only, with a
private spool folder so it never mixes with (or waits on the loader lock of) a collector that
is already running on ``settings.spool_dir``.

The replay sends with an **import** key, so the collector keeps each message's own
``receivedAt`` instead of stamping its clock (Segment semantics for live traffic): the clock-skew
step of prepare (``timestamp = received_at − (sent_at − original_timestamp)``) then sees the same
times as after file ingest, and sessions and journeys come out the same. What differs is only
bookkeeping: ``write_key`` is the replay key's name (file ingest leaves it empty), and
``ingest_id`` and ``ingested_at`` name the load.
"""

from __future__ import annotations

import base64
import gzip
import http.client
import logging
import multiprocessing
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb
import orjson

from touchline import engine, store
from touchline.collect.app import Collector
from touchline.collect.keys import create_key, export_keys, revoke_key
from touchline.collect.loader import load_spool, run_loader
from touchline.collect.segment import MAX_BATCH_BYTES
from touchline.collect.spool import SEGMENT_SUFFIX
from touchline.config import Settings
from touchline.errors import EngineError, InputError, TouchlineError

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
KEY_NAME = "replay"
STARTUP_SECONDS = 20.0
SHUTDOWN_SECONDS = 15.0
LOADER_STOP_SECONDS = 60.0
REQUEST_TIMEOUT_SECONDS = 30.0
MAX_ATTEMPTS = 20  # per batch, for 429/503 and dropped connections
MAX_RETRY_AFTER_SECONDS = 30.0
DEFAULT_RETRY_SECONDS = 1.0
# room for the {"batch":[...]} envelope and commas under the collector's 500 KB limit
_BATCH_BUDGET = MAX_BATCH_BYTES - 1024


class ReplayError(TouchlineError):
    """The collector could not be started, refused the replay or did not drain in time."""


@dataclass(frozen=True)
class ReplayResult:
    """What a replay did.

    ``sent`` messages went out in requests; ``acknowledged`` is what the collector answered as
    durably spooled; ``rejected`` is what it refused (per message in a 200 answer, or a whole
    batch on a 4xx); ``skipped`` lines were not JSON and never sent (file ingest rejects them
    as ``bad_json``). ``loaded`` is the number of new ``events`` rows, which is smaller than
    ``acknowledged`` by the duplicates (repeated ``messageId``) the loader drops.
    """

    sent: int
    acknowledged: int
    rejected: int
    skipped: int
    loaded: int
    requests: int
    retries: int
    seconds: float


class _Server:
    """The collector under uvicorn in a thread, on a socket bound before start (no port race)."""

    def __init__(self, settings: Settings) -> None:
        import uvicorn

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind((LOOPBACK, 0))
        self.port = int(self.sock.getsockname()[1])
        config = uvicorn.Config(
            Collector(settings),
            lifespan="on",
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=10,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run,
            kwargs={"sockets": [self.sock]},
            name="touchline-replay-collector",
            daemon=True,
        )

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + STARTUP_SECONDS
        while not self.server.started:
            if not self.thread.is_alive():
                raise ReplayError("the collector exited during startup (see the log above)")
            if time.monotonic() > deadline:
                raise ReplayError(f"the collector did not start within {STARTUP_SECONDS:.0f} s")
            time.sleep(0.01)

    def stop(self) -> None:
        """Ask uvicorn to exit; its lifespan shutdown seals the spool segment."""
        self.server.should_exit = True
        if self.thread.is_alive():
            self.thread.join(SHUTDOWN_SECONDS)
        self.sock.close()
        if self.thread.is_alive():
            raise ReplayError(f"the collector did not stop within {SHUTDOWN_SECONDS:.0f} s")


def _check_warehouse(settings: Settings) -> None:
    """The loader's exactly-once load needs a DuckDB file another process can open."""
    url = settings.database_url
    if not url.startswith(engine.DUCKDB_SCHEME):
        raise EngineError(
            f"replaying through the collector needs a DuckDB warehouse; {url!r} is not one "
            "(the collector's loader commits rows and spool offsets in one DuckDB transaction). "
            "Ingest the file instead (touchline ingest)."
        )
    path = url[len(engine.DUCKDB_SCHEME) :].removeprefix("/")
    if path in ("", ":memory:"):
        raise EngineError(
            "replaying through the collector needs a DuckDB file: the loader runs in its own "
            "process and cannot see an in-memory database"
        )


def _messages(path: Path) -> Iterator[tuple[int, bytes | None]]:
    """``(line number, message JSON)``; ``None`` for a non-empty line that is not JSON."""
    with gzip.open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            line = raw.strip()
            if not line:
                continue
            try:
                orjson.loads(line)
            except orjson.JSONDecodeError:
                yield number, None
                continue
            yield number, line


def _batches(path: Path, batch_size: int, stats: dict[str, int]) -> Iterator[list[bytes]]:
    """Messages grouped by ``batch_size`` and kept under the collector's body limit."""
    batch: list[bytes] = []
    size = 0
    for number, line in _messages(path):
        if line is None:
            stats["skipped"] += 1
            log.warning("%s line %d is not JSON; not sent", path, number)
            continue
        if batch and (len(batch) >= batch_size or size + len(line) + 1 > _BATCH_BUDGET):
            yield batch
            batch, size = [], 0
        batch.append(line)
        size += len(line) + 1
    if batch:
        yield batch


def _retry_after(response: http.client.HTTPResponse) -> float:
    value = response.getheader("Retry-After")
    try:
        seconds = float(value) if value is not None else DEFAULT_RETRY_SECONDS
    except ValueError:
        seconds = DEFAULT_RETRY_SECONDS
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_SECONDS)


class _Poster:
    """Posts batches over one keep-alive connection; retries 429/503 as the Segment SDKs do."""

    def __init__(self, port: int, write_key: str) -> None:
        self.port = port
        token = base64.b64encode(f"{write_key}:".encode()).decode()
        self.headers = {"Authorization": f"Basic {token}", "Content-Type": "application/json"}
        self.conn: http.client.HTTPConnection | None = None
        self.requests = 0
        self.retries = 0

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def post(self, batch: list[bytes]) -> tuple[int, int]:
        """Send one batch; return ``(acknowledged, rejected)``."""
        body = b'{"batch":[' + b",".join(batch) + b"]}"
        for attempt in range(1, MAX_ATTEMPTS + 1):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(
                    LOOPBACK, self.port, timeout=REQUEST_TIMEOUT_SECONDS
                )
            self.requests += 1
            try:
                self.conn.request("POST", "/v1/batch", body=body, headers=self.headers)
                response = self.conn.getresponse()
                payload = response.read()
            except (ConnectionError, http.client.HTTPException, TimeoutError) as exc:
                # a dropped keep-alive connection: nothing was acknowledged, send again
                self.close()
                wait = DEFAULT_RETRY_SECONDS
                log.warning("batch post failed (%s); retry %d in %.1f s", exc, attempt, wait)
            else:
                if response.status == 200:
                    answer = orjson.loads(payload)
                    return int(answer.get("accepted", len(batch))), int(answer.get("rejected", 0))
                if response.status in (429, 503):
                    wait = _retry_after(response)
                    log.info(
                        "collector busy (%d); retry %d in %.1f s", response.status, attempt, wait
                    )
                elif response.status == 401:
                    raise ReplayError(f"the collector refused the replay key: {payload!r}")
                elif 400 <= response.status < 500:
                    # a whole batch refused (e.g. over the size limit): Segment drops it too
                    log.warning(
                        "collector refused a batch of %d (%d): %s",
                        len(batch),
                        response.status,
                        payload[:300].decode(errors="replace"),
                    )
                    return 0, len(batch)
                else:
                    raise ReplayError(
                        f"the collector answered {response.status}: "
                        f"{payload[:300].decode(errors='replace')}"
                    )
            self.retries += 1
            time.sleep(wait)
        raise ReplayError(f"a batch was not acknowledged after {MAX_ATTEMPTS} attempts")


def _count_events(settings: Settings) -> int:
    with engine.connected(settings=settings) as con:
        store.init(con)
        return int(con.table(store.EVENTS.name).count().execute())


def _create_key(settings: Settings, spool_dir: Path) -> tuple[str, str]:
    """A write key for this replay only, exported for the worker; ``(key, key_id)``."""
    with engine.connected(settings=settings) as con:
        store.init(con)
        key, record = create_key(con, name=KEY_NAME, kind="import")
        export_keys(con, spool_dir)
    return key, record.key_id


def _drain(settings: Settings, spool_dir: Path) -> None:
    """Load whatever the loader process left (e.g. a failed last cycle); fail if any remains."""
    with engine.connected(settings=settings) as con:
        load_spool(con, settings)
    left = sorted(p.name for p in spool_dir.glob(f"*{SEGMENT_SUFFIX}"))
    if left:
        raise ReplayError(f"the spool {spool_dir} still holds {', '.join(left)} after loading")


def _revoke(settings: Settings, key_id: str) -> None:
    """The replay key is never shown to anyone: revoke it so no live unknown key remains."""
    with engine.connected(settings=settings) as con:
        revoke_key(con, key_id)


def replay_events(
    ndjson_gz: Path,
    settings: Settings,
    *,
    batch_size: int = 100,
    spool_dir: Path | None = None,
) -> ReplayResult:
    """Send a gzipped Segment NDJSON export through a collector into ``settings.database_url``.

    Starts the collector on 127.0.0.1 (a free port) and its loader, creates a write key,
    posts the messages to ``/v1/batch`` in batches of ``batch_size`` (fewer if a batch would
    pass the 500 KB body limit), stops the server, waits for the loader's last load and loads
    any rest itself, then revokes the key. Every server and loader started is stopped, also
    on error. ``spool_dir`` defaults to a temporary folder removed afterwards.

    Raises :class:`EngineError` for a warehouse other than a DuckDB file, :class:`InputError`
    for a missing file or a bad ``batch_size``, :class:`ReplayError` when the collector does
    not start, refuses the key, stays busy or does not drain.
    """
    started = time.perf_counter()
    _check_warehouse(settings)
    if batch_size < 1:
        raise InputError(f"batch_size must be at least 1, not {batch_size}")
    if not ndjson_gz.is_file():
        raise InputError(f"{ndjson_gz} is not a file")
    private = spool_dir is None
    spool = Path(tempfile.mkdtemp(prefix="touchline-replay-")) if spool_dir is None else spool_dir
    spool.mkdir(parents=True, exist_ok=True)
    run = settings.model_copy(update={"spool_dir": spool, "collector_host": LOOPBACK})
    key_id: str | None = None
    try:
        before = _count_events(run)
        key, key_id = _create_key(run, spool)
        stats = {"sent": 0, "acknowledged": 0, "rejected": 0, "skipped": 0}
        poster: _Poster | None = None
        context = multiprocessing.get_context("spawn")
        stop = context.Event()
        loader = context.Process(
            target=run_loader, args=(run, stop, os.getpid()), name="touchline-replay-loader"
        )
        server = _Server(run)
        loader.start()
        try:
            server.start()
            poster = _Poster(server.port, key)
            for batch in _batches(ndjson_gz, batch_size, stats):
                acknowledged, rejected = poster.post(batch)
                stats["sent"] += len(batch)
                stats["acknowledged"] += acknowledged
                stats["rejected"] += rejected
        finally:
            if poster is not None:
                poster.close()
            try:
                server.stop()
            finally:
                stop.set()
                loader.join(LOADER_STOP_SECONDS)
                if loader.is_alive():
                    log.error(
                        "the replay loader did not stop in %.0f s; terminating it",
                        LOADER_STOP_SECONDS,
                    )
                    loader.terminate()
                    loader.join(5)
        _drain(run, spool)
        loaded = _count_events(run) - before
    finally:
        try:
            if key_id is not None:
                _revoke(run, key_id)
        except (duckdb.Error, TouchlineError, OSError) as exc:
            log.warning("could not revoke the replay key %s: %s", key_id, exc)
        finally:
            if private:
                shutil.rmtree(spool, ignore_errors=True)
    result = ReplayResult(
        sent=stats["sent"],
        acknowledged=stats["acknowledged"],
        rejected=stats["rejected"],
        skipped=stats["skipped"],
        loaded=loaded,
        requests=poster.requests if poster else 0,
        retries=poster.retries if poster else 0,
        seconds=time.perf_counter() - started,
    )
    log.info(
        "replayed %s: %d sent, %d acknowledged, %d rejected, %d new events in %.1f s",
        ndjson_gz,
        result.sent,
        result.acknowledged,
        result.rejected,
        result.loaded,
        result.seconds,
    )
    return result
