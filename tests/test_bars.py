"""Any regular bar size end to end: hourly closes annualised with 8,760 bars a year in the estimator, the
backtest's metrics and the policy; time triggers and the cost gate in seconds; the shipped hourly file."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pytest
from pydantic import ValidationError

from keeper.backtest import BacktestConfig, Market, run_backtest
from keeper.backtest_metrics import compute_metrics
from keeper.config import KeeperConfig
from keeper.costs import GasModel, PoolModel
from keeper.covariance import EstimatorConfig
from keeper.policy_config import PolicyConfig
from keeper.price_panel import HOURLY_BTC_ETH_CSV, load_price_panel
from keeper.strategies import FixedMix
from keeper.triggers import TriggerPolicy, expected_risk_benefit

HOUR = 3600
#: Annualised volatility of the synthetic series.
SIGMA_YEAR = 0.8
BARS_A_YEAR = 8760


def _hourly_csv(tmp_path, n_bars: int, seed: int = 11) -> tuple[object, np.ndarray]:
    """Two assets whose hourly *simple* returns are iid normal with variance SIGMA_YEAR² / 8760 (so the annualised
    variance of the simple returns is SIGMA_YEAR² exactly in expectation), independent of each other."""
    rng = np.random.default_rng(seed)
    sigma_bar = SIGMA_YEAR / math.sqrt(BARS_A_YEAR)
    r = rng.normal(0.0, sigma_bar, size=(n_bars - 1, 2))
    prices = np.array([30_000.0, 2_000.0]) * np.vstack([[1.0, 1.0], np.cumprod(1.0 + r, axis=0)])
    start = dt.datetime(2021, 1, 1, tzinfo=dt.timezone.utc)
    rows = [f"{(start + dt.timedelta(hours=t)).strftime('%Y-%m-%dT%H:%M:%SZ')},{p[0]:.6f},{p[1]:.6f}"
            for t, p in enumerate(prices)]
    path = tmp_path / "hourly.csv"
    path.write_text("ts_utc,BTC,ETH\n" + "\n".join(rows) + "\n")
    return path, r


def _ewma_effective_n(n: int, half_life_bars: float) -> float:
    """Kish's effective sample size (Σv)² / Σv² of the EWMA weights v_k = 2^(-k/h), k = 0..n-1."""
    v = 2.0 ** (-np.arange(n) / half_life_bars)
    return float(v.sum() ** 2 / (v**2).sum())


def test_hourly_bars_are_annualised_with_8760_bars_in_the_estimator_and_the_metrics(tmp_path) -> None:
    n_bars = 24 * 60
    path, r = _hourly_csv(tmp_path, n_bars)
    panel = load_price_panel(path)
    assert panel.bar_seconds == HOUR and panel.periods_per_year == BARS_A_YEAR and not panel.calendar_gaps
    config = BacktestConfig(lookback_days=20, half_life_days=5.0, min_observations=30, bar_seconds=HOUR,
                            pools=PoolModel(depth_usd=1e12), gas=GasModel(eth_price_usd=2000.0))
    assert config.periods_per_year == BARS_A_YEAR and config.lookback_bars == 480 and config.tick_every_bars == 24
    market = Market(panel, config.lookback_days)
    t = n_bars - 1
    gate = market.gate(t, (0, 1), config)
    assert gate.estimate is not None and gate.estimate.periods_per_year == BARS_A_YEAR
    # The estimator: an EWMA of 480 hourly returns with a 5-day = 120-bar half-life. The relative standard error
    # of a variance estimated from n_eff iid normal returns is sqrt(2 / n_eff) (n_eff: Kish's effective size of
    # the weights, 331 here, so 7.8 %); four of them bound the variance, two the volatility (half the relative
    # error of the variance).
    n_eff = _ewma_effective_n(480, 120.0)
    for variance in np.diag(gate.estimate.covariance):
        assert variance == pytest.approx(SIGMA_YEAR**2, rel=4 * math.sqrt(2.0 / n_eff))
    # The same returns annualised with 365 periods (the daily factor) would be off by sqrt(24) = 4.9 in vol.
    assert math.sqrt(variance) > SIGMA_YEAR / 2

    # The backtest's metrics: BTC only holds the asset; its NAV's bar return is w_{t-1} r_t with the holdings'
    # weight w, so the expected annualised variance is SIGMA_YEAR² mean(w²) (w is set by the path, not by r_t).
    # The sample variance of n iid returns has a relative standard error sqrt(2 / (n - 1)) (3.9 % here over
    # 1,319 bars); its square root half that. We allow 4 standard errors of the variance.
    run = run_backtest(panel, [FixedMix("BTC only", {"BTC": 1.0})], config)
    result = run["results"][0]
    assert run["bar_seconds"] == HOUR and run["bars"] == n_bars - 480
    w = result.weights[:-1, 0]  # the weight held into each bar's return
    assert w.min() > 0.9  # invested from the first bar's close on
    expected = SIGMA_YEAR * math.sqrt(float(np.mean(w**2)))
    n = len(result.nav) - 1
    assert result.metrics["annualised_volatility"] == pytest.approx(expected, rel=2 * math.sqrt(2.0 / (n - 1)))
    # CAGR over the real elapsed time: 1,320 - 480 bars of an hour, not as many days.
    elapsed_years = (len(result.nav) - 1) * HOUR / (365 * 86400)
    total = result.nav[-1] / result.nav[0]
    assert result.metrics["annualised_return"] == pytest.approx(total ** (1 / elapsed_years) - 1, rel=1e-12)
    assert result.metrics["days"] == pytest.approx((len(result.nav) - 1) / 24)  # elapsed, first to last close


def test_the_shipped_hourly_file_runs_in_the_backtest() -> None:
    panel = load_price_panel(HOURLY_BTC_ETH_CSV, end=dt.date(2020, 3, 20))
    assert panel.bar_seconds == HOUR and panel.symbols == ("BTC", "ETH")
    assert panel.labels[0] == dt.datetime(2017, 8, 17, 4)
    config = BacktestConfig(lookback_days=10, half_life_days=3.0, min_observations=30, bar_seconds=panel.bar_seconds)
    run = run_backtest(panel, [FixedMix("BTC only", {"BTC": 1.0})], config, start=dt.date(2020, 3, 1),
                       end=dt.date(2020, 3, 20))
    result = run["results"][0]
    assert run["bars"] == 20 * 24 and result.dates[0] == dt.datetime(2020, 3, 1, 0)
    # BTC's hourly closes of March 2020: the annualised vol of the held asset is of the order of 100 %; the
    # daily factor (sqrt(365) on hourly returns) would show about a fifth of it.
    btc = panel.prices[panel.index_on_or_after(dt.date(2020, 3, 1)):, 0]
    btc_vol = float(np.std(np.diff(btc) / btc[:-1], ddof=1) * math.sqrt(BARS_A_YEAR))
    assert 0.8 < btc_vol < 2.5
    assert result.metrics["annualised_volatility"] == pytest.approx(btc_vol, rel=0.15)  # ~100 % held, 5 % cash
    assert result.metrics["final_es_99_1d"] is not None  # a one-day ES of 24-bar scenarios


def test_policy_bar_seconds_sets_the_periods_and_refuses_what_does_not_fit() -> None:
    hourly = PolicyConfig(bar_seconds=HOUR, lookback_days=10)
    assert hourly.periods_per_year == BARS_A_YEAR and hourly.estimator.periods_per_year == BARS_A_YEAR
    assert hourly.lookback_bars == 240 and hourly.estimator.half_life_periods == 30.0 * 24
    daily = PolicyConfig()
    assert daily.bar_seconds == 86400 and daily.estimator.half_life_periods == 30.0  # exact: days = bars
    # A flat keeper config reaches the same field; the estimator follows the bar.
    config = KeeperConfig(rpc_url="http://127.0.0.1:8545", vault_address="0x" + "11" * 20,
                          quoter_address="0x" + "22" * 20, bar_seconds=HOUR)
    assert config.policy.bar_seconds == HOUR and config.policy.estimator.periods_per_year == BARS_A_YEAR
    with pytest.raises(ValidationError, match="must divide a 365-day year"):
        PolicyConfig(bar_seconds=7 * 86400)
    with pytest.raises(ValidationError, match="greater than or equal to 60"):
        PolicyConfig(bar_seconds=1)
    with pytest.raises(ValidationError, match="periods_per_year is 365 but bar_seconds 3600 gives 8760"):
        PolicyConfig(bar_seconds=HOUR, estimator=EstimatorConfig(method="ewma", half_life_days=30.0))
    with pytest.raises(ValidationError, match=r"max_days_between was replaced by max_seconds_between.*2.592e\+06"):
        PolicyConfig(max_days_between=30)
    with pytest.raises(ValidationError, match="benefit_horizon_days was replaced by benefit_horizon_seconds"):
        KeeperConfig(rpc_url="http://127.0.0.1:8545", vault_address="0x" + "11" * 20,
                     quoter_address="0x" + "22" * 20, benefit_horizon_days=30)
    # min_observations counts returns: 100 hourly returns need a window of 101 hours = 4.21 days.
    with pytest.raises(ValidationError, match=r"min_observations \(100\) needs lookback_days >= 4.20833 at bar_seconds "
                                              "3600"):
        PolicyConfig(bar_seconds=HOUR, lookback_days=3, estimator={"method": "ewma", "half_life_days": 1.0,
                                                                   "min_observations": 100})
    assert PolicyConfig(bar_seconds=HOUR, lookback_days=3, estimator={
        "method": "ewma", "half_life_days": 1.0, "min_observations": 71}).lookback_bars == 72


def test_time_trigger_and_cost_gate_horizon_are_seconds() -> None:
    policy = TriggerPolicy(max_seconds_between=6 * HOUR)
    assert policy.horizon_seconds == 30 * 86400
    cov = np.diag([0.64, 0.36])
    # The benefit depends on the horizon's time only: 30 days of hourly or of daily bars are the same 30 days.
    benefit = expected_risk_benefit([0.5, 0.3], [0.4, 0.4], [0.4, 0.4], cov, 1e6, 5.0, 30 * 86400)
    assert benefit == pytest.approx(1e6 * 2.5 * (0.1**2 * 0.64 + 0.1**2 * 0.36) * 30 / 365, rel=1e-12)


def test_the_es_limit_measures_one_day_of_hourly_returns() -> None:
    from scipy.stats import norm

    from keeper.policy import decide_targets

    rng = np.random.default_rng(5)
    n = 2000
    sigma_bar = SIGMA_YEAR / math.sqrt(BARS_A_YEAR)
    returns = rng.normal(0.0, sigma_bar, size=(n, 2))
    config = PolicyConfig(bar_seconds=HOUR, lookback_days=90, es_limit=0.99, es_method="gaussian",
                          cash_buffer_bps=0.0, estimator={"method": "sample", "min_observations": 30})
    decision = decide_targets(returns, ("BTC", "ETH"), np.zeros(2), config=config)
    w = np.asarray(decision.target_weights)
    # One day = 24 hourly bars: the zero-mean Gaussian ES of the day's return (the limit's measure on the
    # covariance, no expected returns) is sigma_day phi(z_0.99) / 0.01 with sigma_day² = w'Σw / 365 (Σ annualised).
    # Its relative error is that of a volatility estimated from n = 2000 iid normal returns, 1 / sqrt(2n) = 1.6 %;
    # five of them bound it. A one-bar horizon would give sqrt(24) = 4.9 times less.
    sigma_day = SIGMA_YEAR * math.sqrt(float(w @ w) / 365)
    expected = sigma_day * norm.pdf(norm.ppf(0.99)) / 0.01
    assert decision.es_before == pytest.approx(expected, rel=5 / math.sqrt(2 * n))
