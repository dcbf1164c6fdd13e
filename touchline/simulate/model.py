r"""The causal model: how exposures turn into conversions and revenue, and what each channel
truly adds.

For a journey unit :math:`u` (a person in B2C, an account in B2B) with :math:`N_{uc}` touches
of channel :math:`c` before the decision and :math:`M_{uc}` touches after the first purchase:

.. math::

    z_u &= \beta_0 + \eta_u + \sum_c \beta_c \log(1 + N_{uc}),
    \qquad p_u = \sigma(z_u), \qquad \text{converted}_u = [U_u < p_u] \\
    V_u &= \mathrm{round}\bigl(\exp(\mu + \sigma_v \varepsilon_u
          + \textstyle\sum_c \gamma_c [N_{uc} > 0])\bigr) \\
    \rho_u &= \sigma\bigl(r_0 + \textstyle\sum_c \delta_c \log(1 + M_{uc})\bigr), \qquad
    V_{uk} = \mathrm{round}(V_u^{\text{raw}} e^{\sigma_r \varepsilon_{uk}})\,[U_{uk} < \rho_u],
    \ k = 1..K \\
    \text{revenue}_u &= \text{converted}_u \bigl(V_u + \textstyle\sum_k V_{uk}\bigr)

with :math:`\eta_u \sim N(0, s^2)` a person's own propensity, :math:`U, \varepsilon` the unit's
random numbers, and every :math:`\beta_c, \gamma_c, \delta_c \ge 0`
(:data:`touchline.simulate.channels.CHANNELS`).

**Ground truth by counterfactual.** The same units are evaluated again with channel :math:`c`
removed: :math:`N_{uc} = M_{uc} = 0`, and the direct visits that touches of :math:`c` caused
(:math:`F_{uc}`, direct is a consequence) are removed too. The random numbers are the same (common
random numbers), so the difference is the channel's effect alone:

.. math:: \Delta_c = \sum_u \text{converted}_u - \text{converted}_u^{(-c)}

Since every coefficient is non-negative and :math:`\log(1 + N)` grows with :math:`N`, removing a
channel can only lower :math:`z_u`, :math:`V_u` and :math:`\rho_u`: no unit ever converts *because*
a channel was removed, and channels with zero coefficients have :math:`\Delta_c = 0` exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from touchline.errors import SimulationError
from touchline.simulate.channels import DIRECT, NAMES


@dataclass(frozen=True)
class ModelConstants:
    """The channel-independent constants of the model (see the module formulas)."""

    base_logit: float  # β0
    propensity_sd: float  # s
    value_log_mean: float  # μ (log of the currency amount)
    value_sigma: float  # σ_v
    value_decimals: int  # cents for orders, whole units for B2B deals
    repeat_base_logit: float  # r0
    repeat_value_sigma: float  # σ_r
    max_repeats: int  # K: repeat orders (B2C) or expansion deals (B2B)


B2C_MODEL = ModelConstants(
    base_logit=-4.1, propensity_sd=0.7, value_log_mean=4.3, value_sigma=0.6, value_decimals=2,
    repeat_base_logit=-2.0, repeat_value_sigma=0.25, max_repeats=3,
)
B2B_MODEL = ModelConstants(
    base_logit=-6.4, propensity_sd=0.6, value_log_mean=9.9, value_sigma=0.7, value_decimals=0,
    repeat_base_logit=-2.2, repeat_value_sigma=0.3, max_repeats=2,
)


@dataclass(frozen=True)
class SeasonalDip:
    """Repeat orders (renewals; B2B: expansion deals) drop every year in one calendar month:
    a repeat order that falls in ``month`` (1-12, by its visit's start in UTC) happens with
    probability ``factor`` only, as a gym's renewals drop every March.

    The dip is part of the outcome, not of the channels: a lapsed repeat order is gone in the
    factual and in every counterfactual run alike (``lapsed`` of :func:`outcome`), so the
    incremental revenue stays the channels' own. Its own random stream decides which orders
    lapse; without a dip nothing is drawn and the files are those of a run without it.
    """

    month: int
    factor: float

    def __post_init__(self) -> None:
        if not (isinstance(self.month, int) and 1 <= self.month <= 12):
            raise SimulationError(f"seasonal dip month={self.month!r}: give a calendar month 1-12")
        if not 0.0 <= self.factor < 1.0:
            raise SimulationError(f"seasonal dip factor={self.factor!r}: give the share of the "
                             "month's repeat orders that still happen, from 0 to below 1")


@dataclass(frozen=True)
class Draws:
    """The random numbers of each unit, shared by the factual and every counterfactual run."""

    propensity: np.ndarray  # η_u
    conversion: np.ndarray  # U_u
    value: np.ndarray  # ε_u
    repeat: np.ndarray  # U_uk, shape (units, K)
    repeat_value: np.ndarray  # ε_uk, shape (units, K)


def draw(rng: np.random.Generator, units: int, constants: ModelConstants) -> Draws:
    """Draw the common random numbers of ``units`` journeys."""
    k = constants.max_repeats
    return Draws(
        propensity=rng.normal(0.0, constants.propensity_sd, units),
        conversion=rng.random(units),
        value=rng.normal(0.0, 1.0, units),
        repeat=rng.random((units, k)),
        repeat_value=rng.normal(0.0, 1.0, (units, k)),
    )


@dataclass(frozen=True)
class Outcome:
    """What the model says for each unit."""

    probability: np.ndarray
    converted: np.ndarray
    first_value: np.ndarray  # value of the first order/deal (0 for non-converters)
    repeat_values: np.ndarray  # (units, K): value of each repeat order, 0 if none
    revenue: np.ndarray


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return np.asarray(1.0 / (1.0 + np.exp(-z)))


def outcome(
    exposures: np.ndarray,
    retention: np.ndarray,
    draws: Draws,
    params: dict[str, np.ndarray],
    constants: ModelConstants,
    lapsed: np.ndarray | None = None,
) -> Outcome:
    """Evaluate the model for touch counts ``exposures`` (N) and ``retention`` (M), both
    ``(units, channels)``; ``lapsed`` ``(units, K)``: repeat orders a seasonal dip cancels
    (:class:`SeasonalDip`), whatever the channels."""
    z = constants.base_logit + draws.propensity + np.log1p(exposures) @ params["effect"]
    probability = _sigmoid(z)
    converted = draws.conversion < probability
    log_value = (constants.value_log_mean + constants.value_sigma * draws.value
                 + (exposures > 0) @ params["value_lift"])
    decimals = constants.value_decimals
    first_value = np.where(converted, np.round(np.exp(log_value), decimals), 0.0)
    rho = _sigmoid(constants.repeat_base_logit + np.log1p(retention) @ params["retention_effect"])
    repeats = converted[:, None] & (draws.repeat < rho[:, None])
    if lapsed is not None:
        repeats &= ~lapsed
    repeat_raw = np.exp(log_value[:, None] + constants.repeat_value_sigma * draws.repeat_value)
    repeat_values = np.where(repeats, np.round(repeat_raw, decimals), 0.0)
    revenue = first_value + repeat_values.sum(axis=1)
    return Outcome(probability, converted, first_value, repeat_values, revenue)


def without_channel(
    exposures: np.ndarray, follow_ups: np.ndarray, retention: np.ndarray, channel: int
) -> tuple[np.ndarray, np.ndarray]:
    """The touch counts of the world without ``channel``: its touches are gone, and so are the
    direct visits its touches caused (``follow_ups[u, c]``)."""
    exposures = exposures.copy()
    exposures[:, channel] = 0
    if channel != DIRECT:
        exposures[:, DIRECT] -= follow_ups[:, channel]
    retention = retention.copy()
    retention[:, channel] = 0
    return exposures, retention


@dataclass(frozen=True)
class Counterfactuals:
    """Per unit and channel: the outcome with that channel removed, ``(units, channels)``."""

    converted: np.ndarray
    probability: np.ndarray
    revenue: np.ndarray


def counterfactuals(
    exposures: np.ndarray,
    follow_ups: np.ndarray,
    retention: np.ndarray,
    draws: Draws,
    params: dict[str, np.ndarray],
    constants: ModelConstants,
    lapsed: np.ndarray | None = None,
) -> Counterfactuals:
    """Re-run the model once per channel with that channel removed (same random numbers,
    the same ``lapsed`` repeat orders)."""
    shape = (exposures.shape[0], len(NAMES))
    converted = np.zeros(shape, bool)
    probability = np.zeros(shape)
    revenue = np.zeros(shape)
    for c in range(len(NAMES)):
        n_c, m_c = without_channel(exposures, follow_ups, retention, c)
        result = outcome(n_c, m_c, draws, params, constants, lapsed)
        converted[:, c] = result.converted
        probability[:, c] = result.probability
        revenue[:, c] = result.revenue
    return Counterfactuals(converted, probability, revenue)
