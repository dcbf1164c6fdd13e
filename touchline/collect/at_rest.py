"""Personal data at rest in the raw tables: what a load stores instead of what it received.

With ``pii_at_rest = "hashed"`` the raw tables keep no plain e-mail or phone number. Every
load (file ingest, the collector's loader) replaces them, in the engine, by the keyed hash the
prepared tables use, after the same normalisation, so that identity stitching works on the
hashes and prepare takes them as they are:

.. math:: key(v) = HMAC_{pii\\_hash\\_key}(SHA256_{hex}(v))

``v``: the trimmed, lower-cased e-mail (``local@domain.tld``) or the E.164 number
(phonenumbers, ``settings.phone_region`` for numbers without a country code); a SHA-256 given
instead (``email_sha256``, or a digest found in the e-mail column) is keyed as it is. What
cannot be normalised is not kept (prepare would drop it as invalid anyway). The e-mail's domain
is kept apart (``events.email_domain``) when it is a business's (free-mail and ISP domains are
left out): business domains make accounts. JSON payloads
(``traits``, ``context``, ``properties``) lose their contact fields and anything else that
reads as an e-mail address.

``ip_at_rest`` (``keyed`` or ``dropped``) decides what ``events.ip`` keeps; ``truncated`` is
done by the mappers themselves (``ip_truncate``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import ibis
import ibis.expr.types as ir
import pyarrow as pa

from touchline import engine
from touchline.collect.dni import to_e164
from touchline.config import Settings
from touchline.store import (
    EMAIL_PATTERN,
    REMOVED,
    SHA256_HEX,
    is_free_mail_domain,
    keyed_contact,
    keyed_hash,
    sha256_digest,
)

if TYPE_CHECKING:
    from ibis.backends import BaseBackend

#: JSON fields emptied (set to null) in the raw tables' JSON columns when contacts are keyed
JSON_CONTACT_FIELDS = ("email", "phone", "email_sha256", "phone_sha256", "mobile",
                       "phone_number", "email_address")
#: the raw tables' JSON text columns
JSON_COLUMNS = {"events": ("properties", "traits", "context"), "deals": ("properties",),
                "calls": ("properties",), "reviews": (), "surveys": ()}
#: an e-mail address anywhere in a text (the whole address, for replacing it)
EMAIL_IN_TEXT = r"[A-Za-z0-9._%+'-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+"
_JSON_VALUE = r'\s*:\s*("([^"\\]|\\.)*"|[-+0-9.eE]+)'


def changes_rows(settings: Settings) -> bool:
    """Whether :func:`protect` changes anything under ``settings`` (loads skip it if not)."""
    return settings.pii_at_rest == "hashed" or settings.ip_at_rest != "truncated"


def protect(con: BaseBackend, table: str, rows: ir.Table, settings: Settings) -> ir.Table:
    """``rows``, about to be stored in raw table ``table``, as settings want them at rest.

    Unchanged with the defaults (``pii_at_rest = "plain"``, ``ip_at_rest = "truncated"``).
    """
    if table == "events" and settings.ip_at_rest != "truncated" and "ip" in rows.columns:
        rows = _protect_ip(con, rows, settings)
    if settings.pii_at_rest != "hashed" or table not in JSON_COLUMNS:
        return rows
    assert settings.pii_hash_key is not None
    key = settings.pii_hash_key.get_secret_value()
    region = settings.phone_region

    def keyed(digest: ir.StringValue) -> ir.StringValue:
        return engine.hmac_sha256(con, digest, key)

    changes: dict[str, ir.Value] = {}
    if table == "events":
        rows = _with_keyed_phone(con, rows, "phone", region, key)
        text = rows.email.strip().lower()
        rows = with_business_domain(rows, ibis.coalesce(
            rows.email_domain.strip().lower().nullif(""), email_domain(text)))
        changes.update(
            email=keyed(ibis.coalesce(email_digest(rows.email), sha256_digest(rows.email_sha256))),
            phone=ibis.coalesce(rows._e164_phone, keyed(ibis.coalesce(
                sha256_digest(rows.phone), sha256_digest(rows.phone_sha256)))),
            email_sha256=ibis.null("string"), phone_sha256=ibis.null("string"),
            email_domain=rows._business_domain)
    elif table == "reviews":
        rows = _with_keyed_phone(con, rows, "phone", region, key)
        changes.update(email=keyed(email_digest(rows.email)),
                       phone=ibis.coalesce(rows._e164_phone, keyed(sha256_digest(rows.phone))))
    elif table == "surveys":
        changes["email"] = keyed(email_digest(rows.email))
    elif table == "calls":
        rows = _with_keyed_phone(con, rows, "caller_number", region, key)
        changes["caller_number"] = ibis.coalesce(rows._e164_caller_number,
                                                 keyed(sha256_digest(rows.caller_number)))
    elif table == "deals":
        listed = rows.contact_emails.split(";").map(lambda v: keyed(email_digest(v)))
        changes["contact_emails"] = listed.join(";").nullif("")
    for column in JSON_COLUMNS[table]:
        changes[column] = without_contacts(rows[column])
    out = rows.mutate(**changes)
    return out.drop(*(c for c in out.columns
                      if c.startswith("_e164_") or c == "_business_domain"))


def email_digest(value: ir.StringValue) -> ir.StringValue:
    """SHA-256 (hex) of the trimmed, lower-cased e-mail when it is ``local@domain.tld``; a
    SHA-256 digest written in its place as it is (lower case); else null."""
    text = value.strip().lower()
    return ibis.cases((text.re_search(EMAIL_PATTERN), text.hexdigest("sha256")),
                      (text.re_search(SHA256_HEX), text), else_=ibis.null("string"))


def email_domain(normalised: ir.StringValue) -> ir.StringValue:
    """The domain of a trimmed, lower-cased e-mail, null unless it is ``local@domain.tld``."""
    return ibis.ifelse(normalised.re_search(EMAIL_PATTERN),
                       normalised.re_extract(r"@(.+)$", 1), ibis.null("string"))


def without_contacts(json_text: ir.StringValue) -> ir.StringValue:
    """JSON text with the values of :data:`JSON_CONTACT_FIELDS` (any depth, any case) set to
    null and any other e-mail address replaced by ``[removed]``.

    Text patterns rather than a JSON rewrite: both engines run them alike on any text, and a
    cell that is not valid JSON is cleaned too.
    """
    out = json_text
    for name in JSON_CONTACT_FIELDS:
        out = out.re_replace(f'(?i)"{name}"{_JSON_VALUE}', f'"{name}":null')
    return out.re_replace(EMAIL_IN_TEXT, REMOVED)


def with_business_domain(rows: ir.Table, domain: ir.StringValue) -> ir.Table:
    """``rows`` with ``_business_domain``: ``domain`` unless it is a free-mail or ISP domain
    (:func:`touchline.store.is_free_mail_domain`), which names no company and is left out.

    Checked in Python on the distinct domains only; the small lookup is joined on.
    """
    rows = rows.mutate(_domain=domain)
    found = rows.select("_domain").filter(ibis._._domain.notnull()).distinct()
    names = [d for d in found.to_pyarrow().column("_domain").to_pylist() if d is not None]
    business = [d for d in names if not is_free_mail_domain(d)]
    lookup = ibis.memtable(pa.table({"_business_domain": pa.array(business, pa.string())}))
    out = rows.left_join(lookup, rows._domain == lookup._business_domain)
    return out.drop("_domain")


def _with_keyed_phone(con: BaseBackend, rows: ir.Table, column: str, region: str,
                      key: str) -> ir.Table:
    """``rows`` with ``_e164_<column>``: the keyed hash of the number in E.164, or null when
    it is not a possible number.

    phonenumbers runs in Python, so only the distinct numbers leave the engine, and the small
    lookup that goes back in to be joined on holds keyed hashes only (of the number as
    written, to join on, and of its E.164 form, :func:`touchline.store.keyed_contact`, the
    twin of the engine's): no plain number is left on the connection.
    """
    numbers = rows.select(_n=rows[column]).filter(ibis._._n.notnull()).distinct()
    found = [n for n in numbers.to_pyarrow().column("_n").to_pylist() if n is not None]
    pairs = [(keyed_hash(n, key), to_e164(n, region)) for n in found]
    lookup = ibis.memtable(pa.table({
        "_e164_raw": pa.array([written for written, _ in pairs], pa.string()),
        f"_e164_{column}": pa.array([None if e164 is None else keyed_contact(e164, key)
                                     for _, e164 in pairs], pa.string())}))
    written = engine.hmac_sha256(con, rows[column], key)
    return rows.left_join(lookup, written == lookup._e164_raw).drop("_e164_raw")


def _protect_ip(con: BaseBackend, rows: ir.Table, settings: Settings) -> ir.Table:
    """``ip`` keyed (HMAC-SHA256 of the address as received) or dropped; ``context.ip`` out."""
    ip = rows.ip.strip().nullif("")
    if settings.ip_at_rest == "keyed":
        assert settings.pii_hash_key is not None
        ip = engine.hmac_sha256(con, ip, settings.pii_hash_key.get_secret_value())
    else:
        ip = ibis.null("string")
    changes: dict[str, ir.Value] = {"ip": ip}
    if "context" in rows.columns:
        changes["context"] = rows.context.re_replace(f'(?i)"ip"{_JSON_VALUE}', '"ip":null')
    return rows.mutate(**changes)
