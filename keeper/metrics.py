"""Prometheus metrics and a health check for a running keeper, served over HTTP on one port.

``GET /metrics``  Prometheus text format (``prometheus_client``), one registry per keeper.
``GET /health``   JSON facts; HTTP 200 when healthy, 503 when not. Healthy iff the last successful tick
                  is younger than ``max_tick_age_seconds`` and the keeper's ETH balance is at least
                  ``min_balance_wei``.

A *successful* tick is one that reached a decision: it rebalanced, or skipped because nothing needed
doing, the vault was paused, a circuit breaker held it, or another keeper won the race. A tick that
failed to read the chain, was refused in simulation or raised is not.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import asdict, dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from keeper.errors import ConfigError
from keeper.units import WEI_PER_ETH

#: Reason codes of skipped ticks that are decisions, not failures (see the module docstring).
DECISION_CODES = frozenset({"no_trade_needed", "paused", "lost_race", "lost_race_onchain", "derisk"})


def is_successful(status: str, reason_code: str | None) -> bool:
    """Whether a tick with this ``status`` and ``reason_code`` reached a decision (see the module docstring)."""
    if status == "rebalanced":
        return True
    return status == "skipped" and reason_code is not None and (
        reason_code in DECISION_CODES or reason_code.startswith("breaker:")
    )


@dataclass(frozen=True)
class HealthStatus:
    """The health verdict and the facts behind it (ages in seconds, balances in wei)."""

    healthy: bool
    reasons: tuple[str, ...]
    last_successful_tick_age_seconds: float | None
    max_tick_age_seconds: float
    keeper_balance_wei: int | None
    min_balance_wei: int
    last_tick_status: str | None
    last_tick_reason: str | None
    checked_at: float


class _RpcCollector(Collector):
    """Exposes a :class:`~keeper.rpc.FailoverHTTPProvider`'s counters as Prometheus counters."""

    def __init__(self, stats_source: Callable[[], Any]) -> None:
        self._source = stats_source

    def collect(self) -> Iterable[CounterMetricFamily]:
        stats = self._source()
        if stats is None:
            return []
        retries = CounterMetricFamily("keeper_rpc_retries", "RPC attempts retried after a transient failure")
        retries.add_metric([], stats.retries)
        failovers = CounterMetricFamily("keeper_rpc_failovers", "switches to the next RPC endpoint")
        failovers.add_metric([], stats.failovers)
        exhausted = CounterMetricFamily("keeper_rpc_exhausted", "RPC requests that failed on every attempt")
        exhausted.add_metric([], stats.exhausted)
        failures = CounterMetricFamily("keeper_rpc_endpoint_failures", "transient failures per endpoint",
                                       labels=["endpoint"])
        for endpoint in stats.endpoints:
            failures.add_metric([endpoint.url], endpoint.failures)
        return [retries, failovers, exhausted, failures]


class KeeperMetrics:
    """The keeper's Prometheus metrics in their own registry, and the state the health check reads.

    Parameters
    ----------
    max_tick_age_seconds : float
        Unhealthy when the last successful tick is older, seconds.
    min_balance_wei : int
        Unhealthy below this keeper balance, wei.
    rpc_stats : callable, optional
        Returns the provider's :class:`~keeper.rpc.ProviderStats` (or ``None``) at scrape time.
    started_at : float, optional
        Unix seconds the keeper started; before the first successful tick the age counts from here.
    """

    def __init__(
        self,
        max_tick_age_seconds: float,
        min_balance_wei: int,
        rpc_stats: Callable[[], Any] | None = None,
        started_at: float | None = None,
    ) -> None:
        if max_tick_age_seconds <= 0 or min_balance_wei < 0:
            raise ConfigError(
                f"health limits out of range: max tick age {max_tick_age_seconds} s (> 0), "
                f"min balance {min_balance_wei} wei (>= 0)"
            )
        self.max_tick_age_seconds = float(max_tick_age_seconds)
        self.min_balance_wei = int(min_balance_wei)
        self.started_at = time.time() if started_at is None else started_at
        self.registry = CollectorRegistry()
        r = self.registry
        self.tick_duration = Histogram(
            "keeper_tick_duration_seconds", "wall time of one tick, seconds", registry=r,
            buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300),
        )
        self.ticks = Counter("keeper_ticks", "ticks by outcome", ["status"], registry=r)
        self.skipped = Counter("keeper_skipped_ticks", "skipped ticks by reason code", ["reason"], registry=r)
        self.breaker_trips = Counter("keeper_breaker_trips", "circuit breaker trips", ["breaker"], registry=r)
        self.last_tick = Gauge("keeper_last_tick_timestamp_seconds", "end of the last tick, Unix seconds", registry=r)
        self.last_success = Gauge(
            "keeper_last_successful_tick_timestamp_seconds", "end of the last successful tick, Unix seconds", registry=r
        )
        self.gas_used = Counter("keeper_gas_used", "gas used by the keeper's rebalances, gas units", registry=r)
        self.gas_spent = Counter("keeper_gas_spent_wei", "fees paid by the keeper's rebalances, wei", registry=r)
        self.nav = Gauge("keeper_vault_nav", "vault NAV (totalAssets), whole base-asset units", registry=r)
        self.dispersion = Gauge(
            "keeper_risk_contribution_dispersion",
            "max |relative risk contribution − risk budget| of the holdings, fraction", registry=r,
        )
        self.balance = Gauge("keeper_balance_eth", "the keeper account's ETH balance, ETH", registry=r)
        self.heartbeat = Gauge("keeper_heartbeat_timestamp_seconds", "last heartbeat, Unix seconds", registry=r)
        self.head_block = Gauge("keeper_head_block_number", "head block at the last heartbeat", registry=r)
        self.healthy = Gauge("keeper_healthy", "1 when the health check passes, else 0", registry=r)
        if rpc_stats is not None:
            r.register(_RpcCollector(rpc_stats))
        self._lock = threading.Lock()
        self.last_success_at: float | None = None
        self.last_status: str | None = None
        self.last_reason: str | None = None
        self.balance_wei: int | None = None

    # --- updates -------------------------------------------------------------------------------

    def observe_tick(
        self,
        status: str,
        reason_code: str | None,
        reason: str | None,
        duration_seconds: float,
        *,
        gas_used: int | None = None,
        effective_gas_price_wei: int | None = None,
        nav_base_units: float | None = None,
        dispersion: float | None = None,
        breakers: Iterable[str] = (),
        now: float | None = None,
    ) -> None:
        """Records one finished tick (``nav_base_units`` in whole base-asset units, e.g. USD)."""
        now = time.time() if now is None else now
        with self._lock:
            self.tick_duration.observe(duration_seconds)
            self.ticks.labels(status=status).inc()
            if status != "rebalanced":
                self.skipped.labels(reason=reason_code or status).inc()
            for name in breakers:
                self.breaker_trips.labels(breaker=name).inc()
            self.last_tick.set(now)
            if is_successful(status, reason_code):
                self.last_success_at = now
                self.last_success.set(now)
            if gas_used:
                self.gas_used.inc(gas_used)
                if effective_gas_price_wei:
                    self.gas_spent.inc(gas_used * effective_gas_price_wei)
            if nav_base_units is not None:
                self.nav.set(nav_base_units)
            if dispersion is not None:
                self.dispersion.set(dispersion)
            self.last_status, self.last_reason = status, reason

    def set_balance(self, balance_wei: int) -> None:
        """Records the keeper account's balance, wei."""
        with self._lock:
            self.balance_wei = int(balance_wei)
            self.balance.set(balance_wei / WEI_PER_ETH)

    def beat(self, head_block: int | None = None, now: float | None = None) -> None:
        """Records a heartbeat."""
        self.heartbeat.set(time.time() if now is None else now)
        if head_block is not None:
            self.head_block.set(head_block)

    # --- health --------------------------------------------------------------------------------

    def health(self, now: float | None = None) -> HealthStatus:
        """The health verdict at ``now`` (Unix seconds)."""
        now = time.time() if now is None else now
        with self._lock:
            reasons = []
            age = None if self.last_success_at is None else now - self.last_success_at
            if age is None:
                waited = now - self.started_at
                if waited >= self.max_tick_age_seconds:
                    reasons.append(f"no successful tick in the {waited:.0f} s since start "
                                   f"(limit {self.max_tick_age_seconds:g} s)")
            elif age >= self.max_tick_age_seconds:
                reasons.append(f"last successful tick {age:.0f} s ago, limit {self.max_tick_age_seconds:g} s")
            if self.balance_wei is None:
                reasons.append("keeper balance not read yet")
            elif self.balance_wei < self.min_balance_wei:
                reasons.append(f"keeper balance {self.balance_wei / WEI_PER_ETH:.6f} ETH below the floor "
                               f"{self.min_balance_wei / WEI_PER_ETH:.6f} ETH: top it up")
            status = HealthStatus(
                healthy=not reasons,
                reasons=tuple(reasons),
                last_successful_tick_age_seconds=age,
                max_tick_age_seconds=self.max_tick_age_seconds,
                keeper_balance_wei=self.balance_wei,
                min_balance_wei=self.min_balance_wei,
                last_tick_status=self.last_status,
                last_tick_reason=self.last_reason,
                checked_at=now,
            )
        self.healthy.set(1 if status.healthy else 0)
        return status

    def exposition(self) -> bytes:
        """The registry in Prometheus text format."""
        self.health()
        return generate_latest(self.registry)


class MetricsServer:
    """Serves ``/metrics`` and ``/health`` of one :class:`KeeperMetrics` from a daemon thread.

    Parameters
    ----------
    metrics : KeeperMetrics
    host : str
    port : int
        TCP port; 0 binds a free one (read it back from :attr:`port`).
    """

    def __init__(self, metrics: KeeperMetrics, host: str = "127.0.0.1", port: int = 0) -> None:
        self.metrics = metrics
        handler = _handler_for(metrics)
        try:
            self.server = ThreadingHTTPServer((host, port), handler)
        except OSError as exc:
            raise ConfigError(f"cannot serve metrics on {host}:{port}: {exc}; choose another metrics_port") from exc
        self.server.daemon_threads = True
        self.host = host
        self.port = int(self.server.server_address[1])
        self._thread = threading.Thread(target=self.server.serve_forever, name="keeper-metrics", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)


def _handler_for(metrics: KeeperMetrics) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                body, code, kind = metrics.exposition(), 200, "text/plain; version=0.0.4; charset=utf-8"
            elif path == "/health":
                status = metrics.health()
                body = json.dumps(asdict(status)).encode()
                code, kind = (200 if status.healthy else 503), "application/json"
            else:
                body, code, kind = b'{"error": "not found; try /metrics or /health"}', 404, "application/json"
            self.send_response(code)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - silence per-request lines
            return

    return Handler


__all__ = ["DECISION_CODES", "HealthStatus", "KeeperMetrics", "MetricsServer", "is_successful"]
