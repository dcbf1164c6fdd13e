"""``drop_*`` steps: rows that cannot be a touch go to ``rejects`` with a reason; clock skew.

Each function is pure: Ibis tables in, a :class:`~touchline.prepare.base.Split` (or a corrected
table plus its audit) out; ``kept`` + ``rejected`` is always the input, row for row.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from datetime import datetime, timedelta

import ibis
import ibis.expr.types as ir

from touchline.engine import epoch_ms
from touchline.prepare.base import Split, split, split_by_lookup
from touchline.prepare.reference import bot_pattern

log = logging.getLogger(__name__)

#: the ids that can tie a touch to a journey; a row with none of them belongs to nobody
IDENTITY_COLUMNS = ("anonymous_id", "user_id", "email", "phone", "email_sha256", "phone_sha256",
                    "previous_id", "contact_id")


def drop_missing_ids(events: ir.Table) -> Split:
    """Drop rows without a ``message_id`` or without any identity.

    An id-less row cannot be deduplicated, and a row with none of anonymous_id, user_id, e-mail,
    phone (plain or SHA-256), previous_id or CRM contact id cannot be placed in anyone's journey.
    """
    mid = events.message_id
    # strip() only where the first character may be white space (space and the controls sort
    # at or below " "): trimming every id costs more than the rest of the step. A comparison,
    # not isin() on the six blanks, which DuckDB ran as a join, 2 s per 10M rows each time
    blank = ibis.ifelse(mid.substr(0, 1) <= " ", mid.strip() == "", mid == "")
    no_message = mid.isnull() | blank
    no_identity = ibis.and_(*(events[c].isnull() for c in IDENTITY_COLUMNS))
    first = split(events, no_message, "missing_message_id",
                  "the row has no message_id, so it cannot be deduplicated",
                  field_name="message_id")
    second = split(first.kept, no_identity, "no_identity",
                   "no anonymous_id, user_id, email, phone, email_sha256, phone_sha256, "
                   "previous_id or contact_id: "
                   "in no journey")
    return Split(kept=second.kept, rejected=first.rejected.union(second.rejected))


def drop_spam_calls(events: ir.Table, *, outcomes: Sequence[str]) -> Split:
    """Drop phone calls whose telephony disposition (``call_outcome``, from the call's
    properties) is one of ``outcomes`` (trimmed, lower case): a robocall or a wrong number is
    no marketing touch, and its caller would become a person of its own."""
    wanted = [o.strip().lower() for o in outcomes]
    spam = events.call_outcome.strip().lower().isin(wanted) if wanted else ibis.literal(False)
    return split(events, spam, "spam_call",
                 "the call's outcome says spam (settings.call_spam_outcomes)",
                 field_name="outcome")


def correct_clock_skew(events: ir.Table, *, flag_seconds: int) -> tuple[ir.Table, ir.Table]:
    """Correct client clock skew with Segment's rule, and audit every corrected timestamp.

    .. math:: timestamp = received\\_at - (sent\\_at - original\\_timestamp)

    applied only when all three exist: the client's clock may be wrong, but the interval between
    the event and the batch send is measured on one clock, and ``received_at`` is the server's.
    Corrections whose skew ``|sent_at - received_at|`` exceeds ``flag_seconds`` are audited as
    ``large_clock_skew``, the rest as ``clock_skew``.
    """
    has_all = (events.received_at.notnull() & events.sent_at.notnull()
               & events.original_timestamp.notnull())
    corrected = events.received_at - (events.sent_at - events.original_timestamp)
    fixed = events.mutate(_old_ts=events.timestamp,
                          timestamp=ibis.ifelse(has_all, corrected, events.timestamp))
    skew = (epoch_ms(fixed.sent_at) - epoch_ms(fixed.received_at)).abs()
    changed = fixed.filter(has_all & (fixed._old_ts.isnull() | (fixed._old_ts != fixed.timestamp)))
    large = skew > flag_seconds * 1000
    audit = changed.select(
        field=ibis.literal("timestamp"),
        reason_code=ibis.ifelse(large, "large_clock_skew", "clock_skew"),
        reason=ibis.ifelse(
            large,
            f"client clock off by more than {flag_seconds} s; timestamp = received_at - "
            "(sent_at - original_timestamp)",
            "timestamp = received_at - (sent_at - original_timestamp)",
        ),
        message_id=changed.message_id,
        old_value=changed._old_ts.cast("string"),
        new_value=changed.timestamp.cast("string"),
        row_count=ibis.literal(1, type="int64"),
    )
    return fixed.drop("_old_ts"), audit


def drop_impossible_timestamps(events: ir.Table, *, earliest: datetime) -> Split:
    """Drop untimed rows and rows dated before ``earliest`` (a 1970 epoch-zero default, say):
    an untimed touch fits no journey."""
    bad = events.timestamp.isnull() | (events.timestamp < ibis.timestamp(earliest))
    return split(events, bad, "impossible_timestamp",
                 f"timestamp missing or before {earliest:%Y-%m-%d}", field_name="timestamp")


def drop_future_timestamps(events: ir.Table, *, now: datetime, tolerance: timedelta) -> Split:
    """Drop rows dated after their receipt (or the run, if never received) plus ``tolerance``:
    a touch cannot happen after the server saw it."""
    limit = events.received_at.fill_null(ibis.timestamp(now)) + ibis.interval(
        seconds=int(tolerance.total_seconds()))
    return split(events, events.timestamp > limit, "future_timestamp",
                 f"timestamp more than {tolerance} after receipt", field_name="timestamp")


def bot_user_agents(agents: list[str], *, crawler_list: bool = True,
                    patterns: Sequence[str] = (), allow: Sequence[str] = ()) -> list[str]:
    """The user agents among ``agents`` that are bots: matching the crawler-user-agents list
    (unless ``crawler_list`` is off) or one of ``patterns``, and none of ``allow``
    (all case-insensitive).

    Called on the *distinct* user agents only (thousands, not millions of rows).
    """
    tests = [bot_pattern()] if crawler_list else []
    tests += [re.compile(p, re.IGNORECASE) for p in patterns]
    allowed = [re.compile(p, re.IGNORECASE) for p in allow]
    return [ua for ua in agents
            if ua and any(t.search(ua) for t in tests) and not any(a.search(ua) for a in allowed)]


def drop_bot_user_agents(events: ir.Table, bots: ir.Table) -> Split:
    """Drop rows whose user agent is in ``bots`` (a one-column table ``user_agent``):
    crawler hits inflate reach and dilute credit."""
    return split_by_lookup(events, events.user_agent, bots, "user_agent", "bot_user_agent",
                           "user agent matches the crawler-user-agents list or "
                           "bot_user_agent_patterns", field_name="user_agent")


def _device(events: ir.Table) -> ir.StringValue:
    """The device a hit counts against: ``anonymous_id``, else ``user_id``."""
    return events.anonymous_id.fill_null(events.user_id)


def burst_candidates(events: ir.Table, *, max_per_minute: int) -> ir.Table:
    """Devices (column ``_device``) that *may* exceed ``max_per_minute`` hits in 60 seconds.

    Any 60-second window spans at most two calendar minutes, so a window with more than
    ``N = max_per_minute`` hits has at least ``(N + 1) / 2`` of them in one calendar minute:

    .. math:: \\max_{t} |hits \\cap [t, t + 60 s)| > N \\implies
              \\max_{m} |hits \\cap minute_m| \\ge (N + 1) / 2

    A hash aggregate on a two-column projection (no sort, no wide columns) keeps only the
    devices that pass this necessary test; :func:`burst_devices` decides exactly on their rows.
    """
    per_minute = (events.select(_device=_device(events), _minute=events.timestamp.truncate("m"))
                  .filter(ibis._._device.notnull())
                  .group_by(["_device", "_minute"]).aggregate(_hits=ibis._.count())
                  .filter(ibis._._hits * 2 > max_per_minute))
    return per_minute.select("_device").distinct()


def burst_devices(events: ir.Table, *, max_per_minute: int,
                  candidates: ir.Table | None = None) -> ir.Table:
    """Devices (column ``_device``) with more than ``max_per_minute`` hits in some 60 seconds.

    Sliding, not calendar, minutes: with a limit of 200, 300 hits from 10:00:30 to 10:01:29
    are a burst although each calendar minute holds only 150. For each hit at ``t`` the
    window counts the device's hits in ``[t, t + 60 s)`` (a range window over epoch
    milliseconds); the busiest window starts at a hit, so this finds it. Only the rows of
    :func:`burst_candidates` (stored by the caller, else inline) enter the window sort.
    """
    if candidates is None:
        candidates = burst_candidates(events, max_per_minute=max_per_minute)
    hits = events.select(_device=_device(events), _ms=epoch_ms(events.timestamp))
    hits = hits.semi_join(candidates, hits._device == candidates._device)
    window = ibis.window(group_by="_device", order_by="_ms", range=(0, 59_999))
    counted = hits.mutate(_in_minute=ibis._.count().over(window))
    return counted.filter(counted._in_minute > max_per_minute).select("_device").distinct()


def drop_bot_bursts(events: ir.Table, *, max_per_minute: int,
                    devices: ir.Table | None = None) -> Split:
    """Drop every row of a device that made more than ``max_per_minute`` hits in 60 seconds.

    No person clicks hundreds of times a minute; scripts with a browser's user agent do.
    ``devices``: :func:`burst_devices` computed once (stored) by the caller, else inline.
    """
    bots = devices if devices is not None else burst_devices(
        events, max_per_minute=max_per_minute)
    bots = bots.view()  # it may derive from ``events``: a self-join needs its own name
    return split_by_lookup(events, _device(events), bots,
                           "_device", "bot_behaviour",
                           f"device made more than {max_per_minute} hits within 60 seconds")
