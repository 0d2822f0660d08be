"""Covariance matrix conditioning (chain-free): condition number, shrinkage towards the
scaled identity, and eigenvalue repair in correlation space.

Used by the estimators (:mod:`keeper.covariance`: explicit or Ledoit-Wolf shrinkage, the
repair of pairwise estimates) and by the conditioning gate
(:mod:`keeper.conditioning_gate`: shrink harder until the condition number is within the
limit).  Matrices are ``(n, n)`` and ``float64``; every function here is scale-free or
scale-equivariant, so any units work.

References
----------
.. [3] O. Ledoit and M. Wolf, "A well-conditioned estimator for
   large-dimensional covariance matrices", Journal of Multivariate Analysis
   88(2), 2004, pp. 365-411.
.. [4] R. Rebonato and P. Jäckel, "The most general methodology to create a
   valid correlation matrix for risk management and option pricing
   purposes", Journal of Risk 2(2), 2000 (eigenvalue clipping in correlation
   space, then rescaling to a unit diagonal).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from keeper.errors import ConfigError, SingularCovarianceError
from keeper.returns import FloatArray, _locate_first

__all__ = [
    "RepairReport",
    "condition_number",
    "shrink_covariance",
    "repair_covariance",
]

_DEFAULT_EIGENVALUE_FLOOR = 1e-8  # smallest eigenvalue of a repaired *correlation* matrix


@dataclass(frozen=True)
class RepairReport:
    """What :func:`repair_covariance` changed.

    Attributes
    ----------
    eigenvalue_floor : float
        Floor applied to the eigenvalues of the *correlation* matrix
        (dimensionless; the eigenvalues of an ``n x n`` correlation matrix
        sum to ``n``).
    eigenvalues_lifted : int
        How many correlation eigenvalues were below the floor and raised to it
        (0: the matrix was returned unchanged apart from exact symmetrisation).
    min_eigenvalue_before : float
        Smallest eigenvalue of the input correlation matrix (negative if the
        input was not positive semi-definite).
    condition_number_before, condition_number_after : float
        2-norm condition number of the covariance matrix before and after the
        repair (``math.inf`` when the smallest eigenvalue is :math:`\\le 0`).
    max_abs_correlation_change : float
        Largest absolute change of an off-diagonal correlation.
    """

    eigenvalue_floor: float
    eigenvalues_lifted: int
    min_eigenvalue_before: float
    condition_number_before: float
    condition_number_after: float
    max_abs_correlation_change: float


def _check_shrinkage(shrinkage: Any) -> float:
    try:
        d = float(shrinkage)
    except (TypeError, ValueError):
        d = math.nan
    if not 0.0 <= d <= 1.0:
        raise ConfigError(
            f"shrinkage is {shrinkage!r}; it must be in [0, 1] (0: none, 1: the scaled identity)."
        )
    return d


def _check_eigenvalue_floor(eigenvalue_floor: Any) -> float:
    try:
        f = float(eigenvalue_floor)
    except (TypeError, ValueError):
        f = math.nan
    if not 0.0 < f < 1.0:
        raise ConfigError(
            f"eigenvalue_floor is {eigenvalue_floor!r}; it must be in (0, 1) (a floor on the "
            "eigenvalues of the correlation matrix, e.g. 1e-8)."
        )
    return f


def _as_square(cov: npt.ArrayLike, name: str = "covariance") -> FloatArray:
    c = np.asarray(cov, dtype=np.float64)
    if c.ndim != 2 or c.shape[0] != c.shape[1] or c.shape[0] < 1:
        raise ConfigError(f"{name} must be a square (n, n) matrix with n >= 1; got shape {c.shape}.")
    if not np.all(np.isfinite(c)):
        row, col = _locate_first(~np.isfinite(c))
        raise ConfigError(f"{name}[{row}, {col}] is {c[row, col]!r}; every entry must be finite.")
    return c


def _condition_from_eigenvalues(eigenvalues: FloatArray) -> float:
    lam_min, lam_max = float(eigenvalues[0]), float(eigenvalues[-1])
    return lam_max / lam_min if lam_min > 0.0 else math.inf


def condition_number(cov: npt.ArrayLike) -> float:
    """2-norm condition number of a symmetric matrix.

    .. math:: \\kappa(\\Sigma) = \\lambda_{\\max} / \\lambda_{\\min}

    computed from the eigenvalues of :math:`(\\Sigma + \\Sigma^\\top)/2`.

    Parameters
    ----------
    cov : array_like, shape (n, n)
        Finite symmetric matrix (any units; :math:`\\kappa` is scale-free).

    Returns
    -------
    float
        :math:`\\ge 1`, or ``math.inf`` when :math:`\\lambda_{\\min} \\le 0`
        (singular or indefinite).

    Raises
    ------
    ConfigError
        If ``cov`` is not square or has a non-finite entry.
    """
    c = _as_square(cov)
    return _condition_from_eigenvalues(np.linalg.eigvalsh(0.5 * (c + c.T)))


def shrink_covariance(cov: npt.ArrayLike, shrinkage: float) -> FloatArray:
    """Convex combination of a covariance and the scaled identity.

    .. math:: \\Sigma_\\delta = (1-\\delta)\\,\\Sigma + \\delta\\,\\mu I,
              \\qquad \\mu = \\operatorname{tr}(\\Sigma)/n

    the Ledoit-Wolf target [3]_.  The trace (total variance) is preserved, the
    eigenvectors are unchanged and every eigenvalue moves towards
    :math:`\\mu`: :math:`\\lambda \\mapsto (1-\\delta)\\lambda + \\delta\\mu`, so the
    condition number decreases monotonically in :math:`\\delta`, reaching 1 at
    :math:`\\delta = 1`.  Scale-equivariant and permutation-equivariant.

    Parameters
    ----------
    cov : array_like, shape (n, n)
        Finite symmetric matrix (any units; the output has the same units).
    shrinkage : float
        Intensity :math:`\\delta \\in [0, 1]`.

    Returns
    -------
    FloatArray, shape (n, n)
        Exactly symmetric.

    Raises
    ------
    ConfigError
        Non-square or non-finite ``cov``; ``shrinkage`` outside ``[0, 1]``.
    """
    c = _as_square(cov)
    delta = _check_shrinkage(shrinkage)
    c = 0.5 * (c + c.T)
    mu = float(np.trace(c)) / c.shape[0]
    out = (1.0 - delta) * c
    out[np.diag_indices_from(out)] += delta * mu
    return out


def repair_covariance(
    cov: npt.ArrayLike, eigenvalue_floor: float = _DEFAULT_EIGENVALUE_FLOOR
) -> tuple[FloatArray, RepairReport]:
    """Nearest-in-spirit positive definite covariance with the same variances.

    The repair works on the correlation matrix so that the variances -- what
    inverse-volatility and risk-parity sizing depend on most -- are kept
    *exactly*, and so that the floor is scale-free (Rebonato-Jäckel [4]_):

    1. :math:`C = D^{-1/2} \\Sigma_s D^{-1/2}` with :math:`\\Sigma_s =
       (\\Sigma+\\Sigma^\\top)/2` and :math:`D = \\operatorname{diag}(\\Sigma_s)`;
    2. :math:`C = V \\Lambda V^\\top`; clip :math:`\\Lambda` from below at
       ``eigenvalue_floor``: :math:`C_1 = V \\max(\\Lambda, f) V^\\top`;
    3. restore the unit diagonal, :math:`C_2 = E^{-1/2} C_1 E^{-1/2}` with
       :math:`E = \\operatorname{diag}(C_1)`;
    4. :math:`\\Sigma' = D^{1/2} C_2 D^{1/2}`, diagonal set to
       :math:`\\operatorname{diag}(\\Sigma_s)` exactly.

    Steps 3-4 are congruences with positive diagonal matrices, so
    :math:`\\Sigma'` is positive definite; its correlation eigenvalues are at
    least :math:`f / \\max_i (C_1)_{ii}` (slightly below ``f`` because lifting
    eigenvalues raises the diagonal before step 3).  If no eigenvalue is below
    the floor the (symmetrised) input is returned unchanged.  Only the
    correlations move; the report states by how much.

    Parameters
    ----------
    cov : array_like, shape (n, n)
        Finite, (near-)symmetric matrix with a strictly positive diagonal, e.g.
        a pairwise-complete covariance (possibly indefinite).  Any units.
    eigenvalue_floor : float, default 1e-8
        Floor :math:`f \\in (0, 1)` for the correlation eigenvalues
        (dimensionless; they sum to ``n``).  It bounds the correlation
        condition number by about ``n / f``.

    Returns
    -------
    (FloatArray of shape (n, n), RepairReport)
        The repaired, exactly symmetric matrix and what changed.

    Raises
    ------
    ConfigError
        Non-square or non-finite ``cov``; floor outside ``(0, 1)``.
    SingularCovarianceError
        If a variance (diagonal entry) is :math:`\\le 0`: no repair can keep
        the variances then (a constant price series has zero variance).
    """
    c = _as_square(cov)
    floor = _check_eigenvalue_floor(eigenvalue_floor)
    c = 0.5 * (c + c.T)
    variances = np.diag(c).copy()
    if np.any(variances <= 0.0):
        i = int(np.argmax(variances <= 0.0))
        raise SingularCovarianceError(
            f"variance of asset {i} is {variances[i]!r}; repair_covariance keeps the variances "
            "and needs each to be > 0. Remove the asset (a constant price has zero variance) "
            "or fix its price history."
        )
    vols = np.sqrt(variances)
    corr = c / np.outer(vols, vols)
    np.fill_diagonal(corr, 1.0)
    eigenvalues, vectors = np.linalg.eigh(corr)
    lifted = int(np.count_nonzero(eigenvalues < floor))
    kappa_before = _condition_from_eigenvalues(np.linalg.eigvalsh(c))
    if lifted == 0:
        report = RepairReport(floor, 0, float(eigenvalues[0]), kappa_before, kappa_before, 0.0)
        return c, report
    clipped = (vectors * np.maximum(eigenvalues, floor)) @ vectors.T
    scale = 1.0 / np.sqrt(np.diag(clipped))
    corr_new = clipped * np.outer(scale, scale)
    corr_new = 0.5 * (corr_new + corr_new.T)
    np.fill_diagonal(corr_new, 1.0)
    out = corr_new * np.outer(vols, vols)
    np.fill_diagonal(out, variances)
    report = RepairReport(
        eigenvalue_floor=floor,
        eigenvalues_lifted=lifted,
        min_eigenvalue_before=float(eigenvalues[0]),
        condition_number_before=kappa_before,
        condition_number_after=_condition_from_eigenvalues(np.linalg.eigvalsh(out)),
        max_abs_correlation_change=float(np.max(np.abs(corr_new - corr))),
    )
    return out, report
