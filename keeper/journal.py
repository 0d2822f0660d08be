"""SQLite journal: one row per tick, taken or skipped, with everything that drove the decision; and a
write-ahead log of the keeper's transactions.

The journal is written through typed records only, one method per kind: :meth:`Journal.record_tick`
(:class:`TickRecord`), :meth:`Journal.record_overlay_step` (:class:`OverlayStepRecord`, with its
:class:`SettlementRecord` items), :meth:`Journal.record_shutdown` (:class:`ShutdownRecord`),
:meth:`Journal.record_backtest_tick` (:class:`BacktestTickRecord`) and the transaction methods
(:meth:`Journal.record_intended_tx`, ...). A field a record does not declare is a ``TypeError`` when it is
built. Each kind has its typed read (:meth:`Journal.tick_records`, :meth:`Journal.overlay_steps`,
:meth:`Journal.settlements`, :meth:`Journal.shutdowns`, :meth:`Journal.backtest_ticks`,
:meth:`Journal.transactions`, :meth:`Journal.last_decision`, ...). No SQL lives outside this module.

A transaction is recorded as ``intended`` with its signed bytes and hash *before* it is sent (the commit
is durable: WAL with ``synchronous=FULL``), so that a keeper killed at any point finds on restart every
transaction that may have reached the network and can reconcile it with the chain.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np

from keeper.errors import ConfigError

R = TypeVar("R")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS ticks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    recorded_at REAL NOT NULL,
    status TEXT NOT NULL,
    reason TEXT,
    block_number INTEGER,
    block_timestamp INTEGER,
    epoch INTEGER,
    tx_hash TEXT,
    gas_used INTEGER,
    effective_gas_price TEXT,
    nav_before TEXT,
    nav_after TEXT,
    detail TEXT NOT NULL,
    kind TEXT
);
CREATE INDEX IF NOT EXISTS ticks_status ON ticks(status);
"""

#: Version 2 adds the write-ahead transaction log. Every statement is idempotent, so opening a journal
#: written by an older keeper (ticks only) migrates it in place and opening it again changes nothing.
_SCHEMA_V2 = """
CREATE TABLE IF NOT EXISTS transactions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    sender TEXT NOT NULL,
    nonce INTEGER NOT NULL,
    hash TEXT NOT NULL UNIQUE,
    raw_tx TEXT NOT NULL,
    to_address TEXT,
    calldata TEXT NOT NULL,
    value TEXT NOT NULL,
    gas_limit INTEGER NOT NULL,
    max_fee_per_gas TEXT NOT NULL,
    max_priority_fee_per_gas TEXT NOT NULL,
    epoch INTEGER,
    deadline INTEGER,
    replaces INTEGER REFERENCES transactions(id),
    replaced_by INTEGER REFERENCES transactions(id),
    created_at REAL NOT NULL,
    sent_at REAL,
    sent_block INTEGER,
    finalized_at REAL,
    block_number INTEGER,
    gas_used INTEGER,
    effective_gas_price TEXT,
    note TEXT
);
CREATE INDEX IF NOT EXISTS transactions_status ON transactions(status);
CREATE INDEX IF NOT EXISTS transactions_nonce ON transactions(sender, nonce);
"""
#: Version 3 adds one row per policy decision (the targets a tick decided, whatever it then did), so that
#: the next tick finds the previous target by key instead of by searching the JSON of every tick. The
#: migration fills it from the ticks already journalled.
_SCHEMA_V3 = """
CREATE TABLE IF NOT EXISTS decisions (
    tick_id INTEGER PRIMARY KEY REFERENCES ticks(id),
    symbols TEXT NOT NULL,
    target_weights TEXT NOT NULL,
    covariance TEXT
);
"""
#: Version 4 tags every row of ``ticks`` with the kind of record it holds (:data:`RECORD_KINDS`: a tick of
#: the live keeper, an option-overlay step, the final record of a run, a backtest day), written by the typed
#: ``record_*`` methods and read back by the typed reads. The migration adds the column if it is missing and
#: tags the rows of older keepers from their status and detail (:data:`_KIND_OF_UNTAGGED_ROW`).
_SCHEMA_V4 = "CREATE INDEX IF NOT EXISTS ticks_kind ON ticks(kind);"
#: Version 5 binds the journal to the chain and vault its rows belong to (:meth:`Journal.bind`): one row,
#: written by the first keeper that opens the file. A journal of an older keeper is bound on its next open.
_SCHEMA_V5 = """
CREATE TABLE IF NOT EXISTS binding (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    chain_id INTEGER NOT NULL,
    vault TEXT NOT NULL
);
"""
_SCHEMA_VERSION = 5

#: Statuses of a journalled transaction. ``intended``: signed and recorded, maybe not yet sent;
#: ``sent``: accepted by a node, unmined. The others are final.
TX_LIVE = ("intended", "sent")
TX_FINAL = ("mined", "reverted", "replaced", "dropped", "cancelled")
TX_STATUSES = TX_LIVE + TX_FINAL


#: Token amounts and wei can exceed SQLite's 64-bit integers: they are stored as decimal text.
_BIG_INT_COLUMNS = {"effective_gas_price", "nav_before", "nav_after"}


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


def _matrix(value: Any) -> np.ndarray | None:
    """A JSON matrix (``None`` entries for NaN) as a finite float array, else ``None``."""
    if not value:
        return None
    try:
        matrix = np.asarray([[np.nan if x is None else x for x in row] for row in value], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return matrix if matrix.ndim == 2 and np.all(np.isfinite(matrix)) else None


def _decision_record(row: tuple[Any, ...]) -> DecisionRecord | None:
    """A row of the ``decisions`` table (tick_id, symbols, target weights, covariance) as its record;
    ``None`` if a target weight is not finite (stored as ``null``)."""
    weights = json.loads(row[2])
    if None in weights:
        return None
    return DecisionRecord(int(row[0]), tuple(json.loads(row[1])), np.asarray(weights, dtype=np.float64),
                          _matrix(json.loads(row[3]) if row[3] else None))


def _decision_row(detail: dict[str, Any]) -> tuple[str, str, str | None] | None:
    """The ``decisions`` row (symbols, target weights, covariance as JSON) of a tick's detail, if it holds
    a policy decision with targets."""
    policy = detail.get("policy")
    if not isinstance(policy, dict) or not policy.get("target_weights"):
        return None
    symbols = policy.get("symbols") or detail.get("symbols") or []
    covariance = policy.get("covariance") or detail.get("covariance")
    return (json.dumps(list(symbols)), json.dumps(policy["target_weights"]),
            None if covariance is None else json.dumps(covariance))


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


_TX_BIG_INT_COLUMNS = ("value", "max_fee_per_gas", "max_priority_fee_per_gas", "effective_gas_price")


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

#: The kind of a row written before version 4 tagged them, from its status and detail.
_KIND_OF_UNTAGGED_ROW = (
    "CASE WHEN status = 'shutdown' THEN 'shutdown' "
    "WHEN substr(status, 1, 8) = 'overlay_' THEN 'overlay_step' "
    "WHEN json_valid(detail) AND json_type(detail, '$.strategy') IS NOT NULL THEN 'backtest' "
    "ELSE 'tick' END"
)

_TICK_COLUMNS = ("block_number", "block_timestamp", "epoch", "tx_hash", "gas_used", "effective_gas_price",
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

    def _detail(self) -> dict[str, Any]:
        """The ``detail`` JSON object of the row: every field but ``status`` and ``reason``."""
        return {f.name: _jsonable(getattr(self, f.name)) for f in fields(self)  # type: ignore[arg-type]
                if f.name not in ("status", "reason")}

    @classmethod
    def _from_row(cls, row: dict[str, Any]) -> Any:
        """The record of a decoded ``ticks`` row (:meth:`Journal._tick_rows`): fields from the detail, else
        from the column of that name; detail keys that are not fields (rows of older keepers) are ignored."""
        detail = row["detail"] if isinstance(row["detail"], dict) else {}
        values: dict[str, Any] = {}
        for f in fields(cls):  # type: ignore[arg-type]
            if f.name in ("status", "reason"):
                values[f.name] = row[f.name]
            elif f.name in detail:
                values[f.name] = detail[f.name]
            elif f.name in _TICK_COLUMNS and row.get(f.name) is not None:
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
    def _from_row(cls, row: dict[str, Any]) -> "OverlayStepRecord":
        status = row["status"]
        row = dict(row, status=status[len(OVERLAY_STATUS_PREFIX):] if status.startswith(OVERLAY_STATUS_PREFIX) else status)
        return super()._from_row(row)


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



class Journal:
    """Append-only record of ticks (and the other record kinds) in a SQLite file (WAL mode; safe against a
    crash mid-write).

    Parameters
    ----------
    path : Path
        Database file; created with its schema if absent (older files are migrated). ``":memory:"`` for tests.
    durable : bool
        Sync the write-ahead log on every commit (default; the live keeper needs it).
    """

    def __init__(self, path: Path | str, *, durable: bool = True) -> None:
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.path = str(path)
        self.conn = sqlite3.connect(str(path), check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        # A committed "intended" row must survive a power cut, not only a killed process: sync the WAL
        # on every commit (the write-ahead guarantee of the transaction log rests on it). An output file
        # rebuilt from scratch on every run (a backtest's) may skip the syncs: durable=False.
        self.conn.execute("PRAGMA synchronous=FULL" if durable else "PRAGMA synchronous=OFF")
        self.conn.executescript(_SCHEMA)
        self._lock = threading.Lock()
        self._migrate()

    @classmethod
    def snapshot(cls, path: Path | str) -> "Journal":
        """An in-memory journal holding a copy of the journal file at ``path``.

        The file is opened read-only and copied with SQLite's online backup API (a consistent
        snapshot even while a live keeper writes to it); writes go to the copy only.  An empty
        journal when ``path`` is ``":memory:"`` or does not exist.

        Raises
        ------
        ConfigError
            The file exists but is not a readable SQLite journal.
        """
        journal = cls(":memory:")
        if str(path) == ":memory:" or not Path(path).exists():
            return journal
        source = sqlite3.connect(f"file:{Path(path)}?mode=ro", uri=True)
        try:
            source.backup(journal.conn)
        except sqlite3.Error as exc:
            raise ConfigError(f"cannot read the keeper journal {path} ({exc}); check journal_path") from exc
        finally:
            source.close()
        journal.conn.executescript(_SCHEMA)  # a file written by an older version: add what it lacks
        journal._migrate()
        return journal

    @classmethod
    def read_only(cls, path: Path | str) -> "Journal":
        """The journal file at ``path`` opened read-only (``mode=ro``): never created, migrated or written,
        safe beside a live keeper. A file written by an older keeper may lack later tables
        (:meth:`has_table`); the read methods need the tables they read.

        Raises
        ------
        ConfigError
            No file at ``path``, or not a SQLite database.
        """
        if str(path) == ":memory:" or not Path(path).exists():
            raise ConfigError(f"no keeper journal at {path}; check journal_path")
        journal = cls.__new__(cls)
        journal.path = str(path)
        journal.conn = sqlite3.connect(f"file:{Path(path)}?mode=ro", uri=True, check_same_thread=False)
        journal._lock = threading.Lock()
        try:
            journal.conn.execute("SELECT name FROM sqlite_master LIMIT 1").fetchall()
        except sqlite3.Error as exc:
            journal.conn.close()
            raise ConfigError(f"cannot read the keeper journal {path} ({exc}); check journal_path") from exc
        return journal

    def has_table(self, name: str) -> bool:
        """Whether the journal has table ``name`` (``ticks``, ``transactions``, ``decisions``, ``binding``)."""
        with self._lock:
            row = self.conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)).fetchone()
        return row is not None

    def _columns(self, table: str) -> set[str]:
        """Column names of ``table`` (empty if there is no such table). The caller holds the lock."""
        return {row[1] for row in self.conn.execute(f"PRAGMA table_info({table})").fetchall()}

    # --- Typed writes: one method per record kind (the only writers of the ticks table) -------------

    def record_tick(self, record: TickRecord) -> int:
        """Appends a tick of the live keeper; returns its row id. A ``policy`` with ``target_weights`` also
        writes the ``decisions`` row (:meth:`last_decision`)."""
        return self._append(KIND_TICK, record.status, record, TickRecord)

    def record_overlay_step(self, record: OverlayStepRecord) -> int:
        """Appends an option-overlay step (status stored as ``"overlay_" + record.status``) with the
        settlements it made; returns its row id."""
        return self._append(KIND_OVERLAY_STEP, OVERLAY_STATUS_PREFIX + record.status, record, OverlayStepRecord)

    def record_shutdown(self, reason: str | None) -> int:
        """Appends the final record of a run (status ``"shutdown"``, reason code ``"shutdown"``); returns its
        row id."""
        record = ShutdownRecord(reason=reason)
        return self._append(KIND_SHUTDOWN, record.status, record, ShutdownRecord)

    def record_backtest_tick(self, record: BacktestTickRecord) -> int:
        """Appends one decision day of a backtest strategy; returns its row id."""
        return self._append(KIND_BACKTEST, record.status, record, BacktestTickRecord)

    def _append(self, kind: str, status: str, record: Any, record_type: type) -> int:
        """Writes ``record`` as one row of ``ticks``: its fields in ``detail``, those named like a column in
        the column too (big integers as decimal text), and its ``decisions`` row if it holds a policy."""
        if not isinstance(record, record_type):
            raise TypeError(f"expected a {record_type.__name__}, got {type(record).__name__}")
        detail = record._detail()
        columns = {k: (str(v) if k in _BIG_INT_COLUMNS and v is not None else v)
                   for k, v in detail.items() if k in _TICK_COLUMNS}
        text = json.dumps(detail, default=str)
        decision = _decision_row(json.loads(text)) if "policy" in detail else None
        with self._lock, self.conn:
            cur = self.conn.execute(
                f"INSERT INTO ticks (recorded_at, kind, status, reason, detail{''.join(', ' + k for k in columns)}) "
                f"VALUES (?, ?, ?, ?, ?{', ?' * len(columns)})",
                (time.time(), kind, status, record.reason, text, *columns.values()),
            )
            tick_id = int(cur.lastrowid or 0)
            if decision is not None:
                self.conn.execute("INSERT INTO decisions (tick_id, symbols, target_weights, covariance) "
                                  "VALUES (?, ?, ?, ?)", (tick_id, *decision))
        return tick_id

    # --- Typed reads ---------------------------------------------------------------------------------

    def tick_records(self, status: str | None = None, limit: int | None = None) -> list[Journalled[TickRecord]]:
        """The live keeper's ticks (of ``status`` if given; the last ``limit`` if given), oldest first."""
        return self._records(KIND_TICK, TickRecord, status, limit)

    def overlay_steps(self, limit: int | None = None) -> list[Journalled[OverlayStepRecord]]:
        """Option-overlay steps (the last ``limit`` if given), oldest first."""
        return self._records(KIND_OVERLAY_STEP, OverlayStepRecord, None, limit)

    def shutdowns(self) -> list[Journalled[ShutdownRecord]]:
        """Final records of the runs, oldest first."""
        return self._records(KIND_SHUTDOWN, ShutdownRecord, None, None)

    def backtest_ticks(self, strategy: str | None = None) -> list[Journalled[BacktestTickRecord]]:
        """Backtest decision days (of ``strategy`` if given), in the order written."""
        rows = self._records(KIND_BACKTEST, BacktestTickRecord, None, None)
        return [r for r in rows if strategy is None or r.record.strategy == strategy]

    def settlements(self) -> list[Journalled[SettlementRecord]]:
        """Every settlement the overlay steps journalled, oldest first; ``id`` and ``recorded_at`` are the
        step's."""
        return [Journalled(step.id, step.recorded_at, s) for step in self.overlay_steps() for s in step.record.settlements]

    def _records(self, kind: str, record_type: Any, status: str | None, limit: int | None) -> list[Journalled[Any]]:
        with self._lock:
            tagged = "kind" in self._columns("ticks")
        # A file opened read-only from before version 4 has no kind column: classify its rows on the fly.
        where = "kind = ?" if tagged else f"({_KIND_OF_UNTAGGED_ROW}) = ?"
        args: tuple[Any, ...] = (kind,)
        if status is not None:
            where += " AND status = ?"
            args += (status,)
        query = f"SELECT * FROM ticks WHERE {where} ORDER BY id"
        if limit is not None:
            query = f"SELECT * FROM ({query} DESC LIMIT {int(limit)}) ORDER BY id"
        return [Journalled(int(row["id"]), float(row["recorded_at"]), record_type._from_row(row))
                for row in self._tick_rows(query, args)]

    def ticks(self, status: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        """Rows of the ``ticks`` table (every record kind; ``kind`` says which), oldest first, with ``detail``
        decoded. The typed reads (:meth:`tick_records`, :meth:`overlay_steps`, ...) decode them further."""
        query = "SELECT * FROM ticks" + (" WHERE status = ?" if status else "") + " ORDER BY id"
        if limit is not None:
            query = f"SELECT * FROM ({query} DESC LIMIT {int(limit)}) ORDER BY id"
        return self._tick_rows(query, (status,) if status else ())

    def ticks_between(self, since: float, until: float) -> list[dict[str, Any]]:
        """Ticks recorded within ``[since, until]`` (Unix seconds), oldest first, ``detail`` decoded."""
        return self._tick_rows("SELECT * FROM ticks WHERE recorded_at >= ? AND recorded_at <= ? ORDER BY id",
                               (since, until))

    def _tick_rows(self, query: str, args: tuple[Any, ...]) -> list[dict[str, Any]]:
        """Rows of a ``SELECT * FROM ticks`` query as dicts: ``detail`` decoded, big integers as ``int``."""
        with self._lock:
            cur = self.conn.execute(query, args)
            names = [d[0] for d in cur.description]
            rows = [dict(zip(names, r)) for r in cur.fetchall()]
        for row in rows:
            row["detail"] = json.loads(row["detail"] or "{}")
            for key in _BIG_INT_COLUMNS:
                if row[key] is not None:
                    row[key] = int(row[key])
        return rows

    def last_prices(self) -> PricesRecord | None:
        """Oracle prices of the last tick that read the chain (the price-jump breaker's reference), or ``None``."""
        with self._lock:
            row = self.conn.execute(
                "SELECT block_number, detail FROM ticks WHERE block_number IS NOT NULL ORDER BY id DESC LIMIT 1"
            ).fetchone()
        if row is None:
            return None
        detail = json.loads(row[1])
        prices = detail.get("prices_usd")
        if not prices or None in prices:
            return None
        return PricesRecord(tuple(detail.get("symbols") or ()), np.asarray(prices, dtype=np.float64), int(row[0]))

    def last_decision(self) -> DecisionRecord | None:
        """The last journalled policy decision (its targets and covariance), or ``None``."""
        with self._lock:
            row = self.conn.execute(
                "SELECT tick_id, symbols, target_weights, covariance FROM decisions ORDER BY tick_id DESC LIMIT 1"
            ).fetchone()
        return None if row is None else _decision_record(row)

    def decisions(self) -> list[DecisionRecord]:
        """Every journalled policy decision, oldest first (targets with a NaN are skipped, as in
        :meth:`last_decision`)."""
        with self._lock:
            rows = self.conn.execute(
                "SELECT tick_id, symbols, target_weights, covariance FROM decisions ORDER BY tick_id"
            ).fetchall()
        return [d for d in map(_decision_record, rows) if d is not None]

    def schema_version(self) -> int:
        """The journal's schema version (:data:`_SCHEMA_VERSION` once opened for writing; older for a file
        opened with :meth:`read_only`)."""
        with self._lock:
            (version,) = self.conn.execute("PRAGMA user_version").fetchone()
        return int(version)

    def last_rebalance(self) -> RebalanceRecord | None:
        """The last tick with status ``rebalanced`` (time, symbols, covariance of its decision), or ``None``."""
        with self._lock:
            row = self.conn.execute(
                "SELECT block_timestamp, detail FROM ticks WHERE status = 'rebalanced' ORDER BY id DESC LIMIT 1"
            ).fetchone()
        if row is None or row[0] is None:
            return None
        detail = json.loads(row[1])
        covariance = (detail.get("policy") or {}).get("covariance") or detail.get("covariance")
        return RebalanceRecord(int(row[0]), tuple(detail.get("symbols") or ()), _matrix(covariance))

    def close(self) -> None:
        self.conn.close()

    # --- Write-ahead transaction log ------------------------------------------------------------------

    def _migrate(self) -> None:
        """Brings a journal written by an older keeper to :data:`_SCHEMA_VERSION`. Every step is idempotent
        (CREATE IF NOT EXISTS, INSERT OR IGNORE) and the version is written last, so an interrupted migration
        simply runs again."""
        with self._lock, self.conn:
            (version,) = self.conn.execute("PRAGMA user_version").fetchone()
            if version >= _SCHEMA_VERSION:
                return
            if version < 2:
                self.conn.executescript(_SCHEMA_V2)
            if version < 3:
                self.conn.executescript(_SCHEMA_V3)
                rows = self.conn.execute("SELECT id, detail FROM ticks WHERE detail LIKE '%\"policy\"%' ORDER BY id")
                for tick_id, detail in rows.fetchall():
                    decision = _decision_row(json.loads(detail))
                    if decision is not None:
                        self.conn.execute("INSERT OR IGNORE INTO decisions (tick_id, symbols, target_weights, "
                                          "covariance) VALUES (?, ?, ?, ?)", (tick_id, *decision))
            if version < 4:
                if "kind" not in self._columns("ticks"):
                    self.conn.execute("ALTER TABLE ticks ADD COLUMN kind TEXT")
                self.conn.executescript(_SCHEMA_V4)
                self.conn.execute(f"UPDATE ticks SET kind = {_KIND_OF_UNTAGGED_ROW} WHERE kind IS NULL")
            if version < 5:
                self.conn.executescript(_SCHEMA_V5)
            self.conn.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")

    def bind(self, chain_id: int, vault: str) -> None:
        """Binds the journal to chain ``chain_id`` (EIP-155) and ``vault`` (address, any case), or checks the
        binding it has. The keeper binds its journal before it reconciles or reads anything back: the
        write-ahead log's transactions, the last target and the last prices mean nothing on another chain or
        vault, and a nonce of another chain would be "reconciled" against this one.

        Raises
        ------
        ConfigError
            The journal is bound to another chain or vault; the message names both and the fix (each vault
            on each chain gets its own ``operations.journal_path``).
        """
        chain_id, vault = int(chain_id), vault.lower()
        with self._lock, self.conn:
            row = self.conn.execute("SELECT chain_id, vault FROM binding WHERE id = 1").fetchone()
            if row is None:
                self.conn.execute("INSERT INTO binding (id, chain_id, vault) VALUES (1, ?, ?)", (chain_id, vault))
                return
        if (int(row[0]), row[1]) != (chain_id, vault):
            raise ConfigError(f"the journal {self.path} holds the records of vault {row[1]} on chain id {row[0]}, "
                              f"not of vault {vault} on chain id {chain_id}: give this keeper its own "
                              "operations.journal_path (or move the old file away)")

    def binding(self) -> tuple[int, str] | None:
        """``(chain_id, vault)`` the journal is bound to (:meth:`bind`; vault lower case), or None."""
        if not self.has_table("binding"):
            return None
        row = self.conn.execute("SELECT chain_id, vault FROM binding WHERE id = 1").fetchone()
        return None if row is None else (int(row[0]), str(row[1]))

    def record_intended_tx(
        self,
        *,
        kind: str,
        sender: str,
        nonce: int,
        tx_hash: str,
        raw_tx: str,
        to_address: str | None,
        calldata: str,
        value: int,
        gas_limit: int,
        max_fee_per_gas: int,
        max_priority_fee_per_gas: int,
        epoch: int | None = None,
        deadline: int | None = None,
        replaces: int | None = None,
    ) -> TxRecord:
        """Records a signed transaction as ``intended``, committed before it is sent. Returns the row.

        ``raw_tx`` and ``calldata`` are 0x-hex; ``tx_hash`` is the keccak of the signed bytes.
        """
        with self._lock, self.conn:
            cur = self.conn.execute(
                "INSERT INTO transactions (kind, status, sender, nonce, hash, raw_tx, to_address, calldata, value, "
                "gas_limit, max_fee_per_gas, max_priority_fee_per_gas, epoch, deadline, replaces, created_at) "
                "VALUES (?, 'intended', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (kind, sender.lower(), int(nonce), tx_hash.lower(), raw_tx, to_address, calldata, str(int(value)),
                 int(gas_limit), str(int(max_fee_per_gas)), str(int(max_priority_fee_per_gas)), epoch, deadline,
                 replaces, time.time()),
            )
        return self.transaction(int(cur.lastrowid or 0))

    def mark_tx_sent(self, tx_id: int, sent_block: int | None, sent_at: float | None = None) -> TxRecord:
        """A node accepted the transaction (or already knew it): ``intended`` -> ``sent``.

        ``sent_at`` (Unix seconds, now by default) and ``sent_block`` are the start of its age; a rebroadcast
        of a ``sent`` row keeps them unless given.
        """
        with self._lock, self.conn:
            self.conn.execute(
                "UPDATE transactions SET status = 'sent', sent_at = COALESCE(?, sent_at, ?), "
                "sent_block = COALESCE(?, sent_block) WHERE id = ? AND status IN ('intended', 'sent')",
                (sent_at, time.time(), sent_block, tx_id),
            )
        return self.transaction(tx_id)

    def finalize_tx(
        self,
        tx_id: int,
        status: str,
        *,
        block_number: int | None = None,
        gas_used: int | None = None,
        effective_gas_price: int | None = None,
        replaced_by: int | None = None,
        note: str | None = None,
        allow_correction: bool = False,
    ) -> TxRecord:
        """Moves a live transaction to a final ``status`` (one of :data:`TX_FINAL`).

        A row that is already final is left as it is (reconciling twice changes nothing), except that with
        ``allow_correction`` a ``dropped`` row, an inference, becomes ``mined``/``reverted`` when its receipt
        turns up (a relay held it after all).

        Raises
        ------
        ValueError
            When ``status`` is not a final status.
        """
        if status not in TX_FINAL:
            raise ValueError(f"final transaction status must be one of {TX_FINAL}, got {status!r}")
        correctable = allow_correction and status in ("mined", "reverted")
        from_statuses = "'intended', 'sent', 'dropped'" if correctable else "'intended', 'sent'"
        with self._lock, self.conn:
            self.conn.execute(
                "UPDATE transactions SET status = ?, finalized_at = ?, block_number = ?, gas_used = ?, "
                "effective_gas_price = ?, replaced_by = ?, note = COALESCE(?, note) "
                f"WHERE id = ? AND status IN ({from_statuses})",
                (status, time.time(), block_number, gas_used,
                 None if effective_gas_price is None else str(int(effective_gas_price)), replaced_by, note, tx_id),
            )
        return self.transaction(tx_id)

    def annotate_tx(self, tx_id: int, note: str) -> None:
        """Sets the free-text ``note`` of a transaction (what was done about it)."""
        with self._lock, self.conn:
            self.conn.execute("UPDATE transactions SET note = ? WHERE id = ?", (note, tx_id))

    def transaction(self, tx_id: int) -> TxRecord:
        """The row ``tx_id``.

        Raises
        ------
        KeyError
            When there is no such row.
        """
        rows = self._tx_query("WHERE id = ?", (tx_id,))
        if not rows:
            raise KeyError(f"no journalled transaction with id {tx_id}")
        return rows[0]

    def transactions(
        self, status: str | None = None, sender: str | None = None, nonce: int | None = None, live: bool = False
    ) -> list[TxRecord]:
        """Journalled transactions, oldest first, filtered by ``status``, ``sender``, ``nonce`` or liveness."""
        clauses, args = [], []
        if status is not None:
            clauses.append("status = ?")
            args.append(status)
        if live:
            clauses.append("status IN ('intended', 'sent')")
        if sender is not None:
            clauses.append("sender = ?")
            args.append(sender.lower())
        if nonce is not None:
            clauses.append("nonce = ?")
            args.append(int(nonce))
        return self._tx_query(("WHERE " + " AND ".join(clauses)) if clauses else "", tuple(args))

    def highest_live_nonce(self, sender: str) -> int | None:
        """Largest nonce of a live transaction of ``sender``, or ``None``."""
        with self._lock:
            (value,) = self.conn.execute(
                "SELECT MAX(nonce) FROM transactions WHERE sender = ? AND status IN ('intended', 'sent')",
                (sender.lower(),),
            ).fetchone()
        return None if value is None else int(value)

    def _tx_query(self, where: str, args: tuple[Any, ...]) -> list[TxRecord]:
        with self._lock:
            cur = self.conn.execute(f"SELECT * FROM transactions {where} ORDER BY id", args)
            names = [d[0] for d in cur.description]
            rows = [dict(zip(names, r)) for r in cur.fetchall()]
        for row in rows:
            for key in _TX_BIG_INT_COLUMNS:
                if row[key] is not None:
                    row[key] = int(row[key])
        return [TxRecord(**row) for row in rows]
