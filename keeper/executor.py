"""Last stage of a tick: check a :class:`~keeper.planner.RebalancePlan` against QuoterV2, simulate the
exact transaction with ``eth_call``, price it from ``eth_feeHistory`` under the caps and the base-fee gate,
sign, journal (write-ahead), send (privately when configured) and wait for the receipt, replacing the
transaction with bumped fees while it is stuck (:mod:`keeper.txmanager`).

Round trips: the quotes of every leg (one Multicall3 ``aggregate3``), the simulation, the gas estimate, the
fee history and the block height travel in one JSON-RPC batch (:meth:`Executor.quote`); once a plan of
the same shape (swap legs, option legs) was estimated, the simulation runs under that learned gas limit
instead and the estimate is left out (a failure under it is checked again with an estimate). A send made right
after the decision (``send(plan, reuse_precheck=True)``, the keeper's tick) uses that pre-check when it is for
the same calldata and younger than :attr:`Executor.precheck_max_age_seconds`; any other send makes the batch
again without the quotes. Then the send, and the receipt (the NAV after the trade is the vault's
``Rebalanced`` event in it).

Refuses to send, raising a :class:`~keeper.errors.KeeperError`, while an earlier transaction of the
keeper is still pending, when a quote is below a leg's ``minAmountOut``, when the simulation reverts (a
lost race for the epoch shows up here and costs no gas), or when gas is above the cap or the gate.

At start, before any tick, :meth:`Executor.reconcile` settles every transaction the journal holds.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

from eth_account import Account
from eth_utils import event_abi_to_log_topic
from web3 import Web3

from keeper.chain import call_raw, connect, contract, decode_revert
from keeper.costs import GasModel, TradeCost, cost_from_quotes, gas_cost_base_units
from keeper.errors import (
    GasPriceTooHighError,
    KeeperError,
    QuoteBelowBoundError,
    RpcUnavailableError,
    SimulationRevertedError,
    TransactionFailedError,
)
from keeper.gas import FeeHistory, FeePolicy, Fees
from keeper.journal import Journal
from keeper.journal_records import TxRecord
from keeper.multicall import MULTICALL3_ADDRESS, Call, batch_request, decode_aggregate3, encode_aggregate3, selector
from keeper.oracle import PriceSnapshot, RiskAssetInfo, VaultState
from keeper.planner import RebalancePlan, value_of
from keeper.txmanager import ReconcileReport, TxManager, TxPolicy
from keeper.units import BPS

#: ``QuoterV2.quoteExactInputSingle((tokenIn, tokenOut, amountIn, fee, sqrtPriceLimitX96))``.
QUOTE_EXACT_INPUT_SINGLE = selector("quoteExactInputSingle((address,address,uint256,uint24,uint160))")


def _word_address(address: str) -> bytes:
    return bytes(12) + bytes.fromhex(address[2:] if address.startswith("0x") else address)


def _call_outcome(response: dict[str, Any], method: str) -> tuple[bool, bytes]:
    """``(ok, return data or revert data)`` of one ``eth_call``/``eth_estimateGas`` response object.

    Raises
    ------
    RuntimeError
        The node failed the call without revert data (not a revert: the node or the request is at fault).
    """
    if "error" in response:
        err = response["error"]
        data = err.get("data") if isinstance(err, dict) else None
        if isinstance(data, dict):
            data = data.get("data")
        if isinstance(data, str) and data.startswith("0x"):
            return False, bytes.fromhex(data[2:])
        raise RuntimeError(f"{method} failed without revert data: {err}")
    result = response["result"]
    return True, bytes.fromhex(result[2:]) if isinstance(result, str) else b""


def _shape(plan: RebalancePlan) -> tuple[int, int]:
    """(swap legs, option legs): plans of one shape take similar gas."""
    return len(plan.legs), len(plan.option_legs)


@dataclass(frozen=True)
class Precheck:
    """What the node said about one transaction just before it is sent, from one JSON-RPC batch.

    Attributes
    ----------
    calldata : str
        The transaction's calldata (hex), from the keeper to the vault.
    simulation : (bool, bytes)
        ``eth_call``: success and return data, or revert data.
    simulation_error : str or None
        The node failed the ``eth_call`` without revert data (then ``simulation`` is ``(False, b"")``).
    gas_limit : int or None
        Gas limit to send with, gas units: ``eth_estimateGas`` × the margin, or (``gas_limit_simulated``) a
        limit learned from an earlier estimate for a plan of the same shape, under which the simulation ran;
        ``None`` when the estimate failed (``estimate_error`` says why).
    gas_limit_simulated : bool
        The ``eth_call`` ran with ``gas`` = ``gas_limit``: its success shows the transaction succeeds with that
        limit on the state it saw, and no estimate was requested.
    fee_history : FeeHistory or None
        ``eth_feeHistory``; ``None`` when it failed (``fee_error`` says why).
    block_number : int or None
        ``eth_blockNumber``: the height the transaction's age in blocks starts from (``None``: read after
        the send).
    pending_nonce : int or None
        The account's pending nonce, asked for only while the transaction manager keeps none.
    checked_at : float
        ``time.monotonic()`` when the answer arrived, seconds.
    """

    calldata: str
    simulation: tuple[bool, bytes]
    simulation_error: str | None
    gas_limit: int | None
    gas_limit_simulated: bool
    estimate_error: str | None
    fee_history: FeeHistory | None
    fee_error: str | None
    block_number: int | None
    pending_nonce: int | None
    checked_at: float



def encode_rebalance_with_options(vault_contract: Any, plan: RebalancePlan) -> str:
    """Hex calldata of ``rebalanceWithOptions(legs, optionLegs, minNavAfter, expectedEpoch, deadline)``.

    ``plan.option_legs`` holds :class:`keeper.option_orders.OptionLeg` (anything with ``as_tuple()``) or ABI
    tuples; swap legs as in ``rebalance``.
    """
    option_tuples = [leg.as_tuple() if hasattr(leg, "as_tuple") else tuple(leg) for leg in plan.option_legs]
    return vault_contract.encode_abi(
        "rebalanceWithOptions",
        [[leg.as_tuple() for leg in plan.legs], option_tuples, plan.min_nav_after, plan.expected_epoch, plan.deadline],
    )


class ChainQuoter:
    """The live :class:`keeper.decision.Quoter`: QuoterV2 for each leg (:meth:`Executor.quote`), and the cost of
    the quoted legs (:func:`keeper.costs.cost_from_quotes`) plus the gas of one rebalance with that many legs.

    Parameters
    ----------
    executor : Executor
    assets : sequence of RiskAssetInfo
        The vault's risk assets (their pool fee tiers and decimals).
    snapshot, state
        The oracle answers and vault state the plan was made from.
    gas_model : GasModel
        Gas units per rebalance by number of legs.
    gas_price_wei : callable() -> int
        Base fee + tip of the next block, wei per gas (the cap when the fee cannot be read: an upper bound,
        so the cost gate errs toward not trading). Called at most once, the first time a quoted plan is
        costed, and only when the quotes' batch brought no fee history (:meth:`Executor.precheck_fee_history`):
        a tick that stops at its triggers reads no fee.
    eth_price_usd : float
        USD per ETH, to value the gas.
    """

    def __init__(self, executor: "Executor", assets: tuple[RiskAssetInfo, ...] | list[RiskAssetInfo],
                 snapshot: PriceSnapshot, state: VaultState, gas_model: GasModel,
                 gas_price_wei: Callable[[], int], eth_price_usd: float) -> None:
        self.executor = executor
        self.assets = tuple(assets)
        self.snapshot = snapshot
        self.state = state
        self.gas_model = gas_model
        self._gas_price_source = gas_price_wei
        self._gas_price_wei: int | None = None
        self.eth_price_usd = eth_price_usd
        self.pool_fees = {a.token: a.pool_fee for a in self.assets}

    def quote(self, plan: RebalancePlan) -> tuple[int, ...]:
        return self.executor.quote(plan, self.pool_fees)

    def cost(self, plan: RebalancePlan, amounts_out: tuple[int, ...]) -> TradeCost:
        state = self.state
        gas_units = self.gas_model.gas_units(len(plan.legs))
        if self._gas_price_wei is None:
            history = self.executor.precheck_fee_history()
            if history is not None:  # read with the quotes: no request of its own
                try:
                    fees = self.executor.fee_policy.fees_from_history(history, gate=False)
                    self._gas_price_wei = fees.base_fee_per_gas + fees.max_priority_fee_per_gas
                except KeeperError:
                    self._gas_price_wei = self.executor.fee_policy.max_fee_per_gas_wei  # above the cap: price at it
            else:
                self._gas_price_wei = self._gas_price_source()
        gas = gas_cost_base_units(gas_units, self._gas_price_wei, self.eth_price_usd, state.base_decimals)
        value_of_risk = {
            info.symbol: (lambda amount, answer=answer, info=info: value_of(amount, answer, info, state.base_decimals))
            for info, answer in zip(self.assets, self.snapshot.answers)
        }
        return cost_from_quotes(plan.legs, amounts_out, {a.symbol: a.pool_fee for a in self.assets}, value_of_risk,
                                gas, gas_units)


@dataclass(frozen=True)
class LegResult:
    """What one leg did on chain. ``realised_slippage_bps`` = (1 − amountOut / oracleAmountOut) × 1e4."""

    symbol: str
    side: str
    amount_in: int
    amount_out: int
    oracle_amount_out: int
    realised_slippage_bps: float


@dataclass(frozen=True)
class ExecutionResult:
    """A mined rebalance."""

    tx_hash: str
    block_number: int
    gas_used: int
    effective_gas_price: int
    nav_before: int
    nav_after: int
    legs: tuple[LegResult, ...]
    timings: dict[str, float] = field(default_factory=dict)


class Executor:
    """Guards and sends rebalances for one vault from one keeper key.

    Parameters
    ----------
    w3 : Web3
    vault_address, quoter_address : str
    private_key : str
        Hex key of an account holding ``KEEPER_ROLE``.
    fee_policy : FeePolicy
    gas_limit_margin : float
        Gas limit = ``eth_estimateGas`` × margin (Uniswap gas varies with the block).
    receipt_timeout_seconds : float
        Wait for a receipt this long (replacements included) before leaving the transaction to the next tick.
    journal : Journal, optional
        Write-ahead log of the transactions; the keeper's journal file in production. An in-memory one when
        omitted (nothing survives a restart: pass the real journal).
    tx_policy : TxPolicy, optional
        Stuck detection and fee bumps.
    send_w3 : Web3, optional
        Private submission endpoint.
    fault_hook : callable, optional
        ``fault_hook(checkpoint, record)`` at the transaction manager's checkpoints (tests).
    precheck_max_age_seconds : float
        A send with ``reuse_precheck`` uses the simulation, gas estimate and fees read with the quotes
        (:meth:`quote`) for up to this long, seconds (the decision's compute between quote and send takes
        milliseconds; an Ethereum slot is 12 s); older, or for other calldata, they are read again.
    """

    def __init__(
        self,
        w3: Web3,
        vault_address: str,
        quoter_address: str,
        private_key: str,
        fee_policy: FeePolicy,
        gas_limit_margin: float = 1.3,
        receipt_timeout_seconds: float = 180.0,
        *,
        journal: Journal | None = None,
        tx_policy: TxPolicy | None = None,
        send_w3: Web3 | None = None,
        fault_hook: Callable[[str, TxRecord], None] | None = None,
        precheck_max_age_seconds: float = 2.0,
    ) -> None:
        if not precheck_max_age_seconds >= 0:
            raise ValueError(f"precheck_max_age_seconds must be >= 0 seconds, got {precheck_max_age_seconds}")
        self.precheck_max_age_seconds = float(precheck_max_age_seconds)
        self._precheck: Precheck | None = None
        self._precheck_plan: RebalancePlan | None = None  # the plan object the held pre-check was made for
        # Gas limit per plan shape (swap legs, option legs): the last successful estimate × margin.
        self._gas_limits: dict[tuple[int, int], int] = {}
        self.w3 = w3
        self.vault = contract(w3, "RiskParityVault", vault_address)
        self.quoter = contract(w3, "QuoterV2", quoter_address)
        self.account = Account.from_key(private_key)
        self.fee_policy = fee_policy
        self.gas_limit_margin = gas_limit_margin
        self.receipt_timeout_seconds = receipt_timeout_seconds
        self.chain_id = w3.eth.chain_id
        self._pool_fees: dict[str, int] = {}
        leg_event = next(e for e in self.vault.abi if e.get("type") == "event" and e["name"] == "LegExecuted")
        self._leg_topic = "0x" + event_abi_to_log_topic(leg_event).hex()
        rebalanced = next(e for e in self.vault.abi if e.get("type") == "event" and e["name"] == "Rebalanced")
        self._rebalanced_topic = "0x" + event_abi_to_log_topic(rebalanced).hex()
        self.journal = journal if journal is not None else Journal(":memory:")
        self.tx = TxManager(w3, self.account, self.journal, fee_policy, tx_policy, send_w3=send_w3,
                            validator=self.still_valid, fault_hook=fault_hook)

    @classmethod
    def from_config(
        cls,
        config: Any,
        w3: Web3,
        private_key: str,
        journal: Journal,
        fault_hook: Callable[[str, TxRecord], None] | None = None,
    ) -> "Executor":
        """An executor with every transaction setting of a :class:`~keeper.config.KeeperConfig`: fee policy
        (caps, gate, fee history), stuck policy, private submission endpoint, and ``journal`` as its
        write-ahead log."""
        send_w3 = connect(config.transactions.private_rpc_url, timeout_seconds=15) if config.transactions.private_rpc_url else None
        return cls(
            w3,
            config.chain.vault_address,
            config.chain.quoter_address,
            private_key,
            FeePolicy.from_config(config),
            gas_limit_margin=config.transactions.gas_limit_margin,
            receipt_timeout_seconds=config.transactions.receipt_timeout_seconds,
            journal=journal,
            tx_policy=TxPolicy.from_config(config),
            send_w3=send_w3,
            fault_hook=fault_hook,
        )

    def reconcile(self, wait_seconds: float | None = None) -> ReconcileReport:
        """Settles every live journalled transaction with the chain; call once at start, before any tick.

        Receipts settle transactions as mined/reverted (their replacements as replaced/cancelled); nonces
        consumed elsewhere drop them; signed transactions nobody has are rebroadcast while still valid
        (:meth:`still_valid`), else dropped; then waits up to ``wait_seconds`` (the receipt timeout by
        default) for what is pending, replacing stuck transactions.
        """
        return self.tx.reconcile(self.receipt_timeout_seconds if wait_seconds is None else wait_seconds)

    def ensure_idle(self) -> None:
        """Settles the journalled transactions with the chain (no waiting) and refuses while one is still
        pending. Cheap when idle (one journal query); meant for the start of every tick.

        Raises
        ------
        PendingTransactionError
            A transaction of the keeper is still pending (stuck ones are replaced or cancelled on the way).
        """
        self.tx.ensure_idle()

    def still_valid(self, record: TxRecord) -> str | None:
        """Why the journalled rebalance ``record`` would fail if mined now (``None`` when it would succeed):
        its deadline passed, the vault's epoch moved past it, or its ``eth_call`` reverts."""
        latest = self.w3.eth.get_block("latest")
        if record.deadline is not None and int(latest["timestamp"]) + 1 > record.deadline:
            return f"deadline {record.deadline} passed (latest block at {latest['timestamp']})"
        if record.epoch is not None:
            epoch = self.vault.functions.rebalanceEpoch().call()
            if epoch != record.epoch:
                return f"the vault is at epoch {epoch}, the transaction was for epoch {record.epoch}"
        call = {"from": self.address, "to": record.to_address or self.vault.address, "data": record.calldata,
                "value": record.value}
        ok, out = call_raw(self.w3, call)
        if not ok:
            return f"simulation reverts with {decode_revert(out)}"
        return None

    @property
    def address(self) -> str:
        return self.account.address

    def calldata(self, plan: RebalancePlan) -> str:
        """ABI-encoded ``rebalance(legs, minNavAfter, expectedEpoch, deadline)``, or
        ``rebalanceWithOptions(legs, optionLegs, ...)`` when the plan carries option legs."""
        if plan.option_legs:
            return encode_rebalance_with_options(self.vault, plan)
        return self.vault.encode_abi(
            "rebalance",
            [[leg.as_tuple() for leg in plan.legs], plan.min_nav_after, plan.expected_epoch, plan.deadline],
        )

    def quote(self, plan: RebalancePlan, pool_fees: dict[str, int]) -> tuple[int, ...]:
        """QuoterV2 output of every leg (each leg trades its own pool, so quotes are independent), in one
        round trip: one Multicall3 ``aggregate3`` ``eth_call`` of every leg's ``quoteExactInputSingle``
        (``allowFailure`` per leg), batched with the pre-check of the plan's exact transaction (simulation,
        gas estimate, fee history, block height: :class:`Precheck`), which :meth:`send` then uses.

        Raises
        ------
        QuoteBelowBoundError
            A quote is below the leg's ``minAmountOut`` (the pool is off the oracle price or too shallow),
            or QuoterV2 reverted for a leg (named).
        RpcUnavailableError
            The node refused the ``aggregate3`` call itself (e.g. no Multicall3 on the chain).
        """
        calls = []
        for leg in plan.legs:
            risk = leg.token_out if leg.side == "buy" else leg.token_in
            calls.append(Call.to(self.quoter.address, QUOTE_EXACT_INPUT_SINGLE + _word_address(leg.token_in)
                                 + _word_address(leg.token_out) + int(leg.amount_in).to_bytes(32, "big")
                                 + int(pool_fees[risk]).to_bytes(32, "big") + bytes(32)))
        quote_request = ("eth_call", [{"to": MULTICALL3_ADDRESS, "data": "0x" + encode_aggregate3(calls).hex()},
                                      "latest"])
        data = self.calldata(plan)
        gas_limit = self._gas_limits.get(_shape(plan))
        responses = batch_request(self.w3, [quote_request, *self._precheck_requests(data, gas_limit)])
        self._precheck_plan = plan
        if "error" in responses[0]:
            raise RpcUnavailableError(f"Multicall3 aggregate3 of {len(calls)} QuoterV2 quotes failed: "
                                      f"{responses[0]['error']}")
        self._precheck = self._read_precheck(data, responses[1:], gas_limit)
        results = decode_aggregate3(bytes.fromhex(responses[0]["result"][2:]))
        if len(results) != len(plan.legs):
            raise RpcUnavailableError(f"Multicall3 answered {len(results)} results for {len(plan.legs)} quotes: "
                                      f"no Multicall3 at {MULTICALL3_ADDRESS}?")
        quotes = []
        for leg, (ok, out) in zip(plan.legs, results):
            if not ok:
                raise QuoteBelowBoundError(f"QuoterV2 reverted for the {leg.symbol} {leg.side} leg: {decode_revert(out)}")
            if len(out) < 32:
                raise QuoteBelowBoundError(f"QuoterV2 returned {len(out)} bytes for the {leg.symbol} {leg.side} leg "
                                           "(expected amountOut first): is quoter_address a QuoterV2?")
            amount_out = int.from_bytes(out[:32], "big")
            if amount_out < leg.min_amount_out:
                shortfall = (1 - amount_out / leg.oracle_amount_out) * BPS
                raise QuoteBelowBoundError(
                    f"{leg.symbol} {leg.side} leg quotes {amount_out} < minAmountOut {leg.min_amount_out} "
                    f"({shortfall:.1f} bps below the oracle, budget {plan.slippage_bps} bps): the pool is off the "
                    "oracle price or too shallow; skipping this tick"
                )
            quotes.append(amount_out)
        return tuple(quotes)

    def _precheck_requests(self, data: str, gas_limit: int | None, to: str | None = None) -> list[tuple[str, list[Any]]]:
        """Simulation (under ``gas_limit`` when given), the gas estimate (only without ``gas_limit``), fee
        history, height, and the account's pending nonce while the transaction manager does not keep one;
        a call from the keeper to ``to`` (the vault by default)."""
        tx: dict[str, Any] = {"from": self.address, "to": to or self.vault.address, "data": data}
        nonce = self.tx.nonce_request()
        tail = [self.fee_policy.fee_history_request(), ("eth_blockNumber", [])] + ([nonce] if nonce else [])
        if gas_limit is not None:
            return [("eth_call", [tx | {"gas": hex(gas_limit)}, "latest"]), *tail]
        return [("eth_call", [tx, "latest"]), ("eth_estimateGas", [tx]), *tail]

    def _read_precheck(self, data: str, responses: list[dict[str, Any]], gas_limit: int | None) -> Precheck:
        base = 3 if gas_limit is not None else 4
        pending_nonce = None
        if len(responses) > base:  # the pending nonce asked for by _precheck_requests
            answer = responses[base]
            if "error" not in answer and isinstance(answer.get("result"), str):
                pending_nonce = int(answer["result"], 16)
            responses = responses[:base]
        simulated = gas_limit is not None
        if simulated:
            simulation, fee, height = responses
            estimate: dict[str, Any] = {}
        else:
            simulation, estimate, fee, height = responses
        try:
            sim = _call_outcome(simulation, "eth_call")
            simulation_error = None
        except RuntimeError as exc:  # the node failed the call without revert data
            sim, simulation_error = (False, b""), str(exc)
        estimate_error = None
        if gas_limit is None:
            if "error" in estimate:
                estimate_error = str(estimate["error"])
            else:
                gas_limit = int(int(estimate["result"], 16) * self.gas_limit_margin)
        fee_history, fee_error = None, None
        try:
            fee_history = self.fee_policy.parse_fee_history(fee)
        except KeeperError as exc:
            fee_error = str(exc)
        block_number = None if "error" in height else int(height["result"], 16)
        return Precheck(data, sim, simulation_error, gas_limit, simulated, estimate_error, fee_history, fee_error,
                        block_number, pending_nonce, time.monotonic())

    def _checked(self, data: str, shape: tuple[int, int]) -> Precheck:
        gas_limit = self._gas_limits.get(shape)
        return self._read_precheck(data, batch_request(self.w3, self._precheck_requests(data, gas_limit)), gas_limit)

    def precheck(self, data: str, reuse: bool = False, shape: tuple[int, int] | None = None) -> Precheck:
        """Simulation, gas limit, fee history and block height of the transaction with calldata ``data``:
        one batch now, or with ``reuse`` the one read with the quotes when it is for ``data`` and fresh. The
        held pre-check is consumed either way: it serves one send at most.

        ``shape`` = (swap legs, option legs) of the plan: with a gas limit learned for that shape (the last
        successful estimate × margin), the simulation runs under that exact limit and no estimate is asked
        (``eth_estimateGas`` re-executes the transaction some twenty times in its search); without one, the
        estimate is in the batch.
        """
        held, self._precheck, self._precheck_plan = self._precheck, None, None
        if (reuse and held is not None and held.calldata == data
                and time.monotonic() - held.checked_at <= self.precheck_max_age_seconds):
            return held
        return self._checked(data, shape if shape is not None else (-1, -1))

    def precheck_fee_history(self) -> FeeHistory | None:
        """Fee history read with the latest quotes (``None`` when none, stale or failed)."""
        held = self._precheck
        if held is None or time.monotonic() - held.checked_at > self.precheck_max_age_seconds:
            return None
        return held.fee_history

    def discard_precheck(self) -> None:
        """Forgets the pre-check read with the quotes (e.g. after a wait before sending): the send re-checks."""
        self._precheck, self._precheck_plan = None, None

    def simulate(self, data: str, block: str = "latest") -> None:
        """``eth_call`` of the exact transaction from the keeper's address.

        Raises
        ------
        SimulationRevertedError
            With the decoded custom error (e.g. ``EpochMismatch`` when another keeper already rebalanced).
        """
        ok, out = call_raw(self.w3, {"from": self.address, "to": self.vault.address, "data": data}, block)
        if not ok:
            reason = decode_revert(out)
            raise SimulationRevertedError(f"rebalance simulation reverted with {reason}; nothing was sent")

    def send_call(self, to: str, data: str, kind: str) -> dict[str, Any]:
        """Simulates, signs, journals (write-ahead) and sends one call that is not a rebalance, e.g. the
        vault's ``settleOption`` (open to anyone); waits for the receipt and returns it.

        Raises
        ------
        SimulationRevertedError
            The ``eth_call`` reverts (decoded); nothing was sent.
        TransactionFailedError
            Mined with a failure status, or cancelled as stuck.
        """
        self.ensure_idle()
        # Simulation, estimate, fee history, height (and the nonce while unknown): one batch.
        check = self._read_precheck(data, batch_request(self.w3, self._precheck_requests(data, None, to)), None)
        fees = self._fees_to_send(check, kind)
        record = self.tx.submit(to=to, data=data, gas_limit=check.gas_limit, fees=fees, kind=kind,
                                sent_block=check.block_number, chain_nonce=check.pending_nonce)
        outcome = self.tx.wait(record, self.receipt_timeout_seconds)
        if outcome.record.kind == "cancel" or int(outcome.receipt["status"], 16) != 1:
            raise TransactionFailedError(f"{kind} {outcome.record.hash} failed on chain (or was cancelled as stuck)")
        return outcome.receipt

    def _fees_to_send(self, check: Precheck, what: str) -> Fees:
        """The fees to send ``what`` with, once ``check`` shows it can be sent: the simulation ran and passed,
        a gas limit is known and the fee history was read.

        Raises
        ------
        RpcUnavailableError
            The simulation could not run.
        SimulationRevertedError
            It reverted (decoded), or the gas estimate failed although it passed.
        GasPriceTooHighError
            No fee history (the fee read failed or the base fee is above the cap).
        """
        ok, out = check.simulation
        if check.simulation_error is not None:
            raise RpcUnavailableError(f"{what} simulation could not run: {check.simulation_error}; nothing was sent")
        if not ok:
            raise SimulationRevertedError(f"{what} simulation reverted with {decode_revert(out)}; nothing was sent")
        if check.gas_limit is None:
            raise SimulationRevertedError(f"{what} gas estimate failed ({check.estimate_error}) although its "
                                          "eth_call passed; nothing was sent")
        if check.fee_history is None:
            raise GasPriceTooHighError(f"{check.fee_error}; nothing was sent")
        return self.fee_policy.fees_from_history(check.fee_history)

    def send(self, plan: RebalancePlan, data: str | None = None, *, reuse_precheck: bool = False) -> ExecutionResult:
        """Simulates, prices, signs, journals and sends ``plan``; waits for the receipt.

        With ``reuse_precheck`` (only right after the decision that quoted ``plan``), the simulation, gas
        estimate and fee history read in the quotes' batch are used when fresh (:meth:`precheck`), saving a
        round trip; else they are read now, in one batch.

        Raises
        ------
        PendingTransactionError
            An earlier transaction of the keeper is still pending (nothing new is sent).
        SimulationRevertedError, GasPriceTooHighError, BaseFeeAboveGateError
            Before anything is sent.
        TransactionFailedError
            The transaction reverted on chain, was cancelled or dropped.
        TransactionStuckError
            No receipt within ``receipt_timeout_seconds`` (replacements included); the transaction stays
            journalled and the next tick or reconciliation settles it.
        """
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        self.ensure_idle()
        if data is None and reuse_precheck and self._precheck is not None and self._precheck_plan is plan:
            data = self._precheck.calldata  # encoded for the quotes' batch: the same plan object
        data = data or self.calldata(plan)
        shape = _shape(plan)
        check = self.precheck(data, reuse=reuse_precheck, shape=shape)
        if check.gas_limit_simulated and (check.simulation_error is not None or not check.simulation[0]):
            # Under the learned limit it failed: out of gas, or a real revert. Forget the limit and check
            # again with an estimate (one more round trip, on this path only) to tell which.
            self._gas_limits.pop(shape, None)
            check = self._checked(data, shape)
        fees = self._fees_to_send(check, "rebalance")
        if not check.gas_limit_simulated:
            self._gas_limits[shape] = check.gas_limit
        timings["simulate"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        gas = check.gas_limit
        record = self.tx.submit(to=self.vault.address, data=data, gas_limit=gas, fees=fees, kind="rebalance",
                                epoch=plan.expected_epoch, deadline=plan.deadline, sent_block=check.block_number,
                                chain_nonce=check.pending_nonce)
        outcome = self.tx.wait(record, self.receipt_timeout_seconds)
        receipt = outcome.receipt
        timings["send"] = time.perf_counter() - t1
        tx_hex = outcome.record.hash
        if outcome.record.kind == "cancel":
            raise TransactionFailedError(
                f"rebalance {record.hash} was cancelled by {tx_hex} (it was stuck and no longer valid); "
                "the next tick re-plans from the new state"
            )
        if int(receipt["status"], 16) != 1:
            raise TransactionFailedError(
                f"rebalance {tx_hex} reverted on chain after a successful simulation (state changed in between); "
                "the next tick re-plans from the new state"
            )
        legs = []
        nav_after: int | None = None
        for log in receipt["logs"]:
            if log["address"].lower() != self.vault.address.lower():
                continue
            if log["topics"][0] == self._rebalanced_topic:
                # Rebalanced(epoch indexed, navBefore, navAfter, turnoverBps, legCount): the vault's own NAV
                # after the trades, the one its guards checked.
                nav_after = int(log["data"][2 + 64:2 + 128], 16)
                continue
            if log["topics"][0] != self._leg_topic:
                continue
            raw = bytes.fromhex(log["data"][2:])
            index, amount_in, amount_out, oracle_out = (int.from_bytes(raw[i : i + 32], "big") for i in range(0, 128, 32))
            leg = plan.legs[index]
            slip = (1 - amount_out / oracle_out) * BPS if oracle_out else 0.0
            legs.append(LegResult(leg.symbol, leg.side, amount_in, amount_out, oracle_out, slip))
        if nav_after is None:  # no Rebalanced event (not expected of a mined rebalance): read it
            nav_after = self.vault.functions.totalAssets().call(block_identifier=int(receipt["blockNumber"], 16))
        return ExecutionResult(
            tx_hash=tx_hex,
            block_number=int(receipt["blockNumber"], 16),
            gas_used=int(receipt["gasUsed"], 16),
            effective_gas_price=int(receipt["effectiveGasPrice"], 16),
            nav_before=plan.nav_before,
            nav_after=nav_after,
            legs=tuple(legs),
            timings=timings,
        )
