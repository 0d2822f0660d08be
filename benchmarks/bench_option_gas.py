"""Gas of the on-chain options: a Black-Scholes quote, the market's trades, and vault rebalances with
option legs.

Run from the repository root::

    .venv/bin/python benchmarks/bench_option_gas.py

Everything runs on an Anvil process this script starts (``deploy_env`` of ``tests/options_env.py``, shared
with the option tests): the full system (``deploy_system``: tokens, push feeds, Uniswap V3, pools 200M USD
deep, the vault) with BTC, ETH and SOL at 40,000 / 3,000 / 100 USD, then ``deploy_options`` (implied vols
60% / 80% / 100%, a 10M USD pool).

1. **Quotes** (``eth_estimateGas`` of a call, so 21,000 intrinsic gas and calldata included):
   ``BlackScholesHarness.price`` (the library alone, one price), ``.greeks`` (call, put, deltas, gamma,
   vega), ``OptionMarket.fairPrice`` and ``.quote`` for a put and for a capped call (two Black-Scholes
   prices), and the vault's ``totalAssets`` with 0, 1 and 3 open option series.
2. **Market transactions** (``gasUsed`` of receipts): ``buy`` creating a series, ``buy`` into an existing
   one, ``sell``, ``settle``, ``exercise``.
3. **Deposits against open series** (``gasUsed``): the vault marks every open series at Black-Scholes in
   ``totalAssets()``, which ``deposit`` (and every mint, withdraw and redeem) reads. From one snapshot, the
   vault opens 0, 4 or 8 series (its default cap) in one ``rebalanceWithOptions`` (puts and capped calls on
   BTC, ETH and SOL, half each), then a depositor deposits 10,000 USDC; ``totalAssets`` (estimate) as well.
4. **Vault rebalances** (``gasUsed``): one swap leg with 0, 1 and 3 option legs through
   ``rebalanceWithOptions``, and the swap alone through ``rebalance``; every variant starts from the same
   ``evm_snapshot`` at the same block timestamp, and each is run twice to show the numbers repeat.
   Then ``settleOption`` of an expired position (settle + exercise).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from options_env import ACCOUNT_4, DAY, PRICES, USDC, VOLS, WAD, OptionsEnv, deploy_env  # noqa: E402

from keeper.build import load_artifacts  # noqa: E402
from keeper.chain import rpc  # noqa: E402
from keeper.deployment import MAX_UINT256, price_to_answer  # noqa: E402


def estimate(w3: Any, fn: Any, sender: str) -> int:
    tx = {"from": sender, "to": fn.address, "data": fn._encode_transaction_data()}
    return int(rpc(w3, "eth_estimateGas", [tx]), 16)


def gas_used(receipt: Any) -> int:
    return int(receipt["gasUsed"], 16)


def main() -> None:
    env = deploy_env(200_000_000, 10_000_000)
    try:
        run(env)
    finally:
        env.stop()


def run(env: OptionsEnv) -> None:
    w3, tx, system, owner, keeper, alice = env.w3, env.tx, env.system, env.owner, env.keeper, ACCOUNT_4
    vault, market, base, feeds = env.vault, env.market, env.base, env.feeds
    harness = tx.deploy(owner, load_artifacts()["BlackScholesHarness"])
    btc, eth, sol = (t.address for t in env.tokens)
    tx.transact(owner, base.functions.mint(alice, 100_000_000 * USDC))
    tx.transact(alice, base.functions.approve(system.vault, MAX_UINT256))
    tx.transact(alice, base.functions.approve(market.address, MAX_UINT256))
    tx.transact(alice, vault.functions.deposit(5_000_000 * USDC, alice))
    # alice opens series of her own below (new series need SERIES_CREATOR_ROLE; the vault holds it).
    tx.transact(owner, market.functions.grantRole(market.functions.SERIES_CREATOR_ROLE().call(), alice))
    expiry = env.now() + 30 * DAY

    print("1. Quotes (eth_estimateGas, incl. 21,000 intrinsic)")
    bs_in = (40_000 * WAD, 36_000 * WAD, 30 * DAY, 6 * WAD // 10, 0)
    rows = [
        ("BlackScholes.price (library, one put)", harness.functions.price(bs_in, False)),
        ("BlackScholes.greeks (call+put, deltas, gamma, vega)", harness.functions.greeks(bs_in)),
        ("OptionMarket.fairPrice put", market.functions.fairPrice(btc, 36_000 * WAD, expiry, False)),
        ("OptionMarket.quote put (buy)", market.functions.quote(btc, 36_000 * WAD, expiry, False, WAD, True)),
        ("OptionMarket.quote capped call (buy)", market.functions.quote(btc, 44_000 * WAD, expiry, True, WAD, True)),
        ("RiskParityVault.totalAssets, 0 open series", vault.functions.totalAssets()),
    ]
    for label, fn in rows:
        print(f"   {label:55s} {estimate(w3, fn, alice):>9,d}")

    print("2. Market transactions (gasUsed)")
    r = tx.transact(alice, market.functions.buy(eth, 2_800 * WAD, expiry, False, 5 * WAD, 10**15, alice))
    print(f"   {'buy, new series':55s} {gas_used(r):>9,d}")
    r = tx.transact(alice, market.functions.buy(eth, 2_800 * WAD, expiry, False, 5 * WAD, 10**15, alice))
    print(f"   {'buy, existing series':55s} {gas_used(r):>9,d}")
    sid = market.functions.seriesId(eth, 2_800 * WAD, expiry, False).call()
    r = tx.transact(alice, market.functions.sell(sid, 2 * WAD, 0, alice))
    print(f"   {'sell back':55s} {gas_used(r):>9,d}")
    snap = rpc(w3, "evm_snapshot", [])
    env.push_all(tuple(p * 0.9 for p in PRICES), VOLS, at=expiry - 3600)
    round_id = feeds[1].functions.latestRound().call()
    env.warp(expiry + 60)
    r = tx.transact(alice, market.functions.settle(sid, round_id))
    print(f"   {'settle':55s} {gas_used(r):>9,d}")
    r = tx.transact(alice, market.functions.exercise(sid, alice))
    print(f"   {'exercise (in the money)':55s} {gas_used(r):>9,d}")
    assert rpc(w3, "evm_revert", [snap])

    deposits_with_open_series(env, alice, expiry)

    print("4. Vault rebalances (gasUsed; 1 swap leg of 100,000 USDC into BTC + k option legs), two runs each")
    amount_in = 100_000 * USDC
    fair_out = amount_in * 10 ** (18 + 8) // (price_to_answer(PRICES[0]) * USDC)
    swap = (system.base_asset, btc, amount_in, fair_out * 9950 // 10_000)
    specs = [(btc, 36_000 * WAD, WAD), (eth, 2_700 * WAD, 10 * WAD), (sol, 90 * WAD, 100 * WAD)]

    def legs(k: int) -> list[tuple]:
        out = []
        for token, strike, amount in specs[:k]:
            ask = market.functions.quote(token, strike, expiry, False, amount, True).call()[0]
            out.append((token, strike, expiry, False, True, amount, ask))
        return out

    start = w3.eth.get_block("latest")["timestamp"] + 10
    snap = rpc(w3, "evm_snapshot", [])
    variants: list[tuple[str, Any]] = [
        ("rebalance (swap only, existing entry point)", lambda: vault.functions.rebalance([swap], 0, 0, start + 3600)),
    ]
    for k in (0, 1, 3):
        variants.append(
            (f"rebalanceWithOptions, {k} option leg(s)",
             lambda k=k: vault.functions.rebalanceWithOptions([swap], legs(k), 0, 0, start + 3600))
        )
    for label, build in variants:
        runs = []
        for _ in range(2):
            env.warp(start)
            fn = build()
            runs.append(gas_used(tx.transact(keeper, fn)))
            assert rpc(w3, "evm_revert", [snap])
            snap = rpc(w3, "evm_snapshot", [])
        print(f"   {label:55s} {runs[0]:>9,d} {runs[1]:>9,d}")

    env.warp(start)
    tx.transact(keeper, vault.functions.rebalanceWithOptions([swap], legs(3), 0, 0, start + 3600))
    print(f"   {'RiskParityVault.totalAssets, 3 open series (estimate)':55s} {estimate(w3, vault.functions.totalAssets(), alice):>9,d}")
    env.push_all(tuple(p * 0.8 for p in PRICES), VOLS, at=expiry - 3600)
    env.warp(expiry + 60)
    sid = market.functions.seriesId(btc, 36_000 * WAD, expiry, False).call()
    round_id = feeds[0].functions.latestRound().call()
    r = tx.transact(alice, vault.functions.settleOption(sid, round_id))
    print(f"   {'settleOption (settle + exercise, in the money)':55s} {gas_used(r):>9,d}")


def deposits_with_open_series(env: OptionsEnv, alice: str, expiry: int) -> None:
    w3, tx, vault, market, keeper = env.w3, env.tx, env.vault, env.market, env.keeper
    btc, eth, sol = (t.address for t in env.tokens)
    # (underlying, strike, is_call, amount): puts below and capped calls above 40,000 / 3,000 / 100 USD.
    specs = [
        (btc, 36_000 * WAD, False, WAD // 10), (eth, 3_300 * WAD, True, WAD), (sol, 90 * WAD, False, 10 * WAD),
        (btc, 44_000 * WAD, True, WAD // 10), (eth, 2_700 * WAD, False, WAD), (sol, 110 * WAD, True, 10 * WAD),
        (btc, 32_000 * WAD, False, WAD // 10), (eth, 3_600 * WAD, True, WAD),
    ]
    print("3. Vault deposit of 10,000 USDC with k open option series (gasUsed), and totalAssets (estimate)")
    snap = rpc(w3, "evm_snapshot", [])
    for k in (0, 4, 8):
        if k:
            legs = []
            for token, strike, is_call, amount in specs[:k]:
                ask = market.functions.quote(token, strike, expiry, is_call, amount, True).call()[0]
                legs.append((token, strike, expiry, is_call, True, amount, ask))
            deadline = w3.eth.get_block("latest")["timestamp"] + 3600
            tx.transact(keeper, vault.functions.rebalanceWithOptions([], legs, 0, vault.functions.rebalanceEpoch().call(),
                                                                      deadline))
        assert len(vault.functions.openSeries().call()) == k
        r = tx.transact(alice, vault.functions.deposit(10_000 * USDC, alice))
        ta = estimate(w3, vault.functions.totalAssets(), alice)
        print(f"   {f'deposit, {k} open series':55s} {gas_used(r):>9,d}   totalAssets {ta:>9,d}")
        assert rpc(w3, "evm_revert", [snap])
        snap = rpc(w3, "evm_snapshot", [])


if __name__ == "__main__":
    main()
