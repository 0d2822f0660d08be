"""The one decision function (keeper.decision) without a chain: the quote-and-halve loop, and the vault's rolling
NAV-loss budget as a limit on the step the decision takes.

A fake quoter stands in for QuoterV2 / the pool model: every leg quotes ``1 − loss_bps`` of its oracle value, so
the legs' loss against the oracle is known exactly and scales with the step.
"""

from __future__ import annotations

import numpy as np
import pytest

from keeper.costs import TradeCost
from keeper.decision import TradeLimits, decide_rebalance, quote_with_halving
from keeper.errors import NavLossBudgetError, QuoteBelowBoundError
from keeper.oracle import PriceSnapshot, RiskAssetInfo, VaultState
from keeper.planner import RebalancePlan, plan_rebalance
from keeper.policy import fixed_target
from keeper.triggers import TriggerPolicy

BASE_DECIMALS = 6
ASSETS = (RiskAssetInfo("BTC", "0xB", "0xFB", 18, 8, 86_400, 500), RiskAssetInfo("ETH", "0xE", "0xFE", 18, 8, 86_400, 500))
ANSWERS = (40_000 * 10**8, 2_000 * 10**8)
NAV = 1_000_000 * 10**BASE_DECIMALS
SNAPSHOT = PriceSnapshot(ANSWERS, np.array([40_000.0, 2_000.0]), np.array([0, 0]), (1, 1), 1, 1_700_000_000)
LIMITS = TradeLimits(slippage_budget_bps=50.0, min_trade_value=10 * 10**BASE_DECIMALS, deadline=1_700_000_600,
                     max_step_halvings=2)


def _state(nav_loss_budget_remaining: int | None) -> VaultState:
    """A vault holding only the base asset: the first allocation trades half of NAV into each asset."""
    return VaultState("0xUSDC", BASE_DECIMALS, NAV, (0, 0), NAV, NAV * 10**6, 0, False, 100, 20_000, 500,
                      turnover_budget_remaining=None, nav_loss_budget_remaining=nav_loss_budget_remaining)


class LossyQuoter:
    """Every leg gets ``1 − loss_bps`` of its oracle-fair output; the loss is a fee, in base units."""

    def __init__(self, loss_bps: int) -> None:
        self.loss_bps = loss_bps
        self.quoted: list[float] = []

    def quote(self, plan: RebalancePlan) -> tuple[int, ...]:
        self.quoted.append(sum(leg.value for leg in plan.legs))
        out = tuple(leg.oracle_amount_out * (10_000 - self.loss_bps) // 10_000 for leg in plan.legs)
        for leg, amount in zip(plan.legs, out):
            if amount < leg.min_amount_out:
                raise QuoteBelowBoundError(f"{leg.symbol} quotes {amount} < {leg.min_amount_out}")
        return out

    def cost(self, plan: RebalancePlan, amounts_out: tuple[int, ...]) -> TradeCost:
        # Buys are valued in base units already; a sell's loss is its base-unit shortfall.
        loss = sum(leg.value * self.loss_bps // 10_000 for leg in plan.legs)
        return TradeCost(fee=loss, impact=0, gas=0, gas_units=0)


def _decision():
    target = np.array([0.45, 0.45])  # 90 % invested, 10 % cash
    return fixed_target(("BTC", "ETH"), target, np.zeros(2), np.diag([0.6, 0.8]) ** 2)


def test_the_halving_loop_takes_the_largest_step_the_pools_absorb() -> None:
    plans = []

    def plan_at(fraction: float) -> RebalancePlan:
        plan = plan_rebalance(SNAPSHOT, _state(None), ASSETS, np.array([0.5, 0.5]), cash_buffer_bps=1000,
                              slippage_budget_bps=50, drift_threshold_bps=0, min_trade_value=1, deadline=0,
                              fraction=fraction)
        plans.append(plan)
        return plan

    class Shallow(LossyQuoter):
        def quote(self, plan: RebalancePlan) -> tuple[int, ...]:
            if sum(leg.value for leg in plan.legs) > NAV * 0.3:  # the pools absorb at most 30 % of NAV
                raise QuoteBelowBoundError("too deep")
            return super().quote(plan)

    quoted = quote_with_halving(plan_at, Shallow(5), max_step_halvings=2)
    assert quoted.fraction == 0.25 and quoted.halvings == 2  # 90 % → 45 % → 22.5 % of NAV
    with pytest.raises(QuoteBelowBoundError, match="after 1 halvings") as info:
        quote_with_halving(plan_at, Shallow(5), max_step_halvings=1)
    assert info.value.plan is plans[-1]  # the refused plan rides on the error, for the journal


def test_the_step_fits_the_vaults_rolling_nav_loss_budget() -> None:
    policy = TriggerPolicy()
    full_loss = NAV * 9 // 10 * 20 // 10_000  # 20 bps of the 90 % traded: 1,800 USD
    # No budget known (offline): the whole move.
    free = decide_rebalance(_decision(), snapshot=SNAPSHOT, state=_state(None), assets=ASSETS, policy=policy,
                            limits=LIMITS, quoter=LossyQuoter(20))
    assert free.trade and free.halvings == 0 and free.cost.fee == pytest.approx(full_loss, abs=2)
    # A budget with room for half the loss: half the step, and what it loses fits.
    half = decide_rebalance(_decision(), snapshot=SNAPSHOT, state=_state(full_loss * 6 // 10), assets=ASSETS,
                            policy=policy, limits=LIMITS, quoter=LossyQuoter(20))
    assert half.trade and half.halvings == 1 and half.cost.fee <= full_loss * 6 // 10
    # A budget below a quarter of the loss: no step fits; the decision says why, with the refused legs.
    with pytest.raises(NavLossBudgetError, match="NAV-loss budget still allows") as info:
        decide_rebalance(_decision(), snapshot=SNAPSHOT, state=_state(full_loss // 5), assets=ASSETS,
                         policy=policy, limits=LIMITS, quoter=LossyQuoter(20))
    assert info.value.plan is not None and info.value.plan.legs
