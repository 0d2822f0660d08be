"""Risk budgeting within per-asset weight bounds (chain-free).

Richard & Roncalli's constrained risk-budgeting portfolio [6]_ (see :func:`solve_risk_budgeting`
for what is optimal when budgets and bounds conflict), solved by a projected Newton method [5]_
inside a safeguarded Newton iteration on :math:`\\ln\\lambda`, in correlation space like the
unbounded solver (:func:`keeper.risk_budgeting.solve_equal_risk_contribution`, whose result is
returned unchanged when the bounds do not bind).  :func:`bounded_normalise` puts the
allocator's baseline weights within the same bounds.

Weights are fractions of the fully invested risky sleeve (they sum to 1); the covariance is
(n, n), annualised in the keeper.

References
----------
.. [5] D. P. Bertsekas, "Projected Newton methods for optimization
   problems with simple constraints", SIAM J. Control Optim. 20(2), 1982.
.. [6] E. Richard, T. Roncalli, "Constrained risk budgeting portfolios:
   theory, algorithms, applications & puzzles", arXiv:1902.05710, 2019.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from keeper.errors import ConfigError, SolverDidNotConvergeError
from keeper.risk_budgeting import (
    _MAX_STALLS,
    _QUADRATIC_REGION,
    _ROUNDOFF_ACCEPT,
    FloatArray,
    TargetWeights,
    _freeze,
    _newton_system,
    _validate_budget,
    _validate_covariance,
    solve_equal_risk_contribution,
)

__all__ = [
    "bounded_normalise",
    "solve_risk_budgeting",
]

# Bare ufunc reductions / BLAS dot, as in keeper.risk_budgeting.
_dot = np.dot
_max = np.maximum.reduce
_min = np.minimum.reduce

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
