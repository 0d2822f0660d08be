"""Backtest speed: days × assets replayed per second, per strategy and for the default side-by-side run.

    .venv/bin/python benchmarks/bench_backtest.py [--quick]

Prints, for the shipped Binance history (nine assets, blank cells before each listing):
  * each strategy alone on the whole file (the estimator cache cold, then warm),
  * the default six strategies side by side (what ``keeper backtest`` runs), then with a 5 % ES limit,
  * the decision policy alone (:func:`keeper.policy.decide_targets`) per call on a 180-day window,
  * the walk-forward on two years,
with asset-days/second = (days × assets with a close, summed over the strategies run) / wall seconds, and the
time per tick. The process CPU seconds are printed beside the wall seconds: on a shared machine the wall time
includes the time other processes hold the cores, the CPU time does not (the replay is single-threaded with
``OPENBLAS_NUM_THREADS=1``), so asset-days per CPU second is the figure to compare between runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's keeper, not an installed one

from keeper.backtest import BacktestConfig, Market, run_backtest  # noqa: E402
from keeper.price_panel import load_price_panel  # noqa: E402
from keeper.strategies import default_strategies  # noqa: E402
from keeper.covariance import EstimatorConfig  # noqa: E402
from keeper.returns import simple_returns  # noqa: E402
from keeper.policy_config import PolicyConfig  # noqa: E402
from keeper.policy import decide_targets  # noqa: E402
from keeper.walkforward import WalkForwardConfig, walk_forward  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one year instead of the whole file")
    args = parser.parse_args()
    t = time.perf_counter()
    panel = load_price_panel()
    print(f"loaded {len(panel.dates)} rows x {len(panel.symbols)} assets in {time.perf_counter() - t:.2f} s")
    start = dt.date(2025, 1, 1) if args.quick else None
    config = BacktestConfig()

    print(f"\n{'strategy':<20}{'cache':>7}{'days':>7}{'asset-days':>12}{'seconds':>9}{'asset-days/s':>14}"
          f"{'ms/tick':>9}{'cpu s':>8}{'asset-days/cpu s':>18}")
    market = Market(panel, config.lookback_days)
    for strategy in default_strategies():
        for cache in ("cold", "warm"):
            if cache == "cold":
                market = Market(panel, config.lookback_days)
            cpu = time.process_time()
            run = run_backtest(panel, [strategy], config, start, market=market)
            cpu = time.process_time() - cpu
            print(f"{strategy.name:<20}{cache:>7}{run['days']:>7}{run['asset_days']:>12,}{run['seconds']:>9.2f}"
                  f"{run['speed_asset_days_per_second']:>14,.0f}{run['seconds'] / run['days'] * 1e3:>9.2f}"
                  f"{cpu:>8.2f}{run['asset_days'] / cpu:>18,.0f}")

    cpu = time.process_time()
    run = run_backtest(panel, default_strategies(), config, start)
    cpu = time.process_time() - cpu
    print(f"\nsix strategies side by side: {run['days']} days, {run['asset_days']:,} asset-days in "
          f"{run['seconds']:.1f} s "
          f"= {run['speed_asset_days_per_second']:,.0f} asset-days/s "
          f"({run['seconds'] / run['days'] / len(run['results']) * 1e3:.2f} ms per strategy-day); "
          f"{cpu:.1f} CPU s = {run['asset_days'] / cpu:,.0f} asset-days/CPU s "
          f"({cpu / run['days'] / len(run['results']) * 1e3:.2f} CPU ms per strategy-day)")

    limited = dataclasses.replace(config, es_limit=0.05)
    cpu = time.process_time()
    run = run_backtest(panel, default_strategies(), limited, start)
    cpu = time.process_time() - cpu
    binding = {r.name: r.metrics["es_limit_binding"] for r in run["results"]}
    print(f"same with a 5 % historical 99 % 1-day ES limit: {run['seconds']:.1f} s "
          f"= {run['speed_asset_days_per_second']:,.0f} asset-days/s, {run['asset_days'] / cpu:,.0f} asset-days/CPU s; "
          f"ticks where the limit bound: {binding}")

    t_last = len(panel.dates) - 1
    universe = list(market.universe(t_last))
    symbols = [panel.symbols[i] for i in universe]
    returns = simple_returns(panel.prices[t_last - config.lookback_days: t_last + 1][:, universe])
    current = [0.0] * len(universe)
    print(f"\ndecide_targets on {returns.shape[0]} days x {returns.shape[1]} assets:")
    for label, policy in (
        ("default (EWMA, ERC, 500 bps cash)", PolicyConfig()),
        ("vol target 0.5", PolicyConfig(volatility_target=0.5)),
        ("ES limit 5 % historical", PolicyConfig(es_limit=0.05)),
        ("ES limit 5 % Cornish-Fisher", PolicyConfig(es_limit=0.05, es_method="cornish_fisher")),
        ("Ledoit-Wolf, gate 1e2", PolicyConfig(estimator=EstimatorConfig(method="ledoit_wolf"),
                                               max_condition_number=1e2)),
    ):
        calls = 300
        t0 = time.perf_counter()
        for _ in range(calls):
            decision = decide_targets(returns, symbols, current, config=policy)
        per_call = (time.perf_counter() - t0) / calls
        print(f"  {label:<36}{per_call * 1e3:>8.3f} ms/call  gate {decision.gate_action}, "
              f"{decision.allocation_method}, invested {decision.invested_fraction:.4f}")

    wf_start = dt.date(2024, 1, 1) if args.quick else dt.date(2023, 1, 1)
    wf_config = WalkForwardConfig(train_days=180, test_days=90)
    result = walk_forward(panel, config, wf_config, wf_start)
    replayed = len(wf_config.grid()) * wf_config.train_days * len(result.windows) + len(result.result.dates)
    print(f"walk-forward from {wf_start}: {len(result.windows)} windows x {len(wf_config.grid())} grid points, "
          f"{replayed:,} strategy-days in {result.seconds:.1f} s ({replayed / result.seconds:,.0f} strategy-days/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
