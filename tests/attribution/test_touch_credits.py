"""Per-touch credits of data-driven models: each path keeps its conversions and each label
the model's credit (property tests), and the hand-computed small cases."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from touchline.attribution.paths import PathSet
from touchline.attribution.touch_credits import split_label_credits

LABELS = ["a", "b", "c", "d"]
paths_strategy = st.lists(
    st.tuples(st.lists(st.sampled_from(LABELS), min_size=1, max_size=5),
              st.integers(0, 3)),
    min_size=1, max_size=8,
).filter(lambda rows: any(conv for _, conv in rows))


@settings(max_examples=80, deadline=None)
@given(rows=paths_strategy, data=st.data())
def test_feasible_credits_keep_both_totals(rows, data) -> None:  # type: ignore[no-untyped-def]
    paths = PathSet.from_lists([p for p, _ in rows], conversions=[c for _, c in rows])
    # a feasible target: any split of each path's conversions over its own touches
    raw = np.array(data.draw(st.lists(st.floats(0.01, 1.0), min_size=len(paths.codes),
                                      max_size=len(paths.codes))))
    shares = raw / np.bincount(paths.row, raw)[paths.row]
    target = np.bincount(paths.codes, shares * paths.conversions[paths.row],
                         minlength=paths.n_labels)
    got = split_label_credits(paths, paths.conversions, target)
    assert np.allclose(np.bincount(paths.row, got, minlength=paths.n_paths), paths.conversions,
                       atol=1e-7)
    assert np.allclose(np.bincount(paths.codes, got, minlength=paths.n_labels), target,
                       atol=1e-7)
    assert np.all(got[paths.conversions[paths.row] == 0] == 0)  # no credit without conversion


@settings(max_examples=60, deadline=None)
@given(rows=paths_strategy, weights=st.lists(st.floats(-0.5, 2.0), min_size=4, max_size=4))
def test_any_credits_keep_each_paths_conversions(rows, weights) -> None:  # type: ignore[no-untyped-def]
    """Even when no split keeps both totals (a label's credit exceeds what its paths hold),
    every path keeps its conversions and the whole keeps the model's total."""
    paths = PathSet.from_lists([p for p, _ in rows], conversions=[c for _, c in rows])
    present = np.bincount(paths.codes, paths.conversions[paths.row] > 0,
                          minlength=paths.n_labels) > 0
    w = np.array(weights[: paths.n_labels]) * present
    if not w.sum():
        w = present.astype(float)
    target = w / w.sum() * paths.total_conversions  # a model's credits sum to the total
    got = split_label_credits(paths, paths.conversions, target)
    assert np.allclose(np.bincount(paths.row, got, minlength=paths.n_paths), paths.conversions,
                       atol=1e-7)
    assert np.isclose(got.sum(), paths.total_conversions)


def test_credit_no_converting_path_holds_is_measured_and_paths_stay_whole() -> None:
    from touchline.attribution.touch_credits import unplaced_credit

    # Markov-like: "x" only ever leads into a path that did not convert, yet gets credit
    paths = PathSet.from_lists([["a"], ["x", "a"]], conversions=[2, 0], nulls=[0, 3])
    credit = np.array([1.5, 0.5])  # labels a, x
    assert unplaced_credit(paths, credit) == {"x": 0.5}
    got = split_label_credits(paths, paths.conversions, credit)
    assert np.allclose(got, [2.0, 0.0, 0.0])  # the converting path keeps its 2 conversions


def test_one_label_paths_keep_their_conversions_and_repeats_share_equally() -> None:
    paths = PathSet.from_lists([["a", "b"], ["a"], ["b", "c", "b"], ["c"]],
                               conversions=[1, 1, 1, 0])
    got = split_label_credits(paths, paths.conversions, np.array([1.2, 1.1, 0.7]))
    # by hand: [a] must give a 1, so the (a, b) path gives a 0.2 and b 0.8; b's other 0.3
    # and c's 0.7 fill (b, c, b), b's 0.3 split over its two touches
    assert np.allclose(got, [0.2, 0.8, 1.0, 0.15, 0.7, 0.15, 0.0])
