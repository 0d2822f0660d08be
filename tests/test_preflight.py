"""Start-up checks (keeper.preflight) against a real deployment on Anvil: each misconfiguration is refused with
one line naming the problem and the fix, and the commands exit with the documented code."""

from __future__ import annotations

import json

import pytest
from web3 import Web3

from conftest import ANVIL_KEYS, dev_accounts
from keeper.cli import EXIT_PREFLIGHT, main
from keeper.preflight import PreflightError, check_or_raise, preflight_problems


def _chain(system, **update):
    return system.keeper_config().chain.model_copy(update=update)


def test_a_correct_deployment_passes_every_check(system):
    chain = _chain(system, chain_id=system.w3.eth.chain_id, router_address=system.deployment.swap_router)
    assert preflight_problems(system.w3, chain, system.keeper) == []


def test_wrong_chain_id_is_one_line_naming_both_chains(system):
    problems = preflight_problems(system.w3, _chain(system, chain_id=11155111), system.keeper)
    assert [p.check for p in problems] == ["chain_id"]
    line = problems[0].line()
    assert "31337 (Anvil)" in line and "11155111 (Ethereum Sepolia)" in line and "fix:" in line
    assert "\n" not in line


def test_addresses_without_code_are_named(system):
    nowhere = "0x" + "5e" * 20
    problems = preflight_problems(system.w3, _chain(system, vault_address=nowhere), system.keeper)
    assert [p.check for p in problems] == ["code"]
    assert nowhere in problems[0].problem and "chain.vault_address" in problems[0].problem
    problems = preflight_problems(system.w3, _chain(system, quoter_address=nowhere), system.keeper)
    assert [p.check for p in problems] == ["code"] and "chain.quoter_address" in problems[0].problem


def test_a_chain_without_multicall3_is_named_with_the_fix(system):
    from keeper.chain import rpc
    from keeper.multicall import MULTICALL3_ADDRESS

    chain = _chain(system, chain_id=system.w3.eth.chain_id)
    code = system.w3.eth.get_code(MULTICALL3_ADDRESS)
    rpc(system.w3, "anvil_setCode", [MULTICALL3_ADDRESS, "0x"])
    try:
        problems = preflight_problems(system.w3, chain, system.keeper)
    finally:
        rpc(system.w3, "anvil_setCode", [MULTICALL3_ADDRESS, "0x" + bytes(code).hex()])
    assert [p.check for p in problems] == ["code"]
    assert MULTICALL3_ADDRESS in problems[0].problem and "ensure_multicall3" in problems[0].fix
    assert preflight_problems(system.w3, chain, system.keeper) == []


def test_a_key_without_the_keeper_role_is_refused_with_the_grant_to_make(system):
    outsider = dev_accounts()[7]
    problems = preflight_problems(system.w3, _chain(system), outsider)
    assert [p.check for p in problems] == ["keeper_role"]
    assert outsider in problems[0].problem and "grantRole(KEEPER_ROLE=0x" in problems[0].fix


def test_a_quoter_address_that_is_not_a_quoter(system):
    token = system.deployment.assets[0].token  # has code, answers no factory()
    problems = preflight_problems(system.w3, _chain(system, quoter_address=token), system.keeper)
    assert [p.check for p in problems] == ["quoter"] and "QuoterV2" in problems[0].fix


def test_a_vault_address_that_is_not_the_vault(system):
    problems = preflight_problems(system.w3, _chain(system, vault_address=system.deployment.quoter), system.keeper)
    assert [p.check for p in problems] == ["code"] and "RiskParityVault" in problems[0].problem


def test_check_or_raise_joins_the_lines(system):
    with pytest.raises(PreflightError) as err:
        check_or_raise(system.w3, _chain(system, chain_id=1), system.keeper)
    assert str(err.value).startswith("start-up checks failed:\n  [chain_id]")


@pytest.mark.parametrize("command", ["run", "status", "simulate"])
def test_commands_exit_with_the_preflight_code(system, tmp_path, monkeypatch, capsys, command):
    config = {"chain": {"rpc_url": system.rpc_url, "chain_id": 11155111, "vault_address": system.deployment.vault,
                        "quoter_address": system.deployment.quoter},
              "operations": {"journal_path": str(tmp_path / "journal.sqlite")}}
    path = tmp_path / "keeper.json"
    path.write_text(json.dumps(config))
    monkeypatch.setenv("KEEPER_PRIVATE_KEY", ANVIL_KEYS[1])
    argv = [command, "--config", str(path)] + {"run": ["--once"], "status": [],
                                                "simulate": ["--fork-url", system.rpc_url]}[command]
    assert main(argv) == EXIT_PREFLIGHT
    err = capsys.readouterr().err
    assert "[chain_id] rpc_url serves chain 31337 (Anvil), the config names 11155111 (Ethereum Sepolia)" in err
    assert not (tmp_path / "journal.sqlite").exists()  # nothing ran, nothing was journalled


def test_a_deployment_file_fills_the_addresses_and_chain_id(system, tmp_path):
    from keeper.config import KeeperConfig

    record = tmp_path / "local.json"
    system.deployment.to_json(record)
    cfg = KeeperConfig(chain={"rpc_url": system.rpc_url, "deployment_file": str(record)})
    assert cfg.chain.vault_address == system.deployment.vault and cfg.chain.quoter_address == system.deployment.quoter
    assert cfg.chain.chain_id == system.w3.eth.chain_id
    assert Web3.to_checksum_address(cfg.chain.router_address) == system.deployment.swap_router
    assert preflight_problems(system.w3, cfg.chain, system.keeper) == []


def test_an_unset_chain_id_is_warned_about_in_one_line(system, caplog):
    import logging

    with caplog.at_level(logging.WARNING, logger="keeper"):
        check_or_raise(system.w3, _chain(system), system.keeper)
    warnings = [r.getMessage() for r in caplog.records if "chain.chain_id is not set" in r.getMessage()]
    assert len(warnings) == 1 and "set chain.chain_id = 31337" in warnings[0]
