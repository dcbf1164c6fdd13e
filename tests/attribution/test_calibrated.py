"""Experiment calibration: the model ``calibrated`` and ``touchline experiments import``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from factories import CLI_OWN_CONNECTION
from typer.testing import CliRunner

from touchline.attribution import PathSet, attribute, compare, evaluate, load_truth, read_path_file
from touchline.attribution.calibrated import Experiment
from touchline.cli import app
from touchline.simulate import simulate


def _two_channels() -> PathSet:
    """A alone 30 conversions, B alone 20, A > B 50; 10 of revenue each. Linear: A 55, B 45."""
    return PathSet.from_lists([["A"], ["B"], ["A", "B"]], conversions=[30, 20, 50],
                              value=[300, 200, 500], nulls=[70, 80, 50])


@pytest.mark.parametrize(("experiments", "expected"), [
    # one experiment over every journey: A clamped to its upper bound, B takes the rest
    ([Experiment("A", 20, 30)], [30, 70]),
    # an interval that holds the credit changes nothing
    ([Experiment("A", 50, 60)], [55, 45]),
    # half of A's credit in the test period: clip(27.5, 10, 12) = 12, carried back: 24
    ([Experiment("A", 10, 12, period_share=0.5)], [24, 76]),
    # two periods: (clip(27.5, 10, 12) + clip(27.5, 30, 40)) / (0.5 + 0.5) = 42
    ([Experiment("A", 10, 12, period_share=0.5), Experiment("A", 30, 40, period_share=0.5)],
     [42, 58]),
    # both channels tested: each clamped, nothing left to rescale
    ([Experiment("A", 20, 30), Experiment("B", 50, 80)], [30, 50]),
])
def test_experimented_channels_are_clamped_and_the_rest_rescaled(
        experiments: list[Experiment], expected: list[float]) -> None:
    got = attribute(_two_channels(), "calibrated", base="linear", experiments=experiments)
    assert got.conversions.tolist() == pytest.approx(expected)
    # revenue moves with the same factor: 10 per conversion here
    assert got.value.tolist() == pytest.approx([10 * c for c in expected])


def test_lower_bounds_above_every_conversion_leave_the_others_nothing() -> None:
    got = attribute(_two_channels(), "calibrated", base="linear",
                    experiments=[Experiment("A", 120, 130)])
    assert got.conversions.tolist() == pytest.approx([120, 0])
    assert got.attrs["info"]["excess"] == pytest.approx(20)


def test_without_experiments_it_is_the_counterfactual_model() -> None:
    paths = _two_channels()
    assert attribute(paths, "calibrated").conversions.tolist() == pytest.approx(
        attribute(paths, "counterfactual").conversions.tolist())


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sim")
    simulate(3_000, 3, out, fmt="ndjson")
    return out


@pytest.mark.parametrize("channel", ["direct", "email"])
def test_an_experiment_built_from_the_truth_moves_credits_toward_it(simulated: Path,
                                                                    channel: str) -> None:
    """direct has no effect and the counterfactual model over-credits it; email is
    under-credited. An experiment measuring either within 10 % of its true incremental
    conversions brings the whole credit vector closer to the truth (L1 of shares)."""
    paths = read_path_file(simulated / "paths.csv")
    truth = load_truth(simulated / "truth.json")
    true = truth.conversions[channel]
    experiment = Experiment(channel, 0.9 * true, 1.1 * true + 0.5)
    table = compare(paths, ["counterfactual"])
    table["calibrated"] = attribute(paths, "calibrated",
                                    experiments=[experiment]).conversions.to_numpy()
    l1 = evaluate(table, truth).set_index("model").l1_share
    assert l1["calibrated"] < l1["counterfactual"] - 0.1
    got = table.set_index("channel").calibrated[channel]
    assert experiment.low <= got <= experiment.high


EVENTS = [
    {"type": "page", "anonymousId": "a1", "timestamp": "2026-03-01T09:00:00Z",
     "context": {"page": {"url": "https://shop.example/", "referrer": "https://www.google.com/"}}},
    {"type": "page", "anonymousId": "a1", "timestamp": "2026-03-03T09:00:00Z",
     "context": {"page": {"url": "https://shop.example/?utm_source=google&utm_medium=cpc"
                          "&utm_campaign=spring&gclid=abc"}}},
    {"type": "track", "event": "Order Completed", "anonymousId": "a1",
     "timestamp": "2026-03-03T09:05:00Z", "properties": {"revenue": 120, "currency": "USD"}},
    {"type": "page", "anonymousId": "b1", "timestamp": "2026-03-02T10:00:00Z",
     "context": {"page": {"url": "https://shop.example/?utm_source=newsletter&utm_medium=email"}}},
]
EXPERIMENTS = """experiment_id,channel,period_start,period_end,incremental_conversions,\
incremental_conversions_low,incremental_conversions_high,lift,lift_low,lift_high,test_type
search-holdout,Paid Search,2026-03-01,2026-03-31,0.9,0.8,1.0,,,,holdout
no-target,,2026-03-01,2026-03-31,0.9,0.8,1.0,,,,geo
backwards,Email,2026-03-31,2026-03-01,0.9,0.8,1.0,,,,geo
survey,Email,2026-03-01,2026-03-31,0.9,0.8,1.0,,,,survey
no-bounds,Email,2026-03-01,2026-03-31,0.9,,,,,,geo
outside,Email,2026-03-01,2026-03-31,2.0,0.8,1.0,,,,geo
"""


@pytest.mark.duckdb_only(reason=CLI_OWN_CONNECTION)
def test_imported_experiments_calibrate_the_run_and_attribute(tmp_path: Path) -> None:
    """ann's purchase (Organic Search > Paid Search) beside bob's open Email journey: the
    counterfactual model halves it; a holdout test measuring Paid Search at 0.8 to 1.0 moves
    it to 0.8 and leaves Organic Search 0.2. Bad rows land in rejects with line and reason."""
    events = tmp_path / "events.ndjson"
    events.write_text("".join(json.dumps({"messageId": f"m{i}", **e}) + "\n"
                              for i, e in enumerate(EVENTS)))
    file = tmp_path / "experiments.csv"
    file.write_text(EXPERIMENTS)
    db = f"duckdb:///{tmp_path / 'wh.duckdb'}"
    runner = CliRunner()
    env = {"TOUCHLINE_ATTRIBUTION_MODELS": '["linear", "counterfactual", "calibrated"]'}
    for args in (["init", "--database", db],
                 ["ingest", str(events), "--kind", "events", "--database", db],
                 ["experiments", "import", str(file), "--database", db],
                 ["run", "--database", db]):
        result = runner.invoke(app, args, env=env)
        assert result.exit_code == 0, result.output
        if args[0] == "experiments":
            assert "1 experiments loaded, 5 rejected" in result.output
    import duckdb

    with duckdb.connect(str(tmp_path / "wh.duckdb"), read_only=True) as stored:
        rejects = stored.sql("select line, reason_code from rejects where step = "
                             "'ingest:experiments' order by line").fetchall()
        credits = dict(stored.sql("select channel, sum(credit) from credits where model = "
                                  "'calibrated' group by channel").fetchall())
    assert rejects == [(3, "missing_target"), (4, "bad_period"), (5, "bad_test_type"),
                       (6, "missing_interval"), (7, "bad_interval")]
    assert credits == pytest.approx({"Organic Search": 0.2, "Paid Search": 0.8})
    result = runner.invoke(app, ["attribute", "--model", "calibrated", "--format", "json",
                                 "--database", db], env=env)
    assert result.exit_code == 0, result.output
    got = json.loads(result.output)
    shown = {c["channel"]: c["conversions"] for c in got["channels"]}
    assert shown == pytest.approx({"Organic Search": 0.2, "Paid Search": 0.8, "Email": 0.0})
    assert got["params"]["experiments"] == [{"label": "Paid Search", "low": 0.8, "high": 1.0,
                                             "period_share": 1.0, "name": "search-holdout"}]
    result = runner.invoke(app, ["attribute", "--model", "all", "--format", "json",
                                 "--database", db], env=env)
    assert result.exit_code == 0, result.output
    side_by_side = {c["channel"]: c["conversions"]["calibrated"]
                    for c in json.loads(result.output)["channels"]}
    assert side_by_side == pytest.approx({"Organic Search": 0.2, "Paid Search": 0.8,
                                          "Email": 0.0})


def test_stored_experiments_become_period_shares_and_lifts_become_conversions() -> None:
    """Three converting journeys with Email (March 2, March 20, April 5) and one without: a
    March test covers two of Email's three; a lift of 0.25 (0.1 to 0.5) on the two exposed
    March conversions is 2 × 0.1 / 1.1 to 2 × 0.5 / 1.5 incremental conversions."""
    import pandas as pd
    import pyarrow as pa

    from touchline.attribution.calibrated import experiment_targets

    paths = PathSet.from_lists([["Email"], ["Email", "Direct"], ["Email"], ["Direct"]],
                               conversions=[1, 1, 1, 1])
    converting = pa.table({
        "journey_id": ["j1", "j2", "j2", "j3", "j4"],
        "converted_at": pd.to_datetime(["2026-03-02", "2026-03-20", "2026-03-20", "2026-04-05",
                                        "2026-03-10"]),
    })
    experiments = pd.DataFrame({
        "experiment_id": ["march"], "channel": ["Email"], "campaign": [None],
        "conversion": [None], "period_start": [pd.Timestamp("2026-03-01")],
        "period_end": [pd.Timestamp("2026-03-31")], "incremental_conversions": [float("nan")],
        "incremental_conversions_low": [float("nan")],
        "incremental_conversions_high": [float("nan")], "lift": [0.25], "lift_low": [0.1],
        "lift_high": [0.5], "test_type": ["geo"],
    })
    (target,) = experiment_targets(experiments, paths, converting, conversion="purchase")
    assert target.label == "Email" and target.name == "march"
    assert target.period_share == pytest.approx(2 / 3)
    assert (target.low, target.high) == pytest.approx((2 * 0.1 / 1.1, 2 * 0.5 / 1.5))


def test_calibrated_intervals_keep_the_tested_channel_inside_its_experiment() -> None:
    """Each bootstrap replicate is calibrated too: A's counterfactual credit (about 600) is
    above the experiment's 300 to 350 in every resample, so its interval is the clamp, 350;
    the others carry the resampling's spread."""
    from touchline.attribution import credit_intervals

    paths = PathSet.from_lists([["A"], ["B"], ["A", "B"], ["C"]], conversions=[300, 200, 500, 50],
                               value=[3000, 2000, 5000, 500], nulls=[700, 800, 500, 950])
    got = credit_intervals(paths, "calibrated", {"experiments": [Experiment("A", 300, 350)]},
                           replicates=40).set_index("channel")
    assert (got.conversions_low["A"], got.conversions_high["A"]) == pytest.approx((350, 350))
    assert got.conversions_low["B"] < got.conversions["B"] < got.conversions_high["B"]
