"""Performance and risk of a finished replay: return, volatility, Sharpe and Sortino (365-day year, zero
risk-free rate, annualised with the bar's own periods per year and the elapsed time), maximum drawdown with its dates, Calmar, turnover, cost drag, realised risk-contribution dispersion,
volatility-target tracking error (definitions in :func:`compute_metrics`), and the final portfolio's VaR/ES and
stress tests.
"""

from __future__ import annotations
import datetime as dt
import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Sequence
import numpy as np
import numpy.typing as npt
from keeper.deployment import BASE_DECIMALS
from keeper.errors import ConfigError, KeeperError
from keeper.returns import simple_returns
from keeper.risk_report import DEFAULT_CONFIDENCES, DEFAULT_HORIZONS_DAYS, RiskReport, risk_report
from keeper.risk_report import METHODS as RISK_METHODS
from keeper.stress import DEFAULT_WINDOWS, CloseHistory, StressReport, run_stress_tests
from keeper.units import BPS, DAYS_PER_YEAR, SECONDS_PER_DAY, SECONDS_PER_YEAR

__all__ = [
    "StrategyResult",
    "compute_metrics",
    "strategy_result",
    "final_portfolio_risk",
]

if TYPE_CHECKING:  # the engine imports this module; only its types are needed here
    from keeper.backtest import DecisionRecord, StrategyRun


FloatArray = npt.NDArray[np.float64]


# --------------------------------------------------------------------------- #
# Results and metrics
# --------------------------------------------------------------------------- #
@dataclass
class StrategyResult:
    """Daily series and decisions of one strategy, and its metrics."""

    name: str
    dates: list[dt.date]
    nav: FloatArray
    nav_vault: FloatArray
    weights: FloatArray  # (n_days, n_assets), NAV fractions
    rrc: FloatArray  # (n_days, n_assets), ex-ante relative risk contributions of the holdings
    ex_ante_vol: FloatArray
    decisions: list[DecisionRecord]
    metrics: dict[str, Any]
    #: Options mode: premiums paid and received, settlement payouts (USD), option legs bought and sold, and the
    #: daily mark of the option book (``options_value_usd``); None for a spot strategy.
    options: dict[str, Any] | None = None


def _max_drawdown(nav: FloatArray, dates: Sequence[dt.date]) -> dict[str, Any]:
    peaks = np.maximum.accumulate(nav)
    dd = 1.0 - nav / peaks
    trough = int(np.argmax(dd))
    peak = int(np.argmax(nav[: trough + 1]))
    recovered = np.flatnonzero(nav[trough:] >= nav[peak])
    recovery = dates[trough + int(recovered[0])] if recovered.size and dd[trough] > 0 else None
    return {"max_drawdown": float(dd[trough]), "max_drawdown_peak": dates[peak].isoformat(),
            "max_drawdown_trough": dates[trough].isoformat(),
            "max_drawdown_recovery": recovery.isoformat() if recovery else None}


def compute_metrics(
    nav: npt.ArrayLike,
    dates: Sequence[dt.date],
    *,
    turnover: npt.ArrayLike | None = None,
    costs: npt.ArrayLike | None = None,
    weights: npt.ArrayLike | None = None,
    asset_returns: npt.ArrayLike | None = None,
    vol_target: float | None = None,
    vol_window_days: int = 30,
    timestamps: Sequence[int] | None = None,
    periods_per_year: float = DAYS_PER_YEAR,
) -> dict[str, Any]:
    """Performance and risk metrics of a NAV path of regular bars (365-day year, zero risk-free rate).

    Parameters
    ----------
    nav : array_like, shape (n_bars,)
        NAV, any currency unit, > 0.
    dates : sequence of date or datetime, length n_bars
        The bars' labels (drawdown dates).
    timestamps : sequence of int, length n_bars, optional
        Unix seconds of each bar's close; the elapsed time is ``timestamps[-1] − timestamps[0]`` (default: whole
        days between ``dates[0]`` and ``dates[-1]``).
    periods_per_year : float, default 365
        Bars per 365-day year: 365 for daily bars, 8,760 for hourly (the √ of it annualises volatility).
    turnover, costs : array_like, shape (n_days,), optional
        Per day: Σ leg values / NAV, and fees + impact + gas / NAV (fractions).
    weights : array_like, shape (n_days, n_assets), optional
        NAV fractions held at each day's close.
    asset_returns : array_like, shape (n_days, n_assets), optional
        Each asset's simple return into day t (row 0 unused; NaN where unknown).
    vol_target : float, optional
        Annualised target of the strategy.

    Returns
    -------
    dict
        With P = ``periods_per_year`` and Y the elapsed years (seconds / (365 × 86,400)):
        ``annualised_return`` = (NAV_T/NAV_0)^(1/Y) − 1; ``annualised_volatility`` = std(r) √P;
        ``sharpe`` = mean(r)·P / vol; ``sortino`` = mean(r)·P / (√(mean(min(r,0)²)) √P);
        ``max_drawdown`` (fraction) with ``_peak``, ``_trough`` and ``_recovery`` dates; ``calmar`` =
        annualised return / max drawdown; ``turnover_per_year`` and ``cost_drag_bps_per_year`` (sums
        over the years of the window); ``realised_rrc`` per asset: the Euler decomposition of the
        realised variance, Cov(w_{t−1,i} r_{t,i}, r_p) / Var(r_p), summing to 1, and
        ``rrc_dispersion`` its standard deviation across the assets held at some point;
        ``vol_target_tracking_error``: RMS over bars of (realised ``vol_window_days``-day annualised
        volatility − target); ``realised_volatility_window`` the last such window's realised volatility.

    Raises
    ------
    ConfigError
        Fewer than 2 days, or a non-positive NAV.
    """
    v = np.asarray(nav, dtype=np.float64)
    if v.ndim != 1 or v.size < 2 or len(dates) != v.size:
        raise ConfigError(f"metrics need a NAV path of at least 2 days matching its dates, got {v.shape}")
    if not np.all(np.isfinite(v) & (v > 0)):
        raise ConfigError("NAV must be positive and finite on every day to compute returns")
    r = v[1:] / v[:-1] - 1.0
    if timestamps is None:
        elapsed = max((dates[-1] - dates[0]).days, 1) * SECONDS_PER_DAY
    else:
        elapsed = max(int(timestamps[-1]) - int(timestamps[0]), 1)
    years = elapsed / SECONDS_PER_YEAR  # exact integers: for daily bars the same number as days / 365
    periods = float(periods_per_year)
    ann_ret = float((v[-1] / v[0]) ** (1.0 / years) - 1.0)
    vol = float(np.std(r, ddof=1) * math.sqrt(periods)) if r.size > 1 else 0.0
    mean_ann = float(np.mean(r) * periods)
    downside = float(math.sqrt(np.mean(np.minimum(r, 0.0) ** 2)) * math.sqrt(periods))
    out: dict[str, Any] = {
        "start": dates[0].isoformat(), "end": dates[-1].isoformat(),
        # Daily bars: the days replayed; other bars: the elapsed days.
        "days": int(v.size) if periods == DAYS_PER_YEAR else elapsed / SECONDS_PER_DAY, "bars": int(v.size),
        "total_return": float(v[-1] / v[0] - 1.0),
        "annualised_return": ann_ret,
        "annualised_volatility": vol,
        "sharpe": mean_ann / vol if vol > 0 else None,
        "sortino": mean_ann / downside if downside > 0 else None,
    }
    out.update(_max_drawdown(v, dates))
    out["calmar"] = ann_ret / out["max_drawdown"] if out["max_drawdown"] > 0 else None
    if turnover is not None:
        out["turnover_per_year"] = float(np.sum(turnover) / years)
    if costs is not None:
        out["cost_drag_bps_per_year"] = float(np.sum(costs) / years * BPS)
    if weights is not None and asset_returns is not None:
        w = np.asarray(weights, dtype=np.float64)
        ra = np.nan_to_num(np.asarray(asset_returns, dtype=np.float64)[1:])
        contrib = w[:-1] * ra
        rp = contrib.sum(axis=1)
        var = float(np.var(rp))
        held = np.flatnonzero(np.any(w > 0, axis=0))
        if var > 0 and held.size:
            cov_with_p = ((contrib - contrib.mean(axis=0)) * (rp - rp.mean())[:, None]).mean(axis=0)
            rrc = cov_with_p / var
            out["realised_rrc"] = rrc
            out["rrc_dispersion"] = float(np.std(rrc[held]))
    window = max(2, round(vol_window_days * periods / DAYS_PER_YEAR))  # the window's days in bars
    if vol_target is not None and r.size >= window:
        windows = np.lib.stride_tricks.sliding_window_view(r, window)
        realised = windows.std(axis=1, ddof=1) * math.sqrt(periods)
        out["vol_target"] = vol_target
        out["vol_target_tracking_error"] = float(np.sqrt(np.mean((realised - vol_target) ** 2)))
    return out


def strategy_result(run: StrategyRun, returns: FloatArray, rows: slice) -> StrategyResult:
    """Metrics and series of a finished replay; ``returns[rows]`` are the assets' returns of its days."""
    nav = np.array(run.nav)
    turnover = np.array(run.turnover)
    costs = np.array(run.fees) + np.array(run.impacts) + np.array(run.gas)
    weights = np.vstack(run.weights)
    metrics = compute_metrics(nav, run.dates, turnover=turnover, costs=costs, weights=weights,
                              asset_returns=returns[rows], vol_target=getattr(run.strategy, "vol_target", None),
                              timestamps=run.timestamps, periods_per_year=run.config.periods_per_year)
    if "realised_rrc" in metrics:
        metrics["realised_rrc"] = {s: float(x) for s, x in zip(run.market.panel.symbols, metrics["realised_rrc"])
                                   if abs(x) > 0}
    taken = [d for d in run.decisions if d.status == "rebalanced"]
    blocked = _could_not_trade(run.decisions, weights)
    if blocked is not None:
        metrics["could_not_trade"] = blocked
    metrics.update(
        rebalances=len(taken),
        ticks=len(run.decisions),
        fees_usd=float(sum(d.cost.fee for d in taken) / 10**BASE_DECIMALS),
        impact_usd=float(sum(d.cost.impact for d in taken) / 10**BASE_DECIMALS),
        gas_usd=float(sum(d.cost.gas for d in taken) / 10**BASE_DECIMALS),
        skipped_by_cost_gate=sum(1 for d in run.decisions if d.status == "skipped" and "not worth" in d.reason),
        final_nav_usd=float(nav[-1]),
        gate_counts={a: int(run.gate_counts.get(a, 0)) for a in ("accept", "shrink", "inverse_volatility", "hold")},
        allocation_fallbacks=run.allocation_fallbacks,
        es_limit_binding=run.es_limit_binding,
        policy_holds=run.policy_holds,
    )
    risk, stress = final_portfolio_risk(run, rows.stop - 1)
    if risk is not None:
        metrics["final_risk"] = risk.to_dict()
        var99, es99 = _risk_summary(risk, 0.99, 1)
        metrics.update(final_var_99_1d=var99, final_es_99_1d=es99)
    if stress is not None:
        metrics["final_stress"] = stress.to_dict()
        worst = stress.worst() if stress.results else None
        metrics.update(worst_stress=worst.name if worst else None,
                       worst_stress_loss=float(worst.total_loss) if worst else None)
    option_summary = None
    if run.option_book is not None:
        book = run.option_book
        scale = 10**BASE_DECIMALS
        option_summary = {
            "premium_paid_usd": book.premium_paid / scale, "premium_received_usd": book.premium_received / scale,
            "payouts_usd": book.payouts / scale, "buys": book.buys, "rolls": book.sells,
            "settlements": len(book.settled), "options_value_usd": list(run.options_value),
            "net_premium_per_year_of_nav": ((book.premium_paid - book.premium_received - book.payouts) / scale
                                            / float(np.mean(nav)) * DAYS_PER_YEAR / max(len(nav), 1)),
        }
        metrics["options"] = {k: v for k, v in option_summary.items() if k != "options_value_usd"}
    return StrategyResult(run.strategy.name, list(run.dates), nav, np.array(run.nav_vault), weights,
                          np.vstack(run.rrc), np.array(run.ex_ante_vol), run.decisions, metrics, option_summary)


def _could_not_trade(decisions: Sequence[DecisionRecord], weights: FloatArray) -> str | None:
    """Why a strategy that wanted risk assets never held any (None when it held some or never wanted any): the
    most frequent reason among its skipped ticks toward a target with risk assets, with how many ticks it was."""
    if np.any(weights > 0):
        return None
    wanted = [d for d in decisions if d.status == "skipped" and d.policy is not None
              and d.policy.action == "target" and float(np.sum(d.policy.target_weights)) > 0]
    if not wanted:
        return None
    kinds: dict[str, list[str]] = {}
    for d in wanted:  # grouped by the reason's kind: the error's name, or its first words
        kinds.setdefault(d.reason.split(":")[0][:60], []).append(d.reason)
    kind, reasons = max(kinds.items(), key=lambda item: len(item[1]))
    return f"{len(reasons)} of {len(decisions)} ticks skipped: {reasons[-1]}"


def _risk_summary(report: RiskReport, confidence: float, horizon_days: int) -> tuple[float | None, float | None]:
    for m in report.measures:
        if m.method == "historical" and m.confidence == confidence and m.horizon_days == horizon_days:
            return float(m.var), float(m.es)
    return None, None


def final_portfolio_risk(run: StrategyRun, t: int) -> tuple[RiskReport | None, StressReport | None]:
    """VaR/ES and stress tests of a replay's holdings at the close of row ``t`` (its last day).

    The risky holdings (fractions of NAV) of the assets active on row ``t``, measured on that day's
    estimation window: :func:`keeper.risk_report.risk_report` (historical and Cornish-Fisher on the window's
    daily returns, Gaussian on the gate's covariance; 95/99 %, 1 and 10 days) and
    :func:`keeper.stress.run_stress_tests` (the historical windows the panel covers, replayed on its own
    closes, the price shocks, and the stressed covariances), both with the vault NAV in base units.

    Returns
    -------
    (RiskReport or None, StressReport or None)
        The report holds every combination the window supports (a 10-day 99 % historical ES needs
        at least 109 daily returns); None when no asset is active on row ``t`` or none can be measured.
    """
    market = run.market
    universe = market.universe(t)
    if not universe or not run.weights:
        return None, None
    panel = market.panel
    symbols = tuple(panel.symbols[i] for i in universe)
    weights = np.clip(np.asarray(run.weights[-1], dtype=np.float64)[list(universe)], 0.0, None)
    nav_units = int(round(run.nav_vault[-1] * 10**BASE_DECIMALS))
    gate = market.gate(t, universe, run.config)
    covariance = gate.estimate.covariance if gate.estimate is not None else None
    window = panel.prices[t - market.lookback_bars: t + 1][:, list(universe)]
    try:
        returns = simple_returns(window)
    except KeeperError:
        returns = None
    # One combination at a time: a short window cannot give a 10-day 99 % historical ES, but the rest stand.
    # Horizons are days; the measures count them in bars of the returns (24 a day for hourly bars).
    periods = run.config.periods_per_year
    measures = []
    for method in RISK_METHODS:
        for confidence in DEFAULT_CONFIDENCES:
            for horizon in DEFAULT_HORIZONS_DAYS:
                bars = panel.bars(horizon)
                try:
                    found = risk_report(weights, returns, covariance=covariance, symbols=symbols,
                                        nav_base_units=nav_units, methods=(method,), confidences=(confidence,),
                                        horizons_days=(bars,), periods_per_year=periods).measures
                except KeeperError:
                    continue
                measures += [m if bars == horizon else replace(m, horizon_days=horizon) for m in found]
    risk = RiskReport(symbols, weights, nav_units, tuple(measures),
                      "covariance" if covariance is not None else "returns") if measures else None
    history = _daily_closes(panel)
    # Only the historical windows the panel covers (a custom file may start later).
    windows = tuple(w for w in DEFAULT_WINDOWS if history.row(w.start) is not None and history.row(w.end) is not None)
    stress = run_stress_tests(weights, symbols, covariance, nav_base_units=nav_units, history=history,
                              windows=windows)
    return risk, stress


def _daily_closes(panel: Any) -> CloseHistory:
    """The panel's daily closes for the historical stress windows: the panel itself for daily bars, otherwise the
    close of each UTC day's last bar (the bar closing at midnight; a day without it has no row)."""
    if panel.daily:
        return CloseHistory(panel.dates, panel.symbols, panel.prices)
    closes = np.asarray([panel.close_timestamp(t) for t in range(len(panel.dates))], dtype=np.int64)
    rows = np.flatnonzero(closes % SECONDS_PER_DAY == 0)
    dates = tuple(panel.dates[int(t)] for t in rows)
    return CloseHistory(dates, panel.symbols, panel.prices[rows])
