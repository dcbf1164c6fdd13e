"""docs/tables.md is generated from the table specs and must stay current."""

from __future__ import annotations

from pathlib import Path

from touchline import store

DOC = Path(__file__).resolve().parents[1] / "docs" / "tables.md"


def test_tables_doc_is_current() -> None:
    expected = store.tables_markdown().rstrip() + "\n"
    assert DOC.read_text() == expected, (
        "docs/tables.md is out of date: regenerate it with "
        "touchline tables --out docs/tables.md"
    )
