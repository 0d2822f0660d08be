"""Volatility targeting with EWMA vs GARCH forecasts, and the absolute vs relative risk-contribution band.

    .venv/bin/python benchmarks/bench_vol_forecast.py [--quick] [--lookback-days 730] [--vol-target 0.5]

Runs the vol-targeted ERC strategy (:class:`keeper.strategies.RiskParity` with ``vol_target``) through
:func:`keeper.backtest.run_backtest` on the shipped daily Binance closes, once per covariance estimator
(:class:`keeper.backtest.BacktestConfig` ``estimator_method``: ``"ewma"``, half-life 30 days, the keeper's
default; ``"garch"``: GARCH(1,1) per asset with the residual correlation of the same half-life,
refitted every 20 bars, :mod:`keeper.vol_forecast`), everything else equal, and prints per stress window
(March 2020, May 2021, LUNA May 2022, FTX Nov 2022) and the full period:

* realised volatility of the daily NAV returns in the window (annualised, sqrt(365)) against the target;
* the 30-day RMS error: RMS over the window's days of (trailing 30-day realised vol - target), points;
* maximum drawdown inside the window, two-sided turnover (sum of leg values / NAV) in the window.

No parameter is chosen on a reported window: the half-life (30 days), the lookback, the GARCH(1,1)
specification and k = 20 are fixed in advance for every window, and the GARCH parameters are re-estimated
causally, from the trailing ``lookback_days`` closes only.

Then the risk-contribution drift between rebalances of the same strategy (EWMA) under the backtest's
triggers (absolute ``rrc_band`` 0.05, 300 bps weight drift, regime and 30-day triggers, cost gate) and
with the relative band ``rrc_budget_band`` = 0.2 added: the distribution of max_i |RRC_i / b_i - 1|
(b = 1/n over the held assets) on the days without a rebalance, and the cost of each setting.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import math
import os
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from keeper.backtest import BacktestConfig, run_backtest  # noqa: E402
from keeper.price_panel import load_price_panel  # noqa: E402
from keeper.strategies import RiskParity  # noqa: E402

WINDOWS = (
    ("March 2020", dt.date(2020, 3, 1), dt.date(2020, 3, 31)),
    ("May 2021", dt.date(2021, 5, 1), dt.date(2021, 5, 31)),
    ("LUNA May 2022", dt.date(2022, 5, 1), dt.date(2022, 5, 31)),
    ("FTX Nov 2022", dt.date(2022, 11, 1), dt.date(2022, 11, 30)),
)
VOL_WINDOW_DAYS = 30
DAYS_PER_YEAR = 365


def window_metrics(result, first: dt.date | None, last: dt.date | None, target: float) -> dict[str, float]:
    """Realised vol, 30-day RMS error (vs target), max drawdown and turnover of ``result`` over [first, last]."""
    dates = result.dates
    nav = np.asarray(result.nav)
    i0 = 0 if first is None else next(i for i, d in enumerate(dates) if d >= first)
    i1 = len(dates) - 1 if last is None else max(i for i, d in enumerate(dates) if d <= last)
    r = nav[1:] / nav[:-1] - 1.0  # r[j] is the return into day j + 1
    in_window = r[max(i0 - 1, 0): i1]
    realised = float(np.std(in_window, ddof=1) * math.sqrt(DAYS_PER_YEAR))
    errors = []
    for day in range(max(i0, VOL_WINDOW_DAYS), i1 + 1):
        trailing = r[day - VOL_WINDOW_DAYS: day]
        errors.append(float(np.std(trailing, ddof=1) * math.sqrt(DAYS_PER_YEAR)) - target)
    rms = float(np.sqrt(np.mean(np.square(errors)))) if errors else math.nan
    path = nav[i0: i1 + 1]
    drawdown = float(np.max(1.0 - path / np.maximum.accumulate(path)))
    turnover = sum(d.turnover_bps for d in result.decisions if d.status == "rebalanced"
                   and dates[i0] <= d.date <= dates[i1]) / 1e4
    return {"realised": realised, "rms": rms, "max_dd": drawdown, "turnover": turnover}


def rrc_gaps(result) -> np.ndarray:
    """max_i |RRC_i * n - 1| over the held assets on each day without a rebalance (equal budgets)."""
    rebalanced = {d.date for d in result.decisions if d.status == "rebalanced"}
    gaps = []
    for day, w, rrc in zip(result.dates, result.weights, result.rrc):
        held = w > 0
        if day in rebalanced or held.sum() < 2 or not np.all(np.isfinite(rrc[held])) or rrc[held].sum() <= 0:
            continue
        gaps.append(float(np.max(np.abs(rrc[held] * held.sum() - 1.0))))
    return np.array(gaps)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2020-01-01..2020-06-30 only (March 2020)")
    parser.add_argument("--lookback-days", type=int, default=730,
                        help="closes each estimate sees (GARCH needs a year or more, see keeper.vol_forecast)")
    parser.add_argument("--vol-target", type=float, default=0.5)
    args = parser.parse_args()
    panel = load_price_panel()
    start, end = (dt.date(2020, 1, 1), dt.date(2020, 6, 30)) if args.quick else (None, None)
    base = BacktestConfig(lookback_days=args.lookback_days)
    strategy = RiskParity(f"ERC vol {args.vol_target:.0%}", vol_target=args.vol_target)
    t = time.perf_counter()
    import arch.univariate  # noqa: F401  (its first import is slow; not counted in the GARCH run)
    print(f"import arch: {time.perf_counter() - t:.1f} s")

    runs = {}
    for label, cfg in (
        ("EWMA (hl 30)", base),
        ("GARCH(1,1)", dataclasses.replace(base, estimator_method="garch")),
        ("EWMA + rel. band 0.2", dataclasses.replace(
            base, policy=dataclasses.replace(base.policy, rrc_budget_band=0.2))),
        ("EWMA, no cost gate", dataclasses.replace(
            base, policy=dataclasses.replace(base.policy, cost_aware=False))),
        ("EWMA + rel. band 0.2, no cost gate", dataclasses.replace(
            base, policy=dataclasses.replace(base.policy, rrc_budget_band=0.2, cost_aware=False))),
    ):
        t = time.perf_counter()
        run = run_backtest(panel, [strategy], cfg, start, end)
        runs[label] = run["results"][0]
        print(f"{label:<36} {run['days']} days x {len(panel.symbols)} assets in {time.perf_counter() - t:.1f} s")

    target = args.vol_target
    print(f"\nVol-targeted ERC, target {target:.0%}, lookback {args.lookback_days} days; "
          "realised vol / 30-day RMS error in points / max drawdown / turnover (x NAV)")
    header = f"{'window':<16}{'estimator':<16}{'realised':>10}{'target':>8}{'RMS 30d':>9}{'max DD':>9}{'turnover':>10}"
    print(header)
    print("-" * len(header))
    windows = [w for w in WINDOWS if (start is None or w[2] >= start) and (end is None or w[1] <= end)]
    for name, first, last in [*windows, ("full period", None, None)]:
        for label in ("EWMA (hl 30)", "GARCH(1,1)"):
            m = window_metrics(runs[label], first, last, target)
            print(f"{name:<16}{label:<16}{m['realised']:>9.1%}{target:>8.0%}{m['rms'] * 100:>9.1f}"
                  f"{m['max_dd']:>9.1%}{m['turnover']:>10.2f}")

    print(f"\n{'full period':<16}{'estimator':<16}{'ann. return':>12}{'cost bps/yr':>13}{'rebalances':>12}"
          f"{'turnover/yr':>13}")
    for label in ("EWMA (hl 30)", "GARCH(1,1)"):
        m = runs[label].metrics
        print(f"{'':<16}{label:<16}{m['annualised_return']:>12.1%}{m['cost_drag_bps_per_year']:>13.1f}"
              f"{m['rebalances']:>12}{m['turnover_per_year']:>13.2f}")

    print("\nRisk-contribution gap max_i |RRC_i/b_i - 1| on days without a rebalance (EWMA, equal budgets)")
    header = f"{'triggers':<44}{'median':>8}{'p90':>8}{'p99':>8}{'max':>8}{'rebal.':>8}{'turnover/yr':>13}{'cost bps/yr':>13}"
    print(header)
    print("-" * len(header))
    for label, name in (("EWMA (hl 30)", "absolute rrc_band 0.05 (backtest)"),
                        ("EWMA + rel. band 0.2", "+ relative rrc_budget_band 0.2"),
                        ("EWMA, no cost gate", "absolute rrc_band 0.05, no cost gate"),
                        ("EWMA + rel. band 0.2, no cost gate", "+ relative 0.2, no cost gate")):
        result = runs[label]
        gaps = rrc_gaps(result)
        m = result.metrics
        print(f"{name:<44}{np.median(gaps):>8.1%}{np.quantile(gaps, 0.9):>8.1%}{np.quantile(gaps, 0.99):>8.1%}"
              f"{gaps.max():>8.1%}"
              f"{m['rebalances']:>8}{m['turnover_per_year']:>13.2f}{m['cost_drag_bps_per_year']:>13.1f}")
        print(f"{'':<44}skipped by the cost gate: {m['skipped_by_cost_gate']}, days counted: {gaps.size}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
