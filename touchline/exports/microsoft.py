"""Microsoft Advertising offline conversions: the Bulk file (CSV) and the Campaign Management
API payload (JSON), MSCLKID-based, with a validator mirroring Microsoft's error names.

Sources: "Offline Conversion Record - Bulk", learn.microsoft.com/advertising/bulk-service/
offline-conversion (columns Type, Client Id, Conversion Currency Code, Conversion Name,
Conversion Time, Conversion Value, Microsoft Click Id; the ``Format Version`` row 6.0; Adjustment
Type ``Restate`` / ``Retract`` with Adjustment Time, Value and Currency Code in the same file;
times in UTC, the documented example written ``4/1/2020 6:50:54 PM``; a conversion time within
the last 90 days, later than the click and within the goal's conversion window; a repeat of
one MicrosoftClickId and ConversionTime is ignored), the ``OfflineConversion`` and
``OfflineConversionAdjustment`` data objects of ``ApplyOfflineConversions`` /
``ApplyOfflineConversionAdjustments`` (JSON, ``ConversionTime`` an xs:dateTime in UTC), and the
status names of ``DailySummary`` (campaign-management-service/dailysummary):
OfflineConversionMSClickIdNullOrEmpty, OfflineConversionMSClickIdInvalid,
OfflineConversionValueInvalid, OfflineConversionCurrencyCodeInvalid,
FutureConversionTimeCannotBeSet, OfflineConversionTimeOutOfWindow,
ConversionTimeEarlierThanClickTime, ClickIdDateTimeOutsideGoalConversionWindow,
ConversionEmailAddressIsNotHashed, ConversionPhoneNumberIsNotHashed,
OfflineConversionAdjustmentTimeEarlierThanConversionTime. An MSCLKID is "a unique 32 characters
long GUID" (hex).
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Sequence
from datetime import datetime, timedelta

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

DESTINATION = "microsoft"
#: conversions older than this are refused whatever the goal's window
MAX_CONVERSION_AGE = timedelta(days=90)
_MSCLKID = re.compile(r"^[0-9a-fA-F]{32}$")
BULK_FORMAT_VERSION = "6.0"
BULK_HEADER = ("Type", "Status", "Id", "Parent Id", "Client Id", "Name",
               "Conversion Currency Code", "Conversion Name", "Conversion Time",
               "Conversion Value", "Microsoft Click Id", "Adjustment Type", "Adjustment Time",
               "Adjustment Value", "Adjustment Currency Code")
_ADJUSTMENT_TYPES = {"restatement": "Restate", "retraction": "Retract"}


def bulk_time(at: datetime) -> str:
    """``at`` (UTC) as the Bulk file's documented example writes a time.

    >>> bulk_time(datetime(2020, 4, 1, 18, 50, 54))
    '4/1/2020 6:50:54 PM'
    """
    hour = at.hour % 12 or 12
    return (f"{at.month}/{at.day}/{at.year} {hour}:{at.minute:02d}:{at.second:02d} "
            f"{'PM' if at.hour >= 12 else 'AM'}")


def api_time(at: datetime) -> str:
    """``at`` (UTC) as an xs:dateTime in UTC (``2020-04-01T18:50:54Z``)."""
    return at.replace(tzinfo=None).isoformat(timespec="seconds") + "Z"


def _value(value: float | str | None) -> str:
    parsed = number(value)
    return "" if parsed is None else f"{parsed:.2f}"


def write_bulk(rows: Sequence[Conversion], options: WriteOptions) -> str:
    """The Bulk upload file: header, ``Format Version`` row, one ``Offline Conversion`` row per
    conversion; an adjustment repeats the original's name, time and click id with its
    Adjustment columns. ``Client Id`` carries the conversion id, so the results file names it."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(BULK_HEADER)
    writer.writerow(["Format Version", "", "", "", "", BULK_FORMAT_VERSION,
                     *[""] * (len(BULK_HEADER) - 6)])
    for row in rows:
        name = csv_cell(row.name)
        if row.kind == "conversion":
            writer.writerow(["Offline Conversion", "", "", "", row.conversion_id, "",
                             row.currency or "", name, bulk_time(row.converted_at),
                             _value(row.value), row.click_id or "", "", "", "", ""])
            continue
        restated = row.kind == "restatement"
        writer.writerow(["Offline Conversion", "", "", "", row.conversion_id, "", "", name,
                         bulk_time(row.converted_at), "", row.click_id or "",
                         _ADJUSTMENT_TYPES[row.kind],
                         bulk_time(row.adjusted_at or row.converted_at),
                         _value(row.value) if restated else "",
                         (row.currency or "") if restated else ""])
    return buffer.getvalue()


def _hashed_contacts(row: Conversion, region: str) -> dict[str, str]:
    email = hashing.hashed(hashing.meta_email(row.email)) or (
        row.email_sha256.strip().lower() if row.email_sha256 else None)
    phone = hashing.hashed(hashing.e164(row.phone, region)) or (
        row.phone_sha256.strip().lower() if row.phone_sha256 else None)
    return {k: v for k, v in (("HashedEmailAddress", email), ("HashedPhoneNumber", phone)) if v}


def write_api(rows: Sequence[Conversion], options: WriteOptions) -> str:
    """The ``ApplyOfflineConversions`` request body: ``{"OfflineConversions": [...]}``."""
    body = {"OfflineConversions": [{
        "ConversionCurrencyCode": row.currency,
        "ConversionName": row.name,
        "ConversionTime": api_time(row.converted_at),
        "ConversionValue": number(row.value),
        "MicrosoftClickId": row.click_id,
        **_hashed_contacts(row, options.phone_region),
    } for row in rows]}
    return orjson.dumps(body, option=orjson.OPT_INDENT_2).decode() + "\n"


def write_api_adjustments(rows: Sequence[Conversion], options: WriteOptions) -> str:
    """The ``ApplyOfflineConversionAdjustments`` request body."""
    body = {"OfflineConversionAdjustments": [{
        "AdjustmentCurrencyCode": row.currency if row.kind == "restatement" else None,
        "AdjustmentTime": api_time(row.adjusted_at or row.converted_at),
        "AdjustmentType": _ADJUSTMENT_TYPES[row.kind],
        "AdjustmentValue": number(row.value) if row.kind == "restatement" else None,
        "ConversionName": row.name,
        "ConversionTime": api_time(row.converted_at),
        "MicrosoftClickId": row.click_id,
    } for row in rows]}
    return orjson.dumps(body, option=orjson.OPT_INDENT_2).decode() + "\n"


def _click(row: Conversion, _: CheckOptions) -> tuple[str, str | None, str] | None:
    if not row.click_id or row.click_id_param != "msclkid":
        return ("OfflineConversionMSClickIdNullOrEmpty", "click_id",
                "an offline conversion needs its Microsoft Click Id (msclkid)")
    if not _MSCLKID.match(row.click_id):
        return ("OfflineConversionMSClickIdInvalid", "click_id",
                f"msclkid {row.click_id[:40]!r} is not a 32-character hex GUID")
    return None


def _time(row: Conversion, options: CheckOptions) -> tuple[str, str | None, str] | None:
    if row.kind != "conversion":
        if row.adjusted_at is not None and row.adjusted_at <= row.converted_at:
            return ("OfflineConversionAdjustmentTimeEarlierThanConversionTime", "adjusted_at",
                    f"the adjustment ({row.adjusted_at}) is not after the conversion "
                    f"({row.converted_at})")
        return None
    if row.converted_at > options.now:
        return ("FutureConversionTimeCannotBeSet", "converted_at",
                f"the conversion ({row.converted_at}) is later than now ({options.now})")
    if older_than(row.converted_at, options.now, MAX_CONVERSION_AGE.days):
        return ("OfflineConversionTimeOutOfWindow", "converted_at",
                f"the conversion ({row.converted_at}) is more than 90 days old")
    if row.click_at is not None and row.converted_at < row.click_at:
        return ("ConversionTimeEarlierThanClickTime", "converted_at",
                f"the conversion ({row.converted_at}) precedes its click ({row.click_at})")
    if older_than(row.click_at, row.converted_at, options.window_days):
        return ("ClickIdDateTimeOutsideGoalConversionWindow", "click_at",
                f"the click ({row.click_at}) is more than {options.window_days} days before "
                f"the conversion ({row.converted_at}): outside the goal's conversion window")
    return None


def _money(row: Conversion, _: CheckOptions) -> tuple[str, str | None, str] | None:
    if row.kind == "retraction":
        return None
    parsed = number(row.value)
    if parsed is None or parsed < 0:
        return ("OfflineConversionValueInvalid", "value",
                f"conversion value {row.value!r} is not a number of 0 or more")
    if not known_currency(row.currency):
        return ("OfflineConversionCurrencyCodeInvalid", "currency",
                f"currency {row.currency!r} is not an ISO 4217 code")
    return None


def _hashes(row: Conversion, _: CheckOptions) -> tuple[str, str | None, str] | None:
    if row.email_sha256 is not None and not hashing.is_sha256(row.email_sha256):
        return ("ConversionEmailAddressIsNotHashed", "email_sha256",
                "the e-mail digest is not SHA-256 hex")
    if row.phone_sha256 is not None and not hashing.is_sha256(row.phone_sha256):
        return ("ConversionPhoneNumberIsNotHashed", "phone_sha256",
                "the phone digest is not SHA-256 hex")
    return None


RULES: tuple[Rule, ...] = (_click, _time, _money, _hashes)


def validate(rows: Sequence[Conversion], options: CheckOptions) -> Checked:
    """Microsoft's offline-conversion errors, checked before the upload. A second conversion
    with the click id and time of one already in the upload would be ignored by Microsoft:
    refused here as ``duplicate_click_and_time``."""
    return run_rules(rows, options, RULES,
                     duplicate=lambda r: (r.kind, r.click_id, r.converted_at),
                     duplicate_code="duplicate_click_and_time")


FORMATS = (
    Format("microsoft-bulk-csv", 1, DESTINATION, ".csv",
           "Bulk file of Offline Conversion records (adjustments in the same file)",
           write_bulk, validate, clicks=("msclkid",), adjusts_inline=True),
    Format("microsoft-api-json", 1, DESTINATION, ".json",
           "ApplyOfflineConversions request body (adjustments: "
           "ApplyOfflineConversionAdjustments)", write_api, validate, clicks=("msclkid",),
           write_adjustments=write_api_adjustments, pushable=True),
)
