r"""Risk of a book of spot and European options by full revaluation on scenarios, with Euler contributions
(chain-free, pure functions; the convex risk model of the options mode).

A delta view of an option book misses what a protective put is for: its value rises faster the further the
underlying falls. Here every option is **repriced with Black-Scholes** (:func:`keeper.options.price`) under
each scenario, so a put's convexity and the implied vol's rise in a sell-off enter the loss distribution.

Scenarios (one row per scenario, one column per asset, horizon ``horizon_days``)
------------------------------------------------------------------------------
* ``"historical"``: the window's daily simple returns as they happened, :math:`r_{t,i}`.
* ``"filtered"`` (filtered historical simulation, Barone-Adesi, Giannopoulos & Vosper 1999): each return is
  divided by its asset's EWMA volatility forecast made the day before, :math:`z_{t,i} = r_{t,i}/\hat\sigma_{t,i}`,
  and rescaled by today's forecast, :math:`r^*_{t,i} = z_{t,i}\hat\sigma_{T+1,i}`; the rows keep the dates, so the
  cross-asset dependence of the days is kept. :math:`\hat\sigma^2_{t+1} = \lambda\hat\sigma^2_t + (1-\lambda)r^2_t`,
  :math:`\lambda = 2^{-1/h}` for half-life :math:`h` days, seeded with the window's mean square.

Implied vol moves with the return (:class:`VolShock`): the scenario's vol of asset :math:`i` is
:math:`\sigma'_i = \sigma_i \exp(\beta\, r_i)`, clipped to ``[min_vol, max_vol]``. :math:`\beta` is the slope of
the regression of the daily log change of implied vol on the underlying's simple return
(:func:`estimate_vol_return_beta`); on Deribit's DVOL against BTC's daily closes 2021-03-24..2021-12-31 it is
-0.46 (276 days, correlation -0.42), the default: a 10 % fall raises implied vol by about 4.7 % of itself.
(Over 2022 alone the slope was -1.06: the default is the one fitted before the period the backtest reports.)

Valuation
---------
Spot position :math:`i` (units :math:`h_i`, price :math:`S_i`): :math:`P\&L = h_i S_i r_i`. Option :math:`j` on
asset :math:`i` (signed quantity :math:`q_j`): :math:`P\&L = q_j\,[BS(S_i(1+r_i), K_j, \tau_j - h, \sigma'_i) -
BS(S_i, K_j, \tau_j, \sigma_i)]` with :math:`h` the horizon in years (an option expiring within the horizon is
valued at its payoff). Loss :math:`L = -\sum P\&L`.

Measures and Euler allocation
-----------------------------
* Volatility: the standard deviation of the book's P&L over the scenarios (equal weights, ``ddof = 0``); position
  :math:`j`'s contribution is :math:`\mathrm{cov}(P\&L_j, P\&L)/\sigma` (Euler), which sums to :math:`\sigma`.
* VaR and ES at confidence :math:`\alpha` with the project's historical convention
  (:mod:`keeper.risk_measures`): tail mass :math:`m = (1-\alpha)N` scenarios; the worst :math:`\lfloor m\rfloor`
  losses count fully and the next one with weight :math:`m - \lfloor m\rfloor`; ES is the weighted mean of the
  tail losses, VaR the loss of the last scenario in the tail. Position :math:`j`'s ES contribution is the same
  weighted mean of :math:`-P\&L_j` over the same tail scenarios, :math:`E[-P\&L_j \mid \text{tail}]`: the Euler
  allocation of ES (Tasche 1999) for a scenario set, and the contributions sum to ES exactly (up to float
  summation, one ulp per position).

Units: USD floats for values (positions in whole units of the underlying, as :mod:`keeper.greeks`); fractions of
NAV where named ``*_fraction``; vols annualised fractions; times Unix seconds; 365-day years.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import numpy.typing as npt

from keeper import options
from keeper.errors import ConfigError
from keeper.greeks import OptionPosition
from keeper.units import SECONDS_PER_DAY

__all__ = [
    "VolShock",
    "RiskModelConfig",
    "BookRisk",
    "scenario_returns",
    "revalue",
    "book_risk",
    "tail_weights",
    "estimate_vol_return_beta",
    "max_spot_scale_for_es",
]

FloatArray = npt.NDArray[np.float64]

#: Slope of the daily log change of BTC implied vol (Deribit DVOL) on BTC's daily simple return, fitted on
#: 2021-03-24..2021-12-31 (276 days): the default of :class:`VolShock`.
DVOL_BETA_2021 = -0.46


@dataclass(frozen=True)
class VolShock:
    r"""Implied vol moves with the underlying: :math:`\sigma' = \sigma\,e^{\beta r}` clipped to ``[min_vol, max_vol]``.

    Attributes
    ----------
    beta : float
        d ln(implied vol) per unit simple return of the underlying (<= 0 in crypto: vol rises in a fall).
    min_vol, max_vol : float
        Bounds of a scenario's vol, annualised fractions.
    """

    beta: float = DVOL_BETA_2021
    min_vol: float = 0.05
    max_vol: float = 5.0

    def __post_init__(self) -> None:
        if not math.isfinite(self.beta) or not (0.0 < self.min_vol < self.max_vol and math.isfinite(self.max_vol)):
            raise ConfigError(f"VolShock beta={self.beta!r} must be finite and 0 < min_vol={self.min_vol!r} < "
                              f"max_vol={self.max_vol!r} finite")

    def apply(self, vols: FloatArray, returns: FloatArray) -> FloatArray:
        """Scenario vols, shape of ``returns`` (``vols`` broadcast along the last axis)."""
        return np.clip(vols * np.exp(self.beta * returns), self.min_vol, self.max_vol)


@dataclass(frozen=True)
class RiskModelConfig:
    """How scenarios are built and measured.

    Attributes
    ----------
    method : {"historical", "filtered"}
        Scenario set (module doc).
    confidence : float
        VaR/ES confidence, in [0.5, 1). The default 0.95 leaves 4.5 tail scenarios in a 90-day window (9 in 180
        days): the overlay ranks and compares puts on it; the policy's ES limit keeps its own confidence.
    horizon_days : int
        Scenario horizon; > 1 compounds overlapping daily returns (buy and hold over the horizon).
    half_life_days : float
        EWMA half-life of the filtered scenarios' volatility forecasts.
    vol_shock : VolShock
    """

    method: str = "filtered"
    confidence: float = 0.95
    horizon_days: int = 1
    half_life_days: float = 30.0
    vol_shock: VolShock = field(default_factory=VolShock)

    def __post_init__(self) -> None:
        if self.method not in ("historical", "filtered"):
            raise ConfigError(f"RiskModelConfig.method is {self.method!r}; use 'historical' or 'filtered'")
        if not 0.5 <= self.confidence < 1.0:
            raise ConfigError(f"RiskModelConfig.confidence is {self.confidence!r}; it must be in [0.5, 1)")
        if self.horizon_days < 1:
            raise ConfigError(f"RiskModelConfig.horizon_days is {self.horizon_days!r}; it must be >= 1")
        if not (math.isfinite(self.half_life_days) and self.half_life_days > 0.0):
            raise ConfigError(f"RiskModelConfig.half_life_days is {self.half_life_days!r}; it must be > 0")


def scenario_returns(returns: npt.ArrayLike, config: RiskModelConfig) -> FloatArray:
    """Scenario simple returns over ``config.horizon_days``, shape (n_scenarios, n_assets).

    Parameters
    ----------
    returns : array_like, shape (n_obs, n_assets)
        Daily simple returns, oldest first, finite, > -1.

    Raises
    ------
    ConfigError
        Wrong shape, non-finite values or returns <= -1, fewer observations than the horizon needs.
    """
    r = np.asarray(returns, dtype=np.float64)
    if r.ndim != 2 or r.shape[0] < 2:
        raise ConfigError(f"returns has shape {r.shape}; expected (n_obs >= 2, n_assets) daily simple returns")
    if not np.isfinite(r).all() or (r <= -1.0).any():
        row = int(np.argmax(~np.isfinite(r).all(axis=1) | (r <= -1.0).any(axis=1)))
        raise ConfigError(f"returns row {row} is {r[row].tolist()}; returns must be finite and > -1")
    if config.method == "filtered":
        lam = 2.0 ** (-1.0 / config.half_life_days)
        var = np.empty_like(r)
        v = np.mean(r * r, axis=0)  # seed: the window's mean square
        for t in range(r.shape[0]):
            var[t] = v  # forecast made before day t's return is known
            v = lam * v + (1.0 - lam) * r[t] * r[t]
        forecast = np.sqrt(v)
        sd = np.sqrt(var)
        safe = np.where(sd > 0.0, sd, 1.0)
        r = np.where(sd > 0.0, r / safe * forecast, 0.0)
        r = np.maximum(r, -0.999)  # a rescaled return cannot take a price below zero
    h = config.horizon_days
    if h == 1:
        return r
    if r.shape[0] < h:
        raise ConfigError(f"{r.shape[0]} daily returns cannot make {h}-day scenarios")
    log = np.cumsum(np.log1p(r), axis=0)
    log = np.vstack([np.zeros((1, r.shape[1])), log])
    return np.expm1(log[h:] - log[:-h])


def _option_values(positions: Sequence[OptionPosition], index: dict[str, int], spots: FloatArray,
                   vols: FloatArray, seconds_from_now: FloatArray, now: int) -> FloatArray:
    """Per-unit values, shape (n_positions,) + spots.shape[:-1] (spots and vols (..., n_assets))."""
    asset = np.array([index[p.symbol] for p in positions], dtype=np.int64)
    strike = np.array([p.strike for p in positions])
    is_call = np.array([p.is_call for p in positions], dtype=bool)
    tau_s = np.array([p.expiry - now for p in positions], dtype=np.float64)
    out = []
    for j in range(len(positions)):
        s = spots[..., asset[j]]
        left = max(tau_s[j] - seconds_from_now, 0.0)
        if left <= 0.0:
            out.append(np.maximum(s - strike[j], 0.0) if is_call[j] else np.maximum(strike[j] - s, 0.0))
        else:
            out.append(options.price(s, strike[j], options.year_fraction(left), vols[..., asset[j]], 0.0, 0.0,
                                     bool(is_call[j])))
    return np.asarray(out, dtype=np.float64).reshape((len(positions),) + spots.shape[:-1])


def revalue(
    *,
    symbols: Sequence[str],
    spots: npt.ArrayLike,
    vols: npt.ArrayLike,
    spot_units: npt.ArrayLike,
    positions: Sequence[OptionPosition],
    scenarios: npt.ArrayLike,
    now: int,
    horizon_days: int = 1,
    vol_shock: VolShock | None = None,
) -> FloatArray:
    """P&L of every position under every scenario by full revaluation, USD.

    Parameters
    ----------
    symbols : sequence of str, length n_assets
    spots, vols, spot_units : array_like, shape (n_assets,)
        USD per unit (> 0); annualised implied vols (> 0); spot units held (finite).
    positions : sequence of OptionPosition
        The option book (quantities signed, whole units).
    scenarios : array_like, shape (n_scenarios, n_assets)
        Simple returns over the horizon (:func:`scenario_returns`).
    now : int
        Unix seconds.
    horizon_days : int
        Time that passes in a scenario (options lose that much time value).
    vol_shock : VolShock, optional
        Default :class:`VolShock()`.

    Returns
    -------
    ndarray of shape (n_scenarios, n_assets + n_positions)
        Columns: the spot position of each asset, then each option position.

    Raises
    ------
    ConfigError
        Shapes, non-positive spots or vols, a position on an unknown asset.
    """
    syms = tuple(symbols)
    n = len(syms)
    s = np.asarray(spots, dtype=np.float64)
    v = np.asarray(vols, dtype=np.float64)
    h = np.asarray(spot_units, dtype=np.float64)
    r = np.asarray(scenarios, dtype=np.float64)
    for name, a in (("spots", s), ("vols", v), ("spot_units", h)):
        if a.shape != (n,) or not np.isfinite(a).all():
            raise ConfigError(f"{name} is {a.tolist()}; expected {n} finite values for {syms}")
    if (s <= 0.0).any() or (v <= 0.0).any():
        raise ConfigError(f"spots and vols must be > 0, got spots={s.tolist()} vols={v.tolist()}")
    if r.ndim != 2 or r.shape[1] != n or not np.isfinite(r).all() or (r <= -1.0).any():
        raise ConfigError(f"scenarios has shape {r.shape}; expected (n_scenarios, {n}) finite returns > -1")
    index = {sym: i for i, sym in enumerate(syms)}
    unknown = sorted({p.symbol for p in positions if p.symbol not in index})
    if unknown:
        raise ConfigError(f"option positions on {unknown}, which are not among the assets {syms}")
    shock = vol_shock or VolShock()
    spot_pnl = r * (h * s)
    if not positions:
        return spot_pnl
    horizon_s = float(horizon_days * SECONDS_PER_DAY)
    qty = np.array([p.quantity for p in positions])
    base = _option_values(positions, index, s[None, :], v[None, :], 0.0, now)[:, 0]
    moved = _option_values(positions, index, s * (1.0 + r), shock.apply(v, r), horizon_s, now)
    option_pnl = (qty[:, None] * (moved - base[:, None])).T
    return np.hstack([spot_pnl, option_pnl])


def tail_weights(losses: npt.ArrayLike, confidence: float) -> tuple[FloatArray, float]:
    """Weights of the scenarios in the ES tail and the VaR.

    The worst ``floor(m)`` losses weigh 1, the next ``m - floor(m)``, the rest 0, with ``m = (1-confidence) N``
    (snapped to an integer within 1e-9 N, as :mod:`keeper.risk_measures`); ties are broken by scenario order.

    Returns
    -------
    weights : ndarray (n_scenarios,)
        Sum to ``m``.
    var : float
        The loss of the last scenario the tail reaches.

    Raises
    ------
    ConfigError
        Fewer scenarios than one tail scenario needs (m < 1).
    """
    loss = np.asarray(losses, dtype=np.float64)
    n = loss.size
    m = (1.0 - confidence) * n
    if abs(m - round(m)) <= 1e-9 * n:
        m = float(round(m))
    if m < 1.0:
        raise ConfigError(f"{n} scenarios leave {m:.3g} in the {confidence:.1%} tail; ES needs at least "
                          f"{math.ceil(1.0 / (1.0 - confidence))} scenarios")
    order = np.argsort(-loss, kind="stable")
    full = int(math.floor(m))
    w = np.zeros(n)
    w[order[:full]] = 1.0
    last = order[full - 1]
    if m > full:
        w[order[full]] = m - full
        last = order[full]
    return w, float(loss[last])


@dataclass(frozen=True, eq=False)
class BookRisk:
    """Risk of a book by full revaluation; values USD unless named ``*_fraction``.

    Attributes
    ----------
    symbols : tuple of str
    labels : tuple of str
        One per position: ``"spot:BTC"``, then ``"put:BTC:K=25000:exp=1650000000"`` ... (column order of ``pnl``).
    position_asset : ndarray of int (n_positions,)
        Asset index of each position.
    pnl : ndarray (n_scenarios, n_positions)
        Full-revaluation P&L per scenario and position.
    var, es, volatility : float
        Of the book's loss (VaR and ES positive = loss) over the horizon.
    es_contributions, volatility_contributions : ndarray (n_positions,)
        Euler contributions; they sum to ``es`` and ``volatility``.
    nav : float
    confidence : float
    method : str
    """

    symbols: tuple[str, ...]
    labels: tuple[str, ...]
    position_asset: npt.NDArray[np.int64]
    pnl: FloatArray
    var: float
    es: float
    volatility: float
    es_contributions: FloatArray
    volatility_contributions: FloatArray
    nav: float
    confidence: float
    method: str

    @property
    def es_fraction(self) -> float:
        """ES as a fraction of NAV."""
        return self.es / self.nav

    @property
    def asset_es_contributions(self) -> FloatArray:
        """ES contributions summed per asset (spot plus its options), USD, shape (n_assets,)."""
        return np.bincount(self.position_asset, self.es_contributions, minlength=len(self.symbols))

    @property
    def asset_volatility_contributions(self) -> FloatArray:
        """Volatility contributions per asset, USD, shape (n_assets,)."""
        return np.bincount(self.position_asset, self.volatility_contributions, minlength=len(self.symbols))

    def as_dict(self) -> dict[str, Any]:
        """JSON-able summary (no scenario arrays) for the journal."""
        return {
            "method": self.method, "confidence": self.confidence, "nav_usd": self.nav,
            "var_usd": self.var, "es_usd": self.es, "es_fraction": self.es_fraction,
            "volatility_usd": self.volatility,
            "es_contributions_usd": dict(zip(self.labels, self.es_contributions.tolist())),
            "asset_es_contributions_usd": dict(zip(self.symbols, self.asset_es_contributions.tolist())),
            "asset_volatility_contributions_usd": dict(zip(self.symbols, self.asset_volatility_contributions.tolist())),
        }


def _label(p: OptionPosition) -> str:
    return f"{'call' if p.is_call else 'put'}:{p.symbol}:K={p.strike:.6g}:exp={p.expiry}"


def book_risk(
    config: RiskModelConfig,
    *,
    symbols: Sequence[str],
    spots: npt.ArrayLike,
    vols: npt.ArrayLike,
    spot_units: npt.ArrayLike,
    positions: Sequence[OptionPosition],
    returns: npt.ArrayLike | None = None,
    scenarios: npt.ArrayLike | None = None,
    nav: float,
    now: int,
) -> BookRisk:
    """VaR, ES and volatility of spot plus options by full revaluation, with Euler contributions per position.

    Parameters
    ----------
    config : RiskModelConfig
    symbols, spots, vols, spot_units, positions, now
        As :func:`revalue`.
    returns : array_like (n_obs, n_assets), optional
        Daily simple returns from which :func:`scenario_returns` builds the scenarios.
    scenarios : array_like (n_scenarios, n_assets), optional
        Scenario returns over the horizon, used as given (exactly one of ``returns``/``scenarios``).
    nav : float
        USD, > 0 (for the fractions).

    Raises
    ------
    ConfigError
        Both or neither of ``returns``/``scenarios``; as :func:`scenario_returns`, :func:`revalue` and
        :func:`tail_weights`; a non-positive NAV.
    """
    if (returns is None) == (scenarios is None):
        raise ConfigError("book_risk needs exactly one of returns (daily history) or scenarios (horizon returns)")
    if not (math.isfinite(nav) and nav > 0.0):
        raise ConfigError(f"nav is {nav!r}; it must be a positive USD amount")
    sc = scenario_returns(returns, config) if returns is not None else np.asarray(scenarios, dtype=np.float64)
    pnl = revalue(symbols=symbols, spots=spots, vols=vols, spot_units=spot_units, positions=positions,
                  scenarios=sc, now=now, horizon_days=config.horizon_days, vol_shock=config.vol_shock)
    syms = tuple(symbols)
    index = {s: i for i, s in enumerate(syms)}
    total = pnl.sum(axis=1)
    w, var = tail_weights(-total, config.confidence)
    m = float(w.sum())
    contributions = -(w @ pnl) / m
    es = float(-(w @ total) / m)
    centred = pnl - pnl.mean(axis=0)
    tc = total - total.mean()
    vol = float(np.sqrt(np.mean(tc * tc)))
    vol_contrib = (centred.T @ tc) / (tc.size * vol) if vol > 0.0 else np.zeros(pnl.shape[1])
    return BookRisk(
        symbols=syms,
        labels=tuple(f"spot:{s}" for s in syms) + tuple(_label(p) for p in positions),
        position_asset=np.array(list(range(len(syms))) + [index[p.symbol] for p in positions], dtype=np.int64),
        pnl=pnl, var=var, es=es, volatility=vol, es_contributions=contributions,
        volatility_contributions=vol_contrib, nav=float(nav), confidence=config.confidence, method=config.method,
    )


def estimate_vol_return_beta(implied_vols: npt.ArrayLike, closes: npt.ArrayLike) -> tuple[float, float, int]:
    r"""Least-squares slope of :math:`\Delta \ln \sigma^{impl}_t` on the simple return :math:`r_t` of the same days.

    Parameters
    ----------
    implied_vols, closes : array_like, shape (n_days,)
        Aligned daily implied vols (> 0) and closes (> 0); NaN rows are dropped in pairs.

    Returns
    -------
    beta, correlation, n_pairs
    Raises
    ------
    ConfigError
        Shapes differ, fewer than 10 usable pairs, non-positive values.
    """
    iv = np.asarray(implied_vols, dtype=np.float64)
    px = np.asarray(closes, dtype=np.float64)
    if iv.shape != px.shape or iv.ndim != 1:
        raise ConfigError(f"implied_vols {iv.shape} and closes {px.shape} must be aligned 1-d series")
    with np.errstate(invalid="ignore", divide="ignore"):
        dlog = np.diff(np.log(iv))
        ret = px[1:] / px[:-1] - 1.0
    ok = np.isfinite(dlog) & np.isfinite(ret)
    if ok.sum() < 10:
        raise ConfigError(f"only {int(ok.sum())} days have both an implied-vol change and a return; need >= 10")
    x, y = ret[ok], dlog[ok]
    beta, _ = np.polyfit(x, y, 1)
    return float(beta), float(np.corrcoef(x, y)[0, 1]), int(ok.sum())


def max_spot_scale_for_es(risk: BookRisk, es_limit_usd: float, iterations: int = 40) -> float:
    r"""Largest :math:`k \in [0, 1]` such that the book with every spot position times :math:`k` (options unchanged)
    has ES at most ``es_limit_usd`` on ``risk``'s scenarios and confidence.

    ES is convex in :math:`k` (subadditive and positively homogeneous), so :math:`\{k : ES(k) \le L\}` is an
    interval and bisection finds its upper end to :math:`2^{-\text{iterations}}`. Returns 1.0 when the book is
    within the limit and 0.0 when even the options alone are not.
    """
    n = len(risk.symbols)
    spot, opt = risk.pnl[:, :n].sum(axis=1), risk.pnl[:, n:].sum(axis=1)

    def es(k: float) -> float:
        total = k * spot + opt
        w, _ = tail_weights(-total, risk.confidence)
        return float(-(w @ total) / w.sum())

    if es(1.0) <= es_limit_usd:
        return 1.0
    if es(0.0) > es_limit_usd:
        return 0.0
    lo, hi = 0.0, 1.0
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        if es(mid) <= es_limit_usd:
            lo = mid
        else:
            hi = mid
    return lo
