"""Real exports load without pre-processing: JSON paths into CSV/Parquet columns that hold
JSON, per-event-type mappings, hashed identifiers, unmapped columns kept as properties, and
the documented Puffy mapping (docs/ingest.md) against the data set's own figures.

Table-writing tests run on DuckDB and Spark (``con``); expected values are written by hand or,
for the Puffy export, computed independently with pandas from the raw files.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from touchline import store
from touchline.collect.ingest import ingest_file
from touchline.collect.mapping import load_mapping
from touchline.config import Settings
from touchline.errors import MappingError

DOCS = Path(__file__).resolve().parents[2] / "docs" / "ingest.md"
SETTINGS = Settings(database_url="duckdb://", ingest_chunk_rows=2)  # several chunks a file
EVENT_COLUMNS = {c.name for c in store.EVENTS.columns}


def docs_mappings() -> list[str]:
    """The ```toml blocks of docs/ingest.md: every one is a mapping file."""
    return re.findall(r"```toml\n(.*?)```", DOCS.read_text(), re.S)


def mapping_from(tmp_path: Path, text: str, kind: str = "events"):  # type: ignore[no-untyped-def]
    path = tmp_path / f"map_{abs(hash(text))}.toml"
    path.write_text(text)
    return load_mapping(path, canonical={c.name for c in store.TABLES[kind].columns}, kind=kind)


def rejects(con) -> list[tuple[int, str | None, str, str | None]]:  # type: ignore[no-untyped-def]
    rows = con.table("rejects").to_pyarrow().to_pylist()
    return sorted((r["line"], r["field"], r["reason_code"], r["ref"]) for r in rows)


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


CHECKOUT = json.dumps({"transaction_id": "T-1", "revenue": 245.5, "user_email": sha("ann@x.io")})
PURCHASE_CSV = (
    "message_id,client_id,timestamp,event_name,event_data\n"
    f'm1,c1,2025-03-01T10:00:00Z,checkout_completed,"{CHECKOUT.replace(chr(34), chr(34) * 2)}"\n'
    'm2,c2,2025-03-01T11:00:00Z,email_filled_on_popup,"{""user_email"": ""ABC""}"\n'
    "m3,c3,2025-03-01T12:00:00Z,page_viewed,\n"
)


def test_every_mapping_in_the_ingest_docs_loads(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A mapping a user copies from docs/ingest.md is accepted as it is."""
    blocks = docs_mappings()
    assert len(blocks) == 2
    mappings = [mapping_from(tmp_path, block) for block in blocks]
    assert mappings[0].event_types["checkout_completed"].rename == "Order Completed"
    assert mappings[1].event_types["email_filled_on_popup"].columns == {
        "email_sha256": ("$.event_data.user_email",)}


def test_the_reference_mapping_in_the_docs_loads_a_file_as_it_says(con, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """docs/ingest.md's first block, every option at once, on a file shaped as it expects."""
    path = tmp_path / "export.csv"
    path.write_text(
        "clientId,page_url,event_name,event_data,timestamp,page_type\n"
        'c1,https://x.io/?utm_source=g,checkout_completed,"{""revenue"": 9, '
        '""user_email"": ""AB12""}",01/03/2025 10:30,pdp\n'
        "c2,https://x.io/,page_viewed,,02/03/2025 11:00,home\n"
    )
    mapping = mapping_from(tmp_path, docs_mappings()[0])
    result = ingest_file(con, path, "events", settings=SETTINGS, mapping=mapping)
    assert (result.loaded, result.rejected, result.ignored_columns) == (2, 0, ["page_type"])
    got = con.table("events").order_by("timestamp").to_pyarrow().to_pylist()
    assert [(r["event"], r["revenue"], r["currency"], r["email_sha256"], r["utm_source"],
             r["source"], str(r["timestamp"])) for r in got] == [
        ("Order Completed", 9.0, "USD", "ab12", "g", "web", "2025-03-01 10:30:00"),
        ("page_viewed", None, None, None, None, "web", "2025-03-02 11:00:00")]


def test_json_paths_read_inside_a_csv_column_per_event_type(con, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """``$.event_data.revenue`` reads ``revenue`` from the JSON text of column ``event_data``;
    ``[event_types.*]`` replaces columns for one event type, fills its defaults and renames it."""
    path = tmp_path / "events.csv"
    path.write_text(PURCHASE_CSV)
    mapping = mapping_from(tmp_path, """
[columns]
anonymous_id = "client_id"
event = "event_name"
properties = "event_data"
[defaults]
type = "track"
[event_types.checkout_completed]
rename = "Order Completed"
columns = { revenue = "$.event_data.revenue", email_sha256 = "$.event_data.user_email" }
defaults = { currency = "usd" }
[event_types.email_filled_on_popup.columns]
email_sha256 = "$.event_data.user_email"
""")
    result = ingest_file(con, path, "events", settings=SETTINGS, mapping=mapping)
    assert (result.loaded, result.rejected) == (3, 0)
    got = con.table("events").order_by("message_id").to_pyarrow().to_pylist()
    assert [r["event"] for r in got] == ["Order Completed", "email_filled_on_popup",
                                         "page_viewed"]
    assert [r["revenue"] for r in got] == [245.5, None, None]
    assert [r["currency"] for r in got] == ["USD", None, None]
    # hashes are stored lower-cased, as the collector stores them
    assert [r["email_sha256"] for r in got] == [sha("ann@x.io"), "abc", None]
    assert json.loads(got[0]["properties"])["transaction_id"] == "T-1"
    assert got[2]["properties"] is None


def test_event_types_set_the_call_type_of_their_rows(con, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """``[event_types.page_viewed] type = "page"``: those rows are page views (what page KPIs
    count), whatever ``[defaults] type`` says; other event names keep the default."""
    path = tmp_path / "events.csv"
    path.write_text(PURCHASE_CSV)
    mapping = mapping_from(tmp_path, """
[columns]
anonymous_id = "client_id"
event = "event_name"
[defaults]
type = "track"
[event_types.page_viewed]
type = "page"
[event_types.email_filled_on_popup]
type = "identify"
rename = "Signed Up"
""")
    result = ingest_file(con, path, "events", settings=SETTINGS, mapping=mapping)
    assert (result.loaded, result.rejected) == (3, 0)
    got = con.table("events").order_by("message_id").to_pyarrow().to_pylist()
    assert [(r["event"], r["type"]) for r in got] == [
        ("checkout_completed", "track"), ("Signed Up", "identify"), ("page_viewed", "page")]


def test_a_cell_that_is_not_json_is_recorded_and_the_row_loads_without_it(con, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Line 3's JSON is cut off: the row loads without revenue and properties, and a
    ``bad_json_partial`` reject names line, column and the loaded key. Line 4 takes its only
    id from a bad cell: the row is rejected as ``bad_json`` on that field; line 5 has no id."""
    path = tmp_path / "events.csv"
    path.write_text(
        "message_id,client_id,timestamp,event_name,event_data\n"
        'm1,c1,2025-03-01T10:00:00Z,buy,"{""revenue"": 12, ""uid"": ""u1""}"\n'
        'm2,c2,2025-03-01T10:00:00Z,buy,"{""revenue"": 1"\n'
        'm3,,2025-03-01T10:00:00Z,buy,"{oops"\n'
        "m4,,2025-03-01T10:00:00Z,buy,\n"
    )
    mapping = mapping_from(tmp_path, """
[columns]
anonymous_id = "client_id"
user_id = "$.event_data.uid"
event = "event_name"
revenue = "$.event_data.revenue"
properties = "event_data"
[defaults]
type = "track"
""")
    result = ingest_file(con, path, "events", settings=SETTINGS, mapping=mapping)
    assert (result.loaded, result.rejected) == (2, 2)
    assert dict(result.rejects_by_reason) == {"bad_json_partial": 1, "bad_json": 1,
                                              "missing_id": 1}
    got = con.table("events").order_by("message_id").to_pyarrow().to_pylist()
    assert [(r["message_id"], r["revenue"], r["user_id"]) for r in got] == [
        ("m1", 12.0, "u1"), ("m2", None, None)]
    assert got[1]["properties"] is None  # not stored as broken JSON text
    assert rejects(con) == [(3, "event_data", "bad_json_partial", "m2"),
                            (4, "user_id", "bad_json", None),
                            (5, "anonymous_id", "missing_id", None)]


def test_a_quote_in_a_json_column_name_is_only_text(con, tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "events.csv"
    path.write_text("message_id,type,timestamp,it's data\nm1,page,2025-03-01T10:00:00Z,{x\n")
    mapping = mapping_from(tmp_path, """[columns]\nanonymous_id = "$.it's data.id"\n""")
    result = ingest_file(con, path, "events", settings=SETTINGS, mapping=mapping)
    assert dict(result.rejects_by_reason) == {"bad_json": 1}
    reason = con.table("rejects").reason.to_pyarrow().to_pylist()
    assert reason == ["field anonymous_id is read from column it's data, whose value here is "
                      "not valid JSON"]


def test_json_paths_read_a_parquet_string_column_too(con, tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "events.parquet"
    pq.write_table(pa.table({
        "message_id": ["m1", "m2"], "client_id": ["c1", "c2"],
        "timestamp": ["2025-03-01T10:00:00Z", "2025-03-01T11:00:00Z"],
        "event data": ['{"order": {"total": "99.5"}}', "[1, 2]"],
    }), path)
    mapping = mapping_from(tmp_path, """
[columns]
anonymous_id = "client_id"
revenue = '$."event data".order.total'
[defaults]
type = "page"
""")
    result = ingest_file(con, path, "events", settings=SETTINGS, mapping=mapping)
    assert (result.loaded, result.rejected) == (2, 0)
    got = con.table("events").order_by("message_id").revenue.to_pyarrow().to_pylist()
    assert got == [99.5, None]  # valid JSON without that member: nothing to read, no reject


def test_unmapped_event_columns_are_kept_in_properties(con, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Columns that feed no canonical column become ``properties``; a row's content hash (its
    ``message_id`` when the file has none) is the one it had before they were kept."""
    plain = tmp_path / "plain.csv"
    plain.write_text("anonymous_id,type,timestamp\na1,page,2025-03-01T10:00:00Z\n")
    extra = tmp_path / "extra.csv"
    extra.write_text("anonymous_id,type,timestamp,page_type,ab test\n"
                     "a1,page,2025-03-01T10:00:00Z,pdp,\n")
    first = ingest_file(con, plain, "events", settings=SETTINGS)
    second = ingest_file(con, extra, "events", settings=SETTINGS)
    assert (first.loaded, second.loaded, second.duplicates, second.ignored_columns) == (
        1, 0, 1, [])
    extra2 = tmp_path / "extra2.csv"
    extra2.write_text("anonymous_id,type,timestamp,page_type,ab test\n"
                      "a2,page,2025-03-01T10:00:00Z,pdp,\n")
    assert ingest_file(con, extra2, "events", settings=SETTINGS).loaded == 1
    stored = con.table("events").filter(lambda t: t.anonymous_id == "a2").to_pyarrow()
    assert json.loads(stored["properties"][0].as_py()) == {"page_type": "pdp", "ab test": None}


def test_ndjson_deal_keys_no_column_reads_are_kept_in_properties(con, tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "deals.ndjson"
    path.write_text(
        json.dumps({"deal_id": "d1", "closedAt": "2025-03-01", "sdr_id": "s7",
                    "segment": {"name": "b2b"}}) + "\n"
        + json.dumps({"deal_id": "d2", "closed_at": "2025-03-02",
                      "properties": {"lead_type": "online"}, "sdr_id": "s8"}) + "\n"
        + json.dumps({"deal_id": "d3", "closed_at": "2025-03-03"}) + "\n"
    )
    result = ingest_file(con, path, "deals", settings=SETTINGS)
    assert result.loaded == 3
    got = con.table("deals").order_by("deal_id").properties.to_pyarrow().to_pylist()
    assert [json.loads(p) if p else None for p in got] == [
        {"sdr_id": "s7", "segment": {"name": "b2b"}}, {"lead_type": "online", "sdr_id": "s8"},
        None]


@pytest.mark.parametrize(("text", "message"), [
    ("[event_type.buy.columns]\nrevenue = 'x'\n", "did you mean 'event_types'"),
    ("[event_types.buy]\ncolums = { revenue = 'x' }\n", "did you mean 'columns'"),
    ("[event_types.buy.columns]\nrevnue = 'x'\n", "did you mean 'revenue'"),
    ("[columns]\nanonymous_idd = 'x'\n", "did you mean 'anonymous_id'"),
    ("[options]\ntimestamp_fmt = '%Y'\n", "did you mean 'timestamp_format'"),
    ("[event_types.buy.columns]\nevent = 'x'\n", "use rename"),
    ("[event_types.buy]\nrename = ''\n", "non-empty event name"),
    ("[event_types.buy]\ntype = 'pages'\n", "did you mean 'page'"),
    ("[event_types.buy.defaults]\ntype = 'page'\n", 'type = "page"'),
    ("[columns]\nrevenue = '$.[0]'\n", "not a JSON path"),
])
def test_mapping_mistakes_name_the_nearest_valid_name(tmp_path, text: str, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(MappingError, match=re.escape(message)):
        mapping_from(tmp_path, text)


def test_event_types_are_refused_for_other_kinds(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(MappingError, match="--kind events only, not 'deals'"):
        mapping_from(tmp_path, "[event_types.buy.defaults]\ncurrency = 'USD'\n", kind="deals")


def puffy_reference(files: list[Path]) -> dict[str, object]:
    """The figures the documented mapping must give, computed with pandas from the raw files
    (an independent reading: Python's json, not the engine's)."""
    import pandas as pd

    frame = pd.concat([pd.read_csv(f, dtype=str, keep_default_na=False) for f in files])
    device = frame.get("client_id", "").str.strip().replace("", None).combine_first(
        frame.get("clientId", "").str.strip().replace("", None))
    data = [json.loads(s) if s else {} for s in frame.event_data]
    frame = frame.assign(device=device.to_numpy(),
                         revenue=[d.get("revenue") for d in data],
                         order=[d.get("transaction_id") for d in data],
                         hashed=[d.get("user_email") for d in data])
    purchases = frame[frame.event_name == "checkout_completed"]
    linked = frame.dropna(subset=["device", "hashed"]).groupby("hashed").device.nunique()
    return {
        "records": len(frame),
        "no_device": int(frame.device.isna().sum()),
        "no_id": int((frame.device.isna() & frame.hashed.isna()).sum()),
        "purchases": len(purchases),
        "revenue": round(float(pd.to_numeric(purchases.revenue).sum()), 2),
        "zero_revenue": int((pd.to_numeric(purchases.revenue) == 0).sum()),
        "orders": purchases.order.nunique(),
        "purchase_emails": purchases.hashed.nunique(),
        "exact_duplicates": int(frame.duplicated().sum()),
        # page_viewed rows that load: with an id, the exact duplicate once
        "page_views": int(((frame.event_name == "page_viewed") & ~frame.duplicated()
                           & (frame.device.notna() | frame.hashed.notna())).sum()),
        "multi_device_emails": int((linked > 1).sum()),
        "max_devices": int(linked.max()),
    }


@pytest.mark.duckdb_only(reason="50,000 real rows and a full prepare are a data-set check, not "
                          "an engine check: the JSON-path, event-type and hashing logic runs "
                          "on both engines in the tests above")
def test_documented_puffy_mapping_loads_the_real_export(duck, tmp_path, shared_data) -> None:  # type: ignore[no-untyped-def]
    """The Puffy block of docs/ingest.md, on the 14 raw files, against SOURCE.md's figures and
    against pandas; then prepare links devices through the hashed e-mails.

    DuckDB only: 50,000 real rows and a full prepare run are a data-set check, not an engine
    check (the JSON-path, event-type and hashing logic runs on both engines above and in
    tests/prepare/test_hashed_identifiers.py).
    """
    from touchline.prepare import run_prepare

    files = sorted((shared_data / "puffy-ecommerce-events" / "raw").glob("*.csv.gz"))
    assert len(files) == 14
    block = next(b for b in docs_mappings() if "email_filled_on_popup" in b)
    mapping = mapping_from(tmp_path, block)
    settings = Settings(database_url="duckdb://", temp_directory=tmp_path)
    results = [ingest_file(duck, f, "events", settings=settings, mapping=mapping) for f in files]
    ref = puffy_reference(files)
    # SOURCE.md's figures, and the same from pandas
    assert (ref["records"], ref["no_device"], ref["purchases"], ref["revenue"],
            ref["zero_revenue"], ref["orders"], ref["purchase_emails"]) == (
        49_963, 2_908, 294, 294_461.4, 10, 290, 277)
    assert (ref["no_id"], ref["exact_duplicates"]) == (2_906, 1)
    assert sum(r.rows_read for r in results) == ref["records"]
    assert sum(r.rejects_by_reason["missing_id"] for r in results) == ref["no_id"]
    assert sum(r.rejected for r in results) == ref["no_id"]
    assert sum(r.duplicates for r in results) == ref["exact_duplicates"]
    events = duck.table("events")
    assert events.count().execute() == 49_963 - 2_906 - 1
    # [event_types.page_viewed] type = "page": page views, as pandas counts them
    pages = events.filter(events.type == "page")
    assert pages.count().execute() == ref["page_views"] == 43_068
    assert set(pages.event.to_pyarrow().to_pylist()) == {"page_viewed"}
    assert events.filter(events.gclid.notnull()).count().execute() >= 8_000  # ad clicks
    purchases = events.filter(events.event == "checkout_completed")
    stats = purchases.aggregate(
        n=purchases.count(), with_revenue=purchases.revenue.count(),
        revenue=purchases.revenue.sum(), zero=(purchases.revenue == 0).sum(),
        orders=purchases.properties.cast("json")["transaction_id"].str.nunique(),
        emails=purchases.email_sha256.nunique(),
    ).to_pyarrow().to_pylist()[0]
    assert (stats["n"], stats["with_revenue"], round(stats["revenue"], 2), stats["zero"],
            stats["orders"], stats["emails"]) == (294, 294, 294_461.4, 10, 290, 277)
    assert duck.table("rejects").filter(lambda t: t.reason_code == "missing_id").count(
        ).execute() == 2_906

    run_prepare(duck, settings)
    links = duck.table("identity_links").filter(lambda t: t.status == "linked").to_pandas()
    ends = [(a, b) for a, b in zip(links.identifier_a, links.identifier_b, strict=True)]
    devices: dict[str, set[str]] = {}
    for a, b in ends + [(b, a) for a, b in ends]:
        if a.startswith("email_sha256:") and b.startswith("anon:"):
            devices.setdefault(a, set()).add(b)
    per_email = sorted(len(d) for d in devices.values())
    assert (sum(n > 1 for n in per_email), per_email[-1]) == (
        ref["multi_device_emails"], ref["max_devices"])
    assert (ref["multi_device_emails"], ref["max_devices"]) == (17, 3)  # SOURCE.md
    # an order counts once (294 purchases, 290 transaction ids), and the 10 zero-revenue
    # checkouts are audited, not silently dropped
    rejects, audit = duck.table("rejects"), duck.table("audit")
    assert rejects.filter(rejects.reason_code == "duplicate_order_id").count().execute() == 4
    zero = audit.filter(audit.reason_code == "zero_revenue_order")
    assert zero.row_count.sum().execute() == 10
    touches = duck.table("touches")
    bought = touches.filter(touches.event == "checkout_completed")
    assert (bought.count().execute(), bought.order_id.nunique().execute()) == (290, 290)
    # the page-view KPIs count them (bots are dropped by prepare: fewer than loaded)
    viewed = duck.table("sessions").pageview_count.sum().execute()
    assert 0 < viewed <= ref["page_views"]
    assert viewed == 36_938  # docs/ingest.md
