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
import uuid
from collections.abc import Callable, Collection, Hashable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from typing import TYPE_CHECKING, Any, TypeVar

import ibis
import ibis.expr.types as ir

from touchline import engine, store
from touchline.config import Settings
from touchline.errors import MissingInputError, TouchlineError, UnknownKPIError, did_you_mean
from touchline.metrics.dimensions import session_devices

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
              "device", "segment", "query", "country", "platform", "page")
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
    "deals": "touchline ingest FILE --kind deals",
    "surveys": "touchline ingest FILE --kind surveys",
    "social": "touchline ingest FILE --kind social",
    "reviews": "touchline ingest FILE --kind reviews",
    "sessions": "touchline run (or touchline prepare) after `touchline ingest FILE --kind events`",
    "identities": "touchline run (or touchline prepare) after `touchline ingest FILE --kind "
                  "events`",
    "touchpoints": "touchline run (or touchline prepare) after `touchline ingest FILE --kind "
                   "events`",
    "journeys": "touchline run",
    "stages": "touchline run",
    "journey_touches": "touchline run",
    "credits": "touchline run",
}
_ZERO = "null (no denominator to divide by)"
#: input tables without a device, so their KPIs refuse ``by=["device"]``, and why
NO_DEVICE = {
    "spend": " (the spend imports give cost by channel, campaign and keyword; cost cannot be "
             "split by the device of the visits it bought)",
    "social": " (an account's followers and engagements are the platform's, not a visit's)",
    "stages": " (stage entries are counted per journey unit)",
    "surveys": " for the heard-about matrix (it compares answers with channels only)",
}


@dataclass(frozen=True)
class Query:
    """What a KPI is asked for: breakdowns, period grain, time window and options."""

    by: tuple[str, ...] = ()
    period: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    model: str = MODEL_DEFAULT
    conversion: str = CONVERSION_DEFAULT
    #: the settings the event-defined KPIs read (CTA and form events, referral events, the
    #: heard-about rules); None: the defaults
    settings: Settings | None = None

    @property
    def config(self) -> Settings:
        """The settings given, else the defaults (environment and touchline.toml)."""
        return self.settings if self.settings is not None else Settings()

    @property
    def keys(self) -> tuple[str, ...]:
        """The output's key columns, in order."""
        return (("period",) if self.period else ()) + self.by


KPIFunction = Callable[["BaseBackend", Query], ir.Table]
#: a check a KPI makes of the stored tables before its table is built
Check = Callable[["BaseBackend", Query], None]


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
    #: True: the KPI needs rows in any one of its tables (reviews come from review exports or
    #: survey answers), not in all of them
    any_table: bool = False
    #: True: the KPI is a table (cohorts, a distribution, a matrix, stage rows), not one
    #: headline value per group
    table: bool = False
    #: True: the KPI is always by period (churn compares each period with the one before:
    #: a month when none is asked), so it has no one headline value either
    per_period: bool = False
    #: the :class:`Family` whose aggregate the KPI's values are read from (None: its own
    #: function computes it)
    family: str | None = None
    #: what the KPI asks of its family's aggregate beyond its sums (``first``: the first
    #: sessions joined), so a KPI alone builds no more than it reads
    needs: tuple[str, ...] = ()
    #: checks made before the family's aggregate is built (a stored conversion type, a
    #: stored model): the KPI's own refusal, not its family's
    checks: tuple[Check, ...] = ()
    #: a family KPI's values (name → expression, in order) over its family's aggregate
    family_values: FamilyValues | None = None
    #: the value column that stands for the KPI when none is named after it (the followers
    #: of ``social_followers``); None: the KPI's own column, else the median
    headline_value: str | None = None

    @property
    def headline(self) -> str:
        """The value column that stands for the KPI in one figure: its own, the one it names
        (:attr:`headline_value`), or the median of a spread (``days_to_convert``)."""
        if self.name in self.values:
            return self.name
        return self.headline_value if self.headline_value is not None else "median"


#: a :class:`Family`'s aggregate: the sums (counts, quantiles…) its KPIs read, one row per
#: combination of ``q.keys``, with the extras the KPIs asked for (:attr:`KPI.needs`)
FamilyAggregate = Callable[["BaseBackend", Query, frozenset[str]], ir.Table]
#: a family KPI's values (name → expression) over its family's aggregate
FamilyValues = Callable[[ir.Table], Mapping[str, ir.Value]]


@dataclass(frozen=True)
class Family:
    """KPIs read from one aggregate of one input (the sessions, the spend, the credits…):
    each KPI of the family is its values over the aggregate's columns, so one KPI alone
    (:func:`compute`) and many at once (:func:`compute_family`, one pass over the input: the
    dashboard's headlines) read the same definitions and cannot disagree."""

    name: str
    aggregate: FamilyAggregate
    doc: str = ""


KPIS: dict[str, KPI] = {}
#: the KPI families, by name (filled at import, then only read)
FAMILIES: dict[str, Family] = {}
#: sections of docs/kpis.md after the table, by the module that registers their KPIs (filled
#: at import, then only read): a KPI family with more to say than a formula (CLV's models)
DOC_SECTIONS: dict[str, str] = {}


def _add(name: str, compute: KPIFunction, doc: str | None, *, stage: str, unit: str,
         formula: str, tables: Sequence[str], dimensions: Sequence[str],
         values: Sequence[str] | None = None, zero_denominator: str = "not a ratio",
         options: Sequence[str] = (), any_table: bool = False, table: bool = False,
         per_period: bool = False, family: str | None = None, needs: Sequence[str] = (),
         checks: Sequence[Check] = (), family_values: FamilyValues | None = None,
         headline: str | None = None) -> None:
    if stage not in STAGES:
        raise ValueError(f"KPI {name!r}: stage {stage!r} is not one of {', '.join(STAGES)}")
    unknown = set(dimensions) - set(DIMENSIONS)
    if unknown:
        raise ValueError(f"KPI {name!r}: unknown dimensions {sorted(unknown)}")
    if name in KPIS:
        raise ValueError(f"KPI {name!r} registered twice")
    KPIS[name] = KPI(
        name=name, stage=stage, unit=unit, formula=formula, tables=tuple(tables),
        dimensions=tuple(dimensions), zero_denominator=zero_denominator, compute=compute,
        values=tuple(values or (name,)), doc=(doc or "").strip(), options=tuple(options),
        stages={"lifecycle": stage, **PRESET_STAGES[stage]}, any_table=any_table,
        table=table, per_period=per_period, family=family, needs=tuple(needs),
        checks=tuple(checks), family_values=family_values, headline_value=headline)
    if headline is not None and headline not in KPIS[name].values:
        raise ValueError(f"KPI {name!r}: its headline {headline!r} is not one of its values")


def register(name: str, *, stage: str, unit: str, formula: str, tables: Sequence[str],
             dimensions: Sequence[str], values: Sequence[str] | None = None,
             zero_denominator: str = "not a ratio", options: Sequence[str] = (),
             any_table: bool = False, table: bool = False, per_period: bool = False,
             headline: str | None = None) -> Callable[[KPIFunction], KPIFunction]:
    """Register the decorated function as KPI ``name`` (filled at import, then only read);
    ``headline``: the value column standing for it in one figure when none is named after
    it."""
    def decorate(fn: KPIFunction) -> KPIFunction:
        _add(name, fn, fn.__doc__, stage=stage, unit=unit, formula=formula, tables=tables,
             dimensions=dimensions, values=values, zero_denominator=zero_denominator,
             options=options, any_table=any_table, table=table, per_period=per_period,
             headline=headline)
        return fn

    return decorate


def family(name: str) -> Callable[[FamilyAggregate], FamilyAggregate]:
    """Register the decorated function as the aggregate of KPI family ``name``: given ``q``
    and what its KPIs need, the sums they read, one row per combination of ``q.keys``."""
    def decorate(fn: FamilyAggregate) -> FamilyAggregate:
        if name in FAMILIES:
            raise ValueError(f"KPI family {name!r} registered twice")
        FAMILIES[name] = Family(name, fn, (fn.__doc__ or "").strip())
        return fn

    return decorate


def register_in(family_name: str, name: str, *, needs: Sequence[str] = (),
                checks: Sequence[Check] = (), stage: str, unit: str, formula: str,
                tables: Sequence[str], dimensions: Sequence[str],
                values: Sequence[str] | None = None, zero_denominator: str = "not a ratio",
                options: Sequence[str] = (), headline: str | None = None
                ) -> Callable[[FamilyValues], FamilyValues]:
    """Register the decorated function as KPI ``name`` of family ``family_name``: its values
    (name → expression, in order) over the family's aggregate. ``needs``: what it asks of the
    aggregate beyond the family's sums; ``checks``: its refusals (an unknown conversion type)
    made before the aggregate is built; ``headline``: the value standing for it in one
    figure when none is named after it. Alone, the KPI is its values over the family's
    aggregate built for it; with its family (:func:`compute_family`), one aggregate serves
    all."""
    if family_name not in FAMILIES:
        raise ValueError(f"KPI {name!r}: unknown family {family_name!r}")

    def decorate(fn: FamilyValues) -> FamilyValues:
        def alone(con: BaseBackend, q: Query) -> ir.Table:
            for check in checks:
                check(con, q)
            a = _family_aggregate(con, q, [KPIS[name]])
            return _order(a.select(*q.keys, **fn(a)), q)

        _add(name, alone, fn.__doc__, stage=stage, unit=unit, formula=formula, tables=tables,
             dimensions=dimensions, values=values, zero_denominator=zero_denominator,
             options=options, family=family_name, needs=needs, checks=checks,
             family_values=fn, headline=headline)
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


def for_stage_model(model: str, settings: Settings) -> list[tuple[str, list[KPI]]]:
    """The stages of stage model ``model`` in its order, each with its KPIs (registry order;
    a stage no KPI belongs to, like the hourglass's ``trust``, has none).

    KPIs register their stage in the preset stage models (:data:`PRESET_STAGES`), so a stage
    model of your own (``settings.stage_models``) has no KPIs: :class:`UnknownKPIError` says
    so, as it names the nearest model for a name that is no stage model at all. A preset you
    redefined keeps the KPIs' registered stages; one it lacks comes after its own stages.
    """
    models = settings.all_stage_models()
    if model not in models:
        raise UnknownKPIError(f"unknown stage model {model!r}{did_you_mean(model, models)}: "
                              f"choose from {', '.join(models)}")
    registered = list(dict.fromkeys(m for k in KPIS.values() for m in k.stages))
    if model not in registered:
        raise UnknownKPIError(
            f"stage model {model!r} is your own: KPIs register their stage in the preset stage "
            f"models only ({', '.join(registered)}); choose one of them, or --stage")
    order = [s.name for s in models[model]]
    order += [s for s in dict.fromkeys(k.stages[model] for k in KPIS.values()) if s not in order]
    return [(stage, [k for k in KPIS.values() if k.stages[model] == stage]) for stage in order]


def check_dimensions(by: Sequence[str], period: str | None) -> tuple[tuple[str, ...],
                                                                    str | None]:
    """``by`` without its period grains, and the period grain: :class:`UnknownKPIError`
    naming the nearest valid name for a dimension or grain touchline does not know."""
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
    if len(set(rest)) != len(rest):
        raise UnknownKPIError(f"a dimension is asked twice in {list(rest)}")
    return rest, period


def _query(kpi: KPI, by: Sequence[str], period: str | None, since: date | None,
           until: date | None, model: str, conversion: str,
           settings: Settings | None) -> Query:
    rest, period = check_dimensions(by, period)
    asked = (*rest, *(("period",) if period else ()))
    for dim in asked:
        if dim not in kpi.dimensions:
            offered = ", ".join(kpi.dimensions) or "none"
            hint = ""
            if dim == "segment":
                hint = "; only survey answers hold a segment"
            elif dim == "device":
                why = next((f"; {table} rows hold no device{reason}"
                            for table, reason in NO_DEVICE.items() if table in kpi.tables), "")
                hint = (f"{why}; the KPIs that break down by device: "
                        + ", ".join(k.name for k in KPIS.values() if "device" in k.dimensions))
            raise UnknownKPIError(
                f"KPI {kpi.name!r} cannot be broken down by {dim!r}: its tables "
                f"({', '.join(kpi.tables)}) hold {offered}{hint}")

    def moment(value: date | None) -> datetime | None:
        if value is None or isinstance(value, datetime):
            return value
        return datetime(value.year, value.month, value.day)

    return Query(by=rest, period=period, since=moment(since), until=moment(until), model=model,
                 conversion=conversion, settings=settings)


#: a view holds a row when the stored table it adds columns to does (every touch has its
#: session, every journey step its journey and session), so that table is asked: a ``LIMIT 1``
#: on the view first builds its joins' hash tables (a second at 3M events on DuckDB)
_ROWS_OF = {"touchpoints": "touches", "journey_touches": "journey_steps"}


def _rows_of(con: BaseBackend, name: str) -> ir.Table:
    """Table ``name``, or for one of the views of :data:`_ROWS_OF` the table its rows come from
    (a table of the view's name, as tests load, is itself)."""
    if name in _ROWS_OF and _once_value(con, ("is_view", name),
                                        lambda: engine.is_view(con, name)):
        return con.table(_ROWS_OF[name])
    return con.table(name)


def _first_row(con: BaseBackend, name: str) -> ir.Table:
    """At most one row of table ``name`` (of the table its rows come from, for a view)."""
    return _rows_of(con, name).limit(1)


def filled_tables(con: BaseBackend, names: Iterable[str]) -> frozenset[str]:
    """Which of the tables ``names`` exist and hold a row, in one query (a page of many KPIs
    asks once, not once per KPI and table: on Spark each ask is a job)."""
    existing = set(con.list_tables())
    parts = [_first_row(con, name).select(table=ibis.literal(name))
             for name in sorted(set(names)) if name in existing]
    if not parts:
        return frozenset()
    found = ibis.union(*parts, distinct=False).to_pyarrow().column(0).to_pylist()
    return frozenset(str(name) for name in found)


def holds_rows(con: BaseBackend, name: str) -> bool:
    """Whether table ``name`` exists and holds a row. Inside :func:`computed_once` or a
    reader's :func:`~touchline.engine.schemas_read_once` block (a dashboard page), read from
    the tables of every KPI asked once (:func:`filled_once`), not asked again."""
    kept = _shared(con) is not None or engine.read_once_memo(con) is not None
    if kept and name in {t for k in KPIS.values() for t in k.tables}:
        return name in filled_once(con)
    return name in filled_tables(con, [name])


def filled_once(con: BaseBackend) -> frozenset[str]:
    """:func:`filled_tables` of every KPI's input tables; inside :func:`computed_once` or a
    reader's :func:`~touchline.engine.schemas_read_once` block, asked once and kept."""
    return _once_value(con, "filled", lambda: filled_tables(
        con, {t for k in KPIS.values() for t in k.tables}))


def require(con: BaseBackend, kpi: KPI, tables: Sequence[str] | None = None, *,
            filled: Collection[str] | None = None) -> None:
    """Raise :class:`MissingInputError` unless every input table of ``kpi`` (or ``tables``)
    holds rows: a KPI over a never-imported table would read as a real zero. ``filled``: the
    tables already known to hold rows (:func:`filled_tables`), so nothing is asked again
    (inside :func:`computed_once`, asked once for every KPI's tables)."""
    if filled is not None:
        known = filled
    elif _shared(con) is not None:
        known = filled_once(con)
    else:
        # the tables asked together, in one query (on Spark a job, not one a table)
        known = filled_tables(con, kpi.tables if tables is None else tables)

    def empty(name: str) -> bool:
        return name not in known

    if tables is None and kpi.any_table:
        if all(empty(name) for name in kpi.tables):
            raise MissingInputError(
                f"KPI {kpi.name!r} needs rows in one of {', '.join(kpi.tables)} and they are "
                "empty: " + " or ".join(f"`{IMPORTS[t]}`" for t in kpi.tables))
        return
    for name in kpi.tables if tables is None else tables:
        if empty(name):
            how = IMPORTS[name]
            raise MissingInputError(
                f"KPI {kpi.name!r} needs {name} rows and the table is "
                f"{'empty' if name in con.list_tables() else 'missing'}: "
                + (f"import them with `{how}`" if how.startswith("touchline ingest")
                   else f"fill it with `{how}`"))


# ---- what many KPIs read, computed once per call ------------------------------------------

@dataclass
class _Shared:
    """The intermediates of one :func:`computed_once` block: tables kept in the engine and
    small values (the filled tables, the stored conversion types and models)."""

    con: BaseBackend
    #: kept in memory, never in the warehouse file: the block reads (a dashboard page)
    in_memory: bool = False
    tables: dict[Hashable, ir.Table] = field(default_factory=dict)
    values: dict[Hashable, Any] = field(default_factory=dict)
    names: list[str] = field(default_factory=list)


_SHARED: ContextVar[_Shared | None] = ContextVar("touchline_kpis_shared", default=None)
_T = TypeVar("_T")


@contextmanager
def computed_once(con: BaseBackend) -> Iterator[BaseBackend]:
    """Within the block, what many KPIs read is computed once and kept for the others: the
    sessions of known persons with their first-session flag, each person's first touch, the
    credited touches of a model, the converting journeys with their first touch, the
    purchases, the identifiers reviews and answers are matched on (each kept in the engine by
    :func:`touchline.engine.materialise`, dropped when the block ends), and the input tables'
    schemas and emptiness, the stored conversion types and models (asked once). The figures
    are the same as without it (``tests/metrics/test_kpis_events.py`` checks every KPI both
    ways). For a caller computing many KPIs over tables that do not change meanwhile
    (``touchline kpis``, the benchmark, a dashboard page); a nested block on the same
    connection is the outer one. Inside a reader's
    :func:`~touchline.engine.schemas_read_once` block (a dashboard page), the intermediates
    stay in memory: a reader never writes the warehouse."""
    outer = _SHARED.get()
    if outer is not None and outer.con is con:
        yield con
        return
    shared = _Shared(con, in_memory=engine.read_once_memo(con) is not None)
    token = _SHARED.set(shared)
    try:
        with engine.schemas_read_once(con):
            yield con
    finally:
        _SHARED.reset(token)
        for name in shared.names:
            engine.drop_materialised(con, name, in_memory=shared.in_memory)


def _shared(con: BaseBackend) -> _Shared | None:
    shared = _SHARED.get()
    return shared if shared is not None and shared.con is con else None


def _once(con: BaseBackend, key: Hashable, build: Callable[[], ir.Table]) -> ir.Table:
    """``build()``; inside :func:`computed_once`, computed into the engine the first time and
    that table after; else inside :func:`touchline.engine.schemas_read_once` (a dashboard
    page), built the first time and the same expression after (the KPI page's fifty KPIs
    built the first sessions, the credits… each time: a quarter of its Python time).
    ``key`` names everything ``build`` depends on."""
    shared = _shared(con)
    if shared is None:
        memo = engine.read_once_memo(con)
        if memo is None:
            return build()
        if ("kpi", key) not in memo:
            memo["kpi", key] = build()
        return memo["kpi", key]
    if key not in shared.tables:
        name = f"_touchline_kpi_{len(shared.names)}_{uuid.uuid4().hex[:8]}"
        shared.names.append(name)
        shared.tables[key] = engine.materialise(con, name, build(),
                                                in_memory=shared.in_memory)
    return shared.tables[key]


def _once_value(con: BaseBackend, key: Hashable, fetch: Callable[[], _T]) -> _T:
    """``fetch()``; inside :func:`computed_once` or a reader's
    :func:`~touchline.engine.schemas_read_once` block (a dashboard page, whose tables do not
    change), asked the first time and kept after (the KPI page asked the stored conversion
    types and models once per KPI)."""
    shared = _shared(con)
    if shared is None:
        memo = engine.read_once_memo(con)
        if memo is None:
            return fetch()
        if ("kpi value", key) not in memo:
            memo["kpi value", key] = fetch()
        return memo["kpi value", key]
    if key not in shared.values:
        shared.values[key] = fetch()
    return shared.values[key]


def compute(con: BaseBackend, name: str, *, by: Sequence[str] = (), period: str | None = None,
            since: date | None = None, until: date | None = None, model: str = MODEL_DEFAULT,
            conversion: str = CONVERSION_DEFAULT, settings: Settings | None = None,
            filled: Collection[str] | None = None) -> ir.Table:
    """KPI ``name`` over the stored tables of ``con``: the ``period`` and ``by`` columns, then
    the KPI's values, one row per combination present in the data.

    ``by`` takes dimensions (:data:`DIMENSIONS`) and period grains (``day`` … ``quarter``,
    the same as ``period=``); ``since`` (inclusive) and ``until`` (exclusive) bound the KPI's
    own time (a session's start, a conversion, a spend day); ``model`` is the attribution
    model whose stored credits the credited KPIs sum, ``conversion`` the conversion type;
    ``settings`` name the CTA, form and referral events and the heard-about rules;
    ``filled``: the input tables known to hold rows (:func:`filled_tables`), for a caller
    computing many KPIs.
    """
    kpi = lookup(name)
    q = _query(kpi, by, period, since, until, model, conversion, settings)
    require(con, kpi, filled=filled)
    return kpi.compute(con, q)


def _family_aggregate(con: BaseBackend, q: Query, kpis: Sequence[KPI]) -> ir.Table:
    """The aggregate of the family of ``kpis`` with what they need (their checks passed)."""
    needs = frozenset(n for kpi in kpis for n in kpi.needs)
    return FAMILIES[str(kpis[0].family)].aggregate(con, q, needs)


def compute_family(con: BaseBackend, names: Sequence[str], *, by: Sequence[str] = (),
                   period: str | None = None, since: date | None = None,
                   until: date | None = None, model: str = MODEL_DEFAULT,
                   conversion: str = CONVERSION_DEFAULT, settings: Settings | None = None,
                   filled: Collection[str] | None = None
                   ) -> tuple[ir.Table | None, dict[str, str]]:
    """KPIs ``names``, all of one :class:`Family`, in one aggregate (one pass over their
    input): the ``period`` and ``by`` columns, then each KPI's :attr:`~KPI.headline` value in
    a column named after the KPI; the figures each gives alone (:func:`compute`). A KPI that
    cannot be computed (its input empty, a breakdown it lacks, an unknown conversion type or
    model) is left out and named with why, as :func:`compute` would say it; None when none
    is left."""
    kpis = [lookup(name) for name in names]
    families = {kpi.family for kpi in kpis}
    if len(families) != 1 or None in families:
        raise ValueError(f"compute_family: KPIs {list(names)} are not of one family "
                         f"({', '.join(sorted(map(str, families)))})")
    skipped: dict[str, str] = {}
    kept: list[KPI] = []
    q: Query | None = None
    for kpi in kpis:
        try:
            q = _query(kpi, by, period, since, until, model, conversion, settings)
            require(con, kpi, filled=filled)
            for check in kpi.checks:
                check(con, q)
        except TouchlineError as exc:
            skipped[kpi.name] = str(exc)
            continue
        kept.append(kpi)
    if not kept or q is None:
        return None, skipped
    a = _family_aggregate(con, q, kept)
    headlines = {kpi.name: kpi.family_values(a)[kpi.headline] for kpi in kept
                 if kpi.family_values is not None}
    return _order(a.select(*q.keys, **headlines), q), skipped


# ---- shared building blocks -----------------------------------------------------------------

def _ratio(numerator: ir.NumericValue, denominator: ir.NumericValue) -> ir.FloatingValue:
    """``numerator / denominator``; null when the denominator is 0 or null."""
    return numerator.cast("float64") / denominator.cast("float64").nullif(0.0)


def _in_window(t: ir.Table, at: ir.Value, q: Query) -> ir.Table:
    if q.since is None and q.until is None:  # no bound: no filter (less for Ibis to compile)
        return t
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
    t = _in_window(t, at, q)
    return t.mutate(**keys) if keys else t


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
#: the session KPIs' breakdowns with the session's device category (desktop, mobile, tablet,
#: (not set)), which :func:`touchline.metrics.dimensions.session_devices` derives
DEVICE_DIMS = (*SESSION_DIMS, "device")


def with_device(con: BaseBackend, t: ir.Table, q: Query, session: str = "session_id"
                ) -> ir.Table:
    """``t`` with a ``device`` column (the device category of the session ``t[session]``,
    ``(not set)`` for none) when ``by`` asks for it; ``t`` itself otherwise, so the events
    are read only when needed."""
    if "device" not in q.by:
        return t
    d = _once(con, "session_devices", lambda: session_devices(con))
    d = d.select(_device_session="session_id", _device="device")
    j = t.left_join(d, t[session] == d._device_session)
    return j.mutate(device=j._device.fill_null(NOT_SET)).drop("_device_session", "_device")


def _device(t: ir.Table) -> dict[str, ir.Value]:
    """The ``device`` breakdown of ``t`` when :func:`with_device` added it."""
    return {"device": t.device} if "device" in t.columns else {}


def person_levels(t: ir.Table) -> list[str]:
    """The acquisition breakdowns ``t`` holds: channel, source… (none when the first
    touches were not joined: nothing was asked by them) and ``device`` when
    :func:`first_touches` added it (``by`` asked for it)."""
    return [d for d in (*SESSION_LEVELS, "device") if d in t.columns]


#: the session columns the KPIs read
SESSION_COLUMNS = ("session_id", "person_id", "started_at", "ended_at", "duration_seconds",
                   "pageview_count", "conversion_count", *dict.fromkeys(SESSION_LEVELS.values()))


def _first_of_each_person(s: ir.Table) -> ir.Table:
    """The sessions of ``s`` that are their person's first: the earliest start, then the
    smallest session id. Aggregations and joins, not a window ranking every session, which
    sorts them all (twice the time on DuckDB)."""
    first_at = s.group_by(_person="person_id").aggregate(_at=s.started_at.min())
    tied = s.inner_join(first_at, [s.person_id == first_at._person,
                                   s.started_at == first_at._at])
    first = tied.group_by(_person="person_id").aggregate(_first=tied.session_id.min())
    j = s.inner_join(first, s.session_id == first._first)
    # a select, not drop(): Ibis shares a select that several KPIs read as one CTE of their
    # union (the first sessions found once), not a drop
    return j.select(*s.columns)


def _sessions(con: BaseBackend, *, first: bool = False,
              levels: Iterable[str] | None = None) -> ir.Table:
    """Sessions of known persons (the columns the KPIs read: of the breakdown columns, those
    of ``levels`` only when given); with ``first``, ``_first``: whether it is the person's
    first session (:func:`_first_sessions`, inside :func:`computed_once` computed once),
    asked only by the KPIs that need it."""
    s = con.table("sessions")
    kept = dict.fromkeys(c for c in SESSION_COLUMNS if levels is None or c not in (
        SESSION_LEVELS.values()) or c in set(levels))
    # only the columns read: every step after repeats each column (a headline reads no
    # breakdown: a sixth of the KPI page's expression to compile)
    s = s.filter(s.person_id.notnull()).select(*kept)
    if not first:
        return s
    f = _first_sessions(con).select(_first_session="_ft_session")
    j = s.left_join(f, s.session_id == f._first_session)
    return j.select(*kept, _first=j._first_session.notnull())


def _first_sessions(con: BaseBackend) -> ir.Table:
    """Each person's first session (``_ft_session``) with ``person_id``, ``first_at`` and its
    breakdown values; inside :func:`computed_once`, computed once."""
    def build() -> ir.Table:
        s = con.table("sessions")
        # only the columns read: the sessions are read three times (DuckDB keeps them once)
        s = s.filter(s.person_id.notnull()).select(
            "person_id", "started_at", "session_id", *dict.fromkeys(SESSION_LEVELS.values()))
        s = _first_of_each_person(s)
        return s.select("person_id", first_at=s.started_at, _ft_session=s.session_id,
                        **_levels(s, SESSION_LEVELS))

    return _once(con, "first_sessions", build)


def first_touches(con: BaseBackend, q: Query | None = None) -> ir.Table:
    """``person_id``, ``first_at`` and the person's first session's breakdown values (the
    acquisition channel, source… every person-level KPI breaks down by); with its
    ``device`` too when ``q`` asks for it."""
    f = _first_sessions(con)
    if q is not None:
        f = with_device(con, f, q, "_ft_session")
    # a select, not drop(): Ibis shares a select that several KPIs read as one CTE of their
    # union (the first sessions' window computed once), not a drop
    return f.select(*(c for c in f.columns if c != "_ft_session"))


# ---- awareness ------------------------------------------------------------------------------

SEARCH_LEVELS = {"query": "query", "landing_page": "page", "country": "country",
                 "device": "device"}
SEARCH_DIMS = ("period", *SEARCH_LEVELS)


@family("search_console")
def _search(con: BaseBackend, q: Query, needs: frozenset[str]) -> ir.Table:
    """Search Console's clicks, impressions and impression-weighted positions."""
    sc = con.table("search_console")
    t = _keyed(sc, q, at=sc.date, dims=_levels(sc, SEARCH_LEVELS))
    return _aggregate(t, q, _clicks=t.clicks.sum(), _impressions=t.impressions.sum(),
                      _weighted=(t.position * t.impressions).sum(),
                      _positioned=ibis.ifelse(t.position.notnull(), t.impressions, 0).sum())


def _select(t: ir.Table, q: Query, **values: ir.Value) -> ir.Table:
    return _order(t.select(*q.keys, **values), q)


@register_in("search_console", "search_clicks", stage="awareness", unit="clicks",
             formula="sum(clicks)", tables=["search_console"], dimensions=SEARCH_DIMS)
def search_clicks(a: ir.Table) -> dict[str, ir.Value]:
    """Clicks from Google organic results (Search Console)."""
    return {"search_clicks": a._clicks.cast("int64")}


@register_in("search_console", "search_impressions", stage="awareness", unit="impressions",
             formula="sum(impressions)", tables=["search_console"], dimensions=SEARCH_DIMS)
def search_impressions(a: ir.Table) -> dict[str, ir.Value]:
    """Times a page of the site was shown in Google's organic results (Search Console)."""
    return {"search_impressions": a._impressions.cast("int64")}


@register_in("search_console", "search_ctr", stage="awareness", unit="ratio",
             formula="clicks / impressions", tables=["search_console"],
             dimensions=SEARCH_DIMS, zero_denominator=_ZERO)
def search_ctr(a: ir.Table) -> dict[str, ir.Value]:
    """Organic click-through rate: the share of impressions that were clicked."""
    return {"search_ctr": _ratio(a._clicks, a._impressions)}


@register_in("search_console", "search_position", stage="awareness",
             unit="position (1 = top)",
             formula="sum(position * impressions) / sum(impressions)",
             tables=["search_console"], dimensions=SEARCH_DIMS, zero_denominator=_ZERO)
def search_position(a: ir.Table) -> dict[str, ir.Value]:
    """Average position, weighted by impressions as Search Console averages it: a row with
    1,000 impressions at position 2 weighs 100 times one with 10 at position 8. Rows without
    a position are left out of both sums."""
    return {"search_position": _ratio(a._weighted, a._positioned)}


SPEND_LEVELS = {"channel": "channel", "source": "utm_source", "medium": "utm_medium",
                "campaign": "utm_campaign", "keyword": "keyword"}
SPEND_DIMS = ("period", *SPEND_LEVELS)


@family("spend")
def _spend(con: BaseBackend, q: Query, needs: frozenset[str]) -> ir.Table:
    """The spend imports' cost, impressions, clicks and impression-weighted quality scores."""
    sp = con.table("spend")
    t = _keyed(sp, q, at=sp.date, dims=_levels(sp, SPEND_LEVELS))
    scored = t.quality_score.notnull() & t.impressions.notnull()
    return _aggregate(t, q, _cost=t.cost.sum(), _impressions=t.impressions.sum(),
                      _clicks=t.clicks.sum(),
                      _qs_weighted=ibis.ifelse(scored, t.quality_score * t.impressions, 0).sum(),
                      _qs_impressions=ibis.ifelse(scored, t.impressions, 0).sum())


@register_in("spend", "paid_cost", stage="awareness", unit="currency", formula="sum(cost)",
             tables=["spend"], dimensions=SPEND_DIMS)
def paid_cost(a: ir.Table) -> dict[str, ir.Value]:
    """Advertising cost, as the spend imports give it (in their own currency)."""
    return {"paid_cost": a._cost}


@register_in("spend", "paid_impressions", stage="awareness", unit="impressions",
             formula="sum(impressions)", tables=["spend"], dimensions=SPEND_DIMS)
def paid_impressions(a: ir.Table) -> dict[str, ir.Value]:
    """Ad impressions from the spend imports."""
    return {"paid_impressions": a._impressions.cast("int64")}


@register_in("spend", "paid_clicks", stage="awareness", unit="clicks", formula="sum(clicks)",
             tables=["spend"], dimensions=SPEND_DIMS)
def paid_clicks(a: ir.Table) -> dict[str, ir.Value]:
    """Ad clicks as the ad platforms count them (tracked visits are fewer: some clicks never
    load the page)."""
    return {"paid_clicks": a._clicks.cast("int64")}


@register_in("spend", "paid_ctr", stage="awareness", unit="ratio",
             formula="sum(clicks) / sum(impressions)", tables=["spend"],
             dimensions=SPEND_DIMS, zero_denominator=_ZERO)
def paid_ctr(a: ir.Table) -> dict[str, ir.Value]:
    """Ad click-through rate."""
    return {"paid_ctr": _ratio(a._clicks, a._impressions)}


@register_in("spend", "paid_cpc", stage="awareness", unit="currency per click",
             formula="sum(cost) / sum(clicks)", tables=["spend"], dimensions=SPEND_DIMS,
             zero_denominator=_ZERO)
def paid_cpc(a: ir.Table) -> dict[str, ir.Value]:
    """Cost per click."""
    return {"paid_cpc": _ratio(a._cost, a._clicks)}


@register_in("spend", "paid_cpm", stage="awareness", unit="currency per 1,000 impressions",
             formula="1000 * sum(cost) / sum(impressions)", tables=["spend"],
             dimensions=SPEND_DIMS, zero_denominator=_ZERO)
def paid_cpm(a: ir.Table) -> dict[str, ir.Value]:
    """Cost per thousand impressions."""
    return {"paid_cpm": 1000.0 * _ratio(a._cost, a._impressions)}


@register_in("spend", "paid_quality_score", stage="awareness", unit="score (1-10)",
             formula="sum(quality_score * impressions) / sum(impressions), rows with a score",
             tables=["spend"], dimensions=SPEND_DIMS,
             zero_denominator="null (no row with a quality score and impressions)")
def paid_quality_score(a: ir.Table) -> dict[str, ir.Value]:
    """Keyword quality score, weighted by impressions; rows without a score are left out."""
    return {"paid_quality_score": _ratio(a._qs_weighted, a._qs_impressions)}


@family("first_sessions")
def _acquired(con: BaseBackend, q: Query, needs: frozenset[str]) -> ir.Table:
    """The persons first seen in each group (by their first session's start, channel,
    source… and device): ``_visitors``; with ``converters``, ``_converters``: those of them
    who converted (``q.conversion``, before ``until`` when given)."""
    f = first_touches(con, q)
    converters = "converters" in needs
    if converters:
        j = con.table("journeys")
        j = j.filter((j.conversion == q.conversion) & j.converted & (j.unit == "person"))
        if q.until is not None:
            j = j.filter(j.converted_at < ibis.literal(q.until))
        buyers = j.select(_buyer="unit_id").distinct()
        f = f.left_join(buyers, f.person_id == buyers._buyer)
    t = _keyed(f, q, at=f.first_at, dims={d: f[d] for d in SESSION_LEVELS} | _device(f))
    return _aggregate(t, q, _visitors=t.person_id.nunique().cast("int64"),
                      **({"_converters": t._buyer.nunique().cast("int64")} if converters
                         else {}))


@register_in("first_sessions", "new_visitors", stage="awareness", unit="persons",
             formula="count(persons whose first session ever falls in the group)",
             tables=["sessions"], dimensions=DEVICE_DIMS)
def new_visitors(a: ir.Table) -> dict[str, ir.Value]:
    """People seen for the first time, by the channel, source, device… of their first
    session; the period is that session's start."""
    return {"new_visitors": a._visitors}


@family("sessions")
def _visits(con: BaseBackend, q: Query, needs: frozenset[str]) -> ir.Table:
    """The sessions of known persons in each group (by the session's start, entrance
    channel, source… and device): ``_sessions``, ``_pages`` (page views), ``_engaged``
    (engaged sessions), ``_seconds`` (their duration), ``_visitors`` (distinct persons);
    with ``first``, ``_first`` (sessions that are their person's first) and ``_returning``
    (persons with a session that is not their first); with ``converting``, ``_converting``
    (sessions in which the person converted: a conversion of ``q.conversion`` between the
    session's first and last touch)."""
    first = "first" in needs
    converting = "converting" in needs
    t = _person_sessions(con, q, first=first, converting=converting)
    firsts = {"_first": t._first.sum(),
              "_returning": (t._sessions > t._first).cast("int64").sum()} if first else {}
    if converting:
        firsts["_converting"] = t._converting.sum()
    return _aggregate(t, q, _sessions=t._sessions.sum(), _pages=t._pages.sum(),
                      _engaged=t._engaged.sum(), _seconds=t._seconds.sum(),
                      _visitors=t.count().cast("int64"), **firsts)


@register_in("sessions", "reach", stage="awareness", unit="persons",
             formula="count(distinct persons with a session in the group)",
             tables=["sessions"], dimensions=DEVICE_DIMS)
def reach(a: ir.Table) -> dict[str, ir.Value]:
    """People a channel (source, campaign, device…) reached: the distinct visitors of its
    sessions in the period, new and returning alike (``new_visitors`` are the first-time
    ones). A person reached by two channels counts once in each, so channels add up to more
    than the whole."""
    return {"reach": a._visitors}


# ---- consideration --------------------------------------------------------------------------

def _session_groups(con: BaseBackend, q: Query, *, first: bool = False,
                    converting: bool = False) -> ir.Table:
    asked = {d: c for d, c in SESSION_LEVELS.items() if d in q.by}
    s = with_device(con, _sessions(con, first=first, levels=asked.values()), q)
    if converting:
        hit = _converting_sessions(con, q)
        s = s.left_join(hit, s.session_id == hit._hit)
    return _keyed(s, q, at=s.started_at, dims=_levels(s, asked) | _device(s))


def _converting_sessions(con: BaseBackend, q: Query) -> ir.Table:
    """``_hit``: the sessions of known persons in which the person converted (a conversion
    of ``q.conversion`` between the session's first and last touch), each once."""
    s = con.table("sessions")
    s = s.filter(s.person_id.notnull()).select("session_id", "person_id", "started_at",
                                               "ended_at")
    j = con.table("journeys")
    j = j.filter((j.conversion == q.conversion) & j.converted & (j.unit == "person"))
    hit = s.inner_join(j, [s.person_id == j.unit_id, j.converted_at >= s.started_at,
                           j.converted_at <= s.ended_at])
    return hit.select(_hit="session_id").distinct()


def _person_sessions(con: BaseBackend, q: Query, *, first: bool = False,
                     converting: bool = False) -> ir.Table:
    """The sessions of each group (``q``'s period and breakdowns) and person: ``_sessions``,
    ``_pages`` (their page views), ``_engaged`` (engaged ones), ``_seconds`` (their duration)
    and with ``first`` ``_first`` (1 when the person's first session is among them), with
    ``converting`` ``_converting`` (those in which the person converted). The session KPIs
    sum these, so distinct visitors are rows, not a distinct count over every session;
    inside :func:`computed_once` the table is computed once for all of them, with
    ``_first`` (the first sessions are computed once there too)."""
    first = first or _shared(con) is not None

    def build() -> ir.Table:
        t = _session_groups(con, q, first=first, converting=converting)
        return t.group_by([*q.keys, "person_id"]).aggregate(
            _sessions=t.count().cast("int64"), _pages=t.pageview_count.sum(),
            _engaged=_engaged(t).cast("int64").sum(),
            _seconds=t.duration_seconds.fill_null(0.0).sum(),
            **({"_first": t._first.cast("int64").sum()} if first else {}),
            **({"_converting": t._hit.count().cast("int64")} if converting else {}))

    return _once(con, ("person_sessions", q.by, q.period, q.since, q.until, first,
                       q.conversion if converting else None), build)


@register_in("sessions", "sessions", stage="consideration", unit="sessions",
             formula="count(sessions)", tables=["sessions"], dimensions=DEVICE_DIMS)
def sessions(a: ir.Table) -> dict[str, ir.Value]:
    """Visits of known persons (every prepared session has one)."""
    return {"sessions": a._sessions}


@register_in("sessions", "returning_visitors", needs=["first"], stage="consideration",
             unit="persons",
             formula="count(distinct persons with a session in the group that is not their "
             "first)", tables=["sessions"], dimensions=DEVICE_DIMS)
def returning_visitors(a: ir.Table) -> dict[str, ir.Value]:
    """People who came back: a person whose first visit was in March and who returned in
    April is new in March and returning in April (and both, in a month with both)."""
    return {"returning_visitors": a._returning}


@register_in("sessions", "new_sessions", needs=["first"], stage="consideration",
             unit="sessions", formula="count(sessions that are their person's first)",
             tables=["sessions"], dimensions=DEVICE_DIMS)
def new_sessions(a: ir.Table) -> dict[str, ir.Value]:
    """First visits."""
    return {"new_sessions": a._first}


@register_in("sessions", "returning_sessions", needs=["first"], stage="consideration",
             unit="sessions", formula="count(sessions that are not their person's first)",
             tables=["sessions"], dimensions=DEVICE_DIMS)
def returning_sessions(a: ir.Table) -> dict[str, ir.Value]:
    """Return visits."""
    return {"returning_sessions": a._sessions - a._first}


@register_in("sessions", "sessions_per_visitor", stage="consideration",
             unit="sessions per person", formula="count(sessions) / count(distinct persons)",
             tables=["sessions"], dimensions=DEVICE_DIMS, zero_denominator=_ZERO)
def sessions_per_visitor(a: ir.Table) -> dict[str, ir.Value]:
    """Visits per visitor in the group."""
    return {"sessions_per_visitor": _ratio(a._sessions, a._visitors)}


@register_in("sessions", "pages_per_visitor", stage="consideration",
             unit="page views per person",
             formula="sum(pageview_count) / count(distinct persons)", tables=["sessions"],
             dimensions=DEVICE_DIMS, zero_denominator=_ZERO)
def pages_per_visitor(a: ir.Table) -> dict[str, ir.Value]:
    """Page (and screen) views per visitor."""
    return {"pages_per_visitor": _ratio(a._pages, a._visitors)}


def _engaged(t: ir.Table) -> ir.BooleanValue:
    return ((t.duration_seconds >= ENGAGED_SECONDS).fill_null(False)
            | (t.pageview_count >= ENGAGED_PAGEVIEWS).fill_null(False)
            | (t.conversion_count >= 1).fill_null(False))


@register_in("sessions", "engaged_sessions", stage="consideration", unit="sessions",
             formula=f"count(sessions with duration >= {ENGAGED_SECONDS} s or >= "
             f"{ENGAGED_PAGEVIEWS} page views or a conversion)",
             tables=["sessions"], dimensions=DEVICE_DIMS)
def engaged_sessions(a: ir.Table) -> dict[str, ir.Value]:
    """GA4's engaged session. The duration is the session's first to last touch (touchline
    has no engagement timer), so a one-page visit of a minute is not engaged unless it holds a
    conversion."""
    return {"engaged_sessions": a._engaged}


@register_in("sessions", "engagement_rate", stage="consideration", unit="ratio",
             formula="engaged_sessions / sessions", tables=["sessions"],
             dimensions=DEVICE_DIMS, zero_denominator=_ZERO)
def engagement_rate(a: ir.Table) -> dict[str, ir.Value]:
    """Share of sessions that were engaged (GA4's engagement rate)."""
    return {"engagement_rate": _ratio(a._engaged, a._sessions)}


@register_in("sessions", "engagement_time", stage="consideration", unit="seconds per session",
             formula="sum(duration_seconds) / count(sessions)", tables=["sessions"],
             dimensions=DEVICE_DIMS,
             values=("sessions", "engagement_seconds", "engagement_time"),
             zero_denominator=_ZERO)
def engagement_time(a: ir.Table) -> dict[str, ir.Value]:
    """Average engagement time per session (GA4's name). touchline has no engagement timer,
    so a session's time is its first to last touch (``duration_seconds``): a one-page visit
    counts 0 s, as in GA4 when the page sends no later event. ``engagement_seconds`` is the
    group's total."""
    return {"sessions": a._sessions, "engagement_seconds": a._seconds,
            "engagement_time": _ratio(a._seconds, a._sessions)}


def _with_session_levels(con: BaseBackend, t: ir.Table, levels: Iterable[str] = SESSION_LEVELS,
                         prefix: str = "") -> ir.Table:
    """``t`` with the breakdown values ``levels`` (as ``prefix`` + name, nulls left null) of
    its session ``t._session``. The journey KPIs read the steps and sessions, not the
    ``journey_touches`` view: it joins every step to its journey and session before the KPI
    keeps the few it needs (most of the credited KPIs' first query)."""
    s = con.table("sessions")
    s = s.select(_session_id="session_id",
                 **{prefix + d: s[SESSION_LEVELS[d]] for d in levels})
    return t.left_join(s, t._session == s._session_id).drop("_session_id")


def _converting_journeys(con: BaseBackend, q: Query) -> ir.Table:
    """Converting journeys of ``q.conversion`` with their first touch's breakdown values
    (when ``by`` asks for a breakdown: without one, the journeys alone, as the first touch's
    step and session would only be joined to be left unread)."""
    touched = bool(q.by)

    def build() -> ir.Table:
        j = con.table("journeys")
        j = j.filter((j.conversion == q.conversion) & j.converted)
        j = j.select("journey_id", "converted_at", "touches", "days_to_convert")
        if not touched:
            return j
        js = con.table("journey_steps")
        js = js.filter(js.position == 1).select(_journey="journey_id", _session="session_id")
        j = j.left_join(js, j.journey_id == js._journey).drop("_journey")
        return _with_session_levels(con, j)

    j = _once(con, ("converting_journeys", q.conversion, touched), build)
    if not touched:
        return _keyed(j, q, at=j.converted_at, dims={})
    j = with_device(con, j, q, "_session")
    return _keyed(j, q, at=j.converted_at,
                  dims=_levels(j, {d: d for d in SESSION_LEVELS}) | _device(j))


def _check_conversion(con: BaseBackend, q: Query) -> None:
    known = _once_value(con, "conversions", lambda: sorted(
        con.table("journeys").select("conversion").distinct().to_pyarrow().column(0)
        .to_pylist()))
    if q.conversion not in known:
        raise UnknownKPIError(f"conversion type {q.conversion!r}"
                              f"{did_you_mean(q.conversion, known)} has no journeys: the "
                              f"stored ones are {', '.join(map(str, known)) or 'none'}")


def _spread(values: ir.NumericValue, count: ir.Scalar, prefix: str = "") -> dict[str, ir.Scalar]:
    return {prefix + "conversions": count.cast("int64"),
            **{prefix + name: values.quantile(p) for name, p in QUANTILES.items()}}


@family("converting_journeys")
def _journey_spreads(con: BaseBackend, q: Query, needs: frozenset[str]) -> ir.Table:
    """The converting journeys of ``q.conversion`` (by the conversion's period and the
    journey's first touch), read once: with ``visits``, ``_visits_conversions`` and the
    quantiles of their visits (``_visits_median``…); with ``days``, ``_days_conversions``
    (those with a first touch) and the quantiles of their days to convert. A key whose
    journeys all lack a first touch has a row of no ``_days_conversions`` when visits are
    asked too, so alone each KPI keeps only its own rows."""
    t = _converting_journeys(con, q)
    if "visits" not in needs:  # the days alone: only the journeys with a first touch
        t = t.filter(t.days_to_convert.notnull())
    spreads: dict[str, ir.Scalar] = {}
    if "visits" in needs:
        spreads |= _spread(t.touches.cast("float64"), t.count(), "_visits_")
    if "days" in needs:
        # quantiles leave nulls out: those of the journeys with a first touch
        spreads |= _spread(t.days_to_convert,
                           t.count(where=t.days_to_convert.notnull()), "_days_")
    return _aggregate(t, q, **spreads)


@register_in("converting_journeys", "visits_to_convert", needs=["visits"],
             checks=[_check_conversion], stage="consideration", unit="sessions",
             formula="median, p75, p90 of journeys.touches over converting journeys",
             tables=["journeys", "journey_touches"], dimensions=DEVICE_DIMS,
             values=("conversions", *QUANTILES), options=("conversion",))
def visits_to_convert(a: ir.Table) -> dict[str, ir.Value]:
    """How many visits a converting journey held (quantiles interpolate), by the journey's
    first touch and the conversion's period; a repeat purchase's journey starts after the
    previous one."""
    return {name: a["_visits_" + name] for name in ("conversions", *QUANTILES)}


@register_in("converting_journeys", "days_to_convert", needs=["days"],
             checks=[_check_conversion], stage="consideration", unit="days",
             formula="median, p75, p90 of converted_at - first_touch_at over converting "
             "journeys", tables=["journeys", "journey_touches"], dimensions=DEVICE_DIMS,
             values=("conversions", *QUANTILES), options=("conversion",))
def days_to_convert(a: ir.Table) -> dict[str, ir.Value]:
    """Days from a converting journey's first touch to its conversion (journeys without a
    touch in their window are left out)."""
    return {name: a["_days_" + name] for name in ("conversions", *QUANTILES)}


# ---- decision -------------------------------------------------------------------------------

#: credits break down by the credited touch's session, its device too
CREDIT_DIMS = DEVICE_DIMS


def _check_model(con: BaseBackend, q: Query) -> None:
    c = con.table("credits")
    # the models of every conversion type in one query (a page asks of two or three)
    stored = _once_value(con, "models", lambda: c.select("conversion", "model").distinct()
                         .to_pyarrow().to_pylist())
    known = sorted({row["model"] for row in stored if row["conversion"] == q.conversion})
    if q.model not in known:
        raise UnknownKPIError(f"model {q.model!r}{did_you_mean(q.model, known)} has no stored "
                              f"credits of {q.conversion}: the stored models are "
                              f"{', '.join(map(str, known)) or 'none'} (settings."
                              "attribution_models, then `touchline run`)")


def _credited(con: BaseBackend, q: Query) -> ir.Table:
    """The stored credits of ``q.conversion`` under ``q.model``, keyed by the credited touch's
    channel, source… and device (the device category of the credited touch's session). The
    credited touch's step and session are joined only when ``by`` asks for more than the
    channel (which the credits hold): a headline's credits are summed as stored."""
    _check_conversion(con, q)
    _check_model(con, q)
    touched = bool(set(q.by) - {"channel"})
    levels = [d for d in SESSION_LEVELS if d != "channel"] if touched else []

    def build() -> ir.Table:
        c = con.table("credits")
        c = c.filter((c.conversion == q.conversion) & (c.model == q.model)).select(
            "journey_id", "position", "channel", "converted_at", "credit", "value")
        if not touched:
            return c
        js = con.table("journey_steps").select(_journey="journey_id", _position="position",
                                                 _session="session_id")
        c = c.left_join(js, (c.journey_id == js._journey) & (c.position == js._position))
        return _with_session_levels(con, c.drop("_journey", "_position"), levels, "_")

    j = _once(con, ("credited", q.conversion, q.model, touched), build)
    j = with_device(con, j, q, "_session")
    dims = _levels(j, {"channel": "channel", **{d: f"_{d}" for d in levels}}) | _device(j)
    return _keyed(j, q, at=j.converted_at, dims=dims)


@family("credits")
def _credit_sums(con: BaseBackend, q: Query, needs: frozenset[str]) -> ir.Table:
    """The stored credits of ``q.conversion`` under ``q.model`` in each group (by the
    credited touch's channel, source… and device, and the conversion's period): ``_credit``
    (conversions) and ``_value`` (their value)."""
    t = _credited(con, q)
    return _aggregate(t, q, _credit=t.credit.sum(), _value=t.value.sum())


@register_in("credits", "conversions", checks=[_check_conversion, _check_model],
             stage="decision", unit="conversions",
             formula="sum(credit) of the stored credits under the model",
             tables=["journeys", "journey_touches", "credits"], dimensions=CREDIT_DIMS,
             options=("model", "conversion"))
def conversions(a: ir.Table) -> dict[str, ir.Value]:
    """Conversions credited to each channel, source, campaign… by an attribution model; the
    period is the conversion's. Under any model they sum to the conversions. By device: the
    device of the credited touch's session (a journey begun on a phone and closed on a laptop
    gives each its credit); calls and CRM records are ``(not set)``."""
    return {"conversions": a._credit}


@register_in("credits", "revenue", checks=[_check_conversion, _check_model],
             stage="decision", unit="reporting currency",
             formula="sum(value) of the stored credits under the model",
             tables=["journeys", "journey_touches", "credits"], dimensions=CREDIT_DIMS,
             options=("model", "conversion"))
def revenue(a: ir.Table) -> dict[str, ir.Value]:
    """Conversion value credited by an attribution model (by device: the credited touch's
    session's, as ``conversions``)."""
    return {"revenue": a._value}


@register_in("first_sessions", "conversion_rate", needs=["converters"],
             checks=[_check_conversion], stage="decision", unit="ratio",
             formula="persons who converted / persons, by the first touch's channel, source…",
             tables=["sessions", "journeys"], dimensions=DEVICE_DIMS,
             values=("visitors", "converters", "conversion_rate"), zero_denominator=_ZERO,
             options=("conversion",))
def conversion_rate(a: ir.Table) -> dict[str, ir.Value]:
    """Conversion rate by first-touch source: of the people first seen through a channel
    (source, campaign…; the period is their first session's), the share who converted
    (before ``until``, when given). Few Instagram visitors convert while the smaller
    newsletter audience converts more: this shows it."""
    return {"visitors": a._visitors, "converters": a._converters,
            "conversion_rate": _ratio(a._converters, a._visitors)}


@register("leads", stage="decision", unit="leads",
          formula="count(converted lead journeys), by the journey's first touch",
          tables=["journeys", "journey_touches"], dimensions=DEVICE_DIMS)
def leads(con: BaseBackend, q: Query) -> ir.Table:
    """Leads (conversions of the ``lead`` type) by the source, channel, campaign… of the
    lead journey's first touch, and the lead's period: counted whole, where ``conversions``
    (``--conversion lead``) splits each one over its touches by a model."""
    lead = Query(by=q.by, period=q.period, since=q.since, until=q.until,
                 conversion=LEAD_CONVERSION, settings=q.settings)
    _check_conversion(con, lead)
    t = _converting_journeys(con, lead)
    return _order(_aggregate(t, q, leads=t.count().cast("int64")), q)


def unmatched_spend_channels(con: BaseBackend) -> list[str]:
    """The spend channels that match no known channel (``channel_matched`` false: `touchline
    prepare` kept them as the export wrote them), sorted; none before spend is prepared."""
    if "spend" not in con.list_tables():
        return []
    sp = con.table("spend")
    if "channel_matched" not in sp.columns:
        return []
    names = sp.filter(sp.channel_matched == False).select("channel").distinct()  # noqa: E712
    return sorted(str(v) for v in names.to_pyarrow()["channel"].to_pylist())


def unmatched_spend_note(names: Sequence[str]) -> str:
    """What a page or command says of spend channels matching no known channel."""
    listed = ", ".join(repr(n) for n in names)
    return (f"spend of channel {listed} matches no known channel (a group of the channel "
            "rules or an alias in channel_aliases.csv): kept under the name the export gives, "
            "so it meets no credited conversions" if len(names) == 1 else
            f"spend of channels {listed} matches no known channel (a group of the channel "
            "rules or an alias in channel_aliases.csv): kept under the names the export "
            "gives, so it meets no credited conversions")


COST_DIMS = ("period", "channel", "source", "medium", "campaign", "keyword")


def _join_key(value: ir.StringValue) -> ir.StringValue:
    """A breakdown value as spend and credits are matched on: trimmed, lower case, spaces
    and hyphens as ``_`` (an ad export's ``paid_social`` is the channel group Paid Social)."""
    return value.strip().lower().replace(" ", "_").replace("-", "_")


def _cost_and_credit(con: BaseBackend, q: Query, conversion: str) -> ir.Table:
    """Spend and the model's credited conversions and value, per key: ``_cost``, ``_credit``,
    ``_value`` (0 where one side has no row). Keys match by :func:`_join_key`; a key shows
    as the sessions write it (as the spend export writes it when no credit has it)."""
    sp = con.table("spend")
    spend = _keyed(sp, q, at=sp.date, dims=_levels(sp, SPEND_LEVELS))
    cr = _credited(con, Query(by=q.by, period=q.period, since=q.since, until=q.until,
                              model=q.model, conversion=conversion))

    def per_key(t: ir.Table, prefix: str, **metrics: ir.Scalar) -> ir.Table:
        keys = {f"{prefix}{k}": (t[k] if k == "period" else _join_key(t[k])) for k in q.keys}
        shown = {f"{prefix}shown_{k}": t[k].min() for k in q.keys}
        if not keys:
            return t.aggregate(**metrics)
        return t.group_by([v.name(n) for n, v in keys.items()]).aggregate(**shown, **metrics)

    cost = per_key(spend, "_l_", _cost=spend.cost.sum())
    credit = per_key(cr, "_r_", _credit=cr.credit.sum(), _value=cr.value.sum())
    if not q.keys:
        joined = cost.cross_join(credit)
        return joined.select(_cost=joined._cost.fill_null(0.0),
                             _credit=joined._credit.fill_null(0.0),
                             _value=joined._value.fill_null(0.0))
    joined = cost.outer_join(credit, [cost[f"_l_{k}"] == credit[f"_r_{k}"] for k in q.keys])
    return joined.select(
        **{k: joined[f"_r_shown_{k}"].coalesce(joined[f"_l_shown_{k}"]) for k in q.keys},
        _cost=joined._cost.fill_null(0.0), _credit=joined._credit.fill_null(0.0),
        _value=joined._value.fill_null(0.0))


_COST_TABLES = ["spend", "journeys", "journey_touches", "credits"]


@register("cost_per_lead", stage="decision", unit="currency per lead",
          formula="sum(cost) / sum(credit of lead conversions under the model)",
          tables=_COST_TABLES, dimensions=COST_DIMS, values=("cost", "leads", "cost_per_lead"),
          zero_denominator=_ZERO, options=("model",))
def cost_per_lead(con: BaseBackend, q: Query) -> ir.Table:
    """Spend per lead the model credits to the channel or campaign (the ``lead`` conversion
    type); a channel without spend costs 0 per lead."""
    t = _cost_and_credit(con, q, LEAD_CONVERSION)
    return _select(t, q, cost=t._cost, leads=t._credit,
                   cost_per_lead=_ratio(t._cost, t._credit))


@family("costs")
def _costs(con: BaseBackend, q: Query, needs: frozenset[str]) -> ir.Table:
    """Spend and the credits of ``q.conversion`` under ``q.model`` per key (matched by
    :func:`_join_key`): ``_cost``, ``_credit``, ``_value``."""
    return _cost_and_credit(con, q, q.conversion)


@register_in("costs", "cpa", checks=[_check_conversion, _check_model], stage="decision",
             unit="currency per conversion",
             formula="sum(cost) / sum(credit of conversions under the model)",
             tables=_COST_TABLES, dimensions=COST_DIMS, values=("cost", "conversions", "cpa"),
             zero_denominator=_ZERO, options=("model", "conversion"))
def cpa(a: ir.Table) -> dict[str, ir.Value]:
    """Cost per acquisition under any attribution model: spend over the conversions the
    model credits to the same channel, campaign… and period."""
    return {"cost": a._cost, "conversions": a._credit, "cpa": _ratio(a._cost, a._credit)}


@register_in("costs", "roas", checks=[_check_conversion, _check_model], stage="decision",
             unit="ratio (revenue per unit of cost)",
             formula="sum(credited value under the model) / sum(cost)",
             tables=_COST_TABLES, dimensions=COST_DIMS, values=("cost", "revenue", "roas"),
             zero_denominator=_ZERO, options=("model", "conversion"))
def roas(a: ir.Table) -> dict[str, ir.Value]:
    """Return on ad spend under any attribution model (null for channels without spend)."""
    return {"cost": a._cost, "revenue": a._value, "roas": _ratio(a._value, a._cost)}


# ---- retention and value --------------------------------------------------------------------

def _purchases(con: BaseBackend, q: Query) -> ir.Table:
    """Each person's conversions of ``q.conversion`` (before ``until``) with the person's
    first one (``_first_at``) and, when ``by`` asks for a breakdown, the acquisition
    breakdowns (first session's channel…; its device when ``by`` asks for it)."""
    _check_conversion(con, q)

    def build() -> ir.Table:
        j = con.table("journeys")
        j = j.filter((j.conversion == q.conversion) & j.converted & (j.unit == "person"))
        if q.until is not None:
            j = j.filter(j.converted_at < ibis.literal(q.until))
        j = j.select("unit_id", "converted_at", "value")
        j = j.mutate(_first_at=j.converted_at.min().over(group_by="unit_id"))
        if not q.by:  # one first touch per person: the join would keep every row
            return j
        f = first_touches(con, q).drop("first_at")
        t = j.left_join(f, j.unit_id == f.person_id)
        return t.mutate(**_levels(t, {d: d for d in person_levels(f)}))

    return _once(con, ("purchases", q.conversion, q.until, "device" in q.by, bool(q.by)),
                 build)


def _customers(con: BaseBackend, q: Query) -> ir.Table:
    """One row per customer: ``unit_id``, ``_first_at``, ``_purchases``, ``_revenue`` (their
    value) and the breakdowns, keyed by the first purchase's period (the customer's
    cohort)."""
    p = _purchases(con, q)
    levels = person_levels(p)
    c = p.group_by(["unit_id", "_first_at", *levels]).aggregate(_purchases=p.count(),
                                                                 _revenue=p.value.sum())
    return _keyed(c, q, at=c._first_at, dims={d: c[d] for d in levels})


_RETENTION_TABLES = ["journeys", "sessions"]
#: person-level KPIs break down by the acquisition breakdowns: the first session's channel,
#: source… and device
PERSON_DIMS = DEVICE_DIMS


@family("customers")
def _customer_sums(con: BaseBackend, q: Query, needs: frozenset[str]) -> ir.Table:
    """The customers of each group (by their first purchase's period and their acquisition
    channel, source… and device): ``_customers``, ``_repeat`` (those with two purchases or
    more) and ``_revenue`` (the value of their purchases, before ``until``)."""
    c = _customers(con, q)
    return _aggregate(c, q, _customers=c.count().cast("int64"),
                      _repeat=(c._purchases >= 2).cast("int64").sum(),
                      _revenue=c._revenue.fill_null(0.0).sum())


@register_in("customers", "repeat_purchase_rate", checks=[_check_conversion],
             stage="retention", unit="ratio", formula="customers with >= 2 purchases / customers",
             tables=_RETENTION_TABLES, dimensions=PERSON_DIMS,
             values=("customers", "repeat_customers", "repeat_purchase_rate"),
             zero_denominator=_ZERO, options=("conversion",))
def repeat_purchase_rate(a: ir.Table) -> dict[str, ir.Value]:
    """Share of customers who bought again (before ``until``), by the period of their first
    purchase and their acquisition channel, source…"""
    return {"customers": a._customers, "repeat_customers": a._repeat,
            "repeat_purchase_rate": _ratio(a._repeat, a._customers)}


@register("average_order_value", stage="retention", unit="reporting currency",
          formula="sum(value) / count(purchases)", tables=_RETENTION_TABLES,
          dimensions=PERSON_DIMS, values=("orders", "revenue", "average_order_value"),
          zero_denominator=_ZERO, options=("conversion",))
def average_order_value(con: BaseBackend, q: Query) -> ir.Table:
    """Average value of a purchase, by its period and the buyer's acquisition channel…"""
    p = _purchases(con, q)
    t = _keyed(p, q, at=p.converted_at, dims={d: p[d] for d in person_levels(p)})
    t = _aggregate(t, q, orders=t.count().cast("int64"), revenue=t.value.sum())
    return _order(t.mutate(average_order_value=_ratio(t.revenue, t.orders)), q)


@register("purchase_frequency", stage="retention", unit="customers",
          formula="count(customers) per number of purchases; share = customers / all customers",
          tables=_RETENTION_TABLES, dimensions=PERSON_DIMS,
          values=("purchases", "customers", "share"), options=("conversion",), table=True)
def purchase_frequency(con: BaseBackend, q: Query) -> ir.Table:
    """The distribution of purchases per customer (before ``until``): how many bought once,
    twice…, by the first purchase's period and the acquisition channel…"""
    c = _customers(con, q)
    t = c.group_by([*q.keys, c._purchases.cast("int64").name("purchases")]).aggregate(
        customers=c.count().cast("int64"))
    total = t.customers.sum().over(group_by=list(q.keys)) if q.keys else t.customers.sum().over()
    t = t.mutate(share=_ratio(t.customers, total))
    return t.order_by([*q.keys, "purchases"])


@register("retention", stage="retention", unit="ratio",
          formula="customers of a first-purchase-month cohort who purchase in month k / "
          "the cohort's customers",
          tables=_RETENTION_TABLES, dimensions=PERSON_DIMS[1:],
          values=("cohort", "months_since", "customers", "active_customers", "retention"),
          options=("conversion",), table=True)
def retention(con: BaseBackend, q: Query) -> ir.Table:
    """Retention cohorts: customers by the month of their first purchase (``since`` and
    ``until`` bound the cohorts), and for each later month k the share who purchased in it
    (month 0 is 1). A seasonal drop shows as a dip at the same calendar month across cohorts.
    The cohort month is the period; ``by`` takes the acquisition channel, source… and device
    (the device category of the customer's first session)."""
    p = _purchases(con, q)
    p = _in_window(p, p._first_at, q)
    month = p.converted_at.year() * 12 + p.converted_at.month()
    first = p._first_at.year() * 12 + p._first_at.month()
    p = p.mutate(cohort=p._first_at.truncate("M").cast("date"),
                 months_since=(month - first).cast("int64"))
    keys = [*q.by, "cohort"]
    t = p.group_by([*keys, "months_since"]).aggregate(
        active_customers=p.unit_id.nunique().cast("int64"))
    # month 0 holds every customer of the cohort: its count is the cohort's size
    t = t.mutate(customers=t.active_customers.max().over(group_by=keys))
    t = t.mutate(retention=_ratio(t.active_customers, t.customers))
    return t.select(*keys, "months_since", "customers", "active_customers",
                    "retention").order_by([*keys, "months_since"])


#: one period later, by grain (a week is 7 days, a quarter 3 months)
_NEXT_PERIOD = {"day": ibis.interval(days=1), "week": ibis.interval(days=7),
                "month": ibis.interval(months=1), "quarter": ibis.interval(months=3)}
NO_PREVIOUS_PERIOD = "no previous period"
NO_PREVIOUS_CUSTOMER = "no customer active in the previous period"


@register("churn", stage="retention", unit="ratio",
          formula="customers active in period k-1 and not in period k / customers active in "
          "period k-1 (active: a purchase in the period)",
          tables=_RETENTION_TABLES, dimensions=PERSON_DIMS,
          values=("active_previous", "active", "retained", "churned", "churn", "reason"),
          zero_denominator=f"null, with the reason: '{NO_PREVIOUS_PERIOD}' (the first "
          f"period) or '{NO_PREVIOUS_CUSTOMER}'", options=("conversion",), per_period=True)
def churn(con: BaseBackend, q: Query) -> ir.Table:
    """Customer churn for subscription-like or repeat-purchase data: of the customers active
    (a purchase of ``conversion``, e.g. a renewal) in period k-1, the share not active in
    period k; ``retained`` are active in both. It is the customer churn rate of subscription
    analytics (Baremetrics-style: customers lost during a period / customers at its start,
    new customers left out) with "customer at the start" read as "active in the previous
    period", since events hold purchases, not subscription states (GA4 has no such report:
    its churn probability is a prediction); for monthly renewals it is 1 minus the
    month-on-month retention. The period grain is ``period``
    (month when none is asked); the first period of the window and a group with nobody
    active in the previous period have a null churn and the reason says which. By the
    customer's acquisition channel, source…"""
    q = replace(q, period=q.period or "month")
    p = _purchases(con, q)
    if q.since is not None:
        p = p.filter(p.converted_at >= ibis.literal(q.since))
    p = _keyed(p, q, at=p.converted_at, dims={d: p[d] for d in person_levels(p)})
    keys = list(q.keys)
    active = p.select(*keys, "unit_id").distinct()
    # each customer active in a period is one of the previous period's customers in the next
    later = active.mutate(period=(active.period + _NEXT_PERIOD[q.period]).cast("date"))
    both = ibis.union(active.mutate(_now=ibis.literal(1), _before=ibis.literal(0)),
                      later.mutate(_now=ibis.literal(0), _before=ibis.literal(1)),
                      distinct=False)
    # the window's first and last active periods (over every group): no period after the
    # last is reported, and the first has no previous one
    now_period = ibis.ifelse(both._now == 1, both.period, ibis.null("date"))
    both = both.mutate(_first=now_period.min().over(), _last=now_period.max().over())
    both = both.filter(both.period <= both._last)
    per = both.group_by([*keys, "unit_id", "_first"]).aggregate(
        _now=both._now.max(), _before=both._before.max())
    t = per.group_by([*keys, "_first"]).aggregate(
        active_previous=per._before.sum().cast("int64"), active=per._now.sum().cast("int64"),
        retained=(per._now * per._before).sum().cast("int64"))
    t = t.mutate(churned=t.active_previous - t.retained)
    reason = ibis.cases((t.period == t._first, NO_PREVIOUS_PERIOD),
                        (t.active_previous == 0, NO_PREVIOUS_CUSTOMER),
                        else_=ibis.null("string"))
    t = t.mutate(churn=ibis.ifelse(t.period == t._first, ibis.null("float64"),
                                   _ratio(t.churned, t.active_previous)), reason=reason)
    return _select(t, q, **{v: t[v] for v in KPIS["churn"].values})


# ---- advocacy -------------------------------------------------------------------------------

def match_people(con: BaseBackend, t: ir.Table, key: str,
                 identifiers: Sequence[ir.StringValue]) -> ir.Table:
    """``_key`` (``t[key]``) → ``_person``: the person of the first of ``identifiers`` (typed
    identifiers over ``t``: ``user:…``, ``email:…``, ``order:…``) found in the identity graph,
    or for ``order:`` among the orders on touches. Rows matching no one are absent."""
    candidates = ibis.union(*(
        t.select(_key=t[key], _identifier=expr, _rank=ibis.literal(rank))
        for rank, expr in enumerate(identifiers)), distinct=False)
    def build() -> ir.Table:
        ids = con.table("identities").select("identifier", _person="person_id")
        # asked first: the touchpoints view joins the touches with orders to every session
        # even when there are none (a second at 3M events without order ids)
        touches = _rows_of(con, "touchpoints") if "touchpoints" in con.list_tables() else None
        if touches is not None and touches.filter(
                touches.order_id.notnull()).limit(1).count().execute():
            tp = con.table("touchpoints")
            tp = tp.filter(tp.order_id.notnull() & tp.person_id.notnull())
            ids = ids.union(tp.select(identifier="order:" + tp.order_id, _person=tp.person_id),
                            distinct=True)
        return ids

    ids = _once(con, "identifiers", build)
    matched = candidates.inner_join(ids, candidates._identifier == ids.identifier)
    matched = matched.mutate(_r=ibis.row_number().over(group_by="_key", order_by="_rank"))
    return matched.filter(matched._r == 0).select("_key", "_person")


def as_in_graph(con: BaseBackend, q: Query, contact: ir.StringValue) -> ir.StringValue:
    """A normalised e-mail or phone of a raw table as the identity graph keeps it: itself,
    or with ``pii_at_rest = "hashed"`` its keyed hash (:func:`touchline.store.contact_key`;
    a keyed hash a load stored is kept as it is)."""
    key = store.contact_key(con, q.config.pii_key_at_rest)
    return contact if key is None else key(contact)


def with_first_touch(con: BaseBackend, t: ir.Table, key: str,
                     identifiers: Sequence[ir.StringValue], q: Query | None = None
                     ) -> ir.Table:
    """``t`` with its person's acquisition breakdowns (the first session's channel, source…
    and, when ``q`` asks for it, device; Unassigned and ``(not set)`` for rows matching no
    one)."""
    matched = match_people(con, t, key, identifiers)
    f = first_touches(con, q)
    levels = person_levels(f)
    # prefixed: a table's own ``source`` (the system that sent the row) is not the person's
    f = f.select(_ft_person="person_id", **{f"_ft_{d}": d for d in levels})
    j = t.left_join(matched, t[key] == matched._key).left_join(
        f, matched._person == f._ft_person)
    j = j.mutate(**_levels(j, {d: f"_ft_{d}" for d in levels}))
    return j.drop("_key", "_ft_person", *(f"_ft_{d}" for d in levels))


def _answers(con: BaseBackend, q: Query, kpi: str) -> ir.Table:
    """Survey answers with the answerer's person (matched by user id, then anonymous id, then
    e-mail in the identity graph) and that person's acquisition breakdowns; only when ``by``
    asks for them are the prepared tables read."""
    sv = con.table("surveys")
    sv = sv.mutate(segment=sv.segment.fill_null(NOT_SET))
    if not set(q.by) - {"segment"}:
        return _keyed(sv, q, at=sv.responded_at, dims={"segment": sv.segment})
    require(con, KPIS[kpi], ["sessions", "identities"])
    t = with_first_touch(con, sv, "response_id", [
        "user:" + sv.person_id, "anon:" + sv.person_id,
        "email:" + as_in_graph(con, q, sv.email.strip().lower())], q)
    return _keyed(t, q, at=t.responded_at, dims={d: t[d] for d in (*person_levels(t),
                                                                    "segment")})


@register("nps", stage="advocacy", unit="score (-100 to 100)",
          formula="100 * (promoters - detractors) / answers; promoters 9-10, passives 7-8, "
          "detractors 0-6; 95 % interval 100 * (d ± 1.96 * sqrt((p + q - d²) / n)), "
          "p, q the promoter and detractor shares, d = p - q",
          tables=["surveys"], dimensions=(*PERSON_DIMS, "segment"),
          values=("answers", "promoters", "passives", "detractors", "nps", "nps_low",
                  "nps_high"), zero_denominator="null (no answer: no row)")
def nps(con: BaseBackend, q: Query) -> ir.Table:
    """Net Promoter Score from the ``surveys`` table's 0-10 answers (others are left out),
    with the counts and a normal-approximation 95 % confidence interval (the variance of a
    difference of two shares of one multinomial sample). By period of the answer, by the
    answerer's segment (as the survey tool gives it), and by the answerer's first-touch
    channel, source… and device (the device category of the answerer's first session;
    answers matched to no person: Unassigned, ``(not set)``). Answers outside 0-10 never
    reach the table: ingest rejects them (``bad_nps``)."""
    t = _answers(con, q, "nps")
    t = t.filter(t.nps_score.between(0, 10))
    t = _aggregate(t, q, answers=t.count().cast("int64"),
                   promoters=(t.nps_score >= PROMOTER_MIN).cast("int64").sum(),
                   detractors=(t.nps_score <= DETRACTOR_MAX).cast("int64").sum())
    n = t.answers.cast("float64")
    p, d = t.promoters / n.nullif(0.0), t.detractors / n.nullif(0.0)
    se = ((p + d - (p - d) ** 2) / n.nullif(0.0)).sqrt()
    t = t.mutate(passives=t.answers - t.promoters - t.detractors, nps=100.0 * (p - d),
                 nps_low=100.0 * (p - d - Z_95 * se), nps_high=100.0 * (p - d + Z_95 * se))
    return _select(t, q, **{v: t[v] for v in KPIS["nps"].values})


# ---- documentation --------------------------------------------------------------------------

_DOC_HEAD = """# KPIs for every stage: `touchline kpis`

Generated from `touchline/metrics/kpis.py` (`tests/metrics/test_kpis.py` keeps it current).

Every KPI is one registered function over the stored tables ([tables.md](tables.md)) that
returns an Ibis table, so it runs on DuckDB and Spark alike: the `period` column (the first day
of the day, week, month or quarter) when a period is asked, the `by` columns, then its values.
Each belongs to a lifecycle stage and to the matching stage of every preset stage model
([journeys.md](journeys.md)): `--stage-model NAME` shows the KPIs under each stage of that
model in its order (a stage no KPI belongs to, like the hourglass's `trust`, is said as such),
and `--stage` then names one of its stages. A stage model of your own has no KPIs: they
register their stage in the presets only.

```sh
touchline kpis --list                                    # every KPI: stage, unit, formula
touchline kpis --stage awareness --period month          # a stage's KPIs (others said, skipped)
touchline kpis --stage-model hourglass --period month    # every KPI under its hourglass stage
touchline kpis --kpi cpa --kpi roas --by campaign --model markov --since 2025-01-01
touchline kpis --kpi conversions,revenue --conversion deal_won  # names after one --kpi: commas
touchline kpis --kpi retention --by channel --format csv  # or json
```

As a table (the default format), the KPIs that give one value (no `--by`, no period) are the
rows of one summary table (KPI, value, unit, stage; the values a ratio or median is made of
indented under it), one summary per stage with `--stage-model`; the KPIs with rows (a
breakdown, a period, a distribution or cohorts) get a table each, titled with their stage and
unit and captioned with their formula. `--list` gives every formula.

```python
import touchline
from touchline.metrics.kpis import compute

wh = touchline.open("duckdb:///touchline.duckdb")
nps = compute(wh.con, "nps", by=["channel"], period="quarter").to_pandas()
print(nps[["period", "channel", "answers", "nps", "nps_low", "nps_high"]])
```

KPIs of one input form a family (`FAMILIES`: the Search Console rows, the spend, the
sessions, the first sessions, the credits, spend against credits, the customers, the CTA
and form touches, the social rows' flows and their follower counts, the deals): each such
KPI is its values over its family's aggregate, so `compute_family(wh.con, names)` computes
the family's KPIs in one pass over their input (the dashboard's KPI page does) with the
figures each gives alone (by a breakdown, the CTA and form KPIs together also give a row,
of zero views, for a key with touches of one kind only; so do the open pipeline and the
won revenue, of zero deals, for a period with deals of one kind only).

Many KPIs at once: compute them inside `with computed_once(wh.con):`, as `touchline kpis`
does. What several KPIs read (each person's first session, the credited touches of a model,
the converting journeys, the purchases, the identifiers answers and reviews are matched on,
the sessions' devices) is then computed once, kept in the engine for the block and dropped
after it, and the input tables are checked once; the figures are the same.

Rules every KPI follows:

- **Zero denominators give null**, never 0 or infinity: a campaign without impressions has no
  CTR, a channel without spend no ROAS. Each KPI's rule is in the table below.
- **Missing inputs fail**: a KPI whose input table is empty or was never imported says which
  import or run fills it (`KPI 'paid_cpc' needs spend rows and the table is empty: import
  them with touchline ingest FILE --kind spend`) instead of showing zeros. A whole stage
  (`--stage`) skips such KPIs and says why on stderr, and so do several KPIs asked by name
  (`--kpi conversions,cpa` without spend: `skipped cpa: …`); a single KPI asked by name fails.
- **The conversion KPIs count one conversion type**: `--conversion`, by default the stored one
  with the most value, as the report and the dashboard choose (won deals on a B2B warehouse,
  purchases in a shop).
- **Unknown names fail with the nearest one**: KPI, stage, dimension, period, model and
  conversion type (`unknown dimension 'chanel' (did you mean 'channel'?)`).
- **Breakdowns are what the tables hold**: Search Console rows break down by query, landing
  page, country and device; spend by channel, source, medium, campaign and keyword; sessions,
  journeys and credits by channel, source, medium, campaign, keyword and landing page (the
  session's entrance values). Person-level KPIs (new visitors, conversion rate, retention, NPS)
  break down by the person's *first* session: the acquisition channel. Survey answers also
  break down by their `segment`; social rows and reviews by `platform`; page KPIs (CTA, forms)
  by `page` (the path). `device` is the device category (desktop, mobile, tablet, `(not
  set)`) of a session, from the user agent of its landing touch in the loaded `events`, as
  the dashboard's device filter reads it (`touchline/metrics/dimensions.py`): session and
  page KPIs take the session's (the view's or click's session for CTA, form and content
  KPIs); journey KPIs (visits and days to convert, leads) the journey's first touch's;
  credited KPIs (`conversions`, `revenue`) the credited touch's, so a journey begun on a
  phone and closed on a laptop credits each device its share; person-level KPIs (new
  visitors, conversion rate, retention, repeat purchase, order value, churn, CLV, NPS,
  reviews, referrals, pipeline and revenue won) the person's *first* session's, the
  acquisition device (`(not set)` for a person matched to no session with a user agent).
  Search Console KPIs break down by Search Console's own device. Spend (so paid reach, cost
  per lead, CPA and ROAS), social rows, stage entries and the heard-about matrix hold no
  device: asked by device they fail, say why and name the KPIs that can.
- **Settings name the events**: CTA clicks (`cta_events`, `cta_pages`), form starts
  (`form_start_events`, `form_pages`; submissions are `touch_events["form"]`), referrals
  (`referral_events`) and the channels "how did you hear about us" answers name
  (`heard_about_channels`), as fields of `Settings` (`touchline.toml` or `TOUCHLINE_*`); the
  sections below say how each is read.
- **Credited KPIs take a model**: `conversions`, `revenue`, `cost_per_lead`, `cpa` and `roas`
  sum the stored `credits` of the chosen model (`--model`, default `settings.default_model`),
  so cost per acquisition can be read under last touch, Markov or Shapley alike. Spend and
  credits are matched on keys trimmed, in lower case, with spaces and hyphens as `_` (an ad
  export's `paid_social` is the channel group Paid Social). `touchline prepare` first names
  each spend row's channel as the sessions name it, by the channel rules' groups and the
  aliases of `channel_aliases.csv` (`affiliate` is Affiliates, `video` Paid Video); a channel
  matching neither keeps the export's name and `touchline kpis`, the channels page and the
  report say so in a note. Spend is summed as imported, in its own currency.
- `since` is inclusive and `until` exclusive, on each KPI's own time: the spend or Search
  Console day, the session's start, the conversion, the answer; person-level KPIs use the
  first session, retention KPIs the first purchase (the cohort).

On simulated data the social, review, NPS and retention KPIs equal the truth: the simulator
writes `reviews.csv` (Trustpilot reviews with the reviewer's e-mail, Google reviews with the
order id) and `social.csv` (the business's accounts, one row per day, with export gaps) beside
`surveys.csv`, all imported with `touchline ingest FILE --kind KIND`, and its `truth.json`
states, under `kpis`, the NPS answers by segment, the reviews and their stars by platform, the
social followers, reach and engagements by platform, and the customers, repeat customers and
retention cohorts of every order (`tests/metrics/test_kpis_cli.py` and `touchline demo`
compare them). `touchline simulate --seasonal-dip 3:0.2` makes renewals drop every March
(a repeat order in March happens with probability 0.2) and its truth states, under
`kpis.retention.seasonal_dip`, the earlier customers' active share in each March and its
neighbours, which the `retention` cohorts recover read by calendar month
(`tests/metrics/test_kpis_seasonal_dip.py`).

| KPI | stage (lifecycle; funnel, hourglass, b2b) | unit | formula | zero denominator | needs | by |
|---|---|---|---|---|---|---|
"""


def kpis_markdown() -> str:
    """``docs/kpis.md``: every registered KPI with its stage, unit, formula, zero-denominator
    rule, the import that fills its tables and its breakdowns."""
    rows = []
    ordered = sorted(KPIS.values(), key=lambda k: STAGES.index(k.stage))
    for k in ordered:
        others = ", ".join(v for m, v in k.stages.items() if m != "lifecycle")
        needs = "; ".join(f"`{IMPORTS[t]}`" for t in dict.fromkeys(
            "journeys" if t in ("journey_touches", "credits") else t for t in k.tables))
        rows.append(f"| `{k.name}` | {k.stage} ({others}) | {k.unit} | {k.formula} | "
                    f"{k.zero_denominator} | {needs} | {', '.join(k.dimensions)} |")
    details = ["", "## What each KPI measures", ""]
    details += [f"- `{k.name}`: {' '.join(k.doc.split())}" for k in ordered]
    return (_DOC_HEAD + "\n".join(rows) + "\n" + "\n".join(details) + "\n"
            + "".join(DOC_SECTIONS.values()))
