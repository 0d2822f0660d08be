"""Daily closes for the offline replay: a CSV with a ``date`` column and one USD close column per asset.

Blank cells mean "no close": an asset enters the universe once it has ``lookback_days + 1`` consecutive closes;
nothing is forward-filled. Calendar gaps (days missing for every asset) are reported by the replay: the return
across a gap spans several days.
"""

from __future__ import annotations
import csv
import datetime as dt
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence
import numpy as np
import numpy.typing as npt
from keeper.build import PROJECT_ROOT
from keeper.errors import ConfigError, InvalidPriceError

__all__ = [
    "DEFAULT_BACKTEST_CSV",
    "PricePanel",
    "load_price_panel",
]

FloatArray = npt.NDArray[np.float64]
DEFAULT_BACKTEST_CSV = PROJECT_ROOT / "data" / "crypto_daily_close_binance.csv"


# --------------------------------------------------------------------------- #
# Data
# --------------------------------------------------------------------------- #
@dataclass(frozen=True, eq=False)
class PricePanel:
    """Daily closes with blanks kept: ``prices[t, i]`` is ``symbols[i]``'s USD close on ``dates[t]``
    or NaN when the file has no close for it.

    ``calendar_gaps`` lists (last date before, first date after) each run of missing calendar days.
    """

    dates: tuple[dt.date, ...]
    symbols: tuple[str, ...]
    prices: FloatArray
    calendar_gaps: tuple[tuple[dt.date, dt.date], ...] = ()

    def close_timestamp(self, t: int) -> int:
        """Unix seconds of the close of ``dates[t]`` (midnight UTC ending that day)."""
        day = self.dates[t] + dt.timedelta(days=1)
        return int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc).timestamp())

    def index_on_or_after(self, date: dt.date) -> int:
        return int(np.searchsorted(np.array([d.toordinal() for d in self.dates]), date.toordinal(), "left"))

    def index_on_or_before(self, date: dt.date) -> int:
        return int(np.searchsorted(np.array([d.toordinal() for d in self.dates]), date.toordinal(), "right")) - 1

    def with_prices(self, prices: FloatArray) -> "PricePanel":
        """The same dates and symbols with other closes (tests perturb the future with it)."""
        return replace(self, prices=np.asarray(prices, dtype=np.float64))


def load_price_panel(
    path: Path = DEFAULT_BACKTEST_CSV,
    symbols: Sequence[str] | None = None,
    end: dt.date | None = None,
) -> PricePanel:
    """Reads a close-price CSV keeping blank cells as NaN (never forward-filled).

    Rows where every kept asset is blank are dropped. Rows after ``end`` are ignored (the start of a
    backtest is chosen later, as earlier rows serve as the estimator's warm-up).

    Raises
    ------
    ConfigError
        Missing file, no ``date`` column, an unknown symbol, a bad date, unsorted or duplicate dates,
        no row left.
    InvalidPriceError
        A non-blank close that is not a positive finite number.
    """
    try:
        with open(path, newline="") as handle:
            rows = list(csv.reader(handle))
    except OSError as exc:
        raise ConfigError(f"cannot read price file {path}: {exc}") from exc
    if not rows or not rows[0] or rows[0][0].strip().lower() != "date":
        raise ConfigError(f"{path}: the first column must be 'date'")
    header = [h.strip() for h in rows[0]]
    available = header[1:]
    chosen = list(symbols) if symbols else available
    unknown = [s for s in chosen if s not in available]
    if unknown or not chosen:
        raise ConfigError(f"{path}: no column for {unknown or chosen}; available: {available}")
    cols = [header.index(s) for s in chosen]
    dates: list[dt.date] = []
    values: list[list[float]] = []
    for line_no, row in enumerate(rows[1:], start=2):
        if not row or not row[0].strip():
            continue
        try:
            day = dt.date.fromisoformat(row[0].strip())
        except ValueError as exc:
            raise ConfigError(f"{path}:{line_no}: bad date {row[0]!r} (expected YYYY-MM-DD)") from exc
        if end and day > end:
            continue
        cells = [row[c].strip() if c < len(row) else "" for c in cols]
        if all(cell == "" for cell in cells):
            continue
        try:
            closes = [float(cell) if cell else math.nan for cell in cells]
        except ValueError as exc:
            raise InvalidPriceError(f"{path}:{line_no}: non-numeric close in {cells}") from exc
        bad = [c for c, cell in zip(closes, cells) if cell and not (math.isfinite(c) and c > 0)]
        if bad:
            raise InvalidPriceError(f"{path}:{line_no}: closes must be positive and finite, got {bad}")
        dates.append(day)
        values.append(closes)
    if not dates:
        raise ConfigError(f"{path}: no row with a close for any of {chosen} up to {end}")
    if any(b <= a for a, b in zip(dates, dates[1:])):
        raise ConfigError(f"{path}: dates must be strictly increasing")
    gaps = tuple((a, b) for a, b in zip(dates, dates[1:]) if (b - a).days > 1)
    return PricePanel(tuple(dates), tuple(chosen), np.array(values, dtype=np.float64), gaps)
