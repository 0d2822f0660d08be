"""The keeper's rebalance on Anvil: targets reached, and every on-chain refusal fires with its custom error."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import pytest
from conftest import SYMBOLS, USDC, System
from eth_abi import encode as abi_encode
from web3 import Web3
from web3.logs import DISCARD

from keeper.chain import AnvilProcess, DevSender, call_raw, connect, contract, decode_revert, dev_accounts, rpc
from keeper.deployment import (
    MAX_UINT256,
    Deployment,
    deploy_system,
    exact_input_single_args,
    price_to_answer,
    swap_router,
)
from keeper.errors import SimulationRevertedError, TransactionFailedError
from keeper.networks import ROUTER_KINDS
from keeper.oracle import ChainReader
from keeper.planner import RebalancePlan, SwapLeg, amount_for_value, plan_rebalance, value_of
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



def test_a_leg_token_with_dirty_upper_bits_is_refused_before_any_swap(chain: System) -> None:
    # The vault copies a leg's two token words into the router's calldata as they are: what keeps a word
    # with bits above its address from reaching a router is the ABI check of `_checkLeg`, which reads both
    # tokens of every leg before the first swap.
    chain.deposit(chain.alice, 100_000)
    plan = _plan(chain, chain.make_keeper())
    assert plan.legs
    data = bytes.fromhex(_rebalance_call(chain, plan.legs)._encode_transaction_data()[2:])
    legs_at = 4 + 4 * 32 + 32  # selector, head (legs offset, min NAV, epoch, deadline), legs length
    for k, leg in enumerate(plan.legs):
        for field, token in ((0, leg.token_in), (1, leg.token_out)):
            word = legs_at + (k * 4 + field) * 32
            assert data[word + 12:word + 32] == bytes.fromhex(token[2:])
            dirty = bytearray(data)
            dirty[word + 11] |= 1  # bit 160 of the address word
            ok, revert = call_raw(chain.w3, {"from": chain.keeper, "to": chain.vault.address, "data": "0x" + dirty.hex()})
            assert not ok and revert == b"", (k, field, revert.hex())
    ok, _ = call_raw(chain.w3, {"from": chain.keeper, "to": chain.vault.address, "data": "0x" + data.hex()})
    assert ok
    assert chain.vault.functions.rebalanceEpoch().call() == 0

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


# --- SwapRouter02 and the standing router allowance ------------------------------------------------


@dataclass
class Router02System:
    """A vault deployed with ``router_kind="swaprouter02"`` on its own Anvil, one deposit made."""

    w3: Any
    tx: DevSender
    deployment: Deployment
    vault: Any
    base: Any
    reader: ChainReader
    keeper: str
    depositor: str


@pytest.fixture(scope="module")
def router02(chain_table) -> Iterator[Router02System]:
    node = AnvilProcess(timestamp=chain_table.close_timestamp(0) - 3600)
    try:
        w3 = connect(node.rpc_url)
        owner, keeper, guardian, _, alice = dev_accounts()[:5]
        deployment = deploy_system(w3, owner, keeper, guardian, SYMBOLS, chain_table.prices[0],
                                   pool_depth_usd=50_000_000, router_kind="swaprouter02")
        tx = DevSender(w3)
        vault = contract(w3, "RiskParityVault", deployment.vault)
        base = contract(w3, "TestToken", deployment.base_asset)
        tx.transact(owner, base.functions.mint(alice, 1_000_000 * USDC))
        tx.transact(alice, base.functions.approve(deployment.vault, MAX_UINT256))
        tx.transact(alice, vault.functions.deposit(1_000_000 * USDC, alice))
        yield Router02System(w3, tx, deployment, vault, base, ChainReader(w3, deployment.vault), keeper, alice)
    finally:
        node.stop()


def _oracle_leg(reader: ChainReader, base: str, i: int, side: str, usd: float, slippage_bps: int = 50) -> SwapLeg:
    """A leg of ``usd`` worth of asset ``i`` with ``minAmountOut`` ``slippage_bps`` under the oracle (rounded up,
    like the vault's bound)."""
    snap = reader.snapshot()
    info, answer, bd = reader.assets[i], snap.answers[i], reader.base_decimals
    value = int(usd * 10**bd)
    if side == "buy":
        token_in, token_out, amount_in = base, info.token, value
        oracle_out = amount_for_value(value, answer, info, bd)
    else:
        token_in, token_out = info.token, base
        amount_in = amount_for_value(value, answer, info, bd)
        oracle_out = value = value_of(amount_in, answer, info, bd)
    min_out = -(-oracle_out * (10_000 - slippage_bps) // 10_000)
    return SwapLeg(info.symbol, side, token_in, token_out, amount_in, min_out, oracle_out, value)


def test_rebalance_through_swaprouter02_buys_and_sells_at_the_oracle_bound(router02: Router02System) -> None:
    r = router02
    v = r.vault.functions
    assert v.routerKind().call() == ROUTER_KINDS.index("swaprouter02") == 1
    assert v.swapRouter().call() == r.deployment.swap_router
    # The keeper's pool-price breaker finds the pools through `swapRouter().factory()`: SwapRouter02 answers it too.
    assert contract(r.w3, "SwapRouter", r.deployment.swap_router).functions.factory().call() == r.deployment.factory
    buy = _oracle_leg(r.reader, r.base.address, 0, "buy", 50_000)
    token = contract(r.w3, "TestToken", buy.token_out)
    before = token.functions.balanceOf(r.vault.address).call()
    deadline = r.w3.eth.get_block("latest")["timestamp"] + 600
    receipt = r.tx.transact(r.keeper, v.rebalance([buy.as_tuple()], 0, 0, deadline))
    got = token.functions.balanceOf(r.vault.address).call() - before
    assert got >= buy.min_amount_out
    logs = r.vault.events.LegExecuted().process_receipt(r.w3.eth.get_transaction_receipt(receipt["transactionHash"]),
                                                          errors=DISCARD)
    (event,) = logs
    assert event["args"]["amountOut"] == got and event["args"]["oracleAmountOut"] == buy.oracle_amount_out
    # A sell of part of it, then a leg asking for more than the pool gives is refused with the router's reason.
    sell = _oracle_leg(r.reader, r.base.address, 0, "sell", 20_000)
    r.tx.transact(r.keeper, v.rebalance([sell.as_tuple()], 0, 1, deadline))
    assert v.rebalanceEpoch().call() == 2
    greedy = SwapLeg(sell.symbol, sell.side, sell.token_in, sell.token_out, sell.amount_in, sell.oracle_amount_out * 2,
                     sell.oracle_amount_out, sell.value)
    ok, data = call_raw(r.w3, {"from": r.keeper, "to": r.vault.address,
                               "data": v.rebalance([greedy.as_tuple()], 0, 2, deadline)._encode_transaction_data()})
    assert not ok
    err = decode_revert(data)
    assert err.name == "LegSwapFailed" and err.args[0] == 0 and b"Too little received" in err.args[1]


def test_swaprouter02_deadline_is_enforced_by_the_vault(router02: Router02System) -> None:
    r = router02
    v = r.vault.functions
    leg = _oracle_leg(r.reader, r.base.address, 1, "buy", 10_000)
    epoch = v.rebalanceEpoch().call()
    # SwapRouter02 takes no deadline: the vault's own check refuses, naming the deadline and the block time.
    now = r.w3.eth.get_block("latest")["timestamp"]
    call = v.rebalance([leg.as_tuple()], 0, epoch, now - 1)
    ok, data = call_raw(r.w3, {"from": r.keeper, "to": r.vault.address, "data": call._encode_transaction_data()})
    err = decode_revert(data)
    assert not ok and err.name == "DeadlinePassed" and err.args[0] == now - 1 and err.args[1] >= now
    # Mined in a block one second past the deadline, the transaction reverts (and changes nothing).
    rpc(r.w3, "evm_setNextBlockTimestamp", [now + 10])
    with pytest.raises(TransactionFailedError):
        expired = v.rebalance([leg.as_tuple()], 0, epoch, now + 9)._encode_transaction_data()
        r.tx.send(r.keeper, r.vault.address, expired, gas=3_000_000)
    assert v.rebalanceEpoch().call() == epoch
    # In a block at the deadline itself the same rebalance goes through.
    rpc(r.w3, "evm_setNextBlockTimestamp", [now + 20])
    r.tx.send(r.keeper, r.vault.address, v.rebalance([leg.as_tuple()], 0, epoch, now + 20)._encode_transaction_data(),
              gas=3_000_000)
    assert v.rebalanceEpoch().call() == epoch + 1


def _callback_theft(tx: DevSender, router: str, token_in: str, token_out: str, fee: int, victim: str, thief: str,
                    amount: int) -> None:
    """Calls ``router.uniswapV3SwapCallback`` as ``thief`` with callback data naming ``victim`` as the payer of
    ``amount`` of ``token_in`` on the real ``token_in``/``token_out`` pool: the one way a router could move a
    standing allowance's tokens without the victim calling it. The router refuses (the caller is not that pool)."""
    path = bytes.fromhex(token_in[2:]) + fee.to_bytes(3, "big") + bytes.fromhex(token_out[2:])
    data = abi_encode(["(bytes,address)"], [(path, victim)])
    selector = Web3.keccak(text="uniswapV3SwapCallback(int256,int256,bytes)")[:4]
    call = selector + abi_encode(["int256", "int256", "bytes"], [amount, 0, data])
    with pytest.raises(TransactionFailedError):
        tx.send(thief, router, call, gas=500_000)


@pytest.mark.parametrize("kind", ROUTER_KINDS)
def test_standing_router_allowance_cannot_be_spent_by_anyone_else(kind: str, chain: System,
                                                                  router02: Router02System) -> None:
    """The vault leaves the router a maximum allowance of every listed token. An attacker who calls the router's
    swap callback directly, naming the vault as payer, or asks the router to swap to himself, moves nothing."""
    if kind == "swaprouter":
        w3, tx, vault, base, router = chain.w3, chain.tx, chain.vault, chain.base, chain.deployment.swap_router
        chain.deposit(chain.alice, 100_000)
        thief = chain.bob
    else:
        w3, tx, vault, base = router02.w3, router02.tx, router02.vault, router02.base
        router = router02.deployment.swap_router
        thief = dev_accounts()[6]
    assert base.functions.allowance(vault.address, router).call() == MAX_UINT256
    held = base.functions.balanceOf(vault.address).call()
    assert held > 0
    token_out = vault.functions.riskAssets().call()[0]
    _callback_theft(tx, router, base.address, token_out, 500, vault.address, thief, held // 2)
    # The router's own swap pays from its caller only: the thief holds nothing of it and gets nothing.
    swap = swap_router(w3, Deployment(**{**chain.deployment.__dict__, "swap_router": router, "router_kind": kind}))
    params = exact_input_single_args(kind, base.address, token_out, 500, thief, 2**63, held // 2, 0, 0)
    with pytest.raises(TransactionFailedError):
        tx.transact(thief, swap.functions.exactInputSingle(params), gas=500_000)
    assert base.functions.balanceOf(vault.address).call() == held
    assert base.functions.allowance(vault.address, router).call() == MAX_UINT256


def test_each_feed_is_read_once_per_rebalance_and_still_checked(chain: System) -> None:
    """The NAV before, every leg's oracle bound and the NAV after share one read of each feed; a feed first
    needed by a leg (an asset the vault does not hold yet) is read there, with the same staleness check."""
    chain.deposit(chain.alice, 100_000)
    reader = ChainReader(chain.w3, chain.vault.address)
    base = chain.base.address
    # Cash only: a buy of every asset reads each feed at its leg, once, and the NAV after reuses the answers.
    legs = [_oracle_leg(reader, base, i, "buy", 5_000) for i in range(3)]
    epoch = chain.vault.functions.rebalanceEpoch().call()
    deadline = chain.w3.eth.get_block("latest")["timestamp"] + 3_600
    receipt = chain.tx.transact(chain.keeper, _rebalance_call(chain, legs, epoch=epoch, deadline=deadline))
    trace = rpc(chain.w3, "debug_traceTransaction", [receipt["transactionHash"], {"tracer": "callTracer"}])
    reads = [c["to"].lower() for c in trace["calls"] if c["input"].startswith("0xfeaf968c")]  # latestRoundData
    assert sorted(reads) == sorted(f.address.lower() for f in chain.feeds)


def test_a_feed_first_needed_by_a_leg_is_checked_there(chain: System) -> None:
    """The vault holds cash only, so the NAV reads no feed; SOL's feed is older than its heartbeat. A leg buying
    SOL reads it at its bound and is refused with the feed's values; a leg buying BTC (fresh feed) goes through."""
    chain.deposit(chain.alice, 100_000)
    reader = ChainReader(chain.w3, chain.vault.address)
    base = chain.base.address
    buy_btc, buy_sol = (_oracle_leg(reader, base, i, "buy", 5_000) for i in (0, 2))
    now = chain.w3.eth.get_block("latest")["timestamp"]
    rpc(chain.w3, "evm_setNextBlockTimestamp", [now + 2 * 86_400 + 3_600])
    for feed, price in zip(chain.feeds[:2], chain.table.prices[chain.day][:2]):
        chain.tx.transact(chain.owner, feed.functions.pushAnswer(price_to_answer(price)))
    sol_feed = chain.feeds[2]
    heartbeat = chain.vault.functions.riskAssetConfig(chain.tokens[2].address).call()[1]
    updated_at = sol_feed.functions.latestRoundData().call()[3]
    deadline = chain.w3.eth.get_block("latest")["timestamp"] + 600
    err = chain.call_error(_rebalance_call(chain, [buy_btc, buy_sol], deadline=deadline), chain.keeper)
    assert err.name == "StalePrice" and err.args == (sol_feed.address.lower(), updated_at, heartbeat)
    chain.tx.transact(chain.keeper, _rebalance_call(chain, [buy_btc], deadline=deadline))
    assert chain.tokens[0].functions.balanceOf(chain.vault.address).call() >= buy_btc.min_amount_out
