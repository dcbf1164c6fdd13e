"""Paths from touch-level journeys, built in the engine.

:func:`aggregate_paths` turns a touch-level table (``journey_id``, ``touch_at``, a level
column, ``converted``, ``value``, ``converted_at``) into the aggregated paths attribution reads,
applying a lookback window if asked; :func:`journeys_in_period` keeps the journeys that end in a
period. The journeys themselves are built by :mod:`touchline.journeys.build`.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import ibis
import ibis.expr.types as ir

from touchline.engine import seconds_between
from touchline.errors import SchemaError

SECONDS_PER_DAY = 86_400.0


def journeys_in_period(touches: ir.Table, *, since: datetime | None = None,
                       until: datetime | None = None) -> ir.Table:
    """The journeys that end in ``[since, until)``: a converting journey ends at its
    conversion, an open one at its last touch. Whole journeys are kept or dropped, so a
    journey that began before ``since`` keeps its early touches."""
    if since is None and until is None:
        return touches
    end = touches.converted_at.coalesce(
        touches.touch_at.max().over(ibis.window(group_by="journey_id")))
    t = touches.mutate(_end=end)
    keep = ibis.literal(True)
    if since is not None:
        keep &= t._end >= ibis.literal(since)
    if until is not None:
        keep &= t._end < ibis.literal(until)
    return t.filter(keep).drop("_end")


def aggregate_paths(
    touches: ir.Table,
    *,
    level: str = "channel",
    lookback: timedelta | None = None,
    with_ages: bool = False,
) -> ir.Table:
    """Turn a touch-level table into the aggregated paths table, in the engine.

    Touches are ordered by ``touch_at`` then by label (a stable tie-break, so DuckDB and Spark
    agree). A touch after its journey's ``converted_at`` is dropped; with ``lookback``, so is a
    touch older than ``converted_at - lookback`` (or, for a journey without conversion, older
    than its last touch minus ``lookback``). A journey left without touches gives no path.

    The ordered list is a ``collect`` of ``(position, label)`` structs, sorted and mapped to the
    labels: ordered on both engines (Spark has no ordered aggregate ``collect``).

    Returns columns ``path``, ``conversions``, ``value``, ``nulls``, ``lead_position``,
    ``opportunity_position`` (and ``ages``, in days, when ``with_ages``): with ``with_ages``
    journeys with identical paths but different timings stay apart.
    """
    import ibis

    required = {"journey_id", "touch_at", level, "converted"}
    missing = sorted(required - set(touches.columns))
    if missing:
        raise SchemaError(
            f"touch table lacks column(s) {', '.join(missing)} (has {', '.join(touches.columns)})"
        )
    t = touches
    if "value" not in t.columns:
        t = t.mutate(value=ibis.literal(0.0))
    if "converted_at" not in t.columns:
        t = t.mutate(converted_at=ibis.null("timestamp"))
    for flag in ("is_lead_touch", "is_opportunity_touch"):
        if flag not in t.columns:
            t = t.mutate(**{flag: ibis.literal(False)})
    t = t.mutate(
        _end=t.converted_at.cast(t.touch_at.type()).coalesce(
            t.touch_at.max().over(ibis.window(group_by="journey_id"))
        )
    )
    keep = t.touch_at <= t._end
    if lookback is not None:
        keep &= t.touch_at >= t._end - ibis.interval(seconds=int(lookback.total_seconds()))
    t = t.filter(keep & t[level].notnull())
    by_time = ["touch_at", level]
    t = t.mutate(_pos=ibis.row_number().over(ibis.window(group_by="journey_id", order_by=by_time)))
    t = t.mutate(
        _lead=ibis.cases((t.is_lead_touch.fill_null(False), t._pos), else_=ibis.null("int64")),
        _opportunity=ibis.cases(
            (t.is_opportunity_touch.fill_null(False), t._pos), else_=ibis.null("int64")
        ),
        _age=seconds_between(t.touch_at, t._end) / SECONDS_PER_DAY,
        _converted=t.converted.cast("boolean").fill_null(False),
    )
    # one list per journey: collect (position, value) structs, sort them, keep the values (a
    # hash aggregate; a window collect over the whole frame builds a list for every touch)
    def ordered_list(value: ir.Value) -> ir.ArrayValue:
        pairs = ibis.struct({"pos": t._pos, "v": value}).collect().sort()
        return pairs.map(lambda pair: pair.v)

    columns: dict[str, Any] = {
        "path": ordered_list(t[level].cast("string")),
        "lead_position": t._lead.min(),
        "opportunity_position": t._opportunity.min(),
        "_converted": t._converted.max(),
        "value": t.value.max(),
    }
    if with_ages:
        columns["ages"] = ordered_list(t._age)
    journeys = t.group_by("journey_id").aggregate(**columns)
    keys = ["path", "lead_position", "opportunity_position"] + (["ages"] if with_ages else [])
    return (
        journeys.group_by(keys)
        .aggregate(
            conversions=journeys._converted.cast("int64").sum(),
            value=ibis.cases(
                (journeys._converted, journeys.value.cast("float64")), else_=0.0
            ).sum(),
            nulls=(~journeys._converted).cast("int64").sum(),
        )
        .mutate(
            lead_position=lambda x: x.lead_position.fill_null(-1),
            opportunity_position=lambda x: x.opportunity_position.fill_null(-1),
        )
    )




__all__ = ["aggregate_paths", "journeys_in_period"]
