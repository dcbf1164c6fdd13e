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

import functools
import operator
from collections.abc import Callable, Mapping, Sequence
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
    _ratio,
    _rows_of,
    family,
    register,
    register_in,
    with_device,
)

if TYPE_CHECKING:
    from ibis.backends import BaseBackend

#: page KPIs break down by the session of the view or click: its channel… and device
PAGE_DIMS = (*DEVICE_DIMS, "page")
PAGE_TYPES = ("page", "screen")


def _action_pages(con: BaseBackend, tp: ir.Table,
                  kinds: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """For each kind of action ``name: actions``, the pages of ``tp`` on which a touch
    flagged ``_<name>`` (one of ``actions``) was ever recorded: few, asked first, every
    kind in one query (inside a reader's block or :func:`computed_once`, once)."""
    def ask() -> dict[str, list[str]]:
        flags = [tp[f"_{name}"] for name in kinds]
        t = tp.filter(functools.reduce(operator.or_, flags))
        found = t.group_by("page_path").aggregate(
            **{name: t[f"_{name}"].any() for name in kinds}).to_pyarrow().to_pylist()
        return {name: sorted(row["page_path"] for row in found if row[name])
                for name in kinds}

    return _once_value(con, ("action_pages", tuple(
        (name, tuple(actions)) for name, actions in kinds.items())), ask)


def _page_actions(con: BaseBackend, q: Query,
                  kinds: Mapping[str, tuple[Sequence[str], str | None]]
                  ) -> tuple[ir.Table, dict[str, Callable[[ir.StringValue], ir.BooleanValue]]]:
    """Page views and action events, keyed, for each kind of action ``name: (actions,
    pattern)``: ``_view`` (a page view) and ``_<name>`` (the touch is one of ``actions``);
    with, for each kind, whether a page carries it (its path matches ``pattern``, else it is
    one where such an action was ever recorded), to be asked of the few pages after the
    touches are counted by page. Read in one pass over the touches whatever the number of
    kinds; when every kind's pages are named, only their touches are read."""
    tp = con.table("touchpoints")
    if not any(dim in SESSION_LEVELS or dim == "device" for dim in q.by):
        # nothing of the session asked (a headline, by page or period): the stored touches,
        # not the view that joins each to its session (every touch has its session, so the
        # join keeps every row; it was a quarter of the KPI page's query)
        t = _rows_of(con, "touchpoints")
        tp = t.select("page_path", "type", "event", occurred_at=t.occurred_at if (
            "occurred_at" in t.columns) else t.timestamp)
    tp = tp.filter(tp.page_path.notnull())
    tp = tp.mutate(_view=tp.type.isin(PAGE_TYPES), **{
        f"_{name}": (tp.type == "track") & tp.event.isin(list(actions))
        for name, (actions, _) in kinds.items()})
    # the pages of the kinds without a pattern are few: asked first and filtered by name,
    # so the engine reads only their touches (a semi-join ran after the touchpoints view
    # joined every touch to its session, 80 % of the run on data without CTAs)
    unnamed = {name: actions for name, (actions, pattern) in kinds.items() if not pattern}
    found = _action_pages(con, tp, unnamed) if unnamed else {}
    carries: dict[str, Callable[[ir.StringValue], ir.BooleanValue]] = {}
    named: set[str] = set()
    for name, (_, pattern) in kinds.items():
        if pattern:
            carries[name] = functools.partial(_matches, pattern=pattern)
        else:
            carries[name] = functools.partial(_among, pages=found[name])
            named.update(found[name])
    if not any(pattern for _, pattern in kinds.values()):
        tp = tp.filter(tp.page_path.isin(sorted(named)))
    tp = tp.filter(functools.reduce(operator.or_, [tp._view, *(tp[f"_{n}"] for n in kinds)]))
    tp = with_device(con, tp, q)
    asked = {dim: column for dim, column in SESSION_LEVELS.items() if dim in q.by}
    dims = {**_levels(tp, asked), **_device(tp), "page": tp.page_path}
    return _keyed(tp, q, at=tp.occurred_at, dims=dims), carries


def _matches(path: ir.StringValue, *, pattern: str) -> ir.BooleanValue:
    return path.re_search(pattern).fill_null(False)


def _among(path: ir.StringValue, *, pages: Sequence[str]) -> ir.BooleanValue:
    return path.isin(list(pages))


def _count(flag: ir.BooleanValue) -> ir.IntegerValue:
    return flag.cast("int64").sum()


@family("page_actions")
def _page_action_counts(con: BaseBackend, q: Query, needs: frozenset[str]) -> ir.Table:
    """The views and actions of the pages carrying them, counted in one pass over the
    touches: with ``cta``, ``_cta_views`` and ``_cta_clicks`` on CTA pages; with ``forms``,
    ``_form_views``, ``_form_starts`` and ``_form_submissions`` on form pages. The touches
    are counted by key and page first, then the pages' counts summed by whether they carry
    each kind (the page test asked of a few rows, not of every touch). A key with touches
    of one kind of page only counts zeros for the other (by page: a row for every page of
    either kind), so alone each KPI counts its own kind only (the rows it gives by itself).
    Inside :func:`~touchline.metrics.kpis.computed_once`, counted once."""
    cfg = q.config
    starts, submits = list(cfg.form_start_events), list(cfg.touch_events.get("form", []))
    kinds = {"cta": (list(cfg.cta_events), cfg.cta_pages),
             "forms": ([*starts, *submits], cfg.form_pages)}
    kinds = {name: kind for name, kind in kinds.items() if name in needs}

    def build() -> ir.Table:
        t, carries = _page_actions(con, q, kinds)
        counts: dict[str, ir.Scalar] = {"_views": _count(t._view)}
        if "cta" in kinds:
            counts["_clicks"] = _count(t._cta)
        if "forms" in kinds:
            counts |= {"_starts": _count(t._forms & t.event.isin(starts)),
                       "_submissions": _count(t._forms & t.event.isin(submits))}
        by_page = t.group_by([*q.keys, "page_path"]).aggregate(**counts)
        on = {name: carry(by_page.page_path) for name, carry in carries.items()}
        by_page = by_page.filter(functools.reduce(operator.or_, on.values()))
        sums = {}
        if "cta" in kinds:
            sums |= {"_cta_views": _on(on, "cta", by_page._views),
                     "_cta_clicks": _on(on, "cta", by_page._clicks)}
        if "forms" in kinds:
            sums |= {"_form_views": _on(on, "forms", by_page._views),
                     "_form_starts": _on(on, "forms", by_page._starts),
                     "_form_submissions": _on(on, "forms", by_page._submissions)}
        return _aggregate(by_page, q, **sums)

    return _once(con, ("page_actions", q.by, q.period, q.since, q.until,
                       tuple((name, tuple(a), p) for name, (a, p) in kinds.items()),
                       tuple(starts), tuple(submits)), build)


def _on(on: Mapping[str, ir.BooleanValue], kind: str, count: ir.IntegerValue
        ) -> ir.IntegerValue:
    """``count`` summed over the pages carrying ``kind`` (alone: all of them)."""
    if len(on) == 1:
        return count.sum()
    return ibis.ifelse(on[kind], count, 0).sum()


@register_in("page_actions", "cta_ctr", needs=["cta"], stage="consideration", unit="ratio",
             formula="CTA clicks on CTA pages / page views of CTA pages",
             tables=["touchpoints", "sessions"], dimensions=PAGE_DIMS,
             values=("page_views", "cta_clicks", "cta_ctr"), zero_denominator=_ZERO)
def cta_ctr(a: ir.Table) -> dict[str, ir.Value]:
    """Call-to-action click-through rate: how often a page's CTA is clicked per view of the
    page, by page (path), period and the session's channel, source… and device.
    The module docstring says how CTA clicks and CTA pages are recognised."""
    return {"page_views": a._cta_views, "cta_clicks": a._cta_clicks,
            "cta_ctr": _ratio(a._cta_clicks, a._cta_views)}


@register_in("page_actions", "form_start_rate", needs=["forms"], stage="consideration",
             unit="ratio", formula="form starts / page views of form pages",
             tables=["touchpoints", "sessions"], dimensions=PAGE_DIMS,
             values=("page_views", "form_starts", "form_start_rate"), zero_denominator=_ZERO)
def form_start_rate(a: ir.Table) -> dict[str, ir.Value]:
    """Share of form-page views in which a visitor began the form, by page, period and the
    session's channel, source…"""
    return {"page_views": a._form_views, "form_starts": a._form_starts,
            "form_start_rate": _ratio(a._form_starts, a._form_views)}


@register_in("page_actions", "form_completion_rate", needs=["forms"], stage="consideration",
             unit="ratio", formula="form submissions / form starts, on form pages",
             tables=["touchpoints", "sessions"], dimensions=PAGE_DIMS,
             values=("form_starts", "form_submissions", "form_completion_rate"),
             zero_denominator=_ZERO)
def form_completion_rate(a: ir.Table) -> dict[str, ir.Value]:
    """Share of started forms that were submitted. A site that does not send form starts has
    no denominator (null); one that sends them on some forms only can exceed 1 there."""
    return {"form_starts": a._form_starts, "form_submissions": a._form_submissions,
            "form_completion_rate": _ratio(a._form_submissions, a._form_starts)}


@register_in("sessions", "landing_page_conversion_rate", needs=["converting"],
             checks=[_check_conversion], stage="consideration", unit="ratio",
             formula="sessions in which the person converted / sessions, by the session's "
             "landing page", tables=["sessions", "journeys"], dimensions=DEVICE_DIMS,
             values=("sessions", "converting_sessions", "landing_page_conversion_rate"),
             zero_denominator=_ZERO, options=("conversion",))
def landing_page_conversion_rate(a: ir.Table) -> dict[str, ir.Value]:
    """Of the sessions that entered on a page, the share in which the visitor converted
    (a conversion of ``conversion`` between the session's first and last touch), by landing
    page (``by=["landing_page"]``), period and channel, source…"""
    return {"sessions": a._sessions, "converting_sessions": a._converting,
            "landing_page_conversion_rate": _ratio(a._converting, a._sessions)}


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
