"""KPIs by hand: every registered KPI against tiny tables whose figures are worked out in the
comments, on DuckDB and Spark."""

from __future__ import annotations

import math
from datetime import date
from typing import Any

import pandas as pd
import pytest
from factories import arrow_table
from ibis.backends import BaseBackend

from touchline import engine, store
from touchline.errors import MissingInputError, UnknownKPIError
from touchline.metrics.kpis import KPIS, compute, for_stage, lookup


def _rows(frame: pd.DataFrame, *keys: str) -> dict[Any, dict[str, Any]]:
    """``frame`` as {key (tuple of the key columns, or the one value): {column: value}},
    dates as ISO text and NaN as None, so expectations read plainly."""
    out = {}
    for record in frame.to_dict("records"):
        clean = {k: (None if isinstance(v, float) and math.isnan(v) else
                     v.isoformat()[:10] if hasattr(v, "isoformat") else v)
                 for k, v in record.items()}
        key = tuple(clean.pop(k) for k in keys)
        out[key[0] if len(key) == 1 else key] = clean
    return out


def _get(con: BaseBackend, name: str, *keys: str, **options: Any) -> dict[Any, Any]:
    frame = compute(con, name, **options).to_pandas()
    if not keys:
        assert len(frame) == 1, frame
        return {k: (None if isinstance(v, float) and math.isnan(v) else v)
                for k, v in frame.iloc[0].to_dict().items()}
    return _rows(frame, *keys)


SEARCH = [  # date, query, page, country, device, impressions, clicks, position
    ("2025-03-03", "crm", "https://x.example/a", "US", "mobile", 100, 10, 2.0),
    ("2025-03-10", "crm", "https://x.example/b", "DE", "desktop", 300, 15, 4.0),
    ("2025-04-01", "plumber", "https://x.example/a", "US", "mobile", 0, 0, None),
]
SPEND = [  # date, channel, source, medium, campaign, keyword, cost, impressions, clicks, qs
    ("2025-03-03", "Paid Search", "google", "cpc", "spring", "crm", 50.0, 1000, 20, 8.0),
    ("2025-03-04", "Paid Search", "google", "cpc", "spring", "erp", 30.0, 500, 10, 6.0),
    ("2025-03-05", "Paid Social", "facebook", "paid", "summer", None, 20.0, 2000, 0, None),
]


@pytest.fixture
def reach(con: BaseBackend) -> BaseBackend:
    sc = [dict(zip(("date", "query", "page", "country", "device", "impressions", "clicks",
                    "position"), (date.fromisoformat(r[0]), *r[1:]), strict=True))
          for r in SEARCH]
    engine.load_table(con, "search_console", arrow_table(store.SEARCH_CONSOLE, sc))
    sp = [dict(zip(("date", "channel", "utm_source", "utm_medium", "utm_campaign", "keyword",
                    "cost", "impressions", "clicks", "quality_score"),
                   (date.fromisoformat(r[0]), *r[1:]), strict=True)) for r in SPEND]
    engine.load_table(con, "spend", arrow_table(store.SPEND, sp))
    return con


def test_search_console_and_paid_reach_by_hand(reach: BaseBackend) -> None:
    # clicks 10 + 15 + 0; impressions 100 + 300 + 0; position (2·100 + 4·300) / 400
    assert _get(reach, "search_clicks") == {"search_clicks": 25}
    assert _get(reach, "search_impressions") == {"search_impressions": 400}
    assert _get(reach, "search_ctr")["search_ctr"] == pytest.approx(25 / 400)
    assert _get(reach, "search_position")["search_position"] == pytest.approx(3.5)
    by_query = _get(reach, "search_position", "query", by=["query"])
    # 'plumber' has no impressions: its position (and CTR) is null, not 0
    assert by_query == {"crm": {"search_position": pytest.approx(3.5)},
                        "plumber": {"search_position": None}}
    assert _get(reach, "search_ctr", "period", period="month") == {
        "2025-03-01": {"search_ctr": pytest.approx(25 / 400)},
        "2025-04-01": {"search_ctr": None}}
    # weeks start on Monday: 3 and 10 March are Mondays, 1 April is in the week of 31 March
    assert _get(reach, "search_clicks", "period", "device", by=["week", "device"]) == {
        ("2025-03-03", "mobile"): {"search_clicks": 10},
        ("2025-03-10", "desktop"): {"search_clicks": 15},
        ("2025-03-31", "mobile"): {"search_clicks": 0}}
    assert _get(reach, "search_impressions", "landing_page", by=["landing_page"],
                since=date(2025, 3, 4)) == {"https://x.example/a": {"search_impressions": 0},
                                            "https://x.example/b": {"search_impressions": 300}}
    assert _get(reach, "search_clicks", "period", period="quarter") == {
        "2025-01-01": {"search_clicks": 25}, "2025-04-01": {"search_clicks": 0}}
    # paid: Paid Search 50 + 30 for 1,500 impressions and 30 clicks; Paid Social 20, 2,000, 0
    channel = {}
    for name in ("paid_cost", "paid_impressions", "paid_clicks", "paid_ctr", "paid_cpc",
                 "paid_cpm", "paid_quality_score"):
        for key, values in _get(reach, name, "channel", by=["channel"]).items():
            channel.setdefault(key, {}).update(values)
    assert channel == {
        "Paid Search": {"paid_cost": 80.0, "paid_impressions": 1500, "paid_clicks": 30,
                        "paid_ctr": pytest.approx(30 / 1500), "paid_cpc": pytest.approx(80 / 30),
                        "paid_cpm": pytest.approx(1000 * 80 / 1500),
                        # weighted by impressions: (8·1000 + 6·500) / 1500
                        "paid_quality_score": pytest.approx(11_000 / 1500)},
        "Paid Social": {"paid_cost": 20.0, "paid_impressions": 2000, "paid_clicks": 0,
                        "paid_ctr": 0.0, "paid_cpc": None, "paid_cpm": pytest.approx(10.0),
                        "paid_quality_score": None}}
    assert _get(reach, "paid_cpc", "keyword", by=["keyword"]) == {
        "crm": {"paid_cpc": pytest.approx(2.5)}, "erp": {"paid_cpc": pytest.approx(3.0)},
        "(not set)": {"paid_cpc": None}}
    assert _get(reach, "paid_cost", until=date(2025, 3, 4)) == {"paid_cost": 50.0}


def test_bad_names_and_missing_imports_say_what_to_do(reach: BaseBackend) -> None:
    with pytest.raises(UnknownKPIError, match=r"unknown KPI 'serch_ctr' .did you mean "
                       "'search_ctr'"):
        compute(reach, "serch_ctr")
    with pytest.raises(UnknownKPIError, match=r"unknown dimension 'chanel' .did you mean "
                       "'channel'"):
        compute(reach, "paid_cpc", by=["chanel"])
    with pytest.raises(UnknownKPIError, match=r"unknown period 'mnth' .did you mean 'month'"):
        compute(reach, "paid_cpc", period="mnth")
    with pytest.raises(UnknownKPIError, match=r"'search_ctr' cannot be broken down by "
                       "'channel': its tables .search_console. hold period, query"):
        compute(reach, "search_ctr", by=["channel"])
    with pytest.raises(UnknownKPIError, match=r"no stored table holds a segment"):
        compute(reach, "paid_cpc", by=["segment"])
    with pytest.raises(UnknownKPIError, match=r"unknown stage 'retension' .did you mean "
                       "'retention'"):
        for_stage("retension")
    with pytest.raises(MissingInputError, match=r"needs sessions rows and the table is "
                       r"missing: fill it with `touchline run"):
        compute(reach, "new_visitors")
    engine.load_table(reach, "spend", arrow_table(store.SPEND, []))
    with pytest.raises(MissingInputError, match=r"needs spend rows and the table is empty: "
                       r"import them with `touchline ingest FILE --kind spend`"):
        compute(reach, "paid_cpc")
    assert lookup("paid_cpm").stages == {"lifecycle": "awareness", "funnel": "top",
                                         "hourglass": "know", "b2b": "first touch"}
    assert {k.name for k in for_stage("know")} >= {"search_ctr", "paid_cpm", "new_visitors"}
    assert all(k.formula and k.unit and k.tables for k in KPIS.values())
