"""When to rebalance: drift, regime-shift and time triggers, and the cost-aware gate (pure functions).

A decision has two stages, so that the (possibly expensive) quoting happens only when needed:

1. :func:`check_triggers`: does anything call for a trade? Four triggers, each off when its threshold
   is ``None``:

   * **weight drift** (the planner's test): ``max |w − w*|`` over the risk assets and the cash sleeve,
     bps of NAV (``RebalancePlan.drift_bps``);
   * **risk-contribution drift**: ``max_i |RRC_i(w) − RRC_i(w*)|`` over the risky sleeve under the
     current covariance (:func:`rrc_drift`);
   * **risk-budget band** (relative): ``max_i |RRC_i(w) / b_i − 1|`` over the assets with a budget
     :math:`b_i > 0` (:func:`rrc_budget_gap`): with 14 assets an absolute band of 0.05 is 70 % of each
     asset's 1/14 budget, a relative band of 0.2 is 20 % of it whatever the number of assets;
   * **regime shift**: the distance between the covariance now and the one the last rebalance used
     (:func:`covariance_distance`), or a change of the asset universe;
   * **time**: seconds since the last rebalance (any bar size: a time, not a count of bars);
   * **ES limit**: the Expected Shortfall of the current holdings above the vault's limit by more than
     a tolerance (holdings that drifted into a breach inside the drift band).  A breach is not gated on cost: a limit is a
     constraint, not a preference.

2. :func:`apply_cost_gate`: given the actual trade (after quoting) and its cost, trade only when the
   expected risk improvement is worth the cost (:func:`expected_risk_benefit`).

Economics of the gate
---------------------
Take a mean-variance investor with risk aversion :math:`\\lambda` for whom the target :math:`w^*` is
optimal, i.e. whose implied expected returns are :math:`\\mu = \\lambda \\Sigma w^*` (reverse
optimisation, Sharpe 1974; the "implied returns" of Black & Litterman 1992). Her utility
:math:`U(w) = \\mu^\\top w - \\tfrac{\\lambda}{2} w^\\top \\Sigma w` then satisfies exactly

.. math:: U(w^*) - U(w) = \\tfrac{\\lambda}{2} (w - w^*)^\\top \\Sigma (w - w^*),

the certainty-equivalent return lost per year by holding :math:`w` instead of :math:`w^*`: the
tracking variance to the target, priced at :math:`\\lambda/2`. A trade from :math:`w` to
:math:`w^+` is worth, over the horizon :math:`H` until the next decision,

.. math:: B = \\mathrm{NAV} \\cdot \\tfrac{\\lambda}{2}
          \\left[ TE^2(w, w^*) - TE^2(w^+, w^*) \\right] \\cdot H / \\text{year}

in base-asset units (:math:`H` in seconds, a 365-day year; :math:`\\Sigma` annualised with the bar's own
periods per year, so the benefit is the same whatever the bar size), and it is made when :math:`B \\ge k \\cdot C`, with :math:`C` = swap fees + price
impact + gas for the actual legs and :math:`k` = ``min_benefit_to_cost`` (1 by default). This is the
no-trade-region logic of Leland (1999, "Optimal portfolio implementation with asset management fees")
and Donohue & Yip (2003, "Optimal portfolio rebalancing with transaction costs", JPM 29(4)) reduced
to one comparison per decision. Weights here are fractions of NAV, the base asset (cash) having zero
variance; :math:`\\Sigma` is annualised.

The live keeper and the backtester call the same functions. In ``Keeper._tick`` the sequence is::

    plan = plan_rebalance(..., drift_threshold_bps=0.0, ...)       # the planner no longer decides
    signals = check_triggers(policy, drift_bps=plan.drift_bps, current_weights=plan.current_weights,
                             target_weights=plan.target_weights, covariance=estimate.covariance,
                             reference_covariance=<covariance of the last rebalance (journal)>,
                             seconds_since_rebalance=<seconds since it>, universe_changed=<whitelist changed>)
    if not signals.fired: skip with apply_cost_gate(policy, signals, benefit=0, cost=0).reason
    quotes = executor.quote(plan, pool_fees)                         # with the halving loop as today
    cost = keeper.costs.cost_from_quotes(plan.legs, quotes, fees, values,
                                         gas_cost_base_units(gas, base_fee + tip, eth_usd, base_decimals))
    benefit = expected_risk_benefit(plan.current_weights, <weights after the quoted legs>,
                                    plan.target_weights, estimate.covariance, plan.nav_before, λ, H)
    decision = apply_cost_gate(policy, signals, benefit=benefit, cost=cost.total,
                               cost_breakdown=cost.as_dict())
    # journal: trigger=decision.as_dict(); send only if decision.rebalance

``TriggerPolicy(weight_drift_bps=config.drift_threshold_bps)`` (no other trigger, no gate)
reproduces the planner's historical behaviour exactly (``weight_drift_bps`` is its drift to the bit).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from keeper.errors import ConfigError, SingularCovarianceError
from keeper.memo import BoundedMemo, array_key
from keeper.units import BPS, DAYS_PER_YEAR, SECONDS_PER_DAY

__all__ = [
    "TriggerPolicy",
    "TriggerSignals",
    "TriggerDecision",
    "weight_drift_bps",
    "rrc_drift",
    "rrc_budget_gap",
    "covariance_distance",
    "tracking_variance",
    "expected_risk_benefit",
    "check_triggers",
    "apply_cost_gate",
]

FloatArray = npt.NDArray[np.float64]
# Prefix of the reason the ES-limit trigger fires with.
ES_LIMIT_TRIGGER = "ES limit"


@dataclass(frozen=True)
class TriggerPolicy:
    """Thresholds of the triggers and the price of risk of the cost gate.

    Attributes
    ----------
    weight_drift_bps : float or None
        Fire when ``max |w − w*|`` (NAV fractions incl. cash) reaches this, bps.
    rrc_band : float or None
        Fire when ``max_i |RRC_i(w) − RRC_i(w*)|`` reaches this (fraction, e.g. 0.05 = 5 points).
    rrc_budget_band : float or None
        Fire when ``max_i |RRC_i(w) / b_i − 1|`` (:func:`rrc_budget_gap`) reaches this (fraction of each
        budget, e.g. 0.2 = 20 %).
    regime_distance : float or None
        Fire when :func:`covariance_distance` from the last rebalance's covariance reaches this
        (0.2 ≈ every volatility 10% higher).
    max_seconds_between : float or None
        Fire when this many seconds have passed since the last rebalance (2,592,000 = 30 days).
    cost_aware : bool
        Gate every fired trigger on benefit >= ``min_benefit_to_cost`` × cost.
    risk_aversion : float
        :math:`\\lambda` of the gate (per year; 2-10 is the usual range of a balanced investor).
    horizon_seconds : float
        Seconds over which the improvement is counted (the expected time to the next decision).
    min_benefit_to_cost : float
        :math:`k` of the gate.
    es_trigger_tolerance : float
        The ES-limit trigger fires when the holdings' ES exceeds the limit by more than this
        fraction of it (0.1: above 110 % of the limit).  A target de-risked by the limit sits exactly
        at it, and the ES of unchanged holdings moves with every day's scenarios: without a band,
        half the days would trade.
    """

    weight_drift_bps: float | None = 300.0
    rrc_band: float | None = None
    rrc_budget_band: float | None = None
    regime_distance: float | None = None
    max_seconds_between: float | None = None
    cost_aware: bool = False
    risk_aversion: float = 5.0
    horizon_seconds: float = 30.0 * SECONDS_PER_DAY
    min_benefit_to_cost: float = 1.0
    es_trigger_tolerance: float = 0.1

    def __post_init__(self) -> None:
        for name in ("weight_drift_bps", "rrc_band", "rrc_budget_band", "regime_distance", "max_seconds_between"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"{name} must be None or a finite number >= 0, got {value!r}")
        for name in ("risk_aversion", "horizon_seconds", "min_benefit_to_cost"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"{name} must be a finite number > 0, got {value!r}")
        if not (math.isfinite(self.es_trigger_tolerance) and self.es_trigger_tolerance >= 0):
            raise ConfigError(f"es_trigger_tolerance must be a finite fraction >= 0, got {self.es_trigger_tolerance!r}")


@dataclass(frozen=True)
class TriggerSignals:
    """Stage 1: the triggers that fired (``fired`` empty when none did) and the measured values."""

    fired: tuple[str, ...]
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class TriggerDecision:
    """A decision, taken or skipped, with its reasons and numbers (journal-ready).

    ``metrics`` holds the trigger measurements (``drift_bps``, ``rrc_drift``, ``covariance_distance``,
    ``seconds_since_rebalance``) and, when the gate ran, ``benefit``, ``cost`` and its parts, all in
    base-asset units.
    """

    rebalance: bool
    reasons: tuple[str, ...]
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons)

    def as_dict(self) -> dict[str, Any]:
        return {"rebalance": self.rebalance, "reasons": list(self.reasons), "metrics": dict(self.metrics)}


def weight_drift_bps(
    current_weights: npt.ArrayLike,
    target_weights: npt.ArrayLike,
    current_cash: float | None = None,
    target_cash: float | None = None,
) -> float:
    """``max |w − w*|`` over the risk assets and the cash sleeve, bps of NAV: the planner's drift.

    Parameters
    ----------
    current_weights, target_weights : array_like, shape (n_assets,)
        NAV fractions of the risk assets.
    current_cash, target_cash : float, optional
        NAV fractions in the base asset; by default ``1 − Σw``. The planner passes
        ``base_balance / NAV`` and ``cash_buffer_bps / 10^4`` (its ``RebalancePlan.drift_bps`` is this
        function of those four values, to the last bit).
    """
    w = np.asarray(current_weights, dtype=np.float64)
    t = np.asarray(target_weights, dtype=np.float64)
    if w.shape != t.shape:
        raise ConfigError(f"weights of shapes {w.shape} and {t.shape} cannot be compared")
    cash_now = 1.0 - float(w.sum()) if current_cash is None else current_cash
    cash_target = 1.0 - float(t.sum()) if target_cash is None else target_cash
    return float(max(np.abs(w - t).max(initial=0.0), abs(cash_now - cash_target))) * BPS


def _sleeve_rrc(weights: FloatArray, covariance: FloatArray) -> FloatArray | None:
    total = weights.sum()
    if total <= 0:
        return None
    s = weights / total
    sigma_w = covariance @ s
    variance = float(s @ sigma_w)
    return s * sigma_w / variance if variance > 0 else None


def rrc_drift(current_weights: npt.ArrayLike, target_weights: npt.ArrayLike, covariance: npt.ArrayLike) -> float:
    """``max_i |RRC_i(w) − RRC_i(w*)|`` of the risky sleeves.

    :math:`RRC_i = w_i(\\Sigma w)_i / w^\\top\\Sigma w`.

    Parameters
    ----------
    current_weights, target_weights : array_like, shape (n_assets,)
        NAV fractions (each sleeve is normalised to sum to 1; cash does not carry risk).
    covariance : array_like, shape (n_assets, n_assets)
        Annualised covariance (the scale cancels).

    Returns
    -------
    float
        Dimensionless, in [0, 1]; 1.0 when one side holds no risk asset and the other does.
    """
    cov = np.asarray(covariance, dtype=np.float64)
    w = np.asarray(current_weights, dtype=np.float64)
    t = np.asarray(target_weights, dtype=np.float64)
    if not (w.shape == t.shape == (cov.shape[0],) and cov.shape == (cov.shape[0], cov.shape[0])):
        raise ConfigError(f"weights {w.shape}, {t.shape} and covariance {cov.shape} do not match")
    a, b = _sleeve_rrc(w, cov), _sleeve_rrc(t, cov)
    if a is None or b is None:
        return 0.0 if a is None and b is None else 1.0
    return float(np.abs(a - b).max())


def rrc_budget_gap(current_weights: npt.ArrayLike, risk_budget: npt.ArrayLike, covariance: npt.ArrayLike) -> float:
    """``max_i |RRC_i(w) / b_i − 1|`` over the assets with :math:`b_i > 0`: the drift relative to the budget.

    :math:`RRC_i = w_i(\\Sigma w)_i / w^\\top\\Sigma w` of the risky sleeve (cash carries no risk), and
    :math:`b` is renormalised to sum to 1 over its positive entries.

    Parameters
    ----------
    current_weights : array_like, shape (n_assets,)
        NAV fractions of the risk assets held (>= 0).
    risk_budget : array_like, shape (n_assets,)
        Risk budget, >= 0, at least one entry > 0 (any positive scale).
    covariance : array_like, shape (n_assets, n_assets)
        Annualised covariance (the scale cancels).

    Returns
    -------
    float
        Dimensionless, >= 0 (0.2: some asset's share of the risk is 20 % above or below its budget);
        1.0 when the sleeve holds no risk (every share is 0).

    Raises
    ------
    ConfigError
        Shapes that do not match, or a budget with a negative, non-finite or no positive entry (the
        message names the entry).
    """
    cov = np.asarray(covariance, dtype=np.float64)
    w = np.asarray(current_weights, dtype=np.float64)
    b = np.asarray(risk_budget, dtype=np.float64)
    if not (w.shape == b.shape == (cov.shape[0],) and cov.shape == (cov.shape[0], cov.shape[0])):
        raise ConfigError(f"weights {w.shape}, risk budget {b.shape} and covariance {cov.shape} do not match")
    bad = ~np.isfinite(b) | (b < 0)
    if bad.any():
        i = int(np.argmax(bad))
        raise ConfigError(f"risk_budget[{i}] is {b[i]!r}; budgets must be finite and >= 0")
    if not np.any(b > 0):
        raise ConfigError("risk_budget has no positive entry; give each budgeted asset a share > 0")
    budgeted = b > 0
    share = b[budgeted] / b[budgeted].sum()
    rrc = _sleeve_rrc(w, cov)
    if rrc is None:
        return 1.0
    return float(np.max(np.abs(rrc[budgeted] / share - 1.0)))


# L^-1 of the last few reference covariances A = L L^T: the reference stays the same from one rebalance to the
# next while the current covariance changes every tick, so the factorisation is made once per reference.
_INVERSE_CHOLESKY: BoundedMemo[FloatArray] = BoundedMemo(16)
# covariance_distance of the last few (reference, current) pairs: strategies that last rebalanced on the same
# day compare the same pair on a later day.
_DISTANCES: BoundedMemo[float] = BoundedMemo(16)


def _inverse_cholesky(a: FloatArray) -> FloatArray:
    """``inv(cholesky((a + a.T) / 2))``, read-only, shape (n, n) (kept for the last few distinct ``a``).

    Raises
    ------
    SingularCovarianceError
        ``a`` is not positive definite.
    """
    def compute() -> FloatArray:
        try:
            chol = np.linalg.cholesky(0.5 * (a + a.T))
        except np.linalg.LinAlgError as exc:
            raise SingularCovarianceError(f"reference covariance is not positive definite: {exc}") from exc
        inv = np.linalg.inv(chol)
        inv.setflags(write=False)
        return inv

    return _INVERSE_CHOLESKY.get(array_key(a), compute)


def covariance_distance(reference: npt.ArrayLike, current: npt.ArrayLike) -> float:
    """Affine-invariant (Förstner-Moonen) distance between two covariances, per asset.

    .. math:: d(A, B) = \\sqrt{\\tfrac{1}{n} \\sum_{i=1}^n \\ln^2 \\lambda_i(A^{-1} B)}

    where :math:`\\lambda_i(A^{-1}B)` are the generalised eigenvalues of :math:`B v = \\lambda A v`
    (W. Förstner, B. Moonen, "A metric for covariance matrices", 1999; the Riemannian distance on
    SPD matrices divided by :math:`\\sqrt n`). It is symmetric, invariant to any change of units or
    mixing of the assets, and reads as an RMS log variance ratio: when every volatility is
    multiplied by :math:`k` and correlations stay, :math:`d = 2 |\\ln k|` (0.19 for +10%).

    Parameters
    ----------
    reference, current : array_like, shape (n, n)
        Symmetric positive-definite covariances (same scale, e.g. annualised).

    Raises
    ------
    ConfigError
        Shapes differ or are not square.
    SingularCovarianceError
        ``reference`` is not positive definite.
    """
    a = np.asarray(reference, dtype=np.float64)
    b = np.asarray(current, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] != a.shape[1] or a.shape != b.shape or a.shape[0] == 0:
        raise ConfigError(f"covariances of shapes {a.shape} and {b.shape} cannot be compared")
    return _DISTANCES.get(array_key(a, b), lambda: _distance(a, b))


def _distance(a: FloatArray, b: FloatArray) -> float:
    """:func:`covariance_distance` of two checked float64 square matrices of one shape."""
    # Eigenvalues of A^-1 B are those of the symmetric L^-1 B L^-T, with A = L L^T (Cholesky).
    inv = _inverse_cholesky(a)
    m = inv @ (0.5 * (b + b.T)) @ inv.T
    eig = np.linalg.eigvalsh(0.5 * (m + m.T))
    smallest = eig.min()
    if not smallest > 0:  # NaN too
        raise SingularCovarianceError(
            f"current covariance is not positive definite (generalised eigenvalue {smallest:.3e}): "
            "re-estimate it before comparing regimes"
        )
    # np.mean without its Python wrapper: the same float64 sum divided by the count; sqrt is correctly rounded.
    return math.sqrt(float(np.add.reduce(np.log(eig) ** 2)) / eig.size)


def tracking_variance(weights: npt.ArrayLike, target_weights: npt.ArrayLike, covariance: npt.ArrayLike) -> float:
    """:math:`(w - w^*)^\\top \\Sigma (w - w^*)`, annualised if :math:`\\Sigma` is (NAV fractions, cash has no risk)."""
    d = np.asarray(weights, dtype=np.float64) - np.asarray(target_weights, dtype=np.float64)
    return float(d @ np.asarray(covariance, dtype=np.float64) @ d)


def expected_risk_benefit(
    current_weights: npt.ArrayLike,
    post_trade_weights: npt.ArrayLike,
    target_weights: npt.ArrayLike,
    covariance: npt.ArrayLike,
    nav: float,
    risk_aversion: float,
    horizon_seconds: float,
) -> float:
    """Value of moving from ``current`` to ``post_trade`` weights, base-asset units (see the module docstring).

    .. math:: B = \\mathrm{NAV} \\cdot \\tfrac{\\lambda}{2}
              [TE^2(w, w^*) - TE^2(w^+, w^*)] \\cdot H / (365 \\cdot 86400)

    Parameters
    ----------
    current_weights, post_trade_weights, target_weights : array_like, shape (n_assets,)
        NAV fractions of the risk assets.
    covariance : array_like, shape (n_assets, n_assets)
        Annualised covariance (365-day year, whatever the bar).
    nav : float
        Base-asset units.
    risk_aversion : float
        :math:`\\lambda`, per year.
    horizon_seconds : float
        :math:`H`, seconds.
    """
    gain = tracking_variance(current_weights, target_weights, covariance) - tracking_variance(
        post_trade_weights, target_weights, covariance
    )
    return float(nav) * 0.5 * risk_aversion * gain * (horizon_seconds / SECONDS_PER_DAY) / DAYS_PER_YEAR


def _total(weights: npt.ArrayLike) -> float:
    """``float(np.sum(weights))``; an array's own ``sum`` (the same reduction) skips ``np.sum``'s dispatch."""
    return float(weights.sum() if isinstance(weights, np.ndarray) else np.sum(weights))


def check_triggers(
    policy: TriggerPolicy,
    *,
    drift_bps: float,
    current_weights: npt.ArrayLike,
    target_weights: npt.ArrayLike,
    covariance: npt.ArrayLike,
    reference_covariance: npt.ArrayLike | None,
    seconds_since_rebalance: float | None,
    universe_changed: bool = False,
    es_current: float | None = None,
    es_limit: float | None = None,
    risk_budget: npt.ArrayLike | None = None,
) -> TriggerSignals:
    """Stage 1 of a decision: which triggers fire.

    Parameters
    ----------
    drift_bps : float
        The planner's weight drift (``RebalancePlan.drift_bps``), bps of NAV.
    current_weights, target_weights : array_like, shape (n_assets,)
        NAV fractions of the risk assets now and at the target.
    covariance : array_like, shape (n_assets, n_assets)
        Current annualised covariance estimate.
    reference_covariance : array_like or None
        The covariance the last rebalance used (``None``: none known; the regime test is then off).
        Holding no risk asset while the target holds some fires ``"first allocation"``.
    seconds_since_rebalance : float or None
        Seconds since the last rebalance (``None`` when there was none).
    universe_changed : bool
        The set of assets differs from the last rebalance's (fires ``"universe changed"``).
    es_current, es_limit : float or None
        Expected Shortfall of the current holdings and the vault's limit, fractions of NAV, in the
        same measure (``PolicyDecision.es_current`` / ``es_limit``); fires ``"ES limit: ..."`` when
        ``es_current > es_limit × (1 + policy.es_trigger_tolerance)``.  Off when either is ``None``.
    risk_budget : array_like, shape (n_assets,), optional
        The budget :math:`b` of the relative band (``policy.rrc_budget_band``).  ``None`` (the decision
        pipeline's choice): the target's own relative risk contributions under ``covariance``.  For an
        unconstrained risk-budgeting target, which the policy recomputes under this same covariance, they
        are the budget (ERC: 1/n) to the solver's tolerance; for the inverse-volatility and equal-weight
        allocators, or when weight bounds bind, they are the contributions the target can reach, so the
        band measures drift away from what a trade can restore.

    Returns
    -------
    TriggerSignals
        ``fired`` lists human-readable reasons; ``metrics`` every measured value.
    """
    fired: list[str] = []
    metrics: dict[str, float] = {"drift_bps": float(drift_bps)}
    if _total(current_weights) <= 0.0 < _total(target_weights):
        fired.append("first allocation")
    elif universe_changed:
        fired.append("universe changed")
    if policy.weight_drift_bps is not None and drift_bps >= policy.weight_drift_bps:
        fired.append(f"weight drift {drift_bps:.1f} bps >= {policy.weight_drift_bps:.1f} bps")
    if policy.rrc_band is not None:
        d = rrc_drift(current_weights, target_weights, covariance)
        metrics["rrc_drift"] = d
        if d >= policy.rrc_band:
            fired.append(f"risk-contribution drift {d:.4f} >= band {policy.rrc_band:.4f}")
    if policy.rrc_budget_band is not None and _total(target_weights) > 0.0:
        cov = np.asarray(covariance, dtype=np.float64)
        budget = risk_budget
        if budget is None:
            budget = _sleeve_rrc(np.asarray(target_weights, dtype=np.float64), cov)
        if budget is not None:
            gap = rrc_budget_gap(current_weights, budget, cov)
            metrics["rrc_budget_gap"] = gap
            if gap >= policy.rrc_budget_band:
                fired.append(f"risk-budget drift: max |RRC/b - 1| {gap:.1%} >= band {policy.rrc_budget_band:.1%}")
    if policy.regime_distance is not None and reference_covariance is not None and not universe_changed:
        d = covariance_distance(reference_covariance, covariance)
        metrics["covariance_distance"] = d
        if d >= policy.regime_distance:
            fired.append(f"regime shift: covariance distance {d:.3f} >= {policy.regime_distance:.3f}")
    if seconds_since_rebalance is not None:
        metrics["seconds_since_rebalance"] = float(seconds_since_rebalance)
        if policy.max_seconds_between is not None and seconds_since_rebalance >= policy.max_seconds_between:
            fired.append(f"time: {seconds_since_rebalance:g} s ({seconds_since_rebalance / SECONDS_PER_DAY:.4g} days) "
                         f"since the last rebalance >= {policy.max_seconds_between:g} s")
    if es_current is not None and es_limit is not None:
        metrics["es_current"] = float(es_current)
        ceiling = es_limit * (1.0 + policy.es_trigger_tolerance)
        if es_current > ceiling:
            fired.append(f"{ES_LIMIT_TRIGGER}: ES of the holdings {es_current:.4%} of NAV > limit {es_limit:.4%} "
                         f"+ {policy.es_trigger_tolerance:.0%}")
    return TriggerSignals(tuple(fired), metrics)


def apply_cost_gate(
    policy: TriggerPolicy,
    signals: TriggerSignals,
    *,
    benefit: float,
    cost: float,
    cost_breakdown: dict[str, Any] | None = None,
) -> TriggerDecision:
    """Stage 2 of a decision: trade when a trigger fired and (if ``policy.cost_aware``) the benefit pays.

    Parameters
    ----------
    benefit : float
        :func:`expected_risk_benefit` of the actual trade, base-asset units.
    cost : float
        Fees + price impact + gas of the actual trade (``TradeCost.total``), base-asset units.
    cost_breakdown : dict, optional
        Stored in the decision's metrics (``TradeCost.as_dict()``).

    Returns
    -------
    TriggerDecision
        ``rebalance`` False with the reason "no trigger" when nothing fired, or the gate's verdict.
    """
    metrics: dict[str, Any] = dict(signals.metrics)
    metrics.update(benefit=float(benefit), cost=float(cost))
    if cost_breakdown:
        metrics["cost_breakdown"] = dict(cost_breakdown)
    if not signals.fired:
        return TriggerDecision(False, ("no trigger fired",), metrics)
    # The first allocation, a universe change and an ES-limit breach are not gated on cost.
    structural = any(r in ("first allocation", "universe changed") or r.startswith(ES_LIMIT_TRIGGER)
                     for r in signals.fired)
    if policy.cost_aware and not structural and benefit < policy.min_benefit_to_cost * cost:
        reason = (f"expected risk benefit {benefit:.0f} < {policy.min_benefit_to_cost:g} x cost {cost:.0f} "
                  "(base units): not worth trading")
        return TriggerDecision(False, (*signals.fired, reason), metrics)
    return TriggerDecision(True, signals.fired, metrics)
