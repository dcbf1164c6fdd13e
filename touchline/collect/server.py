"""``touchline serve``: uvicorn workers for the collector plus the loader process.

The workers only append to the spool; a separate process (spawned, so it shares no state with
uvicorn) is the warehouse's single writer. The workers get the settings through one environment
variable, since uvicorn starts them by import string.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
from pathlib import Path

from touchline import engine, store
from touchline.collect.app import SETTINGS_ENV
from touchline.collect.keys import export_keys
from touchline.collect.loader import run_loader
from touchline.config import Settings

log = logging.getLogger(__name__)

LOADER_STOP_SECONDS = 60.0


def prepare(settings: Settings) -> int:
    """Create the tables and export the live keys for the workers; return how many keys."""
    with engine.connected(settings=settings) as con:
        store.init(con)
        return export_keys(con, Path(settings.spool_dir))


def serve(settings: Settings, *, log_level: str = "warning") -> None:
    """Run the collector until interrupted; the loader drains the spool before exiting."""
    import uvicorn

    Path(settings.spool_dir).mkdir(parents=True, exist_ok=True)
    keys = prepare(settings)
    if keys == 0:
        log.warning("no API keys: every request will get 401 (touchline keys create --name web)")
    context = multiprocessing.get_context("spawn")
    stop = context.Event()
    loader = context.Process(
        target=run_loader, args=(settings, stop, os.getpid()), name="touchline-loader", daemon=False
    )
    # Ctrl-C reaches the whole process group: the loader ignores it (inherited before its
    # imports run) and stops through `stop` instead, after a last load
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        loader.start()
    finally:
        signal.signal(signal.SIGINT, previous)
    os.environ[SETTINGS_ENV] = settings.model_dump_json()
    try:
        uvicorn.run(
            "touchline.collect.app:app_from_env",
            factory=True,
            host=settings.collector_host,
            port=settings.collector_port,
            workers=settings.collector_workers,
            log_level=log_level,
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=10,
        )
    finally:
        stop.set()
        loader.join(LOADER_STOP_SECONDS)
        if loader.is_alive():
            log.error("the loader did not stop within %.0f s; terminating it", LOADER_STOP_SECONDS)
            loader.terminate()
