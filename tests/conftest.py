"""Chain fixtures: one Anvil per test session, one deployment, named actors, and a snapshot per test.

The deployment is the real thing: OpenZeppelin-based vault, Uniswap V3 factory/router/position
manager/QuoterV2 from the npm artifacts, one seeded pool per asset. Feeds carry 60 days of real
closes (BTC, ETH, SOL from the shipped Binance file) pushed day by day at their historical dates.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from keeper.chain import ANVIL_KEYS, AnvilProcess, DevSender, call_raw, connect, contract, decode_revert, dev_accounts, rpc  # noqa: E402
from keeper.config import KeeperConfig  # noqa: E402
from keeper.data import PriceTable, load_prices  # noqa: E402
from keeper.deployment import BASE_DECIMALS, MAX_UINT256, Arbitrageur, Deployment, deploy_system, price_to_answer  # noqa: E402
from keeper.journal import Journal  # noqa: E402
from keeper.demo import TICK_AFTER_CLOSE_SECONDS  # noqa: E402
from keeper.runner import Keeper  # noqa: E402

SYMBOLS = ("BTC", "ETH", "SOL")
HISTORY_DAYS = 60
USDC = 10**BASE_DECIMALS


@dataclass
class System:
    """A deployed system and its actors (checksummed addresses)."""

    w3: Any
    rpc_url: str
    deployment: Deployment
    table: PriceTable
    day: int
    tx: DevSender
    owner: str
    keeper: str
    guardian: str
    arb: str
    alice: str
    bob: str
    arbitrageur: Arbitrageur
    vault: Any
    base: Any
    tokens: list[Any]
    feeds: list[Any]

    def call_error(self, fn: Any, sender: str) -> Any:
        """``eth_call`` a contract function that must revert; returns the decoded custom error."""
        ok, data = call_raw(self.w3, {"from": sender, "to": fn.address, "data": fn._encode_transaction_data()})
        assert not ok, "expected a revert"
        return decode_revert(data)

    def push_day(self, t: int, align: bool = True) -> None:
        """Moves chain time to the close of table day ``t``, pushes its closes, aligns the pools, then moves
        time to one hour after the close, where the keeper reads (see the ``system`` fixture)."""
        rpc(self.w3, "evm_setNextBlockTimestamp", [self.table.close_timestamp(t)])
        for feed, price in zip(self.feeds, self.table.prices[t]):
            self.tx.transact(self.owner, feed.functions.pushAnswer(price_to_answer(price)))
        if align:
            for asset, price in zip(self.deployment.assets, self.table.prices[t]):
                self.arbitrageur.align(asset.token, price_to_answer(price))
        rpc(self.w3, "evm_setNextBlockTimestamp", [self.table.close_timestamp(t) + TICK_AFTER_CLOSE_SECONDS])
        rpc(self.w3, "evm_mine", [])
        self.day = t

    def deposit(self, who: str, usd: float) -> int:
        amount = int(usd * USDC)
        self.tx.transact(who, self.vault.functions.deposit(amount, who))
        return amount

    def keeper_config(self, **overrides: Any) -> KeeperConfig:
        values = dict(
            rpc_url=self.rpc_url,
            vault_address=self.deployment.vault,
            quoter_address=self.deployment.quoter,
            lookback_days=45,
            min_observations=30,
            half_life_days=20,
            drift_threshold_bps=100,
            journal_path=":memory:",
        )
        values.update(overrides)
        return KeeperConfig(**values)

    def make_keeper(self, **overrides: Any) -> Keeper:
        return Keeper(self.keeper_config(**overrides), w3=self.w3, private_key=ANVIL_KEYS[1], journal=Journal(":memory:"))


@pytest.fixture(scope="session")
def chain_table() -> PriceTable:
    import datetime as dt

    return load_prices(symbols=SYMBOLS, start=dt.date(2022, 1, 1), end=dt.date(2022, 6, 30))


@pytest.fixture(scope="session")
def system(chain_table: PriceTable) -> System:
    table = chain_table
    node = AnvilProcess(timestamp=table.close_timestamp(0) - 3600)
    w3 = connect(node.rpc_url)
    owner, keeper, guardian, arb, alice, bob = dev_accounts()[:6]
    deployment = deploy_system(w3, owner, keeper, guardian, SYMBOLS, table.prices[0], pool_depth_usd=50_000_000)
    tx = DevSender(w3)
    system = System(
        w3=w3,
        rpc_url=node.rpc_url,
        deployment=deployment,
        table=table,
        day=0,
        tx=tx,
        owner=owner,
        keeper=keeper,
        guardian=guardian,
        arb=arb,
        alice=alice,
        bob=bob,
        arbitrageur=Arbitrageur(w3, deployment, arb, owner),
        vault=contract(w3, "RiskParityVault", deployment.vault),
        base=contract(w3, "TestToken", deployment.base_asset),
        tokens=[contract(w3, "TestToken", a.token) for a in deployment.assets],
        feeds=[contract(w3, "PushPriceFeed", a.feed) for a in deployment.assets],
    )
    # Each day ends one hour after its close, where the keeper reads, as the demo's keeper does: the daily grid
    # of the round history (block time − k days) then falls after every feed's push of each day whatever the
    # seconds a slow machine lets pass between two ticks; a few seconds after the close, a tick could fall
    # between the pushes of one day and see yesterday's round for some assets (a different history and
    # target), which made tests that tick twice flaky under load.
    for t in range(1, HISTORY_DAYS):
        system.push_day(t, align=(t == HISTORY_DAYS - 1))
    for who in (alice, bob):
        tx.transact(owner, system.base.functions.mint(who, 10_000_000 * USDC))
        tx.transact(who, system.base.functions.approve(deployment.vault, MAX_UINT256))
    yield system
    node.stop()


@pytest.fixture
def chain(system: System) -> System:
    """The session's system, rolled back to its pristine state after the test."""
    snapshot = rpc(system.w3, "evm_snapshot", [])
    day = system.day
    yield system
    assert rpc(system.w3, "evm_revert", [snapshot])
    system.day = day


def assert_vault_invariants(chain: System, holders: list[str]) -> None:
    """Share accounting holds: Σ balances = totalSupply; round trips never create assets."""
    vault = chain.vault.functions
    assert sum(vault.balanceOf(h).call() for h in holders) == vault.totalSupply().call()
    for amount in (1, 10**6, 123_456_789):
        assert vault.convertToAssets(vault.convertToShares(amount).call()).call() <= amount


__all__ = ["System", "assert_vault_invariants", "USDC", "SYMBOLS", "np"]
