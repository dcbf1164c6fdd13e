"""Retention: raw events older than ``raw_event_retention_days`` are deleted; the prepared
tables, journeys and credits of a run after the deletion are those of a run before it."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import orjson
import pandas as pd
import pytest
from factories import CLI_OWN_CONNECTION, JOHN, JOHN_DEAL, arrow_table, event_rows
from ibis.backends import BaseBackend
from typer.testing import CliRunner

from touchline import engine, store
from touchline.cli import app
from touchline.config import Settings
from touchline.pipeline import run
from touchline.privacy import apply_retention
from touchline.privacy.retention import KEPT, RETENTION_RULES, TIME_COLUMNS

NOW = datetime(2026, 4, 10)
OTHERS = [
    {"message_id": "mary-m1", "anonymous_id": "mary-1", "timestamp": "2026-03-02 10:00:00",
     "url": "https://plumb.example/?utm_source=newsletter&utm_medium=email",
     "utm_source": "newsletter", "utm_medium": "email"},
    {"message_id": "mary-m2", "anonymous_id": "mary-1", "type": "track",
     "event": "Form Submitted", "email": "mary@example.org", "timestamp": "2026-03-02 10:05:00"},
    {"message_id": "mary-m3", "anonymous_id": "mary-1", "type": "track",
     "event": "Order Completed", "revenue": 120.0, "currency": "USD",
     "timestamp": "2026-03-15 10:00:00", "properties": '{"order_id": "O-9"}'},
]


def _settings(tmp_path: Path, days: int | None) -> Settings:
    return Settings(database_url="duckdb://", temp_directory=tmp_path,
                    raw_event_retention_days=days, attribution_models=["linear"],
                    default_model="linear")


def test_retention_deletes_raw_events_before_the_horizon_only(con: BaseBackend,
                                                              tmp_path: Path) -> None:
    engine.load_table(con, "events", arrow_table(store.EVENTS, event_rows(
        [{"anonymous_id": "a", "timestamp": t} for t in
         ("2026-03-01 00:00:00", "2026-03-10 23:59:59", "2026-03-11 00:00:00", "2026-04-09")]
    )))
    store.init(con)
    # 30 days before 2026-04-10: 2026-03-11 00:00
    assert apply_retention(con, _settings(tmp_path, 30), now=NOW)["events"] == 2
    assert sorted(con.table("events").message_id.to_pandas()) == ["m3", "m4"]
    assert apply_retention(con, _settings(tmp_path, 30), now=NOW)["events"] == 0


def _snapshot(con: BaseBackend) -> dict[str, pd.DataFrame]:
    out = {}
    for name, key in (("touches", ["message_id"]), ("sessions", ["session_id"]),
                      ("identities", ["identifier"]), ("persons", ["person_id"]),
                      ("journeys", ["journey_id"]), ("journey_steps", ["journey_id", "position"]),
                      ("credits", ["journey_id", "position", "model"]),
                      ("stages", ["stage_model", "unit", "unit_id", "stage"])):
        frame = con.table(name).to_pandas()
        out[name] = frame.sort_values(key).reset_index(drop=True)
    return out


def test_a_run_after_retention_keeps_every_prepared_and_derived_row(tmp_path: Path) -> None:
    # every day of retention the clock allows: the run itself deletes nothing more
    settings = _settings(tmp_path, 3650)
    con = engine.connect(settings=settings)
    engine.load_table(con, "events", arrow_table(store.EVENTS, event_rows([*JOHN, *OTHERS])))
    engine.load_table(con, "deals", arrow_table(store.DEALS, JOHN_DEAL))
    run(con, settings)
    before = _snapshot(con)
    # John's laptop visits, his chat and Mary's first two touches are past 30 days
    deleted = apply_retention(con, _settings(tmp_path, 30), now=NOW)["events"]
    assert deleted == 5
    run(con, settings)
    after = _snapshot(con)
    assert int(con.table("events").count().execute()) == len(JOHN) + len(OTHERS) - deleted
    for name, frame in before.items():
        pd.testing.assert_frame_equal(after[name], frame, check_like=True, obj=name)


@pytest.mark.duckdb_only(reason=CLI_OWN_CONNECTION)
def test_cli_retention_apply_says_how_many_and_refuses_without_a_setting(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"duckdb://{tmp_path / 'wh.duckdb'}"
    with engine.connected(settings=_settings(tmp_path, None).model_copy(
            update={"database_url": url})) as con:
        engine.load_table(con, "events", arrow_table(store.EVENTS, event_rows(
            [{"anonymous_id": "a", "timestamp": "2020-01-01 00:00:00"},
             {"anonymous_id": "a", "timestamp": "2999-01-01 00:00:00"}])))
    refused = CliRunner().invoke(app, ["retention", "apply", "-d", url])
    assert refused.exit_code == 2
    assert "no retention set for table events" in refused.output
    monkeypatch.setenv("TOUCHLINE_RAW_EVENT_RETENTION_DAYS", "30")
    done = CliRunner().invoke(app, ["retention", "apply", "-d", url])
    assert done.exit_code == 0, done.output
    assert "events: 1 rows older than 30 days deleted" in done.output
    assert "rejects: 0 rows older than 30 days emptied of personal data" in done.output


def test_retention_empties_the_personal_data_of_the_other_raw_tables(con: BaseBackend,
                                                                     tmp_path: Path) -> None:
    old, new = "2026-03-01 00:00:00", "2026-04-09 00:00:00"  # before / after the horizon
    rows = {
        "calls": [{"call_id": c, "caller_number": "+12025550143", "tracking_number": "+1555",
                   "started_at": t} for c, t in (("c1", old), ("c2", new))],
        "surveys": [{"response_id": "s1", "email": " Ann@Acme.io", "nps_score": 9,
                     "responded_at": old},
                    {"response_id": "s2", "email": "nobody@acme.io", "responded_at": old},
                    {"response_id": "s3", "person_id": "u7", "email": "ann@acme.io",
                     "responded_at": old},
                    {"response_id": "s4", "email": "ann@acme.io", "responded_at": new}],
        "reviews": [{"platform": "g2", "rating": 4.0, "reviewed_at": t, "email": "ann@acme.io",
                     "phone": "+12025550143", "order_id": "O1", "row_hash": h}
                    for h, t in (("r1", old), ("r2", new))],
        "rejects": [{"reject_id": i, "step": "ingest:events", "reason_code": "bad_type",
                     "raw": '{"email": "ann@acme.io"}', "rejected_at": t}
                    for i, t in (("j1", "2026-03-31 00:00:00"), ("j2", new))],
        "identities": [{"identifier": i, "person_id": "p1", "kind": i.split(":")[0]}
                       for i in ("email:ann@acme.io", "anon:dev-b", "anon:dev-a")],
    }
    for name, data in rows.items():
        engine.load_table(con, name, arrow_table(store.TABLES[name], data))
    store.init(con)
    settings = _settings(tmp_path, 30).model_copy(update={"raw_retention_days": {"rejects": 7}})
    done = apply_retention(con, settings, now=NOW)
    # calls: c1 deleted; surveys: s1 (relinked to Ann's least device), s2 (no one), s3 (its
    # own person id kept); reviews: r1; rejects: j1 (older than 7 days)
    assert done == {"events": 0, "calls": 1, "surveys": 3, "reviews": 1, "rejects": 1,
                    "deals": 0, "number_leases": 0}
    assert con.table("calls").call_id.to_pandas().tolist() == ["c2"]
    surveys = con.table("surveys").order_by("response_id").to_pandas()
    assert surveys.person_id.tolist() == ["dev-a", None, "u7", None]
    assert surveys.email.tolist() == [None, None, None, "ann@acme.io"]
    assert surveys.nps_score.tolist()[0] == 9
    reviews = con.table("reviews").order_by("row_hash").to_pandas()
    assert reviews.email.isna().tolist() == [True, False]
    assert reviews.phone.isna().tolist() == [True, False]
    assert reviews.order_id.tolist() == ["O1", "O1"]
    rejects = con.table("rejects").order_by("reject_id").to_pandas()
    assert rejects.raw.isna().tolist() == [True, False]
    assert rejects.reason_code.tolist() == ["bad_type", "bad_type"]
    # nothing left to do: a second pass changes nothing
    assert set(apply_retention(con, settings, now=NOW).values()) == {0}


def test_retention_empties_the_contacts_of_old_deals_and_the_devices_of_old_leases(
        con: BaseBackend, tmp_path: Path) -> None:
    old, new = "2026-03-01 00:00:00", "2026-04-09 00:00:00"  # before / after the horizon
    props = '{"owner": "sam@plumb.example", "phone": "+12025550143", "segment": "smb"}'
    rows = {
        "deals": [
            # every time old: emptied
            {"deal_id": "D1", "contact_emails": "ann@acme.io;bob@acme.io",
             "contact_ids": "c-1", "amount": 100.0, "created_at": old, "closed_at": old,
             "properties": props, "row_hash": "h1"},
            # created old, updated since: its latest time is within the horizon, kept
            {"deal_id": "D2", "contact_emails": "ann@acme.io", "created_at": old,
             "updated_at": new, "row_hash": "h2"},
            # old but nothing personal: untouched, not counted
            {"deal_id": "D3", "contact_ids": "c-3", "created_at": old, "row_hash": "h3"},
        ],
        "number_leases": [
            {"lease_id": "l1", "number": "+15550100001", "anonymous_id": "dev-a",
             "session_id": "s-a", "leased_at": old, "expires_at": old},
            {"lease_id": "l2", "number": "+15550100001", "anonymous_id": "dev-b",
             "session_id": "s-b", "leased_at": new, "expires_at": new},
        ],
    }
    for name, data in rows.items():
        engine.load_table(con, name, arrow_table(store.TABLES[name], data))
    store.init(con)
    done = apply_retention(con, _settings(tmp_path, 30), now=NOW)
    assert (done["deals"], done["number_leases"]) == (1, 1)
    deals = con.table("deals").order_by("deal_id").to_pandas()
    assert deals.contact_emails.tolist() == [None, "ann@acme.io", None]
    assert deals.contact_ids.tolist() == ["c-1", None, "c-3"]
    assert deals.amount.tolist()[0] == 100.0
    assert orjson.loads(deals.properties[0]) == {"owner": "[removed]", "phone": None,
                                                 "segment": "smb"}
    leases = con.table("number_leases").order_by("lease_id").to_pandas()
    assert leases.anonymous_id.tolist() == [None, "dev-b"]
    assert leases.session_id.tolist() == [None, "s-b"]
    assert leases.number.tolist() == ["+15550100001"] * 2
    assert set(apply_retention(con, _settings(tmp_path, 30), now=NOW).values()) == {0}


def test_every_raw_table_has_a_retention_rule_or_a_reason_to_be_kept() -> None:
    derived = {t.name for t in (*store.PREPARED, *store.JOURNEY_TABLES, *store.EXPORT_TABLES,
                                *store.CRM_TABLES, *store.PRIVACY_TABLES)}
    raw = set(store.TABLES) - derived
    assert raw == set(TIME_COLUMNS) | set(KEPT)
    assert not set(TIME_COLUMNS) & set(KEPT)
    assert set(RETENTION_RULES) == set(TIME_COLUMNS)
