"""Journeys as stored tables: conversions as data, repeat conversions, lookback, units, credits.

Expectations are computed by hand. Table tests build ``sessions`` and conversions directly on
both engines (``con``); John's story runs the whole ``touchline.pipeline.run`` on both.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from factories import JOHN, JOHN_DEAL, arrow_table, event_rows, prepare_on_duckdb
from ibis.backends import BaseBackend

from touchline import engine, store
from touchline.config import ConversionSpec, Settings, load_settings
from touchline.errors import ConfigError, InputError, UnknownModelError
from touchline.journeys import journey_tables
from touchline.journeys.conversions import CONVERSION_SCHEMA
from touchline.journeys.timeline import resolve_unit, timeline
from touchline.pipeline import run

T0 = datetime(2026, 3, 1, 9, 0)


def _sessions(con: BaseBackend, rows: list[tuple[str, float, str, str | None]]) -> object:
    """(person, day offset, channel, account) → a stored ``sessions`` table."""
    data = [{"session_id": f"{p}#{i}", "device_id": f"anon:{p}", "person_id": p,
             "account_id": account, "session_index": i, "started_at": T0 + timedelta(days=day),
             "ended_at": T0 + timedelta(days=day), "channel": channel}
            for i, (p, day, channel, account) in enumerate(rows, start=1)]
    return engine.load_table(con, "sessions", arrow_table(store.SESSIONS, data))


def _conversions(con: BaseBackend, name: str, unit: str,
                 rows: list[tuple[str, float, float]]) -> object:
    import pyarrow as pa

    data = pa.table({
        "conversion": [name] * len(rows), "unit": [unit] * len(rows),
        "unit_id": [r[0] for r in rows],
        "converted_at": pa.array([T0 + timedelta(days=r[1]) for r in rows], pa.timestamp("us")),
        "value": [float(r[2]) for r in rows], "ref": [f"c{i}" for i in range(len(rows))]})
    table = engine.load_table(con, "conv_input", data)
    return table.select(*(table[c].cast(t).name(c) for c, t in CONVERSION_SCHEMA.items()))


def _paths(con: BaseBackend, spec: ConversionSpec) -> tuple[dict, dict]:
    journeys, touches = journey_tables(con.table("sessions"), con.table("conv"), spec)
    t = touches.order_by(["journey_id", "position"]).to_pandas()
    paths = {jid: list(g.channel) for jid, g in t.groupby("journey_id")}
    heads = journeys.to_pandas().set_index("journey_id")
    return paths, heads


def test_a_repeat_buyer_gets_one_journey_per_purchase(con: BaseBackend) -> None:
    _sessions(con, [("p1", 0, "Organic Search", None), ("p1", 1, "Paid Search", None),
                    ("p1", 2, "Email", None), ("p1", 3, "Direct", None),
                    ("p1", 4, "Email", None), ("p1", 5, "Paid Social", None),
                    ("p1", 7, "Referral", None)])
    # three purchases: on day 1 (after its session), day 3 and day 5
    con.create_table("conv", _conversions(con, "purchase", "person",
                                          [("p1", 1.01, 10), ("p1", 3.01, 20), ("p1", 5.01, 30)]))
    spec = ConversionSpec(name="purchase", revenue=True, value="revenue")
    paths, heads = _paths(con, spec)
    assert paths == {
        "purchase:p1:1": ["Organic Search", "Paid Search"],
        "purchase:p1:2": ["Email", "Direct"],  # since the previous purchase only
        "purchase:p1:3": ["Email", "Paid Social"],
        "purchase:p1:open": ["Referral"],  # after the last purchase
    }
    assert heads.loc["purchase:p1:2", "value"] == 20
    assert heads.loc["purchase:p1:3", "sequence"] == 3
    assert not heads.loc["purchase:p1:open", "converted"]
    full = ConversionSpec(name="purchase", revenue=True, value="revenue",
                          history="full_history")
    paths, _ = _paths(con, full)
    assert paths["purchase:p1:3"] == ["Organic Search", "Paid Search", "Email", "Direct",
                                      "Email", "Paid Social"]


def test_a_refund_lowers_the_purchase_it_follows_and_is_no_conversion(con: BaseBackend) -> None:
    from touchline.journeys.conversions import apply_refunds, touch_conversions

    rows = [{"touchpoint_id": f"t{i}", "person_id": "p1", "event": "Order Completed",
             "type": "track", "occurred_at": T0 + timedelta(days=day), "revenue": revenue}
            for i, (day, revenue) in enumerate([(1, 100.0), (2, -30.0), (3, 50.0), (4, -80.0),
                                                (0, -5.0)])]
    tp = engine.load_table(con, "touchpoints", arrow_table(store.TOUCHPOINTS, rows))
    spec = ConversionSpec(name="purchase", events=["Order Completed"], value="revenue")
    found = touch_conversions(tp, spec, {})
    assert sorted(found.ref.to_pandas()) == ["t0", "t2"]  # the refunds are not conversions
    values = apply_refunds(found, tp, "person").order_by("converted_at").value.to_pandas()
    # -30 lowers the first purchase; -80 the second, not below 0; -5 before any: nothing
    assert values.tolist() == [70.0, 0.0]
    # when only the first purchase counts, the later refunds adjust it, not a dropped one
    from touchline.journeys.conversions import find_conversions

    first = ConversionSpec(name="purchase", revenue=True, value="revenue", count="first")
    got = find_conversions(con, first, touch_events={}, statuses={}, rates={}).to_pandas()
    assert got.value.tolist() == [0.0]  # 100 - 30 - 80, not below 0


def test_lookback_cuts_and_counts_while_an_account_keeps_192_days(con: BaseBackend) -> None:
    _sessions(con, [("p1", 0, "Organic Search", None), ("p1", 9, "Paid Search", None),
                    ("ann", 0, "Paid Social", "crm:acme"), ("bob", 100, "Email", "crm:acme"),
                    ("ann", 191, "Referral", "crm:acme")])
    con.create_table("conv", _conversions(con, "purchase", "person", [("p1", 10, 5)]))
    week = ConversionSpec(name="purchase", revenue=True, value="revenue", lookback_days=7)
    paths, heads = _paths(con, week)
    # ann and bob belong to a company, yet a purchase is a person's: they keep their journeys
    # (an open one's window ends at its last touch: ann's day-0 visit is out of it)
    assert paths == {"purchase:p1:1": ["Paid Search"], "purchase:ann:open": ["Referral"],
                     "purchase:bob:open": ["Email"]}
    assert heads.loc["purchase:p1:1", "cut_touches"] == 1
    assert heads.loc["purchase:p1:1", "lookback_cut"]
    # a touch exactly at the edge of the window stays in it
    edge = ConversionSpec(name="purchase", revenue=True, value="revenue", lookback_days=10)
    assert _paths(con, edge)[0]["purchase:p1:1"] == ["Organic Search", "Paid Search"]

    con.create_table("conv", _conversions(con, "deal_won", "account", [("crm:acme", 192, 5000)]),
                     overwrite=True)
    deal = ConversionSpec(name="deal_won", deal="won", value="deal_amount", unit="account")
    assert deal.lookback_days is None  # none by default for accounts
    paths, heads = _paths(con, deal)
    # p1 has no company: a deal would be theirs, so they have an open journey of this type
    assert paths == {"deal_won:crm:acme:1": ["Paid Social", "Email", "Referral"],
                     "deal_won:p1:open": ["Organic Search", "Paid Search"]}
    assert heads.loc["deal_won:crm:acme:1", "days_to_convert"] == pytest.approx(192)
    touches = journey_tables(con.table("sessions"), con.table("conv"), deal)[1].to_pandas()
    acme = touches[touches.unit_id == "crm:acme"]
    assert sorted(acme.person_id) == ["ann", "ann", "bob"]  # each stakeholder named


def test_a_lead_counts_once_and_a_conversion_without_touches_is_kept(con: BaseBackend) -> None:
    _sessions(con, [("p1", 0, "Organic Search", None), ("p1", 2, "Email", None),
                    ("p2", 0, "Direct", None)])
    con.create_table("conv", _conversions(con, "lead", "person",
                                          [("p1", 1, 0), ("p1", 3, 0), ("p9", 1, 0)]))
    lead = ConversionSpec(name="lead", touches=["form"], count="first")
    paths, heads = _paths(con, lead)
    # p1's second lead is not a conversion, and p1 (converted) has no open journey
    assert paths == {"lead:p1:1": ["Organic Search"], "lead:p2:open": ["Direct"]}
    assert heads.loc["lead:p9:1", "touches"] == 0  # p9 has no session: kept, 0 touches
    assert heads.loc["lead:p9:1", "converted"]


def test_an_empty_warehouse_gives_empty_tables(con: BaseBackend) -> None:
    store.init(con)
    settings = Settings(database_url="duckdb://")
    report = run(con, settings, prepare=False)
    assert report.main_conversion is None
    assert report.rows == {"stages": 0, "journeys": 0, "journey_steps": 0, "credits": 0}
    # each run leaves its row in the runs log, the last one on top of the earlier
    run(con, settings, prepare=False)
    runs = con.table("runs").order_by("finished_at").to_pandas()
    assert len(runs) == 2 and runs.run_id.nunique() == 2
    first = runs.iloc[0]
    assert (bool(first.prepared), first.journeys, first.conversions, first.warnings) == (
        False, 0, 0, 0)
    assert pd.isna(first.touches) and first.models == ", ".join(settings.attribution_models)
    assert (runs.started_at <= runs.finished_at).all()


def test_johns_story_through_the_run(con: BaseBackend, tmp_path) -> None:  # type: ignore[no-untyped-def]
    settings = Settings(database_url="duckdb://", temp_directory=tmp_path)
    spark = engine.engine_name(con) == "spark"
    if spark:
        prepare_on_duckdb(con, settings, JOHN, JOHN_DEAL)
    else:
        engine.load_table(con, "events", arrow_table(store.EVENTS, event_rows(JOHN)))
        engine.load_table(con, "deals", arrow_table(store.DEALS, JOHN_DEAL))
    report = run(con, settings, prepare=not spark)
    assert con.table("persons").count().execute() == 1
    touches = con.table("journey_touches").order_by(["journey_id", "position"]).to_pandas()
    journeys = con.table("journeys").to_pandas().set_index("conversion")
    # he never bought on the site: a type nothing converted to has no journeys, and the
    # summary still lists it
    assert set(journeys.index) == {"lead", "call", "deal_won"}
    summary = report.conversions.set_index("conversion")
    assert summary.conversions.to_dict() == {"call": 1, "deal_won": 1, "lead": 1, "purchase": 0}
    deal = touches[touches.conversion == "deal_won"]
    assert deal.channel.tolist() == ["Organic Search", "Paid Search", "Direct", "Phone"]
    assert deal.keyword.tolist()[1] == "emergency plumber"
    assert deal.unit.unique().tolist() == ["person"]  # a B2C sale: no account, his e-mail
    assert touches[touches.conversion == "lead"].channel.tolist() == ["Organic Search",
                                                                      "Paid Search"]
    assert journeys.loc["deal_won", "value"] == 1800.0
    assert journeys.loc["deal_won", "converted_at"] == datetime(2026, 3, 20, 10)
    assert journeys.loc["call", "touches"] == 4
    assert report.main_conversion == "deal_won"
    assert report.warnings == []
    # the run's row: his six events as six touches in four sessions (two on the laptop, the
    # phone visit, the call) of one person; three journeys, each converted
    ran = con.table("runs").to_pandas().iloc[0]
    assert (ran.journeys, ran.conversions, ran.warnings) == (3, 3, 0)
    if spark:  # prepared on DuckDB, so the Spark run only built journeys and credits
        assert not ran.prepared and pd.isna(ran.touches)
    else:
        assert ran.prepared and (ran.touches, ran.sessions, ran.persons) == (6, 4, 1)
    # his lifecycle: aware on the organic visit, considering on his return, deciding at the
    # chat lead, retained at the sale; each touch carries the stage he was in
    stages = con.table("stages").filter(lambda t: t.stage_model == "lifecycle").order_by(
        "entered_at").to_pandas()
    assert list(zip(stages.stage, stages.entered_at, strict=True)) == [
        ("awareness", datetime(2026, 3, 1, 9)), ("consideration", datetime(2026, 3, 5, 20)),
        ("decision", datetime(2026, 3, 5, 20, 3)), ("retention", datetime(2026, 3, 20, 10))]
    assert stages.left_at.tolist()[:3] == stages.entered_at.tolist()[1:]
    assert deal.stage.tolist() == ["awareness", "consideration", "decision", "decision"]

    # his timeline, found by his phone number in any format, reads as the story does
    unit, person = resolve_unit(con, "(202) 555-0143")
    assert (unit, person) == ("person", con.table("persons").person_id.execute()[0])
    moments = timeline(con, unit, person, model="linear", conversion="deal_won").to_pandas()
    story = [(m.kind, m.channel if m.kind == "touch" else m.detail) for m in
             moments.itertuples() if m.kind != "touch" or m.detail != "identify"]
    assert story == [
        ("stage", "lifecycle: awareness"), ("touch", "Organic Search"),
        ("stage", "lifecycle: consideration"), ("touch", "Paid Search"),
        ("stage", "lifecycle: decision"), ("touch", "Paid Search"), ("conversion", "lead #1"),
        ("touch", "Direct"), ("touch", "Phone"), ("conversion", "call #1"),
        ("stage", "lifecycle: retention"), ("deal", "deal D1: Closed Won"),
        ("conversion", "deal_won #1")]
    credited = moments[moments.credit.notnull()]
    assert credited.credit.tolist() == pytest.approx([0.25] * 4)  # one per session
    assert credited.value.sum() == pytest.approx(1800.0)

    credits = con.table("credits").to_pandas()
    assert sorted(credits.model.unique()) == sorted(settings.attribution_models)
    per_journey = credits.groupby(["conversion", "model"]).agg(credit=("credit", "sum"),
                                                               value=("value", "sum"))
    assert np.allclose(per_journey.credit, 1.0)
    deal_credit = credits[credits.conversion == "deal_won"].pivot_table(
        index="position", columns="model", values="credit")
    assert deal_credit.linear.tolist() == pytest.approx([0.25] * 4)
    assert deal_credit.position_based.tolist() == pytest.approx([0.4, 0.1, 0.1, 0.4])
    assert deal_credit.last_non_direct.tolist() == pytest.approx([0, 0, 0, 1])  # the call
    ages = np.array([19 + 1 / 24, 14 + 14 / 24, 8 + 2 / 24, 8 + 1 / 24])  # days to the close
    decay = np.exp2(-ages / 7)
    assert deal_credit.time_decay.tolist() == pytest.approx(decay / decay.sum())
    deal_value = credits[(credits.conversion == "deal_won")].groupby("model").value.sum()
    assert np.allclose(deal_value, 1800.0)
    # beside the credits, the data-driven models' bootstrap intervals: his one deal journey is
    # every resample, so each interval is the quarter per channel, with no width
    bounds = con.table("credit_intervals").to_pandas()
    deal_bounds = bounds[bounds.conversion == "deal_won"]
    assert sorted(deal_bounds.model.unique()) == ["auto", "counterfactual", "markov", "shapley"]
    assert sorted(deal_bounds.channel.unique()) == ["Direct", "Organic Search", "Paid Search",
                                                    "Phone"]
    for column in ("conversions", "conversions_low", "conversions_high"):
        assert deal_bounds[column].tolist() == pytest.approx([0.25] * 16)
    assert deal_bounds.value_high.tolist() == pytest.approx([450.0] * 16)
    assert not deal_bounds.flagged.any()
    assert set(deal_bounds.replicates) == {settings.bootstrap_replicates}
    assert set(deal_bounds.confidence) == {0.9}


def test_a_person_known_only_by_hashes_is_found_by_address_number_or_hash(
        con: BaseBackend, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """An export that names people by SHA-256 only (Puffy's hashed e-mails): the person search
    (``touchline person`` and the dashboard's, both :func:`resolve_unit`) hashes a typed
    e-mail or phone as prepare keeps it, and takes 64 hex digits (any case) as such a hash."""
    import hashlib

    def sha(text: str) -> str:
        return hashlib.sha256(text.encode()).hexdigest()

    settings = Settings(database_url="duckdb://", temp_directory=tmp_path)
    prepare_on_duckdb(con, settings, [
        {"anonymous_id": "dev1", "type": "track", "event": "Signed Up", "timestamp": "09:00",
         "email_sha256": sha("ann@x.io")},
        {"anonymous_id": "dev2", "type": "track", "event": "Called", "timestamp": "09:10",
         "phone_sha256": sha("+12025550143")},
        {"anonymous_id": "dev3", "email": "bob@y.io", "timestamp": "09:20",
         "url": "https://x.io/"}], [])
    ids = con.table("identities").to_pandas().set_index("identifier").person_id
    ann, phoned, bob = ids["anon:dev1"], ids["anon:dev2"], ids["anon:dev3"]
    assert len({ann, phoned, bob}) == 3
    for typed, person in ((" Ann@X.io ", ann), (sha("ann@x.io").upper(), ann),
                          ("(202) 555-0143", phoned), (sha("+12025550143"), phoned),
                          ("bob@y.io", bob)):
        assert resolve_unit(con, typed) == ("person", person), typed
    with pytest.raises(InputError, match=r"no person or account is named 'nobody@x\.io'"):
        resolve_unit(con, "nobody@x.io")


def test_a_person_is_found_by_an_identifier_already_prefixed_with_its_kind(
        con: BaseBackend, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """``touchline person contact:M-1``: the form the not-found error lists is taken as it is
    (it was looked up as ``contact:contact:M-1``), for every kind of identifier."""
    settings = Settings(database_url="duckdb://", temp_directory=tmp_path)
    prepare_on_duckdb(con, settings, [
        {"anonymous_id": "dev1", "type": "track", "event": "Form Submitted",
         "timestamp": "09:00", "contact_id": "M-1"},
        {"anonymous_id": "dev2", "user_id": "u7", "email": "bob@y.io", "timestamp": "09:20",
         "url": "https://x.io/"}], [])
    ids = con.table("identities").to_pandas().set_index("identifier").person_id
    mql, bob = ids["anon:dev1"], ids["anon:dev2"]
    for typed, person in (("contact:M-1", mql), ("M-1", mql), ("anon:dev1", mql),
                          ("user:u7", bob), ("email:Bob@Y.io", bob), ("u7", bob)):
        assert resolve_unit(con, typed) == ("person", person), typed
    with pytest.raises(InputError, match=r"tried person and account ids, contact:M-2\)"):
        resolve_unit(con, "contact:M-2")


def test_won_deals_that_name_no_one_known_are_counted_in_a_warning(
        con: BaseBackend, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A CRM export of won deals loaded without contacts (Olist's closed deals by ``mql_id``
    only) converts for no one: the run says how many won deals were left out and why, instead
    of a silent 0 of ``deal_won``."""
    from touchline.pipeline import deal_notes

    settings = Settings(database_url="duckdb://", temp_directory=tmp_path)
    won = {"status": "won", "closed_at": "2026-03-20 10:00:00"}
    prepare_on_duckdb(con, settings, [
        {"anonymous_id": "dev1", "email": "ann@x.io", "timestamp": "09:00",
         "url": "https://x.io/"}], [
        {"deal_id": "D1", "contact_emails": "Ann@x.io", **won},  # hers: converts
        {"deal_id": "D2", **won}, {"deal_id": "D3", **won},      # name no one
        {"deal_id": "D4", "contact_emails": "stranger@z.io", **won},  # a stranger
        {"deal_id": "D5", "status": "lost", "closed_at": "2026-03-20 10:00:00"}])
    assert deal_notes(con, settings) == [
        "3 won deals are left out of conversion 'deal_won': 2 name no account_id, "
        "contact_emails or contact_ids (map one of them when importing deals: "
        "docs/ingest.md); 1 name only accounts or people not seen in events"]
    assert deal_notes(con, Settings(database_url="duckdb://", conversions=[
        c for c in settings.conversions if c.deal is None])) == []
    # one conversion's (`touchline kpis --conversion`, the report's): only a deal one says it
    assert deal_notes(con, settings, conversions=["deal_won"]) == deal_notes(con, settings)
    assert deal_notes(con, settings, conversions=["purchase"]) == []


def test_stages_may_be_skipped_and_entered_out_of_order(con: BaseBackend) -> None:
    from touchline.config import StageSpec
    from touchline.journeys.stages import stage_at, stage_entries

    deals = engine.load_table(con, "deals", arrow_table(store.DEALS, [
        # the CRM dates acme's SQL before its MQL; no opportunity date: skipped
        {"deal_id": "d1", "account_id": "acme", "status": "Closed Won", "amount": 9.0,
         "created_at": "2026-03-01 00:00:00", "mql_at": "2026-03-05 00:00:00",
         "sql_at": "2026-03-03 00:00:00", "closed_at": "2026-03-09 00:00:00"}]))
    accounts = engine.load_table(con, "accounts", arrow_table(store.ACCOUNTS, [
        {"account_id": "crm:acme"}]))
    identities = engine.load_table(con, "identities", arrow_table(store.IDENTITIES, []))
    empty = engine.load_table(con, "touchpoints", arrow_table(store.TOUCHPOINTS, []))
    sessions = _sessions(con, [("ann", 1, "Email", "crm:acme")])
    entered = {}
    for stage in ("mql", "sql", "opportunity", "won"):
        rows = stage_entries(StageSpec(name=stage, deal=stage), unit="account",
                             sessions=sessions, touchpoints=empty, conversions=empty,
                             deals=deals, identities=identities, accounts=accounts,
                             touch_events={}, statuses=Settings().deal_statuses).to_pandas()
        entered[stage] = rows.entered_at.tolist()
    assert entered == {"mql": [datetime(2026, 3, 5)], "sql": [datetime(2026, 3, 3)],
                       "opportunity": [], "won": [datetime(2026, 3, 9)]}
    # as stage_table stores them: each entry left at the next one in time
    stages = engine.load_table(con, "stages_in", arrow_table(store.STAGES, [
        {"unit": "account", "unit_id": "crm:acme", "stage_model": "b2b", "stage": s,
         "stage_order": o, "entered_at": d, "left_at": left} for s, o, d, left in
        (("SQL", 3, "2026-03-03 00:00:00", "2026-03-05 00:00:00"),
         ("MQL", 2, "2026-03-05 00:00:00", None))]))
    touches = engine.load_table(con, "jt", arrow_table(store.JOURNEY_TOUCHES, [
        {"journey_id": "j", "position": i, "unit": "account", "unit_id": "crm:acme",
         "touch_at": f"2026-03-0{d} 12:00:00"} for i, d in ((1, 2), (2, 4), (3, 6))]))
    got = stage_at(touches.drop("stage"), stages, "b2b").order_by("position").to_pandas()
    assert got.stage.tolist() == [None, "SQL", "MQL"]  # a regression shows as it happened
    # entries without left_at (any entries table): the same stages, left_at computed
    got = stage_at(touches.drop("stage"), stages.drop("left_at"), "b2b").order_by(
        "position").to_pandas()
    assert got.stage.tolist() == [None, "SQL", "MQL"]


def _journey_touches(con: BaseBackend, paths: dict[str, tuple[list[str], bool]]) -> object:
    rows = [{"journey_id": jid, "position": i, "channel": label, "converted": converted,
             "value": 10.0 if converted else 0.0, "conversion": "purchase"}
            for jid, (labels, converted) in paths.items()
            for i, label in enumerate(labels, start=1)]
    return engine.load_table(con, "jt", arrow_table(store.JOURNEY_TOUCHES, rows))


def test_top_paths_add_up_to_every_journey_and_group_rare_ones(con: BaseBackend) -> None:
    from touchline.journeys.top_paths import sankey_links, top_paths

    jt = _journey_touches(con, {
        "a": (["Email", "Direct"], True), "b": (["Email", "Direct"], True),
        "c": (["Email", "Direct"], False), "d": (["Paid Search"], True),
        "e": (["Email", "Email", "Direct"], True), "f": (["Referral"], False)})
    every = top_paths(jt, to="all", top=2)
    assert every.path.tolist() == ["Email > Direct", "Email > Email > Direct", "other (2 paths)"]
    assert every.journeys.tolist() == [3, 1, 2]
    assert every.journeys.sum() == 6  # every journey, once
    assert every.conversion_rate.tolist() == pytest.approx([2 / 3, 1.0, 0.5])
    collapsed = top_paths(jt, to="all", top=1, collapse=True)
    assert collapsed.path.tolist() == ["Email > Direct", "other (2 paths)"]
    assert collapsed.journeys.tolist() == [4, 2]
    assert top_paths(jt, to="drop-off").path.tolist() == ["Email > Direct", "Referral"]
    links = sankey_links(jt, max_steps=2).to_pandas()
    got = {(r.step, r.source, r.target): r.journeys for r in links.itertuples()}
    assert got == {(1, "Email", "Direct"): 4, (2, "Direct", "(conversion)"): 3,
                   (2, "Direct", "(drop-off)"): 1, (1, "Paid Search", "(conversion)"): 1,
                   (1, "Referral", "(drop-off)"): 1}


def test_conversion_definitions_fail_at_load_with_the_nearest_name() -> None:
    with pytest.raises(ConfigError, match=r"touch 'frm' \(did you mean 'form'\?\)"):
        load_settings(conversions=[{"name": "lead", "touches": ["frm"]}])
    with pytest.raises(ConfigError, match="on deals or on touches, not both"):
        load_settings(conversions=[{"name": "x", "deal": "won", "revenue": True}])
    with pytest.raises(ConfigError, match=r"unit 'acount' \(did you mean 'account'\?\)"):
        load_settings(conversions=[{"name": "x", "deal": "won", "unit": "acount"}])
    with pytest.raises(ConfigError, match="no condition"):
        load_settings(conversions=[{"name": "x"}])
    with pytest.raises(ConfigError, match="unique"):
        load_settings(conversions=[{"name": "x", "revenue": True}, {"name": "x", "deal": "won"}])
    with pytest.raises(ConfigError, match=r"unknown field 'valu' \(did you mean 'value'\?\)"):
        load_settings(conversions=[{"name": "x", "revenue": True, "valu": "revenue"}])
    with pytest.raises(ConfigError, match="stage model 'saas' has no stages"):
        load_settings(stage_models={"saas": []})
    with pytest.raises(ConfigError, match="stage trial twice"):
        load_settings(stage_models={"saas": [{"name": "trial", "first_touch": True},
                                             {"name": "trial", "visits": 2}]})
    assert load_settings(conversions=[{"name": "x", "events": ["A"], "value": 50}]
                         ).conversions[0].value == "50"


def test_a_conversion_naming_an_event_nobody_sent_is_reported(tmp_path) -> None:  # type: ignore[no-untyped-def]
    settings = Settings(database_url="duckdb://", temp_directory=tmp_path, conversions=[
        ConversionSpec(name="chat", events=["Chat Startd"]),
        ConversionSpec(name="won", deal="Closed Wonn", value="deal_amount")])
    con = engine.connect(settings=settings)
    engine.load_table(con, "events", arrow_table(store.EVENTS, event_rows(JOHN)))
    engine.load_table(con, "deals", arrow_table(store.DEALS, [
        {**JOHN_DEAL[0], "stage": "Closed Won"}]))
    engine.append(con, "events", arrow_table(store.EVENTS, event_rows([
        {"anonymous_id": "laptop", "type": "track", "event": "Order Completed",
         "revenue": 50.0, "currency": "XYZ", "timestamp": "2026-03-06 10:00:00",
         "message_id": "xyz"}])))
    report = run(con, settings)
    assert report.warnings == [
        "conversion 'chat': no touch has the event 'Chat Startd' (did you mean 'Chat Started'?)",
        "conversion 'won': no deal has the deal stage 'closed wonn' (did you mean 'closed won'?)",
        "1 revenue values in currency 'XYZ' have no rate: they count as no revenue (add the "
        "rate to currency_rates_file)"]


def test_an_unknown_model_in_the_settings_names_the_choices(con: BaseBackend) -> None:
    settings = Settings(database_url="duckdb://", attribution_models=["markof"],
                        default_model="markof")
    with pytest.raises(UnknownModelError, match=r"settings.attribution_models.*markov"):
        run(con, settings, prepare=False)
    with pytest.raises(ConfigError, match="default_model 'markov' is not one of"):
        load_settings(attribution_models=["linear"], default_model="markov")
