r"""Journey-aware counterfactual attribution: what each converted journey would have done
without a channel, from a logistic model of what the journey contains and how.

1. **Navigational rule** (``navigational_rule``, on by default). A touch whose label is in
   ``navigational`` (``direct``, ``branded_search``; case-insensitive) that is the *last* touch
   of a journey with earlier touches is treated as a symptom of a decision already made (the
   customer types the address or the brand to buy), not as a cause. It is taken out of the
   journey's exposures, never credited, and its presence becomes one indicator feature
   :math:`s` that is held fixed in every counterfactual (removing a channel does not remove
   the symptom; the symptom does not cause the conversion).
2. **Features** of the remaining ("effective") journey, for each label :math:`c` with
   :math:`n_c` touches, on a path of :math:`n = \sum_c n_c` touches:

   * presence :math:`[n_c > 0]` and, with ``"exposure"``, diminishing returns of repeats
     :math:`\log n_c` (0 for one touch), so :math:`\beta_c + \theta_c \log n_c`;
   * with ``"first_touch"``, :math:`[c \text{ opened the journey}]`;
   * with ``"recency"``, positional recency :math:`2^{-r_c}` where :math:`r_c` is the number of
     distinct channels touched after the last touch of :math:`c` (1 for the channel of the
     last touch, ½ for the one before...; path files carry no times, so recency is by position);
   * :math:`\log n` (engagement) and the symptom indicator :math:`s`.

3. **Fit**: L2-regularised logistic regression over distinct feature rows weighted by their
   converting and non-converting journeys (:func:`~touchline.attribution.counterfactual.
   fit_logistic`, mean log-loss + :math:`\tfrac{\lambda}{2}\lVert\beta\rVert^2`). With
   ``regularisation=None`` (default) :math:`\lambda` is chosen from
   :data:`REGULARISATION_GRID` by the approximate leave-one-journey-out log-likelihood
   (:func:`approximate_loo_loss`): deterministic, and the same whatever the order or names of
   the channels.
4. **Credit**: for a converted journey on path :math:`p` and a channel :math:`c` on it, the
   probability that the conversion would not have happened without :math:`c`'s touches (the
   probability of necessity under monotone effects, Pearl 1999):

   .. math:: PN_{p,c} = \frac{\max\bigl(p(x_p) - p(x_p^{-c}), 0\bigr)}{p(x_p)}

   where :math:`x_p^{-c}` are the features of the journey with every touch of :math:`c` removed
   (a journey left with no touch has :math:`p = 0`). Summed over converted journeys,
   :math:`L_c = \sum_p \mathrm{conv}_p\,PN_{p,c}` has the expectation
   :math:`\sum_p \mathrm{journeys}_p\,(p(x_p) - p(x_p^{-c}))`, the expected conversions lost
   without :math:`c`; credits are :math:`L_c` rescaled to the observed conversions, and revenue
   the same with each path's revenue in place of its conversions.

References: Pearl, "Probabilities of causation: three counterfactual interpretations and their
identification", Synthese 121 (1999); Shao & Li, "Data-driven multi-touch attribution models",
KDD 2011; Rad & Maleki, "A scalable estimate of the out-of-sample prediction error via
approximate leave-one-out cross-validation", JRSS B 82 (2020). Why these features are causal in
general is argued in ``docs/attribution.md``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from touchline.attribution.counterfactual import (
    _sigmoid,
    newton_fit,
    one_step_coefficients,
    weighted_gram,
    with_intercept,
)
from touchline.attribution.paths import PathSet
from touchline.attribution.registry import (
    Credits,
    Replicator,
    proportional,
    register,
    rescaled,
)
from touchline.errors import ConfigError
from touchline.lazy import lazy_module

sparse = lazy_module("scipy.sparse")

log = logging.getLogger(__name__)

NAVIGATIONAL_DEFAULT = ("direct", "branded_search")
FEATURES = ("exposure", "first_touch", "recency")
#: candidate L2 penalties on the mean log-loss per journey, strongest first
REGULARISATION_GRID = (1e-1, 3e-2, 1e-2, 3e-3, 1e-3, 3e-4, 1e-4, 1e-5)
_NO_LABEL = -1


@dataclass(frozen=True)
class Journeys:
    """The effective journeys of a path set (navigational touches taken out) as dense arrays.

    ``counts`` is paths × labels touches; ``first`` the label of the first touch and
    ``second_first`` the first label that differs from it (-1: none); ``rank`` the number of
    distinct labels touched after each label's last touch (paths × labels; only meaningful
    where ``counts > 0``); ``symptom`` 1 where a navigational last touch was taken out.
    """

    counts: np.ndarray
    first: np.ndarray
    second_first: np.ndarray
    rank: np.ndarray
    symptom: np.ndarray

    @property
    def lengths(self) -> np.ndarray:
        return self.counts.sum(axis=1)


def navigational_mask(paths: PathSet, navigational: Sequence[str]) -> np.ndarray:
    """Per touch: True for the navigational last touch of a path with earlier touches."""
    names = {str(n).lower() for n in navigational}
    is_navigational = np.array([str(label).lower() in names for label in paths.labels], bool)
    last = paths.offsets[1:] - 1
    symptom_paths = (paths.lengths >= 2) & is_navigational[paths.codes[last]]
    mask = np.zeros(len(paths.codes), bool)
    mask[last[symptom_paths]] = True
    return mask


def effective_journeys(paths: PathSet, navigational: Sequence[str] | None) -> Journeys:
    """The dense per-path arrays of :class:`Journeys`, vectorised over all touches; computed
    once per path set and rule (``auto`` scores four candidates on the same paths, then runs
    the winner on them): the arrays are read, never written."""
    key = ("shape:", "effective_journeys",
           None if navigational is None else tuple(navigational))
    if key not in paths._cache:
        paths._cache[key] = _effective_journeys(paths, navigational)
    return paths._cache[key]  # type: ignore[no-any-return]


def _effective_journeys(paths: PathSet, navigational: Sequence[str] | None) -> Journeys:
    n, k = paths.n_paths, paths.n_labels
    dropped = (navigational_mask(paths, navigational) if navigational is not None
               else np.zeros(len(paths.codes), bool))
    keep = ~dropped
    codes, row = paths.codes[keep], paths.row[keep].astype(np.int64)
    key = row * k + codes
    counts = np.bincount(key, minlength=n * k).reshape(n, k).astype(float)
    lengths = np.bincount(row, minlength=n)
    offsets = np.zeros(n + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    first = codes[offsets[:-1]]
    index = np.arange(len(codes))
    differs = np.where(codes != first[row], index, len(codes))
    first_differing = np.minimum.reduceat(differs, offsets[:-1]) if n else differs[:0]
    second_first = np.where(first_differing < offsets[1:],
                            codes[np.minimum(first_differing, len(codes) - 1)], _NO_LABEL)
    last_position = np.full(n * k, -1, np.int64)
    np.maximum.at(last_position, key, index)
    last_position = last_position.reshape(n, k)
    # rank 0 for the label of the last touch, 1 for the label last touched before it, ...
    order = np.argsort(-last_position, axis=1, kind="stable")
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(k)[None, :].repeat(n, axis=0), axis=1)
    symptom = np.zeros(n)
    symptom[paths.row[dropped]] = 1.0
    return Journeys(counts, first, second_first, rank.astype(float), symptom)


def design(journeys: Journeys, features: Sequence[str]) -> np.ndarray:
    """The feature matrix (paths × columns), columns in the order of the module docstring."""
    counts = journeys.counts
    n, k = counts.shape
    present = counts > 0
    blocks = [present.astype(float)]
    if "exposure" in features:
        blocks.append(np.log(np.maximum(counts, 1.0)))
    if "first_touch" in features:
        opened = np.zeros((n, k))
        valid = journeys.first >= 0
        opened[np.flatnonzero(valid), journeys.first[valid]] = 1.0
        blocks.append(opened)
    if "recency" in features:
        blocks.append(np.where(present, np.exp2(-journeys.rank), 0.0))
    lengths = journeys.lengths
    blocks.append(np.log(np.maximum(lengths, 1.0))[:, None])
    blocks.append(journeys.symptom[:, None])
    return np.hstack(blocks)


def without_label(journeys: Journeys, rows: np.ndarray, label: int) -> Journeys:
    """The journeys ``rows`` with every (non-navigational) touch of ``label`` removed."""
    counts = journeys.counts[rows].copy()
    counts[:, label] = 0.0
    rank = journeys.rank[rows]
    rank = rank - (rank > rank[:, [label]])  # labels touched before it move one closer
    first = journeys.first[rows]
    first = np.where(first == label, journeys.second_first[rows], first)
    return Journeys(counts, first, journeys.second_first[rows], rank, journeys.symptom[rows])


def _distinct(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct rows of ``x`` and each row's index among them (by the rows' bytes: fast)."""
    contiguous = np.ascontiguousarray(x)
    keys = contiguous.view(np.dtype((np.void, contiguous.dtype.itemsize * x.shape[1]))).ravel()
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    return x[first], inverse.ravel()


def approximate_loo_loss(
    x: np.ndarray, positives: np.ndarray, negatives: np.ndarray, intercept: float,
    coefficients: np.ndarray, regularisation: float, *, gram: np.ndarray | None = None,
    design_matrix: np.ndarray | sparse.spmatrix | None = None,
) -> float:
    r"""Mean leave-one-journey-out log-loss of a fitted L2 logistic model, without refitting.

    Removing one journey :math:`j` from row :math:`i` moves the fit by one Newton step; by
    Sherman-Morrison its score becomes

    .. math:: z_{-j} = z_i + \frac{h_i\,\ell'_j}{1 - h_i\,p_i(1 - p_i)},\qquad
              h_i = \tilde x_i^\top H^{-1} \tilde x_i

    with :math:`\ell'_j = p_i - y_j`, :math:`\tilde x_i = (1, x_i)` and :math:`H` the Hessian of
    the *total* penalised loss (:math:`N\lambda` on the coefficients). Rad & Maleki (2020) show
    the error of this estimate vanishes as data grow; it costs one solve per candidate
    :math:`\lambda`, so every journey is held out once at the price of one fit. ``gram``: the
    fit's own Gram matrix at these coefficients (:class:`~touchline.attribution.counterfactual.
    LogisticFit`, of the *mean* loss), which saves computing it again; ``design_matrix``:
    :func:`~touchline.attribution.counterfactual.with_intercept` of ``x``, when made already.
    """
    if design_matrix is None:
        design_matrix = with_intercept(x)
    total = positives.sum() + negatives.sum()
    z = intercept + x @ coefficients
    p = _sigmoid(z)
    curvature = (positives + negatives) * p * (1 - p)
    penalty = np.full(design_matrix.shape[1], regularisation * total)
    penalty[0] = 1e-12
    product = (gram * total if gram is not None
               else weighted_gram(design_matrix, curvature))
    hessian = product + np.diag(penalty)
    inverse = np.linalg.inv(hessian)  # columns-squared: small
    if sparse.issparse(design_matrix):
        leverage = np.asarray(design_matrix.multiply(design_matrix @ inverse).sum(axis=1)).ravel()
    else:
        leverage = np.einsum("ij,ij->i", design_matrix, design_matrix @ inverse)
    denominator = np.maximum(1.0 - leverage * p * (1 - p), 1e-12)
    z_positive = z + leverage * (p - 1.0) / denominator
    z_negative = z + leverage * p / denominator
    loss = positives @ np.logaddexp(0.0, -z_positive) + negatives @ np.logaddexp(0.0, z_negative)
    return float(loss / total)


@dataclass(frozen=True)
class Fit:
    """A fitted conversion model: predict with :meth:`probability`."""

    intercept: float
    coefficients: np.ndarray
    regularisation: float
    features: tuple[str, ...]
    loo_loss: float

    def probability(self, journeys: Journeys) -> np.ndarray:
        """:math:`p(x)` per path; 0 for a journey with no (effective) touch."""
        score = self.intercept + design(journeys, self.features) @ self.coefficients
        return np.where(journeys.lengths > 0, _sigmoid(score), 0.0)


def fit_conversion(
    journeys: Journeys, conversions: np.ndarray, nulls: np.ndarray, *,
    features: Sequence[str], regularisation: float | None,
) -> Fit:
    """Fit the logistic model; ``regularisation=None`` picks it by :func:`approximate_loo_loss`.

    Distinct feature rows without a journey (weight zero: paths held out by ``auto``'s split,
    or thinned away) are dropped before fitting: they add nothing to the loss, its gradient,
    its Hessian or the leave-one-out loss, so the fit is the same on fewer rows (``auto``'s
    time split leaves out about a quarter of them).
    """
    features = tuple(features)
    dense, inverse = _distinct(design(journeys, features))
    positives = np.bincount(inverse, conversions, minlength=dense.shape[0])
    negatives = np.bincount(inverse, nulls, minlength=dense.shape[0])
    weighted = (positives + negatives) > 0
    if not weighted.all():
        dense, positives, negatives = dense[weighted], positives[weighted], negatives[weighted]
    x = sparse.csr_matrix(dense)  # mostly zeros: sparse products (weighted_gram)
    design_matrix = with_intercept(x)  # once for every penalty: dense where not really sparse
    grid = REGULARISATION_GRID if regularisation is None else (regularisation,)
    best: Fit | None = None
    previous: tuple[float, np.ndarray] | None = None
    for candidate in grid:  # strongest penalty first: each fit starts from the previous one
        fitted = newton_fit(design_matrix, positives, negatives, candidate, start=previous)
        intercept, coefficients = fitted.intercept, fitted.coefficients
        previous = (intercept, coefficients)
        loss = (approximate_loo_loss(x, positives, negatives, intercept, coefficients, candidate,
                                     gram=fitted.gram, design_matrix=design_matrix)
                if len(grid) > 1 else float("nan"))
        if best is None or loss < best.loo_loss - 1e-12:
            best = Fit(intercept, coefficients, candidate, features, loss)
    assert best is not None
    return best


def _check(features: Sequence[str], regularisation: float | None) -> None:
    unknown = [f for f in features if f not in FEATURES]
    if unknown:
        raise ConfigError(f"journey_counterfactual features {unknown}: choose from "
                          f"{', '.join(FEATURES)}")
    if regularisation is not None and not regularisation > 0:
        raise ConfigError("journey_counterfactual regularisation must be > 0 (or none, to choose "
                          f"it by leave-one-out likelihood), got {regularisation!r}")


@register("journey_counterfactual")
def journey_counterfactual(
    paths: PathSet,
    *,
    features: Sequence[str] = FEATURES,
    regularisation: float | None = None,
    navigational_rule: bool = True,
    navigational: Sequence[str] = NAVIGATIONAL_DEFAULT,
) -> Credits:
    r"""Credit by each channel's probability of necessity under a journey-aware logistic model.

    .. math:: C_c = \frac{L_c}{\sum_d L_d} \sum_p \mathrm{conv}_p,\qquad
              L_c = \sum_p \mathrm{conv}_p\,\frac{\max(p(x_p) - p(x_p^{-c}), 0)}{p(x_p)}

    (module docstring for the features, the fit and the navigational rule). One touch: the
    channel gets the conversion (without it the journey is empty). Two touches ``A > B`` with
    :math:`p(AB) = 0.4`, :math:`p(A) = 0.1`, :math:`p(B) = 0.2` (a saturated fit):
    :math:`PN_A = 0.2 / 0.4`, :math:`PN_B = 0.3 / 0.4`. ``A > direct`` with the rule on: A gets
    everything, direct nothing. Where no removal lowers the probability anywhere (or every
    journey has one outcome), each converted journey is split equally among its channels.
    """
    _check(features, regularisation)
    journeys = effective_journeys(paths, navigational if navigational_rule else None)
    k = paths.n_labels
    conversions, value = paths.conversions, paths.value
    info: dict[str, object] = {"features": list(features), "navigational_rule": navigational_rule,
                               "symptom_journeys": float(journeys.symptom @ (conversions
                                                                              + paths.nulls))}
    lost = np.zeros(k)
    lost_value = np.zeros(k)
    negative = np.zeros(k)
    one_outcome = conversions.sum() == 0 or paths.nulls.sum() == 0
    if not one_outcome:
        fit = fit_conversion(journeys, conversions, paths.nulls, features=features,
                             regularisation=regularisation)
        coefficients = fit.coefficients
        info.update(regularisation=fit.regularisation, loo_log_loss=fit.loo_loss,
                    intercept=fit.intercept, coefficients=fit.coefficients)
        p_full = fit.probability(journeys)
        for label in range(k):
            rows = np.flatnonzero((journeys.counts[:, label] > 0) & (conversions > 0))
            if not len(rows):
                continue
            drop = p_full[rows] - fit.probability(without_label(journeys, rows, label))
            necessity = np.maximum(drop, 0.0) / np.maximum(p_full[rows], 1e-300)
            lost[label] = conversions[rows] @ necessity
            lost_value[label] = value[rows] @ necessity
            negative[label] = conversions[rows] @ (drop < 0)
    else:
        coefficients = np.zeros(design(journeys, features).shape[1])
        log.warning("journey_counterfactual: every journey %s; splitting each path equally",
                    "converts" if paths.nulls.sum() == 0 else "fails to convert")
        info["fallback"] = "one outcome only"
    present = journeys.counts > 0
    equal_split = present / np.maximum(present.sum(axis=1, keepdims=True), 1)
    if lost.sum() <= 0 and conversions.sum() > 0:
        lost = conversions @ equal_split
        info.setdefault("fallback", "no removal lowers the conversion probability")
    if lost_value.sum() <= 0 and value.sum() > 0:
        lost_value = value @ equal_split
    scale = conversions.sum() / lost.sum() if lost.sum() > 0 else 0.0
    scale_value = value.sum() / lost_value.sum() if lost_value.sum() > 0 else 0.0
    return Credits(
        conversions=lost * scale,
        value=lost_value * scale_value,
        columns={"presence_coefficient": np.asarray(coefficients[:k], float),
                 "negative_drops": negative},
        info=info,
    )



def replicates(
    paths: PathSet, credits: Credits, *, features: Sequence[str] = FEATURES,
    regularisation: float | None = None, navigational_rule: bool = True,
    navigational: Sequence[str] = NAVIGATIONAL_DEFAULT,
) -> Replicator:
    r"""What credits bootstrap replicates of ``paths`` given the model's ``credits`` on them:
    a function of replicate counts and revenue (paths × replicates) giving ``(conversions,
    value)``, each replicates × labels.

    Refitting per replicate costs seconds at 10M events; instead each replicate's coefficients
    are one Newton step from the data's fit (:func:`~touchline.attribution.counterfactual.
    one_step_coefficients`), and the journeys without each channel, which depend only on the
    paths, are built once. Credits then follow the model's formula with the replicate's
    coefficients and counts.
    """
    _check(features, regularisation)
    journeys = effective_journeys(paths, navigational if navigational_rule else None)
    k = paths.n_labels
    if "coefficients" not in credits.info:  # one outcome only: shares stay the data's
        return proportional(paths, credits)
    beta = np.r_[float(credits.info["intercept"]),  # type: ignore[arg-type]
                 np.asarray(credits.info["coefficients"], float)]
    x = sparse.csr_matrix(design(journeys, features))
    has_touch = (journeys.lengths > 0)[:, None]
    removed = []
    for label in range(k):
        rows = np.flatnonzero((journeys.counts[:, label] > 0) & (paths.conversions > 0))
        if len(rows):
            without = without_label(journeys, rows, label)
            removed.append((label, rows, with_intercept(sparse.csr_matrix(
                design(without, features))), (without.lengths > 0)[:, None]))

    step = one_step_coefficients(x, paths.conversions, paths.nulls, beta,
                                 float(credits.info["regularisation"]))  # type: ignore[arg-type]
    design_full = with_intercept(x)

    def credit(conversions: np.ndarray, nulls: np.ndarray,
               value: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        betas = step(conversions, nulls)
        p_full = np.where(has_touch, _sigmoid(np.asarray(design_full @ betas)), 0.0)
        lost = np.zeros((conversions.shape[1], k))
        lost_value = np.zeros_like(lost)
        for label, rows, x_without, touched in removed:
            p_without = np.where(touched, _sigmoid(np.asarray(x_without @ betas)), 0.0)
            full = p_full[rows]
            necessity = np.maximum(full - p_without, 0.0) / np.maximum(full, 1e-300)
            lost[:, label] = (conversions[rows] * necessity).sum(axis=0)
            lost_value[:, label] = (value[rows] * necessity).sum(axis=0)
        return rescaled(lost, conversions.sum(axis=0)), rescaled(lost_value, value.sum(axis=0))

    return credit
