"""The model registry: every attribution model is a pure function ``PathSet -> Credits``.

Models register themselves at import with :func:`register`; :data:`MODELS` is then only read.
A model that needs per-touch timings (``time_decay``) says so with ``needs_ages``, so callers
can aggregate touch-level data with timings kept, or refuse a path file with a clear message.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from touchline.attribution.paths import PathSet
from touchline.errors import ConfigError, UnknownModelError, did_you_mean
from touchline.lazy import lazy_module

sparse = lazy_module("scipy.sparse")


@dataclass(frozen=True, eq=False)
class Credits:
    """What a model gives each label (channel, campaign...), aligned with ``PathSet.labels``.

    Attributes
    ----------
    conversions, value
        Credited conversions and revenue per label. They sum to the totals of the paths for
        every model except where a docstring says otherwise (Shapley's negative contributions
        still sum to the total).
    columns
        Model-specific per-label arrays (``removal_effect``, ``std_error``, ``coefficient``...).
    info
        Model-wide facts (conversion probability, method, the Markov transition matrix...).
    rule, touch_weights
        For rule models, the touch weights (each touch's share of its path's conversion, summing
        to 1 per path), in per-path form or per touch. Credits are linear in the path counts
        then, so the bootstrap is one sparse product.
    """

    conversions: np.ndarray
    value: np.ndarray
    columns: Mapping[str, np.ndarray] = field(default_factory=dict)
    info: Mapping[str, Any] = field(default_factory=dict)
    rule: RuleWeights | None = None
    touch_weights: np.ndarray | None = None

    def shares(self, paths: PathSet) -> sparse.csr_matrix | None:
        """Paths × labels matrix of each path's share per label, for linear (rule) models."""
        weights = self.rule.touch_weights(paths) if self.rule is not None else self.touch_weights
        if weights is None:
            return None
        return sparse.csr_matrix(
            (weights, (paths.row, paths.codes)), shape=(paths.n_paths, paths.n_labels)
        )


@dataclass(frozen=True, eq=False)
class RuleWeights:
    r"""The touch weights of a rule model, stated per path rather than per touch.

    .. math:: w_i = \gamma(c_i)\,\Bigl(b_p + \sum_k a_{k,p}\,[\,i = t_{k,p}\,]\Bigr)

    ``base`` :math:`b_p` applies to every touch of path :math:`p` (with ``distinct``: to the
    first touch of each distinct label only), ``at`` adds :math:`a_{k,p}` at position
    :math:`t_{k,p}` (-1: none; the positions of different :math:`k` differ within a path),
    ``label_scale`` is :math:`\gamma` (default 1), ``extra`` another such term added on top.

    Why: with this form credits need only per-path arrays and the paths × labels count matrix,
    :math:`C = \gamma \odot M^\top (\mathrm{conv} \odot b) + \sum_k \ldots`, which is several
    times faster than any pass over 2M touches; :meth:`touch_weights` gives the same weights per
    touch, for the bootstrap and for tests.
    """

    base: np.ndarray | None = None
    at: tuple[tuple[np.ndarray, np.ndarray], ...] = ()
    label_scale: np.ndarray | None = None
    distinct: bool = False
    extra: RuleWeights | None = None

    def credits(self, paths: PathSet, per_path: np.ndarray) -> np.ndarray:
        r""":math:`\sum_p x_{p,j} \sum_{i \in p, c_i = c} w_i` for each label and column
        ``j`` of ``per_path`` (paths × columns)."""
        out = np.zeros((paths.n_labels, per_path.shape[1]))
        if self.base is not None:
            matrix = paths.label_presence if self.distinct else paths.label_counts
            # (columns × paths) @ (paths × labels): the fast orientation for a dense matrix
            out += np.asarray((per_path * self.base[:, None]).T @ matrix).T
            if self.label_scale is not None:
                out *= self.label_scale[:, None]
        starts = paths.offsets[:-1]
        for position, amount in self.at:
            # no boolean selection: absent positions point at the first touch with weight 0
            labels = paths.codes[starts + np.maximum(position, 0)]
            weight = np.where(position >= 0, amount, 0.0)
            if self.label_scale is not None:
                weight = weight * self.label_scale[labels]
            for j in range(per_path.shape[1]):
                out[:, j] += np.bincount(labels, per_path[:, j] * weight, minlength=paths.n_labels)
        if self.extra is not None:
            out += self.extra.credits(paths, per_path)
        return out

    def touch_weights(self, paths: PathSet) -> np.ndarray:
        """The same weights, one per touch."""
        if self.base is None:
            weights = np.zeros(len(paths.codes))
        else:
            weights = self.base[paths.row]
            if self.distinct:
                weights = weights * paths.first_occurrence()
        starts = paths.offsets[:-1]
        for position, amount in self.at:
            valid = position >= 0
            weights[starts[valid] + position[valid]] += amount[valid]
        if self.label_scale is not None:
            weights = weights * self.label_scale[paths.codes]
        if self.extra is not None:
            weights = weights + self.extra.touch_weights(paths)
        return weights


ModelFunction = Callable[..., Credits]
#: credits of a block of bootstrap replicates: ``(conversions, nulls, value)``, each paths ×
#: replicates, to ``(conversions, value)`` credits, each replicates × labels
Replicator = Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class Model:
    """One registered model: its key, function and what input it needs."""

    name: str
    function: ModelFunction
    needs_ages: bool = False
    #: the model reads the ages of non-converting journeys too (weights transitions that
    #: end in ``(null)``), so stored journeys must keep the open ones' timings
    open_ages: bool = False

    @property
    def summary(self) -> str:
        """First line of the docstring, for help texts."""
        return (self.function.__doc__ or self.name).strip().splitlines()[0]


MODELS: dict[str, Model] = {}


def register(name: str, *, needs_ages: bool = False,
             open_ages: bool = False) -> Callable[[ModelFunction], ModelFunction]:
    """Add a model function to :data:`MODELS` under ``name`` (the key used everywhere)."""

    def decorate(function: ModelFunction) -> ModelFunction:
        if name in MODELS:
            raise ValueError(f"model {name!r} is registered twice")
        MODELS[name] = Model(name, function, needs_ages, open_ages)
        return function

    return decorate


def lookup(name: str, source: str = "model") -> Model:
    """The model called ``name``, or :class:`UnknownModelError` listing the choices."""
    try:
        return MODELS[name]
    except KeyError:
        raise UnknownModelError(
            f"unknown model {name!r} in {source}{did_you_mean(name, MODELS)}; choose from "
            f"{', '.join(sorted(MODELS))}"
        ) from None


@contextmanager
def one_blas_thread() -> Iterator[None]:
    """Run the block with BLAS (numpy's and SciPy's OpenBLAS) on one thread.

    The models' dense products are of tall, thin matrices (some 10^5 distinct paths by a few
    dozen columns): a second thread gains at most half their time, while on a machine whose
    cores are busy OpenBLAS's threads wait on each other for far longer than the product
    takes. On the 2-core benchmark machine under load, ``auto`` on the purchase paths of 1M
    events (27,756 paths) took 11-44 s with two threads and 1.2-2.2 s with one.
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        yield


def run_model(paths: PathSet, model: str, params: Mapping[str, Any] | None = None) -> Credits:
    """Call a registered model with keyword parameters, naming bad ones clearly (BLAS on one
    thread: :func:`one_blas_thread`)."""
    entry = lookup(model)
    try:
        with one_blas_thread():
            return entry.function(paths, **dict(params or {}))
    except TypeError as exc:
        if "unexpected keyword" in str(exc):
            raise ConfigError(
                f"model {model!r}: {exc}".replace(f"{entry.function.__name__}() ", "")
            ) from exc
        raise


def credits_from_weights(paths: PathSet, weights: np.ndarray, **info: Any) -> Credits:
    r"""Credits of a rule model from each touch's share of its path.

    .. math:: C_c = \sum_p \mathrm{conv}_p \sum_{i \in p,\ ch_i = c} w_i

    and the same with revenue, so revenue follows exactly the conversion shares.
    """
    n = paths.n_labels
    buffer = weights * paths.conversions[paths.row]  # one per-touch buffer, reused for revenue
    conversions = np.bincount(paths.codes, buffer, minlength=n)
    np.multiply(weights, paths.value[paths.row], out=buffer)
    value = np.bincount(paths.codes, buffer, minlength=n)
    return Credits(conversions=conversions, value=value, info=info, touch_weights=weights)


def credits_from_rule(paths: PathSet, rule: RuleWeights, **info: Any) -> Credits:
    r"""Credits of a rule model in per-path form (:class:`RuleWeights`); revenue alike."""
    both = rule.credits(paths, np.column_stack([paths.conversions, paths.value]))
    return Credits(conversions=both[:, 0], value=both[:, 1], info=info, rule=rule)


def per_path_sum(paths: PathSet, touch_values: np.ndarray) -> np.ndarray:
    """Sum of a per-touch array within each path."""
    return np.bincount(paths.row, touch_values, minlength=paths.n_paths)


def rescaled(amounts: np.ndarray, totals: np.ndarray) -> np.ndarray:
    """Each row of ``amounts`` (replicates × labels) scaled to sum to its total (zero rows
    stay zero)."""
    sums = amounts.sum(axis=1)
    return amounts * np.divide(totals, sums, out=np.zeros(len(sums)), where=sums > 0)[:, None]


def proportional(paths: PathSet, credits: Credits) -> Replicator:
    """Replicates that keep the data's credit shares, scaled to each replicate's conversions
    and revenue: for a model with nothing to refit (every journey has one outcome)."""
    shares = credits.conversions / max(paths.total_conversions, 1e-300)
    value_shares = credits.value / max(paths.total_value, 1e-300)

    def credit(conversions: np.ndarray, nulls: np.ndarray,
               value: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return (np.outer(conversions.sum(axis=0), shares),
                np.outer(value.sum(axis=0), value_shares))

    return credit
