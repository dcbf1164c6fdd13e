r"""Per-touch credits: a model's credits split over the touches of each path.

Rule models define each touch's share directly (:class:`~touchline.attribution.registry.Credits`
``touch_weights`` / ``rule``): a touch's credit is its weight times its path's conversions, and
its value the weight times the path's value.

Data-driven models (Markov, Shapley, counterfactual) give credits per label :math:`C_c` only.
To store them per touch, :func:`split_label_credits` finds amounts :math:`x_{p,c}` for each
path :math:`p` and label :math:`c` it contains such that

.. math:: \sum_c x_{p,c} = r_p \quad(\text{each path keeps its conversions}),\qquad
          \sum_p x_{p,c} = C_c \quad(\text{each label keeps the model's credit}),

as close as possible to the proportional split
:math:`x^0_{p,c} = r_p\, n_{p,c} g_c / \sum_{c'} n_{p,c'} g_{c'}` (:math:`n_{p,c}` touches of
:math:`c` in :math:`p`, :math:`g_c = \max(C_c, 0)`): the least-squares correction
:math:`x = x^0 + \lambda_p + \mu_c` on the path's labels. The path equations give
:math:`\lambda = -D_p^{-1} P \mu`, which leaves one small system over the labels,
:math:`(D_c - P^\top D_p^{-1} P)\,\mu = C - P^\top x^0` (:math:`P` the path-label presence
matrix, :math:`D` its degrees), solved by least squares: a solve of labels-squared size
whatever the number of journeys. A one-label path always gives that label
:math:`r_p`. When no exact solution exists, each path still keeps its conversions exactly and
the labels' totals come closest: Markov, for one, credits channels that lead to converting
channels without ever being in a converting path themselves, and no converting touch can carry
that credit (:func:`unplaced_credit` measures it, and the run reports it). Each
:math:`x_{p,c}` is then divided equally among the :math:`n_{p,c}` touches of :math:`c` in
:math:`p`. Summing the stored credits by label gives back the model's credits.
"""

from __future__ import annotations

import numpy as np

from touchline.attribution.paths import PathSet
from touchline.attribution.registry import Credits
from touchline.lazy import lazy_module

sparse = lazy_module("scipy.sparse")

_TOLERANCE = 1e-10


def unplaced_credit(paths: PathSet, per_label: np.ndarray) -> dict[str, float]:
    """Credit a model gives to labels that no converting path contains, by label."""
    converting = np.bincount(paths.codes, paths.conversions[paths.row] > 0,
                             minlength=paths.n_labels) > 0
    out = np.where(converting, 0.0, np.asarray(per_label, float))
    return {str(paths.labels[i]): float(out[i]) for i in np.flatnonzero(np.abs(out) > 1e-9)}


def touch_amounts(paths: PathSet, credits: Credits) -> tuple[np.ndarray, np.ndarray]:
    """Per touch (aligned with ``paths.codes``): credited conversions and credited value."""
    weights = credits.rule.touch_weights(paths) if credits.rule is not None \
        else credits.touch_weights
    if weights is not None:
        return (weights * paths.conversions[paths.row], weights * paths.value[paths.row])
    return (split_label_credits(paths, paths.conversions, credits.conversions),
            split_label_credits(paths, paths.value, credits.value))


def split_label_credits(paths: PathSet, per_path: np.ndarray,
                        per_label: np.ndarray) -> np.ndarray:
    """Per-touch amounts that sum to ``per_path`` within each path and to ``per_label`` within
    each label (see the module docstring for the method)."""
    amounts = np.zeros(len(paths.codes))
    rows = np.flatnonzero(per_path != 0)
    if rows.size == 0:
        return amounts
    counts = sparse.csr_matrix(
        (np.ones(len(paths.codes)), (paths.row, paths.codes)),
        shape=(paths.n_paths, paths.n_labels))[rows].tocsr()
    counts.sum_duplicates()
    r = per_path[rows]
    support = counts.tocoo()  # the (path, label) pairs, zeros kept: a product would drop them
    n_rows, n_labels = counts.shape
    g = np.maximum(np.asarray(per_label, float), 0.0)
    weight = support.data * g[support.col]
    totals = np.bincount(support.row, weight, minlength=n_rows)
    empty = totals <= _TOLERANCE  # no label of the path has positive credit: split by count
    weight = np.where(empty[support.row], support.data, weight)
    totals = np.bincount(support.row, weight, minlength=n_rows)
    x0 = r[support.row] * weight / totals[support.row]
    residual = np.asarray(per_label, float) - np.bincount(support.col, x0, minlength=n_labels)
    # x = x0 + lambda_p + mu_c on the support; the path rows give
    # d_p lambda_p + (P mu)_p = 0, so lambda = -D_p^-1 P mu, and the label rows then leave
    # the labels' Laplacian S mu = residual with S = D_c - P^T D_p^-1 P: an n_labels-square
    # system (P is the path-label presence, D its degrees). S is singular (a constant added
    # to mu and taken from lambda changes no x); the least-squares solution of minimum norm
    # is exact when a split keeping both totals exists, else the labels come closest while
    # every path keeps its conversions exactly (rows hold for any mu by construction)
    presence = sparse.csr_matrix((np.ones(len(x0)), (support.row, support.col)),
                                 shape=(n_rows, n_labels))
    path_degree = np.asarray(presence.sum(axis=1)).ravel()
    label_degree = np.asarray(presence.sum(axis=0)).ravel()
    laplacian = np.diag(label_degree) - (
        presence.T @ sparse.diags(1.0 / path_degree) @ presence).toarray()
    mu = np.linalg.lstsq(laplacian, residual, rcond=None)[0]
    lam = -(presence @ mu) / path_degree
    values = x0 + lam[support.row] + mu[support.col]
    # back to touches: each (path, label) amount divided equally among that label's touches
    local = np.full(paths.n_paths, -1)
    local[rows] = np.arange(rows.size)
    touch_rows = local[paths.row]
    on = touch_rows >= 0
    pair_keys = support.row.astype(np.int64) * n_labels + support.col
    order = np.argsort(pair_keys, kind="stable")
    touch_keys = touch_rows[on].astype(np.int64) * n_labels + paths.codes[on]
    pair = order[np.searchsorted(pair_keys, touch_keys, sorter=order)]
    amounts[on] = values[pair] / support.data[pair]
    return amounts
