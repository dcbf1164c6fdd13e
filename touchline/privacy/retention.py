"""Retention: raw events older than ``settings.raw_event_retention_days`` are deleted.

Prepared tables and aggregates are kept: prepare's step ``keep_retained_touches`` feeds the
stored touches of deleted events back into every later run, so sessions, identities, journeys
and credits stay what they were. What goes is the raw record: its properties, traits and
context JSON, user agent, IP address, full URL and referrer, e-mail and phone as received.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from touchline import engine, store
from touchline.config import Settings
from touchline.errors import ConfigError

if TYPE_CHECKING:
    from ibis.backends import BaseBackend

log = logging.getLogger(__name__)


def retention_horizon(settings: Settings, now: datetime) -> datetime:
    """The time before which raw events are deleted."""
    if settings.raw_event_retention_days is None:
        raise ConfigError("settings.raw_event_retention_days is not set: raw events are kept "
                          "for ever (set it, e.g. TOUCHLINE_RAW_EVENT_RETENTION_DAYS=395)")
    return now - timedelta(days=settings.raw_event_retention_days)


def apply_retention(con: BaseBackend, settings: Settings, *,
                    now: datetime | None = None) -> int:
    """Delete the raw events that happened before the horizon; return how many.

    ``touchline run`` does this right after preparing, so every deleted event was prepared
    first; run ``touchline retention apply`` on its own only after a run (an event ingested
    since, older than the horizon, would go before its touch was made).
    """
    now = now or datetime.now(UTC).replace(tzinfo=None)
    horizon = retention_horizon(settings, now)
    store.init(con)
    deleted = engine.delete_where(con, "events", lambda t: t.timestamp < horizon)
    log.info("retention: %d raw events before %s deleted", deleted, horizon.date())
    return deleted
