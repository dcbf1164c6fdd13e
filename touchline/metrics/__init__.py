"""Metrics over the stored journeys: funnels (and the KPI registry as it lands)."""

from touchline.metrics.funnels import funnel

__all__ = ["funnel"]
