"""The tick's target allocation (chain-free): a risk-budgeted risky sleeve scaled to a
volatility target, the rest in cash, with a fallback chain.

:func:`allocate` takes the fully invested sleeve of
:func:`keeper.constrained_risk_budgeting.solve_risk_budgeting` (risk budgeting, within per-asset
bounds when given), scales it to a volatility target under a gross-exposure cap of at most 1 (the
vault never borrows), puts the rest in the base asset, and falls back risk budgeting -> inverse
volatility -> previous weights.  The baselines :func:`inverse_volatility_weights` and
:func:`equal_weights` are also allocators of their own, for backtests.

Weights are fractions of NAV, shape (n,); the covariance is (n, n), annualised with 365 days a
year in the keeper, and volatilities are in its unit.

References
----------
.. [2] T. Roncalli, "Introduction to Risk Parity and Budgeting", Chapman &
   Hall/CRC, 2013 (risk contributions, Euler allocation, ERC properties).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from keeper.constrained_risk_budgeting import _validate_bounds, bounded_normalise, solve_risk_budgeting
from keeper.errors import (
    AllocationFailedError,
    ConfigError,
    SingularCovarianceError,
    SolverDidNotConvergeError,
)
from keeper.memo import BoundedMemo, array_key
from keeper.risk_budgeting import FloatArray, TargetWeights, _freeze, _validate_budget

__all__ = [
    "inverse_volatility_weights",
    "equal_weights",
    "Allocation",
    "allocate",
    "METHOD_RISK_BUDGETING",
    "METHOD_INVERSE_VOLATILITY",
    "METHOD_PREVIOUS",
    "METHOD_EQUAL_WEIGHT",
]


# --------------------------------------------------------------------------- #
# Baselines
# --------------------------------------------------------------------------- #
def inverse_volatility_weights(covariance: npt.ArrayLike) -> FloatArray:
    """Inverse-volatility weights :math:`w_i = \\sigma_i^{-1} / \\sum_j \\sigma_j^{-1}`.

    Equal to the ERC solution when correlations are all equal (in particular
    for a diagonal covariance) [2]_.

    Parameters
    ----------
    covariance : array_like, shape (n, n)
        Covariance with a strictly positive, finite diagonal (off-diagonal
        entries are ignored).

    Returns
    -------
    FloatArray, shape (n,)
        Positive weights summing to 1.

    Raises
    ------
    SingularCovarianceError
        If the covariance is not square or a variance is not finite and > 0.
    """
    cov = np.asarray(covariance, dtype=np.float64)
    if cov.ndim != 2 or cov.shape[0] != cov.shape[1] or cov.shape[0] == 0:
        raise SingularCovarianceError(
            f"covariance has shape {cov.shape}; it must be a non-empty square matrix."
        )
    variances = np.diag(cov)
    if not (np.isfinite(variances).all() and (variances > 0.0).all()):
        i = int(np.argmax(~(np.isfinite(variances) & (variances > 0.0))))
        raise SingularCovarianceError(
            f"variance of asset {i} is {variances[i]!r}; variances must be finite "
            "and > 0. Re-estimate the covariance or drop the asset."
        )
    inv_vol = 1.0 / np.sqrt(variances)
    return inv_vol / inv_vol.sum()


def equal_weights(n: int) -> FloatArray:
    """Equal weights :math:`w_i = 1/n`.

    Parameters
    ----------
    n : int
        Number of assets, ``>= 1``.

    Returns
    -------
    FloatArray, shape (n,)

    Raises
    ------
    ConfigError
        If ``n`` is not a positive integer.
    """
    if isinstance(n, bool) or int(n) != n or n < 1:
        raise ConfigError(f"n is {n!r}; the number of assets must be an integer >= 1.")
    return np.full(int(n), 1.0 / int(n))



# --------------------------------------------------------------------------- #
# Allocation: risky sleeve, cash sleeve, volatility target, fallback chain
# --------------------------------------------------------------------------- #
METHOD_RISK_BUDGETING = "risk_budgeting"
METHOD_INVERSE_VOLATILITY = "inverse_volatility"
METHOD_PREVIOUS = "previous"
METHOD_EQUAL_WEIGHT = "equal_weight"
_ALLOCATORS = (METHOD_RISK_BUDGETING, METHOD_INVERSE_VOLATILITY, METHOD_EQUAL_WEIGHT)
# Slack on the sum of previous weights (they come from on-chain balances).
_PREVIOUS_SUM_ATOL = 1e-9


@dataclass(frozen=True, eq=False)  # arrays: identity equality, no ambiguous ==
class Allocation:
    """Target of one tick: risky weights, cash weight and how they were obtained.

    All weights are fractions of NAV; the cash (base asset) sleeve has zero
    volatility and zero correlation with the risky assets.  Arrays are
    read-only.

    Attributes
    ----------
    weights : FloatArray, shape (n,)
        Risky weights :math:`\\mathrm{scale} \\cdot w^{sleeve}`, each >= 0,
        summing to ``gross_exposure``.
    cash_weight : float
        :math:`1 - \\sum_i` ``weights``, in [0, 1].
    sleeve_weights : FloatArray, shape (n,)
        Fully invested risky sleeve (sums to 1) before scaling.
    scale : float
        Leverage applied to the sleeve, :math:`\\mathrm{scale} = \\sum_i`
        ``weights`` (``<= max_gross_exposure <= 1``: the vault never borrows).
    gross_exposure : float
        Same number as ``scale``, under its risk-report name.
    volatility : float
        Ex-ante volatility of the whole portfolio,
        :math:`\\mathrm{scale}\\cdot\\sigma(w^{sleeve})`, in the covariance's
        unit (annualised if it is); ``nan`` if the covariance could not give
        one (``method == "previous"`` only).
    sleeve_volatility : float
        :math:`\\sigma(w^{sleeve}) = \\sqrt{w^\\top\\Sigma w}` (``nan`` as above).
    volatility_target : float or None
        The requested target (annualised if the covariance is).
    capped : bool
        ``True`` when a target was set but the scale hit the cap
        ``min(max_gross_exposure, 1 - min_cash_weight)``, so ``volatility`` is
        below the target.  ``False`` when the target is met (or no target).
    method : str
        ``"risk_budgeting"``, ``"inverse_volatility"``, ``"equal_weight"``
        (only when chosen as ``allocator``) or ``"previous"``.
    fallback_reasons : tuple of str
        One ``"<method>: <ErrorClass>: <message>"`` per method that failed
        before ``method`` succeeded (empty when risk budgeting succeeded).
    risk_budget : FloatArray, shape (n,)
        Budget targeted (normalised).
    relative_risk_contributions : FloatArray, shape (n,)
        :math:`RRC_i` of the sleeve (identical for the scaled portfolio);
        ``nan`` entries when no volatility is available.
    max_budget_error : float
        :math:`\\max_i |RRC_i - b_i|` (``nan`` when not computable).
    iterations : int
        Newton iterations of the risk-budgeting solve (0 for a fallback).
    lower_bound_active, upper_bound_active : tuple of int
        Sleeve assets held at their lower / upper bound.
    """

    weights: FloatArray
    cash_weight: float
    sleeve_weights: FloatArray
    scale: float
    gross_exposure: float
    volatility: float
    sleeve_volatility: float
    volatility_target: float | None
    capped: bool
    method: str
    fallback_reasons: tuple[str, ...]
    risk_budget: FloatArray
    relative_risk_contributions: FloatArray
    max_budget_error: float
    iterations: int
    lower_bound_active: tuple[int, ...] = ()
    upper_bound_active: tuple[int, ...] = ()


def _positive_finite(name: str, value: float, default_hint: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise ConfigError(f"{name} is {value!r}; it must be a real number ({default_hint}).")
    value = float(value)
    if not (math.isfinite(value) and value > 0.0):
        raise ConfigError(f"{name} is {value!r}; it must be finite and > 0 ({default_hint}).")
    return value


def _sleeve_risk(
    sleeve: FloatArray, cov: FloatArray, budget: FloatArray
) -> tuple[float, FloatArray, float]:
    """Volatility, RRC and max |RRC - b| of a sleeve; raises if the variance is not > 0."""
    sigma_w = cov @ sleeve
    variance = float(sleeve @ sigma_w)
    if not (variance > 0.0 and math.isfinite(variance)):
        raise SingularCovarianceError(
            f"sleeve variance w'Σw is {variance!r}; it must be finite and > 0 to size "
            "the sleeve. Re-estimate the covariance."
        )
    rrc = sleeve * sigma_w / variance
    return math.sqrt(variance), rrc, float(np.abs(rrc - budget).max())


def _bound_indices(
    sleeve: FloatArray, bounds: tuple[FloatArray, FloatArray] | None
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    if bounds is None:
        return (), ()
    lower, upper = bounds
    at_lower = np.flatnonzero((sleeve == lower) & (lower > 0.0))
    return tuple(int(i) for i in at_lower), tuple(int(i) for i in np.flatnonzero(sleeve == upper))


def _reason(method: str, error: Exception) -> str:
    return f"{method}: {type(error).__name__}: {error}"


# The last few risk-budgeting solutions, keyed on the exact contents of every input of the solve: two
# allocations of the same covariance and budget (the backtest's ERC with and without a volatility target on
# one day; a live tick that re-plans) solve it once. The solution is read-only (TargetWeights freezes its
# arrays) and ``allocate`` copies it.
_SOLVE_MEMO: BoundedMemo[TargetWeights] = BoundedMemo(8)


def _solve_risk_budgeting_memo(
    cov: FloatArray,
    budget: FloatArray,
    bounds: tuple[FloatArray, FloatArray] | None,
    tol: float,
    max_iter: int,
) -> TargetWeights:
    """:func:`solve_risk_budgeting` of these inputs, solved once for the last few distinct inputs (a failure
    is not kept: it raises again)."""
    key = (array_key(cov, budget), None if bounds is None else array_key(*bounds), float(tol), int(max_iter))
    return _SOLVE_MEMO.get(key, lambda: solve_risk_budgeting(cov, budget, bounds, tol, max_iter))


def allocate(
    covariance: npt.ArrayLike,
    risk_budget: npt.ArrayLike | None = None,
    bounds: tuple[npt.ArrayLike, npt.ArrayLike] | None = None,
    volatility_target: float | None = None,
    max_gross_exposure: float = 1.0,
    min_cash_weight: float = 0.0,
    previous_weights: npt.ArrayLike | None = None,
    tol: float = 1e-12,
    max_iter: int = 100,
    allocator: str = METHOD_RISK_BUDGETING,
) -> Allocation:
    """Risky sleeve by risk budgeting, scaled to a volatility target, rest in cash.

    1. **Sleeve.**  :func:`solve_risk_budgeting` (Spinu's Newton method;
       Richard & Roncalli's constrained portfolio when ``bounds`` bind) gives
       fully invested weights :math:`w^{s}`, :math:`\\sum_i w^s_i = 1`.
    2. **Scale.**  With :math:`\\sigma_s = \\sqrt{w^{s\\top}\\Sigma w^s}` and
       cap :math:`c = \\min(\\text{max\\_gross\\_exposure}, 1 -
       \\text{min\\_cash\\_weight})`:

       .. math:: \\mathrm{scale} = \\min(\\sigma^* / \\sigma_s,\\ c)
          \\quad(\\text{or } c \\text{ without a target } \\sigma^*),

       risky weights :math:`\\mathrm{scale}\\cdot w^s`, cash
       :math:`1 - \\mathrm{scale}`.  The ex-ante volatility
       :math:`\\mathrm{scale}\\cdot\\sigma_s` equals the target (to rounding)
       unless capped; cash carries no risk, so risk contributions *relative*
       to the portfolio volatility are those of the sleeve.
    3. **Fallback chain.**  If the solver fails (non-convergence, singular or
       non-finite covariance, non-finite result), the failure is recorded in
       ``fallback_reasons`` and the sleeve becomes the inverse-volatility
       weights (put within ``bounds`` by :func:`bounded_normalise`), scaled
       the same way.  If that fails too (a variance that is not finite and
       positive, or no finite sleeve volatility), ``previous_weights`` are
       returned unchanged (cash = 1 - their sum).  Configuration errors are
       never absorbed by the chain: they are raised.

    Parameters
    ----------
    covariance : array_like, shape (n, n)
        Covariance of the risky assets' simple returns, annualised (365-day
        year) in the keeper; ``volatility_target`` must be in the same unit.
    risk_budget : array_like, shape (n,), optional
        Risk budget :math:`b > 0`, sums to 1 (default equal).
    bounds : (lower, upper), optional
        Per-asset bounds on the *sleeve* weights (see
        :func:`solve_risk_budgeting`).
    volatility_target : float, optional
        Target ex-ante volatility :math:`\\sigma^*` (e.g. ``0.40`` for 40 % a
        year with an annualised covariance), finite and > 0.
    max_gross_exposure : float, default 1.0
        Cap on :math:`\\sum_i` weights, in (0, 1] (no borrowing).
    min_cash_weight : float, default 0.0
        Floor on the cash weight, in [0, 1).
    previous_weights : array_like, shape (n,), optional
        Risky weights currently held (fractions of NAV, >= 0, sum <= 1): the
        last resort of the fallback chain.
    tol, max_iter
        Passed to :func:`solve_risk_budgeting`.
    allocator : str, default ``"risk_budgeting"``
        First method of the chain.  The baselines ``"inverse_volatility"``
        (chain: inverse volatility, previous) and ``"equal_weight"``
        (:math:`w^s_i = 1/n` within the bounds; chain: equal weight,
        previous) get the same scaling and cash sleeve, for backtests.

    Returns
    -------
    Allocation

    Raises
    ------
    ConfigError
        Covariance not a square (n, n) array; invalid budget, bounds, target,
        exposure cap, cash floor, previous
        weights (shape, sign, finiteness, sum > 1), ``tol``, ``max_iter`` or
        ``allocator``.
    AllocationFailedError
        Every method of the chain failed (no ``previous_weights`` given); the
        message lists each failure.
    """
    if volatility_target is not None:
        volatility_target = _positive_finite(
            "volatility_target", volatility_target, "annualised, e.g. 0.4 for 40 %/year"
        )
    max_gross_exposure = _positive_finite("max_gross_exposure", max_gross_exposure, "in (0, 1]")
    if max_gross_exposure > 1.0:
        raise ConfigError(
            f"max_gross_exposure is {max_gross_exposure!r}; it must be <= 1: the vault does "
            "not borrow."
        )
    if isinstance(min_cash_weight, bool) or not (
        isinstance(min_cash_weight, (int, float, np.floating, np.integer))
        and 0.0 <= float(min_cash_weight) < 1.0
    ):
        raise ConfigError(f"min_cash_weight is {min_cash_weight!r}; it must be in [0, 1).")
    cap = min(max_gross_exposure, 1.0 - float(min_cash_weight))
    if allocator not in _ALLOCATORS:
        raise ConfigError(f"allocator is {allocator!r}; it must be one of {_ALLOCATORS}.")
    if not (tol > 0.0 and math.isfinite(tol)):
        raise ConfigError(f"tol is {tol!r}; it must be finite and > 0 (default 1e-12).")
    if isinstance(max_iter, bool) or int(max_iter) != max_iter or max_iter < 1:
        raise ConfigError(f"max_iter is {max_iter!r}; it must be an integer >= 1 (default 100).")

    cov = np.asarray(covariance, dtype=np.float64)
    if cov.ndim != 2 or cov.shape[0] != cov.shape[1] or cov.shape[0] == 0:
        raise ConfigError(
            f"covariance has shape {cov.shape}; it must be a non-empty square (n, n) matrix."
        )
    n = cov.shape[0]
    budget = _validate_budget(risk_budget, n)
    checked_bounds = _validate_bounds(bounds, n)
    previous = None
    if previous_weights is not None:
        previous = np.asarray(previous_weights, dtype=np.float64)
        if previous.shape != (n,):
            raise ConfigError(
                f"previous_weights has shape {previous.shape}; expected ({n},)."
            )
        total = float(previous.sum())
        if not (np.isfinite(previous).all() and (previous >= 0.0).all()) or not (
            total <= 1.0 + _PREVIOUS_SUM_ATOL
        ):
            raise ConfigError(
                f"previous_weights {previous.tolist()} must be finite, >= 0 and sum to at "
                f"most 1 (sum {total!r}): they are fractions of NAV held in risky assets."
            )

    def finish(
        sleeve: FloatArray,
        method: str,
        iterations: int,
        bound_indices: tuple[tuple[int, ...], tuple[int, ...]],
    ) -> Allocation:
        sigma, rrc, error = _sleeve_risk(sleeve, cov, budget)
        scale, capped = cap, False
        if volatility_target is not None and volatility_target / sigma <= cap:
            scale = volatility_target / sigma
        elif volatility_target is not None:
            capped = True
        return _allocation(
            sleeve, scale, sigma, volatility_target, capped, method, reasons, budget, rrc,
            error, iterations, *bound_indices,
        )

    def risk_budgeting() -> Allocation:
        result = _solve_risk_budgeting_memo(cov, budget, checked_bounds, tol, max_iter)
        sleeve = np.array(result.weights)
        if not np.isfinite(sleeve).all():
            raise SolverDidNotConvergeError(
                f"risk-budgeting weights are not finite: {sleeve.tolist()}."
            )
        active = (result.lower_bound_active, result.upper_bound_active)
        return finish(sleeve, METHOD_RISK_BUDGETING, result.iterations, active)

    def baseline(method: str) -> Allocation:
        if method == METHOD_EQUAL_WEIGHT:
            sleeve = equal_weights(n)
        else:
            sleeve = inverse_volatility_weights(cov)
        if checked_bounds is not None:
            sleeve = bounded_normalise(sleeve, *checked_bounds)
        return finish(sleeve, method, 0, _bound_indices(sleeve, checked_bounds))

    chain: tuple[tuple[str, Callable[[], Allocation]], ...]
    if allocator == METHOD_RISK_BUDGETING:
        chain = (
            (METHOD_RISK_BUDGETING, risk_budgeting),
            (METHOD_INVERSE_VOLATILITY, lambda: baseline(METHOD_INVERSE_VOLATILITY)),
        )
    else:
        chain = ((allocator, lambda: baseline(allocator)),)
    reasons: list[str] = []
    for method, attempt in chain:
        try:
            return attempt()
        except (SingularCovarianceError, SolverDidNotConvergeError) as exc:
            reasons.append(_reason(method, exc))
    # 3. Previous weights, unchanged.
    if previous is None:
        raise AllocationFailedError(
            "every allocation method failed and no previous weights were given: "
            + " | ".join(reasons)
            + ". Keep the current holdings and repair the covariance estimate."
        )
    gross = float(previous.sum())
    sleeve = previous / gross if gross > 0.0 else np.full(n, math.nan)
    try:
        sigma, rrc, error = _sleeve_risk(sleeve, cov, budget)
    except SingularCovarianceError:
        sigma, rrc, error = math.nan, np.full(n, math.nan), math.nan
    return _allocation(
        sleeve, gross, sigma, volatility_target, False, METHOD_PREVIOUS, reasons, budget, rrc,
        error, 0, (), (), weights=previous.copy(),
    )


def _allocation(
    sleeve: FloatArray,
    scale: float,
    sigma: float,
    volatility_target: float | None,
    capped: bool,
    method: str,
    reasons: list[str],
    budget: FloatArray,
    rrc: FloatArray,
    error: float,
    iterations: int,
    lower_idx: tuple[int, ...],
    upper_idx: tuple[int, ...],
    weights: FloatArray | None = None,
) -> Allocation:
    risky = scale * sleeve if weights is None else weights
    return Allocation(
        weights=_freeze(risky),
        # Exactly 1 - scale (the sum of the risky weights may differ by an ulp).
        cash_weight=max(0.0, 1.0 - float(scale)),
        sleeve_weights=_freeze(np.array(sleeve)),
        scale=float(scale),
        gross_exposure=float(scale),
        volatility=float(scale) * sigma,
        sleeve_volatility=sigma,
        volatility_target=volatility_target,
        capped=capped,
        method=method,
        fallback_reasons=tuple(reasons),
        risk_budget=_freeze(np.array(budget)),
        relative_risk_contributions=_freeze(np.array(rrc)),
        max_budget_error=error,
        iterations=iterations,
        lower_bound_active=lower_idx,
        upper_bound_active=upper_idx,
    )
