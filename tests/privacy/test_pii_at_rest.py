"""``pii_at_rest = "hashed"``: prepared tables keep e-mails and phones as keyed hashes, the
identity graph stitches on them as on the plain values, exports that match people on plain
hashes refuse clearly, and an erasure still finds the person."""

from __future__ import annotations

import hashlib
from datetime import datetime
from pathlib import Path

import ibis
import pandas as pd
import pytest
from factories import JOHN, JOHN_DEAL, any_of, arrow_table, event_rows
from ibis.backends import BaseBackend

from touchline import engine, store
from touchline.config import Settings
from touchline.errors import ConfigError
from touchline.exports import export_conversions
from touchline.journeys.timeline import resolve_unit
from touchline.pipeline import run
from touchline.prepare.standardise import hash_contacts
from touchline.privacy import erase

KEY = "test-key-of-sixteen-chars"
EMAIL, PHONE = "john@gmail.com", "+12025550143"


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _settings(tmp_path: Path, mode: str) -> Settings:
    return Settings(database_url="duckdb://", temp_directory=tmp_path, pii_hash_key=KEY,
                    pii_at_rest=mode, attribution_models=["linear"], default_model="linear",
                    spool_dir=tmp_path / "spool")


def test_a_plain_and_a_given_sha256_address_get_one_keyed_hash(con: BaseBackend,
                                                               tmp_path: Path) -> None:
    rows = [{"message_id": "a", "email": EMAIL, "phone": PHONE},
            {"message_id": "b", "email_sha256": _sha(EMAIL), "phone_sha256": _sha(PHONE)},
            {"message_id": "c"}]
    events = engine.load_table(con, "t_contacts", arrow_table(store.EVENTS, rows))
    hashed = hash_contacts(events, con, _settings(tmp_path, "hashed")).order_by("message_id")
    got = hashed.select("email", "phone", "email_sha256").to_pandas()
    keyed = store.keyed_hash(_sha(EMAIL), KEY), store.keyed_hash(_sha(PHONE), KEY)
    assert got.email.tolist()[:2] == [keyed[0]] * 2
    assert got.phone.tolist()[:2] == [keyed[1]] * 2
    assert got.email.isna().tolist()[2] and got.email_sha256.isna().all()


def test_hashed_at_rest_needs_a_key() -> None:
    with pytest.raises(ConfigError, match="pii_hash_key"):
        from touchline.config import load_settings
        load_settings(pii_at_rest="hashed")


def _run(tmp_path: Path, mode: str) -> BaseBackend:
    settings = _settings(tmp_path, mode)
    con = engine.connect(settings=settings)
    engine.load_table(con, "events", arrow_table(store.EVENTS, event_rows(JOHN)))
    engine.load_table(con, "deals", arrow_table(store.DEALS, JOHN_DEAL))
    run(con, settings)
    return con


def _totals(con: BaseBackend) -> pd.DataFrame:
    c = con.table("credits")
    return c.group_by("conversion", "channel").aggregate(
        value=c.value.sum(), credit=c.credit.sum()).order_by("conversion", "channel").to_pandas()


def test_john_hashed_at_rest_stitches_and_credits_as_plain(tmp_path: Path) -> None:
    plain, hashed = _run(tmp_path, "plain"), _run(tmp_path, "hashed")
    # one person, his deal found through its contact e-mail, the same credits
    assert hashed.table("persons").count().execute() == 1
    pd.testing.assert_frame_equal(_totals(hashed), _totals(plain))
    assert set(hashed.table("journeys").conversion.to_pandas()) == set(
        plain.table("journeys").conversion.to_pandas())
    # no plain address, number or plain SHA-256 of them in any prepared or derived table
    tokens = [EMAIL, "202555", _sha(EMAIL), _sha(PHONE), "gmail"]
    for spec in (*store.PREPARED, *store.JOURNEY_TABLES):
        t = hashed.table(spec.name)
        hits = [t[c.name].lower().re_search(any_of(tokens)) for c in spec.columns
                if c.dtype.is_string()]
        assert int(t.filter(ibis.or_(*hits)).count().execute()) == 0, spec.name
    keyed = store.keyed_hash(_sha(EMAIL), KEY)
    assert f"email:{keyed}" in set(hashed.table("identities").identifier.to_pandas())
    # his timeline is found by what a person types, keyed the same way
    person = hashed.table("persons").person_id.to_pandas()[0]
    for typed in ("John@Gmail.com", "(202) 555-0143", _sha(EMAIL).upper(), _sha(PHONE)):
        assert resolve_unit(hashed, typed, pii_key=KEY) == ("person", person)

    settings = _settings(tmp_path, "hashed")
    now = datetime(2026, 3, 21, 12)
    clicks = export_conversions(hashed, settings, destination="google-ads",
                                conversion="deal_won", out=tmp_path / "c.csv", now=now)
    assert (clicks.conversions, clicks.rejected) == (1, 0)  # his gclid is no personal data
    leads = export_conversions(hashed, settings, destination="google-ads", conversion="lead",
                               out=tmp_path / "l.csv", fmt="leads-csv", now=now)
    assert leads.conversions == 0
    assert leads.rejects_by_reason == {"pii_hashed_at_rest": leads.rejected}
    assert leads.rejected >= 1

    done = erase(hashed, settings, kind="email", value="John@Gmail.com")
    assert done.person_count == 1
    left = {n: int(hashed.table(n).count().execute())
            for n in ("events", "touches", "identities", "persons", "journeys", "credits")}
    assert left == dict.fromkeys(left, 0)
