r"""Delta hedging in spot between the policy and the planner (chain-free, pure functions); the book's Greeks are
:mod:`keeper.greeks`, the put overlay :mod:`keeper.overlay`.

Pipeline position: ``optimizer`` gives the risk-parity (ERC) weights; this module turns them into spot
trades. Two modes (:class:`HedgeTriggerConfig.mode`):

* ``"budget"`` (default): the policy's weights are the **spot** targets; the options' delta is not offset, so
  a protective put lowers its asset's net delta and keeps lowering it as it gains delta in a fall (the
  protection the policy chose is held, not hedged away). On an asset whose long puts gained delta since the
  last hedge (``protective_delta_units`` below ``protective_delta_at_last_hedge``) the hedge never buys spot: it
  only sells or does nothing there. The net-delta budgets (per asset and in total, fractions of NAV) are
  enforced by selling spot.
* ``"delta_target"``: the policy's weights are targets for each asset's **net delta** (spot plus option
  delta), the spot trade is :math:`\Delta^*_i - \Delta_i`. As a put gains delta in a fall this buys spot back
  and undoes the protection: what remains is a volatility position. Kept to compare (it equalises nothing
  beyond the net delta per asset against the policy's weights).

Both return

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

__all__ = ["HEDGE_MODES", "HedgeOrders", "hedge_trades", "HedgeTriggerConfig", "HedgeDecision", "hedge_decision"]

FloatArray = npt.NDArray[np.float64]
#: ``"budget"``: spot toward the policy's weights, protection held; ``"delta_target"``: net delta toward them.
HEDGE_MODES = ("budget", "delta_target")
# Budgets are enforced with this relative margin so that float rounding can never end a hair above the limit.
_BUDGET_MARGIN = 1e-9


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
    mode : str
        ``"budget"`` or ``"delta_target"`` (module doc).
    blocked : ndarray of bool or None
        ``"budget"`` mode: a buy was refused because the asset's protective puts gained delta since the last hedge.
    budget_scaled : ndarray of bool or None
        The net-delta budgets (or ``spot_scale``) sold spot on the asset.
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
    mode: str = "delta_target"
    blocked: npt.NDArray[np.bool_] | None = None
    budget_scaled: npt.NDArray[np.bool_] | None = None

    @property
    def any_trade(self) -> bool:
        """True if some asset trades."""
        return bool(np.any(self.trade_units != 0.0))


def hedge_trades(
    target_exposure_weights: npt.ArrayLike,
    nav: float,
    greeks: PortfolioGreeks,
    band_bps: float,
    *,
    mode: str = "delta_target",
    protective_delta_units: npt.ArrayLike | None = None,
    protective_delta_at_last_hedge: npt.ArrayLike | None = None,
    max_net_delta_per_asset: float = math.inf,
    max_net_delta_total: float = math.inf,
    spot_scale: float = 1.0,
) -> HedgeOrders:
    r"""Spot trades toward the policy's weights, outside a band, within the net-delta budgets.

    ``"delta_target"``: target delta of asset :math:`i` in units :math:`\Delta^*_i = w_i \cdot NAV / S_i` (spot
    plus options); the spot trade is :math:`\Delta^*_i - \Delta_i` where :math:`|\Delta_i S_i/NAV - w_i| >`
    band. ``"budget"``: the spot holding's target is :math:`w_i NAV / S_i` (options not offset), traded where
    :math:`|h_i S_i/NAV - w_i| >` band; a buy on an asset whose protective delta fell (more negative) since the
    last hedge is refused (``blocked``).

    Then, in both modes, the budgets sell spot: asset :math:`i`'s net delta
    :math:`(h'_i + \Delta^{opt}_i) S_i / NAV` at most ``max_net_delta_per_asset``, then
    :math:`\sum_i` of it at most ``max_net_delta_total`` (every spot target scaled by one factor), then every
    spot target times ``spot_scale`` (the whole-book ES limit of :func:`keeper.decision._decide_with_options`).
    These only ever lower spot, so a blocked asset is never bought by them. A long-only vault cannot push a net
    delta below its options' delta: a put book larger than the budget allows is the overlay's to reduce.

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
    mode : {"budget", "delta_target"}
    protective_delta_units, protective_delta_at_last_hedge : array_like (n_assets,), optional
        Delta (units, <= 0) of the long puts per asset now and at the last hedge (``"budget"`` mode; without
        the last, no buy is blocked).
    max_net_delta_per_asset, max_net_delta_total : float
        Net-delta budgets, fractions of NAV, > 0 (inf: none).
    spot_scale : float
        In [0, 1].

    Raises
    ------
    ConfigError
        Shapes, negative or non-finite weights, weights summing above 1, a negative band, bad NAV, an unknown
        mode, budgets <= 0, ``spot_scale`` outside [0, 1].
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
    if mode not in HEDGE_MODES:
        raise ConfigError(f"hedge mode is {mode!r}; use one of {HEDGE_MODES}")
    for name, value in (("max_net_delta_per_asset", max_net_delta_per_asset),
                        ("max_net_delta_total", max_net_delta_total)):
        if not value > 0.0:
            raise ConfigError(f"{name} is {value!r}; it must be > 0 (a fraction of NAV, inf for none)")
    if not 0.0 <= spot_scale <= 1.0:
        raise ConfigError(f"spot_scale is {spot_scale!r}; it must be in [0, 1]")
    n = w.size
    exposure = greeks.dollar_delta / nav
    spot_weight = greeks.spot_units * greeks.spots / nav
    blocked = np.zeros(n, dtype=bool)
    if mode == "delta_target":
        drift_bps = (exposure - w) * BPS
        target_units = w * nav / greeks.spots
        outside = np.abs(drift_bps) > band_bps
        wanted_spot = greeks.spot_units + np.where(outside, target_units - greeks.delta_units, 0.0)
    else:
        drift_bps = (spot_weight - w) * BPS
        outside = np.abs(drift_bps) > band_bps
        wanted_spot = np.where(outside, w * nav / greeks.spots, greeks.spot_units)
        if protective_delta_units is not None and protective_delta_at_last_hedge is not None:
            now_d = np.asarray(protective_delta_units, dtype=np.float64)
            then_d = np.asarray(protective_delta_at_last_hedge, dtype=np.float64)
            if now_d.shape != (n,) or then_d.shape != (n,) or not (np.isfinite(now_d).all() and np.isfinite(then_d).all()):
                raise ConfigError(f"protective deltas must be {n} finite values for {greeks.symbols}, got "
                                  f"{now_d.tolist()} and {then_d.tolist()}")
            gained = now_d < then_d
            blocked = gained & (wanted_spot > greeks.spot_units)
            wanted_spot = np.where(gained, np.minimum(wanted_spot, greeks.spot_units), wanted_spot)
        target_units = wanted_spot + greeks.option_delta_units
    clipped = wanted_spot < 0.0
    spot_target = np.maximum(wanted_spot, 0.0)
    before_budget = spot_target.copy()
    # Net-delta budgets: sell spot down to them (never below 0).
    if math.isfinite(max_net_delta_per_asset):
        cap_units = max_net_delta_per_asset * nav / greeks.spots
        over = spot_target + greeks.option_delta_units - cap_units
        spot_target = np.where(over > 0.0, np.maximum(spot_target - over * (1.0 + _BUDGET_MARGIN), 0.0), spot_target)
    if math.isfinite(max_net_delta_total):
        spot_usd = float(np.dot(spot_target, greeks.spots))
        option_usd = float(np.dot(greeks.option_delta_units, greeks.spots))
        if spot_usd + option_usd > max_net_delta_total * nav and spot_usd > 0.0:
            k = max((max_net_delta_total * nav * (1.0 - _BUDGET_MARGIN) - option_usd) / spot_usd, 0.0)
            spot_target = spot_target * min(k, 1.0)
    spot_target = spot_target * spot_scale
    trade = spot_target - greeks.spot_units
    return HedgeOrders(
        symbols=greeks.symbols,
        target_exposure_weights=(spot_target + greeks.option_delta_units) * greeks.spots / nav,
        exposure_weights=exposure,
        drift_bps=drift_bps,
        target_delta_units=target_units,
        trade_units=trade,
        trade_value_usd=trade * greeks.spots,
        spot_target_units=spot_target,
        spot_target_weights=spot_target * greeks.spots / nav,
        clipped=clipped,
        band_bps=float(band_bps),
        mode=mode,
        blocked=blocked,
        budget_scaled=spot_target < before_budget,
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
    mode : {"budget", "delta_target"}
        What the policy's weights are targets of (module doc): the spot holding, protection held (``"budget"``),
        or the net delta (``"delta_target"``, which buys back a put's delta).
    max_net_delta_per_asset, max_net_delta_total : float
        Net-delta budgets (spot plus option delta, fraction of NAV; inf: none), enforced by selling spot.
    """

    delta_band_bps: float = 200.0
    max_interval_seconds: int = 7 * SECONDS_PER_DAY
    iv_move_points: float = 5.0
    mode: str = "budget"
    max_net_delta_per_asset: float = math.inf
    max_net_delta_total: float = math.inf

    def __post_init__(self) -> None:
        for name in ("delta_band_bps", "max_interval_seconds", "iv_move_points"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"HedgeTriggerConfig.{name} is {value!r}; it must be positive and finite")
        if self.mode not in HEDGE_MODES:
            raise ConfigError(f"HedgeTriggerConfig.mode is {self.mode!r}; use one of {HEDGE_MODES}")
        for name in ("max_net_delta_per_asset", "max_net_delta_total"):
            value = getattr(self, name)
            if not value > 0.0:
                raise ConfigError(f"HedgeTriggerConfig.{name} is {value!r}; it must be > 0 (fraction of NAV; inf: none)")


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
            "mode": o.mode,
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
                    "blocked": bool(o.blocked[i]) if o.blocked is not None else False,
                    "budget_scaled": bool(o.budget_scaled[i]) if o.budget_scaled is not None else False,
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
    protective_delta_units: npt.ArrayLike | None = None,
    protective_delta_at_last_hedge: npt.ArrayLike | None = None,
    spot_scale: float = 1.0,
) -> HedgeDecision:
    """Decides whether to re-hedge and returns the trades with the Greeks and triggers behind them.

    Triggers: (1) an asset's exposure drifts more than ``delta_band_bps`` from target (only the
    drifted assets trade); (2) ``max_interval_seconds`` elapsed since ``last_hedge_at`` (or never
    hedged); (3) an implied vol (``greeks.vols``) moved more than ``iv_move_points`` since
    ``iv_at_last_hedge``. With (2) or (3) every asset is brought to its target (band 0). The mode and the
    net-delta budgets are ``config``'s; ``protective_delta_*`` and ``spot_scale`` as :func:`hedge_trades`.

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
    budget = dict(mode=config.mode, protective_delta_units=protective_delta_units,
                  protective_delta_at_last_hedge=protective_delta_at_last_hedge,
                  max_net_delta_per_asset=config.max_net_delta_per_asset,
                  max_net_delta_total=config.max_net_delta_total, spot_scale=spot_scale)
    banded = hedge_trades(target_exposure_weights, nav, greeks, config.delta_band_bps, **budget)
    reasons = [f"delta_drift:{sym}" for sym, d in zip(greeks.symbols, banded.drift_bps) if abs(d) > config.delta_band_bps]
    if last_hedge_at is None or elapsed >= config.max_interval_seconds:
        reasons.append("time")
    reasons += [f"iv_move:{sym}" for sym, m in zip(greeks.symbols, iv_move) if abs(m) > config.iv_move_points]
    full = any(r == "time" or r.startswith("iv_move") for r in reasons)
    orders = hedge_trades(target_exposure_weights, nav, greeks, 0.0, **budget) if full else banded
    if orders.blocked is not None and orders.blocked.any():
        reasons += [f"protection_held:{sym}" for sym, b in zip(greeks.symbols, orders.blocked) if b]
    if orders.budget_scaled is not None and orders.budget_scaled.any():
        reasons += [f"delta_budget:{sym}" for sym, b in zip(greeks.symbols, orders.budget_scaled) if b]
    return HedgeDecision(
        now=int(now),
        hedge=orders.any_trade,
        reasons=tuple(reasons),
        orders=orders,
        greeks=greeks,
        iv_move_points=iv_move,
        seconds_since_last_hedge=elapsed,
    )
