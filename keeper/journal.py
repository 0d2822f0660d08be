"""SQLite journal: one row per tick, taken or skipped, with everything that drove the decision; and a
write-ahead log of the keeper's transactions.

The journal is written through the typed records of :mod:`keeper.journal_records` only, one method per
kind: :meth:`Journal.record_tick`
(:class:`TickRecord`), :meth:`Journal.record_overlay_step` (:class:`OverlayStepRecord`, with its
:class:`SettlementRecord` items), :meth:`Journal.record_shutdown` (:class:`ShutdownRecord`),
:meth:`Journal.record_backtest_tick` (:class:`BacktestTickRecord`) and the transaction methods
(:meth:`Journal.record_intended_tx`, ...). A field a record does not declare is a ``TypeError`` when it is
built. Each kind has its typed read (:meth:`Journal.tick_records`, :meth:`Journal.overlay_steps`,
:meth:`Journal.settlements`, :meth:`Journal.shutdowns`, :meth:`Journal.backtest_ticks`,
:meth:`Journal.transactions`, :meth:`Journal.last_decision`, ...). No SQL lives outside this module.

A transaction is recorded as ``intended`` with its signed bytes and hash *before* it is sent (the commit
is durable: WAL with ``synchronous=FULL``), so that a keeper killed at any point finds on restart every
transaction that may have reached the network and can reconcile it with the chain. The journal is bound to
one chain and vault (:meth:`Journal.bind`).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from keeper.errors import ConfigError
from keeper.journal_records import (
    KIND_BACKTEST,
    KIND_OVERLAY_STEP,
    KIND_SHUTDOWN,
    KIND_TICK,
    OVERLAY_STATUS_PREFIX,
    TICK_COLUMNS,
    TX_FINAL,
    BacktestTickRecord,
    DecisionRecord,
    Journalled,
    OverlayStepRecord,
    PricesRecord,
    RebalanceRecord,
    SettlementRecord,
    ShutdownRecord,
    TickRecord,
    TxRecord,
)

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

#: Token amounts and wei can exceed SQLite's 64-bit integers: they are stored as decimal text.
_BIG_INT_COLUMNS = {"effective_gas_price", "nav_before", "nav_after"}


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


_TX_BIG_INT_COLUMNS = ("value", "max_fee_per_gas", "max_priority_fee_per_gas", "effective_gas_price")


#: The kind of a row written before version 4 tagged them, from its status and detail.
_KIND_OF_UNTAGGED_ROW = (
    "CASE WHEN status = 'shutdown' THEN 'shutdown' "
    "WHEN substr(status, 1, 8) = 'overlay_' THEN 'overlay_step' "
    "WHEN json_valid(detail) AND json_type(detail, '$.strategy') IS NOT NULL THEN 'backtest' "
    "ELSE 'tick' END"
)

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
        detail = record.to_detail()
        columns = {k: (str(v) if k in _BIG_INT_COLUMNS and v is not None else v)
                   for k, v in detail.items() if k in TICK_COLUMNS}
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
        return [Journalled(int(row["id"]), float(row["recorded_at"]), record_type.from_row(row))
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
