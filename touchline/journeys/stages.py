"""Stage models as data: when each person and account entered each stage.

A stage model (``settings.all_stage_models()``: the presets ``lifecycle``, ``funnel``,
``hourglass``, ``b2b`` and the user's own) is an ordered list of stages, each with one entry
condition (:class:`~touchline.config.StageSpec`). A unit enters a stage at the first moment its
condition holds; stages may be skipped (a direct buyer never was a lead) and entered out of
order (a deal whose SQL date precedes its MQL date), and both stay visible: ``stages`` keeps
each entry's time and the stage's place in the model, and ``left_at`` is the unit's next entry
into any stage of the model. The stage of a touch is the stage most recently entered at or
before it (:func:`stage_at`).
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Mapping, Sequence

import ibis
import ibis.expr.types as ir

from touchline.config import Settings, StageSpec
from touchline.journeys.conversions import deal_events, deal_people, touch_condition
from touchline.prepare.standardise import ContactKey, contact_key

UNITS = ("person", "account")


def _per_unit(table: ir.Table, at: ir.TimestampValue, unit: str) -> ir.Table:
    """``(unit, unit_id, entered_at)`` from rows with ``person_id`` / ``account_id``."""
    unit_id = table.person_id if unit == "person" else table.account_id
    rows = table.filter(unit_id.notnull()).select(unit_id=unit_id, _at=at)
    return rows.group_by("unit_id").aggregate(entered_at=rows._at.min()).mutate(
        unit=ibis.literal(unit))


def stage_entries(stage: StageSpec, *, unit: str, sessions: ir.Table, touchpoints: ir.Table,
                  conversions: ir.Table, deals: ir.Table, identities: ir.Table,
                  accounts: ir.Table, touch_events: Mapping[str, Sequence[str]],
                  statuses: Mapping[str, Sequence[str]],
                  contact_key: ContactKey | None = None) -> ir.Table:
    """When each unit of kind ``unit`` entered ``stage``: ``unit``, ``unit_id``, ``entered_at``.

    ``conversions`` are the numbered conversions of every type (``conversion``, ``unit``,
    ``unit_id``, ``sequence``, ``converted_at``).
    """
    if stage.first_touch or stage.visits is not None:
        nth = stage.visits or 1
        unit_id = sessions.person_id if unit == "person" else sessions.account_id
        s = sessions.filter(unit_id.notnull()).select(unit_id=unit_id, _at=sessions.started_at)
        if nth == 1:  # the first session: an aggregate, no window over the unit's sessions
            return s.group_by("unit_id").aggregate(entered_at=s._at.min()).mutate(
                unit=ibis.literal(unit))
        s = s.mutate(_n=ibis.row_number().over(group_by="unit_id", order_by=["_at"]) + 1)
        s = s.filter(s._n == nth)
        return s.select("unit_id", entered_at=s._at, unit=ibis.literal(unit))
    if stage.conversion is not None:
        c = conversions.filter(conversions.conversion.isin(stage.conversion)
                               & (conversions.unit == unit) & (conversions.sequence == stage.nth))
        return c.group_by("unit_id").aggregate(entered_at=c.converted_at.min()).mutate(
            unit=ibis.literal(unit))
    if stage.deal is not None:
        rows = deal_events(deals, stage.deal, statuses=statuses, rates={})
        if unit == "account":
            known = accounts.select("account_id")
            named = rows.mutate(account_id="crm:" + rows.account_id).inner_join(known,
                                                                                 "account_id")
            return _per_unit(named.mutate(person_id=ibis.null("string")), named.at, "account")
        people = deal_people(rows, identities, contact_key=contact_key)
        named = rows.inner_join(people, "deal_id")
        return _per_unit(named.mutate(account_id=ibis.null("string")), named.at, "person")
    hits = touchpoints.filter(touch_condition(touchpoints, stage, touch_events))
    return _per_unit(hits, hits.occurred_at, unit)


def _is_touch_condition(stage: StageSpec) -> bool:
    return bool(stage.events or stage.touches or stage.page)


def touch_stages(settings: Settings) -> list[StageSpec]:
    """The stages of every stage model entered by a touch condition (events, touches, page)."""
    return [stage for stages in settings.all_stage_models().values() for stage in stages
            if _is_touch_condition(stage)]


def stage_table(con: object, settings: Settings, conversions: ir.Table,
                touchpoints: ir.Table | None = None) -> ir.Table:
    """Every stage entry of every stage model for persons and accounts (``stages`` rows).

    Models share conditions (every preset starts with the first touch): each distinct entry
    condition is computed once, and all touch conditions in one pass over ``touchpoints``,
    then mapped to the stages that use them. ``touchpoints`` may be any subset of the
    warehouse's holding every touch that meets a condition of :func:`touch_stages` (the run
    passes the candidates it already selected for conversions).
    """
    tables = {n: con.table(n)  # type: ignore[attr-defined]
              for n in ("sessions", "touchpoints", "deals", "identities", "accounts")}
    if touchpoints is not None:
        tables["touchpoints"] = touchpoints
    conditions: dict[str, int] = {}
    specs: dict[int, StageSpec] = {}
    uses: list[tuple[int, str, str, int]] = []
    for model, stages in settings.all_stage_models().items():
        for order, stage in enumerate(stages, start=1):
            key = stage.model_dump_json(exclude={"name"})
            cid = conditions.setdefault(key, len(conditions))
            specs[cid] = stage
            uses.append((cid, model, stage.name, order))
    parts = []
    tp = tables["touchpoints"]
    touch_ids = [cid for cid, stage in specs.items() if _is_touch_condition(stage)]
    for unit in UNITS:
        for cid, stage in specs.items():
            if cid in touch_ids:
                continue
            entries = stage_entries(stage, unit=unit, conversions=conversions,
                                    touch_events=settings.touch_events,
                                    statuses=settings.deal_statuses,
                                    contact_key=contact_key(con, settings),  # type: ignore[arg-type]
                                    **tables)
            parts.append(entries.select("unit", "unit_id", cond=ibis.literal(cid),
                                        entered_at=entries.entered_at.cast("timestamp")))
        if touch_ids:
            flags = {cid: touch_condition(tp, specs[cid], settings.touch_events)
                     for cid in touch_ids}
            unit_id = tp.person_id if unit == "person" else tp.account_id
            hits = tp.filter(functools.reduce(operator.or_, flags.values()) & unit_id.notnull())
            unit_column = hits.person_id if unit == "person" else hits.account_id
            firsts = hits.group_by(_u=unit_column).aggregate(
                **{f"_c{cid}": ibis.ifelse(touch_condition(hits, specs[cid],
                                                           settings.touch_events),
                                           hits.occurred_at, ibis.null("timestamp")).min()
                   for cid in touch_ids})
            for cid in touch_ids:
                column = firsts[f"_c{cid}"]
                parts.append(firsts.filter(column.notnull()).select(
                    unit=ibis.literal(unit), unit_id=firsts._u, cond=ibis.literal(cid),
                    entered_at=column.cast("timestamp")))
    every = ibis.union(*parts, distinct=False)
    mapping = ibis.memtable({"cond": [u[0] for u in uses], "stage_model": [u[1] for u in uses],
                             "stage": [u[2] for u in uses], "stage_order": [u[3] for u in uses]})
    joined = every.inner_join(mapping, "cond")
    w = ibis.window(group_by=["stage_model", "unit", "unit_id"],
                    order_by=["entered_at", "stage_order"])
    return joined.select("unit", "unit_id", "stage_model", "stage", "stage_order",
                         "entered_at").mutate(left_at=ibis._.entered_at.lead().over(w))


def stage_at(touches: ir.Table, stages: ir.Table, stage_model: str) -> ir.Table:
    """``touches`` (with ``unit``, ``unit_id``, ``touch_at``) plus ``stage``: the stage of
    ``stage_model`` its unit most recently entered at or before the touch (null: none yet;
    entries at the same moment: the later stage of the model).

    One equi-join with a range condition, no window over the touches: a unit's entries by
    ``(entered_at, stage_order)`` cut time into the intervals ``[entered_at, left_at)`` (the
    last one open-ended; two entries at one moment leave the first an empty interval), so at
    most one interval holds each touch.
    """
    mine = stages.filter(stages.stage_model == stage_model)
    # left_at as stage_table stores it (read when there, else computed: any entries will do)
    if "left_at" in mine.columns:
        left = mine.left_at
    else:
        w = ibis.window(group_by=["unit", "unit_id"], order_by=["entered_at", "stage_order"])
        left = mine.entered_at.lead().over(w)
    s = mine.select(
        _unit="unit", _unit_id="unit_id", _stage="stage", _entered="entered_at",
        _left=left.fill_null(ibis.literal(_END_OF_TIME, type="timestamp")))
    t = touches
    j = t.left_join(s, [t.unit == s._unit, t.unit_id == s._unit_id, s._entered <= t.touch_at,
                        t.touch_at < s._left])
    return j.select(*touches.columns, stage=j._stage)


_END_OF_TIME = "9999-12-31 00:00:00"
