"""Conversions as data: which touches and deals are conversions, of whom, worth what.

Each conversion type (:class:`~touchline.config.ConversionSpec`, from ``touchline.toml``) is a
condition on prepared touches (``touchpoints``) or on CRM ``deals``. :func:`find_conversions`
evaluates one type in the engine and returns one row per conversion:

=================  =====================================================================
``conversion``     the type's name
``unit``           ``person`` or ``account``: whose journey it ends
``unit_id``        the person id (``p_…``) or the prepared account id (``crm:…``)
``converted_at``   when (a touch's time; a deal's ``closed_at`` or stage time)
``value``          in the reporting currency
``ref``            the touch's ``touchpoint_id`` or the deal's ``deal_id``
=================  =====================================================================

Deals are keyed by the CRM's ``deal_id``: an export holds one row per deal snapshot, so each
deal converts once, at its earliest time in the condition, worth its largest amount (after
currency conversion with the rates prepare uses). A deal's company is its unit when it is a
prepared account (``crm:<account_id>``); a deal with no known company (a B2C sale closed in the
CRM) belongs to the person its contact e-mails or contact ids name. A deal that names nobody
touchline knows cannot end a journey: :func:`unmatched_deals` counts them for the run's report.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Mapping, Sequence

import ibis
import ibis.expr.types as ir
import pandas as pd

from touchline.config import ConversionSpec, StageSpec
from touchline.engine import json_value
from touchline.prepare.standardise import ContactKey

#: the columns of a conversions table, in order
CONVERSION_SCHEMA = {"conversion": "string", "unit": "string", "unit_id": "string",
                     "converted_at": "timestamp", "value": "float64", "ref": "string"}
#: deal conditions other than ``won``/``lost`` and a stage name: the milestone column they read
DEAL_MILESTONES = {"created": "created_at", "lead": "lead_at", "mql": "mql_at", "sql": "sql_at",
                   "opportunity": "opportunity_at"}


def deal_outcome(status: ir.StringValue, statuses: Mapping[str, Sequence[str]]) -> ir.StringValue:
    """``won``, ``lost`` or ``open`` from a CRM's status text, whatever its case or spacing.

    CRMs spell a won deal ``won``, ``Won``, ``Closed Won`` (Salesforce) or ``closedwon``
    (HubSpot); ``statuses`` (``settings.deal_statuses``) lists, per outcome, the texts that
    mean it, compared trimmed and lower-cased.
    """
    text = status.strip().lower()
    cases = [(text.isin([s.strip().lower() for s in texts]), outcome)
             for outcome, texts in statuses.items()]
    return ibis.cases(*cases, else_="open")


def touch_condition(touches: ir.Table, spec: ConversionSpec | StageSpec,
                    touch_events: Mapping[str, Sequence[str]], *,
                    call_seconds: int | None = None) -> ir.BooleanValue:
    """Whether each touch meets ``spec``'s condition (a conversion's or a stage's): every given
    part holds (never null). A call touch counts when its ``call_seconds`` reach the spec's
    ``call_seconds``, else the ``call_seconds`` given here (the setting), else always.

    ``properties`` are not checked here (they are not on touches):
    :func:`touch_conversions` semi-joins the events that hold them.
    """
    parts: list[ir.BooleanValue] = []
    if spec.events:
        parts.append(touches.event.isin(spec.events))
    if spec.touches:
        least = getattr(spec, "call_seconds", None)
        least = call_seconds if least is None else least

        def kind_condition(kind: str) -> ir.BooleanValue:
            if kind == "identify_email":
                return (touches.type == "identify") & touches.email.notnull()
            hit = touches.event.isin(list(touch_events[kind]))
            if kind == "call" and least:
                hit &= (touches.call_seconds >= least).fill_null(False)
            return hit

        parts.append(functools.reduce(operator.or_, map(kind_condition, spec.touches)))
    if spec.page is not None:
        parts.append(touches.page_url.re_search(spec.page))
    if getattr(spec, "revenue", False):
        parts.append(touches.revenue > 0)
    return functools.reduce(operator.and_, (p.fill_null(False) for p in parts))


def _constant_value(spec: ConversionSpec) -> float:
    return 0.0 if spec.value in ("none", "revenue", "deal_amount") else float(spec.value)


def property_matches(events: ir.Table, wanted: Mapping[str, object]) -> ir.Table:
    """``message_id`` of the events whose ``properties`` JSON holds every ``wanted`` value,
    compared as text (``True`` as ``true``, ``5`` as ``5``)."""
    def text(value: object) -> str:
        return str(value).lower() if isinstance(value, bool) else str(value)

    props = events.properties.cast("string")
    hit = functools.reduce(operator.and_, (
        (json_value(props, key) == text(value)).fill_null(False)
        for key, value in wanted.items()))
    return events.filter(hit).select("message_id").distinct()


def touch_conversions(touchpoints: ir.Table, spec: ConversionSpec,
                      touch_events: Mapping[str, Sequence[str]], *,
                      events: ir.Table | None = None, call_seconds: int | None = None
                      ) -> ir.Table:
    """The touches that are conversions of ``spec`` (a condition on touches). ``events`` (the
    raw events table) is read only when ``spec`` filters on ``properties``, which prepare does
    not copy onto touches: a touch keeps its event's ``message_id``."""
    unit_id = touchpoints.person_id if spec.unit == "person" else touchpoints.account_id
    condition = touch_condition(touchpoints, spec, touch_events,
                                call_seconds=call_seconds) & unit_id.notnull()
    if spec.value == "revenue":  # a negative amount is a refund, never a conversion
        condition &= ~(touchpoints.revenue < 0).fill_null(False)
    hits = touchpoints.filter(condition)
    if spec.properties:
        if events is None:
            raise ValueError(f"conversion {spec.name!r} filters on properties: pass events")
        matching = property_matches(events, spec.properties)
        hits = hits.semi_join(matching, hits.touchpoint_id == matching.message_id)
    value = (hits.revenue.fill_null(0.0) if spec.value == "revenue"
             else ibis.literal(_constant_value(spec)))
    return hits.select(
        conversion=ibis.literal(spec.name), unit=ibis.literal(spec.unit),
        unit_id=(hits.person_id if spec.unit == "person" else hits.account_id),
        converted_at=hits.occurred_at, value=value.cast("float64"), ref=hits.touchpoint_id)


def apply_refunds(conversions: ir.Table, touchpoints: ir.Table, unit: str) -> ir.Table:
    """``conversions`` with refunds subtracted from their value.

    A refund is a touch with negative revenue. When it names an order (``order_id``) that a
    touch placed, it adjusts that order's conversion, and nothing when that order is not a
    conversion (a second purchase under ``count = "first"``). Otherwise it adjusts the unit's
    latest conversion at or before it (none earlier: nothing changes). A value never goes
    below 0. Why not a conversion of its own: counting it would add a journey, and its negative
    value has no meaning for a channel's credit.
    """
    tp = touchpoints
    unit_id = tp.person_id if unit == "person" else tp.account_id
    refunds = tp.filter((tp.revenue < 0) & unit_id.notnull()).select(
        _unit=unit_id, _at=tp.occurred_at, _refund=tp.touchpoint_id, _amount=tp.revenue,
        _order=tp.order_id)
    orders = tp.filter(tp.order_id.notnull() & ~(tp.revenue < 0).fill_null(False)).select(
        _placed_by=tp.touchpoint_id, _placed=tp.order_id)
    c = conversions.select("unit_id", "converted_at", "ref")
    c = c.left_join(orders, c.ref == orders._placed_by).drop("_placed_by")
    named = refunds.semi_join(orders, refunds._order == orders._placed)
    by_order = named.inner_join(c, named._order == c._placed).select("_refund", "ref", "_amount")
    rest = refunds.anti_join(orders, refunds._order == orders._placed)
    j = rest.inner_join(c, [rest._unit == c.unit_id, c.converted_at <= rest._at])
    j = j.mutate(_r=ibis.row_number().over(group_by="_refund",
                                           order_by=[ibis.desc("converted_at"), "ref"]))
    latest = j.filter(j._r == 0).select("_refund", "ref", "_amount")
    both = ibis.union(by_order, latest, distinct=False)
    adjust = both.group_by(_ref="ref").aggregate(_adjust=both._amount.sum())
    out = conversions.left_join(adjust, conversions.ref == adjust._ref)
    adjusted = ibis.greatest(out.value + out._adjust.fill_null(0.0), 0.0)
    return out.select(*(adjusted.name(c) if c == "value" else out[c]
                        for c in conversions.columns))


def deal_events(deals: ir.Table, deal: str, *, statuses: Mapping[str, Sequence[str]],
                rates: Mapping[str, float]) -> ir.Table:
    """One row per deal meeting ``spec.deal``: ``deal_id``, ``at``, ``amount`` (reporting
    currency; an unknown currency gives a null amount, as prepare does for revenue), and the
    deal's ``account_id``, ``contact_emails``, ``contact_ids``.

    ``deal`` is ``won`` or ``lost`` (the normalised status, at ``closed_at``), a milestone
    (``created``, ``lead``, ``mql``, ``sql``, ``opportunity``: that column's time) or a stage
    name (compared trimmed, lower case; at the snapshot's ``updated_at``, else ``created_at``).
    """
    wanted = deal.strip().lower()
    if wanted in ("won", "lost"):
        hit = deal_outcome(deals.status, statuses) == wanted
        at = deals.closed_at
    elif wanted in DEAL_MILESTONES:
        at = deals[DEAL_MILESTONES[wanted]]
        hit = at.notnull()
    else:
        hit = deals.stage.strip().lower() == wanted
        at = deals.updated_at.coalesce(deals.created_at)
    code = deals.currency.strip().upper()
    rate = code.substitute({k: ibis.literal(v, type="float64") for k, v in rates.items()},
                           else_=ibis.null("float64"))
    rate = ibis.ifelse(code.isnull() | (code == ""), 1.0, rate)
    rows = deals.filter(hit.fill_null(False) & at.notnull() & deals.deal_id.notnull())
    rows = rows.mutate(_at=at, _amount=rows.amount * rate)
    return rows.group_by("deal_id").aggregate(
        at=rows._at.min(), amount=rows._amount.max(), account_id=rows.account_id.max(),
        contact_emails=rows.contact_emails.max(), contact_ids=rows.contact_ids.max())


def deal_people(deal_rows: ir.Table, identities: ir.Table, *,
                contact_key: ContactKey | None = None) -> ir.Table:
    """``deal_id → person_id``: the least person named by the deal's contact e-mails or
    contact ids (identity graph nodes ``email:<address>``, ``contact:<id>``); ``contact_key``:
    how the graph keeps e-mails (:func:`~touchline.prepare.standardise.contact_key`)."""
    named = []
    for column, kind, lower in (("contact_emails", "email", True),
                                ("contact_ids", "contact", False)):
        listed = deal_rows.filter(deal_rows[column].notnull()).select(
            "deal_id", _value=deal_rows[column].split(";").unnest())
        value = listed._value.strip()
        if lower:
            value = value.lower() if contact_key is None else contact_key(value.lower())
        named.append(listed.select("deal_id", identifier=kind + ":" + value))
    every = ibis.union(*named, distinct=True)
    nodes = identities.select("identifier", "person_id")
    found = every.inner_join(nodes, "identifier")
    return found.group_by("deal_id").aggregate(person_id=found.person_id.min())


def deal_conversions(deals: ir.Table, identities: ir.Table, accounts: ir.Table,
                     spec: ConversionSpec, *, statuses: Mapping[str, Sequence[str]],
                     rates: Mapping[str, float],
                     contact_key: ContactKey | None = None) -> ir.Table:
    """The deals that are conversions of ``spec``, each given to its unit (see the module)."""
    assert spec.deal is not None
    rows = deal_events(deals, spec.deal, statuses=statuses, rates=rates)
    people = deal_people(rows, identities, contact_key=contact_key)
    known = accounts.select(_account=accounts.account_id)
    rows = rows.left_join(people, "deal_id").select(rows, people.person_id)
    rows = rows.left_join(known, ("crm:" + rows.account_id) == known._account)
    use_account = ibis.literal(spec.unit == "account") & rows._account.notnull()
    unit = ibis.ifelse(use_account, "account", "person")
    unit_id = ibis.ifelse(use_account, rows._account, rows.person_id)
    value = (rows.amount.fill_null(0.0) if spec.value == "deal_amount"
             else ibis.literal(_constant_value(spec)))
    out = rows.select(conversion=ibis.literal(spec.name), unit=unit, unit_id=unit_id,
                      converted_at=rows.at, value=value.cast("float64"), ref=rows.deal_id)
    return out.filter(out.unit_id.notnull())


def unmatched_deals(deals: ir.Table, identities: ir.Table, accounts: ir.Table,
                    spec: ConversionSpec, *, statuses: Mapping[str, Sequence[str]],
                    rates: Mapping[str, float],
                    contact_key: ContactKey | None = None) -> ir.Table:
    """The deals of ``spec`` that name no prepared account and no known person (rows of
    :func:`deal_events`)."""
    assert spec.deal is not None
    rows = deal_events(deals, spec.deal, statuses=statuses, rates=rates)
    matched = deal_conversions(deals, identities, accounts, spec, statuses=statuses,
                               rates=rates, contact_key=contact_key).select(deal_id="ref")
    return rows.anti_join(matched, "deal_id")


def find_conversions(con: object, spec: ConversionSpec, *,
                     touch_events: Mapping[str, Sequence[str]],
                     statuses: Mapping[str, Sequence[str]], rates: Mapping[str, float],
                     call_seconds: int | None = None,
                     touchpoints: ir.Table | None = None,
                     contact_key: ContactKey | None = None) -> ir.Table:
    """Every conversion of ``spec`` in a prepared warehouse ``con`` (:data:`CONVERSION_SCHEMA`);
    ``call_seconds``: the talk time a call needs when the spec does not say; ``touchpoints``:
    the warehouse's, or :func:`conversion_candidates` of them."""
    if spec.deal is None:
        if touchpoints is None:
            touchpoints = con.table("touchpoints")  # type: ignore[attr-defined]
        events = con.table("events") if spec.properties else None  # type: ignore[attr-defined]
        found = touch_conversions(touchpoints, spec, touch_events, events=events,
                                  call_seconds=call_seconds)
        if spec.count == "first":  # a refund adjusts the purchase that counts, not a later one
            ranked = found.mutate(_r=ibis.row_number().over(
                group_by="unit_id", order_by=["converted_at", "ref"]))
            found = ranked.filter(ranked._r == 0).drop("_r")
        if spec.value == "revenue":
            found = apply_refunds(found, touchpoints, spec.unit)
    else:
        tables = {name: con.table(name)  # type: ignore[attr-defined]
                  for name in ("deals", "identities", "accounts")}
        found = deal_conversions(tables["deals"], tables["identities"], tables["accounts"], spec,
                                 statuses=statuses, rates=rates, contact_key=contact_key)
    return found.select(*(found[c].cast(t).name(c) for c, t in CONVERSION_SCHEMA.items()))


def conversion_candidates(touchpoints: ir.Table, specs: Sequence[ConversionSpec],
                          touch_events: Mapping[str, Sequence[str]],
                          stages: Sequence[StageSpec] = ()) -> ir.Table:
    """The touchpoints any of ``specs`` (conditions on touches) may read: refunds and orders,
    and a superset of those meeting a condition of ``specs`` or the touch condition of one of
    ``stages`` (their readers apply their own conditions again). One pass over ``touchpoints``
    (a join of touches and sessions) for every conversion type and stage, instead of one each.

    The superset is one ``event IN (...)`` of every event name a condition names, or nonzero
    revenue, an order id, an identify with an e-mail, a page a condition matches: on 1M events
    DuckDB filtered the touches in 0.05 s this way and in 0.6 s by the conditions themselves
    (a dozen string comparisons per touch, each wrapped to make null false).
    """
    on_touches = [spec for spec in specs if spec.deal is None]
    tp = touchpoints
    events: set[str] = set()
    identify = False
    pages: list[str] = []
    for condition in (*on_touches, *stages):
        events.update(condition.events or ())
        for kind in condition.touches or ():
            if kind == "identify_email":
                identify = True
            else:
                events.update(touch_events[kind])
        if condition.page is not None:
            pages.append(condition.page)
    # a filter keeps a row whose condition is true: null and false alike are dropped, so the
    # parts need no fill_null (a condition that holds makes one of them true)
    wanted = (tp.revenue != 0) | tp.order_id.notnull()
    if events:
        wanted |= tp.event.isin(sorted(events))
    if identify:
        wanted |= (tp.type == "identify") & tp.email.notnull()
    for page in dict.fromkeys(pages):
        wanted |= tp.page_url.re_search(page)
    return tp.filter(wanted)


def conversion_summary(journeys: ir.Table, names: Sequence[str] = ()) -> pd.DataFrame:
    """Per conversion type of stored ``journeys``: conversions, value, open journeys, journeys
    the lookback shortened, conversions without a touch in their window; the types of
    ``names`` that have no journeys (nothing converted) as rows of zeros."""
    j = journeys
    summary = j.group_by("conversion").aggregate(
        conversions=j.converted.cast("int64").sum(),
        value=(j.value * j.converted.cast("float64")).sum(),
        open_journeys=(~j.converted).cast("int64").sum(),
        lookback_cut=(j.converted & j.lookback_cut).cast("int64").sum(),
        without_touches=(j.converted & (j.touches == 0)).cast("int64").sum(),
    )
    found = summary.order_by("conversion").to_pandas()
    missing = sorted(set(names) - set(found.conversion))
    if not missing:
        return found
    zeros = pd.DataFrame({c: [0] * len(missing) for c in found.columns}).assign(
        conversion=missing, value=0.0)
    both = pd.concat([found, zeros.astype(found.dtypes.to_dict())], ignore_index=True)
    return both.sort_values("conversion", ignore_index=True)


def main_conversion(summary: pd.DataFrame) -> str | None:
    """The conversion type a summary leads with: the one with the most value, else the most
    conversions (so a shop shows purchases and a B2B warehouse won deals)."""
    converting = summary[summary.conversions > 0]
    if converting.empty:
        return None
    ranked = converting.sort_values(["value", "conversions", "conversion"],
                                    ascending=[False, False, True])
    return str(ranked.conversion.iloc[0])


def choose_conversion(journeys: ir.Table, name: str | None, *, option: str = "--conversion"
                      ) -> str:
    """``name`` if the stored journeys have that conversion type (else a
    :class:`~touchline.errors.ConfigError` naming the nearest), or by default the
    :func:`main_conversion`; an error when there is nothing to choose."""

    from touchline.errors import ConfigError, did_you_mean

    summary = conversion_summary(journeys)
    known = sorted(summary.conversion)
    if name is not None:
        if name not in known:
            hint = did_you_mean(name, known)
            raise ConfigError(f"{option} {name!r}{hint}: the journeys have "
                              f"{', '.join(known) or 'no conversion types'}")
        return name
    chosen = main_conversion(summary)
    if chosen is None:
        raise ConfigError("no conversions in the stored journeys: check the conversion types "
                          "(docs/journeys.md) against your events and run `touchline run`")
    return chosen
