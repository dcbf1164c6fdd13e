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
reads as an e-mail address; so do the page's ``url``, ``path``, ``referrer`` and ``title``
(``john%40acme.com`` too). Phone numbers in those texts go as well (:func:`without_phones`:
phonenumbers' matcher, URL parameters split by ``urllib.parse``). Both are removed, not keyed:
nothing stitches on them, and a URL keeps its structure, so UTMs, click ids and channels
read from it are those of the URL as received.

``ip_at_rest`` (``keyed`` or ``dropped``) decides what ``events.ip`` keeps; ``truncated`` is
done by the mappers themselves (``ip_truncate``).
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable
from typing import TYPE_CHECKING

import ibis
import ibis.expr.types as ir
import orjson
import phonenumbers
import pyarrow as pa

from touchline import engine
from touchline.collect.dni import to_e164
from touchline.config import Settings
from touchline.store import (
    CLICK_IDS,
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
#: an e-mail address anywhere in a text (the whole address, for replacing it), its ``@``
#: also percent-encoded (``john%40acme.com`` in a URL; ``%2B``: an encoded ``+`` in the local
#: part). No other ``%`` in the local part: ``email%3Djohn%40…`` keeps its ``email%3D``
EMAIL_IN_TEXT = r"(?i)([A-Za-z0-9._+'-]|%2B)+(@|%40)[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+"
#: raw ``events`` columns of free text besides the JSON ones: URLs and the page title
TEXT_COLUMNS = {"events": ("url", "path", "referrer", "title")}
#: query parameters whose value is a person's contact whatever it looks like (compared lower
#: case, ``-`` as ``_``)
URL_CONTACT_PARAMETERS = frozenset({
    "email", "e_mail", "mail", "email_address", "phone", "phone_number", "phonenumber", "tel",
    "telephone", "mobile", "cell", "whatsapp", "sms",
})
#: may hold a phone number: seven digits or more, up to three separators (`` ().+/-``, a
#: percent-encoded character) between two (a candidate only: phonenumbers decides)
PHONE_CANDIDATE = r"[0-9](([ ().+/-]|%[0-9A-Fa-f]{2}){0,3}[0-9]){6,}"
_CONTACT_PARAMETER = (r"(?i)[?&#;](" + "|".join(sorted(URL_CONTACT_PARAMETERS))
                      .replace("_", "[_-]") + ")=[^&#]")
_JSON_VALUE = r'\s*:\s*("([^"\\]|\\.)*"|[-+0-9.eE]+)'


def changes_rows(settings: Settings) -> bool:
    """Whether :func:`protect` changes anything under ``settings`` (loads skip it if not)."""
    return settings.pii_at_rest == "hashed" or settings.ip_at_rest != "truncated"


def protect(con: BaseBackend, table: str, rows: ir.Table, settings: Settings, *,
            keep_keyed: bool = False) -> ir.Table:
    """``rows``, about to be stored in raw table ``table``, as settings want them at rest.

    Unchanged with the defaults (``pii_at_rest = "plain"``, ``ip_at_rest = "truncated"``).
    ``keep_keyed``: the rows are stored ones being rewritten (``touchline privacy rehash``): a
    contact that is already 64 hex digits is the keyed hash an earlier load stored and stays
    as it is (as prepare reads it in this mode), and ``ip`` stays as its load left it.
    """
    if (table == "events" and settings.ip_at_rest != "truncated" and "ip" in rows.columns
            and not keep_keyed):
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
        listed = rows.contact_emails.split(";").map(
            lambda v: _kept(v, keyed(email_digest(v))) if keep_keyed else keyed(email_digest(v)))
        changes["contact_emails"] = listed.join(";").nullif("")
    if keep_keyed:
        changes.update({c: _kept(rows[c], v) for c, v in changes.items()
                        if c in ("email", "phone", "caller_number")})
    for column in JSON_COLUMNS[table]:
        changes[column] = without_contacts(rows[column])
    for column in TEXT_COLUMNS.get(table, ()):
        # percent-encoded in a URL: it decodes to "[removed]", and the URL stays one
        marker = REMOVED if column == "title" else urllib.parse.quote(REMOVED)
        changes[column] = rows[column].re_replace(EMAIL_IN_TEXT, marker)
    out = rows.mutate(**changes)
    out = out.drop(*(c for c in out.columns
                     if c.startswith("_e164_") or c == "_business_domain"))
    free_text = (*JSON_COLUMNS[table], *TEXT_COLUMNS.get(table, ()))
    return _without_phones_in_text(con, out, free_text, region, key)


def _kept(stored: ir.StringValue, new: ir.StringValue) -> ir.StringValue:
    """``stored`` when it is already a keyed hash (64 hex digits), else ``new``."""
    return ibis.ifelse(stored.strip().lower().re_search(SHA256_HEX).fill_null(False),
                       stored, new)


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


def _without_phones_in_text(con: BaseBackend, rows: ir.Table, columns: tuple[str, ...],
                            region: str, key: str) -> ir.Table:
    """``rows`` with the phone numbers in free text ``columns`` replaced by ``[removed]``
    (:func:`without_phones`).

    phonenumbers runs in Python, as for the phone columns (:func:`_with_keyed_phone`): only
    the distinct texts the engine finds a candidate in (:data:`PHONE_CANDIDATE`, or a
    contact parameter in a URL) leave it.
    """
    for column in columns:
        text = rows[column]
        rows = rewrite_text(con, rows, column,
                            text.re_search(PHONE_CANDIDATE) | text.re_search(_CONTACT_PARAMETER),
                            lambda t: without_phones(t, region), key)
    return rows


def rewrite_text(con: BaseBackend, rows: ir.Table, column: str,
                 candidate: ir.BooleanValue, rewrite: Callable[[str], str | None],
                 key: str) -> ir.Table:
    """``rows`` with text ``column`` replaced by ``rewrite`` of it where ``candidate``.

    For what only Python libraries can do (phonenumbers): the distinct candidate texts leave
    the engine, and the lookup that goes back to be joined on holds the keyed hash of each
    text that changed and its new form, never the text itself.
    """
    text = rows[column]
    found = rows.filter(candidate.fill_null(False)).select(_t=text).distinct()
    texts = [t for t in found.to_pyarrow().column("_t").to_pylist() if t is not None]
    cleaned = [(keyed_hash(t, key), rewrite(t)) for t in texts]
    changed = [(k, new) for (k, new), old in zip(cleaned, texts, strict=True) if new != old]
    if not changed:
        return rows
    lookup = ibis.memtable(pa.table({
        "_text_key": pa.array([k for k, _ in changed], pa.string()),
        "_text_new": pa.array([new for _, new in changed], pa.string()),
        "_text_hit": pa.array([True] * len(changed), pa.bool_())}))
    written = ibis.ifelse(candidate.fill_null(False), engine.hmac_sha256(con, text, key),
                          ibis.null("string"))
    joined = rows.left_join(lookup, written == lookup._text_key)
    new_text = ibis.ifelse(joined._text_hit.fill_null(False), joined._text_new, joined[column])
    return joined.mutate(**{column: new_text}).drop("_text_key", "_text_new", "_text_hit")


def without_phones(text: str, region: str) -> str:
    """``text`` with the phone numbers in it replaced by ``[removed]``.

    * JSON (an object or array): in each string value, recursively; a value under an id's
      name (``*id``, ``*_ids``: order and CRM ids, click ids) or a UTM is left alone, a URL is
      read as below; the text is written back compact (orjson) when something changed;
    * a URL (``?`` or ``#`` in it): each query (and fragment) parameter, split by
      ``urllib.parse``, whose name is a contact's (:data:`URL_CONTACT_PARAMETERS`) or whose
      decoded value holds a valid number has its value replaced; UTMs and click ids never;
    * other text: each number phonenumbers' matcher finds.

    ``Leniency.VALID`` (a number valid for its region, ``region`` for numbers without a
    country code): ISO dates, times, prices and short ids are not numbers to it.
    """
    stripped = text.lstrip()
    if stripped[:1] in ("{", "["):
        try:
            parsed = orjson.loads(text)
        except orjson.JSONDecodeError:
            return _without_numbers(text, region)
        cleaned = _without_phones_in_json(parsed, None, region)
        return text if cleaned == parsed else orjson.dumps(cleaned).decode()
    if "?" in text or "#" in text:
        return _without_phones_in_url(text, region)
    return _without_numbers(text, region)


def _is_id_name(name: str) -> bool:
    lowered = name.lower().replace("-", "_")
    return (lowered.endswith(("id", "_ids")) or lowered.startswith("utm_")
            or lowered in CLICK_IDS or lowered == "tracking_number")


def _without_phones_in_json(value: object, name: str | None, region: str) -> object:
    if isinstance(value, dict):
        return {k: _without_phones_in_json(v, str(k), region) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_phones_in_json(v, name, region) for v in value]
    if isinstance(value, str) and not (name is not None and _is_id_name(name)):
        if "?" in value or "#" in value:
            return _without_phones_in_url(value, region)
        return _without_numbers(value, region)
    return value


def _without_phones_in_url(url: str, region: str) -> str:
    parts = urllib.parse.urlsplit(url)
    query, fragment = _without_phones_in_query(parts.query, region), parts.fragment
    if "=" in fragment:
        fragment = _without_phones_in_query(fragment, region)
    if (query, fragment) == (parts.query, parts.fragment):
        return url
    return urllib.parse.urlunsplit(parts._replace(query=query, fragment=fragment))


def _without_phones_in_query(query: str, region: str) -> str:
    """Each ``name=value`` of ``query`` as written (its encoding kept), but a contact's."""
    pieces = []
    for piece in query.split("&"):
        name, equals, value = piece.partition("=")
        plain_name = urllib.parse.unquote_plus(name).strip().lower().replace("-", "_")
        if value and not _is_id_name(plain_name) and (
                plain_name in URL_CONTACT_PARAMETERS
                # a literal "+" is a space in a query, but people write "+44…" unencoded
                or any(_without_numbers(v, region) != v for v in
                       {urllib.parse.unquote(value), urllib.parse.unquote_plus(value)})):
            piece = f"{name}{equals}{urllib.parse.quote(REMOVED)}"
        pieces.append(piece)
    return "&".join(pieces)


def _without_numbers(text: str, region: str) -> str:
    found = phonenumbers.PhoneNumberMatcher(text, region, leniency=phonenumbers.Leniency.VALID)
    for match in reversed(list(found)):
        text = text[:match.start] + REMOVED + text[match.end:]
    return text


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
