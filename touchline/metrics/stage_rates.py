r"""Decision KPIs over the ``stages`` table: how many units go on from each stage of the
``b2b`` stage model (first touch → MQL → SQL → opportunity → closed won) and how fast.

For each stage but the last, over the units that entered it: ``went_on`` counts those that
also entered the next stage of the model, ``rate`` is their share, and the days from entering
the stage to entering the next (median and mean; entries out of order, the next stage dated
before this one, count as going on but not in the days) are the stage's velocity. A unit that
skipped the stage (an SQL without an MQL date) is not in the stage's denominator. Persons and
accounts are counted apart (``unit``): deals enter accounts when the CRM names the company,
else the contacts' persons.

>>> from touchline.metrics.kpis import KPIS
>>> KPIS["stage_conversion"].values
('unit', 'stage', 'next_stage', 'entered', 'went_on', 'rate', 'median_days', 'mean_days')
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import ibis
import ibis.expr.types as ir

from touchline.metrics.kpis import _ZERO, DOC_SECTIONS, Query, _keyed, _ratio, register

if TYPE_CHECKING:
    from ibis.backends import BaseBackend

#: the stage model whose stages the KPI follows
STAGE_MODEL = "b2b"
_DAY_SECONDS = 86_400


@register("stage_conversion", stage="decision", unit="ratio and days",
          formula="rate = units entering the next stage / units entering the stage; days = "
          "median and mean of next entered_at - entered_at (b2b stage model)",
          tables=["stages"], dimensions=("period",),
          values=("unit", "stage", "next_stage", "entered", "went_on", "rate", "median_days",
                  "mean_days"), zero_denominator=_ZERO, table=True)
def stage_conversion(con: BaseBackend, q: Query) -> ir.Table:
    """MQL → SQL → opportunity → won rates and velocity (days per stage), by the period in
    which units entered the stage (the module docstring has the rules)."""
    names = [s.name for s in q.config.all_stage_models()[STAGE_MODEL]]
    st = con.table("stages")
    st = st.filter(st.stage_model == STAGE_MODEL)
    st = st.filter(st.stage_order < len(names))  # the last stage has no next one
    following = con.table("stages")
    following = following.filter(following.stage_model == STAGE_MODEL).select(
        _unit="unit", _unit_id="unit_id", _order="stage_order", _next_at="entered_at")
    j = st.left_join(following, [st.unit == following._unit, st.unit_id == following._unit_id,
                                 following._order == st.stage_order + 1])
    days = (j._next_at.epoch_seconds() - j.entered_at.epoch_seconds()) / _DAY_SECONDS
    j = j.mutate(_days=ibis.ifelse(days >= 0, days, ibis.null("float64")))
    t = _keyed(j, q, at=j.entered_at, dims={})
    # stage_order i (1-based) is followed by names[i]
    t = t.mutate(_next=ibis.cases(*((t.stage_order == i, names[i])
                                    for i in range(1, len(names)))))
    keys = [*q.keys, "unit", "stage_order", "stage", "_next"]
    t = t.group_by(keys).aggregate(
        entered=t.count().cast("int64"),  # one row per unit and stage
        went_on=t._next_at.notnull().cast("int64").sum(),
        median_days=t._days.quantile(0.5), mean_days=t._days.mean())
    t = t.mutate(rate=_ratio(t.went_on, t.entered))
    return t.order_by(keys).select(*q.keys, "unit", "stage", next_stage="_next",
                                   **{v: v for v in ("entered", "went_on", "rate",
                                                     "median_days", "mean_days")})


DOC_SECTIONS["stage_rates"] = """
## Stage rates and velocity: `stage_conversion`

`touchline/metrics/stage_rates.py`, over the `stages` table of the `b2b` stage model (first
touch → MQL → SQL → opportunity → closed won, entered from the deals' dates). For each stage
but the last, over the units that entered it (by the period of that entry): `went_on` = those
that also entered the next stage, `rate` = their share, `median_days` / `mean_days` = days from
this stage's entry to the next one's. A unit that skipped the stage is not in its denominator;
a next stage dated *before* this one counts as going on but not in the days. Persons and
accounts are counted apart (`unit`). `leads` counts lead conversions whole by their journey's
first touch (source, channel…), beside the model-credited `conversions --conversion lead`.
"""
