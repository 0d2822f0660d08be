"""Close prices for the offline replay and the demo: one CSV reader and one validation path for both.

A price file is a CSV whose first column is the bar's time and whose other columns are USD closes, one per
asset. The time column is named ``date`` (``YYYY-MM-DD``: daily bars, each labelled by its UTC day) or
``ts_utc`` / ``timestamp`` / ``time`` / ``datetime`` (ISO 8601 date-times such as ``2020-03-12T13:00:00Z``;
a time without an offset is read as UTC). A row's time is the *open* of its bar; its close is at
``time + bar_seconds`` (a daily row's close is midnight UTC ending that day).

:func:`read_price_csv` checks, each error naming the file, the row (file line) and the column:

* a byte-order mark is skipped; the header must start with a time column and name each asset once;
* every time parses, all rows use the same form (dates, or date-times), and times strictly increase
  (a duplicate or an out-of-order row is named with the row it collides with);
* the bar interval is the most common spacing of consecutive rows; every spacing must be a whole
  number of bars (a row ``k`` bars after the previous one leaves a gap of ``k − 1`` missing bars,
  reported in ``calendar_gaps``; nothing is filled in), and the same non-bar spacing eight times in a row
  means the file changes bar size (mixed bars are refused at the first such row);
* a cell is blank (no close: ``NaN``, never forward-filled) or a positive finite number;
* **outliers**, by a robust jump test per column: with :math:`r` the log return between consecutive
  present closes divided by the square root of the bars it spans, and
  :math:`s = 1.4826\\,\\mathrm{median}(|r - \\mathrm{median}(r)|)` (the MAD scaled to a normal standard
  deviation), a jump :math:`|r| > k s` with :math:`k` = :data:`JUMP_TEST_K` = 100 is refused. The
  largest real jump in the shipped files is 48.5 robust deviations (DOGE +159 % on 2021-01-28); a
  price entered in cents (x100) is 200 to 400 of them in daily crypto data, a 1e9 spike over 450. The
  test needs :data:`JUMP_TEST_MIN_RETURNS` returns in a column to estimate ``s``.

:func:`load_price_panel` (the backtest) keeps blank cells as "no close"; :func:`keeper.data.load_prices`
(the demo) reads the same file through the same function and refuses blanks in the rows it replays.
"""

from __future__ import annotations
import csv
import datetime as dt
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence
import numpy as np
import numpy.typing as npt
from keeper.build import PROJECT_ROOT
from keeper.errors import ConfigError, InvalidPriceError
from keeper.units import SECONDS_PER_DAY, SECONDS_PER_YEAR

__all__ = [
    "DEFAULT_BACKTEST_CSV",
    "HOURLY_BTC_ETH_CSV",
    "JUMP_TEST_K",
    "JUMP_TEST_MIN_RETURNS",
    "TIME_COLUMNS",
    "PriceCsv",
    "PricePanel",
    "bars_for_seconds",
    "read_price_csv",
    "load_price_panel",
]

FloatArray = npt.NDArray[np.float64]
DEFAULT_BACKTEST_CSV = PROJECT_ROOT / "data" / "crypto_daily_close_binance.csv"
#: Binance hourly closes of BTC and ETH (2017-08-17T04:00Z .. 2022-06-26T00:00Z; BTC ends 2021-03-26).
HOURLY_BTC_ETH_CSV = PROJECT_ROOT / "data" / "crypto_hourly_close_binance_btc_eth.csv"
#: Accepted names of the first column (case-insensitive): ``date`` for daily rows, the others for date-times.
TIME_COLUMNS = ("date", "ts_utc", "timestamp", "time", "datetime")
#: Robust deviations beyond which a jump is refused (module docstring).
JUMP_TEST_K = 100.0
#: Fewest returns in a column for the jump test to estimate its scale.
JUMP_TEST_MIN_RETURNS = 20
#: Scale of the MAD that makes it a standard deviation for normal data (1 / Φ⁻¹(3/4)).
MAD_TO_SIGMA = 1.4826
#: Equal non-bar spacings in a row that mean the bar size changed (the shipped DVOL file's longest run of
#: missing days with one spacing is 3 rows; a switch from hourly to daily rows gives a run at once).
MIXED_BAR_RUN = 8


def bars_for_seconds(seconds: float, bar_seconds: int) -> int:
    """Whole bars in ``seconds`` (rounded, at least 1): the row count of a span given in time."""
    return max(1, int(round(seconds / bar_seconds)))


# --------------------------------------------------------------------------- #
# Reading and validation
# --------------------------------------------------------------------------- #
@dataclass(frozen=True, eq=False)
class PriceCsv:
    """A validated price file (:func:`read_price_csv`).

    Attributes
    ----------
    path : Path
    symbols : tuple of str
        The chosen columns, in the order asked for.
    timestamps : ndarray of int64, shape (n_rows,)
        Unix seconds of each bar's open (midnight UTC of a daily row's day).
    prices : ndarray of shape (n_rows, n_symbols)
        USD closes; NaN for a blank cell.
    bar_seconds : int
        The bar interval (86,400 for daily rows).
    daily : bool
        True when the rows are dates.
    lines : tuple of int
        The file line of each row (header = line 1), for messages.
    """

    path: Path
    symbols: tuple[str, ...]
    timestamps: npt.NDArray[np.int64]
    prices: FloatArray
    bar_seconds: int
    daily: bool
    lines: tuple[int, ...]

    def where(self, row: int, symbol: str | None = None) -> str:
        """``file:line (time)[, column SYMBOL]`` of ``row`` for error messages."""
        column = f", column {symbol}" if symbol is not None else ""
        return f"{self.path}:{self.lines[row]} ({_label(int(self.timestamps[row]), self.daily)}{column})"


def _label(ts: int, daily: bool) -> str:
    moment = dt.datetime.fromtimestamp(ts, dt.timezone.utc)
    return moment.date().isoformat() if daily else moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(text: str) -> tuple[int, bool]:
    """(Unix seconds, is a plain date) of one time cell; ValueError when it is neither form."""
    if len(text) == 10:
        day = dt.date.fromisoformat(text)
        return int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc).timestamp()), True
    moment = dt.datetime.fromisoformat(text.replace("z", "Z"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.timezone.utc)
    return int(moment.timestamp()), False


def read_price_csv(path: Path, symbols: Sequence[str] | None = None) -> PriceCsv:
    """Reads and validates a close-price CSV (the checks are in the module docstring).

    Parameters
    ----------
    path : Path
    symbols : sequence of str, optional
        Columns to keep, in this order (default: every column).

    Returns
    -------
    PriceCsv

    Raises
    ------
    ConfigError
        Unreadable file, bad header, unknown or repeated column, a bad time, mixed time forms,
        duplicate or unsorted times, irregular or mixed bar spacing, fewer than two rows. The message
        names the file, the row and (where one is at fault) the column, and says what to change.
    InvalidPriceError
        A non-numeric, non-positive or non-finite close, or a jump refused by the robust jump test.
    """
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:  # utf-8-sig: a BOM is skipped
            rows = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read price file {path}: {exc}") from exc
    if not rows or not rows[0] or rows[0][0].strip().lower() not in TIME_COLUMNS:
        first = rows[0][0] if rows and rows[0] else ""
        raise ConfigError(f"{path}:1: the first column must be the bar time, named one of {list(TIME_COLUMNS)} "
                          f"(got {first!r}); then one USD close column per asset")
    header = [h.strip() for h in rows[0]]
    available = header[1:]
    repeated = sorted({h for h in available if available.count(h) > 1})
    if repeated or any(not h for h in available):
        raise ConfigError(f"{path}:1: column names must be unique and non-empty, got {available}")
    chosen = list(symbols) if symbols else available
    unknown = [s for s in chosen if s not in available]
    if unknown or not chosen or len(set(chosen)) != len(chosen):
        raise ConfigError(f"{path}: no column for {unknown or chosen}; available: {available}")
    cols = [header.index(s) for s in chosen]

    times: list[int] = []
    lines: list[int] = []
    values: list[list[float]] = []
    form: bool | None = None
    for line_no, row in enumerate(rows[1:], start=2):
        if not row or all(not cell.strip() for cell in row):
            continue
        text = row[0].strip()
        try:
            ts, is_date = _parse_time(text)
        except ValueError as exc:
            raise ConfigError(f"{path}:{line_no}, column {header[0]}: bad time {text!r} (expected YYYY-MM-DD or an "
                              "ISO 8601 date-time such as 2020-03-12T13:00:00Z)") from exc
        if form is None:
            form = is_date
        elif is_date != form:
            raise ConfigError(f"{path}:{line_no}, column {header[0]}: {text!r} is a "
                              f"{'date' if is_date else 'date-time'} but the rows above are "
                              f"{'dates' if form else 'date-times'}: use one form for every row")
        closes = []
        for symbol, c in zip(chosen, cols):
            cell = row[c].strip() if c < len(row) else ""
            if not cell:
                closes.append(math.nan)
                continue
            try:
                value = float(cell)
            except ValueError as exc:
                raise InvalidPriceError(f"{path}:{line_no} ({text}), column {symbol}: {cell!r} is not a number "
                                        "(a close is a positive USD price; leave the cell blank for no close)") from exc
            if not (math.isfinite(value) and value > 0):
                raise InvalidPriceError(f"{path}:{line_no} ({text}), column {symbol}: close {cell!r} must be positive "
                                        "and finite (leave the cell blank for no close)")
            closes.append(value)
        times.append(ts)
        lines.append(line_no)
        values.append(closes)
    if len(times) < 2:
        raise ConfigError(f"{path}: {len(times)} data row(s); at least 2 are needed to tell the bar interval")
    stamps = np.array(times, dtype=np.int64)
    steps = np.diff(stamps)
    if np.any(steps <= 0):
        k = int(np.flatnonzero(steps <= 0)[0]) + 1
        earlier = int(np.flatnonzero(stamps[:k] >= stamps[k])[0])
        what = "repeats the time of" if stamps[earlier] == stamps[k] else "comes before"
        raise ConfigError(f"{path}:{lines[k]}, column {header[0]}: time {_label(int(stamps[k]), bool(form))} {what} "
                          f"row {lines[earlier]}: times must be strictly increasing (sort the file, drop duplicates)")
    bar = _most_common(steps)
    off = steps % bar != 0
    if np.any(off):
        k = int(np.flatnonzero(off)[0]) + 1
        raise ConfigError(f"{path}:{lines[k]}, column {header[0]}: irregular bar: {int(steps[k - 1])} s after row "
                          f"{lines[k - 1]}, not a whole number of the file's {bar}-second bars; every row must fall on "
                          "the bar grid (missing bars may be left out)")
    run_start = _mixed_bar_run(steps, bar)
    if run_start is not None:
        k = run_start + 1
        raise ConfigError(f"{path}:{lines[k]}, column {header[0]}: mixed bar sizes: from this row on the rows are "
                          f"{int(steps[run_start])} s apart, the file's bar is {bar} s (the most common spacing); "
                          "give one bar size per file")
    prices = np.array(values, dtype=np.float64)
    out = PriceCsv(path, tuple(chosen), stamps, prices, int(bar), bool(form), tuple(lines))
    _jump_test(out)
    return out


def _most_common(steps: npt.NDArray[np.int64]) -> int:
    values, counts = np.unique(steps, return_counts=True)
    return int(values[int(np.argmax(counts))])


def _mixed_bar_run(steps: npt.NDArray[np.int64], bar: int) -> int | None:
    """Index of the first step of a run of ``MIXED_BAR_RUN`` equal non-bar spacings, or None."""
    run = 0
    for k in range(len(steps)):
        if steps[k] != bar and k > 0 and steps[k] == steps[k - 1]:
            run += 1
            if run + 1 >= MIXED_BAR_RUN:
                return k - run
        else:
            run = 0
    return None


def _jump_test(data: PriceCsv) -> None:
    """The robust jump test of the module docstring; raises InvalidPriceError at the first refused jump."""
    for j, symbol in enumerate(data.symbols):
        present = np.flatnonzero(np.isfinite(data.prices[:, j]))
        if present.size < JUMP_TEST_MIN_RETURNS + 1:
            continue
        p = data.prices[present, j]
        spans = np.diff(data.timestamps[present]) / data.bar_seconds
        r = np.diff(np.log(p)) / np.sqrt(spans)
        scale = MAD_TO_SIGMA * float(np.median(np.abs(r - np.median(r))))
        scale = max(scale, 1e-6)  # a column that never moves: any jump of more than 1e-4 is refused
        bad = np.flatnonzero(np.abs(r) > JUMP_TEST_K * scale)
        if bad.size:
            k = int(bad[0])
            row, before = int(present[k + 1]), int(present[k])
            raise InvalidPriceError(
                f"{data.where(row, symbol)}: close {p[k + 1]:g} after {p[k]:g} on row {data.lines[before]} is a "
                f"jump of {abs(r[k]) / scale:.0f} robust deviations (log return {r[k]:+.3g}; limit {JUMP_TEST_K:g} x "
                f"{scale:.3g}, the column's MAD-scaled deviation): check the value (units, a typo, a bad tick)"
            )


# --------------------------------------------------------------------------- #
# The backtest's panel
# --------------------------------------------------------------------------- #
class BarClock:
    """The bar arithmetic shared by the tables of closes (:class:`PricePanel`, :class:`keeper.data.PriceTable`):
    ``timestamps`` (unix seconds of each bar's open) and ``bar_seconds`` come from the class using it."""

    timestamps: Any
    bar_seconds: int

    @property
    def daily(self) -> bool:
        return self.bar_seconds == SECONDS_PER_DAY

    @property
    def periods_per_year(self) -> float:
        """Bars per 365-day year (365 for daily bars, 8,760 for hourly)."""
        return SECONDS_PER_YEAR / self.bar_seconds

    def close_timestamp(self, t: int) -> int:
        """Unix seconds of the close of bar ``t`` (its open + ``bar_seconds``; midnight UTC ending a daily bar)."""
        return int(self.timestamps[t]) + self.bar_seconds


@dataclass(frozen=True, eq=False)
class PricePanel(BarClock):
    """Closes with blanks kept: ``prices[t, i]`` is ``symbols[i]``'s USD close of bar ``t`` or NaN when the
    file has no close for it.

    ``timestamps[t]`` is the Unix second the bar opens (midnight UTC of ``dates[t]`` for daily bars; derived
    from ``dates`` when not given), ``bar_seconds`` the bar interval. ``dates[t]`` is the UTC day of the bar's
    open, ``labels[t]`` the bar's label (the date for daily bars, the UTC date-time of its open otherwise).
    ``calendar_gaps`` lists (label before, label after) each run of missing bars.
    """

    dates: tuple[dt.date, ...]
    symbols: tuple[str, ...]
    prices: FloatArray
    calendar_gaps: tuple[tuple[dt.date | dt.datetime, dt.date | dt.datetime], ...] = ()
    timestamps: npt.NDArray[np.int64] | None = None
    bar_seconds: int = SECONDS_PER_DAY
    labels: tuple[dt.date | dt.datetime, ...] = field(default=(), repr=False)

    def __post_init__(self) -> None:
        if self.timestamps is None:
            stamps = np.array([int(dt.datetime(d.year, d.month, d.day, tzinfo=dt.timezone.utc).timestamp())
                               for d in self.dates], dtype=np.int64)
            object.__setattr__(self, "timestamps", stamps)
        if not self.labels:
            # Intraday labels are naive UTC date-times (ISO 8601 without the offset in tables and JSON).
            object.__setattr__(self, "labels", self.dates if self.daily else tuple(
                dt.datetime.fromtimestamp(int(s), dt.timezone.utc).replace(tzinfo=None) for s in self.timestamps))


    def label(self, t: int) -> str:
        """ISO 8601 label of bar ``t`` (a date for daily bars)."""
        return _label(int(self.timestamps[t]), self.daily)  # type: ignore[index]

    def index_on_or_after(self, date: dt.date) -> int:
        """First bar opening on or after midnight UTC starting ``date``."""
        return int(np.searchsorted(self.timestamps, _midnight(date), "left"))

    def index_on_or_before(self, date: dt.date) -> int:
        """Last bar opening before the midnight UTC ending ``date`` (-1 when none)."""
        return int(np.searchsorted(self.timestamps, _midnight(date + dt.timedelta(days=1)), "left")) - 1

    def bars(self, days: float) -> int:
        """Whole bars in ``days`` days (at least 1)."""
        return bars_for_seconds(days * SECONDS_PER_DAY, self.bar_seconds)

    def with_prices(self, prices: FloatArray) -> "PricePanel":
        """The same times and symbols with other closes (tests perturb the future with it)."""
        return replace(self, prices=np.asarray(prices, dtype=np.float64))


def _midnight(date: dt.date) -> int:
    return int(dt.datetime(date.year, date.month, date.day, tzinfo=dt.timezone.utc).timestamp())


def load_price_panel(
    path: Path = DEFAULT_BACKTEST_CSV,
    symbols: Sequence[str] | None = None,
    end: dt.date | None = None,
) -> PricePanel:
    """Reads a close-price CSV through :func:`read_price_csv`, keeping blank cells as NaN (never forward-filled).

    Rows where every kept asset is blank are dropped. Rows after ``end`` (bars opening after the day ends)
    are ignored (the start of a backtest is chosen later, as earlier rows serve as the estimator's warm-up).

    Raises
    ------
    ConfigError
        As :func:`read_price_csv`; no row with a close up to ``end``.
    InvalidPriceError
        As :func:`read_price_csv`.
    """
    data = read_price_csv(path, symbols)
    keep = np.any(np.isfinite(data.prices), axis=1)
    if end is not None:
        keep &= data.timestamps < _midnight(end + dt.timedelta(days=1))
    if not keep.any():
        raise ConfigError(f"{path}: no row with a close for any of {list(data.symbols)} up to {end}")
    stamps = data.timestamps[keep]
    prices = data.prices[keep]
    dates = tuple(dt.datetime.fromtimestamp(int(s), dt.timezone.utc).date() for s in stamps)
    panel = PricePanel(dates, data.symbols, prices, (), stamps, data.bar_seconds)
    steps = np.diff(stamps)
    gaps = tuple((panel.labels[k], panel.labels[k + 1]) for k in np.flatnonzero(steps > data.bar_seconds))
    return replace(panel, calendar_gaps=gaps)
