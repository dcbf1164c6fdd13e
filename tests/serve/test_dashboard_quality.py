"""The Data quality page over HTTP (no browser): bot share, duplicates merged, unmatched
calls, identity links cut, when data was last loaded and what the last run did, each from
the same data function as the report; a missing input is one line, never a 500; the footer
names who loaded last; every page has its icon (no /favicon.ico 404)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from browser_kit import serve_in_thread
from factories import CLI_OWN_CONNECTION
from serve_kit import build_quality_warehouse, build_warehouse

from touchline import engine, store
from touchline.collect.keys import create_key
from touchline.config import Settings
from touchline.serve.app import create_app

pytestmark = pytest.mark.duckdb_only(reason=CLI_OWN_CONNECTION)


def _client(folder: Path, build: object) -> Iterator[httpx.Client]:
    settings = Settings(database_url=f"duckdb:///{folder / 'wh.duckdb'}")
    with engine.connected(settings=settings) as con:
        build(con)  # type: ignore[operator]
        store.init(con)
        key, _ = create_key(con, name="reader", kind="read")
    with serve_in_thread(create_app(settings)) as url, httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as http:
        yield http


@pytest.fixture(scope="module")
def quality(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    yield from _client(tmp_path_factory.mktemp("quality"), build_quality_warehouse)


@pytest.fixture(scope="module")
def no_calls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    yield from _client(tmp_path_factory.mktemp("no-calls"), build_warehouse)


def _section(html: str, name: str) -> str:
    found = re.search(rf'<section id="{name}">(.*?)</section>', html, re.S)
    assert found, f"no section {name}"
    return found.group(1)


def test_the_quality_page_shows_each_figure(quality: httpx.Client) -> None:
    html = quality.get("/quality").text
    # the charts' titles carry the headline figures (serve_kit: build_quality_warehouse)
    assert "bot share: 25.0% of 12 rows read by prepare" in _section(html, "bot_share")
    assert "duplicates merged: 6 exact, 1 cross-source, 0 order" in _section(html,
                                                                            "duplicates")
    assert "unmatched calls: 2 of 6" in _section(html, "calls")
    assert "identity merges cut by the guards: 3 links (kept: 4)" in _section(
        html, "identity_cuts")
    fresh = _section(html, "freshness")
    assert "2025-04-20 10:00 UTC" in fresh and "by the collector (touchline serve)" in fresh
    assert "6 touches in 2 sessions of 1 persons; 3 journeys (2 converted)" in fresh
    assert "bad_timestamp" in _section(html, "data_quality")  # rejects by step and reason
    # the footer: the latest load, saying which, and the last run
    footer = re.search(r"<footer>(.*?)</footer>", html, re.S).group(1)  # type: ignore[union-attr]
    assert ("Data last loaded: 2025-04-20 10:00 UTC by the collector (touchline serve); "
            "files 2025-04-10 09:00 UTC. Last run: 2025-05-01 12:00 UTC") in footer


def test_a_date_range_says_which_window_each_figure_takes(quality: httpx.Client) -> None:
    html = quality.get("/quality?since=2025-06-01").text
    assert "the last prepare ran at 2025-05-01 12:00 UTC, outside it" in _section(
        html, "bot_share")
    assert "date range does not apply here: the identity graph is rebuilt whole" in (
        _section(html, "identity_cuts"))


def test_a_missing_input_is_one_line_not_a_500(no_calls: httpx.Client) -> None:
    page = no_calls.get("/quality")
    assert page.status_code == 200
    calls = _section(page.text, "calls")
    assert "no calls imported (call tracking)" in calls and "chart-calls" not in calls
    # serve_kit's warehouse was never loaded by the collector: the files say never too
    assert "Data last loaded: never (touchline ingest, or the collector" in page.text


def test_every_page_has_an_icon_and_favicon_ico_finds_it(quality: httpx.Client) -> None:
    login = httpx.get(f"{quality.base_url}/login")
    assert '<link rel="icon" href="/static/favicon.svg"' in login.text
    icon = httpx.get(f"{quality.base_url}/favicon.ico", follow_redirects=True)
    assert (icon.status_code, icon.headers["content-type"]) == (200, "image/svg+xml")
    assert icon.text.startswith("<svg")
