"""``sessionise()``: a device's touches split wherever the gap exceeds the timeout.

Rule (GA4 and Matomo's default): a touch starts a new session when it is the device's first, or
when more than ``gap`` passed since the device's previous touch. Optionally (Matomo's rule, off
by default like GA4) a touch that carries a campaign different from the device's previous
campaign also starts one. Sessions are not split at midnight.

Performance: the windows that find gaps and number sessions run on a narrow projection (device,
epoch milliseconds, id), so wide columns (URLs, referrers) never travel through the sort; the
numbers are stored, then joined back by id in a second query (in one query DuckDB would buffer
the whole input to read it twice). Under a memory limit the windows run in parts of whole
devices (:func:`session_numbers`' ``part``).
"""

from __future__ import annotations

import logging
from datetime import timedelta

import ibis
import ibis.expr.types as ir

from touchline.engine import epoch_ms

log = logging.getLogger(__name__)

SESSION_GAP_DEFAULT = timedelta(minutes=30)
PAGE_TYPES = ("page", "screen")


def device_ids(events: ir.Table) -> ir.Table:
    """Add ``device_id``: the typed id a touch is sessionised on.

    ``anon:<anonymous_id>``, else ``user:``, ``contact:`` (a CRM's records: its contact id is
    on every one, an e-mail or phone only on some), ``email:``, ``phone:`` (server-side and
    offline touches), ``email_sha256:``, ``phone_sha256:`` (an export that names the person
    only by a hash), else ``msg:<message_id>`` (a touch of its own).
    """
    device = ibis.coalesce(
        "anon:" + events.anonymous_id, "user:" + events.user_id, "contact:" + events.contact_id,
        "email:" + events.email, "phone:" + events.phone,
        "email_sha256:" + events.email_sha256, "phone_sha256:" + events.phone_sha256,
        "msg:" + events.message_id,
    )
    return events.mutate(device_id=device)


def campaign_key(events: ir.Table) -> ir.StringValue:
    """source|medium|campaign of a touch that carries UTMs, else null."""
    has = ibis.or_(*(events[c].notnull() for c in ("utm_source", "utm_medium", "utm_campaign")))
    key = (events.utm_source.fill_null("") + "|" + events.utm_medium.fill_null("") + "|"
           + events.utm_campaign.fill_null(""))
    return ibis.ifelse(has, key, ibis.null("string"))


def sessionise(events: ir.Table, *, gap: timedelta = SESSION_GAP_DEFAULT,
               new_on_campaign: bool = False, numbers: ir.Table | None = None) -> ir.Table:
    """Add ``session_index`` (1-based per device), ``session_id`` and ``is_landing``.

    ``events`` must have unique ``message_id`` and a ``device_id`` (:func:`device_ids`).
    ``numbers``: :func:`session_numbers` of ``events`` stored by the caller, else inline.
    """
    if numbers is None:
        numbers = session_numbers(session_keys(events, new_on_campaign=new_on_campaign),
                                  gap=gap, new_on_campaign=new_on_campaign)
    out = numbers.inner_join(events, numbers._sid == events.message_id).drop("_sid")
    return out.mutate(session_id=out.device_id + "#" + out.session_index.cast("string"))


#: bytes a key row of :func:`session_keys` takes in DuckDB's window (two uuid-like ids, epoch
#: milliseconds, the start flag, the sort's own keys), measured: 9.09M rows needed 1.86 GiB
#: peak RSS, and failed under 1.1 GiB; a campaign key adds its text
SESSION_KEY_ROW_BYTES = 250
SESSION_CAMPAIGN_ROW_BYTES = 350


def session_keys(events: ir.Table, *, new_on_campaign: bool = False) -> ir.Table:
    """The narrow projection the session windows read: ``message_id``, ``_device``, ``_ms``
    (epoch milliseconds) and, with ``new_on_campaign`` only, ``_campaign`` (see the module
    docstring)."""
    keys = {"_device": events.device_id, "_ms": epoch_ms(events.timestamp)}
    if new_on_campaign:
        keys["_campaign"] = campaign_key(events)
    return events.select("message_id", **keys)


def session_numbers(keys: ir.Table, *, gap: timedelta = SESSION_GAP_DEFAULT,
                    new_on_campaign: bool = False, part: tuple[int, int] = (0, 1)
                    ) -> ir.Table:
    """``_sid`` (the message_id), ``session_index`` and ``is_landing`` of every touch of
    ``keys`` (:func:`session_keys`) whose device falls in ``part`` = (k, parts).

    Why parts: a window holds its whole input in memory on DuckDB (1.4 spills little of it):
    at 45M touches the session windows alone needed more than a 6 GB limit. Split by a hash
    of the device, each part is a device's whole history, so the parts' numbers are the
    numbers of one window over all: ``part = (k, n)`` keeps the devices with
    ``((hash(device) % n) + n) % n = k`` (the sum in brackets: Spark's hash is signed).
    """
    index, parts = part
    if parts > 1:
        bucket = ((keys._device.hash() % parts) + parts) % parts
        keys = keys.filter(bucket == index)
    order = [keys._ms, keys.message_id]
    window = ibis.window(group_by=keys._device, order_by=order)
    previous = keys._ms.lag().over(window)
    starts = previous.isnull() | ((keys._ms - previous) > int(gap.total_seconds() * 1000))
    flagged = keys.mutate(_new=starts)
    if new_on_campaign:
        tagged = flagged.filter(flagged._campaign.notnull())
        tagged = tagged.mutate(_earlier=tagged._campaign.lag().over(
            ibis.window(group_by=tagged._device, order_by=[tagged._ms, tagged.message_id])))
        # the device's first campaign also starts a session unless it opens the device
        switched = tagged.filter(tagged._earlier.isnull() | (tagged._earlier != tagged._campaign)
                                 ).select(_switch_id="message_id")
        # a join, not isin(subquery): Spark cannot resolve the window's table inside one
        joined = flagged.left_join(switched, flagged.message_id == switched._switch_id)
        flagged = joined.mutate(_new=joined._new | joined._switch_id.notnull()).drop("_switch_id")
    numbered = flagged.mutate(
        session_index=flagged._new.cast("int64").sum().over(
            ibis.cumulative_window(group_by=flagged._device,
                                   order_by=[flagged._ms, flagged.message_id])),
    )
    return numbered.select(_sid="message_id", session_index="session_index", is_landing="_new")


def session_table(touches: ir.Table) -> ir.Table:
    """One row per session: timing, engagement and the landing touch's entrance values.

    Aggregates are hash aggregates over all touches, keyed on (device_id, session_index);
    entrance values come from the landing row only (one per session), so wide columns are
    read once per session.
    """
    is_page = touches.type.isin(PAGE_TYPES)
    stats = touches.group_by(["device_id", "session_index"]).aggregate(
        anonymous_id=touches.anonymous_id.min(),
        started_at=touches.timestamp.min(),
        ended_at=touches.timestamp.max(),
        event_count=touches.count(),
        pageview_count=is_page.cast("int64").sum(),
        conversion_count=(touches.revenue.notnull() & (touches.revenue != 0)).cast("int64").sum(),
        revenue=touches.revenue.sum().fill_null(0.0),
    )
    stats = stats.mutate(
        session_id=stats.device_id + "#" + stats.session_index.cast("string"),
        duration_seconds=(epoch_ms(stats.ended_at)
                          - epoch_ms(stats.started_at)).cast("float64") / 1000.0)
    landing = touches.filter(touches.is_landing).select(
        _device="device_id", _index="session_index", landing_page="page_url",
        landing_host=touches.page_url.re_extract(
            r"^[a-zA-Z][a-zA-Z0-9+.\-]*://([^/?#:]+)", 1).nullif(""),
        referrer_host="referrer_host", utm_source="utm_source", utm_medium="utm_medium",
        utm_campaign="utm_campaign", term="utm_term", content="utm_content",
        click_id_type="click_id_type", click_id="click_id", recorded_by="recorded_by",
        landing_type="type",
    )
    joined = stats.inner_join(landing, [stats.device_id == landing._device,
                                        stats.session_index == landing._index])
    return joined.drop("_device", "_index")
