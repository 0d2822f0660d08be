"""Fault injection on the keeper's transactions, end to end on Anvil with the real vault and pools.

Scenarios: a rebalance reverted on chain after a successful simulation; an underpriced rebalance stuck
behind a raised base fee, then replaced; the keeper SIGKILLed between journalling and sending, and
between sending and the receipt; the keeper's nonce advanced by another sender; a pending rebalance
that must not be doubled by the next tick; the base-fee gate.

Each asserts that no funds are lost (the vault's holdings change by exactly the legs of the one mined
rebalance, wei for wei, its NAV moves only by that trade, no shares appear or vanish), that no rebalance
happens twice (the epoch advances by exactly one) and that the keeper recovers on its own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import System
from web3.logs import DISCARD

from keeper.chain import ANVIL_KEYS, rpc
from keeper.executor import Executor
from keeper.journal import Journal
from keeper.runner import Keeper
from keeper.txmanager import KILL_AT_ENV

ROOT = Path(__file__).resolve().parents[1]
#: Drift threshold of these keepers, bps: far below the first tick's drift (the vault starts in cash) and far
#: above what is left after one rebalance, so any second rebalance would be a repeat, never a new decision.
DRIFT_BPS = 500


@dataclass(frozen=True)
class VaultState:
    epoch: int
    nav: int
    supply: int
    balances: dict[str, int]  # token address (lower case) -> vault balance, smallest units


def vault_state(chain: System) -> VaultState:
    v = chain.vault.functions
    tokens = [chain.base, *chain.tokens]
    balances = {t.address.lower(): t.functions.balanceOf(chain.vault.address).call() for t in tokens}
    return VaultState(v.rebalanceEpoch().call(), v.totalAssets().call(), v.totalSupply().call(), balances)


def rebalance_deltas(chain: System, tx_hash: str) -> tuple[dict[str, int], tuple[int, int]]:
    """Holdings change implied by the ``LegExecuted`` logs of ``tx_hash``, and (navBefore, navAfter)."""
    receipt = chain.w3.eth.get_transaction_receipt(tx_hash)
    legs = chain.vault.events.LegExecuted().process_receipt(receipt, errors=DISCARD)
    [summary] = chain.vault.events.Rebalanced().process_receipt(receipt, errors=DISCARD)
    deltas: dict[str, int] = {}
    for leg in legs:
        a = leg["args"]
        deltas[a["tokenIn"].lower()] = deltas.get(a["tokenIn"].lower(), 0) - a["amountIn"]
        deltas[a["tokenOut"].lower()] = deltas.get(a["tokenOut"].lower(), 0) + a["amountOut"]
    assert len(legs) == summary["args"]["legCount"] > 0
    return deltas, (summary["args"]["navBefore"], summary["args"]["navAfter"])


def assert_one_rebalance_and_no_loss(chain: System, before: VaultState, tx_hash: str) -> None:
    """The vault changed by exactly the rebalance ``tx_hash``: epoch +1, holdings by its legs, NAV by its trade."""
    after = vault_state(chain)
    assert after.epoch == before.epoch + 1
    deltas, (nav_before, nav_after) = rebalance_deltas(chain, tx_hash)
    for token, amount in before.balances.items():
        assert after.balances[token] == amount + deltas.get(token, 0), token
    assert nav_before == before.nav and after.nav == nav_after
    loss_bps = (nav_before - nav_after) * 10_000 / nav_before
    assert -5 < loss_bps < chain.vault.functions.maxNavLossBps().call()  # pool fees and slippage only
    assert after.supply == before.supply


def tx_keeper(chain: System, journal: Journal, fault_hook=None, **overrides) -> Keeper:
    """A keeper whose executor journals its transactions in ``journal`` (as the runner does in production)."""
    config = chain.keeper_config(**{"drift_threshold_bps": DRIFT_BPS, **overrides})
    keeper = Keeper(config, w3=chain.w3, private_key=ANVIL_KEYS[1], journal=journal)
    keeper.executor = Executor.from_config(config, chain.w3, ANVIL_KEYS[1], journal, fault_hook=fault_hook)
    return keeper


@pytest.fixture
def funded(chain: System) -> System:
    chain.deposit(chain.alice, 150_000)
    chain.deposit(chain.bob, 100_000)
    return chain


@pytest.fixture
def paused(funded: System):
    """Mining paused (``evm_setAutomine false``). After the test the mempool is emptied, automine restored,
    and the next block's base fee put back (Anvil keeps a raised base fee across ``evm_revert``)."""
    w3 = funded.w3
    next_base_fee = rpc(w3, "eth_feeHistory", ["0x1", "latest", []])["baseFeePerGas"][-1]
    rpc(w3, "evm_setAutomine", [False])
    yield funded
    rpc(w3, "anvil_dropAllTransactions", [])
    rpc(w3, "anvil_setNextBlockBaseFeePerGas", [next_base_fee])
    rpc(w3, "evm_setAutomine", [True])


# --- A keeper step in its own process, killed at a checkpoint -------------------------------------------

STEP = r"""
import json, sys
from keeper.chain import ANVIL_KEYS, connect
from keeper.config import KeeperConfig
from keeper.executor import Executor
from keeper.journal import Journal
from keeper.runner import Keeper

config = KeeperConfig(**json.loads(sys.argv[1]))
w3 = connect(config.chain.rpc_url)
journal = Journal(config.operations.journal_path)
keeper = Keeper(config, w3=w3, private_key=ANVIL_KEYS[1], journal=journal)
keeper.executor = Executor.from_config(config, w3, ANVIL_KEYS[1], journal)
reconciled = keeper.executor.reconcile()
report = keeper.run_once()
print(json.dumps({
    "reconciled": [[e.status_before, e.status_after, e.action] for e in reconciled.entries],
    "status": report.status, "reason": report.reason,
    "tx_hash": report.execution.tx_hash if report.execution else None,
}))
"""


def run_step(chain: System, journal_path: Path, kill_at: str | None = None) -> subprocess.CompletedProcess:
    config = chain.keeper_config(journal_path=str(journal_path), drift_threshold_bps=DRIFT_BPS).model_dump(mode="json")
    env = {k: v for k, v in os.environ.items() if k != KILL_AT_ENV}
    if kill_at:
        env[KILL_AT_ENV] = kill_at
    return subprocess.run([sys.executable, "-c", STEP, json.dumps(config)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.parametrize("kill_at", ["after_journal", "after_send"])
def test_sigkill_mid_send_then_a_fresh_process_recovers(funded: System, tmp_path: Path, kill_at: str) -> None:
    chain = funded
    journal_path = tmp_path / "journal.sqlite"
    before = vault_state(chain)
    nonce = chain.w3.eth.get_transaction_count(chain.keeper)
    killed = run_step(chain, journal_path, kill_at)
    assert killed.returncode == -9, killed.stderr[-2000:]  # SIGKILL: no cleanup ran
    journal = Journal(journal_path)
    [row] = journal.transactions()
    assert row.status == "intended" and row.epoch == before.epoch and row.raw_tx.startswith("0x02")
    if kill_at == "after_journal":
        assert vault_state(chain) == before  # nothing reached the chain
        assert chain.w3.eth.get_transaction_count(chain.keeper) == nonce
    else:
        assert vault_state(chain).epoch == before.epoch + 1  # the node had it (and mined it at once)
    journal.close()

    restarted = run_step(chain, journal_path)
    assert restarted.returncode == 0, restarted.stderr[-2000:]
    result = json.loads(restarted.stdout.strip().splitlines()[-1])
    expected_action = "rebroadcast from its signed bytes" if kill_at == "after_journal" else "receipt found: mined"
    assert result["reconciled"] == [["intended", "mined", expected_action]]
    # The restarted keeper's own tick finds the vault already at its targets: no second rebalance.
    assert result["status"] == "skipped" and result["reason"] == "no trigger fired", result
    assert chain.w3.eth.get_transaction_count(chain.keeper) == nonce + 1
    journal = Journal(journal_path)
    [row] = journal.transactions()
    assert row.status == "mined"
    assert_one_rebalance_and_no_loss(chain, before, row.hash)
    ticks = journal.ticks()
    assert [t["status"] for t in ticks] == ["skipped"]  # the killed process never journalled its tick
    journal.close()


def test_sigkill_after_send_with_mining_paused_reconciles_the_pending_transaction(paused: System, tmp_path: Path) -> None:
    chain = paused
    journal_path = tmp_path / "journal.sqlite"
    before = vault_state(chain)
    killed = run_step(chain, journal_path, "after_send")
    assert killed.returncode == -9, killed.stderr[-2000:]
    journal = Journal(journal_path)
    executor = tx_keeper(chain, journal).executor
    report = executor.reconcile(wait_seconds=0)
    assert [(e.status_before, e.status_after) for e in report.entries] == [("intended", "sent")]
    assert not report.clean and vault_state(chain) == before
    rpc(chain.w3, "evm_mine", [])
    report = executor.reconcile(wait_seconds=0)
    assert [(e.status_before, e.status_after) for e in report.entries] == [("sent", "mined")] and report.clean
    rpc(chain.w3, "evm_setAutomine", [True])
    again = tx_keeper(chain, journal).run_once()
    assert again.status == "skipped" and again.reason == "no trigger fired", again.reason
    [row] = journal.transactions()
    assert_one_rebalance_and_no_loss(chain, before, row.hash)


# --- In-process faults --------------------------------------------------------------------------------------


def test_revert_on_chain_after_a_successful_simulation(funded: System) -> None:
    """Another keeper lands the same epoch's rebalance between our simulation and our send."""
    chain = funded
    rival = chain.alice
    role = chain.vault.functions.KEEPER_ROLE().call()
    chain.tx.transact(chain.owner, chain.vault.functions.grantRole(role, rival))
    before = vault_state(chain)
    rival_hashes = []

    def rival_lands_first(point, record):
        if point == "after_journal" and not rival_hashes:
            receipt = chain.tx.send(rival, chain.vault.address, record.calldata)  # raw JSON-RPC receipt
            rival_hashes.append(receipt["transactionHash"])

    journal = Journal(":memory:")
    keeper = tx_keeper(chain, journal, fault_hook=rival_lands_first)
    keeper0 = chain.w3.eth.get_balance(chain.keeper)
    report = keeper.run_once()
    assert report.status == "skipped" and report.reason_code == "lost_race_onchain" and "reverted on chain" in report.reason
    [row] = journal.transactions()
    assert row.status == "reverted" and row.gas_used > 0
    # Only the rival's rebalance happened; ours cost the keeper its gas and nothing else.
    assert_one_rebalance_and_no_loss(chain, before, rival_hashes[0])
    assert keeper0 - chain.w3.eth.get_balance(chain.keeper) == row.gas_used * row.effective_gas_price
    # The next tick plans from the new state and does not repeat the rebalance.
    following = keeper.run_once()
    assert following.status == "skipped" and following.reason == "no trigger fired", following.reason
    assert vault_state(chain).epoch == before.epoch + 1


def test_nonce_advanced_by_another_sender_before_and_during_the_tick(funded: System) -> None:
    chain = funded
    before = vault_state(chain)
    chain.tx.send(chain.keeper, chain.alice, b"", value=1)  # the keeper's account used elsewhere, before
    taken = []

    def intruder(point, record):
        if point == "after_journal" and not taken:  # ... and again between our journal and our send
            taken.append(record)
            chain.tx.send(chain.keeper, chain.alice, b"", value=1)

    journal = Journal(":memory:")
    keeper = tx_keeper(chain, journal, fault_hook=intruder)
    nonce = chain.w3.eth.get_transaction_count(chain.keeper)
    report = keeper.run_once()
    assert report.status == "rebalanced", report.reason
    first, second = journal.transactions()
    assert first.nonce == nonce and first.status == "dropped" and "nonce too low" in first.note
    assert second.nonce == nonce + 1 and second.status == "mined" and second.hash == report.execution.tx_hash
    assert_one_rebalance_and_no_loss(chain, before, second.hash)


def _keeper_pending(chain: System) -> list[dict]:
    pool = rpc(chain.w3, "txpool_content", [])["pending"]
    return list(pool.get(chain.keeper.lower(), {}).values())


def test_underpriced_rebalance_stuck_behind_a_base_fee_spike_is_replaced_and_mined_once(paused: System) -> None:
    chain = paused
    before = vault_state(chain)
    journal = Journal(":memory:")
    keeper = tx_keeper(chain, journal, stuck_after_blocks=1, stuck_after_seconds=3600, receipt_timeout_seconds=60)
    spike = 50 * 10**9
    log: list[str] = []

    def miner() -> None:
        """Mines one block at a base-fee spike once the keeper's transaction is in the pool (it stays
        out), then mines normally once a different transaction of the keeper shows up (the replacement)."""
        end = time.monotonic() + 60
        first = None
        while time.monotonic() < end:
            pending = _keeper_pending(chain)
            if pending and first is None:
                first = pending[0]["hash"]
                rpc(chain.w3, "anvil_setNextBlockBaseFeePerGas", [hex(spike)])
                rpc(chain.w3, "evm_mine", [])
                log.append("spike")
            elif pending and pending[0]["hash"] != first:
                rpc(chain.w3, "anvil_setNextBlockBaseFeePerGas", [hex(spike)])
                rpc(chain.w3, "evm_mine", [])
                log.append("mined")
                return
            time.sleep(0.02)

    thread = threading.Thread(target=miner, daemon=True)
    thread.start()
    report = keeper.run_once()
    thread.join(10)
    assert log == ["spike", "mined"]
    assert report.status == "rebalanced", report.reason
    rows = journal.transactions()
    assert len(rows) == 2, [(r.id, r.status, r.replaces, r.max_fee_per_gas, r.sent_block, r.note) for r in rows]
    original, replacement = rows
    assert original.status == "replaced" and original.replaced_by == replacement.id
    assert replacement.status == "mined" and replacement.replaces == original.id and replacement.nonce == original.nonce
    assert original.max_fee_per_gas < spike <= replacement.max_fee_per_gas
    assert replacement.max_priority_fee_per_gas * 10 >= original.max_priority_fee_per_gas * 11
    assert report.execution.tx_hash == replacement.hash
    assert chain.w3.provider.make_request("eth_getTransactionReceipt", [original.hash])["result"] is None
    assert_one_rebalance_and_no_loss(chain, before, replacement.hash)


def test_a_pending_rebalance_is_not_doubled_by_the_next_tick(paused: System) -> None:
    chain = paused
    before = vault_state(chain)
    journal = Journal(":memory:")
    keeper = tx_keeper(chain, journal, receipt_timeout_seconds=0.5, stuck_after_seconds=3600)
    first = keeper.run_once()
    assert first.status == "skipped" and "TransactionStuckError" in first.reason
    second = keeper.run_once()  # the rebalance is still pending: nothing new is sent
    assert second.status == "skipped" and "PendingTransactionError" in second.reason
    assert len(_keeper_pending(chain)) == 1 and len(journal.transactions()) == 1
    rpc(chain.w3, "evm_mine", [])
    third = keeper.run_once()  # the first is mined: the vault is on target, nothing to send
    assert third.status == "skipped" and third.reason == "no trigger fired", third.reason
    # The third tick settled the journalled transaction before planning: nothing is left to reconcile.
    assert keeper.executor.reconcile(wait_seconds=0).entries == ()
    [row] = journal.transactions()
    assert row.status == "mined"
    assert_one_rebalance_and_no_loss(chain, before, row.hash)


def test_base_fee_gate_skips_the_tick_and_sends_nothing(funded: System) -> None:
    chain = funded
    base = chain.w3.eth.get_block("latest")["baseFeePerGas"]
    journal = Journal(":memory:")
    keeper = tx_keeper(chain, journal, base_fee_gate_gwei=base / 2 / 1e9)
    nonce = chain.w3.eth.get_transaction_count(chain.keeper)
    report = keeper.run_once()
    assert report.status == "skipped" and "BaseFeeAboveGateError" in report.reason and "gate" in report.reason
    assert chain.w3.eth.get_transaction_count(chain.keeper) == nonce and journal.transactions() == []
