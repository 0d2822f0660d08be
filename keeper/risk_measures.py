"""Portfolio Value-at-Risk and Expected Shortfall and their Euler allocation (chain-free).

The measures by method and the report of every method x confidence x horizon:
:mod:`keeper.risk_report`; the pre-trade ES limit: :mod:`keeper.es_limit`.
Arrays in, frozen dataclasses out.

Conventions
-----------
* ``weights`` : shape (n_assets,), fractions of NAV held in each *risky* asset (long only,
  :math:`w_i \\ge 0`, :math:`\\sum_i w_i \\le 1`); the remainder :math:`1 - \\sum_i w_i` is held in the
  base asset (the vault's 6-decimal USD stablecoin), which has zero return and zero risk.
* ``returns`` : shape (n_obs, n_assets), *daily simple* returns, row 0 oldest (as
  :func:`keeper.returns.simple_returns` gives them).  Portfolio return of a scenario:
  :math:`r_p = r^\\top w`; portfolio loss :math:`L = -r_p`.
* ``covariance`` : shape (n_assets, n_assets), *annualised* covariance of daily simple returns with
  ``periods_per_year = 365`` (the unit of :class:`keeper.covariance.CovarianceEstimate`); it is
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
    Modified VaR on the portfolio's first four moments: :mod:`keeper.cornish_fisher`.

Component contributions (Euler allocation [5]_): every measure above is positively homogeneous of
degree 1 in ``weights``, so :math:`\\rho(w) = \\sum_i w_i\\,\\partial\\rho/\\partial w_i`.
Gaussian: :math:`w_i(-h\\mu_i + \\sqrt h k (\\Sigma_d w)_i/\\sigma_p)` with :math:`k = z_\\alpha` or
:math:`\\varphi(z_\\alpha)/(1-\\alpha)`.  Cornish-Fisher: :mod:`keeper.cornish_fisher`.
Historical: the conditional expectation of each asset's loss in the tail scenarios [6]_ -- for VaR
the mean of :math:`-w_i r_{s,i}` over the scenarios whose loss equals VaR, for ES the same
Acerbi-Tasche weights as the ES itself.  All contributions sum to the total (up to float rounding).

References
----------
.. [1] C. Acerbi, D. Tasche, "On the coherence of expected shortfall", Journal of Banking & Finance
   26(7), 2002, 1487-1503 (Proposition 3.2 / eq. 3.3: ES with ties and non-integer tail mass).
.. [5] D. Tasche, "Risk contributions and performance measurement", TU Munchen working paper, 1999;
   T. Roncalli, "Introduction to Risk Parity and Budgeting", CRC, 2013, section 2.2.
.. [6] W. Hallerbach, "Decomposing portfolio value-at-risk: a general analysis", Journal of Risk 5(2),
   2003; D. Tasche, "Conditional expectation as quantile derivative", 2000.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Sequence

import numpy as np
import numpy.typing as npt
from scipy.special import ndtri

from keeper.errors import ConfigError, InsufficientHistoryError, InvalidPriceError
from keeper.units import DAYS_PER_YEAR

__all__ = [
    "FloatArray",
    "RiskMeasure",
    "horizon_returns",
    "gaussian_var_es_from_moments",
    "gaussian_var_es",
    "to_base_units",
    "apportion_base_units",
]

FloatArray = npt.NDArray[np.float64]

_WEIGHT_SUM_ATOL = 1e-9
_TAIL_SNAP_RTOL = 1e-9
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


# --------------------------------------------------------------------------- #
# Result type
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
