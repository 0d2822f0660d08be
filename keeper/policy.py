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
* ``returns``: shape (n_obs, n_assets), daily simple returns, row 0 oldest; ``NaN`` = missing,
  handled by the estimator's ``missing`` policy (never forward-filled).
* Weights are fractions of NAV held in each *risky* asset (long only, sum <= 1); the rest,
  ``cash_weight``, is the base asset (the vault's stablecoin: zero return, zero risk).
  ``sleeve_weights`` are the risky sleeve normalised to sum to 1 (what the planner takes, with the
  cash buffer ``(1 - Σ target_weights) × 10^4`` bps).
* Covariances and volatilities are annualised (``periods_per_year``, 365 by default); ES is a
  positive fraction of NAV over ``es_horizon_days``.

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
                              last_rebalance=LastRebalance(<symbols>, <covariance>, <days ago>) or None)
    ... quote the legs (halving as today) only when signals.fired ...
    trade = evaluate_trade(decision, policy, signals, post_trade_weights=<weights after the quoted
                           legs>, nav_base_units=plan.nav_before, cost=cost_from_quotes(...))
    journal: policy=decision.as_dict(), trigger=trade.as_dict(); send only if trade.rebalance
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, Mapping, Sequence

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, model_validator

from keeper.allocation import METHOD_PREVIOUS, allocate
from keeper.conditioning_gate import GateDecision, gated_covariance
from keeper.covariance import EstimatorConfig
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
from keeper.units import BPS

__all__ = [
    "PolicyConfig",
    "PolicyDecision",
    "LastRebalance",
    "decide_targets",
    "policy_triggers",
    "evaluate_trade",
    "DEFAULT_ESTIMATOR",
]

FloatArray = npt.NDArray[np.float64]
_WEIGHT_SUM_ATOL = 1e-9

DEFAULT_ESTIMATOR = EstimatorConfig(method="ewma", half_life_days=30.0, min_observations=30)
"""The live keeper's estimator: EWMA, 30-day half-life, at least 30 daily returns, 365-day year."""

Allocator = Literal["risk_budgeting", "inverse_volatility", "equal_weight"]

EsMethod = Literal["historical", "gaussian", "cornish_fisher"]


class PolicyConfig(BaseModel):
    """Everything the decision policy needs, validated once (pydantic; TOML/JSON-loadable).

    The defaults reproduce the live keeper's historical behaviour: EWMA covariance with a 30-day
    half-life, equal risk contributions, 500 bps of NAV in cash, no volatility target, no ES limit,
    a 300 bps weight-drift trigger and no cost gate.

    Raises
    ------
    pydantic.ValidationError
        Any field out of range (the message names the field); also a ``ValueError``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    estimator: EstimatorConfig = Field(
        default=DEFAULT_ESTIMATOR,
        description="covariance estimator (method, half_life_days in days, periods_per_year, missing policy, "
        "min_observations); see keeper.covariance.EstimatorConfig",
    )
    lookback_days: int = Field(
        180, ge=3, description="days of price history the estimator gets (the oracle's round history, resampled daily)",
    )
    max_condition_number: float = Field(
        1e10, gt=1.0, allow_inf_nan=False,
        description="conditioning gate: largest 2-norm condition number of an accepted annualised covariance",
    )
    allocator: Allocator = Field("risk_budgeting", description="first method of the allocator's fallback chain")
    risk_budget: dict[str, float] | None = Field(
        None, description="risk budget by symbol (> 0; renormalised over the assets present); equal when omitted",
    )
    min_weight: dict[str, float] | None = Field(
        None, description="lower bound by symbol on the fully invested risky sleeve's weights, fraction in [0, 1]",
    )
    max_weight: dict[str, float] | None = Field(
        None, description="upper bound by symbol on the fully invested risky sleeve's weights, fraction in (0, 1]",
    )
    volatility_target: float | None = Field(
        None, gt=0.0, le=5.0, allow_inf_nan=False,
        description="ex-ante portfolio volatility target, annualised fraction (0.4 = 40 %/year, at most 5 = 500 %: "
        "not a percentage); none by default",
    )
    max_gross_exposure: float = Field(
        1.0, gt=0.0, le=1.0, allow_inf_nan=False, description="cap on the risky weights' sum, fraction of NAV (<= 1)",
    )
    cash_buffer_bps: float = Field(
        500.0, ge=0.0, lt=BPS, allow_inf_nan=False,
        description="least NAV kept in the base asset, bps (0, or at least 1 bps: a value in (0, 1) is a fraction)",
    )
    es_limit: float | None = Field(
        None, ge=0.0, le=1.0, allow_inf_nan=False,
        description="the vault's Expected Shortfall limit, fraction of NAV (0.08 = 8 %, at most 1: not a "
        "percentage); none by default",
    )
    es_method: EsMethod = Field("historical", description="ES measure the limit is stated in")
    es_confidence: float = Field(0.99, ge=0.5, lt=1.0, description="ES confidence level alpha")
    es_horizon_days: int = Field(1, ge=1, description="ES horizon, days")
    weight_drift_bps: float | None = Field(
        300.0, ge=0.0, allow_inf_nan=False, description="trigger: max |w - w*| incl. cash, bps of NAV",
    )
    rrc_band: float | None = Field(
        None, ge=0.0, allow_inf_nan=False, description="trigger: max |RRC_i(w) - RRC_i(w*)|, fraction",
    )
    regime_distance: float | None = Field(
        None, ge=0.0, allow_inf_nan=False, description="trigger: covariance distance to the last rebalance's",
    )
    max_days_between: float | None = Field(
        None, ge=0.0, allow_inf_nan=False, description="trigger: days since the last rebalance",
    )
    cost_aware: bool = Field(False, description="trade only when the expected risk benefit pays the cost")
    risk_aversion: float = Field(5.0, gt=0.0, allow_inf_nan=False, description="cost gate's lambda, per year")
    benefit_horizon_days: float = Field(
        30.0, gt=0.0, allow_inf_nan=False, description="cost gate: days over which the risk benefit counts",
    )
    min_benefit_to_cost: float = Field(1.0, gt=0.0, allow_inf_nan=False, description="cost gate's k")
    es_trigger_tolerance: float = Field(
        0.1, ge=0.0, allow_inf_nan=False,
        description="trigger: holdings whose ES exceeds es_limit by more than this fraction of it are traded back",
    )

    @model_validator(mode="after")
    def _check_maps(self) -> "PolicyConfig":
        if 0.0 < self.cash_buffer_bps < 1.0:
            raise ValueError(f"cash_buffer_bps is {self.cash_buffer_bps!r}: that is a fraction, the field is in bps "
                             f"(e.g. 500 for 5 %); give {self.cash_buffer_bps * BPS:g}")
        need = self.estimator.min_observations
        if need is not None and need > self.lookback_days - 1:
            raise ValueError(f"estimator.min_observations ({need}) needs lookback_days >= {need + 1} "
                             f"(got {self.lookback_days})")
        for name, low, low_open in (("risk_budget", 0.0, True), ("min_weight", 0.0, False),
                                    ("max_weight", 0.0, True)):
            values = getattr(self, name)
            if values is None:
                continue
            for symbol, value in values.items():
                ok = math.isfinite(value) and (value > low if low_open else value >= low)
                if name != "risk_budget":
                    ok = ok and value <= 1.0
                if not ok:
                    bound = "> 0" if name == "risk_budget" else ("in [0, 1]" if name == "min_weight" else "in (0, 1]")
                    raise ValueError(f"{name}[{symbol!r}] is {value!r}; it must be finite and {bound}")
        if self.min_weight and self.max_weight:
            for symbol in set(self.min_weight) & set(self.max_weight):
                if self.min_weight[symbol] > self.max_weight[symbol]:
                    raise ValueError(
                        f"min_weight[{symbol!r}] {self.min_weight[symbol]!r} exceeds max_weight "
                        f"{self.max_weight[symbol]!r}"
                    )
        return self

    @classmethod
    def from_keeper_config(cls, config: Any, **overrides: Any) -> "PolicyConfig":
        """The policy section of a :class:`keeper.config.KeeperConfig` (``config.policy``), with ``overrides``
        (any field of this class) applied and validated.

        Raises
        ------
        pydantic.ValidationError
            A value out of range.
        """
        policy: PolicyConfig = config.policy
        if not overrides:
            return policy
        return cls.model_validate({**policy.model_dump(), **overrides})

    def trigger_policy(self) -> TriggerPolicy:
        """The :class:`keeper.triggers.TriggerPolicy` of these fields."""
        return TriggerPolicy(
            weight_drift_bps=self.weight_drift_bps, rrc_band=self.rrc_band, regime_distance=self.regime_distance,
            max_days_between=self.max_days_between, cost_aware=self.cost_aware, risk_aversion=self.risk_aversion,
            horizon_days=self.benefit_horizon_days, min_benefit_to_cost=self.min_benefit_to_cost,
            es_trigger_tolerance=self.es_trigger_tolerance,
        )


@dataclass(frozen=True, eq=False)  # arrays: identity equality
class PolicyDecision:
    """One run of the policy: the target and how every stage got there (journal-ready).

    Arrays are read-only.

    Attributes
    ----------
    symbols : tuple of str
        Assets, aligned with every array, shape (n,).
    action : {"target", "hold"}
        ``"target"``: ``target_weights`` is the policy's target; ``"hold"``: no usable estimate (or
        no measurable ES under a limit) -- keep the current positions, do not trade.
    reasons : tuple of str
        Each stage's account, in order (gate, allocator substitution, fallbacks, ES limit).
    target_weights : ndarray (n,)
        Final risky weights, fractions of NAV (the current weights for ``"hold"``).
    cash_weight : float
        Base-asset fraction of NAV, ``1 - Σ target_weights`` (>= 0).
    sleeve_weights : ndarray (n,)
        ``target_weights`` normalised to sum to 1 (equal weights when nothing is invested): the
        planner's ``target_weights``.
    current_weights : ndarray (n,)
        Risky holdings the decision started from, fractions of NAV.
    gate_action, gate_reason : str
        :class:`keeper.conditioning_gate.GateDecision` ``action`` (accept, shrink, inverse_volatility, hold)
        and ``reason``.
    max_condition_number : float
        The gate's limit.
    condition_numbers : tuple of float
        Condition number of every matrix the gate formed, in order.
    estimator : str
        Estimator method (``"ewma"``, ``"sample"``, ``"ledoit_wolf"``).
    shrinkage : float or None
        Total shrinkage intensity of the accepted estimate (None for hold).
    n_observations : int or None
        Return rows behind the accepted estimate.
    covariance : ndarray (n, n) or None
        Accepted annualised covariance (diagonal after an inverse-volatility gate; None for hold).
    allocator : str
        Requested allocator.
    allocation_method : str or None
        Method that produced the sleeve: ``"risk_budgeting"``, ``"inverse_volatility"``,
        ``"equal_weight"`` or ``"previous"`` (None for hold).
    fallback_reasons : tuple of str
        One ``"<method>: <Error>: <message>"`` per allocation method that failed.
    risk_budget : ndarray (n,) or None
        Budget targeted (normalised), None for hold.
    relative_risk_contributions : ndarray (n,)
        :math:`RRC_i = w_i(\\Sigma w)_i / w^\\top\\Sigma w` of the target (sum to 1; NaN when undefined).
    volatility_target : float or None
        Requested annualised target.
    capped : bool
        A target was set but the exposure cap stopped the scale below it.
    allocation_scale : float
        Sleeve scale of the allocator (gross exposure before the ES limit).
    es_scale : float
        Factor of the ES limit (1.0 when not binding or no limit).
    scale : float
        ``allocation_scale × es_scale`` = Σ ``target_weights`` (gross exposure).
    ex_ante_volatility : float
        :math:`\\sqrt{w^\\top\\Sigma w}` of the target, annualised (NaN without a covariance).
    es_limit : float or None
        The limit, fraction of NAV.
    es_method, es_confidence, es_horizon_days
        The measure of the limit.
    es_before, es_after : float or None
        ES of the allocator's target and of the final target, fractions of NAV (None without a limit).
    es_current : float or None
        ES of the current holdings (``current_weights``) by the same measure, fraction of NAV (None
        without a limit); above ``es_limit`` it fires the ES-limit trigger (:func:`policy_triggers`).
    es_reason : str or None
        The ES limit's sentence for the journal.
    nav_base_units : int or None
        NAV the decision was taken at, base-asset units (when given).
    es_before_base_units, es_after_base_units, es_limit_base_units : int or None
        The ES figures times NAV, nearest base unit (when a limit and NAV are given).
    """

    symbols: tuple[str, ...]
    action: str
    reasons: tuple[str, ...]
    target_weights: FloatArray
    cash_weight: float
    sleeve_weights: FloatArray
    current_weights: FloatArray
    gate_action: str
    gate_reason: str
    max_condition_number: float
    condition_numbers: tuple[float, ...]
    estimator: str
    shrinkage: float | None
    n_observations: int | None
    covariance: FloatArray | None
    allocator: str
    allocation_method: str | None
    fallback_reasons: tuple[str, ...]
    risk_budget: FloatArray | None
    relative_risk_contributions: FloatArray
    volatility_target: float | None
    capped: bool
    allocation_scale: float
    es_scale: float
    scale: float
    ex_ante_volatility: float
    es_limit: float | None
    es_method: str
    es_confidence: float
    es_horizon_days: int
    es_before: float | None = None
    es_after: float | None = None
    es_reason: str | None = None
    nav_base_units: int | None = None
    es_before_base_units: int | None = None
    es_after_base_units: int | None = None
    es_limit_base_units: int | None = None
    es_current: float | None = None

    @property
    def reason(self) -> str:
        """All reasons in one line."""
        return "; ".join(self.reasons)

    @property
    def invested_fraction(self) -> float:
        """Σ ``target_weights``, fraction of NAV in risky assets."""
        return float(self.target_weights.sum())

    @property
    def cash_buffer_bps(self) -> float:
        """The planner's ``cash_buffer_bps`` for this target: ``cash_weight × 10^4``."""
        return self.cash_weight * BPS

    @property
    def es_binding(self) -> bool:
        """True when the ES limit scaled the target down."""
        return self.es_limit is not None and self.es_scale < 1.0

    def as_dict(self, covariance: bool = True) -> dict[str, Any]:
        """JSON-able dict (strict JSON: NaN becomes None); ``covariance=False`` leaves the matrix out.

        :meth:`from_dict` rebuilds the decision from it.
        """
        def vec(a: FloatArray | None) -> list[float | None] | None:
            return None if a is None else [_num(x) for x in a]

        return {
            "symbols": list(self.symbols),
            "action": self.action,
            "reasons": list(self.reasons),
            "target_weights": vec(self.target_weights),
            "cash_weight": _num(self.cash_weight),
            "sleeve_weights": vec(self.sleeve_weights),
            "current_weights": vec(self.current_weights),
            "gate": {
                "action": self.gate_action,
                "reason": self.gate_reason,
                "max_condition_number": _num(self.max_condition_number),
                "condition_numbers": [_num(x) for x in self.condition_numbers],
                "estimator": self.estimator,
                "shrinkage": _num(self.shrinkage),
                "n_observations": self.n_observations,
            },
            "covariance": None if self.covariance is None or not covariance
            else [vec(row) for row in self.covariance],
            "allocation": {
                "allocator": self.allocator,
                "method": self.allocation_method,
                "fallback_reasons": list(self.fallback_reasons),
                "risk_budget": vec(self.risk_budget),
                "relative_risk_contributions": vec(self.relative_risk_contributions),
                "volatility_target": _num(self.volatility_target),
                "capped": self.capped,
                "scale": _num(self.allocation_scale),
            },
            "es": {
                "limit": _num(self.es_limit),
                "method": self.es_method,
                "confidence": self.es_confidence,
                "horizon_days": self.es_horizon_days,
                "before": _num(self.es_before),
                "after": _num(self.es_after),
                "current": _num(self.es_current),
                "scale": _num(self.es_scale),
                "reason": self.es_reason,
                "before_base_units": self.es_before_base_units,
                "after_base_units": self.es_after_base_units,
                "limit_base_units": self.es_limit_base_units,
            },
            "nav_base_units": self.nav_base_units,
            "scale": _num(self.scale),
            "ex_ante_volatility": _num(self.ex_ante_volatility),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "PolicyDecision":
        """Inverse of :meth:`as_dict` (e.g. the last decision read back from the journal).

        Raises
        ------
        PolicyInputError
            A key is missing or a value has the wrong shape.
        """
        try:
            gate, alloc, es = data["gate"], data["allocation"], data["es"]
            cov = data["covariance"]
            return cls(
                symbols=tuple(data["symbols"]),
                action=data["action"],
                reasons=tuple(data["reasons"]),
                target_weights=_frozen(data["target_weights"]),
                cash_weight=_unnum(data["cash_weight"]),
                sleeve_weights=_frozen(data["sleeve_weights"]),
                current_weights=_frozen(data["current_weights"]),
                gate_action=gate["action"],
                gate_reason=gate["reason"],
                max_condition_number=_unnum(gate["max_condition_number"]),
                condition_numbers=tuple(_unnum(x) for x in gate["condition_numbers"]),
                estimator=gate["estimator"],
                shrinkage=gate["shrinkage"],
                n_observations=gate["n_observations"],
                covariance=None if cov is None else _frozen(cov),
                allocator=alloc["allocator"],
                allocation_method=alloc["method"],
                fallback_reasons=tuple(alloc["fallback_reasons"]),
                risk_budget=None if alloc["risk_budget"] is None else _frozen(alloc["risk_budget"]),
                relative_risk_contributions=_frozen(alloc["relative_risk_contributions"]),
                volatility_target=alloc["volatility_target"],
                capped=bool(alloc["capped"]),
                allocation_scale=_unnum(alloc["scale"]),
                es_scale=_unnum(es["scale"]),
                scale=_unnum(data["scale"]),
                ex_ante_volatility=_unnum(data["ex_ante_volatility"]),
                es_limit=es["limit"],
                es_method=es["method"],
                es_confidence=float(es["confidence"]),
                es_horizon_days=int(es["horizon_days"]),
                es_before=es["before"],
                es_after=es["after"],
                es_reason=es["reason"],
                nav_base_units=data["nav_base_units"],
                es_before_base_units=es["before_base_units"],
                es_after_base_units=es["after_base_units"],
                es_limit_base_units=es["limit_base_units"],
                es_current=es.get("current"),  # absent from records written before it existed
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise PolicyInputError(
                f"not a policy decision record ({type(exc).__name__}: {exc}); pass PolicyDecision.as_dict() output."
            ) from exc


@dataclass(frozen=True, eq=False)
class LastRebalance:
    """What the trigger stage needs to know about the last rebalance actually made.

    Attributes
    ----------
    symbols : tuple of str
        The assets at that rebalance (a different set fires ``"universe changed"``).
    covariance : ndarray (n, n) or None
        The annualised covariance it used (journal: ``policy.covariance``); None if unknown.
    days_ago : float
        Days since it (fractional days allowed), >= 0.
    """

    symbols: tuple[str, ...]
    covariance: FloatArray | None
    days_ago: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.days_ago) and self.days_ago >= 0.0):
            raise PolicyInputError(f"days_ago is {self.days_ago!r}; it must be a finite number of days >= 0.")


# --------------------------------------------------------------------------- #
# Helpers
# --------------------------------------------------------------------------- #
def _num(x: float | None) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _unnum(x: float | None) -> float:
    return math.nan if x is None else float(x)


def _frozen(values: Any) -> FloatArray:
    a = np.array([[_unnum(v) for v in row] for row in values] if values and isinstance(values[0], list)
                 else [_unnum(v) for v in values], dtype=np.float64)
    a.setflags(write=False)
    return a


def _freeze(a: npt.ArrayLike) -> FloatArray:
    out = np.array(a, dtype=np.float64)
    out.setflags(write=False)
    return out


def _check_fractions(name: str, values: npt.ArrayLike, n: int) -> FloatArray:
    w = np.array(values, dtype=np.float64)
    if w.shape != (n,):
        raise PolicyInputError(f"{name} has shape {w.shape}; expected ({n},), one fraction of NAV per symbol.")
    if not np.all(np.isfinite(w)) or np.any(w < 0.0):
        raise PolicyInputError(f"{name} {w.tolist()} must be finite and >= 0 (long-only fractions of NAV).")
    total = float(w.sum())
    if total > 1.0 + _WEIGHT_SUM_ATOL:
        raise PolicyInputError(
            f"{name} sum to {total!r} > 1; they are risky fractions of NAV (the base asset takes the rest)."
        )
    if total > 1.0:  # within rounding of 1: renormalise so that downstream checks see <= 1
        w = w / total
    return w


def _by_symbol(name: str, values: Mapping[str, float] | None, symbols: tuple[str, ...],
               default: float | None) -> FloatArray | None:
    if values is None:
        return None
    missing = [s for s in symbols if s not in values]
    if missing and default is None:
        raise PolicyInputError(
            f"{name} has no entry for {missing} (it names {sorted(values)}); give every traded symbol one."
        )
    return np.array([values.get(s, default) for s in symbols], dtype=np.float64)


def _sleeve(weights: FloatArray) -> FloatArray:
    total = float(weights.sum())
    if total > 0.0:
        return weights / total
    return np.full(weights.size, 1.0 / weights.size)


def _volatility(weights: FloatArray, covariance: FloatArray | None) -> float:
    if covariance is None:
        return math.nan
    with np.errstate(invalid="ignore", over="ignore"):  # a broken covariance gives NaN, recorded as such
        variance = float(weights @ covariance @ weights)
    return math.sqrt(variance) if variance >= 0.0 else math.nan


def _rrc(weights: FloatArray, covariance: FloatArray | None) -> FloatArray:
    if covariance is None:
        return np.full(weights.size, math.nan)
    with np.errstate(invalid="ignore", over="ignore"):
        sigma_w = covariance @ weights
        variance = float(weights @ sigma_w)
    if not (variance > 0.0 and math.isfinite(variance)):
        return np.full(weights.size, math.nan)
    return weights * sigma_w / variance


def _complete_rows(returns: FloatArray) -> FloatArray:
    return returns[np.all(np.isfinite(returns), axis=1)]


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
        es_returns = _complete_rows(r) if config.es_method != "gaussian" else None
        es_covariance = cov if es_returns is None else None
        try:
            limit = enforce_es_limit(
                weights, config.es_limit, method=config.es_method, confidence=config.es_confidence,
                horizon_days=config.es_horizon_days, returns=es_returns, covariance=es_covariance,
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
            horizon_days=config.es_horizon_days, returns=es_returns, covariance=es_covariance,
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
    reference, days, changed = None, None, False
    if last_rebalance is not None:
        changed = tuple(last_rebalance.symbols) != decision.symbols
        if not changed and last_rebalance.covariance is not None:
            reference = np.asarray(last_rebalance.covariance, dtype=np.float64)
        days = float(last_rebalance.days_ago)
    return check_triggers(
        triggers, drift_bps=float(drift_bps), current_weights=current, target_weights=decision.target_weights,
        covariance=decision.covariance, reference_covariance=reference, days_since_rebalance=days,
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
                                    float(nav_base_units), triggers.risk_aversion, triggers.horizon_days)
    return apply_cost_gate(triggers, signals, benefit=benefit, cost=total, cost_breakdown=breakdown)
