"""The options test environment shared by the option tests and ``benchmarks/bench_option_gas.py``.

:func:`deploy_env` starts its own Anvil at :data:`GENESIS`, deploys the full system (``deploy_system``) with
BTC, ETH and SOL at :data:`PRICES`, then the option market (``deploy_options``, implied vols :data:`VOLS`),
and returns an :class:`OptionsEnv` (or a subclass carrying a test's own fields) with the contracts and the
chain helpers every option test uses. Who deposits what, and the state a module snapshots, stay in the
test files.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from keeper.chain import AnvilProcess, DevSender, call_raw, connect, contract, decode_revert, dev_accounts, rpc
from keeper.deployment import (
    BASE_DECIMALS,
    Deployment,
    OptionsDeployment,
    deploy_options,
    deploy_system,
    price_to_answer,
    vol_to_answer,
)

SYMBOLS = ("BTC", "ETH", "SOL")
PRICES = (40_000.0, 3_000.0, 100.0)  # USD per whole token
VOLS = (0.6, 0.8, 1.0)  # annualised implied vols
GENESIS = 1_700_000_000  # the first block's timestamp, seconds
USDC = 10**BASE_DECIMALS  # base units per USD
WAD = 10**18
SCALE = 10 ** (36 - BASE_DECIMALS)  # (1e18 value per unit) × (1e18 amount) / SCALE = base units
BPS = 10_000
DAY = 86400
#: Anvil's dev accounts 0..5: owner, keeper and guardian of the deployment, then three free accounts.
OWNER, KEEPER, GUARDIAN, ACCOUNT_3, ACCOUNT_4, ACCOUNT_5 = dev_accounts()[:6]


@dataclass
class OptionsEnv:
    """A deployed system with its option market; ``tokens``, ``feeds`` and ``vol_feeds`` follow :data:`SYMBOLS`."""

    node: AnvilProcess
    w3: Any
    tx: DevSender
    system: Deployment
    options: OptionsDeployment
    owner: str
    keeper: str
    vault: Any
    market: Any
    base: Any
    tokens: list[Any]
    feeds: list[Any]
    vol_feeds: list[Any]

    def error(self, fn: Any, sender: str) -> Any:
        """The decoded custom error of ``fn`` called by ``sender``; fails the test if the call succeeds."""
        ok, data = call_raw(self.w3, {"from": sender, "to": fn.address, "data": fn._encode_transaction_data()})
        assert not ok, "expected a revert"
        return decode_revert(data)

    def now(self) -> int:
        """The latest block's timestamp, seconds."""
        return self.w3.eth.get_block("latest")["timestamp"]

    def warp(self, timestamp: int) -> None:
        """Mine an empty block at ``timestamp``."""
        rpc(self.w3, "evm_setNextBlockTimestamp", [timestamp])
        rpc(self.w3, "evm_mine", [])

    def freeze(self) -> None:
        """The next transaction is mined at the latest block's time (the time eth_call sees)."""
        rpc(self.w3, "evm_setNextBlockTimestamp", [self.now()])

    def push(self, i: int, price: float | None = None, vol: float | None = None) -> None:
        """A new round of asset ``i``'s price feed (USD) and/or vol feed (annualised), sent by the owner."""
        if price is not None:
            self.tx.transact(self.owner, self.feeds[i].functions.pushAnswer(price_to_answer(price)))
        if vol is not None:
            self.tx.transact(self.owner, self.vol_feeds[i].functions.pushAnswer(vol_to_answer(vol)))

    def push_all(
        self, prices: tuple[float, ...] = PRICES, vols: tuple[float, ...] = VOLS, at: int | None = None
    ) -> None:
        """New rounds of every price and vol feed (asset by asset), the first mined at ``at`` if given."""
        if at is not None:
            rpc(self.w3, "evm_setNextBlockTimestamp", [at])
        for i, (p, v) in enumerate(zip(prices, vols, strict=True)):
            self.push(i, p, v)

    def stop(self) -> None:
        self.node.stop()


Env = TypeVar("Env", bound=OptionsEnv)


def deploy_env(pool_depth_usd: float, pool_liquidity_usd: float, cls: type[Env] = OptionsEnv, **fields: Any) -> Env:
    """Start Anvil at :data:`GENESIS` and deploy the system and the option market on it.

    ``pool_depth_usd`` is the depth of each Uniswap pool and ``pool_liquidity_usd`` the market's LP pool
    (both USD); ``fields`` are the extra fields of ``cls``. The caller stops the node (:meth:`OptionsEnv.stop`).
    """
    node = AnvilProcess(timestamp=GENESIS)
    try:
        w3 = connect(node.rpc_url)
        system = deploy_system(w3, OWNER, KEEPER, GUARDIAN, SYMBOLS, PRICES, pool_depth_usd=pool_depth_usd)
        options = deploy_options(w3, system, OWNER, VOLS, pool_liquidity_usd=pool_liquidity_usd)
    except BaseException:
        node.stop()
        raise
    return cls(
        node=node,
        w3=w3,
        tx=DevSender(w3),
        system=system,
        options=options,
        owner=OWNER,
        keeper=KEEPER,
        vault=contract(w3, "RiskParityVault", system.vault),
        market=contract(w3, "OptionMarket", options.market),
        base=contract(w3, "TestToken", system.base_asset),
        tokens=[contract(w3, "TestToken", a.token) for a in system.assets],
        feeds=[contract(w3, "PushPriceFeed", a.feed) for a in system.assets],
        vol_feeds=[contract(w3, "PushPriceFeed", options.vol_feeds[a.token]) for a in system.assets],
        **fields,
    )


def reverted(env: Env) -> Iterator[Env]:
    """Yield ``env`` inside an ``evm_snapshot``, then revert to it (the body of a per-test fixture)."""
    snapshot = rpc(env.w3, "evm_snapshot", [])
    yield env
    assert rpc(env.w3, "evm_revert", [snapshot])


def fund_and_invest(env: OptionsEnv, holders: dict[str, float], minted_usd: float, spenders: tuple[str, ...] = ()) -> None:
    """Mints ``minted_usd`` of the base asset to each holder, approves the vault (and ``spenders``), deposits
    each holder's amount (USD), then has the keeper put 40 % of the deposits in BTC: one swap leg of
    $600,000 with ``minAmountOut`` 90 bps under the oracle (the state the option tests start from)."""
    system = env.system
    for who, usd in holders.items():
        env.tx.transact(env.owner, env.base.functions.mint(who, int(minted_usd * USDC)))
        for spender in (system.vault, *spenders):
            env.tx.transact(who, env.base.functions.approve(spender, 2**256 - 1))
    for who, usd in holders.items():
        if usd > 0:
            env.tx.transact(who, env.vault.functions.deposit(int(usd * USDC), who))
    amount_in = 600_000 * USDC
    fair_out = amount_in * 10 ** (18 + 8) // (price_to_answer(PRICES[0]) * USDC)
    leg = (system.base_asset, system.assets[0].token, amount_in, fair_out * 9910 // BPS)
    env.tx.transact(env.keeper, env.vault.functions.rebalance([leg], 0, 0, env.now() + 3600))
