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
    _ratio,
    family,
    register_in,
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


@family("social_followers")
def _follower_counts(con: BaseBackend, q: Query, needs: frozenset[str]) -> ir.Table:
    """The rows with a follower count, in one pass: with ``last``, ``_accounts`` and
    ``_followers`` (each account's count on its last day with one in the group, summed);
    with ``growth``, ``_base`` (the account's count before the group, its first count if
    none) and ``_delta`` (its change over the group)."""
    t = _social(con, q, followers=True)
    # the edges as columns first: an aggregate's filter cannot hold a window function
    t = t.mutate(**({"_last": _edge(t, q, last=True)} if "last" in needs else {}),
                 **({"_first": _edge(t, q, last=False)} if "growth" in needs else {}))
    sums: dict[str, ir.Scalar] = {}
    if "last" in needs:
        sums |= {"_accounts": t.count(where=t._last),
                 "_followers": t.followers.sum(where=t._last)}
    if "growth" in needs:
        base = ibis.ifelse(t._first, t._previous.coalesce(t.followers), 0)
        delta = ibis.ifelse(t._first, t.followers - t._previous.coalesce(t.followers),
                            t.followers - t._previous)
        sums |= {"_base": base.sum(), "_delta": delta.sum()}
    return _aggregate(t, q, **sums)


@register_in("social_followers", "social_followers", needs=["last"], stage="awareness",
             unit="followers",
             formula="sum over accounts of followers on the account's last day in the group",
             tables=["social"], dimensions=SOCIAL_DIMS, values=("accounts", "followers"),
             headline="followers")
def social_followers(a: ir.Table) -> dict[str, ir.Value]:
    """Followers at the end of the period: each account's count on its last day with one in
    the period (or window), summed over the platform's accounts."""
    return {"accounts": a._accounts.cast("int64"), "followers": a._followers.cast("int64")}


@register_in("social_followers", "social_follower_growth", needs=["growth"],
             stage="awareness", unit="followers",
             formula="new = sum(last followers - base) over accounts, base = followers on the "
             "account's day before the group (its first day if none); rate = new / sum(base)",
             tables=["social"], dimensions=SOCIAL_DIMS,
             values=("followers_before", "new_followers", "follower_growth"),
             zero_denominator=_ZERO, headline="new_followers")
def social_follower_growth(a: ir.Table) -> dict[str, ir.Value]:
    """Net new followers in the period and the growth rate: an account first seen in the
    period grows from its first count, not from zero (a newly imported account is not a
    gain)."""
    before, new = a._base.cast("int64"), a._delta.cast("int64")
    return {"followers_before": before, "new_followers": new,
            "follower_growth": _ratio(new, before)}


@family("social")
def _social_flows(con: BaseBackend, q: Query, needs: frozenset[str]) -> ir.Table:
    """The day's flows of every row, summed in one pass: ``_posts``, ``_impressions``; with
    ``engagements``, ``_engagements`` (the platform's, else likes + comments + shares),
    ``_likes``, ``_comments``, ``_shares`` and ``_shown`` (impressions, nulls as 0)."""
    t = _social(con, q)
    sums: dict[str, ir.Scalar] = {"_posts": t.posts.sum(), "_impressions": t.impressions.sum()}
    if "engagements" in needs:
        parts = t.likes.fill_null(0) + t.comments.fill_null(0) + t.shares.fill_null(0)
        sums |= {"_engagements": t.engagements.coalesce(parts).sum(),
                 "_likes": t.likes.sum(), "_comments": t.comments.sum(),
                 "_shares": t.shares.sum(),
                 "_shown": ibis.ifelse(t.impressions.notnull(), t.impressions, 0).sum()}
    return _aggregate(t, q, **sums)


@register_in("social", "social_reach", stage="awareness", unit="impressions",
             formula="sum(impressions); posts = sum(posts)", tables=["social"],
             dimensions=SOCIAL_DIMS, values=("posts", "social_reach"))
def social_reach(a: ir.Table) -> dict[str, ir.Value]:
    """Times the accounts' posts were seen. Platforms' own "reach" (unique viewers) cannot be
    added over days or accounts, so touchline's reach is impressions."""
    return {"posts": a._posts.cast("int64"), "social_reach": a._impressions.cast("int64")}


@register_in("social", "social_engagements", needs=["engagements"], stage="awareness",
             unit="engagements",
             formula="sum(engagements) (null: likes + comments + shares); rate = engagements / "
             "impressions", tables=["social"], dimensions=SOCIAL_DIMS,
             values=("engagements", "likes", "comments", "shares", "engagement_rate"),
             zero_denominator=_ZERO, headline="engagements")
def social_engagements(a: ir.Table) -> dict[str, ir.Value]:
    """Likes, comments (replies) and shares, and the engagements the platform counts (which
    may include clicks and saves; where an export has none, their sum), over impressions."""
    engagements = a._engagements.cast("int64")
    return {"engagements": engagements, "likes": a._likes.cast("int64"),
            "comments": a._comments.cast("int64"), "shares": a._shares.cast("int64"),
            "engagement_rate": _ratio(engagements, a._shown)}


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
