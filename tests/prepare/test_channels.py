"""GA4 default channel group, one case per group plus the tricky edges, on both engines."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from touchline import engine
from touchline.prepare import channels, reference

# (source, medium, campaign, click_id_type, recorded_by) -> (channel group, rule)
CASES = [
    (("google", "cpc", "cross-network-pmax", None, "web"), ("Cross-network", "cross_network")),
    (("(direct)", "(none)", None, None, "web"), ("Direct", "direct")),
    (("amazon", "cpc", None, None, "web"), ("Paid Shopping", "paid_shopping")),
    (("partner", "ppc", "summer-shopping", None, "web"), ("Paid Shopping", "paid_shopping")),
    (("google", "cpc", "brand", "google", "web"), ("Paid Search", "paid_search")),
    (("partner", "referral", None, "microsoft", "web"),
     ("Paid Search", "paid_search_click_id")),
    # cpc vs paid_social: the source decides, not the medium's wording
    (("facebook", "cpc", None, None, "web"), ("Paid Social", "paid_social")),
    (("facebook", "paid_social", None, None, "web"), ("Paid Social", "paid_social")),
    (("google", "paid_social", None, None, "web"), ("Paid Search", "paid_search")),
    (("youtube", "cpv", None, None, "web"), ("Paid Video", "paid_video")),
    (("criteo", "display", None, None, "web"), ("Display", "display")),
    (("criteo", "cpm", None, None, "web"), ("Display", "display")),
    (("partner", "paid", None, None, "web"), ("Paid Other", "paid_other")),
    (("amazon", "referral", None, None, "web"), ("Organic Shopping", "organic_shopping")),
    (("facebook", "referral", None, None, "web"), ("Organic Social", "organic_social")),
    (("forum", "social", None, None, "web"), ("Organic Social", "organic_social")),
    (("youtube", "referral", None, None, "web"), ("Organic Video", "organic_video")),
    (("chatgpt", "referral", None, None, "web"), ("AI Assistant", "ai_assistant")),
    (("google", "organic", None, None, "web"), ("Organic Search", "organic_search")),
    (("blog.example.org", "referral", None, None, "web"), ("Referral", "referral")),
    (("newsletter", "email", None, None, "web"), ("Email", "email")),
    (("e-mail", "(not set)", None, None, "web"), ("Email", "email")),
    (("awin", "affiliate", None, None, "web"), ("Affiliates", "affiliates")),
    (("spotify", "audio", None, None, "web"), ("Audio", "audio")),
    (("sms", "(not set)", None, None, "web"), ("SMS", "sms")),
    (("app", "push", None, None, "web"), ("Mobile Push Notifications", "mobile_push")),
    (("firebase", "(not set)", None, None, "web"), ("Mobile Push Notifications", "mobile_push")),
    (("(direct)", "(none)", None, None, "calls"), ("Phone", "phone_call")),
    # a call whose lease or properties name a campaign is that campaign's channel
    (("google", "cpc", "plumbing", None, "calls"), ("Paid Search", "paid_search")),
    (("hubspot", "webinar", None, None, "web"), ("Offline", "offline")),
    # a webinar attendance a CRM syncs (the simulator's): no page, the sync's campaign
    (("zoom", "webinar", "attribution_101", None, "crm"), ("Offline", "offline")),
    # a CRM record without a campaign (a sale closed on the phone) stays Direct
    (("(direct)", "(none)", None, None, "crm"), ("Direct", "direct")),
    (("weird", "unknownmedium", None, None, "web"), ("Unassigned", "unassigned")),
]


def classify(con, cases, rules):  # type: ignore[no-untyped-def]
    cats = reference.source_categories()
    fields = list(zip(*[c[0] for c in cases], strict=True))
    data = pa.table({
        "case": pa.array(range(len(cases)), pa.int64()),
        **{name: pa.array(values, pa.string()) for name, values in zip(
            ("source", "medium", "campaign", "click_id_type", "recorded_by"), fields, strict=True)},
    })
    table = engine.load_table(con, "channel_cases", data)
    lookup = engine.load_table(con, "channel_cats", channels.category_table(
        [s for s in fields[0] if s], cats))
    tagged = table.left_join(lookup, table.source == lookup._cat_source).drop("_cat_source")
    tagged = tagged.mutate(source_category=tagged.source_category.fill_null("||"))
    got = channels.classify_channel(tagged, rules).order_by("case").to_pandas()
    return list(zip(got.channel, got.channel_rule, strict=True))


def test_ga4_default_channel_group_table(con) -> None:  # type: ignore[no-untyped-def]
    assert classify(con, CASES, channels.default_rules()) == [c[1] for c in CASES]


def test_rule_table_ships_the_18_ga4_groups_with_direct_before_cross_network() -> None:
    rules = channels.default_rules()
    ga4 = {r.channel_group for r in rules} - {"Phone", "Offline", "AI Assistant"}
    assert len(ga4) == 18
    groups = [r.channel_group for r in rules]
    assert groups.index("Direct") < groups.index("Cross-network")


def test_custom_rules_take_precedence(con, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    custom = tmp_path / "rules.csv"
    custom.write_text("priority,channel_group,rule,clause,field,op,value\n"
                      "1,Partners,partner_awin,1,source,eq,awin\n")
    got = classify(con, [CASES[22]], channels.default_rules(custom))
    assert got == [("Partners", "partner_awin")]


def test_custom_values_are_lower_cased_but_regexes_kept_as_written(tmp_path: Path) -> None:
    custom = tmp_path / "rules.csv"
    custom.write_text("priority,channel_group,rule,clause,field,op,value\n"
                      "1,Partners,partner,1,source,in,AWIN|CJ\n"
                      "2,Codes,coded,1,campaign,regex,^\\D+-\\d+$\n")
    rules = {r.name: r.clauses[0][0].value for r in channels.load_rules(custom)}
    assert rules == {"partner": "awin|cj", "coded": r"^\D+-\d+$"}


def entrances(con, landings):  # type: ignore[no-untyped-def]
    """(source, medium) of each landing, all in one query."""
    cols = ("referrer_host", "landing_host", "utm_source", "utm_medium", "utm_campaign",
            "click_id_type")
    data = pa.table({"case": pa.array(range(len(landings)), pa.int64()),
                     **{c: pa.array([x.get(c) for x in landings], pa.string()) for c in cols}})
    visits = engine.load_table(con, "visits", data)
    hosts = sorted({h for x in landings for h in (x.get("referrer_host"), x.get("landing_host"))
                    if h})
    lookup = engine.load_table(con, "hosts", channels.host_table(
        hosts, categories=reference.source_categories(),
        source_aliases=reference.aliases("source")))
    got = channels.entrance(visits, lookup, own_domains=[]).order_by("case").to_pandas()
    return list(zip(got.source, got.medium, strict=True))


def test_entrance_source_follows_utm_then_click_id_then_referrer(con) -> None:  # type: ignore[no-untyped-def]
    cases = [
        ({"utm_source": "newsletter", "utm_medium": "email", "click_id_type": "google"},
         ("newsletter", "email")),
        ({"click_id_type": "google"}, ("google", "cpc")),
        # fbclid without UTMs proves no paid click: a facebook referral, i.e. Organic Social
        ({"click_id_type": "meta"}, ("facebook", "referral")),
        ({"referrer_host": "www.google.co.uk", "landing_host": "shop.com"},
         ("google", "organic")),
        ({"referrer_host": "l.facebook.com", "landing_host": "shop.com"},
         ("facebook", "referral")),
        ({"referrer_host": "mail.google.com", "landing_host": "shop.com"},
         ("mail.google.com", "email")),
        ({"referrer_host": "www.shop.com", "landing_host": "shop.com"}, ("(direct)", "(none)")),
        ({}, ("(direct)", "(none)")),
    ]
    assert entrances(con, [c[0] for c in cases]) == [c[1] for c in cases]
