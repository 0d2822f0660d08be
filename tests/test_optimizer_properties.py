"""Property-based tests (hypothesis) of risk budgeting (keeper.constrained_risk_budgeting) and
keeper.allocation.allocate().

Properties, each over generated covariances (factor-model correlations with annualised
volatilities in [0.05, 2]), Dirichlet-like budgets and bounds:

* budgets met: max |RRC - b| <= 1e-10 without bounds;
* bounds respected, weights sum to 1, and the constrained optimality conditions hold
  (free assets' RRC proportional to their budget, bound assets on the right side);
* volatility target met exactly, or capped at gross exposure min(max gross, 1 - cash floor);
* invariance to asset order (permuting the inputs permutes the weights);
* invariance of the weights to the covariance scale (daily vs annualised units).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scipy.optimize import minimize

from keeper.errors import SolverDidNotConvergeError
from keeper.allocation import allocate
from keeper.constrained_risk_budgeting import solve_risk_budgeting
from tolerances import U, quadratic_form_condition, quadratic_form_rtol, sum_rtol

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def problems(draw: st.DrawFn, min_n: int = 2, max_n: int = 9) -> tuple[np.ndarray, np.ndarray]:
    """(covariance, budget): one market factor + up to 2 signed sector factors + noise."""
    n = draw(st.integers(min_n, max_n))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    market = rng.uniform(-0.2, 1.0, size=(n, 1))
    sectors = rng.normal(0.0, 0.5, size=(n, draw(st.integers(0, 2))))
    loadings = np.hstack([market, sectors])
    raw = loadings @ loadings.T + np.diag(rng.uniform(0.05, 0.8, size=n))
    d = np.sqrt(np.diag(raw))
    vols = np.exp(rng.uniform(math.log(0.05), math.log(2.0), size=n))
    cov = raw / np.outer(d, d) * np.outer(vols, vols)
    concentration = draw(st.sampled_from([0.3, 1.0, 10.0]))
    budget = rng.dirichlet(np.full(n, concentration))
    budget = np.maximum(budget, 1e-4)
    return 0.5 * (cov + cov.T), budget / budget.sum()


def box_minimum_variance_sum(cov: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> float:
    """sum(argmin y'Σy over lower <= y <= upper) by L-BFGS-B (no sum constraint)."""
    result = minimize(
        lambda y: (float(y @ cov @ y), 2.0 * cov @ y),
        lower + 0.5 * (np.minimum(upper, 1.0) - lower),
        jac=True,
        method="L-BFGS-B",
        bounds=list(zip(lower, upper)),
        options={"ftol": 1e-16, "gtol": 1e-14, "maxiter": 10_000},
    )
    return float(result.x.sum())


def rrc_of(w: np.ndarray, cov: np.ndarray) -> np.ndarray:
    sw = cov @ w
    return w * sw / (w @ sw)


@SETTINGS
@given(problems())
def test_budgets_are_met(problem: tuple[np.ndarray, np.ndarray]) -> None:
    cov, budget = problem
    result = solve_risk_budgeting(cov, budget)
    assert np.all(result.weights > 0.0)
    # w = x / sum(x) (compensated in the kernel, NumPy's pairwise sum on the Newton path: sum_rtol(n)),
    # one division per weight, then summed here (sum_rtol(n)).
    n = budget.size
    assert abs(result.weights.sum() - 1.0) <= 2 * sum_rtol(n) + 3 * U
    assert np.max(np.abs(rrc_of(result.weights, cov) - budget)) <= 1e-10


@SETTINGS
@given(problems(), st.floats(0.0, 0.9), st.floats(1.05, 3.0))
def test_bounds_are_respected_with_constrained_optimality(
    problem: tuple[np.ndarray, np.ndarray], low_fraction: float, high_multiple: float
) -> None:
    cov, budget = problem
    n = budget.size
    lower = np.full(n, low_fraction / n)  # sum(lower) < 1
    upper = np.full(n, min(1.0, high_multiple / n))  # sum(upper) > 1
    try:
        result = solve_risk_budgeting(cov, budget, (lower, upper))
    except SolverDidNotConvergeError as exc:
        # Documented case without a solution: even lambda -> 0, the box-constrained minimum
        # variance point (independently computed) is more than fully invested.
        assert "no solution" in str(exc)
        assert box_minimum_variance_sum(cov, lower, upper) > 1.0
        return
    w = result.weights
    assert np.all(w >= lower) and np.all(w <= upper)
    # Free weights scaled by (1 - sum fixed) / sum free: two sums (sum_rtol(n + 1) each with the final
    # clip's no-op), 3 roundings, then summed here (a third sum bound).
    assert abs(w.sum() - 1.0) <= 3 * sum_rtol(n + 1) + 4 * U
    at_lo = np.isin(np.arange(n), result.lower_bound_active)
    at_hi = np.isin(np.arange(n), result.upper_bound_active)
    free = ~(at_lo | at_hi)
    rrc = rrc_of(w, cov)
    if free.any():
        kappa = rrc[free].sum() / budget[free].sum()
        assert np.max(np.abs(rrc[free] - kappa * budget[free])) <= 1e-9
        assert np.all(rrc[at_lo] >= kappa * budget[at_lo] - 1e-9)
        assert np.all(rrc[at_hi] <= kappa * budget[at_hi] + 1e-9)


@SETTINGS
@given(
    problems(),
    st.floats(0.01, 3.0),
    st.floats(0.1, 1.0),
    st.floats(0.0, 0.5),
)
def test_volatility_target_is_met_or_capped(
    problem: tuple[np.ndarray, np.ndarray], target: float, max_gross: float, min_cash: float
) -> None:
    cov, budget = problem
    allocation = allocate(
        cov, budget, volatility_target=target, max_gross_exposure=max_gross, min_cash_weight=min_cash
    )
    w = allocation.weights
    n = budget.size
    cap = min(max_gross, 1.0 - min_cash)
    vol = math.sqrt(w @ cov @ w)
    assert allocation.method == "risk_budgeting"
    # sum(sleeve) is 1 within sum_rtol(n) + 3U (see test_budgets_are_met), scale * s_i (U), summed here.
    sleeve_sum = 2 * sum_rtol(n) + 4 * U
    assert w.sum() <= cap * (1.0 + sleeve_sum)
    # cash = 1 - scale with scale <= fl(1 - min_cash): each subtraction within half an ulp of 1 (U/2).
    assert allocation.cash_weight >= min_cash - U
    assert abs(w.sum() + allocation.cash_weight - 1.0) <= sleeve_sum + 2 * U  # plus cash (U/2), the addition (U)
    if allocation.capped:
        assert allocation.scale == cap and vol < target
    else:
        # scale = target / sigma(sleeve), sigma = sqrt(s.(S s)) by allocate; here sqrt((w S).w) at
        # w = scale * s: the form in two orders (gamma(2n) cq each, halved), rounding scale * s (U cq on
        # sigma), the division and the two square roots (3U).
        cq = quadratic_form_condition(allocation.sleeve_weights, cov)
        assert math.isclose(vol, target, rel_tol=quadratic_form_rtol(n, cq) + (cq + 3) * U)
    # (scale s_i) / sum(scale s): U per product, the sum (sum_rtol(n)) of a sleeve summing to 1 within
    # sleeve_sum, one division.
    np.testing.assert_allclose(w / w.sum(), allocation.sleeve_weights, rtol=sum_rtol(n) + sleeve_sum + 2 * U)


@SETTINGS
@given(problems(min_n=3), st.randoms(use_true_random=False), st.booleans())
def test_asset_order_invariance(
    problem: tuple[np.ndarray, np.ndarray], random, bounded: bool
) -> None:
    cov, budget = problem
    n = budget.size
    perm = np.array(random.sample(range(n), n))
    bounds = (np.full(n, 0.3 / n), np.full(n, 1.8 / n)) if bounded else None
    base = allocate(cov, budget, bounds=bounds, volatility_target=0.3)
    permuted = allocate(
        cov[np.ix_(perm, perm)], budget[perm], bounds=bounds, volatility_target=0.3
    )
    np.testing.assert_allclose(permuted.weights, base.weights[perm], rtol=1e-8, atol=1e-13)
    assert permuted.cash_weight == base.cash_weight or math.isclose(
        permuted.cash_weight, base.cash_weight, rel_tol=1e-9, abs_tol=1e-14
    )


@SETTINGS
@given(problems(), st.sampled_from([1.0 / 365.0, 1e-4, 52.0, 1e3]), st.booleans())
def test_weights_are_invariant_to_covariance_scale(
    problem: tuple[np.ndarray, np.ndarray], scale: float, bounded: bool
) -> None:
    cov, budget = problem
    n = budget.size
    bounds = (np.full(n, 0.3 / n), np.full(n, 1.8 / n)) if bounded else None
    try:
        base = solve_risk_budgeting(cov, budget, bounds)
    except SolverDidNotConvergeError:  # documented no-solution case: so must the scaled one be
        with pytest.raises(SolverDidNotConvergeError, match="no solution"):
            solve_risk_budgeting(cov * scale, budget, bounds)
        return
    scaled = solve_risk_budgeting(cov * scale, budget, bounds)
    np.testing.assert_allclose(scaled.weights, base.weights, rtol=1e-8, atol=1e-13)
    assert math.isclose(
        scaled.portfolio_volatility, math.sqrt(scale) * base.portfolio_volatility, rel_tol=1e-10
    )
