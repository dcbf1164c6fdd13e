"""Column mappings: which input column (or JSON path) feeds which canonical column.

Without a mapping file, input columns are matched to canonical names after normalising them
(``anonymousId``, ``Anonymous ID`` and ``anonymous_id`` all mean ``anonymous_id``). A mapping
file (``--map mapping.toml``) overrides that::

    [columns]                       # canonical = input column, or a list: first non-empty wins
    anonymous_id = ["client_id", "clientId"]
    url = "page_url"
    properties = "event_data"       # a whole column, or a JSON path into one: "$.event_data.x"

    [defaults]                      # constants for canonical columns the input lacks
    type = "track"
    source = "web"

    [options]
    timestamp_format = "%d/%m/%Y %H:%M"   # strptime format tried before the ISO 8601 parser

    [event_types.checkout_completed]      # rows whose event name is checkout_completed
    rename = "Order Completed"            # stored under this name
    type = "track"                        # their call type (page_viewed rows: "page")
    columns = { revenue = "$.event_data.revenue" }   # replace [columns] entries for these rows
    defaults = { currency = "USD" }

A source starting with ``$`` is a JSON path. In NDJSON it reads the line's object; in CSV and
Parquet its first member names a column of the file that holds JSON text
(``$.event_data.revenue`` reads ``revenue`` from column ``event_data``; quote a name with dots
or spaces: ``$."event data".revenue``). In NDJSON a mapped path also reads through a member
that holds an object's JSON text (decoded; see docs/ingest.md).
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from touchline.errors import MappingError, did_you_mean

_CAMEL = re.compile(r"(?<=[a-z0-9])([A-Z])")
_NON_WORD = re.compile(r"[^a-z0-9]+")
#: ``$.name…`` or ``$."quoted name"…``: the first member of a JSON path and the rest
_FIRST_MEMBER = re.compile(r'^\$\.(?:"((?:[^"\\]|\\.)+)"|([^.\["]+))(.*)$')
SECTIONS = ("columns", "defaults", "options", "event_types")
OPTIONS = ("timestamp_format",)
EVENT_TYPE_KEYS = ("rename", "type", "columns", "defaults")
#: the Segment call types a ``[event_types.<name>] type`` may set
CALL_TYPES = ("track", "page", "screen", "identify", "alias", "group")


def normalise_name(name: str) -> str:
    """``anonymousId`` / ``Anonymous ID`` / ``anonymous-id`` → ``anonymous_id``."""
    snake = _CAMEL.sub(r"_\1", name.strip())
    return _NON_WORD.sub("_", snake.lower()).strip("_")


def is_json_path(source: str) -> bool:
    """A mapping source that starts with ``$`` reads inside JSON rather than naming a column."""
    return source.startswith("$")


def split_column_path(source: str) -> tuple[str, str] | None:
    """``$.event_data.revenue`` → ``("event_data", "$.revenue")``; ``$.event_data`` →
    ``("event_data", "$")``: for CSV and Parquet, where a path's first member is a column.

    >>> split_column_path('$."event data".items[0].price')
    ('event data', '$.items[0].price')
    >>> split_column_path("page_url") is None
    True
    """
    match = _FIRST_MEMBER.match(source)
    if not match:
        return None
    quoted, plain, rest = match.groups()
    column = quoted.replace('\\"', '"') if quoted is not None else plain
    return column, "$" + rest


@dataclass(frozen=True)
class EventTypeMapping:
    """What changes for the rows of one event type (``[event_types.<name>]``)."""

    rename: str | None = None
    type: str | None = None  # the call type of these rows (``page`` for page views)
    columns: dict[str, tuple[str, ...]] = field(default_factory=dict)
    defaults: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Mapping:
    """A parsed mapping file (or the empty mapping)."""

    columns: dict[str, tuple[str, ...]] = field(default_factory=dict)
    defaults: dict[str, str] = field(default_factory=dict)
    timestamp_format: str | None = None
    origin: str = "(no mapping file)"
    event_types: dict[str, EventTypeMapping] = field(default_factory=dict)

    def sources_for(self, canonical: str, available: list[str]) -> tuple[str, ...]:
        """Input columns feeding ``canonical``: the mapping's, else a normalised-name match."""
        if canonical in self.columns:
            return self.columns[canonical]
        return tuple(c for c in available if normalise_name(c) == canonical)

    def all_sources(self) -> tuple[str, ...]:
        """Every source the mapping names, in ``[columns]`` and in every event type."""
        found = [s for sources in self.columns.values() for s in sources]
        for per_type in self.event_types.values():
            found += [s for sources in per_type.columns.values() for s in sources]
        return tuple(dict.fromkeys(found))


def _sources(value: object, where: str) -> tuple[str, ...]:
    sources = (value,) if isinstance(value, str) else tuple(value) if isinstance(
        value, list) else ()
    if not sources or not all(isinstance(s, str) and s for s in sources):
        raise MappingError(f"{where} must be a column name, a JSON path or a list of them")
    for source in sources:
        if is_json_path(source) and source != "$" and not _FIRST_MEMBER.match(source):
            raise MappingError(
                f"{where}: {source!r} is not a JSON path of the form $.name.inner (or "
                '$."quoted name".inner)')
    return sources


def _canonical_items(table: object, canonical: set[str], where: str,
                     shape: str) -> list[tuple[str, object]]:
    """The ``canonical = value`` pairs of a mapping section, each key a column of the target
    table (else an error naming the nearest); ``shape`` says what a value is."""
    if not isinstance(table, dict):
        raise MappingError(f"{where} must be a table of canonical = {shape}")
    for key in table:
        if key not in canonical:
            raise MappingError(
                f"{where} key {key!r} is not a column of the target table"
                f"{did_you_mean(key, canonical)}; choose from {', '.join(sorted(canonical))}")
    return list(table.items())


def _columns(table: object, canonical: set[str], where: str) -> dict[str, tuple[str, ...]]:
    return {key: _sources(value, f"{where} {key}")
            for key, value in _canonical_items(table, canonical, where, "source")}


def _defaults(table: object, canonical: set[str], where: str) -> dict[str, str]:
    return {key: str(value)
            for key, value in _canonical_items(table, canonical, where, "constant")}


def _event_types(table: object, canonical: set[str], origin: str,
                 kind: str | None) -> dict[str, EventTypeMapping]:
    where = f"mapping file {origin}: [event_types]"
    if not isinstance(table, dict):
        raise MappingError(f"{where} must hold one table per event name")
    if table and kind is not None and kind != "events":
        raise MappingError(f"{where} applies to --kind events only, not {kind!r}")
    out = {}
    for name, body in table.items():
        here = f"mapping file {origin}: [event_types.{name}]"
        if not isinstance(body, dict):
            raise MappingError(f"{here} must be a table with rename, type, columns or "
                               "defaults")
        for key in body:
            if key not in EVENT_TYPE_KEYS:
                raise MappingError(f"{here}: unknown key {key!r}"
                                   f"{did_you_mean(key, EVENT_TYPE_KEYS)}; use "
                                   f"{', '.join(EVENT_TYPE_KEYS)}")
        rename = body.get("rename")
        if rename is not None and (not isinstance(rename, str) or not rename.strip()):
            raise MappingError(f"{here}: rename must be a non-empty event name")
        call_type = body.get("type")
        if call_type is not None and call_type not in CALL_TYPES:
            raise MappingError(f"{here}: type must be one of {', '.join(CALL_TYPES)}, not "
                               f"{call_type!r}{did_you_mean(str(call_type), CALL_TYPES)}")
        columns = _columns(body.get("columns", {}), canonical, f"{here} columns")
        defaults = _defaults(body.get("defaults", {}), canonical, f"{here} defaults")
        if "event" in columns or "event" in defaults:
            raise MappingError(
                f"{here}: event cannot be set per event type (the event name chooses the "
                "section; use rename to store it under another name)")
        if "type" in columns or "type" in defaults:
            raise MappingError(f"{here}: set the call type of these rows with type = "
                               '"page" (or track, screen, identify, alias, group)')
        out[str(name)] = EventTypeMapping(rename, call_type, columns, defaults)
    return out


def load_mapping(path: Path | None, *, canonical: set[str], kind: str | None = None) -> Mapping:
    """Read and check a mapping file against the target table's ``canonical`` column names.

    Every unknown name is an error naming the nearest valid one, so a typo never silently
    maps nothing. ``kind``, when given, is the target table (``[event_types]`` needs events).
    """
    if path is None:
        return Mapping()
    try:
        data: dict[str, Any] = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MappingError(f"mapping file {path} does not exist") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise MappingError(f"mapping file {path} is not valid TOML: {exc}") from None
    for section in data:
        if section not in SECTIONS:
            raise MappingError(
                f"mapping file {path}: unknown section {section!r}"
                f"{did_you_mean(section, SECTIONS)}; use [columns], [defaults], [options] and "
                "[event_types]")
    columns = _columns(data.get("columns", {}), canonical, f"mapping file {path}: [columns]")
    defaults = _defaults(data.get("defaults", {}), canonical, f"mapping file {path}: [defaults]")
    options = data.get("options", {})
    for option in options:
        if option not in OPTIONS:
            raise MappingError(f"mapping file {path}: unknown option {option!r}"
                               f"{did_you_mean(option, OPTIONS)}; options: {', '.join(OPTIONS)}")
    event_types = _event_types(data.get("event_types", {}), canonical, str(path), kind)
    return Mapping(columns, defaults, options.get("timestamp_format"), origin=str(path),
                   event_types=event_types)
