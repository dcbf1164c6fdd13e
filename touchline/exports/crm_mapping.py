"""Field mappings: which lead record field (:data:`~touchline.exports.crm.RECORD_FIELDS`)
fills which property of a CRM object, in the property's type.

Shipped as data (``data/crm_<name>.toml``, each naming its source): ``hubspot`` (a HubSpot
contact: ``hs_object_id`` from the lead's ``contact_id``, ``hs_analytics_source``,
``hs_analytics_first_url`` … and ``touchline_*`` custom properties) and ``salesforce`` (a
Salesforce Lead: ``Id`` from the lead's ``contact_id`` when it is a Lead's record id,
``LeadSource``, ``Email`` … and ``Touchline_*__c`` custom fields, see below);
``touchline`` is every record field under its own name. A
mapping file of your own (TOML or JSON) may start from a shipped one (``extends``) and add,
replace or drop (``drop = true``) fields::

    extends = "hubspot"
    [fields.touchline_landing_page]
    from = "first_landing_page"
    type = "string"
    [fields.hs_analytics_source]
    drop = true

A field reads ``from`` a record field, ``credit_<channel>``, a custom field of the lead event
(``properties.<key>``: a form's ``plan``), or is a ``constant``; ``type`` is ``string`` (cut to
``max_length``), ``number``, ``integer``, ``bool``, ``datetime`` (ISO 8601 in UTC, ``Z``),
``date`` or ``enumeration`` (the record's value translated by ``values``, else ``default``);
``pattern`` (a regular expression) keeps only a value it wholly matches, as text, and leaves
any other out. An unknown record field, type or key, or a pattern that does not compile, is a
:class:`~touchline.errors.ConfigError` naming the file and the field. A null value is left
out of the properties: the CRM keeps what it has.

Why the Salesforce Lead's ``Id`` (``salesforce/v2``): Salesforce matches a row to an
existing record by its record id, ``Id``: the Data Loader's and the Bulk API's upsert on
``Id`` update the Lead a row names and insert a row with an empty ``Id``, the Data Import
Wizard matches Leads by "Salesforce.com ID", and the REST API updates
``/sobjects/Lead/<Id>``. A lead's ``contact_id`` is the CRM's id as the lead came with it, and
only a Lead's record id (15 or 18 letters and digits starting ``00Q``) may go in a Lead's
``Id``: a Contact's (``003…``) or another system's id would fail the row (a malformed or
cross-object id), so ``pattern`` leaves it out there, and the row inserts (or a relay upserts
on ``Touchline_Lead_Id__c``, the External ID field). ``Touchline_Contact_Id__c`` keeps every
``contact_id`` as it came (make it an External ID to upsert on the CRM's own ids).
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from pathlib import Path
from typing import Any

from touchline.errors import ConfigError, did_you_mean
from touchline.exports.crm import CREDIT_FIELD, PROPERTY_FIELD, RECORD_FIELDS, is_record_field

DATA = Path(__file__).parent / "data"
#: the shipped mappings, by name (``touchline``: every record field as it is)
SHIPPED = ("touchline", "hubspot", "salesforce")
TYPES = ("string", "number", "integer", "bool", "datetime", "date", "enumeration")
_FIELD_KEYS = ("from", "constant", "type", "max_length", "values", "default", "pattern",
               "drop")
_TOP_KEYS = ("name", "version", "object", "extends", "fields", "credit_prefix")
_RECORD_TYPES = {"string": "string", "datetime": "datetime", "integer": "integer",
                 "number": "number"}


@dataclass(frozen=True)
class FieldSpec:
    """One CRM property: where its value comes from and its type."""

    name: str
    source: str | None
    type: str
    constant: Any = None
    max_length: int | None = None
    values: dict[str, str] = field(default_factory=dict)
    default: str | None = None
    #: a regular expression the value (as text) must wholly match, else it is left out
    pattern: str | None = None

    def value(self, record: dict[str, Any]) -> Any:
        """The property's value for ``record`` (``None``: leave the property alone)."""
        if self.source is None:
            raw = self.constant
        elif self.source in record:
            raw = record[self.source]
        else:  # a channel the lead never touched: no credit
            raw = 0.0 if CREDIT_FIELD.match(self.source) else None
        if raw is None or (isinstance(raw, float) and raw != raw):
            return None
        if self.pattern is not None and re.fullmatch(self.pattern, str(raw)) is None:
            return None
        return _convert(raw, self)


@dataclass(frozen=True)
class Mapping:
    """A CRM object's properties from a lead record. ``all_credits``: every
    ``credit_<channel>`` field of the record beside ``fields``, each under ``credit_prefix`` +
    its name (the ``touchline`` mapping: no prefix; ``hubspot``: ``touchline_credit_…``, a
    custom property per channel)."""

    name: str
    version: int
    object: str
    fields: tuple[FieldSpec, ...]
    all_credits: bool = False
    credit_prefix: str = ""

    @property
    def versioned(self) -> str:
        return f"{self.name}/v{self.version}"

    @property
    def property_keys(self) -> tuple[str, ...]:
        """The lead event's properties the fields read (``from = "properties.<key>"``)."""
        found = (PROPERTY_FIELD.match(spec.source or "") for spec in self.fields)
        return tuple(dict.fromkeys(m.group(1) for m in found if m))

    def properties(self, record: dict[str, Any]) -> dict[str, Any]:
        """The properties of ``record`` (nulls left out), in the mapping's order."""
        out = {}
        for spec in self.fields:
            value = spec.value(record)
            if value is not None:
                out[spec.name] = value
        if self.all_credits:
            for key in sorted(record):
                name = self.credit_prefix + key
                if CREDIT_FIELD.match(key) and name not in out and record[key] is not None:
                    out[name] = float(record[key])
        return out

    def columns(self, records: list[dict[str, Any]]) -> list[str]:
        """The file columns of ``records``: the fields, then any credit fields they carry."""
        names = [spec.name for spec in self.fields]
        if self.all_credits:
            names += sorted({self.credit_prefix + k for r in records for k in r
                             if CREDIT_FIELD.match(k)} - set(names))
        return names


def _convert(raw: Any, spec: FieldSpec) -> Any:
    if spec.type == "string":
        text = raw.isoformat() if isinstance(raw, datetime | date) else str(raw)
        return text[:spec.max_length] if spec.max_length else text
    if spec.type == "number":
        return float(raw)
    if spec.type == "integer":
        return int(raw)
    if spec.type == "bool":
        return bool(raw)
    if spec.type == "datetime":
        if isinstance(raw, datetime):
            return raw.replace(tzinfo=None).isoformat(timespec="seconds") + "Z"
        return str(raw)
    if spec.type == "date":
        return raw.date().isoformat() if isinstance(raw, datetime) else str(raw)
    # enumeration
    return spec.values.get(str(raw), spec.default if spec.default is not None else str(raw))


def touchline_mapping() -> Mapping:
    """Every record field under its own name, in its own type, and every credit field."""
    fields = tuple(FieldSpec(name, name, _RECORD_TYPES[kind])
                   for name, (kind, _) in RECORD_FIELDS.items())
    return Mapping("touchline", 1, "lead", fields, all_credits=True)


def _field(where: str, name: str, spec: Any) -> FieldSpec | None:
    """One ``[fields.<name>]`` table checked; ``None`` when it drops the field."""
    at = f"{where}: fields.{name}"
    if isinstance(spec, str):  # name = "record_field": a string property
        spec = {"from": spec}
    if not isinstance(spec, dict):
        raise ConfigError(f"{at} must be a table (from, type, ...) or a record field name")
    unknown = [k for k in spec if k not in _FIELD_KEYS]
    if unknown:
        raise ConfigError(f"{at}: unknown key {unknown[0]!r}"
                          f"{did_you_mean(unknown[0], _FIELD_KEYS)}; keys: "
                          f"{', '.join(_FIELD_KEYS)}")
    if spec.get("drop"):
        return None
    source, constant = spec.get("from"), spec.get("constant")
    if (source is None) == (constant is None):
        raise ConfigError(f"{at} needs either from (a lead record field) or constant")
    if source is not None and (not isinstance(source, str) or not is_record_field(source)):
        names = sorted(RECORD_FIELDS)
        raise ConfigError(f"{at}: from {source!r}{did_you_mean(str(source), names)} is not a "
                          f"lead record field; fields: {', '.join(names)}, "
                          "credit_<channel> (e.g. credit_paid_search) or properties.<key> (a "
                          "property of the lead event)")
    kind = spec.get("type", "string")
    if kind not in TYPES:
        raise ConfigError(f"{at}: type {kind!r}{did_you_mean(str(kind), TYPES)}: choose from "
                          f"{', '.join(TYPES)}")
    max_length = spec.get("max_length")
    if max_length is not None and (not isinstance(max_length, int) or max_length < 1):
        raise ConfigError(f"{at}: max_length {max_length!r} must be a positive integer")
    values = spec.get("values", {})
    if not isinstance(values, dict) or not all(isinstance(v, str) for v in values.values()):
        raise ConfigError(f"{at}: values must map record values to the CRM's values (text)")
    if values and kind != "enumeration":
        raise ConfigError(f"{at}: values apply to type enumeration, not {kind}")
    pattern = spec.get("pattern")
    if pattern is not None:
        if not isinstance(pattern, str):
            raise ConfigError(f"{at}: pattern {pattern!r} must be a regular expression (text)")
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ConfigError(f"{at}: pattern {pattern!r} is not a regular expression: {exc}"
                              ) from None
    return FieldSpec(name, source, kind, constant, max_length, dict(values),
                     spec.get("default"), pattern)


def _read(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read CRM mapping {path}: {exc.strerror or exc}") from None
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"CRM mapping {path} is not valid "
                          f"{'JSON' if path.suffix.lower() == '.json' else 'TOML'}: {exc}"
                          ) from None
    if not isinstance(data, dict):
        raise ConfigError(f"CRM mapping {path} must hold an object (name, object, fields)")
    return data


def _parse(data: dict[str, Any], where: str, base: Mapping | None) -> Mapping:
    unknown = [k for k in data if k not in _TOP_KEYS]
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}"
                          f"{did_you_mean(unknown[0], _TOP_KEYS)}; keys: {', '.join(_TOP_KEYS)}")
    fields_in = data.get("fields", {})
    if not isinstance(fields_in, dict):
        raise ConfigError(f"{where}: fields must be a table of CRM property → spec")
    fields = {f.name: f for f in base.fields} if base else {}
    for name, spec in fields_in.items():
        parsed = _field(where, name, spec)
        if parsed is None:
            fields.pop(name, None)
        else:
            fields[name] = parsed
    prefix = data.get("credit_prefix", base.credit_prefix if base and base.all_credits
                      else None)
    if prefix is not None and (not isinstance(prefix, str) or (
            prefix and not prefix.replace("_", "").isalnum())):
        raise ConfigError(f"{where}: credit_prefix {prefix!r} must be letters, digits and _ "
                          "(every credit_<channel> field becomes <credit_prefix>credit_<channel>)")
    if not fields and prefix is None:
        raise ConfigError(f"{where}: no fields: a mapping needs at least one")
    version = data.get("version", base.version if base else 1)
    if not isinstance(version, int):
        raise ConfigError(f"{where}: version {version!r} must be an integer")
    name = data.get("name") or (f"{base.name}+{Path(where).stem}" if base else Path(where).stem)
    mapping = Mapping(str(name), version, str(data.get("object", base.object if base else "lead")),
                      tuple(fields.values()))
    return replace(mapping, all_credits=prefix is not None, credit_prefix=prefix or "")


def shipped_mapping(name: str) -> Mapping:
    """A mapping touchline ships: ``touchline``, ``hubspot`` or ``salesforce``."""
    if name == "touchline":
        return touchline_mapping()
    if name not in SHIPPED:
        raise ConfigError(f"unknown CRM mapping {name!r}{did_you_mean(name, SHIPPED)}: choose "
                          f"from {', '.join(SHIPPED)}, or give a mapping file (.toml, .json)")
    path = DATA / f"crm_{name}.toml"
    return _parse(_read(path), str(path), None)


def load_mapping(choice: str) -> Mapping:
    """The mapping ``choice`` names: a shipped one, or a TOML / JSON file (see the module)."""
    if choice in SHIPPED:
        return shipped_mapping(choice)
    path = Path(choice)
    if path.suffix.lower() not in (".toml", ".json"):
        raise ConfigError(f"unknown CRM mapping {choice!r}{did_you_mean(choice, SHIPPED)}: "
                          f"choose from {', '.join(SHIPPED)}, or give a mapping file (.toml, "
                          ".json)")
    data = _read(path)
    extends = data.get("extends")
    base = None
    if extends is not None:
        if extends not in SHIPPED:
            raise ConfigError(f"{path}: extends {extends!r}{did_you_mean(str(extends), SHIPPED)}"
                              f": choose from {', '.join(SHIPPED)}")
        base = shipped_mapping(extends)
    return _parse({k: v for k, v in data.items() if k != "extends"}, str(path), base)
