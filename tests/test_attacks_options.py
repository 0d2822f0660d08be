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
from options_env import ACCOUNT_3, ACCOUNT_4, ACCOUNT_5, DAY, PRICES, SCALE, USDC, WAD, OptionsEnv, deploy_env, fund_and_invest, reverted

from keeper.deployment import DEFAULT_DEVIATION_BPS, DEFAULT_VOL_STEP
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
    fund_and_invest(env, {env.attacker: 0, env.alice: 1_000_000, env.bob: 500_000}, 100_000_000,
                    spenders=(env.market.address,))
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


# ------------------------------------------------------------------------ settlement that must happen


def _relist(env: Env, price_heartbeat: int, price_step_bps: int = 0, vol_step: int = 0, i: int = 0) -> None:
    """The admin relists asset ``i`` with another price heartbeat (seconds) and quote steps."""
    mk = env.market.functions
    token = env.tokens[i].address
    cfg = mk.underlyingConfig(token).call()
    env.tx.transact(env.owner, mk.listUnderlying(token, cfg[0], price_heartbeat, cfg[1], cfg[3], price_step_bps, vol_step))


def _alice_puts(env: Env, strike: float, expiry: int, amount: int) -> bytes:
    mk = env.market.functions
    btc = env.tokens[0].address
    _grant_creator(env, env.alice)
    env.push_all()
    env.tx.transact(env.alice, mk.buy(btc, int(strike) * WAD, expiry, False, amount, 10**15, env.alice))
    return mk.seriesId(btc, int(strike) * WAD, expiry, False).call()


def _settle_and_check(env: Env, sid: bytes, amount: int, round_id: int, price: float) -> None:
    """Mark before settlement == payout booked == what the holder receives; the pool's NAV does not jump."""
    mk = env.market.functions
    strike = mk.series(sid).call()[4]
    payout = max(strike - int(price) * WAD, 0) * amount // SCALE
    assert mk.findSettlementRound(sid).call() == round_id
    assert mk.positionValue(sid, amount).call() == payout
    nav = mk.totalAssets().call()
    env.tx.transact(env.bob, mk.settle(sid, round_id))
    series = mk.series(sid).call()
    assert series[3] is True and series[7] == int(price) * WAD
    assert mk.totalAssets().call() == nav
    before = env.balance(env.alice)
    env.tx.transact(env.bob, mk.exercise(sid, env.alice))
    assert env.balance(env.alice) - before == payout


def test_settlement_after_a_late_update_uses_the_first_round_after_expiry(env: Env) -> None:
    """Heartbeat 3,600 s, the update due before expiry lands 3,630 s after the previous one, after expiry.

    The round current at expiry is 3,610 s old: stale. The old rule (the round current at expiry, within a
    heartbeat) refused every round and left the collateral locked; the first round after expiry is used now.
    """
    mk = env.market.functions
    _relist(env, 3600)
    expiry = env.now() + 2 * DAY
    sid = _alice_puts(env, 40_000, expiry, 2 * WAD)
    env.push_at(expiry - 3610, 0, price=38_000.0)
    stale_round = env.feeds[0].functions.latestRound().call()
    env.warp(expiry + 10)
    # Not decidable yet: settlement, the round helper and the mark all refuse to guess.
    for fn in (mk.settle(sid, stale_round), mk.findSettlementRound(sid), mk.positionValue(sid, 2 * WAD), mk.totalAssets()):
        err = env.error(fn, env.bob)
        assert err.name == "SettlementPending" and err.args[1:] == (expiry, expiry + 3600)
    env.push_at(expiry + 20, 0, price=35_000.0)  # 3,630 s after the previous round
    late_round = env.feeds[0].functions.latestRound().call()
    env.push_at(expiry + 500, 0, price=30_000.0)  # later rounds change nothing
    err = env.error(mk.settle(sid, stale_round), env.bob)
    assert err.name == "NotSettlementRound" and err.args[1:] == (stale_round, late_round)
    _settle_and_check(env, sid, 2 * WAD, late_round, 35_000.0)


def test_settlement_with_no_round_near_expiry_falls_back_to_the_round_current_at_expiry(env: Env) -> None:
    """No round within a heartbeat on either side of expiry: once expiry + heartbeat has passed, the round
    current at expiry (however old) is final, and a round landing later does not change it."""
    mk = env.market.functions
    _relist(env, 3600)
    expiry = env.now() + 2 * DAY
    sid = _alice_puts(env, 40_000, expiry, 2 * WAD)
    env.push_at(expiry - 7200, 0, price=37_000.0)
    stale_round = env.feeds[0].functions.latestRound().call()
    env.warp(expiry + 3600)
    assert env.error(mk.findSettlementRound(sid), env.bob).name == "SettlementPending"
    env.warp(expiry + 3601)
    assert mk.findSettlementRound(sid).call() == stale_round
    env.push_at(expiry + 4000, 0, price=31_000.0)  # too late to be the settlement round
    _settle_and_check(env, sid, 2 * WAD, stale_round, 37_000.0)


def _rounds(env: Env, start: int, count: int, price: float, spacing: int = 60) -> None:
    for k in range(count):
        env.push_at(start + k * spacing, 0, price=price + k)


def test_settlement_across_an_aggregator_phase_boundary(env: Env) -> None:
    """The round current at expiry is the last of phase 0; the proxy then moves to phase 1, whose round ids
    start again at (1 << 64) | 1: the old `roundId + 1` check reverted (no such round) for ever."""
    mk = env.market.functions
    feed = env.feeds[0].functions
    expiry = env.now() + 2 * DAY
    sid = _alice_puts(env, 40_000, expiry, 2 * WAD)
    _rounds(env, expiry - 3 * 3600, 37, 36_000.0, spacing=60)  # 37 more rounds in phase 0 (odd counts on purpose)
    at_expiry = feed.latestRound().call()
    assert at_expiry >> 64 == 0
    env.tx.transact(env.owner, feed.startPhase())
    _rounds(env, expiry + 300, 5, 44_000.0)
    assert feed.latestRound().call() == (1 << 64) | 5
    env.warp(expiry + 1200)
    _settle_and_check(env, sid, 2 * WAD, at_expiry, 36_036.0)


def test_settlement_on_the_first_round_of_a_new_phase_after_a_stale_one(env: Env) -> None:
    """Stale round at expiry (the last of phase 1), then phases 2 and 3 open after expiry: the first round
    after expiry, (2 << 64) | 1, settles — found by walking back through the phases."""
    mk = env.market.functions
    feed = env.feeds[0].functions
    _relist(env, 3600)
    expiry = env.now() + 2 * DAY
    sid = _alice_puts(env, 40_000, expiry, 2 * WAD)
    env.tx.transact(env.owner, feed.startPhase())
    _rounds(env, expiry - 4 * 3600, 3, 38_000.0)
    env.tx.transact(env.owner, feed.startPhase())
    _rounds(env, expiry + 120, 1, 35_500.0)
    first_after = feed.latestRound().call()
    assert first_after == (2 << 64) | 1
    env.tx.transact(env.owner, feed.startPhase())
    _rounds(env, expiry + 600, 9, 30_000.0)
    env.warp(expiry + 2000)
    _settle_and_check(env, sid, 2 * WAD, first_after, 35_500.0)


# ---------------------------------------------------------------------------------------------- M-1


def test_m1_outsiders_cannot_fill_the_series_capacity_and_lp_gas_stays_bounded(env: Env) -> None:
    """Series spam (1-wei, deep OTM, 365-day puts) up to MAX_ACTIVE_SERIES: every creation is refused, the
    vault still opens its series, and an LP deposit costs what it cost before the attempt."""
    v, mk = env.vault.functions, env.market.functions
    attacker = env.attacker
    tokens = [t.address for t in env.tokens]
    expiry = env.now() + 365 * DAY - 600
    def lp_deposit() -> int:
        gas = env.tx.transact(env.bob, mk.deposit(1_000 * USDC, env.bob))["gasUsed"]
        return int(gas, 16) if isinstance(gas, str) else int(gas)

    gas_before = lp_deposit()
    cap = mk.MAX_ACTIVE_SERIES().call()
    for k in range(cap):
        token, price = tokens[k % 3], PRICES[k % 3]
        strike = int(price * (0.05 + k / 1000)) * WAD  # a distinct deep-OTM strike per series
        err = env.error(mk.buy(token, strike, expiry, False, 1, 10**12, attacker), attacker)
        assert err.name == "SeriesCreationNotAllowed" and err.args[0].lower() == attacker.lower()
    with pytest.raises(TransactionFailedError, match="SeriesCreationNotAllowed"):
        env.tx.transact(attacker, mk.buy(tokens[0], 2_000 * WAD, expiry, False, 1, 10**12, attacker))
    assert mk.activeSeries().call() == []
    # The vault (SERIES_CREATOR_ROLE from deployment) opens its protective put.
    btc, strike, put_expiry, amount = tokens[0], 36_000 * WAD, env.now() + 30 * DAY, 5 * WAD
    env.rebalance_options([(btc, strike, put_expiry, False, True, amount, mk.quote(btc, strike, put_expiry, False, amount, True).call()[0])])
    sid = mk.seriesId(btc, strike, put_expiry, False).call()
    assert mk.activeSeries().call() == [sid] and v.openSeries().call() == [sid]
    # Outsiders still trade the series that exist (1 wei of the vault's put): no new series.
    env.tx.transact(attacker, mk.buy(btc, strike, put_expiry, False, 1, 10**12, attacker))
    assert mk.activeSeries().call() == [sid]
    gas_after = lp_deposit()
    print(f"M-1: LP deposit gas {gas_before} with no series, {gas_after} with the vault's one series; {cap} spam creations refused")
    # One priced series (the vault's) is all the LP's gas grew by: far below the 64-series 1.28M of the review.
    assert gas_after < gas_before + 120_000


# ---------------------------------------------------------------------------------------------- M-3


def _round_trip(env: Env, i: int, is_call: bool, strike: int, amount: int, update) -> int:
    """Attacker buys ``amount`` one-day options, the feed update ``update()`` lands, attacker sells them
    all back; returns the attacker's profit in base units (premium received − premium paid)."""
    mk = env.market.functions
    token = env.tokens[i].address
    expiry = env.now() + DAY
    start = env.balance(env.attacker)
    env.freeze()
    env.tx.transact(env.attacker, mk.buy(token, strike, expiry, is_call, amount, 10**15, env.attacker))
    update()
    sid = mk.seriesId(token, strike, expiry, is_call).call()
    env.tx.transact(env.attacker, mk.sell(sid, amount, 0, env.attacker))
    return env.balance(env.attacker) - start


CASES = {
    # ETH at 3,000 (vol 80%): 1,000 one-day ATM puts across a −1% price round ...
    "put-price-round-down": (1, False, 3_000, lambda env: env.push(1, price=2_970.0)),
    # ... 1,000 one-day ATM capped calls across a +1% price round ...
    "call-price-round-up": (1, True, 3_000, lambda env: env.push(1, price=3_030.0)),
    # ... and 1,000 one-day ATM puts across a vol round 80% → 90%.
    "put-vol-round-up": (1, False, 3_000, lambda env: env.push(1, vol=0.9)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_m3_picking_off_the_lps_across_a_feed_round_no_longer_pays(env: Env, case: str) -> None:
    """The same round trip, first with the spread alone (steps 0: the old quote), then with the feed steps
    listed (1% price deviation threshold, 10-point vol step): the half-spread covers one update."""
    from keeper.chain import rpc

    i, is_call, strike, update = CASES[case]
    _grant_creator(env, env.attacker)  # the series would exist anyway (e.g. the vault's); pricing is what is tested
    amount = 1_000 * WAD
    _relist(env, 2 * DAY, price_step_bps=0, vol_step=0, i=i)  # the old quote: the spread alone
    snapshot = rpc(env.w3, "evm_snapshot", [])
    before = _round_trip(env, i, is_call, strike * WAD, amount, lambda: update(env))
    assert rpc(env.w3, "evm_revert", [snapshot])
    _relist(env, 2 * DAY, price_step_bps=100, vol_step=WAD // 10, i=i)
    after = _round_trip(env, i, is_call, strike * WAD, amount, lambda: update(env))
    print(f"M-3 {case}: round-trip profit {before / USDC:+,.2f} USD with the spread alone, {after / USDC:+,.2f} USD with the step half-spread")
    assert before > 0  # the attack is real against the spread alone
    assert after <= 0


def _reverse_round_trip(env: Env, amount: int) -> int:
    """A holder of ``amount`` one-day ETH calls sells them all just before a −1% price round and buys them
    back just after; returns the cash gained (the position is the same before and after)."""
    mk = env.market.functions
    eth = env.tokens[1].address
    expiry = env.now() + DAY + 3600
    env.tx.transact(env.attacker, mk.buy(eth, 3_000 * WAD, expiry, True, amount, 10**15, env.attacker))
    sid = mk.seriesId(eth, 3_000 * WAD, expiry, True).call()
    start = env.balance(env.attacker)
    env.freeze()
    env.tx.transact(env.attacker, mk.sell(sid, amount, 0, env.attacker))
    env.push(1, price=2_970.0)
    env.tx.transact(env.attacker, mk.buy(eth, 3_000 * WAD, expiry, True, amount, 10**15, env.attacker))
    assert mk.positionOf(sid, env.attacker).call() == amount
    return env.balance(env.attacker) - start


def test_m3_selling_before_a_round_and_buying_back_after_no_longer_pays(env: Env) -> None:
    """The reverse pick-off (the half-spread applies to the pool's bid as well as its ask)."""
    from keeper.chain import rpc

    _grant_creator(env, env.attacker)
    amount = 1_000 * WAD
    _relist(env, 2 * DAY, price_step_bps=0, vol_step=0, i=1)  # the old quote: the spread alone
    snapshot = rpc(env.w3, "evm_snapshot", [])
    before = _reverse_round_trip(env, amount)
    assert rpc(env.w3, "evm_revert", [snapshot])
    _relist(env, 2 * DAY, price_step_bps=100, vol_step=WAD // 10, i=1)
    after = _reverse_round_trip(env, amount)
    print(f"M-3 sell-before/buy-after: {before / USDC:+,.2f} USD with the spread alone, {after / USDC:+,.2f} USD with the step half-spread")
    assert before > 0
    assert after <= 0


DEFAULT_STEP_CASES = {
    # One step of each local feed: ETH's price deviation threshold (50 bps) down or up, which pays against
    # the spread alone; and one vol point up, which the 1% spread alone already covers on one-day options.
    "put-price-step-down": (False, True, lambda env: env.push(1, price=3_000.0 * (1 - DEFAULT_DEVIATION_BPS / 10_000))),
    "call-price-step-up": (True, True, lambda env: env.push(1, price=3_000.0 * (1 + DEFAULT_DEVIATION_BPS / 10_000))),
    "put-vol-step-up": (False, False, lambda env: env.push(1, vol=0.8 + DEFAULT_VOL_STEP)),
}


@pytest.mark.parametrize("case", sorted(DEFAULT_STEP_CASES))
def test_m3_the_local_deployment_quotes_one_feed_step_so_a_round_does_not_pay(env: Env, case: str) -> None:
    """The local deployment lists every underlying with its price feed's deviation threshold (read from the
    vault's listing) and the vol feed's step, so the pick-off across one round of either feed loses, while
    the same round trip against the spread alone pays."""
    from keeper.chain import rpc

    mk = env.market.functions
    eth = env.tokens[1].address
    cfg = mk.underlyingConfig(eth).call()
    assert cfg[7] == env.vault.functions.riskAssetConfig(eth).call()[6] == DEFAULT_DEVIATION_BPS
    assert cfg[8] == int(DEFAULT_VOL_STEP * WAD)
    is_call, pays_against_spread_alone, update = DEFAULT_STEP_CASES[case]
    _grant_creator(env, env.attacker)
    amount = 1_000 * WAD
    snapshot = rpc(env.w3, "evm_snapshot", [])
    _relist(env, cfg[2], price_step_bps=0, vol_step=0, i=1)
    before = _round_trip(env, 1, is_call, 3_000 * WAD, amount, lambda: update(env))
    assert rpc(env.w3, "evm_revert", [snapshot])
    after = _round_trip(env, 1, is_call, 3_000 * WAD, amount, lambda: update(env))
    print(f"M-3 default steps, {case}: {before / USDC:+,.2f} USD with the spread alone, {after / USDC:+,.2f} USD as deployed")
    assert (before > 0) == pays_against_spread_alone
    assert after <= min(before, 0)
