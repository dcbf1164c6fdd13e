r"""Shapley values over channel sets: exact by bitmask transforms, sampled beyond.

Players are the labels (channels). A coalition :math:`S` is a set of labels, stored as a bitmask
(bit :math:`c` set when label :math:`c` is in it), so membership is exact: ``eta`` is never "in"
``beta``. Every label of a journey counts, with no truncation to the last few.

Coalition value, chosen with ``coalition``:

* ``"conversions"`` (default): :math:`v(S) = \sum_{T \subseteq S} \mathrm{conv}(T)`, the
  conversions of journeys whose channel set is :math:`S` or a subset of it. This game is a sum
  of unanimity games, so its Shapley value splits each journey's conversion equally among its
  distinct channels (linear with ``dedupe``); it never goes negative.
* ``"conversion_rate"``: :math:`v(S) = \sum_{T \subseteq S} \mathrm{conv}(T) / \sum_{T
  \subseteq S} \mathrm{journeys}(T)`, which uses the non-converting journeys too. A channel whose
  journeys convert less than those without it gets a **negative** value; it is reported, never
  clipped.

Credits: :math:`C_c = \varphi_c \cdot \sum_p \mathrm{conv}_p / v(N)`, so that they sum to the
total conversions (efficiency: :math:`\sum_c \varphi_c = v(N) - v(\emptyset)`). Revenue is a
second game of the same kind with revenue in place of conversions.

Exact computation for :math:`n` labels: the subset sums ("zeta transform") and the Shapley sum

.. math:: \varphi_c = \sum_{S \not\ni c} \frac{|S|!\,(n - |S| - 1)!}{n!}\,
          \bigl(v(S \cup \{c\}) - v(S)\bigr)

each take :math:`O(n\,2^n)` vectorised operations (10 channels: 1,024 coalitions). Above
``max_exact`` labels, random permutations estimate :math:`\varphi` and the column ``std_error``
states the standard error of each estimate.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from touchline.attribution.paths import PathSet
from touchline.attribution.registry import Credits, RuleWeights, credits_from_rule, register
from touchline.errors import ConfigError

log = logging.getLogger(__name__)

COALITIONS = ("conversions", "conversion_rate")
MAX_EXACT_DEFAULT = 20
#: per-position columns of ``ordered_shapley``: positions from this one on are pooled
MAX_POSITIONS_DEFAULT = 3
PERMUTATIONS_DEFAULT = 2_000
_CHUNK = 4_000_000  # subset tests per block in the sampled estimator: bounds memory


def subset_sums(f: np.ndarray, n: int) -> np.ndarray:
    r"""Zeta transform: :math:`g(S) = \sum_{T \subseteq S} f(T)` for every bitmask :math:`S`."""
    g = f.astype(float).copy()
    for bit in range(n):
        view = g.reshape(-1, 2, 2**bit)
        view[:, 1, :] += view[:, 0, :]
    return g


def shapley_from_values(v: np.ndarray, n: int) -> np.ndarray:
    """Exact Shapley values of the game ``v`` given on all ``2**n`` bitmasks."""
    masks = np.arange(2**n, dtype=np.int64)
    size = np.zeros(2**n, np.int64)
    for bit in range(n):
        size += (masks >> bit) & 1
    weight_by_size = np.array(
        [math.factorial(s) * math.factorial(n - s - 1) / math.factorial(n) for s in range(n)]
    )
    phi = np.zeros(n)
    for bit in range(n):
        without = masks.reshape(-1, 2, 2**bit)[:, 0, :].ravel()
        gain = v[without | (1 << bit)] - v[without]
        phi[bit] = float(weight_by_size[size[without]] @ gain)
    return phi


def _game(
    conversions: np.ndarray, value: np.ndarray, journeys: np.ndarray, coalition: str
) -> tuple[np.ndarray, np.ndarray]:
    """Conversion and revenue games from subset sums (any shape: all masks or a sample)."""
    if coalition == "conversions":
        return conversions, value
    safe = np.where(journeys > 0, journeys, 1.0)
    return (
        np.where(journeys > 0, conversions / safe, 0.0),
        np.where(journeys > 0, value / safe, 0.0),
    )


def _exact(paths: PathSet, masks: np.ndarray, coalition: str) -> tuple[np.ndarray, np.ndarray]:
    n = paths.n_labels
    index = masks.astype(np.int64)

    def zeta(weights: np.ndarray) -> np.ndarray:
        return subset_sums(np.bincount(index, weights, minlength=2**n), n)

    v, w = _game(
        zeta(paths.conversions), zeta(paths.value), zeta(paths.conversions + paths.nulls), coalition
    )
    return shapley_from_values(v, n), shapley_from_values(w, n)


def _sampled(
    paths: PathSet, masks: np.ndarray, coalition: str, permutations: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Monte Carlo over permutations: mean marginal contribution and its standard error."""
    n = paths.n_labels
    sets, inverse = np.unique(masks, return_inverse=True)
    by_set = [
        np.bincount(inverse, w, minlength=len(sets))
        for w in (paths.conversions, paths.value, paths.conversions + paths.nulls)
    ]
    rng = np.random.default_rng(seed)
    order = np.argsort(rng.random((permutations, n)), axis=1)
    bits = np.left_shift(np.uint64(1), order.astype(np.uint64))
    after = np.bitwise_or.accumulate(bits, axis=1)  # coalition once the label has joined
    coalitions = np.concatenate([np.zeros((permutations, 1), np.uint64), after], axis=1).ravel()
    values = np.zeros((2, len(coalitions)))
    step = max(1, _CHUNK // max(len(sets), 1))
    for lo in range(0, len(coalitions), step):
        block = coalitions[lo : lo + step]
        inside = (sets[:, None] & ~block[None, :]) == 0  # T ⊆ S, by bitmask
        sums = [w @ inside for w in by_set]
        values[0, lo : lo + step], values[1, lo : lo + step] = _game(*sums, coalition)
    values = values.reshape(2, permutations, n + 1)
    gains = np.diff(values, axis=2)  # gains[:, p, j]: label order[p, j] joining
    per_label = np.zeros((2, permutations, n))
    rows = np.repeat(np.arange(permutations), n)
    per_label[:, rows, order.ravel()] = gains.reshape(2, -1)
    mean = per_label.mean(axis=1)
    error = per_label.std(axis=1, ddof=1) / math.sqrt(permutations)
    return mean[0], mean[1], error[0], error[1]


@register("shapley")
def shapley(
    paths: PathSet,
    *,
    coalition: str = "conversions",
    max_exact: int = MAX_EXACT_DEFAULT,
    permutations: int = PERMUTATIONS_DEFAULT,
    seed: int = 0,
) -> Credits:
    r"""Shapley value over channel sets (bitmasks): exact up to ``max_exact`` labels.

    .. math:: C_c = \varphi_c \cdot \frac{\sum_p \mathrm{conv}_p}{v(N)}

    with the coalition value of the module docstring (default: conversions of journeys whose
    channel set is within the coalition). One touch: a journey on ``A`` alone gives its
    conversion to A. Two touches: ``A > B`` gives 1/2 each under ``"conversions"``; under
    ``"conversion_rate"`` it depends on how journeys on ``A`` and on ``B`` alone convert, and
    may be negative.
    """
    if coalition not in COALITIONS:
        raise ConfigError(f"shapley coalition {coalition!r}: choose from {', '.join(COALITIONS)}")
    n = paths.n_labels
    masks = paths.channel_sets
    columns: dict[str, np.ndarray] = {}
    if n <= max_exact:
        phi, phi_value = _exact(paths, masks, coalition)
        method = "exact"
    else:
        if permutations < 2:
            raise ConfigError(f"shapley permutations must be >= 2, got {permutations!r}")
        phi, phi_value, error, error_value = _sampled(paths, masks, coalition, permutations, seed)
        method = "sampled"
    total_conversions, total_value = phi.sum(), phi_value.sum()
    scale = paths.total_conversions / total_conversions if total_conversions else 0.0
    scale_value = paths.total_value / total_value if total_value else 0.0
    if method == "sampled":
        columns["std_error"] = error * scale
        columns["value_std_error"] = error_value * scale_value
        log.info(
            "shapley: %d labels > max_exact=%d, %d sampled permutations", n, max_exact, permutations
        )
    columns["shapley_value"] = phi
    credits = phi * scale
    negative = [str(paths.labels[i]) for i in np.flatnonzero(credits < 0)]
    if negative:
        log.info("shapley: negative contributions for %s", ", ".join(negative))
    return Credits(
        conversions=credits,
        value=phi_value * scale_value,
        columns=columns,
        info={
            "coalition": coalition,
            "method": method,
            "negative": negative,
            **({"permutations": permutations} if method == "sampled" else {}),
        },
    )


@register("ordered_shapley")
def ordered_shapley(paths: PathSet, *, max_positions: int = MAX_POSITIONS_DEFAULT) -> Credits:
    r"""Ordered Shapley value (Zhao et al. 2018): the Shapley credit of each channel, split by
    the position at which the channel joined the journey.

    A journey's *ordered coalition* is its distinct channels in the order they first appear
    (``A > B > A > C`` is :math:`(A, B, C)`). With :math:`r(S)` the conversions of journeys
    whose ordered coalition is :math:`S`, the credit of channel :math:`c` at position
    :math:`i` is

    .. math:: \varphi_c^{(i)} = \sum_{S:\ S_i = c} \frac{r(S)}{|S|},\qquad
              \varphi_c = \sum_i \varphi_c^{(i)}

    (Zhao, Mahboobi and Bagheri, "Shapley value methods for attribution modeling in online
    advertising", arXiv:1804.05327, 2018, section 3). Their simplified formula is the Shapley
    value of the game :math:`v(S) = \sum_{T \subseteq S} r(T)` (the ``shapley`` model's
    default coalition), so the channel totals :math:`\varphi_c` equal ``shapley``'s; what the
    order adds is *where* the credit was earned: the columns ``position_1`` …
    ``position_K_plus`` hold :math:`\varphi_c^{(i)}` (conversions), positions :math:`i \ge K`
    pooled in the last (``max_positions`` :math:`= K`, default 3: opener, second, the rest).
    Revenue the same way with :math:`r` the journeys' revenue.

    Cost: one pass over the touches (:math:`O(\text{touches})`, no :math:`2^n` coalitions), so
    any number of channels; only the number of position columns is bounded.

    One touch: ``A`` gives its conversion to A at position 1. Two touches: ``A > B`` gives 1/2
    to A at position 1 and 1/2 to B at position 2; ``A > A`` gives A 1 at position 1.
    """
    if not isinstance(max_positions, int) or max_positions < 1:
        raise ConfigError(f"ordered_shapley max_positions must be an integer >= 1, "
                          f"got {max_positions!r}")
    first = paths.first_occurrence()
    distinct = np.bincount(paths.row, first, minlength=paths.n_paths)
    share = np.divide(1.0, distinct, out=np.zeros(paths.n_paths), where=distinct > 0)
    credits = credits_from_rule(paths, RuleWeights(base=share, distinct=True),
                                max_positions=max_positions)
    # rank of each first occurrence among its path's distinct channels: 1, 2, …
    rank = np.cumsum(first) - np.concatenate([[0], np.cumsum(first)])[paths.offsets[:-1]][
        paths.row]
    position = np.minimum(rank, max_positions) - 1
    amount = np.where(first, share[paths.row] * paths.conversions[paths.row], 0.0)
    by_position = np.bincount(paths.codes * max_positions + position, amount,
                              minlength=paths.n_labels * max_positions
                              ).reshape(paths.n_labels, max_positions)
    columns = {f"position_{i + 1}" + ("_plus" if i + 1 == max_positions > 1 else ""):
               by_position[:, i] for i in range(max_positions)}
    return Credits(conversions=credits.conversions, value=credits.value, columns=columns,
                   info=dict(credits.info), rule=credits.rule)
