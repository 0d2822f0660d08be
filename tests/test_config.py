"""Unit tests of keeper.config: loading and validating a keeper configuration file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from keeper.config import KeeperConfig, TransactionSettings, load_config, with_overrides
from keeper.errors import ConfigError

VAULT = "0x" + "1234567890abcdef" * 2 + "12345678"
QUOTER = "0x" + "AbCdEf0123456789" * 2 + "abcdef01"


def minimal(**extra):
    return {"rpc_url": "http://127.0.0.1:8545", "vault_address": VAULT, "quoter_address": QUOTER, **extra}


def write_json(tmp_path: Path, data, name="keeper.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def test_addresses_are_well_formed_fixtures():
    assert len(VAULT) == len(QUOTER) == 42


def test_load_json(tmp_path):
    path = write_json(tmp_path, minimal(lookback_days=90, min_observations=40, risk_budget={"WETH": 0.25, "WBTC": 0.75},
                                        journal_path=str(tmp_path / "j.sqlite")))
    cfg = load_config(path)
    assert isinstance(cfg, KeeperConfig)
    assert cfg.chain.vault_address == VAULT and cfg.chain.quoter_address == QUOTER
    assert cfg.policy.lookback_days == 90 and cfg.policy.estimator.min_observations == 40
    assert cfg.policy.risk_budget == {"WETH": 0.25, "WBTC": 0.75}
    assert cfg.operations.journal_path == tmp_path / "j.sqlite"
    # omitted fields take their documented defaults
    assert cfg.transactions.slippage_budget_bps == TransactionSettings.model_fields["slippage_budget_bps"].default
    assert cfg.chain.private_key_env == "KEEPER_PRIVATE_KEY"


def test_load_toml(tmp_path):
    path = tmp_path / "keeper.toml"
    path.write_text(
        f'rpc_url = "http://localhost:8545"\n'
        f'vault_address = "{VAULT}"\n'
        f'quoter_address = "{QUOTER}"\n'
        "interval_seconds = 900.0\n"
        "cash_buffer_bps = 250\n"
        "\n[risk_budget]\nWETH = 0.5\nWBTC = 0.5\n"
    )
    cfg = load_config(path)
    assert cfg.chain.rpc_url == "http://localhost:8545"
    assert cfg.operations.interval_seconds == 900.0
    assert cfg.policy.cash_buffer_bps == 250.0
    assert cfg.policy.risk_budget == {"WETH": 0.5, "WBTC": 0.5}


def test_json_and_toml_with_the_same_values_give_the_same_config(tmp_path):
    data = minimal(drift_threshold_bps=150.0, deadline_seconds=300)
    toml = tmp_path / "same.toml"
    toml.write_text("\n".join(f"{k} = {json.dumps(v)}" for k, v in data.items()) + "\n")
    assert load_config(write_json(tmp_path, data)) == load_config(toml)


@pytest.mark.parametrize(
    "overrides, field",
    [
        pytest.param({"slipage_budget_bps": 10}, "slipage_budget_bps", id="unknown-key"),
        pytest.param({"vault_address": "0x1234"}, "vault_address", id="short-address"),
        pytest.param({"quoter_address": "0x" + "zz" * 20}, "quoter_address", id="non-hex-address"),
        pytest.param({"vault_address": "12" * 21}, "vault_address", id="no-0x-address"),
        pytest.param({"risk_budget": {"WETH": 1.5, "WBTC": -0.5}}, "risk_budget", id="budget-negative"),
        pytest.param({"lookback_days": 30, "min_observations": 30}, "min_observations", id="observations>lookback-1"),
        pytest.param({"cash_buffer_bps": 10_000}, "cash_buffer_bps", id="buffer-100%"),
        pytest.param({"slippage_budget_bps": 0}, "slippage_budget_bps", id="zero-slippage"),
        pytest.param({"interval_seconds": -1}, "interval_seconds", id="negative-interval"),
        pytest.param({"lookback_days": "many"}, "lookback_days", id="not-an-int"),
        # A value in the wrong unit is refused by the field's range, with the unit in the message.
        pytest.param({"es_limit": 8}, "es_limit", id="es-limit-in-percent"),
        pytest.param({"volatility_target": 40}, "volatility_target", id="vol-target-in-percent"),
        pytest.param({"cash_buffer_bps": 0.05}, "cash_buffer_bps", id="cash-buffer-as-a-fraction"),
    ],
)
def test_invalid_values_raise_config_error_naming_the_field(tmp_path, overrides, field):
    path = write_json(tmp_path, minimal(**overrides))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert field in str(info.value)
    assert str(path) in str(info.value)


def test_min_observations_fits_lookback_at_the_boundary(tmp_path):
    cfg = load_config(write_json(tmp_path, minimal(lookback_days=31, min_observations=30)))
    assert cfg.policy.estimator.min_observations == 30


def test_missing_required_field_is_named(tmp_path):
    data = minimal()
    del data["rpc_url"]
    with pytest.raises(ConfigError, match="rpc_url"):
        load_config(write_json(tmp_path, data))


def test_invalid_json_raises_config_error(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"rpc_url": "http://x", ')
    with pytest.raises(ConfigError, match="not valid JSON") as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_invalid_toml_raises_config_error(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("rpc_url = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(path)


def test_json_that_is_not_an_object_raises_config_error(tmp_path):
    with pytest.raises(ConfigError):
        load_config(write_json(tmp_path, [minimal()]))


def test_missing_file_raises_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "nope.json")


def test_config_is_frozen(tmp_path):
    cfg = load_config(write_json(tmp_path, minimal()))
    with pytest.raises(Exception):
        cfg.chain.rpc_url = "http://elsewhere"  # type: ignore[misc]
    assert cfg.chain.rpc_url == "http://127.0.0.1:8545"


def test_private_key_from_the_named_environment_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("TEST_KEEPER_KEY_FOR_CONFIG", "0x" + "ab" * 32)
    cfg = load_config(write_json(tmp_path, minimal(private_key_env="TEST_KEEPER_KEY_FOR_CONFIG")))
    assert cfg.private_key() == "0x" + "ab" * 32


@pytest.mark.parametrize("value", [None, ""], ids=["unset", "empty"])
def test_missing_private_key_raises_config_error_naming_the_variable(tmp_path, monkeypatch, value):
    if value is None:
        monkeypatch.delenv("TEST_KEEPER_KEY_MISSING", raising=False)
    else:
        monkeypatch.setenv("TEST_KEEPER_KEY_MISSING", value)
    cfg = load_config(write_json(tmp_path, minimal(private_key_env="TEST_KEEPER_KEY_MISSING")))
    with pytest.raises(ConfigError, match="TEST_KEEPER_KEY_MISSING"):
        cfg.private_key()


def test_the_readme_config_example_is_a_valid_config() -> None:
    import re
    import tomllib
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = re.search(r"```toml\n(.*?)```", text, re.S).group(1).replace('"0x..."', '"0x' + "11" * 20 + '"')
    config = KeeperConfig(**tomllib.loads(block))
    assert config.policy.es_limit == 0.08 and config.options.overlay.put_delta == -0.25 and config.chain.rpc_fallback_urls


def test_the_flat_layout_reads_into_the_sections(tmp_path):
    """A file written for the older flat layout gives the same config as its sectioned form."""
    flat = minimal(half_life_days=45.0, min_observations=40, drift_threshold_bps=150.0, es_limit=0.05,
                   slippage_budget_bps=30, interval_seconds=600, overlay={"put_delta": -0.3})
    sectioned = {
        "chain": {"rpc_url": "http://127.0.0.1:8545", "vault_address": VAULT, "quoter_address": QUOTER},
        "policy": {"estimator": {"method": "ewma", "half_life_days": 45.0, "min_observations": 40},
                   "weight_drift_bps": 150.0, "es_limit": 0.05},
        "options": {"overlay": {"put_delta": -0.3}},
        "transactions": {"slippage_budget_bps": 30},
        "operations": {"interval_seconds": 600},
    }
    assert load_config(write_json(tmp_path, flat, "flat.json")) == load_config(write_json(tmp_path, sectioned))
    # ... and a config written back out reads the same.
    cfg = load_config(write_json(tmp_path, flat, "flat.json"))
    assert load_config(write_json(tmp_path, json.loads(cfg.model_dump_json()), "again.json")) == cfg


def test_overrides_from_the_command_line(tmp_path):
    cfg = load_config(write_json(tmp_path, minimal()))
    changed = with_overrides(cfg, ["policy.es_limit=0.06", "transactions.slippage_budget_bps=30",
                                   "policy.estimator.half_life_days=45", "chain.rpc_url=http://other:8545"])
    assert changed.policy.es_limit == 0.06 and changed.transactions.slippage_budget_bps == 30
    assert changed.policy.estimator.half_life_days == 45 and changed.chain.rpc_url == "http://other:8545"
    for bad, match in (("policy.es_limt=0.1", "no field 'es_limt'"), ("es_limit=0.1", "section.field=value"),
                       ("policy.es_limit", "section.field=value"), ("policy.es_limit=8", "es_limit")):
        with pytest.raises(ConfigError, match=match):
            with_overrides(cfg, [bad])
