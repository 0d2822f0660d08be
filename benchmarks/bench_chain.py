"""End-to-end benchmark of the keeper against a real local Anvil node.

Run from the repository root::

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/bench_chain.py

Every number is measured on an Anvil process this script starts itself (``keeper.chain.AnvilProcess``),
with its genesis at a date of the shipped price file so that history can be pushed to the feeds day by
day, as ``keeper demo`` does. Three sections:

1. **Keeper tick latency and JSON-RPC requests.** 9 assets, 40-day lookback, ``drift_threshold_bps = 0`` so
   every tick rebalances. Each replayed day: ``evm_setNextBlockTimestamp`` to the day's close, one
   transaction pushes every feed, one aligns every pool, a block one hour later, then ``Keeper.run_once``;
   every round trip the keeper makes is counted (a wrapper of the provider's ``make_request`` and
   ``make_batch_request``: one HTTP request each), with the JSON-RPC calls inside by method. The first (cold) tick is
   shown on its own; median and p90 are over the following rebalancing ticks, per
   ``TickReport.timings`` key (read / compute / quote / simulate / send; "other" = total minus those:
   the post-trade NAV read and receipt decoding). A second table times the read phase alone
   (``read`` + ``history``) at one fixed block with a fresh ``ChainReader`` (empty round cache) against the
   keeper's own reader (cache filled), with JSON-RPC request counts; then each figure beside the previous
   reader's (:data:`PREVIOUS`).

2. **Gas per rebalance** with 1, 3 and 9 legs, sent to ``RiskParityVault.rebalance`` from the keeper
   account, against the same swaps made directly on the ``SwapRouter`` (``exactInputSingle``) from an EOA
   that holds every token. Legs are built by hand with ``keeper.planner.value_of`` /
   ``amount_for_value`` (the vault's exact integer formulas), ``minAmountOut`` 50 bps under the oracle
   (the vault's bound is 100 bps). Both variants start from the same ``evm_snapshot`` with the same fixed
   block timestamps, and each is run twice to show the gas is repeatable.

3. **Demo replay throughput.** ``keeper.demo.run_demo`` (quiet) over 2022 with 9 assets and the demo's
   90-day lookback (``--demo-end`` for a shorter window); the replay loop's wall time split into the harness's
   one daily transaction (feed pushes and pool alignment), depositor flows, keeper ticks (and those by timing key) and the rest (the demo's own per-day
   reads and bookkeeping), then beside the previous harness's speed.

The timers of section 3 patch module attributes of ``keeper.demo`` inside this process only (restored
afterwards); no file of the package is changed.

No assertion is made on any time. Times are wall-clock (``time.perf_counter``).
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import datetime as dt  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Callable, Sequence  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import web3  # noqa: E402

import keeper.demo as demo_mod  # noqa: E402
from keeper.chain import (  # noqa: E402
    ANVIL_KEYS,
    AnvilProcess,
    DevSender,
    anvil_binary,
    connect,
    contract,
    dev_accounts,
    rpc,
)
from keeper.config import KeeperConfig  # noqa: E402
from keeper.data import PriceTable, load_prices  # noqa: E402
from keeper.deployment import (  # noqa: E402
    BASE_DECIMALS,
    MAX_UINT256,
    POOL_FEE,
    BatchArbitrageur,
    FeedPusher,
    deploy_system,
    price_to_answer,
)
from keeper.journal import Journal  # noqa: E402
from keeper.oracle import ChainReader  # noqa: E402
from keeper.planner import SwapLeg, amount_for_value, value_of  # noqa: E402
from keeper.runner import Keeper  # noqa: E402

BPS = 10_000
LOOKBACK_DAYS = 40
#: Section 1: replay starts on this date (first tick), genesis LOOKBACK_DAYS + 1 days earlier.
TICK_START = dt.date(2022, 1, 1)
#: Section 1: one cold tick, then this many steady-state ticks.
STEADY_TICKS = 20
COLD_READS, WARM_READS = 5, 20
DEPOSIT_USD = 1_000_000.0
#: Section 2.
GAS_DAY = dt.date(2022, 6, 1)
SEED_BUY_USD = 60_000.0
LEG_USD = 10_000.0
LEG_SLIPPAGE_BPS = 50
LEG_COUNTS = (1, 3, 9)
GAS_REPEATS = 2
GAS_LIMIT = 8_000_000
#: Section 3.
#: Section 3: the demo's own defaults (2022, 9 assets, lookback 90 days), the window of the speed target.
DEMO_START, DEMO_END = dt.date(2022, 1, 1), dt.date(2022, 12, 31)
DEMO_LOOKBACK_DAYS = 90

TICK_KEYS = ("read", "compute", "quote", "simulate", "send")


# --- helpers ---------------------------------------------------------------------------------------


class RpcCounter:
    """Counts the round trips (HTTP requests: one per ``make_request``, one per ``make_batch_request`` whatever
    it carries) made through one Web3's provider, and the JSON-RPC calls per method inside them
    (``since(mark)`` gives the methods called after a ``mark = counter.calls``; ``n`` counts round trips)."""

    def __init__(self, w3: Any) -> None:
        self.n = 0
        self.methods: list[str] = []
        self.trips: list[tuple[str, ...]] = []  # the methods of each round trip
        inner = w3.provider.make_request
        inner_batch = w3.provider.make_batch_request

        def counting(method: str, params: Any) -> Any:
            self.n += 1
            self.methods.append(str(method))
            self.trips.append((str(method),))
            return inner(method, params)

        def counting_batch(requests: Any) -> Any:
            self.n += 1
            self.methods.extend(str(method) for method, _ in requests)
            self.trips.append(tuple(str(method) for method, _ in requests))
            return inner_batch(requests)

        w3.provider.make_request = counting
        w3.provider.make_batch_request = counting_batch

    @property
    def calls(self) -> int:
        return len(self.methods)

    def since(self, mark: int) -> dict[str, int]:
        out: dict[str, int] = {}
        for m in self.methods[mark:]:
            out[m] = out.get(m, 0) + 1
        return out


#: Figures of the previous reader and demo harness (one ``eth_call`` per value and per round; one transaction
#: per feed push and per pool alignment), measured with this script on the same machine before the change.
PREVIOUS = {"steady_requests": 37, "cold_requests": 397, "median_tick_ms": 104.0, "median_read_ms": 36.0,
            "demo_days_per_s": "1.5-3.6", "demo_2022_replay_s": 240.0}
#: Requests of a tick by method with the one-request read but one ``eth_call`` per quote, a separate simulation,
#: estimate, two fee reads, two nonce reads and a post-trade NAV read (this script, section 1, before the quote
#: and send path were batched): (tick 1 cold, median steady tick).
PREVIOUS_TICK_METHODS = {
    "eth_blockNumber": (1, 1), "eth_call": (13, 12), "eth_estimateGas": (1, 1), "eth_feeHistory": (2, 2),
    "eth_getTransactionCount": (2, 2), "eth_getTransactionReceipt": (1, 1), "eth_sendRawTransaction": (1, 1),
}
#: Median steady tick and read of that same run, ms.
PREVIOUS_TICK_MS = {"median_tick_ms": 229.7, "median_read_ms": 5.4}


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], align: str | None = None) -> str:
    """Plain-text table; ``align`` is one char per column ('<' or '>'), default: first left, rest right."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    align = align or "<" + ">" * (len(headers) - 1)
    fmt = "  ".join(f"{{:{a}{w}}}" for a, w in zip(align, widths))
    lines = [fmt.format(*cells[0]), "  ".join("-" * w for w in widths)]
    lines += [fmt.format(*r) for r in cells[1:]]
    return "\n".join("  " + line for line in lines)


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f}"


def section(title: str) -> None:
    print()
    print(title)
    print("=" * len(title))


def push_day(pusher: FeedPusher, prices: Sequence[float]) -> None:
    pusher.push([price_to_answer(price) for price in prices])


# --- section 1: tick latency -----------------------------------------------------------------------


def bench_ticks(prices: PriceTable, workdir: Path) -> None:
    section(f"1. Keeper tick latency (9 assets, lookback {LOOKBACK_DAYS} d, drift threshold 0 bps)")
    first = prices.index_of(TICK_START)
    begin = first - (LOOKBACK_DAYS + 1)
    n_days = 1 + STEADY_TICKS + 4  # a few spare days in case a tick skips
    t_setup = time.perf_counter()
    with AnvilProcess(timestamp=prices.close_timestamp(begin) - 3600) as node:
        w3 = connect(node.rpc_url)
        counter = RpcCounter(w3)
        accounts = dev_accounts()
        deployer, keeper_addr, guardian, arb_addr, depositor = accounts[:5]
        tx = DevSender(w3)
        deployment = deploy_system(w3, deployer, keeper_addr, guardian, prices.symbols, prices.prices[begin])
        feeds = [contract(w3, "PushPriceFeed", a.feed) for a in deployment.assets]
        vault = contract(w3, "RiskParityVault", deployment.vault)
        base = contract(w3, "TestToken", deployment.base_asset)
        pusher = FeedPusher(w3, deployer, [f.address for f in feeds])
        arb = BatchArbitrageur(w3, deployment, deployer, [price_to_answer(p) for p in prices.prices[begin]])
        for t in range(begin + 1, first):
            rpc(w3, "evm_setNextBlockTimestamp", [prices.close_timestamp(t)])
            push_day(pusher, prices.prices[t])
        amount = int(DEPOSIT_USD * 10**BASE_DECIMALS)
        tx.transact(deployer, base.functions.mint(depositor, amount))
        tx.transact(depositor, base.functions.approve(vault.address, MAX_UINT256))
        tx.transact(depositor, vault.functions.deposit(amount, depositor))
        config = KeeperConfig(
            rpc_url=node.rpc_url,
            vault_address=deployment.vault,
            quoter_address=deployment.quoter,
            lookback_days=LOOKBACK_DAYS,
            min_observations=30,
            drift_threshold_bps=0.0,
            journal_path=workdir / "ticks.sqlite",
        )
        keeper = Keeper(config, w3=w3, private_key=ANVIL_KEYS[1], journal=Journal(workdir / "ticks.sqlite"))
        setup_s = time.perf_counter() - t_setup

        reports, rpc_counts, rpc_methods, rpc_trips = [], [], [], []
        for t in range(first, first + n_days):
            rpc(w3, "evm_setNextBlockTimestamp", [prices.close_timestamp(t)])
            push_day(pusher, prices.prices[t])
            arb.align_all([price_to_answer(p) for p in prices.prices[t]])
            rpc(w3, "evm_mine", [prices.close_timestamp(t) + 3600])
            c0, m0 = counter.n, counter.calls
            reports.append(keeper.run_once())
            rpc_counts.append(counter.n - c0)
            rpc_methods.append(counter.since(m0))
            rpc_trips.append(counter.trips[c0:])
            if sum(r.status == "rebalanced" for r in reports[1:]) >= STEADY_TICKS:
                break

        # Read phase alone, at one fixed block: fresh reader (cold cache) vs the keeper's reader (warm).
        def timed_read(reader: ChainReader) -> tuple[float, int]:
            c = counter.n
            t0 = time.perf_counter()
            snap, _ = reader.read()
            reader.history(snap, LOOKBACK_DAYS)
            return time.perf_counter() - t0, counter.n - c

        cold = []
        for _ in range(COLD_READS):
            fresh = ChainReader(w3, deployment.vault)  # constructor (asset list) not timed
            cold.append(timed_read(fresh))
        warm = [timed_read(keeper.reader) for _ in range(WARM_READS)]
        rounds_per_feed = len([r for r in keeper.reader._rounds[keeper.reader.assets[0].feed].rounds.values() if r])

    print(f"  setup (anvil, deploy, {LOOKBACK_DAYS + 1}-day feed warm-up, deposit): {setup_s:.1f} s; "
          f"vault NAV ${DEPOSIT_USD:,.0f}; days {prices.dates[first]} .. {prices.dates[first + len(reports) - 1]}")
    statuses = [r.status for r in reports]
    not_rebalanced = [(i, r.status, r.reason) for i, r in enumerate(reports) if r.status != "rebalanced"]
    print(f"  ticks run: {len(reports)} ({statuses.count('rebalanced')} rebalanced)")
    for i, status, reason in not_rebalanced:
        print(f"    tick {i}: {status}: {reason}")
    cold_tick = reports[0]
    steady = [(r, n) for r, n in zip(reports[1:], rpc_counts[1:]) if r.status == "rebalanced"]
    keys = list(TICK_KEYS)

    def col(name: str, rs: Sequence[Any]) -> list[float]:
        if name == "other":
            return [r.timings["total"] - sum(r.timings.get(k, 0.0) for k in keys) for r in rs]
        return [r.timings.get(name, float("nan")) for r in rs]

    rows = []
    st = [r for r, _ in steady]
    for name in keys + ["other", "total"]:
        values = col(name, st)
        cold_v = col(name, [cold_tick])[0]
        rows.append([name, ms(cold_v), ms(float(np.median(values))), ms(float(np.percentile(values, 90))),
                     ms(min(values)), ms(max(values))])
    legs = [len(r.plan.legs) for r in st]
    rows.append(["legs per tick", len(cold_tick.plan.legs) if cold_tick.plan else "-",
                 f"{np.median(legs):.0f}", f"{np.percentile(legs, 90):.0f}", min(legs), max(legs)])
    counts = [n for _, n in steady]
    rows.append(["JSON-RPC round trips", rpc_counts[0], f"{np.median(counts):.0f}",
                 f"{np.percentile(counts, 90):.0f}", min(counts), max(counts)])
    gas = [r.execution.gas_used for r in st]
    rows.append(["gas used", f"{cold_tick.execution.gas_used:,}" if cold_tick.execution else "-",
                 f"{np.median(gas):,.0f}", f"{np.percentile(gas, 90):,.0f}", f"{min(gas):,}", f"{max(gas):,}"])
    print()
    print(f"  Per-tick wall time, ms (tick 1 = cold round cache, all-cash vault; then {len(st)} rebalancing ticks)")
    print(table(["phase", "tick 1 (cold)", "median", "p90", "min", "max"], rows))

    print()
    print(f"  Read phase alone (snapshot + vault_state + history({LOOKBACK_DAYS})) at one fixed block, ms")
    read_rows = []
    for label, samples in ((f"cold: fresh ChainReader, empty cache (n={len(cold)})", cold),
                           (f"warm: keeper's reader, {rounds_per_feed} rounds/feed cached (n={len(warm)})", warm)):
        times = [s for s, _ in samples]
        read_rows.append([label, ms(float(np.median(times))), ms(float(np.percentile(times, 90))),
                          samples[0][1]])
    print(table(["reader", "median", "p90", "RPC requests"], read_rows))
    steady_read = float(np.median(col("read", st)))
    print(f"  in-tick read: cold tick 1 {ms(cold_tick.timings['read'])} ms vs steady-state median "
          f"{ms(steady_read)} ms ({cold_tick.timings['read'] / steady_read:.1f}x)")

    print()
    print("  JSON-RPC calls of a tick by method (tick 1 cold; steady = the median rebalancing tick), before the quote")
    print("  and send path were batched (PREVIOUS_TICK_METHODS) and now; a batch carries several calls in one round trip")
    steady_idx = [i for i, r in enumerate(reports) if i > 0 and r.status == "rebalanced"]
    median_i = steady_idx[int(np.argsort([rpc_counts[i] for i in steady_idx])[len(steady_idx) // 2])]
    median_tick = rpc_methods[median_i]
    names = sorted(set(rpc_methods[0]) | set(median_tick) | set(PREVIOUS_TICK_METHODS))
    print(table(["method", "cold before", "cold now", "steady before", "steady now"],
                [[n, PREVIOUS_TICK_METHODS.get(n, (0, 0))[0], rpc_methods[0].get(n, 0),
                  PREVIOUS_TICK_METHODS.get(n, (0, 0))[1], median_tick.get(n, 0)] for n in names]
                + [["total calls", sum(v[0] for v in PREVIOUS_TICK_METHODS.values()), sum(rpc_methods[0].values()),
                    sum(v[1] for v in PREVIOUS_TICK_METHODS.values()), sum(median_tick.values())],
                   ["round trips (HTTP requests)", sum(v[0] for v in PREVIOUS_TICK_METHODS.values()), rpc_counts[0],
                    sum(v[1] for v in PREVIOUS_TICK_METHODS.values()), rpc_counts[median_i]]]))

    def before_send(trips: Sequence[tuple[str, ...]]) -> int:
        return next((i for i, t in enumerate(trips) if "eth_sendRawTransaction" in t), len(trips))

    print()
    print("  Round trips of the median steady tick, in order:")
    for i, trip in enumerate(rpc_trips[median_i], 1):
        print(f"    {i}. {' + '.join(trip)}")
    steady_before_send = [before_send(rpc_trips[i]) for i in steady_idx]
    steady_after_send = [len(rpc_trips[i]) - before_send(rpc_trips[i]) - 1 for i in steady_idx]
    print(f"  round trips before the send: cold {before_send(rpc_trips[0])}, steady median "
          f"{np.median(steady_before_send):.0f} (max {max(steady_before_send)}); after the send (awaiting the "
          f"receipt): steady median {np.median(steady_after_send):.0f} (max {max(steady_after_send)})")
    cold_read_requests = cold[0][1]
    steady_read_requests = warm[0][1]
    print()
    print("  Against the previous reader (targets: steady tick <= 3 round trips, cold <= 5, read <= 20 ms)")
    before_batching = sum(v[1] for v in PREVIOUS_TICK_METHODS.values())
    print(table(["figure", "previous", "one-call read", "now", "target"], [
        ["round trips, steady tick (whole tick)", PREVIOUS["steady_requests"], before_batching,
         f"{np.median(counts):.0f}", "3"],
        ["round trips, steady tick, up to and incl. the send", "-", before_batching - 1,
         f"{np.median(steady_before_send) + 1:.0f}", "3"],
        ["round trips, cold tick (whole tick)", PREVIOUS["cold_requests"],
         sum(v[0] for v in PREVIOUS_TICK_METHODS.values()), rpc_counts[0], "5"],
        ["round trips, read phase, steady", "-", 1, steady_read_requests, "1"],
        ["round trips, read phase, cold (empty cache)", "-", 2, cold_read_requests, "<= 5"],
        ["median tick, ms (incl. mining)", f"{PREVIOUS['median_tick_ms']:.0f}", f"{PREVIOUS_TICK_MS['median_tick_ms']:.0f}", ms(float(np.median(col('total', st)))), "-"],
        ["median read, ms", f"{PREVIOUS['median_read_ms']:.0f}", f"{PREVIOUS_TICK_MS['median_read_ms']:.1f}", ms(steady_read), "<= 20"],
    ]))


# --- section 2: gas per rebalance ------------------------------------------------------------------


def bench_gas(prices: PriceTable) -> None:
    section("2. Gas per rebalance vs the same swaps sent directly to SwapRouter.exactInputSingle")
    day = prices.index_of(GAS_DAY)
    genesis = prices.close_timestamp(day) - 3600
    with AnvilProcess(timestamp=genesis) as node:
        w3 = connect(node.rpc_url)
        accounts = dev_accounts()
        deployer, keeper_addr, guardian, trader, depositor = (accounts[0], accounts[1], accounts[2],
                                                              accounts[5], accounts[4])
        tx = DevSender(w3)
        dep = deploy_system(w3, deployer, keeper_addr, guardian, prices.symbols, prices.prices[day])
        vault = contract(w3, "RiskParityVault", dep.vault)
        base = contract(w3, "TestToken", dep.base_asset)
        router = contract(w3, "SwapRouter", dep.swap_router)
        reader = ChainReader(w3, dep.vault)
        assets = reader.assets
        bd = reader.base_decimals

        amount = int(DEPOSIT_USD * 10**BASE_DECIMALS)
        tx.transact(deployer, base.functions.mint(depositor, amount))
        tx.transact(depositor, base.functions.approve(vault.address, MAX_UINT256))
        tx.transact(depositor, vault.functions.deposit(amount, depositor))

        # The EOA trader holds every token (non-zero balances on both sides, like the vault) and has
        # approved the router once, with the maximum allowance.
        snap = reader.snapshot()
        tx.transact(deployer, base.functions.mint(trader, int(1e8 * 10**BASE_DECIMALS)))
        tx.transact(trader, base.functions.approve(router.address, MAX_UINT256))
        for info, answer in zip(assets, snap.answers):
            token = contract(w3, "TestToken", info.token)
            tx.transact(deployer, token.functions.mint(trader, amount_for_value(10**7 * 10**bd, answer, info, bd)))
            tx.transact(trader, token.functions.approve(router.address, MAX_UINT256))

        max_slip = vault.functions.maxSlippageBps().call()

        def leg(i: int, side: str, usd: float, answer: int) -> SwapLeg:
            info = assets[i]
            value = int(usd * 10**bd)
            if side == "sell":
                amount_in = amount_for_value(value, answer, info, bd)
                oracle_out = value_of(amount_in, answer, info, bd)  # vault: fairOut = _valueOf(amountIn)
                token_in, token_out, value = info.token, base.address, oracle_out
            else:
                amount_in = value
                oracle_out = amount_for_value(value, answer, info, bd)  # vault: valueIn × 10^(td+fd) / (p × 10^bd)
                token_in, token_out = base.address, info.token
            min_out = -(-oracle_out * (BPS - LEG_SLIPPAGE_BPS) // BPS)
            bound = -(-oracle_out * (BPS - max_slip) // BPS)  # the vault's MinAmountOutBelowOracleBound check
            if min_out < bound:
                raise RuntimeError(f"leg {info.symbol} {side}: minAmountOut {min_out} < oracle bound {bound}")
            return SwapLeg(info.symbol, side, token_in, token_out, amount_in, min_out, oracle_out, value)

        def rebalance_data(legs: Sequence[SwapLeg], deadline: int) -> str:
            state = reader.vault_state()
            allowance = sum(-(-lg.value * LEG_SLIPPAGE_BPS // BPS) + 1 for lg in legs)
            return vault.encode_abi("rebalance", [[lg.as_tuple() for lg in legs],
                                                  state.total_assets - allowance, state.rebalance_epoch, deadline])

        # Seed: one keeper rebalance buying every asset, so the vault holds all nine (like a live vault).
        snap = reader.snapshot()
        seed = [leg(i, "buy", SEED_BUY_USD, snap.answers[i]) for i in range(len(assets))]
        tx.send(keeper_addr, vault.address, rebalance_data(seed, snap.block_timestamp + 3600), gas=GAS_LIMIT)

        # Measured legs: $10k each; even-indexed assets sold, odd-indexed bought; sells first.
        snap = reader.snapshot()
        t_measure = snap.block_timestamp + 600
        deadline = t_measure + 3600

        def legs_for(n: int) -> list[SwapLeg]:
            idx = range(n)
            sells = [leg(i, "sell", LEG_USD, snap.answers[i]) for i in idx if i % 2 == 0]
            buys = [leg(i, "buy", LEG_USD, snap.answers[i]) for i in idx if i % 2 == 1]
            return sells + buys

        def with_snapshot(fn: Callable[[], Any]) -> Any:
            sid = rpc(w3, "evm_snapshot", [])
            try:
                return fn()
            finally:
                rpc(w3, "evm_revert", [sid])

        def via_vault(legs: Sequence[SwapLeg]) -> int:
            data = rebalance_data(legs, deadline)
            rpc(w3, "evm_setNextBlockTimestamp", [t_measure])
            # Explicit limit (no estimate): gasUsed does not depend on it, and an estimate made at the
            # previous block's timestamp could miss the pools' oracle-observation writes.
            receipt = tx.send(keeper_addr, vault.address, data, gas=GAS_LIMIT)
            return int(receipt["gasUsed"], 16)

        def direct(legs: Sequence[SwapLeg]) -> list[int]:
            gas = []
            for k, lg in enumerate(legs):
                rpc(w3, "evm_setNextBlockTimestamp", [t_measure + k])
                receipt = tx.transact(trader, router.functions.exactInputSingle(
                    (lg.token_in, lg.token_out, POOL_FEE, trader, deadline, lg.amount_in, lg.min_amount_out, 0)),
                    gas=GAS_LIMIT)
                gas.append(int(receipt["gasUsed"], 16))
            return gas

        results: dict[int, tuple[list[int], list[list[int]], list[SwapLeg]]] = {}
        for n in LEG_COUNTS:
            legs = legs_for(n)
            vault_runs = [with_snapshot(lambda: via_vault(legs)) for _ in range(GAS_REPEATS)]
            direct_runs = [with_snapshot(lambda: direct(legs)) for _ in range(GAS_REPEATS)]
            results[n] = (vault_runs, direct_runs, legs)

    repeatable = all(len(set(v)) == 1 and all(d == dr[0] for d in dr) for v, dr, _ in results.values())
    print(f"  9 listed assets, pools 0.05% full range $50M a side; vault holds ${SEED_BUY_USD:,.0f} of each asset.")
    print(f"  Legs ${LEG_USD:,.0f} each: sells of even-indexed assets first, then buys of odd-indexed; "
          f"minAmountOut {LEG_SLIPPAGE_BPS} bps under the oracle.")
    print(f"  Each variant from the same evm_snapshot, txs at fixed timestamps, run {GAS_REPEATS}x: "
          f"{'identical gas in every repeat' if repeatable else 'GAS DIFFERED BETWEEN REPEATS'}")
    print()
    rows = []
    for n, (vault_runs, direct_runs, legs) in results.items():
        g_vault = vault_runs[0]
        per_swap = direct_runs[0]
        g_direct = sum(per_swap)
        exec_direct = g_direct - 21_000 * n
        rows.append([
            n,
            f"{sum(lg.side == 'sell' for lg in legs)}/{sum(lg.side == 'buy' for lg in legs)}",
            f"{g_vault:,}",
            f"{g_vault / n:,.0f}",
            f"{g_direct:,}",
            f"{g_direct / n:,.0f}",
            f"{g_vault - g_direct:+,}",
            f"{(g_vault - g_direct) / n:+,.0f}",
            f"{(g_vault - 21_000 - exec_direct) / n:+,.0f}",
        ])
    print(table(["legs", "sell/buy", "vault.rebalance", "per leg", "direct swaps (sum)", "per swap",
                 "overhead", "overhead/leg", "overhead/leg excl. 21k/tx"], rows))
    print("  (direct = one exactInputSingle tx per leg from an EOA; overhead = rebalance − Σ direct; the last "
          "column counts\n   each direct swap without its 21,000 intrinsic gas, i.e. what batching does not save)")

    ns = np.array(LEG_COUNTS, dtype=float)
    gv = np.array([results[n][0][0] for n in LEG_COUNTS], dtype=float)
    gd = np.array([sum(results[n][1][0]) for n in LEG_COUNTS], dtype=float)
    bv, av = np.polyfit(ns, gv, 1)
    bd_, ad = np.polyfit(ns, gd, 1)
    print()
    print(table(["linear fit over 1/3/9 legs", "fixed", "per extra leg"],
                [["vault.rebalance", f"{av:,.0f}", f"{bv:,.0f}"],
                 ["direct swaps", f"{ad:,.0f}", f"{bd_:,.0f}"],
                 ["difference", f"{av - ad:+,.0f}", f"{bv - bd_:+,.0f}"]]))

    print()
    legs9 = results[9][2]
    per_swap9 = results[9][1][0]
    print(table(["9-leg run: leg", "asset", "side", "direct gas"],
                [[k, lg.symbol, lg.side, f"{g:,}"] for k, (lg, g) in enumerate(zip(legs9, per_swap9))],
                align="><<>"))


# --- section 3: demo replay throughput -------------------------------------------------------------


def bench_demo(workdir: Path, end: dt.date = DEMO_END) -> None:
    section(f"3. Demo replay throughput (run_demo, 9 assets, {DEMO_START} .. {end}, lookback {DEMO_LOOKBACK_DAYS} d)")
    spent = {"feeds+arbitrage": 0.0, "flows": 0.0, "keeper": 0.0}
    keeper_phases = {k: 0.0 for k in TICK_KEYS + ("total",)}
    statuses: list[str] = []
    reads: list[float] = []
    replaying = {"on": False, "t": 0.0}

    class TimedArbitrageur(BatchArbitrageur):
        def push_and_align(self, feed_answers: Sequence[int], answers: Sequence[int]) -> None:
            t0 = time.perf_counter()
            try:
                return super().push_and_align(feed_answers, answers)
            finally:
                spent["feeds+arbitrage"] += time.perf_counter() - t0

    class TimedKeeper(Keeper):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            replaying["on"] = True  # the demo builds its keeper right before the replay loop
            replaying["t"] = time.perf_counter()

        def run_once(self) -> Any:
            t0 = time.perf_counter()
            report = super().run_once()
            spent["keeper"] += time.perf_counter() - t0
            statuses.append(report.status)
            reads.append(report.timings.get("read", 0.0))
            for k in keeper_phases:
                keeper_phases[k] += report.timings.get(k, 0.0)
            return report

    original_flows = demo_mod._depositor_flows

    def timed_flows(*args: Any, **kwargs: Any) -> float:
        t0 = time.perf_counter()
        try:
            return original_flows(*args, **kwargs)
        finally:
            spent["flows"] += time.perf_counter() - t0

    patches = {"BatchArbitrageur": TimedArbitrageur, "Keeper": TimedKeeper,
               "_depositor_flows": timed_flows}
    saved = {name: getattr(demo_mod, name) for name in patches}
    for name, obj in patches.items():
        setattr(demo_mod, name, obj)
    try:
        options = demo_mod.DemoOptions(start=DEMO_START, end=end, lookback_days=DEMO_LOOKBACK_DAYS,
                                       out_dir=workdir / "demo", quiet=True)
        t0 = time.perf_counter()
        result = demo_mod.run_demo(options)
        wall = time.perf_counter() - t0
    finally:
        for name, obj in saved.items():
            setattr(demo_mod, name, obj)

    replay = float(result["replay_seconds"])
    n_days = round(result["replayed_days_per_second"] * replay)
    setup = replaying["t"] - t0
    print(f"  run_demo wall {wall:.1f} s = setup {setup:.1f} s (anvil, deploy, {LOOKBACK_DAYS + 1}-day feed warm-up, "
          f"deposits) + replay {replay:.2f} s + report {wall - setup - replay:.1f} s (text, JSON, PNG)")
    print(f"  replayed {n_days} days in {replay:.2f} s = {result['replayed_days_per_second']:.2f} days/s "
          f"({replay / n_days * 1e3:.0f} ms/day); keeper ticks: {len(statuses)} "
          f"({statuses.count('rebalanced')} rebalanced, {statuses.count('skipped')} skipped, "
          f"{statuses.count('error')} error)")
    print()
    other = replay - sum(spent.values())
    rows = []
    labels = {"feeds+arbitrage": "feed pushes + pool alignment (1 pushAndAlign tx/day)",
              "flows": "depositor flows", "keeper": "keeper.run_once"}
    for key, label in labels.items():
        rows.append([label, f"{spent[key]:.2f}", f"{spent[key] / n_days * 1e3:.1f}", f"{spent[key] / replay:.0%}"])
        if key == "keeper":
            for k in TICK_KEYS:
                v = keeper_phases[k]
                rows.append([f"  keeper: {k}", f"{v:.2f}", f"{v / n_days * 1e3:.1f}", f"{v / replay:.0%}"])
                if k == "read" and reads:
                    for label, v in (("first tick (cold cache)", reads[0]), ("other ticks", sum(reads[1:]))):
                        rows.append([f"    read: {label}", f"{v:.2f}", f"{v / n_days * 1e3:.1f}", f"{v / replay:.0%}"])
            v = keeper_phases["total"] - sum(keeper_phases[k] for k in TICK_KEYS)
            rows.append(["  keeper: other", f"{v:.2f}", f"{v / n_days * 1e3:.1f}", f"{v / replay:.0%}"])
            v = spent["keeper"] - keeper_phases["total"]
            rows.append(["  keeper: journal write", f"{v:.2f}", f"{v / n_days * 1e3:.1f}", f"{v / replay:.0%}"])
    rows.append(["other (set time, daily vault reads, record)", f"{other:.2f}", f"{other / n_days * 1e3:.1f}",
                 f"{other / replay:.0%}"])
    rows.append(["replay total", f"{replay:.2f}", f"{replay / n_days * 1e3:.1f}", "100%"])
    print(table(["replay loop", "s", "ms/day", "share"], rows))
    print()
    print("  Against the previous harness (one transaction per feed push and per pool alignment)")
    print(table(["figure", "previous", "now", "target"], [
        ["replay speed, days/s", PREVIOUS["demo_days_per_s"], f"{result['replayed_days_per_second']:.1f}", ">= 12.2"],
        [f"replay of {n_days} days, s", f"{PREVIOUS['demo_2022_replay_s'] * n_days / 365:.0f} (240 s per 365 days)",
         f"{replay:.1f}", f"<= {30 * n_days / 365:.0f}"],
        ["run_demo wall, s", "-", f"{wall:.1f}", "-"],
    ]))


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description="keeper against a local Anvil: requests, gas, demo speed")
    parser.add_argument("--sections", default="1,2,3", help="comma-separated sections to run (default 1,2,3)")
    parser.add_argument("--demo-end", type=dt.date.fromisoformat, default=DEMO_END,
                        help=f"last replayed day of section 3 (default {DEMO_END}: the whole target year)")
    args = parser.parse_args()
    sections = {int(x) for x in args.sections.split(",")}
    t0 = time.perf_counter()
    version = subprocess.run([anvil_binary(), "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    print("bench_chain: keeper against a local Anvil")
    print(f"  {version}; Python {platform.python_version()}; web3 {web3.__version__}; numpy {np.__version__}; "
          f"{os.cpu_count()} CPUs; OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')}")
    prices = load_prices()
    print(f"  prices: {len(prices.dates)} days x {len(prices.symbols)} assets ({', '.join(prices.symbols)})")
    with tempfile.TemporaryDirectory(prefix="bench_chain_") as tmp:
        work = Path(tmp)
        if 1 in sections:
            bench_ticks(prices, work)
        if 2 in sections:
            bench_gas(prices)
        if 3 in sections:
            bench_demo(work, args.demo_end)
    print()
    print(f"total benchmark wall time {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
