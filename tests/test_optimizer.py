"""Tests of the risk decomposition and the risk-budgeting solver: keeper.risk_contributions,
keeper.risk_budgeting (and its compiled kernel), keeper.constrained_risk_budgeting, keeper.allocation.

Every random number generator is seeded.  The solver is checked against its
defining equations (RRC = b, w > 0, sum w = 1), closed forms, invariances and
an independent reference (scipy L-BFGS-B on Spinu's objective in raw
covariance space).  No timing assertions.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from scipy.optimize import minimize

from keeper.allocation import (
    METHOD_INVERSE_VOLATILITY,
    METHOD_PREVIOUS,
    METHOD_RISK_BUDGETING,
    allocate,
    equal_weights,
    inverse_volatility_weights,
)
from keeper.constrained_risk_budgeting import bounded_normalise, solve_risk_budgeting
from keeper.errors import (
    AllocationFailedError,
    ConfigError,
    KeeperError,
    SingularCovarianceError,
    SolverDidNotConvergeError,
)
from keeper.risk_budgeting import TargetWeights, solve_equal_risk_contribution
from keeper.risk_contributions import (
    marginal_risk_contributions,
    portfolio_volatility,
    relative_risk_contributions,
    risk_contributions,
)

from tolerances import (
    U,
    dot_rtol,
    gamma,
    quadratic_form_condition,
    quadratic_form_rtol,
    risk_contribution_rtol,
    sum_rtol,
)

BUDGET_TOL = 1e-8


# --------------------------------------------------------------------------- #
# Generators
# --------------------------------------------------------------------------- #
def random_covariance(seed: int, n: int) -> np.ndarray:
    """Wishart-like correlation (mixed signs) times annualised vols U[0.3, 1.2]."""
    rng = np.random.default_rng(seed)
    k = n + 5
    a = rng.normal(size=(n, k))
    s = a @ a.T / k
    d = np.sqrt(np.diag(s))
    vols = rng.uniform(0.3, 1.2, size=n)
    cov = s / np.outer(d, d) * np.outer(vols, vols)
    return 0.5 * (cov + cov.T)


def ill_conditioned_covariance(seed: int, n: int, condition: float = 1e8) -> np.ndarray:
    """``Q diag(lambda) Q'`` with eigenvalues log-spaced in [1/condition, 1]."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    eigenvalues = np.logspace(-math.log10(condition), 0.0, n)
    cov = (q * eigenvalues) @ q.T
    return 0.5 * (cov + cov.T)


def budget_error(weights: np.ndarray, cov: np.ndarray, budget: np.ndarray) -> float:
    """Independent evaluation of max |RRC - b| (plain numpy, no keeper code)."""
    sw = cov @ weights
    return float(np.max(np.abs(weights * sw / (weights @ sw) - budget)))


def assert_valid_solution(result: TargetWeights, cov: np.ndarray, budget: np.ndarray) -> None:
    w = result.weights
    assert w.shape == budget.shape
    assert np.all(w > 0.0)
    assert abs(w.sum() - 1.0) <= 1e-12
    assert budget_error(w, cov, budget) <= BUDGET_TOL
    assert result.max_budget_error <= BUDGET_TOL
    # b / sum(b): the caller's own normalisation left sum(b) within sum_rtol(n) + U of 1, the solver's
    # sum adds at most sum_rtol(n) (pairwise) or 2U (compensated), its division U.
    n = budget.size
    np.testing.assert_allclose(result.risk_budget, budget, rtol=2 * sum_rtol(n) + 2 * U, atol=0)


def spinu_reference_weights(cov: np.ndarray, budget: np.ndarray) -> np.ndarray:
    """Independent reference: L-BFGS-B on f(x) = x'Σx/2 - b'ln x, x > 0, raw Σ."""
    n = budget.size

    def objective(x: np.ndarray) -> tuple[float, np.ndarray]:
        sx = cov @ x
        return 0.5 * float(x @ sx) - float(budget @ np.log(x)), sx - budget / x

    result = minimize(
        objective,
        np.ones(n),
        jac=True,
        method="L-BFGS-B",
        bounds=[(1e-12, None)] * n,
        options={"ftol": 1e-16, "gtol": 1e-13, "maxiter": 10_000, "maxcor": 50},
    )
    return result.x / result.x.sum()


def weight_condition(weights: np.ndarray, cov: np.ndarray) -> float:
    """max_i |d ln w_i| per unit max |d RRC|, on the simplex (sum w = 1): the condition of the
    risk-budgeting solution, from the Jacobian dRRC_i/d ln w_j = RRC_i delta_ij + w_i S_ij w_j / v
    - 2 RRC_i RRC_j (singular along w -> c w, hence the constraint row w'), inverted by pinv.
    Two solutions whose RRC each meet the budget within e1, e2 differ in ln w by <= it (e1 + e2)."""
    sw = cov @ weights
    v = weights @ sw
    rrc = weights * sw / v
    jac = np.diag(rrc) + np.outer(weights, weights) * cov / v - 2.0 * np.outer(rrc, rrc)
    inverse = np.linalg.pinv(np.vstack([jac, weights]))[:, : weights.size]
    return float(np.abs(inverse).sum(axis=1).max())


# --------------------------------------------------------------------------- #
# Risk decomposition identities
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("seed", range(5))
def test_risk_contributions_sum_to_volatility(seed: int) -> None:
    cov = random_covariance(seed, 7)
    w = np.random.default_rng(100 + seed).normal(size=7)  # any sign: identities hold
    sigma = portfolio_volatility(w, cov)
    n, cq = w.size, quadratic_form_condition(w, cov)  # mixed-sign weights: cq > 1
    sw = cov @ w
    cd = float(np.abs(w * sw).sum() / abs(w @ sw))  # cancellation in sum_i w_i (S w)_i
    # w.(S w) vs (w S).w: two orders of one quadratic form, each gamma(2n) cq, halved by sqrt; 2 sqrt.
    np.testing.assert_allclose(sigma, math.sqrt(w @ cov @ w), rtol=quadratic_form_rtol(n, cq) + 2 * U)
    # Same S w in both; sum of n rounded w_i(Sw)_i/sigma vs the BLAS dot w.(Sw): two sums of the same
    # terms (gamma(n+1) cd each, with the product and division), the sqrt (U) and its square (U).
    np.testing.assert_allclose(risk_contributions(w, cov).sum(), sigma, rtol=2 * dot_rtol(n + 1, cd) + 2 * U)
    np.testing.assert_allclose(
        relative_risk_contributions(w, cov).sum(), 1.0, rtol=2 * dot_rtol(n + 1, cd) + 3 * U
    )
    # Same w_i(Sw)_i and sigma: /(sigma*sigma) vs /sigma/sigma, 2 roundings each path.
    np.testing.assert_allclose(
        relative_risk_contributions(w, cov), risk_contributions(w, cov) / sigma, rtol=4 * U
    )


@pytest.mark.parametrize("seed", range(5))
def test_euler_allocation_and_marginal_risk_is_the_gradient(seed: int) -> None:
    cov = random_covariance(seed, 6)
    w = np.random.default_rng(200 + seed).uniform(0.05, 1.0, size=6)
    mrc = marginal_risk_contributions(w, cov)
    sw = cov @ w
    cd = float(np.abs(w * sw).sum() / abs(w @ sw))  # 1 here unless some (S w)_i < 0
    # Euler: sigma is 1-homogeneous, so sigma(w) = w . grad sigma(w).
    # Same S w; dot of w with (Sw)_i/sigma vs sqrt(w.(Sw)): two dots of n terms (gamma(n+1) cd each,
    # with the division), the sqrt and the division by it.
    np.testing.assert_allclose(w @ mrc, portfolio_volatility(w, cov), rtol=2 * dot_rtol(6 + 1, cd) + 2 * U)
    # (w_i (Sw)_i)/sigma vs w_i ((Sw)_i/sigma): same operands, 2 roundings each.
    np.testing.assert_allclose(risk_contributions(w, cov), w * mrc, rtol=4 * U)
    # Marginal risk equals the central finite-difference gradient of sigma.
    h = 1e-6
    fd = np.array(
        [
            (portfolio_volatility(w + h * e, cov) - portfolio_volatility(w - h * e, cov)) / (2 * h)
            for e in np.eye(6)
        ]
    )
    np.testing.assert_allclose(mrc, fd, rtol=1e-7, atol=1e-9)
    # Homogeneity: sigma(c w) = c sigma(w), RRC(c w) = RRC(w).
    np.testing.assert_allclose(portfolio_volatility(3.0 * w, cov), 3.0 * portfolio_volatility(w, cov))
    # Two evaluations (at w and 3w, no shared rounding): risk_contribution_rtol each; rounding 3w (U per
    # weight) moves RRC_i by <= U (1 + cmv + 2 cq), less than a third risk_contribution_rtol (>= n U (cmv + 3 cq)).
    np.testing.assert_allclose(
        relative_risk_contributions(3.0 * w, cov), relative_risk_contributions(w, cov),
        rtol=3 * risk_contribution_rtol(w, cov),
    )


def test_zero_weights_have_zero_volatility_but_no_contributions() -> None:
    cov = random_covariance(0, 3)
    assert portfolio_volatility(np.zeros(3), cov) == 0.0
    with pytest.raises(SingularCovarianceError, match="variance"):
        relative_risk_contributions(np.zeros(3), cov)


def test_decomposition_rejects_mismatched_shapes() -> None:
    with pytest.raises(ConfigError, match="shape"):
        risk_contributions(np.ones(3), np.eye(4))


# --------------------------------------------------------------------------- #
# Solver: defining property on many inputs
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("n", [2, 3, 5, 10, 50, 200])
def test_equal_risk_contribution_on_random_covariances(n: int, seed: int) -> None:
    cov = random_covariance(seed, n)
    result = solve_equal_risk_contribution(cov)
    assert_valid_solution(result, cov, np.full(n, 1.0 / n))


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("n", [2, 3, 5, 10, 50, 200])
def test_equal_risk_contribution_on_ill_conditioned_covariances(n: int, seed: int) -> None:
    cov = ill_conditioned_covariance(seed, n, condition=1e8)
    assert np.linalg.cond(cov) > 0.5e8
    result = solve_equal_risk_contribution(cov)
    assert_valid_solution(result, cov, np.full(n, 1.0 / n))


def test_equal_risk_contribution_at_n_500() -> None:
    for cov in (random_covariance(1, 500), ill_conditioned_covariance(1, 500)):
        assert_valid_solution(solve_equal_risk_contribution(cov), cov, np.full(500, 1 / 500))


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("n", [2, 5, 10, 50, 200])
@pytest.mark.parametrize("kind", ["random", "ill_conditioned"])
def test_custom_dirichlet_budgets(n: int, seed: int, kind: str) -> None:
    rng = np.random.default_rng(1000 + seed)
    budget = rng.dirichlet(np.ones(n))
    budget /= budget.sum()
    cov = random_covariance(seed, n) if kind == "random" else ill_conditioned_covariance(seed, n)
    result = solve_equal_risk_contribution(cov, budget)
    assert_valid_solution(result, cov, budget)


def test_very_skewed_budget() -> None:
    budget = np.array([0.9, 0.0999, 1e-4])
    cov = random_covariance(3, 3)
    assert_valid_solution(solve_equal_risk_contribution(cov, budget), cov, budget)


def test_result_fields_are_consistent() -> None:
    cov = random_covariance(5, 8)
    result = solve_equal_risk_contribution(cov)
    w = result.weights
    n, cq = w.size, quadratic_form_condition(w, cov)
    # The kernel's loops vs NumPy/BLAS at the same w: w'Sw in two orders (gamma(2n) cq each, halved by
    # the sqrt), one sqrt each.
    np.testing.assert_allclose(
        result.portfolio_volatility, portfolio_volatility(w, cov), rtol=quadratic_form_rtol(n, cq) + 2 * U
    )
    # Same decomposition by the kernel and by NumPy: twice the one-path bound.
    rtol = 2 * risk_contribution_rtol(w, cov)
    np.testing.assert_allclose(result.risk_contributions, risk_contributions(w, cov), rtol=rtol)
    np.testing.assert_allclose(result.relative_risk_contributions, relative_risk_contributions(w, cov), rtol=rtol)
    # RC_i = (w_i (Sw)_i / v) sigma summed (gamma(n-1) + 3 roundings per term) vs sigma = sqrt(v), v the
    # kernel's serial dot of the same terms (gamma(n) cd); the sqrt and its square: 2U.
    sw = cov @ w
    cd = float(np.abs(w * sw).sum() / abs(w @ sw))
    np.testing.assert_allclose(
        result.risk_contributions.sum(), result.portfolio_volatility, rtol=2 * dot_rtol(n + 1, cd) + 2 * U
    )
    assert 1 <= result.iterations <= 100
    # max |RRC_i - b_i| from the kernel's and NumPy's RRC (same b): they differ by <= rtol * RRC_i.
    assert result.max_budget_error == pytest.approx(
        budget_error(w, cov, result.risk_budget), abs=rtol * float(result.relative_risk_contributions.max())
    )


def test_result_is_immutable() -> None:
    result = solve_equal_risk_contribution(random_covariance(0, 4))
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.iterations = 0  # type: ignore[misc]
    with pytest.raises(ValueError):
        result.weights[0] = 1.0


def test_default_budget_is_equal_budget() -> None:
    cov = random_covariance(2, 6)
    default = solve_equal_risk_contribution(cov)
    explicit = solve_equal_risk_contribution(cov, np.full(6, 1 / 6))
    # Same path, exact: 6 fl(1/6) = 1 - 2^-54 rounds (ties to even) to 1.0 in the compensated sum, so
    # b = fl(1/6) / 1.0 is bit-identical to the default 1/n, and the kernel repeats the same arithmetic.
    np.testing.assert_array_equal(explicit.risk_budget, default.risk_budget)
    np.testing.assert_array_equal(explicit.weights, default.weights)


def test_single_asset() -> None:
    result = solve_equal_risk_contribution(np.array([[0.49]]))
    np.testing.assert_array_equal(result.weights, [1.0])
    assert result.portfolio_volatility == pytest.approx(0.7)
    assert result.iterations == 0


def test_inputs_are_not_modified() -> None:
    cov = random_covariance(4, 5)
    budget = np.random.default_rng(4).dirichlet(np.ones(5))
    cov_copy, budget_copy = cov.copy(), budget.copy()
    solve_equal_risk_contribution(cov, budget)
    np.testing.assert_array_equal(cov, cov_copy)
    np.testing.assert_array_equal(budget, budget_copy)


# --------------------------------------------------------------------------- #
# Invariances and closed forms
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("seed", range(4))
def test_asset_order_invariance(seed: int) -> None:
    n = 12
    cov = random_covariance(seed, n)
    budget = np.random.default_rng(seed).dirichlet(np.ones(n))
    perm = np.random.default_rng(50 + seed).permutation(n)
    base = solve_equal_risk_contribution(cov, budget).weights
    permuted = solve_equal_risk_contribution(cov[np.ix_(perm, perm)], budget[perm]).weights
    np.testing.assert_allclose(permuted, base[perm], rtol=1e-9)


@pytest.mark.parametrize("scale", [1e-6, 1.0 / 365.0, 365.0, 1e4])
def test_scale_invariance(scale: float) -> None:
    cov = random_covariance(7, 10)
    base = solve_equal_risk_contribution(cov)
    scaled = solve_equal_risk_contribution(cov * scale)
    np.testing.assert_allclose(scaled.weights, base.weights, rtol=1e-9)
    # Two solver outputs: each w meets the budget within its certified max_budget_error (<= tol), so
    # ln w differs by <= weight_condition * (e1 + e2 + their evaluation rounding), and sigma (sum RRC_i
    # d ln w_i) by no more; plus sigma's evaluation on each path (gamma(2n) cq / 2 + U), the rounding
    # of cov * scale (U cq / 2) and of sqrt(scale) * (2U).
    w, n = base.weights, base.weights.size
    cq = quadratic_form_condition(w, cov)
    # (each certified error is itself computed within risk_contribution_rtol * RRC_i, RRC_i = 1/n here)
    budget_errors = base.max_budget_error + scaled.max_budget_error + 2 * risk_contribution_rtol(w, cov) / n
    np.testing.assert_allclose(
        scaled.portfolio_volatility, math.sqrt(scale) * base.portfolio_volatility,
        rtol=weight_condition(w, cov) * budget_errors + quadratic_form_rtol(n, cq) + (cq / 2 + 4) * U,
    )


@pytest.mark.parametrize("rho", [-0.95, -0.3, 0.0, 0.5, 0.99])
@pytest.mark.parametrize("vols", [(0.3, 1.2), (0.8, 0.8), (1.0, 0.05)])
def test_two_asset_closed_form(rho: float, vols: tuple[float, float]) -> None:
    """Equal budget, n = 2: w1 sigma1 = w2 sigma2 for every correlation."""
    s1, s2 = vols
    cov = np.array([[s1 * s1, rho * s1 * s2], [rho * s1 * s2, s2 * s2]])
    w = solve_equal_risk_contribution(cov).weights
    np.testing.assert_allclose(w[0] / w[1], s2 / s1, rtol=1e-10)
    np.testing.assert_allclose(w, [s2 / (s1 + s2), s1 / (s1 + s2)], rtol=1e-10)


@pytest.mark.parametrize("seed", range(3))
def test_diagonal_covariance_closed_form(seed: int) -> None:
    """Uncorrelated assets: w_i ∝ 1/sigma_i (equal budget), ∝ sqrt(b_i)/sigma_i."""
    rng = np.random.default_rng(seed)
    vols = rng.uniform(0.3, 1.2, size=15)
    cov = np.diag(vols**2)
    inv = 1.0 / vols
    np.testing.assert_allclose(solve_equal_risk_contribution(cov).weights, inv / inv.sum(), rtol=1e-10)
    # 1/sqrt(fl(v^2)) vs 1/v (sqrt halves the square's U: <= 2.5U vs U), two 15-term sums of positive
    # terms (sum_rtol(15) each), one division each.
    np.testing.assert_allclose(inverse_volatility_weights(cov), inv / inv.sum(), rtol=2 * sum_rtol(15) + 6 * U)
    budget = rng.dirichlet(np.ones(15))
    expected = np.sqrt(budget) / vols
    np.testing.assert_allclose(
        solve_equal_risk_contribution(cov, budget).weights, expected / expected.sum(), rtol=1e-10
    )


@pytest.mark.parametrize("rho", [-0.05, 0.2, 0.8])
def test_constant_correlation_gives_inverse_volatility(rho: float) -> None:
    """Roncalli (2013): with a constant correlation, ERC = inverse volatility."""
    n = 8
    vols = np.random.default_rng(9).uniform(0.3, 1.2, size=n)
    corr = np.full((n, n), rho)
    np.fill_diagonal(corr, 1.0)
    cov = corr * np.outer(vols, vols)
    np.testing.assert_allclose(
        solve_equal_risk_contribution(cov).weights, inverse_volatility_weights(cov), rtol=1e-10
    )


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("n", [2, 3, 5, 10, 20])
def test_agrees_with_independent_scipy_reference(n: int, seed: int) -> None:
    cov = random_covariance(seed, n)
    budget = np.random.default_rng(300 + seed).dirichlet(np.ones(n))
    reference = spinu_reference_weights(cov, budget)
    assert budget_error(reference, cov, budget) <= 1e-6  # the reference itself converged
    np.testing.assert_allclose(
        solve_equal_risk_contribution(cov, budget).weights, reference, rtol=0, atol=1e-6
    )


# --------------------------------------------------------------------------- #
# Baselines
# --------------------------------------------------------------------------- #
def test_baselines() -> None:
    np.testing.assert_array_equal(equal_weights(4), [0.25] * 4)
    cov = random_covariance(1, 5)
    w = inverse_volatility_weights(cov)
    assert abs(w.sum() - 1.0) <= 1e-15
    np.testing.assert_allclose(w * np.sqrt(np.diag(cov)), np.full(5, 1.0 / np.sum(1 / np.sqrt(np.diag(cov)))))
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ConfigError):
            equal_weights(bad)  # type: ignore[arg-type]
    with pytest.raises(SingularCovarianceError):
        inverse_volatility_weights(np.diag([0.1, 0.0]))


# --------------------------------------------------------------------------- #
# Errors
# --------------------------------------------------------------------------- #
def test_not_positive_definite_is_singular_covariance_error() -> None:
    indefinite = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, -0.01]])
    with pytest.raises(SingularCovarianceError, match="positive definite"):
        solve_equal_risk_contribution(indefinite)
    a = np.random.default_rng(0).normal(size=(4, 2))
    rank_deficient = a @ a.T  # rank 2 < 4: PSD but singular
    with pytest.raises(SingularCovarianceError):
        solve_equal_risk_contribution(rank_deficient)
    corr_above_one = np.array([[1.0, 1.2], [1.2, 1.0]])
    with pytest.raises(SingularCovarianceError):
        solve_equal_risk_contribution(corr_above_one)


@pytest.mark.parametrize(
    "bad",
    [np.ones((2, 3)), np.ones(3), np.zeros((0, 0))],
    ids=["rectangular", "vector", "empty"],
)
def test_non_square_covariance_is_singular_covariance_error(bad: np.ndarray) -> None:
    with pytest.raises(SingularCovarianceError, match="shape"):
        solve_equal_risk_contribution(bad)


def test_asymmetric_covariance_is_singular_covariance_error() -> None:
    cov = random_covariance(0, 4)
    cov[0, 1] += 1e-6
    with pytest.raises(SingularCovarianceError, match="symmetric"):
        solve_equal_risk_contribution(cov)
    tiny = random_covariance(0, 4)
    tiny[0, 1] += 1e-14  # within 1e-10 relative: accepted and symmetrised
    solve_equal_risk_contribution(tiny)


@pytest.mark.parametrize("bad_value", [np.nan, np.inf])
def test_non_finite_covariance_is_singular_covariance_error(bad_value: float) -> None:
    """NaN/inf in the covariance -> SingularCovarianceError (documented)."""
    cov = random_covariance(0, 3)
    cov[1, 2] = cov[2, 1] = bad_value
    with pytest.raises(SingularCovarianceError, match="finite"):
        solve_equal_risk_contribution(cov)


@pytest.mark.parametrize(
    "budget,match",
    [
        (np.array([0.5, 0.5]), "shape"),
        (np.array([0.5, 0.6, -0.1]), "strictly > 0"),
        (np.array([0.5, 0.5, 0.0]), "strictly > 0"),
        (np.array([0.5, np.nan, 0.5]), "finite"),  # NaN in the budget -> ConfigError
        (np.array([0.5, np.inf, 0.5]), "finite"),
        (np.array([0.3, 0.3, 0.3]), "sums to"),
        (np.array([1.0, 1.0, 1.0]), "sums to"),
    ],
)
def test_bad_budget_is_config_error(budget: np.ndarray, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        solve_equal_risk_contribution(random_covariance(0, 3), budget)


def test_budget_within_tolerance_is_normalised_exactly() -> None:
    budget = np.array([0.2, 0.3, 0.5 + 5e-10])
    result = solve_equal_risk_contribution(random_covariance(0, 3), budget)
    # b / S: the test's serial 3-term sum (sum_rtol(3)) vs the solver's compensated sum (2U), one
    # division each.
    np.testing.assert_allclose(result.risk_budget, budget / budget.sum(), rtol=sum_rtol(3) + 4 * U)
    # sum of the 3 quotients: exact value within 3U of 1 (total to 2U, each quotient U), summed gamma(2).
    assert abs(result.risk_budget.sum() - 1.0) <= sum_rtol(3) + 3 * U


@pytest.mark.parametrize("kwargs", [{"tol": 0.0}, {"tol": -1e-9}, {"tol": np.nan}, {"max_iter": 0}])
def test_bad_solver_settings_are_config_errors(kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        solve_equal_risk_contribution(random_covariance(0, 3), **kwargs)


def test_not_converged_names_the_achieved_error() -> None:
    cov = ill_conditioned_covariance(1, 20)
    with pytest.raises(SolverDidNotConvergeError) as excinfo:
        solve_equal_risk_contribution(cov, max_iter=1)
    message = str(excinfo.value)
    assert "max |RRC - b|" in message and "max_iter=1" in message


def test_errors_share_the_keeper_base_class() -> None:
    for error in (ConfigError, SingularCovarianceError, SolverDidNotConvergeError):
        assert issubclass(error, KeeperError)


# --------------------------------------------------------------------------- #
# Constrained risk budgeting (weight bounds)
# --------------------------------------------------------------------------- #
def assert_constrained_kkt(result: TargetWeights, cov: np.ndarray, budget: np.ndarray,
                           lower: np.ndarray, upper: np.ndarray, tol: float = 1e-10) -> None:
    """Richard & Roncalli's optimality conditions, checked with plain numpy."""
    w = result.weights
    assert np.all(w >= lower) and np.all(w <= upper)
    # Free weights scaled by (1 - sum fixed) / sum free: two sums (sum_rtol(n + 1) each), 3 roundings,
    # then summed here (a third sum bound).
    assert abs(w.sum() - 1.0) <= 3 * sum_rtol(w.size + 1) + 4 * U
    sw = cov @ w
    rrc = w * sw / (w @ sw)
    at_lo = np.zeros(w.size, bool)
    at_hi = np.zeros(w.size, bool)
    at_lo[list(result.lower_bound_active)] = True
    at_hi[list(result.upper_bound_active)] = True
    # Exact by construction: the solver assigns w[at_lo] = lower, w[at_hi] = upper (then clips).
    np.testing.assert_array_equal(w[at_lo], lower[at_lo])
    np.testing.assert_array_equal(w[at_hi], upper[at_hi])
    free = ~(at_lo | at_hi)
    assert free.any()
    assert np.all(w[free] > lower[free]) and np.all(w[free] < upper[free])
    kappa = rrc[free].sum() / budget[free].sum()
    assert np.max(np.abs(rrc[free] - kappa * budget[free])) <= tol
    assert result.max_free_budget_error <= tol
    # Bound assets would move out of the box: too much risk at the lower bound, too little at the upper.
    assert np.all(rrc[at_lo] >= kappa * budget[at_lo] - tol)
    assert np.all(rrc[at_hi] <= kappa * budget[at_hi] + tol)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("n", [3, 5, 10, 50])
def test_bounds_that_bind_give_the_constrained_risk_budgeting_portfolio(n: int, seed: int) -> None:
    cov = random_covariance(seed, n)
    budget = np.random.default_rng(400 + seed).dirichlet(np.ones(n))
    free_solution = solve_equal_risk_contribution(cov, budget).weights
    lower = np.full(n, float(np.quantile(free_solution, 0.25)))
    upper = np.full(n, float(np.quantile(free_solution, 0.8)))
    assert (free_solution < lower).any() or (free_solution > upper).any()  # bounds bind
    result = solve_risk_budgeting(cov, budget, (lower, upper))
    assert result.lower_bound_active or result.upper_bound_active
    assert_constrained_kkt(result, cov, budget, lower, upper)


def test_bounds_that_do_not_bind_return_the_unconstrained_solution() -> None:
    cov = random_covariance(3, 6)
    budget = np.random.default_rng(3).dirichlet(np.ones(6))
    free_solution = solve_equal_risk_contribution(cov, budget)
    bounded = solve_risk_budgeting(cov, budget, (0.0, 1.0))
    np.testing.assert_array_equal(bounded.weights, free_solution.weights)  # same path: non-binding bounds return the free solve
    assert bounded.lower_bound_active == () and bounded.upper_bound_active == ()
    assert bounded.max_budget_error <= 1e-12


def test_bounded_solution_agrees_with_an_independent_scipy_reference() -> None:
    """Same formulation solved by SLSQP on the raw covariance: lambda fixed, box, then sum."""
    n = 6
    cov = random_covariance(11, n)
    budget = np.random.default_rng(11).dirichlet(np.ones(n))
    lower, upper = np.full(n, 0.08), np.full(n, 0.3)
    result = solve_risk_budgeting(cov, budget, (lower, upper))
    # At lambda*, the bounded Spinu problem's minimiser is the result (it sums to 1): recover
    # lambda* from a free asset and minimise independently.
    w = result.weights
    free = [i for i in range(n) if i not in result.lower_bound_active + result.upper_bound_active]
    lam = w[free[0]] * (cov @ w)[free[0]] / budget[free[0]]

    def objective(x: np.ndarray) -> tuple[float, np.ndarray]:
        sx = cov @ x
        return 0.5 * float(x @ sx) - lam * float(budget @ np.log(x)), sx - lam * budget / x

    reference = minimize(objective, np.full(n, 1.0 / n), jac=True, method="L-BFGS-B",
                         bounds=list(zip(lower, upper)),
                         options={"ftol": 1e-16, "gtol": 1e-14, "maxiter": 10_000})
    np.testing.assert_allclose(reference.x, w, atol=1e-7)


def test_equal_lower_and_upper_bounds_pin_assets() -> None:
    cov = random_covariance(2, 4)
    lower = np.array([0.1, 0.0, 0.0, 0.0])
    upper = np.array([0.1, 1.0, 1.0, 1.0])
    result = solve_risk_budgeting(cov, None, (lower, upper))
    assert result.weights[0] == 0.1  # exact: assigned w = lower at the bound
    assert_constrained_kkt(result, cov, np.full(4, 0.25), lower, upper)


def test_bounds_that_sum_to_one_fix_the_sleeve() -> None:
    cov = random_covariance(2, 4)
    upper = np.array([0.1, 0.2, 0.3, 0.4])
    # upper / sum(upper): a 4-term sum of positive terms (sum_rtol(4)) and one division.
    np.testing.assert_allclose(solve_risk_budgeting(cov, None, (0.0, upper)).weights, upper, rtol=sum_rtol(4) + U)


@pytest.mark.parametrize(
    "bounds,match",
    [
        ((0.3, 1.0), "no fully invested"),
        ((0.0, 0.2), "no fully invested"),
        ((np.array([0.1, 0.1]), 1.0), "shape"),
        ((-0.1, 1.0), ">= 0"),
        ((np.nan, 1.0), ">= 0"),
        ((0.0, np.array([0.5, 0.5, np.nan, 0.5])), "upper bound"),
        ((0.2, np.array([0.5, 0.1, 0.5, 0.5])), "upper bound"),
        ((0.0, np.array([0.5, 0.0, 0.5, 0.5])), "> 0"),
        ((0.1,), "pair"),
    ],
)
def test_bad_bounds_are_config_errors(bounds: tuple, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        solve_risk_budgeting(random_covariance(0, 4), None, bounds)


def test_bounds_forcing_hedged_assets_have_no_solution() -> None:
    """Asset 1 needs w_1 > 0.9 w_0 for a positive marginal risk; w_0 >= 0.6 forces sum > 1."""
    cov = np.array([[1.0, -0.9], [-0.9, 1.0]])
    with pytest.raises(SolverDidNotConvergeError, match="no solution"):
        solve_risk_budgeting(cov, None, (np.array([0.6, 0.0]), 1.0))
    allocation = allocate(cov, bounds=(np.array([0.6, 0.0]), 1.0))  # falls back, within bounds
    assert allocation.method == METHOD_INVERSE_VOLATILITY
    assert "no solution" in allocation.fallback_reasons[0]
    # w0 = 0.6 assigned at the bound; w1 *= (1 - 0.6) / w1: 3 roundings, and the literal 0.4's (U).
    np.testing.assert_allclose(allocation.sleeve_weights, [0.6, 0.4], rtol=gamma(4))


def test_bounded_normalise() -> None:
    v = np.array([4.0, 1.0, 1.0, 1.0])
    w = bounded_normalise(v, 0.0, 0.4)
    # Clipped entries are the bound itself; the free ones c * ((1 - 0.4) / (3 c)): 1 - fl(0.4) (U, plus
    # fl(0.4)'s own error, <= U), the 3-term sum (gamma(2)), the division, the product; the literal 0.2 (U).
    np.testing.assert_allclose(w, [0.4, 0.2, 0.2, 0.2], rtol=gamma(6))
    w = bounded_normalise(np.array([1.0, 10.0, 100.0]), 0.2, np.inf)
    # w3 * ((1 - 0.4) / w3): 3 roundings, and the literal 0.6 (U); 0.2 + 0.2 is exact.
    np.testing.assert_allclose(w, [0.2, 0.2, 0.6], rtol=gamma(6))
    # c v_i (U) renormalised by 1 / sum (4 positive terms, sum_rtol(4); 2 roundings) vs v / sum (the same
    # sum bound, one division).
    np.testing.assert_allclose(bounded_normalise(v, 0.0, 1.0), v / v.sum(), rtol=2 * sum_rtol(4) + 5 * U)
    with pytest.raises(ConfigError, match="positive"):
        bounded_normalise(np.array([1.0, -1.0]), 0.0, 1.0)


# --------------------------------------------------------------------------- #
# allocate(): cash sleeve, volatility target, fallback chain
# --------------------------------------------------------------------------- #
def test_volatility_target_is_met_exactly_when_not_capped() -> None:
    cov = random_covariance(1, 6)
    budget = np.random.default_rng(1).dirichlet(np.ones(6))
    sleeve = solve_equal_risk_contribution(cov, budget)
    target = 0.5 * sleeve.portfolio_volatility
    allocation = allocate(cov, budget, volatility_target=target)
    assert allocation.method == METHOD_RISK_BUDGETING and allocation.fallback_reasons == ()
    assert not allocation.capped
    n, cq = 6, quadratic_form_condition(sleeve.weights, cov)
    # allocate normalises the budget (NumPy sum) before the solver does (compensated): b differs by
    # <= sum_rtol(n) + 4U relative, so this is a second solve. Both meet their budgets within their
    # certified errors (allocate's own recomputed by NumPy, within 2 risk_contribution_rtol RRC_i), so
    # ln w differs by <= weight_condition * (the sum of these): a solver bound, ~1e-11 at tol = 1e-12.
    rrc_rounding = 2 * risk_contribution_rtol(sleeve.weights, cov) * float(budget.max())
    budget_shift = (sum_rtol(n) + 4 * U) * float(budget.max())
    ln_w = weight_condition(sleeve.weights, cov) * (
        sleeve.max_budget_error + allocation.max_budget_error + budget_shift + rrc_rounding
    )
    np.testing.assert_allclose(allocation.sleeve_weights, sleeve.weights, rtol=2 * ln_w)
    # target = sigma_kernel / 2 (exact); allocate's scale = target / sigma_numpy (U). sigma moves by at
    # most max |d ln w| between the two solutions; at one w the kernel's and NumPy's w'Sw differ by
    # <= 2 gamma(2n) cq (halved by the sqrt, one sqrt each).
    sigma_paths = ln_w + quadratic_form_rtol(n, cq) + 2 * U
    # NumPy again, in another order, at scale * w (U per weight: U cq on sigma), one more sqrt.
    np.testing.assert_allclose(
        math.sqrt(allocation.weights @ cov @ allocation.weights), target, rtol=sigma_paths + (cq + 2) * U
    )
    # (target / sigma) * sigma with the same sigma: 2 roundings.
    assert allocation.volatility == pytest.approx(target, rel=2 * U)
    assert allocation.scale == pytest.approx(0.5, rel=sigma_paths + U)
    assert allocation.cash_weight == pytest.approx(0.5, rel=sigma_paths + U)  # 1 - scale: exact (Sterbenz)
    # sum(sleeve) = 1 within 3U (compensated total, one division each), scale * w_i (U), the 6-term sum
    # (sum_rtol(6)), cash exact, the final addition (U).
    assert allocation.weights.sum() + allocation.cash_weight == pytest.approx(1.0, abs=sum_rtol(6) + 5 * U)
    # Cash has no risk: risk contributions relative to the portfolio volatility are the budget.
    assert budget_error(allocation.weights, cov, budget) <= 1e-12
    assert allocation.max_budget_error <= 1e-12


def test_volatility_target_above_the_sleeve_is_capped_by_gross_exposure_and_cash_floor() -> None:
    cov = random_covariance(1, 6)
    sigma = solve_equal_risk_contribution(cov).portfolio_volatility
    full = allocate(cov, volatility_target=2.0 * sigma)
    assert full.capped and full.scale == 1.0 and full.cash_weight == 0.0
    w = solve_equal_risk_contribution(cov).weights
    # sigma by the kernel vs allocate's NumPy sigma at the same w: gamma(2n) cq each, halved; 2 sqrt.
    assert full.volatility == pytest.approx(sigma, rel=quadratic_form_rtol(6, quadratic_form_condition(w, cov)) + 2 * U)
    floored = allocate(cov, volatility_target=2.0 * sigma, min_cash_weight=0.1, max_gross_exposure=0.95)
    # 1 - fl(0.9) is exact (Sterbenz); fl(0.9), fl(0.1) are within U/2, U/16 of 0.9, 0.1.
    assert floored.capped and floored.scale == 0.9 and floored.cash_weight == pytest.approx(0.1, abs=U)
    # sum(sleeve) = 1 within 3U (compensated total, one division), 0.9 w_i (U), the 6-term sum.
    assert floored.weights.sum() == pytest.approx(0.9, rel=sum_rtol(6) + 4 * U)
    no_target = allocate(cov, max_gross_exposure=0.8)
    assert not no_target.capped and no_target.scale == 0.8 and no_target.volatility_target is None


def test_allocate_with_bounds_respects_them_on_the_sleeve() -> None:
    cov = random_covariance(4, 8)
    allocation = allocate(cov, bounds=(0.05, 0.2), volatility_target=0.1)
    assert np.all(allocation.sleeve_weights >= 0.05) and np.all(allocation.sleeve_weights <= 0.2)
    assert allocation.upper_bound_active or allocation.lower_bound_active
    assert allocation.volatility == pytest.approx(0.1, rel=2 * U)  # (0.1 / sigma) * sigma, same sigma: 2 roundings


@pytest.mark.parametrize("allocator", ["inverse_volatility", "equal_weight"])
def test_baseline_allocators(allocator: str) -> None:
    cov = random_covariance(5, 5)
    allocation = allocate(cov, allocator=allocator, volatility_target=0.2)
    expected = inverse_volatility_weights(cov) if allocator == "inverse_volatility" else equal_weights(5)
    np.testing.assert_array_equal(allocation.sleeve_weights, expected)  # same path: allocate calls the same function
    # (0.2 / sigma) * sigma with the same sigma: 2 roundings.
    assert allocation.method == allocator and allocation.volatility == pytest.approx(0.2, rel=2 * U)
    bounded = allocate(cov, allocator=allocator, bounds=(0.0, 0.21))
    assert np.all(bounded.sleeve_weights <= 0.21) and bounded.sleeve_weights.sum() == pytest.approx(1.0)


def indefinite_covariance() -> np.ndarray:
    """Pairwise-consistent but jointly impossible correlations (0.9, 0.9, -0.9): not PSD,
    positive variances, and the inverse-volatility portfolio still has a positive variance."""
    corr = np.array([[1.0, 0.9, 0.9], [0.9, 1.0, -0.9], [0.9, -0.9, 1.0]])
    vols = np.array([0.5, 0.8, 1.1])
    return corr * np.outer(vols, vols)


def test_singular_covariance_falls_back_to_inverse_volatility() -> None:
    cov = indefinite_covariance()
    with pytest.raises(SingularCovarianceError):
        solve_equal_risk_contribution(cov)
    allocation = allocate(cov, volatility_target=0.15)
    assert allocation.method == METHOD_INVERSE_VOLATILITY
    assert len(allocation.fallback_reasons) == 1
    assert allocation.fallback_reasons[0].startswith("risk_budgeting: SingularCovarianceError")
    np.testing.assert_array_equal(allocation.sleeve_weights, inverse_volatility_weights(cov))  # same path: same function
    # (0.15 / sigma) * sigma with the same sigma: 2 roundings.
    assert allocation.volatility == pytest.approx(0.15, rel=2 * U) and allocation.iterations == 0


def test_non_convergence_falls_back_to_inverse_volatility_within_bounds() -> None:
    cov = ill_conditioned_covariance(1, 20)
    allocation = allocate(cov, bounds=(0.0, 0.09), max_iter=1)
    assert allocation.method == METHOD_INVERSE_VOLATILITY
    assert "SolverDidNotConvergeError" in allocation.fallback_reasons[0]
    assert np.all(allocation.sleeve_weights <= 0.09)
    # bounded_normalise: free weights scaled by (1 - sum fixed) / sum free (two 20-term sums, 3 roundings),
    # then summed again (a third sum bound): <= 3 sum_rtol(20) + 3U.
    assert allocation.sleeve_weights.sum() == pytest.approx(1.0, abs=3 * sum_rtol(20) + 3 * U)


@pytest.mark.parametrize("where", ["diagonal", "off_diagonal", "infinite"])
def test_broken_covariance_falls_back_to_previous_weights(where: str) -> None:
    cov = random_covariance(7, 4)
    if where == "diagonal":
        cov[2, 2] = np.nan
    elif where == "off_diagonal":
        cov[0, 3] = cov[3, 0] = np.nan  # inverse volatility exists, its volatility does not
    else:
        cov[1, 1] = np.inf
    previous = np.array([0.2, 0.3, 0.1, 0.2])
    allocation = allocate(cov, previous_weights=previous, volatility_target=0.2)
    assert allocation.method == METHOD_PREVIOUS
    assert [r.split(":")[0] for r in allocation.fallback_reasons] == ["risk_budgeting", "inverse_volatility"]
    np.testing.assert_array_equal(allocation.weights, previous)  # exact: a copy of them
    # 1 - (0.2 + 0.3 + 0.1 + 0.2): 4 literals (U each relative), a 4-term sum (sum_rtol(4)), 1 - 0.8 exact
    # (Sterbenz), the literal 0.2 (U).
    assert allocation.cash_weight == pytest.approx(0.2, abs=sum_rtol(4) + 2 * U)
    assert math.isnan(allocation.volatility) and not allocation.capped


def test_every_method_failing_without_previous_weights_raises() -> None:
    cov = random_covariance(7, 4)
    cov[2, 2] = np.nan
    with pytest.raises(AllocationFailedError, match="risk_budgeting.*inverse_volatility"):
        allocate(cov)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"volatility_target": 0.0}, "volatility_target"),
        ({"volatility_target": np.nan}, "volatility_target"),
        ({"volatility_target": "0.2"}, "volatility_target"),
        ({"max_gross_exposure": 1.5}, "borrow"),
        ({"max_gross_exposure": 0.0}, "max_gross_exposure"),
        ({"min_cash_weight": 1.0}, "min_cash_weight"),
        ({"min_cash_weight": -0.1}, "min_cash_weight"),
        ({"previous_weights": np.array([0.5, 0.5, 0.5])}, "shape"),
        ({"previous_weights": np.array([0.5, 0.5, 0.5, 0.5])}, "at most 1"),
        ({"previous_weights": np.array([-0.1, 0.5, 0.1, 0.1])}, ">= 0"),
        ({"risk_budget": np.array([0.5, 0.5])}, "shape"),
        ({"bounds": (0.5, 1.0)}, "no fully invested"),
        ({"allocator": "min_variance"}, "allocator"),
        ({"tol": 0.0}, "tol"),
    ],
)
def test_allocate_configuration_errors_are_raised_not_absorbed(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        allocate(random_covariance(0, 4), **kwargs)


def test_allocation_is_immutable() -> None:
    allocation = allocate(random_covariance(0, 4))
    with pytest.raises(dataclasses.FrozenInstanceError):
        allocation.method = "previous"  # type: ignore[misc]
    for array in (allocation.weights, allocation.sleeve_weights, allocation.relative_risk_contributions):
        with pytest.raises(ValueError):
            array[0] = 0.0


# --------------------------------------------------------------------------- #
# Compiled coordinate-descent kernel against the Newton reference
# --------------------------------------------------------------------------- #
from keeper.risk_budgeting import _newton_risk_budgeting  # noqa: E402
from keeper.risk_budgeting_kernel import _KERNEL_INVALID, _KERNEL_OK, _KERNEL_SLOW, _ccd_kernel  # noqa: E402


def factor_covariance(seed: int, n: int) -> np.ndarray:
    """Market factor + sector factors + noise, annualised vols U[0.3, 1.2] (the realistic case)."""
    rng = np.random.default_rng(seed)
    loadings = np.hstack(
        [rng.uniform(0.4, 1.0, size=(n, 1)), rng.normal(0.0, 0.3, size=(n, min(4, max(1, n // 5))))]
    )
    raw = loadings @ loadings.T + np.diag(rng.uniform(0.1, 0.6, size=n))
    d = np.sqrt(np.diag(raw))
    vols = rng.uniform(0.3, 1.2, size=n)
    cov = raw / np.outer(d, d) * np.outer(vols, vols)
    return 0.5 * (cov + cov.T)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("n", [2, 3, 5, 10, 24, 25, 50, 120])
@pytest.mark.parametrize("kind", ["factor", "random"])
@pytest.mark.parametrize("budget_kind", ["equal", "dirichlet"])
def test_kernel_agrees_with_the_newton_reference(n: int, seed: int, kind: str, budget_kind: str) -> None:
    cov = factor_covariance(seed, n) if kind == "factor" else random_covariance(seed, n)
    budget = (
        np.full(n, 1.0 / n)
        if budget_kind == "equal"
        else np.random.default_rng(700 + seed).dirichlet(np.ones(n))
    )
    reference = _newton_risk_budgeting(cov, budget, 1e-12, 100)
    status, out, sigma, sweeps, error = _ccd_kernel(cov, budget, 1e-12, 100, True)
    if kind == "factor":
        assert status == _KERNEL_OK  # the realistic case never needs the Newton path
    if status == _KERNEL_OK:
        weights, b, rrc, rc = out
        np.testing.assert_allclose(weights, reference.weights, rtol=1e-9, atol=0)
        # budget / its sum: NumPy's pairwise sum (sum_rtol(n)) vs the kernel's compensated one (2U); a
        # division each.
        np.testing.assert_allclose(b, reference.risk_budget, rtol=sum_rtol(n) + 4 * U, atol=0)
        assert error <= 1e-12 and budget_error(weights, cov, budget) <= 1e-12
        assert sigma == pytest.approx(reference.portfolio_volatility, rel=1e-9)
        # Same weights, the kernel's loops vs NumPy: twice the one-path bound of the decomposition.
        np.testing.assert_allclose(rrc, relative_risk_contributions(weights, cov), rtol=2 * risk_contribution_rtol(weights, cov))
        np.testing.assert_allclose(rc, risk_contributions(weights, cov), rtol=2 * risk_contribution_rtol(weights, cov))
        assert 0 <= sweeps <= 100
    else:
        assert status == _KERNEL_SLOW
    result = solve_equal_risk_contribution(cov, budget)  # whichever path: same solution
    np.testing.assert_allclose(result.weights, reference.weights, rtol=1e-9, atol=0)
    assert result.max_budget_error <= 1e-12


@pytest.mark.parametrize("n", [2, 3])
def test_kernel_newton_steps_solve_small_ill_conditioned_problems(n: int) -> None:
    cov = ill_conditioned_covariance(2, n, condition=1e8)
    status, out, _, sweeps, error = _ccd_kernel(cov, np.full(n, 1.0 / n), 1e-12, 100, True)
    assert status == _KERNEL_OK and sweeps <= 20 and error <= 1e-12
    reference = _newton_risk_budgeting(cov, None, 1e-12, 100)
    np.testing.assert_allclose(out[0], reference.weights, rtol=1e-6, atol=0)


@pytest.mark.parametrize("n", [40, 60])
def test_kernel_hands_ill_conditioned_problems_to_newton(n: int) -> None:
    cov = ill_conditioned_covariance(2, n, condition=1e10)
    status, _, _, sweeps, _ = _ccd_kernel(cov, np.full(n, 1.0 / n), 1e-12, 100, True)
    assert status == _KERNEL_SLOW and 1 <= sweeps <= 100
    result = solve_equal_risk_contribution(cov)
    reference = _newton_risk_budgeting(cov, None, 1e-12, 100)
    np.testing.assert_array_equal(result.weights, reference.weights)  # same path: the Newton result itself
    assert result.iterations == reference.iterations + sweeps


def kernel_status(cov: np.ndarray, budget: np.ndarray | None = None) -> int:
    b = np.empty(0) if budget is None else np.ascontiguousarray(budget, dtype=np.float64)
    return _ccd_kernel(np.ascontiguousarray(cov, dtype=np.float64), b, 1e-12, 100, True)[0]


@pytest.mark.parametrize("n", [3, 60])  # unblocked compiled Cholesky / LAPACK
def test_kernel_flags_every_invalid_input(n: int) -> None:
    cov = random_covariance(0, n)
    assert kernel_status(cov) == _KERNEL_OK
    for i, j, value in [(1, 2, np.nan), (1, 2, np.inf), (0, 0, np.inf), (2, 2, 0.0), (2, 2, -0.1)]:
        bad = cov.copy()
        bad[i, j] = bad[j, i] = value
        assert kernel_status(bad) == _KERNEL_INVALID
    asymmetric = cov.copy()
    asymmetric[0, 1] += 1e-6
    assert kernel_status(asymmetric) == _KERNEL_INVALID
    a = np.random.default_rng(1).normal(size=(n, max(1, n // 3)))
    assert kernel_status(a @ a.T) == _KERNEL_INVALID  # rank n/3: singular at any rounding
    indefinite = cov.copy()
    indefinite[0, 1] = indefinite[1, 0] = 1.5 * math.sqrt(cov[0, 0] * cov[1, 1])
    assert kernel_status(indefinite) == _KERNEL_INVALID
    budget = np.full(n, 1.0 / n)
    for bad_budget in (budget * 1.1, np.where(np.arange(n) == 1, 0.0, budget), np.full(n, np.nan)):
        assert kernel_status(cov, bad_budget) == _KERNEL_INVALID


def test_read_only_and_non_contiguous_inputs_give_the_same_result() -> None:
    cov = factor_covariance(4, 12)
    budget = np.random.default_rng(4).dirichlet(np.ones(12))
    base = solve_equal_risk_contribution(cov, budget)
    frozen_cov, frozen_budget = cov.copy(), budget.copy()
    frozen_cov.setflags(write=False)
    frozen_budget.setflags(write=False)
    for c, b in [
        (frozen_cov, frozen_budget),
        (np.asfortranarray(cov), budget),
        (cov.tolist(), budget.tolist()),
    ]:
        # Same path: the wrapper copies every input to the same C-contiguous float64 values.
        np.testing.assert_array_equal(solve_equal_risk_contribution(c, b).weights, base.weights)
    strided_budget = np.repeat(budget, 2)[::2]  # non-contiguous view
    np.testing.assert_array_equal(
        solve_equal_risk_contribution(cov, strided_budget).weights, base.weights
    )
    np.testing.assert_array_equal(
        solve_equal_risk_contribution(cov, base.risk_budget).weights,  # a result's read-only budget
        solve_equal_risk_contribution(cov, base.risk_budget.copy()).weights,
    )


def test_result_arrays_of_the_kernel_are_read_only() -> None:
    result = solve_equal_risk_contribution(factor_covariance(5, 6))
    for array in (
        result.weights,
        result.risk_budget,
        result.risk_contributions,
        result.relative_risk_contributions,
    ):
        with pytest.raises(ValueError):
            array[0] = 1.0
    assert result.lower_bound_active == () and result.upper_bound_active == ()
    assert result.max_free_budget_error == result.max_budget_error
    assert dataclasses.replace(result, iterations=7).iterations == 7  # a regular dataclass


@pytest.mark.parametrize("n", [5, 60])
def test_skipping_the_positive_definite_test(n: int) -> None:
    cov = factor_covariance(6, n)
    checked = solve_equal_risk_contribution(cov)
    unchecked = solve_equal_risk_contribution(cov, check_positive_definite=False)
    np.testing.assert_array_equal(unchecked.weights, checked.weights)  # same path once the test passed
    # Not positive definite: rejected, or (without the test) weights that meet the budget for
    # that matrix; never an unchecked wrong answer.
    q, _ = np.linalg.qr(np.random.default_rng(2).normal(size=(n, n)))
    eigenvalues = np.linspace(1.0, 2.0, n)
    eigenvalues[0] = -0.05
    indefinite = (q * eigenvalues) @ q.T
    indefinite = 0.5 * (indefinite + indefinite.T)
    with pytest.raises(SingularCovarianceError, match="positive definite"):
        solve_equal_risk_contribution(indefinite)
    try:
        result = solve_equal_risk_contribution(indefinite, check_positive_definite=False)
    except SingularCovarianceError:
        return
    assert budget_error(result.weights, indefinite, np.full(n, 1.0 / n)) <= 1e-12


def test_not_converged_within_max_iter_sweeps_uses_newton() -> None:
    cov = factor_covariance(7, 30)
    result = solve_equal_risk_contribution(cov, max_iter=3)  # 3 sweeps cannot reach 1e-12
    reference = _newton_risk_budgeting(cov, None, 1e-12, 3)
    np.testing.assert_array_equal(result.weights, reference.weights)  # same path: the Newton fallback itself
    assert result.iterations == 3 + reference.iterations


def test_bounded_solve_refines_a_warm_start_that_already_meets_the_inner_tolerance() -> None:
    # A 2-asset case where the rescaled warm start for each new lambda met the inner residual
    # test without a Newton step: sum(w) stalled 1.7e-12 below 1 for all 100 outer iterations.
    cov = np.array([[2.84908554e-03, 1.49264570e-02], [1.49264570e-02, 3.85046285e00]])
    budget = np.array([0.44785926, 0.55214074])
    budget = budget / budget.sum()
    lower, upper = np.full(2, 0.6875 / 2), np.ones(2)
    result = solve_risk_budgeting(cov, budget, (lower, upper))
    assert result.lower_bound_active == (1,) and result.upper_bound_active == ()
    # w[1] assigned the bound; w0 *= (1 - 0.34375) / w0 (1 - 0.34375 exact): 2 roundings of ~0.66, the sum U.
    assert result.weights[1] == lower[1] and abs(result.weights.sum() - 1.0) <= 3 * U
    # One free asset: kappa = RRC_0 / b_0, then |RRC_0 - kappa b_0| is the rounding of a division and a
    # product (fl(fl(r / b) b) need not be r: e.g. r = 1, b = 49), at most 2U RRC_0.
    assert result.max_free_budget_error <= 2 * U * result.relative_risk_contributions[0]


@pytest.mark.parametrize("n", [3, 30, 60])
def test_kernel_solves_the_symmetric_part_of_a_slightly_asymmetric_covariance(n: int) -> None:
    cov = factor_covariance(9, n)
    skewed = cov.copy()
    skewed[0, n - 1] *= 1.0 + 1e-13  # within the documented 1e-10 relative symmetry limit
    assert not np.array_equal(skewed, skewed.T)
    status, out, _, _, error = _ccd_kernel(skewed, np.empty(0), 1e-12, 100, True)
    assert status == _KERNEL_OK and error <= 1e-12
    symmetric = 0.5 * (skewed + skewed.T)
    # Same path: the kernel symmetrises with (a + b) * 0.5, the same (commutative, exactly halved) values.
    np.testing.assert_array_equal(out[0], solve_equal_risk_contribution(symmetric).weights)
    assert budget_error(out[0], symmetric, np.full(n, 1.0 / n)) <= 1e-12


# --------------------------------------------------------------------------- #
# Positive definiteness above the compiled Cholesky's size: the float32 certificate
# --------------------------------------------------------------------------- #
from scipy.linalg.lapack import spotrf  # noqa: E402

from keeper.risk_budgeting import _validate_covariance  # noqa: E402
from keeper.risk_budgeting_kernel import (  # noqa: E402
    _KERNEL_CHOLESKY_MAX_N,
    _certificate_shift,
    _certifies_positive_definite,
    _is_positive_definite,
)


def with_smallest_correlation_eigenvalue(cov: np.ndarray, value: float) -> np.ndarray:
    """``cov`` whose correlation matrix has its smallest eigenvalue replaced by ``value`` (same
    eigenvectors, so a negative ``value`` makes it indefinite along a mixed-sign direction),
    scaled back by ``cov``'s volatilities."""
    vols = np.sqrt(np.diag(cov))
    eigenvalues, q = np.linalg.eigh(cov / np.outer(vols, vols))
    eigenvalues[0] = value
    out = (q * eigenvalues) @ q.T * np.outer(vols, vols)
    return 0.5 * (out + out.T)


def smallest_correlation_eigenvalue(cov: np.ndarray) -> float:
    vols = np.sqrt(np.diag(cov))
    return float(np.linalg.eigvalsh(cov / np.outer(vols, vols))[0])


# LAPACK's float64 eigenvalues are within about n u ||C||_2 <= n^2 u of the exact ones for a
# correlation matrix C (||C||_2 <= n): below this, the sign of a test matrix's smallest eigenvalue
# is what eigvalsh says.
def eigenvalue_sign_is_certain(value: float, n: int) -> bool:
    return abs(value) > 8 * n * n * U


@pytest.mark.parametrize("n", [_KERNEL_CHOLESKY_MAX_N + 1, 32, 49, 80, 200])
def test_the_float32_certificate_proves_realistic_covariances_and_never_an_indefinite_one(n: int) -> None:
    cov = factor_covariance(11, n)
    inv_vols = 1.0 / np.sqrt(np.diag(cov))
    assert _certifies_positive_definite(cov, inv_vols)  # the realistic case takes the fast path
    unshifted_passes = 0
    for negative in (1e-2, 1e-4, 1e-6, 1e-7, 1e-8, 1e-9, 3e-10, 1e-10):
        indefinite = with_smallest_correlation_eigenvalue(cov, -negative)
        smallest = smallest_correlation_eigenvalue(indefinite)
        assert smallest < 0.0 and eigenvalue_sign_is_certain(smallest, n)
        inv = 1.0 / np.sqrt(np.diag(indefinite))
        assert not _certifies_positive_definite(indefinite, inv)
        assert not _is_positive_definite(indefinite, inv)
        corr32 = np.asfortranarray(indefinite * np.outer(inv, inv), dtype=np.float32)
        unshifted_passes += spotrf(corr32, lower=0, clean=0, overwrite_a=1)[1] == 0
    if n in (32, 49, 80):
        # Without the shift, a float32 Cholesky passes some of these indefinite matrices at these
        # sizes (at n = 25 and 200 their roundings happen to fail it too): the shift derived in
        # _certifies_positive_definite is what makes the certificate a proof, and this test would
        # catch its loss.
        assert unshifted_passes > 0
    # The shift is about n^2 2^-24: the margin on the smallest correlation eigenvalue.
    assert 0.9 * n * n * 2.0**-24 < _certificate_shift(n) < 1.2 * (n + 2) ** 2 * 2.0**-24


@pytest.mark.parametrize("n", [_KERNEL_CHOLESKY_MAX_N + 1, 60, 120, 200])
def test_an_indefinite_covariance_is_refused_even_when_the_solve_itself_converges(n: int) -> None:
    indefinite = with_smallest_correlation_eigenvalue(factor_covariance(12, n), -1e-3)
    assert smallest_correlation_eigenvalue(indefinite) < 0.0
    # Without the test the kernel converges on this matrix: only the positive-definiteness
    # test can refuse it.
    status, _, _, _, _ = _ccd_kernel(indefinite, np.empty(0), 1e-12, 100, False)
    assert status == _KERNEL_OK
    with pytest.raises(SingularCovarianceError) as expected:
        _validate_covariance(indefinite)  # the reference path's error
    with pytest.raises(SingularCovarianceError, match="not positive definite") as refused:
        solve_equal_risk_contribution(indefinite)
    assert str(refused.value) == str(expected.value)  # the same clear error, whichever test refused it


@pytest.mark.parametrize("n", [60, 120])
def test_positive_definite_below_the_float32_margin_is_accepted_by_the_float64_test(n: int) -> None:
    cov = factor_covariance(13, n)
    near_singular = with_smallest_correlation_eigenvalue(cov, 0.02 * _certificate_shift(n))
    smallest = smallest_correlation_eigenvalue(near_singular)
    assert 0.0 < smallest < _certificate_shift(n) and eigenvalue_sign_is_certain(smallest, n)
    inv_vols = 1.0 / np.sqrt(np.diag(near_singular))
    assert not _certifies_positive_definite(near_singular, inv_vols)  # proves nothing here
    assert _is_positive_definite(near_singular, inv_vols)  # the float64 test decides
    checked = solve_equal_risk_contribution(near_singular)
    unchecked = solve_equal_risk_contribution(near_singular, check_positive_definite=False)
    np.testing.assert_array_equal(checked.weights, unchecked.weights)  # same path once accepted


def test_an_asymmetric_covariance_is_refused_above_the_compiled_cholesky_size() -> None:
    cov = factor_covariance(14, 60)
    cov[0, 1] += 1e-6
    with pytest.raises(SingularCovarianceError, match="not symmetric"):
        solve_equal_risk_contribution(cov)
