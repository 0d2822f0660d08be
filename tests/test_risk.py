"""Tests of keeper.risk: VaR/ES (historical, Gaussian, Cornish-Fisher), Euler contributions, the ES limit.

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
from keeper.risk import (
    METHODS,
    apportion_base_units,
    cornish_fisher_var_es,
    cornish_fisher_var_es_from_moments,
    enforce_es_limit,
    format_risk_report,
    gaussian_var_es,
    gaussian_var_es_from_moments,
    historical_var_es,
    horizon_returns,
    portfolio_var_es,
    risk_report,
    to_base_units,
)

NAV = 12_345_678_901_234  # base units (6 decimals): 12,345,678.901234 USD


# --------------------------------------------------------------------------- #
# Helpers
# --------------------------------------------------------------------------- #
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
    assert var == pytest.approx(loss.ppf(confidence), rel=1e-12, abs=1e-15)
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
            assert m.var == pytest.approx(loss.ppf(confidence), rel=1e-12)
            z = stats.norm.ppf(confidence)
            assert m.es == pytest.approx(
                -h * mu_daily + math.sqrt(h) * sigma_daily * stats.norm.pdf(z) / (1 - confidence), rel=1e-12)
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
        assert contrib.sum() == pytest.approx(getattr(m, attr), rel=1e-13)


def test_gaussian_from_returns_uses_sample_mean_and_covariance():
    r = fat_tailed_returns(5)
    w = weights_for(6, 3)
    from_returns = portfolio_var_es(w, method="gaussian", returns=r, confidence=0.95, horizon_days=10)
    from_cov = gaussian_var_es(w, np.cov(r, rowvar=False) * 365, 0.95, 10,
                               expected_returns=r.mean(axis=0) * 365)
    assert from_returns.var == pytest.approx(from_cov.var, rel=1e-12)
    assert from_returns.es == pytest.approx(from_cov.es, rel=1e-12)
    assert from_returns.n_scenarios == r.shape[0]
    # With a covariance given, the covariance wins over the returns.
    cov = random_covariance(7, 3)
    both = portfolio_var_es(w, method="gaussian", returns=r, covariance=cov)
    assert both.es == pytest.approx(gaussian_var_es(w, cov).es, rel=1e-15)


def test_gaussian_accepts_singular_covariance_and_zero_weights():
    vols = np.array([0.5, 0.8])
    m = gaussian_var_es([0.25, 0.5], np.outer(vols, vols), 0.99)
    sigma = (0.25 * 0.5 + 0.5 * 0.8) / math.sqrt(365)  # perfect correlation: volatilities add
    assert m.var == pytest.approx(stats.norm.ppf(0.99) * sigma, rel=1e-12)
    zero = gaussian_var_es([0.0, 0.0], np.outer(vols, vols), 0.99)
    assert zero.var == 0.0 and zero.es == 0.0 and zero.flags == ()
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
    assert m.var == pytest.approx(var, abs=1e-15)
    assert m.es == pytest.approx(es, abs=1e-15)
    assert m.n_scenarios == 20


def test_historical_ties_share_the_boundary_weight():
    # Losses: 0.10 once, 0.05 three times, then small. a = 0.9, N = 20 -> m = 2: VaR = 0.05,
    # ES = (0.10 + 1 * 0.05) / 2; the three tied scenarios share weight 1/(2*3) each.
    base = np.full(20, 0.01)
    base[[3, 9, 15]] = -0.05
    base[7] = -0.10
    returns = np.column_stack([base, base])  # two identical assets, weights 0.2 and 0.6
    m = historical_var_es([0.2, 0.6], returns, 0.9)
    assert m.var == pytest.approx(0.8 * 0.05, abs=1e-15)
    assert m.es == pytest.approx(0.8 * (0.10 + 0.05) / 2, abs=1e-15)
    np.testing.assert_allclose(m.es_contributions, [0.2 * 0.075, 0.6 * 0.075], atol=1e-15)


def test_historical_contributions_are_tail_conditional_means_and_order_free():
    r = fat_tailed_returns(8, n_obs=250)
    w = weights_for(9, 3)
    m = historical_var_es(w, r, 0.95)
    losses = -(r @ w)
    # N = 250, a = 0.95 -> m = 12.5 tail scenarios: the 12 worst in full, the 13th with weight 0.5.
    order = np.argsort(-losses, kind="stable")
    tail = (-(r * w))[order[:13]]
    weights = np.r_[np.ones(12), 0.5] / 12.5
    np.testing.assert_allclose(m.es_contributions, weights @ tail, rtol=1e-12)
    np.testing.assert_allclose(m.var_contributions, -(r[order[12]] * w), rtol=1e-12)
    assert m.var == pytest.approx(losses[order[12]], rel=1e-14)
    assert m.es_contributions.sum() == pytest.approx(m.es, rel=1e-13)
    assert m.var_contributions.sum() == pytest.approx(m.var, rel=1e-13)
    shuffled = r[np.random.default_rng(1).permutation(r.shape[0])]
    m2 = historical_var_es(w, shuffled, 0.95)
    assert (m2.var, m2.es) == (m.var, pytest.approx(m.es, rel=1e-14))
    np.testing.assert_allclose(m2.es_contributions, m.es_contributions, rtol=1e-12)


@pytest.mark.parametrize("n_obs", [101, 157, 333, 1000])
@pytest.mark.parametrize("confidence", [0.95, 0.99, 0.975])
def test_historical_var_is_numpy_inverted_cdf_and_es_integrates_the_quantile(n_obs, confidence):
    r = fat_tailed_returns(n_obs, n_obs=n_obs)
    w = weights_for(n_obs, 3)
    m = historical_var_es(w, r, confidence)
    losses = -(r @ w)
    # (rel 1e-14: the module sums asset losses, r @ w sums in another order; order statistics differ
    # by far more than that)
    assert m.var == pytest.approx(np.quantile(losses, confidence, method="inverted_cdf"), rel=1e-14)
    # ES = 1/(1-a) * integral_a^1 q(u) du with the empirical quantile q(u) = L_(ceil(uN)), integrated
    # piecewise exactly over the constant steps of q.
    sorted_losses = np.sort(losses)
    grid = np.unique(np.r_[confidence, np.arange(math.ceil(confidence * n_obs), n_obs + 1) / n_obs, 1.0])
    grid = grid[grid >= confidence]
    mids = 0.5 * (grid[:-1] + grid[1:])
    q = sorted_losses[np.ceil(mids * n_obs).astype(int) - 1]
    assert m.es == pytest.approx(float(q @ np.diff(grid)) / (1.0 - confidence), rel=1e-12)


def test_historical_ten_day_uses_overlapping_compounded_returns():
    r = fat_tailed_returns(10, n_obs=300)
    w = weights_for(11, 3)
    loop = np.array([[np.prod(1.0 + r[t:t + 10, i]) - 1.0 for i in range(3)] for t in range(291)])
    np.testing.assert_allclose(horizon_returns(r, 10), loop, rtol=1e-13, atol=1e-16)
    m = historical_var_es(w, r, 0.95, horizon_days=10)
    assert m.n_scenarios == 291
    assert m.var == pytest.approx(np.quantile(-(loop @ w), 0.95, method="inverted_cdf"), rel=1e-13)


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
    assert cornish_fisher_var_es_from_moments(0.001, 0.04, 0.0, 0.0, confidence) == pytest.approx(
        gaussian_var_es_from_moments(0.001, 0.04, confidence), rel=1e-14)


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
    assert var == pytest.approx(-mean - std * cf_quantile(1 - confidence, skew, kurt), rel=1e-12)
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
        assert (m.var, m.es) == (pytest.approx(var, rel=1e-12), pytest.approx(es, rel=1e-12))
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
        assert contrib.sum() == pytest.approx(getattr(m, attr), rel=1e-12)


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
    assert gc.es == pytest.approx(c * g.es, rel=1e-12) and gc.var == pytest.approx(c * g.var, rel=1e-12)
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
    assert m.var_contributions.sum() == pytest.approx(m.var, rel=1e-12, abs=1e-16)
    assert m.es_contributions.sum() == pytest.approx(m.es, rel=1e-12, abs=1e-16)
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
    assert m.es == pytest.approx(cornish_fisher_var_es(w, r, 0.99, 10).es, rel=1e-15)
    assert report.measure("historical", 0.95, 1).var == historical_var_es(w, r, 0.95).var
    data = json.loads(json.dumps(report.to_dict()))
    assert data["measures"][0]["es_contributions_base_units"].keys() == {"BTC", "ETH", "SOL"}
    assert data["base_weight"] == pytest.approx(0.1)
    text = format_risk_report(report)
    assert "cornish_fisher" in text and "12,345,678.901234" in text
    assert len(text.splitlines()) == 2 + 12 + 2 + 12
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
    np.testing.assert_array_equal(decision.approved_weights, w)
    assert decision.es_before == decision.es_after == es
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
    assert d.es_after == pytest.approx(limit, rel=1e-12)
    assert d.scale == pytest.approx(0.4, rel=1e-12)
    np.testing.assert_array_equal(d.approved_weights, d.scale * w)
    # The largest scale: a hair more breaches the limit.
    more = portfolio_var_es(d.scale * (1 + 1e-9) * w, method=method, returns=r, horizon_days=horizon)
    assert more.es > limit
    assert d.es_limit_base_units == to_base_units(limit, NAV)
    assert d.es_before_base_units == to_base_units(es, NAV)
    assert f"{es:.6%}" in d.reason and f"{limit:.6%}" in d.reason and "scaled by" in d.reason
    assert json.loads(json.dumps(d.to_dict()))["scale"] == d.scale


def test_limit_with_covariance_and_zero_limit():
    cov = random_covariance(23, 3)
    w = np.array([0.2, 0.3, 0.4])
    d = enforce_es_limit(w, 0.01, method="gaussian", covariance=cov, confidence=0.975)
    full = gaussian_var_es(w, cov, 0.975).es
    assert d.scale == pytest.approx(0.01 / full, rel=1e-12) and d.es_after <= 0.01
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
