"""The step functions ``fn(tables, ctx) -> StepResult`` that :data:`touchline.prepare.STEPS`
lists: each binds one pure function of the topic modules to the settings and reference data."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime, timedelta

import ibis
import ibis.expr.types as ir
import pyarrow as pa

from touchline import engine, store
from touchline.prepare import channels, clean, dedupe, identity, reference, sessions, standardise
from touchline.prepare.base import SCRATCH_PREFIX, Context, StepResult

log = logging.getLogger(__name__)
Tables = Mapping[str, ir.Table]


def _distinct(*columns: ir.Column) -> list[str]:
    """Distinct non-null values of ``columns`` (of one table) together, brought to Python (a
    small aggregate) by one query: on Spark one job, not one a column."""
    values = ibis.union(*(c.name("v").as_table() for c in columns), distinct=False)
    got = values.filter(values.v.notnull()).distinct().to_pyarrow()
    return sorted(str(v) for v in got.column("v").to_pylist())


def drop_missing_ids(t: Tables, ctx: Context) -> StepResult:
    split = clean.drop_missing_ids(t["events"])
    return StepResult({"events": split.kept}, split.rejected)


def drop_spam_calls(t: Tables, ctx: Context) -> StepResult:
    split = clean.drop_spam_calls(t["events"], outcomes=ctx.settings.call_spam_outcomes)
    # the disposition is used up: later copies of the working table are narrower
    return StepResult({"events": split.kept.drop("call_outcome")}, split.rejected)


def correct_clock_skew(t: Tables, ctx: Context) -> StepResult:
    events, audit = clean.correct_clock_skew(
        t["events"], flag_seconds=ctx.settings.clock_skew_flag_seconds)
    # the client times are used up: every later copy of the working table is narrower
    return StepResult({"events": events.drop("original_timestamp", "sent_at")}, audit=audit)


def drop_impossible_timestamps(t: Tables, ctx: Context) -> StepResult:
    earliest = datetime.fromisoformat(ctx.settings.earliest_valid_timestamp)
    split = clean.drop_impossible_timestamps(t["events"], earliest=earliest)
    return StepResult({"events": split.kept}, split.rejected)


def drop_future_timestamps(t: Tables, ctx: Context) -> StepResult:
    tolerance = timedelta(minutes=ctx.settings.future_tolerance_minutes)
    split = clean.drop_future_timestamps(t["events"], now=ctx.now, tolerance=tolerance)
    return StepResult({"events": split.kept}, split.rejected)


def _stored_lookup(ctx: Context, name: str, expr: ir.Table) -> tuple[ir.Table, bool]:
    """``expr`` stored as scratch table ``name`` (small: a look-up read by the kept and the
    rejected side), and whether it has no rows.

    Why ask: a step whose look-up is empty keeps its input as it is. An anti join with an empty
    table is a no-op, but DuckDB estimates any anti join to keep a fifth of its input, and that
    estimate later puts a hash table on the wrong side of a join of millions of rows. Counted
    as it is stored (:func:`touchline.engine.materialise_counted`: on Spark one job, not two).
    """
    table, rows = engine.materialise_counted(ctx.con, f"{SCRATCH_PREFIX}{name}", expr)
    return table, rows == 0


def drop_bot_user_agents(t: Tables, ctx: Context) -> StepResult:
    s = ctx.settings
    agents = clean.bot_user_agents(
        _distinct(t["events"].user_agent), crawler_list=s.bot_user_agent_list,
        patterns=s.bot_user_agent_patterns, allow=s.bot_user_agent_allow)
    if not agents:
        return StepResult()
    bots = ctx.lookup("bot_agents", pa.table({"user_agent": pa.array(agents, pa.string())}))
    split = clean.drop_bot_user_agents(t["events"], bots)
    return StepResult({"events": split.kept}, split.rejected)


def drop_bot_bursts(t: Tables, ctx: Context) -> StepResult:
    limit = ctx.settings.bot_hits_per_minute
    events = t["events"]
    # stored: small, and read by the exact test below; usually empty, and then nothing is sorted
    candidates, none = _stored_lookup(ctx, "burst_candidates",
                                      clean.burst_candidates(events, max_per_minute=limit))
    if none:
        return StepResult({"events": _used_up(events)})
    # stored: both the kept and the rejected side test membership in it
    devices, none = _stored_lookup(ctx, "burst_devices", clean.burst_devices(
        events, max_per_minute=limit, candidates=candidates))
    if none:
        return StepResult({"events": _used_up(events)})
    split = clean.drop_bot_bursts(events, max_per_minute=limit, devices=devices)
    return StepResult({"events": _used_up(split.kept)}, split.rejected)


def _used_up(events: ir.Table) -> ir.Table:
    """The working table without the columns only the cleaning steps read (the user agent,
    the time of receipt): every later copy is narrower."""
    return events.drop("user_agent", "received_at")


def standardise_utm(t: Tables, ctx: Context) -> StepResult:
    events, audit = standardise.standardise_utm(
        t["events"],
        source_aliases=reference.aliases("source", ctx.settings.source_aliases_file),
        medium_aliases=channels.medium_aliases(ctx.settings.channel_rules))
    return StepResult({"events": events}, audit=audit)


def standardise_urls(t: Tables, ctx: Context) -> StepResult:
    # stored: the lookups are read by the rows and by the audit
    pages = engine.materialise(ctx.con, f"{SCRATCH_PREFIX}pages",
                               standardise.page_table(t["events"]))
    referrers = engine.materialise(ctx.con, f"{SCRATCH_PREFIX}referrers",
                                   standardise.referrer_table(t["events"]))
    events, audit = standardise.standardise_urls(t["events"], pages, referrers)
    # page_url, referrer_host, click_id_type and click_id carry on what these said
    used = ["url", "referrer", *(c for c, _ in standardise.CLICK_IDS)]
    return StepResult({"events": events.drop(*used)}, audit=audit)


def standardise_contacts(t: Tables, ctx: Context) -> StepResult:
    hashed = ctx.settings.pii_at_rest == "hashed"
    events = standardise.set_keyed_aside(t["events"]) if hashed else t["events"]
    raw = _distinct(events.phone)
    phones = ctx.lookup("phones", standardise.e164_table(raw, ctx.settings.phone_region))
    events, audit = standardise.standardise_contacts(events, phones)
    domains = _distinct(events.email_domain)
    business = ctx.lookup("business_domains", pa.table({"_business_domain": pa.array(
        [d for d in domains if not store.is_free_mail_domain(d)], pa.string())}))
    events = standardise.business_domains_only(events, business)
    if hashed:
        events = standardise.hash_contacts(events, ctx.con, ctx.settings)
    return StepResult({"events": events}, audit=audit)


def convert_currency(t: Tables, ctx: Context) -> StepResult:
    rates = reference.currency_rates(ctx.settings.reporting_currency,
                                     ctx.settings.currency_rates_file)
    events, audit = standardise.convert_currency(
        t["events"], rates=rates, reporting=ctx.settings.reporting_currency)
    return StepResult({"events": events}, audit=audit)


def dedupe_exact(t: Tables, ctx: Context) -> StepResult:
    # the input stored once with a row id: the step's checkpoint (later steps read it through
    # the anti join with the losers; no second copy of the kept rows is written). Then the
    # repeated ids and the losing copies' row ids, each stored: no query reads the input
    # twice (DuckDB would buffer all of it) and the ranking window holds narrow rows only
    numbered = f"{SCRATCH_PREFIX}numbered_events"
    events = engine.materialise_with_row_ids(ctx.con, numbered, t["events"], dedupe.ROW)
    repeated = engine.materialise(ctx.con, f"{SCRATCH_PREFIX}repeated_ids",
                                  dedupe.repeated_ids(events))
    losers = engine.materialise(ctx.con, f"{SCRATCH_PREFIX}losing_copies",
                                dedupe.losing_copies(events, repeated))
    split = dedupe.dedupe_exact(events, losers)
    return StepResult({"events": split.kept}, split.rejected, stored=(numbered,))


def dedupe_cross_source(t: Tables, ctx: Context) -> StepResult:
    # stored first: the events that can link (few; the pairs read them ten times), then the
    # direct winners (following refs reads them 2^hops times)
    link_seconds = ctx.settings.dedupe_link_seconds
    events = t["events"]
    linkable = engine.materialise(ctx.con, f"{SCRATCH_PREFIX}cross_source_linkable",
                                  events.filter(events.event.isin(list(link_seconds))))
    direct = engine.materialise(ctx.con, f"{SCRATCH_PREFIX}cross_source_direct",
                                dedupe.cross_source_losers(
                                    linkable, link_seconds=link_seconds,
                                    priority=ctx.settings.dedupe_source_priority, follow=False))
    losers, none = _stored_lookup(ctx, "cross_source_losers", dedupe.follow_refs(direct))
    if none:
        return StepResult()
    split = dedupe.link_cross_source(t["events"], losers)
    # a duplicate touch still proves who it was: its ids stay evidence for the identity graph
    # stored (a few rows): else it would keep this step's whole input alive to the identity step
    evidence = engine.materialise(ctx.con, f"{SCRATCH_PREFIX}duplicate_evidence",
                                  split.rejected.select(*identity.EVIDENCE_COLUMNS))
    return StepResult({"events": split.kept, "duplicate_evidence": evidence}, split.rejected)


def dedupe_orders(t: Tables, ctx: Context) -> StepResult:
    events = t["events"]
    audit = dedupe.zero_revenue_orders(events)
    losers, none = _stored_lookup(ctx, "order_copies", dedupe.order_copies(events))
    if none:
        return StepResult(audit=audit)
    split = dedupe.dedupe_orders(events, losers)
    return StepResult({"events": split.kept}, split.rejected, audit=audit)


def keep_retained_touches(t: Tables, ctx: Context) -> StepResult:
    """With ``raw_event_retention_days``, the stored touches whose raw event retention
    deleted (``touchline retention apply``) join the cleaned events again, as they were
    prepared: sessions, channels, the identity graph and journeys are then built from all of
    them, and a run after the deletion gives the tables of a run before it."""
    events = t["events"]
    con = ctx.con
    if ctx.settings.raw_event_retention_days is None or "touches" not in con.list_tables():
        return StepResult({"events": events})
    stored = con.table("touches")
    raw = con.table("events").select(_raw_id="message_id")
    gone = stored.anti_join(raw, stored.message_id == raw._raw_id)
    renamed = {"source": "recorded_by"}
    columns = []
    for name, dtype in events.schema().items():
        source = renamed.get(name, name)
        value = gone[source] if source in gone.columns else ibis.null(dtype)
        columns.append(value.cast(dtype).name(name))
    # stored first: sessionise replaces `touches`, which this reads
    kept = engine.materialise(con, f"{SCRATCH_PREFIX}retained_touches", gone.select(*columns))
    return StepResult({"events": events.union(kept, distinct=False)})


def sessionise(t: Tables, ctx: Context) -> StepResult:
    events = sessions.device_ids(t["events"])
    gap = timedelta(minutes=ctx.settings.session_gap_minutes)
    on_campaign = ctx.settings.session_new_on_campaign
    keys = sessions.session_keys(events, new_on_campaign=on_campaign)
    # the raw events bound the touches (the retained ones aside): an estimate, counted free
    parts = engine.window_parts(
        ctx.con, ctx.con.table("events").count(),
        sessions.SESSION_CAMPAIGN_ROW_BYTES if on_campaign else sessions.SESSION_KEY_ROW_BYTES)
    stored: tuple[str, ...] = ()
    if parts > 1:  # stored first, narrow: each part's window then reads it, not the chain
        stored = (f"{SCRATCH_PREFIX}session_keys",)
        keys = engine.materialise(ctx.con, stored[0], keys)
    numbers = engine.write_union(ctx.con, f"{SCRATCH_PREFIX}session_numbers", [
        sessions.session_numbers(keys, gap=gap, new_on_campaign=on_campaign, part=(k, parts))
        for k in range(parts)], scratch=True)
    # stored as `touches` (Step.persist_as) without session_id, a long string on every row:
    # touches meet their session's row on (device_id, session_index) and take its id there
    return StepResult({"events": sessions.sessionise(events, numbers=numbers)}, stored=stored)


def classify_channels(t: Tables, ctx: Context) -> StepResult:
    visits = engine.materialise(ctx.con, f"{SCRATCH_PREFIX}visits",
                                  sessions.session_table(t["events"]))
    categories = reference.source_categories()
    aliases = reference.aliases("source", ctx.settings.source_aliases_file)
    hosts = _distinct(visits.referrer_host, visits.landing_host)
    host_lookup = ctx.lookup("hosts", channels.host_table(
        hosts, categories=categories, source_aliases=aliases))
    entered = engine.materialise(ctx.con, f"{SCRATCH_PREFIX}entered", channels.entrance(
        visits, host_lookup, own_domains=ctx.settings.own_domains,
        preset=ctx.settings.channel_rules))
    cats = ctx.lookup("categories", channels.category_table(
        _distinct(entered.source), categories))
    tagged = entered.left_join(cats, entered.source == cats._cat_source).drop("_cat_source")
    tagged = tagged.mutate(source_category=tagged.source_category.fill_null("||"))
    rules = channels.default_rules(ctx.settings.channel_rules_file,
                                   preset=ctx.settings.channel_rules)
    return StepResult({"sessions": channels.classify_channel(tagged, rules)})


def build_identity_graph(t: Tables, ctx: Context) -> StepResult:
    touches = t["events"]
    s = ctx.settings
    evidence = touches.select(*identity.EVIDENCE_COLUMNS)
    if "duplicate_evidence" in t:
        evidence = evidence.union(t["duplicate_evidence"], distinct=False)
    # materialised: the pairs read the id combinations some thirty times, and the graph
    # rounds below read the links many times (and Ibis compiles each read)
    combos = engine.materialise(ctx.con, f"{SCRATCH_PREFIX}id_combos",
                                identity.id_combos(evidence))
    # stored before the guard, which reads the links three times (Spark would recompute them)
    found = engine.materialise(ctx.con, f"{SCRATCH_PREFIX}links_found",
                               identity.links_from_touches(evidence, combos))
    links = engine.materialise(ctx.con, f"{SCRATCH_PREFIX}links_guarded", identity.guard_links(
        found, unlink=s.identity_unlink, max_degree=s.identity_max_degree))
    seen = touches.group_by("device_id").aggregate(first_seen_at=touches.timestamp.min())
    ends = links.select(identifier="identifier_a", first_seen_at="first_seen_at").union(
        links.select(identifier="identifier_b", first_seen_at="first_seen_at"), distinct=False)
    # not stored: read once, by the numbering of the nodes that resolve_persons stores
    nodes = seen.select(identifier="device_id", first_seen_at="first_seen_at").union(
        ends, distinct=False).group_by("identifier").aggregate(
        first_seen_at=ibis._.first_seen_at.min())
    identities, final_links = identity.resolve_persons(
        ctx.con, nodes, links, max_iterations=s.identity_max_iterations,
        max_component=s.identity_max_component, scratch=SCRATCH_PREFIX)
    # stored: accounts, sessions and persons each read the identities (four joins deep)
    identities = engine.materialise(ctx.con, f"{SCRATCH_PREFIX}identities", identities)
    return StepResult({"identities": identities, "identity_links": final_links})


def assign_accounts(t: Tables, ctx: Context) -> StepResult:
    ident = t["identities"]
    touches = t["events"]
    email_domains = engine.materialise(ctx.con, f"{SCRATCH_PREFIX}person_email_domains",
                                       identity.person_email_domains(ident, touches))
    domains = _distinct(email_domains.email_domain)
    lookup = ctx.lookup("email_domains", identity.domain_table(
        domains, reference.free_mail_domains(), reference.reserved_domains()))
    groups = touches.filter(touches.group_id.notnull()).select("device_id", "group_id").distinct()
    accounts = identity.person_accounts(ident, deals=t.get("deals"), groups=groups,
                                        domains=lookup, email_domains=email_domains,
                                        contact_key=standardise.contact_key(ctx.con, ctx.settings))
    # stored: sessions, persons and accounts each join it (a dozen-way union of evidence)
    accounts = engine.materialise(ctx.con, f"{SCRATCH_PREFIX}person_accounts", accounts)
    return StepResult({"person_accounts": accounts})
