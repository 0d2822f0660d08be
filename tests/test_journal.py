"""Unit tests of keeper.journal.Journal: an append-only SQLite record of ticks."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from keeper.journal import Journal


@dataclass(frozen=True)
class Leg:
    symbol: str
    amount_in: int
    weights: np.ndarray


@pytest.fixture
def journal():
    j = Journal(":memory:")
    yield j
    j.close()


def test_record_and_ticks_round_trip_arrays_dataclasses_and_columns(journal):
    rng = np.random.default_rng(0)
    cov = rng.normal(size=(3, 3))
    weights = rng.dirichlet(np.ones(3))
    legs = (Leg("WETH", 5 * 10**17, weights[:2]), Leg("WBTC", 12_345, np.array([1, 2], dtype=np.int64)))
    row_id = journal.record(
        "rebalanced",
        "drift 412.0 bps",
        block_number=np.int64(17),
        block_timestamp=1_700_000_000,
        epoch=3,
        tx_hash="0x" + "ab" * 32,
        gas_used=412_345,
        effective_gas_price=np.int64(3 * 10**9),
        nav_before=123_456_789,
        nav_after=123_400_000,
        covariance=cov,
        target_weights=weights,
        drift_bps=np.float64(412.0),
        legs=legs,
        symbols=("WETH", "WBTC", "LINK"),
        timings={"oracle": 0.25, "nested": {"x": np.float32(0.5)}},
    )
    assert row_id >= 1
    [tick] = journal.ticks()
    assert tick["id"] == row_id
    assert tick["status"] == "rebalanced" and tick["reason"] == "drift 412.0 bps"
    assert (tick["block_number"], tick["block_timestamp"], tick["epoch"]) == (17, 1_700_000_000, 3)
    assert tick["tx_hash"] == "0x" + "ab" * 32
    assert (tick["gas_used"], tick["effective_gas_price"]) == (412_345, 3 * 10**9)
    assert (tick["nav_before"], tick["nav_after"]) == (123_456_789, 123_400_000)
    assert isinstance(tick["recorded_at"], float)
    detail = tick["detail"]
    np.testing.assert_array_equal(np.array(detail["covariance"]), cov)  # exact: JSON floats round-trip
    np.testing.assert_array_equal(np.array(detail["target_weights"]), weights)
    assert detail["drift_bps"] == 412.0
    assert detail["legs"] == [
        {"symbol": "WETH", "amount_in": 5 * 10**17, "weights": weights[:2].tolist()},
        {"symbol": "WBTC", "amount_in": 12_345, "weights": [1, 2]},
    ]
    assert detail["symbols"] == ["WETH", "WBTC", "LINK"]
    assert detail["timings"] == {"oracle": 0.25, "nested": {"x": 0.5}}
    assert detail["nav_before"] == 123_456_789  # columns are also in detail


def test_skipped_tick_with_no_columns(journal):
    journal.record("skipped", "drift 12.0 bps below threshold 300.0 bps")
    [tick] = journal.ticks()
    assert tick["status"] == "skipped"
    assert tick["nav_before"] is None and tick["tx_hash"] is None
    assert tick["detail"] == {}


def test_big_integers_of_an_18_decimal_base_asset_round_trip(journal):
    """NAV of a $1M vault in an 18-decimal base asset (e.g. DAI) is 10^24 units: above SQLite's int64."""
    nav = 10**24 + 7
    journal.record("rebalanced", nav_before=nav, nav_after=nav - 10**18, detail_amount=nav)
    [tick] = journal.ticks()
    assert tick["nav_before"] == nav and tick["nav_after"] == nav - 10**18
    assert tick["detail"]["detail_amount"] == nav


def test_numpy_scalars_become_their_python_values(journal):
    journal.record("ok", flag=np.bool_(True), count=np.int32(4), x=np.float32(0.5))
    assert journal.ticks()[0]["detail"] == {"flag": True, "count": 4, "x": 0.5}


def test_status_filter_and_order(journal):
    statuses = ["skipped", "rebalanced", "failed", "skipped", "rebalanced", "skipped"]
    ids = [journal.record(s, f"tick {i}", epoch=i) for i, s in enumerate(statuses)]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert [t["epoch"] for t in journal.ticks()] == list(range(6))
    assert [t["epoch"] for t in journal.ticks(status="skipped")] == [0, 3, 5]
    assert [t["epoch"] for t in journal.ticks(status="rebalanced")] == [1, 4]
    assert journal.ticks(status="nothing") == []


def test_limit_keeps_the_most_recent_oldest_first(journal):
    statuses = ["skipped", "rebalanced"] * 5
    for i, s in enumerate(statuses):
        journal.record(s, epoch=i)
    assert [t["epoch"] for t in journal.ticks(limit=3)] == [7, 8, 9]
    assert [t["epoch"] for t in journal.ticks(status="skipped", limit=2)] == [6, 8]
    assert [t["epoch"] for t in journal.ticks(limit=100)] == list(range(10))


def test_persists_across_reopen(tmp_path):
    path = tmp_path / "nested" / "dir" / "journal.sqlite"  # parents are created
    first = Journal(path)
    first.record("rebalanced", "ok", epoch=1, weights=np.array([0.25, 0.75]))
    first.close()
    assert path.exists()
    second = Journal(path)
    second.record("skipped", "calm", epoch=2)
    ticks = second.ticks()
    second.close()
    assert [(t["status"], t["epoch"]) for t in ticks] == [("rebalanced", 1), ("skipped", 2)]
    assert ticks[0]["detail"]["weights"] == [0.25, 0.75]
    third = Journal(path)
    assert len(third.ticks()) == 2
    third.close()
