"""Person and account timelines: every touch, stage change, deal and answer in time order.

What a marketer reads to follow one customer: John found the site by organic search, came back
through a paid click on "emergency plumber", became a lead in a chat, came back direct and
phoned in, and the call became a sale. :func:`timeline` returns those moments as one table
(``at``, ``kind``, ``person_id``, ``channel``, ``source``, ``medium``, ``campaign``,
``keyword``, ``landing_page``, ``detail``, ``credit``, ``value``): ``kind`` is ``touch`` (one
row per prepared touch, with its session's channel and entrance values; ``credit``/``value``
on a session's first touch: the session's credit under the chosen model for the chosen
conversion), ``stage`` (entering a stage), ``conversion``, ``deal`` (a CRM deal naming the
person or the account) or ``survey`` (NPS, review, "how did you hear about us").

:func:`resolve_unit` finds the person or account that an id names: a person id (``p_…``), an
account id (``crm:…``, ``group:…``, ``domain:…``) or the CRM's, group's or domain's own id, a
user id, an e-mail,
a phone number (any format; read as E.164), a CRM contact id or an anonymous id; an e-mail or
phone also finds a person known only by its SHA-256, and a 64-hex text is looked up as such a
hash (keyed too on a ``pii_at_rest = "hashed"`` warehouse).
"""

from __future__ import annotations

import ibis
import ibis.expr.types as ir

from touchline.errors import InputError
from touchline.store import contact_identifiers, contact_key, digest_identifiers

#: the columns of a timeline, in order
TIMELINE_COLUMNS = ("at", "kind", "person_id", "channel", "source", "medium", "campaign",
                    "keyword", "landing_page", "detail", "credit", "value")


#: the kinds of identity-graph identifiers a typed id may already carry as its prefix
PREFIXED = ("user", "contact", "anon", "email", "phone", "email_sha256", "phone_sha256")


def _candidates(text: str, phone_region: str, pii_key: str | None = None) -> list[str]:
    """Identity-graph identifiers ``text`` may be, most specific first: an e-mail or a phone
    also as its SHA-256 (a person known only by an export's hashed address), a 64-hex text as
    such a hash; with ``pii_key`` (``pii_at_rest = "hashed"``) also keyed, as the graph keeps
    them (:func:`touchline.store.contact_identifiers`, which erasure uses too)."""
    import phonenumbers

    value = text.strip()
    kind, colon, rest = value.partition(":")
    if colon and rest.strip() and kind.lower() in PREFIXED:
        # already an identifier of a kind (``contact:<id>``, as the not-found error shows)
        kind, rest = kind.lower(), rest.strip()
        if kind in ("email", "phone"):  # normalised (and keyed) as the graph keeps them
            return _candidates(rest, phone_region, pii_key)
        return [f"{kind}:{rest.lower() if kind.endswith('_sha256') else rest}"]
    out = [f"user:{value}", f"contact:{value}", f"anon:{value}"]
    if "@" in value:
        out[:0] = contact_identifiers("email", value.lower(), pii_key)
    out += digest_identifiers(value, pii_key)
    try:
        number = phonenumbers.parse(value, phone_region)
        if phonenumbers.is_possible_number(number):
            out += contact_identifiers("phone", phonenumbers.format_number(
                number, phonenumbers.PhoneNumberFormat.E164), pii_key)
    except phonenumbers.NumberParseException:
        pass
    return list(dict.fromkeys(out))


def resolve_unit(con: object, text: str, *, phone_region: str = "US",
                 pii_key: str | None = None) -> tuple[str, str]:
    """``("person", person_id)`` or ``("account", account_id)`` for an id of any kind, or
    :class:`~touchline.errors.InputError` saying what was tried; ``pii_key``: the key of
    ``pii_at_rest = "hashed"`` warehouses (e-mails and phones are looked up keyed)."""
    value = text.strip()
    persons = con.table("persons")  # type: ignore[attr-defined]
    accounts = con.table("accounts")  # type: ignore[attr-defined]
    if persons.filter(persons.person_id == value).count().execute():
        return "person", value
    for account in (value, f"crm:{value}", f"group:{value}", f"domain:{value.lower()}"):
        if accounts.filter(accounts.account_id == account).count().execute():
            return "account", account
    identities = con.table("identities")  # type: ignore[attr-defined]
    tried = _candidates(value, phone_region, pii_key)
    found = identities.filter(identities.identifier.isin(tried)).select(
        "identifier", "person_id").to_pandas()
    for identifier in tried:
        hit = found[found.identifier == identifier]
        if len(hit):
            return "person", str(hit.person_id.iloc[0])
    # what was typed, never the keyed forms (nor the long hashes of an e-mail or a phone)
    shown = [c for c in _candidates(value, phone_region)
             if "_sha256:" not in c or value.lower() in c]
    raise InputError(f"no person or account is named {text!r} (tried person and account ids, "
                     f"{', '.join(shown)})")


def _empty(t: ir.Table, **values: ir.Value) -> ir.Table:
    """``t`` as timeline rows: the given columns, typed nulls for the others."""
    types = {"at": "timestamp", "credit": "float64", "value": "float64"}
    return t.select(**{c: (values[c] if c in values else ibis.null(types.get(c, "string")))
                       .cast(types.get(c, "string")).name(c) for c in TIMELINE_COLUMNS})


def timeline(con: object, unit: str, unit_id: str, *, model: str | None = None,
             conversion: str | None = None, stage_model: str = "lifecycle",
             pii_key: str | None = None) -> ir.Table:
    """Every moment of a person's or account's history, in time order (see the module);
    ``pii_key``: the key of a ``pii_at_rest = "hashed"`` warehouse (deals and surveys name
    people by e-mail, which the graph keeps keyed)."""
    key = contact_key(con, pii_key)  # type: ignore[arg-type]
    tp = con.table("touchpoints")  # type: ignore[attr-defined]
    mine = tp.filter(tp.person_id == unit_id if unit == "person" else tp.account_id == unit_id)
    people = mine.select("person_id").distinct()
    detail = ibis.coalesce(tp.event, ibis.ifelse(tp.type == "page", tp.page_path, tp.type))
    first = ibis.row_number().over(group_by="session_id", order_by=["occurred_at",
                                                                    "touchpoint_id"]) == 0
    touches = mine.mutate(_detail=detail, _first=first)
    if model is not None and conversion is not None:
        credits = con.table("credits")  # type: ignore[attr-defined]
        jt = con.table("journey_touches")  # type: ignore[attr-defined]
        c = credits.filter((credits.model == model) & (credits.conversion == conversion))
        per_session = c.inner_join(jt, [c.journey_id == jt.journey_id,
                                        c.position == jt.position]).group_by(
            _session=jt.session_id).aggregate(_credit=c.credit.sum(), _value=c.value.sum())
        touches = touches.left_join(per_session, touches.session_id == per_session._session)
        credit = ibis.ifelse(touches._first, touches._credit, ibis.null("float64"))
        value = ibis.ifelse(touches._first, touches._value, ibis.null("float64"))
    else:
        credit = value = ibis.null("float64")
    parts = [_empty(touches, at=touches.occurred_at, kind=ibis.literal("touch"),
                    person_id=touches.person_id, channel=touches.channel,
                    source=touches.source, medium=touches.medium, campaign=touches.campaign,
                    keyword=touches.term, landing_page=touches.landing_page,
                    detail=touches._detail, credit=credit, value=value)]
    stages = con.table("stages")  # type: ignore[attr-defined]
    s = stages.filter((stages.unit == unit) & (stages.unit_id == unit_id)
                      & (stages.stage_model == stage_model))
    parts.append(_empty(s, at=s.entered_at, kind=ibis.literal("stage"),
                        detail=ibis.literal(stage_model + ": ") + s.stage))
    journeys = con.table("journeys")  # type: ignore[attr-defined]
    j = journeys.filter((journeys.unit == unit) & (journeys.unit_id == unit_id)
                        & journeys.converted)
    parts.append(_empty(j, at=j.converted_at, kind=ibis.literal("conversion"),
                        detail=j.conversion + " #" + j.sequence.cast("string"), value=j.value))
    deals = con.table("deals")  # type: ignore[attr-defined]
    identities = con.table("identities")  # type: ignore[attr-defined]
    if unit == "account":
        d = deals.filter(("crm:" + deals.account_id) == unit_id)
    else:
        from touchline.journeys.conversions import deal_people

        named = deal_people(deals.select("deal_id", "contact_emails", "contact_ids").distinct(),
                            identities, contact_key=key)
        ids = named.filter(named.person_id == unit_id).select(_deal="deal_id")
        d = deals.inner_join(ids, deals.deal_id == ids._deal)
    d = d.mutate(_at=d.closed_at.coalesce(d.updated_at, d.created_at))
    parts.append(_empty(d, at=d._at, kind=ibis.literal("deal"),
                        detail=("deal " + d.deal_id + ":"
                                + ibis.ifelse(d.stage.notnull(), " " + d.stage, "")
                                + ibis.ifelse(d.status.notnull(), " " + d.status, "")),
                        value=d.amount))
    surveys = con.table("surveys")  # type: ignore[attr-defined]
    nodes = identities.inner_join(people, "person_id").select("identifier", _p="person_id")
    email = surveys.email.strip().lower().coalesce("")
    sv = surveys.mutate(_ids=ibis.array(["user:" + surveys.person_id.coalesce(""),
                                         "anon:" + surveys.person_id.coalesce(""),
                                         "email:" + (email if key is None else key(email))]))
    sv = sv.mutate(_id=sv._ids.unnest())
    sv = sv.inner_join(nodes, sv._id == nodes.identifier)
    sv = sv.group_by(["response_id", "responded_at", "nps_score", "review_rating",
                      "heard_about", "_p"]).aggregate()
    answer = ibis.literal("survey").concat(
        ibis.ifelse(sv.nps_score.notnull(), " NPS " + sv.nps_score.cast("string"), ""),
        ibis.ifelse(sv.review_rating.notnull(), " review " + sv.review_rating.cast("string"),
                    ""),
        ibis.ifelse(sv.heard_about.notnull(), " heard about us: " + sv.heard_about, ""))
    parts.append(_empty(sv, at=sv.responded_at, kind=ibis.literal("survey"), person_id=sv._p,
                        detail=answer))
    every = ibis.union(*parts, distinct=False)
    # at one moment: the stage entered, the touch, the deal, the conversion it makes, answers
    order = every.kind.substitute({"stage": 0, "touch": 1, "deal": 2, "conversion": 3},
                                  else_=4)
    return every.order_by([every.at, order, every.detail])
