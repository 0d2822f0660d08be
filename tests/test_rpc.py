"""The failover provider against a real Anvil behind a scriptable fake JSON-RPC proxy: transient
failures are retried (with failover), reverts and definite node errors are not."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

import pytest
import requests
from eth_account import Account
from web3 import Web3
from web3.exceptions import ContractLogicError, Web3RPCError

from keeper.chain import ANVIL_KEYS, AnvilProcess, call_raw, free_port, wait_for_receipt
from keeper.errors import ConfigError, RpcUnavailableError
from keeper.rpc import FailoverHTTPProvider, is_transient_rpc_error

#: Init code that reverts with the 4 bytes 0xdeadbeef: PUSH4 deadbeef PUSH1 e0 SHL PUSH1 0 MSTORE PUSH1 4 PUSH1 0 REVERT.
REVERTING_INIT_CODE = "0x63deadbeef60e01b60005260046000fd"


class RpcProxy:
    """A JSON-RPC proxy on localhost in front of ``upstream`` that fails on command.

    ``fail(n, mode, methods)`` makes the next ``n`` requests (for ``methods``, or any) fail with
    ``mode``: ``"503"``, ``"502"``, ``"429"``, ``"-32005"`` (a JSON-RPC limit error), ``"html"`` (a
    200 with a non-JSON body), ``"timeout"`` (answer after ``slow_seconds``) or ``"drop"`` (close the
    connection without answering). ``hook(method, request)`` runs before forwarding (fault injection
    mid-tick) and ``after_hook(method, request, response_body)`` after the upstream answered, before
    the client gets the answer. ``seen`` lists every method received, in order.
    """

    def __init__(self, upstream: str, slow_seconds: float = 1.0) -> None:
        self.upstream = upstream
        self.slow_seconds = slow_seconds
        self.seen: list[str] = []
        self.hook: Callable[[str, dict[str, Any]], None] | None = None
        self.after_hook: Callable[[str, dict[str, Any], bytes], None] | None = None
        self._faults: list[tuple[str, frozenset[str] | None]] = []
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def fail(self, n: int, mode: str, methods: set[str] | None = None) -> None:
        with self._lock:
            self._faults += [(mode, frozenset(methods) if methods else None)] * n

    def clear(self) -> None:
        """Drops the faults not yet used."""
        with self._lock:
            self._faults.clear()

    def count(self, method: str) -> int:
        return self.seen.count(method)

    def _take_fault(self, method: str) -> str | None:
        with self._lock:
            for i, (mode, methods) in enumerate(self._faults):
                if methods is None or method in methods:
                    del self._faults[i]
                    return mode
        return None

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                request = json.loads(body)
                method = request.get("method", "?")
                with proxy._lock:
                    proxy.seen.append(method)
                mode = proxy._take_fault(method)
                if mode == "drop":
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if mode == "timeout":
                    time.sleep(proxy.slow_seconds)
                    mode = None
                if mode in ("503", "502", "429"):
                    return self._send(int(mode), b"upstream unavailable", "text/plain")
                if mode == "html":
                    return self._send(200, b"<html>gateway error</html>", "text/html")
                if mode == "-32005":
                    error = {"jsonrpc": "2.0", "id": request.get("id"),
                             "error": {"code": -32005, "message": "limit exceeded"}}
                    return self._send(200, json.dumps(error).encode(), "application/json")
                if proxy.hook is not None:
                    proxy.hook(method, request)
                try:
                    upstream = requests.post(proxy.upstream, data=body, headers={"Content-Type": "application/json"},
                                             timeout=30)
                except requests.RequestException:
                    return self._send(502, b"upstream down", "text/plain")
                if proxy.after_hook is not None:
                    proxy.after_hook(method, request, upstream.content)
                self._send(upstream.status_code, upstream.content, "application/json")

            def _send(self, code: int, payload: bytes, kind: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                return

        return Handler


@pytest.fixture(scope="module")
def anvil():
    node = AnvilProcess()
    yield node
    node.stop()


@pytest.fixture
def proxy(anvil):
    p = RpcProxy(anvil.rpc_url, slow_seconds=0.6)
    yield p
    p.stop()


def _w3(*urls: str, **kwargs: Any) -> Web3:
    kwargs = {"timeout_seconds": 2.0, "max_attempts": 4, "backoff_initial_seconds": 0.01,
              "backoff_max_seconds": 0.05} | kwargs
    return Web3(FailoverHTTPProvider(list(urls), **kwargs), middleware=[])


def _dead_url() -> str:
    return f"http://127.0.0.1:{free_port()}"


@pytest.mark.parametrize("mode", ["503", "502", "429", "-32005", "html", "drop"])
def test_transient_failures_are_retried_until_an_answer(proxy, anvil, mode) -> None:
    w3 = _w3(proxy.url)
    proxy.fail(2, mode)
    assert w3.eth.block_number == Web3(Web3.HTTPProvider(anvil.rpc_url)).eth.block_number
    assert proxy.count("eth_blockNumber") == 3
    assert w3.provider.stats.retries == 2 and w3.provider.stats.exhausted == 0


def test_a_request_timing_out_is_retried(proxy) -> None:
    w3 = _w3(proxy.url, timeout_seconds=0.2)
    proxy.fail(2, "timeout")
    t0 = time.monotonic()
    assert w3.eth.chain_id == 31337
    assert time.monotonic() - t0 >= 0.4  # two timeouts of 0.2 s were waited out
    assert proxy.count("eth_chainId") == 3


def test_failover_to_the_next_endpoint_and_stickiness(proxy) -> None:
    dead = _dead_url()
    w3 = _w3(dead, proxy.url)
    assert w3.eth.chain_id == 31337
    stats = w3.provider.stats
    assert stats.failovers == 1 and stats.endpoints[0].failures == 1 and "connection" in stats.endpoints[0].last_error
    # The good endpoint stays current: later calls do not go back to the dead one first.
    w3.eth.block_number
    assert stats.endpoints[0].requests == 1 and w3.provider.endpoint_uri == proxy.url


def test_every_endpoint_down_raises_rpc_unavailable_after_max_attempts(proxy) -> None:
    w3 = _w3(proxy.url, _dead_url(), max_attempts=5)
    proxy.fail(10, "503")
    with pytest.raises(RpcUnavailableError, match="eth_blockNumber failed on every RPC endpoint after 5 attempt"):
        w3.eth.block_number
    # Round robin over the two endpoints: attempts 1, 3, 5 hit the proxy.
    assert proxy.count("eth_blockNumber") == 3
    assert w3.provider.stats.exhausted == 1


def test_total_time_budget_stops_retrying(proxy) -> None:
    w3 = _w3(proxy.url, max_attempts=50, backoff_initial_seconds=0.05, backoff_max_seconds=0.05,
             max_elapsed_seconds=0.3)
    proxy.fail(100, "503")
    t0 = time.monotonic()
    with pytest.raises(RpcUnavailableError):
        w3.eth.block_number
    assert time.monotonic() - t0 < 2.0 and proxy.count("eth_blockNumber") < 50


def test_a_revert_is_returned_once_never_retried(proxy) -> None:
    w3 = _w3(proxy.url)
    ok, data = call_raw(w3, {"data": REVERTING_INIT_CODE})
    assert not ok and data == bytes.fromhex("deadbeef")
    assert proxy.count("eth_call") == 1
    with pytest.raises(ContractLogicError):
        w3.eth.estimate_gas({"data": REVERTING_INIT_CODE})
    assert proxy.count("eth_estimateGas") == 1
    assert w3.provider.stats.retries == 0


def test_nonce_too_low_goes_up_without_retry(proxy, anvil) -> None:
    w3 = _w3(proxy.url)
    account = Account.from_key(ANVIL_KEYS[9])
    nonce = w3.eth.get_transaction_count(account.address)
    tx = {"type": 2, "chainId": 31337, "nonce": nonce, "to": account.address, "value": 1, "gas": 21_000,
          "maxFeePerGas": 10**10, "maxPriorityFeePerGas": 10**9}
    w3.eth.send_raw_transaction(account.sign_transaction(tx).raw_transaction)
    again = account.sign_transaction(tx | {"value": 2}).raw_transaction
    with pytest.raises(Web3RPCError, match="nonce"):
        w3.eth.send_raw_transaction(again)
    assert proxy.count("eth_sendRawTransaction") == 2 and w3.provider.stats.retries == 0


def test_send_is_retried_only_when_it_provably_never_arrived(proxy) -> None:
    w3 = _w3(proxy.url)
    account = Account.from_key(ANVIL_KEYS[8])
    base = {"type": 2, "chainId": 31337, "to": account.address, "value": 1, "gas": 21_000,
            "maxFeePerGas": 10**10, "maxPriorityFeePerGas": 10**9}
    nonce = w3.eth.get_transaction_count(account.address)
    # 503/429: the gateway refused before the node saw it -> retried, sent once.
    proxy.fail(1, "503", {"eth_sendRawTransaction"})
    sent = w3.eth.send_raw_transaction(account.sign_transaction(base | {"nonce": nonce}).raw_transaction)
    assert proxy.count("eth_sendRawTransaction") == 2
    # Anvil answers the send before its automine has mined it: wait for the receipt, then count.
    wait_for_receipt(w3, sent, timeout_seconds=30)
    assert w3.eth.get_transaction_count(account.address) == nonce + 1
    # 502 or a timeout: the node may have it -> not retried; the caller's bookkeeping decides.
    proxy.fail(1, "502", {"eth_sendRawTransaction"})
    with pytest.raises(RpcUnavailableError, match="after 1 attempt"):
        w3.eth.send_raw_transaction(account.sign_transaction(base | {"nonce": nonce + 1}).raw_transaction)
    assert proxy.count("eth_sendRawTransaction") == 3
    # A refused connection never reached a node -> fails over and sends.
    w3 = _w3(_dead_url(), proxy.url)
    sent = w3.eth.send_raw_transaction(account.sign_transaction(base | {"nonce": nonce + 1}).raw_transaction)
    wait_for_receipt(w3, sent, timeout_seconds=30)
    assert w3.eth.get_transaction_count(account.address) == nonce + 2


def test_is_transient_rpc_error_classification() -> None:
    assert is_transient_rpc_error({"code": -32005, "message": "limit exceeded"})
    assert is_transient_rpc_error({"code": -32000, "message": "header not found"})
    assert is_transient_rpc_error({"code": -32603, "message": "Too Many Requests, rate limit reached"})
    assert not is_transient_rpc_error({"code": 3, "message": "execution reverted", "data": "0xdeadbeef"})
    assert not is_transient_rpc_error({"code": -32000, "message": "execution reverted: rate limit"})
    assert not is_transient_rpc_error({"code": -32003, "message": "nonce too low"})
    assert not is_transient_rpc_error({"code": -32602, "message": "invalid params"})


def test_bad_provider_settings_are_refused() -> None:
    with pytest.raises(ConfigError, match="no RPC endpoint"):
        FailoverHTTPProvider([])
    with pytest.raises(ConfigError, match="out of range"):
        FailoverHTTPProvider(["http://127.0.0.1:1"], max_attempts=0)
    with pytest.raises(ConfigError, match="out of range"):
        FailoverHTTPProvider(["http://127.0.0.1:1"], timeout_seconds=0)
