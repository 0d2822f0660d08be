"""keeper.txmanager on Anvil: nonces, write-ahead sends, stuck replacement and cancellation,
reconciliation with the chain, private submission.

Transactions here are plain ETH transfers from the keeper's account to ``bob``, so that "no funds lost"
is exact to the wei: bob receives the value exactly once, and the keeper pays the value plus the gas of
the one transaction that was mined at each nonce.
"""

from __future__ import annotations

import http.server
import json
import threading
import urllib.request

import pytest
from conftest import System
from eth_account import Account

from keeper.chain import ANVIL_KEYS, connect, free_port, rpc
from keeper.errors import (
    NonceConflictError,
    PendingTransactionError,
    ReplacementFeeCapError,
    SubmissionError,
    TransactionFailedError,
    TransactionStuckError,
)
from keeper.gas import GWEI, FeePolicy, Fees
from keeper.journal import Journal
from keeper.txmanager import TRANSFER_GAS, TxManager, TxPolicy

VALUE = 10**18 + 7


def make_manager(chain: System, journal: Journal | None = None, validator=None, fee_policy=None, **policy) -> TxManager:
    return TxManager(
        chain.w3,
        Account.from_key(ANVIL_KEYS[1]),
        journal or Journal(":memory:"),
        fee_policy or FeePolicy.from_gwei(300, 2, fee_history_blocks=5, min_priority_fee_gwei=0.1),
        TxPolicy(**policy),
        validator=validator,
    )


def transfer(manager: TxManager, fees: Fees | None = None):
    """Sends ``VALUE`` wei from the keeper to bob through ``manager``."""
    fees = fees or manager.fee_policy.estimate(manager.w3)
    bob = Account.from_key(ANVIL_KEYS[5]).address
    return manager.submit(to=bob, data="0x", gas_limit=TRANSFER_GAS, fees=fees, kind="transfer", value=VALUE)


class Crash(BaseException):
    """Stands for the process dying at a checkpoint (not an Exception: nothing may catch it)."""


def crash_at(checkpoint: str):
    def hook(point, record):
        if point == checkpoint:
            raise Crash(point)

    return hook


@pytest.fixture
def sys_(chain: System) -> System:
    assert chain.bob == Account.from_key(ANVIL_KEYS[5]).address
    return chain


@pytest.fixture
def base_fee_restored(sys_: System):
    """Puts the next block's base fee back after the test (Anvil keeps a raised one across ``evm_revert``)."""
    next_base_fee = rpc(sys_.w3, "eth_feeHistory", ["0x1", "latest", []])["baseFeePerGas"][-1]
    yield sys_
    rpc(sys_.w3, "anvil_setNextBlockBaseFeePerGas", [next_base_fee])


@pytest.fixture
def paused(base_fee_restored: System):
    """Mining paused (``evm_setAutomine false``); after the test the mempool is emptied and automine restored."""
    w3 = base_fee_restored.w3
    rpc(w3, "evm_setAutomine", [False])
    yield base_fee_restored
    rpc(w3, "anvil_dropAllTransactions", [])
    rpc(w3, "evm_setAutomine", [True])


def balance(chain: System, who: str) -> int:
    return chain.w3.eth.get_balance(chain.w3.to_checksum_address(who))


def gas_paid(chain: System, tx_hash: str) -> int:
    receipt = chain.w3.eth.get_transaction_receipt(tx_hash)
    return receipt["gasUsed"] * receipt["effectiveGasPrice"]


def mine_expensive(chain: System, base_fee_wei: int, blocks: int = 1) -> None:
    """Mines ``blocks`` blocks whose base fee is ``base_fee_wei``: cheaper transactions stay out (Anvil evicts them)."""
    for _ in range(blocks):
        rpc(chain.w3, "anvil_setNextBlockBaseFeePerGas", [hex(base_fee_wei)])
        rpc(chain.w3, "evm_mine", [])


def test_a_transfer_is_journalled_before_it_is_sent_and_settled_exactly(sys_: System) -> None:
    chain = sys_
    seen = []
    manager = make_manager(chain)
    manager.fault_hook = lambda point, rec: seen.append((point, manager.journal.transaction(rec.id).status,
                                                         chain.w3.eth.get_transaction_count(chain.keeper)))
    nonce = chain.w3.eth.get_transaction_count(chain.keeper)
    keeper0, bob0 = balance(chain, chain.keeper), balance(chain, chain.bob)
    row = transfer(manager)
    # At "after_journal" the row was committed as intended and nothing had reached the chain.
    assert seen == [("after_journal", "intended", nonce), ("after_send", "intended", nonce + 1)]
    assert row.status == "sent" and row.nonce == nonce and row.sent_block is not None
    outcome = manager.wait(row, 10)
    assert outcome.record.status == "mined" and outcome.record.hash == row.hash
    assert balance(chain, chain.bob) - bob0 == VALUE
    assert keeper0 - balance(chain, chain.keeper) == VALUE + gas_paid(chain, row.hash)
    assert manager.reconcile().entries == ()  # nothing live: nothing to do


def test_next_nonce_follows_other_senders_and_the_journal(sys_: System) -> None:
    chain = sys_
    manager = make_manager(chain)
    start = manager.next_nonce()
    chain.tx.send(chain.keeper, chain.alice, b"", value=1)  # the same account used outside the manager
    assert manager.next_nonce() == start + 1
    # A live journalled transaction the node has not seen (e.g. sent through a relay) reserves its nonce.
    manager.journal.record_intended_tx(
        kind="transfer", sender=chain.keeper, nonce=start + 4, tx_hash="0x" + "ee" * 32, raw_tx="0x00",
        to_address=chain.bob, calldata="0x", value=0, gas_limit=TRANSFER_GAS, max_fee_per_gas=1,
        max_priority_fee_per_gas=0,
    )
    assert manager.next_nonce() == start + 5


def test_nonce_taken_by_another_sender_between_journal_and_send_is_resynced(sys_: System) -> None:
    chain = sys_
    manager = make_manager(chain)
    bob0 = balance(chain, chain.bob)
    fired = []

    def intruder(point, record):
        if point == "after_journal" and not fired:
            fired.append(record)
            chain.tx.send(chain.keeper, chain.alice, b"", value=1)  # takes our nonce first

    manager.fault_hook = intruder
    row = transfer(manager)
    first = manager.journal.transaction(fired[0].id)
    assert first.status == "dropped" and "nonce too low" in first.note
    assert row.nonce == first.nonce + 1 and row.status == "sent"
    assert manager.wait(row, 10).record.status == "mined"
    assert balance(chain, chain.bob) - bob0 == VALUE  # paid exactly once


def test_nonce_taken_at_every_retry_raises(sys_: System) -> None:
    chain = sys_
    manager = make_manager(chain)

    def intruder(point, record):
        if point == "after_journal":  # every time: the nonce is always taken first
            chain.tx.send(chain.keeper, chain.alice, b"", value=1)

    manager.fault_hook = intruder
    bob0 = balance(chain, chain.bob)
    with pytest.raises(NonceConflictError, match="3 times"):
        transfer(manager)
    assert [r.status for r in manager.journal.transactions()] == ["dropped"] * 3
    assert balance(chain, chain.bob) == bob0


def test_underpriced_stuck_transfer_is_replaced_with_bumped_fees_and_mined_once(paused: System) -> None:
    chain = paused
    manager = make_manager(chain, stuck_after_blocks=1, stuck_after_seconds=3600)
    keeper0, bob0 = balance(chain, chain.keeper), balance(chain, chain.bob)
    base = chain.w3.eth.get_block("latest")["baseFeePerGas"]
    cheap = Fees(base + GWEI // 10, GWEI // 10, base)
    row = transfer(manager, cheap)
    assert not manager.is_stuck(row)
    expensive = max(10 * cheap.max_fee_per_gas, 20 * GWEI)
    mine_expensive(chain, expensive)  # the base fee jumps above our max fee: the transfer stays out
    assert manager.poll(row.nonce) is None
    row = manager.journal.transaction(row.id)
    assert manager.is_stuck(row)
    replacement = manager.unstick(row)
    assert replacement.nonce == row.nonce and replacement.replaces == row.id and replacement.kind == "transfer"
    assert replacement.max_fee_per_gas * 10 >= row.max_fee_per_gas * 11
    assert replacement.max_priority_fee_per_gas * 10 >= row.max_priority_fee_per_gas * 11
    assert replacement.max_fee_per_gas > expensive * 7 // 8  # follows the market's next base fee
    mine_expensive(chain, expensive)
    outcome = manager.poll(row.nonce)
    assert outcome is not None and outcome.record.id == replacement.id and outcome.record.status == "mined"
    assert [(r.id, r.status, r.replaced_by) for r in outcome.attempts] == [
        (row.id, "replaced", replacement.id), (replacement.id, "mined", None)
    ]
    assert chain.w3.provider.make_request("eth_getTransactionReceipt", [row.hash])["result"] is None
    assert balance(chain, chain.bob) - bob0 == VALUE
    assert keeper0 - balance(chain, chain.keeper) == VALUE + gas_paid(chain, replacement.hash)


def test_wait_replaces_by_age_in_seconds_and_stops_at_the_bump_limit(paused: System) -> None:
    chain = paused
    manager = make_manager(chain, stuck_after_seconds=0.05, stuck_after_blocks=10**6, max_fee_bumps=2)
    base = chain.w3.eth.get_block("latest")["baseFeePerGas"]
    row = transfer(manager, Fees(base + GWEI // 10, GWEI // 10, base))
    with pytest.raises(TransactionStuckError, match=r"no receipt after 4 s \(3 attempts\); not replaced: .*2 fee bumps"):
        manager.wait(row, 4)  # nothing is mined: two replacements, then it waits without bumping again
    attempts = manager.journal.transactions(nonce=row.nonce)
    assert len(attempts) == 3 and all(r.status == "sent" for r in attempts)
    assert [r.replaces for r in attempts] == [None, attempts[0].id, attempts[1].id]
    fees = [r.max_fee_per_gas for r in attempts]
    assert all(b * 10 >= a * 11 for a, b in zip(fees, fees[1:]))  # geometric
    # The node holds only the newest attempt; mining settles the nonce on it, the others are replaced.
    rpc(chain.w3, "evm_mine", [])
    report = manager.reconcile()
    assert report.clean and report.count("mined") == 1 and report.count("replaced") == 2


def test_stuck_transaction_that_is_no_longer_valid_is_cancelled(paused: System) -> None:
    chain = paused
    verdict = {"reason": None}
    manager = make_manager(chain, validator=lambda rec: verdict["reason"], stuck_after_blocks=1)
    bob0, keeper0 = balance(chain, chain.bob), balance(chain, chain.keeper)
    base = chain.w3.eth.get_block("latest")["baseFeePerGas"]
    cheap = Fees(base + GWEI // 10, GWEI // 10, base)
    row = manager.submit(to=chain.bob, data="0x", gas_limit=TRANSFER_GAS, fees=cheap, kind="rebalance", value=VALUE,
                         epoch=0, deadline=10**12)
    mine_expensive(chain, 20 * GWEI)
    verdict["reason"] = "the vault is at epoch 1, the transaction was for epoch 0"
    cancel = manager.unstick(manager.journal.transaction(row.id))
    assert cancel.kind == "cancel" and cancel.to_address.lower() == chain.keeper.lower() and cancel.value == 0
    assert cancel.gas_limit == TRANSFER_GAS and cancel.nonce == row.nonce
    assert "epoch 1" in manager.journal.transaction(row.id).note
    mine_expensive(chain, 20 * GWEI)
    outcome = manager.poll(row.nonce)
    assert outcome.record.id == cancel.id and manager.journal.transaction(row.id).status == "cancelled"
    assert balance(chain, chain.bob) == bob0  # the transfer never happened
    assert keeper0 - balance(chain, chain.keeper) == gas_paid(chain, cancel.hash)


def test_replacement_refused_when_the_cap_leaves_no_room(paused: System) -> None:
    chain = paused
    base = chain.w3.eth.get_block("latest")["baseFeePerGas"]
    cap_gwei = (base + GWEI) / GWEI
    manager = make_manager(chain, fee_policy=FeePolicy.from_gwei(cap_gwei, 1), stuck_after_blocks=1)
    row = transfer(manager, Fees(base + GWEI, GWEI, base))  # already at both caps
    mine_expensive(chain, 20 * GWEI)
    with pytest.raises(ReplacementFeeCapError):
        manager.unstick(manager.journal.transaction(row.id))
    assert len(manager.journal.transactions()) == 1


def test_ensure_idle_refuses_while_a_transaction_is_pending(paused: System) -> None:
    chain = paused
    manager = make_manager(chain)
    row = transfer(manager)
    with pytest.raises(PendingTransactionError, match=row.hash):
        manager.ensure_idle()
    rpc(chain.w3, "evm_mine", [])
    manager.ensure_idle()  # settles it on the way
    assert manager.journal.transaction(row.id).status == "mined"


def test_reconcile_rebroadcasts_an_intended_transaction_that_never_left(sys_: System) -> None:
    chain = sys_
    journal = Journal(":memory:")
    crashed = make_manager(chain, journal)
    crashed.fault_hook = crash_at("after_journal")  # the process dies after the commit, before the send
    bob0 = balance(chain, chain.bob)
    with pytest.raises(Crash):
        transfer(crashed)
    [row] = journal.transactions()
    assert row.status == "intended" and chain.w3.eth.get_transaction_count(chain.keeper) == row.nonce
    report = make_manager(chain, journal).reconcile(wait_seconds=10)
    [entry] = report.entries
    assert (entry.status_before, entry.status_after) == ("intended", "mined")
    assert "rebroadcast" in entry.action and report.clean
    assert balance(chain, chain.bob) - bob0 == VALUE
    again = make_manager(chain, journal).reconcile(wait_seconds=1)  # idempotent
    assert again.entries == () and balance(chain, chain.bob) - bob0 == VALUE


def test_reconcile_drops_an_unsent_transaction_that_is_no_longer_valid_and_reuses_its_nonce(sys_: System) -> None:
    chain = sys_
    journal = Journal(":memory:")
    crashed = make_manager(chain, journal)
    crashed.fault_hook = crash_at("after_journal")
    with pytest.raises(Crash):
        transfer(crashed)
    [row] = journal.transactions()
    fresh = make_manager(chain, journal, validator=lambda rec: "deadline 5 passed")
    report = fresh.reconcile()
    assert [(e.status_after, e.action) for e in report.entries] == [
        ("dropped", "never mined and no longer valid: deadline 5 passed")
    ]
    assert fresh.next_nonce() == row.nonce  # the gap is filled by the next transaction


def test_pending_transaction_replaced_by_another_sender_is_dropped(paused: System) -> None:
    chain = paused
    manager = make_manager(chain)
    bob0 = balance(chain, chain.bob)
    row = transfer(manager)
    # Someone else with the keeper's key replaces it at the same nonce with a higher fee.
    response = chain.w3.provider.make_request("eth_sendTransaction", [{
        "from": chain.keeper, "to": chain.alice, "value": "0x1", "nonce": hex(row.nonce), "gas": hex(TRANSFER_GAS),
        "maxFeePerGas": hex(row.max_fee_per_gas * 2), "maxPriorityFeePerGas": hex(row.max_priority_fee_per_gas * 2),
    }])
    assert "result" in response, response
    rpc(chain.w3, "evm_mine", [])
    report = manager.reconcile()
    [entry] = report.entries
    assert entry.status_after == "dropped" and "not in the journal" in entry.action
    assert balance(chain, chain.bob) == bob0
    assert manager.next_nonce() == row.nonce + 1


def test_reconcile_finds_a_sent_transaction_pending_and_waits_for_it(paused: System) -> None:
    chain = paused
    journal = Journal(":memory:")
    crashed = make_manager(chain, journal)
    crashed.fault_hook = crash_at("after_send")
    with pytest.raises(Crash):
        transfer(crashed)
    [row] = journal.transactions()
    assert row.status == "intended"  # the node has it, the journal does not know yet
    fresh = make_manager(chain, journal)
    report = fresh.reconcile()
    assert [e.status_after for e in report.entries] == ["sent"] and not report.clean
    assert "mempool" in report.entries[0].action
    rpc(chain.w3, "evm_mine", [])
    assert fresh.reconcile().count("mined") == 1


# --- Private submission ------------------------------------------------------------------------------


class CountingRelay:
    """A local JSON-RPC relay in front of Anvil that records every method it forwards."""

    def __init__(self, upstream: str) -> None:
        self.methods: list[str] = []
        relay = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server API
                body = self.rfile.read(int(self.headers["Content-Length"]))
                relay.methods.append(json.loads(body)["method"])
                request = urllib.request.Request(upstream, data=body, headers={"Content-Type": "application/json"})
                with urllib.request.urlopen(request) as response:
                    payload = response.read()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_private_endpoint_receives_the_transaction(sys_: System) -> None:
    chain = sys_
    relay = CountingRelay(chain.rpc_url)
    try:
        manager = make_manager(chain)
        manager.send_w3 = connect(relay.url)
        row = transfer(manager)
        assert relay.methods == ["eth_sendRawTransaction"]
        assert manager.wait(row, 10).record.status == "mined"
    finally:
        relay.close()


def test_unreachable_private_endpoint_without_fallback_sends_nothing_and_keeps_the_row(sys_: System) -> None:
    chain = sys_
    manager = make_manager(chain)
    manager.send_w3 = connect(f"http://127.0.0.1:{free_port()}", timeout_seconds=2)
    nonce = chain.w3.eth.get_transaction_count(chain.keeper)
    with pytest.raises(SubmissionError, match="allow_public_fallback is off"):
        transfer(manager)
    [row] = manager.journal.transactions()
    assert row.status == "intended"  # unknown fate: left for reconciliation
    assert chain.w3.eth.get_transaction_count(chain.keeper) == nonce
    with pytest.raises(PendingTransactionError):  # and nothing new goes out while it is unresolved
        manager.ensure_idle()


def test_unreachable_private_endpoint_falls_back_to_the_public_node_when_allowed(sys_: System) -> None:
    chain = sys_
    manager = make_manager(chain, allow_public_fallback=True)
    manager.send_w3 = connect(f"http://127.0.0.1:{free_port()}", timeout_seconds=2)
    row = transfer(manager)
    assert manager.wait(row, 10).record.status == "mined"


def test_refused_transaction_is_dropped_with_the_node_message(sys_: System) -> None:
    chain = sys_
    manager = make_manager(chain)
    poor = Account.create()
    manager.account = poor  # no ETH at all
    with pytest.raises(SubmissionError, match="refused"):
        transfer(manager, Fees(10 * GWEI, GWEI, GWEI))
    [row] = manager.journal.transactions()
    assert row.status == "dropped" and "refused at send" in row.note


def test_wait_raises_when_every_attempt_was_dropped(paused: System) -> None:
    chain = paused
    manager = make_manager(chain)
    row = transfer(manager)
    chain.w3.provider.make_request("eth_sendTransaction", [{
        "from": chain.keeper, "to": chain.alice, "value": "0x1", "nonce": hex(row.nonce), "gas": hex(TRANSFER_GAS),
        "maxFeePerGas": hex(row.max_fee_per_gas * 2), "maxPriorityFeePerGas": hex(row.max_priority_fee_per_gas * 2),
    }])
    rpc(chain.w3, "evm_mine", [])
    with pytest.raises(TransactionFailedError, match="dropped"):
        manager.wait(row, 5)


def test_reconcile_replaces_an_unsent_transaction_the_node_now_refuses_as_underpriced(base_fee_restored: System) -> None:
    chain = base_fee_restored
    journal = Journal(":memory:")
    crashed = make_manager(chain, journal)
    crashed.fault_hook = crash_at("after_journal")
    base = chain.w3.eth.get_block("latest")["baseFeePerGas"]
    bob0 = balance(chain, chain.bob)
    with pytest.raises(Crash):
        transfer(crashed, Fees(base + GWEI // 10, GWEI // 10, base))
    mine_expensive(chain, 50 * GWEI)  # while the keeper was down the base fee rose above the signed max fee
    fresh = make_manager(chain, journal)
    report = fresh.reconcile(wait_seconds=10)
    original, replacement = journal.transactions()
    assert original.status == "replaced" and original.replaced_by == replacement.id
    assert replacement.status == "mined" and replacement.nonce == original.nonce
    assert replacement.max_fee_per_gas > 40 * GWEI
    [entry] = [e for e in report.entries if e.tx_id == replacement.id]
    assert (entry.status_before, entry.status_after) == ("new", "mined") and "rebroadcast was refused" in entry.action
    assert report.clean and balance(chain, chain.bob) - bob0 == VALUE


def test_policies_and_executor_from_config(sys_: System) -> None:
    from keeper.executor import Executor

    chain = sys_
    relay = CountingRelay(chain.rpc_url)
    try:
        config = chain.keeper_config(
            stuck_after_seconds=30, stuck_after_blocks=2, fee_bump_factor=1.2, max_fee_bumps=4,
            private_rpc_url=relay.url, allow_public_fallback=True, base_fee_gate_gwei=80, fee_history_blocks=3,
        )
        assert TxPolicy.from_config(config) == TxPolicy(30, 2, 12_000, 4, True)
        journal = Journal(":memory:")
        executor = Executor.from_config(config, chain.w3, ANVIL_KEYS[1], journal)
        assert executor.journal is journal and executor.tx.journal is journal
        assert executor.fee_policy.base_fee_gate_wei == 80 * GWEI and executor.fee_policy.fee_history_blocks == 3
        assert executor.tx.send_w3 is not None and executor.tx.policy.allow_public_fallback
        row = transfer(executor.tx)
        assert relay.methods == ["eth_sendRawTransaction"] and executor.tx.wait(row, 10).record.status == "mined"
        assert executor.reconcile(wait_seconds=0).entries == ()
        executor.ensure_idle()
    finally:
        relay.close()


def test_a_consumed_nonce_whose_receipt_is_not_indexed_yet_is_not_taken_for_dropped(sys_: System) -> None:
    """A node may report the new nonce a moment before the receipt: while it knows our transaction, poll
    waits for the receipt instead of journalling the transaction as dropped."""
    manager = make_manager(sys_)
    record = transfer(manager)  # automine: mined at once
    real_rpc = manager._rpc
    hidden = {"receipts": True}

    def lagging(method, params):
        if method == "eth_getTransactionReceipt" and hidden["receipts"]:
            return None
        return real_rpc(method, params)

    manager._rpc = lagging
    assert manager.chain_nonce("latest") > record.nonce
    assert manager.poll(record.nonce) is None  # the node knows the transaction: not dropped
    assert manager.journal.transaction(record.id).status == "sent"
    hidden["receipts"] = False
    outcome = manager.poll(record.nonce)
    assert outcome is not None and outcome.record.status == "mined" and outcome.record.hash == record.hash
