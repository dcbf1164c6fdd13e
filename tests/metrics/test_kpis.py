"""KPIs by hand: every registered KPI against tiny tables whose figures are worked out in the
comments, on DuckDB and Spark."""

from __future__ import annotations

import math
import re
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from factories import arrow_table
from ibis.backends import BaseBackend

from touchline import engine, store
from touchline.config import Settings
from touchline.errors import MissingInputError, ModelFitError, UnknownKPIError
from touchline.metrics.kpis import (
    FAMILIES,
    KPIS,
    compute,
    compute_family,
    computed_once,
    filled_tables,
    for_stage,
    for_stage_model,
    kpis_markdown,
    lookup,
    unmatched_spend_channels,
    unmatched_spend_note,
)


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


def _both_ways(con: BaseBackend, name: str, **options: Any) -> pd.DataFrame:
    """The KPI computed alone and inside :func:`computed_once` (its shared intermediates
    kept in the engine): the same frame."""
    frame = compute(con, name, **options).to_pandas()
    with computed_once(con):
        shared = compute(con, name, **options).to_pandas()
    pd.testing.assert_frame_equal(shared, frame)
    return frame


def _get(con: BaseBackend, name: str, *keys: str, **options: Any) -> dict[Any, Any]:
    frame = _both_ways(con, name, **options)
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
    with pytest.raises(UnknownKPIError, match=r"only survey answers hold a segment"):
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


def test_tables_checked_once_for_many_kpis_give_the_same_answers(reach: BaseBackend) -> None:
    # reach holds search_console and spend rows; sessions was never made
    engine.load_table(reach, "reviews", arrow_table(store.REVIEWS, []))
    filled = filled_tables(reach, ["search_console", "spend", "sessions", "reviews"])
    assert filled == {"search_console", "spend"}
    assert filled_tables(reach, ["sessions"]) == frozenset()
    # cost 50 + 30 + 20 over 20 + 10 + 0 clicks, as when compute looks for itself
    got = compute(reach, "paid_cpc", filled=filled).to_pandas()
    assert got.paid_cpc.tolist() == pytest.approx([100 / 30])
    # and the same refusal, naming the missing and the empty table apart
    with pytest.raises(MissingInputError, match=r"needs sessions rows and the table is "
                       r"missing"):
        compute(reach, "new_visitors", filled=filled)
    with pytest.raises(MissingInputError, match=r"needs rows in one of reviews, surveys"):
        compute(reach, "review_rating", filled=filled)


def test_stage_model_groups_the_kpis_by_its_stages_in_its_order() -> None:
    hourglass = for_stage_model("hourglass", Settings())
    assert [stage for stage, _ in hourglass] == ["know", "like", "trust", "try", "buy",
                                                 "repeat", "refer"]
    by_stage = {stage: {k.name for k in ks} for stage, ks in hourglass}
    assert by_stage["trust"] == by_stage["try"] == set()  # no KPI registers them
    assert {"search_ctr", "paid_cpm", "new_visitors"} <= by_stage["know"]
    assert {"cpa", "roas"} <= by_stage["buy"] and "retention" in by_stage["repeat"]
    assert "nps" in by_stage["refer"]
    assert sorted(n for names in by_stage.values() for n in names) == sorted(KPIS)
    b2b = dict(for_stage_model("b2b", Settings()))
    assert list(b2b) == ["first touch", "MQL", "SQL", "opportunity", "closed won"]
    assert {k.name for k in b2b["closed won"]} == {
        k.name for k in KPIS.values() if k.stage in ("retention", "advocacy")}
    with pytest.raises(UnknownKPIError, match=r"unknown stage model 'hourglas' .did you mean "
                       "'hourglass'"):
        for_stage_model("hourglas", Settings())
    mine = Settings(stage_models={"mine": [{"name": "seen", "first_touch": True}]})
    with pytest.raises(UnknownKPIError, match=r"stage model 'mine' is your own: KPIs register "
                       r"their stage in the preset stage models only \(lifecycle, funnel"):
        for_stage_model("mine", mine)


# ---- a tiny prepared warehouse: three people, six sessions, three purchases, two leads ---
SESSIONS = {  # id: person, start, seconds, page views, conversions, channel, source, campaign, term
    "s1": ("p1", "2025-03-01 09:00", 5, 1, 0, "Organic Search", "google", None, None),
    "s2": ("p1", "2025-03-05 10:00", 120, 3, 1, "Paid Search", "google", "spring", "crm"),
    "s3": ("p1", "2025-04-10 10:00", 0, 1, 1, "Email", "newsletter", "april-news", None),
    "s4": ("p2", "2025-03-02 11:00", 30, 1, 0, "Email", "newsletter", "march", None),
    "s5": ("p2", "2025-03-20 11:00", 0, 2, 1, "Paid Search", "google", "spring", "erp"),
    "s6": ("p3", "2025-04-02 12:00", 3, 1, 0, "Paid Search", "google", "spring", "crm"),
}
JOURNEYS = {  # id: converted at (None: open), value, days to convert, sessions in order
    "purchase:p1:1": ("2025-03-05 10:05", 100.0, 4.0, ["s1", "s2"]),
    "purchase:p1:2": ("2025-04-10 10:05", 50.0, 0.25, ["s3"]),
    "purchase:p2:1": ("2025-03-20 11:05", 200.0, 18.0, ["s4", "s5"]),
    "purchase:p3:open": (None, 0.0, None, ["s6"]),
    "lead:p2:1": ("2025-03-02 11:10", 0.0, 0.0, ["s4"]),
    "lead:p3:1": ("2025-04-02 12:05", 0.0, 0.0, ["s6"]),
}
CREDITS = {  # (journey, model): credit of each position, in order
    ("purchase:p1:1", "linear"): [0.5, 0.5], ("purchase:p1:2", "linear"): [1.0],
    ("purchase:p2:1", "linear"): [0.5, 0.5],
    ("purchase:p1:1", "last_touch"): [0.0, 1.0], ("purchase:p1:2", "last_touch"): [1.0],
    ("purchase:p2:1", "last_touch"): [0.0, 1.0],
    ("lead:p2:1", "linear"): [1.0], ("lead:p3:1", "linear"): [1.0],
}
WAREHOUSE_SPEND = [  # date, channel, source, medium, campaign, keyword, cost
    ("2025-03-03", "paid_search", "google", "cpc", "Spring ", "CRM", 60.0),  # as ads export
    ("2025-04-01", "Paid Search", "google", "cpc", "spring", "erp", 40.0),
    ("2025-03-10", "Paid Social", "facebook", "paid", "summer", None, 30.0),
]
SURVEYS = [  # response, person_id as the survey tool gives it, e-mail, nps, review rating
    ("r1", "u1", None, 10, None),  # p1 by user id
    ("r2", "a2", None, 9, None),  # p2 by anonymous id
    ("r3", None, " CY@example.com", 3, None),  # p3 by e-mail
    ("r4", "ghost", None, 7, None),  # nobody we know
    ("r5", "u1", None, 12, 4.0),  # out of range: no NPS answer, but a review
    ("r6", "u1", None, None, 5.0),
]
IDENTITIES = {"user:u1": "p1", "anon:a1": "p1", "anon:a2": "p2", "email:cy@example.com": "p3"}


def _ts(text: str | None) -> str | None:
    return None if text is None else text + ":00"


@pytest.fixture
def warehouse(con: BaseBackend) -> BaseBackend:
    # session ids as prepare writes them, <device_id>#<session_index>, so that the device
    # breakdown finds each session's landing touch
    sessions = [dict(session_id=f"{sid}#1", person_id=p, device_id=sid, session_index=1,
                     started_at=_ts(start),
                     duration_seconds=float(seconds), pageview_count=pages,
                     conversion_count=conv, channel=channel, source=source,
                     medium={"google": "cpc" if channel == "Paid Search" else "organic"}.get(
                         source, "email"), campaign=campaign, term=term)
                for sid, (p, start, seconds, pages, conv, channel, source, campaign, term)
                in SESSIONS.items()]
    engine.load_table(con, "sessions", arrow_table(store.SESSIONS, sessions))
    journeys, steps, credits = [], [], []
    for jid, (at, value, days, visits) in JOURNEYS.items():
        conversion, person, seq = jid.split(":")
        journeys.append(dict(journey_id=jid, conversion=conversion, unit="person",
                             unit_id=person, sequence=None if seq == "open" else int(seq),
                             converted=at is not None, converted_at=_ts(at), value=value,
                             touches=len(visits), days_to_convert=days))
        for position, sid in enumerate(visits, start=1):
            steps.append(dict(journey_id=jid, position=position, session_id=f"{sid}#1",
                              touch_at=_ts(SESSIONS[sid][1])))
    for (jid, model), shares in CREDITS.items():
        value = JOURNEYS[jid][1]
        for position, share in enumerate(shares, start=1):
            sid = JOURNEYS[jid][3][position - 1]
            credits.append(dict(journey_id=jid, position=position, model=model,
                                conversion=jid.split(":")[0], channel=SESSIONS[sid][5],
                                converted_at=_ts(JOURNEYS[jid][0]), credit=share,
                                value=share * value))
    engine.load_table(con, "journeys", arrow_table(store.JOURNEYS, journeys))
    engine.load_table(con, "journey_steps", arrow_table(store.JOURNEY_STEPS, steps))
    engine.load_table(con, "credits", arrow_table(store.CREDITS, credits))
    con.create_view("journey_touches", store.journey_touches_view(con))
    spend = [dict(zip(("date", "channel", "utm_source", "utm_medium", "utm_campaign",
                       "keyword", "cost"), (date.fromisoformat(r[0]), *r[1:]), strict=True))
             for r in WAREHOUSE_SPEND]
    engine.load_table(con, "spend", arrow_table(store.SPEND, spend))
    surveys = [dict(response_id=r, person_id=p, email=e, nps_score=n, review_rating=stars,
                    responded_at="2025-05-01 00:00:00") for r, p, e, n, stars in SURVEYS]
    engine.load_table(con, "surveys", arrow_table(store.SURVEYS, surveys))
    identities = [dict(identifier=i, person_id=p, kind=i.split(":")[0])
                  for i, p in IDENTITIES.items()]
    engine.load_table(con, "identities", arrow_table(store.IDENTITIES, identities))
    return con


def _merged(con: BaseBackend, names: list[str], *keys: str, **options: Any) -> dict[Any, Any]:
    out: dict[Any, dict[str, Any]] = {}
    for name in names:
        for key, values in _get(con, name, *keys, **options).items():
            out.setdefault(key, {}).update(values)
    return out


def test_visits_and_engagement_by_hand(warehouse: BaseBackend) -> None:
    names = ["sessions", "new_visitors", "returning_visitors", "new_sessions",
             "returning_sessions", "sessions_per_visitor", "pages_per_visitor",
             "engaged_sessions", "engagement_rate"]
    # March: s1, s2 (p1), s4, s5 (p2); April: s3 (p1 again), s6 (p3, new). Engaged: s2 (120 s),
    # s3 (a conversion), s4 (30 s), s5 (2 page views); s1 (5 s, 1 page) and s6 are not.
    assert _merged(warehouse, names, "period", period="month") == {
        "2025-03-01": {"sessions": 4, "new_visitors": 2, "returning_visitors": 2,
                       "new_sessions": 2, "returning_sessions": 2, "sessions_per_visitor": 2.0,
                       "pages_per_visitor": 3.5, "engaged_sessions": 3,
                       "engagement_rate": 0.75},
        "2025-04-01": {"sessions": 2, "new_visitors": 1, "returning_visitors": 1,
                       "new_sessions": 1, "returning_sessions": 1, "sessions_per_visitor": 1.0,
                       "pages_per_visitor": 1.0, "engaged_sessions": 1,
                       "engagement_rate": 0.5}}
    by_channel = _merged(warehouse, ["sessions", "new_visitors", "sessions_per_visitor"],
                         "channel", by=["channel"])
    # new visitors by their first session's channel: p1 Organic, p2 Email, p3 Paid Search
    assert by_channel == {
        "Organic Search": {"sessions": 1, "new_visitors": 1, "sessions_per_visitor": 1.0},
        "Paid Search": {"sessions": 3, "new_visitors": 1, "sessions_per_visitor": 1.0},
        "Email": {"sessions": 2, "new_visitors": 1, "sessions_per_visitor": 1.0}}
    assert _get(warehouse, "engagement_rate", "keyword", by=["keyword"]) == {
        "crm": {"engagement_rate": 0.5}, "erp": {"engagement_rate": 1.0},
        "(not set)": {"engagement_rate": pytest.approx(2 / 3)}}
    # days to convert, purchases: 4, 0.25, 18 → median 4, p75 4 + 0.5·14, p90 4 + 0.8·14
    assert _get(warehouse, "days_to_convert") == {
        "conversions": 3, "median": 4.0, "p75": pytest.approx(11.0),
        "p90": pytest.approx(15.2)}
    # by the journey's first touch: Organic (p1's first) 4; Email (p1's second, p2's) 0.25, 18
    got = _get(warehouse, "days_to_convert", "channel", by=["channel"])
    assert got["Email"]["median"] == pytest.approx(9.125)
    assert got["Organic Search"] == {"conversions": 1, "median": 4.0, "p75": 4.0, "p90": 4.0}
    assert _get(warehouse, "visits_to_convert", conversion="purchase") == {
        "conversions": 3, "median": 2.0, "p75": 2.0, "p90": 2.0}  # 2, 1, 2 sessions
    assert _get(warehouse, "visits_to_convert", conversion="lead")["conversions"] == 2
    with pytest.raises(UnknownKPIError, match=r"conversion type 'purchse' .did you mean "
                       r"'purchase'.. has no journeys"):
        compute(warehouse, "days_to_convert", conversion="purchse")


def test_conversions_and_costs_under_any_model_by_hand(warehouse: BaseBackend) -> None:
    # linear: p1's first purchase 0.5 Organic + 0.5 Paid Search (50 each), p1's second 1 Email
    # (50), p2's 0.5 Email + 0.5 Paid Search (100 each)
    assert _merged(warehouse, ["conversions", "revenue"], "channel", by=["channel"]) == {
        "Organic Search": {"conversions": 0.5, "revenue": 50.0},
        "Paid Search": {"conversions": 1.0, "revenue": 150.0},
        "Email": {"conversions": 1.5, "revenue": 150.0}}
    assert _merged(warehouse, ["conversions", "revenue"], "channel", by=["channel"],
                   model="last_touch") == {
        "Organic Search": {"conversions": 0.0, "revenue": 0.0},
        "Paid Search": {"conversions": 2.0, "revenue": 300.0},
        "Email": {"conversions": 1.0, "revenue": 50.0}}
    assert _get(warehouse, "conversions", "period", "campaign", by=["month", "campaign"]) == {
        ("2025-03-01", "(not set)"): {"conversions": 0.5},
        ("2025-03-01", "spring"): {"conversions": 1.0},
        ("2025-03-01", "march"): {"conversions": 0.5},
        ("2025-04-01", "april-news"): {"conversions": 1.0}}
    with pytest.raises(UnknownKPIError, match=r"model 'markof' has no stored credits of "
                       r"purchase: the stored models are last_touch, linear"):
        compute(warehouse, "conversions", model="markof")
    # first-touch conversion rate: p1 (Organic) and p2 (Email) bought, p3 (Paid Search) not
    assert _get(warehouse, "conversion_rate", "channel", by=["channel"]) == {
        "Organic Search": {"visitors": 1, "converters": 1, "conversion_rate": 1.0},
        "Email": {"visitors": 1, "converters": 1, "conversion_rate": 1.0},
        "Paid Search": {"visitors": 1, "converters": 0, "conversion_rate": 0.0}}
    assert _get(warehouse, "conversion_rate")["conversion_rate"] == pytest.approx(2 / 3)
    assert _get(warehouse, "conversion_rate", "period", period="month",
                conversion="lead") == {  # leads: p2 (first seen in March), p3 (April)
        "2025-03-01": {"visitors": 2, "converters": 1, "conversion_rate": 0.5},
        "2025-04-01": {"visitors": 1, "converters": 1, "conversion_rate": 1.0}}
    # spend: Paid Search 60 + 40, Paid Social 30; credited (linear) as above
    cost = _merged(warehouse, ["cpa", "roas"], "channel", by=["channel"])
    assert cost == {
        "Paid Search": {"cost": 100.0, "conversions": 1.0, "cpa": 100.0, "revenue": 150.0,
                        "roas": 1.5},
        "Paid Social": {"cost": 30.0, "conversions": 0.0, "cpa": None, "revenue": 0.0,
                        "roas": 0.0},
        "Email": {"cost": 0.0, "conversions": 1.5, "cpa": 0.0, "revenue": 150.0, "roas": None},
        "Organic Search": {"cost": 0.0, "conversions": 0.5, "cpa": 0.0, "revenue": 50.0,
                           "roas": None}}
    assert _get(warehouse, "cpa")["cpa"] == pytest.approx(130 / 3)
    assert _get(warehouse, "roas")["roas"] == pytest.approx(350 / 130)
    # last touch gives Paid Search both purchases: 100 / 2
    assert _get(warehouse, "cpa", "channel", by=["channel"], model="last_touch")[
        "Paid Search"]["cpa"] == 50.0
    # 'Spring ' and 'paid_search' in the spend export are the sessions' 'spring', 'Paid Search'
    assert _get(warehouse, "cpa", "campaign", by=["campaign"])["spring"] == {
        "cost": 100.0, "conversions": 1.0, "cpa": 100.0}
    by_month = _get(warehouse, "cpa", "period", "channel", by=["channel"], period="month")
    assert by_month[("2025-03-01", "Paid Search")] == {"cost": 60.0, "conversions": 1.0,
                                                       "cpa": 60.0}
    assert by_month[("2025-04-01", "Paid Search")] == {"cost": 40.0, "conversions": 0.0,
                                                       "cpa": None}
    # leads: p2's (Email) and p3's (Paid Search)
    assert _get(warehouse, "cost_per_lead", "channel", by=["channel"]) == {
        "Paid Search": {"cost": 100.0, "leads": 1.0, "cost_per_lead": 100.0},
        "Paid Social": {"cost": 30.0, "leads": 0.0, "cost_per_lead": None},
        "Email": {"cost": 0.0, "leads": 1.0, "cost_per_lead": 0.0}}


def test_spend_channels_named_as_the_sessions_by_prepare(warehouse: BaseBackend) -> None:
    from touchline.prepare.runner import standardise_spend

    extra = [  # an ad export's own channel names: two aliases and one no channel has
        ("2025-03-04", "CPC", "bing", "cpc", None, None, 5.0),
        ("2025-03-06", " e-mail", "hubspot", "email", None, None, 2.0),
        ("2025-03-07", "TV", "tv4", "tv", None, None, 7.0),
        ("2025-03-08", None, "google", "cpc", None, None, 1.0),
    ]
    rows = [dict(zip(("date", "channel", "utm_source", "utm_medium", "utm_campaign",
                      "keyword", "cost"), (date.fromisoformat(r[0]), *r[1:]), strict=True))
            for r in WAREHOUSE_SPEND + extra]
    engine.load_table(warehouse, "spend", arrow_table(store.SPEND, rows))
    assert unmatched_spend_channels(warehouse) == []  # not prepared: nothing known yet
    assert standardise_spend(warehouse, Settings()) == ["TV"]
    # again (rules changed, or a second prepare): the export's name is read, not the result
    assert standardise_spend(warehouse, Settings()) == ["TV"]
    assert unmatched_spend_channels(warehouse) == ["TV"]
    sp = warehouse.table("spend").to_pandas().sort_values("date")
    assert list(zip(sp.imported_channel, sp.channel, sp.channel_matched, strict=True)) == [
        ("paid_search", "Paid Search", True), ("CPC", "Paid Search", True),
        (" e-mail", "Email", True), ("TV", "TV", False), (None, None, None),
        ("Paid Social", "Paid Social", True), ("Paid Search", "Paid Search", True)]
    assert sp.cost.sum() == pytest.approx(145.0)  # 100 + 30 + 5 + 2 + 7 + 1: none lost
    # Paid Search 60 + 40 + 5 (CPC); Email 2 (e-mail) over its 1.5 linear credits; TV is
    # spend no credit meets (said by the note); the channel-less 1.0 is Unassigned's
    cost = _merged(warehouse, ["cpa", "roas"], "channel", by=["channel"])
    assert cost == {
        "Paid Search": {"cost": 105.0, "conversions": 1.0, "cpa": 105.0, "revenue": 150.0,
                        "roas": pytest.approx(150 / 105)},
        "Paid Social": {"cost": 30.0, "conversions": 0.0, "cpa": None, "revenue": 0.0,
                        "roas": 0.0},
        "Email": {"cost": 2.0, "conversions": 1.5, "cpa": pytest.approx(2 / 1.5),
                  "revenue": 150.0, "roas": 75.0},
        "Organic Search": {"cost": 0.0, "conversions": 0.5, "cpa": 0.0, "revenue": 50.0,
                           "roas": None},
        "TV": {"cost": 7.0, "conversions": 0.0, "cpa": None, "revenue": 0.0, "roas": 0.0},
        # no channel: Unassigned, as the KPIs name a null channel
        "Unassigned": {"cost": 1.0, "conversions": 0.0, "cpa": None, "revenue": 0.0,
                       "roas": 0.0}}
    assert "'TV' matches no known channel" in unmatched_spend_note(["TV"])


def test_retention_and_value_by_hand(warehouse: BaseBackend) -> None:
    # purchases: p1 on 5 March (100) and 10 April (50), p2 on 20 March (200); p3 never
    assert _get(warehouse, "repeat_purchase_rate") == {
        "customers": 2, "repeat_customers": 1, "repeat_purchase_rate": 0.5}
    assert _get(warehouse, "repeat_purchase_rate", until=date(2025, 4, 1))[
        "repeat_purchase_rate"] == 0.0  # p1's second purchase is later
    assert _get(warehouse, "repeat_purchase_rate", "channel", by=["channel"]) == {
        "Organic Search": {"customers": 1, "repeat_customers": 1, "repeat_purchase_rate": 1.0},
        "Email": {"customers": 1, "repeat_customers": 0, "repeat_purchase_rate": 0.0}}
    assert _get(warehouse, "average_order_value")["average_order_value"] == pytest.approx(
        350 / 3)
    assert _get(warehouse, "average_order_value", "period", period="month") == {
        "2025-03-01": {"orders": 2, "revenue": 300.0, "average_order_value": 150.0},
        "2025-04-01": {"orders": 1, "revenue": 50.0, "average_order_value": 50.0}}
    assert _get(warehouse, "purchase_frequency", "purchases") == {
        1: {"customers": 1, "share": 0.5}, 2: {"customers": 1, "share": 0.5}}
    # the March cohort (p1, p2): both active in month 0, p1 in month 1
    assert _get(warehouse, "retention", "cohort", "months_since") == {
        ("2025-03-01", 0): {"customers": 2, "active_customers": 2, "retention": 1.0},
        ("2025-03-01", 1): {"customers": 2, "active_customers": 1, "retention": 0.5}}
    assert _get(warehouse, "retention", "channel", "cohort", "months_since",
                by=["channel"])[("Organic Search", "2025-03-01", 1)]["retention"] == 1.0
    with pytest.raises(UnknownKPIError, match=r"'retention' cannot be broken down by "
                       r"'period'"):
        compute(warehouse, "retention", period="week")


def test_nps_and_reviews_by_hand(warehouse: BaseBackend) -> None:
    # answers 10, 9, 3, 7 (12 is out of range, r6 gave none): 2 promoters, 1 passive,
    # 1 detractor of 4 → 100 · (2 - 1) / 4 = 25
    got = _get(warehouse, "nps")
    p, d, n = 2 / 4, 1 / 4, 4
    half = 100 * 1.959963984540054 * math.sqrt((p + d - (p - d) ** 2) / n)
    assert got == {"answers": 4, "promoters": 2, "passives": 1, "detractors": 1,
                   "nps": 25.0, "nps_low": pytest.approx(25 - half),
                   "nps_high": pytest.approx(25 + half)}
    # by the answerer's first touch: r1 is p1 (Organic, by user id), r2 p2 (Email, by
    # anonymous id), r3 p3 (Paid Search, by e-mail), r4 nobody (Unassigned)
    by_channel = _get(warehouse, "nps", "channel", by=["channel"])
    assert {k: (v["answers"], v["nps"]) for k, v in by_channel.items()} == {
        "Organic Search": (1, 100.0), "Email": (1, 100.0), "Paid Search": (1, -100.0),
        "Unassigned": (1, 0.0)}
    assert by_channel["Organic Search"]["nps_low"] == 100.0  # one answer: no spread
    assert _get(warehouse, "review_rating", "period", period="month") == {
        "2025-05-01": {"reviews": 2, "review_rating": 4.5}}


def test_answers_find_people_keyed_when_contacts_are_hashed_at_rest(
        warehouse: BaseBackend) -> None:
    """With ``pii_at_rest = "hashed"`` the graph keeps p3's e-mail keyed: r3's plain e-mail (a
    row loaded before the switch) is keyed to find her, and r7's, keyed by its load, is kept
    as it is; both are hers, as in plain mode."""
    key = "test-key-of-sixteen-chars"
    keyed = store.keyed_contact("cy@example.com", key)
    identities = [dict(identifier=i.replace("cy@example.com", keyed), person_id=p,
                       kind=i.split(":")[0]) for i, p in IDENTITIES.items()]
    engine.load_table(warehouse, "identities", arrow_table(store.IDENTITIES, identities))
    engine.append(warehouse, "surveys", arrow_table(store.SURVEYS, [dict(
        response_id="r7", email=keyed, nps_score=1, responded_at="2025-05-01 00:00:00")]))
    settings = Settings(pii_at_rest="hashed", pii_hash_key=key)
    by_channel = _get(warehouse, "nps", "channel", by=["channel"], settings=settings)
    assert {k: v["answers"] for k, v in by_channel.items()} == {
        "Organic Search": 1, "Email": 1, "Paid Search": 2, "Unassigned": 1}


DOCS = Path(__file__).resolve().parents[2] / "docs" / "kpis.md"


def test_docs_list_every_kpi_as_registered() -> None:
    assert DOCS.read_text() == kpis_markdown(), (
        "docs/kpis.md is stale: regenerate it with "
        "python -c 'from touchline.metrics.kpis import kpis_markdown; print(kpis_markdown(), "
        "end=\"\")' > docs/kpis.md")
    for kpi in KPIS.values():
        assert f"| `{kpi.name}` | {kpi.stage} " in DOCS.read_text()


@pytest.mark.duckdb_only(reason="the docs' example opens a DuckDB warehouse file by its URL")
def test_docs_python_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    import touchline

    wh = touchline.open(f"duckdb:///{tmp_path / 'touchline.duckdb'}")
    surveys = [dict(response_id=r, person_id=p, email=e, nps_score=n,
                    responded_at="2025-05-01 00:00:00") for r, p, e, n, _ in SURVEYS]
    engine.load_table(wh.con, "surveys", arrow_table(store.SURVEYS, surveys))
    engine.load_table(wh.con, "sessions", arrow_table(store.SESSIONS, [
        dict(session_id="s1", person_id="p1", started_at="2025-03-01 09:00:00",
             channel="Email")]))
    engine.load_table(wh.con, "identities", arrow_table(store.IDENTITIES, [
        dict(identifier="user:u1", person_id="p1")]))
    wh.con.disconnect()
    block = re.search(r"```python\n(.*?)```", DOCS.read_text(), re.S)
    assert block is not None
    monkeypatch.chdir(tmp_path)
    exec(block.group(1), {})  # the documented example, as a user runs it
    out = capsys.readouterr().out
    # u1 (p1, first touch Email) answered 10 (and 12, out of range); a2 (9), cy (3) and
    # ghost (7) match no identity here: one promoter, one detractor of 3 → 0
    rows = [line.split()[1:5] for line in out.splitlines()[1:]]
    assert rows == [["2025-04-01", "Email", "1", "100.0"],
                    ["2025-04-01", "Unassigned", "3", "0.0"]]


DEALS = [  # deal, status, amount, created, closed, updated, contact ids, contact e-mails
    ("d1", "open", 100.0, "2025-03-03", None, "2025-03-03", None, "CY@example.com"),  # p3
    ("d2", "open", 400.0, "2025-03-10", None, "2025-03-10", "c9;c7", None),  # p1, then won:
    ("d2", " Won", 500.0, "2025-03-10", "2025-04-15", "2025-04-15", "c9;c7", None),
    ("d3", "lost", 50.0, "2025-03-12", "2025-04-01", "2025-04-01", None, None),
    ("d4", "negotiation", 70.0, None, None, "2025-04-20", None, None),  # created: opportunity
]


@pytest.fixture
def deals(warehouse: BaseBackend) -> BaseBackend:
    rows = [dict(deal_id=d, status=status, amount=amount, created_at=_ts(created and
                                                                         created + " 09:00"),
                 closed_at=_ts(closed and closed + " 09:00"),
                 updated_at=_ts(updated + " 09:00"), contact_ids=ids, contact_emails=emails,
                 opportunity_at="2025-04-02 09:00:00" if d == "d4" else None,
                 row_hash=f"{d}:{i}")
            for i, (d, status, amount, created, closed, updated, ids, emails)
            in enumerate(DEALS)]
    engine.load_table(warehouse, "deals", arrow_table(store.DEALS, rows))
    identities = [dict(identifier=i, person_id=p, kind=i.split(":")[0])
                  for i, p in {**IDENTITIES, "contact:c9": "p1"}.items()]
    engine.load_table(warehouse, "identities", arrow_table(store.IDENTITIES, identities))
    return warehouse


def test_pipeline_and_revenue_won_by_hand(deals: BaseBackend) -> None:
    # latest snapshots: d1 open 100 (March), d2 won 500 (closed 15 April; its open snapshot
    # is older), d3 lost, d4 open 70 (no created_at: its opportunity date, 2 April)
    assert _get(deals, "pipeline") == {"open_deals": 2, "pipeline": 170.0}
    assert _get(deals, "pipeline", "period", period="month") == {
        "2025-03-01": {"open_deals": 1, "pipeline": 100.0},
        "2025-04-01": {"open_deals": 1, "pipeline": 70.0}}
    assert _get(deals, "revenue_won", "period", period="month") == {
        "2025-04-01": {"won_deals": 1, "revenue_won": 500.0}}
    # d1's contact is p3 (first touch Paid Search), d2's first contact c9 is p1 (Organic),
    # d4 has no contact
    assert _get(deals, "pipeline", "channel", by=["channel"]) == {
        "Paid Search": {"open_deals": 1, "pipeline": 100.0},
        "Unassigned": {"open_deals": 1, "pipeline": 70.0}}
    assert _get(deals, "revenue_won", "channel", by=["channel"]) == {
        "Organic Search": {"won_deals": 1, "revenue_won": 500.0}}
    assert _get(deals, "revenue_won", until=date(2025, 4, 15)) == {
        "won_deals": 0, "revenue_won": 0.0}


def test_pipeline_and_revenue_won_in_one_pass_by_hand(deals: BaseBackend) -> None:
    names = ["pipeline", "revenue_won"]
    assert {KPIS[n].family for n in names} == {"deals"}

    def together(*keys: str, **options: Any) -> dict[Any, Any]:
        frame, skipped = compute_family(deals, names, **options)
        assert skipped == {} and frame is not None
        def key(value: Any) -> Any:  # a period as its ISO day
            return value.isoformat()[:10] if hasattr(value, "isoformat") else value

        return {key(r.pop(keys[0])) if keys else (): r
                for r in frame.to_pandas().to_dict("records")}

    # open d1 100 + d4 70; won d2 500 (the headlines of the KPI page)
    assert together() == {(): {"pipeline": 170.0, "revenue_won": 500.0}}
    # by month: March d1 created (no deal won: zero); April d4 created and d2 closed
    assert together("period", period="month") == {
        "2025-03-01": {"pipeline": 100.0, "revenue_won": 0.0},
        "2025-04-01": {"pipeline": 70.0, "revenue_won": 500.0}}
    # by the first contact's channel: d1 Paid Search, d4 Unassigned, d2 Organic Search
    assert together("channel", by=["channel"]) == {
        "Paid Search": {"pipeline": 100.0, "revenue_won": 0.0},
        "Unassigned": {"pipeline": 70.0, "revenue_won": 0.0},
        "Organic Search": {"pipeline": 0.0, "revenue_won": 500.0}}
    # d2 closed on 15 April, at 09:00: after the window
    assert together(until=date(2025, 4, 15)) == {(): {"pipeline": 170.0, "revenue_won": 0.0}}
    # each alone: the rows of its own kind only, as test_pipeline_and_revenue_won_by_hand
    for options in ({}, {"period": "month"}, {"by": ["channel"]}, {"since": date(2025, 4, 1)}):
        frame, _ = compute_family(deals, names, **options)
        assert frame is not None
        got = frame.to_pandas()
        keys = list(options.get("by", [])) or (["period"] if "period" in options else [])
        for name in names:
            alone = compute(deals, name, **options).to_pandas()
            mine = got[[*keys, name]].rename(columns={name: name})
            if keys:  # together: a row for a key with deals of the other kind only
                mine = mine.merge(alone[keys], on=keys)
            pd.testing.assert_frame_equal(
                mine.reset_index(drop=True).rename(columns={name: KPIS[name].headline}),
                alone[[*keys, KPIS[name].headline]].reset_index(drop=True),
                obj=f"{name} {options}")


def test_churn_by_hand(warehouse: BaseBackend) -> None:
    # active (a purchase): March p1, p2; April p1. April: 2 active before, 1 retained, p2 lost
    assert _get(warehouse, "churn", "period") == {
        "2025-03-01": {"active_previous": 0, "active": 2, "retained": 0, "churned": 0,
                       "churn": None, "reason": "no previous period"},
        "2025-04-01": {"active_previous": 2, "active": 1, "retained": 1, "churned": 1,
                       "churn": 0.5, "reason": None}}
    # by acquisition channel: p1 Organic Search stays, p2 (Email) churns in April
    got = _get(warehouse, "churn", "period", "channel", by=["channel"])
    assert {k: (v["churn"], v["reason"]) for k, v in got.items()} == {
        ("2025-03-01", "Organic Search"): (None, "no previous period"),
        ("2025-03-01", "Email"): (None, "no previous period"),
        ("2025-04-01", "Organic Search"): (0.0, None),
        ("2025-04-01", "Email"): (1.0, None)}
    # quarters: March is in Q1 (the first period), April in Q2
    assert _get(warehouse, "churn", "period", period="quarter") == {
        "2025-01-01": {"active_previous": 0, "active": 2, "retained": 0, "churned": 0,
                       "churn": None, "reason": "no previous period"},
        "2025-04-01": {"active_previous": 2, "active": 1, "retained": 1, "churned": 1,
                       "churn": 0.5, "reason": None}}
    # weeks: p1 (week of 3 March), p2 (week of 17 March), p1 (week of 7 April): the week of
    # 10 March loses p1; nobody bought in it, so the week of 17 March has no denominator
    weeks = _get(warehouse, "churn", "period", period="week")
    assert weeks["2025-03-10"] == {"active_previous": 1, "active": 0, "retained": 0,
                                   "churned": 1, "churn": 1.0, "reason": None}
    assert weeks["2025-03-17"]["reason"] == "no customer active in the previous period"
    assert weeks["2025-03-17"]["churn"] is None


AGENTS = {  # session: its landing touch's user agent (s6's event has none)
    "s1": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/124.0 Safari/537.36",
    "s2": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) Mobile/15E148 Safari/604.1",
    "s3": "Mozilla/5.0 (Linux; Android 14; Pixel 8) Chrome/124.0 Mobile Safari/537.36",
    "s4": "Mozilla/5.0 (iPad; CPU OS 17_4 like Mac OS X) Safari/604.1",
    "s5": "Mozilla/5.0 (Linux; Android 14; Pixel 8) Chrome/124.0 Mobile Safari/537.36",
    "s6": None,
}


def _load_user_agents(con: BaseBackend) -> None:
    """Each session's landing touch and its loaded event with the user agent of AGENTS."""
    touches = [dict(message_id=f"m-{sid}", device_id=sid, session_index=1, is_landing=True,
                    timestamp=_ts(SESSIONS[sid][1])) for sid in SESSIONS]
    engine.load_table(con, "touches", arrow_table(store.TOUCHES, touches))
    events = [dict(message_id=f"m-{sid}", user_agent=agent) for sid, agent in AGENTS.items()]
    engine.load_table(con, "events", arrow_table(store.EVENTS, events))


def test_session_kpis_by_device_by_hand(warehouse: BaseBackend) -> None:
    with pytest.raises(MissingInputError, match=r"user agents of the loaded events"):
        compute(warehouse, "sessions", by=["device"])
    _load_user_agents(warehouse)
    # desktop s1; mobile s2, s3, s5; tablet s4; (not set) s6. Returning: p1 in s2 and s3, p2
    # in s5, all mobile; engaged: s2, s3, s5 (mobile), s4 (tablet)
    names = ["sessions", "new_visitors", "returning_visitors", "engaged_sessions"]
    assert _merged(warehouse, names, "device", by=["device"]) == {
        "desktop": {"sessions": 1, "new_visitors": 1, "returning_visitors": 0,
                    "engaged_sessions": 0},
        "mobile": {"sessions": 3, "returning_visitors": 2, "engaged_sessions": 3},
        "tablet": {"sessions": 1, "new_visitors": 1, "returning_visitors": 0,
                   "engaged_sessions": 1},
        "(not set)": {"sessions": 1, "new_visitors": 1, "returning_visitors": 0,
                      "engaged_sessions": 0}}
    # first sessions: p1 desktop (bought), p2 tablet (bought), p3 (not set) (did not)
    assert _get(warehouse, "conversion_rate", "device", by=["device"]) == {
        "desktop": {"visitors": 1, "converters": 1, "conversion_rate": 1.0},
        "tablet": {"visitors": 1, "converters": 1, "conversion_rate": 1.0},
        "(not set)": {"visitors": 1, "converters": 0, "conversion_rate": 0.0}}
    # journeys by their first touch: p1's first purchase s1 (2 visits), second s3 (1), p2's
    # s4 (2); leads: p2's s4, p3's s6
    assert _get(warehouse, "visits_to_convert", "period", "device", by=["month", "device"]) == {
        ("2025-03-01", "desktop"): {"conversions": 1, "median": 2.0, "p75": 2.0, "p90": 2.0},
        ("2025-03-01", "tablet"): {"conversions": 1, "median": 2.0, "p75": 2.0, "p90": 2.0},
        ("2025-04-01", "mobile"): {"conversions": 1, "median": 1.0, "p75": 1.0, "p90": 1.0}}
    assert _get(warehouse, "leads", "device", by=["device"]) == {
        "tablet": {"leads": 1}, "(not set)": {"leads": 1}}


def test_credited_retention_and_nps_kpis_by_device_by_hand(warehouse: BaseBackend) -> None:
    """Credits by the device of the credited touch's session; customers and answerers by the
    device of their first session (the acquisition device, as for the channel)."""
    _load_user_agents(warehouse)
    # linear: p1's first purchase s1 desktop 0.5 + s2 mobile 0.5 (50 each), p1's second s3
    # mobile 1 (50), p2's s4 tablet 0.5 + s5 mobile 0.5 (100 each)
    assert _merged(warehouse, ["conversions", "revenue"], "device", by=["device"]) == {
        "desktop": {"conversions": 0.5, "revenue": 50.0},
        "mobile": {"conversions": 2.0, "revenue": 200.0},
        "tablet": {"conversions": 0.5, "revenue": 100.0}}
    # last touch: s2, s3 and s5, all mobile
    assert _merged(warehouse, ["conversions", "revenue"], "device", by=["device"],
                   model="last_touch") == {
        "desktop": {"conversions": 0.0, "revenue": 0.0},
        "mobile": {"conversions": 3.0, "revenue": 350.0},
        "tablet": {"conversions": 0.0, "revenue": 0.0}}
    assert _get(warehouse, "conversions", "period", "device", by=["month", "device"]) == {
        ("2025-03-01", "desktop"): {"conversions": 0.5},
        ("2025-03-01", "mobile"): {"conversions": 1.0},
        ("2025-03-01", "tablet"): {"conversions": 0.5},
        ("2025-04-01", "mobile"): {"conversions": 1.0}}
    # customers by their first session: p1 desktop (5 March 100, 10 April 50), p2 tablet
    # (20 March 200)
    assert _merged(warehouse, ["repeat_purchase_rate", "average_order_value",
                               "historical_clv"], "device", by=["device"]) == {
        "desktop": {"customers": 1, "repeat_customers": 1, "repeat_purchase_rate": 1.0,
                    "orders": 2, "revenue": 150.0, "average_order_value": 75.0,
                    "historical_clv": 150.0},
        "tablet": {"customers": 1, "repeat_customers": 0, "repeat_purchase_rate": 0.0,
                   "orders": 1, "revenue": 200.0, "average_order_value": 200.0,
                   "historical_clv": 200.0}}
    assert _get(warehouse, "purchase_frequency", "device", "purchases", by=["device"]) == {
        ("desktop", 2): {"customers": 1, "share": 1.0},
        ("tablet", 1): {"customers": 1, "share": 1.0}}
    assert _get(warehouse, "retention", "device", "cohort", "months_since",
                by=["device"]) == {
        ("desktop", "2025-03-01", 0): {"customers": 1, "active_customers": 1, "retention": 1.0},
        ("desktop", "2025-03-01", 1): {"customers": 1, "active_customers": 1, "retention": 1.0},
        ("tablet", "2025-03-01", 0): {"customers": 1, "active_customers": 1, "retention": 1.0}}
    # April: the desktop customer stays, the tablet one is lost
    churn = _get(warehouse, "churn", "period", "device", by=["device"])
    assert {k: (v["active_previous"], v["retained"], v["churn"]) for k, v in churn.items()} == {
        ("2025-03-01", "desktop"): (0, 0, None), ("2025-03-01", "tablet"): (0, 0, None),
        ("2025-04-01", "desktop"): (1, 1, 0.0), ("2025-04-01", "tablet"): (1, 0, 1.0)}
    # answers: r1 p1 (desktop) 10, r2 p2 (tablet) 9, r3 p3 (her only session s6 has no user
    # agent: (not set)) 3 and r4 nobody ((not set)) 7: one detractor, one passive → -50
    nps = _get(warehouse, "nps", "device", by=["device"])
    assert {k: (v["answers"], v["nps"]) for k, v in nps.items()} == {
        "desktop": (1, 100.0), "tablet": (1, 100.0), "(not set)": (2, -50.0)}
    # the survey ratings (r5 4 stars, r6 5 stars) are both p1's: desktop
    assert _get(warehouse, "review_rating", "device", by=["device"]) == {
        "desktop": {"reviews": 2, "review_rating": 4.5}}
    assert _get(warehouse, "review_distribution", "device", "stars", by=["device"]) == {
        ("desktop", 4): {"reviews": 1, "share": 0.5}, ("desktop", 5): {"reviews": 1, "share": 0.5}}


def test_deal_kpis_by_device_by_hand(deals: BaseBackend) -> None:
    _load_user_agents(deals)
    # d1 (open 100) is p3's, whose only session has no user agent; d4 (open 70) has no
    # contact; d2 (won 500) is p1's, first seen on a desktop
    assert _get(deals, "pipeline", "device", by=["device"]) == {
        "(not set)": {"open_deals": 2, "pipeline": 170.0}}
    assert _get(deals, "revenue_won", "device", by=["device"]) == {
        "desktop": {"won_deals": 1, "revenue_won": 500.0}}


def test_kpis_without_a_device_say_why(warehouse: BaseBackend) -> None:
    with pytest.raises(UnknownKPIError, match=r"'cpa' cannot be broken down by 'device'.*"
                       r"spend rows hold no device \(the spend imports give cost by channel.*"
                       r"the KPIs that break down by device: .*\bsessions\b.*conversion_rate"):
        compute(warehouse, "cpa", by=["device"])
    with pytest.raises(UnknownKPIError, match=r"'social_reach' cannot be broken down by "
                       r"'device'.*social rows hold no device"):
        compute(warehouse, "social_reach", by=["device"])


def test_reach_and_engagement_time_by_hand(warehouse: BaseBackend) -> None:
    # March: s1, s2 (p1), s4, s5 (p2); April: s3 (p1), s6 (p3). Durations 5, 120, 30, 0 s in
    # March, 0 and 3 s in April
    assert _merged(warehouse, ["reach", "engagement_time"], "period", period="month") == {
        "2025-03-01": {"reach": 2, "sessions": 4, "engagement_seconds": 155.0,
                       "engagement_time": 38.75},
        "2025-04-01": {"reach": 2, "sessions": 2, "engagement_seconds": 3.0,
                       "engagement_time": 1.5}}
    # a person reached by two channels counts in each: Paid Search reached p1 (s2), p2 (s5)
    # and p3 (s6); overall three people
    assert _get(warehouse, "reach", "channel", by=["channel"]) == {
        "Organic Search": {"reach": 1}, "Paid Search": {"reach": 3}, "Email": {"reach": 2}}
    assert _get(warehouse, "reach") == {"reach": 3}
    _load_user_agents(warehouse)
    # desktop s1 (p1, 5 s); mobile s2, s3 (p1), s5 (p2): 120 s; tablet s4 (p2, 30 s);
    # (not set) s6 (p3, 3 s)
    assert _merged(warehouse, ["reach", "engagement_time"], "device", by=["device"]) == {
        "desktop": {"reach": 1, "sessions": 1, "engagement_seconds": 5.0,
                    "engagement_time": 5.0},
        "mobile": {"reach": 2, "sessions": 3, "engagement_seconds": 120.0,
                   "engagement_time": 40.0},
        "tablet": {"reach": 1, "sessions": 1, "engagement_seconds": 30.0,
                   "engagement_time": 30.0},
        "(not set)": {"reach": 1, "sessions": 1, "engagement_seconds": 3.0,
                      "engagement_time": 3.0}}


def test_every_kpi_in_one_computed_once_block_as_alone(deals: BaseBackend) -> None:
    # one block computing every KPI (by month, channel and device where offered) shares what
    # they read: the first sessions, credits, purchases, forms, identifiers, devices; each
    # KPI's figures (or refusal) must be those it gives alone, whatever ran before it
    _load_user_agents(deals)

    def every() -> dict[str, Any]:
        out: dict[str, Any] = {}
        for kpi in KPIS.values():
            options = {"by": [d for d in ("channel", "device") if d in kpi.dimensions],
                       "period": "month" if "period" in kpi.dimensions else None}
            try:
                out[kpi.name] = compute(deals, kpi.name, **options).to_pandas()
            except (MissingInputError, UnknownKPIError, ModelFitError) as exc:
                out[kpi.name] = str(exc)
        return out

    alone = every()
    with computed_once(deals):
        shared = every()
    assert sum(not isinstance(f, str) for f in alone.values()) >= 40, alone
    for name, frame in alone.items():
        if isinstance(frame, str):
            assert shared[name] == frame, name
        else:
            pd.testing.assert_frame_equal(shared[name], frame, obj=name)


#: each family's headlines on the tiny warehouse (with SEARCH's Search Console rows), by hand
FAMILY_HEADLINES = {
    # clicks 10 + 15 + 0 of impressions 100 + 300 + 0; position (2·100 + 4·300) / 400
    "search_console": {"search_clicks": 25, "search_impressions": 400, "search_ctr": 0.0625,
                       "search_position": 3.5},
    # cost 60 + 40 + 30; the spend export holds no impressions, clicks or quality scores
    "spend": {"paid_cost": 130.0, "paid_impressions": None, "paid_clicks": None,
              "paid_ctr": None, "paid_cpc": None, "paid_cpm": None,
              "paid_quality_score": None},
    # six sessions of p1 (s1-s3), p2 (s4, s5), p3 (s6): three first ones; p1 and p2 came
    # back; 9 page views; engaged s2, s3, s4, s5; 5 + 120 + 0 + 30 + 0 + 3 = 158 s
    "sessions": {"reach": 3, "sessions": 6, "returning_visitors": 2, "new_sessions": 3,
                 "returning_sessions": 3, "sessions_per_visitor": 2.0,
                 "pages_per_visitor": 3.0, "engaged_sessions": 4,
                 "engagement_rate": pytest.approx(4 / 6),
                 "engagement_time": pytest.approx(158 / 6),
                 # the sessions hold no end, so none holds a conversion: 0 of 6
                 # (tests/metrics/test_kpis_events.py has sessions with one)
                 "landing_page_conversion_rate": 0.0},
    # three people first seen, two of whom (p1, p2) purchased
    "first_sessions": {"new_visitors": 3, "conversion_rate": pytest.approx(2 / 3)},
    # linear: 0.5 + 0.5 + 1 + 0.5 + 0.5 purchases worth 100 + 50 + 200
    "credits": {"conversions": 3.0, "revenue": 350.0},
    "costs": {"cpa": pytest.approx(130 / 3), "roas": pytest.approx(350 / 130)},
    # customers p1 (two purchases, 150) and p2 (one, 200)
    "customers": {"repeat_purchase_rate": 0.5, "historical_clv": 175.0},
    # purchases: 2, 1, 2 visits; 4, 0.25, 18 days
    "converting_journeys": {"visits_to_convert": 2.0, "days_to_convert": 4.0},
}


def test_each_family_in_one_aggregate_as_each_kpi_alone(warehouse: BaseBackend) -> None:
    # a family's KPIs computed together (the dashboard's headlines: one pass over their
    # input) give each KPI's own figures, headline by hand, and by period or breakdown as
    # each KPI alone
    sc = [dict(zip(("date", "query", "page", "country", "device", "impressions", "clicks",
                    "position"), (date.fromisoformat(r[0]), *r[1:]), strict=True))
          for r in SEARCH]
    engine.load_table(warehouse, "search_console", arrow_table(store.SEARCH_CONSOLE, sc))
    # page_actions (CTA and forms) and the social families: tests/metrics/test_kpis_events.py,
    # whose warehouse has touches (by a breakdown, a key with one kind of page only has a row
    # for both) and social rows; deals: test_pipeline_and_revenue_won_in_one_pass_by_hand
    assert set(FAMILY_HEADLINES) | {"page_actions", "social", "social_followers",
                                    "deals"} == set(FAMILIES)
    for family, expected in FAMILY_HEADLINES.items():
        names = [k.name for k in KPIS.values() if k.family == family]
        assert sorted(names) == sorted(expected), family
        together, skipped = compute_family(warehouse, names)
        assert skipped == {} and together is not None
        got = together.to_pandas()
        assert len(got) == 1, family
        assert {n: (None if pd.isna(v) else v) for n, v in got.iloc[0].items()} == expected
        shared = set.intersection(*(set(KPIS[n].dimensions) for n in names))
        by = next(d for d in ("channel", "device") if d in shared)
        for options in ({"period": "month"}, {"by": [by]}):
            together, _ = compute_family(warehouse, names, **options)
            frame = together.to_pandas()
            keys = ["period"] if "period" in options else [by]
            for name in names:
                alone = compute(warehouse, name, **options).to_pandas()
                column = KPIS[name].headline
                pd.testing.assert_frame_equal(
                    frame[[*keys, name]].rename(columns={name: column}),
                    alone[[*keys, column]], obj=f"{name} {options}")


def test_visits_and_days_to_convert_in_one_pass_by_hand(warehouse: BaseBackend) -> None:
    # one more purchase, p3's by phone in May: no touch, so no days to convert
    journeys = [dict(journey_id=jid, conversion=jid.split(":")[0], unit="person",
                     unit_id=jid.split(":")[1], sequence=None if jid.endswith("open") else 1,
                     converted=at is not None, converted_at=_ts(at), value=value,
                     touches=len(visits), days_to_convert=days)
                for jid, (at, value, days, visits) in JOURNEYS.items()]
    journeys.append(dict(journey_id="purchase:p3:1", conversion="purchase", unit="person",
                         unit_id="p3", sequence=1, converted=True,
                         converted_at="2025-05-10 12:00:00", value=10.0, touches=0,
                         days_to_convert=None))
    engine.load_table(warehouse, "journeys", arrow_table(store.JOURNEYS, journeys))
    names = ["visits_to_convert", "days_to_convert"]
    # visits 2, 1, 2, 0 → median 1.5; days of the three with a touch 4, 0.25, 18 → 4
    together, skipped = compute_family(warehouse, names)
    assert skipped == {} and together is not None
    assert together.to_pandas().to_dict("records") == [
        {"visits_to_convert": 1.5, "days_to_convert": 4.0}]
    # by month: March 2, 2 visits and 4, 18 days; April 1 visit, 0.25 days; May 0 visits and
    # no days (together: a row of none; alone, days_to_convert has no May)
    by_month = compute_family(warehouse, names, period="month")[0]
    assert by_month is not None
    got = {str(r["period"])[:10]: (r["visits_to_convert"], r["days_to_convert"])
           for r in by_month.to_pandas().to_dict("records")}
    assert {k: (v, None if d is None or math.isnan(d) else d)
            for k, (v, d) in got.items()} == {"2025-03-01": (2.0, 11.0),
                                             "2025-04-01": (1.0, 0.25),
                                             "2025-05-01": (0.0, None)}
    assert _get(warehouse, "days_to_convert", "period", period="month") == {
        "2025-03-01": {"conversions": 2, "median": 11.0, "p75": 14.5,
                       "p90": pytest.approx(16.6)},
        "2025-04-01": {"conversions": 1, "median": 0.25, "p75": 0.25, "p90": 0.25}}
    assert _get(warehouse, "visits_to_convert", "period", period="month")["2025-05-01"] == {
        "conversions": 1, "median": 0.0, "p75": 0.0, "p90": 0.0}


def test_a_family_kpis_refusal_is_its_own(warehouse: BaseBackend) -> None:
    # an unknown conversion type refuses the conversion rate, not the new visitors it is
    # computed with
    together, skipped = compute_family(warehouse, ["new_visitors", "conversion_rate"],
                                       conversion="purchse")
    assert together is not None and together.to_pandas().to_dict("records") == [
        {"new_visitors": 3}]
    assert list(skipped) == ["conversion_rate"]
    with pytest.raises(UnknownKPIError) as alone:
        compute(warehouse, "conversion_rate", conversion="purchse")
    assert skipped["conversion_rate"] == str(alone.value)
    with pytest.raises(ValueError, match="not of one family"):
        compute_family(warehouse, ["sessions", "paid_cost"])


@pytest.mark.duckdb_only(reason="where DuckDB keeps the scratch tables of a block")
def test_a_readers_computed_once_block_keeps_its_intermediates_in_memory(
        warehouse: BaseBackend) -> None:
    # a dashboard page (a reader's block) computes the KPIs' shared intermediates once; under
    # a memory limit a writer's block puts them in the warehouse file, a page must not write
    warehouse._touchline_scratch_in_file = True  # type: ignore[attr-defined]  # memory_limit
    alone = compute(warehouse, "new_visitors", by=["channel"]).to_pandas()

    def scratch() -> list[tuple[str, bool]]:
        return warehouse.raw_sql(
            "select table_name, temporary from duckdb_tables() "
            "where table_name like '_touchline_kpi_%' order by 1").fetchall()

    with engine.schemas_read_once(warehouse), computed_once(warehouse):
        shared = compute(warehouse, "new_visitors", by=["channel"]).to_pandas()
        kept = scratch()
    assert kept and all(temporary for _, temporary in kept), kept
    assert scratch() == []  # dropped when the block ends
    pd.testing.assert_frame_equal(shared, alone)
    with computed_once(warehouse):  # a writer's block (touchline kpis): in the file
        compute(warehouse, "new_visitors", by=["channel"]).to_pandas()
        assert [temporary for _, temporary in scratch()] == [False] * len(kept)
