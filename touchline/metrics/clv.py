r"""Customer lifetime value: what customers spent so far, and what they will spend, predicted
with the BG/NBD purchase model and the Gamma-Gamma spend model fitted by maximum likelihood.

The data flow: the stored ``purchase`` conversions (``journeys``, one row per purchase of a
person) → :func:`rfm_summary`, one row per customer, an Ibis expression run in the engine →
the summary's *distinct* ``(frequency, recency, age)`` rows with their counts (a few thousand
rows, however many millions of customers) → :func:`fit_bgnbd` and :func:`fit_gamma_gamma`
(numpy, scipy) → predictions joined back to every customer in the engine.

**Convention** (Fader & Hardie's, as in their CDNOW analyses): purchases of one customer on
one (UTC) day are one transaction, worth their sum. Over the calibration period, which ends on
``until`` (inclusive):

- ``frequency`` *x*: the number of *repeat* purchase days (purchase days − 1);
- ``recency`` :math:`t_x`: last purchase day − first purchase day, in whole days;
- ``age`` *T* (Fader & Hardie's *T*): ``until`` − first purchase day, in whole days;
- ``monetary_value`` :math:`m_x`: the mean value of the repeat transactions (the first day
  left out), null when *x* = 0.

Recency and age are divided by 7 for ``unit="week"``.

**BG/NBD** (Fader, Hardie & Lee 2005, "Counting your customers the easy way"): while alive, a
customer buys at a Poisson rate λ ~ Gamma(r, α); after each purchase they drop out with
probability p ~ Beta(a, b). One customer's likelihood is

.. math::

    L(r, α, a, b \mid x, t_x, T) = \frac{B(a, b + x)}{B(a, b)}
        \frac{Γ(r + x)\, α^r}{Γ(r)\, (α + T)^{r + x}}
      + δ_{x > 0} \frac{B(a + 1, b + x - 1)}{B(a, b)}
        \frac{Γ(r + x)\, α^r}{Γ(r)\, (α + t_x)^{r + x}}

**Gamma-Gamma** (Fader, Hardie & Lee 2005, "RFM and CLV"; Fader & Hardie's note "The
Gamma-Gamma model of monetary value", 2013): a customer's transaction values are Gamma(p, ν)
with ν ~ Gamma(q, γ) across customers (γ is ``v`` here); the mean :math:`m_x` of *x*
transactions has

.. math::

    f(m_x \mid p, q, γ, x) = \frac{Γ(px + q)}{Γ(px)\, Γ(q)}
        \frac{γ^q\, m_x^{px - 1}\, x^{px}}{(γ + m_x x)^{px + q}}

fitted on the customers with a repeat purchase (``frequency`` > 0) of positive value.

Both fits maximise the log-likelihood summed over the distinct summary rows weighted by their
counts, in log-parameter space (so every parameter stays positive) with
:func:`scipy.optimize.minimize` (Nelder-Mead); one that does not converge raises
:class:`~touchline.errors.ModelFitError`.

**Why scipy, not a CLV library**: the model is two likelihoods of a few lines each.
``lifetimes`` has been unmaintained since 2020 and relies on pandas behaviour that current
pandas removed; ``pymc-marketing`` (its successor) pulls in PyMC, PyTensor and ArviZ, a heavy
Bayesian stack, for two maximum-likelihood fits. scipy is already a dependency. The fits are
checked against Fader & Hardie's published CDNOW parameters (``tests/metrics/test_clv.py``).

Fader, Hardie & Lee's worked example (CDNOW, weeks): a customer with 2 repeat purchases, the
last in week 30.43 of their 38.86, is expected to buy 1.226 times in the next 39 weeks; alive
with odds 1 : a / (b + x - 1) ((α + T) / (α + t_x))^(r + x) = 1 : 0.3763. With 2 repeat
purchases of $20 on average, the expected value is 6.25 (15.44 + 2 · 20) / (2 · 6.25 + 2.74):

>>> model = BGNBD(r=0.2426, alpha=4.4135, a=0.7929, b=2.4258)
>>> round(float(model.expected_purchases(39, frequency=2, recency=30.43, age=38.86)), 3)
1.226
>>> round(float(model.p_alive(frequency=2, recency=30.43, age=38.86)), 4)
0.7266
>>> spend = GammaGamma(p=6.25, q=3.74, v=15.44)
>>> round(float(spend.expected_value(frequency=2, monetary_value=20.0)), 2)
22.74
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

import ibis
import ibis.expr.types as ir
import numpy as np
import pandas as pd

from touchline.errors import ConfigError, MissingInputError, ModelFitError
from touchline.lazy import lazy_module
from touchline.metrics.kpis import (
    _ZERO,
    CONVERSION_DEFAULT,
    DOC_SECTIONS,
    PERSON_DIMS,
    Query,
    _aggregate,
    _check_conversion,
    _keyed,
    _levels,
    _once,
    _order,
    _ratio,
    first_touches,
    holds_rows,
    person_levels,
    register,
    register_in,
)

# imported on first use: `touchline --help` and the other KPIs never need them
optimize = lazy_module("scipy.optimize")
special = lazy_module("scipy.special")

if TYPE_CHECKING:
    from ibis.backends import BaseBackend

log = logging.getLogger(__name__)

#: days in each time unit recency, age and horizons are counted in
UNITS = {"week": 7, "day": 1}
UNIT_DEFAULT = "week"
#: the ``predicted_clv`` KPI's horizon: purchases and spend of the next year
HORIZON_DAYS_DEFAULT = 365
#: the optimiser's start (every parameter 1) and limits
_START = 0.0  # log-parameter
_MAX_ITERATIONS = 20_000
_SECONDS_PER_DAY = 86_400
_RUN = "`touchline ingest FILE --kind events` (purchases as events with revenue), then " \
       "`touchline run`"


# ---- the RFM summary, in the engine ----------------------------------------------------------

def purchases(con: BaseBackend, *, conversion: str = CONVERSION_DEFAULT) -> ir.Table:
    """The stored conversions of type ``conversion`` of persons (the customers the retention
    KPIs count): ``customer_id`` (the person id), ``purchased_at``, ``value``.

    :class:`~touchline.errors.MissingInputError` names the import and run that fill them when
    there are none.
    """
    if not holds_rows(con, "journeys"):
        raise MissingInputError(f"no journeys in the warehouse, so no {conversion!r} "
                                f"purchases: fill them with {_RUN}")
    _check_conversion(con, Query(conversion=conversion))
    j = con.table("journeys")
    j = j.filter((j.conversion == conversion) & j.converted & (j.unit == "person"))
    return j.select(customer_id="unit_id", purchased_at="converted_at",
                    value=j.value.fill_null(0.0))


def _day_number(at: ir.TimestampValue) -> ir.IntegerValue:
    """Days since 1970-01-01 of the (UTC) day of ``at``: exact on every engine, as the
    truncated timestamp is a whole number of days."""
    return at.truncate("D").epoch_seconds().cast("int64") // _SECONDS_PER_DAY


def _epoch_day(day: date) -> int:
    return (day - date(1970, 1, 1)).days


def _rfm_days(purchases: ir.Table, until: date | None) -> ir.Table:
    """Per customer: ``first_purchase_at``, ``frequency``, ``recency_days``, ``age_days``,
    ``monetary_value`` over the purchases on or before ``until`` (see the module docstring);
    None: through the last purchase day, found in the same query."""
    p = purchases.mutate(_day=_day_number(purchases.purchased_at))
    if until is None:
        last: ir.IntegerValue = p._day.max().as_scalar()
    else:
        last = ibis.literal(_epoch_day(until))
        p = p.filter(p._day <= last)
    days = p.group_by(["customer_id", "_day"]).aggregate(
        _value=p.value.sum(), _at=p.purchased_at.min())
    days = days.mutate(_first=days._day.min().over(group_by="customer_id"))
    c = days.group_by("customer_id").aggregate(
        first_purchase_at=days._at.min(),
        frequency=(days.count() - 1).cast("int64"),
        recency_days=(days._day.max() - days._day.min()).cast("int64"),
        age_days=(last - days._day.min()).cast("int64"),
        _repeat_value=days._value.sum(where=days._day > days._first))
    return c.mutate(monetary_value=c._repeat_value.fill_null(0.0).cast("float64")
                    / c.frequency.cast("float64").nullif(0.0)).drop("_repeat_value")


def _divisor(unit: str) -> int:
    if unit not in UNITS:
        raise ConfigError(f"unit {unit!r}: choose from {', '.join(UNITS)}")
    return UNITS[unit]


def rfm_summary(source: BaseBackend | ir.Table, *, until: date, unit: str = UNIT_DEFAULT,
                conversion: str = CONVERSION_DEFAULT) -> ir.Table:
    """One row per customer: ``customer_id``, ``first_purchase_at``, ``frequency``,
    ``recency``, ``age``, ``monetary_value`` (the convention of the module docstring),
    computed in the engine.

    ``source`` is a warehouse (its stored ``conversion`` purchases, :func:`purchases`) or a
    table with ``customer_id``, ``purchased_at`` and ``value``. Only purchases on or before
    ``until`` (a day, inclusive: the calibration period's last day) count; recency and age
    are in ``unit`` (``week``: whole days / 7, or ``day``).
    """
    divisor = float(_divisor(unit))
    p = source if isinstance(source, ir.Table) else purchases(source, conversion=conversion)
    c = _rfm_days(p, until)
    return c.select("customer_id", "first_purchase_at", "frequency",
                    recency=c.recency_days.cast("float64") / divisor,
                    age=c.age_days.cast("float64") / divisor,
                    monetary_value=c.monetary_value)


# ---- the models ------------------------------------------------------------------------------

@dataclass(frozen=True)
class BGNBD:
    """A fitted BG/NBD model: purchase rate λ ~ Gamma(r, α), dropout p ~ Beta(a, b); time in
    the unit of the summary it was fitted on."""

    r: float
    alpha: float
    a: float
    b: float

    def p_alive(self, *, frequency: Any, recency: Any, age: Any) -> np.ndarray:
        r"""Probability that a customer with this history is still alive at ``age``:

        .. math:: P(alive) = 1 \Big/ \Big(1 + δ_{x>0} \frac{a}{b + x - 1}
            \Big(\frac{α + T}{α + t_x}\Big)^{r + x}\Big)

        (Fader, Hardie & Lee 2005, eq. 11; a customer who never bought again is alive, as
        dropout happens only after a purchase).
        """
        x, tx, t_age = (np.asarray(v, dtype=float) for v in (frequency, recency, age))
        odds = np.where(x > 0, self._dropout_odds(x, tx, t_age), 0.0)
        return 1.0 / (1.0 + odds)

    def _dropout_odds(self, x: np.ndarray, tx: np.ndarray, t_age: np.ndarray) -> np.ndarray:
        xs = np.maximum(x, 1.0)  # x = 0 has no dropout term; keep b + x - 1 > 0 for the where
        log_odds = (np.log(self.a) - np.log(self.b + xs - 1.0)
                    + (self.r + xs) * (np.log(self.alpha + t_age) - np.log(self.alpha + tx)))
        return np.exp(log_odds)

    def expected_purchases(self, t: float, *, frequency: Any, recency: Any,
                           age: Any) -> np.ndarray:
        r"""Expected purchases in the next ``t`` periods of a customer with this history
        (Fader, Hardie & Lee 2005, eq. 10):

        .. math::

            E[Y(t) \mid x, t_x, T] = \frac{\frac{a + b + x - 1}{a - 1} \Big[1 -
                \Big(\frac{α + T}{α + T + t}\Big)^{r + x}
                {}_2F_1\Big(r + x, b + x; a + b + x - 1; \frac{t}{α + T + t}\Big)\Big]}
                {1 + δ_{x>0} \frac{a}{b + x - 1} \Big(\frac{α + T}{α + t_x}\Big)^{r + x}}
        """
        x, tx, t_age = (np.asarray(v, dtype=float) for v in (frequency, recency, age))
        r, alpha, a, b = self.r, self.alpha, self.a, self.b
        z = t / (alpha + t_age + t)
        tail = np.exp((r + x) * (np.log(alpha + t_age) - np.log(alpha + t_age + t)))
        numerator = (a + b + x - 1.0) / (a - 1.0) * (
            1.0 - tail * special.hyp2f1(r + x, b + x, a + b + x - 1.0, z))
        odds = np.where(x > 0, self._dropout_odds(x, tx, t_age), 0.0)
        return numerator / (1.0 + odds)


@dataclass(frozen=True)
class GammaGamma:
    """A fitted Gamma-Gamma spend model: transaction value ~ Gamma(p, ν), ν ~ Gamma(q, v)."""

    p: float
    q: float
    v: float

    @property
    def mean_value(self) -> float:
        r"""The population's mean transaction value, :math:`E(M) = p v / (q - 1)`."""
        return self.p * self.v / (self.q - 1.0)

    def expected_value(self, *, frequency: Any, monetary_value: Any) -> np.ndarray:
        r"""A customer's expected transaction value given *x* repeat transactions of mean
        :math:`m_x` (Fader, Hardie & Lee 2005, "RFM and CLV", eq. 5):

        .. math:: E(M \mid p, q, v, m_x, x) = \frac{p (v + x m_x)}{p x + q - 1}

        a weighted mean of the population mean :math:`pv / (q - 1)` and the customer's own;
        with *x* = 0 it is the population mean.
        """
        x = np.asarray(frequency, dtype=float)
        m = np.nan_to_num(np.asarray(monetary_value, dtype=float))
        return self.p * (self.v + x * m) / (self.p * x + self.q - 1.0)


def _weights(weights: Any, size: int) -> np.ndarray:
    return np.ones(size) if weights is None else np.asarray(weights, dtype=float)


def _distinct(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``values``' distinct values and, per value, the index of its distinct value."""
    distinct, index = np.unique(values, return_inverse=True)
    return distinct, index.reshape(values.shape)


def bgnbd_likelihood(frequency: Any, recency: Any, age: Any,
                     weights: Any = None) -> Callable[[Sequence[float]], float]:
    """The BG/NBD log-likelihood of ``(r, alpha, a, b)`` (module docstring) on these rows,
    summed weighted by ``weights`` (customers per distinct row), as a function of the
    parameters, for the optimiser to call a thousand times: the special functions of the
    purchase counts and the logarithms of the times are taken on their few distinct values
    (the same numbers as on every row, gathered after)."""
    x, tx, t_age = (np.asarray(v, dtype=float) for v in (frequency, recency, age))
    w = _weights(weights, x.size)
    xs = np.maximum(x, 1.0)  # x = 0 has no dropout term; keep b + x - 1 > 0 for the where
    repeat = x > 0
    x_values, x_index = _distinct(x)
    xs_values = np.maximum(x_values, 1.0)
    age_values, age_index = _distinct(t_age)
    recency_values, recency_index = _distinct(tx)

    def log_likelihood(params: Sequence[float]) -> float:
        r, alpha, a, b = params
        head = (special.gammaln(r + x_values)[x_index] - special.gammaln(r) + r * np.log(alpha)
                - special.betaln(a, b))
        stay = (special.betaln(a, b + x_values)[x_index]
                - (r + x) * np.log(alpha + age_values)[age_index])
        leave = np.where(repeat, special.betaln(a + 1.0, b + xs_values - 1.0)[x_index]
                         - (r + xs) * np.log(alpha + recency_values)[recency_index], -np.inf)
        return float(np.sum(w * (head + np.logaddexp(stay, leave))))

    return log_likelihood


def bgnbd_log_likelihood(params: Sequence[float], frequency: Any, recency: Any, age: Any,
                         weights: Any = None) -> float:
    """The BG/NBD log-likelihood of ``(r, alpha, a, b)`` (module docstring), summed over the
    rows weighted by ``weights`` (customers per distinct row)."""
    return bgnbd_likelihood(frequency, recency, age, weights)(params)


def gamma_gamma_likelihood(frequency: Any, monetary_value: Any,
                           weights: Any = None) -> Callable[[Sequence[float]], float]:
    """The Gamma-Gamma log-likelihood of ``(p, q, v)`` (module docstring) over customers with
    ``frequency`` > 0 and a positive ``monetary_value``, weighted by ``weights``, as a function
    of the parameters: the logarithms of the data are taken once, the Gamma functions on the
    distinct purchase counts."""
    x, m = np.asarray(frequency, dtype=float), np.asarray(monetary_value, dtype=float)
    w = _weights(weights, x.size)
    log_m, log_x, mx = np.log(m), np.log(x), m * x
    x_values, x_index = _distinct(x)

    def log_likelihood(params: Sequence[float]) -> float:
        p, q, v = params
        px, px_values = p * x, p * x_values
        ll = (special.gammaln(px_values + q)[x_index] - special.gammaln(px_values)[x_index]
              - special.gammaln(q) + q * np.log(v) + (px - 1.0) * log_m
              + px * log_x - (px + q) * np.log(v + mx))
        return float(np.sum(w * ll))

    return log_likelihood


def gamma_gamma_log_likelihood(params: Sequence[float], frequency: Any, monetary_value: Any,
                               weights: Any = None) -> float:
    """The Gamma-Gamma log-likelihood of ``(p, q, v)`` (module docstring) over customers with
    ``frequency`` > 0 and a positive ``monetary_value``, weighted by ``weights``."""
    return gamma_gamma_likelihood(frequency, monetary_value, weights)(params)


def _maximise(name: str, log_likelihood: Any, size: int, total: float,
              what: str) -> np.ndarray:
    """The parameters maximising ``log_likelihood`` (a function of the parameters), found in
    log space; :class:`ModelFitError` when the optimiser does not converge."""

    def loss(log_params: np.ndarray) -> float:
        value = log_likelihood(np.exp(log_params))
        return -value / total if np.isfinite(value) else np.inf

    result = optimize.minimize(loss, np.full(size, _START), method="Nelder-Mead",
                      options={"xatol": 1e-9, "fatol": 1e-12, "maxiter": _MAX_ITERATIONS,
                               "maxfev": _MAX_ITERATIONS, "adaptive": True})
    params = np.exp(result.x)
    if not result.success or not np.all(np.isfinite(params)) or not np.isfinite(result.fun):
        raise ModelFitError(f"the {name} fit did not converge on {what}: {result.message} "
                            f"(last parameters {', '.join(f'{p:.4g}' for p in params)})")
    return params


def fit_bgnbd(frequency: Any, recency: Any, age: Any, weights: Any = None) -> BGNBD:
    """BG/NBD fitted by maximum likelihood to a summary (or its distinct rows with
    ``weights``, the customers of each). Needs customers who bought again: without them
    the dropout process cannot be told from the purchase rate."""
    x = np.asarray(frequency, dtype=float)
    w = _weights(weights, x.size)
    total = float(w.sum())
    if total == 0:
        raise ModelFitError("BG/NBD needs customers and the summary is empty")
    if not np.any((x > 0) & (w > 0)):
        raise ModelFitError(f"BG/NBD cannot be fitted: none of the {total:,.0f} customers "
                            "bought again (frequency > 0) in the calibration period")
    r, alpha, a, b = _maximise("BG/NBD", bgnbd_likelihood(x, recency, age, w), 4, total,
                               f"{total:,.0f} customers")
    return BGNBD(r=float(r), alpha=float(alpha), a=float(a), b=float(b))


def fit_gamma_gamma(frequency: Any, monetary_value: Any, weights: Any = None) -> GammaGamma:
    """Gamma-Gamma fitted by maximum likelihood on the customers with ``frequency`` > 0 and a
    positive ``monetary_value`` (the others carry no spend information, or a zero the model's
    Gamma cannot hold). ``q`` ≤ 1 (an infinite mean value) is an error."""
    x = np.asarray(frequency, dtype=float)
    m = np.nan_to_num(np.asarray(monetary_value, dtype=float))
    w = _weights(weights, x.size)
    keep = (x > 0) & (m > 0) & (w > 0)
    if not keep.any():
        raise ModelFitError("Gamma-Gamma cannot be fitted: no customer has a repeat purchase "
                            "of positive value in the calibration period")
    x, m, w = x[keep], m[keep], w[keep]
    total = float(w.sum())
    p, q, v = _maximise("Gamma-Gamma", gamma_gamma_likelihood(x, m, w), 3, total,
                        f"{total:,.0f} customers with repeat purchases")
    if q <= 1.0:
        raise ModelFitError(f"the Gamma-Gamma fit gives q = {q:.4g} ≤ 1: the mean "
                            "transaction value p v / (q - 1) is not finite on this data")
    return GammaGamma(p=float(p), q=float(q), v=float(v))


# ---- fitting on the warehouse ----------------------------------------------------------------

@dataclass(frozen=True)
class CLVFit:
    """Both models fitted on one calibration period, and what they were fitted on."""

    purchases: BGNBD
    spend: GammaGamma
    unit: str
    #: the calibration period: the first purchase day … ``until`` (inclusive)
    since: date
    until: date
    customers: int
    repeat_customers: int

    def as_dict(self) -> dict[str, Any]:
        """The parameters and the period as plain values (the CLI's JSON)."""
        return {"r": self.purchases.r, "alpha": self.purchases.alpha, "a": self.purchases.a,
                "b": self.purchases.b, "p": self.spend.p, "q": self.spend.q, "v": self.spend.v,
                "customers": self.customers, "repeat_customers": self.repeat_customers,
                "unit": self.unit, "since": self.since.isoformat(),
                "until": self.until.isoformat()}


def _last_purchase_day(p: ir.Table) -> date:
    last = p.purchased_at.max().execute()
    if last is None or pd.isna(last):
        raise MissingInputError(f"no purchases to fit a CLV model on: fill them with {_RUN}")
    return pd.Timestamp(last).date()


def _counts(days: ir.Table, **more: ir.Scalar) -> pd.DataFrame:
    """The customers of a :func:`_rfm_days` table by distinct ``(frequency, recency_days,
    age_days)``, sorted: the likelihood's sum, so the fit, is the same whatever order the
    engine gives."""
    return days.group_by(["frequency", "recency_days", "age_days"]).aggregate(
        customers=days.count(), **more).to_pandas().sort_values(
        ["frequency", "recency_days", "age_days"], ignore_index=True)


def _counts_to_last_day(p: ir.Table) -> tuple[pd.DataFrame, date]:
    """:func:`_counts` of the purchases through the last purchase day, and that day, in one
    query (not one for the day, then one for the counts)."""
    days = _rfm_days(p, None)
    # the last day of the window is the first purchase day plus the age of any customer
    counts = _counts(days, _last=(days.age_days + _first_day(days)).max())
    if counts.empty:
        raise MissingInputError(f"no purchases to fit a CLV model on: fill them with {_RUN}")
    return counts.drop(columns="_last"), date(1970, 1, 1) + timedelta(
        days=int(counts["_last"].iloc[0]))


def _first_day(days: ir.Table) -> ir.IntegerValue:
    return _day_number(days.first_purchase_at)


def _fit_days(days: ir.Table, unit: str, until: date,
              counts: pd.DataFrame | None = None) -> CLVFit:
    """Fit both models on a :func:`_rfm_days` table through its distinct rows (``counts``:
    its :func:`_counts` when already asked)."""
    divisor = float(_divisor(unit))
    counts = _counts(days) if counts is None else counts
    if counts.empty:
        raise MissingInputError(f"no purchases on or before {until.isoformat()} to fit a CLV "
                                f"model on: fill them with {_RUN}, or choose a later --until")
    model = fit_bgnbd(counts.frequency, counts.recency_days / divisor,
                      counts.age_days / divisor, counts.customers)
    repeat = days.filter(days.frequency > 0)
    values = repeat.group_by(["frequency", "monetary_value"]).aggregate(
        customers=repeat.count()).to_pandas().sort_values(
        ["frequency", "monetary_value"], ignore_index=True)
    spend = fit_gamma_gamma(values.frequency, values.monetary_value, values.customers)
    first_day = int(counts.age_days.max())
    log.info("CLV fit on %d customers: %s, %s", counts.customers.sum(), model, spend)
    return CLVFit(purchases=model, spend=spend, unit=unit,
                  since=until - timedelta(days=first_day), until=until,
                  customers=int(counts.customers.sum()),
                  repeat_customers=int(values.customers.sum()))


def fit(source: BaseBackend | ir.Table, *, until: date | None = None,
        unit: str = UNIT_DEFAULT, conversion: str = CONVERSION_DEFAULT) -> CLVFit:
    """BG/NBD and Gamma-Gamma fitted on the purchases of ``source`` (a warehouse or a
    purchases table, as :func:`rfm_summary` takes) on or before ``until`` (default: the last
    purchase day), with recency and age in ``unit``."""
    _divisor(unit)
    p = source if isinstance(source, ir.Table) else purchases(source, conversion=conversion)
    until = _last_purchase_day(p) if until is None else until
    return _fit_days(_rfm_days(p, until), unit, until)


def predict(days: ir.Table, fitted: CLVFit, *, horizon_days: float = HORIZON_DAYS_DEFAULT,
            discount_rate: float = 0.0) -> ir.Table:
    r"""Per customer of a :func:`_rfm_days` table: ``expected_purchases`` in the next
    ``horizon_days``, ``expected_value`` of a transaction, ``p_alive`` and ``clv``.

    .. math:: CLV = \sum_{k} \big(E[Y(t_k)] - E[Y(t_{k-1})]\big)\, E(M) \,/\,(1 + d)^{t_k}

    over the whole periods :math:`t_k = 1, 2, …` of the horizon (and the horizon itself when
    it ends within a period), ``discount_rate`` *d* per period of ``fitted.unit``; with
    *d* = 0 it is :math:`E[Y(horizon)] \cdot E(M)`. Expected purchases are computed in numpy
    on the distinct ``(frequency, recency, age)`` rows and joined back in the engine.
    """
    divisor = float(_divisor(fitted.unit))
    horizon = horizon_days / divisor
    steps = [float(k) for k in range(1, int(np.floor(horizon)) + 1)]
    if not steps or steps[-1] < horizon:
        steps.append(horizon)
    rows = days.select("frequency", "recency_days", "age_days").distinct().to_pandas()
    x, tx, t_age = (rows.frequency.to_numpy(float), rows.recency_days.to_numpy(float) / divisor,
                    rows.age_days.to_numpy(float) / divisor)
    model = fitted.purchases
    cumulative = [model.expected_purchases(t, frequency=x, recency=tx, age=t_age)
                  for t in steps]
    discounted = np.zeros(len(rows))
    previous = np.zeros(len(rows))
    for t, total in zip(steps, cumulative, strict=True):
        discounted += (total - previous) / (1.0 + discount_rate) ** t
        previous = total
    lookup = ibis.memtable(pd.DataFrame({
        "_frequency": rows.frequency.astype("int64"),
        "_recency_days": rows.recency_days.astype("int64"),
        "_age_days": rows.age_days.astype("int64"),
        "expected_purchases": cumulative[-1].astype(float),
        "_discounted_purchases": discounted,
        "p_alive": model.p_alive(frequency=x, recency=tx, age=t_age).astype(float)}))
    t = days.inner_join(lookup, (days.frequency == lookup._frequency)
                        & (days.recency_days == lookup._recency_days)
                        & (days.age_days == lookup._age_days))
    s = fitted.spend
    value = (s.p * (s.v + t.frequency.cast("float64") * t.monetary_value.fill_null(0.0))
             / (s.p * t.frequency.cast("float64") + s.q - 1.0))
    return t.select("customer_id", "first_purchase_at", "frequency", "expected_purchases",
                    "p_alive", expected_value=value,
                    clv=t._discounted_purchases * value)


# ---- KPIs ------------------------------------------------------------------------------------

_CLV_TABLES = ["journeys", "sessions"]


@register_in("customers", "historical_clv", checks=[_check_conversion], stage="retention",
             unit="reporting currency per customer",
             formula="sum(value of purchases) / customers, by the first purchase's period and "
             "the customer's first-touch channel…", tables=_CLV_TABLES,
             dimensions=PERSON_DIMS, values=("customers", "revenue", "historical_clv"),
             zero_denominator=_ZERO, options=("conversion",))
def historical_clv(a: ir.Table) -> dict[str, ir.Value]:
    """Historical CLV: what customers spent so far (before ``until``) per customer, by the
    period of their first purchase (``since``/``until`` bound it) and their acquisition
    channel, source… and device (their first session's)."""
    return {"customers": a._customers, "revenue": a._revenue,
            "historical_clv": _ratio(a._revenue, a._customers)}


@register("predicted_clv", stage="retention", unit="reporting currency per customer",
          formula="sum over customers of E[purchases in the next 365 days] (BG/NBD) x "
          "E[transaction value] (Gamma-Gamma) / customers; both fitted once on every customer",
          tables=_CLV_TABLES, dimensions=PERSON_DIMS,
          values=("customers", "expected_purchases", "predicted_revenue", "predicted_clv"),
          zero_denominator=_ZERO, options=("conversion",))
def predicted_clv(con: BaseBackend, q: Query) -> ir.Table:
    """Predicted CLV: the revenue the customers will bring in the next 365 days, undiscounted.
    BG/NBD and Gamma-Gamma are fitted once, in weeks, on every customer's purchases before
    ``until`` (the calibration period ends the day before; without ``until``, on the last
    purchase day); each customer's expected purchases times expected value is summed by the
    first purchase's period (``since`` bounds it) and the acquisition channel, source… and
    device (the first session's)."""
    p = purchases(con, conversion=q.conversion)
    counts = None
    if q.until is None:  # the last purchase day and the counts fitted on, in one query
        counts, until = _counts_to_last_day(p)
    else:
        until = (q.until - timedelta(days=1)).date()
    # fitted on, then predicted for, the same summary: inside computed_once computed once
    days = _once(con, ("rfm_days", q.conversion, until), lambda: _rfm_days(p, until))
    per_customer = predict(days, _fit_days(days, UNIT_DEFAULT, until, counts))
    f = first_touches(con, q).drop("first_at")
    t = per_customer.left_join(f, per_customer.customer_id == f.person_id)
    t = _keyed(t, q, at=t.first_purchase_at,
               dims=_levels(t, {d: d for d in person_levels(f)}))
    t = _aggregate(t, q, customers=t.count().cast("int64"),
                   expected_purchases=t.expected_purchases.sum(),
                   predicted_revenue=t.clv.sum())
    return _order(t.mutate(predicted_clv=_ratio(t.predicted_revenue, t.customers)), q)


DOC_SECTIONS["clv"] = """
## Customer lifetime value: `historical_clv`, `predicted_clv`, `touchline clv fit`

`touchline/metrics/clv.py`. Customers are persons with `purchase` conversions (the same as the
other retention KPIs). Historical CLV is their revenue so far per customer. Predicted CLV fits
two models of Fader, Hardie & Lee (2005) by maximum likelihood and predicts each customer:

- **The summary** (`rfm_summary`, an Ibis expression run in the engine), Fader & Hardie's
  convention: purchases on one (UTC) day are one transaction worth their sum; `frequency` =
  repeat purchase days; `recency` = last − first purchase day and `age` (their *T*) =
  `until` − first purchase day, in whole days, divided by 7 in weeks; `monetary_value` = the
  mean value of the repeat transactions (null without one). Only purchases on or before
  `until` (inclusive: the calibration period's last day) count.
- **BG/NBD** (purchases): while alive, a customer buys at rate λ ~ Gamma(r, α) and drops out
  after each purchase with probability p ~ Beta(a, b). Likelihood
  `L = B(a,b+x)/B(a,b) · Γ(r+x)α^r / (Γ(r)(α+T)^(r+x)) + [x>0] B(a+1,b+x−1)/B(a,b) ·
  Γ(r+x)α^r / (Γ(r)(α+t_x)^(r+x))`; expected purchases in the next t periods
  `E[Y(t)] = (a+b+x−1)/(a−1) · [1 − ((α+T)/(α+T+t))^(r+x) · 2F1(r+x, b+x; a+b+x−1;
  t/(α+T+t))] / (1 + [x>0] a/(b+x−1) · ((α+T)/(α+t_x))^(r+x))`; P(alive) is the same
  denominator's inverse.
- **Gamma-Gamma** (spend), fitted on the customers with a repeat purchase of positive value:
  transaction values ~ Gamma(p, ν), ν ~ Gamma(q, v); a customer's expected value
  `E(M) = p(v + x·m_x) / (px + q − 1)`, the population mean `pv/(q − 1)` without repeats.
- **Predicted CLV** over a horizon = expected purchases × expected value; `clv.predict` takes a
  `discount_rate` per period (`Σ_k (E[Y(t_k)] − E[Y(t_k−1)]) · E(M) / (1+d)^t_k` over the
  horizon's periods). The `predicted_clv` KPI fits once, in weeks, on every customer, predicts
  the next 365 days undiscounted for each customer and sums by the first purchase's period and
  the first-touch channel, source…
- **Fast on millions of customers**: the likelihoods are summed over the *distinct*
  `(frequency, recency, age)` rows (and `(frequency, monetary_value)` rows) weighted by their
  counts, which the engine groups; parameters are optimised in log space with
  `scipy.optimize.minimize` (Nelder-Mead). A fit that does not converge, a data set without
  repeat purchases or a Gamma-Gamma `q ≤ 1` (infinite mean value) is an error saying so.
- **Why scipy, not a CLV library**: `lifetimes` is unmaintained since 2020 and relies on
  pandas behaviour current pandas removed; `pymc-marketing` pulls in PyMC (PyTensor, ArviZ), a
  heavy Bayesian stack for two maximum-likelihood fits. scipy is already a dependency.

```sh
touchline clv fit --until 1997-09-30 --unit week --format json
```

prints `r`, `alpha`, `a`, `b`, `p`, `q`, `v`, the customers (and those with repeat purchases)
and the calibration period (`since`, the first purchase day, to `until`). Without `--until` the
period ends on the last purchase day. No purchases: the error names the import and run that
fill them.

**Checked against CDNOW** (`tests/metrics/test_clv.py`): the 2,357 customers of the CDNOW
sample (the file `lifetimes` ships; the test extra installs it for that file only) ingested as
events (customer as `user_id`, the day as `timestamp`, the dollar value as `revenue`) and run
with `touchline run`, then fitted with `--until 1997-09-30 --unit week`, give Fader & Hardie's
published parameters within 1 %: BG/NBD r 0.2426, α 4.4135, a 0.7929, b 2.4258; Gamma-Gamma
p 6.25, q 3.74, v 15.45. Two settings make CDNOW's purchases conversions: its dates are from
1997 (`earliest_valid_timestamp = "1990-01-01"`), and 8 of its purchases are worth $0, which
the default `purchase` conversion (revenue > 0) leaves out, so the test counts every
`Order Completed` event (`conversions = [{name = "purchase", events = ["Order Completed"],
value = "revenue"}]`).
"""
