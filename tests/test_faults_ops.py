"""Fault injection against a real Anvil: RPC errors and timeouts, the node killed and restarted mid-tick,
three keeper processes racing for one epoch.

Every scenario asserts the same three things: no funds are lost (share supply unchanged, NAV within
the vault's loss bound, no stray transfers), no rebalance happens twice (``rebalanceEpoch`` counts
rebalances exactly: it moves by one per successful ``rebalance``), and the keeper recovers on its own
(the next tick, with no operator action, succeeds or correctly finds nothing to do).

Each test runs on its own copy of the session chain (``anvil_dumpState`` → a new Anvil →
``anvil_loadState``), which it may kill and restart on the same port.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import USDC, System
from test_rpc import RpcProxy

from keeper.chain import ANVIL_KEYS, AnvilProcess, DevSender, connect, contract, dev_accounts, free_port, rpc
from keeper.journal import Journal
from keeper.runner import Keeper
from keeper.status import read_journal

ROOT = Path(__file__).resolve().parents[1]


class KillableChain:
    """A copy of the session chain on its own Anvil; :meth:`kill` returns the state to :meth:`restart` with.

    A restarted node comes back on a new port and is reachable (through the proxies registered in
    ``proxies``) only once its state is loaded, as a real node serves only after opening its database.
    It keeps 256 recent states, as a full node does, so reads at a block just behind the head work
    while other keepers' transactions are mined.
    """

    def __init__(self, system: System) -> None:
        self.deployment = system.deployment
        self.proxies: list[RpcProxy] = []
        self._start(rpc(system.w3, "anvil_dumpState", []), system.w3.eth.get_block("latest")["timestamp"])

    def _start(self, state: str, timestamp: int) -> None:
        self.anvil = AnvilProcess(timestamp=timestamp + 1, history_states=256)
        self.url = self.anvil.rpc_url
        self.w3 = connect(self.url)
        assert rpc(self.w3, "anvil_loadState", [state])
        for proxy in self.proxies:
            proxy.upstream = self.url
        self.tx = DevSender(self.w3)
        self.vault = contract(self.w3, "RiskParityVault", self.deployment.vault)
        self.base = contract(self.w3, "TestToken", self.deployment.base_asset)

    def kill(self) -> tuple[str, int]:
        """Dumps the state, then SIGKILLs the node (no clean shutdown). Returns (state, latest timestamp).

        Anvil answers ``eth_sendRawTransaction`` before its automine task has mined the transaction; the
        dump waits for the pool to drain so that a node killed after a send dies with the transaction
        mined (the scenario under test), not with it still pending.
        """
        deadline = time.monotonic() + 10.0
        while rpc(self.w3, "txpool_status", [])["pending"] not in (0, "0x0") and time.monotonic() < deadline:
            time.sleep(0.01)
        state = rpc(self.w3, "anvil_dumpState", [])
        timestamp = self.w3.eth.get_block("latest")["timestamp"]
        self.anvil.process.kill()
        self.anvil.process.wait()
        self.anvil.stop()
        return state, timestamp

    def restart(self, saved: tuple[str, int]) -> None:
        self._start(*saved)

    def stop(self) -> None:
        self.anvil.stop()

    # --- the checks every scenario makes ---

    def ledger(self, accounts: list[str]) -> dict[str, Any]:
        v = self.vault.functions
        return {
            "epoch": v.rebalanceEpoch().call(),
            "total_supply": v.totalSupply().call(),
            "total_assets": v.totalAssets().call(),
            "nonces": {a: self.w3.eth.get_transaction_count(a) for a in accounts},
            "balances": {a: self.w3.eth.get_balance(a) for a in accounts},
        }

    def assert_no_funds_lost(self, before: dict[str, Any], after: dict[str, Any]) -> None:
        assert after["total_supply"] == before["total_supply"]
        max_loss = self.vault.functions.maxNavLossBps().call()
        assert after["total_assets"] * 10_000 >= before["total_assets"] * (10_000 - max_loss)
        assert after["total_assets"] <= before["total_assets"]  # trading costs only, nothing appears or vanishes


@pytest.fixture
def node(system: System):
    chain = KillableChain(system)
    yield chain
    chain.stop()


@pytest.fixture
def proxy(node: KillableChain):
    p = RpcProxy(node.url, slow_seconds=1.0)
    node.proxies.append(p)
    yield p
    p.stop()


def _keeper(node: KillableChain, url: str, tmp_path: Path, key: str = ANVIL_KEYS[1], **overrides: Any) -> Keeper:
    values = dict(rpc_url=url, vault_address=node.deployment.vault, quoter_address=node.deployment.quoter,
                  lookback_days=45, min_observations=30, half_life_days=20, drift_threshold_bps=100,
                  rpc_timeout_seconds=0.5, rpc_max_attempts=4, rpc_backoff_initial_seconds=0.05,
                  rpc_backoff_max_seconds=0.2, journal_path=tmp_path / "journal.sqlite")
    values.update(overrides)
    from keeper.config import KeeperConfig

    config = KeeperConfig(**values)
    return Keeper(config, private_key=key, journal=Journal(config.operations.journal_path))


def _deposit(node: KillableChain, usd: float) -> None:
    alice = dev_accounts()[4]
    node.tx.transact(alice, node.vault.functions.deposit(int(usd * USDC), alice))


KEEPER = dev_accounts()[1]


def test_rpc_errors_timeouts_and_a_dead_primary_are_ridden_through(node: KillableChain, proxy: RpcProxy, tmp_path) -> None:
    _deposit(node, 150_000)
    dead = f"http://127.0.0.1:{free_port()}"
    keeper = _keeper(node, dead, tmp_path, rpc_fallback_urls=[proxy.url], rpc_max_attempts=6)
    before = node.ledger([KEEPER])
    proxy.fail(2, "503", {"eth_call"})
    proxy.fail(1, "timeout", {"eth_estimateGas"})
    proxy.fail(1, "-32005", {"eth_getBlockByNumber"})
    proxy.fail(1, "429", {"eth_sendRawTransaction"})
    proxy.fail(1, "html", {"eth_getTransactionReceipt"})
    report = keeper.run_once()
    assert report.status == "rebalanced", report.reason
    after = node.ledger([KEEPER])
    assert after["epoch"] == before["epoch"] + 1 and after["nonces"][KEEPER] == before["nonces"][KEEPER] + 1
    assert proxy.count("eth_sendRawTransaction") == 2  # refused once by the gateway, sent once
    stats = keeper.w3.provider.stats
    assert stats.failovers >= 1 and stats.retries >= 6 and stats.exhausted == 0
    node.assert_no_funds_lost(before, after)
    assert keeper.run_once().reason_code == "no_trade_needed"


def test_rpc_down_longer_than_the_retry_budget_skips_then_recovers(node: KillableChain, proxy: RpcProxy, tmp_path) -> None:
    _deposit(node, 150_000)
    keeper = _keeper(node, proxy.url, tmp_path)
    before = node.ledger([KEEPER])
    proxy.fail(10_000, "503")
    down = keeper.run_once()
    assert down.status == "skipped" and down.reason_code == "RpcUnavailableError"
    assert "failed on every RPC endpoint" in down.reason
    proxy.clear()
    assert node.ledger([KEEPER]) == before  # nothing was sent
    up = keeper.run_once()
    assert up.status == "rebalanced", up.reason
    after = node.ledger([KEEPER])
    assert after["epoch"] == before["epoch"] + 1
    node.assert_no_funds_lost(before, after)
    rows = keeper.journal.ticks()
    assert [r["status"] for r in rows] == ["skipped", "rebalanced"]


def _kill_on(proxy: RpcProxy, node: KillableChain, method: str, restart_after_seconds: float | None,
             after_answer: bool = False) -> dict[str, Any]:
    """Kills the node the first time ``method`` passes the proxy (before forwarding it, or after the node
    answered when ``after_answer``); restarts it from the dumped state ``restart_after_seconds`` later."""
    events: dict[str, Any] = {}

    def act(seen: str, *_: Any) -> None:
        if seen != method or "saved" in events:
            return
        events["saved"] = node.kill()
        events["killed_at"] = time.monotonic()
        if restart_after_seconds is not None:
            def later() -> None:
                time.sleep(restart_after_seconds)
                node.restart(events["saved"])
                events["restarted_at"] = time.monotonic()

            threading.Thread(target=later, daemon=True).start()

    if after_answer:
        proxy.after_hook = act
    else:
        proxy.hook = act
    return events


def test_anvil_killed_between_read_and_send_and_back_within_the_retry_window(node: KillableChain, proxy: RpcProxy,
                                                                             tmp_path) -> None:
    _deposit(node, 150_000)
    keeper = _keeper(node, proxy.url, tmp_path, rpc_max_attempts=20, rpc_backoff_max_seconds=0.5)
    before = node.ledger([KEEPER])
    events = _kill_on(proxy, node, "eth_estimateGas", restart_after_seconds=1.0)
    report = keeper.run_once()
    assert "restarted_at" in events and events["restarted_at"] - events["killed_at"] >= 1.0
    assert report.status == "rebalanced", report.reason  # the in-flight tick rode through the outage
    after = node.ledger([KEEPER])
    assert after["epoch"] == before["epoch"] + 1 and after["nonces"][KEEPER] == before["nonces"][KEEPER] + 1
    node.assert_no_funds_lost(before, after)


def test_anvil_killed_between_read_and_send_and_back_late(node: KillableChain, proxy: RpcProxy, tmp_path) -> None:
    _deposit(node, 150_000)
    keeper = _keeper(node, proxy.url, tmp_path)
    before = node.ledger([KEEPER])
    events = _kill_on(proxy, node, "eth_estimateGas", restart_after_seconds=None)
    down = keeper.run_once()
    assert down.status == "skipped" and down.reason_code == "RpcUnavailableError"
    node.restart(events["saved"])
    assert node.ledger([KEEPER]) == before  # nothing reached the chain
    up = keeper.run_once()  # the same keeper object, no operator action
    assert up.status == "rebalanced", up.reason
    after = node.ledger([KEEPER])
    assert after["epoch"] == before["epoch"] + 1
    node.assert_no_funds_lost(before, after)


def test_anvil_killed_after_the_send_before_the_receipt(node: KillableChain, proxy: RpcProxy, tmp_path) -> None:
    _deposit(node, 150_000)
    # A timeout long enough for the send's answer to arrive (the kill dumps the state first); the receipt
    # polls then meet a dead node.
    keeper = _keeper(node, proxy.url, tmp_path, rpc_timeout_seconds=30)
    before = node.ledger([KEEPER])
    events = _kill_on(proxy, node, "eth_sendRawTransaction", restart_after_seconds=None, after_answer=True)
    lost = keeper.run_once()
    # The transaction was mined, but the keeper could not see its receipt: it says so and moves on, and
    # the write-ahead journal still holds the signed transaction as live.
    assert lost.status == "skipped" and lost.reason_code == "RpcUnavailableError"
    (pending,) = keeper.journal.transactions(live=True)
    assert pending.kind == "rebalance" and pending.status in ("intended", "sent")  # the node died before "sent" was read back
    node.restart(events["saved"])
    after = node.ledger([KEEPER])
    assert after["epoch"] == before["epoch"] + 1 and after["nonces"][KEEPER] == before["nonces"][KEEPER] + 1
    again = keeper.run_once()  # settles the journalled transaction, re-plans: nothing left to do
    assert again.status == "skipped" and again.reason_code == "no_trade_needed", again.reason
    # Settled: "mined" when the restarted node still has the receipt; "dropped" when its reloaded state holds
    # the effect (nonce consumed) but not the receipt. Either way nothing is live and nothing is re-sent.
    assert keeper.journal.transactions(live=True) == []
    (settled,) = keeper.journal.transactions()
    assert settled.hash == pending.hash and settled.status in ("mined", "dropped")
    assert node.ledger([KEEPER]) == after  # not rebalanced twice, no second transaction
    node.assert_no_funds_lost(before, after)


# --- Three keeper processes -----------------------------------------------------------------------


RACERS = [(dev_accounts()[i], ANVIL_KEYS[i]) for i in (6, 7, 8)]


def _spawn(config_values: dict[str, Any], tmp_path: Path, name: str, key: str) -> subprocess.Popen:
    from keeper.config import KeeperConfig

    path = tmp_path / f"{name}.json"
    path.write_text(KeeperConfig(**config_values).model_dump_json())
    env = dict(os.environ, KEEPER_PRIVATE_KEY=key, PYTHONUNBUFFERED="1", OPENBLAS_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-m", "keeper.cli", "run", "--config", str(path)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _race(node: KillableChain, url: str, tmp_path: Path, delays: list[float]) -> tuple[list[list[dict]], dict, dict, list]:
    owner = dev_accounts()[0]
    role = node.vault.functions.KEEPER_ROLE().call()
    for address, _ in RACERS:
        node.tx.transact(owner, node.vault.functions.grantRole(role, address))
    _deposit(node, 200_000)
    accounts = [a for a, _ in RACERS]
    before = node.ledger(accounts)
    start_block = node.w3.eth.block_number
    journals = [tmp_path / f"journal-{i}.sqlite" for i in range(3)]
    processes, outputs = [], []
    for i, ((_, key), delay) in enumerate(zip(RACERS, delays)):
        values = dict(rpc_url=url, vault_address=node.deployment.vault, quoter_address=node.deployment.quoter,
                      lookback_days=45, min_observations=30, half_life_days=20, drift_threshold_bps=100,
                      interval_seconds=2.0, heartbeat_seconds=30, rpc_timeout_seconds=120,
                      standby_delay_seconds=delay, journal_path=journals[i])
        process = _spawn(values, tmp_path, f"keeper-{i}", key)
        lines: list[str] = []
        threading.Thread(target=lambda p=process, out=lines: out.extend(iter(p.stdout.readline, "")), daemon=True).start()
        processes.append(process)
        outputs.append(lines)

    def ticks(i: int) -> list[dict]:
        return read_journal(journals[i], 1000)["ticks"] if journals[i].exists() else []

    try:
        deadline = time.monotonic() + 240
        # The epoch has moved and every keeper has ticked at least twice (decided, then found nothing to do).
        while not (node.vault.functions.rebalanceEpoch().call() > before["epoch"]
                   and all(len(ticks(i)) >= 2 for i in range(3))):
            assert time.monotonic() < deadline, "keepers did not finish; output:\n" + "\n".join("".join(o) for o in outputs)
            assert all(p.poll() is None for p in processes), "a keeper exited:\n" + "\n".join("".join(o) for o in outputs)
            time.sleep(0.2)
        for p in processes:
            p.send_signal(signal.SIGTERM)
        codes = [p.wait(timeout=120) for p in processes]
    finally:
        for p in processes:
            p.kill()
    assert codes == [0, 0, 0], "\n".join("".join(o) for o in outputs)
    rebalanced = node.vault.events.Rebalanced.get_logs(from_block=start_block)
    return [ticks(i) for i in range(3)], before, node.ledger(accounts), rebalanced


def test_three_keepers_race_one_rebalances_the_others_lose_in_simulation(node: KillableChain, tmp_path) -> None:
    """All three plan epoch 0 from the same state; a gate in front of the node holds their simulations
    until all three have arrived, then lets them through 1.5 s apart: the first sends, the next two see
    ``EpochMismatch`` in their ``eth_call`` and send nothing."""
    gate = RpcProxy(node.url)
    selector = node.vault.encode_abi("rebalance", [[], 0, 0, 0])[:10]
    arrived = threading.Barrier(3)
    order = iter(range(3))
    lock = threading.Lock()
    held: list[str] = []  # the keepers whose simulation the gate held, in arrival order

    def hold(method: str, request: dict[str, Any]) -> None:
        # A keeper's simulation: its eth_call of the vault's rebalance, alone or inside the batch with its quotes
        # (the gate runs per request of a batch, the quotes before it already answered). The gas estimate of
        # the same calldata is not a simulation; a keeper's later simulations (after the race) pass freely.
        if method != "eth_call":
            return
        call = request["params"][0]
        sender = str(call.get("from", "")).lower()
        if not str(call.get("data", "")).startswith(selector):
            return
        with lock:
            if sender in held:
                return
            held.append(sender)
        arrived.wait(timeout=200)
        with lock:
            turn = next(order)
        time.sleep(1.5 * turn)

    gate.hook = hold
    try:
        journals, before, after, events = _race(node, gate.url, tmp_path, delays=[0.0, 0.0, 0.0])
    finally:
        gate.stop()
    assert sorted(held) == sorted(address.lower() for address, _ in RACERS)  # each keeper's simulation was held
    # ... inside the batch with its quotes (the keepers' production provider batches reads): quote, simulation, ...
    assert sum(r[:2] == ("eth_call", "eth_call") for r in gate.http_requests) >= 3, gate.http_requests
    assert len(events) == 1 and events[0]["args"]["epoch"] == 0 and after["epoch"] == before["epoch"] + 1
    outcomes = [[t for t in j if t["epoch"] == 0 and t["status"] != "shutdown"][0] for j in journals]
    winners = [i for i, t in enumerate(outcomes) if t["status"] == "rebalanced"]
    assert len(winners) == 1
    winner_address = RACERS[winners[0]][0]
    for i, t in enumerate(outcomes):
        if i in winners:
            continue
        assert t["status"] == "skipped" and t["reason_code"] == "lost_race", t
        assert "epoch advanced by another keeper" in t["reason"] and "EpochMismatch" in t["reason"]
        loser = RACERS[i][0]
        assert after["nonces"][loser] == before["nonces"][loser]  # no transaction
        assert after["balances"][loser] == before["balances"][loser]  # no gas
    assert after["nonces"][winner_address] == before["nonces"][winner_address] + 1
    for j in journals:
        assert j[-1]["status"] == "shutdown" and j[-1]["reason"].startswith("SIGTERM received")
    node.assert_no_funds_lost(before, after)


def test_three_keepers_with_standby_delays_send_exactly_once(node: KillableChain, tmp_path) -> None:
    """A primary and two standbys (4 s and 8 s) on the same schedule: the standbys re-check the epoch
    after their delay and send nothing."""
    journals, before, after, events = _race(node, node.url, tmp_path, delays=[0.0, 4.0, 8.0])
    assert len(events) == 1 and after["epoch"] == before["epoch"] + 1
    statuses = [(j[0]["status"], j[0]["reason_code"]) for j in journals]  # each keeper's first tick
    assert statuses.count(("rebalanced", None)) == 1
    for (address, _), outcome in zip(RACERS, statuses):
        if outcome[0] == "rebalanced":
            assert after["nonces"][address] == before["nonces"][address] + 1
        else:
            assert outcome in {("skipped", "lost_race"), ("skipped", "no_trade_needed")}
            assert after["nonces"][address] == before["nonces"][address]
            assert after["balances"][address] == before["balances"][address]
    node.assert_no_funds_lost(before, after)


def test_receipt_unreadable_after_our_own_rebalance_is_not_a_lost_race(node: KillableChain, proxy: RpcProxy,
                                                                     tmp_path) -> None:
    _deposit(node, 150_000)
    keeper = _keeper(node, proxy.url, tmp_path)
    before = node.ledger([KEEPER])
    proxy.fail(4, "503", {"eth_getTransactionReceipt"})  # every attempt of the first receipt poll
    report = keeper.run_once()
    # Our transaction was mined (epoch moved, by us): the tick reports the RPC failure, not a lost race.
    assert report.status == "skipped" and report.reason_code == "RpcUnavailableError", report.reason
    after = node.ledger([KEEPER])
    assert after["epoch"] == before["epoch"] + 1 and after["nonces"][KEEPER] == before["nonces"][KEEPER] + 1
    assert keeper.run_once().reason_code == "no_trade_needed"
    assert node.ledger([KEEPER]) == after
    node.assert_no_funds_lost(before, after)


def test_keepers_colliding_after_simulation_lose_on_chain_and_pay_only_gas(node: KillableChain, tmp_path) -> None:
    """The residual race: three keepers pass simulation and gas estimation for epoch 0 and then send
    within the same moment (a gate holds their sends, then releases them 1 s apart). The vault still
    lets exactly one through; the other two revert on chain with EpochMismatch, pay gas for the revert,
    lose no funds, and journal ``lost_race_onchain``. ``standby_delay_seconds`` exists to avoid this."""
    owner = dev_accounts()[0]
    role = node.vault.functions.KEEPER_ROLE().call()
    for address, _ in RACERS:
        node.tx.transact(owner, node.vault.functions.grantRole(role, address))
    _deposit(node, 200_000)
    gate = RpcProxy(node.url)
    arrived = threading.Barrier(3)
    order = iter(range(3))
    lock = threading.Lock()

    def hold(method: str, request: dict[str, Any]) -> None:
        if method == "eth_sendRawTransaction":
            arrived.wait(timeout=120)
            with lock:
                turn = next(order, 3)
            time.sleep(1.0 * turn)

    gate.hook = hold
    accounts = [a for a, _ in RACERS]
    before = node.ledger(accounts)
    start_block = node.w3.eth.block_number
    keepers = [_keeper(node, gate.url, tmp_path / str(i), key=key, rpc_timeout_seconds=60)
               for i, (_, key) in enumerate(RACERS)]
    reports: dict[int, Any] = {}
    threads = [threading.Thread(target=lambda i=i, k=k: reports.__setitem__(i, k.run_once())) for i, k in enumerate(keepers)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=180)
    finally:
        gate.stop()
    after = node.ledger(accounts)
    events = node.vault.events.Rebalanced.get_logs(from_block=start_block)
    assert len(events) == 1 and after["epoch"] == before["epoch"] + 1
    outcomes = sorted((r.status, r.reason_code) for r in reports.values())
    assert outcomes == [("rebalanced", None), ("skipped", "lost_race_onchain"), ("skipped", "lost_race_onchain")]
    for i, (address, _) in enumerate(RACERS):
        assert after["nonces"][address] == before["nonces"][address] + 1  # everyone sent one transaction
        if reports[i].status == "skipped":
            assert "EpochMismatch" in reports[i].reason or "reverted on chain" in reports[i].reason
            assert after["balances"][address] < before["balances"][address]  # the loser paid gas for its revert
    node.assert_no_funds_lost(before, after)


# --- A keeper started while the chain is down -------------------------------------------------------


def _output(process: subprocess.Popen) -> list[str]:
    """The process's output lines, collected by a reader thread as they come."""
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(iter(process.stdout.readline, "")), daemon=True).start()
    return lines


def _wait_while_running(condition: Any, process: subprocess.Popen, lines: list[str], seconds: float) -> None:
    """Polls ``condition`` until it holds; fails if the process exits first or ``seconds`` pass."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert process.poll() is None, "the keeper exited:\n" + "".join(lines)
        assert time.monotonic() < deadline, "".join(lines)
        time.sleep(0.1)


def test_a_keeper_started_while_every_rpc_is_down_waits_then_runs(node: KillableChain, proxy: RpcProxy,
                                                                   tmp_path) -> None:
    _deposit(node, 150_000)
    before = node.ledger([KEEPER])
    proxy.fail(10_000, "503")  # the only endpoint answers 503 to everything
    journal = tmp_path / "journal.sqlite"
    values = dict(rpc_url=proxy.url, vault_address=node.deployment.vault, quoter_address=node.deployment.quoter,
                  lookback_days=45, min_observations=30, half_life_days=20, drift_threshold_bps=100,
                  interval_seconds=2.0, heartbeat_seconds=30, rpc_max_attempts=2, rpc_backoff_initial_seconds=0.05,
                  rpc_backoff_max_seconds=0.1, journal_path=journal)
    process = _spawn(values, tmp_path, "late", ANVIL_KEYS[1])
    lines = _output(process)
    try:
        # Waited, and is still waiting.
        _wait_while_running(lambda: sum("cannot start yet" in line for line in lines) >= 2, process, lines, 60)
        assert node.ledger([KEEPER]) == before
        assert not journal.exists() or read_journal(journal, 10)["ticks"] == []  # no tick before the start
        proxy.clear()  # the node is back
        _wait_while_running(lambda: node.vault.functions.rebalanceEpoch().call() > before["epoch"], process,
                            lines, 120)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0, "".join(lines)
    finally:
        process.kill()
    assert any("chain reachable after" in line for line in lines), "".join(lines)
    after = node.ledger([KEEPER])
    assert after["epoch"] == before["epoch"] + 1
    node.assert_no_funds_lost(before, after)


def test_a_keeper_waiting_for_the_chain_stops_on_sigterm(tmp_path) -> None:
    values = dict(rpc_url=f"http://127.0.0.1:{free_port()}", vault_address="0x" + "11" * 20,
                  quoter_address="0x" + "22" * 20, rpc_max_attempts=1, journal_path=tmp_path / "j.sqlite")
    process = _spawn(values, tmp_path, "never", ANVIL_KEYS[1])
    lines = _output(process)
    try:
        _wait_while_running(lambda: any("cannot start yet" in line for line in lines), process, lines, 60)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0, "".join(lines)
    finally:
        process.kill()
