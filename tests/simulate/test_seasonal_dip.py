"""The opt-in seasonal dip: repeat orders of one calendar month lapse, the rest of the
simulated world stays as it was, and truth.json states the dip."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from touchline.cli.simulate import parse_dip
from touchline.errors import SimulationError
from touchline.simulate import SeasonalDip, simulate
from touchline.simulate.truth import calendar_activity


def _truth(path: Path) -> dict:  # type: ignore[type-arg]
    return json.loads((path / "truth.json").read_text())  # type: ignore[no-any-return]


@pytest.mark.parametrize("b2b", [False, True], ids=["b2c", "b2b"])
def test_dip_cancels_only_repeat_orders_of_its_month(tmp_path: Path, b2b: bool) -> None:
    kw = dict(b2b=b2b, accounts=300 if b2b else None, chunk_people=1_000)
    simulate(3_000, 3, tmp_path / "plain", **kw)  # type: ignore[arg-type]
    simulate(3_000, 3, tmp_path / "dip", seasonal_dip=SeasonalDip(3, 0.0),
             **kw)  # type: ignore[arg-type]
    plain, dip = _truth(tmp_path / "plain"), _truth(tmp_path / "dip")
    assert "seasonal_dip" not in plain["kpis"]["retention"]
    lapsed = dip["kpis"]["retention"]["seasonal_dip"]["lapsed_repeat_orders"]
    assert lapsed > 0
    # the same people convert with the same first orders; only the lapsed repeats are gone
    repeats = "expansion_deals" if b2b else "repeat_orders"
    for key in ("persons", "conversions", "first_order_revenue"):
        assert dip["counts"][key] == plain["counts"][key], key
    assert dip["counts"][repeats] == plain["counts"][repeats] - lapsed
    assert dip["counts"]["revenue"] < plain["counts"]["revenue"]
    # a lapsed repeat is gone in every counterfactual world too: a channel's incremental
    # conversions (first orders) are its own, dip or not
    for name, channel in plain["channels"].items():
        assert dip["channels"][name]["incremental_conversions"] == channel[
            "incremental_conversions"], name
    assert "kpis.retention.seasonal_dip" in dip["definitions"]
    assert "kpis.retention.seasonal_dip" not in plain["definitions"]


def test_truth_states_the_march_share_against_its_neighbours(tmp_path: Path) -> None:
    simulate(3_000, 3, tmp_path, seasonal_dip=SeasonalDip(3, 0.0))
    retention = _truth(tmp_path)["kpis"]["retention"]
    dip = retention["seasonal_dip"]
    assert (dip["month"], dip["factor"]) == (3, 0.0)
    # the cohorts by calendar month, worked out again from the cohort rows
    sizes = {r["cohort"]: r["customers"] for r in retention["cohorts"]}
    activity = calendar_activity(sizes, [(r["cohort"], r["months_since"], r["active_customers"])
                                         for r in retention["cohorts"]])
    march = next(y for y in dip["years"] if y["month"] == "2026-03-01")
    before, during, after = march["months"]
    assert [m["month"] for m in march["months"]] == ["2026-02-01", "2026-03-01", "2026-04-01"]
    for month in march["months"]:
        assert activity[month["month"]] == {"earlier_customers": month["earlier_customers"],
                                            "active": month["active"]}
        assert month["share"] == pytest.approx(month["active"] / month["earlier_customers"],
                                               abs=1e-6)
    # factor 0: no renewal in March (in this data no February visit checks out after
    # midnight into March), while February and April keep theirs
    assert during["active"] == 0 and march["ratio_to_neighbours"] == 0.0
    assert before["active"] > 0 and after["active"] > 0


def test_calendar_activity_counts_earlier_cohorts_month_by_month() -> None:
    # January's 10 customers: 3 buy again in February, 0 in March, 2 in April; February's 5:
    # 1 in April
    got = calendar_activity({"2025-01-01": 10, "2025-02-01": 5},
                            [("2025-01-01", 0, 10), ("2025-01-01", 1, 3),
                             ("2025-01-01", 3, 2), ("2025-02-01", 0, 5), ("2025-02-01", 2, 1)])
    assert got == {"2025-02-01": {"earlier_customers": 10, "active": 3},
                   "2025-03-01": {"earlier_customers": 15, "active": 0},
                   "2025-04-01": {"earlier_customers": 15, "active": 3}}


def test_bad_dips_say_what_is_expected() -> None:
    assert parse_dip("3:0.3") == SeasonalDip(3, 0.3)
    for text, message in (("March", "expected MONTH:FACTOR"), ("13:0.5", "calendar month 1-12"),
                          ("3:1.5", "share of the month's repeat orders"),
                          ("3:x", "expected MONTH:FACTOR")):
        with pytest.raises(SimulationError, match=message):
            parse_dip(text)


def test_simulate_command_takes_a_dip(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from touchline.cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["simulate", "-n", "200", "-o", str(tmp_path / "ok"),
                                 "--seasonal-dip", "3:0.5"])
    assert result.exit_code == 0, result.output
    dip = _truth(tmp_path / "ok")["kpis"]["retention"]["seasonal_dip"]
    assert (dip["month"], dip["factor"]) == (3, 0.5)
    result = runner.invoke(app, ["simulate", "-n", "200", "-o", str(tmp_path / "bad"),
                                 "--seasonal-dip", "March"])
    assert result.exit_code == 2
    assert "--seasonal-dip 'March': expected MONTH:FACTOR" in result.output
    assert not (tmp_path / "bad").exists()
