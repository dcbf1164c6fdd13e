r"""Funnels: how many units reach each step, how many drop off, and how long each step takes.

A funnel is an ordered list of steps; a step is an event name (``Form Submitted``), a page
(``page:/pricing``, a regular expression on the page path), a stage entered
(``stage:decision`` in the settings' stage model, or ``stage:b2b/SQL``) or a conversion
(``conversion:purchase``). Units are persons (or accounts). Four variants:

* ``cumulative`` (default when every step is a stage: a stage model is an ordered model, and
  stages may be skipped): a unit counts at every step up to the furthest one it reached,
  whether or not it was recorded at the steps before (HubSpot's "all stages", GA4's open
  funnel); with ``window``, a step counts when its first occurrence lies within ``window``
  of the unit's earliest first occurrence of any step;
* ``ordered`` (default otherwise): step :math:`k` is the first occurrence of its event at or
  after step :math:`k-1`'s (another event may come between), within ``window`` of step 1;
* ``strict``: as ordered, and when both steps are touches, step :math:`k` must be the unit's
  very next touch after step :math:`k-1`;
* ``any``: the steps in any order; a unit reaches step :math:`k` when it did steps
  :math:`1..k` and the first occurrences of all of them lie within ``window``.

In the ordered, strict and any-order funnels step 1 is the unit's first occurrence of it.
Per step: units that ``entered`` it, how many went on (``converted``) and ``dropped`` off
(cumulative: those whose furthest step it was), conversion from the previous and from the
first step, and the time from the previous step (seconds: median, p25, p75, p90; not for any
order). Cumulative measures that time over the units that reached the step themselves, from
the previous step each of them reached (a unit that skipped step :math:`k-1` is timed from
step :math:`k-2`, as the stage timeline does); a unit counted at a step only because it went
further has no time there, nor has one that reached the step before that previous step (no
negative durations). A zero denominator gives null. ``by`` breaks every figure down by the
unit's first-touch channel, campaign or device.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

import ibis
import ibis.expr.types as ir

from touchline.engine import seconds_between
from touchline.errors import ConfigError

MODES = ("cumulative", "ordered", "strict", "any")
#: one line each, on every output that shows a funnel (the CLI, the dashboard, the report)
MODE_LINES = {
    "cumulative": "cumulative funnel: a {unit} counts at every step up to the furthest one "
                  "it reached, skipped steps included (`touchline funnel --mode ordered`: "
                  "only the steps reached in order)",
    "ordered": "ordered funnel: a {unit} counts at a step when it reached every step before "
               "it, in order (other events may come between)",
    "strict": "strict funnel: a {unit} counts at a step when it reached every step before it "
              "in order, each touch the very next one",
    "any": "any-order funnel: a {unit} counts at step k when it did steps 1 to k, in any order",
}
BREAKDOWNS = {"channel": "channel", "campaign": "campaign", "device": "device_id",
              "source": "source"}
QUANTILES = {"p25": 0.25, "median": 0.5, "p75": 0.75, "p90": 0.9}


def step_events(con: object, step: str, *, unit: str = "person",
                stage_model: str = "lifecycle") -> ir.Table:
    """``unit_id``, ``at``, ``ref`` (which row), ``idx`` (the unit's touch number; null for
    stages and conversions) of every occurrence of ``step``."""
    column = "person_id" if unit == "person" else "account_id"
    kind, sep, rest = step.partition(":")
    if sep and kind == "stage":
        model, slash, name = rest.partition("/")
        model, name = (model, name) if slash else (stage_model, rest)
        s = con.table("stages")  # type: ignore[attr-defined]
        s = s.filter((s.stage_model == model) & (s.stage == name) & (s.unit == unit))
        return s.select("unit_id", at=s.entered_at, ref="stage:" + s.stage,
                        idx=ibis.null("int64"))
    if sep and kind == "conversion":
        j = con.table("journeys")  # type: ignore[attr-defined]
        j = j.filter((j.conversion == rest) & j.converted & (j.unit == unit))
        return j.select("unit_id", at=j.converted_at, ref=j.journey_id, idx=ibis.null("int64"))
    tp = con.table("touchpoints")  # type: ignore[attr-defined]
    tp = tp.filter(tp[column].notnull())
    tp = tp.mutate(idx=(ibis.row_number().over(group_by=column, order_by=[
        "occurred_at", "touchpoint_id"]) + 1).cast("int64"))
    hit = (tp.page_path.re_search(rest) if sep and kind == "page" else tp.event == step)
    tp = tp.filter(hit.fill_null(False))
    return tp.select(unit_id=tp[column], at=tp.occurred_at, ref=tp.touchpoint_id, idx=tp.idx)


def _first(events: ir.Table) -> ir.Table:
    """Each unit's earliest row of ``events`` (ties: the least ref)."""
    ranked = events.mutate(_r=ibis.row_number().over(group_by="unit_id",
                                                     order_by=["at", "idx", "ref"]))
    return ranked.filter(ranked._r == 0).drop("_r")


def reached(con: object, steps: Sequence[str], *, window: timedelta | None = None,
            mode: str = "ordered", unit: str = "person",
            stage_model: str = "lifecycle", units: ir.Table | None = None) -> list[ir.Table]:
    """For each step, the units that reached it: ``unit_id``, ``at`` (when), ``start`` (step
    1's time), ``previous_at`` (the previous step's time). ``units`` (a table with
    ``unit_id``): only these units (a segment, such as those who came first on a device)."""
    if mode not in MODES:
        raise ConfigError(f"funnel mode {mode!r}: choose from {', '.join(MODES)}")
    if mode == "cumulative":
        raise ConfigError("reached() follows units step by step: a cumulative funnel's "
                          "counts come from funnel()")
    if len(steps) < 2:
        raise ConfigError("a funnel needs at least two steps")
    events = [step_events(con, s, unit=unit, stage_model=stage_model) for s in steps]
    if units is not None:
        events = [e.semi_join(units.select("unit_id"), "unit_id") for e in events]
    if mode == "any":
        firsts = [_first(e).select("unit_id", **{f"_t{k}": "at"})
                  for k, e in enumerate(events)]
        out, joined = [], firsts[0]
        for k in range(len(steps)):
            if k:
                joined = joined.inner_join(firsts[k], "unit_id")
            times = [joined[f"_t{i}"] for i in range(k + 1)]
            start = ibis.least(*times) if k else times[0]
            end = ibis.greatest(*times) if k else times[0]
            ok = joined.mutate(_start=start, _end=end)
            if window is not None:
                ok = ok.filter(ok._end <= ok._start + ibis.interval(
                    seconds=int(window.total_seconds())))
            out.append(ok.select("unit_id", at=ok._end, start=ok._start,
                                 previous_at=ibis.null("timestamp")))
        return out
    first = _first(events[0])
    current = first.select("unit_id", "at", "ref", "idx", start=first.at,
                           previous_at=ibis.null("timestamp"))
    out = [current.select("unit_id", "at", "start", "previous_at")]
    for k in range(1, len(steps)):
        e = events[k].select(_u="unit_id", _at="at", _ref="ref", _idx="idx")
        j = current.inner_join(e, current.unit_id == e._u)
        later = (j._at > j.at) | ((j._at == j.at) & (j._ref != j.ref))
        if window is not None:
            later &= j._at <= j.start + ibis.interval(seconds=int(window.total_seconds()))
        if mode == "strict":
            later &= j.idx.isnull() | j._idx.isnull() | (j._idx == j.idx + 1)
        j = j.filter(later)
        j = j.mutate(_r=ibis.row_number().over(group_by="unit_id",
                                               order_by=["_at", "_idx", "_ref"]))
        j = j.filter(j._r == 0)
        current = j.select("unit_id", "start", at="_at", ref="_ref", idx="_idx",
                           previous_at=j.at)
        out.append(current.select("unit_id", "at", "start", "previous_at"))
    return out


def first_touch_values(con: object, by: str, unit: str = "person") -> ir.Table:
    """``unit_id`` → ``group``: the unit's first session's channel, campaign or device."""
    if by not in BREAKDOWNS:
        raise ConfigError(f"funnel breakdown {by!r}: choose from {', '.join(BREAKDOWNS)}")
    s = con.table("sessions")  # type: ignore[attr-defined]
    column = s.person_id if unit == "person" else s.account_id
    s = s.filter(column.notnull()).mutate(_u=column)
    s = s.mutate(_r=ibis.row_number().over(group_by="_u", order_by=["started_at",
                                                                   "session_id"]))
    s = s.filter(s._r == 0)
    return s.select(unit_id=s._u, group=s[BREAKDOWNS[by]].cast("string").fill_null("(none)"))


def default_mode(steps: Sequence[str], stage_model: str = "lifecycle") -> str:
    """``cumulative`` when every step is a stage (``stage:...``): the steps of an ordered
    stage model, which units may skip; ``ordered`` otherwise."""
    return ("cumulative" if steps and all(_stage_of(s, stage_model) is not None for s in steps)
            else "ordered")


def mode_line(mode: str, unit: str = "person") -> str:
    """The one line an output shows to say which funnel it is (:data:`MODE_LINES`)."""
    return MODE_LINES[mode].format(unit=unit)


def funnel(con: object, steps: Sequence[str], *, window: timedelta | None = None,
           mode: str | None = None, by: str | None = None, unit: str = "person",
           stage_model: str = "lifecycle", units: ir.Table | None = None) -> ir.Table:
    """One row per step (and ``group`` with ``by``): ``step_index``, ``step``, ``entered``,
    ``converted``, ``dropped``, ``from_previous``, ``from_first`` and the time from the
    previous step in seconds (``p25``, ``median``, ``p75``, ``p90``). ``mode``: see the
    module (None: :func:`default_mode`, cumulative for stages, else ordered). ``units``: only
    the units of this table's ``unit_id`` (:func:`reached`)."""
    mode = mode or default_mode(steps, stage_model)
    if mode not in MODES:
        raise ConfigError(f"funnel mode {mode!r}: choose from {', '.join(MODES)}")
    if len(steps) < 2:
        raise ConfigError("a funnel needs at least two steps")
    groups = first_touch_values(con, by, unit) if by else None
    stage_steps = [st for s in steps if (st := _stage_of(s, stage_model)) is not None]
    if mode == "cumulative":
        distinct = len(stage_steps) == len(steps) and len(set(stage_steps)) == len(steps)
        counted = _cumulative_counts(con, steps, stages=stage_steps if distinct else None,
                                     window=window, unit=unit, stage_model=stage_model,
                                     units=units, groups=groups)
        return _per_step(counted, steps)
    if (mode != "any" and len(stage_steps) == len(steps)
            and len(set(stage_steps)) == len(steps)):  # distinct stages: one pass
        counted = _stage_counts(con, stage_steps, window=window, unit=unit, units=units,
                                groups=groups)
        return _per_step(counted, steps)
    parts = reached(con, steps, window=window, mode=mode, unit=unit, stage_model=stage_model,
                    units=units)
    rows = []
    for k, r in enumerate(parts):
        r = _with_group(r, groups)
        seconds = seconds_between(r.previous_at, r.at)
        stats = {name: seconds.quantile(q) if k and mode != "any"
                 else ibis.null("float64") for name, q in QUANTILES.items()}
        rows.append(r.group_by("group").aggregate(
            entered=r.unit_id.nunique().cast("int64"), **stats).mutate(
            step_index=ibis.literal(k + 1)))
    return _per_step(ibis.union(*rows, distinct=False), steps)


def _stage_of(step: str, stage_model: str) -> tuple[str, str] | None:
    """``(stage model, stage)`` of a ``stage:`` step, None for any other step."""
    kind, sep, rest = step.partition(":")
    if not (sep and kind == "stage"):
        return None
    model, slash, name = rest.partition("/")
    return (model, name) if slash else (stage_model, rest)


def _stage_counts(con: object, stages: Sequence[tuple[str, str]], *,
                  window: timedelta | None, unit: str, units: ir.Table | None,
                  groups: ir.Table | None) -> ir.Table:
    """The ordered (and strict) funnel's counts when every step is a distinct stage: the
    figures of :func:`reached`, from one pass over ``stages``.

    A unit enters a stage once (``stages`` is keyed by model, unit and stage), so step
    :math:`k`'s only candidate is that entry: the unit reaches step :math:`k` when it reached
    step :math:`k-1` and entered stage :math:`k` at or after it (another stage at the same
    moment counts as after, as in :func:`reached`) and within ``window`` of step 1. Strict
    adds nothing, as stages are not touches. One row per unit with each stage's time, and no
    join per step: the expression, and so its SQL compilation, stays small (a five-step
    funnel compiled in seconds the general way)."""
    s = con.table("stages")  # type: ignore[attr-defined]
    s = s.filter((s.unit == unit) & ibis.or_(*[(s.stage_model == m) & (s.stage == n)
                                               for m, n in stages]))
    if units is not None:
        s = s.semi_join(units.select("unit_id"), "unit_id")
    wide = s.group_by("unit_id").aggregate(**{
        f"_t{k}": s.entered_at.min(where=(s.stage_model == m) & (s.stage == n))
        for k, (m, n) in enumerate(stages)})
    wide = wide.filter(wide._t0.notnull())
    if groups is not None:
        wide = wide.left_join(groups, "unit_id").mutate(
            group=lambda t: t.group.fill_null("(none)"))
    else:
        wide = wide.mutate(group=ibis.literal("all"))
    at: list[ir.TimestampValue] = [wide._t0]
    for k in range(1, len(stages)):
        t = wide[f"_t{k}"]
        ok = t >= at[-1]
        if window is not None:
            ok &= t <= wide._t0 + ibis.interval(seconds=int(window.total_seconds()))
        at.append(ibis.ifelse(ok, t, ibis.null("timestamp")))  # null once a step is missed
    wide = wide.mutate(**{f"_a{k}": a for k, a in enumerate(at)})
    aggregates: dict[str, ir.Value] = {}
    for k in range(len(stages)):
        hit = wide[f"_a{k}"].notnull()
        aggregates[f"_e{k}"] = wide.count(where=hit)  # (a sum is a HUGEINT on DuckDB)
        if k:  # the first step has no time from a previous one
            seconds = seconds_between(wide[f"_a{k - 1}"], wide[f"_a{k}"])
            for name, q in QUANTILES.items():
                aggregates[f"_{name}{k}"] = seconds.quantile(q, where=hit)
    return _by_step(wide.group_by("group").aggregate(**aggregates), len(stages))


def _cumulative_counts(con: object, steps: Sequence[str], *,
                       stages: Sequence[tuple[str, str]] | None, window: timedelta | None,
                       unit: str, stage_model: str, units: ir.Table | None,
                       groups: ir.Table | None) -> ir.Table:
    """The cumulative funnel's counts (``group``, ``step_index``, ``entered`` and the
    quantiles, as :func:`_stage_counts`).

    One row per unit and step it reached (its first occurrence; ``stages``, the steps as
    distinct ``(model, stage)`` pairs: one pass over ``stages``, whose rows are those first
    entries). A unit's furthest step :math:`f` is the last it reached (within ``window`` of
    its earliest row); it counts at steps :math:`1..f`, once each (on its row of step
    :math:`f`). The time at step :math:`k` is from the unit's previous row (the previous step
    it reached) to its row of step :math:`k`, negative ones left out."""
    if stages is not None:
        s = con.table("stages")  # type: ignore[attr-defined]
        s = s.filter((s.unit == unit) & ibis.or_(*[(s.stage_model == m) & (s.stage == n)
                                                   for m, n in stages]))
        k = ibis.cases(*[((s.stage_model == m) & (s.stage == n), i)
                         for i, (m, n) in enumerate(stages)])
        rows = s.select("unit_id", at=s.entered_at, _k=k.cast("int64"))
    else:
        rows = ibis.union(*[
            _first(step_events(con, step, unit=unit, stage_model=stage_model)).select(
                "unit_id", "at", _k=ibis.literal(i).cast("int64"))
            for i, step in enumerate(steps)], distinct=False)
    if units is not None:
        rows = rows.semi_join(units.select("unit_id"), "unit_id")
    if window is not None:
        rows = rows.mutate(_start=rows.at.min().over(group_by="unit_id"))
        rows = rows.filter(rows.at <= rows._start + ibis.interval(
            seconds=int(window.total_seconds()))).drop("_start")
    in_order = ibis.window(group_by="unit_id", order_by=["_k"])
    rows = rows.mutate(_furthest=rows._k.max().over(group_by="unit_id"),
                       _previous=rows.at.lag().over(in_order))
    rows = _with_group(rows, groups)
    seconds = seconds_between(rows._previous, rows.at)
    last = rows._k == rows._furthest
    aggregates: dict[str, ir.Value] = {}
    for i in range(len(steps)):
        aggregates[f"_e{i}"] = rows.count(where=last & (rows._k >= i))
        if i:  # the first step has no time from a previous one
            timed = (rows._k == i) & rows._previous.notnull() & (seconds >= 0)
            for name, q in QUANTILES.items():
                aggregates[f"_{name}{i}"] = seconds.quantile(q, where=timed)
    return _by_step(rows.group_by("group").aggregate(**aggregates), len(steps))


def _by_step(per_group: ir.Table, n: int) -> ir.Table:
    """``group``, ``_e<k>`` and ``_<quantile><k>`` per group as one row per group and step:
    ``group``, ``entered``, the quantiles and ``step_index`` (1-based)."""
    return ibis.union(*[per_group.select(
        "group", entered=per_group[f"_e{k}"].cast("int64"),
        **{name: per_group[f"_{name}{k}"].cast("float64") if k else ibis.null("float64")
           for name in QUANTILES},
        step_index=ibis.literal(k + 1)) for k in range(n)], distinct=False)


def _per_step(counted: ir.Table, steps: Sequence[str]) -> ir.Table:
    """The funnel's rows from ``counted`` (``group``, ``step_index``, ``entered`` and the
    quantiles, per step reached): conversion, drop-off and the shares."""
    # every step of every group, also those nobody reached (0, not a missing row)
    scaffold = counted.filter(counted.step_index == 1).select("group").cross_join(
        ibis.memtable({"step_index": list(range(1, len(steps) + 1)), "step": list(steps)}))
    table = scaffold.left_join(counted, ["group", "step_index"]).select(
        "group", "step_index", "step", *QUANTILES,
        entered=counted.entered.fill_null(0))
    w = ibis.window(group_by="group", order_by="step_index")
    nxt = table.entered.lead().over(w)
    first = table.entered.first().over(w)
    previous = table.entered.lag().over(w)
    converted = nxt.fill_null(0)
    table = table.mutate(
        converted=ibis.ifelse(table.step_index == len(steps), ibis.null("int64"), converted),
        dropped=ibis.ifelse(table.step_index == len(steps), ibis.null("int64"),
                            table.entered - converted),
        from_previous=ibis.ifelse(previous > 0, table.entered / previous.cast("float64"),
                                  ibis.null("float64")),
        from_first=ibis.ifelse(first > 0, table.entered / first.cast("float64"),
                               ibis.null("float64")))
    return table.select("group", "step_index", "step", "entered", "converted", "dropped",
                        "from_previous", "from_first", *QUANTILES).order_by(
        ["group", "step_index"])


def _with_group(rows: ir.Table, groups: ir.Table | None) -> ir.Table:
    """``rows`` with the ``group`` of each unit (``(none)`` for a unit in no group), or
    ``all`` when the funnel is not split."""
    if groups is None:
        return rows.mutate(group=ibis.literal("all"))
    return rows.left_join(groups, "unit_id").mutate(group=lambda t: t.group.fill_null("(none)"))
