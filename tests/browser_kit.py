"""What the browser tests share: an app served on a free port of 127.0.0.1 in a thread, a
Chromium page that records console errors and refuses every request leaving that server, the
numbers table under a chart, and the folder where screenshots are kept after the run."""

from __future__ import annotations

import math
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import uvicorn

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

#: screenshots of the browser tests, kept after ``make test`` (ignored by git)
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
WAIT_MS = 20_000


def artifacts_folder(name: str) -> Path:
    """An emptied ``test-artifacts/<name>`` folder: one per test, so parallel workers never
    write into each other's."""
    folder = ARTIFACTS / name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


@contextmanager
def serve_in_thread(application: object) -> Iterator[str]:
    """``application`` served by uvicorn on a free port of 127.0.0.1 in a thread: its URL."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(application, log_level="warning",  # type: ignore[arg-type]
                                           access_log=False, lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@dataclass
class Watched:
    """A page of a fresh browser context, with what went wrong on it so far."""

    page: Page
    #: console errors and uncaught exceptions
    errors: list[str] = field(default_factory=list)
    #: requests that would have left the server (refused)
    left: list[str] = field(default_factory=list)


@contextmanager
def watched_page(browser: Browser, url: str) -> Iterator[Watched]:
    """A page whose requests may reach ``url``'s server (and ``data:``/``blob:``) only."""
    host = urlsplit(url).netloc
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    watched = Watched(page)

    def route(r):  # type: ignore[no-untyped-def]
        parts = urlsplit(r.request.url)
        if parts.scheme in ("data", "blob") or parts.netloc == host:
            r.continue_()
        else:
            watched.left.append(r.request.url)
            r.abort()

    context.route("**/*", route)
    page.on("console", lambda m: watched.errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda exc: watched.errors.append(str(exc)))
    try:
        yield watched
    finally:
        context.close()


def chart_numbers(page: Page, chart: str, key: str, column: str) -> dict[str, float]:
    """A chart's table of numbers as {key column: value column} read from the page (values
    as the page prints them: thousands separators, four significant digits)."""
    table = page.locator(f".numbers[data-chart='{chart}'] table")
    # text contents: a closed <details> has no rendered (inner) text
    heads = [h.strip() for h in table.locator("thead th").all_text_contents()]
    out = {}
    for row in table.locator("tbody tr").all():
        cells = dict(zip(heads, (c.strip() for c in row.locator("td").all_text_contents()),
                         strict=True))
        text = cells[column].replace(",", "")
        try:
            out[cells[key]] = float(text) if text else math.nan
        except ValueError:  # a word ("new", "-"): not a number
            out[cells[key]] = math.nan
    return out


def log_in(page: Page, url: str, name: str, password: str) -> None:
    """Log in through the login form (its CSRF token included, as a browser sends it)."""
    page.goto(f"{url}/login")
    page.fill("input[name=name]", name)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_url(f"{url}/")
