"""GARCH-family volatility and covariance forecasts (keeper.vol_forecast, EstimatorConfig(method="garch", half_life_days=30.0))."""

from __future__ import annotations

import math

import numpy as np
import pytest

import keeper.vol_forecast as vf
from keeper.conditioning_gate import gated_covariance
from keeper.covariance import EstimatorConfig, covariance_from_config
from keeper.errors import ConfigError, EstimatorConfigError

EPS = np.finfo(np.float64).eps


@pytest.fixture(autouse=True)
def _fresh_cache():
    vf.clear_parameter_cache()
    yield
    vf.clear_parameter_cache()


def _simulate(seed: int, n: int, omega: float, alpha: float, beta: float, gamma: float = 0.0):
    """GJR-GARCH(1,1) path on percent returns with Gaussian innovations (gamma = 0: GARCH(1,1)).

    Returns the simple returns (fractions), the true conditional variances sigma2[t] of x[t] (percent^2)
    and the true next-bar variance sigma2[n] (percent^2)."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal(n)
    sigma2 = np.empty(n + 1)
    sigma2[0] = omega / (1.0 - alpha - gamma / 2 - beta)
    x = np.empty(n)
    for t in range(n):
        x[t] = math.sqrt(sigma2[t]) * z[t]
        sigma2[t + 1] = omega + (alpha + gamma * (x[t] < 0)) * x[t] ** 2 + beta * sigma2[t]
    return x / 100.0, sigma2


def _true_mean_forecast(sigma2_next: float, omega: float, alpha: float, beta: float, gamma: float, h: int) -> float:
    """(1/h) sum_{j=1..h} E_T[sigma2_{T+j}] = sigma_bar2 + (sigma2_{T+1} - sigma_bar2) persistence^(j-1), averaged."""
    p = alpha + gamma / 2 + beta
    bar = omega / (1 - p)
    return float(np.mean([bar + (sigma2_next - bar) * p**j for j in range(h)]))


def _delta_method_se(x_pct: np.ndarray, params: np.ndarray, volatility_model: str, h: int) -> float:
    """Standard error of the forecast (percent^2) from arch's robust parameter covariance (delta method)."""
    from arch.univariate import GARCH, ConstantMean

    model = ConstantMean(x_pct, volatility=GARCH(1, 1 if volatility_model == "gjr" else 0, 1), rescale=False)
    result = model.fit(disp="off", starting_values=params)
    cov = np.asarray(result.param_cov)
    theta = np.asarray(result.params)
    grad = np.empty(theta.size)
    for j in range(theta.size):
        step = 1e-5 * max(abs(theta[j]), 1e-3)
        up, down = theta.copy(), theta.copy()
        up[j] += step
        down[j] -= step
        grad[j] = (vf._filter_and_forecast(model, up, x_pct, h, True)[0]
                   - vf._filter_and_forecast(model, down, x_pct, h, True)[0]) / (2 * step)
    return float(math.sqrt(grad @ cov @ grad))


@pytest.mark.parametrize(
    ("seed", "volatility_model", "omega", "alpha", "gamma", "beta", "h"),
    [
        (1, "garch", 0.2, 0.10, 0.0, 0.85, 1),
        (2, "garch", 0.2, 0.10, 0.0, 0.85, 1),
        (3, "garch", 0.5, 0.15, 0.0, 0.80, 10),
        (4, "gjr", 0.2, 0.05, 0.10, 0.85, 1),
    ],
)
def test_forecast_matches_the_true_conditional_variance_within_its_estimation_error(
    seed: int, volatility_model: str, omega: float, alpha: float, gamma: float, beta: float, h: int
) -> None:
    n = 2000
    r, sigma2 = _simulate(seed, n, omega, alpha, beta, gamma)
    forecast = vf.fit_asset_forecast(r, volatility_model=volatility_model, horizon_bars=h, refit_every_bars=1)
    assert forecast.fallback_reason is None and forecast.refitted
    truth = _true_mean_forecast(sigma2[n], omega, alpha, beta, gamma, h)  # percent^2
    se = _delta_method_se(r * 100.0, forecast.params, volatility_model, h)
    # Tolerance: 4 standard errors of the QMLE forecast (delta method on arch's robust parameter
    # covariance), so a correct estimator fails with probability ~6e-5 per case.  The filter starts from
    # arch's backcast instead of the true sigma2_0; that difference decays as beta^n < 0.86^2000 ~ 1e-131.
    assert abs(forecast.variance * 1e4 - truth) <= 4 * se, (forecast.variance * 1e4, truth, se)
    # The estimation error is informative, not vacuous: well under the variance itself.
    assert se < 0.25 * truth
    # The standardised residuals are eps_t / sigma_t: close to the true innovations.
    z_true = r * 100.0 / np.sqrt(sigma2[:n])
    assert np.corrcoef(forecast.standardised_residuals, z_true)[0, 1] > 0.98


def _correlated_garch_panel(seed: int, n: int, corr: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(seed)
    chol = np.linalg.cholesky(corr)
    z = rng.standard_normal((n, corr.shape[0])) @ chol.T
    omega, alpha, beta = np.array([0.2, 0.4, 0.3, 0.1]), np.array([0.1, 0.08, 0.12, 0.05]), np.array([0.85, 0.88, 0.8, 0.9])
    s2 = omega / (1 - alpha - beta)
    x = np.empty_like(z)
    for t in range(n):
        x[t] = np.sqrt(s2) * z[t]
        s2 = omega + alpha * x[t] ** 2 + beta * s2
    return x / 100.0


CORR = np.array([[1.0, 0.6, 0.4, 0.2], [0.6, 1.0, 0.5, 0.3], [0.4, 0.5, 1.0, 0.1], [0.2, 0.3, 0.1, 1.0]])


def test_covariance_is_symmetric_psd_and_annualised_through_the_estimator_config() -> None:
    r = _correlated_garch_panel(5, 1500, CORR)
    forecast = vf.garch_forecast_covariance(r, refit_every_bars=1, half_life_bars=math.inf)
    cov = forecast.covariance
    assert np.array_equal(cov, cov.T)
    eig = np.linalg.eigvalsh(cov)
    # PSD up to eigvalsh's backward error, a few n * eps * |lambda_max|.
    assert eig[0] >= -4 * cov.shape[0] * EPS * eig[-1]
    np.testing.assert_array_equal(np.diag(forecast.correlation), 1.0)
    # The constant correlation (half-life inf) of standardised residuals recovers the innovation
    # correlation: each entry's sampling s.d. is (1 - rho^2)/sqrt(n) <= 0.026, 4 s.d. allowed.
    assert np.max(np.abs(forecast.correlation - CORR)) <= 4 / math.sqrt(1500)
    # Through EstimatorConfig(method="garch", half_life_days=30.0): the same forecast times periods_per_year.
    vf.clear_parameter_cache()
    config = EstimatorConfig(method="garch", half_life_days=math.inf, periods_per_year=365, refit_every_bars=1)
    estimate = covariance_from_config(r, config)
    assert estimate.method == "garch" and estimate.notes == ()
    # Same fits (cold cache, same data and start), then one multiplication by 365 and symmetrisation.
    np.testing.assert_allclose(estimate.covariance, 365 * cov, rtol=4 * EPS, atol=0)
    gate = gated_covariance(r, config, 1e10)
    assert gate.action == "accept" and gate.reason.startswith("garch estimate accepted")


def test_refit_every_k_bars_reuses_parameters_on_a_sliding_window_and_never_across_assets() -> None:
    r = _correlated_garch_panel(6, 800, CORR)
    window, k = 500, 5
    flags = []
    for s in range(k + 2):
        f = vf.garch_forecast_covariance(r[s: s + window], refit_every_bars=k)
        flags.append(f.refits)
    # Fit at s = 0, reuse for s = 1..k-1, refit (warm-started) at s = k, reuse at k + 1.
    assert flags == [4, 0, 0, 0, 0, 4, 0]
    # A reused fit filters the new window: its forecast differs from the previous bar's.
    a = vf.fit_asset_forecast(r[1: 1 + window, 0], refit_every_bars=k)
    b = vf.fit_asset_forecast(r[2: 2 + window, 0], refit_every_bars=k)
    assert not a.refitted and not b.refitted and a.variance != b.variance
    # Another asset's window never matches a cached fit (the overlap is compared exactly).
    other = vf.fit_asset_forecast(r[3: 3 + window, 0] * 1.0000001, refit_every_bars=k)
    assert other.refitted


def _ewma_diagonal(r: np.ndarray, half_life: float) -> np.ndarray:
    return np.diag(covariance_from_config(r, EstimatorConfig(method="ewma", half_life_days=half_life,
                                                             min_observations=2)).covariance) / 365


def test_short_window_falls_back_to_ewma_with_the_reason() -> None:
    r = _correlated_garch_panel(7, 60, CORR)
    f = vf.garch_forecast_covariance(r, half_life_bars=20.0)
    assert len(f.notes) == 4 and "60 returns < 250 needed for a GARCH fit" in f.notes[0]
    # Same EWMA weights and reliability correction as "ewma": two evaluation orders of a T-term weighted
    # sum, plus the exact-in-fraction x100 scaling rounded once per element: |rel. error| <= 2 (T + 4) eps.
    np.testing.assert_allclose(f.variances, _ewma_diagonal(r, 20.0), rtol=2 * (60 + 4) * EPS, atol=0)
    gate = gated_covariance(r, EstimatorConfig(method="garch", half_life_days=20.0), 1e10)
    assert gate.action == "accept" and "EWMA variance used" in gate.reason  # the reason is what the journal keeps


class _FakeOptimisation:
    message = "Iteration limit reached"


class _FakeResult:
    def __init__(self, params, flag):
        self.params = np.asarray(params, dtype=np.float64)
        self.convergence_flag = flag
        self.optimization_result = _FakeOptimisation()


def test_non_convergence_and_non_stationary_fits_fall_back_to_ewma(monkeypatch: pytest.MonkeyPatch) -> None:
    from arch.univariate.base import ARCHModel

    r = _correlated_garch_panel(8, 400, CORR)
    monkeypatch.setattr(ARCHModel, "fit", lambda self, **kw: _FakeResult([0.0, 0.2, 0.1, 0.85], 9))
    f = vf.garch_forecast_covariance(r, half_life_bars=30.0)
    assert all("did not converge (optimiser flag 9: Iteration limit reached)" in n for n in f.notes)
    np.testing.assert_allclose(f.variances, _ewma_diagonal(r, 30.0), rtol=2 * (400 + 4) * EPS, atol=0)
    eig = np.linalg.eigvalsh(f.covariance)
    assert eig[0] > 0
    vf.clear_parameter_cache()
    monkeypatch.setattr(ARCHModel, "fit", lambda self, **kw: _FakeResult([0.0, 0.2, 0.2, 0.8], 0))
    f = vf.garch_forecast_covariance(r[:, :1])
    assert "not covariance-stationary (persistence 1.000000 >= 1)" in f.notes[0]

    def boom(self, **kw):
        raise np.linalg.LinAlgError("singular Hessian")

    monkeypatch.setattr(ARCHModel, "fit", boom)
    f = vf.garch_forecast_covariance(r[:, :2])
    assert "GARCH fit raised LinAlgError: singular Hessian" in f.notes[1]
    estimate = covariance_from_config(r[:, :2], EstimatorConfig(method="garch", half_life_days=30.0))
    assert len(estimate.notes) == 2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(method="garch"), "method 'garch' needs half_life_days"),
        (dict(method="garch", half_life_days=30.0, missing="pairwise"), "not available for method 'garch'"),
        (dict(method="garch", half_life_days=30.0, refit_every_bars=0), "refit_every_bars is 0"),
        (dict(method="garch", half_life_days=30.0, forecast_horizon_bars=1.5), "forecast_horizon_bars is 1.5"),
        (dict(method="garch", half_life_days=30.0, volatility_model="egarch"), "volatility_model is 'egarch'"),
    ],
)
def test_estimator_config_rejects_bad_garch_settings(kwargs, message) -> None:
    with pytest.raises(EstimatorConfigError, match=message):
        EstimatorConfig(**kwargs)


def test_bad_returns_are_refused_with_the_cell() -> None:
    r = np.full((200, 2), 0.01)
    r[17, 1] = np.nan
    with pytest.raises(ConfigError, match="row 17, column 1 is nan"):
        vf.garch_forecast_covariance(r)


def test_policy_refuses_garch_with_a_lookback_too_short_to_fit() -> None:
    from pydantic import ValidationError

    from keeper.covariance import EstimatorConfig
    from keeper.policy_config import PolicyConfig

    with pytest.raises(ValidationError, match="lookback_days = 180.*at least 250 returns"):
        PolicyConfig(estimator=EstimatorConfig(method="garch", half_life_days=30.0), lookback_days=180)
    assert PolicyConfig(estimator=EstimatorConfig(method="garch", half_life_days=30.0), lookback_days=730).lookback_days == 730
