"""The mess of real data is there, and counted."""

from __future__ import annotations

from collections import Counter
from urllib.parse import parse_qs, urlparse

from sim_kit import Output

from touchline.simulate.mess import BOT_AGENTS


def _queries(output: Output) -> list[dict[str, list[str]]]:
    return [parse_qs(urlparse(e["context"]["page"]["url"]).query) for e in output.events
            if e["type"] == "page" and "page" in e["context"]]


def test_source_aliases_and_mixed_case_utms_appear(b2c: Output) -> None:
    sources = Counter(e["context"]["campaign"]["source"] for e in b2c.events
                      if "campaign" in e["context"])
    facebook = {s for s in sources if "facebook" in s.lower() or s.lower() in ("fb",)}
    assert len(facebook) >= 3
    assert any(s != s.strip() or s != s.lower() for s in sources)
    assert b2c.truth["mess"]["utm_source_variant"] > 0


def test_click_ids_ride_in_the_landing_url(b2c: Output) -> None:
    keys = {k for q in _queries(b2c) for k in q}
    assert {"gclid", "fbclid", "msclkid", "ttclid"} <= keys
    gclid_only = [q for q in _queries(b2c) if "gclid" in q and "utm_source" not in q]
    assert gclid_only


def test_bots_use_real_crawler_agents(b2c: Output) -> None:
    agents = {e["context"].get("userAgent") or e["context"].get("user_agent")
              for e in b2c.events}
    assert {a for a, _, _ in BOT_AGENTS} <= agents


def test_skewed_clocks_show_in_sent_at_not_in_timestamp(b2c: Output) -> None:
    skewed = {e["messageId"] for e in b2c.events if e["originalTimestamp"] != e["timestamp"]}
    assert len(skewed) == b2c.truth["mess"]["clock_skew"]


def test_both_revenue_field_names_appear(b2c: Output) -> None:
    orders = [e["properties"] for e in b2c.events if e.get("event") == "Order Completed"]
    assert any("revenue" in o for o in orders) and any("total" in o for o in orders)


def test_callers_are_written_in_several_formats(b2c: Output) -> None:
    import csv

    with open(b2c.path / "calls.csv", newline="") as handle:
        numbers = [row["caller_number"] for row in csv.DictReader(handle)]
    assert any(n.startswith("+1") for n in numbers)
    assert any(n.startswith("(") for n in numbers)
