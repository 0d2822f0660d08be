r"""The keeper's trade decision, written once and shared by the live keeper, ``keeper simulate``,
``keeper backtest`` and ``keeper demo``.

Stage order (a module here knows only the stages before it)::

    policy decision (keeper.policy.decide_targets, or a fixed mix)      ─┐
    vault state and oracle answers (keeper.oracle: chain or price table) ─┼─► decide_rebalance ─► RebalanceDecision
    a Quoter (QuoterV2 on chain, or the backtest's pool model)           ─┘

:func:`decide_rebalance` is pure apart from the quoter it is handed: it plans the legs toward the policy's
target (:func:`keeper.planner.plan_rebalance`), asks the triggers whether the drift is worth looking at
(:func:`keeper.policy.policy_triggers`), quotes the legs, taking a smaller step when a pool cannot absorb
the whole move (:func:`quote_with_halving`, the only quote-and-halve loop in the keeper), and lets the cost
gate (:func:`keeper.policy.evaluate_trade`) weigh the expected risk benefit of the quoted legs against
their fees, price impact and gas. Only the edges differ between the entry points: where the snapshot,
the vault state and the quotes come from, and what is done with the decision (sent through
:class:`keeper.executor.Executor` or filled at the modelled outputs).

Units: weights are fractions of NAV; amounts and costs are the smallest units of their token (base-asset
units for values, as the vault computes them); ``*_bps`` are basis points of NAV; times Unix seconds.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

import numpy as np
import numpy.typing as npt

from keeper import hedging
from keeper.book_risk import BookRisk, RiskModelConfig, book_risk, max_spot_scale_for_es, scenario_returns
from keeper.greeks import OptionPosition, PortfolioGreeks, delta_adjusted_exposures, portfolio_greeks, \
    protective_delta_units
from keeper.overlay import OverlayPlan, plan_overlay
from keeper.costs import TradeCost
from keeper.errors import ConfigError, NavLossBudgetError, QuoteBelowBoundError
from keeper.hedging import HedgeTriggerConfig
from keeper.overlay import OverlayConfig
from keeper.risk_contributions import relative_risk_contributions
from keeper.option_orders import HeldSeries, OptionLeg, OptionQuoter, book_after_legs, option_legs_for_plan, \
    with_option_legs
from keeper.oracle import PriceSnapshot, RiskAssetInfo, VaultState
from keeper.planner import RebalancePlan, plan_rebalance, sleeve_targets, value_holdings, value_of
from keeper.policy_decision import LastRebalance, PolicyDecision
from keeper.policy_config import PolicyConfig
from keeper.policy import evaluate_trade, policy_triggers
from keeper.triggers import (
    TriggerDecision,
    TriggerPolicy,
    TriggerSignals,
    apply_cost_gate,
    expected_risk_benefit,
    weight_drift_bps,
)
from keeper.units import BPS

FloatArray = npt.NDArray[np.float64]

__all__ = [
    "Quoter",
    "OptionsInputs",
    "HedgeOutcome",
    "QuotedPlan",
    "TradeLimits",
    "RebalanceDecision",
    "quote_with_halving",
    "nav_loss_check",
    "post_trade_weights",
    "decide_rebalance",
]


class Quoter(Protocol):
    """Where the legs' prices come from: QuoterV2 on chain (:class:`keeper.executor.ChainQuoter`) or the
    backtest's model of the pools (:class:`keeper.backtest.ModelQuoter`)."""

    def quote(self, plan: RebalancePlan) -> tuple[int, ...]:
        """Output of every swap leg of ``plan``, smallest units of the leg's output token.

        Raises
        ------
        QuoteBelowBoundError
            A leg's output is below its ``min_amount_out`` (the pool is off the oracle or too shallow).
        """
        ...

    def cost(self, plan: RebalancePlan, amounts_out: tuple[int, ...]) -> TradeCost:
        """Fees, price impact and gas of sending ``plan`` at the quoted outputs, base-asset units."""
        ...


@dataclass(frozen=True)
class TradeLimits:
    """The keeper's own execution limits for one decision.

    Attributes
    ----------
    slippage_budget_bps : float
        Largest shortfall of a leg's output below its oracle value, bps (clamped to the vault's bound).
    min_trade_value : int
        Smallest leg worth sending, base-asset units.
    deadline : int
        Unix seconds after which the vault refuses the transaction.
    max_step_halvings : int
        How many times a move the pools cannot absorb is halved before the tick gives up.
    """

    slippage_budget_bps: float
    min_trade_value: int
    deadline: int
    max_step_halvings: int


@dataclass(frozen=True)
class QuotedPlan:
    """A plan whose swap legs all quote at or above their ``min_amount_out``.

    ``fraction`` is the share of the planned move it makes (1, 1/2, 1/4, ...); ``amounts_out`` aligns with
    ``plan.legs`` (empty when the plan has option legs only)."""

    plan: RebalancePlan
    amounts_out: tuple[int, ...]
    fraction: float
    halvings: int


def quote_with_halving(plan_at: Callable[[float], RebalancePlan], quoter: Quoter,
                       max_step_halvings: int,
                       refuse: Callable[[RebalancePlan, tuple[int, ...]], str | None] | None = None) -> QuotedPlan:
    """Quotes ``plan_at(1.0)``; when a pool cannot absorb the whole move within the slippage budget, takes
    half the step (``plan_at(0.5)``, ``plan_at(0.25)``, ...) up to ``max_step_halvings`` times.

    A step toward the target is better than none: a shallow pool limits how far one rebalance can go, and
    the next tick goes on from where this one stopped.

    Parameters
    ----------
    plan_at : callable(fraction) -> RebalancePlan
        Plans the move scaled by ``fraction`` in (0, 1].
    quoter : Quoter
    max_step_halvings : int
        >= 0.
    refuse : callable(plan, amounts_out) -> str or None, optional
        A further check of the quoted plan (the vault's rolling NAV-loss budget, :func:`nav_loss_check`): a
        reason to take a smaller step, or None when the plan may go.

    Returns
    -------
    QuotedPlan
        A plan with no swap leg is returned unquoted (an options-only plan needs no pool).

    Raises
    ------
    QuoteBelowBoundError
        Still below the bound after ``max_step_halvings`` halvings, or the smaller step leaves no spot leg
        while the plan has nothing else to send (:class:`~keeper.errors.NavLossBudgetError` when it was the
        ``refuse`` check that kept failing).
    """
    if max_step_halvings < 0:
        raise ValueError(f"max_step_halvings must be >= 0, got {max_step_halvings}")
    fraction = 1.0
    plan = plan_at(fraction)
    for attempt in range(max_step_halvings + 1):
        if not plan.legs:
            return QuotedPlan(plan, (), fraction, attempt)
        try:
            amounts = tuple(quoter.quote(plan))
            why = refuse(plan, amounts) if refuse is not None else None
            if why is not None:
                raise NavLossBudgetError(why)
            return QuotedPlan(plan, amounts, fraction, attempt)
        except QuoteBelowBoundError as exc:
            if attempt == max_step_halvings:
                error = type(exc)(f"{exc} (after {attempt} halvings of the step)")
                error.plan = plan
                raise error from exc
            refused = plan
            fraction /= 2
            plan = plan_at(fraction)
            if not plan.legs and not plan.option_legs:
                error = type(exc)(f"{exc}; half the step: {plan.skip_reason}")
                error.plan = refused
                raise error from exc
    raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises


def nav_loss_check(quoter: Quoter, state: VaultState) -> Callable[[RebalancePlan, tuple[int, ...]], str | None]:
    """The vault's rolling NAV-loss budget as a check of a quoted plan: the fees and price impact of the quoted
    swap legs (what they lose against the oracle) plus each option leg's premium against its fair value (the
    spread paid), base units, must fit what the budget still allows (``state.nav_loss_budget_remaining``), else
    the vault refuses the rebalance (``NavLossBudgetExceeded``)."""

    def refuse(plan: RebalancePlan, amounts_out: tuple[int, ...]) -> str | None:
        remaining = state.nav_loss_budget_remaining
        if remaining is None or not (plan.legs or plan.option_legs):
            return None
        loss = 0
        if plan.legs:
            cost = quoter.cost(plan, amounts_out)
            loss += cost.fee + cost.impact
        # An option leg moves the NAV by its premium against the mark: the ask above fair, the bid below it.
        loss += sum(max(leg.quoted_premium - leg.fair_value, 0) if leg.is_buy else max(leg.fair_value - leg.quoted_premium, 0)
                    for leg in plan.option_legs)
        if loss <= remaining:
            return None
        return (f"the quoted legs lose {loss} base units against the oracle, more than the vault's rolling NAV-loss "
                f"budget still allows ({remaining})")

    return refuse


def post_trade_weights(plan: RebalancePlan, amounts_out: Sequence[int], snapshot: PriceSnapshot, state: VaultState,
                       assets: Sequence[RiskAssetInfo]) -> FloatArray:
    """Risky weights after the quoted legs, fractions of the NAV before (oracle values, base units), shape (n,).

    A sell removes its oracle value (``leg.oracle_amount_out``); a buy adds the oracle value of its quoted
    output."""
    values = np.array([value_of(b, a, info, state.base_decimals)
                       for b, a, info in zip(state.balances, snapshot.answers, assets)], dtype=np.float64)
    index = {info.symbol: i for i, info in enumerate(assets)}
    for leg, out in zip(plan.legs, amounts_out):
        i = index[leg.symbol]
        if leg.side == "sell":
            values[i] -= leg.oracle_amount_out
        else:
            values[i] += value_of(out, snapshot.answers[i], assets[i], state.base_decimals)
    return np.clip(values, 0.0, None) / plan.nav_before


@dataclass(frozen=True)
class RebalanceDecision:
    """What to do this tick, with every number the journal keeps.

    Attributes
    ----------
    action : {"trade", "skip"}
    reason : str or None
        Why (the cost gate's verdict, the trigger that did not fire, the planner's skip, ...).
    reason_code : str or None
        Short label for metrics: ``policy_hold``, ``no_trade_needed``, ``not_worth_trading``, ``derisk``.
    policy : PolicyDecision or None
        The decision the target came from (None when de-risking).
    plan : RebalancePlan or None
        The quoted plan for ``"trade"``; the unquoted plan for a skip after planning.
    amounts_out : tuple of int
        Quoted output per leg of ``plan`` (empty before quoting).
    cost : TradeCost or None
        Fees, impact and gas of the quoted legs, base-asset units.
    trigger : TriggerDecision or None
        Fired triggers and the cost gate's benefit and cost (None when de-risking).
    signals : TriggerSignals or None
    relative_risk_contributions_before : ndarray (n,) or None
        Of the holdings under the policy's covariance (None without holdings or covariance).
    halvings : int
        How many times the step was halved to fit the pools.
    current_weights : ndarray (n,) or None
        Holdings before the trade, fractions of NAV (None when the vault is empty or before valuation).
    drift_bps : float or None
        The planner's drift of the holdings from the target, bps of NAV.
    hedge : HedgeOutcome or None
        Options mode: the Greeks, the overlay's orders and the delta hedge behind the plan.
    """

    action: str
    reason: str | None
    reason_code: str | None
    policy: PolicyDecision | None
    plan: RebalancePlan | None = None
    amounts_out: tuple[int, ...] = ()
    cost: TradeCost | None = None
    trigger: TriggerDecision | None = None
    signals: TriggerSignals | None = None
    relative_risk_contributions_before: FloatArray | None = None
    halvings: int = 0
    current_weights: FloatArray | None = None
    drift_bps: float | None = None
    hedge: "HedgeOutcome | None" = None

    @property
    def trade(self) -> bool:
        return self.action == "trade"


def decide_rebalance(
    policy_decision: PolicyDecision | None,
    *,
    snapshot: PriceSnapshot,
    state: VaultState,
    assets: Sequence[RiskAssetInfo],
    policy: PolicyConfig | TriggerPolicy,
    limits: TradeLimits,
    quoter: Quoter,
    last_rebalance: LastRebalance | None = None,
    derisk_reason: str | None = None,
    options: "OptionsInputs | None" = None,
) -> RebalanceDecision:
    """The tick's spot decision: triggers → plan → quote (halving) → cost gate.

    Parameters
    ----------
    policy_decision : PolicyDecision or None
        The target (:func:`keeper.policy.decide_targets` or :func:`keeper.policy.fixed_target`); None only
        with ``derisk_reason``.
    snapshot, state, assets
        Oracle answers and the vault's holdings (from the chain or the backtest's replay), aligned with
        ``policy_decision.symbols``.
    policy : PolicyConfig or TriggerPolicy
        Triggers and cost gate settings.
    limits : TradeLimits
    quoter : Quoter
    last_rebalance : LastRebalance, optional
        The last rebalance actually made (None: there was none).
    derisk_reason : str, optional
        A circuit breaker asked to de-risk: every risk asset's target is zero; the triggers and the cost gate
        do not apply (the planner still sells first and keeps under the vault's turnover caps). Spot only.
    options : OptionsInputs, optional
        Options mode: the policy's NAV fractions become targets of the delta-adjusted exposure (spot plus
        option delta); the overlay's option orders and the delta hedge come out of this same call
        (:func:`_decide_with_options`).

    Returns
    -------
    RebalanceDecision

    Raises
    ------
    QuoteBelowBoundError
        The pools cannot absorb even the smallest step (:func:`quote_with_halving`).
    ConfigError
        Target weights the planner refuses.
    """
    n = len(assets)
    plan_args = dict(slippage_budget_bps=limits.slippage_budget_bps, min_trade_value=limits.min_trade_value,
                     deadline=limits.deadline)
    if derisk_reason is not None:
        sleeve = np.full(n, 1.0 / n)

        @functools.cache  # one plan per fraction (the planner is pure in the tick's inputs and the fraction)
        def plan_at(fraction: float) -> RebalancePlan:
            return plan_rebalance(snapshot, state, assets, sleeve, cash_buffer_bps=BPS, drift_threshold_bps=0.0,
                                  fraction=fraction, **plan_args)

        plan = plan_at(1.0)
        if plan.skip_reason:
            return RebalanceDecision("skip", plan.skip_reason, "no_trade_needed", None, plan)
        quoted = quote_with_halving(plan_at, quoter, limits.max_step_halvings, nav_loss_check(quoter, state))
        return RebalanceDecision("trade", f"derisk: {derisk_reason}", "derisk", None, quoted.plan, quoted.amounts_out,
                                 quoter.cost(quoted.plan, quoted.amounts_out), halvings=quoted.halvings)
    if policy_decision is None:
        raise ValueError("decide_rebalance needs a policy decision unless it de-risks")
    decision = policy_decision
    if decision.action == "hold":
        signals = policy_triggers(decision, policy)
        trade = evaluate_trade(decision, policy, signals)
        return RebalanceDecision("skip", trade.reason, "policy_hold", decision, trigger=trade, signals=signals)
    if options is not None:
        return _decide_with_options(decision, snapshot=snapshot, state=state, assets=assets, policy=policy,
                                    limits=limits, quoter=quoter, options=options)

    # The policy sets the cash sleeve (buffer, volatility target, ES limit); its triggers, not a drift
    # threshold of the planner, decide whether the drift is worth a trade.
    sleeve = np.asarray(decision.sleeve_weights)
    cash_buffer_bps = decision.cash_buffer_bps

    # The triggers first, on the planner's own holdings weights and drift (to the bit: the same integer
    # values over the same NAV), so that the planner runs only when a trigger fires.
    holdings = value_holdings(snapshot, state, assets)

    @functools.cache  # the trigger check's full-step plan is the one quote_with_halving quotes first
    def plan_at(fraction: float) -> RebalancePlan:
        return plan_rebalance(snapshot, state, assets, sleeve, cash_buffer_bps=cash_buffer_bps,
                              drift_threshold_bps=0.0, fraction=fraction, holdings=holdings, **plan_args)
    current = holdings.weights
    rrc_before = None
    if decision.covariance is not None and current.sum() > 0:
        rrc_before = relative_risk_contributions(current, np.asarray(decision.covariance))
    common: dict = dict(policy=decision, relative_risk_contributions_before=rrc_before)
    if holdings.nav == 0:
        return RebalanceDecision("skip", "vault is empty", "no_trade_needed", **common)
    risky_fraction = 1.0 - cash_buffer_bps / BPS  # the planner's expressions, so the drift is its drift
    drift = weight_drift_bps(current, sleeve * risky_fraction, holdings.base_balance / holdings.nav,
                             1.0 - risky_fraction)
    common.update(current_weights=current, drift_bps=drift)
    signals = policy_triggers(decision, policy, drift_bps=drift, current_weights=current,
                              last_rebalance=last_rebalance)
    if not signals.fired:
        trade = evaluate_trade(decision, policy, signals)
        return RebalanceDecision("skip", trade.reason, "no_trade_needed", trigger=trade, signals=signals, **common)
    plan = plan_at(1.0)
    if plan.skip_reason:
        trade = TriggerDecision(False, (*signals.fired, plan.skip_reason), dict(signals.metrics))
        return RebalanceDecision("skip", plan.skip_reason, "no_trade_needed", plan=plan, trigger=trade,
                                 signals=signals, **common)
    quoted = quote_with_halving(plan_at, quoter, limits.max_step_halvings, nav_loss_check(quoter, state))
    plan = quoted.plan
    cost = quoter.cost(plan, quoted.amounts_out)
    trade = evaluate_trade(decision, policy, signals,
                           post_trade_weights=post_trade_weights(plan, quoted.amounts_out, snapshot, state, assets),
                           nav_base_units=plan.nav_before, cost=cost, current_weights=plan.current_weights)
    return RebalanceDecision("trade" if trade.rebalance else "skip", trade.reason,
                             None if trade.rebalance else "not_worth_trading", plan=plan,
                             amounts_out=quoted.amounts_out, cost=cost, trigger=trade, signals=signals,
                             halvings=quoted.halvings, **common)


# --------------------------------------------------------------------------- #
# Options mode
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class OptionsInputs:
    """What a decision in options mode needs beside the spot inputs (read by the edge, no chain access here).

    Attributes
    ----------
    book : tuple of HeldSeries
        The vault's option positions (expired series already settled by the executor).
    vols : ndarray (n,)
        Annualised implied volatility per asset (fraction), aligned with ``assets``.
    options_value : int
        The vault's mark of its option book (``optionsValue()``), base-asset units.
    now : int
        Unix seconds of the block the decision is taken at.
    overlay : OverlayConfig
    trigger : HedgeTriggerConfig
    last_hedge_at : int or None
        Unix seconds of the last delta hedge (None: never).
    iv_at_last_hedge : ndarray (n,) or None
        Implied vols at the last hedge.
    quoter : OptionQuoter
        The market's bid and ask and the vault's premium bound and budget.
    tolerance_bps : int
        Headroom of a premium limit over the quote for the fair value moving before mining, bps.
    returns : ndarray (n_obs, n) or None
        The policy window's daily simple returns (oldest first): with them the convex risk model
        (:mod:`keeper.book_risk`) ranks the put assets by ES contribution, chooses strikes and tenors, applies the
        policy's ES limit to the whole book and journals the ES before and after; None: delta-adjusted
        covariance ranking, no whole-book ES.
    protective_delta_at_last_hedge : ndarray (n,) or None
        Delta (units) of the long puts per asset when the spot hedge last traded (``"budget"`` hedge mode: no spot
        is bought on an asset whose puts gained delta since).
    risk_model : RiskModelConfig
        Scenarios, confidence and vol shock of the convex risk model.
    """

    book: tuple[HeldSeries, ...]
    vols: FloatArray
    options_value: int
    now: int
    overlay: OverlayConfig
    trigger: HedgeTriggerConfig
    last_hedge_at: int | None
    iv_at_last_hedge: FloatArray | None
    quoter: OptionQuoter
    tolerance_bps: int = 20
    returns: FloatArray | None = None
    protective_delta_at_last_hedge: FloatArray | None = None
    risk_model: RiskModelConfig = dataclasses.field(default_factory=RiskModelConfig)


@dataclass(frozen=True)
class HedgeOutcome:
    """The options-mode part of a decision (journal-ready through ``as_dict`` of its members).

    ``target_scale`` (<= 1) scales every exposure target so that spot plus option delta can reach them without
    leverage; ``cash_scale`` (<= 1) scales the spot targets when they and the premiums do not fit in the NAV
    (:func:`keeper.planner.sleeve_targets`). ``refused_orders``: the overlay's orders left out because the vault's
    premium bound refuses their quote (each with its reason). ``risk_before``/``risk_after``: the convex risk
    model's summary (:meth:`keeper.book_risk.BookRisk.as_dict`) of the book before and of the planned book
    (None without returns); ``es_spot_scale`` (<= 1) the factor on the spot targets that the policy's ES limit on
    the whole book asked for; ``protective_delta_units`` the long puts' delta per asset of the planned book (the
    edges keep it when spot legs go, for the next hedge); ``risk_notes`` what the convex risk model could not do
    (a window too short for a confidence)."""

    greeks_before: PortfolioGreeks
    overlay: OverlayPlan
    decision: hedging.HedgeDecision
    option_legs: tuple[OptionLeg, ...]
    target_scale: float
    cash_scale: float
    spot_legs_dropped: str | None = None
    refused_orders: tuple[str, ...] = ()
    risk_before: dict | None = None
    risk_after: dict | None = None
    es_spot_scale: float = 1.0
    protective_delta_units: FloatArray | None = None
    risk_notes: tuple[str, ...] = ()


def _greeks(units: FloatArray, positions: Sequence[OptionPosition], spots: FloatArray, vols: FloatArray,
            now: int, symbols: Sequence[str]) -> PortfolioGreeks:
    return portfolio_greeks(dict(zip(symbols, units)), positions, dict(zip(symbols, spots)),
                                    dict(zip(symbols, vols)), now, symbols=symbols)


def _reserved_cash(option_legs: Sequence[OptionLeg], spot_nav: int, state: VaultState, slippage_budget_bps: float) -> int:
    """Base units kept in cash for the premiums, paid after the swaps from the base balance; the sells may
    return up to the slippage budget less than their oracle value, so that much of the spot NAV too."""
    reserved = sum(leg.premium_limit for leg in option_legs if leg.is_buy)
    if not reserved:
        return 0
    slippage = int(min(slippage_budget_bps, state.max_slippage_bps))
    return min(reserved + -(-spot_nav * slippage // BPS), spot_nav)


def _funded(option_legs: Sequence[OptionLeg], base_balance: int, refused: list[str]) -> tuple[OptionLeg, ...]:
    """The option legs the vault can pay for from ``base_balance`` (base units) plus the proceeds of its option
    sells, in order; a buy it cannot pay for is left out with its reason (the vault would revert), and the next
    spot hedge reserves the cash for it."""
    cash = base_balance + sum(leg.premium_limit for leg in option_legs if not leg.is_buy)
    funded = []
    for leg in option_legs:
        if leg.is_buy and leg.premium_limit > cash:
            refused.append(f"{leg.symbol} buy of {leg.amount} (1e18 units): premium limit {leg.premium_limit} base "
                           f"units above the {cash} the vault holds in cash without a spot hedge: not bought")
            continue
        cash -= leg.premium_limit if leg.is_buy else 0
        funded.append(leg)
    return tuple(funded)


def _risk_contributions(exposures: FloatArray, covariance: FloatArray) -> FloatArray:
    """``w_i (Σ w)_i`` of the delta-adjusted exposures (only the ranking matters to the overlay)."""
    if covariance.shape != (exposures.size, exposures.size):
        raise ConfigError(f"covariance has shape {covariance.shape}; expected {(exposures.size, exposures.size)}")
    return exposures * (covariance @ exposures)


def _enough_scenarios(n_scenarios: int, confidence: float, what: str, notes: list[str]) -> bool:
    """True when ``n_scenarios`` leave at least one scenario in the tail at ``confidence``; else notes why not."""
    if n_scenarios * (1.0 - confidence) >= 1.0 - 1e-9:
        return True
    notes.append(f"{what} not applied: {n_scenarios} scenarios leave less than one in the {confidence:.1%} tail "
                 f"(needs {int(np.ceil(1.0 / (1.0 - confidence) - 1e-9))}); a longer lookback allows it")
    return False


def _decide_with_options(
    decision: PolicyDecision,
    *,
    snapshot: PriceSnapshot,
    state: VaultState,
    assets: Sequence[RiskAssetInfo],
    policy: PolicyConfig | TriggerPolicy,
    limits: TradeLimits,
    quoter: Quoter,
    options: OptionsInputs,
) -> RebalanceDecision:
    """Options mode: overlay orders → delta hedge toward the policy's exposure targets → quote (halving) → cost gate.

    1. The overlay (:func:`keeper.overlay.plan_overlay`) decides the option orders on the book. With the
       window's returns (``options.returns``) the put assets are those with the largest ES contributions of the
       whole book by full revaluation (:mod:`keeper.book_risk`) and strike and tenor are chosen by cost per unit
       of ES removed; without them, by the delta-adjusted risk contributions under the policy's covariance. The
       orders become vault legs (:func:`keeper.option_orders.option_legs_for_plan`, premium limits within the
       vault's bound and budget).
    2. The targets are the policy's NAV fractions (risk budget, cash sleeve, volatility target, ES limit): of the
       spot holdings in the ``"budget"`` hedge mode (the puts' delta is protection held, never bought back), of
       the net delta in ``"delta_target"`` mode (scaled by ``target_scale`` <= 1 when spot plus the options'
       delta cannot reach them without leverage).
    3. The hedge trigger (:func:`keeper.hedging.hedge_decision`: delta band, time, implied-vol move, the
       net-delta budgets) decides the spot legs on the book the option legs lead to. With returns, the policy's
       ES limit is applied to the whole planned book (spot and options, full revaluation): spot targets are
       scaled by ``es_spot_scale`` until it fits. The legs are quoted with the one halving loop.
    4. The cost gate weighs the spot legs' expected risk benefit (tracking variance of the net delta to the
       hedge's target) against their fees, impact and gas; when they do not pay, they are dropped and the
       option orders go alone (or nothing does).
    """
    if decision.covariance is None:
        raise ConfigError("options mode needs the policy's covariance; the decision has none")
    symbols = tuple(a.symbol for a in assets)
    cov = np.asarray(decision.covariance, dtype=np.float64)
    now = options.now
    scale = 10**state.base_decimals
    nav = state.total_assets
    nav_usd = nav / scale
    spots = np.asarray(snapshot.prices_usd, dtype=np.float64)
    units = np.array([b / 10**a.token_decimals for b, a in zip(state.balances, assets)])
    positions_before = [h.position() for h in options.book]
    greeks_before = _greeks(units, positions_before, spots, options.vols, now, symbols)
    model = options.risk_model
    scenarios = None
    risk_before: BookRisk | None = None
    risk_notes: list[str] = []
    if options.returns is not None and _enough_scenarios(len(options.returns) - model.horizon_days + 1,
                                                         model.confidence, "the overlay's ES", risk_notes):
        scenarios = scenario_returns(options.returns, model)
        risk_before = book_risk(model, symbols=symbols, spots=spots, vols=options.vols, spot_units=units,
                                positions=positions_before, scenarios=scenarios, nav=nav_usd, now=now)
        ranking = risk_before.asset_es_contributions  # the assets that drive the whole book's ES
    else:
        ranking = _risk_contributions(delta_adjusted_exposures(greeks_before, nav_usd), cov)
    overlay_plan = plan_overlay(
        options.overlay, symbols=symbols, spots=spots, vols=options.vols, spot_units=units,
        risk_contributions=ranking, nav=nav_usd, positions=positions_before, now=now,
        scenarios=scenarios, risk_model=model,
    )
    # An order the vault's premium bound refuses (a put far out of the money bids nothing; a short-dated one asks
    # too much) is left out, not allowed to stop the hedge: the reasons travel with the decision.
    refused: list[str] = []
    option_legs = option_legs_for_plan(overlay_plan, options.book, options.quoter, assets, now,
                                       tolerance_bps=options.tolerance_bps, refused=refused)
    # The hedge targets the book the legs lead to (amounts floored, buys perhaps scaled to the vault's budget).
    positions_after = book_after_legs(options.book, option_legs)
    greeks = _greeks(units, positions_after, spots, options.vols, now, symbols)
    protective_now = protective_delta_units(positions_after, symbols, spots, options.vols, now)
    holdings = value_holdings(snapshot, state, assets)
    reserved = _reserved_cash(option_legs, holdings.nav, state, limits.slippage_budget_bps)
    target = np.asarray(decision.target_weights, dtype=np.float64)
    if options.trigger.mode == "delta_target":
        # A long-only vault without leverage holds spot worth Σ_i (t_i N − Δopt_i S_i) at most the spot NAV less
        # the cash the premiums need: when long puts (Δopt < 0) ask for more, every target is scaled by k < 1.
        available_usd = (holdings.nav - reserved) / scale
        wanted_usd = float(target.sum()) * nav_usd
        reachable_usd = available_usd + float(np.dot(greeks.option_delta_units, spots))
        target_scale = 1.0 if wanted_usd <= reachable_usd else max(reachable_usd, 0.0) / wanted_usd
    else:
        target_scale = 1.0  # spot targets the policy's weights; the puts' delta is protection held
    target_exposure = target * target_scale
    hedge_args = dict(greeks=greeks, target_exposure_weights=target_exposure, nav=nav_usd, now=now,
                      last_hedge_at=options.last_hedge_at, iv_at_last_hedge=options.iv_at_last_hedge,
                      protective_delta_units=protective_now,
                      protective_delta_at_last_hedge=options.protective_delta_at_last_hedge)
    hedge = hedging.hedge_decision(options.trigger, **hedge_args)
    # One policy for all modes: the policy's ES limit applies to the whole book (spot and options, full
    # revaluation); when the planned book breaches it, every spot target is scaled down until it fits.
    es_spot_scale = 1.0
    risk_after: BookRisk | None = None
    if scenarios is not None:
        def planned_risk(spot_units: FloatArray, config: RiskModelConfig) -> BookRisk:
            return book_risk(config, symbols=symbols, spots=spots, vols=options.vols, spot_units=spot_units,
                             positions=positions_after, scenarios=scenarios if config is model else
                             scenario_returns(options.returns, config), nav=nav_usd, now=now)

        if decision.es_limit is not None and _enough_scenarios(
                len(options.returns) - decision.es_horizon_days + 1, decision.es_confidence,
                "the policy's ES limit on the whole book", risk_notes):
            limit_model = dataclasses.replace(model, confidence=decision.es_confidence,
                                              horizon_days=decision.es_horizon_days)
            limit_risk = planned_risk(hedge.orders.spot_target_units, limit_model)
            es_spot_scale = max_spot_scale_for_es(limit_risk, decision.es_limit * nav_usd)
            if es_spot_scale < 1.0:
                hedge = hedging.hedge_decision(options.trigger, spot_scale=es_spot_scale, **hedge_args)
        risk_after = planned_risk(hedge.orders.spot_target_units, model)
    plan_args = dict(slippage_budget_bps=limits.slippage_budget_bps, min_trade_value=limits.min_trade_value,
                     deadline=limits.deadline)
    if not hedge.hedge:
        # No spot leg frees cash this time: the premiums are paid from the base balance (after the option sells).
        option_legs = _funded(option_legs, holdings.base_balance, refused)
    sleeve = None
    cash_scale = 1.0
    if hedge.hedge:
        sleeve = sleeve_targets(hedge.orders.spot_target_weights, nav, holdings.nav, reserved_cash=reserved)
        cash_scale = sleeve.scale

    def spot_only(reason: str) -> RebalancePlan:
        w = holdings.weights
        return RebalancePlan((), state.rebalance_epoch, limits.deadline, holdings.nav, holdings.nav, w, w, 0.0, 0.0,
                             int(min(limits.slippage_budget_bps, state.max_slippage_bps)), skip_reason=reason)

    def plan_at(fraction: float) -> RebalancePlan:
        if sleeve is None:
            spot = spot_only("no hedge trigger fired")
        else:
            spot = plan_rebalance(snapshot, state, assets, sleeve.weights, cash_buffer_bps=sleeve.cash_buffer_bps,
                                  drift_threshold_bps=0.0, fraction=fraction, **plan_args)
        return with_option_legs(spot, option_legs, nav, options.options_value)

    outcome = HedgeOutcome(greeks_before, overlay_plan, hedge, tuple(option_legs), target_scale, cash_scale,
                           refused_orders=tuple(refused),
                           risk_before=risk_before.as_dict() if risk_before is not None else None,
                           risk_after=risk_after.as_dict() if risk_after is not None else None,
                           es_spot_scale=es_spot_scale, protective_delta_units=protective_now,
                           risk_notes=tuple(risk_notes))
    common: dict = dict(policy=decision, current_weights=holdings.weights)
    plan = plan_at(1.0)
    if not (plan.legs or plan.option_legs):
        return RebalanceDecision("skip", plan.skip_reason or "no hedge trigger and no option order",
                                 "no_trade_needed", plan=plan, hedge=outcome, **common)
    quoted = quote_with_halving(plan_at, quoter, limits.max_step_halvings, nav_loss_check(quoter, state))
    plan = quoted.plan
    if not plan.legs:
        return RebalanceDecision("trade", "option orders", None, plan=plan, hedge=outcome, halvings=quoted.halvings,
                                 **common)
    # The cost gate on the spot legs: the delta-adjusted exposure moves toward its target by the legs' value.
    fired = tuple(f"hedge {r}" for r in hedge.reasons)
    if options.last_hedge_at is None:
        fired = ("first allocation", *fired)  # the first hedge sets the book up: not gated on cost
    signals = TriggerSignals(fired, {"target_scale": target_scale})
    cost = quoter.cost(plan, quoted.amounts_out)
    exposure = np.asarray(greeks.dollar_delta, dtype=np.float64) / nav_usd
    moved = (post_trade_weights(plan, quoted.amounts_out, snapshot, state, assets) - np.asarray(plan.current_weights))
    post = exposure + moved * plan.nav_before / nav
    triggers = policy.trigger_policy() if isinstance(policy, PolicyConfig) else policy
    aim = target_exposure if options.trigger.mode == "delta_target" else hedge.orders.target_exposure_weights
    benefit = expected_risk_benefit(exposure, post, aim, cov, float(nav), triggers.risk_aversion,
                                    triggers.horizon_seconds)
    trade = apply_cost_gate(triggers, signals, benefit=benefit, cost=cost.total, cost_breakdown=cost.as_dict())
    if trade.rebalance:
        return RebalanceDecision("trade", trade.reason, None, plan=plan, amounts_out=quoted.amounts_out, cost=cost,
                                 trigger=trade, signals=signals, halvings=quoted.halvings, hedge=outcome, **common)
    # The hedge does not pay for itself: the option orders (if any) go alone, as far as the cash pays for them.
    option_legs = _funded(option_legs, holdings.base_balance, refused)
    outcome = dataclasses.replace(outcome, spot_legs_dropped=trade.reason, option_legs=option_legs,
                                  refused_orders=tuple(refused))
    if not option_legs:
        return RebalanceDecision("skip", trade.reason, "not_worth_trading", plan=plan, cost=cost, trigger=trade,
                                 signals=signals, hedge=outcome, **common)
    alone = with_option_legs(spot_only(trade.reason), option_legs, nav, options.options_value)
    return RebalanceDecision("trade", f"option orders; spot hedge dropped: {trade.reason}", None, plan=alone,
                             trigger=trade, signals=signals, hedge=outcome, **common)
