"""Journeys: prepared sessions and deals → one touch-level journey per person or account."""

from touchline.journeys.paths import (
    LEVELS,
    account_journeys,
    aggregate_paths,
    deal_outcome,
    journeys_in_period,
    person_journeys,
    warehouse_journeys,
)

__all__ = ["LEVELS", "account_journeys", "aggregate_paths", "deal_outcome", "journeys_in_period",
           "person_journeys", "warehouse_journeys"]
