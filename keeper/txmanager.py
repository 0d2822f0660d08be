"""The keeper's transactions, from signature to final status: nonces, a write-ahead journal, private
submission, stuck-transaction replacement and cancellation, and reconciliation with the chain at start.

Life of a transaction (statuses of :mod:`keeper.journal`)::

    sign locally (hash known) -> journal "intended" (committed) -> send -> "sent"
        -> receipt: "mined" | "reverted"
        -> stuck (age in seconds or blocks): replacement at the same nonce with bumped fees, or a cancel
           (0-value self-transfer) when the transaction is no longer valid; the losers end "replaced" /
           "cancelled", linked by ``replaced_by``
        -> nonce consumed by a transaction not in the journal, or never broadcast and no longer valid: "dropped"

Invariants: a transaction reaches the network only after its journal row is committed; a new nonce is
``max(chain pending nonce, highest live journalled nonce + 1)``, the chain term read once and then kept
(one past the newest nonce of ours settled by a receipt) until a failure or a drop makes it doubtful, so two
live transactions share a nonce only when one deliberately replaces the other; every live row is reconciled with the chain before the
keeper sends anything new.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from eth_account.signers.local import LocalAccount
from eth_utils import to_checksum_address
from web3 import Web3

from keeper.errors import (
    GasPriceTooHighError,
    NonceConflictError,
    PendingTransactionError,
    ReplacementFeeCapError,
    SubmissionError,
    TransactionFailedError,
    TransactionStuckError,
)
from keeper.gas import MULTIPLIER_SCALE, FeePolicy, Fees
from keeper.journal import Journal
from keeper.journal_records import TxRecord

log = logging.getLogger("keeper.tx")

#: Test hook: when this environment variable names a checkpoint ("after_journal": the signed
#: transaction is committed to the journal but not sent; "after_send": a node accepted it but the journal
#: does not say so yet), the process kills itself with SIGKILL there, to test recovery from a crash.
KILL_AT_ENV = "KEEPER_TEST_KILL_AT"
CHECKPOINTS = ("after_journal", "after_send")

#: Gas of a plain ETH transfer (the cancel transaction), yellow paper G_transaction.
TRANSFER_GAS = 21_000

# Node messages (geth, erigon, nethermind, reth, anvil) that say the nonce is already used, or that a
# transaction already holds it in the pool at an equal or higher price.
_NONCE_TAKEN = ("nonce too low", "noncetoolow", "nonce is too low", "replacement transaction underpriced",
                "transaction underpriced", "already used", "old nonce")
_ALREADY_KNOWN = ("already known", "known transaction", "already imported", "alreadyknown", "already exists",
                  "transaction already in")


class _NonceTaken(Exception):
    """The node refused a transaction because its nonce is used or held at a higher price."""


class _Unreachable(SubmissionError):
    """No submission endpoint answered: the transaction may or may not have reached the network."""


@dataclass(frozen=True)
class TxPolicy:
    """How sent transactions are watched and unstuck.

    Parameters
    ----------
    stuck_after_seconds : float
        A sent transaction unmined this long (wall clock, since its last broadcast) is stuck, seconds.
    stuck_after_blocks : int
        ... or unmined for this many blocks since it was sent, blocks.
    fee_bump_factor_e4 : int
        Replacement fees = previous × this, 1e4 = ×1; at least the node's ×1.10.
    max_fee_bumps : int
        Replacements (or cancels) at one nonce before the keeper stops bumping and waits.
    allow_public_fallback : bool
        With a private submission endpoint: send through the public node when the private one fails.
    """

    stuck_after_seconds: float = 90.0
    stuck_after_blocks: int = 5
    fee_bump_factor_e4: int = 11_250
    max_fee_bumps: int = 5
    allow_public_fallback: bool = False

    @classmethod
    def from_config(cls, config: Any) -> "TxPolicy":
        """The policy of a :class:`~keeper.config.KeeperConfig`."""
        return cls(
            stuck_after_seconds=config.transactions.stuck_after_seconds,
            stuck_after_blocks=config.transactions.stuck_after_blocks,
            fee_bump_factor_e4=int(round(config.transactions.fee_bump_factor * MULTIPLIER_SCALE)),
            max_fee_bumps=config.transactions.max_fee_bumps,
            allow_public_fallback=config.transactions.allow_public_fallback,
        )


@dataclass(frozen=True)
class TxOutcome:
    """A nonce settled on chain: ``record`` is the attempt that was mined (status ``mined`` or
    ``reverted``), ``receipt`` its raw JSON-RPC receipt (hex quantities), ``attempts`` every journalled
    transaction at that nonce after settlement, oldest first."""

    record: TxRecord
    receipt: dict[str, Any]
    attempts: tuple[TxRecord, ...]


@dataclass(frozen=True)
class ReconcileEntry:
    """What reconciliation found and did for one journalled transaction."""

    tx_id: int
    tx_hash: str
    nonce: int
    kind: str
    status_before: str
    status_after: str
    action: str


@dataclass(frozen=True)
class ReconcileReport:
    """Result of :meth:`TxManager.reconcile`: one entry per transaction that was live before, and the
    transactions still live after (pending in a mempool, within their wait)."""

    entries: tuple[ReconcileEntry, ...]
    still_live: tuple[TxRecord, ...] = field(default=())

    @property
    def clean(self) -> bool:
        """No transaction of the keeper is live any more."""
        return not self.still_live

    def count(self, status_after: str) -> int:
        """Entries that ended in ``status_after``."""
        return sum(1 for e in self.entries if e.status_after == status_after)

    def __str__(self) -> str:
        if not self.entries:
            return "no journalled transaction to reconcile"
        lines = [f"nonce {e.nonce} {e.kind} {e.tx_hash[:12]}…: {e.status_before} -> {e.status_after} ({e.action})"
                 for e in self.entries]
        return "\n".join(lines)


def _fees_of(record: TxRecord) -> Fees:
    return Fees(record.max_fee_per_gas, record.max_priority_fee_per_gas, 0)


class TxManager:
    """Sends the transactions of one account and keeps the journal in step with the chain.

    Parameters
    ----------
    w3 : Web3
        Public node: reads, receipts, and submission unless ``send_w3`` is given.
    account : LocalAccount
        Signs locally (the hash is known before anything is sent).
    journal : Journal
        Write-ahead log (its ``transactions`` table).
    fee_policy : FeePolicy
        Caps and the bump of replacements.
    policy : TxPolicy
    send_w3 : Web3, optional
        Private submission endpoint (e.g. a relay that keeps transactions out of the public mempool).
    validator : callable, optional
        ``validator(record) -> reason or None``: why a transaction would no longer succeed
        (deadline passed, epoch moved, simulation reverts). Invalid stuck transactions are cancelled and
        invalid unsent ones dropped rather than rebroadcast (not asked about cancels).
    fault_hook : callable, optional
        ``fault_hook(checkpoint, record)`` called at each of :data:`CHECKPOINTS` (tests).
    """

    def __init__(
        self,
        w3: Web3,
        account: LocalAccount,
        journal: Journal,
        fee_policy: FeePolicy,
        policy: TxPolicy | None = None,
        send_w3: Web3 | None = None,
        validator: Callable[[TxRecord], str | None] | None = None,
        fault_hook: Callable[[str, TxRecord], None] | None = None,
    ) -> None:
        self.w3 = w3
        self.account = account
        self.journal = journal
        self.fee_policy = fee_policy
        self.policy = policy or TxPolicy()
        self.send_w3 = send_w3
        self.validator = validator
        self.fault_hook = fault_hook
        self.chain_id = int(w3.eth.chain_id)
        # One past the newest nonce of ours that a receipt settled: the chain's nonce without asking the node.
        # None = unknown (start, a refused or unreachable send, a dropped row): the next nonce is read.
        self._nonce_hint: int | None = None
        #: Receipts of this account's transactions found so far (mined or reverted), by this manager.
        self.receipts_settled = 0

    @property
    def address(self) -> str:
        return self.account.address

    # --- Nonces ---------------------------------------------------------------------------------------

    def chain_nonce(self, block: str = "pending") -> int:
        """Transaction count of the account at ``block`` (``"pending"`` includes the node's mempool)."""
        return int(self._rpc("eth_getTransactionCount", [self.address, block]), 16)

    def next_nonce(self, chain_nonce: int | None = None) -> int:
        """``max(chain pending nonce, highest live journalled nonce + 1)``.

        The chain term covers transactions sent by anyone else from this account; the journal term covers
        our own transactions that this node has not seen (private relay, a node restart). The chain term
        is read (``eth_getTransactionCount``) only while unknown: after a receipt of ours at nonce n it is
        n + 1 with no request. Another sender of the account then shows up as "nonce too low" at send,
        which forgets the kept value and takes a fresh one (:meth:`submit`); every drop of a row, refusal
        or unreachable send forgets it too, so a nonce left unused is never skipped. ``chain_nonce``: the
        pending nonce read just before (in a batch, :meth:`nonce_request`), used when none is kept.
        """
        live = self.journal.highest_live_nonce(self.address)
        if self._nonce_hint is not None:
            chain = self._nonce_hint
        else:
            chain = chain_nonce if chain_nonce is not None else self.chain_nonce("pending")
        return chain if live is None else max(chain, live + 1)

    def nonce_request(self) -> tuple[str, list[Any]] | None:
        """The ``eth_getTransactionCount(pending)`` request :meth:`next_nonce` would make, to send in a batch
        just before :meth:`submit` (its answer as ``submit(chain_nonce=...)``); ``None`` when the nonce is kept."""
        return None if self._nonce_hint is not None else ("eth_getTransactionCount", [self.address, "pending"])

    def forget_nonce(self) -> None:
        """The next :meth:`next_nonce` reads the chain's pending nonce again."""
        self._nonce_hint = None

    def _drop(self, tx_id: int, note: str) -> TxRecord:
        """Journals a row ``dropped``; its nonce may be unused, so the kept nonce is forgotten."""
        self._nonce_hint = None
        return self.journal.finalize_tx(tx_id, "dropped", note=note)

    # --- Sending --------------------------------------------------------------------------------------

    def submit(
        self,
        *,
        to: str,
        data: str,
        gas_limit: int,
        fees: Fees,
        kind: str = "rebalance",
        value: int = 0,
        epoch: int | None = None,
        deadline: int | None = None,
        nonce: int | None = None,
        replaces: int | None = None,
        max_nonce_retries: int = 3,
        sent_block: int | None = None,
        chain_nonce: int | None = None,
    ) -> TxRecord:
        """Signs, journals (committed) and then sends a transaction; returns its ``sent`` row.

        With ``nonce`` omitted, the next nonce is taken and, when the node says it is already used (another
        sender of the account got there first), the row is journalled ``dropped`` and the transaction is
        signed again at a fresh nonce, up to ``max_nonce_retries`` times. With ``nonce`` given (a deliberate
        replacement) a taken nonce is not retried. ``sent_block`` is the chain height just before the send
        (the start of the transaction's age in blocks), read after the send when omitted; ``chain_nonce``
        the account's pending nonce read just before (first attempt only, see :meth:`next_nonce`).

        Raises
        ------
        NonceConflictError
            The nonce was taken at every retry, or a deliberate replacement found its nonce taken.
        SubmissionError
            The node refused the transaction for another reason (the row is ``dropped``), or no endpoint
            could be reached (the row stays ``intended``: it may have reached the network, and the next
            reconciliation settles it).
        """
        for attempt in range(max_nonce_retries if nonce is None else 1):
            use_nonce = self.next_nonce(chain_nonce if attempt == 0 else None) if nonce is None else nonce
            tx = {
                "type": 2,
                "chainId": self.chain_id,
                "nonce": use_nonce,
                "to": to_checksum_address(to),
                "data": data,
                "value": int(value),
                "gas": int(gas_limit),
                "maxFeePerGas": fees.max_fee_per_gas,
                "maxPriorityFeePerGas": fees.max_priority_fee_per_gas,
            }
            signed = self.account.sign_transaction(tx)
            raw = "0x" + bytes(signed.raw_transaction).hex()
            record = self.journal.record_intended_tx(
                kind=kind,
                sender=self.address,
                nonce=use_nonce,
                tx_hash="0x" + bytes(signed.hash).hex(),
                raw_tx=raw,
                to_address=tx["to"],
                calldata=data,
                value=value,
                gas_limit=gas_limit,
                max_fee_per_gas=fees.max_fee_per_gas,
                max_priority_fee_per_gas=fees.max_priority_fee_per_gas,
                epoch=epoch,
                deadline=deadline,
                replaces=replaces,
            )
            self._checkpoint("after_journal", record)
            try:
                self._broadcast(raw)
            except _NonceTaken as exc:
                self._drop(record.id, f"refused at send: {exc}")
                log.warning("nonce %d of %s is taken (%s)", use_nonce, self.address, exc)
                if nonce is not None:
                    raise NonceConflictError(
                        f"replacement {record.hash} at nonce {use_nonce} refused: {exc}; the nonce is used or held "
                        "at a higher price"
                    ) from exc
                continue
            except _Unreachable:
                self._nonce_hint = None
                raise  # the row stays "intended": reconciliation finds out whether it went out
            except SubmissionError as exc:
                self._drop(record.id, f"refused at send: {exc}")
                raise
            self._checkpoint("after_send", record)
            return self.journal.mark_tx_sent(record.id, self._block_number() if sent_block is None else sent_block)
        raise NonceConflictError(
            f"nonce of {self.address} taken by another sender {max_nonce_retries} times in a row; "
            "another process is sending from the keeper's account: stop it"
        )

    def _broadcast(self, raw_tx: str) -> str:
        """``eth_sendRawTransaction`` through the private endpoint (when set) and, if allowed, the public one.

        Returns the name of the endpoint that accepted it. "Already known" counts as accepted.
        """
        endpoints: list[tuple[str, Web3]] = []
        if self.send_w3 is not None:
            endpoints.append(("private", self.send_w3))
        if self.send_w3 is None or self.policy.allow_public_fallback:
            endpoints.append(("public", self.w3))
        failures = []
        for name, w3 in endpoints:
            try:
                response = w3.provider.make_request("eth_sendRawTransaction", [raw_tx])  # type: ignore[arg-type]
            except Exception as exc:  # noqa: BLE001 - connection refused, timeout, HTTP error: the endpoint failed
                failures.append(f"{name}: {type(exc).__name__}: {exc}")
                continue
            if "error" not in response:
                return name
            message = str(response["error"].get("message", response["error"]))
            lowered = message.lower()
            if any(s in lowered for s in _ALREADY_KNOWN):
                return name
            if any(s in lowered for s in _NONCE_TAKEN):
                raise _NonceTaken(message)
            if response["error"].get("code") in (-32601, -32005, 429):  # method missing / rate limited
                failures.append(f"{name}: {message}")
                continue
            raise SubmissionError(f"the {name} endpoint refused the transaction: {message}")
        hint = "" if self.policy.allow_public_fallback or self.send_w3 is None else (
            " (allow_public_fallback is off: the trade is not exposed to the public mempool)"
        )
        raise _Unreachable(f"no submission endpoint could be reached: {'; '.join(failures)}{hint}")

    # --- Watching -------------------------------------------------------------------------------------

    def poll(self, nonce: int) -> TxOutcome | None:
        """Settles ``nonce`` in the journal if the chain has; ``None`` while it is still open.

        A receipt for one of our hashes makes that row ``mined``/``reverted`` and the other live rows at the
        nonce ``replaced`` (or ``cancelled`` when the winner is a cancel). A nonce consumed with no receipt for
        any of our hashes, and none of them known to the node, makes the live rows ``dropped`` (another sender
        of the account used it); while the node still knows one of them, its receipt is awaited.
        """
        outcome = self._settle_from_receipts(nonce)
        if outcome is not None:
            return outcome
        if self.chain_nonce("latest") > nonce:
            # Read after the receipts: a receipt of ours mined since then is found by this second look.
            outcome = self._settle_from_receipts(nonce)
            if outcome is not None:
                return outcome
            live = self.journal.transactions(sender=self.address, nonce=nonce, live=True)
            if any(self._rpc("eth_getTransactionByHash", [row.hash]) is not None for row in live):
                # The node knows one of our transactions at this nonce: the nonce was consumed by it and its
                # receipt is not indexed yet (a node may report the new nonce a moment before the receipt).
                return None
            for row in live:
                self._drop(row.id, f"nonce {nonce} consumed by a transaction not in the journal")
        return None

    def _settle_from_receipts(self, nonce: int) -> TxOutcome | None:
        rows = [r for r in self.journal.transactions(sender=self.address, nonce=nonce)
                if r.live or r.status == "dropped"]
        for row in sorted(rows, key=lambda r: -r.id):  # newest attempts first: the likeliest winners
            receipt = self._rpc("eth_getTransactionReceipt", [row.hash])
            if receipt is None:
                continue
            ok = int(receipt["status"], 16) == 1
            winner = self.journal.finalize_tx(
                row.id,
                "mined" if ok else "reverted",
                block_number=int(receipt["blockNumber"], 16),
                gas_used=int(receipt["gasUsed"], 16),
                effective_gas_price=int(receipt.get("effectiveGasPrice", "0x0"), 16),
                allow_correction=True,
            )
            for other in rows:
                if other.id != row.id and other.live:
                    self.journal.finalize_tx(
                        other.id, "cancelled" if winner.kind == "cancel" else "replaced", replaced_by=winner.id
                    )
            attempts = tuple(self.journal.transactions(sender=self.address, nonce=nonce))
            self.receipts_settled += 1
            # Nonce ``nonce`` is consumed on chain: the next is at least nonce + 1 (a row of ours below it that
            # ends dropped, its nonce perhaps unused, forgets this value again).
            self._nonce_hint = max(self._nonce_hint or 0, nonce + 1)
            return TxOutcome(winner, receipt, attempts)
        return None

    def is_stuck(self, record: TxRecord, block_number: int | None = None, now: float | None = None) -> bool:
        """A ``sent`` transaction unmined for ``stuck_after_seconds`` or ``stuck_after_blocks``."""
        if record.status != "sent" or record.sent_at is None:
            return False
        now = time.time() if now is None else now
        if now - record.sent_at >= self.policy.stuck_after_seconds:
            return True
        if record.sent_block is not None:
            block_number = self._block_number() if block_number is None else block_number
            return block_number - record.sent_block >= self.policy.stuck_after_blocks
        return False

    def unstick(self, record: TxRecord) -> TxRecord:
        """Replaces the stuck transaction ``record`` at its nonce with bumped fees; returns the new row.

        A ``rebalance`` that would still succeed (per the validator) is re-sent as is; one that would not
        (deadline passed, epoch moved) is cancelled with a 0-value self-transfer. Fees: the previous ones ×
        ``fee_bump_factor`` (at least the node's 10%), raised to the market when higher, capped.

        Raises
        ------
        TransactionStuckError
            When ``max_fee_bumps`` replacements were already made at this nonce.
        ReplacementFeeCapError
            When the caps leave no room for the node's minimum bump.
        NonceConflictError
            When the nonce was consumed meanwhile (the next poll settles it).
        """
        attempts = self.journal.transactions(sender=self.address, nonce=record.nonce)
        bumps = sum(1 for r in attempts if r.replaces is not None)
        if bumps >= self.policy.max_fee_bumps:
            raise TransactionStuckError(
                f"transaction {record.hash} at nonce {record.nonce} is still unmined after {bumps} fee bumps "
                f"(max_fee_bumps {self.policy.max_fee_bumps}); waiting for it or for the base fee to fall"
            )
        newest = max((r for r in attempts if r.live), key=lambda r: r.max_fee_per_gas, default=record)
        try:
            market: Fees | None = self.fee_policy.estimate(self.w3, gate=False)
        except GasPriceTooHighError:
            market = None  # the base fee is above the cap: bump within the cap only
        fees = self.fee_policy.bump(_fees_of(newest), market, self.policy.fee_bump_factor_e4)
        reason = self.validator(record) if (self.validator is not None and record.kind != "cancel") else None
        if reason is None:
            log.warning("replacing stuck %s %s at nonce %d: max fee %d -> %d wei", record.kind, newest.hash,
                        record.nonce, newest.max_fee_per_gas, fees.max_fee_per_gas)
            return self.submit(
                to=record.to_address or self.address, data=record.calldata, gas_limit=record.gas_limit, fees=fees,
                kind=record.kind, value=record.value, epoch=record.epoch, deadline=record.deadline,
                nonce=record.nonce, replaces=newest.id,
            )
        log.warning("cancelling stuck %s at nonce %d: %s", newest.hash, record.nonce, reason)
        return self.cancel(newest, fees, reason)

    def cancel(self, record: TxRecord, fees: Fees | None = None, reason: str = "cancelled") -> TxRecord:
        """Sends a 0-value self-transfer at ``record``'s nonce with bumped fees; returns the cancel's row.

        Raises
        ------
        ReplacementFeeCapError, NonceConflictError
            As :meth:`unstick`.
        """
        if fees is None:
            try:
                market: Fees | None = self.fee_policy.estimate(self.w3, gate=False)
            except GasPriceTooHighError:
                market = None
            fees = self.fee_policy.bump(_fees_of(record), market, self.policy.fee_bump_factor_e4)
        row = self.submit(to=self.address, data="0x", gas_limit=TRANSFER_GAS, fees=fees, kind="cancel",
                          nonce=record.nonce, replaces=record.id)
        self.journal.annotate_tx(record.id, f"cancel {row.hash} sent: {reason}")
        return row

    def wait(self, record: TxRecord, timeout_seconds: float, poll_seconds: float = 0.002) -> TxOutcome:
        """Waits until ``record``'s nonce is settled, unsticking the newest attempt whenever it is stuck.

        Raises
        ------
        TransactionFailedError
            Every attempt at the nonce was dropped (the nonce was consumed by another sender).
        TransactionStuckError
            Nothing mined within ``timeout_seconds``; the rows stay live for the next reconciliation.
        """
        deadline = time.monotonic() + timeout_seconds
        delay = poll_seconds
        problem = ""
        height: int | None = None
        # A node that mines on receipt (a dev chain) indexes the receipt a moment after accepting the
        # transaction: one poll interval first saves a poll that would only find it missing.
        time.sleep(poll_seconds)
        while True:
            outcome = self.poll(record.nonce)
            if outcome is not None:
                return outcome
            live = self.journal.transactions(sender=self.address, nonce=record.nonce, live=True)
            if not live:
                attempts = self.journal.transactions(sender=self.address, nonce=record.nonce)
                notes = "; ".join(sorted({r.note or "" for r in attempts}))
                raise TransactionFailedError(f"transaction {record.hash} at nonce {record.nonce} was dropped: {notes}")
            newest = max(live, key=lambda r: r.id)
            # ``height`` was read before this poll: an attempt mined up to it has been found by the poll, so
            # "stuck" is never concluded from a block that already holds the transaction.
            if height is not None and self.is_stuck(newest, height):
                try:
                    self.unstick(newest)
                except (ReplacementFeeCapError, TransactionStuckError, NonceConflictError) as exc:
                    log.warning("cannot unstick nonce %d: %s", record.nonce, exc)
                    problem = f"; not replaced: {exc}"
                    # Look again only after another full stuck period: restart the newest attempt's age.
                    self.journal.mark_tx_sent(newest.id, self._block_number(), sent_at=time.time())
            if time.monotonic() > deadline:
                attempts = len(self.journal.transactions(sender=self.address, nonce=record.nonce))
                raise TransactionStuckError(
                    f"transaction {newest.hash} at nonce {record.nonce} has no receipt after {timeout_seconds} s "
                    f"({attempts} attempts){problem}; it stays journalled and is handled again before the next "
                    "transaction"
                )
            time.sleep(delay)
            delay = min(delay * 1.5, 0.5)
            height = self._block_number()

    # --- Reconciliation -------------------------------------------------------------------------------

    def live(self) -> list[TxRecord]:
        """Live (``intended`` or ``sent``) journalled transactions of this account, oldest first."""
        return self.journal.transactions(sender=self.address, live=True)

    def reconcile(self, wait_seconds: float = 0.0) -> ReconcileReport:
        """Brings every live journalled transaction of this account in line with the chain.

        Per nonce: a receipt settles it (``mined``/``reverted``, the other attempts ``replaced``/
        ``cancelled``); a nonce consumed by someone else drops it; an attempt found in a mempool is
        ``sent`` (and unstuck if stuck); an attempt nobody has is rebroadcast from its signed bytes if the
        validator still accepts it, else ``dropped``. Then waits up to ``wait_seconds`` for what is pending.

        Returns
        -------
        ReconcileReport
            One entry per transaction that was live, with its status before and after and the action.
        """
        before = {r.id: r for r in self.live()}
        actions: dict[int, str] = {}
        for nonce in sorted({r.nonce for r in before.values()}):
            self._reconcile_nonce(nonce, actions)
        if wait_seconds > 0:
            end = time.monotonic() + wait_seconds
            for nonce in sorted({r.nonce for r in self.live()}):
                rows = self.journal.transactions(sender=self.address, nonce=nonce, live=True)
                if not rows:
                    continue
                try:
                    self.wait(max(rows, key=lambda r: r.id), max(0.0, end - time.monotonic()))
                except TransactionFailedError as exc:
                    for r in rows:
                        actions.setdefault(r.id, str(exc))
        entries = []
        for tx_id, old in before.items():
            new = self.journal.transaction(tx_id)
            action = actions.get(tx_id) or {
                "mined": "receipt found: mined",
                "reverted": "receipt found: reverted on chain",
                "replaced": f"nonce mined by our replacement #{new.replaced_by}",
                "cancelled": f"nonce mined by our cancel #{new.replaced_by}",
                "dropped": new.note or "dropped",
                "sent": "pending in the mempool",
                "intended": "not sent",
            }[new.status]
            entries.append(ReconcileEntry(tx_id, old.hash, old.nonce, old.kind, old.status, new.status, action))
        for row in self.journal.transactions(sender=self.address) if actions else ():
            if row.id not in before and row.id in actions:  # replacements and cancels made here
                entries.append(
                    ReconcileEntry(row.id, row.hash, row.nonce, row.kind, "new", row.status, actions[row.id])
                )
        report = ReconcileReport(tuple(entries), tuple(self.live()))
        if entries:
            log.info("reconciled %d journalled transactions:\n%s", len(entries), report)
        return report

    def _reconcile_nonce(self, nonce: int, actions: dict[int, str]) -> None:
        height = self._block_number()  # before the receipts, as in :meth:`wait`
        if self.poll(nonce) is not None:
            return
        live = self.journal.transactions(sender=self.address, nonce=nonce, live=True)
        if not live:
            return
        pending = [r for r in live if self._in_mempool(r.hash)]
        for row in pending:
            if row.status == "intended":
                self.journal.mark_tx_sent(row.id, None, sent_at=row.created_at)
                actions[row.id] = "found in the mempool: sent before the restart"
        if pending:
            newest = max(self.journal.transactions(sender=self.address, nonce=nonce, live=True), key=lambda r: r.id)
            if self.is_stuck(newest, height):
                try:
                    new = self.unstick(newest)
                    actions[new.id] = f"{'replacement' if new.kind != 'cancel' else 'cancel'} of stuck #{newest.id}"
                except (ReplacementFeeCapError, TransactionStuckError, NonceConflictError) as exc:
                    actions.setdefault(newest.id, f"stuck, not replaced: {exc}")
            return
        # Nobody has it: the process died before sending, or the mempool evicted it.
        candidate = max(live, key=lambda r: (r.max_fee_per_gas, r.id))
        reason = self.validator(candidate) if (self.validator is not None and candidate.kind != "cancel") else None
        if reason is not None:
            for row in live:
                self._drop(row.id, f"never mined and no longer valid: {reason}")
            return
        try:
            self._broadcast(candidate.raw_tx)
        except _NonceTaken:
            self.poll(nonce)  # consumed meanwhile: settle it
            return
        except _Unreachable as exc:
            actions[candidate.id] = f"rebroadcast failed, left live: {exc}"
            return
        except SubmissionError as refused:
            # The node refuses the signed bytes (typically a max fee now below the base fee): sign a
            # replacement at the same nonce with current fees; if even that fails, nothing holds the nonce.
            try:
                new = self.unstick(candidate)
            except (ReplacementFeeCapError, TransactionStuckError, NonceConflictError, SubmissionError) as exc:
                for row in self.journal.transactions(sender=self.address, nonce=nonce, live=True):
                    self._drop(row.id, f"refused on rebroadcast ({refused}) and not replaced ({exc})")
                return
            actions[new.id] = f"replacement of #{candidate.id}, whose rebroadcast was refused: {refused}"
            self.poll(nonce)
            return
        self.journal.mark_tx_sent(candidate.id, self._block_number(), sent_at=time.time())
        actions[candidate.id] = "rebroadcast from its signed bytes"
        self.poll(nonce)

    def ensure_idle(self) -> None:
        """Reconciles without waiting; refuses while a transaction of the account is still live.

        Raises
        ------
        PendingTransactionError
            Naming the live transaction(s); the next tick looks again (and unsticks them when stuck).
        """
        report = self.reconcile(0.0)
        if report.still_live:
            rows = ", ".join(f"{r.hash} (nonce {r.nonce}, {r.status})" for r in report.still_live)
            raise PendingTransactionError(
                f"{len(report.still_live)} transaction(s) of {self.address} still pending: {rows}; not sending "
                "another until they are mined, replaced or dropped"
            )

    # --- Helpers --------------------------------------------------------------------------------------

    def _in_mempool(self, tx_hash: str) -> bool:
        for w3 in (self.w3, self.send_w3):
            if w3 is None:
                continue
            try:
                response = w3.provider.make_request("eth_getTransactionByHash", [tx_hash])  # type: ignore[arg-type]
            except Exception:  # noqa: BLE001 - a private relay may not answer reads
                continue
            if response.get("result") is not None:
                return True
        return False

    def _block_number(self) -> int:
        return int(self._rpc("eth_blockNumber", []), 16)

    def _rpc(self, method: str, params: list[Any]) -> Any:
        response = self.w3.provider.make_request(method, params)  # type: ignore[arg-type]
        if "error" in response:
            raise SubmissionError(f"{method} failed on the node: {response['error']}")
        return response["result"]

    def _checkpoint(self, name: str, record: TxRecord) -> None:
        if self.fault_hook is not None:
            self.fault_hook(name, record)
        if os.environ.get(KILL_AT_ENV) == name:
            os.kill(os.getpid(), signal.SIGKILL)
