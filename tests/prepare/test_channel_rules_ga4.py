"""GA4's default channel group, rule by rule, as Google publishes it (answer 9756891), and the
``channel_rules = "ga4"`` setting that reproduces it exactly; on both engines.

Every expectation is read off Google's table by hand: the first rule, in Google's order, whose
condition holds. Sources are lower-case (touchline lower-cases UTMs before the rules).
"""

from __future__ import annotations

from datetime import datetime

import pyarrow as pa
import pytest
from ibis.backends import BaseBackend

from touchline import engine
from touchline.config import Settings
from touchline.errors import ConfigError
from touchline.prepare import channels, reference, steps
from touchline.prepare.base import Context

# (source, medium, campaign, click_id_type, recorded_by)
Case = tuple[str, str, str | None, str | None, str]


def classify(con: BaseBackend, cases: list[Case], rules: list[channels.Rule]) -> list[str]:
    """The channel group of each entrance, with the shipped source categories."""
    columns = list(zip(*cases, strict=True))
    data = pa.table({
        "case": pa.array(range(len(cases)), pa.int64()),
        **{name: pa.array(values, pa.string()) for name, values in zip(
            ("source", "medium", "campaign", "click_id_type", "recorded_by"), columns,
            strict=True)},
    })
    table = engine.load_table(con, "ga4_cases", data)
    lookup = engine.load_table(con, "ga4_cats", channels.category_table(
        columns[0], reference.source_categories()))
    tagged = table.left_join(lookup, table.source == lookup._cat_source).drop("_cat_source")
    tagged = tagged.mutate(source_category=tagged.source_category.fill_null("||"))
    got = channels.classify_channel(tagged, rules).order_by("case").to_pyarrow()
    return got.column("channel").to_pylist()


GA4 = channels.default_rules(preset="ga4")
TOUCHLINE = channels.default_rules()

#: one case per published rule, and the edges where the order of the rules decides
RULE_CASES: list[tuple[Case, str]] = [
    # Direct: source exactly (direct) AND medium one of (not set), (none); tested first
    (("(direct)", "(none)", None, None, "web"), "Direct"),
    (("(direct)", "(not set)", None, None, "web"), "Direct"),
    # ... so a campaign naming cross-network on a direct visit does not make it Cross-network
    (("(direct)", "(none)", "cross-network-brand", None, "web"), "Direct"),
    # Cross-network: campaign contains cross-network
    (("google", "cpc", "pmax-cross-network", None, "web"), "Cross-network"),
    # Paid Shopping: (shopping site OR shopping campaign) AND paid medium
    (("amazon", "cpc", None, None, "web"), "Paid Shopping"),
    (("partner", "retargeting", "spring-shop", None, "web"), "Paid Shopping"),
    # Paid Search / Social / Video: site list AND paid medium
    (("bing", "ppc", None, None, "web"), "Paid Search"),
    (("linkedin", "paid_social", None, None, "web"), "Paid Social"),
    (("youtube", "cpv", None, None, "web"), "Paid Video"),
    # Display: medium one of display, banner, expandable, interstitial, cpm
    (("criteo", "interstitial", None, None, "web"), "Display"),
    # Paid Other: paid medium, no list
    (("partner", "paid", None, None, "web"), "Paid Other"),
    # Organic Shopping: a shopping site with no medium at all, or a shopping campaign
    (("amazon", "(not set)", None, None, "web"), "Organic Shopping"),
    (("etsy.com", "(none)", None, None, "web"), "Organic Shopping"),
    (("partner", "referral", "shopping-week", None, "web"), "Organic Shopping"),
    # Organic Social / Video / Search: site list OR medium
    (("forum", "sm", None, None, "web"), "Organic Social"),
    (("vimeo", "(not set)", None, None, "web"), "Organic Video"),
    (("blog", "how-to-video", None, None, "web"), "Organic Video"),
    (("ecosia", "referral", None, None, "web"), "Organic Search"),
    (("partner", "organic", None, None, "web"), "Organic Search"),
    # the Google Search app's package, as a source: a search site, not a referral
    (("com.google.android.googlequicksearchbox", "referral", None, None, "web"),
     "Organic Search"),
    # Referral: medium one of referral, app, link
    (("blog.example.org", "link", None, None, "web"), "Referral"),
    # Email: source or medium email, e-mail, e_mail, e mail
    (("e mail", "(not set)", None, None, "web"), "Email"),
    (("crm", "e_mail", None, None, "web"), "Email"),
    (("awin", "affiliate", None, None, "web"), "Affiliates"),
    (("podcast", "audio", None, None, "web"), "Audio"),
    (("twilio", "sms", None, None, "web"), "SMS"),
    (("app", "web-push", None, None, "web"), "Mobile Push Notifications"),
    (("app", "notification-centre", None, None, "web"), "Mobile Push Notifications"),
    (("firebase", "(not set)", None, None, "web"), "Mobile Push Notifications"),
    (("weird", "unknownmedium", None, None, "web"), "Unassigned"),
]


def test_each_published_ga4_rule_names_its_channel_in_googles_order(con: BaseBackend) -> None:
    assert classify(con, [c for c, _ in RULE_CASES], GA4) == [g for _, g in RULE_CASES]


def test_touchline_rules_agree_with_ga4_on_every_published_case(con: BaseBackend) -> None:
    """touchline's additions only add channels GA4 lacks: GA4's own cases keep their group."""
    assert classify(con, [c for c, _ in RULE_CASES], TOUCHLINE) == [g for _, g in RULE_CASES]


#: where the two presets differ: touchline's channels and click-id rule, GA4's literal lists
DIFFERENCES: list[tuple[Case, str, str]] = [
    # a tracked call arrives as (direct)/(none): touchline knows it was a phone call
    (("(direct)", "(none)", None, None, "calls"), "Phone", "Direct"),
    (("hubspot", "webinar", None, None, "web"), "Offline", "Unassigned"),
    (("chatgpt", "referral", None, None, "web"), "AI Assistant", "Referral"),
    # GA4 reads only the UTMs: a gclid beside utm_medium=referral stays a referral
    (("partner", "referral", None, "google", "web"), "Paid Search", "Referral"),
]


def test_ga4_preset_has_none_of_touchlines_additions(con: BaseBackend) -> None:
    cases = [c for c, _, _ in DIFFERENCES]
    assert classify(con, cases, TOUCHLINE) == [t for _, t, _ in DIFFERENCES]
    assert classify(con, cases, GA4) == [g for _, _, g in DIFFERENCES]


def test_ga4_preset_ships_exactly_googles_18_groups_with_direct_first() -> None:
    groups = [r.channel_group for r in GA4]
    assert len(set(groups)) == 18
    assert groups[:2] == ["Direct", "Cross-network"]
    assert {r.channel_group for r in TOUCHLINE} - set(groups) == {
        "Phone", "Offline", "AI Assistant"}
    # the additions that must precede Direct (calls and offline records are (direct)/(none))
    assert [r.channel_group for r in TOUCHLINE][:3] == ["Phone", "Offline", "Direct"]


def test_an_unknown_preset_is_a_config_error_naming_the_choices() -> None:
    with pytest.raises(ConfigError, match="touchline, ga4"):
        channels.default_rules(preset="ga5")
    with pytest.raises(ValueError, match="channel_rules"):
        Settings(channel_rules="ga5")  # type: ignore[arg-type]


def entrance(con: BaseBackend, referrer_host: str | None, click_id_type: str | None = None,
             preset: str = "touchline") -> tuple[str, str]:
    visits = engine.load_table(con, "ga4_visits", pa.table({
        c: pa.array([v], pa.string()) for c, v in (
            ("referrer_host", referrer_host), ("landing_host", "shop.com"), ("utm_source", None),
            ("utm_medium", None), ("utm_campaign", None), ("click_id_type", click_id_type))}))
    hosts = engine.load_table(con, "ga4_hosts", channels.host_table(
        [h for h in (referrer_host, "shop.com") if h], categories=reference.source_categories(),
        source_aliases=reference.aliases("source")))
    row = channels.entrance(visits, hosts, own_domains=[], preset=preset).to_pyarrow().to_pylist()
    return row[0]["source"], row[0]["medium"]


@pytest.mark.parametrize(
    ("click_id_type", "referrer_host", "touchline", "ga4"),
    [
        # gclid: Google Ads auto-tagging, which GA4 reads too
        ("google", None, ("google", "cpc"), ("google", "cpc")),
        # msclkid: GA4 knows no Microsoft click id; without UTMs it sees the referrer only
        ("microsoft", "www.bing.com", ("bing", "cpc"), ("bing", "organic")),
        ("tiktok", None, ("tiktok", "paid_social"), ("(direct)", "(none)")),
        # a bare fbclid with no referrer (an in-app browser): touchline's facebook referral
        ("meta", None, ("facebook", "referral"), ("(direct)", "(none)")),
    ],
)
def test_ga4_preset_reads_only_the_click_ids_ga4_reads(
    con: BaseBackend, click_id_type: str, referrer_host: str | None,
    touchline: tuple[str, str], ga4: tuple[str, str],
) -> None:
    assert entrance(con, referrer_host, click_id_type) == touchline
    assert entrance(con, referrer_host, click_id_type, preset="ga4") == ga4


def test_the_google_search_app_referrer_is_google_organic_not_a_referral(
    con: BaseBackend,
) -> None:
    """``android-app://com.google.android.googlequicksearchbox/https/www.google.com/``: the
    host is the app's package name, which no suffix list knows; it was a referral."""
    assert entrance(con, "com.google.android.googlequicksearchbox") == ("google", "organic")


@pytest.mark.parametrize(
    ("preset", "expected"),
    [("touchline", {"news": "email", "forum": "social-media", "google": "cpc"}),
     ("ga4", {"news": "newsletter", "forum": "social_media", "google": "sem"})],
)
def test_ga4_preset_keeps_the_medium_as_sent(
    con: BaseBackend, tmp_path, preset: str, expected: dict[str, str]  # type: ignore[no-untyped-def]
) -> None:
    """GA4 groups utm_medium=newsletter as Unassigned; touchline's alias makes it Email."""
    events = engine.load_table(con, "ga4_utm", pa.table({
        "utm_source": pa.array(["news", "forum", "google"], pa.string()),
        "utm_medium": pa.array(["Newsletter", "social_media", "SEM"], pa.string()),
        **{c: pa.array([None] * 3, pa.string())
           for c in ("utm_campaign", "utm_term", "utm_content", "utm_id")},
    }))
    settings = Settings(database_url="duckdb://", temp_directory=tmp_path, channel_rules=preset)
    ctx = Context(con, settings, datetime(2025, 3, 1), "run")
    out = steps.standardise_utm({"events": events}, ctx).tables["events"]
    rows = out.select("utm_source", "utm_medium").to_pyarrow().to_pylist()
    assert {r["utm_source"]: r["utm_medium"] for r in rows} == expected
