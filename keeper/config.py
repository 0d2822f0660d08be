"""Keeper configuration: one typed model (pydantic), validated once at start-up and passed explicitly.

:class:`KeeperConfig` has one section per concern, each a model of its own with units in the field names and
ranges that refuse a value in the wrong unit:

* ``chain`` (:class:`ChainSettings`): RPC endpoints, the vault, QuoterV2 and option market addresses, the key.
* ``policy`` (:class:`keeper.policy_config.PolicyConfig`): the decision policy, the same model ``keeper backtest``
  runs (estimator, history, conditioning gate, allocator, cash buffer, volatility target, ES limit, triggers,
  cost gate).
* ``options`` (:class:`OptionsSettings`): the put overlay and the hedge trigger of the options mode.
* ``transactions`` (:class:`TransactionSettings`): slippage budget, halvings, deadlines, fees and their caps,
  replacement of stuck transactions, private submission.
* ``operations`` (:class:`OperationsSettings`): schedule, journal, health, metrics, logs, circuit breakers,
  standby.

Loaded from a JSON or TOML file with :func:`load_config`; ``--set section.field=value`` on the command line
overrides any field (:func:`with_overrides`). A file in the older flat layout (every field at the top level,
``drift_threshold_bps`` for ``policy.weight_drift_bps``, ``half_life_days`` / ``min_observations`` /
``periods_per_year`` / ``estimator_method`` for ``policy.estimator``) is read into the sections
(:data:`FLAT_FIELDS`). For example::

    [chain]
    rpc_url = "http://127.0.0.1:8545"
    vault_address = "0x..."
    quoter_address = "0x..."

    [policy]
    es_limit = 0.08              # 1-day 99 % ES at most 8 % of NAV: scale toward the base asset
    es_method = "gaussian"       # historical needs >= 100 daily returns at 99 %
    volatility_target = 0.40     # annualised
    max_seconds_between = 2592000  # rebalance at least every 30 days (seconds: any bar size)
    bar_seconds = 86400          # daily bars (3600: hourly); the estimator annualises with 365 days / bar_seconds
    cost_aware = true            # ... but only when the risk benefit pays gas + fee + impact
"""

from __future__ import annotations

import json
import math
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from keeper.errors import ConfigError
from keeper.hedging import HedgeTriggerConfig
from keeper.overlay import OverlayConfig
from keeper.policy_config import RENAMED_FIELDS, PolicyConfig


@dataclass(frozen=True)
class UnitRule:
    """The unit of one config field and the range outside which a value is in a wrong unit.

    A value below ``low`` or above ``high`` (where set) is refused before anything else is validated, with a
    message naming the field, the value, the expected unit, the likely wrong unit and an example (zero is
    always let through: it means "off" where a field allows it).
    """

    path: tuple[str, ...]
    unit: str
    example: str
    low: float | None = None
    low_means: str = ""
    high: float | None = None
    high_means: str = ""


_FRACTION_NOT_BPS = "probably a fraction, not bps (1 bp = 0.01 %)"
_WEI_NOT_GWEI = "probably in wei, not gwei (1 gwei = 1e9 wei)"
_PERCENT_NOT_FRACTION = "probably a percentage, not a fraction (8 % is 0.08)"
_MINUTES = "probably in minutes or hours, not seconds"
_MILLISECONDS = "probably in milliseconds, not seconds"

#: Every config field with a unit in its name or type, and the range that refuses the common wrong unit.
UNIT_RULES: tuple[UnitRule, ...] = (
    UnitRule(("chain", "max_oracle_age_seconds"), "seconds", "max_oracle_age_seconds = 7200 (two hours)",
             60, _MINUTES, 31_536_000, _MILLISECONDS),
    UnitRule(("chain", "rpc_timeout_seconds"), "seconds", "rpc_timeout_seconds = 10", None, "",
             3_600, _MILLISECONDS),
    UnitRule(("transactions", "slippage_budget_bps"), "bps of the oracle-fair output",
             "slippage_budget_bps = 50 (0.5 %)", 1, _FRACTION_NOT_BPS, 1_000,
             "more than the vault's maxSlippageBps bound of 1,000 bps accepts"),
    UnitRule(("transactions", "max_fee_per_gas_gwei"), "gwei", "max_fee_per_gas_gwei = 50", None, "",
             100_000, _WEI_NOT_GWEI),
    UnitRule(("transactions", "max_priority_fee_per_gas_gwei"), "gwei", "max_priority_fee_per_gas_gwei = 2",
             None, "", 10_000, _WEI_NOT_GWEI),
    UnitRule(("transactions", "min_priority_fee_per_gas_gwei"), "gwei", "min_priority_fee_per_gas_gwei = 0.01",
             None, "", 10_000, _WEI_NOT_GWEI),
    UnitRule(("transactions", "base_fee_gate_gwei"), "gwei", "base_fee_gate_gwei = 30", None, "",
             100_000, _WEI_NOT_GWEI),
    UnitRule(("transactions", "priority_fee_percentile"), "percent (0 to 100)", "priority_fee_percentile = 50 "
             "(the median)", 1, "probably a fraction, not a percentile (the median is 50)"),
    UnitRule(("transactions", "gas_limit_margin"), "a multiplier of the gas estimate", "gas_limit_margin = 1.3",
             None, "", 10, "probably a percentage, not a multiplier (30 % more is 1.3)"),
    UnitRule(("transactions", "deadline_seconds"), "seconds", "deadline_seconds = 600 (ten minutes)", 12,
             _MINUTES, 86_400, _MILLISECONDS),
    UnitRule(("transactions", "eth_price_usd"), "USD per ETH", "eth_price_usd = 3000", None, "", 1e7,
             "probably a fixed-point or base-unit price, not USD"),
    UnitRule(("policy", "cash_buffer_bps"), "bps of NAV", "cash_buffer_bps = 500 (5 %)", 1, _FRACTION_NOT_BPS),
    UnitRule(("policy", "weight_drift_bps"), "bps of NAV", "weight_drift_bps = 300 (3 %)", 1, _FRACTION_NOT_BPS,
             10_000, "more than the whole NAV"),
    UnitRule(("policy", "volatility_target"), "annualised fraction", "volatility_target = 0.4 (40 % a year)",
             None, "", 5, _PERCENT_NOT_FRACTION),
    UnitRule(("policy", "es_limit"), "fraction of NAV", "es_limit = 0.08 (8 % of NAV)", None, "", 1,
             _PERCENT_NOT_FRACTION),
    UnitRule(("policy", "es_confidence"), "fraction", "es_confidence = 0.99", None, "", 1, _PERCENT_NOT_FRACTION),
    UnitRule(("policy", "es_trigger_tolerance"), "fraction of the ES limit", "es_trigger_tolerance = 0.1 (10 %)",
             None, "", 5, _PERCENT_NOT_FRACTION),
    UnitRule(("policy", "rrc_band"), "fraction of risk", "rrc_band = 0.05", None, "", 1, _PERCENT_NOT_FRACTION),
    UnitRule(("policy", "max_gross_exposure"), "fraction of NAV", "max_gross_exposure = 1.0", None, "", 1,
             _PERCENT_NOT_FRACTION),
    UnitRule(("options", "overlay", "premium_budget_bps"), "bps of NAV per period",
             "premium_budget_bps = 50 (0.5 %)", 1, _FRACTION_NOT_BPS, 10_000, "more than the whole NAV"),
    UnitRule(("options", "overlay", "put_delta"), "Black-Scholes delta in [-1, 0]", "put_delta = -0.25",
             -1, "probably a delta in percent (25-delta is -0.25)", 0, "a call's delta, but a put's is negative"),
    UnitRule(("options", "hedge_trigger", "delta_band_bps"), "bps of NAV", "delta_band_bps = 200 (2 %)", 1,
             _FRACTION_NOT_BPS, 10_000, "more than the whole NAV"),
    UnitRule(("options", "hedge_trigger", "iv_move_points"), "vol points (1 point = 0.01 annualised)",
             "iv_move_points = 5", 0.5, "probably an annualised fraction, not vol points (0.05 is 5 points)", 100,
             "more than 100 vol points"),
    UnitRule(("operations", "interval_seconds"), "seconds", "interval_seconds = 3600 (hourly)", None, "",
             31_536_000, _MILLISECONDS),
    UnitRule(("operations", "breaker_max_oracle_age_seconds"), "seconds",
             "breaker_max_oracle_age_seconds = 7200 (two hours)", 60, _MINUTES, 31_536_000, _MILLISECONDS),
    UnitRule(("operations", "breaker_max_pool_deviation_bps"), "bps of the oracle price",
             "breaker_max_pool_deviation_bps = 200 (2 %)", 1, _FRACTION_NOT_BPS, 10_000, "more than 100 %"),
    UnitRule(("operations", "breaker_max_price_jump_bps"), "bps of the previous price",
             "breaker_max_price_jump_bps = 2500 (25 %)", 1, _FRACTION_NOT_BPS),
    UnitRule(("operations", "min_keeper_balance_eth"), "ETH", "min_keeper_balance_eth = 0.05", None, "", 10_000,
             "probably in wei, not ETH (1 ETH = 1e18 wei)"),
)
_RULES_BY_PATH = {rule.path: rule for rule in UNIT_RULES}


def unit_hint(path: tuple[str, ...]) -> str:
    """``"; expected <unit>, e.g. <example>"`` for a field with a unit rule, else ``""`` (error messages)."""
    rule = _RULES_BY_PATH.get(tuple(map(str, path)))
    return f"; expected {rule.unit}, e.g. {rule.example}" if rule else ""


def check_units(nested: Mapping[str, Any]) -> None:
    """Refuses a value in the wrong unit (:data:`UNIT_RULES`) in a config already routed into sections.

    Raises
    ------
    ValueError
        ``"<section.field> = <value>: probably <wrong unit>; expected <unit> (<bound>), e.g. <example>"``; every
        offending field in one message, ``"; "``-separated.
    """
    problems = []
    for rule in UNIT_RULES:
        node: Any = nested
        for key in rule.path:
            node = node.get(key) if isinstance(node, Mapping) else getattr(node, key, None)
            if node is None:
                break
        if isinstance(node, bool) or not isinstance(node, (int, float)) or node == 0 or math.isnan(node):
            continue
        name = ".".join(rule.path)
        if rule.low is not None and node < rule.low:
            means, bound = rule.low_means, f"at least {rule.low:g}"
        elif rule.high is not None and node > rule.high:
            means, bound = rule.high_means, f"at most {rule.high:,g}"
        else:
            continue
        problems.append(f"{name} = {node!r}: {means}; expected {rule.unit} ({bound}), e.g. {rule.example}")
    if problems:
        raise ValueError("; ".join(problems))


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, ser_json_inf_nan="constants")


class ChainSettings(_Section):
    """Where the keeper reads and sends: RPC endpoints, contract addresses, the key.

    The keeper's key comes from ``ape_account`` (an alias in ape's account store, unlocked with the
    passphrase in ``APE_ACCOUNTS_<alias>_PASSPHRASE``) or from the environment variable named by
    ``private_key_env``.
    """

    rpc_url: str = Field(description="JSON-RPC endpoint of the chain")
    chain_id: int | None = Field(
        None, gt=0, description="EIP-155 chain id the keeper refuses to run without (11155111 Ethereum Sepolia, "
        "421614 Arbitrum Sepolia, 84532 Base Sepolia, 31337 Anvil); the deployment file's when omitted"
    )
    deployment_file: Path | None = Field(
        None, description="deployments/<network>.json written by `ape run deploy` (or scripts/deploy.py): "
        "vault_address, quoter_address, router_address and chain_id come from it when not given (the options mode "
        "stays off until option_market_address is set, e.g. to the file's option_market)"
    )
    rpc_fallback_urls: list[str] = Field(
        default_factory=list, description="further JSON-RPC endpoints of the same chain, tried in order after rpc_url"
    )
    rpc_timeout_seconds: float = Field(10.0, gt=0, description="per-request RPC timeout, seconds")
    rpc_max_attempts: int = Field(5, ge=1, le=50, description="attempts per RPC request over all endpoints")
    rpc_backoff_initial_seconds: float = Field(0.25, ge=0, description="backoff scale between RPC retries, seconds")
    rpc_backoff_max_seconds: float = Field(8.0, ge=0, description="cap on one backoff wait between RPC retries, seconds")
    vault_address: str = Field(description="RiskParityVault address")
    quoter_address: str = Field(description="Uniswap V3 QuoterV2 address")
    router_address: str | None = Field(
        None, description="Uniswap V3 router the vault swaps through (the start-up check asks it for its factory); "
        "the deployment file's when omitted"
    )
    option_market_address: str | None = Field(
        None, description="OptionMarket the vault trades on; when set, each tick runs the option overlay and the "
        "delta hedge (spot + option delta to the ERC targets) in one rebalanceWithOptions instead of a spot-only rebalance"
    )
    private_key_env: str = Field("KEEPER_PRIVATE_KEY", description="env var holding the keeper's hex key")
    ape_account: str | None = Field(None, description="alias of an ape account to sign with instead")
    max_oracle_age_seconds: int | None = Field(
        None, gt=0, description="refuse answers older than this; the vault's heartbeat when omitted"
    )

    @model_validator(mode="before")
    @classmethod
    def _from_deployment_file(cls, data: Any) -> Any:
        if not isinstance(data, Mapping) or not data.get("deployment_file"):
            return data
        from keeper.networks import load_deployment_record

        record = load_deployment_record(Path(data["deployment_file"]))
        filled = dict(data)
        for field, value in (("vault_address", record.vault), ("quoter_address", record.quoter),
                             ("router_address", record.router), ("chain_id", record.chain_id)):
            if filled.get(field) is None and value:
                filled[field] = value
        return filled

    @field_validator("vault_address", "quoter_address", "option_market_address", "router_address")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not (value.startswith("0x") and len(value) == 42):
            raise ValueError(f"not a 20-byte hex address: {value!r}")
        int(value, 16)
        return value


class TransactionSettings(_Section):
    """How a decided rebalance is sent: its slippage budget and step halvings, deadline, fees and their caps,
    replacement of a stuck transaction, private submission."""

    slippage_budget_bps: float = Field(50.0, gt=0, lt=10_000, description="minAmountOut below oracle-fair output, bps")
    max_step_halvings: int = Field(
        2, ge=0, le=10, description="when quotes miss the slippage budget, halve the step this many times"
    )
    min_trade_usd: float = Field(10.0, ge=0, description="legs smaller than this are dropped, USD")
    deadline_seconds: int = Field(600, gt=0, description="rebalance deadline after the latest block, seconds")
    receipt_timeout_seconds: float = Field(180.0, gt=0, description="wait this long for a receipt, seconds")
    max_fee_per_gas_gwei: float = Field(200.0, gt=0, description="hard cap on maxFeePerGas, gwei")
    max_priority_fee_per_gas_gwei: float = Field(2.0, ge=0, description="cap on the priority fee, gwei")
    gas_limit_margin: float = Field(1.3, ge=1.0, description="gas limit = estimate × margin")
    base_fee_gate_gwei: float | None = Field(
        None, gt=0, description="skip a tick while the next block's base fee is above this, gwei (no gate when omitted)"
    )
    base_fee_multiplier: float = Field(
        2.0, ge=1.0, le=10.0, description="maxFeePerGas = next base fee × this + tip (2: room for six full blocks)"
    )
    fee_history_blocks: int = Field(
        10, ge=0, le=1024, description="blocks of eth_feeHistory behind the tip estimate; 0 pays the tip cap"
    )
    priority_fee_percentile: float = Field(
        50.0, ge=0, le=100, description="percentile of each block's priority fees used as the tip, %"
    )
    min_priority_fee_per_gas_gwei: float = Field(0.01, ge=0, description="floor of the estimated tip, gwei (clipped to the tip cap)")
    fee_bump_factor: float = Field(
        1.125, ge=1.1, le=3.0, description="replacement fees = previous × this (node minimum ×1.10), geometric"
    )
    max_fee_bumps: int = Field(5, ge=0, le=50, description="replacements of one stuck transaction before giving up")
    stuck_after_seconds: float = Field(90.0, gt=0, description="a sent transaction unmined this long is stuck, seconds")
    stuck_after_blocks: int = Field(5, ge=1, description="a sent transaction unmined this many blocks is stuck, blocks")
    private_rpc_url: str | None = Field(
        None, description="JSON-RPC endpoint that only submits transactions (private relay against MEV)"
    )
    allow_public_fallback: bool = Field(
        False, description="send through rpc_url when private_rpc_url cannot be reached (exposes the trade)"
    )
    eth_price_usd: float = Field(
        3000.0, gt=0, description="USD per ETH used to value gas in the cost-aware trigger"
    )


class OperationsSettings(_Section):
    """How the keeper runs: schedule, journal, health and metrics, logs, circuit breakers, standby."""

    interval_seconds: float = Field(3600.0, gt=0, description="seconds between scheduled ticks")
    tick_cron: str | None = Field(
        None, description="5-field crontab (UTC) scheduling ticks instead of interval_seconds, e.g. '0 * * * *'"
    )
    misfire_grace_seconds: int | None = Field(
        None, gt=0, description="a tick that starts this late still runs, seconds; interval_seconds when omitted"
    )
    heartbeat_seconds: float = Field(60.0, gt=0, description="seconds between heartbeats (logs and metrics)")
    daily_report_hour_utc: int = Field(0, ge=0, le=23, description="hour (UTC) of the daily report")
    metrics_port: int = Field(0, ge=0, le=65535, description="port of /metrics and /health; 0 = off")
    metrics_host: str = Field("127.0.0.1", description="interface the metrics endpoint listens on")
    health_max_tick_age_seconds: float | None = Field(
        None, gt=0, description="unhealthy when the last successful tick is older, seconds; 3 × interval when omitted"
    )
    min_keeper_balance_eth: float = Field(0.05, ge=0, description="unhealthy below this keeper balance, ETH")
    log_json: bool = Field(False, description="one JSON object per log line")
    journal_path: Path = Field(Path("keeper-journal.sqlite"), description="SQLite journal of every tick")
    breaker_max_oracle_age_seconds: int | None = Field(
        None, gt=0, description="circuit breaker: an oracle answer older than this, seconds; off when omitted"
    )
    breaker_stale_oracle_action: Literal["skip", "derisk"] = Field("skip", description="on a stale oracle")
    breaker_max_pool_deviation_bps: float | None = Field(
        None, gt=0, description="circuit breaker: |pool − oracle| / oracle above this, bps; off when omitted"
    )
    breaker_pool_deviation_action: Literal["skip", "derisk"] = Field("skip", description="on a pool deviation")
    breaker_max_price_jump_bps: float | None = Field(
        None, gt=0, description="circuit breaker: |p / p_previous_tick − 1| above this, bps; off when omitted"
    )
    breaker_price_jump_action: Literal["skip", "derisk"] = Field("skip", description="on a price jump")
    breaker_chain_stall_seconds: float | None = Field(
        None, gt=0, description="circuit breaker: the head block unchanged this long, seconds; off when omitted"
    )
    breaker_chain_stall_action: Literal["skip", "derisk"] = Field("skip", description="on a stalled chain")
    standby_delay_seconds: float = Field(
        0.0, ge=0, description="wait this long before sending, then re-check the epoch (0 for the primary keeper), s"
    )


class OptionsSettings(_Section):
    """The options mode (``chain.option_market_address`` set): the put overlay and the delta hedge's trigger."""

    overlay: OverlayConfig = Field(
        default_factory=OverlayConfig, description="keeper.overlay.OverlayConfig: put_delta = -0.25, tenor_days = 30, "
        "roll_before_days = 5, premium_budget_bps = 50 (bps of NAV per period), vega/gamma budgets"
    )
    hedge_trigger: HedgeTriggerConfig = Field(
        default_factory=HedgeTriggerConfig, description="keeper.hedging.HedgeTriggerConfig: delta_band_bps, "
        "max_interval_seconds, iv_move_points, mode ('budget': protection held; 'delta_target'), "
        "max_net_delta_per_asset, max_net_delta_total"
    )


#: The older flat layout: each top-level field name and the path it now has (section, field[, subfield]).
FLAT_FIELDS: dict[str, tuple[str, ...]] = {
    **{name: ("chain", name) for name in ChainSettings.model_fields},
    **{name: ("transactions", name) for name in TransactionSettings.model_fields},
    **{name: ("operations", name) for name in OperationsSettings.model_fields},
    **{name: ("options", name) for name in OptionsSettings.model_fields},
    **{name: ("policy", name) for name in PolicyConfig.model_fields if name != "estimator"},
    "drift_threshold_bps": ("policy", "weight_drift_bps"),
    # Day-based trigger keys of earlier files: routed to the policy, which refuses them naming the new field.
    **{old: ("policy", old) for old in RENAMED_FIELDS},
    "estimator_method": ("policy", "estimator", "method"),
    "half_life_days": ("policy", "estimator", "half_life_days"),
    "min_observations": ("policy", "estimator", "min_observations"),
    "periods_per_year": ("policy", "estimator", "periods_per_year"),
}
_SECTIONS = ("chain", "policy", "options", "transactions", "operations")


def _estimator_dict(value: Any) -> dict[str, Any]:
    if isinstance(value, Mapping):
        return dict(value)
    from dataclasses import asdict, is_dataclass

    return asdict(value) if is_dataclass(value) else dict(value)


def _nest(data: Mapping[str, Any]) -> dict[str, Any]:
    """Routes flat keys into their sections (:data:`FLAT_FIELDS`); keys already in sections stay."""
    out: dict[str, Any] = {}
    for name in _SECTIONS:
        if name in data:
            value = data[name]
            out[name] = dict(value) if isinstance(value, Mapping) else value
    for key, value in data.items():
        if key in _SECTIONS:
            continue
        path = FLAT_FIELDS.get(key)
        if path is None:
            out.setdefault("_unknown", []).append(key)
            continue
        section = out.setdefault(path[0], {})
        if not isinstance(section, dict):
            section = out[path[0]] = section.model_dump() if hasattr(section, "model_dump") else dict(section)
        if len(path) == 2:
            section[path[1]] = value
        else:
            estimator = section.setdefault("estimator", {"method": "ewma", "half_life_days": 30.0,
                                                         "min_observations": 30})
            if not isinstance(estimator, dict):
                estimator = section["estimator"] = _estimator_dict(estimator)
            estimator[path[2]] = value
    policy = out.get("policy")
    if isinstance(policy, dict) and isinstance(policy.get("estimator"), dict):
        estimator = policy["estimator"]
        if estimator.get("method", "ewma") != "ewma":
            estimator["half_life_days"] = None  # only the EWMA has a half-life
    return out


class KeeperConfig(BaseModel):
    """Everything a keeper needs to run against one vault, one section per concern (module doc)."""

    model_config = ConfigDict(extra="forbid", frozen=True, ser_json_inf_nan="constants")

    chain: ChainSettings
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    options: OptionsSettings = Field(default_factory=OptionsSettings)
    transactions: TransactionSettings = Field(default_factory=TransactionSettings)
    operations: OperationsSettings = Field(default_factory=OperationsSettings)

    @model_validator(mode="before")
    @classmethod
    def _sections(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        nested = _nest(data)
        unknown = nested.pop("_unknown", None)
        if unknown:
            raise ValueError(f"unknown setting(s) {sorted(unknown)}: not a field of any section "
                             f"({', '.join(_SECTIONS)}); see keeper.config")
        check_units(nested)
        return nested

    def private_key(self) -> str:
        """The keeper's private key (hex).

        Raises
        ------
        ConfigError
            When neither an ape account nor the environment variable provides one.
        """
        chain = self.chain
        if chain.ape_account:
            try:
                from ape import accounts  # imported lazily: ape is slow to import

                account = accounts.load(chain.ape_account)
                passphrase = os.environ.get(f"APE_ACCOUNTS_{chain.ape_account}_PASSPHRASE")
                if passphrase is None:
                    raise ConfigError(
                        f"set APE_ACCOUNTS_{chain.ape_account}_PASSPHRASE to unlock ape account {chain.ape_account!r}"
                    )
                from eth_account import Account

                return Account.decrypt(account.keyfile, passphrase).hex()
            except ConfigError:
                raise
            except Exception as exc:  # noqa: BLE001
                raise ConfigError(f"cannot load ape account {chain.ape_account!r}: {exc}") from exc
        key = os.environ.get(chain.private_key_env)
        if not key:
            raise ConfigError(
                f"no keeper key: set the environment variable {chain.private_key_env} or `ape_account` in the config"
            )
        return key


def load_config(path: Path) -> KeeperConfig:
    """Reads a JSON or TOML config file.

    Raises
    ------
    ConfigError
        When the file is missing, unparsable, or a value is invalid (the message lists each field).
    """
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc}") from exc
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"config {path} is not valid {'TOML' if path.suffix == '.toml' else 'JSON'}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config {path} must hold a table/object of settings, got {type(data).__name__}")
    try:
        return KeeperConfig(**data)
    except ValidationError as exc:
        raise ConfigError(f"invalid config {path}: {_problems(exc)}") from exc


def with_overrides(config: KeeperConfig, assignments: list[str]) -> KeeperConfig:
    """``config`` with ``section.field=value`` assignments applied (the command line's ``--set``), validated.

    Values are parsed as JSON when they parse (numbers, true/false, null, lists, objects), else taken as strings;
    a field of a nested model is reached with more dots (``policy.estimator.half_life_days=45``).

    Raises
    ------
    ConfigError
        An assignment without ``=``, a path that names no field, or a value the field refuses.
    """
    data = config.model_dump()
    for assignment in assignments:
        path, sep, raw = assignment.partition("=")
        keys = path.strip().split(".")
        if not sep or len(keys) < 2 or keys[0] not in _SECTIONS:
            raise ConfigError(f"--set {assignment!r}: expected section.field=value with a section in {_SECTIONS}")
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        node = data
        for key in keys[:-1]:
            if not isinstance(node.get(key), dict):
                raise ConfigError(f"--set {assignment!r}: {key!r} is not a section or model with fields")
            node = node[key]
        if keys[-1] not in node:
            raise ConfigError(f"--set {assignment!r}: no field {keys[-1]!r} in {'.'.join(keys[:-1])} "
                              f"(fields: {', '.join(sorted(node))})")
        node[keys[-1]] = value
    try:
        return KeeperConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"invalid --set override: {_problems(exc)}") from exc


def _problems(exc: ValidationError) -> str:
    """One ``field = value: message; expected unit, e.g. example`` per error (the unit from :data:`UNIT_RULES`)."""
    out = []
    for error in exc.errors():
        loc = tuple(str(part) for part in error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        if not loc:  # a model-level check already names its field and value
            out.append(message)
            continue
        value = f" = {error['input']!r}" if "input" in error and not isinstance(error["input"], Mapping) else ""
        out.append(f"{'.'.join(loc)}{value}: {message}{unit_hint(loc)}")
    return "; ".join(out)
