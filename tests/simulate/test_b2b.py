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
