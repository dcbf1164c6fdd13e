"""From touches to Segment events: the rows a tag, a server, a chat widget, a forms tool, call
tracking and a CRM would send, with the mess of :mod:`.mess`.

A visit becomes page views (the landing page carries the UTMs, click ids and the external
referrer), maybe a CTA click, a form fill (recorded by the web tag *and* the forms tool), a
chat, an identify (with alias and group calls), an order. Calls, webinars and reviews arrive
from their own systems. The result is one chunk of the canonical ``events`` table as Arrow
columns (``store.EVENTS``), plus the pieces the NDJSON writer joins into Segment's nested
shape, so both formats hold exactly the same rows.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from touchline import store
from touchline.simulate import channels as ch
from touchline.simulate import mess, text
from touchline.simulate.journeys import (
    CALL_OUTCOMES,
    FORMS_B2B,
    FORMS_B2C,
    ORDER_DELAY_MS,
    PAGE_GAP_MS,
    SITE_PAGES,
    Journeys,
)
from touchline.simulate.population import IOS_AGENTS, USER_AGENTS, Population

SITE = "https://www.example.com"
TYPES = ("page", "track", "identify", "alias", "group")
PAGE, TRACK, IDENTIFY, ALIAS, GROUP = range(len(TYPES))
EVENT_NAMES = ("CTA Clicked", "Form Submitted", "Chat Started", "Call Completed",
               "Order Completed", "Webinar Attended", "Review Submitted")
CTA, FORM, CHAT, CALL, ORDER, WEBINAR, REVIEW = range(len(EVENT_NAMES))
SOURCES = ("web", "server", "chat", "forms", "calls", "crm")
WEB, SERVER, CHAT_SOURCE, FORMS_SOURCE, CALLS, CRM = range(len(SOURCES))
LIBRARIES = (
    '{"name":"analytics.js","version":"next-1.70.0"}',
    '{"name":"analytics-node","version":"2.1.2"}',
    '{"name":"intercom-segment","version":"3.4.0"}',
    '{"name":"hubspot-forms","version":"1.0"}',
    '{"name":"callrail-webhooks","version":"2.0"}',
    '{"name":"hubspot-crm-sync","version":"5.2"}',
)
CLICK_KINDS = ("gclid", "gbraid", "wbraid", "dclid", "fbclid", "msclkid", "li_fat_id", "ttclid")
CLICK_TOKENS = {  # (prefix, random characters): the shapes the platforms use
    "gclid": ("Cj0KCQjw", 48), "gbraid": ("0AAAAA", 30), "wbraid": ("Cl", 40),
    "dclid": ("CJ", 30), "fbclid": ("IwAR", 56), "msclkid": ("", 32), "li_fat_id": ("", 36),
    "ttclid": ("E_C_P_", 40),
}
CTA_IDS = ("hero_primary", "pricing_start_trial", "nav_book_demo", "footer_newsletter")
WEBINARS = ("Attribution 101", "Beyond last click", "Journey analytics live",
            "Customer story: Helix Labs")
#: the campaign a CRM's webinar sync stamps on each attendance (source, medium, and the
#: webinar's slug as its name): what tells a classifier the touch was an offline event, as a
#: tracked call's system does for calls (without it the record is a (direct)/(none) touch)
WEBINAR_SOURCE, WEBINAR_MEDIUM = "zoom", "webinar"
WEBINAR_CAMPAIGNS = tuple(name.lower().replace(":", "").replace(" ", "_") for name in WEBINARS)
#: the campaign fields a record sent without a page carries of its own (webinars)
ROW_CAMPAIGN_KEYS = ("utm_source", "utm_medium", "utm_campaign")
AD_CONTENTS = ("ad_a", "ad_b", "ad_c")
CURRENCY = "USD"
#: the canonical events table's columns, in its order: the writers fill each (a column added
#: to the table and missed here made the simulator's Parquet differ from what ingest writes)
EVENT_COLUMNS = tuple(column.name for column in store.EVENTS.columns)
UTM_KEYS = ("utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content")


def _vocab(table: dict[str, tuple[str, ...]]) -> tuple[tuple[str, ...], dict[str, int]]:
    flat: list[str] = []
    offset: dict[str, int] = {}
    for key, values in table.items():
        offset[key] = len(flat)
        flat.extend(values)
    return tuple(flat), offset


SOURCE_VOCAB, SOURCE_OFFSET = _vocab(ch.SOURCE_VARIANTS)
MEDIUM_VOCAB, MEDIUM_OFFSET = _vocab(ch.MEDIUM_VARIANTS)
CAMPAIGN_VOCAB, CAMPAIGN_OFFSET = _vocab({str(i): p.campaigns for i, p in enumerate(ch.PLACEMENTS)})


@dataclass
class Landings:
    """What the landing page views of paid and organic-search visits say, for spend and
    Search Console aggregation: one entry per landing page view."""

    time: np.ndarray
    placement: np.ndarray
    campaign: np.ndarray  # index in CAMPAIGN_VOCAB, -1 if none
    keyword: np.ndarray  # index in PAID_KEYWORDS / SEARCH_QUERIES, -1 if none
    page: np.ndarray
    device_kind: np.ndarray


@dataclass
class Tables:
    """Per-entity strings the event rows point into (index -1 means "none").

    Devices include one pseudo-device per crawler hit (crawlers keep no cookie) and one per
    scraper; pages include the bots' page views.
    """

    anonymous_id: pa.Array  # per device
    user_agent: pa.Array
    ip: pa.Array
    user_id: pa.Array  # per person
    account_id: pa.Array  # per unit
    page: dict[str, pa.Array]  # url, path, referrer, title, utm_*, click ids: per page row
    page_member: pa.Array  # ',"page":{...}' per page row
    campaign_member: pa.Array  # ',"campaign":{...}' or '' per page row
    device_tail: pa.Array  # ',"userAgent":"..","ip":".."}': devices, then renamed, then '}'


@dataclass
class Rows:
    """The unique events of a chunk (humans, then bots), in generation order."""

    message_id: pa.Array
    type: np.ndarray
    event: np.ndarray
    source: np.ndarray
    device: np.ndarray
    person: np.ndarray
    unit: np.ndarray
    page_row: np.ndarray
    knows_user: np.ndarray
    is_group: np.ndarray
    is_alias: np.ndarray
    timestamp: np.ndarray  # true time, ms (what Segment's skew correction yields)
    original_timestamp: np.ndarray  # the device's clock at the event
    properties: pa.Array
    traits: pa.Array
    email: pa.Array
    phone: pa.Array
    contact_id: pa.Array  # the CRM's contact id, on the CRM's records only
    revenue: np.ndarray
    # the campaign of a record without a page (webinars): null elsewhere, where the page's
    # campaign (``Tables.page``, by ``page_row``) applies
    utm_source: pa.Array
    utm_medium: pa.Array
    utm_campaign: pa.Array

    def __len__(self) -> int:
        return len(self.timestamp)

    def take(self, index: np.ndarray) -> Rows:
        arrow = pa.array(index)
        return Rows(**{k: v.take(arrow) if isinstance(v, pa.Array) else v[index]
                       for k, v in vars(self).items()})


@dataclass
class Rendered:
    """One chunk of events, ready for the writers: ``rows`` as written (sorted by receipt,
    re-sent duplicates included), each with its send and receipt time."""

    rows: Rows
    tables: Tables
    sent_at: np.ndarray
    received_at: np.ndarray
    mess: Counter[str]
    landings: Landings
    human_events: int
    sessions: int
    anonymous_ids: int
    unlinked_devices: int  # devices that never sent a userId: each stays a person of its own
    #: every order as sent (first and repeat, site and CRM): the buyer and the event's time
    #: (ms), for the retention truth
    order_person: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    order_time: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    @property
    def written(self) -> int:
        return len(self.rows)

    def slice(self, lo: int, hi: int) -> Rendered:
        """Written rows ``lo:hi`` (zero-copy), to build and compress lines piece by piece."""
        rows = Rows(**{k: v.slice(lo, hi - lo) if isinstance(v, pa.Array) else v[lo:hi]
                       for k, v in vars(self.rows).items()})
        return replace(self, rows=rows, sent_at=self.sent_at[lo:hi],
                       received_at=self.received_at[lo:hi])


def _slots(n: int, index: np.ndarray, values: pa.Array) -> pa.Array:
    """An ``n``-long array holding ``values`` at ``index`` and null elsewhere."""
    position = np.full(n, -1, np.int64)
    position[index] = np.arange(len(index))
    return values.take(pa.array(position, mask=position < 0))


def entity_ids(prefix: str, chunk: int, local: np.ndarray) -> pa.Array:
    return text.scrambled_hex((chunk << 32) + np.asarray(local, np.int64), 12, prefix)


class _Pages:
    """Page-level render: URL, referrer, title, UTMs and click ids of every page view."""

    def __init__(self, pop: Population, journeys: Journeys, bot_pages: np.ndarray,
                 rng: np.random.Generator, counts: Counter[str]) -> None:
        touches, pages = journeys.touches, journeys.pages
        n = len(pages.touch)
        self.n = n
        path = text.take([p[0] for p in SITE_PAGES], pages.page)
        title = text.take([p[1] for p in SITE_PAGES], pages.page)
        missing_title = rng.random(n) < mess.TITLE_MISSING_SHARE
        counts["title_missing"] += int(missing_title.sum())
        self.title = text.where(missing_title, pa.nulls(n, pa.string()), title)
        self.path = path
        landing = np.nonzero(pages.landing)[0]
        touch = pages.touch[landing]
        placement = touches.placement[touch]
        channel = touches.channel[touch]
        m = len(landing)
        self.landing_rows = landing

        # which links carry UTMs, and how they are spelled
        p_source = np.array([p.source or "" for p in ch.PLACEMENTS], object)[placement]
        has_source = p_source != ""
        share = np.array([p.utm_share for p in ch.PLACEMENTS])[placement]
        tagged = has_source & (rng.random(m) < share)
        counts["gclid_only"] += int((has_source & ~tagged).sum())
        src_idx, src_variant = self._variant(p_source, tagged, ch.SOURCE_VARIANTS,
                                             SOURCE_OFFSET, rng)
        p_medium = np.array([p.medium or "" for p in ch.PLACEMENTS], object)[placement]
        med_idx, med_variant = self._variant(p_medium, tagged, ch.MEDIUM_VARIANTS,
                                             MEDIUM_OFFSET, rng)
        counts["utm_source_variant"] += int(src_variant.sum())
        counts["utm_medium_variant"] += int(med_variant.sum())
        n_campaigns = np.array([len(p.campaigns) for p in ch.PLACEMENTS])[placement]
        campaign_pick = (rng.random(m) * np.maximum(n_campaigns, 1)).astype(np.int64)
        campaign_offset = np.array([CAMPAIGN_OFFSET[str(i)] for i in range(len(ch.PLACEMENTS))])
        campaign_idx = np.where(n_campaigns > 0, campaign_offset[placement] + campaign_pick, -1)
        campaign = text.take(CAMPAIGN_VOCAB, np.where(tagged, campaign_idx, -1))
        recased = tagged & (rng.random(m) < mess.CAMPAIGN_CASE_SHARE)
        counts["utm_campaign_case"] += int(recased.sum())
        campaign = text.where(recased, pc.utf8_capitalize(campaign), campaign)
        paid_search = channel == ch.PAID_SEARCH
        organic_search = channel == ch.ORGANIC_SEARCH
        keyword = np.where(paid_search, rng.integers(0, len(ch.PAID_KEYWORDS), m), -1)
        keyword = np.where(organic_search, rng.integers(0, len(ch.SEARCH_QUERIES), m), keyword)
        term = text.take(ch.PAID_KEYWORDS, np.where(tagged & paid_search, keyword, -1))
        with_content = tagged & np.isin(channel, [ch.INDEX["paid_social"], ch.INDEX["display"]])
        content = text.take(AD_CONTENTS, np.where(
            with_content, rng.integers(0, len(AD_CONTENTS), m), -1))
        utm = {"utm_source": text.take(SOURCE_VOCAB, src_idx),
               "utm_medium": text.take(MEDIUM_VOCAB, med_idx),
               "utm_campaign": campaign, "utm_term": term, "utm_content": content}

        # click ids, as the platforms append them
        kinds = np.array([p.click_id or "" for p in ch.PLACEMENTS], object)[placement]
        device_kind = pop.device_kind[touches.device[touch]]
        ios = np.isin(pop.device_agent[touches.device[touch]], sorted(IOS_AGENTS))
        braid = (kinds == "gclid") & ios & (rng.random(m) < mess.BRAID_SHARE)
        kinds = np.where(braid, np.where(rng.random(m) < 0.5, "gbraid", "wbraid"), kinds)
        organic_fb = (channel == ch.INDEX["organic_social"]) & (
            np.array([p.referrer or "" for p in ch.PLACEMENTS], object)[placement]
            == "https://m.facebook.com/")
        fb_appended = organic_fb & (rng.random(m) < mess.FBCLID_ON_ORGANIC_SHARE)
        counts["fbclid_on_organic"] += int(fb_appended.sum())
        kinds = np.where(fb_appended, "fbclid", kinds)
        clicks: dict[str, pa.Array] = {}
        for kind in CLICK_KINDS:
            rows = np.nonzero(kinds == kind)[0]
            prefix, width = CLICK_TOKENS[kind]
            tokens = text.random_token(rng, len(rows), width, prefix,
                                       text.HEX if kind == "msclkid" else None)
            clicks[kind] = _slots(m, rows, tokens)

        # the landing URL's query string: UTMs then the click id, spaces percent-encoded
        query_parts = []
        for key in UTM_KEYS:
            encoded = pc.replace_substring(utm[key], " ", "%20")
            query_parts.append(pc.fill_null(text.concat(f"&{key}=", encoded), ""))
        for kind in CLICK_KINDS:
            query_parts.append(pc.fill_null(text.concat(f"&{kind}=", clicks[kind]), ""))
        query = text.concat(*query_parts)
        has_query = pc.greater(pc.binary_length(query), 0)
        query = pc.if_else(has_query, text.concat("?", pc.utf8_slice_codeunits(query, 1)), "")
        landing_path = path.take(pa.array(landing))
        landing_url = text.concat(SITE, landing_path, query)

        referrer = text.take([p.referrer for p in ch.PLACEMENTS], placement)
        stripped = (rng.random(m) < mess.REFERRER_STRIPPED_SHARE) & pc.is_valid(
            referrer).to_numpy(zero_copy_only=False)
        counts["referrer_stripped"] += int(stripped.sum())
        referrer = text.where(stripped, pa.nulls(m, pa.string()), referrer)

        # campaign object as analytics.js parses it from the landing URL
        campaign_json = text.concat(
            ',"campaign":{"source":', text.json_string(utm["utm_source"]),
            ',"medium":', text.json_string(utm["utm_medium"]),
            ',"name":', text.json_string(utm["utm_campaign"]),
            pc.fill_null(text.concat(',"term":"', utm["utm_term"], '"'), ""),
            pc.fill_null(text.concat(',"content":"', utm["utm_content"], '"'), ""), "}")
        campaign_json = text.where(tagged, campaign_json, "")

        # every page view: landing rows take the above, others an internal URL and referrer;
        # then the bots' page views (no referrer, no campaign)
        full_url = text.concat(SITE, path)
        previous = np.maximum(np.arange(n) - 1, 0)
        internal_referrer = full_url.take(pa.array(previous))
        bot_path = text.take([p[0] for p in SITE_PAGES], bot_pages)
        nb = len(bot_pages)
        bot_nulls = pa.nulls(nb, pa.string())
        self.path = pa.concat_arrays([path, bot_path])
        self.title = pa.concat_arrays([self.title, text.take([p[1] for p in SITE_PAGES],
                                                             bot_pages)])
        self.url = pa.concat_arrays([_overlay(full_url, landing, landing_url),
                                     text.concat(SITE, bot_path)])
        self.referrer = pa.concat_arrays([_overlay(internal_referrer, landing, referrer),
                                          bot_nulls])
        self.utm = {k: pa.concat_arrays([_slots(n, landing, v), bot_nulls])
                    for k, v in utm.items()}
        self.clicks = {k: pa.concat_arrays([_slots(n, landing, v), bot_nulls])
                       for k, v in clicks.items()}
        none = pa.array([""], pa.string())
        self.campaign_member = pa.concat_arrays([pc.fill_null(_slots(n, landing, campaign_json),
                                                              ""), pa.repeat("", nb).cast(
                                                                  pa.string()), none])
        self.page_json = text.concat(
            '{"path":', text.json_string(self.path), ',"referrer":',
            text.json_string(self.referrer), ',"title":', text.json_string(self.title),
            ',"url":', text.json_string(self.url), "}")
        self.page_member = pa.concat_arrays([text.concat(',"page":', self.page_json), none])
        self.landings = Landings(
            time=touches.time[touch], placement=placement,
            campaign=np.where(tagged | (kinds != ""), campaign_idx, -1), keyword=keyword,
            page=pages.page[landing], device_kind=device_kind)

    @staticmethod
    def _variant(
        canonical: np.ndarray,
        tagged: np.ndarray,
        table: dict[str, tuple[str, ...]],
        offsets: dict[str, int],
        rng: np.random.Generator,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Index into the flattened variants of each canonical value (-1 if untagged) and
        whether a non-canonical spelling was used."""
        m = len(canonical)
        idx = np.full(m, -1, np.int64)
        variant = np.zeros(m, bool)
        u = rng.random(m)
        v = rng.random(m)
        for key, values in table.items():
            mine = tagged & (canonical == key)
            other = mine & (u < ch.VARIANT_SHARE) & (len(values) > 1)
            pick = np.where(other, 1 + (v * (len(values) - 1)).astype(np.int64), 0)
            idx[mine] = offsets[key] + pick[mine]
            variant |= other
        return idx, variant


def _overlay(base: pa.Array, index: np.ndarray, values: pa.Array) -> pa.Array:
    """``base`` with rows ``index`` replaced by ``values``."""
    mask = np.zeros(len(base), bool)
    mask[index] = True
    return pc.if_else(pa.array(mask), _slots(len(base), index, values), base)


@dataclass
class _Block:
    """Rows of one kind of event before rendering (all arrays the same length)."""

    time: np.ndarray
    type: int
    event: int  # -1 for none
    source: int | np.ndarray
    touch: np.ndarray  # owning touch or -1
    person: np.ndarray
    device: np.ndarray  # -1: not sent from a device (no anonymousId)
    page_row: np.ndarray  # -1: no page context
    user_always: bool  # the sender knows the user (server, CRM, forms tool, call tracking)
    properties: pa.Array | None
    traits: pa.Array | None = None
    revenue: np.ndarray | None = None
    email: pa.Array | None = None
    phone: pa.Array | None = None
    contact_id: pa.Array | None = None
    #: utm_source, utm_medium, utm_campaign of records that carry their own campaign
    campaign: dict[str, pa.Array] | None = None
    group: bool = False
    alias: bool = False

    def __len__(self) -> int:
        return len(self.time)


def render(
    pop: Population,
    journeys: Journeys,
    reviews: tuple[np.ndarray, np.ndarray, np.ndarray],
    rng: np.random.Generator,
    *,
    chunk: int,
) -> Rendered:
    """Render one chunk's journeys (and review answers) as events with their mess."""
    counts: Counter[str] = Counter()
    t, p = journeys.touches, journeys.pages
    bots = _Bots(rng, len(p.touch), t.time)
    pages = _Pages(pop, journeys, bots.page, rng, counts)
    n_touch = len(t)
    first_row = np.searchsorted(p.touch, np.arange(n_touch), side="left")
    last_row = np.searchsorted(p.touch, np.arange(n_touch), side="right") - 1
    web = t.device >= 0
    email_clean = pop.email
    email_messy, n_email_variant = mess.email_variants(pop.email, rng)
    counts["email_variant"] += n_email_variant
    phone_style = rng.choice(len(mess.PHONE_FORMATS), size=pop.people, p=mess.PHONE_FORMAT_SHARES)
    phone = mess.phone_formats(pop.phone_digits, phone_style)
    forms = FORMS_B2B if pop.b2b else FORMS_B2C
    none = np.full(0, -1)
    blocks: list[_Block] = []

    def no(rows: np.ndarray) -> np.ndarray:
        return np.full(len(rows), -1)

    # page views and CTA clicks
    blocks.append(_Block(
        time=t.time[p.touch] + p.offset, type=PAGE, event=-1, source=WEB, touch=p.touch,
        person=t.person[p.touch], device=t.device[p.touch], page_row=np.arange(len(p.touch)),
        user_always=False, properties=pages.page_json.slice(0, len(p.touch))))
    rows = np.nonzero(t.cta)[0]
    cta_id = text.take(CTA_IDS, rng.integers(0, len(CTA_IDS), len(rows)))
    landing_path = pages.path.take(pa.array(first_row[rows]))
    blocks.append(_Block(
        time=t.time[rows] + rng.integers(2_000, PAGE_GAP_MS[0], len(rows)), type=TRACK,
        event=CTA, source=WEB, touch=rows, person=t.person[rows], device=t.device[rows],
        page_row=first_row[rows], user_always=False,
        properties=text.concat('{"cta_id":"', cta_id, '","location":"', landing_path, '"}')))

    # form fills: the web tag's event and the forms tool's copy of the same submission
    rows = np.nonzero(t.form >= 0)[0]
    action = t.time[rows] + t.action_offset[rows]
    form_id = text.take(forms, t.form[rows])
    who = pa.array(t.person[rows])
    form_email = email_messy.take(who)
    blocks.append(_Block(
        time=action, type=TRACK, event=FORM, source=WEB, touch=rows, person=t.person[rows],
        device=t.device[rows], page_row=last_row[rows], user_always=False,
        properties=text.concat('{"form_id":"', form_id, '","email":"', form_email, '"}'),
        email=form_email))
    submission = entity_ids("sub_", chunk, rows)
    blocks.append(_Block(
        time=action + rng.integers(1_000, 30_000, len(rows)), type=TRACK, event=FORM,
        source=FORMS_SOURCE, touch=rows, person=t.person[rows], device=no(rows),
        page_row=last_row[rows], user_always=True,
        properties=text.concat('{"form_id":"', form_id, '","email":"', email_clean.take(who),
                               '","submission_id":"', submission, '","portal":"hubspot"}'),
        email=email_clean.take(who)))
    counts["cross_source_forms"] += len(rows)

    # chats
    rows = np.nonzero(t.chat)[0]
    blocks.append(_Block(
        time=t.time[rows] + t.action_offset[rows] + 5_000, type=TRACK, event=CHAT,
        source=CHAT_SOURCE, touch=rows, person=t.person[rows], device=t.device[rows],
        page_row=last_row[rows], user_always=False,
        properties=text.concat('{"chat_id":"', entity_ids("cht_", chunk, rows),
                               '","channel":"live_chat"}')))

    # identify, alias and group calls
    rows = np.nonzero(t.identify & web)[0]
    login = (t.form[rows] < 0) & ~t.chat[rows] & (t.order[rows] == 0)
    source = np.where(t.order[rows] > 0, SERVER,
                      np.where((t.form[rows] < 0) & t.chat[rows], CHAT_SOURCE, WEB))
    with_phone = rng.random(len(rows)) < 0.3
    traits = _person_traits(pop, t.person[rows], email_messy, phone, with_phone)
    emails = email_messy.take(pa.array(t.person[rows]))
    phones = text.where(with_phone, phone.take(pa.array(t.person[rows])),
                        pa.nulls(len(rows), pa.string()))
    blocks.append(_Block(
        time=t.identify_time[rows], type=IDENTIFY, event=-1, source=source, touch=rows,
        person=t.person[rows], device=t.device[rows],
        page_row=np.where(login, first_row[rows], last_row[rows]), user_always=False,
        properties=None, traits=traits, email=emails, phone=phones))
    rows = np.nonzero(t.alias)[0]
    blocks.append(_Block(
        time=t.identify_time[rows] + 1_000, type=ALIAS, event=-1, source=WEB, touch=rows,
        person=t.person[rows], device=t.device[rows], page_row=last_row[rows],
        user_always=False, properties=None, alias=True))
    rows = np.nonzero(t.group)[0]
    unit = pa.array(t.unit[rows])
    blocks.append(_Block(
        time=t.identify_time[rows] + 2_000, type=GROUP, event=-1, source=WEB, touch=rows,
        person=t.person[rows], device=t.device[rows], page_row=last_row[rows],
        user_always=False, properties=None, group=True,
        traits=text.concat(
            '{"name":"', pop.unit_account_name.take(unit), '","domain":"',
            pop.unit_domain.take(unit), '","industry":"', pop.unit_industry.take(unit),
            '","employees":', pc.cast(pa.array(pop.unit_employees[t.unit[rows]]), pa.string()),
            "}")))

    # orders: checkout on the site (server-side event) or a sale closed on the phone (CRM)
    order_person, order_time = [], []
    for on_site in (True, False):
        rows = np.nonzero((t.order > 0) & (web == on_site))[0]
        when = (t.time[rows] + t.action_offset[rows] + ORDER_DELAY_MS if on_site
                else t.time[rows] + t.call_duration[rows] * 1000 + 60_000)
        order_person.append(t.person[rows])
        order_time.append(when)
        value = t.order_value[rows]
        renamed = when >= mess.SCHEMA_CHANGE_AT_MS
        counts["schema_change_total"] += int(renamed.sum())
        key = text.where(renamed, '"total":', '"revenue":')
        # the CRM also names the buyer by its own contact id
        contact = None if on_site else pop.crm_contact_id.take(pa.array(t.person[rows]))
        contact_member = "" if contact is None else text.concat(
            '"crm_contact_id":"', contact, '",')
        blocks.append(_Block(
            time=when, type=TRACK, event=ORDER, source=SERVER if on_site else CRM, touch=rows,
            person=t.person[rows], device=t.device[rows] if on_site else no(rows),
            page_row=no(rows), user_always=True, revenue=value, contact_id=contact,
            properties=text.concat(
                '{"order_id":"', entity_ids("ord_", chunk, rows), '",', contact_member, key,
                text.json_number(value), ',"currency":"', CURRENCY, '","products":',
                pc.cast(pa.array(1 + rows % 3), pa.string()), "}")))

    # calls (call tracking) and their identify
    rows = np.nonzero(t.channel == ch.PHONE)[0]
    caller = phone.take(pa.array(t.person[rows]))
    tracking = tracking_numbers(t.call_pool[rows], t.call_number[rows])
    blocks.append(_Block(
        time=t.time[rows], type=TRACK, event=CALL, source=CALLS, touch=rows,
        person=t.person[rows], device=no(rows), page_row=no(rows), user_always=True,
        phone=caller,
        properties=text.concat(
            '{"call_id":"', entity_ids("CA", chunk, rows), '","tracking_number":"', tracking,
            '","phone":"', caller, '","duration":',
            pc.cast(pa.array(t.call_duration[rows]), pa.string()), ',"answered":',
            text.where(t.call_answered[rows], "true", "false"), ',"outcome":"',
            text.take(CALL_OUTCOMES, t.call_outcome[rows]), '"}')))
    blocks.append(_Block(
        time=t.time[rows] + 1_000, type=IDENTIFY, event=-1, source=CALLS, touch=rows,
        person=t.person[rows], device=no(rows), page_row=no(rows), user_always=True,
        properties=None, phone=caller,
        traits=text.concat('{"phone":"', caller, '","first_name":"',
                           pop.first_name.take(pa.array(t.person[rows])), '"}')))

    # webinars (offline events) synced from the CRM, with the registrant's identify
    rows = np.nonzero(t.channel == ch.OFFLINE)[0]
    who = pa.array(t.person[rows])
    contact = pop.crm_contact_id.take(who)
    fortnight = t.time[rows] // (14 * 86_400_000)
    blocks.append(_Block(
        time=t.time[rows], type=TRACK, event=WEBINAR, source=CRM, touch=rows,
        person=t.person[rows], device=no(rows), page_row=no(rows), user_always=True,
        email=email_clean.take(who), contact_id=contact,
        campaign=dict(zip(ROW_CAMPAIGN_KEYS, (
            pa.array(np.full(len(rows), WEBINAR_SOURCE), pa.string()),
            pa.array(np.full(len(rows), WEBINAR_MEDIUM), pa.string()),
            text.take(WEBINAR_CAMPAIGNS, fortnight % len(WEBINARS))), strict=True)),
        properties=text.concat(
            '{"webinar_id":"wbn_', pc.cast(pa.array(fortnight), pa.string()),
            '","webinar_name":"', text.take(WEBINARS, fortnight % len(WEBINARS)),
            '","email":"', email_clean.take(who), '","crm_contact_id":"', contact, '"}')))
    blocks.append(_Block(
        time=t.time[rows] + 1_000, type=IDENTIFY, event=-1, source=CRM, touch=rows,
        person=t.person[rows], device=no(rows), page_row=no(rows), user_always=True,
        properties=None, email=email_clean.take(who), contact_id=contact,
        traits=_person_traits(pop, t.person[rows], email_clean, phone,
                              np.zeros(len(rows), bool), contact=contact)))

    # reviews (advocacy), sent by the review platform's server integration
    r_person, r_time, r_rating = reviews
    blocks.append(_Block(
        time=r_time, type=TRACK, event=REVIEW, source=SERVER, touch=no(r_time),
        person=r_person, device=no(r_time), page_row=no(r_time), user_always=True,
        properties=text.concat('{"rating":', pc.cast(pa.array(r_rating), pa.string()),
                               ',"platform":"trustpilot"}')))

    human = sum(len(b) for b in blocks)
    used_devices = np.unique(np.concatenate([b.device[b.device >= 0] for b in blocks] + [none]))
    # the bots' page views, on pseudo-devices after the real ones
    n_pages = len(p.touch)
    blocks.append(_Block(
        time=bots.time, type=PAGE, event=-1, source=WEB, touch=no(bots.time),
        person=no(bots.time), device=pop.devices + bots.device,
        page_row=n_pages + np.arange(len(bots.time)), user_always=False,
        properties=pages.page_json.slice(n_pages)))
    counts["bot_events"] += len(bots.time)

    tables = _tables(pop, pages, bots, rng, counts)
    unique = _assemble(pop, journeys, blocks, rng)
    linked = np.unique(unique.device[(unique.device >= 0) & (unique.device < pop.devices)
                                     & unique.knows_user])
    unlinked = len(np.setdiff1d(used_devices, linked))
    order, sent_at, received_at = _timing(pop, unique, rng, counts)
    return Rendered(
        rows=unique.take(order), tables=tables, sent_at=sent_at, received_at=received_at,
        mess=counts, landings=pages.landings, human_events=human, sessions=int(web.sum()),
        anonymous_ids=len(used_devices), unlinked_devices=unlinked,
        order_person=np.concatenate(order_person), order_time=np.concatenate(order_time),
    )


def _person_traits(
    pop: Population, person: np.ndarray, email: pa.Array, phone: pa.Array, with_phone: np.ndarray,
    contact: pa.Array | None = None,
) -> pa.Array:
    """Identify traits; ``contact``: the CRM contact id of each row (the CRM's identifies)."""
    who = pa.array(person)
    phone_member = text.where(with_phone, text.concat(',"phone":"', phone.take(who), '"'), "")
    company = pc.fill_null(text.concat(',"company":"', pop.company.take(who), '"'), "")
    contact_member = "" if contact is None else text.concat(',"crm_contact_id":"', contact, '"')
    return text.concat('{"email":"', email.take(who), '","first_name":"',
                       pop.first_name.take(who), '","last_name":"', pop.last_name.take(who), '"',
                       phone_member, company, contact_member, "}")


def tracking_numbers(pool: np.ndarray, number: np.ndarray) -> pa.Array:
    """The tracking number ``number`` of channel ``pool``'s number pool."""
    flat, offsets = _vocab({name: ch.TRACKING_POOLS[name] for name in ch.NAMES})
    start = np.array([offsets[name] for name in ch.NAMES])
    return text.take(flat, start[pool] + number)


class _Bots:
    """Crawler hits (a new anonymous id each time: crawlers keep no cookies) and one
    high-rate scraper per chunk (one cookie, one address, a hit every 0.5-3 s)."""

    def __init__(self, rng: np.random.Generator, page_views: int, times: np.ndarray) -> None:
        n = round(page_views * mess.BOT_SHARE)
        shares = np.array([b[2] for b in mess.BOT_AGENTS])
        self.agent = rng.choice(len(mess.BOT_AGENTS), size=n, p=shares / shares.sum())
        low, high = (int(times.min()), int(times.max())) if len(times) else (0, 1)
        scraper = self.agent == len(mess.BOT_AGENTS) - 1
        self.time = rng.integers(low, high + 1, n)
        burst = rng.integers(low, high + 1)
        self.time[scraper] = burst + np.cumsum(rng.integers(500, 3_000, int(scraper.sum())))
        crawler_device = np.cumsum(~scraper) - 1
        self.devices = int((~scraper).sum()) + 1
        self.device = np.where(scraper, self.devices - 1, crawler_device)
        self.page = rng.integers(0, len(SITE_PAGES), n)
        device_agent = np.full(self.devices, len(mess.BOT_AGENTS) - 1)
        device_agent[self.device] = self.agent
        self.device_agent = device_agent
        self.device_octet = np.where(device_agent == len(mess.BOT_AGENTS) - 1, 17,
                                     rng.integers(1, 255, self.devices))


def _tables(pop: Population, pages: _Pages, bots: _Bots, rng: np.random.Generator,
            counts: Counter[str]) -> Tables:
    none = pa.array([None], pa.string())
    anonymous_id = pa.concat_arrays([pop.anonymous_id, text.uuids(rng, bots.devices)])
    missing_ua = rng.random(pop.devices) < mess.USER_AGENT_MISSING_SHARE
    counts["user_agent_missing_devices"] += int(missing_ua.sum())
    user_agent = pa.concat_arrays([
        text.take(USER_AGENTS, np.where(missing_ua, -1, pop.device_agent)),
        text.take([b[0] for b in mess.BOT_AGENTS], bots.device_agent)])
    ip = pa.concat_arrays([pop.ip, text.concat(
        text.take([b[1] for b in mess.BOT_AGENTS], bots.device_agent),
        pc.cast(pa.array(bots.device_octet), pa.string()))])
    ua_json = text.json_string(user_agent)
    ip_member = pc.fill_null(text.concat(',"ip":"', ip, '"'), "")
    device_tail = pa.concat_arrays([
        text.concat(',"userAgent":', ua_json, ip_member, "}"),
        text.concat(',"user_agent":', ua_json, ip_member, "}"),
        pa.array(["}"], pa.string())])
    page = {"url": pages.url, "path": pages.path, "referrer": pages.referrer,
            "title": pages.title, **pages.utm, **pages.clicks}
    return Tables(
        anonymous_id=pa.concat_arrays([anonymous_id, none]),
        user_agent=pa.concat_arrays([user_agent, none]),
        ip=pa.concat_arrays([ip, none]),
        user_id=pa.concat_arrays([pop.user_id, none]),
        account_id=pa.concat_arrays([pop.unit_account_id, none]),
        page={k: pa.concat_arrays([v, none]) for k, v in page.items()},
        page_member=pages.page_member, campaign_member=pages.campaign_member,
        device_tail=device_tail,
    )


def _assemble(
    pop: Population, journeys: Journeys, blocks: list[_Block], rng: np.random.Generator
) -> Rows:
    """Concatenate the blocks and resolve who is known when."""
    blocks = [b for b in blocks if len(b)]
    n = sum(len(b) for b in blocks)
    cat = np.concatenate

    def each(value: int | np.ndarray, length: int) -> np.ndarray:
        return value if isinstance(value, np.ndarray) else np.full(length, value)

    def strings(get: str) -> pa.Array:
        return pa.concat_arrays([
            getattr(b, get) if getattr(b, get) is not None else pa.nulls(len(b), pa.string())
            for b in blocks])

    def campaign(key: str) -> pa.Array:
        return pa.concat_arrays([b.campaign[key] if b.campaign is not None
                                 else pa.nulls(len(b), pa.string()) for b in blocks])

    time = cat([b.time for b in blocks]).astype(np.int64)
    device = cat([b.device for b in blocks])
    person = cat([b.person for b in blocks])
    always = cat([np.full(len(b), b.user_always) for b in blocks])
    on_device = (device >= 0) & (device < pop.devices)
    identified_at = journeys.device_identified[np.where(on_device, device, 0)]
    knows_user = (person >= 0) & (always | (on_device & (identified_at >= 0)
                                            & (time >= identified_at)))
    skew = np.where(on_device, pop.device_skew_ms[np.where(on_device, device, 0)], 0)
    return Rows(
        message_id=text.uuids(rng, n),
        type=cat([each(b.type, len(b)) for b in blocks]),
        event=cat([each(b.event, len(b)) for b in blocks]),
        source=cat([each(b.source, len(b)) for b in blocks]),
        device=device, person=person,
        unit=np.where(person >= 0, pop.person_unit[np.maximum(person, 0)], -1),
        page_row=cat([b.page_row for b in blocks]),
        knows_user=knows_user,
        is_group=cat([np.full(len(b), b.group) for b in blocks]),
        is_alias=cat([np.full(len(b), b.alias) for b in blocks]),
        timestamp=time, original_timestamp=time + skew,
        properties=strings("properties"), traits=strings("traits"),
        email=strings("email"), phone=strings("phone"), contact_id=strings("contact_id"),
        revenue=cat([b.revenue if b.revenue is not None else np.full(len(b), np.nan)
                     for b in blocks]),
        **{key: campaign(key) for key in ROW_CAMPAIGN_KEYS},
    )


def _timing(
    pop: Population, rows: Rows, rng: np.random.Generator, counts: Counter[str]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Send and receipt times, re-sent duplicates, and the written order (by receipt).

    Devices send in batches (50 ms - 3 s later), some hours later (queued offline); servers
    within a second; the CRM and forms tool sync every few minutes. ``sentAt`` is on the
    device's clock (skewed like ``originalTimestamp``), ``receivedAt`` on the server's.
    """
    n = len(rows)
    human_device = (rows.device >= 0) & (rows.person >= 0)
    skew = rows.original_timestamp - rows.timestamp
    counts["clock_skew"] += int((skew != 0).sum())
    delay = np.where(human_device, rng.integers(50, 3_000, n), rng.integers(20, 800, n))
    late = human_device & (rng.random(n) < mess.LATE_ARRIVAL_SHARE)
    counts["late_arrival"] += int(late.sum())
    delay = np.where(late, rng.integers(3_600_000, 48 * 3_600_000, n), delay)
    crm_sync = (rows.source == CRM) | (rows.source == FORMS_SOURCE)
    delay = np.where(crm_sync, rng.integers(60_000, 30 * 60_000, n), delay)
    received = rows.timestamp + delay
    sent = received + skew

    # re-sent copies of some human events: byte-identical, or retried later
    u = rng.random(n)
    human = rows.person >= 0
    exact = np.nonzero(human & (u < mess.DUPLICATE_EXACT_SHARE))[0]
    retried = np.nonzero(human & (u >= mess.DUPLICATE_EXACT_SHARE)
                         & (u < mess.DUPLICATE_EXACT_SHARE + mess.DUPLICATE_RETRIED_SHARE))[0]
    counts["duplicate_exact"] += len(exact)
    counts["duplicate_retried"] += len(retried)
    later = rng.integers(1_000, 600_000, len(retried))
    index = np.concatenate([np.arange(n), exact, retried])
    received_all = np.concatenate([received, received[exact], received[retried] + later])
    sent_all = np.concatenate([sent, sent[exact], sent[retried] + later])
    order = np.argsort(received_all, kind="stable")
    return index[order], sent_all[order], received_all[order]
