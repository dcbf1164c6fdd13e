"""Hand-computed credits, model by model, on path sets small enough to check on paper."""

from __future__ import annotations

import numpy as np
import pytest
from attribution_cases import hand_paths

from touchline.attribution import MODELS, PathSet, attribute

# The case: A>B x10 (all convert), B x95 (5 convert), A x10 (convert), A>C x4
# (convert), C x20 (none). 29 conversions, 110 non-converting journeys, 10 revenue each.
#
# first_touch   A: 10 + 10 + 4 = 24, B: 5, C: 0
# last_touch    A: 10, B: 10 + 5 = 15, C: 4 (last_non_direct: no direct here, the same)
# linear        A>B and A>C split 1/2: A 5 + 10 + 2 = 17, B 5 + 5 = 10, C 2; two-touch paths
#               give position_based (40/40), w_shaped and full_path (milestones first and
#               last, nothing between) the same.
# j_shaped      2 touches 1/4, 3/4: A 2.5 + 10 + 1 = 13.5, B 7.5 + 5 = 12.5, C 3
# inverse_j     2 touches 3/4, 1/4: A 7.5 + 10 + 3 = 20.5, B 2.5 + 5 = 7.5, C 1
# markov        P(A→B) = 10/24, P(A→conv) = 10/24, P(A→C) = 4/24, P(B→conv) = 15/105 = 1/7,
#               P(C→conv) = 4/24 = 1/6; start: A 24, B 95, C 20 of 139.
#               P(conv) = (24·(10 + 10/7 + 4/6)/24 + 95/7 + 20/6)/139 = 29/139
#               without A: (95/7 + 20/6)/139 = (355/21)/139  → RE_A = 1 - 355/609 = 254/609
#               without B: (10 + 4/6 + 20/6)/139 = 14/139    → RE_B = 15/29 = 315/609
#               without C: (10 + 10/7 + 95/7)/139 = 25/139   → RE_C = 4/29 = 84/609
#               credits 29·RE/ΣRE with ΣRE = 653/609: A 7366/653, B 9135/653, C 2436/653
# shapley       coalition "conversions" splits each journey over its distinct channels: as
#               linear, 17 / 10 / 2.
#               coalition "conversion_rate": v(A) = 1, v(B) = 5/95, v(C) = 0, v(AB) = 25/115,
#               v(AC) = 14/34, v(BC) = 5/115, v(ABC) = 29/139;
#               φ_A = 1/3·1 + 1/6·(25/115 - 5/95) + 1/6·(14/34) + 1/3·(29/139 - 5/115)
#               and alike; credits = φ·139 (journeys): A 67.3417, B -24.0964, C -14.2453.
# ordered_shapley  the simplified (coalition "conversions") Shapley split by position: totals
#               as shapley, 17 / 10 / 2.
HAND_EXPECTED: list[tuple[str, dict[str, object], list[float]]] = [
    ("first_touch", {}, [24, 5, 0]),
    ("last_touch", {}, [10, 15, 4]),
    ("last_non_direct", {}, [10, 15, 4]),
    ("linear", {}, [17, 10, 2]),
    ("linear", {"dedupe": True}, [17, 10, 2]),
    ("position_based", {}, [17, 10, 2]),
    ("j_shaped", {}, [13.5, 12.5, 3]),
    ("inverse_j", {}, [20.5, 7.5, 1]),
    ("w_shaped", {}, [17, 10, 2]),
    ("full_path", {}, [17, 10, 2]),
    ("custom", {}, [17, 10, 2]),
    ("custom", {"first": 3.0, "last": 1.0}, [20.5, 7.5, 1]),
    ("custom", {"channel_weights": {"B": 0.0}}, [22, 5, 2]),  # B alone: all-zero → equal
    ("markov", {}, [7366 / 653, 9135 / 653, 2436 / 653]),
    ("shapley", {}, [17, 10, 2]),
    ("shapley", {"coalition": "conversion_rate"}, [67.3417, -24.0964, -14.2453]),
    ("ordered_shapley", {}, [17, 10, 2]),
]


@pytest.mark.parametrize(
    ("model", "params", "expected"),
    HAND_EXPECTED,
    ids=[f"{m}{p or ''}" for m, p, _ in HAND_EXPECTED],
)
def test_hand_case_matches_credits_worked_out_on_paper(
    model: str, params: dict[str, object], expected: list[float]
) -> None:
    credits = attribute(hand_paths(), model, **params)
    assert credits.channel.tolist() == ["A", "B", "C"]
    np.testing.assert_allclose(credits.conversions, expected, atol=1e-4)
    # revenue is 10 per conversion on every path, so it follows the conversions exactly
    np.testing.assert_allclose(credits.value, np.array(expected) * 10, atol=1e-3)


def test_hand_case_markov_removal_effects_are_exact_fractions() -> None:
    credits = attribute(hand_paths(), "markov")
    np.testing.assert_allclose(credits.removal_effect, [254 / 609, 315 / 609, 84 / 609], rtol=1e-12)
    assert credits.attrs["info"]["conversion_probability"] == pytest.approx(29 / 139, rel=1e-12)


def test_hand_case_counterfactual_keeps_single_channel_paths_and_favours_a() -> None:
    # B alone converts 5 times and A alone 10: those go to B and A whatever the fit. On A > B,
    # removing A leaves a B-only journey (5 % convert) while removing B leaves A (100 %), so A
    # takes nearly all of A > B and A > C: A 24 - ε, B 5 + ε, C ≈ 0.
    credits = attribute(hand_paths(), "counterfactual").set_index("channel").conversions
    assert credits.sum() == pytest.approx(29)
    assert 23 < credits["A"] <= 24 and 5 <= credits["B"] < 6 and 0 <= credits["C"] < 0.5


def test_every_registered_model_has_a_hand_case_or_a_timed_golden() -> None:
    # journey_counterfactual's hand cases are in test_journey_counterfactual.py, calibrated's
    # in test_calibrated.py, markov_time_decay's in test_richer_models.py
    covered = {model for model, _, _ in HAND_EXPECTED} | {
        "counterfactual", "journey_counterfactual", "time_decay", "calibrated",
        "markov_time_decay"}
    assert covered == set(MODELS)


# ---- 1- and 2-touch paths, repeats, all-direct, substring names ------------------------------


def _one(paths: PathSet, model: str, **params: object) -> dict[str, float]:
    frame = attribute(paths, model, **params)
    return dict(zip(frame.channel, frame.conversions.round(10), strict=True))


@pytest.mark.parametrize("model", sorted(MODELS))
def test_single_touch_path_gets_everything_under_every_model(model: str) -> None:
    paths = PathSet.from_lists([["A"]], conversions=[3], nulls=[1], ages=[[2.0]])
    assert _one(paths, model) == {"A": 3.0}


TWO_TOUCH = {
    "first_touch": {"A": 1.0, "B": 0.0},
    "last_touch": {"A": 0.0, "B": 1.0},
    "last_non_direct": {"A": 0.0, "B": 1.0},
    "linear": {"A": 0.5, "B": 0.5},
    "position_based": {"A": 0.5, "B": 0.5},
    "j_shaped": {"A": 0.25, "B": 0.75},
    "inverse_j": {"A": 0.75, "B": 0.25},
    "w_shaped": {"A": 0.5, "B": 0.5},
    "full_path": {"A": 0.5, "B": 0.5},
    "custom": {"A": 0.5, "B": 0.5},
    "markov": {"A": 0.5, "B": 0.5},
    "shapley": {"A": 0.5, "B": 0.5},
    "counterfactual": {"A": 0.5, "B": 0.5},  # no non-converting journey: equal split
    "journey_counterfactual": {"A": 0.5, "B": 0.5},  # the same
    "calibrated": {"A": 0.5, "B": 0.5},  # no experiments: counterfactual's
    "time_decay": {"A": 1 / 3, "B": 2 / 3},  # one half-life (7 days) apart
    "ordered_shapley": {"A": 0.5, "B": 0.5},  # A at position 1, B at 2
    "markov_time_decay": {"A": 0.5, "B": 0.5},  # one route: weights cannot change it
}


@pytest.mark.parametrize("model", sorted(MODELS))
def test_two_touch_path_splits_as_each_docstring_says(model: str) -> None:
    paths = PathSet.from_lists([["A", "B"]], conversions=[1], ages=[[7.0, 0.0]])
    got = _one(paths, model)
    assert got == pytest.approx(TWO_TOUCH[model], abs=1e-9)


REPEATS = {  # A > B > A, one conversion
    "first_touch": {"A": 1.0, "B": 0.0},
    "last_touch": {"A": 1.0, "B": 0.0},
    "linear": {"A": 2 / 3, "B": 1 / 3},
    "position_based": {"A": 0.8, "B": 0.2},
    "j_shaped": {"A": 0.8, "B": 0.2},
    "w_shaped": {"A": 0.9, "B": 0.1},  # milestones first and last are both A
    "full_path": {"A": 0.9, "B": 0.1},
    "markov": {"A": 2 / 3, "B": 1 / 3},  # RE_A = 1; without B, A→conv is 1/2: RE_B = 1/2
    "shapley": {"A": 0.5, "B": 0.5},
    "ordered_shapley": {"A": 0.5, "B": 0.5},  # ordered coalition (A, B)
}


@pytest.mark.parametrize("model", sorted(REPEATS))
def test_repeated_channel_counts_as_each_model_defines(model: str) -> None:
    paths = PathSet.from_lists([["A", "B", "A"]], conversions=[1])
    assert _one(paths, model) == pytest.approx(REPEATS[model], abs=1e-9)


def test_linear_dedupe_counts_a_repeated_channel_once() -> None:
    paths = PathSet.from_lists([["A", "B", "A"]], conversions=[1])
    assert _one(paths, "linear", dedupe=True) == pytest.approx({"A": 0.5, "B": 0.5})


def test_markov_drops_self_loops_so_repeats_change_nothing() -> None:
    plain = PathSet.from_lists([["A", "B"], ["B"]], conversions=[2, 1], nulls=[1, 3])
    repeated = PathSet.from_lists(
        [["A", "A", "B", "B", "B"], ["B", "B"]], conversions=[2, 1], nulls=[1, 3]
    )
    assert _one(plain, "markov") == pytest.approx(_one(repeated, "markov"))


def test_last_non_direct_skips_trailing_direct_but_keeps_all_direct_paths() -> None:
    paths = PathSet.from_lists(
        [["A", "direct"], ["direct", "direct"], ["B", "Direct", "direct"]], conversions=[1, 2, 4]
    )
    assert _one(paths, "last_non_direct") == {"A": 1.0, "B": 4.0, "Direct": 0.0, "direct": 2.0}
    assert _one(paths, "last_non_direct", ignore=["direct", "A"]) == {
        "A": 0.0,
        "B": 4.0,
        "Direct": 0.0,
        "direct": 3.0,
    }


def test_w_shaped_uses_lead_and_opportunity_touches_when_flagged() -> None:
    # A > B > C > D > E with lead at B (1) and opportunity at D (3): 30 % each to A, B, D,
    # 10 % shared by C and E; full path adds E as closing touch: 22.5 % x 4, C 10 %.
    paths = PathSet.from_lists(
        [list("ABCDE")], conversions=[1], lead_position=[1], opportunity_position=[3]
    )
    assert _one(paths, "w_shaped") == pytest.approx(
        {"A": 0.3, "B": 0.3, "C": 0.05, "D": 0.3, "E": 0.05}
    )
    assert _one(paths, "full_path") == pytest.approx(
        {"A": 0.225, "B": 0.225, "C": 0.1, "D": 0.225, "E": 0.225}
    )


def test_w_shaped_without_lead_touch_gives_first_and_opportunity_45_percent() -> None:
    paths = PathSet.from_lists(
        [list("ABCD")], conversions=[1], lead_position=[-1], opportunity_position=[2]
    )
    assert _one(paths, "w_shaped") == pytest.approx({"A": 0.45, "B": 0.05, "C": 0.45, "D": 0.05})


def test_position_based_spreads_the_middle_share() -> None:
    paths = PathSet.from_lists([list("ABCD")], conversions=[10])
    assert _one(paths, "position_based") == pytest.approx({"A": 4, "B": 1, "C": 1, "D": 4})
    assert _one(paths, "position_based", first=0.5, last=0.3) == pytest.approx(
        {"A": 5, "B": 1, "C": 1, "D": 3}
    )


def test_time_decay_halves_credit_per_half_life() -> None:
    paths = PathSet.from_lists([["A", "B", "C"]], conversions=[7], ages=[[4.0, 2.0, 0.0]])
    # weights 1/4, 1/2, 1 with a 2-day half-life: shares 1/7, 2/7, 4/7
    assert _one(paths, "time_decay", half_life_days=2.0) == pytest.approx(
        {"A": 1.0, "B": 2.0, "C": 4.0}
    )


def test_channel_named_as_substring_of_another_is_a_different_channel() -> None:
    # 'eta' is inside 'beta': string matching would count eta as present on beta's journeys
    paths = PathSet.from_lists([["beta"], ["eta"]], conversions=[3, 0], nulls=[1, 4])
    assert _one(paths, "shapley") == {"beta": 3.0, "eta": 0.0}
    # v(beta) = 3/4, v(eta) = 0, v(both) = 3/8: φ_beta = 9/16, φ_eta = -3/16; × 8 journeys
    assert _one(paths, "shapley", coalition="conversion_rate") == pytest.approx(
        {"beta": 4.5, "eta": -1.5}
    )
    assert _one(paths, "markov") == {"beta": 3.0, "eta": 0.0}
    assert _one(paths, "linear") == {"beta": 3.0, "eta": 0.0}


def test_markov_order_2_sees_that_c_before_b_never_converts() -> None:
    # A > B converts, C > B does not. Order 1 pools B: A and C share what B passes on
    # (A 1/4, B 1/2, C 1/4). Order 2 keeps (A,B) and (C,B) apart: C's removal costs nothing.
    paths = PathSet.from_lists([["A", "B"], ["C", "B"]], conversions=[1, 0], nulls=[0, 1])
    assert _one(paths, "markov") == pytest.approx({"A": 0.25, "B": 0.5, "C": 0.25})
    assert _one(paths, "markov", order=2) == pytest.approx({"A": 0.5, "B": 0.5, "C": 0.0})
