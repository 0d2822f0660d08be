"""The convex risk model (keeper.book_risk): full revaluation against closed forms, Euler contributions, and what a
protective put does to its asset's contribution. Chain-free."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate
from scipy.stats import norm

from keeper import options
from keeper.book_risk import (RiskModelConfig, VolShock, book_risk, estimate_vol_return_beta, revalue,
                              scenario_returns, tail_weights)
from keeper.errors import ConfigError
from keeper.greeks import OptionPosition
from keeper.units import SECONDS_PER_DAY

NOW = 1_650_000_000
DAY = SECONDS_PER_DAY


def _returns(seed: int = 7, n_obs: int = 500) -> np.ndarray:
    rng = np.random.default_rng(seed)
    cov = np.array([[0.0016, 0.0012, 0.0013], [0.0012, 0.0020, 0.0015], [0.0013, 0.0015, 0.0030]])
    z = rng.standard_t(4, size=(n_obs, 3)) / math.sqrt(2.0)  # unit variance, fat tails
    return np.clip(z @ np.linalg.cholesky(cov).T, -0.6, 2.0)


def test_single_short_put_es_matches_the_analytic_distribution_under_the_same_scenarios() -> None:
    # One-day log-normal returns and a vol that moves with them; the short put's loss is monotone in the return
    # (the price falls and the vol rises together), so its ES is an integral over the lower tail of z.
    mu, sigma_d, beta = 0.0, 0.05, -0.8
    s0, strike, iv, tenor_days, q = 30_000.0, 27_000.0, 0.8, 30, -2.0
    shock = VolShock(beta=beta, min_vol=1e-6, max_vol=50.0)
    n, alpha = 1_000_000, 0.99
    z = norm.ppf((np.arange(n) + 0.5) / n)  # scenario k at the centre of the k-th probability cell
    r = np.expm1(mu + sigma_d * z)
    pos = [OptionPosition("BTC", strike, NOW + tenor_days * DAY, False, q)]
    risk = book_risk(RiskModelConfig(method="historical", confidence=alpha, vol_shock=shock), symbols=["BTC"],
                     spots=[s0], vols=[iv], spot_units=[0.0], positions=pos, scenarios=r[:, None], nav=1e6, now=NOW)
    p0 = float(options.price(s0, strike, tenor_days / 365, iv, is_call=False))

    def loss(x: float) -> float:
        ret = math.expm1(mu + sigma_d * x)
        vol = iv * math.exp(beta * ret)
        return -q * (float(options.price(s0 * (1 + ret), strike, (tenor_days - 1) / 365, vol, is_call=False)) - p0)

    tail = 1.0 - alpha
    # Below z = -38 the normal mass (< 1e-300) is nothing a float sees; there the spot would round to 0.
    analytic, quad_err = integrate.quad(lambda x: loss(x) * norm.pdf(x), -38.0, norm.ppf(tail), epsabs=1e-10,
                                        limit=200)
    analytic /= tail
    # The scenario ES is the mean of the loss at the centres of the m = 10,000 tail cells of equal probability;
    # for a monotone loss each cell's centre value differs from the cell's mean by at most the loss's variation
    # over the cell, so |ES_scenarios - ES_analytic| <= (loss(-inf) - loss(z_tail)) / m, plus quad's error.
    m = tail * n
    bound = (abs(q) * strike - loss(norm.ppf(tail))) / m + quad_err
    assert abs(risk.es - analytic) <= bound, (risk.es, analytic, bound)
    # And the VaR is the loss at the last tail cell's centre.
    assert risk.var == pytest.approx(loss(z[int(m) - 1]), rel=1e-12)


def test_contributions_sum_to_es_and_volatility() -> None:
    syms = ["BTC", "ETH", "SOL"]
    spots = np.array([30_000.0, 2_000.0, 40.0])
    book = [OptionPosition("BTC", 26_000.0, NOW + 30 * DAY, False, 5.0),
            OptionPosition("ETH", 1_700.0, NOW + 60 * DAY, False, 80.0),
            OptionPosition("SOL", 55.0, NOW + 20 * DAY, True, -500.0)]
    for method in ("historical", "filtered"):
        for confidence in (0.95, 0.99, 0.975):
            risk = book_risk(RiskModelConfig(method=method, confidence=confidence), symbols=syms, spots=spots,
                             vols=[0.7, 0.8, 1.1], spot_units=[10.0, 150.0, 5000.0], positions=book,
                             returns=_returns(), nav=1_000_000.0, now=NOW)
            # Float summation of k terms of size <= max|c|: error <= k * eps * max|c| (k = 6 positions).
            tol = 6 * np.finfo(float).eps * float(np.abs(risk.es_contributions).max()) * 4
            assert abs(risk.es_contributions.sum() - risk.es) <= tol
            assert risk.asset_es_contributions.sum() == pytest.approx(risk.es, abs=tol)
            vtol = 6 * np.finfo(float).eps * float(np.abs(risk.volatility_contributions).max()) * 4
            assert abs(risk.volatility_contributions.sum() - risk.volatility) <= vtol
            assert risk.es >= risk.var - 1e-9 * abs(risk.var)


def test_a_put_lowers_its_assets_es_contribution_and_the_total() -> None:
    syms = ["BTC", "ETH", "SOL"]
    spots = np.array([30_000.0, 2_000.0, 40.0])
    units = np.array([10.0, 150.0, 5000.0])
    common = dict(symbols=syms, spots=spots, vols=[0.7, 0.8, 1.1], spot_units=units, returns=_returns(),
                  nav=1_000_000.0, now=NOW)
    cfg = RiskModelConfig()
    bare = book_risk(cfg, positions=[], **common)
    strike = float(options.strike_for_delta(-0.2, 30_000.0, 30 / 365, 0.7, is_call=False))
    hedged = book_risk(cfg, positions=[OptionPosition("BTC", strike, NOW + 30 * DAY, False, 10.0)], **common)
    assert hedged.asset_es_contributions[0] < bare.asset_es_contributions[0]
    assert hedged.es < bare.es
    # The put's own contribution is negative (it gains in the tail).
    assert hedged.es_contributions[3] < 0.0


def test_filtered_scenarios_rescale_to_todays_volatility() -> None:
    rng = np.random.default_rng(3)
    calm, wild = rng.normal(0, 0.01, (300, 1)), rng.normal(0, 0.05, (100, 1))
    r = np.vstack([calm, wild])
    hist = scenario_returns(r, RiskModelConfig(method="historical"))
    fhs = scenario_returns(r, RiskModelConfig(method="filtered", half_life_days=10))
    np.testing.assert_array_equal(hist, r)
    # After a volatile spell the filtered scenarios carry today's (high) volatility across the whole window.
    assert fhs[:300].std() > 3 * calm.std()


def test_horizon_scenarios_compound_and_options_lose_time() -> None:
    r = np.full((5, 1), 0.01)
    two = scenario_returns(r, RiskModelConfig(method="historical", horizon_days=2))
    np.testing.assert_allclose(two, np.full((4, 1), 1.01**2 - 1), rtol=1e-14)
    # A flat scenario (no move, no vol shock): a long option loses exactly its time value over the horizon.
    pos = [OptionPosition("BTC", 100.0, NOW + 10 * DAY, False, 1.0)]
    pnl = revalue(symbols=["BTC"], spots=[100.0], vols=[0.5], spot_units=[0.0], positions=pos,
                  scenarios=np.zeros((1, 1)), now=NOW, horizon_days=3)
    expected = options.price(100.0, 100.0, 7 / 365, 0.5, is_call=False) - options.price(100.0, 100.0, 10 / 365, 0.5,
                                                                                        is_call=False)
    assert pnl[0, 1] == pytest.approx(float(expected), rel=1e-12)
    # Expiring inside the horizon: valued at the payoff.
    pnl = revalue(symbols=["BTC"], spots=[100.0], vols=[0.5], spot_units=[0.0], positions=pos,
                  scenarios=np.array([[-0.2]]), now=NOW, horizon_days=12)
    assert pnl[0, 1] == pytest.approx(20.0 - float(options.price(100.0, 100.0, 10 / 365, 0.5, is_call=False)))


def test_tail_weights_sum_to_the_tail_mass() -> None:
    w, var = tail_weights(np.arange(250.0), 0.99)
    # m = (1 - 0.99) * 250 carries the binary rounding of 0.99 (half an ulp of 1) times 250.
    tol = 250 * np.finfo(float).eps
    assert w.sum() == pytest.approx(2.5, abs=tol) and w[249] == 1 and w[248] == 1 and var == 247.0
    assert w[247] == pytest.approx(0.5, abs=tol) and not w[:247].any()
    with pytest.raises(ConfigError, match="scenarios"):
        tail_weights(np.arange(50.0), 0.99)


def test_bad_inputs_name_the_field() -> None:
    with pytest.raises(ConfigError, match="method"):
        RiskModelConfig(method="gaussian")
    with pytest.raises(ConfigError, match="confidence"):
        RiskModelConfig(confidence=1.0)
    with pytest.raises(ConfigError, match="exactly one"):
        book_risk(RiskModelConfig(), symbols=["BTC"], spots=[1.0], vols=[0.5], spot_units=[1.0], positions=[],
                  nav=1.0, now=NOW)
    with pytest.raises(ConfigError, match="not among the assets"):
        revalue(symbols=["BTC"], spots=[1.0], vols=[0.5], spot_units=[1.0],
                positions=[OptionPosition("ETH", 1.0, NOW + DAY, False, 1.0)], scenarios=np.zeros((3, 1)), now=NOW)
    with pytest.raises(ConfigError, match="row 1"):
        scenario_returns(np.array([[0.1], [-1.0], [0.0]]), RiskModelConfig())


def test_vol_return_beta_recovers_a_known_slope() -> None:
    rng = np.random.default_rng(11)
    ret = rng.normal(0, 0.04, 400)
    closes = 100 * np.cumprod(np.concatenate([[1.0], 1 + ret]))
    iv = 0.8 * np.exp(np.cumsum(np.concatenate([[0.0], -0.5 * ret + rng.normal(0, 0.002, 400)])))
    beta, corr, n = estimate_vol_return_beta(iv, closes)
    assert n == 400 and corr < -0.9
    # Slope standard error ≈ noise sd / (sd(ret) √n) = 0.002 / (0.04 · 20) = 0.0025: five of them.
    assert beta == pytest.approx(-0.5, abs=5 * 0.0025)


def test_max_spot_scale_brings_the_book_within_an_es_limit() -> None:
    from keeper.book_risk import max_spot_scale_for_es

    syms = ["BTC", "ETH", "SOL"]
    common = dict(symbols=syms, spots=[30_000.0, 2_000.0, 40.0], vols=[0.7, 0.8, 1.1], returns=_returns(),
                  nav=1_000_000.0, now=NOW)
    book = [OptionPosition("BTC", 27_000.0, NOW + 30 * DAY, False, 10.0)]
    units = np.array([10.0, 150.0, 5000.0])
    cfg = RiskModelConfig()
    full = book_risk(cfg, spot_units=units, positions=book, **common)
    limit = 0.6 * full.es
    k = max_spot_scale_for_es(full, limit)
    assert 0.0 < k < 1.0
    at_k = book_risk(cfg, spot_units=k * units, positions=book, **common)
    above = book_risk(cfg, spot_units=min(k + 1e-6, 1.0) * units, positions=book, **common)
    # Bisection leaves k within 2^-40 below the boundary, so k + 1e-6 lies beyond it: the ES there is above.
    assert at_k.es <= limit < above.es
    assert max_spot_scale_for_es(full, 2 * full.es) == 1.0
