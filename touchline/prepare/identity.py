"""Identity graph: devices, user ids, e-mails, phones, CRM contact ids → ``person_id``; persons →
accounts.

Nodes are typed identifiers (``anon:<id>``, ``user:<id>``, ``email:<address>``,
``phone:<e164>``, ``email_sha256:<hex>`` and ``phone_sha256:<hex>`` for hashed ones,
``contact:<id>`` for a CRM's own contact id, ``msg:<id>`` for id-less offline touches). Each
kind is its own namespace: CRM contact 123 and the site's user 123 are two identifiers, linked
only by evidence (a touch carrying both, a shared e-mail or phone).

A link joins two identifiers seen on one touch (or an ``alias`` call's previous id and new id:
a ``user:`` id when that user id occurs in the data, else an ``anon:`` id); it keeps its
strongest evidence (sha256 > alias > identify > caller_id > crm_match > form_email > event),
first-seen time and count. ``sha256`` links a plain e-mail (phone) to the SHA-256 of it when
that hash occurs in the data: an export that hashes e-mails and a form that sends them in
clear then meet in one person, and no hash node is made for e-mails nobody hashed.

Persons are connected components found on the engine by iterative min-label propagation over
int64 node keys (one Python iteration per graph-diameter step, never per row), with pointer
jumping (``label = min(label, label[label])``) so chains converge in O(log d) rounds.

Over-merge guards, each reported as a ``cut`` link with its reason:

* ``unlinked``: an identifier or a single link (``a|b``) listed in ``settings.identity_unlink``
  (reversible merges: remove a link this way, re-run, and the component splits cleanly;
  nothing else is stored),
* ``max_degree``: an identifier linked to more than ``identity_max_degree`` others (a shared
  kiosk device, a support agent's e-mail typed into customers' forms),
* ``max_component``: components still larger than ``identity_max_component`` fall back to
  their devices (all their links are cut).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence

import ibis
import ibis.expr.types as ir
import pyarrow as pa

from touchline import engine
from touchline.errors import EngineError
from touchline.prepare.clean import IDENTITY_COLUMNS
from touchline.prepare.standardise import sha256_hex

log = logging.getLogger(__name__)

#: the columns of a touch the graph reads
EVIDENCE_COLUMNS = (*IDENTITY_COLUMNS, "type", "recorded_by", "timestamp")
EVIDENCE = ("sha256", "alias", "identify", "caller_id", "crm_match", "form_email", "event")
_ID_PREFIX = r"^([a-z0-9_]+):"
#: plain identifier kinds whose SHA-256 is an identifier kind of its own
HASHED_KINDS = ("email", "phone")


def _ids(t: ir.Table) -> dict[str, ir.StringValue]:
    ids = {"anon": "anon:" + t.anonymous_id, "user": "user:" + t.user_id,
           "email": "email:" + t.email, "phone": "phone:" + t.phone,
           "email_sha256": "email_sha256:" + t.email_sha256,
           "phone_sha256": "phone_sha256:" + t.phone_sha256,
           "contact": "contact:" + t.contact_id}
    if "_previous_is_user" in t.columns:
        # an alias call's previousId is a user id when that user id occurs in the data
        # (Segment allows both kinds), else the anonymous id it replaces
        ids["prev"] = ibis.ifelse(t._previous_is_user, "user:", "anon:") + t.previous_id
    return ids


PAIRS = (("anon", "user"), ("anon", "email"), ("anon", "phone"), ("user", "email"),
         ("user", "phone"), ("email", "phone"), ("anon", "contact"), ("user", "contact"),
         ("email", "contact"), ("phone", "contact"), ("prev", "user"), ("prev", "anon"),
         ("anon", "email_sha256"), ("user", "email_sha256"), ("email", "email_sha256"),
         ("phone", "email_sha256"), ("contact", "email_sha256"), ("phone_sha256", "email_sha256"),
         ("anon", "phone_sha256"), ("user", "phone_sha256"), ("email", "phone_sha256"),
         ("phone", "phone_sha256"), ("contact", "phone_sha256"))


def id_combos(touches: ir.Table) -> ir.Table:
    """The distinct combinations of :data:`IDENTITY_COLUMNS` in ``touches``, with the best
    evidence rank (``_rank``), the first time (``_first``) and the touch count (``_n``)."""
    evidence_rank = ibis.cases(
        (touches.type == "alias", 1), (touches.type == "identify", 2),
        (touches.recorded_by == "calls", 3), (touches.recorded_by == "crm", 4),
        (touches.recorded_by.isin(["forms", "chat"]), 5), else_=6)
    return touches.group_by(
        list(IDENTITY_COLUMNS),
    ).aggregate(_rank=evidence_rank.min(), _first=touches.timestamp.min(), _n=touches.count())


def links_from_touches(touches: ir.Table, combos: ir.Table | None = None) -> ir.Table:
    """Distinct links ``identifier_a < identifier_b`` with evidence, first_seen_at, event_count.

    Touches are first reduced to distinct id combinations (:func:`id_combos`, a hash
    aggregate). Each combination then yields its pairs of :data:`PAIRS` in one pass: an array
    of (least, greatest) pairs, the empty ones filtered out, unnested
    (:func:`_pairs_of`). One projection, not a union of one per pair: Spark analysed and ran
    the two-dozen-branch union (read again by the degree guard) for 20–45 s even on a dozen
    rows. The two alias pairs read only the combinations with a previous id, which alone are
    matched against the user ids.
    """
    combos = id_combos(touches) if combos is None else combos
    aliased = combos.filter(combos.previous_id.notnull())
    previous = aliased.select(_previous="previous_id").distinct()
    users = touches.semi_join(previous, touches.user_id == previous._previous).select(
        _known_user="user_id").distinct()
    aliased = aliased.left_join(users, aliased.previous_id == users._known_user)
    aliased = aliased.mutate(_previous_is_user=aliased._known_user.notnull()).drop("_known_user")
    with_previous = [p for p in PAIRS if "prev" in p]
    parts = [_pairs_of(combos, [p for p in PAIRS if p not in with_previous]),
             _pairs_of(aliased, with_previous), *_hash_links(combos)]
    links = ibis.union(*parts).group_by(["identifier_a", "identifier_b"]).aggregate(
        _rank=ibis._._rank.min(), first_seen_at=ibis._._first.min(),
        event_count=ibis._._n.sum().cast("int64"))
    return links.mutate(
        link_id=links.identifier_a + "|" + links.identifier_b,
        evidence=links._rank.substitute(dict(enumerate(EVIDENCE)), else_="event"),
    ).drop("_rank")


def _pairs_of(source: ir.Table, pairs: Sequence[tuple[str, str]]) -> ir.Table:
    """``identifier_a, identifier_b, _rank, _first, _n``: for each row of ``source``, one row
    per pair ``(left, right)`` of ``pairs`` whose two identifiers are both present and differ,
    the smaller first."""
    ids = _ids(source)
    none = ibis.null("string")
    cells = []
    for left, right in pairs:
        a, b = ids[left], ids[right]
        # least/greatest skip nulls on both engines: only a complete pair is a link
        present = a.notnull() & b.notnull() & (a != b)
        cells.append(ibis.struct({"a": ibis.ifelse(present, ibis.least(a, b), none),
                                  "b": ibis.ifelse(present, ibis.greatest(a, b), none)}))
    found = ibis.array(cells).filter(lambda cell: cell.a.notnull())
    rows = source.select(_pair=found.unnest(), _rank=source._rank, _first=source._first,
                         _n=source._n)
    return rows.select(identifier_a=rows._pair.a, identifier_b=rows._pair.b, _rank=rows._rank,
                       _first=rows._first, _n=rows._n)


def _hash_links(combos: ir.Table) -> list[ir.Table]:
    """``email:<x>`` — ``email_sha256:<sha256(x)>`` (and the same for phones), evidence
    ``sha256``, for each plain value whose hash some touch carries.

    Hashed on the distinct values only, and only hashes that occur are linked: a warehouse
    without hashed identifiers gets no extra node. The plain values are already normalised
    (trimmed, lower-cased e-mail; E.164 phone), which is what exports and ad platforms hash.
    """
    parts = []
    for kind in HASHED_KINDS:
        hashed = f"{kind}_sha256"
        seen = combos.filter(combos[hashed].notnull()).select(_hash=combos[hashed]).distinct()
        plain = combos.filter(combos[kind].notnull()).group_by(_plain=combos[kind]).aggregate(
            _first=combos._first.min(), _n=combos._n.sum())
        plain = plain.mutate(_hash=sha256_hex(plain._plain))
        met = plain.inner_join(seen, "_hash")
        x, y = f"{kind}:" + met._plain, f"{hashed}:" + met._hash
        parts.append(met.select(identifier_a=ibis.least(x, y), identifier_b=ibis.greatest(x, y),
                                _rank=ibis.literal(0).cast(combos._rank.type()),
                                _first=met._first, _n=met._n))
    return parts


def link_id(a: str, b: str) -> str:
    """The id of the link between identifiers ``a`` and ``b``: the smaller first."""
    return "|".join(sorted((a, b)))


def guard_links(links: ir.Table, *, unlink: Sequence[str], max_degree: int) -> ir.Table:
    """Add ``status`` (linked/cut) and ``reason`` to :func:`links_from_touches`' links:
    unlinked identifiers and links, then degree caps.

    ``unlink`` lists identifiers (``user:42``: none of its links count) and single links
    (``email:a@b.com|user:42``, either order: only that one is cut).
    """
    nodes = [u for u in unlink if "|" not in u]
    pairs = [link_id(*u.split("|", 1)) for u in unlink if "|" in u]
    unlisted = ibis.literal(False)
    if nodes:
        unlisted = links.identifier_a.isin(nodes) | links.identifier_b.isin(nodes)
    if pairs:
        unlisted = unlisted | links.link_id.isin(pairs)
    t = links.mutate(_unlinked=unlisted)
    live = t.filter(~t._unlinked)
    ends = live.select(node="identifier_a").union(live.select(node="identifier_b"), distinct=False)
    hubs = ends.group_by("node").aggregate(_deg=ibis._.count()).filter(ibis._._deg > max_degree)
    hub = t.identifier_a.isin(hubs.node) | t.identifier_b.isin(hubs.node)
    return t.mutate(
        status=ibis.ifelse(t._unlinked | hub, "cut", "linked"),
        reason=ibis.cases((t._unlinked, "unlinked"), (hub, "max_degree"),
                          else_=ibis.null("string")),
    ).drop("_unlinked")


def connected_components(con: object, nodes: ir.Table, edges: ir.Table, *,
                         max_iterations: int, scratch: str) -> ir.Table:
    """``node_key -> label`` (least node_key of its component) by min-label propagation.

    ``nodes``: column ``node_key`` (int64); ``edges``: ``src``, ``dst`` (both directions).
    Each round: ``label(v) = min(label(v), label(u) for u ~ v)``, then pointer jumping
    ``label(v) = min(label(v), label(label(v)))``; stops when both ends of every edge carry
    one label.

    Why that test and not "no label changed": labels only fall, and a label is always a node
    of the component, so labels agreeing across every edge are the component's least key, and
    a further round would change none. The test stops one round earlier than comparing two
    rounds' labels would: a round (its labels stored) and a query fewer per graph, on Spark
    two jobs. Round 0 (each node its own label) is not stored: the first round reads ``nodes``.
    """
    def create(name: str, expr: ir.Table) -> ir.Table:
        return engine.materialise(con, name, expr)  # type: ignore[arg-type]

    tag = uuid.uuid4().hex[:8]
    labels = nodes.select("node_key", label="node_key")
    stored: str | None = None
    for round_no in range(1, max_iterations + 1):
        nbr = edges.inner_join(labels, edges.src == labels.node_key).select(
            node_key=edges.dst, label=labels.label)
        spread = labels.union(nbr, distinct=False).group_by("node_key").aggregate(
            label=ibis._.label.min())
        parent = spread.select(_p="node_key", _pl="label")
        jumped = spread.left_join(parent, spread.label == parent._p).select(
            node_key=spread.node_key, label=ibis.least(spread.label, parent._pl.fill_null(
                spread.label)))
        labels = create(f"{scratch}cc_{tag}_{round_no}", jumped)
        if stored is not None:
            engine.drop_materialised(con, stored)  # type: ignore[arg-type]
        stored = labels.op().name  # type: ignore[attr-defined]
        split = _edges_across_labels(edges, labels).execute()
        log.info("identity: propagation round %d, %d edges still join two labels", round_no,
                 split)
        if split == 0:
            return labels
    raise EngineError(
        f"identity graph did not converge in {max_iterations} label-propagation rounds; raise "
        "settings.identity_max_iterations (the graph's diameter is larger)")


def _edges_across_labels(edges: ir.Table, labels: ir.Table) -> ir.IntegerScalar:
    """How many edges (each counted once, ``src < dst``) join two different labels."""
    once = edges.filter(edges.src < edges.dst)
    at_src = labels.select(_s="node_key", _sl="label")
    at_dst = labels.select(_d="node_key", _dl="label")
    ends = once.inner_join(at_src, once.src == at_src._s).inner_join(
        at_dst, once.dst == at_dst._d)
    return ends.filter(ends._sl != ends._dl).count()


def person_id(root: ir.StringValue) -> ir.StringValue:
    """``p_`` + the first 16 hex digits of md5(least identifier): stable, no personal data."""
    return "p_" + root.hexdigest("md5").substr(0, 16)


def resolve_persons(con: object, nodes: ir.Table, links: ir.Table, *, max_iterations: int,
                    max_component: int, scratch: str) -> tuple[ir.Table, ir.Table]:
    """Identities (``identifier, kind, person_id, degree, first_seen_at``) and the final links.

    ``nodes``: ``identifier, first_seen_at``; ``links``: from :func:`guard_links`.
    """
    def create(name: str, expr: ir.Table) -> ir.Table:
        return engine.materialise(con, name, expr)  # type: ignore[arg-type]

    keyed = create(f"{scratch}nodes", nodes.mutate(
        node_key=ibis.row_number().over(order_by=nodes.identifier)))

    def components(live: ir.Table) -> ir.Table:
        ab = live.inner_join(keyed.select(identifier_a="identifier", src="node_key"),
                             "identifier_a").inner_join(
            keyed.select(identifier_b="identifier", dst="node_key"), "identifier_b")
        edges = create(f"{scratch}edges", ab.select("src", "dst").union(
            ab.select(src=ab.dst, dst=ab.src), distinct=False))
        return connected_components(con, keyed.select("node_key"), edges,
                                    max_iterations=max_iterations, scratch=scratch)

    labels = components(links.filter(links.status == "linked"))
    sizes = labels.group_by("label").aggregate(_size=ibis._.count())
    # usually none is too big: then the links stand as they are (no copy of them is stored)
    if (sizes._size.max().execute() or 0) > max_component:
        big = labels.inner_join(sizes.filter(sizes._size > max_component), "label").inner_join(
            keyed, "node_key").select("identifier")
        too_big = links.identifier_a.isin(big.identifier) & (links.status == "linked")
        links = create(f"{scratch}links", links.mutate(
            status=ibis.ifelse(too_big, "cut", links.status),
            reason=ibis.ifelse(too_big, "max_component", links.reason)))
        labels = components(links.filter(links.status == "linked"))
    roots = keyed.select(label="node_key", root="identifier")
    live = links.filter(links.status == "linked")
    ends = live.select(identifier="identifier_a").union(
        live.select(identifier="identifier_b"), distinct=False)
    degree = ends.group_by("identifier").aggregate(degree=ibis._.count().cast("int64"))
    ident = keyed.inner_join(labels, "node_key").inner_join(roots, "label")
    ident = ident.left_join(degree, ident.identifier == degree.identifier).select(
        identifier=ident.identifier,
        kind=ident.identifier.re_extract(_ID_PREFIX, 1),
        person_id=person_id(ident.root),
        degree=degree.degree.fill_null(0),
        first_seen_at=ident.first_seen_at,
    )
    return ident, links


def domain_table(domains: Sequence[str], free_mail: frozenset[str],
                 reserved: frozenset[str] = frozenset()) -> pa.Table:
    """``email_domain -> registrable, is_free`` for distinct e-mail domains (tldextract).

    ``is_free``: the domain names no company, so it makes no account. Free-mail and ISP
    domains (``free_mail``, matched on the domain or its registrable part), and domains
    ``reserved`` for documentation and tests (:func:`~touchline.prepare.reference.
    reserved_domains`: ``example.com``, ``*.test`` …): forms filled in with
    ``ann@example.com`` are test data or a visitor hiding, never a customer's company.
    """
    from touchline.prepare.reference import is_reserved_domain, registrable_domain

    reg = [registrable_domain(d)[0] for d in domains]
    free = [d in free_mail or r in free_mail or is_reserved_domain(d, reserved)
            for d, r in zip(domains, reg, strict=True)]
    return pa.table({"email_domain": pa.array(list(domains), pa.string()),
                     "registrable": pa.array(reg, pa.string()),
                     "is_free": pa.array(free, pa.bool_())})


def person_email_domains(identities: ir.Table, touches: ir.Table) -> ir.Table:
    """``person_id, email_domain``: the domains of each person's e-mails, from the identity
    graph's plain e-mails and from the touches' ``email_domain`` (the only source when
    ``pii_at_rest = "hashed"`` keeps the addresses as keyed hashes)."""
    emails = identities.filter(identities.kind == "email")
    graph = emails.select("person_id", email_domain=emails.identifier.re_extract(r"@(.+)$", 1))
    seen = touches.filter(touches.email_domain.notnull()).select(
        "device_id", "email_domain").distinct()
    devices = identities.select(_device="identifier", person_id="person_id")
    on_touches = seen.inner_join(devices, seen.device_id == devices._device).select(
        "person_id", "email_domain")
    both = graph.union(on_touches, distinct=True)
    return both.filter(both.email_domain.notnull() & (both.email_domain != ""))


def person_accounts(identities: ir.Table, *, deals: ir.Table | None, groups: ir.Table,
                    domains: ir.Table, email_domains: ir.Table | None = None,
                    contact_key: Callable[[ir.StringValue], ir.StringValue] | None = None
                    ) -> ir.Table:
    """``person_id -> account_id, account_source, account_name, domain``: one company, one account.

    Evidence, by precedence: a CRM deal listing one of the person's e-mails or CRM contact ids
    (``crm:<id>``), a Segment group call (``group:<id>``), the registrable domain of a business
    e-mail (``domain:<domain>``; free-mail, ISP and reserved example/test domains excluded).
    Ties: the least id. Keys that name a known company resolve to it: a group id that is a CRM
    account id becomes that ``crm:`` account; a domain that is a CRM account's domain becomes
    that account, else one written from by a group's people becomes that group's account.
    ``account_source`` says which kind of account it is; a CRM account keeps the CRM's name
    and domain. ``email_domains``: :func:`person_email_domains` (default: the graph's plain
    e-mails only). ``contact_key``: how the identity graph keeps e-mails
    (:func:`~touchline.prepare.standardise.contact_key`; none: plain).
    """
    if email_domains is None:
        emails = identities.filter(identities.kind == "email")
        with_domain = emails.select(
            "person_id", email_domain=emails.identifier.re_extract(r"@(.+)$", 1))
    else:
        with_domain = email_domains
    business = with_domain.inner_join(domains.filter(~domains.is_free), "email_domain")
    devices = identities.select("identifier", "person_id")
    grouped = groups.inner_join(devices, groups.device_id == devices.identifier)
    group_key = "group:" + grouped.group_id
    crm_of_domain = ibis.null("string")
    candidates = []
    known = deals.filter(deals.account_id.notnull()) if deals is not None else None
    if known is not None:
        for column, kind, normalise in (("contact_emails", "email", True),
                                        ("contact_ids", "contact", False)):
            listed = known.filter(known[column].notnull()).select(
                "account_id", "account_name", "account_domain",
                _value=known[column].split(";").unnest())
            value = listed._value.strip()
            if normalise:
                value = value.lower() if contact_key is None else contact_key(value.lower())
            listed = listed.mutate(identifier=kind + ":" + value)
            listed = listed.distinct()
            mine = identities.filter(identities.kind == kind).select("identifier", "person_id")
            crm = mine.inner_join(listed, "identifier")
            candidates.append(crm.select(
                "person_id", account_id="crm:" + crm.account_id, account_name=crm.account_name,
                domain=crm.account_domain.lower(), _rank=0))
        crm_ids = known.select(_crm_id=known.account_id).distinct()
        grouped = grouped.left_join(crm_ids, grouped.group_id == crm_ids._crm_id)
        group_key = ibis.ifelse(grouped._crm_id.notnull(), "crm:" + grouped.group_id, group_key)
        crm_domains = known.filter(known.account_domain.notnull()).group_by(
            _dom=known.account_domain.lower()).aggregate(_crm_of_domain=known.account_id.min())
        business = business.left_join(crm_domains, business.registrable == crm_domains._dom)
        crm_of_domain = "crm:" + business._crm_of_domain
    group_rows = grouped.select("person_id", _key=group_key)
    candidates.append(group_rows.select(
        "person_id", account_id="_key", account_name=ibis.null("string"),
        domain=ibis.null("string"), _rank=1))
    group_domains = group_rows.inner_join(
        business.select("person_id", _gdom="registrable"), "person_id").group_by(
        "_gdom").aggregate(_group_of_domain=ibis._._key.min())
    business = business.left_join(group_domains, business.registrable == group_domains._gdom)
    candidates.append(business.select(
        "person_id",
        account_id=ibis.coalesce(crm_of_domain, business._group_of_domain,
                                 "domain:" + business.registrable),
        account_name=business.registrable, domain=business.registrable, _rank=2))
    every = ibis.union(*candidates, distinct=False)
    best = every.mutate(_order=every._rank.cast("string") + every.account_id)
    chosen = best.group_by("person_id").aggregate(_pick=best._order.min())
    won = best.inner_join(chosen, [best.person_id == chosen.person_id,
                                   best._order == chosen._pick])
    out = won.group_by(["person_id", "account_id"]).aggregate(
        account_name=won.account_name.min(), domain=won.domain.min())
    source = ibis.cases((out.account_id.startswith("crm:"), "crm"),
                        (out.account_id.startswith("group:"), "group"), else_="email_domain")
    if known is None:
        return out.select("person_id", "account_id", account_source=source,
                          account_name=out.account_name, domain=out.domain)
    info = known.group_by(_info_id="crm:" + known.account_id).aggregate(
        _name=known.account_name.min(), _domain=known.account_domain.lower().min())
    out = out.left_join(info, out.account_id == info._info_id)
    return out.select("person_id", "account_id", account_source=source,
                      account_name=ibis.coalesce(out._name, out.account_name),
                      domain=ibis.coalesce(out._domain, out.domain))
