"""CRM lead records: where each lead came from, as one row of up to about 60 fields, built
from the stored tables (``journeys``, ``journey_steps``, ``sessions``, ``touches``,
``events``, ``identities``, ``persons``, ``accounts``, ``stages``, ``credits``) with Ibis, the
same on DuckDB and Spark.

A lead is a converted journey of a conversion type named in ``settings.crm_lead_conversions``
(default: ``lead``, the first form, chat, call or identify with an e-mail of a person). Its id,
``<conversion>:<ref>`` (``ref``: the touch or deal that made it), survives a rebuild of the
journeys, as an exported conversion's does; it is what the delivery log remembers.

A touch is a session (journeys' rule): the first touch is the journey's position 1, the last
its highest position, each with the session's entrance values (channel, source, medium,
campaign, keyword, content, landing page), its referrer host and the first click id of the
session. The credits are the chosen model's per-touch credits summed by channel
(``credit_<channel>``: ``credit_paid_search``), with the channel of the largest share as
``top_channel``. For John (tests/factories.py): first touch Organic Search from google, last
touch Paid Search with keyword ``emergency plumber`` and gclid ``abc``, 2 touches, 4.46 days
to lead, and under ``linear`` half a credit to each channel.

:func:`lead_records` gives the table; :mod:`~touchline.exports.crm_mapping` turns a row into a
CRM object's properties and :mod:`~touchline.exports.crm_push` delivers them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime

import ibis
import ibis.expr.types as ir
from ibis.backends import BaseBackend

from touchline import engine, store
from touchline.exports import rows

#: conversion types whose journeys are leads, unless ``settings.crm_lead_conversions`` says
LEAD_CONVERSIONS_DEFAULT = ("lead",)
#: what ``journey_touches`` shows for a session value it lacks; a CRM field gets null instead
NOT_SET = "(not set)"
#: the values of a journey's first and last touch, each as ``first_<name>`` and ``last_<name>``
TOUCH_FIELDS: dict[str, tuple[str, str]] = {
    "touch_at": ("datetime", "when the touch (session) started, UTC"),
    "channel": ("string", "its channel group"),
    "source": ("string", "its entrance source (utm_source, click id, referrer or (direct))"),
    "medium": ("string", "its entrance medium"),
    "campaign": ("string", "its entrance campaign"),
    "keyword": ("string", "its entrance keyword (utm_term)"),
    "content": ("string", "its entrance utm_content"),
    "landing_page": ("string", "the session's landing page"),
    "referrer": ("string", "the host of the session's referrer"),
    "click_id": ("string", "the session's first ad click id"),
    "click_id_param": ("string", "which parameter carried it (gclid, gbraid, wbraid, fbclid, "
                       "msclkid, ...)"),
}
#: every field of a lead record: name → (type, meaning); ``credit_<channel>`` fields beside
RECORD_FIELDS: dict[str, tuple[str, str]] = {
    "lead_id": ("string", "<conversion>:<ref>: the touch or deal that made the lead, stable "
                "across runs"),
    "journey_id": ("string", "the lead's journey"),
    "conversion": ("string", "the conversion type that made it a lead"),
    "lead_at": ("datetime", "when it became a lead, UTC"),
    "person_id": ("string", "the person (null when the lead is an account's)"),
    "account_id": ("string", "the person's company account, or the account"),
    "contact_id": ("string", "the CRM's own id of the person (least contact_id it came "
                   "with, e.g. a form's or a deal's), to match the CRM record"),
    "email": ("string", "the person's e-mail (least, normalised), to match the CRM record"),
    "phone": ("string", "the person's phone number in E.164"),
    "company": ("string", "the account's name"),
    "company_domain": ("string", "the account's domain"),
    **{f"first_{k}": (t, f"first touch: {d}") for k, (t, d) in TOUCH_FIELDS.items()},
    **{f"last_{k}": (t, f"last touch before the lead: {d}") for k, (t, d) in TOUCH_FIELDS.items()},
    "touch_count": ("integer", "touches (sessions) in the journey"),
    "channel_count": ("integer", "distinct channels among them"),
    "channels_seen": ("string", "those channels in the order first seen, joined by '; '"),
    "device_count": ("integer", "distinct devices among the touches"),
    "days_to_lead": ("number", "days from the first touch to the lead"),
    "lead_event": ("string", "the event that made the lead (Chat Started, Form Submitted...; "
                   "identify for an identify call)"),
    "lead_recorded_by": ("string", "the system that recorded it (web, chat, forms, calls...)"),
    "device_id": ("string", "the device of the lead (else of the last touch): anon:<id>..."),
    "device_type": ("string", "desktop, mobile or tablet, from the lead's user agent (null: "
                    "no user agent)"),
    "stage_at_lead": ("string", "the unit's stage (settings.stage_model) when it became a lead"),
    "stage": ("string", "the unit's stage now"),
    "credit_model": ("string", "the attribution model of the credit fields"),
    "top_channel": ("string", "the channel with the largest credit (ties: by name)"),
    "top_channel_credit": ("number", "its credit (a journey's credits sum to 1)"),
}
#: a channel's credit field: ``credit_`` + the channel in snake case
CREDIT_FIELD = re.compile(r"^credit_[a-z0-9_]+$")
#: a custom field: a key of the lead event's properties (or an identify call's traits), e.g.
#: ``properties.plan`` from a form's ``{"plan": "pro"}``
PROPERTY_FIELD = re.compile(r"^properties\.([A-Za-z_][A-Za-z0-9_]*)$")
_SLUG = re.compile(r"[^a-z0-9]+")


def credit_field(channel: str) -> str:
    """The record field holding ``channel``'s credit.

    >>> credit_field("Paid Search"), credit_field("AI Assistant")
    ('credit_paid_search', 'credit_ai_assistant')
    """
    return "credit_" + _SLUG.sub("_", channel.lower()).strip("_")


def is_record_field(name: str) -> bool:
    """Whether ``name`` is a lead record field: a fixed one, any channel's credit (a lead never
    credited to a channel has 0 there) or a property of the lead event (``properties.<key>``)."""
    return name in RECORD_FIELDS or bool(CREDIT_FIELD.match(name) or PROPERTY_FIELD.match(name))


def lead_journeys(con: BaseBackend, *, conversions: Sequence[str],
                  since: datetime | None = None) -> ir.Table:
    """The converted journeys of ``conversions`` (made leads at or after ``since``)."""
    journeys = con.table("journeys")
    leads = journeys.filter(journeys.converted.fill_null(False)
                            & journeys.conversion.isin(list(conversions)))
    if since is not None:
        leads = leads.filter(leads.converted_at >= since)
    return leads


def _session_clicks(con: BaseBackend) -> ir.Table:
    """``_click_session`` → the session's first click id (ties: the lesser id)."""
    clicks = rows.click_sessions(con, store.CLICK_IDS)
    rank = ibis.row_number().over(group_by=clicks._session,
                                  order_by=[clicks.click_at, clicks.click_id])
    ranked = clicks.mutate(_rank=rank)
    return ranked.filter(ranked._rank == 0).select(
        _click_session="_session", click_id="click_id", click_id_param="click_id_param").view()


def _lead_steps(con: BaseBackend, leads: ir.Table) -> ir.Table:
    """The leads' journey touches with their referrer and click, ``_first``/``_last`` marked."""
    steps = store.journey_touches_view(con)
    heads = leads.select(_head="journey_id")
    steps = steps.inner_join(heads, steps.journey_id == heads._head).drop("_head")
    sessions = con.table("sessions").select(_ref_session="session_id", referrer="referrer_host")
    steps = steps.left_join(sessions, steps.session_id == sessions._ref_session)
    clicks = _session_clicks(con)
    steps = steps.left_join(clicks, steps.session_id == clicks._click_session)
    last = steps.position.max().over(group_by=steps.journey_id)
    return steps.mutate(_first=steps.position == 1, _last=steps.position == last).view()


def _touch_end(steps: ir.Table, which: str) -> ir.Table:
    """``_end_journey`` → the ``first_*`` or ``last_*`` fields of ``steps`` (see the module)."""
    end = steps.filter(steps._first if which == "first" else steps._last)

    def value(name: str) -> ir.Value:
        column = end[name]
        return column.nullif(NOT_SET) if column.type().is_string() else column

    return end.select(_end_journey=end.journey_id, **{f"_{which}_device": end.device_id},
                      **{f"{which}_{k}": value(k) for k in TOUCH_FIELDS}).view()


def _journey_counts(steps: ir.Table) -> ir.Table:
    """``_count_journey`` → ``channels_seen`` (in the order first seen), ``device_count``."""
    firsts = steps.group_by(["journey_id", "channel"]).aggregate(_seen=steps.position.min())
    seen = firsts.group_by("journey_id").aggregate(
        channels_seen=engine.joined_in_order(firsts.channel, firsts._seen, "; "))
    devices = steps.group_by("journey_id").aggregate(device_count=steps.device_id.nunique())
    joined = seen.inner_join(devices, seen.journey_id == devices.journey_id)
    return joined.select(_count_journey=seen.journey_id, channels_seen=joined.channels_seen,
                         device_count=joined.device_count).view()


def lead_credits(con: BaseBackend, leads: ir.Table, model: str) -> ir.Table:
    """``journey_id``, ``channel``, ``credit``: the leads' credits under ``model`` by channel."""
    credits = con.table("credits")
    credits = credits.filter(credits.model == model)
    heads = leads.select(_head="journey_id")
    joined = credits.inner_join(heads, credits.journey_id == heads._head)
    return joined.group_by(["journey_id", "channel"]).aggregate(credit=joined.credit.sum())


def _credit_columns(by_channel: ir.Table, channels: Sequence[str]) -> ir.Table:
    """``_credit_journey`` → ``top_channel``, ``top_channel_credit`` and ``credit_<channel>``
    for each of ``channels``."""
    rank = ibis.row_number().over(group_by=by_channel.journey_id,
                                  order_by=[ibis.desc(by_channel.credit), by_channel.channel])
    ranked = by_channel.mutate(_rank=rank)
    top = ranked.filter(ranked._rank == 0).select(
        _top_journey="journey_id", top_channel="channel", top_channel_credit="credit")
    wide = by_channel.group_by("journey_id").aggregate(**{
        credit_field(c): by_channel.credit.sum(where=by_channel.channel == c)
        for c in channels})
    joined = wide.inner_join(top, wide.journey_id == top._top_journey)
    return joined.select(
        _credit_journey=joined.journey_id, top_channel=joined.top_channel,
        top_channel_credit=joined.top_channel_credit,
        **{credit_field(c): joined[credit_field(c)] for c in channels}).view()


def _stages(con: BaseBackend, leads: ir.Table, stage_model: str) -> ir.Table:
    """``_stage_journey`` → ``stage_at_lead`` and ``stage`` (now) of each lead's unit."""
    stages = con.table("stages")
    stages = stages.filter(stages.stage_model == stage_model)
    heads = leads.select(_head="journey_id", _unit="unit", _unit_id="unit_id",
                         _lead_at="converted_at")
    of_unit = heads.left_join(stages, [heads._unit == stages.unit,
                                       heads._unit_id == stages.unit_id])
    order = [ibis.desc(ibis._.entered_at), ibis.desc(ibis._.stage_order)]
    held = (of_unit.entered_at <= of_unit._lead_at) & (
        of_unit.left_at.isnull() | (of_unit.left_at > of_unit._lead_at))
    at_lead = of_unit.filter(held)
    at_lead = at_lead.mutate(_rank=ibis.row_number().over(group_by=at_lead._head,
                                                          order_by=order))
    at_lead = at_lead.filter(at_lead._rank == 0).select(_at_journey="_head",
                                                        stage_at_lead="stage").view()
    now = of_unit.filter(of_unit.left_at.isnull() & of_unit.stage.notnull())
    now = now.mutate(_rank=ibis.row_number().over(group_by=now._head, order_by=order))
    now = now.filter(now._rank == 0).select(_now_journey="_head", stage="stage").view()
    joined = heads.left_join(at_lead, heads._head == at_lead._at_journey).left_join(
        now, heads._head == now._now_journey)
    return joined.select(_stage_journey=joined._head, stage_at_lead=joined.stage_at_lead,
                         stage=joined.stage).view()


def _lead_touch(con: BaseBackend, leads: ir.Table, properties: Sequence[str]) -> ir.Table:
    """``_touch_ref`` → the lead touch's event, recorder, device, device type and the
    ``properties`` asked for (``properties.<key>``: the event's property, else its trait)."""
    touches = con.table("touches")
    events = con.table("events").select(_event_id="message_id", _agent="user_agent",
                                        _properties="properties", _traits="traits")
    refs = leads.select(_ref="ref").distinct()
    found = refs.inner_join(touches, refs._ref == touches.message_id)
    found = found.left_join(events, found._ref == events._event_id)
    agent = found._agent.lower()
    device_type = ibis.cases(
        (agent.isnull(), ibis.null("string")),
        (agent.re_search("ipad|tablet|kindle|playbook|silk"), "tablet"),
        (agent.re_search("mobi|iphone|ipod|android|blackberry|opera mini|iemobile"), "mobile"),
        else_="desktop")
    return found.select(_touch_ref=found._ref, lead_event=ibis.coalesce(found.event, found.type),
                        lead_recorded_by=found.recorded_by, _lead_device=found.device_id,
                        device_type=device_type, **{
                            f"properties.{key}": ibis.coalesce(
                                engine.json_value(found._properties, key),
                                engine.json_value(found._traits, key))
                            for key in properties}).view()


def _company(con: BaseBackend) -> ir.Table:
    """``_company_account`` → ``company`` (the account's name) and ``company_domain``."""
    accounts = con.table("accounts")
    return accounts.select(_company_account="account_id", company="account_name",
                           company_domain="domain").view()


def credited_channels(con: BaseBackend, leads: ir.Table, model: str) -> list[str]:
    """The channels ``model`` credits in any of ``leads`` (a small query, run now): the
    ``credit_<channel>`` fields a record has."""
    by_channel = lead_credits(con, leads, model)
    found = by_channel.select("channel").distinct().to_pyarrow().column("channel").to_pylist()
    return sorted(c for c in found if c is not None)


def lead_records(con: BaseBackend, *, model: str, stage_model: str,
                 conversions: Sequence[str] = LEAD_CONVERSIONS_DEFAULT,
                 since: datetime | None = None, properties: Sequence[str] = ()) -> ir.Table:
    """One row per lead (see the module): the fields of :data:`RECORD_FIELDS` in that order,
    then ``credit_<channel>`` for each channel ``model`` credits in any of the leads, then
    ``properties.<key>`` (text) for each of ``properties``.

    ``model``: the attribution model of the credit fields (its credits must be stored);
    ``stage_model``: the stage model of ``stage`` and ``stage_at_lead``; ``since``: only the
    leads made at or after it; ``properties``: keys of the lead event's properties (or an
    identify's traits) to carry, e.g. a form's ``plan``.
    """
    leads = lead_journeys(con, conversions=conversions, since=since).view()
    steps = _lead_steps(con, leads)
    first, last = _touch_end(steps, "first"), _touch_end(steps, "last")
    counts = _journey_counts(steps)
    channels = credited_channels(con, leads, model)
    credits = _credit_columns(lead_credits(con, leads, model), channels)
    stages = _stages(con, leads, stage_model)
    touch = _lead_touch(con, leads, properties)
    contacts = rows.person_contacts(con).view()
    persons = con.table("persons").select(_member="person_id", _member_account="account_id")
    company = _company(con)

    out = leads.left_join(first, leads.journey_id == first._end_journey)
    out = out.left_join(last, out.journey_id == last._end_journey)
    out = out.left_join(counts, out.journey_id == counts._count_journey)
    out = out.left_join(credits, out.journey_id == credits._credit_journey)
    out = out.left_join(stages, out.journey_id == stages._stage_journey)
    out = out.left_join(touch, out.ref == touch._touch_ref)
    out = out.left_join(contacts, (out.unit == "person") & (out.unit_id == contacts._person))
    out = out.left_join(persons, (out.unit == "person") & (out.unit_id == persons._member))
    out = out.mutate(_account=ibis.ifelse(out.unit == "account", out.unit_id,
                                          out._member_account)).view()
    out = out.left_join(company, out._account == company._company_account)

    values: dict[str, ir.Value] = {
        "lead_id": out.conversion + ":" + out.ref,
        "journey_id": out.journey_id,
        "conversion": out.conversion,
        "lead_at": out.converted_at,
        "person_id": ibis.ifelse(out.unit == "person", out.unit_id, ibis.null("string")),
        "account_id": out._account,
        "contact_id": out.contact,
        "email": out.email,
        "phone": out.phone,
        "company": out.company,
        "company_domain": out.company_domain,
        **{f"{end}_{k}": out[f"{end}_{k}"] for end in ("first", "last") for k in TOUCH_FIELDS},
        "touch_count": out.touches,
        "channel_count": out.channels,
        "channels_seen": out.channels_seen,
        "device_count": out.device_count.fill_null(0),
        "days_to_lead": out.days_to_convert,
        "lead_event": out.lead_event,
        "lead_recorded_by": out.lead_recorded_by,
        "device_id": ibis.coalesce(out._lead_device, out._last_device),
        "device_type": out.device_type,
        "stage_at_lead": out.stage_at_lead,
        "stage": out.stage,
        "credit_model": ibis.literal(model),
        "top_channel": out.top_channel,
        "top_channel_credit": out.top_channel_credit,
        **{credit_field(c): out[credit_field(c)].fill_null(0.0) for c in channels},
        **{f"properties.{key}": out[f"properties.{key}"] for key in properties},
    }
    types = {"string": "string", "datetime": "timestamp", "integer": "int64",
             "number": "float64"}
    return out.select(**{
        name: value.cast(types[RECORD_FIELDS[name][0]] if name in RECORD_FIELDS
                         else "string" if PROPERTY_FIELD.match(name) else "float64")
        for name, value in values.items()}).view()
