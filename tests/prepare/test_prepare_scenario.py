"""run_prepare end to end on one scenario's history (the morning, the whole day, the same
again, changed channel rules): hand-computed tables, idempotence, incremental = full rebuild,
the same result on DuckDB and Spark. The runs are made once per engine for the module."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd
import pytest
from ibis.backends import BaseBackend

from touchline import engine, store
from touchline.config import Settings
from touchline.prepare import STEPS, PrepareResult, run_prepare

from .conftest import NOW, arrow_table, load

FORM = {"type": "track", "event": "Form Submitted"}
SCENARIO = [
    # ann: paid search landing, later organic visit and a form; a CRM copy of the form
    {"anonymous_id": "a1", "timestamp": "09:00", "url": "https://shop.com/?gclid=g1",
     "gclid": "g1"},
    {"anonymous_id": "a1", "timestamp": "09:10", "url": "https://shop.com/pricing/",
     "referrer": "https://shop.com/"},
    {"anonymous_id": "a1", "timestamp": "11:00", "url": "https://shop.com/",
     "referrer": "https://www.google.co.uk/"},
    {**FORM, "anonymous_id": "a1", "timestamp": "11:05", "email": " Ann@Acme.com ",
     "url": "https://shop.com/contact"},
    {**FORM, "user_id": "u1", "timestamp": "11:06", "email": "ann@acme.com", "source": "crm"},
    # ann's phone, identified as u1
    {"anonymous_id": "a2", "type": "identify", "user_id": "u1", "timestamp": "10:02"},
    {"anonymous_id": "a2", "timestamp": "10:01", "url": "https://shop.com/?utm_source=FB&utm_medium=paid_social",
     "utm_source": "FB", "utm_medium": "paid_social", "revenue": 20.0, "currency": "EUR"},
    # bob: a gmail user from a facebook referral, and a copy of his message
    {"anonymous_id": "b1", "timestamp": "10:00", "referrer": "https://l.facebook.com/x",
     "url": "https://shop.com/?fbclid=zz", "fbclid": "zz", "email": "bob@gmail.com"},
    {"message_id": "m8", "anonymous_id": "b1", "timestamp": "10:00:05", "url": "late copy"},
    # carol at acme: a business domain without CRM
    {"anonymous_id": "c1", "timestamp": "12:00", "email": "carol@beta.io"},
    # junk
    {"anonymous_id": "bot", "timestamp": "09:00",
     "user_agent": "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)"},
    {"anonymous_id": "z", "timestamp": "1970-01-01 00:00:00"},
    {"timestamp": "09:00"},
]
DEALS = [{"deal_id": "d1", "account_id": "A1", "account_name": "Acme",
          "contact_emails": "ann@acme.com;dan@acme.com", "created_at": "2025-03-05 00:00:00"}]
RUN_COLUMNS = {"run_id", "audited_at", "rejected_at", "ingest_id"}


def setup(con, rows=SCENARIO):  # type: ignore[no-untyped-def]
    load(con, rows)
    engine.load_table(con, "deals", arrow_table(store.DEALS, DEALS))


def snapshot(con) -> dict[str, pd.DataFrame]:  # type: ignore[no-untyped-def]
    return comparable({spec.name: con.table(spec.name).to_pandas()
                       for spec in (*store.PREPARED, store.REJECTS)})


def comparable(tables: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """The tables without run ids and times, NaN and None alike, rows in one order."""
    out = {}
    for name, frame in tables.items():
        frame = frame[[c for c in frame.columns if c not in RUN_COLUMNS and c != "raw"]]
        frame = frame.astype(object).where(frame.notna(), None)  # NaN (DuckDB) vs None (Spark)
        out[name] = frame.sort_values(list(frame.columns), key=lambda c: c.astype(str)
                                      ).reset_index(drop=True)
    return out


@dataclass(frozen=True)
class Run:
    """One prepare run of the scenario: its result and every table it left, as read back."""

    result: PrepareResult
    tables: dict[str, pd.DataFrame]
    list_tables: list[str]
    touchpoints_is_view: bool


@dataclass(frozen=True)
class ScenarioRuns:
    """The scenario's history on one engine, each run read back as it finished:

    ``first``: the morning's events (before 11:00), on a warehouse that still holds a
    ``touchpoints`` table from an older version; ``full``: the rest of the day arrived;
    ``again``: the same input and rules once more; ``custom``: a rule file that makes every
    facebook source a ``Partner``.
    """

    first: Run
    full: Run
    again: Run
    custom: Run


def _run(con: BaseBackend, settings: Settings) -> Run:
    result = run_prepare(con, settings, now=NOW)
    tables = {spec.name: con.table(spec.name).to_pandas()
              for spec in (*store.PREPARED, store.REJECTS)}
    return Run(result, tables, con.list_tables(), engine.is_view(con, "touchpoints"))


@pytest.fixture(scope="module")
def scenario_runs(tmp_path_factory: pytest.TempPathFactory
                  ) -> Callable[[BaseBackend], ScenarioRuns]:
    """The scenario's four runs on ``con``'s engine, made once per engine for the module.

    Why: a Spark prepare of a dozen rows takes half a minute (some fifty tables written), and
    five tests read these same runs; each asserts what it did before, on the runs it made
    itself. The runs are made on the first asking test's ``con`` and read back into pandas,
    so a test reads them from here, never from ``con``.
    """
    made: dict[str, ScenarioRuns] = {}

    def runs(con: BaseBackend) -> ScenarioRuns:
        name = engine.engine_name(con)
        if name not in made:
            folder = tmp_path_factory.mktemp(f"scenario-{name}")
            settings = Settings(database_url="duckdb://", temp_directory=folder)
            rules = folder / "rules.csv"
            rules.write_text("priority,channel_group,rule,clause,field,op,value\n"
                             "1,Partner,facebook_partner,1,source,eq,facebook\n")
            setup(con, [r for r in SCENARIO if str(r["timestamp"]) < "11:00"])
            con.create_table("touchpoints", schema=store.TOUCHPOINTS.schema, overwrite=True)
            first = _run(con, settings)
            setup(con)  # the rest of the day arrives
            full = _run(con, settings)
            again = _run(con, settings)
            custom = _run(con, settings.model_copy(update={"channel_rules_file": rules}))
            made[name] = ScenarioRuns(first, full, again, custom)
        return made[name]

    return runs


def test_prepare_builds_every_table_with_hand_computed_counts(con, scenario_runs) -> None:  # type: ignore[no-untyped-def]
    run = scenario_runs(con).full
    result = run.result
    assert result.rejects_by_reason == {
        "no_identity": 1, "impossible_timestamp": 1, "bot_user_agent": 1,
        "duplicate_message_id": 1, "cross_source_duplicate": 1}
    # kept + rejected = input
    assert result.counts["touchpoints"] + sum(result.rejects_by_reason.values()) == len(SCENARIO)
    assert [s.name for s in result.steps] == [s.name for s in STEPS]
    sessions = run.tables["sessions"].set_index("session_id")
    assert sessions.channel.to_dict() == {
        "anon:a1#1": "Paid Search", "anon:a1#2": "Organic Search", "anon:a2#1": "Paid Social",
        "anon:b1#1": "Organic Social", "anon:c1#1": "Direct"}
    assert sessions.loc["anon:a1#1", "pageview_count"] == 2
    persons = run.tables["persons"]
    assert len(persons) == 3  # ann (a1, a2, u1, e-mail), bob, carol
    ann = persons[persons.user_id == "u1"].iloc[0]
    assert (ann.device_count, ann.email, ann.account_id) == (2, "ann@acme.com", "crm:A1")
    accounts = run.tables["accounts"].set_index("account_id")
    assert accounts.account_source.to_dict() == {"crm:A1": "crm", "domain:beta.io": "email_domain"}
    links = run.tables["identity_links"]
    crm = links[links.link_id == "email:ann@acme.com|user:u1"].iloc[0]
    assert crm.evidence == "crm_match"  # from the CRM copy dropped as a duplicate touch
    touchpoints = run.tables["touchpoints"]
    touch = touchpoints[touchpoints.revenue.notna()].iloc[0]
    assert round(touch.revenue, 2) == 20.70 and touch.currency == "USD"
    assert (touch.session_id, touch.channel, touch.person_id, touch.account_id) == (
        "anon:a2#1", "Paid Social", ann.person_id, "crm:A1")
    # the view loses no touch: each meets exactly one session
    assert len(touchpoints) == result.counts["touches"] == 8
    # a dropped row is shown in rejects.raw as JSON, as the collector and file ingest show it
    dropped = run.tables["rejects"].set_index("reason_code").raw.map(json.loads)
    assert dropped["bot_user_agent"]["user_agent"].startswith("Mozilla/5.0 (compatible; bingbot")
    assert all(set(shown) >= {"message_id", "type", "timestamp"} for shown in dropped)
    assert not [n for n in run.list_tables if n.startswith("tmp_prepare_")]


def test_a_touchpoints_table_from_an_older_version_becomes_the_view(con, scenario_runs) -> None:  # type: ignore[no-untyped-def]
    first = scenario_runs(con).first  # made on a warehouse with a touchpoints table
    assert first.touchpoints_is_view
    assert len(first.tables["touchpoints"]) == first.result.counts["touches"] > 0


def test_changed_rules_reclassify_history_and_report_the_difference(con, scenario_runs) -> None:  # type: ignore[no-untyped-def]
    runs = scenario_runs(con)
    assert runs.first.result.channel_changes == {}
    assert runs.again.result.channel_changes == {}  # same rules: no change
    # bob's facebook referral (Organic Social) and ann's paid social visit (source fb)
    assert runs.custom.result.channel_changes == {("Organic Social", "Partner"): 1,
                                                  ("Paid Social", "Partner"): 1}
    sessions = runs.custom.tables["sessions"].set_index("session_id")
    assert sessions.loc[["anon:b1#1", "anon:a2#1"], "channel_rule"].tolist() == [
        "facebook_partner", "facebook_partner"]


def test_rerun_is_idempotent_and_incremental_equals_full_rebuild(con, scenario_runs) -> None:  # type: ignore[no-untyped-def]
    runs = scenario_runs(con)  # the morning, then the whole day (incremental), then again
    assert_frames_equal(comparable(runs.again.tables), comparable(runs.full.tables))


def assert_frames_equal(left: dict[str, pd.DataFrame], right: dict[str, pd.DataFrame]) -> None:
    assert left.keys() == right.keys()
    for name in left:
        pd.testing.assert_frame_equal(left[name], right[name], check_dtype=False,
                                      obj=f"table {name}")


@pytest.mark.spark
def test_duckdb_and_spark_prepare_identically(spark_backend, scenario_runs, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Each run of the scenario's history leaves the same tables on Spark as on DuckDB."""
    duck = engine.connect(settings=Settings(database_url="duckdb://", temp_directory=tmp_path))
    try:
        reference = scenario_runs(duck)
    finally:
        duck.disconnect()
    before = set(spark_backend.list_tables())
    try:
        spark = scenario_runs(spark_backend)
    finally:  # the spark_backend fixture, unlike con, leaves the tables a test made
        for name in set(spark_backend.list_tables()) - before:
            engine.drop_any(spark_backend, name)
    for which in ("first", "full", "again", "custom"):
        assert_frames_equal(comparable(getattr(spark, which).tables),
                            comparable(getattr(reference, which).tables))
