"""Source verification of the contracts a deployment created, on the network's Etherscan-family explorer, through
the ape-etherscan plugin's API client (``ape run deploy --verify``).

What is submitted is the compilation that produced the deployed bytecode, not a recompilation by ape: the
standard-JSON input :mod:`keeper.build` gave solc (the same ``contracts/`` sources, optimizer and EVM version; no
remappings, so no path of the checkout), made self-contained by adding every imported file under the source-unit
name solc gave it (``@openzeppelin/contracts/...``; :func:`standard_json_input`). ape's own compile would not do:
the bytecode ends in the IPFS hash of the contract's metadata, which holds every source unit's name and the
remappings, and ape-solidity names the
OpenZeppelin/Uniswap imports after its package cache, so its metadata (and bytecode) differ from ours.
The constructor arguments are the exact bytes each deploy transaction appended to the creation code, recorded as
the deployment sends them (:class:`RecordingSender`).

Protocol (Etherscan API v2, ``module=contract``): ``action=verifysourcecode`` (POST, form-encoded; answers a
GUID), then ``action=checkverifystatus&guid=...`` polled until ``Pass - ...`` or ``Fail - ...``. See
https://docs.etherscan.io/api-endpoints/contracts#verify-source-code. The explorer and API URLs come from the
``etherscan:`` section of ``ape-config.yaml``; the API key from ``ETHERSCAN_API_KEY`` (one key serves every chain
of the v2 API).
"""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from eth_utils import keccak

from keeper.build import NODE_MODULES, PROJECT_ROOT, Artifact, _cached, _digest, _settings, _sources, find_solc
from keeper.errors import ConfigError
from keeper.public_deployment import KeySender

#: The environment variable ape-etherscan reads its API key from (``ape_etherscan.utils.ETHERSCAN_API_KEY_NAME``).
API_KEY_ENV = "ETHERSCAN_API_KEY"
#: Networks whose explorer ``ape-config.yaml`` configures.
VERIFIABLE_NETWORKS = ("ethereum:sepolia", "arbitrum:sepolia", "base:sepolia")
#: Contracts verified first (in this order); every other contract the deployment created follows.
PRIORITY = ("RiskParityVault", "OptionMarket")


@dataclass(frozen=True)
class DeployedContract:
    """One contract the deployment created: its artifact's name, address, the ABI-encoded constructor arguments
    (hex without ``0x``, exactly the bytes after the creation code in the deploy transaction) and that
    transaction's hash."""

    name: str
    address: str
    constructor_args_hex: str
    tx_hash: str


class RecordingSender(KeySender):
    """A :class:`KeySender` that records every contract it deploys (:attr:`deployed`), for verification."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.deployed: list[DeployedContract] = []

    def deploy(self, artifact: Artifact, *args: Any) -> Any:
        factory = self.w3.eth.contract(abi=artifact.abi, bytecode=artifact.bytecode)
        data = factory._encode_constructor_data(*args)
        data_hex = data if isinstance(data, str) else "0x" + bytes(data).hex()
        creation = artifact.bytecode.removeprefix("0x")
        body = data_hex.removeprefix("0x")
        if not body.startswith(creation):  # web3 builds the deploy data as creation code + encoded arguments
            raise ConfigError(f"the deploy data of {artifact.name} does not start with its creation code")
        receipt = self.send(None, data_hex)
        address = self.w3.to_checksum_address(receipt["contractAddress"])
        self.deployed.append(DeployedContract(artifact.name, address, body[len(creation):],
                                              str(receipt["transactionHash"])))
        return self.w3.eth.contract(address=address, abi=artifact.abi)


@dataclass(frozen=True)
class CompilationInput:
    """The self-contained solc standard-JSON input of the project's build and what solc says about it.

    ``standard_json`` holds every source unit (``contracts/...`` and the imported files under their import
    names, ``@openzeppelin/contracts/...``) with its content, and :mod:`keeper.build`'s settings; ``compiler_version``
    is solc's long version (``0.8.37+commit.f401782d``); ``source_ids`` maps each project contract's name to
    its source unit (``RiskParityVault`` -> ``contracts/RiskParityVault.sol``).
    """

    standard_json: dict[str, Any]
    compiler_version: str
    source_ids: dict[str, str]

    @property
    def optimizer_enabled(self) -> bool:
        return bool(self.standard_json["settings"]["optimizer"]["enabled"])

    @property
    def optimizer_runs(self) -> int:
        return int(self.standard_json["settings"]["optimizer"]["runs"])

    @property
    def evm_version(self) -> str:
        return str(self.standard_json["settings"]["evmVersion"])


def _source_text(unit: str) -> str:
    for path in (Path(unit), PROJECT_ROOT / unit, NODE_MODULES / unit):
        if path.is_absolute() and path.is_file():
            return path.read_text()
    raise ConfigError(f"source unit {unit!r} of the build is not on disk (looked under {PROJECT_ROOT} and "
                      f"{NODE_MODULES}); run `npm ci`")


def standard_json_input() -> CompilationInput:
    """The compilation behind ``build/artifacts.json``, made self-contained (module doc).

    solc is run once on keeper.build's exact input with only ``metadata`` selected (analysis, no code
    generation: a few seconds); its ``sources`` list every unit of the compilation, and each contract's metadata
    gives the keccak-256 of every source it was built from, which the file read here must match.

    Raises
    ------
    ConfigError
        The cached build is not from the current sources, compiler and settings (rebuild with
        ``python -m keeper.build``), solc fails, or a source on disk differs from the one compiled.
    """
    sources, solc, settings = _sources(), find_solc(), _settings()
    if _cached(_digest(sources, solc, settings)) is None:
        raise ConfigError("build/artifacts.json is not from the current contracts/ sources, compiler and settings: "
                          "run `.venv/bin/python -m keeper.build` and deploy again (the deployed bytecode would not "
                          "match what is verified)")
    probe = {"language": "Solidity", "sources": {path: {"content": text} for path, text in sources.items()},
             "settings": {**settings, "outputSelection": {"*": {"*": ["metadata"]}}}}
    proc = subprocess.run([*solc, "--standard-json", "--base-path", str(PROJECT_ROOT), "--include-path",
                           str(NODE_MODULES)], input=json.dumps(probe), capture_output=True, text=True, timeout=600)
    if proc.returncode != 0 or not proc.stdout:
        raise ConfigError(f"solc failed (exit {proc.returncode}): {proc.stderr[-2000:]}")
    output = json.loads(proc.stdout)
    errors = [e["formattedMessage"] for e in output.get("errors", []) if e.get("severity") == "error"]
    if errors:
        raise ConfigError("contracts do not compile:\n" + "\n".join(errors))
    expected_keccak: dict[str, str] = {}
    versions: set[str] = set()
    source_ids: dict[str, str] = {}
    for unit, by_name in output["contracts"].items():
        for name, data in by_name.items():
            metadata = json.loads(data["metadata"])
            versions.add(metadata["compiler"]["version"])
            for src, info in metadata["sources"].items():
                expected_keccak[src] = info["keccak256"]
            if unit.startswith("contracts/"):
                source_ids[name] = unit
    units = {unit: {"content": _source_text(unit)} for unit in output["sources"]}
    for unit, entry in units.items():
        digest = "0x" + keccak(text=entry["content"]).hex().removeprefix("0x")
        if unit in expected_keccak and digest != expected_keccak[unit]:
            raise ConfigError(f"{unit} on disk differs from the compiled source (keccak {digest}, compiled "
                              f"{expected_keccak[unit]}): rebuild and redeploy")
    if len(versions) != 1:
        raise ConfigError(f"the build reports several compiler versions {sorted(versions)}")
    return CompilationInput({"language": "Solidity", "sources": units, "settings": settings}, versions.pop(),
                            source_ids)


def license_code(source: str) -> int:
    """Etherscan's license type code of a source's ``SPDX-License-Identifier`` (1, "no license", when none)."""
    from ape_etherscan.verify import LicenseType

    line = next((ln for ln in source.splitlines() if "SPDX-License-Identifier:" in ln), "")
    return LicenseType.from_spdx_id(line).value


@dataclass(frozen=True)
class ExplorerTarget:
    """Where a network's verifications go: its explorer's web URL, its API URL, the ape network choice."""

    ape_network: str
    uri: str
    api_uri: str


def explorer_target(network: Any) -> ExplorerTarget:
    """The explorer of an ape network (``networks.provider.network``) as ape-etherscan configures it.

    Raises
    ------
    ConfigError
        The network has no explorer plugin or no configured API URL, or ``ETHERSCAN_API_KEY`` is not set (one
        line each, naming the fix).
    """
    import os

    from ape.utils import ManagerAccessMixin
    from ape_etherscan import Etherscan

    name = f"{network.ecosystem.name}:{network.name}"
    configured = ManagerAccessMixin.config_manager.get_config("etherscan")
    if network.ecosystem.name in configured and network.name in configured[network.ecosystem.name]:
        # The explorer ape would pick for this configured network; built directly because ape, once connected,
        # first asks every other registered explorer whether it supports the chain id, which ape-etherscan
        # answers by downloading etherscan.io's chain list.
        explorer = Etherscan(name="etherscan", network=network)
    else:
        explorer = network.explorer
    if explorer is None or not isinstance(explorer, Etherscan):
        raise ConfigError(f"--verify: {name} has no Etherscan explorer (verification works on "
                          f"{', '.join(VERIFIABLE_NETWORKS)}; the etherscan: section of ape-config.yaml)")
    try:
        uri, api_uri = explorer.etherscan_uri, explorer.etherscan_api_uri
    except Exception as exc:  # noqa: BLE001 - the plugin asks etherscan.io's chain list when unconfigured
        raise ConfigError(f"--verify: no explorer API URL for {name}: set etherscan.{network.ecosystem.name}."
                          f"{network.name}.uri and .api_uri in ape-config.yaml ({type(exc).__name__})") from exc
    if not api_uri or api_uri == "None" or not uri or uri == "None":
        raise ConfigError(f"--verify: no explorer URL for {name}: set uri and api_uri under etherscan."
                          f"{network.ecosystem.name}.{network.name} in ape-config.yaml")
    if not os.environ.get(API_KEY_ENV):
        raise ConfigError(f"--verify: set {API_KEY_ENV} (an Etherscan API v2 key, https://etherscan.io/myapikey; "
                          "one key serves Sepolia, Arbitrum Sepolia and Base Sepolia)")
    return ExplorerTarget(name, uri, api_uri)


@dataclass(frozen=True)
class VerificationResult:
    """One contract's verification: what was submitted and the explorer's final answer."""

    name: str
    address: str
    contract_name: str
    guid: str | None
    status: str
    url: str


def publish(target: ExplorerTarget, deployed: list[DeployedContract], *, compilation: CompilationInput | None = None,
            poll_seconds: float = 3.0, max_polls: int = 100, locate_retries: int = 10,
            echo: Callable[[str], None] = print) -> list[VerificationResult]:
    """Submits every contract of ``deployed`` (vault and option market first) to the explorer of ``target`` with
    :func:`standard_json_input`, then polls each submission until the explorer passes or fails it.

    A submission the explorer refuses because it has not indexed the contract yet ("Unable to locate
    ContractCode") is retried ``locate_retries`` times, ``poll_seconds`` apart.

    Raises
    ------
    ConfigError
        A contract that is not one of the project's (no source to submit), or the explorer fails a verification
        or does not answer within ``max_polls`` polls (the message names the contract and the explorer's words).
    """
    from ape_etherscan.client import ClientFactory
    from ape_etherscan.exceptions import EtherscanResponseError
    from ape_etherscan.types import EtherscanInstance

    compilation = compilation or standard_json_input()
    ecosystem, network_name = target.ape_network.split(":")[:2]
    factory = ClientFactory(EtherscanInstance(ecosystem_name=ecosystem, network_name=network_name, uri=target.uri,
                                              api_uri=target.api_uri))
    ordered = sorted(deployed, key=lambda d: (PRIORITY.index(d.name) if d.name in PRIORITY else len(PRIORITY)))
    results = []
    for item in ordered:
        source_id = compilation.source_ids.get(item.name)
        if source_id is None:
            raise ConfigError(f"--verify: {item.name} at {item.address} is not compiled from contracts/; nothing "
                              "to submit")
        client = factory.get_contract_client(item.address)
        contract_name = f"{source_id}:{item.name}"
        guid = None
        for attempt in range(locate_retries + 1):
            try:
                guid = client.verify_source_code(
                    compilation.standard_json, compilation.compiler_version, contract_name=contract_name,
                    optimization_used=compilation.optimizer_enabled, optimization_runs=compilation.optimizer_runs,
                    constructor_arguments=item.constructor_args_hex, evm_version=compilation.evm_version,
                    license_type=license_code(compilation.standard_json["sources"][source_id]["content"]))
                break
            except EtherscanResponseError as exc:
                text = str(exc)
                if "already verified" in text.lower():
                    break
                if "unable to locate contractcode" in text.lower() and attempt < locate_retries:
                    time.sleep(poll_seconds)  # the explorer has not indexed the deploy transaction yet
                    continue
                raise ConfigError(f"--verify: the explorer refused {item.name} at {item.address}: {text}") from exc
        status = "Already Verified" if guid is None else _wait(client, item, guid, poll_seconds, max_polls)
        url = f"{target.uri}/address/{item.address}#code"
        echo(f"verified {item.name} {item.address}: {status} {url}")
        results.append(VerificationResult(item.name, item.address, contract_name, guid, status, url))
    return results


def _wait(client: Any, item: DeployedContract, guid: str, poll_seconds: float, max_polls: int) -> str:
    from ape_etherscan.exceptions import EtherscanResponseError

    for _ in range(max_polls):
        try:
            status = client.check_verify_status(guid)
        except EtherscanResponseError as exc:
            if "already verified" in str(exc).lower():
                return "Already Verified"
            raise ConfigError(f"--verify: status of {item.name} at {item.address}: {exc}") from exc
        if status.startswith("Pass - ") or status == "Already Verified":
            return status
        if status.startswith("Fail - "):
            raise ConfigError(f"--verify: the explorer failed {item.name} at {item.address}: {status}")
        time.sleep(poll_seconds)
    raise ConfigError(f"--verify: {item.name} at {item.address} still not verified after {max_polls} polls "
                      f"(guid {guid})")


def write_results(path: Path, deployed: list[DeployedContract], results: list[VerificationResult]) -> Path:
    """Writes the deployed contracts (with constructor arguments) and their verification results as JSON: what
    :func:`load_deployed` reads to verify again (``ape run deploy --verify-from PATH``)."""
    path.write_text(json.dumps({"contracts": [asdict(d) for d in deployed],
                                "verifications": [asdict(r) for r in results]}, indent=1) + "\n")
    return path


def load_deployed(path: Path) -> list[DeployedContract]:
    """The contracts of a file :func:`write_results` wrote.

    Raises
    ------
    ConfigError
        The file is missing or not such a file (the message names it).
    """
    try:
        data = json.loads(Path(path).read_text())
        return [DeployedContract(**item) for item in data["contracts"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"--verify-from {path}: not a deployments/<network>.verification.json written by "
                          f"`ape run deploy` ({type(exc).__name__}: {exc})") from exc


def check_deployed_code(w3: Any, deployed: list[DeployedContract], artifacts: dict[str, Artifact]) -> None:
    """Checks that each contract's deploy transaction carried the current build's creation code followed by the
    recorded constructor arguments, so that what is submitted is what is on chain.

    Raises
    ------
    ConfigError
        A transaction that is missing, or whose data differs (a different build or another checkout deployed it:
        the message says which contract).
    """
    for item in deployed:
        try:
            tx = w3.eth.get_transaction(item.tx_hash)
        except Exception as exc:  # noqa: BLE001 - web3 raises TransactionNotFound
            raise ConfigError(f"--verify: the deploy transaction {item.tx_hash} of {item.name} is not on this chain "
                              f"({type(exc).__name__})") from exc
        sent = tx["input"] if isinstance(tx["input"], str) else "0x" + bytes(tx["input"]).hex()
        artifact = artifacts.get(item.name)
        expected = (artifact.bytecode.removeprefix("0x") if artifact else "") + item.constructor_args_hex
        if artifact is None or sent.removeprefix("0x") != expected:
            raise ConfigError(f"--verify: {item.name} at {item.address} was deployed from other bytecode than this "
                              "checkout's build (sources or compiler differ): verify from the "
                              "checkout and build that deployed it")


__all__ = ["API_KEY_ENV", "CompilationInput", "DeployedContract", "ExplorerTarget", "RecordingSender",
           "VerificationResult", "check_deployed_code", "explorer_target", "license_code", "load_deployed",
           "publish", "standard_json_input", "write_results"]
