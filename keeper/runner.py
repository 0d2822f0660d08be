"""One keeper tick end to end (the schedule that repeats it is :mod:`keeper.service`).

A tick is a one-way pipeline: oracle → circuit breakers → decision policy (:mod:`keeper.policy`:
conditioning gate → allocator → volatility target → ES limit, the same stage the backtester runs) →
the decision (:func:`keeper.decision.decide_rebalance`: triggers → planner → quotes → cost gate; in options
mode the overlay and the delta hedge too) → executor → chain. Every anticipated failure
(:class:`~keeper.errors.KeeperError`) ends the tick as ``skipped`` with its reason; anything else ends
it as ``error`` with the traceback in the log. Both are journalled, and neither stops the scheduler.
The decision (``policy``) and the trade decision (``trigger``: fired triggers, expected risk benefit
and cost in base-asset units) are journalled with every tick that reaches them; the next tick reads
back the last target and the last rebalance's symbols, covariance and age from the journal.

:func:`keeper.service.run_forever` runs three APScheduler jobs -- the tick (interval or cron; one at a time, missed
runs coalesced, a misfire grace), a heartbeat, and a daily report -- serves ``/metrics`` and
``/health`` when a port is configured, and on SIGTERM/SIGINT lets the in-flight tick finish (or
journals it as not sent when it had not reached the send), journals a final record, and returns 0.

Redundant keepers (several processes, machines and keys on one vault) need no coordination: the
vault's ``expectedEpoch`` lets exactly one rebalance per epoch through, and a keeper that lost the race
sees ``EpochMismatch`` in its ``eth_call`` simulation, sends nothing, and journals
``skipped`` / ``lost_race``. ``standby_delay_seconds`` staggers the sends so that the standbys see the
primary's transaction before they would send their own.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from web3 import Web3

from keeper.breakers import BreakerDecision, BreakerLimits, ChainHeadTracker, PoolPriceReader, evaluate
from keeper.chain import connect_failover
from pydantic import ValidationError

from keeper.config import KeeperConfig
from keeper.costs import GasModel
from keeper.errors import ConfigError, KeeperError, QuoteBelowBoundError, ShutdownRequestedError
from keeper.returns import simple_returns
from keeper.decision import OptionsInputs, RebalanceDecision, TradeLimits, decide_rebalance
from keeper.executor import ChainQuoter, ExecutionResult, Executor
from keeper.chain import contract
from keeper.journal import Journal
from keeper.journal_records import TickRecord
from keeper.metrics import KeeperMetrics
from keeper.risk_contributions import relative_risk_contributions
from keeper.option_desk import OptionsDesk, OverlayStepReport
from keeper.option_orders import Settlement
from keeper.oracle import ChainReader
from keeper.planner import RebalancePlan, value_holdings
from keeper.policy_decision import LastRebalance, PolicyDecision
from keeper.policy_config import PolicyConfig
from keeper.policy import decide_targets
from keeper.units import SECONDS_PER_DAY

log = logging.getLogger("keeper")



#: Symbols whose oracle price values gas (USD per ETH) when the vault lists one of them.
ETH_SYMBOLS = ("WETH", "ETH")


@dataclass(frozen=True)
class TickReport:
    """Outcome of one tick.

    ``status`` is ``"rebalanced"``, ``"skipped"`` (a decision or an anticipated refusal; ``reason`` says
    which) or ``"error"`` (an unexpected exception); :meth:`Keeper.plan_tick` also returns
    ``"planned"`` (a quoted plan, not yet sent). ``reason_code`` is a short label of the reason
    (``no_trade_needed``, ``not_worth_trading``, ``policy_hold``, ``paused``, ``lost_race``,
    ``breaker:<name>``, ``derisk``, ``shutdown``, or the exception's class name) for metrics.
    ``target_weights`` is the risky sleeve's target (sums to 1, the planner's input; NAV fractions are
    ``policy["target_weights"]`` and ``plan.target_weights``); risk contributions are relative (sum to 1
    over the risky sleeve); ``ex_ante_volatility`` is the annualised volatility of the policy's target
    NAV weights (cash included); timings in seconds. ``policy`` is
    :meth:`keeper.policy_decision.PolicyDecision.as_dict` of the tick's decision and ``trigger`` the
    :meth:`keeper.triggers.TriggerDecision.as_dict` of its trade decision (fired triggers, benefit and
    cost in base-asset units); both None when the tick stopped before them (breakers, de-risk).
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
    reason_code: str | None = None
    breakers: tuple[dict[str, Any], ...] = ()
    derisk: bool = False
    relative_risk_contributions_after: list[float] | None = None
    policy: dict[str, Any] | None = None
    trigger: dict[str, Any] | None = None
    overlay: dict[str, Any] | None = None
    current_weights: list[float] | None = None
    drift_bps: float | None = None
    #: The tick's decision and, in options mode, the option inputs it was taken on (what ``_tick`` sends).
    choice: RebalanceDecision | None = field(default=None, repr=False)
    options_inputs: OptionsInputs | None = field(default=None, repr=False)
    settlements: tuple[Settlement, ...] = ()


class Keeper:
    """A keeper bound to one vault.

    Parameters
    ----------
    config : KeeperConfig
    w3 : Web3, optional
        Connection to reuse; by default a :class:`~keeper.rpc.FailoverHTTPProvider` over
        ``config.chain.rpc_url`` and ``config.chain.rpc_fallback_urls``.
    private_key : str, optional
        Overrides the key source of the config (tests, the demo).
    journal : Journal, optional
        Defaults to the SQLite file ``config.operations.journal_path``.
    metrics : KeeperMetrics, optional
        Updated after every tick and heartbeat.
    """

    def __init__(
        self,
        config: KeeperConfig,
        w3: Web3 | None = None,
        private_key: str | None = None,
        journal: Journal | None = None,
        metrics: KeeperMetrics | None = None,
    ) -> None:
        self.config = config
        self.w3 = w3 or connect_failover(config)
        self.reader = ChainReader(self.w3, config.chain.vault_address)
        # The journal comes first: it is the executor's write-ahead log of every transaction.
        self.journal = journal or Journal(config.operations.journal_path)
        self.executor = Executor.from_config(config, self.w3, private_key or config.private_key(), self.journal)
        # Before anything is read back or reconciled: this journal's rows are this vault's on this chain.
        self.journal.bind(self.executor.chain_id, config.chain.vault_address)
        self.metrics = metrics
        symbols = self.reader.symbols
        if config.policy.risk_budget is not None:
            missing = set(symbols) ^ set(config.policy.risk_budget)
            if missing:
                raise KeeperError(f"risk_budget names {sorted(config.policy.risk_budget)} but the vault lists {list(symbols)}")
            self.risk_budget = np.array([config.policy.risk_budget[s] for s in symbols])
        else:
            self.risk_budget = None
        try:
            #: The decision policy, shared with the backtester (:mod:`keeper.policy`).
            self.policy = PolicyConfig.from_keeper_config(config)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise ConfigError(f"invalid decision policy in the config: {problems}") from exc
        self.gas_model = GasModel()
        #: The option overlay and delta hedge, when the config names the vault's OptionMarket.
        self.overlay: OptionsDesk | None = self._option_overlay(config)
        self.breaker_limits = BreakerLimits.from_config(config)
        self.head_tracker = ChainHeadTracker()
        self._pool_reader: PoolPriceReader | None = None
        #: Oracle prices of the previous tick (USD per whole token), the reference of the jump breaker.
        self.previous_prices_usd: np.ndarray | None = self._last_journalled_prices()
        self._stop = threading.Event()
        self._journal_lock = threading.Lock()
        #: True once :meth:`startup` has completed (``run_forever`` then does not repeat it).
        self.started = False
        #: Options mode: the :class:`~keeper.option_desk.OverlayStepReport` of the last tick that reached the
        #: options decision (legs, premiums, settlements, hedge); None before one has.
        self.last_overlay_step: OverlayStepReport | None = None

    # --- lifecycle -----------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Asks the in-flight tick (if any) not to start a send; a send already started completes."""
        self._stop.set()

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    def startup(self) -> None:
        """Start-up steps before the first tick: reconciliation with the chain, then the first balance.

        Raises
        ------
        KeeperError
            When reconciliation finds something it cannot settle (the keeper should not start).
        """
        # --- START-UP RECONCILIATION ---------------------------------------------------------------
        # The executor's write-ahead journal settles transactions that were in flight when the keeper
        # last stopped (mined, dropped or still pending) here, before the first tick plans anything.
        report = self.executor.reconcile()
        if report.entries:
            log.info("start-up reconciliation: %s", report)
        # -------------------------------------------------------------------------------------------
        try:
            self._update_balance()
        except KeeperError as exc:  # an RPC hiccup at start-up: the first tick and heartbeat retry
            log.warning("could not read the keeper's balance at start-up: %s", exc)
        self.started = True

    # --- one tick ------------------------------------------------------------------------------

    def run_once(self) -> TickReport:
        """Runs one tick and journals it. Never raises for a failed tick. Logs no line for the outcome (the
        caller does: :func:`keeper.service.log_tick`), only an unexpected exception's traceback."""
        timings: dict[str, float] = {}
        context: dict[str, Any] = {}
        t0 = time.perf_counter()
        try:
            report = self._tick(timings, context)
        except KeeperError as exc:
            code = "shutdown" if isinstance(exc, ShutdownRequestedError) else type(exc).__name__
            report = TickReport(status="skipped", reason=f"{type(exc).__name__}: {exc}", timings=timings,
                                reason_code=code, **context)
            # No log line here: the tick's one line (keeper.service.log_tick) carries the reason.
        except Exception as exc:  # noqa: BLE001 - the tick boundary: log, journal, carry on
            report = TickReport(status="error", reason=f"{type(exc).__name__}: {exc}", timings=timings,
                                reason_code=type(exc).__name__, **context)
            log.error("tick failed: %s\n%s", report.reason, traceback.format_exc())
        timings["total"] = time.perf_counter() - t0
        try:
            self._record(report)
        except Exception:  # noqa: BLE001 - a full disk must not kill the scheduler; the log keeps the tick
            log.error("could not journal the tick (%s: %s)\n%s", report.status, report.reason, traceback.format_exc())
        if self.metrics is not None:
            self._observe(report)
        return report

    def plan_tick(self, timings: dict[str, float] | None = None, context: dict[str, Any] | None = None) -> TickReport:
        """Reads the chain, checks the circuit breakers, and plans and quotes the tick's rebalance.

        Returns a report with status ``"planned"`` (``plan`` holds the quoted legs, ready to send) or
        ``"skipped"`` (a decision: nothing to do, paused, a breaker). Sends nothing; journals nothing.
        :func:`keeper.simulate.simulate_on_fork` runs exactly this on a fork.

        Raises
        ------
        KeeperError
            Anticipated failures (stale or invalid oracle, short history, quotes below the bound, RPC down).
        """
        timings = {} if timings is None else timings
        context = {} if context is None else context
        cfg = self.config
        t = time.perf_counter()
        # One Multicall3 eth_call: the block, every feed's latest round and the vault's state.
        snapshot, state = self.reader.read(cfg.chain.max_oracle_age_seconds)
        context.update(block_number=snapshot.block_number, block_timestamp=snapshot.block_timestamp,
                       symbols=self.reader.symbols, prices_usd=snapshot.prices_usd.tolist())
        decision = self._check_breakers(snapshot)
        self.previous_prices_usd = snapshot.prices_usd  # the jump breaker's reference for the next tick
        if decision.trips:
            context.update(breakers=tuple(_trip_dict(trip) for trip in decision.trips))
        if state.paused:
            timings["read"] = time.perf_counter() - t
            return TickReport(status="skipped", reason="vault is paused", timings=timings, reason_code="paused", **context)
        if decision.action == "skip":
            timings["read"] = time.perf_counter() - t
            first = decision.trips[0].breaker
            log.warning("circuit breaker: %s", decision.reason, extra={"breakers": [t.breaker for t in decision.trips]})
            return TickReport(status="skipped", reason=f"circuit breaker: {decision.reason}", timings=timings,
                              reason_code=f"breaker:{first}", **context)
        derisk = decision.action == "derisk"
        history = None if derisk else self.reader.history(snapshot, cfg.policy.lookback_bars, cfg.policy.bar_seconds)
        options = None if derisk or self.overlay is None else self.overlay.inputs(snapshot)
        if options is not None and history is not None:
            # The convex risk model's scenarios: the policy window's returns, when every day is observed.
            window_returns = simple_returns(history.prices_usd)
            if window_returns.shape[0] >= 2 and np.isfinite(window_returns).all():
                options = dataclasses.replace(options, returns=window_returns)
        timings["read"] = time.perf_counter() - t

        t = time.perf_counter()
        assets = self.reader.assets
        policy_decision: PolicyDecision | None = None
        if derisk:
            context.update(derisk=True)
            log.warning("circuit breaker: de-risking toward the base asset: %s", decision.reason)
        else:
            policy_decision = decide_targets(
                simple_returns(history.prices_usd), self.reader.symbols,
                current_weights=value_holdings(snapshot, state, assets).weights,
                previous_target=self._previous_target(), config=self.policy, nav_base_units=state.total_assets,
            )
            context.update(policy=policy_decision.as_dict(), **_decision_context(policy_decision))
            if policy_decision.action == "hold":
                log.warning("policy holds: %s", policy_decision.reason)
        try:
            choice = self.decide(policy_decision, snapshot, state, timings,
                                 derisk_reason=decision.reason if derisk else None,
                                 last_rebalance=None if derisk else self._last_rebalance(snapshot.block_timestamp),
                                 options=options)
        except QuoteBelowBoundError as exc:
            if exc.plan is not None:  # journal the legs the pools refused
                context.update(plan=exc.plan)
            raise
        timings["compute"] = time.perf_counter() - t - timings.get("quote", 0.0)
        context.update(choice=choice, options_inputs=options)
        rrc = choice.relative_risk_contributions_before
        if choice.plan is not None:
            context.update(plan=choice.plan)
        if choice.policy is not None and choice.plan is not None:
            context.update(relative_risk_contributions_before=None if rrc is None else rrc.tolist())
        if choice.trigger is not None:
            context.update(trigger=choice.trigger.as_dict())
        if choice.current_weights is not None:
            context.update(current_weights=choice.current_weights.tolist(), drift_bps=choice.drift_bps)
        if choice.trade:
            return TickReport(status="planned", reason=choice.reason, timings=timings,
                              reason_code=choice.reason_code, **context)
        if choice.reason_code == "not_worth_trading":
            log.info("cost gate: %s", choice.reason)
        return TickReport(status="skipped", reason=choice.reason, timings=timings, reason_code=choice.reason_code,
                          **context)

    def decide(self, policy_decision: PolicyDecision | None, snapshot: Any, state: Any, timings: dict[str, float],
               *, derisk_reason: str | None = None, last_rebalance: LastRebalance | None = None,
               options: OptionsInputs | None = None) -> RebalanceDecision:
        """:func:`keeper.decision.decide_rebalance` with this keeper's limits, policy and QuoterV2 (time spent
        quoting goes to ``timings["quote"]``)."""
        cfg = self.config
        limits = TradeLimits(slippage_budget_bps=cfg.transactions.slippage_budget_bps,
                             min_trade_value=int(cfg.transactions.min_trade_usd * 10**state.base_decimals),
                             deadline=snapshot.block_timestamp + cfg.transactions.deadline_seconds,
                             max_step_halvings=cfg.transactions.max_step_halvings)
        quoter = _TimedQuoter(self._quoter(snapshot, state), timings)
        return decide_rebalance(policy_decision, snapshot=snapshot, state=state, assets=self.reader.assets,
                                policy=self.policy, limits=limits, quoter=quoter, derisk_reason=derisk_reason,
                                last_rebalance=last_rebalance, options=options)

    def _quoter(self, snapshot: Any, state: Any) -> ChainQuoter:
        """QuoterV2 for the legs; gas priced at the next block's fee (the cap when it cannot be read), read only
        when a quoted plan is costed."""
        return ChainQuoter(self.executor, self.reader.assets, snapshot, state, self.gas_model, self._gas_price_wei,
                           self._eth_price_usd(snapshot))

    def _gas_price_wei(self) -> int:
        """Base fee + tip of the next block, wei per gas; the fee cap when the fee cannot be read."""
        try:
            fees = self.executor.fee_policy.estimate(self.w3, gate=False)
            return fees.base_fee_per_gas + fees.max_priority_fee_per_gas
        except KeeperError as exc:
            log.warning("pricing the rebalance's gas at the fee cap: %s", exc)
            return self.executor.fee_policy.max_fee_per_gas_wei

    def _eth_price_usd(self, snapshot: Any) -> float:
        """USD per ETH: the vault's WETH/ETH oracle price when it lists that asset, else the config's."""
        for symbol, price in zip(self.reader.symbols, snapshot.prices_usd):
            if symbol.upper() in ETH_SYMBOLS and np.isfinite(price) and price > 0:
                return float(price)
        return float(self.config.transactions.eth_price_usd)

    def _option_overlay(self, config: KeeperConfig) -> OptionsDesk | None:
        """The options desk bound to the vault's OptionMarket, or ``None`` without ``option_market_address``.

        Raises
        ------
        ConfigError
            A market that is not the vault's.
        """
        if config.chain.option_market_address is None:
            return None
        overlay, trigger = config.options.overlay, config.options.hedge_trigger  # validated with the config
        vault_market = self.reader.vault.functions.optionMarket().call()
        if vault_market.lower() != config.chain.option_market_address.lower():
            raise ConfigError(
                f"option_market_address {config.chain.option_market_address} is not the vault's option market ({vault_market})"
            )
        market = contract(self.w3, "OptionMarket", config.chain.option_market_address)
        return OptionsDesk(self.reader, self.executor, self.journal, market, overlay, trigger)

    def _tick(self, timings: dict[str, float], context: dict[str, Any]) -> TickReport:
        # Settle any transaction still live in the journal (mined, replaced, stuck) before planning:
        # the journal stays current every tick, and no second rebalance is planned over a pending one.
        self.executor.ensure_idle()
        if self.overlay is not None:
            # Settlement of expired series is an action of its own, before planning: the payouts are then
            # in the NAV the decision sees, and the book holds live series only.
            try:
                context.update(settlements=self.overlay.settle_expired())
            except KeeperError as exc:
                log.warning("could not settle an expired series this tick: %s", exc)
        planned = self.plan_tick(timings, context)
        if planned.choice is not None and planned.choice.hedge is not None:
            step = OverlayStepReport.of(planned.choice, "skipped", planned.reason, settlements=planned.settlements)
            if planned.status != "planned":
                return self._with_overlay(planned, step)
        if planned.status != "planned":
            return planned
        plan = planned.plan
        assert plan is not None
        cfg = self.config
        if cfg.operations.standby_delay_seconds > 0:
            # A standby gives the primary time to land its rebalance, then looks before it leaps.
            log.info("standby: waiting %g s before sending the rebalance of epoch %d", cfg.operations.standby_delay_seconds,
                     plan.expected_epoch)
            if self._stop.wait(cfg.operations.standby_delay_seconds):
                raise ShutdownRequestedError("shutdown requested during the standby delay; nothing was sent")
            self.executor.discard_precheck()  # the simulation read with the quotes predates the wait
            epoch = self.reader.vault.functions.rebalanceEpoch().call()
            if epoch != plan.expected_epoch:
                return self._lost_race(plan, epoch, timings, context, onchain=False)
        if self._stop.is_set():
            raise ShutdownRequestedError("shutdown requested before sending; nothing was sent")
        # Receipts of ours settled so far: one more after a failed send means it reached the chain (no request).
        receipts_before = self.executor.tx.receipts_settled
        step = None
        try:
            if planned.options_inputs is not None and planned.choice is not None and planned.choice.hedge is not None:
                step = self.overlay.execute(planned.choice, planned.options_inputs,  # type: ignore[union-attr]
                                            settlements=planned.settlements)
                execution = step.execution
            else:
                # Right after the decision: the simulation, gas estimate and fees read with the quotes serve.
                execution = self.executor.send(plan, reuse_precheck=True)
        except Exception as exc:
            # Another keeper may have rebalanced this epoch between our read and our send: the
            # simulation (or gas estimate) reverts with EpochMismatch and nothing is sent; a send that
            # raced all the way to the chain reverts there. If the epoch's rebalance is our own (the
            # failure came after our transaction was mined, e.g. the receipt could not be read), the
            # original failure stands: it was not a lost race.
            try:
                epoch = self.reader.vault.functions.rebalanceEpoch().call()
                if epoch == plan.expected_epoch:
                    raise exc
                winner = self._rebalancer_of(plan.expected_epoch, context.get("block_number") or 0)
            except Exception:  # noqa: BLE001 - keep the original failure
                raise exc from None
            if winner is not None and winner.lower() == self.executor.address.lower():
                raise exc
            return self._lost_race(plan, epoch, timings, context, onchain=self.executor.tx.receipts_settled > receipts_before, cause=exc,
                                   winner=winner)
        timings.update(execution.timings)
        log.info("rebalanced epoch %d: %d legs, gas %d, tx %s", plan.expected_epoch, len(plan.legs),
                 execution.gas_used, execution.tx_hash,
                 extra={"status": "rebalanced", "epoch": plan.expected_epoch, "tx_hash": execution.tx_hash,
                        "gas_used": execution.gas_used, "derisk": planned.derisk})
        if self.metrics is not None:
            context.update(relative_risk_contributions_after=self._post_trade_rrc(execution.block_number, context))
        report = TickReport(status="rebalanced", reason=planned.reason, execution=execution, timings=timings,
                            reason_code=planned.reason_code, **context)
        return report if step is None else self._with_overlay(report, step)

    def _with_overlay(self, report: TickReport, step: OverlayStepReport) -> TickReport:
        """Options mode: journals the options part of the tick (Greeks before, planned and after) and puts its
        summary on the tick's report."""
        self.last_overlay_step = step
        self.overlay.record(step)  # type: ignore[union-attr]
        summary = {
            "status": step.status, "reason": step.reason, "tx_hash": step.tx_hash, "gas_used": step.gas_used,
            "option_legs": len(step.legs), "swap_legs": len(step.plan.legs) if step.plan else 0,
            "settlements": len(step.settlements), "target_scale": step.target_scale, "cash_scale": step.cash_scale,
        }
        code = report.reason_code
        if report.status == "rebalanced":
            code = "overlay_traded"
        return dataclasses.replace(report, overlay=summary, reason_code=code)

    def _lost_race(self, plan: RebalancePlan, epoch: int, timings: dict[str, float], context: dict[str, Any],
                   onchain: bool, cause: BaseException | None = None, winner: str | None = None) -> TickReport:
        by = f"another keeper{f' ({winner})' if winner else ''}"
        if onchain:
            reason = (f"epoch advanced by {by} (expected {plan.expected_epoch}, now {epoch}) while our "
                      f"transaction was in flight; it reverted on chain: {cause}")
        else:
            reason = (f"epoch advanced by {by} (expected {plan.expected_epoch}, now {epoch}); "
                      f"nothing was sent{f' ({cause})' if cause else ''}")
        log.info("lost the race: %s", reason, extra={"status": "skipped", "reason_code": "lost_race"})
        return TickReport(status="skipped", reason=reason, timings=timings,
                          reason_code="lost_race_onchain" if onchain else "lost_race", **context)

    def _rebalancer_of(self, epoch: int, from_block: int) -> str | None:
        """Sender of the transaction that emitted ``Rebalanced(epoch)`` since ``from_block``, if found."""
        event = self.reader.vault.events.Rebalanced
        logs = event.get_logs(from_block=from_block, argument_filters={"epoch": epoch})
        if not logs:
            return None
        return self.w3.eth.get_transaction(logs[0]["transactionHash"])["from"]

    # --- breakers ------------------------------------------------------------------------------

    def _check_breakers(self, snapshot: Any) -> BreakerDecision:
        limits = self.breaker_limits
        stalled = self.head_tracker.observe(snapshot.block_number)
        pool_prices = None
        if limits.max_pool_deviation_bps is not None:
            if self._pool_reader is None:
                self._pool_reader = PoolPriceReader(self.w3, self.reader.vault, self.reader.assets,
                                                    self.reader.base_asset, self.reader.base_decimals)
            pool_prices = self._pool_reader.prices_usd(snapshot.block_number)
        previous = self.previous_prices_usd
        if previous is not None and previous.shape != snapshot.prices_usd.shape:
            previous = None
        return evaluate(limits, self.reader.symbols, snapshot.prices_usd, snapshot.updated_at.tolist(),
                        snapshot.block_number, snapshot.block_timestamp, previous_prices_usd=previous,
                        pool_prices_usd=pool_prices, stalled_seconds=stalled)

    def _last_journalled_prices(self) -> np.ndarray | None:
        """The last journalled oracle prices over the vault's symbols (the jump breaker's reference), or None."""
        try:
            last = self.journal.last_prices()
        except Exception:  # noqa: BLE001 - an unreadable journal only means no reference price yet
            return None
        if last is None or last.symbols != self.reader.symbols:
            return None
        return last.prices_usd

    def _previous_target(self) -> np.ndarray | None:
        """``target_weights`` of the last journalled policy decision over the vault's symbols, or None."""
        try:
            last = self.journal.last_decision()
        except Exception:  # noqa: BLE001 - an unreadable journal only means no previous target
            return None
        if last is None or last.symbols != self.reader.symbols:
            return None
        target = last.target_weights
        if target.shape != (len(self.reader.symbols),) or np.any(target < 0) or target.sum() > 1.0 + 1e-9:
            return None
        return target

    def _last_rebalance(self, now: int) -> LastRebalance | None:
        """The last journalled rebalance (symbols, covariance used, seconds before ``now``), or None."""
        try:
            last = self.journal.last_rebalance()
        except Exception:  # noqa: BLE001 - an unreadable journal: no last rebalance known
            return None
        if last is None:
            return None
        return LastRebalance(last.symbols, last.covariance, float(max(0, now - last.block_timestamp)))

    # --- heartbeat, metrics, journal -------------------------------------------------------------

    def heartbeat(self) -> dict[str, Any]:
        """Reads the head block and the keeper's balance, updates metrics, logs one line; never raises."""
        facts: dict[str, Any] = {"event": "heartbeat"}
        try:
            facts["head_block"] = self.w3.eth.block_number
            facts["keeper_balance_wei"] = self._update_balance()
        except Exception as exc:  # noqa: BLE001 - a heartbeat reports, it does not fail
            facts["error"] = f"{type(exc).__name__}: {exc}"
        if self.metrics is not None:
            self.metrics.beat(facts.get("head_block"))
            health = self.metrics.health()
            facts.update(healthy=health.healthy, health_reasons=list(health.reasons),
                         last_successful_tick_age_seconds=health.last_successful_tick_age_seconds)
        log.info("heartbeat: %s", {k: v for k, v in facts.items() if k != "event"}, extra=facts)
        return facts

    def daily_report(self, now: float | None = None) -> dict[str, Any]:
        """Summary of the journal's last 24 hours (see :func:`keeper.status.journal_summary`), logged."""
        from keeper.status import journal_summary

        now = time.time() if now is None else now
        with self._journal_lock:
            rows = self.journal.ticks_between(now - SECONDS_PER_DAY, now)
        summary = journal_summary(rows)
        summary.update(event="daily_report", since=now - SECONDS_PER_DAY, until=now)
        log.info("daily report: %s", summary, extra=summary)
        return summary

    def record_shutdown(self, reason: str) -> None:
        """Journals the final record of a run."""
        with self._journal_lock:
            self.journal.record_shutdown(reason)

    def _update_balance(self) -> int | None:
        balance = int(self.w3.eth.get_balance(self.executor.address))
        if self.metrics is not None:
            self.metrics.set_balance(balance)
        return balance

    def _post_trade_rrc(self, block_number: int, context: dict[str, Any]) -> list[float] | None:
        try:
            snapshot = self.reader.snapshot(self.config.chain.max_oracle_age_seconds)
            state = self.reader.vault_state(block_number)
            held = value_holdings(snapshot, state, self.reader.assets).weights
            if context.get("covariance") is None or held.sum() <= 0:
                return None
            return relative_risk_contributions(held, np.asarray(context["covariance"])).tolist()
        except Exception:  # noqa: BLE001 - a metric, not a decision
            log.warning("could not read post-trade holdings for the risk-contribution metric", exc_info=True)
            return None

    def _observe(self, report: TickReport) -> None:
        assert self.metrics is not None
        execution, plan = report.execution, report.plan
        nav = execution.nav_after if execution else (plan.nav_before if plan else None)
        rrc = report.relative_risk_contributions_after or report.relative_risk_contributions_before
        dispersion = None
        if rrc is not None:
            budget = self.risk_budget if self.risk_budget is not None else np.full(len(rrc), 1 / len(rrc))
            dispersion = float(np.max(np.abs(np.asarray(rrc) - budget)))
        self.metrics.observe_tick(
            report.status, report.reason_code, report.reason, report.timings.get("total", 0.0),
            gas_used=execution.gas_used if execution else None,
            effective_gas_price_wei=execution.effective_gas_price if execution else None,
            nav_base_units=nav / 10**self.reader.base_decimals if nav is not None else None,
            dispersion=dispersion,
            breakers=[b["breaker"] for b in report.breakers],
        )
        try:
            self._update_balance()
        except Exception:  # noqa: BLE001 - the next heartbeat retries
            log.warning("could not read the keeper's balance", exc_info=True)

    def _record(self, report: TickReport) -> None:
        execution = report.execution
        plan = report.plan
        record = TickRecord(
            status=report.status,
            reason=report.reason,
            reason_code=report.reason_code,
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
            relative_risk_contributions_after=report.relative_risk_contributions_after,
            ex_ante_volatility=report.ex_ante_volatility,
            covariance=report.covariance,
            current_weights=plan.current_weights if plan else report.current_weights,
            drift_bps=plan.drift_bps if plan else report.drift_bps,
            turnover_bps=plan.turnover_bps if plan else None,
            legs=plan.legs if plan else None,
            leg_results=execution.legs if execution else None,
            timings=report.timings,
            breakers=list(report.breakers),
            derisk=report.derisk,
            policy=report.policy,
            trigger=report.trigger,
            overlay=report.overlay,
        )
        with self._journal_lock:
            self.journal.record_tick(record)


def _decision_context(decision: PolicyDecision) -> dict[str, Any]:
    """The :class:`TickReport` fields filled from a policy decision."""
    rrc = decision.relative_risk_contributions
    return dict(
        target_weights=np.asarray(decision.sleeve_weights).tolist(),
        relative_risk_contributions_target=None if not np.all(np.isfinite(rrc)) else np.asarray(rrc).tolist(),
        ex_ante_volatility=(float(decision.ex_ante_volatility) if np.isfinite(decision.ex_ante_volatility)
                            else None),
        covariance=None if decision.covariance is None else np.asarray(decision.covariance).tolist(),
    )


class _TimedQuoter:
    """A :class:`keeper.decision.Quoter` that adds the time spent quoting to the tick's ``timings["quote"]``."""

    def __init__(self, inner: Any, timings: dict[str, float]) -> None:
        self.inner = inner
        self.timings = timings

    def quote(self, plan: RebalancePlan) -> tuple[int, ...]:
        t = time.perf_counter()
        try:
            return self.inner.quote(plan)
        finally:
            self.timings["quote"] = self.timings.get("quote", 0.0) + time.perf_counter() - t

    def cost(self, plan: RebalancePlan, amounts_out: tuple[int, ...]) -> Any:
        return self.inner.cost(plan, amounts_out)


def _trip_dict(trip: Any) -> dict[str, Any]:
    return {"breaker": trip.breaker, "action": trip.action, "symbol": trip.symbol,
            "observed": trip.observed, "limit": trip.limit, "reason": trip.reason}
