"""Touch-level journeys for attribution, built in the engine from prepared tables.

A journey is the touches of one unit (a person, or a company account for B2B) in time order,
up to and including the one that converted. One touch is one session: the visit and the
channel its landing was classified into (phone calls and offline events are sessions of their
own). The output has the attribution input contract (``touchline.attribution``): ``journey_id``,
``touch_at``, ``channel``, ``converted``, ``value``, ``converted_at``.

* :func:`person_journeys` (B2C): the conversion is the person's first session with revenue;
  its revenue is the value. Persons who never bought give non-converting journeys.
* :func:`account_journeys` (B2B): the conversion is the account's first won deal
  (``deals.status = 'won'``, at ``closed_at``, value ``amount``); the touches are the sessions
  of all the account's people before it.

Only the first conversion of a unit is credited here; touches after it are not part of the
journey. Lookback windows are applied later by ``aggregate_paths(lookback=...)``.
"""

from __future__ import annotations

import ibis.expr.types as ir
from ibis import _


def _journeys(touches: ir.Table, conversions: ir.Table, unit: str) -> ir.Table:
    """Join each unit's touches to its first conversion and keep those not after it."""
    joined = touches.left_join(conversions, touches[unit] == conversions[unit])
    keep = joined.converted_at.isnull() | (joined.started_at <= joined.converted_at)
    return joined.filter(keep).select(
        journey_id=joined[unit],
        touch_at=joined.started_at,
        channel=joined.channel.fill_null("Unassigned"),
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
    won = deals.filter((deals.status == "won") & deals.account_id.notnull()
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


__all__ = ["account_journeys", "person_journeys"]
