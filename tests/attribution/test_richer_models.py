"""Issue 18 point 5: the Markov order chosen by held-out likelihood, ordered Shapley,
time-decay Markov, and the lookback of each conversion type honoured by every model.

Expected credits are worked out by hand in the comments."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from attribution_cases import hand_paths
from factories import arrow_table
from ibis.backends import BaseBackend
from typer.testing import CliRunner

from touchline import engine, store
from touchline.attribution import MODELS, PathSet, attribute
from touchline.attribution.markov import recency_weights
from touchline.attribution.paths import journey_pathset
from touchline.attribution.registry import run_model
from touchline.cli import app
from touchline.config import ConversionSpec
from touchline.errors import ConfigError, InputError
from touchline.journeys import journey_tables
from touchline.journeys.conversions import CONVERSION_SCHEMA

runner = CliRunner()


# ---- ordered Shapley ---------------------------------------------------------------------


def _ordered_case() -> PathSet:
    return PathSet.from_lists([["A", "B", "A", "C"], ["A", "B"], ["B"], ["C", "C"]],
                              conversions=[3, 2, 1, 0], value=[30, 20, 10, 0], nulls=[0, 1, 2, 4])


def test_ordered_shapley_splits_each_journey_by_the_position_its_channels_joined() -> None:
    # A > B > A > C (3 conversions): ordered coalition (A, B, C), 1 each at positions 1, 2, 3;
    # A > B (2): 1 each at positions 1, 2; B (1): 1 at position 1; C > C converts nothing.
    frame = attribute(_ordered_case(), "ordered_shapley", max_positions=4).set_index("channel")
    assert frame.conversions.to_dict() == pytest.approx({"A": 2.0, "B": 3.0, "C": 1.0})
    assert frame.value.to_dict() == pytest.approx({"A": 20.0, "B": 30.0, "C": 10.0})
    assert frame.position_1.to_dict() == pytest.approx({"A": 2.0, "B": 1.0, "C": 0.0})
    assert frame.position_2.to_dict() == pytest.approx({"A": 0.0, "B": 2.0, "C": 0.0})
    assert frame.position_3.to_dict() == pytest.approx({"A": 0.0, "B": 0.0, "C": 1.0})
    assert frame.position_4_plus.to_dict() == pytest.approx({"A": 0.0, "B": 0.0, "C": 0.0})
    # positions from max_positions on are pooled: B's 2 and C's 1 from position 2 on
    pooled = attribute(_ordered_case(), "ordered_shapley", max_positions=2).set_index("channel")
    assert pooled.position_2_plus.to_dict() == pytest.approx({"A": 0.0, "B": 2.0, "C": 1.0})


def test_ordered_shapley_totals_are_the_simplified_shapley_value() -> None:
    ordered = attribute(hand_paths(), "ordered_shapley")
    plain = attribute(hand_paths(), "shapley")
    assert ordered.conversions.to_numpy() == pytest.approx(plain.conversions.to_numpy())
    assert ordered.value.to_numpy() == pytest.approx(plain.value.to_numpy())


def test_ordered_shapley_refuses_zero_positions() -> None:
    with pytest.raises(ConfigError, match="max_positions"):
        attribute(_ordered_case(), "ordered_shapley", max_positions=0)


# ---- time-decay Markov ---------------------------------------------------------------------


def _decay_case(old_age: float = 7.0) -> PathSet:
    return PathSet.from_lists([["A", "B"], ["B"], ["A"]], conversions=[1, 0, 1],
                              nulls=[0, 1, 0], ages=[[old_age, 0.0], [0.0], [0.0]])


def test_time_decay_markov_halves_the_transitions_of_a_touch_one_half_life_old() -> None:
    # weights: A > B (A 7 days old: 1/2) so start→A 1/2, A→B 1/2, B→conv 1; B: start→B 1,
    # B→null 1; A: start→A 1, A→conv 1. P(B) = 1/2, P(A) = (1 + 1/2 · 1/2)/1.5 = 5/6,
    # P(start) = 1.5/2.5 · 5/6 + 1/2.5 · 1/2 = 0.7; without A: 0.2, RE_A = 5/7; without B:
    # P(A) = 2/3, 0.6 · 2/3 = 0.4, RE_B = 3/7; shares 5/8 and 3/8 of 2 conversions.
    frame = attribute(_decay_case(), "markov_time_decay").set_index("channel")
    assert frame.conversions.to_dict() == pytest.approx({"A": 1.25, "B": 0.75})
    assert frame.removal_effect.to_dict() == pytest.approx({"A": 5 / 7, "B": 3 / 7})
    # plain markov on the same paths: RE_A = 3/4, RE_B = 1/2, so 1.2 and 0.8
    plain = attribute(_decay_case(), "markov").set_index("channel")
    assert plain.conversions.to_dict() == pytest.approx({"A": 1.2, "B": 0.8})
    # a half-life far beyond every age is plain markov
    slow = attribute(_decay_case(), "markov_time_decay", half_life_days=1e12)
    assert slow.conversions.to_numpy() == pytest.approx(plain.conversions.to_numpy())


def test_a_run_of_repeats_takes_the_age_of_its_latest_touch() -> None:
    paths = PathSet.from_lists([["A", "A", "B"], ["C"]], conversions=[1, 0], nulls=[0, 1],
                               ages=[[21.0, 7.0, 0.0], [14.0]])
    # collapsed: A (latest touch 7 days: 1/2), B (0 days: 1), C (14 days: 1/4)
    assert recency_weights(paths, 7.0) == pytest.approx([0.5, 1.0, 0.25])


def test_time_decay_markov_needs_timings_and_a_positive_half_life() -> None:
    no_ages = PathSet.from_lists([["A"]], conversions=[1], nulls=[1])
    with pytest.raises(InputError, match="timings"):
        attribute(no_ages, "markov_time_decay")
    with pytest.raises(ConfigError, match="half_life_days"):
        attribute(_decay_case(), "markov_time_decay", half_life_days=0)


# ---- Markov order by held-out likelihood --------------------------------------------------


def _second_order_paths() -> PathSet:
    # whether C converts depends on the touch before it: A > C always, B > C never. Order 1
    # sees state C convert half the time; order 2 sees (A, C) and (B, C) apart.
    return PathSet.from_lists([["A", "C"], ["B", "C"]], conversions=[400, 0], nulls=[0, 400])


def test_markov_order_auto_picks_the_order_that_predicts_held_out_journeys() -> None:
    frame = attribute(_second_order_paths(), "markov", order="auto")
    info = frame.attrs["info"]
    assert info["order"] == 2  # orders 3 and 4 tie with 2 here: the lower order is kept
    assert sorted(info["order_scores"]) == [1, 2, 3, 4]
    assert info["order_scores"][1] == pytest.approx(np.log(2), rel=0.05)  # a coin flip
    assert info["order_scores"][2] < 0.01
    assert info["order_choice"].startswith("picked order 2: lowest held-out log-loss")
    assert "next order 3" in info["order_choice"]
    by_hand = attribute(_second_order_paths(), "markov", order=2)
    assert frame.conversions.to_numpy() == pytest.approx(by_hand.conversions.to_numpy())


def test_markov_order_auto_falls_back_to_order_1_when_nothing_can_be_held_out() -> None:
    paths = PathSet.from_lists([["A", "B"]], conversions=[3])  # no non-converting journey
    info = attribute(paths, "markov", order="auto").attrs["info"]
    assert info["order"] == 1
    assert info["order_choice"].startswith("order 1 unscored")


def test_cli_order_auto_says_which_order_and_why(tmp_path: Path) -> None:
    file = tmp_path / "paths.csv"
    file.write_text("path;total_conversions;total_null\nA > C;400;0\nB > C;0;400\n")
    result = runner.invoke(app, ["attribute", "--paths", str(file), "--model", "markov",
                                 "--order", "auto", "--replicates", "0", "--format", "json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["params"] == {"order": "auto"}
    assert data["markov_order"]["picked"] == 2
    assert set(data["markov_order"]["held_out_log_loss"]) == {"1", "2", "3", "4"}
    assert "markov order auto: picked order 2" in result.stderr
    bad = runner.invoke(app, ["attribute", "--paths", str(file), "--order", "two"])
    assert bad.exit_code != 0 and "expected 1-4 or 'auto'" in bad.output


# ---- stored journeys: open journeys' ages, and the lookback of each conversion type --------

T0 = datetime(2026, 3, 1, 9, 0)


def _sessions(con: BaseBackend, rows: list[tuple[str, float, str]]) -> None:
    data = [{"session_id": f"{p}#{i}", "device_id": f"anon:{p}", "person_id": p,
             "account_id": None, "session_index": i, "started_at": T0 + timedelta(days=day),
             "ended_at": T0 + timedelta(days=day), "channel": channel}
            for i, (p, day, channel) in enumerate(rows, start=1)]
    engine.load_table(con, "sessions", arrow_table(store.SESSIONS, data))


def _conversions(con: BaseBackend, name: str, rows: list[tuple[str, float]]) -> object:
    import pyarrow as pa

    data = pa.table({
        "conversion": [name] * len(rows), "unit": ["person"] * len(rows),
        "unit_id": [r[0] for r in rows],
        "converted_at": pa.array([T0 + timedelta(days=r[1]) for r in rows], pa.timestamp("us")),
        "value": [10.0] * len(rows), "ref": [f"c{i}" for i in range(len(rows))]})
    table = engine.load_table(con, f"conv_{name}", data)
    return table.select(*(table[c].cast(t).name(c) for c, t in CONVERSION_SCHEMA.items()))


STORY = [
    # p1 saw Display 20 days before buying, then Email 1 day before: Display is outside a
    # 7-day lookback, inside a 30-day one
    ("p1", 0, "Display"), ("p1", 19, "Email"),
    ("p2", 18, "Email"), ("p2", 19, "Search"),
    ("p3", 5, "Search"), ("p3", 19, "Email"),  # never buys: open journey
]


def _stored_paths(con: BaseBackend, lookback_days: int, *, open_ages: bool = False) -> PathSet:
    _sessions(con, STORY)
    conv = _conversions(con, "purchase", [("p1", 20), ("p2", 20)])
    spec = ConversionSpec(name="purchase", revenue=True, value="revenue",
                          lookback_days=lookback_days)
    _, touches = journey_tables(con.table("sessions"), conv, spec)
    paths, _ = journey_pathset(touches, open_ages=open_ages)
    return paths


def test_open_journeys_keep_their_ages_for_time_decay_markov(con: BaseBackend) -> None:
    paths = _stored_paths(con, 30, open_ages=True)
    frame = paths.to_frame()
    open_row = int(np.flatnonzero(frame.nulls.to_numpy() == 1)[0])
    start, end = paths.offsets[open_row], paths.offsets[open_row + 1]
    # p3's open journey ends at its last touch (day 19): Search 14 days before, Email 0
    assert paths.ages[start:end] == pytest.approx([14.0, 0.0])
    without = _stored_paths(con, 30)
    assert without.ages[without.offsets[open_row]:without.offsets[open_row + 1]] == (
        pytest.approx([0.0, 0.0]))


def test_every_model_credits_only_touches_inside_the_lookback(con: BaseBackend) -> None:
    week_paths = _stored_paths(con, 7, open_ages=True)
    month_paths = _stored_paths(con, 30, open_ages=True)
    # within 30 days Display opens p1's converting path; within 7 days it is in no path any
    # model reads, so no model can credit it
    assert "Display" in set(month_paths.labels)
    assert "Display" not in set(week_paths.labels)
    for model in sorted(MODELS):
        week, month = run_model(week_paths, model), run_model(month_paths, model)
        assert month.conversions.sum() == pytest.approx(2.0), model
        assert len(week.conversions) == month_paths.n_labels - 1, model
        assert week.conversions.sum() == pytest.approx(2.0), model


# ---- touchline run: the new models and settings.markov_order --------------------------------


def test_run_stores_the_new_models_and_says_which_markov_order_auto_took(
        con: BaseBackend, tmp_path: Path) -> None:
    from factories import JOHN, JOHN_DEAL, event_rows, prepare_on_duckdb

    from touchline.config import Settings
    from touchline.pipeline import run

    settings = Settings(database_url="duckdb://", temp_directory=tmp_path, markov_order="auto",
                        attribution_models=["linear", "markov", "markov_time_decay",
                                            "ordered_shapley"], bootstrap_replicates=0)
    spark = engine.engine_name(con) == "spark"
    if spark:
        prepare_on_duckdb(con, settings, JOHN, JOHN_DEAL)
    else:
        engine.load_table(con, "events", arrow_table(store.EVENTS, event_rows(JOHN)))
        engine.load_table(con, "deals", arrow_table(store.DEALS, JOHN_DEAL))
    report = run(con, settings, prepare=not spark)
    # John alone never fails to convert: nothing to hold out, so order 1, and the run says so
    assert set(report.markov_orders) >= {"deal_won (markov)", "deal_won (markov_time_decay)"}
    assert all(reason.startswith("order 1 unscored") for reason in report.markov_orders.values())
    credits = con.table("credits").to_pandas()
    deal = credits[credits.conversion == "deal_won"]
    # Organic Search > Paid Search > Direct > Phone, one sale: every model credits all of it
    for model in ("markov", "markov_time_decay", "ordered_shapley"):
        assert deal[deal.model == model].credit.sum() == pytest.approx(1.0), model
    shapley = deal[deal.model == "ordered_shapley"].groupby("channel").credit.sum()
    assert shapley.to_dict() == pytest.approx({"Organic Search": 0.25, "Paid Search": 0.25,
                                               "Direct": 0.25, "Phone": 0.25})


def test_markov_order_setting_is_1_to_4_or_auto() -> None:
    from touchline.config import load_settings

    assert load_settings().markov_order == 1
    assert load_settings(markov_order="auto").markov_order == "auto"
    assert load_settings(markov_order="3").markov_order == 3
    with pytest.raises(ConfigError, match="markov_order must be 1 to 4 or 'auto'"):
        load_settings(markov_order=5)
