"""Metrics over the stored tables: funnels, and the KPI registry of every journey stage."""

from touchline.metrics.funnels import funnel
from touchline.metrics.kpis import KPIS, compute

# registers the CLV KPIs (historical_clv, predicted_clv) beside the others
from touchline.metrics import clv  # noqa: F401  isort: skip

__all__ = ["KPIS", "compute", "funnel"]
