"""Metrics over the stored tables: funnels, and the KPI registry of every journey stage."""

from touchline.metrics.funnels import funnel
from touchline.metrics.kpis import KPIS, compute

# register the KPIs of the other modules beside those of kpis.py (CLV, social, pages, stage
# rates, reviews and the rest of advocacy, deals)
from touchline.metrics import (  # noqa: F401  isort: skip
    social, pages, stage_rates, clv, advocacy, deals)

__all__ = ["KPIS", "compute", "funnel"]
