"""Round trips of a keeper tick, counted with a provider that records every HTTP request (one per
``make_request``, one per ``make_batch_request`` whatever it carries): a steady rebalancing tick reads once,
quotes and pre-checks once, sends once and fetches one receipt; the guards behind each merged request still
fire (quotes below the bound, reverting QuoterV2 calls, stale pre-checks, a nonce used by another sender)."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest
from conftest import USDC, System

from keeper.chain import ANVIL_KEYS, connect_failover
from keeper.errors import QuoteBelowBoundError, SimulationRevertedError
from keeper.journal import Journal
from keeper.multicall import batch_request
from keeper.planner import plan_rebalance
from keeper.rpc import FailoverHTTPProvider
from keeper.runner import Keeper

QUOTE_AND_PRECHECK = ("eth_call", "eth_call", "eth_estimateGas", "eth_feeHistory", "eth_blockNumber")
#: Once a plan of the same shape was estimated: the simulation runs under the learned gas limit, no estimate.
QUOTE_AND_SIMULATE_UNDER_LIMIT = ("eth_call", "eth_call", "eth_feeHistory", "eth_blockNumber")
PRECHECK = ("eth_call", "eth_estimateGas", "eth_feeHistory", "eth_blockNumber")
SIMULATE_UNDER_LIMIT = ("eth_call", "eth_feeHistory", "eth_blockNumber")
#: Appended to the batch while the keeper keeps no nonce (before its first receipt, after a failure).
NONCE = ("eth_getTransactionCount",)


class RoundTrips:
    """Records the JSON-RPC methods of every HTTP request made through ``w3``'s provider, one tuple per
    round trip (restored by ``monkeypatch`` after the test)."""

    def __init__(self, w3: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        self.trips: list[tuple[str, ...]] = []
        inner, inner_batch = w3.provider.make_request, w3.provider.make_batch_request

        def one(method: str, params: Any) -> Any:
            self.trips.append((str(method),))
            return inner(method, params)

        def batch(requests: Any) -> Any:
            self.trips.append(tuple(str(m) for m, _ in requests))
            try:
                return inner_batch(requests)
            except NotImplementedError:  # no request made: the caller sends them one by one (recorded there)
                self.trips.pop()
                raise

        monkeypatch.setattr(w3.provider, "make_request", one)
        monkeypatch.setattr(w3.provider, "make_batch_request", batch)

    def mark(self) -> int:
        return len(self.trips)

    def since(self, mark: int) -> list[tuple[str, ...]]:
        return self.trips[mark:]


def _next_day_tick(chain: System, keeper: Any, trips: RoundTrips) -> tuple[Any, list[tuple[str, ...]]]:
    chain.push_day(chain.day + 1)
    mark = trips.mark()
    report = keeper.run_once()
    return report, trips.since(mark)


def _keeper_through(chain: System, provider: str, **overrides: Any) -> Keeper:
    """A keeper connected through web3's plain ``HTTPProvider`` (the test chain's) or through the keeper's
    production provider, :class:`FailoverHTTPProvider`, as ``keeper run`` connects."""
    if provider == "plain":
        return chain.make_keeper(**overrides)
    config = chain.keeper_config(**overrides)
    return Keeper(config, w3=connect_failover(config), private_key=ANVIL_KEYS[1], journal=Journal(":memory:"))


@pytest.mark.parametrize("provider", ["plain", "failover"])
def test_a_steady_rebalancing_tick_is_two_round_trips_then_the_send_and_its_receipt(chain: System, monkeypatch,
                                                                                    provider: str) -> None:
    """The same round trips through either provider: the failover provider batches as the plain one does."""
    chain.deposit(chain.alice, 250_000)
    keeper = _keeper_through(chain, provider, drift_threshold_bps=0)
    assert isinstance(keeper.w3.provider, FailoverHTTPProvider) == (provider == "failover")
    trips = RoundTrips(keeper.w3, monkeypatch)
    http_before = [e.requests for e in keeper.w3.provider.stats.endpoints] if provider == "failover" else []
    mark = trips.mark()
    cold = keeper.run_once()
    assert cold.status == "rebalanced", cold.reason
    cold_trips = trips.since(mark)
    # Cold: the round history in batched multicalls; the nonce in the quotes' batch; then as a steady tick. Counted
    # up to and including the send: the receipt polls after it depend on when Anvil mines (more on a loaded machine).
    sent = cold_trips.index(("eth_sendRawTransaction",))
    assert sent + 1 <= 5, cold_trips
    assert QUOTE_AND_PRECHECK + NONCE in cold_trips[:sent] and NONCE not in cold_trips[:sent], cold_trips
    # While the receipt is awaited, a poll may also read the nonce (a transaction replaced or dropped shows there).
    assert cold_trips[sent + 1:] and set(cold_trips[sent + 1:]) <= {("eth_getTransactionReceipt",), NONCE,
                                                                     ("eth_blockNumber",)}, cold_trips
    for _ in range(2):
        shapes = set(keeper.executor._gas_limits)
        report, steady = _next_day_tick(chain, keeper, trips)
        assert report.status == "rebalanced", report.reason
        # 1 multicall read; 1 batch: every leg's quote (one aggregate3) + simulation + fee history + height (+ the
        # gas estimate for a plan shape not seen before); the send; its receipt (awaited: a receipt not yet
        # indexed is polled again). No nonce read, no second fee read, no post-trade NAV read.
        batch = QUOTE_AND_SIMULATE_UNDER_LIMIT if (len(report.plan.legs), 0) in shapes else QUOTE_AND_PRECHECK
        assert steady[:3] == [("eth_call",), batch, ("eth_sendRawTransaction",)], steady
        assert steady[3:] and set(steady[3:]) <= {("eth_getTransactionReceipt",), ("eth_getTransactionCount",),
                                                  ("eth_blockNumber",)}, steady
        assert steady[-1] == ("eth_getTransactionReceipt",)
        execution = report.execution
        # The NAV after the trade comes from the vault's Rebalanced event: the same number totalAssets() gives.
        assert execution.nav_after == chain.vault.functions.totalAssets().call(block_identifier=execution.block_number)
        [row] = [r for r in keeper.journal.transactions() if r.hash == execution.tx_hash]
        # The age of the transaction in blocks starts at the height read just before the send.
        assert row.sent_block == execution.block_number - 1
    if provider == "failover":
        # Each recorded round trip was one HTTP request of the provider's own count (a batch is one), no retry.
        stats = keeper.w3.provider.stats
        assert [e.requests for e in stats.endpoints] == [http_before[0] + len(trips.trips)], (stats, trips.trips)
        assert stats.retries == 0


def test_the_quotes_of_every_leg_are_one_request_and_each_failure_names_its_leg(chain: System, monkeypatch) -> None:
    chain.deposit(chain.alice, 150_000)
    keeper = chain.make_keeper()
    snap, state = keeper.reader.snapshot(), keeper.reader.vault_state()
    plan = plan_rebalance(snap, state, keeper.reader.assets, np.full(3, 1 / 3), cash_buffer_bps=500,
                          slippage_budget_bps=50, drift_threshold_bps=0, min_trade_value=10 * USDC,
                          deadline=snap.block_timestamp + 600)
    assert len(plan.legs) == 3
    fees = {a.token: a.pool_fee for a in keeper.reader.assets}
    trips = RoundTrips(chain.w3, monkeypatch)
    mark = trips.mark()
    quotes = keeper.executor.quote(plan, fees)
    assert trips.since(mark) == [QUOTE_AND_PRECHECK + NONCE]
    # Each decoded quote is the single-call QuoterV2 answer for that leg.
    for leg, amount_out in zip(plan.legs, quotes):
        risk = leg.token_out if leg.side == "buy" else leg.token_in
        single = keeper.executor.quoter.functions.quoteExactInputSingle(
            (leg.token_in, leg.token_out, leg.amount_in, fees[risk], 0)).call()
        assert amount_out == single[0] and amount_out >= leg.min_amount_out
    # One leg whose bound the pool cannot meet fails the quote, naming that leg.
    greedy = dataclasses.replace(plan.legs[1], min_amount_out=plan.legs[1].oracle_amount_out * 2)
    greedy_plan = dataclasses.replace(plan, legs=(plan.legs[0], greedy, plan.legs[2]))
    mark = trips.mark()
    with pytest.raises(QuoteBelowBoundError, match=f"{greedy.symbol} {greedy.side} leg quotes"):
        keeper.executor.quote(greedy_plan, fees)
    assert len(trips.since(mark)) == 1
    # A leg QuoterV2 reverts on (no pool at that fee tier) fails it too, with allowFailure keeping the others.
    wrong_tier = dict(fees)
    risk = plan.legs[2].token_out if plan.legs[2].side == "buy" else plan.legs[2].token_in
    wrong_tier[risk] = 500 if fees[risk] != 500 else 10_000
    with pytest.raises(QuoteBelowBoundError, match=f"QuoterV2 reverted for the {plan.legs[2].symbol}"):
        keeper.executor.quote(plan, wrong_tier)


def test_a_move_halved_for_shallow_pools_requotes_once_per_step_and_sends_the_last_check(chain: System,
                                                                                        monkeypatch) -> None:
    chain.deposit(chain.alice, 2_000_000)  # well past the 50 bps budget at this pool depth: halvings needed
    keeper = chain.make_keeper(slippage_budget_bps=50, max_step_halvings=3)
    keeper.reader.read()  # fill the round cache outside the counted tick
    keeper.reader.history(keeper.reader.snapshot(), keeper.config.policy.lookback_bars, keeper.config.policy.bar_seconds)
    trips = RoundTrips(chain.w3, monkeypatch)
    mark = trips.mark()
    report = keeper.run_once()
    assert report.status == "rebalanced", report.reason
    batches = [t for t in trips.since(mark) if len(t) > 1]
    # One batch per attempt, the last one's check serving the send.
    assert len(batches) >= 2 and all(t in (QUOTE_AND_PRECHECK + NONCE, QUOTE_AND_SIMULATE_UNDER_LIMIT + NONCE)
                                     for t in batches), batches
    assert ("eth_sendRawTransaction",) in trips.since(mark)


def test_a_send_outside_the_tick_checks_again_and_a_stale_check_is_not_trusted(chain: System, monkeypatch) -> None:
    chain.deposit(chain.alice, 100_000)
    first, second = chain.make_keeper(drift_threshold_bps=0), chain.make_keeper(drift_threshold_bps=0)
    planned = second.plan_tick()  # quoted and pre-checked by the second keeper at epoch 0 ...
    assert planned.status == "planned", planned.reason
    assert first.run_once().status == "rebalanced"  # ... but the first keeper lands the epoch
    trips = RoundTrips(chain.w3, monkeypatch)
    nonce = chain.w3.eth.get_transaction_count(chain.keeper)
    # The pre-check read with the quotes predates the rival: with a max age of 0 it is read again, and the
    # simulation catches the lost race before anything is sent.
    second.executor.precheck_max_age_seconds = 0.0
    mark = trips.mark()
    with pytest.raises(SimulationRevertedError, match="EpochMismatch"):
        second.executor.send(planned.plan, reuse_precheck=True)
    assert PRECHECK + NONCE in trips.since(mark) and ("eth_sendRawTransaction",) not in trips.since(mark)
    assert chain.w3.eth.get_transaction_count(chain.keeper) == nonce
    # A send not made right after its decision (no reuse) checks again, in one batch, even with a fresh check held.
    second.executor.precheck_max_age_seconds = 60.0
    second.executor.quote(planned.plan, {a.token: a.pool_fee for a in second.reader.assets})
    mark = trips.mark()
    with pytest.raises(SimulationRevertedError, match="EpochMismatch"):
        second.executor.send(planned.plan)
    assert trips.since(mark) == [PRECHECK + NONCE], trips.since(mark)
    # A held check is for one calldata: another plan sent with reuse is checked again.
    second.executor.quote(planned.plan, {a.token: a.pool_fee for a in second.reader.assets})
    other = dataclasses.replace(planned.plan, deadline=planned.plan.deadline - 1)
    mark = trips.mark()
    with pytest.raises(SimulationRevertedError, match="EpochMismatch"):
        second.executor.send(other, reuse_precheck=True)
    assert trips.since(mark) == [PRECHECK + NONCE], trips.since(mark)


def test_a_learned_gas_limit_too_low_is_never_sent(chain: System, monkeypatch) -> None:
    """The simulation under a learned limit that runs out of gas sends nothing with it: the limit is
    forgotten, the transaction estimated again, and sent with the estimate × margin."""
    chain.deposit(chain.alice, 250_000)
    keeper = chain.make_keeper(drift_threshold_bps=0)
    assert keeper.run_once().status == "rebalanced"
    [(shape, learned)] = keeper.executor._gas_limits.items()
    chain.push_day(chain.day + 1)
    planned = keeper.plan_tick()
    assert planned.status == "planned" and (len(planned.plan.legs), 0) == shape, planned.reason
    keeper.executor._gas_limits[shape] = 60_000  # far below a rebalance
    keeper.executor.discard_precheck()
    trips = RoundTrips(chain.w3, monkeypatch)
    mark = trips.mark()
    execution = keeper.executor.send(planned.plan)
    assert trips.since(mark)[:3] == [SIMULATE_UNDER_LIMIT, PRECHECK, ("eth_sendRawTransaction",)], trips.since(mark)
    [row] = [r for r in keeper.journal.transactions() if r.hash == execution.tx_hash]
    assert row.status == "mined" and row.gas_limit > 60_000 and row.gas_limit == keeper.executor._gas_limits[shape]
    assert execution.gas_used < row.gas_limit


def _up_to_the_last_send(trips: list[tuple[str, ...]]) -> list[tuple[str, ...]]:
    """The round trips before the tick's last ``eth_sendRawTransaction``. After it, a receipt not yet indexed
    is polled with the account's latest nonce (``TxManager.poll``): not the nonce a send is signed with."""
    sends = [i for i, trip in enumerate(trips) if trip == ("eth_sendRawTransaction",)]
    return trips[:sends[-1]] if sends else trips


def test_the_nonce_is_kept_between_sends_and_read_again_when_another_sender_used_it(chain: System,
                                                                                   monkeypatch) -> None:
    chain.deposit(chain.alice, 250_000)
    keeper = chain.make_keeper(drift_threshold_bps=0)
    trips = RoundTrips(chain.w3, monkeypatch)
    assert keeper.run_once().status == "rebalanced"
    report, steady = _next_day_tick(chain, keeper, trips)
    assert report.status == "rebalanced" and ("eth_getTransactionCount",) not in _up_to_the_last_send(steady)
    # The keeper's account is used elsewhere: the kept nonce is now too low. The node refuses it, the row is
    # journalled dropped, the nonce is read again and the rebalance goes out at the next one.
    nonce = chain.w3.eth.get_transaction_count(chain.keeper)
    chain.tx.send(chain.keeper, chain.alice, b"", value=1)
    report, trips_after = _next_day_tick(chain, keeper, trips)
    assert report.status == "rebalanced", report.reason
    dropped, mined = [r for r in keeper.journal.transactions() if r.nonce >= nonce]
    assert dropped.nonce == nonce and dropped.status == "dropped" and "nonce too low" in dropped.note
    assert mined.nonce == nonce + 1 and mined.status == "mined" and mined.hash == report.execution.tx_hash
    assert _up_to_the_last_send(trips_after).count(("eth_getTransactionCount",)) == 1
    # ... and is kept again for the following tick.
    report, steady = _next_day_tick(chain, keeper, trips)
    assert report.status == "rebalanced" and ("eth_getTransactionCount",) not in _up_to_the_last_send(steady)


def test_a_dropped_transaction_forgets_the_kept_nonce(chain: System) -> None:
    """A row dropped unmined may leave its nonce unused: the next nonce is read, never skipped past it."""
    chain.deposit(chain.alice, 100_000)
    keeper = chain.make_keeper(drift_threshold_bps=0)
    assert keeper.run_once().status == "rebalanced"
    tx = keeper.executor.tx
    kept = tx.next_nonce()
    assert kept == chain.w3.eth.get_transaction_count(chain.keeper)
    row = keeper.journal.record_intended_tx(
        kind="rebalance", sender=tx.address, nonce=kept, tx_hash="0x" + "ab" * 32, raw_tx="0x00",
        to_address=chain.vault.address, calldata="0x", value=0, gas_limit=21_000, max_fee_per_gas=1,
        max_priority_fee_per_gas=1, epoch=None, deadline=None, replaces=None)
    tx._drop(row.id, "never broadcast")
    assert tx._nonce_hint is None
    assert tx.next_nonce() == kept


class _NoBatchProvider:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def make_request(self, method, params):
        self.calls.append(method)
        if method == "bad":
            return {"jsonrpc": "2.0", "id": 1, "error": {"code": -32000, "message": "boom"}}
        return {"jsonrpc": "2.0", "id": 1, "result": method}


class _BatchRefusingProvider(_NoBatchProvider):
    def __init__(self) -> None:
        super().__init__()
        self.batches = 0

    def make_batch_request(self, requests):
        self.batches += 1
        return {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": "batch requests are disabled"}}


class _W3:
    def __init__(self, provider) -> None:
        self.provider = provider


def test_batch_request_falls_back_to_single_requests_without_batch_support_or_when_refused(caplog) -> None:
    provider = _NoBatchProvider()
    out = batch_request(_W3(provider), [("a", []), ("bad", []), ("c", [])])
    assert [r.get("result") for r in out] == ["a", None, "c"] and out[1]["error"]["message"] == "boom"
    assert provider.calls == ["a", "bad", "c"]
    assert batch_request(_W3(provider), []) == []
    # A node that refuses batches: the same answers one by one, and no batch is tried again.
    refusing = _BatchRefusingProvider()
    for _ in range(2):
        out = batch_request(_W3(refusing), [("a", []), ("b", [])])
        assert [r["result"] for r in out] == ["a", "b"]
    assert refusing.batches == 1 and refusing.calls == ["a", "b", "a", "b"]
    assert "refused a batch of 2 JSON-RPC requests" in caplog.text


def test_a_failed_batch_member_does_not_fail_the_others(chain: System) -> None:
    out = batch_request(chain.w3, [("eth_blockNumber", []), ("eth_call", [{"to": chain.vault.address, "data": "0xdeadbeef"},
                                                                          "latest"]), ("eth_chainId", [])])
    assert int(out[0]["result"], 16) > 0 and "error" in out[1] and int(out[2]["result"], 16) == chain.w3.eth.chain_id
