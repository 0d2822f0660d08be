"""Trade planning: current holdings and target weights to the swap legs of one rebalance.

Pure integer/array code: amounts are computed exactly as the vault computes them (floor division on
the same fixed-point formula), so every ``minAmountOut`` passes the vault's oracle bound by
construction.

Value of ``amount`` of a risk token in base-asset units (the vault's ``_valueOf``)::

    value = amount × answer × 10^base_decimals // 10^(token_decimals + feed_decimals)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import numpy.typing as npt

from keeper.errors import ConfigError
from keeper.oracle import PriceSnapshot, RiskAssetInfo, VaultState
from keeper.units import BPS

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class SwapLeg:
    """One swap of a rebalance. Amounts in the tokens' smallest units; ``value`` in base-asset units."""

    symbol: str
    side: str  # "sell" (risk -> base) or "buy" (base -> risk)
    token_in: str
    token_out: str
    amount_in: int
    min_amount_out: int
    oracle_amount_out: int
    value: int

    def as_tuple(self) -> tuple[str, str, int, int]:
        """ABI tuple of the vault's ``SwapLeg`` struct."""
        return (self.token_in, self.token_out, self.amount_in, self.min_amount_out)


@dataclass(frozen=True)
class Holdings:
    """Holdings valued at the oracle, base-asset units (exactly as the vault values them)."""

    values: tuple[int, ...]
    base_balance: int
    nav: int

    @property
    def weights(self) -> FloatArray:
        """Fractions of NAV per risk asset, shape (n_assets,)."""
        return np.array(self.values, dtype=np.float64) / self.nav if self.nav else np.zeros(len(self.values))


@dataclass(frozen=True)
class RebalancePlan:
    """A rebalance to send, or a decision not to (``legs`` empty and ``skip_reason`` set).

    Attributes
    ----------
    current_weights, target_weights : ndarray of shape (n_assets,)
        Fractions of NAV in each risk asset now and after the plan (the rest is the base asset).
    drift_bps : float
        max |current − target| over the risk assets and the cash sleeve, bps of NAV.
    turnover_bps : float
        Σ leg values over NAV, bps (the vault's definition).
    min_nav_after : int
        NAV floor passed to the vault: NAV before less each leg's slippage allowance, base units.
    """

    legs: tuple[SwapLeg, ...]
    expected_epoch: int
    deadline: int
    nav_before: int
    min_nav_after: int
    current_weights: FloatArray
    target_weights: FloatArray
    drift_bps: float
    turnover_bps: float
    slippage_bps: int
    skip_reason: str | None = None
    #: Option trades sent beside the swaps through ``rebalanceWithOptions`` (:class:`keeper.option_orders.OptionLeg`);
    #: empty for a spot-only ``rebalance``. ``min_nav_after`` then covers both (see ``option_orders.with_option_legs``).
    option_legs: tuple = ()


# 10**k for the decimals a token, feed or base asset can have (ERC-20 decimals are a uint8): a table look-up
# instead of an integer power in the valuation the replay runs for every holding of every day.
_POW10 = tuple(10**k for k in range(2 * 256))


def value_of(amount: int, answer: int, info: RiskAssetInfo, base_decimals: int) -> int:
    """Base-asset value of ``amount`` token units at feed ``answer`` (floor), as the vault computes it."""
    return amount * answer * _POW10[base_decimals] // _POW10[info.token_decimals + info.feed_decimals]


def amount_for_value(value: int, answer: int, info: RiskAssetInfo, base_decimals: int) -> int:
    """Token units worth ``value`` base units at feed ``answer`` (floor), as the vault computes it."""
    return value * _POW10[info.token_decimals + info.feed_decimals] // (answer * _POW10[base_decimals])


def value_holdings(snapshot: PriceSnapshot, state: VaultState, assets: Sequence[RiskAssetInfo]) -> Holdings:
    """Values the vault's holdings at the snapshot's oracle answers."""
    values = tuple(
        value_of(b, a, info, state.base_decimals) for b, a, info in zip(state.balances, snapshot.answers, assets)
    )
    return Holdings(values=values, base_balance=state.base_balance, nav=state.base_balance + sum(values))


def _min_out(oracle_out: int, slippage_bps: int) -> int:
    # Rounded up, matching the vault's bound, so the leg never asks for less than the vault allows.
    return -(-oracle_out * (BPS - slippage_bps) // BPS)


def plan_rebalance(
    snapshot: PriceSnapshot,
    state: VaultState,
    assets: Sequence[RiskAssetInfo],
    target_weights: FloatArray,
    *,
    cash_buffer_bps: float,
    slippage_budget_bps: float,
    drift_threshold_bps: float,
    min_trade_value: int,
    deadline: int,
    fraction: float = 1.0,
    holdings: Holdings | None = None,
) -> RebalancePlan:
    """Plans the legs that move the vault from its holdings to ``target_weights``.

    Targets: risk asset i is worth ``NAV × (1 − cash_buffer) × w_i``; the rest stays in the base asset
    for withdrawals. Sells come first and fund the buys; buys are scaled down if the sells' guaranteed
    proceeds (their ``minAmountOut``) plus the idle balance cannot pay for them; the whole plan is
    scaled down if it would trade more than the vault's turnover cap or its rolling turnover budget
    (``state.turnover_budget_remaining``). Legs worth less than
    ``min_trade_value`` are dropped.

    Parameters
    ----------
    target_weights : ndarray of shape (n_assets,)
        Weights of the risky sleeve (sum to 1, long only), e.g. the ERC solution.
    cash_buffer_bps, slippage_budget_bps, drift_threshold_bps : float
        Basis points. The slippage budget is clamped to the vault's ``maxSlippageBps``.
    min_trade_value : int
        Base-asset units.
    deadline : int
        Unix seconds.
    fraction : float
        Share of the move to make, in (0, 1]: a partial step toward the targets (used when the pools
        cannot absorb the whole move within the slippage budget).
    holdings : Holdings, optional
        ``value_holdings(snapshot, state, assets)`` when the caller has it already (valued once per tick).

    Raises
    ------
    ConfigError
        Target weights of the wrong shape, negative, or not summing to 1.
    """
    n = len(assets)
    w = np.asarray(target_weights, dtype=np.float64)
    # Each weight finite and >= -1e-12 (NaN fails the comparison), tested on a list: n is small.
    if w.shape != (n,) or not all(-1e-12 <= x < math.inf for x in w.tolist()) or abs(w.sum() - 1.0) > 1e-6:
        raise ConfigError(f"target weights must be {n} non-negative numbers summing to 1, got {w!r}")
    if holdings is None:
        holdings = value_holdings(snapshot, state, assets)
    nav = holdings.nav
    risky_fraction = 1.0 - cash_buffer_bps / BPS
    target_nav_fraction = w * risky_fraction
    current = holdings.weights
    slippage = int(min(slippage_budget_bps, state.max_slippage_bps))

    def skip(reason: str, drift: float = 0.0) -> RebalancePlan:
        return RebalancePlan((), state.rebalance_epoch, deadline, nav, nav, current, target_nav_fraction,
                             drift, 0.0, slippage, skip_reason=reason)

    if nav == 0:
        return skip("vault is empty")
    cash_now = holdings.base_balance / nav
    # Element by element on lists (the same IEEE operations as the arrays'; the weights are finite).
    targets = target_nav_fraction.tolist()
    drift = float(max(max((abs(c - t) for c, t in zip(current.tolist(), targets)), default=-math.inf),
                      abs(cash_now - (1.0 - risky_fraction)))) * BPS
    if drift < drift_threshold_bps:
        return skip(f"drift {drift:.1f} bps below threshold {drift_threshold_bps:.1f} bps", drift)

    deltas = [int(round(nav * t)) - v for t, v in zip(targets, holdings.values)]
    # Scale the whole move down to respect the vault's turnover cap (with one bps of headroom for rounding).
    gross = sum(abs(d) for d in deltas)
    cap = max(state.max_turnover_bps - 1, 0) * nav // BPS
    if cap == 0:
        return skip(f"the vault's turnover cap ({state.max_turnover_bps} bps) allows no trade", drift)
    # ... and what the vault's rolling turnover budget still allows (one bps of NAV kept for rounding).
    if state.turnover_budget_remaining is not None:
        cap = min(cap, max(state.turnover_budget_remaining - nav // BPS, 0))
        if cap == 0:
            return skip(f"the vault's rolling turnover budget is spent ({state.turnover_budget_remaining} base "
                        "units left)", drift)
    if not 0.0 < fraction <= 1.0:
        raise ConfigError(f"fraction must be in (0, 1], got {fraction}")
    scale = min(fraction, cap / gross) if gross else fraction

    smallest = max(min_trade_value, 1)
    answers, base_decimals, base_asset = snapshot.answers, state.base_decimals, state.base_asset
    sells: list[SwapLeg] = []
    buys_wanted: list[tuple[int, int]] = []
    for i, (info, d) in enumerate(zip(assets, deltas)):
        d = int(d * scale)
        if -d >= smallest:
            amount = min(amount_for_value(-d, answers[i], info, base_decimals), state.balances[i])
            oracle_out = value_of(amount, answers[i], info, base_decimals)
            if amount > 0 and oracle_out >= smallest:
                sells.append(SwapLeg(info.symbol, "sell", info.token, base_asset, amount,
                                     _min_out(oracle_out, slippage), oracle_out, oracle_out))
        elif d >= smallest:
            buys_wanted.append((i, d))

    cash = holdings.base_balance + sum(leg.min_amount_out for leg in sells)
    total_buys = sum(d for _, d in buys_wanted)
    buys: list[SwapLeg] = []
    for i, d in buys_wanted:
        info = assets[i]
        # Integer pro-rata scaling: the buys never spend more than the guaranteed cash (no float rounding).
        spend = d if total_buys <= cash else d * cash // total_buys
        oracle_out = amount_for_value(spend, answers[i], info, base_decimals)
        if spend >= smallest and oracle_out > 0:
            buys.append(SwapLeg(info.symbol, "buy", base_asset, info.token, spend,
                                _min_out(oracle_out, slippage), oracle_out, spend))
    legs = tuple(sells + buys)
    if not legs:
        return skip(f"drift {drift:.1f} bps but every leg is below the minimum trade", drift)
    allowance = sum(-(-leg.value * slippage // BPS) + 1 for leg in legs)
    turnover = sum(leg.value for leg in legs) * BPS / nav
    return RebalancePlan(legs, state.rebalance_epoch, deadline, nav, max(nav - allowance, 0), current,
                         target_nav_fraction, drift, turnover, slippage)


@dataclass(frozen=True)
class SleeveTargets:
    """Planner inputs equivalent to spot targets given as fractions of the vault's NAV.

    Attributes
    ----------
    weights : ndarray of shape (n_assets,)
        Risky-sleeve weights, sum to 1 (uniform when every target is 0; the cash buffer is then 100 %).
    cash_buffer_bps : float
        Cash buffer for :func:`plan_rebalance`, bps of the spot NAV (base balance plus risk assets).
    scale : float
        Factor in (0, 1] applied to the targets so that the cash left after the swaps covers
        ``reserved_cash``; 1 when they fit.
    """

    weights: FloatArray
    cash_buffer_bps: float
    scale: float


def sleeve_targets(
    nav_fractions: npt.ArrayLike,
    nav: int,
    spot_nav: int,
    *,
    reserved_cash: int = 0,
) -> SleeveTargets:
    r"""Converts spot targets as fractions of the vault's NAV into :func:`plan_rebalance`'s inputs.

    :func:`keeper.hedging.hedge_trades` states each asset's spot target as a fraction ``f_i`` of the
    vault's NAV (``totalAssets()``, option positions at their mark included); the planner wants
    risky-sleeve weights ``w`` summing to 1 and a cash buffer ``c`` over the *spot* NAV ``N_s`` (base
    balance plus risk assets, which excludes the options). The target values must agree:

    .. math:: N_s (1 - c) w_i = s f_i N, \quad w_i = f_i / 	extstyle\sum_j f_j, \quad
              1 - c = s 	extstyle\sum_j f_j N / N_s

    with ``s = min(1, (N_s - reserved_cash) / (Σ f N))``: the base balance left after the swaps must
    pay ``reserved_cash`` (e.g. the premium limits of options bought in the same transaction).

    Parameters
    ----------
    nav_fractions : array_like of shape (n_assets,)
        Spot targets, fractions of ``nav``, >= 0 (``HedgeOrders.spot_target_weights``).
    nav, spot_nav : int
        Base-asset units: the vault's ``totalAssets()`` and the spot NAV (``Holdings.nav``).
    reserved_cash : int
        Base-asset units to leave in the base asset, >= 0.

    Raises
    ------
    ConfigError
        Negative or non-finite fractions, a non-positive NAV, a negative reserve, or a reserve above
        the spot NAV.
    """
    f = np.asarray(nav_fractions, dtype=np.float64)
    if f.ndim != 1 or not np.all(np.isfinite(f)) or np.any(f < 0.0):
        raise ConfigError(f"nav_fractions must be finite and >= 0, got {f!r}")
    if nav <= 0 or spot_nav <= 0:
        raise ConfigError(f"nav {nav} and spot_nav {spot_nav} must be positive (base units)")
    if not 0 <= reserved_cash <= spot_nav:
        raise ConfigError(f"reserved_cash {reserved_cash} must be in [0, spot NAV {spot_nav}] (base units)")
    total = float(f.sum())
    if total == 0.0:
        return SleeveTargets(np.full(f.size, 1.0 / f.size), float(BPS), 1.0)
    wanted = total * nav
    scale = min(1.0, (spot_nav - reserved_cash) / wanted)
    risky = scale * wanted / spot_nav
    return SleeveTargets(f / total, (1.0 - risky) * BPS, scale)
