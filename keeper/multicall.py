"""Many contract reads in one ``eth_call``: Multicall3 ``aggregate3`` with calldata encoded by hand.

`Multicall3 <https://www.multicall3.com>`_ lives at :data:`MULTICALL3_ADDRESS` on every public EVM network
(the same deployer and nonce everywhere). On a local chain :func:`ensure_multicall3` places it there with
``anvil_setCode``: its creation code comes from the ``viem`` npm package (``multicall3Bytecode``, the
canonical build), run once through ``eth_call`` to obtain the runtime code.

Encoding and decoding are written out for the two shapes used here, because web3's per-call ABI machinery
costs tens of microseconds per call and a tick reads hundreds of values:

- ``aggregate3((address target, bool allowFailure, bytes callData)[] calls)`` (selector ``0x82ad56cb``),
- its result ``(bool success, bytes returnData)[]``.

Both follow the Solidity ABI specification (head/tail encoding of a dynamic array of dynamic tuples);
``tests/test_multicall.py`` checks them against ``eth_abi``.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Sequence

from eth_utils import keccak, to_checksum_address
from web3 import Web3

from keeper.build import PROJECT_ROOT
from keeper.errors import ConfigError, RpcUnavailableError

log = logging.getLogger("keeper.multicall")

#: Multicall3's address on every network (deployed from 0x05f32B3cC3888453ff71B01135B34FF8e41263F2, nonce 0).
MULTICALL3_ADDRESS = "0xcA11bde05977b3631167028862bE2a173976CA11"
#: Where the npm package ``viem`` keeps Multicall3's creation code (``export const multicall3Bytecode``).
VIEM_CONTRACTS_JS = PROJECT_ROOT / "node_modules/viem/_esm/constants/contracts.js"

AGGREGATE3_SELECTOR = keccak(text="aggregate3((address,bool,bytes)[])")[:4]
GET_BLOCK_NUMBER = keccak(text="getBlockNumber()")[:4]
GET_CURRENT_BLOCK_TIMESTAMP = keccak(text="getCurrentBlockTimestamp()")[:4]

#: Calls per ``eth_call``: a proxy's ``getRoundData`` costs 5–15k gas, so 1,500 of them stay well under the
#: 30M-50M gas that nodes allow an ``eth_call`` (geth's default ``RPCGasCap`` is 50M).
MAX_CALLS_PER_REQUEST = 1500


def selector(signature: str) -> bytes:
    """First four bytes of ``keccak256(signature)``, e.g. ``selector("totalAssets()")``."""
    return keccak(text=signature)[:4]


def uint_word(value: int) -> bytes:
    """One ABI word of an unsigned integer (or a uint80/uint16 argument)."""
    return int(value).to_bytes(32, "big")


@dataclass(frozen=True)
class Call:
    """One call of a batch: ``target`` (20 bytes) and its complete calldata (selector + arguments)."""

    target: bytes
    data: bytes
    allow_failure: bool = True

    @classmethod
    def to(cls, address: str, data: bytes, allow_failure: bool = True) -> "Call":
        return cls(bytes.fromhex(address[2:] if address.startswith("0x") else address), data, allow_failure)


def encode_aggregate3(calls: Sequence[Call]) -> bytes:
    """Calldata of ``aggregate3(calls)``: selector, then the ABI encoding of ``(address,bool,bytes)[]``.

    Layout: offset of the array (0x20), its length n, n offsets of the tuples (relative to the first
    offset word), then each tuple: address word, bool word, offset of ``callData`` (0x60), its length, the
    bytes right-padded to a multiple of 32.
    """
    n = len(calls)
    heads = []
    tails = []
    position = 32 * n
    for call in calls:
        heads.append(position.to_bytes(32, "big"))
        padded = call.data + b"\x00" * (-len(call.data) % 32)
        tail = (b"\x00" * 12 + call.target + (b"\x00" * 31 + (b"\x01" if call.allow_failure else b"\x00"))
                + uint_word(0x60) + uint_word(len(call.data)) + padded)
        tails.append(tail)
        position += len(tail)
    return AGGREGATE3_SELECTOR + uint_word(0x20) + uint_word(n) + b"".join(heads) + b"".join(tails)


def decode_aggregate3(data: bytes) -> list[tuple[bool, bytes]]:
    """Return data of ``aggregate3``: ``(success, returnData)`` per call, in call order.

    Raises
    ------
    ValueError
        ``data`` is not a well-formed ``(bool,bytes)[]``.
    """
    try:
        start = int.from_bytes(data[0:32], "big")
        n = int.from_bytes(data[start:start + 32], "big")
        base = start + 32
        out = []
        for i in range(n):
            at = base + int.from_bytes(data[base + 32 * i:base + 32 * i + 32], "big")
            ok = data[at + 31] == 1
            offset = at + int.from_bytes(data[at + 32:at + 64], "big")
            length = int.from_bytes(data[offset:offset + 32], "big")
            payload = data[offset + 32:offset + 32 + length]
            if len(payload) != length:
                raise ValueError("returnData runs past the end")
            out.append((ok, payload))
        return out
    except (IndexError, ValueError) as exc:
        raise ValueError(f"malformed aggregate3 return data ({len(data)} bytes): {exc}") from exc


def aggregate3(w3: Web3, calls: Sequence[Call], block: int | str = "latest",
               max_calls_per_request: int = MAX_CALLS_PER_REQUEST) -> list[tuple[bool, bytes]]:
    """Runs ``calls`` through Multicall3 in ``ceil(len(calls) / max_calls_per_request)`` ``eth_call`` requests.

    ``block`` is a number or a tag; a failed call (``allow_failure``) comes back as ``(False, revert data)``.

    Raises
    ------
    RpcUnavailableError
        The node refused the ``eth_call`` itself (a call with ``allow_failure=False`` reverted, or the node
        has no Multicall3: see :func:`ensure_multicall3`).
    """
    out: list[tuple[bool, bytes]] = []
    for lo in range(0, len(calls), max_calls_per_request):
        chunk = calls[lo:lo + max_calls_per_request]
        out.extend(decode_aggregate3(call_encoded(w3, encode_aggregate3(chunk), block)))
    return out


def call_encoded(w3: Web3, calldata: bytes, block: int | str = "latest") -> bytes:
    """One ``eth_call`` of ready ``aggregate3`` calldata to Multicall3; returns the raw return data.

    Raises
    ------
    RpcUnavailableError
        The call failed or returned nothing (no Multicall3 at :data:`MULTICALL3_ADDRESS`).
    """
    tag = hex(block) if isinstance(block, int) else block
    response = w3.provider.make_request(  # type: ignore[arg-type]
        "eth_call", [{"to": MULTICALL3_ADDRESS, "data": "0x" + calldata.hex()}, tag])
    if "error" in response:
        raise RpcUnavailableError(f"Multicall3 aggregate3 at block {block} failed: {response['error']}")
    result = bytes.fromhex(response["result"][2:])
    if not result:
        raise RpcUnavailableError(
            f"Multicall3 at {MULTICALL3_ADDRESS} returned nothing at block {block}: the chain has no Multicall3 "
            "there; on a local chain place it with keeper.multicall.ensure_multicall3(w3)")
    return result


def batch_request(w3: Web3, requests: Sequence[tuple[str, list]]) -> list[dict]:
    """Several JSON-RPC requests in one HTTP round trip (a JSON-RPC 2.0 batch); responses in request order.

    Each response is the node's object for that request (``"result"`` or ``"error"``: an error of one call
    does not fail the others). A provider without batch support (``make_batch_request`` missing or raising
    ``NotImplementedError``, as :class:`keeper.rpc.FailoverHTTPProvider` does for a batch holding a send), or a
    node that refuses the batch as a whole (an error object instead of a list, or a list of the wrong length:
    some hosted endpoints disable batches), gets the requests one by one, with the same result; a refusal is
    logged once per provider.
    """
    if not requests:
        return []
    provider = w3.provider
    make_batch = getattr(provider, "make_batch_request", None)
    if make_batch is not None and len(requests) > 1 and not getattr(provider, "_keeper_batch_refused", False):
        try:
            responses = make_batch(list(requests))
        except NotImplementedError:
            responses = None
        if isinstance(responses, list) and len(responses) == len(requests):
            return [dict(r) for r in responses]
        if responses is not None:
            log.warning("the node refused a batch of %d JSON-RPC requests (%.300r); sending them one by one from now on",
                        len(requests), responses)
            try:
                provider._keeper_batch_refused = True  # type: ignore[union-attr]
            except AttributeError:  # a provider with __slots__: ask again next time
                pass
    return [dict(provider.make_request(method, params)) for method, params in requests]  # type: ignore[arg-type]


def has_multicall3(w3: Web3, block: int | str = "latest") -> bool:
    """Whether :data:`MULTICALL3_ADDRESS` holds code."""
    tag = hex(block) if isinstance(block, int) else block
    code = w3.provider.make_request("eth_getCode", [MULTICALL3_ADDRESS, tag]).get("result")  # type: ignore[arg-type]
    return bool(code) and code not in ("0x", "0x0")


def multicall3_creation_code() -> bytes:
    """Multicall3's creation code as shipped by ``viem`` (``multicall3Bytecode``).

    Raises
    ------
    ConfigError
        ``viem`` is not installed (run ``npm ci``) or no longer exports the constant.
    """
    try:
        text = VIEM_CONTRACTS_JS.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read {VIEM_CONTRACTS_JS} ({exc}); run `npm ci` to install viem") from exc
    match = re.search(r"multicall3Bytecode\s*=\s*'0x([0-9a-fA-F]+)'", text)
    if match is None:
        raise ConfigError(f"{VIEM_CONTRACTS_JS} has no multicall3Bytecode; check the viem version in package.json")
    return bytes.fromhex(match.group(1))


def ensure_multicall3(w3: Web3) -> None:
    """Places Multicall3 at :data:`MULTICALL3_ADDRESS` on a local Anvil chain when nothing is there yet.

    The runtime code is what the creation code returns when run by ``eth_call`` (no transaction, no account
    nonce used), set with ``anvil_setCode``. A chain that already has Multicall3 (every public network, a
    fork of one) is left alone.

    Raises
    ------
    ConfigError
        The node is not Anvil (``anvil_setCode`` refused) and has no Multicall3.
    """
    if has_multicall3(w3):
        return
    response = w3.provider.make_request(  # type: ignore[arg-type]
        "eth_call", [{"data": "0x" + multicall3_creation_code().hex()}, "latest"])
    if "error" in response:
        raise ConfigError(f"running Multicall3's creation code failed: {response['error']}")
    placed = w3.provider.make_request(  # type: ignore[arg-type]
        "anvil_setCode", [MULTICALL3_ADDRESS, response["result"]])
    if "error" in placed:
        raise ConfigError(
            f"no Multicall3 at {MULTICALL3_ADDRESS} and the node refused anvil_setCode ({placed['error']}): "
            "deploy Multicall3 there (it exists on every public network) or use Anvil")


def decode_uint(data: bytes, word: int = 0) -> int:
    """The ``word``-th 32-byte word of ``data`` as an unsigned integer."""
    return int.from_bytes(data[32 * word:32 * word + 32], "big")


def decode_int(data: bytes, word: int = 0) -> int:
    """The ``word``-th 32-byte word of ``data`` as a two's-complement signed integer."""
    return int.from_bytes(data[32 * word:32 * word + 32], "big", signed=True)


def decode_address(data: bytes, word: int = 0) -> str:
    """The ``word``-th 32-byte word of ``data`` as a checksummed address."""
    return to_checksum_address(data[32 * word + 12:32 * word + 32])


__all__ = [
    "AGGREGATE3_SELECTOR",
    "Call",
    "GET_BLOCK_NUMBER",
    "GET_CURRENT_BLOCK_TIMESTAMP",
    "MAX_CALLS_PER_REQUEST",
    "MULTICALL3_ADDRESS",
    "aggregate3",
    "batch_request",
    "call_encoded",
    "decode_address",
    "decode_aggregate3",
    "decode_int",
    "decode_uint",
    "encode_aggregate3",
    "ensure_multicall3",
    "has_multicall3",
    "multicall3_creation_code",
    "selector",
    "uint_word",
]
