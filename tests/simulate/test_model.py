"""The causal model: removing a channel never helps anyone; zero-effect channels add nothing."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sim_kit import Output

from touchline.simulate import channels, journeys, model, population

N_CHANNELS = len(channels.NAMES)


def _chunk(b2b: bool, seed: int) -> journeys.Journeys:
    rng = np.random.default_rng(seed)
    units = 400
    sizes = population.account_sizes(2_000, units, rng) if b2b else np.ones(units, np.int64)
    pop = population.build_population(rng, first_person=0, unit_global=np.arange(units),
                                      unit_sizes=sizes, b2b=b2b)
    return journeys.build_journeys(
        pop, rng, params=channels.parameters(b2b=b2b),
        constants=model.B2B_MODEL if b2b else model.B2C_MODEL,
        timing=journeys.B2B_TIMING if b2b else journeys.B2C_TIMING)


@pytest.mark.parametrize("b2b", [False, True], ids=["b2c", "b2b"])
def test_removing_a_channel_never_converts_anyone_more(b2b: bool) -> None:
    chunk = _chunk(b2b, seed=3)
    factual, without = chunk.outcome, chunk.counterfactuals
    assert not (without.converted & ~factual.converted[:, None]).any()
    assert (without.probability <= factual.probability[:, None] + 1e-12).all()
    assert (without.revenue <= factual.revenue[:, None] + 1e-9).all()


@pytest.mark.parametrize("b2b", [False, True], ids=["b2c", "b2b"])
def test_zero_effect_channels_change_no_outcome(b2b: bool) -> None:
    chunk = _chunk(b2b, seed=4)
    for name in ("display", "organic_social", "direct"):
        c = channels.INDEX[name]
        assert (chunk.counterfactuals.converted[:, c] == chunk.outcome.converted).all()
        assert (chunk.counterfactuals.revenue[:, c] == chunk.outcome.revenue).all()


def test_truth_reports_non_negative_and_exactly_zero_increments(b2c: Output) -> None:
    per_channel = b2c.truth["channels"]
    zero = set(b2c.truth["model"]["zero_effect_channels"])
    assert zero == {"display", "organic_social", "direct"}
    for name, truth in per_channel.items():
        assert truth["incremental_conversions"] >= 0
        assert truth["incremental_revenue"] >= 0
        if name in zero:
            assert truth["incremental_conversions"] == 0.0
            assert truth["incremental_revenue"] == 0.0
    assert per_channel["paid_search"]["incremental_conversions"] > 0


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    effects=st.lists(st.floats(0, 2), min_size=N_CHANNELS, max_size=N_CHANNELS),
    lifts=st.lists(st.floats(0, 1), min_size=N_CHANNELS, max_size=N_CHANNELS),
)
def test_any_non_negative_effects_keep_removal_harmless(
    seed: int, effects: list[float], lifts: list[float]
) -> None:
    rng = np.random.default_rng(seed)
    exposures = rng.poisson(1.0, (200, N_CHANNELS))
    follow_ups = rng.binomial(np.minimum(exposures, exposures[:, [channels.DIRECT]]), 0.3)
    follow_ups[:, channels.DIRECT] = 0
    retention = rng.poisson(0.5, (200, N_CHANNELS))
    params = channels.parameters(b2b=False)
    params.update(effect=np.array(effects), value_lift=np.array(lifts),
                  retention_effect=np.array(effects[::-1]))
    draws = model.draw(rng, 200, model.B2C_MODEL)
    factual = model.outcome(exposures, retention, draws, params, model.B2C_MODEL)
    without = model.counterfactuals(exposures, follow_ups, retention, draws, params,
                                    model.B2C_MODEL)
    assert not (without.converted & ~factual.converted[:, None]).any()
    assert (without.revenue <= factual.revenue[:, None] + 1e-9).all()


def test_counterfactual_removes_the_direct_visits_a_channel_caused() -> None:
    exposures = np.zeros((1, N_CHANNELS), np.int64)
    exposures[0, channels.PAID_SEARCH] = 3
    exposures[0, channels.DIRECT] = 5
    follow_ups = np.zeros_like(exposures)
    follow_ups[0, channels.PAID_SEARCH] = 2
    without, _ = model.without_channel(exposures, follow_ups, np.zeros_like(exposures),
                                       channels.PAID_SEARCH)
    assert without[0, channels.PAID_SEARCH] == 0
    assert without[0, channels.DIRECT] == 3
