"""Tests of keeper.returns, keeper.covariance, keeper.covariance_repair and keeper.conditioning_gate:
returns, estimators, missing data, repair and the conditioning gate.

Every random number generator is seeded; tests state defining properties
(exact limits, closed forms, an independent loop-based reference) rather than
snapshot values.  No timing assertions.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import tomllib

import numpy as np
import pydantic
import pytest
from sklearn.covariance import LedoitWolf
from reference_estimators import (
    estimate_covariance,
    ewma_covariance,
    inverse_volatility_weights,
    ledoit_wolf_covariance,
    sample_covariance,
)
from tolerances import U, assert_entries_within, covariance_atol, gamma, sum_rtol

from keeper.build import PROJECT_ROOT
from keeper.conditioning_gate import DEFAULT_SHRINKAGE_STEPS, gated_covariance
from keeper.covariance import CovarianceEstimate, EstimatorConfig, covariance_from_config
from keeper.covariance_repair import condition_number, repair_covariance, shrink_covariance
from keeper.data import load_prices
from keeper.errors import (
    ConfigError,
    EstimatorConfigError,
    InsufficientHistoryError,
    InvalidPriceError,
    KeeperError,
    MissingObservationError,
    SingularCovarianceError,
)
from keeper.returns import reindex_daily, simple_returns, simple_returns_with_missing


# --------------------------------------------------------------------------- #
# Helpers
# --------------------------------------------------------------------------- #
def random_returns(seed: int, n_obs: int, n_assets: int, daily_vol: float = 0.03) -> np.ndarray:
    """Correlated Gaussian daily returns, shape (n_obs, n_assets)."""
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(n_assets, n_assets)) / math.sqrt(n_assets) + np.eye(n_assets)
    return 0.0005 + daily_vol * rng.normal(size=(n_obs, n_assets)) @ mixing.T / 1.5


def prices_from_returns(returns: np.ndarray, start: float = 100.0) -> np.ndarray:
    """Price path whose simple returns are ``returns``, shape (n_obs + 1, n)."""
    growth = np.vstack([np.ones((1, returns.shape[1])), np.cumprod(1.0 + returns, axis=0)])
    return start * growth


def loop_reference_ewma(returns: np.ndarray, half_life: float, demean: bool) -> np.ndarray:
    """Deliberately naive per-period EWMA covariance (explicit Python loops)."""
    n_obs, n = returns.shape
    lam = 0.5 ** (1.0 / half_life)
    raw = [lam ** (n_obs - 1 - t) for t in range(n_obs)]  # newest row: weight 1
    total = sum(raw)
    w = [r / total for r in raw]
    mean = [sum(w[t] * returns[t, i] for t in range(n_obs)) for i in range(n)] if demean else [0.0] * n
    cov = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            cov[i, j] = sum(
                w[t] * (returns[t, i] - mean[i]) * (returns[t, j] - mean[j]) for t in range(n_obs)
            )
    if demean:
        cov /= 1.0 - sum(x * x for x in w)
    return cov


# --------------------------------------------------------------------------- #
# simple_returns
# --------------------------------------------------------------------------- #
def test_simple_returns_definition_and_round_trip() -> None:
    r = random_returns(seed=1, n_obs=50, n_assets=3)
    p = prices_from_returns(r)
    out = simple_returns(p)
    assert out.shape == (50, 3)
    assert out.dtype == np.float64
    np.testing.assert_allclose(out, p[1:] / p[:-1] - 1.0, rtol=0, atol=0)  # same path: the same formula, exact
    # p_{t+1} / p_t = (1 + r_t)(1 + e), |e| <= 5U (1 + r, the cumulative product, the two * 100, the
    # division); - 1 cancels, so the bound is absolute: gamma(5) |1 + r| + U |r|.
    np.testing.assert_allclose(out, r, rtol=0, atol=float(np.max(gamma(5) * np.abs(1 + r) + U * np.abs(r))))


def test_simple_returns_are_scale_invariant() -> None:
    p = prices_from_returns(random_returns(seed=2, n_obs=30, n_assets=2))
    # Rounding p * 1e-6 (U per price) moves each ratio by <= 2U, plus one division each: absolute after - 1.
    ratio = p[1:] / p[:-1]
    np.testing.assert_allclose(simple_returns(p * 1e-6), simple_returns(p), rtol=0, atol=gamma(4) * float(ratio.max()))


@pytest.mark.parametrize("bad_value", [0.0, -1.0, np.nan, np.inf, -np.inf])
def test_simple_returns_rejects_invalid_price(bad_value: float) -> None:
    p = prices_from_returns(random_returns(seed=3, n_obs=10, n_assets=3))
    p[4, 2] = bad_value
    with pytest.raises(InvalidPriceError) as excinfo:
        simple_returns(p)
    message = str(excinfo.value)
    assert "row 4" in message and "column 2" in message
    assert repr(float(bad_value)) in message


def test_simple_returns_needs_two_rows() -> None:
    with pytest.raises(InsufficientHistoryError, match="1 price row"):
        simple_returns(np.array([[1.0, 2.0]]))


def test_simple_returns_rejects_non_2d() -> None:
    with pytest.raises(ConfigError, match="shape"):
        simple_returns(np.array([1.0, 2.0, 3.0]))


# --------------------------------------------------------------------------- #
# EWMA: limits and independent references
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("n_obs,n_assets", [(30, 2), (250, 5), (1000, 8)])
def test_infinite_half_life_is_exactly_np_cov(seed: int, n_obs: int, n_assets: int) -> None:
    r = random_returns(seed, n_obs, n_assets)
    reference = 365.0 * np.cov(r, rowvar=False)
    # Two evaluations of the same estimate (weights 2^0 = 1 exactly, then 1/N): covariance_atol each,
    # times 365, and the annualisation and symmetrisation roundings (3U).
    atol = 2 * 365.0 * covariance_atol(r) + 3 * U * np.abs(reference)
    for est in (ewma_covariance(r, math.inf), sample_covariance(r)):
        assert_entries_within(est.covariance, reference, atol)
        assert est.half_life_days == math.inf


@pytest.mark.parametrize("seed", [0, 1])
def test_ewma_tends_to_np_cov_as_half_life_grows(seed: int) -> None:
    """EWMA -> np.cov as h -> inf, with error O(T ln2 / h).

    The weights differ from 1/T by a relative ``~ a_t ln2 / h <= T ln2 / h``,
    so at ``h = 1e9`` days and ``T = 500`` the covariance can only agree with
    ``np.cov`` to ~1e-8 relative *mathematically* (not a numerical issue);
    agreement to 1e-10 needs ``h >~ 1e12``.  We check the first-order bound at
    1e9, the 1/h rate, and 1e-10 agreement at 1e13.
    """
    n_obs = 500
    r = random_returns(seed, n_obs, 4)
    reference = np.cov(r, rowvar=False)
    scale = np.max(np.abs(reference))

    def rel_err(h: float) -> float:
        est = ewma_covariance(r, h, periods_per_year=1)
        return float(np.max(np.abs(est.covariance - reference)) / scale)

    first_order_bound = 10.0 * n_obs * math.log(2.0) / 1e9
    err_9, err_12, err_13 = rel_err(1e9), rel_err(1e12), rel_err(1e13)
    assert err_9 <= first_order_bound
    assert err_12 <= err_9 / 100.0  # error shrinks like 1/h
    assert err_13 <= 1e-10


@pytest.mark.parametrize("half_life", [1.0, 5.0, 30.0])
@pytest.mark.parametrize("demean", [True, False])
def test_ewma_matches_naive_loop_reference(half_life: float, demean: bool) -> None:
    r = random_returns(seed=7, n_obs=60, n_assets=3)
    est = ewma_covariance(r, half_life, periods_per_year=1, demean=demean)
    expected = loop_reference_ewma(r, half_life, demean)
    np.testing.assert_allclose(est.covariance, expected, rtol=1e-11, atol=1e-18)


def test_ewma_matches_np_cov_with_reliability_weights() -> None:
    r = random_returns(seed=8, n_obs=200, n_assets=4)
    half_life = 20.0
    ages = np.arange(r.shape[0] - 1, -1, -1)
    aweights = 0.5 ** (ages / half_life)
    expected = np.cov(r, rowvar=False, aweights=aweights)
    est = ewma_covariance(r, half_life, periods_per_year=1)
    np.testing.assert_allclose(est.covariance, expected, rtol=1e-11)


def test_short_half_life_weights_recent_data() -> None:
    """After a volatility regime change, a short half-life sees the new regime."""
    rng = np.random.default_rng(11)
    calm = 0.01 * rng.normal(size=(400, 2))
    stressed = 0.05 * rng.normal(size=(100, 2))
    annual_var_calm, annual_var_stressed = 365 * 0.01**2, 365 * 0.05**2

    recent_stress = np.vstack([calm, stressed])
    short = ewma_covariance(recent_stress, half_life_days=10)
    long = sample_covariance(recent_stress)
    np.testing.assert_allclose(np.diag(short.covariance), annual_var_stressed, rtol=0.35)
    assert np.all(np.diag(short.covariance) > 2.0 * np.diag(long.covariance))

    recent_calm = np.vstack([stressed, calm])  # same data, regimes swapped in time
    short_calm = ewma_covariance(recent_calm, half_life_days=10)
    np.testing.assert_allclose(np.diag(short_calm.covariance), annual_var_calm, rtol=0.35)


def test_only_order_matters_not_labels() -> None:
    """Reversing time changes an EWMA estimate but never a sample covariance."""
    r = random_returns(seed=12, n_obs=300, n_assets=3)
    # The same terms summed in another order: two evaluations, annualised and symmetrised.
    forward = sample_covariance(r).covariance
    assert_entries_within(sample_covariance(r[::-1]).covariance, forward,
                          2 * 365.0 * covariance_atol(r) + 4 * U * np.abs(forward))
    assert not np.allclose(
        ewma_covariance(r[::-1], 10).covariance, ewma_covariance(r, 10).covariance, rtol=1e-3
    )


def test_asset_permutation_equivariance() -> None:
    r = random_returns(seed=13, n_obs=200, n_assets=5)
    perm = np.array([3, 0, 4, 1, 2])
    a = ewma_covariance(r, 30).covariance
    b = ewma_covariance(r[:, perm], 30).covariance
    # Same weights; each entry the same terms, possibly summed in another order by the matrix product.
    weights = 0.5 ** (np.arange(199, -1, -1) / 30)
    atol = 2 * 365.0 * covariance_atol(r, weights, weight_rtol=0.0) + 4 * U * np.abs(a)
    assert_entries_within(b, a[np.ix_(perm, perm)], atol[np.ix_(perm, perm)])


# --------------------------------------------------------------------------- #
# Output structure
# --------------------------------------------------------------------------- #
def test_annualisation_factor() -> None:
    r = random_returns(seed=4, n_obs=300, n_assets=3)
    daily = ewma_covariance(r, 60, periods_per_year=1)
    crypto = ewma_covariance(r, 60, periods_per_year=365)
    equity = ewma_covariance(r, 60, periods_per_year=252)
    # The same per-period matrix S: fl(0.5 (fl(P S_ij) + fl(P S_ji))) vs P fl(0.5 (S_ij + S_ji)): <= 5
    # roundings. The volatilities: half of that through sqrt, the sqrts and the product (3U). The
    # correlations (|rho| <= 1): from inputs within gamma(5), 3 roundings each (outer, divide, symmetrise).
    np.testing.assert_allclose(crypto.covariance, 365 * daily.covariance, rtol=gamma(5))
    np.testing.assert_allclose(equity.covariance, 252 * daily.covariance, rtol=gamma(5))
    np.testing.assert_allclose(crypto.volatilities, math.sqrt(365) * daily.volatilities, rtol=gamma(6))
    np.testing.assert_allclose(crypto.correlation, daily.correlation, atol=3 * gamma(5) + 6 * U)
    assert crypto.periods_per_year == 365 and equity.periods_per_year == 252


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("half_life", [3.0, 30.0, math.inf])
def test_output_is_symmetric_positive_definite_and_consistent(seed: int, half_life: float) -> None:
    r = random_returns(seed, n_obs=120, n_assets=6)
    est = ewma_covariance(r, half_life)
    cov = est.covariance
    assert isinstance(est, CovarianceEstimate)
    assert cov.shape == (6, 6) and est.volatilities.shape == (6,) and est.correlation.shape == (6, 6)
    np.testing.assert_array_equal(cov, cov.T)  # exact: 0.5 (C + C') is symmetric bit for bit (+ commutes)
    eigenvalues = np.linalg.eigvalsh(cov)
    assert eigenvalues.min() > 0.0
    np.testing.assert_allclose(est.condition_number, eigenvalues.max() / eigenvalues.min(), rtol=1e-8)
    np.testing.assert_array_equal(est.volatilities, np.sqrt(np.diag(cov)))  # same path: the same sqrt of the same diagonal
    np.testing.assert_array_equal(np.diag(est.correlation), 1.0)  # exact: assigned
    np.testing.assert_array_equal(est.correlation, est.correlation.T)  # exact: symmetrised as 0.5 (R + R')
    assert np.all(np.abs(est.correlation) <= 1.0)
    # rho = C / (v v') symmetrised (3 roundings, and v = sqrt(C_ii) within U each), times v v' (2): gamma(8).
    np.testing.assert_allclose(
        est.correlation * np.outer(est.volatilities, est.volatilities), cov, rtol=gamma(8)
    )
    assert est.n_observations == 120
    assert est.half_life_days == half_life


def test_estimate_is_immutable() -> None:
    est = ewma_covariance(random_returns(seed=5, n_obs=50, n_assets=2), 10)
    with pytest.raises(dataclasses.FrozenInstanceError):
        est.half_life_days = 1.0  # type: ignore[misc]
    for array in (est.covariance, est.volatilities, est.correlation):
        with pytest.raises(ValueError):
            array[0] = 0.0


def test_input_is_not_modified() -> None:
    r = random_returns(seed=6, n_obs=50, n_assets=3)
    copy = r.copy()
    ewma_covariance(r, 10)
    np.testing.assert_array_equal(r, copy)


# --------------------------------------------------------------------------- #
# Errors
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("bad_half_life", [0.0, -5.0, np.nan])
def test_non_positive_half_life_is_config_error(bad_half_life: float) -> None:
    r = random_returns(seed=9, n_obs=50, n_assets=2)
    with pytest.raises(ConfigError, match="half_life_days"):
        ewma_covariance(r, bad_half_life)


@pytest.mark.parametrize("bad_periods", [0, -365, 2.5])
def test_bad_periods_per_year_is_config_error(bad_periods: float) -> None:
    r = random_returns(seed=9, n_obs=50, n_assets=2)
    with pytest.raises(ConfigError, match="periods_per_year"):
        ewma_covariance(r, 10, periods_per_year=bad_periods)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad_value", [np.nan, np.inf])
def test_non_finite_return_is_invalid_price_error(bad_value: float) -> None:
    r = random_returns(seed=10, n_obs=50, n_assets=3)
    r[7, 1] = bad_value
    with pytest.raises(InvalidPriceError, match="row 7, column 1"):
        ewma_covariance(r, 10)


def test_bad_price_propagates_as_invalid_price_error() -> None:
    p = prices_from_returns(random_returns(seed=10, n_obs=50, n_assets=3))
    p[20, 0] = 0.0
    with pytest.raises(InvalidPriceError):
        ewma_covariance(simple_returns(p), 10)


def test_insufficient_history_default_minimum() -> None:
    r = random_returns(seed=14, n_obs=5, n_assets=5)  # needs n_assets + 1 = 6
    with pytest.raises(InsufficientHistoryError) as excinfo:
        ewma_covariance(r, 10)
    assert "got 5" in str(excinfo.value) and "6" in str(excinfo.value)
    ewma_covariance(random_returns(seed=14, n_obs=6, n_assets=5), math.inf)  # 6 is enough


def test_insufficient_history_explicit_minimum() -> None:
    r = random_returns(seed=15, n_obs=59, n_assets=2)
    with pytest.raises(InsufficientHistoryError, match="at least 60"):
        ewma_covariance(r, 10, min_observations=60)
    ewma_covariance(r, 10, min_observations=59)


def test_identical_assets_are_singular() -> None:
    r = random_returns(seed=16, n_obs=300, n_assets=3)
    p = prices_from_returns(r)
    p_dup = np.column_stack([p, p[:, 1]])  # asset 3 is a copy of asset 1
    with pytest.raises(SingularCovarianceError) as excinfo:
        ewma_covariance(simple_returns(p_dup), 30)
    message = str(excinfo.value)
    assert "min eigenvalue" in message and "condition number" in message


def test_collinear_assets_are_singular() -> None:
    r = random_returns(seed=17, n_obs=300, n_assets=3)
    collinear = np.column_stack([r, 0.5 * r[:, 0] - 2.0 * r[:, 2]])
    with pytest.raises(SingularCovarianceError):
        sample_covariance(collinear)


def test_condition_number_limit_is_enforced() -> None:
    r = random_returns(seed=18, n_obs=300, n_assets=3)
    kappa = ewma_covariance(r, 30).condition_number
    with pytest.raises(SingularCovarianceError, match="limit"):
        ewma_covariance(r, 30, max_condition_number=kappa / 2)
    ewma_covariance(r, 30, max_condition_number=kappa * 2)


def test_errors_share_the_keeper_base_class() -> None:
    for error in (
        ConfigError,
        InvalidPriceError,
        InsufficientHistoryError,
        SingularCovarianceError,
        MissingObservationError,
        EstimatorConfigError,
    ):
        assert issubclass(error, KeeperError)
    assert issubclass(MissingObservationError, InvalidPriceError)
    assert issubclass(EstimatorConfigError, ConfigError) and issubclass(EstimatorConfigError, ValueError)


# --------------------------------------------------------------------------- #
# Ledoit-Wolf and shrinkage
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("n_obs,n_assets", [(40, 8), (250, 5), (12, 9)])
def test_ledoit_wolf_matches_scikit_learn_annualised(seed: int, n_obs: int, n_assets: int) -> None:
    r = random_returns(seed, n_obs, n_assets)
    reference = LedoitWolf().fit(r)
    est = ledoit_wolf_covariance(r)
    # Same path: both call sklearn's ledoit_wolf_shrinkage on the same centred rows.
    assert est.shrinkage == reference.shrinkage_
    # (1 - d) S + d tr(S)/n I with S = centred'centred / N (ours) vs np.cov(bias=True) (sklearn's): two
    # evaluations of S (covariance_atol with correction 1), of its trace (n of them), then <= 6 roundings.
    a = covariance_atol(r, correction=1.0)
    d = est.shrinkage
    n = r.shape[1]
    atol = 365.0 * (2 * (1 - d) * a + 2 * d * np.trace(a) / n * np.eye(n)) + gamma(6) * 365.0 * np.abs(reference.covariance_)
    assert_entries_within(est.covariance, 365.0 * reference.covariance_, atol)
    assert 0.0 <= est.shrinkage <= 1.0
    assert est.method == "ledoit_wolf" and est.half_life_days == math.inf
    assert est.n_observations == n_obs and est.periods_per_year == 365


def test_ledoit_wolf_target_is_the_scaled_identity_of_the_mle_covariance() -> None:
    """(1 - d) S + d tr(S)/n I with S the 1/T covariance, built here from np.cov(bias=True)."""
    r = random_returns(seed=3, n_obs=60, n_assets=4)
    s = np.cov(r, rowvar=False, bias=True)
    mu = np.trace(s) / 4
    a = covariance_atol(r, correction=1.0)  # two evaluations of S, of its trace, then <= 6 roundings
    for delta in (0.0, 0.3, 1.0):
        est = ledoit_wolf_covariance(r, periods_per_year=1, shrinkage=delta)
        expected = (1 - delta) * s + delta * mu * np.eye(4)
        atol = 2 * (1 - delta) * a + 2 * delta * np.trace(a) / 4 * np.eye(4) + gamma(6) * np.abs(expected)
        assert_entries_within(est.covariance, expected, atol)
        assert est.shrinkage == delta


def test_ledoit_wolf_without_demeaning_matches_assume_centered() -> None:
    r = random_returns(seed=4, n_obs=80, n_assets=3)
    reference = LedoitWolf(assume_centered=True).fit(r)
    est = ledoit_wolf_covariance(r, demean=False)
    # As in test_ledoit_wolf_matches_scikit_learn_annualised, with S = r'r / N (no centring).
    a = covariance_atol(r, demean=False, correction=1.0)
    d, n = est.shrinkage, r.shape[1]
    atol = 365.0 * (2 * (1 - d) * a + 2 * d * np.trace(a) / n * np.eye(n)) + gamma(6) * 365.0 * np.abs(reference.covariance_)
    assert_entries_within(est.covariance, 365.0 * reference.covariance_, atol)


def test_ledoit_wolf_is_well_conditioned_with_fewer_rows_than_assets() -> None:
    r = random_returns(seed=5, n_obs=6, n_assets=10)
    with pytest.raises((SingularCovarianceError, InsufficientHistoryError)):
        sample_covariance(r, min_observations=2)
    est = ledoit_wolf_covariance(r)
    assert 0.0 < est.shrinkage <= 1.0
    assert np.linalg.eigvalsh(est.covariance).min() > 0.0
    assert math.isfinite(est.condition_number)


def test_shrinkage_moves_eigenvalues_towards_their_mean_and_keeps_the_trace() -> None:
    cov = sample_covariance(random_returns(seed=6, n_obs=100, n_assets=5)).covariance
    eigenvalues = np.linalg.eigvalsh(cov)
    mu = eigenvalues.mean()
    kappas = []
    for delta in (0.0, 0.2, 0.5, 0.9, 1.0):
        shrunk = shrink_covariance(cov, delta)
        np.testing.assert_array_equal(shrunk, shrunk.T)  # exact: the same operations on C_ij = C_ji
        # (1 - d) C_ii + d tr/n summed vs tr: two 5-term sums of positive terms and <= 4 roundings.
        assert np.trace(shrunk) == pytest.approx(np.trace(cov), rel=2 * sum_rtol(5) + 4 * U)
        np.testing.assert_allclose(
            np.linalg.eigvalsh(shrunk), (1 - delta) * eigenvalues + delta * mu, rtol=1e-10
        )
        kappas.append(condition_number(shrunk))
    assert all(b < a for a, b in zip(kappas, kappas[1:]))
    # Exact in fact: d = 1 gives 0 * C + mu I = mu I bit for bit, whose eigenvalues LAPACK returns as the
    # diagonal (nothing to rotate); mu / mu = 1.
    assert kappas[-1] == pytest.approx(1.0, abs=2 * U)
    np.testing.assert_array_equal(shrink_covariance(cov, 0.0), cov)  # exact: 1 * C + 0


@pytest.mark.parametrize("bad", [-0.1, 1.5, np.nan])
def test_shrinkage_outside_unit_interval_is_config_error(bad: float) -> None:
    with pytest.raises(ConfigError, match="shrinkage"):
        shrink_covariance(np.eye(2), bad)
    with pytest.raises(ConfigError, match="shrinkage"):
        estimate_covariance(random_returns(1, 30, 2), "sample", shrinkage=bad)


def test_explicit_shrinkage_on_ewma_and_sample() -> None:
    r = random_returns(seed=7, n_obs=90, n_assets=4)
    for method, params in (("ewma", {"half_life_days": 20.0}), ("sample", {})):
        plain = estimate_covariance(r, method, **params)
        shrunk = estimate_covariance(r, method, shrinkage=0.4, **params)
        # Shrunk per period then annualised (ours: annualised then shrunk): the trace (2 sum_rtol(n)) and
        # <= 13 scalar roundings in all (scalings, products, the sum, two symmetrisations).
        np.testing.assert_allclose(shrunk.covariance, shrink_covariance(plain.covariance, 0.4),
                                   rtol=2 * sum_rtol(4) + 13 * U)
        assert shrunk.shrinkage == 0.4 and plain.shrinkage == 0.0
        assert shrunk.condition_number < plain.condition_number


@pytest.mark.parametrize(
    "params, fragment",
    [
        ({"method": "garch"}, "method"),
        ({"method": "ewma"}, "half_life_days"),
        ({"method": "sample", "half_life_days": 30.0}, "half_life_days"),
        ({"method": "ewma", "half_life_days": -1.0}, "half_life_days"),
        ({"method": "sample", "periods_per_year": 0}, "periods_per_year"),
        ({"method": "sample", "periods_per_year": True}, "periods_per_year"),
        ({"method": "sample", "missing": "ffill"}, "missing"),
        ({"method": "ledoit_wolf", "missing": "pairwise"}, "pairwise"),
        ({"method": "sample", "shrinkage": 2.0}, "shrinkage"),
        ({"method": "sample", "eigenvalue_floor": 0.0}, "eigenvalue_floor"),
        ({"method": "sample", "max_condition_number": 1.0}, "max_condition_number"),
        ({"method": "sample", "min_observations": -3}, "min_observations"),
        ({"method": "sample", "demean": "yes"}, "demean"),
        ({"method": "sample", "window": 30}, "unknown"),
    ],
)
def test_invalid_estimator_configuration_is_config_error(params: dict, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        EstimatorConfig.from_mapping(params)


def test_estimator_config_is_frozen_and_loads_from_toml_through_pydantic() -> None:
    text = """
    [estimator]
    method = "ewma"
    half_life_days = 45.0
    missing = "pairwise"
    shrinkage = 0.1
    """
    table = tomllib.loads(text)["estimator"]

    class Settings(pydantic.BaseModel):
        model_config = pydantic.ConfigDict(frozen=True)
        estimator: EstimatorConfig

    config = Settings(estimator=table).estimator
    assert config == EstimatorConfig(method="ewma", half_life_days=45.0, missing="pairwise", shrinkage=0.1)
    assert config == EstimatorConfig.from_mapping(table)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.method = "sample"  # type: ignore[misc]
    for bad in ({"method": "ewma"}, {"method": "ewma", "half_life_days": "thirty"}):
        with pytest.raises(pydantic.ValidationError, match="estimator") as excinfo:
            Settings(estimator=bad)
        assert "half_life_days" in str(excinfo.value)
    with pytest.raises(EstimatorConfigError) as direct:
        EstimatorConfig(method="ewma")
    assert isinstance(direct.value, ConfigError) and isinstance(direct.value, ValueError)


# --------------------------------------------------------------------------- #
# Missing observations
# --------------------------------------------------------------------------- #
def with_gaps(seed: int, n_obs: int, n_assets: int, blanks: dict[int, slice | list[int]]) -> np.ndarray:
    r = random_returns(seed, n_obs, n_assets)
    for column, rows in blanks.items():
        r[rows, column] = np.nan
    return r


def test_missing_observation_raises_by_default() -> None:
    r = with_gaps(1, 60, 3, {1: [17]})
    for call in (
        lambda: sample_covariance(r),
        lambda: ewma_covariance(r, 10),
        lambda: ledoit_wolf_covariance(r),
        lambda: estimate_covariance(r, "sample"),
    ):
        with pytest.raises(MissingObservationError, match="row 17, column 1") as excinfo:
            call()
        assert isinstance(excinfo.value, InvalidPriceError)
        assert "missing='drop_rows'" in str(excinfo.value)


@pytest.mark.parametrize("missing", ["drop_rows", "pairwise"])
def test_infinite_return_is_invalid_under_every_policy(missing: str) -> None:
    r = with_gaps(2, 60, 3, {0: [3]})
    r[40, 2] = np.inf
    with pytest.raises(InvalidPriceError, match="row 40, column 2") as excinfo:
        estimate_covariance(r, "sample", missing=missing)
    assert not isinstance(excinfo.value, MissingObservationError)


def test_drop_rows_sample_is_np_cov_of_the_complete_rows() -> None:
    r = with_gaps(3, 200, 4, {0: slice(0, 30), 2: [50, 51, 120], 3: [120, 199]})
    keep = ~np.isnan(r).any(axis=1)
    est = sample_covariance(r, missing="drop_rows")
    expected = 365 * np.cov(r[keep], rowvar=False)  # two evaluations on the complete rows
    assert_entries_within(est.covariance, expected, 2 * 365.0 * covariance_atol(r[keep]) + 3 * U * np.abs(expected))
    assert est.dropped_rows == 200 - keep.sum() == 34
    assert est.n_observations == keep.sum()
    np.testing.assert_array_equal(est.pair_observations, np.full((4, 4), keep.sum()))
    assert est.missing == "drop_rows" and est.repair is None


def test_drop_rows_ewma_ages_count_calendar_rows() -> None:
    """A dropped row still ages the older ones: weights 2^(-age/h) with age from the original row."""
    r = with_gaps(4, 150, 3, {1: [10, 11, 140, 149]})
    keep = ~np.isnan(r).any(axis=1)
    ages = np.arange(149, -1, -1)
    half_life = 12.0
    expected = np.cov(r[keep], rowvar=False, aweights=0.5 ** (ages[keep] / half_life))
    est = ewma_covariance(r, half_life, periods_per_year=1, missing="drop_rows")
    np.testing.assert_allclose(est.covariance, expected, rtol=1e-11)


def pairwise_reference(r: np.ndarray, half_life: float) -> tuple[np.ndarray, np.ndarray]:
    """Entry by entry np.cov on each pair's common rows (explicit loops)."""
    n_obs, n = r.shape
    weights = 0.5 ** (np.arange(n_obs - 1, -1, -1) / half_life)
    cov = np.zeros((n, n))
    counts = np.zeros((n, n), dtype=int)
    for i in range(n):
        for j in range(n):
            common = ~np.isnan(r[:, i]) & ~np.isnan(r[:, j])
            counts[i, j] = common.sum()
            pair = np.vstack([r[common, i], r[common, j]])
            cov[i, j] = np.cov(pair, aweights=weights[common])[0, 1]
    return cov, counts


@pytest.mark.parametrize("half_life", [math.inf, 25.0])
def test_pairwise_matches_per_pair_np_cov(half_life: float) -> None:
    r = with_gaps(5, 300, 4, {0: slice(0, 120), 1: [5, 6, 7, 250], 3: slice(280, 300)})
    r[100, :] = np.nan  # a day nobody reported
    method = "sample" if half_life == math.inf else "ewma"
    params = {} if method == "sample" else {"half_life_days": half_life}
    est = estimate_covariance(r, method, periods_per_year=1, missing="pairwise", **params)
    expected, counts = pairwise_reference(r, half_life)
    assert est.repair is not None and est.repair.eigenvalues_lifted == 0  # this one is PD already
    np.testing.assert_allclose(est.covariance, expected, rtol=1e-10)
    np.testing.assert_array_equal(est.pair_observations, counts)
    assert est.dropped_rows == 1 and est.n_observations == 299


def test_pairwise_on_complete_data_equals_the_complete_estimate() -> None:
    r = random_returns(seed=6, n_obs=120, n_assets=5)
    for method, params in (("sample", {}), ("ewma", {"half_life_days": 10.0})):
        full = estimate_covariance(r, method, **params)
        pairwise = estimate_covariance(r, method, missing="pairwise", **params)
        np.testing.assert_allclose(pairwise.covariance, full.covariance, rtol=1e-11)


def indefinite_pairwise_returns() -> np.ndarray:
    """A ~ B, B ~ C and A ~ -C on disjoint blocks of rows: the pairwise correlation is indefinite."""
    rng = np.random.default_rng(21)
    z = 0.02 * rng.normal(size=(3, 100))
    noise = 0.002 * rng.normal(size=(3, 100))
    r = np.full((300, 3), np.nan)
    r[0:100, 0], r[0:100, 1] = z[0], z[0] + noise[0]  # A ~ B
    r[100:200, 1], r[100:200, 2] = z[1], z[1] + noise[1]  # B ~ C
    r[200:300, 0], r[200:300, 2] = z[2], -z[2] + noise[2]  # A ~ -C
    return r


def test_indefinite_pairwise_estimate_is_repaired_and_says_so() -> None:
    r = indefinite_pairwise_returns()
    raw, counts = pairwise_reference(r, math.inf)
    assert np.linalg.eigvalsh(raw).min() < 0.0  # the raw pairwise matrix is not PSD
    est = sample_covariance(r, periods_per_year=1, missing="pairwise", min_observations=50)
    assert est.repair is not None and est.repair.eigenvalues_lifted == 1
    assert est.repair.min_eigenvalue_before < 0.0 and est.repair.condition_number_before == math.inf
    assert np.linalg.eigvalsh(est.covariance).min() > 0.0
    # Variances kept: two evaluations of a sum of squares (positive terms: gamma(N + 4) relative each).
    n_max = int(np.diag(counts).max())
    np.testing.assert_allclose(np.diag(est.covariance), np.diag(raw), rtol=2 * gamma(n_max + 4) + 4 * U)
    np.testing.assert_array_equal(est.pair_observations, counts)


def test_pairwise_needs_enough_common_rows_for_every_pair() -> None:
    r = with_gaps(7, 100, 3, {2: slice(0, 97)})  # asset 2 listed 3 days ago
    with pytest.raises(InsufficientHistoryError, match="assets 0 and 2") as excinfo:
        sample_covariance(r, missing="pairwise")
    assert "3 return rows" in str(excinfo.value)


def test_drop_rows_reports_the_counts_when_too_few_rows_are_left() -> None:
    r = with_gaps(8, 100, 3, {1: slice(0, 98)})
    with pytest.raises(InsufficientHistoryError, match="dropping 98 of 100") as excinfo:
        sample_covariance(r, missing="drop_rows")
    assert "[100, 2, 100]" in str(excinfo.value)


def test_simple_returns_with_missing_never_bridges_a_gap() -> None:
    r = random_returns(seed=9, n_obs=20, n_assets=2)
    p = prices_from_returns(r)
    p[7, 0] = np.nan
    out = simple_returns_with_missing(p)
    assert np.isnan(out[6, 0]) and np.isnan(out[7, 0])  # both returns touching the gap
    assert np.count_nonzero(np.isnan(out)) == 2
    keep = ~np.isnan(out)
    # As in test_simple_returns_definition_and_round_trip: absolute, gamma(5) |1 + r| + U |r|.
    np.testing.assert_allclose(out[keep], r[keep], rtol=0, atol=float(np.max(gamma(5) * np.abs(1 + r) + U * np.abs(r))))
    np.testing.assert_array_equal(simple_returns_with_missing(prices_from_returns(r)),
                                  simple_returns(prices_from_returns(r)))


@pytest.mark.parametrize("bad_value", [0.0, -2.0, np.inf])
def test_simple_returns_with_missing_rejects_invalid_present_prices(bad_value: float) -> None:
    p = prices_from_returns(random_returns(seed=10, n_obs=10, n_assets=2))
    p[3, 1] = bad_value
    with pytest.raises(InvalidPriceError, match="row 3, column 1"):
        simple_returns_with_missing(p)


def test_reindex_daily_inserts_blank_rows_for_skipped_days() -> None:
    dates = [dt.date(2024, 1, 1), dt.date(2024, 1, 2), dt.date(2024, 1, 5)]
    prices = np.array([[1.0, 2.0], [1.1, 2.1], [1.2, np.nan]])
    calendar, out = reindex_daily(dates, prices)
    assert calendar == tuple(dt.date(2024, 1, d) for d in range(1, 6))
    np.testing.assert_array_equal(out[[0, 1, 4]], prices)
    assert np.isnan(out[[2, 3]]).all()
    calendar, out = reindex_daily(dates, prices, start=dt.date(2023, 12, 31), end=dt.date(2024, 1, 2))
    assert len(calendar) == 3 and np.isnan(out[0]).all()
    np.testing.assert_array_equal(out[1:], prices[:2])
    with pytest.raises(ConfigError, match="strictly increasing"):
        reindex_daily([dates[1], dates[0]], prices[:2])
    with pytest.raises(ConfigError, match="dates"):
        reindex_daily(dates[:2], prices)


# --------------------------------------------------------------------------- #
# Real blanks: the unaligned Binance history
# --------------------------------------------------------------------------- #
RAW_CSV = PROJECT_ROOT / "data" / "crypto_daily_close_binance.csv"
RAW_SYMBOLS = ("BTC", "ETH", "BNB", "XRP", "ADA", "DOGE", "SOL", "TRX", "BCH")


@pytest.fixture(scope="module")
def raw_panel() -> tuple[tuple[dt.date, ...], np.ndarray]:
    """Every calendar day of the raw file, one column per asset, NaN where it has no close."""
    tables = [load_prices(RAW_CSV, [symbol]) for symbol in RAW_SYMBOLS]
    start = min(t.dates[0] for t in tables)
    end = max(t.dates[-1] for t in tables)
    columns = [reindex_daily(t.dates, t.prices, start, end) for t in tables]
    calendar = columns[0][0]
    return calendar, np.hstack([c[1] for c in columns])


def test_load_prices_drops_blank_rows_and_does_not_forward_fill() -> None:
    both = load_prices(RAW_CSV, ["BTC", "SOL"])
    sol_alone = load_prices(RAW_CSV, ["SOL"])
    btc_alone = load_prices(RAW_CSV, ["BTC"])
    assert both.dropped_rows == len(btc_alone.dates) - len(sol_alone.dates) > 1000
    assert both.dates == sol_alone.dates  # SOL's blank (pre-listing) rows are gone, not filled
    assert both.dates[0] == dt.date(2020, 8, 11)
    np.testing.assert_array_equal(both.prices[:, 1], sol_alone.prices[:, 0])


def test_raw_history_has_blanks_and_skipped_days(raw_panel) -> None:
    calendar, prices = raw_panel
    assert calendar[0] == dt.date(2017, 8, 17) and calendar[-1] == dt.date(2026, 3, 30)
    assert len(calendar) == (calendar[-1] - calendar[0]).days + 1
    all_missing = np.isnan(prices).all(axis=1)
    assert all_missing.sum() == 6  # the six days of 2026 the file has no row for
    assert calendar[int(np.argmax(all_missing))] == dt.date(2026, 1, 8)
    assert np.isnan(prices[:, RAW_SYMBOLS.index("SOL")]).sum() == 1090 + 6


def test_estimators_on_the_raw_history(raw_panel) -> None:
    calendar, prices = raw_panel
    returns = simple_returns_with_missing(prices)
    observed = ~np.isnan(returns)
    complete = observed.all(axis=1)

    with pytest.raises(MissingObservationError):
        sample_covariance(returns)

    dropped = sample_covariance(returns, missing="drop_rows")
    expected = 365 * np.cov(returns[complete], rowvar=False)  # two evaluations on the complete rows
    assert_entries_within(dropped.covariance, expected,
                          2 * 365.0 * covariance_atol(returns[complete]) + 3 * U * np.abs(expected))
    assert dropped.dropped_rows == returns.shape[0] - complete.sum()

    pairwise = ewma_covariance(returns, 90.0, missing="pairwise")
    np.testing.assert_array_equal(pairwise.pair_observations, observed.T.astype(int) @ observed.astype(int))
    btc, eth, sol = (RAW_SYMBOLS.index(s) for s in ("BTC", "ETH", "SOL"))
    assert pairwise.pair_observations[btc, eth] > pairwise.pair_observations[btc, sol]
    assert np.linalg.eigvalsh(pairwise.covariance).min() > 0.0
    assert 0.2 < pairwise.volatilities[btc] < 1.5  # annualised BTC volatility, fraction per sqrt-year

    decision = gated_covariance(returns, EstimatorConfig("ewma", 90.0, missing="pairwise"), 1e4)
    assert decision.action == "accept"
    assert decision.estimate is not None and decision.estimate.condition_number <= 1e4

    # A window where SOL has only just listed: no usable joint matrix, but variances exist.
    first_sol = int(np.argmax(observed[:, sol]))
    window = returns[first_sol - 200:first_sol + 5]
    config = EstimatorConfig("sample", missing="pairwise", min_observations=30)
    decision = gated_covariance(window, config, 1e4)
    assert decision.action == "inverse_volatility"
    assert decision.estimate.pair_observations[sol, sol] == 5
    assert f"assets {btc} and {sol} are both observed in only 5" in decision.reason


# --------------------------------------------------------------------------- #
# repair_covariance and condition_number
# --------------------------------------------------------------------------- #
def test_repair_lifts_negative_eigenvalues_and_keeps_variances() -> None:
    vols = np.array([0.5, 0.8, 0.3])
    corr = np.array([[1.0, 0.95, -0.9], [0.95, 1.0, 0.95], [-0.9, 0.95, 1.0]])
    cov = corr * np.outer(vols, vols)
    assert np.linalg.eigvalsh(corr).min() < 0
    repaired, report = repair_covariance(cov, 1e-4)
    np.testing.assert_array_equal(repaired, repaired.T)
    np.testing.assert_array_equal(np.diag(repaired), np.diag(cov))
    new_corr = repaired / np.outer(vols, vols)
    assert np.linalg.eigvalsh(new_corr).min() > 0.5e-4
    assert report.eigenvalues_lifted == 1 and report.min_eigenvalue_before < 0
    assert report.condition_number_before == math.inf
    assert report.condition_number_after == pytest.approx(condition_number(repaired), rel=1e-9)
    # |rho| <= 1 on both sides: the module's and our correlations each within <= 8 roundings of it.
    assert report.max_abs_correlation_change == pytest.approx(np.max(np.abs(new_corr - corr)), abs=gamma(16))


def test_repair_leaves_a_well_conditioned_matrix_unchanged() -> None:
    cov = sample_covariance(random_returns(seed=11, n_obs=100, n_assets=4)).covariance
    repaired, report = repair_covariance(cov)
    np.testing.assert_array_equal(repaired, cov)  # exact: nothing to lift, the input is returned
    assert report.eigenvalues_lifted == 0 and report.max_abs_correlation_change == 0.0


def test_repair_refuses_a_zero_variance_and_bad_arguments() -> None:
    with pytest.raises(SingularCovarianceError, match="variance of asset 1"):
        repair_covariance(np.diag([1.0, 0.0, 2.0]))
    with pytest.raises(ConfigError, match="eigenvalue_floor"):
        repair_covariance(np.eye(2), 1.0)
    with pytest.raises(ConfigError, match="square"):
        repair_covariance(np.ones((2, 3)))
    with pytest.raises(ConfigError, match="finite"):
        condition_number(np.array([[1.0, np.nan], [np.nan, 1.0]]))


def test_condition_number_definition() -> None:
    # eigvalsh of a diagonal matrix returns its entries (no rotation is applied); 4 / 0.5 is exact.
    assert condition_number(np.diag([4.0, 1.0, 0.5])) == pytest.approx(8.0, rel=2 * U)
    assert condition_number(np.ones((2, 2))) == math.inf
    assert condition_number(np.array([[1.0, 2.0], [2.0, 1.0]])) == math.inf  # indefinite


# --------------------------------------------------------------------------- #
# The conditioning gate: every path
# --------------------------------------------------------------------------- #
def test_gate_accepts_a_well_conditioned_estimate() -> None:
    r = random_returns(seed=12, n_obs=200, n_assets=4)
    config = EstimatorConfig("ewma", 30.0)
    decision = gated_covariance(r, config, 1e6)
    assert decision.action == "accept"
    np.testing.assert_array_equal(decision.estimate.covariance, covariance_from_config(r, config).covariance)
    assert decision.condition_numbers == (decision.estimate.condition_number,)
    assert len(decision.attempts) == 1 and decision.attempts[0].accepted
    assert "accepted" in decision.reason


def test_gate_shrinks_harder_until_the_limit_holds() -> None:
    r = random_returns(seed=13, n_obs=200, n_assets=4)
    config = EstimatorConfig("sample")
    base = covariance_from_config(r, config)
    at_quarter = condition_number(shrink_covariance(base.covariance, 0.25))
    at_tenth = condition_number(shrink_covariance(base.covariance, 0.1))
    limit = 0.5 * (at_quarter + at_tenth)  # 0.1 is not enough, 0.25 is
    decision = gated_covariance(r, config, limit)
    assert decision.action == "shrink"
    assert decision.estimate.shrinkage == 0.25
    assert decision.estimate.condition_number <= limit
    assert [a.stage for a in decision.attempts] == ["estimate", "shrink", "shrink"]
    assert [a.accepted for a in decision.attempts] == [False, False, True]
    assert decision.condition_numbers[0] == pytest.approx(base.condition_number, rel=1e-9)
    assert all(k > limit for k in decision.condition_numbers[:2])
    assert "exceeds the limit" in decision.reason and "0.25" in decision.reason


def test_gate_shrinks_a_singular_estimate() -> None:
    p = prices_from_returns(random_returns(seed=14, n_obs=200, n_assets=3))
    duplicated = simple_returns(np.column_stack([p, p[:, 0]]))
    decision = gated_covariance(duplicated, EstimatorConfig("ewma", 30.0), 1e3)
    assert decision.action == "shrink"
    assert decision.attempts[0].condition_number > 1e3
    assert np.linalg.eigvalsh(decision.estimate.covariance).min() > 0.0
    assert decision.estimate.condition_number <= 1e3


def test_gate_starts_above_the_ledoit_wolf_intensity() -> None:
    r = random_returns(seed=15, n_obs=30, n_assets=8)
    config = EstimatorConfig("ledoit_wolf")
    fitted = covariance_from_config(r, config).shrinkage
    decision = gated_covariance(r, config, 1.0001, shrinkage_steps=(0.05, 0.5, 0.999))
    tried = [a.shrinkage for a in decision.attempts if a.stage != "inverse_volatility"]
    assert tried[0] == fitted and all(s > fitted for s in tried[1:])


def test_gate_falls_back_to_inverse_volatility_when_no_step_is_enough() -> None:
    r = random_returns(seed=16, n_obs=200, n_assets=3)
    decision = gated_covariance(r, EstimatorConfig("ewma", 30.0), 1.0001)
    assert decision.action == "inverse_volatility"
    assert [a.stage for a in decision.attempts] == ["estimate"] + ["shrink"] * 4 + ["inverse_volatility"]
    est = decision.estimate
    expected_var = 365 * np.array([np.cov(r[:, i], aweights=0.5 ** (np.arange(199, -1, -1) / 30)) for i in range(3)])
    np.testing.assert_allclose(np.diag(est.covariance), expected_var, rtol=1e-11)
    np.testing.assert_array_equal(est.covariance, np.diag(np.diag(est.covariance)))
    np.testing.assert_array_equal(est.correlation, np.eye(3))
    np.testing.assert_array_equal(est.pair_observations, np.diag([200, 200, 200]))
    weights = inverse_volatility_weights(est.volatilities)
    # w_i v_i = ((1/v_i) / S) v_i with the same S: 3 roundings each, so two of them differ by <= 6U.
    np.testing.assert_allclose(weights * est.volatilities, np.full(3, (weights * est.volatilities)[0]), rtol=gamma(6))


def test_gate_falls_back_to_inverse_volatility_when_too_few_joint_rows() -> None:
    r = random_returns(seed=17, n_obs=4, n_assets=6)  # fewer rows than assets + 1
    decision = gated_covariance(r, EstimatorConfig("sample"), 1e4)
    assert decision.action == "inverse_volatility"
    assert decision.attempts[0].condition_number is None
    assert "InsufficientHistoryError" in decision.reason
    # Two evaluations of 4-row sums of squares (positive: gamma(N + 4) each), annualised (U each).
    np.testing.assert_allclose(np.diag(decision.estimate.covariance), 365 * np.var(r, axis=0, ddof=1),
                               rtol=2 * gamma(4 + 4) + 3 * U)


def test_gate_reports_a_pairwise_repair() -> None:
    r = indefinite_pairwise_returns()
    config = EstimatorConfig("sample", missing="pairwise", min_observations=50)
    decision = gated_covariance(r, config, 1e12)
    assert decision.action == "accept"
    assert "repaired" in decision.reason and decision.estimate.repair.eigenvalues_lifted == 1
    tighter = gated_covariance(r, config, 100.0)
    assert tighter.action == "shrink" and tighter.estimate.condition_number <= 100.0


@pytest.mark.parametrize(
    "case, fragment",
    [
        ("nan_under_raise", "MissingObservationError"),
        ("constant_price", "constant price"),
        ("infinite_return", "InvalidPriceError"),
        ("asset_without_data", "observed returns"),
    ],
)
def test_gate_holds_when_not_even_variances_are_usable(case: str, fragment: str) -> None:
    r = random_returns(seed=18, n_obs=100, n_assets=3)
    config = EstimatorConfig("ewma", 20.0, missing="pairwise")
    if case == "nan_under_raise":
        r[10, 1] = np.nan
        config = EstimatorConfig("ewma", 20.0)
    elif case == "constant_price":
        r[:, 2] = 0.0
    elif case == "infinite_return":
        r[5, 0] = np.inf
    else:
        r[:-1, 1] = np.nan  # one observed return
    decision = gated_covariance(r, config, 1e6)
    assert decision.action == "hold" and decision.estimate is None
    assert fragment in decision.reason and "hold" in decision.reason
    assert decision.attempts[-1].stage == "inverse_volatility" and not decision.attempts[-1].accepted


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"max_condition_number": 1.0}, "max_condition_number"),
        ({"shrinkage_steps": (0.5, 0.25)}, "strictly increasing"),
        ({"shrinkage_steps": (0.0, 0.5)}, "strictly increasing"),
        ({"shrinkage_steps": (0.5, 1.5)}, "shrinkage"),
        ({"min_variance_observations": 1}, "min_variance_observations"),
    ],
)
def test_gate_rejects_bad_arguments(kwargs: dict, fragment: str) -> None:
    args = {"max_condition_number": 1e4, **kwargs}
    with pytest.raises(ConfigError, match=fragment):
        gated_covariance(random_returns(1, 50, 2), EstimatorConfig("sample"), **args)


def test_gate_needs_an_estimator_config() -> None:
    with pytest.raises(ConfigError, match="EstimatorConfig"):
        gated_covariance(random_returns(1, 50, 2), {"method": "sample"}, 1e4)  # type: ignore[arg-type]
    assert DEFAULT_SHRINKAGE_STEPS == tuple(sorted(DEFAULT_SHRINKAGE_STEPS))


@pytest.mark.parametrize("method, params", [("sample", {"shrinkage": 0.5}), ("ledoit_wolf", {}),
                                            ("ewma", {"half_life_days": 10.0, "missing": "pairwise"})])
def test_a_constant_price_is_never_hidden_by_shrinkage(method: str, params: dict) -> None:
    r = random_returns(seed=19, n_obs=80, n_assets=3)
    r[:, 1] = 0.0  # a frozen feed
    with pytest.raises(SingularCovarianceError, match="asset 1 has variance 0.0"):
        estimate_covariance(r, method, **params)


@pytest.mark.parametrize("config", [EstimatorConfig("sample"), EstimatorConfig("ledoit_wolf", shrinkage=0.3)])
def test_gate_holds_on_a_frozen_feed_instead_of_shrinking_it(config: EstimatorConfig) -> None:
    r = random_returns(seed=20, n_obs=80, n_assets=3)
    r[:, 0] = 0.0
    decision = gated_covariance(r, config, 1e6)
    assert decision.action == "hold" and decision.estimate is None
    assert [a.stage for a in decision.attempts] == ["estimate", "inverse_volatility"]
    assert "frozen feed" in decision.reason


def test_rounding_leftovers_of_a_constant_return_count_as_zero_variance() -> None:
    r = random_returns(seed=22, n_obs=80, n_assets=3)
    r[:, 2] = 0.001  # constant non-zero return: the centred column is rounding noise at most
    for method, params in (("sample", {}), ("ewma", {"half_life_days": 7.0, "missing": "pairwise"})):
        with pytest.raises(SingularCovarianceError, match="asset 2 has variance"):
            estimate_covariance(r, method, shrinkage=0.2, **params)
