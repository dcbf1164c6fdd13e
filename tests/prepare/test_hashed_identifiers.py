"""Hashed e-mails and phones (SHA-256 hex, as exports and ad platforms give them) are
identifiers of their own, and meet their plain-text originals in the identity graph.

Expected digests come from :mod:`hashlib`, not from the engine under test.
"""

from __future__ import annotations

import hashlib

from touchline.config import Settings
from touchline.prepare import run_prepare, standardise

from .conftest import NOW, load, working


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


ANN = "ann@acme.com"
PHONE = "+12025550143"


def test_hashes_are_kept_lower_case_and_moved_out_of_the_plain_fields(con) -> None:  # type: ignore[no-untyped-def]
    """A digest in ``email`` or ``phone`` (an export hashed the field in place) moves to the
    hashed column instead of being nulled as invalid; a malformed digest is nulled and audited."""
    events = working(con, [
        {"anonymous_id": "a", "timestamp": "09:00", "email": " Ann@Acme.COM "},
        {"anonymous_id": "a", "timestamp": "09:01", "email": sha("bob@x.io").upper()},
        {"anonymous_id": "a", "timestamp": "09:02", "email_sha256": "not-a-digest"},
        {"anonymous_id": "a", "timestamp": "09:03", "phone": sha(PHONE)},
        {"anonymous_id": "a", "timestamp": "09:04", "phone_sha256": " " + sha(PHONE).upper()},
    ])
    phones = con.create_table("phones", standardise.e164_table([sha(PHONE)], "US"))
    out, audit = standardise.standardise_contacts(events, phones)
    got = out.order_by("message_id").select(
        "email", "phone", "email_sha256", "phone_sha256").to_pandas()
    got = got.astype(object).where(got.notna(), None)
    assert got.email.tolist() == [ANN, None, None, None, None]
    assert got.email_sha256.tolist() == [None, sha("bob@x.io"), None, None, None]
    assert got.phone.tolist() == [None] * 5
    assert got.phone_sha256.tolist() == [None, None, None, sha(PHONE), sha(PHONE)]
    counts = {r.reason_code: r.row_count for r in audit.to_pandas().itertuples()}
    assert counts == {"email_normalised": 1, "email_hashed": 1, "invalid_email_sha256": 1,
                      "phone_hashed": 1}


def test_a_plain_email_or_phone_and_its_sha256_meet_in_one_person(con, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A form that sends the e-mail in clear and an export that hashes it are one person; a
    record named only by a hash is sessionised on it and joins that person too."""
    load(con, [
        {"anonymous_id": "a1", "type": "identify", "email": " Ann@Acme.com", "timestamp": "09:00"},
        {"anonymous_id": "a2", "type": "track", "event": "checkout_completed",
         "email_sha256": sha(ANN), "timestamp": "10:00"},
        {"type": "track", "event": "Lead", "email_sha256": sha(ANN).upper(), "timestamp": "10:30"},
        {"anonymous_id": "a3", "type": "identify", "phone": "(202) 555-0143", "timestamp": "11:00"},
        {"anonymous_id": "a4", "type": "track", "event": "Signup", "phone_sha256": sha(PHONE),
         "timestamp": "12:00"},
        {"anonymous_id": "a5", "type": "track", "event": "Signup",
         "email_sha256": sha("eve@x.io"), "timestamp": "13:00"},
    ])
    settings = Settings(database_url="duckdb://", temp_directory=tmp_path)
    run_prepare(con, settings, now=NOW)
    ident = con.table("identities").to_pandas()
    persons = sorted(ident.groupby("person_id").identifier.apply(sorted).tolist())
    assert persons == sorted([
        ["anon:a1", "anon:a2", f"email:{ANN}", f"email_sha256:{sha(ANN)}"],
        ["anon:a3", "anon:a4", f"phone:{PHONE}", f"phone_sha256:{sha(PHONE)}"],
        ["anon:a5", f"email_sha256:{sha('eve@x.io')}"],
    ])
    kinds = dict(zip(ident.identifier, ident.kind, strict=True))
    assert kinds[f"email_sha256:{sha(ANN)}"] == "email_sha256"
    links = con.table("identity_links").to_pandas().set_index("link_id")
    assert links.loc[f"email:{ANN}|email_sha256:{sha(ANN)}", "evidence"] == "sha256"
    assert links.loc[f"phone:{PHONE}|phone_sha256:{sha(PHONE)}", "evidence"] == "sha256"
    touches = con.table("touches").to_pandas().set_index("message_id")
    assert touches.loc["m3", "device_id"] == f"email_sha256:{sha(ANN)}"


def test_no_hash_node_is_made_when_no_source_hashed(con, tmp_path) -> None:  # type: ignore[no-untyped-def]
    load(con, [{"anonymous_id": "a1", "type": "identify", "email": ANN, "timestamp": "09:00"}])
    run_prepare(con, Settings(database_url="duckdb://", temp_directory=tmp_path), now=NOW)
    assert sorted(con.table("identities").identifier.to_pandas()) == ["anon:a1", f"email:{ANN}"]
