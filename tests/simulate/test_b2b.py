"""B2B mode: buying committees, long journeys, deals per account, work e-mails."""

from __future__ import annotations

import csv

from sim_kit import Output


def test_journeys_are_long_as_in_b2b(b2b: Output) -> None:
    counts = b2b.truth["counts"]
    assert 24 <= counts["median_touches_per_journey"] <= 36
    assert 150 <= counts["median_journey_days"] <= 230


def test_deals_belong_to_accounts_and_name_their_contacts(b2b: Output) -> None:
    with open(b2b.path / "deals.csv", newline="") as handle:
        deals = list(csv.DictReader(handle))
    assert {d["status"] for d in deals} == {"won", "lost", "open"}
    for deal in deals:
        emails = deal["contact_emails"].split(";")
        assert all(e.endswith("@" + deal["account_domain"]) for e in emails if e)
        stages = [deal[k] for k in ("lead_at", "mql_at", "sql_at", "opportunity_at",
                                    "closed_at") if deal[k]]
        assert stages == sorted(stages)
        assert deal["account_id"].startswith("acc_")


def test_identified_stakeholders_use_their_company_domain(b2b: Output) -> None:
    domains = {e["userId"]: e["traits"]["domain"] for e in b2b.events if e["type"] == "group"}
    identifies = [e for e in b2b.events if e["type"] == "identify" and "email" in e["traits"]]
    checked = 0
    for e in identifies:
        if e["userId"] in domains:
            assert e["traits"]["email"].strip().lower().endswith("@" + domains[e["userId"]])
            checked += 1
    assert checked > 100
    assert b2b.truth["counts"]["accounts"] == 500


def test_webinars_carry_the_campaign_that_names_them_offline(b2b: Output) -> None:
    """A webinar attendance synced from the CRM has no page: its campaign (zoom / webinar /
    the webinar's slug) is what lets the channel rules name it Offline rather than Direct,
    in the NDJSON context and in the Parquet columns alike."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    webinars = [e for e in b2b.events if e.get("event") == "Webinar Attended"]
    assert len(webinars) >= b2b.truth["channels"]["offline"]["touches"] > 0
    slugs = {"attribution_101", "beyond_last_click", "journey_analytics_live",
             "customer_story_helix_labs"}
    for event in webinars:
        campaign = event["context"]["campaign"]
        assert (campaign["source"], campaign["medium"]) == ("zoom", "webinar")
        assert campaign["name"] in slugs
        assert campaign["name"] == event["properties"]["webinar_name"].lower().replace(
            ":", "").replace(" ", "_")
    # no other page-less record carries a campaign
    others = [e for e in b2b.events if e.get("event") != "Webinar Attended"
              and "page" not in e["context"] and "campaign" in e["context"]]
    assert others == []
    table = pq.read_table(b2b.path / "events.parquet",
                          columns=["event", "utm_source", "utm_medium", "utm_campaign"])
    rows = table.filter(pc.equal(table["event"], "Webinar Attended")).to_pylist()
    assert len(rows) == len(webinars)
    assert {(r["utm_source"], r["utm_medium"]) for r in rows} == {("zoom", "webinar")}
    assert {r["utm_campaign"] for r in rows} == slugs
