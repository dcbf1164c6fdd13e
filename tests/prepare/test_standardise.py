"""standardise steps: hand-computed spellings for UTMs, URLs, contacts and currencies."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from touchline import engine
from touchline.errors import ConfigError
from touchline.prepare import reference, standardise

from .conftest import working

URL_CASES = [
    ("HTTPS://Shop.COM/Pricing/?utm_source=x&plan=pro#top", "https://shop.com/Pricing?plan=pro"),
    ("https://shop.com/?gclid=abc", "https://shop.com"),
    ("https://shop.com/a?x=1&fbclid=f&y=2", "https://shop.com/a?x=1&y=2"),
    ("https://shop.com/a?_gax=1", "https://shop.com/a?_gax=1"),
    ("/relative/path/?utm_medium=cpc", "/relative/path"),
    ("not a url", "not a url"),
    (None, None),
]


def test_normalise_url(con) -> None:  # type: ignore[no-untyped-def]
    cases = engine.load_table(con, "url_cases", pa.table({
        "case": pa.array(range(len(URL_CASES)), pa.int64()),
        "raw": pa.array([raw for raw, _ in URL_CASES], pa.string())}))
    got = cases.select("case", url=standardise.normalise_url(cases.raw)).order_by("case")
    got = [None if v is None or v != v else v for v in got.url.to_pandas().tolist()]
    assert got == [expected for _, expected in URL_CASES]


def test_utm_fields_are_trimmed_lowered_and_aliased_with_an_audit(con) -> None:  # type: ignore[no-untyped-def]
    events = working(con, [
        {"anonymous_id": "a", "timestamp": "09:00", "utm_source": " Google ", "utm_medium": "CPC"},
        {"anonymous_id": "a", "timestamp": "09:01", "utm_source": "FB",
         "utm_medium": "Paid-Search"},
        {"anonymous_id": "a", "timestamp": "09:02", "utm_source": "", "utm_campaign": "Spring 🌸"},
    ])
    out, audit = standardise.standardise_utm(
        events, source_aliases=reference.aliases("source"),
        medium_aliases=reference.aliases("medium"))
    got = out.order_by("message_id").select("utm_source", "utm_medium", "utm_campaign").to_pandas()
    assert got.utm_source.tolist() == ["google", "facebook", None]
    assert got.utm_medium.tolist() == ["cpc", "cpc", None]
    assert got.utm_campaign.tolist()[2] == "spring 🌸"
    rows = {(r.field, r.old_value, r.new_value, r.reason_code)
            for r in audit.to_pandas().itertuples()}
    assert ("utm_source", "FB", "facebook", "utm_source_alias") in rows
    assert ("utm_source", "", None, "empty_value") in rows
    assert ("utm_medium", "Paid-Search", "cpc", "utm_medium_alias") in rows


def test_urls_give_path_referrer_host_and_click_id_even_for_huge_referrers(con) -> None:  # type: ignore[no-untyped-def]
    huge = "https://Blog.Example.org/" + "x" * 10_000
    events = working(con, [
        {"anonymous_id": "a", "timestamp": "09:00", "url": "https://shop.com/p/?gclid=g",
         "gclid": "g", "referrer": huge},
        {"anonymous_id": "a", "timestamp": "09:01", "url": "https://shop.com", "fbclid": "f",
         "referrer": "android-app://com.google"},
        {"anonymous_id": "a", "timestamp": "09:02", "url": "https://shop.com/app",
         "gbraid": "0AAAAA"},
    ])
    out, audit = standardise.standardise_urls(events)
    got = out.order_by("message_id").to_pandas()
    assert got.page_url.tolist() == ["https://shop.com/p", "https://shop.com",
                                     "https://shop.com/app"]
    assert got.page_path.tolist() == ["/p", "/", "/app"]
    assert got.referrer_host.tolist() == ["blog.example.org", "com.google", None]
    assert got.click_id_type.tolist() == ["google", "meta", "google"]
    # Google takes each in its own column: the parameter is kept beside the platform
    assert got.click_id_param.tolist() == ["gclid", "fbclid", "gbraid"]
    assert audit.row_count.to_pandas().tolist() == [1]


def test_contacts_become_lower_case_emails_and_e164_phones(con) -> None:  # type: ignore[no-untyped-def]
    events = working(con, [
        {"anonymous_id": "a", "timestamp": "09:00", "email": " Ann@Acme.COM ",
         "phone": "(202) 555-0143"},
        {"anonymous_id": "a", "timestamp": "09:01", "email": "not-an-email", "phone": "call me"},
        {"anonymous_id": "a", "timestamp": "09:02", "phone": "+44 20 7946 0958"},
    ])
    phones = engine.load_table(con, "phones", standardise.e164_table(
        ["(202) 555-0143", "call me", "+44 20 7946 0958"], "US"))
    out, audit = standardise.standardise_contacts(events, phones)
    got = out.order_by("message_id").select("email", "phone").to_pandas()
    assert got.email.tolist() == ["ann@acme.com", None, None]
    assert got.phone.tolist() == ["+12025550143", None, "+442079460958"]
    counts = {r.reason_code: r.row_count for r in audit.to_pandas().itertuples()}
    assert counts == {"email_normalised": 1, "invalid_email": 1, "phone_normalised": 2,
                      "invalid_phone": 1}


def test_revenue_is_converted_to_the_reporting_currency(con) -> None:  # type: ignore[no-untyped-def]
    events = working(con, [
        {"anonymous_id": "a", "timestamp": "09:00", "revenue": 100.0, "currency": "eur"},
        {"anonymous_id": "a", "timestamp": "09:01", "revenue": 50.0},
        {"anonymous_id": "a", "timestamp": "09:02", "revenue": 10.0, "currency": "XXX"},
    ])
    rates = {"EUR": 1.035 / 1.0, "USD": 1.0}
    out, audit = standardise.convert_currency(events, rates=rates, reporting="USD")
    got = out.order_by("message_id").revenue.to_pandas().tolist()
    assert got[:2] == pytest.approx([103.5, 50.0])
    assert got[2] != got[2]  # unknown currency: null, never 1:1
    assert audit.to_pandas()[["old_value", "row_count"]].values.tolist() == [["XXX", 1]]


def test_user_rates_override_and_extend_the_shipped_ones(tmp_path: Path) -> None:
    rates_file = tmp_path / "rates.csv"
    rates_file.write_text("currency,usd_per_unit\nEUR,2.0\nxts,0.5\n")
    rates = reference.currency_rates("EUR", rates_file)
    assert (rates["EUR"], rates["XTS"], rates["USD"]) == (1.0, 0.25, 0.5)
    rates_file.write_text("currency,usd_per_unit\nEUR,1.1\nGBP,abc\n")
    with pytest.raises(ConfigError, match=r"rates.csv, line 3: usd_per_unit 'abc' of 'GBP'"):
        reference.currency_rates("USD", rates_file)
    rates_file.write_text("currency,rate\nEUR,1.1\n")
    with pytest.raises(ConfigError, match="missing column"):
        reference.currency_rates("USD", rates_file)


def test_user_source_aliases_extend_and_override_the_shipped_ones(tmp_path: Path) -> None:
    aliases_file = tmp_path / "aliases.csv"
    aliases_file.write_text("alias,source\nAWIN.com,awin\nfb,meta\n")
    shipped = reference.aliases("source")
    assert shipped["fb"] == shipped["l.facebook.com"] == shipped["m.facebook.com"] == "facebook"
    mine = reference.aliases("source", aliases_file)
    assert (mine["awin.com"], mine["fb"], mine["l.facebook.com"]) == ("awin", "meta", "facebook")
