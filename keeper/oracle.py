"""First stage of a tick: what the chain says now. Oracle prices (latest answer and round history,
resampled to a daily grid) and the vault's state (holdings, NAV, epoch, limits).

Outputs are frozen dataclasses of numpy arrays; later stages never see a provider.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from web3 import Web3

from keeper.chain import contract
from keeper.errors import InsufficientHistoryError, InvalidPriceError, StaleOracleError
from keeper.units import BPS, SECONDS_PER_DAY

#: Indices of the vault's rolling budgets (``RiskParityVault.BUDGET_NAV_LOSS``, ``BUDGET_TURNOVER``).
NAV_LOSS_BUDGET = 0
TURNOVER_BUDGET = 1

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class RiskAssetInfo:
    """Static description of one whitelisted risk asset, read from the vault once."""

    token: str
    symbol: str
    feed: str
    token_decimals: int
    feed_decimals: int
    heartbeat_seconds: int
    pool_fee: int


@dataclass(frozen=True)
class PriceSnapshot:
    """Latest oracle answers, one per risk asset (``assets`` order).

    Attributes
    ----------
    answers : tuple of int
        Raw feed answers (scaled by 10^feed_decimals).
    prices_usd : ndarray of shape (n_assets,)
        USD per whole token.
    updated_at : ndarray of shape (n_assets,)
        Unix seconds of each answer.
    block_number, block_timestamp : int
        The block the snapshot was read at.
    """

    answers: tuple[int, ...]
    prices_usd: FloatArray
    updated_at: npt.NDArray[np.int64]
    round_ids: tuple[int, ...]
    block_number: int
    block_timestamp: int


@dataclass(frozen=True)
class PriceHistory:
    """Oracle prices sampled on a daily grid ending at the snapshot's block time.

    ``prices_usd[t, i]`` is the last answer of asset i published at or before ``timestamps[t]``.
    """

    timestamps: npt.NDArray[np.int64]
    prices_usd: FloatArray


@dataclass(frozen=True)
class VaultState:
    """The vault's state at one block. Amounts in smallest token units; NAV in base-asset units."""

    base_asset: str
    base_decimals: int
    base_balance: int
    balances: tuple[int, ...]
    total_assets: int
    total_supply: int
    rebalance_epoch: int
    paused: bool
    max_slippage_bps: int
    max_turnover_bps: int
    max_nav_loss_bps: int
    #: What the vault's rolling turnover budget still allows now, base units (``budgetBps(1)`` × NAV /
    #: 10,000 − ``budgetSpent(1)``, floored at 0); ``None`` when unknown (offline state).
    turnover_budget_remaining: int | None = None
    #: What the vault's rolling NAV-loss budget still allows now, base units (``budgetBps(0)`` × NAV / 10,000 −
    #: ``budgetSpent(0)``, floored at 0): the most a rebalance may lose against the oracle; ``None`` when unknown.
    nav_loss_budget_remaining: int | None = None


class ChainReader:
    """Reads feeds and vault state for a keeper; caches round history between ticks.

    Parameters
    ----------
    w3 : Web3
        Connection to the chain.
    vault_address : str
        The :sol:`RiskParityVault`.
    """

    def __init__(self, w3: Web3, vault_address: str) -> None:
        self.w3 = w3
        self.vault = contract(w3, "RiskParityVault", vault_address)
        self.assets: tuple[RiskAssetInfo, ...] = ()
        self._rounds: dict[str, dict[int, tuple[int, int]]] = {}
        self._feeds: dict[str, Any] = {}
        self.base_asset: str = self.vault.functions.asset().call()
        self.base_decimals: int = contract(w3, "TestToken", self.base_asset).functions.decimals().call()
        self.refresh_assets()

    def refresh_assets(self) -> None:
        """Re-reads the whitelist and each asset's configuration from the vault."""
        infos = []
        self._feeds = {}
        for token in self.vault.functions.riskAssets().call():
            feed, heartbeat, pool_fee, token_decimals, feed_decimals, _listed, _deviation_bps = (
                self.vault.functions.riskAssetConfig(token).call()
            )
            symbol = contract(self.w3, "TestToken", token).functions.symbol().call()
            infos.append(RiskAssetInfo(token, symbol, feed, token_decimals, feed_decimals, heartbeat, pool_fee))
            self._rounds.setdefault(feed, {})
            self._feeds[feed] = contract(self.w3, "PushPriceFeed", feed)
        self.assets = tuple(infos)

    @property
    def symbols(self) -> tuple[str, ...]:
        return tuple(a.symbol for a in self.assets)

    def snapshot(self, max_age_seconds: int | None = None) -> PriceSnapshot:
        """Latest answer of every feed, checked.

        Raises
        ------
        InvalidPriceError
            An answer is zero or negative.
        StaleOracleError
            An answer is older than ``max_age_seconds`` (default: the asset's heartbeat in the vault).
        """
        block = self.w3.eth.get_block("latest")
        answers, updated, rounds = [], [], []
        for info in self.assets:
            feed = self._feeds[info.feed]
            round_id, answer, _, updated_at, _ = feed.functions.latestRoundData().call(
                block_identifier=block["number"]
            )
            if answer <= 0:
                raise InvalidPriceError(
                    f"feed {info.feed} ({info.symbol}) answered {answer} in round {round_id}: prices must be "
                    "positive; do not trade this asset until the feed recovers"
                )
            limit = max_age_seconds if max_age_seconds is not None else info.heartbeat_seconds
            age = block["timestamp"] - updated_at
            if age > limit:
                raise StaleOracleError(
                    f"feed {info.feed} ({info.symbol}) last updated {age} s ago, limit {limit} s: "
                    "skip until the feed updates"
                )
            self._rounds[info.feed][round_id] = (answer, updated_at)
            answers.append(answer)
            updated.append(updated_at)
            rounds.append(round_id)
        prices = np.array([a / 10**i.feed_decimals for a, i in zip(answers, self.assets)], dtype=np.float64)
        return PriceSnapshot(
            answers=tuple(answers),
            prices_usd=prices,
            updated_at=np.array(updated, dtype=np.int64),
            round_ids=tuple(rounds),
            block_number=block["number"],
            block_timestamp=block["timestamp"],
        )

    def history(self, snapshot: PriceSnapshot, days: int, bar_seconds: int = SECONDS_PER_DAY) -> PriceHistory:
        """Prices sampled every ``bar_seconds`` (daily by default) over the last ``days`` days up to the snapshot's
        block time: ``days x 86400 / bar_seconds + 1`` samples, each the last round at or before its grid time.

        Rounds are read backwards from each feed's latest round until one older than the window; rounds
        seen before are served from a cache, so a tick reads only what is new.

        Raises
        ------
        InsufficientHistoryError
            A feed has no round at or before the start of the window.
        """
        end = snapshot.block_timestamp
        bars = max(1, round(days * SECONDS_PER_DAY / bar_seconds))
        grid = end - int(bar_seconds) * np.arange(bars, -1, -1, dtype=np.int64)
        columns = []
        for info, latest in zip(self.assets, snapshot.round_ids):
            cache = self._rounds[info.feed]
            feed = self._feeds[info.feed]
            round_id = latest
            while round_id >= 1:
                if round_id not in cache:
                    try:
                        _, answer, _, updated_at, _ = feed.functions.getRoundData(round_id).call(
                            block_identifier=snapshot.block_number
                        )
                    except Exception:  # noqa: BLE001 - a missing round ends the history
                        break
                    cache[round_id] = (answer, updated_at)
                if cache[round_id][1] <= grid[0]:
                    break
                round_id -= 1
            ids = sorted(r for r in cache if r <= latest and r >= max(round_id, 1))
            times = np.array([cache[r][1] for r in ids], dtype=np.int64)
            values = np.array([cache[r][0] for r in ids], dtype=np.float64) / 10**info.feed_decimals
            if times.size == 0 or times[0] > grid[0]:
                raise InsufficientHistoryError(
                    f"feed {info.feed} ({info.symbol}) has no round before {int(grid[0])}, "
                    f"needed for a {days}-day window: shorten lookback_days or wait for more rounds"
                )
            if np.any(values <= 0):
                raise InvalidPriceError(f"feed {info.feed} ({info.symbol}) has a non-positive answer in its history")
            idx = np.searchsorted(times, grid, side="right") - 1
            columns.append(values[idx])
        return PriceHistory(timestamps=grid, prices_usd=np.column_stack(columns))

    def vault_state(self, block_number: int | str = "latest") -> VaultState:
        """Balances, NAV (``totalAssets()``), supply, epoch, pause flag, limits and what the rolling turnover and
        NAV-loss budgets still allow, of the vault."""
        fn = self.vault.functions
        tokens, balances = fn.holdings().call(block_identifier=block_number)
        total_assets = fn.totalAssets().call(block_identifier=block_number)
        return VaultState(
            base_asset=tokens[0],
            base_decimals=self.base_decimals,
            base_balance=balances[0],
            balances=tuple(balances[1:]),
            total_assets=total_assets,
            total_supply=fn.totalSupply().call(block_identifier=block_number),
            rebalance_epoch=fn.rebalanceEpoch().call(block_identifier=block_number),
            paused=fn.paused().call(block_identifier=block_number),
            max_slippage_bps=fn.maxSlippageBps().call(block_identifier=block_number),
            max_turnover_bps=fn.maxTurnoverBps().call(block_identifier=block_number),
            max_nav_loss_bps=fn.maxNavLossBps().call(block_identifier=block_number),
            turnover_budget_remaining=self._budget_remaining(TURNOVER_BUDGET, total_assets, block_number),
            nav_loss_budget_remaining=self._budget_remaining(NAV_LOSS_BUDGET, total_assets, block_number),
        )

    def _budget_remaining(self, kind: int, total_assets: int, block_number: int | str) -> int:
        """``budgetBps(kind)`` × NAV / 10,000 − ``budgetSpent(kind)`` at the block, floored at 0 (base units)."""
        fn = self.vault.functions
        return max(fn.budgetBps(kind).call(block_identifier=block_number) * total_assets // BPS
                   - fn.budgetSpent(kind).call(block_identifier=block_number), 0)
