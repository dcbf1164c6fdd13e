"""Durability: ``kill -9`` of the whole collector mid-load loses no acknowledged event, with
poison messages (undecodable URL parameters) mixed into the load."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import duckdb
import httpx
import pytest
from collector_kit import ServeProcess, Warehouse

THREADS = 4
BATCH = 20
MAX_REQUESTS_PER_THREAD = 400
LOAD_SECONDS = 30.0
KILL_AFTER_EVENTS = 3_000
KILL_AFTER_SECONDS = 3.0  # the loader process starts in ~1.5 s: let it load a few times first


def _post_until_stopped(
    url: str, key: str, thread: int, acked: list[str], stop: threading.Event
) -> None:
    with httpx.Client(base_url=url, auth=(key, ""), timeout=5.0) as http:
        for request in range(MAX_REQUESTS_PER_THREAD):
            if stop.is_set():
                return
            ids = [f"t{thread}-r{request}-e{i}" for i in range(BATCH)]
            batch: list[dict[str, object]] = [
                {"type": "track", "event": "Load", "anonymousId": f"a{thread}", "messageId": m}
                for m in ids
            ]
            # a poison pill in every batch: an undecodable click id once stopped the loader
            batch[request % BATCH]["context"] = {
                "page": {"url": f"https://acme.example/?gclid=%C3%28&utm_campaign=caf%E9{request}"}
            }
            try:
                response = http.post("/v1/batch", json={"batch": batch})
            except httpx.TransportError:
                return  # the server is gone: this request was never acknowledged
            if response.status_code == 200:
                acked.extend(ids)


def _events_loaded(path: str) -> int:
    """Rows in ``events`` now, or 0 while the loader holds the warehouse (it opens it per cycle)."""
    try:
        with duckdb.connect(path, read_only=True) as db:
            row = db.execute("SELECT count(*) FROM events").fetchone()
    except duckdb.Error:
        return 0
    return int(row[0]) if row else 0


@pytest.mark.slow
def test_kill_9_mid_load_loses_and_duplicates_no_acknowledged_event(
    warehouse: Warehouse, serve_process: Callable[[Warehouse], ServeProcess]
) -> None:
    server = serve_process(warehouse)
    acked: list[str] = []
    stop = threading.Event()
    threads = [
        threading.Thread(
            target=_post_until_stopped, args=(server.url, warehouse.write_key, t, acked, stop)
        )
        for t in range(THREADS)
    ]
    for thread in threads:
        thread.start()
    warehouse_file = warehouse.settings.database_url.removeprefix("duckdb:///")
    started = time.monotonic()
    while time.monotonic() - started < LOAD_SECONDS and (
        len(acked) < KILL_AFTER_EVENTS
        or time.monotonic() - started < KILL_AFTER_SECONDS
        or _events_loaded(warehouse_file) == 0  # the loader has not committed yet
    ):
        time.sleep(0.5)  # each look briefly holds the warehouse: the loader then skips a cycle
    server.kill_hard()  # workers and loader at once, mid-request and likely mid-load
    stop.set()
    for thread in threads:
        thread.join(30)
    assert len(acked) >= KILL_AFTER_EVENTS, "the load generator did not get far enough"
    [(loaded_before_kill,)] = warehouse.query("SELECT count(*) FROM events")
    assert loaded_before_kill > 0, "the kill should land after the loader started loading"

    restarted = serve_process(warehouse)
    restarted.stop()  # a clean stop makes the loader drain the spool before exiting

    stored = dict(warehouse.query("SELECT message_id, count(*) FROM events GROUP BY 1"))
    lost = [m for m in acked if m not in stored]
    duplicated = [m for m, count in stored.items() if count > 1]
    spool_left = sorted(p.name for p in Path(warehouse.settings.spool_dir).glob("*.seg"))
    rejects = warehouse.query("SELECT reason_code, count(*) FROM rejects GROUP BY 1")
    assert (len(lost), len(duplicated)) == (0, 0), (
        f"acked {len(acked)}, loaded before kill {loaded_before_kill}, lost {lost[:5]}, "
        f"spool left {spool_left}, rejects {rejects}"
    )
    assert len(acked) == len(set(acked))
