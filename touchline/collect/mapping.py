"""Column mappings: which input column (or JSON path) feeds which canonical column.

Without a mapping file, input columns are matched to canonical names after normalising them
(``anonymousId``, ``Anonymous ID`` and ``anonymous_id`` all mean ``anonymous_id``). A mapping
file (``--map mapping.toml``) overrides that::

    [columns]                       # canonical = input column, or a list: first non-empty wins
    anonymous_id = ["client_id", "clientId"]
    url = "page_url"
    properties = "event_data"       # NDJSON inputs may give JSON paths: "$.context.page.url"

    [defaults]                      # constants for canonical columns the input lacks
    type = "track"
    source = "web"

    [options]
    timestamp_format = "%d/%m/%Y %H:%M"   # strptime format tried before the ISO 8601 parser
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from touchline.errors import MappingError

_CAMEL = re.compile(r"(?<=[a-z0-9])([A-Z])")
_NON_WORD = re.compile(r"[^a-z0-9]+")


def normalise_name(name: str) -> str:
    """``anonymousId`` / ``Anonymous ID`` / ``anonymous-id`` → ``anonymous_id``."""
    snake = _CAMEL.sub(r"_\1", name.strip())
    return _NON_WORD.sub("_", snake.lower()).strip("_")


@dataclass(frozen=True)
class Mapping:
    """A parsed mapping file (or the empty mapping)."""

    columns: dict[str, tuple[str, ...]] = field(default_factory=dict)
    defaults: dict[str, str] = field(default_factory=dict)
    timestamp_format: str | None = None
    origin: str = "(no mapping file)"

    def sources_for(self, canonical: str, available: list[str]) -> tuple[str, ...]:
        """Input columns feeding ``canonical``: the mapping's, else a normalised-name match."""
        if canonical in self.columns:
            return self.columns[canonical]
        return tuple(c for c in available if normalise_name(c) == canonical)


def load_mapping(path: Path | None, *, canonical: set[str]) -> Mapping:
    """Read and check a mapping file against the target table's ``canonical`` column names."""
    if path is None:
        return Mapping()
    try:
        data: dict[str, Any] = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MappingError(f"mapping file {path} does not exist") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise MappingError(f"mapping file {path} is not valid TOML: {exc}") from None
    unknown_sections = set(data) - {"columns", "defaults", "options"}
    if unknown_sections:
        raise MappingError(
            f"mapping file {path}: unknown section(s) {sorted(unknown_sections)}; "
            "use [columns], [defaults] and [options]"
        )
    columns: dict[str, tuple[str, ...]] = {}
    for key, value in data.get("columns", {}).items():
        if key not in canonical:
            raise MappingError(
                f"mapping file {path}: [columns] key {key!r} is not a column of the target "
                f"table; choose from {', '.join(sorted(canonical))}"
            )
        sources = (value,) if isinstance(value, str) else tuple(value)
        if not sources or not all(isinstance(s, str) and s for s in sources):
            raise MappingError(
                f"mapping file {path}: [columns] {key} must be a column name or a list of them"
            )
        columns[key] = sources
    defaults = {}
    for key, value in data.get("defaults", {}).items():
        if key not in canonical:
            raise MappingError(
                f"mapping file {path}: [defaults] key {key!r} is not a column of the target table"
            )
        defaults[key] = str(value)
    options = data.get("options", {})
    unknown_options = set(options) - {"timestamp_format"}
    if unknown_options:
        raise MappingError(f"mapping file {path}: unknown option(s) {sorted(unknown_options)}")
    return Mapping(columns, defaults, options.get("timestamp_format"), origin=str(path))
