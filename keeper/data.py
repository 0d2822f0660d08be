"""Close histories for the demo: the CSV of :mod:`keeper.price_panel` (one validation path with the backtest),
restricted to the bars where every chosen asset has a close.

The demo deploys every chosen asset at the start and pushes each one's close every bar, so it needs a close
of each asset on each replayed bar: rows before the last chosen asset's first close and after the first
chosen asset's last close are left out (counted in ``dropped_rows``), and a blank cell between them is an
error naming the file, row and column (nothing is dropped or forward-filled silently).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import numpy.typing as npt

from keeper.build import PROJECT_ROOT
from keeper.errors import ConfigError
from keeper.price_panel import BarClock, read_price_csv
from keeper.units import SECONDS_PER_DAY

DEFAULT_PRICES_CSV = PROJECT_ROOT / "data" / "crypto_daily_close_binance_aligned.csv"


@dataclass(frozen=True)
class PriceTable(BarClock):
    """Closes of every chosen asset on every bar: ``prices[t, i]`` is ``symbols[i]``'s USD close of bar ``t``.

    ``timestamps[t]`` is the Unix second bar ``t`` opens (midnight UTC of ``dates[t]`` for daily bars),
    ``bar_seconds`` the bar interval; ``dates[t]`` the UTC day of the bar's open. ``dropped_rows`` counts the
    rows left out before the last asset's first close and after the first asset's last close.
    """

    dates: tuple[dt.date, ...]
    symbols: tuple[str, ...]
    prices: npt.NDArray[np.float64]
    dropped_rows: int = 0
    timestamps: tuple[int, ...] = ()
    bar_seconds: int = SECONDS_PER_DAY

    def __post_init__(self) -> None:
        if not self.timestamps:
            object.__setattr__(self, "timestamps", tuple(
                int(dt.datetime(d.year, d.month, d.day, tzinfo=dt.timezone.utc).timestamp()) for d in self.dates))


    def label(self, t: int) -> str:
        """ISO 8601 label of bar ``t`` (the date for daily bars, the UTC date-time of its open otherwise)."""
        moment = dt.datetime.fromtimestamp(self.timestamps[t], dt.timezone.utc)
        return moment.date().isoformat() if self.daily else moment.strftime("%Y-%m-%dT%H:%M:%SZ")

    def index_of(self, date: dt.date) -> int:
        """First bar opening on or after midnight UTC starting ``date``."""
        midnight = int(dt.datetime(date.year, date.month, date.day, tzinfo=dt.timezone.utc).timestamp())
        return int(np.searchsorted(np.array(self.timestamps, dtype=np.int64), midnight))

    def index_after(self, date: dt.date) -> int:
        """Last bar opening before the midnight UTC ending ``date`` (-1 when none)."""
        return self.index_of(date + dt.timedelta(days=1)) - 1


def load_prices(
    path: Path = DEFAULT_PRICES_CSV,
    symbols: Sequence[str] | None = None,
    start: dt.date | None = None,
    end: dt.date | None = None,
) -> PriceTable:
    """Reads a close-price CSV (:func:`keeper.price_panel.read_price_csv`: BOM, times, bar interval, duplicates,
    order, numbers, the robust jump test), keeping ``symbols`` (all by default) on the bars opening from
    ``start`` to the end of ``end`` (inclusive days).

    Raises
    ------
    ConfigError
        As :func:`~keeper.price_panel.read_price_csv`; a blank cell of a chosen asset between the first bar
        where every chosen asset has a close and the last such bar (file, row, column, and the fix); no row
        left in the window.
    InvalidPriceError
        As :func:`~keeper.price_panel.read_price_csv`.
    """
    data = read_price_csv(path, symbols)
    present = np.isfinite(data.prices)
    if not present.any(axis=0).all():
        missing = [s for s, ok in zip(data.symbols, present.any(axis=0)) if not ok]
        raise ConfigError(f"{path}: no close at all for {missing}; drop them from the assets")
    firsts = [int(np.flatnonzero(present[:, j])[0]) for j in range(len(data.symbols))]
    lasts = [int(np.flatnonzero(present[:, j])[-1]) for j in range(len(data.symbols))]
    lo, hi = max(firsts), min(lasts)
    if lo > hi:
        raise ConfigError(f"{path}: {list(data.symbols)} never all have a close on the same row "
                          f"({data.symbols[int(np.argmax(firsts))]} starts after {data.symbols[int(np.argmin(lasts))]} "
                          "ends); choose other assets")
    inside = ~present[lo: hi + 1]
    if inside.any():
        row, col = np.argwhere(inside)[0]
        row = int(row) + lo
        symbol = data.symbols[int(col)]
        raise ConfigError(f"{data.where(row, symbol)}: blank close between {symbol}'s first and last close; the demo "
                          "needs every chosen asset's close on every bar: fill the cell from the source, or leave "
                          f"{symbol} out of the assets (nothing is forward-filled)")
    keep = np.zeros(len(data.timestamps), dtype=bool)
    keep[lo: hi + 1] = True
    dropped = int(len(keep) - keep.sum())
    if start is not None:
        keep &= data.timestamps >= _midnight(start)
    if end is not None:
        keep &= data.timestamps < _midnight(end + dt.timedelta(days=1))
    if not keep.any():
        raise ConfigError(f"{path}: no rows between {start} and {end} with all of {list(data.symbols)}")
    stamps = tuple(int(s) for s in data.timestamps[keep])
    dates = tuple(dt.datetime.fromtimestamp(s, dt.timezone.utc).date() for s in stamps)
    return PriceTable(dates, data.symbols, data.prices[keep], dropped, stamps, data.bar_seconds)


def _midnight(date: dt.date) -> int:
    return int(dt.datetime(date.year, date.month, date.day, tzinfo=dt.timezone.utc).timestamp())
