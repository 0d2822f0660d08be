"""`keeper status`: vault state, holdings with weights and risk contributions, last ticks, pending transactions."""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest
from conftest import System
from tolerances import gamma

from keeper.chain import ANVIL_KEYS
from keeper.cli import main
from keeper.journal import Journal
from keeper.journal_records import TickRecord
from keeper.runner import Keeper
from keeper.status import collect_status, format_status, journal_summary, read_journal


def _config_file(chain: System, tmp_path, **overrides) -> tuple:
    config = chain.keeper_config(journal_path=tmp_path / "journal.sqlite", **overrides)
    path = tmp_path / "keeper.json"
    path.write_text(config.model_dump_json())
    return config, path


def test_status_reports_the_vault_holdings_risk_and_ticks(chain: System, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("KEEPER_PRIVATE_KEY", ANVIL_KEYS[1])
    chain.deposit(chain.alice, 120_000)
    config, _ = _config_file(chain, tmp_path)
    keeper = Keeper(config, w3=chain.w3, private_key=ANVIL_KEYS[1], journal=Journal(config.operations.journal_path))
    first = keeper.run_once()
    keeper.run_once()
    assert first.status == "rebalanced"
    status = collect_status(config, w3=chain.w3, last_ticks=5)
    v = chain.vault.functions
    assert status["total_assets"] == v.totalAssets().call() and status["total_supply"] == v.totalSupply().call()
    assert status["rebalance_epoch"] == 1 and status["paused"] is False
    assert status["share_price_usd"] == v.convertToAssets(10**12).call() / 1e6
    assert status["limits"]["max_turnover_bps"] == v.maxTurnoverBps().call()
    holdings = status["holdings"]
    assert [h["symbol"] for h in holdings] == ["BTC", "ETH", "SOL"]
    _, balances = v.holdings().call()
    assert [h["balance"] for h in holdings] == balances[1:]
    # Values are the vault's own: cash + Σ values = totalAssets to the unit.
    assert status["base_balance"] + sum(h["value_base"] for h in holdings) == status["total_assets"]
    # Integer values that sum to NAV exactly, each divided by NAV (one rounding) and summed (n more).
    n = len(holdings) + 1
    assert sum(h["weight"] for h in holdings) + status["cash_weight"] == pytest.approx(1.0, rel=0, abs=gamma(2 * n))
    rc = np.array([h["risk_contribution"] for h in holdings])
    assert rc.sum() == pytest.approx(1.0) and np.max(np.abs(rc - 1 / 3)) < 0.01  # just rebalanced to ERC
    assert status["ex_ante_volatility"] > 0
    assert status["keeper"]["address"] == chain.keeper and status["keeper"]["transactions_in_mempool"] == 0
    ticks = status["last_ticks"]
    assert [t["status"] for t in ticks] == ["rebalanced", "skipped"]
    assert ticks[0]["tx_hash"] == first.execution.tx_hash and ticks[1]["reason_code"] == "no_trade_needed"
    assert status["pending_transactions"] == []  # the write-ahead journal holds nothing live
    text = format_status(status)
    for needle in ("epoch 1", "BTC", "SOL", "rebalanced", "pending transactions: 0", chain.keeper):
        assert needle in text


def test_status_cli_json_and_a_missing_journal(chain: System, tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.delenv("KEEPER_PRIVATE_KEY", raising=False)
    chain.deposit(chain.alice, 50_000)
    _, path = _config_file(chain, tmp_path)
    assert main(["status", "--config", str(path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["last_ticks"] == [] and "no journal at" in out["journal_note"]
    assert out["keeper"] is None  # no key, no --address
    assert out["holdings"][0]["risk_contribution"] is None and "no risk assets" in out["risk_note"]
    assert not (tmp_path / "journal.sqlite").exists()  # status never creates the journal
    assert main(["status", "--config", str(path), "--address", chain.keeper]) == 0
    text = capsys.readouterr().out
    assert f"keeper {chain.keeper}" in text and "last ticks: none" in text


def test_pending_transactions_come_from_the_write_ahead_journal(tmp_path) -> None:
    old = tmp_path / "old.sqlite"  # a journal written before the transactions table existed
    with sqlite3.connect(old) as conn:
        conn.execute("CREATE TABLE ticks (id INTEGER PRIMARY KEY, ts REAL, status TEXT, reason TEXT, detail TEXT)")
    assert read_journal(old)["pending_transactions"] is None
    path = tmp_path / "j.sqlite"
    journal = Journal(path)
    journal.record_tick(TickRecord(status="skipped", reason="drift 1 bps", reason_code="no_trade_needed"))
    rows = [
        journal.record_intended_tx(kind="rebalance", sender="0x" + "aa" * 20, nonce=n, tx_hash=f"0x{n:064x}",
                                   raw_tx="0x00", to_address="0x" + "bb" * 20, calldata="0x", value=0,
                                   gas_limit=500_000, max_fee_per_gas=10**10, max_priority_fee_per_gas=10**9, epoch=n)
        for n in (4, 5, 6)
    ]
    journal.mark_tx_sent(rows[0].id, sent_block=10)
    journal.finalize_tx(rows[0].id, "mined", block_number=11)
    journal.mark_tx_sent(rows[2].id, sent_block=12)
    journal.close()
    out = read_journal(path)
    assert [(r["nonce"], r["status"]) for r in out["pending_transactions"]] == [(5, "intended"), (6, "sent")]
    assert out["ticks"][0]["reason_code"] == "no_trade_needed"


def test_journal_summary_counts_and_fees() -> None:
    rows = [
        {"status": "rebalanced", "gas_used": 100, "effective_gas_price": 7, "nav_after": 1_000, "detail": {}},
        {"status": "skipped", "reason": "drift 3 bps", "detail": {"reason_code": "no_trade_needed"}},
        {"status": "skipped", "reason": "RpcUnavailableError: down", "detail": {}},
        {"status": "rebalanced", "gas_used": 50, "effective_gas_price": 3, "nav_after": 1_010, "detail": {}},
    ]
    s = journal_summary(rows)
    assert s["by_status"] == {"rebalanced": 2, "skipped": 2} and s["rebalances"] == 2
    assert s["skipped_by_reason"] == {"no_trade_needed": 1, "RpcUnavailableError": 1}
    assert s["gas_used"] == 150 and s["fees_wei"] == 100 * 7 + 50 * 3 and s["last_nav_after"] == 1_010
