"""t.js in a real browser: Debian's chromium driven by Playwright, page on another origin.

Skipped when /usr/bin/chromium is absent (``make browser`` installs it; CI runs it).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from collector_kit import LiveCollector, Warehouse, make_settings, make_warehouse
from factories import CHROMIUM

if TYPE_CHECKING:
    from playwright.sync_api import Browser

PAGES = Path(__file__).resolve().parents[2] / "tracker" / "test-pages"
WAIT_MS = 10_000

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="no /usr/bin/chromium (make browser)")


class _PageHandler(SimpleHTTPRequestHandler):
    """Serves the test page for any path (an SPA), with the collector URL and key filled in."""

    def __init__(self, *args: object, collector: str, key: str, **kwargs: object) -> None:
        self.collector, self.key = collector, key
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def do_GET(self) -> None:
        html = (PAGES / "landing.html").read_text()
        consent = parse_qs(urlsplit(self.path).query).get("consent", ["granted"])[0]
        for name, value in (("COLLECTOR", self.collector), ("KEY", self.key), ("CONSENT", consent)):
            html = html.replace("{{" + name + "}}", value)
        body = html.encode()
        self.send_response(200)
        self.send_header("content-type", "text/html; charset=utf-8")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the test output is the assertion."""




@pytest.fixture
def site(
    tmp_path: Path, start_collector: Callable[[Warehouse], LiveCollector]
) -> Iterator[tuple[str, LiveCollector]]:
    settings = make_settings(
        tmp_path,
        dni_pools={"google/cpc": ["+1 555 010 0001", "+1 555 010 0002"]},
        tracker_strip_params=["invite"],
    )
    live = start_collector(make_warehouse(settings))
    handler = partial(_PageHandler, collector=live.url, key=live.warehouse.write_key)
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", live
    server.shutdown()
    server.server_close()
    thread.join(10)


def test_tracker_records_a_journey_in_chromium(
    site: tuple[str, LiveCollector], browser: Browser
) -> None:
    url, live = site
    campaign = "utm_source=google&utm_medium=cpc&utm_campaign=spring&utm_term=crm&gclid=G123"
    landing = f"{url}/landing?{campaign}"
    page = browser.new_page()
    page.goto(landing)
    page.wait_for_function(
        "document.getElementById('phone').textContent === '+15550100001'", timeout=WAIT_MS
    )
    phone_href = page.get_attribute("#phone", "href")
    page.click("#nav")
    page.click("#cta")
    page.fill("#email", " Ann@Example.com")
    page.fill("#company", "Acme")
    page.fill("#secret", "hunter2")
    page.click("#submit")
    page.wait_for_function("touchline && document.getElementById('lead').dataset.sent")
    anonymous_id = page.evaluate("touchline.anonymousId()")
    page.evaluate("touchline.flush()")
    page.close()  # pagehide: anything still queued goes out by sendBeacon
    assert phone_href == "tel:+15550100001"

    live.warehouse.load()
    rows = live.warehouse.query(
        "SELECT type, event, path, referrer, utm_source, utm_medium, utm_campaign, utm_term, "
        "gclid, email, anonymous_id, properties, context FROM events ORDER BY timestamp, type"
    )
    summary = [(r[0], r[1], r[2], r[4], r[5], r[6], r[7], r[8]) for r in rows]
    session = ("google", "cpc", "spring", "crm", "G123")
    assert summary == [
        ("page", None, "/landing", *session),
        ("page", None, "/pricing", *session),
        ("track", "CTA Clicked", "/pricing", *session),
        ("identify", None, "/pricing", *session),
        ("track", "Form Submitted", "/pricing", *session),
    ]
    assert {r[10] for r in rows} == {anonymous_id}
    assert rows[1][3] == landing  # the SPA page's referrer is the page before it
    assert json.loads(rows[2][11])["cta"] == "book-demo"
    assert rows[3][9] == "ann@example.com"
    form = json.loads(rows[4][11])
    assert form == {
        "form": "demo-request",
        "fields": {"email": "Ann@Example.com", "company": "Acme"},
    }
    sessions = {json.loads(r[12])["sessionId"] for r in rows}
    assert len(sessions) == 1
    assert live.warehouse.query(
        "SELECT number, pool, status, anonymous_id, session_id, utm_term FROM number_leases"
    ) == [("+15550100001", "google/cpc", "leased", anonymous_id, sessions.pop(), "crm")]


STORAGE = "[document.cookie, Object.keys(localStorage).filter(k => k.startsWith('tl_')).length]"


def test_pending_consent_stores_and_sends_nothing_until_granted(
    site: tuple[str, LiveCollector], browser: Browser
) -> None:
    url, live = site
    page = browser.new_page()
    page.goto(f"{url}/landing?consent=pending&utm_source=news")
    page.wait_for_function("window.touchline && touchline.loaded")
    page.click("#cta")
    before = page.evaluate(STORAGE)
    page.wait_for_timeout(1_500)  # longer than t.js's 1 s flush timer
    sent_before = live.app.stats["accepted"]
    page.evaluate("touchline.consent('granted')")
    page.wait_for_function("document.cookie.includes('tl_aid=')", timeout=WAIT_MS)
    anonymous_id = page.evaluate("touchline.anonymousId()")
    page.evaluate("touchline.flush()")
    page.close()
    assert (before, sent_before) == (["", 0], 0)
    live.warehouse.load()
    assert live.warehouse.query(
        "SELECT type, event, anonymous_id, utm_source FROM events ORDER BY timestamp"
    ) == [("page", None, anonymous_id, "news"), ("track", "CTA Clicked", anonymous_id, "news")]


def test_cookieless_mode_counts_pages_without_storage(
    site: tuple[str, LiveCollector], browser: Browser
) -> None:
    url, live = site
    page = browser.new_page()
    page.goto(f"{url}/landing?consent=cookieless")
    page.wait_for_function("window.touchline && touchline.loaded")
    page.click("#nav")
    page.evaluate("touchline.flush()")
    stored = page.evaluate(STORAGE)
    page.close()
    assert stored == ["", 0]
    live.warehouse.load()
    rows = live.warehouse.query("SELECT type, path, anonymous_id FROM events ORDER BY timestamp")
    assert [(t, p) for t, p, _ in rows] == [("page", "/landing"), ("page", "/pricing")]
    assert all(a.startswith("cookieless-") for _, _, a in rows)


def test_refused_consent_drops_what_waited_and_sends_only_later_cookieless_events(
    site: tuple[str, LiveCollector], browser: Browser
) -> None:
    url, live = site
    page = browser.new_page()
    page.goto(f"{url}/landing?consent=pending&utm_source=news#access_token=F1")
    page.wait_for_function("window.touchline && touchline.loaded")
    page.evaluate("touchline.identify('u-7', {email: 'ann@example.com', phone: '555'})")
    page.fill("#email", "ann@example.com")
    page.click("#submit")
    page.wait_for_function("document.getElementById('lead').dataset.sent")
    page.evaluate("touchline.consent('denied')")
    page.wait_for_timeout(1_500)  # longer than t.js's 1 s flush timer
    sent_after_refusal = live.app.stats["accepted"]
    page.evaluate("touchline.track('Pricing Viewed')")
    page.evaluate("touchline.flush()")
    page.close()
    assert sent_after_refusal == 0
    live.warehouse.load()
    rows = live.warehouse.query("SELECT type, event, anonymous_id, user_id, email FROM events")
    assert [(t, e, u, m) for t, e, _, u, m in rows] == [("track", "Pricing Viewed", None, None)]
    assert str(rows[0][2]).startswith("cookieless-")


SECRETS = ("T1", "T2", "I1", "F1", "hunter2")


def test_fragments_and_secret_query_parameters_never_leave_the_page(
    site: tuple[str, LiveCollector], browser: Browser
) -> None:
    url, live = site
    query = "utm_source=google&access_token=T1&Token=T2&invite=I1&keep=caf%E9&gclid=G1"
    sent = f"{url}/landing?utm_source=google&keep=caf%E9&gclid=G1"
    page = browser.new_page()
    page.goto(f"{url}/landing?{query}#access_token=F1&password=hunter2")
    page.wait_for_function("window.touchline && touchline.loaded")
    page.click("#nav")
    page.evaluate("touchline.flush()")
    page.close()
    live.warehouse.load()
    rows = live.warehouse.query(
        "SELECT path, url, referrer, gclid, properties, context FROM events ORDER BY timestamp"
    )
    assert [r[:4] for r in rows] == [
        ("/landing", sent, None, "G1"),
        ("/pricing", f"{url}/pricing", sent, "G1"),
    ]
    assert json.loads(rows[0][4])["search"] == "?utm_source=google&keep=caf%E9&gclid=G1"
    text = repr(rows)
    assert [s for s in SECRETS if s in text] == []


def test_cookie_is_secure_on_https_pages_only(
    site: tuple[str, LiveCollector], browser: Browser
) -> None:
    from playwright.sync_api import Route

    url, live = site
    tracker = httpx.get(f"{live.url}/t.js").text
    html = (PAGES / "landing.html").read_text().replace("{{COLLECTOR}}", "https://shop.test")
    html = html.replace("{{KEY}}", live.warehouse.write_key).replace("{{CONSENT}}", "granted")

    def serve(route: Route) -> None:
        is_js = route.request.url.endswith("/t.js")
        route.fulfill(
            status=200,
            content_type="application/javascript" if is_js else "text/html",
            body=tracker if is_js else html,
        )

    context = browser.new_context()
    context.route("https://shop.test/**", serve)
    page = context.new_page()
    for address in ("https://shop.test/landing", f"{url}/landing"):
        page.goto(address)
        page.wait_for_function("document.cookie.includes('tl_aid=')", timeout=WAIT_MS)
    secure = {c["domain"]: c["secure"] for c in context.cookies() if c["name"] == "tl_aid"}
    assert secure == {"shop.test": True, "127.0.0.1": False}
