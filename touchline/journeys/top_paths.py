"""Top paths and Sankey links of the stored journeys.

:func:`path_counts` gives each distinct path (channels, or any level, or the stage at each
touch) with its journeys, conversions, conversion rate and value; :func:`top_paths` keeps the
``top`` most frequent and groups the rest as ``other``, so the rows always add up to every
journey. :func:`sankey_links` gives the links of a Sankey diagram: step ``k``'s label → step
``k + 1``'s, and the last step → ``(conversion)`` or ``(drop-off)``; journeys longer than
``max_steps`` are cut to their last ``max_steps`` touches (the ones nearest the decision), so
every journey flows from its first node to its outcome exactly once.
"""

from __future__ import annotations

import ibis
import ibis.expr.types as ir
import pandas as pd

OTHER = "other"
SEP = " > "
CONVERSION_NODE, DROP_OFF_NODE = "(conversion)", "(drop-off)"


def path_counts(journey_touches: ir.Table, *, level: str = "channel",
                collapse: bool = False) -> ir.Table:
    """``path``, ``journeys``, ``conversions``, ``value`` per distinct path (in the engine);
    ``collapse``: a run of touches with one label counts once (``Email > Email`` is
    ``Email``)."""
    t = journey_touches.mutate(_label=journey_touches[level].cast("string").fill_null("(none)"))
    if collapse:
        # a column first: a window inside a filter does not resolve on Spark
        t = t.mutate(_previous=t._label.lag().over(ibis.window(group_by="journey_id",
                                                               order_by="position")))
        t = t.filter(t._previous.isnull() | (t._previous != t._label))
    pairs = ibis.struct({"pos": t.position, "v": t._label}).collect().sort()
    per_journey = t.group_by("journey_id").aggregate(
        path=pairs.map(lambda pair: pair.v).join(SEP), _converted=t.converted.max(),
        _value=t.value.max())
    return per_journey.group_by("path").aggregate(
        journeys=per_journey.count().cast("int64"),
        conversions=per_journey._converted.cast("int64").sum(),
        value=ibis.ifelse(per_journey._converted, per_journey._value, 0.0).sum())


def top_paths(journey_touches: ir.Table, *, level: str = "channel", top: int = 10,
              to: str = "conversion", collapse: bool = False) -> pd.DataFrame:
    """The ``top`` paths by journeys (``to="conversion"``: converting journeys only;
    ``"drop-off"``: journeys that did not convert; ``"all"``), the rest as ``other``; columns
    ``path``, ``journeys``, ``conversions``, ``conversion_rate``, ``value``, ``share``."""
    jt = journey_touches
    if to == "conversion":
        jt = jt.filter(jt.converted)
    elif to == "drop-off":
        jt = jt.filter(~jt.converted)
    counts = path_counts(jt, level=level, collapse=collapse).to_pandas()
    counts = counts.sort_values(["journeys", "path"], ascending=[False, True], kind="stable")
    head, tail = counts.iloc[:top], counts.iloc[top:]
    if len(tail):
        rest = pd.DataFrame([{"path": f"{OTHER} ({len(tail):,} paths)",
                              "journeys": tail.journeys.sum(),
                              "conversions": tail.conversions.sum(), "value": tail.value.sum()}])
        head = pd.concat([head, rest], ignore_index=True)
    total = counts.journeys.sum()
    head = head.assign(conversion_rate=head.conversions / head.journeys,
                       share=head.journeys / total if total else 0.0)
    return head[["path", "journeys", "conversions", "conversion_rate", "value", "share"]
                ].reset_index(drop=True)


def sankey_links(journey_touches: ir.Table, *, level: str = "channel",
                 max_steps: int = 5) -> ir.Table:
    """``step``, ``source``, ``target``, ``journeys`` (see the module): node ``source`` sits
    at ``step`` (1-based), ``target`` at ``step + 1``."""
    t = journey_touches.mutate(_label=journey_touches[level].cast("string").fill_null("(none)"))
    length = t.position.max().over(ibis.window(group_by="journey_id"))
    t = t.mutate(_step=t.position - ibis.greatest(length - max_steps, 0))
    t = t.filter(t._step >= 1)
    outcome = ibis.ifelse(t.converted, CONVERSION_NODE, DROP_OFF_NODE)
    nxt = t._label.lead().over(ibis.window(group_by="journey_id", order_by="_step"))
    t = t.mutate(_target=nxt.coalesce(outcome))
    return t.group_by(step=t._step, source=t._label, target=t._target).aggregate(
        journeys=t.count().cast("int64"))
