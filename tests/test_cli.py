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
    near = runner.invoke(app, ["ingest", "x.csv", "--kind", "event", "--database", db],
                         env={"COLUMNS": "200"})
    assert near.exit_code == 2
    assert "--kind 'event' (did you mean 'events'?) is not one of" in near.output


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


def test_run_summary_fits_80_columns_without_cutting_a_number(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The demo's own figures: before, 'conversions' and a deal value of 11 million were cut
    to 'conversio…' and '11,094,91…' in an 80-column terminal."""
    import io

    import pandas as pd
    from rich.console import Console

    import touchline.cli as cli
    from touchline.pipeline import RunReport

    screen = Console(width=80, file=io.StringIO(), record=True)
    monkeypatch.setattr(cli, "console", screen)
    conversions = pd.DataFrame({
        "conversion": ["call", "deal_won", "lead", "purchase"],
        "conversions": [1_818, 268, 11_081, 1_957],
        "value": [0.0, 11_094_910.0, 0.0, 223_367.71],
        "open_journeys": [28_249, 27_322, 18_006, 28_535],
        "lookback_cut": [378, 0, 386, 380], "without_touches": [6, 11, 0, 0]})
    by_channel = pd.DataFrame({"channel": ["Mobile Push Notifications", "Direct"],
                               "conversions": [78.05, 39.64], "value": [3_731_391.9, 1_823.2]})
    cli.print_run(RunReport("duckdb:///w.duckdb", conversions, by_channel, "deal_won", "linear"),
                  hint=True)
    text = screen.export_text()
    assert max(len(line) for line in text.splitlines()) <= 80
    cells = [line for line in text.splitlines() if line[:1] in "┃│"]
    assert len(cells) >= 9 and not any("…" in line for line in cells)  # (the hint says "…")
    assert "11,094,910.00" in text and "Mobile Push Notifications" in text


def test_kpis_list_shows_every_name_whole_in_an_80_column_terminal(tmp_path: Path) -> None:
    """The names are what ``--kpi`` takes: cut to ``search_cl…`` they cannot be typed."""
    from touchline.metrics.kpis import KPIS

    db = f"duckdb:///{tmp_path / 'w.duckdb'}"
    result = runner.invoke(app, ["kpis", "--list", "--database", db], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    first_cells = {line.split("│")[1].strip() for line in result.output.splitlines()
                   if line.startswith("│")}
    assert set(KPIS) <= first_cells


def test_a_funnel_nobody_entered_says_so(tmp_path: Path) -> None:
    """A mistyped first step used to print nothing at all."""
    db = f"duckdb:///{tmp_path / 'w.duckdb'}"
    assert runner.invoke(app, ["init", "--database", db]).exit_code == 0
    result = runner.invoke(app, ["funnel", "Form Submited", "conversion:purchase",
                                 "--database", db], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "no person entered the funnel's first step ('Form Submited')" in result.output


def test_each_command_is_listed_with_its_first_paragraph_on_one_line() -> None:
    """The docstrings wrap at 99 columns; the list of commands must not break a sentence
    where the source did. At 300 columns each command's first paragraph is one row."""
    wide = CliRunner(env={"COLUMNS": "300"})
    for group in ([], ["users"], ["keys"]):
        out = wide.invoke(app, [*group, "--help"]).output
        rows = [line for line in out.splitlines() if line.startswith("│ ")]
        assert rows, out
        # a continuation row has no command name: it starts with blanks after the border
        assert not [row for row in rows if row.startswith("│   ")], out
    out = wide.invoke(app, ["--help"]).output
    assert ("keywords... of the stored journeys (after `touchline run`), or of a path file "
            "(--paths).") in out


def test_report_on_a_warehouse_never_run_says_to_run_first(tmp_path: Path) -> None:
    db = f"duckdb:///{tmp_path / 'new.duckdb'}"
    out = tmp_path / "x.html"
    result = runner.invoke(app, ["report", "--out", str(out), "--database", db],
                           env={"COLUMNS": "200"})
    attribute = runner.invoke(app, ["attribute", "--database", db], env={"COLUMNS": "200"})
    # the same words and exit code as `touchline attribute`, no traceback, no file
    assert (result.exit_code, attribute.exit_code) == (2, 2)
    assert f"warehouse {db} has no journeys: run `touchline run` first" in result.output
    assert "has no journeys: run `touchline run` first" in attribute.output
    assert "Traceback" not in result.output and not out.exists()
