"""The dashboard: server-rendered pages over the stored tables, behind a login.

``touchline dashboard`` serves :func:`create_app` on 127.0.0.1 (its own port, so the public
collector runs without it). Pages: overview, channels (the attribution model in the URL:
switching it moves the credits), model comparison, journey map (with the stage timeline and
the funnel), KPIs by stage, retention and advocacy (cohorts, CLV, NPS and reviews by channel),
person timeline with search, data quality. Every filter is a query parameter,
so a view can be shared as its URL. The charts are :mod:`touchline.serve.figures`', drawn by
plotly.js served from the installed ``plotly`` package: a page asks nothing of any other
host.

Access: a user of the ``users`` table logs in with the form (argon2id hashes, a CSRF token
bound to a cookie, a session cookie that is HttpOnly, SameSite=Strict and expires after
``session_seconds``), or a program sends a ``read`` or ``admin`` API key in the
``Authorization: Bearer`` (or ``X-Touchline-Key``) header. Write, server and import keys,
which sit in web pages and webhooks, can never read. Sessions are kept hashed in a file next to
the warehouse and survive a restart; too many failed logins from one address are answered 429
(:mod:`touchline.serve.sessions`). Nothing personal (names searched, e-mails, user names) is
logged.
"""

from __future__ import annotations

import hmac
import logging
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlencode, urlsplit

import ibis
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from touchline import engine
from touchline.errors import ConfigError, EngineError, TouchlineError, did_you_mean
from touchline.formatting import parse_day
from touchline.serve.figures import (
    DEVICES,
    FILTER_LABELS,
    UNITS,
    Filters,
    check_filters,
    filters_not_applied,
    freshness,
    last_loaded_text,
    person_timeline_data,
    person_timeline_figure,
    preload,
)
from touchline.serve.report import (
    TEMPLATES,
    Section,
    css,
    data_table,
    draw,
    figure_json,
    plotly_js,
    templates,
)
from touchline.serve.sessions import LoginLimiter, Session, SessionStore, sessions_file_for

if TYPE_CHECKING:
    from ibis.backends import BaseBackend

    from touchline.config import Settings

log = logging.getLogger(__name__)

SESSION_SECONDS_DEFAULT = 8 * 3600
#: pages kept, per warehouse state (each a few charts' small frames and JSON)
PAGE_CACHE_SIZE_DEFAULT = 128
SESSION_COOKIE, CSRF_COOKIE = "touchline_session", "touchline_csrf"
#: key kinds that may read the dashboard (touchline.collect.keys.KEY_KINDS)
READ_KINDS = ("read", "admin")
#: where :class:`PageCache` keeps the filter form's options (no page's key is one item long)
OPTIONS_KEY = ("options",)
#: the filters the navigation carries from page to page
SHARED_FILTERS = ("since", "until", "conversion", "model", "stage_model", "unit", "device",
                  "channel", "campaign")


@dataclass(frozen=True)
class Page:
    """A dashboard page: its path, title and the charts it draws.

    ``lanes``: the charts drawn side by side, each group one after another on a connection
    of its own (:func:`touchline.engine.side_by_side`; by default all on one): while one
    lane's query runs in the engine, the other builds and compiles its next. Charts that ask
    the same query share a lane (a lane keeps the answers of its own connection only).
    ``shared``: the charts read the same KPI intermediates (each person's first session, the
    answers and reviews matched to people, the purchases), computed once for the page and
    kept in memory (:func:`touchline.metrics.kpis.computed_once`), not once per chart."""

    name: str
    path: str
    title: str
    charts: tuple[str, ...]
    lanes: tuple[tuple[str, ...], ...] = ()
    shared: bool = False

    def __post_init__(self) -> None:
        if self.lanes and sorted(c for lane in self.lanes for c in lane) != sorted(
                self.charts):
            raise ValueError(f"page {self.name!r}: its lanes {self.lanes} do not hold each "
                             f"of its charts {self.charts} once")


PAGES = {p.name: p for p in (
    Page("overview", "/", "Overview", ("overview",)),
    Page("channels", "/channels", "Channels", ("channels",)),
    Page("models", "/models", "Model comparison", ("models", "model_ranking")),
    # the Sankey and the stage timeline side by side (each about half the page)
    Page("journeys", "/journeys", "Journey map", ("journey_map", "stages"),
         lanes=(("journey_map",), ("stages",))),
    # the funnel and its split by first-touch channel: a page of their own (the issue's
    # Funnel page), each on a lane (together on the journey map they passed 1 s)
    Page("funnel", "/funnel", "Funnel", ("funnel", "funnel_channels"),
         lanes=(("funnel",), ("funnel_channels",))),
    Page("kpis", "/kpis", "KPIs by stage", ("stage_kpis",)),
    Page("customers", "/customers", "Retention and advocacy",
         ("retention", "clv", "nps", "reviews"), shared=True),
    Page("person", "/person", "Person timeline", ()),
    Page("quality", "/quality", "Data quality",
         ("freshness", "data_quality", "bot_share", "duplicates", "calls", "identity_cuts")),
)}


@dataclass
class PageCache:
    """The computed pages of one warehouse state: least recently used first out, all out when
    the state changes (:func:`touchline.engine.warehouse_version`). Only the event loop's
    thread reads and writes it."""

    size: int
    version: str | None = None
    entries: OrderedDict[tuple[Any, ...], Any] = field(default_factory=OrderedDict)

    def get(self, version: str | None, key: tuple[Any, ...]) -> Any | None:
        """The page stored under ``key`` while the warehouse is at ``version``, or None."""
        if version is None or version != self.version:
            return None
        found = self.entries.get(key)
        if found is not None:
            self.entries.move_to_end(key)
        return found

    def put(self, version: str | None, key: tuple[Any, ...], value: Any) -> None:
        """Keep ``value`` for ``key`` at ``version`` (nothing without a version)."""
        if version is None:
            return
        if version != self.version:
            self.entries.clear()
            self.version = version
        self.entries[key] = value
        while len(self.entries) > self.size:
            self.entries.popitem(last=False)


@dataclass
class Dashboard:
    """The app's state: the warehouse (queries take turns on it) and the sessions.

    ``con`` is one connection kept open (Spark, or one given by the caller); with ``con``
    None each request opens the DuckDB file and closes it after, so the dashboard never holds
    DuckDB's one writer lock while idle: ``touchline run`` can rewrite the tables while it is
    up (a request during the write is answered 503, try again)."""

    settings: Settings
    con: BaseBackend | None
    session_seconds: int
    sessions: SessionStore
    lock: threading.Lock = field(default_factory=threading.Lock)
    limiter: LoginLimiter = field(default_factory=LoginLimiter)
    clock: Callable[[], float] = time.time
    #: ground-truth files the model comparison ranks the models against (``--truth``)
    truth: tuple[Path, ...] = ()
    #: the pages computed since the warehouse was last written, by page, filters and search
    #: (:class:`PageCache`): a page is the same until ``ingest``, ``prepare`` or ``run`` write
    pages: PageCache = field(default_factory=lambda: PageCache(PAGE_CACHE_SIZE_DEFAULT))


T = TypeVar("T")


async def _query(dash: Dashboard, fn: Callable[[BaseBackend], T]) -> T:
    """Run ``fn(con)`` off the event loop, one query at a time on the one connection."""
    def locked() -> T:
        with dash.lock:
            if dash.con is not None:
                return fn(dash.con)
            with engine.connected(settings=dash.settings) as con:
                return fn(con)

    return await run_in_threadpool(locked)


# ---- responses -------------------------------------------------------------------------------

def _headers(nonce: str | None = None) -> dict[str, str]:
    scripts = f"'self' 'nonce-{nonce}'" if nonce else "'self'"
    return {
        "content-security-policy": (
            f"default-src 'self'; script-src {scripts}; style-src 'self' 'unsafe-inline'; "
            "img-src 'self' data: blob:; connect-src 'self'; font-src 'self'; "
            "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"),
        "x-content-type-options": "nosniff",
        "x-frame-options": "DENY",
        "referrer-policy": "no-referrer",
        "cache-control": "no-store",
    }


def _render(template: str, status: int = 200, **context: Any) -> HTMLResponse:
    nonce = secrets.token_urlsafe(16)
    html = templates().get_template(template).render(nonce=nonce, pages=PAGES.values(),
                                                     **context)
    return HTMLResponse(html, status_code=status, headers=_headers(nonce))


def _busy(exc: Exception) -> Response:
    """The warehouse cannot be opened now (on DuckDB: another process is writing it)."""
    log.warning("warehouse unavailable: %s", type(exc).__name__)
    return Response(f"the warehouse is busy or unavailable, try again in a minute: {exc}\n",
                    status_code=503, media_type="text/plain",
                    headers={**_headers(), "retry-after": "30"})


def _cookie(response: Response, name: str, value: str, max_age: int) -> None:
    response.set_cookie(name, value, max_age=max_age, path="/", httponly=True,
                        samesite="strict", secure=False)  # plain HTTP on 127.0.0.1


# ---- access ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Viewer:
    """Who is looking: a logged-in user (with the session's CSRF token) or a read key."""

    name: str
    csrf: str | None = None


def _session(dash: Dashboard, request: Request) -> tuple[str, Session] | None:
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return None
    found = dash.sessions.get(token, now=dash.clock())
    return None if found is None else (token, found)


def _request_key(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return request.headers.get("x-touchline-key")


def _key_kind(con: BaseBackend, key: str) -> str | None:
    """The kind of a live API key, or None for an unknown or revoked one."""
    from touchline.collect.keys import hash_key

    keys = con.table("write_keys")
    found = keys.filter((keys.key_hash == hash_key(key)) & keys.revoked_at.isnull()).select(
        "kind").to_pyarrow().column(0).to_pylist()
    return str(found[0]) if found else None


async def _viewer(dash: Dashboard, request: Request) -> Viewer | Response:
    """The viewer, or the response that refuses the request."""
    key = _request_key(request)
    if key is not None:
        try:
            kind = await _query(dash, lambda con: _key_kind(con, key))
        except EngineError as exc:
            return _busy(exc)
        if kind is None:
            return Response("unknown or revoked API key\n", status_code=401,
                            media_type="text/plain", headers=_headers())
        if kind not in READ_KINDS:
            return Response(f"a {kind} key cannot read the dashboard: use a read or admin key "
                            "(touchline keys create --kind read)\n", status_code=403,
                            media_type="text/plain", headers=_headers())
        return Viewer(f"{kind} key")
    found = _session(dash, request)
    if found is None:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse("/login?" + urlencode({"next": target}), status_code=303)
    return Viewer(found[1].user, found[1].csrf)


def _safe_next(target: str | None) -> str:
    """Only a path on this server (no scheme, no ``//host``) to go to after logging in."""
    if target and target.startswith("/") and not target.startswith(("//", "/\\")):
        return target
    return "/"


async def login_form(request: Request) -> Response:
    dash: Dashboard = request.app.state.dashboard
    if _session(dash, request) is not None:
        return RedirectResponse(_safe_next(request.query_params.get("next")), status_code=303)
    return _login_page(request.query_params.get("next"), error=None, status=200)


def _login_page(target: str | None, *, error: str | None, status: int) -> Response:
    csrf = secrets.token_urlsafe(32)
    response = _render("login.html.j2", status=status, title="Log in", csrf=csrf,
                       next=_safe_next(target), error=error, viewer=None)
    _cookie(response, CSRF_COOKIE, csrf, max_age=3600)
    return response


async def login(request: Request) -> Response:
    from touchline.serve.users import verify_user

    dash: Dashboard = request.app.state.dashboard
    form = await request.form()
    name, password = str(form.get("name", "")), str(form.get("password", ""))
    sent, expected = str(form.get("csrf", "")), request.cookies.get(CSRF_COOKIE, "")
    target = str(form.get("next", "/"))
    address = request.client.host if request.client else "unknown"
    wait = dash.limiter.retry_after(address, now=dash.clock())
    if wait is not None:
        log.warning("login refused: too many failed logins from one address")
        response = _login_page(target, error=f"too many failed logins: try again in {wait} "
                               "seconds", status=429)
        response.headers["retry-after"] = str(wait)
        return response
    if not expected or not hmac.compare_digest(sent, expected):
        log.warning("login refused: missing or wrong CSRF token")
        return _login_page(target, error="the form expired: please log in again", status=403)
    try:
        ok = await _query(dash, lambda con: verify_user(con, name, password))
    except EngineError as exc:
        return _busy(exc)
    if not ok:
        log.warning("login refused: wrong name or password")
        dash.limiter.failed(address, now=dash.clock())
        return _login_page(target, error="wrong name or password", status=401)
    dash.limiter.succeeded(address)
    token, _ = dash.sessions.create(name.strip(), now=dash.clock(),
                                    seconds=dash.session_seconds)
    response = RedirectResponse(_safe_next(target), status_code=303)
    _cookie(response, SESSION_COOKIE, token, max_age=dash.session_seconds)
    response.delete_cookie(CSRF_COOKIE, path="/")
    log.info("login accepted")
    return response


async def logout(request: Request) -> Response:
    dash: Dashboard = request.app.state.dashboard
    found = _session(dash, request)
    form = await request.form()
    if found is None or not hmac.compare_digest(str(form.get("csrf", "")), found[1].csrf):
        return Response("not logged in, or a wrong CSRF token\n", status_code=403,
                        media_type="text/plain", headers=_headers())
    dash.sessions.delete(found[0])
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


# ---- pages -----------------------------------------------------------------------------------

def filters_from(request: Request, settings: Settings) -> Filters:
    """The page's filters from its URL (defaults from the settings)."""
    q = request.query_params
    unit, device = q.get("unit") or None, q.get("device") or None
    check_filters(unit=unit, device=device)
    stage_model = q.get("stage_model") or settings.stage_model
    if stage_model not in (known := settings.all_stage_models()):
        raise ConfigError(f"stage model {stage_model!r}{did_you_mean(stage_model, known)}: "
                          f"choose from {', '.join(known)}")
    from touchline.attribution import MODELS

    model = q.get("model") or settings.default_model
    if model not in settings.attribution_models and model not in MODELS:
        known = list(settings.attribution_models)
        raise ConfigError(f"model {model!r}{did_you_mean(model, known)}: choose from "
                          f"{', '.join(known)} (settings.attribution_models)")
    since = parse_day(q.get("since") or None, "since")
    until = parse_day(q.get("until") or None, "until")
    if since is not None and until is not None and since >= until:
        # every page alike (the overview said it, the channels page found nothing)
        raise ConfigError(f"since {since:%Y-%m-%d} is not before until {until:%Y-%m-%d}")
    return Filters(since=since, until=until,
                   conversion=q.get("conversion") or None,
                   model=model,
                   stage_model=stage_model,
                   by=q.get("by") or "channel", unit=unit, device=device,
                   channel=q.get("channel") or None, campaign=q.get("campaign") or None)


def _options(con: BaseBackend) -> dict[str, Any]:
    """What the filter form offers: stored conversion types, models, stage models, credited
    channels and campaigns (one query); when data was last loaded, by files or the
    collector, and when the last run ended (another: :func:`~touchline.serve.figures.freshness`).
    They run on every page (kept until the warehouse is written)."""
    from touchline.metrics.kpis import NOT_SET, UNASSIGNED

    j, c = con.table("journeys"), con.table("credits")
    s, st = con.table("sessions"), con.table("stages")
    rows = ibis.union(
        j.select(_k=ibis.literal("conversion"), _v=j.conversion.cast("string")),
        st.select(_k=ibis.literal("stage_model"), _v=st.stage_model.cast("string")),
        c.select(_k=ibis.literal("model"), _v=c.model.cast("string")),
        c.select(_k=ibis.literal("channel"), _v=c.channel.cast("string").fill_null(
            UNASSIGNED)),
        s.select(_k=ibis.literal("campaign"), _v=s.campaign.cast("string").fill_null(NOT_SET)),
        distinct=True).to_pyarrow().to_pylist()
    fresh = freshness(con)
    return {"conversions": sorted(r["_v"] for r in rows
                                  if r["_k"] == "conversion" and r["_v"] is not None),
            "models": sorted(r["_v"] for r in rows if r["_k"] == "model" and r["_v"] is not None),
            "stage_models": sorted(r["_v"] for r in rows
                                   if r["_k"] == "stage_model" and r["_v"] is not None),
            "channels": sorted(r["_v"] for r in rows if r["_k"] == "channel"),
            "campaigns": sorted(r["_v"] for r in rows if r["_k"] == "campaign"),
            "last_loaded": last_loaded_text(fresh),
            "last_run": (f"{fresh['prepared']:%Y-%m-%d %H:%M} UTC" if fresh["prepared"]
                         else None)}


def _person_section(con: BaseBackend, query: str, filters: Filters,
                    settings: Settings, given: Sequence[str]) -> Section:
    notes = filters_not_applied("person", given)
    try:
        data = person_timeline_data(con, query, model=filters.model,
                                    conversion=filters.conversion,
                                    stage_model=filters.stage_model,
                                    phone_region=settings.phone_region,
                                    pii_key=settings.pii_key_at_rest)
    except TouchlineError as exc:
        return Section("person", "Person timeline", error=str(exc), notes=notes)
    return Section("person", "Person timeline",
                   figure_json=figure_json(person_timeline_figure(data)),
                   table=data_table(data.drop(columns=["lane"])), data=data, notes=notes)


def page_handler(page: Page) -> Callable[[Request], Any]:
    async def handle(request: Request) -> Response:
        started = time.perf_counter()
        dash: Dashboard = request.app.state.dashboard
        viewer = await _viewer(dash, request)
        if isinstance(viewer, Response):
            return viewer
        query = (request.query_params.get("q") or "").strip()
        try:
            filters = filters_from(request, dash.settings)
        except ConfigError as exc:
            filters, error = replace(Filters(), model=dash.settings.default_model), str(exc)
        else:
            error = None
        filters = replace(filters, truth=dash.truth)
        # the filters the viewer set: a chart that leaves one aside says why
        given = tuple(k for k in FILTER_LABELS if request.query_params.get(k)) if (
            error is None) else ()

        from touchline.metrics.kpis import computed_once

        def lane(charts: Sequence[str]) -> Callable[[BaseBackend], dict[str, Section]]:
            def drawn(con: BaseBackend) -> dict[str, Section]:
                with engine.schemas_read_once(con), (
                        computed_once(con) if page.shared else nullcontext(con)):
                    return {name: draw(con, name, filters, given) for name in charts}
            return drawn

        def work(con: BaseBackend) -> tuple[list[Section], dict[str, Any]]:
            if error is not None:  # a bad filter: its error only, never numbers it ignored
                return [], offered if offered is not None else _options(con)
            with engine.schemas_read_once(con):
                parts = engine.side_by_side(con, [lane(charts) for charts in (
                    page.lanes or (page.charts,))])
                drawn = {name: section for part in parts for name, section in part.items()}
                sections = [drawn[name] for name in page.charts]
                if page.name == "person" and query:
                    sections.append(_person_section(con, query, filters, dash.settings,
                                                    given))
                return sections, offered if offered is not None else _options(con)

        # a DuckDB file opened per request: its pages are kept until it is written (on Spark
        # or a connection given by the caller, nothing says when it was, so nothing is kept);
        # a person search is never kept (personal data stays no longer than its request)
        state = engine.warehouse_version(dash.settings) if dash.con is None else None
        version = state if page.name != "person" else None
        key = (page.name, filters, query, given, error)
        found = dash.pages.get(version, key)
        if found is None:
            # the filter form's options are every page's: kept as a page is
            offered = dash.pages.get(state, OPTIONS_KEY)
            try:
                found = await _query(dash, work)
            except EngineError as exc:
                return _busy(exc)
            dash.pages.put(version, key, found)
            dash.pages.put(state, OPTIONS_KEY, found[1])
        sections, options = found
        response = _render("page.html.j2", title=page.title, page=page, viewer=viewer,
                           filters=filters, sections=sections, error=error, q=query,
                           params=dict(request.query_params),
                           devices=DEVICES, units=UNITS,
                           shared=urlencode({k: v for k, v in request.query_params.items()
                                             if k in SHARED_FILTERS and v}), **options)
        # the server's own time for the page (W3C Server-Timing): the browser's developer
        # tools and benchmarks/bench_dashboard.py read it, free of network and client time
        response.headers["server-timing"] = (
            f"page;dur={(time.perf_counter() - started) * 1000:.1f}")
        return response

    return handle


def favicon() -> str:
    """The dashboard's icon (an SVG in the package's templates folder): browsers ask for
    ``/favicon.ico`` on every page, the login page too, and a 404 is a console error."""
    return (TEMPLATES / "favicon.svg").read_text()


async def favicon_ico(request: Request) -> Response:
    return RedirectResponse("/static/favicon.svg", status_code=301)


async def static(request: Request) -> Response:
    name = request.path_params["name"]
    bodies = {"plotly.js": (plotly_js, "application/javascript"),
              "style.css": (css, "text/css"),
              "favicon.svg": (favicon, "image/svg+xml")}
    if name not in bodies:
        return Response("not found\n", status_code=404, media_type="text/plain")
    body, media = bodies[name]
    return Response(body(), media_type=media, headers={
        "cache-control": "public, max-age=86400", "x-content-type-options": "nosniff"})


def create_app(settings: Settings, *, con: BaseBackend | None = None,
               session_seconds: int = SESSION_SECONDS_DEFAULT,
               clock: Callable[[], float] = time.time,
               truth: Sequence[Path] = (), sessions_file: Path | None = None) -> Starlette:
    """The dashboard's ASGI app over the warehouse of ``settings`` (or ``con``); ``truth``:
    the ground-truth files (simulator ``truth.json``) the model comparison ranks against;
    ``sessions_file``: where logins are kept (default: next to a DuckDB warehouse file,
    :func:`~touchline.serve.sessions.sessions_file_for`)."""
    from touchline import store

    connection = con if con is not None else engine.connect(settings=settings)
    store.init(connection)  # a warehouse made by an older version gains the users table
    # the charts' imports, the templates' compilation and the engine's first query (the
    # filter form's options), once now rather than in the first page view: a second or more
    # the first viewer would wait
    preload()
    for template in ("base.html.j2", "page.html.j2", "login.html.j2"):
        templates().get_template(template)
    offered = None
    try:
        with engine.schemas_read_once(connection):
            offered = _options(connection)
    except Exception as exc:  # a warm-up only: the first page says what is wrong
        log.warning("the dashboard's first query failed: %s", type(exc).__name__)
    if con is None and engine.engine_name(connection) == "duckdb" and urlsplit(
            settings.database_url).path not in ("", "/"):
        connection.disconnect()  # a DuckDB file: opened by each request (see Dashboard)
        connection = None
    routes = [Route("/login", login_form, methods=["GET"]),
              Route("/login", login, methods=["POST"]),
              Route("/logout", logout, methods=["POST"]),
              Route("/static/{name}", static, methods=["GET"]),
              Route("/favicon.ico", favicon_ico, methods=["GET"]),
              *(Route(p.path, page_handler(p), methods=["GET"], name=p.name)
                for p in PAGES.values())]
    app = Starlette(routes=routes)
    store_file = sessions_file or sessions_file_for(settings.database_url)
    app.state.dashboard = Dashboard(settings, connection, session_seconds,
                                    sessions=SessionStore(store_file), clock=clock,
                                    truth=tuple(Path(f) for f in truth))
    if connection is None and offered is not None:  # the first pages' filter form
        app.state.dashboard.pages.put(engine.warehouse_version(settings), OPTIONS_KEY, offered)
    return app
