r"""Decision KPIs over the CRM ``deals`` table: open pipeline and won revenue.

``deals`` holds one row per deal *snapshot* (a later export with a new stage adds a row), so
both KPIs first keep each deal's latest snapshot: the one with the latest ``updated_at``
(then ``closed_at``, then the row hash, so the choice is the same on every engine). Then

- ``pipeline`` = sum(amount) of the deals whose status is neither ``won`` nor ``lost``, by
  the period of the deal's creation (``created_at``, else its first stage date: lead, MQL,
  SQL, opportunity);
- ``revenue_won`` = sum(amount) of the deals whose status is ``won``, by the period of the
  close (``closed_at``, else ``updated_at``).

Status is compared trimmed and in lower case. Amounts are summed as the CRM exports them, in
their own currency (as spend is). Deals without an amount count as deals but add nothing.
The status is the latest export's, not the status at the end of each period: a deal created
in March and won in May is in May's won revenue and in no period's open pipeline.

By channel, source…: the first touch (acquisition channel) of the deal's first contact found
in the identity graph (its first CRM contact id, then its first contact e-mail); deals whose
contacts match no one are Unassigned. The credits under an attribution model are not used:
deals are not conversions of the journeys (a purchase or lead is), so no model has split
them over touches.

>>> from touchline.metrics.kpis import KPIS
>>> KPIS["revenue_won"].values
('won_deals', 'revenue_won')
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import ibis
import ibis.expr.types as ir

from touchline.metrics.kpis import (
    DOC_SECTIONS,
    KPIS,
    PERSON_DIMS,
    Query,
    _aggregate,
    _keyed,
    family,
    person_levels,
    register_in,
    require,
    with_first_touch,
)

if TYPE_CHECKING:
    from ibis.backends import BaseBackend

#: statuses that close a deal (compared trimmed, lower case)
WON, LOST = "won", "lost"


def latest_deals(con: BaseBackend) -> ir.Table:
    """Each deal's latest snapshot (the columns the KPIs read), with ``_status`` (trimmed,
    lower case)."""
    d = con.table("deals")
    # only the columns read: every step after repeats each column (less to compile)
    d = d.select("deal_id", "status", "amount", "created_at", "lead_at", "mql_at", "sql_at",
                 "opportunity_at", "closed_at", "updated_at", "contact_ids", "contact_emails",
                 "row_hash")
    rank = ibis.row_number().over(group_by="deal_id", order_by=[
        ibis.desc("updated_at"), ibis.desc("closed_at"), ibis.desc("row_hash")])
    d = d.mutate(_rank=rank)
    d = d.filter(d._rank == 0).drop("_rank")
    return d.mutate(_status=d.status.strip().lower())


def _deals(con: BaseBackend, q: Query, kpi: str, *, won: bool, open_: bool) -> ir.Table:
    """The latest snapshots kept by ``won`` (status won) and ``open_`` (neither won nor
    lost), with ``_won``, keyed by the period of the creation (open deals) or of the close
    (won ones) and, when ``by`` asks for them, the first contact's acquisition breakdowns
    (only then are the prepared tables read)."""
    d = latest_deals(con)
    status = d._status.fill_null("")
    is_won, is_open = status == WON, ~status.isin([WON, LOST])
    d = d.filter(is_won | is_open if won and open_ else is_won if won else is_open)
    d = d.mutate(_won=is_won)
    closed = d.closed_at.coalesce(d.updated_at)
    created = d.created_at.coalesce(d.lead_at, d.mql_at, d.sql_at, d.opportunity_at)
    at = ibis.ifelse(d._won, closed, created) if won and open_ else (
        closed if won else created)
    d = d.mutate(_at=at)
    if not q.by:
        return _keyed(d, q, at=d._at, dims={})
    require(con, KPIS[kpi], ["sessions", "identities"])
    first_contact = d.contact_ids.split(";")[0].strip()
    first_email = d.contact_emails.split(";")[0].strip().lower()
    t = with_first_touch(con, d, "deal_id", ["contact:" + first_contact,
                                             "email:" + first_email], q)
    return _keyed(t, q, at=t._at, dims={dim: t[dim] for dim in person_levels(t)})


@family("deals")
def _deal_sums(con: BaseBackend, q: Query, needs: frozenset[str]) -> ir.Table:
    """The latest snapshots of the deals in one pass: with ``open``, ``_open_deals`` and
    ``_pipeline`` (the open ones, by creation); with ``won``, ``_won_deals`` and
    ``_revenue_won`` (the won ones, by close). A key with deals of one kind only counts
    zeros for the other (alone, each KPI has rows for its own kind only)."""
    won, open_ = "won" in needs, "open" in needs
    kpi = "pipeline" if open_ else "revenue_won"
    t = _deals(con, q, kpi, won=won, open_=open_)
    sums: dict[str, ir.Scalar] = {}
    for name, wanted, keep in (("open", open_, ~t._won), ("won", won, t._won)):
        if not wanted:
            continue
        where = keep if won and open_ else None
        sums |= {f"_{name}_deals": t.deal_id.nunique(where=where).cast("int64"),
                 f"_{name}_amount": t.amount.sum(where=where).fill_null(0.0)}
    return _aggregate(t, q, **sums)


@register_in("deals", "pipeline", needs=["open"], stage="decision", unit="deal currency",
             formula="sum(amount) of deals whose latest status is neither won nor lost, by "
             "creation period", tables=["deals"], dimensions=PERSON_DIMS,
             values=("open_deals", "pipeline"))
def pipeline(a: ir.Table) -> dict[str, ir.Value]:
    """Open pipeline value: the amounts of the deals still open (latest snapshot), by the
    period they were created in and their first contact's acquisition channel, source…
    and device (the first session's)."""
    return {"open_deals": a._open_deals, "pipeline": a._open_amount}


@register_in("deals", "revenue_won", needs=["won"], stage="decision", unit="deal currency",
             formula="sum(amount) of deals whose latest status is won, by close period",
             tables=["deals"], dimensions=PERSON_DIMS, values=("won_deals", "revenue_won"))
def revenue_won(a: ir.Table) -> dict[str, ir.Value]:
    """Won revenue: the amounts of the deals won (latest snapshot), by the period they
    closed in and their first contact's acquisition channel, source… and device (the
    first session's)."""
    return {"won_deals": a._won_deals, "revenue_won": a._won_amount}


DOC_SECTIONS["deals"] = """
## Deals: `pipeline`, `revenue_won`

`touchline/metrics/deals.py`, over the CRM `deals` table (`touchline ingest FILE --kind
deals`). Each deal counts by its latest snapshot (latest `updated_at`, then `closed_at`).
`pipeline` sums the amounts of the deals whose status is neither `won` nor `lost`, by the
period of creation (`created_at`, else the first stage date); `revenue_won` sums the amounts
of the won deals by the period of the close (`closed_at`, else `updated_at`). Amounts are
summed as exported, in their own currency. The status is the latest export's: a deal won in
May is in May's won revenue and in no period's pipeline. By channel, source… is the
acquisition (first-touch) channel of the deal's first contact matched in the identity graph
(first CRM contact id, then first contact e-mail), Unassigned when none matches; deals are
not journey conversions, so no attribution model's credits split them.
"""
