"""A JSON-RPC provider over several endpoints: per-request timeouts, failover, and retries with exponential
backoff and jitter (tenacity) on *transient* failures only.

Transient (retried, each retry on the next endpoint in the list):

- the connection could not be made or was reset; the request timed out;
- HTTP 429 (rate limited) or 5xx (the node or its gateway failed);
- a JSON-RPC error whose code means "try later": ``-32005`` (limit exceeded, EIP-1474), ``-32603`` only
  when its message says the node is overloaded or lagging (``header not found``, ``rate limit``, ...);
- an unparsable body (a proxy's HTML error page).

Never retried, returned to the caller exactly as the node sent them:

- execution reverts (``eth_call`` / ``eth_estimateGas`` with ``execution reverted``, revert data);
- every other JSON-RPC error: invalid params, ``nonce too low``, ``replacement transaction underpriced``,
  ``insufficient funds`` -- retrying cannot change their answer, and the caller must see them.

``eth_sendRawTransaction`` is retried only when the request provably never reached a node (the
connection was refused) or a node answered 429/503 *before* processing it. A read timeout or a 5xx
after the bytes were sent is not retried: the transaction may be in a mempool, and the caller's nonce
bookkeeping decides what to do.

Reads can go as one JSON-RPC 2.0 batch (:meth:`FailoverHTTPProvider.make_batch_request`, one HTTP round trip)
under the same policy. Answers are matched to requests by ``id`` (a node may reorder them). Each good answer is
kept; a retry (or failover) asks again only for the requests still unanswered: those that got a transient error
("later" for one request: a rate limit counts every request of a batch), or whose answer the node left out.
The last one left is asked on its own, not in a batch, so a node that keeps dropping it from batches still
answers it. Every request of a batch is a read, so asking again is harmless. A failed HTTP request, a transient
error for the batch as a whole or a malformed answer (not a list of response objects, an id twice or one no
request has) keeps nothing from that answer; an id still unanswered when the attempts run out is named in the
error. A transaction is never sent in a batch.

When every attempt fails, :class:`~keeper.errors.RpcUnavailableError` is raised (a
:class:`~keeper.errors.KeeperError`: the tick ends ``skipped`` with the reason and the next tick tries
again).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable, Sequence

import requests
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    wait_random_exponential,
)
from web3.providers.base import JSONBaseProvider
from web3.types import RPCEndpoint, RPCResponse

from keeper.errors import ConfigError, RpcUnavailableError

log = logging.getLogger("keeper.rpc")

#: JSON-RPC error codes that mean "the node is busy, ask again later" (EIP-1474 ``-32005`` limit exceeded).
TRANSIENT_RPC_CODES = frozenset({-32005})
#: Messages (lower case) that mark an otherwise generic JSON-RPC error as transient.
TRANSIENT_RPC_MESSAGES = ("rate limit", "too many requests", "header not found", "request timed out",
                          "service unavailable", "try again later")
#: HTTP statuses that mean "retry elsewhere or later".
TRANSIENT_HTTP_STATUSES = frozenset({429, 500, 502, 503, 504})
#: Methods whose repetition could duplicate an effect; see the module docstring.
SEND_METHODS = frozenset({"eth_sendRawTransaction", "eth_sendTransaction"})


class TransientRpcError(Exception):
    """One attempt failed in a way worth retrying (internal to the provider)."""

    def __init__(self, endpoint: str, detail: str, delivered: bool) -> None:
        super().__init__(f"{endpoint}: {detail}")
        self.endpoint = endpoint
        self.detail = detail
        #: False when the request provably never reached a node (connection refused, 429/503 before work).
        self.delivered = delivered


@dataclass
class EndpointStats:
    """Counters of one endpoint since the provider was made (``requests``: HTTP requests, a batch is one)."""

    url: str
    requests: int = 0
    failures: int = 0
    last_error: str | None = None
    last_failure_at: float | None = None


@dataclass
class ProviderStats:
    """Counters of the whole provider: attempts retried, switches of endpoint, calls that gave up."""

    retries: int = 0
    failovers: int = 0
    exhausted: int = 0
    endpoints: list[EndpointStats] = field(default_factory=list)


def is_transient_rpc_error(error: dict[str, Any]) -> bool:
    """Whether a JSON-RPC ``error`` object means "try later" rather than a definite answer.

    Reverts (``code`` 3, or any error carrying revert ``data``) are never transient.
    """
    if error.get("data") not in (None, "", "0x") and error.get("code") != -32005:
        return False
    message = str(error.get("message", "")).lower()
    if "revert" in message:
        return False
    if error.get("code") in TRANSIENT_RPC_CODES:
        return True
    return any(m in message for m in TRANSIENT_RPC_MESSAGES)


class FailoverHTTPProvider(JSONBaseProvider):
    """web3 provider over an ordered list of HTTP JSON-RPC endpoints (all of the same chain).

    Requests go to the current endpoint; a transient failure moves to the next one (round robin) and
    retries after ``wait_random_exponential(multiplier=backoff_initial_seconds, max=backoff_max_seconds)``
    (full jitter: a uniform draw in [0, min(max, initial × 2^attempt)] seconds), until ``max_attempts``
    attempts or ``max_elapsed_seconds`` have passed. A good answer makes its endpoint the current one.

    Parameters
    ----------
    endpoint_uris : sequence of str
        JSON-RPC URLs, preferred first.
    timeout_seconds : float
        Per-request timeout (connect and read), seconds.
    max_attempts : int
        Attempts per call over all endpoints, >= 1.
    backoff_initial_seconds, backoff_max_seconds : float
        Backoff scale and cap, seconds.
    max_elapsed_seconds : float, optional
        Give up after this long in total, seconds (no limit by default: ``max_attempts`` bounds it).

    Raises
    ------
    ConfigError
        No endpoint or a parameter out of range.
    """

    def __init__(
        self,
        endpoint_uris: Sequence[str],
        timeout_seconds: float = 10.0,
        max_attempts: int = 5,
        backoff_initial_seconds: float = 0.25,
        backoff_max_seconds: float = 8.0,
        max_elapsed_seconds: float | None = None,
    ) -> None:
        super().__init__()
        urls = [u for u in dict.fromkeys(endpoint_uris) if u]
        if not urls:
            raise ConfigError("no RPC endpoint given: set rpc_url (and optionally rpc_fallback_urls)")
        if timeout_seconds <= 0 or max_attempts < 1 or backoff_initial_seconds < 0 or backoff_max_seconds < 0:
            raise ConfigError(
                f"RPC retry settings out of range: timeout {timeout_seconds} s (> 0), attempts {max_attempts} "
                f"(>= 1), backoff {backoff_initial_seconds}..{backoff_max_seconds} s (>= 0)"
            )
        self.endpoint_uris = tuple(urls)
        self.timeout_seconds = timeout_seconds
        self.max_attempts = max_attempts
        self.backoff_initial_seconds = backoff_initial_seconds
        self.backoff_max_seconds = backoff_max_seconds
        self.max_elapsed_seconds = max_elapsed_seconds
        self.stats = ProviderStats(endpoints=[EndpointStats(u) for u in urls])
        self._current = 0
        self._lock = threading.Lock()
        self._local = threading.local()

    # --- web3 provider interface ---------------------------------------------------------------

    @property
    def endpoint_uri(self) -> str:
        """The endpoint requests currently go to."""
        return self.endpoint_uris[self._current]

    def make_request(self, method: RPCEndpoint, params: Any) -> RPCResponse:
        """Sends one JSON-RPC request with failover and retries; returns the node's response object.

        JSON-RPC errors that are not transient (reverts, bad nonces, ...) are returned, not raised.

        Raises
        ------
        RpcUnavailableError
            Every attempt failed transiently (the message names each endpoint's last error).
        """
        payload = self.encode_rpc_request(method, params)
        return self._with_retries(method, lambda: payload, self._single_answer, is_send=method in SEND_METHODS)

    def make_batch_request(self, batch_requests: Sequence[tuple[RPCEndpoint, Any]]) -> list[RPCResponse] | RPCResponse:
        """Sends the ``(method, params)`` reads of ``batch_requests`` as one JSON-RPC 2.0 batch (one HTTP round
        trip) with the failover and retries of :meth:`make_request`; returns the node's response objects in
        request order. A retry asks only for the requests still unanswered (the last one on its own; see the
        module docstring).

        As web3's ``HTTPProvider``: a request's JSON-RPC error that is not transient (a revert, invalid params)
        is returned in that request's response object, the others keep their results; a node that refuses the
        batch as a whole answers one error object, returned as it is. An empty batch makes no request and
        returns ``[]``.

        Raises
        ------
        NotImplementedError
            A request is a send (``eth_sendRawTransaction``, ``eth_sendTransaction``): a transaction is never
            batched (:func:`keeper.multicall.batch_request` then sends the requests one by one, the send under
            its own retry rule).
        RpcUnavailableError
            Some request was still unanswered when the attempts ran out: the HTTP request failed, or the request
            got a transient error, or the answer left it out or was malformed (not a list, an id twice or
            unknown); the message names the last failure.
        """
        calls = list(batch_requests)
        sends = sorted({str(method) for method, _ in calls if method in SEND_METHODS})
        if sends:
            raise NotImplementedError(f"a JSON-RPC batch never carries a transaction ({', '.join(sends)}): "
                                      "send it on its own")
        if not calls:
            return []
        batch = _Batch()
        for method, params in calls:
            request = self.encode_rpc_request(method, params)  # web3's encoding, with the provider's next id
            request_id = json.loads(request)["id"]
            batch.methods[request_id] = str(method)
            batch.requests[request_id] = request
        what = f"a batch of {len(calls)} JSON-RPC requests ({', '.join(batch.methods.values())})"
        return self._with_retries(what, batch.payload, partial(self._batch_answer, batch), is_send=False)

    def is_connected(self, show_traceback: bool = False) -> bool:
        try:
            response = self.make_request(RPCEndpoint("web3_clientVersion"), [])
        except RpcUnavailableError:
            if show_traceback:
                raise
            return False
        return "result" in response

    # --- one attempt -----------------------------------------------------------------------------

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            self._local.session = session
        return session

    def _with_retries(self, what: str, payload: Callable[[], bytes], answer: Callable[[int, Any], Any],
                      is_send: bool) -> Any:
        """Posts ``payload()`` (asked anew for each attempt) until ``answer(endpoint index, decoded body)``
        accepts a body (it raises
        :class:`TransientRpcError` through :meth:`_fail` otherwise), under the provider's failover, backoff and
        limits; a send is retried only when it provably never reached a node.

        Raises
        ------
        RpcUnavailableError
            Every attempt failed transiently; the message starts with ``what``.
        """
        stop = stop_after_attempt(self.max_attempts)
        if self.max_elapsed_seconds is not None:
            stop = stop | stop_after_delay(self.max_elapsed_seconds)
        retrying = Retrying(
            stop=stop,
            wait=wait_random_exponential(multiplier=self.backoff_initial_seconds, max=self.backoff_max_seconds),
            retry=retry_if_exception_type(TransientRpcError) & _retry_send_only_if_undelivered(is_send),
            before_sleep=self._before_retry,
            reraise=True,
        )
        try:
            return retrying(self._attempt, payload, answer)
        except TransientRpcError as exc:
            with self._lock:
                self.stats.exhausted += 1
            tried = "; ".join(f"{e.url}: {e.last_error}" for e in self.stats.endpoints if e.last_error)
            raise RpcUnavailableError(
                f"{what} failed on every RPC endpoint after {retrying.statistics.get('attempt_number', 1)} "
                f"attempt(s) (last: {exc.detail}; {tried}): check the nodes or add rpc_fallback_urls"
            ) from exc

    def _attempt(self, payload: Callable[[], bytes], answer: Callable[[int, Any], Any]) -> Any:
        index = self._current
        url = self.endpoint_uris[index]
        stats = self.stats.endpoints[index]
        with self._lock:
            stats.requests += 1
        try:
            response = self._session().post(
                url, data=payload(), headers={"Content-Type": "application/json"}, timeout=self.timeout_seconds
            )
        except requests.ConnectionError as exc:
            # A refused connection never reached a node; a reset after sending may have.
            refused = "refused" in str(exc).lower() or isinstance(exc, requests.exceptions.ConnectTimeout)
            raise self._fail(index, f"connection error ({type(exc).__name__}: {_short(exc)})", not refused) from exc
        except requests.Timeout as exc:
            raise self._fail(index, f"no answer within {self.timeout_seconds} s", True) from exc
        if response.status_code in TRANSIENT_HTTP_STATUSES:
            delivered = response.status_code not in (429, 503)
            raise self._fail(index, f"HTTP {response.status_code}", delivered)
        try:
            body = response.json()
        except ValueError as exc:
            raise self._fail(index, f"HTTP {response.status_code} with a non-JSON body", True) from exc
        return answer(index, body)

    def _single_answer(self, index: int, body: Any) -> RPCResponse:
        """The response object of one request; a transient error or a body that is not one raises."""
        if not isinstance(body, dict):
            raise self._fail(index, f"unexpected JSON-RPC body of type {type(body).__name__}", True)
        error = body.get("error")
        if isinstance(error, dict) and is_transient_rpc_error(error):
            # The node answered "later": it did not act on the request.
            raise self._fail(index, f"JSON-RPC error {error.get('code')}: {error.get('message')}", False)
        return body  # type: ignore[return-value]

    def _batch_answer(self, batch: "_Batch", index: int, body: Any) -> list[RPCResponse] | RPCResponse:
        """Keeps the good answers of ``body`` to the requests ``batch`` sent in this attempt; returns every
        response object in request order once each request has one, or one error object when the node refused
        the batch as a whole. A transient error, a request left unanswered or a malformed answer raises
        (:meth:`_fail`): the retry asks for what is still unanswered."""
        alone = batch.alone
        if alone is not None:  # the last request left, sent on its own: a bare response object
            error = body.get("error") if isinstance(body, dict) else None
            if isinstance(error, dict) and is_transient_rpc_error(error):
                raise self._fail(index, f"JSON-RPC error {error.get('code')} for id {alone} ({batch.methods[alone]}), "
                                        f"asked on its own: {error.get('message')}", False)
            response = self._single_answer(index, body)
            if response.get("id") != alone:
                raise self._fail(index, f"the answer to id {alone} ({batch.methods[alone]}) has id "
                                        f"{response.get('id')!r}", True)
            batch.kept[alone] = response
            return batch.in_order()
        if isinstance(body, dict):  # the batch as a whole: refused ("batches disabled") or "later"
            return self._single_answer(index, body)
        if not isinstance(body, list):
            raise self._fail(index, f"unexpected JSON-RPC batch body of type {type(body).__name__}", True)
        by_id: dict[Any, dict[str, Any]] = {}
        for item in body:
            if not isinstance(item, dict):
                raise self._fail(index, f"a JSON-RPC batch answer holds a {type(item).__name__}, not a response object",
                                 True)
            request_id = item.get("id")
            if request_id in by_id:
                raise self._fail(index, f"the JSON-RPC batch answer has id {request_id!r} twice", True)
            if request_id not in batch.sent:
                raise self._fail(index, f"the JSON-RPC batch answer has id {request_id!r}, which no request of "
                                        f"the batch has (ids {min(batch.sent)}..{max(batch.sent)})", True)
            by_id[request_id] = item
        later = None
        for request_id, item in by_id.items():
            error = item.get("error")
            if isinstance(error, dict) and is_transient_rpc_error(error):
                later = later or (request_id, error)  # "later" for this read: asked again, the others are kept
            else:
                batch.kept[request_id] = item  # type: ignore[assignment]
        missing = [request_id for request_id in batch.sent if request_id not in batch.kept]
        if later is not None:
            request_id, error = later
            raise self._fail(index, f"JSON-RPC error {error.get('code')} for id {request_id} "
                                    f"({batch.methods[request_id]}) in a batch: {error.get('message')} "
                                    f"({len(missing)} of {len(batch.sent)} to ask again)", False)
        if missing:
            raise self._fail(index, f"the JSON-RPC batch answer has no response for id {missing[0]} "
                                    f"({batch.methods[missing[0]]})", True)
        return batch.in_order()

    def _fail(self, index: int, detail: str, delivered: bool) -> TransientRpcError:
        url = self.endpoint_uris[index]
        with self._lock:
            stats = self.stats.endpoints[index]
            stats.failures += 1
            stats.last_error = detail
            stats.last_failure_at = time.time()
            if len(self.endpoint_uris) > 1 and self._current == index:
                self._current = (index + 1) % len(self.endpoint_uris)
                self.stats.failovers += 1
        return TransientRpcError(url, detail, delivered)

    def _before_retry(self, state: RetryCallState) -> None:
        with self._lock:
            self.stats.retries += 1
        exc = state.outcome.exception() if state.outcome else None
        log.warning(
            "RPC attempt %d failed (%s); retrying on %s in %.2f s",
            state.attempt_number, exc, self.endpoint_uri, state.next_action.sleep if state.next_action else 0.0,
        )


@dataclass
class _Batch:
    """One batch across its attempts: each request's method and encoded JSON by id (request order), the answers
    kept so far, and what the current attempt sent (``alone``: the id of a request sent on its own)."""

    methods: dict[int, str] = field(default_factory=dict)
    requests: dict[int, bytes] = field(default_factory=dict)
    kept: dict[int, RPCResponse] = field(default_factory=dict)
    sent: tuple[int, ...] = ()
    alone: int | None = None

    def payload(self) -> bytes:
        """The body of the next attempt: the requests without an answer, as a batch; the last one on its own."""
        self.sent = tuple(request_id for request_id in self.requests if request_id not in self.kept)
        self.alone = self.sent[0] if len(self.sent) == 1 and self.kept else None
        if self.alone is not None:
            return self.requests[self.alone]
        return b"[" + b", ".join(self.requests[request_id] for request_id in self.sent) + b"]"

    def in_order(self) -> list[RPCResponse]:
        return [self.kept[request_id] for request_id in self.requests]


def _retry_send_only_if_undelivered(is_send: bool):
    from tenacity import retry_if_exception

    def undelivered(exc: BaseException) -> bool:
        return not is_send or (isinstance(exc, TransientRpcError) and not exc.delivered)

    return retry_if_exception(undelivered)


def _short(exc: BaseException, limit: int = 160) -> str:
    text = str(exc)
    return text if len(text) <= limit else text[: limit - 3] + "..."


__all__ = [
    "EndpointStats",
    "FailoverHTTPProvider",
    "ProviderStats",
    "SEND_METHODS",
    "TRANSIENT_HTTP_STATUSES",
    "TRANSIENT_RPC_CODES",
    "TransientRpcError",
    "is_transient_rpc_error",
]
