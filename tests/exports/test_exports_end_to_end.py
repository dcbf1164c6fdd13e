"""Exports over the stored tables: John's journey through ``touchline run`` to one Google Ads
row, nothing twice, a refund as one restatement; the audit log; a push to a local server; the
CLI. John is the journeys tests' John (tests/factories.py), with an online order added."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pyarrow as pa
import pytest
from factories import (
    CLI_OWN_CONNECTION,
    JOHN,
    JOHN_DEAL,
    arrow_table,
    event_rows,
)
from ibis.backends import BaseBackend

from touchline import engine, store
from touchline.config import Settings
from touchline.exports import ExportResult, export_conversions
from touchline.exports.rows import conversion_rows
from touchline.pipeline import run

# his online order the day after the click, then a partial refund naming it
ORDER = {"anonymous_id": "laptop", "type": "track", "event": "Order Completed",
         "revenue": 300.0, "currency": "USD", "timestamp": "2026-03-06 10:00:00",
         "properties": '{"order_id": "O-1"}'}
REFUND = {"anonymous_id": "laptop", "type": "track", "event": "Order Refunded",
          "revenue": -100.0, "currency": "USD", "timestamp": "2026-03-25 10:00:00",
          "properties": '{"order_id": "O-1"}'}
HEADER = ["Parameters:TimeZone=America/New_York",
          "Google Click ID,GBRAID,WBRAID,Conversion Name,Conversion Time,Conversion Value,"
          "Conversion Currency,Order ID"]


#: one model is all an export reads; the others would only slow each run down
ONE_MODEL = {"attribution_models": ["linear"], "default_model": "linear"}


def _settings(tmp_path: Path, url: str = "duckdb://", **more: object) -> Settings:
    return Settings(database_url=url, temp_directory=tmp_path,  # type: ignore[arg-type]
                    export_time_zone="America/New_York", **ONE_MODEL, **more)


@pytest.fixture(scope="module")
def john_file(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A DuckDB warehouse file holding John's run (his order included), shared by this
    module's tests; each exports a conversion type or to a destination of its own."""
    tmp_path = tmp_path_factory.mktemp("john")
    url = f"duckdb://{tmp_path / 'john.duckdb'}"
    settings = _settings(tmp_path, url=url)
    con = engine.connect(settings=settings)
    _load(con, [*JOHN, ORDER])
    run(con, settings)
    con.disconnect()
    return url


def _load(con: BaseBackend, events: list[dict[str, object]]) -> None:
    engine.load_table(con, "events", arrow_table(store.EVENTS, event_rows(events)))
    engine.load_table(con, "deals", arrow_table(store.DEALS, JOHN_DEAL))


@pytest.mark.duckdb_only(reason="two whole `touchline run`s; the export's table logic runs "
                         "on both engines in test_exports_read_the_stored_tables_alike")
def test_john_gives_one_google_row_once_and_a_refund_one_restatement(
        john_file: str, tmp_path: Path) -> None:
    settings = _settings(tmp_path, url=john_file)
    con = engine.connect(settings=settings)
    now = datetime(2026, 3, 21, 12)

    def export(conversion: str, name: str, at: datetime = now) -> ExportResult:
        return export_conversions(con, settings, destination="google-ads",
                                  conversion=conversion, out=tmp_path / name, now=at)

    won = export("deal_won", "won.csv")
    # his gclid, the deal's close (10:00 UTC) in New York's summer time, the CRM amount
    assert (tmp_path / "won.csv").read_text().splitlines() == [
        *HEADER, "abc,,,deal_won,2026-03-20 06:00:00-04:00,1800.00,USD,D1"]
    assert (won.conversions, won.adjustments, won.rejected) == (1, 0, 0)
    again = export("deal_won", "won-again.csv")
    assert (again.conversions, again.adjustments) == (0, 0)
    assert (tmp_path / "won-again.csv").read_text().splitlines() == HEADER
    # the order: its own order id, before the change to summer time
    export("purchase", "orders.csv")
    assert (tmp_path / "orders.csv").read_text().splitlines()[2] == (
        "abc,,,purchase,2026-03-06 05:00:00-05:00,300.00,USD,O-1")

    # a partial refund of the order, then the run: one restatement to the new total
    _load(con, [*JOHN, ORDER, REFUND])
    run(con, settings)
    later = datetime(2026, 3, 26, 12)
    refunded = export("purchase", "orders-2.csv", at=later)
    assert (refunded.conversions, refunded.adjustments) == (0, 1)
    assert refunded.adjustments_path is not None
    assert refunded.adjustments_path.read_text().splitlines()[2:] == [
        "O-1,purchase,RESTATE,2026-03-26 08:00:00-04:00,200.00,USD"]
    assert export("purchase", "orders-3.csv", at=later).adjustments == 0
    assert export("deal_won", "won-3.csv", at=later).conversions == 0

    log = con.table("exports").filter(lambda t: t.format == "google-ads-clicks-csv/v1")
    counts = log.to_pandas()
    assert sorted(zip(counts.conversion, counts.conversion_count, counts.adjustment_count,
                      strict=True)) == [("deal_won", 0, 0), ("deal_won", 0, 0),
                                        ("deal_won", 1, 0), ("purchase", 0, 0),
                                        ("purchase", 0, 1), ("purchase", 1, 0)]
    sent = con.table("exported_conversions").filter(
        lambda t: t.destination == "google-ads").to_pandas()
    sent = sent[sent.conversion.isin(["deal_won", "purchase"])]
    assert sorted(zip(sent.conversion_id, sent.kind, sent.value, strict=True)) == [
        ("deal_won:D1", "conversion", 1800.0), ("purchase:m7", "conversion", 300.0),
        ("purchase:m7", "restatement", 200.0)]
    con.disconnect()


MSCLKID = "f894f652ea334e739002f7167ab8f8e3"


def test_exports_read_the_stored_tables_alike(con: BaseBackend, john_file: str,
                                              tmp_path: Path) -> None:
    """The tables an export reads, copied from John's run (his Google click made a Microsoft
    one): one row, then nothing, a restatement when the deal's value moves, a retraction when
    the deal is gone; under a model, the credit of the clicked session."""
    duck = engine.connect(_settings(tmp_path, url=john_file).database_url)
    tables = {name: duck.table(name).to_pyarrow() for name in (
        "journeys", "journey_steps", "touches", "identities", "credits")}
    duck.disconnect()
    touches = tables["touches"]
    param = touches.column("click_id_param").to_pylist()
    tables["touches"] = touches.set_column(
        touches.schema.get_field_index("click_id"), "click_id",
        [[MSCLKID if p == "gclid" else None for p in param]]).set_column(
        touches.schema.get_field_index("click_id_param"), "click_id_param",
        [["msclkid" if p == "gclid" else None for p in param]])
    for name, table in tables.items():
        engine.load_table(con, name, table)
    settings = _settings(tmp_path)

    def export(name: str, at: datetime) -> list[str]:
        export_conversions(con, settings, destination="microsoft", conversion="deal_won",
                           out=tmp_path / name, now=at, fmt="bulk-csv")
        return (tmp_path / name).read_text().splitlines()[2:]

    now, later = datetime(2026, 3, 21, 12), datetime(2026, 4, 1, 12)
    assert export("a.csv", now) == [f"Offline Conversion,,,,deal_won:D1,,USD,deal_won,"
                                    f"3/20/2026 10:00:00 AM,1800.00,{MSCLKID},,,,"]
    journeys = tables["journeys"]
    won = journeys.column("conversion").to_pylist().index("deal_won")
    value = journeys.column("value").to_pylist()
    value[won] = 1500.0
    engine.load_table(con, "journeys", journeys.set_column(
        journeys.schema.get_field_index("value"), "value", [value]))
    assert export("c.csv", later) == [
        f"Offline Conversion,,,,deal_won:D1,,,deal_won,3/20/2026 10:00:00 AM,,{MSCLKID},"
        "Restate,4/1/2026 12:00:00 PM,1500.00,USD"]
    engine.load_table(con, "journeys", journeys.filter(pa.array(
        [c != "deal_won" for c in journeys.column("conversion").to_pylist()])))
    assert export("d.csv", later)[0].endswith(",Retract,4/1/2026 12:00:00 PM,,")
    assert export("e.csv", later) == []
    # linear: the deal's value shared equally by its touches, one of them the clicked session
    engine.load_table(con, "journeys", journeys)
    credited = conversion_rows(con, conversion="deal_won", params=("msclkid",),
                               require_click=True, model="linear").to_pyarrow()
    touched = journeys.column("touches").to_pylist()[won]
    assert credited.column("value").to_pylist() == pytest.approx([1800.0 / touched])


class _Platform(BaseHTTPRequestHandler):
    """A stand-in API: records each body, answers with the status queued for it."""

    answers: ClassVar[list[int]] = []
    bodies: ClassVar[list[dict[str, object]]] = []

    def do_POST(self) -> None:
        self.bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        status = self.answers.pop(0)
        self.send_response(status)
        self.end_headers()
        self.wfile.write(b'{"requestId": "r1"}' if status == 200 else b'{"error": "down"}')

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def platform() -> Iterator[tuple[str, type[_Platform]]]:
    handler = type("Platform", (_Platform,), {"answers": [], "bodies": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/v1/events:ingest?key=secret", handler
    server.shutdown()
    server.server_close()


@pytest.mark.duckdb_only(reason="a push is an HTTP call after the rows are chosen; the rows' "
                         "table logic runs on both engines in "
                         "test_exports_read_the_stored_tables_alike")
def test_a_failed_push_marks_nothing_sent_and_the_next_export_sends_it(
        john_file: str, tmp_path: Path, platform: tuple[str, type[_Platform]]) -> None:
    url, handler = platform
    handler.answers.extend([500, 200])
    settings = _settings(tmp_path, john_file, google_ads_customer_id="1234567890",
                         export_push_urls={"google-ads": url})
    con = engine.connect(settings=settings)
    kwargs = {"destination": "google-ads", "conversion": "lead", "fmt": "data-manager-json",
              "platform_name": "987654"}
    failed = export_conversions(con, settings, out=tmp_path / "a.json",  # type: ignore[arg-type]
                                now=datetime(2026, 3, 21, 12), **kwargs)
    assert (failed.push_status, failed.conversions) == (500, 0)
    sent = export_conversions(con, settings, out=tmp_path / "b.json",  # type: ignore[arg-type]
                              now=datetime(2026, 3, 21, 13), **kwargs)
    assert (sent.push_status, sent.conversions, sent.push_error) == (200, 1, None)
    # the platform received the body the file holds, twice (once refused)
    assert handler.bodies[1] == json.loads((tmp_path / "b.json").read_text())
    event = handler.bodies[1]["events"][0]  # type: ignore[index]
    # his chat lead: the click before it, its touch as the transaction
    assert (event["adIdentifiers"], event["transactionId"]) == ({"gclid": "abc"}, "m3")
    assert event["userData"]["userIdentifiers"][0] == {
        "emailAddress": hashlib.sha256(b"john@gmail.com").hexdigest()}
    log = con.table("exports").filter(lambda t: t.format == "google-data-manager-json/v1"
                                      ).order_by("exported_at").to_pandas()
    assert log.push_status.tolist() == [500, 200]
    assert log.push_response.tolist() == ['{"error": "down"}', '{"requestId": "r1"}']
    # the key in the URL's query string is not kept
    assert set(log.push_url) == {url.split("?")[0]}
    assert export_conversions(con, settings, out=tmp_path / "c.json",  # type: ignore[arg-type]
                              now=datetime(2026, 3, 21, 14), **kwargs).conversions == 0
    con.disconnect()


@pytest.mark.duckdb_only(reason=CLI_OWN_CONNECTION)
def test_cli_exports_lists_the_audit_and_names_unknown_choices(
        john_file: str, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from touchline.cli import app

    runner = CliRunner()
    out = tmp_path / "ms.csv"
    done = runner.invoke(app, ["export", "microsoft", "--conversion", "deal_won", "--out",
                               str(out), "--database", john_file])
    assert done.exit_code == 0, done.output
    # John clicked no Microsoft ad: an empty upload, nothing refused
    assert "0 conversions, 0 adjustments" in done.output
    assert out.read_text().splitlines()[1].startswith("Format Version,,,,,6.0")
    listed = runner.invoke(app, ["audit", "exports", "--destination", "microsoft",
                                 "--database", john_file])
    assert listed.exit_code == 0, listed.output
    assert "microsoft-bulk-csv/v1" in listed.output and "1 exports" in listed.output
    wrong = runner.invoke(app, ["export", "googel-ads", "--conversion", "deal_won", "--out",
                                str(out), "--database", john_file])
    assert wrong.exit_code == 2
    assert "did you mean 'google-ads'" in wrong.output
    typo = runner.invoke(app, ["export", "meta", "--conversion", "deal_wom", "--out", str(out),
                               "--database", john_file])
    assert "did you mean 'deal_won'" in typo.output


def test_without_as_of_the_windows_count_back_from_now_and_exported_at_is_the_real_time(
        con: BaseBackend, john_file: str, tmp_path: Path) -> None:
    """The reviewer's run: no --as-of on a months-old warehouse. John's click (March 2026) is
    far older than Google's 90 days from today: refused as EXPIRED_EVENT and not logged as
    sent, so the run with --as-of still sends it; and each export's exported_at is when it
    ran, the --as-of day kept in as_of."""
    duck = engine.connect(_settings(tmp_path, url=john_file).database_url)
    for name in ("journeys", "journey_steps", "touches", "identities", "credits"):
        engine.load_table(con, name, duck.table(name).to_pyarrow())
    duck.disconnect()
    settings = _settings(tmp_path)
    started = datetime.now(UTC).replace(tzinfo=None)
    today = export_conversions(con, settings, destination="google-ads", conversion="deal_won",
                               out=tmp_path / "today.csv")
    assert (today.conversions, today.rejected, today.rejects_by_reason) == (
        0, 1, {"EXPIRED_EVENT": 1})
    assert con.table("exported_conversions").count().to_pyarrow().as_py() == 0
    as_of = datetime(2026, 3, 21)
    past = export_conversions(con, settings, destination="google-ads", conversion="deal_won",
                              out=tmp_path / "past.csv", now=as_of)
    assert (past.conversions, past.rejected) == (1, 0)
    log = con.table("exports").order_by("exported_at").to_pyarrow().to_pylist()
    assert [row["as_of"] for row in log] == [None, as_of]
    assert all(started <= row["exported_at"] <= datetime.now(UTC).replace(tzinfo=None)
               for row in log)
    sent = con.table("exported_conversions").to_pyarrow().to_pylist()
    assert [row["exported_at"] for row in sent] == [log[1]["exported_at"]]
    rejects = con.table("rejects").filter(lambda t: t.step == "export:google-ads")
    assert rejects.reason_code.to_pyarrow().to_pylist() == ["EXPIRED_EVENT"]
