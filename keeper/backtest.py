"""``keeper backtest``: offline replay of daily closes through the live keeper's decision code.

No chain: each day the replay values the holdings at the oracle exactly as the vault does
(:func:`keeper.planner.value_of`), and on each tick runs the live pipeline's stages on the
information available that day:

estimator (:func:`keeper.estimation.ewma_covariance` of :func:`~keeper.estimation.simple_returns`,
the window the oracle reader would return) → strategy (target NAV fractions, e.g. the ERC solution of
:func:`keeper.optimizer.solve_equal_risk_contribution`) → planner
(:func:`keeper.planner.plan_rebalance`, the same integer legs) → triggers
(:func:`keeper.triggers.check_triggers`) → quotes from a cost model of the pools
(:mod:`keeper.costs`; halving the step when a quote misses ``minAmountOut``, as the runner does) →
cost gate (:func:`keeper.triggers.apply_cost_gate`) → execution at the modelled pool outputs.

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
from typing import Any, Callable, Mapping, Protocol, Sequence

import numpy as np
import numpy.typing as npt

from keeper.build import PROJECT_ROOT
from keeper.costs import GasModel, LegQuote, PoolModel, TradeCost, quote_leg, rebalance_cost
from keeper.deployment import price_to_answer
from keeper.errors import BacktestDataError, ConfigError, InvalidPriceError, KeeperError
from keeper.estimation import CovarianceEstimate, ewma_covariance, simple_returns
from keeper.optimizer import (
    equal_weights,
    inverse_volatility_weights,
    portfolio_volatility,
    relative_risk_contributions,
    solve_equal_risk_contribution,
)
from keeper.oracle import PriceSnapshot, RiskAssetInfo, VaultState
from keeper.planner import RebalancePlan, plan_rebalance, value_of
from keeper.triggers import (
    TriggerDecision,
    TriggerPolicy,
    apply_cost_gate,
    check_triggers,
    expected_risk_benefit,
    weight_drift_bps,
)

__all__ = [
    "DEFAULT_BACKTEST_CSV",
    "PricePanel",
    "load_price_panel",
    "DecisionContext",
    "Allocation",
    "Strategy",
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
    "replay_window",
    "compute_metrics",
    "format_table",
    "write_outputs",
]

FloatArray = npt.NDArray[np.float64]
BPS = 10_000
DAYS_PER_YEAR = 365
SECONDS_PER_DAY = 86_400
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
        The estimator's output on that window (annualised, 365-day year).
    """

    date: dt.date
    symbols: tuple[str, ...]
    prices_usd: FloatArray
    history_usd: FloatArray
    estimate: CovarianceEstimate

    @property
    def covariance(self) -> FloatArray:
        return self.estimate.covariance


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
    """A callable from a :class:`DecisionContext` to an :class:`Allocation` over ``ctx.symbols``."""

    name: str

    def __call__(self, ctx: DecisionContext) -> Allocation: ...


def vol_target_scale(sleeve_weights: npt.ArrayLike, covariance: npt.ArrayLike, vol_target: float,
                     invested_fraction: float = 1.0) -> float:
    """Volatility-targeting scale of the risky sleeve: ``min(1, σ* / σ_ex-ante)``.

    .. math:: s = \\min\\left(1, \\frac{\\sigma^*}{f \\sqrt{w^\\top \\Sigma w}}\\right)

    with :math:`w` the sleeve weights (sum to 1), :math:`f` the fraction of NAV invested before
    scaling (1 − cash buffer) and :math:`\\sigma^*` the annualised target; the scaled-out part goes
    to the base asset, so the portfolio's ex-ante volatility is :math:`\\min(\\sigma^*, f\\sigma_w)`.

    Raises
    ------
    ConfigError
        ``vol_target`` not finite and > 0.
    """
    if not (math.isfinite(vol_target) and vol_target > 0):
        raise ConfigError(f"vol_target must be an annualised volatility > 0 (e.g. 0.4), got {vol_target!r}")
    sigma = invested_fraction * portfolio_volatility(sleeve_weights, covariance)
    return min(1.0, vol_target / sigma) if sigma > 0 else 1.0


@dataclass(frozen=True)
class RiskParity:
    """Risk budgeting (ERC by default) on the active universe, optional volatility target.

    Attributes
    ----------
    cash_buffer_bps : float
        NAV kept in the base asset (the vault's withdrawal buffer), bps.
    vol_target : float or None
        Annualised portfolio volatility target (:func:`vol_target_scale`); ``None``: fully invested.
    risk_budget : mapping of symbol to float, optional
        Relative budgets (renormalised over the active assets); equal by default.
    """

    name: str = "ERC"
    cash_buffer_bps: float = 500.0
    vol_target: float | None = None
    risk_budget: Mapping[str, float] | None = None

    def __call__(self, ctx: DecisionContext) -> FloatArray:
        budget = None
        if self.risk_budget is not None:
            b = np.array([self.risk_budget.get(s, 0.0) for s in ctx.symbols], dtype=np.float64)
            if b.sum() <= 0 or np.any(b <= 0):
                raise ConfigError(f"risk_budget {dict(self.risk_budget)} must give every asset of {ctx.symbols} > 0")
            budget = b / b.sum()
        w = solve_equal_risk_contribution(ctx.covariance, budget).weights
        invested = 1.0 - self.cash_buffer_bps / BPS
        if self.vol_target is not None:
            invested *= vol_target_scale(w, ctx.covariance, self.vol_target, invested)
        return Allocation(np.asarray(w), invested)


@dataclass(frozen=True)
class InverseVolatility:
    """Weights ∝ 1/σ_i (:func:`keeper.optimizer.inverse_volatility_weights`), cash buffer kept."""

    name: str = "inverse-vol"
    cash_buffer_bps: float = 500.0

    def __call__(self, ctx: DecisionContext) -> FloatArray:
        return Allocation(inverse_volatility_weights(ctx.covariance), 1.0 - self.cash_buffer_bps / BPS)


@dataclass(frozen=True)
class EqualWeight:
    """1/n of the invested NAV per active asset, cash buffer kept."""

    name: str = "equal weight"
    cash_buffer_bps: float = 500.0

    def __call__(self, ctx: DecisionContext) -> FloatArray:
        return Allocation(equal_weights(len(ctx.symbols)), 1.0 - self.cash_buffer_bps / BPS)


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

    def __call__(self, ctx: DecisionContext) -> FloatArray:
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
    full-range pool of that TVL would be shallower). ``estimator``, when given, replaces the EWMA
    estimator: a callable from daily simple returns,
    shape (lookback_days, n), to a :class:`~keeper.estimation.CovarianceEstimate`.
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
    estimator: Callable[[FloatArray], CovarianceEstimate] | None = None

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
        self._estimates: dict[tuple, CovarianceEstimate | KeeperError] = {}
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

    def estimate(self, t: int, universe: tuple[int, ...], config: BacktestConfig) -> CovarianceEstimate:
        """The estimator on the window of rows ``t − lookback .. t`` (cached; failures re-raised)."""
        key = (t, universe, config.half_life_days, config.min_observations, config.periods_per_year,
               id(config.estimator) if config.estimator else None)
        cached = self._estimates.get(key)
        if cached is None:
            window = self.panel.prices[t - self.lookback_days: t + 1][:, list(universe)]
            try:
                returns = simple_returns(window)
                if config.estimator is not None:
                    cached = config.estimator(returns)
                else:
                    cached = ewma_covariance(returns, config.half_life_days, periods_per_year=config.periods_per_year,
                                             min_observations=config.min_observations)
            except KeeperError as exc:
                cached = exc
            self.estimator_calls += 1
            self._estimates[key] = cached
        if isinstance(cached, KeeperError):
            raise cached
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

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"date": self.date.isoformat(), "status": self.status, "reason": self.reason,
                               "legs": self.legs, "turnover_bps": self.turnover_bps}
        if self.decision is not None:
            out["metrics"] = self.decision.metrics
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

    def _skip(self, t: int, reason: str, decision: TriggerDecision | None = None) -> None:
        self.decisions.append(DecisionRecord(self.market.panel.dates[t], "skipped", reason, decision))

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
        try:
            estimate = market.estimate(t, universe, cfg)
        except KeeperError as exc:
            self._skip(t, f"{type(exc).__name__}: {exc}")
            return None
        symbols = tuple(market.panel.symbols[i] for i in universe)
        window = market.panel.prices[t - market.lookback_days: t + 1][:, list(universe)]
        ctx = DecisionContext(date, symbols, window[-1].copy(), window, estimate)
        try:
            allocation = self.strategy(ctx)
        except KeeperError as exc:
            self._skip(t, f"{type(exc).__name__}: {exc}")
            return estimate
        sleeve = np.asarray(allocation.sleeve_weights, dtype=np.float64)
        invested = float(allocation.invested_fraction)
        if sleeve.shape != (len(universe),) or not np.all(np.isfinite(sleeve)) or np.any(sleeve < 0) \
                or abs(sleeve.sum() - 1.0) > 1e-6 or not 0.0 <= invested <= 1.0:
            raise ConfigError(f"strategy {self.strategy.name!r} returned {allocation!r} for {symbols}: expected "
                              f"{len(universe)} non-negative sleeve weights summing to 1 and an invested "
                              "fraction in [0, 1]")
        target = sleeve * invested
        cash_buffer_bps = (1.0 - invested) * BPS

        infos = [self._info(i) for i in universe]
        answers = tuple(market.answer(t, i) for i in universe)
        balances = tuple(self.balances[i] for i in universe)
        values = [value_of(b, a, info, BASE_DECIMALS) for b, a, info in zip(balances, answers, infos)]
        nav = self.base_balance + sum(values)
        if nav == 0:
            self._skip(t, "vault is empty")
            return estimate
        # The planner's holdings weights, targets and drift, to the bit (see keeper.planner.plan_rebalance),
        # so that the planner runs only when a trigger fires.
        current = np.array(values, dtype=np.float64) / nav
        risky_fraction = 1.0 - cash_buffer_bps / BPS
        target_nav = sleeve * risky_fraction
        drift = weight_drift_bps(current, target_nav, self.base_balance / nav, 1.0 - risky_fraction)

        reference_cov = None
        universe_changed = False
        if self.reference is not None:
            ref_universe, ref_cov = self.reference
            universe_changed = ref_universe != universe
            reference_cov = None if universe_changed else ref_cov
        days = None if self.last_rebalance is None else float((date - self.last_rebalance).days)
        policy = cfg.policy
        signals = check_triggers(policy, drift_bps=drift, current_weights=current, target_weights=target_nav,
                                 covariance=estimate.covariance, reference_covariance=reference_cov,
                                 days_since_rebalance=days, universe_changed=universe_changed and bool(held))
        if not signals.fired:
            self._skip(t, "no trigger fired", TriggerDecision(False, ("no trigger fired",), dict(signals.metrics)))
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
        benefit = expected_risk_benefit(plan.current_weights, post, plan.target_weights, estimate.covariance,
                                        nav, policy.risk_aversion, policy.horizon_days)
        decision = apply_cost_gate(policy, signals, benefit=benefit, cost=cost.total, cost_breakdown=cost.as_dict())
        targets = {s: float(x) for s, x in zip(symbols, target)}
        if not decision.rebalance:
            self.decisions.append(DecisionRecord(date, "skipped", decision.reason, decision, len(plan.legs),
                                                 plan.turnover_bps, cost, targets))
            return estimate
        for i, b in zip(universe, new_balances):
            self.balances[i] = b
        self.base_balance = new_base
        self.epoch += 1
        self.gas_paid += cost.gas
        self.last_rebalance = date
        self.reference = (universe, np.array(estimate.covariance))
        self.decisions.append(DecisionRecord(date, "rebalanced", decision.reason, decision, len(plan.legs),
                                             plan.turnover_bps, cost, targets))
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
    )
    return StrategyResult(run.strategy.name, list(run.dates), nav, np.array(run.nav_vault), weights,
                          np.vstack(run.rrc), np.array(run.ex_ante_vol), run.decisions, metrics)


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
    """A fixed-width text table of the main metrics, one row per strategy."""
    head = (f"{'strategy':<18}{'ann.ret':>9}{'ann.vol':>9}{'Sharpe':>8}{'Sortino':>9}{'maxDD':>8}"
            f"{'  DD peak -> trough':<26}{'Calmar':>8}{'turn/yr':>9}{'cost bps/yr':>12}{'RRC disp':>10}"
            f"{'volTE':>8}{'rebal':>7}")
    lines = [head, "-" * len(head)]
    for res in results:
        m = res.metrics
        lines.append(
            f"{res.name[:17]:<18}{_fmt(m['annualised_return'], True):>9}{_fmt(m['annualised_volatility'], True):>9}"
            f"{_fmt(m['sharpe']):>8}{_fmt(m['sortino']):>9}{_fmt(m['max_drawdown'], True):>8}"
            f"  {m['max_drawdown_peak']} -> {m['max_drawdown_trough']:<10}{_fmt(m['calmar']):>8}"
            f"{_fmt(m.get('turnover_per_year')):>9}{_fmt(m.get('cost_drag_bps_per_year'), digits=1):>12}"
            f"{_fmt(m.get('rrc_dispersion'), digits=3):>10}{_fmt(m.get('vol_target_tracking_error'), True):>8}"
            f"{m['rebalances']:>7}"
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


def _journal(results: Sequence[StrategyResult], path: Path) -> str:
    from keeper.journal import Journal

    for suffix in ("", "-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    j = Journal(path)
    # A backtest's output file, rebuilt on every run: no need to fsync each row.
    j.conn.execute("PRAGMA synchronous=OFF")
    try:
        for r in results:
            for d in r.decisions:
                j.record(d.status, d.reason, strategy=r.name, date=d.date.isoformat(),
                         trigger=d.decision.as_dict() if d.decision else None, legs=d.legs,
                         turnover_bps=d.turnover_bps, cost=d.cost.as_dict() if d.cost else None,
                         target_weights=d.target_weights)
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
