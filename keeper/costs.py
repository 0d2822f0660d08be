"""Trading-cost model of a rebalance through Uniswap V3 pools (chain-free).

Three costs, each in base-asset units (the vault's smallest units, 6 decimals for USDC):

* **swap fee**: the pool's fee tier, taken from the input (``fee_pips`` in hundredths of a bip:
  500 = 0.05% = 5 bps);
* **price impact**: the shortfall of a constant-product pool's exact output against the oracle-fair
  output, beyond the fee;
* **gas**: ``gas_units × gas price × ETH price``, with ``gas_units = fixed + per_leg × legs``.

Price impact of a full-range pool
---------------------------------
Within one tick range a Uniswap V3 pool with liquidity :math:`L` at price :math:`P` (token1 per
token0) behaves as a constant-product pool with *virtual* reserves :math:`x = L/\\sqrt P`,
:math:`y = L\\sqrt P` (Uniswap V3 whitepaper, Adams et al. 2021, §6.2, eqs. 6.13-6.16:
:math:`\\Delta\\sqrt P = \\Delta y / L`, :math:`\\Delta(1/\\sqrt P) = \\Delta x / L`). A full-range
position never leaves its range, so for an exact input :math:`\\Delta x` the output is the
constant-product formula (Uniswap V2 whitepaper, Adams, Zinsmeister & Robinson 2020, §3.2.1;
``getAmountOut`` of ``UniswapV2Library``) with the fee taken from the input:

.. math::

    \\Delta x' = \\Delta x \\, (1 - f), \\qquad \\Delta y = \\frac{y \\, \\Delta x'}{x + \\Delta x'} .

Measured against the oracle-fair output :math:`\\Delta x \\cdot P` (the pool sits at the oracle price
before the trade), the loss splits into the fee :math:`f \\Delta x P` and the price impact
:math:`\\Delta x' P \\cdot \\Delta x' / (x + \\Delta x')`, i.e. a fraction :math:`\\approx` trade size /
depth of the reserve traded into.

Depth of a pool at a later price: a full-range position keeps :math:`L` constant (swap fees accrue
outside the liquidity in V3), so its base-side reserve moves with :math:`\\sqrt{P/P_0}`
(``"constant_liquidity"``, what ``keeper demo``'s seeded pools do); ``"constant_depth"`` keeps the
base-side reserve at a fixed USD value whatever the price (liquidity providers re-centre).

Gas per rebalance was measured on the project's vault (``benchmarks/bench_chain.py``): about 317k gas
fixed plus 97k per leg; both are parameters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

from keeper.errors import ConfigError
from keeper.planner import SwapLeg

__all__ = [
    "PIPS",
    "GAS_FIXED_UNITS",
    "GAS_PER_LEG_UNITS",
    "amount_out_exact_input",
    "PoolModel",
    "GasModel",
    "LegQuote",
    "TradeCost",
    "quote_leg",
    "rebalance_cost",
    "gas_cost_base_units",
    "cost_from_quotes",
]

#: Uniswap V3 fee unit: hundredths of a basis point (1e6 = 100%).
PIPS = 1_000_000
#: Gas of one ``rebalance`` call besides its legs, and per leg (measured on the project's vault).
GAS_FIXED_UNITS = 317_000
GAS_PER_LEG_UNITS = 97_000
_LIQUIDITY_MODELS = ("constant_depth", "constant_liquidity")


def amount_out_exact_input(amount_in: int, reserve_in: int, reserve_out: int, fee_pips: int) -> int:
    """Exact output of a constant-product pool for an exact input, fee taken from the input.

    .. math:: \\Delta y = \\left\\lfloor \\frac{y \\, \\Delta x'}{x + \\Delta x'} \\right\\rfloor, \\qquad
              \\Delta x' = \\lfloor \\Delta x (10^6 - f) / 10^6 \\rfloor

    Both roundings go against the trader, as the pools round.

    Parameters
    ----------
    amount_in : int
        Input, smallest units of the input token (>= 0).
    reserve_in, reserve_out : int
        (Virtual) reserves of the input and output tokens, smallest units (> 0).
    fee_pips : int
        Fee tier in hundredths of a bip (500 = 0.05%), in [0, 10^6).

    Raises
    ------
    ConfigError
        Negative input, non-positive reserves or a fee outside [0, 10^6).
    """
    if amount_in < 0 or reserve_in <= 0 or reserve_out <= 0:
        raise ConfigError(
            f"constant-product quote needs amount_in >= 0 and positive reserves, got amount_in={amount_in}, "
            f"reserve_in={reserve_in}, reserve_out={reserve_out}"
        )
    if not 0 <= fee_pips < PIPS:
        raise ConfigError(f"fee_pips must be in [0, {PIPS}), got {fee_pips} (500 is the 0.05% tier)")
    in_less_fee = amount_in * (PIPS - fee_pips) // PIPS
    return reserve_out * in_less_fee // (reserve_in + in_less_fee)


@dataclass(frozen=True)
class PoolModel:
    """Depth and fee tier of the risk-asset/base pools a backtest trades in.

    Attributes
    ----------
    fee_pips : int
        Fee tier, hundredths of a bip (500 = 5 bps, 3000 = 30 bps).
    depth_usd : float
        Base-side reserve of each pool, USD: at any price (``"constant_depth"``) or at the seed price
        (``"constant_liquidity"``).
    liquidity : str
        ``"constant_depth"`` or ``"constant_liquidity"`` (see the module docstring).
    seed_prices_usd : mapping of symbol to float
        Price at which each pool was seeded (``"constant_liquidity"`` only); a pool without one is
        seeded at the first price it is asked about.
    depth_usd_by_symbol : mapping of symbol to float
        Per-asset override of ``depth_usd``.
    """

    fee_pips: int = 500
    depth_usd: float = 50_000_000.0
    liquidity: str = "constant_depth"
    seed_prices_usd: Mapping[str, float] = field(default_factory=dict)
    depth_usd_by_symbol: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.liquidity not in _LIQUIDITY_MODELS:
            raise ConfigError(f"liquidity must be one of {_LIQUIDITY_MODELS}, got {self.liquidity!r}")
        if not 0 <= self.fee_pips < PIPS:
            raise ConfigError(f"fee_pips must be in [0, {PIPS}), got {self.fee_pips} (500 is the 0.05% tier)")
        depths = [self.depth_usd, *self.depth_usd_by_symbol.values()]
        if not all(math.isfinite(d) and d > 0 for d in depths):
            raise ConfigError(f"pool depths must be positive finite USD amounts, got {depths}")
        if not all(math.isfinite(p) and p > 0 for p in self.seed_prices_usd.values()):
            raise ConfigError(f"seed prices must be positive finite USD prices, got {dict(self.seed_prices_usd)}")

    def base_reserve_usd(self, symbol: str, price_usd: float, seed_price_usd: float | None = None) -> float:
        """Base-side (virtual) reserve of ``symbol``'s pool at ``price_usd``, USD."""
        depth = self.depth_usd_by_symbol.get(symbol, self.depth_usd)
        if self.liquidity == "constant_depth":
            return depth
        seed = self.seed_prices_usd.get(symbol, seed_price_usd if seed_price_usd is not None else price_usd)
        return depth * math.sqrt(price_usd / seed)

    def reserves(
        self,
        symbol: str,
        answer: int,
        feed_decimals: int,
        token_decimals: int,
        base_decimals: int,
        seed_price_usd: float | None = None,
    ) -> tuple[int, int]:
        """(risk reserve, base reserve) in smallest units of a pool sitting at the oracle ``answer``.

        The risk reserve is the base reserve at the oracle price, floored:
        ``risk = base × 10^(feed_decimals + token_decimals − base_decimals) // answer``, the formula the
        demo seeds its pools with.
        """
        price = answer / 10**feed_decimals
        base = int(self.base_reserve_usd(symbol, price, seed_price_usd) * 10**base_decimals)
        risk = base * 10 ** (feed_decimals + token_decimals) // (answer * 10**base_decimals)
        if base <= 0 or risk <= 0:
            raise ConfigError(f"pool of {symbol} has no depth at price {price}: raise depth_usd")
        return risk, base


@dataclass(frozen=True)
class GasModel:
    """Gas cost of one rebalance transaction.

    Attributes
    ----------
    fixed_units, per_leg_units : int
        Gas of the call besides its legs, and per leg.
    base_fee_gwei, priority_fee_gwei : float
        EIP-1559 base fee and tip, gwei per gas (the price paid is their sum).
    eth_price_usd : float or None
        USD per ETH; ``None`` lets the backtest use the data's ETH close of the day (and this field's
        fallback of 2,000 USD when the data has no ETH column).
    charge_to_nav : bool
        Whether the strategy's NAV pays the gas. On chain the keeper's account pays it, not the vault;
        a backtest charges it by default so that the strategy's economics include it.
    """

    fixed_units: int = GAS_FIXED_UNITS
    per_leg_units: int = GAS_PER_LEG_UNITS
    base_fee_gwei: float = 20.0
    priority_fee_gwei: float = 1.0
    eth_price_usd: float | None = None
    charge_to_nav: bool = True

    FALLBACK_ETH_PRICE_USD = 2_000.0

    def __post_init__(self) -> None:
        values = (self.fixed_units, self.per_leg_units, self.base_fee_gwei, self.priority_fee_gwei)
        if any(not math.isfinite(v) or v < 0 for v in values):
            raise ConfigError(f"gas units and gas prices must be finite and >= 0, got {values}")
        if self.eth_price_usd is not None and not (math.isfinite(self.eth_price_usd) and self.eth_price_usd > 0):
            raise ConfigError(f"eth_price_usd must be a positive USD price, got {self.eth_price_usd}")

    def gas_units(self, n_legs: int) -> int:
        """``fixed + per_leg × n_legs`` gas units (0 when there is no leg)."""
        return self.fixed_units + self.per_leg_units * n_legs if n_legs > 0 else 0

    def cost_usd(self, n_legs: int, eth_price_usd: float | None = None) -> float:
        """Gas cost of a rebalance with ``n_legs`` legs, USD: units × (base fee + tip) × 1e-9 × ETH price."""
        eth = self.eth_price_usd or eth_price_usd or self.FALLBACK_ETH_PRICE_USD
        return self.gas_units(n_legs) * (self.base_fee_gwei + self.priority_fee_gwei) * 1e-9 * eth


@dataclass(frozen=True)
class LegQuote:
    """Modelled outcome of one leg. ``amount_out`` in the output token's smallest units; the rest in
    base-asset units, valued at the oracle: ``fee + impact`` = oracle-fair output − actual output."""

    amount_out: int
    fee: int
    impact: int


@dataclass(frozen=True)
class TradeCost:
    """Cost of one rebalance, base-asset units. ``total = fee + impact + gas``."""

    fee: int
    impact: int
    gas: int
    gas_units: int

    @property
    def total(self) -> int:
        return self.fee + self.impact + self.gas

    def as_dict(self) -> dict[str, int]:
        return {"fee": self.fee, "impact": self.impact, "gas": self.gas, "gas_units": self.gas_units,
                "total": self.total}


def quote_leg(leg: SwapLeg, reserves: tuple[int, int], fee_pips: int, value_of_risk) -> LegQuote:
    """Modelled output of ``leg`` in a pool with ``reserves`` = (risk, base) smallest units.

    Parameters
    ----------
    leg : SwapLeg
        From :func:`keeper.planner.plan_rebalance` (``oracle_amount_out`` is the oracle-fair output).
    reserves : (int, int)
        Risk-token and base-asset reserves, smallest units, of a pool at the oracle price.
    fee_pips : int
        Fee tier, hundredths of a bip.
    value_of_risk : callable int -> int
        Base-asset value of an amount of the leg's risk token at the oracle (the vault's ``_valueOf``).
    """
    risk_reserve, base_reserve = reserves
    if leg.side == "sell":
        out = amount_out_exact_input(leg.amount_in, risk_reserve, base_reserve, fee_pips)
        fair = leg.oracle_amount_out
        fee = fair - value_of_risk(leg.amount_in * (PIPS - fee_pips) // PIPS)
    elif leg.side == "buy":
        out = amount_out_exact_input(leg.amount_in, base_reserve, risk_reserve, fee_pips)
        fair = leg.amount_in
        fee = leg.amount_in - leg.amount_in * (PIPS - fee_pips) // PIPS
        # Shortfall valued in base units at the oracle: fair input value minus value received.
        return LegQuote(out, fee, max(fair - value_of_risk(out) - fee, 0))
    else:
        raise ConfigError(f"leg side must be 'sell' or 'buy', got {leg.side!r}")
    return LegQuote(out, fee, max(fair - out - fee, 0))


def rebalance_cost(quotes: Sequence[LegQuote], gas: GasModel, eth_price_usd: float | None,
                   base_decimals: int) -> TradeCost:
    """Sums the legs' fees and impacts and adds the gas of one ``rebalance`` with that many legs."""
    n = len(quotes)
    gas_usd = gas.cost_usd(n, eth_price_usd)
    return TradeCost(
        fee=sum(q.fee for q in quotes),
        impact=sum(q.impact for q in quotes),
        gas=int(round(gas_usd * 10**base_decimals)),
        gas_units=gas.gas_units(n),
    )


def gas_cost_base_units(gas_units: int, gas_price_wei: int, eth_price_usd: float, base_decimals: int) -> int:
    """Gas of a transaction in base-asset units (a USD stablecoin): ``gas × price × 1e-18 × ETH/USD``, rounded.

    Parameters
    ----------
    gas_units : int
        Gas used or estimated.
    gas_price_wei : int
        Wei per gas paid (EIP-1559: base fee + tip).
    eth_price_usd : float
        USD per ETH.
    base_decimals : int
        Decimals of the base asset (6 for USDC).
    """
    if gas_units < 0 or gas_price_wei < 0 or not (math.isfinite(eth_price_usd) and eth_price_usd > 0):
        raise ConfigError(f"gas cost needs gas >= 0, price >= 0 and a positive ETH price, got "
                          f"{gas_units}, {gas_price_wei}, {eth_price_usd}")
    return int(round(gas_units * gas_price_wei * eth_price_usd * 10**base_decimals / 10**18))


def cost_from_quotes(
    legs: Sequence[SwapLeg],
    amounts_out: Sequence[int],
    fee_pips: Mapping[str, int],
    value_of_risk: Mapping[str, Callable[[int], int]],
    gas: int,
    gas_units: int = 0,
) -> TradeCost:
    """The cost of a planned rebalance from real quotes (QuoterV2), for the live keeper's cost gate.

    For each leg, oracle-fair output minus quoted output, valued in base units at the oracle, split into
    the fee (``amount_in × fee_pips / 10^6`` of the input) and the price impact (the rest).

    Parameters
    ----------
    legs : sequence of SwapLeg
        The plan's legs.
    amounts_out : sequence of int
        ``Executor.quote(plan, pool_fees)``: quoted output of each leg, smallest units.
    fee_pips : mapping symbol -> int
        Each pool's fee tier (``RiskAssetInfo.pool_fee``).
    value_of_risk : mapping symbol -> callable int -> int
        Base-asset value of an amount of that risk token at the oracle
        (``lambda a: value_of(a, answer, info, base_decimals)``).
    gas : int
        Gas of the rebalance in base-asset units (:func:`gas_cost_base_units`).
    """
    if len(legs) != len(amounts_out):
        raise ConfigError(f"{len(legs)} legs but {len(amounts_out)} quotes")
    fee_total = impact_total = 0
    for leg, out in zip(legs, amounts_out):
        f = fee_pips[leg.symbol]
        value = value_of_risk[leg.symbol]
        if leg.side == "sell":
            fair_value, got_value = leg.oracle_amount_out, out
            fee = leg.oracle_amount_out - value(leg.amount_in * (PIPS - f) // PIPS)
        else:
            fair_value, got_value = leg.amount_in, value(out)
            fee = leg.amount_in - leg.amount_in * (PIPS - f) // PIPS
        fee_total += fee
        impact_total += max(fair_value - got_value - fee, 0)
    return TradeCost(fee=fee_total, impact=impact_total, gas=gas, gas_units=gas_units)
