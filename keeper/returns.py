"""Prices -> simple returns (chain-free: arrays in, arrays out).

Conventions
-----------
* Arrays are ``float64``; time runs down the rows (row ``0`` is the *oldest*
  observation, row ``-1`` the *newest*), assets run across the columns.
* Returns are simple (arithmetic) returns per observation period, e.g. daily:
  :math:`r_{t,i} = p_{t,i} / p_{t-1,i} - 1` (dimensionless).

Missing observations
--------------------
A missing observation is a ``NaN`` (a blank CSV cell, an asset not yet listed,
a calendar day the feed skipped: see :func:`reindex_daily` and
:func:`simple_returns_with_missing`).  Nothing is ever forward-filled: a return
is only formed between two consecutive observed prices; the covariance
estimator's ``missing`` policy (:class:`keeper.covariance.EstimatorConfig`)
then says what happens to rows with a ``NaN``.  :func:`simple_returns`, the
keeper's, refuses any missing or invalid price.
"""

from __future__ import annotations

import datetime as dt
from typing import Sequence

import numpy as np
import numpy.typing as npt

from keeper.errors import ConfigError, InsufficientHistoryError, InvalidPriceError

__all__ = [
    "FloatArray",
    "simple_returns",
    "simple_returns_with_missing",
    "reindex_daily",
]

FloatArray = npt.NDArray[np.float64]


def _locate_first(mask: npt.NDArray[np.bool_]) -> tuple[int, int]:
    """Return the (row, column) of the first ``True`` of a 2-D mask, row-major."""
    flat = int(np.argmax(mask))
    row, col = divmod(flat, mask.shape[1])
    return row, col


def _as_2d_float(array: npt.ArrayLike, name: str) -> FloatArray:
    """Convert to a 2-D float64 array or raise ``ConfigError`` on a bad shape."""
    out = np.asarray(array, dtype=np.float64)
    if out.ndim != 2 or out.shape[1] < 1:
        raise ConfigError(
            f"{name} must be a 2-D array of shape (n_observations, n_assets) with "
            f"n_assets >= 1; got shape {out.shape}. Pass one column per asset and "
            "one row per observation (oldest first)."
        )
    return out


def simple_returns(prices: npt.ArrayLike) -> FloatArray:
    """Simple returns of a price history.

    .. math:: r_{t,i} = \\frac{p_{t,i}}{p_{t-1,i}} - 1

    Parameters
    ----------
    prices : array_like, shape (n_obs, n_assets)
        Strictly positive, finite prices; row 0 oldest.  Units are irrelevant
        (they cancel) but must be consistent within a column.

    Returns
    -------
    FloatArray, shape (n_obs - 1, n_assets)
        Dimensionless simple returns per observation period.

    Raises
    ------
    ConfigError
        If ``prices`` is not 2-D.
    InvalidPriceError
        If any price is non-finite, zero or negative (the message names the
        first offending row, column and value).  Use
        :func:`simple_returns_with_missing` for histories with gaps.
    InsufficientHistoryError
        If fewer than two price rows are given (no return can be formed).
    """
    p = _as_2d_float(prices, "prices")
    bad = ~(np.isfinite(p) & (p > 0.0))
    if bad.any():
        row, col = _locate_first(bad)
        raise InvalidPriceError(
            f"price at row {row}, column {col} is {p[row, col]!r}; prices must be "
            "finite and strictly > 0. Drop or repair that observation (check the "
            "oracle/feed for that asset) before estimating returns."
        )
    if p.shape[0] < 2:
        raise InsufficientHistoryError(
            f"got {p.shape[0]} price row(s); at least 2 are needed to form one "
            "return. Fetch a longer price history."
        )
    return p[1:] / p[:-1] - 1.0


def simple_returns_with_missing(prices: npt.ArrayLike) -> FloatArray:
    """Simple returns of a price history with gaps (``NaN`` = no observation).

    .. math:: r_{t,i} = \\frac{p_{t,i}}{p_{t-1,i}} - 1
              \\quad\\text{if both prices are observed, else } \\mathrm{NaN}

    A gap is never bridged: no return is formed across a missing price (a
    two-period return counted as one period would overstate the variance), and
    nothing is forward-filled.  One missing price therefore blanks the two
    returns around it; the estimator's ``missing`` policy then decides what to
    do with the ``NaN`` returns.

    Parameters
    ----------
    prices : array_like, shape (n_obs, n_assets)
        Prices, row 0 oldest; ``NaN`` marks a missing observation, every other
        entry must be finite and strictly positive.

    Returns
    -------
    FloatArray, shape (n_obs - 1, n_assets)
        Simple returns per period, ``NaN`` where either price is missing.

    Raises
    ------
    ConfigError
        If ``prices`` is not 2-D.
    InvalidPriceError
        If a present price is infinite, zero or negative (row, column, value).
    InsufficientHistoryError
        If fewer than two price rows are given.
    """
    p = _as_2d_float(prices, "prices")
    bad = ~np.isnan(p) & ~(np.isfinite(p) & (p > 0.0))
    if bad.any():
        row, col = _locate_first(bad)
        raise InvalidPriceError(
            f"price at row {row}, column {col} is {p[row, col]!r}; present prices must be "
            "finite and strictly > 0 (NaN marks a missing one). Repair that observation."
        )
    if p.shape[0] < 2:
        raise InsufficientHistoryError(
            f"got {p.shape[0]} price row(s); at least 2 are needed to form one "
            "return. Fetch a longer price history."
        )
    return p[1:] / p[:-1] - 1.0  # NaN propagates: a return needs both ends


def reindex_daily(
    dates: Sequence[dt.date],
    prices: npt.ArrayLike,
    start: dt.date | None = None,
    end: dt.date | None = None,
) -> tuple[tuple[dt.date, ...], FloatArray]:
    """Place a daily price history on the full calendar, ``NaN`` on missing days.

    A feed that skipped days (or a CSV without rows for them) would otherwise
    make :func:`simple_returns` treat a multi-day move as one day's return.

    Parameters
    ----------
    dates : sequence of datetime.date, length n_obs
        Strictly increasing observation dates.
    prices : array_like, shape (n_obs, n_assets)
        Prices on those dates (``NaN`` allowed).
    start, end : datetime.date, optional
        Calendar bounds (inclusive); default the first and last date.  Rows
        outside them are discarded.

    Returns
    -------
    (tuple of datetime.date, FloatArray of shape (n_days, n_assets))
        Every calendar day from ``start`` to ``end`` and the prices, ``NaN``
        where the input had no row.  Nothing is forward-filled.

    Raises
    ------
    ConfigError
        If ``prices`` is not 2-D, the lengths differ, the dates are not
        strictly increasing, or ``start > end``.
    """
    p = _as_2d_float(prices, "prices")
    if len(dates) != p.shape[0]:
        raise ConfigError(
            f"got {len(dates)} dates for {p.shape[0]} price rows; pass one date per row."
        )
    ordinals = np.array([d.toordinal() for d in dates], dtype=np.int64)
    if ordinals.size > 1 and np.any(np.diff(ordinals) <= 0):
        raise ConfigError("dates must be strictly increasing (no duplicates); sort the history first.")
    if ordinals.size == 0 and (start is None or end is None):
        raise ConfigError("an empty history needs explicit start and end dates.")
    first = start.toordinal() if start is not None else int(ordinals[0])
    last = end.toordinal() if end is not None else int(ordinals[-1])
    if first > last:
        raise ConfigError(f"start {start} is after end {end}.")
    out = np.full((last - first + 1, p.shape[1]), np.nan)
    inside = (ordinals >= first) & (ordinals <= last)
    out[ordinals[inside] - first] = p[inside]
    calendar = tuple(dt.date.fromordinal(o) for o in range(first, last + 1))
    return calendar, out
