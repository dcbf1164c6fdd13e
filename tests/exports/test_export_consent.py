"""Consent: t.js's state is stored on each event, and no export sends a conversion of a person
whose latest stated consent is not ``granted`` (reject ``no_consent``)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import orjson
import pyarrow as pa
from factories import JOHN, JOHN_DEAL, arrow_table, event_rows
from ibis.backends import BaseBackend

from touchline import engine, store
from touchline.collect.segment import map_segment
from touchline.config import Settings
from touchline.exports import export_conversions
from touchline.exports.rows import refused_consent
from touchline.pipeline import run


def test_tjs_consent_is_stored_on_each_event() -> None:
    messages = [{"type": "page", "messageId": f"c{i}", "anonymousId": "a",
                 "timestamp": "2026-03-01T10:00:00Z", **extra}
                for i, extra in enumerate([{"context": {"consent": "granted"}},
                                           {"context": {"consent": "Cookieless"}}, {}])]
    lines = pa.table({"line": pa.array([1, 2, 3], pa.int64()),
                      "raw": pa.array([orjson.dumps(m).decode() for m in messages])})
    split = map_segment(lines, source="test", ingest_id="i")
    assert split.events.column("consent").to_pylist() == ["granted", "cookieless", None]


def test_refused_consent_is_each_persons_latest_stated_state(con: BaseBackend) -> None:
    stated = [("a1", "10:00", "granted"), ("a2", "11:00", "cookieless"),  # p1: refused later
              ("b", "10:00", "granted"), ("b", "11:00", "granted"),  # p2: granted
              ("c", "10:00", "cookieless"), ("c", "11:00", "granted"),  # p3: granted later
              ("d", "10:00", None),  # p4: never said
              ("e", "10:00", "granted"), ("e", "10:00", "cookieless")]  # p5: a tie refuses
    events = [{"message_id": f"m{i}", "anonymous_id": a, "timestamp": clock, "consent": state}
              for i, (a, clock, state) in enumerate(stated)]
    engine.load_table(con, "events", arrow_table(store.EVENTS, event_rows(events)))
    persons = {"a1": "p1", "a2": "p1", "b": "p2", "c": "p3", "d": "p4", "e": "p5"}
    engine.load_table(con, "identities", arrow_table(store.IDENTITIES, [
        {"identifier": f"anon:{a}", "kind": "anon", "person_id": p} for a, p in persons.items()]))

    def refused(require: bool) -> list[str]:
        return sorted(refused_consent(con, require=require).to_pandas().person_id)

    assert refused(require=False) == ["p1", "p5"]
    assert refused(require=True) == ["p1", "p4", "p5"]


def test_a_conversion_of_a_person_who_refused_consent_is_not_exported(tmp_path: Path) -> None:
    # John said yes on his laptop, then no on his phone: his won deal is not sent
    john = [{**row, "consent": "granted"} if row.get("anonymous_id") == "laptop" else
            {**row, "consent": "cookieless"} if row.get("anonymous_id") == "phone" else row
            for row in JOHN]
    settings = Settings(database_url="duckdb://", temp_directory=tmp_path,
                        attribution_models=["linear"], default_model="linear")
    con = engine.connect(settings=settings)
    engine.load_table(con, "events", arrow_table(store.EVENTS, event_rows(john)))
    engine.load_table(con, "deals", arrow_table(store.DEALS, JOHN_DEAL))
    run(con, settings)
    result = export_conversions(con, settings, destination="google-ads", conversion="deal_won",
                                out=tmp_path / "won.csv", now=datetime(2026, 3, 21, 12))
    assert (result.conversions, result.rejected) == (0, 1)
    assert result.rejects_by_reason == {"no_consent": 1}
    rejects = con.table("rejects").filter(lambda t: t.reason_code == "no_consent").to_pandas()
    assert rejects.ref.tolist() == ["deal_won:D1"]
    assert len((tmp_path / "won.csv").read_text().splitlines()) == 2  # the header rows only
