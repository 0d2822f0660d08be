"""The keeper's decision policy: returns and holdings in, target weights out (chain-free, pure).

One stage shared by the live tick (:mod:`keeper.runner`) and the offline backtester
(:mod:`keeper.backtest`), so that what a backtest measures is what the keeper does:

1. **Conditioning gate** (:func:`keeper.conditioning_gate.gated_covariance`): the configured estimator,
   shrunk harder when its condition number exceeds ``max_condition_number``, then a diagonal
   (inverse-volatility) estimate, then *hold* -- no usable estimate, keep the current positions.
2. **Allocation** (:func:`keeper.allocation.allocate`): risk budgeting (or a baseline allocator)
   within per-asset bounds, scaled to a volatility target under a gross-exposure cap and the cash
   buffer; fallback chain risk budgeting -> inverse volatility -> previous target (each failure
   recorded).  When the gate only trusts the diagonal, risk budgeting is replaced by
   inverse-volatility weights (the ERC portfolio of equal correlations).
3. **Expected Shortfall limit** (:func:`keeper.es_limit.enforce_es_limit`): a target whose ES exceeds
   the vault's limit is scaled toward the base asset until it fits; when the ES cannot be measured
   the policy holds rather than trade blind.

Every step's outcome and reason lands in :class:`PolicyDecision`, whose :meth:`~PolicyDecision.as_dict`
is the journal's record of the decision.  Whether to *trade* toward the target is then the
triggers' and the cost gate's call (:func:`policy_triggers`, :func:`evaluate_trade`, wrapping
:mod:`keeper.triggers`), given the actual quotes of the plan.

Conventions
-----------
* ``returns``: shape (n_obs, n_assets), simple returns per bar (daily unless ``bar_seconds`` says otherwise), row 0 oldest; ``NaN`` = missing,
  handled by the estimator's ``missing`` policy (never forward-filled).
* Weights are fractions of NAV held in each *risky* asset (long only, sum <= 1); the rest,
  ``cash_weight``, is the base asset (the vault's stablecoin: zero return, zero risk).
  ``sleeve_weights`` are the risky sleeve normalised to sum to 1 (what the planner takes, with the
  cash buffer ``(1 - Σ target_weights) × 10^4`` bps).
* Covariances and volatilities are annualised (``periods_per_year`` = 365 days / ``bar_seconds``: 365 for
  daily bars, 8,760 for hourly); ES is a positive fraction of NAV over ``es_horizon_days`` (counted in bars
  of the returns).

The live tick's call (inputs it already reads from the chain and its journal)::

    policy = config.policy  # KeeperConfig's policy section: estimator, budget, cash, triggers
    decision = decide_targets(simple_returns(history.prices_usd), reader.symbols,
                              current_weights=<holdings values / NAV, value_holdings(...).weights>,
                              previous_target=<target_weights of the last decision (journal)>,
                              config=policy, nav_base_units=state.total_assets)
    if decision.action == "hold": journal evaluate_trade(decision, policy, TriggerSignals(())) and stop
    plan = plan_rebalance(snapshot, state, assets, decision.sleeve_weights,
                          cash_buffer_bps=decision.cash_buffer_bps, drift_threshold_bps=0.0, ...)
    signals = policy_triggers(decision, policy, drift_bps=plan.drift_bps,
                              current_weights=plan.current_weights,
                              last_rebalance=LastRebalance(<symbols>, <covariance>, <seconds ago>) or None)
    ... quote the legs (halving as today) only when signals.fired ...
    trade = evaluate_trade(decision, policy, signals, post_trade_weights=<weights after the quoted
                           legs>, nav_base_units=plan.nav_before, cost=cost_from_quotes(...))
    journal: policy=decision.as_dict(), trigger=trade.as_dict(); send only if trade.rebalance
"""

from __future__ import annotations
import math
from typing import Any, Sequence
import numpy as np
import numpy.typing as npt
from keeper.allocation import METHOD_PREVIOUS, allocate
from keeper.conditioning_gate import GateDecision, gated_covariance
from keeper.errors import InsufficientHistoryError, InvalidPriceError, PolicyInputError
from keeper.es_limit import enforce_es_limit
from keeper.risk_report import portfolio_var_es
from keeper.triggers import (
    TriggerDecision,
    TriggerPolicy,
    TriggerSignals,
    apply_cost_gate,
    check_triggers,
    expected_risk_benefit,
    weight_drift_bps,
)
from keeper.units import BPS, SECONDS_PER_DAY
from keeper.policy_config import PolicyConfig
from keeper.policy_decision import (
    LastRebalance,
    PolicyDecision,
    _by_symbol,
    _check_fractions,
    _complete_rows,
    _freeze,
    _rrc,
    _sleeve,
    _volatility,
)

__all__ = [
    "decide_targets",
    "fixed_target",
    "policy_triggers",
    "evaluate_trade",
]

FloatArray = npt.NDArray[np.float64]

# --------------------------------------------------------------------------- #
# The stage
# --------------------------------------------------------------------------- #
def decide_targets(
    returns: npt.ArrayLike,
    symbols: Sequence[str],
    current_weights: npt.ArrayLike,
    previous_target: npt.ArrayLike | None = None,
    config: PolicyConfig | None = None,
    *,
    gate: GateDecision | None = None,
    nav_base_units: int | None = None,
) -> PolicyDecision:
    """Target weights of one decision: conditioning gate -> allocation -> ES limit.

    1. :func:`keeper.conditioning_gate.gated_covariance` (``config.estimator``, ``config.max_condition_number``).
       ``"hold"`` ends the decision: ``action = "hold"``, the target is ``current_weights``.
    2. :func:`keeper.allocation.allocate` with ``config.allocator`` (replaced by
       ``"inverse_volatility"`` when the gate only trusts the diagonal), the budget and bounds by
       symbol, ``volatility_target``, ``max_gross_exposure`` and the cash floor
       ``cash_buffer_bps / 10^4``.  Its last resort is ``previous_target`` (the current weights when
       none is given): solver failures never stop a tick.
    3. With ``config.es_limit``: :func:`keeper.es_limit.enforce_es_limit` of the target, measured on the
       complete rows of ``returns`` (historical, Cornish-Fisher) or on the accepted covariance
       (Gaussian; after an inverse-volatility gate the diagonal, i.e. correlations ignored).  Above
       the limit the risky weights are scaled by ``limit / ES`` toward the base asset.  An ES that
       cannot be measured (too few complete rows) makes the decision ``"hold"``.

    Parameters
    ----------
    returns : array_like, shape (n_obs, n)
        Daily simple returns, row 0 oldest; NaN = missing (the estimator's ``missing`` policy).
    symbols : sequence of str, length n
        Unique asset symbols (budgets and bounds are looked up by them).
    current_weights : array_like, shape (n,)
        Risky holdings, fractions of NAV (>= 0, sum <= 1).
    previous_target : array_like, shape (n,), optional
        The last decision's ``target_weights`` over the same symbols (allocator's last resort).
    config : PolicyConfig, optional
        Default :class:`PolicyConfig` (the live keeper's historical behaviour).
    gate : GateDecision, optional
        ``gated_covariance(returns, config.estimator, config.max_condition_number)`` when the
        caller already computed it (the backtest shares one per day among its strategies).
    nav_base_units : int, optional
        NAV in base-asset units (``totalAssets()``), to state the ES figures in base units too.

    Returns
    -------
    PolicyDecision

    Raises
    ------
    PolicyInputError
        Malformed ``returns``, ``symbols``, weights or ``nav_base_units``, a ``gate`` that does not
        match, or a budget / bounds map that misses a symbol.
    ConfigError
        Bounds that admit no fully invested sleeve (from :func:`keeper.allocation.allocate`).
    """
    config = config if config is not None else PolicyConfig()
    if not isinstance(config, PolicyConfig):
        raise PolicyInputError(f"config must be a PolicyConfig, got {type(config).__name__}.")
    r = np.asarray(returns, dtype=np.float64)
    names = tuple(symbols)
    if r.ndim != 2 or r.shape[1] < 1:
        raise PolicyInputError(f"returns have shape {r.shape}; expected (n_obs, n_assets) with n_assets >= 1.")
    n = r.shape[1]
    if len(names) != n or len(set(names)) != n or not all(isinstance(s, str) and s for s in names):
        raise PolicyInputError(f"symbols {list(names)} must be {n} unique non-empty names, one per returns column.")
    current = _check_fractions("current_weights", current_weights, n)
    previous = None if previous_target is None else _check_fractions("previous_target", previous_target, n)
    if nav_base_units is not None and (isinstance(nav_base_units, bool) or not isinstance(
            nav_base_units, (int, np.integer)) or nav_base_units < 0):
        raise PolicyInputError(
            f"nav_base_units is {nav_base_units!r}; pass the vault's totalAssets() as a non-negative int."
        )
    if gate is None:
        gate = gated_covariance(r, config.estimator, config.max_condition_number)
    elif not isinstance(gate, GateDecision) or gate.max_condition_number != config.max_condition_number or (
        gate.estimate is not None and gate.estimate.covariance.shape != (n, n)
    ):
        raise PolicyInputError(
            "gate must be the GateDecision of these returns at config.max_condition_number "
            f"{config.max_condition_number!r}; got {gate!r:.200}"
        )
    common: dict[str, Any] = dict(
        symbols=names, current_weights=_freeze(current), gate_action=gate.action, gate_reason=gate.reason,
        max_condition_number=float(gate.max_condition_number), condition_numbers=gate.condition_numbers,
        estimator=config.estimator.method, allocator=config.allocator, volatility_target=config.volatility_target,
        es_limit=config.es_limit, es_method=config.es_method, es_confidence=config.es_confidence,
        es_horizon_days=config.es_horizon_days, nav_base_units=nav_base_units,
    )
    reasons = [f"gate {gate.action}: {gate.reason}"]
    if gate.action == "hold" or gate.estimate is None:
        return _hold(common, reasons, current, None, None, None)

    estimate = gate.estimate
    cov = estimate.covariance
    allocator = config.allocator
    if gate.action == "inverse_volatility" and allocator == "risk_budgeting":
        allocator = "inverse_volatility"
        reasons.append("only the diagonal of the covariance is usable: inverse-volatility weights "
                       "instead of risk budgeting")
    budget = _by_symbol("risk_budget", config.risk_budget, names, None)
    if budget is not None:
        budget = budget / budget.sum()
    lower = _by_symbol("min_weight", config.min_weight, names, 0.0)
    upper = _by_symbol("max_weight", config.max_weight, names, 1.0)
    bounds = None if lower is None and upper is None else (
        lower if lower is not None else 0.0, upper if upper is not None else 1.0)
    allocation = allocate(
        cov, budget, bounds, config.volatility_target, config.max_gross_exposure,
        config.cash_buffer_bps / BPS, previous_weights=previous if previous is not None else current,
        allocator=allocator,
    )
    for why in allocation.fallback_reasons:
        reasons.append(f"allocator fallback after {why}")
    if allocation.method == METHOD_PREVIOUS:
        reasons.append("every allocation method failed: keeping the "
                       + ("previous target" if previous is not None else "current weights"))
    else:
        capped = " (capped by the exposure limit)" if allocation.capped else ""
        target_note = (f", volatility target {config.volatility_target:.4g}{capped}"
                       if config.volatility_target is not None else "")
        reasons.append(f"{allocation.method} sleeve scaled by {allocation.scale:.6g}{target_note}: "
                       f"ex-ante volatility {allocation.volatility:.4g}")
    weights = np.array(allocation.weights, dtype=np.float64)
    shrinkage = float(estimate.shrinkage)
    n_obs = int(estimate.n_observations)

    es_scale, es_before, es_after, es_reason = 1.0, None, None, None
    if config.es_limit is not None:
        # The ES horizon is stated in days; the measures count it in bars of the returns (24 for a day of hourly
        # returns: overlapping 24-bar compounded scenarios, or sqrt(24) x the per-bar Gaussian scale).
        es_horizon_bars = max(1, round(config.es_horizon_days * SECONDS_PER_DAY / config.bar_seconds))
        es_returns = _complete_rows(r) if config.es_method != "gaussian" else None
        es_covariance = cov if es_returns is None else None
        try:
            limit = enforce_es_limit(
                weights, config.es_limit, method=config.es_method, confidence=config.es_confidence,
                horizon_days=es_horizon_bars, returns=es_returns, covariance=es_covariance,
                periods_per_year=int(config.estimator.periods_per_year), nav_base_units=nav_base_units,
            )
        except (InsufficientHistoryError, InvalidPriceError) as exc:
            reasons.append(f"ES limit {config.es_limit:.4%} cannot be checked ({type(exc).__name__}: {exc}): "
                           "hold current positions")
            return _hold(common, reasons, current, cov, shrinkage, n_obs)
        es_scale, es_before, es_after, es_reason = limit.scale, limit.es_before, limit.es_after, limit.reason
        common.update(es_before_base_units=limit.es_before_base_units, es_after_base_units=limit.es_after_base_units,
                      es_limit_base_units=limit.es_limit_base_units)
        # The holdings themselves, by the same measure: above the limit they call for a trade even
        # inside the drift band (the ES-limit trigger of policy_triggers).
        common["es_current"] = 0.0 if not float(current.sum()) > 0.0 else portfolio_var_es(
            current, method=config.es_method, confidence=config.es_confidence,
            horizon_days=es_horizon_bars, returns=es_returns, covariance=es_covariance,
            periods_per_year=int(config.estimator.periods_per_year),
        ).es
        reasons.append(es_reason)
        weights = np.array(limit.approved_weights, dtype=np.float64)

    scale = float(allocation.scale) * es_scale
    return PolicyDecision(
        action="target",
        reasons=tuple(reasons),
        target_weights=_freeze(weights),
        cash_weight=max(0.0, 1.0 - scale),
        # The allocator's own sleeve (bit for bit what the planner would get from the optimiser);
        # scaling by the ES limit does not change it.
        sleeve_weights=_freeze(_sleeve(weights) if allocation.method == METHOD_PREVIOUS
                               else allocation.sleeve_weights),
        shrinkage=shrinkage,
        n_observations=n_obs,
        covariance=_freeze(cov),
        allocation_method=allocation.method,
        fallback_reasons=allocation.fallback_reasons,
        risk_budget=_freeze(allocation.risk_budget),
        relative_risk_contributions=_freeze(_rrc(weights, cov)),
        capped=bool(allocation.capped),
        allocation_scale=float(allocation.scale),
        es_scale=float(es_scale),
        scale=scale,
        ex_ante_volatility=_volatility(weights, cov),
        es_before=es_before,
        es_after=es_after,
        es_reason=es_reason,
        **common,
    )


def _hold(common: dict[str, Any], reasons: list[str], current: FloatArray, cov: FloatArray | None,
          shrinkage: float | None, n_obs: int | None) -> PolicyDecision:
    total = float(current.sum())
    return PolicyDecision(
        action="hold",
        reasons=tuple(reasons),
        target_weights=_freeze(current),
        cash_weight=max(0.0, 1.0 - total),
        sleeve_weights=_freeze(_sleeve(current)),
        shrinkage=shrinkage,
        n_observations=n_obs,
        covariance=None if cov is None else _freeze(cov),
        allocation_method=None,
        fallback_reasons=(),
        risk_budget=None,
        relative_risk_contributions=_freeze(_rrc(current, cov)),
        capped=False,
        allocation_scale=total,
        es_scale=1.0,
        scale=total,
        ex_ante_volatility=_volatility(current, cov),
        **common,
    )


def fixed_target(
    symbols: Sequence[str],
    nav_fractions: npt.ArrayLike,
    current_weights: npt.ArrayLike,
    covariance: npt.ArrayLike,
    config: PolicyConfig | None = None,
    *,
    reason: str = "fixed NAV fractions",
    nav_base_units: int | None = None,
) -> PolicyDecision:
    """A ``"target"`` decision for fixed NAV fractions (a benchmark mix such as BTC only or 60/40), so that
    it goes through the same triggers, planner, quotes and cost gate as the policy's own targets
    (:func:`keeper.decision.decide_rebalance`).

    Parameters
    ----------
    nav_fractions : array_like (n,)
        Target fractions of NAV per asset, >= 0, sum <= 1 (the rest in the base asset).
    current_weights : array_like (n,)
        Holdings now, fractions of NAV.
    covariance : array_like (n, n)
        Annualised covariance the triggers and the cost gate measure risk with.
    config : PolicyConfig, optional
        Only its ES measure fields are recorded (no limit is applied to a fixed mix).

    Raises
    ------
    PolicyInputError
        Fractions or weights that are not finite, negative, or sum above 1; a covariance of the wrong shape.
    """
    config = config if config is not None else PolicyConfig()
    names = tuple(symbols)
    n = len(names)
    target = _check_fractions("nav_fractions", nav_fractions, n)
    current = _check_fractions("current_weights", current_weights, n)
    cov = np.asarray(covariance, dtype=np.float64)
    if cov.shape != (n, n):
        raise PolicyInputError(f"covariance has shape {cov.shape}; expected ({n}, {n}) for {list(names)}.")
    total = float(target.sum())
    return PolicyDecision(
        symbols=names, action="target", reasons=(reason,), target_weights=_freeze(target),
        cash_weight=max(0.0, 1.0 - total), sleeve_weights=_freeze(_sleeve(target)), current_weights=_freeze(current),
        gate_action="accept", gate_reason="given", max_condition_number=math.inf, condition_numbers=(),
        estimator="given", shrinkage=None, n_observations=None, covariance=_freeze(cov), allocator="fixed",
        allocation_method="fixed", fallback_reasons=(), risk_budget=None,
        relative_risk_contributions=_freeze(_rrc(target, cov)), volatility_target=None, capped=False,
        allocation_scale=total, es_scale=1.0, scale=total, ex_ante_volatility=_volatility(target, cov),
        es_limit=None, es_method=config.es_method, es_confidence=config.es_confidence,
        es_horizon_days=config.es_horizon_days, nav_base_units=nav_base_units,
    )


# --------------------------------------------------------------------------- #
# Triggers and cost gate for a decision
# --------------------------------------------------------------------------- #
def _trigger_policy(policy: PolicyConfig | TriggerPolicy) -> TriggerPolicy:
    if isinstance(policy, PolicyConfig):
        return policy.trigger_policy()
    if isinstance(policy, TriggerPolicy):
        return policy
    raise PolicyInputError(f"policy must be a PolicyConfig or a TriggerPolicy, got {type(policy).__name__}.")


def policy_triggers(
    decision: PolicyDecision,
    policy: PolicyConfig | TriggerPolicy,
    *,
    current_weights: npt.ArrayLike | None = None,
    current_cash: float | None = None,
    drift_bps: float | None = None,
    last_rebalance: LastRebalance | None = None,
) -> TriggerSignals:
    """Stage 1 of the trade decision: which triggers fire for ``decision`` (:func:`keeper.triggers.check_triggers`).

    Parameters
    ----------
    decision : PolicyDecision
        A ``"hold"`` decision fires nothing (``metrics["hold"] = 1``).
    policy : PolicyConfig or TriggerPolicy
    current_weights : array_like (n,), optional
        Risky holdings now, fractions of NAV (default ``decision.current_weights``).
    current_cash : float, optional
        Base-asset fraction of NAV now (default ``1 - Σ current_weights``).
    drift_bps : float, optional
        The weight drift already measured, bps (the live tick passes ``RebalancePlan.drift_bps``, the
        planner's own number); default :func:`keeper.triggers.weight_drift_bps` of the current
        weights and cash against ``decision.target_weights`` and ``decision.cash_weight``.
    last_rebalance : LastRebalance, optional
        None when there was none.

    Returns
    -------
    keeper.triggers.TriggerSignals
    """
    triggers = _trigger_policy(policy)
    current = decision.current_weights if current_weights is None else _check_fractions(
        "current_weights", current_weights, len(decision.symbols))
    if decision.action == "hold" or decision.covariance is None:
        return TriggerSignals((), {"hold": 1.0})
    if drift_bps is None:
        drift_bps = weight_drift_bps(current, decision.target_weights, current_cash, decision.cash_weight)
    reference, seconds, changed = None, None, False
    if last_rebalance is not None:
        changed = tuple(last_rebalance.symbols) != decision.symbols
        if not changed and last_rebalance.covariance is not None:
            reference = np.asarray(last_rebalance.covariance, dtype=np.float64)
        seconds = float(last_rebalance.seconds_ago)
    return check_triggers(
        triggers, drift_bps=float(drift_bps), current_weights=current, target_weights=decision.target_weights,
        covariance=decision.covariance, reference_covariance=reference, seconds_since_rebalance=seconds,
        universe_changed=changed and float(np.sum(current)) > 0.0,
        es_current=decision.es_current, es_limit=decision.es_limit,
    )


def evaluate_trade(
    decision: PolicyDecision,
    policy: PolicyConfig | TriggerPolicy,
    signals: TriggerSignals,
    *,
    post_trade_weights: npt.ArrayLike | None = None,
    nav_base_units: float | None = None,
    cost: Any = None,
    current_weights: npt.ArrayLike | None = None,
) -> TriggerDecision:
    """Stage 2: trade toward ``decision`` or not, with the reason (:func:`keeper.triggers.apply_cost_gate`).

    The benefit is :func:`keeper.triggers.expected_risk_benefit` of moving from ``current_weights``
    to ``post_trade_weights`` against ``decision.target_weights`` under ``decision.covariance``.

    Parameters
    ----------
    signals : TriggerSignals
        From :func:`policy_triggers`.
    post_trade_weights : array_like (n,)
        Risky weights after the quoted legs (fractions of the NAV before); needed when a trigger fired.
    nav_base_units : float
        NAV before the trade, base-asset units; needed when a trigger fired.
    cost : keeper.costs.TradeCost or float
        Fees + price impact + gas of the quoted legs, base-asset units (a ``TradeCost`` also stores
        its breakdown); needed when a trigger fired.
    current_weights : array_like (n,), optional
        Default ``decision.current_weights``.

    Returns
    -------
    keeper.triggers.TriggerDecision
        ``rebalance`` False with ``"policy holds: ..."`` for a hold decision, ``"no trigger fired"``
        when nothing fired, else the cost gate's verdict.

    Raises
    ------
    PolicyInputError
        A trigger fired but the post-trade weights, NAV or cost are missing.
    """
    triggers = _trigger_policy(policy)
    if decision.action == "hold":
        return TriggerDecision(False, (f"policy holds: {decision.reason}",), dict(signals.metrics))
    if not signals.fired:
        return apply_cost_gate(triggers, signals, benefit=0.0, cost=0.0)
    if post_trade_weights is None or nav_base_units is None or cost is None:
        raise PolicyInputError(
            f"triggers fired ({'; '.join(signals.fired)}): pass post_trade_weights, nav_base_units and cost "
            "of the quoted plan to the cost gate."
        )
    n = len(decision.symbols)
    current = decision.current_weights if current_weights is None else _check_fractions(
        "current_weights", current_weights, n)
    post = np.asarray(post_trade_weights, dtype=np.float64)
    if post.shape != (n,) or not np.all(np.isfinite(post)):
        raise PolicyInputError(f"post_trade_weights has shape {post.shape} or a non-finite entry; expected ({n},).")
    total = float(cost.total) if hasattr(cost, "total") else float(cost)
    breakdown = cost.as_dict() if hasattr(cost, "as_dict") else None
    benefit = expected_risk_benefit(current, post, decision.target_weights, decision.covariance,
                                    float(nav_base_units), triggers.risk_aversion, triggers.horizon_seconds)
    return apply_cost_gate(triggers, signals, benefit=benefit, cost=total, cost_breakdown=breakdown)
