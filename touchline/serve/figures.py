"""The charts of the dashboard and the report: the data behind each, then its Plotly figure.

Every chart is two functions. ``<chart>_data(con, ...)`` reads the stored tables
(``docs/tables.md``) and does the work in the engine (Ibis, so DuckDB and Spark alike); it
returns a small pandas frame, the aggregate the chart draws. ``<chart>_figure(frame)`` turns
that frame into a :class:`plotly.graph_objects.Figure`, with no further arithmetic. The
dashboard (:mod:`touchline.serve.app`) and the report (:mod:`touchline.serve.report`) draw
the same figures from the same data; the tests check the data, never the pixels.

The filters every data function understands, by keyword (each takes the ones it uses; see
:func:`chart_data`):

``since``, ``until``
    the time window, since inclusive and until exclusive (a conversion's time, a spend day,
    a reject's time);
``conversion``
    the conversion type (default: the stored one with the most value);
``model``
    the attribution model whose stored credits are summed;
``stage_model``
    the stage model of the stage charts;
``unit``, ``device``
    B2B accounts or B2C persons; touches in sessions on a device (desktop, mobile...);
``channel``, ``campaign``
    touches of that channel and/or campaign (:func:`touch_matches`): the credited charts
    sum the credit of those touches, the journey map draws the journeys with such a touch,
    the funnel and the stage timeline keep the units whose first session came from it.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ibis
import ibis.expr.types as ir
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative

from touchline import engine
from touchline.engine import json_value, seconds_between
from touchline.errors import ConfigError, InputError, MissingInputError, TouchlineError
from touchline.formatting import readable_number
from touchline.metrics.dimensions import DEVICES, device_category, session_devices

if TYPE_CHECKING:
    from ibis.backends import BaseBackend

    from touchline.attribution.evaluate import Truth

log = logging.getLogger(__name__)

#: the model the credited charts sum when none is asked (the settings' default otherwise)
MODEL_DEFAULT = "linear"
STAGE_MODEL_DEFAULT = "lifecycle"
LEAD_CONVERSION = "lead"
#: the overview's window when no dates are given: this many days up to the last conversion
OVERVIEW_DAYS_DEFAULT = 30
#: the journey map keeps this many touches before each conversion
JOURNEY_MAP_STEPS_DEFAULT = 4
#: ... and this many distinct paths (by journeys); the rarer ones are grouped as OTHER
JOURNEY_MAP_PATHS_DEFAULT = 10
OTHER, NO_TOUCH, CONVERSION_NODE = "other", "(no touch)", "(conversion)"
#: the pixels between two nodes of a journey map column
JOURNEY_MAP_NODE_PAD = 14
#: where the journeys that have not converted (open journeys) flow in the journey map
DROP_OFF_NODE = "(no conversion)"
_PATH_SEP = "\x1f"  # a key to group paths by, never split back or shown
#: colour-blind-safe palette (Plotly's "Safe", from CARTO), one colour per channel everywhere
PALETTE = tuple(qualitative.Safe)
#: the metrics of the overview, in order, with their unit
OVERVIEW_METRICS = {"conversions": "count", "revenue": "currency", "spend": "currency",
                    "roas": "ratio", "cpa": "currency", "leads": "count", "nps": "score"}
_LAYOUT = {"template": "plotly_white", "font": {"family": "system-ui, sans-serif", "size": 13},
           "margin": {"l": 60, "r": 20, "t": 50, "b": 50}, "height": 420}
_PLOT_MARGINS = 100  # the top and bottom margins above, in pixels

Moment = date | datetime | None


def _moment(value: Moment) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime(value.year, value.month, value.day)


def _in_window(at: ir.Value, since: Moment, until: Moment) -> ir.BooleanValue:
    """``since <= at < until`` (either bound optional) for a timestamp or date column."""
    keep: ir.BooleanValue = ibis.literal(True)
    start, end = _moment(since), _moment(until)
    if at.type().is_date():
        if start is not None:
            keep &= at >= ibis.literal(start.date())
        if end is not None:
            keep &= at < ibis.literal(end.date())
        return keep
    if start is not None:
        keep &= at >= ibis.literal(start)
    if end is not None:
        keep &= at < ibis.literal(end)
    return keep


def resolve_conversion(con: BaseBackend, conversion: str | None,
                       unit: str | None = None) -> str:
    """``conversion`` checked against the stored journeys (of ``unit``, when given), or the
    one with the most value."""
    from touchline.journeys.conversions import choose_conversion

    j = con.table("journeys")
    if unit is not None:
        j = j.filter(j.unit == unit)
        if not j.filter(j.converted).count().to_pyarrow().as_py():
            raise InputError(f"no {UNITS[unit]} journeys end in a conversion: choose the "
                             "other customers (or both)")
    return choose_conversion(j, conversion, option="conversion")


# ---- the device and B2B / B2C filters -------------------------------------------------------

#: the B2B vs B2C filter: whose journeys (accounts are B2B buying groups, persons B2C buyers)
UNITS = {"account": "B2B (accounts)", "person": "B2C (persons)"}


def check_filters(*, device: str | None, unit: str | None) -> None:
    """A :class:`~touchline.errors.ConfigError` naming the choices for an unknown device or
    unit (a hand-edited URL)."""
    if device is not None and device not in DEVICES:
        raise ConfigError(f"device {device!r}: choose from {', '.join(DEVICES)}")
    if unit is not None and unit not in UNITS:
        raise ConfigError(f"unit {unit!r}: choose from {', '.join(UNITS)} (B2B, B2C)")


def touch_matches(t: ir.Table, *, channel: str | None = None,
                  campaign: str | None = None) -> ir.BooleanValue:
    """The rows of ``t`` (touches, sessions or credits: ``channel`` and ``campaign``
    columns) of ``channel`` and of ``campaign``, either optional. Names as the KPIs and the
    channel chart show them (a touch without a channel is ``Unassigned``, one without a
    campaign ``(not set)``), matched as the KPIs match spend to credits: trimmed, lower case,
    spaces and hyphens as ``_`` (``spring`` is the ads export's ``Spring ``)."""
    from touchline.metrics.kpis import NOT_SET, UNASSIGNED, _join_key

    keep: ir.BooleanValue = ibis.literal(True)
    for value, column, unset in ((channel, "channel", UNASSIGNED),
                                 (campaign, "campaign", NOT_SET)):
        if value is not None:
            keep &= _join_key(t[column].cast("string").fill_null(unset)) == _join_key(
                ibis.literal(value))
    return keep


def filtered_journeys(con: BaseBackend, unit: str | None) -> ir.Table:
    """The stored ``journeys``, of ``unit`` (``account``: B2B, ``person``: B2C) when given."""
    j = con.table("journeys")
    return j if unit is None else j.filter(j.unit == unit)


def filtered_credits(con: BaseBackend, conversion: str | Sequence[str], *,
                     unit: str | None = None, device: str | None = None,
                     channel: str | None = None, campaign: str | None = None) -> ir.Table:
    """The stored credits of ``conversion`` (one type or several): of journeys of ``unit``
    when given, of touches in sessions of ``device`` when given (a journey's touches on
    other devices keep their credit out of the sum), and of touches of ``channel`` and
    ``campaign`` when given (:func:`touch_matches`)."""
    c = con.table("credits")
    c = c.filter(c.conversion == conversion if isinstance(conversion, str)
                 else c.conversion.isin(list(conversion)))
    if channel is not None:  # a credit row holds its touch's channel
        c = c.filter(touch_matches(c, channel=channel))
    if campaign is not None:  # ... and its campaign is the touch's session's
        jt = con.table("journey_touches")
        jt = jt.filter(touch_matches(jt, campaign=campaign))
        c = c.semi_join(jt.select("journey_id", "position"), ["journey_id", "position"])
    if unit is not None:
        c = c.semi_join(filtered_journeys(con, unit).select("journey_id"), "journey_id")
    if device is not None:
        d = session_devices(con)
        steps = con.table("journey_steps").semi_join(
            d.filter(d.device == device).select("session_id"), "session_id")
        c = c.semi_join(steps.select("journey_id", "position"), ["journey_id", "position"])
    return c


def units_first_on(con: BaseBackend, device: str | None, unit: str = "person", *,
                   channel: str | None = None, campaign: str | None = None) -> ir.Table:
    """``unit_id`` of the persons (or accounts) whose first session (by start, then id) was
    on ``device`` (and of ``channel``, of ``campaign``, when given: :func:`touch_matches`):
    the segment the unit-level charts (funnel, stage timeline) keep under the device,
    channel and campaign filters. Each unit has one first session, so the devices (the
    channels, the campaigns) split the units: their funnels add up to the unfiltered one. A
    first session with no web event is on device ``(not set)``."""
    s = con.table("sessions")
    column = s.person_id if unit == "person" else s.account_id
    s = s.filter(column.notnull()).select("session_id", "started_at", "channel", "campaign",
                                          _u=column)
    # each unit's first session by aggregations and joins (the earliest start, then the
    # smallest id), not a window ranking every session: that sorts them all
    first_at = s.group_by(_fu="_u").aggregate(_at=s.started_at.min())
    tied = s.inner_join(first_at, [s._u == first_at._fu, s.started_at == first_at._at])
    first = tied.group_by(_fu="_u").aggregate(_first=tied.session_id.min())
    s = s.inner_join(first, s.session_id == first._first)
    s = s.filter(touch_matches(s, channel=channel, campaign=campaign))
    s = s.select("_u", "session_id")
    if device is None:
        return s.select(unit_id=s._u).distinct()
    # the first sessions' devices only, as session_devices classifies them (it reads the
    # user agent of every session's landing event)
    if "events" not in con.list_tables():
        session_devices(con)  # raises its MissingInputError: which events to load
    t = con.table("touches")
    t = t.filter(t.is_landing.fill_null(False)).select(
        "message_id", _sid=t.device_id + "#" + t.session_index.cast("string"))
    e = con.table("events").select(_message="message_id", _agent="user_agent")
    s = s.left_join(t, s.session_id == t._sid).left_join(e, ibis._.message_id == e._message)
    s = s.filter(device_category(s._agent).fill_null("(not set)") == device)
    return s.select(unit_id=s._u).distinct()


def _segment_units(con: BaseBackend, device: str | None, unit: str, channel: str | None,
                   campaign: str | None) -> ir.Table:
    """:func:`units_first_on`, run once and handed on as a small table: the funnel and the
    stage timeline of one page keep the same units (the page asks the query once:
    :func:`touchline.engine.schemas_read_once`), and each chart's query stays small."""
    found = units_first_on(con, device, unit, channel=channel, campaign=campaign)
    return ibis.memtable(found.to_pyarrow())


#: one colour per channel of the default channel set (GA4's groups, touchline's additions and
#: Unassigned), each its own: Okabe and Ito's colour-blind-safe set for the most common
#: channels, then Paul Tol's muted, vibrant and light schemes (also colour-blind safe)
CHANNEL_COLOURS = {
    "Direct": "#0072B2", "Organic Search": "#009E73", "Paid Search": "#D55E00",
    "Paid Social": "#CC79A7", "Organic Social": "#56B4E9", "Email": "#E69F00",
    "Referral": "#332288", "Display": "#882255", "Affiliates": "#44AA99",
    "Paid Video": "#EE3377", "Organic Video": "#999933", "SMS": "#DDCC77", "Phone": "#117733",
    "Offline": "#888888", "Unassigned": "#BBBBBB", "AI Assistant": "#AA4499",
    "Paid Shopping": "#EE7733", "Organic Shopping": "#BBCC33", "Paid Other": "#661100",
    "Cross-network": "#77AADD", "Audio": "#FFAABB", "Mobile Push Notifications": "#33BBEE",
}
#: the colours of channels outside the default set (custom rules' groups, spend names): Tol's
#: remaining ones, none of them a default channel's
EXTRA_CHANNEL_COLOURS = ("#CC3311", "#009988", "#AAAA00", "#EE8866", "#99DDFF", "#228833",
                         "#CCBB44", "#AA3377", "#4477AA", "#EEDD88", "#000000")


def channel_colour(channel: str) -> str:
    """The channel's colour: the same on every chart, page and report. A channel of the default
    set has its own (:data:`CHANNEL_COLOURS`); any other one of :data:`EXTRA_CHANNEL_COLOURS`
    by a hash of its name (deterministic: the same on every run, whatever else is drawn)."""
    if str(channel) in CHANNEL_COLOURS:
        return CHANNEL_COLOURS[str(channel)]
    digest = hashlib.md5(str(channel).encode(), usedforsecurity=False).digest()
    return EXTRA_CHANNEL_COLOURS[digest[0] % len(EXTRA_CHANNEL_COLOURS)]


def _filter_label(data: pd.DataFrame) -> str:
    """``; B2B (accounts), mobile, Email``: the unit, device, channel and campaign filters
    a chart's data was cut by."""
    parts = [UNITS[u] if (u := data.attrs.get("unit")) else "", data.attrs.get("device") or "",
             data.attrs.get("channel") or "",
             f"campaign {c}" if (c := data.attrs.get("campaign")) else ""]
    shown = ", ".join(p for p in parts if p)
    return f"; {shown}" if shown else ""


def _figure(title: str) -> go.Figure:
    fig = go.Figure()
    fig.update_layout(title={"text": title, "x": 0.01}, **_LAYOUT)
    return fig


# ---- overview -------------------------------------------------------------------------------

#: the note of a chart whose spend, CPA and ROAS are empty because none was imported
NO_SPEND = ("no spend imported, so spend, CPA and ROAS are empty: "
            "`touchline ingest FILE --kind spend`")
#: ... or because the B2B/B2C or device filter splits what spend is not split by
SPEND_NOT_SPLIT = ("spend, CPA and ROAS are empty: spend is not split by B2B/B2C or by "
                   "device, so it is not set against part of the revenue")


def overview_window(con: BaseBackend, *, since: Moment = None, until: Moment = None,
                    conversion: str | None = None) -> tuple[datetime, datetime]:
    """The overview's window: ``[since, until)`` as given; a missing ``until`` is the day
    after the last conversion, a missing ``since`` :data:`OVERVIEW_DAYS_DEFAULT` days before
    ``until``."""
    start, end = _moment(since), _moment(until)
    if end is None:
        conversion = resolve_conversion(con, conversion)
        j = con.table("journeys")
        last = j.filter(j.converted & (j.conversion == conversion)).converted_at.max()
        at = last.to_pyarrow().as_py()
        if at is None:
            raise InputError(f"no {conversion} conversions to show: run `touchline run`")
        end = datetime(at.year, at.month, at.day) + timedelta(days=1)
    if start is None:
        start = end - timedelta(days=OVERVIEW_DAYS_DEFAULT)
    if start >= end and until is None:  # no until given: the data ends before since
        raise InputError(f"since {start:%Y-%m-%d}: the last {conversion} conversion is on "
                         f"{end - timedelta(days=1):%Y-%m-%d}, so there is nothing to show "
                         "from that day on (choose an earlier since)")
    if start >= end:
        raise InputError(f"since {start:%Y-%m-%d} is not before until {end:%Y-%m-%d}")
    return start, end


def overview_data(con: BaseBackend, *, since: Moment = None, until: Moment = None,
                  conversion: str | None = None, unit: str | None = None,
                  device: str | None = None, model: str = MODEL_DEFAULT,
                  channel: str | None = None, campaign: str | None = None) -> pd.DataFrame:
    """One row per headline metric (:data:`OVERVIEW_METRICS`): ``metric``, ``value`` in the
    window, ``previous`` in the window of the same length just before it, and ``change``
    (``value / previous - 1``; null when there is no previous value).

    conversions and revenue count every converted journey of ``conversion`` (journeys with
    no touch in their window too: the credited figures leave those out); spend is the
    ``spend`` table's cost (null when no spend was ever imported); ROAS = revenue / spend,
    CPA = spend / conversions (null with a zero denominator); leads are converted journeys
    of the ``lead`` type. ``unit`` (B2B ``account`` or B2C ``person``) keeps that unit's
    journeys; spend is not split by unit, so under it spend, ROAS and CPA are null.

    ``device`` counts what the touches in sessions on that device earned: conversions,
    revenue and leads are the stored credits of ``model`` of those touches
    (:func:`filtered_credits`), so the overview of each device adds up to the conversions
    with a touch (the channel page's sum under the same filters); journeys without a touch
    count on no device. Spend is not split by device: spend, ROAS and CPA are null. Without
    ``device``, ``channel`` or ``campaign``, ``model`` is not used (a converted journey counts
    once, whatever its touches).

    ``channel`` and ``campaign`` count, as ``device`` does, the credits of ``model`` of the
    touches of that channel and/or campaign (:func:`touch_matches`), and spend is the spend
    rows of that channel and/or campaign (matched as the KPIs match spend to credits:
    trimmed, lower case, spaces and hyphens as ``_``): the figures of that channel's row on
    the channel page (``by=campaign`` for a campaign) over the same window.
    """
    conversion = resolve_conversion(con, conversion, unit)
    start, end = overview_window(con, since=since, until=until, conversion=conversion)
    before = start - (end - start)
    periods = ibis.memtable({"period": ["current", "previous"]})

    def period_of(at: ir.Value) -> ir.StringValue:
        return ibis.cases((_in_window(at, start, end), "current"),
                          (_in_window(at, before, start), "previous"),
                          else_=ibis.null("string"))

    credited = device is not None or channel is not None or campaign is not None
    if not credited:
        j = filtered_journeys(con, unit)
        j = j.filter(j.converted)
        j = j.mutate(_period=period_of(j.converted_at))
        j = j.filter(j._period.notnull())
        main = j.conversion == conversion
        conv = j.group_by(_jp=j._period).aggregate(
            conversions=main.cast("int64").sum(),
            revenue=ibis.ifelse(main, j.value, 0.0).sum(),
            leads=(j.conversion == LEAD_CONVERSION).cast("int64").sum())
    else:
        c = filtered_credits(con, (conversion, LEAD_CONVERSION), unit=unit, device=device,
                             channel=channel, campaign=campaign)
        c = c.filter(c.model == model)
        c = c.mutate(_period=period_of(c.converted_at))
        c = c.filter(c._period.notnull())
        main = c.conversion == conversion
        conv = c.group_by(_jp=c._period).aggregate(
            conversions=ibis.ifelse(main, c.credit, 0.0).sum(),
            revenue=ibis.ifelse(main, c.value, 0.0).sum(),
            leads=ibis.ifelse(c.conversion == LEAD_CONVERSION, c.credit, 0.0).sum())
    sp = con.table("spend")
    imported = sp.aggregate(_rows=sp.count())
    sp = sp.rename(campaign="utm_campaign")  # the spend of the channel and campaign
    sp = sp.filter(touch_matches(sp, channel=channel, campaign=campaign))
    sp = sp.mutate(_period=period_of(sp.date))
    sp = sp.filter(sp._period.notnull())
    cost = sp.group_by(_sp=sp._period).aggregate(_cost=sp.cost.sum())
    t = periods.left_join(conv, periods.period == conv._jp).left_join(
        cost, periods.period == cost._sp).cross_join(imported)
    split = unit is None and device is None  # spend is split by neither
    spend = ibis.ifelse((t._rows > 0) & ibis.literal(split), t._cost.fill_null(0.0),
                        ibis.null("float64"))
    t = t.select("period", conversions=t.conversions.fill_null(0),
                 revenue=t.revenue.fill_null(0.0), spend=spend,
                 leads=t.leads.fill_null(0))
    t = t.mutate(roas=t.revenue / t.spend.nullif(0.0),
                 cpa=t.spend / t.conversions.cast("float64").nullif(0.0))
    wide = t.to_pandas().set_index("period").assign(nps=float("nan"))  # NPS: filled below
    frame = pd.DataFrame({
        "metric": list(OVERVIEW_METRICS),
        "unit": list(OVERVIEW_METRICS.values()),
        "value": wide.loc["current", list(OVERVIEW_METRICS)].astype("float64").to_numpy(),
        "previous": wide.loc["previous", list(OVERVIEW_METRICS)].astype("float64").to_numpy(),
    })
    frame["change"] = frame.value / frame.previous.where(frame.previous != 0) - 1
    nps_now, nps_before, nps_note = _overview_nps(
        con, start, end, before, filtered=not (unit is None and device is None
                                               and channel is None and campaign is None))
    nps_row = frame.metric == "nps"
    frame.loc[nps_row, ["value", "previous"]] = [nps_now, nps_before]
    # a score from -100 to 100: its change is in points, not a share of the last one
    frame.loc[nps_row, "change"] = nps_now - nps_before
    spend_note = (NO_SPEND if wide.spend.isna().all() and split else
                  None if split else SPEND_NOT_SPLIT)
    counted = ["conversions", "revenue", "leads"]
    if credited and not wide[counted].fillna(0).to_numpy().any():  # zeros: said why
        spend_note = "; ".join(part for part in (
            f"no credited conversions or leads match {_filter_label_of(channel, campaign, device)} "
            "in this window or the one before (check the names against the channel page)",
            spend_note) if part)
    frame.attrs.update(note=spend_note, nps_note=nps_note, since=start, until=end,
                       previous_since=before,
                       conversion=conversion, unit=unit, device=device, channel=channel,
                       campaign=campaign,
                       model=model if credited else None)
    return frame


#: what an overview tile says in place of a change when the period before had none of it
NO_PREVIOUS = "new: none in the previous period"
#: what the NPS tile says when no survey answer falls in the window, or in the one before
NO_ANSWERS = "no survey answers in this period"
NO_PREVIOUS_ANSWERS = "no survey answers in the previous period"
#: ... and under a device, unit, channel or campaign filter, by which answers are not split
NPS_NOT_SPLIT = "every answer: not split by these filters"


def _overview_nps(con: BaseBackend, start: datetime, end: datetime, before: datetime, *,
                  filtered: bool) -> tuple[float, float, str | None]:
    """The ``nps`` KPI of the answers in ``[start, end)`` and in ``[before, start)`` (NaN
    where none), and what the tile says: no answers, or not split by the filters set."""
    from touchline.metrics.kpis import compute, holds_rows

    nan = float("nan")
    if filtered:
        return nan, nan, NPS_NOT_SPLIT
    if not holds_rows(con, "surveys"):
        return nan, nan, NO_ANSWERS

    def score(since: datetime, until: datetime) -> float:
        got = compute(con, "nps", since=since, until=until).to_pyarrow().to_pylist()
        value = got[0]["nps"] if got else None
        return nan if value is None else float(value)

    now, then = score(start, end), score(before, start)
    note = NO_ANSWERS if math.isnan(now) else NO_PREVIOUS_ANSWERS if math.isnan(then) else None
    return now, then, note


def _filter_label_of(channel: str | None, campaign: str | None, device: str | None) -> str:
    """``channel 'Email', campaign 'spring'``: the touch filters set."""
    return ", ".join(f"{name} {value!r}" for name, value in (
        ("channel", channel), ("campaign", campaign), ("device", device)) if value)


def overview_figure(data: pd.DataFrame) -> go.Figure:
    """Seven number tiles with the change against the previous period (NPS in points)."""
    credited = f"; credited by {data.attrs['model']}" if data.attrs.get("model") else ""
    fig = _figure(f"{data.attrs.get('conversion', '')} overview: "
                  f"{data.attrs['since']:%Y-%m-%d} to "
                  f"{data.attrs['until'] - timedelta(days=1):%Y-%m-%d} against the period before"
                  f"{_filter_label(data)}{credited}")
    # under a device the counts are credits: fractions of conversions
    count_format = ",.1f" if data.attrs.get("model") else ",.0f"
    columns = 4
    for i, row in enumerate(data.itertuples(index=False)):  # seven tiles, not data rows
        r, c = divmod(i, columns)
        value = None if pd.isna(row.value) else float(row.value)
        score = row.metric == "nps"  # -100 to 100: 0 is a score, its change in points
        # a change against nothing is no change (Plotly would draw "▲Infinity%"): said instead
        compared = pd.notna(row.previous) and (score or row.previous != 0) and value is not None
        title = (row.metric.upper() if row.metric in ("roas", "cpa", "nps")
                 else row.metric.capitalize())
        # "new" only over something there now: a 0 (or an empty ROAS) is nothing new
        said = data.attrs.get("nps_note") if score else (
            NO_PREVIOUS if pd.notna(row.previous) and not compared and value else None)
        if said:
            title += f"<br><span style='font-size:12px'>{said}</span>"
        indicator: dict[str, Any] = {
            "mode": "number+delta" if compared else "number",
            "value": value,
            "title": {"text": title, "font": {"size": 15}},
            "number": {"valueformat": ",.1f" if score else ",.2f" if row.unit != "count"
                       else count_format, "font": {"size": 40}},
            "domain": {"row": r, "column": c},
        }
        if compared:
            indicator["delta"] = ({"reference": float(row.previous), "relative": False,
                                   "valueformat": "+.1f", "suffix": " points"} if score else
                                  {"reference": float(row.previous), "relative": True,
                                   "valueformat": ".1%"})
            if row.metric == "cpa":  # a lower cost per acquisition is the good direction
                indicator["delta"].update(increasing={"color": "#CC6677"},
                                          decreasing={"color": "#117733"})
        fig.add_trace(go.Indicator(**indicator))
    fig.update_layout(grid={"rows": 2, "columns": columns, "pattern": "independent",
                            "ygap": 0.45}, height=380, margin={"t": 100, "b": 30})
    return fig


# ---- channels -------------------------------------------------------------------------------

def channel_credits_data(con: BaseBackend, *, model: str = MODEL_DEFAULT,
                         conversion: str | None = None, since: Moment = None,
                         until: Moment = None, by: str = "channel", unit: str | None = None,
                         device: str | None = None, channel: str | None = None,
                         campaign: str | None = None) -> pd.DataFrame:
    """Per channel (or ``by``: source, medium, campaign, keyword, landing_page): its
    ``touches`` in the window (:func:`channel_touches`), the
    ``conversions`` and ``revenue`` the model's stored credits give it, its ``spend``,
    ``cpa`` and ``roas``: the KPI registry's ``conversions``, ``revenue``, ``cpa`` and
    ``roas`` (:mod:`touchline.metrics.kpis`), so the numbers are those of ``touchline kpis``.
    Without imported spend, spend, CPA and ROAS are null. Sorted by conversions.

    Under the B2B/B2C ``unit`` or the ``device`` filter the credits are
    :func:`filtered_credits` summed by ``by`` (the touch's value; channel Unassigned and
    other levels ``(not set)`` when null, as the KPIs name them); spend is split by neither,
    so spend, CPA and ROAS are null.

    ``channel`` and ``campaign`` keep the rows of the credited touches of that channel and/or
    campaign (:func:`touch_matches`): the KPIs broken down by ``by`` and the filtered levels
    too, then the filtered ones kept; so ``by=campaign`` with a channel lists that channel's
    campaigns, each with its credits and its spend."""
    from touchline.metrics.kpis import (
        KPIS,
        compute,
        filled_tables,
        require,
        unmatched_spend_channels,
        unmatched_spend_note,
    )

    conversion = resolve_conversion(con, conversion, unit)
    pinned = {d: v for d, v in (("channel", channel), ("campaign", campaign)) if v is not None}
    if unit is not None or device is not None:
        return _filtered_channel_credits(con, model=model, conversion=conversion, since=since,
                                         until=until, by=by, unit=unit, device=device,
                                         channel=channel, campaign=campaign)
    # the inputs of the two KPIs asked checked once, not by each
    filled = filled_tables(con, {t for name in ("cpa", "roas", "conversions", "revenue")
                                 for t in KPIS[name].tables})
    opts = {"by": [by, *(d for d in pinned if d != by)], "since": since, "until": until,
            "model": model, "conversion": conversion, "filled": filled}

    def kept(t: ir.Table) -> ir.Table:
        """The rows of the filtered channel and campaign (one per ``by`` value after it)."""
        return t.filter(touch_matches(t, channel=channel, campaign=campaign))
    try:
        require(con, KPIS["cpa"], filled=filled)
        has_spend = True
    except MissingInputError:
        has_spend = False
    if has_spend:
        cpa = kept(compute(con, "cpa", **opts))
        roas = kept(compute(con, "roas", **opts)).select(_k=by, revenue="revenue", roas="roas")
        t = cpa.inner_join(roas, cpa[by] == roas._k)
        t = t.select(by, "conversions", "revenue", spend="cost", cpa="cpa", roas="roas")
    else:
        conv = kept(compute(con, "conversions", **opts))
        rev = kept(compute(con, "revenue", **opts)).select(_k=by, revenue="revenue")
        t = conv.inner_join(rev, conv[by] == rev._k)
        t = t.select(by, "conversions", "revenue", spend=ibis.null("float64"),
                     cpa=ibis.null("float64"), roas=ibis.null("float64"))
    frame = t.order_by([ibis.desc("conversions"), by]).to_pandas()
    frame = _with_touches(con, frame, by=by, since=since, until=until, channel=channel,
                          campaign=campaign)
    if by == "channel" and since is None and until is None and campaign is None:
        frame = _with_intervals(con, frame, model=model, conversion=conversion)
    note = None if has_spend else NO_SPEND
    if has_spend and (unmatched := unmatched_spend_channels(con)):
        note = unmatched_spend_note(unmatched)  # spend under a name no credit has: said
    frame.attrs.update(model=model, conversion=conversion, by=by, channel=channel,
                       campaign=campaign, note=_joined(note, fitted_on_channels_note(model, by)))
    return frame


def _filtered_channel_credits(con: BaseBackend, *, model: str, conversion: str,
                              since: Moment, until: Moment, by: str, unit: str | None,
                              device: str | None, channel: str | None,
                              campaign: str | None) -> pd.DataFrame:
    c = filtered_credits(con, conversion, unit=unit, device=device, channel=channel,
                         campaign=campaign)
    c = c.filter((c.model == model) & _in_window(c.converted_at, since, until))
    if by == "channel":
        level = c.channel.cast("string").fill_null("Unassigned")
    else:
        jt = con.table("journey_touches").select(_j="journey_id", _p="position", _level=by)
        c = c.left_join(jt, (c.journey_id == jt._j) & (c.position == jt._p))
        level = c._level.cast("string").fill_null("(not set)")
    t = c.group_by(level.name(by)).aggregate(conversions=c.credit.sum(),
                                             revenue=c.value.sum())
    t = t.mutate(spend=ibis.null("float64"), cpa=ibis.null("float64"),
                 roas=ibis.null("float64"))
    frame = t.order_by([ibis.desc("conversions"), by]).to_pandas()
    frame = _with_touches(con, frame, by=by, since=since, until=until, unit=unit,
                          device=device, channel=channel, campaign=campaign)
    frame.attrs.update(model=model, conversion=conversion, by=by, unit=unit, device=device,
                       channel=channel, campaign=campaign,
                       note=_joined(SPEND_NOT_SPLIT, fitted_on_channels_note(model, by)))
    return frame


def fitted_on_channels_note(model: str, by: str) -> str | None:
    """Why a data-driven model's credits by campaign (keyword, source...) differ from
    ``touchline attribute --by campaign``: the stored credits come from the model fitted
    once on channel paths, each touch's credit summed here by ``by``; the command fits the
    model on the paths of ``by`` values instead. Rule-based models give the same either way.
    """
    from touchline.attribution.intervals import INTERVAL_MODELS

    if by == "channel" or model not in (*INTERVAL_MODELS, "auto"):
        return None
    return (f"{model} is fitted on channel paths: each touch's credit is summed here by "
            f"{by}. `touchline attribute --model {model} --by {by}` fits it on {by} paths "
            "instead, so its figures differ.")


def _joined(*notes: str | None) -> str | None:
    """The notes given, one after another (``None`` when there is none)."""
    return " ".join(n for n in notes if n) or None


def channel_touches(con: BaseBackend, *, by: str = "channel", since: Moment = None,
                    until: Moment = None, unit: str | None = None, device: str | None = None,
                    channel: str | None = None, campaign: str | None = None) -> ir.Table:
    """``by`` and ``touches``: the touchpoints in the window (``since <= occurred_at <
    until``) per channel (or source, medium, campaign, keyword, landing page: the session's),
    named as the KPIs name them (no channel: Unassigned; no other level: ``(not set)``).
    ``unit`` ``account`` keeps the touches of persons in an account (B2B), ``person`` those
    of any person (B2C: every person has person journeys); ``device`` the touches in
    sessions on that device; ``channel`` and ``campaign`` the touches of them
    (:func:`touch_matches`)."""
    from touchline.metrics.kpis import SESSION_LEVELS, _levels

    tp = con.table("touchpoints")
    tp = tp.filter(_in_window(tp.occurred_at, since, until)
                   & touch_matches(tp, channel=channel, campaign=campaign))
    if unit is not None:
        tp = tp.filter(tp.account_id.notnull() if unit == "account" else tp.person_id.notnull())
    if device is not None:
        d = session_devices(con)
        tp = tp.semi_join(d.filter(d.device == device).select("session_id"), "session_id")
    level = _levels(tp, {by: SESSION_LEVELS[by]})[by]
    return tp.group_by(level.name(by)).aggregate(touches=tp.count().cast("int64"))


def _with_touches(con: BaseBackend, frame: pd.DataFrame, *, by: str, **filters: Any
                  ) -> pd.DataFrame:
    """``frame`` with ``touches`` (:func:`channel_touches`) after its ``by`` column: 0 for a
    row no touch of the window has (spend alone, or credits of touches before the window)."""
    if "touchpoints" not in con.list_tables():
        return frame.assign(touches=pd.Series(dtype="Int64"))
    touches = channel_touches(con, by=by, **filters).to_pandas()
    out = frame.merge(touches, on=by, how="left")
    out["touches"] = out.touches.fillna(0).astype("int64")
    columns = list(frame.columns)
    out = out[[by, "touches", *(c for c in columns if c != by)]]
    out.attrs.update(frame.attrs)
    return out


def _with_intervals(con: BaseBackend, frame: pd.DataFrame, *, model: str,
                    conversion: str) -> pd.DataFrame:
    """``frame`` plus ``conversions_low``, ``conversions_high`` and ``flagged`` where the last
    ``touchline run`` stored bootstrap intervals of this model's channel credits (the
    data-driven models; the intervals cover every journey, so only an unfiltered period)."""
    if "credit_intervals" not in con.list_tables():
        return frame
    ci = con.table("credit_intervals")
    ci = ci.filter((ci.model == model) & (ci.conversion == conversion)).select(
        "channel", "conversions_low", "conversions_high", "flagged").to_pandas()
    if ci.empty:
        return frame
    return frame.merge(ci, on="channel", how="left")


def channel_credits_figure(data: pd.DataFrame) -> go.Figure:
    """Conversions credited to each channel under the model, revenue on hover."""
    by = data.attrs.get("by", "channel")
    fig = _figure(f"{data.attrs.get('conversion', '')} credited by {by} "
                  f"({data.attrs.get('model', '')}{_filter_label(data)})")
    labels = data[by].astype(str)
    bars = go.Bar(
        x=labels, y=data.conversions, name="conversions",
        marker_color=[channel_colour(c) for c in labels],
        customdata=data[["revenue"]], hovertemplate="%{x}<br>%{y:,.2f} conversions"
        "<br>revenue %{customdata[0]:,.2f}<extra></extra>")
    if "conversions_low" in data:  # the bootstrap interval as an error bar, hover says it
        low = data.conversions_low.fillna(data.conversions)
        high = data.conversions_high.fillna(data.conversions)
        bars.error_y = {"type": "data", "symmetric": False, "color": "#444",
                        "array": (high - data.conversions).clip(lower=0),
                        "arrayminus": (data.conversions - low).clip(lower=0)}
        flag = data.flagged.map(lambda f: " (reaches 0)" if f is True else "")
        bars.customdata = [list(row) for row in zip(data.revenue.astype(float), low.astype(
            float), high.astype(float), flag, strict=True)]
        bars.hovertemplate = ("%{x}<br>%{y:,.2f} conversions (interval %{customdata[1]:,.2f}"
                              " to %{customdata[2]:,.2f}%{customdata[3]})<br>revenue "
                              "%{customdata[0]:,.2f}<extra></extra>")
    fig.add_trace(bars)
    fig.update_layout(yaxis_title="credited conversions", showlegend=False)
    return fig


# ---- model comparison -----------------------------------------------------------------------

def model_comparison_data(con: BaseBackend, *, models: Sequence[str] | None = None,
                          conversion: str | None = None, since: Moment = None,
                          until: Moment = None, unit: str | None = None,
                          device: str | None = None, channel: str | None = None,
                          campaign: str | None = None) -> pd.DataFrame:
    """``channel``, ``model``, ``conversions``, ``revenue``: the stored credits of each model
    (default: every stored model) summed by channel. Each model's conversions sum to the
    converted journeys that have a touch (under ``unit``: of that unit; under ``device``,
    ``channel``, ``campaign``: the credit of the touches on that device, of that channel and
    campaign)."""
    conversion = resolve_conversion(con, conversion, unit)
    c = filtered_credits(con, conversion, unit=unit, device=device, channel=channel,
                         campaign=campaign)
    c = c.filter(_in_window(c.converted_at, since, until))
    if models:
        c = c.filter(c.model.isin(list(models)))
    t = c.group_by(channel=c.channel.fill_null("(not set)"), model=c.model).aggregate(
        conversions=c.credit.sum(), revenue=c.value.sum())
    frame = t.order_by(["channel", "model"]).to_pandas()
    frame.attrs.update(conversion=conversion, unit=unit, device=device, channel=channel,
                       campaign=campaign)
    return frame


def model_comparison_figure(data: pd.DataFrame) -> go.Figure:
    """One bar group per channel, one bar per model."""
    fig = _figure(f"{data.attrs.get('conversion', '')}: conversions credited by each model"
                  f"{_filter_label(data)}")
    models = sorted(data.model.unique())
    for i, model in enumerate(models):  # one trace per model, not per row
        part = data[data.model == model]
        fig.add_trace(go.Bar(x=part.channel, y=part.conversions, name=model,
                             marker_color=PALETTE[i % len(PALETTE)]))
    fig.update_layout(barmode="group", yaxis_title="credited conversions",
                      legend_title_text="model")
    return fig


def truth_for(truth: Sequence[Path], conversion: str) -> Truth:
    """The ground truth of ``conversion`` among the ``truth`` files: a simulator
    ``truth.json`` says whether its data set is B2B, and so its conversion
    (:data:`touchline.demo.DEMO_CONVERSIONS`: ``purchase`` for B2C, ``deal_won`` for B2B); a
    file that does not say (``gen_paths.py --truth``) is taken for any conversion. No file, or
    none about ``conversion``: :class:`~touchline.errors.MissingInputError`, never a made-up
    truth."""
    from touchline.attribution.evaluate import truth_from_dict
    from touchline.demo import DEMO_CONVERSIONS

    if not truth:
        raise MissingInputError(
            "no ground-truth file, so no ranking of the models: only simulated data has one "
            "(`touchline demo` writes demo-data/b2c/truth.json and demo-data/b2b/truth.json); "
            "give it with --truth FILE")
    for file in truth:
        try:
            document = json.loads(Path(file).read_text())
        except FileNotFoundError:
            raise MissingInputError(f"ground-truth file {file}: no such file") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InputError(f"ground-truth file {file}: not JSON: {exc}") from exc
        if not isinstance(document, dict):
            raise InputError(f"ground-truth file {file}: expected a JSON object")
        if "b2b" in document:
            meant = DEMO_CONVERSIONS["b2b" if document["b2b"] else "b2c"][0]
            if meant != conversion:
                continue
        return truth_from_dict(document, source=str(file))
    raise MissingInputError(
        f"no ground-truth file is about {conversion!r} conversions "
        f"({', '.join(str(f) for f in truth)}): choose another conversion")


def model_ranking_data(con: BaseBackend, *, truth: Sequence[Path] = (),
                       conversion: str | None = None) -> pd.DataFrame:
    r"""``touchline evaluate``'s ranking of the stored models against the ground truth: per
    model ``l1_share`` (0 = perfect, 2 = disjoint), ``worst_channel``, ``worst_error`` and
    ``spearman``, best first (:func:`touchline.attribution.evaluate.evaluate`).

    .. math:: L_1 = \sum_c \Bigl|\frac{C_c}{\sum_d C_d} - \frac{T_c}{\sum_d T_d}\Bigr|

    :math:`C_c` sums the stored credits of channel ``c`` over each unit's *first*
    conversion (``sequence = 1``), since the simulator's truth counts the conversions a
    channel causes among first conversions; all dates, as the truth covers the whole
    simulation. Stored channel names (GA4 groups) become the simulator's
    (:data:`touchline.demo.SIMULATOR_CHANNELS`) when the truth names none of them. Without a
    truth file: :class:`~touchline.errors.MissingInputError` (see :func:`truth_for`)."""
    from touchline.attribution.evaluate import evaluate
    from touchline.demo import SIMULATOR_CHANNELS

    conversion = resolve_conversion(con, conversion)
    known = truth_for(truth, conversion)
    c = con.table("credits")
    j = con.table("journeys")
    first = j.filter((j.conversion == conversion) & (j.sequence == 1)).select("journey_id")
    c = c.filter(c.conversion == conversion).semi_join(first, "journey_id")
    t = c.group_by(channel=c.channel.cast("string").fill_null("(not set)"),
                   model=c.model).aggregate(conversions=c.credit.sum())
    sums = t.to_pandas()
    if sums.empty:
        raise InputError(f"no stored credits of first {conversion} conversions to rank: run "
                         "`touchline run`")
    if not set(sums.channel) & set(known.conversions):
        sums["channel"] = sums.channel.map(lambda ch: SIMULATOR_CHANNELS.get(ch, ch))
    wide = sums.pivot_table(index="channel", columns="model", values="conversions",
                            aggfunc="sum", fill_value=0.0).reset_index()
    wide.columns.name = None
    wide.attrs["level"] = "channel"
    ranking = evaluate(wide, known).reset_index(drop=True)
    ranking.attrs.update(conversion=conversion, truth=known.source, note=(
        "ranked on this warehouse's prepared journeys (the stored credits of first "
        "conversions), as the demo's \"prepared journeys\" ranking; `touchline evaluate "
        "--paths` ranks the models refitted on a path file (the simulator's true paths), so "
        "its distances differ"))
    return ranking


def model_ranking_figure(data: pd.DataFrame) -> go.Figure:
    """The models as horizontal bars of their L1 share distance, best on top."""
    fig = _figure(f"{data.attrs.get('conversion', '')}: distance to the true incremental "
                  f"conversions ({Path(str(data.attrs.get('truth', 'truth'))).name}; "
                  "L1 share, 0 = perfect)")
    fig.add_trace(go.Bar(
        x=data.l1_share, y=data.model, orientation="h", marker_color=PALETTE[2],
        text=[f"{v:.3f}" for v in data.l1_share], textposition="outside",
        customdata=data[["worst_channel", "worst_error"]],
        hovertemplate="%{y}: L1 %{x:.3f}<br>worst channel %{customdata[0]} "
        "(%{customdata[1]:+.3f} of the share)<extra></extra>"))
    fig.update_layout(xaxis_title="L1 share distance (0 = perfect, 2 = disjoint)",
                      yaxis={"autorange": "reversed"}, showlegend=False,
                      height=max(300, 80 + 30 * len(data)))
    return fig


# ---- journey map ----------------------------------------------------------------------------

def journey_map_data(con: BaseBackend, *, conversion: str | None = None, since: Moment = None,
                     until: Moment = None, steps: int = JOURNEY_MAP_STEPS_DEFAULT,
                     top: int = JOURNEY_MAP_PATHS_DEFAULT, unit: str | None = None,
                     device: str | None = None, channel: str | None = None,
                     campaign: str | None = None, drop_off: bool = True) -> pd.DataFrame:
    """Links of a Sankey of the channels toward conversion and drop-off: ``source_step``,
    ``source``, ``target_step``, ``target``, ``journeys``.

    A node is a channel at a number of touches before the journey's end (1 = the last touch;
    0 is the end itself: :data:`CONVERSION_NODE` for a journey that converted in the window,
    :data:`DROP_OFF_NODE` for an open one, whose touches since the unit's last conversion
    led to none yet, with its last touch in the window; ``drop_off=False``: the converting
    journeys only); each journey contributes its last ``steps`` touches. The ``top`` most
    frequent of those paths toward each end are drawn; the journeys of the rarer ones flow
    as one node :data:`OTHER`, journeys without a touch in their window as
    :data:`NO_TOUCH`. So the links into :data:`CONVERSION_NODE` add up to the conversions
    in the window, those into :data:`DROP_OFF_NODE` to the open journeys, and every node's
    inflow equals its outflow. ``unit`` keeps the journeys of accounts (B2B) or persons
    (B2C); ``device`` keeps the touches in sessions on that device, so a journey is drawn by
    its touches there and one with none is left out (no ``(no touch)`` node: the flows add
    up to the journeys with a touch on the device). ``channel`` and ``campaign`` keep the
    journeys with a touch of that channel and/or campaign (:func:`touch_matches`; on
    ``device`` under both), drawn with all their touches: the paths through it, adding up to
    the journeys that have it.
    """
    conversion = resolve_conversion(con, conversion, unit)
    j = filtered_journeys(con, unit)
    ended = j.converted & _in_window(j.converted_at, since, until)
    if drop_off:
        ended |= ~j.converted & _in_window(j.last_touch_at, since, until)
    j = j.filter((j.conversion == conversion) & ended).select(
        "journey_id", "touches",
        _end=ibis.ifelse(j.converted, CONVERSION_NODE, DROP_OFF_NODE))
    jt = con.table("journey_touches")
    jt = jt.filter(jt.conversion == conversion)
    ends = j.select(_j="journey_id", _end="_end")
    jt = jt.inner_join(ends, jt.journey_id == ends._j).drop("_j")
    if device is not None:
        d = session_devices(con)
        jt = jt.semi_join(d.filter(d.device == device).select("session_id"), "session_id")
        # positions renumbered among the kept touches: the map counts touches back from the
        # conversion on this device
        jt = jt.mutate(position=ibis.row_number().over(
            group_by="journey_id", order_by="position").cast("int64") + 1)
        j = j.filter(ibis.literal(False))  # no '(no touch)' node under a device
    if channel is not None or campaign is not None:
        hit = jt.filter(touch_matches(jt, channel=channel, campaign=campaign))
        hit = hit.select(_hit="journey_id").distinct()
        jt = jt.semi_join(hit, jt.journey_id == hit._hit)
        j = j.filter(ibis.literal(False))  # a journey without a touch has none of it
    t = jt.select("journey_id", "position", "_end",
                  _label=jt.channel.cast("string").fill_null("(not set)"))
    length = t.position.max().over(ibis.window(group_by="journey_id"))
    t = t.mutate(_back=(length - t.position + 1).cast("int64"))
    t = t.filter(t._back <= steps)
    pairs = ibis.struct({"pos": t.position, "v": t._label}).collect().sort()
    per = t.group_by(["journey_id", "_end"]).aggregate(
        _path=pairs.map(lambda p: p.v).join(_PATH_SEP))
    counts = per.group_by(["_end", "_path"]).aggregate(_n=per.count())
    # the most frequent paths toward each end: the drop-offs, often many more, do not crowd
    # out the paths to conversion
    counts = counts.mutate(_rank=ibis.row_number().over(
        ibis.window(group_by="_end", order_by=[ibis.desc("_n"), "_path"])))
    per = per.inner_join(counts, ["_end", "_path"]).select("journey_id", "_end",
                                                           _rare=ibis._._rank >= top)
    common = per.filter(~per._rare).select(_k="journey_id")
    kept = t.inner_join(common, t.journey_id == common._k).drop("_k")
    nxt = kept._label.lead().over(ibis.window(group_by="journey_id", order_by="position"))
    kept = kept.mutate(_target=nxt.coalesce(kept._end))
    links = kept.group_by(source_step=kept._back, source=kept._label,
                          target_step=kept._back - 1, target=kept._target).aggregate(
        journeys=kept.count().cast("int64"))

    def single(rows: ir.Table, label: str) -> ir.Table:
        return rows.group_by("_end").aggregate(journeys=rows.count().cast("int64")).select(
            source_step=ibis.literal(1, "int64"), source=ibis.literal(label),
            target_step=ibis.literal(0, "int64"), target=ibis._._end, journeys="journeys")

    rare = single(per.filter(per._rare), OTHER)
    untouched = single(j.filter(j.touches == 0), NO_TOUCH)
    every = ibis.union(links, rare, untouched, distinct=False)
    every = every.filter(every.journeys > 0)
    frame = every.order_by([ibis.desc("source_step"), ibis.desc("journeys"), "source",
                            "target"]).to_pandas()
    ends = frame[frame.target_step == 0].groupby("target").journeys.sum()
    frame.attrs.update(conversion=conversion, unit=unit, device=device, channel=channel,
                       campaign=campaign, drop_off=drop_off,
                       conversions=int(ends.get(CONVERSION_NODE, 0)),
                       dropped=int(ends.get(DROP_OFF_NODE, 0)))
    return frame


def _node_name(step: int, label: str) -> str:
    return label if step == 0 else f"{label} ({step} before)"


def journey_map_nodes(data: pd.DataFrame, *, pad: float = 0.03) -> pd.DataFrame:
    """The Sankey's nodes: ``name``, ``step``, ``label`` (the channel or end), ``journeys``
    through it, and ``x``, ``y``: each step its column (the most touches before the end on
    the left, the ends on the right), within it the nodes from the most journeys down (the
    conversion above the drop-off), packed as Plotly packs them: each node's height its share
    of the column's journeys of what the ``pad`` (a share of the chart's height) between the
    column's nodes leaves, ``y`` its centre (Plotly's node coordinates, inside 0 to 1)."""
    outflow = data.groupby(["source_step", "source"]).journeys.sum()
    inflow = data.groupby(["target_step", "target"]).journeys.sum()
    through = pd.concat([outflow, inflow]).groupby(level=[0, 1]).max()
    nodes = pd.DataFrame({"step": [int(s) for s, _ in through.index],
                          "label": [str(lab) for _, lab in through.index],
                          "journeys": through.to_numpy().astype("int64")})
    ends = {CONVERSION_NODE: 0, DROP_OFF_NODE: 1}
    nodes["_o"] = [ends.get(lab, 2) for lab in nodes.label]
    nodes = nodes.sort_values(["step", "_o", "journeys", "label"],
                              ascending=[False, True, False, True]).drop(columns="_o")
    last = max(int(nodes.step.max()), 1) if len(nodes) else 1
    nodes["x"] = 0.01 + 0.98 * (last - nodes.step) / last
    column = nodes.groupby("step")
    # y_i = (1 - (n - 1) pad) (s_<i + s_i / 2) + i pad, s the shares, n nodes in the column
    fill = 1 - (column.journeys.transform("size") - 1) * pad
    share = nodes.journeys / column.journeys.transform("sum")
    before = share.groupby(nodes.step).cumsum() - share
    nodes["y"] = (fill * (before + share / 2) + column.cumcount() * pad).clip(0.001, 0.999)
    nodes.insert(0, "name", [_node_name(s, lab) for s, lab in zip(nodes.step, nodes.label,
                                                                   strict=True)])
    return nodes.reset_index(drop=True)


def journey_map_figure(data: pd.DataFrame) -> go.Figure:
    """A Sankey: the channels by touches before the end, flowing into the conversion or
    the drop-off, each step a column."""
    dropped = (f", {data.attrs.get('dropped', 0):,} no conversion"
               if data.attrs.get("drop_off") else "")
    fig = _figure(f"paths to {data.attrs.get('conversion', 'conversion')}: "
                  f"{data.attrs.get('conversions', 0):,} converted{dropped} "
                  f"(rare paths as 'other'{_filter_label(data)})")
    columns = data.groupby("source_step").source.nunique()
    fullest = int(columns.max()) + 1 if len(columns) else 2  # the ends' column: at most 2
    height = max(520, 140 + 34 * fullest)
    # Plotly sizes the nodes by the column with the fewest (the ends: two), so a fuller column
    # overruns the plot by its extra pads: smaller pads, and the bottom margin holds the rest
    pad = JOURNEY_MAP_NODE_PAD if fullest <= 6 else 6
    overrun = max(fullest - 2, 0) * pad
    nodes = journey_map_nodes(data, pad=pad / (height - _PLOT_MARGINS))
    index = {name: i for i, name in enumerate(nodes.name)}
    colours = {CONVERSION_NODE: "#332288", DROP_OFF_NODE: "#8a8a96"}
    sources = [index[_node_name(s, lab)] for s, lab in zip(data.source_step, data.source,
                                                            strict=True)]
    targets = [index[_node_name(s, lab)] for s, lab in zip(data.target_step, data.target,
                                                            strict=True)]
    fig.add_trace(go.Sankey(
        arrangement="snap",
        node={"label": nodes.name.tolist(), "pad": pad, "thickness": 16,
              "x": nodes.x.tolist(), "y": nodes.y.tolist(),
              "color": [colours.get(lab) or channel_colour(lab) for lab in nodes.label],
              "hovertemplate": "%{label}: %{value:,} journeys<extra></extra>"},
        link={"source": sources, "target": targets, "value": data.journeys.tolist(),
              "color": ["rgba(138,138,150,0.35)" if t == DROP_OFF_NODE
                        else "rgba(51,34,136,0.25)" for t in data.target]}))
    fig.update_layout(height=height + overrun, margin={"b": 50 + overrun})
    return fig


# ---- funnel and stages ----------------------------------------------------------------------

def stage_names(con: BaseBackend, stage_model: str = STAGE_MODEL_DEFAULT,
                unit: str = "person") -> list[str]:
    """The stages of ``stage_model`` that any ``unit`` entered, in the model's order."""
    s = con.table("stages")
    s = s.filter((s.stage_model == stage_model) & (s.unit == unit))
    frame = s.group_by("stage").aggregate(_o=s.stage_order.min()).order_by(["_o", "stage"])
    return [str(v) for v in frame.to_pandas().stage]


def funnel_data(con: BaseBackend, *, steps: Sequence[str] | None = None,
                stage_model: str = STAGE_MODEL_DEFAULT, unit: str | None = None,
                window: timedelta | None = None, device: str | None = None,
                channel: str | None = None, campaign: str | None = None,
                mode: str | None = None) -> pd.DataFrame:
    """:func:`touchline.metrics.funnels.funnel` (``mode`` None: cumulative on the stages, a
    unit counting at every stage up to the furthest it reached; the note says which):
    ``step_index``, ``step``, ``entered``, ``converted``, ``dropped``, ``from_previous``,
    ``from_first`` and the time from the previous step in days (``p25_days``,
    ``median_days``, ``p75_days``, ``p90_days``: as the stage timeline's ``median_days``).
    Default steps: the stages of ``stage_model`` in order (``stage:<model>/<stage>``).
    ``device``, ``channel``, ``campaign``: the units whose first session was on that
    device, of that channel and campaign (:func:`units_first_on`; a funnel counts units, not
    touches)."""
    from touchline.metrics.funnels import default_mode, funnel, mode_line

    unit, steps, units = _funnel_steps_and_units(con, steps, stage_model, unit, device,
                                                 channel, campaign)
    mode = mode or default_mode(steps, stage_model)
    t = funnel(con, list(steps), window=window, unit=unit, stage_model=stage_model,
               units=units, mode=mode)
    frame = t.drop("group").to_pandas()
    # the time from the previous step in days, as the stage timeline's median_days (the
    # funnel computes seconds): a unit in the name, and one unit on the page
    for name in FUNNEL_QUANTILES:
        if name in frame.columns:
            frame[f"{name}_days"] = frame.pop(name).astype("float64") / SECONDS_PER_DAY
    if frame.empty:  # nobody entered the first step: no funnel to draw
        first_on = f" whose first session was {_first_session(device, channel, campaign)}" if (
            units is not None) else ""
        raise InputError(f"no {unit}s{first_on} entered {steps[0]}: no funnel to draw")
    frame.attrs.update(stage_model=stage_model, unit=unit, device=device, channel=channel,
                       campaign=campaign, mode=mode, note=mode_line(mode, unit))
    return frame


#: the funnel's quantiles of the time from the previous step (touchline.metrics.funnels)
FUNNEL_QUANTILES = ("p25", "median", "p75", "p90")
SECONDS_PER_DAY = 86_400


def _first_session(device: str | None, channel: str | None, campaign: str | None) -> str:
    """``on mobile from Email of campaign spring``: the first session the segment keeps."""
    return " ".join(part for part in (f"on {device}" if device else "",
                                      f"from {channel}" if channel else "",
                                      f"of campaign {campaign}" if campaign else "") if part)


def funnel_figure(data: pd.DataFrame) -> go.Figure:
    """Units entering each step, with the share of the first."""
    came = _first_session(data.attrs.get("device"), data.attrs.get("channel"),
                          data.attrs.get("campaign"))
    first_on = f", first came {came}" if came else ""
    mode = f"{data.attrs['mode']} " if data.attrs.get("mode") else ""
    fig = _figure(f"{mode}funnel ({data.attrs.get('unit', 'person')}s{first_on})")
    labels = [str(s).rsplit("/", 1)[-1].removeprefix("stage:") for s in data.step]
    # the numbers as every table and label writes them (readable_number), not Plotly's
    # "29.219k" next to "2004"
    first = float(data.entered.iloc[0]) if len(data) else 0.0
    text = [f"{readable_number(float(v))} ({float(v) / first:.0%} of the first)" if first
            else readable_number(float(v)) for v in data.entered]
    fig.add_trace(go.Funnel(y=labels, x=data.entered, text=text, textinfo="text",
                            hovertemplate="%{y}: %{text}<extra></extra>",
                            marker={"color": PALETTE[0]}))
    return fig


def _funnel_steps_and_units(con: BaseBackend, steps: Sequence[str] | None, stage_model: str,
                            unit: str | None, device: str | None, channel: str | None,
                            campaign: str | None) -> tuple[str, list[str], ir.Table | None]:
    """A funnel chart's unit (persons unless asked), its steps (given, or the stages of
    ``stage_model`` in order: at least two) and the units of the segment asked (``None``:
    every unit)."""
    unit = unit or "person"  # no B2B/B2C filter: the persons' stages
    if steps is None:
        steps = [f"stage:{stage_model}/{s}" for s in stage_names(con, stage_model, unit)]
    if len(steps) < 2:
        raise InputError(f"the funnel needs two steps; stage model {stage_model!r} has "
                         f"{len(steps)} stage(s) with entries: run `touchline run`")
    segment = (device, channel, campaign) != (None, None, None)
    units = _segment_units(con, device, unit, channel, campaign) if segment else None
    return unit, list(steps), units


def funnel_by_channel_data(con: BaseBackend, *, stage_model: str = STAGE_MODEL_DEFAULT,
                           unit: str | None = None, device: str | None = None,
                           channel: str | None = None, campaign: str | None = None
                           ) -> pd.DataFrame:
    """The funnel of :func:`funnel_data` (its steps, its mode) split by each unit's
    first-touch channel (the channel of its first session: the one the channel filter keeps,
    :func:`units_first_on`): ``channel``, ``step_index``, ``step``, ``entered`` and
    ``from_first`` (the share of the channel's units at the first step). A unit with no
    session has no first-touch channel and is in no group, so the groups add up to the
    funnel of the units with a session. Channels by their units at the first step, most
    first."""
    from touchline.metrics.funnels import default_mode, funnel, mode_line

    unit, steps, units = _funnel_steps_and_units(con, None, stage_model, unit, device,
                                                 channel, campaign)
    mode = default_mode(steps, stage_model)
    t = funnel(con, steps, unit=unit, stage_model=stage_model, units=units, mode=mode,
               by="channel")
    frame = t.select(channel="group", step_index="step_index", step="step",
                     entered="entered", from_first="from_first").to_pandas()
    if frame.empty:
        raise InputError(f"no {unit}s entered {steps[0]}: no funnel to draw")
    first = frame[frame.step_index == frame.step_index.min()].set_index("channel").entered
    frame["_first"] = frame.channel.map(first).fillna(0)
    frame = frame.sort_values(["_first", "channel", "step_index"],
                              ascending=[False, True, True], kind="stable")
    frame = frame.drop(columns="_first").reset_index(drop=True)
    frame.attrs.update(stage_model=stage_model, unit=unit, device=device, channel=channel,
                       campaign=campaign, mode=mode, note=mode_line(mode, unit))
    return frame


def funnel_by_channel_figure(data: pd.DataFrame) -> go.Figure:
    """Grouped bars: each stage after the first, one bar per first-touch channel, the share
    of the channel's units that reached it (their number and the channel's first-step units
    on hover; the legend gives each channel's units at the first step)."""
    unit = data.attrs.get("unit", "person")
    mode = f"{data.attrs['mode']} " if data.attrs.get("mode") else ""
    came = _first_session(data.attrs.get("device"), data.attrs.get("channel"),
                          data.attrs.get("campaign"))
    fig = _figure(f"{mode}funnel by first-touch channel: share of each channel's {unit}s "
                  f"reaching each stage{f' (first came {came})' if came else ''}")
    first_index = data.step_index.min()
    for channel in dict.fromkeys(data.channel):  # one trace per channel, most units first
        part = data[data.channel == channel]
        start = part[part.step_index == first_index].entered
        n = int(start.iloc[0]) if len(start) else 0
        later = part[part.step_index != first_index]
        fig.add_trace(go.Bar(
            x=[str(s).rsplit("/", 1)[-1] for s in later.step], y=later.from_first,
            name=f"{channel} ({readable_number(float(n))})",
            marker_color=channel_colour(str(channel)),
            customdata=[[readable_number(float(e)), readable_number(float(n))]
                        for e in later.entered],
            hovertemplate=f"{channel}<br>%{{x}}: %{{y:.1%}} (%{{customdata[0]}} of "
            "%{customdata[1]})<extra></extra>"))
    fig.update_layout(barmode="group", yaxis={"title": f"share of the channel's {unit}s",
                                              "tickformat": ".0%"},
                      legend_title_text=f"first-touch channel ({unit}s)")
    return fig


def stage_timeline_data(con: BaseBackend, *, stage_model: str = STAGE_MODEL_DEFAULT,
                        unit: str | None = None, since: Moment = None,
                        until: Moment = None, device: str | None = None,
                        channel: str | None = None, campaign: str | None = None
                        ) -> pd.DataFrame:
    """Per stage of ``stage_model``, in order: ``stage``, ``stage_order``, ``units`` that
    entered it (in the window), ``median_days``: the median over those units of the days
    since they entered the stage before it (the previous one they entered, by stage order;
    null for the first stage), and the stage's KPIs under it: ``from_previous`` = units /
    the previous stage's units and ``from_first`` = units / the first stage's units.
    ``unit``: ``person`` (the default) or ``account``; ``device``, ``channel``,
    ``campaign``: the units whose first session was on that device, of that channel and
    campaign (:func:`units_first_on`). ``attrs["note"]`` says what it counts beside the
    funnel: a unit at each stage it entered, where the cumulative funnel counts it at every
    stage up to its furthest, skipped ones too (so the funnel's counts can be higher)."""
    unit = unit or "person"
    s = con.table("stages")
    s = s.filter((s.stage_model == stage_model) & (s.unit == unit))
    if (device, channel, campaign) != (None, None, None):
        s = s.semi_join(_segment_units(con, device, unit, channel, campaign), "unit_id")
    w = ibis.window(group_by="unit_id", order_by=["stage_order", "entered_at"])
    s = s.mutate(_days=seconds_between(s.entered_at.lag().over(w), s.entered_at) / 86_400.0)
    s = s.filter(_in_window(s.entered_at, since, until))
    t = s.group_by(["stage", "stage_order"]).aggregate(
        units=s.unit_id.nunique().cast("int64"), median_days=s._days.quantile(0.5))
    frame = t.order_by(["stage_order", "stage"]).to_pandas()
    # the ratios of a few rows (one per stage), on the frame the engine returned
    units = frame.units.astype("float64")
    frame["from_previous"] = units / units.shift(1).where(units.shift(1) > 0)
    frame["from_first"] = units / units.iloc[0] if len(frame) and units.iloc[0] else None
    frame.attrs.update(stage_model=stage_model, unit=unit, device=device, channel=channel,
                       campaign=campaign, note=STAGE_TIMELINE_NOTE.format(unit=unit))
    return frame


#: what the stage timeline counts, beside the funnel on the same page
STAGE_TIMELINE_NOTE = (
    "the stage timeline counts each {unit} at the stages it entered, and the median days "
    "since the stage it entered before; the cumulative funnel counts a {unit} at every stage "
    "up to the furthest it reached, skipped stages included, so its counts can be higher")


def stage_timeline_figure(data: pd.DataFrame) -> go.Figure:
    """The stages in order on a line, evenly spaced: the median days between two stages on
    the segment joining them, each stage's units and its share of the previous and of the
    first stage under it (labels never overlap, however close in time the stages are)."""
    unit = data.attrs.get("unit", "person")
    fig = _figure(f"stages ({data.attrs.get('stage_model', '')}): median days between them "
                  f"and the {unit}s of each")
    x = list(range(len(data)))
    kpis = []
    for row in data.itertuples(index=False):
        lines = [f"{readable_number(float(row.units))} {unit}{'' if row.units == 1 else 's'}"]
        if pd.notna(row.from_previous):  # over 100 %: units that skipped the previous
            lines.append(f"{row.from_previous:.0%} of the previous" + (
                " (some skipped it)" if row.from_previous > 1 else ""))
        if pd.notna(row.from_first) and row.stage_order != data.stage_order.iloc[0]:
            lines.append(f"{row.from_first:.0%} of the first")
        kpis.append("<br>".join(lines))
    fig.add_trace(go.Scatter(
        x=x, y=[0] * len(data), mode="lines+markers+text", text=list(data.stage),
        textposition="top center", textfont={"size": 14},
        marker={"size": 18, "color": PALETTE[1]}, line={"color": "#8a8a96"},
        customdata=kpis, hovertemplate="%{text}<br>%{customdata}<extra></extra>"))
    for i, text in enumerate(kpis):  # each stage's KPIs under it
        fig.add_annotation(x=i, y=0, text=text, showarrow=False, yanchor="top", yshift=-16,
                           font={"size": 12})
    for i, days in enumerate(data.median_days):  # the median days on each segment
        if i and pd.notna(days):
            fig.add_annotation(x=i - 0.5, y=0, text=f"median {_days_text(float(days))}",
                               showarrow=False, yanchor="bottom", yshift=6,
                               font={"size": 12, "color": "#5a5a66"})
    fig.update_layout(height=280, showlegend=False,
                      xaxis={"visible": False, "range": [-0.6, len(data) - 0.4]},
                      yaxis={"visible": False, "range": [-1.6, 0.9]})
    return fig


def _days_text(days: float) -> str:
    """``2.5 d``, ``3 h``, ``20 min``: a median time between stages, in a readable unit."""
    if days >= 1:
        return f"{days:,.1f} d"
    hours = days * 24
    return f"{hours:.1f} h" if hours >= 1 else f"{hours * 60:.0f} min"


def _headline_values(con: BaseBackend, parts: Iterable[tuple[tuple[str, ...], ir.Table]],
                     skipped: dict[str, str]) -> dict[str, list[float | None]]:
    """The headline rows (``kpi``, ``value``) of each part (one KPI, or a KPI family
    computed in one aggregate: the KPIs it names), the parts fetched together
    (:func:`touchline.engine.fetch_each`: on DuckDB one part runs while the next is built,
    on Spark all in one query); a part that fails with a touchline error has its KPIs
    skipped with that error (into ``skipped``) and the others still show, as when each ran
    alone."""
    names: list[tuple[str, ...]] = []

    def tables() -> Iterator[ir.Table]:
        for kpis, t in parts:
            names.append(kpis)
            yield t

    frames = engine.fetch_each(con, tables())
    out: dict[str, list[float | None]] = {}
    for kpis, frame in zip(names, frames, strict=True):
        if isinstance(frame, TouchlineError):
            skipped.update(dict.fromkeys(kpis, str(frame)))
            continue
        if isinstance(frame, Exception):
            raise frame
        got: dict[str, list[float | None]] = {n: [] for n in kpis}
        for name, value in zip(frame.column("kpi").to_pylist(),
                               frame.column("value").to_pylist(), strict=True):
            got[name].append(value)
        out |= got
    return out


def stage_kpis_data(con: BaseBackend, *, since: Moment = None, until: Moment = None,
                    model: str = MODEL_DEFAULT, conversion: str | None = None,
                    stage_model: str = STAGE_MODEL_DEFAULT,
                    names: Sequence[str] | None = None) -> pd.DataFrame:
    """The headline of every KPI of the registry (:mod:`touchline.metrics.kpis`; or of the
    KPIs ``names``) under its stage: ``stage``, ``kpi``, ``value``, ``unit``, ``formula``;
    each KPI computed in the engine over the window, as ``touchline kpis`` computes it. The
    headline is the KPI's own column (the median for a spread such as ``days_to_convert``).
    KPIs whose input was never imported, those that are tables (retention cohorts,
    purchase frequency) and those always by period (churn) are left out and listed in
    ``attrs["skipped"]`` with why. A stage model other than the presets places each KPI under
    its lifecycle stage."""
    from touchline.config import Settings
    from touchline.metrics.kpis import KPIS, STAGES, compute, compute_family, filled_once

    conversion = resolve_conversion(con, conversion)
    # the settings the event-defined KPIs read (CTA, form and referral events), read once
    # for the page, not once per KPI (each read parses the environment and touchline.toml)
    settings = Settings()
    chosen = list(KPIS.values()) if names is None else [KPIS[name] for name in names]
    # the KPIs' inputs checked once (every KPI's: kept for the page, the reviews and the
    # purchases read it too), and every headline fetched in one query (a union): one round
    # trip, not one per KPI (on Spark, one job)
    filled = filled_once(con)
    skipped: dict[str, str] = {}
    counted: set[str] = set()  # KPIs without a headline column: tables

    def parts() -> Iterator[tuple[tuple[str, ...], ir.Table]]:
        """Each part's KPIs and headline rows, built as they are fetched (on DuckDB, one
        part's query runs while the next is built)."""
        families: dict[str, list[str]] = {}
        for kpi in chosen:  # the registry's KPIs
            if kpi.table:  # not computed: no headline to show
                skipped[kpi.name] = f"a table: `touchline kpis --kpi {kpi.name}` shows it"
                continue
            if kpi.per_period:  # not computed either (its rows were counted for this note)
                skipped[kpi.name] = (f"a value per period: `touchline kpis --kpi {kpi.name} "
                                     "--period month` shows it")
                continue
            if kpi.family is not None:  # computed with its family below
                families.setdefault(kpi.family, []).append(kpi.name)
                continue
            try:
                t = compute(con, kpi.name, since=since, until=until, model=model,
                            conversion=conversion, settings=settings, filled=filled)
            except TouchlineError as exc:
                skipped[kpi.name] = str(exc)
                continue
            if kpi.headline not in t.columns:  # a table: its rows counted, in the same query
                counted.add(kpi.name)
                yield (kpi.name,), t.aggregate(kpi=ibis.literal(kpi.name),
                                               value=t.count().cast("float64"))
                continue
            yield (kpi.name,), t.select(kpi=ibis.literal(kpi.name),
                                        value=t[kpi.headline].cast("float64"))
        # each family's KPIs in one aggregate (one pass over the sessions, the spend, the
        # credits…: a third of the SQL to compile and of the scans to run), as one row
        # turned into a row per KPI
        for members in families.values():
            try:
                t, left = compute_family(con, members, since=since, until=until,
                                         model=model, conversion=conversion,
                                         settings=settings, filled=filled)
            except TouchlineError as exc:
                skipped.update(dict.fromkeys(members, str(exc)))
                continue
            skipped.update(left)
            if t is None:
                continue
            kept = tuple(name for name in members if name not in left)
            wide = t.select(**{name: t[name].cast("float64") for name in kept})
            yield kept, wide.pivot_longer(list(kept), names_to="kpi", values_to="value")

    values = _headline_values(con, parts(), skipped)
    rows = []
    for kpi in chosen:
        if kpi.name not in values:
            continue
        got = values[kpi.name]
        if kpi.name in counted:
            skipped[kpi.name] = (f"a table of {int(got[0] or 0)} rows: `touchline kpis --kpi "
                                 f"{kpi.name}` shows it")
            continue
        if len(got) != 1:
            skipped[kpi.name] = (f"a table of {len(got)} rows: `touchline kpis --kpi "
                                 f"{kpi.name}` shows it")
            continue
        value = got[0]
        rows.append({"stage": kpi.stages.get(stage_model, kpi.stage),
                     "_order": STAGES.index(kpi.stage), "kpi": kpi.name,
                     "value": None if value is None or pd.isna(value) else float(value),
                     "unit": kpi.unit, "formula": kpi.formula})
    out = pd.DataFrame(rows, columns=["stage", "_order", "kpi", "value", "unit", "formula"])
    out = out.sort_values("_order", kind="stable").drop(columns="_order").reset_index(
        drop=True)
    out.attrs.update(skipped=skipped, model=model, conversion=conversion,
                     stage_model=stage_model)
    return out


def stage_kpis_figure(data: pd.DataFrame) -> go.Figure:
    """The KPIs as a table, stage by stage."""
    fig = _figure(f"KPIs of each stage ({data.attrs.get('stage_model', '')}; "
                  f"{data.attrs.get('conversion', '')}, {data.attrs.get('model', '')})")
    values = [readable_number(None if pd.isna(v) else v) for v in data.value]
    fig.add_trace(go.Table(
        header={"values": ["stage", "KPI", "value", "unit"], "align": "left",
                "fill_color": "#e8e6f4"},
        cells={"values": [data.stage, data.kpi, values, data.unit], "align": "left"}))
    fig.update_layout(height=max(300, 60 + 24 * len(data)))
    return fig


# ---- retention, lifetime value, NPS and reviews ---------------------------------------------

#: the CLV histogram's number of equal-width bins
CLV_BINS_DEFAULT = 20


def retention_data(con: BaseBackend, *, conversion: str | None = None, since: Moment = None,
                   until: Moment = None) -> pd.DataFrame:
    """The KPI registry's ``retention`` cohorts (:mod:`touchline.metrics.kpis`): ``cohort``
    (the month of each customer's first ``conversion``), ``months_since``, ``customers`` of
    the cohort, ``active_customers`` who converted again in that month and ``retention`` =
    active / customers (month 0 is 1): the numbers of ``touchline kpis --kpi retention``."""
    from touchline.metrics.kpis import compute

    conversion = resolve_conversion(con, conversion)
    frame = compute(con, "retention", since=since, until=until,
                    conversion=conversion).to_pandas()
    if frame.empty:
        raise InputError(f"no {conversion} customers in the window: no cohorts to draw")
    frame.attrs.update(conversion=conversion)
    return frame


def retention_figure(data: pd.DataFrame) -> go.Figure:
    """A heat map: one row per cohort, one column per month since the first conversion."""
    fig = _figure(f"retention cohorts ({data.attrs.get('conversion', '')}): share of each "
                  "first-purchase month's customers who buy again k months later")
    wide = data.pivot(index="cohort", columns="months_since", values="retention")
    sizes = data.groupby("cohort").customers.max()
    labels = [f"{c:%Y-%m} ({sizes[c]:,})" for c in wide.index]
    text = [["" if pd.isna(v) else f"{v:.0%}" for v in row] for row in wide.to_numpy()]
    fig.add_trace(go.Heatmap(
        z=wide.to_numpy(), x=[int(m) for m in wide.columns], y=labels, text=text,
        texttemplate="%{text}", colorscale="Blues", zmin=0.0, zmax=1.0,
        colorbar={"title": "retained", "tickformat": ".0%"},
        hovertemplate="cohort %{y}<br>month %{x}: %{z:.1%}<extra></extra>"))
    fig.update_layout(xaxis={"title": "months since the first purchase", "dtick": 1},
                      yaxis={"title": "cohort (customers)", "autorange": "reversed",
                             "type": "category"},
                      height=max(300, 120 + 28 * len(labels)))
    return fig


def clv_distribution_data(con: BaseBackend, *, conversion: str | None = None,
                          since: Moment = None, until: Moment = None,
                          bins: int = CLV_BINS_DEFAULT) -> pd.DataFrame:
    """The distribution of historical CLV: each customer's revenue so far (the value of
    their ``conversion`` conversions before ``until``; customers whose first one falls in
    the window), in ``bins`` equal-width bins from min(0, lowest) to the highest:
    ``bin_start``, ``bin_end``, ``customers`` (the last bin includes its end). ``attrs``
    carry the ``historical_clv`` KPI's mean (revenue / customers, the number of ``touchline
    kpis``), the ``median`` and the customer count."""
    from touchline.metrics.clv import purchases
    from touchline.metrics.kpis import compute

    conversion = resolve_conversion(con, conversion)
    p = purchases(con, conversion=conversion)
    if until is not None:
        p = p.filter(p.purchased_at < ibis.literal(_moment(until)))
    c = p.group_by("customer_id").aggregate(_first=p.purchased_at.min(), clv=p.value.sum())
    c = c.filter(_in_window(c._first, since, None))
    stats = c.aggregate(n=c.count(), lo=c.clv.min(), hi=c.clv.max(),
                        mid=c.clv.quantile(0.5)).to_pandas().iloc[0]
    if not stats.n:
        raise InputError(f"no {conversion} customers in the window: no CLV to draw")
    lo, hi = min(0.0, float(stats.lo)), float(stats.hi)
    width = (hi - lo) / bins if hi > lo else 1.0
    index = ((c.clv - lo) / width).floor().cast("int64").clip(lower=0, upper=bins - 1)
    counts = c.group_by(_bin=index).aggregate(customers=c.count().cast("int64")).to_pandas()
    per_bin = counts.set_index("_bin").customers.reindex(range(bins), fill_value=0)
    frame = pd.DataFrame({"bin_start": [lo + i * width for i in range(bins)],
                          "bin_end": [lo + (i + 1) * width for i in range(bins)],
                          "customers": per_bin.to_numpy().astype("int64")})
    kpi = compute(con, "historical_clv", since=since, until=until,
                  conversion=conversion).to_pandas()
    frame.attrs.update(conversion=conversion, customers=int(stats.n),
                       mean=float(kpi.historical_clv.iloc[0]), median=float(stats.mid))
    return frame


def clv_distribution_figure(data: pd.DataFrame) -> go.Figure:
    """A histogram of customers by their revenue so far, with the mean and median marked."""
    mean, median = data.attrs.get("mean"), data.attrs.get("median")
    fig = _figure(f"historical CLV of {data.attrs.get('customers', 0):,} "
                  f"{data.attrs.get('conversion', '')} customers: mean {mean:,.2f}, "
                  f"median {median:,.2f}")
    width = data.bin_end - data.bin_start
    fig.add_trace(go.Bar(
        x=data.bin_start + width / 2, y=data.customers, width=width, marker_color=PALETTE[0],
        customdata=data[["bin_start", "bin_end"]],
        hovertemplate="%{customdata[0]:,.2f} to %{customdata[1]:,.2f}: %{y:,} customers"
        "<extra></extra>"))
    for value, name, dash in ((mean, "mean", "dash"), (median, "median", "dot")):
        fig.add_vline(x=value, line_dash=dash, line_color="#332288",
                      annotation_text=name, annotation_position="top")
    fig.update_layout(xaxis_title="revenue per customer so far", yaxis_title="customers",
                      bargap=0.02, showlegend=False)
    return fig


def nps_by_channel_data(con: BaseBackend, *, since: Moment = None,
                        until: Moment = None) -> pd.DataFrame:
    """The KPI registry's ``nps`` by the answerer's first-touch channel: ``channel``,
    ``answers``, ``promoters``, ``passives``, ``detractors``, ``nps`` = 100 × (promoters −
    detractors) / answers with its 95 % interval ``nps_low``, ``nps_high`` (answers matched
    to no person: Unassigned). Most answers first."""
    from touchline.metrics.kpis import compute

    t = compute(con, "nps", by=["channel"], since=since, until=until)
    return t.order_by([ibis.desc("answers"), "channel"]).to_pandas()


def nps_by_channel_figure(data: pd.DataFrame) -> go.Figure:
    """NPS of each channel's answerers with its 95 % interval; answers on hover."""
    fig = _figure("NPS by first-touch channel (95 % interval)")
    fig.add_trace(go.Bar(
        x=data.channel, y=data.nps, marker_color=[channel_colour(c) for c in data.channel],
        error_y={"type": "data", "symmetric": False, "color": "#444",
                 "array": (data.nps_high - data.nps).clip(lower=0),
                 "arrayminus": (data.nps - data.nps_low).clip(lower=0)},
        text=[f"{n:,} answers" for n in data.answers], textposition="outside",
        hovertemplate="%{x}: NPS %{y:.1f}<br>%{text}<extra></extra>"))
    fig.update_layout(yaxis={"title": "NPS", "range": [-100, 110]}, showlegend=False)
    return fig


def reviews_by_channel_data(con: BaseBackend, *, since: Moment = None,
                            until: Moment = None) -> pd.DataFrame:
    """The KPI registry's ``review_rating`` by the reviewer's first-touch channel:
    ``channel``, ``reviews`` (imported reviews and survey answers with a rating) and
    ``review_rating`` = mean(stars) (reviews matched to no person: Unassigned). Most reviews
    first."""
    from touchline.metrics.kpis import compute

    t = compute(con, "review_rating", by=["channel"], since=since, until=until)
    frame = t.order_by([ibis.desc("reviews"), "channel"]).to_pandas()
    if frame.empty:
        raise InputError("no review in the window (review exports or survey answers with a "
                         "rating): `touchline ingest FILE --kind reviews`")
    return frame


def reviews_by_channel_figure(data: pd.DataFrame) -> go.Figure:
    """The average rating of each channel's reviewers, with the number of reviews."""
    fig = _figure("reviews by first-touch channel: average stars")
    fig.add_trace(go.Bar(
        x=data.channel, y=data.review_rating,
        marker_color=[channel_colour(c) for c in data.channel],
        text=[f"{n:,} reviews" for n in data.reviews], textposition="outside",
        hovertemplate="%{x}: %{y:.2f} stars<br>%{text}<extra></extra>"))
    fig.update_layout(yaxis={"title": "stars (1-5)", "range": [0, 5.5]}, showlegend=False)
    return fig


# ---- person and account timelines -----------------------------------------------------------

def person_timeline_data(con: BaseBackend, person: str, *, model: str = MODEL_DEFAULT,
                         conversion: str | None = None,
                         stage_model: str = STAGE_MODEL_DEFAULT,
                         phone_region: str = "US", pii_key: str | None = None
                         ) -> pd.DataFrame:
    """The timeline (:func:`touchline.journeys.timeline.timeline`) of the person or account
    ``person`` names (person id, user id, e-mail, phone, CRM or anonymous id, account id),
    in time order, plus ``lane``: the row the chart draws it on (touches on ``touches``, or
    on their person's lane in an account's timeline; other kinds on their own). ``pii_key``:
    the key of a ``pii_at_rest = "hashed"`` warehouse."""
    from touchline.journeys.timeline import resolve_unit, timeline

    unit, unit_id = resolve_unit(con, person, phone_region=phone_region, pii_key=pii_key)
    try:
        conversion = resolve_conversion(con, conversion)
    except ConfigError:  # no conversions stored at all: a timeline without credits
        conversion = None
    t = timeline(con, unit, unit_id, model=model, conversion=conversion,
                 stage_model=stage_model, pii_key=pii_key)
    touch_lane = t.person_id if unit == "account" else ibis.literal("touches")
    order = t.kind.substitute({"stage": 0, "touch": 1, "deal": 2, "conversion": 3}, else_=4)
    t = t.mutate(lane=ibis.ifelse(t.kind == "touch", touch_lane, t.kind),
                 mark=_timeline_mark(t), _o=order)
    frame = t.order_by(["at", "_o", "detail"]).drop("_o").to_pandas()
    frame.attrs.update(unit=unit, unit_id=unit_id, model=model, conversion=conversion)
    return frame


#: what a timeline row is, as its marker shows it (:func:`_timeline_mark`), with its symbol:
#: a form, a chat or a call stands out from the page views among the touches
TIMELINE_MARKS = {"visit": "circle", "form": "square", "chat": "hexagon", "call": "triangle-up",
                  "stage": "diamond", "conversion": "star", "deal": "pentagon",
                  "NPS answer": "triangle-down", "review": "star-diamond",
                  "self-reported source": "cross"}
#: the lanes other than the touches', top down
_EVENT_LANES = ("stage", "conversion", "deal", "survey")


def _timeline_mark(t: ir.Table) -> ir.StringValue:
    """The :data:`TIMELINE_MARKS` key of each timeline row: a touch is a ``form``, ``chat`` or
    ``call`` by its event (or the Phone channel), else a ``visit``; a survey answer an ``NPS
    answer``, a ``review`` or the ``self-reported source`` ("how did you hear about us"),
    the first it holds; other kinds their kind."""
    detail = t.detail.cast("string").fill_null("").lower()
    channel = t.channel.cast("string").fill_null("")
    touch, survey = t.kind == "touch", t.kind == "survey"
    return ibis.cases(
        (touch & detail.contains("form"), "form"),
        (touch & detail.contains("chat"), "chat"),
        (touch & (detail.contains("call") | (channel == "Phone")), "call"),
        (touch, "visit"),
        (survey & detail.contains(" nps "), "NPS answer"),
        (survey & detail.contains(" review "), "review"),
        (survey, "self-reported source"),
        else_=t.kind.cast("string"))


def _short_label(kind: str, detail: str) -> str:
    """A marker's label: a stage without its stage model's name (the title says it), an
    answer without the word survey (its lane says it)."""
    if kind == "stage":
        return detail.split(": ", 1)[-1]
    return detail.removeprefix("survey ") if kind == "survey" else detail


def _staggered(xs: Sequence[float], lo: float, hi: float, *, levels: int = 3,
               apart: float = 0.2) -> list[tuple[int | None, str]]:
    """For labels at ``xs`` (in time order) on an axis from ``lo`` to ``hi``: each one's level
    above its marker (the lowest whose last label is at least ``apart`` of the axis away, so
    close labels climb rather than overlap; None when every level is taken: that label is
    left to the hover text) and its anchor (``left`` near the axis' start, ``right`` near
    its end, so none is clipped)."""
    width = (hi - lo) or 1.0
    last: list[float | None] = [None] * levels
    out = []
    for x in xs:
        free = [k for k in range(levels) if last[k] is None or (x - last[k]) / width >= apart]
        level = free[0] if free else None
        if level is not None:
            last[level] = x
        where = (x - lo) / width
        out.append((level, "left" if where < 0.15 else "right" if where > 0.85 else "center"))
    return out


def person_timeline_figure(data: pd.DataFrame) -> go.Figure:
    """Every touch on a time axis coloured by its channel, its kind (visit, form, chat,
    call) by the marker's shape; stages, conversions, deals and answers as shapes on their
    own lanes, each labelled (labels close in time stacked, none clipped at the edges); an
    account's stakeholders each on a lane, every lane named."""
    fig = _figure(f"timeline of {data.attrs.get('unit', 'person')} "
                  f"{data.attrs.get('unit_id', '')}")
    data = data.copy()
    if "mark" not in data:
        data["mark"] = data.kind.where(data.kind != "touch", "visit")
    touches = data[data.kind == "touch"]
    channels = touches.channel.fillna("(not set)")
    # page views first, then forms, chats and calls on top of them (bigger, outlined)
    for visits in (True, False):
        for channel in sorted(channels.unique()):  # one trace per channel
            part = touches[(channels == channel) & ((touches.mark == "visit") == visits)]
            if part.empty:
                continue
            fig.add_trace(go.Scatter(
                x=part["at"], y=part.lane, mode="markers", name=channel,
                legendgroup=channel, showlegend=visits or channel not in set(
                    channels[touches.mark == "visit"]),
                marker={"size": 11 if visits else 16, "color": channel_colour(channel),
                        "symbol": [TIMELINE_MARKS.get(m, "circle") for m in part.mark],
                        "line": {"width": 0 if visits else 1.5, "color": "#1b1b1f"}},
                text=part.detail, customdata=part[["source", "campaign", "mark"]].fillna(""),
                hovertemplate="%{x}<br>" + channel + " %{customdata[2]}: %{text}<br>"
                "%{customdata[0]} %{customdata[1]}<extra></extra>"))
    events = data[data.kind != "touch"]
    for mark in TIMELINE_MARKS:  # one trace per kind of moment, each labelled
        part = events[events.mark == mark]
        if part.empty:
            continue
        fig.add_trace(go.Scatter(
            x=part["at"], y=part.lane, mode="markers", name=mark,
            legendgroup="moments", legendgrouptitle_text="moments",
            marker={"size": 14, "symbol": TIMELINE_MARKS[mark], "color": "#332288"},
            text=part.detail, hovertemplate="%{x}<br>%{text}<extra></extra>"))
    # the touch kinds' shapes in the legend (grey: the colour is the channel's)
    for mark in ("visit", "form", "chat", "call"):
        if (touches.mark == mark).any():
            fig.add_trace(go.Scatter(
                x=[None], y=[None], mode="markers", name=f"{mark} (touch)",
                legendgroup="touch kinds", legendgrouptitle_text="touch kinds",
                marker={"size": 12, "symbol": TIMELINE_MARKS[mark], "color": "#8a8a96"},
                hoverinfo="skip"))
    times = pd.to_datetime(data["at"])
    lo, hi = (times.min(), times.max()) if len(times) else (pd.Timestamp(0), pd.Timestamp(0))
    pad = max((hi - lo) * 0.04, pd.Timedelta(hours=6))
    start, end = lo - pad, hi + pad
    to_x = (lambda v: (pd.Timestamp(v) - start).total_seconds())  # noqa: E731
    for lane in _EVENT_LANES:
        part = events[events.lane == lane].sort_values("at", kind="stable")
        placed = _staggered([to_x(v) for v in part["at"]], 0.0, to_x(end))
        for row, (level, anchor) in zip(part.itertuples(index=False), placed, strict=True):
            if level is None:  # no room: on hover only
                continue
            fig.add_annotation(x=row.at, y=lane, text=_short_label(row.kind, row.detail),
                               showarrow=False, xanchor=anchor, yanchor="bottom",
                               yshift=10 + 15 * level, font={"size": 12, "color": "#332288"})
    lanes = [*sorted(set(touches.lane), reverse=True),
             *(lane for lane in reversed(_EVENT_LANES) if (data.lane == lane).any())]
    fig.update_layout(
        xaxis={"title": "time (UTC)", "range": [start, end]},
        yaxis={"type": "category", "categoryorder": "array", "categoryarray": lanes,
               "tickmode": "array", "tickvals": lanes, "ticktext": lanes, "automargin": True,
               "range": [-0.5, len(lanes) - 0.5 + (0.7 if len(events) else 0.0)]},
        legend={"title_text": "channel / kind", "groupclick": "toggleitem"},
        # room for every lane and every legend entry (each ~21 px, each group's title too)
        height=max(380, 170 + 60 * len(lanes), 140 + 21 * (len(fig.data) + 3)))
    return fig


# ---- data quality ---------------------------------------------------------------------------

def data_quality_data(con: BaseBackend, *, since: Moment = None,
                      until: Moment = None) -> pd.DataFrame:
    """``step``, ``reason_code``, ``rows``: the ``rejects`` (every record a load or a prepare
    step dropped) by step and reason, in the window of ``rejected_at``; most first.

    The window is when the records were rejected (loaded), not their events' time (a
    rejected record may have no readable time): ``attrs["note"]`` says so, with how many
    rejects lie outside the window, so that none is hidden silently."""
    r = con.table("rejects")
    inside = _in_window(r.rejected_at, since, until)
    k = r.filter(inside)
    t = k.group_by(step=k.step.fill_null("(unknown)"),
                   reason_code=k.reason_code.fill_null("(unknown)")).aggregate(
        rows=k.count().cast("int64"))
    frame = t.order_by([ibis.desc("rows"), "step", "reason_code"]).to_pandas()
    note = None
    if since is not None or until is not None:
        start, end = _moment(since), _moment(until)
        window = " and ".join(part for part in (
            f"from {start:%Y-%m-%d}" if start else "", f"before {end:%Y-%m-%d}" if end else "")
            if part)
        # every reject not counted in the window (one without a time too)
        outside = int(r.count().to_pyarrow().as_py()) - int(frame.rows.sum())
        note = (f"records rejected while loading {window} (the date range is when a record "
                "was rejected, not its event's time)")
        if outside:
            note += (f"; {outside:,} rejected record(s) outside it"
                     + (", none inside it" if frame.empty else "")
                     + ": remove the date range to see them")
    frame.attrs.update(note=note)
    return frame


def data_quality_figure(data: pd.DataFrame) -> go.Figure:
    """Rejected rows by step, stacked by reason."""
    fig = _figure("rejected records by step and reason")
    for i, reason in enumerate(sorted(data.reason_code.unique())):  # one trace per reason
        part = data[data.reason_code == reason]
        fig.add_trace(go.Bar(x=part.step, y=part.rows, name=reason,
                             marker_color=PALETTE[i % len(PALETTE)]))
    fig.update_layout(barmode="stack", yaxis_title="rows", legend_title_text="reason")
    return fig


#: the prepare steps that drop bots (:mod:`touchline.prepare.clean`): by user agent, by bursts
BOT_STEPS = ("prepare:drop_bot_user_agents", "prepare:drop_bot_bursts")
#: the reject codes of a duplicate merged into the row kept, by kind: exact copies (the
#: collector's repeated messageId, a file's repeated key, prepare's repeated message_id),
#: one touch seen by several sources, one order counted twice
DUPLICATE_KINDS = {"duplicate": "exact", "duplicate_in_file": "exact",
                   "duplicate_message_id": "exact", "already_loaded": "exact",
                   "cross_source_duplicate": "cross-source", "duplicate_order_id": "order"}
#: what an ingest's duplicates not rejected as in-file copies are: rows already stored
ALREADY_LOADED = "already_loaded"
#: a call's match status (:data:`touchline.collect.dni.MATCH_STATUSES`) before ``run``
#: matched it, and of one a telephony integration sent as an event itself
NOT_MATCHED_YET, SENT_AS_EVENT = "not matched yet", "sent as an event"
#: why the guards cut an identity link (:func:`touchline.prepare.identity.guard_links`)
CUT_REASONS = ("max_degree", "max_component", "unlinked")
_RUN_FIRST = "run `touchline run` first"


def _has(con: BaseBackend, *names: str) -> bool:
    tables = set(con.list_tables())
    return all(n in tables for n in names)


def _window_words(since: Moment, until: Moment) -> str:
    start, end = _moment(since), _moment(until)
    return " and ".join(part for part in (
        f"from {start:%Y-%m-%d}" if start else "", f"before {end:%Y-%m-%d}" if end else "")
        if part)


def _utc(at: Any) -> str | None:
    return None if at is None or pd.isna(at) else f"{pd.Timestamp(at):%Y-%m-%d %H:%M} UTC"


def last_prepare_at(con: BaseBackend) -> ir.Scalar:
    """When the last prepare run wrote its rejects and audit (each run replaces both, and
    stamps every row with its clock): null when it dropped and changed nothing, or never
    ran."""
    r = con.table("rejects")
    at = r.filter(r.step.startswith("prepare:")).rejected_at.max()
    if "audit" not in set(con.list_tables()):  # a warehouse from before the audit table
        return at
    return ibis.greatest(at, con.table("audit").audited_at.max())


def freshness(con: BaseBackend) -> dict[str, Any]:
    """When data was last loaded and prepared, in one query: ``files`` (the last
    ``touchline ingest``, from ``ingests``), ``collector`` (the collector's last load, from
    its ``spool_offsets`` bookkeeping), ``loaded`` (the latest of both) with ``loaded_by``
    (which), and ``prepared`` (the last prepare run, :func:`last_prepare_at`). A table an
    older warehouse lacks counts as no load."""
    none = ibis.null("timestamp")
    parts = {"files": ("ingests", lambda t: t.finished_at.max()),
             "collector": ("spool_offsets", lambda t: t.updated_at.max())}
    have = set(con.list_tables())
    values = {k: fn(con.table(t)).cast("timestamp") if t in have else none
              for k, (t, fn) in parts.items()}
    # the runs record (touchline run writes it); a warehouse run before it had one: the
    # time of the last prepare's rejects or audit rows (:func:`last_prepare_at`)
    derived = last_prepare_at(con).cast("timestamp") if "rejects" in have else none
    values["prepared"] = (con.table("runs").finished_at.max().cast("timestamp").coalesce(
        derived) if "runs" in have else derived)
    row = ibis.literal(1).name("_one").as_table().select(**values).to_pyarrow().to_pylist()[0]
    found = {k: row[k] for k in ("files", "collector") if row[k] is not None}
    by = max(found, key=lambda k: found[k]) if found else None
    return {**row, "loaded": found.get(by) if by else None, "loaded_by": by}


#: who loads: how the footer and the freshness chart name each source of loads
LOADERS = {"files": "files (touchline ingest)", "collector": "the collector (touchline serve)"}


def last_loaded_text(fresh: dict[str, Any]) -> str:
    """``2026-12-05 17:40 UTC by the collector (touchline serve); files 2026-12-01 ...``,
    or never, with what loads data."""
    if fresh["loaded_by"] is None:
        return "never (touchline ingest, or the collector: touchline serve)"
    other = next((k for k in LOADERS if k != fresh["loaded_by"] and fresh[k] is not None),
                 None)
    text = f"{_utc(fresh['loaded'])} by {LOADERS[fresh['loaded_by']]}"
    return text + (f"; {LOADERS[other].split(' (')[0]} {_utc(fresh[other])}" if other else "")


def bot_share_data(con: BaseBackend, *, since: Moment = None,
                   until: Moment = None) -> pd.DataFrame:
    """``step``, ``rows``, ``share``: the rows each bot step dropped (:data:`BOT_STEPS`) and
    their share of the rows the last prepare run read (its touches plus every row a prepare
    step dropped); ``attrs``: ``read``, ``bots``, ``share`` (of all bots) and ``prepared_at``.

    Prepare re-reads every raw event each run and replaces its rejects, all stamped with the
    run's time: the window is when the rows were rejected, so a date range holds the last
    run or nothing (``attrs["note"]`` says which)."""
    if not _has(con, "touches", "rejects"):
        raise MissingInputError(f"no prepared touches, so no bot share: {_RUN_FIRST}")
    r = con.table("rejects")
    p = r.filter(r.step.startswith("prepare:"))
    p = p.mutate(_in=_in_window(p.rejected_at, since, until))  # a column, also when no window
    counts = {f"_b{i}": (p._in & (p.step == step)).cast("int64").sum().fill_null(0)
              for i, step in enumerate(BOT_STEPS)}
    stats = p.aggregate(_dropped=p._in.cast("int64").sum().fill_null(0), **counts)
    t = con.table("touches")
    row = stats.cross_join(t.aggregate(_touches=t.count().cast("int64"))).mutate(
        _at=last_prepare_at(con).cast("timestamp")).to_pyarrow().to_pylist()[0]
    at = row["_at"]
    start, end = _moment(since), _moment(until)
    run_inside = at is None or ((start is None or at >= start) and (end is None or at < end))
    read = int(row["_dropped"]) + (int(row["_touches"]) if run_inside else 0)
    rows = [int(row[f"_b{i}"]) for i in range(len(BOT_STEPS))]
    frame = pd.DataFrame({"step": list(BOT_STEPS), "rows": rows,
                          "share": [n / read if read else 0.0 for n in rows]})
    bots = sum(rows)
    note = None
    if since is not None or until is not None:
        note = (f"rows rejected {_window_words(since, until)} (the date range is when prepare "
                "ran: each run reads every event again)")
        if not run_inside:
            note += (f"; the last prepare ran at {_utc(at)}, outside it: remove the date "
                     "range to see its bots")
    frame.attrs.update(read=read, bots=bots, share=bots / read if read else 0.0,
                       prepared_at=at, note=note)
    return frame


def bot_share_figure(data: pd.DataFrame) -> go.Figure:
    """Rows dropped as bots, by step, with their share of the rows prepare read."""
    read = data.attrs.get("read", 0)
    fig = _figure(f"bot share: {data.attrs.get('share', 0.0):.1%} of {read:,} rows read "
                  "by prepare")
    fig.add_trace(go.Bar(x=[s.removeprefix("prepare:") for s in data.step], y=data.rows,
                         marker_color=PALETTE[0],
                         text=[f"{s:.1%}" for s in data.share], textposition="outside",
                         hovertemplate="%{x}: %{y:,} rows (%{text})<extra></extra>"))
    fig.update_layout(yaxis_title="rows dropped as bots", showlegend=False)
    return fig


def duplicates_data(con: BaseBackend, *, since: Moment = None,
                    until: Moment = None) -> pd.DataFrame:
    """``kind`` (exact, cross-source, order: :data:`DUPLICATE_KINDS`), ``step``,
    ``reason_code``, ``rows``: the duplicates merged into the row kept, in the window of
    their ``rejected_at`` (the records rejected as such), plus each file load's rows that
    were already stored (``ingests.duplicates`` less its in-file copies, which are rejects:
    reason ``already_loaded``, in the window of the load's end). Every kind has a row (0 when
    none); ``attrs``: the total of each kind."""
    if not _has(con, "rejects"):
        raise MissingInputError("no rejects table: run `touchline init`")
    r = con.table("rejects")
    dup = r.filter(r.reason_code.isin(list(DUPLICATE_KINDS))
                   & _in_window(r.rejected_at, since, until))
    parts = [dup.group_by(step=dup.step.fill_null("(unknown)"),
                          reason_code=dup.reason_code).aggregate(
        rows=dup.count().cast("int64"))]
    if _has(con, "ingests"):
        i = con.table("ingests")
        i = i.filter(_in_window(i.finished_at, since, until))
        copies = r.filter(r.reason_code == "duplicate_in_file").group_by(
            _id=r.ingest_id).aggregate(_n=ibis._.count().cast("int64"))
        j = i.left_join(copies, i.ingest_id == copies._id)
        j = j.select(step="ingest:" + j.kind.fill_null("(unknown)"),
                     _rows=(j.duplicates.fill_null(0) - j._n.fill_null(0)).cast("int64"))
        parts.append(j.group_by("step").aggregate(
            rows=j._rows.sum().cast("int64")).filter(ibis._.rows > 0).mutate(
            reason_code=ibis.literal(ALREADY_LOADED)).select("step", "reason_code", "rows"))
    frame = ibis.union(*parts, distinct=False).to_pandas()
    frame.insert(0, "kind", frame.reason_code.map(DUPLICATE_KINDS))
    order = list(dict.fromkeys(DUPLICATE_KINDS.values()))
    missing = [k for k in order if k not in set(frame.kind)]
    frame = pd.concat([frame, pd.DataFrame({"kind": missing, "step": "", "reason_code": "",
                                            "rows": 0})], ignore_index=True)
    frame["rows"] = frame.rows.astype("int64")
    frame = frame.sort_values(["kind", "rows", "step"], ascending=[True, False, True],
                              key=lambda c: c.map(order.index) if c.name == "kind" else c)
    frame = frame.reset_index(drop=True)
    frame.attrs.update(totals={k: int(frame.rows[frame.kind == k].sum()) for k in order},
                       note=(f"duplicates merged {_window_words(since, until)} (the date "
                             "range is when they were merged, not their events' time)"
                             if since is not None or until is not None else None))
    return frame


def duplicates_figure(data: pd.DataFrame) -> go.Figure:
    """Duplicates merged by step, stacked by kind."""
    totals = data.attrs.get("totals", {})
    fig = _figure("duplicates merged: " + ", ".join(f"{n:,} {k}" for k, n in totals.items()))
    drawn = data[data.rows > 0]
    for i, kind in enumerate(totals):  # one trace per kind
        part = drawn[drawn.kind == kind]
        fig.add_trace(go.Bar(x=part.step, y=part.rows, name=kind,
                             customdata=part.reason_code, marker_color=PALETTE[i % len(PALETTE)],
                             hovertemplate="%{x} %{customdata}: %{y:,} rows<extra></extra>"))
    fig.update_layout(barmode="stack", yaxis_title="rows merged", legend_title_text="kind")
    return fig


def call_matches_data(con: BaseBackend, *, since: Moment = None,
                      until: Moment = None) -> pd.DataFrame:
    """``match_status``, ``calls``: the calls that started in the window by how their
    tracking number was matched to a session (:func:`touchline.collect.dni.match_calls`:
    matched, ambiguous, expired, unmatched: no number lease explains it), ``not matched
    yet`` (``touchline run`` matches new calls) and ``sent as an event`` (a telephony
    integration's own track). ``attrs``: ``unmatched`` and ``calls``."""
    from touchline.collect.dni import MATCH_STATUSES

    if not _has(con, "calls", "events"):
        raise MissingInputError("no calls table: `touchline ingest FILE --kind calls`")
    c = con.table("calls")
    c = c.filter(_in_window(c.started_at, since, until))
    e = con.table("events")
    e = e.filter(e.source == "calls")
    props = e.properties.cast("string")
    recorded = e.select(
        _call=json_value(props, "call_id").coalesce(e.message_id.substr(5)),
        _status=json_value(props, "match_status")).distinct()
    j = c.left_join(recorded, c.call_id == recorded._call)
    status = ibis.ifelse(j._call.isnull(), NOT_MATCHED_YET,
                         j._status.fill_null(SENT_AS_EVENT))
    got = j.group_by(match_status=status).aggregate(
        calls=j.call_id.nunique().cast("int64")).to_pandas()
    found = dict(zip(got.match_status, got.calls, strict=True))
    if not found and not int(con.table("calls").count().to_pyarrow().as_py()):
        raise MissingInputError("no calls imported (call tracking): `touchline ingest FILE "
                                "--kind calls`, or the collector's call webhooks")
    order = [*MATCH_STATUSES, NOT_MATCHED_YET, SENT_AS_EVENT]
    statuses = [s for s in order if s in found or s in MATCH_STATUSES] + sorted(
        set(found) - set(order))
    frame = pd.DataFrame({"match_status": statuses,
                          "calls": [int(found.get(s, 0)) for s in statuses]})
    frame.attrs.update(unmatched=int(found.get("unmatched", 0)),
                       calls=int(frame.calls.sum()),
                       note=(f"calls that started {_window_words(since, until)}"
                             if since is not None or until is not None else None))
    return frame


def call_matches_figure(data: pd.DataFrame) -> go.Figure:
    """Calls by match status; the unmatched ones in the title."""
    fig = _figure(f"unmatched calls: {data.attrs.get('unmatched', 0):,} of "
                  f"{data.attrs.get('calls', 0):,} (no number lease explains them)")
    colours = ["#CC6677" if s == "unmatched" else PALETTE[1] for s in data.match_status]
    fig.add_trace(go.Bar(x=data.match_status, y=data.calls, marker_color=colours,
                         hovertemplate="%{x}: %{y:,} calls<extra></extra>"))
    fig.update_layout(yaxis_title="calls", showlegend=False)
    return fig


def identity_cuts_data(con: BaseBackend) -> pd.DataFrame:
    """``reason``, ``links``: the identity links the over-merge guards cut
    (:func:`touchline.prepare.identity.guard_links`), by why (:data:`CUT_REASONS`, each with a
    row), in the graph the last run built; ``attrs``: ``linked`` and ``cut``."""
    if not _has(con, "identity_links"):
        raise MissingInputError(f"no identity graph: {_RUN_FIRST}")
    links = con.table("identity_links")
    got = links.group_by(status=links.status.fill_null("linked"),
                         reason=links.reason.fill_null("")).aggregate(
        links=links.count().cast("int64")).to_pandas()
    cut = got[got.status == "cut"]
    found = dict(zip(cut.reason.replace("", "(no reason)"), cut.links, strict=True))
    reasons = [*CUT_REASONS, *sorted(set(found) - set(CUT_REASONS))]
    frame = pd.DataFrame({"reason": reasons, "links": [int(found.get(r, 0)) for r in reasons]})
    frame.attrs.update(linked=int(got.links[got.status == "linked"].sum()),
                       cut=int(frame.links.sum()))
    return frame


def identity_cuts_figure(data: pd.DataFrame) -> go.Figure:
    """Links cut by the guards, by reason."""
    fig = _figure(f"identity merges cut by the guards: {data.attrs.get('cut', 0):,} links "
                  f"(kept: {data.attrs.get('linked', 0):,})")
    fig.add_trace(go.Bar(x=data.reason, y=data.links, marker_color=PALETTE[2],
                         hovertemplate="%{x}: %{y:,} links cut<extra></extra>"))
    fig.update_layout(yaxis_title="links cut", showlegend=False)
    return fig


def freshness_data(con: BaseBackend) -> pd.DataFrame:
    """``what``, ``at``, ``detail``: when data was last loaded (by files and by the
    collector: :func:`freshness`) and what the last run did (its prepare's time, and the
    touches, sessions, persons, journeys and credits it left)."""
    fresh = freshness(con)
    have = set(con.list_tables())
    names = ("touches", "sessions", "persons", "journeys", "credits")
    counts: dict[str, Any] = {}
    last = (con.table("runs").order_by(ibis.desc("finished_at")).limit(1).to_pyarrow()
            .to_pylist() if "runs" in have else [])
    if last:  # what the last run recorded of itself
        counts = {**last[0], "models": [m for m in (last[0]["models"] or "").split(", ") if m]}
    elif all(n in have for n in names):
        j, c = con.table("journeys"), con.table("credits")
        aggs = [con.table(n).aggregate(_n=ibis._.count().cast("int64")).mutate(
            _k=ibis.literal(n), _v=ibis.null("string")) for n in names]
        aggs += [j.filter(j.converted).aggregate(_n=ibis._.count().cast("int64")).mutate(
            _k=ibis.literal("conversions"), _v=ibis.null("string")),
            c.select(_v=c.model.cast("string")).distinct().mutate(
                _n=ibis.null("int64"), _k=ibis.literal("model")).select("_n", "_k", "_v")]
        for r in ibis.union(*aggs, distinct=False).to_pyarrow().to_pylist():
            if r["_k"] == "model":
                counts.setdefault("models", []).append(r["_v"])
            else:
                counts[r["_k"]] = r["_n"]
    files = ""
    if "ingests" in have:
        i = con.table("ingests")
        s = i.aggregate(n=i.count(), rows=i.loaded.sum()).to_pyarrow().to_pylist()[0]
        files = f"{s['n']:,} file loads, {int(s['rows'] or 0):,} rows loaded in all"
    rows = [
        ("data last loaded", fresh["loaded"],
         f"by {LOADERS[fresh['loaded_by']]}" if fresh["loaded_by"] else
         "never: `touchline ingest FILE`, or the collector (`touchline serve`)"),
        ("files last loaded", fresh["files"], files or "no file loaded"),
        ("collector last loaded", fresh["collector"],
         "" if fresh["collector"] is not None else "nothing from the collector"),
        ("last run (prepare)", fresh["prepared"],
         ("" if fresh["prepared"] is not None else "time unknown: it dropped and changed "
          "no row") if counts else "never: run `touchline run`"),
    ]
    if counts:
        prepared = (f"{counts['touches']:,} touches in {counts['sessions']:,} sessions of "
                    f"{counts['persons']:,} persons; " if counts.get("touches") is not None
                    else "no prepare (journeys and credits only); ")
        warned = (f"; {counts['warnings']:,} warnings" if counts.get("warnings") else "")
        rows.append(("last run left", fresh["prepared"], (
            f"{prepared}{counts['journeys']:,} journeys ({counts['conversions']:,} converted);"
            " credits under " + (", ".join(sorted(counts.get("models", []))) or "no model")
            + warned)))
    frame = pd.DataFrame(rows, columns=["what", "at", "detail"])
    frame["at"] = [_utc(v) or "" for v in frame["at"]]
    frame.attrs.update(fresh=fresh)
    return frame


def freshness_figure(data: pd.DataFrame) -> go.Figure:
    """The loads and the last run as a table."""
    fig = _figure("when data was last loaded, and what the last run did")
    fig.add_trace(go.Table(
        header={"values": ["what", "when", "detail"], "align": "left"},
        cells={"values": [data.what, data["at"], data.detail], "align": "left"},
        columnwidth=[2, 2, 6]))
    fig.update_layout(height=300)
    return fig


# ---- the charts, by name --------------------------------------------------------------------

@dataclass(frozen=True)
class Chart:
    """A chart: its data function over the stored tables and its figure function."""

    name: str
    title: str
    data: Callable[..., pd.DataFrame]
    figure: Callable[[pd.DataFrame], go.Figure]


#: every chart the report draws, in the report's order (the person timeline needs a person)
CHARTS: dict[str, Chart] = {c.name: c for c in (
    Chart("overview", "Overview", overview_data, overview_figure),
    Chart("channels", "Channels", channel_credits_data, channel_credits_figure),
    Chart("models", "Model comparison", model_comparison_data, model_comparison_figure),
    Chart("model_ranking", "Models against the ground truth", model_ranking_data,
          model_ranking_figure),
    Chart("journey_map", "Journey map", journey_map_data, journey_map_figure),
    Chart("funnel", "Funnel", funnel_data, funnel_figure),
    Chart("funnel_channels", "Funnel by first-touch channel", funnel_by_channel_data,
          funnel_by_channel_figure),
    Chart("stages", "Stage timeline", stage_timeline_data, stage_timeline_figure),
    Chart("stage_kpis", "KPIs by stage", stage_kpis_data, stage_kpis_figure),
    Chart("retention", "Retention cohorts", retention_data, retention_figure),
    Chart("clv", "Customer lifetime value", clv_distribution_data, clv_distribution_figure),
    Chart("nps", "NPS by channel", nps_by_channel_data, nps_by_channel_figure),
    Chart("reviews", "Reviews by channel", reviews_by_channel_data, reviews_by_channel_figure),
    Chart("data_quality", "Data quality", data_quality_data, data_quality_figure),
    Chart("bot_share", "Bot share", bot_share_data, bot_share_figure),
    Chart("duplicates", "Duplicates merged", duplicates_data, duplicates_figure),
    Chart("calls", "Unmatched calls", call_matches_data, call_matches_figure),
    Chart("identity_cuts", "Identity merges cut", identity_cuts_data, identity_cuts_figure),
    Chart("freshness", "Loads and the last run", freshness_data, freshness_figure),
)}


@dataclass(frozen=True)
class Filters:
    """The filters of a page or report: each chart takes the ones its data function has."""

    since: datetime | None = None
    until: datetime | None = None
    conversion: str | None = None
    model: str = MODEL_DEFAULT
    stage_model: str = STAGE_MODEL_DEFAULT
    #: the channel chart's level: channel, source, medium, campaign, keyword, landing_page
    by: str = "channel"
    #: ground-truth files (simulator ``truth.json``) the model ranking scores against: set by
    #: the server or the report's ``--truth``, never by a URL
    truth: tuple[Path, ...] = ()
    #: B2B vs B2C: ``account`` or ``person`` journeys (None: both)
    unit: str | None = None
    #: ``desktop``, ``mobile``, ``tablet`` or ``(not set)``: touches in sessions on it
    device: str | None = None
    #: touches of this channel (as the channel chart names it; ``Unassigned``: none)
    channel: str | None = None
    #: touches of this campaign (the session's entrance campaign; ``(not set)``: none)
    campaign: str | None = None


#: the dashboard's filters (URL parameters) and what a note calls them
FILTER_LABELS = {"since": "date range", "until": "date range", "conversion": "conversion type",
                 "model": "attribution model", "stage_model": "stage model",
                 "unit": "B2B vs B2C", "device": "device", "channel": "channel",
                 "campaign": "campaign"}
_NO_STAGES = "its figures are not by stage"
_NOT_CREDITED = "it counts journeys or units, not the credits a model gives"
_NO_UNIT_SPLIT = ("the KPI registry computes it over every journey of both kinds "
                  "(`touchline kpis` has no B2B/B2C split)")
_NO_DEVICE = "it is a person's answers or purchases, not a touch in a session on a device"
_NO_CHANNEL = "it follows customers' purchases, not the touches of a channel or campaign"
_BY_CHANNEL = ("it shows every first-touch channel side by side (`touchline kpis --kpi {kpi} "
               "--by channel --by campaign` breaks it down further)")
_KPIS_BY = ("the KPIs are headlines over every touch (`touchline kpis --by {by}` breaks them "
            "down by {by})")
#: the data-quality charts of rows that never reached the journeys
_QUALITY_NOT_JOURNEYS = {
    f: "rows dropped or merged never reached the journeys: they have no conversion, credit, "
       "stage, customer kind, device, channel or campaign"
    for f in ("conversion", "model", "stage_model", "unit", "device", "channel", "campaign")}
#: why a chart leaves a filter aside, for each filter its data function does not take (a
#: test checks every chart × filter is taken or explained here): the page says so
FILTER_NOT_APPLIED: dict[str, dict[str, str]] = {
    "overview": {"stage_model": _NO_STAGES},
    "channels": {"stage_model": "credits are per touch, not per stage"},
    "models": {"model": "this chart shows every stored model side by side",
               "stage_model": "credits are per touch, not per stage"},
    "model_ranking": {
        "since": "the ground truth covers the whole simulation, so all dates are ranked",
        "model": "every stored model is ranked", "stage_model": _NO_STAGES,
        "unit": "a truth file is about one data set (B2C purchases or B2B deals): choose "
                "its conversion type",
        "device": "the truth counts the conversions each channel caused, not devices",
        "channel": "the truth ranks the models over every channel at once",
        "campaign": "the truth counts the conversions each channel caused, not campaigns"},
    "journey_map": {"model": "the map counts journeys by their touches, not by credit",
                    "stage_model": "the map is of channels; the stage timeline shows stages"},
    "funnel": {"since": "a funnel follows each unit through every stage it ever entered",
               "conversion": "its steps are the stages of the stage model",
               "model": _NOT_CREDITED},
    "funnel_channels": {
        "since": "a funnel follows each unit through every stage it ever entered",
        "conversion": "its steps are the stages of the stage model", "model": _NOT_CREDITED},
    "stages": {"conversion": "stages are entered by units, whatever they convert to",
               "model": _NOT_CREDITED},
    "stage_kpis": {"unit": _NO_UNIT_SPLIT,
                   "device": _KPIS_BY.format(by="device"),
                   "channel": _KPIS_BY.format(by="channel"),
                   "campaign": _KPIS_BY.format(by="campaign")},
    "retention": {"model": _NOT_CREDITED, "stage_model": _NO_STAGES,
                  "unit": _NO_UNIT_SPLIT, "device": _NO_DEVICE, "channel": _NO_CHANNEL,
                  "campaign": _NO_CHANNEL},
    "clv": {"model": _NOT_CREDITED, "stage_model": _NO_STAGES, "unit": _NO_UNIT_SPLIT,
            "device": _NO_DEVICE, "channel": _NO_CHANNEL, "campaign": _NO_CHANNEL},
    "nps": {"conversion": "answers are not tied to a conversion", "model": _NOT_CREDITED,
            "stage_model": _NO_STAGES, "unit": _NO_UNIT_SPLIT, "device": _NO_DEVICE,
            "channel": _BY_CHANNEL.format(kpi="nps"),
            "campaign": _BY_CHANNEL.format(kpi="nps")},
    "reviews": {"conversion": "reviews are not tied to a conversion", "model": _NOT_CREDITED,
                "stage_model": _NO_STAGES, "unit": _NO_UNIT_SPLIT, "device": _NO_DEVICE,
                "channel": _BY_CHANNEL.format(kpi="review_rating"),
                "campaign": _BY_CHANNEL.format(kpi="review_rating")},
    "data_quality": {
        f: "rejected records never reached the journeys: they have no conversion, "
           "credit, stage, customer kind or device"
        for f in ("conversion", "model", "stage_model", "unit", "device")} | {
        f: "rejected records never became touches of a channel or campaign"
        for f in ("channel", "campaign")},
    "bot_share": _QUALITY_NOT_JOURNEYS,
    "duplicates": _QUALITY_NOT_JOURNEYS,
    "calls": {f: "it counts every call, matched to a session or not"
              for f in ("conversion", "model", "stage_model", "unit", "device", "channel",
                        "campaign")},
    "identity_cuts": {
        "since": "the identity graph is rebuilt whole by each run: these are its cuts",
        **{f: "links join identifiers of people, before any journey, channel or device"
           for f in ("conversion", "model", "stage_model", "unit", "device", "channel",
                     "campaign")}},
    "freshness": {f: "it is about the warehouse's loads and last run, not a slice of the data"
                  for f in ("since", "conversion", "model", "stage_model", "unit", "device",
                            "channel", "campaign")},
    "person": {"since": "a timeline shows all of one person's or account's history",
               "unit": "the search finds a person or an account itself",
               "device": "a timeline shows every touch, each with its session",
               "channel": "a timeline shows every touch, each with its channel and campaign",
               "campaign": "a timeline shows every touch, each with its channel and campaign"},
}


def filters_given(filters: Filters, base: Filters | None = None) -> tuple[str, ...]:
    """The filters (URL parameter names) of ``filters`` set away from ``base`` (by default
    no filter, with ``filters``' own model and stage model: those are always set): what the
    report asked for, as the dashboard reads it from its URL, for
    :func:`filters_not_applied`."""
    base = base or Filters(model=filters.model, stage_model=filters.stage_model)
    return tuple(name for name in FILTER_LABELS
                 if getattr(filters, name) != getattr(base, name))


def filters_not_applied(chart: str, given: Sequence[str]) -> list[str]:
    """The notes of ``chart`` (a :data:`CHARTS` name, or ``person``) for the filters
    ``given`` (URL parameter names) its data function leaves aside: ``"device: why"``, one
    per filter (since and until are one: the date range)."""
    why = FILTER_NOT_APPLIED.get(chart, {})
    notes: dict[str, str] = {}
    for name in given:
        key = "since" if name == "until" else name
        if key in why:
            notes.setdefault(FILTER_LABELS[name], why[key])
    return [f"{label} does not apply here: {reason}" for label, reason in notes.items()]


#: the modules the data functions import when first called (some import scipy, or register
#: the whole KPI registry), and the Plotly trace types the figures draw (Plotly imports each
#: on first use): :func:`preload` imports them all
_LAZY_MODULES = ("touchline.attribution.evaluate", "touchline.demo", "touchline.journeys.timeline",
                 "touchline.journeys.conversions", "touchline.metrics.clv",
                 "touchline.metrics.funnels", "touchline.metrics.kpis", "scipy.stats")
_TRACES = ("Bar", "Funnel", "Heatmap", "Indicator", "Sankey", "Scatter", "Table")


def preload() -> None:
    """Import what the charts import on first use (a few seconds: scipy, the KPI registry,
    Plotly's trace classes), so a server pays it when it starts, not its first page view."""
    import importlib

    for name in _LAZY_MODULES:
        importlib.import_module(name)
    for trace in _TRACES:
        getattr(go, trace)()
    _figure("")


def chart_data(con: BaseBackend, chart: Chart, filters: Filters) -> pd.DataFrame:
    """``chart``'s data under the filters its data function takes."""
    accepted = inspect.signature(chart.data).parameters
    return chart.data(con, **{k: v for k, v in asdict(filters).items() if k in accepted})
