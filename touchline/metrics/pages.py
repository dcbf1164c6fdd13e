r"""Consideration KPIs of pages: CTA click-through, landing-page conversion, form start and
completion rates.

How the events are recognised (settings, :class:`touchline.config.Settings`):

- a **CTA click** is a track event named in ``cta_events`` (default ``CTA Clicked``); the page
  it was sent from (the event's ``context.page.url``, as the tracker sends it) is the page
  carrying the CTA;
- a **page carrying a CTA** is one whose path matches ``cta_pages`` (a regular expression),
  or, when that is empty, any page on which a CTA click was ever recorded (so a page whose CTA
  nobody ever clicked is not counted: set ``cta_pages`` to see it);
- a **form start** is a track event named in ``form_start_events`` (default ``Form
  Started``), a **form submission** one of ``touch_events["form"]`` (``Form Submitted``…);
  form pages are ``form_pages`` or, when empty, the pages where a start or submission was
  recorded.

Counts are of touches (after prepare's cleaning and deduplication): a page view with two CTA
clicks counts two clicks, so the rate may exceed 1 on pages with several CTAs.

>>> from touchline.metrics.kpis import KPIS
>>> KPIS["cta_ctr"].formula
'CTA clicks on CTA pages / page views of CTA pages'
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

import ibis
import ibis.expr.types as ir

from touchline.metrics.kpis import (
    _ZERO,
    DEVICE_DIMS,
    DOC_SECTIONS,
    SESSION_LEVELS,
    Query,
    _aggregate,
    _check_conversion,
    _device,
    _keyed,
    _levels,
    _once,
    _once_value,
    _order,
    _ratio,
    _rows_of,
    _sessions,
    register,
    with_device,
)

if TYPE_CHECKING:
    from ibis.backends import BaseBackend

#: page KPIs break down by the session of the view or click: its channel… and device
PAGE_DIMS = (*DEVICE_DIMS, "page")
PAGE_TYPES = ("page", "screen")


def _page_actions(con: BaseBackend, q: Query, actions: Sequence[str],
                  pattern: str | None) -> ir.Table:
    """Page views and ``actions`` events on the pages that carry them (``pattern``, else the
    pages where an action was ever recorded), keyed; ``_view`` and ``_event`` flags."""
    tp = con.table("touchpoints")
    if not any(dim in SESSION_LEVELS or dim == "device" for dim in q.by):
        # nothing of the session asked (a headline, by page or period): the stored touches,
        # not the view that joins each to its session (every touch has its session, so the
        # join keeps every row; it was a quarter of the KPI page's query)
        t = _rows_of(con, "touchpoints")
        tp = t.select("page_path", "type", "event", occurred_at=t.occurred_at if (
            "occurred_at" in t.columns) else t.timestamp)
    tp = tp.filter(tp.page_path.notnull())
    is_action = (tp.type == "track") & tp.event.isin(list(actions))
    tp = tp.mutate(_view=tp.type.isin(PAGE_TYPES), _action=is_action)
    if pattern:
        tp = tp.filter(tp.page_path.re_search(pattern).fill_null(False))
    else:
        # the pages are few: asked first and filtered by name, so the engine reads only
        # their touches (a semi-join ran after the touchpoints view joined every touch to
        # its session, 80 % of the run on data without CTAs)
        pages = _once_value(con, ("action_pages", tuple(actions)), lambda: sorted(
            tp.filter(tp._action).select("page_path").distinct().to_pyarrow().column(0)
            .to_pylist()))
        tp = tp.filter(tp.page_path.isin(pages))
    tp = with_device(con, tp.filter(tp._view | tp._action), q)
    asked = {dim: column for dim, column in SESSION_LEVELS.items() if dim in q.by}
    dims = {**_levels(tp, asked), **_device(tp), "page": tp.page_path}
    return _keyed(tp, q, at=tp.occurred_at, dims=dims)


@register("cta_ctr", stage="consideration", unit="ratio",
          formula="CTA clicks on CTA pages / page views of CTA pages",
          tables=["touchpoints", "sessions"], dimensions=PAGE_DIMS,
          values=("page_views", "cta_clicks", "cta_ctr"), zero_denominator=_ZERO)
def cta_ctr(con: BaseBackend, q: Query) -> ir.Table:
    """Call-to-action click-through rate: how often a page's CTA is clicked per view of the
    page, by page (path), period and the session's channel, source… and device.
    The module docstring says how CTA clicks and CTA pages are recognised."""
    cfg = q.config
    t = _page_actions(con, q, cfg.cta_events, cfg.cta_pages)
    t = _aggregate(t, q, page_views=t._view.cast("int64").sum(),
                   cta_clicks=t._action.cast("int64").sum())
    return _order(t.mutate(cta_ctr=_ratio(t.cta_clicks, t.page_views)), q)


def _forms(con: BaseBackend, q: Query) -> ir.Table:
    """Page views, form starts and submissions per key (both form KPIs read it: inside
    :func:`~touchline.metrics.kpis.computed_once`, counted once)."""
    cfg = q.config
    starts, submits = list(cfg.form_start_events), list(cfg.touch_events.get("form", []))

    def build() -> ir.Table:
        t = _page_actions(con, q, [*starts, *submits], cfg.form_pages)
        return _aggregate(
            t, q, page_views=t._view.cast("int64").sum(),
            form_starts=(t._action & t.event.isin(starts)).cast("int64").sum(),
            form_submissions=(t._action & t.event.isin(submits)).cast("int64").sum())

    return _once(con, ("forms", q.by, q.period, q.since, q.until, tuple(starts),
                       tuple(submits), cfg.form_pages), build)


@register("form_start_rate", stage="consideration", unit="ratio",
          formula="form starts / page views of form pages",
          tables=["touchpoints", "sessions"], dimensions=PAGE_DIMS,
          values=("page_views", "form_starts", "form_start_rate"), zero_denominator=_ZERO)
def form_start_rate(con: BaseBackend, q: Query) -> ir.Table:
    """Share of form-page views in which a visitor began the form, by page, period and the
    session's channel, source…"""
    t = _forms(con, q)
    t = t.mutate(form_start_rate=_ratio(t.form_starts, t.page_views))
    return _order(t.select(*q.keys, "page_views", "form_starts", "form_start_rate"), q)


@register("form_completion_rate", stage="consideration", unit="ratio",
          formula="form submissions / form starts, on form pages",
          tables=["touchpoints", "sessions"], dimensions=PAGE_DIMS,
          values=("form_starts", "form_submissions", "form_completion_rate"),
          zero_denominator=_ZERO)
def form_completion_rate(con: BaseBackend, q: Query) -> ir.Table:
    """Share of started forms that were submitted. A site that does not send form starts has
    no denominator (null); one that sends them on some forms only can exceed 1 there."""
    t = _forms(con, q)
    t = t.mutate(form_completion_rate=_ratio(t.form_submissions, t.form_starts))
    return _order(t.select(*q.keys, "form_starts", "form_submissions",
                           "form_completion_rate"), q)


@register("landing_page_conversion_rate", stage="consideration", unit="ratio",
          formula="sessions in which the person converted / sessions, by the session's "
          "landing page", tables=["sessions", "journeys"], dimensions=DEVICE_DIMS,
          values=("sessions", "converting_sessions", "landing_page_conversion_rate"),
          zero_denominator=_ZERO, options=("conversion",))
def landing_page_conversion_rate(con: BaseBackend, q: Query) -> ir.Table:
    """Of the sessions that entered on a page, the share in which the visitor converted
    (a conversion of ``conversion`` between the session's first and last touch), by landing
    page (``by=["landing_page"]``), period and channel, source…"""
    _check_conversion(con, q)
    s = with_device(con, _sessions(con), q)
    j = con.table("journeys")
    j = j.filter((j.conversion == q.conversion) & j.converted & (j.unit == "person"))
    hit = s.inner_join(j, [s.person_id == j.unit_id, j.converted_at >= s.started_at,
                           j.converted_at <= s.ended_at])
    hit = hit.select(_hit="session_id").distinct()
    t = s.left_join(hit, s.session_id == hit._hit)
    t = _keyed(t, q, at=t.started_at, dims=_levels(t, SESSION_LEVELS) | _device(t))
    t = _aggregate(t, q, sessions=t.count().cast("int64"),
                   converting_sessions=t._hit.count().cast("int64"))
    return _order(t.mutate(landing_page_conversion_rate=_ratio(t.converting_sessions,
                                                               t.sessions)), q)


#: the end of a stage interval still open (``left_at`` null): later than any view
_OPEN_END = datetime(9999, 12, 31)
#: the stage of a view made before the viewer entered any stage (or by no known person)
NO_STAGE = "(no stage)"


@register("content_viewed", stage="consideration", unit="page views",
          formula="count(page views) and count(distinct viewers) by page and by the stage "
          "(settings.stage_model) the viewer was in at the view",
          tables=["touchpoints", "sessions", "stages"], dimensions=PAGE_DIMS,
          values=("stage", "page_views", "viewers"), table=True)
def content_viewed(con: BaseBackend, q: Query) -> ir.Table:
    """Content viewed by stage: page (and screen) views, by the stage of the stage model
    ``settings.stage_model`` (default lifecycle) the viewing person was in when viewing
    (``stages``: entered_at <= view < left_at, left_at null while still in it), so a
    marketer sees which pages people read while considering and which after buying. Always
    by stage; ``by`` adds page (path), period and the session's channel, source… Views
    before the person's first stage are ``(no stage)``."""
    tp = con.table("touchpoints")
    tp = with_device(con, tp.filter(tp.type.isin(PAGE_TYPES) & tp.page_path.notnull()), q)
    st = con.table("stages")
    st = st.filter((st.stage_model == q.config.stage_model) & (st.unit == "person")).select(
        _person="unit_id", _stage="stage", _entered="entered_at", _left="left_at")
    # the open interval's end as a far-future bound, not ``left_at IS NULL OR …``: an OR in
    # the condition turns DuckDB's hash join on the person into a nested loop (quadratic)
    j = tp.left_join(st, [tp.person_id == st._person, st._entered <= tp.occurred_at,
                          tp.occurred_at < st._left.fill_null(
                              ibis.literal(_OPEN_END, type=st._left.type()))])
    j = j.mutate(stage=j._stage.fill_null(NO_STAGE))
    dims = {**_levels(j, SESSION_LEVELS), **_device(j), "page": j.page_path}
    t = _keyed(j, q, at=j.occurred_at, dims=dims)
    keys = [*q.keys, "stage"]
    t = t.group_by(keys).aggregate(page_views=t.count().cast("int64"),
                                   viewers=t.person_id.nunique().cast("int64"))
    return t.order_by(keys)


DOC_SECTIONS["pages"] = """
## Pages: `cta_ctr`, `form_start_rate`, `form_completion_rate`, `landing_page_conversion_rate`,
`content_viewed`

`touchline/metrics/pages.py`, over the prepared `touchpoints`. How events are recognised
(settings):

- a **CTA click** is a track event named in `cta_events` (default `CTA Clicked`); the page it
  was sent from (`context.page.url`, which the tracker sends) is the page carrying the CTA;
- a **page carrying a CTA** matches `cta_pages` (a regular expression searched in the path),
  or, when that is unset, is any page on which a CTA click was ever recorded (a CTA nobody
  ever clicked stays invisible until `cta_pages` names its page);
- a **form start** is a track event of `form_start_events` (default `Form Started`), a
  **submission** one of `touch_events["form"]`; form pages are `form_pages` or the pages where
  a start or a submission was recorded.

Counts are of touches after cleaning and deduplication, by the touch's page path (`page`),
period and the session's channel, source…: a view with two CTA clicks counts two. The
landing-page conversion rate is the share of sessions (by their entrance page,
`landing_page`) in which the person converted (`--conversion`, between the session's first and
last touch). Content viewed by stage (`content_viewed`) counts page views and distinct viewers
by the stage of `stage_model` (default `lifecycle`) the person was in at the view
(`stages.entered_at` <= view < `left_at`); views before any stage are `(no stage)`.

```toml
# touchline.toml
cta_events = ["CTA Clicked", "Book Demo Clicked"]
cta_pages = "^/(pricing|demo)"
form_start_events = ["Form Started"]
```
"""
