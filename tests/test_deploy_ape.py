"""`ape compile` and `ape run deploy` as a deployer types them, and the keeper ticking against the result, on an
Anvil set up as Ethereum Sepolia: its chain id, the real Uniswap V3 bytecode and Chainlink-style feeds with a round
history placed at the addresses keeper/networks.py lists (keeper.simulated_network). The vault is built for the
network's router, SwapRouter02, and the keeper's tick swaps through it."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ANVIL_KEYS, AnvilProcess, DevSender, connect, contract, dev_accounts
from keeper.ape_env import prepare
from keeper.build import load_artifacts
from keeper.chain import free_port
from keeper.config import KeeperConfig, load_config
from keeper.data import load_prices
from keeper.deployment import price_to_answer, swap_router02_artifact
from keeper.journal import Journal
from keeper.local_up import LocalUpOptions, bring_up
from keeper.networks import NETWORKS, load_deployment_record, router_kind_value
from keeper.preflight import preflight_problems
from keeper.runner import Keeper
from keeper.simulated_network import simulate_network

ROOT = Path(__file__).resolve().parents[1]
APE = str(Path(sys.executable).parent / "ape")


def _ape_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", **extra)
    for name, value in prepare().items():
        env[name] = value.replace("$PATH", os.environ.get("PATH", ""))
    return env


def test_ape_compile_compiles_the_contracts_with_the_declared_dependencies():
    done = subprocess.run([APE, "compile"], cwd=ROOT, env=_ape_env(), capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "compiled" in (done.stdout + done.stderr) or "Nothing to compile" in (done.stdout + done.stderr)
    built = json.loads((ROOT / ".build" / "__local__.json").read_text())
    assert {"RiskParityVault", "OptionMarket"} <= set(built["contractTypes"])


@pytest.fixture(scope="module")
def sepolia():
    """Anvil as Ethereum Sepolia with 60 days of BTC and ETH closes as feed rounds (one an hour after each close)."""
    table = load_prices(symbols=["BTC", "ETH"], start=dt.date(2022, 1, 1), end=dt.date(2022, 3, 1))
    node = AnvilProcess(timestamp=table.close_timestamp(0) - 3600, extra_args=["--chain-id", "11155111"])
    try:
        w3 = connect(node.rpc_url)
        history = {s: [(table.close_timestamp(i) + 3600, price_to_answer(table.prices[i, j]))
                       for i in range(len(table.dates))] for j, s in enumerate(table.symbols)}
        placed = simulate_network(w3, NETWORKS["ethereum:sepolia"], dev_accounts()[0], history)
        yield node, w3, placed
    finally:
        node.stop()


def _deploy(node, out_dir: Path, *more: str) -> subprocess.CompletedProcess:
    _, keeper, guardian = dev_accounts()[:3]
    command = [APE, "run", "deploy", "--network", "ethereum:sepolia:node", "--keeper", keeper, "--guardian", guardian,
               "--accept-unconfirmed", "--out-dir", str(out_dir), *more]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900,
                          env=_ape_env(SEPOLIA_RPC_URL=node.rpc_url, DEPLOYER_PRIVATE_KEY=ANVIL_KEYS[0]))


def test_the_placed_router_is_swaprouter02_with_the_listed_immutables(sepolia):
    _, w3, placed = sepolia
    net = NETWORKS["ethereum:sepolia"]
    assert placed["router"] == "SwapRouter02" and net.router_kind == "swaprouter02"
    router = w3.eth.contract(address=net.router.address, abi=swap_router02_artifact().abi)
    assert router.functions.factory().call() == net.uniswap_factory.address
    assert router.functions.positionManager().call() == net.position_manager.address
    assert router.functions.WETH9().call() == net.weth9.address
    assert router.functions.factoryV2().call() == "0x" + "00" * 20  # no Uniswap V2 listed: V3 paths only


def test_a_router_kind_that_does_not_match_the_router_is_refused_before_anything_is_sent(sepolia, tmp_path):
    node, w3, _ = sepolia
    nonce = w3.eth.get_transaction_count(dev_accounts()[0])
    refused = _deploy(node, tmp_path, "--router-kind", "swaprouter")
    assert refused.returncode != 0
    assert (f"the router {NETWORKS['ethereum:sepolia'].router.address} does not answer as a swaprouter"
            in refused.stdout + refused.stderr), refused.stdout + refused.stderr
    assert w3.eth.get_transaction_count(dev_accounts()[0]) == nonce


def test_ape_run_deploy_on_simulated_sepolia_then_the_keeper_ticks(sepolia, tmp_path):
    node, w3, placed = sepolia
    net = NETWORKS["ethereum:sepolia"]
    done = _deploy(node, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"router {net.router.address} (swaprouter02)" in done.stdout
    record_path = tmp_path / "ethereum-sepolia.json"
    assert f"wrote {record_path}" in done.stdout
    record = json.loads(record_path.read_text())
    assert record["chain_id"] == 11155111 and record["quoter"] == net.quoter_v2.address
    assert record["factory"] == net.uniswap_factory.address
    assert {a["symbol"]: a["feed"] for a in record["assets"]} == {s: net.price_feeds[s].address for s in ("BTC", "ETH")}
    assert (tmp_path / "abi" / "RiskParityVault.json").exists() and (tmp_path / "abi" / "OptionMarket.json").exists()
    vault = contract(w3, "RiskParityVault", record["vault"])
    assert vault.functions.hasRole(vault.functions.KEEPER_ROLE().call(), dev_accounts()[1]).call()
    assert vault.functions.optionMarket().call() == record["option_market"]
    assert vault.functions.maxSlippageBps().call() == 100
    assert record["router"] == net.router.address and record["router_kind"] == "swaprouter02"
    assert vault.functions.swapRouter().call() == net.router.address
    assert vault.functions.routerKind().call() == router_kind_value("swaprouter02") == 1  # RouterKind.SwapRouter02

    # A depositor, then the keeper from the deployment file alone.
    alice = dev_accounts()[4]
    tx = DevSender(w3)
    base = contract(w3, "TestToken", record["base_asset"])
    tx.transact(dev_accounts()[0], base.functions.mint(alice, 100_000 * 10**6))
    tx.transact(alice, base.functions.approve(vault.address, 2**256 - 1))
    tx.transact(alice, vault.functions.deposit(100_000 * 10**6, alice))
    config = KeeperConfig(chain={"rpc_url": node.rpc_url, "deployment_file": str(record_path)},
                          policy={"lookback_days": 45, "estimator": {"method": "ewma", "half_life_days": 20,
                                                                    "min_observations": 30}},
                          operations={"journal_path": ":memory:"})
    assert config.chain.chain_id == 11155111 and config.chain.vault_address == record["vault"]
    assert preflight_problems(w3, config.chain, dev_accounts()[1]) == []
    keeper = Keeper(config, w3=w3, private_key=ANVIL_KEYS[1], journal=Journal(":memory:"))
    first_block = w3.eth.block_number + 1
    report = keeper.run_once()
    assert report.status == "rebalanced", report.reason
    assert vault.functions.rebalanceEpoch().call() == 1
    # Every leg's pool swap was made by SwapRouter02 (the pool's Swap event names its caller) for the vault.
    assert _swaps_since(w3, [a["pool"] for a in record["assets"]], first_block) == {(net.router.address, vault.address)}
    assert vault.events.LegExecuted().get_logs(from_block=first_block)


def test_ape_run_deploy_on_the_local_network(tmp_path):
    """`ape run deploy --network ethereum:local:foundry`: ape starts Anvil, the script deploys everything fresh."""
    done = subprocess.run([APE, "run", "deploy", "--network", "ethereum:local:foundry", "--out-dir", str(tmp_path)],
                          cwd=ROOT, env=_ape_env(), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    record = json.loads((tmp_path / "ethereum-local.json").read_text())
    assert record["chain_id"] == 31337 and [a["symbol"] for a in record["assets"]] == ["BTC", "ETH", "SOL"]
    assert record["option_market"] and record["keeper"] == dev_accounts()[1]
    assert (tmp_path / "ethereum-local.env").read_text().startswith("CHAIN_ID=31337\nVAULT=")


def _swaps_since(w3, pools: list[str], from_block: int) -> set[tuple[str, str]]:
    """(sender, recipient) of every pool Swap event from ``from_block`` on: the sender is the router that swapped."""
    pool_abi = load_artifacts()["UniswapV3Pool"].abi
    return {(e["args"]["sender"], e["args"]["recipient"]) for pool in pools
            for e in w3.eth.contract(address=pool, abi=pool_abi).events.Swap().get_logs(from_block=from_block)}


def test_local_up_with_swaprouter02_then_the_keeper_ticks_through_it(tmp_path):
    """`keeper local-up --router-kind swaprouter02`: the local system on Uniswap's SwapRouter02 (the pools aligned
    through it), and the keeper's tick rebalances through it."""
    options = LocalUpOptions(symbols=("BTC", "ETH"), days=40, lookback_days=30, port=free_port(),
                             out_dir=tmp_path, config_path=tmp_path / "keeper.toml",
                             journal_path=tmp_path / "journal.sqlite", router_kind="swaprouter02")
    system = bring_up(options, say=lambda line: None)
    try:
        record = load_deployment_record(system.record)
        w3 = connect(system.node.rpc_url)
        vault = contract(w3, "RiskParityVault", record.vault)
        assert record.router_kind == "swaprouter02" and vault.functions.swapRouter().call() == record.router
        assert vault.functions.routerKind().call() == router_kind_value("swaprouter02")
        router = w3.eth.contract(address=record.router, abi=swap_router02_artifact().abi)
        assert router.functions.factory().call() == record.factory  # SwapRouter02's views answer
        first_block = w3.eth.block_number + 1
        keeper = Keeper(load_config(system.config), w3=w3, private_key=ANVIL_KEYS[1], journal=Journal(":memory:"))
        report = keeper.run_once()
        assert report.status == "rebalanced", report.reason
        assert _swaps_since(w3, [a.pool for a in record.assets], first_block) == {(record.router, record.vault)}
    finally:
        system.node.stop()


def test_deploy_script_local_router_kinds(tmp_path):
    """`scripts/deploy.py --router-kind swaprouter02` against a running local Anvil builds the vault for
    SwapRouter02; without the flag, for the original SwapRouter."""
    node = AnvilProcess()
    try:
        w3 = connect(node.rpc_url)
        for flags, kind in (([], "swaprouter"), (["--router-kind", "swaprouter02"], "swaprouter02")):
            out_dir = tmp_path / kind
            done = subprocess.run([sys.executable, "scripts/deploy.py", "--rpc-url", node.rpc_url, "--assets", "BTC",
                                   "--out-dir", str(out_dir), *flags], cwd=ROOT, capture_output=True, text=True,
                                  timeout=600, env=dict(os.environ, OPENBLAS_NUM_THREADS="1"))
            assert done.returncode == 0, done.stdout + done.stderr
            record = load_deployment_record(out_dir / "ethereum-local.json")
            assert f"router {record.router} ({kind})" in done.stdout and record.router_kind == kind
            vault = contract(w3, "RiskParityVault", record.vault)
            assert vault.functions.routerKind().call() == router_kind_value(kind)
        refused = subprocess.run([sys.executable, "scripts/deploy.py", "--rpc-url", node.rpc_url, "--router-kind",
                                  "v3"], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert refused.returncode == 2 and "invalid choice: 'v3'" in refused.stderr
    finally:
        node.stop()
