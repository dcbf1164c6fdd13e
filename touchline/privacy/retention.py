"""Retention: raw records older than their table's horizon lose their personal data.

``settings.raw_event_retention_days`` sets the horizon of every raw table holding personal
data; ``settings.raw_retention_days`` overrides it per table. What each table does
(:data:`RETENTION_RULES`):

* ``events``: deleted. Prepared tables and aggregates are kept: prepare's step
  ``keep_retained_touches`` feeds the stored touches of deleted events back into every later
  run, so sessions, identities, journeys and credits stay what they were. What goes is the raw
  record: its properties, traits and context JSON, user agent, IP address, full URL and
  referrer, e-mail and phone as received.
* ``calls``: deleted. ``touchline run`` has turned each into a call touch in ``events``
  (``calls match``) before retention runs, and that touch is kept as above.
* ``surveys``: the answerer's e-mail is emptied; an answer without a ``person_id`` gets a
  device id of the person the identity graph gives that e-mail (``anon:`` identifier), so
  NPS and ratings by first-touch channel are those of before. Scores and texts stay.
* ``reviews``: the reviewer's e-mail and phone are emptied; rating, platform, date and order
  id stay (a review matched to its person by e-mail or phone only is Unassigned afterwards).
* ``deals``: past the horizon of the snapshot's latest time, the contacts' e-mails
  (``contact_emails``) are emptied and ``properties`` loses its contact fields and e-mail
  addresses. Deal id, account, stage, status, amount, times and the CRM's own contact ids
  stay: a deal keeps its revenue, its account and its person when the identity graph knows
  one of its contact ids (a deal found by e-mail only has no person afterwards).
* ``rejects``: the raw record (``raw``) is emptied; the reason and its counts stay.
* ``number_leases``: once expired before the horizon, the device and session ids are
  emptied (number, pool, UTMs and times stay, so pool usage counts stay). Calls match their
  leases before retention runs; a call that old is past the same horizon unless ``calls`` is
  given more days.

Raw tables with no personal data are kept for ever (:data:`KEPT`, each with its reason).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import ibis
import ibis.expr.types as ir

from touchline import engine, store
from touchline.collect.at_rest import without_contacts
from touchline.config import Settings
from touchline.errors import ConfigError

if TYPE_CHECKING:
    from ibis.backends import BaseBackend

log = logging.getLogger(__name__)

#: each raw table holding personal data → the time column its horizon is compared with
#: (deals: the latest of :data:`touchline.store.DEAL_TIMES` of the snapshot)
TIME_COLUMNS = {"events": "timestamp", "calls": "started_at", "surveys": "responded_at",
                "reviews": "reviewed_at", "rejects": "rejected_at", "deals": "updated_at",
                "number_leases": "expires_at"}
#: the stored tables that are neither prepared nor derived and have no retention: why
KEPT = {
    "spend": "cost by day and campaign: no person in it",
    "social": "account statistics by platform and day: no person in it",
    "search_console": "queries and pages Google aggregates over searchers: no person in it",
    "experiments": "incrementality results by channel and period: no person in it",
    "ingests": "file paths, sizes and counts of each load: no person in it",
    "runs": "when each `touchline run` ran and the rows it left, as counts: no person in it",
    "write_keys": "API keys as SHA-256 hashes: no person in it",
    "users": "the dashboard's own logins (name, argon2id hash), not tracked people",
    "spool_offsets": "bytes of each spool segment loaded: no person in it",
}
_SCRATCH = "tmp_retention_"


def retention_days(settings: Settings) -> dict[str, int]:
    """Days each raw table keeps personal data: ``raw_event_retention_days`` for all of
    :data:`TIME_COLUMNS`, overridden per table by ``raw_retention_days``; tables with none
    keep it for ever."""
    days = {}
    if settings.raw_event_retention_days is not None:
        days = dict.fromkeys(TIME_COLUMNS, settings.raw_event_retention_days)
    days.update(settings.raw_retention_days)
    return days


def retention_horizon(settings: Settings, now: datetime, table: str = "events") -> datetime:
    """The time before which ``table``'s raw records lose their personal data."""
    days = retention_days(settings).get(table)
    if days is None:
        raise ConfigError(f"no retention set for table {table}: it keeps everything for ever "
                          "(set raw_event_retention_days, e.g. "
                          "TOUCHLINE_RAW_EVENT_RETENTION_DAYS=395, or raw_retention_days)")
    return now - timedelta(days=days)


def apply_retention(con: BaseBackend, settings: Settings, *,
                    now: datetime | None = None) -> dict[str, int]:
    """Apply each table's retention rule (:data:`RETENTION_RULES`); return the rows deleted or
    emptied per table.

    ``touchline run`` does this right after preparing, so every deleted event or call was
    prepared first; run ``touchline retention apply`` on its own only after a run (an event
    ingested since, older than the horizon, would go before its touch was made).
    """
    now = now or datetime.now(UTC).replace(tzinfo=None)
    days = retention_days(settings)
    if not days:
        retention_horizon(settings, now)  # raises, saying what to set
    store.init(con)
    done = {}
    for table in days:
        horizon = retention_horizon(settings, now, table)
        old = _older(table, horizon)
        done[table] = RETENTION_RULES[table](con, settings, old)
        log.info("retention: %s: %d rows before %s deleted or emptied", table, done[table],
                 horizon.date())
    return done


Where = Callable[[ir.Table], ir.BooleanValue]


def _older(table: str, horizon: datetime) -> Where:
    if table == "deals":
        # a snapshot is as recent as its latest time (greatest skips nulls on both engines)
        return lambda t: ibis.greatest(*(t[c] for c in store.DEAL_TIMES)) < horizon
    column = TIME_COLUMNS[table]
    return lambda t: t[column] < horizon


def _delete(table: str) -> Callable[[BaseBackend, Settings, Where], int]:
    def rule(con: BaseBackend, settings: Settings, old: Where) -> int:
        return engine.delete_where(con, table, old)
    return rule


def _rewrite(con: BaseBackend, name: str, where: Where,
             rewrite: Callable[[ir.Table], ir.Table]) -> int:
    """Replace the rows of ``name`` that ``where`` selects by ``rewrite`` of them (same
    columns); return how many. The rewritten rows are computed first, then the old ones
    deleted and the new appended (one transaction on DuckDB)."""
    table = con.table(name)
    chosen = table.filter(where(table).fill_null(False))
    scratch = f"{_SCRATCH}{name}"
    new = engine.materialise(con, scratch, rewrite(chosen).select(*table.columns))
    try:
        count = int(new.count().execute())
        if count:
            with engine.transaction(con):
                engine.delete_where(con, name, where)
                engine.append(con, name, new)
    finally:
        engine.drop_materialised(con, scratch)
    return count


def _surveys(con: BaseBackend, settings: Settings, old: Where) -> int:
    key = store.contact_key(con, settings.pii_key_at_rest)
    tables = set(con.list_tables())

    def without_email(rows: ir.Table) -> ir.Table:
        if "identities" not in tables:
            return rows.mutate(email=ibis.null("string"))
        ident = con.table("identities")
        email = rows.email.strip().lower()
        node = "email:" + (email if key is None else key(email))
        people = ident.filter(ident.kind == "email").select(_node="identifier", _p="person_id")
        anon = ident.filter(ident.kind == "anon")
        devices = anon.group_by(_dp="person_id").aggregate(_device=anon.identifier.min())
        j = rows.left_join(people, node == people._node).left_join(
            devices, people._p == devices._dp)
        return j.mutate(person_id=ibis.coalesce(j.person_id, j._device.substr(5)),
                        email=ibis.null("string"))

    return _rewrite(con, "surveys", lambda t: old(t) & t.email.notnull(), without_email)


def _reviews(con: BaseBackend, settings: Settings, old: Where) -> int:
    return _rewrite(con, "reviews", lambda t: old(t) & (t.email.notnull() | t.phone.notnull()),
                    lambda rows: rows.mutate(email=ibis.null("string"),
                                             phone=ibis.null("string")))


def _rejects(con: BaseBackend, settings: Settings, old: Where) -> int:
    return _rewrite(con, "rejects", lambda t: old(t) & t.raw.notnull(),
                    lambda rows: rows.mutate(raw=ibis.null("string")))


def _deals(con: BaseBackend, settings: Settings, old: Where) -> int:
    def personal(t: ir.Table) -> ir.BooleanValue:
        scrubbed = without_contacts(t.properties)
        return t.contact_emails.notnull() | (t.properties.notnull()
                                             & (scrubbed != t.properties))

    return _rewrite(con, "deals", lambda t: old(t) & personal(t),
                    lambda rows: rows.mutate(contact_emails=ibis.null("string"),
                                             properties=without_contacts(rows.properties)))


def _leases(con: BaseBackend, settings: Settings, old: Where) -> int:
    return _rewrite(con, "number_leases",
                    lambda t: old(t) & (t.anonymous_id.notnull() | t.session_id.notnull()),
                    lambda rows: rows.mutate(anonymous_id=ibis.null("string"),
                                             session_id=ibis.null("string")))


#: what retention does to each raw table's records past its horizon (see the module)
RETENTION_RULES: dict[str, Callable[[BaseBackend, Settings, Where], int]] = {
    "events": _delete("events"), "calls": _delete("calls"), "surveys": _surveys,
    "reviews": _reviews, "rejects": _rejects, "deals": _deals,
    "number_leases": _leases,
}
