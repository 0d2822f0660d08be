r"""Delta hedging in spot between the policy and the planner (chain-free, pure functions); the book's Greeks are
:mod:`keeper.greeks`, the put overlay :mod:`keeper.overlay`.

Pipeline position: ``optimizer`` gives the risk-parity (ERC) weights; this module reads them as
targets for each asset's **economic exposure** -- spot plus option delta -- and returns

* :func:`hedge_trades`: spot trades that bring each asset's delta to its target where the
  drift exceeds a band, and the spot target weights the planner should be given;
* :func:`hedge_decision`: the trigger (delta drift band, elapsed time, implied-vol move) and a
  JSON-able :class:`HedgeDecision` for the journal, carrying the Greeks that drove it.

Units as in :mod:`keeper.greeks`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from keeper import options
from keeper.errors import ConfigError
from keeper.units import BPS, SECONDS_PER_DAY
from keeper.greeks import PortfolioGreeks, _check_nav

__all__ = ["HedgeOrders", "hedge_trades", "HedgeTriggerConfig", "HedgeDecision", "hedge_decision"]

FloatArray = npt.NDArray[np.float64]


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
