"""Gas table of the vault's main transactions, optionally before/after against an older commit.

Run from the repository root (after ``./run setup``)::

    .venv/bin/python benchmarks/bench_gas_table.py                      # this tree
    .venv/bin/python benchmarks/bench_gas_table.py --baseline 0141f75   # and a before/after table

One Anvil process (started here) gets the full local system (``deploy_system``: tokens, push feeds, the real
Uniswap V3 with 0.05% full-range pools $50M a side, the vault) with nine assets, then the option market
(``deploy_options``). A depositor deposits $1M and one keeper rebalance buys $60k of every asset, so the
vault holds all nine (like a live vault: ``totalAssets`` reads nine feeds). Then, each from the same
``evm_snapshot`` and mined at the same block timestamp (``gasUsed`` of the receipt, explicit gas limit):

- ``deposit``: ERC-4626 deposit of $10k by the same depositor (repeat depositor, non-zero balance);
- ``redeem``: redeem of 1% of the depositor's shares (paid from idle cash);
- ``rebalance 9 legs``: ``rebalance`` with nine $10k legs (even-indexed assets sold first, then the
  odd-indexed bought), minAmountOut 50 bps under the oracle;
- ``option buy``: ``rebalanceWithOptions`` with no swap leg and one option leg buying 1 BTC put
  (strike 90% of spot, 30 days) at its quoted premium, opening a new series.

Each is run twice (from the snapshot) and both numbers must agree. With ``--baseline REV`` the script also
checks out REV into a temporary ``git worktree`` (``node_modules`` symlinked, the same interpreter, the
worktree first on ``PYTHONPATH``), copies itself there, runs there with ``--json`` (which compiles REV's
contracts into the worktree's own ``build/``), removes the worktree and prints both columns.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Callable  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BPS = 10_000
WAD = 10**18
DAY = 86_400
GENESIS = 1_700_000_000
SYMBOLS = ("BTC", "ETH", "SOL", "BNB", "XRP", "ADA", "DOGE", "AVAX", "LINK")
PRICES = (40_000.0, 3_000.0, 100.0, 300.0, 0.6, 0.5, 0.08, 20.0, 15.0)
VOLS = (0.6, 0.8, 1.0, 0.7, 0.9, 0.9, 1.1, 1.0, 0.9)
DEPOSIT_USD = 1_000_000
SEED_BUY_USD = 60_000
LEG_USD = 10_000
LEG_SLIPPAGE_BPS = 50
GAS_LIMIT = 8_000_000
ROWS = ("deposit (repeat depositor)", "redeem (1% of shares)", "rebalance, 9 legs", "rebalanceWithOptions, 1 put buy")


def measure() -> dict[str, int]:
    from keeper.chain import AnvilProcess, DevSender, connect, contract, dev_accounts, rpc
    from keeper.deployment import BASE_DECIMALS, MAX_UINT256, deploy_options, deploy_system
    from keeper.oracle import ChainReader
    from keeper.planner import amount_for_value, value_of

    owner, keeper, guardian, _, depositor = dev_accounts()[:5]  # the 4th is unused
    usd = 10**BASE_DECIMALS
    with AnvilProcess(timestamp=GENESIS) as node:
        w3 = connect(node.rpc_url)
        tx = DevSender(w3)
        system = deploy_system(w3, owner, keeper, guardian, SYMBOLS, PRICES)
        options = deploy_options(w3, system, owner, VOLS)
        vault = contract(w3, "RiskParityVault", system.vault)
        market = contract(w3, "OptionMarket", options.market)
        base = contract(w3, "TestToken", system.base_asset)
        reader = ChainReader(w3, system.vault)
        assets, bd = reader.assets, reader.base_decimals

        tx.transact(owner, base.functions.mint(depositor, 10 * DEPOSIT_USD * usd))
        tx.transact(depositor, base.functions.approve(vault.address, MAX_UINT256))
        tx.transact(depositor, vault.functions.deposit(DEPOSIT_USD * usd, depositor))

        def leg(i: int, side: str, value_usd: int, answer: int) -> tuple[str, str, int, int]:
            info, value = assets[i], value_usd * 10**bd
            if side == "sell":
                amount_in = amount_for_value(value, answer, info, bd)
                oracle_out = value_of(amount_in, answer, info, bd)
                token_in, token_out = info.token, base.address
            else:
                amount_in = value
                oracle_out = amount_for_value(value, answer, info, bd)
                token_in, token_out = base.address, info.token
            return (token_in, token_out, amount_in, -(-oracle_out * (BPS - LEG_SLIPPAGE_BPS) // BPS))

        def now() -> int:
            return w3.eth.get_block("latest")["timestamp"]

        snap = reader.snapshot()
        seed = [leg(i, "buy", SEED_BUY_USD, snap.answers[i]) for i in range(len(assets))]
        tx.transact(keeper, vault.functions.rebalance(seed, 0, 0, now() + 3600), gas=GAS_LIMIT)
        # A second deposit at the seeded state makes the measured one a repeat deposit.
        tx.transact(depositor, vault.functions.deposit(DEPOSIT_USD * usd // 10, depositor))

        snap = reader.snapshot()
        t_measure = now() + 600
        deadline = t_measure + 3600
        epoch = vault.functions.rebalanceEpoch().call()
        sells = [leg(i, "sell", LEG_USD, snap.answers[i]) for i in range(len(assets)) if i % 2 == 0]
        buys = [leg(i, "buy", LEG_USD, snap.answers[i]) for i in range(len(assets)) if i % 2 == 1]
        btc = assets[0].token
        expiry = t_measure + 30 * DAY
        strike = int(PRICES[0] * 0.9) * WAD
        shares = vault.functions.balanceOf(depositor).call()

        def option_buy() -> Any:
            # The quote is read at the measured block's time (eth_call at the pending block after warping).
            rpc(w3, "evm_setNextBlockTimestamp", [t_measure])
            rpc(w3, "evm_mine", [])
            premium = market.functions.quote(btc, strike, expiry, False, WAD, True).call()[0]
            return vault.functions.rebalanceWithOptions(
                [], [(btc, strike, expiry, False, True, WAD, premium)], 0, epoch, deadline
            )

        cases: dict[str, tuple[str, Callable[[], Any]]] = {
            ROWS[0]: (depositor, lambda: vault.functions.deposit(LEG_USD * usd, depositor)),
            ROWS[1]: (depositor, lambda: vault.functions.redeem(shares // 100, depositor, depositor)),
            ROWS[2]: (keeper, lambda: vault.functions.rebalance(sells + buys, 0, epoch, deadline)),
            ROWS[3]: (keeper, option_buy),
        }
        gas: dict[str, int] = {}
        for label, (sender, build) in cases.items():
            runs = []
            for _ in range(2):
                sid = rpc(w3, "evm_snapshot", [])
                fn = build()
                if label != ROWS[3]:
                    rpc(w3, "evm_setNextBlockTimestamp", [t_measure])
                else:
                    rpc(w3, "evm_setNextBlockTimestamp", [t_measure + 1])
                receipt = tx.transact(sender, fn, gas=GAS_LIMIT)
                runs.append(int(receipt["gasUsed"], 16))
                assert rpc(w3, "evm_revert", [sid])
            if runs[0] != runs[1]:
                raise RuntimeError(f"{label}: gas not repeatable {runs}")
            gas[label] = runs[0]
    return gas


def run_baseline(rev: str) -> dict[str, int]:
    """Measures ``rev`` in a temporary git worktree (removed afterwards)."""
    tmp = Path(tempfile.mkdtemp(prefix="gas-baseline-"))
    tree = tmp / "tree"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "--quiet", str(tree), rev], check=True)
    try:
        (tree / "node_modules").symlink_to(ROOT / "node_modules")
        shutil.copy(Path(__file__), tree / "benchmarks" / "bench_gas_table.py")
        out = tmp / "gas.json"
        env = dict(os.environ, PYTHONPATH=str(tree))
        # REV compiles its own contracts into its own build/ (keeper.build, as ./run does).
        subprocess.run([sys.executable, "-m", "keeper.build", "--if-changed"], cwd=tree, env=env, check=True)
        subprocess.run([sys.executable, str(tree / "benchmarks" / "bench_gas_table.py"), "--json", str(out)],
                       cwd=tree, env=env, check=True)
        return json.loads(out.read_text())
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False)
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", metavar="REV", help="also measure this git revision (before/after table)")
    parser.add_argument("--json", type=Path, help="write {row: gas} here instead of printing a table")
    args = parser.parse_args()
    gas = measure()
    if args.json:
        args.json.write_text(json.dumps(gas))
        return
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True).stdout.strip() or "this tree"
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "contracts"], capture_output=True,
                           text=True).stdout.strip()
    after = f"{head}{' + uncommitted contracts' if dirty else ''}"
    print("gasUsed, nine assets held, Anvil (cancun), optimizer 200; each case run twice from one snapshot")
    if args.baseline:
        before = run_baseline(args.baseline)
        w = max(12, len(args.baseline), len(after))
        print(f"{'operation':34s} {args.baseline:>{w}s} {after:>{w}s} {'change':>9s}")
        for row in ROWS:
            b, a = before.get(row), gas[row]
            change = f"{(a - b) / b:+.2%}" if b else "n/a"
            print(f"{row:34s} {f'{b:,}' if b else 'n/a':>{w}s} {a:>{w},} {change:>9s}")
    else:
        w = max(12, len(after))
        print(f"{'operation':34s} {after:>{w}s}")
        for row in ROWS:
            print(f"{row:34s} {gas[row]:>{w},}")


if __name__ == "__main__":
    main()
