"""API keys: created once, shown once, stored only as a SHA-256 hash.

Keys are 32 random bytes, so a fast hash is enough (no password stretching needed) and the
collector can check one in microseconds. Workers never open the warehouse (DuckDB has one
writer: the loader): the loader and ``touchline serve`` export the live keys' hashes to
``keys.json`` in the spool folder, and each worker rereads that file when it changes.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import orjson
import pyarrow as pa

from touchline import engine
from touchline.errors import ConfigError
from touchline.store import WRITE_KEYS

if TYPE_CHECKING:
    from ibis.backends import BaseBackend

log = logging.getLogger(__name__)

# write: live tracking from browsers and apps, public (t.js puts it in every page), so it
# reaches only the tracking endpoints; server: server-side tracking and webhooks, never in a
# page; import: back-fills and replays, whose messages keep their own receivedAt; read:
# reporting API; admin: everything, including /v1/stats.
KEY_KINDS = ("write", "server", "import", "read", "admin")
KEY_PREFIXES = {"write": "tlw", "server": "tls", "import": "tli", "read": "tlr", "admin": "tla"}
KEYS_FILE = "keys.json"
RELOAD_CHECK_SECONDS = 1.0


def hash_key(key: str) -> str:
    """The stored form of a key."""
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class ApiKey:
    """A key as the collector knows it: who it is for, never the key itself."""

    key_id: str
    name: str
    kind: str


def create_key(con: BaseBackend, *, name: str, kind: str) -> tuple[str, ApiKey]:
    """Store a new key and return it in clear (the only time it is ever visible)."""
    if kind not in KEY_KINDS:
        raise ConfigError(f"key kind {kind!r} is not one of {', '.join(KEY_KINDS)}")
    if not name.strip():
        raise ConfigError("a key needs a non-empty --name (e.g. web, server, chat)")
    key = f"{KEY_PREFIXES[kind]}_{secrets.token_urlsafe(32)}"
    key_id = key[:12]
    row = {
        "key_id": [key_id],
        "name": [name.strip()],
        "kind": [kind],
        "key_hash": [hash_key(key)],
        "created_at": [datetime.now(UTC).replace(tzinfo=None)],
        "revoked_at": [None],
    }
    engine.append(con, WRITE_KEYS.name, pa.table(row, schema=WRITE_KEYS.schema.to_pyarrow()))
    return key, ApiKey(key_id, name.strip(), kind)


def revoke_key(con: BaseBackend, key_id: str) -> bool:
    """Mark a key revoked; return whether one was found."""
    keys = con.table(WRITE_KEYS.name)
    found = bool(keys.filter(keys.key_id == key_id).count().execute() > 0)
    if found:
        now = datetime.now(UTC).replace(tzinfo=None)
        rows = keys.mutate(
            revoked_at=(keys.key_id == key_id).ifelse(now, keys.revoked_at)
        ).to_pyarrow()
        engine.load_table(con, WRITE_KEYS.name, rows.cast(WRITE_KEYS.schema.to_pyarrow()))
    return found


def list_keys(con: BaseBackend) -> list[dict[str, object]]:
    """Every key without its hash, oldest first."""
    keys = con.table(WRITE_KEYS.name)
    rows: list[dict[str, object]] = (
        keys.drop("key_hash").order_by("created_at").to_pyarrow().to_pylist()
    )
    return rows


def export_keys(con: BaseBackend, spool_dir: Path) -> int:
    """Write the live keys' hashes to the spool folder for the workers; return how many."""
    keys = con.table(WRITE_KEYS.name)
    live = keys.filter(keys.revoked_at.isnull()).select("key_hash", "key_id", "name", "kind")
    rows = live.to_pyarrow().to_pylist()
    spool_dir.mkdir(parents=True, exist_ok=True)
    payload = orjson.dumps({r["key_hash"]: [r["key_id"], r["name"], r["kind"]] for r in rows})
    target = spool_dir / KEYS_FILE
    if target.exists() and target.read_bytes() == payload:
        return len(rows)
    tmp = target.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_bytes(payload)
    os.replace(tmp, target)
    return len(rows)


class KeyRing:
    """The live keys, looked up by hash; reloads ``keys.json`` when it changes."""

    def __init__(self, path: Path | None = None, keys: dict[str, ApiKey] | None = None) -> None:
        self.path = path
        self._keys: dict[str, ApiKey] = dict(keys or {})
        self._mtime: float | None = None
        self._checked = 0.0

    @classmethod
    def from_clear(cls, entries: dict[str, tuple[str, str]]) -> KeyRing:
        """A fixed ring from clear keys (``{key: (name, kind)}``), for tests and embedding."""
        return cls(keys={hash_key(k): ApiKey(k[:12], n, kind) for k, (n, kind) in entries.items()})

    def lookup(self, key: str, now: float) -> ApiKey | None:
        """The key's record if it is live, else ``None``."""
        if self.path is not None and now - self._checked >= RELOAD_CHECK_SECONDS:
            self._checked = now
            self._reload()
        return self._keys.get(hash_key(key))

    def _reload(self) -> None:
        assert self.path is not None
        try:
            mtime = self.path.stat().st_mtime
        except FileNotFoundError:
            return
        if mtime == self._mtime:
            return
        try:
            data = orjson.loads(self.path.read_bytes())
        except (OSError, orjson.JSONDecodeError) as exc:
            log.warning("cannot read key file %s: %s; keeping the previous keys", self.path, exc)
            return
        self._keys = {h: ApiKey(*v) for h, v in data.items()}
        self._mtime = mtime
        log.info("loaded %d API keys from %s", len(self._keys), self.path)
