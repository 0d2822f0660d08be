"""The offline backtester: data handling, the replay's accounting, strategies, metrics and outputs."""

from __future__ import annotations

import datetime as dt
import json
import math

import numpy as np
import pytest

from keeper.strategies import (
    Allocation,
    EqualWeight,
    FixedMix,
    RiskParity,
    default_strategies,
    vol_target_scale,
)
from keeper.backtest import BacktestConfig, Market, run_backtest
from keeper.backtest_metrics import compute_metrics
from keeper.price_panel import load_price_panel
from keeper.backtest_report import write_outputs
from keeper.cli import main
from keeper.costs import GasModel, PoolModel
from keeper.errors import BacktestDataError, ConfigError, InvalidPriceError
from keeper.returns import simple_returns
from keeper.risk_budgeting import solve_equal_risk_contribution
from keeper.risk_contributions import portfolio_volatility
from keeper.triggers import TriggerPolicy
from reference_estimators import ewma_covariance
from tolerances import U, assert_entries_within, covariance_atol, ewma_weight_rtol

SYMBOLS = ["BTC", "ETH", "SOL"]


def _csv(tmp_path, rows: list[str], header: str = "date,BTC,ETH") -> str:
    path = tmp_path / "closes.csv"
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def _synthetic(tmp_path, n_days: int = 160, seed: int = 7, blanks: dict[str, int] | None = None):
    """A CSV of geometric random walks; ``blanks[symbol] = k`` leaves its first k closes blank."""
    rng = np.random.default_rng(seed)
    vols = np.array([0.03, 0.04, 0.06])
    prices = 100 * np.exp(np.cumsum(rng.normal(0, vols, size=(n_days, 3)), axis=0))
    start = dt.date(2021, 1, 1)
    rows = []
    for t in range(n_days):
        cells = []
        for i, s in enumerate(SYMBOLS):
            cells.append("" if blanks and t < blanks.get(s, 0) else f"{prices[t, i]:.6f}")
        rows.append(",".join([(start + dt.timedelta(days=t)).isoformat(), *cells]))
    return _csv(tmp_path, rows, "date," + ",".join(SYMBOLS))


def _config(**overrides) -> BacktestConfig:
    values = dict(lookback_days=40, min_observations=30, half_life_days=20.0,
                  pools=PoolModel(depth_usd=50e6), gas=GasModel(eth_price_usd=2_000.0))
    values.update(overrides)
    return BacktestConfig(**values)


# --------------------------------------------------------------------------- data
def test_blank_cells_stay_blank_and_assets_enter_once_they_have_a_full_window(tmp_path) -> None:
    path = _synthetic(tmp_path, blanks={"SOL": 60})
    panel = load_price_panel(path)
    assert np.isnan(panel.prices[:60, 2]).all() and np.isfinite(panel.prices[60:, 2]).all()
    market = Market(panel, 40)
    assert market.universe(40) == (0, 1)
    assert market.universe(99) == (0, 1)
    assert market.universe(100) == (0, 1, 2)  # rows 60..100: 41 closes = lookback + 1
    run = run_backtest(panel, [EqualWeight()], _config(), market=market)
    res = run["results"][0]
    sol = res.weights[:, 2]
    assert np.all(sol[: 100 - 40] == 0) and sol[-1] > 0.25
    assert any(d.reason.startswith("universe changed") for d in res.decisions if d.status == "rebalanced")


def test_a_held_asset_without_a_close_is_an_error_not_a_forward_fill(tmp_path) -> None:
    path = _synthetic(tmp_path)
    lines = path.read_text().splitlines()
    cells = lines[121].split(",")
    cells[2] = ""
    lines[121] = ",".join(cells)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(BacktestDataError, match="ETH"):
        run_backtest(load_price_panel(path), [EqualWeight()], _config())


@pytest.mark.parametrize(
    "rows, error",
    [
        (["2021-01-01,1,2", "2021-01-01,1,2"], ConfigError),  # duplicate date
        (["2021-01-02,1,2", "2021-01-01,1,2"], ConfigError),  # unsorted
        (["01/02/2021,1,2"], ConfigError),
        (["2021-01-01,1,-2"], InvalidPriceError),
        (["2021-01-01,1,abc"], InvalidPriceError),
        ([], ConfigError),
    ],
)
def test_bad_files_are_refused_with_a_clear_error(tmp_path, rows, error) -> None:
    with pytest.raises(error):
        load_price_panel(_csv(tmp_path, rows))


def test_unknown_symbol_and_missing_file_are_config_errors(tmp_path) -> None:
    with pytest.raises(ConfigError, match="DOGE"):
        load_price_panel(_csv(tmp_path, ["2021-01-01,1,2"]), ["DOGE"])
    with pytest.raises(ConfigError):
        load_price_panel(tmp_path / "missing.csv")


def test_calendar_gaps_are_reported(tmp_path) -> None:
    panel = load_price_panel(_csv(tmp_path, ["2021-01-01,1,2", "2021-01-02,1,2", "2021-01-05,1,2"]))
    assert panel.calendar_gaps == ((dt.date(2021, 1, 2), dt.date(2021, 1, 5)),)


# --------------------------------------------------------------------------- strategies
def test_vol_target_scales_the_sleeve_to_the_target_and_never_levers() -> None:
    cov = np.array([[0.64, 0.2], [0.2, 0.36]])
    w = np.array([0.4, 0.6])
    sigma = portfolio_volatility(w, cov)
    s = vol_target_scale(w, cov, 0.3, invested_fraction=0.95)
    assert 0.95 * s * sigma == pytest.approx(0.3)
    assert vol_target_scale(w, cov, 5.0) == 1.0  # exact: capped at 1
    with pytest.raises(ConfigError):
        vol_target_scale(w, cov, 0.0)


def test_strategies_give_their_defining_weights(tmp_path) -> None:
    panel = load_price_panel(_synthetic(tmp_path))
    market = Market(panel, 40)
    cfg = _config()
    t = 100
    universe = market.universe(t)
    gate = market.gate(t, universe, cfg)
    assert gate.action == "accept"
    est = gate.estimate
    # The gate's estimate is the EWMA estimate (to rounding: the gate assembles it from the same
    # weighted moments in another order).
    returns = simple_returns(panel.prices[t - 40: t + 1])
    live = ewma_covariance(returns, 20.0, min_observations=30)
    # Two evaluations of the same weighted covariance: covariance_atol each (with the EWMA weights'
    # own error), annualised and symmetrised (3U).
    weights = 0.5 ** (np.arange(returns.shape[0] - 1, -1, -1) / 20.0)
    atol = 2 * 365.0 * covariance_atol(returns, weights, weight_rtol=ewma_weight_rtol(returns.shape[0], 20.0))
    assert_entries_within(est.covariance, live.covariance, atol + 3 * U * np.abs(live.covariance))
    from keeper.strategies import DecisionContext, InverseVolatility

    window = panel.prices[t - 40: t + 1]
    ctx = DecisionContext(panel.dates[t], tuple(SYMBOLS), window[-1], window, est, gate=gate,
                          current_weights=np.zeros(3), policy=cfg.policy_config())
    erc = RiskParity()(ctx)
    assert erc.action == "target" and erc.allocation_method == "risk_budgeting"
    assert erc.invested_fraction == pytest.approx(0.95) and erc.cash_weight == pytest.approx(0.05)
    assert np.allclose(erc.sleeve_weights, solve_equal_risk_contribution(est.covariance).weights, atol=1e-12)
    assert np.allclose(erc.relative_risk_contributions, 1 / 3, atol=1e-9)
    targeted = RiskParity(vol_target=0.2)(ctx)
    assert portfolio_volatility(targeted.target_weights, est.covariance) == pytest.approx(0.2)
    assert targeted.ex_ante_volatility == pytest.approx(0.2)
    inv = InverseVolatility()(ctx)
    vols = np.sqrt(np.diag(est.covariance))
    assert np.allclose(inv.sleeve_weights, (1 / vols) / (1 / vols).sum(), atol=1e-15)
    assert EqualWeight()(ctx).target_weights.tolist() == pytest.approx([0.95 / 3] * 3)
    assert FixedMix("60/40", {"BTC": 0.6})(ctx).nav_fractions.tolist() == [0.6, 0.0, 0.0]  # exact: assigned
    assert Allocation.from_nav_fractions([0.0, 0.0]).invested_fraction == 0.0
    with pytest.raises(ConfigError):
        FixedMix("bad", {"BTC": 0.8, "ETH": 0.3})


def test_a_strategy_returning_malformed_weights_is_refused(tmp_path) -> None:
    class Broken:
        name = "broken"

        def __call__(self, ctx):
            return Allocation(np.array([0.7, 0.7, 0.7]), 1.0)

    with pytest.raises(ConfigError, match="broken"):
        run_backtest(load_price_panel(_synthetic(tmp_path)), [Broken()], _config())


# --------------------------------------------------------------------------- the replay
def test_the_replay_uses_the_live_estimator_and_reaches_the_erc_target(tmp_path) -> None:
    panel = load_price_panel(_synthetic(tmp_path))
    cfg = _config(policy=TriggerPolicy(weight_drift_bps=0.0))  # rebalance every day
    res = run_backtest(panel, [RiskParity()], cfg)["results"][0]
    t = len(panel.dates) - 1
    est = ewma_covariance(simple_returns(panel.prices[t - 40: t + 1]), 20.0, min_observations=30)
    target = solve_equal_risk_contribution(est.covariance)
    # After the last rebalance the holdings are the ERC target within the planner's integer rounding
    # and the costs, and their ex-ante relative risk contributions are equal.
    assert res.decisions[-1].status == "rebalanced"
    assert np.allclose(res.weights[-1], target.weights * 0.95, atol=2e-4)
    assert np.allclose(res.rrc[-1], 1 / 3, atol=1e-3)


def test_strategies_side_by_side_replay_exactly_as_each_alone(tmp_path) -> None:
    # The side-by-side replay advances every strategy one day at a time and shares the day's answers, window,
    # returns and gate: no strategy may see another's state, so each result is bit for bit its solo run
    # (same inputs, same operations, same order: exact equality, no tolerance).
    panel = load_price_panel(_synthetic(tmp_path, blanks={"SOL": 70}))
    cfg = _config()
    together = run_backtest(panel, default_strategies(), cfg)["results"]
    for strategy, shared in zip(default_strategies(), together):
        alone = run_backtest(panel, [strategy], cfg)["results"][0]
        assert shared.name == alone.name
        assert shared.nav.tolist() == alone.nav.tolist()
        assert shared.weights.tolist() == alone.weights.tolist()
        assert np.array_equal(shared.rrc, alone.rrc) and np.array_equal(shared.ex_ante_vol, alone.ex_ante_vol,
                                                                          equal_nan=True)
        assert [d.as_dict() for d in shared.decisions] == [d.as_dict() for d in alone.decisions]
        # JSON text: NaN metrics (e.g. no vol target) compare equal as text, not as floats.
        assert json.dumps(shared.metrics, default=str, sort_keys=True) == json.dumps(alone.metrics, default=str,
                                                                                     sort_keys=True)


def test_the_shared_window_cannot_be_changed_by_a_strategy(tmp_path) -> None:
    # The day's closes and returns are one array for every strategy: a strategy writing into them would
    # change what the next one sees, so they are read-only and the write raises.
    class Scribbler:
        name = "scribbler"

        def __call__(self, ctx):
            ctx.returns[0, 0] = 0.0
            return Allocation(np.full(len(ctx.symbols), 1.0 / len(ctx.symbols)), 0.5)

    with pytest.raises(ValueError, match="read-only"):
        run_backtest(load_price_panel(_synthetic(tmp_path)), [Scribbler()], _config())


def test_nav_accounting_adds_up_to_the_costs(tmp_path) -> None:
    panel = load_price_panel(_synthetic(tmp_path))
    cfg = _config(policy=TriggerPolicy(weight_drift_bps=100.0))
    res = run_backtest(panel, [RiskParity()], cfg)["results"][0]
    free = run_backtest(panel, [RiskParity()], _config(policy=TriggerPolicy(weight_drift_bps=100.0),
                                                          pools=PoolModel(fee_pips=0, depth_usd=1e15),
                                                          gas=GasModel(base_fee_gwei=0, priority_fee_gwei=0)))
    free = free["results"][0]
    assert free.metrics["fees_usd"] == free.metrics["gas_usd"] == 0.0  # exact: sums of integer zeros
    m = res.metrics
    assert m["rebalances"] >= 3 and m["fees_usd"] > 0 and m["impact_usd"] > 0 and m["gas_usd"] > 0
    # Gas is paid outside the vault and charged to the strategy's NAV.
    # nav_vault / 1e6 and (nav_vault - gas) / 1e6 from the same base-unit NAV: one division each (U of
    # ~1e6 USD) and the subtraction; gas_usd one more division. One base unit (1e-6 USD) is far above.
    assert res.nav_vault[-1] - res.nav[-1] == pytest.approx(
        m["gas_usd"], abs=2 * U * (res.nav_vault[-1] + res.nav[-1]) + 2 * U * m["gas_usd"])
    # On the first day (one trade from cash) the NAV lost is exactly the modelled costs.
    first = res.decisions[0].cost
    assert 1e6 - res.nav[0] == pytest.approx((first.fee + first.impact + first.gas) / 1e6, abs=2e-6)
    assert free.nav[0] == pytest.approx(1e6, abs=1e-3)  # no fee, no gas, an impact of size^2/depth ~ 3e-4 USD
    assert m["cost_drag_bps_per_year"] > 0 and m["turnover_per_year"] > 0


def test_the_cost_gate_trades_less_when_trading_is_expensive(tmp_path) -> None:
    panel = load_price_panel(_synthetic(tmp_path))
    policy = TriggerPolicy(weight_drift_bps=100.0, cost_aware=True, risk_aversion=5.0)
    cheap = run_backtest(panel, [RiskParity()], _config(policy=policy))["results"][0]
    dear = run_backtest(panel, [RiskParity()], _config(policy=policy, gas=GasModel(base_fee_gwei=3_000.0,
                                                                                  eth_price_usd=2_000.0)))
    dear = dear["results"][0]
    assert dear.metrics["rebalances"] < cheap.metrics["rebalances"]
    gated = [d for d in dear.decisions if "not worth trading" in d.reason]
    assert gated and all(d.decision.metrics["benefit"] < d.decision.metrics["cost"] for d in gated)


def test_slippage_budget_halves_the_step_like_the_runner(tmp_path) -> None:
    panel = load_price_panel(_synthetic(tmp_path))
    shallow = _config(pools=PoolModel(depth_usd=60e6), policy=TriggerPolicy(weight_drift_bps=300.0))
    res = run_backtest(panel, [RiskParity()], shallow)["results"][0]
    # A 950k buy into 60M pools costs ~0.5% per leg at full size: the first step is halved.
    assert res.decisions[0].status == "rebalanced"
    assert res.decisions[0].turnover_bps == pytest.approx(4750.0, abs=1.0)
    hopeless = _config(pools=PoolModel(depth_usd=1e6), max_step_halvings=1)
    first = run_backtest(panel, [RiskParity()], hopeless)["results"][0].decisions[0]
    assert first.status == "skipped" and first.reason.startswith("QuoteBelowBoundError")


# --------------------------------------------------------------------------- metrics
def test_metrics_follow_their_definitions() -> None:
    dates = [dt.date(2021, 1, 1) + dt.timedelta(days=k) for k in range(366)]
    nav = np.full(366, 100.0)
    nav[100:200] = 80.0  # peak day 99, trough day 100, recovery day 200
    m = compute_metrics(nav, dates)
    assert m["total_return"] == 0.0 and m["annualised_return"] == 0.0  # exact: 100 / 100 - 1 and 1^x - 1
    assert m["max_drawdown"] == pytest.approx(0.2)
    assert (m["max_drawdown_peak"], m["max_drawdown_trough"], m["max_drawdown_recovery"]) == (
        "2021-01-01", "2021-04-11", "2021-07-20")
    grow = 100 * 1.001 ** np.arange(366)
    g = compute_metrics(grow, dates)
    assert g["annualised_return"] == pytest.approx(1.001**365 - 1)
    # Exact: a rising series is its own running maximum, 1 - v / v = 0.
    assert g["max_drawdown"] == 0.0 and g["calmar"] is None and g["max_drawdown_recovery"] is None
    rng = np.random.default_rng(1)
    r = rng.normal(0.001, 0.02, 365)
    v = 100 * np.concatenate([[1.0], np.cumprod(1 + r)])
    mm = compute_metrics(v, dates, vol_target=0.3)
    assert mm["annualised_volatility"] == pytest.approx(np.std(r, ddof=1) * math.sqrt(365))
    assert mm["sharpe"] == pytest.approx(r.mean() * 365 / mm["annualised_volatility"])
    assert mm["sortino"] == pytest.approx(r.mean() * 365 / (math.sqrt(np.mean(np.minimum(r, 0) ** 2)) * math.sqrt(365)))
    assert mm["vol_target_tracking_error"] > 0
    with pytest.raises(ConfigError):
        compute_metrics([100.0], dates[:1])
    with pytest.raises(ConfigError):
        compute_metrics([100.0, 0.0], dates[:2])


def test_realised_risk_contributions_sum_to_one_and_are_equal_for_iid_equal_risk() -> None:
    rng = np.random.default_rng(3)
    n = 20_000
    returns = np.vstack([np.full(3, np.nan), rng.normal(0, 0.02, size=(n, 3))])
    weights = np.full((n + 1, 3), 1 / 3)
    dates = [dt.date(2000, 1, 1) + dt.timedelta(days=k) for k in range(n + 1)]
    nav = 100 * np.concatenate([[1.0], np.cumprod(1 + returns[1:].mean(axis=1))])
    m = compute_metrics(nav, dates, weights=weights, asset_returns=returns)
    assert m["realised_rrc"].sum() == pytest.approx(1.0)
    assert m["rrc_dispersion"] < 0.01


# --------------------------------------------------------------------------- outputs and CLI
def test_outputs_are_written(tmp_path) -> None:
    panel = load_price_panel(_synthetic(tmp_path))
    run = run_backtest(panel, default_strategies(0.4)[:2] + [FixedMix("BTC only", {"BTC": 1.0})], _config())
    doc = write_outputs(run, tmp_path / "out")
    for name in ("backtest.json", "backtest.txt", "backtest_nav.png", "backtest_drawdown.png",
                 "backtest_weights.png", "backtest_rrc.png", "backtest-journal.sqlite"):
        assert (tmp_path / "out" / name).stat().st_size > 0
    saved = json.loads((tmp_path / "out" / "backtest.json").read_text())
    assert [s["name"] for s in saved["strategies"]] == ["ERC", "ERC vol 40%", "BTC only"]
    assert len(saved["series"]["nav_usd"]["ERC"]) == run["days"]
    assert "ERC vol 40%" in doc["table"]
    from keeper.journal import Journal

    journal = Journal(tmp_path / "out" / "backtest-journal.sqlite")
    rows = [e.record for e in journal.backtest_ticks()]
    assert len(rows) == sum(len(r.decisions) for r in run["results"])
    assert {r.status for r in rows} == {"rebalanced", "skipped"} and all(r.reason for r in rows)
    # Every tick of a policy strategy carries the policy's verdict; a rebalance carries the full record.
    erc = [e.record for e in journal.backtest_ticks(strategy="ERC") if e.record.policy is not None]
    assert len(erc) == len(run["results"][0].decisions)
    assert all(r.policy["gate"]["action"] == "accept" for r in erc if r.status == "rebalanced")
    # A fixed mix goes through the same decision as a fixed-target policy decision (keeper.policy.fixed_target).
    btc = [e.record for e in journal.backtest_ticks(strategy="BTC only")]
    assert btc and all(r.policy["allocation"]["method"] == "fixed" for r in btc)
    journal.close()


def test_cli_backtest_runs_and_reports_bad_input(tmp_path, capsys) -> None:
    path = _synthetic(tmp_path, n_days=120)
    out = tmp_path / "cli"
    assert main(["backtest", "--data", str(path), "--lookback", "40", "--out", str(out), "--no-journal"]) == 0
    assert (out / "backtest.json").exists()
    assert "ERC" in capsys.readouterr().out
    assert main(["backtest", "--data", str(path), "--lookback", "40", "--start", "2030-01-01",
                 "--out", str(out)]) == 2
    assert "warm-up" in capsys.readouterr().err
    # The decision policy's options: estimator, gate limit, ES limit.
    assert main(["backtest", "--data", str(path), "--lookback", "40", "--out", str(out), "--no-journal",
                 "--estimator", "ledoit_wolf", "--max-condition-number", "1e4", "--es-limit", "0.02",
                 "--es-method", "gaussian"]) == 0
    table = capsys.readouterr().out
    assert "ES99 1d" in table and "gate a/s/iv/h" in table
    saved = json.loads((out / "backtest.json").read_text())
    assert saved["config"]["estimator_method"] == "ledoit_wolf" and saved["config"]["es_limit"] == 0.02
    erc = saved["strategies"][0]["metrics"]
    assert erc["es_limit_binding"] > 0 and sum(erc["gate_counts"].values()) == erc["ticks"]
    assert erc["final_risk"]["measures"] and erc["final_stress"]["results"]
    # 40 daily returns cannot give a historical 99 % ES (a tail of 0.4 scenario): the policy holds, in cash.
    assert main(["backtest", "--data", str(path), "--lookback", "40", "--out", str(out), "--es-limit", "0.02"]) == 0
    capsys.readouterr()
    erc = json.loads((out / "backtest.json").read_text())["strategies"][0]
    assert erc["metrics"]["policy_holds"] == erc["metrics"]["ticks"] and erc["metrics"]["rebalances"] == 0
    assert all("cannot be checked" in d["reason"] for d in erc["decisions"])
    assert main(["backtest", "--data", str(path), "--lookback", "40", "--out", str(out), "--es-limit", "-0.1"]) == 2
    assert "es_limit" in capsys.readouterr().err


def test_btc_benchmarks_are_dropped_without_btc() -> None:
    assert [s.name for s in default_strategies(symbols=["ETH", "SOL"])] == [
        "ERC", "ERC vol 50%", "inverse-vol", "equal weight"]
    assert len(default_strategies(symbols=["BTC", "ETH"])) == 6


def test_a_benchmark_that_cannot_trade_says_so_instead_of_a_flat_row(tmp_path) -> None:
    from keeper.backtest_report import format_table

    panel = load_price_panel(_synthetic(tmp_path))
    # 1M of NAV into a 2M-deep pool: the whole move, its half and its quarter all miss the 50 bps slippage budget.
    shallow = run_backtest(panel, [FixedMix("BTC only", {"BTC": 1.0})], _config(pools=PoolModel(depth_usd=2e6)))
    result = shallow["results"][0]
    assert not np.any(result.weights > 0) and result.metrics["rebalances"] == 0
    reason = result.metrics["could_not_trade"]
    assert reason.startswith(f"{result.metrics['ticks']} of {result.metrics['ticks']} ticks skipped: "
                             "QuoteBelowBoundError: BTC buy leg quotes ")
    assert reason.endswith("(after 2 halvings of the step)")
    row = format_table([result]).splitlines()[2]
    assert row.startswith("BTC only            could not trade: ") and "0.0%" not in row
    # Deep pools: it trades, and the row has its figures.
    deep = run_backtest(panel, [FixedMix("BTC only", {"BTC": 1.0})], _config(pools=PoolModel(depth_usd=1e9)))
    deep = deep["results"][0]
    assert "could_not_trade" not in deep.metrics and deep.metrics["rebalances"] >= 1
    assert "could not trade" not in format_table([deep])
