r"""Option orders: an :class:`~keeper.overlay.OverlayPlan` turned into the vault's ``OptionLeg`` tuples, the
book those legs lead to, and the NAV floor of a ``rebalanceWithOptions``. No chain access: the market's bid
and ask, the vault's premium bound and its premium budget come from an :class:`OptionQuoter` (on chain
:class:`keeper.option_chain.ChainOptionQuoter`).

Units at this boundary
----------------------
* ``strike`` : 1e18 fixed point, USD per whole underlying (``OptionMarket`` scale); the float strikes of
  :mod:`keeper.hedging` are rounded to the cent (:data:`STRIKE_TICK_WAD`) before conversion.
* ``amount`` : 1e18 = one whole underlying. New buys are rounded **down** (never more options, hence
  never more premium, than planned); closes of a whole position use the exact on-chain amount.
* ``premiumLimit`` : base-asset units (6 decimals for the local USDC). From the quote (``OptionMarket.quote``:
  the ask or bid, and the fair value) with a tolerance of ``tolerance_bps`` for the fair value moving between
  the quote and the block that mines the transaction, then clamped to the vault's own bound, exactly as the
  vault computes it::

      buy : limit = min(ceil(ask × (10⁴ + tol) / 10⁴), floor(fair × (10⁴ + maxPremiumBps) / 10⁴))
      sell: limit = max(floor(bid × (10⁴ − tol) / 10⁴), ceil(fair × (10⁴ − maxPremiumBps) / 10⁴))

  A buy whose ask already exceeds the vault's bound (or a sell whose bid is below it) cannot pass the
  vault: :class:`~keeper.errors.OptionPremiumBoundError` is raised before anything is sent.
* The vault's premium budget per rolling window (``premiumBudgetBps`` of NAV in any ``premiumPeriod``) is
  checked with the buy limits (the most that can be paid); buys are scaled down pro rata (amounts floored)
  to fit what is left of it.

The vault holds long options only (``OptionLeg`` buys open, sells close): an overlay order that would
write an option (a covered call) is refused with :class:`~keeper.errors.OptionLegError`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Protocol, Sequence


from keeper.errors import ConfigError, OptionLegError, OptionPremiumBoundError
from keeper.greeks import OptionPosition
from keeper.overlay import OverlayPlan
from keeper.oracle import RiskAssetInfo
from keeper.planner import RebalancePlan
from keeper.units import BPS, WAD

__all__ = [
    "WAD",
    "STRIKE_TICK_WAD",
    "MARK_DRIFT_BPS",
    "OptionLeg",
    "HeldSeries",
    "Settlement",
    "OptionQuoter",
    "strike_to_wad",
    "amount_to_wad",
    "option_legs_for_plan",
    "book_after_legs",
    "with_option_legs",
]

#: Strikes are placed on a one-cent grid (1e16 in 1e18 USD).
STRIKE_TICK_WAD = 10**16
#: Cushion of the NAV floor for the option marks' time decay between reading the state and mining, bps of
#: the options' value.
MARK_DRIFT_BPS = 10


@dataclass(frozen=True)
class OptionLeg:
    """One ``RiskParityVault.OptionLeg``; integers in the vault's units (module doc)."""

    symbol: str
    underlying: str
    strike: int
    expiry: int
    is_call: bool
    is_buy: bool
    amount: int
    premium_limit: int
    quoted_premium: int
    fair_value: int
    reason: str = ""

    def as_tuple(self) -> tuple[str, int, int, bool, bool, int, int]:
        """ABI tuple of the vault's ``OptionLeg`` struct."""
        return (self.underlying, self.strike, self.expiry, self.is_call, self.is_buy, self.amount, self.premium_limit)

    @property
    def nav_allowance(self) -> int:
        """Base units the leg may cost the NAV at its limit (premium vs the floor-rounded mark), +2 for rounding."""
        gap = self.premium_limit - self.fair_value if self.is_buy else self.fair_value - self.premium_limit
        return max(gap, 0) + 2


@dataclass(frozen=True)
class HeldSeries:
    """A series the vault holds (``openSeries()``), with its terms from ``OptionMarket.series``.

    ``strike`` 1e18 USD; ``amount`` 1e18 units (``positionOf``); ``expiry`` Unix seconds.
    """

    series_id: bytes
    symbol: str
    underlying: str
    strike: int
    expiry: int
    is_call: bool
    amount: int
    settled: bool

    def position(self) -> OptionPosition:
        """As a :class:`keeper.greeks.OptionPosition` (float units and USD)."""
        return OptionPosition(self.symbol, self.strike / WAD, self.expiry, self.is_call, self.amount / WAD)


@dataclass(frozen=True)
class Settlement:
    """An expired series settled through ``vault.settleOption``; ``payout`` base units."""

    series_id: str
    symbol: str
    strike: int
    expiry: int
    is_call: bool
    amount: int
    round_id: int
    payout: int
    tx_hash: str


class OptionQuoter(Protocol):
    """Prices and limits the option legs are planned against (on chain: :class:`keeper.option_chain.ChainOptionQuoter`)."""

    def quote(self, underlying: str, strike: int, expiry: int, is_call: bool, amount: int,
              is_buy: bool) -> tuple[int, int]:
        """``(premium, fair_value)`` of ``amount`` (1e18 units) at ``strike`` (1e18 USD), base-asset units: the ask
        for a buy, the bid for a sell (``OptionMarket.quote``)."""
        ...

    def max_premium_bps(self) -> int:
        """The vault's bound on a premium around the fair value, bps (``maxPremiumBps``)."""
        ...

    def premium_budget_remaining(self) -> int:
        """Premium the vault still accepts in its rolling window, base-asset units."""
        ...

    def max_option_legs(self) -> int:
        """The vault's ``MAX_OPTION_LEGS``."""
        ...


def strike_to_wad(strike_usd: float) -> int:
    """USD strike to 1e18 fixed point on the cent grid (nearest tick).

    Raises
    ------
    OptionLegError
        A non-finite or non-positive strike, or one below a cent.
    """
    if not (math.isfinite(strike_usd) and strike_usd > 0.0):
        raise OptionLegError(f"strike {strike_usd!r} USD must be positive and finite")
    ticks = round(strike_usd * WAD / STRIKE_TICK_WAD)
    if ticks < 1:
        raise OptionLegError(f"strike {strike_usd!r} USD is below the one-cent grid")
    return int(ticks) * STRIKE_TICK_WAD


def amount_to_wad(units: float) -> int:
    """Whole-unit quantity to 1e18 amount, rounded down (fewer options, never more)."""
    if not (math.isfinite(units) and units >= 0.0):
        raise OptionLegError(f"option quantity {units!r} must be finite and >= 0 units")
    return int(math.floor(units * WAD))


def _buy_limit(ask: int, fair: int, tolerance_bps: int, max_premium_bps: int) -> tuple[int, int]:
    bound = fair * (BPS + max_premium_bps) // BPS  # the vault's bound, floor
    return min(-(-ask * (BPS + tolerance_bps) // BPS), bound), bound


def _sell_limit(bid: int, fair: int, tolerance_bps: int, max_premium_bps: int) -> tuple[int, int]:
    bound = -(-fair * (BPS - max_premium_bps) // BPS)  # the vault's bound, ceil
    return max(bid * (BPS - tolerance_bps) // BPS, bound), bound


def option_legs_for_plan(
    overlay: OverlayPlan,
    book: Sequence[HeldSeries],
    quoter: "OptionQuoter",
    assets: Sequence[RiskAssetInfo],
    now: int,
    *,
    tolerance_bps: int = 20,
    refused: list[str] | None = None,
) -> tuple[OptionLeg, ...]:
    """The vault legs of an overlay plan: closes and reductions (sells) first, then new puts (buys).

    ``close`` orders sell the whole held amount of the matching series (same symbol, expiry, kind and
    strike within half a cent); ``reduce`` orders sell ``floor(|quantity| × 1e18)``, at most the held amount;
    ``open`` orders buy ``floor(quantity × 1e18)`` at ``strike_to_wad(strike)``. Orders on expired series
    are skipped: those are settled (:func:`settle_expired`), not traded. Premium limits and the budget
    are in the module doc.

    Parameters
    ----------
    overlay : OverlayPlan
    book : sequence of HeldSeries
        The vault's option positions (:func:`keeper.option_chain.read_option_book` at the same block).
    quoter : OptionQuoter
        The market's bid and ask, the vault's premium bound and budget (on chain:
        :class:`keeper.option_chain.ChainOptionQuoter`).
    assets : sequence of RiskAssetInfo
        The vault's risk assets (``ChainReader.assets``).
    now : int
        Unix seconds of the block the legs are planned at.
    tolerance_bps : int
        Headroom over the quoted ask (under the bid) for the fair value to move before mining, bps.
    refused : list of str, optional
        When given, an order whose quote is beyond the vault's premium bound is left out and its reason appended
        here (the rest of the decision goes ahead: a put that cannot be sold back is held to settlement); when
        None, such an order raises.

    Raises
    ------
    OptionLegError
        An order writing an option (negative ``open``), a close or reduce of a series the vault does not
        hold, an unknown symbol, more legs than the vault's ``MAX_OPTION_LEGS``.
    OptionPremiumBoundError
        The market's ask (bid) is beyond the vault's ``maxPremiumBps`` bound around the fair value.
    """
    if not 0 <= tolerance_bps < BPS:
        raise ConfigError(f"tolerance_bps is {tolerance_bps}; it must be in [0, 10000)")
    token_of = {a.symbol: a.token for a in assets}
    max_premium_bps = quoter.max_premium_bps()
    sells: list[OptionLeg] = []
    buys: list[tuple[str, str, int, int, bool, int, str]] = []
    for order in overlay.orders:
        if order.symbol not in token_of:
            raise OptionLegError(f"order on {order.symbol!r}, which is not among the vault's assets {tuple(token_of)}")
        if order.expiry <= now:
            continue
        if order.action == "open":
            if order.quantity < 0.0:
                raise OptionLegError(
                    f"the overlay writes {-order.quantity:g} {order.symbol} {'calls' if order.is_call else 'puts'}; "
                    "the vault holds long options only: disable covered_calls in the OverlayConfig"
                )
            amount = amount_to_wad(order.quantity)
            if amount > 0:
                buys.append((order.symbol, token_of[order.symbol], strike_to_wad(order.strike), order.expiry,
                             order.is_call, amount, order.reason))
            continue
        held = [h for h in book if h.symbol == order.symbol and h.expiry == order.expiry and h.is_call == order.is_call
                and abs(h.strike - order.strike * WAD) <= STRIKE_TICK_WAD // 2 and not h.settled]
        if not held:
            raise OptionLegError(
                f"{order.action} of {order.symbol} {'call' if order.is_call else 'put'} strike {order.strike:g} expiry "
                f"{order.expiry}: the vault holds no such series; re-read the book with read_option_book"
            )
        h = held[0]
        amount = h.amount if order.action == "close" else min(amount_to_wad(-order.quantity), h.amount)
        if amount == 0:
            continue
        bid, fair = quoter.quote(h.underlying, h.strike, h.expiry, h.is_call, amount, False)
        limit, bound = _sell_limit(bid, fair, tolerance_bps, max_premium_bps)
        if bid < bound:
            why = (f"{order.symbol} sell of {amount} (1e18 units): the market bids {bid} base units, below the vault's "
                   f"bound {bound} (fair {fair} less maxPremiumBps {max_premium_bps}); raise maxPremiumBps above the "
                   "market spread or close later")
            if refused is None:
                raise OptionPremiumBoundError(why)
            refused.append(why + ": held to settlement")
            continue
        sells.append(OptionLeg(h.symbol, h.underlying, h.strike, h.expiry, h.is_call, False, amount, limit, bid, fair,
                               order.reason))

    quoted = []
    for symbol, token, strike, expiry, is_call, amount, reason in buys:
        ask, fair = quoter.quote(token, strike, expiry, is_call, amount, True)
        quoted.append((symbol, token, strike, expiry, is_call, amount, reason, ask, fair))
    # What is left of the vault's premium budget in the current period (base units), against the buy limits.
    # Limits are not linear in the amount (ceil roundings): rescale and re-quote until they fit (a few rounds).
    remaining = quoter.premium_budget_remaining() if quoted else 0
    for _ in range(8):
        total_limit = sum(_buy_limit(q[7], q[8], tolerance_bps, max_premium_bps)[0] for q in quoted)
        if total_limit <= remaining:
            break
        rescaled = []
        for q in quoted:
            # Floor, and one bps under the ratio so that the rounding of the new quotes cannot overshoot.
            amount = q[5] * remaining * (BPS - 1) // (total_limit * BPS)
            if amount == 0:
                continue
            ask, fair = quoter.quote(q[1], q[2], q[3], q[4], amount, True)
            reason = q[6] if q[6].endswith("premium budget") else q[6] + "; scaled to the vault's premium budget"
            rescaled.append((*q[:5], amount, reason, ask, fair))
        quoted = rescaled
    else:
        quoted = []  # could not fit (a budget of a few base units): buy nothing
    out_buys = []
    for symbol, token, strike, expiry, is_call, amount, reason, ask, fair in quoted:
        limit, bound = _buy_limit(ask, fair, tolerance_bps, max_premium_bps)
        if ask > bound:
            why = (f"{symbol} buy of {amount} (1e18 units) strike {strike}: the market asks {ask} base units, above the "
                   f"vault's bound {bound} (fair {fair} plus maxPremiumBps {max_premium_bps}); the market's spread "
                   "exceeds the vault's premium bound: raise maxPremiumBps or skip the overlay")
            if refused is None:
                raise OptionPremiumBoundError(why)
            refused.append(why + ": not bought")
            continue
        out_buys.append(OptionLeg(symbol, token, strike, expiry, is_call, True, amount, limit, ask, fair, reason))
    legs = tuple(sells + out_buys)
    max_legs = quoter.max_option_legs()
    if len(legs) > max_legs:
        raise OptionLegError(
            f"{len(legs)} option legs exceed the vault's MAX_OPTION_LEGS {max_legs}; lower max_open_series"
        )
    return legs


def book_after_legs(book: Sequence[HeldSeries], legs: Sequence[OptionLeg]) -> list[OptionPosition]:
    """The option book after ``legs`` execute: held amounts less sells plus buys, as OptionPositions."""
    amounts: dict[tuple[str, int, int, bool], int] = {}
    for h in book:
        if not h.settled:
            key = (h.symbol, h.strike, h.expiry, h.is_call)
            amounts[key] = amounts.get(key, 0) + h.amount
    for leg in legs:
        key = (leg.symbol, leg.strike, leg.expiry, leg.is_call)
        amounts[key] = amounts.get(key, 0) + (leg.amount if leg.is_buy else -leg.amount)
    return [OptionPosition(sym, strike / WAD, expiry, is_call, amount / WAD)
            for (sym, strike, expiry, is_call), amount in amounts.items() if amount > 0]


def with_option_legs(
    plan: RebalancePlan, legs: Sequence[OptionLeg], nav_before: int, options_value: int
) -> RebalancePlan:
    """``plan`` with ``option_legs`` and a NAV floor for the whole transaction.

    The floor is the vault's NAV (``totalAssets()``, options at their mark) less each swap leg's slippage
    allowance (as :func:`keeper.planner.plan_rebalance` computes it), each option leg's
    :attr:`OptionLeg.nav_allowance` and :data:`MARK_DRIFT_BPS` of ``options_value`` (base units, rounded up).
    """
    swap_allowance = plan.nav_before - plan.min_nav_after if plan.legs else 0
    allowance = swap_allowance + sum(leg.nav_allowance for leg in legs) + -(-options_value * MARK_DRIFT_BPS // BPS)
    skip = plan.skip_reason if not (plan.legs or legs) else None
    return dataclasses.replace(plan, option_legs=tuple(legs), min_nav_after=max(nav_before - allowance, 0),
                               skip_reason=skip)


