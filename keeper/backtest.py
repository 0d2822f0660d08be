"""``keeper backtest``: offline replay of closes (any regular bar: daily, hourly, ...) through the live keeper's
decision code.

No chain: each day the replay values the holdings at the oracle exactly as the vault does
(:func:`keeper.planner.value_of`), and on each tick runs the live pipeline's stages on the
information available that day:

decision policy (:func:`keeper.policy.decide_targets`: the conditioning gate of
:func:`keeper.conditioning_gate.gated_covariance` on the :func:`~keeper.returns.simple_returns` of the window
the oracle reader would return, the allocator :func:`keeper.allocation.allocate` with its volatility
target, cash sleeve and fallback chain, and the Expected Shortfall limit of
:func:`keeper.es_limit.enforce_es_limit`) → planner (:func:`keeper.planner.plan_rebalance`, the same integer
legs) → triggers (:func:`keeper.policy.policy_triggers`) → quotes from a cost model of the pools
(:mod:`keeper.costs`; halving the step when a quote misses ``minAmountOut``, as the runner does) →
cost gate (:func:`keeper.policy.evaluate_trade`) → execution at the modelled pool outputs.

The ERC, ERC-with-volatility-target, inverse-volatility and equal-weight strategies are
:class:`~keeper.policy_config.PolicyConfig` variants run by that one policy; the fixed-mix benchmarks (BTC
only, 60/40 BTC/stable) hold fixed NAV fractions through the same planner, triggers and cost gate.
Each strategy's gate actions, allocator fallbacks and ES-limit scalings are counted, and its final
portfolio gets a VaR/ES report (:func:`keeper.risk_report.risk_report`) and the stress tests of
:func:`keeper.stress.run_stress_tests`.

Data: a CSV read by :func:`keeper.price_panel.read_price_csv` (a ``date`` column of days, or a time column of
ISO 8601 date-times; the bar interval is inferred from the rows and checked), one USD close column per asset (the
shipped ``data/crypto_daily_close_binance.csv`` by default). The bar sets the time units: ``lookback_days``,
``half_life_days`` and ``rebalance_every_days`` are days turned into bars (×24 for hourly bars), covariances are
annualised with 365 days / ``bar_seconds`` bars a year, the time trigger and the cost gate's horizon are seconds.
Blank cells mean "no close": an asset enters the universe once it has a full window of consecutive closes;
nothing is forward-filled, and a blank close of an asset the portfolio holds is an error (the holding cannot be
valued). Calendar gaps (bars missing for every asset) are reported: the return across a gap spans several bars.

Metrics use a 365-day year: annualised return (geometric, over the elapsed time), volatility (bar returns ×
√(bars a year)),
Sharpe and Sortino (zero risk-free rate), maximum drawdown with its peak, trough and recovery dates,
Calmar, turnover (Σ leg values / NAV per year, the vault's two-sided definition), cost drag (fees,
impact and gas per year, bps of NAV), realised risk-contribution dispersion and vol-target
tracking error (definitions in :func:`compute_metrics`).
"""

from __future__ import annotations
import datetime as dt
import math
import time
from dataclasses import dataclass, field, replace
from collections import Counter
from typing import Any, Mapping, Sequence
import numpy as np
import numpy.typing as npt
from keeper.deployment import BASE_DECIMALS, FEED_DECIMALS, RISK_DECIMALS
from keeper.costs import GasModel, LegQuote, PoolModel, TradeCost, quote_leg, rebalance_cost
from keeper.deployment import VOL_FEED_DECIMALS, price_to_answer, vol_to_answer
from keeper.hedging import HedgeTriggerConfig
from keeper.overlay import OverlayConfig
from keeper.implied_vol import ImpliedVolSeries
from keeper.option_model import ModelOptionQuoter, OptionBookModel, OptionMarketModel, SettlementPrices
from keeper.decision import OptionsInputs, TradeLimits, decide_rebalance
from keeper.errors import BacktestDataError, ConfigError, InvalidPriceError, KeeperError, QuoteBelowBoundError
from keeper.covariance import CovarianceEstimate, EstimatorConfig
from keeper.conditioning_gate import GateDecision, gated_covariance
from keeper.returns import simple_returns
from keeper.risk_contributions import portfolio_volatility, relative_risk_contributions
from keeper.oracle import PriceSnapshot, RiskAssetInfo, VaultState
from keeper.planner import RebalancePlan, value_of
from keeper.policy_decision import LastRebalance, PolicyDecision
from keeper.policy_config import PolicyConfig
from keeper.policy import fixed_target
from keeper.triggers import TriggerDecision, TriggerPolicy
from keeper.units import BPS, SECONDS_PER_DAY, SECONDS_PER_YEAR
from keeper.price_panel import PricePanel, bars_for_seconds
from keeper.strategies import DecisionContext, Strategy, default_strategies
from keeper.backtest_metrics import strategy_result

__all__ = [
    "VaultLimits",
    "BacktestOptions",
    "BacktestConfig",
    "Market",
    "DecisionRecord",
    "StrategyRun",
    "ModelQuoter",
    "run_backtest",
    "asset_returns",
    "replay_window",
]

FloatArray = npt.NDArray[np.float64]


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
class BacktestOptions:
    """The option book of an options strategy (:class:`RiskParity` with ``with_options=True``).

    Attributes
    ----------
    implied_vols : mapping of symbol to ImpliedVolSeries
        Daily annualised implied vol per asset (the demo's inputs: DVOL for BTC, the stated realised-vol proxy
        for the others, :func:`keeper.implied_vol.demo_implied_vols`).
    market : OptionMarketModel
        The market's spread, feed steps and the vault's option limits.
    overlay : OverlayConfig
    hedge_trigger : HedgeTriggerConfig
    decision_offset_seconds : int
        Seconds after each close at which the keeper decides (the demo's block one hour after the close).
    """

    implied_vols: Mapping[str, ImpliedVolSeries]
    market: OptionMarketModel = field(default_factory=OptionMarketModel)
    overlay: OverlayConfig = field(default_factory=OverlayConfig)
    hedge_trigger: HedgeTriggerConfig = field(default_factory=HedgeTriggerConfig)
    decision_offset_seconds: int = 3600


@dataclass(frozen=True)
class BacktestConfig:
    """Parameters of a backtest; the keeper's own fields keep their names and units.

    ``pools`` defaults to 0.05% pools with a 250M USD full-range-equivalent base-side depth (the
    effective depth of the concentrated liquidity of major Uniswap V3 pools near the price; a
    full-range pool of that TVL would be shallower).

    Time: ``bar_seconds`` is the data's bar (:func:`run_backtest` takes it from the panel); ``lookback_days``,
    ``half_life_days`` and ``rebalance_every_days`` are days (turned into bars: :attr:`lookback_bars`,
    :attr:`tick_every_bars`, unless ``rebalance_every_bars`` is given), ``periods_per_year`` follows the bar.

    The decision policy's fields (:meth:`policy_config`): ``estimator_method`` with ``half_life_days``
    (EWMA only), ``min_observations`` (returns) and ``periods_per_year`` make the
    :class:`~keeper.covariance.EstimatorConfig`; ``max_condition_number`` is the conditioning gate's
    limit; ``es_limit`` (fraction of NAV, ``None``: no limit) with ``es_method``, ``es_confidence`` and
    ``es_horizon_days`` the pre-trade Expected Shortfall limit; ``policy`` the triggers and cost gate.
    The allocator, cash buffer and volatility target are each strategy's own.
    """

    half_life_days: float = 30.0
    lookback_days: int = 180
    min_observations: int = 30
    bar_seconds: int = SECONDS_PER_DAY
    rebalance_every_days: float = 1
    rebalance_every_bars: int | None = None
    initial_nav_usd: float = 1_000_000.0
    slippage_budget_bps: float = 50.0
    max_step_halvings: int = 2
    min_trade_usd: float = 10.0
    policy: TriggerPolicy = field(default_factory=lambda: TriggerPolicy(
        weight_drift_bps=300.0, rrc_band=0.05, regime_distance=0.25, max_seconds_between=30.0 * SECONDS_PER_DAY,
        cost_aware=True))
    pools: PoolModel = field(default_factory=lambda: PoolModel(depth_usd=250_000_000.0))
    gas: GasModel = field(default_factory=GasModel)
    limits: VaultLimits = field(default_factory=VaultLimits)
    estimator_method: str = "ewma"
    max_condition_number: float = 1e10
    es_limit: float | None = None
    es_method: str = "historical"
    es_confidence: float = 0.99
    es_horizon_days: int = 1
    #: The option book of strategies run ``with_options`` (None: spot only).
    options: BacktestOptions | None = None

    @property
    def periods_per_year(self) -> int:
        """Bars per 365-day year (365 for daily bars, 8,760 for hourly)."""
        return SECONDS_PER_YEAR // self.bar_seconds

    @property
    def lookback_bars(self) -> int:
        """Returns in an estimation window: ``lookback_days`` of bars (a window holds one price more)."""
        return bars_for_seconds(self.lookback_days * SECONDS_PER_DAY, self.bar_seconds)

    @property
    def tick_every_bars(self) -> int:
        """Bars between two ticks: ``rebalance_every_bars``, else ``rebalance_every_days`` of bars."""
        if self.rebalance_every_bars is not None:
            return self.rebalance_every_bars
        return bars_for_seconds(self.rebalance_every_days * SECONDS_PER_DAY, self.bar_seconds)

    def for_panel(self, panel: PricePanel) -> "BacktestConfig":
        """This config at ``panel``'s bar interval (the data decides the bar)."""
        return self if panel.bar_seconds == self.bar_seconds else replace(self, bar_seconds=panel.bar_seconds)

    def estimator_config(self) -> EstimatorConfig:
        """The :class:`~keeper.covariance.EstimatorConfig` of these fields (missing data raise: the
        active universe only holds assets with a full window).

        Raises
        ------
        EstimatorConfigError
            An unknown method or a bad half-life.
        """
        return EstimatorConfig(
            method=self.estimator_method,
            half_life_days=self.half_life_days if self.estimator_method in ("ewma", "garch") else None,
            periods_per_year=self.periods_per_year,
            min_observations=self.min_observations,
        )

    def policy_config(self) -> PolicyConfig:
        """The replay's :class:`~keeper.policy_config.PolicyConfig` (allocator and cash buffer at their defaults;
        strategies override them).

        Raises
        ------
        ConfigError
            A field out of range (the pydantic message names it).
        """
        p = self.policy
        try:
            return PolicyConfig(
                estimator=self.estimator_config(), lookback_days=self.lookback_days, bar_seconds=self.bar_seconds,
                max_condition_number=self.max_condition_number,
                es_limit=self.es_limit, es_method=self.es_method, es_confidence=self.es_confidence,
                es_horizon_days=self.es_horizon_days, weight_drift_bps=p.weight_drift_bps, rrc_band=p.rrc_band,
                rrc_budget_band=p.rrc_budget_band,
                regime_distance=p.regime_distance, max_seconds_between=p.max_seconds_between,
                cost_aware=p.cost_aware, risk_aversion=p.risk_aversion, benefit_horizon_seconds=p.horizon_seconds,
                min_benefit_to_cost=p.min_benefit_to_cost, es_trigger_tolerance=p.es_trigger_tolerance,
            )
        except ValueError as exc:  # pydantic's ValidationError
            raise ConfigError(f"invalid backtest policy: {exc}") from exc

    def __post_init__(self) -> None:
        if SECONDS_PER_YEAR % self.bar_seconds if self.bar_seconds > 0 else True:
            raise ConfigError(f"bar_seconds must be a positive divisor of a 365-day year ({SECONDS_PER_YEAR} s), "
                              f"e.g. 3600 or 86400; got {self.bar_seconds}")
        if self.lookback_days < 3 or self.min_observations < 2 or self.min_observations > self.lookback_bars:
            raise ConfigError(
                f"need lookback_days >= 3 and 2 <= min_observations <= the window's {self.lookback_bars} returns "
                f"(lookback_days of {self.bar_seconds}-second bars), got {self.lookback_days} and "
                f"{self.min_observations}"
            )
        if not (self.rebalance_every_days > 0 and math.isfinite(self.rebalance_every_days)) or (
                self.rebalance_every_bars is not None and self.rebalance_every_bars < 1):
            raise ConfigError(f"rebalance_every_days must be > 0 and rebalance_every_bars >= 1, got "
                              f"{self.rebalance_every_days} and {self.rebalance_every_bars}")
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
        Days of the estimation window; ``lookback_bars`` = that many days of the panel's bars. An asset is
        active on row t when its closes on rows ``t − lookback_bars .. t`` are all present.
    """

    def __init__(self, panel: PricePanel, lookback_days: int) -> None:
        self.panel = panel
        self.lookback_days = lookback_days
        self.lookback_bars = panel.bars(lookback_days)
        prices = panel.prices
        valid = np.isfinite(prices)
        # Consecutive valid closes ending at each row (vectorised run length).
        run = np.zeros(prices.shape, dtype=np.int64)
        count = np.zeros(prices.shape[1], dtype=np.int64)
        for t in range(prices.shape[0]):
            count = np.where(valid[t], count + 1, 0)
            run[t] = count
        self.active = run >= self.lookback_bars + 1
        self._answers: dict[int, list[int | None]] = {}
        self._universes: dict[int, tuple[int, ...]] = {}
        self._returns: dict[tuple[int, tuple[int, ...]], tuple[FloatArray, FloatArray | InvalidPriceError]] = {}
        self._gates: dict[tuple, GateDecision] = {}
        self.eth_index = panel.symbols.index("ETH") if "ETH" in panel.symbols else None
        self.estimator_calls = 0

    def answers(self, t: int) -> list[int | None]:
        """Feed answers (8 decimals) of row t's closes, as the demo pushes them; None where there is no close
        (computed once per row and shared by every strategy; callers must not mutate the list)."""
        row = self._answers.get(t)
        if row is None:
            row = self._answers[t] = [price_to_answer(p) if math.isfinite(p) else None
                                      for p in self.panel.prices[t].tolist()]
        return row

    def answer(self, t: int, i: int) -> int:
        """Feed answer (8 decimals) of asset i's close on row t, as the demo pushes it.

        Raises
        ------
        BacktestDataError
            Asset i has no close on row t.
        """
        value = self.answers(t)[i]
        if value is None:
            raise BacktestDataError(
                f"{self.panel.symbols[i]} has no close on {self.panel.label(t)} but is needed that bar: "
                "fill the gap in the CSV or drop the asset (closes are never forward-filled)"
            )
        return value

    def universe(self, t: int) -> tuple[int, ...]:
        """Indices of the assets active on row t (a full window of consecutive closes), ascending."""
        cached = self._universes.get(t)
        if cached is None:
            cached = self._universes[t] = tuple(int(i) for i in np.flatnonzero(self.active[t]))
        return cached

    def window(self, t: int, universe: tuple[int, ...]) -> tuple[FloatArray, FloatArray | InvalidPriceError]:
        """Closes of rows ``t − lookback .. t`` of ``universe``'s assets, shape (lookback_bars + 1, n), and their
        :func:`~keeper.returns.simple_returns` (or the :class:`~keeper.errors.InvalidPriceError` it raised).

        Computed once per row and universe and shared by every strategy of the day, so both arrays are
        read-only. Only the latest row is kept (the replay advances every strategy one row at a time).
        """
        key = (t, universe)
        cached = self._returns.get(key)
        if cached is None:
            if len(self._returns) > 8:
                self._returns.clear()
            window = self.panel.prices[t - self.lookback_bars: t + 1][:, list(universe)]
            window.setflags(write=False)
            try:
                returns: FloatArray | InvalidPriceError = simple_returns(window)
                returns.setflags(write=False)  # type: ignore[union-attr]
            except InvalidPriceError as exc:
                returns = exc
            cached = self._returns[key] = (window, returns)
        return cached

    def gate(self, t: int, universe: tuple[int, ...], config: BacktestConfig) -> GateDecision:
        """The conditioning gate (:func:`keeper.conditioning_gate.gated_covariance`) on the returns of rows
        ``t − lookback .. t`` under ``config``'s estimator and limit (cached: one per day and setting,
        shared by every strategy). Data problems are a ``"hold"`` with the reason, never raised.
        """
        key = (t, universe, config.estimator_method, config.half_life_days, config.min_observations,
               config.periods_per_year, config.max_condition_number)
        cached = self._gates.get(key)
        if cached is None:
            _, returns = self.window(t, universe)
            try:
                if isinstance(returns, InvalidPriceError):
                    raise returns
                cached = gated_covariance(returns, config.estimator_config(), config.max_condition_number)
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

    date: dt.date | dt.datetime  # the bar's label (a date for daily bars)
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
        if config.bar_seconds != market.panel.bar_seconds:
            raise ConfigError(f"config bar_seconds {config.bar_seconds} != the data's {market.panel.bar_seconds}: "
                              "use config.for_panel(panel)")
        self.market = market
        self.strategy = strategy
        self.config = config
        n = len(market.panel.symbols)
        self.balances = [0] * n
        self.base_balance = 0
        self.epoch = 0
        self.gas_paid = 0  # base units, paid outside the vault (by the keeper)
        self.last_rebalance: int | None = None  # Unix seconds of the last rebalance's close
        self.reference: tuple[tuple[int, ...], FloatArray] | None = None
        self.steps = 0
        self.funded = False
        self.seed_prices: dict[str, float] = {}
        self._infos: dict[int, list[RiskAssetInfo]] = {}
        # Daily records.
        self.dates: list[dt.date | dt.datetime] = []  # bar labels
        self.timestamps: list[int] = []  # bar closes, Unix seconds
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
        # Options mode: the vault's option book and the hedge trigger's memory.
        self.option_book: OptionBookModel | None = None
        if getattr(strategy, "with_options", False):
            if config.options is None:
                raise ConfigError(f"strategy {strategy.name!r} runs with options: set BacktestConfig.options")
            self.option_book = OptionBookModel(config.options.market)
            panel = market.panel
            self._close_timestamps = [panel.close_timestamp(r) for r in range(len(panel.dates))]
        self.last_hedge_at: int | None = None
        self.iv_at_last_hedge: FloatArray | None = None
        self.protective_delta_at_last_hedge: FloatArray | None = None
        self.options_value: list[float] = []

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
        return self._info_row()[i]

    def _info_row(self) -> list[RiskAssetInfo]:
        """:meth:`_info` of every asset of the panel under the current config (built once per fee tier)."""
        fee_pips = self.config.pools.fee_pips
        row = self._infos.get(fee_pips)
        if row is None:
            row = self._infos[fee_pips] = [
                RiskAssetInfo(symbol, symbol, symbol, RISK_DECIMALS, FEED_DECIMALS, 2 * SECONDS_PER_DAY, fee_pips)
                for symbol in self.market.panel.symbols]
        return row

    def _values(self, t: int) -> list[int]:
        """Oracle value of each holding, base units (the vault's ``_valueOf``, floor).

        Raises
        ------
        BacktestDataError
            A held asset has no close on row t.
        """
        infos = self._info_row()
        answers = self.market.answers(t)
        return [(value_of(b, answers[i], infos[i], BASE_DECIMALS) if answers[i] is not None
                 else value_of(b, self.market.answer(t, i), infos[i], BASE_DECIMALS)) if b else 0
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
        if self.steps % cfg.tick_every_bars == 0:
            estimate = self._tick(t, universe)
        self.steps += 1
        values = self._values(t)
        options_value = self._options_mark(t) if self.option_book is not None else 0
        if self.option_book is not None:
            self.options_value.append(options_value / 10**BASE_DECIMALS)
        nav_vault = self.base_balance + sum(values) + options_value
        w = np.array(values, dtype=np.float64) / nav_vault if nav_vault else np.zeros(len(values))
        rrc = np.zeros(len(values))
        vol = math.nan
        if estimate is not None:
            w_list = w.tolist()
            pos = [k for k, i in enumerate(universe) if w_list[i] > 0]
            if pos:
                held = [universe[k] for k in pos]
                cov = estimate.covariance if len(pos) == len(universe) else estimate.covariance[np.ix_(pos, pos)]
                rrc[held] = relative_risk_contributions(w[held], cov)
                vol = portfolio_volatility(w[held], cov)
        self.dates.append(self.market.panel.labels[t])
        self.timestamps.append(self.market.panel.close_timestamp(t))
        self.nav_vault.append(nav_vault / 10**BASE_DECIMALS)
        gas_charged = self.gas_paid if cfg.gas.charge_to_nav else 0
        self.nav.append((nav_vault - gas_charged) / 10**BASE_DECIMALS)
        self.weights.append(w)
        self.rrc.append(rrc)
        self.ex_ante_vol.append(vol)
        for series in (self.turnover, self.fees, self.impacts, self.gas):
            if len(series) < len(self.dates):
                series.append(0.0)

    # -- options mode -------------------------------------------------------
    def _now(self, t: int) -> int:
        """Unix seconds of the decision on row ``t`` (the close, plus the options mode's offset)."""
        offset = self.config.options.decision_offset_seconds if self.option_book is not None else 0  # type: ignore[union-attr]
        return self.market.panel.close_timestamp(t) + offset

    def _settlement_prices(self, t: int) -> SettlementPrices:
        index = {s: i for i, s in enumerate(self.market.panel.symbols)}
        return SettlementPrices(self._close_timestamps, lambda sym, row: self.market.answer(row, index[sym]), t)

    def _spot_and_vol(self, t: int) -> tuple[dict[str, int], dict[str, int], dict[str, float]]:
        """Per symbol: the feed's spot (1e18 USD), the vol feed's answer (1e18 = 100 %) and the keeper's float vol."""
        panel = self.market.panel
        assert self.config.options is not None
        spot, vol_wad, vol = {}, {}, {}
        for i, sym in enumerate(panel.symbols):
            spot[sym] = self.market.answer(t, i) * 10 ** (18 - FEED_DECIMALS)
            answer = vol_to_answer(self.config.options.implied_vols[sym].on(panel.dates[t])[0])
            vol_wad[sym] = answer * 10 ** (18 - VOL_FEED_DECIMALS)
            vol[sym] = answer / 10**VOL_FEED_DECIMALS
        return spot, vol_wad, vol

    def _options_mark(self, t: int) -> int:
        """The vault's ``optionsValue()`` at row ``t``'s decision time, base units."""
        assert self.option_book is not None
        if not self.option_book.positions:
            return 0
        spot, vol_wad, _ = self._spot_and_vol(t)
        return self.option_book.value(self._now(t), spot, vol_wad, self._settlement_prices(t))

    def _skip(self, t: int, reason: str, decision: TriggerDecision | None = None,
              policy: PolicyDecision | None = None) -> None:
        self.decisions.append(DecisionRecord(self.market.panel.labels[t], "skipped", reason, decision, policy=policy))

    def _tick(self, t: int, universe: tuple[int, ...]) -> CovarianceEstimate | None:
        cfg = self.config
        market = self.market
        date = market.panel.labels[t]
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
        window, returns = market.window(t, universe)
        info_row = self._info_row()
        infos = [info_row[i] for i in universe]
        answer_row = market.answers(t)
        answers = tuple(answer_row[i] if answer_row[i] is not None else market.answer(t, i) for i in universe)
        if self.option_book is not None:
            # Settlement of expired series is an action of its own before the decision (the payouts are then
            # in the NAV it sees), as the live keeper settles before it plans.
            self.base_balance += self.option_book.settle_expired(self._now(t), self._settlement_prices(t))
        balances = tuple(self.balances[i] for i in universe)
        values = [value_of(b, a, info, BASE_DECIMALS) for b, a, info in zip(balances, answers, infos)]
        nav = self.base_balance + sum(values)
        if nav == 0:
            self._skip(t, "vault is empty")
            return estimate
        options_value = self._options_mark(t) if self.option_book is not None else 0
        total_assets = nav + options_value
        # The planner's holdings weights (keeper.planner.value_holdings), to the bit.
        current = np.array(values, dtype=np.float64) / nav
        previous = None
        if self.previous_target is not None and self.previous_target[0] == universe:
            previous = self.previous_target[1]
        ctx = DecisionContext(date, symbols, window[-1].copy(), window, estimate, gate=gate,
                              current_weights=current, previous_target=previous, policy=self._policy(),
                              nav_base_units=total_assets,
                              window_returns=None if isinstance(returns, InvalidPriceError) else returns)
        try:
            allocation = self.strategy(ctx)
        except KeeperError as exc:
            self._skip(t, f"{type(exc).__name__}: {exc}")
            return estimate
        if isinstance(allocation, PolicyDecision):
            decision_policy = allocation
            self.allocation_fallbacks += len(allocation.fallback_reasons)
            self.es_limit_binding += int(allocation.es_binding)
        else:
            sleeve = np.asarray(allocation.sleeve_weights, dtype=np.float64)
            invested = float(allocation.invested_fraction)
            if sleeve.shape != (len(universe),) or not np.all(np.isfinite(sleeve)) or np.any(sleeve < 0) \
                    or abs(sleeve.sum() - 1.0) > 1e-6 or not 0.0 <= invested <= 1.0:
                raise ConfigError(f"strategy {self.strategy.name!r} returned {allocation!r} for {symbols}: expected "
                                  f"{len(universe)} non-negative sleeve weights summing to 1 and an invested "
                                  "fraction in [0, 1]")
            decision_policy = fixed_target(symbols, sleeve * invested, current, estimate.covariance, self._policy(),
                                           reason=f"{self.strategy.name}: fixed NAV fractions", nav_base_units=nav)
        if decision_policy.action == "hold":
            self.policy_holds += 1
        else:
            self.previous_target = (universe, np.array(decision_policy.target_weights))

        last = None
        if self.reference is not None and self.last_rebalance is not None:
            ref_universe, ref_cov = self.reference
            last = LastRebalance(tuple(market.panel.symbols[i] for i in ref_universe), ref_cov,
                                 float(market.panel.close_timestamp(t) - self.last_rebalance))
        timestamp = self._now(t)
        snapshot = PriceSnapshot(answers, window[-1].copy(), np.full(len(universe), timestamp, dtype=np.int64),
                                 tuple(0 for _ in universe), t, timestamp)
        state = VaultState("BASE", BASE_DECIMALS, self.base_balance, balances, total_assets, 0, self.epoch, False,
                           cfg.limits.max_slippage_bps, cfg.limits.max_turnover_bps, cfg.limits.max_nav_loss_bps)
        limits = TradeLimits(cfg.slippage_budget_bps, int(cfg.min_trade_usd * 10**BASE_DECIMALS), timestamp + 600,
                             cfg.max_step_halvings)
        quoter = ModelQuoter(self, universe, t)
        options = option_quoter = None
        if self.option_book is not None and decision_policy.action != "hold":
            assert cfg.options is not None
            if len(universe) != len(market.panel.symbols):
                self._skip(t, "options mode needs every asset in the universe", policy=decision_policy)
                return estimate
            try:
                spot, vol_wad, vol = self._spot_and_vol(t)
            except KeeperError as exc:  # no implied vol for the day (e.g. before the DVOL series starts)
                self._skip(t, f"{type(exc).__name__}: {exc}", policy=decision_policy)
                return estimate
            option_quoter = ModelOptionQuoter(cfg.options.market, infos, spot, vol_wad, timestamp, total_assets,
                                              self.option_book)
            options = OptionsInputs(
                book=self.option_book.book(), vols=np.array([vol[s] for s in symbols]), options_value=options_value,
                now=timestamp, overlay=getattr(self.strategy, "overlay", None) or cfg.options.overlay,
                trigger=cfg.options.hedge_trigger,
                last_hedge_at=self.last_hedge_at, iv_at_last_hedge=self.iv_at_last_hedge, quoter=option_quoter,
                returns=simple_returns(window), protective_delta_at_last_hedge=self.protective_delta_at_last_hedge)
        try:
            choice = decide_rebalance(decision_policy, snapshot=snapshot, state=state, assets=infos,
                                      policy=cfg.policy, limits=limits, quoter=quoter, last_rebalance=last,
                                      options=options)
        except KeeperError as exc:
            self._skip(t, f"{type(exc).__name__}: {exc}", policy=decision_policy)
            return estimate
        plan = choice.plan
        target = decision_policy.target_weights
        targets = {s: float(x) for s, x in zip(symbols, target)}
        if not choice.trade:
            if choice.cost is None:  # stopped before quoting: hold, no trigger, or the planner's skip
                self.decisions.append(DecisionRecord(date, "skipped", choice.reason or "", choice.trigger,
                                                     policy=decision_policy))
            else:
                self.decisions.append(DecisionRecord(date, "skipped", choice.reason or "", choice.trigger,
                                                     len(plan.legs), plan.turnover_bps, choice.cost, targets,
                                                     decision_policy))
            return estimate
        assert plan is not None
        cost = choice.cost if choice.cost is not None else TradeCost(0, 0, 0, 0)
        new_balances, new_base = self._after(plan, choice.amounts_out, universe)
        premiums = sum(leg.quoted_premium if leg.is_buy else -leg.quoted_premium for leg in plan.option_legs)
        if premiums > new_base:  # the vault's transfer of the premiums would revert: nothing happens
            self._skip(t, f"the vault would revert: premiums {premiums} exceed its base balance {new_base}",
                       choice.trigger, decision_policy)
            return estimate
        for i, b in zip(universe, new_balances):
            self.balances[i] = b
        self.base_balance = new_base
        if plan.option_legs:
            assert self.option_book is not None and option_quoter is not None
            # The vault pays the premiums after the swaps, from its base balance.
            self.base_balance += self.option_book.apply(plan.option_legs, timestamp, option_quoter)
            if self.base_balance < 0:
                raise KeeperError(f"premiums exceed the base balance ({self.base_balance}): planner invariant broken")
        if options is not None and plan.legs:
            self.last_hedge_at, self.iv_at_last_hedge = timestamp, options.vols
            self.protective_delta_at_last_hedge = choice.hedge.protective_delta_units if choice.hedge else None
        self.epoch += 1
        self.gas_paid += cost.gas
        self.last_rebalance = market.panel.close_timestamp(t)
        self.reference = (universe, np.array(estimate.covariance))
        self.decisions.append(DecisionRecord(date, "rebalanced", choice.reason or "", choice.trigger, len(plan.legs),
                                             plan.turnover_bps, cost, targets, decision_policy))
        self.turnover.append(plan.turnover_bps / BPS)
        self.fees.append(cost.fee / nav)
        self.impacts.append(cost.impact / nav)
        self.gas.append(cost.gas / nav if cfg.gas.charge_to_nav else 0.0)
        return estimate

    def _after(self, plan: RebalancePlan, amounts_out: Sequence[int],
               universe: tuple[int, ...]) -> tuple[list[int], int]:
        """Holdings after the legs execute at the quoted outputs (sells first; they fund the buys)."""
        position = {self.market.panel.symbols[i]: k for k, i in enumerate(universe)}
        balances = [self.balances[i] for i in universe]
        base = self.base_balance
        for leg, out in zip(plan.legs, amounts_out):
            k = position[leg.symbol]
            if leg.side == "sell":
                balances[k] -= leg.amount_in
                base += out
            else:
                base -= leg.amount_in
                balances[k] += out
        if base < 0 or min(balances, default=0) < 0:
            raise KeeperError(
                f"plan spends more than held (base {base}, balances {balances}): planner invariant broken"
            )
        return balances, base


class ModelQuoter:
    """The backtest's :class:`keeper.decision.Quoter`: each leg against a constant-product model of its pool
    at the day's oracle price (:func:`keeper.costs.quote_leg`, reserves from ``config.pools``), and the gas
    of one rebalance from ``config.gas`` at the day's ETH price. Raises
    :class:`~keeper.errors.QuoteBelowBoundError` as QuoterV2 would when a leg's output is below its
    ``min_amount_out``."""

    def __init__(self, run: "StrategyRun", universe: tuple[int, ...], t: int) -> None:
        self.run = run
        self.universe = universe
        self.t = t
        self._last: tuple[RebalancePlan, list[LegQuote]] | None = None

    def leg_quotes(self, plan: RebalancePlan) -> list[LegQuote]:
        """The modelled quote of every leg of ``plan`` (kept for the plan last quoted: ``cost`` reuses it)."""
        if self._last is not None and self._last[0] is plan:
            return self._last[1]
        run, market, t = self.run, self.run.market, self.t
        symbols = market.panel.symbols
        position = {symbols[i]: i for i in self.universe}
        infos = run._info_row()
        answers = market.answers(t)
        pools = run.config.pools
        quotes = []
        for leg in plan.legs:
            i = position[leg.symbol]
            info = infos[i]
            answer = answers[i] if answers[i] is not None else market.answer(t, i)
            seed = run.seed_prices.get(leg.symbol)
            if seed is None:
                seed = run.seed_prices[leg.symbol] = float(market.panel.prices[t, i])
            reserves = pools.reserves(leg.symbol, answer, FEED_DECIMALS, RISK_DECIMALS, BASE_DECIMALS, seed)
            quotes.append(quote_leg(leg, reserves, pools.fee_pips,
                                    lambda amount, a=answer, inf=info: value_of(amount, a, inf, BASE_DECIMALS)))
        self._last = (plan, quotes)
        return quotes

    def quote(self, plan: RebalancePlan) -> tuple[int, ...]:
        quotes = self.leg_quotes(plan)
        for leg, q in zip(plan.legs, quotes):
            if q.amount_out < leg.min_amount_out:
                raise QuoteBelowBoundError(f"{leg.symbol} {leg.side} leg quotes {q.amount_out} < minAmountOut "
                                           f"{leg.min_amount_out}")
        return tuple(q.amount_out for q in quotes)

    def cost(self, plan: RebalancePlan, amounts_out: tuple[int, ...]) -> TradeCost:
        return rebalance_cost(self.leg_quotes(plan), self.run.config.gas, self.run.market.eth_price(self.t),
                              BASE_DECIMALS)



def asset_returns(prices: FloatArray) -> FloatArray:
    """Simple return of each asset into each row, shape of ``prices``; NaN on row 0 and around blanks."""
    out = np.full(prices.shape, np.nan)
    out[1:] = prices[1:] / prices[:-1] - 1.0
    return out


def replay_window(panel: PricePanel, start: dt.date | None, end: dt.date | None, lookback_days: int) -> tuple[int, int]:
    """First and last replayed rows. The replay starts no earlier than row ``lookback_bars`` (the warm-up).

    Raises
    ------
    ConfigError
        Fewer than two bars left after the warm-up, with how many rows the warm-up needs and where the
        window would have to start.
    """
    warmup = panel.bars(lookback_days)
    first = panel.index_on_or_after(start) if start else 0
    first = max(first, warmup)
    last = panel.index_on_or_before(end) if end else len(panel.dates) - 1
    if last - first < 1:
        unit = "days" if panel.daily else f"bars of {panel.bar_seconds} s"
        earliest = panel.label(min(warmup + 1, len(panel.dates) - 1))
        raise ConfigError(
            f"window {start}..{end} leaves {max(last - first + 1, 0)} {unit} after the {lookback_days}-day warm-up "
            f"({warmup} bars before the first replayed one; data {panel.label(0)}..{panel.label(len(panel.dates) - 1)}): "
            f"the window must end after {earliest}; choose a later end, an earlier data start or a shorter lookback"
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
    config = config.for_panel(panel)
    market = market or Market(panel, config.lookback_days)
    first, last = replay_window(panel, start, end, config.lookback_days)
    returns = asset_returns(panel.prices)
    t0 = time.perf_counter()
    results = []
    # Day by day, every strategy in turn: the day's market state (answers, window, returns, gate) is computed
    # once and shared; each strategy's run depends on its own state and that shared, causal data only.
    runs = [StrategyRun(market, strategy, config) for strategy in strategies]
    for t in range(first, last + 1):
        for run in runs:
            run.step(t)
    for run in runs:
        results.append(strategy_result(run, returns, slice(first, last + 1)))
    seconds = time.perf_counter() - t0
    asset_days = int(np.isfinite(panel.prices[first: last + 1]).sum()) * len(strategies)
    return {
        "results": results,
        "symbols": panel.symbols,
        "calendar_gaps": [(a.isoformat(), b.isoformat()) for a, b in panel.calendar_gaps
                          if panel.labels[first] <= a and b <= panel.labels[last]],
        "seconds": seconds,
        "days": last - first + 1 if panel.daily else (last - first + 1) * panel.bar_seconds / SECONDS_PER_DAY,
        "bars": last - first + 1,
        "bar_seconds": panel.bar_seconds,
        "asset_days": asset_days,
        "speed_asset_days_per_second": asset_days / seconds if seconds > 0 else math.inf,
        "config": config,
    }
