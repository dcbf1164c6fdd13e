"""Property: whatever clients send, the loader never stops, every message the collector
acknowledged ends up in ``events`` or ``rejects`` exactly once, and every request it refused
with 400 once in ``rejects``."""

from __future__ import annotations

import asyncio
import base64
import tempfile
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import segment_messages

from touchline import engine
from touchline.collect.app import Collector
from touchline.collect.keys import KeyRing
from touchline.collect.loader import load_spool
from touchline.collect.segment import map_segment
from touchline.config import Settings

KEY = "tlw_property-key"
AUTH = [(b"authorization", b"Basic " + base64.b64encode(f"{KEY}:".encode()))]


def _batch(prefix: str) -> st.SearchStrategy[list[Any]]:
    return st.integers(0, 8).flatmap(
        lambda n: st.tuples(*(segment_messages(f"{prefix}{i}") for i in range(n))).map(list)
    )


async def _post(app: Collector, path: str, body: bytes) -> tuple[int, dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http", "method": "POST", "path": path, "headers": AUTH, "query_string": b"",
        "client": ("198.51.100.7", 5000),
    }
    await app(scope, receive, send)
    return int(sent[0]["status"]), orjson.loads(sent[1]["body"] or b"{}")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages=_batch("m"))
def test_the_mapper_puts_every_line_in_events_or_rejects_exactly_once(messages: list[Any]) -> None:
    raw = [orjson.dumps(m).decode() for m in messages]
    split = map_segment(pa.table({"raw": pa.array(raw, pa.string())}), source="p", ingest_id="i")
    reject_lines = split.rejects.column("line").to_pylist()
    assert len(reject_lines) == len(set(reject_lines))
    assert split.events.num_rows + split.rejects.num_rows == len(messages)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=_batch("b"), singles=_batch("s"))
def test_acknowledged_messages_all_reach_events_or_rejects_and_the_loader_goes_on(
    batch: list[Any], singles: list[Any]
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        config = Settings(
            database_url="duckdb://", spool_dir=Path(folder) / "spool", spool_min_free_bytes=0
        )
        app = Collector(config, keys=KeyRing.from_clear({KEY: ("web", "write")}))
        app.start()
        expected = 0  # rows: a message per acknowledged message, a reject per refused request
        try:
            status, answer = asyncio.run(_post(app, "/v1/batch", orjson.dumps({"batch": batch})))
            if status == 200:
                assert answer["accepted"] + answer["rejected"] == len(batch)
                expected += len(batch)
            else:
                assert status == 400
                expected += 1
            for message in singles:
                kind = message.get("type") if isinstance(message, dict) else None
                path = f"/v1/{kind}" if kind in ("track", "page", "identify") else "/v1/track"
                status, _ = asyncio.run(_post(app, path, orjson.dumps(message)))
                assert status in (200, 400)
                expected += 1
        finally:
            app.stop()
        con = engine.connect(settings=config)
        try:
            load_spool(con, config)  # must not raise, whatever was spooled
            events = con.table("events").count().to_pyarrow().as_py()
            rejects = con.table("rejects").count().to_pyarrow().as_py()
        finally:
            con.disconnect()
        assert events + rejects == expected
        assert not list((Path(folder) / "spool").glob("*.seg"))  # all of it was loaded
