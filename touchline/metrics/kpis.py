r"""KPIs for every stage of the journey: one registry of documented functions over the stored
tables, each returning an Ibis table (so they run on DuckDB and Spark alike).

A KPI is registered with :func:`register`: its name, its lifecycle stage (and so its stage in
every preset stage model, :data:`PRESET_STAGES`), its unit, its formula, the tables it reads,
the breakdowns its tables hold and what a zero denominator gives. :func:`compute` checks the
names (an unknown KPI or dimension names the nearest valid one), checks that every input table
holds rows (an empty ``spend`` says ``touchline ingest FILE --kind spend`` instead of giving
zeros), and returns the KPI's table: one row per combination of the ``by`` columns (first
``period``, the start of the day, week, month or quarter, when asked) and the KPI's values.

Ratios with a zero (or null) denominator are null, never 0 or infinity: a CTR of a campaign
without impressions is unknown, not zero.

>>> import touchline
>>> from touchline.metrics.kpis import KPIS, compute
>>> KPIS["search_ctr"].formula
'clicks / impressions'
>>> wh = touchline.open("duckdb://")  # an empty warehouse: nothing imported yet
>>> try:
...     compute(wh.con, "search_ctr", by=["month", "query"])
... except MissingInputError as exc:
...     print(exc)
KPI 'search_ctr' needs search_console rows and the table is empty: import them with
`touchline ingest FILE --kind search_console`
>>> try:
...     compute(wh.con, "serch_ctr")
... except UnknownKPIError as exc:
...     print(exc)
unknown KPI 'serch_ctr' (did you mean 'search_ctr'?); `touchline kpis --list` shows every KPI
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import TYPE_CHECKING

import ibis
import ibis.expr.types as ir

from touchline.errors import MissingInputError, UnknownKPIError, did_you_mean

if TYPE_CHECKING:
    from ibis.backends import BaseBackend

log = logging.getLogger(__name__)

#: lifecycle stages (the ``lifecycle`` preset), in order: every KPI belongs to one
STAGES = ("awareness", "consideration", "decision", "retention", "advocacy")
#: a lifecycle stage's counterpart in the other preset stage models
PRESET_STAGES: dict[str, dict[str, str]] = {
    "awareness": {"funnel": "top", "hourglass": "know", "b2b": "first touch"},
    "consideration": {"funnel": "top", "hourglass": "like", "b2b": "first touch"},
    "decision": {"funnel": "middle", "hourglass": "buy", "b2b": "opportunity"},
    "retention": {"funnel": "bottom", "hourglass": "repeat", "b2b": "closed won"},
    "advocacy": {"funnel": "bottom", "hourglass": "refer", "b2b": "closed won"},
}
#: period grains: ``by`` entry or ``period`` → Ibis truncation unit
PERIODS = {"day": "D", "week": "W", "month": "M", "quarter": "Q"}
#: every breakdown a KPI may offer (which ones a KPI offers depends on the tables it reads)
DIMENSIONS = ("period", "channel", "source", "medium", "campaign", "keyword", "landing_page",
              "device", "segment", "query", "country")
#: what fills a null breakdown value (as ``journey_touches`` does)
NOT_SET = "(not set)"
UNASSIGNED = "Unassigned"
#: the conversion type most KPIs count, and the attribution model they credit by default
CONVERSION_DEFAULT = "purchase"
LEAD_CONVERSION = "lead"
MODEL_DEFAULT = "linear"
#: GA4's engaged session: at least this long, or this many page views, or a conversion
ENGAGED_SECONDS = 10
ENGAGED_PAGEVIEWS = 2
#: NPS bands (scores 0-10) and the normal quantile of its 95 % interval
PROMOTER_MIN, DETRACTOR_MAX = 9, 6
Z_95 = 1.959963984540054
QUANTILES = {"median": 0.5, "p75": 0.75, "p90": 0.9}
#: the command that fills each input table
IMPORTS = {
    "search_console": "touchline ingest FILE --kind search_console",
    "spend": "touchline ingest FILE --kind spend",
    "surveys": "touchline ingest FILE --kind surveys",
    "sessions": "touchline run (or touchline prepare) after `touchline ingest FILE --kind events`",
    "identities": "touchline run (or touchline prepare) after `touchline ingest FILE --kind "
                  "events`",
    "journeys": "touchline run",
    "journey_touches": "touchline run",
    "credits": "touchline run",
}
_ZERO = "null (no denominator to divide by)"


@dataclass(frozen=True)
class Query:
    """What a KPI is asked for: breakdowns, period grain, time window and options."""

    by: tuple[str, ...] = ()
    period: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    model: str = MODEL_DEFAULT
    conversion: str = CONVERSION_DEFAULT

    @property
    def keys(self) -> tuple[str, ...]:
        """The output's key columns, in order."""
        return (("period",) if self.period else ()) + self.by


KPIFunction = Callable[["BaseBackend", Query], ir.Table]


@dataclass(frozen=True)
class KPI:
    """A registered KPI: what it measures and how, with the function that computes it."""

    name: str
    stage: str  # lifecycle stage
    unit: str
    formula: str
    tables: tuple[str, ...]
    dimensions: tuple[str, ...]
    zero_denominator: str
    compute: KPIFunction
    #: value columns of the result (besides the ``by`` columns)
    values: tuple[str, ...]
    doc: str = ""
    #: options of :class:`Query` the KPI reads (``model``, ``conversion``)
    options: tuple[str, ...] = ()
    stages: Mapping[str, str] = field(default_factory=dict)


KPIS: dict[str, KPI] = {}


def register(name: str, *, stage: str, unit: str, formula: str, tables: Sequence[str],
             dimensions: Sequence[str], values: Sequence[str] | None = None,
             zero_denominator: str = "not a ratio", options: Sequence[str] = (),
             ) -> Callable[[KPIFunction], KPIFunction]:
    """Register the decorated function as KPI ``name`` (filled at import, then only read)."""
    if stage not in STAGES:
        raise ValueError(f"KPI {name!r}: stage {stage!r} is not one of {', '.join(STAGES)}")
    unknown = set(dimensions) - set(DIMENSIONS)
    if unknown:
        raise ValueError(f"KPI {name!r}: unknown dimensions {sorted(unknown)}")

    def decorate(fn: KPIFunction) -> KPIFunction:
        if name in KPIS:
            raise ValueError(f"KPI {name!r} registered twice")
        KPIS[name] = KPI(
            name=name, stage=stage, unit=unit, formula=formula, tables=tuple(tables),
            dimensions=tuple(dimensions), zero_denominator=zero_denominator, compute=fn,
            values=tuple(values or (name,)), doc=(fn.__doc__ or "").strip(),
            options=tuple(options), stages={"lifecycle": stage, **PRESET_STAGES[stage]})
        return fn

    return decorate


# ---- the one way every KPI reads its inputs -------------------------------------------------

def lookup(name: str) -> KPI:
    """The KPI called ``name``; :class:`UnknownKPIError` naming the nearest one otherwise."""
    if name not in KPIS:
        raise UnknownKPIError(f"unknown KPI {name!r}{did_you_mean(name, KPIS)}; "
                              "`touchline kpis --list` shows every KPI")
    return KPIS[name]


def for_stage(stage: str) -> list[KPI]:
    """The KPIs of ``stage``: a lifecycle stage, or a stage of another preset model."""
    known = {*STAGES, *(s for m in PRESET_STAGES.values() for s in m.values())}
    if stage not in known:
        raise UnknownKPIError(f"unknown stage {stage!r}{did_you_mean(stage, sorted(known))}: "
                              f"choose from {', '.join(STAGES)} (or a stage of the funnel, "
                              "hourglass or b2b presets)")
    return [k for k in KPIS.values() if stage in k.stages.values()]


def _query(kpi: KPI, by: Sequence[str], period: str | None, since: date | None,
           until: date | None, model: str, conversion: str) -> Query:
    grains = [b for b in by if b in PERIODS or b == "period"]
    rest = tuple(b for b in by if b not in grains)
    for grain in grains:
        grain = "month" if grain == "period" else grain
        if period not in (None, grain):
            raise UnknownKPIError(f"two period grains asked: {period!r} and {grain!r}")
        period = grain
    if period is not None and period not in PERIODS:
        raise UnknownKPIError(f"unknown period {period!r}{did_you_mean(period, PERIODS)}: "
                              f"choose from {', '.join(PERIODS)}")
    for dim in rest:
        if dim not in DIMENSIONS:
            raise UnknownKPIError(
                f"unknown dimension {dim!r}{did_you_mean(dim, [*DIMENSIONS, *PERIODS])}: "
                f"choose from {', '.join((*PERIODS, *DIMENSIONS[1:]))}")
    asked = (*rest, *(("period",) if period else ()))
    for dim in asked:
        if dim not in kpi.dimensions:
            offered = ", ".join(kpi.dimensions) or "none"
            raise UnknownKPIError(
                f"KPI {kpi.name!r} cannot be broken down by {dim!r}: its tables "
                f"({', '.join(kpi.tables)}) hold {offered}"
                + ("" if dim != "segment" else "; no stored table holds a segment yet"))
    if len(set(rest)) != len(rest):
        raise UnknownKPIError(f"a dimension is asked twice in {list(rest)}")

    def moment(value: date | None) -> datetime | None:
        if value is None or isinstance(value, datetime):
            return value
        return datetime(value.year, value.month, value.day)

    return Query(by=rest, period=period, since=moment(since), until=moment(until), model=model,
                 conversion=conversion)


def require(con: BaseBackend, kpi: KPI) -> None:
    """Raise :class:`MissingInputError` unless every input table of ``kpi`` holds rows."""
    existing = set(con.list_tables())
    for name in kpi.tables:
        if name not in existing or con.table(name).limit(1).count().execute() == 0:
            raise MissingInputError(
                f"KPI {kpi.name!r} needs {name} rows and the table is "
                f"{'empty' if name in existing else 'missing'}: "
                + (f"import them with `{IMPORTS[name]}`" if "ingest" in IMPORTS[name]
                   and not IMPORTS[name].startswith("touchline run")
                   else f"fill it with `{IMPORTS[name]}`"))


def compute(con: BaseBackend, name: str, *, by: Sequence[str] = (), period: str | None = None,
            since: date | None = None, until: date | None = None, model: str = MODEL_DEFAULT,
            conversion: str = CONVERSION_DEFAULT) -> ir.Table:
    """KPI ``name`` over the stored tables of ``con``: the ``period`` and ``by`` columns, then
    the KPI's values, one row per combination present in the data.

    ``by`` takes dimensions (:data:`DIMENSIONS`) and period grains (``day`` … ``quarter``,
    the same as ``period=``); ``since`` (inclusive) and ``until`` (exclusive) bound the KPI's
    own time (a session's start, a conversion, a spend day); ``model`` is the attribution
    model whose stored credits the credited KPIs sum, ``conversion`` the conversion type.
    """
    kpi = lookup(name)
    q = _query(kpi, by, period, since, until, model, conversion)
    require(con, kpi)
    return kpi.compute(con, q)


# ---- shared building blocks -----------------------------------------------------------------

def _ratio(numerator: ir.NumericValue, denominator: ir.NumericValue) -> ir.FloatingValue:
    """``numerator / denominator``; null when the denominator is 0 or null."""
    return numerator.cast("float64") / denominator.cast("float64").nullif(0.0)


def _in_window(t: ir.Table, at: ir.Value, q: Query) -> ir.Table:
    keep = ibis.literal(True)
    if at.type().is_date():
        if q.since is not None:
            keep &= at >= ibis.literal(q.since.date())
        if q.until is not None:
            keep &= at < ibis.literal(q.until.date())
    else:
        if q.since is not None:
            keep &= at >= ibis.literal(q.since)
        if q.until is not None:
            keep &= at < ibis.literal(q.until)
    return t.filter(keep)


def _keyed(t: ir.Table, q: Query, *, at: ir.Value, dims: Mapping[str, ir.Value]) -> ir.Table:
    """``t`` within the window, with the key columns (``period``, the ``by`` dimensions)."""
    keys: dict[str, ir.Value] = {}
    if q.period:
        keys["period"] = at.truncate(PERIODS[q.period]).cast("date")
    for dim in q.by:
        keys[dim] = dims[dim]
    return _in_window(t, at, q).mutate(**keys)


def _aggregate(t: ir.Table, q: Query, **metrics: ir.Scalar) -> ir.Table:
    grouped = t.group_by(list(q.keys)) if q.keys else t
    return grouped.aggregate(**metrics)


def _levels(t: ir.Table, columns: Mapping[str, str]) -> dict[str, ir.Value]:
    """Breakdown values from ``t``'s columns, nulls as ``(not set)`` (channel: Unassigned)."""
    return {dim: t[col].cast("string").fill_null(UNASSIGNED if dim == "channel" else NOT_SET)
            for dim, col in columns.items()}


def _order(t: ir.Table, q: Query) -> ir.Table:
    return t.order_by(list(q.keys)) if q.keys else t


#: the session columns each touch breakdown reads
SESSION_LEVELS = {"channel": "channel", "source": "source", "medium": "medium",
                  "campaign": "campaign", "keyword": "term", "landing_page": "landing_page"}
SESSION_DIMS = ("period", *SESSION_LEVELS)


def _sessions(con: BaseBackend) -> ir.Table:
    """Sessions of known persons with ``_first``: whether it is the person's first session."""
    s = con.table("sessions")
    s = s.filter(s.person_id.notnull())
    rank = ibis.row_number().over(group_by="person_id", order_by=["started_at", "session_id"])
    return s.mutate(_first=rank == 0)


def first_touches(con: BaseBackend) -> ir.Table:
    """``person_id``, ``first_at`` and the person's first session's breakdown values (the
    acquisition channel, source… every person-level KPI breaks down by)."""
    s = _sessions(con)
    s = s.filter(s._first)
    return s.select("person_id", first_at=s.started_at, **_levels(s, SESSION_LEVELS))


# ---- awareness ------------------------------------------------------------------------------

SEARCH_LEVELS = {"query": "query", "landing_page": "page", "country": "country",
                 "device": "device"}
SEARCH_DIMS = ("period", *SEARCH_LEVELS)


def _search(con: BaseBackend, q: Query) -> ir.Table:
    sc = con.table("search_console")
    t = _keyed(sc, q, at=sc.date, dims=_levels(sc, SEARCH_LEVELS))
    return _aggregate(t, q, _clicks=t.clicks.sum(), _impressions=t.impressions.sum(),
                      _weighted=(t.position * t.impressions).sum(),
                      _positioned=ibis.ifelse(t.position.notnull(), t.impressions, 0).sum())


def _select(t: ir.Table, q: Query, **values: ir.Value) -> ir.Table:
    return _order(t.select(*q.keys, **values), q)


@register("search_clicks", stage="awareness", unit="clicks", formula="sum(clicks)",
          tables=["search_console"], dimensions=SEARCH_DIMS)
def search_clicks(con: BaseBackend, q: Query) -> ir.Table:
    """Clicks from Google organic results (Search Console)."""
    t = _search(con, q)
    return _select(t, q, search_clicks=t._clicks.cast("int64"))


@register("search_impressions", stage="awareness", unit="impressions",
          formula="sum(impressions)", tables=["search_console"], dimensions=SEARCH_DIMS)
def search_impressions(con: BaseBackend, q: Query) -> ir.Table:
    """Times a page of the site was shown in Google's organic results (Search Console)."""
    t = _search(con, q)
    return _select(t, q, search_impressions=t._impressions.cast("int64"))


@register("search_ctr", stage="awareness", unit="ratio", formula="clicks / impressions",
          tables=["search_console"], dimensions=SEARCH_DIMS, zero_denominator=_ZERO)
def search_ctr(con: BaseBackend, q: Query) -> ir.Table:
    """Organic click-through rate: the share of impressions that were clicked."""
    t = _search(con, q)
    return _select(t, q, search_ctr=_ratio(t._clicks, t._impressions))


@register("search_position", stage="awareness", unit="position (1 = top)",
          formula="sum(position * impressions) / sum(impressions)",
          tables=["search_console"], dimensions=SEARCH_DIMS,
          zero_denominator=_ZERO)
def search_position(con: BaseBackend, q: Query) -> ir.Table:
    """Average position, weighted by impressions as Search Console averages it: a row with
    1,000 impressions at position 2 weighs 100 times one with 10 at position 8. Rows without
    a position are left out of both sums."""
    t = _search(con, q)
    return _select(t, q, search_position=_ratio(t._weighted, t._positioned))


SPEND_LEVELS = {"channel": "channel", "source": "utm_source", "medium": "utm_medium",
                "campaign": "utm_campaign", "keyword": "keyword"}
SPEND_DIMS = ("period", *SPEND_LEVELS)


def _spend(con: BaseBackend, q: Query) -> ir.Table:
    sp = con.table("spend")
    t = _keyed(sp, q, at=sp.date, dims=_levels(sp, SPEND_LEVELS))
    scored = t.quality_score.notnull() & t.impressions.notnull()
    return _aggregate(t, q, _cost=t.cost.sum(), _impressions=t.impressions.sum(),
                      _clicks=t.clicks.sum(),
                      _qs_weighted=ibis.ifelse(scored, t.quality_score * t.impressions, 0).sum(),
                      _qs_impressions=ibis.ifelse(scored, t.impressions, 0).sum())


@register("paid_cost", stage="awareness", unit="currency", formula="sum(cost)",
          tables=["spend"], dimensions=SPEND_DIMS)
def paid_cost(con: BaseBackend, q: Query) -> ir.Table:
    """Advertising cost, as the spend imports give it (in their own currency)."""
    t = _spend(con, q)
    return _select(t, q, paid_cost=t._cost)


@register("paid_impressions", stage="awareness", unit="impressions",
          formula="sum(impressions)", tables=["spend"], dimensions=SPEND_DIMS)
def paid_impressions(con: BaseBackend, q: Query) -> ir.Table:
    """Ad impressions from the spend imports."""
    t = _spend(con, q)
    return _select(t, q, paid_impressions=t._impressions.cast("int64"))


@register("paid_clicks", stage="awareness", unit="clicks", formula="sum(clicks)",
          tables=["spend"], dimensions=SPEND_DIMS)
def paid_clicks(con: BaseBackend, q: Query) -> ir.Table:
    """Ad clicks as the ad platforms count them (tracked visits are fewer: some clicks never
    load the page)."""
    t = _spend(con, q)
    return _select(t, q, paid_clicks=t._clicks.cast("int64"))


@register("paid_ctr", stage="awareness", unit="ratio", formula="sum(clicks) / sum(impressions)",
          tables=["spend"], dimensions=SPEND_DIMS, zero_denominator=_ZERO)
def paid_ctr(con: BaseBackend, q: Query) -> ir.Table:
    """Ad click-through rate."""
    t = _spend(con, q)
    return _select(t, q, paid_ctr=_ratio(t._clicks, t._impressions))


@register("paid_cpc", stage="awareness", unit="currency per click",
          formula="sum(cost) / sum(clicks)", tables=["spend"], dimensions=SPEND_DIMS,
          zero_denominator=_ZERO)
def paid_cpc(con: BaseBackend, q: Query) -> ir.Table:
    """Cost per click."""
    t = _spend(con, q)
    return _select(t, q, paid_cpc=_ratio(t._cost, t._clicks))


@register("paid_cpm", stage="awareness", unit="currency per 1,000 impressions",
          formula="1000 * sum(cost) / sum(impressions)", tables=["spend"],
          dimensions=SPEND_DIMS, zero_denominator=_ZERO)
def paid_cpm(con: BaseBackend, q: Query) -> ir.Table:
    """Cost per thousand impressions."""
    t = _spend(con, q)
    return _select(t, q, paid_cpm=1000.0 * _ratio(t._cost, t._impressions))


@register("paid_quality_score", stage="awareness", unit="score (1-10)",
          formula="sum(quality_score * impressions) / sum(impressions), rows with a score",
          tables=["spend"], dimensions=SPEND_DIMS,
          zero_denominator="null (no row with a quality score and impressions)")
def paid_quality_score(con: BaseBackend, q: Query) -> ir.Table:
    """Keyword quality score, weighted by impressions; rows without a score are left out."""
    t = _spend(con, q)
    return _select(t, q, paid_quality_score=_ratio(t._qs_weighted, t._qs_impressions))


@register("new_visitors", stage="awareness", unit="persons",
          formula="count(persons whose first session ever falls in the group)",
          tables=["sessions"], dimensions=SESSION_DIMS)
def new_visitors(con: BaseBackend, q: Query) -> ir.Table:
    """People seen for the first time, by the channel, source… of their first session; the
    period is that session's start."""
    f = first_touches(con)
    t = _keyed(f, q, at=f.first_at, dims={d: f[d] for d in SESSION_LEVELS})
    return _order(_aggregate(t, q, new_visitors=t.person_id.nunique().cast("int64")), q)


# ---- consideration --------------------------------------------------------------------------

def _session_groups(con: BaseBackend, q: Query) -> ir.Table:
    s = _sessions(con)
    return _keyed(s, q, at=s.started_at, dims=_levels(s, SESSION_LEVELS))


@register("sessions", stage="consideration", unit="sessions", formula="count(sessions)",
          tables=["sessions"], dimensions=SESSION_DIMS)
def sessions(con: BaseBackend, q: Query) -> ir.Table:
    """Visits of known persons (every prepared session has one)."""
    t = _session_groups(con, q)
    return _order(_aggregate(t, q, sessions=t.count().cast("int64")), q)


@register("returning_visitors", stage="consideration", unit="persons",
          formula="count(distinct persons with a session in the group that is not their first)",
          tables=["sessions"], dimensions=SESSION_DIMS)
def returning_visitors(con: BaseBackend, q: Query) -> ir.Table:
    """People who came back: a person whose first visit was in March and who returned in
    April is new in March and returning in April (and both, in a month with both)."""
    t = _session_groups(con, q)
    return _order(_aggregate(t, q, returning_visitors=ibis.ifelse(
        t._first, ibis.null("string"), t.person_id).nunique().cast("int64")), q)


@register("new_sessions", stage="consideration", unit="sessions",
          formula="count(sessions that are their person's first)", tables=["sessions"],
          dimensions=SESSION_DIMS)
def new_sessions(con: BaseBackend, q: Query) -> ir.Table:
    """First visits."""
    t = _session_groups(con, q)
    return _order(_aggregate(t, q, new_sessions=t._first.cast("int64").sum()), q)


@register("returning_sessions", stage="consideration", unit="sessions",
          formula="count(sessions that are not their person's first)", tables=["sessions"],
          dimensions=SESSION_DIMS)
def returning_sessions(con: BaseBackend, q: Query) -> ir.Table:
    """Return visits."""
    t = _session_groups(con, q)
    return _order(_aggregate(t, q, returning_sessions=(~t._first).cast("int64").sum()), q)


@register("sessions_per_visitor", stage="consideration", unit="sessions per person",
          formula="count(sessions) / count(distinct persons)", tables=["sessions"],
          dimensions=SESSION_DIMS, zero_denominator=_ZERO)
def sessions_per_visitor(con: BaseBackend, q: Query) -> ir.Table:
    """Visits per visitor in the group."""
    t = _session_groups(con, q)
    return _order(_aggregate(t, q, sessions_per_visitor=_ratio(
        t.count(), t.person_id.nunique())), q)


@register("pages_per_visitor", stage="consideration", unit="page views per person",
          formula="sum(pageview_count) / count(distinct persons)", tables=["sessions"],
          dimensions=SESSION_DIMS, zero_denominator=_ZERO)
def pages_per_visitor(con: BaseBackend, q: Query) -> ir.Table:
    """Page (and screen) views per visitor."""
    t = _session_groups(con, q)
    return _order(_aggregate(t, q, pages_per_visitor=_ratio(
        t.pageview_count.sum(), t.person_id.nunique())), q)


def _engaged(t: ir.Table) -> ir.BooleanValue:
    return ((t.duration_seconds >= ENGAGED_SECONDS).fill_null(False)
            | (t.pageview_count >= ENGAGED_PAGEVIEWS).fill_null(False)
            | (t.conversion_count >= 1).fill_null(False))


@register("engaged_sessions", stage="consideration", unit="sessions",
          formula=f"count(sessions with duration >= {ENGAGED_SECONDS} s or >= "
          f"{ENGAGED_PAGEVIEWS} page views or a conversion)",
          tables=["sessions"], dimensions=SESSION_DIMS)
def engaged_sessions(con: BaseBackend, q: Query) -> ir.Table:
    """GA4's engaged session. The duration is the session's first to last touch (touchline
    has no engagement timer), so a one-page visit of a minute is not engaged unless it holds a
    conversion."""
    t = _session_groups(con, q)
    return _order(_aggregate(t, q, engaged_sessions=_engaged(t).cast("int64").sum()), q)


@register("engagement_rate", stage="consideration", unit="ratio",
          formula="engaged_sessions / sessions", tables=["sessions"],
          dimensions=SESSION_DIMS, zero_denominator=_ZERO)
def engagement_rate(con: BaseBackend, q: Query) -> ir.Table:
    """Share of sessions that were engaged (GA4's engagement rate)."""
    t = _session_groups(con, q)
    return _order(_aggregate(t, q, engagement_rate=_ratio(
        _engaged(t).cast("int64").sum(), t.count())), q)


def _converting_journeys(con: BaseBackend, q: Query) -> ir.Table:
    """Converting journeys of ``q.conversion`` with their first touch's breakdown values."""
    j = con.table("journeys")
    j = j.filter((j.conversion == q.conversion) & j.converted)
    jt = con.table("journey_touches")
    first = jt.filter(jt.position == 1).select(
        _journey="journey_id", **{d: jt[d] for d in SESSION_LEVELS})
    j = j.left_join(first, j.journey_id == first._journey)
    return _keyed(j, q, at=j.converted_at, dims=_levels(j, {d: d for d in SESSION_LEVELS}))


def _check_conversion(con: BaseBackend, q: Query) -> None:
    known = sorted(con.table("journeys").conversion.distinct().to_pyarrow().to_pylist())
    if q.conversion not in known:
        raise UnknownKPIError(f"conversion type {q.conversion!r}"
                              f"{did_you_mean(q.conversion, known)} has no journeys: the "
                              f"stored ones are {', '.join(map(str, known)) or 'none'}")


def _spread(values: ir.NumericValue, count: ir.Scalar) -> dict[str, ir.Scalar]:
    return {"conversions": count.cast("int64"),
            **{name: values.quantile(p) for name, p in QUANTILES.items()}}


@register("visits_to_convert", stage="consideration", unit="sessions",
          formula="median, p75, p90 of journeys.touches over converting journeys",
          tables=["journeys", "journey_touches"], dimensions=SESSION_DIMS,
          values=("conversions", *QUANTILES), options=("conversion",))
def visits_to_convert(con: BaseBackend, q: Query) -> ir.Table:
    """How many visits a converting journey held (quantiles interpolate), by the journey's
    first touch and the conversion's period; a repeat purchase's journey starts after the
    previous one."""
    _check_conversion(con, q)
    t = _converting_journeys(con, q)
    return _order(_aggregate(t, q, **_spread(t.touches.cast("float64"), t.count())), q)


@register("days_to_convert", stage="consideration", unit="days",
          formula="median, p75, p90 of converted_at - first_touch_at over converting journeys",
          tables=["journeys", "journey_touches"], dimensions=SESSION_DIMS,
          values=("conversions", *QUANTILES), options=("conversion",))
def days_to_convert(con: BaseBackend, q: Query) -> ir.Table:
    """Days from a converting journey's first touch to its conversion (journeys without a
    touch in their window are left out)."""
    _check_conversion(con, q)
    t = _converting_journeys(con, q)
    t = t.filter(t.days_to_convert.notnull())
    return _order(_aggregate(t, q, **_spread(t.days_to_convert, t.count())), q)
