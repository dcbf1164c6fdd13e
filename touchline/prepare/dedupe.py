"""One touch seen twice, or by two systems, becomes one row; the loser points at the winner.

Exact duplicates share a ``message_id`` (a retried batch, a late copy): the earliest copy wins.
Cross-source duplicates are the same form fill, chat, call or deal seen by the tag, the CRM and
the chat tool: same event name, different ``recorded_by``, the same normalised e-mail or phone
(or the same page on the same device), within a per-event tolerance.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import ibis
import ibis.expr.types as ir

from touchline.prepare.base import Split, reject
from touchline.prepare.clean import epoch_ms

log = logging.getLogger(__name__)


def dedupe_exact(events: ir.Table) -> Split:
    """Keep one row per ``message_id``: the earliest ``timestamp``, then earliest receipt.

    Done as a hash aggregate (count per id) so that only the ids seen more than once, a few
    per cent, enter the window that ranks copies; singletons never get sorted.
    """
    counts = events.group_by("message_id").aggregate(_copies=ibis._.count())
    repeated = counts.filter(counts._copies > 1).select(_dup_id="message_id")
    multi = events.semi_join(repeated, events.message_id == repeated._dup_id)
    single = events.anti_join(repeated, events.message_id == repeated._dup_id)
    # a total order in practice (copies that tie on all of these are identical touches)
    order = [multi[c] for c in ("timestamp", "received_at", "recorded_by", "page_url", "url",
                                "click_id", "referrer_host", "user_agent") if c in multi.columns]
    ranked = multi.mutate(_copy=ibis.row_number().over(group_by="message_id", order_by=order))
    kept = single.union(ranked.filter(ranked._copy == 0).drop("_copy"))
    losers = ranked.filter(ranked._copy > 0).drop("_copy")
    rejected = reject(losers, "duplicate_message_id",
                      "another copy with this message_id was recorded earlier",
                      field_name="message_id").mutate(ref=losers.message_id)
    return Split(kept=kept, rejected=rejected)


def link_cross_source(events: ir.Table, *, link_seconds: Mapping[str, int],
                      priority: Sequence[str]) -> Split:
    """Record linkage across systems: the loser goes to rejects with ``ref`` = winner's id.

    Two rows are one touch when they have the same ``event`` (one of ``link_seconds``), were
    recorded by different systems, lie at most ``link_seconds[event]`` apart and share a
    normalised e-mail, a phone in E.164, or (device, page URL). The winner is the system listed
    first in ``priority`` (then the earlier row, then the smaller id); a loser's ``ref`` is the
    smallest id among the rows that beat it.
    """
    if not link_seconds:
        return Split(kept=events, rejected=reject(events.filter(ibis.literal(False)),
                                                  "cross_source_duplicate", ""))
    names = list(link_seconds)
    rank = {name: i for i, name in enumerate(priority)}
    cand = events.filter(events.event.isin(names)).select(
        "message_id", "event", "recorded_by", "email", "phone",
        _device_page=events.anonymous_id + "|" + events.page_url,
        _ms=epoch_ms(events.timestamp),
        _rank=events.recorded_by.substitute(rank, else_=len(rank)).cast("int64"),
        _tol=events.event.substitute({k: v * 1000 for k, v in link_seconds.items()},
                                    else_=ibis.null("int64")).cast("int64"),
    )
    pairs = []
    for key in ("email", "phone", "_device_page"):
        a = cand.filter(cand[key].notnull())
        b = a.view()
        beats = (b._rank < a._rank) | ((b._rank == a._rank) & (
            (b._ms < a._ms) | ((b._ms == a._ms) & (b.message_id < a.message_id))))
        joined = a.join(b, [a.event == b.event, a[key] == b[key],
                            a.recorded_by != b.recorded_by,
                            (a._ms - b._ms).abs() <= a._tol, beats])
        pairs.append(joined.select(_loser=a.message_id, _winner=b.message_id))
    losers = ibis.union(*pairs).group_by("_loser").aggregate(ref=ibis._._winner.min())
    matched = events.inner_join(losers, events.message_id == losers._loser).drop("_loser")
    kept = events.anti_join(losers, events.message_id == losers._loser)
    rejected = reject(matched, "cross_source_duplicate",
                      "the same touch recorded by another system within the link tolerance "
                      "(same e-mail, phone or device page); ref is the kept record")
    return Split(kept=kept, rejected=rejected.relocate("ref", after="field"))
