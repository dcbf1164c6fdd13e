"""Dashboard users: a name and an argon2id password hash in the warehouse's ``users`` table.

Passwords are hashed with argon2-cffi's defaults (argon2id, RFC 9106 low-memory profile); the
clear password is never stored or logged. :func:`verify_user` spends the same hashing time
for an unknown name as for a wrong password, so a login does not tell which names exist.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from functools import cache
from typing import TYPE_CHECKING

import pyarrow as pa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from touchline import engine
from touchline.errors import ConfigError
from touchline.store import USERS

if TYPE_CHECKING:
    from ibis.backends import BaseBackend

log = logging.getLogger(__name__)

PASSWORD_MIN_CHARS = 10


@cache
def _hasher() -> PasswordHasher:
    return PasswordHasher()


@cache
def _dummy_hash() -> str:
    return _hasher().hash("not a password anyone has")


def create_user(con: BaseBackend, name: str, password: str) -> None:
    """Store user ``name`` with ``password`` hashed; a taken name or a short password is a
    :class:`~touchline.errors.ConfigError`."""
    name = name.strip()
    if not name:
        raise ConfigError("a user needs a non-empty name")
    if len(password) < PASSWORD_MIN_CHARS:
        raise ConfigError(f"the password is {len(password)} characters long: use at least "
                          f"{PASSWORD_MIN_CHARS}")
    users = con.table(USERS.name)
    if users.filter(users.name == name).count().execute():
        raise ConfigError(f"user {name!r} exists already")
    row = {"name": [name], "password_hash": [_hasher().hash(password)],
           "created_at": [datetime.now(UTC).replace(tzinfo=None)], "disabled_at": [None]}
    engine.append(con, USERS.name, pa.table(row, schema=USERS.schema.to_pyarrow()))
    log.info("dashboard user created")


def list_users(con: BaseBackend) -> list[dict[str, object]]:
    """Every user without the hash, oldest first."""
    users = con.table(USERS.name)
    rows: list[dict[str, object]] = users.drop("password_hash").order_by(
        "created_at").to_pyarrow().to_pylist()
    return rows


def verify_user(con: BaseBackend, name: str, password: str) -> bool:
    """Whether ``name`` is an active user and ``password`` is theirs."""
    users = con.table(USERS.name)
    found = users.filter((users.name == name.strip()) & users.disabled_at.isnull()).select(
        "password_hash").to_pyarrow().column(0).to_pylist()
    stored = found[0] if found else _dummy_hash()
    try:
        ok = _hasher().verify(stored, password)
    except (VerificationError, InvalidHashError):
        return False
    return bool(found) and ok
