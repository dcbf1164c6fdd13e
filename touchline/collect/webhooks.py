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
"""

from __future__ import annotations

import hashlib
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from touchline.errors import ConfigError
from touchline.store import CALLS, DEALS

KINDS = ("event", "deal", "call")


@dataclass(frozen=True)
class SourceMapping:
    """How one webhook source's payload becomes a canonical row."""

    name: str
    kind: str
    fields: dict[str, str]
    defaults: dict[str, Any] = field(default_factory=dict)


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
        defaults = {k: v for k, v in spec.items() if k not in ("kind", "fields")}
        mappings[name] = SourceMapping(name, kind, dict(fields), defaults)
    return mappings


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
    for part in parts[:-1]:
        target = target.setdefault(part, {})
    target[parts[-1]] = value


def map_payload(mapping: SourceMapping, item: Any) -> dict[str, Any]:
    """One payload item → a Segment message (``event``) or a ``deals``/``calls`` row."""
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
