"""The Segment wire contract: checking one message, and mapping messages to ``events``.

Two halves, used at two different times:

* :func:`check_message` runs in the collector's request path, once per message. It is plain
  Python over the decoded dict (no pydantic: the hot path must stay near a raw appender) and
  says *why* a message is refused, with the stable reason codes of ``rejects``.
* :func:`map_segment` turns raw Segment JSON lines into rows of the canonical ``events`` table
  (and ``rejects``). It is vectorised: the JSON is taken apart by DuckDB's JSON functions on an
  Arrow table, never in a Python loop over rows, so the loader and the NDJSON file ingest share
  it and both keep up with the collector.

The mapping follows the Segment spec: page fields from ``context.page`` (or ``properties`` for
``page`` calls), campaign fields from ``context.campaign`` (``name`` is ``utm_campaign``) or else
the page URL's query string, click ids from the URL, e-mail and phone from the traits, and
``revenue``/``currency`` from the properties.
"""

from __future__ import annotations

import itertools
import json
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

import duckdb
import msgspec
import pyarrow as pa
import pyarrow.compute as pc

from touchline.store import CLICK_IDS, EVENTS, RejectRecord, reject_rows, truncate_ip

MESSAGE_TYPES = frozenset({"track", "page", "screen", "identify", "alias", "group"})
MAX_EVENT_BYTES = 32 * 1024
MAX_BATCH_BYTES = 500 * 1024
#: deepest nesting of objects and lists a body may have: real Segment messages use four or
#: five levels, and every JSON reader and writer on the way recurses per level
MAX_JSON_DEPTH = 64
_NOT_STRUCTURE = bytes(b for b in range(256) if b not in b'"[]{}')
_SQUARE = bytes.maketrans(b"{}", b"[]")
#: the ISO 8601 times every path accepts (collector door, loader, file ingest): a calendar
#: date, optionally a time to the minute, or to the second or fraction (up to nanoseconds)
#: with an optional zone under 24 hours (the warehouse reads no zone after a time without
#: seconds, and reads offsets Python refuses)
ISO_TIMESTAMP = (
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}(?:[T ](?:[01][0-9]|2[0-3]):[0-5][0-9]"
    r"(?::[0-5][0-9](?:\.[0-9]{1,9})?(?:Z|[+-](?:[01][0-9]|2[0-3])(?::?[0-5][0-9])?)?)?)?"
)
_ISO_TIMESTAMP = re.compile(ISO_TIMESTAMP)
_BRACKET_STEP = {ord("["): 1, ord("]"): -1}
UTM_FIELDS = ("source", "medium", "campaign", "term", "content", "id")
# context.campaign uses Segment's names; `name` is what the URL calls utm_campaign
_CAMPAIGN_KEYS = {"campaign": "name"}


@dataclass(frozen=True)
class Problem:
    """Why a message was refused: a stable code, the field, and a sentence for humans."""

    code: str
    field: str | None
    message: str


def _is_id(value: Any) -> bool:
    return isinstance(value, str) and value != ""


_TIMESTAMP_FIELDS = ("timestamp", "originalTimestamp", "sentAt")
_OBJECT_FIELDS = ("properties", "traits", "context", "integrations")


#: where a message names its person other than by anonymousId/userId, in order of preference:
#: the loader's SQL, the file ingest (``ingest.SEGMENT_PATHS``) and the webhook check read these
PERSON_PATHS: dict[str, tuple[str, ...]] = {
    "email": ("$.traits.email", "$.context.traits.email", "$.properties.email"),
    "phone": ("$.traits.phone", "$.context.traits.phone", "$.properties.phone"),
    # SHA-256 hex of the e-mail / E.164 phone, as ad platforms and privacy-minded exports send
    "email_sha256": ("$.traits.email_sha256", "$.context.traits.email_sha256",
                     "$.properties.email_sha256"),
    "phone_sha256": ("$.traits.phone_sha256", "$.context.traits.phone_sha256",
                     "$.properties.phone_sha256"),
    "contact_id": ("$.traits.crm_contact_id", "$.context.traits.crm_contact_id",
                   "$.properties.crm_contact_id"),
}


def _has_offline_id(message: dict[str, Any]) -> bool:
    """Whether ``message`` names its person at one of :data:`PERSON_PATHS` (an offline
    record: a webhook from a CRM, forms or chat tool may have no anonymousId or userId)."""
    for path in (p for paths in PERSON_PATHS.values() for p in paths):
        node: Any = message
        for part in path.removeprefix("$.").split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if _is_id(node):
            return True
    return False


def check_message(
    message: Any, *, expected_type: str | None = None, keep_received_at: bool = False,
    offline_ids: bool = False,
) -> Problem | None:
    """Return the first problem that makes ``message`` unusable, or ``None`` if it is fine.

    ``expected_type`` is the type implied by the endpoint (``/v1/track``); in a batch each
    message names its own. Only what would make the row meaningless is checked: extra fields
    are Segment's business and pass through untouched. Runs per message in the request path,
    so the common valid case takes a short path and only a failure looks for the reason.
    ``keep_received_at`` (an import key's message) also checks ``receivedAt``, which the
    collector then keeps instead of stamping its own clock. ``offline_ids`` (webhooks from
    offline systems) accepts a message without anonymousId and userId when its traits or
    properties carry an e-mail, phone or ``crm_contact_id``: prepare files it under that.
    """
    if (offline_ids and message.__class__ is dict and not _is_id(message.get("anonymousId"))
            and not _is_id(message.get("userId")) and _has_offline_id(message)):
        # every other check as usual; the placeholder is not stored
        message = {**message, "anonymousId": "-"}
    if (
        message.__class__ is dict
        and _looks_valid(message, expected_type or message.get("type"))
        and not (keep_received_at and _bad_received_at(message))
    ):
        return None
    problem = _first_problem(message, expected_type)
    if problem is None and keep_received_at and _bad_received_at(message):
        value = message.get("receivedAt")
        return Problem(
            "bad_timestamp", "receivedAt", f"receivedAt {value!r} is not an ISO 8601 time"
        )
    return problem


def _bad_received_at(message: dict[str, Any]) -> bool:
    value = message.get("receivedAt")
    return value is not None and not _is_timestamp(value)


def _looks_valid(message: dict[str, Any], kind: Any) -> bool:
    get = message.get
    user_id, anonymous_id, message_id = get("userId"), get("anonymousId"), get("messageId")
    if not (
        (kind == "track" and get("event").__class__ is str and get("event"))
        or kind in ("page", "screen", "identify")
    ):
        return False
    if not (
        (user_id is None or user_id.__class__ is str)
        and (anonymous_id is None or anonymous_id.__class__ is str)
        and (user_id or anonymous_id)
        and (message_id is None or (message_id.__class__ is str and message_id))
    ):
        return False
    for name in _OBJECT_FIELDS:
        value = get(name)
        if value is not None and value.__class__ is not dict:
            return False
    for name in _TIMESTAMP_FIELDS:
        value = get(name)
        if value is not None and not _is_timestamp(value):
            return False
    return True


def _first_problem(message: Any, expected_type: str | None) -> Problem | None:
    if not isinstance(message, dict):
        return Problem("not_an_object", None, "a message must be a JSON object")
    kind = expected_type or message.get("type")
    if not isinstance(kind, str) or kind not in MESSAGE_TYPES:  # a list or object is no type
        return Problem(
            "bad_type", "type", f"type {kind!r} is not one of {', '.join(sorted(MESSAGE_TYPES))}"
        )
    user_id, anonymous_id = message.get("userId"), message.get("anonymousId")
    for name, value in (("userId", user_id), ("anonymousId", anonymous_id)):
        if value is not None and not isinstance(value, str):
            return Problem("bad_id", name, f"{name} must be a string, got {type(value).__name__}")
    if not _is_id(user_id) and not _is_id(anonymous_id):
        return Problem("missing_id", "anonymousId", "either anonymousId or userId is required")
    if kind == "track" and not _is_id(message.get("event")):
        return Problem("missing_event", "event", "a track call needs an event name (string)")
    if kind == "alias" and not _is_id(message.get("previousId")):
        return Problem("missing_previous_id", "previousId", "an alias call needs previousId")
    if kind == "group" and not _is_id(message.get("groupId")):
        return Problem("missing_group_id", "groupId", "a group call needs groupId")
    message_id = message.get("messageId")
    if message_id is not None and not _is_id(message_id):
        return Problem("bad_message_id", "messageId", "messageId must be a non-empty string")
    for name in ("timestamp", "originalTimestamp", "sentAt"):
        value = message.get(name)
        if value is not None and not _is_timestamp(value):
            return Problem("bad_timestamp", name, f"{name} {value!r} is not an ISO 8601 time")
    for name in ("properties", "traits", "context", "integrations"):
        value = message.get(name)
        if value is not None and not isinstance(value, dict):
            return Problem("bad_field", name, f"{name} must be a JSON object")
    return None


class _AnyObject(msgspec.Struct, gc=False):
    """Any JSON object: checked to be one, its members skipped, not built (the fast path
    only needs to know that ``properties`` and the like are objects)."""


#: a non-empty string, checked in C
_Id = Annotated[str, msgspec.Meta(min_length=1)]


class _FastMessage(msgspec.Struct, tag_field="type", gc=False):
    """The common message shapes, validated in C; anything else takes the detailed path.

    A tagged union on ``type`` (:class:`_FastTrack` needs a non-empty ``event``) and
    ``min_length`` on ``messageId`` leave only "anonymousId or userId" and the times to
    Python. ``gc=False``: a batch builds a hundred of these, and objects the cyclic
    collector tracks make it run every few requests (they hold only strings).
    """

    anonymousId: str | None = None
    userId: str | None = None
    event: str | None = None
    messageId: _Id | None = None
    timestamp: str | None = None
    originalTimestamp: str | None = None
    sentAt: str | None = None
    receivedAt: str | None = None  # kept only from an import key; checked for everyone
    properties: _AnyObject | None = None
    traits: _AnyObject | None = None
    context: _AnyObject | None = None
    integrations: _AnyObject | None = None


class _FastTrack(_FastMessage, tag="track", kw_only=True):
    event: _Id


class _FastPage(_FastMessage, tag="page"):
    pass


class _FastScreen(_FastMessage, tag="screen"):
    pass


class _FastIdentify(_FastMessage, tag="identify"):
    pass


class _FastBatch(msgspec.Struct, gc=False):
    batch: list[_FastTrack | _FastPage | _FastScreen | _FastIdentify]
    context: _AnyObject | None = None
    integrations: _AnyObject | None = None
    sentAt: str | None = None
    writeKey: str | None = None


_FAST_DECODER = msgspec.json.Decoder(_FastBatch)


@dataclass(frozen=True)
class FastBatch:
    """A batch body every message of which passes :func:`check_message` as it stands."""

    count: int
    write_key: str | None


def fast_batch(body: bytes) -> FastBatch | None:
    """Validate a whole ``/v1/batch`` body without building Python dicts, or return ``None``.

    Why: per-message Python work bounds a worker at ~150k messages/s, while a raw durable
    appender does ~300k+. The body is then spooled as it came (stamped in the loader, in
    DuckDB). ``None`` means "use the detailed path": some message is invalid or unusual
    (alias, group, extra checks), which that path handles and explains. The decoder checks
    types, ``event`` and ``messageId`` in C; the loop only asks for an id and, when a message
    carries times, checks them.
    """
    try:
        decoded = _FAST_DECODER.decode(body)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None
    for m in decoded.batch:
        if not (m.anonymousId or m.userId):
            return None
        if (
            m.timestamp is not None or m.originalTimestamp is not None
            or m.sentAt is not None or m.receivedAt is not None
        ) and not all(
            _is_timestamp(value)
            for value in (m.timestamp, m.originalTimestamp, m.sentAt, m.receivedAt)
            if value is not None
        ):
            return None
    if decoded.sentAt is not None and not _is_timestamp(decoded.sentAt):
        return None
    return FastBatch(len(decoded.batch), decoded.writeKey)


def json_depth(body: bytes, *, stop_above: int = MAX_JSON_DEPTH) -> int:
    """How deeply the JSON text ``body`` nests objects and lists, counted without parsing it:
    exact up to ``stop_above``, and some number above it for anything deeper.

    Why not parse and then measure: parsing is the recursive work a hostile body attacks
    (``[[[[...`` a thousand deep ends in a RecursionError in a reader or a writer). This works
    on whole byte strings at C speed: escape pairs are dropped (``\\\\`` first, so
    ``\\\\"`` keeps its quote), everything but quotes and brackets is deleted, the text
    between quotes (string contents, whose brackets do not nest) is cut out, ``{}`` become
    ``[]``, and each pass deletes every innermost ``[]``, one level. Text that stops shrinking
    is unbalanced (the parser refuses it afterwards); its depth is then the highest running
    count of open brackets.

    Cutting out strings: two adjacent quotes (an empty string once the rest is deleted, or
    one string's end and the next one's start with nothing structural between) go first, in
    one ``replace`` that keeps quotes paired; only strings holding brackets are left to split
    out, so a batch of a hundred messages does not become a list of thousands of pieces.
    Usually no string holds a bracket, and then every quote sits in such a pair (twice the
    pairs counted from the left is the number of quotes: the first quote pairs only with the
    next one, and so on), so one ``translate`` drops them all, sparing the ``replace``.
    """
    unescaped = body.replace(b"\\\\", b"").replace(b'\\"', b"") if b"\\" in body else body
    structure = unescaped.translate(None, delete=_NOT_STRUCTURE)
    quotes = structure.count(b'"')
    if structure.count(b'""') * 2 == quotes:  # no string holds a bracket: drop every quote
        brackets = structure.translate(_SQUARE, delete=b'"')
    else:
        structure = structure.replace(b'""', b"")
        structure = b"".join(structure.split(b'"')[0::2])
        brackets = structure.translate(_SQUARE)
    depth = 0
    while brackets and depth <= stop_above:
        shorter = brackets.replace(b"[]", b"")
        if len(shorter) == len(brackets):
            steps = map(_BRACKET_STEP.__getitem__, brackets)
            return depth + max(0, *itertools.accumulate(steps))
        brackets, depth = shorter, depth + 1
    return depth


def _is_timestamp(value: Any) -> bool:
    """Whether ``value`` is a time the loader stores as it was meant.

    Python reads more ISO 8601 than the warehouse: week and ordinal dates (``2025-W01-1``),
    basic format (``20250301``), and offsets that push a time out of the years 1-9999 once in
    UTC (``9999-12-31T23:59:59-23:59`` is in year 10000). Those were accepted here and then
    refused at load or stored in the wrong year; they are refused at the door instead.
    """
    if not isinstance(value, str) or not _ISO_TIMESTAMP.fullmatch(value):
        return False
    try:
        moment = datetime.fromisoformat(value)
        if moment.tzinfo is not None:
            moment.astimezone(UTC)
    except (ValueError, OverflowError):
        return False
    return True


#: epoch times file and webhook rows may hold instead of ISO 8601 text: seconds (nine or ten
#: digits: 1973-2286, with an optional fraction) and milliseconds (twelve or thirteen digits)
EPOCH_SECONDS = r"[0-9]{9,10}(?:\.[0-9]+)?"
EPOCH_MILLISECONDS = r"[0-9]{12,13}"
_EPOCH_SECONDS = re.compile(EPOCH_SECONDS)
_EPOCH_MILLISECONDS = re.compile(EPOCH_MILLISECONDS)


def utc_timestamp_text(value: Any) -> str | None:
    """A row's time as UTC ISO 8601 text without a zone, or ``None`` when it is not one.

    The rule of :func:`row_timestamp_sql` in Python, for rows that arrive one at a time (CRM
    webhooks): ISO 8601 as :func:`_is_timestamp` accepts it, epoch seconds or epoch
    milliseconds. Booleans are not times (JSON ``true`` would read as 1).
    """
    if isinstance(value, bool):
        return None
    text = str(value)
    try:
        if _EPOCH_SECONDS.fullmatch(text):
            moment = datetime.fromtimestamp(float(text), UTC)
        elif _EPOCH_MILLISECONDS.fullmatch(text):
            moment = datetime.fromtimestamp(int(text) / 1000, UTC)
        elif _is_timestamp(text):
            moment = datetime.fromisoformat(text)
            if moment.tzinfo is not None:
                moment = moment.astimezone(UTC)
        else:
            return None
    except (ValueError, OverflowError, OSError):
        return None
    return moment.replace(tzinfo=None).isoformat()


def row_timestamp_sql(text: str) -> str:
    """DuckDB SQL for a file row's time: :func:`iso_timestamp_sql`, else epoch seconds or
    milliseconds (:data:`EPOCH_SECONDS`, :data:`EPOCH_MILLISECONDS`); NULL for anything else.
    The same rule as :func:`utc_timestamp_text`. ``coalesce`` is lazy: the common ISO case
    is tried first, the epoch numbers only where it failed."""
    return (
        f"coalesce({iso_timestamp_sql(text)}, "
        f"CASE WHEN regexp_full_match({text}, '{EPOCH_SECONDS}') "
        f"THEN make_timestamp(CAST(CAST({text} AS DOUBLE) * 1e6 AS BIGINT)) "
        f"WHEN regexp_full_match({text}, '{EPOCH_MILLISECONDS}') "
        f"THEN make_timestamp(CAST({text} AS BIGINT) * 1000) END)"
    )


def iso_timestamp_sql(text: str) -> str:
    """DuckDB SQL for the ISO 8601 text ``text`` as a UTC timestamp, NULL where
    :func:`_is_timestamp` would refuse it: the one rule of the collector's door, the loader
    and file ingest.

    Why not a plain cast: the warehouse casts ``9999-12-31T23:59:59-23:59`` to year 10000
    (then stores it wrongly or fails to read it back), so the result must fall in years
    1-9999 once in UTC; week, ordinal and basic-format dates (``2025-W10-1``, ``2025-060``,
    ``20250301``) are not calendar dates and are refused as the collector refuses them.
    The text must have the shape :data:`ISO_TIMESTAMP` on both sides, so that the warehouse's
    cast and Python's ``fromisoformat`` agree on every text that gets that far (hour 24, a
    trailing `` UTC`` or a comma fraction: one accepts what the other refuses).
    """
    instant = f"try_cast({text} AS TIMESTAMPTZ)"
    naive = f"try_cast({text} AS TIMESTAMP)"
    # A text in UTC (no offset, or Z; naive timestamps are UTC on every connection) is read
    # as a plain timestamp: a third of the cost of an instant converted to UTC. The cast to
    # a plain timestamp drops an offset, so a text with one (a + or a - after the date) takes
    # the instant. Either way the result lies in years 1-9999: the bounds as instants (folded
    # once) let the time zone conversion, the costly part, run once a row, on the rows kept,
    # rather than three times (CASE does not share it).
    return (
        f"CASE WHEN NOT regexp_full_match({text}, '{ISO_TIMESTAMP}') THEN NULL "
        f"WHEN NOT contains({text}, '+') AND NOT contains(substr({text}, 11), '-') "
        f"THEN CASE WHEN {naive} >= TIMESTAMP '0001-01-01' THEN {naive} END "
        f"WHEN {instant} BETWEEN timezone('UTC', TIMESTAMP '0001-01-01') "
        f"AND timezone('UTC', TIMESTAMP '9999-12-31 23:59:59.999999') "
        f"THEN timezone('UTC', {instant}) END"
    )


# --- duplicate keys ------------------------------------------------------------------------

#: the objects a message's fields are read from, as JSON paths: a key twice in one of them is
#: ambiguous (the collector's parser keeps the last copy, DuckDB's the first), so the message
#: is refused as ``duplicate_key`` on every path (door, loader, file ingest). Deeper objects
#: are payload that touchline stores but never reads.
READ_OBJECTS = ("$", "$.context", "$.context.page", "$.context.campaign", "$.context.traits",
                "$.traits", "$.properties")
#: objects of up to this many keys are checked for a repeated key by comparing positions
_FEW_KEYS = 32
#: the batch envelope's own keys a copy of which would change what is loaded
_ENVELOPE_KEYS = frozenset({"batch", "context", "integrations", "sentAt", "writeKey"})


class _Repeated(dict[str, Any]):
    """A decoded JSON object in which ``repeated`` keys appeared more than once."""

    repeated: tuple[str, ...] = ()


def _object_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) == len(pairs):
        return obj
    marked = _Repeated(obj)
    counts = Counter(k for k, _ in pairs)
    marked.repeated = tuple(k for k, n in counts.items() if n > 1)
    return marked


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def decode_marking_repeats(body: bytes) -> Any:
    """``body`` decoded with every object that repeats a key marked (or ``None`` if the
    standard library's parser refuses it; orjson has already accepted it by then).

    Why a second parser: orjson and msgspec keep a repeated key's last copy silently, and
    nothing in their output shows there were two. Python's ``json`` hands each object's pairs
    over before they become a dict. It runs only where the request path already works per
    message (single events, batches the fast path declined); nesting is bounded by
    :data:`MAX_JSON_DEPTH` before any parser sees the body.
    """
    try:
        return json.loads(body, object_pairs_hook=_object_pairs, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        return None


_READ_PARTS = tuple(tuple(path.removeprefix("$").split(".")[1:]) for path in READ_OBJECTS)


def may_repeat_key(body: bytes, message: Any) -> bool:
    """Whether an object of :data:`READ_OBJECTS` in ``message`` (``body`` as orjson decoded
    it) might hold a key twice; ``False`` only when none can, so the second parse
    (:func:`decode_marking_repeats`, ~10x the cost of the first) is spared.

    Each of those objects' keys (its last copy survives the parse) must occur once, quoted,
    in the whole text: a key written twice is there twice. A text with a backslash may spell
    one key two ways (``"a"``, ``"\\u0061"``) and always takes the second parse; a key that
    also appears elsewhere (as a value, in another object) only costs the second parse.
    """
    if b"\\" in body or message.__class__ is not dict:
        return True
    for parts in _READ_PARTS:
        node = message
        for part in parts:
            node = node.get(part) if node.__class__ is dict else None
        if node.__class__ is dict:
            for key in node:
                if body.count(b'"' + key.encode() + b'"') > 1:
                    return True
    return False


def repeated_keys(node: Any) -> tuple[str, ...]:
    """The keys an object decoded by :func:`decode_marking_repeats` holds more than once."""
    return node.repeated if isinstance(node, _Repeated) else ()


def repeated_key(message: Any) -> Problem | None:
    """``duplicate_key`` if one of :data:`READ_OBJECTS` of a message decoded by
    :func:`decode_marking_repeats` repeats a key, else ``None``."""
    for path in READ_OBJECTS:
        node = message
        for part in path.removeprefix("$").split(".")[1:]:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, _Repeated):
            where = ".".join(filter(None, (path.removeprefix("$").lstrip("."), node.repeated[0])))
            return Problem(
                "duplicate_key", where,
                f"{where} appears twice in one object: which copy is meant is unknown",
            )
    return None


def repeated_envelope_key(body: Any) -> Problem | None:
    """``duplicate_key`` if a batch's envelope repeats one of its own keys (``batch``,
    ``context``, ...): the collector would check one copy and the loader load the other."""
    if isinstance(body, _Repeated):
        for key in body.repeated:
            if key in _ENVELOPE_KEYS:
                return Problem(
                    "duplicate_key", key,
                    f"the batch body has {key} twice: which copy is meant is unknown",
                )
    return None


def may_repeat_batch(body: bytes) -> bool:
    """Whether a batch body might hold ``batch`` twice (a cheap test before the fast path,
    which cannot see it: msgspec keeps the last copy, the loader reads the first)."""
    return body.count(b'"batch"') > 1


# --- vectorised mapping ------------------------------------------------------------------


def url_decoded_sql(value: str) -> str:
    """DuckDB SQL that percent-decodes the query parameter value ``value``, leniently.

    Why lenient: any visitor can put any bytes in a URL, and DuckDB's ``url_decode`` raises on
    a sequence that does not decode to UTF-8 (``caf%E9``, ``%C3%28``, ``%80``); one such page
    view would stop every load after it. A value that does not decode is kept as received,
    as text. The loader and file ingest both use this, so the two paths agree.
    """
    return (
        f"CASE WHEN regexp_matches({value}, '[%+]') THEN coalesce(try(url_decode("
        f"replace({value}, '+', ' '))), {value}) ELSE {value} END"
    )


def _query_param(name: str) -> str:
    pattern = f"[?&#]{name}=([^&#]*)"
    value = f"regexp_extract(query_text, '{pattern}', 1)"
    # the cheap contains() spares the regex on the many rows without that parameter
    return (
        f"CASE WHEN contains(query_text, '{name}=') "
        f"THEN nullif(trim({url_decoded_sql(value)}), '') END"
    )


# CASE, not AND: DuckDB evaluates both sides of AND, and casting bad JSON raises
_IS_OBJECT = "coalesce(CASE WHEN json_valid(raw) THEN json_type(raw) = 'OBJECT' END, false)"
_OBJECTS = ("$.properties", "$.traits", "$.context")


def object_keys_sql(json_ref: str) -> str:
    """DuckDB SQL: the layout of JSON text ``json_ref``, the key lists of its
    :data:`READ_OBJECTS` in order and with repeats (``NULL`` for an object it lacks; ``[]`` for
    a value that is not an object). Raises on text that is not JSON (``try()`` makes that
    ``NULL``): one parse both checks the text and lists its keys."""
    paths = ", ".join(repr(p) for p in READ_OBJECTS)
    return f"json_keys({json_ref}, [{paths}])"


def repeated_key_sql(keys_ref: str, clean: Sequence[Layout] = ()) -> str:
    """DuckDB SQL: whether layout ``keys_ref`` (:func:`object_keys_sql`) repeats a key in one of
    its objects; false for ``NULL``.

    Why: parsers disagree on ``{"anonymousId": "", "anonymousId": "real"}`` (orjson keeps the
    last, DuckDB the first), so the collector checked one copy and the loader stored the other.
    The one rule for every path: such a message is rejected with ``duplicate_key``.

    A key repeats when its first position in the object's key list is not its own. Comparing
    each key with the few before it costs a third of ``list_distinct``'s hash table per object;
    an object of more than :data:`_FEW_KEYS` keys takes the hash table (no quadratic cost).
    A file's lines mostly share a few layouts: each of ``clean`` (layouts known to repeat no
    key, :func:`repeats_key`) is recognised by one comparison of the whole layout, which is
    exact (equal lists, keys compared case and all) and costs a fifth of the check.
    """
    check = (
        f"coalesce(list_bool_or(list_transform({keys_ref}, "
        f"k -> CASE WHEN len(k) <= {_FEW_KEYS} "
        "THEN list_bool_or(list_transform(k, (key, i) -> list_position(k, key) <> i)) "
        "ELSE len(k) <> len(list_distinct(k)) END)), false)"
    )
    known = [f"{keys_ref} = {layout_sql(layout)}" for layout in clean]
    if not known:
        return check
    return f"CASE WHEN {' OR '.join(known)} THEN false ELSE {check} END"


def duplicate_keys_sql(json_ref: str) -> str:
    """DuckDB SQL: whether the JSON object ``json_ref`` repeats a key in one of the objects a
    message is read from (the root, context, page, campaign, traits, properties); see
    :func:`repeated_key_sql`."""
    return repeated_key_sql(object_keys_sql(json_ref))


#: a layout as DuckDB hands it to Python: one key list (or None) per :data:`READ_OBJECTS`
Layout = Sequence["Sequence[str] | None"]


def repeats_key(layout: Layout) -> bool:
    """Whether an object of ``layout`` holds a key twice (:func:`repeated_key_sql` in Python)."""
    return any(keys is not None and len(set(keys)) != len(keys) for keys in layout)


def layout_sql(layout: Layout) -> str:
    """``layout`` as a DuckDB literal of the type :func:`object_keys_sql` gives."""
    def text(key: str) -> str:
        # chr() for what an SQL string cannot hold as written (a NUL); '' for a quote
        return " || ".join(
            f"chr({ord(part)})" if part == "\0" else "'" + part.replace("'", "''") + "'"
            for part in re.split(r"(\0)", key) if part
        ) or "''"

    items = ", ".join(
        "NULL" if keys is None else "[" + ", ".join(text(k) for k in keys) + "]"
        for keys in layout
    )
    return f"CAST([{items}] AS VARCHAR[][])"



def _mapping_sql() -> str:
    """The mapping as one DuckDB query over ``lines(line, raw)``.

    Every JSON path is pulled out by a single ``json_extract_string(j, [paths])``: one parse
    per line instead of one per field (measured 4-5x faster than a call per field).
    """
    paths: list[str] = []

    def text(path: str) -> str:
        if path not in paths:
            paths.append(path)
        return f"nullif(trim(v[{paths.index(path) + 1}]), '')"

    def person(column: str) -> str:
        return f"coalesce({', '.join(text(p) for p in PERSON_PATHS[column])})"

    def ts(path: str) -> str:
        return iso_timestamp_sql(text(path))

    def obj(path: str) -> str:
        item = f"o[{_OBJECTS.index(path) + 1}]"
        return f"CASE WHEN json_type({item}) = 'OBJECT' THEN {item} END"

    utm = []
    for field in UTM_FIELDS:
        key = _CAMPAIGN_KEYS.get(field, field)
        utm.append(
            f"coalesce({text(f'$.context.campaign.{key}')}, {_query_param('utm_' + field)}) "
            f"AS utm_{field}"
        )
    # t.js keeps the landing page's click ids in context.campaign for the whole session
    clicks = [
        f"coalesce({text(f'$.context.campaign.{c}')}, {_query_param(c)}) AS {c}" for c in CLICK_IDS
    ]
    sql = f"""
    WITH parsed AS (
        SELECT line, raw, CAST(raw AS JSON) AS j FROM lines WHERE {_IS_OBJECT}
    ), extracted AS (
        SELECT line, raw, json_extract_string(j, [{{PATHS}}]) AS v,
               json_extract(j, [{", ".join(repr(p) for p in _OBJECTS)}]) AS o,
               {duplicate_keys_sql("j")} AS duplicate_keys
        FROM parsed
    ), pages AS (
        SELECT *,
            coalesce({text("$.context.page.url")}, {text("$.properties.url")}) AS url,
            coalesce({text("$.context.page.search")}, '') AS page_search
        FROM extracted
    ), base AS (
        SELECT *, coalesce(url, '') || '&' || page_search AS query_text FROM pages
    )
    SELECT
        line,
        raw,
        duplicate_keys,
        coalesce({text("$.messageId")}, 'md5:' || md5(raw)) AS message_id,
        lower({text("$.type")}) AS type,
        {text("$.event")} AS event,
        {text("$.anonymousId")} AS anonymous_id,
        {text("$.userId")} AS user_id,
        {text("$.groupId")} AS group_id,
        {text("$.previousId")} AS previous_id,
        {person("contact_id")} AS contact_id,
        coalesce({ts("$.timestamp")}, {ts("$.originalTimestamp")},
                 {ts("$.receivedAt")}) AS timestamp,
        {ts("$.originalTimestamp")} AS original_timestamp,
        {ts("$.sentAt")} AS sent_at,
        {ts("$.receivedAt")} AS received_at,
        url,
        coalesce({text("$.context.page.path")}, {text("$.properties.path")},
                 nullif(regexp_extract(url, '^[A-Za-z][A-Za-z0-9+.-]*://[^/?#]*([^?#]*)', 1), ''))
            AS path,
        coalesce({text("$.context.page.referrer")}, {text("$.properties.referrer")}) AS referrer,
        coalesce({text("$.context.page.title")}, {text("$.properties.title")}) AS title,
        {", ".join(utm)},
        {", ".join(clicks)},
        lower({person("email")}) AS email,
        {person("phone")} AS phone,
        lower({person("email_sha256")}) AS email_sha256,
        lower({person("phone_sha256")}) AS phone_sha256,
        CAST(NULL AS VARCHAR) AS email_domain,  -- set at load when e-mails are keyed
        coalesce({text("$.context.userAgent")}, {text("$.context.user_agent")}) AS user_agent,
        {text("$.context.ip")} AS ip,
        coalesce(try_cast({text("$.properties.revenue")} AS DOUBLE),
                 try_cast({text("$.properties.total")} AS DOUBLE)) AS revenue,
        upper({text("$.properties.currency")}) AS currency,
        {obj("$.properties")}::VARCHAR AS properties,
        {obj("$.traits")}::VARCHAR AS traits,
        -- the address lives on in `ip` (truncated); the context must not keep it whole
        CASE WHEN {obj("$.context")} IS NOT NULL
             THEN json_merge_patch({obj("$.context")}, '{{"ip": null}}')::VARCHAR END AS context,
        {text("$.source")} AS row_source,
        {text("$.writeKey")} AS write_key,
        lower({text("$.context.consent")}) AS consent,
        {text("$.timestamp")} AS timestamp_text,
        {text("$.originalTimestamp")} AS original_timestamp_text
    FROM base
    """
    return sql.replace("{PATHS}", ", ".join(repr(p) for p in paths))


_MAPPING_SQL = _mapping_sql()

#: the envelope's fields are read once per batch, before its members are unnested: read after,
#: every member re-parsed the whole body (~100x the work at 100 messages a batch)
_EXPLODE_SQL = f"""
WITH records AS (
    SELECT line, CAST(header AS JSON) AS h, CAST(body AS JSON) AS j, origin
    FROM batches CROSS JOIN explode_meta
), envelopes AS (
    SELECT line, origin,
        len(json_keys(j)) <> len(list_distinct(json_keys(j))) AS envelope_twice,
        json_extract(j, '$.batch[*]') AS members,
        coalesce(json_extract(j, '$.context'), '{{}}') AS batch_context,
        json_extract_string(h, '$.ip') AS client_ip,
        json_extract_string(h, '$.receivedAt') AS received_at,
        coalesce(json_extract(h, '$.keepReceivedAt')::BOOLEAN, false) AS keep_received_at,
        json_extract_string(h, '$.writeKey') AS key_name,
        json_extract(j, '$.sentAt') AS batch_sent_at,
        json_extract(j, '$.integrations') AS batch_integrations
    FROM records
), events AS (
    SELECT * EXCLUDE (members), unnest(members) AS e, generate_subscripts(members, 1) AS position
    FROM envelopes
), merged AS (
    SELECT *, json_merge_patch(batch_context, coalesce(json_extract(e, '$.context'), '{{}}')) AS ctx
    FROM events
)
SELECT line,
    json_merge_patch(e, json_object(
        'context', CASE WHEN json_extract_string(ctx, '$.ip') IS NULL AND client_ip IS NOT NULL
                        THEN json_merge_patch(ctx, json_object('ip', client_ip)) ELSE ctx END,
        -- a server id, as for single events: two identical messages are two events; from
        -- the spool position, so a chunk loaded again gives the same ids
        'messageId', coalesce(json_extract_string(e, '$.messageId'),
                              'srv-' || md5(origin || ':' || line || ':' || position)),
        'receivedAt', CASE WHEN keep_received_at
                           THEN coalesce(json_extract_string(e, '$.receivedAt'), received_at)
                           ELSE received_at END,
        'writeKey', key_name,
        'source', coalesce(json_extract_string(e, '$.source'), key_name),
        'sentAt', coalesce(json_extract(e, '$.sentAt'), batch_sent_at),
        'integrations', coalesce(json_extract(e, '$.integrations'), batch_integrations)
    ))::VARCHAR AS raw,
    -- strlen counts UTF-8 bytes, as message_bytes does on the checked path
    CASE WHEN envelope_twice THEN 'duplicate_key'
         WHEN strlen(e::VARCHAR) > {MAX_EVENT_BYTES} THEN 'event_too_large' END AS refused
FROM merged
"""
#: why :func:`explode_batches` refuses a batch member, by code
EXPLODE_REASONS = {
    "duplicate_key": "the batch body repeats one of its own keys (context, sentAt, "
                     "integrations): which copy is meant is unknown",
    "event_too_large": f"a message may be at most {MAX_EVENT_BYTES} bytes",
}


def message_bytes(message: Any) -> int:
    """A batch member's size as the 32 KB limit counts it: its compact JSON, as received
    (before the batch's shared context is merged in), in UTF-8 bytes, on every path."""
    return len(msgspec.json.encode(message))


def explode_batches(batches: pa.Table, *, origin: str) -> tuple[pa.Table, pa.Table]:
    """Spooled batch bodies → one stamped Segment message per row, as :func:`map_segment` takes.

    ``batches`` has ``line`` (int64), ``header`` (the collector's JSON: ``receivedAt``,
    ``writeKey`` name, truncated client ``ip``) and ``body`` (the request as received). The
    batch's ``context`` is merged under each message's own, as in the detailed path. Returns
    ``(lines, refused)``, both with ``line`` and ``raw``; ``refused`` also names the code
    (:data:`EXPLODE_REASONS`): messages over 32 KB, and every message of a body that repeats
    one of its own keys (the collector validated the last copy of ``context``; DuckDB reads
    the first).
    A message without ``messageId`` gets ``srv-`` and a hash of ``origin`` (the spool chunk),
    its line and its place in the batch.
    """
    with SegmentMapper() as mapper:
        return mapper.explode(batches, origin=origin)


_REASONS = {
    "bad_json": ("raw", "the line is not a JSON object"),
    "duplicate_key": ("raw", "a key appears twice in one object: which copy is meant is unknown"),
    "bad_type": (
        "type",
        "type is missing or not one of alias, group, identify, page, screen, track",
    ),
    "bad_timestamp": ("timestamp", "timestamp is not an ISO 8601 time"),
    "missing_timestamp": ("timestamp", "no timestamp, originalTimestamp or receivedAt"),
    "duplicate": ("messageId", "messageId was already seen; the first copy is kept"),
}


@dataclass(frozen=True)
class SegmentSplit:
    """Rows for ``events`` (canonical schema) and for ``rejects``, from one input."""

    events: pa.Table
    rejects: pa.Table


def map_segment(
    lines: pa.Table,
    *,
    source: str,
    ingest_id: str,
    default_source: str = "import",
    ip_truncate: bool = True,
    step: str = "collect:segment",
    now: datetime | None = None,
    origin: str | None = None,
    contacts_region: str | None = None,
) -> SegmentSplit:
    """Map raw Segment JSON lines to canonical ``events`` rows and ``rejects``.

    Parameters
    ----------
    lines
        Arrow table with a string column ``raw`` (one Segment message as JSON text per row)
        and optionally an int64 column ``line`` (1-based position in the source, for rejects;
        default: the row number).
    source
        Where the lines came from (file path or endpoint), written to ``rejects.source``.
    ingest_id
        The run that loads them, written to ``events.ingest_id`` and ``rejects.ingest_id``.
    default_source
        ``events.source`` for messages without a top-level ``source`` field (the collector
        writes the write key's name there).
    ip_truncate
        Zero the host part of ``context.ip`` (see :func:`truncate_ip`).
    step, now
        ``rejects.step`` and ``rejects.rejected_at``.
    origin
        What names these lines for the rejects' ids (:func:`touchline.store.reject_id`);
        default ``ingest_id``.
    contacts_region
        Given when ``pii_at_rest = "hashed"``: rejected lines lose their e-mails and phones
        too (:func:`touchline.store.safe_raw`).

    Returns
    -------
    SegmentSplit
        ``events`` in the exact Arrow schema of ``store.EVENTS`` and ``rejects`` in that of
        ``store.REJECTS``. Within ``lines`` a repeated ``messageId`` keeps its first row; the
        others are rejects with code ``duplicate`` and ``ref`` = the message id. Deduplication
        against rows already in the warehouse is the caller's (it needs the warehouse).
    """
    with SegmentMapper() as mapper:
        return mapper.map(
            lines, source=source, ingest_id=ingest_id, default_source=default_source,
            ip_truncate=ip_truncate, step=step, now=now, origin=origin,
            contacts_region=contacts_region,
        )


def _verdict_sql() -> str:
    """The mapping (:func:`_mapping_sql`) with ``reason_code``: why each message is refused,
    NULL for those kept. A ``message_id`` met again keeps its first line (ties: any one).

    Why the repeats are ranked apart: a window over every mapped row sorted the wide rows
    (raw text, context, properties) only to find the rare repeat, ~4 µs a message, a third
    of the mapping; ranking only the ids that repeat, on narrow rows, costs ~0.1 µs.
    """
    timestamp = iso_timestamp_sql("timestamp_text")
    return f"""
    WITH mapped AS MATERIALIZED (
        SELECT row_number() OVER () AS _row, * FROM ({_MAPPING_SQL})
    ), repeated AS (
        SELECT message_id FROM mapped GROUP BY message_id HAVING count(*) > 1
    ), later_copies AS (
        SELECT _row FROM (
            SELECT _row, row_number() OVER (PARTITION BY message_id ORDER BY line, _row) AS copy
            FROM mapped SEMI JOIN repeated USING (message_id)
        ) WHERE copy > 1
    )
    SELECT m.* EXCLUDE (_row), CASE
        WHEN duplicate_keys THEN 'duplicate_key'
        WHEN type IS NULL OR type NOT IN ('track', 'page', 'screen', 'identify', 'alias', 'group')
            THEN 'bad_type'
        WHEN (timestamp_text IS NOT NULL AND {timestamp} IS NULL)
          OR (original_timestamp_text IS NOT NULL AND original_timestamp IS NULL)
            THEN 'bad_timestamp'
        WHEN timestamp IS NULL THEN 'missing_timestamp'
        WHEN later._row IS NOT NULL THEN 'duplicate'
    END AS reason_code
    FROM mapped m LEFT JOIN later_copies later USING (_row)
    """


_VERDICT_SQL = _verdict_sql()


class SegmentMapper:
    """One DuckDB connection on which the mapping (:func:`map_segment`) and the batch explode
    (:func:`explode_batches`) are planned once, then run on each chunk given.

    Why: planning the mapping's one query (~50 JSON paths, timestamp and URL rules) costs
    ~30 ms of CPU and a fresh connection ~20 ms more, on every chunk, while the loader, which
    maps a chunk every second, shares its cores with the collector's workers. The statements
    are prepared over temporary tables (``lines``, ``batches`` and one-row ``*_meta`` tables
    for the chunk's names), which each call empties and fills: a prepared statement binds the
    tables it reads once, so an Arrow table registered per call would not be seen.

    ``threads``: DuckDB threads of the connection; one for the loader (measured: half the
    CPU of two on a chunk of 32,000 messages, the second thread mostly waiting), the engine's
    default elsewhere. Not thread-safe: one mapper per thread.
    """

    def __init__(self, *, threads: int | None = None) -> None:
        self._db = duckdb.connect()
        self._db.execute("SET TimeZone = 'UTC'")
        # the statements are planned while their tables are empty: a plan that trusted those
        # tables' statistics (every reason_code NULL) would drop its filters on later chunks
        self._db.execute("SET disabled_optimizers = 'statistics_propagation'")
        if threads is not None:
            self._db.execute(f"SET threads = {int(threads)}")
        try:
            self._prepare()
        except BaseException:
            self._db.close()
            raise

    def _prepare(self) -> None:
        """Create the tables, then plan the statements: a table created after a statement
        was prepared (any change to the catalog) makes DuckDB plan that statement again on
        every execution."""
        db = self._db
        db.execute("CREATE TEMP TABLE lines (line BIGINT, raw VARCHAR)")
        db.execute("CREATE TEMP TABLE map_meta (default_source VARCHAR, ingest_id VARCHAR)")
        db.execute(f"CREATE TEMP TABLE verdict AS {_VERDICT_SQL} LIMIT 0")
        db.execute("CREATE TEMP TABLE batches (line BIGINT, header VARCHAR, body VARCHAR)")
        db.execute("CREATE TEMP TABLE explode_meta (origin VARCHAR)")
        db.execute(f"PREPARE map_verdict AS INSERT INTO verdict {_VERDICT_SQL}")
        select = ", ".join(
            "coalesce(row_source, meta.default_source) AS source" if c.name == "source"
            else "meta.ingest_id AS ingest_id" if c.name == "ingest_id"
            else c.name
            for c in EVENTS.columns
        )
        db.execute(
            f"PREPARE map_events AS SELECT {select} FROM verdict CROSS JOIN map_meta meta "
            "WHERE reason_code IS NULL ORDER BY line"
        )
        db.execute(
            "PREPARE map_rejected AS "
            "SELECT line, raw, reason_code, message_id FROM verdict "
            "WHERE reason_code IS NOT NULL "
            f"UNION ALL SELECT line, raw, 'bad_json', NULL FROM lines WHERE NOT ({_IS_OBJECT}) "
            "ORDER BY line"
        )
        db.execute(f"PREPARE explode AS {_EXPLODE_SQL}")

    def close(self) -> None:
        """Close the connection."""
        self._db.close()

    def __enter__(self) -> SegmentMapper:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _fill(self, table: str, rows: pa.Table) -> None:
        """Replace the rows of temporary table ``table`` with ``rows`` (same columns).

        Through a relation, not ``register``: registering creates a view, and any change to
        the catalog makes DuckDB plan every prepared statement again, on each execution.
        """
        self._db.execute(f"DELETE FROM {table}")
        self._db.from_arrow(rows).insert_into(table)

    def explode(self, batches: pa.Table, *, origin: str) -> tuple[pa.Table, pa.Table]:
        """:func:`explode_batches` on this connection."""
        self._fill("batches", batches.select(["line", "header", "body"]))
        self._fill("explode_meta", pa.table({"origin": pa.array([origin], pa.string())}))
        out = self._db.execute("EXECUTE explode").fetch_arrow_table()
        refused = out.column("refused").is_valid()
        keep = out.filter(pc.invert(refused)).select(["line", "raw"])
        return keep, out.filter(refused).select(["line", "raw", "refused"])

    def map(
        self,
        lines: pa.Table,
        *,
        source: str,
        ingest_id: str,
        default_source: str = "import",
        ip_truncate: bool = True,
        step: str = "collect:segment",
        now: datetime | None = None,
        origin: str | None = None,
        contacts_region: str | None = None,
    ) -> SegmentSplit:
        """:func:`map_segment` on this connection."""
        now = now or datetime.now(UTC).replace(tzinfo=None)
        if "line" not in lines.column_names:
            lines = lines.append_column(
                "line", pa.array(range(1, lines.num_rows + 1), pa.int64()))
        lines = lines.select(["line", "raw"]).cast(
            pa.schema([("line", pa.int64()), ("raw", pa.string())])
        )
        db = self._db
        self._fill("lines", lines)
        self._fill("map_meta", pa.table({
            "default_source": pa.array([default_source], pa.string()),
            "ingest_id": pa.array([ingest_id], pa.string()),
        }))
        db.execute("DELETE FROM verdict")
        db.execute("EXECUTE map_verdict")
        events = db.execute("EXECUTE map_events").fetch_arrow_table()
        rejected = db.execute("EXECUTE map_rejected").fetch_arrow_table()
        db.execute("DELETE FROM verdict")  # the chunk's text is not kept between chunks
        db.execute("DELETE FROM lines")
        if ip_truncate and events.num_rows:
            events = _truncate_ip_column(events)
        events = events.cast(EVENTS.schema.to_pyarrow())
        records = [
            RejectRecord(
                code, _REASONS[code][1], raw, line=line, field=_REASONS[code][0],
                ref=message_id if code == "duplicate" else None,
            )
            for line, raw, code, message_id in zip(
                *(rejected.column(n).to_pylist()
                  for n in ("line", "raw", "reason_code", "message_id")),
                strict=True,
            )
        ]
        rejects = reject_rows(
            records, step=step, source=source, origin=origin or ingest_id, ingest_id=ingest_id,
            now=now, contacts_region=contacts_region,
        )
        return SegmentSplit(events, rejects)


def _truncate_ip_column(events: pa.Table) -> pa.Table:
    # few distinct addresses per batch: truncate each once, then map back by index
    ips = events.column("ip")
    distinct = pc.unique(ips.drop_null())
    if len(distinct) == 0:
        return events
    truncated = pa.array([truncate_ip(v) for v in distinct.to_pylist()], pa.string())
    index = pc.index_in(ips, value_set=distinct)
    position = events.schema.get_field_index("ip")
    return events.set_column(position, "ip", pc.take(truncated, index))
