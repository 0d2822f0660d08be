"""SQLite journal: one row per tick, taken or skipped, with everything that drove the decision; and a
write-ahead log of the keeper's transactions.

A transaction is recorded as ``intended`` with its signed bytes and hash *before* it is sent (the commit
is durable: WAL with ``synchronous=FULL``), so that a keeper killed at any point finds on restart every
transaction that may have reached the network and can reconcile it with the chain.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from keeper.errors import ConfigError

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
    detail TEXT NOT NULL
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
_SCHEMA_VERSION = 3

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


class Journal:
    """Append-only record of ticks in a SQLite file (WAL mode; safe against a crash mid-write).

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
        journal.conn = sqlite3.connect(f"file:{Path(path)}?mode=ro", uri=True, check_same_thread=False)
        journal._lock = threading.Lock()
        try:
            journal.conn.execute("SELECT name FROM sqlite_master LIMIT 1").fetchall()
        except sqlite3.Error as exc:
            journal.conn.close()
            raise ConfigError(f"cannot read the keeper journal {path} ({exc}); check journal_path") from exc
        return journal

    def has_table(self, name: str) -> bool:
        """Whether the journal has table ``name`` (``ticks``, ``transactions``, ``decisions``)."""
        with self._lock:
            row = self.conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)).fetchone()
        return row is not None

    def record(self, status: str, reason: str | None = None, **fields: Any) -> int:
        """Appends a tick; ``fields`` matching a column go there, everything goes into ``detail`` (JSON)."""
        columns = {"block_number", "block_timestamp", "epoch", "tx_hash", "gas_used", "effective_gas_price",
                   "nav_before", "nav_after"}
        row = {k: (str(v) if k in _BIG_INT_COLUMNS and v is not None else _jsonable(v))
               for k, v in fields.items() if k in columns}
        plain = _jsonable(fields)
        detail = json.dumps(plain, default=str)
        decision = _decision_row(json.loads(detail)) if isinstance(plain, dict) and "policy" in plain else None
        with self._lock, self.conn:
            cur = self.conn.execute(
                f"INSERT INTO ticks (recorded_at, status, reason, detail{''.join(', ' + k for k in row)}) "
                f"VALUES (?, ?, ?, ?{', ?' * len(row)})",
                (time.time(), status, reason, detail, *row.values()),
            )
            tick_id = int(cur.lastrowid or 0)
            if decision is not None:
                self.conn.execute("INSERT INTO decisions (tick_id, symbols, target_weights, covariance) "
                                  "VALUES (?, ?, ?, ?)", (tick_id, *decision))
        return tick_id

    def ticks(self, status: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        """Recorded ticks, oldest first, with ``detail`` decoded."""
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
        if row is None:
            return None
        weights = json.loads(row[2])
        if None in weights:
            return None
        return DecisionRecord(int(row[0]), tuple(json.loads(row[1])), np.asarray(weights, dtype=np.float64),
                              _matrix(json.loads(row[3]) if row[3] else None))

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
            self.conn.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")

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
