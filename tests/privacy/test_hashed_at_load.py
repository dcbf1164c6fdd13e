"""``pii_at_rest = "hashed"`` at load: file ingest and the collector's loader store keyed
hashes of e-mails and phones in every raw table (and none in JSON or ``rejects.raw``), so no
table of the warehouse holds the plain values, and prepare stitches on the stored hashes."""

from __future__ import annotations

import hashlib
from datetime import datetime
from pathlib import Path

import ibis
import orjson
import pytest
from factories import any_of, arrow_table
from ibis.backends import BaseBackend

from touchline import engine, store
from touchline.collect.ingest import ingest_file
from touchline.collect.loader import load_spool
from touchline.collect.spool import CALL, DEAL, EVENT
from touchline.config import Settings
from touchline.metrics.kpis import compute
from touchline.pipeline import run
from touchline.prepare import run_prepare
from touchline.privacy import erase

KEY = "test-key-of-sixteen-chars"
ANN, BOB = "ann@acme-tools.com", "bob@gmail.com"
PHONE = "+12025550143"
#: every spelling of the test's contacts a table could hold
TOKENS = ("ann@acme", "bob@gmail", "2025550143", "555 0143", "555-0143", "555.0143",
          "2025550199", "carl", "7946", "4420")
#: a regular expression matching any of :data:`TOKENS`
_ANY_TOKEN = any_of(TOKENS)
#: a landing page whose query carries a visitor's e-mail (encoded) and phone (a literal "+")
#: beside its UTMs and click id
CARL_URL = ("https://plumb.example/pricing?utm_source=google&utm_medium=cpc&utm_campaign=spring"
            "&gclid=G-123&email=carl%40acme-tools.com&phone=+442079460000")
#: the same as stored in hashed mode: both values removed (percent-encoded "[removed]")
CARL_URL_AT_REST = ("https://plumb.example/pricing?utm_source=google&utm_medium=cpc"
                    "&utm_campaign=spring&gclid=G-123&email=%5Bremoved%5D&phone=%5Bremoved%5D")


def _carl_page(message_id: str, anonymous_id: str) -> dict[str, object]:
    page = {"url": CARL_URL, "title": "Quote for carl@acme-tools.com",
            "referrer": "https://webmail.example/read?from=carl@acme-tools.com&id=9"}
    return {"messageId": message_id, "type": "page", "anonymousId": anonymous_id,
            "timestamp": "2026-03-01T13:00:00Z", "context": {"page": page},
            "properties": {**page, "note": "call me on +44 20 7946 0000 after 5",
                           "order_id": "4155550123", "at": "2026-03-01 10:00:00"}}


def _settings(tmp_path: Path, mode: str = "hashed", **extra: object) -> Settings:
    return Settings(database_url="duckdb://", temp_directory=tmp_path, pii_hash_key=KEY,
                    pii_at_rest=mode, spool_dir=tmp_path / "spool",
                    attribution_models=["linear"], default_model="linear", **extra)


def _keyed(normalised: str) -> str:
    return store.keyed_contact(normalised, KEY)


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _found(con: BaseBackend) -> dict[str, int]:
    """Rows of each table of the warehouse with one of :data:`TOKENS` in a string column.

    ``ibis_*`` are not the warehouse's: views of the session that Ibis made (a load's lookup of
    keyed numbers, Spark's reader of a load's staged Parquet, gone with the load). A value of
    16 or more hex digits and nothing else is an id or a key (a random ingest id, a keyed
    e-mail), never a readable contact: one that holds "4420" by chance is no leak (a random
    ingest id did, once in a CI run).
    """
    counts = []
    for name in [n for n in con.list_tables() if not n.startswith("ibis_")]:
        t = con.table(name)
        # one pattern per column, not one predicate per column and token: the same rows, and
        # a tenth of the expression for Ibis to compile (its compile took most of the time)
        hits = [t[c].lower().re_search(_ANY_TOKEN) & ~t[c].lower().re_search("^[0-9a-f]{16,}$")
                for c, dtype in t.schema().items() if dtype.is_string()]
        if hits:
            counts.append(t.filter(ibis.or_(*hits)).aggregate(
                n=ibis._.count().cast("int64")).mutate(table=ibis.literal(name)))
    # one query for every table (on Spark one job, not one per table)
    found = ibis.union(*counts, distinct=False).to_pandas() if counts else None
    return {} if found is None else {
        str(r.table): int(r.n) for r in found.itertuples() if r.n}


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def _files(tmp_path: Path) -> dict[str, Path]:
    events = [
        {"messageId": "m1", "type": "identify", "anonymousId": "a1",
         "timestamp": "2026-03-01T09:00:00Z",
         "traits": {"email": " Ann@Acme-Tools.com", "phone": "(202) 555-0143", "plan": "pro"},
         "context": {"ip": "203.0.113.7", "traits": {"email": "ann@acme-tools.com"}}},
        {"messageId": "m2", "type": "track", "event": "Form Submitted", "anonymousId": "b1",
         "timestamp": "2026-03-01T10:00:00Z",
         "properties": {"email": BOB, "phone": 2025550199, "note": "or write to "
                        "ann@acme-tools.com"}},
        {"messageId": "m3", "type": "identify", "anonymousId": "c1",
         "timestamp": "2026-03-01T11:00:00Z", "traits": {"email_sha256": _sha(ANN)}},
        # no type: rejected, its raw record kept in rejects
        {"messageId": "m4", "anonymousId": "d1", "timestamp": "2026-03-01T12:00:00Z",
         "traits": {"email": ANN, "phone": PHONE}},
        _carl_page("m5", "e1"),
    ]
    return {
        "events": _write(tmp_path / "events.ndjson",
                         [orjson.dumps(e).decode() for e in events]),
        "reviews": _write(tmp_path / "reviews.csv", [
            "platform,rating,reviewed_at,email,phone",
            "google,5,2026-03-02 10:00:00,Ann@Acme-Tools.com,202-555-0143",
            # a bad rating: rejected, the CSV line in rejects.raw
            "google,9,2026-03-02 11:00:00,bob@gmail.com,(202) 555-0143"]),
        "surveys": _write(tmp_path / "surveys.csv", [
            "response_id,responded_at,email,nps_score",
            "s1,2026-03-03 10:00:00,ANN@acme-tools.com,9"]),
        "calls": _write(tmp_path / "calls.csv", [
            "call_id,caller_number,tracking_number,started_at",
            "c1,(202) 555-0143,+15550100001,2026-03-04 10:00:00"]),
        "deals": _write(tmp_path / "deals.csv", [
            "deal_id,contact_emails,status,amount,created_at",
            "D1,Ann@Acme-Tools.com; bob@gmail.com,won,100,2026-03-05 10:00:00"]),
    }


def test_hashed_ingest_leaves_no_plain_contact_in_any_table(con: BaseBackend,
                                                             tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    store.init(con)
    for kind, path in _files(tmp_path).items():
        ingest_file(con, path, kind, settings=settings)
    assert _found(con) == {}
    events = con.table("events").order_by("message_id").to_pandas().set_index("message_id")
    # one keyed hash for the address typed, its SHA-256 given, and the same in deals
    assert events.loc["m1", "email"] == _keyed(ANN) == events.loc["m3", "email"]
    assert events.loc["m1", "phone"] == _keyed(PHONE)
    assert events.loc["m2", "email"] == _keyed(BOB)
    assert events.loc["m2", "phone"] == _keyed("+12025550199")
    assert events.email_sha256.isna().all()
    # a business domain is kept beside the hash, a free-mail one is not
    assert events.email_domain.tolist() == ["acme-tools.com", None, None, None]
    assert orjson.loads(events.loc["m1", "traits"]) == {"email": None, "phone": None,
                                                        "plan": "pro"}
    assert "[removed]" in events.loc["m2", "properties"]
    # e-mails and phones in URLs and free text: removed, the rest as it was
    assert events.loc["m5", "url"] == CARL_URL_AT_REST
    assert events.loc["m5", "referrer"] == (
        "https://webmail.example/read?from=%5Bremoved%5D&id=9")
    assert events.loc["m5", "title"] == "Quote for [removed]"
    properties = orjson.loads(events.loc["m5", "properties"])
    assert properties["note"] == "call me on [removed] after 5"
    # in JSON too: its "email" parameter is a contact's, whatever the e-mail pass left
    assert properties["url"] == CARL_URL_AT_REST
    assert (properties["order_id"], properties["at"]) == ("4155550123", "2026-03-01 10:00:00")
    reviews = con.table("reviews").to_pandas()
    assert (reviews.email.tolist(), reviews.phone.tolist()) == ([_keyed(ANN)], [_keyed(PHONE)])
    assert con.table("surveys").email.to_pandas().tolist() == [_keyed(ANN)]
    assert con.table("calls").caller_number.to_pandas().tolist() == [_keyed(PHONE)]
    assert con.table("deals").contact_emails.to_pandas().tolist() == [
        f"{_keyed(ANN)};{_keyed(BOB)}"]
    raw = con.table("rejects").raw.to_pandas().tolist()
    assert len(raw) == 2 and all("[removed]" in r for r in raw)


def test_plain_ingest_keeps_contacts_as_received(con: BaseBackend, tmp_path: Path) -> None:
    store.init(con)
    ingest_file(con, _files(tmp_path)["surveys"], "surveys",
                settings=_settings(tmp_path, "plain"))
    assert con.table("surveys").email.to_pandas().tolist() == ["ANN@acme-tools.com"]


def _spool(settings: Settings) -> None:
    spool = Path(settings.spool_dir)
    spool.mkdir(parents=True, exist_ok=True)
    messages = [
        {"messageId": "w1", "type": "identify", "anonymousId": "a1",
         "receivedAt": "2026-03-01T09:00:00Z", "writeKey": "web",
         "traits": {"email": "Ann@Acme-Tools.com", "phone": "202 555 0143"},
         "context": {"ip": "203.0.113.7"}},
        # not a JSON object: rejected, its text kept in rejects.raw
    ]
    lines = [EVENT + orjson.dumps(m) for m in messages]
    lines.append(EVENT + b'{"type": "track", "traits": {"email": "bob@gmail.com", ')
    lines.append(DEAL + orjson.dumps({"deal_id": "D9", "contact_emails": BOB,
                                      "created_at": "2026-03-05 10:00:00"}))
    lines.append(CALL + orjson.dumps({"call_id": "c9", "caller_number": "(202) 555-0143",
                                      "tracking_number": "+15550100001",
                                      "started_at": "2026-03-04 10:00:00"}))
    (spool / "00000001.seg").write_bytes(b"\n".join(lines) + b"\n")


@pytest.mark.parametrize("ip_at_rest", ["keyed", "dropped"])
def test_hashed_collector_load_leaves_no_plain_contact_in_any_table(
        tmp_path: Path, ip_at_rest: str) -> None:
    """DuckDB only: the collector's warehouse is DuckDB (its loader commits rows and spool
    offsets in one transaction)."""
    settings = _settings(tmp_path, ip_at_rest=ip_at_rest)
    con = engine.connect(settings=settings)
    _spool(settings)
    report = load_spool(con, settings)
    assert (report.events, report.deals, report.calls) == (1, 1, 1)
    assert _found(con) == {}
    assert "203.0.113" not in str(_found_text(con))
    events = con.table("events").to_pandas()
    assert events.email.tolist() == [_keyed(ANN)]
    assert events.email_domain.tolist() == ["acme-tools.com"]
    expected_ip = store.keyed_hash("203.0.113.7", KEY) if ip_at_rest == "keyed" else None
    assert events.ip.tolist() == [expected_ip]
    assert con.table("deals").contact_emails.to_pandas().tolist() == [_keyed(BOB)]
    assert con.table("calls").caller_number.to_pandas().tolist() == [_keyed(PHONE)]
    assert con.table("rejects").count().execute() == 1


def _found_text(con: BaseBackend) -> list[str]:
    """Every string value of ``events`` and ``rejects``."""
    out = []
    for name in ("events", "rejects"):
        frame = con.table(name).to_pandas()
        out += [str(v) for c in frame.columns for v in frame[c] if isinstance(v, str)]
    return out


def test_hashed_loads_stitch_and_make_the_accounts_of_plain_ones(tmp_path: Path) -> None:
    """DuckDB only: a full run per mode; the stores' agreement on both engines is the test
    above, prepare's in tests/privacy/test_pii_at_rest.py."""
    persons, kpis = {}, {}
    for mode in ("plain", "hashed"):
        settings = _settings(tmp_path / mode, mode)
        (tmp_path / mode).mkdir()
        con = engine.connect(settings=settings)
        store.init(con)
        for kind, path in _files(tmp_path / mode).items():
            ingest_file(con, path, kind, settings=settings)
        run(con, settings)
        p = con.table("persons").to_pandas()
        persons[mode] = sorted(p.account_id.fillna("-"))
        for kpi in ("review_rating", "nps"):
            got = compute(con, kpi, by=["channel"], settings=settings).to_pandas()
            kpis[(mode, kpi)] = got.to_dict("records")
        if mode == "hashed":
            assert _found(con) == {}
            # a review loaded before pii_at_rest was switched on: its plain e-mail is keyed
            # to be looked up in the graph
            engine.append(con, "reviews", arrow_table(store.REVIEWS, [{
                "platform": "g2", "rating": 3.0, "reviewed_at": datetime(2026, 3, 6),
                "email": "ann@acme-tools.com", "row_hash": "old"}]))
            got = compute(con, "review_rating", by=["channel"], settings=settings).to_pandas()
            assert got.to_dict("records") == [
                {"channel": "Direct", "reviews": 2, "review_rating": 4.0}]
    # a1 (Ann, her phone) and c1 (her SHA-256) are one person in both modes; her domain
    # makes the account, Bob's free-mail one does not, nor does Carl's address in a URL
    assert persons["hashed"] == persons["plain"]
    assert persons["hashed"] == ["-", "-", "domain:acme-tools.com"]
    # her review (e-mail and phone) and her survey answer (e-mail) find her in both modes
    for kpi in ("review_rating", "nps"):
        assert kpis[("hashed", kpi)] == kpis[("plain", kpi)]
        assert [r["channel"] for r in kpis[("hashed", kpi)]] == ["Direct"]


def test_an_erasure_finds_a_person_in_tables_loaded_hashed(tmp_path: Path) -> None:
    """DuckDB only: erasure's every-table test runs on both engines (tests/privacy/
    test_erase.py); this one is about finding keyed rows before and after a run."""
    settings = _settings(tmp_path)
    con = engine.connect(settings=settings)
    store.init(con)
    for kind, path in _files(tmp_path).items():
        ingest_file(con, path, kind, settings=settings)
    done = erase(con, settings, kind="phone", value="(202) 555-0143")
    # her identify (a1), her review, the call from her number; her survey and the events of
    # her other devices once a run has linked them
    assert {k: v for k, v in done.rows.items() if v} == {"events": 1, "reviews": 1, "calls": 1}
    run(con, settings)
    done = erase(con, settings, kind="email", value="ANN@acme-tools.com")
    assert done.rows["surveys"] == 1 and done.rows["events"] == 1  # m3: her SHA-256 given
    assert done.rows["deals"] == 1  # written back with Bob's contact only
    assert con.table("deals").contact_emails.to_pandas().tolist() == [_keyed(BOB)]
    ann = (_keyed(ANN), _keyed(PHONE))
    # ibis_*: views of the session, not the warehouse's tables (see _found)
    for name in [n for n in con.list_tables() if not n.startswith("ibis_")]:
        t = con.table(name)
        hits = [t[c].contains(h) for c, dtype in t.schema().items() if dtype.is_string()
                for h in ann]
        if hits and name != "erasures":
            assert int(t.filter(ibis.or_(*hits)).count().execute()) == 0, name


@pytest.mark.parametrize(("ip_at_rest", "expected"), [
    ("truncated", "203.0.113.0"), ("keyed", store.keyed_hash("203.0.113.7", KEY)),
    ("dropped", None)])
def test_ip_at_rest_truncates_keys_or_drops_the_address(con: BaseBackend, tmp_path: Path,
                                                        ip_at_rest: str,
                                                        expected: str | None) -> None:
    store.init(con)
    line = {"messageId": "m1", "type": "page", "anonymousId": "a1",
            "timestamp": "2026-03-01T09:00:00Z",
            "context": {"ip": "203.0.113.7", "locale": "en-US"}}
    path = _write(tmp_path / "events.ndjson", [orjson.dumps(line).decode()])
    ingest_file(con, path, "events", settings=_settings(tmp_path, "plain", ip_at_rest=ip_at_rest))
    got = con.table("events").select("ip", "context").to_pandas()
    assert got.ip.tolist() == [expected]
    assert "203.0.113.7" not in got.context[0] and "en-US" in got.context[0]


def test_a_url_with_contacts_keeps_its_utms_click_id_and_channel_when_hashed(
        con: BaseBackend, tmp_path: Path) -> None:
    store.init(con)
    for mode, message_id in (("plain", "p1"), ("hashed", "h1")):
        path = _write(tmp_path / f"{mode}.ndjson",
                      [orjson.dumps(_carl_page(message_id, f"{mode}-device")).decode()])
        ingest_file(con, path, "events", settings=_settings(tmp_path, mode))
    stored = con.table("events").select("message_id", "url").to_pandas().set_index("message_id")
    assert stored.url.to_dict() == {"p1": CARL_URL, "h1": CARL_URL_AT_REST}
    run_prepare(con, _settings(tmp_path, "hashed"))
    touches = con.table("touches").select(
        "anonymous_id", "utm_source", "utm_medium", "utm_campaign", "click_id_param",
        "click_id", "page_path", "referrer_host").to_pandas().set_index("anonymous_id")
    expected = ["google", "cpc", "spring", "gclid", "G-123", "/pricing", "webmail.example"]
    assert touches.loc["hashed-device"].tolist() == expected
    assert touches.loc["plain-device"].tolist() == expected
    points = con.table("touchpoints").select("anonymous_id", "channel", "source", "medium",
                                             "campaign").to_pandas().set_index("anonymous_id")
    assert points.loc["hashed-device"].tolist() == ["Paid Search", "google", "cpc", "spring"]
    assert points.loc["plain-device"].tolist() == ["Paid Search", "google", "cpc", "spring"]
