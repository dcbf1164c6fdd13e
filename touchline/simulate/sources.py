"""The other files a user ingests: CRM deals, telephony calls, surveys, ad spend and Search
Console, each derived from the same simulated journeys so they agree with the events.

Per-chunk builders return Arrow string columns named as in ``touchline/store.py``; spend and
Search Console are daily aggregates, accumulated over chunks in fixed-size count arrays
(memory does not grow with the number of people) and written once at the end.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from touchline.simulate import channels as ch
from touchline.simulate import mess, text
from touchline.simulate.events import CAMPAIGN_VOCAB, Landings, entity_ids, tracking_numbers
from touchline.simulate.journeys import (
    CALL_OUTCOMES,
    DAY_MS,
    NAVIGATIONAL,
    PERIOD_START_MS,
    PRE,
    SITE_PAGES,
    Journeys,
)
from touchline.simulate.population import DEVICE_KINDS, Population

SURVEY_SHARE = 0.35  # converters (B2B: contacts of won accounts) who answer the NPS survey
REVIEW_SHARE = 0.30  # of those, who also write a review
HEARD_ABOUT_SHARE = 0.80  # who answer "how did you hear about us"
NPS_SHARES = (0.02, 0.01, 0.02, 0.03, 0.04, 0.07, 0.08, 0.14, 0.18, 0.20, 0.21)
HEARD_ABOUT: dict[str, tuple[str, ...]] = {
    "organic_search": ("Google", "google search", "Searched online", "Bing"),
    "paid_search": ("Google ad", "Google", "Saw an ad on Google"),
    "paid_social": ("Facebook ad", "Instagram", "LinkedIn ad", "TikTok"),
    "organic_social": ("Facebook", "Twitter", "LinkedIn post", "instagram"),
    "email": ("Newsletter", "email", "Your emails"),
    "display": ("Saw a banner", "An ad somewhere"),
    "video": ("YouTube", "youtube video"),
    "referral": ("A review site", "G2", "Blog post", "Capterra"),
    "affiliate": ("Coupon site", "Deal site"),
    "direct": ("I already knew you", "Word of mouth"),
    "sms": ("Text message", "SMS"),
    "phone": ("Phone call", "Called you"),
    "offline": ("Webinar", "Conference", "Event"),
}
SEGMENTS = ("starter", "growth", "enterprise")  # survey answerers' plans, for NPS by segment
FRIEND_ANSWERS = ("A friend", "Colleague recommended", "Podcast", "Other")
REVIEW_TEXTS = (
    "Did not work for us.", "Too complicated to set up.", "Okay, some gaps.",
    "Good value, works well.", "Excellent, we finally know which campaigns work!",
)
COUNTRIES = ("usa", "gbr", "can", "deu", "aus")
COUNTRY_SHARES = (0.70, 0.12, 0.08, 0.05, 0.05)
OPEN_STAGES = ("qualification", "discovery", "proposal", "negotiation")
KEYWORD_QUALITY = (9, 8, 6, 7, 7, 5, 6, 8, 5, 6, 6, 4)


def _iso(ms: np.ndarray, valid: np.ndarray | None = None) -> pa.Array:
    out = text.iso_ms(ms)
    if valid is not None:
        out = text.where(valid, out, pa.nulls(len(ms), pa.string()))
    return out


def _numbers(values: np.ndarray) -> pa.Array:
    return pc.cast(pa.array(values), pa.string())


def surveys(
    pop: Population, journeys: Journeys, rng: np.random.Generator, *, chunk: int
) -> tuple[dict[str, pa.Array], tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """NPS answers, reviews and self-reported sources of converters; also the reviews as
    ``(person, time, rating)`` for the events."""
    t, outcome = journeys.touches, journeys.outcome
    converted_unit = outcome.converted[pop.person_unit]
    known = journeys.person_identified >= 0
    eligible = np.nonzero(converted_unit & known)[0]
    answers = eligible[rng.random(len(eligible)) < SURVEY_SHARE]
    n = len(answers)
    decision = journeys.decision_time[pop.person_unit[answers]]
    responded = decision + (rng.uniform(7, 45, n) * DAY_MS).astype(np.int64)
    nps = rng.choice(11, size=n, p=NPS_SHARES)
    reviewed = rng.random(n) < REVIEW_SHARE
    rating = np.clip(np.round(1 + nps * 0.4 + rng.normal(0, 0.6, n)), 1, 5).astype(np.int64)

    # self-reported source: mostly the first touch's channel, sometimes another one seen
    pre = (t.phase == PRE) | (t.phase == NAVIGATIONAL)
    first_channel = np.full(pop.units, ch.DIRECT, np.int64)
    rows = np.nonzero(pre)[0][::-1]  # touches are sorted by unit, time: last write wins
    first_channel[t.unit[rows]] = t.channel[rows]
    last_channel = np.full(pop.units, ch.DIRECT, np.int64)
    rows = np.nonzero(pre)[0]
    last_channel[t.unit[rows]] = t.channel[rows]
    unit = pop.person_unit[answers]
    u = rng.random(n)
    told = np.where(u < 0.6, first_channel[unit], last_channel[unit])
    flat: list[str] = []
    start = {}
    for name in ch.NAMES:
        start[name] = len(flat)
        flat.extend(HEARD_ABOUT[name])
    friend_start = len(flat)
    flat.extend(FRIEND_ANSWERS)
    sizes = np.array([len(HEARD_ABOUT[name]) for name in ch.NAMES])
    offsets = np.array([start[name] for name in ch.NAMES])
    pick = offsets[told] + (rng.random(n) * sizes[told]).astype(np.int64)
    pick = np.where(u > 0.9, friend_start + (rng.random(n) * len(FRIEND_ANSWERS)).astype(
        np.int64), pick)
    pick = np.where(rng.random(n) < HEARD_ABOUT_SHARE, pick, -1)
    who = pa.array(answers)
    nulls = pa.nulls(n, pa.string())
    table = {
        "response_id": entity_ids("rsp_", chunk, answers),
        "person_id": pop.user_id.take(who),
        "email": pop.email.take(who),
        "responded_at": _iso(responded),
        "nps_score": _numbers(nps),
        "review_rating": text.where(reviewed, _numbers(rating.astype(np.float64)), nulls),
        "review_text": text.where(reviewed, text.take(REVIEW_TEXTS, rating - 1), nulls),
        "heard_about": text.take(flat, pick),
        # the plan, by person (no random draw: the other files' streams stay as they were)
        "segment": text.take(SEGMENTS, answers % len(SEGMENTS)),
    }
    review_time = responded[reviewed] + 600_000
    return table, (answers[reviewed], review_time, rating[reviewed])


def calls(
    pop: Population, journeys: Journeys, rng: np.random.Generator, *, chunk: int
) -> tuple[dict[str, pa.Array], int]:
    """The telephony export: every tracked call of the chunk plus some spam calls."""
    t = journeys.touches
    rows = np.nonzero(t.channel == ch.PHONE)[0]
    n = len(rows)
    style = rng.choice(len(mess.PHONE_FORMATS), size=n, p=mess.PHONE_FORMAT_SHARES)
    caller = mess.phone_formats(pop.phone_digits.take(pa.array(t.person[rows])), style)
    n_spam = int(rng.binomial(max(n, 1), mess.SPAM_CALL_SHARE))
    spam_time = (PERIOD_START_MS + rng.random(n_spam) * 365 * DAY_MS).astype(np.int64)
    spam_caller = mess.phone_formats(
        text.digits(2_000_000_000 + rng.integers(0, 8_000_000_000, n_spam), 10),
        np.zeros(n_spam, np.int64))
    spam_pool = rng.integers(0, len(ch.NAMES), n_spam)
    table = {
        "call_id": pa.concat_arrays([entity_ids("CA", chunk, rows),
                                     entity_ids("SP", chunk, np.arange(n_spam))]),
        "caller_number": pa.concat_arrays([caller, spam_caller]),
        "tracking_number": pa.concat_arrays([
            tracking_numbers(t.call_pool[rows], t.call_number[rows]),
            tracking_numbers(spam_pool, np.zeros(n_spam, np.int64))]),
        "started_at": _iso(np.concatenate([t.time[rows], spam_time])),
        "duration_seconds": _numbers(np.concatenate([t.call_duration[rows],
                                                     rng.integers(2, 15, n_spam)])),
        "answered": text.where(np.concatenate([t.call_answered[rows], np.ones(n_spam, bool)]),
                               "true", "false"),
        "outcome": pa.concat_arrays([text.take(CALL_OUTCOMES, t.call_outcome[rows]),
                                     pa.array(["spam"] * n_spam, pa.string())]),
    }
    return table, n_spam


def deals(pop: Population, journeys: Journeys, rng: np.random.Generator) -> dict[str, pa.Array]:
    """CRM opportunities: B2B deals per account (won, lost, open, expansions); in B2C the
    sales closed on the phone."""
    return _b2b_deals(pop, journeys, rng) if pop.b2b else _phone_sales(pop, journeys)


def _phone_sales(pop: Population, journeys: Journeys) -> dict[str, pa.Array]:
    t = journeys.touches
    rows = np.nonzero(t.conversion & (t.channel == ch.PHONE))[0]
    n = len(rows)
    who = pa.array(t.person[rows])
    closed = t.time[rows] + t.call_duration[rows] * 1000
    nulls = pa.nulls(n, pa.string())
    created = _iso(t.time[rows])
    return {
        "deal_id": text.scrambled_hex(pop.person_global[t.person[rows]], 10, "dlp_"),
        "account_id": nulls, "account_name": nulls, "account_domain": nulls,
        "contact_emails": pop.email.take(who), "contact_ids": pop.crm_contact_id.take(who),
        "stage": pa.array(["closed_won"] * n, pa.string()),
        "status": pa.array(["won"] * n, pa.string()), "amount": _numbers(t.order_value[rows]),
        "currency": pa.array(["USD"] * n, pa.string()), "created_at": created,
        "lead_at": created, "mql_at": nulls, "sql_at": nulls, "opportunity_at": created,
        "closed_at": _iso(closed), "updated_at": _iso(closed),
    }


def _b2b_deals(pop: Population, journeys: Journeys, rng: np.random.Generator
               ) -> dict[str, pa.Array]:
    outcome = journeys.outcome
    n_units = pop.units
    known = journeys.person_identified
    lead = np.full(n_units, np.iinfo(np.int64).max, np.int64)
    mask = known >= 0
    np.minimum.at(lead, pop.person_unit[mask], known[mask])
    has_lead = lead < np.iinfo(np.int64).max
    won = outcome.converted
    u = rng.random(n_units)
    lost = ~won & has_lead & (u < 0.45)
    open_ = ~won & has_lead & (u >= 0.45) & (u < 0.6)
    first = journeys.first_touch_time
    lead = np.where(has_lead, lead, first + 7 * DAY_MS)
    close = np.where(won, journeys.decision_time, journeys.last_touch_time + 14 * DAY_MS)
    close = np.maximum(close, lead + DAY_MS)
    status = np.where(won, 0, np.where(lost, 1, 2))
    # e-mails of the account's known contacts, ';'-separated
    people = np.nonzero(mask)[0]
    counts = np.bincount(pop.person_unit[people], minlength=n_units)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    emails = pc.binary_join(pa.ListArray.from_arrays(pa.array(offsets), pop.email.take(
        pa.array(people))), ";")
    contacts = pc.binary_join(pa.ListArray.from_arrays(pa.array(offsets), pop.crm_contact_id.take(
        pa.array(people))), ";")

    units = np.nonzero(won | lost | open_)[0]
    exp_unit, exp_k = np.nonzero(journeys.expansion_times >= 0)
    deal_unit = np.concatenate([units, exp_unit])
    deal_no = np.concatenate([np.zeros(len(units), np.int64), 1 + exp_k])
    n = len(deal_unit)
    first_deal = np.arange(n) < len(units)
    fraction = {"mql_at": 0.2, "sql_at": 0.45, "opportunity_at": 0.65}
    d_lead = np.where(first_deal, lead[deal_unit], 0)
    d_close = np.where(first_deal, close[deal_unit], 0)
    exp_close = journeys.expansion_times[exp_unit, exp_k]
    d_close[~first_deal] = exp_close
    d_lead[~first_deal] = exp_close - 45 * DAY_MS
    d_span = d_close - d_lead
    d_status = np.where(first_deal, status[deal_unit], 0)
    stage_pick = rng.integers(0, len(OPEN_STAGES), n)
    stage = text.where(d_status == 0, "closed_won", text.where(
        d_status == 1, "closed_lost", text.take(OPEN_STAGES, stage_pick)))
    lost_amount = np.round(np.exp(rng.normal(9.9, 0.7, n)))
    amount = np.where(first_deal, outcome.first_value[deal_unit], 0.0)
    amount[~first_deal] = outcome.repeat_values[exp_unit, exp_k]
    amount = np.where(d_status == 0, amount, lost_amount)
    is_open = d_status == 2
    reached = {  # open deals stop at their stage; lost ones at a random one
        "mql_at": np.ones(n, bool),
        "sql_at": ~is_open | (stage_pick >= 1),
        "opportunity_at": ~is_open | (stage_pick >= 2),
    }
    table = {
        "deal_id": text.scrambled_hex(pop.unit_global[deal_unit] * 4 + deal_no, 10, "dl_"),
        "account_id": pop.unit_account_id.take(pa.array(deal_unit)),
        "account_name": pop.unit_account_name.take(pa.array(deal_unit)),
        "account_domain": pop.unit_domain.take(pa.array(deal_unit)),
        "contact_emails": emails.take(pa.array(deal_unit)),
        "contact_ids": contacts.take(pa.array(deal_unit)),
        "stage": stage,
        "status": text.take(("won", "lost", "open"), d_status),
        "amount": _numbers(amount),
        "currency": pa.array(["USD"] * n, pa.string()),
        "created_at": _iso(d_lead),
        "lead_at": _iso(d_lead),
    }
    for name, share in fraction.items():
        table[name] = _iso(d_lead + (share * d_span).astype(np.int64), reached[name])
    table["closed_at"] = _iso(d_close, ~is_open)
    table["updated_at"] = _iso(np.where(is_open, d_lead + d_span // 2, d_close))
    return table


class SpendAccumulator:
    """Daily clicks per paid placement, campaign and keyword, summed over chunks."""

    def __init__(self, days: int) -> None:
        self.days = days
        self.campaigns = len(CAMPAIGN_VOCAB)
        self.keywords = len(ch.PAID_KEYWORDS) + 1  # last slot: no keyword
        self.clicks = np.zeros(days * self.campaigns * self.keywords, np.int64)

    def add(self, landings: Landings) -> None:
        channel = ch.PLACEMENT_CHANNEL[landings.placement]
        paid = np.isin(channel, [ch.INDEX[c] for c in ch.COST_PER_CLICK]) & (landings.campaign >= 0)
        day = (landings.time[paid] - PERIOD_START_MS) // DAY_MS
        keyword = np.where(channel[paid] == ch.PAID_SEARCH, landings.keyword[paid],
                           self.keywords - 1)
        ok = (day >= 0) & (day < self.days)
        key = (day[ok] * self.campaigns + landings.campaign[paid][ok]) * self.keywords + keyword[ok]
        self.clicks += np.bincount(key, minlength=len(self.clicks))

    def rows(self, rng: np.random.Generator) -> tuple[dict[str, pa.Array], dict[str, float]]:
        """The spend export rows and the total cost per channel."""
        key = np.nonzero(self.clicks)[0]
        tracked = self.clicks[key]
        keyword = key % self.keywords
        campaign = (key // self.keywords) % self.campaigns
        day = key // (self.keywords * self.campaigns)
        placement = np.array(_campaign_placements())[campaign]
        channel = ch.PLACEMENT_CHANNEL[placement]
        names = np.array(ch.NAMES, object)[channel]
        cpc = np.array([ch.COST_PER_CLICK.get(str(c), 0.0) for c in names])
        ctr = np.array([ch.CLICK_THROUGH_RATE.get(str(c), 0.01) for c in names])
        n = len(key)
        clicks = np.ceil(tracked / (1 - ch.UNTRACKED_CLICK_SHARE)
                         * rng.uniform(0.95, 1.05, n)).astype(np.int64)
        impressions = np.round(clicks / ctr * rng.lognormal(0, 0.15, n)).astype(np.int64)
        cost = np.round(clicks * cpc * rng.lognormal(0, 0.2, n), 2)
        has_keyword = keyword < self.keywords - 1
        quality = np.array((*KEYWORD_QUALITY, 0), np.float64)[keyword]
        source = text.take([p.source for p in ch.PLACEMENTS], placement)
        medium = text.take([p.medium for p in ch.PLACEMENTS], placement)
        campaign_name = text.take(CAMPAIGN_VOCAB, campaign)
        nulls = pa.nulls(n, pa.string())
        keyword_text = text.take(ch.PAID_KEYWORDS, np.where(has_keyword, keyword, -1))
        ad_group = text.where(has_keyword, text.concat(
            campaign_name, "_", pc.replace_substring(pc.fill_null(keyword_text, ""), " ", "_")),
            text.concat(campaign_name, "_set1"))
        dates = pc.utf8_slice_codeunits(text.iso_ms(PERIOD_START_MS + day * DAY_MS), 0, 10)
        table = {
            "date": dates, "channel": pa.array(names.astype(str), pa.string()),
            "utm_source": source, "utm_medium": medium, "utm_campaign": campaign_name,
            "ad_group": ad_group, "keyword": keyword_text, "cost": _numbers(cost),
            "currency": pa.array(["USD"] * n, pa.string()), "impressions": _numbers(impressions),
            "clicks": _numbers(clicks),
            "quality_score": text.where(has_keyword, _numbers(quality), nulls),
        }
        totals = {str(c): float(np.round(cost[names == c].sum(), 2)) for c in np.unique(names)}
        return table, totals


def _campaign_placements() -> list[int]:
    out: list[int] = []
    for i, placement in enumerate(ch.PLACEMENTS):
        out.extend([i] * len(placement.campaigns))
    return out


class SearchConsoleAccumulator:
    """Daily Google organic clicks per query, landing page, country and device."""

    def __init__(self, days: int) -> None:
        self.days = days
        self.shape = (days, len(ch.SEARCH_QUERIES), len(SITE_PAGES), len(COUNTRIES),
                      len(DEVICE_KINDS))
        self.clicks = np.zeros(int(np.prod(self.shape)), np.int64)

    def add(self, landings: Landings, rng: np.random.Generator) -> None:
        google = landings.placement == 0  # the Google organic placement
        day = (landings.time[google] - PERIOD_START_MS) // DAY_MS
        country = rng.choice(len(COUNTRIES), size=int(google.sum()), p=COUNTRY_SHARES)
        ok = (day >= 0) & (day < self.days)
        key = np.ravel_multi_index(
            (day[ok], landings.keyword[google][ok], landings.page[google][ok], country[ok],
             landings.device_kind[google][ok]), self.shape)
        self.clicks += np.bincount(key, minlength=len(self.clicks))

    def rows(self, rng: np.random.Generator) -> dict[str, pa.Array]:
        key = np.nonzero(self.clicks)[0]
        clicks = self.clicks[key]
        day, query, page, country, device = np.unravel_index(key, self.shape)
        n = len(key)
        position = np.clip(np.array(ch.QUERY_POSITIONS)[query] + rng.normal(0, 0.8, n), 1, 60)
        ctr = np.clip(0.32 * np.exp(-0.28 * (position - 1)), 0.004, 0.6)
        impressions = np.maximum(clicks, np.round(clicks / ctr * rng.lognormal(0, 0.2, n)))
        return {
            "date": pc.utf8_slice_codeunits(text.iso_ms(PERIOD_START_MS + day * DAY_MS), 0, 10),
            "query": text.take(ch.SEARCH_QUERIES, query),
            "page": text.concat("https://www.example.com",
                                text.take([p[0] for p in SITE_PAGES], page)),
            "country": text.take(COUNTRIES, country),
            "device": text.take(DEVICE_KINDS, device),
            "impressions": _numbers(impressions.astype(np.int64)),
            "clicks": _numbers(clicks),
            "position": _numbers(np.round(position, 1)),
        }


def chunks_of(values: dict[str, pa.Array], size: int) -> Iterator[dict[str, pa.Array]]:
    """Slices of a column dict, to write large aggregates in pieces."""
    n = len(next(iter(values.values()))) if values else 0
    for lo in range(0, n, size):
        yield {k: v.slice(lo, size) for k, v in values.items()}


# ---- reviews and social: what the review platforms and social accounts export --------------

#: the share of first orders that get a Google review (from the buyer, matched by order id),
#: and those reviews' star shares (1 to 5): public reviews skew to the extremes
GOOGLE_REVIEW_SHARE = 0.08
GOOGLE_STAR_SHARES = (0.08, 0.04, 0.08, 0.25, 0.55)
#: the business's social accounts: (platform as the export names it, account, followers per
#: simulated person at the start, daily growth, posts per day, impressions per follower and
#: post, likes, comments and shares per impression); B2C and B2B data sets have their own
SOCIAL_ACCOUNTS: dict[bool, tuple[tuple[str, str, float, float, float, float, float, float,
                                        float], ...]] = {
    False: (("Instagram", "@touchline.shop", 0.40, 0.0012, 0.8, 0.25, 0.040, 0.004, 0.002),
            ("facebook", "Touchline Shop", 0.60, 0.0004, 0.5, 0.10, 0.015, 0.002, 0.003),
            ("tiktok", "@touchlineshop", 0.10, 0.0030, 0.4, 0.90, 0.060, 0.003, 0.006)),
    True: (("linkedin", "Touchline HQ", 0.80, 0.0010, 0.3, 0.30, 0.020, 0.003, 0.004),
           ("x", "@touchline_hq", 0.50, 0.0005, 1.2, 0.08, 0.010, 0.002, 0.002)),
}
#: Instagram's export has no engagement total (touchline sums likes, comments and shares);
#: the others count clicks and saves too: this many per like
SOCIAL_CLICKS_PER_LIKE = 0.5
#: days an export has no follower count (a gap): the level is read on the last day with one
SOCIAL_FOLLOWER_GAP = 0.03


def reviews(pop: Population, journeys: Journeys, trustpilot: tuple[np.ndarray, np.ndarray,
                                                                   np.ndarray],
            rng: np.random.Generator, *, chunk: int) -> dict[str, pa.Array]:
    """The review platforms' export: the Trustpilot reviews that the survey's reviewers post
    (the ``Review Submitted`` events, with the reviewer's e-mail) and Google reviews of first
    orders (with the order id only). ``rng`` is the reviews' own stream: the other files stay
    as they were."""
    t = journeys.touches
    person, time, stars = trustpilot
    first = np.nonzero(t.order == 1)[0]
    first = first[rng.random(len(first)) < GOOGLE_REVIEW_SHARE]
    g_time = t.time[first] + (rng.uniform(2, 30, len(first)) * DAY_MS).astype(np.int64)
    g_stars = 1 + rng.choice(5, size=len(first), p=GOOGLE_STAR_SHARES)
    n_tp, n_g = len(person), len(first)
    rating = np.concatenate([stars, g_stars]).astype(np.int64)
    nulls = pa.nulls(n_tp + n_g, pa.string())
    return {
        "review_id": pa.concat_arrays([entity_ids("tp_", chunk, np.arange(n_tp)),
                                       entity_ids("gr_", chunk, np.arange(n_g))]),
        "platform": text.take(("trustpilot", "Google"), np.repeat([0, 1], [n_tp, n_g])),
        "rating": _numbers(rating.astype(np.float64)),
        "review_text": text.take(REVIEW_TEXTS, rating - 1),
        "reviewed_at": _iso(np.concatenate([time, g_time]).astype(np.int64)),
        "email": pa.concat_arrays([pop.email.take(pa.array(person)), pa.nulls(n_g, pa.string())]),
        "phone": nulls,
        "order_id": pa.concat_arrays([pa.nulls(n_tp, pa.string()),
                                      entity_ids("ord_", chunk, first)]),
    }


def social(days: int, people: int, *, b2b: bool, rng: np.random.Generator
           ) -> tuple[dict[str, pa.Array], dict[str, dict[str, int]]]:
    """The business's social accounts, one row per account and day from the period's start,
    and the truth by platform (trimmed, lower case, as the KPIs read it): followers on the
    first and last day with a count, and the sums of posts, impressions, likes, comments,
    shares and engagements (Instagram's, which its export lacks, as their sum)."""
    columns: dict[str, list[pa.Array]] = {c: [] for c in (
        "platform", "account", "date", "followers", "posts", "impressions", "engagements",
        "likes", "comments", "shares")}
    truth: dict[str, dict[str, int]] = {}
    start = np.datetime64("1970-01-01") + np.timedelta64(PERIOD_START_MS // DAY_MS, "D")
    dates = pc.cast(pa.array(start + np.arange(days)), pa.string())
    for platform, account, per_person, growth, post_rate, reach, like, comment, share in (
            SOCIAL_ACCOUNTS[b2b]):
        base = max(20.0, per_person * people)
        gained = rng.poisson(base * growth, days)
        lost = rng.binomial(gained, 0.3)
        followers = (base + np.cumsum(gained - lost)).astype(np.int64)
        posts = rng.poisson(post_rate, days)
        impressions = rng.poisson(reach * followers * posts)
        likes = rng.binomial(impressions, like)
        comments = rng.binomial(impressions, comment)
        shares = rng.binomial(impressions, share)
        clicks = rng.poisson(SOCIAL_CLICKS_PER_LIKE * likes)
        engagements = likes + comments + shares + clicks
        gap = rng.random(days) < SOCIAL_FOLLOWER_GAP
        gap[[0, -1]] = False  # the first and last days carry the level the truth reads
        no_total = platform.lower() == "instagram"
        columns["platform"].append(text.take((platform,), np.zeros(days, np.int64)))
        columns["account"].append(text.take((account,), np.zeros(days, np.int64)))
        columns["date"].append(dates)
        columns["followers"].append(text.where(gap, pa.nulls(days, pa.string()),
                                               _numbers(followers)))
        columns["engagements"].append(pa.nulls(days, pa.string()) if no_total
                                      else _numbers(engagements))
        for name, values in (("posts", posts), ("impressions", impressions), ("likes", likes),
                             ("comments", comments), ("shares", shares)):
            columns[name].append(_numbers(values))
        summed = likes + comments + shares if no_total else engagements
        truth[platform.strip().lower()] = {
            "accounts": 1, "followers_start": int(followers[0]),
            "followers_end": int(followers[-1]),
            "new_followers": int(followers[-1] - followers[0]), "posts": int(posts.sum()),
            "impressions": int(impressions.sum()), "likes": int(likes.sum()),
            "comments": int(comments.sum()), "shares": int(shares.sum()),
            "engagements": int(summed.sum())}
    return {c: pa.concat_arrays(v) for c, v in columns.items()}, truth
