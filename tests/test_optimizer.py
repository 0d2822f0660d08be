"""Tests of keeper.optimizer: risk decomposition and the risk-budgeting solver.

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

from keeper.errors import (
    ConfigError,
    KeeperError,
    SingularCovarianceError,
    SolverDidNotConvergeError,
)
from keeper.optimizer import (
    TargetWeights,
    equal_weights,
    inverse_volatility_weights,
    marginal_risk_contributions,
    portfolio_volatility,
    relative_risk_contributions,
    risk_contributions,
    solve_equal_risk_contribution,
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
    np.testing.assert_allclose(result.risk_budget, budget, rtol=1e-15, atol=0)


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


# --------------------------------------------------------------------------- #
# Risk decomposition identities
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("seed", range(5))
def test_risk_contributions_sum_to_volatility(seed: int) -> None:
    cov = random_covariance(seed, 7)
    w = np.random.default_rng(100 + seed).normal(size=7)  # any sign: identities hold
    sigma = portfolio_volatility(w, cov)
    np.testing.assert_allclose(sigma, math.sqrt(w @ cov @ w), rtol=1e-14)
    np.testing.assert_allclose(risk_contributions(w, cov).sum(), sigma, rtol=1e-12)
    np.testing.assert_allclose(relative_risk_contributions(w, cov).sum(), 1.0, rtol=1e-12)
    np.testing.assert_allclose(
        relative_risk_contributions(w, cov), risk_contributions(w, cov) / sigma, rtol=1e-13
    )


@pytest.mark.parametrize("seed", range(5))
def test_euler_allocation_and_marginal_risk_is_the_gradient(seed: int) -> None:
    cov = random_covariance(seed, 6)
    w = np.random.default_rng(200 + seed).uniform(0.05, 1.0, size=6)
    mrc = marginal_risk_contributions(w, cov)
    # Euler: sigma is 1-homogeneous, so sigma(w) = w . grad sigma(w).
    np.testing.assert_allclose(w @ mrc, portfolio_volatility(w, cov), rtol=1e-13)
    np.testing.assert_allclose(risk_contributions(w, cov), w * mrc, rtol=1e-13)
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
    np.testing.assert_allclose(
        relative_risk_contributions(3.0 * w, cov), relative_risk_contributions(w, cov), rtol=1e-13
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
    np.testing.assert_allclose(result.portfolio_volatility, portfolio_volatility(w, cov), rtol=1e-14)
    np.testing.assert_allclose(result.risk_contributions, risk_contributions(w, cov), rtol=1e-12)
    np.testing.assert_allclose(
        result.relative_risk_contributions, relative_risk_contributions(w, cov), rtol=1e-12
    )
    np.testing.assert_allclose(result.risk_contributions.sum(), result.portfolio_volatility, rtol=1e-12)
    assert 1 <= result.iterations <= 100
    assert result.max_budget_error == pytest.approx(budget_error(w, cov, result.risk_budget), abs=1e-15)


def test_result_is_immutable() -> None:
    result = solve_equal_risk_contribution(random_covariance(0, 4))
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.iterations = 0  # type: ignore[misc]
    with pytest.raises(ValueError):
        result.weights[0] = 1.0


def test_default_budget_is_equal_budget() -> None:
    cov = random_covariance(2, 6)
    np.testing.assert_allclose(
        solve_equal_risk_contribution(cov).weights,
        solve_equal_risk_contribution(cov, np.full(6, 1 / 6)).weights,
        rtol=1e-13,
    )


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
    np.testing.assert_allclose(
        scaled.portfolio_volatility, math.sqrt(scale) * base.portfolio_volatility, rtol=1e-12
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
    np.testing.assert_allclose(inverse_volatility_weights(cov), inv / inv.sum(), rtol=1e-14)
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
    np.testing.assert_allclose(result.risk_budget, budget / budget.sum(), rtol=1e-15)
    assert abs(result.risk_budget.sum() - 1.0) <= 1e-15


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
