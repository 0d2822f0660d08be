"""``keeper backtest``: offline replay of daily closes through the live keeper's decision code.

No chain: each day the replay values the holdings at the oracle exactly as the vault does
(:func:`keeper.planner.value_of`), and on each tick runs the live pipeline's stages on the
information available that day:

decision policy (:func:`keeper.policy.decide_targets`: the conditioning gate of
:func:`keeper.estimation.gated_covariance` on the :func:`~keeper.estimation.simple_returns` of the window
the oracle reader would return, the allocator :func:`keeper.optimizer.allocate` with its volatility
target, cash sleeve and fallback chain, and the Expected Shortfall limit of
:func:`keeper.risk.enforce_es_limit`) → planner (:func:`keeper.planner.plan_rebalance`, the same integer
legs) → triggers (:func:`keeper.policy.policy_triggers`) → quotes from a cost model of the pools
(:mod:`keeper.costs`; halving the step when a quote misses ``minAmountOut``, as the runner does) →
cost gate (:func:`keeper.policy.evaluate_trade`) → execution at the modelled pool outputs.

The ERC, ERC-with-volatility-target, inverse-volatility and equal-weight strategies are
:class:`~keeper.policy.PolicyConfig` variants run by that one policy; the fixed-mix benchmarks (BTC
only, 60/40 BTC/stable) hold fixed NAV fractions through the same planner, triggers and cost gate.
Each strategy's gate actions, allocator fallbacks and ES-limit scalings are counted, and its final
portfolio gets a VaR/ES report (:func:`keeper.risk.risk_report`) and the stress tests of
:func:`keeper.stress.run_stress_tests`.

Data: a CSV with a ``date`` column and one USD close column per asset (the shipped
``data/crypto_daily_close_binance.csv`` by default). Blank cells mean "no close": an asset enters
the universe once it has ``lookback_days + 1`` consecutive closes; nothing is forward-filled, and a
blank close of an asset the portfolio holds is an error (the holding cannot be valued). Calendar gaps
(days missing for every asset) are reported: the return across a gap spans several days.

Metrics use a 365-day year: annualised return (geometric), volatility (daily returns × √365),
Sharpe and Sortino (zero risk-free rate), maximum drawdown with its peak, trough and recovery dates,
Calmar, turnover (Σ leg values / NAV per year, the vault's two-sided definition), cost drag (fees,
impact and gas per year, bps of NAV), realised risk-contribution dispersion and vol-target
tracking error (definitions in :func:`compute_metrics`).
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from collections import Counter
from typing import Any, ClassVar, Mapping, Protocol, Sequence

import numpy as np
import numpy.typing as npt

from keeper.build import PROJECT_ROOT
from keeper.costs import GasModel, LegQuote, PoolModel, TradeCost, quote_leg, rebalance_cost
from keeper.deployment import price_to_answer
from keeper.errors import BacktestDataError, ConfigError, InvalidPriceError, KeeperError
from keeper.conditioning_gate import GateDecision, gated_covariance
from keeper.covariance import CovarianceEstimate, EstimatorConfig
from keeper.oracle import PriceSnapshot, RiskAssetInfo, VaultState
from keeper.planner import RebalancePlan, plan_rebalance, value_of
from keeper.policy import LastRebalance, PolicyConfig, PolicyDecision, decide_targets, evaluate_trade, policy_triggers
from keeper.returns import simple_returns
from keeper.risk_contributions import portfolio_volatility, relative_risk_contributions
from keeper.risk_report import DEFAULT_CONFIDENCES, DEFAULT_HORIZONS_DAYS, RiskReport, risk_report
from keeper.risk_report import METHODS as RISK_METHODS
from keeper.stress import DEFAULT_WINDOWS, CloseHistory, StressReport, run_stress_tests
from keeper.triggers import (
    TriggerDecision,
    TriggerPolicy,
    apply_cost_gate,
    check_triggers,
    expected_risk_benefit,
    weight_drift_bps,
)
from keeper.units import BPS, DAYS_PER_YEAR, SECONDS_PER_DAY

__all__ = [
    "DEFAULT_BACKTEST_CSV",
    "PricePanel",
    "load_price_panel",
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
    "VaultLimits",
    "BacktestConfig",
    "Market",
    "StrategyRun",
    "StrategyResult",
    "run_backtest",
    "asset_returns",
    "strategy_result",
    "final_portfolio_risk",
    "replay_window",
    "compute_metrics",
    "format_table",
    "write_outputs",
]

FloatArray = npt.NDArray[np.float64]
DEFAULT_BACKTEST_CSV = PROJECT_ROOT / "data" / "crypto_daily_close_binance.csv"
#: Decimals of the backtest's modelled tokens: those of ``keeper demo``'s deployment.
BASE_DECIMALS = 6
RISK_DECIMALS = 18
FEED_DECIMALS = 8


# --------------------------------------------------------------------------- #
# Data
# --------------------------------------------------------------------------- #
@dataclass(frozen=True, eq=False)
class PricePanel:
    """Daily closes with blanks kept: ``prices[t, i]`` is ``symbols[i]``'s USD close on ``dates[t]``
    or NaN when the file has no close for it.

    ``calendar_gaps`` lists (last date before, first date after) each run of missing calendar days.
    """

    dates: tuple[dt.date, ...]
    symbols: tuple[str, ...]
    prices: FloatArray
    calendar_gaps: tuple[tuple[dt.date, dt.date], ...] = ()

    def close_timestamp(self, t: int) -> int:
        """Unix seconds of the close of ``dates[t]`` (midnight UTC ending that day)."""
        day = self.dates[t] + dt.timedelta(days=1)
        return int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc).timestamp())

    def index_on_or_after(self, date: dt.date) -> int:
        return int(np.searchsorted(np.array([d.toordinal() for d in self.dates]), date.toordinal(), "left"))

    def index_on_or_before(self, date: dt.date) -> int:
        return int(np.searchsorted(np.array([d.toordinal() for d in self.dates]), date.toordinal(), "right")) - 1

    def with_prices(self, prices: FloatArray) -> "PricePanel":
        """The same dates and symbols with other closes (tests perturb the future with it)."""
        return replace(self, prices=np.asarray(prices, dtype=np.float64))


def load_price_panel(
    path: Path = DEFAULT_BACKTEST_CSV,
    symbols: Sequence[str] | None = None,
    end: dt.date | None = None,
) -> PricePanel:
    """Reads a close-price CSV keeping blank cells as NaN (never forward-filled).

    Rows where every kept asset is blank are dropped. Rows after ``end`` are ignored (the start of a
    backtest is chosen later, as earlier rows serve as the estimator's warm-up).

    Raises
    ------
    ConfigError
        Missing file, no ``date`` column, an unknown symbol, a bad date, unsorted or duplicate dates,
        no row left.
    InvalidPriceError
        A non-blank close that is not a positive finite number.
    """
    try:
        with open(path, newline="") as handle:
            rows = list(csv.reader(handle))
    except OSError as exc:
        raise ConfigError(f"cannot read price file {path}: {exc}") from exc
    if not rows or not rows[0] or rows[0][0].strip().lower() != "date":
        raise ConfigError(f"{path}: the first column must be 'date'")
    header = [h.strip() for h in rows[0]]
    available = header[1:]
    chosen = list(symbols) if symbols else available
    unknown = [s for s in chosen if s not in available]
    if unknown or not chosen:
        raise ConfigError(f"{path}: no column for {unknown or chosen}; available: {available}")
    cols = [header.index(s) for s in chosen]
    dates: list[dt.date] = []
    values: list[list[float]] = []
    for line_no, row in enumerate(rows[1:], start=2):
        if not row or not row[0].strip():
            continue
        try:
            day = dt.date.fromisoformat(row[0].strip())
        except ValueError as exc:
            raise ConfigError(f"{path}:{line_no}: bad date {row[0]!r} (expected YYYY-MM-DD)") from exc
        if end and day > end:
            continue
        cells = [row[c].strip() if c < len(row) else "" for c in cols]
        if all(cell == "" for cell in cells):
            continue
        try:
            closes = [float(cell) if cell else math.nan for cell in cells]
        except ValueError as exc:
            raise InvalidPriceError(f"{path}:{line_no}: non-numeric close in {cells}") from exc
        bad = [c for c, cell in zip(closes, cells) if cell and not (math.isfinite(c) and c > 0)]
        if bad:
            raise InvalidPriceError(f"{path}:{line_no}: closes must be positive and finite, got {bad}")
        dates.append(day)
        values.append(closes)
    if not dates:
        raise ConfigError(f"{path}: no row with a close for any of {chosen} up to {end}")
    if any(b <= a for a, b in zip(dates, dates[1:])):
        raise ConfigError(f"{path}: dates must be strictly increasing")
    gaps = tuple((a, b) for a, b in zip(dates, dates[1:]) if (b - a).days > 1)
    return PricePanel(tuple(dates), tuple(chosen), np.array(values, dtype=np.float64), gaps)


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
        :func:`keeper.estimation.gated_covariance` of the window's returns under ``policy`` (shared
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

    @property
    def covariance(self) -> FloatArray:
        return self.estimate.covariance

    @property
    def returns(self) -> FloatArray:
        """Daily simple returns of the window, shape (lookback_days, n)."""
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
    :class:`~keeper.policy.PolicyDecision` (the keeper's policy) over ``ctx.symbols``."""

    name: str

    def __call__(self, ctx: DecisionContext) -> Allocation | PolicyDecision: ...


def vol_target_scale(sleeve_weights: npt.ArrayLike, covariance: npt.ArrayLike, vol_target: float,
                     invested_fraction: float = 1.0) -> float:
    """Volatility-targeting scale of the risky sleeve: ``min(1, σ* / σ_ex-ante)``.

    .. math:: s = \\min\\left(1, \\frac{\\sigma^*}{f \\sqrt{w^\\top \\Sigma w}}\\right)

    with :math:`w` the sleeve weights (sum to 1), :math:`f` the fraction of NAV invested before
    scaling (1 − cash buffer) and :math:`\\sigma^*` the annualised target; the scaled-out part goes
    to the base asset, so the portfolio's ex-ante volatility is :math:`\\min(\\sigma^*, f\\sigma_w)`.
    (The policy's allocator, :func:`keeper.optimizer.allocate`, applies the same rule.)

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
    """A strategy that is a :class:`~keeper.policy.PolicyConfig` variant run by
    :func:`keeper.policy.decide_targets` (the live keeper's decision stage).

    Subclasses set ``allocator`` and may override :meth:`overrides`; their ``cash_buffer_bps`` (and,
    for :class:`RiskParity`, ``vol_target`` and ``risk_budget``) replace the replay's policy fields.
    """

    name: str
    cash_buffer_bps: float
    allocator: ClassVar[str] = "risk_budgeting"

    def overrides(self) -> dict[str, Any]:
        """Fields of the :class:`~keeper.policy.PolicyConfig` this strategy sets."""
        return {"allocator": self.allocator, "cash_buffer_bps": self.cash_buffer_bps, "volatility_target": None}

    def policy_config(self, base: PolicyConfig | None = None) -> PolicyConfig:
        """``base`` (default :class:`~keeper.policy.PolicyConfig`) with :meth:`overrides` applied, validated.

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
    """

    name: str = "ERC"
    cash_buffer_bps: float = 500.0
    vol_target: float | None = None
    risk_budget: Mapping[str, float] | None = None

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


# --------------------------------------------------------------------------- #
# Configuration
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class VaultLimits:
    """The vault's limits (its constructor's defaults), bps."""

    max_slippage_bps: int = 100
    max_turnover_bps: int = 10_000
    max_nav_loss_bps: int = 200


@dataclass(frozen=True)
class BacktestConfig:
    """Parameters of a backtest; the keeper's own fields keep their names and units.

    ``pools`` defaults to 0.05% pools with a 250M USD full-range-equivalent base-side depth (the
    effective depth of the concentrated liquidity of major Uniswap V3 pools near the price; a
    full-range pool of that TVL would be shallower).

    The decision policy's fields (:meth:`policy_config`): ``estimator_method`` with ``half_life_days``
    (EWMA only), ``min_observations`` and ``periods_per_year`` make the
    :class:`~keeper.estimation.EstimatorConfig`; ``max_condition_number`` is the conditioning gate's
    limit; ``es_limit`` (fraction of NAV, ``None``: no limit) with ``es_method``, ``es_confidence`` and
    ``es_horizon_days`` the pre-trade Expected Shortfall limit; ``policy`` the triggers and cost gate.
    The allocator, cash buffer and volatility target are each strategy's own.
    """

    half_life_days: float = 30.0
    lookback_days: int = 180
    min_observations: int = 30
    periods_per_year: int = 365
    rebalance_every_days: int = 1
    initial_nav_usd: float = 1_000_000.0
    slippage_budget_bps: float = 50.0
    max_step_halvings: int = 2
    min_trade_usd: float = 10.0
    policy: TriggerPolicy = field(default_factory=lambda: TriggerPolicy(
        weight_drift_bps=300.0, rrc_band=0.05, regime_distance=0.25, max_days_between=30.0, cost_aware=True))
    pools: PoolModel = field(default_factory=lambda: PoolModel(depth_usd=250_000_000.0))
    gas: GasModel = field(default_factory=GasModel)
    limits: VaultLimits = field(default_factory=VaultLimits)
    estimator_method: str = "ewma"
    max_condition_number: float = 1e10
    es_limit: float | None = None
    es_method: str = "historical"
    es_confidence: float = 0.99
    es_horizon_days: int = 1

    def estimator_config(self) -> EstimatorConfig:
        """The :class:`~keeper.estimation.EstimatorConfig` of these fields (missing data raise: the
        active universe only holds assets with a full window).

        Raises
        ------
        EstimatorConfigError
            An unknown method or a bad half-life.
        """
        return EstimatorConfig(
            method=self.estimator_method,
            half_life_days=self.half_life_days if self.estimator_method == "ewma" else None,
            periods_per_year=self.periods_per_year,
            min_observations=self.min_observations,
        )

    def policy_config(self) -> PolicyConfig:
        """The replay's :class:`~keeper.policy.PolicyConfig` (allocator and cash buffer at their defaults;
        strategies override them).

        Raises
        ------
        ConfigError
            A field out of range (the pydantic message names it).
        """
        p = self.policy
        try:
            return PolicyConfig(
                estimator=self.estimator_config(), max_condition_number=self.max_condition_number,
                es_limit=self.es_limit, es_method=self.es_method, es_confidence=self.es_confidence,
                es_horizon_days=self.es_horizon_days, weight_drift_bps=p.weight_drift_bps, rrc_band=p.rrc_band,
                regime_distance=p.regime_distance, max_days_between=p.max_days_between, cost_aware=p.cost_aware,
                risk_aversion=p.risk_aversion, benefit_horizon_days=p.horizon_days,
                min_benefit_to_cost=p.min_benefit_to_cost, es_trigger_tolerance=p.es_trigger_tolerance,
            )
        except ValueError as exc:  # pydantic's ValidationError
            raise ConfigError(f"invalid backtest policy: {exc}") from exc

    def __post_init__(self) -> None:
        if self.lookback_days < 3 or self.min_observations < 2 or self.min_observations > self.lookback_days:
            raise ConfigError(
                f"need lookback_days >= 3 and 2 <= min_observations <= lookback_days, got "
                f"{self.lookback_days} and {self.min_observations}"
            )
        if self.rebalance_every_days < 1:
            raise ConfigError(f"rebalance_every_days must be >= 1, got {self.rebalance_every_days}")
        if not (math.isfinite(self.initial_nav_usd) and self.initial_nav_usd > 0):
            raise ConfigError(f"initial_nav_usd must be > 0, got {self.initial_nav_usd}")
        if not 0 < self.slippage_budget_bps < BPS or self.max_step_halvings < 0 or self.min_trade_usd < 0:
            raise ConfigError("slippage_budget_bps must be in (0, 10000), max_step_halvings and min_trade_usd >= 0")
        self.policy_config()  # the policy fields are checked once, here


# --------------------------------------------------------------------------- #
# Market: data and causal per-day caches shared by every strategy
# --------------------------------------------------------------------------- #
class Market:
    """Closes, oracle answers, active universes and covariance estimates, computed at most once.

    Everything derived for day ``t`` reads rows ``<= t`` only.

    Parameters
    ----------
    panel : PricePanel
    lookback_days : int
        An asset is active on day t when its closes on rows ``t − lookback_days .. t`` are all present.
    """

    def __init__(self, panel: PricePanel, lookback_days: int) -> None:
        self.panel = panel
        self.lookback_days = lookback_days
        prices = panel.prices
        valid = np.isfinite(prices)
        # Consecutive valid closes ending at each row (vectorised run length).
        run = np.zeros(prices.shape, dtype=np.int64)
        count = np.zeros(prices.shape[1], dtype=np.int64)
        for t in range(prices.shape[0]):
            count = np.where(valid[t], count + 1, 0)
            run[t] = count
        self.active = run >= lookback_days + 1
        self._answers: dict[tuple[int, int], int] = {}
        self._gates: dict[tuple, GateDecision] = {}
        self.eth_index = panel.symbols.index("ETH") if "ETH" in panel.symbols else None
        self.estimator_calls = 0

    def answer(self, t: int, i: int) -> int:
        """Feed answer (8 decimals) of asset i's close on row t, as the demo pushes it."""
        key = (t, i)
        value = self._answers.get(key)
        if value is None:
            price = self.panel.prices[t, i]
            if not math.isfinite(price):
                raise BacktestDataError(
                    f"{self.panel.symbols[i]} has no close on {self.panel.dates[t]} but is needed that day: "
                    "fill the gap in the CSV or drop the asset (closes are never forward-filled)"
                )
            value = self._answers[key] = price_to_answer(price)
        return value

    def universe(self, t: int) -> tuple[int, ...]:
        return tuple(int(i) for i in np.flatnonzero(self.active[t]))

    def gate(self, t: int, universe: tuple[int, ...], config: BacktestConfig) -> GateDecision:
        """The conditioning gate (:func:`keeper.estimation.gated_covariance`) on the returns of rows
        ``t − lookback .. t`` under ``config``'s estimator and limit (cached: one per day and setting,
        shared by every strategy). Data problems are a ``"hold"`` with the reason, never raised.
        """
        key = (t, universe, config.estimator_method, config.half_life_days, config.min_observations,
               config.periods_per_year, config.max_condition_number)
        cached = self._gates.get(key)
        if cached is None:
            window = self.panel.prices[t - self.lookback_days: t + 1][:, list(universe)]
            try:
                cached = gated_covariance(simple_returns(window), config.estimator_config(),
                                          config.max_condition_number)
            except InvalidPriceError as exc:
                cached = GateDecision("hold", f"no returns ({type(exc).__name__}: {exc}); hold current positions",
                                      None, config.max_condition_number, ())
            self.estimator_calls += 1
            self._gates[key] = cached
        return cached

    def eth_price(self, t: int) -> float | None:
        if self.eth_index is None:
            return None
        p = self.panel.prices[t, self.eth_index]
        return float(p) if math.isfinite(p) else None


# --------------------------------------------------------------------------- #
# One strategy's replay
# --------------------------------------------------------------------------- #
@dataclass
class DecisionRecord:
    """One tick of a strategy: the trigger decision (or the reason it could not be made)."""

    date: dt.date
    status: str  # "rebalanced" or "skipped"
    reason: str
    decision: TriggerDecision | None = None
    legs: int = 0
    turnover_bps: float = 0.0
    cost: TradeCost | None = None
    target_weights: dict[str, float] | None = None
    policy: PolicyDecision | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"date": self.date.isoformat(), "status": self.status, "reason": self.reason,
                               "legs": self.legs, "turnover_bps": self.turnover_bps}
        if self.decision is not None:
            out["metrics"] = self.decision.metrics
        if self.policy is not None:
            out["policy"] = self.policy.as_dict(covariance=False)
        if self.cost is not None:
            out["cost"] = self.cost.as_dict()
        if self.target_weights is not None:
            out["target_weights"] = self.target_weights
        return out


class StrategyRun:
    """The state of one strategy's replay (holdings in smallest units, exactly as the vault holds them),
    advanced one day at a time by :meth:`step`. Strategy, config and policy may be swapped between
    steps (the walk-forward does), holdings carry over.
    """

    def __init__(self, market: Market, strategy: Strategy, config: BacktestConfig) -> None:
        if config.lookback_days != market.lookback_days:
            raise ConfigError(f"config lookback {config.lookback_days} != market lookback {market.lookback_days}")
        self.market = market
        self.strategy = strategy
        self.config = config
        n = len(market.panel.symbols)
        self.balances = [0] * n
        self.base_balance = 0
        self.epoch = 0
        self.gas_paid = 0  # base units, paid outside the vault (by the keeper)
        self.last_rebalance: dt.date | None = None
        self.reference: tuple[tuple[int, ...], FloatArray] | None = None
        self.steps = 0
        self.funded = False
        self.seed_prices: dict[str, float] = {}
        self._infos: dict[tuple[int, int], RiskAssetInfo] = {}
        # Daily records.
        self.dates: list[dt.date] = []
        self.nav: list[float] = []
        self.nav_vault: list[float] = []
        self.weights: list[FloatArray] = []
        self.rrc: list[FloatArray] = []
        self.ex_ante_vol: list[float] = []
        self.turnover: list[float] = []
        self.fees: list[float] = []
        self.impacts: list[float] = []
        self.gas: list[float] = []
        self.decisions: list[DecisionRecord] = []
        # The decision policy's bookkeeping.
        self.previous_target: tuple[tuple[int, ...], FloatArray] | None = None
        self.gate_counts: Counter[str] = Counter()
        self.allocation_fallbacks = 0
        self.es_limit_binding = 0
        self.policy_holds = 0
        self._policies: dict[tuple[int, int], tuple[Any, BacktestConfig, PolicyConfig | None]] = {}

    def _policy(self) -> PolicyConfig | None:
        """This strategy's policy under the current config (built once per strategy and config)."""
        key = (id(self.strategy), id(self.config))
        cached = self._policies.get(key)
        if cached is None:
            base = self.config.policy_config()
            maker = getattr(self.strategy, "policy_config", None)
            try:
                policy = maker(base) if maker is not None else base
            except ValueError as exc:  # pydantic's ValidationError
                raise ConfigError(f"strategy {self.strategy.name!r}: invalid policy: {exc}") from exc
            # The strategy and config are kept so that their ids stay theirs.
            cached = self._policies[key] = (self.strategy, self.config, policy)
        return cached[2]

    # -- valuation ----------------------------------------------------------
    def _info(self, i: int) -> RiskAssetInfo:
        """The modelled token: the symbol stands for its address and feed, decimals as deployed."""
        key = (i, self.config.pools.fee_pips)
        info = self._infos.get(key)
        if info is None:
            symbol = self.market.panel.symbols[i]
            info = self._infos[key] = RiskAssetInfo(symbol, symbol, symbol, RISK_DECIMALS, FEED_DECIMALS,
                                                    2 * SECONDS_PER_DAY, self.config.pools.fee_pips)
        return info

    def _values(self, t: int) -> list[int]:
        """Oracle value of each holding, base units (the vault's ``_valueOf``, floor)."""
        return [value_of(b, self.market.answer(t, i), self._info(i), BASE_DECIMALS) if b else 0
                for i, b in enumerate(self.balances)]

    # -- one day --------------------------------------------------------------
    def step(self, t: int) -> None:
        """Replays row ``t``: funds the vault on the first step, ticks on schedule, records the day."""
        cfg = self.config
        if not self.funded:
            self.base_balance = int(round(cfg.initial_nav_usd * 10**BASE_DECIMALS))
            self.funded = True
        universe = self.market.universe(t)
        estimate: CovarianceEstimate | None = None
        if self.steps % cfg.rebalance_every_days == 0:
            estimate = self._tick(t, universe)
        self.steps += 1
        values = self._values(t)
        nav_vault = self.base_balance + sum(values)
        w = np.array(values, dtype=np.float64) / nav_vault if nav_vault else np.zeros(len(values))
        rrc = np.zeros(len(values))
        vol = math.nan
        held = [i for i in universe if w[i] > 0]
        if estimate is not None and held and set(held) <= set(universe):
            pos = [universe.index(i) for i in held]
            cov = estimate.covariance[np.ix_(pos, pos)]
            rrc[held] = relative_risk_contributions(w[held], cov)
            vol = portfolio_volatility(w[held], cov)
        self.dates.append(self.market.panel.dates[t])
        self.nav_vault.append(nav_vault / 10**BASE_DECIMALS)
        gas_charged = self.gas_paid if cfg.gas.charge_to_nav else 0
        self.nav.append((nav_vault - gas_charged) / 10**BASE_DECIMALS)
        self.weights.append(w)
        self.rrc.append(rrc)
        self.ex_ante_vol.append(vol)
        for series in (self.turnover, self.fees, self.impacts, self.gas):
            if len(series) < len(self.dates):
                series.append(0.0)

    def _skip(self, t: int, reason: str, decision: TriggerDecision | None = None,
              policy: PolicyDecision | None = None) -> None:
        self.decisions.append(DecisionRecord(self.market.panel.dates[t], "skipped", reason, decision, policy=policy))

    def _tick(self, t: int, universe: tuple[int, ...]) -> CovarianceEstimate | None:
        cfg = self.config
        market = self.market
        date = market.panel.dates[t]
        held = {i for i, b in enumerate(self.balances) if b}
        if not universe:
            self._skip(t, "no asset has a full estimation window yet")
            return None
        if not held <= set(universe):
            names = [market.panel.symbols[i] for i in sorted(held - set(universe))]
            raise BacktestDataError(f"held assets {names} left the universe on {date}: their closes have a gap")
        gate = market.gate(t, universe, cfg)
        self.gate_counts[gate.action] += 1
        if gate.action == "hold" or gate.estimate is None:
            self._skip(t, f"gate hold: {gate.reason}")
            return None
        estimate = gate.estimate
        symbols = tuple(market.panel.symbols[i] for i in universe)
        window = market.panel.prices[t - market.lookback_days: t + 1][:, list(universe)]

        infos = [self._info(i) for i in universe]
        answers = tuple(market.answer(t, i) for i in universe)
        balances = tuple(self.balances[i] for i in universe)
        values = [value_of(b, a, info, BASE_DECIMALS) for b, a, info in zip(balances, answers, infos)]
        nav = self.base_balance + sum(values)
        if nav == 0:
            self._skip(t, "vault is empty")
            return estimate
        # The planner's holdings weights (keeper.planner.value_holdings), to the bit.
        current = np.array(values, dtype=np.float64) / nav
        previous = None
        if self.previous_target is not None and self.previous_target[0] == universe:
            previous = self.previous_target[1]
        ctx = DecisionContext(date, symbols, window[-1].copy(), window, estimate, gate=gate,
                              current_weights=current, previous_target=previous, policy=self._policy(),
                              nav_base_units=nav)
        try:
            allocation = self.strategy(ctx)
        except KeeperError as exc:
            self._skip(t, f"{type(exc).__name__}: {exc}")
            return estimate
        decision_policy: PolicyDecision | None = None
        if isinstance(allocation, PolicyDecision):
            decision_policy = allocation
            self.allocation_fallbacks += len(allocation.fallback_reasons)
            self.es_limit_binding += int(allocation.es_binding)
            if allocation.action == "hold":
                self.policy_holds += 1
                self._skip(t, f"policy holds: {allocation.reason}", policy=allocation)
                return estimate
            self.previous_target = (universe, np.array(allocation.target_weights))
            sleeve = np.asarray(allocation.sleeve_weights, dtype=np.float64)
            invested = min(1.0, allocation.scale)  # Σ target weights; the cash weight is 1 − scale
        else:
            sleeve = np.asarray(allocation.sleeve_weights, dtype=np.float64)
            invested = float(allocation.invested_fraction)
        if sleeve.shape != (len(universe),) or not np.all(np.isfinite(sleeve)) or np.any(sleeve < 0) \
                or abs(sleeve.sum() - 1.0) > 1e-6 or not 0.0 <= invested <= 1.0:
            raise ConfigError(f"strategy {self.strategy.name!r} returned {allocation!r} for {symbols}: expected "
                              f"{len(universe)} non-negative sleeve weights summing to 1 and an invested "
                              "fraction in [0, 1]")
        target = sleeve * invested
        cash_buffer_bps = (1.0 - invested) * BPS

        # The planner's targets and drift, to the bit (see keeper.planner.plan_rebalance), so that the
        # planner runs only when a trigger fires.
        risky_fraction = 1.0 - cash_buffer_bps / BPS
        target_nav = sleeve * risky_fraction
        drift = weight_drift_bps(current, target_nav, self.base_balance / nav, 1.0 - risky_fraction)

        last = None
        if self.reference is not None and self.last_rebalance is not None:
            ref_universe, ref_cov = self.reference
            last = LastRebalance(tuple(market.panel.symbols[i] for i in ref_universe), ref_cov,
                                 float((date - self.last_rebalance).days))
        policy = cfg.policy
        if decision_policy is not None:
            signals = policy_triggers(decision_policy, policy, current_weights=current, drift_bps=drift,
                                      last_rebalance=last)
        else:
            changed = last is not None and last.symbols != symbols
            signals = check_triggers(
                policy, drift_bps=drift, current_weights=current, target_weights=target_nav,
                covariance=estimate.covariance, reference_covariance=None if last is None or changed else last.covariance,
                days_since_rebalance=None if last is None else last.days_ago,
                universe_changed=changed and bool(held))
        if not signals.fired:
            self._skip(t, "no trigger fired", TriggerDecision(False, ("no trigger fired",), dict(signals.metrics)),
                       policy=decision_policy)
            return estimate

        timestamp = market.panel.close_timestamp(t)
        snapshot = PriceSnapshot(answers, window[-1].copy(), np.full(len(universe), timestamp, dtype=np.int64),
                                 tuple(0 for _ in universe), t, timestamp)
        state = VaultState("BASE", BASE_DECIMALS, self.base_balance, balances, nav, 0, self.epoch, False,
                           cfg.limits.max_slippage_bps, cfg.limits.max_turnover_bps, cfg.limits.max_nav_loss_bps)
        plan_args = dict(cash_buffer_bps=cash_buffer_bps, slippage_budget_bps=cfg.slippage_budget_bps,
                         drift_threshold_bps=0.0, min_trade_value=int(cfg.min_trade_usd * 10**BASE_DECIMALS),
                         deadline=timestamp + 600)
        plan = plan_rebalance(snapshot, state, infos, sleeve, **plan_args)
        if plan.skip_reason:
            self._skip(t, plan.skip_reason)
            return estimate

        # Quote every leg; when a pool cannot absorb the move within the slippage budget, halve the step
        # (the runner's rule, with the cost model in place of QuoterV2).
        fraction = 1.0
        for attempt in range(cfg.max_step_halvings + 1):
            quotes = self._quote(plan, universe, t)
            short = [(leg, q) for leg, q in zip(plan.legs, quotes) if q.amount_out < leg.min_amount_out]
            if not short:
                break
            if attempt == cfg.max_step_halvings:
                leg, q = short[0]
                self._skip(t, f"QuoteBelowBoundError: {leg.symbol} {leg.side} leg quotes {q.amount_out} < "
                              f"minAmountOut {leg.min_amount_out} after {attempt} halvings")
                return estimate
            fraction /= 2
            plan = plan_rebalance(snapshot, state, infos, sleeve, fraction=fraction, **plan_args)
            if plan.skip_reason:
                self._skip(t, f"QuoteBelowBoundError, then {plan.skip_reason}")
                return estimate

        cost = rebalance_cost(quotes, cfg.gas, market.eth_price(t), BASE_DECIMALS)
        new_balances, new_base = self._after(plan, quotes, universe)
        post_values = [value_of(b, a, info, BASE_DECIMALS) for b, a, info in zip(new_balances, answers, infos)]
        post = np.array(post_values, dtype=np.float64) / nav
        if decision_policy is not None:
            decision = evaluate_trade(decision_policy, policy, signals, post_trade_weights=post, nav_base_units=nav,
                                      cost=cost, current_weights=plan.current_weights)
        else:
            benefit = expected_risk_benefit(plan.current_weights, post, plan.target_weights, estimate.covariance,
                                            nav, policy.risk_aversion, policy.horizon_days)
            decision = apply_cost_gate(policy, signals, benefit=benefit, cost=cost.total,
                                       cost_breakdown=cost.as_dict())
        targets = {s: float(x) for s, x in zip(symbols, target)}
        if not decision.rebalance:
            self.decisions.append(DecisionRecord(date, "skipped", decision.reason, decision, len(plan.legs),
                                                 plan.turnover_bps, cost, targets, decision_policy))
            return estimate
        for i, b in zip(universe, new_balances):
            self.balances[i] = b
        self.base_balance = new_base
        self.epoch += 1
        self.gas_paid += cost.gas
        self.last_rebalance = date
        self.reference = (universe, np.array(estimate.covariance))
        self.decisions.append(DecisionRecord(date, "rebalanced", decision.reason, decision, len(plan.legs),
                                             plan.turnover_bps, cost, targets, decision_policy))
        self.turnover.append(plan.turnover_bps / BPS)
        self.fees.append(cost.fee / nav)
        self.impacts.append(cost.impact / nav)
        self.gas.append(cost.gas / nav if cfg.gas.charge_to_nav else 0.0)
        return estimate

    def _quote(self, plan: RebalancePlan, universe: tuple[int, ...], t: int) -> list[LegQuote]:
        market = self.market
        position = {market.panel.symbols[i]: i for i in universe}
        quotes = []
        for leg in plan.legs:
            i = position[leg.symbol]
            info = self._info(i)
            answer = market.answer(t, i)
            seed = self.seed_prices.setdefault(leg.symbol, float(market.panel.prices[t, i]))
            reserves = self.config.pools.reserves(leg.symbol, answer, FEED_DECIMALS, RISK_DECIMALS, BASE_DECIMALS, seed)
            quotes.append(quote_leg(leg, reserves, self.config.pools.fee_pips,
                                    lambda amount, a=answer, inf=info: value_of(amount, a, inf, BASE_DECIMALS)))
        return quotes

    def _after(self, plan: RebalancePlan, quotes: Sequence[LegQuote],
               universe: tuple[int, ...]) -> tuple[list[int], int]:
        """Holdings after the legs execute at the quoted outputs (sells first; they fund the buys)."""
        position = {self.market.panel.symbols[i]: k for k, i in enumerate(universe)}
        balances = [self.balances[i] for i in universe]
        base = self.base_balance
        for leg, q in zip(plan.legs, quotes):
            k = position[leg.symbol]
            if leg.side == "sell":
                balances[k] -= leg.amount_in
                base += q.amount_out
            else:
                base -= leg.amount_in
                balances[k] += q.amount_out
        if base < 0 or min(balances, default=0) < 0:
            raise KeeperError(
                f"plan spends more than held (base {base}, balances {balances}): planner invariant broken"
            )
        return balances, base


# --------------------------------------------------------------------------- #
# Results and metrics
# --------------------------------------------------------------------------- #
@dataclass
class StrategyResult:
    """Daily series and decisions of one strategy, and its metrics."""

    name: str
    dates: list[dt.date]
    nav: FloatArray
    nav_vault: FloatArray
    weights: FloatArray  # (n_days, n_assets), NAV fractions
    rrc: FloatArray  # (n_days, n_assets), ex-ante relative risk contributions of the holdings
    ex_ante_vol: FloatArray
    decisions: list[DecisionRecord]
    metrics: dict[str, Any]


def _max_drawdown(nav: FloatArray, dates: Sequence[dt.date]) -> dict[str, Any]:
    peaks = np.maximum.accumulate(nav)
    dd = 1.0 - nav / peaks
    trough = int(np.argmax(dd))
    peak = int(np.argmax(nav[: trough + 1]))
    recovered = np.flatnonzero(nav[trough:] >= nav[peak])
    recovery = dates[trough + int(recovered[0])] if recovered.size and dd[trough] > 0 else None
    return {"max_drawdown": float(dd[trough]), "max_drawdown_peak": dates[peak].isoformat(),
            "max_drawdown_trough": dates[trough].isoformat(),
            "max_drawdown_recovery": recovery.isoformat() if recovery else None}


def compute_metrics(
    nav: npt.ArrayLike,
    dates: Sequence[dt.date],
    *,
    turnover: npt.ArrayLike | None = None,
    costs: npt.ArrayLike | None = None,
    weights: npt.ArrayLike | None = None,
    asset_returns: npt.ArrayLike | None = None,
    vol_target: float | None = None,
    vol_window_days: int = 30,
) -> dict[str, Any]:
    """Performance and risk metrics of a daily NAV path (365-day year, zero risk-free rate).

    Parameters
    ----------
    nav : array_like, shape (n_days,)
        NAV, any currency unit, > 0.
    dates : sequence of date, length n_days
    turnover, costs : array_like, shape (n_days,), optional
        Per day: Σ leg values / NAV, and fees + impact + gas / NAV (fractions).
    weights : array_like, shape (n_days, n_assets), optional
        NAV fractions held at each day's close.
    asset_returns : array_like, shape (n_days, n_assets), optional
        Each asset's simple return into day t (row 0 unused; NaN where unknown).
    vol_target : float, optional
        Annualised target of the strategy.

    Returns
    -------
    dict
        ``annualised_return`` = (NAV_T/NAV_0)^(365/days) − 1; ``annualised_volatility`` = std(r) √365;
        ``sharpe`` = mean(r)·365 / vol; ``sortino`` = mean(r)·365 / (√(mean(min(r,0)²)) √365);
        ``max_drawdown`` (fraction) with ``_peak``, ``_trough`` and ``_recovery`` dates; ``calmar`` =
        annualised return / max drawdown; ``turnover_per_year`` and ``cost_drag_bps_per_year`` (sums
        over the years of the window); ``realised_rrc`` per asset: the Euler decomposition of the
        realised variance, Cov(w_{t−1,i} r_{t,i}, r_p) / Var(r_p), summing to 1, and
        ``rrc_dispersion`` its standard deviation across the assets held at some point;
        ``vol_target_tracking_error``: RMS over days of (realised ``vol_window_days``-day annualised
        volatility − target).

    Raises
    ------
    ConfigError
        Fewer than 2 days, or a non-positive NAV.
    """
    v = np.asarray(nav, dtype=np.float64)
    if v.ndim != 1 or v.size < 2 or len(dates) != v.size:
        raise ConfigError(f"metrics need a NAV path of at least 2 days matching its dates, got {v.shape}")
    if not np.all(np.isfinite(v) & (v > 0)):
        raise ConfigError("NAV must be positive and finite on every day to compute returns")
    r = v[1:] / v[:-1] - 1.0
    days = max((dates[-1] - dates[0]).days, 1)
    years = days / DAYS_PER_YEAR
    ann_ret = float((v[-1] / v[0]) ** (1.0 / years) - 1.0)
    vol = float(np.std(r, ddof=1) * math.sqrt(DAYS_PER_YEAR)) if r.size > 1 else 0.0
    mean_ann = float(np.mean(r) * DAYS_PER_YEAR)
    downside = float(math.sqrt(np.mean(np.minimum(r, 0.0) ** 2)) * math.sqrt(DAYS_PER_YEAR))
    out: dict[str, Any] = {
        "start": dates[0].isoformat(), "end": dates[-1].isoformat(), "days": int(v.size),
        "total_return": float(v[-1] / v[0] - 1.0),
        "annualised_return": ann_ret,
        "annualised_volatility": vol,
        "sharpe": mean_ann / vol if vol > 0 else None,
        "sortino": mean_ann / downside if downside > 0 else None,
    }
    out.update(_max_drawdown(v, dates))
    out["calmar"] = ann_ret / out["max_drawdown"] if out["max_drawdown"] > 0 else None
    if turnover is not None:
        out["turnover_per_year"] = float(np.sum(turnover) / years)
    if costs is not None:
        out["cost_drag_bps_per_year"] = float(np.sum(costs) / years * BPS)
    if weights is not None and asset_returns is not None:
        w = np.asarray(weights, dtype=np.float64)
        ra = np.nan_to_num(np.asarray(asset_returns, dtype=np.float64)[1:])
        contrib = w[:-1] * ra
        rp = contrib.sum(axis=1)
        var = float(np.var(rp))
        held = np.flatnonzero(np.any(w > 0, axis=0))
        if var > 0 and held.size:
            cov_with_p = ((contrib - contrib.mean(axis=0)) * (rp - rp.mean())[:, None]).mean(axis=0)
            rrc = cov_with_p / var
            out["realised_rrc"] = rrc
            out["rrc_dispersion"] = float(np.std(rrc[held]))
    if vol_target is not None and r.size >= vol_window_days:
        windows = np.lib.stride_tricks.sliding_window_view(r, vol_window_days)
        realised = windows.std(axis=1, ddof=1) * math.sqrt(DAYS_PER_YEAR)
        out["vol_target"] = vol_target
        out["vol_target_tracking_error"] = float(np.sqrt(np.mean((realised - vol_target) ** 2)))
    return out


def strategy_result(run: StrategyRun, returns: FloatArray, rows: slice) -> StrategyResult:
    """Metrics and series of a finished replay; ``returns[rows]`` are the assets' returns of its days."""
    nav = np.array(run.nav)
    turnover = np.array(run.turnover)
    costs = np.array(run.fees) + np.array(run.impacts) + np.array(run.gas)
    weights = np.vstack(run.weights)
    metrics = compute_metrics(nav, run.dates, turnover=turnover, costs=costs, weights=weights,
                              asset_returns=returns[rows], vol_target=getattr(run.strategy, "vol_target", None))
    if "realised_rrc" in metrics:
        metrics["realised_rrc"] = {s: float(x) for s, x in zip(run.market.panel.symbols, metrics["realised_rrc"])
                                   if abs(x) > 0}
    taken = [d for d in run.decisions if d.status == "rebalanced"]
    metrics.update(
        rebalances=len(taken),
        ticks=len(run.decisions),
        fees_usd=float(sum(d.cost.fee for d in taken) / 10**BASE_DECIMALS),
        impact_usd=float(sum(d.cost.impact for d in taken) / 10**BASE_DECIMALS),
        gas_usd=float(sum(d.cost.gas for d in taken) / 10**BASE_DECIMALS),
        skipped_by_cost_gate=sum(1 for d in run.decisions if d.status == "skipped" and "not worth" in d.reason),
        final_nav_usd=float(nav[-1]),
        gate_counts={a: int(run.gate_counts.get(a, 0)) for a in ("accept", "shrink", "inverse_volatility", "hold")},
        allocation_fallbacks=run.allocation_fallbacks,
        es_limit_binding=run.es_limit_binding,
        policy_holds=run.policy_holds,
    )
    risk, stress = final_portfolio_risk(run, rows.stop - 1)
    if risk is not None:
        metrics["final_risk"] = risk.to_dict()
        var99, es99 = _risk_summary(risk, 0.99, 1)
        metrics.update(final_var_99_1d=var99, final_es_99_1d=es99)
    if stress is not None:
        metrics["final_stress"] = stress.to_dict()
        worst = stress.worst() if stress.results else None
        metrics.update(worst_stress=worst.name if worst else None,
                       worst_stress_loss=float(worst.total_loss) if worst else None)
    return StrategyResult(run.strategy.name, list(run.dates), nav, np.array(run.nav_vault), weights,
                          np.vstack(run.rrc), np.array(run.ex_ante_vol), run.decisions, metrics)


def _risk_summary(report: RiskReport, confidence: float, horizon_days: int) -> tuple[float | None, float | None]:
    for m in report.measures:
        if m.method == "historical" and m.confidence == confidence and m.horizon_days == horizon_days:
            return float(m.var), float(m.es)
    return None, None


def final_portfolio_risk(run: StrategyRun, t: int) -> tuple[RiskReport | None, StressReport | None]:
    """VaR/ES and stress tests of a replay's holdings at the close of row ``t`` (its last day).

    The risky holdings (fractions of NAV) of the assets active on row ``t``, measured on that day's
    estimation window: :func:`keeper.risk.risk_report` (historical and Cornish-Fisher on the window's
    daily returns, Gaussian on the gate's covariance; 95/99 %, 1 and 10 days) and
    :func:`keeper.stress.run_stress_tests` (the historical windows the panel covers, replayed on its own
    closes, the price shocks, and the stressed covariances), both with the vault NAV in base units.

    Returns
    -------
    (RiskReport or None, StressReport or None)
        The report holds every combination the window supports (a 10-day 99 % historical ES needs
        at least 109 daily returns); None when no asset is active on row ``t`` or none can be measured.
    """
    market = run.market
    universe = market.universe(t)
    if not universe or not run.weights:
        return None, None
    panel = market.panel
    symbols = tuple(panel.symbols[i] for i in universe)
    weights = np.clip(np.asarray(run.weights[-1], dtype=np.float64)[list(universe)], 0.0, None)
    nav_units = int(round(run.nav_vault[-1] * 10**BASE_DECIMALS))
    gate = market.gate(t, universe, run.config)
    covariance = gate.estimate.covariance if gate.estimate is not None else None
    window = panel.prices[t - market.lookback_days: t + 1][:, list(universe)]
    try:
        returns = simple_returns(window)
    except KeeperError:
        returns = None
    # One combination at a time: a short window cannot give a 10-day 99 % historical ES, but the rest stand.
    measures = []
    for method in RISK_METHODS:
        for confidence in DEFAULT_CONFIDENCES:
            for horizon in DEFAULT_HORIZONS_DAYS:
                try:
                    measures += risk_report(weights, returns, covariance=covariance, symbols=symbols,
                                            nav_base_units=nav_units, methods=(method,), confidences=(confidence,),
                                            horizons_days=(horizon,)).measures
                except KeeperError:
                    continue
    risk = RiskReport(symbols, weights, nav_units, tuple(measures),
                      "covariance" if covariance is not None else "returns") if measures else None
    history = CloseHistory(panel.dates, panel.symbols, panel.prices)
    # Only the historical windows the panel covers (a custom file may start later).
    windows = tuple(w for w in DEFAULT_WINDOWS if history.row(w.start) is not None and history.row(w.end) is not None)
    stress = run_stress_tests(weights, symbols, covariance, nav_base_units=nav_units, history=history,
                              windows=windows)
    return risk, stress


def asset_returns(prices: FloatArray) -> FloatArray:
    """Simple return of each asset into each row, shape of ``prices``; NaN on row 0 and around blanks."""
    out = np.full(prices.shape, np.nan)
    out[1:] = prices[1:] / prices[:-1] - 1.0
    return out


def replay_window(panel: PricePanel, start: dt.date | None, end: dt.date | None, lookback_days: int) -> tuple[int, int]:
    """First and last replayed rows. Without ``start``, the first row where some asset is active."""
    first = panel.index_on_or_after(start) if start else 0
    first = max(first, lookback_days)
    last = panel.index_on_or_before(end) if end else len(panel.dates) - 1
    if last - first < 1:
        raise ConfigError(
            f"window {start}..{end} leaves {max(last - first + 1, 0)} days after the {lookback_days}-day "
            f"warm-up (data {panel.dates[0]}..{panel.dates[-1]}): choose a later start or a longer window"
        )
    return first, last


def run_backtest(
    panel: PricePanel,
    strategies: Sequence[Strategy] | None = None,
    config: BacktestConfig | None = None,
    start: dt.date | None = None,
    end: dt.date | None = None,
    market: Market | None = None,
) -> dict[str, Any]:
    """Replays ``panel`` from ``start`` to ``end`` (inclusive) for each strategy side by side.

    Rows before ``start`` serve as the estimator's warm-up; the replay starts no earlier than row
    ``lookback_days``. Each strategy starts with ``initial_nav_usd`` in the base asset.

    Returns
    -------
    dict
        ``results`` (list of :class:`StrategyResult`), ``config``, ``symbols``, ``calendar_gaps``,
        ``seconds`` (wall time), ``days``, ``asset_days`` (days × assets with a close, per strategy)
        and ``speed_asset_days_per_second``.

    Raises
    ------
    ConfigError
        Bad window or configuration, or a strategy returning malformed weights.
    BacktestDataError
        A held asset has no close on a replayed day.
    """
    config = config or BacktestConfig()
    strategies = list(strategies) if strategies is not None else default_strategies()
    if not strategies:
        raise ConfigError("no strategy to backtest")
    names = [s.name for s in strategies]
    if len(set(names)) != len(names):
        raise ConfigError(f"strategy names must be unique, got {names}")
    market = market or Market(panel, config.lookback_days)
    first, last = replay_window(panel, start, end, config.lookback_days)
    returns = asset_returns(panel.prices)
    t0 = time.perf_counter()
    results = []
    for strategy in strategies:
        run = StrategyRun(market, strategy, config)
        for t in range(first, last + 1):
            run.step(t)
        results.append(strategy_result(run, returns, slice(first, last + 1)))
    seconds = time.perf_counter() - t0
    asset_days = int(np.isfinite(panel.prices[first: last + 1]).sum()) * len(strategies)
    return {
        "results": results,
        "symbols": panel.symbols,
        "calendar_gaps": [(a.isoformat(), b.isoformat()) for a, b in panel.calendar_gaps
                          if panel.dates[first] <= a and b <= panel.dates[last]],
        "seconds": seconds,
        "days": last - first + 1,
        "asset_days": asset_days,
        "speed_asset_days_per_second": asset_days / seconds if seconds > 0 else math.inf,
        "config": config,
    }


# --------------------------------------------------------------------------- #
# Output
# --------------------------------------------------------------------------- #
def _fmt(x: Any, pct: bool = False, digits: int = 2) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    return f"{x * 100:.1f}%" if pct else f"{x:.{digits}f}"


def format_table(results: Sequence[StrategyResult]) -> str:
    """A fixed-width text table of the main metrics, one row per strategy.

    Risk columns describe the final portfolio: ``ES99 1d`` its historical 99 % one-day Expected
    Shortfall and ``worst stress`` its largest stress-test loss (fractions of NAV). ``gate a/s/iv/h``
    counts the conditioning gate's accept / shrink / inverse-volatility / hold decisions over the
    ticks, ``fallbk`` the allocator's fallbacks and ``ES bind`` the ticks where the ES limit scaled the
    target down.
    """
    head = (f"{'strategy':<18}{'ann.ret':>9}{'ann.vol':>9}{'Sharpe':>8}{'Sortino':>9}{'maxDD':>8}"
            f"{'  DD peak -> trough':<26}{'Calmar':>8}{'turn/yr':>9}{'cost bps/yr':>12}{'RRC disp':>10}"
            f"{'volTE':>8}{'rebal':>7}{'ES99 1d':>9}{'worst stress':>26}{'  gate a/s/iv/h':<22}{'fallbk':>7}"
            f"{'ES bind':>8}")
    lines = [head, "-" * len(head)]
    for res in results:
        m = res.metrics
        g = m.get("gate_counts") or {}
        gates = "/".join(str(g.get(k, 0)) for k in ("accept", "shrink", "inverse_volatility", "hold"))
        worst = (f"{m['worst_stress'][:17]} {_fmt(m['worst_stress_loss'], True)}"
                 if m.get("worst_stress") else "n/a")
        lines.append(
            f"{res.name[:17]:<18}{_fmt(m['annualised_return'], True):>9}{_fmt(m['annualised_volatility'], True):>9}"
            f"{_fmt(m['sharpe']):>8}{_fmt(m['sortino']):>9}{_fmt(m['max_drawdown'], True):>8}"
            f"  {m['max_drawdown_peak']} -> {m['max_drawdown_trough']:<10}{_fmt(m['calmar']):>8}"
            f"{_fmt(m.get('turnover_per_year')):>9}{_fmt(m.get('cost_drag_bps_per_year'), digits=1):>12}"
            f"{_fmt(m.get('rrc_dispersion'), digits=3):>10}{_fmt(m.get('vol_target_tracking_error'), True):>8}"
            f"{m['rebalances']:>7}{_fmt(m.get('final_es_99_1d'), True):>9}{worst:>26}  {gates:<20}"
            f"{m.get('allocation_fallbacks', 0):>7}{m.get('es_limit_binding', 0):>8}"
        )
    return "\n".join(lines)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (dt.date,)):
        return value.isoformat()
    if hasattr(value, "__dataclass_fields__"):
        return {k: _jsonable(getattr(value, k)) for k in value.__dataclass_fields__ if k != "estimator"}
    return value


def write_outputs(run: dict[str, Any], out_dir: Path, data_file: Path | None = None,
                  journal: bool = True) -> dict[str, Any]:
    """Writes ``backtest.json``, ``backtest.txt``, four PNG charts and (optionally) the decisions to a
    SQLite journal (:class:`keeper.journal.Journal`) in ``out_dir``. Returns the JSON document."""
    out_dir.mkdir(parents=True, exist_ok=True)
    results: list[StrategyResult] = run["results"]
    symbols = run["symbols"]
    table = format_table(results)
    files = []
    doc = {
        "data_file": str(data_file) if data_file else None,
        "symbols": list(symbols),
        "days": run["days"],
        "calendar_gaps": run["calendar_gaps"],
        "seconds": run["seconds"],
        "speed_asset_days_per_second": run["speed_asset_days_per_second"],
        "config": _jsonable(run["config"]),
        "strategies": [
            {
                "name": r.name,
                "metrics": _jsonable(r.metrics),
                "decisions": [_jsonable(d.as_dict()) for d in r.decisions if d.reason != "no trigger fired"],
                "ticks_without_trigger": sum(1 for d in r.decisions if d.reason == "no trigger fired"),
            }
            for r in results
        ],
        "series": {
            "dates": [d.isoformat() for d in results[0].dates],
            "nav_usd": {r.name: r.nav.tolist() for r in results},
            "weights": {r.name: {s: r.weights[:, i].round(6).tolist() for i, s in enumerate(symbols)
                                 if np.any(r.weights[:, i] > 0)} for r in results},
        },
        "table": table,
    }
    (out_dir / "backtest.json").write_text(json.dumps(_jsonable(doc), indent=1))
    (out_dir / "backtest.txt").write_text(table + "\n")
    files += [str(out_dir / "backtest.json"), str(out_dir / "backtest.txt")]
    files += _charts(results, symbols, out_dir)
    if journal:
        files.append(_journal(results, out_dir / "backtest-journal.sqlite"))
    doc["files"] = files
    return doc


def _journal_policy(record: DecisionRecord) -> dict[str, Any] | None:
    """The policy's record for the journal: in full when a trigger fired or the policy held, else the
    gate's and allocator's verdicts only (most ticks; the full record is recomputable from the data)."""
    p = record.policy
    if p is None:
        return None
    if record.reason != "no trigger fired":
        return p.as_dict(covariance=False)
    return {"action": p.action, "gate_action": p.gate_action, "allocation_method": p.allocation_method,
            "fallback_reasons": list(p.fallback_reasons), "es_scale": p.es_scale,
            "ex_ante_volatility": _jsonable(p.ex_ante_volatility)}


def _journal(results: Sequence[StrategyResult], path: Path) -> str:
    from keeper.journal import Journal

    for suffix in ("", "-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    j = Journal(path, durable=False)  # a backtest's output file, rebuilt on every run: no fsync per row
    try:
        for r in results:
            for d in r.decisions:
                j.record(d.status, d.reason, strategy=r.name, date=d.date.isoformat(),
                         trigger=d.decision.as_dict() if d.decision else None, legs=d.legs,
                         turnover_bps=d.turnover_bps, cost=d.cost.as_dict() if d.cost else None,
                         target_weights=d.target_weights, policy=_journal_policy(d))
    finally:
        j.close()
    return str(path)


def _charts(results: Sequence[StrategyResult], symbols: Sequence[str], out_dir: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dates = np.array(results[0].dates, dtype="datetime64[D]")
    # Stacked areas of thousands of days gain nothing visible over one point in ``step``.
    step = max(1, len(dates) // 800)
    files = []
    fig, ax = plt.subplots(figsize=(11, 5))
    for r in results:
        ax.plot(dates, r.nav / r.nav[0], label=r.name, lw=1.2)
    ax.set_yscale("log")
    ax.set_title("NAV (start = 1, log scale), net of fees, price impact and gas")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    files.append(_save(fig, out_dir / "backtest_nav.png"))

    fig, ax = plt.subplots(figsize=(11, 4))
    for r in results:
        ax.plot(dates, r.nav / np.maximum.accumulate(r.nav) - 1.0, label=r.name, lw=1)
    ax.set_title("Drawdown")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    files.append(_save(fig, out_dir / "backtest_drawdown.png"))

    shown = [r for r in results if np.count_nonzero(np.any(r.weights > 0, axis=0)) > 1][:4] or list(results[:1])
    for attr, title, name in (("weights", "Weights (NAV fractions; white = base asset)", "backtest_weights.png"),
                              ("rrc", "Ex-ante relative risk contributions of the holdings", "backtest_rrc.png")):
        fig, axes = plt.subplots(len(shown), 1, figsize=(11, 2.6 * len(shown)), sharex=True, squeeze=False)
        for ax, r in zip(axes[:, 0], shown):
            data = getattr(r, attr)
            cols = [i for i in range(len(symbols)) if np.any(data[:, i] > 0)]
            if not cols:  # held nothing but the base asset
                ax.set_ylabel(r.name, fontsize=8)
                continue
            ax.stackplot(dates[::step], *(data[::step, i] for i in cols), labels=[symbols[i] for i in cols])
            ax.set_ylim(0, 1)
            ax.set_ylabel(r.name, fontsize=8)
            ax.legend(fontsize=6, loc="upper left", ncol=len(cols))
        axes[0, 0].set_title(title)
        files.append(_save(fig, out_dir / name))
    return files


def _save(fig, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return str(path)
