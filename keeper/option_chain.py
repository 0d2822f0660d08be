"""The option market and the vault's option book as read from chain, and settlement of expired series.

The edge of the options path: :func:`read_option_book`, :func:`read_implied_vols`, :class:`ChainOptionQuoter`
(the market's bid and ask and the vault's premium bound and budget at one block, for
:func:`keeper.option_orders.option_legs_for_plan`) and :func:`settle_expired`, which the keeper runs as an
executor action of its own before it plans (anyone may settle; the keeper sends through its write-ahead
journal).

Units: ``strike`` 1e18 USD per whole underlying; ``amount`` 1e18 units; premiums and payouts base-asset units;
implied vols annualised fractions; times Unix seconds.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import numpy.typing as npt

from keeper.chain import call_raw, contract, decode_revert
from keeper.errors import OptionLegError, SimulationRevertedError
from keeper.multicall import Call, aggregate3, decode_address, decode_int, decode_uint, selector
from keeper.option_orders import HeldSeries, Settlement
from keeper.oracle import LATEST_ROUND_DATA, RiskAssetInfo
from keeper.units import BPS

__all__ = [
    "BUDGET_PREMIUM",
    "read_option_book",
    "vol_feeds_of",
    "read_implied_vols",
    "ChainOptionQuoter",
    "settle_expired",
]

FloatArray = npt.NDArray[np.float64]

#: Index of the vault's rolling premium budget (``RiskParityVault.BUDGET_PREMIUM``).
BUDGET_PREMIUM = 2

_SERIES = selector("series(bytes32)")
_POSITION_OF = selector("positionOf(bytes32,address)")


def read_option_book(
    vault: Any, market: Any, assets: Sequence[RiskAssetInfo], block: int | str = "latest"
) -> tuple[HeldSeries, ...]:
    """The vault's option positions: ``vault.openSeries()``, then ``market.series(id)`` and
    ``market.positionOf(id, vault)`` of every open series, in two Multicall3 requests at ``block``.

    Raises
    ------
    OptionLegError
        A held series on an underlying that is not among ``assets``.
    RpcUnavailableError
        A read reverted or the node failed.
    """
    symbol_of = {a.token.lower(): a.symbol for a in assets}
    series_ids = vault.functions.openSeries().call(block_identifier=block)
    if not series_ids:
        return ()
    calls = []
    for sid in series_ids:
        calls.append(Call.to(market.address, _SERIES + bytes(sid), False))
        calls.append(Call.to(market.address, _POSITION_OF + bytes(sid) + bytes(12) + bytes.fromhex(vault.address[2:]),
                             False))
    results = aggregate3(market.w3, calls, block)
    out = []
    for k, sid in enumerate(series_ids):
        # ``series(id)`` returns a static struct, inline: underlying, expiry, isCall, settled, strike, ...
        data = results[2 * k][1]
        underlying, expiry, strike = decode_address(data, 0), decode_uint(data, 1), decode_uint(data, 4)
        is_call, settled = bool(decode_uint(data, 2)), bool(decode_uint(data, 3))
        if underlying.lower() not in symbol_of:
            raise OptionLegError(
                f"the vault holds series 0x{bytes(sid).hex()} on {underlying}, not a listed risk asset"
            )
        amount = decode_uint(results[2 * k + 1][1])
        symbol = symbol_of[underlying.lower()]
        out.append(HeldSeries(bytes(sid), symbol, underlying, strike, expiry, is_call, amount, settled))
    return tuple(out)


def vol_feeds_of(market: Any, assets: Sequence[RiskAssetInfo]) -> list[tuple[Any, int]]:
    """Each asset's implied-volatility feed (web3 contract) and its decimals, from ``market.underlyingConfig``."""
    out = []
    for a in assets:
        cfg = market.functions.underlyingConfig(a.token).call()
        out.append((contract(market.w3, "PushPriceFeed", cfg[1]), int(cfg[5])))
    return out


def read_implied_vols(market: Any, assets: Sequence[RiskAssetInfo], block: int | str = "latest",
                      feeds: Sequence[tuple[Any, int]] | None = None) -> FloatArray:
    """Annualised implied volatility per asset (fraction) from the market's volatility feeds, shape (n_assets,),
    every feed's ``latestRoundData`` in one Multicall3 request.

    ``feeds`` (from :func:`vol_feeds_of`) saves the configuration reads when called every tick.

    Raises
    ------
    RpcUnavailableError
        A feed reverted or the node failed.
    """
    feeds = feeds if feeds is not None else vol_feeds_of(market, assets)
    results = aggregate3(market.w3, [Call.to(feed.address, LATEST_ROUND_DATA, False) for feed, _ in feeds], block)
    return np.array([decode_int(data, 1) / 10**decimals for (_, data), (_, decimals) in zip(results, feeds)],
                    dtype=np.float64)


class ChainOptionQuoter:
    """The :class:`keeper.option_orders.OptionQuoter` of a vault and its ``OptionMarket`` at one block.

    Parameters
    ----------
    vault, market : web3 contracts
    block : int or "latest"
    """

    def __init__(self, vault: Any, market: Any, block: int | str = "latest") -> None:
        self.vault = vault
        self.market = market
        self.block = block

    def quote(self, underlying: str, strike: int, expiry: int, is_call: bool, amount: int,
              is_buy: bool) -> tuple[int, int]:
        premium, fair = self.market.functions.quote(underlying, strike, expiry, is_call, amount, is_buy).call(
            block_identifier=self.block)
        return int(premium), int(fair)

    def max_premium_bps(self) -> int:
        return int(self.vault.functions.maxPremiumBps().call(block_identifier=self.block))

    def premium_budget_remaining(self) -> int:
        """``totalAssets × premiumBudgetBps / 10⁴ − budgetSpent(BUDGET_PREMIUM)`` at the block (floor, >= 0)."""
        vf = self.vault.functions
        spent = vf.budgetSpent(BUDGET_PREMIUM).call(block_identifier=self.block)
        budget = (vf.totalAssets().call(block_identifier=self.block)
                  * vf.premiumBudgetBps().call(block_identifier=self.block) // BPS)
        return max(budget - spent, 0)

    def max_option_legs(self) -> int:
        return int(self.vault.functions.MAX_OPTION_LEGS().call())


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


