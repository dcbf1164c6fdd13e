"""Bootstrap intervals of the data-driven models (touchline/attribution/intervals.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from attribution_cases import hand_paths

from touchline.attribution import MODELS, PathSet, credit_intervals, read_path_file
from touchline.attribution.intervals import (
    INTERVAL_MODELS,
    REPLICATES,
    distinct_paths,
    merge_paths,
    resample,
    sufficient_groups,
)
from touchline.attribution.registry import run_model
from touchline.simulate import simulate


def _mixed_paths(scale: float = 1.0) -> PathSet:
    """Four channels on 40 distinct paths, converting by a logistic model in which a, b and c
    raise the odds and d does nothing (seeded)."""
    rng = np.random.default_rng(5)
    labels = np.array(["a", "b", "c", "d"])
    effect = {"a": 1.5, "b": 1.0, "c": 0.5, "d": 0.0}
    paths = [list(labels[rng.integers(0, 4, size=rng.integers(1, 5))]) for _ in range(40)]
    rate = [1 / (1 + np.exp(2.0 - sum(effect[c] for c in set(p)))) for p in paths]
    journeys = rng.integers(20, 60, size=40)
    conversions = rng.binomial(journeys, rate)
    # touch ages for the models that read them: one day apart, the last touch at the end
    ages = [[float(len(p) - 1 - i) for i in range(len(p))] for p in paths]
    return PathSet.from_lists(paths, conversions=conversions * scale,
                              value=conversions * 50.0 * scale,
                              nulls=(journeys - conversions) * scale, ages=ages)


@pytest.mark.parametrize("model", INTERVAL_MODELS)
def test_one_path_every_journey_takes_gives_a_zero_width_interval(model: str) -> None:
    # every resample is the data itself: 6 journeys on a > b, all converting
    paths = PathSet.from_lists([["a", "b"]], conversions=[6], value=[60], ages=[[1.0, 0.0]])
    got = credit_intervals(paths, model, replicates=10)
    assert got.conversions_low.tolist() == pytest.approx([3.0, 3.0])
    assert got.conversions_high.tolist() == pytest.approx([3.0, 3.0])
    assert got.value_low.tolist() == pytest.approx([30.0, 30.0])
    assert not got.flagged.any()


@pytest.mark.parametrize("model", INTERVAL_MODELS)
def test_the_estimate_lies_inside_its_interval(model: str) -> None:
    got = credit_intervals(_mixed_paths(), model, replicates=60, seed=3)
    assert (got.conversions_low <= got.conversions + 1e-9).all()
    assert (got.conversions <= got.conversions_high + 1e-9).all()
    assert (got.value_low <= got.value + 1e-6).all()
    assert (got.value <= got.value_high + 1e-6).all()


@pytest.mark.parametrize("model", INTERVAL_MODELS)
def test_ten_times_the_journeys_give_a_narrower_interval(model: str) -> None:
    small = credit_intervals(_mixed_paths(), model, replicates=60, seed=1)
    large = credit_intervals(_mixed_paths(10.0), model, replicates=60, seed=1)
    # widths as shares of all conversions shrink about as 1/sqrt(10)
    width_small = (small.conversions_high - small.conversions_low).sum() / small.conversions.sum()
    width_large = (large.conversions_high - large.conversions_low).sum() / large.conversions.sum()
    assert width_large < 0.5 * width_small


@pytest.mark.parametrize("model", sorted(REPLICATES))
def test_batched_replicates_match_a_refit_of_each_replicate(model: str) -> None:
    """Markov's batched replicates are exact; the logistic models' one Newton step lands
    within a fraction of the bootstrap's own spread (on 5,000 journeys; the step's error shrinks
    as 1/n, the spread as 1/sqrt(n): at 1M events it is 0.3 % of a credit)."""
    paths = distinct_paths(_mixed_paths(4.0))
    credits = run_model(paths, model)
    rng = np.random.default_rng(2)
    conversions = rng.poisson(paths.conversions[:, None], size=(paths.n_paths, 3)).astype(float)
    nulls = rng.poisson(paths.nulls[:, None], size=(paths.n_paths, 3)).astype(float)
    params = ({"regularisation": credits.info["regularisation"]}
              if model == "journey_counterfactual" else {})
    batch, batch_value = REPLICATES[model](paths, credits, **params)(
        conversions, nulls, conversions * 50.0)
    spread = credit_intervals(paths, model, params, replicates=40)
    width = (spread.conversions_high - spread.conversions_low).to_numpy()
    for b in range(3):
        refit = run_model(paths.with_counts(conversions[:, b], conversions[:, b] * 50.0,
                                            nulls[:, b]), model, params)
        tolerance = 1e-9 if model == "markov" else 0.15 * width
        assert np.all(np.abs(batch[b] - refit.conversions) <= tolerance + 1e-9)
        assert batch_value[b] == pytest.approx(batch[b] * 50.0)


@pytest.mark.parametrize("model", INTERVAL_MODELS)
def test_merged_paths_give_the_models_the_same_credits(model: str) -> None:
    if MODELS[model].needs_ages:  # merging would lose the ages: never merged
        assert sufficient_groups(_mixed_paths(), model) is None
        return
    paths = distinct_paths(_mixed_paths())
    group = sufficient_groups(paths, model)
    merged = merge_paths(paths, group) if group is not None else paths
    assert merged.n_paths <= paths.n_paths
    assert run_model(merged, model).conversions == pytest.approx(
        run_model(paths, model).conversions)


def test_distinct_paths_merges_identical_paths_only() -> None:
    paths = PathSet.from_lists([["a", "b"], ["b", "a"], ["a", "b"], ["a"]],
                               conversions=[1, 2, 3, 4], value=[10, 20, 30, 40],
                               nulls=[5, 6, 7, 8])
    merged = distinct_paths(paths)
    assert merged.to_frame().path.tolist() == ["a > b", "b > a", "a"]
    assert merged.conversions.tolist() == [4, 2, 4]
    assert merged.value.tolist() == [40, 20, 40]
    assert merged.nulls.tolist() == [12, 6, 8]


def test_one_draw_serves_every_model_and_keeps_the_journey_count() -> None:
    paths = hand_paths()
    drawn = resample(paths, replicates=7, seed=0)
    assert drawn.replicates == 7
    journeys = drawn.conversions.sum(axis=0) + drawn.nulls.sum(axis=0)
    assert journeys.tolist() == [139.0] * 7  # the hand case's journeys, every replicate
    # a path without non-converting journeys never draws one
    assert drawn.nulls[drawn.paths.to_frame().path.tolist().index("A > B")].sum() == 0
    a = credit_intervals(paths, "markov", resamples=drawn)
    b = credit_intervals(paths, "markov", replicates=7, seed=0)
    assert a.equals(b)


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sim")
    simulate(3_000, 3, out, fmt="ndjson")
    return out


def test_a_channel_without_effect_reaches_zero_and_is_flagged(simulated: Path) -> None:
    """display has no causal effect in the simulator (touchline/simulate/channels.py): under
    both counterfactual models its interval reaches zero credit and it is flagged, while the
    channels with the largest true effect are not."""
    paths = read_path_file(simulated / "paths.csv")
    for model in ("counterfactual", "journey_counterfactual"):
        got = credit_intervals(paths, model, replicates=60).set_index("channel")
        assert got.conversions_low["display"] <= 1e-3 * paths.total_conversions, model
        assert got.flagged["display"], model
        assert not got.flagged[["paid_search", "phone", "referral"]].any(), model


def test_time_decay_markov_replicates_keep_each_journeys_touch_ages() -> None:
    # two journeys on a > b, one with a a half-life old: merged into one path they would have
    # one set of ages; drawn as given, every replicate is credited with its own ages
    paths = PathSet.from_lists([["a", "b"], ["a", "b"], ["b"]], conversions=[5, 5, 2],
                               nulls=[1, 1, 6], ages=[[7.0, 0.0], [0.0, 0.0], [0.0]])
    resamples = resample(paths, replicates=4, seed=0, merge=False)
    assert resamples.paths.n_paths == 3 and resamples.paths.ages is not None
    got = credit_intervals(paths, "markov_time_decay", replicates=40, seed=0)
    assert (got.conversions_low <= got.conversions + 1e-9).all()
    assert (got.conversions <= got.conversions_high + 1e-9).all()
