"""journey_counterfactual by hand, its features, and ``auto`` choosing a model family."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from touchline.attribution import PathSet, attribute
from touchline.attribution.journey_counterfactual import (
    effective_journeys,
    navigational_mask,
    without_label,
)
from touchline.attribution.select import choose_model, split_journeys
from touchline.errors import ConfigError

#: so small that the saturated fits below reproduce each distinct path's observed rate
EXACT = 1e-9


def _credits(paths: PathSet, **params: object) -> dict[str, float]:
    frame = attribute(paths, "journey_counterfactual", regularisation=EXACT, **params)
    return dict(zip(frame.channel, frame.conversions, strict=True))


def test_two_channels_split_by_their_probability_of_necessity() -> None:
    # rates A 10 %, B 20 %, A > B 40 %: a saturated fit gives them back. On A > B, without A
    # the journey is B (0.2): PN_A = (0.4 - 0.2) / 0.4 = 1/2; without B: PN_B = 0.3 / 0.4 = 3/4.
    # Lost: A 10 (alone) + 40 · 1/2 = 30, B 20 + 40 · 3/4 = 50; rescaled to the 70 conversions.
    paths = PathSet.from_lists([["A"], ["B"], ["A", "B"]], conversions=[10, 20, 40],
                               value=[100, 200, 800], nulls=[90, 80, 60])
    frame = attribute(paths, "journey_counterfactual", regularisation=EXACT)
    assert frame.conversions.tolist() == pytest.approx([30 * 70 / 80, 50 * 70 / 80], abs=1e-4)
    # revenue: A 100 + 800 · 1/2 = 500, B 200 + 800 · 3/4 = 800; rescaled to 1,100
    assert frame.value.tolist() == pytest.approx([500 * 1100 / 1300, 800 * 1100 / 1300],
                                                 abs=1e-3)


NAVIGATIONAL_CASE = PathSet.from_lists(
    [["A"], ["B"], ["direct"], ["A", "direct"]], conversions=[10, 20, 5, 8], nulls=[90, 80, 95, 2])


def test_navigational_last_direct_is_a_symptom_and_gets_nothing() -> None:
    # rule on: A > direct is the journey A plus a symptom; every journey then has one channel,
    # so each conversion goes to it: A 10 + 8, B 20, direct 5 (a direct-only journey is kept)
    assert _credits(NAVIGATIONAL_CASE) == pytest.approx({"A": 18, "B": 20, "direct": 5}, abs=1e-4)


def test_without_the_navigational_rule_direct_shares_the_journey() -> None:
    # rates A .1, direct .05, A > direct .8. PN_A = (.8 - .05) / .8, PN_direct = (.8 - .1) / .8:
    # lost A 10 + 7.5 = 17.5, B 20, direct 5 + 7 = 12; rescaled to the 43 conversions
    got = _credits(NAVIGATIONAL_CASE, navigational_rule=False)
    scale = 43 / 49.5
    assert got == pytest.approx({"A": 17.5 * scale, "B": 20 * scale, "direct": 12 * scale},
                                abs=1e-4)


def test_navigational_touch_is_only_a_last_touch_after_earlier_ones() -> None:
    paths = PathSet.from_lists([["Direct"], ["a", "Direct"], ["direct", "a"], ["a", "brand"]],
                               conversions=[1, 1, 1, 1])
    mask = navigational_mask(paths, ["direct", "brand"])
    assert mask.tolist() == [False, False, True, False, False, False, True]


def test_removing_a_channel_updates_first_touch_and_recency() -> None:
    paths = PathSet.from_lists([["a", "a", "b", "c", "b"]], conversions=[1])
    journeys = effective_journeys(paths, None)
    assert journeys.counts.tolist() == [[2, 2, 1]]
    assert journeys.first.tolist() == [0] and journeys.second_first.tolist() == [1]
    assert journeys.rank.tolist() == [[2, 0, 1]]  # b last, then c, then a
    without_a = without_label(journeys, np.array([0]), 0)
    assert without_a.first.tolist() == [1] and without_a.counts.tolist() == [[0, 2, 1]]
    without_b = without_label(journeys, np.array([0]), 1)
    assert without_b.rank[0, [0, 2]].tolist() == [1, 0]  # c is now last, a next


def test_unknown_feature_names_the_choices() -> None:
    with pytest.raises(ConfigError, match="choose from exposure, first_touch, recency"):
        attribute(NAVIGATIONAL_CASE, "journey_counterfactual", features=["recent"])


def test_penalty_is_chosen_by_leave_one_out_likelihood_from_the_grid() -> None:
    info = attribute(NAVIGATIONAL_CASE, "journey_counterfactual").attrs["info"]
    assert info["regularisation"] in (1e-1, 3e-2, 1e-2, 3e-3, 1e-3, 3e-4, 1e-4, 1e-5)
    assert 0 < info["loo_log_loss"] < np.log(2)


# ---- auto ------------------------------------------------------------------------------------


def _last_pair_paths() -> PathSet:
    """Conversion decided jointly by the last two touches: A then C or B then D convert 80 %,
    the reverse orders and every other pair 10 %. An additive model of the touches (channel
    set, counts, first touch, recency) cannot express that; a second-order chain can."""
    paths, conversions, nulls = [], [], []
    for prefix in ("E", "F", "G"):
        for last in itertools.permutations("ABCD", 2):
            good = last in (("A", "C"), ("B", "D"))
            paths.append([prefix, *last])
            conversions.append(64 if good else 8)
            nulls.append(16 if good else 72)
    return PathSet.from_lists(paths, conversions=conversions, nulls=nulls)


def test_auto_picks_markov_when_the_last_two_touches_decide() -> None:
    choice = choose_model(_last_pair_paths())
    assert choice.model == "markov" and choice.params["order"] >= 2
    assert choice.reason.startswith(f"picked {choice.label}: lowest held-out log-loss")
    assert choice.scores.held_out_log_loss.is_monotonic_increasing


def _additive_paths() -> PathSet:
    """Conversion additive in the channels present (logit), paths of 3-5 touches in every
    order, so a chain's last states carry little of it."""
    lift = dict(zip("ABCDEF", (1.2, 0.9, 0.5, 0.2, 0.0, -0.2), strict=True))
    paths, conversions, nulls = [], [], []
    for size in (3, 4):
        for touches in itertools.permutations("ABCDEF", size):
            p = 1 / (1 + np.exp(-(-2.5 + sum(lift[t] for t in touches))))
            paths.append(list(touches))
            conversions.append(round(20 * p))
            nulls.append(20 - round(20 * p))
    return PathSet.from_lists(paths, conversions=conversions, nulls=nulls)


def test_auto_picks_a_logistic_model_when_channels_add_up() -> None:
    # the generating model is a logistic in the channel set: both counterfactual models hold
    # it (which one wins is a matter of the penalty), every chain is far behind
    choice = choose_model(_additive_paths())
    assert choice.model in ("counterfactual", "journey_counterfactual")
    best_markov = choice.scores[choice.scores.model == "markov"].held_out_log_loss.min()
    assert choice.scores.held_out_log_loss[0] < best_markov - 0.01


def test_split_keeps_every_journey_once() -> None:
    paths = _last_pair_paths()
    train, test, _ = split_journeys(paths, 0.25, seed=3)
    np.testing.assert_array_equal(train.conversions + test.conversions, paths.conversions)
    np.testing.assert_array_equal(train.nulls + test.nulls, paths.nulls)
    held = (test.conversions.sum() + test.nulls.sum()) / (paths.total_conversions
                                                         + paths.nulls.sum())
    assert 0.2 < held < 0.3


def test_cli_model_auto_says_what_it_picked_and_why(tmp_path: pytest.TempPathFactory) -> None:
    from touchline.cli import app

    file = tmp_path / "paths.csv"  # type: ignore[operator]
    paths = _last_pair_paths()
    file.write_text(paths.to_frame().to_csv(index=False))
    result = CliRunner().invoke(app, ["attribute", "--paths", str(file), "--model", "auto",
                                      "--format", "json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["model"] == "markov"
    assert document["auto"]["picked"].startswith("markov(order=")
    assert document["auto"]["split"] == "seeded journey-level split"
    assert len(document["auto"]["candidates"]) == 8
    assert sum(c["conversions"] for c in document["channels"]) == pytest.approx(
        paths.total_conversions)


def test_weighted_gram_by_syrk_equals_the_general_product() -> None:
    """X' diag(w) X as (sqrt(w) X)'(sqrt(w) X): the same matrix as the general product, dense
    or sparse; a negative weight (never a Hessian's) takes the general product."""
    from scipy import sparse

    from touchline.attribution.counterfactual import weighted_gram

    x = np.array([[1.0, 0.0, 2.0], [1.0, 3.0, 0.0], [1.0, 1.0, 1.0]])
    w = np.array([0.5, 2.0, 0.0])
    # by hand: sum_i w_i x_i x_i'
    expected = np.array([[2.5, 6.0, 1.0], [6.0, 18.0, 0.0], [1.0, 0.0, 2.0]])
    np.testing.assert_allclose(weighted_gram(x, w), expected, rtol=1e-15)
    np.testing.assert_allclose(weighted_gram(sparse.csr_matrix(x), w), expected, rtol=1e-15)
    signed = np.array([0.5, -2.0, 0.0])
    np.testing.assert_allclose(weighted_gram(x, signed), x.T @ (x * signed[:, None]))


def test_rows_without_journeys_do_not_change_the_fit() -> None:
    """fit_conversion drops distinct rows of weight zero (auto's held-out paths): the fit is
    the one on the weighted paths alone."""
    from touchline.attribution.journey_counterfactual import (
        FEATURES,
        design,
        effective_journeys,
        fit_conversion,
    )

    ps = PathSet.from_lists([["a", "b"], ["b"], ["a"], ["c", "a"], ["b", "c", "c"]],
                            conversions=[3, 1, 2, 0, 1], nulls=[2, 4, 3, 5, 2])
    kept = PathSet.from_lists([["a", "b"], ["b"], ["a"]], conversions=[3, 1, 2], nulls=[2, 4, 3])
    # the last two paths weigh nothing: the fit must equal the one on the first three
    with_zero = fit_conversion(effective_journeys(ps, None), np.array([3, 1, 2, 0, 0.0]),
                               np.array([2, 4, 3, 0, 0.0]), features=FEATURES,
                               regularisation=1e-2)
    alone = fit_conversion(effective_journeys(kept, None), kept.conversions, kept.nulls,
                           features=FEATURES, regularisation=1e-2)
    assert with_zero.intercept == pytest.approx(alone.intercept, abs=1e-12)
    # columns per block (presence, exposure, first touch, recency) are a, b, c against a, b;
    # then log length and the symptom flag. Channel c, in no weighted path, stays at zero
    three = [0, 1, 3, 4, 6, 7, 9, 10, 12, 13]
    # and it is the optimum on the weighted journeys: the penalised mean log-loss's gradient
    # X'(n p - y) / N + lambda beta (intercept unpenalised) vanishes, every path counted
    x = design(effective_journeys(ps, None), FEATURES)
    positives, negatives = np.array([3, 1, 2, 0, 0.0]), np.array([2, 4, 3, 0, 0.0])
    p = 1 / (1 + np.exp(-(with_zero.intercept + x @ with_zero.coefficients)))
    residual = negatives * p - positives * (1 - p)
    total = positives.sum() + negatives.sum()
    gradient = np.r_[residual.sum(), x.T @ residual] / total + 1e-2 * np.r_[
        0.0, with_zero.coefficients]
    np.testing.assert_allclose(gradient, 0.0, atol=1e-10)
    np.testing.assert_allclose(with_zero.coefficients[three], alone.coefficients, atol=1e-10)
    np.testing.assert_allclose(with_zero.coefficients[[2, 5, 8, 11]], 0.0, atol=1e-12)
