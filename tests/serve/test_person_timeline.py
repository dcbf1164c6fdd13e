"""The brief's John on the dashboard's person timeline, in Chromium: organic search, a paid
click on "emergency plumber", a live chat that makes him a lead, a direct visit on his phone,
a phone call, and the won deal in the CRM, each in order with its channel, his stages and
his credits; found by his e-mail in any case and his phone number in any format."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

import pytest
from browser_kit import WAIT_MS, artifacts_folder, log_in, serve_in_thread, watched_page
from factories import john_run_file
from typer.testing import CliRunner

from touchline.cli import app as cli
from touchline.config import Settings
from touchline.serve.app import create_app

if TYPE_CHECKING:
    from playwright.sync_api import Browser

pytestmark = pytest.mark.duckdb_only(
    reason="the dashboard serves one DuckDB file from a thread of the test process, and the "
    "CLI creates its users with its own connection to that file")
PASSWORD = "john's plumber 1"

#: (time, kind, channel, detail, linear credit) of each row, by hand from factories.JOHN and
#: JOHN_DEAL: a stage is entered by the touch that shows it (awareness: the first visit;
#: consideration: the paid click; decision: the chat's lead; retention: the won deal); the
#: deal's 1,800 is split equally over his four sessions' first touches (0.25 each)
JOHN_ROWS = [
    ("2026-03-01 09:00:00", "stage", "", "lifecycle: awareness", ""),
    ("2026-03-01 09:00:00", "touch", "Organic Search", "/", "0.25"),
    ("2026-03-05 20:00:00", "stage", "", "lifecycle: consideration", ""),
    ("2026-03-05 20:00:00", "touch", "Paid Search", "/emergency", "0.25"),
    ("2026-03-05 20:03:00", "stage", "", "lifecycle: decision", ""),
    ("2026-03-05 20:03:00", "touch", "Paid Search", "Chat Started", ""),
    ("2026-03-05 20:03:00", "conversion", "", "lead #1", ""),
    ("2026-03-12 08:00:00", "touch", "Direct", "/contact", "0.25"),
    ("2026-03-12 08:01:00", "touch", "Direct", "identify", ""),
    ("2026-03-12 09:00:00", "touch", "Phone", "Phone Call", "0.25"),
    ("2026-03-12 09:00:00", "conversion", "", "call #1", ""),
    ("2026-03-20 10:00:00", "stage", "", "lifecycle: retention", ""),
    ("2026-03-20 10:00:00", "deal", "", "deal D1: Closed Won", ""),
    ("2026-03-20 10:00:00", "conversion", "", "deal_won #1", ""),
]


def test_johns_timeline_shows_each_of_his_touches_in_order(browser: Browser,
                                                          tmp_path: Path) -> None:
    settings = Settings(database_url=john_run_file(tmp_path / "john.duckdb", Settings()))
    made = CliRunner().invoke(cli, ["users", "create", "ann", "--password-stdin",
                                    "--database", settings.database_url],
                              input=PASSWORD + "\n")
    assert made.exit_code == 0, made.output
    shots = artifacts_folder("person-john")
    with serve_in_thread(create_app(settings)) as url, watched_page(browser, url) as watched:
        page = watched.page
        log_in(page, url, "ann", PASSWORD)
        for search in ("John@Gmail.com", "+1 (202) 555-0143"):
            page.goto(f"{url}/person?q={quote(search)}")
            page.wait_for_selector("#chart-person .main-svg", timeout=WAIT_MS)
            table = page.locator(".numbers[data-chart='person'] table")
            heads = [h.strip() for h in table.locator("thead th").all_text_contents()]
            rows = [dict(zip(heads, (c.strip() for c in r.locator("td").all_text_contents()),
                             strict=True)) for r in table.locator("tbody tr").all()]
            assert [(r["at"], r["kind"], r["channel"], r["detail"], r["credit"])
                    for r in rows] == JOHN_ROWS, search
            # one person, his deal's value on the won deal
            assert {r["person_id"] for r in rows if r["kind"] == "touch"} == {
                rows[1]["person_id"]}
            assert rows[-1]["value"] == "1,800"
        page.screenshot(path=str(shots / "john.png"), full_page=True)
    assert not watched.left, watched.left
    assert not watched.errors, watched.errors
