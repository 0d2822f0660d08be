"""Option legs of RiskParityVault.rebalanceWithOptions on Anvil: buying and selling through the
OptionMarket, the premium bound, budget and open-series cap, option marks in totalAssets, settlement by
anyone, and a depositor's fair share while options are open.

One module-scoped deployment (``options_env.deploy_env``: ``deploy_system`` then ``deploy_options``) on its
own Anvil; alice and bob
deposit and the keeper buys BTC, then every test runs from a snapshot of that state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from options_env import ACCOUNT_4, ACCOUNT_5, BPS, DAY, USDC, WAD, OptionsEnv, deploy_env, fund_and_invest, reverted
from test_black_scholes import reference

from web3.logs import DISCARD

from keeper.chain import call_raw, decode_revert
from keeper.deployment import price_to_answer
from keeper.errors import TransactionFailedError

VIRTUAL_SHARES = 10**6  # the vault's _decimalsOffset


@dataclass
class Env(OptionsEnv):
    alice: str
    bob: str

    def rebalance(self, legs: list, option_legs: list, sender: str | None = None) -> Any:
        v = self.vault.functions
        fn = v.rebalanceWithOptions(legs, option_legs, 0, v.rebalanceEpoch().call(), self.now() + 3600)
        return self.tx.transact(sender or self.keeper, fn)

    def call_rebalance_error(self, legs: list, option_legs: list) -> Any:
        v = self.vault.functions
        return self.error(v.rebalanceWithOptions(legs, option_legs, 0, v.rebalanceEpoch().call(), self.now() + 3600), self.keeper)

    def spot_value(self) -> int:
        """Σ risk balance × oracle price, base units, each term rounded down (the vault's formula)."""
        total = 0
        for token, feed in zip(self.tokens, self.feeds):
            balance = token.functions.balanceOf(self.vault.address).call()
            total += balance * feed.functions.latestRoundData().call()[1] * USDC // 10 ** (18 + 8)
        return total

    def nav_from_parts(self) -> int:
        marks = sum(
            self.market.functions.positionValue(sid, self.market.functions.positionOf(sid, self.vault.address).call()).call()
            for sid in self.vault.functions.openSeries().call()
        )
        return self.base.functions.balanceOf(self.vault.address).call() + self.spot_value() + marks


def put_leg(env: Env, strike: int, expiry: int, amount: int, premium_limit: int | None = None, i: int = 0, is_call: bool = False) -> tuple:
    """A buy leg; the limit defaults to the market's ask at the latest block."""
    token = env.tokens[i].address
    if premium_limit is None:
        premium_limit = env.market.functions.quote(token, strike, expiry, is_call, amount, True).call()[0]
    return (token, strike, expiry, is_call, True, amount, premium_limit)


def sell_leg(env: Env, strike: int, expiry: int, amount: int, premium_limit: int | None = None, i: int = 0, is_call: bool = False) -> tuple:
    token = env.tokens[i].address
    if premium_limit is None:
        premium_limit = env.market.functions.quote(token, strike, expiry, is_call, amount, False).call()[0]
    return (token, strike, expiry, is_call, False, amount, premium_limit)


@pytest.fixture(scope="module")
def deployed() -> Env:
    env = deploy_env(200_000_000, 10_000_000, Env, alice=ACCOUNT_4, bob=ACCOUNT_5)
    fund_and_invest(env, {env.alice: 1_000_000, env.bob: 500_000}, 10_000_000)
    yield env
    env.stop()


@pytest.fixture
def env(deployed: Env) -> Env:
    yield from reverted(deployed)


def test_buying_a_put_books_it_at_its_black_scholes_mark(env: Env) -> None:
    v, mk = env.vault.functions, env.market.functions
    nav_before = v.totalAssets().call()
    strike, expiry, amount = 36_000 * WAD, env.now() + 30 * DAY, 10 * WAD
    env.freeze()
    leg = put_leg(env, strike, expiry, amount)
    receipt = env.rebalance([], [leg])
    sid = mk.seriesId(env.tokens[0].address, strike, expiry, False).call()
    assert v.openSeries().call() == [sid]
    assert mk.positionOf(sid, env.vault.address).call() == amount
    assert v.budgetSpent(2).call() == leg[6]  # BUDGET_PREMIUM
    mark = mk.positionValue(sid, amount).call()
    seconds = expiry - env.now()
    assert mark / USDC == pytest.approx(reference(40_000.0, 36_000.0, seconds, 0.6, 0.0).put * 10, rel=1e-9)
    assert v.optionsValue().call() == mark
    assert v.totalAssets().call() == env.nav_from_parts()
    # The vault paid the ask and books the mid: NAV falls by the spread only.
    assert nav_before - v.totalAssets().call() == leg[6] - mark
    assert v.rebalanceEpoch().call() == 2
    formatted = env.w3.eth.get_transaction_receipt(receipt["transactionHash"])
    events = env.vault.events.OptionLegExecuted().process_receipt(formatted, errors=DISCARD)
    assert len(events) == 1 and events[0]["args"]["premium"] == leg[6] and events[0]["args"]["seriesId"] == sid


def test_total_assets_moves_with_the_mark(env: Env) -> None:
    v, mk = env.vault.functions, env.market.functions
    strike, expiry, amount = 38_000 * WAD, env.now() + 14 * DAY, 20 * WAD
    env.rebalance([], [put_leg(env, strike, expiry, amount)])
    sid = v.openSeries().call()[0]
    nav0, spot0, mark0 = v.totalAssets().call(), env.spot_value(), mk.positionValue(sid, amount).call()
    env.push_all(prices=(36_000.0, 3_000.0, 100.0))  # BTC −10%
    nav1, spot1, mark1 = v.totalAssets().call(), env.spot_value(), mk.positionValue(sid, amount).call()
    assert mark1 > mark0 and spot1 < spot0
    assert nav1 - nav0 == (spot1 - spot0) + (mark1 - mark0)
    assert nav1 == env.nav_from_parts()
    env.push_all(prices=(36_000.0, 3_000.0, 100.0), vols=(0.9, 0.8, 1.0))  # BTC implied vol up
    assert mk.positionValue(sid, amount).call() > mark1
    assert v.totalAssets().call() - nav1 == mk.positionValue(sid, amount).call() - mark1


def test_premium_above_the_fair_bound_is_refused(env: Env) -> None:
    v, mk = env.vault.functions, env.market.functions
    strike, expiry, amount = 36_000 * WAD, env.now() + 30 * DAY, 5 * WAD
    _, fair = mk.quote(env.tokens[0].address, strike, expiry, False, amount, True).call()
    bound = fair * (BPS + v.maxPremiumBps().call()) // BPS
    # At the bound exactly the leg passes the check (the market charges its ask, below the bound).
    fn = v.rebalanceWithOptions([], [put_leg(env, strike, expiry, amount, bound)], 0, v.rebalanceEpoch().call(), env.now() + 3600)
    assert call_raw(env.w3, {"from": env.keeper, "to": fn.address, "data": fn._encode_transaction_data()})[0]
    err = env.call_rebalance_error([], [put_leg(env, strike, expiry, amount, bound + 1)])
    assert err.name == "PremiumAboveFairBound" and err.args == (0, bound + 1, bound)


def test_selling_below_the_fair_bound_is_refused_and_a_sell_closes_the_position(env: Env) -> None:
    v, mk = env.vault.functions, env.market.functions
    strike, expiry, amount = 40_000 * WAD, env.now() + 30 * DAY, 5 * WAD
    env.rebalance([], [put_leg(env, strike, expiry, amount)])
    _, fair = mk.quote(env.tokens[0].address, strike, expiry, False, amount, False).call()
    bound = -(-fair * (BPS - v.maxPremiumBps().call()) // BPS)
    err = env.call_rebalance_error([], [sell_leg(env, strike, expiry, amount, bound - 1)])
    assert err.name == "PremiumBelowFairBound" and err.args == (0, bound - 1, bound)
    # The market's bid (fair − 1%) is within the vault's 3% bound: sell everything back.
    env.freeze()
    leg = sell_leg(env, strike, expiry, amount)
    cash = env.base.functions.balanceOf(env.vault.address).call()
    env.rebalance([], [leg])
    assert env.base.functions.balanceOf(env.vault.address).call() == cash + leg[6]
    assert v.openSeries().call() == [] and v.optionsValue().call() == 0


def test_premium_budget_per_rolling_window_is_enforced(env: Env) -> None:
    v, mk = env.vault.functions, env.market.functions
    strike, expiry, amount = 36_000 * WAD, env.now() + 30 * DAY, 10 * WAD
    period = 7 * DAY
    env.tx.transact(env.owner, v.setOptionLimits(v.maxPremiumBps().call(), 10, period, 8))  # 0.1% of NAV in any week
    nav = v.totalAssets().call()
    budget = nav * 10 // BPS
    leg = put_leg(env, strike, expiry, amount)
    assert leg[6] > budget
    # The premium actually charged (the market's ask at execution) is what the budget counts.
    env.freeze()
    err = env.call_rebalance_error([], [put_leg(env, strike, expiry, amount)])
    assert err.name == "PremiumBudgetExceeded" and err.args == (leg[6], budget)
    # A smaller buy fits; a second one in the same window adds up and is refused.
    small = amount * budget * 6 // (leg[6] * 10)  # ≈ 60% of the budget
    first = put_leg(env, strike, expiry, small)
    assert first[6] * 2 > budget >= first[6]
    env.rebalance([], [first])
    spent = v.budgetSpent(2).call()
    paid_at = env.now()
    assert spent == first[6]
    env.freeze()
    second = put_leg(env, strike, expiry, small)
    err = env.call_rebalance_error([], [second])
    assert err.name == "PremiumBudgetExceeded" and err.args[0] == spent + second[6]
    # Still counted a full period later (the window slides: no reset at a period boundary)...
    width = -(-period // 8)  # BUDGET_BUCKETS buckets per window
    env.warp(paid_at + period)
    env.push_all()
    assert v.budgetSpent(2).call() == spent
    # ...and gone once its bucket has left the window (at most one bucket width after that).
    env.warp(paid_at - paid_at % width + 9 * width)
    env.push_all()
    assert v.budgetSpent(2).call() == 0
    env.rebalance([], [put_leg(env, strike, expiry, small)])


def test_open_series_cap_is_enforced(env: Env) -> None:
    v = env.vault.functions
    env.tx.transact(env.owner, v.setOptionLimits(v.maxPremiumBps().call(), 200, 30 * DAY, 1))
    expiry = env.now() + 30 * DAY
    legs = [put_leg(env, 36_000 * WAD, expiry, WAD), put_leg(env, 34_000 * WAD, expiry, WAD)]
    err = env.call_rebalance_error([], legs)
    assert err.name == "TooManyOpenSeries" and err.args == (2, 1)
    env.rebalance([], legs[:1])
    err = env.call_rebalance_error([], [put_leg(env, 34_000 * WAD, expiry, WAD)])
    assert err.name == "TooManyOpenSeries"
    # Adding to the held series is fine.
    env.rebalance([], [put_leg(env, 36_000 * WAD, expiry, WAD)])
    assert len(v.openSeries().call()) == 1


def test_turnover_counts_option_fair_value(env: Env) -> None:
    v, mk = env.vault.functions, env.market.functions
    strike, expiry, amount = 36_000 * WAD, env.now() + 30 * DAY, 10 * WAD
    _, fair = mk.quote(env.tokens[0].address, strike, expiry, False, amount, True).call()
    nav = v.totalAssets().call()
    turnover = -(-fair * BPS // nav)
    env.tx.transact(env.owner, v.setLimits(100, turnover - 1, 200))
    err = env.call_rebalance_error([], [put_leg(env, strike, expiry, amount)])
    assert err.name == "TurnoverCapExceeded" and err.args == (turnover, turnover - 1)


def _expire(env: Env, expiry: int, btc_price: float) -> int:
    env.warp(expiry - 3600)
    env.push_all(prices=(btc_price, 3_000.0, 100.0))
    round_id = env.feeds[0].functions.latestRound().call()
    env.warp(expiry + 60)
    return round_id


@pytest.mark.parametrize(("settle_price", "payoff"), [(33_000.0, 3_000), (39_000.0, 0)])
def test_expired_positions_settle_through_anyone(env: Env, settle_price: float, payoff: int) -> None:
    v, mk = env.vault.functions, env.market.functions
    strike, expiry, amount = 36_000 * WAD, env.now() + 10 * DAY, 3 * WAD
    env.rebalance([], [put_leg(env, strike, expiry, amount)])
    sid = v.openSeries().call()[0]
    round_id = _expire(env, expiry, settle_price)
    # After expiry and before settlement the mark is the intrinsic value at the latest price.
    assert mk.positionValue(sid, amount).call() == payoff * USDC * 3
    nav = v.totalAssets().call()
    cash = env.base.functions.balanceOf(env.vault.address).call()
    env.tx.transact(env.bob, v.settleOption(sid, round_id))
    assert env.base.functions.balanceOf(env.vault.address).call() == cash + payoff * USDC * 3
    assert v.openSeries().call() == [] and v.totalAssets().call() == nav
    err = env.error(v.settleOption(sid, round_id), env.bob)
    assert err.name == "NotOpenSeries"


def test_a_redeeming_depositor_gets_their_fair_share_of_the_option_marks(env: Env) -> None:
    v, mk = env.vault.functions, env.market.functions
    env.rebalance([], [put_leg(env, 38_000 * WAD, env.now() + 30 * DAY, 15 * WAD)])
    env.push_all(prices=(35_000.0, 3_000.0, 100.0))  # the puts gain
    assert v.optionsValue().call() > 0
    shares = v.balanceOf(env.bob).call() // 3
    nav, supply = v.totalAssets().call(), v.totalSupply().call()
    assert nav == env.nav_from_parts()
    gross = shares * (nav + 1) // (supply + VIRTUAL_SHARES)  # ERC-4626 floor with virtual shares
    fee = v.entryExitFeeBps().call()
    expected = gross - -(-gross * fee // (BPS + fee))  # less the exit fee (rounded up), which stays in the vault
    without_options = shares * (nav - v.optionsValue().call() + 1) // (supply + VIRTUAL_SHARES)
    assert expected > without_options - -(-without_options * fee // (BPS + fee))
    before = env.base.functions.balanceOf(env.bob).call()
    env.freeze()
    env.tx.transact(env.bob, v.redeem(shares, env.bob, env.bob))
    assert env.base.functions.balanceOf(env.bob).call() - before == expected
    # Those who stay keep the same value per share (rounding in the vault's favour).
    assert v.totalAssets().call() * (supply + VIRTUAL_SHARES) >= nav * (v.totalSupply().call() + VIRTUAL_SHARES)


def test_plain_rebalance_and_access_control_are_unchanged(env: Env) -> None:
    v = env.vault.functions
    env.rebalance([], [put_leg(env, 36_000 * WAD, env.now() + 30 * DAY, 2 * WAD)])
    # The swap-only entry point still trades, with the options marked in its NAV checks.
    amount_in = 10 * WAD
    leg = (env.tokens[0].address, env.base.address, amount_in, amount_in * 40_000 * USDC // WAD * 9950 // BPS)
    env.tx.transact(env.keeper, v.rebalance([leg], 0, v.rebalanceEpoch().call(), env.now() + 3600))
    assert v.totalAssets().call() == env.nav_from_parts()
    with pytest.raises(TransactionFailedError, match="AccessControlUnauthorizedAccount"):
        env.rebalance([], [put_leg(env, 36_000 * WAD, env.now() + 30 * DAY, WAD)], sender=env.alice)
    err = env.call_rebalance_error([], [])
    assert err.name == "InvalidOptionLegCount" and err.args == (0, 8)
    bad = put_leg(env, 36_000 * WAD, env.now() + 30 * DAY, WAD)
    err = env.call_rebalance_error([], [bad[:5] + (0,) + bad[6:]])
    assert err.name == "InvalidOptionLeg"
    # The market cannot be swapped out while a position is open.
    err = env.error(v.setOptionMarket(env.alice), env.owner)
    assert err.name == "OptionPositionsOpen" and err.args == (1,)


def test_swap_and_option_legs_in_one_rebalance(env: Env) -> None:
    v = env.vault.functions
    amount_in = 100_000 * USDC
    fair_out = amount_in * 10 ** (18 + 8) // (price_to_answer(3_000.0) * USDC)
    swap = (env.base.address, env.tokens[1].address, amount_in, fair_out * 9950 // BPS)
    expiry = env.now() + 30 * DAY
    legs = [put_leg(env, 2_700 * WAD, expiry, 30 * WAD, i=1), put_leg(env, 36_000 * WAD, expiry, 2 * WAD)]
    env.rebalance([swap], legs)
    assert env.tokens[1].functions.balanceOf(env.vault.address).call() >= fair_out * 9950 // BPS
    assert len(v.openSeries().call()) == 2
    assert v.totalAssets().call() == env.nav_from_parts()


def test_a_third_party_exercise_for_the_vault_keeps_the_books_right(env: Env) -> None:
    v, mk = env.vault.functions, env.market.functions
    strike, expiry, amount = 36_000 * WAD, env.now() + 10 * DAY, 2 * WAD  # 10 days: a 5-day put asks ~25 % over fair with the feed steps, beyond the premium bound
    env.rebalance([], [put_leg(env, strike, expiry, amount)])
    sid = v.openSeries().call()[0]
    round_id = _expire(env, expiry, 30_000.0)
    nav = v.totalAssets().call()
    env.tx.transact(env.alice, mk.settle(sid, round_id))
    env.tx.transact(env.alice, mk.exercise(sid, env.vault.address))  # paid to the vault, not to alice
    assert v.totalAssets().call() == nav  # the mark became cash, wei for wei
    env.tx.transact(env.bob, v.settleOption(sid, round_id))  # closes the emptied position
    assert v.openSeries().call() == [] and v.totalAssets().call() == nav


def test_a_market_refusal_is_wrapped_with_the_leg_index(env: Env) -> None:
    strike, expiry = 36_000 * WAD, env.now() + 30 * DAY
    env.rebalance([], [put_leg(env, strike, expiry, WAD)])
    err = env.call_rebalance_error([], [sell_leg(env, strike, expiry, 2 * WAD)])
    assert err.name == "OptionLegFailed" and err.args[0] == 0
    inner = decode_revert(err.args[1])
    assert inner.name == "InsufficientPosition" and inner.args[1:] == (WAD, 2 * WAD)
