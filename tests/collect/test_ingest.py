"""File ingest: good rows land, bad rows become rejects with file, line and reason, and
re-ingesting adds nothing. Table-writing tests run on DuckDB and Spark."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from factories import CLI_OWN_CONNECTION

from touchline import engine, store
from touchline.collect.ingest import ingest_file
from touchline.collect.mapping import load_mapping, normalise_name
from touchline.config import Settings
from touchline.errors import InputError, MappingError

HEADER = "message_id,type,event,anonymous_id,user_id,timestamp,url,revenue"
SETTINGS = Settings(database_url="duckdb://", max_line_bytes=4096, ingest_chunk_rows=300)


def _good(i: int) -> str:
    return f"m{i},track,Viewed,a{i % 97},,2025-03-0{1 + i % 9}T10:{i % 60:02d}:00Z,https://x.io/p{i},"


# (reason_code, line text) for each kind of bad row; 37 in all
BAD_KINDS: list[tuple[str, str]] = (
    [("bad_timestamp", "b{n},track,Viewed,a1,,yesterday,,")] * 6
    + [("missing_id", "b{n},track,Viewed,,,2025-03-01T10:00:00Z,,")] * 5
    + [("wrong_field_count", "b{n},track,Viewed,a1")] * 5
    + [("bad_number", "b{n},track,Buy,a1,,2025-03-01T10:00:00Z,,12 dollars")] * 5
    + [("invalid_encoding", "b{n},track,Caf\udce9,a1,,2025-03-01T10:00:00Z,,")] * 4
    + [("bad_type", "b{n},click,Viewed,a1,,2025-03-01T10:00:00Z,,")] * 4
    + [("missing_event", "b{n},track,,a1,,2025-03-01T10:00:00Z,,")] * 4
    + [("line_too_long",
        "b{n},track,Viewed,a1,,2025-03-01T10:00:00Z,https://x.io/?q=" + "x" * 5000 + ",")] * 2
    + [("missing_type", "b{n},,Viewed,a1,,2025-03-01T10:00:00Z,,")] * 2
)


def write_messy_csv(path: Path) -> dict[int, str]:
    """1,000 good rows with 37 bad ones spread through; returns {line: reason_code}."""
    assert len(BAD_KINDS) == 37
    lines, expected, good, bad = [HEADER], {}, 0, 0
    while good < 1000 or bad < 37:
        if bad < 37 and (good % 27 == 13 or good >= 1000):
            code, text = BAD_KINDS[bad]
            lines.append(text.format(n=bad))
            expected[len(lines)] = code
            bad += 1
        lines.append(_good(good))
        good += 1
        if good > 1000:
            lines.pop()
            good -= 1
    data = "\n".join(lines).encode("utf-8", errors="surrogateescape") + b"\n"
    path.write_bytes(data)
    return expected


def _rejects(con) -> dict[int, str]:
    got = con.table("rejects").select("line", "reason_code").to_pyarrow().to_pylist()
    return {r["line"]: r["reason_code"] for r in got}


def test_messy_csv_loads_good_rows_and_rejects_each_bad_one_with_its_line(con, tmp_path) -> None:
    path = tmp_path / "events.csv"
    expected = write_messy_csv(path)
    result = ingest_file(con, path, "events", settings=SETTINGS)
    assert (result.loaded, result.rejected, result.duplicates) == (1000, 37, 0)
    assert con.table("events").count().to_pyarrow().as_py() == 1000
    assert _rejects(con) == expected
    reasons = con.table("rejects").select("reason", "source", "step").to_pyarrow().to_pylist()
    assert all(r["source"] == str(path) and r["step"] == "ingest:events" for r in reasons)
    assert any("'yesterday' is not an ISO 8601 timestamp" in r["reason"] for r in reasons)

    again = ingest_file(con, path, "events", settings=SETTINGS)
    assert (again.loaded, again.duplicates) == (0, 1000)
    assert con.table("events").count().to_pyarrow().as_py() == 1000
    assert con.table("rejects").count().to_pyarrow().as_py() == 37
    assert con.table("ingests").count().to_pyarrow().as_py() == 2


def test_overlapping_file_adds_only_new_rows(con, tmp_path) -> None:
    first, second = tmp_path / "a.csv", tmp_path / "b.csv"
    first.write_text("\n".join([HEADER, *(_good(i) for i in range(0, 60))]) + "\n")
    second.write_text("\n".join([HEADER, *(_good(i) for i in range(40, 100))]) + "\n")
    ingest_file(con, first, "events", settings=SETTINGS)
    result = ingest_file(con, second, "events", settings=SETTINGS)
    assert (result.loaded, result.duplicates) == (40, 20)
    assert con.table("events").count().to_pyarrow().as_py() == 100


def test_duplicate_inside_a_file_is_kept_once_and_explained(con, tmp_path) -> None:
    path = tmp_path / "dupes.csv"
    path.write_text("\n".join([HEADER, _good(1), _good(2), _good(1)]) + "\n")
    result = ingest_file(con, path, "events", settings=SETTINGS)
    assert (result.loaded, result.duplicates) == (2, 1)
    row = con.table("rejects").to_pyarrow().to_pylist()[0]
    assert (row["line"], row["reason_code"], row["ref"]) == (4, "duplicate_in_file", "m1")
    assert "line 2" in row["reason"]


def test_rows_without_message_id_dedupe_on_content(con, tmp_path) -> None:
    path = tmp_path / "noid.csv"
    row = ",page,,a1,,2025-03-01T10:00:00Z,https://x.io/,"
    path.write_text("\n".join([HEADER, row, row, row.replace("a1", "a2")]) + "\n")
    result = ingest_file(con, path, "events", settings=SETTINGS)
    assert (result.loaded, result.duplicates) == (2, 1)
    ids = con.table("events").message_id.to_pyarrow().to_pylist()
    assert all(i.startswith("h-") and len(i) == 34 for i in ids)


def _ids(con, table: str, column: str) -> list[str]:  # type: ignore[no-untyped-def]
    return sorted(con.table(table)[column].to_pyarrow().to_pylist())


def test_a_file_failing_mid_commit_leaves_the_warehouse_as_it_was(
    con, tmp_path, monkeypatch
) -> None:
    """Rows, rejects and the run record are written all or nothing (``engine.all_or_nothing``:
    a transaction on DuckDB; on Spark the files added since the commit began are deleted): a
    failure once the new rows and rejects are in, writing the run record, takes them out."""
    first = tmp_path / "a.csv"
    first.write_text("\n".join([HEADER, *(_good(i) for i in range(0, 20))]) + "\n")
    ingest_file(con, first, "events", settings=SETTINGS)
    kept = {"events": "message_id", "rejects": "reject_id", "ingests": "ingest_id"}
    before = {t: _ids(con, t, c) for t, c in kept.items()}
    second = tmp_path / "b.csv"
    bad = "b1,track,Viewed,a1,,yesterday,,"
    second.write_text("\n".join([HEADER, *(_good(i) for i in range(10, 40)), bad]) + "\n")

    def disk_full(*args: object) -> None:
        raise OSError("disk full")

    with monkeypatch.context() as patch:
        patch.setattr(engine, "append", disk_full)
        with pytest.raises(OSError, match="disk full"):
            ingest_file(con, second, "events", settings=SETTINGS)
    assert {t: _ids(con, t, c) for t, c in kept.items()} == before
    result = ingest_file(con, second, "events", settings=SETTINGS)  # and then it loads whole
    assert (result.loaded, result.duplicates, result.rejected) == (20, 10, 1)
    assert len(_ids(con, "events", "message_id")) == 40


def write_messy_ndjson(path: Path) -> dict[int, str]:
    base = {"type": "page", "anonymousId": "a1", "timestamp": "2025-03-01T10:00:00.000Z",
            "context": {"page": {"url": "https://x.io/?utm_source=Google&gclid=G1"}}}
    lines, expected = [], {}
    for i in range(50):
        lines.append(json.dumps({**base, "messageId": f"m{i}"}))
    bad = ['{"type": "page", "anonymousId": ', "[1, 2, 3]",
           json.dumps({**base, "messageId": "x1", "type": "track"}),
           json.dumps({**base, "messageId": "x2", "timestamp": "03/01/2025 25:00"}),
           "", json.dumps({**base, "messageId": "x3", "anonymousId": None})]
    codes = ["invalid_json", "not_an_object", "missing_event", "bad_timestamp", None, "missing_id"]
    for offset, text in enumerate(bad):
        lines.insert(10 + offset * 7, text)
    for number, text in enumerate(lines, start=1):
        if text in bad and codes[bad.index(text)]:
            expected[number] = codes[bad.index(text)]
    with gzip.open(path, "wt") as handle:
        handle.write("\n".join(lines) + "\n")
    return expected


def test_segment_ndjson_maps_context_and_rejects_bad_lines(con, tmp_path) -> None:
    path = tmp_path / "events.ndjson.gz"
    expected = write_messy_ndjson(path)
    result = ingest_file(con, path, "events", settings=SETTINGS)
    assert (result.loaded, result.rejected) == (50, 5)
    assert _rejects(con) == expected
    row = con.table("events").filter(lambda t: t.message_id == "m0").to_pyarrow().to_pylist()[0]
    assert (row["utm_source"], row["gclid"], row["type"]) == ("Google", "G1", "page")
    assert json.loads(row["context"])["page"]["url"].startswith("https://x.io/")


def test_a_flat_ndjson_line_reads_its_columns_by_name_as_its_csv_does(con, tmp_path) -> None:
    """Line 1 is a flat export (the CSV's columns as keys, after a byte-order mark), line 2 a
    Segment message: each column read from its own key or from Segment's place for it."""
    path = tmp_path / "flat.ndjson"
    flat = {"anonymous_id": "a1", "type": "page", "timestamp": "2025-03-01T10:00:00Z",
            "url": "https://x.io/?utm_source=news", "referrer": "https://google.com/",
            "user_agent": "Mozilla/5.0 X", "title": "Home", "email": "a@x.io",
            "message_id": "m1"}
    segment = {"anonymousId": "a2", "type": "page", "timestamp": "2025-03-01T11:00:00Z",
               "messageId": "m2", "context": {"page": {"url": "https://x.io/b",
                                                       "referrer": "https://bing.com/"},
                                              "userAgent": "Mozilla/5.0 Y"}}
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(flat).encode() + b"\n"
                     + json.dumps(segment).encode() + b"\n")
    result = ingest_file(con, path, "events", settings=SETTINGS)
    assert (result.loaded, result.rejected) == (2, 0)
    rows = {r["message_id"]: r for r in con.table("events").to_pyarrow().to_pylist()}
    got = {m: (r["url"], r["referrer"], r["user_agent"], r["title"], r["email"],
               r["utm_source"]) for m, r in rows.items()}
    assert got == {
        "m1": ("https://x.io/?utm_source=news", "https://google.com/", "Mozilla/5.0 X", "Home",
               "a@x.io", "news"),
        "m2": ("https://x.io/b", "https://bing.com/", "Mozilla/5.0 Y", None, None, None)}


def test_ndjson_chunks_that_fill_different_columns_keep_each_rows_own_values(
        con, tmp_path) -> None:
    """Each chunk is staged without the columns empty on all its rows: a column only a later
    chunk fills keeps its values there and is NULL in the earlier rows, and the later chunks'
    bad line and in-file duplicate are still rejected, each with its line and reason."""
    settings = Settings(database_url="duckdb://", max_line_bytes=4096, ingest_chunk_rows=2)
    base = {"type": "page", "anonymousId": "a1", "timestamp": "2025-03-01T10:00:00Z"}
    lines = [{**base, "messageId": "m1"}, {**base, "messageId": "m2"},
             {**base, "messageId": "m3", "context": {"page": {"title": "Home"}}},
             {**base, "messageId": "m4", "timestamp": "yesterday"},
             {**base, "messageId": "m1", "userId": "u1"}]
    path = tmp_path / "events.ndjson"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    result = ingest_file(con, path, "events", settings=settings)
    assert (result.loaded, result.rejected, result.duplicates) == (3, 1, 1)
    rows = con.table("events").select("message_id", "title", "user_id", "timestamp")
    got = {r["message_id"]: (r["title"], r["user_id"]) for r in rows.to_pyarrow().to_pylist()}
    assert got == {"m1": (None, None), "m2": (None, None), "m3": ("Home", None)}
    rejects = con.table("rejects").select("line", "field", "reason_code", "ref")
    assert sorted(tuple(r.values()) for r in rejects.to_pyarrow().to_pylist()) == [
        (4, "timestamp", "bad_timestamp", None), (5, "message_id", "duplicate_in_file", "m1")]


def test_parquet_keeps_types_and_row_numbers(con, tmp_path) -> None:
    path = tmp_path / "spend.parquet"
    table = pa.table({
        "date": pa.array(["2025-01-01", "2025-01-02", "not a date"]),
        "utm_source": ["google", "bing", "google"],
        "cost": pa.array([10.5, None, 3.0]),
        "clicks": pa.array([3, 4, 5], pa.int64()),
    })
    pq.write_table(table, path)
    result = ingest_file(con, path, "spend", settings=SETTINGS)
    assert (result.loaded, result.rejected) == (1, 2)
    assert _rejects(con) == {2: "missing_cost", 3: "bad_date"}
    got = con.table("spend").to_pyarrow().to_pylist()[0]
    assert (str(got["date"]), got["cost"], got["clicks"]) == ("2025-01-01", 10.5, 3)


def _parquet_events(path: Path) -> None:
    """Line 1 good, line 2 good without a message id, line 3 without a timestamp (rejected),
    line 4 line 1's message id again, line 5 line 2 again, line 6 line 2 but for its URL's
    utm_term; each URL holds a parameter no column gives."""
    pq.write_table(pa.table({
        "message_id": ["m1", None, "m3", "m1", None, None],
        "type": ["track"] * 6,
        "event": ["Viewed"] * 6,
        "anonymous_id": ["a1", "a2", "a3", "a1", "a2", "a2"],
        "timestamp": ["2025-03-01T09:00:00Z", "2025-03-01T10:00:00Z", None,
                      "2025-03-01T09:00:05Z", "2025-03-01T10:00:00Z", "2025-03-01T10:00:00Z"],
        "url": ["https://x.io/?utm_term=shoes", "https://x.io/p?utm_term=boots&fbclid=F2",
                "https://x.io/q?utm_content=c3", "https://x.io/?utm_term=shoes",
                "https://x.io/p?utm_term=boots&fbclid=F2",
                "https://x.io/p?utm_term=sandals&fbclid=F2"],
    }), path)


def test_a_parquet_row_without_message_id_is_keyed_by_its_whole_content(con, tmp_path) -> None:
    """The content hash counts the URL's parameters: md5 of every column but the key, source
    and ingest id, in table order, joined by chr(31), empty for null (contact_id,
    email_sha256, phone_sha256 and properties only when set)."""
    path = tmp_path / "events.parquet"
    _parquet_events(path)
    result = ingest_file(con, path, "events", settings=SETTINGS)
    assert (result.loaded, result.rejected, result.duplicates) == (3, 1, 2)
    assert _rejects(con) == {3: "missing_timestamp", 4: "duplicate_in_file",
                             5: "duplicate_in_file"}
    content = [
        "track", "Viewed", "a2", "", "", "",  # type, event, anonymous_id, user, group, previous
        "2025-03-01 10:00:00", "", "", "",  # timestamp and the three other clocks
        "https://x.io/p?utm_term=boots&fbclid=F2", "", "", "",  # url, path, referrer, title
        "", "", "", "boots", "", "",  # utm_source ... utm_id: utm_term from the URL
        "", "", "", "", "F2", "", "", "",  # gclid ... ttclid: fbclid from the URL
        "", "", "", "", "", "", "",  # email, phone, email_domain, user_agent, ip, revenue, currency
        "", "", "", "",  # traits, context, write_key, consent
    ]
    line_6 = [text.replace("boots", "sandals") for text in content]
    hashed = {"h-" + hashlib.md5("\x1f".join(values).encode()).hexdigest(): values[17]
              for values in (content, line_6)}
    rows = con.table("events").select("message_id", "utm_term", "fbclid").to_pyarrow()
    assert {r["message_id"]: (r["utm_term"], r["fbclid"]) for r in rows.to_pylist()} == {
        "m1": ("shoes", None), **{key: (term, "F2") for key, term in hashed.items()}}


def test_a_rejected_parquet_row_keeps_its_checked_columns_as_raw_text(con, tmp_path) -> None:
    path = tmp_path / "events.parquet"
    _parquet_events(path)
    ingest_file(con, path, "events", settings=SETTINGS)
    raw = con.table("rejects").filter(lambda t: t.line == 3).raw.to_pyarrow().to_pylist()
    checked = json.loads(raw[0])
    assert (checked["_line"], checked["_problem"]["code"], checked["message_id"]) == (
        3, "missing_timestamp", "m3")
    assert (checked["url"], checked["utm_content"], checked["timestamp"]) == (
        "https://x.io/q?utm_content=c3", "c3", None)


@pytest.mark.duckdb_only(
    reason="only DuckDB reads a Parquet file twice (its checks, then its rows at the insert); "
           "Spark stages the rows once")
def test_a_parquet_file_replaced_while_it_loads_loads_nothing(duck, tmp_path, monkeypatch):
    con = duck
    from touchline.collect import ingest

    path = tmp_path / "spend.parquet"
    pq.write_table(pa.table({"date": ["2025-01-01"], "utm_source": ["google"],
                             "cost": [10.5], "clicks": pa.array([3], pa.int64())}), path)
    checked = ingest._stage_parquet_in_engine

    def replaced_after_its_checks(stage, parser, file):
        rows = checked(stage, parser, file)
        pq.write_table(pa.table({"date": ["2025-02-01", "2025-02-02"],
                                 "utm_source": ["bing", "bing"], "cost": [1.0, 2.0],
                                 "clicks": pa.array([1, 2], pa.int64())}), file)
        return rows

    monkeypatch.setattr(ingest, "_stage_parquet_in_engine", replaced_after_its_checks)
    with pytest.raises(InputError, match=r"spend\.parquet: the file changed while it was being"):
        ingest_file(con, path, "spend", settings=SETTINGS)
    assert con.table("spend").count().execute() == 0
    assert con.table("ingests").count().execute() == 0
    monkeypatch.undo()  # written once: it loads
    assert ingest_file(con, path, "spend", settings=SETTINGS).loaded == 2


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "is empty"),
        (b"\n\n", "no header"),
        (b"a,b\n1,2\n", "the header \\['a', 'b'\\] names no column of table 'calls'"),
        (b"call_id,b\n1,2\n", "missing column"),
    ],
)
def test_unreadable_files_raise_input_error_and_write_nothing(con, tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    kind = "calls" if b"," in content else "events"
    with pytest.raises(InputError, match=message):
        ingest_file(con, path, kind, settings=SETTINGS)
    assert "calls" not in con.list_tables() or con.table("calls").count().execute() == 0


def test_truncated_gzip_loads_nothing(con, tmp_path) -> None:
    full = gzip.compress(("\n".join([HEADER, *(_good(i) for i in range(5000))]) + "\n").encode())
    path = tmp_path / "cut.csv.gz"
    path.write_bytes(full[: len(full) // 2])
    with pytest.raises(InputError, match="truncated or corrupt"):
        ingest_file(con, path, "events", settings=SETTINGS)
    assert "events" not in con.list_tables() or con.table("events").count().execute() == 0


def test_header_only_file_loads_zero_rows(con, tmp_path) -> None:
    path = tmp_path / "empty.csv"
    path.write_text(HEADER + "\n")
    result = ingest_file(con, path, "events", settings=SETTINGS)
    assert (result.rows_read, result.loaded, result.rejected) == (0, 0, 0)


def test_huge_line_is_rejected_without_reading_it_whole(con, tmp_path) -> None:
    path = tmp_path / "huge.ndjson"
    with path.open("w") as handle:
        handle.write('{"type":"page","anonymousId":"a","timestamp":"2025-01-01T00:00:00Z"}\n')
        handle.write('{"type":"page","pad":"' + "x" * (8 << 20) + '"}\n')
        handle.write('{"type":"page","anonymousId":"b","timestamp":"2025-01-01T00:00:00Z"}\n')
    settings = Settings(database_url="duckdb://", max_line_bytes=1 << 20)
    result = ingest_file(con, path, "events", settings=settings)
    assert (result.loaded, result.rejected) == (2, 1)
    assert _rejects(con) == {2: "line_too_long"}


def _page_view_loaded(con, tmp_path: Path, context: dict) -> dict:
    """One page view with ``context`` ingested from an NDJSON file: its stored row."""
    path = tmp_path / "events.ndjson"
    path.write_text(json.dumps({
        "messageId": "m1", "type": "page", "anonymousId": "a1",
        "timestamp": "2025-03-01T10:00:00Z", "context": context,
    }) + "\n")
    assert ingest_file(con, path, "events", settings=SETTINGS).loaded == 1
    return con.table("events").to_pyarrow().to_pylist()[0]


def test_url_query_fills_utms_and_click_ids_the_payload_lacks(con, tmp_path) -> None:
    # keys compare lower-cased, the first of a repeated key wins, values are URL-decoded, an
    # empty value is no value, and a name seen only in the path is not a parameter
    url = ("https://x.io/utm_term/gclid?UTM_Source=Google%20Ads&utm_source=second&gclid=G1"
           "&fbclid=&utm_medium=cpc+paid")
    row = _page_view_loaded(con, tmp_path, {"page": {"url": url}})
    got = {k: row[k] for k in ("utm_source", "utm_medium", "utm_term", "gclid", "fbclid")}
    assert got == {"utm_source": "Google Ads", "utm_medium": "cpc paid", "utm_term": None,
                   "gclid": "G1", "fbclid": None}


def test_url_query_parameter_is_the_first_pair_whose_whole_key_matches(con, tmp_path) -> None:
    # a longer key holding the name is another parameter; a key without "=" is an empty value
    # (and, being first, wins); a value ends at its next "="; the query ends at "#"; a value
    # the payload gives wins over the URL's
    url = ("https://x.io/p?utm_sourcex=1&utm_source=s&utm_campaign&utm_campaign=z"
           "&utm_content=b=c&gclid=url#utm_id=no")
    row = _page_view_loaded(con, tmp_path, {"page": {"url": url},
                                            "campaign": {"gclid": "payload"}})
    got = {k: row[k] for k in ("utm_source", "utm_campaign", "utm_content", "utm_id", "gclid")}
    assert got == {"utm_source": "s", "utm_campaign": None, "utm_content": "b",
                   "utm_id": None, "gclid": "payload"}


def test_mapping_file_renames_and_fills_defaults(con, tmp_path) -> None:
    path = tmp_path / "export.csv"
    path.write_text(
        "clientId,page_url,timestamp,event_name\n"
        "c1,https://x.io/?utm_medium=cpc,2025-02-23T10:00:00.123Z,page_viewed\n"
    )
    mapping_file = tmp_path / "map.toml"
    mapping_file.write_text(
        '[columns]\nanonymous_id = ["client_id", "clientId"]\nurl = "page_url"\n'
        'event = "event_name"\n[defaults]\ntype = "track"\nsource = "web"\n'
    )
    canonical = {c.name for c in store.EVENTS.columns}
    result = ingest_file(con, path, "events", settings=SETTINGS,
                         mapping=load_mapping(mapping_file, canonical=canonical))
    assert result.loaded == 1
    row = con.table("events").to_pyarrow().to_pylist()[0]
    assert (row["anonymous_id"], row["event"], row["utm_medium"], row["source"]) == (
        "c1", "page_viewed", "cpc", "web")
    assert row["timestamp"].microsecond == 123000


def test_ndjson_mapping_paths_of_every_form_read_their_values(con, tmp_path) -> None:
    """An array index, a quoted member with a space, a dotted plain name and an object read
    whole while a path also looks into it: each reads what that path holds."""
    path = tmp_path / "export.ndjson"
    path.write_text(json.dumps({
        "type": "track", "name": "Bought", "timestamp": "2025-03-01T10:00:00Z",
        "messageId": "p1", "items": [{"price": "9.5"}, {"price": 1}],
        "page info": {"url": "https://x.io/"}, "page": {"title": "T"},
        "ids": {"anon": "a1", "n": 2}}) + "\n")
    mapping_file = tmp_path / "map.toml"
    mapping_file.write_text(
        '[columns]\nrevenue = "$.items[0].price"\nurl = \'$."page info".url\'\n'
        'title = "page.title"\nanonymous_id = "$.ids.anon"\nproperties = "$.ids"\n'
        'event = "name"\n'
    )
    canonical = {c.name for c in store.EVENTS.columns}
    result = ingest_file(con, path, "events", settings=SETTINGS,
                         mapping=load_mapping(mapping_file, canonical=canonical))
    assert (result.loaded, result.rejected) == (1, 0)
    row = con.table("events").to_pyarrow().to_pylist()[0]
    assert {k: row[k] for k in ("revenue", "url", "title", "anonymous_id", "properties",
                                "event")} == {
        "revenue": 9.5, "url": "https://x.io/", "title": "T", "anonymous_id": "a1",
        "properties": '{"anon":"a1","n":2}', "event": "Bought"}


def test_ndjson_mapping_paths_read_through_json_encoded_members(con, tmp_path) -> None:
    """An export whose ``event_data`` is an object's JSON *text* (Segment/Snowplow-like encoded
    properties) is read through: the text is decoded and the rest of the path read inside it.
    A member that holds no object nor its text loses what was read from it and says so: a
    ``bad_json_partial`` reject with the line, the member and the row's key, or ``bad_json``
    when the row's only id came from it."""
    path = tmp_path / "export.ndjson"
    base = {"type": "track", "event": "Bought", "timestamp": "2025-03-01T10:00:00Z"}
    lines = [
        {**base, "messageId": "m1", "anonymousId": "a1",
         "event_data": json.dumps({"revenue": 12.5, "page": {"title": "Cart"}})},
        {**base, "messageId": "m2", "anonymousId": "a2",
         "event_data": {"revenue": 7, "page": {"title": "Obj"}}},
        {**base, "messageId": "m3", "anonymousId": "a3", "event_data": "not json {"},
        {**base, "messageId": "m4", "anonymousId": "a4"},
        {**base, "messageId": "m5", "anonymousId": "a5", "event_data": '{"revenue": 3'},
        {**base, "messageId": "m6", "event_data": "broken"},
        {**base, "messageId": "m7", "anonymousId": "a7", "event_data": 5},
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    mapping_file = tmp_path / "map.toml"
    mapping_file.write_text('[columns]\nrevenue = "$.event_data.revenue"\n'
                            'title = "$.event_data.page.title"\n'
                            'anonymous_id = ["anonymousId", "$.event_data.cid"]\n')
    canonical = {c.name for c in store.EVENTS.columns}
    result = ingest_file(con, path, "events", settings=SETTINGS,
                         mapping=load_mapping(mapping_file, canonical=canonical))
    assert (result.loaded, result.rejected) == (6, 1)
    rows = {r["message_id"]: (r["revenue"], r["title"])
            for r in con.table("events").to_pyarrow().to_pylist()}
    assert rows == {"m1": (12.5, "Cart"), "m2": (7.0, "Obj"), "m3": (None, None),
                    "m4": (None, None), "m5": (None, None), "m7": (None, None)}
    rejects = con.table("rejects").to_pyarrow().to_pylist()
    assert sorted((r["line"], r["field"], r["reason_code"], r["ref"]) for r in rejects) == [
        (3, "event_data", "bad_json_partial", "m3"),
        (5, "event_data", "bad_json_partial", "m5"),
        (6, "anonymous_id", "bad_json", None),
        (7, "event_data", "bad_json_partial", "m7"),
    ]


def test_rejects_keep_the_record_as_written(con, tmp_path) -> None:
    """``rejects.raw`` is the record as the file has it: an NDJSON line with its spacing and
    both copies of a repeated key (not a re-serialised object), a CSV record with its quotes
    and line breaks, and the start of an overlong line with a marker saying it was cut."""
    settings = Settings(database_url="duckdb://", max_line_bytes=1024, ingest_chunk_rows=300)
    twice = ('{"type": "track",  "event": "A", "anonymousId": "a1", "anonymousId": "a2", '
             '"timestamp": "2025-03-01T10:00:00Z"}')
    late = '{ "type":"track", "event":"A", "anonymousId":"a1", "timestamp":"yesterday" }'
    long = '{"type":"track","event":"A","anonymousId":"a1","x":"' + "y" * 1100 + '"}'
    path = tmp_path / "e.ndjson"
    path.write_text("\n".join([twice, late, long]) + "\n")
    ingest_file(con, path, "events", settings=settings)
    csv_path = tmp_path / "e.csv"
    quoted = 'm1,track,"Viewed, twice\nover lines",a1,yesterday'
    csv_long = "m2,track,A,a1,2025-03-01T10:00:00Z" + "," * 0 + "x" * 1100
    csv_path.write_text("message_id,type,event,anonymous_id,timestamp\n"
                        f"{quoted}\n{csv_long}\n")
    ingest_file(con, csv_path, "events", settings=settings)
    rows = con.table("rejects").to_pyarrow().to_pylist()
    got = {(Path(r["source"]).suffix, r["line"], r["reason_code"]): r["raw"] for r in rows}
    cut = " … [cut: the line is longer than 1,024 bytes]"
    assert got == {
        (".ndjson", 1, "duplicate_key"): twice,
        (".ndjson", 2, "bad_timestamp"): late,
        (".ndjson", 3, "line_too_long"): long[:1024] + cut,
        (".csv", 2, "bad_timestamp"): quoted,
        (".csv", 4, "line_too_long"): csv_long[:1024] + cut,
    }


def test_mapping_errors_name_the_file_and_key(tmp_path) -> None:
    bad = tmp_path / "m.toml"
    bad.write_text('[columns]\nnot_a_column = "x"\n')
    with pytest.raises(MappingError, match="not_a_column"):
        load_mapping(bad, canonical={"a"})
    bad.write_text("[columns\n")
    with pytest.raises(MappingError, match="not valid TOML"):
        load_mapping(bad, canonical={"a"})


@pytest.mark.parametrize(("name", "expected"), [
    ("anonymousId", "anonymous_id"), ("Anonymous ID", "anonymous_id"),
    ("utm-source", "utm_source"), ("sentAt", "sent_at"), ("li_fat_id", "li_fat_id"),
])
def test_normalise_name(name: str, expected: str) -> None:
    assert normalise_name(name) == expected


def test_offline_events_named_only_by_email_phone_or_crm_contact_load(con, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A CRM export or call log may know the person only by an e-mail, a phone number or its
    own contact id; such rows load (prepare files them under that identifier). A row with none
    of the ids is still refused."""
    path = tmp_path / "crm.csv"
    path.write_text("message_id,type,event,email,phone,contact_id,timestamp,source\n"
                    "c1,track,Lead Created,ann@acme.com,,,2025-03-01T10:00:00Z,crm\n"
                    "c2,track,Call,,+12025550143,,2025-03-01T10:00:00Z,calls\n"
                    "c3,track,Lead Qualified,,,hs-77,2025-03-01T10:00:00Z,crm\n"
                    "c4,track,Lead Lost,,,,2025-03-01T10:00:00Z,crm\n")
    result = ingest_file(con, path, "events", settings=SETTINGS)
    assert dict(result.rejects_by_reason) == {"missing_id": 1}
    loaded = con.table("events").order_by("message_id").to_pandas()
    assert loaded.message_id.tolist() == ["c1", "c2", "c3"]
    assert loaded.contact_id.tolist()[2] == "hs-77"


def test_a_new_column_leaves_the_content_hash_of_rows_without_it_alone(con, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """``row_hash`` is md5 of the row's columns joined by U+001F, empty for unset ones; a
    column added later (``contact_ids``) joins it only when set, so re-ingesting an export
    loaded by an older version adds nothing twice."""
    import hashlib

    path = tmp_path / "deals.csv"
    path.write_text("deal_id,created_at\nd1,2025-03-05T00:00:00Z\n")
    ingest_file(con, path, "deals", settings=SETTINGS)
    older = [c.name for c in store.DEALS.columns
             if c.name not in ("row_hash", "ingest_id", "source", "contact_ids", "properties")]
    values = {"deal_id": "d1", "created_at": "2025-03-05 00:00:00"}
    expected = hashlib.md5("\x1f".join(values.get(c, "") for c in older).encode()).hexdigest()
    assert con.table("deals").row_hash.to_pandas().tolist() == [expected]
    with_ids = tmp_path / "deals2.csv"
    with_ids.write_text("deal_id,created_at,contact_ids\nd1,2025-03-05T00:00:00Z,hs-1\n")
    ingest_file(con, with_ids, "deals", settings=SETTINGS)
    assert con.table("deals").count().execute() == 2  # set: a different row


def test_a_repeated_key_is_found_in_a_line_laid_out_as_the_lines_around_it(con, tmp_path) -> None:
    """Most lines of an export share a few key layouts, which the ingest recognises whole;
    a line of such a layout but for one repeated key (at the root, in the page, in an object
    of 40 keys, spelled with an escape) is still rejected, in every chunk; a key that differs
    only in case is no repeat."""
    head = '{"type":"track","event":"x","anonymousId":"a","timestamp":"2025-03-01T10:00:00Z",'
    wide = ",".join(f'"k{i}":{i}' for i in range(40))
    shapes = ['"messageId":"{}"}}', '"messageId":"{}","context":{{"page":{{"url":"u"}}}}}}',
              '"messageId":"{}","properties":{{' + wide + "}}}}"]
    repeats = ['"messageId":"{}","type":"page"}}',
               '"messageId":"{}","context":{{"page":{{"url":"u","url":"v"}}}}}}',
               '"messageId":"{}","properties":{{' + wide + ',"k3":0}}}}',
               '"messageId":"{}","\\u0074ype":"page"}}']
    apart = ['"messageId":"{}","Type":"page"}}',
             '"messageId":"{}","properties":{{' + wide + ',"K3":0}}}}']
    lines, expected = [], {}
    for i in range(150):
        lines += [head + shape.format(f"s{i}-{n}") for n, shape in enumerate(shapes)]
        if i % 40 == 39:  # one of each in every chunk of 300 lines
            for n, text in enumerate(repeats):
                lines.append(head + text.format(f"r{i}-{n}"))
                expected[len(lines)] = "duplicate_key"
            lines += [head + text.format(f"c{i}-{n}") for n, text in enumerate(apart)]
    path = tmp_path / "events.ndjson"
    path.write_text("\n".join(lines) + "\n")
    result = ingest_file(con, path, "events", settings=SETTINGS)
    assert (result.loaded, result.rejected) == (len(lines) - len(expected), len(expected))
    assert _rejects(con) == expected


def test_a_rejected_rows_raw_text_keeps_no_secret_and_no_full_ip(con, tmp_path) -> None:
    path = tmp_path / "events.ndjson"
    bad = {"type": "page", "writeKey": "tlw_leaked", "timestamp": "2025-03-01T10:00:00Z",
           "context": {"ip": "198.51.100.23"}, "properties": {"token": "t0k"}}
    path.write_text(json.dumps(bad) + "\n")
    result = ingest_file(con, path, "events", settings=SETTINGS)
    assert (result.loaded, result.rejected) == (0, 1)
    [raw] = con.table("rejects").raw.to_pyarrow().to_pylist()
    assert "tlw_leaked" not in raw and "198.51.100.23" not in raw and "t0k" not in raw
    assert json.loads(raw)["context"] == {"ip": "198.51.100.0"}


def test_a_key_twice_in_one_object_is_rejected_by_file_ingest_as_by_the_loader(
    con, tmp_path
) -> None:
    path = tmp_path / "events.ndjson"
    twice = ('{"type":"track","event":"x","anonymousId":"","anonymousId":"real",'
             '"messageId":"d1","timestamp":"2025-03-01T10:00:00Z"}')
    once = twice.replace('"anonymousId":"",', "").replace("d1", "d2")
    path.write_text(twice + "\n" + once + "\n")
    result = ingest_file(con, path, "events", settings=SETTINGS)
    assert (result.loaded, result.rejected) == (1, 1)
    assert _rejects(con) == {1: "duplicate_key"}


def test_a_key_repeated_in_any_object_read_is_rejected_and_only_there(con, tmp_path) -> None:
    """Repeats inside a nested object that is read (the page), inside a large object (40
    keys), and nowhere else: the same key in two objects, in an object not read (the library)
    or in two cases is no repeat."""
    head = '{"type":"track","event":"x","anonymousId":"a","timestamp":"2025-03-01T10:00:00Z",'
    many = ",".join(f'"k{i}":{i}' for i in range(40))
    lines = [
        head + '"messageId":"r1","context":{"page":{"url":"u1","url":"u2"}}}',
        head + '"messageId":"r2","properties":{' + many + ',"k3":"again"}}',
        head + '"messageId":"k1","properties":{' + many + "}}",
        head + '"messageId":"k2","properties":{"event":"x","anonymousId":"b"}}',
        head + '"messageId":"k3","context":{"library":{"name":"a","name":"b"}}}',
        head + '"messageId":"k4","properties":{"Total":1,"total":2}}',
    ]
    path = tmp_path / "events.ndjson"
    path.write_text("\n".join(lines) + "\n")
    result = ingest_file(con, path, "events", settings=SETTINGS)
    assert (result.loaded, result.rejected) == (4, 2)
    assert _rejects(con) == {1: "duplicate_key", 2: "duplicate_key"}
    loaded = con.table("events").message_id.to_pyarrow().to_pylist()
    assert sorted(loaded) == ["k1", "k2", "k3", "k4"]


@pytest.mark.parametrize("copies", [1, 40], ids=["alone", "known_layouts"])
def test_json_values_of_every_type_are_read_as_their_text(con, tmp_path, copies) -> None:
    """A string field given a number, a boolean, an object or an array keeps its JSON text
    (compact); a string is trimmed and an empty one is missing; a path through a value that
    is not an object finds nothing, so the next path is used; a whole object read as a column
    keeps its JSON text, and a string there is unquoted. The same when each line's layout is
    shared by many lines (read by the narrow query of known layouts)."""
    lines = [
        {"messageId": "v1", "type": "track", "event": "e", "anonymousId": 7, "userId": True,
         "timestamp": "2025-03-01T10:00:00Z",
         "properties": {"revenue": 12.50, "b": [1, {"c": None}]},
         "context": {"page": {"url": " https://x.io/a ", "title": ""}}},
        {"messageId": "v2", "type": "track", "event": {"n": 1}, "anonymousId": [1, "x"],
         "timestamp": "2025-03-01T10:00:00Z", "context": "not an object",
         "properties": {"url": "https://p.io/"}},
        {"messageId": "v3", "type": "track", "event": "e", "anonymousId": "a",
         "timestamp": "2025-03-01T10:00:00Z", "context": {"page": "x", "campaign": [1]},
         "traits": "plain", "properties": {"url": "https://q.io/", "utm_source": "ignored"}},
    ]
    path = tmp_path / "events.ndjson"
    path.write_text("\n".join(
        json.dumps({**line, "messageId": f"{line['messageId']}-{copy}"}, separators=(", ", " : "))
        for copy in range(copies) for line in lines) + "\n")
    result = ingest_file(con, path, "events", settings=SETTINGS)
    assert (result.loaded, result.rejected) == (3 * copies, 0)
    rows = con.table("events").select(
        "message_id", "event", "anonymous_id", "user_id", "revenue", "url", "title", "traits",
        "properties", "utm_source").to_pyarrow().to_pylist()
    for copy in range(copies):
        copied = {r["message_id"][:2]: r for r in rows if r["message_id"].endswith(f"-{copy}")}
        assert len(copied) == 3
        _assert_values_read_as_text(copied)


def _assert_values_read_as_text(got: dict) -> None:
    assert {k: (r["event"], r["anonymous_id"], r["user_id"]) for k, r in got.items()} == {
        "v1": ("e", "7", "true"), "v2": ('{"n":1}', '[1,"x"]', None), "v3": ("e", "a", None)}
    assert got["v1"]["properties"] == '{"revenue":12.5,"b":[1,{"c":null}]}'
    assert (got["v1"]["revenue"], got["v1"]["url"], got["v1"]["title"]) == (
        12.5, "https://x.io/a", None)
    assert (got["v2"]["url"], got["v3"]["url"]) == ("https://p.io/", "https://q.io/")
    assert (got["v3"]["traits"], got["v3"]["utm_source"]) == ("plain", None)


def test_a_quoted_csv_field_keeps_its_line_breaks(con, tmp_path) -> None:
    path = tmp_path / "multi.csv"
    rows = [
        HEADER,
        'm1,track,"Asked\nabout pricing",a1,,2025-03-01T10:00:00Z,,',
        'm2,track,"Windows\r\nline",a1,,2025-03-01T10:01:00Z,,',
        "m3,track,Viewed,a1,,2025-03-01T10:02:00Z,,",
    ]
    path.write_bytes("\r\n".join(rows).encode() + b"\r\n")
    result = ingest_file(con, path, "events", settings=SETTINGS)
    got = con.table("events").order_by("message_id").select("message_id", "event").execute()
    assert (result.loaded, result.rejected) == (3, 0)
    assert got.event.tolist() == ["Asked\nabout pricing", "Windows\r\nline", "Viewed"]


@pytest.mark.parametrize(
    "content",
    [b"Name,Ad Spend\n", b"Name,Ad Spend\nacme,12\n", b"Name,Ad Spend\nacme\n"],
    ids=["header_only", "with_rows", "only_bad_rows"],
)
def test_a_header_matching_no_column_is_an_error_naming_it(con, tmp_path, content) -> None:
    path = tmp_path / "other.csv"
    path.write_bytes(content)
    with pytest.raises(InputError) as caught:
        ingest_file(con, path, "events", settings=SETTINGS)
    assert str(caught.value).startswith(
        f"{path}: line 1: the header ['Name', 'Ad Spend'] names no column of table 'events'"
    )
    assert "events" not in con.list_tables() or con.table("events").count().execute() == 0
    assert con.table("rejects").count().execute() == 0


def test_a_header_only_file_missing_a_required_column_is_an_error(con, tmp_path) -> None:
    path = tmp_path / "calls.csv"
    path.write_text("call_id,caller_number\n")
    missing = r"missing column\(s\) \['started_at', 'tracking_number'\]"
    with pytest.raises(InputError, match=missing):
        ingest_file(con, path, "calls", settings=SETTINGS)


def test_a_gz_name_on_bytes_that_are_not_gzip_is_an_error_naming_the_file(con, tmp_path) -> None:
    path = tmp_path / "events.csv.gz"
    path.write_text(HEADER + "\n" + _good(1) + "\n")
    with pytest.raises(InputError, match=f"^{path}: is named .gz but is not gzip-compressed"):
        ingest_file(con, path, "events", settings=SETTINGS)
    assert "events" not in con.list_tables() or con.table("events").count().execute() == 0


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("plain.csv.gz", HEADER.encode() + b"\n", "plain.csv.gz: is named .gz but is not gzip"),
        ("other.csv", b"Name,Ad Spend\n", "line 1: the header ['Name', 'Ad Spend'] names no"),
    ],
)
@pytest.mark.duckdb_only(
    reason=CLI_OWN_CONNECTION)
def test_ingest_command_exits_1_with_the_message(tmp_path, name, content, message) -> None:
    from typer.testing import CliRunner

    from touchline.cli import app

    path = tmp_path / name
    path.write_bytes(content)
    database = f"duckdb:///{tmp_path / 'w.duckdb'}"
    result = CliRunner().invoke(
        app, ["ingest", str(path), "--kind", "events", "--database", database]
    )
    assert result.exit_code == 1
    assert message in " ".join(result.output.split())  # rich wraps long lines


OLIST_DEALS = (
    "mql_id,seller_id,sdr_id,won_date,business_segment,lead_type,declared_monthly_revenue\n"
    "5420aad7,2c43fb51,a8387c01,2018-02-26 19:58:54,pet,online_medium,0.0\n"
    "a555fb36,bbb7d789,09285259,2018-05-08 20:17:59,car_accessories,,1200.5\n"
    "b0000000,cccccccc,dddddddd,,pet,industry,10\n"
)
OLIST_MAPPING = """
[columns]
deal_id = "mql_id"
closed_at = "won_date"
amount = "declared_monthly_revenue"

[defaults]
status = "won"
"""


def test_deals_without_created_at_load_and_keep_their_other_columns(con, tmp_path) -> None:
    path = tmp_path / "olist_closed_deals.csv"
    path.write_text(OLIST_DEALS)
    mapping_file = tmp_path / "olist.toml"
    mapping_file.write_text(OLIST_MAPPING)
    mapping = load_mapping(mapping_file, canonical={c.name for c in store.DEALS.columns})
    result = ingest_file(con, path, "deals", settings=SETTINGS, mapping=mapping)
    got = con.table("deals").order_by("deal_id").execute()
    assert (result.loaded, result.rejected, result.ignored_columns) == (2, 1, [])
    assert got.deal_id.tolist() == ["5420aad7", "a555fb36"]
    assert got.created_at.isna().all()
    assert [str(t) for t in got.closed_at] == ["2018-02-26 19:58:54", "2018-05-08 20:17:59"]
    assert [json.loads(p) for p in got.properties] == [
        {"seller_id": "2c43fb51", "sdr_id": "a8387c01", "business_segment": "pet",
         "lead_type": "online_medium"},
        {"seller_id": "bbb7d789", "sdr_id": "09285259", "business_segment": "car_accessories",
         "lead_type": None},
    ]
    rejects = con.table("rejects").select("line", "field", "reason_code").execute()
    assert rejects.values.tolist() == [[4, "created_at", "missing_deal_time"]]
