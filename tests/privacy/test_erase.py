"""``touchline erase``: after erasing John (the brief's journey, tests/factories.py) by his
e-mail, no stored table holds a row of his, the spool holds none of his lines, and a run
gives the channel totals of a run that never had him; Mary and Bob are untouched."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import ibis
import orjson
import pandas as pd
import pytest
from factories import CLI_OWN_CONNECTION, JOHN, JOHN_DEAL, any_of, arrow_table, event_rows
from ibis.backends import BaseBackend
from typer.testing import CliRunner

from touchline import engine, store
from touchline.cli import app
from touchline.collect import loader
from touchline.collect.spool import BATCH, ERASED, EVENT, replay_rewrites, rewrite_lines
from touchline.config import Settings
from touchline.exports import export_conversions
from touchline.pipeline import run
from touchline.privacy import erase
from touchline.privacy.erase import ERASE_RULES, JOURNAL_DIR

KEY = "test-key-of-sixteen-chars"
ONE_MODEL = {"attribution_models": ["linear"], "default_model": "linear"}
JOHN_EMAIL, JOHN_PHONE = "john@gmail.com", "+12025550143"

#: John with ids of his own (the factories' "laptop" and "phone" are words other rows use),
#: and a crawler hit from his laptop that prepare rejects (its raw text names him)
JOHN_HERE = [
    {**row, "message_id": f"john-m{i}",
     **({"anonymous_id": f"john-{row['anonymous_id']}"} if "anonymous_id" in row else {})}
    for i, row in enumerate(JOHN, start=1)
] + [{"message_id": "john-bot", "anonymous_id": "john-laptop", "timestamp": "2026-03-06 01:00:00",
      "url": "https://plumb.example/", "user_agent": "Googlebot/2.1 (+http://www.google.com/bot.html)"}]
OTHERS = [
    {"message_id": "mary-m1", "anonymous_id": "mary-1", "timestamp": "2026-03-02 10:00:00",
     "url": "https://plumb.example/?utm_source=newsletter&utm_medium=email",
     "utm_source": "newsletter", "utm_medium": "email"},
    {"message_id": "mary-m2", "anonymous_id": "mary-1", "type": "track",
     "event": "Form Submitted", "email": "Mary@Example.org", "phone": "(202) 555-0199",
     "timestamp": "2026-03-02 10:05:00"},
    {"message_id": "mary-m3", "anonymous_id": "mary-1", "type": "track",
     "event": "Order Completed", "revenue": 120.0, "currency": "USD",
     "timestamp": "2026-03-04 10:00:00", "properties": '{"order_id": "O-9"}'},
    {"message_id": "bob-m1", "anonymous_id": "bob-1", "timestamp": "2026-03-03 11:00:00",
     "url": "https://plumb.example/?gclid=bobclick", "gclid": "bobclick",
     "utm_source": "google", "utm_medium": "cpc"},
    {"message_id": "bob-m2", "anonymous_id": "bob-1", "type": "track", "event": "Chat Started",
     "source": "chat", "email": "bob@example.net", "timestamp": "2026-03-03 11:05:00"},
]
OTHER_DEALS = [{"deal_id": "D2", "status": "Closed Won", "amount": 900.0, "currency": "usd",
                "contact_emails": "bob@example.net", "created_at": "2026-03-04 10:00:00",
                "closed_at": "2026-03-10 10:00:00"}]
#: a deal John shares with Bob: an erasure leaves it Bob's alone, as if John never was in it
SHARED_DEAL = {"deal_id": "D3", "status": "Closed Won", "amount": 500.0, "currency": "usd",
               "created_at": "2026-03-12 10:00:00", "closed_at": "2026-03-22 10:00:00"}
LEASES = [{"lease_id": f"l-{who}", "number": "+15550100001", "pool": "default",
           "status": "leased", "anonymous_id": who, "leased_at": "2026-03-05 20:00:00",
           "expires_at": "2026-03-05 20:30:00", "request_count": 1}
          for who in ("john-laptop", "mary-1")]


def _settings(tmp_path: Path, url: str = "duckdb://", **more: object) -> Settings:
    return Settings(database_url=url, temp_directory=tmp_path,  # type: ignore[arg-type]
                    spool_dir=tmp_path / "spool", pii_hash_key=KEY, **ONE_MODEL, **more)


def _build(tmp_path: Path, name: str, events: list[dict[str, object]],
           deals: list[dict[str, object]]) -> str:
    url = f"duckdb://{tmp_path / name}"
    settings = _settings(tmp_path, url=url)
    with engine.connected(settings=settings) as con:
        engine.load_table(con, "events", arrow_table(store.EVENTS, event_rows(events)))
        engine.load_table(con, "deals", arrow_table(store.DEALS, deals))
        engine.load_table(con, "number_leases", arrow_table(store.NUMBER_LEASES, LEASES))
        run(con, settings)
        # his won deal went to Google Ads: exported_conversions names it
        export_conversions(con, settings, destination="google-ads", conversion="deal_won",
                           out=tmp_path / f"{name}.csv", now=datetime(2026, 3, 21, 12))
    return url


@pytest.fixture(scope="module")
def warehouses(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """DuckDB files: John, Mary and Bob run and exported; Mary and Bob alone, the same way."""
    tmp_path = tmp_path_factory.mktemp("erase")
    shared = {**SHARED_DEAL, "contact_emails": "John@Gmail.com; bob@example.net"}
    alone = {**SHARED_DEAL, "contact_emails": "bob@example.net"}
    return {"with": _build(tmp_path, "with.duckdb", [*JOHN_HERE, *OTHERS],
                           [*JOHN_DEAL, *OTHER_DEALS, shared]),
            "without": _build(tmp_path, "without.duckdb", OTHERS, [*OTHER_DEALS, alone])}


def _copy(con: BaseBackend, url: str, tmp_path: Path) -> None:
    with engine.connected(settings=_settings(tmp_path, url=url)) as duck:
        names = [s.name for s in store.TABLES.values() if s.view is None
                 and s.name in duck.list_tables()]
        tables = {name: duck.table(name).to_pyarrow() for name in names}
    for name, table in tables.items():
        engine.load_table(con, name, table)
    store.init(con)


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _mentions(con: BaseBackend, tokens: list[str], phone: str) -> dict[str, int]:
    """Rows per stored table with a string column naming one of ``tokens`` (any case) or
    the phone number ``phone`` (digits, any spacing)."""
    pattern = "[^0-9]{0,3}".join(phone)
    any_token = any_of([tok.lower() for tok in tokens])
    counts = []
    for spec in store.TABLES.values():
        if spec.view is not None:
            continue
        t = con.table(spec.name)
        # one pattern per column, not one predicate per column and token: the same rows, and
        # a fraction of the expression for Ibis to compile (its compile took most of the time)
        hits = [t[c.name].lower().re_search(any_token)
                for c in spec.columns if c.dtype.is_string()]
        hits += [t[c.name].re_search(pattern) for c in spec.columns if c.dtype.is_string()]
        hit = ibis.or_(*(h.fill_null(False) for h in hits))
        counts.append(t.filter(hit).aggregate(n=ibis._.count().cast("int64")).mutate(
            table=ibis.literal(spec.name)))
    # one query for every table (on Spark one job, not one per table)
    found = ibis.union(*counts, distinct=False).to_pandas()
    return {str(r.table): int(r.n) for r in found.itertuples() if r.n}


def _john_tokens(con: BaseBackend) -> list[str]:
    ident = con.table("identities")
    persons = ident.filter(ident.identifier == f"email:{JOHN_EMAIL}").person_id.to_pandas()
    assert len(persons) == 1
    return [JOHN_EMAIL, "john-laptop", "john-phone", "john-m", "john-bot", persons[0],
            _sha(JOHN_EMAIL), _sha(JOHN_PHONE), "deal_won:D1"]


OTHER_TOKENS = ["mary@example.org", "mary-1", "mary-m", "bob@example.net", "bob-1", "bob-m"]


def test_erase_by_email_leaves_no_row_of_john_in_any_table(
        con: BaseBackend, warehouses: dict[str, str], tmp_path: Path) -> None:
    _copy(con, warehouses["with"], tmp_path)
    john = _john_tokens(con)
    before = _mentions(con, john, "2025550143")
    # every kind of table he is in: raw, prepared, journeys, exports, rejects, leases
    assert {"events", "deals", "touches", "sessions", "identities", "identity_links",
            "persons", "journeys", "journey_steps", "credits", "stages",
            "exported_conversions", "rejects", "number_leases"} <= set(before)
    others = _mentions(con, OTHER_TOKENS, "2025550199")

    done = erase(con, _settings(tmp_path), kind="email", value=" John@Gmail.COM ")

    assert _mentions(con, john, "2025550143") == {}
    assert _mentions(con, OTHER_TOKENS, "2025550199") == others
    assert done.person_count == 1
    assert done.rows["events"] == len(JOHN_HERE)
    # his deal, and the one he shared (written back without him)
    assert (done.rows["deals"], done.rows["persons"], done.rows["number_leases"]) == (2, 1, 1)
    deals = con.table("deals").to_pandas().sort_values("deal_id")
    assert list(zip(deals.deal_id, deals.contact_emails, deals.amount, strict=True)) == [
        ("D2", "bob@example.net", 900.0), ("D3", "bob@example.net", 500.0)]
    log = con.table("erasures").to_pandas()
    assert set(log.identifier_hash) == {
        store.keyed_hash(JOHN_EMAIL, KEY)}  # the normalised e-mail, keyed
    assert dict(zip(log.place, log.row_count, strict=True)) == done.rows
    # idempotent: a second erasure finds nothing
    assert erase(con, _settings(tmp_path), kind="email", value=JOHN_EMAIL).total == 0


def _channel_totals(url: str, tmp_path: Path) -> pd.DataFrame:
    with engine.connected(settings=_settings(tmp_path, url=url)) as con:
        credits = con.table("credits")
        totals = credits.group_by("conversion", "model", "channel").aggregate(
            credit=credits.credit.sum(), value=credits.value.sum()).to_pandas()
    return totals.sort_values(["conversion", "model", "channel"]).round(9).reset_index(drop=True)


@pytest.mark.duckdb_only(reason="two whole `touchline run`s and the collector's loader, which "
                         "needs DuckDB; the table logic runs on both engines above")
def test_after_erase_a_run_equals_a_run_that_never_had_john(
        warehouses: dict[str, str], tmp_path: Path) -> None:
    url = f"duckdb://{tmp_path / 'copy.duckdb'}"
    settings = _settings(tmp_path, url=url)
    with engine.connected(settings=settings) as con:
        _copy(con, warehouses["with"], tmp_path)
        erase(con, settings, kind="phone", value="(202) 555-0143")
        report = run(con, settings)
    without = _channel_totals(warehouses["without"], tmp_path)
    assert len(without) > 0
    pd.testing.assert_frame_equal(_channel_totals(url, tmp_path), without)
    assert report.main_conversion is not None


def _line(message: dict[str, object]) -> bytes:
    stamped = {"receivedAt": "2026-03-05T20:00:00Z", "writeKey": "web", **message}
    return EVENT + orjson.dumps(stamped) + b"\n"


def _batch(*messages: dict[str, object]) -> bytes:
    header = orjson.dumps({"receivedAt": "2026-03-05T20:00:00Z", "writeKey": "web"})
    return BATCH + header + b"\t" + orjson.dumps({"batch": list(messages)}) + b"\n"


def _msg(message_id: str, anonymous_id: str, **more: object) -> dict[str, object]:
    return {"type": "track", "event": "x", "messageId": message_id, "anonymousId": anonymous_id,
            "timestamp": "2026-03-05T20:00:00Z", **more}


@pytest.mark.duckdb_only(reason="the collector's loader writes DuckDB only")
def test_erase_blanks_his_spool_lines_loaded_or_not_and_keeps_the_rest(tmp_path: Path) -> None:
    settings = _settings(tmp_path, url=f"duckdb://{tmp_path / 'wh.duckdb'}")
    spool = Path(settings.spool_dir)
    spool.mkdir()
    segment = spool / "1-1.seg"
    loaded = _line({"type": "identify", "messageId": "s1", "anonymousId": "john-laptop",
                    "timestamp": "2026-03-05T20:00:00Z",
                    "traits": {"email": JOHN_EMAIL, "phone": "202 555 0143"}})
    segment.write_bytes(loaded)
    with engine.connected(settings=settings) as con:
        loader.load_spool(con, settings)  # his first line is in events; the segment stays
        segment.write_bytes(loaded + _line(_msg("s2", "mary-1")) + _batch(
            _msg("s3", "mary-1"), _msg("s4", "x", context={"traits": {"phone": "202.555.0143"}}),
            _msg("s5", "bob-1")) + _line(_msg("s6", "john-laptop")))
        segment_size = segment.stat().st_size
        done = erase(con, settings, kind="email", value=JOHN_EMAIL)
        # s1 (loaded) and s6 whole; s4, his number in another spelling, out of its batch
        assert done.rows["spool"] == 3
        text = segment.read_bytes()
        assert len(text) == segment_size  # offsets stay valid
        assert b"john" not in text and b"555.0143" not in text
        assert not list(spool.glob("*.rewrite"))
        loader.load_spool(con, settings)
        ids = sorted(con.table("events").message_id.to_pandas())
    assert ids == ["s2", "s3", "s5"]


def test_an_interrupted_spool_rewrite_is_finished_by_the_next_load(tmp_path: Path) -> None:
    segment = tmp_path / "1-1.seg"
    segment.write_bytes(b"Eabc\nEdef\n")
    # the journal of a rewrite whose segment was never touched (the crash came first)
    (tmp_path / "1-1.seg.rewrite").write_bytes(b"5\t" + b"X   ".hex().encode() + b"\nEND\n")
    # and one cut off while being written: it never applied anything
    other = tmp_path / "2-1.seg"
    other.write_bytes(b"Eabc\n")
    (tmp_path / "2-1.seg.rewrite").write_bytes(b"0\t" + b"X   ".hex().encode() + b"\n")
    assert replay_rewrites(tmp_path) == 2
    assert segment.read_bytes() == b"Eabc\nX   \n"
    assert other.read_bytes() == b"Eabc\n"
    assert not list(tmp_path.glob("*.rewrite"))
    assert rewrite_lines(segment, lambda line: b"" if line == b"Eabc" else None) == 1
    assert segment.read_bytes() == ERASED + b"   \nX   \n"


def test_every_stored_table_says_which_rows_are_a_persons() -> None:
    stored = {s.name for s in store.TABLES.values() if s.view is None}
    assert set(ERASE_RULES) == stored


@pytest.fixture
def cli_warehouse(warehouses: dict[str, str], tmp_path: Path,
                  monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    url = f"duckdb://{tmp_path / 'cli.duckdb'}"
    with engine.connected(settings=_settings(tmp_path, url=url)) as con:
        _copy(con, warehouses["with"], tmp_path)
    monkeypatch.setenv("TOUCHLINE_PII_HASH_KEY", KEY)
    monkeypatch.setenv("TOUCHLINE_SPOOL_DIR", str(tmp_path / "spool"))
    yield url


@pytest.mark.duckdb_only(reason=CLI_OWN_CONNECTION)
def test_cli_erase_prints_rows_per_table_and_never_the_identifier(cli_warehouse: str) -> None:
    result = CliRunner().invoke(app, ["erase", "--email", JOHN_EMAIL, "-d", cli_warehouse])
    assert result.exit_code == 0, result.output
    assert "john" not in result.output.lower()
    assert "1 person(s) found by email" in result.output
    assert "events" in result.output and "touchline run" in result.output
    refused = CliRunner().invoke(app, ["erase", "--email", "a@b.c", "--phone", "1",
                                       "-d", cli_warehouse])
    assert refused.exit_code == 2
    assert "exactly one" in refused.output


def test_a_short_id_is_found_in_id_fields_only_a_long_one_also_as_a_csv_field() -> None:
    import re

    from touchline.privacy.erase import Identifiers

    def found(typed: str, text: str) -> bool:
        pattern = "(" + "|".join(Identifiers.of([], [typed]).tokens()) + ")"
        return re.search(pattern, text, re.IGNORECASE) is not None

    assert found("user:1", '{"userId": "1", "event": "x"}')
    assert not found("user:1", '{"line": "1", "userId": "12"}')
    assert not found("user:1", "2026-03-01,1,page")
    assert found("anon:john-laptop", '2026-03-01,"john-laptop",page')
    assert found("phone:+12025550143", "called from (202) 555-0143 today")
    assert not found("phone:+12025550143", "order 12025550143999")


def test_an_erasure_stopped_half_way_is_finished_by_the_next(
        con: BaseBackend, warehouses: dict[str, str], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """On Spark the tables before ``journeys`` (raw tables, the identity graph, persons) are
    erased when it stops, and John can no longer be resolved; on DuckDB they are rolled back.
    Either way the journal finishes the job."""
    _copy(con, warehouses["with"], tmp_path)
    john = _john_tokens(con)
    settings = _settings(tmp_path)
    delete_where = engine.delete_where

    def lost_worker(con: BaseBackend, name: str, where: Callable[..., object]) -> int:
        if name == "journeys":
            raise RuntimeError("executor lost")
        return delete_where(con, name, where)  # type: ignore[arg-type]

    monkeypatch.setattr(engine, "delete_where", lost_worker)
    with pytest.raises(RuntimeError, match="executor lost"):
        erase(con, settings, kind="email", value=JOHN_EMAIL)
    monkeypatch.setattr(engine, "delete_where", delete_where)
    assert (tmp_path / "spool" / JOURNAL_DIR / "erasure.json").exists()
    assert "journeys" in _mentions(con, john, "2025550143")

    again = erase(con, settings, kind="email", value=JOHN_EMAIL)

    assert _mentions(con, john, "2025550143") == {}
    assert not (tmp_path / "spool" / JOURNAL_DIR).exists()
    assert again.total == 0  # the journal's erasure did it; this one found nothing left
    # the deal he shared is Bob's alone, once, with its revenue
    d3 = con.table("deals").filter(ibis._.deal_id == "D3").to_pandas()
    assert (d3.contact_emails.tolist(), d3.amount.tolist()) == (["bob@example.net"], [500.0])
    log = con.table("erasures").to_pandas()
    assert log.erasure_id.nunique() == 2
    assert set(log.identifier_hash) == {store.keyed_hash(JOHN_EMAIL, KEY)}
