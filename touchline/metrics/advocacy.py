r"""Advocacy KPIs besides NPS (which is in :mod:`touchline.metrics.kpis`): reviews, their
rating distribution, referrals, and "how did you hear about us" against the tracked first
touch.

Reviews come from two places, read as one: the ``reviews`` import (Google, Trustpilot, G2…)
and survey answers that carry a ``review_rating`` (platform ``survey``). A review is joined to
its person, where known, by the survey's user or anonymous id, the e-mail, the phone (in the
identity graph) or the order id (the orders on touches), and so to the person's acquisition
channel.

>>> from touchline.metrics.kpis import KPIS
>>> KPIS["review_rating"].formula
'count(reviews); mean(rating)'
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import ibis
import ibis.expr.types as ir

from touchline.metrics.kpis import (
    _ZERO,
    DOC_SECTIONS,
    KPIS,
    NOT_SET,
    PERSON_DIMS,
    UNASSIGNED,
    Query,
    _aggregate,
    _keyed,
    _order,
    _ratio,
    as_in_graph,
    first_touches,
    holds_rows,
    person_levels,
    register,
    require,
    with_first_touch,
)

if TYPE_CHECKING:
    from ibis.backends import BaseBackend

REVIEW_DIMS = (*PERSON_DIMS, "platform")
#: what the self-reported answers not matching any heard_about_channels rule are called
OTHER = "Other"


def _holds_rows(con: BaseBackend, name: str) -> bool:
    # inside a page or computed_once, from the tables of every KPI asked once
    return holds_rows(con, name)


def _reviews(con: BaseBackend, q: Query, kpi: str) -> ir.Table:
    """Every review (imported reviews and survey answers with a rating) as ``_review``,
    ``platform``, ``rating``, ``reviewed_at`` and the reviewer's identifiers; with the
    person's acquisition breakdowns when ``by`` asks for them."""
    parts = []
    if _holds_rows(con, "reviews"):
        r = con.table("reviews")
        parts.append(r.select(
            _review="review:" + r.row_hash, platform=r.platform.strip().lower(),
            rating=r.rating, reviewed_at=r.reviewed_at, _ref=ibis.null("string"),
            email=r.email, phone=r.phone, order_id=r.order_id))
    if _holds_rows(con, "surveys"):
        s = con.table("surveys")
        s = s.filter(s.review_rating.between(1, 5))
        parts.append(s.select(
            _review="survey:" + s.response_id, platform=ibis.literal("survey"),
            rating=s.review_rating, reviewed_at=s.responded_at, _ref=s.person_id,
            email=s.email, phone=ibis.null("string"), order_id=ibis.null("string")))
    t = ibis.union(*parts, distinct=False) if len(parts) > 1 else parts[0]
    t = t.mutate(platform=t.platform.fill_null(NOT_SET))
    if not set(q.by) - {"platform"}:
        return _keyed(t, q, at=t.reviewed_at, dims={"platform": t.platform})
    require(con, KPIS[kpi], ["sessions", "identities"])
    t = with_first_touch(con, t, "_review", [
        "user:" + t._ref, "anon:" + t._ref, "email:" + as_in_graph(con, q, t.email.strip().lower()),
        "phone:" + as_in_graph(con, q, t.phone), "order:" + t.order_id], q)
    return _keyed(t, q, at=t.reviewed_at,
                  dims={d: t[d] for d in (*person_levels(t), "platform")})


@register("review_rating", stage="advocacy", unit="stars (1-5)",
          formula="count(reviews); mean(rating)", tables=["reviews", "surveys"],
          dimensions=REVIEW_DIMS, values=("reviews", "review_rating"),
          zero_denominator="null (no review: no row)", any_table=True)
def review_rating(con: BaseBackend, q: Query) -> ir.Table:
    """How many reviews, and their average rating, by the review's period and platform, and
    by the reviewer's first-touch channel, source… and device (the device category of the
    reviewer's first session; reviews matched to no one: Unassigned, ``(not set)``).
    Needs either import: review exports or survey answers with a rating."""
    t = _reviews(con, q, "review_rating")
    return _order(_aggregate(t, q, reviews=t.count().cast("int64"),
                             review_rating=t.rating.mean()), q)


@register("review_distribution", stage="advocacy", unit="reviews",
          formula="count(reviews) per star (rating rounded half up); share = count / reviews "
          "in the group", tables=["reviews", "surveys"], dimensions=REVIEW_DIMS,
          values=("stars", "reviews", "share"), any_table=True, table=True)
def review_distribution(con: BaseBackend, q: Query) -> ir.Table:
    """The rating distribution: reviews of 1, 2… 5 stars (a 4.5 counts as 5) and each one's
    share of the group's reviews, by period, platform and the reviewer's first touch."""
    t = _reviews(con, q, "review_distribution")
    stars = (t.rating + 0.5).floor().cast("int64").name("stars")
    t = t.group_by([*q.keys, stars]).aggregate(reviews=t.count().cast("int64"))
    total = t.reviews.sum().over(group_by=list(q.keys)) if q.keys else t.reviews.sum().over()
    return t.mutate(share=_ratio(t.reviews, total)).order_by([*q.keys, "stars"])


@register("referrals", stage="advocacy", unit="referrals",
          formula="count(touches of settings.referral_events); referrers = count(distinct "
          "persons sending them)", tables=["touchpoints", "sessions"], dimensions=PERSON_DIMS,
          values=("referrals", "referrers"))
def referrals(con: BaseBackend, q: Query) -> ir.Table:
    """Referrals customers sent (a referral programme's ``Referral Sent`` events, or the
    events ``settings.referral_events`` names), by period and the referrer's first-touch
    channel, source… and device (the device category of the referrer's first session)."""
    tp = con.table("touchpoints")
    tp = tp.filter(tp.event.isin(q.config.referral_events) & tp.person_id.notnull())
    t, dims = tp, {}
    if q.by:  # without a breakdown, no first touch to join (one a person: it keeps each row)
        f = first_touches(con, q)
        levels = person_levels(f)
        f = f.select(_ft_person="person_id", **{f"_ft_{d}": d for d in levels})
        t = tp.left_join(f, tp.person_id == f._ft_person)
        dims = {d: t[f"_ft_{d}"].fill_null(UNASSIGNED if d == "channel" else NOT_SET)
                for d in levels}
    t = _keyed(t, q, at=t.occurred_at, dims=dims)
    return _order(_aggregate(t, q, referrals=t.count().cast("int64"),
                             referrers=t.person_id.nunique().cast("int64")), q)


def heard_about_channel(answer: ir.StringValue, rules: dict[str, str]) -> ir.StringValue:
    """The channel an answer names: the first of ``rules`` (channel → regular expression,
    searched in the lower-case answer) that matches, else ``Other``."""
    text = answer.strip().lower()
    channel: ir.StringValue = ibis.literal(OTHER)
    for name, pattern in reversed(list(rules.items())):
        channel = ibis.ifelse(text.re_search(pattern).fill_null(False), name, channel)
    return channel


@register("heard_about_agreement", stage="advocacy", unit="answers",
          formula="count(answers) per (self-reported channel, tracked first-touch channel); "
          "share = count / answers of the self-reported channel",
          tables=["surveys", "sessions", "identities"], dimensions=("period",),
          values=("reported_channel", "tracked_channel", "answers", "share", "agrees"),
          zero_denominator=_ZERO, table=True)
def heard_about_agreement(con: BaseBackend, q: Query) -> ir.Table:
    """The agreement matrix of "how did you hear about us" with the tracked first touch: each
    answer mapped to a channel by ``settings.heard_about_channels`` (Google → Organic Search,
    a Google ad → Paid Search, a friend → Word of mouth…) against the channel of the
    answerer's first session (Unassigned: matched to no one). ``agrees`` marks the diagonal;
    the share of answers on it is the agreement rate, and Word of mouth against Direct is the
    dark social tracking misses."""
    s = con.table("surveys")
    s = s.filter(s.heard_about.notnull() & (s.heard_about.strip() != ""))
    t = with_first_touch(con, s, "response_id", [
        "user:" + s.person_id, "anon:" + s.person_id, "email:" + s.email.strip().lower()])
    t = _keyed(t, q, at=t.responded_at, dims={})
    t = t.mutate(reported_channel=heard_about_channel(t.heard_about,
                                                      q.config.heard_about_channels),
                 tracked_channel=t.channel)
    keys = [*q.keys, "reported_channel", "tracked_channel"]
    t = t.group_by(keys).aggregate(answers=t.count().cast("int64"))
    total = t.answers.sum().over(group_by=[*q.keys, "reported_channel"])
    t = t.mutate(share=_ratio(t.answers, total),
                 agrees=t.reported_channel == t.tracked_channel)
    return t.order_by(keys)


DOC_SECTIONS["advocacy"] = """
## Advocacy: NPS interval, reviews, referrals, heard about vs tracked

`touchline/metrics/kpis.py` (`nps`) and `touchline/metrics/advocacy.py`.

- **NPS** = 100 · (p − d), p and d the shares of promoters (9-10) and detractors (0-6) among
  n answers. Its 95 % interval is the normal approximation for a difference of two shares of
  one multinomial sample: `100 · (p − d ± 1.96 · sqrt((p + d − (p − d)²) / n))`. By period,
  by the survey's `segment` and by the answerer's first-touch channel, source… Answers
  outside 0-10 are rejected at ingest (`bad_nps`), never averaged.
- **Reviews** (`review_rating`, `review_distribution`) read the `reviews` import and survey
  answers with a `review_rating` (platform `survey`) as one; either import is enough. A review
  is matched to its person by the survey's user or anonymous id, the e-mail, the phone (in the
  identity graph) or the order id (`touches.order_id`), then to that person's first touch.
  The distribution rounds ratings half up to whole stars.
- **Referrals** count the events of `referral_events` (default `Referral Sent`) and the
  persons sending them.
- **Heard about vs tracked** (`heard_about_agreement`): each survey answer to "how did you
  hear about us" is mapped to a channel by `heard_about_channels` (channel → regular
  expression searched in the lower-case answer, first match wins, else `Other`; "a friend"
  is `Word of mouth`, which no tracker sees) and counted against the channel of the
  answerer's first session (`Unassigned`: matched to no one). `share` is the share of the
  self-reported row; `agrees` marks the diagonal.
"""
