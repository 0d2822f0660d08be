"""Circuit breakers: the pure checks, the pool price read from slot0, and what a tick does when one trips."""

from __future__ import annotations

import time

import numpy as np
import pytest
from conftest import System

from keeper.breakers import (
    BreakerLimits,
    ChainHeadTracker,
    PoolPriceReader,
    check_chain_stall,
    check_pool_deviation,
    check_price_jump,
    check_stale_oracle,
    decide,
    deviation_bps,
    evaluate,
    pool_price_usd,
)
from keeper.chain import rpc
from keeper.deployment import price_to_answer, sqrt_price_x96
from keeper.errors import ConfigError

SYMBOLS = ("BTC", "ETH")


def test_stale_oracle_trips_only_above_the_limit() -> None:
    trips = check_stale_oracle(SYMBOLS, [1_000, 1_500], 2_000, 600, "skip")
    assert [t.symbol for t in trips] == ["BTC"] and trips[0].observed == 1_000 and trips[0].limit == 600
    assert "1000 s old, limit 600 s" in trips[0].reason
    assert check_stale_oracle(SYMBOLS, [1_400, 1_400], 2_000, 600, "skip") == []  # exactly at the limit: fine


def test_deviation_and_jump_in_bps() -> None:
    np.testing.assert_allclose(deviation_bps(np.array([101.0, 99.0]), np.array([100.0, 100.0])), [100.0, 100.0])
    trips = check_pool_deviation(SYMBOLS, np.array([100.0, 103.0]), np.array([100.0, 100.0]), 250, "derisk")
    assert [(t.breaker, t.symbol, t.action) for t in trips] == [("pool_deviation", "ETH", "derisk")]
    assert trips[0].observed == pytest.approx(300.0)
    jumps = check_price_jump(SYMBOLS, np.array([80.0, 100.5]), np.array([100.0, 100.0]), 1_000, "skip")
    assert [t.symbol for t in jumps] == ["BTC"] and jumps[0].observed == pytest.approx(2_000.0)
    with pytest.raises(ConfigError):
        deviation_bps(np.array([1.0]), np.array([0.0]))
    with pytest.raises(ConfigError):
        deviation_bps(np.array([1.0, 2.0]), np.array([1.0]))


def test_chain_stall_tracker_counts_wall_time_on_one_head() -> None:
    tracker = ChainHeadTracker()
    assert tracker.observe(10, now=100.0) == 0.0
    assert tracker.observe(10, now=130.0) == 30.0
    assert tracker.observe(11, now=131.0) == 0.0
    assert tracker.observe(11, now=140.0) == 9.0
    assert check_chain_stall(30.0, 60.0, 10, "skip") == []
    assert check_chain_stall(61.0, 60.0, 10, "skip")[0].breaker == "chain_stall"


def test_skip_wins_over_derisk_and_no_trip_means_trade() -> None:
    skip = check_price_jump(SYMBOLS, np.array([50.0, 100.0]), np.array([100.0, 100.0]), 100, "skip")
    derisk = check_pool_deviation(SYMBOLS, np.array([100.0, 90.0]), np.array([100.0, 100.0]), 100, "derisk")
    assert decide([]).action == "trade"
    assert decide(derisk).action == "derisk"
    decision = decide(derisk + skip)
    assert decision.action == "skip" and "ETH pool price" in decision.reason and "BTC moved" in decision.reason


def test_evaluate_runs_only_configured_breakers() -> None:
    prices = np.array([100.0, 100.0])
    off = evaluate(BreakerLimits(), SYMBOLS, prices, [0, 0], 5, 10**9, previous_prices_usd=prices * 2,
                   stalled_seconds=1e9)
    assert off.action == "trade"
    limits = BreakerLimits(max_price_jump_bps=100, price_jump_action="derisk", max_pool_deviation_bps=50)
    with pytest.raises(ConfigError, match="no pool prices"):
        evaluate(limits, SYMBOLS, prices, [0, 0], 5, 10)
    # Without a previous tick there is no jump to measure.
    assert evaluate(limits, SYMBOLS, prices, [0, 0], 5, 10, pool_prices_usd=prices).action == "trade"
    with pytest.raises(ConfigError, match="stale_oracle_action"):
        BreakerLimits(stale_oracle_action="panic")


@pytest.mark.parametrize("risk_is_token0", [True, False])
def test_pool_price_inverts_the_deployment_seed(risk_is_token0: bool) -> None:
    for price in (0.0712, 1.0, 2_345.67, 47_123.5):
        sqrt_p = sqrt_price_x96(price_to_answer(price), risk_is_token0)
        assert pool_price_usd(sqrt_p, risk_is_token0, 18, 6) == pytest.approx(price, rel=1e-9)
    with pytest.raises(ConfigError):
        pool_price_usd(0, True, 18, 6)


# --- On chain -------------------------------------------------------------------------------------


def test_pool_reader_matches_the_oracle_after_alignment_and_sees_a_moved_pool(chain: System) -> None:
    keeper = chain.make_keeper()
    reader = PoolPriceReader(chain.w3, keeper.reader.vault, keeper.reader.assets, keeper.reader.base_asset, 6)
    snap = keeper.reader.snapshot()
    np.testing.assert_allclose(reader.prices_usd(), snap.prices_usd, rtol=1e-6)
    moved = snap.answers[1] * 105 // 100
    chain.arbitrageur.align(chain.deployment.assets[1].token, moved)
    dev = deviation_bps(reader.prices_usd(), snap.prices_usd)
    assert dev[1] == pytest.approx(500.0, abs=0.5) and dev[0] < 0.01 and dev[2] < 0.01


def test_a_moved_pool_skips_the_tick_with_its_reason_and_sends_nothing(chain: System) -> None:
    chain.deposit(chain.alice, 100_000)
    keeper = chain.make_keeper(breaker_max_pool_deviation_bps=200)
    chain.arbitrageur.align(chain.deployment.assets[0].token, keeper.reader.snapshot().answers[0] * 97 // 100)
    nonce = chain.w3.eth.get_transaction_count(chain.keeper)
    report = keeper.run_once()
    assert report.status == "skipped" and report.reason_code == "breaker:pool_deviation"
    assert "circuit breaker: BTC pool price" in report.reason and "limit 200 bps" in report.reason
    assert chain.w3.eth.get_transaction_count(chain.keeper) == nonce
    row = keeper.journal.ticks()[-1]
    assert row["status"] == "skipped" and row["detail"]["breakers"][0]["breaker"] == "pool_deviation"
    assert row["detail"]["breakers"][0]["observed"] == pytest.approx(300.0, abs=1.0)


def test_stale_oracle_breaker_skips_before_the_vault_would_refuse(chain: System) -> None:
    chain.deposit(chain.alice, 100_000)
    rpc(chain.w3, "evm_increaseTime", [3_600])
    rpc(chain.w3, "evm_mine", [])
    keeper = chain.make_keeper(breaker_max_oracle_age_seconds=1_800)
    report = keeper.run_once()
    assert report.status == "skipped" and report.reason_code == "breaker:stale_oracle"
    assert {b["symbol"] for b in report.breakers} == {"BTC", "ETH", "SOL"}
    # The vault itself (heartbeat two days) would still have accepted a rebalance.
    assert chain.make_keeper().plan_tick().status == "planned"


def test_chain_stall_breaker(chain: System) -> None:
    chain.deposit(chain.alice, 100_000)
    keeper = chain.make_keeper(breaker_chain_stall_seconds=0.2)
    assert keeper.plan_tick().status == "planned"  # first sight of the head
    time.sleep(0.3)  # Anvil mines only on transactions: the head stays put
    report = keeper.plan_tick()
    assert report.status == "skipped" and report.reason_code == "breaker:chain_stall"
    chain.tx.transact(chain.owner, chain.base.functions.mint(chain.owner, 1))  # a new block
    assert keeper.plan_tick().status == "planned"


def test_price_jump_derisks_toward_the_base_asset_within_the_turnover_cap(chain: System) -> None:
    chain.deposit(chain.alice, 200_000)
    keeper = chain.make_keeper(breaker_max_price_jump_bps=1_000, breaker_price_jump_action="derisk")
    first = keeper.run_once()
    assert first.status == "rebalanced" and not first.derisk
    state = keeper.reader.vault_state()
    risk_before = state.balances
    # The next tick sees BTC 25 % lower than the previous tick's price (a crash to de-risk on).
    chain.tx.transact(chain.owner, chain.vault.functions.setLimits(100, 3_000, 200))
    keeper.previous_prices_usd = keeper.reader.snapshot().prices_usd * np.array([1 / 0.75, 1.0, 1.0])
    report = keeper.run_once()
    assert report.status == "rebalanced" and report.derisk and report.reason_code == "derisk"
    assert report.reason.startswith("derisk: BTC moved")
    assert all(leg.side == "sell" for leg in report.plan.legs)
    assert report.plan.turnover_bps <= 3_000
    after = keeper.reader.vault_state()
    assert all(a < b for a, b in zip(after.balances, risk_before))
    assert after.base_balance > state.base_balance
    assert after.rebalance_epoch == state.rebalance_epoch + 1
    row = keeper.journal.ticks()[-1]
    assert row["status"] == "rebalanced" and row["detail"]["derisk"] is True
    # The breaker holds for one tick: the crash price is the next reference.
    assert keeper.plan_tick().reason_code != "derisk"


def test_jump_breaker_reference_survives_a_restart_through_the_journal(chain: System, tmp_path) -> None:
    from keeper.chain import ANVIL_KEYS
    from keeper.journal import Journal
    from keeper.runner import Keeper

    journal_path = tmp_path / "j.sqlite"
    config = chain.keeper_config(journal_path=journal_path, breaker_max_price_jump_bps=500)
    keeper = Keeper(config, w3=chain.w3, private_key=ANVIL_KEYS[1], journal=Journal(journal_path))
    keeper.run_once()
    prices = keeper.reader.snapshot().prices_usd
    restarted = Keeper(config, w3=chain.w3, private_key=ANVIL_KEYS[1], journal=Journal(journal_path))
    np.testing.assert_allclose(restarted.previous_prices_usd, prices)
