"""The live tick runs the backtester's decision policy (keeper.policy) on Anvil: ES limit, volatility target,
cost-aware trigger, regime-shift and time triggers, conditioning-gate fallbacks, each journalled."""

from __future__ import annotations

import json

from types import SimpleNamespace

import numpy as np
import pytest
from pydantic import ValidationError
from conftest import USDC, System

from keeper.chain import ANVIL_KEYS
from keeper.costs import GasModel, gas_cost_base_units
from keeper.config import load_config
from keeper.errors import ConfigError
from keeper.journal import Journal
from keeper.policy_config import PolicyConfig
from keeper.runner import Keeper


def _keeper(chain: System, journal: Journal, **overrides) -> Keeper:
    return Keeper(chain.keeper_config(**overrides), w3=chain.w3, private_key=ANVIL_KEYS[1], journal=journal)


def _onchain_weights(keeper: Keeper) -> tuple[np.ndarray, float]:
    """Risky weights and cash weight of the vault now, fractions of NAV at the oracle."""
    snap = keeper.reader.snapshot()
    state = keeper.reader.vault_state()
    values = np.array([b * a / 10**26 for b, a in zip(state.balances, snap.answers)])  # 18-dec tokens, 8-dec feeds
    nav = state.total_assets / USDC
    return values / nav, state.base_balance / USDC / nav


def _last_detail(journal: Journal) -> dict:
    return journal.ticks()[-1]["detail"]


def test_default_config_is_the_default_policy(chain: System) -> None:
    config = chain.keeper_config()
    policy = PolicyConfig.from_keeper_config(config)
    # The fixture's config differs from the defaults only in the estimator, history and drift fields it sets.
    assert policy.estimator.half_life_days == 20 and policy.weight_drift_bps == 100
    changed = {"estimator", "weight_drift_bps", "lookback_days"}
    assert policy.model_dump(exclude=changed) == PolicyConfig().model_dump(exclude=changed)


def test_invalid_policy_fields_are_a_config_error(chain: System, tmp_path) -> None:
    # Refused when the config is built (a pydantic ValidationError naming the field) ...
    with pytest.raises(ValidationError, match="min_weight"):
        chain.make_keeper(min_weight={"BTC": 0.6}, max_weight={"BTC": 0.5})
    # ... and, from a file, as a ConfigError naming the file and the field.
    path = tmp_path / "keeper.json"
    path.write_text(json.dumps({"chain": {"rpc_url": "http://127.0.0.1:1", "vault_address": "0x" + "11" * 20,
                                          "quoter_address": "0x" + "11" * 20},
                                "policy": {"min_weight": {"BTC": 0.6}, "max_weight": {"BTC": 0.5}}}))
    with pytest.raises(ConfigError, match="min_weight"):
        load_config(path)


def test_es_limit_derisks_toward_the_base_asset(chain: System) -> None:
    chain.deposit(chain.alice, 200_000)
    journal = Journal(":memory:")
    keeper = _keeper(chain, journal, es_limit=0.02, es_method="historical", es_confidence=0.95)
    report = keeper.run_once()
    assert report.status == "rebalanced", report.reason
    es = report.policy["es"]
    assert es["scale"] < 1.0 and es["before"] > 0.02 and es["after"] == pytest.approx(0.02, rel=1e-6)
    assert es["reason"] and es["reason"] in report.policy["reasons"]
    cash_target = report.policy["cash_weight"]
    assert cash_target > 0.05 + 0.01  # well above the 500 bps buffer
    # The vault now holds that much cash (within 20 bps of NAV: costs and rounding).
    weights, cash = _onchain_weights(keeper)
    assert cash == pytest.approx(cash_target, abs=0.002)
    assert np.max(np.abs(weights - np.array(report.policy["target_weights"]))) < 0.002
    detail = _last_detail(journal)
    assert detail["policy"]["es"]["scale"] == es["scale"] and detail["trigger"]["rebalance"] is True
    assert "first allocation" in detail["trigger"]["reasons"]


def test_es_limit_that_cannot_be_measured_holds(chain: System) -> None:
    chain.deposit(chain.alice, 100_000)
    journal = Journal(":memory:")
    # 44 daily returns hold no 99 % historical tail scenario (100 needed): the policy holds, nothing is sent.
    keeper = _keeper(chain, journal, es_limit=0.05, es_confidence=0.99)
    nonce = chain.w3.eth.get_transaction_count(chain.keeper)
    report = keeper.run_once()
    assert report.status == "skipped" and report.reason_code == "policy_hold"
    assert "ES limit" in report.reason and "cannot be checked" in report.reason
    assert chain.w3.eth.get_transaction_count(chain.keeper) == nonce
    detail = _last_detail(journal)
    assert detail["policy"]["action"] == "hold" and detail["trigger"]["rebalance"] is False


def test_volatility_target_scales_the_risky_sleeve(chain: System) -> None:
    chain.deposit(chain.alice, 200_000)
    journal = Journal(":memory:")
    keeper = _keeper(chain, journal, volatility_target=0.25)
    report = keeper.run_once()
    assert report.status == "rebalanced", report.reason
    policy = report.policy
    assert policy["allocation"]["volatility_target"] == 0.25 and not policy["allocation"]["capped"]
    assert policy["ex_ante_volatility"] == pytest.approx(0.25, rel=1e-6)
    assert policy["allocation"]["scale"] < 0.9
    assert any("volatility target 0.25" in r for r in policy["reasons"])
    # The sleeve keeps equal risk contributions; the scale goes to cash.
    assert np.max(np.abs(np.array(report.relative_risk_contributions_target) - 1 / 3)) < 1e-8
    _, cash = _onchain_weights(keeper)
    assert cash == pytest.approx(1.0 - policy["allocation"]["scale"], abs=0.002)
    assert _last_detail(journal)["policy"]["allocation"]["scale"] == policy["allocation"]["scale"]


def _first_rebalance_then_move(chain: System, journal: Journal, days: int) -> Keeper:
    chain.deposit(chain.alice, 200_000)
    first = _keeper(chain, journal)
    assert first.run_once().status == "rebalanced"
    for t in range(chain.day + 1, chain.day + 1 + days):
        chain.push_day(t)
    return first


def test_cost_aware_trigger_skips_a_trade_not_worth_its_cost(chain: System) -> None:
    journal = Journal(":memory:")
    _first_rebalance_then_move(chain, journal, 3)
    nonce = chain.w3.eth.get_transaction_count(chain.keeper)
    # A zero drift threshold fires the drift trigger; a negligible risk aversion makes the benefit ~0.
    stingy = _keeper(chain, journal, drift_threshold_bps=0, min_trade_usd=1, cost_aware=True, risk_aversion=1e-9)
    report = stingy.run_once()
    assert report.status == "skipped" and report.reason_code == "not_worth_trading", report.reason
    assert "not worth trading" in report.reason
    assert chain.w3.eth.get_transaction_count(chain.keeper) == nonce
    trigger = _last_detail(journal)["trigger"]
    assert trigger["rebalance"] is False and any(r.startswith("weight drift") for r in trigger["reasons"])
    metrics = trigger["metrics"]
    assert metrics["benefit"] < metrics["cost"]
    breakdown = metrics["cost_breakdown"]
    assert breakdown["fee"] > 0 and breakdown["gas"] > 0 and breakdown["gas_units"] > 0
    assert breakdown["total"] == breakdown["fee"] + breakdown["impact"] + breakdown["gas"] == metrics["cost"]
    # Gas: model units x (next base fee + tip) x the vault's own ETH oracle price (it lists ETH), in USDC units.
    fees = stingy.executor.fee_policy.estimate(chain.w3, gate=False)
    eth_usd = report.prices_usd[list(report.symbols).index("ETH")]
    assert breakdown["gas_units"] == GasModel().gas_units(len(report.plan.legs))
    assert breakdown["gas"] == gas_cost_base_units(breakdown["gas_units"], fees.base_fee_per_gas
                                                   + fees.max_priority_fee_per_gas, eth_usd, 6)
    # The config's eth_price_usd is the fallback when the vault lists no ETH (or its price is unusable).
    pricey = _keeper(chain, journal, eth_price_usd=3e6)
    assert pricey._eth_price_usd(SimpleNamespace(prices_usd=np.array(report.prices_usd))) == eth_usd
    assert pricey._eth_price_usd(SimpleNamespace(prices_usd=np.array([1.0, np.nan, 1.0]))) == 3e6
    # The same trade with a large risk aversion pays for itself and is sent.
    eager = _keeper(chain, journal, drift_threshold_bps=0, min_trade_usd=1, cost_aware=True, risk_aversion=1e7)
    report = eager.run_once()
    assert report.status == "rebalanced", report.reason
    metrics = _last_detail(journal)["trigger"]["metrics"]
    assert metrics["benefit"] >= metrics["cost"] > 0


def test_time_trigger_fires_and_is_journalled(chain: System) -> None:
    journal = Journal(":memory:")
    _first_rebalance_then_move(chain, journal, 3)
    # Drift alone would not trade (threshold out of reach) ...
    patient = _keeper(chain, journal, drift_threshold_bps=9_999, max_seconds_between=30 * 86_400)
    report = patient.run_once()
    assert report.status == "skipped" and report.reason_code == "no_trade_needed", report.reason
    trigger = _last_detail(journal)["trigger"]
    assert trigger["reasons"] == ["no trigger fired"]
    assert trigger["metrics"]["seconds_since_rebalance"] == pytest.approx(3 * 86_400, abs=864)
    # ... but three days since the last rebalance meet a two-day limit.
    timed = _keeper(chain, journal, drift_threshold_bps=9_999, max_seconds_between=2 * 86_400, min_trade_usd=1)
    report = timed.run_once()
    assert report.status == "rebalanced", report.reason
    trigger = _last_detail(journal)["trigger"]
    assert trigger["rebalance"] is True and trigger["reasons"][0].startswith("time: ")
    assert trigger["reasons"][0].endswith("since the last rebalance >= 172800 s")
    assert trigger["metrics"]["seconds_since_rebalance"] == pytest.approx(3 * 86_400, abs=864)
    assert report.reason == trigger["reasons"][0]


def test_regime_shift_trigger_fires_and_is_journalled(chain: System) -> None:
    journal = Journal(":memory:")
    _first_rebalance_then_move(chain, journal, 5)
    calm = _keeper(chain, journal, drift_threshold_bps=9_999, regime_distance=1e3)
    assert calm.run_once().reason_code == "no_trade_needed"
    distance = _last_detail(journal)["trigger"]["metrics"]["covariance_distance"]
    assert 0 < distance < 1e3
    shifted = _keeper(chain, journal, drift_threshold_bps=9_999, regime_distance=distance / 2, min_trade_usd=1)
    report = shifted.run_once()
    assert report.status == "rebalanced", report.reason
    trigger = _last_detail(journal)["trigger"]
    assert trigger["reasons"][0].startswith("regime shift: covariance distance")
    assert trigger["metrics"]["covariance_distance"] == pytest.approx(distance)


def test_gate_fallback_to_inverse_volatility_is_journalled(chain: System) -> None:
    chain.deposit(chain.alice, 200_000)
    journal = Journal(":memory:")
    # No correlated 3x3 covariance of BTC/ETH/SOL has a condition number of 1.01, shrunk or not.
    keeper = _keeper(chain, journal, max_condition_number=1.01)
    report = keeper.run_once()
    assert report.status == "rebalanced", report.reason
    policy = _last_detail(journal)["policy"]
    assert policy["gate"]["action"] == "inverse_volatility"
    assert policy["allocation"]["method"] == "inverse_volatility"
    assert any("inverse-volatility weights instead of risk budgeting" in r for r in policy["reasons"])
    cov = np.array(policy["covariance"])
    assert np.count_nonzero(cov - np.diag(np.diag(cov))) == 0  # diagonal only
    vols = np.sqrt(np.diag(cov))
    sleeve = np.array(policy["sleeve_weights"])
    assert sleeve == pytest.approx((1 / vols) / np.sum(1 / vols), rel=1e-9)


def test_previous_target_is_read_back_from_the_journal(chain: System) -> None:
    journal = Journal(":memory:")
    first = _first_rebalance_then_move(chain, journal, 1)
    target = journal.ticks("rebalanced")[-1]["detail"]["policy"]["target_weights"]
    again = _keeper(chain, journal)
    assert again._previous_target() == pytest.approx(target)
    last = again._last_rebalance(first.reader.snapshot().block_timestamp)
    assert last is not None and last.symbols == first.reader.symbols and last.seconds_ago == pytest.approx(86_400, abs=864)
    assert last.covariance.shape == (3, 3)


def test_status_shows_the_policy_targets_and_es(chain: System) -> None:
    from keeper.status import collect_status, format_status

    chain.deposit(chain.alice, 100_000)
    config = chain.keeper_config(es_limit=0.03, es_method="gaussian")
    status = collect_status(config, w3=chain.w3, keeper_address=chain.keeper)
    policy = status["policy"]
    assert policy["action"] == "target" and policy["es_before"] > 0.03
    assert policy["es_after"] == pytest.approx(0.03, rel=1e-6)
    assert sum(policy["target_weights"]) + policy["cash_weight"] == pytest.approx(1.0)
    assert policy["cash_weight"] > 0.05
    text = format_status(status)
    assert "policy target: target BTC" in text and "(limit 3.00%" in text
