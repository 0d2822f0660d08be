"""Unit tests of keeper.journal.Journal: an append-only SQLite record of ticks."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pytest

from keeper.errors import ConfigError
from keeper.journal import Journal
from keeper.journal_records import (
    BacktestTickRecord,
    Journalled,
    OverlayStepRecord,
    SettlementRecord,
    ShutdownRecord,
    TickRecord,
)


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
    row_id = journal.record_tick(TickRecord(
        status="rebalanced",
        reason="drift 412.0 bps",
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
    ))
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
    journal.record_tick(TickRecord(status="skipped", reason="drift 12.0 bps below threshold 300.0 bps"))
    [tick] = journal.ticks()
    assert tick["status"] == "skipped" and tick["kind"] == "tick"
    assert tick["nav_before"] is None and tick["tx_hash"] is None
    detail = tick["detail"]
    assert detail["reason_code"] is None and detail["legs"] is None and detail["policy"] is None
    assert detail["timings"] == {} and detail["breakers"] == [] and detail["derisk"] is False
    assert detail["symbols"] == []


def test_big_integers_of_an_18_decimal_base_asset_round_trip(journal):
    """NAV of a $1M vault in an 18-decimal base asset (e.g. DAI) is 10^24 units: above SQLite's int64."""
    nav = 10**24 + 7
    journal.record_tick(TickRecord(status="rebalanced", nav_before=nav, nav_after=nav - 10**18))
    [tick] = journal.ticks()
    assert tick["nav_before"] == nav and tick["nav_after"] == nav - 10**18
    assert tick["detail"]["nav_before"] == nav
    [entry] = journal.tick_records()
    assert entry.record.nav_before == nav and entry.record.nav_after == nav - 10**18


def test_numpy_scalars_become_their_python_values(journal):
    record = TickRecord(status="ok", derisk=np.bool_(True), epoch=np.int32(4), drift_bps=np.float32(0.5),
                        policy={"flag": np.bool_(False), "n": np.int64(3)})
    assert (type(record.derisk), type(record.epoch), type(record.drift_bps)) == (bool, int, float)
    journal.record_tick(record)
    detail = journal.ticks()[0]["detail"]
    assert (detail["derisk"], detail["epoch"], detail["drift_bps"]) == (True, 4, 0.5)
    assert detail["policy"] == {"flag": False, "n": 3}


def test_status_filter_and_order(journal):
    statuses = ["skipped", "rebalanced", "failed", "skipped", "rebalanced", "skipped"]
    ids = [journal.record_tick(TickRecord(status=s, reason=f"tick {i}", epoch=i)) for i, s in enumerate(statuses)]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert [t["epoch"] for t in journal.ticks()] == list(range(6))
    assert [t["epoch"] for t in journal.ticks(status="skipped")] == [0, 3, 5]
    assert [t["epoch"] for t in journal.ticks(status="rebalanced")] == [1, 4]
    assert journal.ticks(status="nothing") == []
    assert [t.record.epoch for t in journal.tick_records(status="skipped")] == [0, 3, 5]
    assert [t.id for t in journal.tick_records()] == ids


def test_limit_keeps_the_most_recent_oldest_first(journal):
    statuses = ["skipped", "rebalanced"] * 5
    for i, s in enumerate(statuses):
        journal.record_tick(TickRecord(status=s, epoch=i))
    assert [t["epoch"] for t in journal.ticks(limit=3)] == [7, 8, 9]
    assert [t.record.epoch for t in journal.tick_records(status="rebalanced", limit=2)] == [7, 9]
    assert [t["epoch"] for t in journal.ticks(status="skipped", limit=2)] == [6, 8]
    assert [t["epoch"] for t in journal.ticks(limit=100)] == list(range(10))


def test_persists_across_reopen(tmp_path):
    path = tmp_path / "nested" / "dir" / "journal.sqlite"  # parents are created
    first = Journal(path)
    first.record_tick(TickRecord(status="rebalanced", reason="ok", epoch=1, current_weights=np.array([0.25, 0.75])))
    first.close()
    assert path.exists()
    second = Journal(path)
    second.record_tick(TickRecord(status="skipped", reason="calm", epoch=2))
    ticks = second.ticks()
    second.close()
    assert [(t["status"], t["epoch"]) for t in ticks] == [("rebalanced", 1), ("skipped", 2)]
    assert ticks[0]["detail"]["current_weights"] == [0.25, 0.75]
    third = Journal(path)
    assert len(third.ticks()) == 2
    third.close()


# --- Write-ahead transaction log ---------------------------------------------------------------------

import sqlite3  # noqa: E402

from keeper.journal import _SCHEMA_V2, _SCHEMA_V3, _SCHEMA_VERSION  # noqa: E402
from keeper.journal_records import TX_FINAL, TxRecord  # noqa: E402

SENDER = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"


def intended(journal, nonce=7, tag="aa", **overrides):
    args = dict(
        kind="rebalance", sender=SENDER, nonce=nonce, tx_hash="0x" + tag * 32, raw_tx="0x02f8" + tag * 40,
        to_address="0x" + "12" * 20, calldata="0xdeadbeef", value=0, gas_limit=612_345,
        max_fee_per_gas=2 * 10**9 + 1, max_priority_fee_per_gas=10**8, epoch=3, deadline=1_700_000_600,
    )
    args.update(overrides)
    return journal.record_intended_tx(**args)


def test_intended_row_is_committed_before_the_call_returns(tmp_path):
    path = tmp_path / "j.sqlite"
    journal = Journal(path)
    row = intended(journal)
    # Another connection (another process after a crash) sees it at once: the write is committed.
    other = Journal.read_only(path)
    assert [(r.status, r.nonce, r.hash, r.raw_tx) for r in other.transactions()] == [
        ("intended", 7, row.hash, row.raw_tx)
    ]
    # The durability setting has no typed read: the pragma is the thing under test.
    assert journal.conn.execute("PRAGMA synchronous").fetchone() == (2,)  # FULL: the WAL is synced per commit
    other.close()
    journal.close()


def test_transaction_life_cycle_and_fields_round_trip(journal):
    row = intended(journal, value=10**30, max_fee_per_gas=10**20)  # above int64: stored as decimal text
    assert isinstance(row, TxRecord) and row.status == "intended" and row.live
    assert row.sender == SENDER.lower() and row.value == 10**30 and row.max_fee_per_gas == 10**20
    assert (row.epoch, row.deadline, row.gas_limit, row.replaces, row.sent_at) == (3, 1_700_000_600, 612_345, None, None)
    sent = journal.mark_tx_sent(row.id, sent_block=41)
    assert sent.status == "sent" and sent.sent_block == 41 and sent.sent_at >= sent.created_at
    mined = journal.finalize_tx(row.id, "mined", block_number=42, gas_used=400_000, effective_gas_price=3 * 10**9)
    assert (mined.status, mined.block_number, mined.gas_used, mined.effective_gas_price) == ("mined", 42, 400_000, 3 * 10**9)
    assert not mined.live and mined.finalized_at is not None
    # Final rows stay final: reconciling twice changes nothing.
    assert journal.finalize_tx(row.id, "dropped", note="late").status == "mined"
    assert journal.mark_tx_sent(row.id, sent_block=99).status == "mined"
    with pytest.raises(ValueError, match="final transaction status"):
        journal.finalize_tx(row.id, "sent")
    with pytest.raises(KeyError):
        journal.transaction(999)


def test_replacement_links_filters_and_highest_live_nonce(journal):
    first = intended(journal, nonce=5, tag="01")
    journal.mark_tx_sent(first.id, 10)
    second = intended(journal, nonce=5, tag="02", replaces=first.id, max_fee_per_gas=3 * 10**9)
    third = intended(journal, nonce=6, tag="03")
    other = intended(journal, nonce=50, tag="04", sender="0x" + "99" * 20)
    assert journal.highest_live_nonce(SENDER) == 6
    assert journal.highest_live_nonce("0x" + "99" * 20) == 50
    assert [r.id for r in journal.transactions(sender=SENDER, nonce=5)] == [first.id, second.id]
    assert [r.id for r in journal.transactions(live=True, sender=SENDER)] == [first.id, second.id, third.id]
    journal.finalize_tx(second.id, "mined", block_number=11)
    journal.finalize_tx(first.id, "replaced", replaced_by=second.id)
    journal.finalize_tx(third.id, "dropped", note="nonce consumed by a transaction not in the journal")
    assert journal.transaction(first.id).replaced_by == second.id
    assert journal.transaction(second.id).replaces == first.id
    assert journal.highest_live_nonce(SENDER) is None
    assert [r.id for r in journal.transactions(status="dropped")] == [third.id]
    assert journal.transaction(third.id).note.startswith("nonce consumed")
    assert [r.id for r in journal.transactions(live=True)] == [other.id]
    # A dropped row whose receipt turns up later is corrected, only when asked to.
    assert journal.finalize_tx(third.id, "mined", block_number=12).status == "dropped"
    assert journal.finalize_tx(third.id, "mined", block_number=12, allow_correction=True).status == "mined"
    assert set(TX_FINAL) == {"mined", "reverted", "replaced", "dropped", "cancelled"}


def test_hash_is_unique(journal):
    intended(journal, tag="0f")
    with pytest.raises(sqlite3.IntegrityError):
        intended(journal, tag="0f")


OLD_SCHEMA = """
CREATE TABLE ticks (
    id INTEGER PRIMARY KEY AUTOINCREMENT, recorded_at REAL NOT NULL, status TEXT NOT NULL, reason TEXT,
    block_number INTEGER, block_timestamp INTEGER, epoch INTEGER, tx_hash TEXT, gas_used INTEGER,
    effective_gas_price TEXT, nav_before TEXT, nav_after TEXT, detail TEXT NOT NULL
);
CREATE INDEX ticks_status ON ticks(status);
INSERT INTO ticks (recorded_at, status, reason, epoch, detail) VALUES (1.5, 'skipped', 'calm', 4, '{"a": 1}');
"""


def test_a_journal_written_before_the_transaction_log_opens_and_migrates_idempotently(tmp_path):
    path = tmp_path / "old.sqlite"
    conn = sqlite3.connect(path)
    conn.executescript(OLD_SCHEMA)
    conn.commit()
    conn.close()
    for _ in range(2):  # opening twice migrates once and changes nothing the second time
        journal = Journal(path)
        assert [(t["status"], t["epoch"], t["detail"]) for t in journal.ticks()] == [("skipped", 4, {"a": 1})]
        assert journal.schema_version() == _SCHEMA_VERSION == 5
        if not journal.transactions():
            intended(journal)
        assert len(journal.transactions()) == 1
        journal.close()


V2_TICKS = [
    ("rebalanced", 1_700_000_000, {"symbols": ["BTC", "ETH"], "prices_usd": [60000.0, 3000.0],
                                   "policy": {"symbols": ["BTC", "ETH"], "target_weights": [0.4, 0.5],
                                              "covariance": [[0.5, 0.1], [0.1, 0.7]]}}),
    ("skipped", 1_700_086_400, {"symbols": ["BTC", "ETH"], "prices_usd": [61000.0, 3100.0],
                                "policy": {"symbols": ["BTC", "ETH"], "target_weights": [0.45, 0.45],
                                           "covariance": [[0.5, None], [None, 0.7]]}}),
    ("skipped", 1_700_090_000, {"reason_code": "breaker:stale_oracle"}),
]


def _v2_journal(path):
    """A journal file as the previous keeper version wrote it: ticks and transactions, no decisions."""
    conn = sqlite3.connect(path)
    conn.executescript(OLD_SCHEMA.split("INSERT")[0])
    for i, (status, ts, detail) in enumerate(V2_TICKS):
        conn.execute("INSERT INTO ticks (recorded_at, status, block_number, block_timestamp, detail) "
                     "VALUES (?, ?, ?, ?, ?)", (float(i), status, 100 + i if "prices_usd" in detail else None, ts,
                                                json.dumps(detail)))
    conn.execute("PRAGMA user_version = 2")
    conn.commit()
    conn.close()


def test_a_version_2_journal_migrates_its_decisions_and_the_typed_reads_find_them(tmp_path):
    path = tmp_path / "v2.sqlite"
    _v2_journal(path)
    for _ in range(2):  # the backfill runs once; reopening changes nothing
        journal = Journal(path)
        assert [d.tick_id for d in journal.decisions()] == [1, 2]  # backfilled from the ticks' policies
        decision = journal.last_decision()
        assert decision is not None and decision.symbols == ("BTC", "ETH")
        np.testing.assert_array_equal(decision.target_weights, [0.45, 0.45])  # exact: JSON floats round-trip
        assert decision.covariance is None  # the journalled matrix held a NaN
        rebalance = journal.last_rebalance()
        assert rebalance is not None and rebalance.block_timestamp == 1_700_000_000
        np.testing.assert_array_equal(rebalance.covariance, [[0.5, 0.1], [0.1, 0.7]])
        prices = journal.last_prices()
        assert prices is not None and prices.block_number == 101 and prices.symbols == ("BTC", "ETH")
        np.testing.assert_array_equal(prices.prices_usd, [61000.0, 3100.0])
        journal.close()


def test_recording_a_tick_with_a_policy_decision_writes_its_decision_row(journal):
    assert journal.last_decision() is None and journal.last_rebalance() is None and journal.last_prices() is None
    journal.record_tick(TickRecord(status="skipped", reason="calm", symbols=("BTC",),
                                   policy={"symbols": ["BTC"], "target_weights": np.array([0.7])}))
    first = journal.last_decision()
    assert first is not None and first.target_weights.tolist() == [0.7] and first.covariance is None
    journal.record_tick(TickRecord(status="skipped", reason="no policy", symbols=("BTC",)))  # no decision: unchanged
    assert journal.last_decision() == first


def test_read_only_opens_without_writing_and_refuses_what_is_not_a_journal(tmp_path):
    path = tmp_path / "v2.sqlite"
    _v2_journal(path)
    before = path.read_bytes()
    journal = Journal.read_only(path)
    assert journal.has_table("ticks") and not journal.has_table("decisions") and journal.schema_version() == 2
    assert [t["status"] for t in journal.ticks()] == ["rebalanced", "skipped", "skipped"]
    # No kind column in a file this old: the typed reads classify its rows as they read them.
    assert [t.record.status for t in journal.tick_records()] == ["rebalanced", "skipped", "skipped"]
    journal.close()
    assert path.read_bytes() == before
    current = tmp_path / "v4.sqlite"
    Journal(current).close()
    before = current.read_bytes()
    journal = Journal.read_only(current)
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        journal.record_tick(TickRecord(status="skipped", reason="must not be written"))
    journal.close()
    assert current.read_bytes() == before
    with pytest.raises(ConfigError, match="no keeper journal at"):
        Journal.read_only(tmp_path / "missing.sqlite")
    (tmp_path / "junk.sqlite").write_text("not a database" * 100)
    with pytest.raises(ConfigError, match="cannot read the keeper journal"):
        Journal.read_only(tmp_path / "junk.sqlite")


def test_ticks_between_selects_by_recording_time(journal):
    for status in ("a", "b", "c"):
        journal.record_tick(TickRecord(status=status))
    times = [t["recorded_at"] for t in journal.ticks()]
    assert [t["status"] for t in journal.ticks_between(times[1], times[2])] == ["b", "c"]


# --- Typed record kinds -------------------------------------------------------------------------------

SETTLEMENT = dict(series_id="0x" + "5e" * 32, symbol="WETH", strike=3_000 * 10**8, expiry=1_700_006_400, is_call=False,
                  amount=2 * 10**18, round_id=18_446_744_073_709_551_999, payout=1_234_567, tx_hash="0x" + "cd" * 32)


@dataclass(frozen=True)
class SettlementLike:  # the shape of keeper.option_orders.Settlement
    series_id: str
    symbol: str
    strike: int
    expiry: int
    is_call: bool
    amount: int
    round_id: int
    payout: int
    tx_hash: str


def _full_tick() -> TickRecord:
    cov = [[0.25, 0.01], [0.01, 0.64]]
    return TickRecord(
        status="rebalanced", reason="drift 412.0 bps", reason_code="rebalanced", block_number=17,
        block_timestamp=1_700_000_000, epoch=3, tx_hash="0x" + "ab" * 32, gas_used=412_345,
        effective_gas_price=3 * 10**9, nav_before=10**24 + 7, nav_after=10**24 - 5, symbols=("WBTC", "WETH"),
        prices_usd=np.array([60_000.0, 3_000.0]), target_weights=[0.5, 0.5],
        relative_risk_contributions_target=(0.5, 0.5), relative_risk_contributions_before=[0.7, 0.3],
        relative_risk_contributions_after=[0.52, 0.48], ex_ante_volatility=np.float64(0.31), covariance=np.array(cov),
        current_weights=[0.6, 0.35], drift_bps=412.0, turnover_bps=830.5,
        legs=(Leg("WETH", 5 * 10**17, np.array([0.1, 0.2])),), leg_results=[{"symbol": "WETH", "amount_out": 10**30}],
        timings={"oracle": 0.25, "total": 1.5}, breakers=({"breaker": "gas", "tripped": False},), derisk=False,
        policy={"symbols": ["WBTC", "WETH"], "target_weights": [0.45, 0.45], "covariance": cov},
        trigger={"fired": ["drift"], "benefit": 12_000, "cost": 3_000}, overlay={"series": 2},
    )


def test_a_tick_record_round_trips_through_the_typed_read(journal):
    record = _full_tick()
    row_id = journal.record_tick(record)
    [entry] = journal.tick_records()
    assert isinstance(entry, Journalled) and entry.id == row_id and isinstance(entry.recorded_at, float)
    assert entry.record == record
    assert entry.record.symbols == ("WBTC", "WETH") and entry.record.nav_before == 10**24 + 7
    # The stored row keeps the keys the readers (status, simulate, report) know.
    [tick] = journal.ticks()
    assert (tick["kind"], tick["block_number"], tick["effective_gas_price"]) == ("tick", 17, 3 * 10**9)
    assert tick["detail"]["reason_code"] == "rebalanced" and tick["detail"]["prices_usd"] == [60_000.0, 3_000.0]
    assert tick["detail"]["legs"] == [{"symbol": "WETH", "amount_in": 5 * 10**17, "weights": [0.1, 0.2]}]
    # ... and the typed reads built on them.
    assert journal.last_decision().tick_id == row_id
    assert journal.last_rebalance().block_timestamp == 1_700_000_000
    assert journal.last_prices().symbols == ("WBTC", "WETH")


def test_an_overlay_step_and_its_settlements_round_trip(journal):
    step = OverlayStepRecord(
        status="traded", reason=None, epoch=5, tx_hash="0x" + "ef" * 32, gas_used=901_000, nav_before=10**12,
        hedge_decision={"hedge": True, "reasons": ["delta_band"]}, overlay_plan={"buy": [{"symbol": "WETH"}]},
        greeks_before={"WETH": {"delta": 0.1}}, greeks={"WETH": {"delta": 0.0}}, greeks_after={"WETH": {"delta": 0.01}},
        legs=[{"symbol": "WETH", "amount_in": 10**17}], option_legs=[{"series_id": "0x01", "is_buy": True}],
        executed=((0, True, 10**18, 5_000, 4_900),),
        settlements=(SettlementRecord(**SETTLEMENT), SettlementLike(**dict(SETTLEMENT, payout=0)),
                     dict(SETTLEMENT, symbol="WBTC")),
        cash_scale=np.float64(0.97), target_scale=1.0, timings={"total": 2.0},
    )
    assert all(isinstance(s, SettlementRecord) for s in step.settlements)
    row_id = journal.record_overlay_step(step)
    [entry] = journal.overlay_steps()
    assert entry.id == row_id and entry.record == step
    [tick] = journal.ticks()
    assert (tick["kind"], tick["status"], tick["epoch"], tick["nav_before"]) == ("overlay_step", "overlay_traded", 5, 10**12)
    assert tick["detail"]["executed"] == [[0, True, 10**18, 5_000, 4_900]]
    assert tick["detail"]["settlements"][0] == SETTLEMENT  # the keys option_orders journalled before
    settlements = journal.settlements()
    assert [s.id for s in settlements] == [row_id] * 3
    assert [(s.record.symbol, s.record.payout) for s in settlements] == [("WETH", 1_234_567), ("WETH", 0), ("WBTC", 1_234_567)]
    assert journal.tick_records() == [] and journal.last_prices() is None  # an overlay step is not a tick
    with pytest.raises(ValueError, match="without the 'overlay_' prefix"):
        OverlayStepRecord(status="overlay_traded")


def test_shutdown_and_backtest_records_round_trip(journal):
    shutdown_id = journal.record_shutdown("SIGTERM; scheduler stopped after 0.10 s")
    [entry] = journal.shutdowns()
    assert entry.id == shutdown_id
    assert entry.record == ShutdownRecord(reason="SIGTERM; scheduler stopped after 0.10 s")
    assert (entry.record.status, entry.record.reason_code) == ("shutdown", "shutdown")
    [tick] = journal.ticks()
    assert (tick["kind"], tick["status"], tick["detail"]) == ("shutdown", "shutdown", {"reason_code": "shutdown"})

    day = BacktestTickRecord(status="rebalanced", reason="drift", strategy="ERC", date="2024-03-01",
                             trigger={"fired": ["drift"]}, legs=[{"symbol": "WETH"}], turnover_bps=np.float64(120.0),
                             cost={"fee": 3.0, "total": 5.0}, target_weights=np.array([0.3, 0.6]),
                             policy={"target_weights": [0.3, 0.6]})
    other = BacktestTickRecord(status="skipped", strategy="BTC only", date="2024-03-01")
    ids = [journal.record_backtest_tick(day), journal.record_backtest_tick(other)]
    assert [e.record for e in journal.backtest_ticks()] == [day, other]
    assert [e.id for e in journal.backtest_ticks(strategy="BTC only")] == [ids[1]]
    assert journal.ticks()[1]["detail"]["strategy"] == "ERC"
    assert journal.last_decision().tick_id == ids[0]
    assert journal.tick_records() == []


@pytest.mark.parametrize("make", [
    lambda: TickRecord(status="skipped", weights=[1.0]),
    lambda: TickRecord("skipped"),  # keyword-only: no positional mix-ups of same-typed fields
    lambda: OverlayStepRecord(status="traded", hedge={"x": 1}),
    lambda: ShutdownRecord(reason="x", why="y"),
    lambda: BacktestTickRecord(status="skipped", strategy="ERC", date="2024-01-01", costs={}),
    lambda: BacktestTickRecord(status="skipped", strategy="ERC"),  # date is required
    lambda: SettlementRecord(**dict(SETTLEMENT, premium=1)),
    lambda: OverlayStepRecord(status="traded", settlements=[dict(SETTLEMENT, premium=1)]),
    lambda: OverlayStepRecord(status="traded", settlements=["0x01"]),
])
def test_a_field_a_record_does_not_declare_is_a_type_error(make):
    with pytest.raises(TypeError):
        make()


def test_each_record_method_takes_only_its_own_kind(journal):
    with pytest.raises(TypeError, match="expected a TickRecord"):
        journal.record_tick(OverlayStepRecord(status="traded"))
    with pytest.raises(TypeError, match="expected a OverlayStepRecord"):
        journal.record_overlay_step(TickRecord(status="skipped"))
    assert not hasattr(journal, "record")  # the untyped writer is gone
    assert journal.ticks() == []


def _v3_journal(path):
    """A journal file as keeper schema version 3 wrote it: every record kind in ``ticks``, no kind column."""
    rows = [
        ("skipped", "calm", 100, {"reason_code": "no_trade_needed", "symbols": ["BTC"], "prices_usd": [60000.0],
                                  "policy": {"symbols": ["BTC"], "target_weights": [0.8]}}),
        ("overlay_traded", None, None, {"epoch": 2, "settlements": [SETTLEMENT], "executed": [], "timings": {}}),
        ("hedge_skipped", "calm", None, {"hedge": {"reasons": []}}),  # a row of a kind no longer written
        ("shutdown", "SIGINT", None, {"reason_code": "shutdown"}),
    ]
    conn = sqlite3.connect(path)
    conn.executescript(OLD_SCHEMA.split("INSERT")[0] + _SCHEMA_V2 + _SCHEMA_V3)
    for i, (status, reason, block, detail) in enumerate(rows):
        conn.execute("INSERT INTO ticks (recorded_at, status, reason, block_number, detail) VALUES (?, ?, ?, ?, ?)",
                     (float(i), status, reason, block, json.dumps(detail)))
    conn.execute("INSERT INTO decisions (tick_id, symbols, target_weights) VALUES (1, '[\"BTC\"]', '[0.8]')")
    conn.execute("PRAGMA user_version = 3")
    conn.commit()
    conn.close()


def test_a_version_3_journal_migrates_to_tagged_kinds_idempotently(tmp_path):
    path = tmp_path / "v3.sqlite"
    _v3_journal(path)
    readonly = Journal.read_only(path)  # before the migration: the typed reads classify on the fly
    assert readonly.schema_version() == 3 and [t.id for t in readonly.tick_records()] == [1, 3]
    readonly.close()
    for reopen in range(2):  # opening twice migrates once and changes nothing the second time
        journal = Journal(path)
        assert journal.schema_version() == _SCHEMA_VERSION == 5
        assert [t["kind"] for t in journal.ticks()] == ["tick", "overlay_step", "tick", "shutdown"] + ["tick"] * reopen
        ticks = journal.tick_records()
        assert [t.record.status for t in ticks[:2]] == ["skipped", "hedge_skipped"]
        assert ticks[0].record.reason_code == "no_trade_needed" and ticks[0].record.prices_usd == [60000.0]
        [step] = journal.overlay_steps()
        assert (step.id, step.record.status, step.record.epoch) == (2, "traded", 2)
        assert [s.record for s in journal.settlements()] == [SettlementRecord(**SETTLEMENT)]
        assert [s.record.reason for s in journal.shutdowns()] == ["SIGINT"]
        assert [d.tick_id for d in journal.decisions()] == [1]  # not backfilled twice
        if reopen == 0:
            journal.record_tick(TickRecord(status="skipped", reason="after the migration"))
        journal.close()


def test_a_journal_binds_to_its_chain_and_vault_and_refuses_another(tmp_path):
    path = tmp_path / "bound.sqlite"
    vault = "0x5FC8d32690cc91D4c39d9d3abcBD16989F875707"
    journal = Journal(path)
    assert journal.binding() is None
    journal.bind(11155111, vault)
    journal.bind(11155111, vault.lower())  # the same binding, any case: nothing changes
    journal.close()
    journal = Journal(path)
    assert journal.binding() == (11155111, vault.lower())
    with pytest.raises(ConfigError, match=r"vault 0x5fc8.* on chain id 11155111, not of vault 0x5fc8.* on chain id 1: "
                                          r"give this keeper its own operations.journal_path"):
        journal.bind(1, vault)
    other = "0x0000000000000000000000000000000000000001"
    with pytest.raises(ConfigError, match=f"{path}.*not of vault {other} on chain id 11155111"):
        journal.bind(11155111, other)
    assert journal.binding() == (11155111, vault.lower())  # a refused bind changes nothing
    journal.close()
    assert Journal.read_only(path).binding() == (11155111, vault.lower())


def test_a_journal_of_an_older_keeper_is_bound_on_its_next_open(tmp_path):
    path = tmp_path / "v2.sqlite"
    _v2_journal(path)
    journal = Journal(path)
    assert journal.schema_version() == 5 and journal.binding() is None and len(journal.ticks()) == 3
    journal.bind(31337, "0x5FC8d32690cc91D4c39d9d3abcBD16989F875707")
    assert journal.binding() == (31337, "0x5fc8d32690cc91d4c39d9d3abcbd16989f875707")


def test_a_keeper_refuses_a_journal_of_another_vault_before_it_reads_anything(system, tmp_path):
    from keeper.runner import Keeper
    from keeper.chain import ANVIL_KEYS

    path = tmp_path / "journal.sqlite"
    other = Journal(path)
    other.bind(system.w3.eth.chain_id, "0x0000000000000000000000000000000000000001")
    other.close()
    with pytest.raises(ConfigError, match="own operations.journal_path"):
        Keeper(system.keeper_config(), w3=system.w3, private_key=ANVIL_KEYS[1], journal=Journal(path))
    fresh = Journal(tmp_path / "fresh.sqlite")
    Keeper(system.keeper_config(), w3=system.w3, private_key=ANVIL_KEYS[1], journal=fresh)
    assert fresh.binding() == (system.w3.eth.chain_id, system.deployment.vault.lower())
