"""Every tick's outcome is one log line with its reason, quiet skips included (keeper.service.tick_and_log)."""

from __future__ import annotations

import logging

from keeper.runner import TickReport
from keeper.service import tick_and_log, tick_line


def test_tick_line_is_one_line_with_code_block_utc_time_and_reason():
    report = TickReport(status="skipped", reason="no trigger fired:\n drift 12 bps < 300 bps", block_number=7,
                        block_timestamp=1_651_366_800, reason_code="no_trade_needed")
    line = tick_line(report)
    assert line == ("tick skipped [no_trade_needed] block 7 (2022-05-01T01:00:00Z): no trigger fired: drift 12 bps "
                    "< 300 bps")
    assert tick_line(TickReport(status="skipped")) == "tick skipped: no reason recorded"


class _Reporting:
    def __init__(self, report):
        self.report = report

    def run_once(self):
        return self.report


def test_each_kind_of_skip_logs_exactly_one_line(caplog):
    reports = [
        TickReport(status="skipped", reason="vault is empty", reason_code="no_trade_needed"),
        TickReport(status="skipped", reason="vault is paused", reason_code="paused"),
        TickReport(status="skipped", reason="circuit breaker: stale oracle", reason_code="breaker:stale_oracle"),
        TickReport(status="error", reason="ZeroDivisionError: division by zero", reason_code="ZeroDivisionError"),
    ]
    with caplog.at_level(logging.INFO, logger="keeper.ticks"):
        for report in reports:
            assert tick_and_log(_Reporting(report)) is report
    records = [r for r in caplog.records if r.name == "keeper.ticks"]
    assert [r.getMessage() for r in records] == [
        "tick skipped [no_trade_needed]: vault is empty",
        "tick skipped [paused]: vault is paused",
        "tick skipped [breaker:stale_oracle]: circuit breaker: stale oracle",
        "tick error [ZeroDivisionError]: ZeroDivisionError: division by zero",
    ]
    assert [r.levelno for r in records] == [logging.INFO, logging.INFO, logging.WARNING, logging.ERROR]


def test_a_quiet_skip_on_chain_logs_its_line(system, caplog):
    keeper = system.make_keeper()
    with caplog.at_level(logging.INFO, logger="keeper.ticks"):
        report = tick_and_log(keeper)
    lines = [r.getMessage() for r in caplog.records if r.name == "keeper.ticks"]
    assert report.status == "skipped" and len(lines) == 1
    assert lines[0].startswith("tick skipped") and report.reason.split()[0] in lines[0]


def test_a_tick_skipped_by_an_exception_logs_one_line_at_warning(caplog):
    """The runner logs nothing for a skip; the tick's one line names the exception (it used to log twice)."""
    from keeper.errors import RpcUnavailableError
    from keeper.runner import Keeper

    keeper = Keeper.__new__(Keeper)  # only run_once's boundary is exercised: no chain, no journal

    def tick(timings, context):
        raise RpcUnavailableError("every endpoint failed: http://127.0.0.1:1 (connection refused)")

    keeper._tick, keeper._record, keeper.metrics = tick, lambda report: None, None
    with caplog.at_level(logging.DEBUG):
        report = tick_and_log(keeper)
    assert report.status == "skipped" and report.reason_code == "RpcUnavailableError"
    assert [(r.name, r.levelno, r.getMessage()) for r in caplog.records] == [
        ("keeper.ticks", logging.WARNING,
         "tick skipped [RpcUnavailableError]: RpcUnavailableError: every endpoint failed: http://127.0.0.1:1 "
         "(connection refused)")]


def test_the_demo_logs_only_the_ticks_that_need_a_look(caplog):
    from keeper.service import log_tick

    with caplog.at_level(logging.DEBUG, logger="keeper.ticks"):
        log_tick(TickReport(status="skipped", reason="drift 12 bps < 300 bps", reason_code="no_trade_needed"),
                 min_level=logging.WARNING)
        log_tick(TickReport(status="skipped", reason="RpcUnavailableError: down", reason_code="RpcUnavailableError"),
                 min_level=logging.WARNING)
    assert [r.getMessage() for r in caplog.records] == ["tick skipped [RpcUnavailableError]: RpcUnavailableError: down"]

