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
   reader's (:data:`PREVIOUS`). Last, the same node and vault ticked by a second keeper through the keeper's
   production provider (:class:`keeper.rpc.FailoverHTTPProvider`, as ``keeper run`` connects): its cold tick
   and :data:`FAILOVER_STEADY_TICKS` steady ticks, round trips beside the plain ``HTTPProvider``'s.

2. **Gas per rebalance** with 1, 3 and 9 legs against the same swaps sent directly to the router, with the
   per-part breakdown and the targets: ``benchmarks/bench_rebalance_gas.py`` (its ``report``), run here with
   the original ``SwapRouter``.

3. **Demo replay throughput.** ``keeper.demo.run_demo`` (quiet) over 2022 with 9 assets and the demo's
   90-day lookback (``--demo-end`` for a shorter window); the replay loop's wall time split into the harness's
   one daily transaction (feed pushes and pool alignment), depositor flows, keeper ticks (and those by timing
   key) and the rest (the tick's block, the demo's own per-day reads and bookkeeping), and the CPU seconds of
   this process and of Anvil over the replay (the two alternate: their sum bounds the replay's wall time from
   below whatever else the machine runs; sleeps and round trips come on top). Then the whole shipped file (``keeper demo --full``; ``--no-demo-full``
   skips it). Both beside the previous harness's figures and the targets (2022 at >= 12.2 days/s, i.e. <= 30 s;
   the whole file in <= 3 minutes).

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
from typing import Any, Sequence  # noqa: E402

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
    connect_failover,
    contract,
    dev_accounts,
    rpc,
)
from keeper.config import KeeperConfig  # noqa: E402
from keeper.data import PriceTable, load_prices  # noqa: E402
from keeper.deployment import (  # noqa: E402
    BASE_DECIMALS,
    MAX_UINT256,
    BatchArbitrageur,
    FeedPusher,
    deploy_system,
    price_to_answer,
)
from keeper.journal import Journal  # noqa: E402
from keeper.oracle import ChainReader  # noqa: E402
from keeper.runner import Keeper  # noqa: E402

LOOKBACK_DAYS = 40
#: Section 1: replay starts on this date (first tick), genesis LOOKBACK_DAYS + 1 days earlier.
TICK_START = dt.date(2022, 1, 1)
#: Section 1: one cold tick, then this many steady-state ticks.
STEADY_TICKS = 20
#: Section 1: steady ticks of the second keeper, through FailoverHTTPProvider (after its own cold tick).
FAILOVER_STEADY_TICKS = 5
COLD_READS, WARM_READS = 5, 20
DEPOSIT_USD = 1_000_000.0
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
            n, calls = self.n, len(self.methods)
            self.n += 1
            self.methods.extend(str(method) for method, _ in requests)
            self.trips.append(tuple(str(method) for method, _ in requests))
            try:
                return inner_batch(requests)
            except NotImplementedError:
                # A provider without batches made no request: the caller sends the calls one by one (counted).
                self.n = n
                del self.methods[calls:], self.trips[-1]
                raise

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


#: Figures of the previous reader (one ``eth_call`` per value and per round), measured with this script on the
#: same machine before the change; and of the previous demo harness (web3-encoded ``pushAndAlign``, receipts
#: polled, a Prague chain, web3's HTTP provider for the harness's requests) on the same 2-core machine while
#: other jobs ran: 2022 in runs interleaved with the new harness's (load average about 2), the whole file
#: (1,961 days) at a load average of 4 to 5.
PREVIOUS = {"steady_requests": 37, "cold_requests": 397, "median_tick_ms": 104.0, "median_read_ms": 36.0,
            "demo_days_per_s": "12.7", "demo_2022_replay_s": 28.7, "demo_full_replay_s": "702",
            "demo_harness": "web3-encoded pushAndAlign, polled receipts, Prague chain"}
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

        def run_ticks(keeper: Keeper, counter: RpcCounter, days: range, steady_wanted: int) -> tuple[list, ...]:
            """One tick per day (prices pushed, pools aligned, a block an hour later) until ``steady_wanted``
            ticks after the first rebalanced; each tick's report, round trips, calls by method, trips."""
            reports, rpc_counts, rpc_methods, rpc_trips = [], [], [], []
            for t in days:
                rpc(w3, "evm_setNextBlockTimestamp", [prices.close_timestamp(t)])
                push_day(pusher, prices.prices[t])
                arb.align_all([price_to_answer(p) for p in prices.prices[t]])
                rpc(w3, "evm_mine", [prices.close_timestamp(t) + 3600])
                c0, m0 = counter.n, counter.calls
                reports.append(keeper.run_once())
                rpc_counts.append(counter.n - c0)
                rpc_methods.append(counter.since(m0))
                rpc_trips.append(counter.trips[c0:])
                if sum(r.status == "rebalanced" for r in reports[1:]) >= steady_wanted:
                    break
            return reports, rpc_counts, rpc_methods, rpc_trips

        reports, rpc_counts, rpc_methods, rpc_trips = run_ticks(keeper, counter, range(first, first + n_days),
                                                                STEADY_TICKS)

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

        # The same vault, the following days, ticked by a keeper connected as `keeper run` connects (the plain
        # keeper has stopped: its last transaction is mined, so the new keeper reads the nonce at its cold tick).
        failover_w3 = connect_failover(config)
        failover_counter = RpcCounter(failover_w3)
        failover_keeper = Keeper(config, w3=failover_w3, private_key=ANVIL_KEYS[1],
                                 journal=Journal(workdir / "ticks-failover.sqlite"))
        after = first + len(reports)
        failover = run_ticks(failover_keeper, failover_counter, range(after, after + FAILOVER_STEADY_TICKS + 4),
                             FAILOVER_STEADY_TICKS)

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

    def trip_figures(ticks: Sequence[Any], trips: Sequence[Sequence[tuple[str, ...]]]) -> tuple[list[Any], list[tuple[str, ...]]]:
        """Round trips of the cold tick (whole, up to and incl. the send) and the median of the steady
        rebalancing ticks (whole, up to and incl. the send, after it); the median steady tick's trips."""
        idx = [i for i, r in enumerate(ticks) if i > 0 and r.status == "rebalanced"]
        whole = [len(trips[i]) for i in idx]
        upto = [before_send(trips[i]) + 1 for i in idx]
        median = idx[int(np.argsort(whole)[len(idx) // 2])]
        return ([len(trips[0]), before_send(trips[0]) + 1, f"{np.median(whole):.0f} (n={len(idx)})",
                 f"{np.median(upto):.0f}", f"{np.median(whole) - np.median(upto):.0f}"], list(trips[median]))

    f_reports, _, _, f_trips = failover
    plain_figures, _ = trip_figures(reports, rpc_trips)
    failover_figures, failover_median = trip_figures(f_reports, f_trips)
    print()
    print("  Round trips through the keeper's production provider (FailoverHTTPProvider, a second keeper on the")
    print(f"  following days: {len(f_reports)} ticks, {sum(r.status == 'rebalanced' for r in f_reports)} rebalanced) "
          "beside the plain HTTPProvider")
    labels = ["cold tick, whole", "cold tick, up to and incl. the send", "steady tick, whole (median)",
              "steady tick, up to and incl. the send (median)", "steady tick, after the send (median)"]
    print(table(["round trips", "HTTPProvider", "FailoverHTTPProvider"],
                [[label, a, b] for label, a, b in zip(labels, plain_figures, failover_figures)]))
    print("  the median steady tick through FailoverHTTPProvider, in order:")
    for i, trip in enumerate(failover_median, 1):
        print(f"    {i}. {' + '.join(trip)}")


# --- section 2: gas per rebalance ------------------------------------------------------------------


def bench_gas(prices: PriceTable) -> None:
    """Section 2: :func:`bench_rebalance_gas.report` with the original SwapRouter (one set-up, one table)."""
    from bench_rebalance_gas import report

    report(prices, "swaprouter")


# --- section 3: demo replay throughput -------------------------------------------------------------


def _anvil_cpu_seconds(node: AnvilProcess) -> float:
    """User + system CPU seconds of ``node``'s Anvil process so far (Linux ``/proc``; 0.0 elsewhere)."""
    try:
        fields = Path(f"/proc/{node.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _timed_demo(options: Any) -> dict[str, Any]:
    """``run_demo(options)`` with the replay loop's wall time split by part, and the CPU seconds of this process
    and of the replay's Anvil over the replay loop (from the keeper's construction to Anvil's stop)."""
    spent = {"feeds+arbitrage": 0.0, "flows": 0.0, "keeper": 0.0}
    keeper_phases = {k: 0.0 for k in TICK_KEYS + ("total",)}
    statuses: list[str] = []
    reads: list[float] = []
    marks: dict[str, float] = {}
    nodes: list[AnvilProcess] = []

    class TimedAnvil(AnvilProcess):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            nodes.append(self)

        def stop(self) -> None:
            if "anvil_end" not in marks and "t" in marks:
                marks["anvil_end"] = _anvil_cpu_seconds(self)
                marks["cpu_end"] = time.process_time()
            super().stop()

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
            # The demo builds its keeper right before the replay loop.
            marks["t"] = time.perf_counter()
            marks["cpu"] = time.process_time()
            marks["anvil"] = _anvil_cpu_seconds(nodes[-1])

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

    patches = {"BatchArbitrageur": TimedArbitrageur, "Keeper": TimedKeeper, "AnvilProcess": TimedAnvil,
               "_depositor_flows": timed_flows}
    saved = {name: getattr(demo_mod, name) for name in patches}
    for name, obj in patches.items():
        setattr(demo_mod, name, obj)
    try:
        t0 = time.perf_counter()
        result = demo_mod.run_demo(options)
        wall = time.perf_counter() - t0
    finally:
        for name, obj in saved.items():
            setattr(demo_mod, name, obj)
    replay = float(result["replay_seconds"])
    return {"result": result, "wall": wall, "setup": marks["t"] - t0, "replay": replay,
            "days": round(result["replayed_days_per_second"] * replay), "spent": spent,
            "keeper_phases": keeper_phases, "statuses": statuses, "reads": reads,
            "python_cpu": marks["cpu_end"] - marks["cpu"], "anvil_cpu": marks["anvil_end"] - marks["anvil"]}


def bench_demo(workdir: Path, end: dt.date = DEMO_END, full: bool = True) -> None:
    section(f"3. Demo replay throughput (run_demo, 9 assets, {DEMO_START} .. {end}, lookback {DEMO_LOOKBACK_DAYS} d)")
    run = _timed_demo(demo_mod.DemoOptions(start=DEMO_START, end=end, lookback_days=DEMO_LOOKBACK_DAYS,
                                           out_dir=workdir / "demo", quiet=True))
    result, wall, setup, replay, n_days = run["result"], run["wall"], run["setup"], run["replay"], run["days"]
    spent, keeper_phases, statuses, reads = run["spent"], run["keeper_phases"], run["statuses"], run["reads"]
    print(f"  run_demo wall {wall:.1f} s = setup {setup:.1f} s (anvil, deploy, {DEMO_LOOKBACK_DAYS + 1}-day feed "
          f"warm-up, deposits) + replay {replay:.2f} s + report {wall - setup - replay:.1f} s (text, JSON, PNG)")
    print(f"  replayed {n_days} days in {replay:.2f} s = {result['replayed_days_per_second']:.2f} days/s "
          f"({replay / n_days * 1e3:.0f} ms/day); keeper ticks: {len(statuses)} "
          f"({statuses.count('rebalanced')} rebalanced, {statuses.count('skipped')} skipped, "
          f"{statuses.count('error')} error)")
    print(f"  CPU over the replay: this process {run['python_cpu']:.1f} s ({run['python_cpu'] / n_days * 1e3:.0f} "
          f"ms/day), Anvil {run['anvil_cpu']:.1f} s ({run['anvil_cpu'] / n_days * 1e3:.0f} ms/day): the replay "
          "alternates between the two, so their sum bounds its wall time from below on any machine (waits and "
          "round trips come on top)")
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
    rows.append(["other (set time, tick block, daily vault reads, record)", f"{other:.2f}",
                 f"{other / n_days * 1e3:.1f}", f"{other / replay:.0%}"])
    rows.append(["replay total", f"{replay:.2f}", f"{replay / n_days * 1e3:.1f}", "100%"])
    print(table(["replay loop", "s", "ms/day", "share"], rows))
    print()
    figures = [
        ["replay speed, days/s", PREVIOUS["demo_days_per_s"], f"{result['replayed_days_per_second']:.1f}", ">= 12.2"],
        [f"replay of {n_days} days, s", f"{PREVIOUS['demo_2022_replay_s'] * n_days / 365:.0f}", f"{replay:.1f}",
         f"<= {30 * n_days / 365:.0f}"],
        ["run_demo wall, s", "-", f"{wall:.1f}", "-"],
    ]
    if full:
        print("  The whole shipped file (keeper demo --full) ...", flush=True)
        whole = _timed_demo(demo_mod.DemoOptions(start=None, end=None, lookback_days=DEMO_LOOKBACK_DAYS,
                                                 out_dir=workdir / "demo_full", quiet=True))
        days = whole["days"]
        print(f"  replayed {days} days in {whole['replay']:.1f} s = "
              f"{whole['result']['replayed_days_per_second']:.2f} days/s; run_demo wall {whole['wall']:.1f} s; CPU "
              f"over the replay: this process {whole['python_cpu']:.1f} s, Anvil {whole['anvil_cpu']:.1f} s")
        print()
        figures += [
            [f"whole file ({days} days): replay, s", PREVIOUS["demo_full_replay_s"], f"{whole['replay']:.1f}", "<= 180"],
            ["whole file: run_demo wall, s", "-", f"{whole['wall']:.1f}", "-"],
        ]
    print(f"  Against the previous harness ({PREVIOUS['demo_harness']})")
    print(table(["figure", "previous", "now", "target"], figures))


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description="keeper against a local Anvil: requests, gas, demo speed")
    parser.add_argument("--sections", default="1,2,3", help="comma-separated sections to run (default 1,2,3)")
    parser.add_argument("--demo-end", type=dt.date.fromisoformat, default=DEMO_END,
                        help=f"last replayed day of section 3 (default {DEMO_END}: the whole target year)")
    parser.add_argument("--no-demo-full", action="store_true",
                        help="section 3 without the replay of the whole shipped file (the long part)")
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
            bench_demo(work, args.demo_end, full=not args.no_demo_full)
    print()
    print(f"total benchmark wall time {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
