"""One run of the policy as data: :class:`PolicyDecision` (the target and how every stage got there, journal-ready,
with :meth:`~PolicyDecision.as_dict` / :meth:`~PolicyDecision.from_dict`) and :class:`LastRebalance` (what the
triggers need to know about the last rebalance made)."""

from __future__ import annotations
import math
from dataclasses import dataclass
from typing import Any, Mapping
import numpy as np
import numpy.typing as npt
from keeper.errors import PolicyInputError
from keeper.units import BPS

__all__ = [
    "PolicyDecision",
    "LastRebalance",
]

FloatArray = npt.NDArray[np.float64]
_WEIGHT_SUM_ATOL = 1e-9

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
    seconds_ago : float
        Seconds since it, >= 0.
    """

    symbols: tuple[str, ...]
    covariance: FloatArray | None
    seconds_ago: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.seconds_ago) and self.seconds_ago >= 0.0):
            raise PolicyInputError(f"seconds_ago is {self.seconds_ago!r}; it must be a finite number of seconds >= 0.")


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
    # Finite and >= 0 (NaN fails the comparison), tested on a list: n is small.
    if not all(0.0 <= x < math.inf for x in w.tolist()):
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
