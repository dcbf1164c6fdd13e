r"""``auto``: choose the data-driven model by how well it predicts held-out journeys.

No truth is read: every candidate is a model of *whether a journey converts given its path*,
fitted on a training share of the user's own journeys and scored on the rest by the mean
held-out log-loss per journey (lower is better),

.. math:: \ell = -\frac{1}{|T|}\sum_{j \in T} \bigl(y_j \log \hat p(x_j) + (1 - y_j)
          \log(1 - \hat p(x_j))\bigr),

with :math:`\hat p` clipped to :math:`[10^{-6}, 1 - 10^{-6}]`. The split: aggregated paths
carry no times, so each distinct path's converting and non-converting journeys are split at
random (binomially, ``holdout`` of them held out, fixed ``seed``): a *seeded journey-level
split*, the same on every run. The candidates (:data:`CANDIDATES`) and what each predicts:

* ``journey_counterfactual`` with each feature set (all features; exposure only; channel set
  only): its logistic model, :math:`\lambda` chosen on the training part as in the model;
* ``counterfactual``: its logistic model on the channel set and :math:`\log n`;
* ``markov`` of order 1-4: the chain's probability of ``(conversion)`` rather than ``(null)``
  from the path's last state (the last :math:`k` touches, repeats collapsed), smoothed towards
  the overall rate by one journey's weight; these are exactly the chain's transition counts
  into the two absorbing states.

The winner is then run on all journeys. The navigational rule is *not* a candidate setting: a
symptom predicts conversion as well as a cause does, so likelihood cannot tell them apart;
it is an assumption, stated in ``docs/attribution.md``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from touchline.attribution.counterfactual import REGULARISATION_DEFAULT
from touchline.attribution.journey_counterfactual import (
    FEATURES,
    NAVIGATIONAL_DEFAULT,
    effective_journeys,
    fit_conversion,
)
from touchline.attribution.markov import ORDER_MAX, collapse_repeats
from touchline.attribution.paths import PathSet
from touchline.attribution.registry import Credits
from touchline.errors import ConfigError, InputError

log = logging.getLogger(__name__)

HOLDOUT_DEFAULT = 0.25
SEED_DEFAULT = 0
PROBABILITY_FLOOR = 1e-6
SPLIT_SEEDED = "seeded journey-level split"

Predictor = Callable[[PathSet, PathSet], np.ndarray]


@dataclass(frozen=True)
class Candidate:
    """One model and its settings, with how to predict conversion from a training part."""

    model: str
    params: Mapping[str, Any]
    predict: Predictor

    @property
    def label(self) -> str:
        settings = ", ".join(f"{k}={_show(v)}" for k, v in self.params.items())
        return f"{self.model}({settings})" if settings else self.model


def _show(value: Any) -> str:
    if isinstance(value, tuple | list):
        return "+".join(map(str, value)) or "none"
    return str(value)


def _logistic(*, features: tuple[str, ...], regularisation: float | None,
              navigational_rule: bool) -> Predictor:
    def predict(train: PathSet, every: PathSet) -> np.ndarray:
        journeys = effective_journeys(
            every, NAVIGATIONAL_DEFAULT if navigational_rule else None)
        fit = fit_conversion(journeys, train.conversions, train.nulls, features=features,
                             regularisation=regularisation)
        return fit.probability(journeys)

    return predict


def last_state_keys(paths: PathSet, order: int) -> np.ndarray:
    """Per path, an integer key of its last ``order`` touches with repeats collapsed."""
    codes, _, offsets = collapse_repeats(paths)
    base = paths.n_labels + 1
    keys = np.zeros(paths.n_paths, np.int64)
    ends = offsets[1:]
    for back in range(1, order + 1):
        position = ends - back
        inside = position >= offsets[:-1]
        digit = np.where(inside, codes[np.clip(position, 0, max(len(codes) - 1, 0))] + 1, 0)
        keys += digit * base ** (back - 1)
    return keys


def _markov(order: int) -> Predictor:
    def predict(train: PathSet, every: PathSet) -> np.ndarray:
        keys = last_state_keys(every, order)
        _, state = np.unique(keys, return_inverse=True)
        state = state.ravel()
        converted = np.bincount(state, train.conversions)
        journeys = converted + np.bincount(state, train.nulls)
        rate = train.conversions.sum() / max(train.conversions.sum() + train.nulls.sum(), 1e-12)
        return ((converted + rate) / (journeys + 1.0))[state]

    return predict


CANDIDATES: tuple[Candidate, ...] = (
    *(Candidate("journey_counterfactual", {"features": features},
                _logistic(features=features, regularisation=None, navigational_rule=True))
      for features in (FEATURES, ("exposure",), ())),
    Candidate("counterfactual", {}, _logistic(features=(), regularisation=REGULARISATION_DEFAULT,
                                              navigational_rule=False)),
    *(Candidate("markov", {"order": order}, _markov(order)) for order in range(1, ORDER_MAX + 1)),
)


@dataclass(frozen=True)
class Choice:
    """What ``auto`` picked, its credits, every candidate's score and a sentence saying why."""

    model: str
    params: Mapping[str, Any]
    label: str
    credits: Credits
    scores: pd.DataFrame
    reason: str
    split: str = SPLIT_SEEDED
    info: Mapping[str, Any] = field(default_factory=dict)


def split_journeys(paths: PathSet, holdout: float, seed: int) -> tuple[PathSet, PathSet]:
    """``(train, test)``: each path's journeys split at random, ``holdout`` of them to test.

    Whole counts are split binomially (each journey on its own); fractional counts (weights)
    go to one side per path.
    """
    rng = np.random.default_rng(seed)
    conversions, nulls = paths.conversions, paths.nulls
    whole = np.all(conversions == np.round(conversions)) and np.all(nulls == np.round(nulls))
    if whole:
        test_conversions = rng.binomial(conversions.astype(np.int64), holdout).astype(float)
        test_nulls = rng.binomial(nulls.astype(np.int64), holdout).astype(float)
    else:
        to_test = rng.random(paths.n_paths) < holdout
        test_conversions, test_nulls = conversions * to_test, nulls * to_test
    per_conversion = np.divide(paths.value, conversions, out=np.zeros_like(paths.value),
                               where=conversions > 0)
    train = paths.with_counts(conversions - test_conversions,
                              (conversions - test_conversions) * per_conversion,
                              nulls - test_nulls)
    test = paths.with_counts(test_conversions, test_conversions * per_conversion, test_nulls)
    return train, test


def held_out_log_loss(test: PathSet, probability: np.ndarray) -> float:
    """Mean log-loss per held-out journey (module docstring)."""
    p = np.clip(probability, PROBABILITY_FLOOR, 1 - PROBABILITY_FLOOR)
    total = test.conversions.sum() + test.nulls.sum()
    return float(-(test.conversions @ np.log(p) + test.nulls @ np.log1p(-p)) / total)


def score_candidates(paths: PathSet, candidates: tuple[Candidate, ...] = CANDIDATES, *,
                     holdout: float = HOLDOUT_DEFAULT, seed: int = SEED_DEFAULT) -> pd.DataFrame:
    """Every candidate's held-out log-loss per journey, best first."""
    if not 0 < holdout < 1:
        raise ConfigError(f"auto holdout must be between 0 and 1, got {holdout!r}")
    train, test = split_journeys(paths, holdout, seed)
    for name, part in (("training", train), ("held-out", test)):
        if part.conversions.sum() == 0 or part.nulls.sum() == 0:
            raise InputError(f"auto needs converting and non-converting journeys in both parts "
                             f"of the split; the {name} part has "
                             f"{part.conversions.sum():.0f} converting and "
                             f"{part.nulls.sum():.0f} non-converting (give the paths' nulls)")
    rows = [{"candidate": c.label, "model": c.model, "held_out_log_loss":
             held_out_log_loss(test, c.predict(train, paths))} for c in candidates]
    scores = pd.DataFrame(rows).sort_values("held_out_log_loss", kind="stable",
                                            ignore_index=True)
    scores.attrs.update(split=SPLIT_SEEDED, holdout=holdout, seed=seed,
                        held_out_journeys=float(test.conversions.sum() + test.nulls.sum()))
    return scores


def choose_model(paths: PathSet, candidates: tuple[Candidate, ...] = CANDIDATES, *,
                 holdout: float = HOLDOUT_DEFAULT, seed: int = SEED_DEFAULT) -> Choice:
    """Score the candidates, then run the best on every journey; say which and why."""
    from touchline.attribution.compare import run_model

    scores = score_candidates(paths, candidates, holdout=holdout, seed=seed)
    best = next(c for c in candidates if c.label == scores.candidate[0])
    runner_up = (f"; next {scores.candidate[1]} at {scores.held_out_log_loss[1]:.5f}"
                 if len(scores) > 1 else "")
    reason = (f"picked {best.label}: lowest held-out log-loss, "
              f"{scores.held_out_log_loss[0]:.5f} per journey on "
              f"{scores.attrs['held_out_journeys']:,.0f} held-out journeys ({SPLIT_SEEDED}, "
              f"{holdout:.0%}, seed {seed}){runner_up}")
    log.info("auto: %s", reason)
    credits = run_model(paths, best.model, dict(best.params))
    return Choice(best.model, dict(best.params), best.label, credits, scores, reason)
