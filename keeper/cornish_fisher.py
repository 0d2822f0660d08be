"""Cornish-Fisher (modified) VaR and ES of a portfolio, with their Euler contributions
(chain-free).

Conventions (weights, daily simple returns, losses as positive fractions of NAV, confidence,
horizon) as in :mod:`keeper.risk_measures`; the measure by name is
:func:`keeper.risk_report.portfolio_var_es` with ``method="cornish_fisher"``.

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

Component contributions (Euler allocation): the measure is positively homogeneous of degree 1 in
``weights``; its contributions are the exact gradient of the formulas above through
:math:`(\\mu, m_2, m_3, m_4)`, using :math:`\\partial m_k / \\partial w = k X^\\top (Xw)^{k-1} / N`
for the centred returns :math:`X` (the co-moment tensors of Boudt, Peterson and Croux [3]_ are
never formed: :math:`O(Nn)`).  They sum to the total (up to float rounding).

References
----------
.. [2] L. Favre, J.-A. Galeano, "Mean-modified value-at-risk optimization with hedge funds", Journal
   of Alternative Investments 5(2), 2002; S. Zangari, "A VaR methodology for portfolios that include
   options", RiskMetrics Monitor, 1996.
.. [3] K. Boudt, B. Peterson, C. Croux, "Estimation and decomposition of downside risk for portfolios
   with non-normal returns", Journal of Risk 11(2), 2008, 79-103.
.. [4] D. Maillard, "A user's guide to the Cornish Fisher expansion", SSRN 1997178, 2012 (section on
   the Cornish-Fisher expected shortfall).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.special import ndtri

from keeper.errors import InsufficientHistoryError
from keeper.risk_measures import FloatArray, RiskMeasure, _check_confidence, _freeze, _normal_pdf

__all__ = [
    "cornish_fisher_var_es_from_moments",
]

_MIN_CF_OBSERVATIONS = 4


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
    ``skewness = excess_kurtosis = 0`` both equal
    :func:`keeper.risk_measures.gaussian_var_es_from_moments`.

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
