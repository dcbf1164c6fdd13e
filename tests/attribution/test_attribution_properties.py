"""Properties every registered model must keep, on random path sets (numpy layer only)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from attribution_cases import path_sets
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from touchline.attribution import MODELS, PathSet, attribute
from touchline.attribution import markov as markov_module
from touchline.attribution.markov import collapse_repeats
from touchline.attribution.shapley import shapley_from_values, subset_sums

PROPERTY_SETTINGS = settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
EVERY_MODEL = sorted(MODELS)
#: parameters that make a model a fixed function of the data's proportions: a penalty chosen
#: by cross-validation rightly weakens with twice the journeys, so doubling is tested at a
#: fixed one
FIXED_PENALTY: dict[str, dict[str, object]] = {"journey_counterfactual": {"regularisation": 1e-3}}


def _credits(paths: PathSet, model: str, **params: object) -> dict[str, tuple[float, float]]:
    frame = attribute(paths, model, **params)
    return {
        c: (v, w) for c, v, w in zip(frame.channel, frame.conversions, frame.value, strict=True)
    }


def _renamed(paths: PathSet, mapping: dict[str, str]) -> PathSet:
    names = np.array([mapping[str(label)] for label in paths.labels], dtype=object)
    lists = [list(names[paths.codes[a:b]]) for a, b in itertools.pairwise(paths.offsets)]
    ages = [list(paths.ages[a:b]) for a, b in itertools.pairwise(paths.offsets)]
    return PathSet.from_lists(
        lists,
        paths.conversions,
        paths.value,
        paths.nulls,
        ages=ages,
        lead_position=paths.lead_position,
        opportunity_position=paths.opportunity_position,
    )


@pytest.mark.parametrize("model", EVERY_MODEL)
@PROPERTY_SETTINGS
@given(paths=path_sets())
def test_credits_sum_to_total_conversions_and_value(model: str, paths: PathSet) -> None:
    credits = attribute(paths, model)
    if model == "markov" and paths.total_conversions == 0:
        assert credits.conversions.sum() == 0
        return
    assert credits.conversions.sum() == pytest.approx(paths.total_conversions, rel=1e-9, abs=1e-9)
    assert credits.value.sum() == pytest.approx(paths.total_value, rel=1e-9, abs=1e-7)


@pytest.mark.parametrize("model", EVERY_MODEL)
@PROPERTY_SETTINGS
@given(paths=path_sets())
def test_renaming_channels_permutes_the_credits(model: str, paths: PathSet) -> None:
    # a renaming that also reverses the sorted order, so internal codes change too
    mapping = {"a": "zz", "b": "y", "c": "x", "ab": "w", "direct": "direct"}
    before = _credits(paths, model)
    after = _credits(_renamed(paths, mapping), model)
    for label, (conversions, value) in before.items():
        assert after[mapping[label]] == pytest.approx((conversions, value), rel=1e-6, abs=1e-6)


@pytest.mark.parametrize("model", EVERY_MODEL)
@PROPERTY_SETTINGS
@given(paths=path_sets())
def test_duplicating_the_data_doubles_the_credits(model: str, paths: PathSet) -> None:
    doubled = paths.with_counts(paths.conversions * 2, paths.value * 2, paths.nulls * 2)
    fixed = FIXED_PENALTY.get(model, {})
    once, twice = _credits(paths, model, **fixed), _credits(doubled, model, **fixed)
    for label, (conversions, value) in once.items():
        assert twice[label] == pytest.approx((2 * conversions, 2 * value), rel=1e-6, abs=1e-6)


@pytest.mark.parametrize("model", ["first_touch", "last_touch", "linear",
                                   "journey_counterfactual", "ordered_shapley"])
@PROPERTY_SETTINGS
@given(paths=path_sets())
def test_channel_on_no_converting_path_gets_nothing(model: str, paths: PathSet) -> None:
    converting = set(paths.codes[np.isin(paths.row, np.flatnonzero(paths.conversions > 0))])
    credits = attribute(paths, model)
    for code, label in enumerate(paths.labels):
        if code not in converting:
            row = credits[credits.channel == label]
            assert float(row.conversions.iloc[0]) == 0.0


@pytest.mark.parametrize("model", EVERY_MODEL)
@PROPERTY_SETTINGS
@given(paths=path_sets(max_rows=4))
def test_channels_that_swap_symmetrically_get_equal_credit(model: str, paths: PathSet) -> None:
    swap = {"a": "b", "b": "a", "c": "c", "ab": "ab", "direct": "direct"}
    mirrored = _renamed(paths, {k: swap[k] for k in map(str, paths.labels)})
    both = _concat(paths, mirrored)
    credits = _credits(both, model)
    if "a" in credits and "b" in credits:
        assert credits["a"] == pytest.approx(credits["b"], rel=1e-6, abs=1e-6)


def _concat(first: PathSet, second: PathSet) -> PathSet:
    def lists(p: PathSet) -> list[list[str]]:
        return [list(p.labels[p.codes[a:b]]) for a, b in itertools.pairwise(p.offsets)]

    def ages(p: PathSet) -> list[list[float]]:
        return [list(p.ages[a:b]) for a, b in itertools.pairwise(p.offsets)]

    return PathSet.from_lists(
        lists(first) + lists(second),
        np.concatenate([first.conversions, second.conversions]),
        np.concatenate([first.value, second.value]),
        np.concatenate([first.nulls, second.nulls]),
        ages=ages(first) + ages(second),
    )


RULES = [
    "first_touch",
    "last_touch",
    "last_non_direct",
    "linear",
    "position_based",
    "j_shaped",
    "inverse_j",
    "w_shaped",
    "full_path",
    "custom",
]


@pytest.mark.parametrize("model", RULES)
@PROPERTY_SETTINGS
@given(paths=path_sets(), dedupe=st.booleans())
def test_rule_weights_per_path_equal_the_per_touch_weights(
    model: str, paths: PathSet, dedupe: bool
) -> None:
    params: dict[str, object] = {"dedupe": dedupe} if model == "linear" else {}
    if model == "custom":
        params = {"first": 2.0, "middle": 0.5, "channel_weights": {"a": 0.0, "b": 3.0}}
    credits = MODELS[model].function(paths, **params)
    weights = credits.rule.touch_weights(paths)
    sums = np.bincount(paths.row, weights, minlength=paths.n_paths)
    np.testing.assert_allclose(sums, 1.0, atol=1e-12)
    assert (weights >= -1e-15).all()
    per_touch = np.bincount(
        paths.codes, weights * paths.conversions[paths.row], minlength=paths.n_labels
    )
    np.testing.assert_allclose(credits.conversions, per_touch, atol=1e-9)


# ---- Shapley: efficiency, and equality with brute force over permutations -------------------


def _brute_force_shapley(v: dict[frozenset[int], float], n: int) -> list[float]:
    phi = [0.0] * n
    orders = list(itertools.permutations(range(n)))
    for order in orders:
        members: set[int] = set()
        for player in order:
            before = v[frozenset(members)]
            members.add(player)
            phi[player] += v[frozenset(members)] - before
    return [x / len(orders) for x in phi]


@PROPERTY_SETTINGS
@given(values=st.lists(st.floats(-10, 10), min_size=16, max_size=16))
def test_exact_shapley_of_any_game_equals_brute_force_and_is_efficient(
    values: list[float],
) -> None:
    n = 4
    v = np.array(values)
    v[0] = 0.0
    game = {frozenset(i for i in range(n) if mask >> i & 1): v[mask] for mask in range(2**n)}
    phi = shapley_from_values(v, n)
    np.testing.assert_allclose(phi, _brute_force_shapley(game, n), atol=1e-9)
    assert phi.sum() == pytest.approx(v[-1] - v[0], abs=1e-9)


def test_subset_sums_add_every_subset() -> None:
    f = np.arange(8, dtype=float)
    g = subset_sums(f, 3)
    assert g.tolist() == [sum(f[t] for t in range(8) if t & s == t) for s in range(8)]


@PROPERTY_SETTINGS
@given(paths=path_sets(with_ages=False))
def test_shapley_conversion_rate_is_efficient_and_may_go_negative(paths: PathSet) -> None:
    credits = attribute(paths, "shapley", coalition="conversion_rate")
    journeys = paths.conversions.sum() + paths.nulls.sum()
    if journeys:
        assert credits.shapley_value.sum() == pytest.approx(paths.total_conversions / journeys)


def test_sampled_shapley_agrees_with_exact_within_its_stated_error() -> None:
    rng = np.random.default_rng(3)
    labels = [f"ch{i}" for i in range(7)]
    lists = [list(rng.choice(labels, size=rng.integers(1, 5))) for _ in range(60)]
    paths = PathSet.from_lists(lists, rng.integers(0, 5, 60), nulls=rng.integers(0, 20, 60))
    exact = attribute(paths, "shapley", coalition="conversion_rate")
    sampled = attribute(
        paths, "shapley", coalition="conversion_rate", max_exact=3, permutations=4000, seed=1
    )
    assert sampled.attrs["info"]["method"] == "sampled"
    z = np.abs(sampled.conversions - exact.conversions) / sampled.std_error
    assert z.max() < 4.5  # 7 channels: a 4.5-sigma miss is a bug, not bad luck


# ---- Markov order 1 against an independent dense computation --------------------------------


def _dense_markov(paths: PathSet) -> np.ndarray:
    """Removal effects from a dense matrix built path by path, with 'removal' done by
    redirecting every transition into the removed channel to (null)."""
    k = paths.n_labels
    start, conversion, null = k, k + 1, k + 2
    counts = np.zeros((k + 3, k + 3))
    for i, (a, b) in enumerate(itertools.pairwise(paths.offsets)):
        walk = [int(c) for c in paths.codes[a:b]]
        walk = [c for j, c in enumerate(walk) if j == 0 or c != walk[j - 1]]
        n = paths.conversions[i] + paths.nulls[i]
        for src, dst in itertools.pairwise([start, *walk]):
            counts[src, dst] += n
        counts[walk[-1], conversion] += paths.conversions[i]
        counts[walk[-1], null] += paths.nulls[i]

    def p_conversion(removed: int | None) -> float:
        c = counts.copy()
        if removed is not None:
            c[:, null] += c[:, removed]
            c[:, removed] = 0
        rows = c.sum(1, keepdims=True)
        p = np.divide(c, rows, out=np.zeros_like(c), where=rows > 0)
        transient = list(range(k + 1))
        q = p[np.ix_(transient, transient)]
        x = np.linalg.lstsq(np.eye(k + 1) - q, p[transient, conversion], rcond=None)[0]
        return float(x[start])

    base = p_conversion(None)
    return np.array([1 - p_conversion(c) / base for c in range(k)])


@PROPERTY_SETTINGS
@given(paths=path_sets(with_ages=False))
def test_markov_order_1_equals_a_dense_reference(paths: PathSet) -> None:
    if paths.total_conversions == 0:
        return
    credits = attribute(paths, "markov")
    effects = _dense_markov(paths)
    np.testing.assert_allclose(credits.removal_effect, effects, atol=1e-9)
    np.testing.assert_allclose(
        credits.conversions, effects / effects.sum() * paths.total_conversions, atol=1e-9
    )


def test_collapse_repeats_keeps_path_boundaries() -> None:
    paths = PathSet.from_lists([["a", "a", "b"], ["b", "b"], ["b", "a", "a"]], [1, 1, 1])
    codes, row, offsets = collapse_repeats(paths)
    assert codes.tolist() == [0, 1, 1, 1, 0] and row.tolist() == [0, 0, 1, 2, 2]
    assert offsets.tolist() == [0, 2, 3, 5]


@pytest.mark.parametrize("order", [2, 3, 4])
@PROPERTY_SETTINGS
@given(paths=path_sets(with_ages=False))
def test_higher_order_markov_credits_sum_to_totals(order: int, paths: PathSet) -> None:
    credits = attribute(paths, "markov", order=order)
    expected = paths.total_conversions
    assert credits.conversions.sum() == pytest.approx(expected, abs=1e-9)
    assert ((credits.removal_effect >= 0) & (credits.removal_effect <= 1 + 1e-12)).all()
    assert not math.isnan(credits.attrs["info"]["conversion_probability"])


def test_iterative_solve_of_large_chains_matches_sparse_lu(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(5)
    labels = [f"ch{i}" for i in range(6)]
    lists = [list(rng.choice(labels, size=rng.integers(1, 7))) for _ in range(300)]
    paths = PathSet.from_lists(lists, rng.integers(0, 4, 300), nulls=rng.integers(0, 9, 300))
    direct = attribute(paths, "markov", order=3)
    monkeypatch.setattr(markov_module, "DIRECT_SOLVE_MAX_STATES", 0)
    iterative = attribute(paths, "markov", order=3)
    np.testing.assert_allclose(iterative.removal_effect, direct.removal_effect, atol=1e-10)
