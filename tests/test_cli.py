"""The command line: exit codes and what it prints."""

from __future__ import annotations

from pathlib import Path

import pytest
from factories import CLI_OWN_CONNECTION
from typer.testing import CliRunner

from touchline.cli import app

pytestmark = pytest.mark.duckdb_only(
    reason=CLI_OWN_CONNECTION)
runner = CliRunner()


def test_ingest_prints_summary_and_reasons(tmp_path: Path) -> None:
    data = tmp_path / "calls.csv"
    data.write_text(
        "call_id,caller_number,tracking_number,started_at,duration_seconds,answered\n"
        "c1,+441234567890,+448000000001,2025-03-01T10:00:00Z,65,yes\n"
        "c2,+441234567891,+448000000001,not-a-time,10,no\n"
        "c3,+441234567892,+448000000002,2025-03-01T11:00:00Z,ten,yes\n"
    )
    db = f"duckdb:///{tmp_path / 'w.duckdb'}"
    result = runner.invoke(app, ["ingest", str(data), "--kind", "calls", "--database", db])
    assert result.exit_code == 0, result.output
    assert "bad_timestamp" in result.output and "bad_integer" in result.output
    import duckdb

    with duckdb.connect(str(tmp_path / "w.duckdb"), read_only=True) as check:
        run = check.execute(
            "select rows_read, loaded, rejected, duplicates from ingests").fetchall()
    assert run == [(3, 1, 2, 0)]


def test_ingest_of_missing_file_exits_1_and_names_it(tmp_path: Path) -> None:
    db = f"duckdb:///{tmp_path / 'w.duckdb'}"
    result = runner.invoke(app, ["ingest", str(tmp_path / "nope.csv"), "--kind", "calls",
                                 "--database", db])
    assert result.exit_code == 1
    assert "nope.csv: no such file" in result.output


def test_unknown_kind_is_a_clear_error(tmp_path: Path) -> None:
    db = f"duckdb:///{tmp_path / 'w.duckdb'}"
    result = runner.invoke(app, ["ingest", "x.csv", "--kind", "orders", "--database", db])
    assert result.exit_code == 2
    assert "--kind 'orders' is not one of events, deals" in result.output


def test_an_error_naming_a_mapping_section_prints_it(tmp_path: Path) -> None:
    """Errors are printed as written: `[columns]` is text, not Rich markup to swallow."""
    db = f"duckdb:///{tmp_path / 'w.duckdb'}"
    mapping = tmp_path / "map.toml"
    mapping.write_text("[colums]\nanonymous_id = 'client_id'\n")
    data = tmp_path / "e.csv"
    data.write_text("client_id,timestamp,type\na1,2026-03-01T00:00:00Z,page\n")
    result = runner.invoke(app, ["ingest", str(data), "--kind", "events", "--map", str(mapping),
                                 "--database", db])
    assert result.exit_code == 2
    assert "did you mean 'columns'?" in result.output
    assert "use [columns], [defaults], [options] and [event_types]" in result.output
