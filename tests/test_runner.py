"""The scheduler (tick, heartbeat, daily report; no overlapping ticks), start-up, and graceful shutdown on
SIGTERM/SIGINT of a real `keeper run` process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from conftest import System

from keeper.chain import ANVIL_KEYS, free_port
from keeper.config import KeeperConfig
from keeper.errors import ConfigError
from keeper.journal import Journal
from keeper.service import build_scheduler, run_forever, tick_trigger
from keeper.status import read_journal

ROOT = Path(__file__).resolve().parents[1]
ADDRESS = "0x" + "11" * 20


def _config(**overrides) -> KeeperConfig:
    return KeeperConfig(rpc_url="http://127.0.0.1:1", vault_address=ADDRESS, quoter_address=ADDRESS, **overrides)


class _SlowKeeper:
    """Stands in for a Keeper in scheduler tests: each tick takes ``tick_seconds``."""

    def __init__(self, config: KeeperConfig, tick_seconds: float) -> None:
        self.config = config
        self.tick_seconds = tick_seconds
        self.running = 0
        self.max_running = 0
        self.ticks = 0
        self.beats = 0
        self._lock = threading.Lock()

    def run_once(self) -> None:
        with self._lock:
            self.running += 1
            self.max_running = max(self.max_running, self.running)
        time.sleep(self.tick_seconds)
        with self._lock:
            self.running -= 1
            self.ticks += 1

    def heartbeat(self) -> None:
        self.beats += 1

    def daily_report(self) -> None:
        pass


def test_jobs_are_configured_for_no_overlap_coalescing_and_misfire_grace() -> None:
    keeper = _SlowKeeper(_config(interval_seconds=30, misfire_grace_seconds=12, heartbeat_seconds=5,
                                 daily_report_hour_utc=6), 0)
    scheduler = build_scheduler(keeper)
    jobs = {job.id: job for job in scheduler.get_jobs()}
    assert set(jobs) == {"tick", "heartbeat", "daily_report"}
    tick = jobs["tick"]
    assert tick.max_instances == 1 and tick.coalesce is True and tick.misfire_grace_time == 12
    assert isinstance(tick.trigger, IntervalTrigger) and tick.trigger.interval.total_seconds() == 30
    assert jobs["heartbeat"].trigger.interval.total_seconds() == 5
    assert str(jobs["daily_report"].trigger.fields[5]) == "6"  # hour field of the cron trigger
    # Without misfire_grace_seconds the grace is one interval.
    assert build_scheduler(_SlowKeeper(_config(interval_seconds=30), 0)).get_job("tick").misfire_grace_time == 30


def test_cron_schedule_and_a_bad_crontab() -> None:
    trigger = tick_trigger(_config(tick_cron="*/15 * * * *"))
    assert isinstance(trigger, CronTrigger) and str(trigger.fields[6]) == "*/15"
    with pytest.raises(ConfigError, match="not a 5-field crontab"):
        tick_trigger(_config(tick_cron="every five minutes"))


def test_ticks_never_overlap_and_missed_runs_coalesce() -> None:
    keeper = _SlowKeeper(_config(interval_seconds=0.1, heartbeat_seconds=0.2), tick_seconds=0.5)
    scheduler = build_scheduler(keeper)
    scheduler.start()
    time.sleep(1.8)
    scheduler.shutdown(wait=True)
    assert keeper.max_running == 1
    # 0.5 s ticks every 0.1 s for 1.8 s: at most 4 ran (the missed runs were dropped, not queued).
    assert 2 <= keeper.ticks <= 4
    assert keeper.beats >= 5  # the heartbeat ran alongside the slow ticks


def test_run_forever_stops_on_request_and_journals_a_final_record(chain: System, tmp_path) -> None:
    from keeper.runner import Keeper

    journal = Journal(tmp_path / "j.sqlite")
    keeper = Keeper(chain.keeper_config(interval_seconds=3600, heartbeat_seconds=0.2), w3=chain.w3,
                    private_key=ANVIL_KEYS[1], journal=journal)
    reconciled = []
    real_reconcile = keeper.executor.reconcile

    def reconcile():  # the start-up reconciliation runs before any tick is journalled
        reconciled.append(journal.ticks())
        return real_reconcile()

    keeper.executor.reconcile = reconcile
    stop = threading.Event()
    result = []
    thread = threading.Thread(target=lambda: result.append(run_forever(keeper, stop_event=stop,
                                                                       install_signal_handlers=False)))
    thread.start()
    deadline = time.monotonic() + 60
    while not journal.ticks() and time.monotonic() < deadline:
        time.sleep(0.1)
    stop.set()
    thread.join(timeout=60)
    assert result == [0]
    assert reconciled == [[]]  # reconciled once, before the first tick was journalled
    rows = journal.ticks()
    assert rows[0]["status"] == "skipped" and rows[0]["reason"] == "vault is empty"
    assert rows[-1]["status"] == "shutdown" and rows[-1]["reason"].startswith("stop requested")
    summary = keeper.daily_report()
    assert summary["ticks"] == len(rows) and summary["by_status"]["skipped"] == 1


def _spawn_keeper(config: KeeperConfig, tmp_path: Path, key: str, name: str = "keeper") -> subprocess.Popen:
    path = tmp_path / f"{name}.json"
    path.write_text(config.model_dump_json())
    env = dict(os.environ, KEEPER_PRIVATE_KEY=key, PYTHONUNBUFFERED="1", OPENBLAS_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-m", "keeper.cli", "run", "--config", str(path)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _collect_output(process: subprocess.Popen) -> list[str]:
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(iter(process.stdout.readline, "")), daemon=True).start()
    return lines


def _wait_for(predicate, timeout: float, what: str, output: list[str] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}; output:\n{''.join(output or [])}")
        time.sleep(0.1)


def test_sigterm_between_ticks_exits_zero_with_a_final_record(chain: System, tmp_path) -> None:
    journal = tmp_path / "journal.sqlite"
    port = free_port()
    config = chain.keeper_config(journal_path=journal, interval_seconds=1.0, metrics_port=port, log_json=True)
    process = _spawn_keeper(config, tmp_path, ANVIL_KEYS[1])
    output = _collect_output(process)
    try:
        _wait_for(lambda: journal.exists() and len(read_journal(journal)["ticks"]) >= 2, 90, "two ticks", output)
        # The running process serves its metrics and health, and logs JSON lines.
        health = requests.get(f"http://127.0.0.1:{port}/health", timeout=10)
        assert health.status_code == 200 and health.json()["healthy"] is True, health.text
        metrics = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        assert 'keeper_skipped_ticks_total{reason="no_trade_needed"}' in metrics
        assert "keeper_tick_duration_seconds_count" in metrics and "keeper_rpc_retries_total 0.0" in metrics
        assert any(json.loads(line).get("message", "").startswith("keeper started") for line in list(output)
                   if line.startswith("{"))
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0, "".join(output)
    finally:
        process.kill()
    ticks = read_journal(journal, 100)["ticks"]
    assert all(t["status"] == "skipped" for t in ticks[:-1])
    assert ticks[-1]["status"] == "shutdown" and ticks[-1]["reason"].startswith("SIGTERM received")


def test_sigint_mid_tick_journals_the_unsent_step_and_sends_nothing(chain: System, tmp_path) -> None:
    chain.deposit(chain.alice, 100_000)
    journal = tmp_path / "journal.sqlite"
    config = chain.keeper_config(journal_path=journal, interval_seconds=3600, standby_delay_seconds=120)
    nonce = chain.w3.eth.get_transaction_count(chain.keeper)
    process = _spawn_keeper(config, tmp_path, ANVIL_KEYS[1])
    output = _collect_output(process)
    try:
        _wait_for(lambda: any("standby: waiting" in line for line in output), 90, "the tick's standby wait")
        t0 = time.monotonic()
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 0, "".join(output)
        assert time.monotonic() - t0 < 30  # did not sit out the 120 s standby delay
    finally:
        process.kill()
    ticks = read_journal(journal)["ticks"]
    assert [t["status"] for t in ticks] == ["skipped", "shutdown"]
    assert ticks[0]["reason_code"] == "shutdown" and "nothing was sent" in ticks[0]["reason"]
    assert ticks[0]["epoch"] == 0 and ticks[0]["legs"] == 3  # the planned step is on record
    assert ticks[1]["reason"].startswith("SIGINT received")
    assert chain.w3.eth.get_transaction_count(chain.keeper) == nonce
    assert chain.vault.functions.rebalanceEpoch().call() == 0


def test_sigterm_during_a_send_lets_it_finish(chain: System, tmp_path) -> None:
    """A signal that arrives once the send has started does not abandon it: the receipt is awaited and
    the rebalance journalled before the final record."""
    chain.deposit(chain.alice, 100_000)
    journal = tmp_path / "journal.sqlite"
    config = chain.keeper_config(journal_path=journal, interval_seconds=3600)
    # No automatic mining: the keeper's transaction sits in the mempool while the signal arrives.
    from keeper.chain import rpc

    rpc(chain.w3, "evm_setAutomine", [False])
    try:
        process = _spawn_keeper(config, tmp_path, ANVIL_KEYS[1])
        output = _collect_output(process)
        try:
            _wait_for(lambda: int(rpc(chain.w3, "eth_getTransactionCount", [chain.keeper, "pending"]), 16)
                      > chain.w3.eth.get_transaction_count(chain.keeper), 120, "the rebalance in the mempool", output)
            process.send_signal(signal.SIGTERM)
            time.sleep(2.0)
            assert process.poll() is None, "".join(output)  # still waiting for its receipt
            rpc(chain.w3, "evm_mine", [])
            assert process.wait(timeout=60) == 0, "".join(output)
        finally:
            process.kill()
    finally:
        rpc(chain.w3, "evm_setAutomine", [True])
    ticks = read_journal(journal)["ticks"]
    assert [t["status"] for t in ticks] == ["rebalanced", "shutdown"]
    assert chain.vault.functions.rebalanceEpoch().call() == 1
    assert ticks[0]["tx_hash"].startswith("0x") and ticks[0]["gas_used"] > 0


def test_start_when_reachable_retries_only_an_unreachable_chain() -> None:
    import threading

    from keeper.errors import ConfigError, RpcUnavailableError
    from keeper.service import start_when_reachable

    class Started:
        started = False

        def startup(self) -> None:
            self.started = True

    calls: list[int] = []

    def flaky() -> Started:
        calls.append(1)
        if len(calls) < 3:
            raise RpcUnavailableError("eth_call failed on every RPC endpoint")
        return Started()

    stop = threading.Event()
    keeper = start_when_reachable(flaky, stop, initial_delay_seconds=0.01, max_delay_seconds=0.02)
    assert isinstance(keeper, Started) and keeper.started and len(calls) == 3

    def wrong_address() -> Started:
        raise ConfigError("vault_address is not a vault")

    with pytest.raises(ConfigError):
        start_when_reachable(wrong_address, stop, initial_delay_seconds=0.01)

    def down() -> Started:
        raise RpcUnavailableError("down")

    threading.Timer(0.2, stop.set).start()
    assert start_when_reachable(down, stop, initial_delay_seconds=0.05, max_delay_seconds=0.05) is None
