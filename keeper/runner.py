"""One keeper tick end to end, and the scheduler that repeats it.

A tick is a one-way pipeline: oracle → estimator → optimizer → planner → executor → chain. Every
anticipated failure (:class:`~keeper.errors.KeeperError`) ends the tick as ``skipped`` with its reason;
anything else ends it as ``error`` with the traceback in the log. Both are journalled, and neither
stops the scheduler.
"""

from __future__ import annotations

import datetime
import logging
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from web3 import Web3

from keeper.chain import connect
from keeper.config import KeeperConfig
from keeper.errors import KeeperError, QuoteBelowBoundError
from keeper.estimation import ewma_covariance, simple_returns
from keeper.executor import ExecutionResult, Executor
from keeper.gas import FeePolicy
from keeper.journal import Journal
from keeper.optimizer import relative_risk_contributions, solve_equal_risk_contribution
from keeper.oracle import ChainReader
from keeper.planner import RebalancePlan, plan_rebalance

log = logging.getLogger("keeper")


@dataclass(frozen=True)
class TickReport:
    """Outcome of one tick.

    ``status`` is ``"rebalanced"``, ``"skipped"`` (a decision or an anticipated refusal; ``reason`` says
    which) or ``"error"`` (an unexpected exception). Weights are fractions of NAV; risk contributions are
    relative (sum to 1 over the risky sleeve); volatilities annualised; timings in seconds.
    """

    status: str
    reason: str | None = None
    block_number: int | None = None
    block_timestamp: int | None = None
    symbols: tuple[str, ...] = ()
    prices_usd: list[float] | None = None
    target_weights: list[float] | None = None
    relative_risk_contributions_target: list[float] | None = None
    relative_risk_contributions_before: list[float] | None = None
    ex_ante_volatility: float | None = None
    covariance: list[list[float]] | None = None
    plan: RebalancePlan | None = None
    execution: ExecutionResult | None = None
    timings: dict[str, float] = field(default_factory=dict)


class Keeper:
    """A keeper bound to one vault.

    Parameters
    ----------
    config : KeeperConfig
    w3 : Web3, optional
        Connection to reuse; a new one to ``config.rpc_url`` by default.
    private_key : str, optional
        Overrides the key source of the config (tests, the demo).
    journal : Journal, optional
        Defaults to the SQLite file ``config.journal_path``.
    """

    def __init__(
        self,
        config: KeeperConfig,
        w3: Web3 | None = None,
        private_key: str | None = None,
        journal: Journal | None = None,
    ) -> None:
        self.config = config
        self.w3 = w3 or connect(config.rpc_url)
        self.reader = ChainReader(self.w3, config.vault_address)
        self.executor = Executor(
            self.w3,
            config.vault_address,
            config.quoter_address,
            private_key or config.private_key(),
            FeePolicy.from_gwei(config.max_fee_per_gas_gwei, config.max_priority_fee_per_gas_gwei),
            gas_limit_margin=config.gas_limit_margin,
            receipt_timeout_seconds=config.receipt_timeout_seconds,
        )
        self.journal = journal or Journal(config.journal_path)
        symbols = self.reader.symbols
        if config.risk_budget is not None:
            missing = set(symbols) ^ set(config.risk_budget)
            if missing:
                raise KeeperError(f"risk_budget names {sorted(config.risk_budget)} but the vault lists {list(symbols)}")
            self.risk_budget = np.array([config.risk_budget[s] for s in symbols])
        else:
            self.risk_budget = None

    def run_once(self) -> TickReport:
        """Runs one tick and journals it. Never raises for a failed tick."""
        timings: dict[str, float] = {}
        context: dict[str, Any] = {}
        t0 = time.perf_counter()
        try:
            report = self._tick(timings, context)
        except KeeperError as exc:
            report = TickReport(status="skipped", reason=f"{type(exc).__name__}: {exc}", timings=timings, **context)
            log.warning("tick skipped: %s", report.reason)
        except Exception as exc:  # noqa: BLE001 - the tick boundary: log, journal, carry on
            report = TickReport(status="error", reason=f"{type(exc).__name__}: {exc}", timings=timings, **context)
            log.error("tick failed: %s\n%s", report.reason, traceback.format_exc())
        timings["total"] = time.perf_counter() - t0
        self._record(report)
        return report

    def _tick(self, timings: dict[str, float], context: dict[str, Any]) -> TickReport:
        cfg = self.config
        t = time.perf_counter()
        snapshot = self.reader.snapshot(cfg.max_oracle_age_seconds)
        context.update(block_number=snapshot.block_number, block_timestamp=snapshot.block_timestamp,
                       symbols=self.reader.symbols, prices_usd=snapshot.prices_usd.tolist())
        state = self.reader.vault_state(snapshot.block_number)
        history = self.reader.history(snapshot, cfg.lookback_days)
        timings["read"] = time.perf_counter() - t
        if state.paused:
            return TickReport(status="skipped", reason="vault is paused", timings=timings, **context)

        t = time.perf_counter()
        estimate = ewma_covariance(
            simple_returns(history.prices_usd),
            cfg.half_life_days,
            periods_per_year=cfg.periods_per_year,
            min_observations=cfg.min_observations,
        )
        target = solve_equal_risk_contribution(estimate.covariance, self.risk_budget)
        plan_args = dict(
            cash_buffer_bps=cfg.cash_buffer_bps,
            slippage_budget_bps=cfg.slippage_budget_bps,
            drift_threshold_bps=cfg.drift_threshold_bps,
            min_trade_value=int(cfg.min_trade_usd * 10**state.base_decimals),
            deadline=snapshot.block_timestamp + cfg.deadline_seconds,
        )
        plan = plan_rebalance(snapshot, state, self.reader.assets, target.weights, **plan_args)
        held = np.asarray(plan.current_weights)
        context.update(
            target_weights=target.weights.tolist(),
            relative_risk_contributions_target=target.relative_risk_contributions.tolist(),
            relative_risk_contributions_before=(
                relative_risk_contributions(held, estimate.covariance).tolist() if held.sum() > 0 else None
            ),
            ex_ante_volatility=target.portfolio_volatility,
            covariance=estimate.covariance.tolist(),
            plan=plan,
        )
        timings["compute"] = time.perf_counter() - t
        if plan.skip_reason:
            return TickReport(status="skipped", reason=plan.skip_reason, timings=timings, **context)

        # Quote every leg; when a pool cannot absorb the whole move within the slippage budget, take a
        # smaller step toward the targets (halving up to `max_step_halvings` times) rather than none.
        t = time.perf_counter()
        pool_fees = {a.token: a.pool_fee for a in self.reader.assets}
        fraction = 1.0
        for attempt in range(cfg.max_step_halvings + 1):
            try:
                self.executor.quote(plan, pool_fees)
                break
            except QuoteBelowBoundError:
                if attempt == cfg.max_step_halvings:
                    raise
                fraction /= 2
                plan = plan_rebalance(snapshot, state, self.reader.assets, target.weights, fraction=fraction, **plan_args)
                if plan.skip_reason:
                    raise
        context.update(plan=plan)
        timings["quote"] = time.perf_counter() - t
        execution = self.executor.send(plan)
        timings.update(execution.timings)
        log.info("rebalanced epoch %d: %d legs, gas %d, tx %s", plan.expected_epoch, len(plan.legs),
                 execution.gas_used, execution.tx_hash)
        return TickReport(status="rebalanced", execution=execution, timings=timings, **context)

    def _record(self, report: TickReport) -> None:
        execution = report.execution
        plan = report.plan
        self.journal.record(
            report.status,
            report.reason,
            block_number=report.block_number,
            block_timestamp=report.block_timestamp,
            epoch=plan.expected_epoch if plan else None,
            tx_hash=execution.tx_hash if execution else None,
            gas_used=execution.gas_used if execution else None,
            effective_gas_price=execution.effective_gas_price if execution else None,
            nav_before=plan.nav_before if plan else None,
            nav_after=execution.nav_after if execution else None,
            symbols=report.symbols,
            prices_usd=report.prices_usd,
            target_weights=report.target_weights,
            relative_risk_contributions_target=report.relative_risk_contributions_target,
            relative_risk_contributions_before=report.relative_risk_contributions_before,
            ex_ante_volatility=report.ex_ante_volatility,
            covariance=report.covariance,
            current_weights=plan.current_weights if plan else None,
            drift_bps=plan.drift_bps if plan else None,
            turnover_bps=plan.turnover_bps if plan else None,
            legs=plan.legs if plan else None,
            leg_results=execution.legs if execution else None,
            timings=report.timings,
        )


def run_forever(keeper: Keeper, interval_seconds: float) -> None:
    """Runs ``keeper.run_once`` on an APScheduler interval until interrupted.

    One tick at a time (``max_instances=1``), missed runs coalesced into one, first tick immediately.
    """
    from apscheduler.schedulers.blocking import BlockingScheduler

    scheduler = BlockingScheduler()
    scheduler.add_job(
        keeper.run_once,
        "interval",
        seconds=interval_seconds,
        max_instances=1,
        coalesce=True,
        misfire_grace_time=max(1, int(interval_seconds)),
        next_run_time=datetime.datetime.now(),
        id="tick",
    )
    try:
        scheduler.start()
    except (KeyboardInterrupt, SystemExit):
        log.info("scheduler stopped")
