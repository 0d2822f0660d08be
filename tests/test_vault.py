"""Depositors' entry points, valuation and governance of RiskParityVault on Anvil."""

from __future__ import annotations

from conftest import USDC, System, assert_vault_invariants

from keeper.deployment import price_to_answer
from keeper.errors import TransactionFailedError

import pytest


def test_deposit_redeem_round_trip_returns_at_most_the_deposit(chain: System) -> None:
    v = chain.vault.functions
    fee = v.entryExitFeeBps().call()
    assert fee == 50  # raised at listing to the feeds' deviation threshold (deploy_system's default)
    before = chain.base.functions.balanceOf(chain.alice).call()
    preview = v.previewDeposit(1_000 * USDC).call()
    assets = chain.deposit(chain.alice, 1_000)
    shares = v.balanceOf(chain.alice).call()
    assert shares == preview and v.previewDeposit(0).call() == 0
    assert v.totalAssets().call() == assets
    # Shares for the net amount at the pre-deposit rate (10^6 shares per unit in an empty vault); the fee,
    # ⌈assets × fee / (10_000 + fee)⌉ = net × fee / 10_000, stays in the vault.
    net = assets - -(-assets * fee // (10_000 + fee))
    assert shares == net * 10**6
    payout = v.previewRedeem(shares).call()
    chain.tx.transact(chain.alice, v.redeem(shares, chain.alice, chain.alice))
    after = chain.base.functions.balanceOf(chain.alice).call()
    assert after - before == payout - assets  # the preview is exact
    # A sole holder gets the entry fee back as NAV, then pays the exit fee on it: the vault keeps at least one
    # fee, ⌊assets × fee / (10_000 + fee)⌋, for the next holders.
    kept = chain.base.functions.balanceOf(chain.vault.address).call()
    assert kept == assets - payout >= assets * fee // (10_000 + fee)
    assert v.totalSupply().call() == 0


def test_mint_and_withdraw_round_up_in_the_vaults_favour(chain: System) -> None:
    v = chain.vault.functions
    chain.deposit(chain.bob, 777.777777)
    shares = 10**12 + 1  # one share and a bit: mint rounds the assets up
    cost = v.previewMint(shares).call()
    chain.tx.transact(chain.alice, v.mint(shares, chain.alice))
    assert v.balanceOf(chain.alice).call() == shares
    assert v.convertToAssets(shares).call() <= cost
    burn = v.previewWithdraw(cost // 2).call()
    chain.tx.transact(chain.alice, v.withdraw(cost // 2, chain.alice, chain.alice))
    assert v.balanceOf(chain.alice).call() == shares - burn
    assert burn >= v.convertToShares(cost // 2).call()
    assert_vault_invariants(chain, [chain.alice, chain.bob])


def test_total_assets_marks_risk_assets_at_the_oracle(chain: System) -> None:
    v = chain.vault.functions
    chain.deposit(chain.alice, 100_000)
    keeper = chain.make_keeper(drift_threshold_bps=0)
    report = keeper.run_once()
    assert report.status == "rebalanced", report.reason
    tokens, balances = v.holdings().call()
    expected = balances[0]
    for bal, feed in zip(balances[1:], chain.feeds):
        answer = feed.functions.latestRoundData().call()[1]
        expected += bal * answer * USDC // 10 ** (18 + 8)
    assert v.totalAssets().call() == expected
    # A 10% move in BTC moves NAV by 10% of the BTC holding's value.
    btc_value = balances[1] * chain.feeds[0].functions.latestRoundData().call()[1] * USDC // 10**26
    price = chain.table.prices[chain.day][0] * 1.1
    chain.tx.transact(chain.owner, chain.feeds[0].functions.pushAnswer(price_to_answer(price)))
    assert abs(v.totalAssets().call() - (expected + btc_value // 10)) <= 2


def test_stale_or_non_positive_price_reverts_valuation(chain: System) -> None:
    v = chain.vault.functions
    chain.deposit(chain.alice, 100_000)
    assert chain.make_keeper(drift_threshold_bps=0).run_once().status == "rebalanced"
    chain.tx.transact(chain.owner, chain.feeds[1].functions.pushAnswer(0))
    err = chain.call_error(v.totalAssets(), chain.alice)
    assert err.name == "InvalidPrice" and err.args[1] == 0
    chain.tx.transact(chain.owner, chain.feeds[1].functions.pushAnswer(-5))
    assert chain.call_error(v.totalAssets(), chain.alice).name == "InvalidPrice"
    chain.tx.transact(chain.owner, chain.feeds[1].functions.pushAnswer(price_to_answer(3000.0)))
    heartbeat = v.riskAssetConfig(chain.tokens[1].address).call()[1]
    from keeper.chain import rpc

    rpc(chain.w3, "evm_increaseTime", [heartbeat + 1])
    rpc(chain.w3, "evm_mine", [])
    err = chain.call_error(v.totalAssets(), chain.alice)
    assert err.name == "StalePrice" and err.args[2] == heartbeat
    # Deposits price shares with totalAssets, so they refuse too rather than mint at a wrong price, and the
    # ERC-4626 max views say so (zero) instead of reverting or promising an unlimited deposit.
    for view in (v.maxDeposit(chain.bob), v.maxMint(chain.bob), v.maxWithdraw(chain.alice), v.maxRedeem(chain.alice)):
        assert view.call() == 0
    with pytest.raises(TransactionFailedError, match="StalePrice"):
        chain.deposit(chain.bob, 10)


def test_first_depositor_inflation_attack_is_unprofitable(chain: System) -> None:
    v = chain.vault.functions
    chain.tx.transact(chain.alice, v.deposit(1, chain.alice))
    chain.tx.transact(chain.alice, chain.base.functions.transfer(chain.vault.address, 100_000 * USDC))
    chain.deposit(chain.bob, 50_000)
    assert v.balanceOf(chain.bob).call() > 0
    alice_assets = v.convertToAssets(v.balanceOf(chain.alice).call()).call()
    assert alice_assets < 100_000 * USDC  # the donation is lost, not recovered from bob


def test_max_withdraw_is_capped_by_idle_cash_and_redeem_in_kind_always_works(chain: System) -> None:
    v = chain.vault.functions
    chain.deposit(chain.alice, 100_000)
    assert chain.make_keeper(drift_threshold_bps=0, cash_buffer_bps=500).run_once().status == "rebalanced"
    idle = chain.base.functions.balanceOf(chain.vault.address).call()
    max_withdraw = v.maxWithdraw(chain.alice).call()
    assert idle - 2 <= max_withdraw <= idle  # the idle cash, less share-rounding dust
    assert 0 < idle < 10_000 * USDC
    assert chain.call_error(v.withdraw(idle + 1, chain.alice, chain.alice), chain.alice).name == "ERC4626ExceededMaxWithdraw"
    chain.tx.transact(chain.alice, v.withdraw(max_withdraw, chain.alice, chain.alice))
    # The in-kind exit pays a pro-rata slice of everything, even while paused.
    chain.tx.transact(chain.guardian, v.pause())
    shares = v.balanceOf(chain.alice).call() // 2
    supply = v.totalSupply().call() + 10**6
    _, balances = v.holdings().call()
    before = [chain.base.functions.balanceOf(chain.alice).call()] + [t.functions.balanceOf(chain.alice).call() for t in chain.tokens]
    chain.tx.transact(chain.alice, v.redeemInKind(shares, chain.alice, chain.alice))
    after = [chain.base.functions.balanceOf(chain.alice).call()] + [t.functions.balanceOf(chain.alice).call() for t in chain.tokens]
    fee = v.entryExitFeeBps().call()
    paid = shares - -(-shares * fee // (10_000 + fee))  # the exit fee's slice (rounded up) stays in the vault
    for b0, b1, held in zip(before, after, balances):
        assert b1 - b0 == held * paid // supply


def test_pause_blocks_deposits_withdrawals_and_only_the_admin_unpauses(chain: System) -> None:
    v = chain.vault.functions
    chain.deposit(chain.alice, 1_000)
    with pytest.raises(TransactionFailedError, match="AccessControlUnauthorizedAccount"):
        chain.tx.transact(chain.alice, v.pause())
    chain.tx.transact(chain.guardian, v.pause())
    assert v.maxDeposit(chain.alice).call() == 0 and v.maxRedeem(chain.alice).call() == 0
    assert chain.call_error(v.deposit(USDC, chain.alice), chain.alice).name == "EnforcedPause"
    assert chain.call_error(v.redeem(1, chain.alice, chain.alice), chain.alice).name == "EnforcedPause"
    with pytest.raises(TransactionFailedError, match="AccessControlUnauthorizedAccount"):
        chain.tx.transact(chain.guardian, v.unpause())
    chain.tx.transact(chain.owner, v.unpause())
    chain.deposit(chain.alice, 1)


def test_governance_limits_and_listing_are_admin_only_and_bounded(chain: System) -> None:
    v = chain.vault.functions
    with pytest.raises(TransactionFailedError, match="AccessControlUnauthorizedAccount"):
        chain.tx.transact(chain.keeper, v.setLimits(50, 5000, 100))
    err = chain.call_error(v.setLimits(1_001, 5000, 100), chain.owner)
    assert err.name == "LimitOutOfRange" and err.args == (1001, 1000)
    chain.tx.transact(chain.owner, v.setLimits(30, 4000, 50))
    assert (v.maxSlippageBps().call(), v.maxTurnoverBps().call(), v.maxNavLossBps().call()) == (30, 4000, 50)
    err = chain.call_error(v.listRiskAsset(chain.tokens[0].address, chain.feeds[0].address, 3600, 500, 50), chain.owner)
    assert err.name == "AssetConfigInvalid"
    # A feed's deviation threshold is bounded like the fee it raises.
    from keeper.build import load_artifacts

    token = chain.tx.deploy(chain.owner, load_artifacts()["TestToken"], "X", "X", 18, chain.owner)
    err = chain.call_error(v.listRiskAsset(token.address, chain.feeds[0].address, 3600, 500, 501), chain.owner)
    assert err.name == "LimitOutOfRange" and err.args == (501, 500)
    chain.tx.transact(chain.owner, v.listRiskAsset(token.address, chain.feeds[0].address, 3600, 500, 80))
    assert v.riskAssetConfig(token.address).call()[6] == 80 and v.entryExitFeeBps().call() == 80
