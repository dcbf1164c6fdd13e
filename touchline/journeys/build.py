"""Journeys: each unit's touches in time order, cut at each conversion, as stored tables.

A touch is a session (its channel, source, campaign, keyword, landing page and content are the
session's entrance values; calls and offline records are sessions of their own). For one
conversion type, the conversions of a unit (a person or an account) in time order are
:math:`t_1 < t_2 < \\dots`; journey :math:`k` holds the unit's touches with

.. math:: t_{k-1} < \\text{touch\\_at} \\le t_k \\quad\\text{and}\\quad
          \\text{touch\\_at} \\ge t_k - \\text{lookback}

(``history = "full_history"`` drops the lower bound :math:`t_{k-1}`; no lookback, none of the
second). The touches after a unit's last conversion (all of them, if it never converted) are
its open journey: it did not convert (yet), which Markov and the rate models need. With
``count = "first"`` only a unit's first conversion counts and units that converted have no
open journey. A touch older than the lookback is left out and counted in
``journeys.cut_touches``, so a report can say how many paths the window shortened.

An account's journey is the touches of all its people (stakeholders): ``journey_touches.person_id``
says whose each touch was. Tables (``docs/tables.md``): :data:`~touchline.store.JOURNEYS`,
:data:`~touchline.store.JOURNEY_STEPS` and the view :data:`~touchline.store.JOURNEY_TOUCHES`;
the same input gives the same rows on both engines (ties in time are ordered by channel, then
session id).
"""

from __future__ import annotations

from collections.abc import Sequence

import ibis
import ibis.expr.types as ir

from touchline.config import ConversionSpec, Settings
from touchline.engine import seconds_between
from touchline.journeys.conversions import CONVERSION_SCHEMA
from touchline.store import LEVELS

SECONDS_PER_DAY = 86_400.0
#: the scratch table of every journey's touch rows (:func:`journey_rows`) that
#: :func:`write_journeys` computes once; ``keep_rows=True`` leaves it for the caller to read
#: (``touchline run`` credits its kept touches) and drop
#: (:func:`~touchline.engine.drop_materialised`)
JOURNEY_ROWS = "_touchline_journey_rows"
#: how a journey id is written: ``<conversion>:<unit_id>:<sequence>`` or ``…:open``
OPEN = "open"


def unit_touches(sessions: ir.Table, unit: str, *, without_account: bool = False) -> ir.Table:
    """Every session as a touch of its person (``unit="person"``) or account: the unit, the
    session and its channel (the other session values are joined back only where read);
    ``without_account``: only the sessions of people who belong to no company."""
    unit_id = sessions.person_id if unit == "person" else sessions.account_id
    keep = unit_id.notnull() & (sessions.account_id.isnull() if without_account
                                else ibis.literal(True))
    s = sessions.filter(keep)
    return s.select(
        unit=ibis.literal(unit), unit_id=(s.person_id if unit == "person" else s.account_id),
        touch_at=s.started_at.cast("timestamp"), session_id=s.session_id,
        channel=s.channel.fill_null("Unassigned"),
    )


def with_session_values(steps: ir.Table, sessions: ir.Table) -> ir.Table:
    """Journey touches with their session's person, device and entrance values
    (:data:`JOURNEY_TOUCH_ORDER`), as the ``journey_touches`` view gives them."""
    s = sessions.select(_session="session_id", person_id="person_id", device_id="device_id",
                        **{level: sessions[column].fill_null("(not set)")
                           for level, column in LEVELS.items() if level != "channel"})
    joined = steps.inner_join(s, steps.session_id == s._session)
    return joined.select(*JOURNEY_TOUCH_ORDER)


def numbered_conversions(conversions: ir.Table, spec: ConversionSpec) -> ir.Table:
    """Each unit's conversions numbered in time order (``sequence`` from 1), with the time of
    the previous one (``previous_at``); only the first with ``count = "first"``."""
    conversions = conversions.select(*(conversions[c].cast(t).name(c)
                                       for c, t in CONVERSION_SCHEMA.items()))
    w = ibis.window(group_by=["unit", "unit_id"], order_by=["converted_at", "ref"])
    numbered = conversions.mutate(sequence=(ibis.row_number().over(w) + 1).cast("int64"),
                                  previous_at=conversions.converted_at.lag().over(w))
    if spec.count == "first":
        numbered = numbered.filter(numbered.sequence == 1)
    return numbered.mutate(journey_id=(numbered.conversion + ":" + numbered.unit_id + ":"
                                       + numbered.sequence.cast("string")))


def _in_window(touch_at: ir.TimestampValue, end: ir.TimestampValue,
               lookback_days: int | None) -> ir.BooleanValue:
    if lookback_days is None:
        return ibis.literal(True)
    return touch_at >= end - ibis.interval(days=lookback_days)


def journey_rows(sessions: ir.Table, conv: ir.Table, spec: ConversionSpec) -> ir.Table:
    """Every touch of every journey of one conversion type, before the lookback: the
    :data:`JOURNEY_TOUCH_ORDER` columns, ``ref``, and ``_kept`` (inside the lookback window).

    ``conv`` are the type's :func:`numbered_conversions`; units are taken from them (a deal
    type may end person and account journeys). ``position`` numbers the kept touches.
    """
    # a stored table reads back as timestamp(6): one type, so the unions below line up
    conv = conv.mutate(converted_at=conv.converted_at.cast("timestamp"),
                       previous_at=conv.previous_at.cast("timestamp"),
                       sequence=conv.sequence.cast("int64"))
    own = unit_touches(sessions, spec.unit)
    touches = own
    if spec.deal is not None and spec.unit == "account":
        # a deal type for accounts falls back to the person a deal names when its company is
        # unknown; people without a company are the units such deals come from, so they have
        # open journeys too (else every such journey converts and every rate is 100 %)
        touches = own.union(unit_touches(sessions, "person"), distinct=False)
        own = own.union(unit_touches(sessions, "person", without_account=True), distinct=False)

    # converting journeys: the touches up to each conversion (and after the previous one)
    j = touches.inner_join(conv, [touches.unit == conv.unit, touches.unit_id == conv.unit_id,
                                  touches.touch_at <= conv.converted_at])
    if spec.history == "since_previous":
        j = j.filter(j.previous_at.isnull() | (j.touch_at > j.previous_at))
    j = j.mutate(_end=j.converted_at, _kept=_in_window(j.touch_at, j.converted_at,
                                                       spec.lookback_days))
    converted = j.select(*_TOUCH_COLUMNS, "ref", converted=ibis.literal(True), _end=j._end,
                         _kept=j._kept)

    # open journeys: the touches after the unit's last conversion, or all of them
    last = conv.group_by(["unit", "unit_id"]).aggregate(_last_at=conv.converted_at.max())
    # an open journey ends at its unit's last touch: the last of all its touches (the open
    # ones are the latest), an aggregate joined back rather than a window over journey ids
    # (the unit's last conversion joined to it first: one join of the touches, not two)
    ends = own.group_by(_u="unit", _uid="unit_id").aggregate(_end=own.touch_at.max())
    ends = ends.left_join(last, [ends._u == last.unit, ends._uid == last.unit_id]).select(
        "_u", "_uid", "_end", "_last_at")
    o = own.inner_join(ends, [own.unit == ends._u, own.unit_id == ends._uid])
    o = o.filter(o._last_at.isnull() if spec.count == "first"
                 else o._last_at.isnull() | (o.touch_at > o._last_at))
    o = o.mutate(journey_id=ibis.literal(spec.name) + ":" + o.unit_id + ":" + OPEN,
                 conversion=ibis.literal(spec.name), sequence=ibis.null("int64"),
                 converted_at=ibis.null("timestamp"), value=ibis.literal(0.0),
                 ref=ibis.null("string"))
    o = o.mutate(_kept=_in_window(o.touch_at, o._end, spec.lookback_days))
    opened = o.select(*_TOUCH_COLUMNS, "ref", converted=ibis.literal(False), _end=o._end,
                      _kept=o._kept)

    every = converted.union(opened, distinct=False)
    order = ["touch_at", "channel", "session_id"]
    every = every.mutate(
        position=(ibis.row_number().over(ibis.window(group_by=["journey_id", "_kept"],
                                                     order_by=order)) + 1).cast("int64"),
        days_before_conversion=seconds_between(every.touch_at, every._end) / SECONDS_PER_DAY,
    )
    return every.select(*STEP_COLUMNS, "ref", "_kept")


def journeys_from_rows(rows: ir.Table, conv: ir.Table) -> tuple[ir.Table, ir.Table]:
    """``(journeys, steps)`` from :func:`journey_rows` (of one or several types) and the
    numbered conversions they came from; ``steps`` are the kept touches (:data:`STEP_COLUMNS`)."""
    journey_touches = rows.filter(rows._kept).select(*STEP_COLUMNS)
    cut = rows.filter(~rows._kept).group_by("journey_id").aggregate(
        cut_touches=ibis._.count().cast("int64"))
    stats = journey_touches.group_by("journey_id").aggregate(
        first_touch_at=journey_touches.touch_at.min(), last_touch_at=journey_touches.touch_at.max(),
        touches=journey_touches.count().cast("int64"),
        channels=journey_touches.channel.nunique().cast("int64"))
    opened = rows.filter(~rows.converted).group_by("journey_id").aggregate(
        conversion=rows.conversion.max(), unit=rows.unit.max(), unit_id=rows.unit_id.max())
    # every conversion is a journey, also one with no touch at all in its window (0 touches)
    heads = conv.select("journey_id", "conversion", "unit", "unit_id",
                        sequence=conv.sequence.cast("int64"), converted=ibis.literal(True),
                        converted_at=conv.converted_at.cast("timestamp"),
                        value=conv.value, ref=conv.ref).union(opened.select(
        "journey_id", "conversion", "unit", "unit_id", sequence=ibis.null("int64"),
        converted=ibis.literal(False), converted_at=ibis.null("timestamp"),
        value=ibis.literal(0.0), ref=ibis.null("string")), distinct=False)
    journeys = heads.left_join(stats, "journey_id").left_join(cut, "journey_id")
    journeys = journeys.select(
        "journey_id", "conversion", "unit", "unit_id", "sequence", "converted", "converted_at",
        "value", "ref", "first_touch_at", "last_touch_at",
        touches=journeys.touches.fill_null(0), channels=journeys.channels.fill_null(0),
        days_to_convert=seconds_between(journeys.first_touch_at,
                                        journeys.converted_at) / SECONDS_PER_DAY,
        cut_touches=journeys.cut_touches.fill_null(0),
        lookback_cut=journeys.cut_touches.fill_null(0) > 0,
    )
    return journeys, journey_touches


def journey_tables(sessions: ir.Table, conversions: ir.Table,
                   spec: ConversionSpec) -> tuple[ir.Table, ir.Table]:
    """``(journeys, journey_touches)`` of one conversion type, as expressions, from
    :func:`~touchline.journeys.conversions.find_conversions`' rows of ``spec``."""
    conv = numbered_conversions(conversions, spec)
    journeys, steps = journeys_from_rows(journey_rows(sessions, conv, spec), conv)
    return journeys, with_session_values(steps, sessions)


_TOUCH_COLUMNS: Sequence[str] = (
    "journey_id", "conversion", "unit", "unit_id", "sequence", "converted_at", "value",
    "touch_at", "session_id", "channel",
)
#: the columns of a journey's touch as computed (the session's other values are joined back)
STEP_COLUMNS: Sequence[str] = (
    "journey_id", "position", "conversion", "unit", "unit_id", "sequence", "converted",
    "converted_at", "value", "touch_at", "days_before_conversion", "session_id", "channel",
)
#: ``journey_touches`` columns in order (store.JOURNEY_TOUCHES documents them)
JOURNEY_TOUCH_ORDER: Sequence[str] = (
    "journey_id", "position", "conversion", "unit", "unit_id", "sequence", "converted",
    "converted_at", "value", "touch_at", "days_before_conversion", "session_id", "person_id",
    "device_id", *LEVELS,
)


def write_journeys(con: object, settings: Settings, *, keep_rows: bool = False
                   ) -> dict[str, int]:
    """Build and store ``stages``, ``journeys`` and ``journey_steps`` (each touch with its
    stage in ``settings.stage_model``; read through the ``journey_touches`` view) for every
    conversion type of ``settings`` with at least one conversion, replacing them whole; return
    the rows written per table.

    The conversions and the journeys' touch rows are each computed once into scratch tables
    (:func:`~touchline.engine.materialise`) that the stored tables are then read from; with
    ``keep_rows`` the touch rows' table (:data:`JOURNEY_ROWS`, the kept touches where
    ``_kept``) stays for the caller.
    """
    from touchline import engine, store
    from touchline.journeys.conversions import conversion_candidates, find_conversions
    from touchline.journeys.stages import stage_at, stage_table, touch_stages
    from touchline.prepare.reference import currency_rates
    from touchline.prepare.standardise import contact_key

    rates = currency_rates(settings.reporting_currency, settings.currency_rates_file)
    sessions = con.table("sessions")  # type: ignore[attr-defined]
    candidates = None
    stage_touches = touch_stages(settings)
    if stage_touches or any(spec.deal is None for spec in settings.conversions):
        # one pass over touchpoints (touches joined to sessions) for every condition on
        # touches, the conversions' and the stages'
        candidates = engine.materialise(con, "_touchline_candidates", conversion_candidates(  # type: ignore[arg-type]
            con.table("touchpoints"), settings.conversions,  # type: ignore[attr-defined]
            settings.touch_events, stages=stage_touches))
    found = ibis.union(*(find_conversions(con, spec, touch_events=settings.touch_events,
                                          statuses=settings.deal_statuses, rates=rates,
                                          call_seconds=settings.call_conversion_seconds,
                                          touchpoints=candidates,
                                          contact_key=contact_key(con, settings))  # type: ignore[arg-type]
                         for spec in settings.conversions), distinct=False)
    found = engine.materialise(con, "_touchline_found", found)  # type: ignore[arg-type]
    numbered = engine.materialise(con, "_touchline_conversions", ibis.union(*(  # type: ignore[arg-type]
        numbered_conversions(found.filter(found.conversion == spec.name), spec)
        for spec in settings.conversions), distinct=False))
    # a type nothing converted to has no journeys: its open journeys would be every unit's
    # whole history again, with nothing to credit and no rate to learn from
    counts = numbered.group_by("conversion").aggregate(n=ibis._.count()).to_pyarrow()
    converting = set(counts.column("conversion").to_pylist())
    specs = [spec for spec in settings.conversions if spec.name in converting]
    parts = [journey_rows(sessions, numbered.filter(numbered.conversion == spec.name), spec)
             for spec in specs or settings.conversions[:1]]
    every = ibis.union(*parts, distinct=False) if specs else parts[0].limit(0)
    rows = engine.materialise(con, JOURNEY_ROWS, every)  # type: ignore[arg-type]
    written: dict[str, int] = {}

    def store_as(spec: store.TableSpec, expr: ir.Table) -> ir.Table:
        typed = expr.select(*(expr[c.name].cast(c.dtype).name(c.name) for c in spec.columns))
        stored = con.create_table(spec.name, typed, overwrite=True)  # type: ignore[attr-defined]
        written[spec.name] = int(stored.count().to_pyarrow().as_py())
        return stored

    stages = store_as(store.STAGES, stage_table(con, settings, numbered, candidates))
    journeys, touches = journeys_from_rows(rows, numbered)
    store_as(store.JOURNEYS, journeys)
    store_as(store.JOURNEY_STEPS, stage_at(touches, stages, settings.stage_model))
    engine.replace_view(con, store.JOURNEY_TOUCHES.name,  # type: ignore[arg-type]
                        store.JOURNEY_TOUCHES.view(con))  # type: ignore[misc, arg-type]
    for scratch in ((() if keep_rows else (JOURNEY_ROWS,))
                    + ("_touchline_conversions", "_touchline_found", "_touchline_candidates")):
        engine.drop_materialised(con, scratch)  # type: ignore[arg-type]
    return written
