r"""Does the put overlay protect? The policy without options, with the overlay, and a same-net-delta control, side
by side over the shipped daily closes and the stress windows (``keeper backtest --overlay-report``).

Three replays through the one decision (:func:`keeper.decision.decide_rebalance`) on the same days:

* **policy**: the risk-budgeting policy (ERC, volatility target, cash buffer) in spot only;
* **overlay**: the same policy in options mode with the insurance overlay (:mod:`keeper.overlay`: puts on the
  assets driving the whole book's ES, strike and tenor chosen by cost per unit of ES removed, premium paced in bps
  of NAV a year, deep in-the-money puts monetised), hedged in the ``"budget"`` mode (:mod:`keeper.hedging`: the
  puts' delta is held, never bought back);
* **control**: spot and cash only, holding each day the overlay run's net delta per asset
  (:class:`keeper.strategies.NetDeltaControl`), so that the overlay is judged on its convexity, not on holding
  less exposure.

Walk-forward: the overlay's free parameters (premium pace a year, monetisation threshold) are chosen among
``candidates`` on the training period only (``train_start`` .. ``train_end``, before 2022), by the overlay run's
Calmar ratio (annualised return / max drawdown) there; the chosen overlay is then replayed over the whole period,
and 2022 is out of sample. The May 2021 window lies inside the training period (in sample); LUNA (May 2022) and FTX
(November 2022) do not. The windows are :data:`keeper.stress.DEFAULT_WINDOWS` (BTC's peak-to-trough of each crash
month), not chosen here.

Per window and run: max drawdown and return inside the window (from the close before its first day), realised
volatility (daily NAV returns x sqrt(365)), premium paid and received (sales and settlement payouts), fractions of
the NAV at the window's start, spot turnover (sum of traded value / NAV), and the net premium per point of
drawdown saved against the policy and against the control (``n/a`` where no drawdown is saved).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from keeper import options as bs
from keeper.backtest import BacktestConfig, BacktestOptions, Market, StrategyRun, replay_window
from keeper.deployment import BASE_DECIMALS, RISK_DECIMALS
from keeper.errors import ConfigError
from keeper.hedging import HedgeTriggerConfig
from keeper.option_orders import HeldSeries
from keeper.overlay import OverlayConfig
from keeper.price_panel import PricePanel
from keeper.stress import DEFAULT_WINDOWS, StressWindow
from keeper.strategies import NetDeltaControl, RiskParity, Strategy
from keeper.units import WAD

__all__ = ["OverlayReportConfig", "RunSeries", "run_overlay_report", "window_metrics", "format_report",
           "net_delta_fractions", "replay_series", "replay_runs", "compare_runs", "format_periods"]


def _default_candidates() -> tuple[OverlayConfig, ...]:
    base = OverlayConfig(put_delta=-0.2, tenor_days=60.0, roll_before_days=7.0, premium_budget_bps=10_000.0,
                         max_put_assets=2, hedge_ratio=1.0, max_open_series=6,
                         put_deltas=(-0.10, -0.15, -0.20, -0.25), tenors_days=(30.0, 60.0, 90.0))
    return tuple(dataclasses.replace(base, premium_budget_bps_per_year=pace, monetise_delta=monetise)
                 for pace in (300.0, 800.0) for monetise in (0.7, None))


@dataclass(frozen=True)
class OverlayReportConfig:
    """The comparison's setting (defaults: the shipped data from the first DVOL day).

    Attributes
    ----------
    assets : tuple of str
    start, end : date
        Replayed period (``end`` None: the data's last day). DVOL starts 2021-03-24.
    train_start, train_end : date
        Walk-forward training period for the overlay's parameters.
    out_of_sample : tuple of date
        The period reported out of sample.
    lookback_days : int
    cash_buffer_bps, vol_target : float
        The policy's cash buffer and volatility target (the same in the three runs).
    candidates : tuple of OverlayConfig
    windows : tuple of StressWindow
    hedge_trigger : HedgeTriggerConfig
    """

    assets: tuple[str, ...] = ("BTC", "ETH", "SOL")
    start: dt.date = dt.date(2021, 3, 24)
    end: dt.date | None = None
    train_start: dt.date = dt.date(2021, 3, 24)
    train_end: dt.date = dt.date(2021, 12, 31)
    out_of_sample: tuple[dt.date, dt.date] = (dt.date(2022, 1, 1), dt.date(2022, 12, 31))
    lookback_days: int = 90
    cash_buffer_bps: float = 1500.0
    vol_target: float | None = 0.5
    candidates: tuple[OverlayConfig, ...] = field(default_factory=_default_candidates)
    windows: tuple[StressWindow, ...] = tuple(w for w in DEFAULT_WINDOWS if w.start.year >= 2021)
    hedge_trigger: HedgeTriggerConfig = field(default_factory=HedgeTriggerConfig)

    def __post_init__(self) -> None:
        if not self.candidates:
            raise ConfigError("OverlayReportConfig.candidates is empty; give at least one OverlayConfig")
        if not self.train_start < self.train_end:
            raise ConfigError(f"train_start {self.train_start} must precede train_end {self.train_end}")


@dataclass
class RunSeries:
    """One replay's daily series (aligned with ``dates``): NAV (USD), spot turnover (fraction of NAV), cumulative
    premium paid and received (USD; received = sales + settlement payouts), and net delta per asset (fraction of
    NAV, options included)."""

    name: str
    dates: list[dt.date]
    nav: np.ndarray
    turnover: np.ndarray
    premium_paid: np.ndarray
    premium_received: np.ndarray
    net_delta: dict[dt.date, dict[str, float]]


def net_delta_fractions(symbols: tuple[str, ...] | list[str], units: np.ndarray, spots_usd: np.ndarray,
                        book: Sequence[HeldSeries], now: int, vols: Mapping[str, float],
                        nav_usd: float) -> dict[str, float]:
    """Net delta per asset, fraction of NAV: ``(units_i + Σ amount·Δ) · S_i / NAV`` (options included).

    Parameters
    ----------
    symbols : sequence of str, shape (n,)
    units : ndarray (n,)
        Spot holdings, whole tokens.
    spots_usd : ndarray (n,)
        The day's closes, USD per token (a non-finite close gives 0 for that asset).
    book : sequence of HeldSeries
        The option positions (``strike`` 1e18 USD, ``amount`` 1e18 units, ``expiry`` Unix seconds).
    now : int
        Unix seconds at which the deltas are taken (the keeper's decision time).
    vols : mapping of symbol to float
        The day's implied vols as the vol feeds answer them (fraction a year).
    nav_usd : float
        The vault's NAV (options marked), USD.

    Deltas are Black-Scholes (:func:`keeper.options.delta`); a series past expiry awaiting settlement counts
    with its payoff's step delta. The backtest's replay and the on-chain demo both record the overlay's net delta
    with this function, which the same-net-delta control then targets.
    """
    option_delta = np.zeros(len(symbols))
    for held in book:
        i = list(symbols).index(held.symbol)
        strike = held.strike / WAD
        tau = bs.year_fraction(max(held.expiry - now, 0))
        if tau > 0:
            d = float(bs.delta(spots_usd[i], strike, tau, vols[held.symbol], is_call=held.is_call))
        else:  # expired, awaiting settlement: the payoff's step delta
            d = float(spots_usd[i] > strike) if held.is_call else -float(strike > spots_usd[i])
        option_delta[i] += held.amount / WAD * d
    return {s: float((units[i] + option_delta[i]) * spots_usd[i] / nav_usd) if math.isfinite(spots_usd[i]) else 0.0
            for i, s in enumerate(symbols)}


def replay_series(market: Market, strategy: Strategy, config: BacktestConfig, first: int, last: int,
                  say: Callable[[str], None]) -> RunSeries:
    """Replays rows ``first..last`` and records the series (net delta by :func:`net_delta_fractions` from the
    option book at the decision time and the day's implied vols, as the keeper sees them)."""
    run = StrategyRun(market, strategy, config)
    symbols = market.panel.symbols
    paid, received, net = [], [], {}
    t0 = time.perf_counter()
    for t in range(first, last + 1):
        run.step(t)
        units = np.array([b / 10**RISK_DECIMALS for b in run.balances])
        book = run.option_book
        vol: dict[str, float] = {}
        if book is not None and book.positions:
            _, _, vol = run._spot_and_vol(t)
        net[market.panel.dates[t]] = net_delta_fractions(
            symbols, units, market.panel.prices[t], book.book() if book is not None else (), run._now(t), vol,
            run.nav_vault[-1])
        paid.append(book.premium_paid / 10**BASE_DECIMALS if book else 0.0)
        received.append((book.premium_received + book.payouts) / 10**BASE_DECIMALS if book else 0.0)
    say(f"  {strategy.name}: {last - first + 1} days in {time.perf_counter() - t0:.0f} s")
    return RunSeries(strategy.name, list(run.dates), np.array(run.nav), np.array(run.turnover), np.array(paid),
                     np.array(received), net)


def replay_runs(market: Market, config: BacktestConfig, policy: Strategy, overlay: Strategy, first: int, last: int,
                say: Callable[[str], None] = print) -> dict[str, RunSeries]:
    """The three runs over rows ``first..last``: ``policy``, ``overlay``, then the same-net-delta ``control``
    (:class:`keeper.strategies.NetDeltaControl` on the overlay run's net delta). Keys ``"policy"``, ``"overlay"``,
    ``"control"``."""
    runs = {"policy": replay_series(market, policy, config, first, last, say)}
    runs["overlay"] = replay_series(market, overlay, config, first, last, say)
    runs["control"] = replay_series(market, NetDeltaControl("control", runs["overlay"].net_delta), config, first,
                                    last, say)
    return runs


def window_metrics(series: RunSeries, start: dt.date, end: dt.date) -> dict[str, float]:
    """Metrics of ``series`` over ``start..end`` (from the close before ``start`` when replayed).

    Returns
    -------
    dict
        ``max_drawdown``, ``return``, ``realised_vol`` (annualised), ``premium_paid``, ``premium_received``,
        ``turnover`` (fractions of the NAV at the window's start), ``days``.

    Raises
    ------
    ConfigError
        The window holds fewer than two replayed days.
    """
    rows = [i for i, d in enumerate(series.dates) if start <= d <= end]
    if len(rows) < 2:
        raise ConfigError(f"{series.name}: window {start}..{end} holds {len(rows)} replayed days; need >= 2")
    i0, i1 = max(rows[0] - 1, 0), rows[-1]
    nav = series.nav[i0: i1 + 1]
    daily = nav[1:] / nav[:-1] - 1.0
    return {
        "max_drawdown": float(np.max(1.0 - nav / np.maximum.accumulate(nav))),
        "return": float(nav[-1] / nav[0] - 1.0),
        "realised_vol": float(np.std(daily, ddof=1) * math.sqrt(365)) if daily.size > 1 else 0.0,
        "premium_paid": float((series.premium_paid[i1] - series.premium_paid[i0]) / nav[0]),
        "premium_received": float((series.premium_received[i1] - series.premium_received[i0]) / nav[0]),
        "turnover": float(np.sum(series.turnover[i0 + 1: i1 + 1])),
        "days": int(i1 - i0),
    }


def compare_runs(runs: Mapping[str, RunSeries], periods: Mapping[str, Mapping[str, Any]],
                 whole_period: str | None = None
                 ) -> tuple[dict[str, dict[str, dict[str, float]]], dict[str, dict[str, Any]]]:
    """Metrics per period and run (:func:`window_metrics`) and what the overlay saved per period.

    Parameters
    ----------
    runs : mapping with keys ``"policy"``, ``"overlay"``, ``"control"`` of RunSeries
    periods : mapping of name to {"start": date, "end": date, ...}
    whole_period : str, optional
        The period that is the whole replay: its net premium a year is the mean over the replay; any other
        period's is over the 365 days to its end (within the replay).

    Returns
    -------
    (metrics, saved)
        ``metrics[period][run]``; ``saved[period]``: net premium in the window and a year (fractions of NAV),
        drawdown saved against the policy and the control (points) and premium per point (bps of NAV a year;
        None where no drawdown is saved), ``beats_control``.

    Raises
    ------
    ConfigError
        A period holding fewer than two replayed days.
    """
    metrics: dict[str, dict[str, dict[str, float]]] = {}
    saved: dict[str, dict[str, Any]] = {}
    overlay_run = runs["overlay"]
    for name, p in periods.items():
        metrics[name] = {run: window_metrics(s, p["start"], p["end"]) for run, s in runs.items()}
        m = metrics[name]
        cost = (_net_premium_per_year(overlay_run, overlay_run.dates[0], overlay_run.dates[-1]) if name ==
                whole_period else _net_premium_per_year(overlay_run, p["end"] - dt.timedelta(days=364), p["end"]))
        out: dict[str, Any] = {"net_premium_in_window": m["overlay"]["premium_paid"] - m["overlay"]["premium_received"],
                               "net_premium_year": cost}
        for ref in ("policy", "control"):
            points = (m[ref]["max_drawdown"] - m["overlay"]["max_drawdown"]) * 100.0
            out[f"dd_saved_vs_{ref}_points"] = points
            out[f"premium_bps_per_point_vs_{ref}"] = cost * 1e4 / points if points > 0 else None
        out["beats_control"] = m["overlay"]["max_drawdown"] < m["control"]["max_drawdown"]
        saved[name] = out
    return metrics, saved


def _net_premium_per_year(series: RunSeries, start: dt.date, end: dt.date) -> float:
    """Net premium (paid less received) over ``start..end`` per 365 days, fraction of the mean NAV over it."""
    rows = [i for i, d in enumerate(series.dates) if start <= d <= end]
    i0, i1 = max(rows[0] - 1, 0), rows[-1]
    net = (series.premium_paid[i1] - series.premium_paid[i0]) - (series.premium_received[i1] - series.premium_received[i0])
    days = max((series.dates[i1] - series.dates[i0]).days, 1)
    return float(net / np.mean(series.nav[i0: i1 + 1]) * 365.0 / days)


def _calmar(series: RunSeries) -> float:
    nav = series.nav
    years = (len(nav) - 1) / 365.0
    ann = (nav[-1] / nav[0]) ** (1.0 / years) - 1.0 if years > 0 else 0.0
    dd = float(np.max(1.0 - nav / np.maximum.accumulate(nav)))
    return ann / dd if dd > 0 else math.inf


def run_overlay_report(panel: PricePanel, implied_vols: dict, config: OverlayReportConfig | None = None,
                       say: Callable[[str], None] = print) -> dict[str, Any]:
    """The walk-forward choice, the three replays and their metrics per period (module doc).

    Parameters
    ----------
    panel : PricePanel
        Daily closes of ``config.assets``.
    implied_vols : mapping of symbol to ImpliedVolSeries
        As :class:`keeper.backtest.BacktestOptions`.

    Returns
    -------
    dict
        ``periods`` (name -> start, end, in/out of sample), ``metrics`` (period -> run -> metrics),
        ``saved`` (period -> drawdown saved and premium per point), ``training`` (candidate scores), ``chosen``
        (the overlay's parameters), ``series`` (RunSeries per run).

    Raises
    ------
    ConfigError
        Windows outside the data, empty candidates.
    """
    cfg = config or OverlayReportConfig()
    bt = BacktestConfig(lookback_days=cfg.lookback_days, min_observations=min(30, cfg.lookback_days),
                        options=BacktestOptions(implied_vols=implied_vols, hedge_trigger=cfg.hedge_trigger))
    market = Market(panel, cfg.lookback_days)
    policy = RiskParity("policy", cfg.cash_buffer_bps, vol_target=cfg.vol_target)

    def overlay_strategy(overlay: OverlayConfig, name: str = "overlay") -> RiskParity:
        return RiskParity(name, cfg.cash_buffer_bps, vol_target=cfg.vol_target, with_options=True, overlay=overlay)

    # 1. Walk-forward: the overlay's parameters from the training period alone.
    first, last = replay_window(panel, cfg.train_start, cfg.train_end, cfg.lookback_days)
    say(f"training {panel.dates[first]}..{panel.dates[last]}: {len(cfg.candidates)} overlay candidates")
    training = []
    for k, candidate in enumerate(cfg.candidates):
        s = replay_series(market, overlay_strategy(candidate, f"candidate {k}"), bt, first, last, say)
        training.append({"candidate": k, "premium_budget_bps_per_year": candidate.premium_budget_bps_per_year,
                         "monetise_delta": candidate.monetise_delta, "calmar": _calmar(s),
                         **window_metrics(s, panel.dates[first], panel.dates[last])})
    best = max(range(len(training)), key=lambda k: training[k]["calmar"])
    chosen = cfg.candidates[best]

    # 2. The whole period: policy, overlay, then the control on the overlay's net delta.
    first, last = replay_window(panel, cfg.start, cfg.end, cfg.lookback_days)
    say(f"replaying {panel.dates[first]}..{panel.dates[last]}: policy, overlay (candidate {best}), control")
    runs = replay_runs(market, bt, policy, overlay_strategy(chosen), first, last, say)

    periods: dict[str, dict[str, Any]] = {
        "whole period": {"start": panel.dates[first], "end": panel.dates[last], "sample": "in and out of"},
        "2022 (out of sample)": {"start": cfg.out_of_sample[0], "end": cfg.out_of_sample[1], "sample": "out of"},
    }
    for w in cfg.windows:
        periods[w.name] = {"start": w.start, "end": w.end,
                           "sample": "in" if w.end <= cfg.train_end else "out of"}
    metrics, saved = compare_runs(runs, periods, whole_period="whole period")
    years = (len(runs["overlay"].nav) - 1) / 365.0
    cost_per_year = {
        "premium_paid_per_year": float(runs["overlay"].premium_paid[-1] / np.mean(runs["overlay"].nav) / years),
        "premium_received_per_year": float(runs["overlay"].premium_received[-1] / np.mean(runs["overlay"].nav) / years),
    }
    tracking = np.array([[runs["overlay"].net_delta[d][s] for s in panel.symbols] for d in runs["overlay"].dates])
    held = _held_fractions(runs["control"])
    return {"periods": periods, "metrics": metrics, "saved": saved, "training": training, "chosen_candidate": best,
            "chosen": dataclasses.asdict(chosen), "series": runs, "cost_per_year": cost_per_year,
            "net_delta_tracking": {"mean_abs_gap": float(np.mean(np.abs(tracking.sum(axis=1) - held))),
                                   "overlay_mean_net_delta": float(np.mean(tracking.sum(axis=1))),
                                   "control_mean_net_delta": float(np.mean(held))}}


def _held_fractions(series: RunSeries) -> np.ndarray:
    """Total net delta (fraction of NAV) the control held each day."""
    return np.array([sum(series.net_delta[d].values()) for d in series.dates])


def _pct(x: float | None, digits: int = 1) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{100 * x:.{digits}f}%"


def format_periods(periods: Mapping[str, Mapping[str, Any]], metrics: Mapping[str, Any],
                   saved: Mapping[str, Any]) -> list[str]:
    """Text lines of :func:`compare_runs`'s result: one table per period (runs by rows) and what was saved."""
    lines: list[str] = []
    head = f"{'run':<9}{'maxDD':>8}{'return':>9}{'vol':>8}{'prem paid':>11}{'prem recv':>11}{'turnover':>10}"
    for name, p in periods.items():
        s = saved[name]
        sample = f" ({p['sample']} sample)" if p.get("sample") else ""
        lines.append(f"{name}: {p['start']}..{p['end']}{sample}")
        lines.append(head)
        for run, m in metrics[name].items():
            lines.append(f"{run:<9}{_pct(m['max_drawdown']):>8}{_pct(m['return']):>9}{_pct(m['realised_vol']):>8}"
                         f"{_pct(m['premium_paid'], 2):>11}{_pct(m['premium_received'], 2):>11}"
                         f"{_pct(m['turnover'], 0):>10}")

        def per_point(x: float | None) -> str:
            return "n/a (no drawdown saved)" if x is None else f"{x:.0f} bps of NAV a year per point"

        lines.append(f"  net premium a year (the 365 days to the window's end within the replay; whole period: its "
                     f"mean): {_pct(s['net_premium_year'], 2)} of NAV")
        lines.append(f"  drawdown saved: {s['dd_saved_vs_policy_points']:+.2f} points vs policy "
                     f"({per_point(s['premium_bps_per_point_vs_policy'])}), {s['dd_saved_vs_control_points']:+.2f} "
                     f"points vs control ({per_point(s['premium_bps_per_point_vs_control'])}); overlay beats the "
                     f"control: {'yes' if s['beats_control'] else 'no'}")
        lines.append("")
    return lines


def format_report(rep: dict[str, Any]) -> str:
    """The comparison as a text table (one block per period)."""
    lines = format_periods(rep["periods"], rep["metrics"], rep["saved"])
    c = rep["cost_per_year"]
    lines.append(f"overlay premium a year: paid {_pct(c['premium_paid_per_year'], 2)} of mean NAV, received "
                 f"{_pct(c['premium_received_per_year'], 2)} (sales and payouts)")
    t = rep["net_delta_tracking"]
    lines.append(f"net delta: overlay mean {_pct(t['overlay_mean_net_delta'])}, control mean "
                 f"{_pct(t['control_mean_net_delta'])}, mean |gap| {_pct(t['mean_abs_gap'], 2)} of NAV")
    lines.append(f"walk-forward choice (training {len(rep['training'])} candidates, by Calmar): candidate "
                 f"{rep['chosen_candidate']}: pace {rep['chosen']['premium_budget_bps_per_year']} bps/yr, monetise "
                 f"at |delta| > {rep['chosen']['monetise_delta']}")
    for row in rep["training"]:
        lines.append(f"  candidate {row['candidate']}: pace {row['premium_budget_bps_per_year']} bps/yr, monetise "
                     f"{row['monetise_delta']}: Calmar {row['calmar']:.2f}, maxDD {_pct(row['max_drawdown'])}, "
                     f"return {_pct(row['return'])}, premium {_pct(row['premium_paid'], 2)}")
    return "\n".join(lines)


def write_report(rep: dict[str, Any], out_dir: Path) -> list[str]:
    """Writes ``overlay_report.txt``, ``overlay_report.json`` and ``overlay_report.png`` (drawdown of the three
    runs, cumulative premium paid and received); returns the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    text = format_report(rep)
    (out_dir / "overlay_report.txt").write_text(text + "\n")
    doc = {k: v for k, v in rep.items() if k != "series"}
    (out_dir / "overlay_report.json").write_text(json.dumps(doc, indent=1, default=str))
    _chart(rep, out_dir / "overlay_report.png")
    return [str(out_dir / f"overlay_report.{ext}") for ext in ("txt", "json", "png")]


def _chart(rep: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs: dict[str, RunSeries] = rep["series"]
    fig, axes = plt.subplots(2, 1, figsize=(13, 8), sharex=True)
    for name, s in runs.items():
        dd = 1.0 - s.nav / np.maximum.accumulate(s.nav)
        axes[0].plot(s.dates, -100 * dd, label=name, lw=1.1)
    for p in rep["periods"].values():
        if (p["end"] - p["start"]).days < 60:
            axes[0].axvspan(p["start"], p["end"], color="grey", alpha=0.15)
    axes[0].set_ylabel("drawdown, % of peak NAV")
    axes[0].set_title("Drawdown: policy, policy + put overlay, same-net-delta control (shaded: stress windows)")
    axes[0].legend(loc="lower left")
    o = runs["overlay"]
    axes[1].plot(o.dates, o.premium_paid / 1e3, label="premium paid, cumulative (k USD)")
    axes[1].plot(o.dates, o.premium_received / 1e3, label="premium received + payouts, cumulative (k USD)")
    axes[1].set_ylabel("k USD (initial NAV 1,000 k)")
    axes[1].legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
