"""The imperfections of real event data, each with its rate, so truth.json can count them.

Every kind of mess here is something a preparation step must undo; ``truth.json["mess"]`` says
how many rows each kind touched:

* ``cross_source_forms``: a form fill recorded by the web tag *and* by the forms/CRM source,
  with different message ids, seconds apart (one touch, two rows);
* ``duplicate_exact`` / ``duplicate_retried``: the same message (same ``messageId``) sent again,
  byte-identical or re-sent later by a retry (later ``sentAt``/``receivedAt``);
* ``utm_source_variant`` / ``utm_medium_variant`` / ``utm_campaign_case``: mixed case,
  stray spaces and aliases (``fb``, ``facebook.com``, ``m.facebook.com``) for one value;
* ``gclid_only``: Google Ads auto-tagged visits with a click id but no UTMs;
* ``fbclid_on_organic``: Facebook appends ``fbclid`` to organic (unpaid) outbound links too;
* ``referrer_stripped``, ``title_missing``, ``user_agent_missing``: null fields;
* ``email_variant``: e-mails typed with capitals or surrounding spaces;
* ``clock_skew``: events from devices whose clock is minutes to hours off (``sentAt`` and
  ``originalTimestamp`` are off, ``receivedAt`` is right; ``timestamp`` is corrected as Segment
  does: ``receivedAt - (sentAt - originalTimestamp)``);
* ``late_arrival``: events queued offline on the device and sent hours later;
* ``schema_change``: from ``SCHEMA_CHANGE_AT`` on, the NDJSON export names the user agent
  ``context.user_agent`` instead of ``context.userAgent`` and orders carry ``properties.total``
  instead of ``properties.revenue`` (counted per renamed field);
* ``bot_events``: crawler and scraper hits (``BOT_AGENTS``), not people;
* ``spam_calls``: calls in the telephony export that no simulated person made;
* ``phone_format_*``: how caller numbers are written (national or international).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from touchline.simulate import text

DUPLICATE_EXACT_SHARE = 0.006
DUPLICATE_RETRIED_SHARE = 0.004
LATE_ARRIVAL_SHARE = 0.01
REFERRER_STRIPPED_SHARE = 0.03
TITLE_MISSING_SHARE = 0.01
USER_AGENT_MISSING_SHARE = 0.005
EMAIL_VARIANT_SHARE = 0.05
CAMPAIGN_CASE_SHARE = 0.08
FBCLID_ON_ORGANIC_SHARE = 0.5
BRAID_SHARE = 0.4  # Google Ads sends gbraid/wbraid instead of gclid on iOS this often
BOT_SHARE = 0.025  # bot hits per human event
SPAM_CALL_SHARE = 0.03
SCHEMA_CHANGE_AT_MS = 1_751_328_000_000  # 2025-07-01T00:00:00Z

# (user agent, IP prefix, share of bot hits); the last one is a high-rate scraper that keeps
# one cookie and one address per run, the crawlers take no cookies (a new id every hit).
BOT_AGENTS: tuple[tuple[str, str, float], ...] = (
    ("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
     "66.249.66.", 0.35),
    ("Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
     "157.55.39.", 0.15),
    ("Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)", "54.36.148.", 0.15),
    ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
     "HeadlessChrome/124.0.0.0 Safari/537.36", "185.220.101.", 0.35),
)
BOT_PATTERN = r"(?i)(bot|crawler|spider|headlesschrome)"
PHONE_FORMATS = ("e164", "international", "national_parens", "national_dashes", "national_dots")
PHONE_FORMAT_SHARES = (0.35, 0.15, 0.25, 0.15, 0.10)


def email_variants(email: pa.Array, rng: np.random.Generator) -> tuple[pa.Array, int]:
    """Some e-mails as people type them: capitalised or with surrounding spaces."""
    n = len(email)
    u = rng.random(n)
    messy = u < EMAIL_VARIANT_SHARE
    upper_first = text.concat(pa.compute.utf8_upper(pa.compute.utf8_slice_codeunits(email, 0, 1)),
                              pa.compute.utf8_slice_codeunits(email, 1))
    spaced = text.concat(" ", email, " ")
    variant = text.where(u < EMAIL_VARIANT_SHARE / 2, upper_first, spaced)
    return text.where(messy, variant, email), int(messy.sum())


def phone_formats(digits: pa.Array, style: np.ndarray) -> pa.Array:
    """Ten national digits written in one of ``PHONE_FORMATS`` (``style`` indexes it)."""
    area = pa.compute.utf8_slice_codeunits(digits, 0, 3)
    exchange = pa.compute.utf8_slice_codeunits(digits, 3, 6)
    line = pa.compute.utf8_slice_codeunits(digits, 6, 10)
    written = [
        text.concat("+1", digits),
        text.concat("+1 ", area, " ", exchange, " ", line),
        text.concat("(", area, ") ", exchange, "-", line),
        text.concat(area, "-", exchange, "-", line),
        text.concat(area, ".", exchange, ".", line),
    ]
    out = written[0]
    for k in range(1, len(written)):
        out = text.where(style == k, written[k], out)
    return out
