"""``standardise_*`` steps: one spelling per value, so that 'Google ' and 'google' are one source.

Text rules run on the engine as plain expressions. Library look-ups (phonenumbers) run in Python
on the *distinct* values only and come back as a small table that is joined on. Changes are
audited per distinct value (old → new, rows), not per row, so the audit stays small.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING

import ibis
import ibis.expr.types as ir
import pyarrow as pa

from touchline import engine
from touchline.store import (
    CLICK_ID_PLATFORMS,
    EMAIL_PATTERN,
    ContactKey,
    sha256_digest,
)
from touchline.store import contact_key as store_contact_key

if TYPE_CHECKING:
    from ibis.backends import BaseBackend

    from touchline.config import Settings

log = logging.getLogger(__name__)

UTM_COLUMNS = ("utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content")
#: query parameters that track a click, not a page: stripped from page_url, kept as columns
TRACKING_PARAMETERS = (
    "utm_[a-z_]*", *CLICK_ID_PLATFORMS, "_ga", "_gl", "mc_cid", "mc_eid", "_hsenc", "_hsmi",
    "igshid", "yclid",
)
#: click id columns in precedence order, with the ad platform each belongs to
CLICK_IDS = tuple(CLICK_ID_PLATFORMS.items())
URL_MAX_CHARS = 2048
_SCHEME_HOST = r"^([a-zA-Z][a-zA-Z0-9+.\-]*://[^/?#]*)"
_AFTER_HOST = r"^[a-zA-Z][a-zA-Z0-9+.\-]*://[^/?#]*(.*)$"
_HOST = r"^[a-zA-Z][a-zA-Z0-9+.\-]*://(?:[^/?#@]*@)?([^/?#:]+)"
_EMAIL = EMAIL_PATTERN


def normalise_text(value: ir.StringValue) -> ir.StringValue:
    """Trim, lower-case, and turn the empty string into null."""
    return value.strip().lower().nullif("")


def standardise_utm(events: ir.Table, *, source_aliases: Mapping[str, str],
                    medium_aliases: Mapping[str, str]) -> tuple[ir.Table, ir.Table]:
    """Trim and lower-case every UTM field; map source and medium aliases to one name.

    ``fb``, ``facebook.com`` and ``Facebook `` all become ``facebook``; ``paid-search`` becomes
    ``cpc``. Returns the table and an audit of each distinct change with its row count.
    """
    aliases = {"utm_source": source_aliases, "utm_medium": medium_aliases}
    out = events.mutate(**{c: normalise_text(events[c]) for c in UTM_COLUMNS})
    for column, table in aliases.items():
        out = _apply_aliases(out, column, table)
    parts = []
    for column in UTM_COLUMNS:  # one small hash aggregate per column, over its distinct values
        values = events.group_by(_old=events[column]).aggregate(_rows=ibis._.count())
        values = _apply_aliases(values.mutate(_new=normalise_text(values._old)), "_new",
                                aliases.get(column, {}))
        old, new = values._old, values._new
        changed = values.filter(old.notnull() & (new.isnull() | (old != new)))
        code = ibis.ifelse(new.isnull(), "empty_value",
                           ibis.ifelse(normalise_text(old) != new, f"{column}_alias", "case_space"))
        parts.append(changed.group_by(
            field=ibis.literal(column), reason_code=code,
            old_value=old, new_value=new,
        ).aggregate(row_count=changed._rows.sum().cast("int64")))
    audit = ibis.union(*parts).mutate(
        reason=ibis.cases(
            (ibis._.reason_code == "empty_value", "blank value set to null"),
            (ibis._.reason_code == "case_space", "trimmed and lower-cased"),
            else_="alias mapped to its canonical name (data/*_aliases.csv)",
        ),
        message_id=ibis.literal(None, type="string"),
    )
    return out, audit


def _apply_aliases(table: ir.Table, column: str, aliases: Mapping[str, str]) -> ir.Table:
    """``column`` (already normalised text) replaced by its canonical name where it is an alias.

    A hash join with the small alias table, not a ``CASE`` of hundreds of branches: the engine
    evaluates such a ``CASE`` on every row (and pushes it into scans below aggregates).
    """
    if not aliases:
        return table
    lookup = ibis.memtable(
        {"_alias": list(aliases), "_canonical": list(aliases.values())},
        schema={"_alias": "string", "_canonical": "string"},
    )
    joined = table.left_join(lookup, table[column] == lookup._alias)
    return joined.mutate(**{column: joined._canonical.fill_null(joined[column])}).drop(
        "_alias", "_canonical")


def normalise_url(url: ir.StringValue) -> ir.StringValue:
    """Scheme and host lower-case, fragment dropped, tracking parameters stripped, no trailing
    slash, at most 2,048 characters.

    ``HTTPS://Shop.COM/Pricing/?utm_source=x&plan=pro#top`` → ``https://shop.com/Pricing?plan=pro``.
    Strings without a scheme (relative or malformed URLs) keep their text minus the same parts.
    """
    text = url.strip()
    head = text.re_extract(_SCHEME_HOST, 1)
    rest = ibis.ifelse(head == "", text, text.re_extract(_AFTER_HOST, 1))
    path = rest.re_extract(r"^([^?#]*)", 1).re_replace(r"/+$", "")
    query = _strip_tracking(rest.re_extract(r"^[^?#]*\?([^#]*)", 1))
    out = head.lower() + path + ibis.ifelse(query == "", "", "?" + query)
    return out.substr(0, URL_MAX_CHARS).nullif("")


def _strip_tracking(query: ir.StringValue) -> ir.StringValue:
    """Drop tracking parameters from a query string without back-references (DuckDB's RE2
    writes ``\\1``, Spark's Java ``$1``): prefix ``&``, delete ``&name=value`` pairs, tidy."""
    names = "|".join(TRACKING_PARAMETERS)
    cut = ("&" + query).re_replace(r"(?i)&(" + names + r")=[^&]*", "")
    return cut.re_replace(r"^&+", "")


def page_path(url: ir.StringValue) -> ir.StringValue:
    """The path of a normalised URL, ``/`` for the home page."""
    rest = ibis.ifelse(url.re_search(_SCHEME_HOST), url.re_extract(_AFTER_HOST, 1), url)
    return rest.re_extract(r"^([^?#]*)", 1).nullif("").fill_null("/")


def url_host(url: ir.StringValue) -> ir.StringValue:
    """Lower-case host of an absolute URL (no port, no user info); null otherwise."""
    return url.re_extract(_HOST, 1).lower().nullif("")


def page_table(events: ir.Table) -> ir.Table:
    """One row per distinct ``url``: ``_url``, its ``_rows``, ``_page_url`` and ``_page_path``.

    The regexes run once per distinct URL (tens of thousands), not once per row.
    """
    pages = events.filter(events.url.notnull()).group_by(_url="url").aggregate(
        _rows=ibis._.count())
    return pages.mutate(_page_url=normalise_url(pages._url)).mutate(
        _page_path=lambda t: page_path(t._page_url))


def referrer_table(events: ir.Table) -> ir.Table:
    """One row per distinct ``referrer``: ``_ref`` and its ``_ref_host``."""
    referrers = events.select(_ref="referrer").filter(ibis._._ref.notnull()).distinct()
    return referrers.mutate(_ref_host=url_host(referrers._ref))


def standardise_urls(events: ir.Table, pages: ir.Table | None = None,
                     referrers: ir.Table | None = None) -> tuple[ir.Table, ir.Table]:
    """Normalise page URLs, derive the page path, the referrer host and the click id.

    Tracking parameters leave ``page_url`` (two visits of one page are one page) but stay as
    fields (``utm_*``, ``gclid`` ...). ``click_id_type`` names the ad platform of the first
    click id present: gclid/gbraid/wbraid → google, msclkid → microsoft, dclid → display,
    fbclid → meta, li_fat_id → linkedin, ttclid → tiktok; ``click_id_param`` names the parameter
    itself (an upload to Google puts a gclid, a gbraid and a wbraid in different columns).
    ``pages`` and ``referrers``:
    :func:`page_table` and :func:`referrer_table` of ``events``, stored once by the caller,
    else inline.
    """
    kind = ibis.cases(*((events[c].notnull(), k) for c, k in CLICK_IDS), else_=ibis.null("string"))
    pages = page_table(events) if pages is None else pages
    referrers = referrer_table(events) if referrers is None else referrers
    joined = events.left_join(pages, events.url == pages._url).left_join(
        referrers, events.referrer == referrers._ref)
    out = joined.mutate(
        page_url=joined._page_url,
        page_path=joined._page_path.fill_null("/"),  # page_path() of a null URL is "/"
        referrer_host=joined._ref_host,
        click_id_type=kind,
        click_id=ibis.coalesce(*(events[c] for c, _ in CLICK_IDS)),
        click_id_param=ibis.cases(*((events[c].notnull(), c) for c, _ in CLICK_IDS),
                                  else_=ibis.null("string")),
    ).drop("_url", "_rows", "_page_url", "_page_path", "_ref", "_ref_host")
    # counted on the distinct URLs, the audit never needs the rows again; a sum of a CASE, not
    # a filter, which the engine would push below the group-by and run per row
    changed = pages._page_url.isnull() | (pages._page_url != pages._url)
    audit = pages.aggregate(row_count=ibis.ifelse(changed, pages._rows, 0).sum().fill_null(0)
                            .cast("int64")).mutate(
        field=ibis.literal("url"), reason_code=ibis.literal("url_normalised"),
        reason=ibis.literal("page_url: scheme/host lower-cased, fragment, tracking parameters "
                            "and trailing slash removed (url keeps the original)"),
        message_id=ibis.literal(None, type="string"),
        old_value=ibis.literal(None, type="string"), new_value=ibis.literal(None, type="string"),
    ).filter(ibis._.row_count > 0)
    return out, audit


def e164_table(raw_numbers: list[str], region: str) -> pa.Table:
    """``phone_raw -> phone`` in E.164 for distinct raw numbers; unparsable ones map to null.

    ``region`` is the country assumed for numbers written without a country code.
    """
    import phonenumbers

    out: list[str | None] = []
    for raw in raw_numbers:
        try:
            number = phonenumbers.parse(raw, region)
        except phonenumbers.NumberParseException:
            out.append(None)
            continue
        ok = phonenumbers.is_possible_number(number)
        out.append(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
                   if ok else None)
    return pa.table({"phone_raw": pa.array(raw_numbers, pa.string()),
                     "phone_e164": pa.array(out, pa.string())})


def sha256_hex(value: ir.StringValue) -> ir.StringValue:
    """Lower-case hex SHA-256 of the UTF-8 text, as ad platforms and exports hash identifiers.

    The same digest on every engine (DuckDB ``sha256``, Spark ``sha2(…, 256)``): the identity
    graph meets a plaintext e-mail and a hash of it only if both engines agree.
    """
    return value.hexdigest("sha256")


_hashed = sha256_digest


def standardise_contacts(events: ir.Table, phones: ir.Table) -> tuple[ir.Table, ir.Table]:
    """E-mails trimmed and lower-cased (null unless ``local@domain.tld``); phones in E.164;
    hashed e-mails and phones (64 hex digits) kept, lower-cased, in ``email_sha256`` and
    ``phone_sha256``; ``email_domain`` the e-mail's domain (or the one a load kept beside a
    keyed e-mail).

    A SHA-256 hex digest found in ``email`` or ``phone`` (an export that hashed the field in
    place) moves to the hashed column instead of being dropped as invalid: it still identifies
    the person. ``phones`` maps each distinct raw phone to E.164 (:func:`e164_table`). Every
    change is audited per distinct kind; personal values are not copied, only counts.
    """
    email_text = events.email.strip().lower()
    email = ibis.ifelse(email_text.re_search(_EMAIL), email_text, ibis.null("string"))
    joined = events.left_join(phones, events.phone == phones.phone_raw).drop("phone_raw")
    hashed = {"email": _hashed(events.email), "phone": _hashed(events.phone)}
    given = {"email": _hashed(events.email_sha256), "phone": _hashed(events.phone_sha256)}
    domain = email.re_extract(r"@(.+)$", 1)
    if "email_domain" in events.columns:  # set at load when the e-mail came keyed
        domain = ibis.coalesce(events.email_domain.strip().lower().nullif(""), domain)
    out = joined.mutate(
        email=email, phone=joined.phone_e164,
        email_sha256=ibis.coalesce(given["email"], hashed["email"]),
        phone_sha256=ibis.coalesce(given["phone"], hashed["phone"]),
        email_domain=domain,
    ).drop("phone_e164")
    both = events.mutate(_email=email).left_join(phones, events.phone == phones.phone_raw)
    # one pass of conditional counts, then one audit row per non-zero count: a union of
    # aggregates over ``both`` would make the engine buffer all its rows to read them twice
    counts, field_of = {}, {}
    for field, old, new in (("email", both.email, both._email),
                            ("phone", both.phone, both.phone_e164)):
        changed = old.notnull() & (new.isnull() | (old != new))
        moved = _hashed(old).notnull()
        for code, rows in ((f"{field}_hashed", changed & moved),
                           (f"invalid_{field}", changed & new.isnull() & ~moved),
                           (f"{field}_normalised", changed & new.notnull())):
            counts[code] = rows.cast("int64").sum()
            field_of[code] = field
        column = both[f"{field}_sha256"]
        bad = column.notnull() & _hashed(column).isnull()
        counts[f"invalid_{field}_sha256"] = bad.cast("int64").sum()
        field_of[f"invalid_{field}_sha256"] = f"{field}_sha256"
    totals = both.aggregate(**counts)
    parts = [totals.select(field=ibis.literal(field_of[code]), reason_code=ibis.literal(code),
                           row_count=totals[code].fill_null(0).cast("int64"))
             for code in counts]
    code = ibis._.reason_code
    audit = ibis.union(*parts).filter(ibis._.row_count > 0).mutate(
        reason=ibis.cases(
            (code == "invalid_email", "not local@domain.tld: set to null"),
            (code == "invalid_phone", "not a possible phone number: set to null"),
            (code == "email_normalised", "trimmed and lower-cased"),
            (code.isin(["email_hashed", "phone_hashed"]),
             "a SHA-256 hex digest, not plain text: moved to the _sha256 column"),
            (code.isin(["invalid_email_sha256", "invalid_phone_sha256"]),
             "not 64 hexadecimal digits (a SHA-256): set to null"),
            else_="formatted as E.164",
        ),
        message_id=ibis.literal(None, type="string"),
        old_value=ibis.literal(None, type="string"), new_value=ibis.literal(None, type="string"),
    )
    return out, audit


def convert_currency(events: ir.Table, *, rates: Mapping[str, float],
                     reporting: str) -> tuple[ir.Table, ir.Table]:
    """Revenue in the reporting currency: ``revenue × rate[currency]``.

    ``rates`` gives units of the reporting currency per unit of each currency
    (:func:`~touchline.prepare.reference.currency_rates`). A null currency means the reporting
    one; an unknown currency leaves revenue null and is audited (never silently counted as 1:1).
    """
    code = events.currency.strip().upper()
    rate = code.substitute({k: ibis.literal(v, type="float64") for k, v in rates.items()},
                           else_=ibis.null("float64"))
    rate = ibis.ifelse(code.isnull() | (code == ""), 1.0, rate)
    out = events.mutate(revenue_original=events.revenue, currency_original=events.currency,
                        revenue=events.revenue * rate, currency=ibis.literal(reporting.upper()))
    unknown = events.filter(events.revenue.notnull() & rate.isnull())
    audit = unknown.group_by(old_value=unknown.currency).aggregate(
        row_count=ibis._.count().cast("int64")).mutate(
        field=ibis.literal("revenue"), reason_code=ibis.literal("unknown_currency"),
        reason=ibis.literal("no rate for this currency: revenue set to null "
                            "(add it to settings.currency_rates_file)"),
        message_id=ibis.literal(None, type="string"), new_value=ibis.literal(None, type="string"))
    return out, audit


def contact_key(con: BaseBackend, settings: Settings) -> ContactKey | None:
    """:func:`touchline.store.contact_key` under ``settings`` (None unless
    ``pii_at_rest = "hashed"``)."""
    return store_contact_key(con, settings.pii_key_at_rest)


def business_domains_only(events: ir.Table, business: ir.Table) -> ir.Table:
    """``email_domain`` kept only when it is in ``business._business_domain`` (the distinct
    domains that are not free-mail or ISP ones: :func:`touchline.store.is_free_mail_domain`).

    Why: a company's domain makes an account, also when the address itself is kept as a
    keyed hash; a free-mail domain says nothing about a company and stays out.
    """
    joined = events.left_join(business, events.email_domain == business._business_domain)
    return joined.mutate(email_domain=joined._business_domain).drop("_business_domain")


def set_keyed_aside(events: ir.Table) -> ir.Table:
    """With ``pii_at_rest = "hashed"``, before :func:`standardise_contacts`: a digest in
    ``email`` or ``phone`` is the keyed hash a load stored (:mod:`touchline.collect.at_rest`
    keys every e-mail and phone, and a digest given in those columns too), so it moves to
    ``_email_keyed`` / ``_phone_keyed`` for :func:`hash_contacts` to keep as it is, instead of
    being taken for a plain SHA-256 and keyed a second time.

    A digest written into ``email`` by a source and loaded while ``pii_at_rest`` was
    ``plain`` is read the same way (then it matches no one: re-ingest such files after
    switching).
    """
    email, phone = _hashed(events.email), _hashed(events.phone)
    return events.mutate(
        _email_keyed=email, _phone_keyed=phone,
        email=ibis.ifelse(email.isnull(), events.email, ibis.null("string")),
        phone=ibis.ifelse(phone.isnull(), events.phone, ibis.null("string")))


def hash_contacts(events: ir.Table, con: BaseBackend, settings: Settings) -> ir.Table:
    """``email`` and ``phone`` (normalised, by :func:`standardise_contacts`) replaced by their
    keyed hash, of the plain value's SHA-256 or else of the SHA-256 given; the ``_sha256``
    columns emptied (their value is in the keyed one). Keyed hashes a load stored
    (:func:`set_keyed_aside`) are kept as they are."""
    assert settings.pii_hash_key is not None
    key = settings.pii_hash_key.get_secret_value()

    def keyed(field: str) -> ir.StringValue:
        digest = ibis.coalesce(sha256_hex(events[field]), events[f"{field}_sha256"])
        made = engine.hmac_sha256(con, digest, key)
        aside = f"_{field}_keyed"
        return ibis.coalesce(events[aside], made) if aside in events.columns else made

    out = events.mutate(email=keyed("email"), phone=keyed("phone"),
                        email_sha256=ibis.null("string"), phone_sha256=ibis.null("string"))
    return out.drop(*(c for c in ("_email_keyed", "_phone_keyed") if c in out.columns))
