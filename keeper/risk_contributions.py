"""Risk decomposition of a portfolio (chain-free): volatility and Euler risk contributions.

.. math::

    \\sigma(w) = \\sqrt{w^\\top \\Sigma w}, \\qquad
    MRC_i(w) = \\frac{(\\Sigma w)_i}{\\sigma(w)}, \\qquad
    RC_i(w) = \\frac{w_i (\\Sigma w)_i}{\\sigma(w)}, \\qquad
    RRC_i(w) = \\frac{RC_i(w)}{\\sigma(w)}.

By Euler's theorem for the 1-homogeneous :math:`\\sigma`, :math:`\\sum_i RC_i = \\sigma` and
:math:`\\sum_i RRC_i = 1` (Roncalli [2]_).  ``weights`` are fractions of NAV, shape (n,);
``covariance`` is (n, n), annualised in the keeper (365-day year), and the volatilities come out
in its unit.

References
----------
.. [2] T. Roncalli, "Introduction to Risk Parity and Budgeting", Chapman &
   Hall/CRC, 2013 (risk contributions, Euler allocation, ERC properties).
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from keeper.errors import ConfigError, SingularCovarianceError

__all__ = [
    "FloatArray",
    "portfolio_volatility",
    "marginal_risk_contributions",
    "risk_contributions",
    "relative_risk_contributions",
]

FloatArray = npt.NDArray[np.float64]


def _weights_and_covariance(
    weights: npt.ArrayLike, covariance: npt.ArrayLike
) -> tuple[FloatArray, FloatArray]:
    w = np.asarray(weights, dtype=np.float64)
    cov = np.asarray(covariance, dtype=np.float64)
    if w.ndim != 1 or cov.shape != (w.size, w.size):
        raise ConfigError(
            f"weights have shape {w.shape} and covariance shape {cov.shape}; "
            "expected (n,) and (n, n) for the same n. Pass aligned arrays."
        )
    return w, cov


def _volatility(w: FloatArray, cov: FloatArray, sigma_w: FloatArray) -> float:
    variance = float(w @ sigma_w)
    if not variance > 0.0:
        raise SingularCovarianceError(
            f"portfolio variance w'Σw is {variance!r}; it must be > 0 for risk "
            "contributions to be defined. Check that the covariance is positive "
            "definite and the weights are not all zero."
        )
    return math.sqrt(variance)


def portfolio_volatility(weights: npt.ArrayLike, covariance: npt.ArrayLike) -> float:
    """Portfolio volatility :math:`\\sigma(w) = \\sqrt{w^\\top \\Sigma w}`.

    Parameters
    ----------
    weights : array_like, shape (n,)
        Portfolio weights (fractions of NAV).
    covariance : array_like, shape (n, n)
        Covariance :math:`\\Sigma`; annualised in → annualised volatility out.

    Returns
    -------
    float
        :math:`\\sigma(w)`, same time unit as ``covariance`` (fraction per
        square-root year if annualised).  ``0.0`` for zero variance.

    Raises
    ------
    ConfigError
        On mismatched shapes.
    SingularCovarianceError
        If :math:`w^\\top \\Sigma w < 0` (covariance not PSD) or non-finite.
    """
    w, cov = _weights_and_covariance(weights, covariance)
    variance = float(w @ (cov @ w))
    if variance == 0.0:
        return 0.0
    if not variance > 0.0:
        raise SingularCovarianceError(
            f"portfolio variance w'Σw is {variance!r}; it must be >= 0 and finite. "
            "The covariance is not positive semi-definite: re-estimate it."
        )
    return math.sqrt(variance)


def marginal_risk_contributions(
    weights: npt.ArrayLike, covariance: npt.ArrayLike
) -> FloatArray:
    """Marginal risk contributions :math:`\\partial\\sigma/\\partial w = \\Sigma w / \\sigma`.

    Parameters
    ----------
    weights : array_like, shape (n,)
    covariance : array_like, shape (n, n)

    Returns
    -------
    FloatArray, shape (n,)
        :math:`(\\Sigma w)_i / \\sigma(w)`, volatility units per unit weight.

    Raises
    ------
    ConfigError
        On mismatched shapes.
    SingularCovarianceError
        If :math:`w^\\top\\Sigma w \\le 0`.
    """
    w, cov = _weights_and_covariance(weights, covariance)
    sigma_w = cov @ w
    return sigma_w / _volatility(w, cov, sigma_w)


def risk_contributions(weights: npt.ArrayLike, covariance: npt.ArrayLike) -> FloatArray:
    """Euler risk contributions :math:`RC_i = w_i (\\Sigma w)_i / \\sigma(w)`.

    They sum to the portfolio volatility: :math:`\\sum_i RC_i = \\sigma(w)`.

    Parameters
    ----------
    weights : array_like, shape (n,)
    covariance : array_like, shape (n, n)

    Returns
    -------
    FloatArray, shape (n,)
        Volatility units (annualised if ``covariance`` is).

    Raises
    ------
    ConfigError
        On mismatched shapes.
    SingularCovarianceError
        If :math:`w^\\top\\Sigma w \\le 0`.
    """
    w, cov = _weights_and_covariance(weights, covariance)
    sigma_w = cov @ w
    return w * sigma_w / _volatility(w, cov, sigma_w)


def relative_risk_contributions(
    weights: npt.ArrayLike, covariance: npt.ArrayLike
) -> FloatArray:
    """Relative risk contributions :math:`RRC_i = w_i(\\Sigma w)_i / (w^\\top\\Sigma w)`.

    Dimensionless; :math:`\\sum_i RRC_i = 1`.

    Parameters
    ----------
    weights : array_like, shape (n,)
    covariance : array_like, shape (n, n)

    Returns
    -------
    FloatArray, shape (n,)

    Raises
    ------
    ConfigError
        On mismatched shapes.
    SingularCovarianceError
        If :math:`w^\\top\\Sigma w \\le 0`.
    """
    w, cov = _weights_and_covariance(weights, covariance)
    sigma_w = cov @ w
    sigma = _volatility(w, cov, sigma_w)
    return w * sigma_w / (sigma * sigma)
