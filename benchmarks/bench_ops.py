"""Operations overheads: the write-ahead journal and the failover RPC provider.

Prints
- the time to journal a signed transaction as ``intended`` (committed before any send) and a full
  intended → sent → mined cycle, on the disk under a temporary directory (SQLite, synchronous=FULL);
- the time per ``eth_blockNumber`` through a plain web3 HTTP provider and through
  :class:`keeper.rpc.FailoverHTTPProvider` against one local Anvil (the failover layer's own cost).

Usage: .venv/bin/python benchmarks/bench_ops.py [--n 200] [--calls 2000]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from web3 import Web3

from keeper.chain import AnvilProcess, connect
from keeper.journal import Journal
from keeper.rpc import FailoverHTTPProvider


def _journal(n: int) -> tuple[list[float], list[float]]:
    intended, cycle = [], []
    with tempfile.TemporaryDirectory() as tmp:
        journal = Journal(Path(tmp) / "journal.sqlite")
        for i in range(n):
            t0 = time.perf_counter()
            row = journal.record_intended_tx(
                kind="rebalance", sender="0x" + "aa" * 20, nonce=i, tx_hash=f"0x{i:064x}", raw_tx="0x" + "00" * 600,
                to_address="0x" + "bb" * 20, calldata="0x" + "00" * 500, value=0, gas_limit=1_200_000,
                max_fee_per_gas=30 * 10**9, max_priority_fee_per_gas=10**9, epoch=i, deadline=2_000_000_000,
            )
            t1 = time.perf_counter()
            journal.mark_tx_sent(row.id, sent_block=i)
            journal.finalize_tx(row.id, "mined", block_number=i + 1, gas_used=600_000, effective_gas_price=10**10)
            t2 = time.perf_counter()
            intended.append(t1 - t0)
            cycle.append(t2 - t0)
        journal.close()
    return intended, cycle


def _rpc(calls: int) -> tuple[float, float]:
    with AnvilProcess() as node:
        plain = connect(node.rpc_url)
        failover = Web3(FailoverHTTPProvider([node.rpc_url]), middleware=[])
        out = []
        for w3 in (plain, failover):
            w3.eth.block_number  # warm the connection
            t0 = time.perf_counter()
            for _ in range(calls):
                w3.eth.block_number
            out.append((time.perf_counter() - t0) / calls)
    return out[0], out[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="journalled transactions")
    parser.add_argument("--calls", type=int, default=2000, help="eth_blockNumber calls per provider")
    args = parser.parse_args()
    intended, cycle = _journal(args.n)
    q = lambda xs, p: sorted(xs)[int(p * (len(xs) - 1))] * 1e3  # noqa: E731 - ms at quantile p
    print(f"journal, {args.n} transactions (ms): intended median {statistics.median(intended) * 1e3:.2f}, "
          f"p95 {q(intended, 0.95):.2f}; intended→sent→mined median {statistics.median(cycle) * 1e3:.2f}, "
          f"p95 {q(cycle, 0.95):.2f}")
    plain, failover = _rpc(args.calls)
    print(f"eth_blockNumber, {args.calls} calls (µs per call): plain HTTP provider {plain * 1e6:.0f}, "
          f"failover provider {failover * 1e6:.0f} ({(failover / plain - 1) * 100:+.1f} %)")


if __name__ == "__main__":
    main()
