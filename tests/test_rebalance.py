"""The keeper's rebalance on Anvil: targets reached, and every on-chain refusal fires with its custom error."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import USDC, System

from keeper.chain import rpc
from keeper.errors import SimulationRevertedError
from keeper.planner import RebalancePlan, SwapLeg, plan_rebalance
from keeper.risk_contributions import relative_risk_contributions


def _plan(chain: System, keeper, weights=None, **overrides) -> RebalancePlan:
    snap = keeper.reader.snapshot()
    state = keeper.reader.vault_state()
    w = np.full(3, 1 / 3) if weights is None else np.asarray(weights)
    args = dict(cash_buffer_bps=500, slippage_budget_bps=50, drift_threshold_bps=0, min_trade_value=10 * USDC,
                deadline=snap.block_timestamp + 600)
    args.update(overrides)
    return plan_rebalance(snap, state, keeper.reader.assets, w, **args)


def _rebalance_call(chain: System, legs, min_nav=0, epoch=None, deadline=None):
    v = chain.vault.functions
    epoch = v.rebalanceEpoch().call() if epoch is None else epoch
    deadline = chain.w3.eth.get_block("latest")["timestamp"] + 600 if deadline is None else deadline
    return v.rebalance([leg.as_tuple() if isinstance(leg, SwapLeg) else leg for leg in legs], min_nav, epoch, deadline)


def test_tick_moves_weights_to_equal_risk_targets(chain: System) -> None:
    chain.deposit(chain.alice, 150_000)
    chain.deposit(chain.bob, 100_000)
    keeper = chain.make_keeper(drift_threshold_bps=100)
    report = keeper.run_once()
    assert report.status == "rebalanced", report.reason
    assert chain.vault.functions.rebalanceEpoch().call() == 1
    target = np.array(report.target_weights) * 0.95
    snap = keeper.reader.snapshot()
    state = keeper.reader.vault_state()
    values = np.array([b * a / 10 ** 26 for b, a in zip(state.balances, snap.answers)])
    weights = values / (state.total_assets / USDC)
    assert np.max(np.abs(weights - target)) < 0.002  # within 20 bps of NAV (costs and rounding)
    cov = np.array(report.covariance)
    rrc = relative_risk_contributions(weights / weights.sum(), cov)
    assert np.max(np.abs(rrc - 1 / 3)) < 0.005
    assert np.max(np.abs(np.array(report.relative_risk_contributions_target) - 1 / 3)) < 1e-8
    # Every leg executed within the slippage budget of the oracle price, recorded in the journal.
    legs = report.execution.legs
    assert len(legs) == 3 and all(0 <= leg.realised_slippage_bps < 50 for leg in legs)
    row = keeper.journal.ticks("rebalanced")[-1]
    assert row["tx_hash"] == report.execution.tx_hash and row["gas_used"] > 0
    assert len(row["detail"]["leg_results"]) == 3
    # A second tick right after finds nothing to do and sends nothing.
    nonce = chain.w3.eth.get_transaction_count(chain.keeper)
    again = keeper.run_once()
    assert again.status == "skipped" and again.reason == "no trigger fired", again.reason
    assert again.drift_bps is not None and again.drift_bps < keeper.config.policy.weight_drift_bps, again.drift_bps
    assert chain.w3.eth.get_transaction_count(chain.keeper) == nonce


def test_only_the_keeper_can_rebalance(chain: System) -> None:
    chain.deposit(chain.alice, 100_000)
    plan = _plan(chain, chain.make_keeper())
    for intruder in (chain.alice, chain.owner, chain.guardian):
        err = chain.call_error(_rebalance_call(chain, plan.legs), intruder)
        assert err.name == "AccessControlUnauthorizedAccount" and err.args[0].lower() == intruder.lower()


def test_pause_blocks_rebalance(chain: System) -> None:
    chain.deposit(chain.alice, 100_000)
    keeper = chain.make_keeper()
    plan = _plan(chain, keeper)
    chain.tx.transact(chain.guardian, chain.vault.functions.pause())
    assert chain.call_error(_rebalance_call(chain, plan.legs), chain.keeper).name == "EnforcedPause"
    report = keeper.run_once()
    assert report.status == "skipped" and "paused" in report.reason


def test_min_amount_out_below_oracle_bound_is_refused(chain: System) -> None:
    chain.deposit(chain.alice, 100_000)
    plan = _plan(chain, chain.make_keeper())
    leg = plan.legs[0]
    max_slip = chain.vault.functions.maxSlippageBps().call()
    bound = -(-leg.oracle_amount_out * (10_000 - max_slip) // 10_000)
    bad = SwapLeg(leg.symbol, leg.side, leg.token_in, leg.token_out, leg.amount_in, bound - 1,
                  leg.oracle_amount_out, leg.value)
    err = chain.call_error(_rebalance_call(chain, [bad]), chain.keeper)
    assert err.name == "MinAmountOutBelowOracleBound"
    assert err.args[0] == 0 and err.args[1].lower() == leg.token_out.lower() and err.args[2:] == (bound - 1, bound)
    ok = SwapLeg(leg.symbol, leg.side, leg.token_in, leg.token_out, leg.amount_in, bound, leg.oracle_amount_out, leg.value)
    chain.tx.transact(chain.keeper, _rebalance_call(chain, [ok]))


def test_turnover_above_cap_is_refused(chain: System) -> None:
    chain.deposit(chain.alice, 100_000)
    chain.tx.transact(chain.owner, chain.vault.functions.setLimits(100, 2_000, 200))
    plan = _plan(chain, chain.make_keeper(), weights=[1 / 3] * 3)
    # The planner scales its plan under the cap...
    assert plan.turnover_bps <= 2_000
    chain.tx.transact(chain.keeper, _rebalance_call(chain, plan.legs))
    # ...a hand-made plan over it is refused with the measured turnover.
    big = plan.legs[0]
    legs = [SwapLeg(big.symbol, big.side, big.token_in, big.token_out, big.amount_in * 2, big.min_amount_out * 2,
                    big.oracle_amount_out * 2, big.value * 2)] * 2
    err = chain.call_error(_rebalance_call(chain, legs), chain.keeper)
    assert err.name == "TurnoverCapExceeded" and err.args[0] > 2_000 and err.args[1] == 2_000


def test_nav_floor_and_nav_loss_bound_are_enforced(chain: System) -> None:
    chain.deposit(chain.alice, 100_000)
    plan = _plan(chain, chain.make_keeper())
    nav = chain.vault.functions.totalAssets().call()
    err = chain.call_error(_rebalance_call(chain, plan.legs, min_nav=nav), chain.keeper)
    assert err.name == "NavBelowFloor" and err.args[1] == nav and err.args[0] < nav
    # With a zero NAV-loss allowance any cost at all is refused.
    chain.tx.transact(chain.owner, chain.vault.functions.setLimits(100, 10_000, 0))
    err = chain.call_error(_rebalance_call(chain, plan.legs, min_nav=0), chain.keeper)
    assert err.name == "NavLossExceeded" and err.args[0] == nav and err.args[2] == 0


def test_replayed_epoch_and_passed_deadline_are_refused(chain: System) -> None:
    chain.deposit(chain.alice, 100_000)
    plan = _plan(chain, chain.make_keeper())
    call = _rebalance_call(chain, plan.legs, epoch=0)
    chain.tx.transact(chain.keeper, call)
    err = chain.call_error(call, chain.keeper)  # the same calldata again: a replay
    assert err.name == "EpochMismatch" and err.args == (0, 1)
    now = chain.w3.eth.get_block("latest")["timestamp"]
    err = chain.call_error(_rebalance_call(chain, plan.legs[:1], deadline=now - 1), chain.keeper)
    assert err.name == "DeadlinePassed" and err.args[0] == now - 1


def test_unlisted_token_and_malformed_legs_are_refused(chain: System) -> None:
    chain.deposit(chain.alice, 100_000)
    v = chain.vault.functions
    base = chain.base.address
    stranger = chain.alice  # any address that is not a listed token
    err = chain.call_error(_rebalance_call(chain, [(base, stranger, USDC, 1)]), chain.keeper)
    assert err.name == "AssetNotListed" and err.args[0].lower() == stranger.lower()
    btc, eth = chain.tokens[0].address, chain.tokens[1].address
    err = chain.call_error(_rebalance_call(chain, [(btc, eth, 1, 1)]), chain.keeper)
    assert err.name == "InvalidLeg"
    err = chain.call_error(_rebalance_call(chain, []), chain.keeper)
    assert err.name == "InvalidLegCount"
    assert v.rebalanceEpoch().call() == 0


def test_pool_pushed_off_the_oracle_price(chain: System) -> None:
    chain.deposit(chain.alice, 100_000)
    keeper = chain.make_keeper()
    plan = _plan(chain, keeper)
    # An attacker buys ETH out of the ETH/USDC pool: ETH is now 5% dear in the pool, and the vault buys ETH.
    eth = chain.deployment.assets[1]
    assert any(leg.side == "buy" and leg.token_out == eth.token for leg in plan.legs)
    answer = chain.feeds[1].functions.latestRoundData().call()[1]
    chain.arbitrageur.align(eth.token, answer * 105 // 100)
    # The vault refuses the plan the keeper built before the push (the router's minimum is not met)...
    err = chain.call_error(_rebalance_call(chain, plan.legs), chain.keeper)
    assert err.name == "LegSwapFailed"
    from keeper.chain import decode_revert

    inner = decode_revert(err.args[1])
    assert inner.name == "Error" and inner.args == ("Too little received",)
    # ...and the keeper, quoting first, refuses to send at all.
    nonce = chain.w3.eth.get_transaction_count(chain.keeper)
    report = keeper.run_once()
    assert report.status == "skipped" and "QuoteBelowBoundError" in report.reason and "ETH" in report.reason
    assert report.plan is not None and len(report.plan.legs) > 0
    assert chain.w3.eth.get_transaction_count(chain.keeper) == nonce


def test_stale_oracle_keeper_skips_and_vault_refuses(chain: System) -> None:
    chain.deposit(chain.alice, 100_000)
    keeper = chain.make_keeper()
    plan = _plan(chain, keeper)
    heartbeat = chain.vault.functions.riskAssetConfig(chain.tokens[0].address).call()[1]
    rpc(chain.w3, "evm_increaseTime", [heartbeat + 60])
    rpc(chain.w3, "evm_mine", [])
    nonce = chain.w3.eth.get_transaction_count(chain.keeper)
    report = keeper.run_once()
    assert report.status == "skipped" and "StaleOracleError" in report.reason
    assert chain.w3.eth.get_transaction_count(chain.keeper) == nonce
    late = chain.w3.eth.get_block("latest")["timestamp"] + 600
    err = chain.call_error(_rebalance_call(chain, plan.legs, deadline=late), chain.keeper)
    assert err.name == "StalePrice"
    assert keeper.journal.ticks("skipped")[-1]["reason"].startswith("StaleOracleError")


def test_a_rebalance_already_done_for_the_epoch_sends_nothing(chain: System) -> None:
    chain.deposit(chain.alice, 100_000)
    first = chain.make_keeper()
    second = chain.make_keeper()
    plan = _plan(chain, second)  # planned by the second keeper at epoch 0 ...
    assert first.run_once().status == "rebalanced"  # ... but the first keeper wins the race
    nonce = chain.w3.eth.get_transaction_count(chain.keeper)
    with pytest.raises(SimulationRevertedError, match="EpochMismatch"):
        second.executor.send(plan)
    assert chain.w3.eth.get_transaction_count(chain.keeper) == nonce
    assert chain.vault.functions.rebalanceEpoch().call() == 1


def test_a_move_too_large_for_the_pools_is_made_in_smaller_steps(chain: System) -> None:
    chain.deposit(chain.alice, 2_000_000)  # ~$630k per pool: well past the 50 bps budget at this depth
    keeper = chain.make_keeper(slippage_budget_bps=50, max_step_halvings=3)
    report = keeper.run_once()
    assert report.status == "rebalanced", report.reason
    assert report.plan.turnover_bps < 9_500 / 2  # a partial step
    assert all(leg.realised_slippage_bps < 50 for leg in report.execution.legs)
    for asset, feed in zip(chain.deployment.assets, chain.feeds):  # arbitrageurs restore the pools
        chain.arbitrageur.align(asset.token, feed.functions.latestRoundData().call()[1])
    following = keeper.run_once()
    assert following.status == "rebalanced", following.reason  # the next tick continues toward the targets


def test_gas_above_the_cap_is_refused_and_journalled(chain: System) -> None:
    chain.deposit(chain.alice, 100_000)
    base_fee = chain.w3.eth.get_block("latest")["baseFeePerGas"]
    keeper = chain.make_keeper(max_fee_per_gas_gwei=base_fee / 1e9 / 2, max_priority_fee_per_gas_gwei=0)
    nonce = chain.w3.eth.get_transaction_count(chain.keeper)
    report = keeper.run_once()
    assert report.status == "skipped" and "GasPriceTooHighError" in report.reason
    assert chain.w3.eth.get_transaction_count(chain.keeper) == nonce


def test_tick_scales_its_move_to_the_rolling_turnover_budget(chain: System) -> None:
    """The keeper plans within what the vault's rolling turnover budget still allows, instead of sending a
    rebalance the vault would refuse (``TurnoverBudgetExceeded``); once it is spent, ticks skip with the reason."""
    chain.deposit(chain.alice, 200_000)
    chain.tx.transact(chain.owner, chain.vault.functions.setBudget(1, 3_000, 86_400))  # 30 % of NAV per day
    keeper = chain.make_keeper(drift_threshold_bps=100)
    nav_before = chain.vault.functions.totalAssets().call()
    first = keeper.run_once()
    assert first.status == "rebalanced", first.reason
    spent = chain.vault.functions.budgetSpent(1).call()
    assert 0.25 * nav_before < spent <= 0.30 * nav_before  # a partial step, inside the budget
    second = keeper.run_once()
    assert second.status == "skipped" and "rolling turnover budget" in second.reason, second.reason
