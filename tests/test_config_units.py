"""Config fields with a unit refuse the common wrong unit (gwei vs wei, bps vs fraction vs percent, seconds vs
minutes or milliseconds) with a message naming the field, the value, the expected unit and an example."""

from __future__ import annotations

import json

import pytest

from keeper.config import UNIT_RULES, KeeperConfig, load_config, with_overrides
from keeper.errors import ConfigError

VAULT = "0x" + "11" * 20
QUOTER = "0x" + "22" * 20
CHAIN = {"rpc_url": "http://127.0.0.1:8545", "vault_address": VAULT, "quoter_address": QUOTER}


def _load(tmp_path, section: str, values: dict) -> KeeperConfig:
    path = tmp_path / "keeper.json"
    path.write_text(json.dumps({"chain": {**CHAIN, **(values if section == "chain" else {})},
                                **({section: values} if section != "chain" else {})}))
    return load_config(path)


WRONG_UNITS = [
    # (section, field, wrong value, words the message must hold)
    ("transactions", "max_fee_per_gas_gwei", 50e9, ["in wei, not gwei", "expected gwei", "max_fee_per_gas_gwei = 50"]),
    ("transactions", "max_priority_fee_per_gas_gwei", 2e9, ["in wei, not gwei"]),
    ("transactions", "min_priority_fee_per_gas_gwei", 1e7, ["in wei, not gwei"]),
    ("transactions", "base_fee_gate_gwei", 30e9, ["in wei, not gwei"]),
    ("transactions", "slippage_budget_bps", 0.005, ["a fraction, not bps", "slippage_budget_bps = 50"]),
    ("transactions", "slippage_budget_bps", 5000, ["maxSlippageBps"]),
    ("transactions", "priority_fee_percentile", 0.5, ["a fraction, not a percentile"]),
    ("transactions", "gas_limit_margin", 130, ["a percentage, not a multiplier", "gas_limit_margin = 1.3"]),
    ("transactions", "deadline_seconds", 10, ["in minutes or hours, not seconds"]),
    ("transactions", "deadline_seconds", 600_000, ["in milliseconds, not seconds"]),
    ("policy", "cash_buffer_bps", 0.05, ["fraction", "500"]),
    ("policy", "weight_drift_bps", 0.03, ["a fraction, not bps", "weight_drift_bps = 300"]),
    ("policy", "volatility_target", 40, ["a percentage, not a fraction", "volatility_target = 0.4"]),
    ("policy", "es_limit", 8, ["a percentage, not a fraction", "es_limit = 0.08"]),
    ("policy", "es_confidence", 99, ["a percentage, not a fraction", "es_confidence = 0.99"]),
    ("policy", "max_gross_exposure", 100, ["a percentage, not a fraction"]),
    ("operations", "breaker_max_pool_deviation_bps", 0.02, ["a fraction, not bps"]),
    ("operations", "breaker_max_price_jump_bps", 0.25, ["a fraction, not bps"]),
    ("operations", "breaker_max_oracle_age_seconds", 2, ["in minutes or hours, not seconds"]),
    ("operations", "interval_seconds", 3_600_000_000, ["in milliseconds, not seconds"]),
    ("operations", "min_keeper_balance_eth", 5e16, ["in wei, not ETH"]),
    ("chain", "max_oracle_age_seconds", 2, ["in minutes or hours, not seconds"]),
    ("chain", "rpc_timeout_seconds", 10_000, ["in milliseconds, not seconds"]),
]


@pytest.mark.parametrize(("section", "field", "value", "words"), WRONG_UNITS,
                         ids=[f"{s}.{f}={v:g}" for s, f, v, _ in WRONG_UNITS])
def test_wrong_unit_is_refused_with_field_value_unit_and_example(tmp_path, section, field, value, words):
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, section, {field: value})
    message = str(err.value)
    assert f"{field}" in message and repr(value) in message  # the field and the value given
    for word in words:
        assert word in message, message
    assert "e.g." in message  # an example of the right unit


@pytest.mark.parametrize(("path", "value", "words"), [
    ("options.overlay.premium_budget_bps", 0.005, ["a fraction, not bps"]),
    ("options.overlay.put_delta", -25, ["a delta in percent", "put_delta = -0.25"]),
    ("options.hedge_trigger.delta_band_bps", 0.02, ["a fraction, not bps"]),
    ("options.hedge_trigger.iv_move_points", 0.05, ["not vol points", "iv_move_points = 5"]),
])
def test_options_wrong_units_are_refused(tmp_path, path, value, words):
    _, sub, field = path.split(".")
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, "options", {sub: {field: value}})
    for word in [path, repr(value), *words]:
        assert word in str(err.value), str(err.value)


def test_right_units_pass_and_keep_their_values(tmp_path):
    cfg = _load(tmp_path, "transactions", {"max_fee_per_gas_gwei": 50, "slippage_budget_bps": 50,
                                           "priority_fee_percentile": 0, "gas_limit_margin": 1.3})
    assert cfg.transactions.max_fee_per_gas_gwei == 50 and cfg.transactions.priority_fee_percentile == 0
    cfg = _load(tmp_path, "policy", {"es_limit": 0.08, "volatility_target": 0.4, "cash_buffer_bps": 0,
                                     "weight_drift_bps": 300})
    assert cfg.policy.es_limit == 0.08 and cfg.policy.cash_buffer_bps == 0


def test_flat_layout_and_set_override_are_checked_the_same_way(tmp_path):
    with pytest.raises(ValueError, match="max_fee_per_gas_gwei = 50000000000.0: probably in wei"):
        KeeperConfig(**CHAIN, max_fee_per_gas_gwei=50e9)
    cfg = KeeperConfig(**CHAIN)
    with pytest.raises(ConfigError, match="policy.es_limit = 8: probably a percentage"):
        with_overrides(cfg, ["policy.es_limit=8"])


def test_every_message_names_all_offending_fields_at_once(tmp_path):
    path = tmp_path / "keeper.json"
    path.write_text(json.dumps({"chain": CHAIN, "transactions": {"max_fee_per_gas_gwei": 5e10},
                                "policy": {"es_limit": 5}}))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert "transactions.max_fee_per_gas_gwei" in str(err.value) and "policy.es_limit" in str(err.value)


def test_every_rule_names_a_real_field():
    from keeper.hedging import HedgeTriggerConfig
    from keeper.overlay import OverlayConfig

    nested = {"overlay": OverlayConfig, "hedge_trigger": HedgeTriggerConfig}
    for rule in UNIT_RULES:
        if len(rule.path) == 3:
            assert rule.path[2] in nested[rule.path[1]].__dataclass_fields__, rule.path
        else:
            assert rule.path[1] in KeeperConfig.model_fields[rule.path[0]].annotation.model_fields, rule.path
        assert rule.low is not None or rule.high is not None


def test_pydantic_range_errors_carry_the_unit_hint(tmp_path):
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, "transactions", {"max_fee_per_gas_gwei": -1})
    assert "transactions.max_fee_per_gas_gwei = -1" in str(err.value)
    assert "expected gwei, e.g. max_fee_per_gas_gwei = 50" in str(err.value)
