r"""``auto``: choose the data-driven model by how well it predicts held-out journeys.

No truth is read: every candidate is a model of *whether a journey converts given its path*,
fitted on a training share of the user's own journeys and scored on the rest by the mean
held-out log-loss per journey (lower is better),

.. math:: \ell = -\frac{1}{|T|}\sum_{j \in T} \bigl(y_j \log \hat p(x_j) + (1 - y_j)
          \log(1 - \hat p(x_j))\bigr),

with :math:`\hat p` clipped to :math:`[10^{-6}, 1 - 10^{-6}]`. The split:

* **time-based** when the paths carry ``later`` (stored journeys, :func:`~touchline.
  attribution.paths.journey_pathset` with ``split_holdout``): train on the journeys that ended
  before the cutoff day, score on those that ended on it or after (about ``holdout`` of them),
  as a model would be used: fitted on the past, judged on what came next. Open journeys end at
  their last touch; the latest of them may still convert, which makes the held-out rate a
  little low for every candidate alike;
* **seeded journey-level** otherwise (path files carry no times), or when the later part lacks
  converting or non-converting journeys: each distinct path's converting and non-converting
  journeys are split at random (binomially, ``holdout`` of them held out, fixed ``seed``), the
  same on every run.

The candidates (:data:`CANDIDATES`) and what each predicts:

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
from touchline.attribution.registry import Credits, one_blas_thread
from touchline.errors import ConfigError, InputError

log = logging.getLogger(__name__)

HOLDOUT_DEFAULT = 0.25
SEED_DEFAULT = 0
#: training journeys the candidates are fitted on at most: above it, a seeded sample of them
#: (:func:`sample_journeys`); the held-out part and the winner's final fit keep every journey
TRAINING_JOURNEYS_MAX = 100_000
PROBABILITY_FLOOR = 1e-6
SPLIT_SEEDED = "seeded journey-level split"
SPLIT_TIME = "time-based split"
#: the model name under which ``touchline run`` stores the credits of the model ``auto`` picked
AUTO_MODEL = "auto"

#: ``(train, every) -> (probability of each path of every, settings fitted on train)``
Predictor = Callable[[PathSet, PathSet], tuple[np.ndarray, dict[str, Any]]]


@dataclass(frozen=True)
class Candidate:
    """One model and its settings, with how to predict conversion from a training part."""

    model: str
    params: Mapping[str, Any]
    predict: Predictor
    #: fitted on a sample of the training journeys when they are many (the logistic models,
    #: whose fit grows with them); a chain's counts cost next to nothing and its higher orders
    #: need every journey to fill their states
    sampled: bool = True

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
    def predict(train: PathSet, every: PathSet) -> tuple[np.ndarray, dict[str, Any]]:
        journeys = effective_journeys(
            every, NAVIGATIONAL_DEFAULT if navigational_rule else None)
        fit = fit_conversion(journeys, train.conversions, train.nulls, features=features,
                             regularisation=regularisation)
        # the penalty chosen on the training part, for the record: the final fit on all
        # journeys chooses its own, so auto's credits equal the model's run by hand (on a few
        # hundred journeys the best penalty moves between 75 % and all of them)
        return fit.probability(journeys), {"regularisation": fit.regularisation}

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
    def predict(train: PathSet, every: PathSet) -> tuple[np.ndarray, dict[str, Any]]:
        keys = last_state_keys(every, order)
        _, state = np.unique(keys, return_inverse=True)
        state = state.ravel()
        converted = np.bincount(state, train.conversions)
        journeys = converted + np.bincount(state, train.nulls)
        rate = train.conversions.sum() / max(train.conversions.sum() + train.nulls.sum(), 1e-12)
        return ((converted + rate) / (journeys + 1.0))[state], {}

    return predict


CANDIDATES: tuple[Candidate, ...] = (
    *(Candidate("journey_counterfactual", {"features": features},
                _logistic(features=features, regularisation=None, navigational_rule=True))
      for features in (FEATURES, ("exposure",), ())),
    Candidate("counterfactual", {}, _logistic(features=(), regularisation=REGULARISATION_DEFAULT,
                                              navigational_rule=False)),
    *(Candidate("markov", {"order": order}, _markov(order), sampled=False)
      for order in range(1, ORDER_MAX + 1)),
)
#: what ``touchline run`` stores under ``auto`` when the journeys are too few to split:
#: the journey-aware model with every feature, its penalty chosen by leave-one-out likelihood
FALLBACK = CANDIDATES[0]


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


def _both_outcomes(part: PathSet) -> bool:
    return bool(part.conversions.sum() > 0 and part.nulls.sum() > 0)


def split_journeys(paths: PathSet, holdout: float, seed: int) -> tuple[PathSet, PathSet, str]:
    """``(train, test, split)``: the time-based split where the paths carry ``later``, else
    each path's journeys split at random, ``holdout`` of them to test (module docstring).

    Whole counts are split binomially (each journey on its own); fractional counts (weights)
    go to one side per path.
    """
    conversions, nulls = paths.conversions, paths.nulls
    per_conversion = np.divide(paths.value, conversions, out=np.zeros_like(paths.value),
                               where=conversions > 0)
    if paths.later is not None:
        later = paths.later
        test = paths.with_counts(conversions * later, paths.value * later, nulls * later)
        train = paths.with_counts(conversions - test.conversions, paths.value - test.value,
                                  nulls - test.nulls)
        if _both_outcomes(train) and _both_outcomes(test):
            return train, test, SPLIT_TIME
        log.info("auto: the time split leaves a part without converting or non-converting "
                 "journeys; splitting at random instead")
    rng = np.random.default_rng(seed)
    whole = np.all(conversions == np.round(conversions)) and np.all(nulls == np.round(nulls))
    if whole:
        test_conversions = rng.binomial(conversions.astype(np.int64), holdout).astype(float)
        test_nulls = rng.binomial(nulls.astype(np.int64), holdout).astype(float)
    else:
        to_test = rng.random(paths.n_paths) < holdout
        test_conversions, test_nulls = conversions * to_test, nulls * to_test
    train = paths.with_counts(conversions - test_conversions,
                              (conversions - test_conversions) * per_conversion,
                              nulls - test_nulls)
    test = paths.with_counts(test_conversions, test_conversions * per_conversion, test_nulls)
    return train, test, SPLIT_SEEDED


def sample_journeys(paths: PathSet, journeys: float, seed: int) -> PathSet:
    """About ``journeys`` of the journeys of ``paths`` (all of them when they are fewer): each
    journey kept with the same probability, seeded (binomial thinning of whole counts; a path
    with fractional counts is kept or dropped whole). Each path keeps its revenue per
    conversion.

    Why ``auto`` fits its logistic candidates on a sample: their fit's cost grows with the
    distinct paths that carry a journey, their dozens of coefficients gain little precision
    past some 10^5 journeys, and every candidate is scored on the whole held-out part. On the
    10M-event benchmark (427k training journeys, 139k held out) fits on 100k of them, four
    seeds, picked what the full fits picked, with the same order of the logistic candidates,
    each score within 5e-4 of its full-fit value (the winner led by 2.1e-3 to 2.9e-3), at 60 %
    of the scoring's CPU time (``docs/attribution.md``).
    """
    conversions, nulls = paths.conversions, paths.nulls
    total = float(conversions.sum() + nulls.sum())
    if total <= journeys:
        return paths
    share = journeys / total
    rng = np.random.default_rng(seed)
    if np.all(conversions == np.round(conversions)) and np.all(nulls == np.round(nulls)):
        kept_conversions = rng.binomial(conversions.astype(np.int64), share).astype(float)
        kept_nulls = rng.binomial(nulls.astype(np.int64), share).astype(float)
    else:
        kept = rng.random(paths.n_paths) < share
        kept_conversions, kept_nulls = conversions * kept, nulls * kept
    per_conversion = np.divide(paths.value, conversions, out=np.zeros_like(paths.value),
                               where=conversions > 0)
    return paths.with_counts(kept_conversions, kept_conversions * per_conversion, kept_nulls)


def held_out_log_loss(test: PathSet, probability: np.ndarray) -> float:
    """Mean log-loss per held-out journey (module docstring)."""
    p = np.clip(probability, PROBABILITY_FLOOR, 1 - PROBABILITY_FLOOR)
    total = test.conversions.sum() + test.nulls.sum()
    return float(-(test.conversions @ np.log(p) + test.nulls @ np.log1p(-p)) / total)


def score_candidates(paths: PathSet, candidates: tuple[Candidate, ...] = CANDIDATES, *,
                     holdout: float = HOLDOUT_DEFAULT, seed: int = SEED_DEFAULT,
                     training_max: float = TRAINING_JOURNEYS_MAX) -> pd.DataFrame:
    """Every candidate's held-out log-loss per journey, best first; the logistic candidates
    fitted on at most ``training_max`` training journeys (:func:`sample_journeys`), the
    chains on all of them."""
    if not 0 < holdout < 1:
        raise ConfigError(f"auto holdout must be between 0 and 1, got {holdout!r}")
    train, test, split = split_journeys(paths, holdout, seed)
    for name, part in (("training", train), ("held-out", test)):
        if not _both_outcomes(part):
            raise InputError(f"auto needs converting and non-converting journeys in both parts "
                             f"of the split; the {name} part has "
                             f"{part.conversions.sum():.0f} converting and "
                             f"{part.nulls.sum():.0f} non-converting (give the paths' nulls)")
    fit_on = sample_journeys(train, training_max, seed)
    rows = []
    for c in candidates:
        probability, fitted = c.predict(fit_on if c.sampled else train, paths)
        rows.append({"candidate": c.label, "model": c.model,
                     "held_out_log_loss": held_out_log_loss(test, probability),
                     "fitted": fitted})
    scores = pd.DataFrame(rows).sort_values("held_out_log_loss", kind="stable",
                                            ignore_index=True)
    held_out = float(test.conversions.sum() + test.nulls.sum())
    scores.attrs.update(split=split, holdout=held_out / float(paths.conversions.sum()
                                                              + paths.nulls.sum()), seed=seed,
                        held_out_journeys=held_out,
                        training_journeys=float(train.conversions.sum() + train.nulls.sum()),
                        fitted_journeys=float(fit_on.conversions.sum() + fit_on.nulls.sum()))
    return scores


def choose_model(paths: PathSet, candidates: tuple[Candidate, ...] = CANDIDATES, *,
                 holdout: float = HOLDOUT_DEFAULT, seed: int = SEED_DEFAULT,
                 fallback: Candidate | None = None,
                 training_max: float = TRAINING_JOURNEYS_MAX) -> Choice:
    """Score the candidates, then run the best on every journey; say which and why.

    With ``fallback``, data too few to hold journeys out (a part of the split without
    converting or non-converting journeys) give that candidate, saying so, instead of the
    :class:`~touchline.errors.InputError`: ``touchline run`` must store credits whatever the
    data.
    """
    from touchline.attribution.registry import run_model

    try:
        with one_blas_thread():
            scores = score_candidates(paths, candidates, holdout=holdout, seed=seed,
                                      training_max=training_max)
    except InputError as exc:
        if fallback is None:
            raise
        reason = f"picked {fallback.label} unscored: {exc}"
        log.info("auto: %s", reason)
        scores = pd.DataFrame({"candidate": [fallback.label], "model": [fallback.model],
                               "held_out_log_loss": [np.nan]})
        scores.attrs.update(split="none", held_out_journeys=0.0)
        return Choice(fallback.model, dict(fallback.params), fallback.label,
                      run_model(paths, fallback.model, dict(fallback.params)), scores, reason,
                      "none")
    best = next(c for c in candidates if c.label == scores.candidate[0])
    reason = _why(best.label, scores, holdout, seed)
    log.info("auto: %s", reason)
    params = dict(best.params)
    credits = run_model(paths, best.model, params)
    return Choice(best.model, params, best.label, credits, scores, reason, scores.attrs["split"])


def _why(picked: str, scores: pd.DataFrame, holdout: float, seed: int) -> str:
    """The sentence that says what was picked and why: its score, the split, the runner-up."""
    runner_up = (f"; next {scores.candidate[1]} at {scores.held_out_log_loss[1]:.5f}"
                 if len(scores) > 1 else "")
    split = scores.attrs["split"]
    how = (f"{split}, the latest {scores.attrs['holdout']:.0%}" if split == SPLIT_TIME
           else f"{split}, {holdout:.0%}, seed {seed}")
    fitted, training = (scores.attrs.get("fitted_journeys"),
                        scores.attrs.get("training_journeys"))
    sample = (f", candidates fitted on a seeded sample of {fitted:,.0f} of the {training:,.0f} "
              "training journeys" if fitted is not None and fitted < training else "")
    return (f"picked {picked}: lowest held-out log-loss, "
            f"{scores.held_out_log_loss[0]:.5f} per journey on "
            f"{scores.attrs['held_out_journeys']:,.0f} held-out journeys ({how}{sample})"
            f"{runner_up}")


@dataclass(frozen=True)
class OrderChoice:
    """The Markov order ``order="auto"`` picked, every order's held-out score and why."""

    order: int
    scores: dict[int, float]
    reason: str


#: the Markov candidates of :data:`CANDIDATES`: orders 1 to 4, lowest first (a tie keeps
#: the lower order)
MARKOV_ORDERS: tuple[Candidate, ...] = tuple(c for c in CANDIDATES if c.model == "markov")


def choose_markov_order(paths: PathSet, *, holdout: float = HOLDOUT_DEFAULT,
                        seed: int = SEED_DEFAULT) -> OrderChoice:
    """The Markov order 1-4 with the lowest held-out log-loss, on ``auto``'s split (time-based
    where the paths carry ``later``, else seeded): :data:`MARKOV_ORDERS` scored by
    :func:`score_candidates`. Data too few to hold journeys out give order 1, saying so."""
    from touchline.attribution.markov import ORDER_DEFAULT

    try:
        scores = score_candidates(paths, MARKOV_ORDERS, holdout=holdout, seed=seed)
    except InputError as exc:
        reason = f"order {ORDER_DEFAULT} unscored: {exc}"
        log.info("markov order auto: %s", reason)
        return OrderChoice(ORDER_DEFAULT, {}, reason)
    orders = {c.label: int(c.params["order"]) for c in MARKOV_ORDERS}
    named = scores.assign(candidate=[f"order {orders[label]}" for label in scores.candidate])
    named.attrs.update(scores.attrs)
    order = orders[scores.candidate[0]]
    reason = _why(f"order {order}", named, holdout, seed)
    log.info("markov order auto: %s", reason)
    by_order = {orders[label]: float(v)
                for label, v in zip(scores.candidate, scores.held_out_log_loss, strict=True)}
    return OrderChoice(order, dict(sorted(by_order.items())), reason)
