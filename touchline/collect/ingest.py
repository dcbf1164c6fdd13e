"""File ingest: read CSV / NDJSON / Parquet in chunks, type and check every field, keep what is
good, send the rest to ``rejects`` with file, line, field and reason, and add nothing twice.

How a file moves through here::

    file ──readers.iter_chunks──▶ chunk (strings, line numbers, raw text)
         ──_extract (JSON paths / column mapping)──▶ canonical columns as text
         ──_validate (typed casts, required fields, kind rules)──▶ good rows │ rejects
         ──staged as Parquet beside the warehouse──▶ commit: dedupe within the file, anti-join
           against the table on its key, insert rows, rejects and the run record together.

Parsing untyped input is edge work done by an in-process DuckDB on each chunk, whatever the
warehouse engine; from the staged Parquet on, everything is Ibis on the warehouse connection,
so the same commit runs on DuckDB and Spark. Nothing reaches the target table until the whole
file has been read: a truncated or unreadable file leaves no half-written table behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
import shutil
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
import ibis
import ibis.expr.datatypes as dt
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
from ibis import _

from touchline import engine, store
from touchline.collect import at_rest, readers
from touchline.collect.mapping import Mapping, is_json_path, split_column_path
from touchline.collect.segment import (
    PERSON_PATHS,
    READ_OBJECTS,
    Layout,
    layout_sql,
    object_keys_sql,
    repeated_key_sql,
    repeats_key,
    row_timestamp_sql,
    url_decoded_sql,
)
from touchline.config import Settings
from touchline.errors import InputError
from touchline.store import CLICK_IDS

if TYPE_CHECKING:
    from ibis.backends import BaseBackend

log = logging.getLogger(__name__)

EVENT_TYPES = ("track", "page", "screen", "identify", "alias", "group")
UTM_FIELDS = ("utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content", "utm_id")
#: columns added after content hashes (``row_hash``, ``h-`` message ids) were defined: they
#: count in a row's hash only when set, so re-ingesting an old export adds nothing twice
HASH_IF_SET = frozenset({"contact_id", "contact_ids", "properties", "email_sha256",
                         "phone_sha256", "imported_channel", "channel_matched"})
#: any one of these places an event in a journey (the Segment API demands the first two)
OFFLINE_IDS = ("anonymous_id", "user_id", "email", "phone", "email_sha256", "phone_sha256",
               "contact_id")
#: a row loaded without the values of a CSV/Parquet cell that is not JSON
PARTIAL_CODE = "bad_json_partial"
_VALUE_SHOWN = 80  # characters of a bad value quoted in a reject reason
#: where the parse SQL of NDJSON checks a line's layout for a repeated key (filled per chunk)
_REPEATED_KEY = "{repeated_key}"
#: lines of each NDJSON chunk whose layouts are looked at, and how many layouts are kept
_LAYOUT_SAMPLE = 1000
_LAYOUTS_KEPT = 4
#: the objects a layout lists the keys of, as member keys (``()`` is the root)
_LAYOUT_OBJECTS = tuple(tuple(p.removeprefix("$").split(".")[1:]) for p in READ_OBJECTS)
SAFE_RAW_FUNCTION = "touchline_safe_raw"
#: the same, also emptying e-mails and phones (pii_at_rest = "hashed"), for one phone region
SAFE_RAW_CONTACTS_FUNCTION = "touchline_safe_raw_contacts_{region}"
_SQL_TYPES = {"Timestamp": "TIMESTAMP", "Date": "DATE", "Float64": "DOUBLE",
              "Int64": "BIGINT", "Boolean": "BOOLEAN"}
_TYPE_CODES = {"Timestamp": "timestamp", "Date": "date", "Float64": "number",
               "Int64": "integer", "Boolean": "boolean"}
#: numeric fields whose value must lie in a range, per kind: (column, low, high, reason code,
#: what the value is); a value outside is rejected (a 12 on a 0-10 scale is a misread answer,
#: and averaging it would move NPS or a rating without anyone noticing)
RANGES: dict[str, tuple[tuple[str, float, float | None, str, str], ...]] = {
    "surveys": (("nps_score", 0, 10, "bad_nps", "an NPS answer (0 to 10)"),
                ("review_rating", 1, 5, "bad_rating", "a rating of 1 to 5 stars")),
    "reviews": (("rating", 1, 5, "bad_rating", "a rating of 1 to 5 stars"),),
    "social": tuple((c, 0, None, "negative_count", "a count (0 or more)")
                    for c in ("followers", "posts", "impressions", "engagements", "likes",
                              "comments", "shares")),
}

# Where each canonical events column lives in a Segment (or RudderStack) JSON export, in order
# of preference. Columns not listed are looked up as "$.<name>" and "$.<camelCase>".
SEGMENT_PATHS: dict[str, tuple[str, ...]] = {
    "message_id": ("$.messageId", "$.message_id"),
    "anonymous_id": ("$.anonymousId", "$.anonymous_id"),
    "user_id": ("$.userId", "$.user_id"),
    "group_id": ("$.groupId", "$.group_id"),
    "previous_id": ("$.previousId", "$.previous_id"),
    "contact_id": (*PERSON_PATHS["contact_id"], "$.contact_id"),
    "original_timestamp": ("$.originalTimestamp", "$.original_timestamp"),
    "sent_at": ("$.sentAt", "$.sent_at"),
    "received_at": ("$.receivedAt", "$.received_at"),
    "url": ("$.context.page.url", "$.properties.url"),
    "path": ("$.context.page.path", "$.properties.path"),
    "referrer": ("$.context.page.referrer", "$.properties.referrer"),
    "title": ("$.context.page.title", "$.properties.title"),
    "utm_source": ("$.context.campaign.source",),
    "utm_medium": ("$.context.campaign.medium",),
    "utm_campaign": ("$.context.campaign.name", "$.context.campaign.campaign"),
    "utm_term": ("$.context.campaign.term",),
    "utm_content": ("$.context.campaign.content",),
    "utm_id": ("$.context.campaign.id",),
    "email": PERSON_PATHS["email"],
    "phone": PERSON_PATHS["phone"],
    "email_sha256": PERSON_PATHS["email_sha256"],
    "phone_sha256": PERSON_PATHS["phone_sha256"],
    "user_agent": ("$.context.userAgent", "$.context.user_agent"),
    "ip": ("$.context.ip",),
    "revenue": ("$.properties.revenue", "$.properties.total"),
    "currency": ("$.properties.currency",),
    "properties": ("$.properties",),
    "traits": ("$.traits", "$.context.traits"),
    "context": ("$.context",),
    "write_key": ("$.writeKey", "$.write_key"),
}
for _click in CLICK_IDS:
    SEGMENT_PATHS[_click] = (f"$.context.campaign.{_click}", f"$.properties.{_click}")


@dataclass
class IngestResult:
    """What one file's ingest did."""

    path: str
    kind: str
    ingest_id: str
    rows_read: int = 0
    loaded: int = 0
    rejected: int = 0
    duplicates: int = 0
    rejects_by_reason: Counter[str] = field(default_factory=Counter)
    ignored_columns: list[str] = field(default_factory=list)
    seconds: float = 0.0


ProgressCallback = Callable[[int], None]


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _sql_str(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _json_path(path: str) -> str:
    if path.startswith("$"):
        return path
    return "$." + ".".join(_quote(p) for p in path.split("."))


def _trimmed(ref: str) -> str:
    """``ref`` without surrounding spaces, empty as NULL: ``trim`` only where there is something
    to trim (a copy costs a quarter of a ``trim``, and almost no value has spaces around it)."""
    return (f"CASE WHEN starts_with({ref}, ' ') OR ends_with({ref}, ' ') "
            f"THEN nullif(trim({ref}), '') ELSE nullif({ref}, '') END")


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p.title() for p in rest)


def _fingerprint(path: Path) -> str:
    """Cheap identity of a file's content: size and the first and last MiB."""
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with path.open("rb") as handle:
        digest.update(handle.read(1 << 20))
        if size > 2 << 20:
            handle.seek(-(1 << 20), 2)
            digest.update(handle.read())
    return digest.hexdigest()[:32]


#: a JSON path of plain members (``$.a.b``, ``$."a b".c``): read by :func:`_json_values_sql`
#: through one typed parse; any other path keeps DuckDB's own path lookup
_MEMBER_PATH = re.compile(r'\$(?:\.(?:"[^"\\]*"|[A-Za-z_][A-Za-z0-9_]*))+')
_MEMBER = re.compile(r'\.(?:"([^"\\]*)"|([A-Za-z_][A-Za-z0-9_]*))')


@dataclass
class _JsonNode:
    """A member of the JSON paths read: its children, and whether a path ends here."""

    children: dict[str, _JsonNode] = field(default_factory=dict)
    ends_here: bool = False


def _json_values_sql(paths: list[str], obj: str) -> list[str]:
    """Select lists, innermost first, that give ``_jp_<i>``: the value at ``paths[i - 1]`` of
    JSON object ``obj`` as ``json_extract_string`` reads it (a string unquoted, any other
    value as its JSON text, null and absent as NULL; a parent that is not an object gives
    NULL; the first of repeated keys wins; keys match case and all).

    One ``json_transform`` into a struct of every member read parses each line once and finds
    each value by a hash of its key; one ``json_extract_string`` of 83 paths parsed once but
    walked the object's keys for each path (a third of an NDJSON ingest's parse). A member
    read whole and also looked into (``$.context`` and ``$.context.page.url``) is kept as JSON
    text and transformed again on its own.
    """
    root = _JsonNode()
    ends: dict[int, list[str]] = {}  # path number -> its keys, for member paths
    others: list[int] = []  # path numbers read by json_extract_string
    for number, path in enumerate(paths, start=1):
        if not _MEMBER_PATH.fullmatch(path):
            others.append(number)
            continue
        keys = [m[1] if m[1] is not None else m[2] for m in _MEMBER.finditer(path)]
        node = root
        for key in keys:
            node = node.children.setdefault(key, _JsonNode())
        node.ends_here = True
        ends[number] = keys
    layers: list[list[str]] = [[]]
    refs: dict[tuple[str, ...], str] = {}  # member keys -> SQL of its value in a struct
    texts: dict[tuple[str, ...], str] = {}  # keys of a member kept as JSON -> its text

    def shape(node: _JsonNode, keys: tuple[str, ...], ref: str, depth: int) -> object:
        members: dict[str, object] = {}
        for index, (key, child) in enumerate(node.children.items(), start=1):
            here, child_ref = (*keys, key), f"struct_extract_at({ref}, {index})"
            refs[here] = child_ref
            if not child.children:
                members[key] = "VARCHAR"
            elif child.ends_here:  # read whole and looked into: JSON text, parsed again
                members[key] = "JSON"
                texts[here] = f"CAST({child_ref} AS VARCHAR)"
                alias = f"_js_{len(texts)}"
                inner = _shape_sql(shape(child, here, alias, depth + 1))
                while len(layers) <= depth + 1:
                    layers.append([])
                layers[depth + 1].append(f"json_transform({child_ref}, {inner}) AS {alias}")
            else:
                members[key] = shape(child, here, child_ref, depth)
        return members

    if root.children:
        layers[0].append(f"json_transform({obj}, {_shape_sql(shape(root, (), '_js_0', 0))}) "
                         "AS _js_0")
    if others:
        listed = ", ".join(_sql_str(paths[n - 1]) for n in others)
        layers[0].append(f"json_extract_string({obj}, [{listed}]) AS _jx")
    values = []
    for number in range(1, len(paths) + 1):
        if number in ends:
            keys = tuple(ends[number])
            text = texts.get(keys)
            # JSON text of a string is quoted: unquote it, as json_extract_string does
            value = refs[keys] if text is None else (
                f"CASE WHEN starts_with({text}, '\"') THEN json_extract_string({text}, '$') "
                f"ELSE {text} END")
        else:
            value = f"_jx[{others.index(number) + 1}]"
        values.append(f"{value} AS _jp_{number}")
    layers.append(values)
    return [", ".join(layer) for layer in layers if layer] or ["NULL AS _jp_0"]


def _held_by(path: str, layout: Layout) -> bool:
    """Whether a line of ``layout`` (:func:`~touchline.collect.segment.object_keys_sql`) may
    hold a value at JSON ``path``: false only when the layout lists the keys of an object the
    path goes through and the path's next member is not among them (or that object is
    missing, or not an object)."""
    if not _MEMBER_PATH.fullmatch(path):
        return True
    keys = [m[1] if m[1] is not None else m[2] for m in _MEMBER.finditer(path)]
    listed = dict(zip(_LAYOUT_OBJECTS, layout, strict=True))
    at: tuple[str, ...] = ()
    for key in keys:
        if at not in listed:
            return True
        members = listed[at]
        if members is None or key not in members:
            return False
        at = (*at, key)
    return True


def _member_prefixes(path: str) -> list[tuple[str, str]]:
    """The members a JSON path of plain members goes into, each with the rest of the path
    inside it: ``$.a.b.c`` → ``[("a", "$.b.c"), ("a.b", "$.c")]`` (quoted as needed); none for
    a path of one member or with array indexes."""
    if not _MEMBER_PATH.fullmatch(path):
        return []
    keys = [m[1] if m[1] is not None else m[2] for m in _MEMBER.finditer(path)]
    spelled = [k if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", k) else _quote(k) for k in keys]
    return [(".".join(spelled[:j]), "$." + ".".join(spelled[j:])) for j in range(1, len(keys))]


def _shape_sql(shape: object) -> str:
    """A ``json_transform`` structure as an SQL string literal."""
    return _sql_str(orjson.dumps(shape).decode())


class _ChunkParser:
    """Turns reader chunks into typed canonical rows and reject rows, on a private DuckDB."""

    def __init__(
        self,
        spec: store.TableSpec,
        fmt: str,
        mapping: Mapping,
        settings: Settings,
        source_default: str | None,
        ingest_id: str,
    ) -> None:
        self.spec, self.fmt, self.mapping, self.settings = spec, fmt, mapping, settings
        self.ingest_id = ingest_id
        self.source_default = source_default
        self._extract_sql: str | None = None
        self._validate_sql: str | None = None
        self._checks_sql: str | None = None
        self.sourced: frozenset[str] = frozenset()  # canonical columns the input gives a value
        self.ignored: list[str] = []
        self.native: set[str] = set()  # canonical columns already typed in the input (Parquet)
        self.json_sources: list[str] = []  # CSV/Parquet columns read with JSON paths
        self.hash_skips: set[str] = set()  # columns left out of the content hash
        self.layouts: list[Layout] = []  # NDJSON key layouts known to repeat no key
        #: while a query for lines of these layouts is built: the paths they may hold
        self._held: list[Layout] | None = None
        self._layout_sql = ("", "")  # the last such query, after its layouts

    # -- stage 1: canonical columns as text (or as typed Parquet columns) -------------------
    def _build_extract(self, chunk_schema: pa.Schema, where: str) -> str:
        """The first query: each canonical column as text (``s_<name>``), with ``_line``,
        ``_raw`` and, for CSV and Parquet, ``_json_bad`` (the JSON columns whose cell did not
        parse) and one ``_jbad_<i>`` flag per JSON column."""
        spec, mapping = self.spec, self.mapping
        names = [c.name for c in spec.columns]
        exprs: dict[str, str] = {}
        json_paths: dict[str, int] = {}  # one parse per line: all paths in one call
        wrap = ""  # sub-selects around the source that parse JSON columns once a row
        if self.fmt == "ndjson":
            self.json_sources = []  # members a mapped path goes into: JSON, or JSON text
            encoded: dict[str, str] = {}  # such a member -> its value as text

            def value_at(path: str) -> str:
                if self._held is not None and not any(_held_by(path, h) for h in self._held):
                    return "CAST(NULL AS VARCHAR)"  # and what is made of it folds before it runs
                # one trim per value here: a guard would extract _jp_<i> three times
                return f"nullif(trim(_jp_{json_paths.setdefault(path, len(json_paths) + 1)}), '')"

            def through_strings(path: str, value: str) -> str:
                # a mapped path also reads through a member that holds its object as JSON
                # text (an export's JSON-encoded properties): the text is decoded and the rest
                # of the path read inside it
                fallbacks = []
                for member, rest in reversed(_member_prefixes(path)):
                    if member not in encoded:
                        encoded[member] = value_at(f"$.{member}")
                        self.json_sources.append(member)
                    text = encoded[member]
                    fallbacks.append(
                        f"CASE WHEN starts_with({text}, '{{') AND json_valid({text}) THEN "
                        f"nullif(trim(json_extract_string({text}, {_sql_str(rest)})), '') END")
                return f"coalesce({value}, {', '.join(fallbacks)})" if fallbacks else value

            def resolve(sources: tuple[str, ...], mapped: bool = True) -> str | None:
                parts = [through_strings(p, value_at(p)) if mapped else value_at(p)
                         for p in (_json_path(s) for s in sources)]
                return parts[0] if len(parts) == 1 else f"coalesce({', '.join(parts)})"

            for name in names:
                own = (f"$.{name}", f"$.{_camel(name)}")  # a flat line: the column's own key
                if name in mapping.columns:
                    exprs[name] = resolve(mapping.columns[name])  # type: ignore[assignment]
                elif spec.name == "events" and name in SEGMENT_PATHS:
                    # Segment's places first, then the column's own name: a flat export (the
                    # CSV's columns as the keys of each line: "url", "user_agent") reads as
                    # its CSV does, and a Segment line, which has no such keys, as before
                    exprs[name] = resolve(  # type: ignore[assignment]
                        tuple(dict.fromkeys((*SEGMENT_PATHS[name], *own))), mapped=False)
                else:
                    exprs[name] = resolve(  # type: ignore[assignment]
                        tuple(dict.fromkeys(own)), mapped=False)
            if spec.name in ("deals", "calls") and "properties" not in mapping.columns:
                exprs["properties"] = self._ndjson_leftovers(exprs["properties"])
        else:
            available = chunk_schema.names
            json_columns = self._json_columns(available)
            used: set[str] = set(json_columns)

            def resolve(sources: tuple[str, ...]) -> str | None:
                parts = []
                for source in sources:
                    split = split_column_path(source) if is_json_path(source) else None
                    if split is not None and split[0] in json_columns:
                        index, paths = json_columns[split[0]]
                        parts.append(f"nullif(trim(_jv_{index}[{paths.index(split[1]) + 1}]), '')")
                    elif source in json_columns:  # the whole JSON text, when it parses
                        parts.append(f"_jt_{json_columns[source][0]}")
                    elif source in available:
                        used.add(source)
                        parts.append(self._as_text(source, chunk_schema.field(source).type))
                if not parts:
                    return None
                return parts[0] if len(parts) == 1 else f"coalesce({', '.join(parts)})"

            for name in names:
                sources = mapping.sources_for(name, available)
                present = [s for s in sources if s in available]
                if name in mapping.columns and (len(present) < len(sources) or any(
                        s in json_columns for s in present)):
                    # JSON paths, or a column of which some rows are checked JSON text
                    expr = resolve(sources)
                    if expr is None:
                        raise InputError(
                            f"{where}: mapping {mapping.origin} maps {name} to {list(sources)}, "
                            f"but the file has none of them; its columns are {available}"
                        )
                    exprs[name] = expr
                    continue
                used.update(present)
                if present and self._is_native(chunk_schema, present, spec.column(name).dtype):
                    self.native.add(name)
                    sql_type = _SQL_TYPES[type(spec.column(name).dtype).__name__]
                    parts = [f"CAST({_quote(s)} AS {sql_type})" for s in present]
                    exprs[name] = parts[0] if len(parts) == 1 else f"coalesce({', '.join(parts)})"
                elif present:
                    exprs[name] = resolve(tuple(present))  # type: ignore[assignment]
            for per_type in mapping.event_types.values():
                for name, sources in per_type.columns.items():
                    if resolve(sources) is None:
                        raise InputError(
                            f"{where}: mapping {mapping.origin} maps {name} to {list(sources)} "
                            f"for some event types, but the file has none of them; its columns "
                            f"are {available}"
                        )
            self.ignored = [c for c in available if c not in used]
            if not used:
                header = (
                    f"line 1: the header {available} names"
                    if self.fmt == "csv"
                    else f"its columns {available} name"
                )
                raise InputError(
                    f"{where}: {header} no column of table {spec.name!r} "
                    f"({', '.join(names)}); rename them or map them with --map (see "
                    "docs/ingest.md)"
                )
            if (spec.name in ("deals", "events", "calls") and "properties" not in exprs
                    and self.ignored):
                # an export's extra columns (a CRM's owner, segment, lead type; a web export's
                # page type; a call tracker's campaign and landing page) are kept, not dropped
                pairs = ", ".join(f"{_sql_str(c)}, {_quote(c)}" for c in self.ignored)
                exprs["properties"] = f"CAST(json_object({pairs}) AS VARCHAR)"
                self.ignored = []
                # an export loaded before unmapped columns were kept keeps its content hashes
                self.hash_skips.add("properties")
            wrap = self._json_wrap(json_columns, chunk_schema)
        for name, value in self.mapping.defaults.items():
            exprs[name] = f"coalesce({exprs[name]}, {_sql_str(value)})" if name in exprs else (
                _sql_str(value)
            )
        if "source" not in exprs and self.source_default and "source" in names:
            exprs["source"] = _sql_str(self.source_default)
        if mapping.event_types:
            self._apply_event_types(exprs, resolve, where)
        url_params = self._derive_event_fields(exprs) if spec.name == "events" else ""
        self.sourced = frozenset(exprs)
        missing = [r for r in spec.required if r not in exprs]
        if spec.name == "events" and "timestamp" in missing and (
            {"original_timestamp", "received_at"} & set(exprs)
        ):
            missing.remove("timestamp")
        if missing and self.fmt != "ndjson":
            raise InputError(
                f"{where}: missing column(s) {missing} required for table {spec.name!r}; the "
                f"file has {chunk_schema.names}. Rename them or map them with --map (see "
                "docs/ingest.md)"
            )
        select = [
            f"{exprs[n]} AS {_quote('s_' + n)}" if n in self.native
            else f"CAST({exprs.get(n, 'NULL')} AS VARCHAR) AS {_quote('s_' + n)}"
            for n in names
        ]
        if self.fmt != "ndjson":
            flags = [f"_jbad_{i}" for i in range(len(self.json_sources))]
            bad = (
                "nullif(concat_ws(', ', " + ", ".join(
                    f"CASE WHEN _jbad_{i} THEN {_sql_str(c)} END"
                    for i, c in enumerate(self.json_sources)) + "), '')"
                if flags else "CAST(NULL AS VARCHAR)"
            )
            return (
                f"SELECT _line, _raw, {bad} AS _json_bad, {''.join(f + ', ' for f in flags)}"
                f"{', '.join(select)} FROM {url_params}{wrap}" + ")" * (
                    url_params.count("(SELECT") + wrap.count("(SELECT"))
            )
        # JSON functions raise on malformed input: extract only from lines that are objects
        layers = _json_values_sql(list(json_paths), "_obj")
        values = "".join(f"(SELECT *, {layer} FROM " for layer in reversed(layers))
        # a member a mapped path goes into that holds neither an object nor an object's JSON
        # text (a bare string, a number, broken JSON): what was read from it is lost, and said
        flags = [
            f"coalesce(NOT (starts_with({text}, '{{') OR starts_with({text}, '[')) "
            f"OR NOT json_valid({text}), false) AS _jbad_{i}"
            for i, text in enumerate(encoded.values())
        ]
        bad = (
            "nullif(concat_ws(', ', " + ", ".join(
                f"CASE WHEN _jbad_{i} THEN {_sql_str(m)} END"
                for i, m in enumerate(self.json_sources)) + "), '')"
            if flags else "CAST(NULL AS VARCHAR)"
        )
        flag_list = "".join(f"_jbad_{i}, " for i in range(len(flags)))
        inner = f"SELECT *, {', '.join(flags)} FROM " if flags else "SELECT * FROM "
        if self._held is not None:
            # lines of known layouts: objects that repeat no key (see split_by_layout)
            return (
                f"SELECT _line, _raw, {bad} AS _json_bad, {flag_list}true AS _json_ok, "
                "'OBJECT' AS _json_type, false AS _duplicate_keys, "
                f"{', '.join(select)} FROM ({inner}{url_params}{values}("
                "SELECT *, line AS _obj FROM {source})"
            ) + ")" * (len(layers) + 1 + url_params.count("(SELECT"))
        return (
            f"SELECT _line, _raw, {bad} AS _json_bad, {flag_list}_json_ok, _json_type, "
            f"_duplicate_keys, {', '.join(select)} FROM ({inner}{url_params}{values}("
            "SELECT *, CASE WHEN _json_type = 'OBJECT' THEN line END AS _obj, "
            f"{_REPEATED_KEY} AS _duplicate_keys FROM ("
            "SELECT *, _json_type IS NOT NULL AS _json_ok FROM ("
            # a line with a key has an object at its root; the type of any other JSON is asked
            "SELECT *, CASE WHEN _keys IS NULL THEN NULL WHEN len(_keys[1]) > 0 THEN 'OBJECT' "
            "ELSE json_type(line) END AS _json_type FROM ("
            # one parse tells whether the line is JSON and lists its keys: json_keys fails on
            # a line that is not JSON, and try() turns that into NULL
            f"SELECT *, try({object_keys_sql('line')}) AS _keys FROM {{source}}))))"
        ) + ")" * (len(layers) + 1 + url_params.count("(SELECT"))

    def learn_layouts(self, db: duckdb.DuckDBPyConnection, source: str, lines: int) -> None:
        """Note the layouts (:func:`~touchline.collect.segment.object_keys_sql`) that the
        first lines of NDJSON relation ``source`` (of ``lines`` lines) mostly share and that
        repeat no key: the next :meth:`sql` recognises them by one comparison each and checks
        only the lines of other layouts key by key (a hostile line costs what it did before)."""
        found = db.execute(
            f"SELECT _keys, count(*) AS n FROM (SELECT try({object_keys_sql('line')}) AS _keys "
            f"FROM (SELECT line FROM {source} LIMIT {_LAYOUT_SAMPLE})) WHERE _keys IS NOT NULL "
            f"GROUP BY _keys ORDER BY n DESC LIMIT {_LAYOUTS_KEPT}"
        ).fetchall()
        least = max(1, min(lines, _LAYOUT_SAMPLE) // 20)  # a twentieth of the lines looked at
        self.layouts = [keys for keys, n in found if n >= least and not repeats_key(keys)]

    def split_by_layout(self, db: duckdb.DuckDBPyConnection, source: str, others: str,
                        schema: pa.Schema, where: str) -> list[str]:
        """Parse queries for NDJSON relation ``source``: one for its lines of the layouts
        :meth:`learn_layouts` noted, one for the rest (noted in table ``others``; none if no
        line is left).

        A line of a known layout is an object that repeats no key and lacks every member the
        layout does not list: its query reads only the paths the layouts hold, and every
        value read from a path they lack is a NULL constant, so what is made of it (typed
        casts, checks, the content hash) folds away before it runs. The other lines take the
        query that checks and reads everything.
        """
        layouts = [layout for layout in self.layouts if layout[0]]  # an object at the root
        if not layouts:
            return [self.sql(schema, source, where)]
        known = " OR ".join(f"_keys = {layout_sql(layout)}" for layout in layouts)
        db.execute(
            f"CREATE OR REPLACE TEMP TABLE {others} AS SELECT _line FROM (SELECT _line, "
            f"try({object_keys_sql('line')}) AS _keys FROM {source}) "
            f"WHERE NOT coalesce({known}, false)"
        )
        key = orjson.dumps(layouts).decode()
        if self._layout_sql[0] != key:  # chunks mostly share their layouts: built once
            self._held = layouts
            try:
                extract = self._build_extract(schema, where)
                self._layout_sql = (key, self._build_validate().replace("{extracted}", extract))
            finally:
                self._held = None
        queries = [self._layout_sql[1].replace(
            "{source}", f"(SELECT * FROM {source} ANTI JOIN {others} USING (_line))")]
        if db.execute(f"SELECT count(*) FROM {others}").fetchone()[0]:  # type: ignore[index]
            queries.append(self.sql(
                schema, f"(SELECT * FROM {source} SEMI JOIN {others} USING (_line))", where))
        return queries

    def _json_columns(self, available: list[str]) -> dict[str, tuple[int, list[str]]]:
        """``column -> (index, JSON paths read from it)`` for each column of the file that a
        mapping source reads with a JSON path (``$.event_data.revenue`` reads ``event_data``)."""
        found: dict[str, tuple[int, list[str]]] = {}
        for source in self.mapping.all_sources():
            split = split_column_path(source) if is_json_path(source) else None
            if split is None or split[0] not in available:
                continue
            column, path = split
            _, paths = found.setdefault(column, (len(found), []))
            if path not in paths:
                paths.append(path)
        self.json_sources = list(found)
        return found

    def _json_wrap(self, json_columns: dict[str, tuple[int, list[str]]],
                   schema: pa.Schema) -> str:
        """Sub-selects that parse each JSON column once a row: ``_jt_<i>`` its text when it is
        valid JSON, ``_jbad_<i>`` whether a value was given that is not, ``_jv_<i>`` the list of
        values at its paths. Returns the opening to put before ``{source}``."""
        if not json_columns:
            return "{source}"
        inner, outer = [], []
        for column, (i, paths) in json_columns.items():
            text = self._as_text(column, schema.field(column).type)
            inner.append(f"CASE WHEN json_valid({text}) THEN {text} END AS _jt_{i}, "
                         f"coalesce({text} IS NOT NULL AND NOT json_valid({text}), false) "
                         f"AS _jbad_{i}")
            path_list = ", ".join(_sql_str(p) for p in paths)
            outer.append(f"json_extract_string(_jt_{i}, [{path_list}]) AS _jv_{i}")
        return (f"(SELECT *, {', '.join(outer)} FROM (SELECT *, {', '.join(inner)} "
                "FROM {source}")

    def _apply_event_types(self, exprs: dict[str, str],
                           resolve: Callable[[tuple[str, ...]], str | None], where: str) -> None:
        """Per event type, replace columns (``[event_types.<name>] columns`` / ``defaults``), set
        the call type and rename the event, keyed on the event name as read."""
        mapping = self.mapping
        if "event" not in exprs:
            raise InputError(f"{where}: mapping {mapping.origin} has [event_types] but the file "
                             "has no event name column to choose them by (map event)")
        event = exprs["event"]
        changed = {n for m in mapping.event_types.values() for n in (*m.columns, *m.defaults)}
        for name in sorted(changed):
            base = exprs.get(name, "NULL")
            cases = []
            for event_type, per_type in mapping.event_types.items():
                if name not in per_type.columns and name not in per_type.defaults:
                    continue
                value = resolve(per_type.columns[name]) if name in per_type.columns else base
                fallbacks = [value or "NULL"]
                if name in per_type.defaults:
                    fallbacks.append(_sql_str(per_type.defaults[name]))
                if name in mapping.defaults:
                    fallbacks.append(_sql_str(mapping.defaults[name]))
                chosen = (fallbacks[0] if len(fallbacks) == 1
                          else f"coalesce({', '.join(fallbacks)})")
                cases.append(f"WHEN {_sql_str(event_type)} THEN {chosen}")
            exprs[name] = f"CASE {event} {' '.join(cases)} ELSE {base} END"
        types = [f"WHEN {_sql_str(t)} THEN {_sql_str(m.type)}"
                 for t, m in mapping.event_types.items() if m.type]
        if types:  # the call type these rows are (``page_viewed`` rows are page views)
            exprs["type"] = f"CASE {event} {' '.join(types)} ELSE {exprs.get('type', 'NULL')} END"
        renames = [f"WHEN {_sql_str(t)} THEN {_sql_str(m.rename)}"
                   for t, m in mapping.event_types.items() if m.rename]
        if renames:
            exprs["event"] = f"CASE {event} {' '.join(renames)} ELSE {event} END"

    def _ndjson_leftovers(self, given: str) -> str:
        """A deal's or call's line's keys that no column of its table reads, as a JSON object
        (null when none is left), merged under its own ``properties`` object: nothing of a CRM
        or call-tracking export is dropped.
        ``json_merge_patch`` with a null value deletes a key."""
        taken: set[str] = set()
        for column in self.spec.columns:
            taken.update({column.name, _camel(column.name)})
        for source in self.mapping.all_sources():
            split = split_column_path(_json_path(source))
            if split is not None:
                taken.add(split[0])
        patch = _sql_str(orjson.dumps(dict.fromkeys(sorted(taken))).decode())
        rest = f"nullif(CAST(json_merge_patch(_obj, {patch}) AS VARCHAR), '{{}}')"
        # both: the line's own properties win over a top-level key of the same name
        return (f"CASE WHEN {rest} IS NULL THEN {given} WHEN {given} IS NULL THEN {rest} "
                f"WHEN json_type({given}) = 'OBJECT' "
                f"THEN CAST(json_merge_patch({rest}, {given}) AS VARCHAR) ELSE {given} END")

    @staticmethod
    def _is_native(schema: pa.Schema, columns: list[str], dtype: dt.DataType) -> bool:
        """Input columns that already hold the canonical type need no parsing."""
        types = [schema.field(c).type for c in columns]
        if dtype.is_timestamp():
            return all(pa.types.is_timestamp(t) and not t.tz for t in types)
        if dtype.is_floating():
            return all(pa.types.is_floating(t) or pa.types.is_integer(t) for t in types)
        if dtype.is_integer():
            return all(pa.types.is_integer(t) for t in types)
        if dtype.is_boolean():
            return all(pa.types.is_boolean(t) for t in types)
        if dtype.is_date():
            return all(pa.types.is_date(t) for t in types)
        return False

    def _as_text(self, column: str, arrow_type: pa.DataType) -> str:
        ref = _quote(column)
        if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
            return _trimmed(ref)
        if pa.types.is_timestamp(arrow_type) and arrow_type.tz:
            return f"strftime(timezone('UTC', {ref}), '%Y-%m-%dT%H:%M:%S.%f')"
        if pa.types.is_timestamp(arrow_type):
            return f"strftime({ref}, '%Y-%m-%dT%H:%M:%S.%f')"
        if pa.types.is_struct(arrow_type) or pa.types.is_list(arrow_type) or pa.types.is_map(
            arrow_type
        ):
            return f"to_json({ref})::VARCHAR"
        return f"CAST({ref} AS VARCHAR)"

    @staticmethod
    def _derive_event_fields(exprs: dict[str, str]) -> str:
        """UTMs and click ids from the page URL's query when the payload lacks them.

        The query is the text after the URL's first ``?`` up to a ``#``, its pairs split on
        ``&``, each pair's key before its first ``=`` and its value up to the next ``=``. Keys
        compare lower-cased; the first pair of a key wins; values are URL-decoded by
        :func:`~touchline.collect.segment.url_decoded_sql`, as the loader does. A parameter is
        looked up only where the payload gave no value and the lower-cased URL holds its name
        (a scan): most rows need none, and one regular expression a parameter found costs far
        less than splitting every query into a list of pairs and searching it per parameter
        (that was most of a Parquet ingest's parse time). Returns the opening of the
        sub-select that computes the parameters, to wrap the source.
        """
        if "url" not in exprs:
            return ""
        url = exprs["url"]
        picks = []
        for name in (*UTM_FIELDS, *CLICK_IDS):
            given = exprs.get(name)
            # the first pair whose key is exactly ``name``: a lazy run of whole pairs before it
            pattern = f"(?i)^[^?]*[?](?:[^#]*?&)??{name}(?:=([^&#=]*)|[&#]|$)"
            wanted = f"contains(_ql, '{name}')" if given is None else (
                f"({given}) IS NULL AND contains(_ql, '{name}')")
            picks.append(f"CASE WHEN {wanted} THEN "
                         f"nullif(regexp_extract({url}, '{pattern}', 1), '') END AS _p_{name}")
            param = url_decoded_sql(f"_p_{name}")
            exprs[name] = f"coalesce({given}, {param})" if given is not None else param
        return (f"(SELECT *, {', '.join(picks)} FROM (SELECT *, "
                f"CASE WHEN contains({url}, '?') THEN lower({url}) END AS _ql FROM ")

    # -- stage 2: typed columns and the first problem of each row ---------------------------
    def _typed(self, name: str, dtype: dt.DataType) -> tuple[str, str]:
        """SQL for the typed value and for 'the raw value was given but did not parse'."""
        raw = _quote("s_" + name)
        if name in self.native:
            return raw, ""
        if dtype.is_timestamp():
            parsers = []
            if self.mapping.timestamp_format:
                fmt = _sql_str(self.mapping.timestamp_format)
                parsers.append(f"try_strptime({raw}, {fmt})")
            parsers.append(row_timestamp_sql(raw))
            typed = f"coalesce({', '.join(parsers)})"
            return typed, "an ISO 8601 timestamp, epoch seconds or epoch milliseconds"
        if dtype.is_date():
            typed = (f"coalesce(TRY_CAST({raw} AS DATE), "
                     f"CAST(timezone('UTC', TRY_CAST({raw} AS TIMESTAMPTZ)) AS DATE))")
            return typed, "a date (YYYY-MM-DD)"
        if dtype.is_floating():
            typed = (
                f"coalesce(TRY_CAST({raw} AS DOUBLE), CASE WHEN regexp_full_match({raw}, "
                f"'-?[0-9]+,[0-9]+') THEN TRY_CAST(replace({raw}, ',', '.') AS DOUBLE) END)"
            )
            typed = f"CASE WHEN isfinite({typed}) THEN {typed} END"
            return typed, "a number"
        if dtype.is_integer():
            as_double = f"TRY_CAST({raw} AS DOUBLE)"
            typed = (
                f"coalesce(TRY_CAST({raw} AS BIGINT), CASE WHEN {as_double} = round({as_double}) "
                f"AND abs({as_double}) < 9e15 THEN CAST({as_double} AS BIGINT) END)"
            )
            return typed, "a whole number"
        if dtype.is_boolean():
            typed = (
                f"CASE WHEN lower({raw}) IN ('true', 't', 'yes', 'y', '1') THEN true "
                f"WHEN lower({raw}) IN ('false', 'f', 'no', 'n', '0') THEN false END"
            )
            return typed, "true/false, yes/no or 1/0"
        return raw, ""

    def _build_validate(self, *, checks_only: bool = False) -> str:
        """Two levels: typed casts once (``t_*``), then problems and output over them.

        ``checks_only``: the key as given (no content hash in its place) and each row's
        problem, with no raw text: what :meth:`checks_sql` returns.
        """
        spec = self.spec
        casts: list[str] = []
        typed: dict[str, str] = {}
        problems: list[tuple[str, str, str, str]] = []  # (condition, field, code, message)
        if self.fmt == "ndjson":
            problems.append(("NOT _json_ok", "", "invalid_json", "'line is not valid JSON'"))
            problems.append((
                "_json_type <> 'OBJECT'", "", "not_an_object",
                "'line is JSON but not an object: ' || _json_type",
            ))
            problems.append((
                "_duplicate_keys", "", "duplicate_key",
                "'a key appears twice in one object: which copy is meant is unknown'",
            ))
        for column in spec.columns:
            expr, expected = self._typed(column.name, column.dtype)
            ref = _quote("t_" + column.name)
            casts.append(f"{expr} AS {ref}")
            typed[column.name] = ref
            if expected:
                raw = _quote("s_" + column.name)
                shown = f"left({raw}, {_VALUE_SHOWN})"
                problems.append((
                    f"{raw} IS NOT NULL AND {ref} IS NULL",
                    column.name,
                    f"bad_{_TYPE_CODES[type(column.dtype).__name__]}",
                    f"'field {column.name}: ''' || {shown} || ''' is not {expected}'",
                ))
        if spec.name == "events":
            self._event_rules(typed, problems)
        problems[:0] = self._bad_json_rules(typed)
        for name in spec.required:
            if name == "timestamp" and spec.name == "events":
                continue  # handled by the event rules (falls back to other clocks)
            problems.append((
                f"({typed[name]}) IS NULL", name, f"missing_{name}",
                f"'required field {name} is missing or empty'",
            ))
        if spec.name == "number_leases":
            self._lease_rules(typed, problems)
        if spec.name == "experiments":
            self._experiment_rules(typed, problems)
        if spec.name == "reviews":
            # the forms the identity graph keys people by (prepare/standardise.py)
            typed["email"] = f"lower({typed['email']})"
            typed["phone"] = f"regexp_replace({typed['phone']}, '[ ().-]', '', 'g')"
        for column, low, high, code, what in RANGES.get(spec.name, ()):
            ref = typed[column]
            outside = f"{ref} < {low}" + ("" if high is None else f" OR {ref} > {high}")
            problems.append((
                f"coalesce({outside}, false)", column, code,
                f"'field {column}: ' || CAST({ref} AS VARCHAR) || ' is not {what}'",
            ))
        if spec.name == "deals":
            times = ", ".join(typed[t] for t in store.DEAL_TIMES)
            problems.append((
                f"coalesce({times}) IS NULL", "created_at", "missing_deal_time",
                f"'a deal needs a time: one of {', '.join(store.DEAL_TIMES)}'",
            ))
        cases = " ".join(
            f"WHEN {cond} THEN struct_pack(field := {_sql_str(fld)}, code := {_sql_str(code)}, "
            f"message := {msg})"
            for cond, fld, code, msg in problems
        )
        key = spec.key
        # concat_ws skips nulls: a column added since hashes were defined joins the hash only
        # when it is set, so a row without it keeps the hash an older version gave it
        content = ", ".join(
            f"CAST({typed[c.name]} AS VARCHAR)" if c.name in HASH_IF_SET
            else f"coalesce(CAST({typed[c.name]} AS VARCHAR), '')"
            for c in spec.columns
            if c.name not in (key, "ingest_id", "source", "row_hash", *self.hash_skips)
        )
        content_hash = f"md5(concat_ws(chr(31), {content}))"
        if checks_only:
            # only the key as given and the problems: the columns that feed nothing else (the
            # URL's query, the long texts) are not even read
            return (
                f"SELECT _key AS {_quote(key)}, _line, _problem.field AS _pfield, "
                "_problem.code AS _pcode, _problem.message AS _pmessage, _json_bad, "
                "CAST(NULL AS VARCHAR) AS _raw FROM ("
                f"SELECT _line, _json_bad, {typed[key]} AS _key, CASE {cases} END AS _problem "
                f"FROM (SELECT *, {', '.join(casts)} FROM ({{extracted}})))"
            )
        if key == "row_hash":
            typed["row_hash"] = content_hash
        elif key in ("message_id", "lease_id"):
            typed[key] = f"coalesce({typed[key]}, 'h-' || {content_hash})"
        typed["ingest_id"] = _sql_str(self.ingest_id)
        columns = ", ".join(f"{typed[c.name]} AS {_quote(c.name)}" for c in spec.columns)
        outputs = ", ".join(_quote(c.name) for c in spec.columns)
        return (
            # raw text is kept for rejected rows only: good rows do not need it
            f"SELECT {outputs}, _line, _problem.field AS _pfield, _problem.code AS _pcode, "
            "_problem.message AS _pmessage, _json_bad, CASE WHEN _problem IS NOT NULL "
            f"OR _json_bad IS NOT NULL THEN {_safe_raw_function(self.settings)}(coalesce(_raw, "
            "CAST(to_json(_checked) AS VARCHAR))) END AS _raw FROM ("
            f"SELECT _line, _raw, _json_bad, CASE {cases} END AS _problem, {columns} FROM ("
            f"SELECT *, {', '.join(casts)} FROM ({{extracted}}))) AS _checked"
        )

    @staticmethod
    def _lease_rules(typed: dict[str, str], problems: list[tuple[str, str, str, str]]) -> None:
        """Leases imported with their own times, so ``calls match`` can explain back-filled
        calls (the collector's leases carry the wall clock: a call from last year finds none).

        The number must be E.164 once spaces, dashes, dots and brackets are dropped (calls are
        matched on E.164, and a national number's country would be a guess); a lease must not
        end before it starts; only ``leased`` rows are imported (counted refusals are the
        collector's own bookkeeping).
        """
        number = typed["number"]
        compact = f"regexp_replace({number}, '[ ().-]', '', 'g')"
        typed["number"] = compact
        status = typed["status"] = f"coalesce(lower({typed['status']}), 'leased')"
        typed["pool"] = f"coalesce({typed['pool']}, 'import')"
        typed["request_count"] = f"coalesce({typed['request_count']}, 1)"
        shown = f"left({number}, {_VALUE_SHOWN})"
        problems.extend([
            (
                f"{number} IS NOT NULL AND NOT regexp_full_match({compact}, "
                "'[+][1-9][0-9]{6,14}')",
                "number", "bad_phone",
                f"'field number: ' || {shown} || ' is not an E.164 number (+, country code, "
                "digits)'",
            ),
            (
                f"({typed['expires_at']}) < ({typed['leased_at']})", "expires_at",
                "bad_lease_period", "'the lease ends (expires_at) before it starts (leased_at)'",
            ),
            (
                f"({status}) <> 'leased'", "status", "bad_status",
                f"'field status: ' || left({status}, {_VALUE_SHOWN}) || ' is not leased (only "
                "leases are imported)'",
            ),
        ])

    @staticmethod
    def _experiment_rules(typed: dict[str, str],
                          problems: list[tuple[str, str, str, str]]) -> None:
        """An experiment names what it tested (a channel or a campaign), a period that does
        not end before it starts, a known test type, and a measure with its interval around
        it: an estimate without bounds cannot say how far to trust it, and a bound on the
        wrong side of its estimate is a swapped column."""
        kind = typed["test_type"] = f"lower(trim({typed['test_type']}))"
        problems.extend([
            (f"({typed['channel']}) IS NULL AND ({typed['campaign']}) IS NULL", "channel",
             "missing_target", "'an experiment names the channel or the campaign it tested'"),
            (f"({typed['period_end']}) < ({typed['period_start']})", "period_end",
             "bad_period", "'the test ends (period_end) before it starts (period_start)'"),
            (f"({kind}) NOT IN ('geo', 'holdout')", "test_type", "bad_test_type",
             f"'field test_type: ' || left({kind}, {_VALUE_SHOWN}) || ' is not geo or "
             "holdout'"),
            (f"({typed['incremental_conversions']}) IS NULL AND ({typed['lift']}) IS NULL",
             "incremental_conversions", "missing_measure",
             "'an experiment gives incremental_conversions or lift'"),
        ])
        for measure in ("incremental_conversions", "lift"):
            value, low, high = (typed[measure], typed[f"{measure}_low"],
                                typed[f"{measure}_high"])
            problems.extend([
                (f"({value}) IS NOT NULL AND (({low}) IS NULL OR ({high}) IS NULL)",
                 f"{measure}_low", "missing_interval",
                 f"'{measure} needs its interval: {measure}_low and {measure}_high'"),
                (f"coalesce(({low}) > ({value}) OR ({value}) > ({high}), false)", measure,
                 "bad_interval", f"'{measure} ' || CAST({value} AS VARCHAR) || ' lies outside "
                 f"its interval ' || CAST({low} AS VARCHAR) || ' to ' || CAST({high} AS VARCHAR)"),
            ])
        problems.append((f"coalesce(({typed['lift_low']}) <= -1, false)", "lift_low",
                         "bad_lift", "'a lift of -1 or less would mean negative conversions'"))

    def _bad_json_rules(self, typed: dict[str, str]) -> list[tuple[str, str, str, str]]:
        """A field the row cannot do without, read from a CSV/Parquet cell that is not JSON:
        the row is rejected as ``bad_json`` naming the field (rather than ``missing_*``, which
        would hide the cause). Other fields of a bad cell stay empty and the row loads; the
        commit records a ``bad_json_partial`` reject for it."""
        if not self.json_sources:
            return []
        fed: dict[str, set[int]] = {}
        scopes = [self.mapping.columns, *(m.columns for m in self.mapping.event_types.values())]
        for columns in scopes:
            for name, sources in columns.items():
                for source in sources:
                    if self.fmt == "ndjson":  # the members the path goes into
                        members = [m for m, _ in _member_prefixes(_json_path(source))]
                    else:
                        split = split_column_path(source) if is_json_path(source) else None
                        members = [split[0] if split is not None else source]
                    for column in members:
                        if column in self.json_sources:
                            fed.setdefault(name, set()).add(self.json_sources.index(column))
        spec = self.spec
        needed = {n: f"({typed[n]}) IS NULL" for n in spec.required}
        if spec.name == "events":
            needed["event"] = f"({typed['type']}) = 'track' AND ({typed['event']}) IS NULL"
            no_id = " AND ".join(f"({typed[c]}) IS NULL" for c in OFFLINE_IDS)
            needed.update(dict.fromkeys(OFFLINE_IDS, no_id))
        if spec.name == "deals":
            no_time = f"coalesce({', '.join(typed[t] for t in store.DEAL_TIMES)}) IS NULL"
            needed.update(dict.fromkeys(store.DEAL_TIMES, no_time))
        rules = []
        for name, indexes in sorted(fed.items()):
            if name not in needed:
                continue
            bad = " OR ".join(f"_jbad_{i}" for i in sorted(indexes))
            columns = ", ".join(self.json_sources[i] for i in sorted(indexes))
            rules.append((
                f"({bad}) AND {needed[name]}", name, "bad_json",
                _sql_str(f"field {name} is read from column {columns}, whose value here is not "
                         "valid JSON"),
            ))
        return rules

    def _event_rules(
        self, typed: dict[str, str], problems: list[tuple[str, str, str, str]]
    ) -> None:
        # the same canonical forms as the collector (touchline/collect/segment.py)
        typed["type"] = f"lower({typed['type']})"
        typed["email"] = f"lower({typed['email']})"
        # hex digests compare as text: one case, as the collector stores them
        typed["email_sha256"] = f"lower({typed['email_sha256']})"
        typed["phone_sha256"] = f"lower({typed['phone_sha256']})"
        typed["currency"] = f"upper({typed['currency']})"
        typed["timestamp"] = (
            f"coalesce({typed['timestamp']}, {typed['original_timestamp']}, {typed['received_at']})"
        )
        # a keyed or dropped address is the load's (collect/at_rest.py): from the full one
        if self.settings.ip_truncate and self.settings.ip_at_rest == "truncated":
            ip = typed["ip"]
            typed["ip"] = (
                f"CASE WHEN contains({ip}, ':') "
                f"THEN regexp_extract({ip}, '^([^:]*:[^:]*:[^:]*)', 1)"
                f" || '::' ELSE regexp_replace({ip}, '\\.[0-9]+$', '.0') END"
            )
            # the address lives on in `ip` (truncated); the context must not keep it whole
            context = typed["context"]
            typed["context"] = (
                f"CASE WHEN json_valid({context}) AND json_type({context}) = 'OBJECT' "
                f"THEN CAST(json_merge_patch({context}, '{{\"ip\": null}}') AS VARCHAR) "
                f"ELSE {context} END"
            )
        kinds = ", ".join(_sql_str(t) for t in EVENT_TYPES)
        problems.extend([
            (f"({typed['type']}) IS NULL", "type", "missing_type",
             "'required field type is missing'"),
            (
                f"({typed['type']}) NOT IN ({kinds})", "type", "bad_type",
                f"'field type: ' || left({typed['type']}, {_VALUE_SHOWN}) || ' is not one of "
                f"{', '.join(EVENT_TYPES)}'",
            ),
            (
                f"({typed['timestamp']}) IS NULL", "timestamp", "missing_timestamp",
                "'no timestamp, originalTimestamp or receivedAt'",
            ),
            (
                # offline records (a CRM export, a call log) may name the person only by
                # e-mail, phone or CRM contact id; prepare files them under that identifier
                " AND ".join(f"({typed[c]}) IS NULL" for c in OFFLINE_IDS),
                "anonymous_id", "missing_id",
                "'no anonymousId, userId, email, phone, hashed e-mail or phone, or CRM contact id "
                "is given'",
            ),
            (
                f"({typed['type']}) = 'track' AND ({typed['event']}) IS NULL", "event",
                "missing_event", "'a track call needs an event name'",
            ),
        ])

    def sql(self, schema: pa.Schema, source: str, where: str) -> str:
        """The query that turns relation ``source`` (input columns + ``_line``, ``_raw``) into
        staged rows: canonical typed columns, ``_line``, the first problem (``_pfield``,
        ``_pcode``, ``_pmessage``, null when the row is good) and ``_raw`` for bad rows."""
        if self._extract_sql is None:
            self._extract_sql = self._build_extract(schema, where)
            self._validate_sql = self._build_validate()
        assert self._validate_sql is not None
        query = self._validate_sql.replace(
            "{extracted}", self._extract_sql.replace("{source}", source)
        )
        # last: a key in a layout may hold anything, braces too
        return query.replace(_REPEATED_KEY, repeated_key_sql("_keys", self.layouts))

    def checks_sql(self, schema: pa.Schema, source: str, where: str) -> str | None:
        """A narrower query than :meth:`sql` for the checks of relation ``source``: its key as
        given and its problem (``_pfield``, ``_pcode``, ``_pmessage``, ``_json_bad``), ``_raw``
        always null.

        Where the key is given and the row has no problem, these are the checks :meth:`sql`
        gives: its content hash (which reads every column, the URL's query too) stands in only
        for a missing key, and its raw text is kept only for a rejected or partly read row.
        Those rows (key null, ``_pcode`` or ``_json_bad`` set) must be checked again with
        :meth:`sql`. None when the key is always the content hash, or the input has no column
        for it: every row would be checked twice.
        """
        if self.spec.key == "row_hash":
            return None
        self.sql(schema, source, where)  # builds the extract query once, and `sourced`
        if self.spec.key not in self.sourced or self.fmt == "ndjson":
            return None
        if self._checks_sql is None:
            self._checks_sql = self._build_validate(checks_only=True)
        assert self._extract_sql is not None
        return self._checks_sql.replace(
            "{extracted}", self._extract_sql.replace("{source}", source))


def _contacts_region(settings: Settings) -> str | None:
    """What :func:`touchline.store.safe_raw` is given: the phone region when rejected records
    must lose their e-mails and phones too (``pii_at_rest = "hashed"``), else None."""
    return settings.phone_region if settings.pii_at_rest == "hashed" else None


def _safe_raw_function(settings: Settings) -> str:
    region = _contacts_region(settings)
    return SAFE_RAW_FUNCTION if region is None else SAFE_RAW_CONTACTS_FUNCTION.format(
        region=region)


def _structural_rejects(rejects: list[readers.Reject], settings: Settings) -> pa.Table:
    return pa.table({
        "line": pa.array([r.line for r in rejects], pa.int64()),
        "field": pa.array([r.field for r in rejects], pa.string()),
        "reason_code": pa.array([r.reason_code for r in rejects], pa.string()),
        "reason": pa.array([r.reason for r in rejects], pa.string()),
        "raw": pa.array([store.safe_raw(r.raw, _contacts_region(settings)) for r in rejects],
                        pa.string()),
    }).cast(_REJECT_STAGE)


#: the columns of a staged row that its checks, dedupe and rejects read, besides its key
CHECKS = ("_line", "_pfield", "_pcode", "_pmessage", "_json_bad", "_raw")

_REJECT_STAGE = pa.schema([
    ("line", pa.int64()), ("field", pa.string()), ("reason_code", pa.string()),
    ("reason", pa.string()), ("raw", pa.string()),
])


class _Stage:
    """Where parsed rows wait until the whole file is read.

    On a DuckDB warehouse the parser runs on the warehouse's own connection and stages into
    temporary tables: no copy leaves the engine. Elsewhere (Spark) an in-process DuckDB parses
    and the staged rows go to Parquet files that the warehouse then reads.

    A Parquet file on DuckDB can be read again at little cost, so only its checks are staged
    (:meth:`add_checks`: key, line and problem of each row) and the rows to insert are parsed
    again from the file (a view): a full staged copy of every parsed column cost more than the
    second parse, and held the whole file in memory (7 GiB at 10M events).
    """

    def __init__(self, con: BaseBackend, settings: Settings, ingest_id: str) -> None:
        self.con, self.ingest_id = con, ingest_id
        self.in_engine = engine.engine_name(con) == "duckdb"
        if self.in_engine:
            self.db: duckdb.DuckDBPyConnection = con.con  # type: ignore[attr-defined]
            self.folder = None
        else:
            self.db = duckdb.connect(":memory:")
            self.db.execute("SET TimeZone = 'UTC'")
            if settings.threads:
                self.db.execute(f"SET threads = {int(settings.threads)}")
            self.folder = _staging_root(settings) / ingest_id
            for part in ("rows", "rejects"):
                (self.folder / part).mkdir(parents=True, exist_ok=True)
        _register_safe_raw(self.db, settings)
        self.rows_name = f"_tl_rows_{ingest_id}"
        self.checks_name = f"_tl_checks_{ingest_id}"
        self.others_name = f"_tl_other_lines_{ingest_id}"  # NDJSON lines of no known layout
        self.rejects_name = f"_tl_rejects_{ingest_id}"
        self.parts = 0
        self.has_rows = self.has_rejects = self.narrow = False

    def add_rows(self, query: str) -> None:
        """Run a parse query and stage its result."""
        if self.in_engine:
            verb = "INSERT INTO" if self.has_rows else "CREATE TEMP TABLE"
            self.db.execute(f"{verb} {self.rows_name} {'' if self.has_rows else 'AS'} {query}")
        else:
            assert self.folder is not None
            table = self.db.execute(query).fetch_arrow_table()
            pq.write_table(table, self.folder / "rows" / f"{self.parts:05d}.parquet")
            self.parts += 1
        self.has_rows = True

    def add_checks(self, query: str, key: str, *, checks: str | None = None) -> None:
        """Stage only the checks of parse query ``query`` (in-engine only); its rows are read
        through the view ``query`` when inserted. ``checks``: a narrower query that gives the
        same checks where the key is given and the row is good
        (:meth:`_ChunkParser.checks_sql`); the other rows must then be settled with
        :meth:`settle_checks`."""
        assert self.in_engine and not self.has_rows
        self.db.execute(
            f"CREATE TEMP TABLE {self.checks_name} AS SELECT {_quote(key)}, {', '.join(CHECKS)} "
            f"FROM ({checks or query})"
        )
        self.db.execute(f"CREATE TEMP VIEW {self.rows_name} AS {query}")
        self.has_rows = self.narrow = True

    def unsettled_lines(self, key: str) -> str | None:
        """After a narrow :meth:`add_checks`: the lines whose checks it could not give (key
        missing, a problem, a JSON cell that did not parse) as a table of ``_line``, or None
        when there are none."""
        self.db.execute(
            f"CREATE OR REPLACE TEMP TABLE {self.others_name} AS SELECT _line FROM "
            f"{self.checks_name} WHERE {_quote(key)} IS NULL OR _pcode IS NOT NULL "
            "OR _json_bad IS NOT NULL"
        )
        count = self.db.execute(f"SELECT count(*) FROM {self.others_name}").fetchone()
        return self.others_name if count and count[0] else None

    def settle_checks(self, query: str, key: str) -> None:
        """Replace the checks of the :meth:`unsettled_lines` by those of parse query ``query``
        (over those lines only)."""
        self.db.execute(f"DELETE FROM {self.checks_name} WHERE _line IN "
                        f"(SELECT _line FROM {self.others_name})")
        self.db.execute(f"INSERT INTO {self.checks_name} SELECT {_quote(key)}, "
                        f"{', '.join(CHECKS)} FROM ({query})")

    def add_rejects(self, table: pa.Table) -> None:
        if not table.num_rows:
            return
        if self.in_engine:
            self.db.register("_tl_structural", table)
            verb = "INSERT INTO" if self.has_rejects else "CREATE TEMP TABLE"
            self.db.execute(
                f"{verb} {self.rejects_name} {'' if self.has_rejects else 'AS'} "
                "SELECT * FROM _tl_structural"
            )
            self.db.unregister("_tl_structural")
        else:
            assert self.folder is not None
            pq.write_table(table, self.folder / "rejects" / f"{self.parts:05d}.parquet")
            self.parts += 1
        self.has_rejects = True

    def rows(self) -> ibis.Table | None:
        """The staged rows: every column of the table, ``_line`` and the checks."""
        if not self.has_rows:
            return None
        if self.in_engine:
            return self.con.table(self.rows_name)
        assert self.folder is not None
        return engine.read_parquet_dir(self.con, self.folder / "rows")

    def checks(self) -> ibis.Table | None:
        """The key, ``_line`` and checks of each staged row (:data:`CHECKS`), maybe more."""
        if self.narrow:
            return self.con.table(self.checks_name)
        return self.rows()

    def rejects(self) -> ibis.Table | None:
        if not self.has_rejects:
            return None
        if self.in_engine:
            return self.con.table(self.rejects_name)
        assert self.folder is not None
        return engine.read_parquet_dir(self.con, self.folder / "rejects")

    def close(self) -> None:
        if self.in_engine:
            self.db.execute(
                f"DROP {'VIEW' if self.narrow else 'TABLE'} IF EXISTS {self.rows_name}")
            for name in (self.checks_name, self.rejects_name, self.others_name):
                self.db.execute(f"DROP TABLE IF EXISTS {name}")
        else:
            self.db.close()
            assert self.folder is not None
            shutil.rmtree(self.folder, ignore_errors=True)


def _register_safe_raw(db: duckdb.DuckDBPyConnection, settings: Settings) -> None:
    """Make :func:`touchline.store.safe_raw` callable in the parse SQL, so a rejected row's raw
    text is cleaned by the one rejects builder's rule (secrets out, IPs truncated, one limit;
    e-mails and phones too when ``pii_at_rest = "hashed"``)."""
    region = _contacts_region(settings)

    def clean(raw: str | None) -> str | None:
        return store.safe_raw(raw, region)

    with contextlib.suppress(duckdb.Error):  # registered by an earlier ingest on this connection
        db.create_function(
            _safe_raw_function(settings), clean, [duckdb.sqltype("VARCHAR")],
            duckdb.sqltype("VARCHAR"), null_handling="special", side_effects=False,
        )


def _staging_root(settings: Settings) -> Path:
    url = settings.database_url
    if url.startswith("duckdb://") and url.removeprefix("duckdb://").removeprefix("/"):
        base = Path(url.removeprefix("duckdb://").removeprefix("/")).expanduser()
        return base.with_name(base.name + ".staging")
    return Path(tempfile.gettempdir()) / "touchline-staging"


def ingest_file(
    con: BaseBackend,
    path: Path,
    kind: str,
    *,
    settings: Settings,
    mapping: Mapping | None = None,
    fmt: str | None = None,
    source: str | None = None,
    progress: ProgressCallback | None = None,
) -> IngestResult:
    """Load one file into table ``kind``; see the module docstring for the flow.

    Raises :class:`InputError` for whole-file problems; then nothing is written.
    """
    if kind not in store.INGESTIBLE:
        raise InputError(f"unknown kind {kind!r}; choose from {', '.join(store.INGESTIBLE)}")
    started = time.perf_counter()
    started_at = datetime.now(UTC).replace(tzinfo=None)
    spec = store.TABLES[kind]
    fmt = fmt or readers.detect_format(path)
    mapping = mapping or Mapping()
    ingest_id = uuid.uuid4().hex[:16]
    result = IngestResult(str(path), kind, ingest_id)
    fingerprint = _fingerprint(path) if path.exists() and path.is_file() else ""
    store.init(con)
    stage = _Stage(con, settings, ingest_id)
    parser = _ChunkParser(spec, fmt, mapping, settings, source, ingest_id)
    # rows carry their line numbers: the order they are stored in means nothing
    with engine.unordered_writes(con):
        _ingest_into(con, stage, parser, result, path, fmt, fingerprint, started_at,
                     settings, progress)
    result.seconds = time.perf_counter() - started
    return result


def _ingest_into(
    con: BaseBackend,
    stage: _Stage,
    parser: _ChunkParser,
    result: IngestResult,
    path: Path,
    fmt: str,
    fingerprint: str,
    started_at: datetime,
    settings: Settings,
    progress: ProgressCallback | None,
) -> None:
    spec = parser.spec
    try:
        if fmt == "parquet" and stage.in_engine:
            result.rows_read = _stage_parquet_in_engine(stage, parser, path)
        else:
            for chunk in readers.iter_chunks(
                path, fmt, chunk_rows=settings.ingest_chunk_rows,
                max_line_bytes=settings.max_line_bytes,
            ):
                result.rows_read += len(chunk.lines) + len(chunk.rejects)
                if fmt != "ndjson":
                    # checks the header even when no row is usable (a header-only file)
                    parser.sql(chunk.table.schema, "_tl_chunk", str(path))
                if len(chunk.lines):
                    table = chunk.table.append_column("_line", pa.array(chunk.lines))
                    table = table.append_column("_raw", chunk.raw)
                    stage.db.register("_tl_chunk", table)
                    if fmt == "ndjson":
                        parser.learn_layouts(stage.db, "_tl_chunk", len(chunk.lines))
                        queries = parser.split_by_layout(
                            stage.db, "_tl_chunk", stage.others_name, chunk.table.schema,
                            str(path))
                    else:
                        queries = [parser.sql(chunk.table.schema, "_tl_chunk", str(path))]
                    for query in queries:
                        stage.add_rows(query)
                    stage.db.unregister("_tl_chunk")
                if chunk.rejects:
                    stage.add_rejects(_structural_rejects(chunk.rejects, settings))
                if progress:
                    progress(result.rows_read)
        result.ignored_columns = parser.ignored
        _commit(con, spec, stage, result, path, fingerprint, started_at, settings)
    finally:
        stage.close()


def _stage_parquet_in_engine(stage: _Stage, parser: _ChunkParser, path: Path) -> int:
    """A Parquet file on a DuckDB warehouse: DuckDB's own reader, streaming; the checks pass
    reads the columns the checks need, the insert the file whole (see :class:`_Stage`).

    The checks pass leaves out the content hash and the raw text
    (:meth:`_ChunkParser.checks_sql`): most rows have their key and no problem, and need
    neither. Rows that do (no key, or rejected) are checked again in full, and only they.
    """
    schema = readers.parquet_schema(path)
    literal = _sql_str(str(path))
    source = (
        f"(SELECT *, file_row_number + 1 AS _line, CAST(NULL AS VARCHAR) AS _raw "
        f"FROM read_parquet({literal}, file_row_number = true))"
    )
    key, where = parser.spec.key, str(path)
    try:
        checks = parser.checks_sql(schema, source, where)
        stage.add_checks(parser.sql(schema, source, where), key, checks=checks)
        unsettled = stage.unsettled_lines(key) if checks is not None else None
        if unsettled is not None:
            stage.settle_checks(parser.sql(
                schema, f"(SELECT * FROM {source} SEMI JOIN {unsettled} USING (_line))", where),
                key)
    except duckdb.Error as exc:
        raise InputError(f"{path}: cannot read Parquet data ({exc}); nothing was loaded") from None
    return int(stage.db.execute(f"SELECT count(*) FROM {stage.checks_name}").fetchone()[0])


def _commit(
    con: BaseBackend,
    spec: store.TableSpec,
    stage: _Stage,
    result: IngestResult,
    path: Path,
    fingerprint: str,
    started_at: datetime,
    settings: Settings,
) -> None:
    """Dedupe the staged rows and write rows, rejects and the run record, all or nothing
    (:func:`touchline.engine.all_or_nothing`: a transaction on DuckDB, a roll-back of the
    written files on Spark)."""
    rows, checks, structural = stage.rows(), stage.checks(), stage.rejects()
    firsts = f"_tl_firsts_{result.ingest_id}"
    try:
        with engine.all_or_nothing(con, [spec.name, "rejects", "ingests"]):
            reject_parts = (
                [] if rows is None or checks is None
                else _insert_rows(con, spec, rows, checks, result, firsts, settings)
            )
            if stage.narrow and _fingerprint(path) != fingerprint:
                # its rows were read twice (the checks, then the insert): a file replaced in
                # between would have mixed two versions of it
                raise InputError(f"{path}: the file changed while it was being loaded; "
                                 "nothing was loaded (load it again once it is written)")
            if structural is not None:
                reject_parts.append(structural.mutate(ref=ibis.null("string")))
            if reject_parts:
                _insert_rejects(con, f"ingest:{spec.name}", ibis.union(*reject_parts), result,
                                path, fingerprint)
            run = pa.table({
                "ingest_id": [result.ingest_id], "kind": [spec.name], "path": [str(path)],
                "file_size": [path.stat().st_size], "fingerprint": [fingerprint],
                "rows_read": [result.rows_read], "loaded": [result.loaded],
                "rejected": [result.rejected], "duplicates": [result.duplicates],
                "started_at": [started_at],
                "finished_at": [datetime.now(UTC).replace(tzinfo=None)],
            }).cast(store.INGESTS.schema.to_pyarrow())
            engine.append(con, "ingests", run)
    finally:
        engine.drop_materialised(con, firsts)


def _insert_rows(
    con: BaseBackend,
    spec: store.TableSpec,
    rows: ibis.Table,
    checks: ibis.Table,
    result: IngestResult,
    scratch: str,
    settings: Settings,
) -> list[ibis.Table]:
    """Insert the good staged rows not yet in the table (the first line of each key in the
    file); return the bad rows and the in-file duplicates as reject parts.

    ``checks`` holds each staged row's key and :data:`CHECKS`, ``rows`` its columns and
    ``_line`` (they may be one table). Dedupe, counts and rejects read only ``checks``; a line
    number names one row of the file, so the rows to insert are picked by line alone.
    """
    bad = checks.filter(checks._pcode.notnull()).select(
        line=_._line, field=_._pfield, reason_code=_._pcode, reason=_._pmessage, raw=_._raw,
        ref=ibis.null("string"),
    )
    staged = checks.filter(checks._pcode.isnull())
    # loaded, but a JSON cell gave nothing: the values it held are recorded as lost
    partial = staged.filter(staged._json_bad.notnull())
    lost = partial.select(
        line=partial._line, field=partial._json_bad, reason_code=ibis.literal(PARTIAL_CODE),
        # a CSV/Parquet column, or an NDJSON member that holds no object nor its JSON text
        reason=partial._json_bad + ibis.literal(
            " is not valid JSON (or no JSON object) here: the row was loaded without the "
            "fields read from it (ref: its key)"),
        raw=partial._raw, ref=partial[spec.key].cast("string"),
    )
    # hash aggregates, not a sort: the first line of each key wins
    firsts = engine.materialise(con, scratch, staged.group_by(spec.key).aggregate(
        _first_line=staged._line.min(), _n=staged.count()))
    totals = firsts.aggregate(rows=firsts._n.sum(), keys=firsts.count())
    totals = totals.to_pyarrow().to_pylist()[0]
    target = con.table(spec.name)
    # the table's row count before and after tells how many were new: no second pass
    before = int(target.count().to_pyarrow().as_py())
    # keys not stored yet, narrow; then their first lines' rows, joined on an integer
    unseen = firsts.anti_join(target, spec.key)
    keep = rows.semi_join(unseen, rows._line == unseen._first_line).select(
        *(c.name for c in spec.columns))
    new = at_rest.protect(con, spec.name, keep, settings)
    con.insert(spec.name, new.cast(spec.schema))
    result.loaded = int(con.table(spec.name).count().to_pyarrow().as_py()) - before
    # a file whose rows are all bad stages none: the sum over no rows is null
    result.duplicates = int(totals["rows"] or 0) - result.loaded
    repeated = firsts.filter(firsts._n > 1)
    dupes = staged.join(repeated, spec.key).filter(lambda t: t._line != t._first_line)
    in_file = dupes.select(
        line=dupes._line,
        field=ibis.literal(spec.key),
        reason_code=ibis.literal("duplicate_in_file"),
        reason=ibis.literal(f"same {spec.key} as line ") + dupes._first_line.cast("string")
        + ibis.literal(" of this file; the first is kept"),
        raw=ibis.null("string"),
        ref=dupes[spec.key],
    )
    return [bad, lost, in_file]


def _insert_rejects(
    con: BaseBackend,
    step: str,
    parts: ibis.Table,
    result: IngestResult,
    path: Path,
    fingerprint: str,
) -> None:
    """Insert the file's rejects not yet recorded (ids are stable: a rerun adds none)."""
    rows = parts.select(
        reject_id=store.reject_id_expr(step, fingerprint, parts.line, parts.reason_code),
        step=ibis.literal(step),
        source=ibis.literal(str(path)),
        line=_.line,
        field=_.field,
        reason_code=_.reason_code,
        reason=_.reason,
        raw=_.raw,
        ref=_.ref,
        ingest_id=ibis.literal(result.ingest_id),
        rejected_at=ibis.now().cast(dt.Timestamp()),
    )
    by_reason = rows.group_by("reason_code").aggregate(n=_.count()).to_pyarrow()
    result.rejects_by_reason = Counter(
        dict(zip(by_reason["reason_code"].to_pylist(), by_reason["n"].to_pylist(), strict=True))
    )
    # a duplicate or a partly read row was loaded (or its twin was): not a rejected row
    result.rejected = sum(result.rejects_by_reason.values()) - sum(
        result.rejects_by_reason.get(code, 0) for code in ("duplicate_in_file", PARTIAL_CODE))
    new_rejects = rows.anti_join(con.table("rejects"), "reject_id")
    con.insert("rejects", new_rejects.cast(store.REJECTS.schema))
