"""ABIs as build artifacts: the committed ``keeper/abi/`` matches the contracts, and the keeper's run-time
path reads them without a compiler; every compiled contract fits EIP-170's runtime size limit."""

from __future__ import annotations

import json

import pytest
from web3 import Web3

import keeper.build as build
from keeper.abis import ABI_DIR, all_abis, load_abi
from keeper.chain import contract
from keeper.errors import ConfigError


def test_committed_abis_match_the_compiled_contracts() -> None:
    artifacts = build.load_artifacts()
    expected = {name: art for name, art in artifacts.items() if art.abi}
    on_disk = {path.stem for path in ABI_DIR.glob("*.json")}
    assert on_disk == set(expected), "keeper/abi/ is out of date: run `./run keeper build` and commit keeper/abi/"
    for name, art in expected.items():
        assert (ABI_DIR / f"{name}.json").read_text() == build.abi_text(art.abi), (
            f"keeper/abi/{name}.json differs from the compiled contract: run `./run keeper build` and commit it"
        )


def test_the_keeper_binds_contracts_without_a_compiler(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_compiler(*_args: object, **_kwargs: object) -> list[str]:
        raise AssertionError("the run-time path must not look for a compiler")

    monkeypatch.setattr(build, "find_solc", no_compiler)
    monkeypatch.setattr(build, "compile_contracts", no_compiler)
    vault = contract(Web3(), "RiskParityVault", "0x" + "11" * 20)
    assert "rebalance" in {fn["name"] for fn in vault.abi if fn.get("type") == "function"}
    assert {"RiskParityVault", "OptionMarket", "QuoterV2", "UniswapV3Pool"} <= set(all_abis())


def test_an_unknown_contract_name_says_what_exists() -> None:
    with pytest.raises(ConfigError, match=r"no ABI for contract 'Vault'.*known: .*RiskParityVault"):
        load_abi("Vault")


def test_every_deployed_contract_fits_the_eip170_limit() -> None:
    """EIP-170: a contract's runtime code is at most 24,576 bytes. ``./run keeper build`` prints the sizes
    (RiskParityVault and OptionMarket run close to the limit)."""
    build.load_artifacts()  # compiles when the sources changed
    sizes = {name: c["runtime_size"] for name, c in json.loads(build.BUILD_FILE.read_text())["contracts"].items()}
    assert sizes["RiskParityVault"] > 20_000 and sizes["OptionMarket"] > 20_000
    assert {name: size for name, size in sizes.items() if size > 24_576} == {}
