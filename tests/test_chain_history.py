"""Chainlink round history through a proxy (`ChainReader.history`): irregular rounds (one per deviation or
heartbeat, not one per day) spread over two phases, sampled at the bar interval, read in batched requests,
and a clear refusal when the history is too short."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from keeper.build import load_artifacts
from keeper.chain import AnvilProcess, DevSender, connect, dev_accounts, rpc
from keeper.errors import InsufficientHistoryError
from keeper.multicall import ensure_multicall3
from keeper.oracle import PROBES_PER_FEED, ChainReader, proxy_round_id

GENESIS = 1_640_995_200  # 2022-01-01T00:00:00Z
DAY = 86_400
#: Phase 1 of feed A runs 1,500 irregular rounds (more than one search step reads), phase 2 the rest.
N_PHASE1 = 1_500


@dataclass
class Feed:
    proxy: Any
    aggregators: list[Any]
    #: (phase, aggregator round, answer, updatedAt) of every round in proxy order.
    rounds: list[tuple[int, int, int, int]]


def _irregular_times(rng: random.Random, start: int, n: int, min_gap: int, max_gap: int) -> list[int]:
    times, t = [], start
    for _ in range(n):
        t += rng.randint(min_gap, max_gap)
        times.append(t)
    return times


def _record(tx: DevSender, owner: str, aggregator: Any, answers: list[int], times: list[int]) -> None:
    for lo in range(0, len(answers), 250):  # stay under the block gas limit
        tx.transact(owner, aggregator.functions.record(answers[lo:lo + 250], times[lo:lo + 250]), gas=20_000_000)


@pytest.fixture(scope="module")
def chain():
    rng = random.Random(7)
    end = GENESIS + 130 * DAY
    with AnvilProcess(timestamp=end) as node:
        w3 = connect(node.rpc_url)
        ensure_multicall3(w3)
        owner, keeper, guardian = dev_accounts()[:3]
        tx = DevSender(w3)
        arts = load_artifacts()
        base = tx.deploy(owner, arts["TestToken"], "USD", "USDC", 6, owner)
        vault = tx.deploy(owner, arts["RiskParityVault"], base.address, "V", "V", owner, 0, owner, keeper, guardian)
        feeds = []
        # A: rounds every 20 min to 3 hours in phase 1 (from day 0), a new aggregator from about day 104 with rounds 2 h to
        # 3 days apart; the old aggregator keeps recording after the switch (the proxy no longer serves it as
        # latest, and those rounds must not be sampled). B: one phase, 12 h to 2 days apart.
        specs = {
            "A": [(_irregular_times(rng, GENESIS, N_PHASE1, 1200, 3 * 3600), None)],
            "B": [(_irregular_times(rng, GENESIS, 150, 12 * 3600, 2 * DAY), None)],
        }
        a1 = specs["A"][0][0]
        specs["A"].append((_irregular_times(rng, a1[-1], 60, 2 * 3600, 3 * DAY), None))
        for symbol, phases in specs.items():
            token = tx.deploy(owner, arts["TestToken"], symbol, symbol, 18, owner)
            proxy = tx.deploy(owner, arts["TestAggregatorProxy"], 8, f"{symbol} / USD", owner)
            feed = Feed(proxy, [], [])
            for phase, (times, _) in enumerate(phases, start=1):
                times = [t for t in times if t <= end]
                agg = tx.deploy(owner, arts["TestAggregator"], 8, owner)
                answers = [rng.randint(10**8, 10**12) for _ in times]
                _record(tx, owner, agg, answers, times)
                tx.transact(owner, proxy.functions.setAggregator(agg.address))
                feed.aggregators.append(agg)
                feed.rounds += [(phase, i + 1, a, t) for i, (a, t) in enumerate(zip(answers, times))]
            if symbol == "A":  # the phase-1 aggregator goes on after phase 2 has begun: 5 late rounds
                late = [feed.rounds[-1 - len([r for r in feed.rounds if r[0] == 2]) + 1][3] + 3600 * k for k in range(1, 6)]
                _record(tx, owner, feed.aggregators[0], [1] * 5, late)
            tx.transact(owner, vault.functions.listRiskAsset(token.address, proxy.address, 30 * DAY, 500, 50))
            feeds.append(feed)
        rpc(w3, "evm_mine", [end + 10])
        yield w3, vault, feeds, tx, owner


def _expected(rounds: list[tuple[int, int, int, int]], grid: np.ndarray) -> np.ndarray:
    times = np.array([r[3] for r in rounds])
    answers = np.array([r[2] for r in rounds], dtype=np.float64) / 1e8
    idx = np.searchsorted(times, grid, side="right") - 1
    assert np.all(idx >= 0)
    return answers[idx]


def test_history_samples_the_last_round_at_or_before_each_bar_across_two_phases(chain) -> None:
    w3, vault, feeds, _, _ = chain
    reader = ChainReader(w3, vault.address)
    snapshot, _ = reader.read(max_age_seconds=10 * DAY)
    assert snapshot.round_ids[0] == proxy_round_id(2, len([r for r in feeds[0].rounds if r[0] == 2]))
    cold = []
    for bars, bar_seconds in ((120, DAY), (200, 12 * 3600), (60, 2 * DAY)):
        before = reader.requests
        history = reader.history(snapshot, bars, bar_seconds)
        cold.append(reader.requests - before)
        grid = snapshot.block_timestamp - bar_seconds * np.arange(bars, -1, -1)
        assert np.array_equal(history.timestamps, grid)
        for column, feed in enumerate(feeds):
            got, want = history.prices_usd[:, column], _expected(feed.rounds, grid)
            bad = np.nonzero(got != want)[0]
            assert bad.size == 0, (bars, bar_seconds, column, bad[:5], got[bad[:5]], want[bad[:5]], grid[bad[:5]])
    # Batched: a few requests for the whole search of both feeds (1,500 rounds in phase 1 of A need more than
    # one k-ary step; finding the end of phase 1 takes the doubling step and bracket steps), never one per round.
    assert N_PHASE1 > 4 * PROBES_PER_FEED
    assert cold[0] <= 5, cold
    # Everything read is cached: the same window again reads nothing.
    again = reader.requests
    reader.history(snapshot, 120, DAY)
    assert reader.requests == again


def test_a_steady_tick_with_one_new_round_per_feed_reads_no_history(chain) -> None:
    w3, vault, feeds, tx, owner = chain
    reader = ChainReader(w3, vault.address)
    snapshot, _ = reader.read(max_age_seconds=10 * DAY)
    reader.history(snapshot, 90, DAY)
    sid = rpc(w3, "evm_snapshot", [])
    try:
        now = snapshot.block_timestamp + DAY
        rpc(w3, "evm_setNextBlockTimestamp", [now])
        for feed in feeds:
            tx.transact(owner, feed.aggregators[-1].functions.record([123 * 10**8], [now]), gas=1_000_000)
        rpc(w3, "evm_mine", [now + 60])
        n = reader.requests
        snapshot2, _ = reader.read(max_age_seconds=10 * DAY)
        history = reader.history(snapshot2, 90, DAY)
        assert reader.requests - n == 1  # the tick's one Multicall3 read; the history came from the cache
        assert np.all(history.prices_usd[-1] == 123.0)
    finally:
        rpc(w3, "evm_revert", [sid])


def test_too_short_a_history_is_refused_with_the_bars_needed_and_the_wait(chain) -> None:
    w3, vault, _, _, _ = chain
    reader = ChainReader(w3, vault.address)
    snapshot, _ = reader.read(max_age_seconds=10 * DAY)
    # B's first round is between 12 h and 2 days after genesis; the chain is 130 days past genesis.
    with pytest.raises(InsufficientHistoryError, match=r"of 200 bars exist, the rest in \d+ s \(at 20") as err:
        reader.history(snapshot, 200, DAY)
    message = str(err.value)
    assert "its first round at 2022-01-0" in message and "shorten lookback_days or wait" in message
    have = int(message.split(" of 200 bars exist")[0].rsplit(" ", 1)[1])
    assert 127 <= have <= 130
