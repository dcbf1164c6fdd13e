"""The simulated channels: their causal parameters and how their touches look on the wire.

Each channel has the numbers the causal model in :mod:`touchline.simulate.journeys` uses
(exposure rates, effect on conversion, on order value and on repeat buying) and the marketing
vocabulary a touch of that channel leaves in the data (UTM source and medium, referrer, click
id, campaigns). Channel names follow GA4's default channel grouping in snake_case, so that a
perfect ``classify_channel`` maps each touch back to the name used here.

Three channels have **no causal effect** by construction (``effect = value_lift =
retention_effect = 0``): ``display`` and ``organic_social`` (people see them but they change
nothing) and ``direct``, which is a *consequence* of other touches (people come back by typing
the address after an ad) rather than a cause. Their true incremental conversions are exactly 0,
whatever credit a heuristic attribution model gives them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Channel:
    """One marketing channel and its parameters in the causal model.

    Rates are mean touches per person of average activity (a Poisson mean before the person's
    activity multiplier); ``stage`` is the mean funnel position (0 = awareness, 1 = decision)
    of its touches, which orders them in time.
    """

    name: str
    kind: str  # "web" (a site visit), "call" (a tracked phone call) or "offline" (a webinar)
    stage: float
    rate_b2c: float
    rate_b2b: float
    effect: float  # β_c: logit lift per log(1 + touches before the decision)
    value_lift: float  # γ_c: log lift of the order value when the channel is in the path
    retention_rate: float  # mean touches after the first purchase (converters only)
    retention_effect: float  # δ_c: logit lift of the repeat probability per log(1 + touches)


CHANNELS: tuple[Channel, ...] = (
    Channel("organic_search", "web", 0.45, 0.90, 1.30, 0.40, 0.00, 0.30, 0.00),
    Channel("paid_search", "web", 0.70, 0.60, 0.70, 0.60, 0.10, 0.10, 0.00),
    Channel("paid_social", "web", 0.25, 0.50, 0.60, 0.30, 0.00, 0.05, 0.00),
    Channel("organic_social", "web", 0.20, 0.30, 0.35, 0.00, 0.00, 0.05, 0.00),
    Channel("email", "web", 0.60, 0.35, 0.90, 0.50, 0.05, 1.20, 0.70),
    Channel("display", "web", 0.15, 0.45, 0.50, 0.00, 0.00, 0.00, 0.00),
    Channel("video", "web", 0.20, 0.20, 0.20, 0.20, 0.00, 0.00, 0.00),
    Channel("referral", "web", 0.40, 0.25, 0.45, 0.45, 0.05, 0.05, 0.00),
    Channel("affiliate", "web", 0.55, 0.15, 0.05, 0.30, 0.00, 0.00, 0.00),
    Channel("direct", "web", 0.75, 0.30, 0.60, 0.00, 0.00, 0.60, 0.00),
    Channel("sms", "web", 0.75, 0.08, 0.02, 0.30, 0.00, 0.40, 0.40),
    Channel("phone", "call", 0.85, 0.06, 0.25, 0.90, 0.40, 0.02, 0.00),
    Channel("offline", "offline", 0.50, 0.04, 0.55, 0.60, 0.20, 0.05, 0.20),
)
NAMES: tuple[str, ...] = tuple(c.name for c in CHANNELS)
INDEX: dict[str, int] = {name: i for i, name in enumerate(NAMES)}
DIRECT = INDEX["direct"]
PHONE = INDEX["phone"]
OFFLINE = INDEX["offline"]
PAID_SEARCH = INDEX["paid_search"]
ORGANIC_SEARCH = INDEX["organic_search"]
EMAIL = INDEX["email"]
IS_WEB = np.array([c.kind == "web" for c in CHANNELS])


def parameters(*, b2b: bool) -> dict[str, np.ndarray]:
    """The per-channel parameter vectors of the causal model, in ``NAMES`` order."""
    return {
        "stage": np.array([c.stage for c in CHANNELS]),
        "rate": np.array([c.rate_b2b if b2b else c.rate_b2c for c in CHANNELS]),
        "effect": np.array([c.effect for c in CHANNELS]),
        "value_lift": np.array([c.value_lift for c in CHANNELS]),
        "retention_rate": np.array([c.retention_rate for c in CHANNELS]),
        "retention_effect": np.array([c.retention_effect for c in CHANNELS]),
    }


@dataclass(frozen=True)
class Placement:
    """Where a web touch comes from: the platform and what its link carries.

    ``source``/``medium`` are the canonical (clean, lower-case) UTM values, ``None`` when the
    link carries no UTMs (organic search, organic social, referral, direct). ``click_id`` is the
    query parameter the platform appends (``gclid``, ``fbclid``...). ``utm_share`` is the share
    of its links that carry UTMs at all (Google Ads auto-tagging often sends only a gclid).
    """

    channel: str
    source: str | None
    medium: str | None
    referrer: str | None
    click_id: str | None
    weight_b2c: float
    weight_b2b: float
    campaigns: tuple[str, ...] = ()
    utm_share: float = 1.0


PLACEMENTS: tuple[Placement, ...] = (
    Placement("organic_search", None, None, "https://www.google.com/", None, 0.80, 0.82),
    Placement("organic_search", None, None, "https://www.bing.com/", None, 0.10, 0.12),
    Placement("organic_search", None, None, "https://duckduckgo.com/", None, 0.07, 0.05),
    Placement("organic_search", None, None, "https://search.yahoo.com/", None, 0.03, 0.01),
    Placement("paid_search", "google", "cpc", "https://www.google.com/", "gclid", 0.82, 0.85,
              ("brand_search", "generic_search", "competitor_search"), 0.6),
    Placement("paid_search", "bing", "cpc", "https://www.bing.com/", "msclkid", 0.18, 0.15,
              ("brand_search", "generic_search")),
    Placement("paid_social", "facebook", "paid_social", "https://m.facebook.com/", "fbclid",
              0.45, 0.08, ("prospecting_lookalike", "retargeting_30d", "spring_sale")),
    Placement("paid_social", "instagram", "paid_social", "https://l.instagram.com/", "fbclid",
              0.22, 0.02, ("prospecting_lookalike", "spring_sale")),
    Placement("paid_social", "linkedin", "paid_social", "https://www.linkedin.com/", "li_fat_id",
              0.13, 0.85, ("abm_target_accounts", "thought_leadership")),
    Placement("paid_social", "tiktok", "paid_social", "https://www.tiktok.com/", "ttclid",
              0.20, 0.05, ("creator_collab", "spring_sale")),
    Placement("organic_social", None, None, "https://m.facebook.com/", None, 0.40, 0.10),
    Placement("organic_social", None, None, "https://t.co/", None, 0.25, 0.25),
    Placement("organic_social", None, None, "https://www.linkedin.com/", None, 0.15, 0.60),
    Placement("organic_social", None, None, "https://l.instagram.com/", None, 0.20, 0.05),
    Placement("email", "newsletter", "email", None, None, 0.70, 0.50,
              ("weekly_digest", "product_update", "winback")),
    Placement("email", "hubspot", "email", None, None, 0.30, 0.50,
              ("nurture_sequence", "event_invite")),
    Placement("display", "google", "display", "https://googleads.g.doubleclick.net/", "dclid",
              0.60, 0.50, ("gdn_prospecting", "gdn_retargeting")),
    Placement("display", "criteo", "cpm", None, None, 0.40, 0.50, ("dynamic_retargeting",)),
    Placement("video", "youtube", "video", "https://www.youtube.com/", None, 1.0, 1.0,
              ("brand_video", "how_to_series")),
    Placement("referral", None, None, "https://www.g2.com/products/touchline/reviews", None,
              0.30, 0.45),
    Placement("referral", None, None, "https://www.capterra.com/p/touchline/", None,
              0.20, 0.35),
    Placement("referral", None, None, "https://techcrunch.com/2025/03/04/startups/", None,
              0.20, 0.10),
    Placement("referral", None, None, "https://blog.partner-agency.example/best-tools", None,
              0.30, 0.10),
    Placement("affiliate", "awin", "affiliate", "https://www.deal-finder.example/", None,
              0.55, 0.5, ("cashback",)),
    Placement("affiliate", "impact", "affiliate", "https://reviews-hub.example/", None,
              0.45, 0.5, ("top10_list", "coupon")),
    Placement("direct", None, None, None, None, 1.0, 1.0),
    Placement("sms", "attentive", "sms", None, None, 0.7, 0.5, ("flash_sale", "cart_reminder")),
    Placement("sms", "twilio", "sms", None, None, 0.3, 0.5, ("back_in_stock",)),
)
PLACEMENT_CHANNEL = np.array([INDEX[p.channel] for p in PLACEMENTS])

# Case, spacing and alias variants that real tagging produces for one canonical value. The
# first of each tuple is the canonical value; VARIANT_SHARE of tagged links use another one.
VARIANT_SHARE = 0.22
SOURCE_VARIANTS: dict[str, tuple[str, ...]] = {
    "google": ("google", "Google", "google ", "GOOGLE", "google.com"),
    "bing": ("bing", "Bing", "bing.com"),
    "facebook": ("facebook", "fb", "Facebook", "facebook.com", "m.facebook.com", "FB"),
    "instagram": ("instagram", "ig", "Instagram", "l.instagram.com"),
    "linkedin": ("linkedin", "LinkedIn", "lnkd.in", "linkedin.com"),
    "tiktok": ("tiktok", "TikTok", "tiktok.com"),
    "newsletter": ("newsletter", "Newsletter", " newsletter"),
    "hubspot": ("hubspot", "HubSpot", "hs_email"),
    "criteo": ("criteo", "Criteo"),
    "youtube": ("youtube", "YouTube", "youtube.com", "m.youtube.com"),
    "awin": ("awin", "AWIN", "Awin "),
    "impact": ("impact", "Impact", "impact.com"),
    "attentive": ("attentive", "Attentive", "sms"),
    "twilio": ("twilio", "Twilio"),
}
MEDIUM_VARIANTS: dict[str, tuple[str, ...]] = {
    "cpc": ("cpc", "CPC", "Cpc ", "ppc", "paid search"),
    "paid_social": ("paid_social", "Paid Social", "paid-social", "cpc", "paidsocial"),
    "email": ("email", "Email", "e-mail", "EMAIL "),
    "display": ("display", "Display", "banner"),
    "cpm": ("cpm", "CPM"),
    "video": ("video", "Video", "cpv"),
    "affiliate": ("affiliate", "Affiliate", "affiliates"),
    "sms": ("sms", "SMS", "text"),
}

PAID_KEYWORDS: tuple[str, ...] = (
    "touchline", "touchline pricing", "marketing attribution software", "multi touch attribution",
    "customer journey analytics", "attribution tool", "ga4 alternative", "self hosted analytics",
    "marketing analytics platform", "utm tracking tool", "roi tracking", "competitor alternative",
)
SEARCH_QUERIES: tuple[str, ...] = (
    "touchline", "touchline app", "what is multi touch attribution", "markov chain attribution",
    "shapley value marketing", "how to track utm parameters", "ga4 channel grouping",
    "customer journey map template", "marketing attribution models", "first touch vs last touch",
    "self hosted web analytics", "cookieless tracking", "incrementality testing",
    "marketing mix model vs attribution", "how to calculate roas", "nps survey questions",
)
QUERY_PAGES: tuple[int, ...] = (0, 0, 3, 3, 3, 4, 4, 5, 3, 3, 0, 4, 5, 5, 4, 5)
QUERY_POSITIONS: tuple[float, ...] = (
    1.1, 1.3, 4.2, 3.1, 6.5, 8.8, 12.4, 7.3, 5.5, 3.9, 9.7, 14.2, 6.1, 18.5, 11.0, 22.3,
)

# Call tracking: each channel's sessions show numbers from its own pool (dynamic number
# insertion), so the tracking number dialled says which channel showed it.
TRACKING_POOLS: dict[str, tuple[str, ...]] = {
    "organic_search": ("+18885550101", "+18885550102", "+18885550103"),
    "paid_search": ("+18885550111", "+18885550112", "+18885550113", "+18885550114"),
    "paid_social": ("+18885550121", "+18885550122"),
    "organic_social": ("+18885550131",),
    "email": ("+18885550141", "+18885550142"),
    "display": ("+18885550151",),
    "video": ("+18885550161",),
    "referral": ("+18885550171",),
    "affiliate": ("+18885550181",),
    "direct": ("+18885550191", "+18885550192"),
    "sms": ("+18885550201",),
    "phone": ("+18005550100",),  # printed number: no web session showed it
    "offline": ("+18005550110",),  # printed on event material
}

# Spend model: cost per click and click-through rate per paid channel.
COST_PER_CLICK: dict[str, float] = {
    "paid_search": 2.40, "paid_social": 1.10, "display": 0.60, "video": 0.35, "affiliate": 0.90,
    "sms": 0.05, "email": 0.01,
}
CLICK_THROUGH_RATE: dict[str, float] = {
    "paid_search": 0.045, "paid_social": 0.012, "display": 0.0015, "video": 0.004,
    "affiliate": 0.02, "sms": 0.08, "email": 0.03,
}
# Share of real clicks that never reach the tag (consent, ad blockers, bounces before load).
UNTRACKED_CLICK_SHARE = 0.12
