"""The on-chain demo and the offline backtest agree on the same window.

The demo replays closes through the real vault, Uniswap V3 pools and keeper on Anvil; the backtest
replays them through the same estimator, optimizer and planner with the cost model of
:mod:`keeper.costs` standing in for the pools. Parameters are the demo's: no depositor flows after the
initial deposits, the keeper's own gas not charged to the vault, 0.05% full-range pools of the demo's
depth seeded at the warm-up's first close.

1. Same targets (the demo's journalled ERC weights, tick by tick): the NAV paths differ by less than
   ``TOLERANCE`` = 1e-6 of NAV (0.01 bps) on every day, and the rebalances fall on the same days.
   What may remain after the modelled fees and price impact is rounding: Uniswap's sqrt-price
   arithmetic and the arbitraged pools' ``sqrtPriceX96`` against the integer constant-product formula
   (on this window the two paths are identical to the base asset's smallest unit). Ignoring the costs
   moves the backtest far outside the tolerance (about 3e-3 here).
2. The backtest's own estimates (its estimator, optimizer, triggers and planner on the CSV closes): the
   same ``TOLERANCE``. The demo's keeper reads its oracle history at a block one hour after each close
   (``keeper.demo.TICK_AFTER_CLOSE_SECONDS``), so every feed's round of a day is on the daily grid and the
   on-chain history equals the CSV; on this window the two NAV paths are identical to the smallest unit.
"""

from __future__ import annotations

import datetime as dt
import json

import numpy as np

from keeper.strategies import Allocation, DecisionContext, RiskParity
from keeper.backtest import BacktestConfig, Market, run_backtest
from keeper.price_panel import load_price_panel
from keeper.costs import GasModel, PoolModel
from keeper.data import DEFAULT_PRICES_CSV
from keeper.demo import DemoOptions, run_demo
from keeper.journal import Journal
from keeper.triggers import TriggerPolicy

TOLERANCE = 1e-6
ESTIMATOR_TOLERANCE = TOLERANCE
SYMBOLS = ["BTC", "ETH", "SOL"]


class JournalledTargets:
    """The demo keeper's own target weights, by date (from its journal)."""

    name = "ERC (demo's targets)"

    def __init__(self, journal: Journal, cash_buffer_bps: float) -> None:
        self.invested = 1.0 - cash_buffer_bps / 10_000
        self.by_date = {}
        for row in journal.ticks():
            # A tick runs at the close of its day: midnight UTC ending the date, plus a few seconds.
            date = dt.datetime.fromtimestamp(row["block_timestamp"] - 86_400, dt.timezone.utc).date()
            self.by_date[date] = np.array(row["detail"]["target_weights"])

    def __call__(self, ctx: DecisionContext) -> Allocation:
        return Allocation(self.by_date[ctx.date], self.invested)


def test_demo_nav_path_matches_the_backtest_within_the_modelled_costs(tmp_path) -> None:
    options = DemoOptions(
        symbols=SYMBOLS,
        start=dt.date(2022, 5, 1),
        end=dt.date(2022, 5, 21),  # the LUNA collapse: large moves, several rebalances
        lookback_days=35,
        half_life_days=15,
        drift_threshold_bps=200,
        flows_every_days=0,
        volatility_target=None,  # the fully invested ERC: its fixed invested fraction is replayed below
        out_dir=tmp_path,
        quiet=True,
    )
    report = run_demo(options)
    saved = json.loads((tmp_path / "report.json").read_text())
    demo_nav = np.array(saved["series"]["nav_usd"])
    demo_dates = [dt.date.fromisoformat(d) for d in saved["series"]["dates"]]
    demo_rebalance_dates = [t["date"] for t in saved["rebalance_log"]]

    panel = load_price_panel(DEFAULT_PRICES_CSV, SYMBOLS)
    first = panel.index_on_or_after(options.start)
    seed_row = first - (options.lookback_days + 1)  # the demo deploys its pools at this close
    config = BacktestConfig(
        half_life_days=options.half_life_days,
        lookback_days=options.lookback_days,
        min_observations=min(30, options.lookback_days - 1),
        slippage_budget_bps=options.slippage_budget_bps,
        policy=TriggerPolicy(weight_drift_bps=options.drift_threshold_bps),  # the live keeper's rule
        pools=PoolModel(fee_pips=500, depth_usd=options.pool_depth_usd, liquidity="constant_liquidity",
                        seed_prices_usd=dict(zip(SYMBOLS, panel.prices[seed_row]))),
        gas=GasModel(charge_to_nav=False),
    )
    market = Market(panel, config.lookback_days)
    journal = Journal(tmp_path / "journal.sqlite")
    same_targets = JournalledTargets(journal, options.cash_buffer_bps)
    result = run_backtest(panel, [same_targets], config, options.start, options.end, market=market)["results"][0]

    assert result.dates == demo_dates
    # Same decisions on the same days: one tick a day, rebalancing on the same dates.
    assert len(result.decisions) == report["ticks"] == len(demo_dates)
    assert [d.date.isoformat() for d in result.decisions if d.status == "rebalanced"] == demo_rebalance_dates
    assert report["rebalances"] >= 2
    gap = float(np.max(np.abs(result.nav_vault / demo_nav - 1.0)))
    print(f"\nmax relative NAV difference, same targets: {gap:.3e} (tolerance {TOLERANCE:.0e})")
    assert gap < TOLERANCE

    # The costs are what the agreement rests on: without them the paths part by far more.
    frictionless = BacktestConfig(
        **{**config.__dict__, "pools": PoolModel(fee_pips=0, depth_usd=1e15), "gas": GasModel(charge_to_nav=False)}
    )
    free = run_backtest(panel, [same_targets], frictionless, options.start, options.end, market=market)["results"][0]
    without_costs = float(np.max(np.abs(free.nav_vault / demo_nav - 1.0)))
    print(f"max relative NAV difference, same targets, no costs modelled: {without_costs:.3e}")
    assert without_costs > 100 * TOLERANCE

    # The whole pipeline, the backtest estimating for itself.
    own = run_backtest(panel, [RiskParity("ERC", options.cash_buffer_bps)], config, options.start, options.end,
                       market=market)["results"][0]
    gap_own = float(np.max(np.abs(own.nav_vault / demo_nav - 1.0)))
    print(f"max relative NAV difference, backtest's own estimates: {gap_own:.3e} (tolerance {ESTIMATOR_TOLERANCE:.0e})")
    assert gap_own < ESTIMATOR_TOLERANCE
    journal.close()


def test_options_backtest_matches_the_on_chain_options_demo(tmp_path) -> None:
    """The options strategy offline (keeper.option_model: the market's quotes, marks and settlement and the
    vault's premium budget in the same integer units) against the options demo on Anvil over a window with a
    first hedge, a put purchase on the largest contributors and a roll before expiry.

    Tolerance. Both sides run the same decision function on the same integer inputs; what differs is time: the
    backtest prices every option at the keeper's read (one hour after the close) while on chain the premium is
    paid, and the book marked, a few blocks (seconds) later. Black-Scholes moves with time by theta, and for a
    long option |θ|·δt / V <= δt / (2τ) up to the drift term (zero rate: the time value decays at most like
    √τ), so the relative error of the option book is at most δt / (2 τ_min), with τ_min the shortest
    time to expiry held (the roll sells ``roll_before_days`` before expiry). With δt <= 60 s, τ_min = 5 days
    and the book at most ``OPTION_SHARE`` of NAV, the NAV paths differ by at most
    OPTION_SHARE · 60 / (2 · 5 · 86,400) ≈ 7e-6 · OPTION_SHARE, plus the spot path's rounding (TOLERANCE).
    The Black-Scholes library's own error (<= 1e-15·(S + K) per unit, contracts/BlackScholes.sol) is below
    one base unit at these sizes.
    """
    from keeper.backtest import BacktestOptions
    from keeper.data import load_prices
    from keeper.implied_vol import load_dvol, realised_vol_proxy

    options = DemoOptions(symbols=SYMBOLS, start=dt.date(2022, 5, 1), end=dt.date(2022, 6, 5), lookback_days=35,
                          half_life_days=15, flows_every_days=0, out_dir=tmp_path, quiet=True, options_mode=True,
                          compare_without_overlay=False)
    run_demo(options)
    saved = json.loads((tmp_path / "report.json").read_text())
    demo_nav = np.array(saved["series"]["nav_usd"])
    demo_dates = [dt.date.fromisoformat(d) for d in saved["series"]["dates"]]
    demo_options_value = np.array(saved["options"]["series"]["options_value_usd"])

    panel = load_price_panel(DEFAULT_PRICES_CSV, SYMBOLS)
    seed_row = panel.index_on_or_after(options.start) - (options.lookback_days + 1)
    table = load_prices(DEFAULT_PRICES_CSV, SYMBOLS)
    vols = {s: realised_vol_proxy(table, s) for s in SYMBOLS}
    vols["BTC"] = load_dvol(options.dvol)  # the demo's inputs: DVOL for BTC, the stated proxy for the others
    config = BacktestConfig(
        half_life_days=options.half_life_days, lookback_days=options.lookback_days,
        min_observations=min(30, options.lookback_days - 1), slippage_budget_bps=options.slippage_budget_bps,
        policy=TriggerPolicy(weight_drift_bps=options.drift_threshold_bps),
        pools=PoolModel(fee_pips=500, depth_usd=options.pool_depth_usd, liquidity="constant_liquidity",
                        seed_prices_usd=dict(zip(SYMBOLS, panel.prices[seed_row]))),
        gas=GasModel(charge_to_nav=False),
        options=BacktestOptions(implied_vols=vols, overlay=options.overlay, hedge_trigger=options.hedge_trigger),
    )
    strategy = RiskParity("ERC + puts", options.options_cash_buffer_bps, with_options=True)
    result = run_backtest(panel, [strategy], config, options.start, options.end)["results"][0]

    assert result.dates == demo_dates
    assert result.options["premium_paid_usd"] > 0 and result.options["rolls"] >= 1, result.options
    option_share = float(np.max(demo_options_value / demo_nav))
    assert 0 < option_share < 0.1
    tolerance = TOLERANCE + option_share * 60 / (2 * 5 * 86_400)
    gap = float(np.max(np.abs(result.nav_vault / demo_nav - 1.0)))
    print(f"\nmax relative NAV difference, options mode: {gap:.3e} (tolerance {tolerance:.1e}, book <= "
          f"{option_share:.2%} of NAV)")
    assert gap < tolerance


def test_the_demos_overlay_comparison_matches_the_backtests_overlay_report(tmp_path) -> None:
    """``keeper demo --options`` and ``keeper backtest --overlay-report`` compare the same three runs (the policy in
    spot only, the policy with the put overlay, the same-net-delta control) over the same window: the demo's three
    share-price series match the backtest's (:func:`keeper.options_report.replay_runs`, the report's replays).

    Tolerance, per run, from the on-chain path's integer rounding:

    * NAV. Policy: ``TOLERANCE`` (the spot path's rounding, the first test). Overlay: ``TOLERANCE`` plus the option
      book's time shift, ``OPTION_SHARE · 60 / (2 · 5 · 86,400)`` (the options test above).
    * Control. It targets the overlay run's net delta per asset, recorded on each side by
      :func:`keeper.options_report.net_delta_fractions`. The two records differ by the overlay NAV's error in the
      denominator and in the spot units (<= 2 · tol_overlay · |w|, with |w| <= 1 the asset's net-delta weight) and
      by the option deltas' time shift δt <= 60 s: |∂Δ/∂t| = φ(d1)·|d2| / (2τ) at zero rate, and
      φ(d1)|d2| <= φ(d1)(|d1| + σ√τ) <= 0.242 + 0.399·σ√τ (max of x·φ(x) is φ(1)); with τ >= 4 days held (rolled
      5 days before expiry, checked once a day), τ <= the tenor and the option notional at most the NAV, the
      per-asset gap is at most 2·tol_overlay + (0.242 + 0.399·σ_max·√tenor)·60 / (2·4·86,400). That gap, held as
      extra (or missing) exposure, moves the NAV by at most gap_i · R_i, R_i the asset's largest relative move
      between two closes of the window; the control's NAV tolerance is TOLERANCE + Σ_i measured gap_i · R_i (the
      measured gaps are first checked against their bound).
    * Share price. The demo reads it as ``convertToAssets(1 share)`` in base units (6 decimals, floor), an error
      below 1e-6 USD per reading; indexed to the first day, the series carry that error at t and at 0, and the NAV
      errors at t and at 0: |q_t/q_0 ÷ (N_t/N_0) − 1| <= 2·tol_nav + 1e-6 · (1/min q + 1/q_0).
    """
    from keeper.backtest import BacktestOptions, replay_window
    from keeper.data import load_prices
    from keeper.implied_vol import load_dvol, realised_vol_proxy
    from keeper.options_report import compare_runs, replay_runs, replay_series
    from keeper.strategies import NetDeltaControl

    options = DemoOptions(symbols=SYMBOLS, start=dt.date(2022, 5, 1), end=dt.date(2022, 6, 5), lookback_days=35,
                          half_life_days=15, flows_every_days=0, out_dir=tmp_path, quiet=True, options_mode=True)
    report = run_demo(options)
    comparison = report["options"]["comparison"]
    demo_dates = [dt.date.fromisoformat(d) for d in comparison["series"]["dates"]]
    share = {run: np.array(comparison["series"][f"share_price_{run}"]) for run in ("policy", "overlay", "control")}
    demo_net = np.array(comparison["series"]["overlay_net_delta"])
    demo_nav = np.array(report["series"]["nav_usd"])
    option_share = float(np.max(np.array(report["options"]["series"]["options_value_usd"]) / demo_nav))
    assert 0 < option_share < 0.1 and report["options"]["puts_bought"] >= 2

    panel = load_price_panel(DEFAULT_PRICES_CSV, SYMBOLS)
    seed_row = panel.index_on_or_after(options.start) - (options.lookback_days + 1)
    table = load_prices(DEFAULT_PRICES_CSV, SYMBOLS)
    vols = {s: realised_vol_proxy(table, s) for s in SYMBOLS}
    vols["BTC"] = load_dvol(options.dvol)
    config = BacktestConfig(
        half_life_days=options.half_life_days, lookback_days=options.lookback_days,
        min_observations=min(30, options.lookback_days - 1), slippage_budget_bps=options.slippage_budget_bps,
        policy=TriggerPolicy(weight_drift_bps=options.drift_threshold_bps),
        pools=PoolModel(fee_pips=500, depth_usd=options.pool_depth_usd, liquidity="constant_liquidity",
                        seed_prices_usd=dict(zip(SYMBOLS, panel.prices[seed_row]))),
        gas=GasModel(charge_to_nav=False),
        options=BacktestOptions(implied_vols=vols, overlay=options.overlay, hedge_trigger=options.hedge_trigger),
    )
    market = Market(panel, config.lookback_days)
    first, last = replay_window(panel, options.start, options.end, config.lookback_days)
    cash = options.options_cash_buffer_bps
    runs = replay_runs(market, config, RiskParity("policy", cash),
                       RiskParity("overlay", cash, with_options=True, overlay=options.overlay), first, last,
                       say=lambda _: None)
    for run in runs.values():
        assert run.dates == demo_dates

    tol_policy = TOLERANCE
    tol_overlay = TOLERANCE + option_share * 60 / (2 * 5 * 86_400)
    # The recorded net deltas, against their bound.
    backtest_net = np.array([[runs["overlay"].net_delta[d][s] for s in SYMBOLS] for d in demo_dates])
    net_gap = np.max(np.abs(backtest_net - demo_net), axis=0)
    sigma_max = float(np.max(report["options"]["series"]["vols"]))
    charm = 0.242 + 0.399 * sigma_max * np.sqrt(options.overlay.tenor_days / 365)
    net_bound = 2 * tol_overlay + charm * 60 / (2 * 4 * 86_400)
    print(f"\nmax net-delta gap per asset {net_gap} (bound {net_bound:.2e})")
    assert np.all(net_gap < net_bound)
    closes = panel.prices[first - 1: last + 1]
    largest_move = np.array([np.max(np.abs(closes[:, i][None, :] / closes[:, i][:, None] - 1.0))
                             for i in range(len(SYMBOLS))])
    tol_control = TOLERANCE + float(np.sum(net_gap * largest_move))

    tolerances = {}
    for run, tol_nav in (("policy", tol_policy), ("overlay", tol_overlay), ("control", tol_control)):
        q = share[run]
        nav = runs[run].nav
        tolerances[run] = tolerance = 2 * tol_nav + 1e-6 * (1 / q.min() + 1 / q[0])
        gap = float(np.max(np.abs((q / q[0]) / (nav / nav[0]) - 1.0)))
        print(f"{run}: max relative share-price gap {gap:.3e} (tolerance {tolerance:.2e})")
        assert gap < tolerance, run
        # The tolerance tells the runs apart: each demo series is far from the backtest's other two runs.
        for other in set(runs) - {run}:
            apart = float(np.max(np.abs((q / q[0]) / (runs[other].nav / runs[other].nav[0]) - 1.0)))
            assert apart > 10 * tolerance, (run, other, apart)

    # The report's metrics follow: drawdown and return of each run and period within twice the series' tolerance
    # (each is a difference or ratio of two points of the indexed series).
    periods = comparison["periods"]
    assert list(periods) == ["demo window", "luna_may_2022"]
    backtest_metrics, _ = compare_runs(runs, {name: {"start": dt.date.fromisoformat(str(p["start"])),
                                                      "end": dt.date.fromisoformat(str(p["end"]))}
                                               for name, p in periods.items()}, whole_period="demo window")
    for name in periods:
        for run, tolerance in tolerances.items():
            demo_m, bt_m = comparison["metrics"][name][run], backtest_metrics[name][run]
            for key in ("max_drawdown", "return"):
                assert abs(demo_m[key] - bt_m[key]) < 2 * tolerance, (name, run, key, demo_m[key], bt_m[key])

    # The control on the demo's own net-delta record: the spot path's rounding alone.
    same_targets = replay_series(market, NetDeltaControl("control", runs["overlay"].net_delta | {
        d: dict(zip(SYMBOLS, row)) for d, row in zip(demo_dates, demo_net)}), config, first, last, lambda _: None)
    q = share["control"]
    gap = float(np.max(np.abs((q / q[0]) / (same_targets.nav / same_targets.nav[0]) - 1.0)))
    print(f"control on the demo's net delta: max relative share-price gap {gap:.3e}")
    assert gap < 2 * TOLERANCE + 1e-6 * (1 / q.min() + 1 / q[0])
