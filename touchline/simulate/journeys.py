"""Journeys: who is exposed to which channel when, what each visit contains, who converts.

For each person, touch counts per channel are drawn (Poisson with a person's activity), each
touch gets a funnel position from its channel's stage (awareness → consideration → decision),
and some touches cause a later direct visit. The causal model (:mod:`.model`) decides on the
unit's counts who converts; converters then get a purchase (or a won deal), post-purchase
touches (retention: newsletters, SMS, direct visits), repeat orders and survey answers
(advocacy). Everything is vectorised over the chunk: arrays of touches, never a loop over
people.

Times are epoch milliseconds (UTC). Touches on one device are kept at least
``SESSION_SPACING`` apart and each visit's events fit in ``SESSION_SPAN_MAX``, so a 30-minute
inactivity rule recovers exactly the simulated sessions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from touchline.simulate import channels as ch
from touchline.simulate import model
from touchline.simulate.population import Population

PERIOD_START_MS = 1_735_689_600_000  # 2025-01-01T00:00:00Z
MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS
SESSION_GAP_MS = 30 * MINUTE_MS  # the inactivity that ends a session
SESSION_SPAN_MAX_MS = 16 * MINUTE_MS  # every visit's events lie within this of its start
SESSION_SPACING_MS = SESSION_SPAN_MAX_MS + SESSION_GAP_MS + MINUTE_MS

PRE, NAVIGATIONAL, RETENTION, REPEAT = 0, 1, 2, 3  # touch phases
FOLLOW_UP_SHARE = 0.18  # touches that cause a later direct visit (direct is a consequence)
FOLLOW_UP_DELAY = 0.04  # mean funnel-position delay of that visit
NAVIGATIONAL_SHARE = 0.30  # converters who come back by typing the address to buy
POSITION_SD = 0.22  # spread of a touch's funnel position around its channel's stage
PRIMARY_DEVICE_SHARE = 0.55
LOGIN_SHARE = 0.45  # devices that log in on their first visit after the person is known
ALIAS_SHARE = 0.30  # first identifications that also send an alias call
PAGE_GAP_MS = (8_000, 110_000)
MAX_PAGES = 8
ACTION_DELAY_MS = 15_000  # form / chat / checkout after the last page view
ORDER_DELAY_MS = 45_000

CALL_OUTCOMES = ("sale", "lead", "support", "voicemail", "inquiry")
FORMS_B2C = ("newsletter_signup", "contact_us", "quote_request")
FORMS_B2B = ("content_download", "webinar_registration", "contact_sales", "demo_request")


@dataclass(frozen=True)
class Timing:
    """When journeys start and how long they run."""

    start_window_days: float
    duration_median_days: float
    duration_sigma: float
    retention_days: float
    form_rate: tuple[float, float]  # (at awareness, extra at decision)
    chat_rate: float


B2C_TIMING = Timing(300, 12, 1.0, 150, (0.04, 0.10), 0.035)
B2B_TIMING = Timing(150, 205, 0.30, 200, (0.05, 0.12), 0.03)


@dataclass
class Touches:
    """Every touch of the chunk, sorted by unit then time. Web touches are visits (sessions)."""

    person: np.ndarray
    unit: np.ndarray
    channel: np.ndarray
    placement: np.ndarray
    device: np.ndarray  # chunk-local device, -1 for calls and webinars
    time: np.ndarray  # ms, start of the visit / the call / the webinar
    phase: np.ndarray
    cause: np.ndarray  # channel whose touch caused this direct visit, else -1
    position: np.ndarray  # funnel position 0..1
    n_pages: np.ndarray
    cta: np.ndarray
    form: np.ndarray  # index in the mode's form list, -1 for none
    chat: np.ndarray
    order: np.ndarray  # 0 none, 1 first order, 2 repeat order
    order_value: np.ndarray
    action_offset: np.ndarray  # ms from the visit start to its form/chat/checkout
    identify: np.ndarray  # an identify call is sent in this touch
    identify_time: np.ndarray
    alias: np.ndarray
    group: np.ndarray
    conversion: np.ndarray  # the touch in which the unit converts (B2C)
    call_duration: np.ndarray  # seconds
    call_answered: np.ndarray
    call_pool: np.ndarray  # channel whose tracking-number pool showed the number
    call_number: np.ndarray  # index in that pool
    call_outcome: np.ndarray  # index in CALL_OUTCOMES, -1 for other touches

    def __len__(self) -> int:
        return len(self.time)

    def take(self, index: np.ndarray) -> Touches:
        return Touches(**{k: v[index] for k, v in vars(self).items()})


@dataclass(frozen=True)
class Pages:
    """Page views of the web touches: owning touch, offset from the visit start, page."""

    touch: np.ndarray
    offset: np.ndarray
    page: np.ndarray
    landing: np.ndarray  # the first page view of its visit


@dataclass(frozen=True)
class Journeys:
    """One chunk's journeys: touches, page views, per-unit outcome and ground truth."""

    touches: Touches
    pages: Pages
    exposures: np.ndarray  # (units, channels) touches before the decision: N
    follow_ups: np.ndarray  # (units, channels) direct visits caused by each channel: F
    retention: np.ndarray  # (units, channels) touches after the purchase: M
    outcome: model.Outcome
    counterfactuals: model.Counterfactuals
    decision_time: np.ndarray  # per unit: first order / deal won (ms), -1 if none
    first_touch_time: np.ndarray
    last_touch_time: np.ndarray  # last touch before the decision (all touches if none)
    person_identified: np.ndarray  # per person: first identification time, -1 if never
    device_identified: np.ndarray  # per device: first identify call time, -1 if never
    expansion_times: np.ndarray  # (units, K) B2B expansion deal close times, -1 if none
    lapsed_repeats: int = 0  # repeat orders (deals) a seasonal dip cancelled


def _positions(channel: np.ndarray, stage: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return np.asarray(np.clip(rng.normal(stage[channel], POSITION_SD), 0.0, 1.0))


def _pick_placement(channel: np.ndarray, rng: np.random.Generator, b2b: bool) -> np.ndarray:
    """A placement (platform) for each touch of its channel, by the mode's weights."""
    out = np.full(len(channel), -1, np.int64)
    u = rng.random(len(channel))
    for c in range(len(ch.NAMES)):
        options = np.flatnonzero(np.equal(ch.PLACEMENT_CHANNEL, c))
        if len(options) == 0:
            continue
        weights = np.array([ch.PLACEMENTS[i].weight_b2b if b2b else ch.PLACEMENTS[i].weight_b2c
                            for i in options])
        cumulative = np.cumsum(weights / weights.sum())
        mine = channel == c
        out[mine] = options[np.minimum(np.searchsorted(cumulative, u[mine]), len(options) - 1)]
    return out


def _group_starts(keys: np.ndarray) -> np.ndarray:
    """For keys sorted ascending: True at the first row of each run of equal keys."""
    starts = np.ones(len(keys), bool)
    starts[1:] = keys[1:] != keys[:-1]
    return starts


def space_sessions(device: np.ndarray, time: np.ndarray, spacing: int) -> np.ndarray:
    """Push visits on one device apart so consecutive starts are at least ``spacing`` apart.

    Sorted by device and time, the adjusted start obeys ``t'_k = max(t_k, t'_{k-1} + g)``,
    whose closed form is ``t'_k = k·g + cummax_{j≤k}(t_j - j·g)`` within each device: one
    global cumulative maximum once devices are offset into disjoint ranges.
    """
    if len(time) == 0:
        return time
    order = np.lexsort((time, device))
    d, t = device[order], time[order]
    starts = _group_starts(d)
    group = np.cumsum(starts) - 1
    first_index = np.nonzero(starts)[0]
    rank = np.arange(len(t)) - first_index[group]
    shifted = t - rank * spacing
    low = shifted.min()
    width = int(shifted.max() - low) + 1
    stacked = (shifted - low) + group * width
    adjusted = np.maximum.accumulate(stacked) - group * width + low + rank * spacing
    out = np.empty_like(time)
    out[order] = adjusted
    return out


def build_journeys(
    pop: Population,
    rng: np.random.Generator,
    *,
    params: dict[str, np.ndarray],
    constants: model.ModelConstants,
    timing: Timing,
    dip: model.SeasonalDip | None = None,
    dip_rng: np.random.Generator | None = None,
) -> Journeys:
    """Draw the exposures, outcomes and timelines of one chunk's units; with ``dip``, the
    repeat orders of its month lapse by ``dip_rng`` (a stream of its own, so ``rng`` draws
    what it draws without a dip)."""
    n_people, n_units, n_channels = pop.people, pop.units, len(ch.NAMES)
    b2b = pop.b2b

    # -- exposures before the decision ---------------------------------------------------------
    activity = rng.gamma(1.5, 1 / 1.5, n_people)
    counts = rng.poisson(params["rate"][None, :] * activity[:, None])
    idle = counts.sum(axis=1) == 0
    forced = rng.choice(n_channels, size=int(idle.sum()), p=params["rate"] / params["rate"].sum())
    counts[np.nonzero(idle)[0], forced] = 1
    base_person = np.repeat(np.repeat(np.arange(n_people), n_channels), counts.ravel())
    base_channel = np.repeat(np.tile(np.arange(n_channels), n_people), counts.ravel())
    base_position = _positions(base_channel, params["stage"], rng)
    spawns = (base_channel != ch.DIRECT) & (rng.random(len(base_channel)) < FOLLOW_UP_SHARE)
    follow_position = np.minimum(
        base_position[spawns] + rng.exponential(FOLLOW_UP_DELAY, int(spawns.sum())), 1.0)
    pre_person = np.concatenate([base_person, base_person[spawns]])
    pre_channel = np.concatenate([base_channel, np.full(int(spawns.sum()), ch.DIRECT)])
    pre_cause = np.concatenate([np.full(len(base_channel), -1), base_channel[spawns]])
    pre_position = np.concatenate([base_position, follow_position])
    pre_unit = pop.person_unit[pre_person]
    exposures = np.bincount(pre_unit * n_channels + pre_channel,
                            minlength=n_units * n_channels).reshape(n_units, n_channels)
    caused = pre_cause >= 0
    follow_ups = np.bincount(pre_unit[caused] * n_channels + pre_cause[caused],
                             minlength=n_units * n_channels).reshape(n_units, n_channels)
    unit_activity = np.bincount(pop.person_unit, activity, n_units) / np.diff(pop.unit_offsets)
    retention = rng.poisson(params["retention_rate"][None, :] * unit_activity[:, None])

    # -- the causal model, factual and counterfactual -------------------------------------------
    draws = model.draw(rng, n_units, constants)
    result = model.outcome(exposures, retention, draws, params, constants)
    converted = result.converted

    # -- timeline of the touches before the decision ------------------------------------------
    start = PERIOD_START_MS + (rng.random(n_units) * timing.start_window_days * DAY_MS)
    duration = rng.lognormal(np.log(timing.duration_median_days), timing.duration_sigma,
                             n_units) * DAY_MS
    duration = np.clip(duration, 2 * HOUR_MS, 3 * timing.duration_median_days * DAY_MS)
    pre_time = (start[pre_unit] + pre_position * duration[pre_unit]).astype(np.int64)
    pre_device = _assign_devices(pop, pre_person, pre_channel, rng)
    web = pre_device >= 0
    pre_time[web] = space_sessions(pre_device[web], pre_time[web], SESSION_SPACING_MS)

    last_pre = np.full(n_units, -1, np.int64)
    np.maximum.at(last_pre, pre_unit, pre_time)
    first_pre = np.full(n_units, np.iinfo(np.int64).max, np.int64)
    np.minimum.at(first_pre, pre_unit, pre_time)

    # the touch that closes each journey: its last (in B2C a purchase needs a visit or a call)
    order = np.lexsort((pre_time, pre_unit))
    last_index = order[np.r_[np.nonzero(np.diff(pre_unit[order]))[0], len(order) - 1]]
    last_of_unit = np.full(n_units, -1, np.int64)
    last_of_unit[pre_unit[last_index]] = last_index

    parts: list[dict[str, np.ndarray]] = [{
        "person": pre_person, "channel": pre_channel, "time": pre_time, "device": pre_device,
        "phase": np.full(len(pre_time), PRE), "cause": pre_cause, "position": pre_position,
    }]
    decision_time = np.full(n_units, -1, np.int64)
    conv_units = np.nonzero(converted)[0]
    if b2b:
        delay = DAY_MS + rng.exponential(10 * DAY_MS, len(conv_units))
        decision_time[conv_units] = (last_pre[conv_units] + delay).astype(np.int64)
        nav_units = np.zeros(0, np.int64)
    else:
        last_channel = pre_channel[last_of_unit[conv_units]]
        wants_nav = ((rng.random(len(conv_units)) < NAVIGATIONAL_SHARE)
                     | (last_channel == ch.OFFLINE))
        nav_units = conv_units[wants_nav]
        nav_person = pop.unit_offsets[nav_units]  # B2C: unit u is person u
        nav_time = (last_pre[nav_units] + 60 * MINUTE_MS
                    + rng.exponential(20 * HOUR_MS, len(nav_units))).astype(np.int64)
        parts.append({
            "person": nav_person, "channel": np.full(len(nav_units), ch.DIRECT),
            "time": nav_time, "device": pop.device_offsets[nav_person],
            "phase": np.full(len(nav_units), NAVIGATIONAL),
            "cause": np.full(len(nav_units), -1), "position": np.ones(len(nav_units)),
        })
        decision_time[conv_units] = last_pre[conv_units]
        decision_time[nav_units] = nav_time

    # -- after the decision: retention touches and repeat orders (converters only) -------------
    m_conv = retention[conv_units]
    ret_unit = np.repeat(np.repeat(conv_units, n_channels), m_conv.ravel())
    ret_channel = np.repeat(np.tile(np.arange(n_channels), len(conv_units)), m_conv.ravel())
    ret_person = _member_of(pop, ret_unit, rng)
    ret_time = (decision_time[ret_unit] + DAY_MS
                + rng.random(len(ret_unit)) * timing.retention_days * DAY_MS).astype(np.int64)
    parts.append({
        "person": ret_person, "channel": ret_channel, "time": ret_time,
        "device": _assign_devices(pop, ret_person, ret_channel, rng),
        "phase": np.full(len(ret_unit), RETENTION), "cause": np.full(len(ret_unit), -1),
        "position": np.ones(len(ret_unit)),
    })
    repeat_unit, repeat_k = np.nonzero(result.repeat_values > 0)
    repeat_time = (decision_time[repeat_unit] + 14 * DAY_MS
                   + rng.random(len(repeat_unit)) * 2 * timing.retention_days * DAY_MS
                   ).astype(np.int64)
    lapsed = None
    if dip is not None:
        if dip_rng is None:
            raise ValueError("a seasonal dip needs its own random stream (dip_rng)")
        month = repeat_time.astype("datetime64[ms]").astype("datetime64[M]").astype(np.int64)
        gone = (month % 12 + 1 == dip.month) & (dip_rng.random(len(repeat_time)) >= dip.factor)
        lapsed = np.zeros(result.repeat_values.shape, bool)
        lapsed[repeat_unit[gone], repeat_k[gone]] = True
        # converted and first orders are as before: only these repeat orders are gone
        result = model.outcome(exposures, retention, draws, params, constants, lapsed)
        repeat_unit, repeat_k, repeat_time = repeat_unit[~gone], repeat_k[~gone], repeat_time[~gone]
    counterfactual = model.counterfactuals(exposures, follow_ups, retention, draws, params,
                                           constants, lapsed)
    expansion_times = np.full(result.repeat_values.shape, -1, np.int64)
    if b2b:  # expansion deals are CRM records, not visits
        expansion_times[repeat_unit, repeat_k] = repeat_time
        repeat_unit = repeat_unit[:0]
        repeat_time = repeat_time[:0]
    repeat_person = pop.unit_offsets[repeat_unit]
    parts.append({
        "person": repeat_person, "channel": np.full(len(repeat_unit), ch.DIRECT),
        "time": repeat_time, "device": pop.device_offsets[repeat_person],
        "phase": np.full(len(repeat_unit), REPEAT), "cause": np.full(len(repeat_unit), -1),
        "position": np.ones(len(repeat_unit)),
    })
    after = {k: np.concatenate([p[k] for p in parts[-2:]]) for k in parts[0]}
    after_web = after["device"] >= 0
    after["time"][after_web] = space_sessions(after["device"][after_web],
                                              after["time"][after_web], SESSION_SPACING_MS)
    repeat_values_flat = result.repeat_values[result.repeat_values > 0] if not b2b else np.zeros(0)

    columns = {k: np.concatenate([p[k] for p in parts[:-2]] + [after[k]]) for k in parts[0]}
    n_touch = len(columns["time"])
    unit = pop.person_unit[columns["person"]]
    phase = columns["phase"]
    order_kind = np.zeros(n_touch, np.int64)
    order_value = np.zeros(n_touch)
    conversion = np.zeros(n_touch, bool)
    if not b2b:
        # the converting touch: the navigational visit if any, else the last touch before
        n_pre = len(pre_time)
        closing = last_of_unit[conv_units].copy()
        nav_rows = n_pre + np.arange(len(nav_units))
        closing[np.isin(conv_units, nav_units)] = nav_rows
        conversion[closing] = True
        order_kind[closing] = 1
        order_value[closing] = result.first_value[unit[closing]]
        repeat_rows = np.nonzero(phase == REPEAT)[0]
        order_kind[repeat_rows] = 2
        order_value[repeat_rows] = repeat_values_flat

    touches = _sessions(pop, columns, unit, order_kind, order_value, conversion, rng, timing)
    resort = np.lexsort((touches.time, touches.unit))
    touches = touches.take(resort)
    pages = _pages(touches, rng)
    person_identified, device_identified = _identify(pop, touches, rng)
    _calls(touches, rng)
    return Journeys(
        touches=touches, pages=pages, exposures=exposures, follow_ups=follow_ups,
        retention=retention, outcome=result, counterfactuals=counterfactual,
        decision_time=decision_time, first_touch_time=first_pre, last_touch_time=last_pre,
        person_identified=person_identified, device_identified=device_identified,
        expansion_times=expansion_times,
        lapsed_repeats=0 if lapsed is None else int(lapsed.sum()),
    )


def _member_of(pop: Population, unit: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random stakeholder of each unit (the person itself in B2C)."""
    sizes = np.diff(pop.unit_offsets)[unit]
    return np.asarray(pop.unit_offsets[unit] + (rng.random(len(unit)) * sizes).astype(np.int64))


def _assign_devices(
    pop: Population, person: np.ndarray, channel: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Web touches happen on one of the person's devices (mostly the main one); calls and
    webinars on none (-1)."""
    n_dev = np.diff(pop.device_offsets)[person]
    other = (rng.random(len(person)) * n_dev).astype(np.int64)
    primary = rng.random(len(person)) < PRIMARY_DEVICE_SHARE
    device = pop.device_offsets[person] + np.where(primary, 0, other)
    return np.where(ch.IS_WEB[channel], device, -1)


def _sessions(
    pop: Population,
    columns: dict[str, np.ndarray],
    unit: np.ndarray,
    order_kind: np.ndarray,
    order_value: np.ndarray,
    conversion: np.ndarray,
    rng: np.random.Generator,
    timing: Timing,
) -> Touches:
    """What each visit contains: pages, a CTA click, a form, a chat."""
    n = len(columns["time"])
    channel, position, phase = columns["channel"], columns["position"], columns["phase"]
    web = columns["device"] >= 0
    n_pages = np.where(web, 1 + np.minimum(rng.poisson(0.8 + 1.8 * position), MAX_PAGES - 1), 0)
    cta = web & (rng.random(n) < 0.25 + 0.25 * position)
    low, extra = timing.form_rate
    form_rate = np.where(phase == PRE, low + extra * position, 0.01)
    has_form = web & (rng.random(n) < form_rate)
    forms = FORMS_B2B if pop.b2b else FORMS_B2C
    form_kind = np.minimum((position * len(forms) + rng.normal(0, 0.5, n)).astype(np.int64),
                           len(forms) - 1).clip(0)
    chat = web & (rng.random(n) < timing.chat_rate * (0.5 + position))
    return Touches(
        person=columns["person"], unit=unit, channel=channel,
        placement=_pick_placement(channel, rng, pop.b2b), device=columns["device"],
        time=columns["time"], phase=phase, cause=columns["cause"], position=position,
        n_pages=n_pages, cta=cta, form=np.where(has_form, form_kind, -1), chat=chat,
        order=order_kind, order_value=order_value, action_offset=np.zeros(n, np.int64),
        identify=np.zeros(n, bool), identify_time=np.full(n, -1, np.int64),
        alias=np.zeros(n, bool), group=np.zeros(n, bool), conversion=conversion,
        call_duration=np.zeros(n, np.int64), call_answered=np.zeros(n, bool),
        call_pool=np.full(n, -1, np.int64), call_number=np.full(n, -1, np.int64),
        call_outcome=np.full(n, -1, np.int64),
    )


def _pages(touches: Touches, rng: np.random.Generator) -> Pages:
    """Page views of every visit, and each visit's action time (after its last page)."""
    touch = np.repeat(np.arange(len(touches)), touches.n_pages)
    first = _group_starts(touch) if len(touch) else np.zeros(0, bool)
    gap = rng.integers(*PAGE_GAP_MS, size=len(touch))
    gap[first] = 0
    cumulative = np.cumsum(gap)
    offset = cumulative - cumulative[np.nonzero(first)[0]][np.cumsum(first) - 1]
    page = _page_for(touches, touch, first, rng)
    last_page = np.zeros(len(touches), np.int64)
    np.maximum.at(last_page, touch, offset)
    touches.action_offset = np.where(touches.device >= 0, last_page + ACTION_DELAY_MS, 0)
    return Pages(touch=touch, offset=offset, page=page, landing=first)


# Site pages: (path, title, funnel position). Landing pages depend on the channel.
SITE_PAGES: tuple[tuple[str, str, float], ...] = (
    ("/", "Touchline: know what works", 0.2),
    ("/blog/attribution-models-explained", "Attribution models explained", 0.1),
    ("/blog/utm-guide", "The UTM guide", 0.15),
    ("/blog/markov-vs-shapley", "Markov vs Shapley attribution", 0.2),
    ("/features", "Features", 0.4),
    ("/case-studies", "Case studies", 0.5),
    ("/integrations", "Integrations", 0.5),
    ("/pricing", "Pricing", 0.7),
    ("/demo", "Book a demo", 0.8),
    ("/signup", "Sign up", 0.85),
    ("/checkout", "Checkout", 0.9),
    ("/account", "Your account", 1.0),
    ("/help/getting-started", "Help: getting started", 1.0),
    ("/lp/attribution-software", "Attribution software for growing teams", 0.6),
)
LANDING_BY_CHANNEL: dict[str, tuple[int, ...]] = {
    "organic_search": (1, 2, 3, 0, 4), "paid_search": (13, 7, 0), "paid_social": (13, 0, 5),
    "organic_social": (1, 3, 5), "email": (4, 7, 1, 11), "display": (13, 0), "video": (0, 4),
    "referral": (0, 5, 7), "affiliate": (7, 13), "direct": (0, 11, 7), "sms": (7, 10),
}
_PAGE_POSITION = np.array([p[2] for p in SITE_PAGES])


def _page_for(
    touches: Touches, touch: np.ndarray, first: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Landing pages by channel; later pages drift down the funnel with the visit's stage."""
    position = touches.position[touch]
    target = np.clip(position + rng.normal(0.0, 0.25, len(touch)), 0.0, 1.0)
    page = np.abs(_PAGE_POSITION[None, :] - target[:, None]).argmin(axis=1)
    channel = touches.channel[touch]
    u = rng.random(len(touch))
    for name, landings in LANDING_BY_CHANNEL.items():
        mine = first & (channel == ch.INDEX[name])
        page[mine] = np.asarray(landings)[(u[mine] * len(landings)).astype(np.int64)]
    return np.asarray(page)


def _identify(
    pop: Population, touches: Touches, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Who becomes known when: form fills, chats, calls, webinars and purchases identify the
    person; other devices log in on their first visit afterwards (``LOGIN_SHARE``).

    Sets the touch flags ``identify``, ``alias`` and ``group`` and returns the first
    identification time per person and per device (-1 if never).
    """
    n = len(touches)
    web = touches.device >= 0
    identifying = ((touches.form >= 0) | touches.chat | (touches.order > 0)
                   | (touches.channel == ch.PHONE) | (touches.channel == ch.OFFLINE))
    ident_time = touches.time + touches.action_offset + 1_000
    never = np.iinfo(np.int64).max
    person_first = np.full(pop.people, never, np.int64)
    np.minimum.at(person_first, touches.person[identifying], ident_time[identifying])
    device_first = np.full(pop.devices, never, np.int64)
    web_ident = identifying & web
    np.minimum.at(device_first, touches.device[web_ident], ident_time[web_ident])

    # logins: the first visit of a device after its person is known, for some devices
    candidate = web & (touches.time > person_first[touches.person]) & (
        touches.time < device_first[np.maximum(touches.device, 0)])
    rows = np.nonzero(candidate)[0]
    rows = rows[np.lexsort((touches.time[rows], touches.device[rows]))]
    firsts = rows[_group_starts(touches.device[rows])] if len(rows) else rows
    logs_in = firsts[rng.random(len(firsts)) < LOGIN_SHARE]
    login_time = touches.time[logs_in] + 3_000
    device_first[touches.device[logs_in]] = login_time

    identify = identifying.copy()
    identify[logs_in] = True
    ident_time[logs_in] = login_time
    touches.identify = identify
    touches.identify_time = np.where(identify, ident_time, -1)
    first_of_device = web & identify & (ident_time == device_first[np.maximum(touches.device, 0)])
    first_of_person = identify & (ident_time == person_first[touches.person])
    touches.alias = first_of_person & web & (rng.random(n) < ALIAS_SHARE)
    touches.group = first_of_device & pop.b2b
    return (np.where(person_first == never, -1, person_first),
            np.where(device_first == never, -1, device_first))


def _calls(touches: Touches, rng: np.random.Generator) -> None:
    """Tracked calls: duration, whether answered, and the number dialled.

    Dynamic number insertion shows each channel's own numbers, so the number dialled belongs to
    the channel of the caller's previous visit (within 30 days), else the printed number.
    """
    is_call = touches.channel == ch.PHONE
    n = len(touches)
    # touches are sorted by unit, time: carry the last web visit's channel forward per person
    order = np.lexsort((touches.time, touches.person))
    web = touches.device[order] >= 0
    idx = np.where(web, np.arange(n), -1)
    last_web = np.maximum.accumulate(idx)
    person_sorted = touches.person[order]
    valid = (last_web >= 0)
    last_web_safe = np.maximum(last_web, 0)
    valid &= person_sorted[last_web_safe] == person_sorted
    valid &= touches.time[order] - touches.time[order][last_web_safe] < 30 * DAY_MS
    pool_sorted = np.where(valid, touches.channel[order][last_web_safe], ch.PHONE)
    pool = np.empty(n, np.int64)
    pool[order] = pool_sorted
    answered = rng.random(n) < 0.85
    answered |= touches.conversion
    duration = np.where(answered, rng.lognormal(np.log(240), 0.8, n).astype(np.int64) + 20, 0)
    sizes = np.array([len(ch.TRACKING_POOLS[name]) for name in ch.NAMES])
    touches.call_pool = np.where(is_call, pool, -1)
    touches.call_number = np.where(is_call, (rng.random(n) * sizes[pool]).astype(np.int64), -1)
    touches.call_answered = is_call & answered
    touches.call_duration = np.where(is_call, duration, 0)
    first_contact = touches.identify_time == _person_first_identify(touches)
    outcome = np.select(
        [touches.conversion, ~answered, touches.phase >= RETENTION, first_contact],
        [0, 3, 2, 1], default=4)
    touches.call_outcome = np.where(is_call, outcome, -1)


def _person_first_identify(touches: Touches) -> np.ndarray:
    """Each touch's person's first identification time (-1 if never)."""
    never = np.iinfo(np.int64).max
    first = np.full(int(touches.person.max(initial=0)) + 1, never, np.int64)
    known = touches.identify_time >= 0
    np.minimum.at(first, touches.person[known], touches.identify_time[known])
    return np.asarray(first[touches.person])
