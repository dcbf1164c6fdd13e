"""Normalise and SHA-256 hash the personal data an upload carries, as each platform specifies.

Ad platforms match an uploaded conversion to their users by comparing hashes, so a hash is only
useful when both sides normalised the value the same way before hashing it; a stray capital or
a missing country code gives a different digest and a lost match. Each platform documents its
own rules, and they differ:

Google (Data Manager API "Format user data", developers.google.com/data-manager/api/devguides/
concepts/formatting; the same rules for enhanced conversions for leads): e-mail lower-cased,
every whitespace removed; for ``gmail.com`` and ``googlemail.com`` the dots before the ``@``
are removed and a ``+`` with what follows it too (``cloudy.sanfrancisco+shopping@gmail.com`` →
``cloudysanfrancisco@gmail.com``), other domains keep both (``user.name+NYC@Example.com`` →
``user.name+nyc@example.com``); phone in E.164 with the ``+`` (``(800)555-0100`` →
``+18005550100``). Digest: SHA-256, hex.

Meta (Conversions API "Customer Information Parameters", developers.facebook.com/docs/
marketing-api/conversions-api/parameters/customer-information-parameters): ``em`` trimmed and
lower-cased; ``ph`` digits only, with the country code and without ``+`` or leading zeros
(``+44 844 412 4653`` → ``448444124653``); ``fn``/``ln`` lower-cased without punctuation;
``ct`` lower-cased without spaces or punctuation; ``zp`` lower-cased without spaces or dashes
(US: the first 5 digits); ``country`` ISO 3166-1 alpha-2, lower case; ``external_id`` trimmed
(hashing recommended). ``fbc``/``fbp`` are never hashed.

Microsoft Advertising (OfflineConversion ``HashedEmailAddress`` / ``HashedPhoneNumber``):
SHA-256 of the trimmed, lower-cased e-mail and of the E.164 number.

Worked example (Meta's rules; the digest published for them in Snap's Conversions API
parameters page, which uses the same normalisation):

>>> meta_email(" Person@Example.com ")
'person@example.com'
>>> sha256_hex(meta_email(" Person@Example.com "))
'542d240129883c019e106e3b1b2d3f3cb3537c43c425364de8e951d5a3083345'
>>> google_email("cloudy.sanfrancisco+shopping@gmail.com")
'cloudysanfrancisco@gmail.com'
"""

from __future__ import annotations

import functools
import hashlib
import re
import unicodedata

#: a SHA-256 digest in hex, as every platform takes it
SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
#: the mailbox providers whose local part Google normalises further
GOOGLE_MAIL_DOMAINS = ("gmail.com", "googlemail.com")


def sha256_hex(text: str) -> str:
    """SHA-256 of ``text`` (UTF-8), lower-case hex: the digest every platform compares."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def is_sha256(value: object) -> bool:
    """Whether ``value`` is already a SHA-256 digest in hex (upper case accepted)."""
    return isinstance(value, str) and bool(SHA256_HEX.match(value.strip().lower()))


def google_email(email: str | None) -> str | None:
    """``email`` as Google hashes it (see the module docstring); ``None`` for no address."""
    if email is None:
        return None
    text = re.sub(r"\s+", "", email).lower()
    if "@" not in text:
        return None
    local, _, domain = text.rpartition("@")
    if domain in GOOGLE_MAIL_DOMAINS:
        local = local.split("+", 1)[0].replace(".", "")
    return f"{local}@{domain}" if local and domain else None


@functools.lru_cache(maxsize=4096)
def e164(phone: str | None, region: str = "US") -> str | None:
    """``phone`` in E.164 (``+12025550143``), ``region`` for numbers without a country code;
    ``None`` when it is not a possible number (parsed by the maintained ``phonenumbers``)."""
    if phone is None or not phone.strip():
        return None
    import phonenumbers

    try:
        number = phonenumbers.parse(phone, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(number):
        return None
    return str(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))


def google_phone(phone: str | None, region: str = "US") -> str | None:
    """``phone`` as Google hashes it: E.164 with the ``+``."""
    return e164(phone, region)


def meta_email(email: str | None) -> str | None:
    """``email`` as Meta hashes it: trimmed, lower case."""
    if email is None or "@" not in email:
        return None
    return email.strip().lower() or None


def meta_phone(phone: str | None, region: str = "US") -> str | None:
    """``phone`` as Meta hashes it: the E.164 digits without the ``+``."""
    number = e164(phone, region)
    return number[1:] if number else None


def _letters(text: str | None, *, keep: str = "") -> str | None:
    """Lower case, accents kept (UTF-8, as Meta asks), punctuation and spaces removed."""
    if text is None:
        return None
    folded = unicodedata.normalize("NFC", text).strip().lower()
    out = "".join(ch for ch in folded if ch.isalnum() or ch in keep)
    return out or None


def meta_name(name: str | None) -> str | None:
    """``fn``/``ln`` as Meta hashes them: lower case, no punctuation."""
    return _letters(name)


def meta_city(city: str | None) -> str | None:
    """``ct`` as Meta hashes it: lower case, no spaces or punctuation."""
    return _letters(city)


def meta_zip(zip_code: str | None, country: str | None = None) -> str | None:
    """``zp`` as Meta hashes it: lower case, no spaces or dashes; a US code's first 5 digits."""
    code = _letters(zip_code)
    if code and (country or "").strip().lower() == "us":
        code = code[:5]
    return code


def meta_country(country: str | None) -> str | None:
    """``country`` as Meta hashes it: ISO 3166-1 alpha-2, lower case; a name or alpha-3 code is
    looked up in the maintained ``pycountry`` list, anything else gives ``None``."""
    if country is None or not country.strip():
        return None
    import pycountry

    try:
        found = pycountry.countries.lookup(country.strip())
    except LookupError:
        return None
    return str(found.alpha_2).lower()


def hashed(value: str | None) -> str | None:
    """SHA-256 hex of an already normalised ``value``; a value that is already a digest passes
    through (lower-cased), as an export from a source that only kept hashes gives them."""
    if value is None:
        return None
    if is_sha256(value):
        return value.strip().lower()
    return sha256_hex(value)
