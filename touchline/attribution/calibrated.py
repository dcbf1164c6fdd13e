r"""Experiment calibration: observational credits moved inside what experiments measured.

An observational model (``counterfactual`` by default) credits channel :math:`c` with
:math:`C_c` conversions. A geo or holdout experiment :math:`e` on :math:`c` measured the
channel's incremental conversions over a period, with an interval :math:`[L_e, H_e]`; the
share of :math:`c`'s credit that falls in that period is :math:`s_e` (its converting journeys
in the period over all of them; 1 when the experiment covers every attributed journey). The
calibrated credit of an experimented channel is its period credits, each clamped into its
experiment's interval, carried back to the whole window:

.. math:: \tilde C_c = \frac{\sum_e \operatorname{clip}(s_e C_c,\ L_e,\ H_e)}{\sum_e s_e}

(one experiment over all the journeys: :math:`\tilde C_c = \operatorname{clip}(C_c, L, H)`).
The remaining conversions go to the channels without experiments in proportion to their
credits,

.. math:: \tilde C_d = C_d\,\frac{T - \sum_{c \in E} \tilde C_c}{\sum_{d \notin E} C_d},

so the credits still sum to the observed conversions :math:`T`. Revenue moves with the same
factors (:math:`\tilde V_c = V_c \tilde C_c / C_c`).

Why this form: an experiment is the only causal measurement, but it covers one channel and one
period; the observational model covers every channel and journey but cannot tell targeting
from effect (a channel aimed at people who would convert anyway looks causal). Clamping moves a
channel only as far as the experiment contradicts the model, so a model the experiment agrees
with is left alone, and the least change that satisfies every experiment is the clamp. The
correction found in the test period is taken to hold outside it (the model's bias comes from
who the channel reaches, which changes slowly), as media-mix calibration does with
experiment-based priors (Google, "Calibrating media mix models with experiments", 2023; Meta
Robyn's ``calibration_input``). Conversions freed or claimed by the experimented channels are
shared by the others in the model's own proportions, the one choice that keeps their relative
credit as the data say.

When the experiments' lower bounds already hold more than every conversion, the other channels
get nothing and the total exceeds :math:`T` (``info["excess"]``); when every credited channel
was tested and the clamps free conversions, they stay unassigned (``info["unassigned"]``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Any

import numpy as np

from touchline.attribution.paths import PathSet
from touchline.attribution.registry import Credits, Replicator, register, run_model

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

log = logging.getLogger(__name__)

BASE_DEFAULT = "counterfactual"
#: the model's key: ``touchline run`` and ``attribute`` give it the stored experiments
CALIBRATED = "calibrated"


@dataclass(frozen=True)
class Experiment:
    """One experiment's constraint on a label's credit: the incremental conversions it
    measured in its period lie in ``[low, high]``; ``period_share`` is the share of the label's
    credited conversions that fall in the period (1: the whole attributed data)."""

    label: str
    low: float
    high: float
    period_share: float = 1.0
    name: str = ""


@register(CALIBRATED)
def calibrated(
    paths: PathSet,
    *,
    experiments: Sequence[Experiment] = (),
    base: str = BASE_DEFAULT,
    base_params: Mapping[str, Any] | None = None,
) -> Credits:
    r"""Credits of ``base`` with experimented channels clamped into their experiments'
    intervals and the rest rescaled to the observed conversions (module docstring).

    .. math:: \tilde C_c = \frac{\sum_e \operatorname{clip}(s_e C_c, L_e, H_e)}{\sum_e s_e},
              \qquad \tilde C_d = C_d \frac{T - \sum_{c \in E}\tilde C_c}{\sum_{d \notin E} C_d}

    Without experiments it is ``base``. Two channels A 60, B 40 and an experiment on A over
    all journeys measuring 20 to 30: A gets 30, B 70.
    """
    point = run_model(paths, base, base_params)
    labels = [str(label) for label in paths.labels]
    unknown = sorted({e.label for e in experiments if e.label not in labels})
    if unknown:
        log.info("calibrated: experiments on %s, which no journey touched", ", ".join(unknown))
    conversions, value = point.conversions.astype(float), point.value.astype(float)
    new, new_value, excess, unassigned = clamp_and_rescale(
        conversions[None, :], value[None, :], np.array([paths.total_conversions]),
        np.array([paths.total_value]), experiments, labels)
    factor = np.divide(new[0], conversions, out=np.zeros_like(conversions),
                       where=conversions > 0)
    info: dict[str, Any] = {
        "base": base, "experiments": len(experiments), "base_info": dict(point.info),
        "calibrated_labels": sorted({e.label for e in experiments if e.label in labels})}
    if excess[0] > 0:
        info["excess"] = float(excess[0])
    if unassigned[0] > 0:
        info["unassigned"] = float(unassigned[0])
    return Credits(
        conversions=new[0], value=new_value[0],
        columns={"base_conversions": conversions, "base_value": value, "factor": factor},
        info=info,
    )


def clamp_and_rescale(
    conversions: np.ndarray, value: np.ndarray, total: np.ndarray, total_value: np.ndarray,
    experiments: Sequence[Experiment], labels: Sequence[str],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The module docstring's formula on rows of base credits (rows × labels; one row for the
    data, one per bootstrap replicate) with their totals: ``(conversions, value, excess,
    unassigned)``."""
    rows, k = conversions.shape
    clamped = np.zeros((rows, k))
    weight = np.zeros(k)
    for experiment in experiments:
        if experiment.label not in labels or experiment.period_share <= 0:
            continue
        i = list(labels).index(experiment.label)
        clamped[:, i] += np.clip(experiment.period_share * conversions[:, i], experiment.low,
                                 experiment.high)
        weight[i] += experiment.period_share
    tested = weight > 0
    new = conversions.copy()
    new[:, tested] = clamped[:, tested] / weight[tested]
    rest = total - new[:, tested].sum(axis=1)
    others = conversions[:, ~tested].sum(axis=1)
    scale = np.divide(np.maximum(rest, 0.0), others, out=np.zeros(rows), where=others > 0)
    new[:, ~tested] = conversions[:, ~tested] * scale[:, None]
    excess = np.maximum(-rest, 0.0)
    unassigned = np.where(others > 0, 0.0, np.maximum(rest, 0.0))
    factor = np.divide(new, conversions, out=np.zeros_like(new), where=conversions > 0)
    per_conversion = np.divide(total_value, total, out=np.zeros(rows), where=total > 0)
    new_value = np.where(conversions > 0, value * factor, new * per_conversion[:, None])
    if not tested.any():
        new_value = value.copy()
    return new, new_value, excess, unassigned


def replicates(paths: PathSet, credits: Credits, *, experiments: Sequence[Experiment] = (),
               base: str = BASE_DEFAULT,
               base_params: Mapping[str, Any] | None = None) -> Replicator:
    """What credits bootstrap replicates: the base model's replicates (its own
    :data:`~touchline.attribution.intervals.REPLICATES` function, from the base fit kept in
    ``credits.info``), each calibrated by :func:`clamp_and_rescale`. The experiments are held
    fixed: the interval is the observational credits' uncertainty, clamped."""
    from touchline.attribution.intervals import REPLICATES

    base_credits = Credits(conversions=np.asarray(credits.columns["base_conversions"]),
                           value=np.asarray(credits.columns["base_value"]),
                           info=credits.info.get("base_info", {}))
    credit_base = REPLICATES[base](paths, base_credits, **dict(base_params or {}))
    labels = [str(label) for label in paths.labels]

    def credit(conversions: np.ndarray, nulls: np.ndarray,
               value: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        base_conversions, base_value = credit_base(conversions, nulls, value)
        new, new_value, _, _ = clamp_and_rescale(
            base_conversions, base_value, conversions.sum(axis=0), value.sum(axis=0),
            experiments, labels)
        return new, new_value

    return credit


def experiment_targets(
    experiments: pd.DataFrame, paths: PathSet, converting: pa.Table, *,
    conversion: str, level: str = "channel",
) -> list[Experiment]:
    r"""The stored ``experiments`` of ``conversion`` (or of every conversion) at ``level``, as
    :class:`Experiment` constraints on ``paths`` (the stored journeys, :func:`~touchline.
    attribution.paths.journey_pathset`, with its ``converting`` touches).

    A label's period share is its converting journeys that converted within the period (UTC
    days, ends included) over all its converting journeys. A lift :math:`\ell` becomes
    incremental conversions :math:`\ell / (1 + \ell)` of the conversions of the journeys that
    met the label in the period: of what the exposed converted, that part would not have
    happened without it.
    """
    import pyarrow.compute as pc

    column = {"channel": "channel", "campaign": "campaign"}.get(level)
    if column is None or experiments.empty:
        return []
    mine = experiments[(experiments.conversion.isna()) | (experiments.conversion == conversion)]
    mine = mine[mine[column].notna()]
    n = converting.num_rows
    if not n or mine.empty:
        return []
    ids = converting.column("journey_id").to_numpy(zero_copy_only=False)
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    days = pc.cast(pc.cast(converting.column("converted_at"), "timestamp[us]"), "date32")
    converted_on = np.asarray(days.to_numpy(zero_copy_only=False))[starts].astype(
        "datetime64[D]")
    rows = len(starts)
    presence = paths.label_presence[:rows]
    presence = presence if isinstance(presence, np.ndarray) else presence.toarray()
    labels = [str(label) for label in paths.labels]
    out = []
    for row in mine.itertuples():
        label = str(getattr(row, column))
        if label not in labels:
            out.append(Experiment(label, 0.0, 0.0, 0.0, str(row.experiment_id or "")))
            continue
        has = presence[:, labels.index(label)] > 0
        start, end = (np.datetime64(_day(row.period_start), "D"),
                      np.datetime64(_day(row.period_end), "D"))
        inside = has & (converted_on >= start) & (converted_on <= end)
        share = float(inside.sum() / has.sum()) if has.sum() else 0.0
        if _given(row.incremental_conversions):
            low, high = float(row.incremental_conversions_low), float(
                row.incremental_conversions_high)
        else:
            exposed = float(inside.sum())
            low = exposed * row.lift_low / (1 + row.lift_low)
            high = exposed * row.lift_high / (1 + row.lift_high)
        out.append(Experiment(label, low, high, share, str(row.experiment_id or "")))
    return out


def _given(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and np.isnan(value))


def _day(value: Any) -> date:
    return value.date() if hasattr(value, "date") and callable(value.date) else value
