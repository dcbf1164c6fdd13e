"""Multi-touch attribution: the ``MODELS`` registry, ``attribute``, ``compare``, ``evaluate``.

Input contract (also in ``docs/attribution.md``)
------------------------------------------------

**Aggregated paths** (the unit the dense maths works on), one row per distinct path:

=====================  ====================  ==========================================
column                 type                  meaning
=====================  ====================  ==========================================
``path``               list<string>          touch labels in time order (never empty)
``conversions``        number >= 0           journeys on this path that converted
``value``              number >= 0           their revenue (optional, default 0)
``nulls``              number >= 0           journeys on this path that did not convert
                                             (optional, default 0; Markov and the
                                             rate-based models need them)
``lead_position``      int                   optional: 0-based index of the lead-creating
                                             touch, -1 if none (W-shaped, full path)
``opportunity_position`` int                 optional: same for the opportunity
``ages``               list<double>          optional: days from each touch to the
                                             conversion (time decay)
=====================  ====================  ==========================================

Path *files* for the CLI hold the path as one string joined by a separator (default
``' > '``) and accept ChannelAttribution's column names (``total_conversions``,
``total_conversion_value``, ``total_null``); :func:`read_path_file` reads them.

**Touch level**, one row per touch: ``journey_id``, ``touch_at`` (timestamp, UTC), ``channel``
(or any level column: ``campaign``, ``keyword``...), optional ``is_lead_touch`` /
``is_opportunity_touch`` flags, and per-journey ``converted``, ``value``, ``converted_at``
repeated on each touch. :func:`aggregate_paths` turns it into aggregated paths with Ibis, the
same on DuckDB and Spark, applying a lookback window if asked. Models that depend on time
(``time_decay``) need this shape, since aggregation by path forgets timings.

Every model is a pure function ``PathSet -> Credits`` in :data:`MODELS`; its docstring gives the
formula and the one- and two-touch cases.
"""

from __future__ import annotations

from touchline.attribution import (  # noqa: F401 - registers the models
    calibrated,
    counterfactual,
    journey_counterfactual,
    markov,
    rules,
    shapley,
)
from touchline.attribution.compare import as_paths, attribute, compare
from touchline.attribution.evaluate import Truth, evaluate, load_truth
from touchline.attribution.intervals import bootstrap, credit_intervals
from touchline.attribution.markov import transition_matrix
from touchline.attribution.path_files import read_path_file
from touchline.attribution.paths import PathSet, aggregate_paths
from touchline.attribution.registry import MODELS, Credits

__all__ = [
    "MODELS",
    "Credits",
    "PathSet",
    "Truth",
    "aggregate_paths",
    "as_paths",
    "attribute",
    "bootstrap",
    "compare",
    "credit_intervals",
    "evaluate",
    "load_truth",
    "read_path_file",
    "transition_matrix",
]
