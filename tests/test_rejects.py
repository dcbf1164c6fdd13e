"""The one rejects builder: ids, secret-free raw text, truncated IPs, one length limit."""

from __future__ import annotations

from datetime import datetime

import ibis
import orjson
import pytest
from ibis.backends import BaseBackend

from touchline.store import (
    REJECT_RAW_MAX_CHARS,
    REJECTS,
    RejectRecord,
    reject_id,
    reject_id_expr,
    reject_rows,
    reject_rows_expr,
    safe_raw,
)

NOW = datetime(2025, 3, 1, 12, 0)


def test_json_raw_loses_every_secret_and_keeps_only_the_network_of_an_ip() -> None:
    raw = orjson.dumps({
        "writeKey": "tlw_secret",
        "context": {"ip": "203.0.113.77", "page": {"url": "https://x.io/?access_token=abc&a=1"}},
        "properties": {
            "Password": "hunter2", "nested": [{"api-key": "k1"}], "ip": "2001:db8:1:2::9"
        },
    }).decode()
    assert orjson.loads(safe_raw(raw) or "") == {
        "writeKey": "[removed]",
        "context": {"ip": "203.0.113.0", "page": {"url": "https://x.io/?access_token=[removed]&a=1"}},
        "properties": {"Password": "[removed]", "nested": [{"api-key": "[removed]"}],
                       "ip": "2001:db8:1::"},
    }


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("m1,track,203.0.113.77,writeKey=tlw_x", "m1,track,203.0.113.0,writeKey=[removed]"),
        ('{"writeKey": "tlw_cut off by trunc', '{"writeKey": "[removed]"'),
        ("2001:db8:1:2:3:4:5:6 at 10:00:00", "2001:db8:1:: at 10:00:00"),
        ("Chrome/120.0.6099.109", "Chrome/120.0.6099.109"),
    ],
)
def test_text_raw_is_scrubbed_by_pattern(raw: str, expected: str) -> None:
    assert safe_raw(raw) == expected


def test_raw_is_cut_at_one_limit() -> None:
    cut = safe_raw("x" * (REJECT_RAW_MAX_CHARS + 10)) or ""
    assert len(cut) == REJECT_RAW_MAX_CHARS
    assert cut.endswith(f" … [cut: {REJECT_RAW_MAX_CHARS + 10:,} characters in all]")


def test_json_raw_is_kept_as_written_unless_something_is_removed() -> None:
    """Spacing and a key given twice stay as the sender wrote them; a record that held a
    secret is re-written without it."""
    written = '{ "event": "A",  "userId": "u1", "userId": "u2" }'
    assert safe_raw(written) == written
    assert safe_raw('{ "event": "A", "writeKey": "tlw_x" }') == (
        '{"event":"A","writeKey":"[removed]"}')


def test_reject_rows_have_the_schema_unique_ids_and_clean_raw() -> None:
    same = RejectRecord("bad_type", "type is wrong", '{"writeKey":"k"}', line=3)
    table = reject_rows([same, same, RejectRecord("missing_id", "no id", None, line=3)],
                        step="collect:api", source="/v1/batch", origin="o", ingest_id="i",
                        now=NOW)
    assert table.schema == REJECTS.schema.to_pyarrow()
    rows = table.to_pylist()
    assert len({r["reject_id"] for r in rows}) == 3
    assert rows[0]["reject_id"] == reject_id("collect:api", "o", 3, "bad_type")
    assert [r["raw"] for r in rows] == ['{"writeKey":"[removed]"}'] * 2 + [None]


def test_reject_id_in_sql_is_the_reject_id_in_python(con: BaseBackend) -> None:
    t = ibis.memtable(
        {"line": [7, None], "reason_code": ["bad_date", "duplicate"]},
        schema={"line": "int64", "reason_code": "string"},
    )
    got = con.execute(t.select(i=reject_id_expr("ingest:spend", "fp", t.line, t.reason_code)))
    assert got.i.tolist() == [
        reject_id("ingest:spend", "fp", 7, "bad_date"),
        reject_id("ingest:spend", "fp", None, "duplicate"),
    ]


def test_reject_rows_built_by_the_engine_are_the_rows_built_in_python(con: BaseBackend) -> None:
    records = [
        RejectRecord("duplicate", "seen", None, field="messageId", ref="m9"),
        RejectRecord("duplicate", "seen", None, field="messageId", ref="m1"),
        RejectRecord("bad_type", "wrong", None, line=4, field="type"),
        RejectRecord("duplicate", "seen", None, field="messageId", ref="m5"),
    ]
    expected = reject_rows(records, step="collect:spool", source="spool:s", origin="o",
                           ingest_id="i", now=NOW).to_pylist()
    table = ibis.memtable(
        {"line": [r.line for r in records], "field": [r.field for r in records],
         "reason_code": [r.reason_code for r in records], "reason": [r.reason for r in records],
         "ref": [r.ref for r in records], "n": list(range(len(records)))},
        schema={"line": "int64", "field": "string", "reason_code": "string",
                "reason": "string", "ref": "string", "n": "int64"},
    )
    rows = reject_rows_expr(table, step="collect:spool", source="spool:s", origin="o",
                            ingest_id="i", now=NOW, order_by=["n"])
    got = con.to_pyarrow(rows).to_pylist()
    assert {row.pop("rejected_at") for row in got} == {NOW}
    for row in expected:
        del row["rejected_at"]
    assert sorted(got, key=str) == sorted(expected, key=str)
    assert set(rows.columns) == set(REJECTS.schema.names)
