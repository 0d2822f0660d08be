"""Return and covariance estimation (chain-free: arrays in, frozen dataclass out).

The keeper sizes the vault's positions from an estimate of the covariance of
the assets' daily simple returns.  This module turns a price history into that
estimate and refuses, loudly, to return anything a downstream optimiser cannot
use (non-finite, singular or hopelessly ill-conditioned matrices).

Conventions
-----------
* Arrays are ``float64``; time runs down the rows (row ``0`` is the *oldest*
  observation, row ``-1`` the *newest*), assets run across the columns.
* Returns are simple (arithmetic) returns per observation period, e.g. daily.
* Covariances and volatilities are *annualised* by multiplying the per-period
  covariance by ``periods_per_year`` (square-root-of-time rule for volatility).
  Crypto assets trade every day, hence the default of 365.

References
----------
.. [1] J.P. Morgan/Reuters, "RiskMetrics -- Technical Document", 4th ed., 1996,
   section 5.2 (exponentially weighted moving-average covariance).
.. [2] NumPy documentation, ``numpy.cov`` with ``aweights``: for weights
   normalised to sum to one and ``ddof=1`` the normaliser is
   :math:`1 - \\sum_t w_t^2` -- the unbiased "reliability weights"
   correction used here when the weighted mean is removed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from keeper.errors import (
    ConfigError,
    InsufficientHistoryError,
    InvalidPriceError,
    SingularCovarianceError,
)

__all__ = [
    "FloatArray",
    "CovarianceEstimate",
    "simple_returns",
    "ewma_covariance",
    "sample_covariance",
]

FloatArray = npt.NDArray[np.float64]

_LN2 = math.log(2.0)
_DEFAULT_MAX_CONDITION_NUMBER = 1e10


@dataclass(frozen=True, eq=False)  # arrays: identity equality, no ambiguous ==
class CovarianceEstimate:
    """An annualised covariance estimate and its diagnostics.

    All arrays are read-only (``flags.writeable`` is ``False``) so that the
    frozen dataclass is immutable in depth, not just in its attributes.

    Attributes
    ----------
    covariance : FloatArray, shape (n_assets, n_assets)
        Annualised covariance :math:`\\Sigma` of simple returns, symmetric
        positive definite; units: (return per year)\\ :sup:`2`, i.e. a
        variance of 0.04 is a 20 % annualised volatility.
    volatilities : FloatArray, shape (n_assets,)
        Annualised volatilities :math:`\\sigma_i = \\sqrt{\\Sigma_{ii}}`
        (fraction per square-root year).
    correlation : FloatArray, shape (n_assets, n_assets)
        :math:`\\Sigma_{ij} / (\\sigma_i \\sigma_j)`, unit diagonal exactly.
    half_life_days : float
        Half-life of the exponential weights, in observation periods (days for
        daily data); ``math.inf`` for equal weights (sample covariance).
    n_observations : int
        Number of return observations used.
    periods_per_year : int
        Annualisation factor applied to the per-period covariance.
    condition_number : float
        :math:`\\kappa(\\Sigma) = \\lambda_{\\max} / \\lambda_{\\min}` (2-norm).
    """

    covariance: FloatArray
    volatilities: FloatArray
    correlation: FloatArray
    half_life_days: float
    n_observations: int
    periods_per_year: int
    condition_number: float


def _locate_first(mask: npt.NDArray[np.bool_]) -> tuple[int, int]:
    """Return the (row, column) of the first ``True`` of a 2-D mask, row-major."""
    flat = int(np.argmax(mask))
    row, col = divmod(flat, mask.shape[1])
    return row, col


def _as_2d_float(array: npt.ArrayLike, name: str) -> FloatArray:
    """Convert to a 2-D float64 array or raise ``ConfigError`` on a bad shape."""
    out = np.asarray(array, dtype=np.float64)
    if out.ndim != 2 or out.shape[1] < 1:
        raise ConfigError(
            f"{name} must be a 2-D array of shape (n_observations, n_assets) with "
            f"n_assets >= 1; got shape {out.shape}. Pass one column per asset and "
            "one row per observation (oldest first)."
        )
    return out


def simple_returns(prices: npt.ArrayLike) -> FloatArray:
    """Simple returns of a price history.

    .. math:: r_{t,i} = \\frac{p_{t,i}}{p_{t-1,i}} - 1

    Parameters
    ----------
    prices : array_like, shape (n_obs, n_assets)
        Strictly positive, finite prices; row 0 oldest.  Units are irrelevant
        (they cancel) but must be consistent within a column.

    Returns
    -------
    FloatArray, shape (n_obs - 1, n_assets)
        Dimensionless simple returns per observation period.

    Raises
    ------
    ConfigError
        If ``prices`` is not 2-D.
    InvalidPriceError
        If any price is non-finite, zero or negative (the message names the
        first offending row, column and value).
    InsufficientHistoryError
        If fewer than two price rows are given (no return can be formed).
    """
    p = _as_2d_float(prices, "prices")
    bad = ~(np.isfinite(p) & (p > 0.0))
    if bad.any():
        row, col = _locate_first(bad)
        raise InvalidPriceError(
            f"price at row {row}, column {col} is {p[row, col]!r}; prices must be "
            "finite and strictly > 0. Drop or repair that observation (check the "
            "oracle/feed for that asset) before estimating returns."
        )
    if p.shape[0] < 2:
        raise InsufficientHistoryError(
            f"got {p.shape[0]} price row(s); at least 2 are needed to form one "
            "return. Fetch a longer price history."
        )
    return p[1:] / p[:-1] - 1.0


def _validate_returns(returns: npt.ArrayLike) -> FloatArray:
    r = _as_2d_float(returns, "returns")
    bad = ~np.isfinite(r)
    if bad.any():
        row, col = _locate_first(bad)
        raise InvalidPriceError(
            f"return at row {row}, column {col} is {r[row, col]!r}; returns must "
            "be finite. Repair the underlying prices (a zero, negative or missing "
            "price produces a non-finite return) before estimating the covariance."
        )
    return r


def _freeze(a: FloatArray) -> FloatArray:
    a.setflags(write=False)
    return a


def _build_estimate(
    cov_per_period: FloatArray,
    *,
    half_life_days: float,
    n_observations: int,
    periods_per_year: int,
    max_condition_number: float,
) -> CovarianceEstimate:
    """Annualise, symmetrise, check the spectrum and package the estimate."""
    cov = cov_per_period * float(periods_per_year)
    cov = 0.5 * (cov + cov.T)
    eigenvalues = np.linalg.eigvalsh(cov)  # ascending
    lam_min = float(eigenvalues[0])
    lam_max = float(eigenvalues[-1])
    condition = lam_max / lam_min if lam_min > 0.0 else math.inf
    if not (lam_min > 0.0) or condition > max_condition_number:
        raise SingularCovarianceError(
            f"covariance is singular or ill-conditioned: min eigenvalue "
            f"{lam_min:.3e}, max eigenvalue {lam_max:.3e}, condition number "
            f"{condition:.3e} (limit {max_condition_number:.1e}, and the min "
            "eigenvalue must be > 0). Remove duplicated or perfectly collinear "
            "assets, use a longer history (more observations than assets) or a "
            "longer half-life."
        )
    vols = np.sqrt(np.diag(cov))
    corr = cov / np.outer(vols, vols)
    corr = 0.5 * (corr + corr.T)
    np.fill_diagonal(corr, 1.0)
    return CovarianceEstimate(
        covariance=_freeze(cov),
        volatilities=_freeze(vols),
        correlation=_freeze(corr),
        half_life_days=float(half_life_days),
        n_observations=int(n_observations),
        periods_per_year=int(periods_per_year),
        condition_number=float(condition),
    )


def ewma_covariance(
    returns: npt.ArrayLike,
    half_life_days: float,
    periods_per_year: int = 365,
    demean: bool = True,
    min_observations: int | None = None,
    max_condition_number: float = _DEFAULT_MAX_CONDITION_NUMBER,
) -> CovarianceEstimate:
    """Exponentially weighted (EWMA) covariance of simple returns, annualised.

    With :math:`T` observations, ages :math:`a_t = T-1-t` (the newest row has
    age 0) and decay :math:`\\lambda = 2^{-1/h}` for half-life :math:`h`,

    .. math::

        w_t = \\frac{\\lambda^{a_t}}{\\sum_s \\lambda^{a_s}}, \\qquad
        \\mu = \\sum_t w_t r_t, \\qquad
        \\hat\\Sigma = P \\cdot \\frac{\\sum_t w_t (r_t-\\mu)(r_t-\\mu)^\\top}
                                      {1 - \\sum_t w_t^2},

    where :math:`P` is ``periods_per_year``.  The factor
    :math:`1/(1-\\sum_t w_t^2)` is the unbiased correction for reliability
    weights when the weighted mean is estimated; with equal weights
    (:math:`h \\to \\infty`) it equals :math:`T/(T-1)` and :math:`\\hat\\Sigma`
    is exactly ``periods_per_year * np.cov(returns, rowvar=False)``.  With
    ``demean=False`` the mean is taken as zero (RiskMetrics [1]_ convention)
    and no correction is applied: :math:`\\hat\\Sigma = P \\sum_t w_t r_t r_t^\\top`.

    The weights are computed in log space, :math:`\\ln w_t \\propto
    -a_t \\ln 2 / h`, which is exact for very long half-lives (no ``1 - λ``
    cancellation) and underflows gracefully to 0 for very old observations.
    Cost: :math:`O(T n^2)` for the weighted cross-product plus
    :math:`O(n^3)` for the eigenvalue check; no Python loop over observations.

    Parameters
    ----------
    returns : array_like, shape (n_obs, n_assets)
        Finite simple returns per period, row 0 oldest (see
        :func:`simple_returns`).
    half_life_days : float
        Half-life :math:`h > 0` in observation periods (days for daily data):
        the weight of an observation halves every ``h`` rows back in time.
        ``math.inf`` gives equal weights.
    periods_per_year : int, default 365
        Annualisation factor :math:`P > 0`.
    demean : bool, default True
        Remove the weighted mean (with the bias correction above) if True;
        assume a zero mean if False.
    min_observations : int, optional
        Minimum number of rows required; default ``max(n_assets + 1, 2)``
        (fewer rows than ``n_assets + 1`` cannot give a full-rank demeaned
        estimate).  Values below 2 are raised to 2.
    max_condition_number : float, default 1e10
        Largest acceptable 2-norm condition number of the result.

    Returns
    -------
    CovarianceEstimate
        Annualised covariance, volatilities, correlation and diagnostics.

    Raises
    ------
    ConfigError
        If ``half_life_days <= 0`` (or NaN), ``periods_per_year <= 0``,
        ``max_condition_number <= 1`` or ``returns`` is not 2-D.
    InvalidPriceError
        If any return is non-finite.
    InsufficientHistoryError
        If ``n_obs`` is below the required minimum.
    SingularCovarianceError
        If the smallest eigenvalue is :math:`\\le 0` or the condition number
        exceeds ``max_condition_number`` (e.g. two identical price series).

    References
    ----------
    .. [1] J.P. Morgan/Reuters, "RiskMetrics -- Technical Document", 1996, §5.2.
    """
    h = float(half_life_days)
    if not h > 0.0:  # also rejects NaN
        raise ConfigError(
            f"half_life_days is {half_life_days!r}; it must be > 0 (use math.inf "
            "for equal weights). Fix the estimator configuration."
        )
    if isinstance(periods_per_year, bool) or int(periods_per_year) != periods_per_year \
            or periods_per_year <= 0:
        raise ConfigError(
            f"periods_per_year is {periods_per_year!r}; it must be a positive "
            "integer (365 for daily crypto data, 252 for exchange trading days)."
        )
    if not float(max_condition_number) > 1.0:
        raise ConfigError(
            f"max_condition_number is {max_condition_number!r}; it must be > 1 "
            "(default 1e10)."
        )
    r = _validate_returns(returns)
    n_obs, n_assets = r.shape
    required = max(n_assets + 1, 2) if min_observations is None else max(int(min_observations), 2)
    if n_obs < required:
        raise InsufficientHistoryError(
            f"got {n_obs} return observations for {n_assets} assets; at least "
            f"{required} are required. Fetch a longer price history or lower "
            "min_observations."
        )

    ages = np.arange(n_obs - 1, -1, -1, dtype=np.float64)  # newest row has age 0
    weights = np.exp(ages * (-_LN2 / h))  # max is exactly 1 (age 0): no overflow
    weights /= weights.sum()

    if demean:
        mean = weights @ r
        centred = r - mean
        correction = 1.0 - float(weights @ weights)
        if not correction > 0.0:
            raise InsufficientHistoryError(
                f"effective sample size 1/sum(w^2) = {1.0 / (1.0 - correction):.3g} "
                "observation(s): the half-life "
                f"({h:g} periods) is too short to estimate a demeaned covariance. "
                "Lengthen half_life_days."
            )
        cov = (centred.T * weights) @ centred / correction
    else:
        cov = (r.T * weights) @ r

    return _build_estimate(
        cov,
        half_life_days=h,
        n_observations=n_obs,
        periods_per_year=int(periods_per_year),
        max_condition_number=float(max_condition_number),
    )


def sample_covariance(
    returns: npt.ArrayLike,
    periods_per_year: int = 365,
    min_observations: int | None = None,
    max_condition_number: float = _DEFAULT_MAX_CONDITION_NUMBER,
) -> CovarianceEstimate:
    """Equally weighted (unbiased) sample covariance, annualised.

    .. math:: \\hat\\Sigma = \\frac{P}{T-1} \\sum_t (r_t-\\bar r)(r_t-\\bar r)^\\top

    i.e. ``periods_per_year * np.cov(returns, rowvar=False)``; this is
    :func:`ewma_covariance` with ``half_life_days = math.inf`` and the same
    validation, shapes and errors.

    Parameters
    ----------
    returns : array_like, shape (n_obs, n_assets)
        Finite simple returns per period, row 0 oldest.
    periods_per_year : int, default 365
        Annualisation factor.
    min_observations : int, optional
        As in :func:`ewma_covariance`.
    max_condition_number : float, default 1e10
        As in :func:`ewma_covariance`.

    Returns
    -------
    CovarianceEstimate
        With ``half_life_days == math.inf``.
    """
    return ewma_covariance(
        returns,
        half_life_days=math.inf,
        periods_per_year=periods_per_year,
        demean=True,
        min_observations=min_observations,
        max_condition_number=max_condition_number,
    )
