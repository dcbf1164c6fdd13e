"""Real data through the user's path: the Olist marketing funnel (8,000 MQLs, 842 won deals)
loaded with touchline's importers, run, and checked against plain pandas on the CSVs.

DuckDB only: these are integration tests on real files; the two engines' equality is proven on
the same code by the table tests (``con``).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from factories import SHARED

from touchline import engine, store
from touchline.collect.ingest import ingest_file
from touchline.collect.mapping import load_mapping
from touchline.config import ConversionSpec, Settings
from touchline.metrics.funnels import funnel
from touchline.metrics.kpis import compute
from touchline.pipeline import run

OLIST = SHARED / "data" / "olist-marketing-funnel"
MQL_MAP = """
[columns]
contact_id = "mql_id"
timestamp = "first_contact_date"
utm_campaign = "origin"
[defaults]
type = "track"
event = "MQL"
source = "crm"
"""
DEAL_MAP = """
[columns]
deal_id = "mql_id"
contact_ids = "mql_id"
closed_at = "won_date"
created_at = "won_date"
[defaults]
status = "won"
"""


def _load(con: object, file: Path, kind: str, mapping: str, tmp_path: Path,
          settings: Settings) -> None:
    map_file = tmp_path / f"{kind}.toml"
    map_file.write_text(mapping)
    canonical = {c.name for c in store.TABLES[kind].columns}
    result = ingest_file(con, file, kind, settings=settings,  # type: ignore[arg-type]
                         mapping=load_mapping(map_file, canonical=canonical), source="crm")
    assert result.rejected == 0, result.rejects_by_reason


@pytest.mark.duckdb_only(
    reason="the real-data run in a warehouse file, as a user makes it; the engines' equality "
    "is proven on the same code by the table tests (con), and the whole Olist run would add "
    "minutes of Spark to the suite")
@pytest.mark.skipif(not OLIST.exists(), reason=f"real data set absent: {OLIST} (../shared/data)")
def test_olist_conversion_by_origin_and_days_to_close_match_pandas(tmp_path: Path) -> None:
    mqls = pd.read_csv(OLIST / "olist_marketing_qualified_leads_dataset.csv")
    deals = pd.read_csv(OLIST / "olist_closed_deals_dataset.csv")
    settings = Settings(
        database_url=f"duckdb:///{tmp_path / 'olist.duckdb'}", temp_directory=tmp_path,
        conversions=[ConversionSpec(name="mql", events=["MQL"], count="first",
                                    lookback_days=None),
                     ConversionSpec(name="deal_won", deal="won", value="deal_amount",
                                    lookback_days=None)],
        attribution_models=["linear", "last_touch"])
    con = engine.connect(settings=settings)
    store.init(con)
    _load(con, OLIST / "olist_marketing_qualified_leads_dataset.csv", "events", MQL_MAP,
          tmp_path, settings)
    _load(con, OLIST / "olist_closed_deals_dataset.csv", "deals", DEAL_MAP, tmp_path, settings)
    report = run(con, settings)
    summary = report.conversions.set_index("conversion")
    # every deal names its MQL's contact id; the leads that never closed are open journeys
    assert summary.conversions.to_dict() == {"mql": 8000, "deal_won": 842}
    # (and the one lead whose contact came after its win: its touch follows its conversion)
    assert summary.open_journeys["deal_won"] == 8000 - 842 + 1

    # independently, with pandas: won deals per origin over MQLs per origin, and the days from
    # first contact to the win (a deal dated before its first contact does not follow it)
    joined = mqls.merge(deals, on="mql_id", how="left")
    joined["origin"] = joined.origin.fillna("(not set)")
    joined["days"] = (pd.to_datetime(joined.won_date)
                      - pd.to_datetime(joined.first_contact_date)).dt.total_seconds() / 86_400
    follows = joined.days >= 0
    expected = joined.assign(won=follows).groupby("origin").agg(mqls=("mql_id", "size"),
                                                                won=("won", "sum"))
    got = funnel(con, ["MQL", "conversion:deal_won"], by="campaign").to_pandas()
    got["group"] = got.group.replace({"(none)": "(not set)"})
    table = got.pivot_table(index="group", columns="step_index", values="entered")
    assert table[1].to_dict() == expected.mqls.to_dict()
    assert table[2].to_dict() == expected.won.to_dict()
    overall = funnel(con, ["MQL", "conversion:deal_won"]).to_pandas()
    median_days = overall["median"][1] / 86_400
    assert median_days == pytest.approx(joined.days[follows].median(), abs=1e-6)

    # the KPI registry says the same: conversion rate by first-touch origin (every won deal,
    # the one dated before its contact too: it is a converted journey) and the median days
    # from first contact to won (journeys with a touch before the win)
    by_origin = compute(con, "conversion_rate", by=["campaign"],
                        conversion="deal_won").to_pandas().set_index("campaign")
    won = joined.won_date.notna().groupby(joined.origin).sum()
    assert by_origin.visitors.to_dict() == expected.mqls.to_dict()
    assert by_origin.converters.to_dict() == won.to_dict()
    assert by_origin.conversion_rate.to_dict() == pytest.approx((won / expected.mqls).to_dict())
    overall_rate = compute(con, "conversion_rate", conversion="deal_won").to_pandas()
    assert overall_rate.conversion_rate[0] == pytest.approx(842 / 8000)  # SOURCE.md: 10.5 %
    days = compute(con, "days_to_convert", conversion="deal_won").to_pandas()
    assert (days.conversions[0], days["median"][0]) == (
        842 - 1, pytest.approx(joined.days[follows].median(), abs=1e-6))

    # the journeys: every won deal is a person's (no company) with its MQL as its one touch;
    # a deal won before its first contact has no touch in its window (kept, 0 touches)
    journeys = con.table("journeys").filter(
        lambda j: (j.conversion == "deal_won") & j.converted).to_pandas()
    assert len(journeys) == 842
    assert (journeys.unit == "person").all()
    before = int((~follows & joined.won_date.notna()).sum())
    assert before == 1
    assert journeys.touches.value_counts().to_dict() == {1: 842 - before, 0: before}
    assert report.conversions.set_index("conversion").without_touches["deal_won"] == before
