"""SQLite journal: one row per tick, taken or skipped, with everything that drove the decision."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import numpy as np

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


class Journal:
    """Append-only record of ticks in a SQLite file (WAL mode; safe against a crash mid-write).

    Parameters
    ----------
    path : Path
        Database file; created with its schema if absent. ``":memory:"`` for tests.
    """

    def __init__(self, path: Path | str) -> None:
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(str(path), check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.executescript(_SCHEMA)

    def record(self, status: str, reason: str | None = None, **fields: Any) -> int:
        """Appends a tick; ``fields`` matching a column go there, everything goes into ``detail`` (JSON)."""
        columns = {"block_number", "block_timestamp", "epoch", "tx_hash", "gas_used", "effective_gas_price",
                   "nav_before", "nav_after"}
        row = {k: (str(v) if k in _BIG_INT_COLUMNS and v is not None else _jsonable(v))
               for k, v in fields.items() if k in columns}
        detail = json.dumps(_jsonable(fields), default=str)
        with self.conn:
            cur = self.conn.execute(
                f"INSERT INTO ticks (recorded_at, status, reason, detail{''.join(', ' + k for k in row)}) "
                f"VALUES (?, ?, ?, ?{', ?' * len(row)})",
                (time.time(), status, reason, detail, *row.values()),
            )
        return int(cur.lastrowid or 0)

    def ticks(self, status: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        """Recorded ticks, oldest first, with ``detail`` decoded."""
        query = "SELECT * FROM ticks" + (" WHERE status = ?" if status else "") + " ORDER BY id"
        if limit is not None:
            query = f"SELECT * FROM ({query} DESC LIMIT {int(limit)}) ORDER BY id"
        cur = self.conn.execute(query, (status,) if status else ())
        names = [d[0] for d in cur.description]
        rows = [dict(zip(names, r)) for r in cur.fetchall()]
        for row in rows:
            row["detail"] = json.loads(row["detail"])
            for key in _BIG_INT_COLUMNS:
                if row[key] is not None:
                    row[key] = int(row[key])
        return rows

    def close(self) -> None:
        self.conn.close()
