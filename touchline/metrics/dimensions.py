r"""Breakdowns the stored tables do not hold as a column and the KPIs (and the dashboard)
derive: a session's device category.

No prepared table keeps the user agent (prepare drops it from the touches), so the device of
a session is read back from the loaded ``events`` by the message id of the session's landing
touch and classified in the engine by :func:`device_category`. The dashboard's device filter
(:mod:`touchline.serve.figures`) and the KPIs' ``by=["device"]``
(:mod:`touchline.metrics.kpis`) use the same two functions, so they agree.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import ibis
import ibis.expr.types as ir

from touchline.errors import MissingInputError

if TYPE_CHECKING:
    from ibis.backends import BaseBackend

#: the device categories: what the user agent of a session's first touch says
DEVICES = ("desktop", "mobile", "tablet", "(not set)")


def device_category(user_agent: ir.StringValue) -> ir.StringValue:
    """``tablet``, ``mobile`` or ``desktop`` from a user agent, ``(not set)`` without one.

    The rules browsers' own guidance gives (MDN, "Browser detection using the user agent"):
    ``Mobi`` marks a phone; iPad, Kindle, Silk, "Tablet" and Android without ``Mobi`` are
    tablets; everything else (Windows, macOS, Linux, CrOS) is a desktop. Substring tests in
    the engine, as a user-agent parser library runs Python per row (and a regular expression
    of the same alternatives cost DuckDB six times more: the device filter's queries test every
    loaded event, a third of the dashboard's device pages)."""
    ua = user_agent.lower()

    def any_of(*words: str) -> ir.BooleanValue:
        return ibis.or_(*(ua.contains(word) for word in words))

    tablet = any_of("ipad", "tablet", "kindle", "silk", "playbook") | (
        ua.contains("android") & ~ua.contains("mobi"))
    mobile = any_of("mobi", "iphone", "ipod", "windows phone", "blackberry")
    unknown = user_agent.isnull() | (user_agent.strip() == "")
    return ibis.cases((unknown, "(not set)"), (tablet, "tablet"), (mobile, "mobile"),
                      else_="desktop")


def session_devices(con: BaseBackend) -> ir.Table:
    """``session_id``, ``device``: each session's device category, from the user agent of its
    first touch (``touches.is_landing``) in the loaded ``events`` (prepare drops the user
    agent from the touches, so the raw event is read back by its message id). Sessions
    without a web event (calls, CRM records) are ``(not set)``."""
    if "events" not in con.list_tables():
        raise MissingInputError("the device filter and the KPIs' device breakdown read the "
                                "user agents of the loaded events, and there are none: "
                                "`touchline ingest FILE --kind events`")
    t = con.table("touches")
    t = t.filter(t.is_landing.fill_null(False)).select("message_id", "device_id",
                                                       "session_index")
    # the loaded events hold each message id once (ingest drops repeats); the filters use
    # this table in semi-joins, which a repeat could not multiply anyway
    e = con.table("events").select(_message="message_id", _agent="user_agent")
    j = t.left_join(e, t.message_id == e._message)
    return j.select(session_id=j.device_id + "#" + j.session_index.cast("string"),
                    device=device_category(j._agent))
