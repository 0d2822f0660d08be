"""Compiles the project's Solidity and loads contract artifacts (ABI and bytecode).

Project contracts in ``contracts/`` are compiled with solc's standard-JSON interface: a native ``solc``
(0.8.24 or newer) when one is on ``PATH``, otherwise the project's adapter ``tools/solc/solc`` around the
npm package ``solc`` (the same compiler built to wasm). Output is cached in ``build/artifacts.json`` and
rebuilt only when a source, the compiler, its settings or ``package-lock.json`` changes; every build also
writes the ABIs to ``keeper/abi/`` (committed), which is all the keeper needs at run time. Uniswap V3 is never recompiled: its real bytecode is
loaded from the compiled artifacts shipped in the ``@uniswap/v3-core`` and ``@uniswap/v3-periphery`` npm
packages.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from keeper.errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CONTRACTS_DIR = PROJECT_ROOT / "contracts"
NODE_MODULES = PROJECT_ROOT / "node_modules"
BUILD_FILE = PROJECT_ROOT / "build" / "artifacts.json"
ADAPTER = PROJECT_ROOT / "tools" / "solc" / "solc"
PACKAGE_LOCK = PROJECT_ROOT / "package-lock.json"
#: ABIs the keeper loads at run time, written by every build (see :func:`write_abis`).
ABI_DIR = PROJECT_ROOT / "keeper" / "abi"
EVM_VERSION = "cancun"

#: Contracts deployed from the compiled artifacts their npm packages ship (the audited bytecode, never
#: recompiled): Uniswap V3, and OpenZeppelin's TimelockController (the admin of a deployment that puts its
#: governance behind a delay). Name -> path under node_modules.
NPM_ARTIFACTS = {
    "UniswapV3Factory": "@uniswap/v3-core/artifacts/contracts/UniswapV3Factory.sol/UniswapV3Factory.json",
    "UniswapV3Pool": "@uniswap/v3-core/artifacts/contracts/UniswapV3Pool.sol/UniswapV3Pool.json",
    "SwapRouter": "@uniswap/v3-periphery/artifacts/contracts/SwapRouter.sol/SwapRouter.json",
    "NonfungiblePositionManager": (
        "@uniswap/v3-periphery/artifacts/contracts/NonfungiblePositionManager.sol/NonfungiblePositionManager.json"
    ),
    "QuoterV2": "@uniswap/v3-periphery/artifacts/contracts/lens/QuoterV2.sol/QuoterV2.json",
    "TimelockController": "@openzeppelin/contracts/build/contracts/TimelockController.json",
}


@dataclass(frozen=True)
class Artifact:
    """ABI and creation bytecode (hex, ``0x``-prefixed) of one contract."""

    name: str
    abi: list[dict[str, Any]]
    bytecode: str


def find_solc() -> list[str]:
    """Command that runs a solc answering ``--standard-json``.

    A native ``solc`` of version 0.8.24 or newer on ``PATH`` wins; otherwise the project's adapter.

    Raises
    ------
    ConfigError
        When neither exists (run ``npm ci`` to install the npm compiler).
    """
    native = shutil.which("solc")
    if native and Path(native).resolve() != ADAPTER.resolve():
        try:
            out = subprocess.run([native, "--version"], capture_output=True, text=True, timeout=30).stdout
        except (OSError, subprocess.TimeoutExpired):
            out = ""
        match = re.search(r"Version: 0\.8\.(\d+)", out)
        if match and int(match.group(1)) >= 24 and "Emscripten" not in out:
            return [native]
    if not (NODE_MODULES / "solc").is_dir():
        raise ConfigError(
            f"no native solc >= 0.8.24 on PATH and no npm compiler at {NODE_MODULES / 'solc'}; run `npm ci`"
        )
    return ["node", str(ADAPTER)]


def _sources() -> dict[str, str]:
    """The project's Solidity files under ``contracts/``. Hidden folders are not sources: ``ape compile`` keeps
    its copies of the npm dependencies in ``contracts/.cache`` (where a package's ``artifacts/X.sol/`` is a
    folder), and those are compiled from ``node_modules`` through the include path instead."""
    return {
        str(path.relative_to(PROJECT_ROOT)): path.read_text()
        for path in sorted(CONTRACTS_DIR.rglob("*.sol"))
        if path.is_file() and not any(part.startswith(".") for part in path.relative_to(CONTRACTS_DIR).parts)
    }


def _settings() -> dict[str, Any]:
    """solc standard-JSON settings: optimizer, EVM version. No remappings: an import such as
    ``@openzeppelin/contracts/...`` is found through the ``--include-path node_modules`` of the compile and keeps
    that name as its source unit, so the metadata (and with it the metadata hash at the end of every bytecode)
    holds no path of this checkout: any clone builds the same bytes."""
    return {
        "optimizer": {"enabled": True, "runs": 200},
        "evmVersion": EVM_VERSION,
        "outputSelection": {"*": {"*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"]}},
    }


def _digest(sources: dict[str, str], solc: list[str], settings: dict[str, Any]) -> str:
    """Content hash of everything the build output depends on.

    The project's sources, the compiler (native binary path, or the npm adapter whose version is pinned by
    ``package-lock.json``), the settings, the list of npm artifacts whose ABIs are written, and
    ``package-lock.json`` itself (it pins the imported
    OpenZeppelin, Chainlink and Uniswap sources and the npm compiler).
    """
    lock = PACKAGE_LOCK.read_bytes() if PACKAGE_LOCK.exists() else b""
    payload = json.dumps([sources, solc[-1], settings, NPM_ARTIFACTS]).encode() + hashlib.sha256(lock).digest()
    return hashlib.sha256(payload).hexdigest()


def _cached(digest: str) -> dict[str, Artifact] | None:
    """The cached artifacts when ``build/artifacts.json`` was built from ``digest``, else ``None``."""
    if not BUILD_FILE.exists():
        return None
    try:
        cached = json.loads(BUILD_FILE.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if cached.get("digest") != digest:
        return None
    return {name: Artifact(name, a["abi"], a["bytecode"]) for name, a in cached["contracts"].items()}


def compile_contracts(force: bool = False) -> dict[str, Artifact]:
    """Compiles ``contracts/`` (cached) and returns artifacts by contract name.

    Raises
    ------
    ConfigError
        When the compiler is missing or the sources do not compile (the message holds solc's errors).
    """
    sources = _sources()
    solc = find_solc()
    settings = _settings()
    digest = _digest(sources, solc, settings)
    if not force:
        cached = _cached(digest)
        if cached is not None:
            return cached
    standard_input = {
        "language": "Solidity",
        "sources": {path: {"content": text} for path, text in sources.items()},
        "settings": settings,
    }
    proc = subprocess.run(
        [*solc, "--standard-json", "--base-path", str(PROJECT_ROOT), "--include-path", str(NODE_MODULES)],
        input=json.dumps(standard_input),
        capture_output=True,
        text=True,
        timeout=600,
    )
    if proc.returncode != 0 or not proc.stdout:
        raise ConfigError(f"solc failed (exit {proc.returncode}): {proc.stderr[-2000:]}")
    output = json.loads(proc.stdout)
    errors = [e for e in output.get("errors", []) if e.get("severity") == "error"]
    if errors:
        raise ConfigError("contracts do not compile:\n" + "\n".join(e["formattedMessage"] for e in errors))
    contracts: dict[str, dict[str, Any]] = {}
    for path, by_name in output["contracts"].items():
        if not path.startswith("contracts/"):
            continue
        for name, data in by_name.items():
            contracts[name] = {
                "abi": data["abi"],
                "bytecode": "0x" + data["evm"]["bytecode"]["object"],
                "runtime_size": len(data["evm"]["deployedBytecode"]["object"]) // 2,
            }
    BUILD_FILE.parent.mkdir(parents=True, exist_ok=True)
    tmp = BUILD_FILE.with_suffix(".tmp")
    tmp.write_text(json.dumps({"digest": digest, "contracts": contracts}))
    os.replace(tmp, BUILD_FILE)
    artifacts = {name: Artifact(name, a["abi"], a["bytecode"]) for name, a in contracts.items()}
    write_abis({**artifacts, **_npm_artifacts()})
    return artifacts


def _npm_artifacts() -> dict[str, Artifact]:
    """The compiled contracts of :data:`NPM_ARTIFACTS`, as their npm packages ship them (never recompiled)."""
    artifacts = {}
    for name, rel in NPM_ARTIFACTS.items():
        path = NODE_MODULES / rel
        if not path.exists():
            raise ConfigError(f"compiled artifact of {name} missing at {path}; run `npm ci`")
        data = json.loads(path.read_text())
        artifacts[name] = Artifact(name, data["abi"], data["bytecode"])
    return artifacts


def abi_text(abi: list[dict[str, Any]]) -> str:
    """The canonical text of an ABI file in ``keeper/abi/`` (sorted keys, so a rebuild changes no byte)."""
    return json.dumps(abi, indent=1, sort_keys=True) + "\n"


def write_abis(artifacts: dict[str, Artifact]) -> None:
    """Writes ``keeper/abi/<Name>.json`` for every artifact whose ABI is not empty.

    These files are what the keeper loads at run time (:func:`keeper.abis.load_abi`): running it needs
    no compiler. They are committed; a build that changes one shows up in ``git status``, and a test
    checks that they match the compiled contracts.
    """
    ABI_DIR.mkdir(parents=True, exist_ok=True)
    for name, artifact in artifacts.items():
        if not artifact.abi:
            continue
        path = ABI_DIR / f"{name}.json"
        text = abi_text(artifact.abi)
        if not path.exists() or path.read_text() != text:
            path.write_text(text)


@lru_cache(maxsize=None)
def load_artifacts() -> dict[str, Artifact]:
    """All artifacts: the project's contracts (compiled if needed) and those of :data:`NPM_ARTIFACTS`."""
    return {**compile_contracts(), **_npm_artifacts()}


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``python -m keeper.build [--if-changed]``.

    Without a flag it recompiles and lists the artifacts. With ``--if-changed`` (what ``./run`` calls
    before every command) it compiles only when the content hash of sources, compiler, settings and
    ``package-lock.json`` differs from the cached build, and prints one line when it does.
    """
    import sys

    args = sys.argv[1:] if argv is None else argv
    if "--if-changed" in args:
        if _cached(_digest(_sources(), find_solc(), _settings())) is None:
            print("compiling contracts/ (sources, compiler or package-lock.json changed)...", file=sys.stderr)
            compile_contracts(force=True)
        return
    artifacts = compile_contracts(force=True)
    runtime = {name: a["runtime_size"] for name, a in json.loads(BUILD_FILE.read_text())["contracts"].items()}
    print(f"{'contract':28s} {'creation':>8s} {'runtime':>8s}  (EIP-170 limit on runtime code: 24,576 bytes)")
    for name, art in sorted(artifacts.items()):
        print(f"{name:28s} {(len(art.bytecode) - 2) // 2:8d} {runtime[name]:8d} bytes")


if __name__ == "__main__":
    main()
