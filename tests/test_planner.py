"""Unit tests of keeper.planner: properties of a rebalance plan, no chain needed.

Every expected amount is recomputed here from the vault's fixed-point formulas (exact integers), never
copied from a previous run.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import pytest

from keeper.errors import ConfigError
from keeper.oracle import PriceSnapshot, RiskAssetInfo, VaultState
from keeper.planner import RebalancePlan, amount_for_value, plan_rebalance, sleeve_targets, value_holdings, value_of
from tolerances import U, gamma, sum_rtol

BPS = 10_000
BASE = "0x" + "b" * 40
N_CASES = 400


# ----------------------------------------------------------------------------------------------------------
# builders and an independent re-implementation of the vault's arithmetic
# ----------------------------------------------------------------------------------------------------------


def make_assets(token_decimals, feed_decimals):
    return [
        RiskAssetInfo(
            token=f"0x{i + 1:040x}",
            symbol=f"TK{i}",
            feed=f"0x{i + 0x100:040x}",
            token_decimals=td,
            feed_decimals=fd,
            heartbeat_seconds=3600,
            pool_fee=3000,
        )
        for i, (td, fd) in enumerate(zip(token_decimals, feed_decimals))
    ]


def make_snapshot(answers):
    n = len(answers)
    return PriceSnapshot(
        answers=tuple(int(a) for a in answers),
        prices_usd=np.zeros(n),
        updated_at=np.zeros(n, dtype=np.int64),
        round_ids=tuple(range(1, n + 1)),
        block_number=123,
        block_timestamp=1_700_000_000,
    )


def make_state(balances, base_balance, base_decimals=6, max_slippage_bps=100, max_turnover_bps=20_000, epoch=7):
    return VaultState(
        base_asset=BASE,
        base_decimals=base_decimals,
        base_balance=int(base_balance),
        balances=tuple(int(b) for b in balances),
        total_assets=0,
        total_supply=0,
        rebalance_epoch=epoch,
        paused=False,
        max_slippage_bps=max_slippage_bps,
        max_turnover_bps=max_turnover_bps,
        max_nav_loss_bps=100,
    )


def vault_value(amount, answer, info, base_decimals):
    """value = amount × answer × 10^base_decimals // 10^(token_decimals + feed_decimals)."""
    return amount * answer * 10**base_decimals // 10 ** (info.token_decimals + info.feed_decimals)


def vault_tokens_for(value, answer, info, base_decimals):
    """tokens = value × 10^(token_decimals + feed_decimals) // (answer × 10^base_decimals)."""
    return value * 10 ** (info.token_decimals + info.feed_decimals) // (answer * 10**base_decimals)


def ceil_div(a, b):
    return -(-a // b)


def unit_value(answer, info, base_decimals):
    """Base units one smallest token unit is worth, rounded up (the granularity of a token amount)."""
    return ceil_div(answer * 10**base_decimals, 10 ** (info.token_decimals + info.feed_decimals))


@dataclass
class Case:
    assets: list
    snapshot: PriceSnapshot
    state: VaultState
    weights: np.ndarray
    cash_buffer_bps: float
    slippage_budget_bps: float
    max_slippage_bps: int

    @property
    def nav(self):
        return self.state.base_balance + sum(
            vault_value(b, a, info, self.state.base_decimals)
            for b, a, info in zip(self.state.balances, self.snapshot.answers, self.assets)
        )

    def plan(self, **overrides):
        kwargs = dict(
            cash_buffer_bps=self.cash_buffer_bps,
            slippage_budget_bps=self.slippage_budget_bps,
            drift_threshold_bps=0.0,
            min_trade_value=1,
            deadline=1_700_000_600,
        )
        kwargs.update(overrides)
        return plan_rebalance(self.snapshot, self.state, self.assets, self.weights, **kwargs)


def random_case(
    seed,
    *,
    base_decimals=None,
    max_turnover_bps=20_000,
    integer_budget=True,
    cash_buffer_range=(0.0, 2_000.0),
    nav_usd_range=(1e1, 1e8),
):
    """A random vault: 1-5 risk assets with 6/8/18-decimal tokens and 8/18-decimal feeds."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 6))
    bd = int(rng.choice([6, 18])) if base_decimals is None else base_decimals
    tds = [int(rng.choice([6, 8, 18])) for _ in range(n)]
    fds = [int(rng.choice([8, 18])) for _ in range(n)]
    prices = 10 ** rng.uniform(-3, 5, n)  # USD per whole token
    answers = [max(1, int(round(p * 10**fd))) for p, fd in zip(prices, fds)]
    nav_usd = 10 ** rng.uniform(np.log10(nav_usd_range[0]), np.log10(nav_usd_range[1]))
    holding = rng.dirichlet(np.ones(n + 1))
    holding[rng.random(n + 1) < 0.2] = 0.0  # some assets (or the cash) start empty
    if holding.sum() == 0:
        holding[0] = 1.0
    holding /= holding.sum()
    balances = [int(nav_usd * h / p * 10**td) for h, p, td in zip(holding[:n], prices, tds)]
    base_balance = int(nav_usd * holding[n] * 10**bd)
    max_slippage = int(rng.integers(0, 1_001))
    budget = float(rng.integers(1, 301)) if integer_budget else float(rng.uniform(1, 300))
    weights = rng.dirichlet(np.ones(n))
    return Case(
        assets=make_assets(tds, fds),
        snapshot=make_snapshot(answers),
        state=make_state(balances, base_balance, bd, max_slippage, max_turnover_bps),
        weights=weights,
        cash_buffer_bps=float(rng.uniform(*cash_buffer_range)),
        slippage_budget_bps=budget,
        max_slippage_bps=max_slippage,
    )


def cases(**kwargs):
    for seed in range(N_CASES):
        case = random_case(seed, **kwargs)
        yield seed, case, case.plan()


# ----------------------------------------------------------------------------------------------------------
# value_of / amount_for_value
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("token_decimals", [6, 8, 18])
@pytest.mark.parametrize("feed_decimals", [8, 18])
@pytest.mark.parametrize("base_decimals", [6, 18])
def test_value_conversions_are_the_vaults_floor_formulas(token_decimals, feed_decimals, base_decimals):
    rng = np.random.default_rng(1000 + token_decimals * 100 + feed_decimals * 10 + base_decimals)
    info = make_assets([token_decimals], [feed_decimals])[0]
    for _ in range(200):
        answer = max(1, int(10 ** rng.uniform(-3, 5) * 10**feed_decimals))
        amount = int(10 ** rng.uniform(0, 6) * 10**token_decimals)
        exact_value = Fraction(amount * answer * 10**base_decimals, 10 ** (token_decimals + feed_decimals))
        assert value_of(amount, answer, info, base_decimals) == int(exact_value)  # floor of a positive
        value = int(10 ** rng.uniform(0, 9) * 10**base_decimals)
        exact_tokens = Fraction(value * 10 ** (token_decimals + feed_decimals), answer * 10**base_decimals)
        tokens = amount_for_value(value, answer, info, base_decimals)
        assert tokens == int(exact_tokens)
        # floor: the tokens are worth at most `value`, and one more unit would be worth more
        assert value_of(tokens, answer, info, base_decimals) <= value
        assert Fraction((tokens + 1) * answer * 10**base_decimals, 10 ** (token_decimals + feed_decimals)) > value


# ----------------------------------------------------------------------------------------------------------
# legs: oracle outputs and min_amount_out
# ----------------------------------------------------------------------------------------------------------


def test_every_leg_min_amount_out_is_the_ceiled_slippage_bound_of_the_vaults_oracle_output():
    checked = 0
    for seed, case, plan in cases():
        s = min(int(case.slippage_budget_bps), case.max_slippage_bps)
        assert plan.slippage_bps == s, seed
        bd = case.state.base_decimals
        by_symbol = {info.symbol: (i, info) for i, info in enumerate(case.assets)}
        for leg in plan.legs:
            i, info = by_symbol[leg.symbol]
            answer = case.snapshot.answers[i]
            if leg.side == "sell":
                assert (leg.token_in, leg.token_out) == (info.token, BASE)
                assert leg.oracle_amount_out == vault_value(leg.amount_in, answer, info, bd), seed
                assert leg.value == leg.oracle_amount_out
                assert leg.amount_in <= case.state.balances[i]
            else:
                assert leg.side == "buy"
                assert (leg.token_in, leg.token_out) == (BASE, info.token)
                assert leg.oracle_amount_out == vault_tokens_for(leg.amount_in, answer, info, bd), seed
                assert leg.value == leg.amount_in
            assert leg.min_amount_out == ceil_div(leg.oracle_amount_out * (BPS - s), BPS), seed
            assert leg.as_tuple() == (leg.token_in, leg.token_out, leg.amount_in, leg.min_amount_out)
            checked += 1
    assert checked > N_CASES  # the property was exercised on many legs


def test_fractional_slippage_budget_never_asks_for_less_than_the_budget_or_the_vault_allows():
    checked = 0
    for seed in range(N_CASES):
        case = random_case(seed, integer_budget=False)
        plan = case.plan()
        for leg in plan.legs:
            budget_bound = ceil_div(leg.oracle_amount_out * (BPS * 1000 - round(case.slippage_budget_bps * 1000)),
                                    BPS * 1000)
            vault_bound = ceil_div(leg.oracle_amount_out * (BPS - case.max_slippage_bps), BPS)
            assert leg.min_amount_out >= max(budget_bound, vault_bound) - 1, seed
            assert leg.min_amount_out <= leg.oracle_amount_out
            checked += 1
    assert checked > N_CASES


def test_sells_come_before_buys():
    mixed = 0
    for seed, _, plan in cases():
        sides = [leg.side for leg in plan.legs]
        assert sides == sorted(sides, key=lambda side: side != "sell"), (seed, sides)
        mixed += "sell" in sides and "buy" in sides
    assert mixed > 20


@pytest.mark.parametrize("base_decimals", [6, 18])
def test_buys_never_spend_more_than_base_balance_plus_guaranteed_sell_proceeds(base_decimals):
    for seed in range(N_CASES):
        # no cash buffer: the buys are funded by the sells, so the funding scale-down is exercised
        case = random_case(seed, base_decimals=base_decimals, cash_buffer_range=(0.0, 1.0))
        plan = case.plan()
        cash = case.state.base_balance + sum(leg.min_amount_out for leg in plan.legs if leg.side == "sell")
        spent = sum(leg.amount_in for leg in plan.legs if leg.side == "buy")
        assert spent <= cash, f"seed {seed}: buys spend {spent} > available {cash} (over by {spent - cash})"


def test_buys_exactly_funded_regression_18_decimal_base():
    """All of a $3,623.74 vault (18-decimal base) in one asset, rebalanced to thirds with no buffer:
    the buys must be scaled to what the single sell is guaranteed to return."""
    assets = make_assets([18, 18, 18], [8, 8, 8])
    snapshot = make_snapshot([10**8] * 3)  # $1 each
    state = make_state([3623741920432172302336, 0, 0], 0, base_decimals=18, max_slippage_bps=100)
    plan = plan_rebalance(snapshot, state, assets, np.full(3, 1 / 3), cash_buffer_bps=0, slippage_budget_bps=50,
                          drift_threshold_bps=0, min_trade_value=1, deadline=0)
    cash = sum(leg.min_amount_out for leg in plan.legs if leg.side == "sell")
    spent = sum(leg.amount_in for leg in plan.legs if leg.side == "buy")
    assert spent <= cash, f"buys spend {spent} > guaranteed proceeds {cash} (over by {spent - cash} wei)"


# ----------------------------------------------------------------------------------------------------------
# where the plan lands
# ----------------------------------------------------------------------------------------------------------


def apply_at_oracle(case, plan):
    balances = list(case.state.balances)
    index = {info.symbol: i for i, info in enumerate(case.assets)}
    for leg in plan.legs:
        i = index[leg.symbol]
        balances[i] += -leg.amount_in if leg.side == "sell" else leg.oracle_amount_out
        assert balances[i] >= 0
    return balances


def test_plan_applied_at_oracle_prices_lands_on_the_target_values():
    landed = 0
    for seed in range(N_CASES):
        # a cash buffer larger than the slippage allowance, so the buys are fully funded
        case = random_case(seed, cash_buffer_range=(1_100.0, 3_000.0), nav_usd_range=(1e3, 1e8))
        assert case.slippage_budget_bps <= 300
        nav = case.nav
        bd = case.state.base_decimals
        targets = [Fraction(nav) * (1 - Fraction(case.cash_buffer_bps) / BPS) * Fraction(float(w))
                   for w in case.weights]
        values = [vault_value(b, a, info, bd) for b, a, info in zip(case.state.balances, case.snapshot.answers,
                                                                     case.assets)]
        gross = sum(abs(t - v) for t, v in zip(targets, values))
        if gross > Fraction(case.state.max_turnover_bps - 1, BPS) * nav * Fraction(999, 1000):
            continue  # the turnover cap binds; covered elsewhere
        plan = case.plan()
        assert plan.skip_reason is None, seed
        after = apply_at_oracle(case, plan)
        for i, (b, a, info) in enumerate(zip(after, case.snapshot.answers, case.assets)):
            got = vault_value(b, a, info, bd)
            tolerance = nav * Fraction(1, 10**9) + unit_value(a, info, bd) + 2
            assert abs(got - targets[i]) <= tolerance, (
                f"seed {seed}, {info.symbol}: lands at {got}, target {float(targets[i]):.0f}, "
                f"tolerance {float(tolerance):.0f}"
            )
        landed += 1
    assert landed > N_CASES // 2


def test_target_weights_reported_are_nav_fractions():
    case = random_case(3)
    plan = case.plan()
    # Same path: the planner reports w * (1 - cash_buffer_bps / 10^4), the same formula on the same numbers.
    np.testing.assert_array_equal(plan.target_weights, case.weights * (1 - case.cash_buffer_bps / BPS))
    assert plan.expected_epoch == case.state.rebalance_epoch
    assert plan.deadline == 1_700_000_600
    assert plan.nav_before == case.nav


# ----------------------------------------------------------------------------------------------------------
# turnover cap
# ----------------------------------------------------------------------------------------------------------


def test_turnover_above_the_cap_is_scaled_down_to_the_cap_keeping_directions():
    capped = 0
    for seed in range(N_CASES):
        rng = np.random.default_rng(10_000 + seed)
        case = random_case(seed, max_turnover_bps=int(rng.integers(1, 20_001)))
        plan = case.plan()
        nav = case.nav
        traded = sum(leg.value for leg in plan.legs)
        cap = case.state.max_turnover_bps
        assert traded * BPS <= cap * nav, f"seed {seed}: traded {traded} > {cap} bps of NAV {nav}"
        assert ceil_div(traded * BPS, nav) <= cap  # the vault's own (rounded-up) check
        assert plan.turnover_bps == pytest.approx(traded * BPS / nav)
        # scaling never flips a trade: sell only what is overweight, buy only what is underweight
        bd = case.state.base_decimals
        fraction = 1 - case.cash_buffer_bps / BPS
        for leg in plan.legs:
            i = [info.symbol for info in case.assets].index(leg.symbol)
            value = vault_value(case.state.balances[i], case.snapshot.answers[i], case.assets[i], bd)
            target = nav * fraction * case.weights[i]
            assert (value > target) if leg.side == "sell" else (value < target), seed
        capped += traded * BPS > cap * nav // 2
    assert capped > 20


def test_binding_turnover_cap_trades_up_to_the_cap():
    assets = make_assets([18, 8], [8, 8])
    snapshot = make_snapshot([2_000 * 10**8, 60_000 * 10**8])
    # $80,000 in the first asset, $20,000 cash; target 40/40/20 -> 80% of NAV would trade uncapped
    state = make_state([40 * 10**18, 0], 20_000 * 10**6, base_decimals=6, max_slippage_bps=50, max_turnover_bps=2_000)
    plan = plan_rebalance(snapshot, state, assets, np.array([0.5, 0.5]), cash_buffer_bps=2_000,
                          slippage_budget_bps=50, drift_threshold_bps=100, min_trade_value=1, deadline=0)
    nav = 100_000 * 10**6
    traded = sum(leg.value for leg in plan.legs)
    assert [leg.side for leg in plan.legs] == ["sell", "buy"]
    assert traded * BPS <= 2_000 * nav
    assert traded >= 0.99 * 2_000 * nav / BPS  # scaled down, not dropped


def test_zero_turnover_cap_plans_no_trade():
    """maxTurnoverBps = 0 is a valid vault setting: no plan can pass it, so none may be sent, and certainly
    not one that sells the underweight asset and buys the overweight one."""
    assets = make_assets([18, 18], [8, 8])
    snapshot = make_snapshot([10**8, 10**8])
    state = make_state([60 * 10**18, 20 * 10**18], 20 * 10**6, base_decimals=6, max_turnover_bps=0)
    plan = plan_rebalance(snapshot, state, assets, np.array([0.5, 0.5]), cash_buffer_bps=0,
                          slippage_budget_bps=50, drift_threshold_bps=0, min_trade_value=1, deadline=0)
    assert plan.legs == (), [(leg.symbol, leg.side, leg.value) for leg in plan.legs]
    assert plan.skip_reason is not None


# ----------------------------------------------------------------------------------------------------------
# skips, minimum trade, NAV floor, validation
# ----------------------------------------------------------------------------------------------------------


def balanced_vault(nav_usd=100_000, cash_buffer_bps=500, weights=(0.25, 0.75)):
    assets = make_assets([18, 8], [8, 8])
    prices = [2_000, 50_000]
    snapshot = make_snapshot([p * 10**8 for p in prices])
    risky = nav_usd * (1 - cash_buffer_bps / BPS)
    balances = [int(risky * w / p * 10**td) for w, p, td in zip(weights, prices, [18, 8])]
    state = make_state(balances, int(nav_usd * cash_buffer_bps / BPS * 10**6), base_decimals=6)
    return assets, snapshot, state, np.array(weights)


def test_drift_below_threshold_skips_with_no_legs():
    assets, snapshot, state, w = balanced_vault()
    # push 1% of NAV from the second asset into the first: drift is 100 bps
    shifted = (state.balances[0] + 5 * 10**17, state.balances[1] - 2 * 10**6)
    state = make_state(shifted, state.base_balance)
    kwargs = dict(cash_buffer_bps=500, slippage_budget_bps=50, min_trade_value=1, deadline=0)
    plan = plan_rebalance(snapshot, state, assets, w, drift_threshold_bps=150, **kwargs)
    assert plan.legs == ()
    assert plan.skip_reason and "below threshold" in plan.skip_reason
    assert plan.drift_bps == pytest.approx(100.0, abs=0.01)
    assert plan.min_nav_after == plan.nav_before
    # the same state above a lower threshold trades
    plan = plan_rebalance(snapshot, state, assets, w, drift_threshold_bps=50, **kwargs)
    assert plan.skip_reason is None and len(plan.legs) == 2


def test_drift_counts_the_cash_sleeve():
    assets, snapshot, state, w = balanced_vault(cash_buffer_bps=500)
    # every risk asset on target relative to each other, but 3% of NAV too much cash vs the 5% buffer
    plan = plan_rebalance(snapshot, state, assets, w, cash_buffer_bps=200, slippage_budget_bps=50,
                          drift_threshold_bps=250, min_trade_value=1, deadline=0)
    assert plan.drift_bps == pytest.approx(300.0, abs=0.5)
    assert plan.skip_reason is None
    assert {leg.side for leg in plan.legs} == {"buy"}


def test_empty_vault_skips():
    assets = make_assets([18, 6], [8, 18])
    plan = plan_rebalance(make_snapshot([10**8, 10**18]), make_state([0, 0], 0), assets, np.array([0.5, 0.5]),
                          cash_buffer_bps=500, slippage_budget_bps=50, drift_threshold_bps=0, min_trade_value=0,
                          deadline=0)
    assert plan.legs == ()
    assert plan.skip_reason is not None and "empty" in plan.skip_reason
    assert plan.nav_before == 0 and plan.min_nav_after == 0


def test_legs_below_min_trade_value_are_dropped():
    assets, snapshot, state, w = balanced_vault()
    # asset 0 is $40 under target, asset 1 $5,000 over; cash on target
    state = make_state((state.balances[0] - 2 * 10**16, state.balances[1] + 10**7),
                       state.base_balance - 4_960 * 10**6)
    kwargs = dict(cash_buffer_bps=500, slippage_budget_bps=50, drift_threshold_bps=0, deadline=0)
    small = plan_rebalance(snapshot, state, assets, w, min_trade_value=1, **kwargs)
    assert {leg.symbol for leg in small.legs} == {"TK0", "TK1"}
    plan = plan_rebalance(snapshot, state, assets, w, min_trade_value=100 * 10**6, **kwargs)
    assert [leg.symbol for leg in plan.legs] == ["TK1"]
    # and when every leg is too small the plan is a skip
    plan = plan_rebalance(snapshot, state, assets, w, min_trade_value=10**12, **kwargs)
    assert plan.legs == () and plan.skip_reason is not None


def test_no_leg_is_below_min_trade_value():
    seen = 0
    for seed in range(N_CASES):
        case = random_case(seed)
        min_trade = max(1, case.nav // 50)  # 2% of NAV
        plan = case.plan(min_trade_value=min_trade)
        for leg in plan.legs:
            assert leg.value >= min_trade, seed
            seen += 1
    assert seen > 50


def test_min_nav_after_is_nav_less_each_legs_slippage_allowance():
    seen = 0
    for seed, case, plan in cases():
        assert plan.min_nav_after <= plan.nav_before
        if not plan.legs:
            continue
        s = plan.slippage_bps
        allowance = sum(ceil_div(leg.value * s, BPS) + 1 for leg in plan.legs)
        assert plan.min_nav_after == max(plan.nav_before - allowance, 0), seed
        seen += 1
    assert seen > N_CASES // 2


@pytest.mark.parametrize(
    "weights",
    [
        pytest.param([0.5, 0.5], id="wrong-length"),
        pytest.param([[0.3, 0.3, 0.4]], id="wrong-shape"),
        pytest.param([1.2, -0.1, -0.1], id="negative"),
        pytest.param([0.3, 0.3, 0.3], id="sum-below-1"),
        pytest.param([0.5, 0.5, 0.5], id="sum-above-1"),
        pytest.param([float("nan")] * 3, id="nan"),
        pytest.param([float("inf"), 0.0, 0.0], id="inf"),
    ],
)
def test_bad_target_weights_raise_config_error(weights):
    assets = make_assets([18, 8, 6], [8, 8, 18])
    snapshot = make_snapshot([10**8, 10**8, 10**18])
    state = make_state([10**18, 10**8, 10**6], 10**6)
    with pytest.raises(ConfigError, match="target weights"):
        plan_rebalance(snapshot, state, assets, np.array(weights), cash_buffer_bps=0, slippage_budget_bps=50,
                       drift_threshold_bps=0, min_trade_value=1, deadline=0)


# --- spot targets as fractions of the vault's NAV (options included) -------------------------------------


@pytest.mark.parametrize("options_value_usd", [0, 3_000, 12_000])
def test_sleeve_targets_land_the_spot_on_the_nav_fractions(options_value_usd):
    assets, snapshot, state, _ = balanced_vault(nav_usd=100_000, weights=(0.4, 0.6))
    spot_nav = value_holdings(snapshot, state, assets).nav
    nav = spot_nav + options_value_usd * 10**6  # totalAssets(): spot NAV plus the options' mark
    f = np.array([0.45, 0.35])  # spot targets, fractions of nav (e.g. HedgeOrders.spot_target_weights)
    sleeve = sleeve_targets(f, nav, spot_nav)
    # f / sum(f): the 2-term sum (U), one division each (U), the sum here (U).
    assert sleeve.weights.sum() == pytest.approx(1.0, abs=sum_rtol(2) + 2 * U) and sleeve.scale == 1.0
    plan = plan_rebalance(snapshot, state, assets, sleeve.weights, cash_buffer_bps=sleeve.cash_buffer_bps,
                          slippage_budget_bps=50, drift_threshold_bps=0, min_trade_value=1, deadline=0)
    # The planner's target value of each asset (fraction of the spot NAV) is f_i × nav: f / sum(f) times
    # 1 - ((1 - risky) 10^4) / 10^4, risky = sum(f) nav / spot_nav, times spot_nav. <= 8 roundings of the
    # products, and the detour through the cash buffer in bps: absolute (3 (1 - risky) + 2) U on risky.
    risky = float(f.sum()) * nav / spot_nav
    rtol = gamma(8) + (3 * abs(1 - risky) + 2) * U / risky
    np.testing.assert_allclose(np.asarray(plan.target_weights) * spot_nav, f * nav, rtol=rtol)
    assert plan.option_legs == ()


def test_sleeve_targets_keep_the_reserved_cash_and_flag_the_scale():
    f = np.array([0.6, 0.45])  # more than the spot NAV can hold
    sleeve = sleeve_targets(f, nav=1_000_000, spot_nav=980_000, reserved_cash=20_000)
    assert 0 < sleeve.scale < 1
    risky_value = (1 - sleeve.cash_buffer_bps / BPS) * 980_000
    # Exactly the reserve is left in cash, up to: scale and risky (3 roundings), the round trip through
    # bps (absolute (3 (1 - risky) + 2) U, risky ~ 0.98) and the product with 980,000.
    assert risky_value == pytest.approx(960_000, rel=gamma(7))
    np.testing.assert_allclose(sleeve.weights, f / f.sum())
    # All targets zero: everything in cash.
    none = sleeve_targets(np.zeros(2), 10, 10)
    assert none.cash_buffer_bps == BPS and none.weights.sum() == pytest.approx(1.0)


@pytest.mark.parametrize("args", [
    (np.array([-0.1, 0.5]), 100, 100, 0),
    (np.array([np.nan, 0.5]), 100, 100, 0),
    (np.array([0.1, 0.5]), 0, 100, 0),
    (np.array([0.1, 0.5]), 100, 100, 101),
    (np.array([0.1, 0.5]), 100, 100, -1),
])
def test_sleeve_targets_refuse_bad_input(args):
    f, nav, spot_nav, reserved = args
    with pytest.raises(ConfigError):
        sleeve_targets(f, nav, spot_nav, reserved_cash=reserved)


def test_rebalance_plan_option_legs_default_empty():
    assets, snapshot, state, w = balanced_vault()
    plan = plan_rebalance(snapshot, state, assets, w, cash_buffer_bps=500, slippage_budget_bps=50,
                          drift_threshold_bps=10_000, min_trade_value=1, deadline=0)
    assert isinstance(plan, RebalancePlan) and plan.option_legs == ()
