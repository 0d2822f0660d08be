"""The journal's typed records (:mod:`keeper.journal` writes and reads them; no SQL here).

One frozen dataclass per kind of row: a tick of the live keeper (:class:`TickRecord`), an option-overlay step
(:class:`OverlayStepRecord`, with its :class:`SettlementRecord` items), the final record of a run
(:class:`ShutdownRecord`), a backtest day (:class:`BacktestTickRecord`), a transaction of the write-ahead log
(:class:`TxRecord`), and the records the next tick reads back (:class:`PricesRecord`, :class:`DecisionRecord`,
:class:`RebalanceRecord`). A field a record does not declare is a ``TypeError`` when it is built; every field
is normalised to its stored JSON form at construction, so a record read back equals the one written.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from typing import Any, Generic, TypeVar

import numpy as np

R = TypeVar("R")

#: Statuses of a journalled transaction. ``intended``: signed and recorded, maybe not yet sent;
#: ``sent``: accepted by a node, unmined. The others are final.
TX_LIVE = ("intended", "sent")
TX_FINAL = ("mined", "reverted", "replaced", "dropped", "cancelled")
TX_STATUSES = TX_LIVE + TX_FINAL


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "__dataclass_fields__"):
        return {k: _jsonable(getattr(value, k)) for k in value.__dataclass_fields__}
    return value


@dataclass(frozen=True)
class PricesRecord:
    """Oracle prices of the last tick that read the chain: ``symbols`` and ``prices_usd`` (USD per whole
    token, shape (n,)), at ``block_number``."""

    symbols: tuple[str, ...]
    prices_usd: np.ndarray
    block_number: int


@dataclass(frozen=True)
class DecisionRecord:
    """The last journalled policy decision: ``target_weights`` (fractions of NAV, shape (n,)) over
    ``symbols``, and the annualised ``covariance`` (n, n) it used, ``None`` if not finite or not kept."""

    tick_id: int
    symbols: tuple[str, ...]
    target_weights: np.ndarray
    covariance: np.ndarray | None


@dataclass(frozen=True)
class RebalanceRecord:
    """The last journalled rebalance: its block timestamp (Unix seconds), the symbols and the annualised
    covariance (n, n) of its decision (``None`` if not finite or not kept)."""

    block_timestamp: int
    symbols: tuple[str, ...]
    covariance: np.ndarray | None


@dataclass(frozen=True)
class TxRecord:
    """One journalled transaction. Fees in wei per gas, ``value`` in wei, times in Unix seconds.

    ``kind`` is ``"rebalance"`` or ``"cancel"`` (a 0-value self-transfer taking the nonce of a stuck
    transaction); ``replaces`` / ``replaced_by`` link the attempts at one nonce (ids of this table).
    """

    id: int
    kind: str
    status: str
    sender: str
    nonce: int
    hash: str
    raw_tx: str
    to_address: str | None
    calldata: str
    value: int
    gas_limit: int
    max_fee_per_gas: int
    max_priority_fee_per_gas: int
    epoch: int | None
    deadline: int | None
    replaces: int | None
    replaced_by: int | None
    created_at: float
    sent_at: float | None
    sent_block: int | None
    finalized_at: float | None
    block_number: int | None
    gas_used: int | None
    effective_gas_price: int | None
    note: str | None

    @property
    def live(self) -> bool:
        """Recorded and not yet final (``intended`` or ``sent``)."""
        return self.status in TX_LIVE


# --- Record kinds -------------------------------------------------------------------------------------
#
# Every row of the ``ticks`` table holds one record; its ``kind`` column says which. The record's fields
# go into the ``detail`` JSON under their own names (the ones that are also columns go to their column as
# well), so the rows read by :meth:`Journal.ticks` keep the keys earlier keepers wrote.

KIND_TICK = "tick"
KIND_OVERLAY_STEP = "overlay_step"
KIND_SHUTDOWN = "shutdown"
KIND_BACKTEST = "backtest"
RECORD_KINDS = (KIND_TICK, KIND_OVERLAY_STEP, KIND_SHUTDOWN, KIND_BACKTEST)

#: Status of the final record of a run (:meth:`Journal.record_shutdown`).
SHUTDOWN_STATUS = "shutdown"
#: Prefix of the stored status of an overlay step (``overlay_traded``, ``overlay_skipped``, ``overlay_error``).
OVERLAY_STATUS_PREFIX = "overlay_"

TICK_COLUMNS = ("block_number", "block_timestamp", "epoch", "tx_hash", "gas_used", "effective_gas_price",
                 "nav_before", "nav_after")


def _plain(value: Any) -> Any:
    """``value`` as the journal stores and reads it back: JSON (tuples as lists, numpy values and
    dataclasses as their plain equivalents, anything else JSON cannot hold as its ``str``)."""
    return None if value is None else json.loads(json.dumps(_jsonable(value), default=str))


def _optional(kind: type, value: Any) -> Any:
    return None if value is None else kind(value)


class _Record:
    """Shared machinery of the record kinds (frozen dataclasses with keyword-only fields).

    Subclasses name their scalar fields in ``_INT`` / ``_FLOAT`` / ``_BOOL`` / ``_STR``; every other field
    but ``status`` and ``reason`` is normalised to its stored JSON form at construction (:func:`_plain`), so a
    record read back from the journal equals the one written.
    """

    _INT: tuple[str, ...] = ()
    _FLOAT: tuple[str, ...] = ()
    _BOOL: tuple[str, ...] = ()
    _STR: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if f.name in ("status", "reason") or f.name in self._STR:
                new = _optional(str, value)
            elif f.name in self._INT:
                new = _optional(int, value)
            elif f.name in self._FLOAT:
                new = _optional(float, value)
            elif f.name in self._BOOL:
                new = bool(value)
            elif f.name == "symbols":
                new = tuple(str(s) for s in (value or ()))
            elif f.name == "settlements":
                new = tuple(s if isinstance(s, SettlementRecord) else SettlementRecord.of(s) for s in (value or ()))
            else:
                new = _plain(value)
            object.__setattr__(self, f.name, new)

    def to_detail(self) -> dict[str, Any]:
        """The ``detail`` JSON object of the row: every field but ``status`` and ``reason``."""
        return {f.name: _jsonable(getattr(self, f.name)) for f in fields(self)  # type: ignore[arg-type]
                if f.name not in ("status", "reason")}

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Any:
        """The record of a decoded ``ticks`` row (``Journal._tick_rows``): fields from the detail, else
        from the column of that name; detail keys that are not fields (rows of older keepers) are ignored."""
        detail = row["detail"] if isinstance(row["detail"], dict) else {}
        values: dict[str, Any] = {}
        for f in fields(cls):  # type: ignore[arg-type]
            if f.name in ("status", "reason"):
                values[f.name] = row[f.name]
            elif f.name in detail:
                values[f.name] = detail[f.name]
            elif f.name in TICK_COLUMNS and row.get(f.name) is not None:
                values[f.name] = row[f.name]
        return cls(**values)


@dataclass(frozen=True, kw_only=True)
class TickRecord(_Record):
    """One tick of the live keeper, taken or skipped (:meth:`Journal.record_tick`).

    Units: amounts (``nav_before``, ``nav_after``, the legs' ``value``) in base-asset units (the token's
    smallest unit, int); ``effective_gas_price`` in wei per gas; ``gas_used`` in gas; times in Unix seconds;
    ``drift_bps`` and ``turnover_bps`` in basis points of NAV; timings in seconds; weights and risk
    contributions are fractions.

    Attributes
    ----------
    status : str
        ``"rebalanced"``, ``"skipped"`` or ``"error"`` (see :class:`keeper.runner.TickReport`).
    reason : str or None
        Why, in words.
    reason_code : str or None
        Short label of the reason for metrics (``no_trade_needed``, ``breaker:<name>``, ``derisk``, ...).
    block_number, block_timestamp : int or None
        The block the tick read (its timestamp in Unix seconds).
    epoch : int or None
        The vault epoch the rebalance expected (``plan.expected_epoch``).
    tx_hash : str or None
        0x-hex hash of the mined rebalance.
    gas_used : int or None
        Gas of the mined rebalance.
    effective_gas_price : int or None
        Wei per gas it paid.
    nav_before, nav_after : int or None
        NAV in base-asset units before the plan and after the mined transaction.
    symbols : tuple of str
        The risk assets, in the vault's order (every per-asset list below follows it).
    prices_usd : list of float or None
        Oracle prices, USD per whole token.
    target_weights : list of float or None
        The risky sleeve's target (sums to 1).
    relative_risk_contributions_target, relative_risk_contributions_before, relative_risk_contributions_after
        Relative risk contributions (sum to 1 over the risky sleeve) of the target, of the holdings before
        the tick and after its transaction; list of float or None.
    ex_ante_volatility : float or None
        Annualised volatility of the policy's target NAV weights.
    covariance : list of list of float or None
        Annualised covariance (n, n) the decision used.
    current_weights : list of float or None
        Holdings as NAV fractions before the tick.
    drift_bps, turnover_bps : float or None
        Drift of the holdings from the target, and the plan's turnover, in bps of NAV.
    legs : list of dict or None
        The plan's swaps (:class:`keeper.planner.SwapLeg` as dicts: token units, ``value`` in base units).
    leg_results : list of dict or None
        What each leg did on chain (:class:`keeper.executor.LegResult` as dicts).
    timings : dict of str to float
        Seconds spent per phase (``total`` included).
    breakers : list of dict
        The circuit breakers that tripped (:class:`keeper.breakers.BreakerDecision` as dicts).
    derisk : bool
        The tick moved the vault to cash.
    policy, trigger, overlay : dict or None
        :meth:`keeper.policy_decision.PolicyDecision.as_dict` (a ``target_weights`` key writes the ``decisions``
        row read by :meth:`Journal.last_decision`), :meth:`keeper.triggers.TriggerDecision.as_dict`, and the
        option overlay's summary of the tick.
    """

    _INT = ("block_number", "block_timestamp", "epoch", "gas_used", "effective_gas_price", "nav_before", "nav_after")
    _FLOAT = ("ex_ante_volatility", "drift_bps", "turnover_bps")
    _BOOL = ("derisk",)
    _STR = ("reason_code", "tx_hash")

    status: str
    reason: str | None = None
    reason_code: str | None = None
    block_number: int | None = None
    block_timestamp: int | None = None
    epoch: int | None = None
    tx_hash: str | None = None
    gas_used: int | None = None
    effective_gas_price: int | None = None
    nav_before: int | None = None
    nav_after: int | None = None
    symbols: tuple[str, ...] = ()
    prices_usd: list[float] | None = None
    target_weights: list[float] | None = None
    relative_risk_contributions_target: list[float] | None = None
    relative_risk_contributions_before: list[float] | None = None
    relative_risk_contributions_after: list[float] | None = None
    ex_ante_volatility: float | None = None
    covariance: list[list[float]] | None = None
    current_weights: list[float] | None = None
    drift_bps: float | None = None
    turnover_bps: float | None = None
    legs: list[dict[str, Any]] | None = None
    leg_results: list[dict[str, Any]] | None = None
    timings: dict[str, Any] = field(default_factory=dict)
    breakers: list[dict[str, Any]] = field(default_factory=list)
    derisk: bool = False
    policy: dict[str, Any] | None = None
    trigger: dict[str, Any] | None = None
    overlay: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "timings", self.timings or {})
        object.__setattr__(self, "breakers", self.breakers or [])


@dataclass(frozen=True, kw_only=True)
class SettlementRecord:
    """An expired option series settled through ``vault.settleOption`` (one item of
    :attr:`OverlayStepRecord.settlements`; read back by :meth:`Journal.settlements`).

    ``series_id`` and ``tx_hash`` are 0x-hex; ``strike`` in the oracle's price units (as the vault stores
    it); ``expiry`` in Unix seconds; ``amount`` the contracts settled (the vault's units); ``round_id`` the
    oracle round that priced the settlement; ``payout`` in base-asset units.
    """

    series_id: str
    symbol: str
    strike: int
    expiry: int
    is_call: bool
    amount: int
    round_id: int
    payout: int
    tx_hash: str

    def __post_init__(self) -> None:
        for name in ("strike", "expiry", "amount", "round_id", "payout"):
            object.__setattr__(self, name, int(getattr(self, name)))
        object.__setattr__(self, "is_call", bool(self.is_call))

    @classmethod
    def of(cls, value: Any) -> "SettlementRecord":
        """From a mapping or a dataclass with exactly these fields (e.g. :class:`keeper.option_orders.Settlement`).

        Raises
        ------
        TypeError
            A field is missing or unknown.
        """
        if hasattr(value, "__dataclass_fields__"):
            value = {k: getattr(value, k) for k in value.__dataclass_fields__}
        if not isinstance(value, dict):
            raise TypeError(f"a settlement must be a SettlementRecord, a dataclass or a dict, not {type(value).__name__}")
        return cls(**value)


@dataclass(frozen=True, kw_only=True)
class OverlayStepRecord(_Record):
    """One step of the option overlay (:meth:`Journal.record_overlay_step`), stored with status
    ``"overlay_" + status``.

    Units: ``nav_before`` and premiums in base-asset units (int); ``gas_used`` in gas; timings in seconds;
    ``cash_scale`` and ``target_scale`` are factors in (0, 1].

    Attributes
    ----------
    status : str
        ``"traded"``, ``"skipped"`` or ``"error"`` (see :class:`keeper.option_orders.OverlayStepReport`).
    reason : str or None
        Why, in words.
    epoch : int or None
        The vault epoch the transaction expected.
    tx_hash : str or None
        0x-hex hash of the ``rebalanceWithOptions`` transaction.
    gas_used : int or None
        Its gas.
    nav_before : int or None
        NAV before the plan, base-asset units.
    hedge_decision : dict or None
        :meth:`keeper.hedging.HedgeDecision.as_dict` of the delta hedge.
    overlay_plan : dict or None
        The overlay's plan (series to buy or sell).
    greeks_before, greeks, greeks_after : dict or None
        Greeks of the book per symbol before the step, after the planned legs (the hedge decision's), and
        on chain after the transaction.
    legs : list of dict or None
        The spot swaps (:class:`keeper.planner.SwapLeg` as dicts).
    option_legs : list of dict
        The option legs sent (:class:`keeper.option_orders.OptionLeg` as dicts).
    executed : list of list
        The vault's ``OptionLegExecuted`` events ``[leg_index, is_buy, amount, premium, fair_value]``.
    settlements : tuple of SettlementRecord
        Expired series settled by this step (mappings or dataclasses with the same fields are converted).
    cash_scale, target_scale : float
        Factors (<= 1) applied to the spot and exposure targets (see ``OverlayStepReport``).
    timings : dict of str to float
        Seconds per phase.
    """

    _INT = ("epoch", "gas_used", "nav_before")
    _FLOAT = ("cash_scale", "target_scale")
    _STR = ("tx_hash",)

    status: str
    reason: str | None = None
    epoch: int | None = None
    tx_hash: str | None = None
    gas_used: int | None = None
    nav_before: int | None = None
    hedge_decision: dict[str, Any] | None = None
    overlay_plan: dict[str, Any] | None = None
    greeks_before: dict[str, Any] | None = None
    greeks: dict[str, Any] | None = None
    greeks_after: dict[str, Any] | None = None
    legs: list[dict[str, Any]] | None = None
    option_legs: list[dict[str, Any]] = field(default_factory=list)
    executed: list[list[Any]] = field(default_factory=list)
    settlements: tuple[SettlementRecord, ...] = ()
    cash_scale: float = 1.0
    target_scale: float = 1.0
    timings: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.status.startswith(OVERLAY_STATUS_PREFIX):
            raise ValueError(f"overlay step status {self.status!r}: give it without the {OVERLAY_STATUS_PREFIX!r} prefix")
        super().__post_init__()
        for name, empty in (("option_legs", []), ("executed", []), ("timings", {})):
            object.__setattr__(self, name, getattr(self, name) or empty)

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> "OverlayStepRecord":
        status = row["status"]
        row = dict(row, status=status[len(OVERLAY_STATUS_PREFIX):] if status.startswith(OVERLAY_STATUS_PREFIX) else status)
        return super().from_row(row)


@dataclass(frozen=True, kw_only=True)
class ShutdownRecord(_Record):
    """The final record of a run (:meth:`Journal.record_shutdown`): status ``"shutdown"``, reason code
    ``"shutdown"``."""

    status: str = SHUTDOWN_STATUS
    reason: str | None = None
    reason_code: str = "shutdown"
    _STR = ("reason_code",)


@dataclass(frozen=True, kw_only=True)
class BacktestTickRecord(_Record):
    """One decision day of one strategy of a backtest (:meth:`Journal.record_backtest_tick`; the backtest
    writes its own journal file, never the live keeper's).

    ``date`` is ISO ``YYYY-MM-DD``; ``turnover_bps`` in bps of NAV; ``cost`` is
    :meth:`keeper.costs.TradeCost.as_dict` (base-asset units); ``target_weights`` NAV fractions;
    ``trigger`` and ``policy`` as in :class:`TickRecord` (a policy with ``target_weights`` writes a
    ``decisions`` row).
    """

    _FLOAT = ("turnover_bps",)
    _STR = ("strategy", "date")

    status: str
    reason: str | None = None
    strategy: str
    date: str
    trigger: dict[str, Any] | None = None
    legs: list[dict[str, Any]] | None = None
    turnover_bps: float | None = None
    cost: dict[str, Any] | None = None
    target_weights: list[float] | None = None
    policy: dict[str, Any] | None = None


@dataclass(frozen=True)
class Journalled(Generic[R]):
    """A record read back from the journal: its row ``id``, when it was written (``recorded_at``, Unix
    seconds) and the ``record``."""

    id: int
    recorded_at: float
    record: R
