"""``touchline run`` turns a user's call log into touches before it prepares (as
``touchline calls match`` does): a call log ingested from a file reaches the journeys."""

from __future__ import annotations

import pyarrow as pa
from ibis.backends import BaseBackend

from touchline import engine, store
from touchline.config import Settings
from touchline.pipeline import match_calls


def test_the_run_matches_new_calls_once_and_reports_the_unmatched(con: BaseBackend) -> None:
    store.init(con)
    lease = {c.name: None for c in store.NUMBER_LEASES.columns} | {
        "lease_id": "L1", "number": "+15550100001", "pool": "google", "status": "leased",
        "anonymous_id": "visitor-1", "session_id": "s1", "utm_source": "google",
        "utm_medium": "cpc", "utm_term": "emergency plumber",
        "leased_at": pa.scalar(1_772_366_400_000_000, pa.timestamp("us")).as_py(),
        "expires_at": pa.scalar(1_772_368_200_000_000, pa.timestamp("us")).as_py(),
        "request_count": 1}
    engine.append(con, "number_leases", pa.Table.from_pylist(
        [lease], schema=store.NUMBER_LEASES.schema.to_pyarrow()))
    start = lease["leased_at"]
    calls = [{c.name: None for c in store.CALLS.columns} | {
        "call_id": call_id, "caller_number": caller, "tracking_number": number,
        "started_at": start, "duration_seconds": 200, "answered": True, "source": "calls",
        "ingest_id": "file-1"} for call_id, caller, number in (
            ("c1", "+12025550143", "+15550100001"), ("c2", "+12025550199", "+15550100777"))]
    engine.append(con, "calls", pa.Table.from_pylist(calls, schema=store.CALLS.schema.to_pyarrow()))
    said: list[str] = []
    settings = Settings(phone_region="US")
    notes = match_calls(con, settings, said.append)
    assert notes == ["1 calls matched no number lease: each is a touch of the person its caller "
                     "number names (channel Phone)"]
    assert said == ["matched 2 new calls to number leases: matched 1, unmatched 1"]
    events = con.table("events").order_by("message_id").to_pandas()
    assert events.message_id.tolist() == ["call:c1", "call:c2"]
    assert events.anonymous_id.tolist()[0] == "visitor-1"  # the lease's visitor
    assert events.utm_term.tolist()[0] == "emergency plumber"
    assert match_calls(con, settings, said.append) == []  # nothing new: nothing twice
    assert len(con.table("events").to_pandas()) == 2
