r"""Bootstrap intervals for credits: how much would they move on another sample of journeys?

Resampling journeys with replacement from the aggregated paths is one multinomial draw of the
journey count :math:`N` over the cells (path, converted) and (path, did not convert), with the
observed cell shares as probabilities; a cell's revenue scales with its drawn conversions (each
path keeps its mean revenue per conversion). Every replicate is refitted and credited like the
data, and the interval at confidence :math:`1 - \alpha` is the percentile interval

.. math:: \bigl[\,q_{\alpha/2}(C^{*}_c),\ q_{1 - \alpha/2}(C^{*}_c)\,\bigr]

of the replicates' credits :math:`C^{*}_c` per channel, for conversions and revenue alike
(Efron & Tibshirani, *An Introduction to the Bootstrap*, 1993, ch. 13).

Why this is cheap enough for every run:

* rule models are linear in the counts, so their replicates are one sparse product per block
  of replicates (:func:`bootstrap`);
* the data-driven models (:data:`INTERVAL_MODELS`) work on the paths merged as far as the
  model cannot tell them apart (:func:`distinct_paths`, then :func:`sufficient_groups`: the
  channel set for Shapley, the touches per channel for counterfactual): stored journeys are
  one path row per converting journey, so this is a fraction of the rows; no Python loop over
  rows; the draw is one ``multinomial`` per replicate over the non-empty cells, made once and
  shared by every model (:func:`resample`);
* what the model chose from the data once is kept for every replicate
  (:func:`replicate_params`): ``journey_counterfactual``'s penalty, picked by leave-one-out
  likelihood over eight candidates, is reused;
* ``ordered_shapley`` is linear in the counts like a rule model; ``markov_time_decay`` reads
  each journey's touch ages, so its replicates are drawn over the paths as given (not merged)
  and refitted one by one;
* Markov's transition counts are linear in the path counts: a block of replicates is one
  sparse product, then small solves on the states, exactly (:func:`~touchline.attribution.
  markov.replicates`);
* the logistic models, whose fit costs seconds at 10M events, are not refitted: each
  replicate's coefficients are one Newton step from the data's fit (the one-step bootstrap,
  :func:`~touchline.attribution.counterfactual.one_step_coefficients`), and a block of
  replicates is a few matrix products (:data:`REPLICATES`).

A channel is **flagged** when its interval reaches zero credit (its low bound is at most
:data:`ZERO_CREDIT` of the conversions; Shapley's can be negative): the data cannot tell its
credit from (next to) none, so it is no ground for budget. Models that clip credit at zero
(the counterfactual models' positive drops) cannot have a bound below zero, so "reaches"
rather than "spans": a channel without effect shows as a lower bound at or near zero.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from touchline.attribution import calibrated, counterfactual, journey_counterfactual, markov
from touchline.attribution.paths import PathSet
from touchline.attribution.registry import Credits, Replicator, lookup, one_blas_thread, run_model
from touchline.errors import ConfigError
from touchline.lazy import lazy_module

sparse = lazy_module("scipy.sparse")

log = logging.getLogger(__name__)

#: the models whose credits ``touchline run`` stores with intervals (``auto`` too, as its pick)
INTERVAL_MODELS = ("markov", "shapley", "counterfactual", "journey_counterfactual",
                   "calibrated", "markov_time_decay", "ordered_shapley")
#: replicates of the Python API's ``attribute(ci=...)``; ``touchline run`` and ``attribute`` on the
#: command line use ``settings.bootstrap_replicates`` (40)
BOOTSTRAP_REPLICATES_DEFAULT = 200
CONFIDENCE_DEFAULT = 0.9
#: a low bound under this share of the conversions counts as zero credit: at that bound the
#: channel would get under 0.1 % of the budget, no ground to keep it
ZERO_CREDIT = 1e-3
_BOOTSTRAP_BLOCK = 16  # replicates drawn at once (linear and one-step models): bounds memory
#: models with a function that credits a block of replicates at once, from the path set and
#: the replicates' counts (paths × replicates): Markov exactly, the logistic models by one
#: Newton step (each function's docstring says how and why)
REPLICATES: dict[str, Callable[..., Replicator]] = {
    "markov": markov.replicates,
    "counterfactual": counterfactual.replicates,
    "journey_counterfactual": journey_counterfactual.replicates,
    "calibrated": calibrated.replicates,
}


def numbered_by_first(group: np.ndarray) -> np.ndarray:
    """The same grouping with ids 0, 1, ... in the order of each group's first row."""
    n = len(group)
    groups = int(group.max()) + 1 if n else 0
    first = np.full(groups, n, np.int64)
    np.minimum.at(first, group, np.arange(n))
    renumber = np.empty(groups, np.int64)
    renumber[np.argsort(first, kind="stable")] = np.arange(groups)
    return renumber[group]


def merge_paths(paths: PathSet, group: np.ndarray) -> PathSet:
    """One row per group of paths (``group``: an id per path, numbered by first path as
    :func:`numbered_by_first` gives them), its first path's touches and the group's summed
    counts.

    Positions of lead and opportunity touches, ages and the time-split marks are dropped:
    the models refitted on it (:data:`INTERVAL_MODELS`) do not read them.
    """
    n = paths.n_paths
    groups = int(group.max()) + 1 if n else 0
    keep = np.full(groups, n, np.int64)
    np.minimum.at(keep, group, np.arange(n))
    kept_lengths = paths.lengths[keep]
    offsets = np.zeros(len(keep) + 1, np.int64)
    np.cumsum(kept_lengths, out=offsets[1:])
    starts = np.repeat(paths.offsets[keep], kept_lengths)
    within = np.arange(int(offsets[-1])) - np.repeat(offsets[:-1], kept_lengths)

    def summed(values: np.ndarray) -> np.ndarray:
        return np.bincount(group, values, minlength=len(keep))

    return PathSet(
        labels=paths.labels, offsets=offsets, codes=paths.codes[starts + within],
        conversions=summed(paths.conversions), value=summed(paths.value),
        nulls=summed(paths.nulls), lead_position=np.full(len(keep), -1, np.int64),
        opportunity_position=np.full(len(keep), -1, np.int64), level=paths.level,
    )


def _row_groups(rows: np.ndarray) -> np.ndarray:
    """An id per row of a 2-d array, equal for equal rows (by the rows' bytes)."""
    contiguous = np.ascontiguousarray(rows)
    keys = contiguous.view(np.dtype((np.void, contiguous.dtype.itemsize * rows.shape[1])))
    return np.unique(keys.ravel(), return_inverse=True)[1].ravel()


def sequence_groups(paths: PathSet) -> np.ndarray:
    """An id per path, equal for identical paths: one ``np.unique`` over the paths of each
    length (a few dozen lengths, not a loop over paths)."""
    group = np.empty(paths.n_paths, np.int64)
    next_id = 0
    for length in np.unique(paths.lengths):
        rows = np.flatnonzero(paths.lengths == length)
        index = paths.offsets[rows][:, None] + np.arange(length)[None, :]
        ids = _row_groups(paths.codes[index])
        group[rows] = next_id + ids
        next_id += int(ids.max()) + 1
    return numbered_by_first(group)


def distinct_paths(paths: PathSet) -> PathSet:
    """The same journeys with identical paths merged into one row (counts summed).

    >>> ps = PathSet.from_lists([["a", "b"], ["b"], ["a", "b"]], conversions=[1, 0, 1],
    ...                         nulls=[0, 3, 2])
    >>> merged = distinct_paths(ps)
    >>> merged.n_paths, merged.conversions.tolist(), merged.nulls.tolist()
    (2, [2.0, 0.0], [2.0, 3.0])
    """
    return merge_paths(paths, sequence_groups(paths))


def sufficient_groups(paths: PathSet, model: str) -> np.ndarray | None:
    """An id per (distinct) path, equal for paths ``model`` cannot tell apart: what it reads
    of a path is the same for every path of a group, so its fit and credits on the merged
    paths are those on the paths themselves, on fewer rows. Shapley reads the channel set;
    counterfactual the touches per channel; the others the path itself (None: no merging).
    """
    if model == "shapley" and paths.n_labels <= 63:
        return numbered_by_first(np.unique(paths.channel_sets, return_inverse=True)[1].ravel())
    if model == "counterfactual":
        counts = paths.label_counts
        return numbered_by_first(_row_groups(counts if isinstance(counts, np.ndarray)
                                             else counts.toarray()))
    return None


@dataclass(frozen=True, eq=False)
class Resamples:
    """Bootstrap replicates of a path set's journeys, drawn once and shared by every model:
    the distinct paths and each replicate's converting and non-converting journeys on them
    (paths × replicates)."""

    paths: PathSet
    conversions: np.ndarray
    nulls: np.ndarray
    seed: int

    @property
    def replicates(self) -> int:
        return int(self.conversions.shape[1])


def resample(paths: PathSet, *, replicates: int = BOOTSTRAP_REPLICATES_DEFAULT,
             seed: int = 0, merge: bool = True) -> Resamples:
    """Draw ``replicates`` resamples of the journeys of ``paths`` (module docstring): one
    multinomial draw per replicate over the non-empty cells of the distinct paths (with
    ``merge=False``, of the paths as given, which keeps their touch ages)."""
    if replicates < 2:
        raise ConfigError(f"bootstrap replicates must be >= 2, got {replicates!r}")
    distinct = distinct_paths(paths) if merge else paths
    cells = np.concatenate([distinct.conversions, distinct.nulls])
    drawn = np.zeros((len(cells), replicates), np.float32)  # counts are exact in float32
    filled = np.flatnonzero(cells > 0)
    journeys = round(float(cells.sum()))
    if journeys:
        rng = np.random.default_rng(seed)
        probabilities = cells[filled] / cells[filled].sum()
        for lo in range(0, replicates, _BOOTSTRAP_BLOCK):
            size = min(_BOOTSTRAP_BLOCK, replicates - lo)
            drawn[filled, lo : lo + size] = rng.multinomial(journeys, probabilities, size=size).T
    n = distinct.n_paths
    return Resamples(distinct, drawn[:n], drawn[n:], seed)


def replicate_params(model: str, params: Mapping[str, Any] | None,
                     credits: Credits) -> dict[str, Any]:
    """The model's settings for every replicate: what it chose on the data, kept fixed.

    ``journey_counterfactual`` without a penalty chooses one by leave-one-out likelihood over
    eight candidates; the replicates reuse the chosen penalty (one fit each instead of eight).
    The interval then leaves out the uncertainty of that choice, a second-order effect next
    to the resampling of the journeys. ``markov`` with ``order="auto"`` keeps the order it
    picked, the same way.
    """
    out = dict(params or {})
    if model == "journey_counterfactual" and out.get("regularisation") is None:
        chosen = credits.info.get("regularisation")
        if chosen is not None:
            out["regularisation"] = float(chosen)
    if model in markov.MARKOV_MODELS and out.get("order") == markov.ORDER_AUTO:
        out["order"] = int(credits.info["order"])  # the order picked on the data, kept
    if model == "calibrated":  # its base model, the same way
        base = out.get("base", calibrated.BASE_DEFAULT)
        base_info = credits.info.get("base_info", {})
        out["base_params"] = replicate_params(base, out.get("base_params"), Credits(
            conversions=credits.conversions, value=credits.value, info=base_info))
    return out


def bootstrap(
    paths: PathSet,
    model: str,
    params: Mapping[str, Any] | None = None,
    *,
    replicates: int = BOOTSTRAP_REPLICATES_DEFAULT,
    seed: int = 0,
    credits: Credits | None = None,
    resamples: Resamples | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Credits of ``replicates`` resamples of the journeys: ``(conversions, value)``, each
    ``replicates × labels`` (module docstring for the draw).

    Rule models are linear in the counts: one sparse product per block of replicates. Models
    in :data:`REPLICATES` take a block of replicates at once; the others are refitted per
    replicate, with :func:`replicate_params`. ``resamples`` (from :func:`resample` on the same
    paths) shares one draw between models; without it, one is drawn with ``replicates`` and
    ``seed``.
    """
    credits = credits or run_model(paths, model, params)
    shares = credits.shares(paths)
    if shares is not None:
        return _linear_bootstrap(paths, shares, replicates, seed)
    if lookup(model).needs_ages:  # merging identical paths would lose their touches' ages
        resamples = resample(paths, replicates=replicates, seed=seed, merge=False)
    resamples = resamples or resample(paths, replicates=replicates, seed=seed)
    distinct = resamples.paths
    fixed = replicate_params(model, params, credits)
    group = sufficient_groups(distinct, model)
    merged = merge_paths(distinct, group) if group is not None else distinct
    to_group = (sparse.csr_matrix((np.ones(len(group)), (group, np.arange(len(group)))))
                if group is not None else None)
    # revenue per conversion of each distinct path: the draws carry journeys, not revenue
    per_conversion = np.divide(distinct.value, distinct.conversions,
                               out=np.zeros(distinct.n_paths), where=distinct.conversions > 0)
    count = resamples.replicates
    out_conversions = np.zeros((count, paths.n_labels))
    out_value = np.zeros((count, paths.n_labels))
    credit = REPLICATES[model](merged, credits, **fixed) if model in REPLICATES else None
    for lo in range(0, count, _BOOTSTRAP_BLOCK):
        block = slice(lo, min(lo + _BOOTSTRAP_BLOCK, count))
        conversions = resamples.conversions[:, block].astype(float)
        nulls = resamples.nulls[:, block].astype(float)
        value = conversions * per_conversion[:, None]
        if to_group is not None:
            conversions, nulls, value = (to_group @ conversions, to_group @ nulls,
                                         to_group @ value)
        if credit is not None:
            out_conversions[block], out_value[block] = credit(conversions, nulls, value)
            continue
        for j in range(conversions.shape[1]):  # one refit per replicate
            result = run_model(merged.with_counts(conversions[:, j], value[:, j], nulls[:, j]),
                               model, fixed)
            out_conversions[lo + j], out_value[lo + j] = result.conversions, result.value
    return out_conversions, out_value


def _linear_bootstrap(paths: PathSet, shares: sparse.csr_matrix, replicates: int,
                      seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Rule models: credits are linear in the path counts, so a block of replicates is one
    sparse product (on the paths as given: their positions and ages stay)."""
    if replicates < 2:
        raise ConfigError(f"bootstrap replicates must be >= 2, got {replicates!r}")
    rng = np.random.default_rng(seed)
    cells = np.concatenate([paths.conversions, paths.nulls])
    journeys = round(float(cells.sum()))
    out_conversions = np.zeros((replicates, paths.n_labels))
    out_value = np.zeros((replicates, paths.n_labels))
    if journeys == 0:
        return out_conversions, out_value
    probabilities = cells / cells.sum()
    per_conversion = np.divide(
        paths.value, paths.conversions, out=np.zeros(paths.n_paths), where=paths.conversions > 0
    )
    for lo in range(0, replicates, _BOOTSTRAP_BLOCK):
        size = min(_BOOTSTRAP_BLOCK, replicates - lo)
        draws = rng.multinomial(journeys, probabilities, size=size)[:, : paths.n_paths]
        out_conversions[lo : lo + size] = (shares.T @ draws.T).T
        out_value[lo : lo + size] = (shares.T @ (draws * per_conversion).T).T
    return out_conversions, out_value


def credit_intervals(
    paths: PathSet,
    model: str,
    params: Mapping[str, Any] | None = None,
    *,
    credits: Credits | None = None,
    replicates: int = BOOTSTRAP_REPLICATES_DEFAULT,
    confidence: float = CONFIDENCE_DEFAULT,
    seed: int = 0,
    resamples: Resamples | None = None,
) -> pd.DataFrame:
    """Per label: the credits, their percentile intervals and whether they reach zero.

    Columns ``<level>``, ``conversions``, ``conversions_low``, ``conversions_high``,
    ``value``, ``value_low``, ``value_high``, ``flagged`` (module docstring), in label order.

    One path that every journey takes and converts on: every replicate is the data, so the
    interval has no width.

    >>> ps = PathSet.from_lists([["a", "b"]], conversions=[4])
    >>> credit_intervals(ps, "markov", replicates=20)[["channel", "conversions_low",
    ...                                                "conversions_high", "flagged"]]
      channel  conversions_low  conversions_high  flagged
    0       a              2.0               2.0    False
    1       b              2.0               2.0    False
    """
    if not 0 < confidence < 1:
        raise ConfigError(f"confidence must be between 0 and 1 (e.g. 0.9), got {confidence!r}")
    credits = credits or run_model(paths, model, params)
    with one_blas_thread():
        conversions, value = bootstrap(paths, model, params, replicates=replicates, seed=seed,
                                       credits=credits, resamples=resamples)
    tail = (1 - confidence) / 2
    low, high = np.quantile(conversions, [tail, 1 - tail], axis=0)
    value_low, value_high = np.quantile(value, [tail, 1 - tail], axis=0)
    frame = pd.DataFrame({
        paths.level: paths.labels.astype(str),
        "conversions": credits.conversions, "conversions_low": low, "conversions_high": high,
        "value": credits.value, "value_low": value_low, "value_high": value_high,
        "flagged": low <= ZERO_CREDIT * max(paths.total_conversions, 1.0),
    })
    frame.attrs.update(confidence=confidence, replicates=len(conversions), seed=seed)
    return frame
