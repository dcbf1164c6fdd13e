"""Erase a person everywhere: ``touchline erase --email …`` (the right to erasure).

1. **Resolve.** The identifier asked for becomes typed identifiers as ``identities`` stores
   them (``email:<trimmed, lower case>`` and its ``email_sha256:``, ``phone:<E.164>`` and its
   ``phone_sha256:``, ``user:``, ``anon:``); the persons (identity-graph components) holding
   any of them give every identifier of those persons. Events not yet prepared add the
   identifiers seen on the same events as the one asked for (one hop: run ``touchline run``
   before erasing to resolve the whole graph).
2. **Targets.** One scratch table of what to delete, by kind: message ids (the persons'
   events and the touches of their sessions), sessions, journeys, account journey steps that
   were theirs, deals naming them, accounts only they made, raw phone texts that normalise to
   their numbers. Computed before any row goes, so no rule depends on another table's order.
3. **Delete.** :data:`ERASE_RULES` says, for every stored table of :data:`store.TABLES`,
   which rows are the persons' (``tests/privacy/test_erase.py`` fails on a table with no
   rule, so a new table must say). One :func:`engine.delete_where` per table, in one
   transaction on DuckDB; a deal shared with other contacts is written back without the
   persons' e-mails and contact ids (:func:`shared_deals`).
4. **Outside the warehouse.** Lines of the collector's spool not yet loaded (and loaded ones,
   which stay until their segment is deleted) are blanked in place
   (:func:`touchline.collect.spool.rewrite_lines`; batch lines keep the other messages), and
   the live number leases of their devices are dropped.
5. **Log.** ``erasures`` gets one row per place with the rows removed and only a keyed hash
   (HMAC-SHA256 under ``settings.pii_hash_key``) of the identifier.

Aggregates stay consistent: prepared tables, journeys and credits are rebuilt whole by the
next ``touchline run`` from what is left, which equals a run that never had the person.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import ibis
import orjson
import pyarrow as pa

from touchline import engine, store
from touchline.collect.dni import LEASES_FILE, LeaseBook, to_e164
from touchline.collect.spool import BATCH, rewrite_lines, segments
from touchline.config import Settings
from touchline.errors import ConfigError, InputError

if TYPE_CHECKING:
    import ibis.expr.types as ir
    from ibis.backends import BaseBackend

log = logging.getLogger(__name__)

#: what ``touchline erase`` can be asked for, and the identities kind each is
ERASE_KINDS: dict[str, str] = {
    "email": "email", "phone": "phone", "user_id": "user", "anonymous_id": "anon",
    "person": "person",
}
#: places outside the warehouse's tables that an erasure cleans, as ``erasures.place`` names them
SPOOL_PLACE, LEASE_STORE_PLACE = "spool", "lease_store"

#: one value of ``targets`` by kind (a column to test with ``isin``)
Target = Callable[[str], "ir.Column"]
#: which rows of a table are the persons': ``rule(table, target, ids)`` → predicate
Rule = Callable[["ir.Table", Target, "Identifiers"], "ir.BooleanValue"]


@dataclass(frozen=True)
class Identifiers:
    """Everything known to identify the persons being erased, as plain values by kind."""

    persons: frozenset[str]
    typed: frozenset[str]  # as identities stores them: anon:…, email:…, …
    anon: frozenset[str]
    user: frozenset[str]
    contact: frozenset[str]
    email: frozenset[str]  # normalised
    phone: frozenset[str]  # E.164
    email_sha256: frozenset[str]
    phone_sha256: frozenset[str]
    messages: frozenset[str]  # msg:<id> identifiers (id-less offline touches)

    @classmethod
    def of(cls, persons: Iterable[str], typed: Iterable[str]) -> Identifiers:
        typed = frozenset(typed)
        by_kind: dict[str, set[str]] = {}
        for identifier in typed:
            kind, _, value = identifier.partition(":")
            by_kind.setdefault(kind, set()).add(value)

        def kind(name: str) -> frozenset[str]:
            return frozenset(by_kind.get(name, ()))

        return cls(frozenset(persons), typed, kind("anon"), kind("user"), kind("contact"),
                   kind("email"), kind("phone"), kind("email_sha256"), kind("phone_sha256"),
                   kind("msg"))

    def tokens(self) -> list[str]:
        """Regular-expression alternatives that find these identifiers in free text (a
        rejected record, a spool line): e-mails, hashes and person ids anywhere, phone
        numbers in any spacing, device, user and contact ids as the value of an id field of
        a JSON record, or, from six characters on, as a CSV field."""
        out = [_escape(v) for v in sorted(self.email | self.email_sha256 | self.phone_sha256)]
        for number in sorted(self.phone):
            if not number.startswith("+"):  # a keyed hash (pii_at_rest = "hashed")
                out.append(_escape(number))
                continue
            digits = _national_digits(number)
            if len(digits) >= 6:  # shorter ones would match dates and prices
                out.append("(^|[^0-9])" + "[^0-9A-Za-z]{0,3}".join(digits) + "([^0-9]|$)")
        # an id as the value of an id field of a JSON record (any length: "1" is a fine user
        # id), or, when long enough not to be any short value, a CSV field or a person id
        ids = sorted(self.anon | self.user | self.contact)
        if ids:
            names = "|".join(_escape(v) for v in ids)
            out.append(f'"({_ID_FIELDS})"\\s*:\\s*"({names})"')
        for value in ids:
            if len(value) >= _FREE_TEXT_ID_CHARS:
                out.append(f"(^|,)\"?{_escape(value)}\"?(,|$)")
        out += [_escape(p) for p in sorted(self.persons)]
        return out


@dataclass(frozen=True)
class Erasure:
    """What one erasure did: its id, the persons it found, rows removed per place."""

    erasure_id: str
    person_count: int
    rows: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.rows.values())


_REGEX_SPECIAL = set(".^$*+?()[]{}|\\")
#: the JSON fields (Segment's and the canonical columns' names) that hold a device, user or
#: CRM contact id
_ID_FIELDS = ("anonymousId|anonymous_id|userId|user_id|previousId|previous_id|contact_id|"
              "crm_contact_id|device_id")
#: shorter ids are looked for in id fields only, never as a bare field of free text
_FREE_TEXT_ID_CHARS = 6


def _escape(text: str) -> str:
    """``text`` as a literal in a regular expression that RE2 (DuckDB), Java (Spark) and Python
    read alike: only metacharacters are escaped (RE2 refuses ``\\`` before a space or ``@``)."""
    return "".join("\\" + c if c in _REGEX_SPECIAL else c for c in text)


def _national_digits(e164: str) -> str:
    import phonenumbers

    try:
        return str(phonenumbers.parse(e164).national_number)
    except phonenumbers.NumberParseException:
        return re.sub(r"\D", "", e164)


def _is_digest(text: str) -> bool:
    """Whether ``text`` is 64 hex digits (a SHA-256 or a keyed hash)."""
    return re.fullmatch(r"[0-9a-fA-F]{64}", text) is not None


def normalise(kind: str, value: str, *, region: str, key: str | None = None
              ) -> tuple[str, list[str]]:
    """The identifier as identities normalises it, and the typed identifiers it stands for;
    with ``key`` (``pii_at_rest = "hashed"``) also the keyed form prepare stores
    (:func:`touchline.prepare.standardise.contact_key`)."""
    if kind not in ERASE_KINDS:
        raise InputError(f"cannot erase by {kind!r}: choose from {', '.join(ERASE_KINDS)}")
    text = value.strip()
    if not text:
        raise InputError(f"the {kind} to erase is empty")
    if kind == "email":
        text = text.lower()
        return text, store.contact_identifiers("email", text, key)
    if kind == "phone":
        e164 = to_e164(text, region)
        if e164 is None:
            raise InputError(f"phone {value!r} is not a possible phone number (region {region}, "
                             "settings.phone_region, for numbers without a country code)")
        return e164, store.contact_identifiers("phone", e164, key)
    if kind == "person":
        return text, []
    return text, [f"{ERASE_KINDS[kind]}:{text}"]


# ---- which rows of each table are the persons' ---------------------------------------------
def _lower(column: ir.StringValue) -> ir.StringValue:
    return column.strip().lower()


def _in(column: ir.Value, values: frozenset[str]) -> ir.BooleanValue:
    return column.isin(sorted(values)) if values else ibis.literal(False)


def _any(*conditions: ir.BooleanValue) -> ir.BooleanValue:
    out = conditions[0].fill_null(False)
    for condition in conditions[1:]:
        out = out | condition.fill_null(False)
    return out


def _listed(column: ir.StringValue, values: frozenset[str]) -> ir.BooleanValue:
    """Whether a ``;``-separated list (deals' contacts) names one of ``values``."""
    if not values:
        return ibis.literal(False)
    names = "|".join(_escape(v) for v in sorted(values))
    return _lower(column).re_search(f"(^|;)\\s*({names})\\s*(;|$)")


def _unlisted(column: ir.StringValue, values: frozenset[str], *, lower: bool
              ) -> ir.StringValue:
    """A ``;``-separated list without ``values`` (null when none is left)."""
    text = ";" + (column.lower() if lower else column) + ";"
    for value in sorted(values):
        for _ in range(2):  # a value next to itself: each pass removes every other copy
            text = text.re_replace(f";\\s*{_escape(value)}\\s*;", ";")
    return text.re_replace("^[;\\s]+|[;\\s]+$", "").nullif("")


def shared_deals(deals: ir.Table, target: Target, ids: Identifiers) -> ir.Table:
    """The persons' deals that name other contacts too, with the persons' e-mails and contact
    ids taken out of their lists: what an erasure writes back after deleting every deal of
    theirs, so a shared deal keeps its revenue for the others, as if they never were there."""
    mine = deals.filter(deals.deal_id.isin(target("deal")))
    left = mine.mutate(contact_emails=_unlisted(mine.contact_emails, ids.email, lower=True),
                       contact_ids=_unlisted(mine.contact_ids, ids.contact, lower=False))
    return left.filter(left.contact_emails.notnull() | left.contact_ids.notnull())


def _step_key(t: ir.Table) -> ir.StringValue:
    return t.journey_id + "|" + t.position.cast("string")


def _event_is_theirs(t: ir.Table, ids: Identifiers, phone_texts: frozenset[str]
                     ) -> ir.BooleanValue:
    """An event carrying one of the identifiers (as received, before prepare)."""
    return _any(
        _in(t.anonymous_id, ids.anon), _in(t.user_id, ids.user), _in(t.contact_id, ids.contact),
        _in(t.previous_id, ids.anon | ids.user), _in(t.message_id, ids.messages),
        _in(_lower(t.email), ids.email | ids.email_sha256), _in(t.phone, phone_texts),
        _in(_lower(t.email_sha256), ids.email_sha256),
        _in(_lower(t.phone_sha256), ids.phone_sha256),
    )


def _rejects_rule(t: ir.Table, target: Target, ids: Identifiers) -> ir.BooleanValue:
    tokens = ids.tokens()
    found = t.raw.re_search("(?i)(" + "|".join(tokens) + ")") if tokens else ibis.literal(False)
    # an export's reject names its conversion, <conversion>:<touch or deal>
    converted = t.ref.re_extract("^[^:]*:(.*)$", 1)
    return _any(t.ref.isin(target("message")), found, converted.isin(target("message")),
                converted.isin(target("deal")))


def _exported_rule(t: ir.Table, target: Target, ids: Identifiers) -> ir.BooleanValue:
    ref = t.conversion_id.re_extract("^[^:]*:(.*)$", 1)
    return _any(t.journey_id.isin(target("journey")), ref.isin(target("message")),
                ref.isin(target("deal")))


def _journey_rows(t: ir.Table, target: Target, ids: Identifiers) -> ir.BooleanValue:
    return _any(t.journey_id.isin(target("journey")), _step_key(t).isin(target("step")))


def _unit_rows(t: ir.Table, target: Target, ids: Identifiers) -> ir.BooleanValue:
    return _any((t.unit == "person") & _in(t.unit_id, ids.persons),
                (t.unit == "account") & t.unit_id.isin(target("account")))


#: every stored table of store.TABLES → which of its rows are the persons' (None: the table
#: holds nothing about a person: configuration, aggregates, bookkeeping, the erasure log)
def _crm_lead_rule(t: ir.Table, target: Target, ids: Identifiers) -> ir.BooleanValue:
    """A CRM push row of one of the persons' leads: ``lead_id`` is ``<conversion>:<ref>``, the
    ref the touch (message id) or deal that made the lead."""
    ref = t.lead_id.re_extract(r"^[^:]*:(.*)$", 1)
    return _any(ref.isin(target("message")), ref.isin(target("deal")))


ERASE_RULES: dict[str, Rule | None] = {
    "events": lambda t, target, ids: t.message_id.isin(target("message")),
    "deals": lambda t, target, ids: _any(t.deal_id.isin(target("deal"))),
    "calls": lambda t, target, ids: t.caller_number.isin(target("phone_text")),
    "surveys": lambda t, target, ids: _any(
        _in(t.person_id, ids.anon | ids.user | ids.persons), _in(_lower(t.email), ids.email)),
    "reviews": lambda t, target, ids: _any(
        _in(_lower(t.email), ids.email), t.phone.isin(target("phone_text"))),
    "rejects": _rejects_rule,
    "number_leases": lambda t, target, ids: _in(t.anonymous_id, ids.anon),
    "touches": lambda t, target, ids: t.message_id.isin(target("message")),
    "sessions": lambda t, target, ids: t.session_id.isin(target("session")),
    "identities": lambda t, target, ids: _any(_in(t.person_id, ids.persons),
                                              _in(t.identifier, ids.typed)),
    "identity_links": lambda t, target, ids: _any(_in(t.identifier_a, ids.typed),
                                                  _in(t.identifier_b, ids.typed)),
    "persons": lambda t, target, ids: _in(t.person_id, ids.persons),
    "accounts": lambda t, target, ids: t.account_id.isin(target("account")),
    "audit": lambda t, target, ids: t.message_id.isin(target("message")),
    "stages": _unit_rows,
    "journeys": lambda t, target, ids: _any(
        t.journey_id.isin(target("journey")),
        (t.unit == "account") & t.unit_id.isin(target("account"))),
    "journey_steps": _journey_rows,
    "credits": _journey_rows,
    "exported_conversions": _exported_rule,
    "crm_outbox": _crm_lead_rule,
    "crm_deliveries": _crm_lead_rule,
    "crm_dead_letters": _crm_lead_rule,
    "credit_intervals": None, "experiments": None,  # channel aggregates, no person's row
    "spend": None, "search_console": None, "social": None, "ingests": None,
    "runs": None,
    "write_keys": None, "users": None, "spool_offsets": None, "model_choices": None,
    "exports": None, "erasures": None,
}


# ---- the targets: computed once, before anything is deleted --------------------------------
def resolve(con: BaseBackend, kind: str, value: str, *, region: str, key: str | None = None
            ) -> tuple[str, Identifiers]:
    """The normalised identifier and everything that identifies its persons (step 1);
    ``key``: the keyed hash prepared tables keep contacts as, if they do."""
    normalised, seeds = normalise(kind, value, region=region, key=key)
    tables = set(con.list_tables())
    persons = {normalised} if kind == "person" else set()
    typed = set(seeds)
    if "identities" in tables:
        ident = con.table("identities")
        if seeds:
            found = ident.filter(ident.identifier.isin(seeds)).select("person_id").distinct()
            persons |= {p for p in found.to_pyarrow().column(0).to_pylist() if p}
        if persons:
            mine = ident.filter(ident.person_id.isin(sorted(persons))).select("identifier")
            typed |= set(mine.to_pyarrow().column(0).to_pylist())
    if "events" in tables and typed:
        # events not prepared yet: the identifiers seen on the same events (one hop)
        ids = Identifiers.of(persons, typed)
        events = con.table("events")
        near = events.filter(_event_is_theirs(events, ids, frozenset())).select(
            "anonymous_id", "user_id", "contact_id", "email", "phone"
        ).distinct().to_pyarrow().to_pylist()
        for row in near:
            typed |= {f"{prefix}:{row[column]}" for prefix, column in (
                ("anon", "anonymous_id"), ("user", "user_id"), ("contact", "contact_id"))
                if row[column]}
            if row["email"] and "@" in row["email"]:
                typed |= set(normalise("email", row["email"], region=region, key=key)[1])
            if row["phone"] and to_e164(row["phone"], region):
                typed |= set(normalise("phone", row["phone"], region=region, key=key)[1])
            # keyed at load (pii_at_rest = "hashed"): the graph's identifiers as they are
            typed |= {f"{kind}:{row[kind]}" for kind in ("email", "phone")
                      if key is not None and row[kind] and _is_digest(row[kind])}
    return normalised, Identifiers.of(persons, typed)


def _phone_texts(con: BaseBackend, ids: Identifiers, region: str) -> list[str]:
    """The raw phone texts in events, calls and reviews that normalise to the persons'
    numbers: candidates by their last digits in the engine, then phonenumbers on the few;
    and the persons' numbers as keyed hashes, as loads store them when
    ``pii_at_rest = "hashed"``."""
    keyed = sorted(p for p in ids.phone if not p.startswith("+"))
    tails = sorted({_national_digits(p) for p in ids.phone if p.startswith("+")})
    if not tails:
        return keyed
    found: set[str] = set()
    for table, column in (("events", "phone"), ("calls", "caller_number"), ("reviews", "phone")):
        if table not in con.list_tables():
            continue
        t = con.table(table)
        digits = t[column].re_replace(r"[^0-9]", "")
        near = _any(*(digits.endswith(tail) for tail in tails))
        texts = t.filter(near).select(text=t[column]).distinct().to_pyarrow()
        found |= {v for v in texts.column(0).to_pylist() if v}
    return sorted({v for v in found if to_e164(v, region) in ids.phone} | set(keyed))


def _targets(con: BaseBackend, ids: Identifiers, phone_texts: list[str], name: str) -> ir.Table:
    """Step 2: one table ``(kind, value)`` of the rows' keys to delete, materialised."""
    tables = set(con.list_tables())
    given = [("phone_text", v) for v in phone_texts]
    engine.load_table(con, f"{name}_given", pa.table({
        "kind": pa.array([k for k, _ in given], pa.string()),
        "value": pa.array([v for _, v in given], pa.string())}))
    parts: list[ir.Table] = [con.table(f"{name}_given")]

    def part(kind: str, column: ir.StringValue) -> None:
        parts.append(column.name("value").as_table().select(kind=ibis.literal(kind), value="value"))

    if "events" in tables:
        events = con.table("events")
        theirs = _event_is_theirs(events, ids, frozenset(phone_texts))
        part("message", events.filter(theirs).message_id)
    sessions = None
    if "sessions" in tables:
        s = con.table("sessions")
        sessions = s.filter(_any(_in(s.person_id, ids.persons), _in(s.device_id, ids.typed)))
        part("session", sessions.session_id)
    if "touches" in tables:
        t = con.table("touches")
        part("message", t.filter(_in(t.device_id, ids.typed)).message_id)
        if sessions is not None:
            keys = sessions.select(_device="device_id", _index="session_index")
            mine = t.inner_join(keys, [t.device_id == keys._device,
                                       t.session_index == keys._index])
            part("message", mine.message_id)
    if "journeys" in tables:
        j = con.table("journeys")
        part("journey", j.filter((j.unit == "person") & _in(j.unit_id, ids.persons)).journey_id)
    if "journey_steps" in tables and sessions is not None:
        steps = con.table("journey_steps")
        part("step", _step_key(steps.filter(steps.session_id.isin(sessions.session_id))))
    if "deals" in tables:
        d = con.table("deals")
        part("deal", d.filter(_any(_listed(d.contact_emails, ids.email),
                                   _listed(d.contact_ids, ids.contact))).deal_id)
    if "persons" in tables:
        p = con.table("persons")
        theirs = p.filter(_in(p.person_id, ids.persons) & p.account_id.notnull())
        others = p.filter(~_in(p.person_id, ids.persons) & p.account_id.notnull())
        part("account", theirs.filter(~theirs.account_id.isin(others.account_id)).account_id)
    every = ibis.union(*parts, distinct=True)
    return engine.materialise(con, name, every.filter(every.value.notnull()))


# ---- outside the warehouse -----------------------------------------------------------------
def _spool_rewriter(ids: Identifiers) -> tuple[Callable[[bytes], bytes | None], list[int]]:
    """``rewrite_lines``'s function: a line naming the persons is erased; a batch keeps its
    other messages. The list counts lines and batch messages removed."""
    tokens = ids.tokens()
    pattern = re.compile("(" + "|".join(tokens) + ")", re.IGNORECASE) if tokens else None
    removed = [0]

    def theirs(text: bytes) -> bool:
        return pattern is not None and pattern.search(text.decode(errors="replace")) is not None

    def rewrite(line: bytes) -> bytes | None:
        if not theirs(line):
            return None
        if line[:1] == BATCH and b"\t" in line:
            header, body = line[1:].split(b"\t", 1)
            try:
                parsed = orjson.loads(body)
            except orjson.JSONDecodeError:
                parsed = None
            messages = parsed.get("batch") if isinstance(parsed, dict) else None
            if not theirs(header) and isinstance(messages, list):
                kept = [m for m in messages if not theirs(orjson.dumps(m))]
                rest = {k: v for k, v in parsed.items() if k != "batch"}
                if kept and len(kept) < len(messages) and not theirs(orjson.dumps(rest)):
                    new = BATCH + header + b"\t" + orjson.dumps({**parsed, "batch": kept})
                    if len(new) <= len(line):
                        removed[0] += len(messages) - len(kept)
                        return new
                removed[0] += len(messages) - 1  # and the line's own count, below
        removed[0] += 1
        return b""

    return rewrite, removed


def erase_spool(spool_dir: Path, ids: Identifiers) -> int:
    """Blank the persons' lines in every spool segment (step 4); return lines and batch
    messages removed. Sealed segments' trailing partial writes are checked too."""
    if not spool_dir.is_dir():
        return 0
    rewrite, removed = _spool_rewriter(ids)
    with segments(spool_dir) as found:
        for segment in found:
            rewrite_lines(segment.path, rewrite, partial=segment.sealed)
    return removed[0]


def erase_leases(spool_dir: Path, ids: Identifiers) -> int:
    """Drop the live number leases of the persons' devices (the collector's SQLite store)."""
    path = spool_dir / LEASES_FILE
    if not path.exists() or not ids.anon:
        return 0
    return LeaseBook(path, {}).forget(sorted(ids.anon))


# ---- the whole erasure ----------------------------------------------------------------------
#: the folder (in the spool directory) where an erasure under way keeps what it resolved
JOURNAL_DIR = "erasure-pending"


@dataclass(frozen=True)
class _Pending:
    """What one erasure resolved, kept in the journal until it has finished."""

    erasure_id: str
    kind: str
    identifier_hash: str
    persons: frozenset[str]
    typed: frozenset[str]
    targets: pa.Table
    shared: pa.Table | None


def _write_journal(folder: Path, pending: _Pending) -> None:
    """Keep ``pending`` until the erasure finishes: a Spark warehouse has no transaction over
    tables, and once the identity graph's rows are deleted a rerun could not resolve the
    person again. Written to temporary names, then renamed: a journal is whole or absent."""
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.iterdir():
        old.unlink()
    head = {"erasure_id": pending.erasure_id, "kind": pending.kind,
            "identifier_hash": pending.identifier_hash,
            "persons": sorted(pending.persons), "typed": sorted(pending.typed)}
    pq.write_table(pending.targets, folder / "targets.parquet.part")
    if pending.shared is not None:
        pq.write_table(pending.shared, folder / "deals.parquet.part")
    (folder / "erasure.json.part").write_bytes(orjson.dumps(head))
    for part in folder.glob("*.part"):
        part.rename(part.with_suffix(""))


def _read_journal(folder: Path) -> _Pending | None:
    import pyarrow.parquet as pq

    head_path = folder / "erasure.json"
    if not head_path.exists():  # none, or one cut off before it was whole: nothing deleted
        return None
    head = orjson.loads(head_path.read_bytes())
    deals = folder / "deals.parquet"
    return _Pending(head["erasure_id"], head["kind"], head["identifier_hash"],
                    frozenset(head["persons"]), frozenset(head["typed"]),
                    pq.read_table(folder / "targets.parquet"),
                    pq.read_table(deals) if deals.exists() else None)


def _clear_journal(folder: Path) -> None:
    if folder.exists():
        for old in folder.iterdir():
            old.unlink()
        folder.rmdir()


def erase(con: BaseBackend, settings: Settings, *, kind: str, value: str,
          now: datetime | None = None) -> Erasure:
    """Remove every row of the person(s) ``kind``/``value`` names from every table, the spool
    and the lease store, and log it in ``erasures`` (see the module). Idempotent: a second run
    finds nothing and logs zeros.

    Resumable: what the erasure resolved (the identifiers, the keys of the rows to delete, the
    shared deals to write back) is kept in a journal in the spool directory until it has
    finished. On Spark, where the tables are rewritten one by one, an erasure stopped half-way
    is finished by the next ``erase`` (of anyone) from that journal, before its own.
    """
    if settings.pii_hash_key is None:
        raise ConfigError("settings.pii_hash_key is not set: the erasure log keeps a keyed hash "
                          "of the identifier; set TOUCHLINE_PII_HASH_KEY (16+ characters)")
    now = now or datetime.now(UTC).replace(tzinfo=None)
    store.init(con)
    spool_dir = Path(settings.spool_dir)
    journal = spool_dir / JOURNAL_DIR
    interrupted = _read_journal(journal)
    if interrupted is not None:
        done = _finish(con, spool_dir, interrupted, now)
        log.info("erasure %s: an interrupted erasure finished, %d rows", done.erasure_id,
                 done.total)
    # no loader runs meanwhile: it loads only into a DuckDB warehouse file, which allows one
    # process at a time, and ``con`` holds it for the whole erasure (the running collector's
    # loader skips its cycles until then; its loader lock is held for its whole life)
    normalised, ids = resolve(con, kind, value, region=settings.phone_region,
                              key=settings.pii_key_at_rest)
    phone_texts = _phone_texts(con, ids, settings.phone_region)
    name = f"tmp_erase_{uuid.uuid4().hex[:8]}"
    try:
        targets = _targets(con, ids, phone_texts, name)
        shared = None
        if "deals" in set(con.list_tables()):
            shared = shared_deals(con.table("deals"), lambda k: targets.filter(
                targets.kind == k).value, ids).to_pyarrow()
        pending = _Pending("era_" + uuid.uuid4().hex[:16], kind, store.keyed_hash(
            normalised, settings.pii_hash_key.get_secret_value()), ids.persons, ids.typed,
            targets.to_pyarrow(), shared)
    finally:
        engine.drop_materialised(con, name)
        con.drop_table(f"{name}_given", force=True)  # a loaded table, not a materialised one
    created = not spool_dir.exists()
    _write_journal(journal, pending)
    done = _finish(con, spool_dir, pending, now)
    if created and spool_dir.exists() and not any(spool_dir.iterdir()):
        spool_dir.rmdir()  # made for the journal only: no collector spools here
    log.info("erasure %s: %d persons, %d rows", done.erasure_id, done.person_count, done.total)
    return done


def _finish(con: BaseBackend, spool_dir: Path, pending: _Pending, now: datetime) -> Erasure:
    """Delete what ``pending`` names everywhere, write its shared deals back, log it, and
    clear the journal. Run again on the same ``pending`` it ends in the same state."""
    ids = Identifiers.of(pending.persons, pending.typed)
    name = f"tmp_erase_{uuid.uuid4().hex[:8]}"
    targets = engine.load_table(con, name, pending.targets)

    def target(kind: str) -> ir.Column:
        return targets.filter(targets.kind == kind).value

    rows: dict[str, int] = {}
    try:
        stored = set(con.list_tables())
        with engine.transaction(con):
            for table, rule in ERASE_RULES.items():
                if rule is None or table not in stored or engine.is_view(con, table):
                    continue
                rows[table] = engine.delete_where(
                    con, table, lambda t, rule=rule: rule(t, target, ids))
            if pending.shared is not None and pending.shared.num_rows and "deals" in stored:
                engine.append(con, "deals", pending.shared)
            rows[SPOOL_PLACE] = erase_spool(spool_dir, ids)
            rows[LEASE_STORE_PLACE] = erase_leases(spool_dir, ids)
            engine.append(con, store.ERASURES.name, _log_rows(
                pending.erasure_id, pending.kind, pending.identifier_hash, len(ids.persons),
                rows, now))
    finally:
        con.drop_table(name, force=True)
    _clear_journal(spool_dir / JOURNAL_DIR)
    return Erasure(pending.erasure_id, len(ids.persons), rows)


def _log_rows(erasure_id: str, kind: str, identifier_hash: str, persons: int,
              rows: dict[str, int], now: datetime) -> pa.Table:
    places = list(rows)
    count = len(places)
    return pa.table({
        "erasure_id": pa.array([erasure_id] * count, pa.string()),
        "identifier_kind": pa.array([kind] * count, pa.string()),
        "identifier_hash": pa.array([identifier_hash] * count, pa.string()),
        "person_count": pa.array([persons] * count, pa.int64()),
        "place": pa.array(places, pa.string()),
        "row_count": pa.array([rows[p] for p in places], pa.int64()),
        "erased_at": pa.array([now] * count, pa.timestamp("us")),
    }).cast(store.ERASURES.schema.to_pyarrow())
