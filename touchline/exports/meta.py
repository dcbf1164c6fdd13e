"""Meta Conversions API: server events (JSON) and a validator mirroring Meta's documented rules.

Sources: "Server Event Parameters", developers.facebook.com/docs/marketing-api/conversions-api/
parameters/server-event (``event_name``; ``event_time`` a Unix timestamp in seconds, GMT, "up to
7 days before you send an event … If any event_time in data is greater than 7 days in the past,
we return an error for the entire request and process no events"; ``event_id`` deduplicates a
server event against the pixel's event of the same ``event_name``; ``action_source``), "Customer
Information Parameters" (``em``, ``ph``, ``fn``, ``ln``, ``ct``, ``zp``, ``country``: hashing
required; ``external_id``: hashing recommended; ``fbc``, ``fbp``: do not hash; the ``fbc`` format
``fb.1.<creation time in ms>.<fbclid>``) and "Custom Data Parameters" (``value`` a number,
``currency`` ISO 4217). A request carries at most 1000 events.

Meta publishes no list of symbolic error names for these rules (its API answers with
``error_user_msg`` text), so the reject codes name the documented rule: ``event_time_too_old``,
``event_time_in_future``, ``user_data_not_hashed``, ``user_data_missing``, ``fbclid_invalid``,
``value_not_a_number``, ``currency_invalid``, ``duplicate_event_id``. Meta takes no
retraction or restatement of a sent event, so this destination has no adjustments.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

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
    run_rules,
)

DESTINATION = "meta"
#: Meta refuses the whole request when one event is older than this
MAX_EVENT_AGE = timedelta(days=7)
#: at most this many events in one request
MAX_EVENTS = 1000
_FBCLID = re.compile(r"^[A-Za-z0-9_-]+$")


def epoch_seconds(at: datetime) -> int:
    """``at`` (UTC) as Unix seconds: Meta's ``event_time``."""
    return int(at.replace(tzinfo=UTC).timestamp())


def fbc(row: Conversion) -> str | None:
    """The ``fbc`` parameter for a row whose click is an fbclid: ``fb.1.<click ms>.<fbclid>``.

    >>> fbc(Conversion("c", "Lead", datetime(2026, 3, 6), 1, "USD", click_id="IwAR0x",
    ...                click_id_param="fbclid", click_at=datetime(2026, 3, 5, 20)))
    'fb.1.1772740800000.IwAR0x'
    """
    if row.click_id_param != "fbclid" or not row.click_id or row.click_at is None:
        return None
    return f"fb.1.{epoch_seconds(row.click_at) * 1000}.{row.click_id}"


def user_data(row: Conversion, region: str) -> dict[str, object]:
    """``user_data``: every field Meta hashes, normalised then SHA-256 hashed (lists of one
    value, as Meta accepts); ``fbc`` as it is."""
    email = hashing.hashed(hashing.meta_email(row.email)) or (
        row.email_sha256.strip().lower() if row.email_sha256 else None)
    values = {
        "em": email,
        # a source's phone digest is of the number with its "+", which Meta's rule drops
        "ph": hashing.hashed(hashing.meta_phone(row.phone, region)),
        "fn": hashing.hashed(hashing.meta_name(row.first_name)),
        "ln": hashing.hashed(hashing.meta_name(row.last_name)),
        "ct": hashing.hashed(hashing.meta_city(row.city)),
        "zp": hashing.hashed(hashing.meta_zip(row.zip_code, row.country)),
        "country": hashing.hashed(hashing.meta_country(row.country)),
        "external_id": hashing.hashed(row.external_id.strip() if row.external_id else None),
    }
    out: dict[str, object] = {k: [v] for k, v in values.items() if v}
    click = fbc(row)
    if click:
        out["fbc"] = click
    return out


def server_event(row: Conversion, options: WriteOptions) -> dict[str, object]:
    """One server event; ``event_id`` is the order id (else the conversion id), the id the
    site's pixel must send as ``eventID`` for Meta to count the purchase once."""
    event: dict[str, object] = {
        "event_name": row.name,
        "event_time": epoch_seconds(row.converted_at),
        "event_id": row.order_id or row.conversion_id,
        "action_source": options.meta_action_source,
        "user_data": user_data(row, options.phone_region),
    }
    value = number(row.value)
    if value is not None:
        event["custom_data"] = {"value": value, "currency": row.currency}
    return event


def write_events(rows: Sequence[Conversion], options: WriteOptions) -> str:
    """The Conversions API request body: ``{"data": [server events]}``."""
    body = {"data": [server_event(row, options) for row in rows]}
    return orjson.dumps(body, option=orjson.OPT_INDENT_2).decode() + "\n"


def _age(row: Conversion, options: CheckOptions) -> tuple[str, str | None, str] | None:
    if options.now - row.converted_at > MAX_EVENT_AGE:
        return ("event_time_too_old", "event_time",
                f"the conversion ({row.converted_at}) is more than 7 days old: Meta would "
                "refuse the whole request")
    if row.converted_at > options.now:
        return ("event_time_in_future", "event_time",
                f"the conversion ({row.converted_at}) is later than now ({options.now})")
    return None


def _people(row: Conversion, _: CheckOptions) -> tuple[str, str | None, str] | None:
    if row.email_sha256 is not None and not hashing.is_sha256(row.email_sha256):
        return ("user_data_not_hashed", "em",
                "the e-mail digest is not SHA-256 hex: Meta takes no unhashed contact data")
    if not (row.email or row.phone or row.email_sha256 or row.external_id
            or row.click_id_param == "fbclid"):
        return ("user_data_missing", "user_data",
                "no e-mail, phone, external id or fbclid to match the event to a person")
    return None


def _click(row: Conversion, _: CheckOptions) -> tuple[str, str | None, str] | None:
    if row.click_id_param == "fbclid" and not _FBCLID.match(row.click_id or ""):
        return ("fbclid_invalid", "fbc",
                f"fbclid {str(row.click_id)[:40]!r} is not a click id Meta issued")
    return None


def _custom_data(row: Conversion, _: CheckOptions) -> tuple[str, str | None, str] | None:
    parsed = number(row.value)
    if parsed is None or parsed < 0:
        return ("value_not_a_number", "custom_data.value",
                f"value {row.value!r} is not a number of 0 or more")
    if not known_currency(row.currency):
        return ("currency_invalid", "custom_data.currency",
                f"currency {row.currency!r} is not an ISO 4217 code")
    return None


RULES: tuple[Rule, ...] = (_age, _people, _click, _custom_data)


def validate_events(rows: Sequence[Conversion], options: CheckOptions) -> Checked:
    """Meta's rules checked before the request: one bad event fails Meta's whole request."""
    return run_rules(rows, options, RULES,
                     duplicate=lambda r: (r.name, r.order_id or r.conversion_id),
                     duplicate_code="duplicate_event_id")


FORMATS = (
    Format("meta-capi-json", 1, DESTINATION, ".json",
           "Conversions API server events (hashed user data, fbc, event_id for pixel dedup)",
           write_events, validate_events, pushable=True),
)
