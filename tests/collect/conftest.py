"""Collector fixtures: a warehouse with a write key, and real servers on 127.0.0.1.

``start_collector`` runs the ASGI app under uvicorn in a thread (fast to start, same process so
a test can load the spool itself); ``serve_process`` runs ``touchline serve`` as a child process
for the tests that kill it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from collector_kit import (
    STARTUP_SECONDS,
    LiveCollector,
    ServeProcess,
    Warehouse,
    free_port,
    make_settings,
    make_warehouse,
)

from touchline.collect.app import Collector


@pytest.fixture
def warehouse(tmp_path: Path) -> Warehouse:
    return make_warehouse(make_settings(tmp_path))


@pytest.fixture
def start_collector() -> Iterator[Callable[[Warehouse], LiveCollector]]:
    """Start the collector for a warehouse in a thread; every one started is stopped after."""
    servers: list[tuple[uvicorn.Server, threading.Thread, socket.socket]] = []

    def start(wh: Warehouse) -> LiveCollector:
        app = Collector(wh.settings)
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        config = uvicorn.Config(app, lifespan="on", log_level="warning", access_log=False)
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        deadline = time.monotonic() + STARTUP_SECONDS
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("the collector did not start")
            time.sleep(0.01)
        servers.append((server, thread, sock))
        return LiveCollector(f"http://127.0.0.1:{port}", app, wh)

    yield start
    for server, thread, sock in servers:
        server.should_exit = True
        thread.join(10)
        sock.close()


@pytest.fixture
def collector(
    warehouse: Warehouse, start_collector: Callable[[Warehouse], LiveCollector]
) -> LiveCollector:
    return start_collector(warehouse)


@pytest.fixture
def serve_process(tmp_path: Path) -> Iterator[Callable[[Warehouse], ServeProcess]]:
    """Start ``touchline serve`` for a warehouse; every one started is stopped after."""
    started: list[ServeProcess] = []

    def start(wh: Warehouse, **env: str) -> ServeProcess:
        port = free_port()
        s = wh.settings
        environ = {
            **os.environ,
            "TOUCHLINE_DATABASE_URL": s.database_url,
            "TOUCHLINE_SPOOL_DIR": str(s.spool_dir),
            "TOUCHLINE_SPOOL_MIN_FREE_BYTES": "0",
            "TOUCHLINE_LOAD_INTERVAL_SECONDS": str(s.load_interval_seconds),
            "TOUCHLINE_COLLECTOR_PORT": str(port),
            "TOUCHLINE_COLLECTOR_HOST": "127.0.0.1",
            **env,
        }
        log = (tmp_path / f"serve-{len(started)}.log").open("wb")
        process = subprocess.Popen(
            [sys.executable, "-m", "touchline", "serve"],
            env=environ,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        proc = ServeProcess(process, f"http://127.0.0.1:{port}")
        started.append(proc)
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            try:
                if httpx.get(f"{proc.url}/health", timeout=1.0).status_code == 200:
                    return proc
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(f"touchline serve did not start: see {log.name}")
            time.sleep(0.1)

    yield start
    for proc in started:
        proc.stop()
