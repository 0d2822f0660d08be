"""The decision policy: every stage's path really taken, the journal record, and the trigger helpers."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import tomllib

import numpy as np
import pydantic
import pytest

from keeper.backtest import BacktestConfig, run_backtest
from keeper.strategies import RiskParity
from keeper.price_panel import load_price_panel
from keeper.costs import GasModel, PoolModel, TradeCost
from keeper.data import DEFAULT_PRICES_CSV
from keeper.errors import ConfigError, PolicyInputError
from keeper.conditioning_gate import gated_covariance
from keeper.covariance import EstimatorConfig
from keeper.policy_decision import LastRebalance, PolicyDecision
from keeper.policy_config import PolicyConfig
from keeper.policy import decide_targets, evaluate_trade, policy_triggers
from keeper.risk_budgeting import solve_equal_risk_contribution
from keeper.triggers import TriggerPolicy, TriggerSignals, weight_drift_bps
from reference_estimators import ewma_covariance, inverse_volatility_weights
from tolerances import U, dot_rtol, gamma, quadratic_form_condition, quadratic_form_rtol, sum_rtol

SYMBOLS = ("BTC", "ETH", "SOL")


def _returns(n_obs: int = 200, seed: int = 5, vols=(0.03, 0.045, 0.06), rho: float = 0.5) -> np.ndarray:
    """Gaussian daily returns with the given volatilities and a common correlation."""
    rng = np.random.default_rng(seed)
    n = len(vols)
    corr = np.full((n, n), rho) + (1 - rho) * np.eye(n)
    chol = np.linalg.cholesky(corr * np.outer(vols, vols))
    return rng.standard_normal((n_obs, n)) @ chol.T


def _historical_es(weights: np.ndarray, returns: np.ndarray, tail: int) -> float:
    """Mean of the ``tail`` largest losses (the ES when (1 - alpha) * N == tail exactly)."""
    losses = np.sort(-(returns @ weights))[::-1]
    return float(losses[:tail].mean())


def _historical_es_rtol(weights: np.ndarray, returns: np.ndarray, tail: int) -> float:
    """Bound on the difference between two evaluations of that ES (ours, keeper.risk_report's): each tail
    loss is a length-n dot product, gamma(n) times its condition sum_j |r_j w_j| / |r.w| (the worst
    among the tail scenarios), then a sum of ``tail`` positive losses (sum_rtol(tail)) and a
    division; twice that for two paths."""
    products = -(returns * weights)
    losses = products.sum(axis=1)
    top = np.argsort(losses)[::-1][:tail]
    condition = float(np.max(np.abs(products[top]).sum(axis=1) / np.abs(losses[top])))
    return 2 * (dot_rtol(weights.size, condition) + sum_rtol(tail) + U)


# --------------------------------------------------------------------------- configuration
def test_defaults_reproduce_the_live_keeper() -> None:
    config = PolicyConfig()
    assert config.estimator == EstimatorConfig(method="ewma", half_life_days=30.0, min_observations=30)
    assert (config.allocator, config.cash_buffer_bps, config.volatility_target, config.es_limit) == (
        "risk_budgeting", 500.0, None, None)
    # The 300 bps weight band of the planner plus the 20 % band relative to each asset's risk budget.
    assert config.trigger_policy() == TriggerPolicy(weight_drift_bps=300.0, rrc_budget_band=0.2)
    r = _returns()
    decision = decide_targets(r, SYMBOLS, np.zeros(3))
    live = ewma_covariance(r, 30.0, min_observations=30)
    # Same path: the gate's first estimate is covariance_from_config, which ewma_covariance calls too.
    np.testing.assert_array_equal(decision.covariance, live.covariance)
    # Same path, exact: allocate's default budget full(3, fl(1/3)) compensated-sums to 1 - 2^-54, which
    # rounds (ties to even) to 1.0, so the kernel sees the bit-identical b = 1/n of the default.
    np.testing.assert_array_equal(decision.sleeve_weights, solve_equal_risk_contribution(live.covariance).weights)
    # sum of 0.95 w_i: the sleeve sums to 1 within 3U (compensated total, one division each), the products
    # (U), the 3-term sum (sum_rtol(3)); 1 - fl(0.05) and the literal 0.95 are each within U/2 of 0.95.
    assert decision.invested_fraction == pytest.approx(0.95, abs=sum_rtol(3) + 5 * U)
    # 1 - fl(1 - fl(0.05)) is exact (Sterbenz); 1 - fl(0.05) rounds by <= U/2.
    assert decision.cash_weight == pytest.approx(0.05, abs=U)
    assert decision.cash_buffer_bps == pytest.approx(500.0, abs=1e-9)


def test_the_keeper_config_maps_onto_the_policy() -> None:
    from keeper.config import KeeperConfig

    addresses = dict(rpc_url="http://127.0.0.1:8545", vault_address="0x" + "11" * 20, quoter_address="0x" + "22" * 20)
    assert PolicyConfig.from_keeper_config(KeeperConfig(**addresses)) == PolicyConfig()
    custom = KeeperConfig(**addresses, half_life_days=45.0, min_observations=40, cash_buffer_bps=800.0,
                          drift_threshold_bps=150.0, risk_budget={"BTC": 0.5, "ETH": 0.25, "SOL": 0.25})
    policy = PolicyConfig.from_keeper_config(custom, es_limit=0.06, volatility_target=0.5)
    assert policy.estimator == EstimatorConfig(method="ewma", half_life_days=45.0, min_observations=40)
    assert (policy.cash_buffer_bps, policy.weight_drift_bps, policy.es_limit, policy.volatility_target) == (
        800.0, 150.0, 0.06, 0.5)
    assert policy.risk_budget == {"BTC": 0.5, "ETH": 0.25, "SOL": 0.25}
    with pytest.raises(pydantic.ValidationError):
        PolicyConfig.from_keeper_config(custom, es_limit=-1.0)


def test_config_loads_from_toml_and_refuses_bad_values() -> None:
    table = tomllib.loads("""
        allocator = "risk_budgeting"
        volatility_target = 0.4
        es_limit = 0.08
        risk_budget = { BTC = 0.5, ETH = 0.3, SOL = 0.2 }
        max_weight = { SOL = 0.3 }
        [estimator]
        method = "ledoit_wolf"
        missing = "drop_rows"
    """)
    config = PolicyConfig(**table)
    assert config.estimator.method == "ledoit_wolf" and config.es_limit == 0.08
    with pytest.raises(pydantic.ValidationError):
        config.es_limit = 0.1  # frozen
    for bad in ({"es_limit": -0.01}, {"max_gross_exposure": 1.5}, {"cash_buffer_bps": 10_000},
                {"volatility_target": 0.0}, {"volatility_target": math.nan}, {"allocator": "kelly"},
                {"risk_budget": {"BTC": 0.0}}, {"max_weight": {"BTC": 1.5}},
                {"min_weight": {"BTC": 0.6}, "max_weight": {"BTC": 0.5}}, {"typo_field": 1},
                {"estimator": {"method": "ewma"}}, {"max_condition_number": 1.0}):
        with pytest.raises(pydantic.ValidationError):
            PolicyConfig(**bad)


def test_bad_inputs_are_policy_input_errors() -> None:
    r = _returns()
    with pytest.raises(PolicyInputError, match="shape"):
        decide_targets(r[:, 0], SYMBOLS, np.zeros(3))
    with pytest.raises(PolicyInputError, match="unique"):
        decide_targets(r, ("BTC", "BTC", "SOL"), np.zeros(3))
    with pytest.raises(PolicyInputError, match="shape"):
        decide_targets(r, SYMBOLS, np.zeros(2))
    with pytest.raises(PolicyInputError, match="sum to"):
        decide_targets(r, SYMBOLS, np.array([0.5, 0.4, 0.3]))
    with pytest.raises(PolicyInputError, match=">= 0"):
        decide_targets(r, SYMBOLS, np.array([-0.1, 0.4, 0.3]))
    with pytest.raises(PolicyInputError, match="nav_base_units"):
        decide_targets(r, SYMBOLS, np.zeros(3), nav_base_units=1.5e12)
    with pytest.raises(PolicyInputError, match="no entry for"):
        decide_targets(r, SYMBOLS, np.zeros(3), config=PolicyConfig(risk_budget={"BTC": 0.5, "ETH": 0.5}))
    other = gated_covariance(r, EstimatorConfig(method="sample"), 1e6)
    with pytest.raises(PolicyInputError, match="gate"):
        decide_targets(r, SYMBOLS, np.zeros(3), gate=other)
    assert issubclass(PolicyInputError, ConfigError) and issubclass(PolicyInputError, ValueError)


# --------------------------------------------------------------------------- conditioning gate
def test_gate_accept_gives_the_risk_budget() -> None:
    budget = {"BTC": 0.5, "ETH": 0.3, "SOL": 0.2, "DOGE": 1.0}  # DOGE is not traded: ignored, renormalised
    decision = decide_targets(_returns(), SYMBOLS, np.zeros(3), config=PolicyConfig(risk_budget=budget))
    assert decision.action == "target" and decision.gate_action == "accept"
    assert decision.allocation_method == "risk_budgeting" and decision.fallback_reasons == ()
    np.testing.assert_allclose(decision.relative_risk_contributions, [0.5, 0.3, 0.2], atol=1e-9)
    assert decision.reasons[0].startswith("gate accept")
    assert len(decision.condition_numbers) == 1 and decision.condition_numbers[0] <= 1e10


def test_gate_shrinks_a_nearly_collinear_estimate() -> None:
    r = _returns()
    rng = np.random.default_rng(9)
    r[:, 1] = r[:, 0] + 1e-5 * rng.standard_normal(len(r))  # ETH a near copy of BTC
    config = PolicyConfig(estimator=EstimatorConfig(method="sample"), max_condition_number=1e3)
    decision = decide_targets(r, SYMBOLS, np.zeros(3), config=config)
    assert decision.gate_action == "shrink"
    assert decision.condition_numbers[0] > 1e3 >= decision.condition_numbers[-1]
    assert decision.shrinkage > 0 and "shrinkage" in decision.gate_reason
    assert decision.allocation_method == "risk_budgeting"
    np.testing.assert_allclose(decision.relative_risk_contributions, 1 / 3, atol=1e-9)  # of the shrunk matrix


def test_gate_falls_back_to_inverse_volatility_when_no_shrinkage_is_enough() -> None:
    r = _returns(vols=(0.005, 0.05, 0.2))
    config = PolicyConfig(estimator=EstimatorConfig(method="sample"), max_condition_number=1.2)
    decision = decide_targets(r, SYMBOLS, np.zeros(3), config=config)
    assert decision.gate_action == "inverse_volatility"
    assert decision.allocation_method == "inverse_volatility"
    assert any("instead of risk budgeting" in x for x in decision.reasons)
    sample_vols = np.std(r, axis=0, ddof=1) * math.sqrt(365)
    # Two variance paths (np.std vs the estimator's centred cross products): two-pass sums of squares,
    # relative error <= gamma(n_obs + 3) each (Higham §1.9, mean ~ 0 so the data's condition is ~1), halved
    # by the sqrt, with the annualisation (<= 3U); w_i = (1/v_i) / sum moves by <= 2 max |dv/v|, plus each
    # path's own 1/v, 3-term sum and division.
    vol_rtol = gamma(len(r) + 3) + 6 * U
    np.testing.assert_allclose(
        decision.sleeve_weights, inverse_volatility_weights(sample_vols), rtol=2 * vol_rtol + 2 * (sum_rtol(3) + 2 * U)
    )
    assert np.count_nonzero(decision.covariance - np.diag(np.diag(decision.covariance))) == 0  # the diagonal


def test_gate_hold_keeps_the_current_weights_and_no_trade_follows() -> None:
    r = _returns()
    r[:, 2] = 0.0  # a frozen feed: zero variance
    current = np.array([0.3, 0.3, 0.3])
    decision = decide_targets(r, SYMBOLS, current)
    assert decision.action == "hold" and decision.gate_action == "hold"
    np.testing.assert_array_equal(decision.target_weights, current)  # exact: the current weights themselves
    assert decision.cash_weight == pytest.approx(0.1) and decision.covariance is None
    assert "hold current positions" in decision.reason
    signals = policy_triggers(decision, PolicyConfig(weight_drift_bps=0.0))
    assert signals.fired == ()
    trade = evaluate_trade(decision, PolicyConfig(), signals)
    assert not trade.rebalance and trade.reason.startswith("policy holds: gate hold")


# --------------------------------------------------------------------------- allocator fallbacks
def _anticorrelated(n_obs: int = 300, seed: int = 2) -> np.ndarray:
    rng = np.random.default_rng(seed)
    z, e = rng.standard_normal((2, n_obs)) * 0.04
    return np.column_stack([z, -0.9 * z + math.sqrt(1 - 0.81) * e])


def test_allocator_falls_back_to_inverse_volatility_when_bounds_leave_no_risk_budgeting_solution() -> None:
    # Asset B hedges A (rho = -0.9): with w_A >= 0.6 no sleeve gives B a positive risk contribution.
    r = _anticorrelated()
    config = PolicyConfig(estimator=EstimatorConfig(method="sample"), min_weight={"A": 0.6}, cash_buffer_bps=0.0)
    decision = decide_targets(r, ("A", "B"), np.zeros(2), config=config)
    assert decision.gate_action == "accept"
    assert decision.allocation_method == "inverse_volatility"
    assert len(decision.fallback_reasons) == 1 and decision.fallback_reasons[0].startswith("risk_budgeting: ")
    assert any(x.startswith("allocator fallback after risk_budgeting") for x in decision.reasons)
    assert decision.sleeve_weights[0] >= 0.6 - 1e-15
    # [0.6, w1 * ((1 - 0.6) / w1)]: 3 roundings of ~0.4 and the 2-term sum (U).
    assert decision.target_weights.sum() == pytest.approx(1.0, abs=sum_rtol(2) + 3 * U)


def test_allocator_falls_back_to_the_previous_target_when_every_method_fails() -> None:
    r = _returns()
    config = PolicyConfig(estimator=EstimatorConfig(method="sample"), max_condition_number=1e6)
    gate = gated_covariance(r, config.estimator, config.max_condition_number)
    broken = np.array(gate.estimate.covariance)
    broken[0, 2] = broken[2, 0] = np.nan  # variances fine, the sleeve's volatility undefined
    gate = dataclasses.replace(gate, estimate=dataclasses.replace(gate.estimate, covariance=broken))
    previous = np.array([0.2, 0.3, 0.1])
    current = np.array([0.25, 0.25, 0.25])
    decision = decide_targets(r, SYMBOLS, current, previous, config, gate=gate)
    assert decision.allocation_method == "previous"
    assert [x.split(":")[0] for x in decision.fallback_reasons] == ["risk_budgeting", "inverse_volatility"]
    np.testing.assert_array_equal(decision.target_weights, previous)  # exact: a copy of them
    assert decision.cash_weight == pytest.approx(0.4) and "keeping the previous target" in decision.reason
    without = decide_targets(r, SYMBOLS, current, None, config, gate=gate)
    np.testing.assert_array_equal(without.target_weights, current)  # no previous target: hold what is held (a copy)
    assert "keeping the current weights" in without.reason


# --------------------------------------------------------------------------- volatility target and ES limit
def test_volatility_target_is_met_or_capped() -> None:
    r = _returns()
    met = decide_targets(r, SYMBOLS, np.zeros(3), config=PolicyConfig(volatility_target=0.25))
    cov = met.covariance
    # scale = 0.25 / sigma(sleeve) by allocate (s.(S s)); the volatility of w = scale * s evaluated again
    # ((w S).w, another order): gamma(2n) cq on each form, halved by the sqrt; rounding scale * s moves
    # sigma by <= U cq; the division and two square roots 3U.
    cq = quadratic_form_condition(met.sleeve_weights, cov)
    vol_rtol = quadratic_form_rtol(3, cq) + (cq + 3) * U
    assert met.ex_ante_volatility == pytest.approx(0.25, rel=vol_rtol) and not met.capped
    assert math.sqrt(met.target_weights @ cov @ met.target_weights) == pytest.approx(0.25, rel=vol_rtol)
    # 1 - scale (<= U/2) vs 1 - sum(scale s_i): the sleeve sums to 1 within sum_rtol(3) + 3U, the products
    # (U), the sum here (sum_rtol(3)), the subtraction (U).
    assert met.cash_weight == pytest.approx(1 - met.target_weights.sum(), abs=2 * sum_rtol(3) + 6 * U)
    assert met.cash_weight > 0.05
    capped = decide_targets(r, SYMBOLS, np.zeros(3), config=PolicyConfig(volatility_target=5.0))
    # As in test_defaults_reproduce_the_live_keeper: sleeve sum 3U, products, 3-term sum, 0.95's roundings.
    assert capped.capped and capped.invested_fraction == pytest.approx(0.95, abs=sum_rtol(3) + 5 * U)
    assert capped.ex_ante_volatility < 5.0


def test_es_limit_binding_scales_toward_the_base_asset() -> None:
    r = _returns(n_obs=200)  # 200 scenarios: the 99 % tail holds exactly 2
    free = decide_targets(r, SYMBOLS, np.zeros(3))
    es_free = _historical_es(free.target_weights, r, 2)
    limit = 0.5 * es_free
    nav = 2_500_000 * 10**6  # 2.5M USD in 6-decimal base units
    decision = decide_targets(r, SYMBOLS, np.zeros(3), config=PolicyConfig(es_limit=limit), nav_base_units=nav)
    assert decision.nav_base_units == nav and decision.es_limit_base_units == round(limit * nav)
    assert decision.es_after_base_units <= decision.es_limit_base_units < decision.es_before_base_units
    # keeper.risk_report's ES of the same weights vs ours: two evaluations of the tail losses and their mean.
    es_rtol = _historical_es_rtol(free.target_weights, r, 2)
    assert decision.es_binding and decision.es_before == pytest.approx(es_free, rel=es_rtol)
    assert _historical_es(decision.target_weights, r, 2) <= limit
    # ES(s w) = s ES(w) up to: s = limit / es_before (U), the products s w_i (U cond on each loss, within
    # es_rtol), a second evaluation (es_rtol), and the documented ulp steps down of s (a few U).
    assert decision.es_after == pytest.approx(limit, rel=2 * es_rtol + 8 * U)
    # s = limit / es_before with limit = es_free / 2 (exact): es_before vs es_free, the division, then the
    # steps down (at most twice the overshoot, itself <= es_rtol + 4U).
    assert decision.es_scale == pytest.approx(0.5, rel=3 * es_rtol + 9 * U)
    # Same path: the approved weights are es_scale * (the same allocation's weights), bit for bit.
    np.testing.assert_array_equal(decision.target_weights, decision.es_scale * free.target_weights)
    np.testing.assert_array_equal(decision.sleeve_weights, free.sleeve_weights)  # only the cash grows (same path)
    # 1 - fl(1 - fl(0.05)) * s vs 1 - fl(0.95) * s: the two 0.95s within U/2 of each other, then the same
    # product and subtraction (U/2 each at most on each side).
    assert decision.cash_weight == pytest.approx(1 - 0.95 * decision.es_scale, abs=2 * U)
    assert "toward the base asset" in decision.es_reason and decision.es_reason in decision.reasons


def test_es_limit_not_binding_leaves_the_target_unchanged() -> None:
    r = _returns(n_obs=200)
    free = decide_targets(r, SYMBOLS, np.zeros(3))
    decision = decide_targets(r, SYMBOLS, np.zeros(3), config=PolicyConfig(es_limit=0.5))
    assert not decision.es_binding and decision.es_scale == 1.0
    # es_after is es_before (the same measure, not recomputed) when the limit does not bind.
    assert decision.es_before == decision.es_after == pytest.approx(_historical_es(free.target_weights, r, 2))
    np.testing.assert_array_equal(decision.target_weights, free.target_weights)  # same path: approved unchanged
    gaussian = decide_targets(r, SYMBOLS, np.zeros(3), config=PolicyConfig(es_limit=0.5, es_method="gaussian"))
    assert gaussian.es_method == "gaussian" and gaussian.es_scale == 1.0 and 0 < gaussian.es_before < 0.5


def test_an_es_limit_that_cannot_be_measured_holds() -> None:
    r = _returns(n_obs=60)  # 60 scenarios: a 99 % tail of 0.6 scenario
    decision = decide_targets(r, SYMBOLS, np.array([0.2, 0.2, 0.2]), config=PolicyConfig(es_limit=0.05))
    assert decision.action == "hold" and decision.gate_action == "accept"
    assert "cannot be checked" in decision.reason and "InsufficientHistoryError" in decision.reason
    np.testing.assert_array_equal(decision.target_weights, [0.2, 0.2, 0.2])
    assert decision.covariance is not None  # the estimate is kept for the record


# --------------------------------------------------------------------------- journal record
@pytest.mark.parametrize("case", ["target", "es", "hold", "previous"])
def test_decision_json_round_trip(case: str) -> None:
    r = _returns()
    if case == "target":
        decision = decide_targets(r, SYMBOLS, np.zeros(3), config=PolicyConfig(volatility_target=0.3))
    elif case == "es":
        decision = decide_targets(r, SYMBOLS, np.zeros(3), config=PolicyConfig(es_limit=0.01),
                                  nav_base_units=10**12)
    elif case == "hold":
        r[:, 0] = 0.0
        decision = decide_targets(r, SYMBOLS, np.array([0.1, 0.0, 0.2]))
    else:
        config = PolicyConfig(estimator=EstimatorConfig(method="sample"), max_condition_number=1e6)
        gate = gated_covariance(r, config.estimator, config.max_condition_number)
        broken = np.array(gate.estimate.covariance)
        broken[1, 1] = np.inf
        gate = dataclasses.replace(gate, estimate=dataclasses.replace(gate.estimate, covariance=broken))
        decision = decide_targets(r, SYMBOLS, np.zeros(3), config=config, gate=gate)
    record = decision.as_dict()
    text = json.dumps(record, allow_nan=False)  # strict JSON
    again = PolicyDecision.from_dict(json.loads(text))
    assert again.as_dict() == record
    # Exact: JSON carries floats as repr, the shortest string that round-trips.
    np.testing.assert_array_equal(again.target_weights, decision.target_weights)
    assert again.reason == decision.reason and again.gate_action == decision.gate_action
    assert "covariance" in record and decision.as_dict(covariance=False)["covariance"] is None
    with pytest.raises(PolicyInputError, match="not a policy decision"):
        PolicyDecision.from_dict({k: v for k, v in record.items() if k != "gate"})


# --------------------------------------------------------------------------- triggers and cost gate
def test_triggers_and_cost_gate_for_a_decision() -> None:
    r = _returns()
    config = PolicyConfig(weight_drift_bps=300.0, regime_distance=0.1, max_seconds_between=10.0 * 86_400, cost_aware=True)
    current = np.array([0.30, 0.30, 0.30])
    decision = decide_targets(r, SYMBOLS, current, config=config)
    drift = weight_drift_bps(current, decision.target_weights, None, decision.cash_weight)
    signals = policy_triggers(decision, config)
    assert signals.metrics["drift_bps"] == drift  # same path: the same function on the same arguments
    assert any(x.startswith("weight drift") for x in signals.fired) == (drift >= 300.0)
    # The last rebalance: same assets, a covariance half as large, 12 days ago.
    last = LastRebalance(SYMBOLS, decision.covariance / 2, 12.0 * 86_400)
    signals = policy_triggers(decision, config, last_rebalance=last)
    assert any(x.startswith("regime shift") for x in signals.fired)
    assert signals.metrics["covariance_distance"] == pytest.approx(math.log(2), rel=1e-9)
    assert any(x.startswith("time: 1.0368e+06 s (12 days)") for x in signals.fired)
    changed = policy_triggers(decision, config, last_rebalance=LastRebalance(("BTC", "ETH"), None, 1.0))
    assert "universe changed" in changed.fired
    # The cost gate: the same trade is worth it when cheap, not when dear.
    nav = 1_000_000 * 10**6
    post = decision.target_weights
    cheap = evaluate_trade(decision, config, signals, post_trade_weights=post, nav_base_units=nav,
                           cost=TradeCost(fee=10, impact=5, gas=5, gas_units=608_000))
    assert cheap.rebalance and cheap.metrics["cost"] == 20 and cheap.metrics["cost_breakdown"]["fee"] == 10
    dear = evaluate_trade(decision, config, signals, post_trade_weights=post, nav_base_units=nav,
                          cost=10.0 * cheap.metrics["benefit"])
    assert not dear.rebalance and "not worth trading" in dear.reason
    with pytest.raises(PolicyInputError, match="cost"):
        evaluate_trade(decision, config, signals)
    quiet = evaluate_trade(decision, config, TriggerSignals(()))
    assert not quiet.rebalance and quiet.reason == "no trigger fired"
    first = policy_triggers(decide_targets(r, SYMBOLS, np.zeros(3), config=config), config)
    assert "first allocation" in first.fired
    with pytest.raises(PolicyInputError, match="seconds_ago"):
        LastRebalance(SYMBOLS, None, -1.0)


def test_holdings_drifted_above_the_es_limit_trigger_a_trade_the_cost_gate_cannot_stop() -> None:
    r = _returns(n_obs=200)  # 200 scenarios: the 99 % tail holds exactly 2
    target = decide_targets(r, SYMBOLS, np.zeros(3)).target_weights
    # Holdings within 2 % of the target weights (inside a 300 bps band) but tilted toward SOL, the
    # most volatile asset, so that their ES exceeds a limit the target meets.
    current = target + np.array([-0.025, 0.0, 0.025])
    es_target, es_current = _historical_es(target, r, 2), _historical_es(current, r, 2)
    limit = es_current / 1.03  # the holdings 3 % above the limit, the target within it
    assert es_target < limit
    config = PolicyConfig(es_limit=limit, weight_drift_bps=300.0, cost_aware=True, es_trigger_tolerance=0.02)
    decision = decide_targets(r, SYMBOLS, current, config=config)
    # keeper.risk_report's ES of the holdings vs ours: two evaluations of the tail losses and their mean.
    assert decision.es_current == pytest.approx(es_current, rel=_historical_es_rtol(current, r, 2))
    assert not decision.es_binding
    signals = policy_triggers(decision, config)
    assert signals.metrics["drift_bps"] < 300.0
    (fired,) = signals.fired
    # Exact: the trigger reports the decision's own number.
    assert fired.startswith("ES limit: ES of the holdings") and signals.metrics["es_current"] == decision.es_current
    # A limit breach is not weighed against its cost.
    trade = evaluate_trade(decision, config, signals, post_trade_weights=current + 0.5 * (target - current),
                           nav_base_units=10**12, cost=1e12)
    assert trade.rebalance and trade.reasons == (fired,)
    # Within the tolerance (3 % over a 5 % band) or below the limit nothing fires; without a limit
    # nothing is measured.
    tolerant = config.model_copy(update={"es_trigger_tolerance": 0.05})
    assert policy_triggers(decide_targets(r, SYMBOLS, current, config=tolerant), tolerant).fired == ()
    relaxed = config.model_copy(update={"es_limit": 1.01 * es_current})
    assert policy_triggers(decide_targets(r, SYMBOLS, current, config=relaxed), relaxed).fired == ()
    unlimited = decide_targets(r, SYMBOLS, current)
    assert unlimited.es_current is None and "es_current" not in policy_triggers(unlimited, config).metrics
    # The journal record keeps it.
    assert PolicyDecision.from_dict(decision.as_dict()).es_current == decision.es_current


# --------------------------------------------------------------------------- through the backtest
def test_the_backtest_records_the_policy_and_respects_the_es_limit() -> None:
    panel = load_price_panel(DEFAULT_PRICES_CSV, ["BTC", "ETH", "SOL", "DOGE"], end=dt.date(2022, 9, 30))
    config = BacktestConfig(lookback_days=120, min_observations=30, half_life_days=20.0, es_limit=0.04,
                            pools=PoolModel(depth_usd=100e6), gas=GasModel(eth_price_usd=None))
    strategies = [RiskParity("ERC"), RiskParity("ERC vol 40%", vol_target=0.4)]
    run = run_backtest(panel, strategies, config, dt.date(2022, 3, 1))
    for res in run["results"]:
        decisions = [d.policy for d in res.decisions if d.policy is not None]
        assert decisions and len(decisions) == len(res.decisions)
        assert sum(res.metrics["gate_counts"].values()) == res.metrics["ticks"]
        binding = [p for p in decisions if p.es_binding]
        assert res.metrics["es_limit_binding"] == len(binding) > 0  # 2022: the limit binds
        for p in decisions:
            assert p.es_after <= 0.04
        assert res.metrics["final_risk"]["measures"] and res.metrics["final_stress"]["results"]
        assert res.metrics["final_es_99_1d"] > 0 and res.metrics["worst_stress"]


def test_no_look_ahead_through_the_policy() -> None:
    """Every policy decision up to a date is unchanged when every later price changes."""
    symbols = ["BTC", "ETH", "SOL", "DOGE"]
    cut_date = dt.date(2022, 6, 15)
    panel = load_price_panel(DEFAULT_PRICES_CSV, symbols, end=dt.date(2022, 8, 31))
    cut = panel.index_on_or_before(cut_date)
    future = panel.prices.copy()
    future[cut + 1:] *= np.exp(np.cumsum(np.random.default_rng(4).normal(0, 0.08, future[cut + 1:].shape), axis=0))
    config = BacktestConfig(lookback_days=100, min_observations=30, half_life_days=15.0, es_limit=0.05,
                            max_condition_number=50.0, policy=TriggerPolicy(weight_drift_bps=150.0),
                            pools=PoolModel(depth_usd=100e6), gas=GasModel(eth_price_usd=None))
    strategies = [RiskParity("ERC vol 40%", vol_target=0.4)]
    a = run_backtest(panel, strategies, config, dt.date(2022, 4, 1))["results"][0]
    b = run_backtest(panel.with_prices(future), strategies, config, dt.date(2022, 4, 1))["results"][0]
    before = [(d.date, d.status, d.reason, json.dumps(d.policy.as_dict())) for d in a.decisions if d.date <= cut_date]
    after = [(d.date, d.status, d.reason, json.dumps(d.policy.as_dict())) for d in b.decisions if d.date <= cut_date]
    assert before == after and len(before) > 30
    assert {d.policy.gate_action for d in a.decisions} - {"accept"}  # the tight gate really acted
    later_a = [d.policy.as_dict() for d in a.decisions if d.date > cut_date]
    later_b = [d.policy.as_dict() for d in b.decisions if d.date > cut_date]
    assert later_a != later_b  # the perturbation is real
