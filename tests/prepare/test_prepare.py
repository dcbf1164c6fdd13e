"""run_prepare end to end on small cases, each on both engines: identity graph and its guards,
accounts, sessions settings, deals and CRM contacts, calls, bursts, backfills, the CLI. (One
scenario's whole history: test_prepare_scenario.py.)"""

from __future__ import annotations

from pathlib import Path

import ibis
import pandas as pd
import pytest
from factories import CLI_OWN_CONNECTION
from typer.testing import CliRunner

from touchline import engine, store
from touchline.config import Settings
from touchline.prepare import STEPS, run_prepare

from .conftest import NOW, arrow_table, event_rows, load
from .test_prepare_scenario import SCENARIO


def test_alias_calls_merge_a_user_id_or_an_anonymous_id_into_the_new_user(con, settings) -> None:  # type: ignore[no-untyped-def]
    """Segment's previousId is either a user id (a renamed account) or an anonymous id."""
    load(con, [
        {"anonymous_id": "a1", "type": "identify", "user_id": "old", "timestamp": "09:00"},
        {"anonymous_id": "a2", "type": "alias", "user_id": "new", "previous_id": "old",
         "timestamp": "10:00"},
        {"anonymous_id": "a4", "timestamp": "11:00", "url": "https://shop.com/"},
        {"type": "alias", "user_id": "u9", "previous_id": "a4", "timestamp": "11:05"},
    ])
    run_prepare(con, settings, now=NOW)
    ident = con.table("identities").to_pandas()
    persons = ident.groupby("person_id").identifier.apply(sorted).tolist()
    assert sorted(persons) == [["anon:a1", "anon:a2", "user:new", "user:old"],
                               ["anon:a4", "user:u9"]]
    links = con.table("identity_links").to_pandas().set_index("link_id")
    assert links.loc["user:new|user:old", "evidence"] == "alias"
    assert links.loc["anon:a4|user:u9", "evidence"] == "alias"


def test_identity_guards_cut_hubs_and_unlinking_splits(con, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    rows = [{"anonymous_id": f"d{i}", "timestamp": "09:00", "email": "help@vendor.com"}
            for i in range(4)]
    rows += [{"anonymous_id": "x1", "type": "identify", "user_id": "ux", "timestamp": "09:00"},
             {"anonymous_id": "x2", "type": "identify", "user_id": "ux", "timestamp": "09:00"}]
    load(con, rows)
    capped = Settings(database_url="duckdb://", temp_directory=tmp_path, identity_max_degree=3)
    run_prepare(con, capped, now=NOW)
    links = con.table("identity_links").to_pandas()
    assert set(links[links.identifier_b == "email:help@vendor.com"].reason) == {"max_degree"}
    assert con.table("persons").count().execute() == 4 + 1 + 1  # 4 devices, the e-mail, ux
    unlinked = capped.model_copy(update={"identity_unlink": ["user:ux"]})
    run_prepare(con, unlinked, now=NOW)
    assert con.table("persons").count().execute() == 4 + 1 + 3
    # one link only (written either way round): x2 leaves, x1 stays with ux
    one_link = capped.model_copy(update={"identity_unlink": ["user:ux|anon:x2"]})
    run_prepare(con, one_link, now=NOW)
    assert con.table("persons").count().execute() == 4 + 1 + 2
    links = con.table("identity_links").to_pandas().set_index("link_id")
    assert links.loc["anon:x2|user:ux", ["status", "reason"]].tolist() == ["cut", "unlinked"]
    assert links.loc["anon:x1|user:ux", "status"] == "linked"


def test_a_component_over_max_component_falls_back_to_its_identifiers(con, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A chain d0 - u0 - d1 - u1 - d2 - u2 - d3 (seven identifiers, diameter six) is one person
    under a roomy cap; over ``identity_max_component`` all its links are cut (reason
    ``max_component``) and each identifier is a person of its own. The pair x1 - ux stays."""
    chain = [("d0", "u0"), ("d1", "u0"), ("d1", "u1"), ("d2", "u1"), ("d2", "u2"), ("d3", "u2")]
    rows = [{"anonymous_id": d, "type": "identify", "user_id": u, "timestamp": "09:00"}
            for d, u in chain]
    rows.append({"anonymous_id": "x1", "type": "identify", "user_id": "ux", "timestamp": "09:00"})
    load(con, rows)
    roomy = Settings(database_url="duckdb://", temp_directory=tmp_path,
                     identity_max_component=10)
    run_prepare(con, roomy, now=NOW)
    assert con.table("persons").count().execute() == 2
    run_prepare(con, roomy.model_copy(update={"identity_max_component": 4}), now=NOW)
    assert con.table("persons").count().execute() == 7 + 1
    links = con.table("identity_links").to_pandas().set_index("link_id")
    cut = links.drop("anon:x1|user:ux")
    assert (len(cut), set(cut.status), set(cut.reason)) == (6, {"cut"}, {"max_component"})
    assert links.loc["anon:x1|user:ux", "status"] == "linked"


COMPANIES = [
    # acme is a CRM account: a listed contact, a group call with its id, an unlisted colleague
    {"anonymous_id": "a1", "type": "identify", "timestamp": "09:00", "email": "ann@acme.com"},
    {"anonymous_id": "d1", "type": "group", "group_id": "A1", "timestamp": "09:01"},
    {"anonymous_id": "e1", "type": "identify", "timestamp": "09:02", "email": "eve@acme.com"},
    # gamma is known only from group calls; a colleague writes from its domain
    {"anonymous_id": "g1", "type": "group", "group_id": "G7", "timestamp": "09:03"},
    {"anonymous_id": "g1", "type": "identify", "timestamp": "09:04", "email": "gus@gamma.io"},
    {"anonymous_id": "h1", "type": "identify", "timestamp": "09:05", "email": "hal@gamma.io"},
    # delta only by domain; bob writes from free mail
    {"anonymous_id": "i1", "type": "identify", "timestamp": "09:06", "email": "ivy@delta.org"},
    {"anonymous_id": "b1", "type": "identify", "timestamp": "09:07", "email": "bob@gmail.com"},
]
COMPANY_DEALS = [{"deal_id": "d1", "account_id": "A1", "account_name": "Acme",
                  "account_domain": "Acme.com", "contact_emails": "ann@acme.com",
                  "created_at": "2025-03-05 00:00:00"}]


def test_one_company_is_one_account_whatever_the_evidence(con, settings) -> None:  # type: ignore[no-untyped-def]
    """A CRM id, a group id and an e-mail domain of one company resolve to one account."""
    load(con, COMPANIES)
    engine.load_table(con, "deals", arrow_table(store.DEALS, COMPANY_DEALS))
    run_prepare(con, settings, now=NOW)
    accounts = con.table("accounts").to_pandas().sort_values("account_id")
    got = [(r.account_id, r.account_name, r.domain, r.account_source, r.person_count)
           for r in accounts.itertuples()]
    assert got == [
        ("crm:A1", "Acme", "acme.com", "crm", 3),
        ("domain:delta.org", "delta.org", "delta.org", "email_domain", 1),
        ("group:G7", "gamma.io", "gamma.io", "group", 2),  # named by its domain
    ]
    persons = con.table("persons").to_pandas()
    by_email = dict(zip(persons.email, persons.account_id, strict=True))
    assert by_email["bob@gmail.com"] is None or pd.isna(by_email["bob@gmail.com"])


@pytest.mark.duckdb_only(
    reason=CLI_OWN_CONNECTION)
def test_cli_prepare_prints_tables(tmp_path: Path) -> None:
    from touchline.cli import app

    url = f"duckdb:///{tmp_path / 'wh.duckdb'}"
    con = engine.connect(url, settings=Settings(database_url=url))
    con.create_table("events", arrow_table(store.EVENTS, event_rows(SCENARIO[:3])))
    con.disconnect()
    result = CliRunner().invoke(app, ["prepare", "--database", url])
    assert result.exit_code == 0, result.output
    assert "touchpoints" in result.output and "drop_bot_user_agents" in result.output


def test_a_retried_batch_is_deduplicated_before_it_can_look_like_a_burst(con, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Five page views, each delivered three times within one minute: fifteen rows, over a
    limit of ten hits a minute, but five touches and no bot. A script's twelve distinct hits
    in that minute are a bot."""
    rows = [{"message_id": f"m{i}", "anonymous_id": "a1", "timestamp": f"09:00:{10 * i:02d}",
             "url": f"https://shop.com/p{i}"} for i in range(5)]
    script = [{"message_id": f"s{i}", "anonymous_id": "s1", "timestamp": f"09:00:{4 * i:02d}",
               "url": f"https://shop.com/p{i}"} for i in range(12)]
    load(con, rows * 3 + script)
    settings = Settings(database_url="duckdb://", temp_directory=tmp_path, bot_hits_per_minute=10)
    told: list[tuple[int, int, str]] = []
    result = run_prepare(con, settings, now=NOW,
                         progress=lambda *step: told.append(step))  # type: ignore[arg-type]
    assert result.rejects_by_reason == {"duplicate_message_id": 10, "bot_behaviour": 12}
    assert result.counts["touchpoints"] == 5 and result.counts["sessions"] == 1
    # each step's counts come from the written rejects, under the step that dropped the rows
    by_step = {s.name: s.rejected for s in result.steps if s.rejected}
    assert by_step == {"dedupe_exact": 10, "drop_bot_bursts": 12}
    # the progress bar is told every step before it starts, then the writes
    n = len(STEPS)
    assert told == [*((i, n, s.name) for i, s in enumerate(STEPS)),
                    (n, n, "writing the prepared tables")]


def test_session_settings_change_a_full_run_on_both_engines(con, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """One device: 09:00 (spring campaign), 09:15, 09:40 (25 min gap), 09:45 (summer)."""
    spring = "https://shop.com/?utm_source=news&utm_medium=email&utm_campaign=spring"
    summer = "https://shop.com/?utm_source=news&utm_medium=email&utm_campaign=summer"
    load(con, [
        {"anonymous_id": "a1", "timestamp": "09:00", "url": spring, "utm_source": "news",
         "utm_medium": "email", "utm_campaign": "spring"},
        {"anonymous_id": "a1", "timestamp": "09:15", "url": "https://shop.com/a"},
        {"anonymous_id": "a1", "timestamp": "09:40", "url": "https://shop.com/b"},
        {"anonymous_id": "a1", "timestamp": "09:45", "url": summer, "utm_source": "news",
         "utm_medium": "email", "utm_campaign": "summer"},
    ])
    base = Settings(database_url="duckdb://", temp_directory=tmp_path)

    def sessions(**update: object) -> list[tuple[str, int, str]]:
        run_prepare(con, base.model_copy(update=update), now=NOW)
        frame = con.table("sessions").order_by("session_index").to_pandas()
        return [(r.session_id, r.event_count, r.campaign) for r in frame.itertuples()]

    # defaults: a 30-minute timeout, a campaign change does not split (GA4)
    assert sessions() == [("anon:a1#1", 4, "spring")]
    # a 20-minute timeout splits at the 25-minute gap; the new session has no campaign
    assert sessions(session_gap_minutes=20) == [("anon:a1#1", 2, "spring"),
                                                ("anon:a1#2", 2, None)]
    # Matomo's rule: the summer campaign opens a session of its own
    assert sessions(session_new_on_campaign=True) == [("anon:a1#1", 3, "spring"),
                                                      ("anon:a1#2", 1, "summer")]
    touches = con.table("touchpoints").order_by("occurred_at").to_pandas()
    assert touches.session_index.tolist() == [1, 1, 1, 2]


def test_crm_contact_ids_are_their_own_identifiers_and_link_deals_to_people(con, settings) -> None:  # type: ignore[no-untyped-def]
    """CRM contact 123 is not the site's user 123; the contact meets its caller by phone, and
    a deal listing the contact id gives that person the deal's account."""
    load(con, [
        {"anonymous_id": "a1", "type": "identify", "user_id": "123", "timestamp": "09:00"},
        # a CRM record known only by its contact id and a phone: not rejected as id-less
        {"type": "track", "event": "Lead Created", "source": "crm", "contact_id": "123",
         "phone": "+1 202-555-0143", "timestamp": "10:00"},
        {"type": "track", "event": "Lead Qualified", "source": "crm", "contact_id": "123",
         "timestamp": "10:05"},
        {"anonymous_id": "b1", "type": "track", "event": "Call", "source": "calls",
         "phone": "+12025550143", "timestamp": "10:30"},
    ])
    engine.load_table(con, "deals", arrow_table(store.DEALS, [
        {"deal_id": "d1", "account_id": "B7", "account_name": "Bobco", "contact_ids": " 123 ",
         "created_at": "2025-03-05 00:00:00"}]))
    result = run_prepare(con, settings, now=NOW)
    assert result.rejects_by_reason == {}
    ident = con.table("identities").to_pandas()
    persons = sorted(ident.groupby("person_id").identifier.apply(sorted).tolist())
    assert persons == [["anon:a1", "user:123"], ["anon:b1", "contact:123", "phone:+12025550143"]]
    assert set(ident.kind) == {"anon", "user", "contact", "phone"}
    links = con.table("identity_links").to_pandas().set_index("link_id")
    assert links.loc["contact:123|phone:+12025550143", "evidence"] == "crm_match"
    sessions = con.table("sessions").to_pandas()
    assert sorted(sessions.device_id) == ["anon:a1", "anon:b1", "contact:123"]
    contact = ident[ident.identifier == "contact:123"].person_id.iloc[0]
    accounts = con.table("persons").to_pandas().set_index("person_id").account_id.to_dict()
    assert accounts[contact] == "crm:B7"
    assert con.table("touchpoints").filter(lambda t: t.contact_id == "123").count().execute() == 2


def test_a_warehouse_from_before_a_new_column_gains_it(con) -> None:  # type: ignore[no-untyped-def]
    old = store.EVENTS.schema
    old = ibis.schema({n: t for n, t in old.items() if n != "contact_id"})
    con.create_table("events", schema=old, overwrite=True)
    store.init(con)
    assert "contact_id" in con.table("events").columns
    load_rows = arrow_table(store.EVENTS, event_rows([{"anonymous_id": "a", "timestamp": "09:00",
                                                       "contact_id": "c1"}]))
    engine.append(con, "events", load_rows)
    assert con.table("events").contact_id.to_pandas().tolist() == ["c1"]


def test_a_backfill_that_renumbers_sessions_reports_no_channel_change(con, settings) -> None:  # type: ignore[no-untyped-def]
    later = {"anonymous_id": "d1", "timestamp": "2025-03-04 10:00:00",
             "referrer": "https://l.facebook.com/x", "url": "https://shop.com/"}
    earlier = {"anonymous_id": "d1", "timestamp": "2025-03-03 10:00:00",
               "referrer": "https://www.google.com/", "url": "https://shop.com/"}
    load(con, [later])
    run_prepare(con, settings, now=NOW)
    load(con, [later, earlier])  # the older visit arrives late: d1#1 is now the google one
    result = run_prepare(con, settings, now=NOW)
    sessions = con.table("sessions").to_pandas().set_index("session_id").channel.to_dict()
    assert sessions == {"anon:d1#1": "Organic Search", "anon:d1#2": "Organic Social"}
    assert result.channel_changes == {}


def test_a_deals_table_from_before_contact_ids_still_gives_accounts(con, settings) -> None:  # type: ignore[no-untyped-def]
    load(con, COMPANIES)
    older = ibis.schema({n: t for n, t in store.DEALS.schema.items() if n != "contact_ids"})
    rows = arrow_table(store.DEALS, COMPANY_DEALS).drop_columns(["contact_ids"])
    con.create_table("deals", rows, schema=older, overwrite=True)
    run_prepare(con, settings, now=NOW)
    accounts = con.table("accounts").to_pandas().set_index("account_id").person_count.to_dict()
    assert accounts == {"crm:A1": 3, "domain:delta.org": 1, "group:G7": 2}


CALLS_WITH_CAMPAIGNS = """call_id,caller_number,tracking_number,started_at,duration_seconds,\
answered,utm_source,utm_medium,utm_campaign,landing_page_url
k1,+12025550143,+15550100001,2025-03-09T10:00:00Z,90,true,google,cpc,Plumbing,
k2,+12025550199,+15550100001,2025-03-09T11:00:00Z,90,true,,,,\
https://shop.test/boilers?utm_source=google&utm_medium=cpc&utm_campaign=Spring%20Sale
k3,+12025550177,+15550100001,2025-03-09T12:00:00Z,90,true,,,,
"""


def test_a_call_whose_properties_carry_utms_is_a_paid_search_touch(con, settings, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """No number lease explains these calls, but the call-tracking export (k1, k2) and the
    telephony integration's track event (e1) name the campaign in their properties: as UTM
    keys, or in the landing page's URL. Before, the touches were Direct (or Phone)."""
    from touchline.collect.dni import match_new_calls
    from touchline.collect.ingest import ingest_file

    store.init(con)
    engine.append(con, "events", arrow_table(store.EVENTS, event_rows([
        {"message_id": "e1", "type": "track", "event": "Phone Call", "source": "calls",
         "anonymous_id": "v1", "timestamp": "09:00",
         "properties": '{"call_id": "e1", "duration_seconds": 75, "utm_source": "Google", '
                       '"utm_medium": "cpc", "utm_campaign": "Boilers", '
                       '"utm_term": "boiler repair"}'},
    ])))
    calls = tmp_path / "calls.csv"
    calls.write_text(CALLS_WITH_CAMPAIGNS)
    ingest_file(con, calls, "calls", settings=settings)
    assert match_new_calls(con, settings) == {"unmatched": 3, "pool_exhausted": 0}
    run_prepare(con, settings, now=NOW)
    got = (con.table("touchpoints")
           .select("touchpoint_id", "channel", "source", "medium", "campaign", "term")
           .order_by("touchpoint_id").to_pyarrow().to_pylist())
    assert [tuple(r.values()) for r in got] == [
        ("call:k1", "Paid Search", "google", "cpc", "plumbing", None),
        ("call:k2", "Paid Search", "google", "cpc", "spring sale", None),
        ("call:k3", "Phone", "(direct)", "(none)", None, None),  # nothing names a campaign
        ("e1", "Paid Search", "google", "cpc", "boilers", "boiler repair"),
    ]


def test_reserved_and_free_mail_domains_make_no_account(con, settings) -> None:  # type: ignore[no-untyped-def]
    """Documentation and test domains (RFC 2606 and 6761: example.com/.net/.org and their
    subdomains, *.example, *.test, *.invalid, *.localhost) and free-mail providers name no
    company. Before, example.com, shop.test … each became a ``domain:`` account."""
    emails = ["ann@example.com", "bo@mail.example.net", "cy@example.org", "di@acme.example",
              "ed@shop.test", "fe@host.invalid", "gil@dev.localhost", "hu@yahoo.co.uk",
              "io@proton.me", "jo@acme-corp.com", "ky@notexample.com"]
    load(con, [{"anonymous_id": f"v{i}", "type": "identify", "timestamp": f"09:{i:02d}",
                "email": email} for i, email in enumerate(emails)])
    run_prepare(con, settings, now=NOW)
    accounts = con.table("accounts").order_by("account_id").account_id.to_pyarrow().to_pylist()
    assert accounts == ["domain:acme-corp.com", "domain:notexample.com"]
    persons = con.table("persons").to_pandas()
    with_account = sorted(persons[persons.account_id.notna()].email)
    assert with_account == ["jo@acme-corp.com", "ky@notexample.com"]
