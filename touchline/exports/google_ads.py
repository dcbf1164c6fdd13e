"""Google Ads: offline click conversions, adjustments, enhanced conversions for leads, and the
Data Manager API request body; one validator mirroring Google's upload errors.

Sources (each format's layout and each error name come from these):

- "Import conversions from ad clicks into Google Ads using files", support.google.com/google-ads/
  answer/7014069: the ``Parameters:TimeZone=…`` row (a time zone id, recommended over offsets
  because of daylight saving time), the ``Google Click ID`` column, Conversion Name / Time /
  Value / Currency; a zone given in the time itself wins over the Parameters row.
- Google Ads API ``ClickConversion`` (gclid, gbraid, wbraid: one of them, never two) and
  ``ConversionAdjustment`` ("yyyy-mm-dd hh:mm:ss+|-hh:mm"; adjustment types RETRACTION and
  RESTATEMENT, the file template's RETRACT and RESTATE; order_id identifies the conversion;
  adjustments work with gclids and gbraids, not wbraids), developers.google.com/google-ads/api/
  docs/conversions/upload-adjustments.
- ``ConversionUploadErrorEnum.ConversionUploadError`` (UNPARSEABLE_GCLID, UNPARSEABLE_GBRAID,
  UNPARSEABLE_WBRAID, GBRAID_WBRAID_BOTH_SET, CONVERSION_PRECEDES_EVENT, EXPIRED_EVENT: the
  click is older than the conversion action's click-through window (counted back from the
  conversion, and from the upload: Google takes no conversion of a click older than that),
  TOO_RECENT_EVENT: the click is less than 6 hours old, DUPLICATE_ORDER_ID,
  DUPLICATE_CLICK_CONVERSION_IN_REQUEST, ORDER_ID_CONTAINS_PII,
  INVALID_USER_IDENTIFIER: user data not SHA-256 hashed after
  normalisation), ``FieldError`` (REQUIRED, INVALID_VALUE) and ``CurrencyCodeError``
  (UNSUPPORTED), developers.google.com/google-ads/api/reference/rpc/latest/.
- Data Manager API ``events:ingest`` (``destinations`` with ``operatingAccount`` and
  ``productDestinationId``, ``encoding``, ``events`` of ``transactionId``, ``eventTimestamp``
  RFC 3339, ``adIdentifiers`` gclid/gbraid/wbraid, ``userData.userIdentifiers``,
  ``conversionValue``, ``currency``, ``eventSource``; at most 2000 events a request),
  developers.google.com/data-manager/api/reference/rest/v1/events/ingest, and its "Format user
  data" page for hashing (:mod:`touchline.exports.hashing`).
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import orjson

from touchline.exports import hashing
from touchline.exports.formats import (
    Checked,
    CheckOptions,
    Conversion,
    Format,
    Rule,
    WriteOptions,
    known_currency,
    number,
    older_than,
    run_rules,
)
from touchline.store import csv_cell

DESTINATION = "google-ads"
#: the click id parameters Google takes, each in its own column
CLICK_PARAMS = ("gclid", "gbraid", "wbraid")
#: Google records a click only hours after it happened (TOO_RECENT_EVENT)
TOO_RECENT = timedelta(hours=6)
#: Google's click ids are URL-safe base64 text
_CLICK_ID = re.compile(r"^[A-Za-z0-9_-]+$")
#: at most this many events in one Data Manager request
DATA_MANAGER_MAX_EVENTS = 2000


def conversion_time(at: datetime, time_zone: str) -> str:
    """``at`` (UTC) in ``time_zone`` as Google writes a conversion time, offset included.

    >>> conversion_time(datetime(2026, 3, 20, 10, 0), "America/New_York")
    '2026-03-20 06:00:00-04:00'
    >>> conversion_time(datetime(2026, 1, 20, 10, 0), "America/New_York")
    '2026-01-20 05:00:00-05:00'
    """
    local = at.replace(tzinfo=UTC).astimezone(ZoneInfo(time_zone))
    offset = local.strftime("%z")
    return f"{local:%Y-%m-%d %H:%M:%S}{offset[:3]}:{offset[3:]}"


def amount(value: float | str | None) -> str:
    """A money amount as the files write it: two decimals."""
    parsed = number(value)
    return "" if parsed is None else f"{parsed:.2f}"


def _csv(header: Sequence[str], rows: Sequence[Sequence[object]], time_zone: str) -> str:
    buffer = io.StringIO()
    buffer.write(f"Parameters:TimeZone={time_zone}\n")
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def _text(value: str | None) -> str:
    """A free-text cell (conversion name, order id): never read as a spreadsheet formula."""
    return "" if value is None else str(csv_cell(value))


CLICKS_HEADER = ("Google Click ID", "GBRAID", "WBRAID", "Conversion Name", "Conversion Time",
                 "Conversion Value", "Conversion Currency", "Order ID")


def write_clicks(rows: Sequence[Conversion], options: WriteOptions) -> str:
    """The offline click conversions CSV: the Parameters row, then one row per conversion with
    its click id in the column of its parameter (gclid, gbraid or wbraid).

    Click ids are written as they are (the validator refused any that is not URL-safe base64,
    so none can read as a formula); names and order ids are made formula-safe.
    """
    out = []
    for row in rows:
        ids = [row.click_id if row.click_id_param == p else "" for p in CLICK_PARAMS]
        out.append([*ids, _text(row.name), conversion_time(row.converted_at, options.time_zone),
                    amount(row.value), row.currency or "", _text(row.order_id)])
    return _csv(CLICKS_HEADER, out, options.time_zone)


ADJUSTMENTS_HEADER = ("Order ID", "Conversion Name", "Adjustment Type", "Adjustment Time",
                      "Adjusted Value", "Adjusted Value Currency")
_ADJUSTMENT_TYPES = {"restatement": "RESTATE", "retraction": "RETRACT"}


def write_adjustments(rows: Sequence[Conversion], options: WriteOptions) -> str:
    """The conversion adjustments CSV: RESTATE with the new total value, or RETRACT (no value,
    no currency: Google refuses them on a retraction), each naming the conversion by its order
    id, at the adjustment's time (after the conversion's)."""
    out = []
    for row in rows:
        kind = _ADJUSTMENT_TYPES[row.kind]
        at = row.adjusted_at or row.converted_at
        restated = kind == "RESTATE"
        out.append([_text(row.order_id), _text(row.name), kind,
                    conversion_time(at, options.time_zone),
                    amount(row.value) if restated else "", (row.currency or "") if restated
                    else ""])
    return _csv(ADJUSTMENTS_HEADER, out, options.time_zone)


def email_digest(row: Conversion) -> str | None:
    """The row's e-mail as Google hashes it (a source's digest when only that is known)."""
    return hashing.hashed(hashing.google_email(row.email)) or (
        row.email_sha256.strip().lower() if row.email_sha256 else None)


def phone_digest(row: Conversion, region: str) -> str | None:
    """The row's phone as Google hashes it (a source's digest when only that is known)."""
    return hashing.hashed(hashing.google_phone(row.phone, region)) or (
        row.phone_sha256.strip().lower() if row.phone_sha256 else None)


LEADS_HEADER = ("Google Click ID", "Email", "Phone Number", "Conversion Name", "Conversion Time",
                "Conversion Value", "Conversion Currency", "Order ID")


def write_leads(rows: Sequence[Conversion], options: WriteOptions) -> str:
    """Enhanced conversions for leads: the lead's normalised, SHA-256 hashed e-mail and phone
    (and its gclid when known) with the conversion; Google matches them to the signed-in user
    who clicked."""
    out = []
    for row in rows:
        gclid = row.click_id if row.click_id_param == "gclid" else ""
        out.append([gclid, email_digest(row) or "", phone_digest(row, options.phone_region) or "",
                    _text(row.name), conversion_time(row.converted_at, options.time_zone),
                    amount(row.value), row.currency or "", _text(row.order_id)])
    return _csv(LEADS_HEADER, out, options.time_zone)


def rfc3339(at: datetime) -> str:
    """``at`` (UTC) as an RFC 3339 timestamp (``2026-03-20T10:00:00Z``)."""
    return at.replace(tzinfo=None).isoformat(timespec="seconds") + "Z"


def write_data_manager(rows: Sequence[Conversion], options: WriteOptions) -> str:
    """The Data Manager API ``events:ingest`` request body (JSON) for one conversion action:
    ``productDestinationId`` is the conversion's name (the conversion action id), the
    ``operatingAccount`` the Google Ads customer id of the settings; user identifiers hashed,
    hex-encoded (``encoding: HEX``)."""
    events = []
    for row in rows:
        event: dict[str, object] = {
            "transactionId": row.order_id or row.conversion_id,
            "eventTimestamp": rfc3339(row.converted_at),
            "eventSource": "OTHER",
        }
        if row.click_id and row.click_id_param in CLICK_PARAMS:
            event["adIdentifiers"] = {row.click_id_param: row.click_id}
        identifiers = [{"emailAddress": d} for d in [email_digest(row)] if d] + [
            {"phoneNumber": d} for d in [phone_digest(row, options.phone_region)] if d]
        if identifiers:
            event["userData"] = {"userIdentifiers": identifiers}
        value = number(row.value)
        if value is not None:
            event["conversionValue"] = value
        if row.currency:
            event["currency"] = row.currency
        events.append(event)
    names = sorted({row.name for row in rows})
    body = {
        "destinations": [{
            "reference": name,
            "operatingAccount": {"accountType": "GOOGLE_ADS",
                                 "accountId": options.google_ads_customer_id},
            "productDestinationId": name,
        } for name in names],
        "encoding": "HEX",
        "events": events,
    }
    if len(names) > 1:  # several actions: each event names its destination
        for row, event in zip(rows, events, strict=True):
            event["destinationReferences"] = [row.name]
    return orjson.dumps(body, option=orjson.OPT_INDENT_2).decode() + "\n"


# ---- the validator ---------------------------------------------------------------------------
def _click_present(row: Conversion, _: CheckOptions) -> tuple[str, str | None, str] | None:
    if not row.click_id or row.click_id_param not in CLICK_PARAMS:
        return ("FieldError.REQUIRED", "click_id",
                "a click conversion needs a Google Click ID, a GBRAID or a WBRAID")
    return None


def _click_parses(row: Conversion, _: CheckOptions) -> tuple[str, str | None, str] | None:
    if row.click_id and row.click_id_param in CLICK_PARAMS and not _CLICK_ID.match(row.click_id):
        name = row.click_id_param
        return (f"UNPARSEABLE_{name.upper()}", name,
                f"{name} {row.click_id[:40]!r} is not a click id Google issued (URL-safe base64 "
                "text); was it cut or edited?")
    return None


def _click_timing(row: Conversion, options: CheckOptions) -> tuple[str, str | None, str] | None:
    if not row.click_id or row.click_at is None:
        return None
    if row.converted_at < row.click_at:
        return ("CONVERSION_PRECEDES_EVENT", "converted_at",
                f"the conversion ({row.converted_at}) precedes its click ({row.click_at})")
    if older_than(row.click_at, row.converted_at, options.window_days):
        return ("EXPIRED_EVENT", "click_at",
                f"the click ({row.click_at}) is more than {options.window_days} days before the "
                f"conversion ({row.converted_at}): outside the click-through window")
    if older_than(row.click_at, options.now, options.window_days):
        return ("EXPIRED_EVENT", "click_at",
                f"the click ({row.click_at}) is more than {options.window_days} days before "
                f"now ({options.now}): Google takes a click's conversions only within the "
                "click-through window counted back from the upload")
    if options.now - row.click_at < TOO_RECENT:
        return ("TOO_RECENT_EVENT", "click_at",
                f"the click ({row.click_at}) is less than 6 hours old: Google has not recorded "
                "it yet; it is sent by an export after that")
    return None


def _event_age(row: Conversion, options: CheckOptions) -> tuple[str, str | None, str] | None:
    """A conversion without a click time (a lead matched on e-mail and phone): its own time is
    the latest its click can be, so it is too old when it is older than the window from now."""
    if row.click_at is None and older_than(row.converted_at, options.now, options.window_days):
        return ("EXPIRED_EVENT", "converted_at",
                f"the conversion ({row.converted_at}) is more than {options.window_days} days "
                f"before now ({options.now}): its click is outside the click-through window")
    return None


def _value(row: Conversion, _: CheckOptions) -> tuple[str, str | None, str] | None:
    if row.kind == "retraction":
        return None
    parsed = number(row.value)
    if parsed is None or parsed < 0:
        return ("FieldError.INVALID_VALUE", "value",
                f"conversion value {row.value!r} is not a number of 0 or more")
    return None


def _currency(row: Conversion, _: CheckOptions) -> tuple[str, str | None, str] | None:
    if row.kind != "retraction" and not known_currency(row.currency):
        return ("CurrencyCodeError.UNSUPPORTED", "currency",
                f"currency {row.currency!r} is not an ISO 4217 code")
    return None


def _order_id(row: Conversion, _: CheckOptions) -> tuple[str, str | None, str] | None:
    if row.order_id and "@" in row.order_id:
        return ("ORDER_ID_CONTAINS_PII", "order_id",
                "the order id looks like an e-mail address: Google refuses personal data there")
    return None


def _hashed_identifiers(row: Conversion, _: CheckOptions) -> tuple[str, str | None, str] | None:
    for name in ("email_sha256", "phone_sha256"):
        value = getattr(row, name)
        if value is not None and not hashing.is_sha256(value):
            return ("INVALID_USER_IDENTIFIER", name,
                    f"{name} is not a SHA-256 digest in hex: personal data must be normalised "
                    "and hashed before it is sent")
    return None


def _identified(row: Conversion, _: CheckOptions) -> tuple[str, str | None, str] | None:
    if not (row.email or row.phone or row.email_sha256 or row.phone_sha256):
        return ("FieldError.REQUIRED", "email",
                "an enhanced conversion for leads needs the lead's e-mail or phone")
    return None


def _click_or_person(row: Conversion, options: CheckOptions
                     ) -> tuple[str, str | None, str] | None:
    if row.click_id and row.click_id_param in CLICK_PARAMS:
        return None
    return _identified(row, options) and ("FieldError.REQUIRED", "click_id",
                                          "an event needs a click id, an e-mail or a phone")


def _adjustment(row: Conversion, _: CheckOptions) -> tuple[str, str | None, str] | None:
    if row.adjusted_at is not None and row.adjusted_at <= row.converted_at:
        return ("ADJUSTMENT_PRECEDES_CONVERSION", "adjusted_at",
                f"the adjustment ({row.adjusted_at}) is not after the conversion "
                f"({row.converted_at})")
    if not row.order_id:
        return ("FieldError.REQUIRED", "order_id", "an adjustment names its conversion by "
                "the order id it was uploaded with")
    return None


_COMMON: tuple[Rule, ...] = (_value, _currency, _order_id, _hashed_identifiers)
CLICK_RULES: tuple[Rule, ...] = (_click_present, _click_parses, _click_timing, _event_age,
                                  *_COMMON)
LEAD_RULES: tuple[Rule, ...] = (_identified, _click_parses, _click_timing, _event_age, *_COMMON)
EVENT_RULES: tuple[Rule, ...] = (_click_or_person, _click_parses, _click_timing, _event_age,
                                 *_COMMON)
ADJUSTMENT_RULES: tuple[Rule, ...] = (_adjustment, _value, _currency)


def _order_key(row: Conversion) -> object:
    return row.order_id or None


def validate_clicks(rows: Sequence[Conversion], options: CheckOptions) -> Checked:
    """Google's click-conversion upload errors, checked before the upload; adjustments get
    Google's adjustment checks instead. A repeated order id: DUPLICATE_ORDER_ID."""
    return _validate(rows, options, CLICK_RULES)


def validate_leads(rows: Sequence[Conversion], options: CheckOptions) -> Checked:
    """As :func:`validate_clicks`, for leads matched on e-mail and phone: a click id is
    optional, the lead's e-mail or phone is not."""
    return _validate(rows, options, LEAD_RULES)


def validate_events(rows: Sequence[Conversion], options: CheckOptions) -> Checked:
    """As :func:`validate_clicks`, for Data Manager events: a click id or the person's e-mail
    or phone."""
    return _validate(rows, options, EVENT_RULES)


def _validate(rows: Sequence[Conversion], options: CheckOptions,
              rules: Sequence[Rule]) -> Checked:
    new = [r for r in rows if r.kind == "conversion"]
    adjusted = [r for r in rows if r.kind != "conversion"]
    first = run_rules(new, options, rules, duplicate=_order_key,
                      duplicate_code="DUPLICATE_ORDER_ID")
    second = run_rules(adjusted, options, ADJUSTMENT_RULES, duplicate=_order_key,
                       duplicate_code="DUPLICATE_ORDER_ID")
    return Checked(first.kept + second.kept, first.rejected + second.rejected)


FORMATS = (
    Format("google-ads-clicks-csv", 1, DESTINATION, ".csv",
           "offline click conversions (Google Click ID / GBRAID / WBRAID) for a file upload",
           write_clicks, validate_clicks, clicks=CLICK_PARAMS,
           write_adjustments=write_adjustments),
    Format("google-ads-leads-csv", 1, DESTINATION, ".csv",
           "enhanced conversions for leads: hashed e-mail and phone (gclid when known)",
           write_leads, validate_leads, write_adjustments=write_adjustments),
    Format("google-data-manager-json", 1, DESTINATION, ".json",
           "the Data Manager API events:ingest request body (click ids and hashed contacts)",
           write_data_manager, validate_events, write_adjustments=write_adjustments,
           pushable=True),
)
