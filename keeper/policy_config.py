"""The decision policy's settings (:class:`PolicyConfig`): one validated model shared by the live keeper (the
``policy`` section of :class:`keeper.config.KeeperConfig`) and ``keeper backtest``. Units in the field names;
ranges refuse a value in the wrong unit."""

from __future__ import annotations
import math
from typing import Any, Literal
from pydantic import BaseModel, ConfigDict, Field, model_validator
from keeper.covariance import EstimatorConfig
from keeper.triggers import TriggerPolicy
from keeper.units import BPS, SECONDS_PER_DAY, SECONDS_PER_YEAR
from keeper.vol_forecast import MIN_FIT_OBSERVATIONS

__all__ = [
    "PolicyConfig",
    "DEFAULT_ESTIMATOR",
    "Allocator",
    "EsMethod",
]


DEFAULT_ESTIMATOR = EstimatorConfig(method="ewma", half_life_days=30.0, min_observations=30)
"""The live keeper's estimator: EWMA, 30-day half-life, at least 30 daily returns, 365-day year."""

Allocator = Literal["risk_budgeting", "inverse_volatility", "equal_weight"]

EsMethod = Literal["historical", "gaussian", "cornish_fisher"]

#: Day-based keys of earlier configs and the fields (in seconds) that replaced them.
RENAMED_FIELDS = {"max_days_between": "max_seconds_between", "benefit_horizon_days": "benefit_horizon_seconds"}


class PolicyConfig(BaseModel):
    """Everything the decision policy needs, validated once (pydantic; TOML/JSON-loadable).

    The defaults: EWMA covariance with a 30-day half-life, equal risk contributions, 500 bps of NAV in
    cash, no volatility target, no ES limit, a 300 bps weight-drift trigger, the 20 % risk-budget band
    (``rrc_budget_band``, the one addition to the keeper's earlier behaviour) and no cost gate.

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
    bar_seconds: int = Field(
        SECONDS_PER_DAY, ge=60, le=7 * SECONDS_PER_DAY,
        description="bar interval, seconds: the estimator's prices are sampled every bar_seconds (86400: daily "
        "closes; 3600: hourly) and annualised with 365 days / bar_seconds bars a year; must divide 365 days",
    )
    lookback_days: int = Field(
        180, ge=3, description="days of price history the estimator gets (the oracle's round history sampled every "
        "bar_seconds: lookback_days x 86400 / bar_seconds returns)",
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
    rrc_budget_band: float | None = Field(
        0.2, ge=0.0, allow_inf_nan=False,
        description="trigger: max_i |RRC_i(w) / b_i - 1| over the budgeted assets, fraction of each budget (0.2 = "
        "20 %; with 14 assets the absolute rrc_band of 0.05 is 70 % of a 1/14 budget); none to turn it off",
    )
    regime_distance: float | None = Field(
        None, ge=0.0, allow_inf_nan=False, description="trigger: covariance distance to the last rebalance's",
    )
    max_seconds_between: float | None = Field(
        None, ge=0.0, allow_inf_nan=False,
        description="trigger: seconds since the last rebalance (2592000 = 30 days)",
    )
    cost_aware: bool = Field(False, description="trade only when the expected risk benefit pays the cost")
    risk_aversion: float = Field(5.0, gt=0.0, allow_inf_nan=False, description="cost gate's lambda, per year")
    benefit_horizon_seconds: float = Field(
        30.0 * SECONDS_PER_DAY, gt=0.0, allow_inf_nan=False,
        description="cost gate: seconds over which the risk benefit counts (2592000 = 30 days)",
    )
    min_benefit_to_cost: float = Field(1.0, gt=0.0, allow_inf_nan=False, description="cost gate's k")
    es_trigger_tolerance: float = Field(
        0.1, ge=0.0, allow_inf_nan=False,
        description="trigger: holdings whose ES exceeds es_limit by more than this fraction of it are traded back",
    )

    @model_validator(mode="before")
    @classmethod
    def _renamed_and_bars(cls, data: Any) -> Any:
        """Refuses the day-based trigger keys (with the value to give instead) and annualises the default
        estimator with the bar: ``periods_per_year = 365 days / bar_seconds`` unless the estimator states it."""
        if not isinstance(data, dict):
            return data
        for old, new in RENAMED_FIELDS.items():
            if old in data:
                value = data[old]
                hint = (f"; give {new} = {float(value) * SECONDS_PER_DAY:g} for {value!r} days"
                        if isinstance(value, (int, float)) and not isinstance(value, bool) else "")
                raise ValueError(f"{old} was replaced by {new}, in seconds (a time trigger and the cost gate's "
                                 f"horizon work for any bar size){hint}")
        bar = data.get("bar_seconds")
        if isinstance(bar, int) and not isinstance(bar, bool) and bar > 0 and SECONDS_PER_YEAR % bar == 0:
            estimator = data.get("estimator")
            periods = SECONDS_PER_YEAR // bar
            if estimator is None:
                data = {**data, "estimator": EstimatorConfig(
                    method=DEFAULT_ESTIMATOR.method, half_life_days=DEFAULT_ESTIMATOR.half_life_days,
                    min_observations=DEFAULT_ESTIMATOR.min_observations, periods_per_year=periods)}
            elif isinstance(estimator, dict) and "periods_per_year" not in estimator:
                data = {**data, "estimator": {**estimator, "periods_per_year": periods}}
        return data

    @property
    def periods_per_year(self) -> int:
        """Bars per 365-day year (365 for daily bars, 8,760 for hourly)."""
        return SECONDS_PER_YEAR // self.bar_seconds

    @property
    def lookback_bars(self) -> int:
        """Returns in the estimation window: ``lookback_days`` x bars per day (rounded, at least 1)."""
        return max(1, round(self.lookback_days * SECONDS_PER_DAY / self.bar_seconds))

    @model_validator(mode="after")
    def _check_maps(self) -> "PolicyConfig":
        if self.rrc_budget_band is not None and self.rrc_budget_band >= 1.0:
            raise ValueError(f"rrc_budget_band is {self.rrc_budget_band!r}: it is a fraction of each asset's budget "
                             f"(0.2 = 20 %); at >= 1 an asset whose share of the risk falls to zero never fires "
                             f"it; give e.g. {self.rrc_budget_band / 100:g} if you meant percent, or none to turn "
                             "it off")
        if SECONDS_PER_YEAR % self.bar_seconds:
            raise ValueError(f"bar_seconds is {self.bar_seconds}: a bar must divide a 365-day year "
                             f"({SECONDS_PER_YEAR} s) so that a year has a whole number of bars; e.g. 3600 (hourly), "
                             "14400 (4 hours) or 86400 (daily)")
        if int(self.estimator.periods_per_year) != self.periods_per_year:
            raise ValueError(f"estimator.periods_per_year is {self.estimator.periods_per_year} but bar_seconds "
                             f"{self.bar_seconds} gives {self.periods_per_year} bars a year: leave periods_per_year "
                             "out (it follows bar_seconds) or make the two agree")
        if 0.0 < self.cash_buffer_bps < 1.0:
            raise ValueError(f"cash_buffer_bps is {self.cash_buffer_bps!r}: that is a fraction, the field is in bps "
                             f"(e.g. 500 for 5 %); give {self.cash_buffer_bps * BPS:g}")
        need = self.estimator.min_observations
        if need is not None and need > self.lookback_bars - 1:
            days = (need + 1) * self.bar_seconds / SECONDS_PER_DAY
            raise ValueError(f"estimator.min_observations ({need}) needs lookback_days >= {days:g} "
                             f"at bar_seconds {self.bar_seconds} (got {self.lookback_days})")
        if self.estimator.method == "garch" and self.lookback_bars - 1 < MIN_FIT_OBSERVATIONS:
            raise ValueError(f"estimator.method is 'garch' with lookback_days = {self.lookback_days}: a GARCH fit "
                             f"needs at least {MIN_FIT_OBSERVATIONS} returns, so every fit would fall back to EWMA; "
                             f"give lookback_days >= {MIN_FIT_OBSERVATIONS + 1} (e.g. 730) or method 'ewma'")
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
            weight_drift_bps=self.weight_drift_bps, rrc_band=self.rrc_band, rrc_budget_band=self.rrc_budget_band,
            regime_distance=self.regime_distance,
            max_seconds_between=self.max_seconds_between, cost_aware=self.cost_aware,
            risk_aversion=self.risk_aversion, horizon_seconds=self.benefit_horizon_seconds,
            min_benefit_to_cost=self.min_benefit_to_cost,
            es_trigger_tolerance=self.es_trigger_tolerance,
        )
