"""Greek-based hedging (keeper.hedging) and implied-volatility inputs (keeper.implied_vol).

Chain-free: arrays and real market history from ``data/`` only.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keeper import options
from keeper.data import load_prices
from keeper.errors import ConfigError, InsufficientHistoryError, InvalidPriceError
from reference_estimators import ewma_covariance
from keeper.returns import simple_returns
from keeper.hedging import HedgeTriggerConfig, hedge_decision, hedge_trades
from keeper.greeks import OptionPosition, delta_adjusted_exposures, portfolio_greeks
from keeper.overlay import OverlayConfig, plan_overlay
from keeper.implied_vol import (
    DEFAULT_DVOL_CSV,
    REALISED_TO_IMPLIED_FACTOR,
    implied_vols_on,
    load_dvol,
    realised_vol_proxy,
)
from keeper.journal import Journal
from keeper.journal_records import OverlayStepRecord
from keeper.risk_contributions import relative_risk_contributions
from keeper.risk_budgeting import solve_equal_risk_contribution
from tolerances import ELEMENTARY_ULPS, U, black_scholes_two_path_bounds, gamma

NOW = 1_700_000_000
DAY = 86_400
SYMBOLS = ("BTC", "ETH", "SOL")
SPOTS = {"BTC": 60_000.0, "ETH": 3_000.0, "SOL": 150.0}
VOLS = {"BTC": 0.5, "ETH": 0.7, "SOL": 0.9}


def _book():
    return [
        OptionPosition("BTC", 55_000.0, NOW + 30 * DAY, False, 1.0),
        OptionPosition("BTC", 70_000.0, NOW + 30 * DAY, True, -0.5),
        OptionPosition("ETH", 2_800.0, NOW + 10 * DAY, False, 8.0),
    ]


# --------------------------------------------------------------------------- #
# Portfolio Greeks
# --------------------------------------------------------------------------- #
def test_portfolio_greeks_aggregate_spot_and_options_per_underlying():
    holdings = {"BTC": 1.5, "ETH": 20.0, "SOL": 100.0}
    g = portfolio_greeks(holdings, _book(), SPOTS, VOLS, NOW, r=0.04)
    assert g.symbols == SYMBOLS
    # Rebuild BTC by hand from the option functions.
    t = options.year_fraction(30 * DAY)
    put = options.greeks(60_000.0, 55_000.0, t, 0.5, 0.04, 0.0, False)
    call = options.greeks(60_000.0, 70_000.0, t, 0.5, 0.04, 0.0, True)
    # Our scalars take options' math fast path, the portfolio its array path (scipy ndtr, NumPy exp/log):
    # each Greek within black_scholes_two_path_bounds of the other path's, then 1 * put + (-0.5) * call (+ spot) summed
    # in another order: <= 3 roundings on each side, relative to the terms' absolute values.
    bp = black_scholes_two_path_bounds(60_000.0, 55_000.0, float(t), 0.5, 0.04, 0.0, False)
    bc = black_scholes_two_path_bounds(60_000.0, 70_000.0, float(t), 0.5, 0.04, 0.0, True)

    def atol(name: str, spot: float = 0.0) -> float:
        p, c = float(getattr(put, name)), float(getattr(call, name))
        return bp[name] + 0.5 * bc[name] + 2 * gamma(3) * (abs(spot) + abs(p) + 0.5 * abs(c))

    assert g.delta_units[0] == pytest.approx(1.5 + put.delta - 0.5 * call.delta, abs=atol("delta", 1.5))
    assert g.dollar_delta[0] == g.delta_units[0] * 60_000.0  # same path: delta_units * spot, exact
    assert g.gamma_units[0] == pytest.approx(put.gamma - 0.5 * call.gamma, abs=atol("gamma"))
    assert g.vega_usd[0] == pytest.approx(put.vega - 0.5 * call.vega, abs=atol("vega"))
    # v * fl(0.01) vs v / 100: 0.01's representation (U) and one rounding each.
    assert g.vega_usd_per_point[0] == pytest.approx(g.vega_usd[0] / 100.0, rel=gamma(3))
    # / 365 on both sides (one rounding each) after the same sums as above.
    assert g.theta_usd_per_day[0] == pytest.approx((put.theta - 0.5 * call.theta) / 365.0,
                                                   abs=atol("theta") / 365.0 * (1 + 2 * U))
    assert g.option_value_usd[0] == pytest.approx(put.price - 0.5 * call.price, abs=atol("price"))
    # SOL has no options: delta 1 per unit, no gamma or vega.
    assert g.delta_units[2] == 100.0 and g.gamma_units[2] == 0.0 and g.vega_usd[2] == 0.0
    np.testing.assert_allclose(delta_adjusted_exposures(g, 200_000.0), g.dollar_delta / 200_000.0)


def test_dollar_gamma_is_the_usd_value_of_the_delta_change_for_a_one_percent_move():
    holdings = {"BTC": 0.0, "ETH": 0.0, "SOL": 0.0}
    g = portfolio_greeks(holdings, _book(), SPOTS, VOLS, NOW)
    for i, sym in enumerate(SYMBOLS):
        up = portfolio_greeks(holdings, _book(), {**SPOTS, sym: SPOTS[sym] * 1.0005}, VOLS, NOW)
        down = portfolio_greeks(holdings, _book(), {**SPOTS, sym: SPOTS[sym] * 0.9995}, VOLS, NOW)
        per_one_percent = (up.delta_units[i] - down.delta_units[i]) / 0.1 * SPOTS[sym]
        assert g.dollar_gamma[i] == pytest.approx(per_one_percent, rel=1e-5, abs=1e-9)


def test_expired_options_count_at_intrinsic_with_a_step_delta():
    book = [OptionPosition("BTC", 65_000.0, NOW - DAY, False, 2.0), OptionPosition("ETH", 3_500.0, NOW, True, 1.0)]
    g = portfolio_greeks({"BTC": 0.0, "ETH": 0.0}, book, SPOTS, VOLS, NOW)
    # Exact: intrinsic values and step deltas of integers and halves are exact products and sums.
    assert g.option_value_usd.tolist() == [2.0 * 5_000.0, 0.0]
    assert g.delta_units.tolist() == [-2.0, 0.0]
    assert g.vega_usd.tolist() == [0.0, 0.0]


def test_portfolio_greeks_reject_bad_inputs():
    with pytest.raises(ConfigError, match="spots has no entry for"):
        portfolio_greeks({"BTC": 1.0, "DOGE": 1.0}, [], SPOTS, VOLS, NOW)
    with pytest.raises(ConfigError, match=r"spots\['BTC'\] is 0.0"):
        portfolio_greeks({"BTC": 1.0}, [], {"BTC": 0.0}, VOLS, NOW)
    with pytest.raises(ConfigError, match=r"vols\['BTC'\] is -0.1"):
        portfolio_greeks({"BTC": 1.0}, [], SPOTS, {"BTC": -0.1}, NOW)
    with pytest.raises(ConfigError, match="not among the assets"):
        portfolio_greeks({"BTC": 1.0}, [OptionPosition("ETH", 1.0, NOW + DAY, True, 1.0)], SPOTS, VOLS, NOW)
    with pytest.raises(ConfigError, match="strike is"):
        OptionPosition("BTC", -1.0, NOW, True, 1.0)
    with pytest.raises(ConfigError, match="nav is"):
        delta_adjusted_exposures(portfolio_greeks({"BTC": 1.0}, [], SPOTS, VOLS, NOW), 0.0)


# --------------------------------------------------------------------------- #
# Delta hedge toward the risk-parity targets
# --------------------------------------------------------------------------- #
def _real_erc_targets():
    table = load_prices(symbols=list(SYMBOLS), start=dt.date(2022, 1, 1), end=dt.date(2022, 12, 31))
    cov = ewma_covariance(simple_returns(table.prices), half_life_days=30).covariance
    return table, cov, solve_equal_risk_contribution(cov)


def test_hedged_delta_adjusted_exposures_have_equal_risk_contributions():
    table, cov, erc = _real_erc_targets()
    spots = dict(zip(SYMBOLS, table.prices[-1]))
    nav = 1_000_000.0
    cash_buffer = 0.05
    target = erc.weights * (1.0 - cash_buffer)
    # A drifted book: spot away from target and options moving each asset's delta.
    holdings = {s: 0.2 * nav / spots[s] for s in SYMBOLS}
    book = [
        OptionPosition("BTC", spots["BTC"] * 0.9, NOW + 20 * DAY, False, holdings["BTC"]),
        OptionPosition("ETH", spots["ETH"] * 1.1, NOW + 20 * DAY, True, -0.5 * holdings["ETH"]),
    ]
    g = portfolio_greeks(holdings, book, spots, VOLS, NOW)
    orders = hedge_trades(target, nav, g, band_bps=0.0)
    after = portfolio_greeks(dict(zip(SYMBOLS, orders.spot_target_units)), book, spots, VOLS, NOW)
    exposure = delta_adjusted_exposures(after, nav)
    # The same option deltas (same inputs, same path) enter the hedge and the check: spot units =
    # h + (w NAV / S - (h + o)), then (spot + o) S / NAV; <= 8 roundings, the sums cancelling, so the
    # bound is on the terms' magnitudes |w NAV / S|, |h|, |o| (in NAV fractions).
    spot_values = np.array([spots[s] for s in SYMBOLS])
    magnitudes = target + 2 * (np.abs(g.spot_units) + np.abs(g.option_delta_units)) * spot_values / nav
    assert np.all(np.abs(exposure - target) <= gamma(10) * magnitudes)
    rrc = relative_risk_contributions(exposure, cov)
    np.testing.assert_allclose(rrc, np.full(3, 1 / 3), atol=1e-8)
    np.testing.assert_allclose(orders.trade_value_usd, orders.trade_units * np.array([spots[s] for s in SYMBOLS]))


def test_hedge_trades_only_assets_outside_the_band_and_clips_negative_spot():
    nav = 300_000.0
    holdings = {"BTC": 1.0, "ETH": 30.0, "SOL": 600.0}  # 60k, 90k, 90k
    g = portfolio_greeks(holdings, [], SPOTS, VOLS, NOW)
    target = np.array([0.21, 0.30, 0.25])  # drifts: BTC -100 bps, ETH 0, SOL +500 bps
    orders = hedge_trades(target, nav, g, band_bps=200.0)
    # (h S / NAV - w) 1e4: exposures and targets <= 1, each within a few roundings (and w's literal U).
    np.testing.assert_allclose(orders.drift_bps, [-100.0, 0.0, 500.0], atol=1e4 * gamma(6))
    assert orders.trade_units[0] == 0.0 and orders.trade_units[1] == 0.0  # exact: h + 0 - h inside the band
    # (h + (w NAV / S - h)) - h: 5 roundings in all, the sums cancelling: relative to w NAV / S + 2 h.
    assert orders.trade_units[2] == pytest.approx(0.25 * nav / 150.0 - 600.0, abs=gamma(6) * (0.25 * nav / 150.0 + 1200.0))
    assert orders.any_trade
    # A short-call book whose delta exceeds the target: the long-only vault cannot sell below zero.
    book = [OptionPosition("BTC", 1.0, NOW + 30 * DAY, True, 5.0)]  # deep ITM: delta ~ 5 BTC
    orders = hedge_trades(target, nav, portfolio_greeks(holdings, book, SPOTS, VOLS, NOW), band_bps=0.0)
    assert orders.clipped.tolist() == [True, False, False]
    assert orders.spot_target_units[0] == 0.0 and orders.trade_units[0] == -1.0  # exact: max(., 0) - 1


def test_hedge_trades_reject_bad_targets():
    g = portfolio_greeks({"BTC": 1.0, "ETH": 1.0}, [], SPOTS, VOLS, NOW)
    with pytest.raises(ConfigError, match="shape"):
        hedge_trades([0.5], 1e5, g, 0.0)
    with pytest.raises(ConfigError, match=">= 0"):
        hedge_trades([0.5, -0.1], 1e5, g, 0.0)
    with pytest.raises(ConfigError, match="sum to"):
        hedge_trades([0.7, 0.7], 1e5, g, 0.0)
    with pytest.raises(ConfigError, match="band_bps"):
        hedge_trades([0.5, 0.5], 1e5, g, -1.0)


# --------------------------------------------------------------------------- #
# Option overlay
# --------------------------------------------------------------------------- #
def _overlay_inputs():
    return dict(
        symbols=SYMBOLS,
        spots=[SPOTS[s] for s in SYMBOLS],
        vols=[VOLS[s] for s in SYMBOLS],
        spot_units=[2.0, 30.0, 400.0],
        risk_contributions=[0.10, 0.25, 0.20],
        nav=300_000.0,
        now=NOW,
    )


def test_overlay_buys_25_delta_puts_on_the_largest_risk_contributors():
    plan = plan_overlay(OverlayConfig(premium_budget_bps=10_000.0), positions=[], **_overlay_inputs())
    opened = [o for o in plan.orders if o.action == "open"]
    assert [o.symbol for o in opened] == ["ETH", "SOL"]  # ranked by risk contribution, top two
    for o in opened:
        assert not o.is_call and o.quantity > 0
        assert o.expiry == NOW + 30 * DAY
        per_unit_delta = o.delta / o.quantity
        assert per_unit_delta == pytest.approx(-0.25, rel=1e-9)
    assert opened[0].quantity == pytest.approx(30.0) and opened[1].quantity == pytest.approx(400.0)
    assert plan.binding == ()
    json.dumps(plan.as_dict())


def test_overlay_scales_puts_to_the_premium_budget():
    unconstrained = plan_overlay(OverlayConfig(premium_budget_bps=10_000.0), positions=[], **_overlay_inputs())
    plan = plan_overlay(OverlayConfig(premium_budget_bps=5.0), positions=[], **_overlay_inputs())
    budget = 5.0 * 300_000.0 / 10_000
    assert budget * (1 - 1e-8) <= plan.put_premium_usd <= budget
    assert unconstrained.put_premium_usd > budget
    assert "premium_budget" in plan.binding


def test_overlay_rolls_series_before_expiry_and_keeps_the_others():
    near = OptionPosition("ETH", 2_700.0, NOW + 2 * DAY, False, 30.0)
    far = OptionPosition("SOL", 130.0, NOW + 20 * DAY, False, 400.0)
    plan = plan_overlay(OverlayConfig(premium_budget_bps=10_000.0, roll_before_days=5), positions=[near, far], **_overlay_inputs())
    closes = [o for o in plan.orders if o.action == "close"]
    assert len(closes) == 1 and closes[0].symbol == "ETH" and closes[0].quantity == -30.0
    assert closes[0].reason.startswith("roll")
    opened = [o for o in plan.orders if o.action == "open"]
    assert [o.symbol for o in opened] == ["ETH"]  # SOL keeps its put, ETH rolls to a new 30-day one
    assert far in plan.positions_after and near not in plan.positions_after


def test_overlay_covered_calls_never_exceed_spot_and_series_are_capped():
    config = OverlayConfig(premium_budget_bps=10_000.0, covered_calls=True, call_delta=0.2, call_ratio=0.5, max_open_series=4)
    plan = plan_overlay(config, positions=[], **_overlay_inputs())
    calls = [o for o in plan.orders if o.is_call]
    assert len(plan.positions_after) == 4
    units = dict(zip(SYMBOLS, _overlay_inputs()["spot_units"]))
    for o in calls:
        assert -units[o.symbol] <= o.quantity < 0
        assert o.delta / o.quantity == pytest.approx(0.2, rel=1e-9)
    assert plan.call_premium_usd > 0


budgets = st.one_of(st.just(math.inf), st.floats(0.0, 5_000.0))


@settings(max_examples=150, deadline=None)
@given(
    spots=st.lists(st.floats(1.0, 100_000.0), min_size=3, max_size=3),
    vols=st.lists(st.floats(0.1, 2.0), min_size=3, max_size=3),
    values=st.lists(st.floats(0.0, 500_000.0), min_size=3, max_size=3),
    rc=st.lists(st.floats(0.0, 1.0), min_size=3, max_size=3),
    existing=st.lists(
        st.tuples(st.integers(0, 2), st.floats(0.5, 1.5), st.integers(-3, 60), st.booleans(), st.floats(-3.0, 3.0)),
        max_size=4,
    ),
    vega_asset=budgets, vega_total=budgets, gamma_asset=budgets, gamma_total=budgets,
    premium_bps=st.floats(0.0, 500.0),
    covered=st.booleans(),
)
def test_overlay_plan_never_breaches_vega_gamma_or_premium_budgets(
    spots, vols, values, rc, existing, vega_asset, vega_total, gamma_asset, gamma_total, premium_bps, covered
):
    units = [v / s for v, s in zip(values, spots)]
    nav = sum(values) + 10_000.0
    book = [
        OptionPosition(SYMBOLS[i], spots[i] * m, NOW + days * DAY, is_call, q * max(units[i], 0.01))
        for i, m, days, is_call, q in existing
    ]
    config = OverlayConfig(
        premium_budget_bps=premium_bps, covered_calls=covered,
        vega_budget_per_asset_usd=vega_asset, vega_budget_total_usd=vega_total,
        gamma_budget_per_asset_usd=gamma_asset, gamma_budget_total_usd=gamma_total,
    )
    plan = plan_overlay(
        config, symbols=SYMBOLS, spots=spots, vols=vols, spot_units=units, risk_contributions=rc,
        nav=nav, positions=book, now=NOW,
    )
    # Independent check: Greeks of the resulting book through portfolio_greeks.
    after = portfolio_greeks(dict.fromkeys(SYMBOLS, 0.0), list(plan.positions_after), dict(zip(SYMBOLS, spots)),
                             dict(zip(SYMBOLS, vols)), NOW)
    # Within every budget; 1e-12 USD absolute slack only for float underflow (hypothesis tries
    # subnormal budgets and quantities, where no relative margin survives rounding).
    vega = np.abs(after.vega_usd_per_point)
    gamma = np.abs(after.dollar_gamma)
    usd = 1e-12
    assert (vega <= vega_asset + usd).all() and vega.sum() <= vega_total + usd
    assert (gamma <= gamma_asset + usd).all() and gamma.sum() <= gamma_total + usd
    assert plan.put_premium_usd <= premium_bps * nav / 10_000 + usd
    assert len(plan.positions_after) <= max(config.max_open_series, len(book))
    assert all(p.expiry - NOW > config.roll_before_days * DAY for p in plan.positions_after)
    for o in plan.orders:
        if o.action == "open" and o.is_call:
            assert -units[SYMBOLS.index(o.symbol)] <= o.quantity <= 0.0


def test_overlay_reduces_a_kept_book_that_already_breaches_its_budget():
    big = OptionPosition("ETH", 3_000.0, NOW + 20 * DAY, False, 300.0)
    plan = plan_overlay(OverlayConfig(vega_budget_per_asset_usd=100.0), positions=[big], **_overlay_inputs())
    reduce = [o for o in plan.orders if o.action == "reduce"]
    assert len(reduce) == 1 and reduce[0].quantity < 0
    assert abs(plan.vega_usd_per_point[1]) <= 100.0
    assert "kept_book_over_budget:ETH" in plan.binding


def test_overlay_config_is_validated():
    with pytest.raises(ConfigError, match="put_delta"):
        OverlayConfig(put_delta=0.25)
    with pytest.raises(ConfigError, match="tenor_days"):
        OverlayConfig(tenor_days=3, roll_before_days=5)
    with pytest.raises(ConfigError, match="vega_budget_total_usd"):
        OverlayConfig(vega_budget_total_usd=-1.0)
    with pytest.raises(ConfigError, match="spot_units"):
        plan_overlay(OverlayConfig(), positions=[], **{**_overlay_inputs(), "spot_units": [-1.0, 0.0, 0.0]})


# --------------------------------------------------------------------------- #
# Triggers and the journal
# --------------------------------------------------------------------------- #
def _greeks_at(vols):
    return portfolio_greeks({"BTC": 1.0, "ETH": 30.0, "SOL": 600.0}, [], SPOTS, dict(zip(SYMBOLS, vols)), NOW)


def test_trigger_on_delta_drift_trades_only_the_drifted_asset():
    config = HedgeTriggerConfig(delta_band_bps=200.0, max_interval_seconds=7 * DAY, iv_move_points=5.0)
    d = hedge_decision(config, greeks=_greeks_at([0.5, 0.7, 0.9]), target_exposure_weights=[0.21, 0.30, 0.25],
                       nav=300_000.0, now=NOW, last_hedge_at=NOW - DAY, iv_at_last_hedge=[0.5, 0.7, 0.9])
    assert d.hedge and d.reasons == ("delta_drift:SOL",)
    assert d.orders.trade_units[0] == 0.0 and d.orders.trade_units[2] != 0.0


def test_trigger_on_time_or_iv_move_rehedges_every_asset_and_nothing_fires_inside_the_band():
    config = HedgeTriggerConfig(delta_band_bps=200.0, max_interval_seconds=7 * DAY, iv_move_points=5.0)
    target = [0.21, 0.30, 0.29]  # drifts -100, 0, +100 bps: inside the band
    quiet = hedge_decision(config, greeks=_greeks_at([0.5, 0.7, 0.9]), target_exposure_weights=target,
                           nav=300_000.0, now=NOW, last_hedge_at=NOW - DAY, iv_at_last_hedge=[0.5, 0.7, 0.9])
    assert not quiet.hedge and quiet.reasons == () and not quiet.orders.any_trade
    timed = hedge_decision(config, greeks=_greeks_at([0.5, 0.7, 0.9]), target_exposure_weights=target,
                           nav=300_000.0, now=NOW, last_hedge_at=NOW - 8 * DAY, iv_at_last_hedge=[0.5, 0.7, 0.9])
    assert timed.hedge and timed.reasons == ("time",)
    assert timed.orders.trade_units[0] != 0.0 and timed.orders.trade_units[2] != 0.0
    moved = hedge_decision(config, greeks=_greeks_at([0.56, 0.7, 0.9]), target_exposure_weights=target,
                           nav=300_000.0, now=NOW, last_hedge_at=NOW - DAY, iv_at_last_hedge=[0.5, 0.7, 0.9])
    assert moved.reasons == ("iv_move:BTC",)
    assert moved.iv_move_points[0] == pytest.approx(6.0)
    never = hedge_decision(config, greeks=_greeks_at([0.5, 0.7, 0.9]), target_exposure_weights=target,
                           nav=300_000.0, now=NOW, last_hedge_at=None, iv_at_last_hedge=None)
    assert "time" in never.reasons
    with pytest.raises(ConfigError, match="clock went backwards"):
        hedge_decision(config, greeks=_greeks_at([0.5, 0.7, 0.9]), target_exposure_weights=target,
                       nav=300_000.0, now=NOW, last_hedge_at=NOW + 1, iv_at_last_hedge=None)
    with pytest.raises(ConfigError, match="delta_band_bps"):
        HedgeTriggerConfig(delta_band_bps=0.0)


def test_hedge_decision_lands_in_the_journal_with_its_greeks():
    d = hedge_decision(HedgeTriggerConfig(), greeks=portfolio_greeks({"BTC": 1.0, "ETH": 30.0, "SOL": 600.0}, _book(),
                       SPOTS, VOLS, NOW), target_exposure_weights=[0.3, 0.3, 0.3], nav=300_000.0, now=NOW,
                       last_hedge_at=NOW - DAY, iv_at_last_hedge=[0.5, 0.7, 0.9])
    journal = Journal(":memory:")
    journal.record_overlay_step(OverlayStepRecord(status="traded" if d.hedge else "skipped", reason=",".join(d.reasons),
                                                  hedge_decision=d.as_dict()))
    row = journal.overlay_steps()[0].record.hedge_decision
    assert row["reasons"] == list(d.reasons)
    assert row["greeks"]["BTC"]["dollar_gamma"] == pytest.approx(float(d.greeks.dollar_gamma[0]))
    assert row["greeks"]["ETH"]["vega_usd_per_point"] == pytest.approx(float(d.greeks.vega_usd_per_point[1]))
    assert row["assets"]["SOL"]["trade_units"] == pytest.approx(float(d.orders.trade_units[2]))


# --------------------------------------------------------------------------- #
# Implied-volatility inputs
# --------------------------------------------------------------------------- #
def test_dvol_series_is_daily_with_gaps_filled_forward_and_flagged():
    series = load_dvol()
    with open(DEFAULT_DVOL_CSV, newline="") as handle:
        rows = [(dt.date.fromisoformat(r[0]), float(r[1])) for r in list(csv.reader(handle))[1:]]
    assert len(rows) == 1594
    assert series.dates[0] == rows[0][0] and series.dates[-1] == rows[-1][0]
    assert len(series.dates) == (rows[-1][0] - rows[0][0]).days + 1
    assert int(series.filled.sum()) == 260 == len(series.dates) - len(rows)
    known = dict(rows)
    for i, day in enumerate(series.dates):
        if day in known:
            assert not series.filled[i] and series.vols[i] == known[day] / 100.0  # same path: one division
        else:
            assert series.filled[i] and series.vols[i] == series.vols[i - 1]  # exact: a copy
    assert not series.derived and series.source == "deribit_dvol"
    gap_day = series.dates[int(np.argmax(series.filled))]
    assert series.on(gap_day)[1] is True
    with pytest.raises(InsufficientHistoryError):
        series.on(dt.date(2020, 1, 1))
    assert series.on(dt.date(2030, 1, 1)) == (float(series.vols[-1]), True)


def test_dvol_loader_rejects_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_dvol(tmp_path / "missing.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("date,BTC_DVOL\n2024-01-01,50\n2024-01-03,-4\n")
    with pytest.raises(InvalidPriceError, match="positive"):
        load_dvol(bad)
    bad.write_text("date,BTC_DVOL\n2024-01-02,50\n2024-01-01,40\n")
    with pytest.raises(ConfigError, match="strictly increase"):
        load_dvol(bad)
    bad.write_text("day,BTC_DVOL\n")
    with pytest.raises(ConfigError, match="header"):
        load_dvol(bad)


def test_realised_proxy_is_derived_and_the_factor_is_the_btc_implied_to_realised_ratio():
    table = load_prices(symbols=["BTC", "ETH"])
    proxy = realised_vol_proxy(table, "ETH")
    assert proxy.derived and proxy.source == "realised_30d_x1.2"
    # Value on one day by hand: 30 log returns ending that day.
    t = 400
    closes = table.prices[t - 30 : t + 1, 1]
    r = np.diff(np.log(closes))
    expected = 1.2 * math.sqrt(np.mean(r**2) * 365)
    # Two log evaluations (NumPy's strided and contiguous loops may differ: ELEMENTARY_ULPS each) whose
    # difference cancels: r_s within 2 ELEMENTARY_ULPS U (|ln P_s| + |ln P_s-1|) + U |r_s| on each path; the
    # 30-term sums of squares (gamma(31) each), halved by the sqrt, and <= 5 more roundings.
    log_abs = np.abs(np.log(closes))
    r_err = 2 * ELEMENTARY_ULPS * U * (log_abs[1:] + log_abs[:-1]) + U * np.abs(r)
    sum_rel = (2 * float(np.sum(2 * np.abs(r) * r_err)) / float(np.sum(r**2))) + 2 * gamma(31)
    assert proxy.on(table.dates[t])[0] == pytest.approx(expected, rel=0.5 * sum_rel + 10 * U)
    # The default factor is the median DVOL / realised ratio on BTC (1.199 on the shipped files).
    btc = realised_vol_proxy(table, "BTC", factor=1.0)
    dvol = load_dvol()
    ratios = [dvol.vols[i] / btc.on(day)[0] for i, day in enumerate(dvol.dates)
              if not dvol.filled[i] and btc.dates[0] <= day <= btc.dates[-1]]
    assert float(np.median(ratios)) == pytest.approx(REALISED_TO_IMPLIED_FACTOR, abs=0.01)
    with pytest.raises(ConfigError, match="no prices"):
        realised_vol_proxy(table, "DOGE")


def test_implied_vols_on_uses_dvol_for_btc_and_the_proxy_elsewhere():
    table = load_prices(symbols=["BTC", "ETH", "SOL"])
    dvol = load_dvol()
    day = dt.date(2022, 6, 15)
    vols, filled, derived = implied_vols_on(day, ("BTC", "ETH", "SOL"), table, dvol)
    assert vols[0] == dvol.on(day)[0] and not derived[0]  # same path: the DVOL value itself
    assert derived[1] and derived[2] and (vols > 0.1).all()
    # Before DVOL starts, BTC falls back to the proxy and says so.
    vols, _, derived = implied_vols_on(dt.date(2021, 1, 15), ("BTC",), table, dvol)
    assert derived[0]


# --------------------------------------------------------------------------- #
# The hedge serves the budget: protection held, budgets never breached
# --------------------------------------------------------------------------- #
_moves = st.lists(st.floats(-0.6, 0.6), min_size=3, max_size=3)


@settings(max_examples=300, deadline=None)
@given(
    units=st.lists(st.floats(0.0, 50.0), min_size=3, max_size=3),
    put_moneyness=st.lists(st.one_of(st.none(), st.floats(0.6, 1.2)), min_size=3, max_size=3),
    put_ratio=st.floats(0.05, 1.0),
    weights=st.lists(st.floats(0.0, 1.0), min_size=3, max_size=3),
    moves=_moves,
    vol_moves=st.lists(st.floats(-0.3, 0.8), min_size=3, max_size=3),
    band_bps=st.floats(0.0, 500.0),
    per_asset=st.one_of(st.just(math.inf), st.floats(0.02, 1.0)),
    total=st.one_of(st.just(math.inf), st.floats(0.02, 1.0)),
    spot_scale=st.floats(0.0, 1.0),
    elapsed_days=st.floats(0.0, 20.0),
)
def test_budget_hedge_never_buys_back_protection_and_keeps_the_delta_budgets(
        units, put_moneyness, put_ratio, weights, moves, vol_moves, band_bps, per_asset, total, spot_scale,
        elapsed_days):
    spots0 = np.array([SPOTS[s] for s in SYMBOLS])
    vols0 = np.array([VOLS[s] for s in SYMBOLS])
    book = [OptionPosition(s, float(spots0[i] * m), NOW + 40 * DAY, False, put_ratio * units[i] + 1e-3)
            for i, (s, m) in enumerate(zip(SYMBOLS, put_moneyness)) if m is not None]
    from keeper.greeks import protective_delta_units

    at_last_hedge = protective_delta_units(book, SYMBOLS, spots0, vols0, NOW)
    later = NOW + int(elapsed_days * DAY)
    spots1 = spots0 * (1.0 + np.array(moves))
    vols1 = vols0 * (1.0 + np.array(vol_moves))
    g = portfolio_greeks(dict(zip(SYMBOLS, units)), book, dict(zip(SYMBOLS, spots1)), dict(zip(SYMBOLS, vols1)),
                         later)
    now_delta = protective_delta_units(book, SYMBOLS, spots1, vols1, later)
    nav = float(np.dot(units, spots1)) + float(g.option_value_usd.sum()) + 10_000.0
    w = np.array(weights)
    w = w / max(w.sum(), 1.0)
    config = HedgeTriggerConfig(delta_band_bps=max(band_bps, 1e-6), mode="budget", max_net_delta_per_asset=per_asset,
                                max_net_delta_total=total)
    d = hedge_decision(config, greeks=g, target_exposure_weights=w, nav=nav, now=later, last_hedge_at=NOW,
                       iv_at_last_hedge=vols0, protective_delta_units=now_delta,
                       protective_delta_at_last_hedge=at_last_hedge, spot_scale=spot_scale)
    o = d.orders
    assert (o.spot_target_units >= 0.0).all()
    net_before = g.delta_units
    net_after = o.spot_target_units + g.option_delta_units
    gained = now_delta < at_last_hedge
    # Protection held: where the puts gained delta, the hedge never raises the net delta (it never buys spot).
    assert (o.trade_units[gained] <= 0.0).all(), (o.trade_units, gained)
    assert (net_after[gained] <= net_before[gained]).all()
    # Budgets: each net delta within its budget unless spot is already sold to 0 (the options' delta alone is the
    # overlay's to reduce); the sum likewise. The margin is the 1e-9 relative margin the hedge keeps, and the
    # sum's float rounding (3 terms of NAV size: a few ulps of NAV).
    slack = 1e-9 * nav + 8 * np.finfo(float).eps * nav
    net_usd = net_after * spots1
    ok_asset = (net_usd <= per_asset * nav + slack) | (o.spot_target_units == 0.0)
    assert ok_asset.all(), (net_usd / nav, per_asset)
    assert net_usd.sum() <= total * nav + slack or (o.spot_target_units == 0.0).all() \
        or float(np.dot(g.option_delta_units, spots1)) > total * nav


def test_budget_mode_holds_a_put_that_gained_delta_where_delta_target_buys_it_back():
    # One asset, spot at its 50 % target and a 25-delta put; the price falls 20 %: the put gains delta.
    spot0, vol = 60_000.0, 0.6
    strike = float(options.strike_for_delta(-0.25, spot0, 30 / 365, vol, is_call=False))
    book = [OptionPosition("BTC", strike, NOW + 30 * DAY, False, 8.0)]
    from keeper.greeks import protective_delta_units

    before = protective_delta_units(book, ["BTC"], [spot0], [vol], NOW)
    spot1 = 0.8 * spot0
    g = portfolio_greeks({"BTC": 8.0}, book, {"BTC": spot1}, {"BTC": vol}, NOW + DAY)
    nav = 8.0 * spot1 / 0.45  # spot is 45 % of NAV after the fall: below its 50 % target
    after = protective_delta_units(book, ["BTC"], [spot1], [vol], NOW + DAY)
    assert after[0] < before[0]
    old = hedge_trades([0.5], nav, g, 0.0, mode="delta_target")
    assert old.trade_units[0] > 0.0  # buys spot against the put's delta: the protection is undone
    new = hedge_trades([0.5], nav, g, 0.0, mode="budget", protective_delta_units=after,
                       protective_delta_at_last_hedge=before)
    assert new.trade_units[0] == 0.0 and new.blocked[0]
    # Without puts gaining delta, the budget mode rebalances spot to its weight (options not offset).
    free = hedge_trades([0.5], nav, g, 0.0, mode="budget")
    assert free.spot_target_weights[0] == pytest.approx(0.5, rel=1e-12)
    with pytest.raises(ConfigError, match="mode"):
        HedgeTriggerConfig(mode="gamma_parity")
    with pytest.raises(ConfigError, match="max_net_delta_total"):
        HedgeTriggerConfig(max_net_delta_total=0.0)


# --------------------------------------------------------------------------- #
# The overlay as insurance: ES-driven assets, cost per unit of ES removed, pacing, monetisation
# --------------------------------------------------------------------------- #
def _scenarios(seed: int = 5, n: int = 400) -> np.ndarray:
    rng = np.random.default_rng(seed)
    cov = np.array([[0.0016, 0.0012, 0.0013], [0.0012, 0.0020, 0.0015], [0.0013, 0.0015, 0.0030]])
    return np.clip(rng.standard_t(4, size=(n, 3)) / math.sqrt(2.0) @ np.linalg.cholesky(cov).T, -0.6, 2.0)


def _insurance(**kw) -> OverlayConfig:
    base = dict(put_deltas=(-0.10, -0.15, -0.20, -0.25), tenors_days=(30.0, 60.0, 90.0), roll_before_days=7.0,
                premium_budget_bps=10_000.0, max_put_assets=1, hedge_ratio=1.0, premium_budget_bps_per_year=500.0)
    return OverlayConfig(**{**base, **kw})


def test_insurance_overlay_picks_the_cheapest_put_per_unit_of_es_on_the_es_driver():
    from keeper.book_risk import RiskModelConfig, book_risk

    spots = np.array([SPOTS[s] for s in SYMBOLS])
    vols = np.array([VOLS[s] for s in SYMBOLS])
    units = np.array([2.0, 40.0, 900.0])  # SOL (the most volatile, 135k USD) drives the ES
    nav = float(units @ spots) + 50_000.0
    sc = _scenarios()
    risk = book_risk(RiskModelConfig(), symbols=SYMBOLS, spots=spots, vols=vols, spot_units=units, positions=[],
                     scenarios=sc, nav=nav, now=NOW)
    driver = int(np.argmax(risk.asset_es_contributions))
    plan = plan_overlay(_insurance(), symbols=SYMBOLS, spots=spots, vols=vols, spot_units=units,
                        risk_contributions=risk.asset_es_contributions, nav=nav, positions=[], now=NOW, scenarios=sc)
    (order,) = plan.orders
    assert order.symbol == SYMBOLS[driver] and order.quantity > 0 and not order.is_call
    choices = [c for c in plan.choices if c["symbol"] == SYMBOLS[driver]]
    assert len(choices) == 12 and sum(c["chosen"] for c in choices) == 1
    chosen = next(c for c in choices if c["chosen"])
    assert chosen["cost_per_es_usd"] == min(c["cost_per_es_usd"] for c in choices)
    assert all(c["es_after_usd"] < c["es_before_usd"] == risk.es for c in choices)
    # The premium pace: 500 bps a year over the days held (tenor less the roll) for the one put asset.
    held = chosen["tenor_days"] - 7.0
    assert order.premium_usd <= 500.0 / 1e4 * nav * held / 365.0 * (1 + 1e-12)
    assert order.expiry == NOW + int(round(chosen["tenor_days"] * DAY))


def test_insurance_overlay_monetises_a_deep_put_and_restrikes_it():
    spots = np.array([SPOTS[s] for s in SYMBOLS])
    vols = np.array([VOLS[s] for s in SYMBOLS])
    units = np.array([2.0, 40.0, 900.0])
    deep = OptionPosition("BTC", 90_000.0, NOW + 40 * DAY, False, 2.0)  # strike 1.5x spot: delta near -1
    nav = float(units @ spots)
    rc = np.array([3.0, 2.0, 1.0])  # BTC first
    held = plan_overlay(_insurance(monetise_delta=None), symbols=SYMBOLS, spots=spots, vols=vols, spot_units=units,
                        risk_contributions=rc, nav=nav, positions=[deep], now=NOW)
    assert not held.orders  # held to its roll, and the one put asset already has its put
    plan = plan_overlay(_insurance(monetise_delta=0.7), symbols=SYMBOLS, spots=spots, vols=vols, spot_units=units,
                        risk_contributions=rc, nav=nav, positions=[deep], now=NOW)
    close, reopen = plan.orders
    assert close.action == "close" and close.reason.startswith("monetise") and close.quantity == -2.0
    assert close.premium_usd < 0 and -close.premium_usd > 2.0 * (90_000.0 - SPOTS["BTC"])  # sold above intrinsic
    assert reopen.action == "open" and reopen.symbol == "BTC" and reopen.strike < SPOTS["BTC"]


def test_overlay_keeps_at_most_max_put_assets_with_puts():
    spots = np.array([SPOTS[s] for s in SYMBOLS])
    vols = np.array([VOLS[s] for s in SYMBOLS])
    units = np.array([2.0, 40.0, 900.0])
    kept = OptionPosition("SOL", 120.0, NOW + 40 * DAY, False, 100.0)
    # The ranking now puts BTC first and ETH second; SOL still holds its put: one more asset at most (two in all).
    plan = plan_overlay(_insurance(max_put_assets=2), symbols=SYMBOLS, spots=spots, vols=vols, spot_units=units,
                        risk_contributions=np.array([3.0, 2.0, 1.0]), nav=float(units @ spots), positions=[kept],
                        now=NOW)
    assert [o.symbol for o in plan.orders] == ["BTC"]


@pytest.mark.parametrize("greek", ["vega", "gamma"])
def test_overlay_parity_equalises_the_put_sleeves_greek(greek):
    spots = np.array([SPOTS[s] for s in SYMBOLS])
    vols = np.array([VOLS[s] for s in SYMBOLS])
    units = np.array([2.0, 40.0, 900.0])
    cfg = _insurance(max_put_assets=3, premium_budget_bps_per_year=None, put_deltas=(-0.2,), tenors_days=(30.0,))
    free = plan_overlay(cfg, symbols=SYMBOLS, spots=spots, vols=vols, spot_units=units,
                        risk_contributions=np.array([3.0, 2.0, 1.0]), nav=float(units @ spots), positions=[], now=NOW)
    plan = plan_overlay(dataclasses.replace(cfg, parity=greek), symbols=SYMBOLS, spots=spots, vols=vols,
                        spot_units=units, risk_contributions=np.array([3.0, 2.0, 1.0]), nav=float(units @ spots),
                        positions=[], now=NOW)
    level = [o.vega_usd_per_point if greek == "vega" else o.dollar_gamma for o in plan.orders]
    free_level = [o.vega_usd_per_point if greek == "vega" else o.dollar_gamma for o in free.orders]
    assert len(level) == 3 and max(level) > 0
    # Equal to the smallest unconstrained level (relative float error of a product and a quotient: a few ulps).
    np.testing.assert_allclose(level, min(free_level), rtol=8 * np.finfo(float).eps)
    assert all(p.quantity <= f.quantity for p, f in zip(plan.orders, free.orders))
    with pytest.raises(ConfigError, match="parity"):
        OverlayConfig(parity="delta")
