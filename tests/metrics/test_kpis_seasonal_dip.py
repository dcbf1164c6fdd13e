"""A seasonal retention dip, end to end: the simulator's renewals drop every March
(``seasonal_dip``), the events go through ingest and ``touchline run``, and the ``retention``
KPI's cohorts show the dip the truth file states: the earlier customers' active share in
March against February and April."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ibis.backends import BaseBackend

from touchline import pipeline
from touchline.collect.ingest import ingest_file
from touchline.config import Settings
from touchline.metrics.kpis import compute
from touchline.simulate import SeasonalDip, simulate
from touchline.simulate.truth import calendar_activity

DIP = SeasonalDip(month=3, factor=0.2)


@pytest.mark.duckdb_only(reason="8,000 simulated people through the whole run: minutes on "
                         "Spark, and the retention KPI itself runs on both engines in "
                         "tests/metrics/test_kpis.py")
def test_retention_cohorts_show_the_simulated_march_dip(duck: BaseBackend,
                                                        tmp_path: Path) -> None:
    simulate(8_000, 7, tmp_path / "data", seasonal_dip=DIP)
    truth = json.loads((tmp_path / "data" / "truth.json").read_text())["kpis"]["retention"]
    settings = Settings(database_url=f"duckdb:///{tmp_path / 'wh.duckdb'}",
                        temp_directory=tmp_path, attribution_models=["last_touch"],
                        default_model="last_touch")
    ingest_file(duck, tmp_path / "data" / "events.ndjson.gz", "events", settings=settings)
    pipeline.run(duck, settings, progress=lambda _: None)

    cohorts = compute(duck, "retention").to_pandas()
    # the cohorts as the truth counts them, customer for customer
    got = {(c.isoformat()[:10], int(k)): (int(n), int(a)) for c, k, n, a in zip(
        cohorts.cohort, cohorts.months_since, cohorts.customers, cohorts.active_customers,
        strict=True)}
    assert got == {(r["cohort"], r["months_since"]): (r["customers"], r["active_customers"])
                   for r in truth["cohorts"]}
    # the same rows read by calendar month: each year's March against its neighbours
    sizes = {c: n for (c, k), (n, _) in got.items() if k == 0}
    activity = calendar_activity(sizes, [(c, k, a) for (c, k), (_, a) in got.items()])
    dip = truth["seasonal_dip"]
    assert (dip["month"], dip["factor"]) == (3, 0.2) and dip["lapsed_repeat_orders"] > 0
    for year in dip["years"]:
        for month in year["months"]:
            assert activity[month["month"]] == {
                "earlier_customers": month["earlier_customers"], "active": month["active"]}
    # 2026 is the first March every cohort has lived through: its share is a fraction of
    # February's and April's (about the factor, 0.2; the truth's figure within 0.15)
    march = next(y for y in dip["years"] if y["month"] == "2026-03-01")
    shares = [activity[m]["active"] / activity[m]["earlier_customers"]
              for m in ("2026-02-01", "2026-03-01", "2026-04-01")]
    ratio = shares[1] / ((shares[0] + shares[2]) / 2)
    assert ratio == pytest.approx(march["ratio_to_neighbours"], abs=1e-6)
    assert ratio == pytest.approx(DIP.factor, abs=0.15)
    assert shares[1] < 0.5 * min(shares[0], shares[2])
