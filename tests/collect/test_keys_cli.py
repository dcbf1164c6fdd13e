"""API keys and the collector's CLI commands."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from touchline import engine, store
from touchline.cli import app
from touchline.collect.keys import KeyRing, create_key, export_keys, hash_key, revoke_key
from touchline.config import Settings
from touchline.errors import ConfigError


def test_keys_are_stored_hashed_and_revocation_reaches_the_workers(tmp_path: Path) -> None:
    settings = Settings(database_url=f"duckdb:///{tmp_path / 'w.duckdb'}")
    con = engine.connect(settings=settings)
    store.init(con)
    key, record = create_key(con, name="web", kind="write")
    stored = con.table("write_keys").to_pyarrow().to_pylist()
    assert [r["key_hash"] for r in stored] == [hash_key(key)]
    assert key not in orjson.dumps(stored, default=str).decode()
    export_keys(con, tmp_path)
    ring = KeyRing(tmp_path / "keys.json")
    assert ring.lookup(key, now=10.0) == record
    assert revoke_key(con, record.key_id) is True
    export_keys(con, tmp_path)
    assert KeyRing(tmp_path / "keys.json").lookup(key, now=10.0) is None
    with pytest.raises(ConfigError, match="kind 'owner'"):
        create_key(con, name="x", kind="owner")
    con.disconnect()


def test_cli_creates_a_key_and_prints_the_snippet(tmp_path: Path) -> None:
    runner = CliRunner()
    database = f"duckdb:///{tmp_path / 'w.duckdb'}"
    created = runner.invoke(app, ["keys", "create", "--name", "web", "-d", database])
    assert created.exit_code == 0, created.output
    key = created.stdout.strip().splitlines()[-1]
    assert key.startswith("tlw_")
    snippet = runner.invoke(app, ["snippet", "--key", key, "--host", "https://t.acme.example/"])
    assert snippet.stdout.strip() == (
        f'<script async src="https://t.acme.example/t.js" data-host="https://t.acme.example" '
        f'data-key="{key}"></script>'
    )
    listed = runner.invoke(app, ["keys", "list", "-d", database])
    assert listed.exit_code == 0 and key[:12] in listed.stdout and key not in listed.stdout


def test_cli_load_drains_the_spool(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    line = {
        "type": "page",
        "anonymousId": "a",
        "messageId": "m1",
        "receivedAt": "2025-03-01T10:00:00Z",
    }
    (spool / "1-1.seg").write_bytes(b"E" + orjson.dumps(line) + b"\n")
    database = f"duckdb:///{tmp_path / 'w.duckdb'}"
    result = CliRunner().invoke(app, ["load", "-d", database, "--spool-dir", str(spool)])
    assert result.exit_code == 0, result.output
    assert "loaded 1 events, 0 rejects" in result.stdout
