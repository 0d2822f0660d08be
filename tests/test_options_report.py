"""The overlay comparison (keeper.options_report): window metrics by definition, the same-net-delta control, and a
short replay of the three runs on the shipped data. Chain-free."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pytest

from keeper.data import load_prices
from keeper.demo import DemoOptions
from keeper.errors import ConfigError
from keeper.implied_vol import load_dvol, realised_vol_proxy
from keeper.options_report import (OverlayReportConfig, RunSeries, _default_candidates, _net_premium_per_year,
                                   format_report, run_overlay_report, window_metrics, write_report)
from keeper.price_panel import DEFAULT_BACKTEST_CSV, load_price_panel
from keeper.stress import DEFAULT_WINDOWS
from keeper.strategies import DecisionContext, NetDeltaControl

D0 = dt.date(2022, 1, 1)


def _series(nav, paid=None, received=None, turnover=None) -> RunSeries:
    n = len(nav)
    dates = [D0 + dt.timedelta(days=i) for i in range(n)]
    return RunSeries("x", dates, np.asarray(nav, dtype=float), np.asarray(turnover or [0.0] * n, dtype=float),
                     np.asarray(paid or [0.0] * n, dtype=float), np.asarray(received or [0.0] * n, dtype=float), {})


def test_window_metrics_by_definition() -> None:
    nav = [100.0, 110.0, 88.0, 99.0, 121.0, 96.8]
    s = _series(nav, paid=[0, 1, 1, 3, 3, 3], received=[0, 0, 0, 0, 2, 2], turnover=[0, 0.1, 0.2, 0.3, 0.4, 0.5])
    m = window_metrics(s, D0 + dt.timedelta(days=2), D0 + dt.timedelta(days=4))
    # From the close before the window (110) to its last day (121): peak 110, trough 88, then 121.
    assert m["return"] == pytest.approx(121 / 110 - 1, rel=1e-15)
    assert m["max_drawdown"] == pytest.approx(1 - 88 / 110, rel=1e-15)
    daily = np.array([88 / 110, 99 / 88, 121 / 99]) - 1
    assert m["realised_vol"] == pytest.approx(np.std(daily, ddof=1) * math.sqrt(365), rel=1e-14)
    assert m["premium_paid"] == pytest.approx(2 / 110) and m["premium_received"] == pytest.approx(2 / 110)
    assert m["turnover"] == pytest.approx(0.2 + 0.3 + 0.4) and m["days"] == 3
    with pytest.raises(ConfigError, match="holds 1 replayed days"):
        window_metrics(s, D0, D0)
    # 3 paid less 2 received over 5 days on a mean NAV, per 365 days.
    assert _net_premium_per_year(s, D0, D0 + dt.timedelta(days=5)) == pytest.approx(1 / np.mean(nav) * 365 / 5)


def test_net_delta_control_holds_the_recorded_net_delta_long_only() -> None:
    control = NetDeltaControl("control", {D0: {"BTC": 0.5, "ETH": -0.1, "SOL": 0.2}})
    ctx = DecisionContext(D0, ("BTC", "ETH", "SOL"), np.ones(3), np.ones((3, 3)), estimate=None)  # type: ignore[arg-type]
    np.testing.assert_allclose(control(ctx).nav_fractions, [0.5, 0.0, 0.2], rtol=1e-15)
    over = NetDeltaControl("control", {D0: {"BTC": 0.9, "ETH": 0.6, "SOL": 0.0}})
    assert over(ctx).nav_fractions.sum() == pytest.approx(1.0)  # no leverage
    with pytest.raises(ConfigError, match="no net delta recorded"):
        control(DecisionContext(D0 + dt.timedelta(days=1), ("BTC",), np.ones(1), np.ones((3, 1)), estimate=None))  # type: ignore[arg-type]


def test_a_short_comparison_runs_the_three_replays_and_the_control_tracks_the_net_delta(tmp_path) -> None:
    cfg = OverlayReportConfig(start=dt.date(2022, 4, 20), end=dt.date(2022, 5, 31), train_start=dt.date(2021, 12, 1),
                              train_end=dt.date(2021, 12, 20), candidates=_default_candidates()[:2],
                              windows=(DEFAULT_WINDOWS[2],), out_of_sample=(dt.date(2022, 4, 20), dt.date(2022, 5, 31)))
    panel = load_price_panel(DEFAULT_BACKTEST_CSV, list(cfg.assets), cfg.end)
    table = load_prices(DEFAULT_BACKTEST_CSV, list(panel.symbols))
    vols = {s: realised_vol_proxy(table, s) for s in panel.symbols}
    vols["BTC"] = load_dvol(DemoOptions().dvol)
    rep = run_overlay_report(panel, vols, cfg, say=lambda _: None)
    assert set(rep["metrics"]["luna_may_2022"]) == {"policy", "overlay", "control"}
    assert len(rep["training"]) == 2 and rep["chosen_candidate"] in (0, 1)
    o = rep["metrics"]["whole period"]["overlay"]
    assert o["premium_paid"] > 0.0  # the overlay bought puts
    assert rep["metrics"]["whole period"]["policy"]["premium_paid"] == 0.0
    # The control held the overlay's net delta to within the hedge's drift band plus the cost gate's slack.
    assert rep["net_delta_tracking"]["mean_abs_gap"] < 0.05
    files = write_report(rep, tmp_path)
    assert all((tmp_path / f).exists() for f in ("overlay_report.txt", "overlay_report.json", "overlay_report.png"))
    assert "overlay beats the control" in format_report(rep)
