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
equation (and gives :math:`x^{*\\top}\\Sigma x^* = \\sum_i b_i = 1`).  We run a
damped Newton method on :math:`f` with gradient :math:`\\Sigma x - b/x` and
Hessian :math:`\\Sigma + \\mathrm{diag}(b/x^2)`.

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
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.linalg.lapack import dposv as _lapack_dposv
from scipy.linalg.lapack import dpotrf as _lapack_dpotrf

from keeper.errors import (
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
    "inverse_volatility_weights",
    "equal_weights",
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
        Newton iterations performed.
    max_budget_error : float
        :math:`\\max_i |RRC_i - b_i|` evaluated at ``weights``.
    """

    weights: FloatArray
    risk_budget: FloatArray
    risk_contributions: FloatArray
    relative_risk_contributions: FloatArray
    portfolio_volatility: float
    iterations: int
    max_budget_error: float


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


def solve_equal_risk_contribution(
    covariance: npt.ArrayLike,
    risk_budget: npt.ArrayLike | None = None,
    tol: float = 1e-12,
    max_iter: int = 100,
) -> TargetWeights:
    """Long-only risk-budgeting weights (equal risk contribution by default).

    Solves :math:`RRC_i(w) = b_i`, :math:`w > 0`, :math:`\\sum_i w_i = 1` by
    Newton's method on Spinu's convex formulation [1]_ (see the module
    docstring), run in *correlation space* for conditioning: with
    :math:`s = \\sqrt{\\mathrm{diag}\\,\\Sigma}` and
    :math:`C = \\Sigma / (s s^\\top)`, we solve for :math:`y` with :math:`C`
    and map back :math:`x = y / s`, :math:`w = x / \\sum_i x_i`.  Risk
    contributions are invariant under this change of variables
    (:math:`x_i(\\Sigma x)_i = y_i (C y)_i`).  Each iteration costs one
    Cholesky solve, :math:`O(n^3/3)` flops: 3--5 iterations on realistic
    (factor-model, positively correlated) inputs, up to ~20 when
    :math:`\\kappa(\\Sigma) \\sim 10^8` (see ``benchmarks/bench_optimizer.py``).

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
        Maximum number of Newton iterations.

    Returns
    -------
    TargetWeights
        Weights, budget, risk decomposition (annualised if ``covariance`` is),
        iterations and the achieved :math:`\\max_i |RRC_i - b_i|`.

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
    """
    if not (tol > 0.0 and math.isfinite(tol)):
        raise ConfigError(f"tol is {tol!r}; it must be finite and > 0 (default 1e-12).")
    if isinstance(max_iter, bool) or int(max_iter) != max_iter or max_iter < 1:
        raise ConfigError(f"max_iter is {max_iter!r}; it must be an integer >= 1 (default 100).")
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
    return TargetWeights(
        weights=_freeze(w),
        risk_budget=_freeze(b),
        risk_contributions=_freeze(rrc * sigma),
        relative_risk_contributions=_freeze(rrc),
        portfolio_volatility=sigma,
        iterations=iterations,
        max_budget_error=float(np.max(np.abs(rrc - b))),
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
