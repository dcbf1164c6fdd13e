"""CRM lead enrichment: John's lead record (hand-computed from the brief's journey), its
mappings, files, and delivery to a real HTTP server on 127.0.0.1 that checks each request's
signature: once, after retries, to the dead letters, again only visibly after a crash."""

from __future__ import annotations

import hashlib
import hmac
import json
import shutil
import threading
from collections.abc import Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa
import pytest
from factories import CLI_OWN_CONNECTION, john_run_file
from ibis.backends import BaseBackend

from touchline import engine, store
from touchline.config import Settings
from touchline.errors import ConfigError
from touchline.exports.crm import RECORD_FIELDS, lead_records
from touchline.exports.crm_mapping import load_mapping
from touchline.exports.crm_push import PushResult, follow, idempotency_key, push_leads

SECRET = "whsec-test-0123"
ONE_MODEL = {"attribution_models": ["linear"], "default_model": "linear"}
#: tables a lead record reads, copied from John's run to the engine under test
READ = ("journeys", "journey_steps", "sessions", "touches", "events", "identities", "persons",
        "accounts", "stages", "credits")


def _settings(tmp_path: Path, url: str = "duckdb://", **more: Any) -> Settings:
    return Settings(database_url=url, temp_directory=tmp_path, **ONE_MODEL, **more)


@pytest.fixture(scope="module")
def john_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """John's run (tests/factories.py) in a DuckDB file; each test pushes from its own copy."""
    tmp_path = tmp_path_factory.mktemp("john")
    path = tmp_path / "john.duckdb"
    john_run_file(path, _settings(tmp_path))
    return path


@pytest.fixture
def john_url(john_file: Path, tmp_path: Path) -> str:
    copy = tmp_path / "john.duckdb"
    shutil.copy(john_file, copy)
    return f"duckdb:///{copy}"


def _person_id(con: BaseBackend) -> str:
    """John's person id (``p_`` + md5 of his least identifier): the one person of the run."""
    ids = con.table("persons").person_id.to_pyarrow().to_pylist()
    assert len(ids) == 1
    return str(ids[0])


def _john(person: str) -> dict[str, Any]:
    """John's lead, by hand: organic search on his laptop (day 1, 09:00, from www.google.com),
    then a Google Ads click on "emergency plumber" (day 5, 20:00, gclid abc) and the chat with
    his e-mail three minutes later: the lead. Two touches, two channels, one device; 4 days
    11 h 3 min = 4.4604166 days; lifecycle stage at the lead: decision (entered at the chat),
    now retention (his deal was won); linear credit: half each."""
    return {
        "lead_id": "lead:m3", "journey_id": f"lead:{person}:1", "conversion": "lead",
        "lead_at": datetime(2026, 3, 5, 20, 3), "person_id": person, "account_id": None,
        "contact_id": None, "email": "john@gmail.com", "phone": "+12025550143", "company": None,
        "company_domain": None,
        "first_touch_at": datetime(2026, 3, 1, 9), "first_channel": "Organic Search",
        "first_source": "google", "first_medium": "organic", "first_campaign": None,
        "first_keyword": None, "first_content": None,
        "first_landing_page": "https://plumb.example", "first_referrer": "www.google.com",
        "first_click_id": None, "first_click_id_param": None,
        "last_touch_at": datetime(2026, 3, 5, 20), "last_channel": "Paid Search",
        "last_source": "google", "last_medium": "cpc", "last_campaign": "spring",
        "last_keyword": "emergency plumber", "last_content": None,
        "last_landing_page": "https://plumb.example/emergency", "last_referrer": None,
        "last_click_id": "abc", "last_click_id_param": "gclid",
        "touch_count": 2, "channel_count": 2, "channels_seen": "Organic Search; Paid Search",
        "device_count": 1, "days_to_lead": pytest.approx((4 * 1440 + 11 * 60 + 3) / 1440),
        "lead_event": "Chat Started", "lead_recorded_by": "chat", "device_id": "anon:laptop",
        "device_type": None, "stage_at_lead": "decision", "stage": "retention",
        "credit_model": "linear", "top_channel": "Organic Search", "top_channel_credit": 0.5,
        "credit_organic_search": 0.5, "credit_paid_search": 0.5,
    }


def test_lead_records_read_the_stored_tables_alike(con: BaseBackend, john_file: Path,
                                                   tmp_path: Path) -> None:
    duck = engine.connect(f"duckdb:///{john_file}")
    tables = {name: duck.table(name).to_pyarrow() for name in READ}
    duck.disconnect()
    # his chat carried custom fields: a mapping may ask for them (properties.<key>)
    events = tables["events"]
    chat = [{"plan": "pro", "seats": 5} if m == "m3" else None
            for m in events.column("message_id").to_pylist()]
    tables["events"] = events.set_column(
        events.schema.get_field_index("properties"), "properties",
        [[json.dumps(p) if p else None for p in chat]])
    # the CRM knows him as contacts M-7 and M-9 (a form's contact_id, a deal's contact_ids):
    # the record carries the least, so the file matches back to the CRM
    person = tables["persons"].column("person_id")[0].as_py()
    ids = tables["identities"].to_pylist()
    ids += [{**ids[0], "identifier": f"contact:{c}", "kind": "contact", "person_id": person}
            for c in ("M-9", "M-7")]
    tables["identities"] = pa.Table.from_pylist(ids, schema=tables["identities"].schema)
    for name, table in tables.items():
        engine.load_table(con, name, table)
    records = lead_records(con, model="linear", stage_model="lifecycle",
                           properties=["plan", "seats", "colour"]).to_pyarrow()
    custom = ["properties.plan", "properties.seats", "properties.colour"]
    assert records.column_names == [*RECORD_FIELDS, "credit_organic_search",
                                    "credit_paid_search", *custom]
    assert records.to_pylist() == [{**_john(person), "contact_id": "M-7",
                                    **dict(zip(custom, ["pro", "5", None], strict=True))}]
    # his call and won deal are no leads; a lead before --since is left out
    assert lead_records(con, model="linear", stage_model="lifecycle",
                        since=datetime(2026, 3, 6)).count().to_pyarrow().as_py() == 0


# ---- a CRM receiver on 127.0.0.1 ----------------------------------------------------------
class _Receiver(BaseHTTPRequestHandler):
    """Verifies each request's signature with the shared secret (independently of touchline's
    code), records it, answers with the next queued status (then 200)."""

    answers: ClassVar[list[int]] = []
    requests: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers["Content-Length"]))
        parts = dict(p.split("=", 1) for p in self.headers["X-Touchline-Signature"].split(","))
        expected = hmac.new(SECRET.encode(), parts["t"].encode() + b"." + raw,
                            hashlib.sha256).hexdigest()
        self.requests.append({
            "body": json.loads(raw), "signed": hmac.compare_digest(expected, parts["v1"]),
            "timestamp": self.headers["X-Touchline-Timestamp"], "signed_at": parts["t"],
            "key": self.headers["Idempotency-Key"],
            "resent": self.headers.get("X-Touchline-Resent")})
        status = self.answers.pop(0) if self.answers else 200
        self.send_response(status)
        self.end_headers()
        self.wfile.write(b'{"id": "c-1"}' if status < 300 else b'{"error": "busy"}')

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[tuple[str, type[_Receiver]]]:
    handler = type("Receiver", (_Receiver,), {"answers": [], "requests": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/hooks/leads?token=t0k3n", handler
    server.shutdown()
    server.server_close()
    thread.join()


def _push_settings(tmp_path: Path, db: str, url: str, **more: Any) -> Settings:
    return _settings(tmp_path, db, crm_webhook_url=url, crm_webhook_secret=SECRET,
                     crm_retry_base_seconds=0.001, crm_retry_max_seconds=0.01, **more)


def _table(con: BaseBackend, name: str) -> list[dict[str, Any]]:
    return list(con.table(name).to_pyarrow().to_pylist())


NETWORK = ("a push is HTTP calls after the records are chosen; the records' table logic runs "
           "on both engines in test_lead_records_read_the_stored_tables_alike")


@pytest.mark.duckdb_only(reason=NETWORK)
def test_john_gives_one_signed_lead_payload_and_a_rerun_sends_nothing(
        john_url: str, tmp_path: Path, receiver: tuple[str, type[_Receiver]]) -> None:
    url, handler = receiver
    settings = _push_settings(tmp_path, john_url, url)
    con = engine.connect(settings=settings)
    first = push_leads(con, settings)
    assert (first.pending, first.delivered, first.dead_letters) == (1, 1, 0)
    assert len(handler.requests) == 1
    sent = handler.requests[0]
    assert sent["signed"] and sent["timestamp"] == sent["signed_at"]
    assert sent["key"] == idempotency_key("lead:m3") == sent["body"]["idempotency_key"]
    expected = {k: v.isoformat() + "Z" if isinstance(v, datetime) else v
                for k, v in _john(_person_id(con)).items() if v is not None}
    assert sent["body"] == {"lead_id": "lead:m3", "idempotency_key": sent["key"],
                            "mapping": "touchline/v1", "object": "lead",
                            "properties": expected}

    again = push_leads(con, settings)
    assert (again.pending, again.delivered) == (0, 0)
    assert len(handler.requests) == 1
    delivered = _table(con, "crm_deliveries")
    assert [(d["lead_id"], d["attempts"], d["status"], d["resent"]) for d in delivered] == [
        ("lead:m3", 1, 200, False)]
    # the URL's token is not kept; the audit log lists the push (not the empty re-run)
    assert delivered[0]["destination"] == url.split("?")[0]
    log = _table(con, "exports")
    assert [(e["destination"], e["format"], e["conversion_count"]) for e in log] == [
        ("crm", "touchline/v1", 1)]
    con.disconnect()


@pytest.mark.duckdb_only(reason=NETWORK)
def test_a_lead_of_a_person_who_refused_consent_is_withheld(
        john_url: str, tmp_path: Path, receiver: tuple[str, type[_Receiver]]) -> None:
    """No consent, no upload: John's phone said no after his laptop said yes."""
    url, handler = receiver
    settings = _push_settings(tmp_path, john_url, url)
    con = engine.connect(settings=settings)
    con.raw_sql("UPDATE events SET consent = CASE anonymous_id WHEN 'laptop' THEN 'granted' "
                "WHEN 'phone' THEN 'cookieless' END")
    result = push_leads(con, settings, out=tmp_path / "leads.csv")
    assert (result.withheld, result.written, result.pending, result.delivered) == (1, 0, 0, 0)
    assert handler.requests == []
    con.raw_sql("UPDATE events SET consent = 'granted' WHERE anonymous_id = 'phone'")
    result = push_leads(con, settings)
    assert (result.withheld, result.pending, result.delivered) == (0, 1, 1)
    con.disconnect()


@pytest.mark.duckdb_only(reason=NETWORK)
def test_a_server_failing_twice_gets_one_delivery_after_retries(
        john_url: str, tmp_path: Path, receiver: tuple[str, type[_Receiver]]) -> None:
    url, handler = receiver
    handler.answers.extend([500, 503])
    settings = _push_settings(tmp_path, john_url, url)
    con = engine.connect(settings=settings)
    result = push_leads(con, settings, mapping=load_mapping("hubspot"))
    assert (result.delivered, result.dead_letters) == (1, 0)
    assert [r["key"] for r in handler.requests] == [idempotency_key("lead:m3")] * 3
    assert all(r["signed"] for r in handler.requests)
    assert [(d["attempts"], d["status"], d["mapping"]) for d in _table(con, "crm_deliveries")
            ] == [(3, 200, "hubspot/v2")]
    assert _table(con, "crm_dead_letters") == []
    con.disconnect()


@pytest.mark.duckdb_only(reason=NETWORK)
def test_an_always_failing_server_puts_the_lead_in_the_dead_letters(
        john_url: str, tmp_path: Path, receiver: tuple[str, type[_Receiver]]) -> None:
    url, handler = receiver
    handler.answers.extend([500] * 3)
    settings = _push_settings(tmp_path, john_url, url, crm_retry_attempts=3)
    con = engine.connect(settings=settings)
    result = push_leads(con, settings)
    assert (result.delivered, result.dead_letters) == (0, 1)
    assert len(handler.requests) == 3
    dead = _table(con, "crm_dead_letters")
    assert [(d["lead_id"], d["attempts"], d["last_status"], d["last_error"]) for d in dead] == [
        ("lead:m3", 3, 500, '{"error": "busy"}')]
    assert _table(con, "crm_deliveries") == []
    # a later push leaves it alone; --retry-dead-letters sends it
    assert push_leads(con, settings).pending == 0
    assert len(handler.requests) == 3
    retried = push_leads(con, settings, retry_dead_letters=True)
    assert (retried.delivered, len(handler.requests)) == (1, 4)
    con.disconnect()


@pytest.mark.duckdb_only(reason=NETWORK)
def test_a_client_error_is_not_retried(john_url: str, tmp_path: Path,
                                       receiver: tuple[str, type[_Receiver]]) -> None:
    url, handler = receiver
    handler.answers.append(400)
    settings = _push_settings(tmp_path, john_url, url)
    con = engine.connect(settings=settings)
    assert push_leads(con, settings).dead_letters == 1
    assert len(handler.requests) == 1
    con.disconnect()


@pytest.mark.duckdb_only(reason=NETWORK)
def test_a_push_stopped_between_send_and_record_resends_with_the_same_key(
        john_url: str, tmp_path: Path, receiver: tuple[str, type[_Receiver]]) -> None:
    """The outbox row of a push that never recorded an outcome (the process died after the
    POST): the next push sends the lead again, visibly, under the same idempotency key."""
    url, handler = receiver
    settings = _push_settings(tmp_path, john_url, url)
    con = engine.connect(settings=settings)
    push_leads(con, settings, out=tmp_path / "warm-up.csv")  # creates the CRM tables
    handler.requests.clear()
    con.table("crm_deliveries")  # exists
    con.raw_sql("DELETE FROM crm_deliveries")
    engine.append(con, "crm_outbox", pa.Table.from_pylist([{
        "lead_id": "lead:m3", "idempotency_key": idempotency_key("lead:m3"),
        "push_id": "crm_crashed", "mapping": "touchline/v1", "destination": url.split("?")[0],
        "queued_at": datetime(2026, 3, 6)}], schema=store.CRM_OUTBOX.schema.to_pyarrow()))
    result = push_leads(con, settings)
    assert (result.delivered, result.resent) == (1, 1)
    assert [(r["key"], r["resent"]) for r in handler.requests] == [
        (idempotency_key("lead:m3"), "true")]
    assert [d["resent"] for d in _table(con, "crm_deliveries")] == [True]
    con.disconnect()


# ---- mappings and files ---------------------------------------------------------------------
@pytest.fixture
def john_record(john_file: Path) -> dict[str, Any]:
    con = engine.connect(f"duckdb:///{john_file}")
    records = lead_records(con, model="linear", stage_model="lifecycle").to_pyarrow().to_pylist()
    con.disconnect()
    return dict(records[0])


@pytest.mark.duckdb_only(reason="a mapping is Python over one record; the record's table "
                         "logic runs on both engines in "
                         "test_lead_records_read_the_stored_tables_alike")
def test_hubspot_and_salesforce_mappings_name_their_properties(
        john_record: dict[str, Any]) -> None:
    hubspot = load_mapping("hubspot").properties(john_record)
    assert {k: hubspot[k] for k in (
        "email", "hs_analytics_source", "hs_analytics_source_data_1",
        "hs_analytics_first_url", "hs_analytics_first_referrer", "hs_analytics_first_timestamp",
        "hs_latest_source", "hs_latest_source_data_2", "hs_analytics_num_visits",
        "touchline_last_click_id", "touchline_credit_paid_search")} == {
        "email": "john@gmail.com", "hs_analytics_source": "ORGANIC_SEARCH",
        "hs_analytics_source_data_1": "google", "hs_analytics_first_url": "https://plumb.example",
        "hs_analytics_first_referrer": "www.google.com",
        "hs_analytics_first_timestamp": "2026-03-01T09:00:00Z",
        "hs_latest_source": "PAID_SEARCH", "hs_latest_source_data_2": "emergency plumber",
        "hs_analytics_num_visits": 2.0, "touchline_last_click_id": "abc",
        "touchline_credit_paid_search": 0.5}
    # a null field is left out: the CRM keeps what it has
    assert "hs_analytics_source_data_2" not in hubspot
    # his CRM contact id as the Record ID; a credit property for every channel of the leads
    # (the reviewer's Puffy leads had 8 channels and columns for 2)
    every = {**john_record, "contact_id": "M-7", "credit_email": 0.0, "credit_direct": 0.25}
    mapped = load_mapping("hubspot").properties(every)
    assert mapped["hs_object_id"] == "M-7"
    assert {k: v for k, v in mapped.items() if k.startswith("touchline_credit_")
            and k != "touchline_credit_model"} == {
        "touchline_credit_direct": 0.25, "touchline_credit_email": 0.0,
        "touchline_credit_organic_search": 0.5, "touchline_credit_paid_search": 0.5}
    assert load_mapping("hubspot").columns([every])[-4:] == [
        "touchline_credit_direct", "touchline_credit_email", "touchline_credit_organic_search",
        "touchline_credit_paid_search"]
    salesforce = load_mapping("salesforce").properties(john_record)
    assert {k: salesforce[k] for k in ("Email", "LeadSource", "Touchline_Last_Keyword__c",
                                       "Touchline_Touch_Count__c", "Touchline_Lead_Id__c")} == {
        "Email": "john@gmail.com", "LeadSource": "Web",
        "Touchline_Last_Keyword__c": "emergency plumber", "Touchline_Touch_Count__c": 2,
        "Touchline_Lead_Id__c": "lead:m3"}
    assert all(k.endswith("__c") for k in salesforce if k not in ("Email", "Phone",
                                                                     "LeadSource"))
    # salesforce/v2: the CRM's id in Id when it is a Lead's record id (15 or 18 characters,
    # 00Q...), which an upsert on Id updates; any other id would fail the row there, so only
    # Touchline_Contact_Id__c has it
    assert "Id" not in salesforce and "Touchline_Contact_Id__c" not in salesforce  # none
    sf = load_mapping("salesforce")
    assert sf.versioned == "salesforce/v2" and sf.object == "Lead"
    for contact_id, lead_id in (("00Q5e00000AbCdEFGH", "00Q5e00000AbCdEFGH"),
                                ("00Q5e00000AbCdE", "00Q5e00000AbCdE"),
                                ("0035e00000AbCdEFGH", None),  # a Contact's: not a Lead's Id
                                ("00Q5e00000AbCdEF", None),  # 16 characters
                                ("M-7", None)):
        got = sf.properties({**john_record, "contact_id": contact_id})
        assert (got.get("Id"), got["Touchline_Contact_Id__c"]) == (lead_id, contact_id)
    assert sf.columns([john_record])[:3] == ["Id", "Touchline_Contact_Id__c", "Email"]


@pytest.mark.duckdb_only(reason="mapping files are read in Python; no table is involved")
def test_a_mapping_file_extends_replaces_and_drops_fields(tmp_path: Path,
                                                          john_record: dict[str, Any]) -> None:
    toml = tmp_path / "acme.toml"
    toml.write_text('extends = "salesforce"\nname = "acme"\n'
                    '[fields.LeadSource]\nfrom = "last_channel"\ntype = "enumeration"\n'
                    'default = "Other"\nvalues = {"Paid Search" = "Advertisement"}\n'
                    '[fields.Phone]\ndrop = true\n'
                    '[fields.Touchline_Keyword__c]\nfrom = "last_keyword"\nmax_length = 9\n'
                    '[fields.Region__c]\nconstant = "EMEA"\n')
    mapping = load_mapping(str(toml))
    got = mapping.properties(john_record)
    assert (mapping.versioned, got["LeadSource"], got["Touchline_Keyword__c"],
            got["Region__c"], "Phone" in got) == ("acme/v2", "Advertisement", "emergency",
                                                  "EMEA", False)  # the version it extends
    assert mapping.property_keys == ()
    as_json = tmp_path / "mine.json"
    as_json.write_text(json.dumps({"object": "contacts", "fields": {
        "lead_source_channel": {"from": "first_channel"}, "score": "touch_count",
        "plan": {"from": "properties.plan"}}}))
    mine = load_mapping(str(as_json))
    assert mine.property_keys == ("plan",)
    assert mine.properties({**john_record, "properties.plan": "pro"}) == {
        "lead_source_channel": "Organic Search", "score": "2", "plan": "pro"}


@pytest.mark.duckdb_only(reason="mapping files are read in Python; no table is involved")
@pytest.mark.parametrize(("text", "message"), [
    ('[fields.x]\nfrom = "firts_channel"\n',
     "fields.x: from 'firts_channel' (did you mean 'first_channel'?) is not a lead record "
     "field"),
    ('[fields.x]\nfrom = "first_channel"\ntype = "strng"\n',
     "fields.x: type 'strng' (did you mean 'string'?)"),
    ('[fields.x]\nform = "first_channel"\n', "fields.x: unknown key 'form' (did you mean "
     "'from'?)"),
    ('extends = "hubspt"\n', "extends 'hubspt' (did you mean 'hubspot'?)"),
    ('[fields.x]\nfrom = "first_channel"\n[fields.x.values]\nA = "B"\n',
     "fields.x: values apply to type enumeration, not string"),
    ("fields = [", "is not valid TOML"),
    ('[fields.Id]\nfrom = "contact_id"\npattern = "00Q("\n',
     "fields.Id: pattern '00Q(' is not a regular expression"),
])
def test_a_bad_mapping_file_names_the_file_and_the_field(tmp_path: Path, text: str,
                                                         message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as raised:
        load_mapping(str(path))
    assert str(path) in str(raised.value) and message in str(raised.value)


@pytest.mark.duckdb_only(reason="mapping files are read in Python; no table is involved")
def test_an_unknown_mapping_name_lists_the_shipped_ones() -> None:
    with pytest.raises(ConfigError, match=r"'salesfroce' .did you mean 'salesforce'.*touchline, "
                       "hubspot, salesforce"):
        load_mapping("salesfroce")


@pytest.mark.duckdb_only(reason="writing a file after the records are chosen; the records' "
                         "table logic runs on both engines")
def test_leads_go_to_csv_and_ndjson_files_without_a_webhook(john_url: str,
                                                            tmp_path: Path) -> None:
    settings = _settings(tmp_path, john_url)
    con = engine.connect(settings=settings)
    csv = push_leads(con, settings, mapping=load_mapping("hubspot"), out=tmp_path / "l.csv")
    assert (csv.written, csv.pending, csv.destination) == (1, 0, None)
    header, row = (tmp_path / "l.csv").read_text().splitlines()
    assert header.startswith('"email","phone","hs_object_id","hs_analytics_source",')
    # a cell starting with + gets a ' as in every touchline CSV (formula-injection guard)
    assert row.startswith('"john@gmail.com","\'+12025550143","","ORGANIC_SEARCH","google",')
    push_leads(con, settings, out=tmp_path / "l.ndjson")
    lines = (tmp_path / "l.ndjson").read_text().splitlines()
    assert [json.loads(line)["last_keyword"] for line in lines] == ["emergency plumber"]
    with pytest.raises(ConfigError, match="nothing to push to"):
        push_leads(con, settings)
    with pytest.raises(ConfigError, match=r"--out .*l\.xlsx: the file must end in .csv"):
        push_leads(con, settings, out=tmp_path / "l.xlsx")
    con.disconnect()


@pytest.mark.duckdb_only(reason=NETWORK)
def test_follow_pushes_each_round_and_stops(john_url: str, tmp_path: Path,
                                            receiver: tuple[str, type[_Receiver]]) -> None:
    url, handler = receiver
    settings = _push_settings(tmp_path, john_url, url, crm_follow_interval_seconds=0.01)
    seen: list[PushResult] = []
    rounds = follow(settings, stop=threading.Event(), max_iterations=3, on_push=seen.append)
    assert rounds == 3
    assert [r.delivered for r in seen] == [1, 0, 0]
    assert len(handler.requests) == 1
    stop = threading.Event()
    stop.set()
    assert follow(settings, stop=stop) == 0


@pytest.mark.duckdb_only(reason=CLI_OWN_CONNECTION)
def test_cli_push_crm_writes_a_file_and_names_bad_choices(john_url: str, tmp_path: Path,
                                                          receiver: tuple[str, type[_Receiver]],
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    from typer.testing import CliRunner

    from touchline.cli import app

    runner = CliRunner()
    out = tmp_path / "leads.csv"
    done = runner.invoke(app, ["push", "crm", "--mapping", "salesforce", "--out", str(out),
                               "--database", john_url])
    assert done.exit_code == 0, done.output
    assert "1 new or changed leads (salesforce/v2) written to" in done.output
    assert out.read_text().splitlines()[0].startswith(
        '"Id","Touchline_Contact_Id__c","Email","Phone","LeadSource",')
    # the audit lists the push with its count and its file (on a console wide enough for the
    # file's whole path: the width its console took when it was made holds, whatever COLUMNS
    # says now)
    from touchline.cli import exports as exports_cli

    monkeypatch.setattr(exports_cli.console, "_width", 300)
    audited = runner.invoke(app, ["audit", "exports", "--destination", "crm", "--database",
                                  john_url])
    assert audited.exit_code == 0, audited.output
    assert "salesforce/v2" in audited.output and "leads.csv" in audited.output
    wrong = runner.invoke(app, ["push", "crm", "--mapping", "hubspt", "--out", str(out),
                                "--database", john_url])
    assert wrong.exit_code == 2 and "did you mean 'hubspot'" in wrong.output
    url, handler = receiver
    monkeypatch.setenv("TOUCHLINE_CRM_WEBHOOK_URL", url)
    monkeypatch.setenv("TOUCHLINE_CRM_WEBHOOK_SECRET", SECRET)
    monkeypatch.setenv("TOUCHLINE_CRM_FOLLOW_INTERVAL_SECONDS", "0.01")
    followed = runner.invoke(app, ["push", "crm", "--follow", "--max-iterations", "2",
                                   "--database", john_url])
    assert followed.exit_code == 0, followed.output
    assert "1 new leads, 1 delivered" in followed.output
    assert "stopped after 2 pushes" in followed.output
    assert len(handler.requests) == 1 and handler.requests[0]["signed"]


DOCS = Path(__file__).resolve().parents[2] / "docs" / "exports.md"


def _docs_section() -> str:
    text = DOCS.read_text()
    return text[text.index("## Leads to the CRM"):]


@pytest.mark.duckdb_only(reason="the docs' examples are Python and TOML; no table is involved")
def test_the_docs_receiver_accepts_a_signed_lead_and_refuses_a_changed_one(
        tmp_path: Path) -> None:
    import re
    import time

    from touchline.signing import sign

    (code,) = re.findall(r"```python\n(.*?)```", _docs_section(), re.S)
    namespace: dict[str, Any] = {}
    exec(compile(code, str(DOCS), "exec"), namespace)
    check = namespace["is_from_touchline"]
    body = b'{"lead_id": "lead:m3"}'
    signature = sign(SECRET.encode(), body, int(time.time()))
    assert check(SECRET.encode(), body, signature) is True
    assert check(SECRET.encode(), body + b" ", signature) is False
    assert check(SECRET.encode(), body, sign(SECRET.encode(), body, 1_000)) is False
    # the mapping file the docs show loads
    mapping_block = next(b for b in re.findall(r"```toml\n(.*?)```", _docs_section(), re.S)
                         if "a mapping file" in b.splitlines()[0])
    path = tmp_path / "my-fields.toml"
    path.write_text(mapping_block)
    mine = load_mapping(str(path))
    names = [f.name for f in mine.fields]
    assert "touchline_landing_page" in names and "hs_analytics_source" not in names
    # its pattern keeps only an id it wholly matches
    assert [mine.properties({"contact_id": c}).get("touchline_crm_id") for c in (
        "123", "M-7", "123a")] == ["123", None, None]


@pytest.mark.duckdb_only(reason="settings checked before any table is read")
def test_a_push_names_the_setting_it_lacks(john_url: str, tmp_path: Path) -> None:
    unsigned = _settings(tmp_path, john_url, crm_webhook_url="https://relay.example/leads")
    con = engine.connect(settings=unsigned)
    with pytest.raises(ConfigError, match="crm_webhook_secret is not: every lead POST is "
                       "signed; set TOUCHLINE_CRM_WEBHOOK_SECRET"):
        push_leads(con, unsigned)
    typo = _settings(tmp_path, john_url, crm_lead_conversions=["laed"])
    with pytest.raises(ConfigError, match=r"crm_lead_conversions names 'laed' .did you mean "
                       "'lead'.., not a conversion type"):
        push_leads(con, typo, out=tmp_path / "x.csv")
    con.disconnect()
    with pytest.raises(ValueError, match="crm_webhook_url 'ftp://relay' must start with"):
        _settings(tmp_path, crm_webhook_url="ftp://relay")


def test_a_file_push_writes_only_new_or_changed_leads_and_logs_count_and_path(
        con: BaseBackend, john_file: Path, tmp_path: Path) -> None:
    """`push crm --out` twice wrote every lead twice and logged "sent 0" with no file: now the
    second file has no lead, a changed record (his CRM contact id learnt) is written again, and
    each push's audit row says how many and where, with no e-mail in the log."""
    duck = engine.connect(f"duckdb:///{john_file}")
    tables = {name: duck.table(name).to_pyarrow() for name in READ}
    duck.disconnect()
    for name, table in tables.items():
        engine.load_table(con, name, table)
    settings = _settings(tmp_path)
    hubspot = load_mapping("hubspot")

    def push(name: str) -> tuple[PushResult, list[str]]:
        result = push_leads(con, settings, mapping=hubspot, out=tmp_path / name)
        return result, (tmp_path / name).read_text().splitlines()

    first, lines = push("a.csv")
    assert (first.written, first.rewritten, len(lines)) == (1, 0, 2)
    again, lines = push("b.csv")
    assert (again.written, len(lines)) == (0, 1)  # the header only
    ids = tables["identities"].to_pylist()
    person = tables["persons"].column("person_id")[0].as_py()
    ids.append({**ids[0], "identifier": "contact:M-7", "kind": "contact", "person_id": person})
    engine.load_table(con, "identities", pa.Table.from_pylist(
        ids, schema=tables["identities"].schema))
    changed, lines = push("c.csv")
    assert (changed.written, changed.rewritten, len(lines)) == (1, 1, 2)
    assert '"M-7"' in lines[1]
    log = con.table("exports").filter(lambda t: t.destination == "crm").order_by(
        "exported_at").to_pyarrow().to_pylist()
    assert [(r["conversion_count"], r["adjustment_count"], Path(r["path"]).name)
            for r in log] == [(1, 0, "a.csv"), (0, 0, "b.csv"), (0, 1, "c.csv")]
    filed = con.table("exported_conversions").filter(
        lambda t: t.destination == "crm").order_by("exported_at").to_pyarrow().to_pylist()
    assert [(r["conversion_id"], r["kind"]) for r in filed] == [
        ("lead:m3", "conversion"), ("lead:m3", "restatement")]
    assert "john@gmail.com" not in json.dumps([*log, *filed], default=str)
