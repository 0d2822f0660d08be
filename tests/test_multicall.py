"""Multicall3 batching (`keeper.multicall`): the hand-written ABI encoding against eth_abi, and the contract
placed at its canonical address on Anvil answering many calls in one request."""

from __future__ import annotations

import random

import pytest
from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode

from keeper.chain import AnvilProcess, connect, rpc
from keeper.multicall import (
    AGGREGATE3_SELECTOR,
    GET_BLOCK_NUMBER,
    GET_CURRENT_BLOCK_TIMESTAMP,
    MULTICALL3_ADDRESS,
    Call,
    aggregate3,
    decode_aggregate3,
    decode_uint,
    encode_aggregate3,
    ensure_multicall3,
    has_multicall3,
    selector,
)


def _random_calls(rng: random.Random, n: int) -> list[Call]:
    def random_bytes(k: int) -> bytes:
        return bytes(rng.getrandbits(8) for _ in range(k))

    return [Call(random_bytes(20), random_bytes(rng.randint(0, 100)), rng.random() < 0.5) for _ in range(n)]


@pytest.mark.parametrize("n", [0, 1, 2, 7, 64])
def test_aggregate3_calldata_is_the_abi_encoding(n: int) -> None:
    calls = _random_calls(random.Random(n), n)
    expected = AGGREGATE3_SELECTOR + abi_encode(
        ["(address,bool,bytes)[]"], [[("0x" + c.target.hex(), c.allow_failure, c.data) for c in calls]])
    assert encode_aggregate3(calls) == expected
    assert AGGREGATE3_SELECTOR == selector("aggregate3((address,bool,bytes)[])") == bytes.fromhex("82ad56cb")


@pytest.mark.parametrize("n", [0, 1, 3, 50])
def test_aggregate3_results_decode_as_eth_abi_does(n: int) -> None:
    rng = random.Random(100 + n)
    results = [(rng.random() < 0.7, bytes(rng.getrandbits(8) for _ in range(rng.choice([0, 32, 160, 33])))) for _ in range(n)]
    data = abi_encode(["(bool,bytes)[]"], [results])
    assert decode_aggregate3(data) == [tuple(r) for r in abi_decode(["(bool,bytes)[]"], data)[0]] == results


def test_truncated_results_are_refused() -> None:
    data = abi_encode(["(bool,bytes)[]"], [[(True, b"\x01" * 64)]])
    with pytest.raises(ValueError, match="malformed aggregate3"):
        decode_aggregate3(data[:-40])


def test_multicall3_at_its_canonical_address_answers_many_calls_in_one_request() -> None:
    with AnvilProcess(timestamp=1_700_000_000) as node:
        w3 = connect(node.rpc_url)
        assert not has_multicall3(w3)
        ensure_multicall3(w3)
        ensure_multicall3(w3)  # idempotent: an existing Multicall3 is left alone
        assert has_multicall3(w3)
        rpc(w3, "evm_mine", [1_700_000_100])
        requests = []
        inner = w3.provider.make_request

        def counting(method, params):
            requests.append(method)
            return inner(method, params)

        w3.provider.make_request = counting
        m = MULTICALL3_ADDRESS
        calls = [Call.to(m, GET_BLOCK_NUMBER), Call.to(m, GET_CURRENT_BLOCK_TIMESTAMP), Call.to(m, selector("nope()"))] * 40
        results = aggregate3(w3, calls, "latest", max_calls_per_request=50)
        assert requests == ["eth_call"] * 3  # 120 calls in chunks of 50
        assert [decode_uint(d) for ok, d in results[:2]] == [1, 1_700_000_100]
        assert results[2] == (False, b"")  # an unknown selector reverts; allowFailure keeps the batch
        assert results == results[:3] * 40
        # At an earlier block the same calls see that block.
        assert [decode_uint(d) for _, d in aggregate3(w3, calls[:2], 0)] == [0, 1_700_000_000]
