"""The keeper as a service: the tick on a schedule (APScheduler: interval or cron, one at a time, missed runs
coalesced, a misfire grace), a heartbeat and a daily report; ``/metrics`` and ``/health``; graceful SIGTERM/SIGINT
(the in-flight tick finishes, or is journalled as not sent when it had not reached the send, then a final record);
and a start that waits for an unreachable chain.
"""

from __future__ import annotations

import datetime
import logging
import signal
import threading
import time
from typing import Any, Callable

from keeper.config import KeeperConfig
from keeper.errors import ConfigError, RpcUnavailableError
from keeper.metrics import KeeperMetrics, MetricsServer, WEI_PER_ETH
from keeper.runner import Keeper

log = logging.getLogger("keeper")

__all__ = ["tick_trigger", "build_scheduler", "make_metrics", "start_when_reachable", "run_forever", "tick_and_log",
           "tick_line", "log_tick"]

#: The logger of the one line each tick's outcome gets (``keeper.ticks``).
tick_log = logging.getLogger("keeper.ticks")


def tick_line(report: Any) -> str:
    """One line for a tick's outcome: ``tick skipped [no_trade_needed] block 123 (2022-05-01T01:00:00Z): reason``.

    Every tick gets one, whatever stopped it (a trigger that did not fire, the cost gate, a pause, a breaker,
    a lost race, an exception), so a quiet skip is never silent.
    """
    when = ""
    if report.block_timestamp is not None:
        stamp = datetime.datetime.fromtimestamp(report.block_timestamp, tz=datetime.timezone.utc)
        when = f" ({stamp.isoformat(timespec='seconds').replace('+00:00', 'Z')})"
    block = f" block {report.block_number}{when}" if report.block_number is not None else ""
    code = f" [{report.reason_code}]" if report.reason_code else ""
    reason = " ".join((report.reason or "no reason recorded").split())  # one line, whatever the reason holds
    return f"tick {report.status}{code}{block}: {reason}"


def _tick_log_level(report: Any) -> int:
    """The level of a tick's :func:`tick_line`: ERROR for an error; WARNING for a skip that names an exception
    (its ``reason_code`` is the exception's class name, ``...Error``) or a breaker; INFO otherwise."""
    code = report.reason_code or ""
    if report.status == "error":
        return logging.ERROR
    if report.status == "skipped" and (code.startswith("breaker") or code.endswith("Error")):
        return logging.WARNING
    return logging.INFO


def log_tick(report: Any, min_level: int = logging.DEBUG) -> None:
    """Logs a tick's :func:`tick_line` on ``keeper.ticks`` at its level (ERROR for an error; WARNING for a skip
    that names an exception or a breaker; INFO otherwise), if that is at least ``min_level`` (the demo passes
    WARNING: only the ticks that need a look). The one log line of a tick's outcome: :meth:`Keeper.run_once`
    logs nothing for a skip (an unexpected exception's traceback only)."""
    level = _tick_log_level(report)
    if level >= min_level:
        tick_log.log(level, tick_line(report), extra={"status": report.status, "reason_code": report.reason_code})


def tick_and_log(keeper: Keeper) -> Any:
    """Runs one tick (:meth:`Keeper.run_once`) and logs its :func:`tick_line` (:func:`log_tick`); returns the
    report."""
    report = keeper.run_once()
    if report is None:  # a stand-in keeper without reports (scheduler tests): nothing to log
        return None
    log_tick(report)
    return report


def tick_trigger(config: KeeperConfig) -> Any:
    """The APScheduler trigger of the tick job: ``config.operations.tick_cron`` (UTC) or an interval.

    Raises
    ------
    ConfigError
        An invalid crontab expression.
    """
    from apscheduler.triggers.cron import CronTrigger
    from apscheduler.triggers.interval import IntervalTrigger

    if config.operations.tick_cron:
        try:
            return CronTrigger.from_crontab(config.operations.tick_cron, timezone=datetime.timezone.utc)
        except ValueError as exc:
            raise ConfigError(f"tick_cron {config.operations.tick_cron!r} is not a 5-field crontab: {exc}") from exc
    return IntervalTrigger(seconds=config.operations.interval_seconds, timezone=datetime.timezone.utc)


def build_scheduler(keeper: Keeper, first_tick_now: bool = True) -> Any:
    """A background scheduler with the tick, heartbeat and daily-report jobs (not started).

    The tick runs one at a time (``max_instances=1``); runs missed while one was in flight are
    coalesced into one; a run that starts later than ``misfire_grace_seconds`` (default the interval)
    is dropped. Two worker threads: a heartbeat keeps beating (and ``/health`` keeps its facts fresh)
    while a long tick waits for its receipt.
    """
    from apscheduler.executors.pool import ThreadPoolExecutor
    from apscheduler.schedulers.background import BackgroundScheduler

    cfg = keeper.config
    scheduler = BackgroundScheduler(executors={"default": ThreadPoolExecutor(2)}, timezone=datetime.timezone.utc)
    grace = cfg.operations.misfire_grace_seconds or max(1, int(cfg.operations.interval_seconds))
    now = datetime.datetime.now(datetime.timezone.utc)
    scheduler.add_job(tick_and_log, tick_trigger(cfg), args=(keeper,), id="tick", max_instances=1, coalesce=True,
                      misfire_grace_time=grace, next_run_time=now if first_tick_now else None)
    scheduler.add_job(keeper.heartbeat, "interval", seconds=cfg.operations.heartbeat_seconds, id="heartbeat",
                      max_instances=1, coalesce=True, misfire_grace_time=max(1, int(cfg.operations.heartbeat_seconds)))
    scheduler.add_job(keeper.daily_report, "cron", hour=cfg.operations.daily_report_hour_utc, minute=0,
                      timezone=datetime.timezone.utc, id="daily_report", max_instances=1, coalesce=True,
                      misfire_grace_time=3600)
    return scheduler


def make_metrics(keeper_config: KeeperConfig, provider: Any = None) -> KeeperMetrics:
    """Metrics with the config's health limits (max tick age defaults to 3 × ``interval_seconds``)."""
    stats = getattr(provider, "stats", None)
    return KeeperMetrics(
        max_tick_age_seconds=keeper_config.operations.health_max_tick_age_seconds or 3 * keeper_config.operations.interval_seconds,
        min_balance_wei=int(keeper_config.operations.min_keeper_balance_eth * WEI_PER_ETH),
        rpc_stats=(lambda: stats) if stats is not None else None,
    )


def start_when_reachable(
    make_keeper: Callable[[], Keeper],
    stop: threading.Event,
    *,
    initial_delay_seconds: float = 1.0,
    max_delay_seconds: float = 60.0,
) -> Keeper | None:
    """Builds the keeper and runs its start-up reconciliation, waiting for the chain if it is down.

    A keeper started while every RPC endpoint is unreachable (a node restarting, a provider outage)
    waits instead of exiting: each :class:`~keeper.errors.RpcUnavailableError` from the
    construction (which reads the vault) or from :meth:`Keeper.startup` is logged and retried after
    an exponential backoff (``initial_delay_seconds``, doubling, capped at ``max_delay_seconds``).
    Nothing is sent before the start-up reconciliation has run, so waiting loses nothing.

    Parameters
    ----------
    make_keeper : callable
        Builds a :class:`Keeper` (e.g. ``lambda: Keeper(config)``).
    stop : threading.Event
        Set (SIGTERM/SIGINT) to give up waiting; the wait wakes at once.

    Returns
    -------
    Keeper or None
        The started keeper (``started`` is True), or None when ``stop`` was set first.

    Raises
    ------
    KeeperError
        Any other error (a wrong address, a bad key, a journal that cannot be reconciled): waiting
        would not fix it.
    """
    delay = initial_delay_seconds
    attempt = 0
    while not stop.is_set():
        attempt += 1
        try:
            keeper = make_keeper()
            keeper.startup()
            if attempt > 1:
                log.info("chain reachable after %d attempt(s): keeper started", attempt)
            return keeper
        except RpcUnavailableError as exc:
            log.warning("cannot start yet, the chain is unreachable (attempt %d): %s; retrying in %.0f s",
                        attempt, exc, delay)
        if stop.wait(delay):
            break
        delay = min(2.0 * delay, max_delay_seconds)
    return None


def run_forever(
    keeper: Keeper,
    interval_seconds: float | None = None,
    *,
    stop_event: threading.Event | None = None,
    install_signal_handlers: bool = True,
    metrics_server: MetricsServer | None = None,
) -> int:
    """Runs the keeper's jobs until SIGTERM/SIGINT (or ``stop_event``), then shuts down gracefully.

    Shutdown: the keeper is told to stop (a tick that has not started its send journals itself as
    ``skipped``/``shutdown`` and sends nothing; one that is sending waits for its receipt), the
    scheduler waits for the in-flight job, a final ``shutdown`` record is journalled, the metrics
    server stops. Returns the process exit code, 0.

    ``interval_seconds`` is accepted for compatibility; the schedule comes from ``keeper.config``.
    """
    del interval_seconds
    stop = stop_event or threading.Event()
    received: list[str] = []

    def on_signal(signum: int, _frame: Any) -> None:
        received.append(signal.Signals(signum).name)
        keeper.request_stop()
        stop.set()

    previous = {}
    if install_signal_handlers and threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, on_signal)
    if not keeper.started:
        keeper.startup()
    scheduler = build_scheduler(keeper)
    scheduler.start()
    log.info("keeper started: vault %s, keeper %s, schedule %s", keeper.config.chain.vault_address,
             keeper.executor.address, keeper.config.operations.tick_cron or f"every {keeper.config.operations.interval_seconds:g} s")
    try:
        while not stop.wait(0.5):
            pass
    finally:
        keeper.request_stop()
        t0 = time.monotonic()
        scheduler.shutdown(wait=True)
        why = f"{received[0]} received" if received else "stop requested"
        keeper.record_shutdown(f"{why}; scheduler stopped after {time.monotonic() - t0:.2f} s waiting for the "
                               "in-flight tick")
        if metrics_server is not None:
            metrics_server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        log.info("keeper stopped (%s)", why)
    return 0
