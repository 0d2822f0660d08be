"""Keeper configuration, validated once at start-up (pydantic) and passed explicitly.

Loaded from a JSON or TOML file with :func:`load_config`. Units are in the field names.

The decision-policy fields (``estimator_method`` … ``min_benefit_to_cost``, at the end) are the live
tick's :class:`keeper.policy.PolicyConfig` (:meth:`~keeper.policy.PolicyConfig.from_keeper_config`), the
same policy the backtester runs; their defaults reproduce plain equal risk contributions with a
``drift_threshold_bps`` trigger. ``eth_price_usd`` values gas in the cost-aware trigger when the vault
lists no WETH/ETH asset (otherwise that asset's oracle price is used). For example::

    es_limit = 0.08              # 1-day 99 % ES at most 8 % of NAV: scale toward the base asset
    es_method = "gaussian"       # historical needs >= 100 daily returns at 99 %
    volatility_target = 0.40     # annualised
    max_days_between = 30        # rebalance at least monthly
    cost_aware = true            # ... but only when the risk benefit pays gas + fee + impact
"""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from keeper.errors import ConfigError


class KeeperConfig(BaseModel):
    """Everything a keeper needs to run against one vault.

    The keeper's key comes from ``ape_account`` (an alias in ape's account store, unlocked with the
    passphrase in ``APE_ACCOUNTS_<alias>_PASSPHRASE``) or from the environment variable named by
    ``private_key_env``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    rpc_url: str = Field(description="JSON-RPC endpoint of the chain")
    vault_address: str = Field(description="RiskParityVault address")
    quoter_address: str = Field(description="Uniswap V3 QuoterV2 address")
    private_key_env: str = Field("KEEPER_PRIVATE_KEY", description="env var holding the keeper's hex key")
    ape_account: str | None = Field(None, description="alias of an ape account to sign with instead")
    interval_seconds: float = Field(3600.0, gt=0, description="seconds between scheduled ticks")
    half_life_days: float = Field(30.0, gt=0, description="EWMA half-life of the covariance, days")
    lookback_days: int = Field(180, ge=3, description="days of oracle history fed to the estimator")
    min_observations: int = Field(30, ge=2, description="fewest daily returns the estimator accepts")
    periods_per_year: int = Field(365, gt=0, description="annualisation factor of daily returns")
    risk_budget: dict[str, float] | None = Field(
        None, description="risk budget by token symbol (sums to 1); equal when omitted"
    )
    drift_threshold_bps: float = Field(300.0, ge=0, description="skip when max |w - w*| (NAV fractions) is below, bps")
    cash_buffer_bps: float = Field(500.0, ge=0, lt=10_000, description="NAV kept in the base asset for withdrawals, bps")
    slippage_budget_bps: float = Field(50.0, gt=0, lt=10_000, description="minAmountOut below oracle-fair output, bps")
    max_step_halvings: int = Field(
        2, ge=0, le=10, description="when quotes miss the slippage budget, halve the step this many times"
    )
    min_trade_usd: float = Field(10.0, ge=0, description="legs smaller than this are dropped, USD")
    max_oracle_age_seconds: int | None = Field(
        None, gt=0, description="refuse answers older than this; the vault's heartbeat when omitted"
    )
    max_fee_per_gas_gwei: float = Field(200.0, gt=0, description="hard cap on maxFeePerGas, gwei")
    max_priority_fee_per_gas_gwei: float = Field(2.0, ge=0, description="cap on the priority fee, gwei")
    gas_limit_margin: float = Field(1.3, ge=1.0, description="gas limit = estimate × margin")
    deadline_seconds: int = Field(600, gt=0, description="rebalance deadline after the latest block, seconds")
    receipt_timeout_seconds: float = Field(180.0, gt=0, description="wait this long for a receipt, seconds")
    journal_path: Path = Field(Path("keeper-journal.sqlite"), description="SQLite journal of every tick")
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
    # --- Operations: RPC failover, schedule, observability, circuit breakers, redundancy ---------------
    rpc_fallback_urls: list[str] = Field(
        default_factory=list, description="further JSON-RPC endpoints of the same chain, tried in order after rpc_url"
    )
    rpc_timeout_seconds: float = Field(10.0, gt=0, description="per-request RPC timeout, seconds")
    rpc_max_attempts: int = Field(5, ge=1, le=50, description="attempts per RPC request over all endpoints")
    rpc_backoff_initial_seconds: float = Field(0.25, ge=0, description="backoff scale between RPC retries, seconds")
    rpc_backoff_max_seconds: float = Field(8.0, ge=0, description="cap on one backoff wait between RPC retries, seconds")
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
    # --- Decision policy (keeper.policy.PolicyConfig.from_keeper_config): defaults reproduce plain ERC -------
    estimator_method: Literal["ewma", "sample", "ledoit_wolf"] = Field(
        "ewma", description="covariance estimator of the policy (half_life_days applies to ewma)"
    )
    max_condition_number: float = Field(
        1e10, gt=1.0, description="conditioning gate: largest condition number of an accepted covariance"
    )
    allocator: Literal["risk_budgeting", "inverse_volatility", "equal_weight"] = Field(
        "risk_budgeting", description="first method of the allocator's fallback chain"
    )
    volatility_target: float | None = Field(
        None, gt=0, description="ex-ante volatility target, annualised fraction (0.4 = 40 %/year); off when omitted"
    )
    max_gross_exposure: float = Field(1.0, gt=0, le=1.0, description="cap on the risky weights' sum, fraction of NAV")
    es_limit: float | None = Field(
        None, ge=0, description="Expected Shortfall limit, fraction of NAV (0.08 = 8 %); off when omitted"
    )
    es_method: Literal["historical", "gaussian", "cornish_fisher"] = Field(
        "historical", description="ES measure the limit is stated in"
    )
    es_confidence: float = Field(0.99, ge=0.5, lt=1.0, description="ES confidence level, fraction")
    es_horizon_days: int = Field(1, ge=1, description="ES horizon, days")
    es_trigger_tolerance: float = Field(
        0.1, ge=0, description="trigger: holdings whose ES exceeds es_limit by more than this fraction of it "
        "are traded back (0.1: above 110 % of the limit)"
    )
    min_weight: dict[str, float] | None = Field(
        None, description="lower bound by symbol on the risky sleeve's weights, fraction in [0, 1]"
    )
    max_weight: dict[str, float] | None = Field(
        None, description="upper bound by symbol on the risky sleeve's weights, fraction in (0, 1]"
    )
    rrc_band: float | None = Field(
        None, ge=0, description="trigger: max |RRC_i(w) − RRC_i(w*)|, fraction; off when omitted"
    )
    regime_distance: float | None = Field(
        None, ge=0, description="trigger: covariance distance to the last rebalance's, dimensionless; off when omitted"
    )
    max_days_between: float | None = Field(
        None, ge=0, description="trigger: days since the last rebalance; off when omitted"
    )
    cost_aware: bool = Field(False, description="trade only when the expected risk benefit pays gas + fee + impact")
    risk_aversion: float = Field(5.0, gt=0, description="cost gate's risk aversion lambda, per year")
    benefit_horizon_days: float = Field(30.0, gt=0, description="cost gate: days over which the risk benefit counts")
    min_benefit_to_cost: float = Field(1.0, gt=0, description="cost gate: trade when benefit >= this × cost")
    eth_price_usd: float = Field(
        3000.0, gt=0, description="USD per ETH used to value gas in the cost-aware trigger"
    )
    # --- Options: protective-put overlay and delta hedge (keeper.hedging, keeper.option_orders) -----
    option_market_address: str | None = Field(
        None, description="OptionMarket the vault trades on; when set, each tick runs the option overlay and the "
        "delta hedge (spot + option delta to the ERC targets) in one rebalanceWithOptions instead of a spot-only rebalance"
    )
    overlay: dict[str, Any] = Field(
        default_factory=dict, description="keeper.hedging.OverlayConfig fields, e.g. put_delta = -0.25, tenor_days = 30, "
        "roll_before_days = 5, premium_budget_bps = 50 (bps of NAV per period), vega/gamma budgets"
    )
    hedge_trigger: dict[str, Any] = Field(
        default_factory=dict, description="keeper.hedging.HedgeTriggerConfig fields: delta_band_bps, "
        "max_interval_seconds, iv_move_points"
    )

    @field_validator("vault_address", "quoter_address", "option_market_address")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not (value.startswith("0x") and len(value) == 42):
            raise ValueError(f"not a 20-byte hex address: {value!r}")
        int(value, 16)
        return value

    @model_validator(mode="after")
    def _budget(self) -> "KeeperConfig":
        if self.risk_budget is not None:
            total = sum(self.risk_budget.values())
            if any(v <= 0 for v in self.risk_budget.values()) or abs(total - 1.0) > 1e-9:
                raise ValueError(f"risk_budget must be positive and sum to 1, got sum {total}")
        if self.min_observations > self.lookback_days - 1:
            raise ValueError(
                f"min_observations ({self.min_observations}) needs lookback_days >= {self.min_observations + 1}"
            )
        return self

    def private_key(self) -> str:
        """The keeper's private key (hex).

        Raises
        ------
        ConfigError
            When neither an ape account nor the environment variable provides one.
        """
        if self.ape_account:
            try:
                from ape import accounts  # imported lazily: ape is slow to import

                account = accounts.load(self.ape_account)
                passphrase = os.environ.get(f"APE_ACCOUNTS_{self.ape_account}_PASSPHRASE")
                if passphrase is None:
                    raise ConfigError(
                        f"set APE_ACCOUNTS_{self.ape_account}_PASSPHRASE to unlock ape account {self.ape_account!r}"
                    )
                from eth_account import Account

                return Account.decrypt(account.keyfile, passphrase).hex()
            except ConfigError:
                raise
            except Exception as exc:  # noqa: BLE001
                raise ConfigError(f"cannot load ape account {self.ape_account!r}: {exc}") from exc
        key = os.environ.get(self.private_key_env)
        if not key:
            raise ConfigError(
                f"no keeper key: set the environment variable {self.private_key_env} or `ape_account` in the config"
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
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"invalid config {path}: {problems}") from exc
