"""Replaying the simulator's export through the collector gives the same events as file ingest.

Both paths parse Segment messages with separate code (``ingest.py`` and the loader's
``segment.map_segment``); this is the end-to-end check that ``demo --via-http`` and file ingest
agree. The replay sends with an import key, so ``received_at`` agrees too; ``write_key``,
``ingest_id`` and ``ingested_at`` name the load and cannot agree.
"""

from __future__ import annotations

import gzip
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import orjson
import pandas as pd
import pytest
from collector_kit import make_settings

from touchline import engine
from touchline.collect.ingest import IngestResult, ingest_file
from touchline.collect.replay import ReplayResult, _Poster, replay_events
from touchline.config import Settings
from touchline.errors import EngineError
from touchline.simulate import simulate

# equal column by column; utm_source/utm_medium only up to surrounding whitespace (below)
EXACT = [
    "message_id",
    "type",
    "event",
    "anonymous_id",
    "user_id",
    "timestamp",
    "original_timestamp",
    "sent_at",
    "received_at",
    "url",
    "utm_campaign",
    "utm_term",
    "utm_content",
    "gclid",
]
TRIMMED = ["utm_source", "utm_medium"]
# file ingest and the loader's segment.map_segment give the same canonical forms: trimmed
# values, lower-cased e-mails, either spelling of the user agent
MAPPED_ALIKE = [*TRIMMED, "email", "user_agent"]  # context: same members, key order differs


@dataclass(frozen=True)
class Pair:
    """The same export loaded by file ingest and by replay, plus what each reported."""

    by_file: Settings
    by_http: Settings
    ingested: IngestResult
    replayed: ReplayResult
    written: int
    distinct: int


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Pair:
    root = tmp_path_factory.mktemp("replay")
    summary = simulate(300, 3, root / "sim")
    export = root / "sim" / "events.ndjson.gz"
    assert export in summary.files
    with gzip.open(export, "rb") as handle:
        distinct = len({orjson.loads(line)["messageId"] for line in handle})
    by_file = make_settings(root / "file")
    con = engine.connect(settings=by_file)
    try:
        ingested = ingest_file(con, export, "events", settings=by_file)
    finally:
        con.disconnect()
    by_http = make_settings(root / "http")
    replayed = replay_events(export, by_http, batch_size=100)
    return Pair(by_file, by_http, ingested, replayed, summary.events_written, distinct)


def _events(settings: Settings, columns: list[str]) -> pd.DataFrame:
    con = engine.connect(settings=settings)
    try:
        frame = con.table("events").select("message_id", *columns).to_pyarrow().to_pandas()
    finally:
        con.disconnect()
    return frame.sort_values("message_id").reset_index(drop=True)


def test_replay_counts(pair: Pair) -> None:
    # the simulator re-sends some messages (same messageId) on purpose: all are sent and
    # acknowledged, the loader keeps the first copy of each messageId, as file ingest does
    result = pair.replayed
    assert pair.distinct < pair.written
    assert result.sent == result.acknowledged == pair.written
    assert (result.rejected, result.skipped) == (0, 0)
    assert result.loaded == pair.distinct == pair.ingested.loaded
    assert result.requests >= -(-pair.written // 100)


def test_replay_matches_file_ingest(pair: Pair) -> None:
    by_file = _events(pair.by_file, EXACT[1:] + TRIMMED)
    by_http = _events(pair.by_http, EXACT[1:] + TRIMMED)
    assert len(by_file) == pair.distinct
    assert set(by_http["message_id"]) == set(by_file["message_id"])
    pd.testing.assert_frame_equal(by_http[EXACT], by_file[EXACT])
    for column in TRIMMED:
        assert by_file[column].notna().sum() > 0
        pd.testing.assert_series_equal(by_http[column], by_file[column].str.strip())


def test_replay_names_its_key_and_keeps_historical_receipt_times(pair: Pair) -> None:
    """What cannot match file ingest: the key name; receipt times stay in the past."""
    by_file = _events(pair.by_file, ["received_at", "write_key"])
    by_http = _events(pair.by_http, ["received_at", "write_key"])
    assert by_file["write_key"].isna().all()
    assert (by_http["write_key"] == "replay").all()
    assert by_http["received_at"].notna().all()
    now = pd.Timestamp.now(tz="UTC").tz_localize(None)
    assert by_http["received_at"].max() < now - pd.Timedelta(days=1)


def test_mappers_agree_on_every_compared_column(pair: Pair) -> None:
    pd.testing.assert_frame_equal(
        _events(pair.by_http, MAPPED_ALIKE), _events(pair.by_file, MAPPED_ALIKE)
    )


def test_replay_is_idempotent_and_revokes_its_key(tmp_path: Path) -> None:
    simulate(20, 1, tmp_path / "sim")
    export = tmp_path / "sim" / "events.ndjson.gz"
    settings = make_settings(tmp_path)
    first = replay_events(export, settings, batch_size=7)
    again = replay_events(export, settings, batch_size=500)
    assert first.loaded > 0
    assert again.acknowledged == first.acknowledged
    assert again.loaded == 0  # every messageId is already in events
    con = engine.connect(settings=settings)
    try:
        live = con.con.execute(  # type: ignore[attr-defined]
            "SELECT count(*) FROM write_keys WHERE revoked_at IS NULL"
        ).fetchone()
    finally:
        con.disconnect()
    assert live == (0,)


@pytest.mark.parametrize(
    ("url", "message"),
    [("spark://local[1]", "needs a DuckDB warehouse"), ("duckdb://", "DuckDB file")],
)
def test_replay_needs_a_duckdb_file(tmp_path: Path, url: str, message: str) -> None:
    export = tmp_path / "events.ndjson.gz"
    with pytest.raises(EngineError, match=message):
        replay_events(export, make_settings(tmp_path, database_url=url))
    assert not (tmp_path / "spool").exists()  # refused before anything started


def test_poster_retries_busy_answers_honouring_retry_after() -> None:
    """429 and 503 are retried after Retry-After; the batch counts once, when acknowledged."""
    answers = [(503, "0"), (429, "0.2"), (200, None)]
    seen: list[bytes] = []

    class Busy(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            seen.append(self.rfile.read(int(self.headers["Content-Length"])))
            status, retry = answers[len(seen) - 1]
            body = b'{"success":true,"accepted":2,"rejected":1}' if status == 200 else b"{}"
            self.send_response(status)
            if retry is not None:
                self.send_header("Retry-After", retry)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            """Quiet: the test checks the requests itself."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Busy)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    poster = _Poster(server.server_address[1], "tlw_test")
    try:
        started = time.monotonic()
        assert poster.post([b'{"a":1}', b'{"b":2}', b"3"]) == (2, 1)
        assert time.monotonic() - started >= 0.2
    finally:
        poster.close()
        server.shutdown()
        server.server_close()
        thread.join(5)
    assert (poster.requests, poster.retries) == (3, 2)
    assert seen == [b'{"batch":[{"a":1},{"b":2},3]}'] * 3
