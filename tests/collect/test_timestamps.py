"""One ISO 8601 rule for every path: the collector's door (Python), the loader and file ingest
(the warehouse's SQL) and CRM webhooks (Python, with epoch times as file ingest reads them)
accept and refuse the same texts, and file ingest refuses the times the
warehouse would store in the wrong year (``9999-12-31T23:59:59-23:59`` is year 10000 in UTC)."""

from __future__ import annotations

from datetime import datetime

import duckdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from touchline.collect.ingest import ingest_file
from touchline.collect.segment import (
    _is_timestamp,
    iso_timestamp_sql,
    row_timestamp_sql,
    utc_timestamp_text,
)
from touchline.config import Settings

ACCEPTED = ["2025-03-01T10:00:00Z", "2025-03-01 10:00:00+01:00", "2025-03-01",
            "2025-03-01T10:00", "2025-03-01T10:00:00.123456789Z", "2025-03-01T10:00:00+0100",
            "9999-12-31T23:59:59+00:00", "0001-01-01T00:00:00Z"]
REFUSED = ["9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+23:59", "2025-W01-1", "2025-060",
           "20250301T100000", "2025-02-30T00:00:00Z", "2025-03-01T24:00:00Z",
           "2025-03-01T10:00:00 UTC", "2025-3-1", "0000-01-01", "2025-03-01T10:00Z"]
#: near-ISO texts: right shape, any digits, so out-of-range fields and offsets are common
NEAR_ISO = (r"[0-9]{4}-[0-9]{2}-[0-9]{2}([T ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,9})?)?"
            r"(Z|[+-][0-9]{2}(:?[0-9]{2})?)?)?")


@pytest.fixture(scope="module")
def sql() -> duckdb.DuckDBPyConnection:
    db = duckdb.connect(":memory:")
    db.execute("SET TimeZone = 'UTC'")
    return db


def warehouse_accepts(db: duckdb.DuckDBPyConnection, text: str) -> bool:
    query = f"SELECT {iso_timestamp_sql('x')} IS NOT NULL FROM (SELECT ? AS x)"
    return bool(db.execute(query, [text]).fetchone()[0])  # type: ignore[index]


EPOCHS = {"1740823200": "2025-03-01T10:00:00", "1740823200.5": "2025-03-01T10:00:00.500000",
          "1740823200123": "2025-03-01T10:00:00.123000", "17408232": None, "17408232001": None}


def warehouse_row_time(db: duckdb.DuckDBPyConnection, text: str) -> str | None:
    query = f"SELECT CAST({row_timestamp_sql('x')} AS VARCHAR) FROM (SELECT ? AS x)"
    value = db.execute(query, [text]).fetchone()[0]  # type: ignore[index]
    return None if value is None else value.replace(" ", "T")


@pytest.mark.parametrize("text", ACCEPTED + REFUSED + list(EPOCHS))
def test_webhook_rows_and_file_rows_read_times_alike(sql, text: str) -> None:  # type: ignore[no-untyped-def]
    """A CRM webhook refuses week dates and year-10000 offsets as file ingest does (it had
    its own parser that accepted both), and reads epoch times to the same instant."""
    webhook = utc_timestamp_text(text)
    assert (webhook is not None) == (text in ACCEPTED or EPOCHS.get(text) is not None)
    if text in EPOCHS:
        assert webhook == EPOCHS[text]
    file_row = warehouse_row_time(sql, text)
    assert (file_row is None) == (webhook is None)
    if webhook is not None and file_row is not None:
        assert datetime.fromisoformat(file_row) == datetime.fromisoformat(webhook)


@pytest.mark.parametrize("text", ACCEPTED + REFUSED)
def test_collector_and_warehouse_agree_on_known_times(sql, text: str) -> None:  # type: ignore[no-untyped-def]
    assert (_is_timestamp(text), warehouse_accepts(sql, text)) == (text in ACCEPTED,) * 2


@settings(max_examples=300, deadline=None)
@given(text=st.from_regex(NEAR_ISO, fullmatch=True))
def test_collector_and_warehouse_agree_on_any_near_iso_text(sql, text: str) -> None:  # type: ignore[no-untyped-def]
    assert _is_timestamp(text) == warehouse_accepts(sql, text)


def test_file_ingest_refuses_times_out_of_range_and_week_dates(con, tmp_path) -> None:  # type: ignore[no-untyped-def]
    rows = ["2025-03-01T10:00:00Z", *REFUSED[:5]]
    path = tmp_path / "events.csv"
    path.write_text("message_id,anonymous_id,type,timestamp\n" + "".join(
        f"m{i},a,page,{t}\n" for i, t in enumerate(rows)))
    result = ingest_file(con, path, "events", settings=Settings(database_url="duckdb://"))
    assert (result.loaded, dict(result.rejects_by_reason)) == (1, {"bad_timestamp": 5})
    lines = sorted(con.table("rejects").line.to_pyarrow().to_pylist())
    assert lines == [3, 4, 5, 6, 7]
