"""Tests of keeper.risk_measures, keeper.cornish_fisher, keeper.risk_report and keeper.es_limit:
VaR/ES (historical, Gaussian, Cornish-Fisher), Euler contributions, the ES limit.

Chain-free and fast.  References are independent: scipy.stats closed forms and numerical integration,
hand-computed order statistics, numpy.quantile, explicit loops, finite differences.
"""

from __future__ import annotations

import json
import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, stats

from keeper.errors import ConfigError, InsufficientHistoryError, InvalidPriceError, KeeperError
from keeper.cornish_fisher import cornish_fisher_var_es_from_moments
from keeper.es_limit import enforce_es_limit
from keeper.risk_measures import (
    apportion_base_units,
    gaussian_var_es,
    gaussian_var_es_from_moments,
    horizon_returns,
    to_base_units,
)
from keeper.risk_report import METHODS, portfolio_var_es, risk_report

from tolerances import ELEMENTARY_ULPS, NDTRI_RELATIVE_ERROR, U, dot_rtol, gamma, quadratic_form_condition, sum_rtol

NAV = 12_345_678_901_234  # base units (6 decimals): 12,345,678.901234 USD


# --------------------------------------------------------------------------- #
# Helpers
# --------------------------------------------------------------------------- #
def historical_var_es(weights, returns, confidence=0.99, horizon_days=1, *, nav_base_units=None):
    """The historical measure by position: :func:`portfolio_var_es` with ``method="historical"``."""
    return portfolio_var_es(weights, method="historical", confidence=confidence, horizon_days=horizon_days,
                            returns=returns, nav_base_units=nav_base_units)


def cornish_fisher_var_es(weights, returns, confidence=0.99, horizon_days=1, *, nav_base_units=None):
    """The Cornish-Fisher measure by position: :func:`portfolio_var_es` with ``method="cornish_fisher"``."""
    return portfolio_var_es(weights, method="cornish_fisher", confidence=confidence, horizon_days=horizon_days,
                            returns=returns, nav_base_units=nav_base_units)


def fat_tailed_returns(seed: int, n_obs: int = 400, n_assets: int = 3) -> np.ndarray:
    """Correlated Student-t(4) daily returns with a negative jump component, shape (n_obs, n_assets)."""
    rng = np.random.default_rng(seed)
    mixing = np.eye(n_assets) + 0.5 * rng.uniform(size=(n_assets, n_assets))
    shocks = rng.standard_t(4, size=(n_obs, n_assets)) @ mixing.T * 0.012
    jumps = (rng.uniform(size=(n_obs, 1)) < 0.02) * rng.uniform(-0.15, -0.05, size=(n_obs, 1))
    return np.clip(0.0005 + shocks + jumps * rng.uniform(0.5, 1.5, size=n_assets), -0.9, None)


def random_covariance(seed: int, n: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, n))
    corr_raw = a @ a.T + n * np.eye(n)
    d = np.sqrt(np.diag(corr_raw))
    vols = rng.uniform(0.3, 1.2, size=n)
    return corr_raw / np.outer(d, d) * np.outer(vols, vols)


def weights_for(seed: int, n: int, total: float = 0.9) -> np.ndarray:
    w = np.random.default_rng(seed).uniform(0.05, 1.0, size=n)
    return total * w / w.sum()


def es_factor_rtol(z: float) -> float:
    """Relative error bound of k = phi(z) / (1 - a) on one path: exp (ELEMENTARY_ULPS) of -z^2/2, whose
    two roundings (and z's own ndtri error, relative NDTRI_RELATIVE_ERROR) are amplified by z^2; the
    constant 1/sqrt(2 pi), the product and the division (3U)."""
    return (ELEMENTARY_ULPS + z * z * 2 + 3) * U + z * z * NDTRI_RELATIVE_ERROR


def gaussian_two_path_atol(w, cov, mu_ann, h: int, k: float, k_rtol: float, periods: int = 365) -> float:
    """Absolute bound on the difference of two evaluations (keeper.risk_report's, the test's) of
    -h w.mu/P + sqrt(h) k sqrt(w'Sw/P): per path the mean term is a length-n dot (gamma(n) sum|w_i mu_i|)
    divided by P and scaled by h (3U); the sigma term a quadratic form (gamma(2n) |w|'|S||w|, the
    rounding of S/P entrywise adding U |w|'|S||w|) halved by the sqrt, then sqrt, sqrt(h), * k, * sigma
    (4U) and k's own error ``k_rtol``; the final subtraction U |total|."""
    w = np.asarray(w, dtype=float)
    n = w.size
    mean_abs = h * float(np.abs(w * mu_ann).sum()) / periods
    form_abs = float(np.abs(w) @ np.abs(cov) @ np.abs(w))
    variance = float(w @ cov @ w)
    sigma = math.sqrt(variance / periods)
    sigma_rtol = 0.5 * (gamma(2 * n) + U) * form_abs / variance + 4 * U + k_rtol
    total = abs(-h * float(w @ mu_ann) / periods + math.sqrt(h) * k * sigma)
    per_path = mean_abs * (gamma(n) + 3 * U) + math.sqrt(h) * abs(k) * sigma * sigma_rtol + U * total
    return 2 * per_path


def gaussian_euler_atol(w, cov, mu_daily, h: int, k: float) -> float:
    """Bound on |sum_i c_i - total| for the Gaussian Euler contributions c_i = -h w_i mu_i + sqrt(h) k
    w_i (S w)_i / sigma against total = -h w.mu + sqrt(h) k sigma, S and mu as the module uses them:
    both sides are sums of the same n terms of each kind with <= n + 8 roundings on any path (the dots,
    sigma = sqrt(w.(Sw)) vs sum w_i (Sw)_i / sigma, the scalings), so each side is within
    gamma(n + 8) of the sum of the terms' absolute values."""
    w = np.asarray(w, dtype=float)
    sw = cov @ w
    sigma = math.sqrt(max(float(w @ sw), 0.0))
    terms = h * np.abs(w * mu_daily).sum() + (math.sqrt(h) * abs(k) * np.abs(w * sw).sum() / sigma if sigma > 0 else 0.0)
    return 2 * gamma(w.size + 8) * float(terms)


def historical_contribution_atol(w, scenarios, confidence: float) -> tuple[float, float]:
    """Bounds on |sum_i ES_i - ES| and |sum_i VaR_i - VaR| for the historical Euler contributions: ES and
    its contributions are the same double sum sum_t q_t (-r_t . w) over the tail (q_t = 1/m, or the ties'
    share), evaluated in two orders (<= n_tail + n + 4 roundings on any path, gamma of that times the sum
    of |q_t r_ti w_i|); VaR is one scenario's loss (or the ties' mean) vs its n products summed."""
    w = np.asarray(w, dtype=float)
    products = -(scenarios * w)
    losses = products.sum(axis=1)
    n_scen = len(losses)
    m = (1.0 - confidence) * n_scen
    k = int(math.floor(m + 1e-9))
    var = np.sort(losses)[::-1][k]
    tail = losses >= var - 1e-12 * max(abs(var), 1e-300)  # the tail and the scenarios at (or within rounding of) VaR
    n_tail = int(np.count_nonzero(tail))
    es_abs = float(np.abs(products[tail]).sum()) / max(m, 1.0)
    at_var = np.abs(losses - var) <= 1e-12 * max(abs(var), 1e-300)
    var_abs = float(np.abs(products[at_var]).sum(axis=1).max()) if at_var.any() else 0.0
    return 2 * gamma(n_tail + w.size + 4) * es_abs, 2 * gamma(w.size + 4) * var_abs


def cornish_fisher_euler_atol(w, returns, h: int, confidence: float,
                              mean_estimated_twice: bool = False) -> tuple[float, float]:
    """Bound on |sum_i c_i - total| for the Cornish-Fisher Euler contributions (VaR, ES). The total is
    -h mu + sqrt(h) sigma G(S/sqrt(h), K/h); the contributions split it along d sigma, d S, d K, whose
    Euler sums are sigma, 0 and 0 only in exact arithmetic. With p = centred returns . w and
    B_k = k mean_t(sum_i |w_i c_ti| |p_t|^(k-1)) (the absolute value of sum_i w_i dm_k/dw_i = k m_k),
    every term of either side is within gamma(N + n + 24) (the N-term moment sums, the n-term dot, <= 20
    scalar roundings of the formulas) of its absolute value, and the absolute values add up to
    h sum|w_i mu_i| + sqrt(h) |G| B_2/(2 sigma) + sigma (|G_S| (B_3/(m2 sigma) + 1.5 |m3| B_2/(m2^2 sigma))
    + |G_K| / sqrt(h) (B_4/m2^2 + 2 m4 B_2/m2^3)).

    ``mean_estimated_twice``: the two sides also estimate the mean separately (w . mean(r) vs mean(r . w),
    both within gamma(N + n) mean_t sum_i |r_ti w_i| =: e), which shifts the centring: m3 by <= 3 m2 e,
    m4 by <= 4 |m3| e (m2 only to second order), and the mean term by h e."""
    from keeper.cornish_fisher import _cf_terms  # magnitudes of G and its partials only

    w = np.asarray(w, dtype=float)
    r = np.asarray(returns, dtype=float)
    n_obs = r.shape[0]
    mu = r.mean(axis=0)
    centred = r - mu
    p = centred @ w
    m2, m3, m4 = float(np.mean(p**2)), float(np.mean(p**3)), float(np.mean(p**4))
    sigma = math.sqrt(m2)
    root_h = math.sqrt(h)
    skew, kurt = m3 / (m2 * sigma), m4 / (m2 * m2) - 3.0
    g_var, g_var_s, g_var_k, g_es, g_es_s, g_es_k = _cf_terms(confidence, skew / root_h, kurt / h)
    spread = np.abs(centred * w).sum(axis=1)
    b2, b3, b4 = (k * float(np.mean(spread * np.abs(p) ** (k - 1))) for k in (2, 3, 4))
    d_sigma = b2 / (2 * sigma)
    d_skew = b3 / (m2 * sigma) + 1.5 * abs(m3) * b2 / (m2 * m2 * sigma)
    d_kurt = b4 / (m2 * m2) + 2 * m4 * b2 / (m2 * m2 * m2)
    mean_abs = h * float(np.abs(w * mu).sum())
    if mean_estimated_twice:
        e = gamma(n_obs + w.size) * float(np.abs(r * w).sum(axis=1).mean())
        unit = gamma(n_obs + w.size + 24)  # the terms below are multiplied by it again
        mean_abs += h * e / unit
        d_skew += 3 * m2 * e / (m2 * sigma) / unit
        d_kurt += 4 * abs(m3) * e / (m2 * m2) / unit
    bound = []
    for g, g_s, g_k in ((g_var, g_var_s, g_var_k), (g_es, g_es_s, g_es_k)):
        terms = mean_abs + root_h * abs(g) * d_sigma + sigma * (abs(g_s) * d_skew + abs(g_k) * d_kurt / root_h)
        bound.append(2 * gamma(n_obs + w.size + 24) * terms)
    return bound[0], bound[1]


def es_evaluation_rtol(method: str, w, returns, h: int, confidence: float = 0.99) -> float:
    """Relative bound on ES(s w) vs s ES(w) (homogeneity; the same returns, so the same estimated moments
    or scenarios on both sides): two evaluations of the formula, bounded as for the Euler sums (the same
    terms), plus the rounding of s w (U per weight, within the gamma factors' slack)."""
    w = np.asarray(w, dtype=float)
    if method == "historical":
        atol = historical_contribution_atol(w, horizon_returns(returns, h), confidence)[0]
        es = historical_var_es(w, returns, confidence, h).es
    elif method == "gaussian":
        z = stats.norm.ppf(confidence)
        k = stats.norm.pdf(z) / (1 - confidence)
        cov, mu = np.cov(returns, rowvar=False) * 365, returns.mean(axis=0) * 365
        atol = gaussian_two_path_atol(w, cov, mu, h, k, 0.0)
        es = gaussian_var_es(w, cov, confidence, h, expected_returns=mu).es
    else:
        atol = cornish_fisher_euler_atol(w, returns, h, confidence)[1]
        es = cornish_fisher_var_es(w, returns, confidence, h).es
    return atol / abs(es)


def finite_difference_gradient(f, w: np.ndarray, step: float = 1e-6) -> np.ndarray:
    grad = np.empty_like(w)
    for i in range(w.size):
        up, down = w.copy(), w.copy()
        up[i] += step
        down[i] -= step
        grad[i] = (f(up) - f(down)) / (2.0 * step)
    return grad


# --------------------------------------------------------------------------- #
# Gaussian
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("confidence", [0.5, 0.95, 0.99, 0.999])
@pytest.mark.parametrize("mean,std", [(0.0, 0.03), (0.002, 0.05), (-0.01, 0.2)])
def test_gaussian_from_moments_matches_scipy(confidence, mean, std):
    var, es = gaussian_var_es_from_moments(mean, std, confidence)
    loss = stats.norm(loc=-mean, scale=std)  # loss = -return
    # Same z (scipy.stats.norm.ppf is scipy.special.ndtri); -mean + std z in two orders: 2 roundings each,
    # with the cancellation of the sum (absolute bound, as VaR = 0 at a = 0.5 with mean 0).
    z = stats.norm.ppf(confidence)
    assert var == pytest.approx(loss.ppf(confidence), abs=2 * gamma(2) * (abs(mean) + abs(std * z)))
    # ES as the conditional mean of the loss beyond VaR, by scipy's numerical integration.
    es_numeric = loss.expect(lambda x: x, lb=loss.ppf(confidence), conditional=True)
    assert es == pytest.approx(es_numeric, rel=1e-8)


def test_gaussian_from_covariance_closed_form_and_sqrt_time():
    n = 4
    cov = random_covariance(1, n)
    w = weights_for(2, n)
    mu_ann = np.array([0.3, -0.1, 0.5, 0.0])
    sigma_daily = math.sqrt(w @ cov @ w / 365.0)
    mu_daily = float(w @ mu_ann) / 365.0
    for confidence in (0.95, 0.99):
        for h in (1, 10):
            m = gaussian_var_es(w, cov, confidence, h, expected_returns=mu_ann)
            loss = stats.norm(loc=-h * mu_daily, scale=math.sqrt(h) * sigma_daily)
            z = stats.norm.ppf(confidence)  # = ndtri(a), the module's z: no error between the paths
            assert m.var == pytest.approx(loss.ppf(confidence), abs=gaussian_two_path_atol(w, cov, mu_ann, h, z, 0.0))
            k_es = stats.norm.pdf(z) / (1 - confidence)  # two pdf evaluations: es_factor_rtol each
            assert m.es == pytest.approx(
                -h * mu_daily + math.sqrt(h) * sigma_daily * stats.norm.pdf(z) / (1 - confidence),
                abs=gaussian_two_path_atol(w, cov, mu_ann, h, k_es, 2 * es_factor_rtol(z)))
            assert m.n_scenarios == 0


def test_gaussian_contributions_are_euler_gradients():
    n = 5
    cov = random_covariance(3, n)
    w = weights_for(4, n)
    mu = np.linspace(-0.2, 0.4, n)
    m = gaussian_var_es(w, cov, 0.99, 10, expected_returns=mu)
    for attr, contrib in (("var", m.var_contributions), ("es", m.es_contributions)):
        grad = finite_difference_gradient(
            lambda x: getattr(gaussian_var_es(x, cov, 0.99, 10, expected_returns=mu), attr), w)
        np.testing.assert_allclose(contrib, w * grad, rtol=1e-6, atol=1e-12)
        k = stats.norm.ppf(0.99) if attr == "var" else stats.norm.pdf(stats.norm.ppf(0.99)) / 0.01
        assert contrib.sum() == pytest.approx(getattr(m, attr), abs=gaussian_euler_atol(w, cov / 365, mu / 365, 10, k))


def test_gaussian_from_returns_uses_sample_mean_and_covariance():
    r = fat_tailed_returns(5)
    w = weights_for(6, 3)
    from_returns = portfolio_var_es(w, method="gaussian", returns=r, confidence=0.95, horizon_days=10)
    from_cov = gaussian_var_es(w, np.cov(r, rowvar=False) * 365, 0.95, 10,
                               expected_returns=r.mean(axis=0) * 365)
    # Two estimators of the same mean and covariance (two-pass, Higham §1.9): each mean within
    # gamma(N) mean_t|r_ti|, each covariance entry within gamma(N + 3) sqrt(c_ii c_jj) (Cauchy-Schwarz on
    # the centred products), so w'Sw within gamma(N + 3) (sum_i w_i sigma_i)^2; then the formula on both.
    n_obs = r.shape[0]
    cov = np.cov(r, rowvar=False)
    vols = np.sqrt(np.diag(cov))
    mean_atol = 2 * gamma(n_obs + 2) * float(np.abs(r).mean(axis=0) @ w) * 10
    sigma = math.sqrt(float(w @ cov @ w))
    sigma_rtol = gamma(n_obs + 3) * float(w @ vols) ** 2 / float(w @ cov @ w)
    for got, want, k in ((from_returns.var, from_cov.var, stats.norm.ppf(0.95)),
                         (from_returns.es, from_cov.es, stats.norm.pdf(stats.norm.ppf(0.95)) / 0.05)):
        atol = (mean_atol + math.sqrt(10) * k * sigma * sigma_rtol
                + gaussian_two_path_atol(w, cov * 365, r.mean(axis=0) * 365, 10, k, 2 * es_factor_rtol(k)))
        assert got == pytest.approx(want, abs=atol)
    assert from_returns.n_scenarios == r.shape[0]
    # With a covariance given, the covariance wins over the returns.
    cov = random_covariance(7, 3)
    both = portfolio_var_es(w, method="gaussian", returns=r, covariance=cov)
    assert both.es == gaussian_var_es(w, cov).es  # same path: the same _gaussian on the same inputs


def test_gaussian_accepts_singular_covariance_and_zero_weights():
    vols = np.array([0.5, 0.8])
    m = gaussian_var_es([0.25, 0.5], np.outer(vols, vols), 0.99)
    sigma = (0.25 * 0.5 + 0.5 * 0.8) / math.sqrt(365)  # perfect correlation: volatilities add
    # All terms positive: the module's 2x2 form of S/365 (gamma(4) + U, halved by the sqrt), sqrt, * z;
    # ours: 2 products and a sum, sqrt(365), the division, * z. At most 10 roundings in all.
    assert m.var == pytest.approx(stats.norm.ppf(0.99) * sigma, rel=gamma(10))
    zero = gaussian_var_es([0.0, 0.0], np.outer(vols, vols), 0.99)
    assert zero.var == 0.0 and zero.es == 0.0 and zero.flags == ()  # exact: products with 0
    np.testing.assert_array_equal(zero.es_contributions, [0.0, 0.0])


# --------------------------------------------------------------------------- #
# Historical
# --------------------------------------------------------------------------- #
# Twenty daily returns of a single asset, weight 1: losses are their negatives.
HAND_RETURNS = np.array([0.010, -0.020, 0.030, -0.050, 0.004, -0.010, 0.020, -0.080, 0.000, 0.015,
                         -0.030, 0.025, -0.005, 0.012, -0.060, 0.008, -0.015, 0.022, -0.040, 0.001])
# Losses sorted descending: 0.080, 0.060, 0.050, 0.040, 0.030, 0.020, 0.015, 0.010, 0.005, 0.000, ...


@pytest.mark.parametrize("confidence,var,es", [
    # m = (1 - a) * N tail scenarios; VaR = the (floor(m) + 1)-th largest loss.
    (0.95, 0.060, 0.080),                                  # m = 1: ES = worst loss
    (0.90, 0.050, (0.080 + 0.060) / 2),                    # m = 2
    (0.80, 0.030, (0.080 + 0.060 + 0.050 + 0.040) / 4),    # m = 4
    (0.925, 0.060, (0.080 + 0.5 * 0.060) / 1.5),           # m = 1.5: half of the boundary scenario
])
def test_historical_matches_hand_computation(confidence, var, es):
    m = historical_var_es([1.0], HAND_RETURNS[:, None], confidence)
    assert m.var == var  # exact: a loss is 0 - r * 1.0, the same float as the literal
    # <= 4 losses summed in another order than ours (gamma(3)), and the (m - n) VaR term and division.
    assert m.es == pytest.approx(es, abs=2 * gamma(5) * es)
    assert m.n_scenarios == 20


def test_historical_ties_share_the_boundary_weight():
    # Losses: 0.10 once, 0.05 three times, then small. a = 0.9, N = 20 -> m = 2: VaR = 0.05,
    # ES = (0.10 + 1 * 0.05) / 2; the three tied scenarios share weight 1/(2*3) each.
    base = np.full(20, 0.01)
    base[[3, 9, 15]] = -0.05
    base[7] = -0.10
    returns = np.column_stack([base, base])  # two identical assets, weights 0.2 and 0.6
    m = historical_var_es([0.2, 0.6], returns, 0.9)
    # All terms positive: a 2-term dot (3 roundings) vs 0.8 * 0.05 (1, and the literals'): gamma(6).
    assert m.var == pytest.approx(0.8 * 0.05, rel=gamma(6))
    assert m.es == pytest.approx(0.8 * (0.10 + 0.05) / 2, rel=gamma(8))  # two more sums, a division each
    # q @ r: 4 non-zero terms of one sign (the zeros add exactly), q's own 1/m and 1/(m n) roundings, * w.
    np.testing.assert_allclose(m.es_contributions, [0.2 * 0.075, 0.6 * 0.075], rtol=gamma(10))


def test_historical_contributions_are_tail_conditional_means_and_order_free():
    r = fat_tailed_returns(8, n_obs=250)
    w = weights_for(9, 3)
    m = historical_var_es(w, r, 0.95)
    losses = -(r @ w)
    # N = 250, a = 0.95 -> m = 12.5 tail scenarios: the 12 worst in full, the 13th with weight 0.5.
    order = np.argsort(-losses, kind="stable")
    tail = (-(r * w))[order[:13]]
    weights = np.r_[np.ones(12), 0.5] / 12.5
    # Per asset, a 13-term weighted sum of tail returns of both signs, in two orders: gamma(13 + 2) times
    # its condition sum_t |q_t r_ti| / |sum_t q_t r_ti| (from these returns), * w_i, and q's rounding.
    asset_condition = float(np.max(np.abs(weights) @ np.abs(tail) / np.abs(weights @ tail)))
    np.testing.assert_allclose(m.es_contributions, weights @ tail, rtol=2 * dot_rtol(15, asset_condition))
    # Exact: the mean of the one row at VaR is the row; w * r and r * w are the same products.
    np.testing.assert_array_equal(m.var_contributions, -(r[order[12]] * w))
    # Two evaluations of a 3-term dot (an order statistic moves by no more than the losses do).
    loss_atol = 2 * gamma(3) * float(np.abs(r * w).sum(axis=1).max())
    assert m.var == pytest.approx(losses[order[12]], abs=loss_atol)
    es_atol, var_atol = historical_contribution_atol(w, r, 0.95)
    assert m.es_contributions.sum() == pytest.approx(m.es, abs=es_atol)
    assert m.var_contributions.sum() == pytest.approx(m.var, abs=var_atol)
    shuffled = r[np.random.default_rng(1).permutation(r.shape[0])]
    m2 = historical_var_es(w, shuffled, 0.95)
    # Row order changes only the summation order of the same tail terms (the losses by <= loss_atol).
    assert (m2.var, m2.es) == (pytest.approx(m.var, abs=loss_atol), pytest.approx(m.es, abs=es_atol + loss_atol))
    np.testing.assert_allclose(m2.es_contributions, m.es_contributions, rtol=2 * dot_rtol(15, asset_condition))


@pytest.mark.parametrize("n_obs", [101, 157, 333, 1000])
@pytest.mark.parametrize("confidence", [0.95, 0.99, 0.975])
def test_historical_var_is_numpy_inverted_cdf_and_es_integrates_the_quantile(n_obs, confidence):
    r = fat_tailed_returns(n_obs, n_obs=n_obs)
    w = weights_for(n_obs, 3)
    m = historical_var_es(w, r, confidence)
    losses = -(r @ w)
    # The module's losses and ours: two evaluations of each 3-term dot (2 gamma(3) sum_i |r_ti w_i|); an
    # order statistic moves by no more than the largest of these (order statistics differ by far more).
    loss_atol = 2 * gamma(3) * float(np.abs(r * w).sum(axis=1).max())
    assert m.var == pytest.approx(np.quantile(losses, confidence, method="inverted_cdf"), abs=loss_atol)
    # ES = 1/(1-a) * integral_a^1 q(u) du with the empirical quantile q(u) = L_(ceil(uN)), integrated
    # piecewise exactly over the constant steps of q.
    sorted_losses = np.sort(losses)
    grid = np.unique(np.r_[confidence, np.arange(math.ceil(confidence * n_obs), n_obs + 1) / n_obs, 1.0])
    grid = grid[grid >= confidence]
    mids = 0.5 * (grid[:-1] + grid[1:])
    q = sorted_losses[np.ceil(mids * n_obs).astype(int) - 1]
    # Our quadrature: each grid step is a difference of two rounded numbers near 1 (<= 2U absolute,
    # i.e. ~2 n_obs U relative), the dot over the steps (gamma(k)); the module's tail sum and division
    # (gamma(k + 3)); and the losses themselves (loss_atol).
    k = q.size
    quadrature = (2 * U * float(np.abs(q).sum()) + 2 * gamma(k + 3) * float(np.abs(q * np.diff(grid)).sum()))
    assert m.es == pytest.approx(float(q @ np.diff(grid)) / (1.0 - confidence),
                                 abs=quadrature / (1.0 - confidence) + loss_atol)


def test_historical_ten_day_uses_overlapping_compounded_returns():
    r = fat_tailed_returns(10, n_obs=300)
    w = weights_for(11, 3)
    loop = np.array([[np.prod(1.0 + r[t:t + 10, i]) - 1.0 for i in range(3)] for t in range(291)])
    # A product of the same 10 factors 1 + r in two orders (gamma(9) each), then - 1: the absolute error
    # is gamma(9) times the growth 1 + R on each path (R itself may be ~0: cancellation), plus U |R|.
    growth_atol = 2 * (gamma(9) * (1.0 + loop) + U * np.abs(loop))
    assert np.all(np.abs(horizon_returns(r, 10) - loop) <= growth_atol)
    m = historical_var_es(w, r, 0.95, horizon_days=10)
    assert m.n_scenarios == 291
    # The scenarios differ by <= growth_atol, then two 3-term dots; an order statistic moves no more.
    loss_atol = float((growth_atol @ w).max()) + 2 * gamma(3) * float(np.abs(loop * w).sum(axis=1).max())
    assert m.var == pytest.approx(np.quantile(-(loop @ w), 0.95, method="inverted_cdf"), abs=loss_atol)


def test_historical_needs_a_tail_scenario():
    r = fat_tailed_returns(12, n_obs=99)
    with pytest.raises(InsufficientHistoryError, match="99 historical 1-day scenario"):
        historical_var_es([0.5, 0.2, 0.1], r, 0.99)
    assert historical_var_es([0.5, 0.2, 0.1], r[:20], 0.95).n_scenarios == 20  # m = 1 exactly
    with pytest.raises(InsufficientHistoryError):
        historical_var_es([0.5, 0.2, 0.1], r[:100], 0.99, horizon_days=10)  # 91 scenarios


# --------------------------------------------------------------------------- #
# Cornish-Fisher
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99])
def test_cornish_fisher_reduces_to_gaussian(confidence):
    # With S = K = 0 the CF terms vanish exactly (products with 0), leaving ndtri(1 - a) (1 - a exact by
    # Sterbenz) against -ndtri(a): two ndtri evaluations (2 NDTRI_RELATIVE_ERROR on z, amplified by z^2 in
    # phi(z)), then the same -mean + std k (2 roundings each, with the sum's cancellation).
    z = stats.norm.ppf(confidence)
    k_es = stats.norm.pdf(z) / (1 - confidence)
    atol = 0.04 * (2 * NDTRI_RELATIVE_ERROR * abs(z) + k_es * 2 * es_factor_rtol(z)) + 2 * gamma(2) * (0.001 + 0.04 * k_es)
    assert cornish_fisher_var_es_from_moments(0.001, 0.04, 0.0, 0.0, confidence) == pytest.approx(
        gaussian_var_es_from_moments(0.001, 0.04, confidence), abs=atol)


def cf_quantile(u: float, skew: float, kurt: float) -> float:
    """Cornish-Fisher standardised quantile of the return at probability u (textbook form)."""
    z = stats.norm.ppf(u)
    return (z + (z**2 - 1) * skew / 6 + (z**3 - 3 * z) * kurt / 24
            - (2 * z**3 - 5 * z) * skew**2 / 36)


@pytest.mark.parametrize("skew,kurt", [(-0.8, 3.0), (-0.3, 1.0), (0.4, 2.0), (0.0, 5.0)])
@pytest.mark.parametrize("confidence", [0.95, 0.99])
def test_cornish_fisher_es_is_the_tail_integral_of_the_cf_quantile(skew, kurt, confidence):
    mean, std = 0.0005, 0.035
    var, es = cornish_fisher_var_es_from_moments(mean, std, skew, kurt, confidence)
    # Same c = ndtri(1 - a) (scipy.stats.norm.ppf is ndtri); the polynomial in two operation orders,
    # each term within gamma(8) of its absolute value (c^3 - 3c and 2c^3 - 5c cancel), and -mean - std z.
    c = stats.norm.ppf(1 - confidence)
    poly_abs = (abs(c) + (c * c + 1) * abs(skew) / 6 + (abs(c) ** 3 + 3 * abs(c)) * abs(kurt) / 24
                + (2 * abs(c) ** 3 + 5 * abs(c)) * skew * skew / 36)
    assert var == pytest.approx(-mean - std * cf_quantile(1 - confidence, skew, kurt),
                                abs=2 * gamma(8) * std * poly_abs + 2 * gamma(2) * abs(mean))
    integral, _ = integrate.quad(lambda u: -mean - std * cf_quantile(u, skew, kurt), 0.0, 1 - confidence,
                                 limit=200, epsabs=1e-13, epsrel=1e-12)
    assert es == pytest.approx(integral / (1 - confidence), rel=1e-8)
    assert es >= var


def test_cornish_fisher_from_returns_uses_method_of_moments():
    r = fat_tailed_returns(13, n_obs=500)
    w = weights_for(14, 3)
    p = r @ w
    skew = stats.skew(p, bias=True)
    kurt = stats.kurtosis(p, fisher=True, bias=True)
    std = p.std(ddof=0)
    for h in (1, 10):
        m = cornish_fisher_var_es(w, r, 0.99, h)
        var, es = cornish_fisher_var_es_from_moments(h * p.mean(), math.sqrt(h) * std,
                                                     skew / math.sqrt(h), kurt / h, 0.99)
        # Moments by the module (centred returns . w) and by scipy.stats (centred p): the same N-term sums
        # in two orders, bounded like the Euler sums (cornish_fisher_euler_atol: the same terms and factors).
        var_atol, es_atol = cornish_fisher_euler_atol(w, r, h, 0.99, mean_estimated_twice=True)
        assert (m.var, m.es) == (pytest.approx(var, abs=var_atol), pytest.approx(es, abs=es_atol))
    assert m.flags == ()


@pytest.mark.parametrize("horizon", [1, 10])
def test_cornish_fisher_contributions_are_euler_gradients(horizon):
    r = fat_tailed_returns(15, n_obs=600, n_assets=4)
    w = weights_for(16, 4)
    m = cornish_fisher_var_es(w, r, 0.99, horizon)
    for attr, contrib in (("var", m.var_contributions), ("es", m.es_contributions)):
        grad = finite_difference_gradient(lambda x: getattr(cornish_fisher_var_es(x, r, 0.99, horizon), attr),
                                          w, step=1e-7)
        np.testing.assert_allclose(contrib, w * grad, rtol=1e-5, atol=1e-10)
        var_atol, es_atol = cornish_fisher_euler_atol(w, r, horizon, 0.99)
        assert contrib.sum() == pytest.approx(getattr(m, attr), abs=var_atol if attr == "var" else es_atol)


def test_cornish_fisher_flags_a_non_monotone_expansion():
    # Heavily skewed returns: one -60 % day in 40 small ones.
    r = np.full((40, 1), 0.001)
    r[17, 0] = -0.6
    m = cornish_fisher_var_es([1.0], r, 0.99)
    assert "cornish_fisher_not_monotone" in m.flags
    assert cornish_fisher_var_es([1.0], fat_tailed_returns(2, n_assets=1), 0.95).flags == ()


def test_zero_weights_give_zero_risk_for_every_method():
    r = fat_tailed_returns(17)
    for method in METHODS:
        m = portfolio_var_es([0.0, 0.0, 0.0], method=method, returns=r, confidence=0.95)
        assert m.var == 0.0 and m.es == 0.0, method
        assert m.flags == ()


# --------------------------------------------------------------------------- #
# Properties (hypothesis)
# --------------------------------------------------------------------------- #
RETURNS = fat_tailed_returns(18, n_obs=500, n_assets=3)
COVARIANCE = random_covariance(19, 3)
RETURNS_COV = np.cov(RETURNS, rowvar=False) * 365  # magnitudes for the Euler bounds of the gaussian method
RETURNS_MEAN = RETURNS.mean(axis=0)

weight_vectors = st.lists(st.floats(0.0, 1.0), min_size=3, max_size=3).filter(lambda x: sum(x) > 1e-3).map(
    lambda x: np.array(x) / max(sum(x), 1.0))


@settings(max_examples=60, deadline=None)
# Confidence stays below 1 − 1/len(RETURNS) (500 scenarios): above it the historical tail holds less than one scenario.
@given(w=weight_vectors, lower=st.floats(0.5, 0.985), gap=st.floats(1e-3, 0.01))
def test_es_is_monotone_in_confidence_and_not_below_var(w, lower, gap):
    higher = lower + gap
    for method in ("historical", "gaussian"):
        lo = portfolio_var_es(w, method=method, returns=RETURNS, confidence=lower)
        hi = portfolio_var_es(w, method=method, returns=RETURNS, confidence=higher)
        assert hi.es >= lo.es - 1e-15, method
        assert lo.es >= lo.var - 1e-15 and hi.es >= hi.var - 1e-15, method
    lo = cornish_fisher_var_es(w, RETURNS, lower)
    hi = cornish_fisher_var_es(w, RETURNS, higher)
    if not (lo.flags or hi.flags):
        assert hi.es >= lo.es - 1e-15 and lo.es >= lo.var - 1e-15


@settings(max_examples=60, deadline=None)
@given(w=weight_vectors, c=st.floats(0.01, 1.0), confidence=st.sampled_from([0.95, 0.99]),
       horizon=st.sampled_from([1, 10]))
def test_measures_are_positively_homogeneous_of_degree_one(w, c, confidence, horizon):
    g = gaussian_var_es(w, COVARIANCE, confidence, horizon)
    gc = gaussian_var_es(c * w, COVARIANCE, confidence, horizon)
    # Mean zero: sqrt(h) k sqrt(w'(S/P)w) at w and c w: per evaluation the form (gamma(2n) cq, and U cq
    # for S/P) halved, 4 scalar roundings; rounding c w moves sigma by <= U cq; c * g one more U.
    cq = quadratic_form_condition(w, COVARIANCE)
    rtol = (gamma(6) + U) * cq + 8 * U + U * cq + U
    assert gc.es == pytest.approx(c * g.es, rel=rtol) and gc.var == pytest.approx(c * g.var, rel=rtol)
    np.testing.assert_allclose(gc.es_contributions, c * g.es_contributions, rtol=1e-11, atol=1e-17)
    for method in ("historical", "cornish_fisher"):
        m = portfolio_var_es(w, method=method, returns=RETURNS, confidence=confidence, horizon_days=horizon)
        mc = portfolio_var_es(c * w, method=method, returns=RETURNS, confidence=confidence,
                              horizon_days=horizon)
        assert mc.es == pytest.approx(c * m.es, rel=1e-10), method


@settings(max_examples=60, deadline=None)
@given(w=weight_vectors, confidence=st.sampled_from([0.95, 0.99]), horizon=st.sampled_from([1, 10]),
       method=st.sampled_from(METHODS))
def test_contributions_sum_to_the_total(w, confidence, horizon, method):
    m = portfolio_var_es(w, method=method, returns=RETURNS, confidence=confidence, horizon_days=horizon,
                         nav_base_units=NAV)
    if method == "gaussian":  # Euler sums vs the totals: the same terms summed two ways (see the helpers)
        k_var = stats.norm.ppf(confidence)
        var_atol = gaussian_euler_atol(w, RETURNS_COV / 365, RETURNS_MEAN, horizon, k_var)
        es_atol = gaussian_euler_atol(w, RETURNS_COV / 365, RETURNS_MEAN, horizon,
                                      stats.norm.pdf(k_var) / (1 - confidence))
    elif method == "historical":
        es_atol, var_atol = historical_contribution_atol(w, horizon_returns(RETURNS, horizon), confidence)
    else:
        var_atol, es_atol = cornish_fisher_euler_atol(w, RETURNS, horizon, confidence)
    assert m.var_contributions.sum() == pytest.approx(m.var, abs=var_atol + 1e-300)
    assert m.es_contributions.sum() == pytest.approx(m.es, abs=es_atol + 1e-300)
    assert sum(m.es_contributions_base_units) == m.es_base_units == to_base_units(m.es, NAV)
    assert sum(m.var_contributions_base_units) == m.var_base_units == to_base_units(m.var, NAV)
    for part, contrib in zip(m.es_contributions_base_units, m.es_contributions):
        assert abs(part - contrib * NAV) <= 1.0 + 1e-3


# --------------------------------------------------------------------------- #
# Base units
# --------------------------------------------------------------------------- #
def test_base_units_are_exact_nearest():
    assert to_base_units(0.15, 1_000_000_000) == 150_000_000  # 0.15 is 0.1499999... in binary
    assert to_base_units(0.1, 10**30) == round(Fraction(0.1) * 10**30)  # no float product
    assert to_base_units(-0.25, 10) == -2  # half to even
    assert to_base_units(0.25, 10) == 2
    # exact parts 1.25, 3.75, 5: floors 1, 3, 5 and the missing unit goes to the largest remainder
    assert apportion_base_units([0.125, 0.375, 0.5], 10, 10) == (1, 4, 5)
    assert apportion_base_units([1 / 3, 1 / 3, 1 / 3], 100, 100) == (34, 33, 33)  # tie: first asset
    assert sum(apportion_base_units([0.3, 0.3, 0.3], 5, 1_000_000)) == 5  # far from the parts: spread


# --------------------------------------------------------------------------- #
# Report
# --------------------------------------------------------------------------- #
def test_risk_report_has_every_combination_and_serialises():
    r = fat_tailed_returns(20, n_obs=400)
    w = np.array([0.4, 0.3, 0.2])
    report = risk_report(w, r, symbols=("BTC", "ETH", "SOL"), nav_base_units=NAV)
    assert len(report.measures) == 3 * 2 * 2
    m = report.measure("cornish_fisher", 0.99, 10)
    # Same path: the report and portfolio_var_es call the same functions on the same inputs.
    assert m.es == cornish_fisher_var_es(w, r, 0.99, 10).es
    assert report.measure("historical", 0.95, 1).var == historical_var_es(w, r, 0.95).var
    data = json.loads(json.dumps(report.to_dict()))
    assert data["measures"][0]["es_contributions_base_units"].keys() == {"BTC", "ETH", "SOL"}
    assert data["base_weight"] == pytest.approx(0.1)
    with pytest.raises(ConfigError, match="no measure"):
        report.measure("gaussian", 0.975, 1)
    with_cov = risk_report(w, r, covariance=random_covariance(1, 3), methods=("gaussian",))
    assert with_cov.covariance_source == "covariance" and len(with_cov.measures) == 4


# --------------------------------------------------------------------------- #
# Pre-trade ES limit
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("method", METHODS)
def test_limit_within_returns_target_unchanged(method):
    r = fat_tailed_returns(21)
    w = np.array([0.3, 0.3, 0.2])
    es = portfolio_var_es(w, method=method, returns=r).es
    decision = enforce_es_limit(w, es * 1.01, method=method, returns=r, nav_base_units=NAV)
    assert decision.within_limit and decision.scale == 1.0
    np.testing.assert_array_equal(decision.approved_weights, w)  # exact: the target itself
    assert decision.es_before == decision.es_after == es  # same path: the same measure, computed once
    assert "within the limit" in decision.reason
    exact = enforce_es_limit(w, es, method=method, returns=r)  # equality is within the limit
    assert exact.within_limit


@pytest.mark.parametrize("horizon", [1, 10])
@pytest.mark.parametrize("method", METHODS)
def test_limit_breach_scales_the_risky_sleeve_to_the_limit(method, horizon):
    r = fat_tailed_returns(22, n_obs=500)
    w = np.array([0.35, 0.35, 0.25])
    es = portfolio_var_es(w, method=method, returns=r, horizon_days=horizon).es
    limit = 0.4 * es
    d = enforce_es_limit(w, limit, method=method, returns=r, horizon_days=horizon, nav_base_units=NAV)
    assert not d.within_limit
    assert d.es_before == es
    assert d.es_after <= limit
    # ES(s w) = s ES(w) up to two evaluations (es_evaluation_rtol); s = limit / ES (U) is then stepped
    # down until ES(s w) <= limit, by at most twice the overshoot.
    eval_rtol = es_evaluation_rtol(method, w, r, horizon)
    assert d.es_after == pytest.approx(limit, rel=2 * eval_rtol + 8 * U)
    assert d.scale == pytest.approx(0.4, rel=3 * eval_rtol + 9 * U)  # limit = 0.4 es exactly up to U
    np.testing.assert_array_equal(d.approved_weights, d.scale * w)  # same path: approved = scale * w
    # The largest scale: a hair more breaches the limit.
    more = portfolio_var_es(d.scale * (1 + 1e-9) * w, method=method, returns=r, horizon_days=horizon)
    assert more.es > limit
    assert d.es_limit_base_units == to_base_units(limit, NAV)
    assert d.es_before_base_units == to_base_units(es, NAV)
    assert f"{es:.6%}" in d.reason and f"{limit:.6%}" in d.reason and "scaled by" in d.reason
    assert json.loads(json.dumps(d.to_dict()))["scale"] == d.scale  # exact: JSON floats round-trip (repr)


def test_limit_with_covariance_and_zero_limit():
    cov = random_covariance(23, 3)
    w = np.array([0.2, 0.3, 0.4])
    d = enforce_es_limit(w, 0.01, method="gaussian", covariance=cov, confidence=0.975)
    full = gaussian_var_es(w, cov, 0.975).es
    # s = 0.01 / ES(w) (same evaluation as ours), stepped down by at most twice the overshoot of ES(s w)
    # over s ES(w): two evaluations of sqrt(h) k sqrt(w'(S/P)w) (mean zero).
    z = stats.norm.ppf(0.975)
    eval_rtol = gaussian_two_path_atol(w, cov, np.zeros(3), 1, stats.norm.pdf(z) / 0.025, 0.0) / full
    assert d.scale == pytest.approx(0.01 / full, rel=2 * eval_rtol + 6 * U) and d.es_after <= 0.01
    zero = enforce_es_limit(w, 0.0, method="gaussian", covariance=cov)
    assert zero.scale == 0.0 and zero.es_after == 0.0
    np.testing.assert_array_equal(zero.approved_weights, [0.0, 0.0, 0.0])


# --------------------------------------------------------------------------- #
# Bad input
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("kwargs,error,match", [
    (dict(weights=[-0.1, 0.5, 0.5]), ConfigError, "long only"),
    (dict(weights=[0.5, 0.5, 0.5]), ConfigError, "sum to at most 1"),
    (dict(weights=[0.5, 0.5]), ConfigError, r"expected \(n_obs, 2\)"),
    (dict(weights=[[0.5, 0.5, 0.0]]), ConfigError, "expected \\(n_assets,\\)"),
    (dict(weights=[np.nan, 0.1, 0.1]), ConfigError, "non-finite"),
    (dict(confidence=0.3), ConfigError, r"\[0.5, 1\)"),
    (dict(confidence=1.0), ConfigError, r"\[0.5, 1\)"),
    (dict(horizon_days=0), ConfigError, "positive integer"),
    (dict(horizon_days=2.5), ConfigError, "positive integer"),
    (dict(method="montecarlo"), ConfigError, "choose one of"),
    (dict(nav_base_units=1.5), ConfigError, "non-negative int"),
    (dict(nav_base_units=-1), ConfigError, "non-negative int"),
    (dict(returns=None), ConfigError, "pass daily returns"),
    (dict(returns="nan"), InvalidPriceError, "row 4, column 1"),
    (dict(returns="below"), InvalidPriceError, ">= -1"),
])
def test_bad_input_raises_named_errors(kwargs, error, match):
    r = fat_tailed_returns(24, n_obs=200)
    if kwargs.get("returns") == "nan":
        r[4, 1] = np.nan
        kwargs["returns"] = r
    elif kwargs.get("returns") == "below":
        r[7, 0] = -1.5
        kwargs["returns"] = r
    args = dict(weights=[0.3, 0.3, 0.3], method="historical", returns=r, confidence=0.95, horizon_days=1)
    args.update(kwargs)
    weights = args.pop("weights")
    with pytest.raises(error, match=match) as info:
        portfolio_var_es(weights, **args)
    assert isinstance(info.value, KeeperError)


def test_bad_covariance_and_limit_inputs():
    w = [0.3, 0.3]
    with pytest.raises(ConfigError, match="not symmetric"):
        gaussian_var_es(w, [[0.1, 0.05], [0.0, 0.1]])
    with pytest.raises(ConfigError, match=r"expected \(2, 2\)"):
        gaussian_var_es(w, np.eye(3))
    with pytest.raises(ConfigError, match="not positive"):
        gaussian_var_es(w, [[0.1, -0.5], [-0.5, 0.1]])
    with pytest.raises(ConfigError, match="periods_per_year"):
        gaussian_var_es(w, np.eye(2), periods_per_year=0)
    with pytest.raises(ConfigError, match="expected_returns"):
        gaussian_var_es(w, np.eye(2), expected_returns=[0.1])
    with pytest.raises(ConfigError, match="needs daily returns"):
        portfolio_var_es(w, method="historical", covariance=np.eye(2))
    for bad in (-0.01, math.nan, math.inf):
        with pytest.raises(ConfigError, match="es_limit"):
            enforce_es_limit(w, bad, method="gaussian", covariance=np.eye(2))
    with pytest.raises(InsufficientHistoryError, match="Cornish-Fisher"):
        cornish_fisher_var_es(w, np.zeros((3, 2)))
    with pytest.raises(ConfigError, match="symbols"):
        risk_report(w, np.zeros((200, 2)), symbols=("BTC",))
