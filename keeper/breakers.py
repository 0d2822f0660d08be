"""Circuit breakers: conditions under which a tick must not trade as usual, and what it does instead.

Four breakers, each off unless its limit is configured, each with its own action:

``stale_oracle``
    An oracle answer is older than ``breaker_max_oracle_age_seconds`` at the head block (age =
    block timestamp − ``updatedAt``). Tighter than the vault's heartbeat, which makes the vault refuse
    everything.
``pool_deviation``
    A Uniswap V3 pool's spot price (``slot0.sqrtPriceX96``) differs from the oracle by more than
    ``breaker_max_pool_deviation_bps``: |p_pool − p_oracle| / p_oracle × 1e4. Trading into a pool that far
    off the oracle would either fail the slippage bound or be the victim of a manipulated pool.
``price_jump``
    An oracle price moved more than ``breaker_max_price_jump_bps`` since the previous tick:
    |p / p_prev − 1| × 1e4. The breaker holds for one tick: the new price becomes the reference.
``chain_stall``
    The head block number has not changed for ``breaker_chain_stall_seconds`` of wall-clock time: the
    node is stuck or cut off, and whatever it says is old.

Actions: ``"skip"`` (no trade this tick) or ``"derisk"`` (trade toward 100 % base asset through the
normal planner, under the vault's turnover cap). When several breakers trip, ``skip`` wins: a skip
means the inputs cannot be trusted to trade on, and de-risking is a trade.

The functions here are pure (arrays and numbers in, :class:`BreakerTrip` out); only
:class:`PoolPriceReader` and :class:`ChainHeadTracker` hold state or touch the chain.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from fractions import Fraction
from typing import Sequence

import numpy as np
import numpy.typing as npt
from web3 import Web3

from keeper.chain import contract
from keeper.errors import ConfigError
from keeper.units import BPS

FloatArray = npt.NDArray[np.float64]
ACTIONS = ("skip", "derisk")
Q192 = 2**192


@dataclass(frozen=True)
class BreakerLimits:
    """Limits and actions of the four breakers (``None`` limit = breaker off).

    Units: seconds for ages and stalls, bps for deviations and jumps.
    """

    max_oracle_age_seconds: int | None = None
    stale_oracle_action: str = "skip"
    max_pool_deviation_bps: float | None = None
    pool_deviation_action: str = "skip"
    max_price_jump_bps: float | None = None
    price_jump_action: str = "skip"
    chain_stall_seconds: float | None = None
    chain_stall_action: str = "skip"

    def __post_init__(self) -> None:
        for name in ("stale_oracle_action", "pool_deviation_action", "price_jump_action", "chain_stall_action"):
            if getattr(self, name) not in ACTIONS:
                raise ConfigError(f"{name} must be one of {ACTIONS}, got {getattr(self, name)!r}")

    @classmethod
    def from_config(cls, config: object) -> "BreakerLimits":
        """From a :class:`~keeper.config.KeeperConfig` (its ``operations.breaker_*`` fields)."""
        return cls(
            max_oracle_age_seconds=config.operations.breaker_max_oracle_age_seconds,
            stale_oracle_action=config.operations.breaker_stale_oracle_action,
            max_pool_deviation_bps=config.operations.breaker_max_pool_deviation_bps,
            pool_deviation_action=config.operations.breaker_pool_deviation_action,
            max_price_jump_bps=config.operations.breaker_max_price_jump_bps,
            price_jump_action=config.operations.breaker_price_jump_action,
            chain_stall_seconds=config.operations.breaker_chain_stall_seconds,
            chain_stall_action=config.operations.breaker_chain_stall_action,
        )


@dataclass(frozen=True)
class BreakerTrip:
    """One tripped breaker: which, the action it asks for, and why (observed value and limit)."""

    breaker: str
    action: str
    symbol: str | None
    observed: float
    limit: float
    reason: str


@dataclass(frozen=True)
class BreakerDecision:
    """What a tick does given its trips: ``"trade"`` (none tripped), ``"skip"`` or ``"derisk"``."""

    action: str
    trips: tuple[BreakerTrip, ...]

    @property
    def reason(self) -> str:
        return "; ".join(t.reason for t in self.trips)


# --- Pure checks ----------------------------------------------------------------------------------


def check_stale_oracle(
    symbols: Sequence[str], updated_at: Sequence[int], block_timestamp: int, max_age_seconds: int, action: str
) -> list[BreakerTrip]:
    """Assets whose answer is older than ``max_age_seconds`` at ``block_timestamp`` (Unix seconds)."""
    trips = []
    for symbol, t in zip(symbols, updated_at, strict=True):
        age = int(block_timestamp) - int(t)
        if age > max_age_seconds:
            trips.append(BreakerTrip("stale_oracle", action, symbol, float(age), float(max_age_seconds),
                                     f"{symbol} oracle is {age} s old, limit {max_age_seconds} s"))
    return trips


def deviation_bps(observed: FloatArray, reference: FloatArray) -> FloatArray:
    """|observed − reference| / reference × 1e4, elementwise; shape of the inputs."""
    observed = np.asarray(observed, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    if observed.shape != reference.shape or np.any(reference <= 0) or not np.all(np.isfinite(observed)):
        raise ConfigError(f"prices must be finite, positive and of equal shape: {observed!r} vs {reference!r}")
    return np.abs(observed - reference) / reference * BPS


def check_pool_deviation(
    symbols: Sequence[str], pool_prices_usd: FloatArray, oracle_prices_usd: FloatArray, max_bps: float, action: str
) -> list[BreakerTrip]:
    """Assets whose pool spot price is more than ``max_bps`` away from the oracle price."""
    dev = deviation_bps(pool_prices_usd, oracle_prices_usd)
    return [
        BreakerTrip("pool_deviation", action, s, float(d), float(max_bps),
                    f"{s} pool price {p:.6g} is {d:.1f} bps from the oracle {o:.6g}, limit {max_bps:g} bps")
        for s, d, p, o in zip(symbols, dev, pool_prices_usd, oracle_prices_usd, strict=True)
        if d > max_bps
    ]


def check_price_jump(
    symbols: Sequence[str], prices_usd: FloatArray, previous_prices_usd: FloatArray, max_bps: float, action: str
) -> list[BreakerTrip]:
    """Assets whose oracle price moved more than ``max_bps`` since the previous tick."""
    jump = deviation_bps(prices_usd, previous_prices_usd)
    return [
        BreakerTrip("price_jump", action, s, float(j), float(max_bps),
                    f"{s} moved {j:.1f} bps since the previous tick ({q:.6g} -> {p:.6g}), limit {max_bps:g} bps")
        for s, j, p, q in zip(symbols, jump, prices_usd, previous_prices_usd, strict=True)
        if j > max_bps
    ]


def check_chain_stall(stalled_seconds: float, limit_seconds: float, block_number: int, action: str) -> list[BreakerTrip]:
    """The head block has been ``block_number`` for ``stalled_seconds`` (wall clock), above the limit."""
    if stalled_seconds > limit_seconds:
        return [BreakerTrip("chain_stall", action, None, float(stalled_seconds), float(limit_seconds),
                            f"head block {block_number} unchanged for {stalled_seconds:.0f} s, limit {limit_seconds:g} s")]
    return []


def decide(trips: Sequence[BreakerTrip]) -> BreakerDecision:
    """Combines trips: none -> ``"trade"``; any ``skip`` -> ``"skip"``; else ``"derisk"``."""
    if not trips:
        return BreakerDecision("trade", ())
    action = "skip" if any(t.action == "skip" for t in trips) else "derisk"
    return BreakerDecision(action, tuple(trips))


def evaluate(
    limits: BreakerLimits,
    symbols: Sequence[str],
    prices_usd: FloatArray,
    updated_at: Sequence[int],
    block_number: int,
    block_timestamp: int,
    *,
    previous_prices_usd: FloatArray | None = None,
    pool_prices_usd: FloatArray | None = None,
    stalled_seconds: float = 0.0,
) -> BreakerDecision:
    """Runs every configured breaker and combines the trips with :func:`decide`.

    Parameters
    ----------
    prices_usd, updated_at : shape (n_assets,)
        Oracle prices (USD per whole token) and their ``updatedAt`` (Unix seconds).
    previous_prices_usd : shape (n_assets,), optional
        Oracle prices of the previous tick; the jump breaker is not evaluated without them.
    pool_prices_usd : shape (n_assets,), optional
        Pool spot prices; required when the deviation breaker is configured.
    stalled_seconds : float
        How long the head block has been unchanged (:class:`ChainHeadTracker`).

    Raises
    ------
    ConfigError
        The deviation breaker is configured but no pool prices were given, or shapes differ.
    """
    trips: list[BreakerTrip] = []
    if limits.chain_stall_seconds is not None:
        trips += check_chain_stall(stalled_seconds, limits.chain_stall_seconds, block_number, limits.chain_stall_action)
    if limits.max_oracle_age_seconds is not None:
        trips += check_stale_oracle(symbols, updated_at, block_timestamp, limits.max_oracle_age_seconds,
                                    limits.stale_oracle_action)
    if limits.max_pool_deviation_bps is not None:
        if pool_prices_usd is None:
            raise ConfigError("the pool deviation breaker is configured but no pool prices were read")
        trips += check_pool_deviation(symbols, pool_prices_usd, prices_usd, limits.max_pool_deviation_bps,
                                      limits.pool_deviation_action)
    if limits.max_price_jump_bps is not None and previous_prices_usd is not None:
        trips += check_price_jump(symbols, prices_usd, previous_prices_usd, limits.max_price_jump_bps,
                                  limits.price_jump_action)
    return decide(trips)


def pool_price_usd(sqrt_price_x96: int, risk_is_token0: bool, risk_decimals: int, base_decimals: int) -> float:
    """USD per whole risk token implied by a risk/base Uniswap V3 pool (the base asset counted at 1 USD).

    The pool price is token1 per token0 in raw units, (sqrtPriceX96 / 2^96)^2. With the risk token as
    token0 that is raw base per raw risk; scaled by 10^(risk_decimals − base_decimals) it is base per
    whole risk token. With the risk token as token1 it is inverted first. Computed in exact rationals.
    """
    if sqrt_price_x96 <= 0:
        raise ConfigError(f"sqrtPriceX96 must be positive, got {sqrt_price_x96}")
    raw = Fraction(sqrt_price_x96 * sqrt_price_x96, Q192)
    if not risk_is_token0:
        raw = 1 / raw
    return float(raw * Fraction(10**risk_decimals, 10**base_decimals))


# --- Stateful helpers ------------------------------------------------------------------------------


class ChainHeadTracker:
    """Remembers when the head block number last changed (wall clock, ``time.monotonic`` seconds)."""

    def __init__(self) -> None:
        self.block_number: int | None = None
        self.since: float | None = None

    def observe(self, block_number: int, now: float | None = None) -> float:
        """Records the head ``block_number``; returns for how many seconds it has been unchanged."""
        now = time.monotonic() if now is None else now
        if block_number != self.block_number or self.since is None:
            self.block_number, self.since = block_number, now
            return 0.0
        return now - self.since


class PoolPriceReader:
    """Reads the spot price of each risk asset's pool against the base asset.

    The pool of an asset is ``factory.getPool(token, base, poolFee)``, the factory being the vault's
    ``swapRouter().factory()`` and ``poolFee`` the asset's configured fee tier: the very pool the vault
    swaps in.
    """

    def __init__(self, w3: Web3, vault: object, assets: Sequence[object], base_asset: str, base_decimals: int) -> None:
        router = contract(w3, "SwapRouter", vault.functions.swapRouter().call())  # type: ignore[attr-defined]
        factory = contract(w3, "UniswapV3Factory", router.functions.factory().call())
        self.base_decimals = base_decimals
        self.pools = []
        for info in assets:
            address = factory.functions.getPool(info.token, base_asset, info.pool_fee).call()  # type: ignore[attr-defined]
            if int(address, 16) == 0:
                raise ConfigError(f"no Uniswap V3 pool for {info.symbol} at fee {info.pool_fee}")  # type: ignore[attr-defined]
            risk_is_token0 = int(info.token, 16) < int(base_asset, 16)  # type: ignore[attr-defined]
            self.pools.append((contract(w3, "UniswapV3Pool", address), risk_is_token0, info.token_decimals))  # type: ignore[attr-defined]

    def prices_usd(self, block_number: int | str = "latest") -> FloatArray:
        """Pool spot prices, USD per whole risk token, shape (n_assets,)."""
        out = []
        for pool, risk_is_token0, decimals in self.pools:
            sqrt_price = pool.functions.slot0().call(block_identifier=block_number)[0]
            out.append(pool_price_usd(sqrt_price, risk_is_token0, decimals, self.base_decimals))
        return np.array(out, dtype=np.float64)


__all__ = [
    "ACTIONS",
    "BreakerDecision",
    "BreakerLimits",
    "BreakerTrip",
    "ChainHeadTracker",
    "PoolPriceReader",
    "check_chain_stall",
    "check_pool_deviation",
    "check_price_jump",
    "check_stale_oracle",
    "decide",
    "deviation_bps",
    "evaluate",
    "pool_price_usd",
]
