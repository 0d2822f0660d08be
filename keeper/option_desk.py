"""The options edge of a tick: read the vault's option book and the market, settle expired series, send the
decided ``rebalanceWithOptions`` and journal what it did with the Greeks before, planned and after.

The decision itself (overlay orders, exposure targets, delta hedge, quotes, cost gate) is
:func:`keeper.decision.decide_rebalance` with :class:`keeper.decision.OptionsInputs`; this module only reads
(:meth:`OptionsDesk.inputs`), acts (:meth:`OptionsDesk.settle_expired`, :meth:`OptionsDesk.execute`) and
journals (:meth:`OptionsDesk.record`). State kept between ticks: the time and implied vols of the last delta
hedge (the hedge trigger's inputs).

Units: premiums, payouts and NAV in base-asset units; Greeks in underlying units and USD; times Unix seconds.
"""

from __future__ import annotations

import logging
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import numpy.typing as npt
from web3.logs import DISCARD

from keeper.greeks import portfolio_greeks
from keeper.decision import OptionsInputs, RebalanceDecision
from keeper.errors import KeeperError, ShutdownRequestedError
from keeper.hedging import HedgeTriggerConfig
from keeper.overlay import OverlayConfig
from keeper.journal import Journal
from keeper.journal_records import OverlayStepRecord
from keeper.option_chain import ChainOptionQuoter, read_implied_vols, read_option_book, settle_expired, vol_feeds_of
from keeper.option_orders import OptionLeg, Settlement
from keeper.oracle import ChainReader, PriceSnapshot
from keeper.planner import RebalancePlan, value_holdings
from keeper.policy import fixed_target

__all__ = ["OverlayStepReport", "OptionsDesk"]

log = logging.getLogger("keeper")
FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class OverlayStepReport:
    """What the options part of a tick did.

    ``status``: ``"traded"``, ``"skipped"`` (nothing to trade, or an anticipated refusal in ``reason``) or
    ``"error"`` (an unexpected exception, traceback in the log).
    Premiums and payouts in base units; ``legs`` the option legs sent; ``executed`` the vault's
    ``OptionLegExecuted`` events ``(leg_index, is_buy, amount, premium, fair_value)``.
    """

    status: str
    reason: str | None = None
    settlements: tuple[Settlement, ...] = ()
    decision: dict[str, Any] | None = None
    overlay: dict[str, Any] | None = None
    greeks_before: dict[str, Any] | None = None
    greeks_after: dict[str, Any] | None = None
    plan: RebalancePlan | None = None
    legs: tuple[OptionLeg, ...] = ()
    executed: tuple[tuple[int, bool, int, int, int], ...] = ()
    tx_hash: str | None = None
    gas_used: int | None = None
    execution: Any = None
    #: Factor (<= 1) applied to the spot targets when they and the premiums do not fit in the NAV
    #: (:func:`keeper.planner.sleeve_targets`); below 1 the deltas stay under their targets.
    cash_scale: float = 1.0
    #: Factor (<= 1) applied to the exposure targets so that spot plus option delta can reach them without
    #: leverage (long puts deep in the money ask for more spot than the NAV holds).
    target_scale: float = 1.0
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def premium_paid(self) -> int:
        return sum(e[3] for e in self.executed if e[1])

    @property
    def premium_received(self) -> int:
        return sum(e[3] for e in self.executed if not e[1])

    @classmethod
    def of(cls, choice: RebalanceDecision, status: str, reason: str | None, **fields: Any) -> "OverlayStepReport":
        """The report of a decision in options mode (``choice.hedge`` set)."""
        hedge = choice.hedge
        if hedge is None:
            return cls(status, reason, plan=choice.plan, **fields)
        overlay = {**hedge.overlay.as_dict(), "refused_orders": list(hedge.refused_orders),
                   "risk_before": hedge.risk_before, "risk_after": hedge.risk_after,
                   "es_spot_scale": hedge.es_spot_scale, "risk_notes": list(hedge.risk_notes)}
        return cls(status, reason, decision=hedge.decision.as_dict(), overlay=overlay,
                   greeks_before=hedge.greeks_before.as_dict(), plan=choice.plan,
                   legs=choice.plan.option_legs if choice.plan is not None else (),
                   cash_scale=hedge.cash_scale, target_scale=hedge.target_scale, **fields)


class OptionsDesk:
    """Reads, settles, sends and journals the options part of the keeper's decisions for one vault.

    Parameters
    ----------
    reader : ChainReader
        The vault's oracle and state reader.
    executor : keeper.executor.Executor
        Simulates and sends from the keeper key through the write-ahead journal.
    journal : Journal
    market : web3 contract
        The vault's ``OptionMarket``.
    overlay : OverlayConfig
    trigger : HedgeTriggerConfig
    settle : callable(bound_function) -> receipt, optional
        Sends ``settleOption`` calls (anyone may); default: ``executor.send_call`` from the keeper key.
    settler : str, optional
        Address ``settle`` sends from (the simulation's ``from``); default the executor's.
    """

    def __init__(self, reader: ChainReader, executor: Any, journal: Journal, market: Any, overlay: OverlayConfig,
                 trigger: HedgeTriggerConfig, settle: Callable[[Any], Any] | None = None,
                 settler: str | None = None) -> None:
        self.reader = reader
        self.executor = executor
        self.journal = journal
        self.market = market
        self.overlay = overlay
        self.trigger = trigger
        self.vault = reader.vault
        self.w3 = reader.w3
        self.settle = settle if settle is not None else self._send_settlement
        self.settler = settler if settler is not None else executor.address
        self.last_hedge_at: int | None = None
        self.iv_at_last_hedge: FloatArray | None = None
        self.protective_delta_at_last_hedge: FloatArray | None = None
        self._vol_feeds: list[tuple[Any, int]] | None = None
        self._leg_event = self.vault.events.OptionLegExecuted()

    # --- reads -------------------------------------------------------------------------------------
    def inputs(self, snapshot: PriceSnapshot) -> OptionsInputs:
        """The option book, implied vols and the vault's option mark at the snapshot's block."""
        block = snapshot.block_number
        assets = self.reader.assets
        if self._vol_feeds is None:
            self._vol_feeds = vol_feeds_of(self.market, assets)
        return OptionsInputs(
            book=read_option_book(self.vault, self.market, assets, block),
            vols=read_implied_vols(self.market, assets, block, self._vol_feeds),
            options_value=int(self.vault.functions.optionsValue().call(block_identifier=block)),
            now=snapshot.block_timestamp, overlay=self.overlay, trigger=self.trigger,
            last_hedge_at=self.last_hedge_at, iv_at_last_hedge=self.iv_at_last_hedge,
            protective_delta_at_last_hedge=self.protective_delta_at_last_hedge,
            quoter=ChainOptionQuoter(self.vault, self.market, block),
        )

    # --- actions -----------------------------------------------------------------------------------
    def settle_expired(self) -> tuple[Settlement, ...]:
        """Settles every held series past expiry (before the tick plans; the payouts are then in the NAV)."""
        book = read_option_book(self.vault, self.market, self.reader.assets)
        now = self.w3.eth.get_block("latest")["timestamp"]
        return settle_expired(self.vault, self.market, book, now, self.settle, self.settler)

    def _send_settlement(self, fn: Any) -> dict[str, Any]:
        return self.executor.send_call(fn.address, fn._encode_transaction_data(), kind="settle")

    def execute(self, choice: RebalanceDecision, inputs: OptionsInputs, **report_fields: Any) -> OverlayStepReport:
        """Sends the decided ``rebalanceWithOptions`` (``eth_call`` simulation first); returns the report with the
        legs the vault executed and the Greeks after. Records the hedge's time and vols when spot legs went."""
        plan = choice.plan
        assert plan is not None
        execution = self.executor.send(plan)
        receipt = self.w3.eth.get_transaction_receipt(execution.tx_hash)
        executed = tuple(
            (int(e["args"]["legIndex"]), bool(e["args"]["isBuy"]), int(e["args"]["amount"]),
             int(e["args"]["premium"]), int(e["args"]["fairValue"]))
            for e in self._leg_event.process_receipt(receipt, errors=DISCARD)
        )
        if plan.legs:
            self.last_hedge_at = inputs.now
            self.iv_at_last_hedge = inputs.vols
            self.protective_delta_at_last_hedge = choice.hedge.protective_delta_units if choice.hedge else None
        greeks_after = self._greeks_after(inputs.vols, int(receipt["blockNumber"]))
        timings = dict(report_fields.pop("timings", {}))
        timings.update(execution.timings)
        return OverlayStepReport.of(choice, "traded", choice.reason, executed=executed, tx_hash=execution.tx_hash,
                                    gas_used=execution.gas_used, execution=execution, greeks_after=greeks_after,
                                    timings=timings, **report_fields)

    def step(self, target_weights: npt.ArrayLike, covariance: npt.ArrayLike,
             decide: Callable[..., RebalanceDecision], max_oracle_age_seconds: int) -> OverlayStepReport:
        """One options decision toward fixed NAV fractions ``target_weights`` (n,) under the annualised
        ``covariance`` (n, n), outside the keeper's policy (tools and tests): settle, read, decide, send, journal.

        ``decide(policy_decision, snapshot, state, timings, options=inputs)`` is the keeper's
        (:meth:`keeper.runner.Keeper.decide`: :func:`keeper.decision.decide_rebalance` with its quoter and
        limits). Never raises for an anticipated failure: it ends as ``"skipped"`` (``"error"`` for anything
        else), journalled either way."""
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        settlements: tuple[Settlement, ...] = ()
        report: OverlayStepReport
        try:
            settlements = self.settle_expired()
            snapshot = self.reader.snapshot(max_oracle_age_seconds)
            state = self.reader.vault_state(snapshot.block_number)
            if state.paused:
                raise KeeperError("vault is paused")
            inputs = self.inputs(snapshot)
            timings["read"] = time.perf_counter() - t0
            current = value_holdings(snapshot, state, self.reader.assets).weights
            decision = fixed_target(self.reader.symbols, target_weights, current, covariance,
                                    reason="given exposure targets")
            choice = decide(decision, snapshot, state, timings, options=inputs)
            if not choice.trade:
                report = OverlayStepReport.of(choice, "skipped", choice.reason, settlements=settlements, timings=timings)
            else:
                report = self.execute(choice, inputs, settlements=settlements, timings=timings)
        except KeeperError as exc:
            report = OverlayStepReport("skipped", f"{type(exc).__name__}: {exc}", settlements=settlements,
                                       timings=timings)
            log.warning("options step skipped: %s", report.reason)
        except ShutdownRequestedError:
            raise
        except Exception as exc:  # noqa: BLE001 - the step boundary: log, journal, carry on
            report = OverlayStepReport("error", f"{type(exc).__name__}: {exc}", settlements=settlements,
                                       timings=timings)
            log.error("options step failed: %s\n%s", report.reason, traceback.format_exc())
        report.timings["total"] = time.perf_counter() - t0
        self.record(report)
        return report

    # --- journal -----------------------------------------------------------------------------------
    def _greeks_after(self, vols: FloatArray, block: int) -> dict[str, Any]:
        """Greeks of the book at ``block`` (after the transaction; the vols are the ones it was planned with)."""
        reader = self.reader
        fn = self.vault.functions
        symbols = reader.symbols
        balances = fn.holdings().call(block_identifier=block)[1][1:]
        nav = fn.totalAssets().call(block_identifier=block) / 10**reader.base_decimals
        units = np.array([b / 10**a.token_decimals for b, a in zip(balances, reader.assets)])
        book = read_option_book(self.vault, self.market, reader.assets, block)
        now = self.w3.eth.get_block(block)["timestamp"]
        spots = reader.snapshot().prices_usd
        g = portfolio_greeks(dict(zip(symbols, units)), [h.position() for h in book],
                                     dict(zip(symbols, spots)), dict(zip(symbols, vols)), now, symbols=symbols)
        out = g.as_dict()
        for i, s in enumerate(symbols):
            out[s]["exposure_weight"] = float(g.dollar_delta[i] / nav)
        return out

    def record(self, report: OverlayStepReport) -> None:
        """Journals the options part of a tick as an ``overlay_<status>`` row."""
        plan = report.plan
        self.journal.record_overlay_step(OverlayStepRecord(
            status=report.status, reason=report.reason, epoch=plan.expected_epoch if plan else None,
            tx_hash=report.tx_hash, gas_used=report.gas_used, nav_before=plan.nav_before if plan else None,
            hedge_decision=report.decision, overlay_plan=report.overlay, greeks_before=report.greeks_before,
            greeks=(report.decision or {}).get("greeks"), greeks_after=report.greeks_after,
            legs=plan.legs if plan else None, option_legs=report.legs, executed=report.executed,
            settlements=report.settlements, cash_scale=report.cash_scale, target_scale=report.target_scale,
            timings=report.timings))

