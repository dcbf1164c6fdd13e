"""Canonical tables: their schemas, keys and documentation, and how they are created.

Every timestamp is UTC, stored without a zone (``*_at`` columns and the Segment timestamps).
JSON payloads (``properties``, ``traits``, ``context``) are stored as JSON text so that the same
schema works on DuckDB and Spark. ``touchline init`` creates every table here; ``docs/tables.md``
is generated from the ``doc`` strings (``tests/test_store.py`` keeps it current).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import ibis
import ibis.expr.datatypes as dt

if TYPE_CHECKING:
    from ibis.backends import BaseBackend

S, F, I, TS, D, B = dt.string, dt.float64, dt.int64, dt.Timestamp(), dt.date, dt.boolean


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

    @property
    def schema(self) -> ibis.Schema:
        return ibis.schema({c.name: c.dtype for c in self.columns})

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)


def _cols(*spec: tuple[str, dt.DataType, str]) -> tuple[Column, ...]:
    return tuple(Column(*s) for s in spec)


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
        ("user_id", S, "known person id (login, CRM contact)"),
        ("group_id", S, "account id for group calls"),
        ("previous_id", S, "the old id of an alias call"),
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
        ("user_agent", S, "browser user agent"),
        ("ip", S, "client IP (last octet zeroed by default)"),
        ("revenue", F, "revenue of the event, in `currency`"),
        ("currency", S, "ISO 4217 code of `revenue`"),
        ("properties", S, "event properties (JSON text)"),
        ("traits", S, "identify/group traits (JSON text)"),
        ("context", S, "Segment context object (JSON text)"),
        *_LOAD_COLUMNS,
        ("write_key", S, "the write key (name) the collector accepted it with"),
    ),
)

DEALS = TableSpec(
    name="deals",
    doc="CRM opportunities: one row per deal snapshot (a later export with a new stage adds a row).",
    key="row_hash",
    required=("deal_id", "created_at"),
    columns=_cols(
        ("deal_id", S, "CRM opportunity id"),
        ("account_id", S, "CRM account (company) id"),
        ("account_name", S, "company name"),
        ("account_domain", S, "company web domain"),
        ("contact_emails", S, "e-mails of the deal's contacts, ';'-separated"),
        ("stage", S, "current stage name"),
        ("status", S, "open, won or lost"),
        ("amount", F, "deal value in `currency`"),
        ("currency", S, "ISO 4217 code of `amount`"),
        ("created_at", TS, "deal created"),
        ("lead_at", TS, "became a lead"),
        ("mql_at", TS, "became a marketing-qualified lead"),
        ("sql_at", TS, "became a sales-qualified lead"),
        ("opportunity_at", TS, "became an opportunity"),
        ("closed_at", TS, "won or lost"),
        ("updated_at", TS, "last change in the CRM"),
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
        ("channel", S, "channel, when the export gives one"),
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
        ("raw", S, "the raw record (truncated to 64 kB)"),
        ("ref", S, "pointer to the surviving record for duplicates (its key), else null"),
        ("ingest_id", S, "ingest run or prepare run"),
        ("rejected_at", TS, "when"),
    ),
)

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

TABLES: dict[str, TableSpec] = {
    t.name: t for t in (EVENTS, DEALS, SPEND, CALLS, SURVEYS, SEARCH_CONSOLE, REJECTS, INGESTS)
}
INGESTIBLE = ("events", "deals", "spend", "calls", "surveys", "search_console")


def init(con: BaseBackend) -> list[str]:
    """Create every canonical table that does not exist yet; return the names created."""
    existing = set(con.list_tables())
    created = []
    for spec in TABLES.values():
        if spec.name not in existing:
            con.create_table(spec.name, schema=spec.schema)
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
