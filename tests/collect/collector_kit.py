"""Helpers shared by the collector tests (imported by conftest.py and test modules)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from ibis.backends import BaseBackend

from touchline import engine, store
from touchline.collect.app import Collector
from touchline.collect.keys import create_key, export_keys
from touchline.collect.loader import load_spool
from touchline.config import Settings

STARTUP_SECONDS = 20.0


@dataclass
class Warehouse:
    """A DuckDB warehouse file plus the collector settings and a key of each kind it uses:
    write (public, for pages), import (back-fills), server (webhooks) and admin (stats)."""

    settings: Settings
    write_key: str
    import_key: str
    server_key: str
    admin_key: str

    def connect(self) -> BaseBackend:
        return engine.connect(settings=self.settings)

    def load(self) -> None:
        """Move the spool into the warehouse, as the loader process would."""
        con = self.connect()
        try:
            load_spool(con, self.settings)
        finally:
            con.disconnect()

    def query(self, sql: str) -> list[tuple[object, ...]]:
        con = self.connect()
        try:
            return con.con.execute(sql).fetchall()  # type: ignore[attr-defined, no-any-return]
        finally:
            con.disconnect()


def make_settings(tmp_path: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "database_url": f"duckdb:///{tmp_path / 'warehouse.duckdb'}",
        "spool_dir": tmp_path / "spool",
        "spool_min_free_bytes": 0,
        "load_interval_seconds": 0.2,
        "collector_host": "127.0.0.1",
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


def make_warehouse(settings: Settings) -> Warehouse:
    con = engine.connect(settings=settings)
    try:
        store.init(con)
        key, _ = create_key(con, name="web", kind="write")
        import_key, _ = create_key(con, name="backfill", kind="import")
        server_key, _ = create_key(con, name="crm", kind="server")
        admin_key, _ = create_key(con, name="ops", kind="admin")
        export_keys(con, Path(settings.spool_dir))
    finally:
        con.disconnect()
    return Warehouse(settings, key, import_key, server_key, admin_key)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LiveCollector:
    url: str
    app: Collector
    warehouse: Warehouse

    def client(self, **kwargs: object) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=10.0, **kwargs)  # type: ignore[arg-type]


@dataclass
class ServeProcess:
    """``touchline serve`` in its own process group, so a test can kill all of it at once."""

    process: subprocess.Popen[bytes]
    url: str

    def kill_hard(self) -> None:
        """SIGKILL every process of the group, then wait (bounded) until all are gone."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)
        for _ in range(200):
            try:
                os.killpg(self.process.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)
        raise RuntimeError(f"processes of group {self.process.pid} survived SIGKILL")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.kill_hard()
