"""Social, page, stage-rate and advocacy KPIs by hand: tiny tables whose figures are worked
out in the comments, on DuckDB and Spark."""

from __future__ import annotations

import math
from datetime import date
from typing import Any

import pandas as pd
import pytest
from factories import arrow_table
from ibis.backends import BaseBackend

from touchline import engine, store
from touchline.config import Settings
from touchline.errors import MissingInputError
from touchline.metrics.kpis import KPIS, compute, compute_family, computed_once


def _rows(con: BaseBackend, name: str, *keys: str, **options: Any) -> dict[Any, Any]:
    """The KPI as {key: {value column: value}} (one key: its value; none: the one row), dates
    as ISO text and NaN as None."""
    frame = compute(con, name, **options).to_pandas()
    # the same inside computed_once (the intermediates several KPIs read kept in the engine)
    with computed_once(con):
        pd.testing.assert_frame_equal(compute(con, name, **options).to_pandas(), frame)
    out = {}
    for record in frame.to_dict("records"):
        clean = {k: (None if isinstance(v, float) and math.isnan(v) else
                     v.isoformat()[:10] if hasattr(v, "isoformat") else v)
                 for k, v in record.items()}
        key = tuple(clean.pop(k) for k in keys)
        out[key[0] if len(key) == 1 else key] = clean
    if not keys:
        assert len(out) == 1, out
        return out[()]
    return out


# ---- social -----------------------------------------------------------------------------------
SOCIAL = [  # platform, account, date, followers, posts, impressions, engagements, likes,
    # comments, shares
    ("Instagram ", "@acme", "2025-02-28", 900, 0, 0, None, 0, 0, 0),
    ("instagram", "@acme", "2025-03-01", 1000, 1, 5000, None, 100, 10, 5),
    ("instagram", "@acme", "2025-03-15", 1100, 2, 3000, 200, 90, 20, 10),
    ("instagram", "@acme", "2025-04-02", 1050, 1, 2000, None, 40, 5, 5),
    ("linkedin", "acme-inc", "2025-03-10", 400, 1, 1000, 50, 20, 5, 5),
    ("linkedin", "acme-inc", "2025-03-20", None, 1, 500, None, 10, None, 0),
]
SOCIAL_COLUMNS = ("platform", "account", "date", "followers", "posts", "impressions",
                  "engagements", "likes", "comments", "shares")


def test_social_followers_growth_reach_and_engagements_by_hand(con: BaseBackend) -> None:
    rows = [dict(zip(SOCIAL_COLUMNS, (r[0], r[1], date.fromisoformat(r[2]), *r[3:]),
                     strict=True)) for r in SOCIAL]
    engine.load_table(con, "social", arrow_table(store.SOCIAL, rows))
    # each account's last count in the month ('Instagram ' is instagram); LinkedIn's 20 March
    # has no count, so its 10 March one stands
    assert _rows(con, "social_followers", "period", "platform", by=["month", "platform"]) == {
        ("2025-02-01", "instagram"): {"accounts": 1, "followers": 900},
        ("2025-03-01", "instagram"): {"accounts": 1, "followers": 1100},
        ("2025-03-01", "linkedin"): {"accounts": 1, "followers": 400},
        ("2025-04-01", "instagram"): {"accounts": 1, "followers": 1050}}
    assert _rows(con, "social_followers") == {"accounts": 2, "followers": 1050 + 400}
    # growth: March starts from Instagram's 28 February (900) and LinkedIn's first count (400,
    # a new account is no gain): 900 → 1100 and 400 → 400; April 1100 → 1050
    assert _rows(con, "social_follower_growth", "period", period="month") == {
        "2025-02-01": {"followers_before": 900, "new_followers": 0, "follower_growth": 0.0},
        "2025-03-01": {"followers_before": 1300, "new_followers": 200,
                       "follower_growth": pytest.approx(200 / 1300)},
        "2025-04-01": {"followers_before": 1100, "new_followers": -50,
                       "follower_growth": pytest.approx(-50 / 1100)}}
    # a window starting 1 March still takes the day before it as the base
    assert _rows(con, "social_follower_growth", since=date(2025, 3, 1))["new_followers"] == 150
    assert _rows(con, "social_reach", "platform", by=["platform"]) == {
        "instagram": {"posts": 4, "social_reach": 10_000},
        "linkedin": {"posts": 2, "social_reach": 1500}}
    # engagements where given, else likes + comments + shares: Instagram 0 + 115 + 200 + 50,
    # LinkedIn 50 + 10
    assert _rows(con, "social_engagements", "platform", by=["platform"]) == {
        "instagram": {"engagements": 365, "likes": 230, "comments": 35, "shares": 20,
                      "engagement_rate": pytest.approx(365 / 10_000)},
        "linkedin": {"engagements": 60, "likes": 30, "comments": 5, "shares": 5,
                     "engagement_rate": pytest.approx(60 / 1500)}}


# ---- a small prepared warehouse: three people, four sessions, their touches -----------------
SESSIONS = {  # id: person, start, end, landing page, channel, source
    "s1": ("p1", "2025-03-02 10:00", "2025-03-02 10:20", "/pricing", "Organic Search", "google"),
    "s2": ("p2", "2025-03-05 11:00", "2025-03-05 11:30", "/pricing", "Email", "newsletter"),
    "s3": ("p3", "2025-04-05 09:00", "2025-04-05 09:30", "/demo", "Paid Search", "google"),
    "s4": ("p1", "2025-04-03 08:00", "2025-04-03 08:10", "/blog", "Direct", "(direct)"),
}
TOUCHES = [  # session, minute, type, event, page path, order id
    ("s1", 0, "page", None, "/pricing", None),
    ("s1", 1, "track", "CTA Clicked", "/pricing", None),
    ("s1", 2, "page", None, "/pricing", None),
    ("s1", 3, "page", None, "/blog", None),  # no CTA was ever clicked on /blog
    ("s1", 4, "track", "Referral Sent", None, None),
    ("s2", 0, "page", None, "/pricing", None),
    ("s2", 1, "page", None, "/demo", None),
    ("s2", 2, "track", "Form Started", "/demo", None),
    ("s2", 3, "track", "Form Submitted", "/demo", None),
    ("s2", 4, "track", "CTA Clicked", "/demo", None),
    ("s2", 5, "track", "Referral Sent", None, None),
    ("s3", 0, "page", None, "/demo", None),
    ("s3", 1, "track", "Form Started", "/demo", None),
    ("s3", 2, "page", None, "/demo", None),
    ("s3", 15, "track", "Order Completed", "/checkout", "o-7"),
    ("s4", 0, "track", "Referral Sent", None, None),
]
JOURNEYS = {  # id: converted at, sessions in order
    "purchase:p3:1": ("2025-04-05 09:15", ["s3"]),
    "purchase:p1:1": ("2025-03-10 12:00", ["s1"]),  # bought by phone: in no session
    "lead:p2:1": ("2025-03-05 11:20", ["s2"]),
}
IDENTITIES = {"user:u1": "p1", "email:ann@x.com": "p1", "phone:+12025550143": "p2",
              "anon:a3": "p3"}
REVIEWS = [  # id, platform, rating, day, e-mail, phone, order id
    ("g1", "google", 5.0, "2025-03-01", "ann@x.com", None, None),  # p1 by e-mail
    ("g2", "Google", 4.0, "2025-03-20", None, "+12025550143", None),  # p2 by phone
    ("t1", "trustpilot", 2.0, "2025-04-05", None, None, "o-7"),  # p3 by order
    ("t2", "trustpilot", 4.5, "2025-04-06", None, None, None),  # nobody known
]
SURVEYS = [  # response, person id, e-mail, nps, review rating, heard about, segment
    ("r1", "u1", None, 10, 3.0, "Google", "pro"),  # p1, Organic Search
    ("r2", "a3", None, 6, None, "Saw an ad on Google", "pro"),  # p3, Paid Search
    ("r3", "u1", None, 9, None, "A friend", "free"),
    ("r4", "ghost", None, 8, None, "Newsletter", None),  # nobody known
    ("r5", "ghost", None, None, None, "google search", None),
    ("r6", "u1", None, None, None, " ", None),  # no answer
]


def _ts(text: str) -> str:
    return text + ":00"


@pytest.fixture
def warehouse(con: BaseBackend) -> BaseBackend:
    # session ids as prepare writes them, <device_id>#<session_index>, so that the device
    # breakdown finds each session's landing touch
    sessions = [dict(session_id=f"{sid}#1", person_id=p, device_id=f"anon:{p}",
                     started_at=_ts(start),
                     ended_at=_ts(end), landing_page=page, channel=channel, source=source)
                for sid, (p, start, end, page, channel, source) in SESSIONS.items()]
    engine.load_table(con, "sessions", arrow_table(store.SESSIONS, sessions))
    touches = []
    for n, (sid, minute, kind, event, path, order) in enumerate(TOUCHES):
        person, start, _, landing, channel, source = SESSIONS[sid]
        touches.append(dict(
            touchpoint_id=f"t{n}", occurred_at=f"{start[:-2]}{minute:02d}:00", type=kind,
            event=event, page_path=path, order_id=order, person_id=person,
            session_id=f"{sid}#1",
            channel=channel, source=source, landing_page=landing))
    engine.load_table(con, "touchpoints", arrow_table(store.TOUCHPOINTS, touches))
    journeys, steps = [], []
    for jid, (at, visits) in JOURNEYS.items():
        conversion, person, seq = jid.split(":")
        journeys.append(dict(journey_id=jid, conversion=conversion, unit="person",
                             unit_id=person, sequence=int(seq), converted=True,
                             converted_at=_ts(at), value=0.0, touches=len(visits)))
        steps += [dict(journey_id=jid, position=i, session_id=f"{sid}#1",
                       touch_at=_ts(SESSIONS[sid][1])) for i, sid in enumerate(visits, 1)]
    engine.load_table(con, "journeys", arrow_table(store.JOURNEYS, journeys))
    engine.load_table(con, "journey_steps", arrow_table(store.JOURNEY_STEPS, steps))
    con.create_view("journey_touches", store.journey_touches_view(con))
    engine.load_table(con, "identities", arrow_table(store.IDENTITIES, [
        dict(identifier=i, person_id=p, kind=i.split(":")[0]) for i, p in IDENTITIES.items()]))
    engine.load_table(con, "reviews", arrow_table(store.REVIEWS, [
        dict(review_id=r, platform=platform, rating=stars, reviewed_at=_ts(day + " 12:00"),
             email=email, phone=phone, order_id=order, row_hash=r)
        for r, platform, stars, day, email, phone, order in REVIEWS]))
    engine.load_table(con, "surveys", arrow_table(store.SURVEYS, [
        dict(response_id=r, person_id=p, email=e, nps_score=n, review_rating=stars,
             heard_about=heard, segment=segment, responded_at="2025-04-10 00:00:00")
        for r, p, e, n, stars, heard, segment in SURVEYS]))
    return con


def test_cta_forms_and_landing_pages_by_hand(warehouse: BaseBackend) -> None:
    # CTA pages: /pricing and /demo (a CTA click was recorded there), not /blog.
    # /pricing: 3 views (s1 twice, s2), 1 click; /demo: 3 views (s2, s3 twice), 1 click
    assert _rows(warehouse, "cta_ctr", "page", by=["page"]) == {
        "/demo": {"page_views": 3, "cta_clicks": 1, "cta_ctr": pytest.approx(1 / 3)},
        "/pricing": {"page_views": 3, "cta_clicks": 1, "cta_ctr": pytest.approx(1 / 3)}}
    assert _rows(warehouse, "cta_ctr", "channel", by=["channel"]) == {
        "Organic Search": {"page_views": 2, "cta_clicks": 1, "cta_ctr": 0.5},
        "Email": {"page_views": 2, "cta_clicks": 1, "cta_ctr": 0.5},
        "Paid Search": {"page_views": 2, "cta_clicks": 0, "cta_ctr": 0.0}}
    only_pricing = Settings(cta_pages="^/pricing$")
    assert _rows(warehouse, "cta_ctr", settings=only_pricing) == {
        "page_views": 3, "cta_clicks": 1, "cta_ctr": pytest.approx(1 / 3)}
    # forms on /demo: 3 views, 2 starts (s2, s3), 1 submission (s2)
    assert _rows(warehouse, "form_start_rate") == {
        "page_views": 3, "form_starts": 2, "form_start_rate": pytest.approx(2 / 3)}
    assert _rows(warehouse, "form_completion_rate", "period", period="month") == {
        "2025-03-01": {"form_starts": 1, "form_submissions": 1, "form_completion_rate": 1.0},
        "2025-04-01": {"form_starts": 1, "form_submissions": 0, "form_completion_rate": 0.0}}
    # p3 bought within s3 (landed on /demo); p1's purchase was in no session; p2's lead in s2
    assert _rows(warehouse, "landing_page_conversion_rate", "landing_page",
                 by=["landing_page"]) == {
        "/pricing": {"sessions": 2, "converting_sessions": 0,
                     "landing_page_conversion_rate": 0.0},
        "/demo": {"sessions": 1, "converting_sessions": 1,
                  "landing_page_conversion_rate": 1.0},
        "/blog": {"sessions": 1, "converting_sessions": 0,
                  "landing_page_conversion_rate": 0.0}}
    assert _rows(warehouse, "landing_page_conversion_rate", "landing_page",
                 by=["landing_page"], conversion="lead")["/pricing"][
        "landing_page_conversion_rate"] == 0.5
    # leads whole, by the lead journey's first touch: p2's, from the newsletter
    assert _rows(warehouse, "leads", "source", by=["source"]) == {"newsletter": {"leads": 1}}



def _family_rows(con: BaseBackend, names: list[str], *keys: str,
                 **options: Any) -> dict[Any, Any]:
    together, skipped = compute_family(con, names, **options)
    assert skipped == {} and together is not None
    frame = together.to_pandas()
    return {tuple(r.pop(k) for k in keys) if keys else (): {
        k: None if isinstance(v, float) and math.isnan(v) else v for k, v in r.items()}
        for r in frame.astype(object).to_dict("records")}


def test_social_kpis_have_a_headline_on_the_kpi_page(warehouse: BaseBackend) -> None:
    from touchline.serve.figures import stage_kpis_data

    rows = [dict(zip(SOCIAL_COLUMNS, (r[0], r[1], date.fromisoformat(r[2]), *r[3:]),
                     strict=True)) for r in SOCIAL]
    engine.load_table(warehouse, "social", arrow_table(store.SOCIAL, rows))
    # one row each: the followers at the end (1050 + 400), the new followers (Instagram
    # 900 → 1050, LinkedIn 400 → 400), the impressions, the engagements (365 + 60)
    page = stage_kpis_data(warehouse, names=["social_followers", "social_follower_growth",
                                             "social_reach", "social_engagements"])
    assert page.set_index("kpi").value.to_dict() == {
        "social_followers": 1450.0, "social_follower_growth": 150.0,
        "social_reach": 11_500.0, "social_engagements": 425.0}
    assert page.attrs["skipped"] == {}


def _each_as_alone(con: BaseBackend, names: list[str], keys: list[str],
                   **options: Any) -> None:
    """The family's KPIs together by ``keys`` give each KPI's headline column alone."""
    together, skipped = compute_family(con, names, **options)
    assert skipped == {} and together is not None
    frame = together.to_pandas()
    for name in names:
        column = KPIS[name].headline
        alone = compute(con, name, **options).to_pandas()
        pd.testing.assert_frame_equal(frame[[*keys, name]].rename(columns={name: column}),
                                      alone[[*keys, column]], obj=f"{name} {options}")


def test_social_families_in_one_pass_each_by_hand(con: BaseBackend) -> None:
    rows = [dict(zip(SOCIAL_COLUMNS, (r[0], r[1], date.fromisoformat(r[2]), *r[3:]),
                     strict=True)) for r in SOCIAL]
    engine.load_table(con, "social", arrow_table(store.SOCIAL, rows))
    followers = ["social_followers", "social_follower_growth"]
    flows = ["social_reach", "social_engagements"]
    assert {KPIS[n].family for n in followers} == {"social_followers"}
    assert {KPIS[n].family for n in flows} == {"social"}
    # followers at the end 1050 + 400; new: Instagram 900 → 1050, LinkedIn 400 → 400
    assert _family_rows(con, followers) == {(): {"social_followers": 1450,
                                                 "social_follower_growth": 150}}
    # impressions 0 + 5000 + 3000 + 2000 + 1000 + 500; engagements 365 + 60
    assert _family_rows(con, flows) == {(): {"social_reach": 11_500,
                                             "social_engagements": 425}}
    # by month: February Instagram 900 (growth 0); March 1100 + 400 (Instagram 900 → 1100,
    # LinkedIn new); April 1050 (1100 → 1050)
    by_month = _family_rows(con, followers, "period", period="month")
    assert {str(k[0])[:10]: v for k, v in by_month.items()} == {
        "2025-02-01": {"social_followers": 900, "social_follower_growth": 0},
        "2025-03-01": {"social_followers": 1500, "social_follower_growth": 200},
        "2025-04-01": {"social_followers": 1050, "social_follower_growth": -50}}
    # by platform: Instagram 10,000 impressions, 365 engagements; LinkedIn 1,500 and 60
    assert _family_rows(con, flows, "platform", by=["platform"]) == {
        ("instagram",): {"social_reach": 10_000, "social_engagements": 365},
        ("linkedin",): {"social_reach": 1500, "social_engagements": 60}}
    for names in (followers, flows):
        _each_as_alone(con, names, ["period"], period="month")
        _each_as_alone(con, names, ["platform"], by=["platform"])
        _each_as_alone(con, names, [], since=date(2025, 3, 1))


def test_landing_page_conversion_rate_with_the_session_kpis_by_hand(
        warehouse: BaseBackend) -> None:
    # four sessions of p1 (s1, s4), p2 (s2), p3 (s3); p3 bought within s3, p1's purchase was
    # in no session: 1 of 4; p2's lead was in s2
    names = [k.name for k in KPIS.values() if k.family == "sessions"]
    assert "landing_page_conversion_rate" in names
    got = _family_rows(warehouse, names)[()]
    assert (got["sessions"], got["reach"], got["new_sessions"], got["returning_visitors"],
            got["landing_page_conversion_rate"]) == (4, 3, 3, 1, 0.25)
    lead = _family_rows(warehouse, ["sessions", "landing_page_conversion_rate"],
                        conversion="lead")
    assert lead == {(): {"sessions": 4, "landing_page_conversion_rate": 0.25}}
    # by landing page: /pricing s1, s2 (none bought there), /demo s3 (bought), /blog s4
    assert _family_rows(warehouse, ["sessions", "landing_page_conversion_rate"],
                        "landing_page", by=["landing_page"]) == {
        ("/pricing",): {"sessions": 2, "landing_page_conversion_rate": 0.0},
        ("/demo",): {"sessions": 1, "landing_page_conversion_rate": 1.0},
        ("/blog",): {"sessions": 1, "landing_page_conversion_rate": 0.0}}
    for options, keys in (({"by": ["landing_page"]}, ["landing_page"]),
                          ({"period": "month"}, ["period"]),
                          ({"since": date(2025, 4, 1)}, [])):
        _each_as_alone(warehouse, names, keys, **options)


PAGE_KPIS = ["cta_ctr", "form_start_rate", "form_completion_rate"]


def test_cta_and_form_kpis_in_one_pass_by_hand(warehouse: BaseBackend) -> None:
    # the dashboard's headlines: CTA pages /pricing and /demo, 6 views, 2 clicks; the form
    # page /demo, 3 views, 2 starts, 1 submission
    assert _family_rows(warehouse, PAGE_KPIS) == {(): {
        "cta_ctr": pytest.approx(2 / 6), "form_start_rate": pytest.approx(2 / 3),
        "form_completion_rate": 0.5}}
    # by month: March (s1, s2) 4 CTA-page views, 2 clicks; /demo 1 view, 1 start, 1
    # submission; April (s3) 2 views of /demo, no click, 1 start, no submission
    by_month = {(date(2025, 3, 1),): {"cta_ctr": 0.5, "form_start_rate": 1.0,
                                      "form_completion_rate": 1.0},
                (date(2025, 4, 1),): {"cta_ctr": 0.0, "form_start_rate": 0.5,
                                      "form_completion_rate": 0.0}}
    got = _family_rows(warehouse, PAGE_KPIS, "period", period="month")
    assert {(pd.Timestamp(k[0]).date(),): v for k, v in got.items()} == by_month
    # by channel together, Organic Search (s1: /pricing only) has a row of no form views
    # (null rates); alone, the form KPIs give only the channels with form-page touches
    assert _family_rows(warehouse, PAGE_KPIS, "channel", by=["channel"]) == {
        ("Organic Search",): {"cta_ctr": 0.5, "form_start_rate": None,
                              "form_completion_rate": None},
        ("Email",): {"cta_ctr": 0.5, "form_start_rate": 1.0, "form_completion_rate": 1.0},
        ("Paid Search",): {"cta_ctr": 0.0, "form_start_rate": 0.5,
                           "form_completion_rate": 0.0}}
    assert _rows(warehouse, "form_start_rate", "channel", by=["channel"]) == {
        "Email": {"page_views": 1, "form_starts": 1, "form_start_rate": 1.0},
        "Paid Search": {"page_views": 2, "form_starts": 1, "form_start_rate": 0.5}}
    # alone by page, each kind counts its own pages only
    assert set(_rows(warehouse, "form_completion_rate", "page", by=["page"])) == {"/demo"}
    assert set(_rows(warehouse, "cta_ctr", "page", by=["page"])) == {"/demo", "/pricing"}


VIEW_STAGES = [  # model, person, stage, entered, left
    ("lifecycle", "p1", "awareness", "2025-03-02 10:00:00", "2025-03-02 10:02:30"),
    ("lifecycle", "p1", "consideration", "2025-03-02 10:02:30", None),
    ("lifecycle", "p2", "awareness", "2025-03-05 11:00:30", None),
    ("funnel", "p3", "top", "2025-04-05 09:00:00", None),  # another model: not read
]


def _load_view_stages(warehouse: BaseBackend) -> None:
    engine.load_table(warehouse, "stages", arrow_table(store.STAGES, [
        dict(stage_model=m, unit="person", unit_id=p, stage=s, entered_at=e, left_at=left)
        for m, p, s, e, left in VIEW_STAGES]))


def test_content_viewed_by_stage_by_hand(warehouse: BaseBackend) -> None:
    _load_view_stages(warehouse)
    # page views: p1 /pricing 10:00 and 10:02 (awareness), /blog 10:03 (consideration);
    # p2 /pricing 11:00 (before awareness at 11:00:30) and /demo 11:01 (awareness); p3 /demo
    # twice (no lifecycle stage)
    assert _rows(warehouse, "content_viewed", "page", "stage", by=["page"]) == {
        ("/blog", "consideration"): {"page_views": 1, "viewers": 1},
        ("/demo", "(no stage)"): {"page_views": 2, "viewers": 1},
        ("/demo", "awareness"): {"page_views": 1, "viewers": 1},
        ("/pricing", "(no stage)"): {"page_views": 1, "viewers": 1},
        ("/pricing", "awareness"): {"page_views": 2, "viewers": 1}}
    assert _rows(warehouse, "content_viewed", "stage") == {
        "(no stage)": {"page_views": 3, "viewers": 2},
        "awareness": {"page_views": 3, "viewers": 2},
        "consideration": {"page_views": 1, "viewers": 1}}
    funnel = Settings(stage_model="funnel")
    assert _rows(warehouse, "content_viewed", "period", "stage", period="month",
                 settings=funnel) == {
        ("2025-03-01", "(no stage)"): {"page_views": 5, "viewers": 2},
        ("2025-04-01", "top"): {"page_views": 2, "viewers": 1}}


def test_reviews_nps_segments_referrals_and_heard_about_by_hand(warehouse: BaseBackend) -> None:
    # reviews: 5, 4, 2, 4.5 imported and r1's 3 from the survey
    assert _rows(warehouse, "review_rating") == {"reviews": 5, "review_rating": 3.7}
    assert _rows(warehouse, "review_rating", "platform", by=["platform"]) == {
        "google": {"reviews": 2, "review_rating": 4.5},
        "survey": {"reviews": 1, "review_rating": 3.0},
        "trustpilot": {"reviews": 2, "review_rating": 3.25}}
    # by the reviewer's first touch: g1 (e-mail) and r1 (user id) are p1, Organic Search; g2
    # (phone) p2, Email; t1 (order o-7) p3, Paid Search; t2 nobody
    by_channel = _rows(warehouse, "review_rating", "channel", by=["channel"])
    assert by_channel == {
        "Organic Search": {"reviews": 2, "review_rating": 4.0},
        "Email": {"reviews": 1, "review_rating": 4.0},
        "Paid Search": {"reviews": 1, "review_rating": 2.0},
        "Unassigned": {"reviews": 1, "review_rating": 4.5}}
    # stars: 4.5 counts as 5
    assert _rows(warehouse, "review_distribution", "stars") == {
        2: {"reviews": 1, "share": 0.2}, 3: {"reviews": 1, "share": 0.2},
        4: {"reviews": 1, "share": 0.2}, 5: {"reviews": 2, "share": 0.4}}
    # NPS by segment: pro 10 and 6 (0), free 9 (100), no segment 8 (0)
    got = _rows(warehouse, "nps", "segment", by=["segment"])
    assert {k: (v["answers"], v["promoters"], v["detractors"], v["nps"])
            for k, v in got.items()} == {"pro": (2, 1, 1, 0.0), "free": (1, 1, 0, 100.0),
                                         "(not set)": (1, 0, 0, 0.0)}
    # referrals: p1 (Organic Search) on 2 March and 3 April, p2 (Email) on 5 March
    assert _rows(warehouse, "referrals", "period", "channel", by=["month", "channel"]) == {
        ("2025-03-01", "Email"): {"referrals": 1, "referrers": 1},
        ("2025-03-01", "Organic Search"): {"referrals": 1, "referrers": 1},
        ("2025-04-01", "Organic Search"): {"referrals": 1, "referrers": 1}}
    # heard about: Google → Organic Search (p1: agrees), a Google ad → Paid Search (p3:
    # agrees), a friend → Word of mouth (p1 came by search), the newsletter and "google
    # search" from someone tracking never saw (Unassigned); r6 gave no answer
    matrix = _rows(warehouse, "heard_about_agreement", "reported_channel", "tracked_channel")
    assert matrix == {
        ("Email", "Unassigned"): {"answers": 1, "share": 1.0, "agrees": False},
        ("Organic Search", "Organic Search"): {"answers": 1, "share": 0.5, "agrees": True},
        ("Organic Search", "Unassigned"): {"answers": 1, "share": 0.5, "agrees": False},
        ("Paid Search", "Paid Search"): {"answers": 1, "share": 1.0, "agrees": True},
        ("Word of mouth", "Organic Search"): {"answers": 1, "share": 1.0, "agrees": False}}


STAGES = {  # (unit, id): days of January 2025 each b2b stage was entered (None: skipped)
    ("account", "A"): (1, 10, 20, 32, 60),
    ("account", "B"): (5, 15, 45, None, None),
    ("account", "C"): (32, 34, None, 41, None),  # skipped SQL
    ("account", "D"): (33, None, None, None, None),
    ("account", "E"): (60, 69, 64, None, None),  # SQL dated before its MQL
    ("person", "P"): (3, 4, None, None, None),
}
B2B = ("first touch", "MQL", "SQL", "opportunity", "closed won")


def test_stage_rates_and_velocity_by_hand(con: BaseBackend) -> None:
    rows = [dict(unit=unit, unit_id=uid, stage_model="b2b", stage=B2B[i], stage_order=i + 1,
                 entered_at=f"{date.fromordinal(date(2024, 12, 31).toordinal() + day)} "
                 "00:00:00")
            for (unit, uid), days in STAGES.items() for i, day in enumerate(days)
            if day is not None]
    rows.append(dict(unit="account", unit_id="A", stage_model="lifecycle", stage="awareness",
                     stage_order=1, entered_at="2025-01-01 00:00:00"))  # another model
    engine.load_table(con, "stages", arrow_table(store.STAGES, rows))
    got = _rows(con, "stage_conversion", "unit", "stage")
    # first touch → MQL: A 9, B 10, C 2, E 9 days; D never went on
    assert got[("account", "first touch")] == {
        "next_stage": "MQL", "entered": 5, "went_on": 4, "rate": 0.8, "median_days": 9.0,
        "mean_days": 7.5}
    # MQL → SQL: A 10, B 30; E's SQL came first (went on, no days); C skipped SQL
    assert got[("account", "MQL")] == {
        "next_stage": "SQL", "entered": 4, "went_on": 3, "rate": 0.75, "median_days": 20.0,
        "mean_days": 20.0}
    assert got[("account", "SQL")] == {
        "next_stage": "opportunity", "entered": 3, "went_on": 1, "rate": pytest.approx(1 / 3),
        "median_days": 12.0, "mean_days": 12.0}
    assert got[("account", "opportunity")] == {
        "next_stage": "closed won", "entered": 2, "went_on": 1, "rate": 0.5,
        "median_days": 28.0, "mean_days": 28.0}
    assert got[("person", "first touch")]["rate"] == 1.0
    assert ("account", "closed won") not in got
    by_month = _rows(con, "stage_conversion", "period", "unit", "stage", period="month")
    assert {k[0]: (v["entered"], v["went_on"]) for k, v in by_month.items()
            if k[1:] == ("account", "MQL")} == {"2025-01-01": (2, 2), "2025-02-01": (1, 0),
                                                "2025-03-01": (1, 1)}


def test_review_kpis_need_one_of_their_imports(con: BaseBackend) -> None:
    with pytest.raises(MissingInputError, match=r"'review_rating' needs rows in one of "
                       r"reviews, surveys .* `touchline ingest FILE --kind reviews` or "):
        compute(con, "review_rating")


AGENTS = {  # session: its landing touch's user agent
    "s1": "Mozilla/5.0 (X11; Linux x86_64) Firefox/125.0",
    "s2": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) Mobile/15E148 Safari/604.1",
    "s3": "Mozilla/5.0 (Linux; Android 14; SM-X710) Chrome/124.0 Safari/537.36",  # tablet
    "s4": "Mozilla/5.0 (Linux; Android 14; Pixel 8) Chrome/124.0 Mobile Safari/537.36",
}


def test_page_and_referral_kpis_by_device_by_hand(warehouse: BaseBackend) -> None:
    """Page KPIs by the device of the view's or click's session; referrals by the referrer's
    first session's (the acquisition device)."""
    engine.load_table(warehouse, "touches", arrow_table(store.TOUCHES, [
        dict(message_id=f"m-{sid}", device_id=sid, session_index=1, is_landing=True,
             timestamp=_ts(SESSIONS[sid][1])) for sid in SESSIONS]))
    engine.load_table(warehouse, "events", arrow_table(store.EVENTS, [
        dict(message_id=f"m-{sid}", user_agent=agent) for sid, agent in AGENTS.items()]))
    # s1 desktop, s2 mobile, s3 tablet (Android without "Mobile"), s4 mobile.
    # CTA pages /pricing and /demo: s1 views /pricing twice and clicks; s2 views /pricing and
    # /demo and clicks; s3 views /demo twice
    assert _rows(warehouse, "cta_ctr", "device", by=["device"]) == {
        "desktop": {"page_views": 2, "cta_clicks": 1, "cta_ctr": 0.5},
        "mobile": {"page_views": 2, "cta_clicks": 1, "cta_ctr": 0.5},
        "tablet": {"page_views": 2, "cta_clicks": 0, "cta_ctr": 0.0}}
    # the form page /demo: s2 views it once and starts and submits; s3 views it twice, starts
    assert _rows(warehouse, "form_start_rate", "device", by=["device"]) == {
        "mobile": {"page_views": 1, "form_starts": 1, "form_start_rate": 1.0},
        "tablet": {"page_views": 2, "form_starts": 1, "form_start_rate": 0.5}}
    assert _rows(warehouse, "form_completion_rate", "device", by=["device"]) == {
        "mobile": {"form_starts": 1, "form_submissions": 1, "form_completion_rate": 1.0},
        "tablet": {"form_starts": 1, "form_submissions": 0, "form_completion_rate": 0.0}}
    _load_view_stages(warehouse)
    # as in test_content_viewed_by_stage_by_hand, by the view's session's device
    assert _rows(warehouse, "content_viewed", "device", "stage", by=["device"]) == {
        ("desktop", "awareness"): {"page_views": 2, "viewers": 1},
        ("desktop", "consideration"): {"page_views": 1, "viewers": 1},
        ("mobile", "(no stage)"): {"page_views": 1, "viewers": 1},
        ("mobile", "awareness"): {"page_views": 1, "viewers": 1},
        ("tablet", "(no stage)"): {"page_views": 2, "viewers": 1}}
    # referrals: p1 (first seen on the desktop) sends two, one from s4 on a phone; p2 (mobile)
    # one
    assert _rows(warehouse, "referrals", "device", by=["device"]) == {
        "desktop": {"referrals": 2, "referrers": 1}, "mobile": {"referrals": 1, "referrers": 1}}
    # reviews by the reviewer's first session: g1 (5) and r1's survey rating (3) are p1's
    # (desktop), g2 (4) p2's (mobile), t1 (2) p3's (tablet), t2 (4.5) nobody's
    assert _rows(warehouse, "review_rating", "device", by=["device"]) == {
        "desktop": {"reviews": 2, "review_rating": 4.0},
        "mobile": {"reviews": 1, "review_rating": 4.0},
        "tablet": {"reviews": 1, "review_rating": 2.0},
        "(not set)": {"reviews": 1, "review_rating": 4.5}}
