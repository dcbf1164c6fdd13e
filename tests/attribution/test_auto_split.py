"""``auto`` on stored journeys: the time-based split (table logic, both engines) and what
``touchline run`` keeps of the choice."""

from __future__ import annotations

import numpy as np
import pytest
from factories import arrow_table
from ibis.backends import BaseBackend

from touchline import engine, store
from touchline.attribution.paths import PathSet, journey_pathset
from touchline.attribution.select import (
    FALLBACK,
    SPLIT_SEEDED,
    SPLIT_TIME,
    choose_model,
    sample_journeys,
    score_candidates,
    split_journeys,
)
from touchline.errors import InputError

# journey: (converted, [(day, channel)...]); days of March 2025, the conversion on the last day
JOURNEYS = {
    "j1": (True, [(1, "email"), (1, "search")]),
    "j2": (False, [(1, "email"), (2, "search")]),
    "j3": (True, [(2, "search"), (3, "email")]),
    "j4": (False, [(3, "email"), (4, "search")]),  # same path as j2, ends on the cutoff day
    "j5": (False, [(4, "social")]),
    "j6": (True, [(3, "social"), (5, "email")]),
    "j7": (False, [(2, "social")]),
    "j8": (False, [(1, "search")]),
}


def _touches(con: BaseBackend) -> object:
    rows = []
    for journey, (converted, touches) in JOURNEYS.items():
        end = f"2025-03-{touches[-1][0]:02d} 18:00:00"
        for position, (day, channel) in enumerate(touches, start=1):
            rows.append({"journey_id": journey, "position": position, "conversion": "purchase",
                         "converted": converted, "converted_at": end if converted else None,
                         "value": 10.0 if converted else 0.0, "channel": channel,
                         "touch_at": f"2025-03-{day:02d} 09:00:00",
                         "days_before_conversion": 0.0})
    engine.load_table(con, "split_touches", arrow_table(store.JOURNEY_TOUCHES, rows))
    return con.table("split_touches")


def test_time_split_holds_out_the_journeys_that_end_latest(con: BaseBackend) -> None:
    # ends by day: 1: j1, j8; 2: j2, j7; 3: j3; 4: j4, j5; 5: j6. Share ending before day 4:
    # 5/8 = 0.625, before day 5: 7/8 = 0.875, both 0.125 from 0.75: the earlier day wins the
    # tie, so j4, j5 and j6 are held out
    paths, converting = journey_pathset(_touches(con), split_holdout=0.25)
    frame = paths.to_frame()
    frame["later"] = paths.later
    got = sorted((r.path, r.conversions, r.nulls, r.later) for r in frame.itertuples())
    assert got == sorted([
        ("email > search", 1.0, 0.0, 0.0),   # j1
        ("search > email", 1.0, 0.0, 0.0),   # j3
        ("social > email", 1.0, 0.0, 1.0),   # j6
        ("email > search", 0.0, 1.0, 0.0),   # j2
        ("email > search", 0.0, 1.0, 1.0),   # j4: the same path, on the later side
        ("search", 0.0, 1.0, 0.0),           # j8
        ("social", 0.0, 1.0, 0.0),           # j7
        ("social", 0.0, 1.0, 1.0),           # j5
    ])
    assert converting.num_rows == 6
    train, test, split = split_journeys(paths, 0.25, seed=0)
    assert split == SPLIT_TIME
    assert (test.conversions.sum(), test.nulls.sum()) == (1.0, 2.0)
    assert (train.conversions.sum(), train.nulls.sum()) == (2.0, 3.0)


def _paths_with_later(later_converts: bool) -> PathSet:
    paths = PathSet.from_lists([["a", "b"], ["b"], ["a"], ["a", "b"], ["b"]],
                               conversions=[30, 5, 10, 8 if later_converts else 0, 0],
                               nulls=[70, 95, 90, 20, 30])
    return PathSet(**{**paths.__dict__, "later": np.array([0.0, 0, 0, 1, 1]), "_cache": {}})


def test_auto_scores_on_the_later_journeys_and_says_so() -> None:
    choice = choose_model(_paths_with_later(True))
    assert choice.split == SPLIT_TIME
    assert choice.scores.attrs["held_out_journeys"] == 58.0  # 8 + 20 + 30
    assert "time-based split, the latest 16%" in choice.reason


def test_auto_splits_at_random_when_the_later_journeys_never_convert() -> None:
    choice = choose_model(_paths_with_later(False))
    assert choice.split == SPLIT_SEEDED


def test_auto_falls_back_when_journeys_are_too_few_to_split() -> None:
    paths = PathSet.from_lists([["a", "b"], ["b"]], conversions=[1, 0], nulls=[0, 1])
    with pytest.raises(InputError, match="both parts"):
        choose_model(paths)
    choice = choose_model(paths, fallback=FALLBACK)
    assert choice.label == FALLBACK.label and choice.split == "none"
    assert "unscored" in choice.reason
    assert choice.credits.conversions.sum() == pytest.approx(1.0)


def test_sample_keeps_about_the_journeys_asked_with_each_paths_revenue_per_conversion() -> None:
    paths = PathSet.from_lists([["a", "b"], ["b"], ["a"]], conversions=[400, 100, 0],
                               value=[4000.0, 500.0, 0.0], nulls=[600, 900, 2000])
    sample = sample_journeys(paths, 1000, seed=0)
    kept = sample.conversions.sum() + sample.nulls.sum()
    assert 900 < kept < 1100  # a quarter of 4000, binomially: sd 27
    assert np.all(sample.conversions <= paths.conversions)
    assert np.all(sample.nulls <= paths.nulls)
    np.testing.assert_allclose(sample.value, sample.conversions * [10.0, 5.0, 0.0])
    again = sample_journeys(paths, 1000, seed=0)
    np.testing.assert_array_equal(again.nulls, sample.nulls)  # seeded: the same every run
    assert sample_journeys(paths, 4000, seed=0) is paths  # no more than there are: all


def test_candidates_fit_on_a_sample_of_the_training_journeys_and_the_reason_says_so() -> None:
    paths = _paths_with_later(True)  # training: 45 converting + 255 not (the earlier paths)
    full = score_candidates(paths)
    assert full.attrs["fitted_journeys"] == full.attrs["training_journeys"] == 300.0
    sampled = score_candidates(paths, training_max=150)
    assert sampled.attrs["training_journeys"] == 300.0
    assert 100 < sampled.attrs["fitted_journeys"] < 200
    assert sampled.attrs["held_out_journeys"] == full.attrs["held_out_journeys"] == 58.0
    assert "sample" not in choose_model(paths).reason
    assert ("candidates fitted on a seeded sample of 1" in
            choose_model(paths, training_max=150).reason)
