"""Journeys from a prepared warehouse: persons and accounts, any level, a period, deal statuses.

The table tests build ``sessions`` and ``deals`` by hand on both engines (``con``); the CLI
test runs the user's path (ingest → prepare → attribute) on a hand-written file.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa
from ibis.backends import BaseBackend
from typer.testing import CliRunner

from touchline import store
from touchline.cli import app
from touchline.journeys import aggregate_paths, journeys_in_period, warehouse_journeys

T0 = datetime(2026, 3, 1, 9, 0)


def _table(con: BaseBackend, spec: store.TableSpec, rows: list[dict]) -> object:
    frame = pd.DataFrame([{c.name: row.get(c.name) for c in spec.columns} for row in rows])
    data = pa.Table.from_pandas(frame, schema=spec.schema.to_pyarrow(), preserve_index=False)
    return con.create_table(spec.name, data, overwrite=True)


def _session(person: str, day: int, channel: str, *, account: str | None = None,
             revenue: float = 0.0, campaign: str | None = None,
             term: str | None = None) -> dict:
    return {"session_id": f"{person}#{day}", "device_id": f"anon:{person}", "person_id": person,
            "account_id": account, "session_index": day,
            "started_at": T0.replace(day=day), "ended_at": T0.replace(day=day),
            "conversion_count": int(revenue > 0), "revenue": revenue, "channel": channel,
            "source": channel.lower(), "campaign": campaign, "term": term,
            "landing_page": f"https://example.com/{channel.lower()}"}


def _warehouse(con: BaseBackend) -> None:
    _table(con, store.SESSIONS, [
        # ann: organic, then a paid click on "emergency plumber" that buys for 120
        _session("p_ann", 1, "Organic Search"),
        _session("p_ann", 3, "Paid Search", revenue=120.0, campaign="spring", term="emergency "
                 "plumber"),
        _session("p_ann", 9, "Direct"),  # after her purchase: not in the journey
        # bob never buys
        _session("p_bob", 2, "Email", campaign="newsletter"),
        # acme's two people, then a deal spelled "Closed Won" closes on the 20th
        _session("p_cy", 4, "Paid Social", account="crm:acme"),
        _session("p_di", 6, "Referral", account="crm:acme"),
        _session("p_di", 25, "Direct", account="crm:acme"),
    ])
    _table(con, store.DEALS, [
        {"deal_id": "d1", "account_id": "acme", "status": "Closed Won", "amount": 5000.0,
         "created_at": T0.replace(day=5), "closed_at": T0.replace(day=20)},
        {"deal_id": "d2", "account_id": "acme", "status": "LOST", "amount": 9.0,
         "created_at": T0.replace(day=5), "closed_at": T0.replace(day=21)},
    ])


def _rows(table: object) -> list[tuple]:
    frame = table.to_pandas()  # type: ignore[attr-defined]
    return sorted((" > ".join(r.path), int(r.conversions), float(r.value), int(r.nulls))
                  for r in frame.itertuples())


def test_persons_and_accounts_become_journeys_at_any_level(con: BaseBackend) -> None:
    _warehouse(con)
    touches = warehouse_journeys(con.table("sessions"), con.table("deals"))
    assert _rows(aggregate_paths(touches)) == [
        ("Email", 0, 0.0, 1),
        ("Organic Search > Paid Search", 1, 120.0, 0),
        ("Paid Social > Referral", 1, 5000.0, 0),  # "Closed Won" counts; the 25th is after it
    ]
    by_keyword = _rows(aggregate_paths(touches, level="keyword"))
    assert ("(not set) > emergency plumber", 1, 120.0, 0) in by_keyword


def test_period_keeps_whole_journeys_that_end_in_it(con: BaseBackend) -> None:
    _warehouse(con)
    touches = warehouse_journeys(con.table("sessions"), con.table("deals"))
    march_10_on = journeys_in_period(touches, since=datetime(2026, 3, 10))
    assert _rows(aggregate_paths(march_10_on)) == [("Paid Social > Referral", 1, 5000.0, 0)]
    before = journeys_in_period(touches, until=datetime(2026, 3, 3))
    # ann converts on the 3rd (not before it), bob's journey ends on the 2nd
    assert _rows(aggregate_paths(before)) == [("Email", 0, 0.0, 1)]


EVENTS = [
    # ann: organic search, then a Google Ads click with keyword, then she buys
    {"type": "page", "anonymousId": "a1", "timestamp": "2026-03-01T09:00:00Z",
     "context": {"page": {"url": "https://shop.example/", "referrer": "https://www.google.com/"}}},
    {"type": "page", "anonymousId": "a1", "timestamp": "2026-03-03T09:00:00Z",
     "context": {"page": {"url": "https://shop.example/?utm_source=google&utm_medium=cpc"
                          "&utm_campaign=spring&utm_term=emergency+plumber&gclid=abc"}}},
    {"type": "track", "event": "Order Completed", "anonymousId": "a1",
     "timestamp": "2026-03-03T09:05:00Z", "properties": {"revenue": 120, "currency": "USD"}},
    # bob: one newsletter visit, no purchase
    {"type": "page", "anonymousId": "b1", "timestamp": "2026-03-02T10:00:00Z",
     "context": {"page": {"url": "https://shop.example/?utm_source=newsletter&utm_medium=email"}}},
]


def test_cli_attributes_the_users_own_prepared_files(tmp_path: Path) -> None:
    """The user's path: ingest their file, prepare, then get credits from the warehouse."""
    file = tmp_path / "events.ndjson"
    file.write_text("".join(json.dumps({"messageId": f"m{i}", **e}) + "\n"
                            for i, e in enumerate(EVENTS)))
    db = f"duckdb:///{tmp_path / 'wh.duckdb'}"
    runner = CliRunner()
    for args in (["init", "--database", db],
                 ["ingest", str(file), "--kind", "events", "--database", db],
                 ["prepare", "--database", db]):
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["attribute", "--model", "linear", "--format", "json",
                                 "--database", db])
    assert result.exit_code == 0, result.output
    got = json.loads(result.output)
    credits = {c["channel"]: (c["conversions"], c["value"]) for c in got["channels"]}
    # one purchase over two touches: half each, revenue alike; bob's journey did not convert
    assert credits == {"Organic Search": (0.5, 60.0), "Paid Search": (0.5, 60.0), "Email": (0, 0)}
    result = runner.invoke(app, ["attribute", "--model", "last_touch", "--by", "keyword",
                                 "--format", "csv", "--database", db])
    assert result.exit_code == 0, result.output
    assert "emergency plumber,1.0,120.0" in result.output
    result = runner.invoke(app, ["attribute", "--by", "keywrd", "--database", db])
    assert result.exit_code == 2
    assert "did you mean 'keyword'" in result.output
    result = runner.invoke(app, ["attribute", "--since", "2027-01-01", "--database", db])
    assert result.exit_code == 2
    assert "no journeys" in result.output
