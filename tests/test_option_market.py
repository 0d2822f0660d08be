"""OptionMarket on Anvil: quotes against a Black-Scholes reference, buys, sells back, settlement in and
out of the money, the quote's refusals, and the LP pool's accounting.

One module-scoped deployment (``options_env.deploy_env``: ``deploy_system`` then ``deploy_options``) on its
own Anvil; every test runs from a snapshot of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import pytest
from options_env import (
    ACCOUNT_3,
    ACCOUNT_4,
    ACCOUNT_5,
    BPS,
    DAY,
    PRICES,
    SCALE,
    USDC,
    VOLS,
    WAD,
    OptionsEnv,
    deploy_env,
    reverted,
)
from test_black_scholes import reference

from keeper.deployment import DEFAULT_DEVIATION_BPS, DEFAULT_VOL_STEP, MAX_UINT256
from keeper.errors import TransactionFailedError

POOL_USD = 10_000_000


@dataclass
class Market(OptionsEnv):
    lp: str
    alice: str
    bob: str


@pytest.fixture(scope="module")
def deployed() -> Market:
    m = deploy_env(1_000_000, POOL_USD, Market, lp=ACCOUNT_3, alice=ACCOUNT_4, bob=ACCOUNT_5)
    for who in (m.lp, m.alice, m.bob):
        m.tx.transact(m.owner, m.base.functions.mint(who, 10_000_000 * USDC))
        m.tx.transact(who, m.base.functions.approve(m.market.address, MAX_UINT256))
    # alice and bob open series of their own here (a role the admin grants; the vault holds it).
    for who in (m.alice, m.bob):
        m.tx.transact(m.owner, m.market.functions.grantRole(m.market.functions.SERIES_CREATOR_ROLE().call(), who))
    yield m
    m.stop()


@pytest.fixture
def m(deployed: Market) -> Market:
    yield from reverted(deployed)


def ref_unit(m: Market, i: int, strike: float, expiry: int, is_call: bool) -> float:
    """Reference fair value per whole underlying (USD) at the latest block, read from the feeds."""
    spot = m.feeds[i].functions.latestRoundData().call()[1] / 1e8
    vol = m.vol_feeds[i].functions.latestRoundData().call()[1] / 1e18
    seconds = expiry - m.now()
    if not is_call:
        return reference(spot, strike, seconds, vol, 0.0).put
    cap = strike * m.market.functions.callCapBps().call() / BPS
    return reference(spot, strike, seconds, vol, 0.0).call - reference(spot, strike + cap, seconds, vol, 0.0).call


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def step_unit(m: Market, i: int, strike: int, expiry: int, is_call: bool) -> int:
    """The feed-step part of the half-spread per unit (1e18 USD), rounded up as the contract documents:
    |Δ|·dS + ½·|Γ|·dS² + |vega|·volStep with dS = spot · priceStepBps, from the market's own Greeks (a capped
    call's are the differences of the calls at K and K + cap)."""
    mk = m.market.functions
    token = m.tokens[i].address
    cfg = mk.underlyingConfig(token).call()
    step_bps, vol_step = cfg[7], cfg[8]
    spot = m.feeds[i].functions.latestRoundData().call()[1] * WAD // 10**8
    ds = _ceil_div(spot * step_bps, BPS)
    g = mk.greeks(token, strike, expiry).call()  # callPrice, putPrice, callDelta, putDelta, gamma, vega
    if is_call:
        h = mk.greeks(token, strike + strike * mk.callCapBps().call() // BPS, expiry).call()
        delta, gamma, vega = abs(g[2] - h[2]), abs(g[4] - h[4]), abs(g[5] - h[5])
    else:
        delta, gamma, vega = -g[3], g[4], g[5]
    return _ceil_div(delta * ds, WAD) + _ceil_div(gamma * ds * ds, 2 * WAD * WAD) + _ceil_div(vega * vol_step, WAD)


def test_fair_price_matches_black_scholes_and_the_quote_adds_the_half_spread(m: Market) -> None:
    """Ask = (fair · (1 + spread) + step) × amount rounded up, bid = (fair · (1 − spread) − step) × amount
    rounded down, with the local deployment's steps (the feed's deviation threshold, one vol point)."""
    mk = m.market.functions
    btc = m.tokens[0].address
    expiry = m.now() + 30 * DAY
    spread = mk.spreadBps().call()
    assert mk.underlyingConfig(btc).call()[7:9] == [DEFAULT_DEVIATION_BPS, int(DEFAULT_VOL_STEP * WAD)]
    for strike, is_call in ((36_000.0, False), (40_000.0, False), (44_000.0, True), (40_000.0, True)):
        unit = mk.fairPrice(btc, wad(strike), expiry, is_call).call()
        assert unit / WAD == pytest.approx(ref_unit(m, 0, strike, expiry, is_call), rel=1e-9)
        step = step_unit(m, 0, wad(strike), expiry, is_call)
        assert 0 < step < unit
        amount = 3 * WAD // 2
        premium, fair = mk.quote(btc, wad(strike), expiry, is_call, amount, True).call()
        assert fair == unit * amount // SCALE
        assert premium == _ceil_div((unit * (BPS + spread) + step * BPS) * amount, SCALE * BPS)  # rounded up
        bid, _ = mk.quote(btc, wad(strike), expiry, is_call, amount, False).call()
        assert bid == (unit * (BPS - spread) - step * BPS) * amount // (SCALE * BPS)  # rounded down


def test_buy_locks_collateral_and_credits_the_position(m: Market) -> None:
    mk = m.market.functions
    eth = m.tokens[1].address
    strike, expiry, amount = 2_800 * WAD, m.now() + 7 * DAY, 10 * WAD
    free_before = mk.freeLiquidity().call()
    alice_before = m.base.functions.balanceOf(m.alice).call()
    m.freeze()
    premium, _ = mk.quote(eth, strike, expiry, False, amount, True).call()
    m.tx.transact(m.alice, mk.buy(eth, strike, expiry, False, amount, premium, m.alice))
    sid = mk.seriesId(eth, strike, expiry, False).call()
    assert mk.positionOf(sid, m.alice).call() == amount
    assert m.base.functions.balanceOf(m.alice).call() == alice_before - premium
    collateral = strike * amount // SCALE  # a put's collateral is its strike
    assert mk.lockedCollateral().call() == collateral
    assert mk.freeLiquidity().call() == free_before + premium - collateral
    series = mk.series(sid).call()
    assert series[5] == amount and series[6] == collateral
    assert mk.activeSeries().call() == [sid]
    # A call locks its cap: strike × callCapBps.
    m.tx.transact(m.bob, mk.buy(eth, strike, expiry, True, amount, 10**12, m.bob))
    cap_collateral = strike * mk.callCapBps().call() // BPS * amount // SCALE
    assert mk.lockedCollateral().call() == collateral + cap_collateral


def test_buy_refuses_a_premium_above_the_buyers_max(m: Market) -> None:
    mk = m.market.functions
    sol = m.tokens[2].address
    expiry = m.now() + 14 * DAY
    premium, _ = mk.quote(sol, 90 * WAD, expiry, False, WAD, True).call()
    err = m.error(mk.buy(sol, 90 * WAD, expiry, False, WAD, premium - 1, m.alice), m.alice)
    assert err.name == "PremiumAboveMax" and err.args == (premium, premium - 1)


def test_quote_refuses_stale_inputs_bad_volatility_and_expiries_outside_the_window(m: Market) -> None:
    mk = m.market.functions
    btc = m.tokens[0].address
    now = m.now()
    lo, hi = mk.minTimeToExpiry().call(), mk.maxTimeToExpiry().call()
    err = m.error(mk.quote(btc, 40_000 * WAD, now + lo - 1, False, WAD, True), m.alice)
    assert err.name == "ExpiryOutsideWindow" and err.args[1:] == (lo - 1, lo, hi)
    err = m.error(mk.quote(btc, 40_000 * WAD, now + hi + 1, False, WAD, True), m.alice)
    assert err.name == "ExpiryOutsideWindow" and err.args[1] == hi + 1
    err = m.error(mk.quote(m.alice, 40_000 * WAD, now + DAY, False, WAD, True), m.alice)
    assert err.name == "UnderlyingNotListed"
    m.push(0, vol=6.0)  # 600%: outside the library's domain
    err = m.error(mk.quote(btc, 40_000 * WAD, now + DAY, False, WAD, True), m.alice)
    assert err.name == "VolatilityOutOfRange" and err.args[1] == 6 * WAD
    m.push(0, vol=0.6)
    config = mk.underlyingConfig(btc).call()
    m.warp(m.now() + config[2] + 1)  # past the price heartbeat
    err = m.error(mk.quote(btc, 40_000 * WAD, m.now() + 30 * DAY, False, WAD, True), m.alice)
    assert err.name == "StalePrice" and err.args[0].lower() == m.feeds[0].address.lower() and err.args[2] == config[2]
    m.push(0, price=40_000.0, vol=0.6)
    m.warp(m.now() + 60)
    assert mk.quote(btc, 40_000 * WAD, m.now() + 30 * DAY, False, WAD, True).call()[0] > 0
    m.push(0, vol=0.0)
    err = m.error(mk.quote(btc, 40_000 * WAD, m.now() + 30 * DAY, False, WAD, True), m.alice)
    assert err.name == "InvalidPrice" and err.args[0].lower() == m.vol_feeds[0].address.lower() and err.args[1] == 0


def wad(x: float) -> int:
    return int(Fraction(repr(float(x))) * WAD)


def _buy(m: Market, i: int, strike: float, expiry: int, is_call: bool, amount: int, who: str) -> bytes:
    mk = m.market.functions
    token = m.tokens[i].address
    m.tx.transact(who, mk.buy(token, wad(strike), expiry, is_call, amount, 10**15, who))
    return mk.seriesId(token, wad(strike), expiry, is_call).call()


def _expire(m: Market, i: int, expiry: int, price: float) -> int:
    """Pushes ``price`` one hour before expiry, moves past expiry; returns the settlement round."""
    m.warp(expiry - 3600)
    for j, p in enumerate(PRICES):
        m.push(j, price=price if j == i else p, vol=VOLS[j])
    round_id = m.feeds[i].functions.latestRound().call()
    m.warp(expiry + 600)
    return round_id


def test_settle_in_the_money_pays_the_intrinsic_value(m: Market) -> None:
    mk = m.market.functions
    expiry = m.now() + 10 * DAY
    amount = 7 * WAD // 4
    sid = _buy(m, 0, 38_000.0, expiry, False, amount, m.alice)
    round_id = _expire(m, 0, expiry, 35_000.0)
    assert mk.findSettlementRound(sid).call() == round_id
    m.tx.transact(m.bob, mk.settle(sid, round_id))  # anyone settles
    series = mk.series(sid).call()
    assert series[3] is True and series[7] == 35_000 * WAD and series[8] == 3_000 * WAD
    owed = -(-3_000 * WAD * amount // SCALE)
    assert mk.owedPayouts().call() == owed and mk.lockedCollateral().call() == 0
    assert mk.activeSeries().call() == []
    before = m.base.functions.balanceOf(m.alice).call()
    m.tx.transact(m.bob, mk.exercise(sid, m.alice))  # anyone exercises; the holder is paid
    payout = 3_000 * WAD * amount // SCALE
    assert m.base.functions.balanceOf(m.alice).call() == before + payout == before + 5_250 * USDC
    assert mk.positionOf(sid, m.alice).call() == 0 and mk.owedPayouts().call() == 0


def test_settle_out_of_the_money_returns_the_collateral_to_the_pool(m: Market) -> None:
    mk = m.market.functions
    expiry = m.now() + 3 * DAY
    free_before = mk.freeLiquidity().call()
    sid = _buy(m, 1, 3_300.0, expiry, True, 5 * WAD, m.alice)
    premium = mk.freeLiquidity().call() - free_before + mk.lockedCollateral().call()
    round_id = _expire(m, 1, expiry, 3_100.0)
    m.tx.transact(m.bob, mk.settle(sid, round_id))
    assert mk.series(sid).call()[8] == 0
    assert mk.freeLiquidity().call() == free_before + premium
    before = m.base.functions.balanceOf(m.alice).call()
    m.tx.transact(m.alice, mk.exercise(sid, m.alice))
    assert m.base.functions.balanceOf(m.alice).call() == before


def test_a_call_pays_at_most_its_cap(m: Market) -> None:
    mk = m.market.functions
    expiry = m.now() + 3 * DAY
    sid = _buy(m, 2, 100.0, expiry, True, 2 * WAD, m.alice)
    round_id = _expire(m, 2, expiry, 260.0)  # 160 above the strike, capped at 100% of it
    m.tx.transact(m.bob, mk.settle(sid, round_id))
    before = m.base.functions.balanceOf(m.alice).call()
    m.tx.transact(m.bob, mk.exercise(sid, m.alice))
    assert m.base.functions.balanceOf(m.alice).call() - before == 200 * USDC


def test_settlement_needs_the_round_current_at_expiry(m: Market) -> None:
    mk = m.market.functions
    expiry = m.now() + 2 * DAY
    sid = _buy(m, 0, 40_000.0, expiry, False, WAD, m.alice)
    err = m.error(mk.settle(sid, 1), m.bob)
    assert err.name == "ExpiryState"
    round_id = _expire(m, 0, expiry, 39_000.0)
    m.push(0, price=30_000.0)  # a round after expiry
    err = m.error(mk.settle(sid, round_id + 1), m.bob)
    assert err.name == "NotSettlementRound" and err.args[1] == round_id + 1
    err = m.error(mk.settle(sid, round_id - 1), m.bob)  # an older round: the next one is before expiry
    assert err.name == "NotSettlementRound"
    assert mk.findSettlementRound(sid).call() == round_id
    m.tx.transact(m.bob, mk.settle(sid, round_id))
    assert mk.series(sid).call()[7] == 39_000 * WAD
    assert m.error(mk.settle(sid, round_id), m.bob).name == "SettlementState"


def test_sell_back_before_expiry_pays_the_bid_and_releases_collateral(m: Market) -> None:
    mk = m.market.functions
    expiry = m.now() + 20 * DAY
    amount = 4 * WAD
    sid = _buy(m, 1, 2_900.0, expiry, False, amount, m.alice)
    locked = mk.lockedCollateral().call()
    m.freeze()
    bid, _ = mk.quote(m.tokens[1].address, 2_900 * WAD, expiry, False, amount // 4, False).call()
    err = m.error(mk.sell(sid, amount // 4, bid + 1, m.alice), m.alice)
    assert err.name == "PremiumBelowMin" and err.args == (bid, bid + 1)
    before = m.base.functions.balanceOf(m.alice).call()
    m.tx.transact(m.alice, mk.sell(sid, amount // 4, bid, m.alice))
    assert m.base.functions.balanceOf(m.alice).call() == before + bid
    assert mk.positionOf(sid, m.alice).call() == amount * 3 // 4
    assert mk.lockedCollateral().call() == locked - 2_900 * WAD * (amount // 4) // SCALE
    err = m.error(mk.sell(sid, amount, 0, m.alice), m.alice)
    assert err.name == "InsufficientPosition" and err.args[1:] == (amount * 3 // 4, amount)
    assert m.error(mk.sell(sid, amount // 4, 0, m.bob), m.bob).name == "InsufficientPosition"


def test_pool_refuses_what_its_free_liquidity_cannot_collateralise(m: Market) -> None:
    mk = m.market.functions
    free = mk.freeLiquidity().call()
    amount = (free * SCALE // (40_000 * WAD)) + WAD  # puts struck at 40k on more BTC than the pool covers
    err = m.error(mk.buy(m.tokens[0].address, 40_000 * WAD, m.now() + DAY, False, amount, 10**15, m.alice), m.alice)
    assert err.name == "InsufficientLiquidity" and err.args[1] == free


def test_lp_nav_books_open_options_at_their_mark_and_withdrawals_stop_at_free_liquidity(m: Market) -> None:
    mk = m.market.functions
    m.tx.transact(m.lp, mk.deposit(1_000_000 * USDC, m.lp))
    expiry = m.now() + 30 * DAY
    sid = _buy(m, 0, 40_000.0, expiry, False, 30 * WAD, m.alice)
    balance = m.base.functions.balanceOf(m.market.address).call()
    oi = mk.series(sid).call()[5]
    unit = mk.fairPrice(m.tokens[0].address, 40_000 * WAD, expiry, False).call()
    liability = -(-unit * oi // SCALE)  # the pool books its liability rounded up
    assert mk.totalAssets().call() == balance - liability
    # The pool earned the spread: NAV above the deposits.
    assert mk.totalAssets().call() > (POOL_USD + 1_000_000) * USDC
    # A price move against the pool lowers its NAV.
    nav = mk.totalAssets().call()
    m.push(0, price=36_000.0)
    assert mk.totalAssets().call() < nav
    free = mk.freeLiquidity().call()
    assert mk.maxRedeem(m.owner).call() == mk.convertToShares(free).call() < mk.balanceOf(m.owner).call()
    assert free - 1 <= mk.maxWithdraw(m.owner).call() <= free
    with pytest.raises(TransactionFailedError, match="ERC4626ExceededMaxWithdraw"):
        m.tx.transact(m.owner, mk.withdraw(mk.freeLiquidity().call() + 1, m.owner, m.owner))


def test_governance_is_admin_only_and_bounded(m: Market) -> None:
    mk = m.market.functions
    err = m.error(mk.setParams(100, 3600, 86400), m.alice)
    assert err.name == "AccessControlUnauthorizedAccount"
    err = m.error(mk.setParams(mk.MAX_SPREAD_BPS().call() + 1, 3600, 86400), m.owner)
    assert err.name == "LimitOutOfRange" and err.args == (2_001, 2_000)
    err = m.error(mk.setParams(100, 86400, 3600), m.owner)
    assert err.name == "LimitOutOfRange" and err.args == (86400, 3600)
    err = m.error(mk.listUnderlying(m.tokens[0].address, m.feeds[0].address, 0, m.vol_feeds[0].address, 60, 0, 0), m.owner)
    assert err.name == "ZeroHeartbeat"
    err = m.error(mk.listUnderlying(m.tokens[0].address, m.feeds[0].address, 60, m.vol_feeds[0].address, 60, 0, 0), m.alice)
    assert err.name == "AccessControlUnauthorizedAccount"


def test_a_late_lp_buys_in_at_the_marked_nav(m: Market) -> None:
    mk = m.market.functions
    _buy(m, 0, 40_000.0, m.now() + 30 * DAY, False, 50 * WAD, m.alice)
    m.push(0, price=34_000.0)  # the pool's short puts lose: its NAV per share falls
    nav, supply = mk.totalAssets().call(), mk.totalSupply().call()
    assert nav < POOL_USD * USDC
    assets = 1_000_000 * USDC
    m.freeze()
    m.tx.transact(m.lp, mk.deposit(assets, m.lp))
    shares = mk.balanceOf(m.lp).call()
    assert shares == assets * (supply + 10**6) // (nav + 1)  # ERC-4626 floor with virtual shares
    # The late LP's claim is worth at most what they paid in.
    assert mk.previewRedeem(shares).call() <= assets


def test_runtime_code_fits_the_eip170_limit(m: Market) -> None:
    # `./run keeper build` lists creation code; the limit (24,576 bytes) is on the deployed runtime code.
    assert len(m.w3.eth.get_code(m.market.address)) <= 24_576


def test_live_answers_outside_the_admin_bounds_are_refused(m: Market) -> None:
    mk = m.market.functions
    btc = m.tokens[0].address
    expiry = m.now() + 30 * DAY
    err = m.error(mk.setAnswerBounds(btc, 30_000 * 10**8, 60_000 * 10**8, 0, 0), m.alice)
    assert err.name == "AccessControlUnauthorizedAccount"
    err = m.error(mk.setAnswerBounds(btc, 60_000 * 10**8, 30_000 * 10**8, 0, 0), m.owner)
    assert err.name == "LimitOutOfRange" and err.args == (60_000 * 10**8, 30_000 * 10**8)
    m.tx.transact(m.owner, mk.setAnswerBounds(btc, 30_000 * 10**8, 60_000 * 10**8, WAD // 10, 3 * WAD // 2))
    assert mk.quote(btc, 40_000 * WAD, expiry, False, WAD, True).call()[0] > 0
    m.push(0, price=25_000.0)  # below the least price answer: a feed pinned at its floor, say
    err = m.error(mk.quote(btc, 40_000 * WAD, expiry, False, WAD, True), m.alice)
    assert err.name == "PriceOutOfBounds"
    assert err.args[0].lower() == m.feeds[0].address.lower() and err.args[1:] == (25_000 * 10**8, 30_000 * 10**8, 60_000 * 10**8)
    m.push(0, price=41_000.0, vol=2.0)  # 200% vol: inside the library's domain, above the admin's 150%
    err = m.error(mk.quote(btc, 40_000 * WAD, expiry, False, WAD, True), m.alice)
    assert err.name == "PriceOutOfBounds" and err.args[0].lower() == m.vol_feeds[0].address.lower()
    assert err.args[1:] == (2 * WAD, WAD // 10, 3 * WAD // 2)
    m.push(0, vol=0.7)
    assert mk.quote(btc, 40_000 * WAD, expiry, False, WAD, True).call()[0] > 0
    # Relisting keeps the bounds.
    cfg = mk.underlyingConfig(btc).call()
    m.tx.transact(m.owner, mk.listUnderlying(btc, cfg[0], cfg[2], cfg[1], cfg[3], 0, 0))
    assert mk.underlyingConfig(btc).call()[-4:] == [30_000 * 10**8, 60_000 * 10**8, WAD // 10, 3 * WAD // 2]


def test_quotes_wait_for_the_l2_sequencer_and_its_grace_period(m: Market) -> None:
    from keeper.build import load_artifacts

    mk = m.market.functions
    btc = m.tokens[0].address
    uptime = m.tx.deploy(m.owner, load_artifacts()["PushPriceFeed"], 0, "L2 sequencer uptime", m.owner)
    m.tx.transact(m.owner, uptime.functions.pushAnswer(0))  # up since now
    up_since = m.now()
    err = m.error(mk.setSequencer(uptime.address, 3600), m.alice)
    assert err.name == "AccessControlUnauthorizedAccount"
    assert m.error(mk.setSequencer(uptime.address, 2 * DAY), m.owner).name == "LimitOutOfRange"
    m.tx.transact(m.owner, mk.setSequencer(uptime.address, 3600))
    expiry = m.now() + 30 * DAY
    err = m.error(mk.quote(btc, 40_000 * WAD, expiry, False, WAD, True), m.alice)
    assert err.name == "SequencerGracePeriod" and err.args[1:] == (up_since, 3600)
    m.warp(up_since + 3600)
    m.push_all()
    assert mk.quote(btc, 40_000 * WAD, expiry, False, WAD, True).call()[0] > 0
    m.tx.transact(m.owner, uptime.functions.pushAnswer(1))  # down
    err = m.error(mk.quote(btc, 40_000 * WAD, expiry, False, WAD, True), m.alice)
    assert err.name == "SequencerDown" and err.args[1] == 1
    m.tx.transact(m.owner, mk.setSequencer("0x" + "00" * 20, 0))  # an L1 deployment: no check
    assert mk.quote(btc, 40_000 * WAD, expiry, False, WAD, True).call()[0] > 0
