"""Tests of keeper.estimation: simple returns and the EWMA covariance.

Every random number generator is seeded; tests state defining properties
(exact limits, closed forms, an independent loop-based reference) rather than
snapshot values.  No timing assertions.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from keeper.errors import (
    ConfigError,
    InsufficientHistoryError,
    InvalidPriceError,
    KeeperError,
    SingularCovarianceError,
)
from keeper.estimation import (
    CovarianceEstimate,
    ewma_covariance,
    sample_covariance,
    simple_returns,
)


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
    np.testing.assert_allclose(out, p[1:] / p[:-1] - 1.0, rtol=0, atol=0)
    np.testing.assert_allclose(out, r, rtol=1e-12, atol=1e-14)


def test_simple_returns_are_scale_invariant() -> None:
    p = prices_from_returns(random_returns(seed=2, n_obs=30, n_assets=2))
    np.testing.assert_allclose(simple_returns(p * 1e-6), simple_returns(p), rtol=1e-12, atol=1e-15)


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
    for est in (ewma_covariance(r, math.inf), sample_covariance(r)):
        scale = np.max(np.abs(reference))
        assert np.max(np.abs(est.covariance - reference)) <= 1e-12 * scale
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
    np.testing.assert_allclose(
        sample_covariance(r[::-1]).covariance, sample_covariance(r).covariance, rtol=1e-12
    )
    assert not np.allclose(
        ewma_covariance(r[::-1], 10).covariance, ewma_covariance(r, 10).covariance, rtol=1e-3
    )


def test_asset_permutation_equivariance() -> None:
    r = random_returns(seed=13, n_obs=200, n_assets=5)
    perm = np.array([3, 0, 4, 1, 2])
    a = ewma_covariance(r, 30).covariance
    b = ewma_covariance(r[:, perm], 30).covariance
    np.testing.assert_allclose(b, a[np.ix_(perm, perm)], rtol=1e-13)


# --------------------------------------------------------------------------- #
# Output structure
# --------------------------------------------------------------------------- #
def test_annualisation_factor() -> None:
    r = random_returns(seed=4, n_obs=300, n_assets=3)
    daily = ewma_covariance(r, 60, periods_per_year=1)
    crypto = ewma_covariance(r, 60, periods_per_year=365)
    equity = ewma_covariance(r, 60, periods_per_year=252)
    np.testing.assert_allclose(crypto.covariance, 365 * daily.covariance, rtol=1e-14)
    np.testing.assert_allclose(equity.covariance, 252 * daily.covariance, rtol=1e-14)
    np.testing.assert_allclose(crypto.volatilities, math.sqrt(365) * daily.volatilities, rtol=1e-14)
    np.testing.assert_allclose(crypto.correlation, daily.correlation, atol=1e-15)
    assert crypto.periods_per_year == 365 and equity.periods_per_year == 252


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("half_life", [3.0, 30.0, math.inf])
def test_output_is_symmetric_positive_definite_and_consistent(seed: int, half_life: float) -> None:
    r = random_returns(seed, n_obs=120, n_assets=6)
    est = ewma_covariance(r, half_life)
    cov = est.covariance
    assert isinstance(est, CovarianceEstimate)
    assert cov.shape == (6, 6) and est.volatilities.shape == (6,) and est.correlation.shape == (6, 6)
    np.testing.assert_array_equal(cov, cov.T)
    eigenvalues = np.linalg.eigvalsh(cov)
    assert eigenvalues.min() > 0.0
    np.testing.assert_allclose(est.condition_number, eigenvalues.max() / eigenvalues.min(), rtol=1e-8)
    np.testing.assert_allclose(est.volatilities, np.sqrt(np.diag(cov)), rtol=1e-15)
    np.testing.assert_array_equal(np.diag(est.correlation), 1.0)
    np.testing.assert_array_equal(est.correlation, est.correlation.T)
    assert np.all(np.abs(est.correlation) <= 1.0)
    np.testing.assert_allclose(
        est.correlation * np.outer(est.volatilities, est.volatilities), cov, rtol=1e-13
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
    ):
        assert issubclass(error, KeeperError)
