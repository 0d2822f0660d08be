"""Loading daily close histories from CSV (``date`` column, then one USD close column per asset)."""

from __future__ import annotations

import csv
import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import numpy.typing as npt

from keeper.build import PROJECT_ROOT
from keeper.errors import ConfigError, InvalidPriceError

DEFAULT_PRICES_CSV = PROJECT_ROOT / "data" / "crypto_daily_close_binance_aligned.csv"


@dataclass(frozen=True)
class PriceTable:
    """Daily closes: ``prices[t, i]`` is asset ``symbols[i]``'s USD close on ``dates[t]``.

    ``dropped_rows`` counts dates removed because a selected asset had no close (never forward-filled).
    """

    dates: tuple[dt.date, ...]
    symbols: tuple[str, ...]
    prices: npt.NDArray[np.float64]
    dropped_rows: int = 0

    def close_timestamp(self, t: int) -> int:
        """Unix seconds of the close of ``dates[t]`` (midnight UTC ending that day)."""
        day = self.dates[t] + dt.timedelta(days=1)
        return int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc).timestamp())

    def index_of(self, date: dt.date) -> int:
        """First row on or after ``date``."""
        return int(np.searchsorted(np.array([d.toordinal() for d in self.dates]), date.toordinal()))


def load_prices(
    path: Path = DEFAULT_PRICES_CSV,
    symbols: Sequence[str] | None = None,
    start: dt.date | None = None,
    end: dt.date | None = None,
) -> PriceTable:
    """Reads a close-price CSV, keeping ``symbols`` (all by default) between ``start`` and ``end`` inclusive.

    Rows where a kept asset has a blank cell are dropped and counted in ``dropped_rows``.

    Raises
    ------
    ConfigError
        Missing file, no ``date`` column, an unknown symbol, unsorted or duplicate dates, no rows left.
    InvalidPriceError
        A close that is not a positive finite number.
    """
    try:
        with open(path, newline="") as handle:
            rows = list(csv.reader(handle))
    except OSError as exc:
        raise ConfigError(f"cannot read price file {path}: {exc}") from exc
    if not rows or rows[0][0].strip().lower() != "date":
        raise ConfigError(f"{path}: the first column must be 'date'")
    header = [h.strip() for h in rows[0]]
    available = header[1:]
    chosen = list(symbols) if symbols else available
    unknown = [s for s in chosen if s not in available]
    if unknown:
        raise ConfigError(f"{path}: no column for {unknown}; available: {available}")
    cols = [header.index(s) for s in chosen]
    dates, values, dropped = [], [], 0
    for line_no, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        try:
            day = dt.date.fromisoformat(row[0].strip())
        except ValueError as exc:
            raise ConfigError(f"{path}:{line_no}: bad date {row[0]!r}") from exc
        if (start and day < start) or (end and day > end):
            continue
        cells = [row[c].strip() if c < len(row) else "" for c in cols]
        if any(cell == "" for cell in cells):
            dropped += 1
            continue
        try:
            closes = [float(cell) for cell in cells]
        except ValueError as exc:
            raise InvalidPriceError(f"{path}:{line_no}: non-numeric close in {cells}") from exc
        if not all(np.isfinite(c) and c > 0 for c in closes):
            raise InvalidPriceError(f"{path}:{line_no}: closes must be positive and finite, got {closes}")
        dates.append(day)
        values.append(closes)
    if not dates:
        raise ConfigError(f"{path}: no rows between {start} and {end} with all of {chosen}")
    if any(b <= a for a, b in zip(dates, dates[1:])):
        raise ConfigError(f"{path}: dates must be strictly increasing")
    return PriceTable(tuple(dates), tuple(chosen), np.array(values, dtype=np.float64), dropped)
