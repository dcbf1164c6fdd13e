"""Journeys: conversions as data, each unit's touches cut at its conversions, and paths.

* :mod:`~touchline.journeys.conversions`: which touches and deals are conversions, of whom.
* :mod:`~touchline.journeys.build`: ``journeys`` and ``journey_touches`` (stored tables).
* :mod:`~touchline.journeys.paths`: aggregated paths for attribution, periods.
"""

from touchline.journeys.build import LEVELS, journey_tables, write_journeys
from touchline.journeys.conversions import deal_outcome, find_conversions
from touchline.journeys.paths import aggregate_paths, journeys_in_period

__all__ = ["LEVELS", "aggregate_paths", "deal_outcome", "find_conversions", "journey_tables",
           "journeys_in_period", "write_journeys"]
