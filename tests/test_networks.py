"""Public networks' addresses carry their sources; the deployment refuses an unconfirmed or missing feed, a network
it does not know and an unknown router kind, each with what to do; the router kinds follow the vault's enum;
deployment records load or are refused clearly."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest
from web3 import Web3

from keeper.build import load_artifacts
from keeper.errors import ConfigError
from keeper.networks import NETWORKS, ROUTER_KINDS, load_deployment_record, network_addresses, router_kind_value
from keeper.public_deployment import vault_constructor_args

ROOT = Path(__file__).resolve().parents[1]


def _deploy_script():
    spec = importlib.util.spec_from_file_location("deploy_script", ROOT / "scripts" / "deploy.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_address_is_checksummed_and_sourced():
    for name, net in NETWORKS.items():
        assert name == net.ape_network and net.router_kind == "swaprouter02"
        for field in ("uniswap_factory", "quoter_v2", "router", "position_manager", "weth9"):
            sourced = getattr(net, field)
            assert Web3.to_checksum_address(sourced.address) == sourced.address
            assert sourced.source.startswith("https://docs.uniswap.org/") and sourced.confidence == "official"
        for feed in net.price_feeds.values():
            if feed is not None:
                assert Web3.to_checksum_address(feed.address) == feed.address and feed.source
        assert net.sequencer_uptime_feed is None and net.sequencer_note  # none confirmed: said, not invented
    assert {n.chain_id for n in NETWORKS.values()} == {11155111, 421614, 84532}


def test_unknown_network_names_the_known_ones():
    with pytest.raises(ConfigError, match="known: arbitrum:sepolia, base:sepolia, ethereum:sepolia"):
        network_addresses("polygon:amoy")
    assert network_addresses("base:sepolia:node").chain_id == 84532


def _public(script, network, **kw):
    args = dict(keeper="0x" + "11" * 20, guardian="0x" + "22" * 20, symbols=None, extra_feeds={},
                accept_unconfirmed=False, router=None, router_kind=None, key="0x" + "01" * 32, pool_depth_usd=1.0,
                out_dir=Path("/nonexistent"))
    args.update(kw)
    return script.deploy_public("http://127.0.0.1:1", network, **args)


def test_unconfirmed_and_missing_feeds_are_refused_before_anything_is_sent():
    script = _deploy_script()
    with pytest.raises(ConfigError, match="is unconfirmed .* pass --accept-unconfirmed"):
        _public(script, "arbitrum:sepolia")
    with pytest.raises(ConfigError, match="no confirmed BTC/USD feed address .* pass --feed BTC=0x"):
        _public(script, "base:sepolia", accept_unconfirmed=True, symbols=["ETH", "BTC"])
    with pytest.raises(ConfigError, match="expected SYMBOL=0x"):
        script._feeds(["BTC:0x12"])


def test_router_kinds_follow_the_vault_enum_in_order():
    source = (ROOT / "contracts" / "interfaces" / "IRiskParityVault.sol").read_text()
    members = re.search(r"enum RouterKind \{([^}]*)\}", source).group(1)
    assert tuple(m.strip().lower() for m in members.split(",")) == ROUTER_KINDS == ("swaprouter", "swaprouter02")
    assert [router_kind_value(k) for k in ROUTER_KINDS] == [0, 1]
    with pytest.raises(ConfigError, match="router kind 'SwapRouter3' is not one of swaprouter, swaprouter02"):
        router_kind_value("SwapRouter3")


def test_vault_constructor_args_follow_the_abi_with_the_router_kind_as_its_enum_value():
    artifact = load_artifacts()["RiskParityVault"]
    inputs = next(x for x in artifact.abi if x.get("type") == "constructor")["inputs"]
    names = [i["name"] for i in inputs]
    kind_index = next(i for i, inp in enumerate(inputs) if inp["internalType"] == "enum IRiskParityVault.RouterKind")
    for kind, value in (("swaprouter", 0), ("swaprouter02", 1)):
        args = vault_constructor_args(artifact, base="0x" + "aa" * 20, router="0x" + "bb" * 20,
                                      router_kind=kind, admin="A", keeper="K", guardian="G")
        assert len(args) == len(names) and args[names.index("admin")] == "A" and args[names.index("guardian")] == "G"
        assert args[kind_index] == value
    with pytest.raises(ConfigError, match="router kind 'v3' is not one of"):
        vault_constructor_args(artifact, base="0x" + "aa" * 20, router="0x" + "bb" * 20, router_kind="v3",
                               admin="A", keeper="K", guardian="G")


def test_deployment_records_load_or_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="cannot read it .* run `ape run deploy"):
        load_deployment_record(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ConfigError, match="is not JSON"):
        load_deployment_record(tmp_path / "bad.json")
    (tmp_path / "partial.json").write_text(json.dumps({"vault": "0x" + "11" * 20}))
    with pytest.raises(ConfigError, match="lacks quoter, chain_id"):
        load_deployment_record(tmp_path / "partial.json")
    (tmp_path / "kind.json").write_text(json.dumps({"vault": "0x" + "11" * 20, "quoter": "0x" + "22" * 20,
                                                    "chain_id": 1, "router_kind": "SwapRouter02"}))
    with pytest.raises(ConfigError, match="router_kind 'SwapRouter02' is not one of swaprouter, swaprouter02"):
        load_deployment_record(tmp_path / "kind.json")
