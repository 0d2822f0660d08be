r"""Greek-based hedging between the optimizer and the planner (chain-free, pure functions).

Pipeline position: ``optimizer`` gives the risk-parity (ERC) weights; this module reads them as
targets for each asset's **economic exposure** -- spot plus option delta -- and returns

* :func:`portfolio_greeks`: per-underlying delta, dollar delta, gamma, vega, theta of spot
  holdings plus an option book;
* :func:`hedge_trades`: spot trades that bring each asset's delta to its target where the
  drift exceeds a band, and the spot target weights the planner should be given;
* :func:`plan_overlay`: a protective-put (and optional covered-call) overlay, strikes chosen by
  delta, rolled before expiry, within a premium budget and never beyond the vega and gamma budgets;
* :func:`hedge_decision`: the trigger (delta drift band, elapsed time, implied-vol move) and a
  JSON-able :class:`HedgeDecision` for the journal, carrying the Greeks that drove it.

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
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import numpy.typing as npt

from keeper import options
from keeper.errors import ConfigError
from keeper.units import BPS, SECONDS_PER_DAY

__all__ = [
    "BPS",
    "OptionPosition",
    "PortfolioGreeks",
    "portfolio_greeks",
    "delta_adjusted_exposures",
    "HedgeOrders",
    "hedge_trades",
    "OverlayConfig",
    "OptionOrder",
    "OverlayPlan",
    "plan_overlay",
    "HedgeTriggerConfig",
    "HedgeDecision",
    "hedge_decision",
]

FloatArray = npt.NDArray[np.float64]
# Budgets are enforced with this relative margin so that float rounding of the scaled book can
# never end a hair above the limit.
_BUDGET_MARGIN = 1e-9
# Premium, vega and gamma budgets below this many USD are treated as 0 (no exposure allowed): at such scales
# (down to subnormal floats) the relative margin above no longer covers rounding.
_MIN_BUDGET_USD = 1e-9


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


def _check_nav(nav: float) -> None:
    if not (math.isfinite(nav) and nav > 0.0):
        raise ConfigError(f"nav is {nav!r}; it must be positive and finite (USD)")


# --------------------------------------------------------------------------- #
# Delta hedge in spot
# --------------------------------------------------------------------------- #
@dataclass(frozen=True, eq=False)
class HedgeOrders:
    """Spot trades that bring each asset's delta to its target (arrays of shape (n_assets,)).

    Attributes
    ----------
    target_exposure_weights : FloatArray
        Target economic exposure per asset, fraction of NAV.
    exposure_weights : FloatArray
        Current economic exposure (spot + option delta) per asset, fraction of NAV.
    drift_bps : FloatArray
        ``(exposure - target) * 10_000``.
    target_delta_units : FloatArray
        ``target * nav / spot``, units.
    trade_units, trade_value_usd : FloatArray
        Spot to buy (+) or sell (-), units and USD; zero where ``|drift| <= band``.
    spot_target_units, spot_target_weights : FloatArray
        Spot holding after the trades, units and fraction of NAV: what the planner should target
        (the vault is long-only: a negative spot target is clipped to 0 and flagged in ``clipped``).
    clipped : ndarray of bool
        The option delta alone exceeds the target: the asset cannot be hedged down with spot.
    band_bps : float
    """

    symbols: tuple[str, ...]
    target_exposure_weights: FloatArray
    exposure_weights: FloatArray
    drift_bps: FloatArray
    target_delta_units: FloatArray
    trade_units: FloatArray
    trade_value_usd: FloatArray
    spot_target_units: FloatArray
    spot_target_weights: FloatArray
    clipped: npt.NDArray[np.bool_]
    band_bps: float

    @property
    def any_trade(self) -> bool:
        """True if some asset trades."""
        return bool(np.any(self.trade_units != 0.0))


def hedge_trades(
    target_exposure_weights: npt.ArrayLike,
    nav: float,
    greeks: PortfolioGreeks,
    band_bps: float,
) -> HedgeOrders:
    r"""Spot trades so that each asset's delta matches its risk-parity target, outside a band.

    Target delta of asset :math:`i` in units: :math:`\Delta^*_i = w_i \cdot NAV / S_i`; the trade is
    :math:`\Delta^*_i - \Delta_i` (spot has delta 1) where
    :math:`|\Delta_i S_i/NAV - w_i| > \text{band}` and 0 elsewhere.

    Parameters
    ----------
    target_exposure_weights : array_like, shape (n_assets,)
        Fractions of NAV, >= 0 (e.g. the ERC weights times ``1 - cash buffer``); sum <= 1.
    nav : float
        USD.
    greeks : PortfolioGreeks
        Current book.
    band_bps : float
        No-trade band on ``|exposure - target|``, bps of NAV, >= 0.

    Raises
    ------
    ConfigError
        Shapes, negative or non-finite weights, weights summing above 1, a negative band, bad NAV.
    """
    _check_nav(nav)
    w = np.asarray(target_exposure_weights, dtype=np.float64)
    if w.shape != greeks.spots.shape:
        raise ConfigError(f"target_exposure_weights has shape {w.shape}; expected {greeks.spots.shape} ({greeks.symbols})")
    if not (np.isfinite(w).all() and (w >= 0.0).all()):
        raise ConfigError(f"target_exposure_weights must be finite and >= 0, got {w.tolist()}")
    if float(w.sum()) > 1.0 + 1e-9:
        raise ConfigError(f"target_exposure_weights sum to {float(w.sum())!r} > 1; the vault cannot lever up")
    if not (math.isfinite(band_bps) and band_bps >= 0.0):
        raise ConfigError(f"band_bps is {band_bps!r}; it must be >= 0")
    exposure = greeks.dollar_delta / nav
    drift_bps = (exposure - w) * BPS
    target_units = w * nav / greeks.spots
    outside = np.abs(drift_bps) > band_bps
    wanted_spot = greeks.spot_units + np.where(outside, target_units - greeks.delta_units, 0.0)
    clipped = wanted_spot < 0.0
    spot_target = np.maximum(wanted_spot, 0.0)
    trade = spot_target - greeks.spot_units
    return HedgeOrders(
        symbols=greeks.symbols,
        target_exposure_weights=w,
        exposure_weights=exposure,
        drift_bps=drift_bps,
        target_delta_units=target_units,
        trade_units=trade,
        trade_value_usd=trade * greeks.spots,
        spot_target_units=spot_target,
        spot_target_weights=spot_target * greeks.spots / nav,
        clipped=clipped,
        band_bps=float(band_bps),
    )


# --------------------------------------------------------------------------- #
# Option overlay
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class OverlayConfig:
    """Protective-put / covered-call overlay policy.

    Attributes
    ----------
    put_delta : float
        Target delta of new puts, in (-1, 0); -0.25 is the "25-delta put".
    tenor_days : float
        Days to expiry of new series (> roll_before_days).
    roll_before_days : float
        Close (and, if still selected, reopen) a series this many days before its expiry.
    premium_budget_bps : float
        Gross premium paid for new puts per planning period, bps of NAV.
    max_put_assets : int
        Puts go to at most this many assets, the largest risk contributors first.
    hedge_ratio : float
        Put quantity as a fraction of the asset's spot units, in (0, 1].
    max_open_series : int
        Open series after the plan, puts and calls together.
    covered_calls : bool
        Also sell calls on held assets (quantity ``call_ratio`` x spot units, so always covered).
    call_delta : float
        Target delta of sold calls, in (0, 1).
    call_ratio : float
        In (0, 1].
    vega_budget_per_asset_usd, vega_budget_total_usd : float
        Caps on ``|net vega|`` per vol point, USD: per asset, and summed over assets (Σ_i |vega_i|).
    gamma_budget_per_asset_usd, gamma_budget_total_usd : float
        Caps on ``|dollar gamma|`` (Γ S²/100: USD value of the delta change per 1 % move), per asset and summed.
    """

    put_delta: float = -0.25
    tenor_days: float = 30.0
    roll_before_days: float = 5.0
    premium_budget_bps: float = 50.0
    max_put_assets: int = 2
    hedge_ratio: float = 1.0
    max_open_series: int = 6
    covered_calls: bool = False
    call_delta: float = 0.15
    call_ratio: float = 0.5
    vega_budget_per_asset_usd: float = math.inf
    vega_budget_total_usd: float = math.inf
    gamma_budget_per_asset_usd: float = math.inf
    gamma_budget_total_usd: float = math.inf

    def __post_init__(self) -> None:
        checks = [
            ("put_delta", -1.0 < self.put_delta < 0.0, "in (-1, 0)"),
            ("tenor_days", math.isfinite(self.tenor_days) and self.tenor_days > self.roll_before_days, "finite and > roll_before_days"),
            ("roll_before_days", self.roll_before_days >= 0.0, ">= 0"),
            ("premium_budget_bps", math.isfinite(self.premium_budget_bps) and self.premium_budget_bps >= 0.0, "finite and >= 0"),
            ("max_put_assets", self.max_put_assets >= 0, ">= 0"),
            ("hedge_ratio", 0.0 < self.hedge_ratio <= 1.0, "in (0, 1]"),
            ("max_open_series", self.max_open_series >= 0, ">= 0"),
            ("call_delta", 0.0 < self.call_delta < 1.0, "in (0, 1)"),
            ("call_ratio", 0.0 < self.call_ratio <= 1.0, "in (0, 1]"),
        ]
        for name in ("vega_budget_per_asset_usd", "vega_budget_total_usd", "gamma_budget_per_asset_usd", "gamma_budget_total_usd"):
            value = getattr(self, name)
            checks.append((name, value >= 0.0, ">= 0 (math.inf for no cap)"))
        for name, ok, rule in checks:
            if not ok:
                raise ConfigError(f"OverlayConfig.{name} is {getattr(self, name)!r}; it must be {rule}")


@dataclass(frozen=True)
class OptionOrder:
    """One option trade of an overlay plan.

    Attributes
    ----------
    action : str
        ``"open"``, ``"close"`` (roll or expiry) or ``"reduce"`` (partial close to respect a budget).
    quantity : float
        Signed units traded: + buys, - sells (closing a long put is a negative quantity).
    premium_usd : float
        Cash paid (+) or received (-) at the model price, USD.
    delta, vega_usd_per_point, dollar_gamma : float
        Greeks of the traded quantity (units; USD per vol point; USD per 1 % move).
    reason : str
    """

    action: str
    symbol: str
    strike: float
    expiry: int
    is_call: bool
    quantity: float
    price_usd: float
    premium_usd: float
    delta: float
    vega_usd_per_point: float
    dollar_gamma: float
    reason: str


@dataclass(frozen=True, eq=False)
class OverlayPlan:
    """An overlay plan and the book it leads to.

    Attributes
    ----------
    orders : tuple of OptionOrder
    positions_after : tuple of OptionPosition
        The option book after the orders.
    put_premium_usd, premium_budget_usd : float
        Gross premium of new puts and the budget (USD).
    call_premium_usd : float
        Premium received for sold calls (USD, >= 0).
    vega_usd_per_point, dollar_gamma : FloatArray, shape (n_assets,)
        Net vega (per vol point) and dollar gamma (per 1 %) per asset of ``positions_after``.
    scale : dict
        Factors applied to new orders: ``{"premium": s, "<symbol>": s_i, "total": s}``.
    binding : tuple of str
        Constraints that reduced the plan (e.g. ``"premium_budget"``, ``"vega_budget:BTC"``).
    """

    symbols: tuple[str, ...]
    orders: tuple[OptionOrder, ...]
    positions_after: tuple[OptionPosition, ...]
    put_premium_usd: float
    call_premium_usd: float
    premium_budget_usd: float
    vega_usd_per_point: FloatArray
    dollar_gamma: FloatArray
    scale: dict[str, float] = field(default_factory=dict)
    binding: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """JSON-able summary for the journal."""
        return {
            "orders": [o.__dict__ for o in self.orders],
            "positions_after": [p.__dict__ for p in self.positions_after],
            "put_premium_usd": self.put_premium_usd,
            "call_premium_usd": self.call_premium_usd,
            "premium_budget_usd": self.premium_budget_usd,
            "vega_usd_per_point": dict(zip(self.symbols, self.vega_usd_per_point.tolist())),
            "dollar_gamma": dict(zip(self.symbols, self.dollar_gamma.tolist())),
            "scale": dict(self.scale),
            "binding": list(self.binding),
        }


def _shrink(amount: float, budget: float) -> float:
    """Factor in [0, 1] that brings ``|amount|`` within ``budget`` (less the rounding margin)."""
    limit = budget * (1.0 - _BUDGET_MARGIN)
    if abs(amount) <= limit:
        return 1.0
    return limit / abs(amount) if limit > 0.0 else 0.0


def _max_scale(kept: FloatArray, new: FloatArray, budget: float) -> float:
    """Largest s in [0, 1] with |kept + s * new| <= budget (kept within budget assumed)."""
    if not math.isfinite(budget):
        return 1.0
    limit = budget * (1.0 - _BUDGET_MARGIN)
    k, n = float(kept), float(new)
    if abs(k + n) <= limit:
        return 1.0
    if n == 0.0:
        return 1.0
    bound = (limit - k) / n if n > 0.0 else (-limit - k) / n
    return min(max(bound, 0.0), 1.0)


def _max_scale_total(kept: FloatArray, new: FloatArray, budget: float) -> float:
    """Largest s in [0, 1] with Σ|kept + s new| <= budget; the sum is convex in s (bisection)."""
    if not math.isfinite(budget):
        return 1.0
    limit = budget * (1.0 - _BUDGET_MARGIN)

    def total(s: float) -> float:
        return float(np.abs(kept + s * new).sum())

    if total(1.0) <= limit:
        return 1.0
    lo, hi = 0.0, 1.0  # total(lo) <= limit < total(hi)
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if total(mid) <= limit:
            lo = mid
        else:
            hi = mid
    return lo


def plan_overlay(
    config: OverlayConfig,
    *,
    symbols: Sequence[str],
    spots: npt.ArrayLike,
    vols: npt.ArrayLike,
    spot_units: npt.ArrayLike,
    risk_contributions: npt.ArrayLike,
    nav: float,
    positions: Sequence[OptionPosition],
    now: int,
    r: float = 0.0,
) -> OverlayPlan:
    r"""Plans protective puts on the largest risk contributors (and optional covered calls).

    1. **Rolls**: every position with less than ``roll_before_days`` to expiry (or expired) is
       closed at the model price.
    2. **Puts**: assets with spot, ranked by ``risk_contributions`` (largest first), the first
       ``max_put_assets`` without a remaining put get one: strike from
       :func:`keeper.options.strike_for_delta` at ``put_delta`` and ``tenor_days``, quantity
       ``hedge_ratio`` x spot units. Series beyond ``max_open_series`` are not opened.
    3. **Premium**: new puts are scaled by ``min(1, budget / premium)`` with budget
       ``premium_budget_bps`` x NAV / 10,000.
    4. **Calls** (``covered_calls``): each held asset without a remaining call sells
       ``call_ratio`` x spot units at ``call_delta``.
    5. **Vega/gamma budgets**: new orders on asset :math:`i` are scaled by the largest
       :math:`s_i \in [0,1]` keeping :math:`|V^{kept}_i + s_i V^{new}_i|` and the same for dollar
       gamma within the per-asset budgets, then all by the largest :math:`s` keeping
       :math:`\sum_i |\cdot|` within the totals. If the kept book alone breaches a budget, it is
       reduced proportionally (``"reduce"`` orders) and nothing new is opened on that asset.
       Greeks are linear in quantity, so the resulting book is within every budget (each limit is
       applied with a 1e-9 relative margin for rounding; a budget below 1e-9 USD counts as 0).

    Parameters
    ----------
    symbols : sequence of str
    spots, vols, spot_units, risk_contributions : array_like, shape (n_assets,)
        USD per unit; annualised implied vol (> 0); units held; risk contributions (any scale,
        only the ranking is used, e.g. :attr:`keeper.optimizer.TargetWeights.risk_contributions`).
    nav : float
        USD.
    positions : sequence of OptionPosition
        Current book.
    now : int
        Unix seconds.
    r : float
        USD rate.

    Raises
    ------
    ConfigError
        Shapes, non-positive spots or vols, negative spot units, a position on an unknown asset, bad NAV.
    """
    _check_nav(nav)
    syms = tuple(symbols)
    n = len(syms)
    s = np.asarray(spots, dtype=np.float64)
    v = np.asarray(vols, dtype=np.float64)
    h = np.asarray(spot_units, dtype=np.float64)
    rc = np.asarray(risk_contributions, dtype=np.float64)
    for name, a in (("spots", s), ("vols", v), ("spot_units", h), ("risk_contributions", rc)):
        if a.shape != (n,) or not np.isfinite(a).all():
            raise ConfigError(f"{name} has shape {a.shape} / values {a.tolist()}; expected {n} finite values for {syms}")
    if (s <= 0.0).any() or (v <= 0.0).any():
        raise ConfigError(f"spots and vols must be > 0, got spots={s.tolist()} vols={v.tolist()}")
    if (h < 0.0).any():
        raise ConfigError(f"spot_units must be >= 0 (long-only vault), got {h.tolist()}")
    index = {sym: i for i, sym in enumerate(syms)}
    roll_seconds = config.roll_before_days * SECONDS_PER_DAY

    # 1. Rolls / expiries.
    kept: list[OptionPosition] = []
    closing: list[OptionPosition] = []
    for p in positions:
        if p.symbol not in index:
            raise ConfigError(f"option position on {p.symbol!r}, which is not among the assets {syms}")
        (closing if p.expiry - now <= roll_seconds else kept).append(p)

    # 2./4. New series.
    expiry = int(now + round(config.tenor_days * SECONDS_PER_DAY))
    tenor = options.year_fraction(expiry - now)
    has_put = {p.symbol for p in kept if not p.is_call and p.quantity > 0.0}
    has_call = {p.symbol for p in kept if p.is_call and p.quantity < 0.0}
    room = max(config.max_open_series - len(kept), 0)
    new: list[OptionPosition] = []
    ranked = [int(i) for i in np.argsort(-rc, kind="stable") if h[i] > 0.0]
    for i in ranked[: config.max_put_assets]:
        if syms[i] in has_put or len(new) >= room:
            continue
        strike = float(options.strike_for_delta(config.put_delta, s[i], tenor, v[i], r, 0.0, False))
        new.append(OptionPosition(syms[i], strike, expiry, False, config.hedge_ratio * float(h[i])))
    if config.covered_calls:
        for i in ranked:
            if syms[i] in has_call or len(new) >= room:
                continue
            strike = float(options.strike_for_delta(config.call_delta, s[i], tenor, v[i], r, 0.0, True))
            new.append(OptionPosition(syms[i], strike, expiry, True, -config.call_ratio * float(h[i])))

    def unit_greeks(book: Sequence[OptionPosition]) -> tuple[options.Greeks, npt.NDArray[np.int64], FloatArray]:
        return _book_greeks(book, index, s, v, now, r)

    binding: list[str] = []
    scale: dict[str, float] = {}
    budget_usd = config.premium_budget_bps * nav / BPS
    budget_usd = 0.0 if budget_usd < _MIN_BUDGET_USD else budget_usd
    g_new, asset_new, qty_new = unit_greeks(new)  # empty arrays for an empty list
    g_kept, asset_kept, qty_kept = unit_greeks(kept)
    is_put = np.array([not p.is_call for p in new], dtype=bool)
    put_premium = float(np.sum(qty_new[is_put] * g_new.price[is_put]))
    s_prem = 1.0 if put_premium <= budget_usd else budget_usd * (1.0 - _BUDGET_MARGIN) / put_premium
    if s_prem < 1.0:
        binding.append("premium_budget")
    scale["premium"] = s_prem
    qty_scale = np.where(is_put, s_prem, 1.0)

    # 5. Vega / gamma budgets: per-asset sums of vega per vol point and dollar gamma (Γ S²/100).
    def per_asset(asset: npt.NDArray[np.int64], amount: FloatArray) -> FloatArray:
        return np.bincount(asset, amount, minlength=n)

    kv = per_asset(asset_kept, qty_kept * g_kept.vega * options.VOL_POINT)
    kg = per_asset(asset_kept, qty_kept * g_kept.gamma * s[asset_kept] ** 2 / 100.0)
    nv = per_asset(asset_new, qty_new * qty_scale * g_new.vega * options.VOL_POINT)
    ng = per_asset(asset_new, qty_new * qty_scale * g_new.gamma * s[asset_new] ** 2 / 100.0)
    asset_scale = np.ones(n)
    kept_asset_scale = np.ones(n)
    def effective(budget: float) -> float:
        return 0.0 if budget < _MIN_BUDGET_USD else budget

    vb, gb = effective(config.vega_budget_per_asset_usd), effective(config.gamma_budget_per_asset_usd)
    vt, gt = effective(config.vega_budget_total_usd), effective(config.gamma_budget_total_usd)
    for i in range(n):
        shrink = min(_shrink(kv[i], vb), _shrink(kg[i], gb))
        if shrink < 1.0:  # the kept book alone breaches: reduce it, open nothing new here
            kept_asset_scale[i] = shrink
            asset_scale[i] = 0.0
            binding.append(f"kept_book_over_budget:{syms[i]}")
            continue
        si = min(_max_scale(kv[i], nv[i], vb), _max_scale(kg[i], ng[i], gb))
        if si < 1.0:
            binding.append(f"vega_gamma_budget:{syms[i]}")
        asset_scale[i] = si
    kv, kg = kv * kept_asset_scale, kg * kept_asset_scale
    nv, ng = nv * asset_scale, ng * asset_scale
    total_kept_v, total_kept_g = float(np.abs(kv).sum()), float(np.abs(kg).sum())
    if total_kept_v > vt * (1.0 - _BUDGET_MARGIN) or total_kept_g > gt * (1.0 - _BUDGET_MARGIN):
        shrink = min(_shrink(total_kept_v, vt), _shrink(total_kept_g, gt))
        kept_asset_scale *= shrink
        kv, kg = kv * shrink, kg * shrink
        s_total = 0.0
        binding.append("kept_book_over_total_budget")
    else:
        s_total = min(_max_scale_total(kv, nv, vt), _max_scale_total(kg, ng, gt))
        if s_total < 1.0:
            binding.append("vega_gamma_total_budget")
    scale.update({sym: float(asset_scale[i]) for i, sym in enumerate(syms)})
    scale["total"] = float(s_total)
    kept_scale = kept_asset_scale[asset_kept]
    qty_scale = qty_scale * asset_scale[asset_new] * s_total

    # Orders and the resulting book.
    orders: list[OptionOrder] = []
    after: list[OptionPosition] = []

    def order(action: str, p: OptionPosition, qty: float, g: options.Greeks, j: int, reason: str) -> OptionOrder:
        px = float(g.price[j])
        return OptionOrder(
            action=action, symbol=p.symbol, strike=p.strike, expiry=p.expiry, is_call=p.is_call,
            quantity=qty, price_usd=px, premium_usd=qty * px, delta=qty * float(g.delta[j]),
            vega_usd_per_point=qty * float(g.vega[j]) * options.VOL_POINT,
            dollar_gamma=qty * float(g.gamma[j]) * float(s[index[p.symbol]]) ** 2 / 100.0, reason=reason,
        )

    if closing:
        g_close, _, _ = unit_greeks(closing)
        for j, p in enumerate(closing):
            reason = "expired" if p.expiry <= now else f"roll: {((p.expiry - now) / SECONDS_PER_DAY):.2f} days to expiry"
            orders.append(order("close", p, -p.quantity, g_close, j, reason))
    for j, p in enumerate(kept):
        if kept_scale[j] < 1.0:
            remaining = p.quantity * float(kept_scale[j])
            orders.append(order("reduce", p, remaining - p.quantity, g_kept, j, "vega/gamma budget"))
            if remaining != 0.0:
                after.append(OptionPosition(p.symbol, p.strike, p.expiry, p.is_call, remaining))
        else:
            after.append(p)
    call_premium = 0.0
    new_put_premium = 0.0
    for j, p in enumerate(new):
        qty = p.quantity * float(qty_scale[j])
        if qty == 0.0:
            continue
        kind = "covered call" if p.is_call else "protective put"
        o = order("open", p, qty, g_new, j, f"{kind}: delta {float(g_new.delta[j]):+.3f}, {config.tenor_days:g} days")
        orders.append(o)
        after.append(OptionPosition(p.symbol, p.strike, p.expiry, p.is_call, qty))
        if p.is_call:
            call_premium -= o.premium_usd
        else:
            new_put_premium += o.premium_usd

    if after:
        g_after, asset_after, qty_after = unit_greeks(after)
        vega_after = per_asset(asset_after, qty_after * g_after.vega * options.VOL_POINT)
        gamma_after = per_asset(asset_after, qty_after * g_after.gamma * s[asset_after] ** 2 / 100.0)
    else:
        vega_after, gamma_after = np.zeros(n), np.zeros(n)
    return OverlayPlan(
        symbols=syms,
        orders=tuple(orders),
        positions_after=tuple(after),
        put_premium_usd=new_put_premium,
        call_premium_usd=call_premium,
        premium_budget_usd=budget_usd,
        vega_usd_per_point=vega_after,
        dollar_gamma=gamma_after,
        scale=scale,
        binding=tuple(binding),
    )


# --------------------------------------------------------------------------- #
# Hedge triggers
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class HedgeTriggerConfig:
    """When to re-hedge.

    Attributes
    ----------
    delta_band_bps : float
        Re-hedge an asset whose exposure drifts more than this from target, bps of NAV.
    max_interval_seconds : int
        Re-hedge every asset to target when this much time has passed since the last hedge.
    iv_move_points : float
        Re-hedge every asset when some implied vol moved more than this many vol points
        (1 point = 0.01 annualised) since the last hedge.
    """

    delta_band_bps: float = 200.0
    max_interval_seconds: int = 7 * SECONDS_PER_DAY
    iv_move_points: float = 5.0

    def __post_init__(self) -> None:
        for name in ("delta_band_bps", "max_interval_seconds", "iv_move_points"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"HedgeTriggerConfig.{name} is {value!r}; it must be positive and finite")


@dataclass(frozen=True, eq=False)
class HedgeDecision:
    """A hedge decision with what drove it; ``as_dict()`` goes to the journal.

    Attributes
    ----------
    hedge : bool
        True if spot trades are to be made.
    reasons : tuple of str
        ``"delta_drift:<SYM>"``, ``"time"``, ``"iv_move:<SYM>"``; empty when nothing fired.
    orders : HedgeOrders
        The trades (all zero when ``hedge`` is False).
    greeks : PortfolioGreeks
        Greeks at decision time.
    iv_move_points : FloatArray
        ``(iv_now - iv_at_last_hedge) / 0.01`` per asset.
    seconds_since_last_hedge : int
    """

    now: int
    hedge: bool
    reasons: tuple[str, ...]
    orders: HedgeOrders
    greeks: PortfolioGreeks
    iv_move_points: FloatArray
    seconds_since_last_hedge: int

    def as_dict(self) -> dict[str, Any]:
        """JSON-able (floats, lists, dicts) for :class:`keeper.journal.Journal`."""
        syms = self.greeks.symbols
        o = self.orders
        return {
            "now": self.now,
            "hedge": self.hedge,
            "reasons": list(self.reasons),
            "seconds_since_last_hedge": self.seconds_since_last_hedge,
            "band_bps": o.band_bps,
            "greeks": self.greeks.as_dict(),
            "assets": {
                sym: {
                    "target_exposure_weight": float(o.target_exposure_weights[i]),
                    "exposure_weight": float(o.exposure_weights[i]),
                    "drift_bps": float(o.drift_bps[i]),
                    "trade_units": float(o.trade_units[i]),
                    "trade_value_usd": float(o.trade_value_usd[i]),
                    "spot_target_weight": float(o.spot_target_weights[i]),
                    "clipped": bool(o.clipped[i]),
                    "iv_move_points": float(self.iv_move_points[i]),
                }
                for i, sym in enumerate(syms)
            },
        }


def hedge_decision(
    config: HedgeTriggerConfig,
    *,
    greeks: PortfolioGreeks,
    target_exposure_weights: npt.ArrayLike,
    nav: float,
    now: int,
    last_hedge_at: int | None,
    iv_at_last_hedge: npt.ArrayLike | None,
) -> HedgeDecision:
    """Decides whether to re-hedge and returns the trades with the Greeks and triggers behind them.

    Triggers: (1) an asset's exposure drifts more than ``delta_band_bps`` from target (only the
    drifted assets trade); (2) ``max_interval_seconds`` elapsed since ``last_hedge_at`` (or never
    hedged); (3) an implied vol (``greeks.vols``) moved more than ``iv_move_points`` since
    ``iv_at_last_hedge``. With (2) or (3) every asset is brought to its target (band 0).

    Raises
    ------
    ConfigError
        As :func:`hedge_trades`; ``iv_at_last_hedge`` of the wrong shape; ``now`` before ``last_hedge_at``.
    """
    n = len(greeks.symbols)
    if last_hedge_at is not None and now < last_hedge_at:
        raise ConfigError(f"now={now} is before last_hedge_at={last_hedge_at}; the clock went backwards")
    elapsed = -1 if last_hedge_at is None else int(now - last_hedge_at)
    if iv_at_last_hedge is None:
        iv_move = np.zeros(n)
    else:
        previous = np.asarray(iv_at_last_hedge, dtype=np.float64)
        if previous.shape != (n,) or not np.isfinite(previous).all():
            raise ConfigError(f"iv_at_last_hedge must be {n} finite vols for {greeks.symbols}, got {previous.tolist()}")
        iv_move = (greeks.vols - previous) / options.VOL_POINT
    banded = hedge_trades(target_exposure_weights, nav, greeks, config.delta_band_bps)
    reasons = [f"delta_drift:{sym}" for sym, d in zip(greeks.symbols, banded.drift_bps) if abs(d) > config.delta_band_bps]
    if last_hedge_at is None or elapsed >= config.max_interval_seconds:
        reasons.append("time")
    reasons += [f"iv_move:{sym}" for sym, m in zip(greeks.symbols, iv_move) if abs(m) > config.iv_move_points]
    full = any(r == "time" or r.startswith("iv_move") for r in reasons)
    orders = hedge_trades(target_exposure_weights, nav, greeks, 0.0) if full else banded
    return HedgeDecision(
        now=int(now),
        hedge=orders.any_trade,
        reasons=tuple(reasons),
        orders=orders,
        greeks=greeks,
        iv_move_points=iv_move,
        seconds_since_last_hedge=elapsed,
    )
