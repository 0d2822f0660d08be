r"""The option market and the vault's option book, modelled offline for ``keeper backtest``.

What the on-chain ``OptionMarket`` and ``RiskParityVault`` do, in the same integer units, so that the
backtest's options strategy is the live keeper's decision (:func:`keeper.decision.decide_rebalance` with
:class:`keeper.decision.OptionsInputs`) filled at the market's prices:

* **Fair value** per option (1e18 USD per whole underlying): Black-Scholes (:mod:`keeper.options`, 365-day
  year, no rates) of the feed's spot (``answer × 10^(18 − 8)``) and implied vol, floored to 1e-18; a call is the
  capped call ``C(K) − C(K(1 + cap))``. At or after expiry: the intrinsic value.
* **Quote** (``OptionMarket._quoteSeries``): ``premium = ⌈(fair·(10⁴ + spread) + 10⁴·step) · amount / (scale·10⁴)⌉``
  for a buy, ``⌊(fair·(10⁴ − spread) − 10⁴·step) · amount / (scale·10⁴)⌋`` for a sell, with the feed-step term
  ``step = ⌈|Δ|·dS⌉ + ⌈½|Γ|·dS²⌉ + ⌈|vega|·volStep⌉``, ``dS = ⌈spot·priceStepBps/10⁴⌉``, and
  ``scale = 10^(36 − base decimals)``; the fair value of the amount is floored.
* **Mark** (``positionValue``): the fair value of the amount, floored; an expired series at the payoff of its
  settlement price (the first daily close at or after expiry), never the latest price.
* **Settlement**: the payoff at that price times the amount, floored; the keeper settles before it plans.
* **Premium budget** (the vault's rolling window, ``budgetSpent(BUDGET_PREMIUM)``): premiums paid are charged to
  buckets of width ``⌈period / 8⌉``; the window counts the current bucket and the 8 before it.

What is not modelled: the seconds between the keeper's read and the block that mines its transaction (the
backtest pays the quote at the decision time); the pool's collateral and LP side (the market is assumed able to
write every option the vault buys).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np

from keeper import options as bs
from keeper.deployment import DEFAULT_DEVIATION_BPS, DEFAULT_VOL_STEP
from keeper.errors import ConfigError
from keeper.option_orders import HeldSeries, OptionLeg
from keeper.oracle import RiskAssetInfo
from keeper.units import BPS, SECONDS_PER_YEAR, WAD

__all__ = ["OptionMarketModel", "ModelOptionQuoter", "OptionBookModel", "SettlementPrices"]

#: ``RiskParityVault.BUDGET_BUCKETS``.
BUDGET_BUCKETS = 8
#: Decimals of the price feeds the market reads (answer × 10^(18 − 8) = 1e18 USD).
PRICE_FEED_DECIMALS = 8


@dataclass(frozen=True)
class OptionMarketModel:
    """Parameters of the modelled market and of the vault's option limits (defaults: the local deployment's,
    :func:`keeper.deployment.deploy_options` and the vault's constructor).

    Attributes
    ----------
    spread_bps : int
        Spread over (buys) and under (sells) the fair value, bps.
    call_cap_bps : int
        A call's payout cap, bps of its strike.
    price_step_bps : int
        One price-feed update step, bps of spot (the feed's deviation threshold; 0: the spread only).
    vol_step : float
        One vol-feed update step, annualised (0.01 = one vol point).
    min_time_to_expiry_seconds, max_time_to_expiry_seconds : int
        Window of times to expiry the market sells.
    max_premium_bps : int
        The vault's bound on a premium around the fair value, bps (``maxPremiumBps``).
    premium_budget_bps : int
        The vault's premium budget, bps of NAV per rolling ``premium_period_seconds``.
    premium_period_seconds : int
    max_option_legs : int
        The vault's ``MAX_OPTION_LEGS``.
    base_decimals : int
    """

    spread_bps: int = 100
    call_cap_bps: int = 10_000
    price_step_bps: int = DEFAULT_DEVIATION_BPS
    vol_step: float = DEFAULT_VOL_STEP
    min_time_to_expiry_seconds: int = 3600
    max_time_to_expiry_seconds: int = 365 * 86_400
    max_premium_bps: int = 2_000
    premium_budget_bps: int = 200
    premium_period_seconds: int = 30 * 86_400
    max_option_legs: int = 8
    base_decimals: int = 6

    def __post_init__(self) -> None:
        if not 0 <= self.spread_bps < BPS or not 0 <= self.price_step_bps <= 2_000 or not 0.0 <= self.vol_step <= 1.0:
            raise ConfigError(f"option market model out of range: spread_bps {self.spread_bps} (0..9999), "
                              f"price_step_bps {self.price_step_bps} (0..2000), vol_step {self.vol_step} (0..1)")

    @property
    def value_scale(self) -> int:
        """1e18 USD per unit × 1e18 units → base units."""
        return 10 ** (36 - self.base_decimals)

    def payoff(self, strike: int, is_call: bool, spot: int) -> int:
        """Payoff per unit at ``spot``, 1e18 USD (a call capped at ``call_cap_bps`` of the strike)."""
        if is_call:
            return min(max(spot - strike, 0), strike * self.call_cap_bps // BPS)
        return max(strike - spot, 0)

    def fair_and_step(self, spot: int, vol: int, strike: int, expiry: int, is_call: bool, now: int) -> tuple[int, int]:
        """Fair value per unit and the feed-step term per unit (1e18 USD), as ``OptionMarket._fairAndStep``.

        ``spot``, ``strike`` 1e18 USD; ``vol`` 1e18 = 100 %; ``expiry``, ``now`` Unix seconds."""
        if now >= expiry:
            return self.payoff(strike, is_call, spot), 0
        s, k, v = spot / WAD, strike / WAD, vol / WAD
        tau = (expiry - now) / SECONDS_PER_YEAR
        if not is_call:
            g = bs.greeks(s, k, tau, v, is_call=False)
            fair, delta, gamma, vega = float(g.price), abs(float(g.delta)), float(g.gamma), float(g.vega)
        else:
            k2 = (strike + strike * self.call_cap_bps // BPS) / WAD
            g, h = bs.greeks(s, k, tau, v, is_call=True), bs.greeks(s, k2, tau, v, is_call=True)
            fair = max(float(g.price) - float(h.price), 0.0)
            delta, gamma, vega = (abs(float(g.delta) - float(h.delta)), abs(float(g.gamma) - float(h.gamma)),
                                  abs(float(g.vega) - float(h.vega)))
        fair_wad = int(math.floor(fair * WAD))
        ds = -(-spot * self.price_step_bps // BPS)
        step = 0
        if self.price_step_bps or self.vol_step:  # |Δ|·dS + ½|Γ|·dS² + |vega|·volStep, each rounded up (1e18 USD)
            step = (math.ceil(delta * ds) + math.ceil(0.5 * gamma * (ds / WAD) ** 2 * WAD)
                    + math.ceil(vega * self.vol_step * WAD))
        return fair_wad, int(step)

    def quote(self, spot: int, vol: int, strike: int, expiry: int, is_call: bool, amount: int, is_buy: bool,
              now: int) -> tuple[int, int]:
        """``(premium, fair_value)`` of ``amount`` (1e18 units), base units, as ``OptionMarket.quote``."""
        per_unit, step = self.fair_and_step(spot, vol, strike, expiry, is_call, now)
        scale = self.value_scale
        fair = per_unit * amount // scale
        if is_buy:
            premium = -(-(per_unit * (BPS + self.spread_bps) + step * BPS) * amount // (scale * BPS))
        else:
            bid = per_unit * (BPS - self.spread_bps)
            premium = (bid - step * BPS) * amount // (scale * BPS) if bid > step * BPS else 0
        return premium, fair


@dataclass
class OptionBookModel:
    """The vault's option positions and premium charges, replayed offline.

    ``positions`` maps ``(symbol, underlying, strike, expiry, is_call)`` to the amount held (1e18 units);
    premiums and payouts are base units; ``buys`` and ``sells`` count the option legs executed (a roll sells one
    series and buys the next).
    """

    model: OptionMarketModel
    positions: dict[tuple[str, str, int, int, bool], int] = field(default_factory=dict)
    charges: list[tuple[int, int]] = field(default_factory=list)  # (unix seconds, base units)
    premium_paid: int = 0
    premium_received: int = 0
    payouts: int = 0
    buys: int = 0
    sells: int = 0
    settled: list[tuple[str, int, int, bool, int, int, int]] = field(default_factory=list)

    def book(self) -> tuple[HeldSeries, ...]:
        """The positions as the chain reader returns them (ids are stable hashes of the terms)."""
        out = []
        for (symbol, underlying, strike, expiry, is_call), amount in sorted(self.positions.items()):
            sid = hashlib.sha256(f"{underlying}:{strike}:{expiry}:{is_call}".encode()).digest()
            out.append(HeldSeries(sid, symbol, underlying, strike, expiry, is_call, amount, False))
        return tuple(out)

    def value(self, now: int, spot_of: Mapping[str, int], vol_of: Mapping[str, int],
              settlement_price: "SettlementPrices") -> int:
        """Σ marks, base units (each floored, as ``optionsValue``)."""
        total = 0
        scale = self.model.value_scale
        for (symbol, _u, strike, expiry, is_call), amount in self.positions.items():
            if now > expiry:
                price = settlement_price(symbol, expiry)
                per_unit = self.model.payoff(strike, is_call, price) if price is not None else 0
            else:
                per_unit, _ = self.model.fair_and_step(spot_of[symbol], vol_of[symbol], strike, expiry, is_call, now)
            total += per_unit * amount // scale
        return total

    def settle_expired(self, now: int, settlement_price: "SettlementPrices") -> int:
        """Settles every position past expiry whose settlement price is known; returns the payout, base units."""
        paid = 0
        for key in [k for k in self.positions if now > k[3]]:
            symbol, _u, strike, expiry, is_call = key
            price = settlement_price(symbol, expiry)
            if price is None:
                continue
            amount = self.positions.pop(key)
            payout = self.model.payoff(strike, is_call, price) * amount // self.model.value_scale
            self.settled.append((symbol, strike, expiry, is_call, amount, price, payout))
            paid += payout
        self.payouts += paid
        return paid

    def premium_spent(self, now: int) -> int:
        """What the vault's rolling premium window counts at ``now``, base units."""
        width = -(-self.model.premium_period_seconds // BUDGET_BUCKETS)
        oldest = now - now % width - BUDGET_BUCKETS * width
        return sum(amount for at, amount in self.charges if at - at % width >= oldest)

    def apply(self, legs: Sequence[OptionLeg], now: int, quoter: "ModelOptionQuoter") -> int:
        """Executes ``legs`` at the market's quotes; returns the change of the base balance, base units.

        Raises
        ------
        ConfigError
            A premium beyond the leg's limit, or a sell of more than is held (the vault would revert).
        """
        cash = 0
        for leg in legs:
            premium, _fair = quoter.quote(leg.underlying, leg.strike, leg.expiry, leg.is_call, leg.amount, leg.is_buy)
            key = (leg.symbol, leg.underlying, leg.strike, leg.expiry, leg.is_call)
            if leg.is_buy:
                if premium > leg.premium_limit:
                    raise ConfigError(f"{leg.symbol} buy: premium {premium} above its limit {leg.premium_limit}")
                self.positions[key] = self.positions.get(key, 0) + leg.amount
                self.charges.append((now, premium))
                self.premium_paid += premium
                self.buys += 1
                cash -= premium
            else:
                held = self.positions.get(key, 0)
                if leg.amount > held or premium < leg.premium_limit:
                    raise ConfigError(f"{leg.symbol} sell of {leg.amount} (held {held}) at {premium} "
                                      f"(limit {leg.premium_limit}) would revert")
                if held == leg.amount:
                    del self.positions[key]
                else:
                    self.positions[key] = held - leg.amount
                self.premium_received += premium
                self.sells += 1
                cash += premium
        return cash


class SettlementPrices:
    """Settlement price of an expiry: the first daily close at or after it (1e18 USD), None while unknown.

    ``answer(symbol, row)`` is the feed answer (8 decimals) of a row's close; rows after ``up_to`` are the
    future and unknown."""

    def __init__(self, close_timestamps: Sequence[int], answer: Callable[[str, int], int], up_to: int) -> None:
        self.timestamps = np.asarray(close_timestamps, dtype=np.int64)
        self.answer = answer
        self.up_to = up_to

    def __call__(self, symbol: str, expiry: int) -> int | None:
        row = int(np.searchsorted(self.timestamps, expiry, "left"))
        if row > self.up_to or row >= len(self.timestamps):
            return None
        return int(self.answer(symbol, row)) * 10 ** (18 - PRICE_FEED_DECIMALS)


class ModelOptionQuoter:
    """The backtest's :class:`keeper.option_orders.OptionQuoter`: the modelled market at one moment."""

    def __init__(self, model: OptionMarketModel, assets: Sequence[RiskAssetInfo], spot_of: Mapping[str, int],
                 vol_of: Mapping[str, int], now: int, nav: int, book: OptionBookModel) -> None:
        self.model = model
        self.symbol_of = {a.token: a.symbol for a in assets}
        self.spot_of = spot_of
        self.vol_of = vol_of
        self.now = now
        self.nav = nav
        self.book_model = book

    def quote(self, underlying: str, strike: int, expiry: int, is_call: bool, amount: int,
              is_buy: bool) -> tuple[int, int]:
        symbol = self.symbol_of[underlying]
        return self.model.quote(self.spot_of[symbol], self.vol_of[symbol], strike, expiry, is_call, amount, is_buy,
                                self.now)

    def max_premium_bps(self) -> int:
        return self.model.max_premium_bps

    def premium_budget_remaining(self) -> int:
        budget = self.nav * self.model.premium_budget_bps // BPS
        return max(budget - self.book_model.premium_spent(self.now), 0)

    def max_option_legs(self) -> int:
        return self.model.max_option_legs
