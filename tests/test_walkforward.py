"""Walk-forward evaluation, and the proof that neither it nor the backtest looks ahead."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from keeper.backtest import BacktestConfig, run_backtest
from keeper.strategies import default_strategies
from keeper.price_panel import load_price_panel
from keeper.costs import GasModel, PoolModel
from keeper.data import DEFAULT_PRICES_CSV
from keeper.errors import ConfigError
from keeper.triggers import TriggerPolicy
from keeper.walkforward import WalkForwardConfig, format_windows, walk_forward

SYMBOLS = ["BTC", "ETH", "SOL", "DOGE"]
START, END = dt.date(2022, 3, 1), dt.date(2022, 9, 30)
CUT = dt.date(2022, 6, 15)  # prices after this date are perturbed


def _config() -> BacktestConfig:
    return BacktestConfig(
        lookback_days=45, min_observations=30, half_life_days=20.0,
        policy=TriggerPolicy(weight_drift_bps=200.0, rrc_band=0.05, regime_distance=0.2, max_seconds_between=20 * 86_400,
                             cost_aware=True),
        pools=PoolModel(depth_usd=100e6), gas=GasModel(eth_price_usd=None),
    )


WF = WalkForwardConfig(train_days=60, test_days=30, half_lives_days=(10.0, 30.0), drift_bands_bps=(150.0, 400.0),
                       vol_targets=(0.4, None))


@pytest.fixture(scope="module")
def panels():
    panel = load_price_panel(DEFAULT_PRICES_CSV, SYMBOLS, end=END)
    cut = panel.index_on_or_before(CUT)
    rng = np.random.default_rng(11)
    future = panel.prices.copy()
    # A different future: every close after the cut multiplied by an independent random walk.
    shocks = np.exp(np.cumsum(rng.normal(0, 0.08, size=future[cut + 1:].shape), axis=0))
    future[cut + 1:] *= shocks
    return panel, panel.with_prices(future), cut


def _decisions_until(result, date):
    return [(d.date, d.status, d.reason, d.target_weights) for d in result.decisions if d.date <= date]


def test_backtest_decisions_up_to_a_date_ignore_every_later_price(panels) -> None:
    panel, perturbed, cut = panels
    a = run_backtest(panel, default_strategies(0.5), _config(), START, END)
    b = run_backtest(perturbed, default_strategies(0.5), _config(), START, END)
    n = sum(1 for d in a["results"][0].dates if d <= CUT)
    for ra, rb in zip(a["results"], b["results"]):
        assert _decisions_until(ra, CUT) == _decisions_until(rb, CUT)
        # Same path, bit for bit: up to the cut both runs read the same prices and do the same operations
        # in the same order (that is the property: no later price enters), so no rounding can differ.
        np.testing.assert_array_equal(ra.weights[:n], rb.weights[:n])
        np.testing.assert_array_equal(ra.nav[:n], rb.nav[:n])
        # The perturbation is real: the paths part after the cut.
        assert not np.array_equal(ra.nav[n:], rb.nav[n:])


def test_walk_forward_choices_and_decisions_up_to_a_date_ignore_every_later_price(panels) -> None:
    panel, perturbed, cut = panels
    a = walk_forward(panel, _config(), WF, START, END)
    b = walk_forward(perturbed, _config(), WF, START, END)
    assert len(a.windows) >= 3
    for wa, wb in zip(a.windows, b.windows):
        if wa.test_start <= CUT:  # chosen on data before test_start <= CUT
            assert wa == wb
    assert _decisions_until(a.result, CUT) == _decisions_until(b.result, CUT)
    n = sum(1 for d in a.result.dates if d <= CUT)
    np.testing.assert_array_equal(a.result.nav[:n], b.result.nav[:n])  # same path up to the cut: exact
    assert not np.array_equal(a.result.nav[n:], b.result.nav[n:])


def test_walk_forward_picks_the_best_training_score_and_chains_the_test_windows(panels) -> None:
    panel, _, _ = panels
    res = walk_forward(panel, _config(), WF, START, END)
    grid = WF.grid()
    for w in res.windows:
        finite = [s for s in w.scores if s is not None]
        assert w.train_score == max(finite)
        assert (w.half_life_days, w.drift_band_bps, w.vol_target) == grid[w.scores.index(max(finite))]
        assert (w.test_start - w.train_end).days >= 1  # training ends before the test starts
    # Test windows tile the out-of-sample period without gaps or overlaps.
    assert res.result.dates[0] == res.windows[0].test_start
    assert res.result.dates[-1] == res.windows[-1].test_end
    for a, b in zip(res.windows, res.windows[1:]):
        assert panel.dates.index(b.test_start) == panel.dates.index(a.test_end) + 1
    assert len(res.result.dates) == len(set(res.result.dates))
    assert "half-life" in format_windows(res.windows)


def test_walk_forward_refuses_windows_that_leave_no_test_day(panels) -> None:
    panel, _, _ = panels
    with pytest.raises(ConfigError, match="training window"):
        walk_forward(panel, _config(), WalkForwardConfig(train_days=500), START, END)
    with pytest.raises(ConfigError):
        WalkForwardConfig(objective="luck")
    with pytest.raises(ConfigError):
        WalkForwardConfig(vol_targets=())
