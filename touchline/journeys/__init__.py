"""Journeys: prepared sessions and deals → one touch-level journey per person or account."""

from touchline.journeys.paths import account_journeys, person_journeys

__all__ = ["account_journeys", "person_journeys"]
