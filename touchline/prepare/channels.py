"""``classify_channel()``: GA4's default channel group as ordered, named rules shipped as data.

Two stages, both on session landing rows only (one row per session, never per touch):

1. **Entrance source/medium** (GA4's precedence): UTMs if present; else an auto-tagging click id
   (gclid/gbraid/wbraid → google/cpc, msclkid → bing/cpc, dclid → dv360/cpm, li_fat_id →
   linkedin/paid_social, ttclid → tiktok/paid_social); else an external referrer (search engine →
   <engine>/organic, webmail → <host>/email, anything else → <domain>/referral); a bare fbclid →
   facebook/referral (Meta appends fbclid to organic *and* paid links, so without UTMs it proves
   nothing paid: GA4 too reports such visits as facebook referrals → Organic Social); else
   (direct)/(none). A referrer on the site's own registrable domain (or ``own_domains``) is
   internal and ignored. With ``channel_rules = "ga4"`` only the click ids GA4 reads (Google
   Ads, DV360) count, and a bare fbclid proves nothing, as in GA4.
2. **Rules** from ``data/channel_rules.csv`` (GA4's, in GA4's order: Direct before
   Cross-network) plus, unless ``settings.channel_rules = "ga4"``, touchline's additions in
   ``data/channel_rules_touchline.csv`` (custom rules from ``settings.channel_rules_file``
   first): the first rule whose any clause has all conditions true names the channel group and
   is recorded in ``channel_rule``; no match → ``Unassigned``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import ibis
import ibis.expr.types as ir
import pyarrow as pa

from touchline.errors import ConfigError
from touchline.prepare.reference import DATA, aliases, read_csv, registrable_domain

log = logging.getLogger(__name__)

RULE_COLUMNS = ("priority", "channel_group", "rule", "clause", "field", "op", "value")
RULE_FIELDS = ("source", "medium", "campaign", "source_category", "click_id_type", "recorded_by")
RULE_OPS = ("eq", "in", "regex", "contains", "has", "present")
UNASSIGNED = "Unassigned"
#: the shipped rule sets (``settings.channel_rules``): touchline's, or GA4's exactly
CHANNEL_PRESETS = ("touchline", "ga4")
#: click id platform -> (source, medium) when a landing has no UTMs (auto-tagging)
CLICK_SOURCES = {
    "google": ("google", "cpc"), "microsoft": ("bing", "cpc"), "display": ("dv360", "cpm"),
    "linkedin": ("linkedin", "paid_social"), "tiktok": ("tiktok", "paid_social"),
}
#: the click ids GA4 itself reads (Google Ads and DV360 auto-tagging); it knows no other
#: platform's id, so with ``channel_rules = "ga4"`` those visits fall back to the referrer
GA4_CLICK_SOURCES = {k: CLICK_SOURCES[k] for k in ("google", "display")}


@dataclass(frozen=True)
class Condition:
    field: str
    op: str
    value: str


@dataclass(frozen=True)
class Rule:
    """One named rule: fires when any clause has all its conditions true."""

    priority: int
    channel_group: str
    name: str
    clauses: tuple[tuple[Condition, ...], ...]


def load_rules(path: Path) -> list[Rule]:
    """Rules of one CSV in evaluation order (priority, then order in the file)."""
    rows = read_csv(path, RULE_COLUMNS)
    rules: dict[str, dict[str, object]] = {}
    for line, row in enumerate(rows, start=2):
        if row["field"] not in RULE_FIELDS or row["op"] not in RULE_OPS:
            raise ConfigError(
                f"{path}, line {line}: field {row['field']!r} / op {row['op']!r} not understood; "
                f"fields: {', '.join(RULE_FIELDS)}; ops: {', '.join(RULE_OPS)}")
        try:
            priority = int(row["priority"])
        except ValueError:
            raise ConfigError(f"{path}, line {line}: priority {row['priority']!r} is not an "
                              "integer") from None
        entry = rules.setdefault(row["rule"], {"priority": priority,
                                               "group": row["channel_group"], "clauses": {}})
        clauses: dict[str, list[Condition]] = entry["clauses"]  # type: ignore[assignment]
        # rule fields hold lower-case text, so literal values are compared lower-cased; a regex
        # is kept as written (lower-casing turns \D into \d, \S into \s: the opposite class)
        value = row["value"] if row["op"] == "regex" else row["value"].lower()
        clauses.setdefault(row["clause"], []).append(Condition(row["field"], row["op"], value))
    out = [Rule(int(v["priority"]), str(v["group"]), name,  # type: ignore[call-overload]
                tuple(tuple(c) for c in v["clauses"].values()))  # type: ignore[attr-defined]
           for name, v in rules.items()]
    return sorted(out, key=lambda r: r.priority)  # stable: file order within a priority


def default_rules(custom: Path | None = None, *, preset: str = "touchline") -> list[Rule]:
    """Custom rules (if any) first, then the ``preset``'s shipped rules.

    ``ga4`` is GA4's default channel group exactly as Google publishes it
    (``data/channel_rules.csv``), so that channel totals reconcile with GA4's reports.
    ``touchline`` (the default) merges in touchline's additions by priority
    (``data/channel_rules_touchline.csv``: Phone and Offline before Direct, since calls and
    offline records arrive as (direct)/(none), though a call with a campaign (its number
    lease's, or its properties') is that campaign's channel; a Google or Microsoft click id is
    Paid Search whatever the UTMs say; AI Assistant before Organic Search).
    """
    if preset not in CHANNEL_PRESETS:
        raise ConfigError(f"channel_rules {preset!r} is not one of {', '.join(CHANNEL_PRESETS)}")
    shipped = load_rules(DATA / "channel_rules.csv")
    if preset == "touchline":  # stable: GA4's rule first within one priority
        shipped = sorted(shipped + load_rules(DATA / "channel_rules_touchline.csv"),
                         key=lambda r: r.priority)
    return (load_rules(custom) if custom else []) + shipped


def medium_aliases(preset: str) -> dict[str, str]:
    """The medium aliases the ``preset`` applies before the rules: none for ``ga4`` (GA4 does
    not read ``newsletter`` as email, nor ``social_media`` as social), else the shipped list."""
    return {} if preset == "ga4" else aliases("medium")


def _condition(table: ir.Table, cond: Condition) -> ir.BooleanValue:
    column = table[cond.field]
    if cond.op == "eq":
        expr = column == cond.value
    elif cond.op == "in":
        expr = column.isin(cond.value.split("|"))
    elif cond.op == "regex":
        expr = column.re_search(cond.value)
    elif cond.op == "contains":
        expr = column.contains(cond.value)
    elif cond.op == "has":
        expr = column.contains(f"|{cond.value}|")
    else:
        expr = column.notnull()
    return expr.fill_null(False)


def classify_channel(sessions: ir.Table, rules: Sequence[Rule]) -> ir.Table:
    """Add ``channel`` and ``channel_rule`` by the first matching rule (else Unassigned).

    Needs the columns in :data:`RULE_FIELDS`; text values are lower-case.
    """
    cases = [(ibis.or_(*(ibis.and_(*(_condition(sessions, c) for c in clause))
                         for clause in rule.clauses)), rule) for rule in rules]
    if not cases:
        return sessions.mutate(channel=ibis.literal(UNASSIGNED),
                               channel_rule=ibis.literal("unassigned"))
    return sessions.mutate(
        channel=ibis.cases(*((cond, rule.channel_group) for cond, rule in cases),
                           else_=UNASSIGNED),
        channel_rule=ibis.cases(*((cond, rule.name) for cond, rule in cases),
                                else_="unassigned"),
    )


def host_table(hosts: Iterable[str], *, categories: Mapping[str, set[str]],
               source_aliases: Mapping[str, str]) -> pa.Table:
    """Per distinct host: registrable domain and the source/medium a referral from it implies.

    Runs tldextract (bundled suffix list) in Python on distinct hosts only.
    """
    rows: dict[str, list[str | None]] = {k: [] for k in
                                         ("host", "registrable", "ref_source", "ref_medium")}
    for host in sorted(set(hosts)):
        registrable, label = registrable_domain(host)
        bare = host.removeprefix("www.")
        if "email" in categories.get(host, set()):
            source, medium = source_aliases.get(host, host), "email"
        elif "search" in categories.get(label, set()) | categories.get(registrable, set()):
            source, medium = source_aliases.get(registrable, label), "organic"
        else:
            source = source_aliases.get(bare) or source_aliases.get(registrable) or registrable
            medium = "referral"
        for key, value in (("host", host), ("registrable", registrable),
                           ("ref_source", source), ("ref_medium", medium)):
            rows[key].append(value)
    return pa.table({k: pa.array(v, pa.string()) for k, v in rows.items()})


def category_table(sources: Iterable[str], categories: Mapping[str, set[str]]) -> pa.Table:
    """``source -> '|cat1|cat2|'`` for distinct sources (so rules can test ``has``)."""
    names = sorted(set(sources))
    labels = ["|" + "|".join(sorted(categories.get(s, set()))) + "|" for s in names]
    return pa.table({"_cat_source": pa.array(names, pa.string()),
                     "source_category": pa.array(labels, pa.string())})


def entrance(sessions: ir.Table, hosts: ir.Table, *, own_domains: Sequence[str],
             preset: str = "touchline") -> ir.Table:
    """Add entrance ``source``, ``medium`` and ``campaign`` (see the module docstring).

    With ``preset="ga4"`` only the click ids GA4 reads (:data:`GA4_CLICK_SOURCES`) name a
    source, and a bare fbclid proves nothing: GA4 sees only the referrer, if any.
    """
    click_sources = GA4_CLICK_SOURCES if preset == "ga4" else CLICK_SOURCES
    ref = hosts.select(_rh="host", _ref_reg="registrable", _ref_source="ref_source",
                       _ref_medium="ref_medium")
    land = hosts.select(_lh="host", _land_reg="registrable")
    t = sessions.left_join(ref, sessions.referrer_host == ref._rh).drop("_rh")
    t = t.left_join(land, t.landing_host == land._lh).drop("_lh")
    external = t._ref_reg.notnull() & (t._land_reg.isnull() | (t._ref_reg != t._land_reg))
    if own_domains:
        external = external & ~t._ref_reg.isin(list(own_domains))
    external = external.fill_null(False)
    has_utm = t.utm_source.notnull() | t.utm_medium.notnull() | t.utm_campaign.notnull()
    by_click = t.click_id_type.isin(list(click_sources))
    click_source = t.click_id_type.substitute({k: v[0] for k, v in click_sources.items()})
    click_medium = t.click_id_type.substitute({k: v[1] for k, v in click_sources.items()})
    meta = (t.click_id_type == "meta") if preset != "ga4" else ibis.literal(False)
    source = ibis.cases(
        (has_utm, t.utm_source.fill_null("(not set)")), (by_click, click_source),
        (external, t._ref_source), (meta, "facebook"), else_="(direct)")
    medium = ibis.cases(
        (has_utm, t.utm_medium.fill_null("(not set)")), (by_click, click_medium),
        (external, t._ref_medium), (meta, "referral"), else_="(none)")
    campaign = ibis.ifelse(has_utm, t.utm_campaign.fill_null("(not set)"), ibis.null("string"))
    return t.mutate(source=source, medium=medium, campaign=campaign).drop(
        "_ref_reg", "_ref_source", "_ref_medium", "_land_reg")


def channel_key(name: str) -> str:
    """A channel name as spend and credits are matched on: trimmed, lower case, spaces and
    hyphens as ``_`` (``Paid Search`` and ``paid-search`` are ``paid_search``)."""
    return name.strip().lower().replace(" ", "_").replace("-", "_")


def _channel_key_expr(value: ir.StringValue) -> ir.StringValue:
    return value.strip().lower().replace(" ", "_").replace("-", "_")


def known_channels(rules: Sequence[Rule]) -> dict[str, str]:
    """``channel key -> channel group`` for a spend export's ``channel``: every group the
    ``rules`` name (and ``Unassigned``) under its own name, then ``data/channel_aliases.csv``
    (``affiliate`` → ``Affiliates``, ``video`` → ``Paid Video``); a group's own name wins."""
    names = {channel_key(r["alias"]): r["channel"]
             for r in read_csv(DATA / "channel_aliases.csv", ("alias", "channel"))
             if r["alias"]}
    for group in (*(r.channel_group for r in rules), UNASSIGNED):
        names[channel_key(group)] = group
    return names


def spend_channels(spend: ir.Table, names: Mapping[str, str]) -> ir.Table:
    """The ``spend`` rows with ``channel`` named as the sessions name it (:func:`known_channels`
    ``names``), the export's own name in ``imported_channel`` and ``channel_matched`` (null
    without a channel). A name matching none is kept as written (``channel_matched`` false).

    Idempotent: the name is read from ``imported_channel`` once set, so a second run (after
    the rules or aliases changed) standardises the export's name again, not its last result.
    """
    imported = spend.imported_channel.coalesce(spend.channel)
    key = _channel_key_expr(imported)
    matched = key.isin(list(names)) if names else ibis.literal(False)
    return spend.mutate(
        imported_channel=imported,
        channel=ibis.ifelse(matched, key.substitute(dict(names)), imported),
        channel_matched=ibis.ifelse(imported.isnull(), ibis.null("boolean"), matched))
