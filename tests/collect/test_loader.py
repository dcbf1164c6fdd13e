"""The loader: exactly-once moves from the spool into the warehouse, segment by segment."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import duckdb
import numpy as np
import orjson
import pyarrow as pa
import pytest
from collector_kit import Warehouse

from touchline import engine, store
from touchline.collect import loader
from touchline.collect.ingest import ingest_file
from touchline.collect.segment import SegmentMapper, SegmentSplit
from touchline.collect.spool import EVENT, SpoolFullError, SpoolWriter, spool_bytes
from touchline.config import Settings
from touchline.serve.figures import freshness


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


def test_a_cancelled_append_leaves_the_others_of_its_flush_acknowledged(tmp_path: Path) -> None:
    writer = _writer(tmp_path)

    async def one_client_goes_away() -> list[str]:
        first = asyncio.ensure_future(writer.append(_line("m0")))  # its flush starts now
        await asyncio.sleep(0)
        waiting = [asyncio.ensure_future(writer.append(_line(f"m{i}"))) for i in (1, 2, 3)]
        await asyncio.sleep(0)
        waiting[1].cancel()  # m2's client went away while the next flush gathered
        outcomes = await asyncio.gather(first, *waiting, return_exceptions=True)
        return ["cancelled" if isinstance(o, asyncio.CancelledError) else "durable"
                for o in outcomes]

    assert asyncio.run(one_client_goes_away()) == ["durable", "durable", "cancelled", "durable"]
    writer.close()
    [segment] = list(tmp_path.glob("*.seg"))
    # m2 was already in the buffer: written, just not acknowledged (the loader loads it)
    assert sorted(segment.read_bytes().splitlines()) == sorted(
        _line(f"m{i}").rstrip(b"\n") for i in range(4)
    )


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
    # every segment's row went with its file; the @loaded row stays: every byte loaded, and
    # when last, which the dashboard's "data last loaded" reads
    total = sum(len(_line(f"m{i}")) for i in range(20))
    [(segment, loaded, at)] = warehouse.query("SELECT * FROM spool_offsets")
    assert (segment, loaded) == (loader.LOADED_KEY, total)
    con = warehouse.connect()
    try:
        fresh = freshness(con)
    finally:
        con.disconnect()
    assert (fresh["loaded_by"], fresh["loaded"], fresh["files"]) == ("collector", at, None)


def test_each_cycle_checks_the_tables_in_one_query_and_recreates_what_is_missing(
    warehouse: Warehouse, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = Path(warehouse.settings.spool_dir)
    (spool / "1-999991.seg").write_bytes(_line("first"))
    initialised: list[bool] = []
    real_init = store.init
    monkeypatch.setattr(store, "init", lambda con: initialised.append(True) or real_init(con))
    warehouse.load()
    assert initialised == []  # every table and column there: store.init is not run
    warehouse.query("DROP TABLE spool_offsets")
    warehouse.query("ALTER TABLE deals DROP COLUMN amount")
    (spool / "1-999992.seg").write_bytes(_line("second"))
    warehouse.load()
    assert initialised == [True]
    assert warehouse.query(
        "SELECT count(*) FROM information_schema.columns "
        "WHERE table_name = 'deals' AND column_name = 'amount'"
    ) == [(1,)]
    assert warehouse.query("SELECT message_id FROM events ORDER BY 1") == [("first",), ("second",)]
    assert not list(spool.glob("*.seg"))


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


POISON_QUERIES = {
    "utm_campaign": "caf%E9",  # Latin-1 é: not UTF-8 once decoded
    "gclid": "%C3%28",  # a UTF-8 lead byte followed by a non-continuation byte
    "fbclid": "%80",  # a lone continuation byte
}


def _page(message_id: str, query: str) -> dict[str, object]:
    return {
        "type": "page",
        "messageId": message_id,
        "anonymousId": "a",
        "timestamp": "2025-03-01T10:00:00Z",
        "context": {"page": {"url": f"https://acme.example/?{query}"}},
    }


@pytest.mark.parametrize(("param", "value"), sorted(POISON_QUERIES.items()))
def test_a_badly_encoded_url_parameter_neither_stops_the_loader_nor_differs_from_file_ingest(
    warehouse: Warehouse, tmp_path: Path, param: str, value: str
) -> None:
    """A visitor can send any URL: the loader keeps the undecodable value as text, loads the
    messages after it, and file ingest keeps the very same text."""
    spool = Path(warehouse.settings.spool_dir)
    poison = _page("poison", f"{param}={value}&utm_source=ok%20fine")
    (spool / "3-999999.seg").write_bytes(
        EVENT + orjson.dumps(poison) + b"\n" + _line("after")
    )
    warehouse.load()
    loaded = dict(warehouse.query(f"SELECT message_id, {param} FROM events"))
    assert loaded == {"poison": value, "after": None}
    assert warehouse.query("SELECT utm_source FROM events WHERE message_id = 'poison'") == [
        ("ok fine",)
    ]
    path = tmp_path / "poison.ndjson"
    path.write_bytes(orjson.dumps(poison) + b"\n")
    con = engine.connect(settings=Settings(database_url="duckdb://"))
    ingest_file(con, path, "events", settings=Settings(database_url="duckdb://"))
    ingested = con.table("events").select(param, "utm_source").to_pyarrow().to_pylist()
    assert ingested == [{param: value, "utm_source": "ok fine"}]


def test_a_record_the_mapping_fails_on_is_rejected_alone_and_the_rest_loads(
    warehouse: Warehouse, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever the next poison pill is, the loader bisects the chunk down to it, rejects it
    with the error and its line, and loads every other message of the chunk."""

    mapping = SegmentMapper.map

    def fragile(mapper: SegmentMapper, lines: pa.Table, **options: object) -> SegmentSplit:
        if any("poison" in raw for raw in lines.column("raw").to_pylist()):
            raise duckdb.InvalidInputException("cannot map a poisoned message")
        return mapping(mapper, lines, **options)  # type: ignore[arg-type]

    monkeypatch.setattr(SegmentMapper, "map", fragile)
    spool = Path(warehouse.settings.spool_dir)
    data = b"".join(_line(f"m{i}") for i in range(7)) + _line("poison") + _line("m7") + _line("m3")
    (spool / "4-999999.seg").write_bytes(data)
    warehouse.load()
    loaded = sorted(warehouse.query("SELECT message_id FROM events"))
    assert loaded == [(f"m{i}",) for i in range(8)]
    assert sorted(warehouse.query("SELECT reason_code, line, ref FROM rejects")) == [
        ("duplicate", None, "m3"),
        ("unmappable", 8, None),
    ]
    [(reason, raw)] = warehouse.query(
        "SELECT reason, raw FROM rejects WHERE reason_code = 'unmappable'"
    )
    assert "cannot map a poisoned message" in reason
    assert orjson.loads(raw)["messageId"] == "poison"
    assert not list(spool.glob("*.seg"))  # the chunk committed: nothing is retried forever


def test_duplicate_rejects_are_built_in_the_engine_as_the_python_builder_built_them(
    warehouse: Warehouse,
) -> None:
    """The loader's ``duplicate`` rejects come from one SQL statement now (a replayed chunk
    holds one per message); each row is the one ``reject_rows`` made from a Python list."""
    spool = Path(warehouse.settings.spool_dir)
    (spool / "5-999999.seg").write_bytes(b"".join(_line(m) for m in ("m2", "m0", "m1")))
    warehouse.load()
    (spool / "6-999999.seg").write_bytes(b"".join(_line(m) for m in ("m1", "new", "m2", "m0")))
    warehouse.load()
    columns = "reject_id, step, source, line, field, reason_code, reason, raw, ref, ingest_id"
    got = warehouse.query(f"SELECT {columns} FROM rejects ORDER BY ref")
    ingest_id = "collector:6-999999.seg:0"
    expected = store.reject_rows(
        [store.RejectRecord("duplicate", loader.DUPLICATE_REASON, None, field="messageId", ref=m)
         for m in ("m0", "m1", "m2")],  # ids met again are numbered in id order
        step="collect:spool", source="spool:6-999999.seg", origin=f"{ingest_id}#duplicates",
        ingest_id=ingest_id, now=datetime(2025, 3, 1),
    ).select(columns.split(", ")).to_pylist()
    assert got == [tuple(row.values()) for row in expected]
    assert len({row[0] for row in got}) == 3
    assert warehouse.query("SELECT count(*) FROM events") == [(4,)]


def test_exploded_batches_each_take_their_own_envelope() -> None:
    """Each member is stamped from its own batch's header and envelope (context merged under
    the member's own, sentAt and integrations as defaults), never a neighbour's."""
    from touchline.collect.segment import explode_batches

    bodies = [
        {"batch": [{"type": "page", "anonymousId": "a"},
                   {"type": "page", "anonymousId": "b",
                    "context": {"locale": "fr", "ip": "9.9.9.9"},
                    "sentAt": "2025-01-01T00:00:00Z"}],
         "context": {"locale": "en", "app": "one"}, "sentAt": "2025-03-01T10:00:00Z",
         "integrations": {"All": False}},
        {"batch": [{"type": "page", "anonymousId": "c", "messageId": "own"}],
         "context": {"app": "two"}},
        {"batch": [{"type": "page", "anonymousId": "d"}], "context": {"app": "x"},
         "context ": 1},
    ]
    headers = [
        {"receivedAt": "2025-03-01T10:00:01Z", "writeKey": "web", "keepReceivedAt": False,
         "ip": "10.0.0.0"},
        {"receivedAt": "2025-03-02T10:00:01Z", "writeKey": "app", "keepReceivedAt": False,
         "ip": None},
        {"receivedAt": "2025-03-03T10:00:01Z", "writeKey": "web", "keepReceivedAt": False,
         "ip": "10.0.0.3"},
    ]
    raw_third = orjson.dumps(bodies[2]).replace(b'"context ":1', b'"context":{"app":"y"}')
    table = pa.table({
        "line": pa.array([1, 2, 3], pa.int64()),
        "header": [orjson.dumps(h).decode() for h in headers],
        "body": [orjson.dumps(bodies[0]).decode(), orjson.dumps(bodies[1]).decode(),
                 raw_third.decode()],
    })
    kept, refused = explode_batches(table, origin="chunk")
    members = [(line, orjson.loads(raw)) for line, raw in zip(
        kept["line"].to_pylist(), kept["raw"].to_pylist(), strict=True)]
    members.sort(key=lambda m: (m[0], m[1]["anonymousId"]))
    assert [(line, m["anonymousId"], m["context"], m.get("sentAt"), m.get("integrations"),
             m["receivedAt"], m["writeKey"]) for line, m in members] == [
        (1, "a", {"locale": "en", "app": "one", "ip": "10.0.0.0"}, "2025-03-01T10:00:00Z",
         {"All": False}, "2025-03-01T10:00:01Z", "web"),
        (1, "b", {"locale": "fr", "app": "one", "ip": "9.9.9.9"}, "2025-01-01T00:00:00Z",
         {"All": False}, "2025-03-01T10:00:01Z", "web"),
        (2, "c", {"app": "two"}, None, None, "2025-03-02T10:00:01Z", "app"),
    ]
    assert members[2][1]["messageId"] == "own"
    assert members[0][1]["messageId"].startswith("srv-")
    assert (refused["line"].to_pylist(), refused["refused"].to_pylist()) == (
        [3], ["duplicate_key"])


def _segment(spool: Path, number: int, ids: list[str]) -> None:
    (spool / f"{number}-999999.seg").write_bytes(b"".join(_line(m) for m in ids))


def test_a_kept_loader_state_catches_a_repeat_of_an_id_stored_many_cycles_ago(
    warehouse: Warehouse,
) -> None:
    """The loader looks ids up in the hashes it keeps (no scan of ``events`` per cycle): an
    id loaded in the first of many cycles is still a duplicate in the last."""
    spool = Path(warehouse.settings.spool_dir)
    with SegmentMapper() as mapper:
        state = loader.LoaderState(mapper)
        for cycle in range(6):
            _segment(spool, 10 + cycle, [f"c{cycle}-{i}" for i in range(3)])
            loader.load_once(warehouse.settings, state)
        _segment(spool, 20, ["c0-1", "fresh", "c5-2"])
        report = loader.load_once(warehouse.settings, state)
        assert state.stored_ids is not None and len(state.stored_ids) == 19
    assert (report.events, report.duplicates) == (1, 2)
    assert warehouse.query("SELECT count(*), count(DISTINCT message_id) FROM events") == [
        (19, 19)
    ]
    assert sorted(warehouse.query(
        "SELECT ref FROM rejects WHERE reason_code = 'duplicate'")) == [("c0-1",), ("c5-2",)]


def test_a_restarted_loader_reads_the_stored_ids_and_catches_a_repeat(
    warehouse: Warehouse,
) -> None:
    spool = Path(warehouse.settings.spool_dir)
    with SegmentMapper() as mapper:
        _segment(spool, 1, ["a", "b"])
        loader.load_once(warehouse.settings, loader.LoaderState(mapper))
    with SegmentMapper() as mapper:  # a new process: nothing kept
        restarted = loader.LoaderState(mapper)
        _segment(spool, 2, ["b", "c"])
        report = loader.load_once(warehouse.settings, restarted)
    assert (report.events, report.duplicates) == (1, 1)
    assert warehouse.query("SELECT message_id FROM events ORDER BY 1") == [
        ("a",), ("b",), ("c",)
    ]


def test_ids_another_process_stored_between_cycles_are_duplicates_too(
    warehouse: Warehouse,
) -> None:
    """A write by another command (here an insert into ``events``) changes the warehouse's
    version, and the loader reads the stored ids again instead of trusting what it kept."""
    spool = Path(warehouse.settings.spool_dir)
    with SegmentMapper() as mapper:
        state = loader.LoaderState(mapper)
        _segment(spool, 1, ["a"])
        loader.load_once(warehouse.settings, state)
        warehouse.query("INSERT INTO events (message_id, type) VALUES ('from-elsewhere', 'track')")
        _segment(spool, 2, ["from-elsewhere", "b"])
        report = loader.load_once(warehouse.settings, state)
    assert (report.events, report.duplicates) == (1, 1)
    assert warehouse.query(
        "SELECT count(*) FROM events WHERE message_id = 'from-elsewhere'") == [(1,)]


def test_a_hash_match_of_an_id_not_stored_is_checked_exactly_and_loaded(
    warehouse: Warehouse, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every lookup a collision: only the ids truly in ``events`` are refused."""
    monkeypatch.setattr(
        loader.StoredMessageIds, "may_contain", lambda self, hashes: np.ones(len(hashes), bool)
    )
    spool = Path(warehouse.settings.spool_dir)
    _segment(spool, 1, ["a", "b"])
    warehouse.load()
    _segment(spool, 2, ["b", "c", "d"])
    warehouse.load()
    assert warehouse.query("SELECT message_id FROM events ORDER BY 1") == [
        ("a",), ("b",), ("c",), ("d",)
    ]
    assert warehouse.query("SELECT ref FROM rejects") == [("b",)]


def test_stored_message_ids_find_every_hash_added_in_any_run_and_no_other() -> None:
    rng = np.random.default_rng(19)
    known = loader.StoredMessageIds()
    added: list[np.ndarray] = []
    for size in (1000, 1, 7, 300, 2, 2, 5000, 64, 1):
        hashes = rng.integers(0, 2**64, size=size, dtype=np.uint64)
        known.add(hashes)
        added.append(hashes)
    everything = np.concatenate(added)
    others = rng.integers(0, 2**64, size=2000, dtype=np.uint64)
    assert len(known) == len(everything)
    assert known.may_contain(everything).all()
    assert not known.may_contain(others[~np.isin(others, everything)]).any()
    none = known.may_contain(np.array([], np.uint64))  # an empty chunk: an empty answer
    assert (none.shape, none.dtype) == ((0,), np.dtype(bool))


class _Script:
    """A ``stop`` for :func:`loader.run_loader` that runs one step between cycles, then stops."""

    def __init__(self, steps: list[Callable[[], object]]) -> None:
        self.steps = steps
        self.stopped = False

    def is_set(self) -> bool:
        return self.stopped

    def wait(self, timeout: float) -> bool:
        if self.steps:
            self.steps.pop(0)()
        else:
            self.stopped = True
        return self.stopped


@pytest.mark.parametrize(
    ("busy_share", "hold_seconds", "opens"),
    [(0.0, 60.0, 2), (0.0, 0.0, 5), (1e9, 60.0, 5)],
    ids=["busy", "held-too-long", "quick-loads"],
)
def test_the_loader_keeps_the_warehouse_open_over_busy_cycles_only(
    warehouse: Warehouse, monkeypatch: pytest.MonkeyPatch, busy_share: float,
    hold_seconds: float, opens: int,
) -> None:
    """A cycle that loaded something for long enough (``BUSY_SHARE`` of the interval) keeps
    the warehouse open for the next; a cycle with nothing to load, a quick one, the hold's
    time limit and the last cycle close it."""
    monkeypatch.setattr(loader, "BUSY_SHARE", busy_share)
    monkeypatch.setattr(loader, "HOLD_SECONDS", hold_seconds)
    opened: list[bool] = []
    real_open = loader.open_warehouse

    def counted(settings: Settings, state: loader.LoaderState) -> object:
        opened.append(True)
        return real_open(settings, state)

    monkeypatch.setattr(loader, "open_warehouse", counted)
    spool = Path(warehouse.settings.spool_dir)
    _segment(spool, 1, ["a", "b", "c"])  # cycle 1 opens
    script = _Script([
        lambda: _segment(spool, 2, ["d", "e"]),  # cycle 2
        lambda: None,  # cycle 3: nothing to load, closes
        lambda: _segment(spool, 3, ["f"]),  # cycle 4 opens
    ])  # cycle 5: the last, as stop is set; closes
    worker = threading.Thread(target=loader.run_loader, args=(warehouse.settings, script))
    worker.start()
    worker.join(120)
    assert not worker.is_alive()
    assert len(opened) == opens
    assert warehouse.query("SELECT message_id FROM events ORDER BY 1") == [
        (m,) for m in "abcdef"
    ]
