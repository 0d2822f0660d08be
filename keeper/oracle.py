"""First stage of a tick: what the chain says now. Oracle prices (latest answer and round history,
sampled at the keeper's bar interval) and the vault's state (holdings, NAV, epoch, limits).

Every read goes through Multicall3 (:mod:`keeper.multicall`) with calldata encoded once: a steady tick reads
the block, every feed's latest round and the vault's state in one ``eth_call``; the round history is filled
with batched ``getRoundData`` reads and cached between ticks.

Chainlink round ids (``EACAggregatorProxy``): ``roundId = (phaseId << 64) | aggregatorRoundId``, a ``uint80``
with the phase in the high 16 bits. Within a phase aggregator rounds are contiguous from 1 and their
``updatedAt`` never decreases; a new phase (a new aggregator behind the proxy) restarts at 1. Rounds come
one per deviation or heartbeat, not one per day, so the history is searched by time, never assumed daily.

Outputs are frozen dataclasses of numpy arrays; later stages never see a provider.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Generator

import numpy as np
import numpy.typing as npt
from eth_utils import to_checksum_address
from web3 import Web3

from keeper.chain import contract, decode_revert
from keeper.errors import (
    ConfigError,
    InsufficientHistoryError,
    InvalidPriceError,
    RpcUnavailableError,
    StaleOracleError,
)
from keeper.multicall import (
    GET_BLOCK_NUMBER,
    GET_CURRENT_BLOCK_TIMESTAMP,
    MAX_CALLS_PER_REQUEST,
    MULTICALL3_ADDRESS,
    Call,
    aggregate3,
    call_encoded,
    decode_aggregate3,
    decode_int,
    decode_uint,
    encode_aggregate3,
    has_multicall3,
    selector,
    uint_word,
)
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
    """Oracle prices sampled on a grid of bars ending at the snapshot's block time.

    ``timestamps`` has shape (n_bars + 1,): ``end − k × bar_seconds`` for k = n_bars .. 0 (Unix seconds);
    ``prices_usd[t, i]`` (USD per whole token) is the last answer of asset i updated at or before
    ``timestamps[t]``.
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


#: Selectors the reader encodes once (``AggregatorV3Interface`` and ``RiskParityVault``).
LATEST_ROUND_DATA = selector("latestRoundData()")
GET_ROUND_DATA = selector("getRoundData(uint80)")
_VAULT_VIEWS = ("holdings()", "totalAssets()", "totalSupply()", "rebalanceEpoch()", "paused()",
                "maxSlippageBps()", "maxTurnoverBps()", "maxNavLossBps()")
#: Width of ``aggregatorRoundId`` in a proxy round id (``phaseId`` sits above it).
PHASE_SHIFT = 64
#: Round reads per feed per request while searching history (spread evenly over the unknown range).
PROBES_PER_FEED = 256
#: Round reads per step while looking for the end of an earlier phase (one feed, so a wider step).
PHASE_END_PROBES = 1024
#: Largest ``aggregatorRoundId`` probed when looking for the last round of an earlier phase (2^48 rounds).
MAX_PHASE_ROUND_BITS = 48


def phase_of(round_id: int) -> int:
    """``phaseId`` of a proxy round id (its bits 64..79)."""
    return round_id >> PHASE_SHIFT


def aggregator_round_of(round_id: int) -> int:
    """``aggregatorRoundId`` of a proxy round id (its low 64 bits)."""
    return round_id & ((1 << PHASE_SHIFT) - 1)


def proxy_round_id(phase: int, aggregator_round: int) -> int:
    """``(phase << 64) | aggregator_round``, the round id a Chainlink proxy answers for."""
    return (phase << PHASE_SHIFT) | aggregator_round


@dataclass
class _FeedRounds:
    """What the reader knows of one feed: rounds read (None = the feed has no such round) and the last
    aggregator round of earlier phases (immutable once a phase has ended)."""

    feed: str
    rounds: dict[int, tuple[int, int] | None] = field(default_factory=dict)
    #: The same rounds by phase and aggregator round id.
    phases: dict[int, dict[int, tuple[int, int] | None]] = field(default_factory=dict)
    phase_last: dict[int, int] = field(default_factory=dict)

    def put(self, round_id: int, value: tuple[int, int] | None) -> None:
        self.rounds[round_id] = value
        self.phases.setdefault(phase_of(round_id), {})[aggregator_round_of(round_id)] = value

    def forget_before(self, round_id: int) -> None:
        """Drops rounds older than ``round_id`` (the round of the window's first point: the window only moves
        forward, and that round still bounds the next search from below), so a long-running keeper's cache
        stays the size of its window."""
        old = [rid for rid in self.rounds if rid < round_id]
        for rid in old:
            del self.rounds[rid]
            self.phases[phase_of(rid)].pop(aggregator_round_of(rid), None)


#: A search step: the round ids it needs read; the driver reads them into the feed's cache and resumes it.
_Search = Generator[list[int], None, Any]


class ChainReader:
    """Reads feeds and vault state for a keeper through Multicall3; caches round history between ticks.

    Parameters
    ----------
    w3 : Web3
        Connection to the chain.
    vault_address : str
        The :sol:`RiskParityVault`.

    Attributes
    ----------
    requests : int
        ``eth_call`` requests this reader has sent for ticks (:meth:`read`, :meth:`snapshot`,
        :meth:`vault_state`, :meth:`history`), for benchmarks.

    Raises
    ------
    ConfigError
        The chain has no Multicall3 at :data:`keeper.multicall.MULTICALL3_ADDRESS`.
    """

    def __init__(self, w3: Web3, vault_address: str) -> None:
        self.w3 = w3
        self.vault = contract(w3, "RiskParityVault", vault_address)
        if not has_multicall3(w3):
            raise ConfigError(
                f"no Multicall3 at {MULTICALL3_ADDRESS} on this chain: it exists on every public network; on a "
                "local chain place it with keeper.multicall.ensure_multicall3(w3) (deploy_system does)")
        self.assets: tuple[RiskAssetInfo, ...] = ()
        self._rounds: dict[str, _FeedRounds] = {}
        self.requests = 0
        self.base_asset: str = self.vault.functions.asset().call()
        self.base_decimals: int = contract(w3, "TestToken", self.base_asset).functions.decimals().call()
        self.refresh_assets()

    def refresh_assets(self) -> None:
        """Re-reads the whitelist and each asset's configuration from the vault, and encodes the tick's
        calls once (block, every feed's ``latestRoundData``, the vault's views)."""
        infos = []
        for token in self.vault.functions.riskAssets().call():
            feed, heartbeat, pool_fee, token_decimals, feed_decimals, _listed, _deviation_bps = (
                self.vault.functions.riskAssetConfig(token).call()
            )
            symbol = contract(self.w3, "TestToken", token).functions.symbol().call()
            infos.append(RiskAssetInfo(token, symbol, feed, token_decimals, feed_decimals, heartbeat, pool_fee))
            self._rounds.setdefault(feed, _FeedRounds(feed))
        self.assets = tuple(infos)
        vault = self.vault.address
        self._block_calls = [Call.to(MULTICALL3_ADDRESS, GET_BLOCK_NUMBER, False),
                             Call.to(MULTICALL3_ADDRESS, GET_CURRENT_BLOCK_TIMESTAMP, False)]
        self._feed_calls = [Call.to(a.feed, LATEST_ROUND_DATA) for a in self.assets]
        self._vault_calls = [Call.to(vault, selector(sig)) for sig in _VAULT_VIEWS] + [
            Call.to(vault, selector("budgetBps(uint256)") + uint_word(kind))
            for kind in (NAV_LOSS_BUDGET, TURNOVER_BUDGET)] + [
            Call.to(vault, selector("budgetSpent(uint256)") + uint_word(kind))
            for kind in (NAV_LOSS_BUDGET, TURNOVER_BUDGET)]
        self._tick_calldata = encode_aggregate3(self._block_calls + self._feed_calls + self._vault_calls)
        self._snapshot_calldata = encode_aggregate3(self._block_calls + self._feed_calls)
        self._vault_calldata = encode_aggregate3(self._vault_calls)

    @property
    def symbols(self) -> tuple[str, ...]:
        return tuple(a.symbol for a in self.assets)

    # --- the tick's one read --------------------------------------------------------------------

    def read(self, max_age_seconds: int | None = None) -> tuple[PriceSnapshot, VaultState]:
        """Latest answer of every feed (checked) and the vault's state, at one block, in one ``eth_call``.

        Raises
        ------
        InvalidPriceError, StaleOracleError
            As :meth:`snapshot`.
        RpcUnavailableError
            A vault view reverted (e.g. ``totalAssets()`` on a stale feed) or the node failed.
        """
        results = self._call(self._tick_calldata, "latest")
        n = len(self._feed_calls)
        snapshot = self._snapshot_from(results[:2 + n], max_age_seconds)
        return snapshot, self._state_from(results[2 + n:], snapshot.block_number)

    def snapshot(self, max_age_seconds: int | None = None) -> PriceSnapshot:
        """Latest answer of every feed at the head block, checked (one ``eth_call``).

        Raises
        ------
        InvalidPriceError
            An answer is zero or negative.
        StaleOracleError
            An answer is older than ``max_age_seconds`` (default: the asset's heartbeat in the vault).
        """
        return self._snapshot_from(self._call(self._snapshot_calldata, "latest"), max_age_seconds)

    def vault_state(self, block_number: int | str = "latest") -> VaultState:
        """Balances, NAV (``totalAssets()``), supply, epoch, pause flag, limits and what the rolling turnover and
        NAV-loss budgets still allow, of the vault (one ``eth_call``)."""
        return self._state_from(self._call(self._vault_calldata, block_number), block_number)

    def _call(self, calldata: bytes, block: int | str) -> list[tuple[bool, bytes]]:
        self.requests += 1
        return decode_aggregate3(call_encoded(self.w3, calldata, block))

    def _snapshot_from(self, results: list[tuple[bool, bytes]], max_age_seconds: int | None) -> PriceSnapshot:
        block_number = decode_uint(results[0][1])
        block_timestamp = decode_uint(results[1][1])
        answers, updated, rounds = [], [], []
        for info, (ok, data) in zip(self.assets, results[2:]):
            if not ok or len(data) < 160:
                raise InvalidPriceError(
                    f"feed {info.feed} ({info.symbol}) reverted on latestRoundData at block {block_number}: "
                    "do not trade this asset until the feed answers")
            round_id, answer, updated_at = decode_uint(data, 0), decode_int(data, 1), decode_uint(data, 3)
            if answer <= 0:
                raise InvalidPriceError(
                    f"feed {info.feed} ({info.symbol}) answered {answer} in round {round_id}: prices must be "
                    "positive; do not trade this asset until the feed recovers"
                )
            limit = max_age_seconds if max_age_seconds is not None else info.heartbeat_seconds
            age = block_timestamp - updated_at
            if age > limit:
                raise StaleOracleError(
                    f"feed {info.feed} ({info.symbol}) last updated {age} s ago, limit {limit} s: "
                    "skip until the feed updates"
                )
            self._rounds[info.feed].put(round_id, (answer, updated_at))
            answers.append(answer)
            updated.append(updated_at)
            rounds.append(round_id)
        prices = np.array([a / 10**i.feed_decimals for a, i in zip(answers, self.assets)], dtype=np.float64)
        return PriceSnapshot(
            answers=tuple(answers),
            prices_usd=prices,
            updated_at=np.array(updated, dtype=np.int64),
            round_ids=tuple(rounds),
            block_number=block_number,
            block_timestamp=block_timestamp,
        )

    def _state_from(self, results: list[tuple[bool, bytes]], block: int | str) -> VaultState:
        names = [*_VAULT_VIEWS, "budgetBps(0)", "budgetBps(1)", "budgetSpent(0)", "budgetSpent(1)"]
        for name, (ok, data) in zip(names, results):
            if not ok:
                raise RpcUnavailableError(
                    f"vault {self.vault.address} reverted on {name} at block {block}: {decode_revert(data)}")
        holdings = results[0][1]
        tokens_at, balances_at = decode_uint(holdings, 0) // 32, decode_uint(holdings, 1) // 32
        n = decode_uint(holdings, tokens_at)
        tokens = [holdings[32 * (tokens_at + 1 + i) + 12:32 * (tokens_at + 2 + i)] for i in range(n)]
        balances = [decode_uint(holdings, balances_at + 1 + i) for i in range(decode_uint(holdings, balances_at))]
        total_assets = decode_uint(results[1][1])
        (budget_loss_bps, budget_turnover_bps, spent_loss, spent_turnover) = (
            decode_uint(d) for _, d in results[8:12])
        return VaultState(
            base_asset=to_checksum_address(tokens[0]),
            base_decimals=self.base_decimals,
            base_balance=balances[0],
            balances=tuple(balances[1:]),
            total_assets=total_assets,
            total_supply=decode_uint(results[2][1]),
            rebalance_epoch=decode_uint(results[3][1]),
            paused=bool(decode_uint(results[4][1])),
            max_slippage_bps=decode_uint(results[5][1]),
            max_turnover_bps=decode_uint(results[6][1]),
            max_nav_loss_bps=decode_uint(results[7][1]),
            turnover_budget_remaining=max(budget_turnover_bps * total_assets // BPS - spent_turnover, 0),
            nav_loss_budget_remaining=max(budget_loss_bps * total_assets // BPS - spent_loss, 0),
        )

    # --- round history ----------------------------------------------------------------------------

    def history(self, snapshot: PriceSnapshot, bars: int, bar_seconds: int = SECONDS_PER_DAY) -> PriceHistory:
        """Prices on a grid of ``bars + 1`` points ``bar_seconds`` apart ending at the snapshot's block time.

        Each point takes the last answer updated at or before it, from whatever rounds the feeds have (one per
        deviation or heartbeat). A point takes its round from the newest phase that has a round at or before it,
        so rounds an old aggregator still reports after the next phase began are never sampled. The rounds
        are searched by time within each phase (k-ary search over the
        contiguous aggregator round ids, :data:`PROBES_PER_FEED` reads per feed per request, all feeds in the
        same Multicall3 requests), walking back to earlier phases when a phase starts after a grid point.
        Rounds read are cached, so a steady tick with one new round per feed reads nothing here (the
        snapshot brought it).

        Parameters
        ----------
        snapshot : PriceSnapshot
            From :meth:`read` or :meth:`snapshot`; its block is the block read and its time the grid's end.
        bars : int
            Number of bars (returns are ``bars``), >= 1.
        bar_seconds : int
            Seconds per bar (86,400: daily), >= 1.

        Raises
        ------
        InsufficientHistoryError
            A feed has no round at or before the grid's first point; the message says how many bars are
            needed, how many exist and how long until enough exist.
        InvalidPriceError
            A sampled answer is zero or negative, or a round inside a phase's range is missing.
        ValueError
            ``bars`` or ``bar_seconds`` below 1.
        """
        if bars < 1 or bar_seconds < 1:
            raise ValueError(f"bars and bar_seconds must be >= 1, got bars={bars}, bar_seconds={bar_seconds}")
        end = snapshot.block_timestamp
        grid = end - int(bar_seconds) * np.arange(bars, -1, -1, dtype=np.int64)
        searches = {info.feed: self._sample(info.feed, latest, grid.tolist())
                    for info, latest in zip(self.assets, snapshot.round_ids)}
        sampled = self._drive(searches, snapshot.block_number)
        columns = []
        for info in self.assets:
            ids, earliest = sampled[info.feed]
            cache = self._rounds[info.feed].rounds
            if ids[0] is None:
                have = max(int((end - earliest) // bar_seconds), 0) if earliest is not None else 0
                wait = int(grid[0]) if earliest is None else earliest - int(grid[0])
                ready = dt.datetime.fromtimestamp(end + wait, dt.timezone.utc).isoformat()
                first = ("no round at all" if earliest is None else
                         f"its first round at {dt.datetime.fromtimestamp(earliest, dt.timezone.utc).isoformat()}")
                raise InsufficientHistoryError(
                    f"feed {info.feed} ({info.symbol}) has {first}: a {bars}-bar window of {bar_seconds} s bars "
                    f"needs a round at or before {int(grid[0])}; {have} of {bars} bars exist, the rest in "
                    f"{wait} s (at {ready}) if the feed keeps updating; shorten lookback_days or wait")
            values = []
            for g, rid in zip(grid.tolist(), ids):
                answer, _ = cache[rid]  # type: ignore[misc]
                if answer <= 0:
                    raise InvalidPriceError(
                        f"feed {info.feed} ({info.symbol}) answered {answer} in round {rid} (the last round at or "
                        f"before {g}): prices must be positive; shorten the window past it or wait")
                values.append(answer)
            columns.append(np.array(values, dtype=np.float64) / 10**info.feed_decimals)
            self._rounds[info.feed].forget_before(ids[0])  # type: ignore[arg-type]
        return PriceHistory(timestamps=grid, prices_usd=np.column_stack(columns))

    def _drive(self, searches: dict[str, _Search], block: int) -> dict[str, Any]:
        """Runs every feed's search together: each step's round reads of all feeds go in the same Multicall3
        request(s), the answers into the caches, and each search resumes until it returns."""
        results: dict[str, Any] = {}
        pending: dict[str, list[int]] = {}
        for feed, search in searches.items():
            try:
                pending[feed] = next(search)
            except StopIteration as stop:
                results[feed] = stop.value
        while pending:
            wanted = [(feed, rid) for feed, ids in pending.items() for rid in dict.fromkeys(ids)
                      if rid not in self._rounds[feed].rounds]
            if wanted:
                calls = [Call.to(feed, GET_ROUND_DATA + uint_word(rid)) for feed, rid in wanted]
                chunks = -(-len(calls) // MAX_CALLS_PER_REQUEST)
                self.requests += chunks
                for (feed, rid), (ok, data) in zip(wanted, aggregate3(self.w3, calls, block)):
                    # A round that does not exist reverts (OCR2 aggregators: "No data present") or answers
                    # updatedAt = 0 (older aggregators); both mean "no such round".
                    updated_at = decode_uint(data, 3) if ok and len(data) >= 160 else 0
                    self._rounds[feed].put(rid, (decode_int(data, 1), updated_at) if updated_at else None)
            step: dict[str, list[int]] = {}
            for feed in pending:
                try:
                    step[feed] = searches[feed].send(None)
                except StopIteration as stop:
                    results[feed] = stop.value
            pending = step
        return results

    def _sample(self, feed: str, latest_id: int, grid: list[int]) -> _Search:
        """Search of one feed: for each grid point, the id of the last round updated at or before it (None when
        the feed's history starts later), and the time of the earliest round seen."""
        state = self._rounds[feed]
        out: list[int | None] = [None] * len(grid)
        todo = list(range(len(grid)))
        phase, last = phase_of(latest_id), aggregator_round_of(latest_id)
        earliest: int | None = None
        while todo:
            if last >= 1:
                found = yield from self._search_phase(state, phase, last, [grid[j] for j in todo])
                first = state.rounds.get(proxy_round_id(phase, 1))
                if first is not None:
                    earliest = first[1]
                for j, agg in zip(list(todo), found):
                    if agg is not None:
                        out[j] = proxy_round_id(phase, agg)
                todo = [j for j, agg in zip(todo, found) if agg is None]
            if not todo or phase == 0:
                break
            phase -= 1
            if phase not in state.phase_last:
                state.phase_last[phase] = yield from self._last_round_of_phase(state, phase)
            last = state.phase_last[phase]
        return out, earliest

    def _search_phase(self, state: _FeedRounds, phase: int, last: int, targets: list[int]) -> _Search:
        """For each target time, the largest aggregator round in ``1..last`` of ``phase`` updated at or before
        it (None when round 1 is later). k-ary search: each step reads up to :data:`PROBES_PER_FEED` rounds
        spread over the open brackets (all of a bracket when it is that small, and all of every bracket when
        they hold at most 4 × :data:`PROBES_PER_FEED` rounds together)."""
        lo = [0] * len(targets)       # a round known at or before the target (0: none)
        hi = [last + 1] * len(targets)  # a round known after the target (last + 1: none)

        def narrow() -> None:
            # Times never decrease within a phase, so the known rounds sorted by id are sorted by time too.
            known = sorted((agg, r[1]) for agg, r in state.phases.get(phase, {}).items()
                           if r is not None and 1 <= agg <= last)
            if not known:
                return
            aggs = np.array([a for a, _ in known], dtype=np.int64)
            times = np.array([t for _, t in known], dtype=np.int64)
            at = np.searchsorted(times, np.asarray(targets, dtype=np.int64), side="right")
            for i, k in enumerate(at.tolist()):
                if k > 0:
                    lo[i] = max(lo[i], int(aggs[k - 1]))
                if k < len(aggs):
                    hi[i] = min(hi[i], int(aggs[k]))

        narrow()
        while True:
            brackets = sorted({(lo[i], hi[i]) for i in range(len(targets)) if hi[i] - lo[i] > 1})
            if not brackets:
                return [lo[i] or None for i in range(len(targets))]
            budget = max(PROBES_PER_FEED // len(brackets), 1)
            # Brackets this narrow in total are read whole: one more step instead of several small ones.
            read_all = sum(b - a - 1 for a, b in brackets) <= 4 * PROBES_PER_FEED
            probes: list[int] = []
            for a, b in brackets:
                width = b - a - 1
                if read_all or width <= budget:
                    probes.extend(range(a + 1, b))
                else:
                    probes.extend(sorted({a + 1 + (width - 1) * k // max(budget - 1, 1) for k in range(budget)}))
            ids = [proxy_round_id(phase, agg) for agg in probes]
            yield ids
            missing = [rid for rid in ids if state.rounds.get(rid) is None]
            if missing:
                raise InvalidPriceError(
                    f"feed {state.feed} has no round {missing[0]} (phase {phase}, aggregator round "
                    f"{aggregator_round_of(missing[0])}) although its phase runs to round {last}: the feed's "
                    "round ids are not contiguous; check the feed address")
            narrow()

    def _last_round_of_phase(self, state: _FeedRounds, phase: int) -> _Search:
        """The last aggregator round of an earlier ``phase`` (0 when it has none): existence is contiguous
        from round 1, so read rounds 2^0 .. 2^47 in one step, then k-ary search between the last that exists
        and the first that does not."""
        ids = [proxy_round_id(phase, 1 << k) for k in range(MAX_PHASE_ROUND_BITS)]
        yield ids
        exists = [state.rounds.get(rid) is not None for rid in ids]
        if not exists[0]:
            return 0
        k = max(i for i, e in enumerate(exists) if e)
        lo, hi = 1 << k, 1 << (k + 1)
        while hi - lo > 1:
            width = hi - lo - 1
            count = min(width, PHASE_END_PROBES)
            step = sorted({lo + 1 + (width - 1) * i // max(count - 1, 1) for i in range(count)})
            yield [proxy_round_id(phase, a) for a in step]
            for a in step:
                if state.rounds.get(proxy_round_id(phase, a)) is not None:
                    lo = max(lo, a)
                else:
                    hi = min(hi, a)
        return lo

