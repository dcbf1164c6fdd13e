r"""Social media KPIs (awareness) over the ``social`` import: followers, their growth, reach
and engagements, by period and platform.

A ``social`` row is one account's day: followers at the end of the day (a level), and the
day's posts, impressions, likes, comments and shares (flows). Levels are read at the last day
of each account in a period and summed over accounts; flows are summed.

>>> from touchline.metrics.kpis import KPIS
>>> KPIS["social_engagements"].formula
'sum(engagements) (null: likes + comments + shares); rate = engagements / impressions'
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import ibis
import ibis.expr.types as ir

from touchline.metrics.kpis import (
    _ZERO,
    DOC_SECTIONS,
    Query,
    _aggregate,
    _keyed,
    _order,
    _ratio,
    register,
)

if TYPE_CHECKING:
    from ibis.backends import BaseBackend

SOCIAL_DIMS = ("period", "platform")
_ACCOUNT = ["platform", "account"]


def _social(con: BaseBackend, q: Query, *, followers: bool = False) -> ir.Table:
    """The ``social`` rows in the window, keyed; with ``followers`` only the rows that have a
    count, with ``_previous``: the account's count on its previous such row (read before the
    window is applied, so a period's first day has its base)."""
    s = con.table("social")
    s = s.mutate(platform=s.platform.strip().lower(), account=s.account.strip())
    if followers:
        s = s.filter(s.followers.notnull())
        s = s.mutate(_previous=s.followers.lag().over(group_by=_ACCOUNT, order_by="date"))
    return _keyed(s, q, at=s.date, dims={"platform": s.platform})


def _edge(t: ir.Table, q: Query, *, last: bool) -> ir.BooleanValue:
    """Whether a row is its account's last (or first) day with followers in its group."""
    order = ibis.desc("date") if last else ibis.asc("date")
    rank = ibis.row_number().over(group_by=[*_ACCOUNT, *q.keys], order_by=order)
    return rank == 0


@register("social_followers", stage="awareness", unit="followers",
          formula="sum over accounts of followers on the account's last day in the group",
          tables=["social"], dimensions=SOCIAL_DIMS, values=("accounts", "followers"),
          headline="followers")
def social_followers(con: BaseBackend, q: Query) -> ir.Table:
    """Followers at the end of the period: each account's count on its last day with one in
    the period (or window), summed over the platform's accounts."""
    t = _social(con, q, followers=True)
    t = t.filter(_edge(t, q, last=True))
    return _order(_aggregate(t, q, accounts=t.count().cast("int64"),
                             followers=t.followers.sum().cast("int64")), q)


@register("social_follower_growth", stage="awareness", unit="followers",
          formula="new = sum(last followers - base) over accounts, base = followers on the "
          "account's day before the group (its first day if none); rate = new / sum(base)",
          tables=["social"], dimensions=SOCIAL_DIMS,
          values=("followers_before", "new_followers", "follower_growth"),
          zero_denominator=_ZERO, headline="new_followers")
def social_follower_growth(con: BaseBackend, q: Query) -> ir.Table:
    """Net new followers in the period and the growth rate: an account first seen in the
    period grows from its first count, not from zero (a newly imported account is not a
    gain)."""
    t = _social(con, q, followers=True)
    first = _edge(t, q, last=False)
    t = t.mutate(_base=ibis.ifelse(first, t._previous.coalesce(t.followers), 0),
                 _delta=ibis.ifelse(first, t.followers - t._previous.coalesce(t.followers),
                                    t.followers - t._previous))
    t = _aggregate(t, q, followers_before=t._base.sum().cast("int64"),
                   new_followers=t._delta.sum().cast("int64"))
    return _order(t.mutate(follower_growth=_ratio(t.new_followers, t.followers_before)), q)


@register("social_reach", stage="awareness", unit="impressions",
          formula="sum(impressions); posts = sum(posts)", tables=["social"],
          dimensions=SOCIAL_DIMS, values=("posts", "social_reach"))
def social_reach(con: BaseBackend, q: Query) -> ir.Table:
    """Times the accounts' posts were seen. Platforms' own "reach" (unique viewers) cannot be
    added over days or accounts, so touchline's reach is impressions."""
    t = _social(con, q)
    return _order(_aggregate(t, q, posts=t.posts.sum().cast("int64"),
                             social_reach=t.impressions.sum().cast("int64")), q)


@register("social_engagements", stage="awareness", unit="engagements",
          formula="sum(engagements) (null: likes + comments + shares); rate = engagements / "
          "impressions", tables=["social"], dimensions=SOCIAL_DIMS,
          values=("engagements", "likes", "comments", "shares", "engagement_rate"),
          zero_denominator=_ZERO, headline="engagements")
def social_engagements(con: BaseBackend, q: Query) -> ir.Table:
    """Likes, comments (replies) and shares, and the engagements the platform counts (which
    may include clicks and saves; where an export has none, their sum), over impressions."""
    t = _social(con, q)
    parts = t.likes.fill_null(0) + t.comments.fill_null(0) + t.shares.fill_null(0)
    engaged = t.engagements.coalesce(parts)
    t = _aggregate(t, q, engagements=engaged.sum().cast("int64"),
                   likes=t.likes.sum().cast("int64"), comments=t.comments.sum().cast("int64"),
                   shares=t.shares.sum().cast("int64"),
                   _impressions=ibis.ifelse(t.impressions.notnull(), t.impressions, 0).sum())
    t = t.mutate(engagement_rate=_ratio(t.engagements, t._impressions))
    return _order(t.drop("_impressions"), q)


DOC_SECTIONS["social"] = """
## Social: `social_followers`, `social_follower_growth`, `social_reach`, `social_engagements`

`touchline/metrics/social.py`, over `touchline ingest FILE --kind social` (one row per
platform, account and day; `docs/tables.md`). Followers are a level: each account's count on
its last day with one in the period, summed over the platform's accounts. Growth compares it
with the account's count on its last day *before* the period (read outside `--since`, so the
first period has its base); an account first seen in the period grows from its first count,
so importing a new account is no gain. Posts, impressions (touchline's reach: the platforms'
unique reach cannot be added over days) and engagements are flows, summed. Breakdowns: period
and `platform` (trimmed, lower case).
"""
