"""``touchline dashboard`` in Debian's Chromium: log in, every page with no console error and
no request leaving 127.0.0.1, the channel numbers equal to the Python API's under each model;
wrong passwords, write keys, stale forms and expired sessions refused."""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import httpx
import pytest
from browser_kit import WAIT_MS, artifacts_folder, chart_numbers, serve_in_thread
from serve_kit import build_warehouse
from typer.testing import CliRunner

from touchline import engine, store
from touchline.cli import app as cli
from touchline.collect.keys import create_key
from touchline.config import Settings
from touchline.metrics.kpis import compute
from touchline.serve import app as app_module
from touchline.serve.app import PAGES, create_app
from touchline.serve.sessions import LOGIN_FAILURES_PER_MINUTE, sessions_file_for

if TYPE_CHECKING:
    from playwright.sync_api import Browser

pytestmark = pytest.mark.duckdb_only(
    reason="the dashboard serves one DuckDB file from a thread of the test process, and the "
    "CLI creates its users with its own connection to that file")
PASSWORD = "correct horse battery"


@dataclass
class Live:
    url: str
    settings: Settings
    write_key: str
    read_key: str
    #: the Python API's credited conversions by channel under each model
    expected: dict[str, dict[str, float]]


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    folder = tmp_path_factory.mktemp("dashboard")
    # the CLI's own settings: DuckDB shares one open file only between equal configurations
    settings = Settings(database_url=f"duckdb:///{folder / 'wh.duckdb'}")
    con = engine.connect(settings=settings)
    build_warehouse(con)
    con.disconnect()
    runner = CliRunner()
    db = ["--database", settings.database_url]
    result = runner.invoke(cli, ["users", "create", "ann", "--password-stdin", *db],
                           input=PASSWORD + "\n")
    assert result.exit_code == 0, result.output
    assert "user ann created" in result.output
    again = runner.invoke(cli, ["users", "create", "ann", "--password-stdin", *db],
                          input=PASSWORD + "\n")
    assert again.exit_code == 2 and "user 'ann' exists already" in again.output
    short = runner.invoke(cli, ["users", "create", "bob", "--password-stdin", *db],
                          input="short\n")
    assert short.exit_code == 2 and "use at least 10" in short.output
    listed = runner.invoke(cli, ["users", "list", *db])
    assert "ann" in listed.output and "argon2" not in listed.output
    con = engine.connect(settings=settings)
    write_key, _ = create_key(con, name="web", kind="write")
    read_key, _ = create_key(con, name="reporting", kind="read")
    # the KPI registry's cost per acquisition holds every channel, also those with spend only
    expected = {model: dict(zip(*compute(con, "cpa", by=["channel"], model=model).to_pandas()[
        ["channel", "conversions"]].T.to_numpy(), strict=True)) for model in ("linear",
                                                                                "last_touch")}
    con.disconnect()  # the dashboard opens the file for each request, holding no lock idle
    truth = folder / "truth.json"  # serve_kit's channels as the simulator names them
    truth.write_text(json.dumps({"b2b": False, "channels": {
        "email": {"incremental_conversions": 1.0}, "paid_search": {
            "incremental_conversions": 3.0}}}))
    with serve_in_thread(create_app(settings, truth=[truth])) as url:
        yield Live(url, settings, write_key, read_key, expected)


def test_every_page_in_chromium_after_logging_in(live: Live, browser: Browser) -> None:
    artifacts = artifacts_folder("dashboard")  # kept after the run: test-artifacts/dashboard
    host = urlsplit(live.url).netloc
    context = browser.new_context()
    left: list[str] = []
    errors: list[str] = []

    def route(r):  # type: ignore[no-untyped-def]
        parts = urlsplit(r.request.url)
        if parts.scheme in ("data", "blob") or parts.netloc == host:
            r.continue_()
        else:
            left.append(r.request.url)
            r.abort()

    context.route("**/*", route)
    page = context.new_page()
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))

    # not logged in: the login form, which refuses a wrong password
    page.goto(f"{live.url}/channels?model=linear")
    assert urlsplit(page.url).path == "/login"
    page.fill("input[name=name]", "ann")
    page.fill("input[name=password]", "wrong password!")
    with page.expect_response(lambda r: r.url.endswith("/login")) as refused:
        page.click("button[type=submit]")
    assert refused.value.status == 401
    assert page.locator(".error").inner_text() == "wrong name or password"
    page.screenshot(path=str(artifacts / "login-refused.png"))
    errors.clear()  # the browser logs the 401 itself as a console error
    page.fill("input[name=name]", "ann")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live.url}/channels?model=linear")
    cookie = next(c for c in context.cookies() if c["name"] == "touchline_session")
    assert (cookie["httpOnly"], cookie["sameSite"]) == (True, "Strict")
    assert cookie["expires"] > time.time() + 3600

    # the channel page: the Python API's numbers; switching the model moves the credits
    page.wait_for_selector("#chart-channels .main-svg", timeout=WAIT_MS)
    linear = chart_numbers(page, "channels", "channel", "conversions")
    assert linear == pytest.approx(live.expected["linear"]) and linear["Email"] == 2.5
    page.select_option("select[name=model]", "last_touch")
    page.click("form.filters button[type=submit]")
    page.wait_for_url("**model=last_touch**")
    page.wait_for_selector("#chart-channels .main-svg", timeout=WAIT_MS)
    last = chart_numbers(page, "channels", "channel", "conversions")
    assert last == pytest.approx(live.expected["last_touch"])
    assert last["Paid Search"] == 2.0 != linear["Paid Search"]
    page.screenshot(path=str(artifacts / "channels-last_touch.png"), full_page=True)

    # the device and B2B/B2C filters are in the URL too: on mobile only the two paid clicks
    page.select_option("select[name=device]", "mobile")
    page.select_option("select[name=unit]", "person")
    page.click("form.filters button[type=submit]")
    page.wait_for_url("**device=mobile**")
    page.wait_for_selector("#chart-channels .main-svg", timeout=WAIT_MS)
    assert chart_numbers(page, "channels", "channel", "conversions") == {"Paid Search": 2.0}
    assert "unit=person&device=mobile" in (page.locator("nav a").first.get_attribute("href")
                                           or "")
    page.goto(f"{live.url}/channels?device=phone")
    assert "device 'phone': choose from desktop" in page.locator(".error").inner_text()
    # the channel and campaign filters: Paid Search's campaigns under last touch (both
    # March sales closed by a spring click), kept in the navigation; a chart that cannot
    # apply one says so
    page.goto(f"{live.url}/channels?model=last_touch")
    page.select_option("select[name=channel]", "Paid Search")
    page.select_option("select[name=by]", "campaign")
    page.click("form.filters button[type=submit]")
    page.wait_for_url("**channel=Paid+Search**")
    page.wait_for_selector("#chart-channels .main-svg", timeout=WAIT_MS)
    assert chart_numbers(page, "channels", "campaign", "conversions") == {"spring": 2.0}
    assert "channel=Paid+Search" in (page.locator("nav a").first.get_attribute("href") or "")
    page.goto(f"{live.url}/kpis?campaign=spring")
    assert "campaign does not apply here: the KPIs are headlines" in (
        page.locator("#stage_kpis .filter-note").inner_text())
    # the overview under the device filter: April's purchases p1#2 (50), p3 (80, no touch)
    # and p4 (30); on a tablet only p1#2's newsletter visit, credited 1 by linear
    april = f"{live.url}/?since=2025-04-01&until=2025-05-01&model=linear"
    page.goto(april)
    page.wait_for_selector("#chart-overview .main-svg", timeout=WAIT_MS)
    every = chart_numbers(page, "overview", "metric", "value")
    assert (every["conversions"], every["revenue"]) == (3.0, 160.0)
    page.select_option("select[name=device]", "tablet")
    page.click("form.filters button[type=submit]")
    page.wait_for_url("**device=tablet**")
    page.wait_for_selector("#chart-overview .main-svg", timeout=WAIT_MS)
    tablet = chart_numbers(page, "overview", "metric", "value")
    assert (tablet["conversions"], tablet["revenue"]) == (1.0, 50.0) != (
        every["conversions"], every["revenue"])
    assert math.isnan(tablet["spend"])  # spend is not split by device
    # a filter a chart leaves aside is said on the page, with why
    page.goto(f"{live.url}/quality?device=mobile")
    assert "device does not apply here: rejected records never reached the journeys" in (
        page.locator("#data_quality .filter-note").inner_text())

    # every page, with the filters of the URL kept in the navigation
    charts = {"overview": 1, "channels": 1, "models": 2, "journeys": 2, "funnel": 2, "kpis": 1,
              "customers": 4, "quality": 5}  # quality: no calls imported (said instead)
    for name, count in charts.items():
        page.goto(f"{live.url}{PAGES[name].path}?model=last_touch")
        page.wait_for_function(f"document.querySelectorAll('.js-plotly-plot .main-svg')"
                               f".length >= {count}", timeout=WAIT_MS)
        assert page.locator(".js-plotly-plot").count() == count, name
        assert "model=last_touch" in (page.locator("nav a").first.get_attribute("href") or "")
        if name == "models":  # beside the bars, the ranking against the truth (first sales:
            # last touch 1/3 e-mail, 2/3 paid; linear 1/2, 1/6 organic, 1/3; truth 1/4, 3/4)
            ranking = chart_numbers(page, "model_ranking", "model", "l1_share")
            assert ranking == pytest.approx({"last_touch": 1 / 6, "linear": 5 / 6}, rel=1e-3)
        if name == "funnel":  # the funnel says which it is, in one line
            assert ("cumulative funnel: a person counts at every step up to the furthest one "
                    "it reached") in page.locator("#funnel").inner_text()
        page.screenshot(path=str(artifacts / f"{name}.png"), full_page=True)
    # the person search: p1 by e-mail, her touches in time order
    page.goto(f"{live.url}/person")
    page.fill("input[name=q]", "ann@example.com")
    page.click("form.filters button[type=submit]")
    page.wait_for_selector("#chart-person .main-svg", timeout=WAIT_MS)
    table = page.locator(".numbers[data-chart='person'] tbody tr")
    details = [r.locator("td").nth(9).inner_text() for r in table.all()
               if r.locator("td").nth(1).inner_text() == "touch"]
    assert details == ["/", "/pricing", "Order Completed", "/news", "Order Completed"]
    page.screenshot(path=str(artifacts / "person.png"), full_page=True)
    page.goto(f"{live.url}/person?q=nobody%40example.com")
    assert "no person or account is named" in page.locator("#person .note").inner_text()

    page.click("text=Log out")
    page.wait_for_url("**/login")
    page.goto(f"{live.url}/")
    assert urlsplit(page.url).path == "/login"
    context.close()
    assert not left, left
    assert not errors, errors
    assert len(list(artifacts.glob("*.png"))) == 11


def test_keys_stale_forms_and_expired_sessions_are_refused(live: Live) -> None:
    now = [1_000_000.0]
    application = create_app(live.settings, session_seconds=60, clock=lambda: now[0])
    # while the dashboard is up, another process may write the warehouse (touchline run)
    result = subprocess.run(
        [sys.executable, "-m", "touchline", "users", "create", "bob", "--password-stdin",
         "--database", live.settings.database_url], input=PASSWORD + "\n", text=True,
        capture_output=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert httpx.get(f"{live.url}/login").status_code == 200
    # in a thread of its own: Playwright's sync API keeps an event loop running in this one
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, _refusals(application, live, now)).result()


async def _refusals(application: object, live: Live, now: list[float]) -> None:
    transport = httpx.ASGITransport(app=application)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        write = await client.get("/channels",
                                 headers={"Authorization": f"Bearer {live.write_key}"})
        assert write.status_code == 403 and "a write key cannot read" in write.text
        unknown = await client.get("/", headers={"X-Touchline-Key": "tlr_not-a-key"})
        assert unknown.status_code == 401
        read = await client.get("/channels",
                                headers={"Authorization": f"Bearer {live.read_key}"})
        assert read.status_code == 200 and "Paid Search" in read.text
        assert "script-src 'self' 'nonce-" in read.headers["content-security-policy"]
        # started without --truth: the model comparison says there is none to rank against
        models = await client.get("/models", headers={"X-Touchline-Key": live.read_key})
        assert models.status_code == 200 and "no ground-truth file, so no ranking" in models.text
        # a login form posted without its CSRF cookie (another site's form) is refused
        forged = await client.post("/login", data={"name": "ann", "password": PASSWORD,
                                                   "csrf": "guess"})
        assert forged.status_code == 403 and "touchline_session" not in client.cookies
        form = await client.get("/login")
        csrf = form.cookies["touchline_csrf"]
        assert f'name="csrf" value="{csrf}"' in form.text
        ok = await client.post("/login", data={"name": "ann", "password": PASSWORD,
                                               "csrf": csrf, "next": "//evil.example/"})
        assert ok.status_code == 303 and ok.headers["location"] == "/"
        set_cookie = ok.headers["set-cookie"].lower()
        assert "httponly" in set_cookie and "samesite=strict" in set_cookie
        assert "max-age=60" in set_cookie
        assert (await client.get("/quality")).status_code == 200
        now[0] += 61  # the session expires
        expired = await client.get("/quality")
        assert expired.status_code == 303
        assert expired.headers["location"] == "/login?next=%2Fquality"


def _log_in(client: httpx.Client, password: str) -> httpx.Response:
    form = client.get("/login")  # its CSRF cookie goes to the client's jar
    return client.post("/login", data={"name": "ann", "password": password,
                                       "csrf": form.cookies["touchline_csrf"], "next": "/"})


def test_a_session_survives_a_restart_and_is_kept_hashed(live: Live, tmp_path: Path) -> None:
    kept = tmp_path / "wh.duckdb.sessions"
    with serve_in_thread(create_app(live.settings, sessions_file=kept)) as url, httpx.Client(
            base_url=url) as client:
        ok = _log_in(client, PASSWORD)
        assert ok.status_code == 303
        token = ok.cookies["touchline_session"]
        assert client.get("/quality").status_code == 200
    stored = kept.read_bytes()
    assert token.encode() not in stored  # only its SHA-256 is kept
    assert hashlib.sha256(token.encode()).hexdigest().encode() in stored
    assert kept.stat().st_mode & 0o077 == 0  # readable by its owner only
    # a new server process on another port, the same file: still logged in, until logging out
    with serve_in_thread(create_app(live.settings, sessions_file=kept)) as url, httpx.Client(
            base_url=url, cookies={"touchline_session": token}) as client:
        page = client.get("/quality")
        assert page.status_code == 200 and "Log out" in page.text
        csrf = page.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        assert client.post("/logout", data={"csrf": csrf}).status_code == 303
        gone = client.get("/quality")
        assert gone.status_code == 303 and gone.headers["location"].startswith("/login")
    # next to a DuckDB warehouse by default; in memory for an in-memory or Spark one
    assert sessions_file_for("duckdb:////srv/wh.duckdb") == Path("/srv/wh.duckdb.sessions")
    assert sessions_file_for("duckdb:///rel/wh.duckdb") == Path("rel/wh.duckdb.sessions")
    assert sessions_file_for("duckdb://") is None
    assert sessions_file_for("spark://local[2]") is None


def test_failed_logins_from_one_address_are_limited(live: Live, tmp_path: Path) -> None:
    now = [2_000_000.0]
    application = create_app(live.settings, sessions_file=tmp_path / "s.sessions",
                             clock=lambda: now[0])
    with serve_in_thread(application) as url, httpx.Client(base_url=url) as client:
        for _ in range(LOGIN_FAILURES_PER_MINUTE):
            assert _log_in(client, "not the password").status_code == 401
            now[0] += 1.0
        # the sixth attempt within the minute is refused before any password is checked,
        # even the right one; the wait is until the first failure leaves the window
        limited = _log_in(client, PASSWORD)
        assert limited.status_code == 429
        assert limited.headers["retry-after"] == str(60 - LOGIN_FAILURES_PER_MINUTE)
        assert "too many failed logins: try again in 55 seconds" in limited.text
        now[0] += 30.0
        assert _log_in(client, PASSWORD).headers["retry-after"] == "25"
        now[0] += 25.0  # the first failure has left the window: one more try is allowed
        assert _log_in(client, PASSWORD).status_code == 303
        # a success clears the count
        client.cookies.clear()  # logged in, /login would send the browser on
        assert _log_in(client, "not the password").status_code == 401
        assert _log_in(client, PASSWORD).status_code == 303


def test_pages_are_kept_until_the_warehouse_is_written(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(database_url=f"duckdb:///{tmp_path / 'wh.duckdb'}")
    with engine.connected(settings=settings) as con:
        build_warehouse(con)
        store.init(con)  # the keys table
        key, _ = create_key(con, name="reporting", kind="read")
    drawn: list[str] = []
    searched: list[str] = []
    real_draw, real_person = app_module.draw, app_module._person_section

    def draw(con: object, name: str, filters: object, given: object = ()) -> object:
        drawn.append(name)
        return real_draw(con, name, filters, given)  # type: ignore[arg-type]

    def person(con: object, query: str, *args: object) -> object:
        searched.append(query)
        return real_person(con, query, *args)  # type: ignore[arg-type]

    offered: list[object] = []  # the filter form's options, asked
    real_options = app_module._options

    def options(con: object) -> object:
        offered.append(con)
        return real_options(con)  # type: ignore[arg-type]

    monkeypatch.setattr(app_module, "draw", draw)
    monkeypatch.setattr(app_module, "_person_section", person)
    monkeypatch.setattr(app_module, "_options", options)
    headers = {"Authorization": f"Bearer {key}"}

    def email_credit(client: httpx.Client, query: str = "") -> str:
        page = client.get(f"/channels{query}", headers=headers)
        assert page.status_code == 200 and "page;dur=" in page.headers["server-timing"]
        row = page.text.split("<td>Email</td>", 1)[1]
        return row.split("<td>", 2)[2].split("</td>", 1)[0]  # after touches: conversions

    with serve_in_thread(create_app(settings)) as url, httpx.Client(base_url=url) as client:
        # linear: Email's 1/2 of p2's first sale, p1's second and p4's sale (serve_kit)
        assert email_credit(client) == email_credit(client) == "2.5"
        assert drawn == ["channels"]  # the second time from the kept page
        assert email_credit(client, "?model=last_touch") == "2"  # other filters: computed
        assert drawn == ["channels", "channels"]
        # a person search is computed each time, never kept
        for _ in range(2):
            assert client.get("/person?q=ann%40example.com", headers=headers).status_code == 200
        assert searched == ["ann@example.com", "ann@example.com"]
        # the form's options are every page's: asked when the dashboard started, kept since
        assert len(offered) == 1
        # another process writes the warehouse (as `touchline run` would): computed anew
        with engine.connected(settings=settings) as con:
            con.raw_sql("UPDATE credits SET credit = 2 * credit WHERE channel = 'Email' "
                        "AND model = 'linear'")
        assert email_credit(client) == "5"
        assert drawn == ["channels", "channels", "channels"]
        assert len(offered) == 2  # ... and asked again of the written warehouse


def test_a_pages_lanes_must_hold_each_of_its_charts_once() -> None:
    # the journey map beside the stage timeline; the funnel beside its split by channel
    assert app_module.PAGES["journeys"].lanes == (("journey_map",), ("stages",))
    assert app_module.PAGES["funnel"].lanes == (("funnel",), ("funnel_channels",))
    with pytest.raises(ValueError, match="lanes"):
        app_module.Page("x", "/x", "X", ("a", "b"), lanes=(("a",),))
    with pytest.raises(ValueError, match="lanes"):
        app_module.Page("x", "/x", "X", ("a", "b"), lanes=(("a", "b"), ("b",)))
