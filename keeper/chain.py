"""Low-level chain access: a local Anvil process, a lean web3 connection, contract handles, and a
dev-account transaction helper for local chains.

The keeper's hot path talks JSON-RPC through web3.py with no default middleware (each default
middleware costs extra ``eth_chainId`` round trips per call); transactions are built explicitly.
"""

from __future__ import annotations

import glob
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Sequence

from eth_abi import decode as abi_decode
from eth_utils import function_abi_to_4byte_selector, to_checksum_address
from web3 import Web3
from web3.contract import Contract
from web3.exceptions import ContractCustomError, ContractLogicError

from keeper.abis import all_abis, load_abi
from keeper.build import PROJECT_ROOT, Artifact
from keeper.errors import ConfigError, TransactionFailedError

#: Anvil's deterministic dev accounts (mnemonic "test test ... junk"): index -> private key.
ANVIL_KEYS = (
    "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
    "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
    "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",
    "0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6",
    "0x47e179ec197488593b187f80a00eb0da91f1b9d0b13f8733639f19c30a34926a",
    "0x8b3a350cf5c34c9194ca85829a2df0ec3153be0318b5e2d3348e872092edffba",
    "0x92db14e403b83dfe3df233f83dfa3a0d7096f21ca9b0d6d6b8d88b2b4ec1564e",
    "0x4bbbf85ce3377467afe5d46f804f221813b2bb87f24d81f60f1fcdbf7cbf4356",
    "0xdbda1821b80551c9d65939329250298aa3472ba22feea921c0cf5d620ea67b97",
    "0x2a871d0798f97d79848a013d4936a73bf4cc922c825d33c1cf7073dff6d409c6",
)


def anvil_binary() -> str:
    """Path of the ``anvil`` executable: the platform binary from npm, else one on ``PATH``.

    The npm wrapper in ``node_modules/.bin`` is avoided: it swallows exit codes.

    Raises
    ------
    ConfigError
        When no anvil is installed (run ``npm ci``).
    """
    found = sorted(glob.glob(str(PROJECT_ROOT / "node_modules/@foundry-rs/anvil-*/bin/anvil")))
    if found:
        return found[0]
    on_path = shutil.which("anvil")
    if on_path:
        return on_path
    raise ConfigError("anvil not found in node_modules/@foundry-rs or on PATH; run `npm ci`")


def free_port() -> int:
    """An unused TCP port on localhost."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class AnvilProcess:
    """A local Anvil node, started on construction and stopped by :meth:`stop` (or ``with``).

    Parameters
    ----------
    port : int, optional
        TCP port; a free one by default.
    timestamp : int, optional
        Genesis block timestamp, Unix seconds (lets a replay run at historical dates).
    fork_url : str, optional
        RPC URL to fork from.
    extra_args : sequence of str
        Further anvil flags.
    history_states : int, optional
        Keep this many recent states in memory (``--prune-history N``), so calls at a block a little
        behind the head still work while other transactions are mined (a keeper reads every call of a
        tick at its snapshot block, as a real node's recent state allows). Default 64.
    """

    def __init__(
        self,
        port: int | None = None,
        timestamp: int | None = None,
        fork_url: str | None = None,
        extra_args: Sequence[str] = (),
        startup_timeout_seconds: float = 30.0,
        history_states: int | None = 64,
    ) -> None:
        self.port = port or free_port()
        self.rpc_url = f"http://127.0.0.1:{self.port}"
        args = [
            anvil_binary(),
            "--port", str(self.port),
            "--host", "127.0.0.1",
            "--silent",
            "--prune-history", *([str(int(history_states))] if history_states is not None else []),
            "--accounts", str(len(ANVIL_KEYS)),
            "--balance", "1000000",
        ]
        if timestamp is not None:
            args += ["--timestamp", str(int(timestamp))]
        if fork_url is not None:
            args += ["--fork-url", fork_url]
        args += list(extra_args)
        self._log = tempfile.TemporaryFile()
        self.process = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + startup_timeout_seconds
        w3 = connect(self.rpc_url, timeout_seconds=2)
        while True:
            if self.process.poll() is not None:
                self._log.seek(0)
                raise ConfigError(f"anvil exited with {self.process.returncode}: {self._log.read()[-2000:]!r}")
            try:
                w3.eth.block_number
                break
            except Exception:  # noqa: BLE001 - any connection error means "not up yet"
                if time.monotonic() > deadline:
                    self.stop()
                    raise ConfigError(f"anvil did not answer on {self.rpc_url} within {startup_timeout_seconds} s")
                time.sleep(0.05)

    def stop(self) -> None:
        """Terminates the node (SIGTERM, then SIGKILL after 5 s)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()

    def __enter__(self) -> "AnvilProcess":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def connect(rpc_url: str, timeout_seconds: float = 30.0) -> Web3:
    """A web3 connection with no default middleware (fewer round trips per call)."""
    return Web3(Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": timeout_seconds}), middleware=[])


def connect_failover(config: Any) -> Web3:
    """A web3 connection over ``config.chain.rpc_url`` then ``config.chain.rpc_fallback_urls``, with the config's
    per-request timeout and retry policy (:class:`keeper.rpc.FailoverHTTPProvider`), no default middleware."""
    from keeper.rpc import FailoverHTTPProvider

    provider = FailoverHTTPProvider(
        [config.chain.rpc_url, *config.chain.rpc_fallback_urls],
        timeout_seconds=config.chain.rpc_timeout_seconds,
        max_attempts=config.chain.rpc_max_attempts,
        backoff_initial_seconds=config.chain.rpc_backoff_initial_seconds,
        backoff_max_seconds=config.chain.rpc_backoff_max_seconds,
    )
    return Web3(provider, middleware=[])


def contract(w3: Web3, name: str, address: str) -> Contract:
    """Handle on the deployed contract ``name`` (an artifact name) at ``address``."""
    return w3.eth.contract(address=to_checksum_address(address), abi=load_abi(name))


def rpc(w3: Web3, method: str, params: list[Any]) -> Any:
    """Raw JSON-RPC request; raises ``RuntimeError`` with the node's message on error."""
    response = w3.provider.make_request(method, params)  # type: ignore[arg-type]
    if "error" in response:
        raise RuntimeError(f"{method} failed: {response['error']}")
    return response["result"]


def wait_for_receipt(w3: Web3, tx_hash: bytes | str, timeout_seconds: float = 120.0, poll_seconds: float = 0.002) -> Any:
    """Polls for a receipt (a short poll: Anvil mines within milliseconds).

    Raises
    ------
    TransactionFailedError
        When no receipt appears within ``timeout_seconds``.
    """
    tx_hex = tx_hash if isinstance(tx_hash, str) else "0x" + bytes(tx_hash).hex()
    deadline = time.monotonic() + timeout_seconds
    delay = poll_seconds
    while True:
        receipt = w3.provider.make_request("eth_getTransactionReceipt", [tx_hex]).get("result")  # type: ignore[arg-type]
        if receipt is not None:
            return receipt
        if time.monotonic() > deadline:
            raise TransactionFailedError(
                f"transaction {tx_hex} has no receipt after {timeout_seconds} s; it may be stuck "
                "(fee too low) or dropped: check the node's mempool and resend with higher fees"
            )
        time.sleep(delay)
        delay = min(delay * 1.5, 0.5)


# --- Custom errors ---------------------------------------------------------------------------------


def _error_selectors() -> dict[bytes, tuple[str, list[str]]]:
    table: dict[bytes, tuple[str, list[str]]] = {}
    for abi in all_abis().values():
        for item in abi:
            if item.get("type") == "error":
                types = [inp["type"] for inp in item["inputs"]]
                table[function_abi_to_4byte_selector(item)] = (item["name"], types)
    table[bytes.fromhex("08c379a0")] = ("Error", ["string"])
    table[bytes.fromhex("4e487b71")] = ("Panic", ["uint256"])
    return table


_SELECTORS: dict[bytes, tuple[str, list[str]]] | None = None


@dataclass(frozen=True)
class DecodedRevert:
    """A revert decoded against every ABI the project knows: the error's name and arguments."""

    name: str
    args: tuple[Any, ...]
    data: bytes

    def __str__(self) -> str:
        return f"{self.name}{self.args}"


def decode_revert(data: bytes | str | None) -> DecodedRevert:
    """Decodes revert data into a :class:`DecodedRevert` (name ``"Unknown"`` when no ABI matches)."""
    global _SELECTORS
    if _SELECTORS is None:
        _SELECTORS = _error_selectors()
    if isinstance(data, str):
        data = bytes.fromhex(data.removeprefix("0x"))
    data = data or b""
    entry = _SELECTORS.get(data[:4])
    if entry is None:
        return DecodedRevert("Unknown", (data.hex(),), data)
    name, types = entry
    try:
        args = tuple(abi_decode(types, data[4:]))
    except Exception:  # noqa: BLE001 - malformed payload
        return DecodedRevert(name, (data.hex(),), data)
    return DecodedRevert(name, args, data)


def revert_data_of(exc: BaseException) -> bytes | None:
    """Revert data carried by a web3 exception, if any."""
    if isinstance(exc, (ContractCustomError, ContractLogicError)):
        data = exc.data
        if isinstance(data, str) and data.startswith("0x"):
            return bytes.fromhex(data[2:])
        if isinstance(data, (bytes, bytearray)):
            return bytes(data)
    return None


def call_raw(w3: Web3, tx: dict[str, Any], block: str = "latest") -> tuple[bool, bytes]:
    """``eth_call`` returning ``(ok, returndata_or_revertdata)`` without raising on reverts."""
    params = {k: (hex(v) if isinstance(v, int) else v) for k, v in tx.items()}
    response = w3.provider.make_request("eth_call", [params, block])  # type: ignore[arg-type]
    if "error" in response:
        err = response["error"]
        data = err.get("data")
        if isinstance(data, dict):
            data = data.get("data")
        if isinstance(data, str) and data.startswith("0x"):
            return False, bytes.fromhex(data[2:])
        raise RuntimeError(f"eth_call failed without revert data: {err}")
    return True, bytes.fromhex(response["result"][2:])


# --- Dev accounts (local chains) -------------------------------------------------------------------


class DevSender:
    """Sends transactions from Anvil's unlocked dev accounts (``eth_sendTransaction``). Local chains only.

    Every send waits for its receipt and raises :class:`TransactionFailedError` with the decoded revert
    when the transaction fails. A node that offers ``eth_sendTransactionSync`` (Anvil) answers the send with
    the receipt once the transaction is mined (one round trip); another one is sent ``eth_sendTransaction``
    and its receipt polled (:func:`wait_for_receipt`).
    """

    def __init__(self, w3: Web3) -> None:
        self.w3 = w3
        #: Whether the node answers ``eth_sendTransactionSync``; unknown (None) until the first send.
        self.sync: bool | None = None

    def send(self, sender: str, to: str | None, data: bytes | str, value: int = 0, gas: int | None = None) -> Any:
        data_hex = data if isinstance(data, str) else "0x" + data.hex()
        tx: dict[str, Any] = {"from": sender, "data": data_hex, "value": hex(value)}
        if to is not None:
            tx["to"] = to
        if gas is None:
            # Anvil's own estimate can fall short on Uniswap swaps (gas depends on the block): add a margin.
            estimate = self.w3.provider.make_request("eth_estimateGas", [tx])  # type: ignore[arg-type]
            if "result" in estimate:
                gas = int(estimate["result"], 16) * 13 // 10 + 20_000
        if gas is not None:
            tx["gas"] = hex(gas)
        receipt = None
        if self.sync is not False:
            response = self.w3.provider.make_request("eth_sendTransactionSync", [tx])  # type: ignore[arg-type]
            unknown = response.get("error", {}).get("code") == -32601  # method not found
            self.sync = not unknown
            if not unknown and "error" not in response:
                receipt = response["result"]
                response = {"result": receipt["transactionHash"]}
        if self.sync is False:
            response = self.w3.provider.make_request("eth_sendTransaction", [tx])  # type: ignore[arg-type]
        if "error" in response:
            err = response["error"]
            data_field = err.get("data")
            if isinstance(data_field, dict):
                data_field = data_field.get("data")
            detail = decode_revert(data_field) if isinstance(data_field, str) else err.get("message")
            raise TransactionFailedError(f"transaction from {sender} to {to} refused: {detail}")
        if receipt is None:
            receipt = wait_for_receipt(self.w3, response["result"])
        if int(receipt["status"], 16) != 1:
            # Replay as a call on the resulting state to recover the revert reason for the message.
            call = {k: v for k, v in tx.items() if k != "gas"}
            try:
                ok, out = call_raw(self.w3, call)
                detail = "" if ok else f": {decode_revert(out)}"
            except RuntimeError:
                detail = ""
            raise TransactionFailedError(f"transaction {response['result']} reverted on chain (to {to}){detail}")
        return receipt

    def transact(self, sender: str, fn: Any, value: int = 0, gas: int | None = None) -> Any:
        """Sends a bound web3 contract function call, e.g. ``token.functions.mint(a, 1)``."""
        return self.send(sender, fn.address, fn._encode_transaction_data(), value=value, gas=gas)

    def deploy(self, sender: str, artifact: Artifact, *args: Any) -> Contract:
        """Deploys ``artifact`` with constructor ``args`` and returns a handle on it."""
        factory = self.w3.eth.contract(abi=artifact.abi, bytecode=artifact.bytecode)
        data = factory._encode_constructor_data(*args)
        receipt = self.send(sender, None, data)
        return self.w3.eth.contract(address=to_checksum_address(receipt["contractAddress"]), abi=artifact.abi)


def dev_accounts() -> list[str]:
    """Checksummed addresses of Anvil's dev accounts, in index order."""
    from eth_account import Account

    return [Account.from_key(k).address for k in ANVIL_KEYS]


__all__ = [
    "ANVIL_KEYS",
    "AnvilProcess",
    "DecodedRevert",
    "DevSender",
    "anvil_binary",
    "call_raw",
    "connect",
    "connect_failover",
    "contract",
    "decode_revert",
    "dev_accounts",
    "rpc",
    "wait_for_receipt",
]
