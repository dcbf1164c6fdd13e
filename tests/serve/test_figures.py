"""The data behind every chart, on the hand-made warehouse of serve_kit.py, by hand, on DuckDB
and Spark; and each figure drawn from it."""

from __future__ import annotations

import json
import math
import re
from datetime import datetime
from pathlib import Path

import ibis
import pandas as pd
import pytest
from ibis.backends import BaseBackend
from serve_kit import build_warehouse

from touchline.errors import ConfigError, InputError, MissingInputError
from touchline.metrics import dimensions
from touchline.serve import figures
from touchline.serve.figures import (
    CHARTS,
    Filters,
    channel_credits_data,
    chart_data,
    data_quality_data,
    funnel_data,
    journey_map_data,
    model_comparison_data,
    model_ranking_data,
    overview_data,
    person_timeline_data,
    stage_kpis_data,
    stage_timeline_data,
)


def _records(frame: pd.DataFrame, key: str | list[str]) -> dict[object, dict[str, object]]:
    """Rows by key, NaN as None, so expectations read plainly."""
    keys = [key] if isinstance(key, str) else key
    out = {}
    for record in frame.to_dict("records"):
        clean = {k: None if isinstance(v, float) and math.isnan(v) else v
                 for k, v in record.items()}
        k = tuple(clean.pop(c) for c in keys)
        out[k[0] if len(k) == 1 else k] = clean
    return out


@pytest.fixture(scope="module")
def wh(module_con: BaseBackend) -> BaseBackend:
    """Loaded once per engine: the tests read it (one adds a table and drops it again)."""
    return build_warehouse(module_con)


#: a simulator truth.json of the B2C data set (its channel names are the simulator's):
#: e-mail caused 1 of the first purchases, paid search 3, organic search none
TRUTH = {"b2b": False, "channels": {
    "email": {"incremental_conversions": 1.0, "incremental_revenue": 50.0},
    "paid_search": {"incremental_conversions": 3.0, "incremental_revenue": 250.0},
    "organic_search": {"incremental_conversions": 0.0, "incremental_revenue": 0.0}}}


@pytest.fixture
def truth(tmp_path: Path) -> Path:
    file = tmp_path / "b2c" / "truth.json"
    file.parent.mkdir()
    file.write_text(json.dumps(TRUTH))
    return file


def test_overview_and_credits_by_hand(wh: BaseBackend) -> None:
    # April against the 30 days before it ([2 March, 1 April)): purchases p1#2 (50), p3 (80,
    # no touch: counted all the same), p4 (30) against p1#1 (100), p2 (200); spend 40 against
    # 60 + 30; leads p3 (2 April) against p2 (2 March 11:10)
    got = overview_data(wh, since=datetime(2025, 4, 1), until=datetime(2025, 5, 1))
    assert got.attrs["previous_since"] == datetime(2025, 3, 2)
    rows = _records(got, "metric")
    assert rows["conversions"] == {"unit": "count", "value": 3.0, "previous": 2.0,
                                   "change": 0.5}
    assert rows["revenue"]["value"] == 160.0
    assert rows["revenue"]["change"] == pytest.approx(160 / 300 - 1)
    assert (rows["spend"]["value"], rows["spend"]["previous"]) == (40.0, 90.0)
    assert (rows["roas"]["value"], rows["roas"]["previous"]) == pytest.approx((4.0, 300 / 90))
    assert (rows["cpa"]["value"], rows["cpa"]["previous"]) == pytest.approx((40 / 3, 45.0))
    assert rows["leads"] == {"unit": "count", "value": 1.0, "previous": 1.0, "change": 0.0}
    assert list(got.metric) == list(figures.OVERVIEW_METRICS)
    # no dates: the 30 days up to the last purchase (20 April), i.e. [22 March, 21 April)
    default = overview_data(wh)
    assert (default.attrs["since"], default.attrs["until"]) == (
        datetime(2025, 3, 22), datetime(2025, 4, 21))
    assert default.attrs["conversion"] == "purchase"  # the type with the most value
    assert _records(default, "metric")["conversions"]["value"] == 3.0
    with pytest.raises(InputError, match="is not before until"):
        overview_data(wh, since=datetime(2025, 5, 1), until=datetime(2025, 4, 1))
    # channels (linear): p1#1 half Organic, half Paid Search (50 each); p1#2 Email (50); p2
    # half Email, half Paid Search (100 each); p4 Email (30). Spend: Paid Search 60 + 40 (the
    # export's 'paid_search' is the sessions' Paid Search), Paid Social 30.
    # touches: Email t4, t5, t6, t9; Paid Search t2, t3, t7, t8; Organic Search t1; Paid
    # Social (spend only) none
    channels = channel_credits_data(wh, model="linear")
    assert list(channels.channel) == ["Email", "Paid Search", "Organic Search", "Paid Social"]
    assert list(channels.columns[:2]) == ["channel", "touches"]
    assert _records(channels, "channel") == {
        "Email": {"touches": 4, "conversions": 2.5, "revenue": 180.0, "spend": 0.0,
                  "cpa": 0.0, "roas": None},
        "Paid Search": {"touches": 4, "conversions": 1.0, "revenue": 150.0, "spend": 100.0,
                        "cpa": 100.0, "roas": 1.5},
        "Organic Search": {"touches": 1, "conversions": 0.5, "revenue": 50.0, "spend": 0.0,
                           "cpa": 0.0, "roas": None},
        "Paid Social": {"touches": 0, "conversions": 0.0, "revenue": 0.0, "spend": 30.0,
                        "cpa": None, "roas": 0.0}}
    # switching the model moves the credits: last touch gives Paid Search both paid journeys
    last = _records(channel_credits_data(wh, model="last_touch"), "channel")
    assert {c: r["conversions"] for c, r in last.items()} == {
        "Paid Search": 2.0, "Email": 2.0, "Organic Search": 0.0, "Paid Social": 0.0}
    assert last["Paid Search"]["cpa"] == 50.0
    # April only, by campaign: p1#2 and p4 came from the 'april' newsletter
    april = channel_credits_data(wh, by="campaign", since=datetime(2025, 4, 1))
    assert _records(april, "campaign")["april"]["conversions"] == 2.0
    # ... from its touches t4, t5, t9; spring's in April: t8 (p3's session of 2 April)
    assert _records(april, "campaign")["april"]["touches"] == 3
    assert _records(april, "campaign")["spring"]["touches"] == 1
    # by keyword (the session's utm_term): crm s2, s6 (t2, t3, t8); erp s5 (t7); the rest
    # none (t1, t4, t5, t6, t9)
    by_keyword = _records(channel_credits_data(wh, by="keyword"), "keyword")
    assert {k: r["touches"] for k, r in by_keyword.items()} == {
        "crm": 3, "erp": 1, "(not set)": 5}
    # leads: p2's (Email) and p3's (Paid Search)
    leads = _records(channel_credits_data(wh, conversion="lead"), "channel")
    assert (leads["Email"]["conversions"], leads["Paid Search"]["conversions"]) == (1.0, 1.0)


def test_stored_intervals_are_the_channel_credits_error_bars(wh: BaseBackend) -> None:
    """The last run's bootstrap intervals of a model's channel credits ride along (whole
    period, by channel) and are drawn as asymmetric error bars; other views have none."""
    from factories import arrow_table

    from touchline import engine, store

    try:
        engine.load_table(wh, "credit_intervals", arrow_table(store.CREDIT_INTERVALS, [
            {"conversion": "purchase", "model": "linear", "channel": "Email", "conversions": 2.5,
             "conversions_low": 1.5, "conversions_high": 3.0, "flagged": False},
            {"conversion": "purchase", "model": "linear", "channel": "Organic Search",
             "conversions": 0.5, "conversions_low": 0.0, "conversions_high": 1.0, "flagged": True},
            {"conversion": "lead", "model": "linear", "channel": "Email", "conversions": 1.0,
             "conversions_low": 0.0, "conversions_high": 9.0, "flagged": True}]))
        data = channel_credits_data(wh, model="linear")
        rows = _records(data[["channel", "conversions", "conversions_low", "conversions_high",
                              "flagged"]], "channel")
        assert rows["Email"] == {"conversions": 2.5, "conversions_low": 1.5,
                                 "conversions_high": 3.0, "flagged": False}
        assert rows["Organic Search"]["flagged"] is True
        assert rows["Paid Search"]["conversions_low"] is None  # no interval stored for it
        bars = figures.channel_credits_figure(data).data[0]
        # Email, Paid Search, Organic Search, Paid Social
        assert list(bars.error_y.array) == [0.5, 0.0, 0.5, 0.0]
        assert list(bars.error_y.arrayminus) == [1.0, 0.0, 0.5, 0.0]
        assert "reaches 0" in bars.customdata[2][3]
        # a model without intervals, or a period, or another breakdown: none
        assert "conversions_low" not in channel_credits_data(wh, model="last_touch")
        assert "conversions_low" not in channel_credits_data(wh, model="linear",
                                                             since=datetime(2025, 4, 1))
        assert figures.channel_credits_figure(channel_credits_data(wh, model="last_touch")).data[
            0].error_y.array is None
    finally:
        wh.drop_table("credit_intervals", force=True)


def test_model_comparison_and_journey_map_by_hand(wh: BaseBackend) -> None:
    got = _records(model_comparison_data(wh), ["channel", "model"])
    assert {k: v["conversions"] for k, v in got.items()} == {
        ("Email", "last_touch"): 2.0, ("Email", "linear"): 2.5,
        ("Organic Search", "last_touch"): 0.0, ("Organic Search", "linear"): 0.5,
        ("Paid Search", "last_touch"): 2.0, ("Paid Search", "linear"): 1.0}
    assert got[("Paid Search", "last_touch")]["revenue"] == 300.0
    april = model_comparison_data(wh, models=["linear"], since=datetime(2025, 4, 1))
    assert _records(april, ["channel", "model"]) == {
        ("Email", "linear"): {"conversions": 2.0, "revenue": 80.0}}
    # paths to purchase: Email (p1#2, p4: 2), Email > Paid Search (p2: 1), Organic Search >
    # Paid Search (p1#1: 1); the top 2 are kept (ties by name), p1#1 flows as 'other', p3's
    # CRM sale as '(no touch)': 2 + 1 + 1 + 1 = the 5 purchases; p3's open journey (a paid
    # click, no purchase since) drops off: the one journey into '(no conversion)'
    links = journey_map_data(wh, top=2)
    want = [(2, "Email", 1, "Paid Search", 1), (1, "Email", 0, "(conversion)", 2),
            (1, "(no touch)", 0, "(conversion)", 1), (1, "Paid Search", 0, "(conversion)", 1),
            (1, "other", 0, "(conversion)", 1), (1, "Paid Search", 0, "(no conversion)", 1)]
    assert sorted(map(tuple, links.to_numpy().tolist())) == sorted(want)
    assert links[links.target == "(conversion)"].journeys.sum() == 5
    assert (links.attrs["conversions"], links.attrs["dropped"]) == (5, 1)
    # the nodes by position: 2 before on the left, 1 before in the middle, the two ends on
    # the right; within a column the most journeys first, each centred on its share
    nodes = _records(figures.journey_map_nodes(links), "name")
    assert {n: (v["x"], v["journeys"]) for n, v in nodes.items()} == {
        "Email (2 before)": (0.01, 1), "Email (1 before)": (0.5, 2),
        "Paid Search (1 before)": (0.5, 2), "(no touch) (1 before)": (0.5, 1),
        "other (1 before)": (0.5, 1), "(conversion)": (0.99, 5), "(no conversion)": (0.99, 1)}
    # the ends' column, packed as Plotly packs it: shares 5/6 and 1/6 of 1 - 0.03 (one pad
    # of 0.03 between them), each centred: 5/12 × 0.97 and 5/6 × 0.97 + 0.03 + 1/12 × 0.97
    assert nodes["(conversion)"]["y"] == pytest.approx(5 / 12 * 0.97)
    assert nodes["(no conversion)"]["y"] == pytest.approx(11 / 12 * 0.97 + 0.03)
    # without the drop-off: the conversions only
    converted = journey_map_data(wh, top=2, drop_off=False)
    assert sorted(map(tuple, converted.to_numpy().tolist())) == sorted(want[:-1])
    # one step: the last touches only; every path is kept
    last = journey_map_data(wh, steps=1)
    assert _records(last, ["source", "target"])[("Paid Search", "(conversion)")][
        "journeys"] == 2  # p1#1, p2
    assert set(last.source) == {"Email", "Paid Search", "(no touch)"}
    # April: p1#2, p3, p4 converted; p3's open journey's last touch is on 2 April
    april = journey_map_data(wh, since=datetime(2025, 4, 1))
    assert april.groupby("target").journeys.sum().to_dict() == {"(conversion)": 3,
                                                                "(no conversion)": 1}
    # before April: p3's open journey ends after the window, so it is not drawn
    march = journey_map_data(wh, until=datetime(2025, 4, 1))
    assert set(march.target) == {"Paid Search", "(conversion)"}


def test_model_ranking_against_the_truth_by_hand(wh: BaseBackend, truth: Path,
                                                 tmp_path: Path) -> None:
    # first purchases only (p1#2 is p1's second): linear gives Email 0.5 (p2) + 1 (p4),
    # Organic 0.5 and Paid Search 0.5 + 0.5 (p1#1, p2) → shares 1/2, 1/6, 1/3; last touch
    # gives Paid Search 2, Email 1 → 2/3, 1/3, 0. The truth's shares: paid 3/4, email 1/4.
    # L1 linear = |1/2 - 1/4| + |1/6 - 0| + |1/3 - 3/4| = 5/6, worst paid search (-5/12);
    # last touch = 1/12 + 0 + 1/12 = 1/6: ranked first
    got = model_ranking_data(wh, truth=(truth,))
    assert list(got.model) == ["last_touch", "linear"]
    assert got.l1_share.tolist() == pytest.approx([1 / 6, 5 / 6])
    linear = _records(got, "model")["linear"]
    assert linear["worst_channel"] == "paid_search"
    assert linear["worst_error"] == pytest.approx(-5 / 12)
    assert got.attrs["truth"] == str(truth)
    assert got.attrs["note"].startswith("ranked on this warehouse's prepared journeys")
    bars = figures.model_ranking_figure(got).data[0]
    assert list(bars.y) == ["last_touch", "linear"]
    assert list(bars.text) == ["0.167", "0.833"]
    # no truth: said, never made up; a B2B truth is about deal_won, not purchases
    with pytest.raises(MissingInputError, match="no ground-truth file, so no ranking"):
        model_ranking_data(wh)
    b2b = tmp_path / "b2b.json"
    b2b.write_text(json.dumps({**TRUTH, "b2b": True}))
    with pytest.raises(MissingInputError, match="no ground-truth file is about 'purchase'"):
        model_ranking_data(wh, truth=(b2b,))
    assert list(model_ranking_data(wh, truth=(b2b, truth)).model) == ["last_touch", "linear"]
    with pytest.raises(MissingInputError, match=r"nowhere\.json: no such file"):
        model_ranking_data(wh, truth=(tmp_path / "nowhere.json",))


def test_funnel_stages_and_quality_by_hand(wh: BaseBackend) -> None:
    # the lifecycle stages anyone entered, cumulative: each person counts at every stage up
    # to the furthest reached: p1 retention, p2 and p4 decision (both skipped
    # consideration: counted there too), p3 awareness
    funnel = funnel_data(wh)
    assert list(funnel.step) == [f"stage:lifecycle/{s}" for s in
                                 ("awareness", "consideration", "decision", "retention")]
    assert funnel.entered.tolist() == [4, 3, 3, 1]
    assert funnel.dropped.tolist()[:3] == [1, 0, 2]
    assert funnel.attrs["note"] == (
        "cumulative funnel: a person counts at every step up to the furthest one it reached, "
        "skipped steps included (`touchline funnel --mode ordered`: only the steps reached in "
        "order)")
    assert figures.funnel_figure(funnel).layout.title.text.startswith("cumulative funnel")
    # in order: only p1 considered, so only p1 goes on to decision and retention
    ordered = funnel_data(wh, mode="ordered")
    assert ordered.entered.tolist() == [4, 1, 1, 1]
    assert ordered.attrs["note"].startswith("ordered funnel: a person counts at a step when")
    # days since the previous stage entered: consideration p1 4 d 1 h; decision p1 5 min,
    # p2 18 d 5 min (from awareness), p4 30 min → median 30 min; retention p1 36 d
    stages = _records(stage_timeline_data(wh), "stage")
    assert stages["awareness"] == {"stage_order": 1, "units": 4, "median_days": None,
                                   "from_previous": None, "from_first": 1.0}
    # the KPIs under each stage: units 4, 1, 3, 1 → of the previous 1/4, 3/1 (p2 and p4
    # skipped consideration), 1/3; of the first 1/4, 3/4, 1/4
    assert [stages[s]["from_previous"] for s in ("consideration", "decision", "retention")] \
        == pytest.approx([0.25, 3.0, 1 / 3])
    assert [stages[s]["from_first"] for s in ("consideration", "decision", "retention")] \
        == pytest.approx([0.25, 0.75, 0.25])
    timeline = stage_timeline_data(wh)
    assert timeline.attrs["note"].startswith("the stage timeline counts each person at the "
                                             "stages it entered")
    drawn = figures.stage_timeline_figure(timeline)
    assert list(drawn.data[0].x) == [0, 1, 2, 3]  # evenly spaced: no label on another
    texts = [a.text for a in drawn.layout.annotations]
    assert texts == ["4 persons", "1 person<br>25% of the previous<br>25% of the first",
                     "3 persons<br>300% of the previous (some skipped it)<br>75% of the first",
                     "1 person<br>33% of the previous<br>25% of the first",
                     "median 4.0 d", "median 30 min", "median 36.0 d"]
    assert stages["consideration"]["median_days"] == pytest.approx(4 + 1 / 24)
    assert stages["decision"]["units"] == 3
    assert stages["decision"]["median_days"] == pytest.approx(30 / 1440)
    assert stages["retention"]["median_days"] == pytest.approx(36.0)
    assert list(stage_timeline_data(wh, stage_model="funnel").stage) == ["top"]
    # rejects by step and reason, most first
    quality = data_quality_data(wh)
    assert [tuple(r) for r in quality.to_numpy().tolist()] == [
        ("ingest:events", "bad_timestamp", 2), ("drop_bots", "bot", 1),
        ("ingest:deals", "missing_field", 1)]
    assert data_quality_data(wh, since=datetime(2025, 4, 1)).rows.sum() == 2


def test_retention_clv_nps_and_reviews_by_hand(wh: BaseBackend) -> None:
    # purchases: p1 on 5 March and 10 April (100 + 50), p2 20 March (200), p3 15 April (80,
    # CRM), p4 20 April (30). Cohort March: p1, p2; p1 buys again a month later → 1, 1/2.
    # Cohort April: p3, p4 → 1
    cohorts = figures.retention_data(wh)
    assert [(f"{c:%Y-%m}", m, n, a, r) for c, m, n, a, r in cohorts.to_numpy().tolist()] == [
        ("2025-03", 0, 2, 2, 1.0), ("2025-03", 1, 2, 1, 0.5), ("2025-04", 0, 2, 2, 1.0)]
    heat = figures.retention_figure(cohorts).data[0]
    assert list(heat.y) == ["2025-03 (2)", "2025-04 (2)"] and list(heat.x) == [0, 1]
    assert heat.z[0].tolist() == [1.0, 0.5] and heat.z[1][0] == 1.0
    assert math.isnan(heat.z[1][1]) and list(heat.text[1]) == ["100%", ""]
    # CLV so far: p4 30, p3 80, p1 150, p2 200 → four bins of 50 from 0: 30 | 80 | - | 150,
    # 200 (the last bin keeps its end); mean 460 / 4 = the historical_clv KPI's 115
    clv = figures.clv_distribution_data(wh, bins=4)
    assert clv.to_numpy().tolist() == [[0.0, 50.0, 1], [50.0, 100.0, 1], [100.0, 150.0, 0],
                                       [150.0, 200.0, 2]]
    assert (clv.attrs["customers"], clv.attrs["mean"], clv.attrs["median"]) == (
        4, 115.0, pytest.approx(115.0))
    assert figures.clv_distribution_data(wh).customers.sum() == 4  # 20 bins of 10
    # before April: p1 (100 so far) and p2 (200): both in [100, 200] of two bins of 100
    march = figures.clv_distribution_data(wh, until=datetime(2025, 4, 1), bins=2)
    assert march.customers.tolist() == [0, 2] and march.attrs["mean"] == 150.0
    bars = figures.clv_distribution_figure(clv).data[0]
    assert list(bars.x) == [25.0, 75.0, 125.0, 175.0] and list(bars.y) == [1, 1, 0, 2]
    # NPS: p1's 10 (user u1, first touch Organic Search): one promoter
    nps = _records(figures.nps_by_channel_data(wh), "channel")
    assert nps["Organic Search"]["answers"] == 1 and nps["Organic Search"]["nps"] == 100.0
    assert list(nps) == ["Organic Search"]
    # reviews: Ann's 5 stars (her e-mail, any case: p1, Organic Search), a stranger's 2
    reviews = figures.reviews_by_channel_data(wh)
    assert _records(reviews, "channel") == {
        "Organic Search": {"reviews": 1, "review_rating": 5.0},
        "Unassigned": {"reviews": 1, "review_rating": 2.0}}
    assert list(figures.reviews_by_channel_figure(reviews).data[0].text) == [
        "1 reviews", "1 reviews"]
    with pytest.raises(InputError, match="no review in the window"):
        figures.reviews_by_channel_data(wh, since=datetime(2026, 1, 1))


def test_device_and_b2b_filters_by_hand(wh: BaseBackend) -> None:
    # each session's device from its first touch's user agent (serve_kit.AGENTS)
    devices = dict(figures.session_devices(wh).to_pandas().to_numpy().tolist())
    assert devices == {"anon:p1#1": "desktop", "anon:p1#2": "mobile", "anon:p1#3": "tablet",
                       "anon:p2#4": "desktop", "anon:p2#5": "mobile",
                       "anon:p3#6": "(not set)", "anon:p4#7": "desktop"}
    agents = ibis.memtable({"ua": [
        "Mozilla/5.0 (Linux; Android 14; Pixel 8) Chrome/124.0 Mobile Safari/537.36",
        "Mozilla/5.0 (Linux; Android 13; SM-X710) Chrome/124.0 Safari/537.36",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) Safari/605.1.15", "  ", None]})
    got = wh.execute(agents.select(d=dimensions.device_category(agents.ua))).d.tolist()
    assert got == ["mobile", "tablet", "desktop", "(not set)", "(not set)"]
    # mobile: p1's paid click (s2) and p2's (s5), the second touch of each
    mobile = _records(model_comparison_data(wh, device="mobile"), ["channel", "model"])
    assert {k: v["conversions"] for k, v in mobile.items()} == {
        ("Paid Search", "last_touch"): 2.0, ("Paid Search", "linear"): 1.0}
    channels = _records(channel_credits_data(wh, model="linear", device="mobile"), "channel")
    # touches on mobile: s2's t2, t3 and s5's t7
    assert channels == {"Paid Search": {"touches": 3, "conversions": 1.0, "revenue": 150.0,
                                        "spend": None, "cpa": None, "roas": None}}
    by_campaign = channel_credits_data(wh, model="linear", device="desktop", by="campaign")
    # desktop: s1 (p1, no campaign) 0.5, s4 (p2, march) 0.5, s7 (p4, april) 1; one touch
    # each (t1, t6, t9)
    assert _records(by_campaign, "campaign") == {
        "april": {"touches": 1, "conversions": 1.0, "revenue": 30.0, "spend": None,
                  "cpa": None, "roas": None},
        "(not set)": {"touches": 1, "conversions": 0.5, "revenue": 50.0, "spend": None,
                      "cpa": None, "roas": None},
        "march": {"touches": 1, "conversions": 0.5, "revenue": 100.0, "spend": None,
                  "cpa": None, "roas": None}}
    # the journey map on desktop: p1#1 by its organic visit, p2 and p4 by e-mail; p1#2 (a
    # tablet) and p3 (no touch; its open journey's call has no device) are left out
    links = journey_map_data(wh, device="desktop")
    assert sorted(map(tuple, links.to_numpy().tolist())) == [
        (1, "Email", 0, "(conversion)", 2), (1, "Organic Search", 0, "(conversion)", 1)]
    # B2C: every serve_kit journey is a person's; spend is not split by unit
    b2c = _records(channel_credits_data(wh, model="linear", unit="person"), "channel")
    assert b2c["Email"] == {"touches": 4, "conversions": 2.5, "revenue": 180.0,
                            "spend": None, "cpa": None, "roas": None}
    overview = _records(overview_data(wh, since=datetime(2025, 4, 1),
                                      until=datetime(2025, 5, 1), unit="person"), "metric")
    assert overview["conversions"]["value"] == 3.0 and overview["spend"]["value"] is None
    # B2B: no account journey converts; the account's one stage
    with pytest.raises(InputError, match=r"no B2B \(accounts\) journeys end in a conversion"):
        model_comparison_data(wh, unit="account")
    assert stage_timeline_data(wh, unit="account").units.tolist() == [1]
    with pytest.raises(ConfigError, match="device 'phone': choose from desktop, mobile"):
        figures.check_filters(device="phone", unit=None)
    with pytest.raises(ConfigError, match="unit 'b2b': choose from account, person"):
        figures.check_filters(device=None, unit="b2b")


def test_person_timeline_by_hand(wh: BaseBackend) -> None:
    # p1 found by user id, e-mail or person id: five touches in three sessions, four stages,
    # two purchases, one NPS answer; linear credit on each session's first touch
    frame = person_timeline_data(wh, "ann@example.com")
    assert frame.attrs["unit_id"] == "p1"
    assert person_timeline_data(wh, "u1").equals(frame)
    rows = list(zip(frame.kind, frame.lane, frame.channel.fillna(""), frame.detail,
                    strict=True))
    assert rows == [
        ("stage", "stage", "", "lifecycle: awareness"),
        ("touch", "touches", "Organic Search", "/"),
        ("stage", "stage", "", "lifecycle: consideration"),
        ("touch", "touches", "Paid Search", "/pricing"),
        ("stage", "stage", "", "lifecycle: decision"),
        ("touch", "touches", "Paid Search", "Order Completed"),
        ("conversion", "conversion", "", "purchase #1"),
        ("touch", "touches", "Email", "/news"),
        ("stage", "stage", "", "lifecycle: retention"),
        ("touch", "touches", "Email", "Order Completed"),
        ("conversion", "conversion", "", "purchase #2"),
        ("survey", "survey", "", "survey NPS 10 heard about us: a friend"),
    ]
    touches = frame[frame.kind == "touch"]
    assert touches.credit.fillna(-1).tolist() == [0.5, 0.5, -1, 1.0, -1]
    # what each row is, by its marker: page views and orders are visits; the answer holds an
    # NPS score (first) and the self-reported source
    assert frame.mark.tolist() == ["stage", "visit", "stage", "visit", "stage", "visit",
                                   "conversion", "visit", "stage", "visit", "conversion",
                                   "NPS answer"]
    drawn = figures.person_timeline_figure(frame)
    # every lane named, the stages on top; each stage labelled by its name alone
    assert list(drawn.layout.yaxis.ticktext) == ["touches", "survey", "conversion", "stage"]
    labels = {(a.y, a.text) for a in drawn.layout.annotations}
    assert {t for y, t in labels if y == "stage"} == {"awareness", "consideration",
                                                      "decision", "retention"}
    assert ("survey", "NPS 10 heard about us: a friend") in labels
    with pytest.raises(InputError, match="no person or account is named"):
        person_timeline_data(wh, "nobody@example.com")
    # the account of p1 and p2 (found by its domain): each stakeholder's touches on a lane
    account = person_timeline_data(wh, "acme.example")
    assert (account.attrs["unit"], account.attrs["unit_id"]) == ("account",
                                                                 "domain:acme.example")
    touches = account[account.kind == "touch"]
    assert list(zip(touches.lane, touches.detail, strict=True)) == [
        ("p1", "/"), ("p2", "/"), ("p1", "/pricing"), ("p1", "Order Completed"),
        ("p2", "/pricing"), ("p1", "/news"), ("p1", "Order Completed")]
    assert list(account.kind[account.kind != "touch"]) == ["survey"]
    assert list(figures.person_timeline_figure(account).layout.yaxis.ticktext) == [
        "p2", "p1", "survey"]


def test_timeline_labels_close_in_time_climb_and_stay_inside() -> None:
    # on an axis of 100: 0 and 5 are close (the second climbs), 10 climbs again, 12 finds no
    # free level (hover only), 50 is far from all (level 0); the first anchored left, 95
    # right, so neither is clipped
    assert figures._staggered([0, 5, 10, 12, 50, 95], 0, 100) == [
        (0, "left"), (1, "left"), (2, "left"), (None, "left"), (0, "center"), (0, "right")]


def test_stage_kpis_by_hand(wh: BaseBackend) -> None:
    got = stage_kpis_data(wh)
    rows = _records(got, "kpi")
    # 7 sessions of 4 new people; spend 60 + 40 + 30; linear credits of the four purchases
    # with a touch (p3's CRM sale has none): 4 conversions worth 100 + 50 + 200 + 30
    assert rows["sessions"]["value"] == 7.0 and rows["sessions"]["stage"] == "consideration"
    assert rows["new_visitors"]["value"] == 4.0
    assert rows["paid_cost"]["value"] == 130.0
    assert (rows["conversions"]["value"], rows["revenue"]["value"]) == (4.0, 380.0)
    assert rows["cpa"]["value"] == pytest.approx(130 / 4)
    assert rows["roas"]["value"] == pytest.approx(380 / 130)
    # days from first touch to purchase: 4 d 1 h 5 min, 5 min, 18 d 5 min, 30 min → median
    # of the middle two
    assert rows["days_to_convert"]["value"] == pytest.approx((4 + 65 / 1440 + 30 / 1440) / 2)
    assert rows["nps"] == {"stage": "advocacy", "value": 100.0, "unit": "score (-100 to 100)",
                           "formula": rows["nps"]["formula"]}  # one promoter (p1's 10)
    assert list(dict.fromkeys(got.stage)) == ["awareness", "consideration", "decision",
                                             "retention", "advocacy"]
    # four buyers, one of whom (p1) bought twice
    assert rows["repeat_purchase_rate"]["value"] == 0.25
    skipped = got.attrs["skipped"]
    assert "touchline ingest FILE --kind search_console" in skipped["search_clicks"]
    assert skipped["retention"].startswith("a table: ")
    # under the funnel preset, the stage names are the funnel's
    assert stage_kpis_data(wh, stage_model="funnel").set_index("kpi").stage["nps"] == "bottom"


def test_stage_kpis_find_the_first_sessions_once_per_query(
        wh: BaseBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each query of the KPI page's headlines (a part: a KPI, or a KPI family in one
    aggregate) finds each person's first session at most once, however many of its KPIs
    read the first sessions (new visitors, returning visitors and sessions, conversion rate,
    the purchases' acquisition channel): a window over every session per KPI made the page
    20 % slower on the 20,000-people demo, and the aggregation that replaced the window was
    inlined three times until it ended in a select."""
    compiled: list[str] = []
    compile_sql = type(wh).compile

    def recording(self: BaseBackend, expr: ibis.Expr, *args: object, **kwargs: object) -> str:
        sql = compile_sql(self, expr, *args, **kwargs)
        compiled.append(sql)
        return sql

    monkeypatch.setattr(type(wh), "compile", recording)
    got = stage_kpis_data(wh)
    assert {"new_visitors", "returning_visitors", "sessions", "conversion_rate"} <= set(got.kpi)
    # each person's first start (metrics.kpis._first_of_each_person)
    first = re.compile(r'MIN\(["`]\w+["`]\.["`]started_at["`]\) AS ["`]_at["`]')
    found = [len(first.findall(sql)) for sql in compiled]
    assert max(found) == 1, found  # on DuckDB the sessions' and new visitors' queries


def test_every_chart_draws_its_data(wh: BaseBackend, truth: Path) -> None:
    """Each registered chart's figure holds its data's numbers (not pixels)."""
    filters = Filters(model="linear", truth=(truth,))
    drawn = {}
    for name, chart in CHARTS.items():
        if name == "calls":  # none imported: said instead (tests/serve/test_quality.py)
            with pytest.raises(MissingInputError, match="no calls table"):
                chart_data(wh, chart, filters)
            continue
        drawn[name] = chart.figure(chart_data(wh, chart, filters)).data
    # NPS: serve_kit's one answer (1 May) is after the window (22 March to 21 April)
    assert [t.value for t in drawn["overview"]] == [3, 160, 40, 4, 40 / 3, 1, None]
    assert [t.delta.reference for t in drawn["overview"]] == [2, 300, 90, 300 / 90, 45, 1,
                                                              None]
    assert figures.NO_ANSWERS in drawn["overview"][6].title.text
    bars = drawn["channels"][0]
    assert list(bars.x) == ["Email", "Paid Search", "Organic Search", "Paid Social"]
    assert list(bars.y) == [2.5, 1.0, 0.5, 0.0]
    assert [t.name for t in drawn["models"]] == ["last_touch", "linear"]
    assert list(drawn["model_ranking"][0].y) == ["last_touch", "linear"]
    assert drawn["retention"][0].type == "heatmap"
    assert sum(drawn["clv"][0].y) == 4
    assert list(drawn["nps"][0].y) == [100.0]
    assert list(drawn["reviews"][0].y) == [5.0, 2.0]
    sankey = drawn["journey_map"][0]
    conversion = list(sankey.node.label).index("(conversion)")
    assert sum(v for t, v in zip(sankey.link.target, sankey.link.value, strict=True)
               if t == conversion) == 5
    dropped = list(sankey.node.label).index("(no conversion)")
    assert sum(v for t, v in zip(sankey.link.target, sankey.link.value, strict=True)
               if t == dropped) == 1
    assert sankey.arrangement == "snap" and sankey.node.x[conversion] == 0.99
    assert list(drawn["funnel"][0].x) == [4, 3, 3, 1]
    assert len(drawn["stages"][0].x) == 4
    assert "sessions" in list(drawn["stage_kpis"][0].cells.values[1])
    assert sorted(t.name for t in drawn["data_quality"]) == [
        "bad_timestamp", "bot", "missing_field"]
    # no prepare step dropped a bot (serve_kit's reject is not a prepare step's) of the 9
    # touches; no duplicate; p1's 2 links, none cut
    assert list(drawn["bot_share"][0].y) == [0, 0]
    assert [sum(t.y) for t in drawn["duplicates"]] == [0, 0, 0]
    assert list(drawn["identity_cuts"][0].y) == [0, 0, 0]
    assert list(drawn["freshness"][0].cells.values[0])[:2] == ["data last loaded",
                                                               "files last loaded"]
    timeline = figures.person_timeline_figure(person_timeline_data(wh, "p1"))
    names = [t.name for t in timeline.data]
    assert names == ["Email", "Organic Search", "Paid Search", "stage", "conversion",
                     "NPS answer", "visit (touch)"]
    # one colour per channel on every chart
    assert timeline.data[0].marker.color == figures.channel_colour("Email") == \
        bars.marker.color[0]


def test_device_filter_on_the_overview_funnel_and_stages_by_hand(wh: BaseBackend) -> None:
    # March against [30 Jan, 1 March). Linear credits of touches on mobile: p1#1's paid click
    # (s2: 0.5 of 100) and p2's (s5: 0.5 of 200); p2's lead came from her desktop visit (s4)
    march = {"since": datetime(2025, 3, 1), "until": datetime(2025, 4, 1)}
    mobile = _records(overview_data(wh, **march, device="mobile", model="linear"), "metric")
    assert (mobile["conversions"]["value"], mobile["revenue"]["value"]) == (1.0, 150.0)
    assert mobile["leads"]["value"] == 0.0 and mobile["conversions"]["previous"] == 0.0
    assert mobile["spend"]["value"] is None and mobile["roas"]["value"] is None  # not split
    assert mobile["cpa"]["value"] is None
    desktop = _records(overview_data(wh, **march, device="desktop", model="linear"), "metric")
    assert (desktop["conversions"]["value"], desktop["revenue"]["value"]) == (1.0, 150.0)
    assert desktop["leads"]["value"] == 1.0  # lead:p2:1, credited to s4
    # the model moves the credits: last touch gives both March purchases to the mobile clicks
    last = _records(overview_data(wh, **march, device="desktop", model="last_touch"),
                    "metric")
    assert (last["conversions"]["value"], last["revenue"]["value"]) == (0.0, 0.0)
    # April [1 April, 1 May) against [2 March, 1 April): desktop p4 (s7: 1 of 30) against
    # p1#1 (s1: 0.5 of 100), p2 (s4: 0.5 of 200) and p2's lead
    april = {"since": datetime(2025, 4, 1), "until": datetime(2025, 5, 1)}
    got = overview_data(wh, **april, device="desktop", model="linear")
    rows = _records(got, "metric")
    assert rows["conversions"] == {"unit": "count", "value": 1.0, "previous": 1.0,
                                   "change": 0.0}
    assert (rows["revenue"]["value"], rows["revenue"]["previous"]) == (30.0, 150.0)
    assert (rows["leads"]["value"], rows["leads"]["previous"]) == (0.0, 1.0)
    assert got.attrs["device"] == "desktop" and got.attrs["model"] == "linear"
    # the devices split the credited conversions: April's p1#2 (tablet) and p4 (desktop); p3's
    # CRM sale has no touch, so no device (the unfiltered overview counts it: 3)
    per_device = {d: _records(overview_data(wh, **april, device=d), "metric")["conversions"][
        "value"] for d in dimensions.DEVICES}
    assert per_device == {"desktop": 1.0, "mobile": 0.0, "tablet": 1.0, "(not set)": 0.0}
    tiles = figures.overview_figure(got)
    assert "desktop" in tiles.layout.title.text and "credited by linear" in tiles.layout.title.text
    assert tiles.data[0].number.valueformat == ",.1f"  # credits: fractions of conversions
    # the funnel and the stage timeline count units by the device of their first session:
    # p1 (s1), p2 (s4) and p4 (s7) on desktop, p3 (s6, a call) not set
    first = figures.units_first_on(wh, "desktop").to_pandas()
    assert sorted(first.unit_id) == ["p1", "p2", "p4"]
    desktop_funnel = funnel_data(wh, device="desktop")
    assert desktop_funnel.entered.tolist() == [3, 3, 3, 1]
    assert funnel_data(wh, device="(not set)").entered.tolist() == [1, 0, 0, 0]
    with pytest.raises(InputError, match="no persons whose first session was on mobile"):
        funnel_data(wh, device="mobile")
    assert "first came on desktop" in figures.funnel_figure(desktop_funnel).layout.title.text
    stages = _records(stage_timeline_data(wh, device="desktop"), "stage")
    # decision: p1 5 min, p2 18 d 5 min, p4 30 min after their previous stage → 30 min
    assert {s: r["units"] for s, r in stages.items()} == {
        "awareness": 3, "consideration": 1, "decision": 3, "retention": 1}
    assert stages["decision"]["median_days"] == pytest.approx(30 / 1440)
    assert _records(stage_timeline_data(wh, device="(not set)"), "stage") == {
        "awareness": {"stage_order": 1, "units": 1, "median_days": None,
                      "from_previous": None, "from_first": 1.0}}


def test_every_chart_takes_each_filter_or_says_why_not() -> None:
    """Each chart × dashboard filter: the data function takes it, or the page notes why it
    does not apply (and never both)."""
    import inspect

    functions = {name: chart.data for name, chart in CHARTS.items()}
    functions["person"] = person_timeline_data
    for name, function in functions.items():
        taken = set(inspect.signature(function).parameters)
        why = figures.FILTER_NOT_APPLIED.get(name, {})
        for f in figures.FILTER_LABELS:
            key = "since" if f == "until" else f
            assert (f in taken) != (key in why), (name, f)
    assert figures.filters_not_applied("data_quality", ["since", "device", "unit"]) == [
        "device does not apply here: rejected records never reached the journeys: they have "
        "no conversion, credit, stage, customer kind or device",
        "B2B vs B2C does not apply here: rejected records never reached the journeys: they "
        "have no conversion, credit, stage, customer kind or device"]
    # since and until are one date range: one note
    assert figures.filters_not_applied("model_ranking", ["since", "until"]) == [
        "date range does not apply here: the ground truth covers the whole simulation, so "
        "all dates are ranked"]
    assert figures.filters_not_applied("channels", ["device", "model", "since"]) == []


def test_channel_and_campaign_filters_by_hand(wh: BaseBackend) -> None:
    march = {"since": datetime(2025, 3, 1), "until": datetime(2025, 4, 1)}
    april = {"since": datetime(2025, 4, 1), "until": datetime(2025, 5, 1)}
    # March, linear, touches of Paid Search: p1#1's click (s2: 0.5 of 100) and p2's (s5: 0.5
    # of 200); spend of paid_search in March: 60 (the ads export's "paid_search")
    paid = _records(overview_data(wh, **march, channel="Paid Search", model="linear"),
                    "metric")
    assert {m: r["value"] for m, r in paid.items()} == {
        "conversions": 1.0, "revenue": 150.0, "spend": 60.0, "roas": 2.5, "cpa": 60.0,
        "leads": 0.0, "nps": None}  # answers are not split by touches
    assert paid["conversions"]["previous"] == 0.0 and paid["cpa"]["previous"] is None
    # the campaign "spring" is those two clicks too, and the ads export's "Spring " spend
    spring = _records(overview_data(wh, **march, campaign="spring"), "metric")
    assert {m: r["value"] for m, r in spring.items()} == {m: r["value"] for m, r in
                                                          paid.items()}
    # April: p3's lead came from a Paid Search click (s6); no purchase did; 40 spent
    paid = _records(overview_data(wh, **april, channel="Paid Search"), "metric")
    assert {m: r["value"] for m, r in paid.items()} == {
        "conversions": 0.0, "revenue": 0.0, "spend": 40.0, "roas": 0.0, "cpa": None,
        "leads": 1.0, "nps": None}
    # Email in March, campaign "march": half of p2's sale (s4) and p2's lead; no spend
    email = _records(overview_data(wh, **march, channel="Email", campaign="march"), "metric")
    assert {m: r["value"] for m, r in email.items()} == {
        "conversions": 0.5, "revenue": 100.0, "spend": 0.0, "roas": None, "cpa": 0.0,
        "leads": 1.0, "nps": None}
    # the model moves the credits: last touch gives p2's sale to s5
    assert _records(overview_data(wh, **march, channel="Email", campaign="march",
                                  model="last_touch"), "metric")["conversions"]["value"] == 0.0
    tiles = figures.overview_figure(overview_data(wh, **march, channel="Email"))
    assert "Email" in tiles.layout.title.text and "credited by linear" in tiles.layout.title.text

    # the channel page: Paid Search's campaigns (spring: both clicks; 60 + 40 spent)
    by_campaign = channel_credits_data(wh, by="campaign", channel="Paid Search")
    # (its touches: t2, t3, t7, t8)
    assert _records(by_campaign, "campaign") == {"spring": {
        "touches": 4, "conversions": 1.0, "revenue": 150.0, "spend": 100.0, "cpa": 100.0,
        "roas": 1.5}}
    # ... the channels of the campaign "spring" (matched as spend is: "Spring" is "spring")
    assert _records(channel_credits_data(wh, campaign="Spring"), "channel") == {
        "Paid Search": {"touches": 4, "conversions": 1.0, "revenue": 150.0, "spend": 100.0,
                        "cpa": 100.0, "roas": 1.5}}
    # last touch: Email closed p1's second sale (50) and p4's (30)
    assert _records(channel_credits_data(wh, channel="Email", model="last_touch"),
                    "channel") == {"Email": {"touches": 4, "conversions": 2.0,
                                             "revenue": 80.0, "spend": 0.0, "cpa": 0.0,
                                             "roas": None}}
    # with the device: Email's desktop touches, s4 (0.5 of 200) and s7 (1 of 30)
    desktop = channel_credits_data(wh, channel="Email", device="desktop")
    assert _records(desktop, "channel") == {"Email": {  # touches t6 (s4) and t9 (s7)
        "touches": 2, "conversions": 1.5, "revenue": 130.0, "spend": None, "cpa": None,
        "roas": None}}
    assert "desktop, Email" in figures.channel_credits_figure(desktop).layout.title.text

    # model comparison: Email under each model; the campaign "april" (s3, s7)
    models = model_comparison_data(wh, channel="Email")
    assert dict(zip(zip(models.channel, models.model, strict=True), models.conversions,
                    strict=True)) == {("Email", "last_touch"): 2.0, ("Email", "linear"): 2.5}
    models = model_comparison_data(wh, campaign="april")
    assert dict(zip(models.model, models.conversions, strict=True)) == {
        "last_touch": 2.0, "linear": 2.0}

    # journey map: the purchases with a Paid Search touch, p1#1 (organic, paid) and p2
    # (e-mail, paid), drawn with all their touches, and p3's open journey (one paid click);
    # no '(no touch)' node
    links = journey_map_data(wh, channel="Paid Search")
    assert _records(links, ["source_step", "source", "target_step", "target"]) == {
        (2, "Organic Search", 1, "Paid Search"): {"journeys": 1},
        (2, "Email", 1, "Paid Search"): {"journeys": 1},
        (1, "Paid Search", 0, "(conversion)"): {"journeys": 2},
        (1, "Paid Search", 0, "(no conversion)"): {"journeys": 1}}
    assert _records(journey_map_data(wh, campaign="april"), ["source", "target"]) == {
        ("Email", "(conversion)"): {"source_step": 1, "target_step": 0, "journeys": 2}}

    # funnel and stage timeline: units by their first session's channel or campaign: p1
    # Organic Search (no campaign), p2 Email (march), p3 Paid Search (spring), p4 Email
    # (april); their funnels add up to the unfiltered [4, 3, 3, 1]
    entered = {ch: funnel_data(wh, channel=ch).entered.tolist()
               for ch in ("Organic Search", "Email", "Paid Search")}
    assert entered == {"Organic Search": [1, 1, 1, 1], "Email": [2, 2, 2, 0],
                       "Paid Search": [1, 0, 0, 0]}
    assert funnel_data(wh, campaign="(not set)").entered.tolist() == [1, 1, 1, 1]
    # the same split in one chart: the funnel by first-touch channel, most units first (Email
    # 2, then Organic Search and Paid Search 1 each, by name), with each one's share of its
    # first step
    split = figures.funnel_by_channel_data(wh)
    assert {ch: part.entered.tolist() for ch, part in split.groupby("channel")} == entered
    assert list(dict.fromkeys(split.channel)) == ["Email", "Organic Search", "Paid Search"]
    assert split[split.channel == "Email"].from_first.tolist() == [1.0, 1.0, 1.0, 0.0]
    bars = figures.funnel_by_channel_figure(split).data
    assert [b.name for b in bars] == ["Email (2)", "Organic Search (1)", "Paid Search (1)"]
    assert list(bars[0].x) == ["consideration", "decision", "retention"]
    assert list(bars[2].y) == [0.0, 0.0, 0.0]
    assert bars[0].marker.color == figures.channel_colour("Email")
    # under the channel filter: that channel's units only
    assert set(figures.funnel_by_channel_data(wh, channel="Email").channel) == {"Email"}
    assert funnel_data(wh, campaign="march", device="desktop").entered.tolist() == [1, 1, 1, 0]
    with pytest.raises(InputError, match="no persons whose first session was from Email of "
                       "campaign spring"):
        funnel_data(wh, channel="Email", campaign="spring")
    assert "first came from Email" in figures.funnel_figure(
        funnel_data(wh, channel="Email")).layout.title.text
    # p1 alone: consideration 4 d 1 h after awareness, decision 5 min later, retention 36 d
    stages = _records(stage_timeline_data(wh, channel="Organic Search"), "stage")
    assert {s: (r["units"], r["median_days"]) for s, r in stages.items()} == {
        "awareness": (1, None), "consideration": (1, pytest.approx(4 + 1 / 24)),
        "decision": (1, pytest.approx(5 / 1440)), "retention": (1, pytest.approx(36.0))}
    assert figures.filters_not_applied("stage_kpis", ["channel", "campaign"]) == [
        "channel does not apply here: the KPIs are headlines over every touch (`touchline "
        "kpis --by channel` breaks them down by channel)",
        "campaign does not apply here: the KPIs are headlines over every touch (`touchline "
        "kpis --by campaign` breaks them down by campaign)"]
    assert figures.filters_not_applied("journey_map", ["channel", "campaign"]) == []


def test_overview_says_new_rather_than_an_infinite_change(wh: BaseBackend) -> None:
    # March against [31 January, 2 March): no purchase, spend or lead before 2 March
    got = overview_data(wh, since=datetime(2025, 3, 2), until=datetime(2025, 4, 1))
    rows = _records(got, "metric")
    assert (rows["conversions"]["value"], rows["conversions"]["previous"]) == (2.0, 0.0)
    assert rows["conversions"]["change"] is None
    tiles = {t.title.text.split("<br>")[0]: t for t in figures.overview_figure(got).data}
    conversions = tiles["Conversions"]
    assert conversions.mode == "number" and conversions.delta.reference is None
    assert figures.NO_PREVIOUS in conversions.title.text
    assert "Infinity" not in figures.overview_figure(got).to_json()


def test_overview_says_new_only_over_a_value(wh: BaseBackend) -> None:
    # March against [31 January, 2 March): conversions 2 (none before) are new; a metric that
    # is 0 or empty now as before (the tile of a value none had) says nothing of "new"
    got = overview_data(wh, since=datetime(2025, 3, 2), until=datetime(2025, 4, 1))
    got.loc[got.metric == "leads", ["value", "previous"]] = [0.0, 0.0]
    got.loc[got.metric == "roas", ["value", "previous"]] = [float("nan"), 0.0]
    tiles = {t.title.text.split("<br>")[0]: t for t in figures.overview_figure(got).data}
    assert figures.NO_PREVIOUS in tiles["Conversions"].title.text
    assert figures.NO_PREVIOUS not in tiles["Leads"].title.text
    assert figures.NO_PREVIOUS not in tiles["ROAS"].title.text
    assert tiles["Leads"].mode == "number" and tiles["ROAS"].mode == "number"


def test_empty_spend_columns_say_why(wh: BaseBackend) -> None:
    april = {"since": datetime(2025, 4, 1), "until": datetime(2025, 5, 1)}
    assert overview_data(wh, **april).attrs["note"] is None  # serve_kit has spend
    assert channel_credits_data(wh, model="linear").attrs["note"] is None
    # the device filter: spend is not split by device
    assert overview_data(wh, **april, device="desktop").attrs["note"] == figures.SPEND_NOT_SPLIT
    assert channel_credits_data(wh, model="linear", device="desktop").attrs["note"] == (
        figures.SPEND_NOT_SPLIT)
    spend = wh.table("spend").to_pyarrow()
    wh.create_table("spend", wh.table("spend").limit(0).to_pyarrow(), overwrite=True)
    try:
        got = overview_data(wh, **april)
        channels = channel_credits_data(wh, model="linear")
    finally:
        wh.create_table("spend", spend, overwrite=True)
    assert _records(got, "metric")["spend"]["value"] is None
    assert got.attrs["note"] == channels.attrs["note"] == figures.NO_SPEND
    assert "`touchline ingest FILE --kind spend`" in figures.NO_SPEND
    assert channels.spend.isna().all()


def test_funnel_times_are_days_and_its_labels_readable_numbers(wh: BaseBackend) -> None:
    funnel = funnel_data(wh)
    # p1 entered consideration 4 d 1 h after awareness (the only one to): in days, as the
    # stage timeline's median_days, and no column of seconds without a unit
    assert funnel.median_days.tolist()[1] == pytest.approx(4 + 1 / 24)
    # to decision from the previous stage each reached, as the stage timeline: p1 5 min, p2
    # 18 d 5 min (it skipped consideration), p4 30 min → 30 min; retention p1 36 d
    assert funnel.median_days.tolist()[2:] == pytest.approx([30 / 1440, 36.0])
    assert not {"p25", "median", "p75", "p90"} & set(funnel.columns)
    assert {"p25_days", "p75_days", "p90_days"} <= set(funnel.columns)
    big = funnel.assign(entered=[29_219, 2_004, 1_000, 10])
    trace = figures.funnel_figure(big).data[0]
    assert trace.textinfo == "text"
    assert list(trace.text) == ["29,219 (100% of the first)", "2,004 (7% of the first)",
                                "1,000 (3% of the first)", "10 (0% of the first)"]


def test_numbers_tables_leave_empty_cells_blank() -> None:
    from touchline.serve.report import data_table

    html = data_table(pd.DataFrame({"channel": ["Email", None], "value": [1.5, None]}))
    assert "None" not in html and "nan" not in html.lower()


def test_data_quality_says_its_window_is_when_records_were_rejected(wh: BaseBackend) -> None:
    assert data_quality_data(wh).attrs["note"] is None  # all dates: nothing to say
    april = data_quality_data(wh, since=datetime(2025, 4, 1))
    assert april.rows.sum() == 2
    assert april.attrs["note"] == (
        "records rejected while loading from 2025-04-01 (the date range is when a record was "
        "rejected, not its event's time); 2 rejected record(s) outside it: remove the date "
        "range to see them")
    later = data_quality_data(wh, since=datetime(2030, 1, 1), until=datetime(2030, 2, 1))
    assert later.empty
    assert later.attrs["note"].startswith(
        "records rejected while loading from 2030-01-01 and before 2030-02-01")
    assert later.attrs["note"].endswith(
        "4 rejected record(s) outside it, none inside it: remove the date range to see them")


def test_every_default_channel_has_its_own_colour() -> None:
    from touchline.prepare.channels import UNASSIGNED, default_rules

    default = {r.channel_group for preset in ("touchline", "ga4")
               for r in default_rules(preset=preset)} | {UNASSIGNED}
    colours = {c: figures.channel_colour(c) for c in sorted(default)}
    assert len(set(colours.values())) == len(default) == 22  # 19 GA4 groups, 3 touchline's
    # e.g. the pairs that shared a colour before
    for a, b in (("Direct", "Paid Search"), ("Display", "Offline"),
                 ("Organic Search", "Referral"), ("Organic Social", "Paid Social")):
        assert colours[a] != colours[b]
    # a channel outside the set: a colour no default channel has, the same every time
    tv = figures.channel_colour("TV")
    assert tv in figures.EXTRA_CHANNEL_COLOURS and tv not in colours.values()
    assert figures.channel_colour("TV") == tv


def test_overview_nps_with_its_change_in_points(con: BaseBackend) -> None:
    from factories import arrow_table

    from touchline import engine, store

    wh = build_warehouse(con)
    # May: serve_kit's promoter (10, 1 May) and a passive (8); April, the window before: a
    # detractor (3, 20 April) and a promoter (9)
    answers = [("r1", "u1", 10, "2025-05-01 00:00:00"), ("r2", "u2", 8, "2025-05-03 00:00:00"),
               ("r3", "u3", 3, "2025-04-20 00:00:00"), ("r4", "u4", 9, "2025-04-02 00:00:00")]
    engine.load_table(wh, "surveys", arrow_table(store.SURVEYS, [
        dict(response_id=r, person_id=p, nps_score=n, responded_at=datetime.fromisoformat(at))
        for r, p, n, at in answers]))
    may = {"since": datetime(2025, 5, 1), "until": datetime(2025, 5, 31)}  # before: 30 days
    got = _records(overview_data(wh, **may), "metric")["nps"]
    # now 100 * (1 - 0) / 2 = 50; before 100 * (1 - 1) / 2 = 0: +50 points
    assert got == {"unit": "score", "value": 50.0, "previous": 0.0, "change": 50.0}
    tile = figures.overview_figure(overview_data(wh, **may)).data[6]
    assert tile.title.text == "NPS" and tile.mode == "number+delta"
    assert (tile.value, tile.delta.reference, tile.delta.relative) == (50.0, 0.0, False)
    # June: no answer now, so no score and no change; the tile says so
    june = overview_data(wh, since=datetime(2025, 6, 1), until=datetime(2025, 7, 1))
    assert _records(june, "metric")["nps"]["value"] is None
    tile = figures.overview_figure(june).data[6]
    assert figures.NO_ANSWERS in tile.title.text and tile.mode == "number"
    # no survey imported at all: said the same way
    engine.load_table(wh, "surveys", arrow_table(store.SURVEYS, []))
    assert overview_data(wh, **may).attrs["nps_note"] == figures.NO_ANSWERS
    # under a touch filter the answers are not split: no score, and why
    assert overview_data(wh, **may, channel="Email").attrs["nps_note"] == figures.NPS_NOT_SPLIT


def test_a_data_driven_model_by_campaign_says_it_was_fitted_on_channels() -> None:
    from touchline.serve.figures import fitted_on_channels_note

    note = fitted_on_channels_note("markov", "campaign")
    assert note is not None and note.startswith("markov is fitted on channel paths")
    assert "`touchline attribute --model markov --by campaign`" in note
    assert fitted_on_channels_note("auto", "keyword") is not None
    # by channel, or a rule-based model: the same figures either way, nothing to say
    assert fitted_on_channels_note("markov", "channel") is None
    assert fitted_on_channels_note("linear", "campaign") is None
