"""What the replay can run: the keeper's own policy (:class:`PolicyStrategy` variants run by
:func:`keeper.policy.decide_targets`) and the plain baselines (inverse volatility, equal weight, fixed mixes such as
BTC only and 60/40 BTC/stable), each a callable from a :class:`DecisionContext` (nothing after its date) to a target.
"""

from __future__ import annotations
import datetime as dt
import math
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping, Protocol, Sequence
import numpy as np
import numpy.typing as npt
from keeper.overlay import OverlayConfig
from keeper.errors import ConfigError
from keeper.covariance import CovarianceEstimate
from keeper.conditioning_gate import GateDecision
from keeper.returns import simple_returns
from keeper.risk_contributions import portfolio_volatility
from keeper.policy_config import PolicyConfig
from keeper.policy_decision import PolicyDecision
from keeper.policy import decide_targets

__all__ = [
    "DecisionContext",
    "Allocation",
    "Strategy",
    "PolicyStrategy",
    "RiskParity",
    "InverseVolatility",
    "EqualWeight",
    "FixedMix",
    "vol_target_scale",
    "default_strategies",
]

FloatArray = npt.NDArray[np.float64]


# --------------------------------------------------------------------------- #
# Strategies
# --------------------------------------------------------------------------- #
@dataclass(frozen=True, eq=False)
class DecisionContext:
    """What a strategy may look at on a decision date: nothing after ``date``.

    Attributes
    ----------
    date : datetime.date
    symbols : tuple of str
        The active universe (assets with a full estimation window), shape (n,).
    prices_usd : ndarray of shape (n,)
        Today's closes, USD per whole token.
    history_usd : ndarray of shape (lookback_days + 1, n)
        Closes of the estimation window, oldest first, ending today.
    estimate : CovarianceEstimate
        The conditioning gate's accepted estimate on that window (annualised, 365-day year; the
        diagonal after an inverse-volatility gate).
    gate : GateDecision, optional
        :func:`keeper.conditioning_gate.gated_covariance` of the window's returns under ``policy`` (shared
        by the strategies of one day).
    current_weights : ndarray of shape (n,), optional
        Holdings before the tick, fractions of NAV (zeros when unknown).
    previous_target : ndarray of shape (n,), optional
        The strategy's previous target over the same universe, fractions of NAV.
    policy : PolicyConfig, optional
        The decision policy of the replay (:meth:`BacktestConfig.policy_config`); a
        :class:`PolicyStrategy` applies its own fields on top.
    nav_base_units : int, optional
        The vault's NAV before the tick, base-asset units.
    window_returns : ndarray of shape (lookback_days, n), optional
        ``simple_returns(history_usd)`` when the caller has it already (the replay computes it once a day for
        every strategy); :attr:`returns` computes it otherwise.
    """

    date: dt.date
    symbols: tuple[str, ...]
    prices_usd: FloatArray
    history_usd: FloatArray
    estimate: CovarianceEstimate
    gate: GateDecision | None = None
    current_weights: FloatArray | None = None
    previous_target: FloatArray | None = None
    policy: PolicyConfig | None = None
    nav_base_units: int | None = None
    window_returns: FloatArray | None = None

    @property
    def covariance(self) -> FloatArray:
        return self.estimate.covariance

    @property
    def returns(self) -> FloatArray:
        """Daily simple returns of the window, shape (lookback_days, n)."""
        if self.window_returns is not None:
            return self.window_returns
        return simple_returns(self.history_usd)


@dataclass(frozen=True, eq=False)
class Allocation:
    """Target of a strategy: the risky sleeve's weights and the fraction of NAV invested in it.

    Attributes
    ----------
    sleeve_weights : ndarray of shape (n,)
        Non-negative, sum to 1 (ignored when ``invested_fraction`` is 0).
    invested_fraction : float
        In [0, 1]; the rest of NAV stays in the base asset (the planner's cash buffer is
        ``(1 − invested_fraction) × 10^4`` bps).
    """

    sleeve_weights: FloatArray
    invested_fraction: float

    @property
    def nav_fractions(self) -> FloatArray:
        """Target NAV fractions per risk asset, shape (n,)."""
        return np.asarray(self.sleeve_weights, dtype=np.float64) * self.invested_fraction

    @classmethod
    def from_nav_fractions(cls, nav_fractions: npt.ArrayLike) -> "Allocation":
        w = np.asarray(nav_fractions, dtype=np.float64)
        total = float(w.sum())
        if total <= 0:
            return cls(np.full(w.shape, 1.0 / max(w.size, 1)), 0.0)
        return cls(w / total, total)


class Strategy(Protocol):
    """A callable from a :class:`DecisionContext` to an :class:`Allocation` (a fixed target) or a
    :class:`~keeper.policy_decision.PolicyDecision` (the keeper's policy) over ``ctx.symbols``."""

    name: str

    def __call__(self, ctx: DecisionContext) -> Allocation | PolicyDecision: ...


def vol_target_scale(sleeve_weights: npt.ArrayLike, covariance: npt.ArrayLike, vol_target: float,
                     invested_fraction: float = 1.0) -> float:
    """Volatility-targeting scale of the risky sleeve: ``min(1, σ* / σ_ex-ante)``.

    .. math:: s = \\min\\left(1, \\frac{\\sigma^*}{f \\sqrt{w^\\top \\Sigma w}}\\right)

    with :math:`w` the sleeve weights (sum to 1), :math:`f` the fraction of NAV invested before
    scaling (1 − cash buffer) and :math:`\\sigma^*` the annualised target; the scaled-out part goes
    to the base asset, so the portfolio's ex-ante volatility is :math:`\\min(\\sigma^*, f\\sigma_w)`.
    (The policy's allocator, :func:`keeper.allocation.allocate`, applies the same rule.)

    Raises
    ------
    ConfigError
        ``vol_target`` not finite and > 0.
    """
    if not (math.isfinite(vol_target) and vol_target > 0):
        raise ConfigError(f"vol_target must be an annualised volatility > 0 (e.g. 0.4), got {vol_target!r}")
    sigma = invested_fraction * portfolio_volatility(sleeve_weights, covariance)
    return min(1.0, vol_target / sigma) if sigma > 0 else 1.0


class PolicyStrategy:
    """A strategy that is a :class:`~keeper.policy_config.PolicyConfig` variant run by
    :func:`keeper.policy.decide_targets` (the live keeper's decision stage).

    Subclasses set ``allocator`` and may override :meth:`overrides`; their ``cash_buffer_bps`` (and,
    for :class:`RiskParity`, ``vol_target`` and ``risk_budget``) replace the replay's policy fields.
    """

    name: str
    cash_buffer_bps: float
    allocator: ClassVar[str] = "risk_budgeting"

    def overrides(self) -> dict[str, Any]:
        """Fields of the :class:`~keeper.policy_config.PolicyConfig` this strategy sets."""
        return {"allocator": self.allocator, "cash_buffer_bps": self.cash_buffer_bps, "volatility_target": None}

    def policy_config(self, base: PolicyConfig | None = None) -> PolicyConfig:
        """``base`` (default :class:`~keeper.policy_config.PolicyConfig`) with :meth:`overrides` applied, validated.

        Raises
        ------
        pydantic.ValidationError
            An override out of range (also a ``ValueError``).
        """
        base = base if base is not None else PolicyConfig()
        update = self.overrides()
        if all(getattr(base, k) == v for k, v in update.items()):
            return base
        return PolicyConfig.model_validate({**base.model_dump(), **update})

    def __call__(self, ctx: DecisionContext) -> PolicyDecision:
        policy = self.policy_config(ctx.policy)
        n = len(ctx.symbols)
        current = ctx.current_weights if ctx.current_weights is not None else np.zeros(n)
        # The day's gate was computed under ctx.policy's estimator and limit, which no override changes.
        gate = ctx.gate if ctx.policy is not None else None
        return decide_targets(ctx.returns, ctx.symbols, current, ctx.previous_target, policy, gate=gate,
                              nav_base_units=ctx.nav_base_units)


@dataclass(frozen=True)
class RiskParity(PolicyStrategy):
    """Risk budgeting (ERC by default) on the active universe, optional volatility target.

    Attributes
    ----------
    cash_buffer_bps : float
        NAV kept in the base asset (the vault's withdrawal buffer), bps.
    vol_target : float or None
        Annualised portfolio volatility target (the allocator scales the sleeve down to it, never
        up); ``None``: fully invested but for the cash buffer.
    risk_budget : mapping of symbol to float, optional
        Relative budgets (renormalised over the active assets); equal by default.
    with_options : bool
        Run in options mode with the replay's ``BacktestConfig.options``.
    overlay : OverlayConfig, optional
        Options mode: this strategy's overlay instead of the replay's.
    """

    name: str = "ERC"
    cash_buffer_bps: float = 500.0
    vol_target: float | None = None
    risk_budget: Mapping[str, float] | None = None
    #: Options mode (``BacktestConfig.options`` must be set): the targets apply to the delta-adjusted exposure and
    #: the overlay's puts are bought, rolled and settled, as the live keeper's options mode does.
    with_options: bool = False
    #: Options mode: this strategy's overlay (default ``BacktestConfig.options.overlay``); ``max_put_assets=0``
    #: is the same policy without the puts (the delta hedge only).
    overlay: OverlayConfig | None = None

    def overrides(self) -> dict[str, Any]:
        return {**super().overrides(), "volatility_target": self.vol_target,
                "risk_budget": None if self.risk_budget is None else dict(self.risk_budget)}


@dataclass(frozen=True)
class InverseVolatility(PolicyStrategy):
    """Weights ∝ 1/σ_i (the policy's ``"inverse_volatility"`` allocator), cash buffer kept."""

    name: str = "inverse-vol"
    cash_buffer_bps: float = 500.0
    allocator: ClassVar[str] = "inverse_volatility"


@dataclass(frozen=True)
class EqualWeight(PolicyStrategy):
    """1/n of the invested NAV per active asset (the policy's ``"equal_weight"`` allocator), cash buffer kept."""

    name: str = "equal weight"
    cash_buffer_bps: float = 500.0
    allocator: ClassVar[str] = "equal_weight"


@dataclass(frozen=True)
class FixedMix:
    """Fixed NAV fractions by symbol (the rest in the base asset); an asset not yet in the universe
    stays in cash. ``FixedMix("BTC only", {"BTC": 1.0})``, ``FixedMix("60/40 BTC/stable", {"BTC": 0.6})``."""

    name: str
    weights: Mapping[str, float]

    def __post_init__(self) -> None:
        total = sum(self.weights.values())
        if any(not (math.isfinite(v) and v >= 0) for v in self.weights.values()) or total > 1 + 1e-12:
            raise ConfigError(f"fixed weights must be >= 0 and sum to at most 1, got {dict(self.weights)}")

    def __call__(self, ctx: DecisionContext) -> Allocation:
        return Allocation.from_nav_fractions([self.weights.get(s, 0.0) for s in ctx.symbols])


def default_strategies(vol_target: float = 0.5, cash_buffer_bps: float = 500.0,
                       symbols: Sequence[str] | None = None) -> list[Strategy]:
    """ERC, ERC with vol target, inverse-vol, equal weight, BTC only, 60/40 BTC/stable.

    The two BTC benchmarks are left out when ``symbols`` is given without BTC.
    """
    strategies: list[Strategy] = [
        RiskParity("ERC", cash_buffer_bps),
        RiskParity(f"ERC vol {vol_target:.0%}", cash_buffer_bps, vol_target=vol_target),
        InverseVolatility("inverse-vol", cash_buffer_bps),
        EqualWeight("equal weight", cash_buffer_bps),
    ]
    if symbols is None or "BTC" in symbols:
        strategies += [FixedMix("BTC only", {"BTC": 1.0}), FixedMix("60/40 BTC/stable", {"BTC": 0.6})]
    return strategies


@dataclass(frozen=True, eq=False)
class NetDeltaControl:
    """Spot and cash only, holding each day another run's net delta (spot plus option delta) per asset.

    The control that judges an option overlay on its convexity, not on holding less: on each decision date the
    target NAV fractions are ``net_delta_by_date[date]`` (clipped at 0: a long-only vault cannot hold a negative
    delta; scaled to sum to at most 1), traded through the same planner, triggers and cost gate as every strategy.

    Attributes
    ----------
    name : str
    net_delta_by_date : mapping of date to mapping of symbol to float
        Net delta as a fraction of NAV, e.g. the overlay run's at that day's decision.
    """

    name: str
    net_delta_by_date: Mapping[dt.date, Mapping[str, float]]

    def __call__(self, ctx: DecisionContext) -> Allocation:
        target = self.net_delta_by_date.get(ctx.date)
        if target is None:
            raise ConfigError(f"{self.name}: no net delta recorded for {ctx.date}; run the reference first over the "
                              "same dates")
        w = np.clip(np.array([float(target.get(s, 0.0)) for s in ctx.symbols]), 0.0, None)
        total = float(w.sum())
        return Allocation.from_nav_fractions(w / total if total > 1.0 else w)
