"""Walk-forward evaluation: parameters chosen on one window, evaluated on the next, rolling.

For each test window ``[s, s + test_days)`` (rows of the price panel), every point of a grid of
(EWMA half-life, weight-drift band, volatility target) is backtested on the training window
``[s − train_days, s)`` from cash; the point with the best training score (Sharpe by default; ties go
to the first point of the grid) runs the test window. The test windows chain into one out-of-sample
path: holdings carry over from one window to the next, only the parameters change.

Every replay, training or test, decides through the live keeper's policy
(:func:`keeper.policy.decide_targets` via :class:`keeper.backtest.RiskParity`): the half-life sets the
policy's EWMA estimator, the vol target its allocator's target, and the base config's conditioning
gate, ES limit and triggers apply unchanged.

No look-ahead: a choice for the window starting at row ``s`` reads rows ``< s`` only, and the replay
of row ``t`` reads rows ``<= t`` only (see :class:`keeper.backtest.Market`). ``tests/test_walkforward.py``
proves it by perturbing every price after a date D and checking that every decision, weight and NAV
up to D is unchanged.
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
import time
from dataclasses import dataclass, replace
from typing import Any, Sequence

import numpy as np

from keeper.backtest import BacktestConfig, Market, StrategyRun, asset_returns, replay_window
from keeper.price_panel import PricePanel
from keeper.strategies import RiskParity
from keeper.backtest_metrics import StrategyResult, strategy_result, compute_metrics
from keeper.errors import ConfigError

__all__ = ["WalkForwardConfig", "WalkForwardWindow", "WalkForwardResult", "walk_forward", "format_windows"]

_OBJECTIVES = ("sharpe", "calmar", "annualised_return")


@dataclass(frozen=True)
class WalkForwardConfig:
    """Windows (rows of the panel, i.e. days) and the parameter grid.

    Attributes
    ----------
    train_days, test_days : int
        Lengths of the training and test windows.
    half_lives_days : tuple of float
        EWMA half-lives, days.
    drift_bands_bps : tuple of float
        Weight-drift bands of the trigger policy, bps of NAV.
    vol_targets : tuple of float or None
        Annualised volatility targets (``None``: no target, plain ERC).
    objective : str
        Training score to maximise: ``"sharpe"``, ``"calmar"`` or ``"annualised_return"``.
    cash_buffer_bps : float
        The strategy's cash buffer.
    """

    train_days: int = 365
    test_days: int = 180
    half_lives_days: tuple[float, ...] = (15.0, 45.0)
    drift_bands_bps: tuple[float, ...] = (200.0, 500.0)
    vol_targets: tuple[float | None, ...] = (0.4, None)
    objective: str = "sharpe"
    cash_buffer_bps: float = 500.0

    def __post_init__(self) -> None:
        if self.train_days < 2 or self.test_days < 1:
            raise ConfigError(f"train_days must be >= 2 and test_days >= 1, got {self.train_days}, {self.test_days}")
        if not (self.half_lives_days and self.drift_bands_bps and self.vol_targets):
            raise ConfigError("every grid axis needs at least one value")
        if self.objective not in _OBJECTIVES:
            raise ConfigError(f"objective must be one of {_OBJECTIVES}, got {self.objective!r}")

    def grid(self) -> list[tuple[float, float, float | None]]:
        return list(itertools.product(self.half_lives_days, self.drift_bands_bps, self.vol_targets))


@dataclass(frozen=True)
class WalkForwardWindow:
    """One step: the training window, the parameters chosen on it and the test window they ran."""

    train_start: dt.date
    train_end: dt.date
    test_start: dt.date
    test_end: dt.date
    half_life_days: float
    drift_band_bps: float
    vol_target: float | None
    train_score: float | None
    scores: tuple[float | None, ...]

    def as_dict(self) -> dict[str, Any]:
        return {k: (v.isoformat() if isinstance(v, dt.date) else v) for k, v in self.__dict__.items()}


@dataclass
class WalkForwardResult:
    """The out-of-sample path (:class:`~keeper.backtest.StrategyResult`) and the windows."""

    result: StrategyResult
    windows: list[WalkForwardWindow]
    seconds: float


def _params(base: BacktestConfig, wf: WalkForwardConfig, half_life: float, band: float,
            vol_target: float | None) -> tuple[BacktestConfig, RiskParity]:
    config = replace(base, half_life_days=half_life, policy=replace(base.policy, weight_drift_bps=band))
    name = "ERC walk-forward"
    return config, RiskParity(name, wf.cash_buffer_bps, vol_target=vol_target)


def _score(run: StrategyRun, objective: str) -> float | None:
    nav = np.array(run.nav)
    if nav.size < 2 or not np.all(nav > 0):
        return None
    value = compute_metrics(nav, run.dates, timestamps=run.timestamps,
                            periods_per_year=run.config.periods_per_year).get(objective)
    return float(value) if value is not None and math.isfinite(value) else None


def walk_forward(
    panel: PricePanel,
    config: BacktestConfig | None = None,
    wf: WalkForwardConfig | None = None,
    start: dt.date | None = None,
    end: dt.date | None = None,
    market: Market | None = None,
) -> WalkForwardResult:
    """Rolls train/test windows over ``panel`` from ``start`` (the first test day is ``train_days``
    rows later) to ``end``.

    Returns
    -------
    WalkForwardResult
        The chained out-of-sample path with its metrics, and each window's choice and scores.

    Raises
    ------
    ConfigError
        A window that leaves no test day, or a bad grid.
    """
    config = (config or BacktestConfig()).for_panel(panel)
    wf = wf or WalkForwardConfig()
    market = market or Market(panel, config.lookback_days)
    first, last = replay_window(panel, start, end, config.lookback_days)
    train, test = panel.bars(wf.train_days), panel.bars(wf.test_days)  # days of the panel's bars
    test_start = first + train
    if test_start > last:
        raise ConfigError(
            f"{last - first + 1} days from {panel.dates[first]} leave no test day after a {wf.train_days}-day "
            "training window: start earlier or shorten train_days"
        )
    grid = wf.grid()
    t0 = time.perf_counter()
    runner: StrategyRun | None = None
    windows: list[WalkForwardWindow] = []
    s = test_start
    while s <= last:
        e = min(s + test, last + 1)
        scores: list[float | None] = []
        for point in grid:
            cfg, strategy = _params(config, wf, *point)
            trial = StrategyRun(market, strategy, cfg)
            for t in range(s - train, s):
                trial.step(t)
            scores.append(_score(trial, wf.objective))
        ranked = [k for k in range(len(grid)) if scores[k] is not None]
        best = max(ranked, key=lambda k: (scores[k], -k)) if ranked else 0
        cfg, strategy = _params(config, wf, *grid[best])
        if runner is None:
            runner = StrategyRun(market, strategy, cfg)
        else:
            runner.config, runner.strategy = cfg, strategy
        for t in range(s, e):
            runner.step(t)
        windows.append(WalkForwardWindow(
            panel.labels[s - train], panel.labels[s - 1], panel.labels[s], panel.labels[e - 1],
            *grid[best], scores[best], tuple(scores),
        ))
        s = e
    if runner is None:  # unreachable: test_start <= last, so the loop ran
        raise ConfigError("walk-forward produced no test window")
    result = strategy_result(runner, asset_returns(panel.prices), slice(test_start, last + 1))
    result.metrics["windows"] = len(windows)
    targets = {w.vol_target for w in windows}
    if len(targets) > 1 or None in targets:  # tracking error is defined against one target only
        result.metrics.pop("vol_target", None)
        result.metrics.pop("vol_target_tracking_error", None)
    return WalkForwardResult(result, windows, time.perf_counter() - t0)


def format_windows(windows: Sequence[WalkForwardWindow]) -> str:
    """One line per window: dates, chosen parameters, training score."""
    lines = [f"{'test window':<25}{'half-life':>10}{'band bps':>10}{'vol target':>11}{'train score':>12}"]
    for w in windows:
        vt = f"{w.vol_target:.0%}" if w.vol_target is not None else "none"
        sc = f"{w.train_score:.2f}" if w.train_score is not None else "n/a"
        lines.append(f"{w.test_start} .. {w.test_end}{w.half_life_days:>10g}{w.drift_band_bps:>10g}{vt:>11}{sc:>12}")
    return "\n".join(lines)
