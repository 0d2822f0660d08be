"""`ape run deploy --verify` on an Anvil set up as Ethereum Sepolia (keeper.simulated_network), its explorer played
by a local HTTP server that speaks the Etherscan API v2 contract module: it accepts ``verifysourcecode`` POSTs,
records them, answers the GUID and the ``checkverifystatus`` polls (pending once, then passed).

ape-etherscan is pointed at it the way a user points it at any explorer: the ``etherscan:`` section of an
``ape-config.yaml`` (a copy of the project's with the Sepolia ``uri``/``api_uri`` replaced, in a temporary project
directory whose scripts/deploy.py is the project's, linked). Nothing in the plugin is patched.

What the explorer received must be what was deployed: the submitted standard JSON, compiled by solc alone in an
empty directory (as the explorer compiles it), gives byte for byte the creation code the deploy transactions
carried; the constructor arguments are the rest of those transactions' data and decode to the deployment's values.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from eth_abi import decode

from conftest import ANVIL_KEYS, AnvilProcess, connect, dev_accounts
from keeper.ape_env import prepare
from keeper.build import _settings, find_solc, load_artifacts
from keeper.data import load_prices
from keeper.deployment import price_to_answer
from keeper.networks import NETWORKS, router_kind_value
from keeper.simulated_network import simulate_network

ROOT = Path(__file__).resolve().parents[1]
APE = str(Path(sys.executable).parent / "ape")
API_KEY = "TESTKEY123"


class FakeEtherscan:
    """An Etherscan API v2 endpoint on 127.0.0.1: records every request; ``fail_with`` makes every status check
    answer ``Fail - <that text>``."""

    def __init__(self) -> None:
        self.submissions: list[dict[str, str]] = []
        self.queries: list[dict[str, str]] = []
        self.unexpected: list[str] = []
        self.polls: dict[str, int] = {}
        self.fail_with: str | None = None
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # noqa: ANN002 - quiet
                pass

            def _answer(self, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                query = {k: v[0] for k, v in parse_qs(urlsplit(self.path).query).items()}
                length = int(self.headers.get("Content-Length", 0))
                form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode(), keep_blank_values=True).items()}
                if form.get("module") != "contract" or form.get("action") != "verifysourcecode":
                    outer.unexpected.append(f"POST {self.path} {sorted(form)}")
                    self._answer({"status": "0", "message": "NOTOK", "result": "Error! unknown action"})
                    return
                outer.submissions.append({**form, "_query": json.dumps(query)})
                self._answer({"status": "1", "message": "OK", "result": f"guid{len(outer.submissions)}"})

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                query = {k: v[0] for k, v in parse_qs(urlsplit(self.path).query).items()}
                outer.queries.append(query)
                if query.get("action") != "checkverifystatus":
                    outer.unexpected.append(f"GET {self.path}")
                    self._answer({"status": "0", "message": "NOTOK", "result": "Error! unknown action"})
                    return
                guid = query["guid"]
                outer.polls[guid] = outer.polls.get(guid, 0) + 1
                if outer.fail_with:
                    self._answer({"status": "0", "message": "NOTOK", "result": f"Fail - {outer.fail_with}"})
                elif guid == "guid1" and outer.polls[guid] == 1:  # the first submission is pending once
                    self._answer({"status": "0", "message": "NOTOK", "result": "Pending in queue"})
                else:
                    self._answer({"status": "1", "message": "OK", "result": "Pass - Verified"})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _ape_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", **extra)
    env.pop("ETHERSCAN_API_KEY", None)
    env.update(extra)
    for name, value in prepare().items():
        env[name] = value.replace("$PATH", os.environ.get("PATH", ""))
    return env


@pytest.fixture(scope="module")
def sepolia():
    """Anvil as Ethereum Sepolia with 10 days of BTC and ETH closes as feed rounds."""
    table = load_prices(symbols=["BTC", "ETH"], start=dt.date(2022, 1, 1), end=dt.date(2022, 1, 10))
    node = AnvilProcess(timestamp=table.close_timestamp(0) - 3600, extra_args=["--chain-id", "11155111"])
    try:
        w3 = connect(node.rpc_url)
        history = {s: [(table.close_timestamp(i) + 3600, price_to_answer(table.prices[i, j]))
                       for i in range(len(table.dates))] for j, s in enumerate(table.symbols)}
        simulate_network(w3, NETWORKS["ethereum:sepolia"], dev_accounts()[0], history)
        yield node, w3
    finally:
        node.stop()


@pytest.fixture()
def explorer_project(tmp_path):
    """A project directory whose ape-config.yaml sends Sepolia's verifications to a :class:`FakeEtherscan`."""
    explorer = FakeEtherscan()
    config = (ROOT / "ape-config.yaml").read_text()
    for real in ("uri: https://sepolia.etherscan.io", "api_uri: https://api.etherscan.io/v2/api?chainid=11155111"):
        assert real in config, real  # the configured Sepolia explorer this test replaces
    config = config.replace("uri: https://sepolia.etherscan.io", f"uri: {explorer.url}/explorer").replace(
        "api_uri: https://api.etherscan.io/v2/api?chainid=11155111", f"api_uri: {explorer.url}/v2/api?chainid=11155111")
    project = tmp_path / "project"
    (project / "scripts").mkdir(parents=True)
    (project / "ape-config.yaml").write_text(config)
    (project / "scripts" / "deploy.py").symlink_to(ROOT / "scripts" / "deploy.py")
    try:
        yield project, explorer
    finally:
        explorer.close()


def _deploy(node, cwd: Path, out_dir: Path, env: dict[str, str], network: str = "ethereum:sepolia:node",
            *more: str) -> subprocess.CompletedProcess:
    _, keeper, guardian = dev_accounts()[:3]
    command = [APE, "run", "deploy", "--network", network, "--keeper", keeper, "--guardian", guardian,
               "--accept-unconfirmed", "--out-dir", str(out_dir), "--verify", *more]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=900,
                          env=_ape_env(SEPOLIA_RPC_URL=node.rpc_url, DEPLOYER_PRIVATE_KEY=ANVIL_KEYS[0], **env))


def _creations(w3) -> dict[str, str]:
    """Address of every contract created on the chain -> its creation transaction's data (hex, no 0x)."""
    out = {}
    for number in range(w3.eth.block_number + 1):
        for tx in w3.eth.get_block(number, full_transactions=True)["transactions"]:
            if tx["to"] is None:
                address = w3.eth.get_transaction_receipt(tx["hash"])["contractAddress"]
                out[address] = bytes(tx["input"]).hex()
    return out


def _solc_version() -> str:
    out = subprocess.run([*find_solc(), "--version"], capture_output=True, text=True, check=True).stdout
    return "v" + out.split("Version: ")[1].split()[0].removesuffix(".Emscripten.clang")


def test_ape_run_deploy_verify_submits_the_exact_compilation_and_constructor_arguments(sepolia, explorer_project,
                                                                                     tmp_path):
    node, w3 = sepolia
    project, explorer = explorer_project
    done = _deploy(node, project, tmp_path / "out", {"ETHERSCAN_API_KEY": API_KEY})
    assert done.returncode == 0, done.stdout + done.stderr
    assert explorer.unexpected == []
    record = json.loads((tmp_path / "out" / "ethereum-sepolia.json").read_text())
    owner, keeper, guardian = dev_accounts()[:3]
    creations = _creations(w3)

    # Every contract the deployment created was submitted once, the vault and the option market first.
    by_address = {s["contractaddress"]: s for s in explorer.submissions}
    assert len(by_address) == len(explorer.submissions)
    assert [s["contractaddress"] for s in explorer.submissions[:2]] == [record["vault"], record["option_market"]]
    created_here = {a for a in creations if a in by_address}
    assert created_here == set(by_address)
    assert {record["base_asset"], *(a["token"] for a in record["assets"])} <= set(by_address)
    assert len(by_address) == 1 + 2 + 1 + 1 + 2  # base token, 2 risk tokens, vault, market, 2 implied-vol feeds

    artifacts = load_artifacts()
    solc_version = _solc_version()
    submitted_json = json.loads(explorer.submissions[0]["sourceCode"])
    for submission in explorer.submissions:
        assert json.loads(submission["_query"]) == {"chainid": "11155111"}
        assert submission["module"] == "contract" and submission["apikey"] == API_KEY
        assert submission["codeformat"] == "solidity-standard-json-input"
        assert submission["compilerversion"] == solc_version
        assert (submission["optimizationUsed"], submission["runs"], submission["evmversion"]) == ("1", "200", "cancun")
        assert json.loads(submission["sourceCode"]) == submitted_json
        assert submission["licenseType"] == "3"  # MIT, the contracts' SPDX identifier
        # The constructor arguments are exactly what followed the creation code in the deploy transaction.
        source_id, name = submission["contractname"].split(":")
        creation = artifacts[name].bytecode.removeprefix("0x")
        assert creations[submission["contractaddress"]] == creation + submission["constructorArguements"]

    # The settings are keeper.build's; the project's sources are the files on disk.
    assert submitted_json["settings"] == _settings()
    # No path of this checkout in the compilation (source unit names, settings): a clone anywhere builds the same
    # bytes, metadata hash included, and can verify what another clone deployed.
    assert str(ROOT) not in json.dumps(submitted_json["settings"])
    assert not [unit for unit in submitted_json["sources"] if unit.startswith("/") or "node_modules" in unit]
    assert "@openzeppelin/contracts/token/ERC20/extensions/ERC4626.sol" in submitted_json["sources"]
    assert submitted_json["sources"]["contracts/RiskParityVault.sol"]["content"] == \
        (ROOT / "contracts" / "RiskParityVault.sol").read_text()

    # The vault's and the market's arguments decode to the deployment's values.
    vault_sub, market_sub = explorer.submissions[:2]
    assert vault_sub["contractname"] == "contracts/RiskParityVault.sol:RiskParityVault"
    assert market_sub["contractname"] == "contracts/OptionMarket.sol:OptionMarket"
    vault_inputs = next(i for i in artifacts["RiskParityVault"].abi if i["type"] == "constructor")["inputs"]
    vault_args = dict(zip([i["name"] for i in vault_inputs], decode([i["type"] for i in vault_inputs],
                                                                     bytes.fromhex(vault_sub["constructorArguements"]))))
    assert {k.lower(): (v.lower() if isinstance(v, str) and v.startswith("0x") else v) for k, v in vault_args.items()
            if "kind" not in k.lower()} == {
        "baseasset": record["base_asset"].lower(), "name_": "Risk Parity Vault", "symbol_": "rpUSDC",
        "router": record["router"].lower(), "admin": owner.lower(), "keeper": keeper.lower(),
        "guardian": guardian.lower()}
    assert [v for k, v in vault_args.items() if "kind" in k.lower()] == [router_kind_value("swaprouter02")]
    market_inputs = next(i for i in artifacts["OptionMarket"].abi if i["type"] == "constructor")["inputs"]
    market_args = decode([i["type"] for i in market_inputs], bytes.fromhex(market_sub["constructorArguements"]))
    assert market_args[0].lower() == record["base_asset"].lower() and owner.lower() in [
        a.lower() for a in market_args if isinstance(a, str) and a.startswith("0x")]

    # The explorer's own check: the submitted JSON alone, compiled by solc in an empty directory (no base path, no
    # node_modules), gives the creation code the chain received, byte for byte (metadata hash included).
    recompile = json.loads(json.dumps(submitted_json))
    targets = {"RiskParityVault": vault_sub, "OptionMarket": market_sub}
    recompile["settings"]["outputSelection"] = {
        s["contractname"].split(":")[0]: {n: ["evm.bytecode.object"]} for n, s in targets.items()}
    empty = tmp_path / "empty"
    empty.mkdir()
    out = subprocess.run([*find_solc(), "--standard-json"], input=json.dumps(recompile), capture_output=True,
                         text=True, cwd=empty, timeout=900)
    compiled = json.loads(out.stdout)
    assert not [e for e in compiled.get("errors", []) if e["severity"] == "error"], compiled.get("errors")
    for name, submission in targets.items():
        source_id = submission["contractname"].split(":")[0]
        code = compiled["contracts"][source_id][name]["evm"]["bytecode"]["object"]
        assert creations[submission["contractaddress"]] == code + submission["constructorArguements"]

    # The plugin polled each GUID to its pass (the first one twice: pending, then passed); the run says so.
    assert explorer.polls["guid1"] == 2 and all(explorer.polls[f"guid{i + 1}"] >= 1 for i in range(7))
    assert f"verified RiskParityVault {record['vault']}: Pass - Verified {explorer.url}/explorer/address/" \
        f"{record['vault']}#code" in done.stdout
    results = json.loads((tmp_path / "out" / "ethereum-sepolia.verification.json").read_text())
    assert {r["address"]: r["status"] for r in results["verifications"]} == {a: "Pass - Verified" for a in by_address}


def test_a_failed_verification_names_the_contract_and_the_explorer_reason(sepolia, explorer_project, tmp_path):
    node, _ = sepolia
    project, explorer = explorer_project
    explorer.fail_with = "Unable to verify: bytecode does not match"
    done = _deploy(node, project, tmp_path / "out", {"ETHERSCAN_API_KEY": API_KEY})
    assert done.returncode != 0
    vault = explorer.submissions[0]["contractaddress"]
    assert (f"--verify: the explorer failed RiskParityVault at {vault}: Fail - Unable to verify: bytecode does not "
            "match") in done.stdout + done.stderr

    # The deployment and its contracts were written before verifying: --verify-from retries without deploying.
    saved = tmp_path / "out" / "ethereum-sepolia.verification.json"
    contracts = json.loads(saved.read_text())["contracts"]
    assert len(contracts) == 7 and vault in [c["address"] for c in contracts]
    env = _ape_env(SEPOLIA_RPC_URL=node.rpc_url, ETHERSCAN_API_KEY=API_KEY)
    retry = [APE, "run", "deploy", "--network", "ethereum:sepolia:node", "--verify-from", str(saved)]

    # A file whose constructor arguments are not what the deploy transaction carried is refused, nothing sent.
    tampered = tmp_path / "tampered.json"
    bad = [dict(c, constructor_args_hex=c["constructor_args_hex"][:-1] + "f") if c["name"] == "OptionMarket" else c
           for c in contracts]
    tampered.write_text(json.dumps({"contracts": bad, "verifications": []}))
    sent_before = len(explorer.submissions)
    refused = subprocess.run(retry[:-1] + [str(tampered)], cwd=project, env=env, capture_output=True, text=True,
                             timeout=600)
    assert refused.returncode != 0 and len(explorer.submissions) == sent_before
    market = next(c["address"] for c in contracts if c["name"] == "OptionMarket")
    assert (f"--verify: OptionMarket at {market} was deployed from other bytecode than this checkout's build"
            in refused.stdout + refused.stderr)

    explorer.fail_with = None
    again = subprocess.run(retry, cwd=project, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout + again.stderr
    resent = [s["contractaddress"] for s in explorer.submissions[sent_before:]]
    assert sorted(resent) == sorted(c["address"] for c in contracts) and resent[0] == vault
    assert {r["status"] for r in json.loads(saved.read_text())["verifications"]} == {"Pass - Verified"}


def test_verify_without_an_api_key_is_refused_before_anything_is_sent(sepolia, tmp_path):
    node, w3 = sepolia
    nonce = w3.eth.get_transaction_count(dev_accounts()[0])
    done = _deploy(node, ROOT, tmp_path, {})
    assert done.returncode != 0
    assert "--verify: set ETHERSCAN_API_KEY (an Etherscan API v2 key" in done.stdout + done.stderr
    assert w3.eth.get_transaction_count(dev_accounts()[0]) == nonce


def test_verify_on_the_local_network_is_refused_in_one_line(tmp_path):
    done = subprocess.run([APE, "run", "deploy", "--network", "ethereum:local:foundry", "--out-dir", str(tmp_path),
                           "--verify"], cwd=ROOT, env=_ape_env(ETHERSCAN_API_KEY=API_KEY), capture_output=True,
                          text=True, timeout=600)
    assert done.returncode != 0
    assert ("--verify: ethereum:local has no explorer; verify on ethereum:sepolia, arbitrum:sepolia or base:sepolia"
            in done.stdout + done.stderr)
    assert not (tmp_path / "ethereum-local.json").exists()


@pytest.mark.parametrize(("ape_network", "uri", "chain_id"), [
    ("ethereum:sepolia", "https://sepolia.etherscan.io", 11155111),
    ("arbitrum:sepolia", "https://sepolia.arbiscan.io", 421614),
    ("base:sepolia", "https://sepolia.basescan.org", 84532),
])
def test_each_testnet_resolves_to_its_configured_explorer(monkeypatch, ape_network, uri, chain_id):
    from ape import networks

    from keeper.errors import ConfigError
    from keeper.verification import explorer_target

    network = networks.get_ecosystem(ape_network.split(":")[0]).get_network("sepolia")
    assert network.chain_id == chain_id
    monkeypatch.delenv("ETHERSCAN_API_KEY", raising=False)
    with pytest.raises(ConfigError, match=r"^--verify: set ETHERSCAN_API_KEY \(an Etherscan API v2 key"):
        explorer_target(network)
    monkeypatch.setenv("ETHERSCAN_API_KEY", API_KEY)
    target = explorer_target(network)
    assert (target.ape_network, target.uri, target.api_uri) == (
        ape_network, uri, f"https://api.etherscan.io/v2/api?chainid={chain_id}")
