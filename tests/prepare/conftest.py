"""Fixtures for prepare tests: readable event rows, loaded through Parquet on every engine."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import ibis.expr.types as ir
import pytest
from factories import DAY, arrow_table, at, event_rows  # noqa: F401 - re-exported to the tests
from ibis.backends import BaseBackend

from touchline import engine, store
from touchline.config import Settings

NOW = datetime(2025, 3, 10, 12, 0, 0)


@pytest.fixture
def load_events(con: BaseBackend) -> Callable[[Sequence[dict[str, Any]]], ir.Table]:
    """Load event rows into ``events`` on the engine under test and return the table."""
    def load(rows: Sequence[dict[str, Any]]) -> ir.Table:
        return engine.load_table(con, "events", arrow_table(store.EVENTS, event_rows(rows)))
    return load


@pytest.fixture
def load_deals(con: BaseBackend) -> Callable[[Sequence[dict[str, Any]]], ir.Table]:
    def load(rows: Sequence[dict[str, Any]]) -> ir.Table:
        return engine.load_table(con, "deals", arrow_table(store.DEALS, rows))
    return load


@pytest.fixture
def settings(tmp_path: Any) -> Settings:
    return Settings(database_url="duckdb://", temp_directory=tmp_path)


def load(con: BaseBackend, rows: Sequence[dict[str, Any]], name: str = "events") -> ir.Table:
    """Event rows (with :func:`event_rows` defaults) as table ``name`` on ``con``."""
    return engine.load_table(con, name, arrow_table(store.EVENTS, event_rows(rows)))


def working(con: BaseBackend, rows: Sequence[dict[str, Any]]) -> ir.Table:
    """Event rows as prepare's working table (``source`` renamed ``recorded_by``), stored as
    the runner's checkpoints store a step's input (:func:`touchline.engine.materialise`).

    Why stored: the working table's expressions (campaign values read out of properties, ~54 KB
    of SQL) would otherwise sit under every step a test composes on it, and Spark plans the
    whole tree again for each query: a cross-source dedupe of four rows spent 8.6-10.5 s
    analysing and 9.5-10.5 s running, against 1.0 and 2.8 s on the stored rows.
    """
    from touchline.prepare.runner import working_events

    return engine.materialise(con, f"_test_working_{uuid.uuid4().hex[:8]}",
                              working_events(load(con, rows)))
