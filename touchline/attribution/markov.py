r"""Exact Markov-chain attribution with removal effects (order 1 to 4), by sparse linear algebra.

The chain. Each journey walks ``(start) → s_1 → … → s_m`` then into ``(conversion)`` or
``(null)``. At order :math:`k` a state is the tuple of the last :math:`k` touches (shorter at the
start of a path). Consecutive repeats of one label are collapsed first (``A > A > B`` is
``A > B``): that drops the self-loops, which would only lengthen the walk. Transition
probabilities are the observed transition counts over *all* journeys, converting or not,
normalised per state.

Absorption. With :math:`Q` the transitions among transient states (``(start)`` and the tuple
states) and :math:`r` the column into ``(conversion)``, the conversion probability from each
state solves

.. math:: (I - Q)\,x = r, \qquad P(\mathrm{conv}) = x_{\mathrm{start}}.

Removal effect. Removing channel :math:`c` sends every transition into a state that contains
:math:`c` to ``(null)``: solve the same system on the states without :math:`c`,

.. math:: RE_c = 1 - \frac{P(\mathrm{conv} \mid c \text{ removed})}{P(\mathrm{conv})}.

Credits. :math:`C_c = RE_c / \sum_d RE_d \times` total conversions, and revenue is credited with
the same shares (:math:`V_c = RE_c / \sum_d RE_d \times` total revenue): the chain models
whether a journey converts, not how much it is worth.

Each removal is one sparse linear solve (LU, or BiCGSTAB with a checked residual below 1e-12
for large chains), exact to float precision, where ChannelAttribution simulates walks.
Reference: Anderl et al., "Mapping the customer journey: Lessons learned from graph-based online
attribution modeling", IJRM 33 (2016).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from touchline.attribution.paths import PATH_SEP_DEFAULT, PathSet
from touchline.attribution.registry import Credits, Replicator, register
from touchline.errors import ConfigError, InputError
from touchline.lazy import lazy_module

sparse = lazy_module("scipy.sparse")
sparse_linalg = lazy_module("scipy.sparse.linalg")

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

ORDER_DEFAULT = 1
ORDER_MAX = 4
#: ``order`` value that picks 1-4 by held-out likelihood
ORDER_AUTO = "auto"
#: the models that take ``order`` (and ``settings.markov_order`` in ``touchline run``)
MARKOV_MODELS = ("markov", "markov_time_decay")
#: half-life of ``markov_time_decay``'s transition weights, days
HALF_LIFE_DAYS_DEFAULT = 7.0
START, CONVERSION, NULL = "(start)", "(conversion)", "(null)"
DIRECT_SOLVE_MAX_STATES = 2_000
DENSE_SOLVE_MAX_STATES = 200
_LOOKUP_MAX = 1 << 22  # dense tables up to 4M entries (32 MB) instead of sorting
RESIDUAL_TOLERANCE = 1e-12


@dataclass(frozen=True)
class Chain:
    """An absorbing chain built from paths.

    ``digits[s]`` holds the 1-based label codes of state ``s`` (most recent last, 0 = none);
    states ``0..S-1`` are tuples, ``S`` is start, ``S+1`` conversion, ``S+2`` null. ``counts``
    is the sparse matrix of transition counts over those ``S + 3`` states.
    """

    digits: np.ndarray
    counts: sparse.csr_matrix

    @property
    def n_states(self) -> int:
        return len(self.digits)

    def probabilities(self) -> sparse.csr_matrix:
        """Row-normalised transition matrix (absorbing rows stay empty)."""
        totals = np.asarray(self.counts.sum(axis=1)).ravel()
        inverse = np.divide(1.0, totals, out=np.zeros_like(totals), where=totals > 0)
        return sparse.diags(inverse) @ self.counts


def collapse_repeats(paths: PathSet) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(codes, row, offsets)`` with consecutive repeats of a label within a path removed."""
    codes, row = paths.codes, paths.row
    keep = np.ones(len(codes), bool)
    keep[1:] = (codes[1:] != codes[:-1]) | (row[1:] != row[:-1])
    kept_row = row[keep]
    offsets = np.zeros(paths.n_paths + 1, np.int64)
    np.cumsum(np.bincount(kept_row, minlength=paths.n_paths), out=offsets[1:])
    return codes[keep], kept_row, offsets


def _ids(key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(distinct keys, id of each key)``: a lookup table when the key range is small (no sort,
    little memory), else ``np.unique``."""
    top = int(key.max()) + 1 if len(key) else 1
    if top > _LOOKUP_MAX:
        unique, inverse = np.unique(key, return_inverse=True)
        return unique, inverse.ravel()
    present = np.zeros(top, bool)
    present[key] = True
    lookup = np.cumsum(present) - 1
    return np.flatnonzero(present), lookup[key]


def _transition_counts(
    sources: list[np.ndarray], targets: list[np.ndarray], weights: list[np.ndarray], size: int
) -> sparse.csr_matrix:
    """Summed weights of (source, target) pairs: one bincount when the matrix is small."""
    if size * size <= _LOOKUP_MAX:
        dense = np.zeros(size * size)
        for src, dst, w in zip(sources, targets, weights, strict=True):
            dense += np.bincount(src * size + dst, w, minlength=size * size)
        counts = sparse.csr_matrix(dense.reshape(size, size))
    else:
        counts = sparse.coo_matrix(
            (np.concatenate(weights), (np.concatenate(sources), np.concatenate(targets))),
            shape=(size, size),
        ).tocsr()
    counts.eliminate_zeros()
    return counts


def _entries(paths: PathSet, order: int) -> _Entries:
    """The chain's states and each journey's transitions, vectorised over all touches."""
    if not isinstance(order, int) or not 1 <= order <= ORDER_MAX:
        raise ConfigError(f"markov order must be an integer from 1 to {ORDER_MAX}, got {order!r}")
    base = paths.n_labels + 1
    if float(base) ** order >= 2.0**62:
        raise ConfigError(
            f"markov order {order} over {paths.n_labels} labels overflows the state key; "
            "use a lower order or a coarser level"
        )
    codes, row, offsets = collapse_repeats(paths)
    key = codes.astype(np.int64) + 1
    if order > 1:
        position = np.arange(len(codes)) - offsets[row]
        for back in range(1, order):
            previous = np.zeros(len(codes), np.int64)
            previous[back:] = codes[:-back] + 1
            previous[position < back] = 0  # before the path's start: no touch
            key += previous * base**back
        del position, previous
    unique, state = _ids(key)
    del key, codes
    digits = np.stack([(unique // base**b) % base for b in reversed(range(order))], axis=1)
    n_states = len(unique)
    size = n_states + 3
    start, conversion, null = n_states, n_states + 1, n_states + 2
    first, last = offsets[:-1], offsets[1:] - 1
    same_path = row[:-1] == row[1:]
    n_paths = paths.n_paths
    every = np.arange(n_paths)
    return _Entries(
        digits=digits, size=size,
        sources=(np.full(n_paths, start), state[:-1][same_path], state[last], state[last]),
        targets=(state[first], state[1:][same_path], np.full(n_paths, conversion),
                 np.full(n_paths, null)),
        paths=(every, row[:-1][same_path], every, every),
        touches=(first, np.flatnonzero(same_path), last, last),
    )


@dataclass(frozen=True)
class _Entries:
    """A chain's transitions before counting: four groups of ``(source, target)`` pairs, each
    pair taken by the journeys of path ``paths[i]`` (groups: start → first state, state →
    next state, last state → conversion, last state → null)."""

    digits: np.ndarray
    size: int
    sources: tuple[np.ndarray, ...]
    targets: tuple[np.ndarray, ...]
    paths: tuple[np.ndarray, ...]
    #: per group, the (collapsed) touch each pair leaves from; from ``(start)``: the first
    touches: tuple[np.ndarray, ...] = ()

    def weights(self, conversions: np.ndarray, nulls: np.ndarray,
                decay: np.ndarray | None = None) -> list[np.ndarray]:
        journeys = conversions + nulls
        out = [journeys[self.paths[0]], journeys[self.paths[1]], conversions[self.paths[2]],
               nulls[self.paths[3]]]
        if decay is None:
            return out
        return [w * decay[t] for w, t in zip(out, self.touches, strict=True)]


def build_chain(paths: PathSet, order: int = ORDER_DEFAULT,
                half_life_days: float | None = None) -> Chain:
    """Count the transitions of every journey, vectorised over all touches; with
    ``half_life_days``, each weighted by the recency of the touch it leaves
    (:func:`recency_weights`)."""
    entries = _entries(paths, order)
    decay = recency_weights(paths, half_life_days) if half_life_days is not None else None
    return Chain(digits=entries.digits, counts=_transition_counts(
        list(entries.sources), list(entries.targets),
        entries.weights(paths.conversions, paths.nulls, decay), entries.size))


def recency_weights(paths: PathSet, half_life_days: float) -> np.ndarray:
    r"""Per collapsed touch (:func:`collapse_repeats`), :math:`2^{-a / h}`: :math:`a` the days
    from the touch to its journey's end (conversion, or last touch of an open journey) and
    :math:`h` the half-life. A run of repeats is the walk's one visit to the state, left from
    its latest touch, so the run takes that touch's age."""
    if paths.ages is None:
        raise InputError(
            "markov_time_decay needs touch timings: pass a touch-level table (journey_id, "
            "touch_at, channel, converted, converted_at) or stored journeys, not aggregated "
            "paths")
    if not half_life_days > 0:
        raise ConfigError(f"half_life_days must be > 0, got {half_life_days!r}")
    codes, row = paths.codes, paths.row
    last_of_run = np.ones(len(codes), bool)
    last_of_run[:-1] = (codes[:-1] != codes[1:]) | (row[:-1] != row[1:])
    # the same runs as collapse_repeats (which keeps each run's first touch), in order
    return np.exp2(-np.maximum(paths.ages[last_of_run], 0.0) / half_life_days)


def replicates(paths: PathSet, credits: Credits, *,
               order: int = ORDER_DEFAULT) -> Replicator:
    """What credits bootstrap replicates of ``paths``, exactly: a function of replicate counts
    and revenue (paths × replicates) giving ``(conversions, value)``, each replicates × labels
    (``credits`` is unused: the chain has nothing fitted).

    The chain's transition counts are linear in the path counts, so its states and pairs are
    found once and a block of replicates' counts is one sparse product; only the removal
    effects (small solves on the states) are computed per replicate.
    """
    entries = _entries(paths, order)
    key = np.concatenate([s * entries.size + t for s, t in
                          zip(entries.sources, entries.targets, strict=True)])
    pairs, pair = np.unique(key, return_inverse=True)
    n_paths = paths.n_paths
    kind = np.repeat(np.arange(4), [len(p) for p in entries.paths])
    on_path = np.concatenate(entries.paths)

    def incidence(kinds: tuple[int, ...]) -> sparse.csr_matrix:
        take = np.isin(kind, kinds)
        return sparse.csr_matrix((np.ones(int(take.sum())), (pair.ravel()[take], on_path[take])),
                                 shape=(len(pairs), n_paths))

    walked, converted, lost = incidence((0, 1)), incidence((2,)), incidence((3,))
    source, target = pairs // entries.size, pairs % entries.size

    def credit(conversions: np.ndarray, nulls: np.ndarray,
               value: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        counts = walked @ (conversions + nulls) + converted @ conversions + lost @ nulls
        shares = np.zeros((conversions.shape[1], paths.n_labels))
        for b in range(conversions.shape[1]):  # small solves on the states, per replicate
            matrix = sparse.csr_matrix((counts[:, b], (source, target)),
                                       shape=(entries.size, entries.size))
            matrix.eliminate_zeros()
            _, effects = removal_effects(Chain(entries.digits, matrix), paths.n_labels)
            if effects.sum() > 0:
                shares[b] = effects / effects.sum()
        return shares * conversions.sum(axis=0)[:, None], shares * value.sum(axis=0)[:, None]

    return credit


def _conversion_probability(q: sparse.csr_matrix | np.ndarray, r: np.ndarray,
                            keep: np.ndarray) -> float:
    """:math:`x_{start}` of :math:`(I - Q)x = r` on the kept transient states (start is last).

    Chains of up to :data:`DENSE_SOLVE_MAX_STATES` states use a dense LU, larger ones a
    sparse LU. Higher orders make LU fill in badly (order 4 on ten channels:
    8,000 states, seconds per solve), so above :data:`DIRECT_SOLVE_MAX_STATES` BiCGSTAB solves
    to a residual of :data:`RESIDUAL_TOLERANCE`, checked afterwards, with LU as the fallback.
    """
    index = np.flatnonzero(keep)
    rhs = r[index]
    if isinstance(q, np.ndarray):
        return float(np.linalg.solve(np.identity(len(index)) - q[np.ix_(index, index)], rhs)[-1])
    system = (sparse.identity(len(index), format="csr") - q[index][:, index]).tocsc()
    if len(index) > DIRECT_SOLVE_MAX_STATES:
        x, info = sparse_linalg.bicgstab(system, rhs, rtol=RESIDUAL_TOLERANCE * 1e-2, atol=0.0,
                                         maxiter=10_000)
        if info == 0 and np.abs(system @ x - rhs).max() <= RESIDUAL_TOLERANCE:
            return float(x[-1])
        log.warning("markov: iterative solve did not converge (info %d); using sparse LU", info)
    x = sparse_linalg.spsolve(system, rhs)
    return float(np.atleast_1d(x)[-1])


def removal_effects(chain: Chain, n_labels: int) -> tuple[float, np.ndarray]:
    """``(P(conversion), RE per label)``: one sparse solve per label, each exact."""
    n = chain.n_states
    p = chain.probabilities()
    transient = n + 1  # tuple states and (start)
    q: sparse.csr_matrix | np.ndarray = p[:transient, :transient].tocsr()
    if transient <= DENSE_SOLVE_MAX_STATES:  # scipy's sparse set-up costs more than the solve
        q = q.toarray()
    r = np.asarray(p[:transient, n + 1].todense()).ravel()
    everything = np.ones(transient, bool)
    base = _conversion_probability(q, r, everything)
    effects = np.zeros(n_labels)
    if base <= 0:
        return base, effects
    for label in range(n_labels):
        keep = everything.copy()
        keep[:n] = ~(chain.digits == label + 1).any(axis=1)
        effects[label] = 1.0 - _conversion_probability(q, r, keep) / base
    # removing states can only lower the absorption probability: clip solver noise
    return base, np.clip(effects, 0.0, None)


def transition_matrix(
    paths: PathSet, order: int = ORDER_DEFAULT, sep: str = PATH_SEP_DEFAULT
) -> pd.DataFrame:
    """The chain's non-zero transitions: ``from_state``, ``to_state``, ``count``, ``probability``.

    Tuple states are shown as their labels joined by ``sep`` (display only).
    """
    import pandas as pd

    chain = build_chain(paths, order)
    names = [
        sep.join(str(paths.labels[d - 1]) for d in digits if d > 0) for digits in chain.digits
    ] + [START, CONVERSION, NULL]
    counts = chain.counts.tocoo()
    totals = np.asarray(chain.counts.sum(axis=1)).ravel()
    frame = pd.DataFrame(
        {
            "from_state": np.asarray(names, dtype=object)[counts.row],
            "to_state": np.asarray(names, dtype=object)[counts.col],
            "count": counts.data,
            "probability": counts.data / totals[counts.row],
        }
    )
    return frame.sort_values(["from_state", "to_state"], ignore_index=True)


def _resolve_order(paths: PathSet, order: int | str) -> tuple[int, dict[str, Any]]:
    """``(order, what the choice was)``: ``"auto"`` scores orders 1-4 by held-out likelihood
    (:func:`~touchline.attribution.select.choose_markov_order`), any other value is used as
    given (and checked when the chain is built)."""
    if order != ORDER_AUTO:
        return order, {}  # type: ignore[return-value]
    from touchline.attribution.select import choose_markov_order  # select imports this module

    chosen = choose_markov_order(paths)
    return chosen.order, {"order_choice": chosen.reason, "order_scores": chosen.scores}


def _chain_credits(paths: PathSet, order: int | str, half_life_days: float | None,
                   name: str) -> Credits:
    order, choice = _resolve_order(paths, order)
    chain = build_chain(paths, order, half_life_days)
    probability, effects = removal_effects(chain, paths.n_labels)
    total = effects.sum()
    shares = effects / total if total > 0 else np.zeros_like(effects)
    log.info("%s order %d: %d states, P(conversion) = %.6g", name, order, chain.n_states,
             probability)
    return Credits(
        conversions=shares * paths.total_conversions,
        value=shares * paths.total_value,
        columns={"removal_effect": effects},
        info={"order": order, "conversion_probability": probability, "states": chain.n_states,
              **({"half_life_days": half_life_days} if half_life_days is not None else {}),
              **choice},
    )


@register("markov")
def markov(paths: PathSet, *, order: int | str = ORDER_DEFAULT) -> Credits:
    r"""Exact absorbing Markov chain of order 1-4 (or ``"auto"``); credit by normalised
    removal effects.

    .. math:: C_c = \frac{RE_c}{\sum_d RE_d}\,\sum_p \mathrm{conv}_p,\qquad
              RE_c = 1 - \frac{P(\mathrm{conv} \mid c \text{ removed})}{P(\mathrm{conv})}

    Revenue uses the same shares. One touch: a path ``A`` that always converts, beside ``B``
    that never does, gives :math:`RE_A = 1`, :math:`RE_B = 0`, so A gets everything. Two
    touches: ``A > B`` alone (converting) gives both removal effects 1, so 1/2 each. See the
    module docstring for the chain.

    ``order="auto"`` picks the order 1-4 whose chain best predicts held-out journeys (the
    split and score of ``auto``, :func:`~touchline.attribution.select.choose_markov_order`);
    ``info`` then says which and why (``order_choice``) with every order's held-out log-loss
    (``order_scores``).
    """
    return _chain_credits(paths, order, None, "markov")


@register("markov_time_decay", needs_ages=True, open_ages=True)
def markov_time_decay(paths: PathSet, *, half_life_days: float = HALF_LIFE_DAYS_DEFAULT,
                      order: int | str = ORDER_DEFAULT) -> Credits:
    r"""Markov chain whose transition counts are weighted by the recency of each transition:
    what journeys did close to their decision counts more than what they did weeks before.

    Each transition of journey :math:`j` is weighted by the touch it leaves (from
    ``(start)``: the first touch), :math:`w = 2^{-a / h}`, with :math:`a` the days from that
    touch to the journey's end (its conversion, or the last touch of an open journey) and
    :math:`h` = ``half_life_days`` (default 7):

    .. math:: P(u \to v) = \frac{\sum_j n_j \sum_{t \in j:\ u \to v} 2^{-a_t / h}}
                                 {\sum_{v'} \sum_j n_j \sum_{t \in j:\ u \to v'}
                                  2^{-a_t / h}}

    (:math:`n_j` the journeys on the path; repeats collapsed as in ``markov``, a run taking
    the age of its latest touch). Removal effects and credits then as ``markov``; as
    :math:`h \to \infty` it is ``markov``. Needs touch timings, like ``time_decay``. One
    touch: as ``markov`` when every journey is one touch at its end. Two touches: ``A > B``
    converting with A one half-life before the conversion, ``A`` converting and ``B`` not
    (both at their end) credit A 1.2 and B 0.8 under ``markov`` and A 1.25, B 0.75 here: the
    old ``A → B`` step counts half, so A looks more often like a journey's converting step.
    This is touchline's own combination of the ``time_decay`` weights with the chain of
    Anderl et al. (2016); it does not come from a paper.
    """
    return _chain_credits(paths, order, half_life_days, "markov_time_decay")
