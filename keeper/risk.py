"""Portfolio Value-at-Risk and Expected Shortfall, their Euler allocation, and the pre-trade ES limit.

Chain-free: arrays in, frozen dataclasses out.

Conventions
-----------
* ``weights`` : shape (n_assets,), fractions of NAV held in each *risky* asset (long only,
  :math:`w_i \\ge 0`, :math:`\\sum_i w_i \\le 1`); the remainder :math:`1 - \\sum_i w_i` is held in the
  base asset (the vault's 6-decimal USD stablecoin), which has zero return and zero risk.
* ``returns`` : shape (n_obs, n_assets), *daily simple* returns, row 0 oldest (as
  :func:`keeper.estimation.simple_returns` gives them).  Portfolio return of a scenario:
  :math:`r_p = r^\\top w`; portfolio loss :math:`L = -r_p`.
* ``covariance`` : shape (n_assets, n_assets), *annualised* covariance of daily simple returns with
  ``periods_per_year = 365`` (the unit of :class:`keeper.estimation.CovarianceEstimate`); it is
  divided by ``periods_per_year`` to get the daily covariance.  ``expected_returns`` likewise are
  annualised arithmetic means (default zero).
* VaR and ES are reported as **positive fractions of NAV** (a loss of 0.05 is 5 % of NAV; a negative
  value means even the tail scenario is a gain).  Given ``nav_base_units`` -- NAV as an ``int`` in the
  base asset's smallest units (``totalAssets()``; 1 USD = 1_000_000 for the 6-decimal stablecoin) --
  each loss is also given in base units, rounded to the nearest unit (half to even) from the exact
  rational value of the float fraction; per-asset contributions in base units are apportioned by
  largest remainder so that they sum *exactly* to the total.
* ``confidence`` :math:`\\alpha \\in [0.5, 1)`: VaR is the :math:`\\alpha`-quantile of the loss, ES
  the mean loss in the worst :math:`1-\\alpha` of outcomes.  ``horizon_days`` :math:`h \\ge 1`.

Methods
-------
``"historical"``
    Empirical distribution of the scenario losses.  ``horizon_days = 1``: the daily returns.
    ``horizon_days = h > 1``: *overlapping* h-day compounded returns
    :math:`\\prod_{s=t}^{t+h-1}(1 + r_{s,i}) - 1` (``n_obs - h + 1`` scenarios), i.e. buy-and-hold of
    the current weights over h days -- no square-root-of-time scaling.
    Quantile convention: :math:`\\mathrm{VaR}_\\alpha = \\inf\\{l : F_N(l) \\ge \\alpha\\}`, the order
    statistic :math:`L_{(\\lceil \\alpha N \\rceil)}` of the ascending losses (``numpy.quantile(...,
    method="inverted_cdf")``).  ES is Acerbi-Tasche [1]_,
    :math:`\\mathrm{ES}_\\alpha = \\frac{1}{1-\\alpha}\\int_\\alpha^1 \\mathrm{VaR}_u\\,du`, which on
    the empirical distribution with tail mass :math:`m = (1-\\alpha) N` is

    .. math:: \\mathrm{ES}_\\alpha = \\frac{1}{m}\\Big(\\sum_{L_s > \\mathrm{VaR}} L_s
              + \\big(m - \\#\\{L_s > \\mathrm{VaR}\\}\\big)\\,\\mathrm{VaR}\\Big):

    the mean of the losses beyond VaR, with the boundary scenario(s) weighted so that the tail holds
    exactly :math:`m` scenarios (ties at VaR share that weight equally).  A sample with
    :math:`m < 1` has no scenario beyond its worst and is refused (``InsufficientHistoryError``).
    (:math:`m` is snapped to the nearest integer when within :math:`10^{-9} N` of it, so that
    ``0.99 * 100`` counts as exactly one tail scenario despite binary rounding.)
``"gaussian"``
    Normal returns with daily mean :math:`\\mu_p = \\mu^\\top w` and volatility
    :math:`\\sigma_p = \\sqrt{w^\\top \\Sigma_d w}`; horizon by the square-root-of-time rule
    (:math:`h\\mu_p`, :math:`\\sqrt h \\sigma_p`, i.i.d. days):

    .. math:: \\mathrm{VaR} = -h\\mu_p + \\sqrt h\\,\\sigma_p z_\\alpha, \\qquad
              \\mathrm{ES} = -h\\mu_p + \\sqrt h\\,\\sigma_p \\frac{\\varphi(z_\\alpha)}{1-\\alpha},
              \\qquad z_\\alpha = \\Phi^{-1}(\\alpha).

    From ``returns`` the inputs are the sample mean and the unbiased sample covariance
    (``ddof = 1``); from ``covariance`` the given (annualised) matrix and ``expected_returns``.
``"cornish_fisher"``
    Modified VaR [2]_ [3]_: the Gaussian quantile corrected for the portfolio's skewness :math:`S` and
    excess kurtosis :math:`K` (method-of-moments estimates, central moments with divisor ``n_obs``):

    .. math:: z_{cf} = c + \\frac{(c^2-1)S}{6} + \\frac{(c^3-3c)K}{24} - \\frac{(2c^3-5c)S^2}{36},
              \\qquad c = \\Phi^{-1}(1-\\alpha), \\qquad \\mathrm{VaR} = -\\mu - \\sigma z_{cf}.

    ES integrates the Cornish-Fisher quantile over the tail in closed form (Maillard [4]_; the
    partial moments :math:`\\int_{-\\infty}^c z^k\\varphi(z)dz` of the standard normal for
    :math:`k \\le 3`):

    .. math:: \\mathrm{ES} = -\\mu + \\sigma\\frac{\\varphi(c)}{1-\\alpha}
              \\Big[1 + \\frac{S c}{6} + \\frac{K(c^2-1)}{24} - \\frac{S^2(2c^2-1)}{36}\\Big].

    Horizon h: the cumulants of i.i.d. daily returns add, so :math:`\\mu_h = h\\mu`,
    :math:`\\sigma_h = \\sqrt h\\sigma`, :math:`S_h = S/\\sqrt h`, :math:`K_h = K/h`.  The expansion is
    a valid quantile function only while :math:`z_{cf}` increases with :math:`c` over the tail; when
    it does not (very large :math:`|S|` or :math:`K`), the measure carries the flag
    ``"cornish_fisher_not_monotone"`` (ES may then fall below VaR).

Component contributions (Euler allocation [5]_): every measure above is positively homogeneous of
degree 1 in ``weights``, so :math:`\\rho(w) = \\sum_i w_i\\,\\partial\\rho/\\partial w_i`.
Gaussian: :math:`w_i(-h\\mu_i + \\sqrt h k (\\Sigma_d w)_i/\\sigma_p)` with :math:`k = z_\\alpha` or
:math:`\\varphi(z_\\alpha)/(1-\\alpha)`.  Cornish-Fisher: the exact gradient of the formulas above
through :math:`(\\mu, m_2, m_3, m_4)`, using
:math:`\\partial m_k / \\partial w = k X^\\top (Xw)^{k-1} / N` for the centred returns :math:`X`
(the co-moment tensors of Boudt, Peterson and Croux [3]_ are never formed: :math:`O(Nn)`).
Historical: the conditional expectation of each asset's loss in the tail scenarios [6]_ -- for VaR
the mean of :math:`-w_i r_{s,i}` over the scenarios whose loss equals VaR, for ES the same
Acerbi-Tasche weights as the ES itself.  All contributions sum to the total (up to float rounding).

References
----------
.. [1] C. Acerbi, D. Tasche, "On the coherence of expected shortfall", Journal of Banking & Finance
   26(7), 2002, 1487-1503 (Proposition 3.2 / eq. 3.3: ES with ties and non-integer tail mass).
.. [2] L. Favre, J.-A. Galeano, "Mean-modified value-at-risk optimization with hedge funds", Journal
   of Alternative Investments 5(2), 2002; S. Zangari, "A VaR methodology for portfolios that include
   options", RiskMetrics Monitor, 1996.
.. [3] K. Boudt, B. Peterson, C. Croux, "Estimation and decomposition of downside risk for portfolios
   with non-normal returns", Journal of Risk 11(2), 2008, 79-103.
.. [4] D. Maillard, "A user's guide to the Cornish Fisher expansion", SSRN 1997178, 2012 (section on
   the Cornish-Fisher expected shortfall).
.. [5] D. Tasche, "Risk contributions and performance measurement", TU Munchen working paper, 1999;
   T. Roncalli, "Introduction to Risk Parity and Budgeting", CRC, 2013, section 2.2.
.. [6] W. Hallerbach, "Decomposing portfolio value-at-risk: a general analysis", Journal of Risk 5(2),
   2003; D. Tasche, "Conditional expectation as quantile derivative", 2000.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Sequence

import numpy as np
import numpy.typing as npt
from scipy.special import ndtri

from keeper.errors import ConfigError, InsufficientHistoryError, InvalidPriceError
from keeper.units import DAYS_PER_YEAR

__all__ = [
    "FloatArray",
    "METHODS",
    "DEFAULT_CONFIDENCES",
    "DEFAULT_HORIZONS_DAYS",
    "RiskMeasure",
    "RiskReport",
    "LimitDecision",
    "horizon_returns",
    "gaussian_var_es_from_moments",
    "cornish_fisher_var_es_from_moments",
    "historical_var_es",
    "gaussian_var_es",
    "cornish_fisher_var_es",
    "portfolio_var_es",
    "risk_report",
    "enforce_es_limit",
    "to_base_units",
    "apportion_base_units",
    "format_risk_report",
]

FloatArray = npt.NDArray[np.float64]

METHODS = ("historical", "gaussian", "cornish_fisher")
DEFAULT_CONFIDENCES = (0.95, 0.99)
DEFAULT_HORIZONS_DAYS = (1, 10)

_WEIGHT_SUM_ATOL = 1e-9
_TAIL_SNAP_RTOL = 1e-9
_MIN_CF_OBSERVATIONS = 4
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


# --------------------------------------------------------------------------- #
# Result types
# --------------------------------------------------------------------------- #
@dataclass(frozen=True, eq=False)  # arrays: identity equality
class RiskMeasure:
    """VaR and ES of one (method, confidence, horizon) and their per-asset Euler contributions.

    Attributes
    ----------
    method : str
        ``"historical"``, ``"gaussian"`` or ``"cornish_fisher"``.
    confidence : float
        :math:`\\alpha`, e.g. 0.99.
    horizon_days : int
        Horizon in days.
    var, es : float
        Value-at-Risk and Expected Shortfall, positive fractions of NAV.
    var_contributions, es_contributions : FloatArray, shape (n_assets,)
        Euler contributions, fractions of NAV; each sums to ``var`` / ``es``. Read-only.
    n_scenarios : int
        Historical: scenarios used (``n_obs - h + 1``); Cornish-Fisher / Gaussian from returns: daily
        observations; Gaussian from a covariance: 0.
    nav_base_units : int or None
        NAV in base-asset smallest units, if given.
    var_base_units, es_base_units : int or None
        ``var`` and ``es`` times NAV, nearest base unit.
    var_contributions_base_units, es_contributions_base_units : tuple of int, or None
        Contributions in base units, summing exactly to ``var_base_units`` / ``es_base_units``.
    flags : tuple of str
        Warnings about the estimate (e.g. ``"cornish_fisher_not_monotone"``, ``"zero_variance"``).
    """

    method: str
    confidence: float
    horizon_days: int
    var: float
    es: float
    var_contributions: FloatArray
    es_contributions: FloatArray
    n_scenarios: int
    nav_base_units: int | None = None
    var_base_units: int | None = None
    es_base_units: int | None = None
    var_contributions_base_units: tuple[int, ...] | None = None
    es_contributions_base_units: tuple[int, ...] | None = None
    flags: tuple[str, ...] = ()

    def to_dict(self, symbols: Sequence[str] | None = None) -> dict[str, Any]:
        """JSON-able dict; contributions keyed by ``symbols`` when given, else listed in order."""

        def per_asset(values: Sequence[Any] | None) -> Any:
            if values is None:
                return None
            items = [v if isinstance(v, int) else float(v) for v in values]
            return dict(zip(symbols, items)) if symbols is not None else items

        return {
            "method": self.method,
            "confidence": self.confidence,
            "horizon_days": self.horizon_days,
            "var": float(self.var),
            "es": float(self.es),
            "var_contributions": per_asset(self.var_contributions),
            "es_contributions": per_asset(self.es_contributions),
            "n_scenarios": self.n_scenarios,
            "nav_base_units": self.nav_base_units,
            "var_base_units": self.var_base_units,
            "es_base_units": self.es_base_units,
            "var_contributions_base_units": per_asset(self.var_contributions_base_units),
            "es_contributions_base_units": per_asset(self.es_contributions_base_units),
            "flags": list(self.flags),
        }


@dataclass(frozen=True, eq=False)
class RiskReport:
    """Every (method, confidence, horizon) combination for one portfolio.

    Attributes
    ----------
    symbols : tuple of str
        Asset names, aligned with ``weights``.
    weights : FloatArray, shape (n_assets,)
        Risky-sleeve weights, fractions of NAV. Read-only.
    nav_base_units : int or None
        NAV in base-asset smallest units.
    measures : tuple of RiskMeasure
        In the order methods x confidences x horizons.
    covariance_source : str
        ``"returns"`` (sample covariance) or ``"covariance"`` (the given annualised matrix) for the
        Gaussian measures.
    """

    symbols: tuple[str, ...]
    weights: FloatArray
    nav_base_units: int | None
    measures: tuple[RiskMeasure, ...]
    covariance_source: str = "returns"

    def measure(self, method: str, confidence: float, horizon_days: int) -> RiskMeasure:
        """The measure for one combination.

        Raises
        ------
        ConfigError
            If the report does not contain that combination.
        """
        for m in self.measures:
            if m.method == method and m.confidence == confidence and m.horizon_days == horizon_days:
                return m
        available = [(m.method, m.confidence, m.horizon_days) for m in self.measures]
        raise ConfigError(
            f"no measure for method={method!r}, confidence={confidence!r}, "
            f"horizon_days={horizon_days!r}; the report holds {available}. Ask risk_report for it."
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict of the whole report."""
        return {
            "symbols": list(self.symbols),
            "weights": dict(zip(self.symbols, map(float, self.weights))),
            "base_weight": float(1.0 - self.weights.sum()),
            "nav_base_units": self.nav_base_units,
            "covariance_source": self.covariance_source,
            "measures": [m.to_dict(self.symbols) for m in self.measures],
        }


@dataclass(frozen=True, eq=False)
class LimitDecision:
    """Outcome of the pre-trade Expected Shortfall limit (:func:`enforce_es_limit`).

    Attributes
    ----------
    approved_weights : FloatArray, shape (n_assets,)
        ``target_weights`` unchanged when within the limit, else ``scale * target_weights`` (the rest
        of NAV goes to the base asset). Read-only.
    target_weights : FloatArray, shape (n_assets,)
        The weights asked for. Read-only.
    scale : float
        Factor in [0, 1] applied to the risky sleeve; 1.0 when within the limit.
    within_limit : bool
        True when the target itself meets the limit.
    es_before, es_after : float
        ES of the target and of the approved weights, fractions of NAV.
    es_limit : float
        The limit, fraction of NAV.
    method, confidence, horizon_days
        The measure the limit is stated in.
    reason : str
        One sentence for the journal: the ES before and after, the limit and the scale.
    nav_base_units, es_before_base_units, es_after_base_units, es_limit_base_units : int or None
        NAV and the three ES figures in base-asset units, when NAV is given.
    flags : tuple of str
        Flags of the underlying measure (see :class:`RiskMeasure`).
    """

    approved_weights: FloatArray
    target_weights: FloatArray
    scale: float
    within_limit: bool
    es_before: float
    es_after: float
    es_limit: float
    method: str
    confidence: float
    horizon_days: int
    reason: str
    nav_base_units: int | None = None
    es_before_base_units: int | None = None
    es_after_base_units: int | None = None
    es_limit_base_units: int | None = None
    flags: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict."""
        return {
            "within_limit": self.within_limit,
            "scale": self.scale,
            "es_before": self.es_before,
            "es_after": self.es_after,
            "es_limit": self.es_limit,
            "method": self.method,
            "confidence": self.confidence,
            "horizon_days": self.horizon_days,
            "reason": self.reason,
            "target_weights": [float(x) for x in self.target_weights],
            "approved_weights": [float(x) for x in self.approved_weights],
            "nav_base_units": self.nav_base_units,
            "es_before_base_units": self.es_before_base_units,
            "es_after_base_units": self.es_after_base_units,
            "es_limit_base_units": self.es_limit_base_units,
            "flags": list(self.flags),
        }


# --------------------------------------------------------------------------- #
# Validation
# --------------------------------------------------------------------------- #
def _freeze(a: FloatArray) -> FloatArray:
    a.setflags(write=False)
    return a


def _check_weights(weights: npt.ArrayLike) -> FloatArray:
    w = np.array(weights, dtype=np.float64)  # a copy: callers' arrays are never frozen
    if w.ndim != 1 or w.size < 1:
        raise ConfigError(
            f"weights have shape {w.shape}; expected (n_assets,) with n_assets >= 1, one fraction "
            "of NAV per risky asset."
        )
    if not np.all(np.isfinite(w)):
        raise ConfigError(f"weights {w.tolist()} contain a non-finite value; pass finite fractions of NAV.")
    if np.any(w < 0.0):
        i = int(np.argmin(w))
        raise ConfigError(
            f"weight {i} is {w[i]!r}; the vault is long only, weights must be >= 0. "
            "Pass the risky sleeve's fractions of NAV."
        )
    total = float(w.sum())
    if total > 1.0 + _WEIGHT_SUM_ATOL:
        raise ConfigError(
            f"weights sum to {total!r} > 1; they are fractions of NAV of the risky sleeve "
            "(the base asset takes the remainder), so they must sum to at most 1."
        )
    return w


def _check_confidence(confidence: float) -> float:
    a = float(confidence)
    if not 0.5 <= a < 1.0:  # also rejects NaN
        raise ConfigError(
            f"confidence is {confidence!r}; it must be in [0.5, 1) (e.g. 0.95 or 0.99)."
        )
    return a


def _check_horizon(horizon_days: int) -> int:
    if isinstance(horizon_days, bool) or int(horizon_days) != horizon_days or horizon_days < 1:
        raise ConfigError(
            f"horizon_days is {horizon_days!r}; it must be a positive integer number of days (1 or 10)."
        )
    return int(horizon_days)


def _check_nav(nav_base_units: int | None) -> int | None:
    if nav_base_units is None:
        return None
    if isinstance(nav_base_units, bool) or not isinstance(nav_base_units, (int, np.integer)) \
            or nav_base_units < 0:
        raise ConfigError(
            f"nav_base_units is {nav_base_units!r}; it must be a non-negative int in the base asset's "
            "smallest units (totalAssets(); 1 USD = 1_000_000 for a 6-decimal stablecoin)."
        )
    return int(nav_base_units)


def _check_returns(returns: npt.ArrayLike, n_assets: int) -> FloatArray:
    r = np.asarray(returns, dtype=np.float64)
    if r.ndim != 2 or r.shape[1] != n_assets:
        raise ConfigError(
            f"returns have shape {r.shape}; expected (n_obs, {n_assets}): one row per day (oldest "
            "first), one column per asset, aligned with weights."
        )
    bad = ~(np.isfinite(r) & (r >= -1.0))
    if bad.any():
        row, col = divmod(int(np.argmax(bad)), r.shape[1])
        raise InvalidPriceError(
            f"return at row {row}, column {col} is {r[row, col]!r}; simple returns must be finite and "
            ">= -1. Repair the price history (a missing or non-positive close) before measuring risk."
        )
    return r


def _check_covariance(covariance: npt.ArrayLike, n_assets: int) -> FloatArray:
    cov = np.asarray(covariance, dtype=np.float64)
    if cov.shape != (n_assets, n_assets):
        raise ConfigError(
            f"covariance has shape {cov.shape}; expected ({n_assets}, {n_assets}) aligned with weights."
        )
    if not np.all(np.isfinite(cov)):
        raise ConfigError("covariance contains a non-finite entry; pass a finite annualised covariance.")
    if not np.allclose(cov, cov.T, rtol=1e-10, atol=0.0):
        raise ConfigError("covariance is not symmetric; pass an annualised covariance matrix.")
    if np.any(np.diag(cov) < 0.0):
        raise ConfigError(f"covariance has a negative variance on its diagonal: {np.diag(cov).tolist()}.")
    return cov


def _check_periods(periods_per_year: int) -> int:
    if isinstance(periods_per_year, bool) or int(periods_per_year) != periods_per_year \
            or periods_per_year <= 0:
        raise ConfigError(
            f"periods_per_year is {periods_per_year!r}; it must be a positive integer (365 for daily "
            "crypto data)."
        )
    return int(periods_per_year)


# --------------------------------------------------------------------------- #
# Base-unit conversion
# --------------------------------------------------------------------------- #
def to_base_units(fraction: float, nav_base_units: int) -> int:
    """``fraction * nav_base_units`` rounded to the nearest base unit (half to even), exactly.

    The float ``fraction`` is taken at its exact binary value (``fractions.Fraction``), so there is
    no float rounding in the product for any NAV size.

    Parameters
    ----------
    fraction : float
        Fraction of NAV (a loss, positive or negative).
    nav_base_units : int
        NAV in the base asset's smallest units.

    Returns
    -------
    int
        Base units.
    """
    return round(Fraction(float(fraction)) * int(nav_base_units))


def apportion_base_units(fractions: npt.ArrayLike, total_base_units: int,
                         nav_base_units: int) -> tuple[int, ...]:
    """Per-asset base units that sum exactly to ``total_base_units`` (largest remainder).

    Each part starts at ``floor(fraction_i * nav)`` (exact rational product) and the difference to
    the total is handed out one unit at a time to the largest fractional remainders (Hamilton's
    method); a difference beyond ``n`` units is first spread evenly.

    Parameters
    ----------
    fractions : array_like, shape (n,)
        Fractions of NAV (e.g. Euler contributions).
    total_base_units : int
        The total the parts must add up to.
    nav_base_units : int
        NAV in base units.

    Returns
    -------
    tuple of int, length n
    """
    exact = [Fraction(float(f)) * int(nav_base_units) for f in np.asarray(fractions, dtype=np.float64)]
    floors = [math.floor(x) for x in exact]
    n = len(floors)
    if n == 0:
        return ()
    quotient, rest = divmod(int(total_base_units) - sum(floors), n)
    order = sorted(range(n), key=lambda i: (exact[i] - floors[i], -i), reverse=True)
    parts = [f + quotient for f in floors]
    for i in order[:rest]:
        parts[i] += 1
    return tuple(parts)


def _with_base_units(measure: RiskMeasure, nav: int | None) -> RiskMeasure:
    if nav is None:
        return measure
    var_units = to_base_units(measure.var, nav)
    es_units = to_base_units(measure.es, nav)
    return RiskMeasure(
        method=measure.method,
        confidence=measure.confidence,
        horizon_days=measure.horizon_days,
        var=measure.var,
        es=measure.es,
        var_contributions=measure.var_contributions,
        es_contributions=measure.es_contributions,
        n_scenarios=measure.n_scenarios,
        nav_base_units=nav,
        var_base_units=var_units,
        es_base_units=es_units,
        var_contributions_base_units=apportion_base_units(measure.var_contributions, var_units, nav),
        es_contributions_base_units=apportion_base_units(measure.es_contributions, es_units, nav),
        flags=measure.flags,
    )


# --------------------------------------------------------------------------- #
# Closed forms on moments
# --------------------------------------------------------------------------- #
def _normal_pdf(x: float) -> float:
    return _INV_SQRT_2PI * math.exp(-0.5 * x * x)


def gaussian_var_es_from_moments(mean: float, std: float, confidence: float) -> tuple[float, float]:
    """VaR and ES of a normal return :math:`N(\\mu, \\sigma^2)`, as positive losses.

    .. math:: \\mathrm{VaR} = -\\mu + \\sigma\\Phi^{-1}(\\alpha), \\qquad
              \\mathrm{ES} = -\\mu + \\sigma\\,\\varphi(\\Phi^{-1}(\\alpha))/(1-\\alpha)

    Parameters
    ----------
    mean, std : float
        Mean and standard deviation of the return over the horizon (fractions).
    confidence : float
        :math:`\\alpha \\in [0.5, 1)`.

    Returns
    -------
    (float, float)
        ``(var, es)`` in the return's units.
    """
    a = _check_confidence(confidence)
    z = float(ndtri(a))
    return -mean + std * z, -mean + std * _normal_pdf(z) / (1.0 - a)


def _cf_terms(confidence: float, skewness: float, excess_kurtosis: float) -> tuple[
        float, float, float, float, float, float]:
    """G and its partials in S and K for VaR and ES: measure = -mu + sigma * G(S, K)."""
    a = confidence
    c = float(ndtri(1.0 - a))
    s, k = skewness, excess_kurtosis
    z_cf = c + (c * c - 1.0) * s / 6.0 + (c ** 3 - 3.0 * c) * k / 24.0 - (2.0 * c ** 3 - 5.0 * c) * s * s / 36.0
    g_var = -z_cf
    g_var_s = -((c * c - 1.0) / 6.0 - (2.0 * c ** 3 - 5.0 * c) * s / 18.0)
    g_var_k = -(c ** 3 - 3.0 * c) / 24.0
    tail = _normal_pdf(c) / (1.0 - a)
    bracket = 1.0 + s * c / 6.0 + k * (c * c - 1.0) / 24.0 - s * s * (2.0 * c * c - 1.0) / 36.0
    g_es = tail * bracket
    g_es_s = tail * (c / 6.0 - s * (2.0 * c * c - 1.0) / 18.0)
    g_es_k = tail * (c * c - 1.0) / 24.0
    return g_var, g_var_s, g_var_k, g_es, g_es_s, g_es_k


def _cf_monotone(confidence: float, skewness: float, excess_kurtosis: float) -> bool:
    """True when dz_cf/dz > 0 for every z <= Phi^-1(1 - alpha) (the expansion is a quantile there)."""
    c = float(ndtri(1.0 - confidence))
    s, k = skewness, excess_kurtosis
    # d z_cf / dz = qa z^2 + qb z + qc
    qa = k / 8.0 - s * s / 6.0
    qb = s / 3.0
    qc = 1.0 - k / 8.0 + 5.0 * s * s / 36.0

    def slope(z: float) -> float:
        return (qa * z + qb) * z + qc

    if qa < 0.0:
        return False  # tends to -inf as z -> -inf
    if qa == 0.0:
        return qb <= 0.0 and slope(c) > 0.0
    vertex = -qb / (2.0 * qa)
    return slope(min(vertex, c)) > 0.0


def cornish_fisher_var_es_from_moments(mean: float, std: float, skewness: float,
                                       excess_kurtosis: float, confidence: float) -> tuple[float, float]:
    """Cornish-Fisher (modified) VaR and ES of a return with the given first four moments.

    See the module docstring for the formulas (Favre-Galeano modified VaR; ES by closed-form
    integration of the Cornish-Fisher quantile over the tail, Maillard 2012).  With
    ``skewness = excess_kurtosis = 0`` both equal :func:`gaussian_var_es_from_moments`.

    Parameters
    ----------
    mean, std : float
        Mean and standard deviation of the return over the horizon (fractions).
    skewness, excess_kurtosis : float
        Of the return over the horizon (dimensionless; excess kurtosis of a normal is 0).
    confidence : float
        :math:`\\alpha \\in [0.5, 1)`.

    Returns
    -------
    (float, float)
        ``(var, es)`` as positive losses in the return's units.
    """
    a = _check_confidence(confidence)
    g_var, _, _, g_es, _, _ = _cf_terms(a, float(skewness), float(excess_kurtosis))
    return -mean + std * g_var, -mean + std * g_es


# --------------------------------------------------------------------------- #
# Scenario construction
# --------------------------------------------------------------------------- #
def horizon_returns(returns: npt.ArrayLike, horizon_days: int) -> FloatArray:
    """Overlapping compounded h-day simple returns.

    .. math:: R^{(h)}_{t,i} = \\prod_{s=t}^{t+h-1} (1 + r_{s,i}) - 1, \\qquad t = 0..T-h

    Parameters
    ----------
    returns : array_like, shape (n_obs, n_assets)
        Daily simple returns, row 0 oldest.
    horizon_days : int
        :math:`h \\ge 1`.

    Returns
    -------
    FloatArray, shape (n_obs - h + 1, n_assets)
        ``returns`` itself (as float64) for h = 1.

    Raises
    ------
    ConfigError
        Bad shape or horizon.
    InsufficientHistoryError
        If ``n_obs < h``.
    """
    h = _check_horizon(horizon_days)
    r = np.asarray(returns, dtype=np.float64)
    if r.ndim != 2:
        raise ConfigError(f"returns have shape {r.shape}; expected (n_obs, n_assets).")
    if r.shape[0] < h:
        raise InsufficientHistoryError(
            f"{r.shape[0]} daily returns cannot form one {h}-day return; fetch at least {h} days."
        )
    if h == 1:
        return r
    growth = 1.0 + r
    n_windows = r.shape[0] - h + 1
    out = growth[:n_windows].copy()
    for lag in range(1, h):  # h contiguous products, oldest day first, instead of a strided reduction
        out *= growth[lag:lag + n_windows]
    out -= 1.0
    return out


# --------------------------------------------------------------------------- #
# The three methods
# --------------------------------------------------------------------------- #
def _tail_mass(n_scenarios: int, confidence: float) -> float:
    m = (1.0 - confidence) * n_scenarios
    nearest = round(m)
    if abs(m - nearest) <= _TAIL_SNAP_RTOL * n_scenarios:
        m = float(nearest)
    return m


def _historical(w: FloatArray, scenarios: FloatArray, confidence: float,
                horizon: int) -> RiskMeasure:
    n_scen = scenarios.shape[0]
    m = _tail_mass(n_scen, confidence)
    if m < 1.0:
        raise InsufficientHistoryError(
            f"{n_scen} historical {horizon}-day scenario(s) hold a tail of {m:.3g} < 1 scenario at "
            f"confidence {confidence}; at least {math.ceil(1.0 / (1.0 - confidence) - 1e-9)} are needed. "
            "Fetch a longer history or use the gaussian or cornish_fisher method."
        )
    losses = 0.0 - scenarios @ w  # (N,) fraction of NAV; "0.0 -" leaves no -0.0
    k = int(math.floor(m))
    var = float(np.partition(losses, n_scen - 1 - k)[n_scen - 1 - k])
    above = losses > var
    at_var = losses == var
    n_above = int(np.count_nonzero(above))
    n_at = int(np.count_nonzero(at_var))
    # Acerbi-Tasche tail weights: 1/m beyond VaR; the rest of the mass shared by the ties at VaR.
    q = np.where(above, 1.0 / m, 0.0) + np.where(at_var, (m - n_above) / (m * n_at), 0.0)
    es = float((float(np.sum(losses[above])) + (m - n_above) * var) / m)
    var_contrib = 0.0 - w * scenarios[at_var].mean(axis=0)
    es_contrib = 0.0 - w * (q @ scenarios)
    return RiskMeasure(
        method="historical",
        confidence=confidence,
        horizon_days=horizon,
        var=var,
        es=es,
        var_contributions=_freeze(var_contrib),
        es_contributions=_freeze(es_contrib),
        n_scenarios=n_scen,
    )


def _gaussian(w: FloatArray, cov_daily: FloatArray, mu_daily: FloatArray, confidence: float,
              horizon: int, n_scenarios: int) -> RiskMeasure:
    sigma_w = cov_daily @ w
    variance = float(w @ sigma_w)
    # Round-off on a singular PSD matrix may leave a tiny negative variance: clamp it, refuse a real one.
    scale = float(w @ np.sqrt(np.abs(np.diag(cov_daily)))) ** 2
    if variance < -1e-12 * scale:
        raise ConfigError(
            f"portfolio variance w'Σw is {variance!r} < 0: the covariance is not positive "
            "semi-definite. Pass a valid covariance estimate."
        )
    sigma = math.sqrt(max(variance, 0.0))
    z = float(ndtri(confidence))
    k_var = z
    k_es = _normal_pdf(z) / (1.0 - confidence)
    root_h = math.sqrt(horizon)
    mean_part = -horizon * (w * mu_daily)
    flags: tuple[str, ...] = ()
    if sigma > 0.0:
        marginal = w * sigma_w / sigma
    else:
        marginal = np.zeros_like(w)
        if np.any(w > 0.0):
            flags = ("zero_variance",)
    var_contrib = mean_part + root_h * k_var * marginal
    es_contrib = mean_part + root_h * k_es * marginal
    mu_p = float(w @ mu_daily)
    return RiskMeasure(
        method="gaussian",
        confidence=confidence,
        horizon_days=horizon,
        var=-horizon * mu_p + root_h * sigma * k_var,
        es=-horizon * mu_p + root_h * sigma * k_es,
        var_contributions=_freeze(var_contrib),
        es_contributions=_freeze(es_contrib),
        n_scenarios=n_scenarios,
        flags=flags,
    )


@dataclass(frozen=True)
class _PortfolioMoments:
    """Daily portfolio mean and central moments (divisor N) and the moments' gradients in w."""

    n_obs: int
    mean_vector: FloatArray  # (n,) daily mean return of each asset
    mean: float
    m2: float
    m3: float
    m4: float
    d_m2: FloatArray  # (n,) d m_k / d w = k X' p^(k-1) / N
    d_m3: FloatArray
    d_m4: FloatArray


def _portfolio_moments(w: FloatArray, mean_vector: FloatArray, centred: FloatArray) -> _PortfolioMoments:
    n_obs = centred.shape[0]
    if n_obs < _MIN_CF_OBSERVATIONS:
        raise InsufficientHistoryError(
            f"{n_obs} daily returns; the Cornish-Fisher method needs at least {_MIN_CF_OBSERVATIONS} "
            "to estimate four moments (far more for a stable estimate). Fetch a longer history."
        )
    p = centred @ w
    p2 = p * p
    p3 = p2 * p
    powers = np.column_stack([p, p2, p3])
    sums = powers.T @ p / n_obs  # m2, m3, m4
    grads = centred.T @ powers / n_obs  # (n, 3), one product for the three gradients
    return _PortfolioMoments(
        n_obs=n_obs,
        mean_vector=mean_vector,
        mean=float(w @ mean_vector),
        m2=float(sums[0]),
        m3=float(sums[1]),
        m4=float(sums[2]),
        d_m2=2.0 * grads[:, 0],
        d_m3=3.0 * grads[:, 1],
        d_m4=4.0 * grads[:, 2],
    )


def _cornish_fisher(w: FloatArray, mom: _PortfolioMoments, confidence: float, horizon: int) -> RiskMeasure:
    h = float(horizon)
    root_h = math.sqrt(h)
    mean_part = -h * (w * mom.mean_vector)
    if not mom.m2 > 0.0:  # no dispersion (e.g. all weights zero): the loss is the mean's, no tail shape
        return RiskMeasure(
            method="cornish_fisher",
            confidence=confidence,
            horizon_days=horizon,
            var=-h * mom.mean,
            es=-h * mom.mean,
            var_contributions=_freeze(mean_part.copy()),
            es_contributions=_freeze(mean_part.copy()),
            n_scenarios=mom.n_obs,
            flags=("zero_variance",) if np.any(w > 0.0) else (),
        )
    m2, m3, m4 = mom.m2, mom.m3, mom.m4
    sigma = math.sqrt(m2)
    skew = m3 / (m2 * sigma)
    kurt = m4 / (m2 * m2) - 3.0
    skew_h, kurt_h = skew / root_h, kurt / h
    g_var, g_var_s, g_var_k, g_es, g_es_s, g_es_k = _cf_terms(confidence, skew_h, kurt_h)
    d_sigma = mom.d_m2 / (2.0 * sigma)
    d_skew = mom.d_m3 / (m2 * sigma) - 1.5 * m3 * mom.d_m2 / (m2 * m2 * sigma)
    d_kurt = mom.d_m4 / (m2 * m2) - 2.0 * m4 * mom.d_m2 / (m2 * m2 * m2)
    sigma_h = root_h * sigma

    def euler(g: float, g_s: float, g_k: float) -> FloatArray:
        gradient_part = root_h * g * d_sigma + sigma_h * (g_s * d_skew / root_h + g_k * d_kurt / h)
        return mean_part + w * gradient_part

    flags = () if _cf_monotone(confidence, skew_h, kurt_h) else ("cornish_fisher_not_monotone",)
    return RiskMeasure(
        method="cornish_fisher",
        confidence=confidence,
        horizon_days=horizon,
        var=-h * mom.mean + sigma_h * g_var,
        es=-h * mom.mean + sigma_h * g_es,
        var_contributions=_freeze(euler(g_var, g_var_s, g_var_k)),
        es_contributions=_freeze(euler(g_es, g_es_s, g_es_k)),
        n_scenarios=mom.n_obs,
        flags=flags,
    )


class _Inputs:
    """Validated inputs and the weight-free quantities derived from them, each computed once."""

    def __init__(self, returns: FloatArray | None, covariance: FloatArray | None,
                 expected_returns: FloatArray, periods_per_year: int) -> None:
        self.returns = returns
        self.covariance = covariance
        self.expected_returns = expected_returns
        self.periods_per_year = periods_per_year
        self._scenarios: dict[int, FloatArray] = {}
        self._sample: tuple[FloatArray, FloatArray] | None = None
        self._centred: tuple[FloatArray, FloatArray] | None = None
        self._moments: dict[bytes, _PortfolioMoments] = {}

    def need_returns(self, method: str) -> FloatArray:
        if self.returns is None:
            raise ConfigError(f"method {method!r} needs daily returns; pass returns=(n_obs, n_assets).")
        return self.returns

    def scenarios(self, horizon: int) -> FloatArray:
        if horizon not in self._scenarios:
            self._scenarios[horizon] = horizon_returns(self.need_returns("historical"), horizon)
        return self._scenarios[horizon]

    def daily_gaussian(self) -> tuple[FloatArray, FloatArray, int]:
        """Daily covariance and mean: the given annualised ones / P, else the sample's."""
        if self.covariance is not None:
            p = self.periods_per_year
            return self.covariance / p, self.expected_returns / p, 0
        r = self.need_returns("gaussian")
        if r.shape[0] < 2:
            raise InsufficientHistoryError(
                f"{r.shape[0]} daily return(s); a sample covariance needs at least 2. Fetch more history."
            )
        if self._sample is None:
            self._sample = (np.atleast_2d(np.cov(r, rowvar=False)), r.mean(axis=0))
        return self._sample[0], self._sample[1], r.shape[0]

    def moments(self, w: FloatArray) -> _PortfolioMoments:
        if self._centred is None:
            r = self.need_returns("cornish_fisher")
            mean_vector = r.mean(axis=0)
            self._centred = (mean_vector, r - mean_vector)
        key = w.tobytes()
        if key not in self._moments:
            self._moments[key] = _portfolio_moments(w, *self._centred)
        return self._moments[key]


def historical_var_es(weights: npt.ArrayLike, returns: npt.ArrayLike, confidence: float = 0.99,
                      horizon_days: int = 1, *, nav_base_units: int | None = None) -> RiskMeasure:
    """Historical-simulation VaR and ES with Euler contributions.

    Quantile convention, ES with ties (Acerbi-Tasche), 10-day overlapping compounded returns and the
    contributions are described in the module docstring.

    Parameters
    ----------
    weights : array_like, shape (n_assets,)
        Risky-sleeve fractions of NAV (>= 0, sum <= 1).
    returns : array_like, shape (n_obs, n_assets)
        Daily simple returns, row 0 oldest.
    confidence : float, default 0.99
        In [0.5, 1).
    horizon_days : int, default 1
        h >= 1; h-day scenarios are the ``n_obs - h + 1`` overlapping compounded returns.
    nav_base_units : int, optional
        NAV in base-asset smallest units, to express the losses in base units too.

    Returns
    -------
    RiskMeasure

    Raises
    ------
    ConfigError
        Bad weights, shapes, confidence, horizon or NAV.
    InvalidPriceError
        A non-finite return or one below -1.
    InsufficientHistoryError
        Fewer than ``1 / (1 - confidence)`` scenarios (no scenario in the tail).
    """
    w = _check_weights(weights)
    a = _check_confidence(confidence)
    h = _check_horizon(horizon_days)
    nav = _check_nav(nav_base_units)
    r = _check_returns(returns, w.size)
    return _with_base_units(_historical(w, horizon_returns(r, h), a, h), nav)


def gaussian_var_es(weights: npt.ArrayLike, covariance: npt.ArrayLike, confidence: float = 0.99,
                    horizon_days: int = 1, *, expected_returns: npt.ArrayLike | None = None,
                    periods_per_year: int = DAYS_PER_YEAR,
                    nav_base_units: int | None = None) -> RiskMeasure:
    """Parametric (Gaussian) VaR and ES from an annualised covariance, with Euler contributions.

    .. math:: \\Sigma_d = \\Sigma / P, \\quad \\mu_d = \\mu / P, \\quad
              \\mathrm{VaR} = -h\\mu_d^\\top w + \\sqrt{h}\\,z_\\alpha\\sqrt{w^\\top\\Sigma_d w}

    and ES with :math:`\\varphi(z_\\alpha)/(1-\\alpha)` in place of :math:`z_\\alpha`.

    Parameters
    ----------
    weights : array_like, shape (n_assets,)
        Risky-sleeve fractions of NAV.
    covariance : array_like, shape (n_assets, n_assets)
        *Annualised* covariance of daily simple returns (``periods_per_year`` days a year), symmetric
        positive semi-definite (a singular one, e.g. all correlations 1, is accepted).
    confidence : float, default 0.99
    horizon_days : int, default 1
        Square-root-of-time scaling.
    expected_returns : array_like, shape (n_assets,), optional
        Annualised arithmetic mean returns; default zero.
    periods_per_year : int, default 365
    nav_base_units : int, optional

    Returns
    -------
    RiskMeasure
        ``n_scenarios = 0``.

    Raises
    ------
    ConfigError
        Bad inputs, an asymmetric covariance or a negative portfolio variance.
    """
    w = _check_weights(weights)
    a = _check_confidence(confidence)
    h = _check_horizon(horizon_days)
    nav = _check_nav(nav_base_units)
    periods = _check_periods(periods_per_year)
    cov = _check_covariance(covariance, w.size)
    mu = _expected_returns(expected_returns, w.size)
    return _with_base_units(_gaussian(w, cov / periods, mu / periods, a, h, 0), nav)


def _expected_returns(expected_returns: npt.ArrayLike | None, n: int) -> FloatArray:
    if expected_returns is None:
        return np.zeros(n)
    mu = np.asarray(expected_returns, dtype=np.float64)
    if mu.shape != (n,) or not np.all(np.isfinite(mu)):
        raise ConfigError(
            f"expected_returns {mu.tolist()} must be {n} finite annualised mean returns."
        )
    return mu


def cornish_fisher_var_es(weights: npt.ArrayLike, returns: npt.ArrayLike, confidence: float = 0.99,
                          horizon_days: int = 1, *, nav_base_units: int | None = None) -> RiskMeasure:
    """Cornish-Fisher (modified) VaR and ES from daily returns, with Euler contributions.

    Portfolio mean, volatility, skewness and excess kurtosis are method-of-moments estimates from the
    daily returns (central moments with divisor ``n_obs``), scaled to ``horizon_days`` as i.i.d.
    cumulants; formulas, references and the contributions are in the module docstring.

    Parameters
    ----------
    weights : array_like, shape (n_assets,)
    returns : array_like, shape (n_obs, n_assets)
        Daily simple returns, ``n_obs >= 4``.
    confidence : float, default 0.99
    horizon_days : int, default 1
    nav_base_units : int, optional

    Returns
    -------
    RiskMeasure
        Flag ``"cornish_fisher_not_monotone"`` when the expansion is not a valid quantile in the tail.

    Raises
    ------
    ConfigError, InvalidPriceError
        Bad inputs.
    InsufficientHistoryError
        Fewer than 4 observations.
    """
    w = _check_weights(weights)
    a = _check_confidence(confidence)
    h = _check_horizon(horizon_days)
    nav = _check_nav(nav_base_units)
    r = _check_returns(returns, w.size)
    return _with_base_units(_measure(w, "cornish_fisher", a, h, _Inputs(r, None, np.zeros(w.size), 1)), nav)


def _measure(w: FloatArray, method: str, confidence: float, horizon: int, data: _Inputs) -> RiskMeasure:
    if method == "historical":
        return _historical(w, data.scenarios(horizon), confidence, horizon)
    if method == "gaussian":
        cov_daily, mu_daily, n_obs = data.daily_gaussian()
        return _gaussian(w, cov_daily, mu_daily, confidence, horizon, n_obs)
    if method == "cornish_fisher":
        return _cornish_fisher(w, data.moments(w), confidence, horizon)
    raise ConfigError(f"method is {method!r}; choose one of {METHODS}.")


def _inputs(w: FloatArray, returns: npt.ArrayLike | None, covariance: npt.ArrayLike | None,
            expected_returns: npt.ArrayLike | None, periods_per_year: int) -> _Inputs:
    if returns is None and covariance is None:
        raise ConfigError("pass daily returns (n_obs, n_assets), an annualised covariance, or both.")
    r = None if returns is None else _check_returns(returns, w.size)
    cov = None if covariance is None else _check_covariance(covariance, w.size)
    return _Inputs(r, cov, _expected_returns(expected_returns, w.size), _check_periods(periods_per_year))


def portfolio_var_es(weights: npt.ArrayLike, *, method: str, confidence: float = 0.99,
                     horizon_days: int = 1, returns: npt.ArrayLike | None = None,
                     covariance: npt.ArrayLike | None = None,
                     expected_returns: npt.ArrayLike | None = None,
                     periods_per_year: int = DAYS_PER_YEAR,
                     nav_base_units: int | None = None) -> RiskMeasure:
    """VaR and ES by ``method`` (``"historical"``, ``"gaussian"``, ``"cornish_fisher"``).

    ``"gaussian"`` uses ``covariance`` (annualised, with ``expected_returns``, default zero) when it
    is given, else the sample mean and covariance of ``returns``; the other methods need ``returns``.

    Returns
    -------
    RiskMeasure

    Raises
    ------
    ConfigError
        Unknown method, missing or bad inputs.
    InvalidPriceError, InsufficientHistoryError
        As for the individual methods.
    """
    w = _check_weights(weights)
    a = _check_confidence(confidence)
    h = _check_horizon(horizon_days)
    nav = _check_nav(nav_base_units)
    data = _inputs(w, returns, covariance, expected_returns, periods_per_year)
    return _with_base_units(_measure(w, method, a, h, data), nav)


def risk_report(weights: npt.ArrayLike, returns: npt.ArrayLike | None = None, *,
                covariance: npt.ArrayLike | None = None,
                expected_returns: npt.ArrayLike | None = None,
                symbols: Sequence[str] | None = None,
                nav_base_units: int | None = None,
                methods: Sequence[str] = METHODS,
                confidences: Sequence[float] = DEFAULT_CONFIDENCES,
                horizons_days: Sequence[int] = DEFAULT_HORIZONS_DAYS,
                periods_per_year: int = DAYS_PER_YEAR) -> RiskReport:
    """VaR and ES for every method x confidence x horizon (default 3 x {0.95, 0.99} x {1, 10} days).

    Parameters
    ----------
    weights : array_like, shape (n_assets,)
        Risky-sleeve fractions of NAV.
    returns : array_like, shape (n_obs, n_assets), optional
        Daily simple returns; required for the historical and Cornish-Fisher methods.
    covariance : array_like, shape (n_assets, n_assets), optional
        Annualised covariance (e.g. the keeper's EWMA estimate) for the Gaussian method; without it
        the Gaussian method uses the sample mean and covariance of ``returns``.
    expected_returns : array_like, shape (n_assets,), optional
        Annualised means used with ``covariance``; default zero.
    symbols : sequence of str, optional
        Asset names; default ``"asset0"``, ``"asset1"``, ...
    nav_base_units : int, optional
        NAV in base-asset smallest units.
    methods, confidences, horizons_days : sequences
        The combinations to compute.
    periods_per_year : int, default 365

    Returns
    -------
    RiskReport

    Raises
    ------
    ConfigError, InvalidPriceError, InsufficientHistoryError
        As for :func:`portfolio_var_es`, for the first combination that fails.
    """
    w = _check_weights(weights)
    nav = _check_nav(nav_base_units)
    data = _inputs(w, returns, covariance, expected_returns, periods_per_year)
    names = tuple(symbols) if symbols is not None else tuple(f"asset{i}" for i in range(w.size))
    if len(names) != w.size:
        raise ConfigError(f"{len(names)} symbols for {w.size} weights; pass one symbol per asset.")
    measures = []
    for method in methods:
        for confidence in confidences:
            a = _check_confidence(confidence)
            for horizon in horizons_days:
                h = _check_horizon(horizon)
                measures.append(_with_base_units(_measure(w, method, a, h, data), nav))
    return RiskReport(
        symbols=names,
        weights=_freeze(w),
        nav_base_units=nav,
        measures=tuple(measures),
        covariance_source="covariance" if data.covariance is not None else "returns",
    )


# --------------------------------------------------------------------------- #
# Pre-trade limit
# --------------------------------------------------------------------------- #
def enforce_es_limit(target_weights: npt.ArrayLike, es_limit: float, *,
                     method: str = "historical", confidence: float = 0.99, horizon_days: int = 1,
                     returns: npt.ArrayLike | None = None, covariance: npt.ArrayLike | None = None,
                     expected_returns: npt.ArrayLike | None = None,
                     periods_per_year: int = DAYS_PER_YEAR,
                     nav_base_units: int | None = None) -> LimitDecision:
    """Pre-trade Expected Shortfall limit: keep the target if its ES fits, else de-risk to the base asset.

    If :math:`\\mathrm{ES}(w) \\le` ``es_limit`` the target is approved unchanged (``scale = 1``).
    Otherwise the risky sleeve is scaled by the largest :math:`s \\in [0, 1]` with
    :math:`\\mathrm{ES}(s w) \\le` ``es_limit``, the rest of NAV going to the base asset.  All three
    measures are positively homogeneous of degree 1 in the weights (historical: scaling every
    scenario loss by :math:`s > 0` keeps their order; Gaussian and Cornish-Fisher: :math:`\\mu_p`
    and :math:`\\sigma_p` scale by :math:`s`, skewness and kurtosis do not change), so
    :math:`\\mathrm{ES}(s w) = s\\,\\mathrm{ES}(w)` and the root is exact:
    :math:`s^* = \\mathrm{limit}/\\mathrm{ES}(w)`.  Tolerance: the ES of the returned weights is
    recomputed and :math:`s` stepped down by a few ulps until it is ``<= es_limit`` in floating
    point, so ``es_after <= es_limit`` always holds and :math:`s` is within a relative
    :math:`10^{-12}` of :math:`s^*`.

    Parameters
    ----------
    target_weights : array_like, shape (n_assets,)
        The plan's post-trade risky-sleeve fractions of NAV (>= 0, sum <= 1).
    es_limit : float
        The vault's limit, a fraction of NAV (>= 0), for ``method``/``confidence``/``horizon_days``.
    method, confidence, horizon_days
        The ES the limit is stated in (default historical, 99 %, 1 day).
    returns, covariance, expected_returns, periods_per_year
        As for :func:`portfolio_var_es`.
    nav_base_units : int, optional
        NAV in base-asset units, to state the figures in base units too.

    Returns
    -------
    LimitDecision
        ``approved_weights``, the scale and the reason (ES before/after, the limit).

    Raises
    ------
    ConfigError
        A negative or non-finite limit, or bad inputs (as for :func:`portfolio_var_es`).
    InvalidPriceError, InsufficientHistoryError
        As for :func:`portfolio_var_es`.
    """
    w = _check_weights(target_weights)
    limit = float(es_limit)
    if not (math.isfinite(limit) and limit >= 0.0):
        raise ConfigError(
            f"es_limit is {es_limit!r}; it must be a finite fraction of NAV >= 0 (e.g. 0.10 for 10 %)."
        )
    a = _check_confidence(confidence)
    h = _check_horizon(horizon_days)
    nav = _check_nav(nav_base_units)
    data = _inputs(w, returns, covariance, expected_returns, periods_per_year)

    def es_of(x: FloatArray) -> RiskMeasure:
        return _measure(x, method, a, h, data)

    before = es_of(w)
    label = f"{method} ES {a:.4g} {h}-day"
    if before.es <= limit:
        scale, after, approved = 1.0, before, w
        reason = (f"{label} of the target is {before.es:.6%} of NAV, within the limit {limit:.6%}: "
                  "target approved unchanged")
    else:
        scale = limit / before.es  # in [0, 1): before.es > limit >= 0
        approved = scale * w
        after = es_of(approved)
        step = float(np.finfo(np.float64).eps)
        while after.es > limit and scale > 0.0:
            scale = max(scale * (1.0 - step), 0.0) if step < 0.5 else 0.0
            step *= 2.0
            approved = scale * w
            after = es_of(approved)
        reason = (f"{label} of the target is {before.es:.6%} of NAV, above the limit {limit:.6%}: "
                  f"risky sleeve scaled by {scale:.9f} toward the base asset, {label} after "
                  f"{after.es:.6%}")
    return LimitDecision(
        approved_weights=_freeze(np.array(approved, dtype=np.float64)),
        target_weights=_freeze(w.copy()),
        scale=float(scale),
        within_limit=scale == 1.0,
        es_before=before.es,
        es_after=after.es,
        es_limit=limit,
        method=method,
        confidence=a,
        horizon_days=h,
        reason=reason,
        nav_base_units=nav,
        es_before_base_units=None if nav is None else to_base_units(before.es, nav),
        es_after_base_units=None if nav is None else to_base_units(after.es, nav),
        es_limit_base_units=None if nav is None else to_base_units(limit, nav),
        flags=tuple(dict.fromkeys(before.flags + after.flags)),
    )


# --------------------------------------------------------------------------- #
# Text report
# --------------------------------------------------------------------------- #
def _units(value: int | None) -> str:
    return "" if value is None else f"{value:,}"


def format_risk_report(report: RiskReport, base_decimals: int = 6) -> str:
    """Plain-text table of a :class:`RiskReport` (one line per measure, then ES contributions).

    Parameters
    ----------
    report : RiskReport
    base_decimals : int, default 6
        Decimals of the base asset, to print base units as an amount (1_000_000 units = 1.000000).
    """
    scale = 10 ** base_decimals

    def amount(units: int | None) -> str:
        if units is None:
            return "-"
        sign = "-" if units < 0 else ""
        whole, frac = divmod(abs(units), scale)
        return f"{sign}{whole:,}.{frac:0{base_decimals}d}"

    nav = report.nav_base_units
    lines = [
        f"Risk of the risky sleeve ({', '.join(f'{s} {x:.2%}' for s, x in zip(report.symbols, report.weights))}; "
        f"base asset {1.0 - float(report.weights.sum()):.2%}); NAV {amount(nav)}",
        f"{'method':<15}{'conf':>6}{'days':>5}{'VaR':>10}{'ES':>10}{'VaR (base)':>20}{'ES (base)':>20}  flags",
    ]
    for m in report.measures:
        lines.append(
            f"{m.method:<15}{m.confidence:>6.2%}{m.horizon_days:>5d}{m.var:>10.4%}{m.es:>10.4%}"
            f"{amount(m.var_base_units):>20}{amount(m.es_base_units):>20}  {','.join(m.flags)}"
        )
    lines.append("ES contributions (fraction of NAV):")
    lines.append(f"{'method':<15}{'conf':>6}{'days':>5}" + "".join(f"{s:>10}" for s in report.symbols))
    for m in report.measures:
        lines.append(f"{m.method:<15}{m.confidence:>6.2%}{m.horizon_days:>5d}"
                     + "".join(f"{c:>10.4%}" for c in m.es_contributions))
    return "\n".join(lines)
