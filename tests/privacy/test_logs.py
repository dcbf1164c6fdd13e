"""No personal data in logs: a flow through every stage that handles e-mails and phones
(collector load, file ingest, prepare and run, exports, erasure), logged at DEBUG, names none
of its people's e-mails or phone numbers in any spelling."""

from __future__ import annotations

import logging
import re
from datetime import datetime
from pathlib import Path

import orjson
import pytest
from factories import JOHN_DEAL, arrow_table

from touchline import engine, store
from touchline.collect import loader
from touchline.collect.ingest import ingest_file
from touchline.collect.spool import EVENT
from touchline.config import Settings
from touchline.exports import export_conversions
from touchline.pipeline import run
from touchline.privacy import erase

EMAILS = ["John@Gmail.com", "ann.lee@example.org", "spool.person@example.net"]
PHONES = ["+1 202 555 0143", "(202) 555-0177", "202.555.0188"]


def _message(i: int, anonymous_id: str, **more: object) -> dict[str, object]:
    return {"messageId": f"log-{i}", "anonymousId": anonymous_id,
            "timestamp": f"2026-03-0{1 + i % 8}T10:00:00Z", "type": "page",
            "context": {"page": {"url": "https://plumb.example/?gclid=g" + str(i)},
                        "consent": "granted"}, **more}


def test_a_whole_flow_logs_no_email_or_phone(tmp_path: Path,
                                             caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    settings = Settings(database_url=f"duckdb://{tmp_path / 'wh.duckdb'}",
                        temp_directory=tmp_path, spool_dir=tmp_path / "spool",
                        pii_hash_key="k" * 16, attribution_models=["linear"],
                        default_model="linear")
    messages = [_message(1, "john-1"),
                _message(2, "john-1", type="identify",
                         traits={"email": EMAILS[0], "phone": PHONES[0]}),
                _message(3, "ann-1"),
                _message(4, "ann-1", type="track", event="Form Submitted",
                         properties={"email": EMAILS[1], "phone": PHONES[1]}),
                # bad rows that go to rejects (and so past every logger on the way)
                {"messageId": "log-bad", "type": "page", "anonymousId": "x",
                 "timestamp": "yesterday", "traits": {"email": EMAILS[1]}}]
    events = tmp_path / "events.ndjson"
    events.write_bytes(b"".join(orjson.dumps(m) + b"\n" for m in messages))
    spool = tmp_path / "spool"
    spool.mkdir()
    spooled = _message(5, "spool-1", type="identify",
                       traits={"email": EMAILS[2], "phone": PHONES[2]})
    (spool / "1-1.seg").write_bytes(
        EVENT + orjson.dumps({**spooled, "receivedAt": "2026-03-06T10:00:00Z"}) + b"\n"
        + EVENT + b'{"traits": {"email": "' + EMAILS[2].encode() + b'"}, not json\n'
        + EVENT + orjson.dumps({**spooled, "messageId": "log-6", "timestamp": 12}) + b"\n")

    with engine.connected(settings=settings) as con:
        loader.load_spool(con, settings)
        ingest_file(con, events, "events", settings=settings)
        engine.append(con, "deals", arrow_table(store.DEALS, [
            {**JOHN_DEAL[0], "contact_emails": EMAILS[0], "ingest_id": "t"}]))
        run(con, settings)
        for fmt in ("clicks-csv", "leads-csv"):
            export_conversions(con, settings, destination="google-ads", conversion="deal_won",
                               out=tmp_path / f"{fmt}.csv", fmt=fmt,
                               now=datetime(2026, 3, 21, 12))
        export_conversions(con, settings, destination="meta", conversion="deal_won",
                           out=tmp_path / "meta.json", now=datetime(2026, 3, 21, 12))
        erase(con, settings, kind="email", value=EMAILS[0])
        erase(con, settings, kind="phone", value=PHONES[1])

    text = caplog.text.lower()
    assert len(caplog.records) > 5  # the flow logged, at DEBUG
    for email in EMAILS:
        assert email.lower() not in text
    for phone in PHONES:
        digits = re.sub(r"\D", "", phone)[-10:]
        assert not re.search("[^0-9]{0,3}".join(digits), text), phone
