"""Dashboard logins: sessions that survive a restart, and a limit on failed logins per client.

Sessions live in a small SQLite file next to the DuckDB warehouse (``wh.duckdb`` →
``wh.duckdb.sessions``; ``touchline dashboard --sessions-file`` chooses another), so a
restarted dashboard still knows who was logged in. SQLite (Python's standard library) rather
than a warehouse table: a login must work while ``touchline run`` holds DuckDB's one writer
lock, and a session is not data anyone analyses. The file holds only the SHA-256 of each
session token (the token itself is in the browser's cookie alone, so a copy of the file logs
no one in), the user's name, the CSRF token of the session and its expiry; rows past their
expiry are deleted as logins come. With no file (an in-memory or Spark warehouse) the same
table lives in memory and a restart logs everyone out.

:class:`LoginLimiter` counts failed logins per client address in a sliding window:
``LOGIN_FAILURES_PER_MINUTE`` failures within ``LOGIN_WINDOW_SECONDS`` and the next attempt
is answered 429 with ``Retry-After`` (the seconds until the oldest failure leaves the
window), before any password is hashed, so guessing costs the guesser time and the server no
CPU. A successful login clears the address's count. It is kept in memory: a restart forgives.
"""

from __future__ import annotations

import hashlib
import math
import os
import secrets
import sqlite3
import threading
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

#: failed logins from one address within the window before the next attempt is refused
LOGIN_FAILURES_PER_MINUTE = 5
LOGIN_WINDOW_SECONDS = 60.0
#: addresses tracked at most: past it the oldest are forgotten (a flood of addresses cannot
#: fill the memory)
LOGIN_TRACKED_ADDRESSES = 10_000
SESSIONS_SUFFIX = ".sessions"

_SCHEMA = """create table if not exists sessions (
    token_sha256 text primary key,
    user_name text not null,
    csrf text not null,
    expires_at real not null)"""


@dataclass(frozen=True)
class Session:
    """A logged-in user: name, the CSRF token of the session's forms, expiry (epoch s)."""

    user: str
    csrf: str
    expires_at: float


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class SessionStore:
    """Session tokens (hashed) in SQLite: a file, or memory when ``path`` is None."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch(mode=0o600, exist_ok=True)  # the user's own, as the warehouse is
            os.chmod(path, 0o600)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path) if path else ":memory:", isolation_level=None,
                                   check_same_thread=False, timeout=10)
        with self._lock:
            self._db.execute(_SCHEMA)

    def create(self, user: str, *, now: float, seconds: float) -> tuple[str, Session]:
        """A new session of ``user`` lasting ``seconds``: its token (for the cookie) and it.
        Expired sessions are deleted on the way."""
        token = secrets.token_urlsafe(32)
        session = Session(user, secrets.token_urlsafe(32), now + seconds)
        with self._lock:
            self._db.execute("delete from sessions where expires_at <= ?", (now,))
            self._db.execute("insert into sessions values (?, ?, ?, ?)",
                             (_digest(token), session.user, session.csrf, session.expires_at))
        return token, session

    def get(self, token: str, *, now: float) -> Session | None:
        """The live session of ``token``; None for an unknown or expired one (deleted)."""
        with self._lock:
            row = self._db.execute("select user_name, csrf, expires_at from sessions where "
                                   "token_sha256 = ?", (_digest(token),)).fetchone()
            if row is None:
                return None
            if row[2] <= now:
                self._db.execute("delete from sessions where token_sha256 = ?",
                                 (_digest(token),))
                return None
        return Session(*row)

    def delete(self, token: str) -> None:
        """Log the session of ``token`` out."""
        with self._lock:
            self._db.execute("delete from sessions where token_sha256 = ?", (_digest(token),))

    def close(self) -> None:
        with self._lock:
            self._db.close()


def sessions_file_for(database_url: str) -> Path | None:
    """Where a warehouse's dashboard sessions are kept: next to a DuckDB file (its name plus
    ``.sessions``); None (memory) for an in-memory or Spark warehouse. The URL is read as
    :func:`touchline.engine.connect` reads it."""
    from touchline.engine import DUCKDB_SCHEME

    if not database_url.startswith(DUCKDB_SCHEME):
        return None
    path = database_url[len(DUCKDB_SCHEME):].removeprefix("/")
    if path in ("", ":memory:"):
        return None
    file = Path(path).expanduser()
    return file.with_name(file.name + SESSIONS_SUFFIX)


@dataclass
class LoginLimiter:
    """Failed logins per client address in a sliding window (see the module docstring)."""

    limit: int = LOGIN_FAILURES_PER_MINUTE
    window: float = LOGIN_WINDOW_SECONDS
    failures: dict[str, deque[float]] = field(default_factory=dict)

    def retry_after(self, address: str, *, now: float) -> int | None:
        """Seconds ``address`` must wait before trying again, or None when it may try."""
        seen = self.failures.get(address)
        if seen is None:
            return None
        while seen and seen[0] <= now - self.window:
            seen.popleft()
        if not seen:
            del self.failures[address]
            return None
        if len(seen) < self.limit:
            return None
        return max(1, math.ceil(seen[0] + self.window - now))

    def failed(self, address: str, *, now: float) -> None:
        """Count a failed login of ``address``."""
        if address not in self.failures and len(self.failures) >= LOGIN_TRACKED_ADDRESSES:
            del self.failures[next(iter(self.failures))]  # the longest-tracked address
        self.failures.setdefault(address, deque()).append(now)

    def succeeded(self, address: str) -> None:
        """A correct login clears the address's failures."""
        self.failures.pop(address, None)
