"""Prometheus metrics, the health verdict and endpoint, JSON logs, and a keeper feeding them."""

from __future__ import annotations

import io
import json
import logging

import pytest
import requests
from conftest import System
from prometheus_client.parser import text_string_to_metric_families

from keeper.errors import ConfigError
from keeper.logs import JsonFormatter, configure_logging
from keeper.metrics import KeeperMetrics, MetricsServer, is_successful
from keeper.rpc import ProviderStats, EndpointStats

ETH = 10**18


def _samples(metrics: KeeperMetrics) -> dict[tuple[str, tuple], float]:
    out = {}
    for family in text_string_to_metric_families(metrics.exposition().decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_success_is_a_decision_not_a_failure() -> None:
    assert is_successful("rebalanced", None)
    for code in ("no_trade_needed", "paused", "lost_race", "breaker:stale_oracle"):
        assert is_successful("skipped", code)
    for status, code in (("skipped", "RpcUnavailableError"), ("skipped", "SimulationRevertedError"),
                         ("error", "TypeError"), ("skipped", None), ("skipped", "shutdown")):
        assert not is_successful(status, code)


def test_tick_metrics_are_counted_and_exposed() -> None:
    m = KeeperMetrics(max_tick_age_seconds=60, min_balance_wei=ETH // 10, started_at=1_000.0)
    m.observe_tick("rebalanced", None, None, 1.5, gas_used=400_000, effective_gas_price_wei=2 * 10**9,
                   nav_base_units=250_000.5, dispersion=0.004, now=1_010.0)
    m.observe_tick("skipped", "no_trade_needed", "drift 3 bps", 0.2, nav_base_units=250_001.0, now=1_020.0)
    m.observe_tick("skipped", "breaker:price_jump", "circuit breaker", 0.1, breakers=["price_jump"], now=1_030.0)
    m.observe_tick("skipped", "RpcUnavailableError", "down", 3.0, now=1_040.0)
    m.set_balance(3 * ETH // 2)
    s = _samples(m)
    assert s[("keeper_tick_duration_seconds_count", ())] == 4
    assert s[("keeper_tick_duration_seconds_sum", ())] == pytest.approx(4.8)
    assert s[("keeper_ticks_total", (("status", "rebalanced"),))] == 1
    assert s[("keeper_ticks_total", (("status", "skipped"),))] == 3
    assert s[("keeper_skipped_ticks_total", (("reason", "no_trade_needed"),))] == 1
    assert s[("keeper_skipped_ticks_total", (("reason", "RpcUnavailableError"),))] == 1
    assert s[("keeper_breaker_trips_total", (("breaker", "price_jump"),))] == 1
    assert s[("keeper_gas_used_total", ())] == 400_000
    assert s[("keeper_gas_spent_wei_total", ())] == 400_000 * 2 * 10**9
    assert s[("keeper_vault_nav", ())] == 250_001.0
    assert s[("keeper_risk_contribution_dispersion", ())] == 0.004
    assert s[("keeper_balance_eth", ())] == 1.5
    # The failed tick at 1040 does not move the last successful tick (the breaker skip at 1030 does).
    assert s[("keeper_last_successful_tick_timestamp_seconds", ())] == 1_030.0
    assert s[("keeper_last_tick_timestamp_seconds", ())] == 1_040.0


def test_health_turns_unhealthy_on_an_old_tick_or_a_low_balance() -> None:
    m = KeeperMetrics(max_tick_age_seconds=60, min_balance_wei=ETH // 10, started_at=1_000.0)
    h = m.health(now=1_010.0)
    assert not h.healthy and h.reasons == ("keeper balance not read yet",)
    m.set_balance(ETH)
    assert m.health(now=1_030.0).healthy  # within the grace of a fresh start
    assert "no successful tick in the 70 s since start" in m.health(now=1_070.0).reasons[0]
    m.observe_tick("rebalanced", None, None, 1.0, now=1_100.0)
    assert m.health(now=1_159.0).healthy
    old = m.health(now=1_160.0)
    assert not old.healthy and "last successful tick 60 s ago, limit 60 s" in old.reasons[0]
    m.observe_tick("skipped", "no_trade_needed", None, 1.0, now=1_200.0)
    m.set_balance(ETH // 10 - 1)
    low = m.health(now=1_201.0)
    assert not low.healthy and "below the floor" in low.reasons[0] and low.keeper_balance_wei == ETH // 10 - 1
    m.set_balance(ETH // 10)
    assert m.health(now=1_201.0).healthy
    with pytest.raises(ConfigError):
        KeeperMetrics(max_tick_age_seconds=0, min_balance_wei=0)


def test_http_endpoint_serves_metrics_and_health() -> None:
    stats = ProviderStats(retries=3, failovers=1, exhausted=0, endpoints=[EndpointStats("http://a", failures=2)])
    m = KeeperMetrics(max_tick_age_seconds=60, min_balance_wei=ETH, rpc_stats=lambda: stats)
    server = MetricsServer(m, port=0)
    try:
        m.set_balance(2 * ETH)
        m.observe_tick("rebalanced", None, None, 1.0)
        r = requests.get(server.url + "/health", timeout=5)
        assert r.status_code == 200 and r.json()["healthy"] is True and r.json()["keeper_balance_wei"] == 2 * ETH
        m.set_balance(ETH // 2)
        r = requests.get(server.url + "/health", timeout=5)
        assert r.status_code == 503 and r.json()["healthy"] is False and "below the floor" in r.json()["reasons"][0]
        text = requests.get(server.url + "/metrics", timeout=5).text
        assert "keeper_rpc_retries_total 3.0" in text and 'keeper_rpc_endpoint_failures_total{endpoint="http://a"} 2.0' in text
        assert "keeper_healthy 0.0" in text
        assert requests.get(server.url + "/nope", timeout=5).status_code == 404
    finally:
        server.stop()
    with pytest.raises(ConfigError, match="cannot serve metrics"):
        taken = MetricsServer(m, port=0)
        try:
            MetricsServer(m, port=taken.port)
        finally:
            taken.stop()


def test_json_log_lines_carry_the_extra_fields() -> None:
    stream = io.StringIO()
    configure_logging(json_output=True, stream=stream)
    try:
        logging.getLogger("keeper").info("rebalanced epoch %d", 7, extra={"tx_hash": "0xab", "gas_used": 1})
        try:
            raise ValueError("boom")
        except ValueError:
            logging.getLogger("keeper").exception("failed")
    finally:
        configure_logging(json_output=False)
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["message"] == "rebalanced epoch 7" and first["level"] == "INFO" and first["logger"] == "keeper"
    assert first["tx_hash"] == "0xab" and first["gas_used"] == 1 and first["ts"].endswith("+00:00")
    assert second["level"] == "ERROR" and "ValueError: boom" in second["exc_info"]
    record = logging.LogRecord("x", logging.INFO, "", 0, "m", (), None)
    record.obj = object()
    assert json.loads(JsonFormatter().format(record))["obj"].startswith("<object")


def test_a_keeper_feeds_its_metrics(chain: System) -> None:
    chain.deposit(chain.alice, 150_000)
    keeper = chain.make_keeper()
    keeper.metrics = KeeperMetrics(max_tick_age_seconds=600, min_balance_wei=ETH)
    report = keeper.run_once()
    assert report.status == "rebalanced"
    s = _samples(keeper.metrics)
    execution = report.execution
    assert s[("keeper_gas_used_total", ())] == execution.gas_used
    assert s[("keeper_gas_spent_wei_total", ())] == pytest.approx(execution.gas_used * execution.effective_gas_price)
    assert s[("keeper_vault_nav", ())] == execution.nav_after / 1e6
    assert s[("keeper_balance_eth", ())] == pytest.approx(chain.w3.eth.get_balance(chain.keeper) / ETH)
    # Dispersion after the trade: the holdings' relative risk contributions are close to the equal budget.
    assert 0 < s[("keeper_risk_contribution_dispersion", ())] < 0.01
    assert report.relative_risk_contributions_after is not None
    assert keeper.metrics.health().healthy
    beat = keeper.heartbeat()
    assert beat["head_block"] == chain.w3.eth.block_number and beat["healthy"] is True
    again = keeper.run_once()
    assert again.reason_code == "no_trade_needed"
    assert _samples(keeper.metrics)[("keeper_skipped_ticks_total", (("reason", "no_trade_needed"),))] == 1
