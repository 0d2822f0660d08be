"""Attacks on RiskParityVault from the security review, performed on Anvil against the real Uniswap V3.

Each test runs the attack as an attacker would (real swaps that move the pools, a keeper key in the wrong
hands, donations, deposits and in-kind redemptions) and shows it no longer pays: the loss stops at the
vault's budget, the attacker's profit after fees is ≤ 0, or the call reverts with the vault's custom error.
Numbers measured are printed (``pytest -s``).

* M-4 rolling budgets: a compromised keeper with a pool mover (NAV loss, turnover), and the premium budget
  straddling a period boundary or reset by a period change.
* M-5 stale feeds: a 1-wei donation of a stale-feed asset, feed replacement, views while stale.
* M-2 oracle-lag arbitrage through deposit → redeemInKind → Uniswap.
* Unsolicited option positions and the open-series cap.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from conftest import USDC, System

from keeper.chain import call_raw, decode_revert, dev_accounts, rpc
from keeper.deployment import MAX_UINT256, POOL_FEE, price_to_answer, sqrt_price_x96
from keeper.errors import TransactionFailedError

BPS = 10_000
NAV_LOSS, TURNOVER, PREMIUM = 0, 1, 2  # the vault's BUDGET_* indexes
MALLORY = dev_accounts()[7]


# --------------------------------------------------------------------------------------------- helpers


@dataclass
class PoolMover:
    """An attacker's account that moves a pool to a chosen price with real swaps and keeps its own books."""

    chain: System
    account: str

    @classmethod
    def funded(cls, chain: System, usd: float = 100_000_000) -> PoolMover:
        tx, owner = chain.tx, chain.owner
        tx.transact(owner, chain.base.functions.mint(MALLORY, int(usd * USDC)))
        tx.transact(MALLORY, chain.base.functions.approve(chain.deployment.swap_router, MAX_UINT256))
        tx.transact(MALLORY, chain.base.functions.approve(chain.vault.address, MAX_UINT256))
        for token, feed in zip(chain.tokens, chain.feeds):
            answer = feed.functions.latestRoundData().call()[1]
            tx.transact(owner, token.functions.mint(MALLORY, int(usd * USDC) * 10**20 // answer))
            tx.transact(MALLORY, token.functions.approve(chain.deployment.swap_router, MAX_UINT256))
        return cls(chain, MALLORY)

    def swap(self, token_in: str, token_out: str, amount_in: int, limit: int = 0) -> None:
        router = self.chain.arbitrageur.router
        self.chain.tx.transact(
            self.account,
            router.functions.exactInputSingle((token_in, token_out, POOL_FEE, self.account, 2**63, amount_in, 0, limit)),
        )

    def move(self, i: int, answer: int) -> None:
        """Swaps so asset ``i``'s pool price equals ``answer`` (feed units)."""
        asset = self.chain.deployment.assets[i]
        pool = self.chain.arbitrageur.pools[asset.token]
        base = self.chain.base.address
        risk0 = int(asset.token, 16) < int(base, 16)
        target = sqrt_price_x96(answer, risk0)
        current = pool.functions.slot0().call()[0]
        if current == target:
            return
        sell_risk = (current > target) == risk0
        token = self.chain.tokens[i]
        if sell_risk:
            self.swap(asset.token, base, token.functions.balanceOf(self.account).call(), target)
        else:
            self.swap(base, asset.token, self.chain.base.functions.balanceOf(self.account).call(), target)

    def value(self) -> int:
        """Base balance plus every risk balance at its oracle price, base units."""
        total = self.chain.base.functions.balanceOf(self.account).call()
        for token, feed in zip(self.chain.tokens, self.chain.feeds):
            total += token.functions.balanceOf(self.account).call() * feed.functions.latestRoundData().call()[1] * USDC // 10**26
        return total


def _answer(chain: System, i: int) -> int:
    return chain.feeds[i].functions.latestRoundData().call()[1]


def _now(chain: System) -> int:
    return chain.w3.eth.get_block("latest")["timestamp"]


def _try(chain: System, fn: Any, sender: str) -> Any:
    """``None`` if ``fn`` would succeed, else its decoded custom error."""
    ok, data = call_raw(chain.w3, {"from": sender, "to": fn.address, "data": fn._encode_transaction_data()})
    return None if ok else decode_revert(data)


def _rebalance(chain: System, legs: list) -> Any:
    v = chain.vault.functions
    return v.rebalance(legs, 0, v.rebalanceEpoch().call(), _now(chain) + 600)


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


def _drain(chain: System, mover: PoolMover, rounds: int, leg_usd: float) -> tuple[int, Any]:
    """The M-4 attack: the compromised keeper alternates buying and selling BTC; before each leg the pool
    mover pushes the pool against the vault as far as the per-call slippage bound lets the leg pass (leg
    output at most ``maxSlippageBps`` under the oracle), then pushes it back. Returns the rebalances that
    went through and the error that stopped the drain (``None`` if none did)."""
    v = chain.vault.functions
    btc, base = chain.tokens[0].address, chain.base.address
    slip = v.maxSlippageBps().call()
    done = 0
    for k in range(rounds):
        answer = _answer(chain, 0)
        if k % 2 == 0:  # buy BTC dear
            amount_in = int(leg_usd * USDC)
            fair = amount_in * 10**26 // (answer * USDC)
            leg, sign = (base, btc, amount_in, _ceil(fair * (BPS - slip), BPS)), 1
        else:  # sell all the BTC cheap
            amount_in = chain.tokens[0].functions.balanceOf(chain.vault.address).call()
            fair = amount_in * answer * USDC // 10**26
            leg, sign = (btc, base, amount_in, _ceil(fair * (BPS - slip), BPS)), -1
        err = None
        for off_bps in (60, 45, 30, 15, 0):
            mover.move(0, answer * (BPS + sign * off_bps) // BPS)
            err = _try(chain, _rebalance(chain, [leg]), chain.keeper)
            if err is None or err.name != "LegSwapFailed":
                break
        if err is not None:
            mover.move(0, answer)
            return done, err
        chain.tx.transact(chain.keeper, _rebalance(chain, [leg]))
        mover.move(0, answer)  # and back: the attacker pockets what the vault lost
        done += 1
    return done, None


# ----------------------------------------------------------------------------------- M-4 rolling budgets


def test_repeated_rebalance_drain_stops_at_the_rolling_nav_loss_budget(chain: System) -> None:
    v = chain.vault.functions
    chain.deposit(chain.alice, 200_000)
    mover = PoolMover.funded(chain)
    nav0 = v.totalAssets().call()
    # Only the NAV-loss budget (default 500 bps of NAV per day) is under test here: turnover to its cap.
    chain.tx.transact(chain.owner, v.setBudget(TURNOVER, 200_000, 86_400))

    # Before: with the NAV-loss budget at its cap (the per-call bounds alone), the drain keeps paying.
    snapshot = rpc(chain.w3, "evm_snapshot", [])
    chain.tx.transact(chain.owner, v.setBudget(NAV_LOSS, 5_000, 86_400))
    attacker0 = mover.value()
    done, err = _drain(chain, mover, 20, 150_000)
    loss_unbounded = nav0 - v.totalAssets().call()
    profit_unbounded = mover.value() - attacker0
    print(f"\nper-call bounds only: {done} rebalances, vault lost {loss_unbounded / USDC:,.2f} USD "
          f"({loss_unbounded * BPS / nav0:.0f} bps), attacker made {profit_unbounded / USDC:,.2f} USD")
    assert err is None and done == 20
    assert loss_unbounded > nav0 * 500 // BPS and profit_unbounded > 0
    assert rpc(chain.w3, "evm_revert", [snapshot])

    # After: the default rolling budget stops the same drain, with the spent and budget in the error.
    assert (v.budgetBps(NAV_LOSS).call(), v.budgetPeriod(NAV_LOSS).call()) == (500, 86_400)
    attacker0 = mover.value()
    done, err = _drain(chain, mover, 40, 150_000)
    nav = v.totalAssets().call()
    loss = nav0 - nav
    print(f"rolling budget: {done} rebalances, vault lost {loss / USDC:,.2f} USD ({loss * BPS / nav0:.0f} bps), "
          f"attacker made {(mover.value() - attacker0) / USDC:,.2f} USD; stopped by {err.name}{err.args}")
    assert err is not None and err.name == "NavLossBudgetExceeded"
    spent, budget = err.args
    assert budget == nav * 500 // BPS and spent > budget
    assert loss == v.budgetSpent(NAV_LOSS).call() <= nav0 * 500 // BPS
    assert 0 < done < 20
    # The window slides: a day and one bucket later the budget is available again.
    rpc(chain.w3, "evm_increaseTime", [86_400 + 86_400 // 8])
    rpc(chain.w3, "evm_mine", [])
    assert v.budgetSpent(NAV_LOSS).call() == 0


def test_turnover_budget_caps_churn_over_any_window(chain: System) -> None:
    v = chain.vault.functions
    chain.deposit(chain.alice, 200_000)
    chain.tx.transact(chain.owner, v.setBudget(TURNOVER, 20_000, 86_400))  # 2× NAV per day
    btc, base = chain.tokens[0].address, chain.base.address
    traded = 0
    for _ in range(12):  # 60 % of NAV per rebalance, bought then sold back at the pool price
        nav = v.totalAssets().call()
        answer = _answer(chain, 0)
        amount_in = 120_000 * USDC
        buy = (base, btc, amount_in, _ceil(amount_in * 10**26 // (answer * USDC) * 9_900, BPS))
        err = _try(chain, _rebalance(chain, [buy]), chain.keeper)
        if err is not None:
            break
        chain.tx.transact(chain.keeper, _rebalance(chain, [buy]))
        traded += amount_in
        held = chain.tokens[0].functions.balanceOf(chain.vault.address).call()
        value = held * answer * USDC // 10**26
        sell = (btc, base, held, _ceil(value * 9_900, BPS))
        nav = v.totalAssets().call()
        err = _try(chain, _rebalance(chain, [sell]), chain.keeper)
        if err is not None:
            break
        chain.tx.transact(chain.keeper, _rebalance(chain, [sell]))
        traded += value
    assert err is not None and err.name == "TurnoverBudgetExceeded"
    spent, budget = err.args
    assert budget == nav * 20_000 // BPS and spent > budget
    assert traded == v.budgetSpent(TURNOVER).call() <= 2 * 200_000 * USDC
    print(f"\nturnover stopped at {traded / USDC:,.0f} USD traded ({err.name}{err.args})")


def test_rolling_budget_holds_over_every_window_of_the_period(chain: System) -> None:
    """Charges at random times and sizes across bucket edges: whatever went through, no interval of one
    period holds more than the budget (here turnover, 100 bps of NAV per hour, buckets of 450 s)."""
    import random

    v = chain.vault.functions
    chain.deposit(chain.alice, 100_000)
    period = 3_600
    chain.tx.transact(chain.owner, v.setBudget(TURNOVER, 100, period))
    rng = random.Random(7)
    charged: list[tuple[int, int]] = []  # (block time, traded value) of every rebalance that went through
    refused = 0
    for _ in range(36):
        rpc(chain.w3, "evm_increaseTime", [rng.randrange(0, 700)])
        rpc(chain.w3, "evm_mine", [])
        amount_in = rng.randrange(100, 450) * USDC
        fair = amount_in * 10**26 // (_answer(chain, 0) * USDC)
        leg = (chain.base.address, chain.tokens[0].address, amount_in, _ceil(fair * 9_900, BPS))
        err = _try(chain, _rebalance(chain, [leg]), chain.keeper)
        if err is not None:
            assert err.name == "TurnoverBudgetExceeded" and err.args[0] > err.args[1]
            refused += 1
            continue
        receipt = chain.tx.transact(chain.keeper, _rebalance(chain, [leg]))
        charged.append((chain.w3.eth.get_block(receipt["blockNumber"])["timestamp"], amount_in))
    assert refused > 0 and len(charged) > 10
    # Every interval of length ≤ period starts, at its worst, at a charge: check each such interval.
    nav_cap = 100_000 * USDC * 100 // BPS  # NAV only fell (pool fees), so each check's budget was ≤ this
    for start, _ in charged:
        inside = sum(a for t, a in charged if start <= t < start + period)
        assert inside <= nav_cap
    print(f"\n{len(charged)} charges, {refused} refused; max over any hour "
          f"{max(sum(a for t, a in charged if s <= t < s + period) for s, _ in charged) / USDC:,.0f} USD, "
          f"budget {nav_cap / USDC:,.0f} USD")


def test_budget_spent_counts_exactly_the_current_and_eight_previous_buckets(chain: System) -> None:
    """The packed ring (two buckets per slot) against a plain model: at every probe, ``budgetSpent`` is the sum of
    the charges whose bucket id (block time // width) is within 8 of the current one. Gaps of up to ~6 pairs make
    slots be reused by a later pair and skip pairs entirely, so a stale pair in a slot would show."""
    import random

    v = chain.vault.functions
    chain.deposit(chain.alice, 100_000)
    period = 3_600
    width = -(-period // 8)  # ceil, as the vault
    chain.tx.transact(chain.owner, v.setBudget(TURNOVER, 200_000, period))  # never refuses here
    rng = random.Random(11)
    charged: list[tuple[int, int]] = []

    def model(now: int) -> int:
        return sum(a for t, a in charged if t // width >= now // width - 8)

    for _ in range(30):
        rpc(chain.w3, "evm_increaseTime", [rng.choice([0, 1, width - 1, width, 2 * width + 7, rng.randrange(0, 5_400)])])
        rpc(chain.w3, "evm_mine", [])
        now = chain.w3.eth.get_block("latest")["timestamp"]
        assert v.budgetSpent(TURNOVER).call() == model(now)
        amount_in = rng.randrange(10, 200) * USDC
        fair = amount_in * 10**26 // (_answer(chain, 0) * USDC)
        leg = (chain.base.address, chain.tokens[0].address, amount_in, _ceil(fair * 9_900, BPS))
        receipt = chain.tx.transact(chain.keeper, _rebalance(chain, [leg]))
        charged.append((chain.w3.eth.get_block(receipt["blockNumber"])["timestamp"], amount_in))
        assert v.budgetSpent(TURNOVER).call() == model(charged[-1][0])
    assert len({t // width for t, _ in charged}) > 15  # many buckets, most of them in different pairs


def test_budget_admin_bounds_events_and_period_change_keeps_spending(chain: System) -> None:
    v = chain.vault.functions
    with pytest.raises(TransactionFailedError, match="AccessControlUnauthorizedAccount"):
        chain.tx.transact(chain.keeper, v.setBudget(NAV_LOSS, 100, 86_400))
    assert chain.call_error(v.setBudget(NAV_LOSS, 5_001, 86_400), chain.owner).args == (5_001, 5_000)
    assert chain.call_error(v.setBudget(TURNOVER, 200_001, 86_400), chain.owner).args == (200_001, 200_000)
    assert chain.call_error(v.setBudget(PREMIUM, 10, 86_400), chain.owner).args == (PREMIUM, TURNOVER)
    err = chain.call_error(v.setBudget(NAV_LOSS, 100, 60), chain.owner)
    assert err.name == "LimitOutOfRange" and err.args == (60, 365 * 86_400)
    chain.deposit(chain.alice, 100_000)
    assert chain.make_keeper(drift_threshold_bps=0).run_once().status == "rebalanced"
    loss, traded = v.budgetSpent(NAV_LOSS).call(), v.budgetSpent(TURNOVER).call()
    assert loss > 0 and traded > 0
    receipt = chain.tx.transact(chain.owner, v.setBudget(NAV_LOSS, 300, 7 * 86_400))
    logs = chain.vault.events.BudgetSet().process_receipt(chain.w3.eth.get_transaction_receipt(receipt["transactionHash"]))
    assert [dict(e["args"]) for e in logs] == [{"kind": NAV_LOSS, "budgetBps": 300, "period": 7 * 86_400}]
    # Changing the period keeps what was spent (carried into the new window's current bucket).
    assert v.budgetSpent(NAV_LOSS).call() == loss
    chain.tx.transact(chain.owner, v.setBudget(NAV_LOSS, 300, 3_600))
    assert v.budgetSpent(NAV_LOSS).call() == loss
    assert v.budgetSpent(TURNOVER).call() == traded
    # A zero budget refuses any loss at all (here the pool fee of a buy at the oracle price).
    chain.tx.transact(chain.owner, v.setBudget(NAV_LOSS, 0, 3_600))
    chain.arbitrageur.align(chain.tokens[0].address, _answer(chain, 0))
    amount_in = 2_000 * USDC  # within the idle cash buffer
    fair = amount_in * 10**26 // (_answer(chain, 0) * USDC)
    leg = (chain.base.address, chain.tokens[0].address, amount_in, _ceil(fair * 9_900, BPS))
    err = _try(chain, _rebalance(chain, [leg]), chain.keeper)
    assert err is not None and err.name == "NavLossBudgetExceeded"
    assert err.args[0] > loss and err.args[1] == 0


# ------------------------------------------------------------------------------------- M-5 stale feeds


def _stale_except(chain: System, keep_fresh: tuple[int, ...]) -> None:
    """Moves time past the heartbeat and refreshes only the feeds in ``keep_fresh``."""
    heartbeat = chain.vault.functions.riskAssetConfig(chain.tokens[0].address).call()[1]
    rpc(chain.w3, "evm_increaseTime", [heartbeat + 60])
    rpc(chain.w3, "evm_mine", [])
    for i in keep_fresh:
        chain.tx.transact(chain.owner, chain.feeds[i].functions.pushAnswer(_answer(chain, i)))


def test_one_wei_donation_of_a_stale_feed_asset_no_longer_blocks_delisting(chain: System) -> None:
    v = chain.vault.functions
    chain.deposit(chain.alice, 100_000)
    mover = PoolMover.funded(chain)
    _stale_except(chain, (0, 1))  # SOL's feed dies; the vault holds no SOL, so it still works
    assert v.totalAssets().call() == 100_000 * USDC
    assert v.maxDeposit(chain.bob).call() == MAX_UINT256
    # The attack: 1 wei of SOL makes the stale feed count.
    sol = chain.tokens[2]
    chain.tx.transact(mover.account, sol.functions.transfer(chain.vault.address, 1))
    assert chain.call_error(v.totalAssets(), chain.alice).name == "StalePrice"
    # The ERC-4626 views say the truth instead of reverting (maxDeposit said "unlimited" before).
    for view in (v.maxDeposit(chain.bob), v.maxMint(chain.bob), v.maxWithdraw(chain.alice), v.maxRedeem(chain.alice)):
        assert view.call() == 0
    assert chain.call_error(v.deposit(USDC, chain.bob), chain.bob).name == "StalePrice"
    # The admin delists SOL despite the dust; the vault is back at once.
    with pytest.raises(TransactionFailedError, match="AccessControlUnauthorizedAccount"):
        chain.tx.transact(chain.keeper, v.delistRiskAsset(sol.address))
    chain.tx.transact(chain.owner, v.delistRiskAsset(sol.address))
    assert sol.address not in v.riskAssets().call()
    assert v.totalAssets().call() == 100_000 * USDC  # the wei is valued at zero
    assert v.maxDeposit(chain.bob).call() == MAX_UINT256
    chain.deposit(chain.bob, 1_000)
    chain.tx.transact(chain.alice, v.redeem(v.maxRedeem(chain.alice).call(), chain.alice, chain.alice))
    err = chain.call_error(v.delistRiskAsset(sol.address), chain.owner)
    assert err.name == "AssetNotListed"


def test_feed_replacement_restores_a_vault_holding_a_stale_feed_asset(chain: System) -> None:
    v = chain.vault.functions
    chain.deposit(chain.alice, 100_000)
    assert chain.make_keeper(drift_threshold_bps=0).run_once().status == "rebalanced"
    btc = chain.tokens[0].address
    _stale_except(chain, (1, 2))  # BTC's feed dies while the vault holds BTC
    assert chain.call_error(v.totalAssets(), chain.alice).name == "StalePrice"
    for view in (v.maxDeposit(chain.bob), v.maxMint(chain.bob), v.maxWithdraw(chain.alice), v.maxRedeem(chain.alice)):
        assert view.call() == 0
    # redeemInKind never needed prices and still works.
    chain.tx.transact(chain.alice, v.redeemInKind(10**12, chain.alice, chain.alice))
    # The admin points BTC at a working feed.
    from keeper.build import load_artifacts

    feed = chain.tx.deploy(chain.owner, load_artifacts()["PushPriceFeed"], 8, "BTC / USD (new)", chain.owner)
    answer = chain.feeds[0].functions.latestRoundData().call()[1]
    chain.tx.transact(chain.owner, feed.functions.pushAnswer(answer))
    with pytest.raises(TransactionFailedError, match="AccessControlUnauthorizedAccount"):
        chain.tx.transact(chain.keeper, v.setRiskAssetFeed(btc, feed.address, 86_400, 50))
    err = chain.call_error(v.setRiskAssetFeed(chain.alice, feed.address, 86_400, 50), chain.owner)
    assert err.name == "AssetNotListed"
    err = chain.call_error(v.setRiskAssetFeed(btc, feed.address, 86_400, 501), chain.owner)
    assert err.name == "LimitOutOfRange" and err.args == (501, 500)
    assert chain.call_error(v.setRiskAssetFeed(btc, feed.address, 0, 50), chain.owner).name == "AssetConfigInvalid"
    receipt = chain.tx.transact(chain.owner, v.setRiskAssetFeed(btc, feed.address, 86_400, 50))
    logs = chain.vault.events.RiskAssetFeedSet().process_receipt(chain.w3.eth.get_transaction_receipt(receipt["transactionHash"]))
    assert logs[0]["args"]["feed"] == feed.address and logs[0]["args"]["heartbeat"] == 86_400
    assert v.riskAssetConfig(btc).call()[0] == feed.address
    # Valued again with the new feed; deposits, withdrawals and the views work.
    _, balances = v.holdings().call()
    expected = balances[0] + sum(
        b * f.functions.latestRoundData().call()[1] * USDC // 10**26
        for b, f in zip(balances[1:], [feed, chain.feeds[1], chain.feeds[2]])
    )
    assert v.totalAssets().call() == expected
    assert v.maxDeposit(chain.bob).call() == MAX_UINT256
    chain.deposit(chain.bob, 1_000)
    chain.tx.transact(chain.alice, v.withdraw(v.maxWithdraw(chain.alice).call(), chain.alice, chain.alice))


def test_delisting_a_held_asset_writes_its_value_off_and_relisting_restores_it(chain: System) -> None:
    v = chain.vault.functions
    chain.deposit(chain.alice, 100_000)
    assert chain.make_keeper(drift_threshold_bps=0).run_once().status == "rebalanced"
    eth = chain.tokens[1]
    held = eth.functions.balanceOf(chain.vault.address).call()
    nav = v.totalAssets().call()
    value = held * _answer(chain, 1) * USDC // 10**26
    chain.tx.transact(chain.owner, v.delistRiskAsset(eth.address))
    assert v.totalAssets().call() == nav - value
    # Not paid in kind while delisted: it stays in the vault.
    before = eth.functions.balanceOf(chain.alice).call()
    chain.tx.transact(chain.alice, v.redeemInKind(10**12, chain.alice, chain.alice))
    assert eth.functions.balanceOf(chain.alice).call() == before
    assert eth.functions.balanceOf(chain.vault.address).call() == held
    chain.tx.transact(chain.owner, v.listRiskAsset(eth.address, chain.feeds[1].address, 86_400, POOL_FEE, 50))
    assert v.totalAssets().call() > nav - value


# ------------------------------------------------------------------------- M-2 oracle-lag arbitrage


def _lag_arbitrage(chain: System, mover: PoolMover, deposit_usd: float) -> int:
    """Deposit base → redeemInKind → sell every asset received on Uniswap; returns the profit, base units."""
    v = chain.vault.functions
    before = chain.base.functions.balanceOf(mover.account).call()
    held = [t.functions.balanceOf(mover.account).call() for t in chain.tokens]
    chain.tx.transact(mover.account, v.deposit(int(deposit_usd * USDC), mover.account))
    chain.tx.transact(mover.account, v.redeemInKind(v.balanceOf(mover.account).call(), mover.account, mover.account))
    for token, h in zip(chain.tokens, held):
        got = token.functions.balanceOf(mover.account).call() - h
        if got:
            mover.swap(token.address, chain.base.address, got)
    return chain.base.functions.balanceOf(mover.account).call() - before


def test_oracle_lag_arbitrage_through_redeem_in_kind_no_longer_pays(chain: System) -> None:
    v = chain.vault.functions
    chain.deposit(chain.alice, 1_000_000)
    assert chain.make_keeper(drift_threshold_bps=0).run_once().status == "rebalanced"
    mover = PoolMover.funded(chain)
    lag_bps = 200
    # The market rises 2 % everywhere; the feeds (deviation threshold 2 %) have not updated yet.
    for i in range(3):
        chain.arbitrageur.align(chain.deployment.assets[i].token, _answer(chain, i) * (BPS + lag_bps) // BPS)
    snapshot = rpc(chain.w3, "evm_snapshot", [])

    # Before: no entry/exit fee (the feeds recorded with a zero threshold) — the round trip pays.
    for i, token in enumerate(chain.tokens):
        chain.tx.transact(chain.owner, v.setRiskAssetFeed(token.address, chain.feeds[i].address, 2 * 86_400, 0))
    chain.tx.transact(chain.owner, v.setEntryExitFee(0))
    profit_free = _lag_arbitrage(chain, mover, 1_000_000)
    assert rpc(chain.w3, "evm_revert", [snapshot])

    # After: the feeds are recorded with their 2 % threshold, which raises the fee to 200 bps.
    for i, token in enumerate(chain.tokens):
        chain.tx.transact(chain.owner, v.setRiskAssetFeed(token.address, chain.feeds[i].address, 2 * 86_400, lag_bps))
    assert v.entryExitFeeBps().call() == lag_bps
    nav_before = v.totalAssets().call()
    profit = _lag_arbitrage(chain, mover, 1_000_000)
    print(f"\nlag {lag_bps} bps, $1M deposit on a $1M vault: profit without fee {profit_free / USDC:,.2f} USD, "
          f"with the {lag_bps} bps fee {profit / USDC:,.2f} USD")
    assert profit_free > 0
    assert profit <= 0
    assert v.totalAssets().call() >= nav_before  # the remaining holders gained what the attacker paid


def test_entry_exit_fee_admin_bounds_and_exact_previews(chain: System) -> None:
    v = chain.vault.functions
    err = chain.call_error(v.setEntryExitFee(49), chain.owner)
    assert err.name == "FeeBelowDeviation" and err.args == (49, 50)
    err = chain.call_error(v.setEntryExitFee(501), chain.owner)
    assert err.name == "LimitOutOfRange" and err.args == (501, 500)
    with pytest.raises(TransactionFailedError, match="AccessControlUnauthorizedAccount"):
        chain.tx.transact(chain.keeper, v.setEntryExitFee(100))
    chain.tx.transact(chain.owner, v.setEntryExitFee(123))
    assert v.entryExitFeeBps().call() == 123
    chain.deposit(chain.bob, 333_333.333333)
    assert chain.make_keeper(drift_threshold_bps=0, cash_buffer_bps=3_000).run_once().status == "rebalanced"
    base = chain.base.functions
    for amount in (1, 999_999, 12_345_678_901):
        shares = v.previewDeposit(amount).call()
        s0 = v.balanceOf(chain.alice).call()
        chain.tx.transact(chain.alice, v.deposit(amount, chain.alice))
        assert v.balanceOf(chain.alice).call() - s0 == shares
    for shares in (1, 10**12 + 7, 987_654_321_012_345):
        cost = v.previewMint(shares).call()
        b0 = base.balanceOf(chain.alice).call()
        chain.tx.transact(chain.alice, v.mint(shares, chain.alice))
        assert b0 - base.balanceOf(chain.alice).call() == cost
    for assets in (1, 777_777, 5_000 * USDC):
        burn = v.previewWithdraw(assets).call()
        s0 = v.balanceOf(chain.alice).call()
        chain.tx.transact(chain.alice, v.withdraw(assets, chain.alice, chain.alice))
        assert s0 - v.balanceOf(chain.alice).call() == burn
    for shares in (1, 10**12 + 7, 3 * 10**15):
        pay = v.previewRedeem(shares).call()
        b0 = base.balanceOf(chain.alice).call()
        chain.tx.transact(chain.alice, v.redeem(shares, chain.alice, chain.alice))
        assert base.balanceOf(chain.alice).call() - b0 == pay
    # The max views are executable as stated, and one unit more is refused.
    max_w = v.maxWithdraw(chain.alice).call()
    assert chain.call_error(v.withdraw(max_w + 1, chain.alice, chain.alice), chain.alice).name == "ERC4626ExceededMaxWithdraw"
    chain.tx.transact(chain.alice, v.withdraw(max_w, chain.alice, chain.alice))
    max_r = v.maxRedeem(chain.bob).call()
    assert 0 < max_r < v.balanceOf(chain.bob).call()  # capped by idle cash
    chain.tx.transact(chain.bob, v.redeem(max_r, chain.bob, chain.bob))
    assert chain.base.functions.balanceOf(chain.vault.address).call() >= 0


# --------------------------------------------------------------- M-4 premium budget (options deployment)

WAD = 10**18
DAY = 86_400


@pytest.fixture(scope="module")
def options_env():
    from options_env import ACCOUNT_4, ACCOUNT_5, OptionsEnv, deploy_env

    env = deploy_env(200_000_000, 10_000_000, OptionsEnv)
    env.tx.transact(env.owner, env.base.functions.mint(ACCOUNT_4, 10_000_000 * USDC))
    env.tx.transact(ACCOUNT_4, env.base.functions.approve(env.vault.address, MAX_UINT256))
    env.tx.transact(ACCOUNT_4, env.vault.functions.deposit(1_500_000 * USDC, ACCOUNT_4))
    env.tx.transact(env.owner, env.base.functions.mint(ACCOUNT_5, 1_000_000 * USDC))
    env.tx.transact(ACCOUNT_5, env.base.functions.approve(env.market.address, MAX_UINT256))
    yield env
    env.stop()


@pytest.fixture
def opt(options_env):
    from options_env import reverted

    yield from reverted(options_env)


def _put(env: Any, strike: int, expiry: int, amount: int, is_buy: bool = True) -> tuple:
    token = env.tokens[0].address
    limit = env.market.functions.quote(token, strike, expiry, False, amount, is_buy).call()[0]
    return (token, strike, expiry, False, is_buy, amount, limit)


def _options_rebalance(env: Any, option_legs: list) -> Any:
    v = env.vault.functions
    return v.rebalanceWithOptions([], option_legs, 0, v.rebalanceEpoch().call(), env.now() + 3600)


def test_premium_budget_straddling_a_period_boundary_no_longer_doubles(opt: Any) -> None:
    v = opt.vault.functions
    period = 7 * DAY
    opt.tx.transact(opt.owner, v.setOptionLimits(v.maxPremiumBps().call(), 10, period, 8))  # 0.1 % of NAV in any week
    nav = v.totalAssets().call()
    budget = nav * 10 // BPS
    strike, amount = 36_000 * WAD, 10 * WAD
    boundary = (opt.now() // period + 1) * period  # where the old aligned periods restarted the counter
    expiry = boundary + 30 * DAY
    probe = _put(opt, strike, expiry, amount)
    small = amount * budget * 9 // (probe[6] * 10)  # ≈ 90 % of the budget
    # 10 s before the boundary: buy ≈ 90 % of the budget.
    opt.push_all(at=boundary - 16)
    opt.freeze()
    first = _put(opt, strike, expiry, small)
    assert budget * 8 // 10 < first[6] <= budget
    opt.tx.transact(opt.keeper, _options_rebalance(opt, [first]))
    assert opt.now() < boundary
    # 10 s after it: the same again. Aligned periods accepted it (≈ 180 % of the budget in 20 s).
    opt.warp(boundary + 10)
    opt.freeze()
    second = _put(opt, strike, expiry, small)
    err = opt.error(_options_rebalance(opt, [second]), opt.keeper)
    assert err.name == "PremiumBudgetExceeded"
    spent, refused_budget = err.args
    assert spent == first[6] + second[6] > refused_budget
    # Changing the period does not reset the spending either.
    opt.tx.transact(opt.owner, v.setOptionLimits(v.maxPremiumBps().call(), 10, 14 * DAY, 8))
    assert v.budgetSpent(PREMIUM).call() == first[6]
    opt.tx.transact(opt.owner, v.setOptionLimits(v.maxPremiumBps().call(), 10, 3_600, 8))
    assert v.budgetSpent(PREMIUM).call() == first[6]
    opt.freeze()
    err = opt.error(_options_rebalance(opt, [_put(opt, strike, expiry, small)]), opt.keeper)
    assert err.name == "PremiumBudgetExceeded" and err.args[0] > first[6]
    print(f"\nstraddle: {first[6] / USDC:,.2f} USD paid, second {second[6] / USDC:,.2f} USD refused "
          f"(budget {budget / USDC:,.2f} USD)")


def test_a_gifted_option_position_does_not_hold_a_series_in_the_cap(opt: Any) -> None:
    from options_env import ACCOUNT_5

    v, mk = opt.vault.functions, opt.market.functions
    opt.tx.transact(opt.owner, v.setOptionLimits(v.maxPremiumBps().call(), 200, 30 * DAY, 1))
    expiry = opt.now() + 30 * DAY
    opt.freeze()
    opt.tx.transact(opt.keeper, _options_rebalance(opt, [_put(opt, 36_000 * WAD, expiry, 2 * WAD)]))
    sid = mk.seriesId(opt.tokens[0].address, 36_000 * WAD, expiry, False).call()
    assert v.openSeries().call() == [sid] and v.ownOptionAmount(sid).call() == 2 * WAD
    # The attacker gifts the vault 1 wei of the same series ahead of the keeper's closing sell.
    opt.tx.transact(ACCOUNT_5, mk.buy(opt.tokens[0].address, 36_000 * WAD, expiry, False, 1, 10**6, opt.vault.address))
    assert mk.positionOf(sid, opt.vault.address).call() == 2 * WAD + 1
    opt.freeze()
    opt.tx.transact(opt.keeper, _options_rebalance(opt, [_put(opt, 36_000 * WAD, expiry, 2 * WAD, is_buy=False)]))
    # The vault sold all it bought: the series leaves the cap although 1 wei is still held.
    assert mk.positionOf(sid, opt.vault.address).call() == 1
    assert v.openSeries().call() == [] and v.ownOptionAmount(sid).call() == 0
    # So the keeper can open the next series under a cap of one.
    opt.freeze()
    opt.tx.transact(opt.keeper, _options_rebalance(opt, [_put(opt, 34_000 * WAD, expiry, WAD)]))
    assert len(v.openSeries().call()) == 1
    # A gift does not count toward the vault's own amount either: a second series is still over the cap.
    opt.freeze()
    err = opt.error(_options_rebalance(opt, [_put(opt, 32_000 * WAD, expiry, WAD)]), opt.keeper)
    assert err.name == "TooManyOpenSeries" and err.args == (2, 1)


# ------------------------------------------------------------------- management and performance fees

YEAR = 365 * DAY
FEE_RECIPIENT = dev_accounts()[8]
#: Explicit gas for accrueFees: Anvil may estimate it in a block at the last accrual's second (nothing due,
#: a cheap call) and mine it a second later (fees due: NAV priced, shares minted).
ACCRUE_GAS = 500_000


def _warp_and_refresh(chain: System, seconds: int, btc_factor: float = 1.0) -> None:
    rpc(chain.w3, "evm_increaseTime", [seconds])
    for i, feed in enumerate(chain.feeds):
        answer = _answer(chain, i)
        chain.tx.transact(chain.owner, feed.functions.pushAnswer(int(answer * btc_factor) if i == 0 else answer))


def _freeze(chain: System) -> None:
    """The next transaction is mined at the latest block's time (the time eth_call sees)."""
    rpc(chain.w3, "evm_setNextBlockTimestamp", [_now(chain)])


def test_fee_settings_are_admin_only_and_capped(chain: System) -> None:
    v = chain.vault.functions
    with pytest.raises(TransactionFailedError, match="AccessControlUnauthorizedAccount"):
        chain.tx.transact(chain.keeper, v.setFees(FEE_RECIPIENT, 100, 1_000))
    assert chain.call_error(v.setFees(FEE_RECIPIENT, 501, 0), chain.owner).args == (501, 500)
    assert chain.call_error(v.setFees(FEE_RECIPIENT, 0, 3_001), chain.owner).args == (3_001, 3_000)
    err = chain.call_error(v.setFees("0x" + "00" * 20, 100, 0), chain.owner)
    assert err.name == "InvalidFeeRecipient"
    receipt = chain.tx.transact(chain.owner, v.setFees(FEE_RECIPIENT, 100, 1_000))
    logs = chain.vault.events.FeesSet().process_receipt(chain.w3.eth.get_transaction_receipt(receipt["transactionHash"]))
    assert dict(logs[0]["args"]) == {"recipient": FEE_RECIPIENT, "managementFeeBps": 100, "performanceFeeBps": 1_000}
    assert (v.feeRecipient().call(), v.managementFeeBps().call(), v.performanceFeeBps().call()) == (FEE_RECIPIENT, 100, 1_000)


def test_management_fee_accrues_per_second_and_nobody_dodges_or_pays_twice(chain: System) -> None:
    v = chain.vault.functions
    chain.deposit(chain.alice, 1_000_000)
    chain.tx.transact(chain.owner, v.setFees(FEE_RECIPIENT, 200, 0))  # 2 % a year
    t0, supply0 = v.lastFeeAccrual().call(), v.totalSupply().call()
    _warp_and_refresh(chain, 30 * DAY)
    # Alice redeems a third after 30 days: her preview already counts the fee shares due, and is exact.
    _freeze(chain)
    shares = v.balanceOf(chain.alice).call() // 3
    preview = v.previewRedeem(shares).call()
    b0 = chain.base.functions.balanceOf(chain.alice).call()
    chain.tx.transact(chain.alice, v.redeem(shares, chain.alice, chain.alice))
    assert chain.base.functions.balanceOf(chain.alice).call() - b0 == preview
    t1 = v.lastFeeAccrual().call()
    due = supply0 * 200 * (t1 - t0) // (BPS * YEAR)
    assert t1 == _now(chain) and v.balanceOf(FEE_RECIPIENT).call() == due > 0
    # ≈ 2 % × 30/365 of NAV went to the recipient, in shares.
    fee_value = v.convertToAssets(due).call()
    assert fee_value == pytest.approx(1_000_000 * USDC * 0.02 * (t1 - t0) / YEAR, rel=1e-3)
    # Accruing again right after adds only the seconds since (no double charge)...
    supply1 = v.totalSupply().call()
    chain.tx.transact(chain.bob, v.accrueFees(), gas=ACCRUE_GAS)
    t2 = v.lastFeeAccrual().call()
    assert v.balanceOf(FEE_RECIPIENT).call() - due == supply1 * 200 * (t2 - t1) // (BPS * YEAR)
    # ...and a depositor arriving after 10 more days pays none of the fee due before he came.
    _warp_and_refresh(chain, 10 * DAY)
    _freeze(chain)
    expected_shares = v.previewDeposit(100_000 * USDC).call()
    nav, supply, held = v.totalAssets().call(), v.totalSupply().call(), v.balanceOf(FEE_RECIPIENT).call()
    pending = supply * 200 * (_now(chain) - t2) // (BPS * YEAR)
    fee = v.entryExitFeeBps().call()
    net = 100_000 * USDC - -(-100_000 * USDC * fee // (BPS + fee))
    # Bob's shares are priced after the fee shares due before him: the supply counts them.
    assert expected_shares == net * (supply + pending + 10**6) // (nav + 1)
    chain.deposit(chain.bob, 100_000)
    assert v.balanceOf(chain.bob).call() == expected_shares
    assert v.balanceOf(FEE_RECIPIENT).call() - held == pending > 0


def test_performance_fee_is_charged_once_over_the_high_water_mark(chain: System) -> None:
    v = chain.vault.functions
    chain.deposit(chain.alice, 1_000_000)
    # Fees accrue at most once a second: the rebalance must land in a later second than the deposit to move the
    # mark to the price the entry fee raised (a fast tick can otherwise share the deposit's second).
    rpc(chain.w3, "evm_increaseTime", [1])
    assert chain.make_keeper(drift_threshold_bps=0).run_once().status == "rebalanced"
    chain.tx.transact(chain.owner, v.setFees(FEE_RECIPIENT, 0, 2_000))  # 20 % of gains
    nav0, supply = v.totalAssets().call(), v.totalSupply().call()
    mark0 = v.highWaterMark().call()
    assert mark0 >= (nav0 + 1) * 10**18 // (supply + 10**6)  # the entry fee income already raised the mark
    _warp_and_refresh(chain, 3_600, btc_factor=1.10)  # BTC +10 %
    _freeze(chain)
    nav = v.totalAssets().call()
    assert nav > nav0
    chain.tx.transact(chain.bob, v.accrueFees(), gas=ACCRUE_GAS)
    fee_shares = v.balanceOf(FEE_RECIPIENT).call()
    # 20 % of the gain of assets per share over the mark, paid in shares worth that after the mint (floor).
    vs = supply + 10**6
    price = (nav + 1) * 10**18 // vs
    fee_assets = (price - mark0) * vs // 10**18 * 2_000 // BPS
    assert fee_shares == fee_assets * vs // (nav + 1 - fee_assets) > 0
    assert fee_assets - 1 <= v.convertToAssets(fee_shares).call() <= fee_assets <= (nav - nav0) * 2_000 // BPS
    mark1 = v.highWaterMark().call()
    assert mark1 > mark0 and v.totalSupply().call() == supply + fee_shares
    # No new gain, no new fee; a fall and a recovery to the mark charge nothing either.
    _warp_and_refresh(chain, 3_600, btc_factor=0.8)
    chain.tx.transact(chain.bob, v.accrueFees(), gas=ACCRUE_GAS)
    _warp_and_refresh(chain, 3_600, btc_factor=1.25)
    chain.tx.transact(chain.bob, v.accrueFees(), gas=ACCRUE_GAS)
    assert v.balanceOf(FEE_RECIPIENT).call() == fee_shares
    assert v.highWaterMark().call() <= mark1 + 1
    # A rebalance accrues before it prices anything: the recipient gets the fee on a new gain first.
    _warp_and_refresh(chain, 3_600, btc_factor=1.05)
    for asset, feed in zip(chain.deployment.assets, chain.feeds):
        chain.arbitrageur.align(asset.token, feed.functions.latestRoundData().call()[1])
    assert chain.make_keeper(drift_threshold_bps=0).run_once().status == "rebalanced"
    assert v.balanceOf(FEE_RECIPIENT).call() > fee_shares
