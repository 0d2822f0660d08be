"""Rebalance triggers, the cost-aware gate and the cost model (pure functions, no chain)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keeper.costs import PIPS, GasModel, PoolModel, amount_out_exact_input, quote_leg, rebalance_cost
from keeper.errors import ConfigError, SingularCovarianceError
from keeper.oracle import PriceSnapshot, RiskAssetInfo, VaultState
from keeper.planner import SwapLeg, plan_rebalance, value_of
from tolerances import U, gamma
from keeper.triggers import (
    TriggerPolicy,
    apply_cost_gate,
    check_triggers,
    covariance_distance,
    expected_risk_benefit,
    rrc_drift,
    tracking_variance,
    weight_drift_bps,
)

COV = np.array([[0.36, 0.18, 0.12], [0.18, 0.64, 0.20], [0.12, 0.20, 1.00]])


def _random_spd(rng: np.random.Generator, n: int) -> np.ndarray:
    a = rng.normal(size=(n, n))
    return a @ a.T + n * np.eye(n) * 0.1


# --------------------------------------------------------------------------- costs
def test_constant_product_output_keeps_the_invariant_and_rounds_against_the_trader() -> None:
    x, y = 10**24, 5 * 10**13
    for dx in (1, 10**15, 10**21, 10**24):
        dy = amount_out_exact_input(dx, x, y, 500)
        dx_net = dx * (PIPS - 500) // PIPS
        # k never decreases, and one more unit of output would break it.
        assert (x + dx_net) * (y - dy) >= x * y
        assert (x + dx_net) * (y - dy - 1) < x * y


def test_constant_product_output_is_the_fee_free_formula_at_zero_fee() -> None:
    assert amount_out_exact_input(1000, 1000, 1000, 0) == 500
    assert amount_out_exact_input(0, 1000, 1000, 500) == 0


@pytest.mark.parametrize("args", [(-1, 10, 10, 500), (1, 0, 10, 500), (1, 10, 0, 500), (1, 10, 10, PIPS)])
def test_constant_product_rejects_bad_inputs(args) -> None:
    with pytest.raises(ConfigError):
        amount_out_exact_input(*args)


def test_pool_depth_follows_the_square_root_of_price_at_constant_liquidity() -> None:
    pool = PoolModel(depth_usd=1e6, liquidity="constant_liquidity", seed_prices_usd={"BTC": 100.0})
    assert pool.base_reserve_usd("BTC", 400.0) == pytest.approx(2e6)
    assert PoolModel(depth_usd=1e6).base_reserve_usd("BTC", 400.0) == 1e6
    risk, base = pool.reserves("BTC", 400 * 10**8, 8, 18, 6)
    assert base == 2 * 10**12
    assert risk == 5_000 * 10**18  # 2M USD of base at 400 USD: 5,000 whole tokens


@pytest.mark.parametrize("kwargs", [dict(liquidity="x"), dict(fee_pips=-1), dict(depth_usd=0.0),
                                    dict(seed_prices_usd={"BTC": -1.0})])
def test_pool_model_rejects_bad_parameters(kwargs) -> None:
    with pytest.raises(ConfigError):
        PoolModel(**kwargs)


def test_leg_quote_splits_the_shortfall_into_fee_and_impact() -> None:
    info = RiskAssetInfo("T", "BTC", "F", 18, 8, 86400, 500)
    answer = 50_000 * 10**8
    pool = PoolModel(depth_usd=10e6)
    reserves = pool.reserves("BTC", answer, 8, 18, 6)

    def val(amount: int) -> int:
        return value_of(amount, answer, info, 6)

    amount = 10 * 10**18  # 10 BTC = 500k USD into a 10M-deep pool
    fair = val(amount)
    sell = SwapLeg("BTC", "sell", "T", "B", amount, 0, fair, fair)
    q = quote_leg(sell, reserves, 500, val)
    assert q.amount_out == amount_out_exact_input(amount, *reserves, 500)
    assert q.fee + q.impact == fair - q.amount_out
    assert q.fee == pytest.approx(fair * 5e-4, rel=1e-6)
    # Impact of a constant-product pool: about size / (depth + size) of the trade.
    assert q.impact / fair == pytest.approx(0.5e6 / 10.5e6, rel=2e-3)

    spend = 500_000 * 10**6
    buy = SwapLeg("BTC", "buy", "B", "T", spend, 0, 10 * 10**18, spend)
    qb = quote_leg(buy, reserves, 500, val)
    assert qb.fee == spend * 500 // PIPS
    assert qb.fee + qb.impact == pytest.approx(spend - val(qb.amount_out), abs=1)


def test_gas_cost_is_fixed_plus_per_leg_at_the_gas_and_eth_prices() -> None:
    gas = GasModel(fixed_units=317_000, per_leg_units=97_000, base_fee_gwei=20, priority_fee_gwei=1)
    assert gas.gas_units(0) == 0
    assert gas.gas_units(4) == 317_000 + 4 * 97_000
    assert gas.cost_usd(4, 3_000.0) == pytest.approx(705_000 * 21e-9 * 3_000)
    assert GasModel(eth_price_usd=1_000.0).cost_usd(1, 3_000.0) == pytest.approx(414_000 * 21e-9 * 1_000)
    cost = rebalance_cost([], gas, 3_000.0, 6)
    assert cost.total == 0 and cost.gas_units == 0
    with pytest.raises(ConfigError):
        GasModel(base_fee_gwei=-1.0)


# --------------------------------------------------------------------------- triggers
def test_weight_drift_is_the_planners_drift_to_the_bit() -> None:
    infos = [RiskAssetInfo(s, s, s, 18, 8, 86400, 500) for s in ("A", "B", "C")]
    answers = (30_000 * 10**8, 2_000 * 10**8, 40 * 10**8)
    balances = (3 * 10**18, 100 * 10**18, 5_000 * 10**18)
    base = 17_000 * 10**6
    values = [value_of(b, a, i, 6) for b, a, i in zip(balances, answers, infos)]
    nav = base + sum(values)
    snapshot = PriceSnapshot(answers, np.array([30_000.0, 2_000.0, 40.0]), np.zeros(3, dtype=np.int64),
                             (0, 0, 0), 1, 1)
    state = VaultState("B", 6, base, balances, nav, 0, 0, False, 100, 10_000, 200)
    sleeve = np.array([0.2, 0.3, 0.5])
    plan = plan_rebalance(snapshot, state, infos, sleeve, cash_buffer_bps=500.0, slippage_budget_bps=50,
                          drift_threshold_bps=0.0, min_trade_value=0, deadline=0)
    current = np.array(values, dtype=np.float64) / nav
    # Same path, to the bit: the planner's own expressions for the targets (w (1 - 500/10^4)) and the cash
    # target (1 - (1 - 500/10^4), not the literal 0.05, which differs from it by an ulp).
    risky = 1.0 - 500.0 / 10_000
    ours = weight_drift_bps(current, sleeve * risky, base / nav, 1.0 - risky)
    assert ours == plan.drift_bps
    assert weight_drift_bps([0.5, 0.5], [0.5, 0.4]) == pytest.approx(1000.0)


def test_rrc_drift_is_zero_at_the_target_and_scale_free() -> None:
    w = np.array([0.5, 0.3, 0.2])
    assert rrc_drift(w, w, COV) == 0.0  # same path on the same weights: exact
    # Cash does not change RRC: exact, as w * 0.5 and its sum scale by a power of two, so the sleeve
    # w / sum(w) is the same double and the rest is the same path.
    assert rrc_drift(w * 0.5, w, COV) == 0.0
    assert rrc_drift(w, np.array([0.2, 0.3, 0.5]), COV) > 0.05
    assert rrc_drift(np.zeros(3), w, COV) == 1.0
    assert rrc_drift(np.zeros(3), np.zeros(3), COV) == 0.0
    with pytest.raises(ConfigError):
        rrc_drift(w[:2], w, COV)


@settings(max_examples=40, deadline=None)
@given(k=st.floats(0.2, 5.0), seed=st.integers(0, 10_000))
def test_covariance_distance_is_affine_invariant_and_reads_as_a_log_variance_ratio(k: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    a = _random_spd(rng, 4)
    # All variances scaled by k^2: distance 2|ln k| whatever A is.
    assert covariance_distance(a, a * k * k) == pytest.approx(2 * abs(math.log(k)), abs=1e-9)
    b = _random_spd(rng, 4)
    m = rng.normal(size=(4, 4)) + 4 * np.eye(4)
    d = covariance_distance(a, b)
    assert covariance_distance(m @ a @ m.T, m @ b @ m.T) == pytest.approx(d, rel=1e-6, abs=1e-9)
    assert covariance_distance(b, a) == pytest.approx(d, rel=1e-9, abs=1e-12)
    assert covariance_distance(a, a) == pytest.approx(0.0, abs=1e-9)


def test_covariance_distance_rejects_singular_and_mismatched_matrices() -> None:
    with pytest.raises(SingularCovarianceError):
        covariance_distance(np.ones((2, 2)), np.eye(2))
    with pytest.raises(SingularCovarianceError):
        covariance_distance(np.eye(2), -np.eye(2))
    with pytest.raises(ConfigError):
        covariance_distance(np.eye(2), np.eye(3))


def test_risk_benefit_is_the_utility_loss_of_the_tracking_variance() -> None:
    target = np.array([0.4, 0.35, 0.2])
    current = np.array([0.5, 0.3, 0.15])
    te2 = tracking_variance(current, target, COV)
    benefit = expected_risk_benefit(current, target, target, COV, nav=1e12, risk_aversion=4.0, horizon_seconds=73 * 86_400)
    assert benefit == pytest.approx(1e12 * 2.0 * te2 * 0.2)
    # Mean-variance identity behind it: U(w*) - U(w) = lambda/2 TE^2 when mu = lambda Sigma w*.
    lam = 4.0
    mu = lam * COV @ target

    def utility(w: np.ndarray) -> float:
        return float(mu @ w - 0.5 * lam * w @ COV @ w)

    # Two utilities (a 3-term dot gamma(3) |mu||w|, a quadratic form gamma(6) |w|'|S||w|, 3 more roundings
    # each) whose difference cancels, against lambda/2 d'Sd with d = current - target (U |d| each, then
    # the form): absolute bounds on the terms' magnitudes.
    d = current - target
    terms = sum(np.abs(mu) @ np.abs(w) + 0.5 * lam * np.abs(w) @ np.abs(COV) @ np.abs(w) for w in (target, current))
    atol = gamma(9) * terms + 0.5 * lam * gamma(9) * float(np.abs(d) @ np.abs(COV) @ np.abs(d))
    assert utility(target) - utility(current) == pytest.approx(0.5 * lam * te2, abs=atol)
    # A partial step earns part of it; no step earns nothing.
    half = expected_risk_benefit(current, (current + target) / 2, target, COV, 1e12, 4.0, 73)
    assert 0 < half < benefit
    assert expected_risk_benefit(current, current, target, COV, 1e12, 4.0, 73) == 0.0  # exact: no step, no benefit


def _signals(policy: TriggerPolicy, **overrides):
    args = dict(drift_bps=100.0, current_weights=np.array([0.3, 0.3, 0.35]),
                target_weights=np.array([0.3, 0.3, 0.35]), covariance=COV, reference_covariance=COV,
                seconds_since_rebalance=5.0)
    args.update(overrides)
    return check_triggers(policy, **args)


def test_each_trigger_fires_on_its_own_threshold() -> None:
    everything = TriggerPolicy(weight_drift_bps=300, rrc_band=0.05, regime_distance=0.2, max_seconds_between=30 * 86_400)
    assert _signals(everything).fired == ()
    assert "weight drift" in _signals(everything, drift_bps=300.0).fired[0]
    assert "risk-contribution" in _signals(everything, current_weights=np.array([0.6, 0.2, 0.15])).fired[0]
    assert "regime shift" in _signals(everything, covariance=COV * 1.3).fired[0]
    assert _signals(everything, covariance=COV * 1.05).fired == ()  # d = 2 ln sqrt(1.05) = 0.049
    assert "time" in _signals(everything, seconds_since_rebalance=30.0 * 86_400).fired[0]
    assert _signals(everything, current_weights=np.zeros(3)).fired[0] == "first allocation"
    assert _signals(everything, universe_changed=True).fired == ("universe changed",)
    # Disabled triggers never fire.
    off = TriggerPolicy(weight_drift_bps=None)
    assert _signals(off, drift_bps=9_000.0, covariance=COV * 3, seconds_since_rebalance=1e6).fired == ()
    assert _signals(TriggerPolicy(), reference_covariance=None, covariance=COV * 3).fired == ()


def test_cost_gate_trades_only_when_the_benefit_pays_for_the_cost() -> None:
    gated = TriggerPolicy(cost_aware=True, min_benefit_to_cost=2.0)
    fired = _signals(gated, drift_bps=400.0)
    assert apply_cost_gate(gated, fired, benefit=201.0, cost=100.0).rebalance
    skipped = apply_cost_gate(gated, fired, benefit=199.0, cost=100.0)
    assert not skipped.rebalance and "not worth trading" in skipped.reason
    assert skipped.metrics["benefit"] == 199.0 and skipped.metrics["drift_bps"] == 400.0
    # Without the gate a fired trigger trades whatever the cost; nothing fired never trades.
    assert apply_cost_gate(TriggerPolicy(), fired, benefit=0.0, cost=1e9).rebalance
    quiet = apply_cost_gate(gated, _signals(gated), benefit=1e9, cost=0.0)
    assert not quiet.rebalance and quiet.reason == "no trigger fired"
    # The first allocation is not gated.
    first = _signals(gated, current_weights=np.zeros(3))
    assert apply_cost_gate(gated, first, benefit=0.0, cost=1e9).rebalance
    assert apply_cost_gate(gated, fired, benefit=1.0, cost=2.0, cost_breakdown={"fee": 2}).as_dict()[
        "metrics"]["cost_breakdown"] == {"fee": 2}


@pytest.mark.parametrize("kwargs", [dict(rrc_band=-0.1), dict(risk_aversion=0.0), dict(horizon_seconds=math.nan),
                                    dict(max_seconds_between=math.inf)])
def test_policy_rejects_bad_thresholds(kwargs) -> None:
    with pytest.raises(ConfigError):
        TriggerPolicy(**kwargs)


def test_cost_from_quotes_prices_real_quotes_like_the_model() -> None:
    from keeper.costs import cost_from_quotes, gas_cost_base_units

    info = RiskAssetInfo("T", "BTC", "F", 18, 8, 86400, 500)
    answer = 40_000 * 10**8
    reserves = PoolModel(depth_usd=20e6).reserves("BTC", answer, 8, 18, 6)

    def val(amount: int) -> int:
        return value_of(amount, answer, info, 6)

    fair = val(5 * 10**18)
    legs = [SwapLeg("BTC", "sell", "T", "B", 5 * 10**18, 0, fair, fair),
            SwapLeg("BTC", "buy", "B", "T", 100_000 * 10**6, 0, 2_500_000_000_000_000_000, 100_000 * 10**6)]
    modelled = [quote_leg(leg, reserves, 500, val) for leg in legs]
    gas = gas_cost_base_units(511_000, 21 * 10**9, 3_000.0, 6)
    assert gas == round(511_000 * 21e9 * 3_000 * 1e6 / 1e18)
    cost = cost_from_quotes(legs, [q.amount_out for q in modelled], {"BTC": 500}, {"BTC": val}, gas, 511_000)
    assert cost.fee == sum(q.fee for q in modelled)
    assert cost.impact == sum(q.impact for q in modelled)
    assert cost.total == cost.fee + cost.impact + gas
    with pytest.raises(ConfigError):
        cost_from_quotes(legs, [1], {"BTC": 500}, {"BTC": val}, 0)
    with pytest.raises(ConfigError):
        gas_cost_base_units(1, 1, 0.0, 6)
