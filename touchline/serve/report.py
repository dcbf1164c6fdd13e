"""The report: one self-contained HTML file with every chart, to send to anyone.

:func:`render_report` draws each chart of :data:`~touchline.serve.figures.CHARTS` from the
stored tables under the given filters, and renders them with a Jinja2 template into one HTML
page that carries its CSS, plotly.js (from the installed ``plotly`` package:
:func:`plotly.offline.get_plotlyjs`) and the figures' data inline: it opens in any browser,
offline, and asks the network for nothing. A chart whose input is missing (no spend, no stage
entries) shows what to import or run instead, and the others are drawn all the same.

:func:`write_pngs` writes the same charts as PNG files for slides: kaleido renders each figure
in a headless Chromium (Debian's, at ``settings.chromium_path``; nothing is downloaded), with
the plotly.js of the installed ``plotly`` package and MathJax off (its default is a CDN).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import jinja2
import plotly.io as pio

from touchline import engine
from touchline.errors import (
    ConfigError,
    MissingInputError,
    TouchlineError,
    UnknownModelError,
    did_you_mean,
)
from touchline.formatting import readable_number
from touchline.serve.figures import (
    CHARTS,
    Filters,
    chart_data,
    filters_given,
    filters_not_applied,
)

if TYPE_CHECKING:
    import pandas as pd
    from ibis.backends import BaseBackend

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).parent / "templates"
REPORT_TITLE_DEFAULT = "touchline report"


def templates() -> jinja2.Environment:
    """The Jinja2 environment of the report and the dashboard (HTML autoescaped)."""
    return jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES),
                              autoescape=jinja2.select_autoescape(["html", "j2"]),
                              undefined=jinja2.StrictUndefined)


@cache
def plotly_js() -> str:
    """plotly.js as the installed ``plotly`` package ships it (read once per process)."""
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


def css() -> str:
    return (TEMPLATES / "style.css").read_text()


def figure_json(fig: object) -> str:
    """A figure as JSON that is safe inside a ``<script>`` element."""
    text = pio.to_json(fig, validate=False, engine="json")
    return text.replace("</", "<\\/").replace("<!--", "<\\!--")


def data_table(frame: pd.DataFrame) -> str:
    """The numbers behind a chart as an HTML table (values escaped; an empty cell is blank,
    never "None")."""
    frame = frame.copy()
    for name in frame.select_dtypes(include="object").columns:
        frame[name] = frame[name].where(frame[name].notna(), "")
    return frame.to_html(index=False, na_rep="", float_format=readable_number,
                         border=0, escape=True)


#: the note of a chart whose data is empty under the filters given
NOTHING_MATCHES = ("nothing matches these filters: no rows in this date range for this "
                   "conversion, channel, campaign or device (check them against the data's "
                   "dates and names)")


@dataclass
class Section:
    """One chart of a page: its figure and numbers, or why it could not be drawn."""

    name: str
    title: str
    figure_json: str = ""
    table: str = ""
    error: str | None = None
    data: pd.DataFrame | None = None
    #: the filters asked that this chart leaves aside, each with why
    #: (:func:`~touchline.serve.figures.filters_not_applied`)
    notes: list[str] = field(default_factory=list)
    #: what the chart leaves out and why (the KPIs never imported, or that are tables)
    left_out: dict[str, str] = field(default_factory=dict)


@dataclass
class ReportResult:
    """What :func:`write_report` wrote."""

    path: Path
    sections: list[Section] = field(default_factory=list)

    @property
    def skipped(self) -> dict[str, str]:
        """Chart name → why it is not drawn."""
        return {s.name: s.error for s in self.sections if s.error}


def draw(con: BaseBackend, name: str, filters: Filters, given: Sequence[str] = ()
         ) -> Section:
    """Chart ``name``'s section: data in the engine, then the figure; a touchline error (a
    missing input, an unknown model) becomes the section's note. ``given``: the filters the
    viewer set (URL parameter names); those the chart leaves aside are noted with why."""
    chart = CHARTS[name]
    notes = filters_not_applied(name, given)
    try:
        data = chart_data(con, chart, filters)
    except TouchlineError as exc:
        return Section(name, chart.title, error=str(exc), notes=notes)
    # what the numbers leave empty and why (no spend imported), said by the data function
    notes += [data.attrs["note"]] if data.attrs.get("note") else []
    if data.empty:  # an empty table says why, never silently
        notes.append(NOTHING_MATCHES)
    return Section(name, chart.title, figure_json=figure_json(chart.figure(data)),
                   table=data_table(data), data=data, notes=notes,
                   left_out=dict(data.attrs.get("skipped") or {}))


def check_ready(con: BaseBackend, database: str) -> None:
    """A :class:`~touchline.errors.ConfigError` saying to run ``touchline run`` when the
    warehouse has no journeys (never initialised, or loaded and never run): a report of
    nothing but notes is not written."""
    if "journeys" not in set(con.list_tables()):
        raise ConfigError(f"warehouse {database} has no journeys: run `touchline run` first")


def check_named(con: BaseBackend, *, conversion: str | None, model: str | None) -> None:
    """A :class:`~touchline.errors.ConfigError` (conversion) or
    :class:`~touchline.errors.UnknownModelError` (model), with the choices and the nearest,
    for a ``--conversion`` or ``--model`` the stored journeys and credits do not have: a
    report of the wrong thing, with most charts blank, is not written."""
    from touchline.serve.figures import resolve_conversion

    if conversion is not None:
        resolve_conversion(con, conversion)
    if model is not None:
        c = con.table("credits")
        stored = sorted(str(v) for v in c.select("model").distinct().to_pyarrow()
                        .column("model").to_pylist() if v is not None)
        if model not in stored:
            raise UnknownModelError(
                f"--model {model!r}{did_you_mean(model, stored)}: credits are stored for "
                f"{', '.join(stored) or 'no model (run `touchline run`)'}")


#: told ``(charts drawn, charts in all, the chart drawn now)`` (a progress bar)
ChartProgress = Callable[[int, int, str], None]


def draw_all(con: BaseBackend, filters: Filters, progress: ChartProgress | None = None,
             given: Sequence[str] | None = None) -> list[Section]:
    """Every chart's section, in :data:`CHARTS` order; each says which of the filters
    ``given`` (by default :func:`filters_given`) it leaves aside, as the dashboard does."""
    given = filters_given(filters) if given is None else given
    sections = []
    with engine.schemas_read_once(con):
        for done, name in enumerate(CHARTS):
            if progress is not None:
                progress(done, len(CHARTS), CHARTS[name].title)
            sections.append(draw(con, name, filters, given))
    return sections


def report_window(filters: Filters, sections: Sequence[Section]) -> str:
    """The dates the report covers, as its header says them: the window given (``since``
    inclusive, ``until`` exclusive, so the last day is the one before it) or all dates; and
    the overview's own window when it differs (with no ``since`` it shows the
    :data:`~touchline.serve.figures.OVERVIEW_DAYS_DEFAULT` days up to its end, against the
    days before), so that no chart covers other dates than the header says."""
    since, until = filters.since, filters.until
    window = ("all dates" if since is None and until is None else
              f"from {since:%Y-%m-%d}" if until is None else
              f"up to {until - timedelta(days=1):%Y-%m-%d}" if since is None else
              f"{since:%Y-%m-%d} to {until - timedelta(days=1):%Y-%m-%d}")
    overview = next((s for s in sections if s.name == "overview" and s.data is not None), None)
    if overview is None:
        return window
    start, end = overview.data.attrs["since"], overview.data.attrs["until"]
    if (start, end) == (since, until):
        return window
    return (f"{window} (the overview: {start:%Y-%m-%d} to {end - timedelta(days=1):%Y-%m-%d}"
            ", against the days before; the charts that take no date range say so)")


def render_report(con: BaseBackend, filters: Filters, *, database: str = "",
                  title: str = REPORT_TITLE_DEFAULT, progress: ChartProgress | None = None,
                  given: Sequence[str] | None = None) -> tuple[str, list[Section]]:
    """The report's HTML and its sections (``given``: see :func:`draw_all`)."""
    sections = draw_all(con, filters, progress, given)
    subtitle = ", ".join(part for part in (
        f"conversion {filters.conversion}" if filters.conversion else "the main conversion",
        f"model {filters.model}", f"stage model {filters.stage_model}",
        report_window(filters, sections),
        f"{filters.unit} journeys" if filters.unit else "",
        f"{filters.device} sessions" if filters.device else "",
        f"channel {filters.channel}" if filters.channel else "",
        f"campaign {filters.campaign}" if filters.campaign else "") if part)
    html = templates().get_template("report.html.j2").render(
        title=title, subtitle=subtitle, sections=sections, css=css(), plotly_js=plotly_js(),
        database=database, written_at=f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    return html, sections


def write_report(con: BaseBackend, out: Path, filters: Filters, *, database: str = "",
                 title: str = REPORT_TITLE_DEFAULT, progress: ChartProgress | None = None,
                 given: Sequence[str] | None = None) -> ReportResult:
    """Write the report to ``out`` (folders made as needed)."""
    html, sections = render_report(con, filters, database=database, title=title,
                                   progress=progress, given=given)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(html, encoding="utf-8")
    log.info("report written: %d charts, %d skipped", len(sections),
             sum(1 for s in sections if s.error))
    return ReportResult(out, sections)


#: size of a PNG chart in CSS pixels, and its scale: 1600 × 900 pixels, 16:9 slides
PNG_WIDTH, PNG_HEIGHT, PNG_SCALE = 1200, 675, 4 / 3
#: kaleido 1.5 can start drawing before its page has loaded (see :func:`write_pngs`)
KALEIDO_ATTEMPTS = 2


def write_pngs(con: BaseBackend, folder: Path, filters: Filters, *, chromium: Path,
               progress: ChartProgress | None = None, given: Sequence[str] | None = None
               ) -> ReportResult:
    """Each chart of the report as ``<chart>.png`` in ``folder`` (made as needed).

    The figures are the report's own (:func:`draw`); a chart that cannot be drawn is skipped
    with its reason, as in the HTML. Rendering starts one headless Chromium for all charts.
    Raises :class:`~touchline.errors.MissingInputError` when ``chromium`` is not there.
    """
    import kaleido
    from kaleido.errors import JavascriptError

    if not chromium.is_file():
        raise MissingInputError(
            f"PNG charts are drawn by Chromium, and there is none at {chromium}: install it "
            "(Debian: apt-get install chromium) or set chromium_path in touchline.toml")
    sections = draw_all(con, filters, progress, given)
    if progress is not None:
        progress(len(CHARTS), len(CHARTS), "rendering the PNG files")
    folder.mkdir(parents=True, exist_ok=True)
    drawn = [s for s in sections if not s.error]
    jobs = [{"fig": pio.from_json(s.figure_json), "path": folder / f"{s.name}.png",
             "opts": {"format": "png", "width": PNG_WIDTH, "height": PNG_HEIGHT,
                      "scale": PNG_SCALE}} for s in drawn]
    for attempt in range(1, KALEIDO_ATTEMPTS + 1) if jobs else ():
        try:
            kaleido.write_fig_from_object_sync(
                jobs, kopts={"path": str(chromium), "mathjax": False}, cancel_on_error=True)
            break
        except JavascriptError as exc:
            # kaleido 1.5 can take the id of the tab's JavaScript context before its page has
            # loaded (seen under load): the page's script is then missing from it. Drawing
            # again in a new tab works; any other JavaScript error is the chart's own
            if attempt == KALEIDO_ATTEMPTS or "kaleido_scopes is not defined" not in str(exc):
                raise
            log.warning("kaleido's tab was not ready (attempt %d): drawing the PNG charts "
                        "again", attempt)
    log.info("PNG charts written: %d, %d skipped", len(drawn), len(sections) - len(drawn))
    return ReportResult(folder, sections)
