"""Attacks on OptionMarket performed on Anvil against the real contracts (security review, OptionMarket part).

Each test runs the attack end to end (real vault, real market, real Uniswap V3 behind the vault) and shows it
no longer pays: the attacker's profit, in base units after every fee, is ≤ 0, or the attack's call reverts
with its custom error.

- H-1: a flash depositor takes an expired series' payout (deposit → settle → redeem) from the vault's
  depositors, and from the pool's LPs.
- Settlement robustness: a late feed update past the heartbeat, and an aggregator phase boundary.
- M-1: series spam filling the market's capacity and growing the LPs' gas.
- M-3: picking the LPs off across a price round and across a volatility round.

One module-scoped deployment (``options_env.deploy_env``) on its own Anvil; every test runs from a snapshot.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from options_env import ACCOUNT_3, ACCOUNT_4, ACCOUNT_5, BPS, DAY, PRICES, SCALE, USDC, VOLS, WAD, OptionsEnv, deploy_env, reverted

from keeper.deployment import MAX_UINT256, price_to_answer
from keeper.errors import TransactionFailedError

from web3 import Web3

SERIES_CREATOR_ROLE = Web3.keccak(text="SERIES_CREATOR_ROLE")


@dataclass
class Env(OptionsEnv):
    attacker: str
    alice: str
    bob: str

    def balance(self, who: str) -> int:
        return self.base.functions.balanceOf(who).call()

    def rebalance_options(self, option_legs: list) -> None:
        v = self.vault.functions
        fn = v.rebalanceWithOptions([], option_legs, 0, v.rebalanceEpoch().call(), self.now() + 3600)
        self.tx.transact(self.keeper, fn)

    def push_at(self, timestamp: int, i: int, price: float | None = None, vol: float | None = None) -> None:
        """One round of asset ``i``'s feed(s) mined at ``timestamp`` (other feeds untouched)."""
        from keeper.chain import rpc

        rpc(self.w3, "evm_setNextBlockTimestamp", [timestamp])
        self.push(i, price=price, vol=vol)


@pytest.fixture(scope="module")
def deployed() -> Env:
    env = deploy_env(200_000_000, 10_000_000, Env, attacker=ACCOUNT_3, alice=ACCOUNT_4, bob=ACCOUNT_5)
    tx, system = env.tx, env.system
    for who in (env.attacker, env.alice, env.bob):
        tx.transact(env.owner, env.base.functions.mint(who, 100_000_000 * USDC))
        tx.transact(who, env.base.functions.approve(system.vault, MAX_UINT256))
        tx.transact(who, env.base.functions.approve(env.market.address, MAX_UINT256))
    for who, usd in ((env.alice, 1_000_000), (env.bob, 500_000)):
        tx.transact(who, env.vault.functions.deposit(usd * USDC, who))
    # The keeper puts 40% of the vault's NAV in BTC (minAmountOut 90 bps under the oracle).
    amount_in = 600_000 * USDC
    fair_out = amount_in * 10 ** (18 + 8) // (price_to_answer(PRICES[0]) * USDC)
    leg = (system.base_asset, system.assets[0].token, amount_in, fair_out * 9910 // BPS)
    tx.transact(env.keeper, env.vault.functions.rebalance([leg], 0, 0, env.now() + 3600))
    yield env
    env.stop()


@pytest.fixture
def env(deployed: Env) -> Env:
    yield from reverted(deployed)


def _grant_creator(env: Env, who: str) -> None:
    """Lets ``who`` open new series (the pool admin's decision; the vault holds the role from deployment)."""
    env.tx.transact(env.owner, env.market.functions.grantRole(SERIES_CREATOR_ROLE, who))


def _expire_with_jump(env: Env, expiry: int, at_expiry: float, after: float) -> None:
    """BTC's round current at expiry answers ``at_expiry``; a round after expiry answers ``after``."""
    env.warp(expiry - 3600)
    env.push_all(prices=(at_expiry, PRICES[1], PRICES[2]))
    env.warp(expiry + 600)
    env.push_all(prices=(after, PRICES[1], PRICES[2]))
    env.warp(expiry + 900)


# ---------------------------------------------------------------------------------------------- H-1


def test_h1_flash_depositor_cannot_take_the_vaults_expired_payout(env: Env) -> None:
    """Deposit → settleOption → redeem across an expired put whose payout the latest price hides."""
    v, mk = env.vault.functions, env.market.functions
    btc = env.tokens[0].address
    strike, expiry, amount = 40_000 * WAD, env.now() + 10 * DAY, 4 * WAD
    ask = mk.quote(btc, strike, expiry, False, amount, True).call()[0]
    env.rebalance_options([(btc, strike, expiry, False, True, amount, ask)])
    sid = mk.seriesId(btc, strike, expiry, False).call()
    # BTC settles at 30,000 (the put pays 4 × 10,000), then trades back up to 45,000 (intrinsic 0).
    _expire_with_jump(env, expiry, 30_000.0, 45_000.0)
    payout = 40_000 * USDC
    mark = mk.positionValue(sid, amount).call()
    nav_before = v.totalAssets().call()

    attacker = env.attacker
    start = env.balance(attacker)
    env.tx.transact(attacker, v.deposit(50_000_000 * USDC, attacker))
    round_id = mk.findSettlementRound(sid).call()
    env.tx.transact(attacker, v.settleOption(sid, round_id))
    shares = v.balanceOf(attacker).call()
    env.tx.transact(attacker, v.redeem(shares, attacker, attacker))
    profit = env.balance(attacker) - start
    print(f"H-1 vault: payout {payout / USDC:,.2f} USD, flash-depositor profit {profit / USDC:,.6f} USD")
    assert mk.series(sid).call()[3] is True and mk.series(sid).call()[8] == 10_000 * WAD  # really paid 40,000
    assert profit <= 0
    assert mark == payout  # the vault marked exactly what settlement paid
    # The depositors kept the payout: NAV is what it was before the attack (up to rounding in their favour).
    assert v.totalAssets().call() >= nav_before


def test_h1_flash_lp_cannot_take_the_pools_expired_gain(env: Env) -> None:
    """Pool deposit → settle → redeem across an expired put whose latest-price mark overstates the payout."""
    mk = env.market.functions
    btc = env.tokens[0].address
    _grant_creator(env, env.alice)
    strike, expiry, amount = 40_000 * WAD, env.now() + 10 * DAY, 4 * WAD
    env.tx.transact(env.alice, mk.buy(btc, strike, expiry, False, amount, 10**15, env.alice))
    sid = mk.seriesId(btc, strike, expiry, False).call()
    # BTC settles at 45,000 (the put pays nothing), then falls to 30,000 (intrinsic 40,000 on the pool's books).
    _expire_with_jump(env, expiry, 45_000.0, 30_000.0)
    nav_before = mk.totalAssets().call()

    attacker = env.attacker
    start = env.balance(attacker)
    env.tx.transact(attacker, mk.deposit(50_000_000 * USDC, attacker))
    env.tx.transact(attacker, mk.settle(sid, mk.findSettlementRound(sid).call()))
    shares = mk.maxRedeem(attacker).call()
    assert shares == mk.balanceOf(attacker).call()  # free liquidity pays the whole position
    env.tx.transact(attacker, mk.redeem(shares, attacker, attacker))
    profit = env.balance(attacker) - start
    print(f"H-1 pool: flash-LP profit {profit / USDC:,.6f} USD")
    assert mk.series(sid).call()[3] is True and mk.series(sid).call()[8] == 0  # the put expired worthless
    assert profit <= 0
    assert mk.totalAssets().call() >= nav_before
