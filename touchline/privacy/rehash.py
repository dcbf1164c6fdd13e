"""``touchline privacy rehash``: rows stored before ``pii_at_rest = "hashed"`` was switched on
rewritten to what a hashed load stores.

A load keys e-mails and phones as it writes (:mod:`touchline.collect.at_rest`); rows loaded
earlier keep what they had. :func:`rehash` gives every raw table holding contacts the form a
hashed load would have given it, by the same code (:func:`~touchline.collect.at_rest.protect`
with ``keep_keyed``): e-mails and phones keyed, contact fields and e-mail addresses out of
JSON, URLs and titles, phone numbers out of free text, ``rejects.raw`` scrubbed as a hashed
load scrubs it. A value that is already 64 hex digits is taken as keyed and kept, so a second
rehash finds nothing to change; only rows that change are rewritten (deleted and appended,
one transaction on DuckDB).

Prepared tables are rebuilt from the raw ones by ``touchline run`` (the CLI runs it after
rehashing): prepare keys what it reads in this mode, so touches, identities and everything
built on them come out as a hashed-from-the-start warehouse's.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import ibis
import ibis.expr.types as ir

from touchline import engine, store
from touchline.collect import at_rest
from touchline.config import Settings
from touchline.errors import ConfigError

if TYPE_CHECKING:
    from ibis.backends import BaseBackend

log = logging.getLogger(__name__)

#: the raw tables a rehash rewrites, in order
REHASHED = ("events", "deals", "calls", "reviews", "surveys", "rejects")
_SCRATCH = "tmp_rehash_"


def rehash(con: BaseBackend, settings: Settings) -> dict[str, int]:
    """Rewrite the plain e-mails and phone numbers of every raw table to their keyed form
    (see the module); return the rows rewritten per table. Idempotent."""
    if settings.pii_at_rest != "hashed":
        raise ConfigError("touchline privacy rehash keys e-mails and phones as pii_at_rest = "
                          "'hashed' does; set it (and TOUCHLINE_PII_HASH_KEY) first")
    store.init(con)
    done = {}
    for table in REHASHED:
        done[table] = _rehash_table(con, table, settings)
        log.info("rehash: %s: %d rows rewritten", table, done[table])
    return done


def _fingerprint(rows: ir.Table, columns: list[str]) -> ir.StringValue:
    """SHA-256 of the row's text ``columns``: what tells a rewritten row from its old one."""
    parts = [ibis.literal(f"{i}:") + rows[c].cast("string").length().cast("string").fill_null("-")
             + ":" + rows[c].cast("string").fill_null("") for i, c in enumerate(columns)]
    return ibis.literal("|").join(parts).hexdigest("sha256")


def _rehash_table(con: BaseBackend, name: str, settings: Settings) -> int:
    table = con.table(name)
    key = store.TABLES[name].key
    assert key is not None and "|" not in key
    columns = [c for c, dtype in table.schema().items() if dtype.is_string() and c != key]
    before = table.mutate(_before=_fingerprint(table, columns))
    if name == "rejects":
        after = _rescrubbed_rejects(con, before, settings)
    else:
        after = at_rest.protect(con, name, before, settings, keep_keyed=True)
    changed = after.filter(after._before != _fingerprint(after, columns))
    scratch = f"{_SCRATCH}{name}"
    new = engine.materialise(con, scratch, changed.select(*table.columns))
    try:
        count = int(new.count().execute())
        if count:
            keys = new.select(_key=new[key])
            with engine.transaction(con):
                engine.delete_where(con, name, lambda t: t[key].isin(keys._key))
                engine.append(con, name, new)
    finally:
        engine.drop_materialised(con, scratch)
    return count


def _rescrubbed_rejects(con: BaseBackend, rows: ir.Table, settings: Settings) -> ir.Table:
    """``raw`` as a hashed load keeps it (:func:`touchline.store.safe_raw` with the contacts'
    region); only texts that may hold a contact leave the engine."""
    assert settings.pii_hash_key is not None
    region = settings.phone_region
    raw = rows.raw
    fields = "|".join(sorted(store.CONTACT_FIELDS))
    candidate = (raw.re_search(at_rest.EMAIL_IN_TEXT)
                 | raw.re_search(at_rest.PHONE_CANDIDATE)
                 | raw.re_search(f'(?i)"({fields})"'))
    return at_rest.rewrite_text(con, rows, "raw", candidate,
                                lambda text: store.safe_raw(text, region),
                                settings.pii_hash_key.get_secret_value())
