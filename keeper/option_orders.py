r"""Option orders between the hedger and the executor: the vault's option book read from chain, an
:class:`~keeper.hedging.OverlayPlan` turned into the vault's ``OptionLeg`` tuples, the
``rebalanceWithOptions`` calldata, settlement of expired series, and :class:`OptionOverlay`, the
overlay step a keeper runs after its spot tick.

Units at this boundary
----------------------
* ``strike`` : 1e18 fixed point, USD per whole underlying (``OptionMarket`` scale); the float strikes of
  :mod:`keeper.hedging` are rounded to the cent (:data:`STRIKE_TICK_WAD`) before conversion.
* ``amount`` : 1e18 = one whole underlying. New buys are rounded **down** (never more options, hence
  never more premium, than planned); closes of a whole position use the exact on-chain amount.
* ``premiumLimit`` : base-asset units (6 decimals for the local USDC). From
  ``OptionMarket.quote(underlying, strike, expiry, isCall, amount, isBuy)`` (the ask or bid) with a
  tolerance of ``tolerance_bps`` for the fair value moving between the quote and the block that mines
  the transaction, then clamped to the vault's own bound, exactly as the vault computes it::

      buy : limit = min(ceil(ask × (10⁴ + tol) / 10⁴), floor(fair × (10⁴ + maxPremiumBps) / 10⁴))
      sell: limit = max(floor(bid × (10⁴ − tol) / 10⁴), ceil(fair × (10⁴ − maxPremiumBps) / 10⁴))

  A buy whose ask already exceeds the vault's bound (or a sell whose bid is below it) cannot pass the
  vault: :class:`~keeper.errors.OptionPremiumBoundError` is raised before anything is sent.
* The vault's premium budget per rolling window (``premiumBudgetBps`` of NAV in any ``premiumPeriod``;
  ``budgetSpent(BUDGET_PREMIUM)`` is what the window counts now) is checked with the buy limits (the most
  that can be paid); buys are scaled down pro rata (amounts floored) to fit what is left of it.

The vault holds long options only (``OptionLeg`` buys open, sells close): an overlay order that would
write an option (a covered call) is refused with :class:`~keeper.errors.OptionLegError`.

Using it in a tick
------------------
After the keeper's policy decision (``report.policy["target_weights"]``, the NAV fractions after the cash
buffer, the volatility target and the ES limit, and ``report.covariance``), one call runs the overlay step::

    overlay = OptionOverlay(keeper, market, OverlayConfig(...), HedgeTriggerConfig(...), settle, settler)
    step = overlay.step(report.policy["target_weights"], report.covariance)

It settles expired series, plans the overlay (:func:`keeper.hedging.plan_overlay`) on the book read from
chain, turns it into legs (:func:`option_legs_for_plan`), decides the delta hedge on the book those legs
lead to (:func:`keeper.hedging.hedge_decision`), plans the spot legs
(:func:`keeper.planner.sleeve_targets` then :func:`keeper.planner.plan_rebalance`), and sends one
``rebalanceWithOptions`` through ``keeper.executor.send(plan, encode_rebalance_with_options(vault, plan))``
(``eth_call`` simulation first). Each step is journalled with the Greeks before, planned and after. The
keeper's own tick must then not trade spot toward the spot-only targets (the demo sets its drift
threshold above 100 %); an executor that builds its own calldata only needs
:func:`encode_rebalance_with_options` when ``plan.option_legs`` is not empty.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import numpy.typing as npt
from web3.logs import DISCARD

from keeper import hedging
from keeper.chain import call_raw, decode_revert
from keeper.errors import (
    ConfigError,
    KeeperError,
    OptionLegError,
    OptionPremiumBoundError,
    QuoteBelowBoundError,
    SimulationRevertedError,
)
from keeper.hedging import OptionPosition, OverlayConfig, OverlayPlan
from keeper.oracle import PriceSnapshot, RiskAssetInfo, VaultState
from keeper.planner import BPS, RebalancePlan, plan_rebalance, sleeve_targets, value_holdings
from keeper.units import WAD

#: Index of the vault's rolling premium budget (``RiskParityVault.BUDGET_PREMIUM``).
BUDGET_PREMIUM = 2

__all__ = [
    "WAD",
    "STRIKE_TICK_WAD",
    "OptionLeg",
    "HeldSeries",
    "Settlement",
    "read_option_book",
    "read_implied_vols",
    "vol_feeds_of",
    "strike_to_wad",
    "amount_to_wad",
    "option_legs_for_plan",
    "book_after_legs",
    "with_option_legs",
    "encode_rebalance_with_options",
    "settle_expired",
    "OverlayStepReport",
    "OptionOverlay",
]

log = logging.getLogger("keeper")
FloatArray = npt.NDArray[np.float64]
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
        """As a :class:`keeper.hedging.OptionPosition` (float units and USD)."""
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


def read_option_book(
    vault: Any, market: Any, assets: Sequence[RiskAssetInfo], block: int | str = "latest"
) -> tuple[HeldSeries, ...]:
    """The vault's option positions: ``vault.openSeries()``, ``market.series(id)``, ``market.positionOf(id, vault)``.

    Raises
    ------
    OptionLegError
        A held series on an underlying that is not among ``assets``.
    """
    symbol_of = {a.token.lower(): a.symbol for a in assets}
    out = []
    for sid in vault.functions.openSeries().call(block_identifier=block):
        s = market.functions.series(sid).call(block_identifier=block)
        underlying, expiry, is_call, settled, strike = s[0], s[1], s[2], s[3], s[4]
        if underlying.lower() not in symbol_of:
            raise OptionLegError(
                f"the vault holds series 0x{bytes(sid).hex()} on {underlying}, not a listed risk asset"
            )
        amount = market.functions.positionOf(sid, vault.address).call(block_identifier=block)
        symbol = symbol_of[underlying.lower()]
        out.append(HeldSeries(bytes(sid), symbol, underlying, strike, expiry, is_call, amount, settled))
    return tuple(out)


def vol_feeds_of(market: Any, assets: Sequence[RiskAssetInfo]) -> list[tuple[Any, int]]:
    """Each asset's implied-volatility feed (web3 contract) and its decimals, from ``market.underlyingConfig``."""
    from keeper.chain import contract

    out = []
    for a in assets:
        cfg = market.functions.underlyingConfig(a.token).call()
        out.append((contract(market.w3, "PushPriceFeed", cfg[1]), int(cfg[5])))
    return out


def read_implied_vols(market: Any, assets: Sequence[RiskAssetInfo], block: int | str = "latest",
                      feeds: Sequence[tuple[Any, int]] | None = None) -> FloatArray:
    """Annualised implied volatility per asset (fraction) from the market's volatility feeds, shape (n_assets,).

    ``feeds`` (from :func:`vol_feeds_of`) saves the configuration reads when called every tick.
    """
    feeds = feeds if feeds is not None else vol_feeds_of(market, assets)
    return np.array([feed.functions.latestRoundData().call(block_identifier=block)[1] / 10**decimals
                     for feed, decimals in feeds], dtype=np.float64)


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
    vault: Any,
    market: Any,
    assets: Sequence[RiskAssetInfo],
    now: int,
    *,
    tolerance_bps: int = 20,
    block: int | str = "latest",
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
        From :func:`read_option_book` at the same block.
    vault, market : web3 contracts
    assets : sequence of RiskAssetInfo
        The vault's risk assets (``ChainReader.assets``).
    now : int
        Unix seconds of the block the legs are planned at.
    tolerance_bps : int
        Headroom over the quoted ask (under the bid) for the fair value to move before mining, bps.

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
    vf = vault.functions
    max_premium_bps = vf.maxPremiumBps().call(block_identifier=block)
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
        bid, fair = market.functions.quote(h.underlying, h.strike, h.expiry, h.is_call, amount, False).call(
            block_identifier=block)
        limit, bound = _sell_limit(bid, fair, tolerance_bps, max_premium_bps)
        if bid < bound:
            raise OptionPremiumBoundError(
                f"{order.symbol} sell of {amount} (1e18 units): the market bids {bid} base units, below the vault's "
                f"bound {bound} (fair {fair} less maxPremiumBps {max_premium_bps}); raise maxPremiumBps above the "
                "market spread or close later"
            )
        sells.append(OptionLeg(h.symbol, h.underlying, h.strike, h.expiry, h.is_call, False, amount, limit, bid, fair,
                               order.reason))

    quoted = []
    for symbol, token, strike, expiry, is_call, amount, reason in buys:
        ask, fair = market.functions.quote(token, strike, expiry, is_call, amount, True).call(block_identifier=block)
        quoted.append((symbol, token, strike, expiry, is_call, amount, reason, ask, fair))
    # What is left of the vault's premium budget in the current period (base units), against the buy limits.
    # Limits are not linear in the amount (ceil roundings): rescale and re-quote until they fit (a few rounds).
    remaining = _remaining_budget(vf, now, block) if quoted else 0
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
            ask, fair = market.functions.quote(q[1], q[2], q[3], q[4], amount, True).call(block_identifier=block)
            reason = q[6] if q[6].endswith("premium budget") else q[6] + "; scaled to the vault's premium budget"
            rescaled.append((*q[:5], amount, reason, ask, fair))
        quoted = rescaled
    else:
        quoted = []  # could not fit (a budget of a few base units): buy nothing
    out_buys = []
    for symbol, token, strike, expiry, is_call, amount, reason, ask, fair in quoted:
        limit, bound = _buy_limit(ask, fair, tolerance_bps, max_premium_bps)
        if ask > bound:
            raise OptionPremiumBoundError(
                f"{symbol} buy of {amount} (1e18 units) strike {strike}: the market asks {ask} base units, above the "
                f"vault's bound {bound} (fair {fair} plus maxPremiumBps {max_premium_bps}); the market's spread "
                "exceeds the vault's premium bound: raise maxPremiumBps or skip the overlay"
            )
        out_buys.append(OptionLeg(symbol, token, strike, expiry, is_call, True, amount, limit, ask, fair, reason))
    legs = tuple(sells + out_buys)
    max_legs = vf.MAX_OPTION_LEGS().call()
    if len(legs) > max_legs:
        raise OptionLegError(
            f"{len(legs)} option legs exceed the vault's MAX_OPTION_LEGS {max_legs}; lower max_open_series"
        )
    return legs


def _remaining_budget(vf: Any, now: int, block: int | str) -> int:
    """Premium the vault still accepts in its rolling window at ``block``, base units (floor of the vault's budget)."""
    spent = vf.budgetSpent(BUDGET_PREMIUM).call(block_identifier=block)
    budget = vf.totalAssets().call(block_identifier=block) * vf.premiumBudgetBps().call(block_identifier=block) // BPS
    return max(budget - spent, 0)


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


def encode_rebalance_with_options(vault_contract: Any, plan: RebalancePlan) -> str:
    """Hex calldata of ``rebalanceWithOptions(legs, optionLegs, minNavAfter, expectedEpoch, deadline)``.

    ``plan.option_legs`` holds :class:`OptionLeg` (or ABI tuples); swap legs as in ``rebalance``.
    """
    option_tuples = [leg.as_tuple() if isinstance(leg, OptionLeg) else tuple(leg) for leg in plan.option_legs]
    return vault_contract.encode_abi(
        "rebalanceWithOptions",
        [[leg.as_tuple() for leg in plan.legs], option_tuples, plan.min_nav_after, plan.expected_epoch, plan.deadline],
    )


def settle_expired(
    vault: Any,
    market: Any,
    book: Sequence[HeldSeries],
    now: int,
    transact: Callable[[Any], Any],
    sender: str,
) -> tuple[Settlement, ...]:
    """Settles every held series with ``expiry < now`` through ``vault.settleOption(id, round)``.

    The round is ``market.findSettlementRound(id)`` (settlement starts strictly after expiry; the market
    refuses while the settlement round is not known yet, ``SettlementPending``); each call is simulated first (``eth_call`` from
    ``sender``, which also gives the payout) and sent with ``transact(bound_function) -> receipt``. Anyone
    may call ``settleOption``.

    Raises
    ------
    SimulationRevertedError
        The settlement round is not known yet, or a settlement reverts in simulation; nothing is sent for it.
    """
    out = []
    for h in book:
        if h.expiry >= now:
            continue
        find = market.functions.findSettlementRound(h.series_id)
        ok, data = call_raw(market.w3, {"from": sender, "to": market.address, "data": find._encode_transaction_data()})
        if not ok:
            raise SimulationRevertedError(
                f"findSettlementRound of {h.symbol} series 0x{h.series_id.hex()} (expiry {h.expiry}) reverted with "
                f"{decode_revert(data)}; nothing was sent"
            )
        round_id = int.from_bytes(data[:32], "big")
        fn = vault.functions.settleOption(h.series_id, round_id)
        ok, data = call_raw(vault.w3, {"from": sender, "to": vault.address, "data": fn._encode_transaction_data()})
        if not ok:
            raise SimulationRevertedError(
                f"settleOption of {h.symbol} series 0x{h.series_id.hex()} (expiry {h.expiry}, round {round_id}) "
                "reverted "
                f"with {decode_revert(data)}; nothing was sent"
            )
        payout = int.from_bytes(data[:32], "big")
        receipt = transact(fn)
        tx_hash = receipt["transactionHash"]
        tx_hex = tx_hash if isinstance(tx_hash, str) else "0x" + bytes(tx_hash).hex()
        out.append(Settlement("0x" + h.series_id.hex(), h.symbol, h.strike, h.expiry, h.is_call, h.amount, round_id,
                              payout, tx_hex))
    return tuple(out)


# --------------------------------------------------------------------------- #
# The overlay step
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class OverlayStepReport:
    """Outcome of one overlay step.

    ``status``: ``"traded"``, ``"skipped"`` (nothing to trade, or an anticipated refusal in ``reason``) or
    ``"error"`` (an unexpected exception, traceback in the log).
    Premiums and payouts in base units; ``legs`` the option legs sent; ``executed`` the vault's
    ``OptionLegExecuted`` events ``(leg_index, is_buy, amount, premium, fair_value)``.
    """

    status: str
    reason: str | None = None
    settlements: tuple[Settlement, ...] = ()
    decision: dict[str, Any] | None = None
    overlay: dict[str, Any] | None = None
    greeks_before: dict[str, Any] | None = None
    greeks_after: dict[str, Any] | None = None
    plan: RebalancePlan | None = None
    legs: tuple[OptionLeg, ...] = ()
    executed: tuple[tuple[int, bool, int, int, int], ...] = ()
    tx_hash: str | None = None
    gas_used: int | None = None
    execution: Any = None
    #: Factor (<= 1) applied to the spot targets when they and the premiums do not fit in the NAV
    #: (:func:`keeper.planner.sleeve_targets`); below 1 the deltas stay under their targets.
    cash_scale: float = 1.0
    #: Factor (<= 1) applied to the exposure targets so that spot plus option delta can reach them without
    #: leverage (long puts deep in the money ask for more spot than the NAV holds).
    target_scale: float = 1.0
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def premium_paid(self) -> int:
        return sum(e[3] for e in self.executed if e[1])

    @property
    def premium_received(self) -> int:
        return sum(e[3] for e in self.executed if not e[1])


class OptionOverlay:
    """The overlay step of a tick: settle, plan the overlay, delta-hedge, send one ``rebalanceWithOptions``.

    State kept between steps: the time and implied vols of the last hedge (for
    :func:`keeper.hedging.hedge_decision`).

    Exposure targets are the policy's NAV fractions (risk budget, cash buffer, volatility target, ES limit);
    where long puts ask for more spot than the vault can
    hold without leverage (spot worth ``Σ_i (t_i N − Δopt_i S_i)`` above the spot NAV less the premiums), every
    target is scaled by the same ``target_scale < 1`` (reported and journalled) so that the hedge aims at a
    reachable book. Any remaining shortfall (rounding) scales the spot targets (``cash_scale``).

    Parameters
    ----------
    keeper : keeper.runner.Keeper
        Its ``reader`` (oracle and vault state), ``executor`` (simulate and send from the keeper key)
        and ``journal`` are used; its ``config`` gives the cash buffer, slippage budget, minimum trade and
        deadline.
    market : web3 contract
        The vault's ``OptionMarket``.
    overlay : OverlayConfig
    trigger : HedgeTriggerConfig
    settle : callable(bound_function) -> receipt
        Sends ``settleOption`` calls (anyone may; the demo uses a dev account).
    settler : str
        Address ``settle`` sends from (the simulation's ``from``).
    """

    def __init__(self, keeper: Any, market: Any, overlay: OverlayConfig, trigger: hedging.HedgeTriggerConfig,
                 settle: Callable[[Any], Any], settler: str) -> None:
        self.keeper = keeper
        self.market = market
        self.overlay = overlay
        self.trigger = trigger
        self.settle = settle
        self.settler = settler
        self.vault = keeper.reader.vault
        self.last_hedge_at: int | None = None
        self.iv_at_last_hedge: FloatArray | None = None
        self._vol_feeds: list[tuple[Any, int]] | None = None
        leg_event = self.vault.events.OptionLegExecuted()
        self._leg_event = leg_event

    def step(self, target_weights: npt.ArrayLike, covariance: npt.ArrayLike) -> OverlayStepReport:
        """One step toward the policy's ``target_weights`` (fractions of NAV, shape (n,): the risk budget
        after the cash buffer, the volatility target and the ES limit, i.e. ``PolicyDecision.target_weights``)
        with the annualised ``covariance`` (n, n) of the keeper's tick. The delta hedge aims the delta-adjusted
        exposure (spot + option delta) at those fractions. Journals the decision; never raises: an anticipated failure
        (:class:`~keeper.errors.KeeperError`) ends the step as ``"skipped"``, anything else as ``"error"``."""
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        context: dict[str, Any] = {}
        try:
            report = self._step(np.asarray(target_weights, dtype=np.float64), np.asarray(covariance, dtype=np.float64),
                                timings, context)
        except KeeperError as exc:
            report = OverlayStepReport("skipped", f"{type(exc).__name__}: {exc}", timings=timings, **context)
            log.warning("overlay step skipped: %s", report.reason)
        except Exception as exc:  # noqa: BLE001 - the step boundary, as in Keeper.run_once: log, journal, carry on
            report = OverlayStepReport("error", f"{type(exc).__name__}: {exc}", timings=timings, **context)
            log.error("overlay step failed: %s\n%s", report.reason, traceback.format_exc())
        timings["total"] = time.perf_counter() - t0
        self._record(report)
        return report

    def _step(
        self, w_target: FloatArray, cov: FloatArray, timings: dict[str, float], context: dict[str, Any]
    ) -> OverlayStepReport:
        cfg = self.keeper.config
        reader = self.keeper.reader
        assets = reader.assets
        symbols = reader.symbols
        t = time.perf_counter()
        snapshot: PriceSnapshot = reader.snapshot(cfg.max_oracle_age_seconds)
        now = snapshot.block_timestamp
        book = read_option_book(self.vault, self.market, assets, snapshot.block_number)
        settlements = settle_expired(self.vault, self.market, book, now, self.settle, self.settler)
        context["settlements"] = settlements
        if settlements:
            snapshot = reader.snapshot(cfg.max_oracle_age_seconds)
            book = read_option_book(self.vault, self.market, assets, snapshot.block_number)
        block = snapshot.block_number
        state: VaultState = reader.vault_state(block)
        if self._vol_feeds is None:
            self._vol_feeds = vol_feeds_of(self.market, assets)
        vols = read_implied_vols(self.market, assets, block, self._vol_feeds)
        options_value = self.vault.functions.optionsValue().call(block_identifier=block)
        timings["read"] = time.perf_counter() - t
        if state.paused:
            return OverlayStepReport("skipped", "vault is paused", timings=timings, **context)

        t = time.perf_counter()
        scale = 10**state.base_decimals
        nav_usd = state.total_assets / scale
        spots = snapshot.prices_usd
        units = np.array([b / 10**a.token_decimals for b, a in zip(state.balances, assets)])
        positions = [h.position() for h in book]
        greeks_before = self._greeks(units, positions, spots, vols, now, symbols)
        context["greeks_before"] = greeks_before.as_dict()
        overlay_plan = hedging.plan_overlay(
            self.overlay, symbols=symbols, spots=spots, vols=vols, spot_units=units,
            risk_contributions=_risk_contributions(
                hedging.delta_adjusted_exposures(greeks_before, nav_usd), cov),
            nav=nav_usd, positions=positions, now=now,
        )
        option_legs = option_legs_for_plan(overlay_plan, book, self.vault, self.market, assets, now, block=block)
        # The hedge targets the book the legs lead to (amounts floored, buys perhaps scaled to the vault's budget),
        # not the overlay's float plan.
        book_after = book_after_legs(book, option_legs)
        greeks = self._greeks(units, book_after, spots, vols, now, symbols)
        # The policy's NAV fractions: its cash sleeve (buffer, volatility target, ES limit) is already out.
        target_exposure = w_target
        # A long-only vault without leverage holds spot worth Σ_i (t_i N − Δopt_i S_i) at most the spot NAV less
        # the cash the premiums need: when long puts (Δopt < 0) ask for more, every target is scaled by k < 1
        # so that the hedge aims at what it can reach (and does not churn against an unreachable target).
        holdings = value_holdings(snapshot, state, assets)
        available_usd = (holdings.nav - self._reserved(option_legs, holdings.nav, state)) / scale
        wanted_usd = float(target_exposure.sum()) * nav_usd
        reachable_usd = available_usd + float(np.dot(greeks.option_delta_units, spots))
        target_scale = 1.0 if wanted_usd <= reachable_usd else max(reachable_usd, 0.0) / wanted_usd
        context["target_scale"] = target_scale
        target_exposure = target_exposure * target_scale
        decision = hedging.hedge_decision(
            self.trigger, greeks=greeks, target_exposure_weights=target_exposure, nav=nav_usd, now=now,
            last_hedge_at=self.last_hedge_at, iv_at_last_hedge=self.iv_at_last_hedge,
        )
        context.update(decision=decision.as_dict(), overlay=overlay_plan.as_dict())
        deadline = now + cfg.deadline_seconds
        self._cash_scale = 1.0
        spot_plan = self._spot_plan(decision, snapshot, state, assets, option_legs, deadline)
        context["cash_scale"] = self._cash_scale
        plan = with_option_legs(spot_plan, option_legs, state.total_assets, options_value)
        context["plan"] = plan
        context["legs"] = tuple(option_legs)
        timings["compute"] = time.perf_counter() - t
        if not (plan.legs or plan.option_legs):
            return OverlayStepReport("skipped", plan.skip_reason or "no hedge trigger and no option order",
                                     timings=timings, **context)
        if plan.legs:
            plan = self._quoted(plan, decision, snapshot, state, assets, option_legs, deadline, options_value)
            context["plan"] = plan
        data = encode_rebalance_with_options(self.vault, plan)
        execution = self.keeper.executor.send(plan, data)  # simulates (eth_call) first, refuses on revert
        timings.update(execution.timings)
        receipt = self.keeper.w3.eth.get_transaction_receipt(execution.tx_hash)
        executed = tuple(
            (int(e["args"]["legIndex"]), bool(e["args"]["isBuy"]), int(e["args"]["amount"]), int(e["args"]["premium"]),
             int(e["args"]["fairValue"]))
            for e in self._leg_event.process_receipt(receipt, errors=DISCARD)
        )
        if plan.legs:
            self.last_hedge_at = now
            self.iv_at_last_hedge = vols
        greeks_after = self._greeks_after(symbols, spots, vols, int(receipt["blockNumber"]))
        return OverlayStepReport("traded", None, executed=executed, tx_hash=execution.tx_hash,
                                 gas_used=execution.gas_used, execution=execution, greeks_after=greeks_after,
                                 timings=timings, **context)

    def _quoted(self, plan: RebalancePlan, decision: hedging.HedgeDecision, snapshot: PriceSnapshot, state: VaultState,
                assets: Sequence[RiskAssetInfo], option_legs: Sequence[OptionLeg], deadline: int,
                options_value: int) -> RebalancePlan:
        """Quotes the swap legs (QuoterV2); when a pool cannot absorb the hedge within the slippage budget, takes
        half the step (up to ``max_step_halvings`` times), as the keeper's tick does."""
        pool_fees = {a.token: a.pool_fee for a in assets}
        fraction = 1.0
        for attempt in range(self.keeper.config.max_step_halvings + 1):
            try:
                self.keeper.executor.quote(plan, pool_fees)
                return plan
            except QuoteBelowBoundError:
                if attempt == self.keeper.config.max_step_halvings:
                    raise
                fraction /= 2
                spot = self._spot_plan(decision, snapshot, state, assets, option_legs, deadline, fraction)
                plan = with_option_legs(spot, option_legs, state.total_assets, options_value)
                if not plan.legs:
                    return plan
        return plan

    def _spot_plan(self, decision: hedging.HedgeDecision, snapshot: PriceSnapshot, state: VaultState,
                   assets: Sequence[RiskAssetInfo], option_legs: Sequence[OptionLeg], deadline: int,
                   fraction: float = 1.0) -> RebalancePlan:
        cfg = self.keeper.config
        args = dict(slippage_budget_bps=cfg.slippage_budget_bps,
                    min_trade_value=int(cfg.min_trade_usd * 10**state.base_decimals),
                    deadline=deadline)
        if not decision.hedge:
            holdings = value_holdings(snapshot, state, assets)
            w = holdings.weights
            return RebalancePlan((), state.rebalance_epoch, deadline, holdings.nav, holdings.nav, w, w, 0.0, 0.0,
                                 int(min(cfg.slippage_budget_bps, state.max_slippage_bps)),
                                 skip_reason="no hedge trigger fired")
        holdings = value_holdings(snapshot, state, assets)
        reserved = self._reserved(option_legs, holdings.nav, state)
        sleeve = sleeve_targets(decision.orders.spot_target_weights, state.total_assets, holdings.nav,
                                reserved_cash=reserved)
        self._cash_scale = sleeve.scale
        return plan_rebalance(snapshot, state, assets, sleeve.weights, cash_buffer_bps=sleeve.cash_buffer_bps,
                              drift_threshold_bps=0.0, fraction=fraction, **args)

    def _reserved(self, option_legs: Sequence[OptionLeg], spot_nav: int, state: VaultState) -> int:
        """Base units kept in cash for the premiums, paid after the swaps from the base balance; the sells may
        return up to the slippage budget less than their oracle value, so that much of the spot NAV too."""
        reserved = sum(leg.premium_limit for leg in option_legs if leg.is_buy)
        if not reserved:
            return 0
        slippage = int(min(self.keeper.config.slippage_budget_bps, state.max_slippage_bps))
        return min(reserved + -(-spot_nav * slippage // BPS), spot_nav)

    def _greeks(self, units: FloatArray, positions: Sequence[OptionPosition], spots: FloatArray, vols: FloatArray,
                now: int, symbols: Sequence[str]) -> hedging.PortfolioGreeks:
        return hedging.portfolio_greeks(dict(zip(symbols, units)), positions, dict(zip(symbols, spots)),
                                        dict(zip(symbols, vols)), now, symbols=symbols)

    def _greeks_after(self, symbols: Sequence[str], spots: FloatArray, vols: FloatArray, block: int) -> dict[str, Any]:
        """Greeks of the book at ``block`` (after the transaction; the feeds are the ones it was planned with)."""
        reader = self.keeper.reader
        fn = self.vault.functions
        balances = fn.holdings().call(block_identifier=block)[1][1:]
        nav = fn.totalAssets().call(block_identifier=block) / 10**reader.base_decimals
        units = np.array([b / 10**a.token_decimals for b, a in zip(balances, reader.assets)])
        book = read_option_book(self.vault, self.market, reader.assets, block)
        now = self.keeper.w3.eth.get_block(block)["timestamp"]
        g = self._greeks(units, [h.position() for h in book], spots, vols, now, symbols)
        out = g.as_dict()
        for i, s in enumerate(symbols):
            out[s]["exposure_weight"] = float(g.dollar_delta[i] / nav)
        return out

    def _record(self, report: OverlayStepReport) -> None:
        plan = report.plan
        self.keeper.journal.record(
            "overlay_" + report.status,
            report.reason,
            epoch=plan.expected_epoch if plan else None,
            tx_hash=report.tx_hash,
            gas_used=report.gas_used,
            nav_before=plan.nav_before if plan else None,
            hedge_decision=report.decision,
            overlay_plan=report.overlay,
            greeks_before=report.greeks_before,
            greeks=(report.decision or {}).get("greeks"),
            greeks_after=report.greeks_after,
            legs=plan.legs if plan else None,
            option_legs=report.legs,
            executed=report.executed,
            settlements=report.settlements,
            cash_scale=report.cash_scale,
            target_scale=report.target_scale,
            timings=report.timings,
        )


def _risk_contributions(exposures: FloatArray, covariance: FloatArray) -> FloatArray:
    """``w_i (Σ w)_i`` of the delta-adjusted exposures (only the ranking matters to the overlay)."""
    if covariance.shape != (exposures.size, exposures.size):
        raise ConfigError(f"covariance has shape {covariance.shape}; expected {(exposures.size, exposures.size)}")
    return exposures * (covariance @ exposures)
