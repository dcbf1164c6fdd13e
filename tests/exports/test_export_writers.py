"""The writers against golden files built from the platforms' documented examples, and the
hashing against the documented normalisations and digests. Pure: no engine.

A golden file is the exact text a platform is sent; updating one is a reviewed diff
(``TOUCHLINE_UPDATE_GOLDEN=1`` rewrites them).
"""

from __future__ import annotations

import hashlib
import os
from datetime import datetime
from pathlib import Path

import orjson
import pytest

from touchline.exports import FORMATS, google_ads, hashing, meta, microsoft
from touchline.exports.formats import Conversion, WriteOptions

GOLDEN = Path(__file__).parent / "golden"
OPTIONS = WriteOptions(time_zone="America/New_York", google_ads_customer_id="1234567890")
#: Meta's rules with the digests Snap's Conversions API page publishes for them
PERSON_EMAIL_DIGEST = "542d240129883c019e106e3b1b2d3f3cb3537c43c425364de8e951d5a3083345"
UK_PHONE_DIGEST_PREFIX = "dc008fda46e2e64002cf2f82a4906236282d4"


def _golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("TOUCHLINE_UPDATE_GOLDEN"):
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
    assert text == path.read_text(), f"{name} differs from its golden file"


# three clicks, one per Google column; times either side of the US change to summer time
GOOGLE_ROWS = [
    Conversion("deal_won:D1", "Closed deal", datetime(2026, 3, 20, 10, 0), 1800.0, "USD",
               order_id="D1", click_id="Cj0KCQiA-abc_123", click_id_param="gclid",
               click_at=datetime(2026, 3, 5, 20, 0)),
    Conversion("purchase:m9", "Closed deal", datetime(2026, 1, 20, 10, 0), 49.5, "EUR",
               order_id="O-2", click_id="0AAAAAB-cde", click_id_param="gbraid",
               click_at=datetime(2026, 1, 19, 10, 0)),
    Conversion("purchase:m10", "=SUM(A1)", datetime(2026, 7, 1, 0, 30), 0.0, "USD",
               order_id="O-3", click_id="CjkKEQiA", click_id_param="wbraid",
               click_at=datetime(2026, 6, 30, 0, 30)),
]


def test_google_click_csv_puts_each_click_id_in_its_column_in_the_declared_zone() -> None:
    text = google_ads.write_clicks(GOOGLE_ROWS, OPTIONS)
    _golden("google_ads_clicks.csv", text)
    lines = text.splitlines()
    assert lines[0] == "Parameters:TimeZone=America/New_York"
    # 10:00 UTC is 06:00 in New York in summer time (from 8 March 2026), 05:00 in winter
    assert lines[2] == "Cj0KCQiA-abc_123,,,Closed deal,2026-03-20 06:00:00-04:00,1800.00,USD,D1"
    assert lines[3] == ",0AAAAAB-cde,,Closed deal,2026-01-20 05:00:00-05:00,49.50,EUR,O-2"
    # the evening before in New York; a name that reads as a formula is defused
    assert lines[4] == ",,CjkKEQiA,'=SUM(A1),2026-06-30 20:30:00-04:00,0.00,USD,O-3"


def test_google_adjustments_restate_with_the_new_total_and_retract_without_a_value() -> None:
    adjusted = [
        Conversion("deal_won:D1", "Closed deal", datetime(2026, 3, 20, 10), 1500.0, "USD",
                   order_id="D1", kind="restatement", adjusted_at=datetime(2026, 4, 1, 12)),
        Conversion("purchase:m9", "Closed deal", datetime(2026, 1, 20, 10), 0.0, "EUR",
                   order_id="O-2", kind="retraction", adjusted_at=datetime(2026, 2, 1, 12)),
    ]
    text = google_ads.write_adjustments(adjusted, OPTIONS)
    _golden("google_ads_adjustments.csv", text)
    assert text.splitlines()[2:] == [
        "D1,Closed deal,RESTATE,2026-04-01 08:00:00-04:00,1500.00,USD",
        "O-2,Closed deal,RETRACT,2026-02-01 07:00:00-05:00,,"]


def test_google_hashing_follows_the_documented_examples() -> None:
    # Data Manager API, "Format user data": the documented inputs and their normal forms
    assert hashing.google_email("cloudy.sanfrancisco+shopping@gmail.com") == (
        "cloudysanfrancisco@gmail.com")
    assert hashing.google_email("user.name+NYC@Example.com") == "user.name+nyc@example.com"
    assert hashing.google_email(" Cloudy.SF @GoogleMail.com") == "cloudysf@googlemail.com"
    assert hashing.google_phone("(800)555-0100") == "+18005550100"
    assert hashing.google_phone("call me") is None


def test_enhanced_conversions_for_leads_carry_the_normalised_sha256_digests() -> None:
    lead = Conversion("lead:m3", "Lead", datetime(2026, 3, 5, 20, 3), 0.0, "USD",
                      order_id="m3", email="Cloudy.SanFrancisco+shopping@gmail.com",
                      phone="(800)555-0100", click_id="Cj0KCQiA-abc_123",
                      click_id_param="gclid")
    text = google_ads.write_leads([lead], OPTIONS)
    _golden("google_ads_leads.csv", text)
    cells = text.splitlines()[2].split(",")
    assert cells[1] == hashlib.sha256(b"cloudysanfrancisco@gmail.com").hexdigest()
    assert cells[2] == hashlib.sha256(b"+18005550100").hexdigest()
    # a source that kept only a digest: it is passed on as given
    hashed_only = Conversion("lead:m4", "Lead", datetime(2026, 3, 5), 0.0, "USD",
                             email_sha256=PERSON_EMAIL_DIGEST.upper())
    assert google_ads.write_leads([hashed_only], OPTIONS).splitlines()[2].split(",")[1] == (
        PERSON_EMAIL_DIGEST)


def test_data_manager_request_names_the_account_the_action_and_each_identifier() -> None:
    rows = [GOOGLE_ROWS[0], Conversion(
        "lead:m3", "Closed deal", datetime(2026, 3, 5, 20, 3), 10.0, "USD", order_id="m3",
        email="cloudy.sanfrancisco+shopping@gmail.com", phone="(800)555-0100")]
    text = google_ads.write_data_manager(rows, OPTIONS)
    _golden("google_data_manager.json", text)
    body = orjson.loads(text)
    assert body["destinations"] == [{
        "reference": "Closed deal",
        "operatingAccount": {"accountType": "GOOGLE_ADS", "accountId": "1234567890"},
        "productDestinationId": "Closed deal"}]
    assert body["encoding"] == "HEX"
    first, second = body["events"]
    assert first["adIdentifiers"] == {"gclid": "Cj0KCQiA-abc_123"}
    assert first["eventTimestamp"] == "2026-03-20T10:00:00Z"
    assert (first["conversionValue"], first["currency"]) == (1800.0, "USD")
    assert second["userData"]["userIdentifiers"] == [
        {"emailAddress": hashlib.sha256(b"cloudysanfrancisco@gmail.com").hexdigest()},
        {"phoneNumber": hashlib.sha256(b"+18005550100").hexdigest()}]


def test_meta_hashing_gives_the_published_digests() -> None:
    assert hashing.sha256_hex(hashing.meta_email(" Person@Example.com ")) == PERSON_EMAIL_DIGEST
    assert hashing.meta_phone("+44 844 412 4653") == "448444124653"
    assert hashing.sha256_hex("448444124653").startswith(UK_PHONE_DIGEST_PREFIX)
    assert hashing.meta_city("San Francisco") == "sanfrancisco"
    assert hashing.meta_zip("94025-1234", "US") == "94025"
    assert hashing.meta_country("United States") == "us"
    assert hashing.meta_name("O'Brien") == "obrien"


def test_meta_server_event_hashes_user_data_and_leaves_fbc_plain() -> None:
    row = Conversion("purchase:m7", "Purchase", datetime(2026, 3, 6, 10, 0), 300.0, "USD",
                     order_id="O-1", email=" Person@Example.com ", phone="+44 844 412 4653",
                     first_name="John", city="San Francisco", zip_code="94025-1234",
                     country="US", external_id="p_0123", click_id="IwAR0x",
                     click_id_param="fbclid", click_at=datetime(2026, 3, 5, 20, 0))
    text = meta.write_events([row], WriteOptions())
    _golden("meta_capi.json", text)
    event = orjson.loads(text)["data"][0]
    assert event["event_time"] == 1772791200  # seconds, not milliseconds
    assert event["event_id"] == "O-1"  # the pixel's eventID for the same purchase
    assert event["action_source"] == "system_generated"
    user = event["user_data"]
    assert user["em"] == [PERSON_EMAIL_DIGEST]
    assert user["ph"][0].startswith(UK_PHONE_DIGEST_PREFIX)
    assert user["country"] == [hashlib.sha256(b"us").hexdigest()]
    assert user["fbc"] == "fb.1.1772740800000.IwAR0x"
    assert event["custom_data"] == {"value": 300.0, "currency": "USD"}


MSCLKID = "f894f652ea334e739002f7167ab8f8e3"


def test_microsoft_bulk_file_follows_the_documented_example() -> None:
    # the Offline Conversion record's own example: USD, My Goal Name, 4/1/2020 6:50:54 PM, 10
    rows = [
        Conversion("purchase:m1", "My Goal Name", datetime(2020, 4, 1, 18, 50, 54), 10.0, "USD",
                   click_id=MSCLKID, click_id_param="msclkid"),
        Conversion("purchase:m2", "My Goal Name", datetime(2020, 4, 1, 9, 5, 0), 25.0, "USD",
                   click_id=MSCLKID.upper(), click_id_param="msclkid", kind="restatement",
                   adjusted_at=datetime(2020, 4, 3, 0, 0)),
    ]
    text = microsoft.write_bulk(rows, WriteOptions())
    _golden("microsoft_bulk.csv", text)
    lines = text.splitlines()
    assert lines[1].startswith("Format Version,,,,,6.0,")
    assert lines[2] == ("Offline Conversion,,,,purchase:m1,,USD,My Goal Name,4/1/2020 6:50:54 PM,"
                        f"10.00,{MSCLKID},,,,")
    assert lines[3].endswith(",Restate,4/3/2020 12:00:00 AM,25.00,USD")


def test_microsoft_api_payload_times_are_utc_datetimes() -> None:
    row = Conversion("purchase:m1", "My Goal Name", datetime(2020, 4, 1, 18, 50, 54), 10.0,
                     "USD", click_id=MSCLKID, click_id_param="msclkid", email="A@B.com")
    text = microsoft.write_api([row], WriteOptions())
    _golden("microsoft_api.json", text)
    sent = orjson.loads(text)["OfflineConversions"][0]
    assert sent["ConversionTime"] == "2020-04-01T18:50:54Z"
    assert sent["HashedEmailAddress"] == hashlib.sha256(b"a@b.com").hexdigest()
    retract = microsoft.write_api_adjustments([Conversion(
        "purchase:m1", "My Goal Name", datetime(2020, 4, 1, 18, 50, 54), 0.0, "USD",
        click_id=MSCLKID, click_id_param="msclkid", kind="retraction",
        adjusted_at=datetime(2020, 4, 2))], WriteOptions())
    assert orjson.loads(retract)["OfflineConversionAdjustments"][0] == {
        "AdjustmentCurrencyCode": None, "AdjustmentTime": "2020-04-02T00:00:00Z",
        "AdjustmentType": "Retract", "AdjustmentValue": None,
        "ConversionName": "My Goal Name", "ConversionTime": "2020-04-01T18:50:54Z",
        "MicrosoftClickId": MSCLKID}


@pytest.mark.parametrize("layout", sorted(FORMATS), ids=str)
def test_every_format_writes_an_empty_upload_and_is_versioned(layout: str) -> None:
    fmt = FORMATS[layout]
    assert fmt.versioned == f"{fmt.id}/v{fmt.version}"
    text = fmt.write([], OPTIONS)
    assert text.strip(), f"{layout}: an empty upload still has its header or body"
    if fmt.suffix == ".json":
        orjson.loads(text)
