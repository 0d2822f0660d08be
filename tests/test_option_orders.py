"""The keeper's options path on chain (keeper.decision in options mode, keeper.option_desk, keeper.option_orders): the 25-delta 30-day put on the largest risk
contributor within the premium budget, premium limits inside the vault's bound, the roll before expiry,
settlement in and out of the money, and the delta hedge that brings every asset's exposure (spot + option
delta) within the band of its target.

One module-scoped deployment (``options_env.deploy_env``: ``deploy_system`` then ``deploy_options``) on its
own Anvil; alice deposits, then every test runs from a snapshot of that state with a fresh
:class:`~keeper.option_desk.OptionsDesk` whose decisions go through the keeper's one decision function.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from options_env import (
    ACCOUNT_3,
    ACCOUNT_4,
    ACCOUNT_5,
    BPS,
    DAY,
    PRICES,
    SCALE,
    SYMBOLS,
    USDC,
    VOLS,
    OptionsEnv,
    deploy_env,
    reverted,
)

from keeper import options
from keeper.chain import ANVIL_KEYS
from keeper.config import KeeperConfig
from keeper.deployment import MAX_UINT256, Arbitrageur, price_to_answer
from keeper.errors import OptionLegError, OptionPremiumBoundError
from keeper.hedging import HedgeTriggerConfig
from keeper.overlay import OptionOrder, OverlayConfig, OverlayPlan
from keeper.journal import Journal
from keeper.executor import encode_rebalance_with_options
from keeper.option_chain import ChainOptionQuoter, read_implied_vols, read_option_book, settle_expired
from keeper.option_desk import OptionsDesk
from keeper.option_orders import STRIKE_TICK_WAD, WAD, amount_to_wad, option_legs_for_plan, strike_to_wad
from keeper.runner import Keeper
from keeper.greeks import PortfolioGreeks, delta_adjusted_exposures, portfolio_greeks

#: ERC-like targets of the risky sleeve and a covariance in which BTC is the largest risk contributor.
TARGETS = np.array([0.5, 0.3, 0.2])  # the risk sleeve (sums to 1)
CORR = np.array([[1.0, 0.8, 0.7], [0.8, 1.0, 0.75], [0.7, 0.75, 1.0]])
COV = CORR * np.outer(VOLS, VOLS)
CASH_BUFFER_BPS = 2000.0
#: The policy's targets as the overlay takes them: fractions of NAV, the cash buffer out.
NAV_TARGETS = TARGETS * (1 - CASH_BUFFER_BPS / 10_000)
BAND_BPS = 200.0


@dataclass
class Env(OptionsEnv):
    anyone: str
    alice: str
    arb: Arbitrageur | None = None  # set once the system is deployed
    prices: tuple[float, ...] = PRICES

    def push_all(self, prices=PRICES, vols=VOLS, at: int | None = None) -> None:
        """New rounds of every price and vol feed, mined at ``at`` (then the chain stays there); the pools follow."""
        super().push_all(prices, vols, at)
        self.prices = tuple(prices)
        self.align()

    def align(self) -> None:
        """An arbitrageur moves every pool back to the oracle price (as the demo does each day)."""
        for token, p in zip(self.tokens, self.prices):
            self.arb.align(token.address, price_to_answer(p))

    def step(self, overlay: OptionsDesk):
        report = overlay.step(NAV_TARGETS, COV, overlay.keeper.decide, overlay.keeper.config.chain.max_oracle_age_seconds)
        self.align()
        return report

    def overlay(self, tmp_path, config: OverlayConfig | None = None, band_bps: float = BAND_BPS,
                mode: str = "budget") -> OptionsDesk:
        cfg = KeeperConfig(rpc_url=self.node.rpc_url, vault_address=self.vault.address, quoter_address=self.system.quoter,
                           cash_buffer_bps=CASH_BUFFER_BPS, slippage_budget_bps=50, journal_path=tmp_path / "j.sqlite")
        keeper = Keeper(cfg, w3=self.w3, private_key=ANVIL_KEYS[1], journal=Journal(tmp_path / "j.sqlite"))
        policy = config or OverlayConfig(max_put_assets=1, hedge_ratio=0.5, premium_budget_bps=100.0)
        desk = OptionsDesk(keeper.reader, keeper.executor, keeper.journal, self.market, policy,
                           HedgeTriggerConfig(delta_band_bps=band_bps, mode=mode),
                           settle=lambda fn: self.tx.transact(self.anyone, fn), settler=self.anyone)
        desk.keeper = keeper  # the tests reach the keeper's reader, executor and journal through the desk
        return desk

    def greeks(self, overlay: OptionsDesk) -> tuple[PortfolioGreeks, float]:
        """Greeks of the vault's book read from chain now, and its NAV in USD."""
        reader = overlay.keeper.reader
        balances = self.vault.functions.holdings().call()[1][1:]
        book = read_option_book(self.vault, self.market, reader.assets)
        vols = read_implied_vols(self.market, reader.assets)
        spots = reader.snapshot().prices_usd
        g = portfolio_greeks(
            {s: b / WAD for s, b in zip(SYMBOLS, balances)}, [h.position() for h in book],
            dict(zip(SYMBOLS, spots)), dict(zip(SYMBOLS, vols)), self.now(), symbols=SYMBOLS,
        )
        return g, self.vault.functions.totalAssets().call() / USDC


@pytest.fixture(scope="module")
def deployed():
    env = deploy_env(200_000_000, 20_000_000, Env, anyone=ACCOUNT_3, alice=ACCOUNT_4)
    env.arb = Arbitrageur(env.w3, env.system, ACCOUNT_5, env.owner)
    env.tx.transact(env.owner, env.base.functions.mint(env.alice, 10_000_000 * USDC))
    env.tx.transact(env.alice, env.base.functions.approve(env.system.vault, MAX_UINT256))
    env.tx.transact(env.alice, env.vault.functions.deposit(2_000_000 * USDC, env.alice))
    yield env
    env.stop()


@pytest.fixture
def env(deployed: Env):
    yield from reverted(deployed)


def _exposure_drift_bps(env: Env, overlay: OptionsDesk) -> np.ndarray:
    """Net delta (spot + options) against the policy's targets: what the ``"delta_target"`` hedge aims at."""
    g, nav = env.greeks(overlay)
    target = TARGETS * (1 - CASH_BUFFER_BPS / BPS)
    return (delta_adjusted_exposures(g, nav) - target) * BPS


def _spot_drift_bps(env: Env, overlay: OptionsDesk) -> np.ndarray:
    """Spot holdings against the policy's targets: what the ``"budget"`` hedge aims at (the puts' delta held)."""
    g, nav = env.greeks(overlay)
    target = TARGETS * (1 - CASH_BUFFER_BPS / BPS)
    return (g.spot_units * g.spots / nav - target) * BPS


def test_first_step_hedges_spot_then_buys_the_25_delta_put_on_the_largest_contributor(env: Env, tmp_path) -> None:
    overlay = env.overlay(tmp_path)
    first = env.step(overlay)
    # Never hedged: the time trigger fires, the vault holds no spot yet, so no put (nothing to protect).
    assert first.status == "traded", first.reason
    assert set(first.decision["reasons"]) == {"time", "delta_drift:BTC", "delta_drift:ETH", "delta_drift:SOL"}
    assert not first.legs
    assert np.all(np.abs(_spot_drift_bps(env, overlay)) <= BAND_BPS)

    nav_before = env.vault.functions.totalAssets().call()
    second = env.step(overlay)
    assert second.status == "traded", second.reason
    (leg,) = second.legs
    g_before = second.decision["greeks"]
    exposures = np.array([g_before[s]["spot_units"] * g_before[s]["spots"] for s in SYMBOLS]) / (nav_before / USDC)
    rc = exposures * (COV @ exposures)
    assert leg.symbol == SYMBOLS[int(np.argmax(rc))] == "BTC"
    assert leg.is_buy and not leg.is_call
    now = env.now()
    assert abs(leg.expiry - (now + 30 * DAY)) <= 5  # planned one block earlier
    # 25-delta at the market's vol and tenor; the strike sits on the cent grid.
    assert leg.strike % STRIKE_TICK_WAD == 0
    tau = options.year_fraction(leg.expiry - (now - 1))
    assert float(options.delta(PRICES[0], leg.strike / WAD, tau, VOLS[0], 0.0, 0.0, False)) == pytest.approx(-0.25, abs=1e-4)
    # Half the BTC units held when planned, rounded down.
    btc_units = g_before["BTC"]["spot_units"]
    assert leg.amount == amount_to_wad(0.5 * btc_units)
    # Within the overlay's premium budget (100 bps of NAV) and the vault's (200 bps per period).
    ((index, is_buy, amount, premium, fair),) = second.executed
    assert (index, is_buy, amount) == (0, True, leg.amount)
    assert premium <= leg.premium_limit
    assert premium <= nav_before * 100 // BPS
    assert env.vault.functions.budgetSpent(2).call() == premium
    (held,) = read_option_book(env.vault, env.market, overlay.keeper.reader.assets)
    assert (held.strike, held.expiry, held.amount) == (leg.strike, leg.expiry, leg.amount)
    # The hedge in the same transaction: every spot holding is within the band of its target (the
    # put's delta is protection held, not offset).
    assert np.all(np.abs(_spot_drift_bps(env, overlay)) <= BAND_BPS)
    # The journal holds each decision with its Greeks.
    rows = overlay.keeper.journal.ticks("overlay_traded")
    assert len(rows) == 2
    detail = rows[-1]["detail"]
    assert detail["greeks_before"]["BTC"]["option_delta_units"] == 0.0  # the book before: no option
    planned = detail["hedge_decision"]["greeks"]["BTC"]["option_delta_units"]  # the book the hedge targets
    assert planned == pytest.approx(-0.25 * leg.amount / WAD, rel=1e-3)
    assert detail["overlay_plan"]["orders"][0]["action"] == "open"
    assert detail["greeks_after"]["BTC"]["option_delta_units"] == pytest.approx(-0.25 * leg.amount / WAD, rel=1e-3)


def test_budget_hedge_holds_the_puts_through_a_fall(env: Env, tmp_path) -> None:
    overlay = env.overlay(tmp_path, OverlayConfig(max_put_assets=2, hedge_ratio=0.5, premium_budget_bps=150.0))
    env.step(overlay)
    env.step(overlay)  # puts on BTC and ETH
    assert len(read_option_book(env.vault, env.market, overlay.keeper.reader.assets)) == 2
    g0, nav0 = env.greeks(overlay)
    # BTC falls 10 %: its spot weight drops out of the band and its put gains delta. The hedge does not buy BTC
    # back (that would undo the protection); the net delta of BTC stays below its target by the put's delta.
    env.push_all((36_000.0, 3_000.0, 100.0), at=env.now() + 3600)
    assert _spot_drift_bps(env, overlay)[0] < -BAND_BPS
    step = env.step(overlay)
    assert "protection_held:BTC" in step.decision["reasons"], step.decision["reasons"]
    assert step.decision["assets"]["BTC"]["blocked"] and step.decision["assets"]["BTC"]["trade_units"] <= 0.0
    g1, nav1 = env.greeks(overlay)
    assert g1.spot_units[0] <= g0.spot_units[0]
    assert g1.option_delta_units[0] < g0.option_delta_units[0] < 0.0
    assert delta_adjusted_exposures(g1, nav1)[0] < TARGETS[0] * (1 - CASH_BUFFER_BPS / BPS)
    # The journal carries the convex risk model's view only when the edge passes returns; the chain desk does not.
    assert overlay.keeper.journal.ticks("overlay_traded")[-1]["detail"]["overlay_plan"]["risk_before"] is None


def test_hedge_brings_each_delta_to_its_target_within_the_band(env: Env, tmp_path) -> None:
    overlay = env.overlay(tmp_path, OverlayConfig(max_put_assets=2, hedge_ratio=0.5, premium_budget_bps=150.0),
                          mode="delta_target")
    env.step(overlay)
    env.step(overlay)  # puts on BTC and ETH, hedged in the same transaction
    assert len(read_option_book(env.vault, env.market, overlay.keeper.reader.assets)) == 2
    assert np.all(np.abs(_exposure_drift_bps(env, overlay)) <= BAND_BPS)
    # A 10 % fall of BTC moves its exposure (spot and put delta) out of the band; the next step re-hedges.
    env.push_all((36_000.0, 3_000.0, 100.0), at=env.now() + 3600)
    drift = _exposure_drift_bps(env, overlay)
    assert np.max(np.abs(drift)) > BAND_BPS
    step = env.step(overlay)
    assert step.status == "traded", step.reason
    assert "delta_drift:BTC" in step.decision["reasons"]
    assert step.plan.legs and step.target_scale == step.cash_scale == 1.0  # reachable: nothing scaled down
    after = _exposure_drift_bps(env, overlay)
    assert np.all(np.abs(after) <= BAND_BPS), after
    # The put's delta counted in the hedge: BTC spot is above its exposure target.
    g, nav = env.greeks(overlay)
    assert g.option_delta_units[0] < 0 and g.spot_units[0] * g.spots[0] / nav > TARGETS[0] * 0.8


def test_premium_limit_within_the_vault_bound_and_refused_beyond(env: Env, tmp_path) -> None:
    overlay = env.overlay(tmp_path)
    env.step(overlay)
    reader = overlay.keeper.reader
    now = env.now()
    strike = 36_000.0
    plan = _open_plan(strike, now + 30 * DAY, 5.0)
    (leg,) = option_legs_for_plan(plan, (), ChainOptionQuoter(env.vault, env.market), reader.assets, now, tolerance_bps=20)
    ask, fair = env.market.functions.quote(leg.underlying, leg.strike, leg.expiry, False, leg.amount, True).call()
    bound = fair * (BPS + env.vault.functions.maxPremiumBps().call()) // BPS
    assert (leg.quoted_premium, leg.fair_value) == (ask, fair)
    assert leg.premium_limit == min(-(-ask * (BPS + 20) // BPS), bound)
    assert ask <= leg.premium_limit <= bound
    assert leg.amount == 5 * WAD and leg.strike == strike_to_wad(strike)
    # A bound tighter than the market's spread (100 bps) cannot be met: refused before sending.
    env.tx.transact(env.owner, env.vault.functions.setOptionLimits(50, 200, 30 * DAY, 8))
    with pytest.raises(OptionPremiumBoundError, match="above the vault's bound"):
        option_legs_for_plan(plan, (), ChainOptionQuoter(env.vault, env.market), reader.assets, env.now())


def test_buys_are_scaled_to_what_is_left_of_the_vault_premium_budget(env: Env, tmp_path) -> None:
    overlay = env.overlay(tmp_path)
    env.step(overlay)
    env.tx.transact(env.owner, env.vault.functions.setOptionLimits(env.vault.functions.maxPremiumBps().call(), 5, 30 * DAY, 8))  # 5 bps of NAV
    now = env.now()
    plan = _open_plan(36_000.0, now + 30 * DAY, 10.0)  # ~ 0.7 % of NAV at full size
    (leg,) = option_legs_for_plan(plan, (), ChainOptionQuoter(env.vault, env.market), overlay.keeper.reader.assets, now)
    budget = env.vault.functions.totalAssets().call() * 5 // BPS
    assert 0 < leg.amount < 10 * WAD
    assert leg.premium_limit <= budget
    assert "premium budget" in leg.reason
    # The vault accepts it.
    state = overlay.keeper.reader.vault_state()
    rp = _bare_plan(state, [leg], now)
    overlay.keeper.executor.send(rp, encode_rebalance_with_options(env.vault, rp))
    assert 0 < env.vault.functions.budgetSpent(2).call() <= budget


def test_roll_before_expiry_sells_the_old_series_and_buys_a_new_one(env: Env, tmp_path) -> None:
    # The roll's mechanics at the spread alone: with the deployment's feed steps the bid of a 4-day
    # out-of-the-money put lies ~30 % under fair, beyond the vault's sell bound, and the keeper skips the roll
    # (test_a_roll_whose_bid_is_beyond_the_vault_bound_is_skipped).
    mk = env.market.functions
    btc = env.tokens[0].address
    cfg = mk.underlyingConfig(btc).call()
    env.tx.transact(env.owner, mk.listUnderlying(btc, cfg[0], cfg[2], cfg[1], cfg[3], 0, 0))
    overlay = env.overlay(tmp_path)
    env.step(overlay)
    env.step(overlay)
    (old,) = read_option_book(env.vault, env.market, overlay.keeper.reader.assets)
    # 26 days later (4 days to expiry, inside the 5-day roll window).
    env.push_all(at=old.expiry - 4 * DAY)
    step = env.step(overlay)
    assert step.status == "traded", step.reason
    sell, buy = step.legs
    assert (sell.is_buy, sell.strike, sell.expiry, sell.amount) == (False, old.strike, old.expiry, old.amount)
    assert sell.reason.startswith("roll")
    assert buy.is_buy and buy.symbol == "BTC" and buy.expiry > old.expiry
    (new,) = read_option_book(env.vault, env.market, overlay.keeper.reader.assets)
    assert new.expiry == buy.expiry and new.amount == buy.amount
    assert env.market.functions.positionOf(old.series_id, env.vault.address).call() == 0
    premiums = {e[1]: e[3] for e in step.executed}
    assert premiums[False] >= sell.premium_limit and premiums[True] <= buy.premium_limit


def test_a_roll_whose_bid_is_beyond_the_vault_bound_is_held_to_settlement(env: Env, tmp_path) -> None:
    """With the feed steps on (the local deployment), a near-expiry out-of-the-money put bids far under fair:
    the keeper does not sell beyond the vault's bound. That close is left out with its reason, the put is held
    to settlement, and the rest of the decision (the delta hedge, the new put) is not blocked by it."""
    overlay = env.overlay(tmp_path)
    env.step(overlay)
    env.step(overlay)
    (old,) = read_option_book(env.vault, env.market, overlay.keeper.reader.assets)
    env.push_all(at=old.expiry - 4 * DAY)
    step = env.step(overlay)
    assert step.overlay is not None, step.reason
    assert any("maxPremiumBps" in r and "held to settlement" in r for r in step.overlay["refused_orders"]), step.overlay
    assert env.market.functions.positionOf(old.series_id, env.vault.address).call() == old.amount
    assert step.status == "traded", step.reason  # the roll's new put (and the hedge) went ahead


@pytest.mark.parametrize("final_price, in_the_money", [(30_000.0, True), (45_000.0, False)])
def test_settle_after_expiry(env: Env, tmp_path, final_price: float, in_the_money: bool) -> None:
    overlay = env.overlay(tmp_path)
    env.step(overlay)
    now = env.now()
    strike = 36_000.0
    (leg,) = option_legs_for_plan(_open_plan(strike, now + 10 * DAY, 3.0), (), ChainOptionQuoter(env.vault, env.market),
                                  overlay.keeper.reader.assets, now)
    state = overlay.keeper.reader.vault_state()
    rp = _bare_plan(state, [leg], now)
    overlay.keeper.executor.send(rp, encode_rebalance_with_options(env.vault, rp))
    (held,) = read_option_book(env.vault, env.market, overlay.keeper.reader.assets)
    # The settlement round is the last price before expiry; a later round exists too.
    env.push_all((final_price, 3_000.0, 100.0), at=held.expiry - 600)
    env.push_all((20_000.0, 3_000.0, 100.0), at=held.expiry + 3600)
    # Not yet expired for an earlier clock: nothing to settle.
    assert settle_expired(env.vault, env.market, [held], held.expiry - 1, overlay.settle, env.anyone) == ()
    base_before = env.base.functions.balanceOf(env.vault.address).call()
    (settled,) = settle_expired(env.vault, env.market, [held], env.now(), overlay.settle, env.anyone)
    payoff = max(leg.strike - int(final_price) * WAD, 0)
    assert settled.payout == payoff * held.amount // SCALE
    assert (settled.payout > 0) == in_the_money
    assert env.base.functions.balanceOf(env.vault.address).call() - base_before == settled.payout
    assert env.vault.functions.openSeries().call() == []


def test_overlay_step_settles_expired_series_itself(env: Env, tmp_path) -> None:
    overlay = env.overlay(tmp_path)
    env.step(overlay)
    env.step(overlay)
    (held,) = read_option_book(env.vault, env.market, overlay.keeper.reader.assets)
    env.push_all((25_000.0, 3_000.0, 100.0), at=held.expiry - 60)
    env.push_all((25_000.0, 3_000.0, 100.0), at=held.expiry + 60)
    step = env.step(overlay)
    (s,) = step.settlements
    assert s.payout == (held.strike - 25_000 * WAD) * held.amount // SCALE > 0


def test_orders_that_cannot_become_legs_are_refused(env: Env, tmp_path) -> None:
    overlay = env.overlay(tmp_path)
    assets = overlay.keeper.reader.assets
    now = env.now()
    call = dataclasses.replace(_open_plan(44_000.0, now + 30 * DAY, 2.0).orders[0], is_call=True, quantity=-2.0)
    with pytest.raises(OptionLegError, match="long options only"):
        option_legs_for_plan(_plan([call]), (), ChainOptionQuoter(env.vault, env.market), assets, now)
    close = dataclasses.replace(call, action="close", is_call=False, quantity=-1.0)
    with pytest.raises(OptionLegError, match="holds no such series"):
        option_legs_for_plan(_plan([close]), (), ChainOptionQuoter(env.vault, env.market), assets, now)
    with pytest.raises(OptionLegError, match="not among"):
        option_legs_for_plan(_plan([dataclasses.replace(close, symbol="DOGE")]), (), ChainOptionQuoter(env.vault, env.market), assets,
                             now)
    with pytest.raises(OptionLegError):
        strike_to_wad(float("nan"))
    with pytest.raises(OptionLegError):
        amount_to_wad(-1.0)


def test_calldata_round_trip(env: Env, tmp_path) -> None:
    overlay = env.overlay(tmp_path)
    now = env.now()
    (leg,) = option_legs_for_plan(_open_plan(36_000.0, now + 30 * DAY, 1.0), (), ChainOptionQuoter(env.vault, env.market),
                                  overlay.keeper.reader.assets, now)
    rp = _bare_plan(overlay.keeper.reader.vault_state(), [leg], now)
    fn, args = env.vault.decode_function_input(encode_rebalance_with_options(env.vault, rp))
    assert fn.fn_name == "rebalanceWithOptions"
    decoded = args["optionLegs"][0]
    assert list(decoded.values() if hasattr(decoded, "values") else decoded) == list(leg.as_tuple())
    assert (args["legs"], args["minNavAfter"], args["expectedEpoch"], args["deadline"]) == (
        [], rp.min_nav_after, rp.expected_epoch, rp.deadline)


# --------------------------------------------------------------------------- helpers
def _order(strike: float, expiry: int, qty: float) -> OptionOrder:
    return OptionOrder("open", "BTC", strike, expiry, False, qty, 0.0, 0.0, 0.0, 0.0, 0.0, "protective put")


def _plan(orders: list[OptionOrder]) -> OverlayPlan:
    return OverlayPlan(SYMBOLS, tuple(orders), (), 0.0, 0.0, 0.0, np.zeros(3), np.zeros(3))


def _open_plan(strike: float, expiry: int, qty: float) -> OverlayPlan:
    return _plan([_order(strike, expiry, qty)])


def _bare_plan(state: Any, legs: list, now: int):
    from keeper.option_orders import with_option_legs
    from keeper.planner import RebalancePlan

    w = np.zeros(3)
    spot = RebalancePlan((), state.rebalance_epoch, now + 600, state.total_assets, state.total_assets, w, w, 0.0, 0.0,
                         50, skip_reason="options only")
    return with_option_legs(spot, legs, state.total_assets, 0)


def test_unreachable_targets_are_scaled_to_what_the_vault_can_hold(env: Env, tmp_path) -> None:
    # Full-size puts on two assets, then a fall: spot + |put delta| would need more than the NAV (no leverage).
    overlay = env.overlay(tmp_path, OverlayConfig(max_put_assets=2, hedge_ratio=1.0, premium_budget_bps=150.0),
                          mode="delta_target")
    env.step(overlay)
    env.step(overlay)
    env.push_all((30_000.0, 2_300.0, 100.0), at=env.now() + 3600)
    step = env.step(overlay)
    assert step.status == "traded", step.reason
    assert 0.0 < step.target_scale < 1.0
    assert step.cash_scale == pytest.approx(1.0, abs=1e-9)
    assert overlay.keeper.journal.ticks("overlay_traded")[-1]["detail"]["target_scale"] == step.target_scale
    # Every delta within the band of its scaled target; the vault keeps cash for the premiums.
    g, nav = env.greeks(overlay)
    target = TARGETS * (1 - CASH_BUFFER_BPS / BPS) * step.target_scale
    assert np.all(np.abs(delta_adjusted_exposures(g, nav) - target) * BPS <= BAND_BPS)
    assert env.base.functions.balanceOf(env.vault.address).call() > 0
    # The next step has nothing to do: no churn against an unreachable target.
    assert env.step(overlay).status == "skipped"


def test_refused_steps_and_orders_are_journalled(env: Env, tmp_path) -> None:
    overlay = env.overlay(tmp_path)
    epoch = env.vault.functions.rebalanceEpoch().call()
    # a covariance of the wrong shape: the step is refused and sends nothing
    step = overlay.step(NAV_TARGETS, np.eye(2), overlay.keeper.decide, overlay.keeper.config.chain.max_oracle_age_seconds)
    assert step.status == "skipped" and "PolicyInputError" in step.reason and "covariance" in step.reason
    assert env.vault.functions.rebalanceEpoch().call() == epoch
    rows = overlay.keeper.journal.ticks("overlay_skipped")
    assert len(rows) == 1 and "PolicyInputError" in rows[0]["reason"] and rows[0]["tx_hash"] is None
    # A tighter premium bound than the market's spread, once there is spot to protect: the put the overlay wants
    # is left out with its reason (nothing is bought), and the rest of the decision is not blocked by it.
    env.step(overlay)
    env.tx.transact(env.owner, env.vault.functions.setOptionLimits(50, 200, 30 * DAY, 8))
    step = env.step(overlay)
    assert any("above the vault's bound" in r and "not bought" in r for r in step.overlay["refused_orders"]), step.overlay
    assert read_option_book(env.vault, env.market, overlay.keeper.reader.assets) == ()
    journalled = overlay.keeper.journal.ticks(f"overlay_{step.status}")[-1]
    assert journalled["detail"]["overlay_plan"]["refused_orders"] == step.overlay["refused_orders"]
