"""Metrics over the stored tables: funnels, and the KPI registry of every journey stage."""

from touchline.metrics.funnels import funnel
from touchline.metrics.kpis import KPIS, compute

__all__ = ["KPIS", "compute", "funnel"]
