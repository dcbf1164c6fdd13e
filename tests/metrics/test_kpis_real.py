"""Visitor KPIs on real data: the Puffy web-event export (first three days, about 11,000
events) loaded with the documented mapping and run, against pandas on the raw files.

The pandas reference does the work itself: sessions of 30 minutes per device, persons as
devices joined by the hashed e-mails they share, first sessions, purchases and the sessions
between them. Only which user agents are crawlers is taken from touchline
(``bot_user_agents``, tested in tests/prepare): that list is data, not the logic under test.
The Olist checks (conversion rate by origin, days to won) are in
tests/journeys/test_real_data.py, on the warehouse that test already runs.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from factories import SHARED

from touchline import engine, store
from touchline.collect.ingest import ingest_file
from touchline.collect.mapping import load_mapping
from touchline.config import Settings
from touchline.metrics.kpis import compute
from touchline.pipeline import run
from touchline.prepare.clean import bot_user_agents

PUFFY = SHARED / "data" / "puffy-ecommerce-events" / "raw"
DAYS = 3
GAP = pd.Timedelta(minutes=30)
LOOKBACK = pd.Timedelta(days=90)


def _mapping(tmp_path: Path):  # type: ignore[no-untyped-def]
    """The Puffy mapping block of docs/ingest.md, as a user copies it."""
    import re

    docs = (Path(__file__).resolve().parents[2] / "docs" / "ingest.md").read_text()
    block = next(b for b in re.findall(r"```toml\n(.*?)```", docs, re.S)
                 if "email_filled_on_popup" in b)
    path = tmp_path / "puffy.toml"
    path.write_text(block)
    return load_mapping(path, canonical={c.name for c in store.EVENTS.columns}, kind="events")


def _reference(files: list[Path]) -> dict[str, object]:
    frame = pd.concat([pd.read_csv(f, dtype=str, keep_default_na=False) for f in files])
    frame = frame.drop_duplicates()  # one exact duplicate row: one event
    data = [json.loads(s) if s else {} for s in frame.event_data]
    frame = frame.assign(
        device=frame.client_id.str.strip().replace("", None),
        hashed=[d.get("user_email") for d in data],
        revenue=pd.to_numeric(pd.Series([d.get("revenue") for d in data], index=frame.index)),
        ts=pd.to_datetime(frame.timestamp, utc=True).dt.tz_localize(None))
    assert frame.device.notna().sum() == (frame.device.notna() | frame.hashed.notna()).sum(), (
        "the reference assumes every event with an id has a device id in these days")
    frame = frame[frame.device.notna()]
    bots = set(bot_user_agents(sorted(set(frame.user_agent))))
    frame = frame[~frame.user_agent.isin(bots)].sort_values(["device", "ts"])
    # sessions: a gap of more than 30 minutes on a device starts a new one
    new = frame.device.ne(frame.device.shift()) | (frame.ts.diff() > GAP)
    frame = frame.assign(session=new.cumsum())
    # persons: devices that share a hashed e-mail are one person (union-find)
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for device, hashed in frame.dropna(subset=["hashed"])[["device", "hashed"]].values:
        parent[find("e:" + hashed)] = find("d:" + device)
    frame = frame.assign(person=[find("d:" + d) for d in frame.device])
    sessions = frame.groupby("session").agg(person=("person", "first"), start=("ts", "min"))
    sessions = sessions.sort_values(["person", "start"])
    sessions["first"] = ~sessions.person.duplicated()
    sessions["day"] = sessions.start.dt.strftime("%Y-%m-%d")
    new_visitors = sessions[sessions["first"]].groupby("day").person.nunique()
    returning = sessions[~sessions["first"]].groupby("day").person.nunique()
    # purchases (revenue > 0); journey k: sessions starting after purchase k-1, up to k,
    # within the 90-day lookback
    buys = frame[(frame.event_name == "checkout_completed") & (frame.revenue > 0)]
    visits = []
    for person, times in buys.groupby("person").ts:
        starts = sessions.start[sessions.person == person]
        previous = pd.Timestamp.min
        for at in sorted(times):
            visits.append(int(((starts > previous) & (starts <= at)
                               & (starts >= at - LOOKBACK)).sum()))
            previous = at
    return {"new": new_visitors.to_dict(), "returning": returning.to_dict(),
            "visits": np.array(visits, dtype=float)}


@pytest.mark.duckdb_only(reason="a real export through ingest and run is a data-set check; "
                         "the KPIs' equality on both engines is tested by hand in test_kpis.py")
@pytest.mark.skipif(not PUFFY.exists(), reason=f"real data set absent: {PUFFY} (../shared/data)")
def test_puffy_new_returning_visitors_and_visits_before_purchase_match_pandas(
        tmp_path: Path) -> None:
    files = sorted(PUFFY.glob("*.csv.gz"))[:DAYS]
    settings = Settings(database_url=f"duckdb:///{tmp_path / 'puffy.duckdb'}",
                        temp_directory=tmp_path, attribution_models=["last_touch"],
                        default_model="last_touch")
    con = engine.connect(settings=settings)
    store.init(con)
    mapping = _mapping(tmp_path)
    for file in files:
        ingest_file(con, file, "events", settings=settings, mapping=mapping)
    run(con, settings)
    ref = _reference(files)

    def by_day(name: str) -> dict[str, int]:
        frame = compute(con, name, period="day").to_pandas()
        return {str(d)[:10]: int(v) for d, v in zip(frame.period, frame[name], strict=True)
                if v}

    assert len(ref["new"]) >= DAYS and sum(ref["returning"].values()) > 100  # type: ignore[arg-type]
    assert by_day("new_visitors") == ref["new"]
    assert by_day("returning_visitors") == ref["returning"]
    visits = compute(con, "visits_to_convert").to_pandas().iloc[0]
    want = ref["visits"]
    assert isinstance(want, np.ndarray)
    assert visits.conversions == len(want) > 50
    for name, q in (("median", 0.5), ("p75", 0.75), ("p90", 0.9)):
        assert visits[name] == pytest.approx(np.quantile(want, q)), name
