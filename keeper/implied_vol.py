"""Implied-volatility inputs for option pricing: Deribit DVOL for BTC, a realised-vol proxy elsewhere.

Two sources, each flagged so that no one mistakes a proxy for a market quote:

* **BTC**: Deribit's DVOL index (``data/btc_dvol_daily.csv``, one row per day with a value;
  days with no row are missing). DVOL is a 30-day constant-maturity implied volatility,
  annualised, in percent; it is used as the at-the-money 30-day implied volatility,
  ``vol = DVOL / 100``. :func:`load_dvol` returns a gap-free daily calendar in which a missing day
  carries the last known value forward and is flagged in ``filled``.
* **Other underlyings** (no listed implied-volatility index): ``vol = factor x realised``, the
  30-day realised volatility of daily log returns (zero-mean, annualised with 365 days) of the
  price table's closes up to and including the day (no look-ahead), times
  :data:`REALISED_TO_IMPLIED_FACTOR`. Series built this way have ``derived = True``.

The factor is the variance-risk premium observed on BTC: the median of DVOL/100 divided by the
same 30-day realised volatility over the 1,577 days where both exist in the shipped files
(2021-03-24 → 2026-03-30) is 1.199; we use 1.2 (``tests/test_hedging.py`` recomputes it).
"""

from __future__ import annotations

import csv
import datetime as dt
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from keeper.build import PROJECT_ROOT
from keeper.data import PriceTable
from keeper.errors import ConfigError, InsufficientHistoryError, InvalidPriceError
from keeper.units import DAYS_PER_YEAR

__all__ = [
    "DEFAULT_DVOL_CSV",
    "REALISED_TO_IMPLIED_FACTOR",
    "REALISED_WINDOW_DAYS",
    "ImpliedVolSeries",
    "load_dvol",
    "realised_vol_proxy",
    "implied_vols_on",
]

FloatArray = npt.NDArray[np.float64]

DEFAULT_DVOL_CSV = PROJECT_ROOT / "data" / "btc_dvol_daily.csv"
#: Implied / realised volatility ratio for underlyings without an implied-vol index (see module doc).
REALISED_TO_IMPLIED_FACTOR = 1.2
#: Window of the realised-volatility proxy, in daily returns (matches DVOL's 30-day horizon).
REALISED_WINDOW_DAYS = 30


@dataclass(frozen=True, eq=False)
class ImpliedVolSeries:
    """A daily implied-volatility series for one underlying.

    Attributes
    ----------
    symbol : str
    dates : tuple of datetime.date
        Consecutive calendar days (no gaps).
    vols : ndarray of shape (n_days,)
        Annualised volatility as a fraction (0.55 = 55 %), at the money, 30-day horizon.
    filled : ndarray of bool, shape (n_days,)
        True where the source had no value that day and the last known value is carried forward.
    derived : bool
        True when the series is a proxy computed from realised volatility, not a market quote.
    source : str
        ``"deribit_dvol"`` or ``"realised_30d_x1.2"`` (window and factor spelled out).
    """

    symbol: str
    dates: tuple[dt.date, ...]
    vols: FloatArray
    filled: npt.NDArray[np.bool_]
    derived: bool
    source: str

    def on(self, day: dt.date) -> tuple[float, bool]:
        """Volatility on ``day`` and whether it is carried forward (from a gap, or past the last day).

        Raises
        ------
        InsufficientHistoryError
            ``day`` is before the first day of the series.
        """
        if day < self.dates[0]:
            raise InsufficientHistoryError(
                f"{self.symbol} implied vol ({self.source}) starts on {self.dates[0]}, no value for {day}; "
                "start the replay later or use the realised-vol proxy."
            )
        i = (day - self.dates[0]).days
        if i >= len(self.dates):
            return float(self.vols[-1]), True
        return float(self.vols[i]), bool(self.filled[i])


def load_dvol(
    path: Path = DEFAULT_DVOL_CSV,
    start: dt.date | None = None,
    end: dt.date | None = None,
    symbol: str = "BTC",
) -> ImpliedVolSeries:
    """Reads a DVOL CSV (``date,<NAME>`` in percent) into a gap-free daily series of DVOL/100.

    Rows outside ``[start, end]`` are ignored; the calendar runs from the first to the last row
    kept, and each day without a row takes the previous day's value with ``filled`` True.

    Raises
    ------
    ConfigError
        Unreadable file, a header not starting with ``date``, a bad date, dates not strictly
        increasing, or no row in range.
    InvalidPriceError
        A value that is not a positive finite number.
    """
    try:
        with open(path, newline="") as handle:
            rows = list(csv.reader(handle))
    except OSError as exc:
        raise ConfigError(f"cannot read DVOL file {path}: {exc}; pass the path of data/btc_dvol_daily.csv") from exc
    if not rows or len(rows[0]) < 2 or rows[0][0].strip().lower() != "date":
        raise ConfigError(f"{path}: expected a header 'date,<DVOL column>', got {rows[:1]}")
    days: list[dt.date] = []
    values: list[float] = []
    for line_no, row in enumerate(rows[1:], start=2):
        if not row or not row[0].strip():
            continue
        try:
            day = dt.date.fromisoformat(row[0].strip())
        except ValueError as exc:
            raise ConfigError(f"{path}:{line_no}: bad date {row[0]!r}; expected YYYY-MM-DD") from exc
        if (start and day < start) or (end and day > end):
            continue
        cell = row[1].strip() if len(row) > 1 else ""
        if cell == "":
            continue  # a blank cell is a missing day, like a missing row
        try:
            value = float(cell)
        except ValueError as exc:
            raise InvalidPriceError(f"{path}:{line_no}: DVOL {cell!r} is not a number") from exc
        if not (math.isfinite(value) and value > 0.0):
            raise InvalidPriceError(f"{path}:{line_no}: DVOL is {value!r}; it must be positive and finite (percent)")
        if days and day <= days[-1]:
            raise ConfigError(f"{path}:{line_no}: date {day} is not after {days[-1]}; dates must strictly increase")
        days.append(day)
        values.append(value / 100.0)
    if not days:
        raise ConfigError(f"{path}: no DVOL value between {start} and {end}")
    n = (days[-1] - days[0]).days + 1
    offsets = np.array([(d - days[0]).days for d in days])
    known = np.zeros(n, dtype=bool)
    known[offsets] = True
    # Index of the last known day at or before each calendar day (forward fill).
    last = np.maximum.accumulate(np.where(known, np.arange(n), 0))
    dense = np.empty(n)
    dense[offsets] = values
    vols = dense[last]
    calendar = tuple(days[0] + dt.timedelta(days=i) for i in range(n))
    return ImpliedVolSeries(symbol, calendar, _frozen(vols), _frozen(~known), False, "deribit_dvol")


def realised_vol_proxy(
    table: PriceTable,
    symbol: str,
    window_days: int = REALISED_WINDOW_DAYS,
    factor: float = REALISED_TO_IMPLIED_FACTOR,
) -> ImpliedVolSeries:
    r"""Implied-vol proxy :math:`\text{factor}\times\sqrt{365 \cdot \tfrac1W\sum_{s=t-W+1}^{t} r_s^2}`.

    :math:`r_s = \ln(P_s/P_{s-1})` are the daily log returns of ``symbol``'s closes; the value on
    day :math:`t` uses the :math:`W` returns ending at :math:`t` (closes up to and including
    :math:`t`). Days absent from ``table`` (rows it dropped) are filled forward and flagged; the
    return across such a gap is taken as one return.

    Returns
    -------
    ImpliedVolSeries
        ``derived = True``; starts on the day of the ``window_days``-th return.

    Raises
    ------
    ConfigError
        Unknown symbol, ``window_days < 2``, ``factor`` not positive and finite.
    InsufficientHistoryError
        Fewer than ``window_days + 1`` closes.
    """
    if symbol not in table.symbols:
        raise ConfigError(f"no prices for {symbol!r}; the table has {table.symbols}")
    if window_days < 2:
        raise ConfigError(f"window_days is {window_days}; it must be >= 2 returns")
    if not (math.isfinite(factor) and factor > 0.0):
        raise ConfigError(f"factor is {factor!r}; it must be positive and finite")
    closes = table.prices[:, table.symbols.index(symbol)]
    if closes.size < window_days + 1:
        raise InsufficientHistoryError(
            f"{symbol}: {closes.size} closes, the realised-vol proxy needs {window_days + 1}; load a longer history"
        )
    squared = np.diff(np.log(closes)) ** 2
    window_sum = np.convolve(squared, np.ones(window_days), mode="valid")  # sums of W consecutive returns
    vols = factor * np.sqrt(window_sum * (DAYS_PER_YEAR / window_days))
    row_days = table.dates[window_days:]
    first, final = row_days[0], row_days[-1]
    n = (final - first).days + 1
    offsets = np.array([(d - first).days for d in row_days])
    known = np.zeros(n, dtype=bool)
    known[offsets] = True
    dense = np.empty(n)
    dense[offsets] = vols
    filled_vols = dense[np.maximum.accumulate(np.where(known, np.arange(n), 0))]
    calendar = tuple(first + dt.timedelta(days=i) for i in range(n))
    source = f"realised_{window_days}d_x{factor:g}"
    return ImpliedVolSeries(symbol, calendar, _frozen(filled_vols), _frozen(~known), True, source)


def implied_vols_on(
    day: dt.date,
    symbols: tuple[str, ...],
    table: PriceTable,
    dvol: ImpliedVolSeries | None = None,
) -> tuple[FloatArray, npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
    """Volatility per symbol on ``day``: DVOL for ``dvol.symbol`` where it covers ``day``, else the proxy.

    Returns
    -------
    vols : ndarray of shape (n_symbols,)
        Annualised, fraction.
    filled : ndarray of bool
        The value is carried forward from an earlier day.
    derived : ndarray of bool
        The value is the realised-vol proxy, not a market implied volatility.

    Raises
    ------
    InsufficientHistoryError
        ``day`` precedes both DVOL and the proxy's first day for some symbol.
    """
    vols = np.empty(len(symbols))
    filled = np.zeros(len(symbols), dtype=bool)
    derived = np.zeros(len(symbols), dtype=bool)
    for i, symbol in enumerate(symbols):
        if dvol is not None and symbol == dvol.symbol and dvol.dates[0] <= day <= dvol.dates[-1]:
            series = dvol
        else:
            series = realised_vol_proxy(table, symbol)
        vols[i], filled[i] = series.on(day)
        derived[i] = series.derived
    return vols, filled, derived


def _frozen(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a
