"""The loader: exactly-once moves from the spool into the warehouse, segment by segment."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
from collector_kit import Warehouse

from touchline.collect.spool import EVENT, SpoolFullError, SpoolWriter, spool_bytes


def _line(message_id: str) -> bytes:
    message = {
        "type": "track",
        "event": "x",
        "anonymousId": "a",
        "messageId": message_id,
        "receivedAt": "2025-03-01T10:00:00Z",
        "writeKey": "web",
    }
    return EVENT + orjson.dumps(message) + b"\n"


def _writer(spool: Path, **kwargs: int) -> SpoolWriter:
    options = {"segment_bytes": 1 << 20, "limit_bytes": 1 << 30, "min_free_bytes": 0, **kwargs}
    return SpoolWriter(spool, **options)


def test_concurrent_appends_share_flushes_and_all_land(tmp_path: Path) -> None:
    writer = _writer(tmp_path)

    async def burst() -> None:
        await asyncio.gather(*(writer.append(_line(f"m{i}")) for i in range(200)))

    asyncio.run(burst())
    writer.close()
    [segment] = list(tmp_path.glob("*.seg"))
    lines = segment.read_bytes().splitlines()
    assert sorted(lines) == sorted(_line(f"m{i}").rstrip(b"\n") for i in range(200))


def test_writer_refuses_when_the_spool_is_over_its_limit(tmp_path: Path) -> None:
    writer = _writer(tmp_path, limit_bytes=10)

    async def twice() -> str:
        await writer.append(_line("first"))
        try:
            await writer.append(_line("second"))
        except SpoolFullError:
            return "refused"
        return "accepted"

    assert asyncio.run(twice()) == "refused"
    writer.close()


def test_live_segment_is_loaded_but_kept_sealed_one_removed(warehouse: Warehouse) -> None:
    spool = Path(warehouse.settings.spool_dir)
    writer = _writer(spool, segment_bytes=1024)

    async def fill() -> None:
        for i in range(20):  # ~150 bytes each: several segments roll over
            await writer.append(_line(f"m{i}"))

    asyncio.run(fill())
    live_segments = len(list(spool.glob("*.seg")))
    warehouse.load()
    assert warehouse.query("SELECT count(*) FROM events") == [(20,)]
    assert live_segments > 1
    assert len(list(spool.glob("*.seg"))) == 1  # the writer's current segment stays
    writer.close()
    warehouse.load()
    assert (list(spool.glob("*.seg")), spool_bytes(spool)) == ([], 0)
    assert warehouse.query("SELECT count(*), count(DISTINCT message_id) FROM events") == [(20, 20)]


def test_a_write_cut_off_by_a_crash_becomes_a_reject(warehouse: Warehouse) -> None:
    spool = Path(warehouse.settings.spool_dir)
    segment = spool / "1-999999.seg"  # no live writer holds its lock: sealed
    segment.write_bytes(_line("whole") + _line("cut")[:25])
    warehouse.load()
    assert warehouse.query("SELECT message_id FROM events") == [("whole",)]
    assert warehouse.query("SELECT reason_code FROM rejects") == [("spool_partial_write",)]
    assert not segment.exists()


def test_reloading_after_a_crash_between_commit_and_delete_adds_nothing(
    warehouse: Warehouse,
) -> None:
    spool = Path(warehouse.settings.spool_dir)
    segment = spool / "2-999999.seg"
    data = b"".join(_line(f"m{i}") for i in range(5))
    segment.write_bytes(data)
    warehouse.load()
    segment.write_bytes(data)  # as if the delete had not happened before a crash
    warehouse.load()
    assert warehouse.query("SELECT count(*) FROM events") == [(5,)]
    assert warehouse.query("SELECT count(*) FROM rejects WHERE reason_code = 'duplicate'") == [(5,)]
