"""docs/tables.md is generated from the table specs and must stay current."""

from __future__ import annotations

from pathlib import Path

from touchline import store

DOC = Path(__file__).resolve().parents[1] / "docs" / "tables.md"


def test_tables_doc_is_current() -> None:
    expected = store.tables_markdown().rstrip() + "\n"
    assert DOC.read_text() == expected, (
        "docs/tables.md is out of date: regenerate it with "
        "python -c \"from touchline import store; print(store.tables_markdown())\" > docs/tables.md"
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
