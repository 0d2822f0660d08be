"""The failover provider against a real Anvil behind a scriptable fake JSON-RPC proxy: transient
failures are retried (with failover), reverts and definite node errors are not."""

from __future__ import annotations

import json
import re
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


#: Proxy faults that fail a whole HTTP request, a batch included (a "-32005" fault answers its own request only).
WHOLE_REQUEST_FAULTS = ("drop", "503", "502", "429", "html")


class RpcProxy:
    """A JSON-RPC proxy on localhost in front of ``upstream`` that fails on command.

    ``fail(n, mode, methods)`` makes the next ``n`` requests (for ``methods``, or any) fail with
    ``mode``: ``"503"``, ``"502"``, ``"429"``, ``"-32005"`` (a JSON-RPC limit error), ``"html"`` (a
    200 with a non-JSON body), ``"timeout"`` (answer after ``slow_seconds``) or ``"drop"`` (close the
    connection without answering). ``hook(method, request)`` runs before forwarding (fault injection
    mid-tick) and ``after_hook(method, request, response_body)`` after the upstream answered, before
    the client gets the answer. ``seen`` lists every method received, in order.

    A JSON-RPC batch (a list) is one HTTP request holding several requests, and everything above applies
    per request inside it: ``seen`` lists each request's method; a fault is taken for each request in
    order, and a ``"drop"``, HTTP status or ``"html"`` fault fails the whole HTTP request (the first
    such fault decides it), a ``"timeout"`` delays the whole answer, a ``"-32005"`` answers that request
    with the error (not forwarded) while the others get their answers; the others are forwarded to the
    upstream one by one, in order, ``hook`` right before each and ``after_hook`` right after its answer
    (with that request's answer), so a hook can hold one request of a batch while the ones before it
    have run. ``batch_answer(answers)`` may rewrite the list of answers (in request order) before it is
    sent back (reordered, an answer dropped or doubled: a misbehaving node).
    """

    def __init__(self, upstream: str, slow_seconds: float = 1.0) -> None:
        self.upstream = upstream
        self.slow_seconds = slow_seconds
        self.seen: list[str] = []
        self.hook: Callable[[str, dict[str, Any]], None] | None = None
        self.after_hook: Callable[[str, dict[str, Any], bytes], None] | None = None
        self.batch_answer: Callable[[list[dict[str, Any]]], list[dict[str, Any]]] | None = None
        #: Methods of each HTTP request, one tuple per request (a batch's in request order).
        self.http_requests: list[tuple[str, ...]] = []
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
                batch = isinstance(request, list)
                items = request if batch else [request]
                methods = [str(item.get("method", "?")) if isinstance(item, dict) else "?" for item in items]
                with proxy._lock:
                    proxy.seen.extend(methods)
                    proxy.http_requests.append(tuple(methods))
                modes = [proxy._take_fault(method) for method in methods]
                whole = next((mode for mode in modes if mode in WHOLE_REQUEST_FAULTS), None)
                if whole == "drop":
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if whole == "html":
                    return self._send(200, b"<html>gateway error</html>", "text/html")
                if whole is not None:
                    return self._send(int(whole), b"upstream unavailable", "text/plain")
                if "timeout" in modes:
                    time.sleep(proxy.slow_seconds)
                answers: list[bytes] = []
                for item, method, mode in zip(items, methods, modes):
                    if mode == "-32005":
                        error = {"jsonrpc": "2.0", "id": item.get("id"),
                                 "error": {"code": -32005, "message": "limit exceeded"}}
                        answers.append(json.dumps(error).encode())
                        continue
                    if proxy.hook is not None:
                        proxy.hook(method, item)
                    try:
                        upstream = requests.post(proxy.upstream, data=body if not batch else json.dumps(item),
                                                 headers={"Content-Type": "application/json"}, timeout=30)
                    except requests.RequestException:
                        return self._send(502, b"upstream down", "text/plain")
                    if batch and upstream.status_code != 200:
                        return self._send(upstream.status_code, upstream.content, "application/json")
                    if proxy.after_hook is not None:
                        proxy.after_hook(method, item, upstream.content)
                    if not batch:
                        return self._send(upstream.status_code, upstream.content, "application/json")
                    answers.append(upstream.content)
                if not batch:
                    return self._send(200, answers[0], "application/json")
                decoded = [json.loads(answer) for answer in answers]
                if proxy.batch_answer is not None:
                    decoded = proxy.batch_answer(decoded)
                self._send(200, json.dumps(decoded).encode(), "application/json")

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


# --- JSON-RPC batches ----------------------------------------------------------------------------------

#: Anvil's first dev account (funded at genesis).
DEV = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
READS = [("eth_blockNumber", []), ("eth_chainId", []), ("eth_getBalance", [DEV, "latest"])]


def _direct_reads(anvil: AnvilProcess) -> list[str]:
    """The answers of :data:`READS` asked one by one of the node itself (no proxy, web3's own provider)."""
    direct = Web3(Web3.HTTPProvider(anvil.rpc_url))
    return [hex(direct.eth.block_number), hex(direct.eth.chain_id), hex(direct.eth.get_balance(DEV))]


def test_a_batch_is_one_http_request_with_the_answers_of_single_requests(proxy, anvil) -> None:
    from keeper.multicall import batch_request

    w3 = _w3(proxy.url)
    answers = batch_request(w3, READS)
    assert proxy.http_requests == [("eth_blockNumber", "eth_chainId", "eth_getBalance")]
    assert proxy.seen == ["eth_blockNumber", "eth_chainId", "eth_getBalance"]
    assert [a["result"] for a in answers] == _direct_reads(anvil)
    assert w3.provider.stats.endpoints[0].requests == 1 and w3.provider.stats.retries == 0
    assert w3.provider.make_batch_request([]) == [] and len(proxy.http_requests) == 1


def test_a_batch_answered_in_another_order_is_matched_by_id(proxy, anvil) -> None:
    w3 = _w3(proxy.url)
    proxy.batch_answer = lambda answers: answers[::-1]
    answers = w3.provider.make_batch_request(READS)
    assert [a["result"] for a in answers] == _direct_reads(anvil)
    assert len(proxy.http_requests) == 1 and w3.provider.stats.retries == 0
    # The ids sent are in request order and each answer carries its own.
    assert [a["id"] for a in answers] == sorted(a["id"] for a in answers)


def test_a_batch_answer_doubling_an_id_is_an_error_naming_it(proxy) -> None:
    w3 = _w3(proxy.url, max_attempts=3)
    proxy.batch_answer = lambda answers: answers + answers[:1]
    sent_ids: list[int] = []
    proxy.hook = lambda method, request: sent_ids.append(request["id"])
    with pytest.raises(RpcUnavailableError, match=r"a batch of 3 JSON-RPC requests \(eth_blockNumber, eth_chainId, "
                                                  r"eth_getBalance\) failed on every RPC endpoint after 3 attempt") as info:
        w3.provider.make_batch_request(READS)
    # A malformed answer keeps nothing: the same batch (same ids) is asked again, like an unparsable one.
    assert len(proxy.http_requests) == 3 and sent_ids == sent_ids[:3] * 3
    found = re.search(r"has id (\d+) twice", str(info.value))
    assert found is not None and int(found.group(1)) == sent_ids[0], info.value


def test_a_request_a_node_leaves_out_of_its_batch_answers_is_asked_again_on_its_own(proxy, anvil) -> None:
    w3 = _w3(proxy.url)
    proxy.batch_answer = lambda answers: answers[:-1]  # always drops the last answer of a batch
    sent_ids: list[int] = []
    proxy.hook = lambda method, request: sent_ids.append(request["id"])
    answers = w3.provider.make_batch_request(READS)
    assert [a["result"] for a in answers] == _direct_reads(anvil)
    # The two answers are kept; only the third is asked again, with its id, and not in a batch.
    assert proxy.http_requests == [("eth_blockNumber", "eth_chainId", "eth_getBalance"), ("eth_getBalance",)]
    assert sent_ids[3] == sent_ids[2] and [a["id"] for a in answers] == sent_ids[:3]
    assert w3.provider.stats.retries == 1


def test_a_request_still_unanswered_when_the_attempts_run_out_is_named(proxy) -> None:
    w3 = _w3(proxy.url, max_attempts=3)
    proxy.fail(10, "-32005", {"eth_getBalance"})  # "later" for that read, every time
    sent_ids: list[int] = []
    proxy.hook = lambda method, request: sent_ids.append(request["id"])
    with pytest.raises(RpcUnavailableError, match=r"a batch of 3 JSON-RPC requests .* after 3 attempt") as info:
        w3.provider.make_batch_request(READS)
    assert proxy.http_requests == [("eth_blockNumber", "eth_chainId", "eth_getBalance")] + [("eth_getBalance",)] * 2
    # The faulted read never reaches the hook; its id is the next after the other two (one counter, request order).
    assert sent_ids[:2] == [sent_ids[0], sent_ids[0] + 1]
    assert f"error -32005 for id {sent_ids[0] + 2} (eth_getBalance)" in str(info.value), info.value


@pytest.mark.parametrize("mode", ["503", "502", "429", "html", "drop", "timeout", "-32005"])
def test_a_batch_whose_http_request_fails_once_is_retried_and_succeeds(proxy, anvil, mode) -> None:
    w3 = _w3(proxy.url, timeout_seconds=0.3)  # the proxy's "timeout" answers after 0.6 s
    proxy.fail(1, mode, {"eth_chainId"})  # one request of the batch: the whole HTTP request fails once
    answers = w3.provider.make_batch_request(READS)
    assert [a["result"] for a in answers] == _direct_reads(anvil)
    # A failed HTTP request keeps nothing: the batch is asked again whole. "Later" for one read (-32005) keeps
    # the other two answers: that read alone is asked again.
    again = [("eth_chainId",)] if mode == "-32005" else [("eth_blockNumber", "eth_chainId", "eth_getBalance")]
    assert proxy.http_requests == [("eth_blockNumber", "eth_chainId", "eth_getBalance")] + again
    assert w3.provider.stats.retries == 1 and w3.provider.stats.exhausted == 0


def test_a_batch_on_a_dead_primary_fails_over_to_the_secondary(proxy, anvil) -> None:
    w3 = _w3(_dead_url(), proxy.url)
    answers = w3.provider.make_batch_request(READS)
    assert [a["result"] for a in answers] == _direct_reads(anvil)
    stats = w3.provider.stats
    assert stats.failovers == 1 and stats.endpoints[0].failures == 1 and "connection" in stats.endpoints[0].last_error
    assert proxy.http_requests == [("eth_blockNumber", "eth_chainId", "eth_getBalance")]
    assert w3.provider.endpoint_uri == proxy.url


def test_a_batch_on_every_endpoint_down_raises_rpc_unavailable(proxy) -> None:
    w3 = _w3(proxy.url, _dead_url(), max_attempts=4)
    proxy.fail(10, "503")
    with pytest.raises(RpcUnavailableError, match=r"a batch of 3 JSON-RPC requests .* after 4 attempt.*HTTP 503"):
        w3.provider.make_batch_request(READS)
    assert len(proxy.http_requests) == 2 and w3.provider.stats.exhausted == 1  # attempts 1 and 3 hit the proxy


def test_an_error_of_one_request_is_returned_for_that_request_only(proxy, anvil) -> None:
    w3 = _w3(proxy.url)
    reads = [("eth_blockNumber", []), ("eth_call", [{"data": REVERTING_INIT_CODE}, "latest"]), ("eth_chainId", [])]
    answers = w3.provider.make_batch_request(reads)
    plain = Web3.HTTPProvider(anvil.rpc_url).make_batch_request(reads)
    assert "result" not in answers[1] and answers[1]["error"] == plain[1]["error"]
    assert answers[1]["error"]["data"] == "0xdeadbeef"  # the revert data, as the node sent it
    assert [answers[0]["result"], answers[2]["result"]] == [plain[0]["result"], plain[2]["result"]]
    assert len(proxy.http_requests) == 1 and w3.provider.stats.retries == 0  # a revert is an answer: not retried


def test_a_batch_refused_as_a_whole_is_returned_and_sent_one_by_one(proxy, anvil) -> None:
    from keeper.multicall import batch_request

    w3 = _w3(proxy.url)
    refusal = {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": "batch requests are disabled"}}
    proxy.batch_answer = lambda answers: refusal
    assert w3.provider.make_batch_request(READS) == refusal
    answers = batch_request(w3, READS)  # refused again, then one by one (and no batch from now on)
    assert [a["result"] for a in answers] == _direct_reads(anvil)
    batch_request(w3, READS)
    assert proxy.http_requests == [tuple(m for m, _ in READS)] * 2 + [(m,) for m, _ in READS] * 2


def test_a_send_is_never_put_in_a_batch(proxy, anvil) -> None:
    from keeper.multicall import batch_request

    w3 = _w3(proxy.url)
    account = Account.from_key(ANVIL_KEYS[7])
    nonce = w3.eth.get_transaction_count(account.address)
    raw = account.sign_transaction({"type": 2, "chainId": 31337, "nonce": nonce, "to": account.address, "value": 1,
                                    "gas": 21_000, "maxFeePerGas": 10**10, "maxPriorityFeePerGas": 10**9}).raw_transaction
    send = ("eth_sendRawTransaction", ["0x" + raw.hex()])
    with pytest.raises(NotImplementedError, match="never carries a transaction"):
        w3.provider.make_batch_request([("eth_blockNumber", []), send])
    mark = len(proxy.http_requests)
    assert mark == 1  # the nonce read above; the refused batch sent nothing
    # Through batch_request: the read and the send go one by one, the send on its own.
    height, sent = batch_request(w3, [("eth_blockNumber", []), send])
    assert proxy.http_requests[mark:] == [("eth_blockNumber",), ("eth_sendRawTransaction",)]
    assert "result" in height and "error" not in sent
    wait_for_receipt(w3, sent["result"], timeout_seconds=30)
    assert w3.eth.get_transaction_count(account.address) == nonce + 1
