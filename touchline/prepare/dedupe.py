"""One touch seen twice, or by two systems, becomes one row; the loser points at the winner.

Exact duplicates share a ``message_id`` (a retried batch, a late copy): the earliest copy wins.
Cross-source duplicates are the same form fill, chat, call or deal seen by the tag, the CRM and
the chat tool: same event name, different ``recorded_by``, the same normalised e-mail, phone or
CRM contact id (or the same page for the same device or user), within a per-event tolerance.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import ibis
import ibis.expr.types as ir

from touchline.engine import epoch_ms
from touchline.prepare.base import Split, reject
from touchline.prepare.standardise import sha256_hex

log = logging.getLogger(__name__)

#: how far a cross-source duplicate's ``ref`` follows rows that lost in turn
REF_HOPS = 3


def repeated_ids(events: ir.Table) -> ir.Table:
    """The message ids (column ``_dup_id``) seen more than once: a hash aggregate on one
    column."""
    counts = events.group_by("message_id").aggregate(_copies=ibis._.count())
    return counts.filter(counts._copies > 1).select(_dup_id="message_id")


#: the columns that order the copies of one ``message_id``, earliest first: the first copy
#: is kept. A total order in practice: copies that tie on all of them are identical touches.
COPY_ORDER = ("timestamp", "received_at", "recorded_by", "url", "referrer", "user_agent",
              "anonymous_id", "user_id", "email", "phone", "contact_id")
#: the row identity :func:`losing_copies` and :func:`dedupe_exact` read
#: (:func:`touchline.engine.materialise_with_row_ids`)
ROW = "_row"


def losing_copies(events: ir.Table, repeated: ir.Table | None = None) -> ir.Table:
    """The :data:`ROW` ids of the copies that lose: every row of a repeated ``message_id``
    but its first by :data:`COPY_ORDER`, then the smaller :data:`ROW` (which makes copies
    identical on all of them one kept row).

    ``events`` carries :data:`ROW`, a unique row id. Only a narrow projection (the id, the
    order columns, :data:`ROW`) enters the window, and only the rows of repeated ids (a hash
    aggregate, :func:`repeated_ids`, stored by the caller or else inline): the copies' wide
    rows are never sorted, and a caller joins the result back by :data:`ROW`. At 50M events
    the window over the ~9M full-width copies was where prepare ran out of memory under 6 GB.
    """
    if repeated is None:
        repeated = repeated_ids(events)
    multi = events.semi_join(repeated, events.message_id == repeated._dup_id)
    order = [c for c in COPY_ORDER if c in multi.columns]
    narrow = multi.select("message_id", *order, ROW)
    ranked = narrow.mutate(_copy=ibis.row_number().over(group_by="message_id",
                                                        order_by=[*order, ROW]))
    return ranked.filter(ranked._copy > 0).select(ROW)


def dedupe_exact(events: ir.Table, losers: ir.Table | None = None) -> Split:
    """Keep one row per ``message_id``: every row but the :func:`losing_copies`, which go to
    rejects pointing at their id.

    ``events`` carries :data:`ROW`, a unique row id (dropped from both sides); ``losers``: its
    :func:`losing_copies`, stored once by the caller (the kept and the rejected side both read
    them), else inline. Both sides meet the losers on :data:`ROW`, an int64: the hash table
    is one narrow column of the copies, whatever the width of the rows.
    """
    if losers is None:
        losers = losing_copies(events)
    on = events[ROW] == losers[ROW]
    kept = events.anti_join(losers, on).drop(ROW)
    lost = events.semi_join(losers, on).drop(ROW)
    rejected = reject(lost, "duplicate_message_id",
                      "another copy with this message_id was recorded earlier",
                      field_name="message_id").mutate(ref=lost.message_id)
    return Split(kept=kept, rejected=rejected)


def cross_source_losers(events: ir.Table, *, link_seconds: Mapping[str, int],
                        priority: Sequence[str], follow: bool = True) -> ir.Table:
    """Record linkage across systems: one row per losing ``_loser`` id with ``ref``, the id of
    the kept row it duplicates.

    Two rows are one touch when they have the same ``event`` (one of ``link_seconds``), were
    recorded by different systems, lie at most ``link_seconds[event]`` apart and share a
    normalised e-mail, a phone in E.164, a CRM contact id, or the page URL with the device or
    the user id (a server-side copy has no cookie, but knows the user). An e-mail or phone is
    compared as its SHA-256, so a copy that carries only the hash (an export, an ad platform's
    lead form) matches the copy with the plain value. Rows are ordered by
    the system listed first in ``priority``, then the earlier row, then the smaller id; a row
    loses when a linked row comes before it. Its ``ref`` is the first of the rows it lost to;
    when that row lost too (it is linked to an even better row that is not linked to this
    one), ``ref`` follows its ``ref``, up to :data:`REF_HOPS` times: a chain longer than that
    would need more systems than anyone records one touch in (:func:`follow_refs`; with
    ``follow=False`` the refs are the direct winners, for a caller that stores them first).
    """
    if not link_seconds:
        return events.select(_loser="message_id", ref="message_id").filter(ibis.literal(False))
    names = list(link_seconds)
    rank = {name: i for i, name in enumerate(priority)}
    linked = events.filter(events.event.isin(names))
    cand = linked.select(
        "message_id", "event", "recorded_by", "contact_id",
        # a plain e-mail and an export's SHA-256 of it name one person: compare hashes (the
        # linked events are few, so hashing their plain values is cheap)
        _email=ibis.coalesce(linked.email_sha256, sha256_hex(linked.email)),
        _phone=ibis.coalesce(linked.phone_sha256, sha256_hex(linked.phone)),
        _device_page=linked.anonymous_id + "|" + linked.page_url,
        _user_page=linked.user_id + "|" + linked.page_url,
        _ms=epoch_ms(linked.timestamp),
        _rank=linked.recorded_by.substitute(rank, else_=len(rank)).cast("int64"),
        _tol=linked.event.substitute({k: v * 1000 for k, v in link_seconds.items()},
                                    else_=ibis.null("int64")).cast("int64"),
    )
    pairs = []
    for key in ("_email", "_phone", "contact_id", "_device_page", "_user_page"):
        a = cand.filter(cand[key].notnull())
        b = a.view()
        beats = (b._rank < a._rank) | ((b._rank == a._rank) & (
            (b._ms < a._ms) | ((b._ms == a._ms) & (b.message_id < a.message_id))))
        joined = a.join(b, [a.event == b.event, a[key] == b[key],
                            a.recorded_by != b.recorded_by,
                            (a._ms - b._ms).abs() <= a._tol, beats])
        pairs.append(joined.select(_loser=a.message_id, _winner=b.message_id,
                                   _w_rank=b._rank, _w_ms=b._ms))
    beaten = ibis.union(*pairs)
    first = ibis.row_number().over(group_by="_loser",
                                   order_by=["_w_rank", "_w_ms", "_winner"])
    losers = beaten.mutate(_n=first).filter(ibis._._n == 0).select("_loser", ref="_winner")
    return follow_refs(losers) if follow else losers


def follow_refs(losers: ir.Table) -> ir.Table:
    """``losers`` (``_loser``, ``ref``) with each ``ref`` that lost too replaced by the row
    it lost to, :data:`REF_HOPS` times.

    Each hop reads ``losers`` twice, so an engine that inlines shared subqueries (Spark) plans
    :math:`2^{hops}` copies of its input: materialise the input first
    (:func:`cross_source_losers` with ``follow=False``), then follow.
    """
    for _ in range(REF_HOPS):
        on = losers.select(_via="_loser", _next="ref")
        hop = losers.left_join(on, losers.ref == on._via)
        losers = hop.select("_loser", ref=ibis.coalesce(hop._next, hop.ref))
    return losers


def link_cross_source(events: ir.Table, losers: ir.Table) -> Split:
    """Drop the cross-source duplicates ``losers`` (:func:`cross_source_losers`) to rejects,
    with ``ref`` = the kept record's id."""
    matched = events.inner_join(losers, events.message_id == losers._loser).drop("_loser")
    kept = events.anti_join(losers, events.message_id == losers._loser)
    rejected = reject(matched, "cross_source_duplicate",
                      "the same touch recorded by another system within the link tolerance "
                      "(same e-mail, phone, CRM contact, or page for the same device or "
                      "user); ref is the kept record")
    return Split(kept=kept, rejected=rejected.relocate("ref", after="field"))


def order_copies(events: ir.Table) -> ir.Table:
    """The later records of a repeated order: one row per losing ``_loser`` id with ``ref``,
    the id of the first record of that ``order_id``.

    An order is a touch with an ``order_id`` that is not a refund (revenue not negative): a
    refund names the order it refunds and must stay beside it. The first record (earliest
    ``timestamp``, then smallest ``message_id``) is the order; a second "checkout completed"
    for the same transaction, from a reloaded thank-you page or a second tag, would count the
    sale twice. Two copies with different revenue (Puffy's ORD-20250226-400 at 3,199 and
    1,524) are still one order: the first is kept and the conflict is visible in ``rejects``.
    """
    orders = events.filter(events.order_id.notnull()
                           & ~(events.revenue < 0).fill_null(False)).select(
        "message_id", "order_id", "timestamp")
    counts = orders.group_by("order_id").aggregate(_n=ibis._.count())
    repeated = counts.filter(counts._n > 1).select(_order="order_id")
    multi = orders.semi_join(repeated, orders.order_id == repeated._order)
    ranked = multi.mutate(_copy=ibis.row_number().over(group_by="order_id",
                                                       order_by=["timestamp", "message_id"]))
    first = ranked.filter(ranked._copy == 0).select(_order="order_id", ref="message_id")
    later = ranked.filter(ranked._copy > 0)
    return later.inner_join(first, later.order_id == first._order).select(
        _loser=later.message_id, ref=first.ref)


def dedupe_orders(events: ir.Table, losers: ir.Table) -> Split:
    """Drop the later records of repeated orders (:func:`order_copies`) to rejects as
    ``duplicate_order_id``, ``ref`` = the order's first record."""
    matched = events.inner_join(losers, events.message_id == losers._loser).drop("_loser")
    kept = events.anti_join(losers, events.message_id == losers._loser)
    rejected = reject(matched, "duplicate_order_id",
                      "an earlier record has this order_id (the order counts once); ref is "
                      "the kept record", field_name="order_id")
    return Split(kept=kept, rejected=rejected.relocate("ref", after="field"))


def zero_revenue_orders(events: ir.Table) -> ir.Table:
    """Audit rows for orders (an ``order_id``) whose revenue is 0 or missing: such an order
    counts as a conversion only under a definition that does not ask for revenue (the default
    ``purchase`` asks for revenue > 0), so it is never dropped silently."""
    zero = events.filter(events.order_id.notnull()
                         & (events.revenue.isnull() | (events.revenue == 0)))
    return zero.select(
        field=ibis.literal("revenue"),
        reason_code=ibis.literal("zero_revenue_order"),
        reason=ibis.literal("an order (order_id) with revenue 0 or none: not a purchase under "
                            "a conversion that needs revenue > 0"),
        message_id=zero.message_id,
        old_value=zero.order_id,
        new_value=zero.revenue.cast("string"),
        row_count=ibis.literal(1, type="int64"),
    )
