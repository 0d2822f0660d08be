"""`keeper simulate --fork-url`: the tick's exact plan run on a fork of a local Anvil holding a deployed
vault; the source chain is untouched."""

from __future__ import annotations

import json

import pytest
from conftest import System

from keeper.cli import main
from keeper.simulate import simulate_on_fork


def _source_state(chain: System) -> tuple:
    v = chain.vault.functions
    return (chain.w3.eth.block_number, v.rebalanceEpoch().call(), v.totalAssets().call(), tuple(v.holdings().call()[1]),
            chain.w3.eth.get_transaction_count(chain.keeper), chain.w3.eth.get_balance(chain.keeper))


def test_simulation_runs_the_live_plan_on_a_fork_and_leaves_the_source_alone(chain: System) -> None:
    chain.deposit(chain.alice, 150_000)
    chain.deposit(chain.bob, 50_000)
    config = chain.keeper_config()
    live_plan = chain.make_keeper().plan_tick()
    assert live_plan.status == "planned"
    before = _source_state(chain)

    result = simulate_on_fork(config, chain.rpc_url, keeper_address=chain.keeper)

    assert _source_state(chain) == before  # no block, no state change, no nonce or balance change on the source
    assert result["status"] == "rebalanced", result.get("reason")
    assert result["fork_block"] == before[0] and result["keeper"] == chain.keeper
    # Exactly the plan the live tick makes at this block.
    assert [(leg["symbol"], leg["side"], leg["amount_in"], leg["min_amount_out"]) for leg in result["legs"]] == [
        (leg.symbol, leg.side, leg.amount_in, leg.min_amount_out) for leg in live_plan.plan.legs
    ]
    assert result["nav_before"] == live_plan.plan.nav_before == before[2]
    assert result["epoch_before"] == 0 and result["epoch_after"] == 1
    legs = result["leg_results"]
    assert len(legs) == len(result["legs"]) == 3
    for leg, planned in zip(legs, result["legs"]):
        assert leg["amount_in"] == planned["amount_in"] and leg["amount_out"] >= planned["min_amount_out"]
        assert leg["realised_slippage_bps"] == pytest.approx((1 - leg["amount_out"] / leg["oracle_amount_out"]) * 1e4)
        assert 0 <= leg["realised_slippage_bps"] < config.transactions.slippage_budget_bps
    assert result["min_nav_after"] <= result["nav_after"] < result["nav_before"]
    assert result["nav_change_bps"] == pytest.approx((result["nav_after"] - result["nav_before"]) / result["nav_before"] * 1e4)
    assert 100_000 < result["gas_used"] < 2_000_000
    # And the live keeper can still make that very rebalance on the source.
    assert chain.make_keeper().run_once().status == "rebalanced"


def test_simulation_reports_a_skip_and_a_revert(chain: System) -> None:
    config = chain.keeper_config()
    skipped = simulate_on_fork(config, chain.rpc_url, keeper_address=chain.keeper)
    assert skipped["status"] == "skipped" and skipped["reason"] == "vault is empty"
    chain.deposit(chain.alice, 100_000)
    before = _source_state(chain)
    refused = simulate_on_fork(config, chain.rpc_url, keeper_address=chain.alice)  # no KEEPER_ROLE
    assert refused["status"] == "reverted" and "AccessControlUnauthorizedAccount" in refused["reason"]
    assert refused["epoch_after"] == refused["epoch_before"] == 0
    assert _source_state(chain) == before


def test_simulate_cli(chain: System, tmp_path, capsys, monkeypatch) -> None:
    chain.deposit(chain.alice, 80_000)
    monkeypatch.setenv("KEEPER_PRIVATE_KEY", "0x" + "59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d")
    path = tmp_path / "keeper.json"
    path.write_text(chain.keeper_config(journal_path=tmp_path / "j.sqlite").model_dump_json())
    assert main(["simulate", "--config", str(path), "--fork-url", chain.rpc_url, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["status"] == "rebalanced" and out["keeper"] == chain.keeper  # the configured key's address
    assert main(["simulate", "--config", str(path), "--fork-url", chain.rpc_url]) == 0
    text = capsys.readouterr().out
    assert "rebalanced" in text and "slippage" in text and "gas used" in text
    assert chain.vault.functions.rebalanceEpoch().call() == 0


def test_simulation_reads_a_copy_of_the_live_journal_and_writes_nothing_to_it(chain: System, tmp_path) -> None:
    chain.deposit(chain.alice, 120_000)
    journal_path = tmp_path / "live.sqlite"
    config = chain.keeper_config(journal_path=journal_path, max_seconds_between=30 * 86_400)
    from keeper.chain import ANVIL_KEYS
    from keeper.journal import Journal
    from keeper.runner import Keeper

    live = Keeper(config, w3=chain.w3, private_key=ANVIL_KEYS[1], journal=Journal(journal_path))
    assert live.run_once().status == "rebalanced"
    live.journal.close()
    rows_before = Journal(journal_path).ticks()

    result = simulate_on_fork(config, chain.rpc_url, keeper_address=chain.keeper)

    # The fork's tick knew the live rebalance: the time trigger measured the days since it, and with the
    # vault on target nothing fired.
    assert result["status"] == "skipped", result
    assert result["trigger"]["metrics"]["seconds_since_rebalance"] < 86_400
    assert result["trigger"]["reasons"] == ["no trigger fired"]
    assert Journal(journal_path).ticks() == rows_before  # the live journal is untouched
