"""Which conversions go to a destination, with what click, contact and value: Ibis over the
stored tables (``journeys``, ``journey_steps``, ``touches``, ``identities``, ``credits``) and
the audit log (``exported_conversions``), the same on DuckDB and Spark.

A conversion is ``<conversion type>:<ref>`` (``ref``: the touch or deal that converted), an id
that survives a rebuild of the journeys. Its click is the latest click of the destination's
parameters (Google: gclid, gbraid, wbraid; Meta: fbclid; Microsoft: msclkid) among the touches
of the journey's sessions, at or before the conversion. Its value is the journey's value (the
CRM amount or the event's revenue, refunds subtracted; reporting currency), or under a model
the credit the model gives the journey's touches in sessions with such a click:

.. math:: v_{platform} = \\sum_{t \\in T,\\ s(t) \\ni click} credit_{model}(t) \\cdot v

(linear credit over John's four sessions, one of them a Google click: 1800 / 4 = 450).

New and adjusted: a conversion never sent to the destination is new; one sent before is
restated when its value moved by more than half a cent, retracted when its value fell to 0 or
it is no longer a conversion (its journey gone), and left alone once retracted.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import ibis
import ibis.expr.types as ir
from ibis.backends import BaseBackend

#: a value change smaller than this (reporting currency) is no restatement
VALUE_TOLERANCE = 0.005
_KIND_PREFIX = r"^[^:]+:(.*)$"


def click_sessions(con: BaseBackend, params: Sequence[str]) -> ir.Table:
    """One row per touch that carries a click id of ``params``: ``_session`` (its session id),
    ``click_id``, ``click_id_param``, ``click_at``."""
    touches = con.table("touches")
    clicked = touches.filter(touches.click_id.notnull()
                             & touches.click_id_param.isin(list(params)))
    return clicked.select(
        _session=clicked.device_id + "#" + clicked.session_index.cast("string"),
        click_id=clicked.click_id, click_id_param=clicked.click_id_param,
        click_at=clicked.timestamp)


def journey_clicks(con: BaseBackend, journeys: ir.Table, params: Sequence[str]) -> ir.Table:
    """``journey_id`` → the latest click of ``params`` in the journey at or before its
    conversion: ``click_id``, ``click_id_param``, ``click_at`` (ties: the greater click id)."""
    steps = con.table("journey_steps").select("journey_id", "session_id")
    clicks = click_sessions(con, params)
    heads = journeys.select(_journey="journey_id", _converted_at="converted_at")
    found = steps.inner_join(heads, steps.journey_id == heads._journey).inner_join(
        clicks, steps.session_id == clicks._session)
    found = found.filter(found.click_at <= found._converted_at)
    rank = ibis.row_number().over(group_by=found.journey_id,
                                  order_by=[ibis.desc(found.click_at), ibis.desc(found.click_id)])
    ranked = found.mutate(_rank=rank)
    return ranked.filter(ranked._rank == 0).select("journey_id", "click_id", "click_id_param",
                                                   "click_at").view()


def person_contacts(con: BaseBackend) -> ir.Table:
    """``_person`` → its least ``email``, ``phone`` (E.164), ``email_sha256``, ``phone_sha256``
    and ``contact`` (a CRM's own contact id) from the identity graph (the prepared, normalised
    identifiers)."""
    ids = con.table("identities")
    value = ids.identifier.re_extract(_KIND_PREFIX, 1)
    return ids.group_by(_person=ids.person_id).aggregate(**{
        kind: value.min(where=ids.kind == kind)
        for kind in ("email", "phone", "email_sha256", "phone_sha256", "contact")})


def platform_value(con: BaseBackend, journeys: ir.Table, params: Sequence[str],
                   model: str) -> ir.Table:
    """``journey_id`` → ``_credited``: the value ``model`` credits to the journey's touches in
    sessions with a click of ``params`` (see the module)."""
    credits = con.table("credits")
    credits = credits.filter(credits.model == model)
    steps = con.table("journey_steps").select(_journey="journey_id", _position="position",
                                              _step_session="session_id")
    sessions = click_sessions(con, params).select("_session").distinct()
    heads = journeys.select(_head="journey_id")
    joined = credits.inner_join(heads, credits.journey_id == heads._head).inner_join(
        steps, [credits.journey_id == steps._journey, credits.position == steps._position])
    clicked = joined.inner_join(sessions, joined._step_session == sessions._session)
    return clicked.group_by("journey_id").aggregate(_credited=clicked.value.sum()).view()


def conversion_rows(con: BaseBackend, *, conversion: str, params: Sequence[str],
                    require_click: bool, model: str | None = None) -> ir.Table:
    """Every conversion of type ``conversion``, one row each: ``conversion_id``,
    ``journey_id``, ``converted_at``, ``value``, ``order_id`` (the converting touch's order
    id, else its ref), ``click_id``, ``click_id_param``, ``click_at``, ``email``, ``phone``,
    ``email_sha256``, ``phone_sha256``, ``external_id`` (the person id).

    ``require_click``: only conversions whose journey has a click of ``params`` (a click
    upload); else every conversion, with its click when there is one. ``model``: the value is
    the credited value (see the module), else the journey's.
    """
    journeys = con.table("journeys")
    journeys = journeys.filter(journeys.converted.fill_null(False)
                               & (journeys.conversion == conversion))
    clicks = journey_clicks(con, journeys, params).rename(_click_journey="journey_id")
    touches = con.table("touches").select(_message="message_id", _order="order_id")
    rows = journeys.left_join(touches, journeys.ref == touches._message)
    rows = rows.select(
        "journey_id", "converted_at", "unit", "unit_id", "ref", "value",
        order_id=ibis.coalesce(rows._order, rows.ref))
    join = rows.inner_join if require_click else rows.left_join
    rows = join(clicks, rows.journey_id == clicks._click_journey).drop("_click_journey")
    if model is not None:
        credited = platform_value(con, journeys, params, model).rename(
            _credit_journey="journey_id")
        rows = rows.left_join(credited, rows.journey_id == credited._credit_journey)
        rows = rows.mutate(value=rows._credited.fill_null(0.0)).drop("_credited",
                                                                     "_credit_journey")
    contacts = person_contacts(con)
    rows = rows.left_join(contacts, (rows.unit == "person") & (rows.unit_id == contacts._person))
    return rows.select(
        conversion_id=ibis.literal(f"{conversion}:") + rows.ref,
        journey_id=rows.journey_id, converted_at=rows.converted_at,
        value=rows.value.cast("float64"), order_id=rows.order_id,
        click_id=rows.click_id, click_id_param=rows.click_id_param, click_at=rows.click_at,
        email=rows.email, phone=rows.phone, email_sha256=rows.email_sha256,
        phone_sha256=rows.phone_sha256,
        external_id=ibis.ifelse(rows.unit == "person", rows.unit_id, ibis.null("string")),
    ).view()  # a table of its own: later joins must not extend this join chain


def sent_state(con: BaseBackend, destination: str, conversion: str) -> ir.Table:
    """What ``destination`` last heard of each conversion of type ``conversion``: the latest
    ``exported_conversions`` row of each ``conversion_id`` (``last_kind``, ``last_value``) with
    the identifiers it was first sent with (an adjustment must repeat them)."""
    sent = con.table("exported_conversions")
    sent = sent.filter((sent.destination == destination) & (sent.conversion == conversion))
    # one export's clock may equal the next's: then the later kind (a retraction) wins
    later_kind = ibis.cases((sent.kind == "retraction", 2), (sent.kind == "restatement", 1),
                            else_=0)
    order = [ibis.desc(sent.exported_at), ibis.desc(later_kind), ibis.desc(sent.export_id)]
    ranked = sent.mutate(_rank=ibis.row_number().over(group_by=sent.conversion_id,
                                                      order_by=order))
    return ranked.filter(ranked._rank == 0).select(
        "conversion_id", "journey_id", "order_id", "click_id", "click_id_param", "converted_at",
        "currency", last_kind="kind", last_value="value")


def new_conversions(current: ir.Table, sent: ir.Table, since: datetime | None) -> ir.Table:
    """The conversions of ``current`` never sent (converted at or after ``since``)."""
    if since is not None:
        current = current.filter(current.converted_at >= since)
    ids = sent.select(_sent_id="conversion_id")
    return current.anti_join(ids, current.conversion_id == ids._sent_id)


def adjustments(current: ir.Table, sent: ir.Table) -> ir.Table:
    """Restatements and retractions of conversions sent before (see the module): the sent
    identifiers and time, the current ``value`` (0 for a retraction) and ``kind``."""
    live = sent.filter(sent.last_kind != "retraction")
    now = current.select(_id="conversion_id", _value="value")
    joined = live.left_join(now, live.conversion_id == now._id)
    gone = joined._id.isnull() | (joined._value.fill_null(0.0) <= 0)
    moved = (joined._value - joined.last_value).abs() > VALUE_TOLERANCE
    kind = ibis.cases((gone, "retraction"), (moved, "restatement"),
                      else_=ibis.null("string"))
    out = joined.mutate(kind=kind, value=ibis.ifelse(gone, 0.0, joined._value))
    return out.filter(out.kind.notnull()).select(
        "conversion_id", "journey_id", "order_id", "click_id", "click_id_param", "converted_at",
        "currency", "value", "kind")


#: the consent state that allows an upload; t.js sends ``cookieless`` for a refusal
CONSENT_GRANTED = "granted"


def refused_consent(con: BaseBackend, *, require: bool = False) -> ir.Table:
    """``person_id`` of the persons an ad platform must not hear of: those whose latest event
    stating a consent (``events.consent``, from t.js) does not say ``granted``, and with
    ``require``, also those with no stated consent at all (server-side, CRM and call-only
    people). Events reach persons through their device (``identities``: ``anon:<id>``).
    Ties at one time: the refusal wins."""
    ident = con.table("identities").select("identifier", "person_id")
    events = con.table("events") if "events" in con.list_tables() else None
    if events is None or "consent" not in events.columns:
        # no raw events kept, or a warehouse from before the column: nothing stated
        stated = ident.filter(ibis.literal(False)).select(
            anonymous_id=ident.identifier, timestamp=ibis.null("timestamp"),
            consent=ibis.null("string"))
    else:
        stated = events.filter(events.consent.notnull() & events.anonymous_id.notnull()).select(
            "anonymous_id", "timestamp", "consent")
    found = stated.inner_join(ident, ("anon:" + stated.anonymous_id) == ident.identifier)
    refused = found.consent.lower() != CONSENT_GRANTED
    ranked = found.mutate(_rank=ibis.row_number().over(
        group_by=found.person_id,
        order_by=[ibis.desc(found.timestamp), ibis.desc(refused.cast("int8"))]))
    latest = ranked.filter(ranked._rank == 0)
    out = latest.filter(latest.consent.lower() != CONSENT_GRANTED).select("person_id")
    if require:
        persons = ident.select("person_id").distinct()
        silent = persons.filter(~persons.person_id.isin(latest.person_id))
        out = out.union(silent)
    return out.distinct()
