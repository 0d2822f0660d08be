"""Stress tests of the current portfolio: historical crash windows replayed, and hypothetical shocks.

Chain-free: weights, a covariance and a close-price history in, frozen dataclasses out.

Units as in :mod:`keeper.risk_measures`: ``weights`` (n_assets,) are the risky sleeve's fractions of NAV (the
rest is the base asset, a USD stablecoin that neither gains nor loses); losses are positive
fractions of NAV and, given ``nav_base_units`` (``int``, the base asset's smallest units, 1 USD =
1_000_000), base units rounded to the nearest unit with per-asset parts that sum exactly to the total
(:func:`keeper.risk_measures.apportion_base_units`).  ``covariance`` is annualised with 365 days a year.

Historical windows
------------------
Each window is the peak-to-trough of BTC's daily close inside the calendar month of a known crash in
``data/crypto_daily_close_binance.csv`` (the close on ``start`` is the highest close of the month
that is followed, within the month, by the lowest subsequent close on ``end``):

========================  ==========  ==========  ==========================================
name                      start       end         BTC close (USDT)
========================  ==========  ==========  ==========================================
``covid_march_2020``      2020-03-06  2020-03-12  9,131.88 -> 4,800.00 (-47.44 %)
``china_may_2021``        2021-05-08  2021-05-29  58,862.05 -> 34,605.15 (-41.21 %)
``luna_may_2022``         2022-05-04  2022-05-27  39,690.00 -> 28,629.80 (-27.87 %)
``ftx_november_2022``     2022-11-05  2022-11-21  21,299.37 -> 15,781.29 (-25.91 %)
========================  ==========  ==========  ==========================================

Replay: each asset's buy-and-hold simple return from the close on ``start`` to the close on
``end``, :math:`R_i = P_i(\\mathrm{end}) / P_i(\\mathrm{start}) - 1`, applied to today's weights:
loss :math:`= -\\sum_i w_i R_i`.  Nothing is forward-filled.  An asset without a close on either date
(e.g. SOL, first listed in August 2020, in the March 2020 window) is **proxied** by its beta to BTC:
:math:`R_i = \\beta_i R_{BTC}`, with :math:`\\beta_i = \\mathrm{cov}(r_i, r_{BTC}) /
\\mathrm{var}(r_{BTC})` estimated by OLS on every daily simple return in the file where both
assets have closes on two consecutive rows (at least ``min_beta_observations``).  The result carries
the flag ``"proxied:SOL"`` and the beta in its details.  An asset that cannot be proxied (not in the
file, too little common history, or BTC itself missing) is **uncovered**: its return is taken as 0,
its loss is 0, and the result carries ``"uncovered:SYMBOL"`` -- the total then understates the loss.
With ``proxy_missing=False`` every missing asset is reported uncovered.

Hypothetical shocks
-------------------
* ``shock_<SYMBOL>`` (one per asset) and ``shock_all``: a simple return of ``shock`` (default -50 %)
  on that asset / on all assets at once; loss :math:`= -\\text{shock}\\cdot w_i` exactly.
* ``correlations_to_one``: :math:`\\Sigma' = v v^\\top` (:math:`v` the volatilities), so
  :math:`\\sigma_p = \\sum_i w_i v_i` -- no diversification;
  ``volatilities_x3``: :math:`\\Sigma' = 9\\Sigma` (correlations unchanged);
  ``correlations_to_one_volatilities_x3``: both.  Each is reported as the parametric (Gaussian,
  zero-mean) ES at ``confidence``/``horizon_days`` under :math:`\\Sigma'` (VaR in the details), with
  Euler contributions as the per-asset losses (:func:`keeper.risk_measures.gaussian_var_es`).
"""

from __future__ import annotations

import csv
import datetime as dt
import math
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import numpy.typing as npt

from keeper.build import PROJECT_ROOT
from keeper.errors import ConfigError, InvalidPriceError
from keeper.risk_measures import (
    FloatArray,
    _check_covariance,
    _check_nav,
    _check_weights,
    apportion_base_units,
    gaussian_var_es,
    to_base_units,
)
from keeper.units import DAYS_PER_YEAR

__all__ = [
    "DEFAULT_STRESS_CSV",
    "StressWindow",
    "DEFAULT_WINDOWS",
    "CloseHistory",
    "StressResult",
    "StressReport",
    "load_close_history",
    "beta_to_proxy",
    "replay_window",
    "historical_stress",
    "price_shock",
    "hypothetical_stress",
    "run_stress_tests",
    "format_stress_report",
]

DEFAULT_STRESS_CSV = PROJECT_ROOT / "data" / "crypto_daily_close_binance.csv"
DEFAULT_PROXY_SYMBOL = "BTC"
DEFAULT_MIN_BETA_OBSERVATIONS = 60


@dataclass(frozen=True)
class StressWindow:
    """A historical window: returns from the close on ``start`` to the close on ``end`` (UTC days)."""

    name: str
    start: dt.date
    end: dt.date
    description: str = ""


DEFAULT_WINDOWS: tuple[StressWindow, ...] = (
    StressWindow("covid_march_2020", dt.date(2020, 3, 6), dt.date(2020, 3, 12),
                 "COVID crash: BTC 9,131.88 -> 4,800.00, peak-to-trough of March 2020"),
    StressWindow("china_may_2021", dt.date(2021, 5, 8), dt.date(2021, 5, 29),
                 "May 2021 crash (China mining ban): BTC 58,862.05 -> 34,605.15, peak-to-trough of May 2021"),
    StressWindow("luna_may_2022", dt.date(2022, 5, 4), dt.date(2022, 5, 27),
                 "Terra/LUNA collapse: BTC 39,690.00 -> 28,629.80, peak-to-trough of May 2022"),
    StressWindow("ftx_november_2022", dt.date(2022, 11, 5), dt.date(2022, 11, 21),
                 "FTX collapse: BTC 21,299.37 -> 15,781.29, peak-to-trough of November 2022"),
)


@dataclass(frozen=True, eq=False)
class CloseHistory:
    """Daily closes with gaps: ``closes[t, i]`` is ``symbols[i]``'s USD close on ``dates[t]``, NaN if blank.

    Attributes
    ----------
    dates : tuple of datetime.date
        Strictly increasing.
    symbols : tuple of str
    closes : FloatArray, shape (n_dates, n_symbols)
        Positive finite closes, NaN where the file has a blank cell. Read-only.
    """

    dates: tuple[dt.date, ...]
    symbols: tuple[str, ...]
    closes: FloatArray

    def row(self, date: dt.date) -> int | None:
        """Row index of ``date``, or None when the file has no row for it."""
        i = int(np.searchsorted(self._ordinals, date.toordinal()))
        return i if i < len(self.dates) and self.dates[i] == date else None

    def column(self, symbol: str) -> int | None:
        """Column index of ``symbol``, or None."""
        return self.symbols.index(symbol) if symbol in self.symbols else None

    @cached_property
    def _ordinals(self) -> npt.NDArray[np.int64]:
        return np.fromiter((d.toordinal() for d in self.dates), dtype=np.int64, count=len(self.dates))


def load_close_history(path: Path | str = DEFAULT_STRESS_CSV) -> CloseHistory:
    """Reads a close-price CSV keeping blank cells as NaN (no row dropped, nothing forward-filled).

    Parameters
    ----------
    path : path, default ``data/crypto_daily_close_binance.csv``
        ``date`` column (``YYYY-MM-DD``), then one USD close column per asset.

    Returns
    -------
    CloseHistory

    Raises
    ------
    ConfigError
        Unreadable file, no ``date`` first column, a bad or non-increasing date.
    InvalidPriceError
        A non-blank cell that is not a positive finite number.
    """
    try:
        with open(path, newline="") as handle:
            rows = [row for row in csv.reader(handle) if row]
    except OSError as exc:
        raise ConfigError(f"cannot read price file {path}: {exc}") from exc
    if not rows or rows[0][0].strip().lower() != "date":
        raise ConfigError(f"{path}: the first column must be 'date'")
    symbols = tuple(h.strip() for h in rows[0][1:])
    n = len(symbols)
    dates: list[dt.date] = []
    closes = np.full((len(rows) - 1, n), np.nan)
    for t, row in enumerate(rows[1:]):
        try:
            dates.append(dt.date.fromisoformat(row[0].strip()))
        except ValueError as exc:
            raise ConfigError(f"{path}:{t + 2}: bad date {row[0]!r}") from exc
        for i, cell in enumerate(row[1:n + 1]):
            cell = cell.strip()
            if cell:
                try:
                    value = float(cell)
                except ValueError as exc:
                    raise InvalidPriceError(f"{path}:{t + 2}: non-numeric close {cell!r} for {symbols[i]}") \
                        from exc
                if not (math.isfinite(value) and value > 0.0):
                    raise InvalidPriceError(
                        f"{path}:{t + 2}: close {cell!r} for {symbols[i]} must be positive and finite"
                    )
                closes[t, i] = value
    if any(b <= a for a, b in zip(dates, dates[1:])):
        raise ConfigError(f"{path}: dates must be strictly increasing")
    closes.setflags(write=False)
    return CloseHistory(tuple(dates), symbols, closes)


@dataclass(frozen=True, eq=False)
class StressResult:
    """One stress scenario applied to the current portfolio.

    Attributes
    ----------
    name : str
        E.g. ``"covid_march_2020"``, ``"shock_BTC"``, ``"volatilities_x3"``.
    kind : str
        ``"historical"``, ``"price_shock"`` or ``"parametric"``.
    symbols : tuple of str
        Aligned with the arrays.
    asset_returns : FloatArray, shape (n_assets,), or None
        Simple return applied to each asset (None for parametric scenarios). Read-only.
    asset_losses : FloatArray, shape (n_assets,)
        Per-asset loss, fraction of NAV (positive = loss; a parametric ES contribution). Read-only.
    total_loss : float
        Sum of ``asset_losses`` (the portfolio ES for parametric scenarios), fraction of NAV.
    nav_base_units : int or None
    asset_losses_base_units : tuple of int, or None
        Per-asset losses in base units, summing exactly to ``total_loss_base_units``.
    total_loss_base_units : int or None
        ``total_loss * NAV``, nearest base unit.
    flags : tuple of str
        ``"proxied:SYMBOL"``, ``"uncovered:SYMBOL"``, ...
    details : mapping
        JSON-able extras: window dates, BTC return, betas, VaR/ES, stressed volatility.
    """

    name: str
    kind: str
    symbols: tuple[str, ...]
    asset_returns: FloatArray | None
    asset_losses: FloatArray
    total_loss: float
    nav_base_units: int | None = None
    asset_losses_base_units: tuple[int, ...] | None = None
    total_loss_base_units: int | None = None
    flags: tuple[str, ...] = ()
    details: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict."""
        return {
            "name": self.name,
            "kind": self.kind,
            "asset_returns": None if self.asset_returns is None
            else dict(zip(self.symbols, map(float, self.asset_returns))),
            "asset_losses": dict(zip(self.symbols, map(float, self.asset_losses))),
            "total_loss": float(self.total_loss),
            "nav_base_units": self.nav_base_units,
            "asset_losses_base_units": None if self.asset_losses_base_units is None
            else dict(zip(self.symbols, self.asset_losses_base_units)),
            "total_loss_base_units": self.total_loss_base_units,
            "flags": list(self.flags),
            "details": dict(self.details),
        }


@dataclass(frozen=True, eq=False)
class StressReport:
    """All stress results for one portfolio."""

    symbols: tuple[str, ...]
    weights: FloatArray
    nav_base_units: int | None
    results: tuple[StressResult, ...]

    def result(self, name: str) -> StressResult:
        """The result called ``name``.

        Raises
        ------
        ConfigError
            If there is none.
        """
        for r in self.results:
            if r.name == name:
                return r
        raise ConfigError(f"no stress result {name!r}; have {[r.name for r in self.results]}")

    def worst(self) -> StressResult:
        """The result with the largest total loss."""
        return max(self.results, key=lambda r: r.total_loss)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict."""
        return {
            "symbols": list(self.symbols),
            "weights": dict(zip(self.symbols, map(float, self.weights))),
            "nav_base_units": self.nav_base_units,
            "worst": self.worst().name if self.results else None,
            "results": [r.to_dict() for r in self.results],
        }


# --------------------------------------------------------------------------- #
# Helpers
# --------------------------------------------------------------------------- #
def _freeze(a: FloatArray) -> FloatArray:
    a.setflags(write=False)
    return a


def _symbols(symbols: Sequence[str], n: int) -> tuple[str, ...]:
    names = tuple(symbols)
    if len(names) != n:
        raise ConfigError(f"{len(names)} symbols for {n} weights; pass one symbol per asset.")
    if len(set(names)) != n:
        raise ConfigError(f"symbols {list(names)} contain a duplicate.")
    return names


def _result(name: str, kind: str, symbols: tuple[str, ...], asset_returns: FloatArray | None,
            asset_losses: FloatArray, nav: int | None, flags: Sequence[str] = (),
            details: Mapping[str, Any] | None = None, total_loss: float | None = None) -> StressResult:
    total = float(asset_losses.sum()) if total_loss is None else float(total_loss)
    total_units = parts = None
    if nav is not None:
        total_units = to_base_units(total, nav)
        parts = apportion_base_units(asset_losses, total_units, nav)
    return StressResult(
        name=name,
        kind=kind,
        symbols=symbols,
        asset_returns=None if asset_returns is None else _freeze(np.array(asset_returns, dtype=np.float64)),
        asset_losses=_freeze(np.array(asset_losses, dtype=np.float64)),
        total_loss=total,
        nav_base_units=nav,
        asset_losses_base_units=parts,
        total_loss_base_units=total_units,
        flags=tuple(flags),
        details=dict(details or {}),
    )


def beta_to_proxy(history: CloseHistory, symbol: str, proxy: str = DEFAULT_PROXY_SYMBOL,
                  min_observations: int = DEFAULT_MIN_BETA_OBSERVATIONS) -> tuple[float, int] | None:
    """OLS beta of ``symbol``'s daily simple returns on ``proxy``'s, over their common history.

    .. math:: \\beta = \\frac{\\sum_t (r_t - \\bar r)(b_t - \\bar b)}{\\sum_t (b_t - \\bar b)^2}

    over the rows ``t`` where both assets have closes on rows ``t-1`` and ``t`` (consecutive rows of
    the file; a missing day in the file makes that return span it).

    Returns
    -------
    (float, int) or None
        ``(beta, n_observations)``, or None if either symbol is absent, fewer than
        ``min_observations`` common returns exist, or the proxy's returns have zero variance.
    """
    i, j = history.column(symbol), history.column(proxy)
    if i is None or j is None:
        return None
    pair = history.closes[:, [i, j]]
    ok = np.all(np.isfinite(pair[1:]) & np.isfinite(pair[:-1]), axis=1)
    if int(ok.sum()) < max(int(min_observations), 2):
        return None
    rets = pair[1:][ok] / pair[:-1][ok] - 1.0
    centred = rets - rets.mean(axis=0)
    var_b = float(centred[:, 1] @ centred[:, 1])
    if not var_b > 0.0:
        return None
    return float(centred[:, 0] @ centred[:, 1]) / var_b, int(ok.sum())


def replay_window(weights: npt.ArrayLike, symbols: Sequence[str], window: StressWindow,
                  history: CloseHistory, *, nav_base_units: int | None = None,
                  proxy_symbol: str = DEFAULT_PROXY_SYMBOL, proxy_missing: bool = True,
                  min_beta_observations: int = DEFAULT_MIN_BETA_OBSERVATIONS) -> StressResult:
    """Replays one historical window on the current portfolio (buy and hold from start to end close).

    Parameters
    ----------
    weights : array_like, shape (n_assets,)
        Risky-sleeve fractions of NAV.
    symbols : sequence of str, length n_assets
        Column names in ``history``.
    window : StressWindow
    history : CloseHistory
        Closes with gaps (:func:`load_close_history`).
    nav_base_units : int, optional
        NAV in base-asset smallest units.
    proxy_symbol : str, default "BTC"
        The asset whose window return, times each missing asset's beta, proxies the missing return.
    proxy_missing : bool, default True
        If False, missing assets are reported uncovered instead of proxied.
    min_beta_observations : int, default 60
        Fewest common daily returns for a beta.

    Returns
    -------
    StressResult
        ``kind="historical"``; flags ``"proxied:SYMBOL"`` / ``"uncovered:SYMBOL"``; details hold the
        dates, the proxy's window return and each proxied asset's beta and observation count.

    Raises
    ------
    ConfigError
        Bad weights/symbols/NAV, ``end <= start``, or a window date absent from the file.
    """
    w = _check_weights(weights)
    names = _symbols(symbols, w.size)
    nav = _check_nav(nav_base_units)
    if window.end <= window.start:
        raise ConfigError(f"window {window.name}: end {window.end} must be after start {window.start}.")
    t0, t1 = history.row(window.start), history.row(window.end)
    if t0 is None or t1 is None:
        raise ConfigError(
            f"window {window.name} ({window.start} -> {window.end}) is not covered by the price history "
            f"({history.dates[0] if history.dates else None} -> {history.dates[-1] if history.dates else None}); "
            "use a window inside the file or a longer file."
        )
    returns = np.zeros(w.size)
    flags: list[str] = []
    betas: dict[str, dict[str, float | int]] = {}
    proxy_return: float | None = None
    j = history.column(proxy_symbol)
    if j is not None and np.isfinite(history.closes[t0, j]) and np.isfinite(history.closes[t1, j]):
        proxy_return = float(history.closes[t1, j] / history.closes[t0, j] - 1.0)
    for k, symbol in enumerate(names):
        i = history.column(symbol)
        if i is not None and np.isfinite(history.closes[t0, i]) and np.isfinite(history.closes[t1, i]):
            returns[k] = history.closes[t1, i] / history.closes[t0, i] - 1.0
            continue
        fit = beta_to_proxy(history, symbol, proxy_symbol, min_beta_observations) \
            if proxy_missing and proxy_return is not None else None
        if fit is None:
            flags.append(f"uncovered:{symbol}")
            continue
        beta, n_obs = fit
        # A return below -100 % is impossible for a long position: cap the proxy at a total loss.
        returns[k] = max(beta * proxy_return, -1.0)
        flags.append(f"proxied:{symbol}")
        betas[symbol] = {"beta": beta, "n_observations": n_obs}
    details = {
        "start": window.start.isoformat(),
        "end": window.end.isoformat(),
        "description": window.description,
        "proxy_symbol": proxy_symbol,
        "proxy_return": proxy_return,
        "betas": betas,
    }
    return _result(window.name, "historical", names, returns, 0.0 - w * returns, nav, flags, details)


def historical_stress(weights: npt.ArrayLike, symbols: Sequence[str], *,
                      history: CloseHistory | None = None,
                      windows: Sequence[StressWindow] = DEFAULT_WINDOWS,
                      nav_base_units: int | None = None, proxy_symbol: str = DEFAULT_PROXY_SYMBOL,
                      proxy_missing: bool = True,
                      min_beta_observations: int = DEFAULT_MIN_BETA_OBSERVATIONS
                      ) -> tuple[StressResult, ...]:
    """:func:`replay_window` for every window (default the four crashes), history loaded once.

    ``history`` defaults to :func:`load_close_history` of ``data/crypto_daily_close_binance.csv``.
    """
    hist = load_close_history() if history is None else history
    return tuple(
        replay_window(weights, symbols, window, hist, nav_base_units=nav_base_units,
                      proxy_symbol=proxy_symbol, proxy_missing=proxy_missing,
                      min_beta_observations=min_beta_observations)
        for window in windows
    )


def price_shock(weights: npt.ArrayLike, shocks: npt.ArrayLike, name: str, *,
                symbols: Sequence[str], nav_base_units: int | None = None) -> StressResult:
    """Instantaneous simple-return shock per asset: loss :math:`= -\\sum_i w_i s_i`.

    Parameters
    ----------
    weights : array_like, shape (n_assets,)
    shocks : array_like, shape (n_assets,)
        Simple return of each asset, in [-1, inf) (-0.5 is a halving).
    name : str
    symbols : sequence of str
    nav_base_units : int, optional

    Returns
    -------
    StressResult
        ``kind="price_shock"``.

    Raises
    ------
    ConfigError
        Bad shapes or a shock below -1 or non-finite.
    """
    w = _check_weights(weights)
    names = _symbols(symbols, w.size)
    nav = _check_nav(nav_base_units)
    s = np.asarray(shocks, dtype=np.float64)
    if s.shape != w.shape or not np.all(np.isfinite(s) & (s >= -1.0)):
        raise ConfigError(
            f"shocks {s.tolist()} must be {w.size} finite simple returns >= -1 aligned with weights."
        )
    return _result(name, "price_shock", names, s, 0.0 - w * s, nav)  # 0.0 - : no signed zeros


def hypothetical_stress(weights: npt.ArrayLike, covariance: npt.ArrayLike, *, symbols: Sequence[str],
                        nav_base_units: int | None = None, shock: float = -0.5,
                        volatility_multiplier: float = 3.0, confidence: float = 0.99,
                        horizon_days: int = 1, periods_per_year: int = DAYS_PER_YEAR
                        ) -> tuple[StressResult, ...]:
    """Hypothetical shocks: ``shock`` on each asset alone and on all, and stressed-covariance ES.

    Parameters
    ----------
    weights : array_like, shape (n_assets,)
    covariance : array_like, shape (n_assets, n_assets)
        Annualised covariance (365-day year) of daily simple returns, e.g. the keeper's EWMA estimate.
    symbols : sequence of str
    nav_base_units : int, optional
    shock : float, default -0.5
        Simple return of the price shocks.
    volatility_multiplier : float, default 3.0
        Factor on every volatility (the covariance is multiplied by its square).
    confidence : float, default 0.99
    horizon_days : int, default 1
        Of the parametric ES under the stressed covariances.
    periods_per_year : int, default 365

    Returns
    -------
    tuple of StressResult
        ``shock_<SYMBOL>`` for each asset, ``shock_all``, ``correlations_to_one``,
        ``volatilities_x3`` (named after the multiplier) and
        ``correlations_to_one_volatilities_x3``.

    Raises
    ------
    ConfigError
        Bad inputs; ``shock`` outside [-1, inf) or a non-positive multiplier.
    """
    w = _check_weights(weights)
    names = _symbols(symbols, w.size)
    nav = _check_nav(nav_base_units)
    cov = _check_covariance(covariance, w.size)
    k = float(volatility_multiplier)
    if not (math.isfinite(k) and k > 0.0):
        raise ConfigError(f"volatility_multiplier is {volatility_multiplier!r}; it must be finite and > 0.")
    results = [
        price_shock(w, np.where(np.arange(w.size) == i, shock, 0.0), f"shock_{symbol}",
                    symbols=names, nav_base_units=nav)
        for i, symbol in enumerate(names)
    ]
    results.append(price_shock(w, np.full(w.size, float(shock)), "shock_all", symbols=names,
                               nav_base_units=nav))
    vols = np.sqrt(np.diag(cov))
    full_corr = np.outer(vols, vols)
    multiplier_label = f"{k:g}".replace(".", "_")
    stressed = (
        ("correlations_to_one", full_corr, 1.0),
        (f"volatilities_x{multiplier_label}", cov, k),
        (f"correlations_to_one_volatilities_x{multiplier_label}", full_corr, k),
    )
    for name, matrix, mult in stressed:
        measure = gaussian_var_es(w, matrix * (mult * mult), confidence, horizon_days,
                                  periods_per_year=periods_per_year)
        details = {
            "confidence": measure.confidence,
            "horizon_days": measure.horizon_days,
            "var": measure.var,
            "es": measure.es,
            "volatility_multiplier": mult,
            "portfolio_volatility_annualised": math.sqrt(max(float(w @ matrix @ w), 0.0)) * mult,
        }
        results.append(_result(name, "parametric", names, None, np.array(measure.es_contributions),
                               nav, measure.flags, details, total_loss=measure.es))
    return tuple(results)


def run_stress_tests(weights: npt.ArrayLike, symbols: Sequence[str],
                     covariance: npt.ArrayLike | None = None, *,
                     nav_base_units: int | None = None, history: CloseHistory | None = None,
                     windows: Sequence[StressWindow] = DEFAULT_WINDOWS, shock: float = -0.5,
                     volatility_multiplier: float = 3.0, confidence: float = 0.99,
                     horizon_days: int = 1, proxy_symbol: str = DEFAULT_PROXY_SYMBOL,
                     proxy_missing: bool = True) -> StressReport:
    """Historical windows, then hypothetical shocks, in one :class:`StressReport`.

    Without ``covariance`` the stressed-covariance scenarios are left out (price shocks and windows
    remain).  Parameters as for :func:`historical_stress` and :func:`hypothetical_stress`.

    Raises
    ------
    ConfigError, InvalidPriceError
        Bad inputs or an unreadable price file (missing prices are flagged in the results, not raised).
    """
    w = _check_weights(weights)
    names = _symbols(symbols, w.size)
    nav = _check_nav(nav_base_units)
    results = list(historical_stress(w, names, history=history, windows=windows, nav_base_units=nav,
                                     proxy_symbol=proxy_symbol, proxy_missing=proxy_missing))
    if covariance is not None:
        results.extend(hypothetical_stress(w, covariance, symbols=names, nav_base_units=nav, shock=shock,
                                           volatility_multiplier=volatility_multiplier,
                                           confidence=confidence, horizon_days=horizon_days))
    else:
        results.extend(price_shock(w, np.where(np.arange(w.size) == i, shock, 0.0), f"shock_{s}",
                                   symbols=names, nav_base_units=nav) for i, s in enumerate(names))
        results.append(price_shock(w, np.full(w.size, float(shock)), "shock_all", symbols=names,
                                   nav_base_units=nav))
    w.setflags(write=False)
    return StressReport(names, w, nav, tuple(results))


def format_stress_report(report: StressReport, base_decimals: int = 6) -> str:
    """Plain-text table of a :class:`StressReport`: one line per scenario, worst first marked ``*``."""
    scale = 10 ** base_decimals

    def amount(units: int | None) -> str:
        if units is None:
            return "-"
        sign = "-" if units < 0 else ""
        whole, frac = divmod(abs(units), scale)
        return f"{sign}{whole:,}.{frac:0{base_decimals}d}"

    worst = report.worst().name if report.results else None
    lines = [
        f"Stress tests (NAV {amount(report.nav_base_units)}; losses positive, fraction of NAV and base units)",
        f"  {'scenario':<42}{'loss':>10}{'loss (base)':>22}  " + "".join(f"{s:>9}" for s in report.symbols)
        + "  flags",
    ]
    for r in report.results:
        mark = "*" if r.name == worst else " "
        lines.append(
            f"{mark} {r.name:<42}{r.total_loss:>10.4%}{amount(r.total_loss_base_units):>22}  "
            + "".join(f"{x:>9.3%}" for x in r.asset_losses) + "  " + ",".join(r.flags)
        )
    return "\n".join(lines)
