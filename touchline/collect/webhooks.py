"""Webhooks from chat, form and CRM tools, turned into canonical rows by declarative mappings.

Each tool posts its own JSON shape; a mapping file (``webhook_mappings_file``, TOML) says per
source which payload field fills which canonical field, so adding a tool is configuration,
not code::

    [sources.livechat]
    kind = "event"                  # event (-> events), deal (-> deals) or call (-> calls)
    type = "track"
    event = "Chat Started"          # literal defaults for the Segment envelope
    [sources.livechat.fields]       # canonical field = dotted path in the payload
    messageId = "chat.id"
    anonymousId = "visitor.touchline_id"
    timestamp = "chat.started_at"
    "traits.email" = "visitor.email"
    "properties.chat_id" = "chat.id"

    [sources.hubspot]
    kind = "deal"
    [sources.hubspot.fields]
    deal_id = "objectId"
    stage = "properties.dealstage"
    amount = "properties.amount"

For ``event`` the keys are Segment fields (dotted for nested ones), so the result goes through
the same checks and mapping as ``/v1/track``. For ``deal`` and ``call`` they are columns of
``deals`` and ``calls``. A payload that is a JSON list is a batch of items.

Who may post: a webhook writes deals, calls and offline events, so the public write key that
t.js puts in every page must never open it. A source either names a signing secret
(``signing_secret_env = "HUBSPOT_WEBHOOK_SECRET"``, the environment variable that holds it), and
then every request must carry a valid signature (:func:`verify_signature`), or it takes a
``server`` (or ``admin``) key, which lives only on servers.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from touchline.collect.segment import Problem, repeated_keys, utc_timestamp_text
from touchline.errors import ConfigError
from touchline.signing import matches, parse_signature
from touchline.store import CALLS, DEAL_TIMES, DEALS, TableSpec

KINDS = ("event", "deal", "call")
SIGNATURE_HEADER = b"x-touchline-signature"
#: how far a signature's timestamp may lie from the collector's clock: an old request replayed
#: later is refused, a sender whose clock is a little off is not
SIGNATURE_TOLERANCE_SECONDS = 300
_SETTINGS_KEYS = ("kind", "fields", "signing_secret_env", "signature_tolerance_seconds")
_VALUE_SHOWN = 80  # characters of a bad value quoted in a reason, as file ingest does
_DECIMAL_COMMA = re.compile(r"-?[0-9]+,[0-9]+")
_TRUE, _FALSE = ("true", "t", "yes", "y", "1"), ("false", "f", "no", "n", "0")


class PayloadShapeError(ValueError):
    """A payload put a string or a list where the mapping needs an object to put a field in."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class SourceMapping:
    """How one webhook source's payload becomes a canonical row."""

    name: str
    kind: str
    fields: dict[str, str]
    defaults: dict[str, Any] = field(default_factory=dict)
    #: the source's shared secret: requests must then be signed (see :func:`verify_signature`)
    signing_secret: bytes | None = field(default=None, repr=False)
    signature_tolerance_seconds: int = SIGNATURE_TOLERANCE_SECONDS


def load_mappings(path: Path | None) -> dict[str, SourceMapping]:
    """Read the mapping file; an absent setting means no webhook sources."""
    if path is None:
        return {}
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read webhook mappings {path}: {exc}") from exc
    sources = data.get("sources", {})
    mappings = {}
    for name, spec in sources.items():
        kind = spec.get("kind", "event")
        if kind not in KINDS:
            raise ConfigError(f"{path}: sources.{name}.kind {kind!r} is not one of {KINDS}")
        fields = spec.get("fields", {})
        if not isinstance(fields, dict) or not all(isinstance(v, str) for v in fields.values()):
            raise ConfigError(f"{path}: sources.{name}.fields must map names to dotted paths")
        allowed = {"deal": DEALS, "call": CALLS}.get(kind)
        if allowed is not None:
            unknown = set(fields) - {c.name for c in allowed.columns}
            if unknown:
                raise ConfigError(
                    f"{path}: sources.{name}.fields has {sorted(unknown)}, not columns of "
                    f"{allowed.name}"
                )
        defaults = {k: v for k, v in spec.items() if k not in _SETTINGS_KEYS}
        secret: bytes | None = None
        if "signing_secret_env" in spec:
            variable = spec["signing_secret_env"]
            value = os.environ.get(variable) if isinstance(variable, str) else None
            if not value:
                raise ConfigError(
                    f"{path}: sources.{name}.signing_secret_env names {variable!r}, but that "
                    "environment variable is not set (it holds the source's signing secret)"
                )
            secret = value.encode()
        tolerance = spec.get("signature_tolerance_seconds", SIGNATURE_TOLERANCE_SECONDS)
        if not isinstance(tolerance, int) or tolerance <= 0:
            raise ConfigError(
                f"{path}: sources.{name}.signature_tolerance_seconds must be a positive integer"
            )
        mappings[name] = SourceMapping(name, kind, dict(fields), defaults, secret, tolerance)
    return mappings


def verify_signature(
    mapping: SourceMapping, header: bytes | None, body: bytes, now: float
) -> str | None:
    """Why the request's signature is not acceptable, or ``None`` when it is.

    The comparison is constant-time (``hmac.compare_digest``), so response times reveal nothing
    of the expected digest.
    """
    assert mapping.signing_secret is not None
    if header is None:
        return f"source {mapping.name!r} requires a signed request (X-Touchline-Signature)"
    parsed = parse_signature(header.decode(errors="replace"))
    if parsed is None:
        return "X-Touchline-Signature must be t=<unix seconds>,v1=<hex HMAC-SHA256>"
    timestamp, given = parsed
    if abs(now - timestamp) > mapping.signature_tolerance_seconds:
        return (
            f"the signature's timestamp is more than {mapping.signature_tolerance_seconds} s "
            "from the collector's clock (a replay, or the sender's clock is wrong)"
        )
    if not matches(mapping.signing_secret, body, timestamp, given):
        return "the signature does not match the body and the source's secret"
    return None


def _get(payload: Any, path: str) -> Any:
    value = payload
    for part in path.split("."):
        if isinstance(value, dict):
            value = value.get(part)
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    return value


def _put(target: dict[str, Any], path: str, value: Any) -> None:
    parts = path.split(".")
    for depth, part in enumerate(parts[:-1], start=1):
        target = target.setdefault(part, {})
        if not isinstance(target, dict):
            parent = ".".join(parts[:depth])
            raise PayloadShapeError(
                parent,
                f"{parent} is a {type(target).__name__} in this payload, but the mapping puts "
                f"{path} inside it, so it must be an object",
            )
    target[parts[-1]] = value


def map_payload(mapping: SourceMapping, item: Any) -> dict[str, Any]:
    """One payload item → a Segment message (``event``) or a ``deals``/``calls`` row.

    Raises :class:`PayloadShapeError` when the payload's shape cannot hold what the mapping
    puts in it (a field mapped into ``properties`` when ``properties`` came as a string).
    """
    out: dict[str, Any] = {}
    if mapping.kind == "event":
        for key, value in mapping.defaults.items():
            _put(out, key, value)
    for target, source_path in mapping.fields.items():
        value = _get(item, source_path)
        if value is not None:
            if mapping.kind == "event":
                _put(out, target, value)
            else:
                out[target] = value
    if mapping.kind == "event":
        if "messageId" not in out:
            digest = hashlib.sha256(orjson.dumps(item, option=orjson.OPT_SORT_KEYS)).hexdigest()
            out["messageId"] = f"{mapping.name}:{digest[:32]}"
    elif mapping.kind == "deal":
        digest = hashlib.sha256(orjson.dumps(out, option=orjson.OPT_SORT_KEYS)).hexdigest()
        out["row_hash"] = digest
    return out


def repeated_mapped_key(mapping: SourceMapping, item: Any) -> Problem | None:
    """``duplicate_key`` when an object on the way to a field the mapping reads holds that key
    twice (``{"objectId": "A", "objectId": "B"}``), ``item`` decoded by
    :func:`touchline.collect.segment.decode_marking_repeats`.

    Why: the JSON reader keeps the last copy silently, so which deal id or amount was meant is
    unknown; the one rule of every path (door, loader, file ingest) is to refuse the record.
    Keys the mapping never reads may repeat: they are payload touchline does not store.
    """
    for source_path in mapping.fields.values():
        node, parts = item, source_path.split(".")
        for depth, part in enumerate(parts, start=1):
            if part in repeated_keys(node):
                where = ".".join(parts[:depth])
                return Problem("duplicate_key", where,
                               f"{where} appears twice in one object: which copy is meant is "
                               "unknown")
            node = _get(node, part)
    return None


def check_row(spec: TableSpec, row: dict[str, Any]) -> tuple[dict[str, Any], Problem | None]:
    """A mapped ``deals``/``calls`` row typed as file ingest types it, or its first problem.

    Why: a webhook row must meet the rules a file row meets (the same reason codes, the same
    accepted forms: ISO 8601 or epoch timestamps, numbers with a decimal point or comma, yes/no
    booleans), else a CRM could store a deal without an id or worth ``"lots"``. Values come
    back as text the loader casts exactly; timestamps in UTC without a zone.
    """
    typed: dict[str, Any] = {}
    for column in spec.columns:
        value = row.get(column.name)
        if isinstance(value, str):
            value = value.strip() or None
        if value is None:
            typed[column.name] = None
            continue
        if isinstance(value, dict | list):
            return row, Problem(
                "bad_shape", column.name,
                f"field {column.name}: a JSON {type(value).__name__} where a value is expected",
            )
        text, code, expected = _typed_text(column.dtype, value)
        if text is None:
            shown = str(value)[:_VALUE_SHOWN]
            return row, Problem(code, column.name,
                                f"field {column.name}: {shown!r} is not {expected}")
        typed[column.name] = text
    for name in spec.required:
        if typed.get(name) is None:
            return row, Problem(
                f"missing_{name}", name, f"required field {name} is missing or empty"
            )
    if spec is DEALS and all(typed.get(t) is None for t in DEAL_TIMES):
        return row, Problem(
            "missing_deal_time", "created_at",
            f"a deal needs a time: one of {', '.join(DEAL_TIMES)}",
        )
    return typed, None


def _typed_text(dtype: Any, value: Any) -> tuple[str | None, str, str]:
    """``value`` as the loader's text for ``dtype`` (``None`` if it is not one), the reason
    code and what was expected, in file ingest's words."""
    if dtype.is_timestamp():
        return (utc_timestamp_text(value), "bad_timestamp",
                "an ISO 8601 timestamp, epoch seconds or epoch milliseconds")
    if dtype.is_floating():
        number = _number(value)
        return (None if number is None else repr(number)), "bad_number", "a number"
    if dtype.is_integer():
        number = _number(value)
        whole = number is not None and number == round(number) and abs(number) < 9e15
        text = str(int(number)) if whole and number is not None else None
        return text, "bad_integer", "a whole number"
    if dtype.is_boolean():
        word = str(value).lower() if not isinstance(value, float) else ""
        flag = True if word in _TRUE else False if word in _FALSE else None
        text = None if flag is None else str(flag).lower()
        return text, "bad_boolean", "true/false, yes/no or 1/0"
    return (str(value).lower() if isinstance(value, bool) else str(value)), "", ""


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        number = float(value)
    else:
        text = str(value)
        if _DECIMAL_COMMA.fullmatch(text):
            text = text.replace(",", ".")
        try:
            number = float(text)
        except ValueError:
            return None
    return number if math.isfinite(number) else None
