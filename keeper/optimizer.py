"""Risk-budgeting (equal-risk-contribution) portfolio optimiser (chain-free).

Given an annualised covariance :math:`\\Sigma` (``n x n``, symmetric positive
definite) and a risk budget :math:`b` (``b_i > 0``, :math:`\\sum_i b_i = 1`),
find the long-only, fully invested weights :math:`w` whose *relative risk
contributions* equal the budget:

.. math::

    \\sigma(w) = \\sqrt{w^\\top \\Sigma w}, \\qquad
    RC_i(w) = \\frac{w_i (\\Sigma w)_i}{\\sigma(w)}, \\qquad
    RRC_i(w) = \\frac{RC_i(w)}{\\sigma(w)} = b_i, \\qquad
    w_i > 0, \\ \\sum_i w_i = 1.

By Euler's theorem for the 1-homogeneous :math:`\\sigma`,
:math:`\\sum_i RC_i = \\sigma` and :math:`\\sum_i RRC_i = 1`.

Method (Spinu [1]_): the unique solution is :math:`w = x^*/\\sum_i x^*_i` where
:math:`x^*` minimises the strictly convex, self-concordant function

.. math:: f(x) = \\tfrac12 x^\\top \\Sigma x - \\sum_i b_i \\ln x_i, \\qquad x > 0,

whose first-order condition :math:`x_i (\\Sigma x)_i = b_i` is the budget
equation (and gives :math:`x^{*\\top}\\Sigma x^* = \\sum_i b_i = 1`).  We run
cyclical coordinate descent on :math:`f` (closed-form coordinate minimiser,
Griveau-Billion et al. [7]_) in a compiled kernel, and a damped Newton method
(gradient :math:`\\Sigma x - b/x`, Hessian :math:`\\Sigma +
\\mathrm{diag}(b/x^2)`) when coordinate descent is too slow.

Beyond the unconstrained solver: :func:`solve_risk_budgeting` adds per-asset
weight bounds (Richard & Roncalli's constrained risk-budgeting portfolio [6]_,
see its docstring for what is optimal when budgets and bounds conflict), and
:func:`allocate` turns the fully invested sleeve into the tick's target: scaled
to a volatility target under a gross-exposure cap of at most 1, the rest in
cash, with the fallback chain risk budgeting -> inverse volatility -> previous
weights.

References
----------
.. [1] F. Spinu, "An algorithm for computing risk parity weights", SSRN
   2297383, 2013.
.. [2] T. Roncalli, "Introduction to Risk Parity and Budgeting", Chapman &
   Hall/CRC, 2013 (risk contributions, Euler allocation, ERC properties).
.. [3] Y. Nesterov, A. Nemirovskii, "Interior-Point Polynomial Algorithms in
   Convex Programming", SIAM, 1994 (damped Newton for self-concordant
   functions); S. Boyd, L. Vandenberghe, "Convex Optimization", CUP, 2004,
   §9.5-9.6 (Newton decrement, backtracking line search).
.. [4] D. Chaves, J. Hsu, F. Li, O. Shakernia, "Efficient algorithms for
   computing risk parity portfolio weights", Journal of Investing 21(3), 2012.
.. [7] T. Griveau-Billion, J.-C. Richard, T. Roncalli, "A fast algorithm for
   computing high-dimensional risk parity portfolios", SSRN 2325255, 2013.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable
import dataclasses
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from numba import njit
from numba import types as numba_types
from scipy.linalg.lapack import dposv as _lapack_dposv
from scipy.linalg.lapack import dpotrf as _lapack_dpotrf

from keeper.errors import (
    AllocationFailedError,
    ConfigError,
    SingularCovarianceError,
    SolverDidNotConvergeError,
)

__all__ = [
    "FloatArray",
    "TargetWeights",
    "portfolio_volatility",
    "marginal_risk_contributions",
    "risk_contributions",
    "relative_risk_contributions",
    "solve_equal_risk_contribution",
    "risk_budgeting_weights",
    "inverse_volatility_weights",
    "equal_weights",
    "bounded_normalise",
    "solve_risk_budgeting",
    "Allocation",
    "allocate",
    "METHOD_RISK_BUDGETING",
    "METHOD_INVERSE_VOLATILITY",
    "METHOD_PREVIOUS",
    "METHOD_EQUAL_WEIGHT",
]

FloatArray = npt.NDArray[np.float64]

# Bare ufunc reductions / BLAS dot: ~1 µs less per call than the ndarray
# methods and ``@`` on tiny arrays, which matters at n ~ 5 (dozens of calls).
_dot = np.dot
_sum = np.add.reduce
_max = np.maximum.reduce
_min = np.minimum.reduce

_SYMMETRY_RTOL = 1e-10
_BUDGET_SUM_ATOL = 1e-9
# Newton decrement (of the self-concordant rescaling f / min(b)) below which a
# full Newton step is feasible and in the quadratic-convergence region [3].
_QUADRATIC_REGION = 0.25
_ARMIJO_SLOPE = 0.25
_FRACTION_TO_BOUNDARY = 0.99
# The budget error is only evaluated once the scaled decrement is below this.
_CHECK_ERROR_BELOW = 1e-4
# Multiplicative fixed-point sweeps y_i <- sqrt(b_i y_i / (Cy)_i) used to warm
# start Newton when all marginal risks are positive (the usual case for assets
# that are positively correlated); each saves most of a Newton iteration.
_WARM_START_SWEEPS = 2
# Checked quadratic-region steps without improvement before giving up.
_MAX_STALLS = 3
# Budget error always accepted when round-off stalls Newton before ``tol``.
_ROUNDOFF_ACCEPT = 1e-9
# Upper cap on the conditioning-dependent round-off acceptance (see
# ``_rounding_floor``): never return an error above this silently.
_ROUNDOFF_ACCEPT_CAP = 1e-7
_UNIT_ROUNDOFF = float(np.finfo(np.float64).eps) / 2.0


# --------------------------------------------------------------------------- #
# Risk decomposition
# --------------------------------------------------------------------------- #
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


# --------------------------------------------------------------------------- #
# Result type
# --------------------------------------------------------------------------- #
@dataclass(frozen=True, eq=False)  # arrays: identity equality, no ambiguous ==
class TargetWeights:
    """Risk-budgeting solution and its diagnostics (arrays are read-only).

    Attributes
    ----------
    weights : FloatArray, shape (n,)
        Long-only weights, :math:`w_i > 0`, :math:`\\sum_i w_i = 1`.
    risk_budget : FloatArray, shape (n,)
        Budget :math:`b` actually targeted (normalised to sum exactly to 1).
    risk_contributions : FloatArray, shape (n,)
        :math:`RC_i = w_i(\\Sigma w)_i/\\sigma`, annualised volatility units.
    relative_risk_contributions : FloatArray, shape (n,)
        :math:`RC_i/\\sigma`, sum to 1.
    portfolio_volatility : float
        :math:`\\sigma(w)`, annualised (fraction per square-root year).
    iterations : int
        Coordinate-descent sweeps plus Newton iterations performed.
    max_budget_error : float
        :math:`\\max_i |RRC_i - b_i|` evaluated at ``weights``.  With weight
        bounds that bind this is the (intended) deviation forced by the bounds;
        see ``max_free_budget_error`` for the solver's accuracy.
    lower_bound_active, upper_bound_active : tuple of int
        Indices of the assets held exactly at their lower / upper weight bound
        (:func:`solve_risk_budgeting` with ``bounds``; empty otherwise).
    max_free_budget_error : float
        :math:`\\max_{i \\in F} |RRC_i - \\kappa b_i|` over the assets :math:`F`
        strictly inside their bounds, with :math:`\\kappa = \\sum_F RRC_i /
        \\sum_F b_i` (``nan`` if every asset is at a bound).  Equals
        ``max_budget_error`` when no bound binds.
    """

    weights: FloatArray
    risk_budget: FloatArray
    risk_contributions: FloatArray
    relative_risk_contributions: FloatArray
    portfolio_volatility: float
    iterations: int
    max_budget_error: float
    lower_bound_active: tuple[int, ...] = ()
    upper_bound_active: tuple[int, ...] = ()
    max_free_budget_error: float = math.nan


def _freeze(a: FloatArray) -> FloatArray:
    a.setflags(write=False)
    return a


# --------------------------------------------------------------------------- #
# Validation
# --------------------------------------------------------------------------- #
def _validate_covariance(covariance: npt.ArrayLike) -> FloatArray:
    """Return a symmetrised float64 copy of a validated SPD covariance."""
    cov = np.asarray(covariance, dtype=np.float64)
    if cov.ndim != 2 or cov.shape[0] != cov.shape[1] or cov.shape[0] == 0:
        raise SingularCovarianceError(
            f"covariance has shape {cov.shape}; it must be a non-empty square "
            "(n, n) matrix. Pass the estimator's CovarianceEstimate.covariance."
        )
    scale = float(np.abs(cov).max())  # NaN propagates, so this also tests finiteness
    if not math.isfinite(scale):
        bad = np.argwhere(~np.isfinite(cov))[0]
        raise SingularCovarianceError(
            f"covariance entry ({bad[0]}, {bad[1]}) is {cov[bad[0], bad[1]]!r}; "
            "all entries must be finite. Re-estimate the covariance from clean "
            "prices."
        )
    asym = float(np.abs(cov - cov.T).max())
    if asym > _SYMMETRY_RTOL * scale:
        raise SingularCovarianceError(
            f"covariance is not symmetric: max |Σ - Σ'| = {asym:.3e} exceeds "
            f"{_SYMMETRY_RTOL:.0e} x max |Σ| = {_SYMMETRY_RTOL * scale:.3e}. "
            "Symmetrise it, e.g. (Σ + Σ')/2, or fix its construction."
        )
    cov = (cov + cov.T) * 0.5
    # Cholesky is the cheapest exact test of positive definiteness.
    _, info = _lapack_dpotrf(cov, lower=0, clean=0, overwrite_a=0)
    if info != 0:
        diag_min = float(cov.diagonal().min())
        raise SingularCovarianceError(
            f"covariance is not positive definite (Cholesky failed at pivot "
            f"{info}; smallest diagonal entry {diag_min:.3e}); it must be "
            "symmetric positive definite. Remove duplicated or collinear assets, "
            "or re-estimate with more observations."
        )
    return cov


def _validate_budget(risk_budget: npt.ArrayLike | None, n: int) -> FloatArray:
    """Return the budget, checked and normalised to sum exactly to one."""
    if risk_budget is None:
        return np.full(n, 1.0 / n)
    b = np.asarray(risk_budget, dtype=np.float64)
    if b.shape != (n,):
        raise ConfigError(
            f"risk_budget has shape {b.shape}; expected ({n},), one entry per "
            "asset of the covariance. Fix the vault's budget configuration."
        )
    if not (np.isfinite(b).all() and (b > 0.0).all()):
        i = int(np.argmax(~(np.isfinite(b) & (b > 0.0))))
        raise ConfigError(
            f"risk_budget[{i}] is {b[i]!r}; every budget must be finite and "
            "strictly > 0 (drop an asset instead of giving it a zero budget)."
        )
    total = float(b.sum())
    if abs(total - 1.0) > _BUDGET_SUM_ATOL:
        raise ConfigError(
            f"risk_budget sums to {total!r}; it must sum to 1 within "
            f"{_BUDGET_SUM_ATOL:.0e}. Normalise the budget configuration."
        )
    return b / total


# --------------------------------------------------------------------------- #
# Newton solver
# --------------------------------------------------------------------------- #
def _newton_system(hessian: FloatArray, gradient: FloatArray) -> FloatArray:
    """Return :math:`H^{-1} g` by Cholesky (LAPACK ``dposv``), LU as fallback.

    ``dposv`` is ``cho_factor`` + ``cho_solve`` in a single LAPACK call without
    scipy's Python-level checks (~1 µs overhead instead of ~20 µs).  ``H`` is
    symmetric, so its transpose is the same matrix in Fortran order (no copy);
    it is scratch and may be overwritten.
    """
    _, x, info = _lapack_dposv(hessian.T, gradient, lower=0, overwrite_a=1, overwrite_b=0)
    if info == 0:
        return x
    # Not numerically PD (cannot happen in exact arithmetic: H = C + D, D > 0).
    return np.linalg.solve(hessian, gradient)


def _rounding_floor(corr: FloatArray, y: FloatArray) -> float:
    """First-order bound on the rounding error of :math:`\\max_i|RRC_i - b_i|`.

    Evaluating :math:`(Cy)_i` in floating point commits an error of at most
    :math:`n u (|C| y)_i` (:math:`u = 2^{-53}`, :math:`y > 0`), so
    :math:`RRC_i = y_i (Cy)_i / y^\\top C y` is only known to within

    .. math:: \\epsilon = n u \\max_i y_i (|C| y)_i \\,/\\, y^\\top C y .

    It is large when risk contributions cancel (long-only weights near an
    eigenvector of a tiny eigenvalue, :math:`\\epsilon \\sim n u \\kappa`):
    no float64 iterate can then be certified more accurately.
    """
    variance = float(_dot(y, corr.dot(y)))
    return y.size * _UNIT_ROUNDOFF * float(_max(y * np.abs(corr).dot(y))) / variance


def _solve_correlation_space(
    corr: FloatArray, b: FloatArray, tol: float, max_iter: int, floor_tol: float
) -> tuple[FloatArray, int, float, float]:
    """Minimise :math:`\\tfrac12 y^\\top C y - b^\\top \\ln y` by damped Newton.

    Parameters
    ----------
    corr : FloatArray, shape (n, n)
        Correlation matrix :math:`C` (SPD, unit diagonal exactly).
    b : FloatArray, shape (n,)
        Budget, positive, sums to one.
    tol : float
        Target for :math:`\\max_i |RRC_i - b_i|`.
    max_iter : int
        Maximum number of Newton steps.
    floor_tol : float
        Error always accepted (``>= tol``) once round-off stalls the
        iteration; raised to :func:`_rounding_floor` (capped at ``1e-7``) if
        that is larger.

    Returns
    -------
    y : FloatArray, shape (n,)
        Final iterate (positive).
    iterations : int
        Newton steps taken.
    error : float
        :math:`\\max_i |RRC_i(y) - b_i|` at ``y``.
    accept : float
        The error the caller should accept: ``tol`` unless round-off stalled
        the iteration, then the (possibly raised) ``floor_tol``.

    Notes
    -----
    * Start: :math:`y_0 = b / \\sqrt{b^\\top C b}` -- proportional to
      :math:`b_i/\\sigma_i` in covariance space (budget-scaled inverse
      volatility) and on the scale of the solution (:math:`y^\\top C y = 1`).
      If every marginal risk :math:`(Cy)_i` is positive, two multiplicative
      fixed-point sweeps :math:`y_i \\leftarrow \\sqrt{b_i y_i/(Cy)_i}`
      (the geometric mean of :math:`y_i` and the fixed-point map
      :math:`b_i/(Cy)_i` of Chaves et al. [4]_; the map is invariant to the
      scale of :math:`y`, so :math:`y` is rescaled to :math:`y^\\top C y = 1`
      once, after the sweeps) refine it; this saves one to two Newton
      iterations on realistic (positively correlated) inputs and is harmless
      otherwise, since damped Newton converges from any positive start.
    * Rescaling.  Since :math:`\\sum_i b_i = 1`, :math:`f(sy)` is minimised over
      :math:`s > 0` at :math:`s^* = 1/\\sqrt{y^\\top C y}`; this exact ray
      minimisation is applied after every damped step (it only lowers
      :math:`f`, at the cost of one dot product).
    * Newton system :math:`(C + \\mathrm{diag}(b/y^2))\\,\\Delta = -(Cy - b/y)`
      solved by Cholesky (LAPACK ``dposv``, i.e. ``cho_factor`` +
      ``cho_solve`` in one call without scipy's Python-level overhead), with
      ``np.linalg.solve`` as fallback should the factorisation fail.
    * Step length.  :math:`F = f / \\min_i b_i` is a *standard* self-concordant
      function (every log coefficient :math:`b_i / \\min b \\ge 1`); its
      Newton decrement is :math:`\\lambda_F = \\sqrt{g^\\top H^{-1} g / \\min b}`.
      If :math:`\\lambda_F < 1/4` the full Newton step stays in :math:`y>0`
      and converges quadratically [3]_, so it is taken without a line search
      (which near the optimum would be defeated by round-off in :math:`f`).
      Otherwise the step starts at ``min(1, 0.99 x distance to the boundary)``
      and is halved until the Armijo condition
      :math:`f(y+t\\Delta) \\le f(y) - t\\lambda_f^2/4` holds, but never below
      the damped step :math:`1/(1+\\lambda_F)`, which is feasible and
      decreases :math:`F` by at least :math:`\\lambda_F - \\ln(1+\\lambda_F)`.
    * Stopping.  The budget error :math:`\\max_i|RRC_i-b_i|` is evaluated at
      the start, at the last iteration and after every step whose decrement
      :math:`\\lambda_F` was below ``1e-4`` (before that the iterate cannot
      have converged to ``tol``; skipping the evaluation saves ~1/4 of the
      work at small ``n``).  Stop
      when it is :math:`\\le` ``tol``.  A quadratic-region step that does not
      reduce it means the floating-point floor is reached (ill-conditioned
      :math:`C`): return the best iterate if its error is within the
      acceptance floor, or after ``_MAX_STALLS`` such steps, instead of
      burning the remaining iterations.
    """
    n = b.size
    min_b = float(b.min())
    y = b / math.sqrt(float(_dot(b, corr.dot(b))))
    cy = corr.dot(y)
    swept = False
    for _ in range(_WARM_START_SWEEPS):
        if not float(_min(cy)) > 0.0:  # a negative marginal risk: stop sweeping
            break
        y = np.sqrt(b * y / cy)  # scale-invariant map: no rescaling in between
        cy = corr.dot(y)
        swept = True
    if swept:
        scale = 1.0 / math.sqrt(float(_dot(y, cy)))
        y *= scale
        cy *= scale
    hessian = np.empty_like(corr)
    hessian_diag = hessian.reshape(-1)[:: n + 1]  # view on the diagonal
    error = math.inf
    y_best = y
    stalls = 0
    lambda_scaled = math.inf
    full_step_taken = False
    for iteration in range(max_iter + 1):
        if iteration in (0, max_iter) or lambda_scaled < _CHECK_ERROR_BELOW:
            ycy = y * cy
            variance = float(_sum(ycy))
            new_error = float(_max(np.abs(ycy - variance * b))) / variance
            if new_error <= tol:
                return y, iteration, new_error, tol
            if new_error < error:
                error, y_best, stalls = new_error, y, 0
            elif full_step_taken:
                # A quadratically convergent step did not help: round-off floor.
                stalls += 1
                if stalls == 1:
                    floor_tol = max(
                        floor_tol, min(_ROUNDOFF_ACCEPT_CAP, _rounding_floor(corr, y_best))
                    )
                if error <= floor_tol or stalls >= _MAX_STALLS:
                    return y_best, iteration, error, floor_tol
        if iteration == max_iter:
            break
        b_over_y = b / y
        gradient = cy - b_over_y
        np.copyto(hessian, corr)
        np.add(b_over_y / y, 1.0, out=hessian_diag)  # C_ii = 1 exactly
        newton = _newton_system(hessian, gradient)  # Δ = -newton
        decrement2 = float(_dot(gradient, newton))  # λ_f² = g'H⁻¹g
        lambda_scaled = math.sqrt(max(decrement2, 0.0) / min_b)
        full_step_taken = lambda_scaled < _QUADRATIC_REGION
        if full_step_taken:
            y_new = y - newton
            if float(_min(y_new)) > 0.0:
                y = y_new
                cy = corr.dot(y)
                continue
            # Infeasible full step: impossible in exact arithmetic; damp it.
            full_step_taken = False
        y = y - _line_search(corr, b, y, cy, newton, decrement2, lambda_scaled) * newton
        cy = corr.dot(y)
        # Exact minimisation of f along the ray {s y}: s* = 1/sqrt(y'Cy).
        scale = 1.0 / math.sqrt(float(_dot(y, cy)))
        y *= scale
        cy *= scale
    return y_best, max_iter, error, floor_tol


def _line_search(
    corr: FloatArray,
    b: FloatArray,
    y: FloatArray,
    cy: FloatArray,
    newton: FloatArray,
    decrement2: float,
    lambda_scaled: float,
) -> float:
    """Step length ``t`` for ``y - t * newton`` far from the optimum.

    Fraction-to-the-boundary start ``min(1, 0.99 / max_i(newton_i / y_i))``,
    Armijo backtracking by halving, floored at the self-concordant damped
    step ``1 / (1 + lambda_scaled)`` (feasible and decreasing by theory).
    """
    t_damped = 1.0 / (1.0 + lambda_scaled)
    t = 1.0
    shrink = float(_max(newton / y))  # > 0 iff some y_i decreases
    if shrink * t > _FRACTION_TO_BOUNDARY:
        t = _FRACTION_TO_BOUNDARY / shrink
    f_y = 0.5 * float(_dot(y, cy)) - float(_dot(b, np.log(y)))
    while t > t_damped:
        y_try = y - t * newton
        f_try = 0.5 * float(_dot(y_try, corr.dot(y_try))) - float(_dot(b, np.log(y_try)))
        if f_try <= f_y - _ARMIJO_SLOPE * t * decrement2:
            return t
        t *= 0.5
    return t_damped


# --------------------------------------------------------------------------- #
# Compiled fast path: validation, coordinate descent and risk decomposition
# --------------------------------------------------------------------------- #
# Status codes of :func:`_ccd_kernel`.
_KERNEL_OK = 0
# An input check failed: the reference path re-validates and raises the documented error.
_KERNEL_INVALID = 1
# Coordinate descent would not reach ``tol`` within ``max_iter`` sweeps (ill-conditioned
# correlation, round-off floor): the reference Newton path solves the problem instead.
_KERNEL_SLOW = 2
# Up to this size the positive-definiteness test is an unblocked Cholesky compiled into the
# kernel; above it, LAPACK's blocked ``dpotrf`` (through numba's ``np.linalg.cholesky``).
_KERNEL_CHOLESKY_MAX_N = 48
# Up to this size the kernel may switch from coordinate descent to Newton steps (compiled
# Cholesky): after _KERNEL_NEWTON_AFTER sweeps, when the last two sweeps together cut the
# budget error by less than _KERNEL_NEWTON_RATE.  On realistic correlations two sweeps cut
# it 15-100 times and coordinate descent is cheaper to the end (a Newton step costs 3-7
# sweeps at n = 5-20); on an ill-conditioned one they barely move it and Newton's quadratic
# convergence wins.
_KERNEL_NEWTON_MAX_N = 24
_KERNEL_NEWTON_AFTER = 3
_KERNEL_NEWTON_RATE = 0.1
# Sweeps over which the contraction of the budget error is measured, and the first sweep
# at which the kernel may give up because that rate cannot reach ``tol`` within the budget.
_RATE_WINDOW = 4
_RATE_FIRST_CHECK = 8
_LARGEST_FLOAT = float(np.finfo(np.float64).max)
_NO_BUDGET = np.empty(0, dtype=np.float64)


@njit(cache=True, nogil=True)
def _cholesky_succeeds(a: FloatArray) -> bool:  # pragma: no cover - compiled
    """Unblocked in-place Cholesky ``a = R'R`` (``R`` upper, stored in ``a``'s upper
    triangle); ``True`` iff every pivot is positive, i.e. ``a`` is positive definite."""
    n = a.shape[0]
    for j in range(n):
        pivot = a[j, j]
        for k in range(j):
            pivot -= a[k, j] * a[k, j]
        if not pivot > 0.0:
            return False
        r = math.sqrt(pivot)
        a[j, j] = r
        for i in range(j + 1, n):
            s = a[j, i]
            for k in range(j):
                s -= a[k, j] * a[k, i]
            a[j, i] = s / r
    return True


@njit(cache=True, nogil=True)
def _is_positive_definite(a: FloatArray, inv_vols: FloatArray) -> bool:  # pragma: no cover
    """Cholesky test of the symmetric ``a`` (not modified); ``inv_vols`` is
    ``1 / sqrt(diag a)``.

    Up to ``_KERNEL_CHOLESKY_MAX_N`` the compiled unblocked Cholesky of the correlation
    matrix ``a / (s s')``; above, LAPACK ``dpotrf`` on ``a`` itself (numba's
    ``np.linalg.cholesky``, given the F-ordered view ``a.T``, which is ``a`` and is copied
    without a transposition).  ``a`` is positive definite iff its correlation matrix is
    (congruent by a positive diagonal).
    """
    n = a.shape[0]
    if n <= _KERNEL_CHOLESKY_MAX_N:
        corr = np.empty((n, n))
        for i in range(n):
            for j in range(n):
                corr[i, j] = a[i, j] * (inv_vols[i] * inv_vols[j])
        return _cholesky_succeeds(corr)
    try:
        np.linalg.cholesky(a.T)  # LAPACK dpotrf on a copy
    except Exception:  # numpy.linalg.LinAlgError: a pivot is not positive
        return False
    return True


@njit(cache=True, nogil=True)
def _asymmetry(a: FloatArray) -> float:  # pragma: no cover - compiled
    """:math:`\\sum_{i<j} (a_{ij} - a_{ji})^2`: ``0`` iff ``a`` is exactly symmetric, and
    NaN or ``inf`` if an off-diagonal entry is (or a difference overflows).

    Four rows at a time with four accumulators, so that the strided reads of the
    transposed entries are independent scalar loads (about one pass over ``a``;
    a vectorising compiler would turn them into gathers, three to four times slower).
    """
    n = a.shape[0]
    s0 = s1 = s2 = s3 = 0.0
    m = n - n % 4
    for i in range(0, m, 4):
        for p in range(i, i + 4):  # the 4 x 4 diagonal block
            for q in range(p + 1, i + 4):
                d = a[p, q] - a[q, p]
                s0 += d * d
        for j in range(i + 4, n):
            d0 = a[i, j] - a[j, i]
            d1 = a[i + 1, j] - a[j, i + 1]
            d2 = a[i + 2, j] - a[j, i + 2]
            d3 = a[i + 3, j] - a[j, i + 3]
            s0 += d0 * d0
            s1 += d1 * d1
            s2 += d2 * d2
            s3 += d3 * d3
    for p in range(m, n):
        for q in range(p + 1, n):
            d = a[p, q] - a[q, p]
            s0 += d * d
    return (s0 + s1) + (s2 + s3)


@njit(cache=True, nogil=True)
def _compensated_sum(a: FloatArray) -> float:  # pragma: no cover - compiled
    """Neumaier's compensated sum: error ~1 ulp of the total whatever ``a.size``
    (a plain loop commits up to ``n`` ulps, numpy's pairwise sum ~log2 n)."""
    total = 0.0
    carry = 0.0
    for v in a:
        t = total + v
        if abs(total) >= abs(v):
            carry += (total - t) + v
        else:
            carry += (v - t) + total
        total = t
    return total + carry


@njit(cache=True, nogil=True)
def _budget_error(x: FloatArray, sx: FloatArray, b: FloatArray) -> float:  # pragma: no cover
    """:math:`\\max_i |x_i (\\Sigma x)_i - (x^\\top \\Sigma x) b_i| / x^\\top \\Sigma x`,
    i.e. max |RRC - b|; ``inf`` unless :math:`x^\\top \\Sigma x > 0` (possible only if
    :math:`\\Sigma` is not positive definite)."""
    variance = 0.0
    for i in range(x.size):
        variance += x[i] * sx[i]
    if not variance > 0.0:
        return math.inf
    error = 0.0
    for i in range(x.size):
        e = abs(x[i] * sx[i] - variance * b[i])
        if e > error:
            error = e
    return error / variance


@njit(cache=True, nogil=True)
def _symv(a: FloatArray, x: FloatArray, out: FloatArray) -> None:  # pragma: no cover
    """``out = a @ x`` for a symmetric ``a``, as the sum of its rows scaled by ``x``:
    contiguous AXPYs that vectorise (row dot products are a serial reduction)."""
    n = x.size
    for i in range(n):
        out[i] = 0.0
    for j in range(n):
        xj = x[j]
        for i in range(n):
            out[i] += xj * a[j, i]


@njit(cache=True, nogil=True)
def _newton_step(
    a: FloatArray,
    inv_vols: FloatArray,
    b: FloatArray,
    y: FloatArray,
    cy: FloatArray,
    h: FloatArray,
    d: FloatArray,
) -> bool:  # pragma: no cover - compiled
    """Newton direction of Spinu's objective in correlation space: ``d = H^{-1} g`` with
    ``g = Cy - b/y``, ``H = C + diag(b/y^2)`` and ``C = a / (s s')`` (Cholesky in ``h``);
    ``False`` if ``H`` is not numerically positive definite.  The Newton iterate is
    ``y - d``."""
    n = y.size
    for i in range(n):
        d[i] = cy[i] - b[i] / y[i]
        for j in range(n):
            h[i, j] = a[i, j] * (inv_vols[i] * inv_vols[j])
        h[i, i] = 1.0 + b[i] / (y[i] * y[i])
    if not _cholesky_succeeds(h):  # h = R'R, R upper
        return False
    for i in range(n):  # R' z = g
        s = d[i]
        for k in range(i):
            s -= h[k, i] * d[k]
        d[i] = s / h[i, i]
    for i in range(n - 1, -1, -1):  # R d = z
        s = d[i]
        for k in range(i + 1, n):
            s -= h[i, k] * d[k]
        d[i] = s / h[i, i]
    return True


@njit(cache=True, nogil=True)
def _ccd_kernel(
    cov: FloatArray, budget: FloatArray, tol: float, max_sweeps: int, check_pd: bool
) -> tuple[int, FloatArray, float, int, float]:  # pragma: no cover - compiled
    """Validate, solve by cyclical coordinate descent and decompose risk, in one call.

    Parameters
    ----------
    cov : FloatArray, shape (n, n), C-contiguous
        Covariance as given (not yet symmetrised); never written.
    budget : FloatArray, shape (n,) or (0,)
        Risk budget as given, or empty for the equal budget ``1/n``.
    tol : float
        Target of :math:`\\max_i |RRC_i - b_i|`, certified with an exactly
        recomputed :math:`\\Sigma x` (the sweeps update it incrementally).
    max_sweeps : int
        Maximum number of coordinate-descent sweeps.
    check_pd : bool
        Test positive definiteness (Cholesky).

    Returns
    -------
    (status, out, sigma, sweeps, error)
        ``status``: ``_KERNEL_OK``, ``_KERNEL_INVALID`` (some check of
        ``_validate_covariance`` / ``_validate_budget`` fails) or
        ``_KERNEL_SLOW``.  For ``_KERNEL_OK``: ``out`` (shape (4, n)) holds
        the weights, the normalised budget, the relative and the absolute risk
        contributions; ``sigma`` the volatility, ``error`` the achieved
        :math:`\\max_i |RRC_i - b_i|`.  ``sweeps`` is the number of sweeps.
    """
    n = cov.shape[0]
    out = np.empty((4, n))
    # One allocation for the working vectors: vols, 1/vols, x, Σx (see _ccd_solve).
    work = np.empty((4, n))
    vols, inv_vols = work[0], work[1]
    # The checks of _validate_covariance and _validate_budget; any failure sends the call to
    # the reference path, which raises the documented error (so their order is irrelevant).
    scale = 0.0
    for i in range(n):
        d = cov[i, i]
        if not (d > 0.0 and d <= _LARGEST_FLOAT):  # Cholesky fails at this pivot at the latest
            return _KERNEL_INVALID, out, 0.0, 0, 0.0
        scale = max(scale, d)
        vols[i] = math.sqrt(d)
        inv_vols[i] = 1.0 / vols[i]
    # Finiteness and symmetry of the off-diagonal entries in one pass.  The symmetry limit
    # is relative to the largest variance, not to max |Σ_ij| as in _validate_covariance:
    # never looser (equal for a positive semi-definite Σ), and a stricter failure only
    # costs the reference path; so is the sum of squares against the largest difference.
    asymmetry = _asymmetry(cov)
    limit = _SYMMETRY_RTOL * scale
    if not asymmetry <= limit * limit:  # NaN: a non-finite entry
        return _KERNEL_INVALID, out, 0.0, 0, 0.0
    if asymmetry == 0.0:
        return _ccd_solve(cov, work, budget, tol, max_sweeps, check_pd, out)
    symmetric = np.empty((n, n))
    for i in range(n):
        for j in range(n):
            symmetric[i, j] = (cov[i, j] + cov[j, i]) * 0.5
    return _ccd_solve(symmetric, work, budget, tol, max_sweeps, check_pd, out)


@njit(cache=True, nogil=True)
def _ccd_solve(
    a: FloatArray,
    work: FloatArray,
    budget: FloatArray,
    tol: float,
    max_sweeps: int,
    check_pd: bool,
    out: FloatArray,
) -> tuple[int, FloatArray, float, int, float]:  # pragma: no cover - compiled
    """:func:`_ccd_kernel` after the covariance checks, on the exactly symmetric ``a``;
    ``work`` (shape (4, n)) holds the volatilities and their inverses in its first rows.

    Notes
    -----
    Algorithm: Griveau-Billion, Richard & Roncalli [7]_ on Spinu's objective in
    correlation space, :math:`f(y) = \\tfrac12 y^\\top C y - b^\\top \\ln y` with
    :math:`C = \\Sigma / (s s^\\top)`, :math:`y = s x`.  Minimising :math:`f`
    exactly in coordinate :math:`i` (:math:`C_{ii} = 1`) is the positive root of
    :math:`y_i^2 + c_i y_i - b_i = 0` with :math:`c_i = (Cy)_i - y_i`; after it
    :math:`Cy` changes by a multiple of row :math:`i` of :math:`C`, so a sweep
    costs :math:`O(n^2)`.  :math:`C` is never formed: the kernel keeps
    :math:`x` and :math:`\\Sigma x` (``(Cy)_i = (\\Sigma x)_i / s_i``) and
    updates the latter with row :math:`i` of :math:`\\Sigma` itself, one
    contiguous AXPY per coordinate.  Coordinate-wise exact minimisation is
    invariant to the diagonal change of variables, so the iterates are those
    of the correlation-space method; the scalar updates are made in
    correlation space, where the quadratic is well scaled.  Cyclical
    coordinate descent converges for this strictly convex, coordinate-wise
    smooth objective; on realistic (factor-model) correlations each sweep
    cuts the budget error about tenfold.  The error is checked after every
    sweep; if the contraction measured over the last ``_RATE_WINDOW`` sweeps
    cannot reach ``tol`` within ``max_sweeps``, the kernel stops early with
    ``_KERNEL_SLOW``.
    """
    n = a.shape[0]
    vols, inv_vols, x, sx = work[0], work[1], work[2], work[3]  # x = y / s and Σx
    if check_pd and not _is_positive_definite(a, inv_vols):
        return _KERNEL_INVALID, out, 0.0, 0, 0.0
    b = out[1]
    if budget.size == 0:
        b[:] = 1.0 / n
    else:
        for i in range(n):
            if not (budget[i] > 0.0 and budget[i] <= _LARGEST_FLOAT):
                return _KERNEL_INVALID, out, 0.0, 0, 0.0
        total = _compensated_sum(budget)
        if abs(total - 1.0) > _BUDGET_SUM_ATOL:
            return _KERNEL_INVALID, out, 0.0, 0, 0.0
        for i in range(n):
            b[i] = budget[i] / total

    # Start y = b / sqrt(b'Cb), on the scale of the solution (y'Cy = 1); exact for a
    # diagonal or constant correlation with equal budgets.  In x: u = b / s, b'Cb = u'Σu.
    for i in range(n):
        x[i] = b[i] * inv_vols[i]
    _symv(a, x, sx)
    variance = 0.0
    for i in range(n):
        variance += x[i] * sx[i]
    start = 1.0 / math.sqrt(variance)
    for i in range(n):
        x[i] *= start
        sx[i] *= start
    error = _budget_error(x, sx, b)
    history = np.empty(_RATE_WINDOW)  # errors of the last sweeps, a ring buffer
    newton = n <= _KERNEL_NEWTON_MAX_N
    # The Newton workspace, allocated the first time a Newton step is tried.
    hessian = np.empty((0, 0))
    trial = np.empty((5, 0))
    sweeps = 0  # sweeps and Newton steps
    converged = error <= tol
    while not converged and sweeps < max_sweeps:
        history[sweeps % _RATE_WINDOW] = error
        if (
            newton
            and sweeps >= _KERNEL_NEWTON_AFTER
            and error > _KERNEL_NEWTON_RATE * history[(sweeps - 2) % _RATE_WINDOW]
        ):
            # Small n: a Newton step (one n x n Cholesky) costs about one sweep and
            # converges quadratically; kept only if it lowers the (exact) error.
            sweeps += 1
            if hessian.size == 0:
                hessian = np.empty((n, n))
                trial = np.empty((5, n))
            gradient, y, cy, x_trial, sx_trial = trial[0], trial[1], trial[2], trial[3], trial[4]
            for i in range(n):
                y[i] = x[i] * vols[i]
                cy[i] = sx[i] * inv_vols[i]
            if _newton_step(a, inv_vols, b, y, cy, hessian, gradient):
                for i in range(n):
                    x_trial[i] = (y[i] - gradient[i]) * inv_vols[i]
                    newton = newton and x_trial[i] > 0.0
            else:
                newton = False
            if newton:
                _symv(a, x_trial, sx_trial)
                trial_error = _budget_error(x_trial, sx_trial, b)
                if trial_error < error:
                    x[:] = x_trial
                    sx[:] = sx_trial
                    error = trial_error
                    converged = error <= tol
                    continue
                newton = False
            continue  # the step was not taken: coordinate descent from here
        for i in range(n):
            y_old = x[i] * vols[i]
            c = sx[i] * inv_vols[i] - y_old
            root = math.sqrt(c * c + 4.0 * b[i])
            # Positive root of y^2 + c y - b_i, without cancellation for c > 0.
            y_new = 2.0 * b[i] / (c + root) if c > 0.0 else 0.5 * (root - c)
            x_new = y_new * inv_vols[i]
            step = x_new - x[i]
            x[i] = x_new
            for j in range(n):  # Σ symmetric: row i is column i
                sx[j] += step * a[i, j]
        sweeps += 1
        error = _budget_error(x, sx, b)
        if error <= tol:
            _symv(a, x, sx)  # certify with an exact Σx
            error = _budget_error(x, sx, b)
            converged = error <= tol
        elif sweeps >= _RATE_FIRST_CHECK:
            rate = error / history[sweeps % _RATE_WINDOW]  # over the last _RATE_WINDOW sweeps
            if not rate < 1.0:
                break  # no progress: round-off floor or a hard problem
            if rate > 0.0 and (
                sweeps + _RATE_WINDOW * math.log(tol / error) / math.log(rate) > max_sweeps
            ):
                break
    if not converged:
        return _KERNEL_SLOW, out, 0.0, sweeps, 0.0

    # Weights w = x / sum(x); RRC_i = w_i (Σw)_i / w'Σw.
    w = out[0]
    total = _compensated_sum(x)
    for i in range(n):
        w[i] = x[i] / total
    sw = sx  # Σx is no longer needed
    _symv(a, w, sw)
    variance = 0.0
    for i in range(n):
        variance += w[i] * sw[i]
    if not variance > 0.0:  # only without the positive-definiteness test
        return _KERNEL_INVALID, out, 0.0, sweeps, 0.0
    sigma = math.sqrt(variance)
    rrc, rc = out[2], out[3]
    error = 0.0
    for i in range(n):
        rrc[i] = w[i] * sw[i] / variance
        rc[i] = rrc[i] * sigma
        e = abs(rrc[i] - b[i])
        if e > error:
            error = e
    return _KERNEL_OK, out, sigma, sweeps, error


# The compiled kernel for exactly the argument types the wrapper passes (C-contiguous float64
# arrays, float, int, bool), called without the dispatcher's per-call type resolution
# (~1 µs, a fifth of a call at n ~ 5).  Filled after the first call has compiled or loaded it.
_KERNEL_ENTRY: list[Callable[..., tuple[int, FloatArray, float, int, float]] | None] = [None]


def _announce_first_compile() -> None:
    """Logs one line before the first call compiles the kernel (no on-disk cache yet).

    numba compiles ``_ccd_kernel`` on its first call (about 10 s on a 2-core machine) and writes
    the machine code to its cache; later processes load it in milliseconds. The cache index is
    looked up where numba keeps it; if numba lays its cache out differently, nothing is logged.
    """
    cache = getattr(_ccd_kernel, "_cache", None)
    index = getattr(getattr(cache, "_cache_file", None), "_index_path", None)
    if index is not None and not os.path.exists(index):
        logging.getLogger(__name__).warning("compiling the solver kernel once, ~10 s (cached for later runs)")


def _compiled_entry_point() -> Callable[..., tuple[int, FloatArray, float, int, float]] | None:
    """The kernel's compiled entry point for the wrapper's argument types, if available.

    ``np.ascontiguousarray(..., dtype=np.float64)`` guarantees the array types except
    writeability; the kernel never writes its inputs, so a read-only array is safe too.
    ``None`` (keep using the dispatcher) if this numba version lays the dispatcher out
    differently.
    """
    signature = (
        numba_types.Array(numba_types.float64, 2, "C"),
        numba_types.Array(numba_types.float64, 1, "C"),
        numba_types.float64,
        numba_types.int64,
        numba_types.boolean,
    )
    compiled = getattr(_ccd_kernel, "overloads", {}).get(signature)
    return getattr(compiled, "entry_point", None)


def _target_weights(out: FloatArray, sigma: float, iterations: int, error: float) -> TargetWeights:
    """:class:`TargetWeights` from the kernel's packed output (read-only views of ``out``).

    Sets the frozen dataclass's ``__dict__`` in one assignment: the object the generated
    ``__init__`` builds, ~1.5 µs cheaper (a quarter of the whole call at n ~ 5).
    """
    out.setflags(write=False)  # the row views below inherit it
    result = _new_object(TargetWeights)
    _set_attribute(
        result,
        "__dict__",
        {
            "weights": out[0],
            "risk_budget": out[1],
            "risk_contributions": out[3],
            "relative_risk_contributions": out[2],
            "portfolio_volatility": sigma,
            "iterations": iterations,
            "max_budget_error": error,
            "lower_bound_active": (),
            "upper_bound_active": (),
            "max_free_budget_error": error,
        },
    )
    return result


_new_object = object.__new__
_set_attribute = object.__setattr__


def solve_equal_risk_contribution(
    covariance: npt.ArrayLike,
    risk_budget: npt.ArrayLike | None = None,
    tol: float = 1e-12,
    max_iter: int = 100,
    *,
    check_positive_definite: bool = True,
) -> TargetWeights:
    """Long-only risk-budgeting weights (equal risk contribution by default).

    Solves :math:`RRC_i(w) = b_i`, :math:`w > 0`, :math:`\\sum_i w_i = 1` on
    Spinu's convex formulation [1]_ (see the module docstring), run in
    *correlation space* for conditioning: with
    :math:`s = \\sqrt{\\mathrm{diag}\\,\\Sigma}` and
    :math:`C = \\Sigma / (s s^\\top)`, we solve for :math:`y` with :math:`C`
    and map back :math:`x = y / s`, :math:`w = x / \\sum_i x_i`.  Risk
    contributions are invariant under this change of variables
    (:math:`x_i(\\Sigma x)_i = y_i (C y)_i`).

    Two methods, same problem and tolerance:

    * first, a compiled (numba) kernel that validates the input, runs cyclical
      coordinate descent with the closed-form coordinate update of
      Griveau-Billion, Richard & Roncalli [7]_ (:math:`O(n^2)` per sweep,
      one contiguous pass over :math:`\\Sigma`; about 13 sweeps to ``1e-12``
      on realistic factor-model covariances) and
      computes the risk decomposition, in one call;
    * if coordinate descent cannot reach ``tol`` within ``max_iter`` sweeps at
      its measured rate (ill-conditioned :math:`\\Sigma`, round-off floor),
      damped Newton (one Cholesky solve, :math:`O(n^3/3)` flops, per
      iteration; 3--5 iterations on realistic inputs, up to ~20 when
      :math:`\\kappa(\\Sigma) \\sim 10^8`), from its own start.

    The kernel is compiled on the first call of a process without an on-disk
    cache (``cache=True``: ``__pycache__`` next to this module), a one-time
    cost of tens of seconds; loading it from the cache costs about a second.
    See ``benchmarks/bench_solvers.py`` for timings against other libraries.

    Parameters
    ----------
    covariance : array_like, shape (n, n)
        Covariance :math:`\\Sigma` (annualised or not: the weights are scale
        invariant).  Must be finite, symmetric to within ``1e-10`` relative to
        its largest entry, and positive definite.
    risk_budget : array_like, shape (n,), optional
        Budget :math:`b`, finite, :math:`b_i > 0`, summing to 1 within
        ``1e-9`` (then normalised exactly).  Default: equal, :math:`b_i = 1/n`.
    tol : float, default 1e-12
        Target :math:`\\max_i |RRC_i - b_i|`.  If round-off stalls Newton
        before ``tol`` (ill-conditioned :math:`\\Sigma`), the result is
        accepted when its error is at most ``max(tol, 1e-9, eps_eval)``, where
        ``eps_eval`` (capped at ``1e-7``) bounds the rounding error of
        evaluating the risk contributions themselves, :math:`\\sim n u
        \\kappa`: at :math:`\\kappa(\\Sigma) = 10^8` expect errors of a few
        ``1e-9``.
    max_iter : int, default 100
        Maximum number of coordinate-descent sweeps, and then of Newton
        iterations if Newton takes over.
    check_positive_definite : bool, default True
        Test that :math:`\\Sigma` is positive definite (Cholesky: compiled up
        to n = 48, LAPACK ``dpotrf`` above).  ``False`` (only ``False``: any
        other value keeps the test) skips this :math:`O(n^3/3)` test -- the
        largest cost of a call beyond n ~ 50 (about 70 µs at n = 100 and
        260 µs at n = 200 on one core in ``benchmarks/bench_solvers.py``, more
        than the solve itself) -- for a caller that guarantees it (e.g. a
        covariance that passed the estimator's conditioning gate, whose
        eigenvalues prove it).  A matrix that is not positive definite is then
        still rejected whenever coordinate descent does not converge (the
        Newton path validates it), but may otherwise yield weights that meet
        the budget for that invalid matrix.  Every other check still runs.

    Returns
    -------
    TargetWeights
        Weights, budget, risk decomposition (annualised if ``covariance`` is),
        ``iterations`` (coordinate-descent sweeps plus Newton iterations) and
        the achieved :math:`\\max_i |RRC_i - b_i|`.

    Raises
    ------
    SingularCovarianceError
        If ``covariance`` is not square, contains NaN/inf, is asymmetric, or
        is not positive definite (Cholesky fails).  NaN in the *covariance*
        therefore raises ``SingularCovarianceError``.
    ConfigError
        If ``risk_budget`` has the wrong length, contains a non-positive,
        NaN or infinite entry (NaN in the *budget* raises ``ConfigError``),
        or does not sum to 1; or if ``tol <= 0`` or ``max_iter < 1``.
    SolverDidNotConvergeError
        If ``tol`` is not reached within ``max_iter`` iterations and the
        achieved error is above the round-off acceptance described under
        ``tol`` (in practice: :math:`\\kappa(\\Sigma) \\gtrsim 10^{11}`); the
        message names the achieved error.

    References
    ----------
    .. [1] F. Spinu, "An algorithm for computing risk parity weights", 2013.
    .. [7] Griveau-Billion, Richard, Roncalli, SSRN 2325255, 2013.
    """
    if not (tol.__class__ is float and 0.0 < tol < _INFINITY and max_iter.__class__ is int
            and max_iter >= 1):
        tol, max_iter = _solver_arguments(tol, max_iter)
    status, out, sigma, sweeps, error = _run_kernel(
        covariance, risk_budget, tol, max_iter, check_positive_definite is not False
    )
    if status == _KERNEL_OK:
        return _target_weights(out, sigma, sweeps, error)
    # Invalid input (raises the documented error) or a problem coordinate descent
    # cannot finish in max_iter sweeps: damped Newton.
    result = _newton_risk_budgeting(covariance, risk_budget, tol, max_iter)
    if sweeps:
        result = dataclasses.replace(result, iterations=result.iterations + sweeps)
    return result


def risk_budgeting_weights(
    covariance: npt.ArrayLike,
    risk_budget: npt.ArrayLike | None = None,
    tol: float = 1e-12,
    max_iter: int = 100,
    *,
    check_positive_definite: bool = True,
) -> FloatArray:
    """Long-only risk-budgeting weights only: :func:`solve_equal_risk_contribution`
    without the diagnostics.

    The same solver, tolerance, validation and errors, for loops that need the
    weights and nothing else (backtests, parameter sweeps, benchmarks): it skips
    building the :class:`TargetWeights` record (about 2 µs, a third of a call at
    n = 5).

    Parameters
    ----------
    covariance, risk_budget, tol, max_iter, check_positive_definite
        As for :func:`solve_equal_risk_contribution`.

    Returns
    -------
    FloatArray, shape (n,)
        Weights, :math:`w_i > 0`, :math:`\\sum_i w_i = 1`, meeting
        :math:`\\max_i |RRC_i - b_i| \\le` ``tol`` (or the round-off acceptance
        described there); a new array owned by the caller.

    Raises
    ------
    SingularCovarianceError, ConfigError, SolverDidNotConvergeError
        As for :func:`solve_equal_risk_contribution`.
    """
    if not (tol.__class__ is float and 0.0 < tol < _INFINITY and max_iter.__class__ is int
            and max_iter >= 1):
        tol, max_iter = _solver_arguments(tol, max_iter)
    result = _run_kernel(covariance, risk_budget, tol, max_iter, check_positive_definite is not False)
    if result[0] == _KERNEL_OK:
        return result[1][0]
    return np.array(_newton_risk_budgeting(covariance, risk_budget, tol, max_iter).weights)


_INFINITY = math.inf
_FLOAT64 = np.dtype(np.float64)  # a dtype object: ~0.1 µs cheaper per conversion than the type
_as_c_array = np.ascontiguousarray


def _solver_arguments(tol: float, max_iter: int) -> tuple[float, int]:
    """``(tol, max_iter)`` checked and converted to ``(float, int)``.

    Raises
    ------
    ConfigError
        If ``tol`` is not finite and > 0, or ``max_iter`` is not an integer >= 1.
    """
    if not (tol > 0.0 and math.isfinite(tol)):
        raise ConfigError(f"tol is {tol!r}; it must be finite and > 0 (default 1e-12).")
    if isinstance(max_iter, bool) or int(max_iter) != max_iter or max_iter < 1:
        raise ConfigError(f"max_iter is {max_iter!r}; it must be an integer >= 1 (default 100).")
    return float(tol), int(max_iter)


def _run_kernel(
    covariance: npt.ArrayLike,
    risk_budget: npt.ArrayLike | None,
    tol: float,
    max_iter: int,
    check_pd: bool,
) -> tuple[int, FloatArray, float, int, float]:
    """:func:`_ccd_kernel` on the inputs as float64 C-contiguous arrays; ``_KERNEL_INVALID``
    without calling it when their shapes are wrong (the reference path then raises)."""
    cov = _as_c_array(covariance, dtype=_FLOAT64)
    n = cov.shape[0] if cov.ndim == 2 else 0
    if risk_budget is None:
        budget = _NO_BUDGET
    else:
        budget = _as_c_array(risk_budget, dtype=_FLOAT64)
        if budget.shape != (n,):
            n = 0
    if not n or cov.shape[1] != n:
        return _KERNEL_INVALID, _NO_BUDGET, 0.0, 0, 0.0
    entry = _KERNEL_ENTRY[0]
    if entry is None:
        _announce_first_compile()
        result = _ccd_kernel(cov, budget, tol, max_iter, check_pd)
        _KERNEL_ENTRY[0] = _compiled_entry_point()
        return result
    return entry(cov, budget, tol, max_iter, check_pd)


def _newton_risk_budgeting(
    covariance: npt.ArrayLike, risk_budget: npt.ArrayLike | None, tol: float, max_iter: int
) -> TargetWeights:
    """Validate, then solve by damped Newton in correlation space (the reference path).

    :func:`solve_equal_risk_contribution` without the compiled coordinate-descent
    fast path: same arguments (already checked ``tol`` and ``max_iter``), same
    result type and errors; ``iterations`` counts Newton iterations only.
    """
    cov = _validate_covariance(covariance)
    n = cov.shape[0]
    b = _validate_budget(risk_budget, n)

    vols = np.sqrt(cov.diagonal())
    corr = cov / (vols[:, None] * vols)
    corr.reshape(-1)[:: n + 1] = 1.0  # exact unit diagonal (in-place view)

    floor_tol = max(float(tol), _ROUNDOFF_ACCEPT)
    y, iterations, error, accept = _solve_correlation_space(
        corr, b, float(tol), int(max_iter), floor_tol
    )
    if not error <= max(accept, floor_tol):
        raise SolverDidNotConvergeError(
            f"risk-budgeting Newton solver reached max |RRC - b| = {error:.3e} after "
            f"{iterations} iteration(s); the tolerance is {tol:.1e} (accepted up to "
            f"{max(accept, floor_tol):.1e} at the round-off floor) with "
            f"max_iter={max_iter}. Increase max_iter or tol, or improve the "
            "covariance conditioning (shrink it or drop collinear assets)."
        )

    x = y / vols
    w = x / x.sum()
    sigma_w = cov @ w
    variance = float(w @ sigma_w)
    sigma = math.sqrt(variance)
    rrc = w * sigma_w / variance
    max_error = float(np.max(np.abs(rrc - b)))
    return TargetWeights(
        weights=_freeze(w),
        risk_budget=_freeze(b),
        risk_contributions=_freeze(rrc * sigma),
        relative_risk_contributions=_freeze(rrc),
        portfolio_volatility=sigma,
        iterations=iterations,
        max_budget_error=max_error,
        max_free_budget_error=max_error,
    )


# --------------------------------------------------------------------------- #
# Baselines
# --------------------------------------------------------------------------- #
def inverse_volatility_weights(covariance: npt.ArrayLike) -> FloatArray:
    """Inverse-volatility weights :math:`w_i = \\sigma_i^{-1} / \\sum_j \\sigma_j^{-1}`.

    Equal to the ERC solution when correlations are all equal (in particular
    for a diagonal covariance) [2]_.

    Parameters
    ----------
    covariance : array_like, shape (n, n)
        Covariance with a strictly positive, finite diagonal (off-diagonal
        entries are ignored).

    Returns
    -------
    FloatArray, shape (n,)
        Positive weights summing to 1.

    Raises
    ------
    SingularCovarianceError
        If the covariance is not square or a variance is not finite and > 0.
    """
    cov = np.asarray(covariance, dtype=np.float64)
    if cov.ndim != 2 or cov.shape[0] != cov.shape[1] or cov.shape[0] == 0:
        raise SingularCovarianceError(
            f"covariance has shape {cov.shape}; it must be a non-empty square matrix."
        )
    variances = np.diag(cov)
    if not (np.isfinite(variances).all() and (variances > 0.0).all()):
        i = int(np.argmax(~(np.isfinite(variances) & (variances > 0.0))))
        raise SingularCovarianceError(
            f"variance of asset {i} is {variances[i]!r}; variances must be finite "
            "and > 0. Re-estimate the covariance or drop the asset."
        )
    inv_vol = 1.0 / np.sqrt(variances)
    return inv_vol / inv_vol.sum()


def equal_weights(n: int) -> FloatArray:
    """Equal weights :math:`w_i = 1/n`.

    Parameters
    ----------
    n : int
        Number of assets, ``>= 1``.

    Returns
    -------
    FloatArray, shape (n,)

    Raises
    ------
    ConfigError
        If ``n`` is not a positive integer.
    """
    if isinstance(n, bool) or int(n) != n or n < 1:
        raise ConfigError(f"n is {n!r}; the number of assets must be an integer >= 1.")
    return np.full(int(n), 1.0 / int(n))


# --------------------------------------------------------------------------- #
# Constrained risk budgeting (per-asset weight bounds)
# --------------------------------------------------------------------------- #
# Relative bound tolerance when validating ``bounds`` (sum l <= 1 <= sum u).
_BOUNDS_SUM_ATOL = 1e-12
# Outer root finding on ln(lambda): stop when |sum(x) - 1| is below this.  The inner
# solves are exact to ~1e-13 relative, so the sum is not known better; the final
# renormalisation of the free assets moves their risk contributions by O(1e-12) at most.
_SUM_TOL = 1e-12
_MAX_OUTER = 100
# Bracket expansion factor on ln(lambda) and the range searched before giving up.
_LOG_LAMBDA_STEP = math.log(16.0)
_LOG_LAMBDA_RANGE = 120.0
# Largest radius of the epsilon-active set of the projected Newton method [5].
_ACTIVE_EPSILON = 1e-6


def _validate_bounds(
    bounds: tuple[npt.ArrayLike, npt.ArrayLike] | None, n: int
) -> tuple[FloatArray, FloatArray] | None:
    """Return ``(lower, upper)`` as float arrays of shape (n,), checked; ``None`` if unbounded."""
    if bounds is None:
        return None
    try:
        lower_in, upper_in = bounds
    except (TypeError, ValueError):
        raise ConfigError(
            f"bounds is {bounds!r}; it must be a pair (lower, upper) of scalars or "
            f"arrays of shape ({n},), weights of the fully invested risky sleeve."
        ) from None
    lower = np.broadcast_to(np.asarray(lower_in, dtype=np.float64), (n,)).copy() if np.ndim(
        lower_in
    ) == 0 else np.asarray(lower_in, dtype=np.float64).copy()
    upper = np.broadcast_to(np.asarray(upper_in, dtype=np.float64), (n,)).copy() if np.ndim(
        upper_in
    ) == 0 else np.asarray(upper_in, dtype=np.float64).copy()
    for name, arr in (("lower", lower), ("upper", upper)):
        if arr.shape != (n,):
            raise ConfigError(
                f"{name} bound has shape {arr.shape}; expected ({n},) or a scalar, "
                "one entry per asset of the covariance."
            )
    bad = ~(np.isfinite(lower) & (lower >= 0.0))
    if bad.any():
        i = int(np.argmax(bad))
        raise ConfigError(
            f"lower bound of asset {i} is {lower[i]!r}; lower bounds must be finite "
            "and >= 0 (the risky sleeve is long-only)."
        )
    bad = np.isnan(upper) | (upper < lower)
    if bad.any():
        i = int(np.argmax(bad))
        raise ConfigError(
            f"upper bound of asset {i} is {upper[i]!r} with lower bound {lower[i]!r}; "
            "each upper bound must be >= its lower bound (inf allowed)."
        )
    if not (upper > 0.0).all():
        i = int(np.argmax(~(upper > 0.0)))
        raise ConfigError(
            f"upper bound of asset {i} is {upper[i]!r}; it must be > 0 (risk budgeting "
            "holds every asset with a positive weight): drop the asset instead."
        )
    low_sum, high_sum = float(lower.sum()), float(upper.sum())
    if low_sum > 1.0 + _BOUNDS_SUM_ATOL or high_sum < 1.0 - _BOUNDS_SUM_ATOL:
        raise ConfigError(
            f"bounds admit no fully invested sleeve: sum of lower bounds {low_sum!r} and "
            f"sum of upper bounds {high_sum!r} must satisfy sum(lower) <= 1 <= sum(upper). "
            "Loosen the per-asset bounds."
        )
    return lower, upper


def bounded_normalise(
    scores: npt.ArrayLike, lower: npt.ArrayLike, upper: npt.ArrayLike
) -> FloatArray:
    """Scale positive scores to weights within bounds that sum to one.

    Returns :math:`w_i = \\mathrm{clip}(c\\, v_i, l_i, u_i)` with the unique
    :math:`c > 0` (up to flat pieces) such that :math:`\\sum_i w_i = 1`: the
    map :math:`c \\mapsto \\sum_i \\mathrm{clip}(c v_i, l_i, u_i)` is continuous,
    non-decreasing and piecewise linear, so :math:`c` is found exactly on the
    segment between two breakpoints :math:`l_i/v_i, u_i/v_i`.  Used to put the
    inverse-volatility fallback within the same bounds as the solver.

    Parameters
    ----------
    scores : array_like, shape (n,)
        Positive, finite scores :math:`v` (e.g. inverse volatilities).
    lower, upper : array_like, shape (n,)
        Bounds with :math:`0 \\le l \\le u`, :math:`\\sum l \\le 1 \\le \\sum u`.

    Returns
    -------
    FloatArray, shape (n,)
        Weights in ``[lower, upper]`` summing to 1 (to rounding).

    Raises
    ------
    ConfigError
        If shapes differ, scores are not positive and finite, or the bounds
        admit no fully invested vector.
    """
    v = np.asarray(scores, dtype=np.float64)
    n = v.size
    checked = _validate_bounds((lower, upper), n)
    assert checked is not None
    lo, hi = checked
    if v.shape != (n,) or not (np.isfinite(v).all() and (v > 0.0).all()):
        raise ConfigError(f"scores {v!r} must be a vector of positive finite numbers.")
    breakpoints = np.unique(np.concatenate([lo / v, hi[np.isfinite(hi)] / v[np.isfinite(hi)]]))
    totals = np.clip(np.outer(breakpoints, v), lo, hi).sum(axis=1)
    k = int(np.searchsorted(totals, 1.0))  # first breakpoint with total >= 1
    if k < totals.size and totals[k] == 1.0:
        c = float(breakpoints[k])
    elif k == 0:  # cannot happen: the first breakpoint has total <= sum(l) <= 1
        c = float(breakpoints[0])
    elif k == totals.size:
        # Beyond the last finite breakpoint only infinite upper bounds still move.
        c_last = float(breakpoints[-1])
        slope = float(v[~np.isfinite(hi)].sum())
        c = c_last + (1.0 - float(totals[-1])) / slope
    else:
        c0, c1 = float(breakpoints[k - 1]), float(breakpoints[k])
        t0, t1 = float(totals[k - 1]), float(totals[k])
        c = c0 + (1.0 - t0) * (c1 - c0) / (t1 - t0)
    w = np.clip(c * v, lo, hi)
    free = (w > lo) & (w < hi)
    if free.any():  # absorb the rounding of the sum in the assets inside their bounds
        w[free] *= (1.0 - float(w[~free].sum())) / float(w[free].sum())
        w = np.clip(w, lo, hi)
    return w


def _box_objective(corr: FloatArray, lb: FloatArray, y: FloatArray) -> float:
    if not float(_min(y)) > 0.0:
        return math.inf
    return 0.5 * float(_dot(y, corr.dot(y))) - float(_dot(lb, np.log(y)))


def _box_newton(
    corr: FloatArray,
    b: FloatArray,
    lam: float,
    lo: FloatArray,
    hi: FloatArray,
    y: FloatArray,
    tol: float,
    max_iter: int,
    min_iter: int = 0,
) -> tuple[FloatArray, int, FloatArray, FloatArray, float]:
    """Minimise :math:`\\tfrac12 y^\\top C y - \\lambda b^\\top\\ln y` over ``lo <= y <= hi``.

    Projected Newton method of Bertsekas [5]_: the epsilon-active set (assets
    within ``eps`` of a bound whose gradient pushes them out of the box) is
    held by a diagonally scaled gradient step, the others take the Newton step
    of the reduced Hessian :math:`C_{FF} + \\mathrm{diag}(\\lambda b/y^2)_F`;
    Armijo backtracking along the projection arc, the full step once the
    reduced (self-concordant) Newton decrement is below 1/4.  ``lo`` may be
    zero: the log barrier keeps :math:`y > 0` and such a bound never binds.

    At least ``min_iter`` steps are taken even when ``y`` already meets ``tol``: a
    warm start for a new ``lam`` can meet the residual test while ``y`` is still
    off by more than the outer iteration can resolve in ``sum(y / vols)``.

    Returns ``(y, iterations, at_lower, at_upper, residual)`` where the masks
    mark the assets exactly at a bound and ``residual`` is
    :math:`\\max_F |y_i g_i| / y^\\top C y` (:math:`g` the gradient): the
    relative risk contribution error of the free assets.
    """
    lb = lam * b
    has_lo = lo > 0.0
    min_lb = float(lb.min())
    best = (math.inf, y, np.zeros(y.size, bool), np.zeros(y.size, bool))
    stalls = 0
    for iteration in range(max_iter + 1):
        cy = corr.dot(y)
        g = cy - lb / y
        step_measure = float(np.abs(y - np.clip(y - g, lo, hi)).max())
        eps = min(_ACTIVE_EPSILON * float(y.max()), step_measure)
        at_lo = has_lo & (y <= lo + eps) & (g > 0.0)
        at_hi = (y >= hi - eps) & (g < 0.0)
        active = at_lo | at_hi
        free = ~active
        variance = float(_dot(y, cy))
        residual = float(_max(np.abs(y[free] * g[free]), initial=0.0)) / variance
        exact = bool(np.all(y[at_lo] == lo[at_lo]) and np.all(y[at_hi] == hi[at_hi]))
        if exact and residual <= tol and iteration >= min_iter:
            return y, iteration, at_lo, at_hi, residual
        if exact:
            if residual < best[0]:
                best, stalls = (residual, y, at_lo, at_hi), 0
            else:
                stalls += 1
                if stalls >= _MAX_STALLS:
                    break
        if iteration == max_iter:
            break
        d = np.empty_like(y)
        hess_diag = 1.0 + lb / (y * y)
        d[active] = g[active] / hess_diag[active]
        idx = np.flatnonzero(free)
        decrement2 = 0.0
        if idx.size:
            h = corr[np.ix_(idx, idx)]
            h.reshape(-1)[:: idx.size + 1] = hess_diag[idx]
            d_free = _newton_system(h, g[idx])
            d[idx] = d_free
            decrement2 = float(_dot(g[idx], d_free))
        lambda_scaled = math.sqrt(max(decrement2, 0.0) / min_lb)
        if lambda_scaled < _QUADRATIC_REGION:
            y_new = np.clip(y - d, lo, hi)
            if float(_min(y_new)) > 0.0:
                y = y_new
                continue
        f_y = _box_objective(corr, lb, y)
        t = 1.0
        while True:
            y_try = np.clip(y - t * d, lo, hi)
            f_try = _box_objective(corr, lb, y_try)
            predicted = t * decrement2 + float(_dot(g[active], y[active] - y_try[active]))
            if f_try <= f_y - 1e-4 * predicted or t < 1e-12:
                break
            t *= 0.5
        if t < 1e-12:  # no descent at machine precision: round-off floor
            break
        y = y_try
    residual, y, at_lo, at_hi = best
    return y, max_iter, at_lo, at_hi, residual


def _solve_bounded(
    cov: FloatArray,
    b: FloatArray,
    lower: FloatArray,
    upper: FloatArray,
    tol: float,
    max_iter: int,
    unconstrained: TargetWeights,
) -> tuple[FloatArray, int, FloatArray, FloatArray]:
    """Constrained risk budgeting (Richard & Roncalli [6]_), see :func:`solve_risk_budgeting`.

    ``unconstrained`` is :func:`solve_equal_risk_contribution`'s solution for
    the same covariance and budget, outside the bounds.  Returns the weights
    (in bounds, summing to 1), the total number of iterations (those of the
    unconstrained solve plus the inner Newton iterations) and the lower /
    upper active masks.
    """
    n = b.size
    vols = np.sqrt(cov.diagonal())
    corr = cov / (vols[:, None] * vols)
    corr.reshape(-1)[:: n + 1] = 1.0
    inv_vols = 1.0 / vols

    floor_tol = max(tol, _ROUNDOFF_ACCEPT)
    iterations = unconstrained.iterations
    # Spinu's solution x0 = w0 / sigma(w0) has x0'Σx0 = 1, hence sum(x0) = 1 / sigma(w0).
    w0 = unconstrained.weights
    s0 = 1.0 / unconstrained.portfolio_volatility
    no_mask = np.zeros(n, dtype=bool)
    # Degenerate boxes: the bounds alone pin the sleeve.
    if float(lower.sum()) >= 1.0 - _BOUNDS_SUM_ATOL:
        return lower / float(lower.sum()), iterations, lower > 0.0, no_mask
    if float(upper.sum()) <= 1.0 + _BOUNDS_SUM_ATOL:
        return upper / float(upper.sum()), iterations, no_mask, np.ones(n, dtype=bool)

    lo, hi = lower * vols, upper * vols  # bounds in correlation space, y = vols * x
    # Unconstrained: y(lambda) = sqrt(lambda) y0, so lambda = 1/s0^2 gives sum(x) = 1.
    log_lam = -2.0 * math.log(s0)
    y = np.clip(w0 * vols, lo, hi)  # = y0 / s0 in correlation space
    bracket_lo, bracket_hi = -math.inf, math.inf  # ln(lambda) with sum(x) < 1 / > 1
    origin = log_lam
    inner_tol = max(0.1 * tol, 1e-15)
    for outer in range(_MAX_OUTER):
        lam = math.exp(log_lam)
        y, inner_iterations, at_lo, at_hi, residual = _box_newton(
            corr, b, lam, lo, hi, y, inner_tol, max_iter, min_iter=1 if outer else 0
        )
        iterations += inner_iterations
        total = float(_dot(y, inv_vols))
        gap = total - 1.0
        if abs(gap) <= _SUM_TOL:
            break
        if gap < 0.0:
            bracket_lo = max(bracket_lo, log_lam)
        else:
            bracket_hi = min(bracket_hi, log_lam)
        # Newton on ln(sum x) in ln(lambda): d y_F / d lambda = H_FF^{-1} (b_F / y_F).
        free = ~(at_lo | at_hi)
        idx = np.flatnonzero(free)
        slope = 0.0
        if idx.size:
            h = corr[np.ix_(idx, idx)]
            h.reshape(-1)[:: idx.size + 1] = 1.0 + lam * b[idx] / (y[idx] * y[idx])
            dy = _newton_system(h, b[idx] / y[idx])
            slope = lam * float(_dot(inv_vols[idx], dy)) / total
        step = -math.log(total) / slope if slope > 0.0 else math.nan
        candidate = log_lam + step
        bracketed = math.isfinite(bracket_lo) and math.isfinite(bracket_hi)
        if bracketed:
            if not (math.isfinite(candidate) and bracket_lo < candidate < bracket_hi):
                candidate = 0.5 * (bracket_lo + bracket_hi)  # bisection
        elif not (math.isfinite(step) and abs(step) <= _LOG_LAMBDA_STEP) or not (
            bracket_lo < candidate < bracket_hi
        ):
            # Expand towards the root by a bounded factor (the slope may be tiny).
            candidate = log_lam + (_LOG_LAMBDA_STEP if gap < 0.0 else -_LOG_LAMBDA_STEP)
        if abs(candidate - origin) > _LOG_LAMBDA_RANGE:
            raise SolverDidNotConvergeError(
                "constrained risk budgeting has no solution: no fully invested sleeve within "
                "the bounds gives every asset a positive marginal risk (the bounded solution "
                f"sums to {total!r} at lambda = e^{log_lam:.1f}, not 1); the lower bounds force "
                "holdings that other assets must hedge. Loosen the lower bounds."
            )
        if bracketed and candidate in (log_lam, bracket_lo, bracket_hi):
            break  # bracket exhausted at float resolution: the sum is normalised below
        # Warm start: free assets scale like sqrt(lambda) (exact without bounds).
        y = y.copy()
        y[free] *= math.exp(0.5 * (candidate - log_lam))
        y = np.clip(y, lo, hi)
        log_lam = candidate
    else:
        raise SolverDidNotConvergeError(
            f"constrained risk budgeting: sum of sleeve weights {total!r} after {_MAX_OUTER} "
            "outer iterations; expected 1. Loosen the bounds or improve the covariance "
            "conditioning."
        )
    if not residual <= max(tol, floor_tol):
        raise SolverDidNotConvergeError(
            f"constrained risk budgeting: the free assets' max |RRC - kappa b| is "
            f"{residual:.3e} after {iterations} iteration(s); the tolerance is {tol:.1e} "
            f"(accepted up to {floor_tol:.1e}) with max_iter={max_iter}. Increase max_iter "
            "or improve the covariance conditioning."
        )
    w = y * inv_vols
    w[at_lo] = lower[at_lo]  # exactly at the bound (y / vols may be off by an ulp)
    w[at_hi] = upper[at_hi]
    free = ~(at_lo | at_hi)
    if free.any():
        w[free] *= (1.0 - float(w[~free].sum())) / float(w[free].sum())
    w = np.clip(w, lower, upper)
    return w, iterations, at_lo, at_hi


def solve_risk_budgeting(
    covariance: npt.ArrayLike,
    risk_budget: npt.ArrayLike | None = None,
    bounds: tuple[npt.ArrayLike, npt.ArrayLike] | None = None,
    tol: float = 1e-12,
    max_iter: int = 100,
) -> TargetWeights:
    """Risk-budgeting weights of a fully invested sleeve, optionally within weight bounds.

    Without ``bounds`` this is :func:`solve_equal_risk_contribution`
    (:math:`RRC_i = b_i` exactly).  With bounds
    :math:`l_i \\le w_i \\le u_i` the budget may be unattainable; we return
    the *constrained risk-budgeting portfolio* of Richard & Roncalli [6]_:

    .. math::

        y^*(\\lambda) = \\arg\\min_{l \\le y \\le u}\\ \\tfrac12 y^\\top\\Sigma y
            - \\lambda \\textstyle\\sum_i b_i \\ln y_i, \\qquad
        w = y^*(\\lambda^*) \\ \\text{with}\\ \\textstyle\\sum_i y^*_i(\\lambda^*) = 1.

    The bounds are imposed on :math:`y` *before* the budget constraint is
    met through :math:`\\lambda`, instead of normalising afterwards (which
    would break the bounds).  The KKT conditions characterise the result:
    with :math:`\\kappa = \\lambda^* / w^\\top\\Sigma w`,

    * assets strictly inside their bounds: :math:`RRC_i = \\kappa b_i` -- the
      budget is met *relative to each other* exactly;
    * assets at their lower bound: :math:`RRC_i \\ge \\kappa b_i` (they would
      be cut further);
    * assets at their upper bound: :math:`RRC_i \\le \\kappa b_i` (they would
      be bought more).

    The unconstrained solution is returned unchanged when it lies in the
    bounds.  Solved by a projected Newton method [5]_ (inner) and safeguarded
    Newton on :math:`\\ln\\lambda` (outer; :math:`\\partial y_F/\\partial\\lambda
    = H_{FF}^{-1}(b_F/y_F)`), in correlation space like the unbounded solver.

    Parameters
    ----------
    covariance : array_like, shape (n, n)
        Covariance :math:`\\Sigma`, as for :func:`solve_equal_risk_contribution`.
    risk_budget : array_like, shape (n,), optional
        Budget :math:`b > 0` summing to 1 (default equal).
    bounds : (lower, upper), optional
        Per-asset bounds on the sleeve weights (fractions of the sleeve, which
        sums to 1): scalars or arrays of shape (n,), :math:`0 \\le l_i \\le
        u_i` (``inf`` allowed), :math:`\\sum l \\le 1 \\le \\sum u`,
        :math:`u_i > 0`.
    tol : float, default 1e-12
        Target of :math:`\\max_{i\\in F}|RRC_i - \\kappa b_i|` (free assets).
    max_iter : int, default 100
        Maximum Newton iterations of each inner solve.

    Returns
    -------
    TargetWeights
        With ``lower_bound_active``, ``upper_bound_active`` and
        ``max_free_budget_error`` filled in.

    Raises
    ------
    SingularCovarianceError
        Invalid covariance (see :func:`solve_equal_risk_contribution`).
    ConfigError
        Invalid budget, bounds (wrong shape, negative or NaN, ``u < l``,
        :math:`\\sum l > 1` or :math:`\\sum u < 1`), ``tol`` or ``max_iter``.
    SolverDidNotConvergeError
        If a Newton solve stalls above tolerance, or no :math:`\\lambda`
        gives a fully invested sleeve (possible only when lower bounds force
        assets that hedge each other, i.e. some marginal risk is negative).

    References
    ----------
    .. [5] D. P. Bertsekas, "Projected Newton methods for optimization
       problems with simple constraints", SIAM J. Control Optim. 20(2), 1982.
    .. [6] E. Richard, T. Roncalli, "Constrained risk budgeting portfolios:
       theory, algorithms, applications & puzzles", arXiv:1902.05710, 2019.
    """
    if bounds is None:
        return solve_equal_risk_contribution(covariance, risk_budget, tol, max_iter)
    if not (tol > 0.0 and math.isfinite(tol)):
        raise ConfigError(f"tol is {tol!r}; it must be finite and > 0 (default 1e-12).")
    if isinstance(max_iter, bool) or int(max_iter) != max_iter or max_iter < 1:
        raise ConfigError(f"max_iter is {max_iter!r}; it must be an integer >= 1 (default 100).")
    cov = _validate_covariance(covariance)
    n = cov.shape[0]
    b = _validate_budget(risk_budget, n)
    checked = _validate_bounds(bounds, n)
    assert checked is not None
    lower, upper = checked
    # The original arguments: the very same call as without bounds, so that bounds that do
    # not bind return exactly its result.
    unconstrained = solve_equal_risk_contribution(covariance, risk_budget, tol, max_iter)
    if bool(np.all(unconstrained.weights >= lower) and np.all(unconstrained.weights <= upper)):
        return unconstrained  # the bounds do not bind
    w, iterations, at_lo, at_hi = _solve_bounded(
        cov, b, lower, upper, float(tol), int(max_iter), unconstrained
    )
    sigma_w = cov @ w
    variance = float(w @ sigma_w)
    sigma = math.sqrt(variance)
    rrc = w * sigma_w / variance
    free = ~(at_lo | at_hi)
    if free.any():
        kappa = float(rrc[free].sum()) / float(b[free].sum())
        free_error = float(np.max(np.abs(rrc[free] - kappa * b[free])))
    else:
        free_error = math.nan
    return TargetWeights(
        weights=_freeze(w),
        risk_budget=_freeze(b),
        risk_contributions=_freeze(rrc * sigma),
        relative_risk_contributions=_freeze(rrc),
        portfolio_volatility=sigma,
        iterations=iterations,
        max_budget_error=float(np.max(np.abs(rrc - b))),
        lower_bound_active=tuple(int(i) for i in np.flatnonzero(at_lo)),
        upper_bound_active=tuple(int(i) for i in np.flatnonzero(at_hi)),
        max_free_budget_error=free_error,
    )


# --------------------------------------------------------------------------- #
# Allocation: risky sleeve, cash sleeve, volatility target, fallback chain
# --------------------------------------------------------------------------- #
METHOD_RISK_BUDGETING = "risk_budgeting"
METHOD_INVERSE_VOLATILITY = "inverse_volatility"
METHOD_PREVIOUS = "previous"
METHOD_EQUAL_WEIGHT = "equal_weight"
_ALLOCATORS = (METHOD_RISK_BUDGETING, METHOD_INVERSE_VOLATILITY, METHOD_EQUAL_WEIGHT)
# Slack on the sum of previous weights (they come from on-chain balances).
_PREVIOUS_SUM_ATOL = 1e-9


@dataclass(frozen=True, eq=False)  # arrays: identity equality, no ambiguous ==
class Allocation:
    """Target of one tick: risky weights, cash weight and how they were obtained.

    All weights are fractions of NAV; the cash (base asset) sleeve has zero
    volatility and zero correlation with the risky assets.  Arrays are
    read-only.

    Attributes
    ----------
    weights : FloatArray, shape (n,)
        Risky weights :math:`\\mathrm{scale} \\cdot w^{sleeve}`, each >= 0,
        summing to ``gross_exposure``.
    cash_weight : float
        :math:`1 - \\sum_i` ``weights``, in [0, 1].
    sleeve_weights : FloatArray, shape (n,)
        Fully invested risky sleeve (sums to 1) before scaling.
    scale : float
        Leverage applied to the sleeve, :math:`\\mathrm{scale} = \\sum_i`
        ``weights`` (``<= max_gross_exposure <= 1``: the vault never borrows).
    gross_exposure : float
        Same number as ``scale``, under its risk-report name.
    volatility : float
        Ex-ante volatility of the whole portfolio,
        :math:`\\mathrm{scale}\\cdot\\sigma(w^{sleeve})`, in the covariance's
        unit (annualised if it is); ``nan`` if the covariance could not give
        one (``method == "previous"`` only).
    sleeve_volatility : float
        :math:`\\sigma(w^{sleeve}) = \\sqrt{w^\\top\\Sigma w}` (``nan`` as above).
    volatility_target : float or None
        The requested target (annualised if the covariance is).
    capped : bool
        ``True`` when a target was set but the scale hit the cap
        ``min(max_gross_exposure, 1 - min_cash_weight)``, so ``volatility`` is
        below the target.  ``False`` when the target is met (or no target).
    method : str
        ``"risk_budgeting"``, ``"inverse_volatility"``, ``"equal_weight"``
        (only when chosen as ``allocator``) or ``"previous"``.
    fallback_reasons : tuple of str
        One ``"<method>: <ErrorClass>: <message>"`` per method that failed
        before ``method`` succeeded (empty when risk budgeting succeeded).
    risk_budget : FloatArray, shape (n,)
        Budget targeted (normalised).
    relative_risk_contributions : FloatArray, shape (n,)
        :math:`RRC_i` of the sleeve (identical for the scaled portfolio);
        ``nan`` entries when no volatility is available.
    max_budget_error : float
        :math:`\\max_i |RRC_i - b_i|` (``nan`` when not computable).
    iterations : int
        Newton iterations of the risk-budgeting solve (0 for a fallback).
    lower_bound_active, upper_bound_active : tuple of int
        Sleeve assets held at their lower / upper bound.
    """

    weights: FloatArray
    cash_weight: float
    sleeve_weights: FloatArray
    scale: float
    gross_exposure: float
    volatility: float
    sleeve_volatility: float
    volatility_target: float | None
    capped: bool
    method: str
    fallback_reasons: tuple[str, ...]
    risk_budget: FloatArray
    relative_risk_contributions: FloatArray
    max_budget_error: float
    iterations: int
    lower_bound_active: tuple[int, ...] = ()
    upper_bound_active: tuple[int, ...] = ()


def _positive_finite(name: str, value: float, default_hint: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise ConfigError(f"{name} is {value!r}; it must be a real number ({default_hint}).")
    value = float(value)
    if not (math.isfinite(value) and value > 0.0):
        raise ConfigError(f"{name} is {value!r}; it must be finite and > 0 ({default_hint}).")
    return value


def _sleeve_risk(
    sleeve: FloatArray, cov: FloatArray, budget: FloatArray
) -> tuple[float, FloatArray, float]:
    """Volatility, RRC and max |RRC - b| of a sleeve; raises if the variance is not > 0."""
    sigma_w = cov @ sleeve
    variance = float(sleeve @ sigma_w)
    if not (variance > 0.0 and math.isfinite(variance)):
        raise SingularCovarianceError(
            f"sleeve variance w'Σw is {variance!r}; it must be finite and > 0 to size "
            "the sleeve. Re-estimate the covariance."
        )
    rrc = sleeve * sigma_w / variance
    return math.sqrt(variance), rrc, float(np.max(np.abs(rrc - budget)))


def _bound_indices(
    sleeve: FloatArray, bounds: tuple[FloatArray, FloatArray] | None
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    if bounds is None:
        return (), ()
    lower, upper = bounds
    at_lower = np.flatnonzero((sleeve == lower) & (lower > 0.0))
    return tuple(int(i) for i in at_lower), tuple(int(i) for i in np.flatnonzero(sleeve == upper))


def _reason(method: str, error: Exception) -> str:
    return f"{method}: {type(error).__name__}: {error}"


def allocate(
    covariance: npt.ArrayLike,
    risk_budget: npt.ArrayLike | None = None,
    bounds: tuple[npt.ArrayLike, npt.ArrayLike] | None = None,
    volatility_target: float | None = None,
    max_gross_exposure: float = 1.0,
    min_cash_weight: float = 0.0,
    previous_weights: npt.ArrayLike | None = None,
    tol: float = 1e-12,
    max_iter: int = 100,
    allocator: str = METHOD_RISK_BUDGETING,
) -> Allocation:
    """Risky sleeve by risk budgeting, scaled to a volatility target, rest in cash.

    1. **Sleeve.**  :func:`solve_risk_budgeting` (Spinu's Newton method;
       Richard & Roncalli's constrained portfolio when ``bounds`` bind) gives
       fully invested weights :math:`w^{s}`, :math:`\\sum_i w^s_i = 1`.
    2. **Scale.**  With :math:`\\sigma_s = \\sqrt{w^{s\\top}\\Sigma w^s}` and
       cap :math:`c = \\min(\\text{max\\_gross\\_exposure}, 1 -
       \\text{min\\_cash\\_weight})`:

       .. math:: \\mathrm{scale} = \\min(\\sigma^* / \\sigma_s,\\ c)
          \\quad(\\text{or } c \\text{ without a target } \\sigma^*),

       risky weights :math:`\\mathrm{scale}\\cdot w^s`, cash
       :math:`1 - \\mathrm{scale}`.  The ex-ante volatility
       :math:`\\mathrm{scale}\\cdot\\sigma_s` equals the target (to rounding)
       unless capped; cash carries no risk, so risk contributions *relative*
       to the portfolio volatility are those of the sleeve.
    3. **Fallback chain.**  If the solver fails (non-convergence, singular or
       non-finite covariance, non-finite result), the failure is recorded in
       ``fallback_reasons`` and the sleeve becomes the inverse-volatility
       weights (put within ``bounds`` by :func:`bounded_normalise`), scaled
       the same way.  If that fails too (a variance that is not finite and
       positive, or no finite sleeve volatility), ``previous_weights`` are
       returned unchanged (cash = 1 - their sum).  Configuration errors are
       never absorbed by the chain: they are raised.

    Parameters
    ----------
    covariance : array_like, shape (n, n)
        Covariance of the risky assets' simple returns, annualised (365-day
        year) in the keeper; ``volatility_target`` must be in the same unit.
    risk_budget : array_like, shape (n,), optional
        Risk budget :math:`b > 0`, sums to 1 (default equal).
    bounds : (lower, upper), optional
        Per-asset bounds on the *sleeve* weights (see
        :func:`solve_risk_budgeting`).
    volatility_target : float, optional
        Target ex-ante volatility :math:`\\sigma^*` (e.g. ``0.40`` for 40 % a
        year with an annualised covariance), finite and > 0.
    max_gross_exposure : float, default 1.0
        Cap on :math:`\\sum_i` weights, in (0, 1] (no borrowing).
    min_cash_weight : float, default 0.0
        Floor on the cash weight, in [0, 1).
    previous_weights : array_like, shape (n,), optional
        Risky weights currently held (fractions of NAV, >= 0, sum <= 1): the
        last resort of the fallback chain.
    tol, max_iter
        Passed to :func:`solve_risk_budgeting`.
    allocator : str, default ``"risk_budgeting"``
        First method of the chain.  The baselines ``"inverse_volatility"``
        (chain: inverse volatility, previous) and ``"equal_weight"``
        (:math:`w^s_i = 1/n` within the bounds; chain: equal weight,
        previous) get the same scaling and cash sleeve, for backtests.

    Returns
    -------
    Allocation

    Raises
    ------
    ConfigError
        Covariance not a square (n, n) array; invalid budget, bounds, target,
        exposure cap, cash floor, previous
        weights (shape, sign, finiteness, sum > 1), ``tol``, ``max_iter`` or
        ``allocator``.
    AllocationFailedError
        Every method of the chain failed (no ``previous_weights`` given); the
        message lists each failure.
    """
    if volatility_target is not None:
        volatility_target = _positive_finite(
            "volatility_target", volatility_target, "annualised, e.g. 0.4 for 40 %/year"
        )
    max_gross_exposure = _positive_finite("max_gross_exposure", max_gross_exposure, "in (0, 1]")
    if max_gross_exposure > 1.0:
        raise ConfigError(
            f"max_gross_exposure is {max_gross_exposure!r}; it must be <= 1: the vault does "
            "not borrow."
        )
    if isinstance(min_cash_weight, bool) or not (
        isinstance(min_cash_weight, (int, float, np.floating, np.integer))
        and 0.0 <= float(min_cash_weight) < 1.0
    ):
        raise ConfigError(f"min_cash_weight is {min_cash_weight!r}; it must be in [0, 1).")
    cap = min(max_gross_exposure, 1.0 - float(min_cash_weight))
    if allocator not in _ALLOCATORS:
        raise ConfigError(f"allocator is {allocator!r}; it must be one of {_ALLOCATORS}.")
    if not (tol > 0.0 and math.isfinite(tol)):
        raise ConfigError(f"tol is {tol!r}; it must be finite and > 0 (default 1e-12).")
    if isinstance(max_iter, bool) or int(max_iter) != max_iter or max_iter < 1:
        raise ConfigError(f"max_iter is {max_iter!r}; it must be an integer >= 1 (default 100).")

    cov = np.asarray(covariance, dtype=np.float64)
    if cov.ndim != 2 or cov.shape[0] != cov.shape[1] or cov.shape[0] == 0:
        raise ConfigError(
            f"covariance has shape {cov.shape}; it must be a non-empty square (n, n) matrix."
        )
    n = cov.shape[0]
    budget = _validate_budget(risk_budget, n)
    checked_bounds = _validate_bounds(bounds, n)
    previous = None
    if previous_weights is not None:
        previous = np.asarray(previous_weights, dtype=np.float64)
        if previous.shape != (n,):
            raise ConfigError(
                f"previous_weights has shape {previous.shape}; expected ({n},)."
            )
        total = float(previous.sum())
        if not (np.isfinite(previous).all() and (previous >= 0.0).all()) or not (
            total <= 1.0 + _PREVIOUS_SUM_ATOL
        ):
            raise ConfigError(
                f"previous_weights {previous.tolist()} must be finite, >= 0 and sum to at "
                f"most 1 (sum {total!r}): they are fractions of NAV held in risky assets."
            )

    def finish(
        sleeve: FloatArray,
        method: str,
        iterations: int,
        bound_indices: tuple[tuple[int, ...], tuple[int, ...]],
    ) -> Allocation:
        sigma, rrc, error = _sleeve_risk(sleeve, cov, budget)
        scale, capped = cap, False
        if volatility_target is not None and volatility_target / sigma <= cap:
            scale = volatility_target / sigma
        elif volatility_target is not None:
            capped = True
        return _allocation(
            sleeve, scale, sigma, volatility_target, capped, method, reasons, budget, rrc,
            error, iterations, *bound_indices,
        )

    def risk_budgeting() -> Allocation:
        result = solve_risk_budgeting(cov, budget, checked_bounds, tol, max_iter)
        sleeve = np.array(result.weights)
        if not np.isfinite(sleeve).all():
            raise SolverDidNotConvergeError(
                f"risk-budgeting weights are not finite: {sleeve.tolist()}."
            )
        active = (result.lower_bound_active, result.upper_bound_active)
        return finish(sleeve, METHOD_RISK_BUDGETING, result.iterations, active)

    def baseline(method: str) -> Allocation:
        if method == METHOD_EQUAL_WEIGHT:
            sleeve = equal_weights(n)
        else:
            sleeve = inverse_volatility_weights(cov)
        if checked_bounds is not None:
            sleeve = bounded_normalise(sleeve, *checked_bounds)
        return finish(sleeve, method, 0, _bound_indices(sleeve, checked_bounds))

    chain: tuple[tuple[str, Callable[[], Allocation]], ...]
    if allocator == METHOD_RISK_BUDGETING:
        chain = (
            (METHOD_RISK_BUDGETING, risk_budgeting),
            (METHOD_INVERSE_VOLATILITY, lambda: baseline(METHOD_INVERSE_VOLATILITY)),
        )
    else:
        chain = ((allocator, lambda: baseline(allocator)),)
    reasons: list[str] = []
    for method, attempt in chain:
        try:
            return attempt()
        except (SingularCovarianceError, SolverDidNotConvergeError) as exc:
            reasons.append(_reason(method, exc))
    # 3. Previous weights, unchanged.
    if previous is None:
        raise AllocationFailedError(
            "every allocation method failed and no previous weights were given: "
            + " | ".join(reasons)
            + ". Keep the current holdings and repair the covariance estimate."
        )
    gross = float(previous.sum())
    sleeve = previous / gross if gross > 0.0 else np.full(n, math.nan)
    try:
        sigma, rrc, error = _sleeve_risk(sleeve, cov, budget)
    except SingularCovarianceError:
        sigma, rrc, error = math.nan, np.full(n, math.nan), math.nan
    return _allocation(
        sleeve, gross, sigma, volatility_target, False, METHOD_PREVIOUS, reasons, budget, rrc,
        error, 0, (), (), weights=previous.copy(),
    )


def _allocation(
    sleeve: FloatArray,
    scale: float,
    sigma: float,
    volatility_target: float | None,
    capped: bool,
    method: str,
    reasons: list[str],
    budget: FloatArray,
    rrc: FloatArray,
    error: float,
    iterations: int,
    lower_idx: tuple[int, ...],
    upper_idx: tuple[int, ...],
    weights: FloatArray | None = None,
) -> Allocation:
    risky = scale * sleeve if weights is None else weights
    return Allocation(
        weights=_freeze(risky),
        # Exactly 1 - scale (the sum of the risky weights may differ by an ulp).
        cash_weight=max(0.0, 1.0 - float(scale)),
        sleeve_weights=_freeze(np.array(sleeve)),
        scale=float(scale),
        gross_exposure=float(scale),
        volatility=float(scale) * sigma,
        sleeve_volatility=sigma,
        volatility_target=volatility_target,
        capped=capped,
        method=method,
        fallback_reasons=tuple(reasons),
        risk_budget=_freeze(np.array(budget)),
        relative_risk_contributions=_freeze(np.array(rrc)),
        max_budget_error=error,
        iterations=iterations,
        lower_bound_active=lower_idx,
        upper_bound_active=upper_idx,
    )
