"""Each validator refuses what its platform documents it refuses, under the platform's own
error name, and keeps the rest. Pure: no engine."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

import pytest

from touchline.exports import google_ads, meta, microsoft
from touchline.exports.formats import CheckOptions, Conversion, Validator

NOW = datetime(2026, 3, 21, 12, 0)
OPTIONS = CheckOptions(now=NOW, window_days=90)
CONVERTED = datetime(2026, 3, 20, 10, 0)
CLICKED = datetime(2026, 3, 5, 20, 0)
MSCLKID = "f894f652ea334e739002f7167ab8f8e3"

GOOGLE = Conversion("deal_won:D1", "Closed deal", CONVERTED, 1800.0, "USD", order_id="D1",
                    click_id="Cj0KCQiA-abc_123", click_id_param="gclid", click_at=CLICKED)
META = Conversion("deal_won:D1", "Purchase", CONVERTED, 1800.0, "USD", order_id="D1",
                  email="john@gmail.com", external_id="p_1")
MICROSOFT = Conversion("deal_won:D1", "My Goal", CONVERTED, 1800.0, "USD",
                       click_id=MSCLKID, click_id_param="msclkid", click_at=CLICKED)

CASES = [
    # Google: ConversionUploadError, FieldError, CurrencyCodeError
    ("google", GOOGLE, {"click_id": None, "click_id_param": None}, "FieldError.REQUIRED"),
    ("google", GOOGLE, {"click_id": "Cj0K CQiA=="}, "UNPARSEABLE_GCLID"),
    ("google", GOOGLE, {"click_id": "0AA/A", "click_id_param": "gbraid"}, "UNPARSEABLE_GBRAID"),
    ("google", GOOGLE, {"click_at": CONVERTED + timedelta(hours=1)},
     "CONVERSION_PRECEDES_EVENT"),
    ("google", GOOGLE, {"click_at": CONVERTED - timedelta(days=91)}, "EXPIRED_EVENT"),
    # a conversion in the window of its click, but the click is too old to upload now
    ("google", GOOGLE, {"click_at": NOW - timedelta(days=91),
                        "converted_at": NOW - timedelta(days=89)}, "EXPIRED_EVENT"),
    ("google", GOOGLE, {"click_at": NOW - timedelta(hours=5), "converted_at": NOW},
     "TOO_RECENT_EVENT"),
    ("google", GOOGLE, {"value": "1,800"}, "FieldError.INVALID_VALUE"),
    ("google", GOOGLE, {"value": float("nan")}, "FieldError.INVALID_VALUE"),
    ("google", GOOGLE, {"currency": "usd"}, "CurrencyCodeError.UNSUPPORTED"),
    ("google", GOOGLE, {"currency": "XYZ"}, "CurrencyCodeError.UNSUPPORTED"),
    ("google", GOOGLE, {"order_id": "john@gmail.com"}, "ORDER_ID_CONTAINS_PII"),
    ("google", GOOGLE, {"email_sha256": "john@gmail.com"}, "INVALID_USER_IDENTIFIER"),
    ("google", GOOGLE, {"kind": "restatement", "adjusted_at": CONVERTED - timedelta(hours=1)},
     "ADJUSTMENT_PRECEDES_CONVERSION"),
    # Meta: the documented rules
    ("meta", META, {"converted_at": NOW - timedelta(days=7, seconds=1)}, "event_time_too_old"),
    ("meta", META, {"converted_at": NOW + timedelta(minutes=1)}, "event_time_in_future"),
    ("meta", META, {"email_sha256": "JOHN@gmail.com"}, "user_data_not_hashed"),
    ("meta", META, {"email": None, "external_id": None}, "user_data_missing"),
    ("meta", META, {"click_id": "Iw AR", "click_id_param": "fbclid", "click_at": CLICKED},
     "fbclid_invalid"),
    ("meta", META, {"value": "lots"}, "value_not_a_number"),
    ("meta", META, {"currency": "Dollars"}, "currency_invalid"),
    # Microsoft: the status names of its offline conversion reports
    ("microsoft", MICROSOFT, {"click_id": None}, "OfflineConversionMSClickIdNullOrEmpty"),
    ("microsoft", MICROSOFT, {"click_id": "abc"}, "OfflineConversionMSClickIdInvalid"),
    ("microsoft", MICROSOFT, {"converted_at": NOW + timedelta(hours=1)},
     "FutureConversionTimeCannotBeSet"),
    ("microsoft", MICROSOFT, {"converted_at": NOW - timedelta(days=91),
                              "click_at": NOW - timedelta(days=92)},
     "OfflineConversionTimeOutOfWindow"),
    ("microsoft", MICROSOFT, {"click_at": CONVERTED + timedelta(seconds=1)},
     "ConversionTimeEarlierThanClickTime"),
    ("microsoft", MICROSOFT, {"click_at": CONVERTED - timedelta(days=90, seconds=1)},
     "ClickIdDateTimeOutsideGoalConversionWindow"),
    ("microsoft", MICROSOFT, {"value": -1.0}, "OfflineConversionValueInvalid"),
    ("microsoft", MICROSOFT, {"currency": None}, "OfflineConversionCurrencyCodeInvalid"),
    ("microsoft", MICROSOFT, {"phone_sha256": "+12025550143"},
     "ConversionPhoneNumberIsNotHashed"),
]
VALIDATORS: dict[str, Validator] = {"google": google_ads.validate_clicks,
                                    "meta": meta.validate_events,
                                    "microsoft": microsoft.validate}


@pytest.mark.parametrize(("platform", "base", "change", "code"), CASES,
                         ids=[f"{c[0]}-{c[3]}" for c in CASES])
def test_validator_refuses_with_the_platforms_error_name(
        platform: str, base: Conversion, change: dict[str, object], code: str) -> None:
    good = replace(base, conversion_id="ok:1", order_id="ok-1")
    bad = replace(base, **change)  # type: ignore[arg-type]
    checked = VALIDATORS[platform]([good, bad], OPTIONS)
    assert checked.kept == [good]
    assert [(r.conversion, r.code) for r in checked.rejected] == [(bad, code)]
    assert checked.rejected[0].reason  # a sentence a person can act on


@pytest.mark.parametrize(("platform", "base", "code"), [
    ("google", GOOGLE, "DUPLICATE_ORDER_ID"),
    ("meta", META, "duplicate_event_id"),
    ("microsoft", MICROSOFT, "duplicate_click_and_time"),
])
def test_a_repeat_in_one_upload_is_refused_once_kept_once(
        platform: str, base: Conversion, code: str) -> None:
    again = replace(base, conversion_id="other:2")
    checked = VALIDATORS[platform]([base, again], OPTIONS)
    assert checked.kept == [base]
    assert [(r.conversion.conversion_id, r.code) for r in checked.rejected] == [("other:2", code)]


def test_leads_need_a_contact_not_a_click_and_a_retraction_needs_no_value() -> None:
    lead = replace(GOOGLE, click_id=None, click_id_param=None, click_at=None)
    assert google_ads.validate_leads([lead], OPTIONS).rejected[0].code == "FieldError.REQUIRED"
    with_email = replace(lead, email="john@gmail.com")
    assert google_ads.validate_leads([with_email], OPTIONS).kept == [with_email]
    retraction = replace(GOOGLE, kind="retraction", value=None, currency=None,
                         adjusted_at=NOW)
    assert google_ads.validate_clicks([retraction], OPTIONS).kept == [retraction]


def test_the_click_through_window_is_the_destinations_setting() -> None:
    thirty = CheckOptions(now=NOW, window_days=30)
    late = replace(GOOGLE, click_at=CONVERTED - timedelta(days=31))
    assert google_ads.validate_clicks([late], OPTIONS).kept == [late]
    assert google_ads.validate_clicks([late], thirty).rejected[0].code == "EXPIRED_EVENT"


def test_google_counts_the_window_back_from_now_for_leads_without_a_click_time() -> None:
    """The reviewer's export of 640-day-old purchases: each would have gone out and been logged
    as sent, though Google refuses any click older than the window on upload."""
    lead = replace(GOOGLE, click_id=None, click_id_param=None, click_at=None,
                   email="john@gmail.com")
    old = replace(lead, converted_at=NOW - timedelta(days=640))
    assert google_ads.validate_leads([lead], OPTIONS).kept == [lead]
    assert [r.code for r in google_ads.validate_leads([old], OPTIONS).rejected] == [
        "EXPIRED_EVENT"]
    old_click = replace(GOOGLE, click_at=NOW - timedelta(days=641),
                        converted_at=NOW - timedelta(days=640))
    assert [r.code for r in google_ads.validate_clicks([old_click], OPTIONS).rejected] == [
        "EXPIRED_EVENT"]
