"""docs/tables.md is generated from the table specs and must stay current."""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd
import pytest

from touchline import store

DOC = Path(__file__).resolve().parents[1] / "docs" / "tables.md"


def test_tables_doc_is_current() -> None:
    expected = store.tables_markdown().rstrip() + "\n"
    assert DOC.read_text() == expected, (
        "docs/tables.md is out of date: regenerate it with "
        "touchline tables --out docs/tables.md"
    )


def test_one_list_of_click_ids_serves_the_collector_ingest_and_prepare() -> None:
    from touchline.collect import ingest, segment
    from touchline.prepare import runner, standardise

    click_columns = [c.name for c in store.EVENTS.columns if "click id" in c.doc]
    assert sorted(store.CLICK_IDS) == sorted(click_columns)
    assert segment.CLICK_IDS is store.CLICK_IDS and ingest.CLICK_IDS is store.CLICK_IDS
    assert [c for c, _ in standardise.CLICK_IDS] == list(store.CLICK_IDS)
    assert set(store.CLICK_IDS) <= set(runner.INPUT_COLUMNS)
    assert set(store.CLICK_IDS) <= set(standardise.TRACKING_PARAMETERS)


@pytest.mark.parametrize(
    ("cell", "written"),
    [('=HYPERLINK("http://x.example","go")', '\'=HYPERLINK("http://x.example","go")'),
     ("+1", "'+1"), ("-2", "'-2"), ("@SUM(A1)", "'@SUM(A1)"), ("\tx", "'\tx"), ("\rx", "'\rx"),
     ("google", "google")],
)
def test_csv_output_escapes_cells_a_spreadsheet_would_run(cell: str, written: str) -> None:
    frame = pd.DataFrame({"channel": [cell], "credit": [-0.5]})
    back = pd.read_csv(io.StringIO(store.to_csv(frame)), keep_default_na=False)
    assert back.to_dict("records") == [{"channel": written, "credit": -0.5}]


def test_attribute_csv_escapes_a_channel_named_like_a_formula(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from touchline.cli import app

    paths = tmp_path / "paths.csv"
    paths.write_text("path;total_conversions;total_conversion_value;total_null\n"
                     "=1+1 > google;2;20;1\n")
    out = tmp_path / "credits.csv"
    result = CliRunner().invoke(app, ["attribute", "--paths", str(paths), "--model",
                                      "last_touch", "--format", "csv", "--out", str(out)])
    assert result.exit_code == 0, result.output
    channels = pd.read_csv(out).channel.tolist()
    assert sorted(channels) == ["'=1+1", "google"]
