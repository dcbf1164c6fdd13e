"""``touchline privacy rehash``: rows loaded while ``pii_at_rest`` was ``plain`` become what a
hashed load stores, a second rehash changes nothing, and prepare then stitches the people of
a warehouse hashed from the start."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from factories import CLI_OWN_CONNECTION
from ibis.backends import BaseBackend
from test_hashed_at_load import ANN, CARL_URL_AT_REST, PHONE, _files, _found, _keyed, _settings
from typer.testing import CliRunner

from touchline import engine, store
from touchline.cli import app
from touchline.collect.ingest import ingest_file
from touchline.errors import ConfigError
from touchline.prepare import run_prepare
from touchline.privacy import rehash
from touchline.privacy.rehash import REHASHED

#: columns a load sets by the run, not by the data
_PER_LOAD = ("ingest_id", "rejected_at", "source")


def _raw(con: BaseBackend) -> dict[str, pd.DataFrame]:
    """The text columns of the raw tables (what a rehash rewrites), null as None."""
    out = {}
    for name in REHASHED:
        key = store.TABLES[name].key
        t = con.table(name)
        text = [c for c, dtype in t.schema().items() if dtype.is_string() and c not in _PER_LOAD]
        frame = t.select(*text).to_pandas().astype(object)
        out[name] = frame.where(frame.notna(), None).sort_values(key).reset_index(drop=True)
    return out


def _load(con: BaseBackend, tmp_path: Path, modes: dict[str, str]) -> None:
    store.init(con)
    tmp_path.mkdir(exist_ok=True)
    for kind, path in _files(tmp_path).items():
        ingest_file(con, path, kind, settings=_settings(tmp_path, modes.get(kind, "plain")))


def test_rehash_gives_the_raw_tables_of_a_hashed_load_and_is_idempotent(
        con: BaseBackend, tmp_path: Path) -> None:
    # surveys were loaded after the switch: already keyed, left alone
    _load(con, tmp_path / "mixed", {"surveys": "hashed"})
    assert "events" in _found(con)  # the plain rows hold the test's e-mails and phones
    settings = _settings(tmp_path)
    done = rehash(con, settings)
    # events m1, m2, m5 (contacts, JSON, URL), m3 (its e-mail_sha256 keyed), m4's reject;
    # the deal, the call, the review; and both rejects' raw records
    assert done == {"events": 4, "deals": 1, "calls": 1, "reviews": 1, "surveys": 0,
                    "rejects": 2}
    assert _found(con) == {}
    rehashed = _raw(con)
    assert rehashed["events"].set_index("message_id").loc["m5", "url"] == CARL_URL_AT_REST
    # hashed from the start, on DuckDB: the same raw tables
    reference = engine.connect(settings=settings)
    _load(reference, tmp_path / "hashed", dict.fromkeys(REHASHED, "hashed"))
    for name, frame in _raw(reference).items():
        pd.testing.assert_frame_equal(rehashed[name], frame, check_like=True, obj=name)
    # a second rehash finds nothing
    assert set(rehash(con, settings).values()) == {0}
    for name, frame in _raw(con).items():
        pd.testing.assert_frame_equal(rehashed[name], frame, check_like=True, obj=name)


def test_prepare_after_a_rehash_stitches_the_people_of_a_hashed_load(con: BaseBackend,
                                                                     tmp_path: Path) -> None:
    _load(con, tmp_path / "plain", {})
    settings = _settings(tmp_path)
    rehash(con, settings)
    run_prepare(con, settings)
    assert _found(con) == {}
    ident = con.table("identities").to_pandas().set_index("identifier").person_id
    # Ann's address, her number and the device that gave her SHA-256 (c1): one person
    ann = ident[f"email:{_keyed(ANN)}"]
    assert ident[f"phone:{_keyed(PHONE)}"] == ann == ident["anon:c1"] == ident["anon:a1"]
    got = sorted(map(sorted, con.table("identities").to_pandas().groupby("person_id")
                     .identifier.apply(list)))
    reference = engine.connect(settings=settings)
    _load(reference, tmp_path / "hashed", dict.fromkeys(REHASHED, "hashed"))
    run_prepare(reference, settings)
    expected = sorted(map(sorted, reference.table("identities").to_pandas()
                          .groupby("person_id").identifier.apply(list)))
    assert got == expected


def test_rehash_refuses_in_plain_mode(tmp_path: Path) -> None:
    settings = _settings(tmp_path, "plain")
    with pytest.raises(ConfigError, match="pii_at_rest"):
        rehash(engine.connect(settings=settings), settings)


@pytest.mark.duckdb_only(reason=CLI_OWN_CONNECTION)
def test_cli_privacy_rehash_says_what_it_rewrote(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"duckdb://{tmp_path / 'wh.duckdb'}"
    plain = _settings(tmp_path, "plain").model_copy(update={"database_url": url})
    with engine.connected(settings=plain) as con:
        store.init(con)
        ingest_file(con, _files(tmp_path)["surveys"], "surveys", settings=plain)
    monkeypatch.setenv("TOUCHLINE_PII_AT_REST", "hashed")
    monkeypatch.setenv("TOUCHLINE_PII_HASH_KEY", "test-key-of-sixteen-chars")
    done = CliRunner().invoke(app, ["privacy", "rehash", "-d", url, "--no-run"])
    assert done.exit_code == 0, done.output
    assert "surveys: 1 rows rewritten" in done.output
    again = CliRunner().invoke(app, ["privacy", "rehash", "-d", url, "--no-run"])
    assert "surveys: 0 rows rewritten" in again.output
