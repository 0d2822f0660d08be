"""VaR and ES by method, and the risk report of every method x confidence x horizon (chain-free).

:func:`portfolio_var_es` computes one measure by name (``"historical"``, ``"gaussian"``,
``"cornish_fisher"``); :func:`risk_report` computes the grid (default 3 methods x {0.95, 0.99} x
{1, 10} days) on inputs validated and prepared once.  Definitions, units and conventions:
:mod:`keeper.risk_measures` (historical, Gaussian) and :mod:`keeper.cornish_fisher`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import numpy.typing as npt

from keeper.cornish_fisher import _cornish_fisher, _PortfolioMoments, _portfolio_moments
from keeper.errors import ConfigError, InsufficientHistoryError
from keeper.risk_measures import (
    FloatArray,
    RiskMeasure,
    _check_confidence,
    _check_covariance,
    _check_horizon,
    _check_nav,
    _check_periods,
    _check_returns,
    _check_weights,
    _expected_returns,
    _freeze,
    _gaussian,
    _historical,
    _with_base_units,
    horizon_returns,
)
from keeper.units import DAYS_PER_YEAR

__all__ = [
    "METHODS",
    "DEFAULT_CONFIDENCES",
    "DEFAULT_HORIZONS_DAYS",
    "RiskReport",
    "portfolio_var_es",
    "risk_report",
]

METHODS = ("historical", "gaussian", "cornish_fisher")
DEFAULT_CONFIDENCES = (0.95, 0.99)
DEFAULT_HORIZONS_DAYS = (1, 10)


@dataclass(frozen=True, eq=False)
class RiskReport:
    """Every (method, confidence, horizon) combination for one portfolio.

    Attributes
    ----------
    symbols : tuple of str
        Asset names, aligned with ``weights``.
    weights : FloatArray, shape (n_assets,)
        Risky-sleeve weights, fractions of NAV. Read-only.
    nav_base_units : int or None
        NAV in base-asset smallest units.
    measures : tuple of RiskMeasure
        In the order methods x confidences x horizons.
    covariance_source : str
        ``"returns"`` (sample covariance) or ``"covariance"`` (the given annualised matrix) for the
        Gaussian measures.
    """

    symbols: tuple[str, ...]
    weights: FloatArray
    nav_base_units: int | None
    measures: tuple[RiskMeasure, ...]
    covariance_source: str = "returns"

    def measure(self, method: str, confidence: float, horizon_days: int) -> RiskMeasure:
        """The measure for one combination.

        Raises
        ------
        ConfigError
            If the report does not contain that combination.
        """
        for m in self.measures:
            if m.method == method and m.confidence == confidence and m.horizon_days == horizon_days:
                return m
        available = [(m.method, m.confidence, m.horizon_days) for m in self.measures]
        raise ConfigError(
            f"no measure for method={method!r}, confidence={confidence!r}, "
            f"horizon_days={horizon_days!r}; the report holds {available}. Ask risk_report for it."
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict of the whole report."""
        return {
            "symbols": list(self.symbols),
            "weights": dict(zip(self.symbols, map(float, self.weights))),
            "base_weight": float(1.0 - self.weights.sum()),
            "nav_base_units": self.nav_base_units,
            "covariance_source": self.covariance_source,
            "measures": [m.to_dict(self.symbols) for m in self.measures],
        }


class _Inputs:
    """Validated inputs and the weight-free quantities derived from them, each computed once."""

    def __init__(self, returns: FloatArray | None, covariance: FloatArray | None,
                 expected_returns: FloatArray, periods_per_year: int) -> None:
        self.returns = returns
        self.covariance = covariance
        self.expected_returns = expected_returns
        self.periods_per_year = periods_per_year
        self._scenarios: dict[int, FloatArray] = {}
        self._sample: tuple[FloatArray, FloatArray] | None = None
        self._centred: tuple[FloatArray, FloatArray] | None = None
        self._moments: dict[bytes, _PortfolioMoments] = {}

    def need_returns(self, method: str) -> FloatArray:
        if self.returns is None:
            raise ConfigError(f"method {method!r} needs daily returns; pass returns=(n_obs, n_assets).")
        return self.returns

    def scenarios(self, horizon: int) -> FloatArray:
        if horizon not in self._scenarios:
            self._scenarios[horizon] = horizon_returns(self.need_returns("historical"), horizon)
        return self._scenarios[horizon]

    def daily_gaussian(self) -> tuple[FloatArray, FloatArray, int]:
        """Daily covariance and mean: the given annualised ones / P, else the sample's."""
        if self.covariance is not None:
            p = self.periods_per_year
            return self.covariance / p, self.expected_returns / p, 0
        r = self.need_returns("gaussian")
        if r.shape[0] < 2:
            raise InsufficientHistoryError(
                f"{r.shape[0]} daily return(s); a sample covariance needs at least 2. Fetch more history."
            )
        if self._sample is None:
            self._sample = (np.atleast_2d(np.cov(r, rowvar=False)), r.mean(axis=0))
        return self._sample[0], self._sample[1], r.shape[0]

    def moments(self, w: FloatArray) -> _PortfolioMoments:
        if self._centred is None:
            r = self.need_returns("cornish_fisher")
            mean_vector = r.mean(axis=0)
            self._centred = (mean_vector, r - mean_vector)
        key = w.tobytes()
        if key not in self._moments:
            self._moments[key] = _portfolio_moments(w, *self._centred)
        return self._moments[key]


def _measure(w: FloatArray, method: str, confidence: float, horizon: int, data: _Inputs) -> RiskMeasure:
    if method == "historical":
        return _historical(w, data.scenarios(horizon), confidence, horizon)
    if method == "gaussian":
        cov_daily, mu_daily, n_obs = data.daily_gaussian()
        return _gaussian(w, cov_daily, mu_daily, confidence, horizon, n_obs)
    if method == "cornish_fisher":
        return _cornish_fisher(w, data.moments(w), confidence, horizon)
    raise ConfigError(f"method is {method!r}; choose one of {METHODS}.")


def _inputs(w: FloatArray, returns: npt.ArrayLike | None, covariance: npt.ArrayLike | None,
            expected_returns: npt.ArrayLike | None, periods_per_year: int) -> _Inputs:
    if returns is None and covariance is None:
        raise ConfigError("pass daily returns (n_obs, n_assets), an annualised covariance, or both.")
    r = None if returns is None else _check_returns(returns, w.size)
    cov = None if covariance is None else _check_covariance(covariance, w.size)
    return _Inputs(r, cov, _expected_returns(expected_returns, w.size), _check_periods(periods_per_year))


def portfolio_var_es(weights: npt.ArrayLike, *, method: str, confidence: float = 0.99,
                     horizon_days: int = 1, returns: npt.ArrayLike | None = None,
                     covariance: npt.ArrayLike | None = None,
                     expected_returns: npt.ArrayLike | None = None,
                     periods_per_year: int = DAYS_PER_YEAR,
                     nav_base_units: int | None = None) -> RiskMeasure:
    """VaR and ES by ``method`` (``"historical"``, ``"gaussian"``, ``"cornish_fisher"``).

    ``"gaussian"`` uses ``covariance`` (annualised, with ``expected_returns``, default zero) when it
    is given, else the sample mean and covariance of ``returns``; the other methods need ``returns``.

    Returns
    -------
    RiskMeasure

    Raises
    ------
    ConfigError
        Unknown method, missing or bad inputs.
    InvalidPriceError, InsufficientHistoryError
        As for the individual methods.
    """
    w = _check_weights(weights)
    a = _check_confidence(confidence)
    h = _check_horizon(horizon_days)
    nav = _check_nav(nav_base_units)
    data = _inputs(w, returns, covariance, expected_returns, periods_per_year)
    return _with_base_units(_measure(w, method, a, h, data), nav)


def risk_report(weights: npt.ArrayLike, returns: npt.ArrayLike | None = None, *,
                covariance: npt.ArrayLike | None = None,
                expected_returns: npt.ArrayLike | None = None,
                symbols: Sequence[str] | None = None,
                nav_base_units: int | None = None,
                methods: Sequence[str] = METHODS,
                confidences: Sequence[float] = DEFAULT_CONFIDENCES,
                horizons_days: Sequence[int] = DEFAULT_HORIZONS_DAYS,
                periods_per_year: int = DAYS_PER_YEAR) -> RiskReport:
    """VaR and ES for every method x confidence x horizon (default 3 x {0.95, 0.99} x {1, 10} days).

    Parameters
    ----------
    weights : array_like, shape (n_assets,)
        Risky-sleeve fractions of NAV.
    returns : array_like, shape (n_obs, n_assets), optional
        Daily simple returns; required for the historical and Cornish-Fisher methods.
    covariance : array_like, shape (n_assets, n_assets), optional
        Annualised covariance (e.g. the keeper's EWMA estimate) for the Gaussian method; without it
        the Gaussian method uses the sample mean and covariance of ``returns``.
    expected_returns : array_like, shape (n_assets,), optional
        Annualised means used with ``covariance``; default zero.
    symbols : sequence of str, optional
        Asset names; default ``"asset0"``, ``"asset1"``, ...
    nav_base_units : int, optional
        NAV in base-asset smallest units.
    methods, confidences, horizons_days : sequences
        The combinations to compute.
    periods_per_year : int, default 365

    Returns
    -------
    RiskReport

    Raises
    ------
    ConfigError, InvalidPriceError, InsufficientHistoryError
        As for :func:`portfolio_var_es`, for the first combination that fails.
    """
    w = _check_weights(weights)
    nav = _check_nav(nav_base_units)
    data = _inputs(w, returns, covariance, expected_returns, periods_per_year)
    names = tuple(symbols) if symbols is not None else tuple(f"asset{i}" for i in range(w.size))
    if len(names) != w.size:
        raise ConfigError(f"{len(names)} symbols for {w.size} weights; pass one symbol per asset.")
    measures = []
    for method in methods:
        for confidence in confidences:
            a = _check_confidence(confidence)
            for horizon in horizons_days:
                h = _check_horizon(horizon)
                measures.append(_with_base_units(_measure(w, method, a, h, data), nav))
    return RiskReport(
        symbols=names,
        weights=_freeze(w),
        nav_base_units=nav,
        measures=tuple(measures),
        covariance_source="covariance" if data.covariance is not None else "returns",
    )
