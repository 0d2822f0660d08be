"""``keeper simulate --fork-url URL``: one tick's exact plan executed on a throwaway fork.

Starts a local Anvil forked from ``URL`` at its latest block, builds the keeper against the fork, runs
:meth:`keeper.runner.Keeper.plan_tick` there (the same reads, breakers, decision policy, planner, triggers,
quotes and cost gate as the live tick, against an in-memory copy of the live keeper's journal: the triggers
see its last rebalance and the allocator its previous target, and nothing is written to the live journal),
then impersonates the keeper's address (``anvil_impersonateAccount``,
funded with ``anvil_setBalance``) and sends the planned ``rebalance`` on the fork. Reports each leg's
``amountIn``/``amountOut``/oracle output and realised slippage (from the ``LegExecuted`` events), NAV
before and after, and gas. The source chain only ever receives reads from the fork's lazy state
fetches: nothing is signed and nothing is sent to it.
"""

from __future__ import annotations

from typing import Any, Sequence

from eth_account import Account
from eth_utils import event_abi_to_log_topic

from keeper.chain import AnvilProcess, call_raw, connect, decode_revert, rpc, wait_for_receipt
from keeper.config import KeeperConfig
from keeper.errors import ConfigError, KeeperError
from keeper.journal import Journal
from keeper.multicall import batch_request
from keeper.units import BPS

#: ETH given to the impersonated keeper on the fork, wei.
FORK_KEEPER_BALANCE_WEI = 100 * 10**18


def simulate_on_fork(
    config: KeeperConfig,
    fork_url: str,
    keeper_address: str | None = None,
    anvil_args: Sequence[str] = (),
) -> dict[str, Any]:
    """Runs one tick's plan on an Anvil fork of ``fork_url`` and reports what it did there.

    Parameters
    ----------
    config : KeeperConfig
        The live keeper's config (its ``rpc_url`` is replaced by the fork's).
    fork_url : str
        Chain to fork, at its latest block.
    keeper_address : str, optional
        Address to impersonate; by default the one of the configured key.
    anvil_args : sequence of str
        Further anvil flags.

    Returns
    -------
    dict
        ``status`` (``"rebalanced"``, ``"skipped"``: the tick would not trade, or ``"reverted"``: the
        rebalance would fail, with the decoded error), ``reason``, ``fork_block``, ``epoch_before`` and
        ``epoch_after``, ``nav_before``/``nav_after`` (base units) and ``nav_change_bps``, ``gas_used``,
        ``legs`` (planned amounts) and ``leg_results`` (``amount_in``, ``amount_out``,
        ``oracle_amount_out``, ``realised_slippage_bps`` = (1 − amountOut / oracleAmountOut) × 1e4),
        ``policy`` and ``trigger`` (the tick's :class:`~keeper.runner.TickReport` fields: the decision and
        the trade decision with its benefit and cost, base units; None after a breaker).

    Raises
    ------
    ConfigError
        No keeper address (no key configured and none given), or anvil cannot start the fork.
    """
    from keeper.runner import Keeper  # the runner imports this module's callers, not the reverse

    if keeper_address is None:
        try:
            keeper_address = Account.from_key(config.private_key()).address
        except KeeperError as exc:
            raise ConfigError(f"no keeper address to impersonate: pass --keeper-address ({exc})") from exc
    node = AnvilProcess(fork_url=fork_url, extra_args=list(anvil_args))
    try:
        w3 = connect(node.rpc_url)
        fork_block = w3.eth.block_number
        fork_config = config.model_copy(update={"chain": config.chain.model_copy(
            update={"rpc_url": node.rpc_url, "rpc_fallback_urls": []})})
        # Quoting and calldata need no key; a throwaway key stands in and never signs anything here.
        # The journal is a snapshot of the live keeper's: the last target, rebalance and reference prices
        # are the live keeper's, and nothing is written to its file.
        keeper = Keeper(fork_config, w3=w3, private_key=Account.create().key.hex(),
                        journal=Journal.snapshot(config.operations.journal_path))
        result: dict[str, Any] = {"fork_url": fork_url, "fork_block": fork_block, "keeper": keeper_address}
        report = keeper.plan_tick()
        epoch_before = keeper.reader.vault.functions.rebalanceEpoch().call()
        result.update(epoch_before=epoch_before, breakers=list(report.breakers), derisk=report.derisk,
                      policy=report.policy, trigger=report.trigger)
        plan = report.plan
        if plan is not None:
            result.update(
                nav_before=plan.nav_before,
                min_nav_after=plan.min_nav_after,
                drift_bps=plan.drift_bps,
                turnover_bps=plan.turnover_bps,
                target_weights=report.target_weights,
                legs=[{"symbol": leg.symbol, "side": leg.side, "amount_in": leg.amount_in,
                       "min_amount_out": leg.min_amount_out, "oracle_amount_out": leg.oracle_amount_out,
                       "value_base": leg.value} for leg in plan.legs],
            )
        if report.status != "planned":
            result.update(status="skipped", reason=report.reason, epoch_after=epoch_before)
            return result
        assert plan is not None
        return result | _execute_impersonated(w3, keeper, plan, keeper_address, epoch_before)
    finally:
        node.stop()


def _execute_impersonated(w3: Any, keeper: Any, plan: Any, address: str, epoch_before: int) -> dict[str, Any]:
    vault = keeper.reader.vault
    rpc(w3, "anvil_impersonateAccount", [address])
    rpc(w3, "anvil_setBalance", [address, hex(FORK_KEEPER_BALANCE_WEI)])
    data = keeper.executor.calldata(plan)
    tx = {"from": address, "to": vault.address, "data": data}
    simulation, estimated = batch_request(w3, [("eth_call", [tx, "latest"]), ("eth_estimateGas", [tx])])
    if "error" in simulation:
        err = simulation["error"]
        revert = err.get("data") if isinstance(err, dict) else None
        revert = revert.get("data") if isinstance(revert, dict) else revert
        if not (isinstance(revert, str) and revert.startswith("0x")):
            raise RuntimeError(f"eth_call of the rebalance failed without revert data: {err}")
        return {"status": "reverted", "reason": f"rebalance would revert with {decode_revert(bytes.fromhex(revert[2:]))}",
                "epoch_after": epoch_before}
    if "error" in estimated:
        raise RuntimeError(f"eth_estimateGas of the rebalance failed although its eth_call passed: {estimated['error']}")
    estimate = int(estimated["result"], 16)
    tx_hash = rpc(w3, "eth_sendTransaction", [tx | {"gas": hex(int(estimate * keeper.config.transactions.gas_limit_margin))}])
    receipt = wait_for_receipt(w3, tx_hash, timeout_seconds=60)
    block = int(receipt["blockNumber"], 16)
    if int(receipt["status"], 16) != 1:
        ok, out = call_raw(w3, tx, hex(block - 1))
        return {"status": "reverted", "reason": f"rebalance reverted on the fork: {decode_revert(out)}",
                "tx_hash": tx_hash, "gas_used": int(receipt["gasUsed"], 16), "epoch_after": epoch_before}
    leg_event = next(e for e in vault.abi if e.get("type") == "event" and e["name"] == "LegExecuted")
    topic = "0x" + event_abi_to_log_topic(leg_event).hex()
    rebalanced = next(e for e in vault.abi if e.get("type") == "event" and e["name"] == "Rebalanced")
    rebalanced_topic = "0x" + event_abi_to_log_topic(rebalanced).hex()
    leg_results = []
    nav_after = None
    for log in receipt["logs"]:
        if log["address"].lower() != vault.address.lower():
            continue
        if log["topics"][0] == rebalanced_topic:  # Rebalanced(epoch indexed, navBefore, navAfter, ...)
            nav_after = int(log["data"][2 + 64:2 + 128], 16)
            continue
        if log["topics"][0] != topic:
            continue
        raw = bytes.fromhex(log["data"][2:])
        index, amount_in, amount_out, oracle_out = (int.from_bytes(raw[i : i + 32], "big") for i in range(0, 128, 32))
        leg = plan.legs[index]
        leg_results.append({
            "index": index, "symbol": leg.symbol, "side": leg.side, "amount_in": amount_in, "amount_out": amount_out,
            "oracle_amount_out": oracle_out, "min_amount_out": leg.min_amount_out,
            "realised_slippage_bps": (1 - amount_out / oracle_out) * BPS if oracle_out else 0.0,
        })
    if nav_after is None:  # no Rebalanced event (not expected of a mined rebalance): read it
        nav_after = vault.functions.totalAssets().call(block_identifier=block)
    return {
        "status": "rebalanced",
        "reason": None,
        "tx_hash": tx_hash,
        "fork_tx_block": block,
        "gas_used": int(receipt["gasUsed"], 16),
        "effective_gas_price": int(receipt["effectiveGasPrice"], 16),
        "nav_after": nav_after,
        "nav_change_bps": (nav_after - plan.nav_before) * BPS / plan.nav_before if plan.nav_before else 0.0,
        "epoch_after": vault.functions.rebalanceEpoch().call(block_identifier=block),
        "leg_results": leg_results,
    }


def format_simulation(result: dict[str, Any]) -> str:
    """Plain-text rendering of :func:`simulate_on_fork`'s result."""
    lines = [f"fork of {result['fork_url']} at block {result['fork_block']}, keeper {result['keeper']}: "
             f"{result['status']}" + (f" ({result['reason']})" if result.get("reason") else "")]
    for b in result.get("breakers") or []:
        lines.append(f"  breaker {b['breaker']} -> {b['action']}: {b['reason']}")
    policy = result.get("policy")
    if policy:
        lines.append(f"  policy {policy['action']}: {'; '.join(policy['reasons'])}")
    trigger = result.get("trigger")
    if trigger:
        metrics = trigger.get("metrics") or {}
        money = (f" (benefit {metrics['benefit']:.0f}, cost {metrics['cost']:.0f} base units)"
                 if "benefit" in metrics and "cost" in metrics else "")
        lines.append(f"  trade {'yes' if trigger['rebalance'] else 'no'}: {'; '.join(trigger['reasons'])}{money}")
    if "nav_before" in result:
        lines.append(f"  NAV before {result['nav_before']}" + (
            f", after {result['nav_after']} ({result['nav_change_bps']:+.2f} bps)" if "nav_after" in result else ""))
        lines.append(f"  drift {result['drift_bps']:.1f} bps, turnover {result['turnover_bps']:.1f} bps, "
                     f"epoch {result['epoch_before']} -> {result.get('epoch_after')}")
    for leg in result.get("leg_results") or []:
        lines.append(f"  leg {leg['index']} {leg['symbol']:<5} {leg['side']:<4} in {leg['amount_in']} out "
                     f"{leg['amount_out']} (oracle {leg['oracle_amount_out']}, min {leg['min_amount_out']}) "
                     f"slippage {leg['realised_slippage_bps']:.2f} bps")
    if result.get("gas_used"):
        lines.append(f"  gas used {result['gas_used']}")
    return "\n".join(lines)


__all__ = ["FORK_KEEPER_BALANCE_WEI", "format_simulation", "simulate_on_fork"]
