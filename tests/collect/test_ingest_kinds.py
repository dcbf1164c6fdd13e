"""The social, reviews and surveys kinds: good rows load in the canonical forms, values out of
their range (an NPS of 12, 6 stars, a negative count) are rejected with line, field and reason."""

from __future__ import annotations

from pathlib import Path

from ibis.backends import BaseBackend

from touchline.collect.ingest import ingest_file
from touchline.config import Settings

SETTINGS = Settings(database_url="duckdb://")

SOCIAL = """platform,account,date,followers,posts,impressions,engagements,likes,comments,shares
instagram,@acme,2025-03-01,1000,1,5000,,120,10,5
instagram,@acme,2025-03-02,-5,0,100,1,1,0,0
linkedin,acme-inc,2025-03-01,400,2,800,30,20,6,4
linkedin,,2025-03-01,400,2,800,30,20,6,4
"""
REVIEWS = """review_id,platform,rating,review_text,reviewed_at,email,phone,order_id
g1,google,5,Great,2025-03-01T10:00:00Z, Ann@Example.com ,,
g2,google,6,Too good,2025-03-02T10:00:00Z,,,
t1,trustpilot,4,Fine,2025-03-03T10:00:00Z,,+1 (202) 555-0143,
t2,trustpilot,0.5,Bad,2025-03-04T10:00:00Z,,,o-9
t3,trustpilot,2,,2025-03-05T10:00:00Z,,,o-9
"""
SURVEYS = """response_id,person_id,responded_at,nps_score,review_rating,heard_about,segment
r1,u1,2025-03-01T10:00:00Z,9,,Google,pro
r2,u2,2025-03-01T10:00:00Z,12,,Google,pro
r3,u3,2025-03-01T10:00:00Z,-1,4,,free
r4,u4,2025-03-01T10:00:00Z,0,,,free
"""


def test_out_of_range_values_go_to_rejects_with_their_reason(con: BaseBackend,
                                                              tmp_path: Path) -> None:
    results = {}
    for kind, text in (("social", SOCIAL), ("reviews", REVIEWS), ("surveys", SURVEYS)):
        path = tmp_path / f"{kind}.csv"
        path.write_text(text)
        results[kind] = ingest_file(con, path, kind, settings=SETTINGS)
    assert {k: (r.loaded, r.rejected) for k, r in results.items()} == {
        "social": (2, 2), "reviews": (3, 2), "surveys": (2, 2)}
    rejects = con.table("rejects").order_by(["step", "line"]).select(
        "step", "line", "field", "reason_code", "reason").execute()
    assert rejects.drop(columns="reason").values.tolist() == [
        ["ingest:reviews", 3, "rating", "bad_rating"],
        ["ingest:reviews", 5, "rating", "bad_rating"],
        ["ingest:social", 3, "followers", "negative_count"],
        ["ingest:social", 5, "account", "missing_account"],
        ["ingest:surveys", 3, "nps_score", "bad_nps"],
        ["ingest:surveys", 4, "nps_score", "bad_nps"],
    ]
    assert rejects.reason.tolist()[4] == "field nps_score: 12 is not an NPS answer (0 to 10)"
    reviews = con.table("reviews").order_by("review_id").execute()
    # e-mail and phone in the forms the identity graph keys people by
    assert reviews.email.tolist()[0] == "ann@example.com"
    assert reviews.phone.tolist()[1] == "+12025550143"
    assert reviews.review_id.tolist() == ["g1", "t1", "t3"]
    surveys = con.table("surveys").execute()
    assert surveys.segment.tolist() == ["pro", "free"]


EXPERIMENTS = """experiment_id,channel,campaign,period_start,period_end,\
incremental_conversions,incremental_conversions_low,incremental_conversions_high,lift,lift_low,\
lift_high,test_type
email-q1,Email,,2026-01-01,2026-03-31,120,90,150,,,,holdout
geo-search,,spring,2026-02-01,2026-02-28,,,,0.12,0.05,0.19, Geo
no-target,,,2026-01-01,2026-01-31,10,5,15,,,,geo
backwards,Display,,2026-03-01,2026-02-01,10,5,15,,,,geo
survey,Display,,2026-03-01,2026-03-31,10,5,15,,,,survey
no-measure,Display,,2026-03-01,2026-03-31,,,,,,,geo
no-bounds,Display,,2026-03-01,2026-03-31,10,,,,,,geo
outside,Display,,2026-03-01,2026-03-31,20,5,15,,,,geo
lift-too-low,Display,,2026-03-01,2026-03-31,,,,-0.5,-1.2,0.1,geo
"""


def test_experiments_load_and_bad_rows_say_what_is_wrong(con: BaseBackend,
                                                         tmp_path: Path) -> None:
    path = tmp_path / "experiments.csv"
    path.write_text(EXPERIMENTS)
    result = ingest_file(con, path, "experiments", settings=SETTINGS)
    assert (result.loaded, result.rejected) == (2, 7)
    rejects = con.table("rejects").order_by("line").select(
        "line", "field", "reason_code", "reason").execute()
    assert rejects.drop(columns="reason").values.tolist() == [
        [4, "channel", "missing_target"],
        [5, "period_end", "bad_period"],
        [6, "test_type", "bad_test_type"],
        [7, "incremental_conversions", "missing_measure"],
        [8, "incremental_conversions_low", "missing_interval"],
        [9, "incremental_conversions", "bad_interval"],
        [10, "lift_low", "bad_lift"],
    ]
    assert rejects.reason.tolist()[5] == ("incremental_conversions 20.0 lies outside its "
                                          "interval 5.0 to 15.0")
    loaded = con.table("experiments").order_by("experiment_id").execute()
    assert loaded.experiment_id.tolist() == ["email-q1", "geo-search"]
    assert loaded.test_type.tolist() == ["holdout", "geo"]  # trimmed, lower case
    assert loaded.campaign.tolist()[1] == "spring"
    # importing the same file again adds nothing
    again = ingest_file(con, path, "experiments", settings=SETTINGS)
    assert (again.loaded, again.duplicates) == (0, 2)
