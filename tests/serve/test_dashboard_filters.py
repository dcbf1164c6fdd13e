"""The dashboard's answer to filters that are wrong or match nothing: a message that says
so, never a 500 and never numbers the filter did not shape (no browser: plain requests)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from browser_kit import serve_in_thread
from factories import CLI_OWN_CONNECTION
from serve_kit import build_warehouse

from touchline import engine, store
from touchline.collect.keys import create_key
from touchline.config import Settings
from touchline.serve.app import create_app

pytestmark = pytest.mark.duckdb_only(reason=CLI_OWN_CONNECTION)


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    path = Path(tmp_path_factory.mktemp("filters")) / "wh.duckdb"
    settings = Settings(database_url=f"duckdb:///{path}")
    with engine.connected(settings=settings) as con:
        build_warehouse(con)
        store.init(con)
        key, _ = create_key(con, name="reader", kind="read")
    with serve_in_thread(create_app(settings)) as url, httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as http:
        yield http


def test_a_bad_date_shows_its_error_and_no_numbers(client: httpx.Client) -> None:
    page = client.get("/?since=notadate")
    assert page.status_code == 200
    assert "since &#39;notadate&#39;: expected a date YYYY-MM-DD" in page.text
    assert 'class="chart"' not in page.text and "<section" not in page.text


def test_an_unknown_stage_model_is_said_with_the_choices(client: httpx.Client) -> None:
    page = client.get("/kpis?stage_model=lifecycel")
    assert page.status_code == 200
    assert "stage model &#39;lifecycel&#39; (did you mean &#39;lifecycle&#39;?): choose from" \
        in page.text
    assert "<section" not in page.text


def test_an_unknown_model_is_said_with_the_choices(client: httpx.Client) -> None:
    page = client.get("/?model=nope")
    assert page.status_code == 200
    assert "model &#39;nope&#39;: choose from last_non_direct, linear" in page.text
    assert "<section" not in page.text
    near = client.get("/channels?model=lineer")
    assert "model &#39;lineer&#39; (did you mean &#39;linear&#39;?)" in near.text


@pytest.mark.parametrize("path", ["/", "/channels", "/models", "/journeys"])
def test_since_after_until_is_the_same_error_on_every_page(client: httpx.Client,
                                                           path: str) -> None:
    page = client.get(f"{path}?since=2025-05-01&until=2025-04-01")
    assert page.status_code == 200
    assert "since 2025-05-01 is not before until 2025-04-01" in page.text
    assert "nothing matches these filters" not in page.text and "<section" not in page.text


def test_the_form_offers_the_stored_stage_models(client: httpx.Client) -> None:
    # serve_kit stores stages of lifecycle and funnel; Apply keeps the one in the URL
    page = client.get("/journeys?stage_model=funnel")
    assert page.status_code == 200
    form = page.text.split('<select name="stage_model">', 1)[1].split("</select>", 1)[0]
    assert "<option selected>funnel</option>" in form and "<option>lifecycle</option>" in form


def test_a_since_after_the_data_says_where_the_data_ends(client: httpx.Client) -> None:
    page = client.get("/?since=2030-01-01")
    assert page.status_code == 200
    # serve_kit's last purchase is on 20 April 2025; no until was given, so none is blamed
    assert "the last purchase conversion is on 2025-04-20" in page.text
    assert "is not before until" not in page.text


def test_the_kpi_page_lists_the_kpis_left_out(client: httpx.Client) -> None:
    page = client.get("/kpis")
    assert page.status_code == 200
    left = page.text.split('<details class="left-out">', 1)[1].split("</details>", 1)[0]
    # serve_kit imports no deals; retention is a table of cohorts
    assert "<code>retention</code>: a table" in left
    assert ("needs deals rows and the table is empty: import them with `touchline ingest "
            "FILE --kind deals`") in left


@pytest.mark.parametrize("path", ["/channels", "/models", "/journeys"])
def test_filters_that_match_nothing_say_so(client: httpx.Client, path: str) -> None:
    page = client.get(f"{path}?since=2030-01-01")
    assert page.status_code == 200
    assert "nothing matches these filters" in page.text


def test_an_unknown_campaign_says_nothing_matches_rather_than_zeros(
        client: httpx.Client) -> None:
    page = client.get("/?campaign=zzz")
    assert page.status_code == 200
    assert "no credited conversions or leads match campaign &#39;zzz&#39;" in page.text
