"""One typed settings object for every knob.

Values come from, in order of precedence: keyword arguments, environment variables with the
prefix ``TOUCHLINE_`` (``TOUCHLINE_DATABASE_URL``), a ``touchline.toml`` in the working
directory (or the file named by ``TOUCHLINE_CONFIG``), then the defaults below. Build it once
and pass it down; tests construct their own.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from touchline.errors import did_you_mean

DEFAULT_DATABASE_URL = "duckdb:///touchline.duckdb"
SESSION_GAP_MINUTES_DEFAULT = 30
INGEST_CHUNK_ROWS_DEFAULT = 250_000
MAX_LINE_BYTES_DEFAULT = 16 * 1024 * 1024


#: touch kinds a conversion or stage condition may name, and the event names that mean them by
#: default (``touch_events`` overrides); ``identify_email`` is an identify call with an e-mail
TOUCH_KINDS = ("form", "chat", "call", "identify_email")
TOUCH_EVENTS_DEFAULT: dict[str, list[str]] = {
    "form": ["Form Submitted", "Form Completed", "Lead Form Submitted"],
    "chat": ["Chat Started", "Chat Lead", "Chat Completed"],
    "call": ["Phone Call", "Call Completed", "Call"],
}
CTA_EVENTS_DEFAULT = ["CTA Clicked"]
FORM_START_EVENTS_DEFAULT = ["Form Started"]
REFERRAL_EVENTS_DEFAULT = ["Referral Sent"]
#: "how did you hear about us" answers → the channel they name, first match wins (searched in
#: lower case): ads before the platforms' organic mentions, word of mouth apart (no tracked
#: channel sees it: the matrix shows how much of it hides in Direct)
HEARD_ABOUT_CHANNELS_DEFAULT: dict[str, str] = {
    "Paid Search": r"google ad|ad on google|adwords|bing ad|search ad",
    "Paid Social": r"(facebook|instagram|linkedin|tiktok|meta) ad|sponsored",
    "Organic Search": r"google|bing|search|duckduckgo",
    "Organic Social": r"facebook|instagram|twitter|linkedin|tiktok|social",
    "Email": r"newsletter|e-?mail",
    "Organic Video": r"youtube|video",
    "Referral": r"review|\bg2\b|capterra|blog|trustpilot",
    "Affiliates": r"coupon|deal site|affiliate",
    "SMS": r"\bsms\b|text message",
    "Phone": r"phone|call",
    "Display": r"banner|\bads?\b|advert",
    "Word of mouth": r"friend|colleague|word of mouth|recommend",
    "Direct": r"already knew|knew you",
}
CONVERSION_UNITS = ("person", "account")
LOOKBACK_DAYS_PERSON_DEFAULT = 90


def _known_keys(model: type[BaseModel], data: Any, what: str) -> Any:
    """Refuse a key the model does not have, naming the nearest one (``valu`` → ``value``)."""
    if isinstance(data, dict):
        fields = sorted(model.model_fields)
        for key in data:
            if key not in model.model_fields:
                hint = did_you_mean(str(key), fields)
                raise ValueError(f"{what} {data.get('name', '?')!r}: unknown field {key!r}{hint}; "
                                 f"fields: {', '.join(fields)}")
    return data


class ConversionSpec(BaseModel):
    """One conversion type: what counts, what it is worth, whose journey it ends, how far back.

    A condition is either on touches (every given part must hold: ``events``, ``touches``,
    ``page``, ``revenue``) or on CRM deals (``deal``: ``won`` or a stage name), never both.
    ``value`` is ``revenue`` (the touch's revenue, reporting currency), ``deal_amount`` (the
    deal's amount, converted), ``none`` (0) or a number. ``unit`` person or account: an
    account conversion's journey is every touch of the account's people; a deal whose company
    is not a prepared account falls back to the person its contacts name. ``lookback_days``
    defaults to 90 for persons and none (the whole history) for accounts. ``history``:
    ``since_previous`` (a repeat conversion's journey is the touches since the unit's previous
    conversion of this type) or ``full_history``. ``count``: ``every`` conversion, or only the
    ``first`` of each unit (a lead is created once). ``properties``: values the touch's event
    properties must hold (``{plan = "pro"}``; compared as text, so ``{seats = 5}`` matches
    ``5``). ``call_seconds``: a call touch meets ``touches = ["call"]`` only when its talk time
    is at least this (default: the setting ``call_conversion_seconds``; unset, every call).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9_]+$")
    events: list[str] = []
    touches: list[str] = []
    page: str | None = None
    revenue: bool = False
    properties: dict[str, str | bool | int | float] = {}
    call_seconds: int | None = Field(None, ge=0)
    deal: str | None = None
    value: str = "none"
    unit: str = "person"
    lookback_days: int | None = Field(None, ge=1)
    history: str = "since_previous"
    count: str = "every"

    @model_validator(mode="before")
    @classmethod
    def _default_lookback(cls, data: Any) -> Any:
        data = _known_keys(cls, data, "conversion")
        if isinstance(data, dict) and isinstance(data.get("value"), int | float):
            data = {**data, "value": str(data["value"])}  # value = 50 means "50"
        if isinstance(data, dict) and "lookback_days" not in data:
            unit = data.get("unit", "person")
            data = {**data, "lookback_days": LOOKBACK_DAYS_PERSON_DEFAULT
                    if unit == "person" else None}
        return data

    @model_validator(mode="after")
    def _coherent(self) -> ConversionSpec:
        def choose(field: str, value: str, allowed: tuple[str, ...]) -> None:
            if value not in allowed:
                hint = did_you_mean(value, allowed)
                raise ValueError(f"conversion {self.name!r}: {field} {value!r}{hint}: choose "
                                 f"from {', '.join(allowed)}")

        for kind in self.touches:
            choose("touch", kind, TOUCH_KINDS)
        choose("unit", self.unit, CONVERSION_UNITS)
        choose("history", self.history, ("since_previous", "full_history"))
        choose("count", self.count, ("every", "first"))
        on_touches = bool(self.events or self.touches or self.page or self.revenue
                          or self.properties)
        for key in self.properties:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
                raise ValueError(f"conversion {self.name!r}: property {key!r}: a top-level key "
                                 "of the event's properties (letters, digits, _)")
        if self.call_seconds is not None and "call" not in self.touches:
            raise ValueError(f"conversion {self.name!r}: call_seconds applies to "
                             'touches = ["call"]')
        if self.deal is not None and on_touches:
            raise ValueError(f"conversion {self.name!r}: a condition is on deals or on touches, "
                             "not both")
        if self.deal is None and not on_touches:
            raise ValueError(f"conversion {self.name!r} has no condition: give events, "
                             "touches, page, revenue, properties or deal")
        if self.value not in ("revenue", "deal_amount", "none"):
            try:
                float(self.value)
            except ValueError:
                raise ValueError(f"conversion {self.name!r}: value {self.value!r}: use revenue, "
                                 "deal_amount, none or a number") from None
        if self.value == "deal_amount" and self.deal is None:
            raise ValueError(f"conversion {self.name!r}: value deal_amount needs a deal condition")
        if self.value == "revenue" and self.deal is not None:
            raise ValueError(f"conversion {self.name!r}: a deal's value is deal_amount")
        if self.page is not None:
            try:
                re.compile(self.page)
            except re.error as exc:
                raise ValueError(f"conversion {self.name!r}: page {self.page!r} is not a "
                                 f"regular expression: {exc}") from None
        return self


class StageSpec(BaseModel):
    """One stage of a stage model and how a unit enters it: every given part must hold.

    ``first_touch``: the unit's first touch; ``visits``: its n-th session (2: a return visit);
    ``conversion`` (with ``nth``): the n-th conversion of that conversion type (a list: of any
    of them, the earliest); ``events``,
    ``touches``, ``page``: a touch as in a conversion condition; ``deal``: a deal milestone as
    in a conversion condition (``won``, ``mql``, ``sql``, ``opportunity``, a stage name).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9_ ]+$")
    first_touch: bool = False
    visits: int | None = Field(None, ge=1)
    conversion: list[str] | None = None
    nth: int = Field(1, ge=1)

    @field_validator("conversion", mode="before")
    @classmethod
    def _as_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @model_validator(mode="before")
    @classmethod
    def _fields(cls, data: Any) -> Any:
        return _known_keys(cls, data, "stage")
    events: list[str] = []
    touches: list[str] = []
    page: str | None = None
    deal: str | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> StageSpec:
        kinds = [k for k, on in (("first_touch", self.first_touch),
                                 ("visits", self.visits is not None),
                                 ("conversion", self.conversion is not None),
                                 ("touch", bool(self.events or self.touches or self.page)),
                                 ("deal", self.deal is not None)) if on]
        if len(kinds) != 1:
            raise ValueError(f"stage {self.name!r}: give exactly one entry condition (first_touch, "
                             f"visits, conversion, events/touches/page or deal), not "
                             f"{', '.join(kinds) or 'none'}")
        for kind in self.touches:
            if kind not in TOUCH_KINDS:
                hint = did_you_mean(kind, TOUCH_KINDS)
                raise ValueError(f"stage {self.name!r}: touch {kind!r}{hint}: choose from "
                                 f"{', '.join(TOUCH_KINDS)}")
        return self


_REVIEW_EVENTS = ["Review Submitted", "Referral Sent", "Product Reviewed", "NPS Promoter"]
#: stage model presets: ordered stages, each with its entry condition
STAGE_PRESETS: dict[str, list[dict[str, Any]]] = {
    "lifecycle": [
        {"name": "awareness", "first_touch": True},
        {"name": "consideration", "visits": 2},
        {"name": "decision", "conversion": "lead"},
        {"name": "retention", "conversion": ["purchase", "deal_won"]},
        {"name": "advocacy", "events": _REVIEW_EVENTS},
    ],
    "funnel": [
        {"name": "top", "first_touch": True},
        {"name": "middle", "conversion": "lead"},
        {"name": "bottom", "conversion": ["purchase", "deal_won"]},
    ],
    "hourglass": [
        {"name": "know", "first_touch": True},
        {"name": "like", "visits": 2},
        {"name": "trust", "touches": ["identify_email"]},
        {"name": "try", "events": ["Trial Started", "Signed Up", "Demo Booked"]},
        {"name": "buy", "conversion": ["purchase", "deal_won"]},
        {"name": "repeat", "conversion": "purchase", "nth": 2},
        {"name": "refer", "events": _REVIEW_EVENTS},
    ],
    "b2b": [
        {"name": "first touch", "first_touch": True},
        {"name": "MQL", "deal": "mql"},
        {"name": "SQL", "deal": "sql"},
        {"name": "opportunity", "deal": "opportunity"},
        {"name": "closed won", "deal": "won"},
    ],
}


CONVERSIONS_DEFAULT: list[dict[str, Any]] = [
    {"name": "purchase", "revenue": True, "value": "revenue"},
    {"name": "lead", "touches": ["form", "chat", "call", "identify_email"], "count": "first"},
    {"name": "call", "touches": ["call"]},
    {"name": "deal_won", "deal": "won", "value": "deal_amount", "unit": "account"},
]
#: ``auto`` is the data-driven model that best predicts the later journeys (docs/attribution.md)
#: replicates of the stored bootstrap intervals: each 90 % bound lies between the 2nd and 3rd
#: most extreme replicate, and the intervals of every data-driven model cost a few per cent of
#: `touchline run` at 10M events (docs/attribution.md)
BOOTSTRAP_REPLICATES_DEFAULT = 40
MODELS_DEFAULT = ["last_non_direct", "linear", "position_based", "time_decay", "markov",
                  "shapley", "counterfactual", "auto"]


def _config_file() -> Path:
    return Path(os.environ.get("TOUCHLINE_CONFIG", "touchline.toml"))


def check_pattern(pattern: str, *, where: str = "") -> None:
    """Raise ``ValueError`` (a settings error naming the pattern) unless ``pattern`` compiles;
    ``where`` prefixes the message (the setting's key, when the pattern is one of many)."""
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"{where}{pattern!r} is not a regular expression: {exc}") from None


class Settings(BaseSettings):
    """Every setting touchline reads, with its unit.

    Fields marked *rebuild* change prepared tables: re-run ``touchline prepare`` after changing
    them.
    """

    model_config = SettingsConfigDict(
        env_prefix="TOUCHLINE_", extra="forbid", validate_default=True, frozen=True
    )

    database_url: str = Field(
        DEFAULT_DATABASE_URL,
        description="Warehouse: duckdb:///path.duckdb (one file), duckdb:// (memory) or "
        "spark://local[2] (pyspark).",
    )
    memory_limit: str | None = Field(
        None, description="DuckDB memory_limit, e.g. '8GB'; the peak runs ~5-8 % above it."
    )
    chromium_path: Path = Field(
        Path("/usr/bin/chromium"),
        description="The Chromium that draws `touchline report --format png` charts "
        "(kaleido); never downloaded.",
    )
    temp_directory: Path | None = Field(
        None,
        description="Where DuckDB spills larger-than-memory work; default: beside the "
        "warehouse file (DuckDB would otherwise use ./.tmp of the working directory).",
    )
    threads: int | None = Field(None, ge=1, description="Engine threads; default all cores.")
    compress_id_columns: bool = Field(
        False,
        description="DuckDB: store the prepared tables' uuid id columns (message_id, device_id, "
        "anonymous_id, session_id) compressed: touches take ~0.4x the disk (10M events: 1.23 "
        "to 0.46 GiB) for ~1.5x the CPU of their write (24 to 35 s). For warehouses that "
        "outgrow their disk; default plain, the faster write.",
    )
    spark_warehouse_dir: Path | None = Field(
        None, description="spark.sql.warehouse.dir; default a temporary folder."
    )
    spark_shuffle_partitions: int = Field(8, ge=1, description="spark.sql.shuffle.partitions")
    spark_conf: dict[str, str] = Field(
        {}, description="More Spark settings, e.g. {'spark.driver.memory': '8g'}; they win "
        "over touchline's own.",
    )
    ingest_chunk_rows: int = Field(
        INGEST_CHUNK_ROWS_DEFAULT, ge=1, description="Rows per ingest chunk (bounds memory)."
    )
    max_line_bytes: int = Field(
        MAX_LINE_BYTES_DEFAULT,
        ge=1024,
        description="Longest accepted input line/record in bytes; longer ones are rejected.",
    )
    session_gap_minutes: int = Field(
        SESSION_GAP_MINUTES_DEFAULT, ge=1, description="rebuild: inactivity that ends a session."
    )
    reporting_currency: str = Field("USD", description="rebuild: currency revenue is shown in.")
    ip_truncate: bool = Field(True, description="Zero the last IPv4 octet / IPv6 80 bits "
                              "(with ip_at_rest = truncated, the default).")
    # collector (touchline serve): see touchline/collect/
    collector_host: str = Field("127.0.0.1", description="Address `touchline serve` binds to.")
    collector_port: int = Field(8080, ge=1, le=65535, description="TCP port of the collector.")
    collector_workers: int = Field(1, ge=1, description="Collector worker processes.")
    spool_dir: Path = Field(
        Path("touchline-spool"),
        description="Append-only spool the collector acknowledges into; the loader empties it.",
    )
    spool_limit_bytes: int = Field(
        1024**3, ge=1, description="Spool size in bytes beyond which requests get 503."
    )
    spool_min_free_bytes: int = Field(
        256 * 1024**2, ge=0, description="Free disk bytes below which requests get 503."
    )
    spool_segment_bytes: int = Field(
        64 * 1024**2, ge=1024, description="Bytes after which a worker starts a new segment."
    )
    load_interval_seconds: float = Field(
        1.0, gt=0, description="Seconds between two loads of the spool into the warehouse."
    )
    load_batch_bytes: int = Field(
        32 * 1024**2, ge=1024, description="Spool bytes loaded in one warehouse transaction."
    )
    cors_origins: list[str] = Field(
        ["*"], description="Origins allowed to post to the collector from a browser."
    )
    tracker_respect_dnt: bool = Field(
        False, description="t.js sends nothing when the browser's Do-Not-Track is on."
    )
    tracker_consent: str = Field(
        "granted",
        pattern="^(granted|pending|cookieless)$",
        description="t.js default consent: granted, pending (no storage or sending until "
        "consent) or cookieless (no storage, aggregate counts only).",
    )
    tracker_strip_params: list[str] = Field(
        [],
        description="Query parameters t.js never sends (page URL, referrer), beside its built-in "
        "secrets: access_token, id_token, refresh_token, token, password, passwd, pwd, secret, "
        "auth, code, key, api_key, apikey, session_id, sid.",
    )
    dni_pools: dict[str, list[str]] = Field(
        {},
        description="Tracking numbers by pool key: 'source/medium', 'source', 'medium' or "
        "'default', e.g. {'google/cpc': ['+15550100001']}.",
    )
    dni_mode: str = Field(
        "visitor",
        pattern="^(visitor|channel)$",
        description="visitor: a number is leased to one session at a time; channel: shared "
        "by every visitor of the pool's channel.",
    )
    dni_lease_minutes: int = Field(30, ge=1, description="Minutes a number stays leased.")
    dni_grace_minutes: int = Field(
        60, ge=0, description="Minutes after a lease ended in which a call still matches it."
    )
    dni_lease_store_max_rows: int = Field(
        1_000_000,
        ge=1,
        description="Rows the collector's lease store (leases.sqlite in the spool folder) may "
        "hold; beyond it new sessions keep the site's own number (counted as store_full) until "
        "the loader prunes leases it copied that ended over dni_grace_minutes ago.",
    )
    phone_region: str = Field("US", description="Region for numbers without a country code.")
    call_conversion_seconds: int | None = Field(
        60, ge=0, description="Talk time (seconds) a phone call needs to meet a conversion's "
        "touches = [\"call\"] (the default `call` conversion) unless the conversion sets its "
        "own call_seconds; 0 or None: every call. Calls stay touches either way."
    )
    call_spam_outcomes: list[str] = Field(
        ["spam", "robocall", "wrong number"], description="prepare drops calls whose "
        "outcome (telephony disposition) is one of these, to rejects as spam_call.")
    webhook_mappings_file: Path | None = Field(
        None, description="TOML file of per-source webhook field mappings."
    )
    # prepare (touchline prepare): see touchline/prepare/
    earliest_valid_timestamp: str = Field(
        "2000-01-01", description="rebuild: touches before this UTC date are impossible."
    )
    future_tolerance_minutes: int = Field(
        10, ge=0, description="rebuild: minutes a touch may lie after its receipt (or the run)."
    )
    clock_skew_flag_seconds: int = Field(
        300, ge=0, description="rebuild: client clock skew above this is flagged in `audit`."
    )
    bot_hits_per_minute: int = Field(
        200, ge=1, description="rebuild: a device with more hits within any 60 seconds is a bot."
    )
    bot_user_agent_list: bool = Field(
        True, description="rebuild: drop hits whose user agent matches the maintained "
        "crawler-user-agents list."
    )
    bot_user_agent_patterns: list[str] = Field(
        [], description="rebuild: more regular expressions (case-insensitive) of user agents "
        "to drop as bots, e.g. your uptime monitor."
    )
    bot_user_agent_allow: list[str] = Field(
        [], description="rebuild: regular expressions (case-insensitive) of user agents never "
        "dropped as bots, e.g. a partner's crawler you want counted."
    )
    session_new_on_campaign: bool = Field(
        False, description="rebuild: a new campaign starts a new session (Matomo; not GA4)."
    )
    dedupe_link_seconds: dict[str, int] = Field(
        {"Form Submitted": 600, "Chat Started": 600, "Call": 300, "Deal Created": 3600},
        description="rebuild: event name -> seconds within which two sources' records of it "
        "with the same e-mail, phone or URL are one touch.",
    )
    dedupe_source_priority: list[str] = Field(
        ["web", "server", "forms", "chat", "calls", "crm", "import"],
        description="rebuild: which system's record wins a cross-source duplicate (first wins).",
    )
    channel_rules: Literal["touchline", "ga4"] = Field(
        "touchline", description="rebuild: shipped channel rules. 'touchline': GA4's default "
        "channel group plus Phone, Offline, AI Assistant, click-id Paid Search and medium "
        "aliases (newsletter -> Email). 'ga4': GA4's default channel group exactly, without "
        "them, to reconcile with GA4's reports.",
    )
    channel_rules_file: Path | None = Field(
        None, description="rebuild: CSV of custom channel rules, evaluated before the shipped."
    )
    source_aliases_file: Path | None = Field(
        None, description="rebuild: CSV alias,source extending the shipped source aliases."
    )
    currency_rates_file: Path | None = Field(
        None, description="rebuild: CSV currency,usd_per_unit (US dollars per unit, the shipped "
        "table's format) overriding or adding to the shipped rates.",
    )
    own_domains: list[str] = Field(
        [], description="rebuild: registrable domains whose referrers are internal."
    )
    identity_max_degree: int = Field(
        25, ge=1, description="rebuild: an identifier linked to more ids than this is cut."
    )
    identity_max_component: int = Field(
        500, ge=2, description="rebuild: larger identity components are split to devices."
    )
    identity_unlink: list[str] = Field(
        [], description="rebuild: identifiers ('email:a@b.com', 'user:42') never to link on, "
        "or single links to cut ('email:a@b.com|user:42').",
    )
    identity_max_iterations: int = Field(
        40, ge=1, description="Label-propagation rounds before giving up (graph diameter)."
    )

    # journeys and attribution (touchline run): see touchline/journeys/
    conversions: list[ConversionSpec] = Field(
        [ConversionSpec(**c) for c in CONVERSIONS_DEFAULT],
        description="Conversion types (name, condition, value, unit, lookback_days, history, "
        "count): docs/journeys.md. Replacing the list replaces the defaults.",
    )
    touch_events: dict[str, list[str]] = Field(
        TOUCH_EVENTS_DEFAULT,
        description="Event names that make a touch a form, chat or call (conversion and stage "
        "conditions `touches`).",
    )
    deal_statuses: dict[str, list[str]] = Field(
        {"won": ["won", "closed won", "closed_won", "closedwon", "win"],
         "lost": ["lost", "closed lost", "closed_lost", "closedlost"]},
        description="CRM deal status texts (compared trimmed, lower case) meaning won or lost; "
        "anything else is open.",
    )
    attribution_models: list[str] = Field(
        MODELS_DEFAULT, description="Models `touchline run` stores credits for."
    )
    default_model: str = Field(
        "linear", description="Model of the run's summary and of `attribute` without --model."
    )
    markov_order: int | Literal["auto"] = Field(
        1, description="Order (1-4) of `markov` and `markov_time_decay` in `touchline run`; "
        "auto: per conversion type, the order whose chain best predicts held-out journeys "
        "(docs/attribution.md). Higher orders and auto cost more.",
    )
    bootstrap_replicates: int = Field(
        BOOTSTRAP_REPLICATES_DEFAULT, ge=0, description="Bootstrap replicates of the intervals "
        "`touchline run` stores for the data-driven models (credit_intervals) and `attribute` "
        "shows; 0: none. More replicates, steadier bounds, a longer run.",
    )
    bootstrap_confidence: float = Field(
        0.9, gt=0, lt=1, description="Confidence level of the bootstrap intervals.")
    bootstrap_seed: int = Field(
        0, ge=0, description="Seed of the bootstrap draws: the same data give the same bounds.")
    stage_models: dict[str, list[StageSpec]] = Field(
        {}, description="Your own stage models: name -> ordered stages (docs/journeys.md); "
        "the presets lifecycle, funnel, hourglass and b2b always exist.",
    )
    stage_model: str = Field(
        "lifecycle", description="The stage model whose stage each journey touch carries."
    )

    # KPIs over events (touchline kpis): which events and pages they count
    cta_events: list[str] = Field(
        CTA_EVENTS_DEFAULT, description="Event names of a call-to-action click (track events; "
        "the page the event was sent from is the page carrying the CTA)."
    )
    cta_pages: str | None = Field(
        None, description="Regular expression (searched in the page path) of the pages that "
        "carry a CTA; empty: every page on which a CTA click was ever recorded."
    )
    form_start_events: list[str] = Field(
        FORM_START_EVENTS_DEFAULT, description="Event names of a visitor starting a form (the "
        "first field filled); submissions are touch_events['form']."
    )
    form_pages: str | None = Field(
        None, description="Regular expression (searched in the page path) of the pages that "
        "carry a form; empty: every page on which a form start or submission was recorded."
    )
    referral_events: list[str] = Field(
        REFERRAL_EVENTS_DEFAULT, description="Event names of a customer referring someone."
    )
    heard_about_channels: dict[str, str] = Field(
        HEARD_ABOUT_CHANNELS_DEFAULT, description="Channel -> regular expression (searched, "
        "case-insensitive) of the 'how did you hear about us' answers meaning it; the first "
        "matching channel in order wins, answers matching none are Other."
    )

    @field_validator("markov_order")
    @classmethod
    def _markov_order_in_range(cls, value: int | str) -> int | str:
        if value != "auto" and not 1 <= int(value) <= 4:
            raise ValueError(f"markov_order must be 1 to 4 or 'auto', got {value!r}")
        return value

    @field_validator("cta_pages", "form_pages")
    @classmethod
    def _page_pattern(cls, value: str | None) -> str | None:
        if value:
            check_pattern(value)
        return value or None

    @field_validator("heard_about_channels")
    @classmethod
    def _heard_about_patterns(cls, value: dict[str, str]) -> dict[str, str]:
        for channel, pattern in value.items():
            check_pattern(pattern, where=f"heard_about_channels {channel!r}: ")
        return value

    # exports to ad platforms (touchline export): see touchline/exports/, docs/exports.md
    export_time_zone: str = Field(
        "UTC", description="IANA time zone of Google Ads conversion times (the file's "
        "Parameters:TimeZone row), e.g. 'America/New_York': the Google Ads account's zone.",
    )
    export_conversion_window_days: dict[str, int] = Field(
        {"google-ads": 90, "microsoft": 90},
        description="Days after a click that an ad platform still credits a conversion to it "
        "(the conversion action's or goal's click-through window; 90 is both platforms' "
        "longest). Conversions further from their click are rejected, not sent.",
    )
    google_ads_customer_id: str | None = Field(
        None, description="Google Ads customer id (10 digits, no dashes) that owns the "
        "conversion actions: the Data Manager request's operatingAccount.",
    )
    meta_action_source: str = Field(
        "system_generated", description="Meta action_source of exported events: where the "
        "conversion happened (system_generated: a CRM; website needs the visitor's user agent, "
        "which touchline does not keep; physical_store, phone_call, chat, email, app, other).",
    )
    export_push_urls: dict[str, str] = Field(
        {}, description="Destination (google-ads, meta, microsoft) -> URL the export POSTs its "
        "JSON payload to (an API endpoint or your relay); none: files only, no network call.",
    )

    # CRM lead enrichment (touchline push crm): see touchline/exports/crm.py, docs/exports.md
    crm_lead_conversions: list[str] = Field(
        ["lead"], description="Conversion types whose journeys are leads for the CRM.")
    crm_model: str | None = Field(
        None, description="Attribution model of the leads' credit fields (one of "
        "attribution_models); none: default_model.")
    crm_mapping: str = Field(
        "touchline", description="Field mapping of the lead payloads: touchline (every lead "
        "record field), hubspot, salesforce, or a TOML / JSON mapping file.")
    crm_webhook_url: str | None = Field(
        None, description="URL `touchline push crm` POSTs each lead to (your CRM relay, a "
        "workflow webhook); none: files only (--out), no network call.")
    crm_webhook_secret: SecretStr | None = Field(
        None, description="Shared secret of the X-Touchline-Signature header (HMAC-SHA256 over "
        "the timestamp and the raw body); set it from TOUCHLINE_CRM_WEBHOOK_SECRET, not a file "
        "in the repository.")
    crm_retry_attempts: int = Field(
        5, ge=1, description="POSTs of one lead before it goes to crm_dead_letters.")
    crm_retry_base_seconds: float = Field(
        1.0, ge=0, description="Wait before the first retry; each next retry waits twice as "
        "long.")
    crm_retry_max_seconds: float = Field(
        60.0, ge=0, description="Longest wait between two retries of a lead.")
    crm_timeout_seconds: float = Field(
        10.0, gt=0, description="Seconds a POST may take (connect and answer).")
    crm_follow_interval_seconds: float = Field(
        30.0, gt=0, description="Seconds between two looks for new leads in `touchline push "
        "crm --follow`.")
    export_require_consent: bool = Field(
        False, description="Exports to ad platforms also refuse (no_consent) the conversions "
        "of persons who never stated a consent (no t.js event with context.consent: "
        "server-side, CRM or call-only people). Persons whose latest stated consent is not "
        "'granted' are refused whatever this says.",
    )

    # privacy: see touchline/privacy/, docs/privacy.md
    pii_hash_key: SecretStr | None = Field(
        None, description="Secret key of the keyed hash (HMAC-SHA256) touchline stores instead "
        "of personal identifiers: the erasure log's identifier hashes. At least 16 characters; "
        "keep it out of touchline.toml (TOUCHLINE_PII_HASH_KEY). Changing it makes old hashes "
        "unmatchable.", min_length=16,
    )
    raw_event_retention_days: int | None = Field(
        None, ge=1, description="Days raw data with personal data is kept: `touchline retention "
        "apply`, and each `touchline run` after preparing, delete older rows of `events` and "
        "`calls` and empty the e-mails and phones of older surveys and reviews, the contacts' "
        "e-mails of older deals and the raw records of older rejects (raw_retention_days "
        "overrides it per table); prepared touches stay (prepare keeps them), so sessions, "
        "journeys and credits are unchanged. None: kept for ever.",
    )
    raw_retention_days: dict[Literal["events", "calls", "surveys", "reviews", "rejects",
                                     "deals", "number_leases"], int] = Field(
        default_factory=dict, description="Days each raw table holding personal data keeps "
        "it, per table (default: raw_event_retention_days): calls older are deleted "
        "(their touches stay), surveys and reviews lose the answerer's e-mail and phone (a "
        "survey answer keeps its person through a device id of the identity graph, so KPIs "
        "by channel stay), deals their contacts' e-mails (amounts, stages and CRM contact ids "
        "stay), rejects their raw record, expired number_leases their device and session "
        "ids. Same runs as raw_event_retention_days.",
    )
    pii_at_rest: Literal["plain", "hashed"] = Field(
        "plain", description="rebuild: how prepared tables keep e-mails and phone numbers. "
        "hashed: as HMAC-SHA256 (pii_hash_key) of the SHA-256 of the normalised value, so one "
        "address given plain or pre-hashed is one identifier and the identity graph still "
        "stitches; exports that need the plain value's SHA-256 (Google enhanced conversions "
        "for leads, Meta user_data) refuse with pii_hashed_at_rest. The raw tables (events, "
        "deals, calls, reviews, surveys) get the same keyed hashes at load, their JSON and "
        "rejects.raw no plain e-mail or phone (docs/privacy.md).",
    )
    ip_at_rest: Literal["truncated", "keyed", "dropped"] = Field(
        "truncated", description="How `events.ip` keeps the client's address. truncated: the "
        "network part (ip_truncate; Matomo's and GA's anonymisation), which still gives "
        "geography and bot networks; keyed: HMAC-SHA256 (pii_hash_key) of the full address, "
        "so one address's events still join (repeat visits, abuse) but the address cannot be "
        "read back; dropped: none is stored (GA4 keeps none). docs/privacy.md.",
    )

    @field_validator("stage_models")
    @classmethod
    def _stages_well_formed(cls, value: dict[str, list[StageSpec]]) -> dict[str, list[StageSpec]]:
        for model, stages in value.items():
            if not stages:
                raise ValueError(f"stage model {model!r} has no stages")
            names = [s.name for s in stages]
            twice = sorted({n for n in names if names.count(n) > 1})
            if twice:
                raise ValueError(f"stage model {model!r}: stage {', '.join(twice)} twice")
        return value

    @property
    def pii_key_at_rest(self) -> str | None:
        """The key prepared tables' e-mails and phones are hashed under, if they are."""
        if self.pii_at_rest != "hashed" or self.pii_hash_key is None:
            return None
        return self.pii_hash_key.get_secret_value()

    @model_validator(mode="after")
    def _hashing_has_a_key(self) -> Settings:
        if self.pii_at_rest == "hashed" and self.pii_hash_key is None:
            raise ValueError("pii_at_rest = 'hashed' needs pii_hash_key (the HMAC key; set "
                             "TOUCHLINE_PII_HASH_KEY, 16+ characters)")
        return self

    @field_validator("raw_retention_days")
    @classmethod
    def _retention_days_positive(cls, value: dict[str, int]) -> dict[str, int]:
        bad = sorted(table for table, days in value.items() if days < 1)
        if bad:
            raise ValueError(f"raw_retention_days of {', '.join(bad)}: days must be 1 or more")
        return value

    @model_validator(mode="after")
    def _keyed_ips_have_a_key(self) -> Settings:
        if self.ip_at_rest == "keyed" and self.pii_hash_key is None:
            raise ValueError("ip_at_rest = 'keyed' needs pii_hash_key (the HMAC key; set "
                             "TOUCHLINE_PII_HASH_KEY, 16+ characters)")
        return self

    @model_validator(mode="after")
    def _default_model_is_stored(self) -> Settings:
        if self.default_model not in self.attribution_models:
            raise ValueError(f"default_model {self.default_model!r} is not one of "
                             f"attribution_models ({', '.join(self.attribution_models)}): its "
                             "credits would not be stored")
        return self

    @model_validator(mode="after")
    def _stage_models_known(self) -> Settings:
        known = [*STAGE_PRESETS, *self.stage_models]
        if self.stage_model not in known:
            hint = did_you_mean(self.stage_model, known)
            raise ValueError(f"stage_model {self.stage_model!r}{hint}: choose from "
                             f"{', '.join(known)}")
        names = {c.name for c in self.conversions}
        for model, stages in self.all_stage_models().items():
            if model in STAGE_PRESETS and model not in self.stage_models:
                continue  # a preset naming a conversion type you removed: never entered
            for stage in stages:
                for name in stage.conversion or []:
                    if name not in names:
                        hint = did_you_mean(name, sorted(names))
                        raise ValueError(f"stage model {model!r}, stage {stage.name!r}: "
                                         f"conversion {name!r}{hint} is not a conversion type")
        return self

    def all_stage_models(self) -> dict[str, list[StageSpec]]:
        """The presets and the user's stage models (a user's model of a preset's name wins)."""
        presets = {name: [StageSpec(**s) for s in stages]
                   for name, stages in STAGE_PRESETS.items()}
        return {**presets, **self.stage_models}

    @field_validator("conversions")
    @classmethod
    def _unique_conversions(cls, value: list[ConversionSpec]) -> list[ConversionSpec]:
        names = [c.name for c in value]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"conversion names must be unique: {', '.join(twice)} twice")
        return value

    @field_validator("touch_events")
    @classmethod
    def _known_touch_kinds(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        unknown = sorted(set(value) - set(TOUCH_KINDS))
        if unknown:
            raise ValueError(f"touch_events: unknown kind(s) {', '.join(unknown)}; choose from "
                             f"{', '.join(k for k in TOUCH_KINDS if k != 'identify_email')}")
        return {**TOUCH_EVENTS_DEFAULT, **value}

    @field_validator("bot_user_agent_patterns", "bot_user_agent_allow")
    @classmethod
    def _compiles(cls, value: list[str]) -> list[str]:
        for pattern in value:
            check_pattern(pattern)
        return value

    @field_validator("export_time_zone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            hint = did_you_mean(value, sorted(available_timezones()))
            raise ValueError(f"export_time_zone {value!r}{hint} is not an IANA time zone "
                             "(e.g. America/New_York)") from None
        return value

    @field_validator("meta_action_source")
    @classmethod
    def _known_action_source(cls, value: str) -> str:
        allowed = ("email", "website", "app", "phone_call", "chat", "physical_store",
                   "system_generated", "business_messaging", "other")
        if value not in allowed:
            raise ValueError(f"meta_action_source {value!r}{did_you_mean(value, allowed)}: "
                             f"choose from {', '.join(allowed)}")
        return value

    @field_validator("export_conversion_window_days", "export_push_urls")
    @classmethod
    def _known_destinations(cls, value: dict[str, Any]) -> dict[str, Any]:
        allowed = ("google-ads", "meta", "microsoft")
        for name in value:
            if name not in allowed:
                raise ValueError(f"destination {name!r}{did_you_mean(name, allowed)}: choose "
                                 f"from {', '.join(allowed)}")
        return value

    @field_validator("crm_webhook_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError(f"crm_webhook_url {value!r} must start with https:// (or http:// "
                             "for a relay on the same host)")
        return value or None

    @field_validator("database_url")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        if not value.startswith(("duckdb://", "spark://")):
            raise ValueError(
                f"database_url {value!r} must start with duckdb:// or spark:// "
                "(e.g. duckdb:///touchline.duckdb or spark://local[2])"
            )
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml = TomlConfigSettingsSource(settings_cls, toml_file=_config_file())
        return (init_settings, env_settings, toml)


def load_settings(**overrides: Any) -> Settings:
    """Build :class:`Settings`, turning validation failures into :class:`ConfigError`."""
    from pydantic import ValidationError

    from touchline.errors import ConfigError

    try:
        return Settings(**overrides)
    except ValidationError as exc:
        where = f"environment (TOUCHLINE_*) or {_config_file()}"
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"invalid touchline settings from {where}: {problems}") from None
