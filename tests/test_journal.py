"""Unit tests of keeper.journal.Journal: an append-only SQLite record of ticks."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pytest

from keeper.errors import ConfigError
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


# --- Write-ahead transaction log ---------------------------------------------------------------------

import sqlite3  # noqa: E402

from keeper.journal import TX_FINAL, TxRecord  # noqa: E402

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
    other = sqlite3.connect(path)
    assert other.execute("SELECT status, nonce, hash, raw_tx FROM transactions").fetchall() == [
        ("intended", 7, row.hash, row.raw_tx)
    ]
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
        assert journal.conn.execute("PRAGMA user_version").fetchone() == (3,)
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
        assert journal.conn.execute("SELECT COUNT(*) FROM decisions").fetchone() == (2,)
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
    journal.record("skipped", "calm", symbols=("BTC",), policy={"symbols": ["BTC"], "target_weights": np.array([0.7])})
    first = journal.last_decision()
    assert first is not None and first.target_weights.tolist() == [0.7] and first.covariance is None
    journal.record("skipped", "no policy", symbols=("BTC",))  # a tick without a decision leaves it as it was
    assert journal.last_decision() == first


def test_read_only_opens_without_writing_and_refuses_what_is_not_a_journal(tmp_path):
    path = tmp_path / "v2.sqlite"
    _v2_journal(path)
    before = path.read_bytes()
    journal = Journal.read_only(path)
    assert journal.has_table("ticks") and not journal.has_table("decisions")
    assert [t["status"] for t in journal.ticks()] == ["rebalanced", "skipped", "skipped"]
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        journal.record("skipped", "must not be written")
    journal.close()
    assert path.read_bytes() == before
    with pytest.raises(ConfigError, match="no keeper journal at"):
        Journal.read_only(tmp_path / "missing.sqlite")
    (tmp_path / "junk.sqlite").write_text("not a database" * 100)
    with pytest.raises(ConfigError, match="cannot read the keeper journal"):
        Journal.read_only(tmp_path / "junk.sqlite")


def test_ticks_between_selects_by_recording_time(journal):
    for status in ("a", "b", "c"):
        journal.record(status)
    times = [t["recorded_at"] for t in journal.ticks()]
    assert [t["status"] for t in journal.ticks_between(times[1], times[2])] == ["b", "c"]
