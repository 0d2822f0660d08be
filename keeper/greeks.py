r"""Greeks of a book: spot holdings plus European options, aggregated per underlying (chain-free, pure functions).

* :func:`portfolio_greeks`: per-underlying delta, dollar delta, gamma, vega, theta of spot holdings plus an option
  book (:class:`OptionPosition`), Black-Scholes from :mod:`keeper.options`;
* :func:`delta_adjusted_exposures`: the economic exposure per asset (spot plus option delta), fraction of NAV.

Units and conventions
---------------------
* Quantities of underlying (spot holdings, option quantities, deltas) are **float whole units**
  of the underlying token (1.5 = 1.5 BTC), not 1e18 fixed point; convert at the planner boundary.
  Option quantity is signed: positive long, negative short; one option is on one unit.
* Prices, NAV and every "dollar"/"usd" amount are in USD, the vault's base-asset units as a float
  (not 6-decimal integers).
* Times are Unix seconds; option maturities use 365-day years (:data:`keeper.options.SECONDS_PER_YEAR`).
* Volatilities are annualised fractions, one per underlying (flat across strikes: no smile);
  ``r`` is the continuously compounded USD rate; no dividend yield (crypto spot pays none).
* Greeks of the book, per underlying :math:`i` with options :math:`j` of quantity :math:`n_j`:

  - ``delta_units`` :math:`= h_i + \sum_j n_j \Delta_j` (units; spot counts 1 per unit)
  - ``dollar_delta`` :math:`= S_i \cdot` ``delta_units`` (USD per 1.00 relative move, i.e.
    the economic exposure)
  - ``gamma_units`` :math:`= \sum_j n_j\Gamma_j` (units of delta per 1 USD move of :math:`S_i`)
  - ``dollar_gamma`` :math:`= \Gamma S^2 / 100`: the USD value, at the current spot, of the change
    in delta that a 1 % rise of spot causes (:math:`\Gamma \cdot 0.01 S \cdot S`); ``gamma_units``
    is the same per 1 USD move, in units
  - ``vega_usd`` :math:`=\sum_j n_j\nu_j` per 1.00 of vol; ``vega_usd_per_point`` per 0.01
  - ``theta_usd_per_day`` :math:`= \sum_j n_j\Theta_j / 365`
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import numpy.typing as npt

from keeper import options
from keeper.errors import ConfigError

__all__ = ["OptionPosition", "PortfolioGreeks", "portfolio_greeks", "delta_adjusted_exposures", "protective_delta_units"]

FloatArray = npt.NDArray[np.float64]


# --------------------------------------------------------------------------- #
# Positions and portfolio Greeks
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class OptionPosition:
    """A European option position on one underlying.

    Attributes
    ----------
    symbol : str
        Underlying, e.g. ``"BTC"``.
    strike : float
        USD per unit of underlying.
    expiry : int
        Unix seconds of expiry.
    is_call : bool
    quantity : float
        Signed, in whole units of the underlying (float, not 1e18): +2.0 is long options on 2 units.
    """

    symbol: str
    strike: float
    expiry: int
    is_call: bool
    quantity: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.strike) and self.strike > 0.0):
            raise ConfigError(f"option on {self.symbol}: strike is {self.strike!r}; it must be positive and finite (USD)")
        if not math.isfinite(self.quantity):
            raise ConfigError(f"option on {self.symbol}: quantity is {self.quantity!r}; it must be finite (units)")


@dataclass(frozen=True, eq=False)
class PortfolioGreeks:
    """Greeks per underlying (arrays of shape (n_assets,), ``symbols`` order); units in the module doc."""

    symbols: tuple[str, ...]
    spots: FloatArray
    vols: FloatArray
    spot_units: FloatArray
    option_delta_units: FloatArray
    delta_units: FloatArray
    dollar_delta: FloatArray
    gamma_units: FloatArray
    dollar_gamma: FloatArray
    vega_usd: FloatArray
    theta_usd_per_day: FloatArray
    option_value_usd: FloatArray

    @property
    def vega_usd_per_point(self) -> FloatArray:
        """Vega per vol point (0.01 of annualised vol), USD."""
        return self.vega_usd * options.VOL_POINT

    def as_dict(self) -> dict[str, Any]:
        """JSON-able: ``{symbol: {greek: value}}`` (floats)."""
        names = ("spot_units", "option_delta_units", "delta_units", "dollar_delta", "gamma_units",
                 "dollar_gamma", "vega_usd", "theta_usd_per_day", "option_value_usd", "spots", "vols")
        out = {s: {n: float(getattr(self, n)[i]) for n in names} for i, s in enumerate(self.symbols)}
        for i, s in enumerate(self.symbols):
            out[s]["vega_usd_per_point"] = float(self.vega_usd_per_point[i])
        return out


def _aligned(name: str, values: Mapping[str, float], symbols: Sequence[str], *, positive: bool) -> FloatArray:
    missing = [s for s in symbols if s not in values]
    if missing:
        raise ConfigError(f"{name} has no entry for {missing}; pass one per asset of {tuple(symbols)}")
    a = np.array([float(values[s]) for s in symbols])
    ok = np.isfinite(a) & (a > 0.0 if positive else True)
    if not ok.all():
        i = int(np.argmin(ok))
        rule = "positive and finite" if positive else "finite"
        raise ConfigError(f"{name}[{symbols[i]!r}] is {a[i]!r}; it must be {rule}")
    return a


def _book_greeks(
    positions: Sequence[OptionPosition], index: Mapping[str, int], spots: FloatArray, vols: FloatArray, now: int, r: float
) -> tuple[options.Greeks, npt.NDArray[np.int64], FloatArray]:
    """Per-unit Greeks of each position, the position's asset index and quantities."""
    unknown = sorted({p.symbol for p in positions if p.symbol not in index})
    if unknown:
        raise ConfigError(f"option positions on {unknown}, which are not among the assets {tuple(index)}")
    asset = np.array([index[p.symbol] for p in positions], dtype=np.int64)
    tau = options.year_fraction(np.maximum(np.array([p.expiry for p in positions], dtype=np.float64) - now, 0.0))
    g = options.greeks(
        spots[asset],
        np.array([p.strike for p in positions]),
        tau,
        vols[asset],
        r,
        0.0,
        np.array([p.is_call for p in positions], dtype=bool),
    )
    return g, asset, np.array([p.quantity for p in positions])


def portfolio_greeks(
    spot_holdings: Mapping[str, float],
    positions: Sequence[OptionPosition],
    spots: Mapping[str, float],
    vols: Mapping[str, float],
    now: int,
    *,
    r: float = 0.0,
    symbols: Sequence[str] | None = None,
) -> PortfolioGreeks:
    """Aggregates spot holdings and an option book into Greeks per underlying.

    Parameters
    ----------
    spot_holdings : mapping symbol -> float
        Spot units held (delta 1 per unit).
    positions : sequence of OptionPosition
        The option book; an expired position (``expiry <= now``) counts at intrinsic value
        with its step delta (see :mod:`keeper.options`).
    spots : mapping symbol -> float
        USD per unit, > 0.
    vols : mapping symbol -> float
        Annualised implied volatility per underlying (fraction), >= 0.
    now : int
        Unix seconds.
    r : float
        Continuously compounded USD rate per year.
    symbols : sequence of str, optional
        Asset order of the result; default ``spot_holdings``' key order.

    Returns
    -------
    PortfolioGreeks

    Raises
    ------
    ConfigError
        A missing or non-positive spot, a missing or negative/non-finite vol, a non-finite holding,
        or a position on an asset not in ``symbols``.
    """
    syms = tuple(symbols) if symbols is not None else tuple(spot_holdings)
    s = _aligned("spots", spots, syms, positive=True)
    v = _aligned("vols", vols, syms, positive=False)
    if (v < 0.0).any():
        i = int(np.argmax(v < 0.0))
        raise ConfigError(f"vols[{syms[i]!r}] is {v[i]!r}; it must be >= 0 (annualised fraction)")
    h = np.array([float(spot_holdings.get(sym, 0.0)) for sym in syms])
    if not np.isfinite(h).all():
        raise ConfigError(f"spot_holdings must be finite, got {dict(zip(syms, h))}")
    n = len(syms)
    opt_delta = np.zeros(n)
    gamma_units = np.zeros(n)
    vega = np.zeros(n)
    theta = np.zeros(n)
    value = np.zeros(n)
    if positions:
        g, asset, qty = _book_greeks(positions, {sym: i for i, sym in enumerate(syms)}, s, v, now, r)
        opt_delta = np.bincount(asset, qty * g.delta, minlength=n)
        gamma_units = np.bincount(asset, qty * g.gamma, minlength=n)
        vega = np.bincount(asset, qty * g.vega, minlength=n)
        theta = np.bincount(asset, qty * g.theta, minlength=n) / options.DAYS_PER_YEAR
        value = np.bincount(asset, qty * g.price, minlength=n)
    delta_units = h + opt_delta
    return PortfolioGreeks(
        symbols=syms,
        spots=s,
        vols=v,
        spot_units=h,
        option_delta_units=opt_delta,
        delta_units=delta_units,
        dollar_delta=delta_units * s,
        gamma_units=gamma_units,
        dollar_gamma=gamma_units * s * s / 100.0,
        vega_usd=vega,
        theta_usd_per_day=theta,
        option_value_usd=value,
    )


def delta_adjusted_exposures(greeks: PortfolioGreeks, nav: float) -> FloatArray:
    """Economic exposure per asset as a fraction of NAV: ``dollar_delta / nav``, shape (n_assets,).

    Raises
    ------
    ConfigError
        ``nav`` not positive and finite.
    """
    _check_nav(nav)
    return greeks.dollar_delta / nav


def protective_delta_units(positions: Sequence[OptionPosition], symbols: Sequence[str], spots: npt.ArrayLike,
                           vols: npt.ArrayLike, now: int, r: float = 0.0) -> FloatArray:
    """Delta of the long puts per asset (the protection held), units of the underlying, <= 0, shape (n_assets,).

    Raises
    ------
    ConfigError
        A position on an asset not in ``symbols``.
    """
    syms = tuple(symbols)
    longs = [p for p in positions if not p.is_call and p.quantity > 0.0]
    out = np.zeros(len(syms))
    if longs:
        g, asset, qty = _book_greeks(longs, {sym: i for i, sym in enumerate(syms)}, np.asarray(spots, dtype=np.float64),
                                     np.asarray(vols, dtype=np.float64), now, r)
        out = np.bincount(asset, qty * g.delta, minlength=len(syms))
    return out


def _check_nav(nav: float) -> None:
    if not (math.isfinite(nav) and nav > 0.0):
        raise ConfigError(f"nav is {nav!r}; it must be positive and finite (USD)")
