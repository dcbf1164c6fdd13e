"""Touch-level journeys for attribution, built in the engine from prepared tables.

A journey is the touches of one unit (a person, or a company account for B2B) in time order,
up to and including the one that converted. One touch is one session: the visit and the
channel its landing was classified into (phone calls and offline events are sessions of their
own). The output has the attribution input contract (``touchline.attribution``): ``journey_id``,
``touch_at``, ``channel``, ``converted``, ``value``, ``converted_at``, plus the session's
``source``, ``medium``, ``campaign``, ``keyword``, ``landing_page`` and ``content`` so credits
can be given at any of those levels (:data:`LEVELS`).

* :func:`person_journeys` (B2C): the conversion is the person's first session with revenue;
  its revenue is the value. Persons who never bought give non-converting journeys.
* :func:`account_journeys` (B2B): the conversion is the account's first won deal (the deal's
  status normalised by :func:`deal_outcome`: ``won``, ``Closed Won`` and ``WON`` all count), at
  ``closed_at``, value ``amount``; the touches are the sessions of all the account's people
  before it.
* :func:`warehouse_journeys`: both, from a warehouse's ``sessions`` and ``deals``.

Only the first conversion of a unit is credited here; touches after it are not part of the
journey. :func:`aggregate_paths` turns journeys into the aggregated paths attribution reads,
applying a lookback window if asked.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import ibis
import ibis.expr.types as ir
from ibis import _

from touchline.errors import SchemaError

SECONDS_PER_DAY = 86_400.0
#: attribution level → the session column it reads
LEVELS: dict[str, str] = {
    "channel": "channel", "source": "source", "medium": "medium", "campaign": "campaign",
    "keyword": "term", "landing_page": "landing_page", "content": "content",
}
#: deal statuses (trimmed, lower case) that mean the deal was won or lost; anything else is open
WON_STATUSES = ("won", "closed won", "closed_won", "closedwon", "win")
LOST_STATUSES = ("lost", "closed lost", "closed_lost", "closedlost")


def _journeys(touches: ir.Table, conversions: ir.Table, unit: str) -> ir.Table:
    """Join each unit's touches to its first conversion and keep those not after it."""
    joined = touches.left_join(conversions, touches[unit] == conversions[unit])
    keep = joined.converted_at.isnull() | (joined.started_at <= joined.converted_at)
    return joined.filter(keep).select(
        journey_id=joined[unit],
        touch_at=joined.started_at,
        channel=joined.channel.fill_null("Unassigned"),
        **{level: joined[column].fill_null("(not set)")
           for level, column in LEVELS.items() if level != "channel"},
        converted=joined.converted_at.notnull(),
        value=joined.value.fill_null(0.0),
        converted_at=joined.converted_at,
    )


def person_journeys(sessions: ir.Table) -> ir.Table:
    """B2C journeys: each person's sessions up to the first session with revenue.

    Sessions of people linked to a company account are left out (they belong to
    :func:`account_journeys`).
    """
    own = sessions.filter(sessions.account_id.isnull() & sessions.person_id.notnull())
    buying = own.filter(own.conversion_count > 0)
    first = buying.group_by("person_id").aggregate(converted_at=_.started_at.min())
    valued = buying.join(first, [
        buying.person_id == first.person_id, buying.started_at == first.converted_at
    ]).group_by(buying.person_id).aggregate(
        converted_at=_.converted_at.min(), value=_.revenue.sum()
    )
    return _journeys(own, valued, "person_id")


def account_journeys(sessions: ir.Table, deals: ir.Table) -> ir.Table:
    """B2B journeys: every session of an account's people up to its first won deal."""
    # prepared account ids carry their evidence as a prefix (crm:, group:, domain:); the CRM's
    # deals name the bare id, so journeys are keyed by the id without its prefix
    own = sessions.filter(sessions.account_id.notnull())
    own = own.mutate(account_id=own.account_id.re_extract(r"^[a-z_]+:(.*)$", 1))
    won = deals.filter((deal_outcome(deals.status) == "won") & deals.account_id.notnull()
                       & deals.closed_at.notnull())
    # a CRM export holds one row per deal snapshot: take each deal once, at its close
    won = won.group_by(["account_id", "deal_id"]).aggregate(
        closed_at=_.closed_at.min(), amount=_.amount.max()
    )
    first = won.group_by("account_id").aggregate(converted_at=_.closed_at.min())
    valued = won.join(first, [
        won.account_id == first.account_id, won.closed_at == first.converted_at
    ]).group_by(won.account_id).aggregate(
        converted_at=_.converted_at.min(), value=_.amount.fill_null(0.0).sum()
    )
    return _journeys(own, valued, "account_id")


def deal_outcome(status: ir.StringValue) -> ir.StringValue:
    """``won``, ``lost`` or ``open`` from a CRM's status text, whatever its case or spacing.

    CRMs spell a won deal ``won``, ``Won``, ``Closed Won`` (Salesforce) or ``closedwon``
    (HubSpot); each of :data:`WON_STATUSES` (compared trimmed and lower-cased) is won.
    """
    text = status.strip().lower()
    return ibis.cases((text.isin(WON_STATUSES), "won"), (text.isin(LOST_STATUSES), "lost"),
                      else_="open")


def warehouse_journeys(sessions: ir.Table, deals: ir.Table | None = None) -> ir.Table:
    """Every journey of a prepared warehouse: persons without an account (B2C, first purchase)
    and accounts (B2B, first won deal), one touch-level table.

    Journey ids cannot collide: person ids start with ``p_``, account journeys are keyed by the
    CRM's bare account id and prefixed ``account:`` here.
    """
    people = person_journeys(sessions)
    if deals is None:
        return people
    accounts = account_journeys(sessions, deals)
    accounts = accounts.mutate(journey_id="account:" + accounts.journey_id)
    return people.union(accounts)


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
        _age=(t._end.epoch_seconds() - t.touch_at.epoch_seconds()).cast("float64")
        / SECONDS_PER_DAY,
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




__all__ = ["LEVELS", "account_journeys", "aggregate_paths", "deal_outcome", "journeys_in_period",
           "person_journeys", "warehouse_journeys"]
