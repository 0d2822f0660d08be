"""Risk-budgeting (equal-risk-contribution) solver (chain-free).

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

The compiled kernel lives in :mod:`keeper.risk_budgeting_kernel`; this module
holds the result type, the input validation, the damped-Newton path (the
fallback for what coordinate descent cannot finish, and the tests' reference)
and the public entry point.  Per-asset weight bounds:
:mod:`keeper.constrained_risk_budgeting`; the tick's target (volatility target,
cash, fallback chain): :mod:`keeper.allocation`; the risk decomposition itself:
:mod:`keeper.risk_contributions`.

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

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.linalg.lapack import dposv as _lapack_dposv
from scipy.linalg.lapack import dpotrf as _lapack_dpotrf

from keeper.errors import ConfigError, SingularCovarianceError, SolverDidNotConvergeError
from keeper.risk_budgeting_kernel import (
    _BUDGET_SUM_ATOL,
    _KERNEL_ENTRY,
    _KERNEL_OK,
    _NO_BUDGET,
    _SYMMETRY_RTOL,
    _first_kernel_call,
)

__all__ = [
    "FloatArray",
    "TargetWeights",
    "solve_equal_risk_contribution",
]

FloatArray = npt.NDArray[np.float64]

# Bare ufunc reductions / BLAS dot: ~1 µs less per call than the ndarray
# methods and ``@`` on tiny arrays, which matters at n ~ 5 (dozens of calls).
_dot = np.dot
_sum = np.add.reduce
_max = np.maximum.reduce
_min = np.minimum.reduce

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
        (:func:`keeper.constrained_risk_budgeting.solve_risk_budgeting` with
        ``bounds``; empty otherwise).
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
# Damped Newton (the fallback path and the tests' reference)
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
# Entry point: the compiled kernel first, damped Newton when it cannot finish
# --------------------------------------------------------------------------- #
_new_object = object.__new__
_set_attribute = object.__setattr__
_as_c_array = np.ascontiguousarray
_empty = np.empty
_FLOAT64 = np.dtype(np.float64)  # a dtype object: ~0.1 µs cheaper per conversion than the type
_INFINITY = math.inf


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
      one contiguous pass over :math:`\\Sigma`; 9-12 sweeps to ``1e-12``
      on realistic factor-model covariances) and
      computes the risk decomposition, in one call;
    * if coordinate descent cannot reach ``tol`` within ``max_iter`` sweeps at
      its measured rate (ill-conditioned :math:`\\Sigma`, round-off floor),
      damped Newton (one Cholesky solve, :math:`O(n^3/3)` flops, per
      iteration; 3--5 iterations on realistic inputs, up to ~20 when
      :math:`\\kappa(\\Sigma) \\sim 10^8`), from its own start.

    The kernel is compiled on the first call of a process without an on-disk
    cache (``cache=True``: ``__pycache__`` next to
    :mod:`keeper.risk_budgeting_kernel`), a one-time
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
        to n = 24; above, a float32 Cholesky of the shifted correlation matrix
        whose success is a proof, with LAPACK ``dpotrf`` deciding only when it
        proves nothing -- see
        :func:`keeper.risk_budgeting_kernel._certifies_positive_definite`).
        ``False`` (only ``False``: any other value keeps the test) skips this
        :math:`O(n^3/3)` test -- the largest cost of a call beyond n ~ 50
        (about 40 µs at n = 100 and 100-150 µs at n = 200 on one core in
        ``benchmarks/bench_solvers.py``, more than the solve itself) -- for a
        caller that guarantees it (e.g. a
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
    # One Python frame from here to the record (a call costs ~0.1 µs, 2-4 % at n ~ 5).
    if not (tol.__class__ is float and 0.0 < tol < _INFINITY and max_iter.__class__ is int
            and max_iter >= 1):
        tol, max_iter = _solver_arguments(tol, max_iter)
    # The kernel's argument types: C-contiguous float64 arrays (no copy if they already are).
    cov = _as_c_array(covariance, dtype=_FLOAT64)
    n = cov.shape[0] if cov.ndim == 2 else 0
    if risk_budget is None:
        budget = _NO_BUDGET
    else:
        budget = _as_c_array(risk_budget, dtype=_FLOAT64)
        if budget.shape != (n,):
            n = 0
    sweeps = 0
    if n and cov.shape[1] == n:
        out = _empty((4, n))
        status, sigma, sweeps, error = (_KERNEL_ENTRY[0] or _first_kernel_call)(
            cov, budget, out, tol, max_iter, check_positive_definite is not False
        )
        if status == _KERNEL_OK:
            # The record: read-only row views of ``out``, and the frozen dataclass's
            # ``__dict__`` set in one assignment -- the object the generated ``__init__``
            # builds, ~1.5 µs cheaper (a quarter of the whole call at n ~ 5).
            out.setflags(write=False)  # the row views inherit it
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
                    "iterations": sweeps,
                    "max_budget_error": error,
                    "lower_bound_active": (),
                    "upper_bound_active": (),
                    "max_free_budget_error": error,
                },
            )
            return result
    # Invalid input (raises the documented error) or a problem coordinate descent
    # cannot finish in max_iter sweeps: damped Newton.
    result = _newton_risk_budgeting(covariance, risk_budget, tol, max_iter)
    if sweeps:
        result = dataclasses.replace(result, iterations=result.iterations + sweeps)
    return result


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
