"""Run the steps in order, record what each dropped or changed, write the prepared tables.

A run is a full rebuild from the raw tables (``events``, ``deals``): re-running on the same input
gives the same tables (idempotent), and adding a day of data then running again is the same as
a full rebuild, because nothing but the raw tables is read. The rejects of earlier prepare runs
(``step`` starting with ``prepare:``) are replaced; ingest rejects are kept.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import ibis
import ibis.expr.operations as ops
import ibis.expr.types as ir

from touchline import engine, store
from touchline.errors import SchemaError
from touchline.prepare import channels
from touchline.prepare.base import SCRATCH_PREFIX, Context, Step

if TYPE_CHECKING:
    import pandas as pd
    from ibis.backends import BaseBackend

    from touchline.config import Settings

log = logging.getLogger(__name__)

#: raw event columns prepare reads; the wide JSON ones (properties, traits, context) stay behind
INPUT_COLUMNS = (
    "message_id", "type", "event", "anonymous_id", "user_id", "group_id", "previous_id",
    "contact_id", "timestamp", "original_timestamp", "sent_at", "received_at", "url", "referrer",
    "utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content",
    *store.CLICK_IDS,
    "email", "phone", "email_sha256", "phone_sha256", "email_domain", "user_agent", "revenue",
    "currency",
    "source",
)
#: where an order id sits in a track event's properties: Segment's e-commerce spec, its
#: camel-case SDK spelling, GA4's and its camel-case
ORDER_ID_KEYS = ("order_id", "orderId", "transaction_id", "transactionId")
#: where a call's talk time (seconds) sits in its properties: touchline's call touches, and
#: the shorter key telephony exports use
CALL_SECONDS_KEYS = ("duration_seconds", "duration")
UTM_COLUMNS = store.UTM_COLUMNS
LANDING_URL_KEYS = store.LANDING_URL_KEYS
STEP_PREFIX = "prepare:"
RAW_MAX_CHARS = 2000


@dataclass(frozen=True)
class StepReport:
    """What one step did in one run."""

    name: str
    seconds: float
    rejected: int
    audited: int


@dataclass(frozen=True)
class PrepareResult:
    """Summary of a run: per-step reports, row counts of the written tables, rejects by reason
    and, when sessions existed before, how many sessions changed channel (old → new)."""

    run_id: str
    steps: list[StepReport]
    counts: dict[str, int]
    rejects_by_reason: dict[str, int]
    channel_changes: dict[tuple[str, str], int] = field(default_factory=dict)
    seconds: float = 0.0
    #: spend channels (as the export wrote them) that match no known channel: kept as written
    unmatched_spend_channels: list[str] = field(default_factory=list)


def working_events(raw: ir.Table) -> ir.Table:
    """The raw events narrowed to :data:`INPUT_COLUMNS` with canonical types; ``source`` is
    renamed ``recorded_by`` (the system, not the traffic source). Missing optional columns
    become typed nulls, so an export without click ids still runs."""
    if "message_id" not in raw.columns or "timestamp" not in raw.columns:
        raise SchemaError("table events needs at least message_id and timestamp; has "
                          + ", ".join(raw.columns))
    spec = store.EVENTS
    cols = {}
    for name in INPUT_COLUMNS:
        dtype = spec.column(name).dtype
        value = raw[name].cast(dtype) if name in raw.columns else ibis.null(dtype)
        cols["recorded_by" if name == "source" else name] = value
    values = _property_values(raw)
    # a campaign is one set: the row's own fields when it has any (the collector read them
    # from context.campaign or the URL, the call's number lease gave them), else its properties'
    own = ibis.or_(*(cols[c].notnull() for c in UTM_COLUMNS))
    for column in UTM_COLUMNS:
        cols[column] = ibis.ifelse(own, cols[column], values.pop(column))
    cols.update(values)
    return raw.select(**cols)


def _property_values(raw: ir.Table) -> dict[str, ir.Value]:
    """The values prepare reads out of a track event's ``properties`` JSON: ``order_id`` (the
    first of :data:`ORDER_ID_KEYS` present), ``call_seconds`` (the first of
    :data:`CALL_SECONDS_KEYS`, rounded to whole seconds; anything else is null) and, for
    calls, ``call_outcome`` (the telephony disposition, read by the spam step and dropped
    there). Also the campaign, ``utm_source`` … ``utm_content``: the property of that name,
    else that parameter of the URL under one of :data:`LANDING_URL_KEYS` (a call tracker
    records the landing page and its UTMs with the call; without them a call from a paid
    click is Direct). Page views are not parsed: their campaign is their URL's."""
    if "properties" not in raw.columns:
        return {"order_id": ibis.null("string"), "call_seconds": ibis.null("int64"),
                "call_outcome": ibis.null("string"),
                **{c: ibis.null("string") for c in UTM_COLUMNS}}
    props = raw.properties.cast("string")
    track = (raw.type == "track").fill_null(False)
    call = track & ((raw.source == "calls").fill_null(False) if "source" in raw.columns
                    else ibis.literal(False))
    order = ibis.coalesce(*(engine.json_value(props, key).strip().nullif("")
                            for key in ORDER_ID_KEYS))
    seconds = ibis.coalesce(*(engine.json_value(props, key).try_cast("float64")
                              for key in CALL_SECONDS_KEYS)).round().cast("int64")
    landing = ibis.coalesce(*(engine.json_value(props, key) for key in LANDING_URL_KEYS))
    # the cheap contains() spares the JSON parses on the many rows that name no campaign: a
    # UTM key and a landing URL with UTM parameters both hold the text "utm_"
    named = track & props.contains("utm_").fill_null(False)
    campaign = {c: ibis.ifelse(named, ibis.coalesce(engine.json_value(props, c).strip().nullif(""),
                                                    engine.url_parameter(landing, c)),
                               ibis.null("string"))
                for c in UTM_COLUMNS}
    return {**campaign,
            "order_id": ibis.ifelse(track, order, ibis.null("string")),
            "call_seconds": ibis.ifelse(track, seconds, ibis.null("int64")),
            "call_outcome": ibis.ifelse(call, engine.json_value(props, "outcome"),
                                        ibis.null("string"))}


def _with_columns(raw: ir.Table, spec: store.TableSpec) -> ir.Table:
    """``raw`` with the columns of ``spec`` it lacks as typed nulls (a table written by an
    older version, or by hand)."""
    missing = {c.name: ibis.null(c.dtype) for c in spec.columns if c.name not in raw.columns}
    return raw.mutate(**missing) if missing else raw


def _reject_rows(rejected: ir.Table, step: str, ctx: Context) -> ir.Table:
    r = rejected
    if "ref" not in r.columns:
        r = r.mutate(ref=ibis.null("string"))
    # the row as it was dropped; later steps work without the raw url (page_url replaces it)
    shown = [c for c in ("message_id", "type", "event", "anonymous_id", "timestamp", "url",
                         "page_url", "user_agent") if c in r.columns]
    raw = engine.json_object({name: r[name] for name in shown})
    number = ibis.row_number().over(order_by=[r.message_id, r.timestamp])
    return r.select(
        reject_id=STEP_PREFIX + step + ":" + r.message_id.fill_null("") + ":" + number.cast(
            "string"),
        step=ibis.literal(STEP_PREFIX + step),
        source=r.recorded_by,
        line=ibis.null("int64"),
        field=r.field.cast("string"),
        reason_code=r.reason_code,
        reason=r.reason,
        raw=raw.substr(0, RAW_MAX_CHARS),
        ref=r.ref.cast("string"),
        ingest_id=ibis.literal(ctx.run_id),
        rejected_at=ibis.literal(ctx.now, type="timestamp"),
    )


def _audit_rows(audit: ir.Table, step: str, ctx: Context) -> ir.Table:
    a = audit
    key = a.message_id.fill_null(a.old_value.fill_null("*")) + "|" + a.new_value.fill_null("")
    return a.select(
        audit_id=ibis.literal(step) + "|" + a.field + "|" + a.reason_code + "|" + key,
        run_id=ibis.literal(ctx.run_id), step=ibis.literal(step), field=a.field,
        reason_code=a.reason_code, reason=a.reason, message_id=a.message_id.cast("string"),
        old_value=a.old_value.cast("string"), new_value=a.new_value.cast("string"),
        row_count=a.row_count.cast("int64"),
        audited_at=ibis.literal(ctx.now, type="timestamp"),
    )


def _rebound(expr: ir.Table, rebind: dict[object, object]) -> ir.Table:
    """``expr`` with each lazy table in ``rebind`` replaced by its stored copy (same schema)."""
    if not rebind:
        return expr
    return expr.op().replace(rebind).to_expr()  # type: ignore[arg-type, no-any-return]


def _reads(table: ir.Table) -> set[str]:
    """Names of the stored tables ``table`` reads."""
    return {node.name for node in table.op().find(ops.DatabaseTable)}


class _Pending:
    """The steps' rejects or audit rows, kept as expressions until they are written.

    Why: each step's rejects stored on their own were a query per step (on Spark a job, the
    dearest thing in a small run: a third of a prepare's jobs). They stay lazy and are written
    together at the end (:func:`touchline.engine.write_union`); only when a checkpoint they
    read is about to be dropped are the ones reading it set apart first, together
    (:func:`touchline.engine.detach`: on DuckDB a query per part, on Spark none).
    """

    def __init__(self, con: BaseBackend, kind: str, spec: store.TableSpec) -> None:
        self.con, self.kind, self.spec = con, kind, spec
        self.parts: list[ir.Table] = []

    def add(self, part: ir.Table) -> None:
        self.parts.append(_conform(part, self.spec))

    def store_readers_of(self, names: set[str]) -> None:
        """Store, in one query, the parts that read any of ``names``."""
        readers = [p for p in self.parts if _reads(p) & names]
        if not readers:
            return
        stored = engine.detach(
            self.con, f"{SCRATCH_PREFIX}{self.kind}_{uuid.uuid4().hex[:8]}", readers)
        # conformed again: a stored timestamp reads back as timestamp(6), an int64 literal
        # on Spark as int32, and a union needs equal types
        self.parts = [p for p in self.parts if not _reads(p) & names] + [
            _conform(stored, self.spec)]


def _drop_unreferenced(con: BaseBackend, checkpoints: list[str],
                       tables: dict[str, ir.Table], pending: Sequence[_Pending]) -> None:
    """Drop stored checkpoints that no working table reads any more.

    Why: at 10M+ events each checkpoint holds gigabytes; keeping them all to the end of the run
    made DuckDB spill. A checkpoint stays while any lazy table (``duplicate_evidence``, say)
    still reads it; rejects or audit rows still to be written that read it are stored first.
    """
    live = set().union(*(_reads(t) for t in tables.values()))
    dead = {n for n in checkpoints if n not in live}
    if not dead:
        return
    for rows in pending:
        rows.store_readers_of(dead)
    for name in dead:
        checkpoints.remove(name)
        engine.drop_materialised(con, name)


def _conform(table: ir.Table, spec: store.TableSpec) -> ir.Table:
    return table.select(*(table[c.name].cast(c.dtype).name(c.name) for c in spec.columns))


def assemble(tables: dict[str, ir.Table], ctx: Context) -> dict[str, ir.Table]:
    """The prepared tables from the steps' outputs: persons and accounts attached to sessions.

    ``touches`` is not here: the step that made it stored it already (``Step.persist_as``),
    and ``touchpoints`` is a view over it and the sessions.
    """
    ident = tables["identities"]
    accounts_of = tables["person_accounts"]
    devices = ident.select(_dev="identifier", person_id="person_id")
    acc = accounts_of.select(_pid="person_id", account_id="account_id")
    s = tables["sessions"]
    s = s.left_join(devices, s.device_id == devices._dev).drop("_dev")
    s = s.left_join(acc, s.person_id == acc._pid).drop("_pid")
    # written first by the caller; persons then read the written sessions
    sessions = _conform(s, store.SESSIONS)
    kinds = ident.group_by("person_id").aggregate(
        user_id=ident.identifier.substr(5).min(where=ident.kind == "user"),
        email=ident.identifier.substr(6).min(where=ident.kind == "email"),
        identifier_count=ident.count(),
        device_count=(ident.kind == "anon").cast("int64").sum(),
    )
    # from the sessions, not the touches: every touch is in exactly one session, so the sums
    # and extremes are the same, over a third of the rows
    stats = sessions.group_by("person_id").aggregate(
        touch_count=sessions.event_count.sum(), first_seen_at=sessions.started_at.min(),
        last_seen_at=sessions.ended_at.max())
    persons = kinds.left_join(stats, kinds.person_id == stats.person_id).drop("person_id_right")
    persons = persons.left_join(acc, persons.person_id == acc._pid).drop("_pid")
    persons = _conform(persons.mutate(touch_count=persons.touch_count.fill_null(0)),
                       store.PERSONS)
    firsts = persons.select(_p="person_id", _first="first_seen_at")
    pa_ = accounts_of.inner_join(firsts, accounts_of.person_id == firsts._p)
    accounts = pa_.group_by("account_id").aggregate(
        account_name=pa_.account_name.min(), domain=pa_.domain.min(),
        account_source=pa_.account_source.min(), person_count=pa_.count(),
        first_seen_at=pa_._first.min())
    return {
        "sessions": sessions,
        "identities": _conform(ident, store.IDENTITIES),
        "identity_links": _conform(tables["identity_links"], store.IDENTITY_LINKS),
        "persons": persons,
        "accounts": _conform(accounts, store.ACCOUNTS),
    }


def _channel_changes(old: ir.Table | None, new: ir.Table) -> dict[tuple[str, str], int]:
    """Sessions whose channel changed between the last run (``old``: its sessions' device,
    start and channel) and the written ``new`` sessions, counted per (old, new) channel.

    Sessions are paired by (device_id, started_at), not by id: a session id numbers the
    device's sessions, so older data arriving later (a backfill) renumbers them, and pairing by
    id would compare unrelated visits. A session whose start moved (an earlier touch joined it)
    is a new session, not a changed one.
    """
    if old is None:
        return {}
    # one aggregate over both, not a self-join per side and a join of the two (on Spark
    # four jobs, one a broadcast): a start seen once on each side pairs its two sessions
    # cast to the new sessions' types: a union needs one schema, and the last run's table may
    # come from an older version
    sides = [t.select(*(t[c].cast(new[c].type()).name(c)
                        for c in ("device_id", "started_at", "channel")),
                      _old=ibis.literal(is_old))
             for t, is_old in ((old, True), (new, False))]
    both = ibis.union(*sides, distinct=False)
    both = both.filter(both.device_id.notnull() & both.started_at.notnull())
    starts = both.group_by(["device_id", "started_at"]).aggregate(
        _n_old=both._old.cast("int64").sum(), _n_new=(~both._old).cast("int64").sum(),
        old_channel=both.channel.min(where=both._old),
        channel=both.channel.min(where=~both._old))
    paired = starts.filter((starts._n_old == 1) & (starts._n_new == 1))
    diff = paired.filter(paired.channel != paired.old_channel).group_by(
        ["old_channel", "channel"]).aggregate(n=ibis._.count())
    # not "_old": itertuples renames fields that start with an underscore
    return {(str(r.old_channel), str(r.channel)): int(r.n)
            for r in diff.to_pandas().itertuples()}


def _replace_rejects(con: BaseBackend, parts: list[ir.Table]) -> None:
    if "rejects" not in con.list_tables():
        con.create_table("rejects", schema=store.REJECTS.schema)
    kept = con.table("rejects")
    kept = kept.filter(~kept.step.fill_null("").startswith(STEP_PREFIX))
    every = [_conform(kept, store.REJECTS), *(_conform(part, store.REJECTS) for part in parts)]
    if engine.engine_name(con) == "spark":
        # two hops: Spark cannot overwrite a table it is reading from
        every = [engine.materialise(con, f"{SCRATCH_PREFIX}rejects_all",
                                    ibis.union(*every, distinct=False))]
    engine.write_union(con, "rejects", every)


@dataclass(frozen=True)
class _WrittenCounts:
    """What a run wrote, counted from the written tables: rows of each prepared table, and
    this run's rejects (by step and reason) and audit rows (by step)."""

    rows: dict[str, int]
    rejects: pd.DataFrame  # step, reason_code, n
    audited: pd.DataFrame  # step, n


def _written_counts(con: BaseBackend, names: Sequence[str], run_id: str) -> _WrittenCounts:
    """:class:`_WrittenCounts` in one query (on Spark one job, not one a table and one each
    for the rejects and audit rows): the parts share the columns ``kind, name, reason_code,
    n``."""
    import pandas as pd

    none = ibis.null("string")
    parts = [con.table(name).aggregate(n=ibis._.count().cast("int64")).mutate(
        kind=ibis.literal("rows"), name=ibis.literal(name), reason_code=none)
        for name in names]
    rejects = con.table("rejects")
    parts.append(rejects.filter(rejects.ingest_id == run_id).group_by(
        name="step", reason_code="reason_code").aggregate(n=ibis._.count().cast("int64")).mutate(
        kind=ibis.literal("rejects")))
    audit = con.table("audit")
    parts.append(audit.group_by(name="step").aggregate(n=ibis._.count().cast("int64")).mutate(
        kind=ibis.literal("audit"), reason_code=none))
    columns = ["kind", "name", "reason_code", "n"]
    got = ibis.union(*(p.select(*columns) for p in parts), distinct=False).to_pandas()
    by_kind = {kind: rows.drop(columns="kind") for kind, rows in got.groupby("kind")}
    empty = pd.DataFrame({"name": [], "reason_code": [], "n": []})
    found = dict(zip(by_kind["rows"]["name"], by_kind["rows"]["n"], strict=True))
    return _WrittenCounts(
        rows={name: int(found[name]) for name in names},
        rejects=by_kind.get("rejects", empty).rename(columns={"name": "step"}),
        audited=by_kind.get("audit", empty).rename(columns={"name": "step"}).drop(
            columns="reason_code"))


#: told ``(steps done, steps in all, what runs now)`` before each step and before the writes
StepProgress = Callable[[int, int, str], None]


def run_steps(con: BaseBackend, settings: Settings, steps: Sequence[Step], *,
              now: datetime | None = None, run_id: str | None = None,
              progress: StepProgress | None = None) -> PrepareResult:
    """Run ``steps`` on ``con``'s raw tables and replace the prepared tables."""
    tell = progress or (lambda done, total, what: None)
    started = time.perf_counter()
    existing = set(con.list_tables())
    if "events" not in existing:
        raise SchemaError("no table events in the warehouse: run `touchline init` and ingest "
                          "events first")
    ctx = Context(con=con, settings=settings,
                  now=now or datetime.now(UTC).replace(tzinfo=None),
                  run_id=run_id or f"prepare-{uuid.uuid4().hex[:12]}")
    # DuckDB reads them lazily from the warehouse file: the steps up to the first checkpoint
    # (filters and exact dedupe) run as one query, and each of their rejects is one narrow
    # scan; Spark stores them first, else it plans their SQL again under every such query
    working = working_events(con.table("events"))
    staged = engine.stage_input(con, f"{SCRATCH_PREFIX}working_events", working)
    tables: dict[str, ir.Table] = {"events": staged}
    if "deals" in existing:
        tables["deals"] = _with_columns(con.table("deals"), store.DEALS)
    rejected = _Pending(con, "rejects", store.REJECTS)
    audits = _Pending(con, "audit", store.AUDIT)
    seconds: list[float] = []
    checkpoints: list[str] = []
    persisted: dict[str, str] = {}  # prepared table -> the scratch name it is written under
    if staged is not working:  # stored: dropped like a checkpoint once nothing reads it
        checkpoints.append(staged.op().name)
    try:
        for i, step in enumerate(steps):
            tell(i, len(steps), step.name)
            t0 = time.perf_counter()
            before = tables["events"]
            result = step.fn(tables, ctx)
            produced = dict(result.tables)
            after = produced.get("events", before)
            rebind: dict[object, object] = {}
            if step.persist_as is not None:
                # in the warehouse (never a temporary table): renamed at the end of the run
                scratch = f"{SCRATCH_PREFIX}{step.persist_as}"
                stored = engine.write_table(
                    con, scratch, _conform(after, store.TABLES[step.persist_as]))
                rebind[after.op()] = stored.op()
                produced["events"] = stored
                persisted[step.persist_as] = scratch
            elif step.stage and after is not before:
                # stored before its rejects and audit are counted, which then read the stored
                # rows instead of recomputing the step's expressions (URL regexes, windows)
                stored = engine.stage_input(con, f"{SCRATCH_PREFIX}events_{i}", after)
                if stored is not after:
                    rebind[after.op()] = stored.op()
                    produced["events"] = stored
                    # its bare name: what a query's table nodes are named (DuckDB's get_name()
                    # gives "temp.main.<name>", which matched no reader and dropped nothing)
                    checkpoints.append(stored.op().name)
            checkpoints.extend(result.stored)
            if result.rejected is not None:
                rejected.add(_rebound(_reject_rows(result.rejected, step.name, ctx), rebind))
            if result.audit is not None:
                audits.add(_rebound(_audit_rows(result.audit, step.name, ctx), rebind))
            tables.update(produced)
            _drop_unreferenced(con, checkpoints, tables, (rejected, audits))
            seconds.append(time.perf_counter() - t0)
            log.info("prepare step %s: %.2f s", step.name, seconds[-1])
        tell(len(steps), len(steps), "writing the prepared tables")
        out = assemble(tables, ctx)
        # the last run's channels, kept aside before sessions are replaced: the difference is
        # then taken from the written sessions, not by evaluating the new ones a second time
        previous = None
        if "sessions" in existing:
            previous = engine.materialise(con, f"{SCRATCH_PREFIX}previous_channels",
                                          con.table("sessions").select(
                                              "device_id", "started_at", "channel"))
        written_as: dict[object, object] = {}
        for name, expr in out.items():
            # in order: persons read the written sessions, accounts the written persons,
            # not the joins again
            written = engine.write_table(con, name, _rebound(expr, written_as))
            written_as[expr.op()] = written.op()
        changes = _channel_changes(previous, con.table("sessions"))
        # last, once nothing reads them under their scratch names any more
        for name, scratch in persisted.items():
            engine.drop_any(con, name)
            engine.rename_table(con, scratch, name)
        for spec in store.PREPARED:
            if spec.view is not None:
                engine.replace_view(con, spec.name, spec.view(con))
        # each part conformed (Pending.add): Spark may read an int64 literal column back as
        # int32
        if audits.parts:
            engine.write_union(con, "audit", audits.parts)
        else:
            con.create_table("audit", schema=store.AUDIT.schema, overwrite=True)
        _replace_rejects(con, rejected.parts)
        unmatched = standardise_spend(con, settings) if "spend" in existing else []
        written = _written_counts(con, [*out, *persisted], ctx.run_id)
        counts = written.rows
        # every touch has its session (sessions are built from the touches): the view's rows
        counts["touchpoints"] = counts["touches"]
        by_reason, audited = written.rejects, written.audited
    finally:
        engine.drop_scratch(con, SCRATCH_PREFIX)
    # counted once at the end, from the written tables: a count per step was a query (a
    # Spark job) per step
    n_rejected = by_reason.groupby("step")["n"].sum()
    n_audited = audited.set_index("step")["n"]
    reports = [StepReport(step.name, took, int(n_rejected.get(STEP_PREFIX + step.name, 0)),
                          int(n_audited.get(step.name, 0)))
               for step, took in zip(steps, seconds, strict=True)]
    for report in reports:
        log.info("prepare step %s: %d rejected, %d audit rows", report.name, report.rejected,
                 report.audited)
    return PrepareResult(
        run_id=ctx.run_id, steps=reports, counts=counts,
        rejects_by_reason={str(reason): int(n) for reason, n in
                           by_reason.groupby("reason_code")["n"].sum().items()},
        channel_changes=changes, seconds=time.perf_counter() - started,
        unmatched_spend_channels=unmatched)


def standardise_spend(con: BaseBackend, settings: Settings) -> list[str]:
    """Name each spend row's channel as the sessions name it (:func:`channels.spend_channels`
    by the channel rules' groups and aliases), so every reader of ``spend`` (KPIs, pages,
    report, exports) matches it to the credited channels alike; return the export's channel
    names that match no known channel (kept as written)."""
    # a warehouse made before spend had imported_channel gains it
    engine.add_missing_columns(con, "spend", store.SPEND.schema)
    rules = channels.default_rules(settings.channel_rules_file, preset=settings.channel_rules)
    named = _conform(channels.spend_channels(con.table("spend"), channels.known_channels(rules)),
                     store.SPEND)
    # two hops: Spark cannot overwrite a table it is reading from (nor DuckDB, lazily)
    named = engine.materialise(con, f"{SCRATCH_PREFIX}spend_named", named)
    con.create_table("spend", named, overwrite=True)
    sp = con.table("spend")
    unmatched = sp.filter(sp.channel_matched == False).select("channel").distinct()  # noqa: E712
    return sorted(unmatched.to_pandas()["channel"].tolist())
