r"""The option overlay: protective puts (and optional covered calls), rolled before expiry, within a premium budget
and never beyond the vega and gamma budgets (:func:`plan_overlay`). Chain-free, pure functions; units as in
:mod:`keeper.greeks` (float whole units of the underlying, USD floats, Unix seconds).

As insurance (given the scenarios of the convex risk model, :mod:`keeper.book_risk`): the puts go to the assets
with the largest ES contributions of the whole book; each put's strike (``put_deltas``) and tenor
(``tenors_days``) are chosen among the candidates by **cost per unit of tail protection**: the premium per year
(premium x 365 / tenor days) divided by the reduction of the book's ES (full revaluation, same scenarios) that
the put brings; the quantity is ``hedge_ratio`` x spot units, at most what the premium pacing allows
(``premium_budget_bps_per_year`` x days held / 365 per put asset); a put whose delta passes ``-monetise_delta``
(deep in the money, mostly intrinsic value) is sold and re-struck instead of held to expiry. Every candidate,
with the ES before and after it, is in :attr:`OverlayPlan.choices`. Without scenarios, the first candidate is
taken and the assets are ranked by the ``risk_contributions`` given.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import numpy.typing as npt

from keeper import options
from keeper.errors import ConfigError
from keeper.units import BPS, SECONDS_PER_DAY
from keeper.greeks import OptionPosition, _book_greeks, _check_nav
from keeper.book_risk import RiskModelConfig, revalue, tail_weights

__all__ = ["OverlayConfig", "OptionOrder", "OverlayPlan", "plan_overlay"]

FloatArray = npt.NDArray[np.float64]
# Budgets are enforced with this relative margin so that float rounding of the scaled book can
# never end a hair above the limit.
_BUDGET_MARGIN = 1e-9
# Premium, vega and gamma budgets below this many USD are treated as 0 (no exposure allowed): at such scales
# (down to subnormal floats) the relative margin above no longer covers rounding.
_MIN_BUDGET_USD = 1e-9


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
    put_deltas, tenors_days : tuple of float
        Candidate deltas (each in (-1, 0)) and tenors (days, each > ``roll_before_days``) of new puts, compared by
        cost per unit of ES reduction when scenarios are given; empty: ``(put_delta,)`` and ``(tenor_days,)``.
    premium_budget_bps_per_year : float or None
        Premium pacing: a new put costs at most this x NAV x (tenor - ``roll_before_days``) / 365 /
        ``max_put_assets`` (bps of NAV a year spread over the put assets and the days a put is held before its
        roll); None: no pacing. A monetised put frees its asset for a new one, so a crash can spend more.
    monetise_delta : float or None
        In (0, 1): a long put whose |delta| exceeds this is sold (its value is mostly intrinsic) and the asset
        may be re-struck in the same plan; None: held to the roll.
    parity : {None, "vega", "gamma"}
        Greek parity of the put sleeve across the assets that hold puts after the plan: ``"vega"`` equalises each
        asset's long-put vega (USD per vol point), ``"gamma"`` its long-put dollar gamma (Γ S²/100), by cutting
        the new puts down to the smallest asset's level (never buying more than the sizing above allows; kept
        puts are not traded for it). None: each asset sized on its own. (Delta parity is not an overlay mode:
        the net delta per asset is the hedge's, :mod:`keeper.hedging`.)
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
    put_deltas: tuple[float, ...] = ()
    tenors_days: tuple[float, ...] = ()
    premium_budget_bps_per_year: float | None = None
    monetise_delta: float | None = None
    parity: str | None = None

    @property
    def put_candidates(self) -> tuple[tuple[float, float], ...]:
        """(delta, tenor days) pairs compared for a new put."""
        return tuple((d, t) for d in (self.put_deltas or (self.put_delta,)) for t in (self.tenors_days or (self.tenor_days,)))

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
            ("put_deltas", all(-1.0 < d < 0.0 for d in self.put_deltas), "each in (-1, 0)"),
            ("tenors_days", all(math.isfinite(t) and t > self.roll_before_days for t in self.tenors_days),
             "each finite and > roll_before_days"),
            ("premium_budget_bps_per_year", self.premium_budget_bps_per_year is None
             or (math.isfinite(self.premium_budget_bps_per_year) and self.premium_budget_bps_per_year >= 0.0),
             "None or finite and >= 0"),
            ("monetise_delta", self.monetise_delta is None or 0.0 < self.monetise_delta < 1.0, "None or in (0, 1)"),
            ("parity", self.parity in (None, "vega", "gamma"), "None, 'vega' or 'gamma'"),
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
    choices : tuple of dict
        Per put asset, every candidate compared: ``symbol``, ``put_delta``, ``tenor_days``, ``strike``,
        ``quantity``, ``premium_usd``, ``premium_per_year_usd``, ``es_before_usd``, ``es_after_usd``,
        ``cost_per_es_usd`` (premium a year per USD of ES removed; inf when it removes none), ``chosen``.
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
    choices: tuple[dict[str, Any], ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """JSON-able summary for the journal."""
        return {
            "choices": [dict(c) for c in self.choices],
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


def _parity(greek: str, new: list[OptionPosition], kept: Sequence[OptionPosition], index: dict[str, int],
            s: FloatArray, v: FloatArray, now: int, r: float) -> list[OptionPosition]:
    """Cuts the new long puts so that every asset holding puts carries the same long-put vega (USD per vol point)
    or dollar gamma (Γ S²/100): the smallest asset's level (see :class:`OverlayConfig.parity`)."""
    def per_unit(book: Sequence[OptionPosition]) -> tuple[FloatArray, npt.NDArray[np.int64]]:
        g, asset, _ = _book_greeks(book, index, s, v, now, r)
        unit = g.vega * options.VOL_POINT if greek == "vega" else g.gamma * s[asset] ** 2 / 100.0
        return unit, asset

    n = len(s)
    longs = [p for p in kept if not p.is_call and p.quantity > 0.0]
    level_kept = np.zeros(n)
    if longs:
        unit_k, asset_k = per_unit(longs)
        level_kept = np.bincount(asset_k, unit_k * np.array([p.quantity for p in longs]), minlength=n)
    puts = [j for j, p in enumerate(new) if not p.is_call]
    if not puts:
        return new
    unit_n, asset_n = per_unit([new[j] for j in puts])
    level_new = np.bincount(asset_n, unit_n * np.array([new[j].quantity for j in puts]), minlength=n)
    level = level_kept + level_new
    holders = level > 0.0
    target = float(level[holders].min())
    out = list(new)
    for k, j in enumerate(puts):
        i = int(asset_n[k])
        room = max(target - level_kept[i], 0.0)
        scale = min(room / level_new[i], 1.0) if level_new[i] > 0.0 else 0.0
        p = new[j]
        out[j] = OptionPosition(p.symbol, p.strike, p.expiry, p.is_call, p.quantity * scale)
    return [p for p in out if p.quantity > 0.0 or p.is_call]


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
    scenarios: npt.ArrayLike | None = None,
    risk_model: RiskModelConfig | None = None,
) -> OverlayPlan:
    r"""Plans protective puts on the largest risk contributors (and optional covered calls).

    1. **Rolls**: every position with less than ``roll_before_days`` to expiry (or expired) is
       closed at the model price.
    2. **Puts**: assets with spot, ranked by ``risk_contributions`` (largest first): of the first
       ``max_put_assets``, those without a remaining put get one while fewer than ``max_put_assets`` assets
       hold puts: strike and tenor from the candidates (module doc; :func:`keeper.options.strike_for_delta`),
       quantity ``hedge_ratio`` x spot units (at most the premium pacing allows). Series beyond
       ``max_open_series`` are not opened.
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
        only the ranking is used, e.g. :attr:`keeper.risk_budgeting.TargetWeights.risk_contributions`).
    nav : float
        USD.
    positions : sequence of OptionPosition
        Current book.
    now : int
        Unix seconds.
    r : float
        USD rate.
    scenarios : array_like (n_scenarios, n_assets), optional
        Scenario returns of the convex risk model (:func:`keeper.book_risk.scenario_returns`): strike and tenor
        are then chosen by cost per unit of ES reduction (module doc).
    risk_model : RiskModelConfig, optional
        Confidence, horizon and vol shock of that ES (default :class:`~keeper.book_risk.RiskModelConfig`).

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

    # 1. Rolls / expiries, and deep-in-the-money puts monetised.
    kept: list[OptionPosition] = []
    closing: list[OptionPosition] = []
    close_reason: dict[int, str] = {}
    for p in positions:
        if p.symbol not in index:
            raise ConfigError(f"option position on {p.symbol!r}, which is not among the assets {syms}")
        (closing if p.expiry - now <= roll_seconds else kept).append(p)
    if config.monetise_delta is not None and kept:
        g_k, _, _ = _book_greeks(kept, index, s, v, now, r)
        deep = [j for j, p in enumerate(kept)
                if not p.is_call and p.quantity > 0.0 and float(g_k.delta[j]) < -config.monetise_delta]
        for j in deep:
            close_reason[len(closing)] = f"monetise: delta {float(g_k.delta[j]):+.3f} past -{config.monetise_delta:g}"
            closing.append(kept[j])
        kept = [p for j, p in enumerate(kept) if j not in set(deep)]

    # 2./4. New series.
    expiry = int(now + round(config.tenor_days * SECONDS_PER_DAY))
    tenor = options.year_fraction(expiry - now)
    has_put = {p.symbol for p in kept if not p.is_call and p.quantity > 0.0}
    has_call = {p.symbol for p in kept if p.is_call and p.quantity < 0.0}
    room = max(config.max_open_series - len(kept), 0)
    new: list[OptionPosition] = []
    choices: list[dict[str, Any]] = []
    ranked = [int(i) for i in np.argsort(-rc, kind="stable") if h[i] > 0.0]
    sc = None if scenarios is None else np.asarray(scenarios, dtype=np.float64)
    model = risk_model or RiskModelConfig()
    base_total = None
    if sc is not None:
        base_total = revalue(symbols=syms, spots=s, vols=v, spot_units=h, positions=kept, scenarios=sc, now=now,
                             horizon_days=model.horizon_days, vol_shock=model.vol_shock).sum(axis=1)

    def es_of(total: FloatArray) -> float:
        w, _ = tail_weights(-total, model.confidence)
        return float(-(w @ total) / w.sum())

    es_before = es_of(base_total) if base_total is not None else None
    for i in ranked[: config.max_put_assets]:
        if syms[i] in has_put or len(new) >= room or len(has_put) + len(new) >= config.max_put_assets:
            continue
        best: tuple[float, OptionPosition, dict[str, Any]] | None = None
        for put_delta, tenor_days in config.put_candidates:
            exp_i = int(now + round(tenor_days * SECONDS_PER_DAY))
            tau = options.year_fraction(exp_i - now)
            strike = float(options.strike_for_delta(put_delta, s[i], tau, v[i], r, 0.0, False))
            price = float(options.price(s[i], strike, tau, v[i], r, 0.0, False))
            qty = config.hedge_ratio * float(h[i])
            if config.premium_budget_bps_per_year is not None:
                held_days = tenor_days - config.roll_before_days  # a put is rolled this long after it is bought
                pace = config.premium_budget_bps_per_year * nav / BPS * held_days / 365.0 / max(config.max_put_assets, 1)
                qty = min(qty, pace / price) if price > 0.0 else qty
            if qty <= 0.0:
                continue
            candidate = OptionPosition(syms[i], strike, exp_i, False, qty)
            premium = qty * price
            choice: dict[str, Any] = {"symbol": syms[i], "put_delta": put_delta, "tenor_days": tenor_days,
                                      "strike": strike, "quantity": qty, "premium_usd": premium,
                                      "premium_per_year_usd": premium * 365.0 / tenor_days, "chosen": False}
            if base_total is not None and sc is not None:
                put_pnl = revalue(symbols=syms, spots=s, vols=v, spot_units=np.zeros(n), positions=[candidate],
                                  scenarios=sc, now=now, horizon_days=model.horizon_days,
                                  vol_shock=model.vol_shock)[:, n]
                es_after = es_of(base_total + put_pnl)
                saved = (es_before or 0.0) - es_after
                cost = choice["premium_per_year_usd"] / saved if saved > 0.0 else math.inf
                choice.update(es_before_usd=es_before, es_after_usd=es_after, cost_per_es_usd=cost)
            else:
                cost = 0.0 if best is None else math.inf  # no scenarios: the first candidate
            choices.append(choice)
            if math.isfinite(cost) and (best is None or cost < best[0]):
                best = (cost, candidate, choice)
        if best is not None:
            new.append(best[1])
            best[2]["chosen"] = True
    if config.parity is not None and new:
        new = _parity(config.parity, new, kept, index, s, v, now, r)
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
            reason = close_reason.get(j) or (
                "expired" if p.expiry <= now else f"roll: {((p.expiry - now) / SECONDS_PER_DAY):.2f} days to expiry")
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
        o = order("open", p, qty, g_new, j,
                  f"{kind}: delta {float(g_new.delta[j]):+.3f}, {(p.expiry - now) / SECONDS_PER_DAY:g} days")
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
        choices=tuple(choices),
    )
