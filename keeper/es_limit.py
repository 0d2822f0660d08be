"""The pre-trade Expected Shortfall limit (chain-free): keep a target whose ES fits the vault's
limit, else scale the risky sleeve toward the base asset until it does.

The ES is any method of :func:`keeper.risk_report.portfolio_var_es` (default historical, 99 %,
1 day); weights are the risky sleeve's fractions of NAV and the ES a positive fraction of NAV, as
in :mod:`keeper.risk_measures`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from keeper.errors import ConfigError
from keeper.risk_measures import (
    FloatArray,
    RiskMeasure,
    _check_confidence,
    _check_horizon,
    _check_nav,
    _check_weights,
    _freeze,
    to_base_units,
)
from keeper.risk_report import _inputs, _measure
from keeper.units import DAYS_PER_YEAR

__all__ = [
    "LimitDecision",
    "enforce_es_limit",
]


@dataclass(frozen=True, eq=False)
class LimitDecision:
    """Outcome of the pre-trade Expected Shortfall limit (:func:`enforce_es_limit`).

    Attributes
    ----------
    approved_weights : FloatArray, shape (n_assets,)
        ``target_weights`` unchanged when within the limit, else ``scale * target_weights`` (the rest
        of NAV goes to the base asset). Read-only.
    target_weights : FloatArray, shape (n_assets,)
        The weights asked for. Read-only.
    scale : float
        Factor in [0, 1] applied to the risky sleeve; 1.0 when within the limit.
    within_limit : bool
        True when the target itself meets the limit.
    es_before, es_after : float
        ES of the target and of the approved weights, fractions of NAV.
    es_limit : float
        The limit, fraction of NAV.
    method, confidence, horizon_days
        The measure the limit is stated in.
    reason : str
        One sentence for the journal: the ES before and after, the limit and the scale.
    nav_base_units, es_before_base_units, es_after_base_units, es_limit_base_units : int or None
        NAV and the three ES figures in base-asset units, when NAV is given.
    flags : tuple of str
        Flags of the underlying measure (see :class:`RiskMeasure`).
    """

    approved_weights: FloatArray
    target_weights: FloatArray
    scale: float
    within_limit: bool
    es_before: float
    es_after: float
    es_limit: float
    method: str
    confidence: float
    horizon_days: int
    reason: str
    nav_base_units: int | None = None
    es_before_base_units: int | None = None
    es_after_base_units: int | None = None
    es_limit_base_units: int | None = None
    flags: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict."""
        return {
            "within_limit": self.within_limit,
            "scale": self.scale,
            "es_before": self.es_before,
            "es_after": self.es_after,
            "es_limit": self.es_limit,
            "method": self.method,
            "confidence": self.confidence,
            "horizon_days": self.horizon_days,
            "reason": self.reason,
            "target_weights": [float(x) for x in self.target_weights],
            "approved_weights": [float(x) for x in self.approved_weights],
            "nav_base_units": self.nav_base_units,
            "es_before_base_units": self.es_before_base_units,
            "es_after_base_units": self.es_after_base_units,
            "es_limit_base_units": self.es_limit_base_units,
            "flags": list(self.flags),
        }


def enforce_es_limit(target_weights: npt.ArrayLike, es_limit: float, *,
                     method: str = "historical", confidence: float = 0.99, horizon_days: int = 1,
                     returns: npt.ArrayLike | None = None, covariance: npt.ArrayLike | None = None,
                     expected_returns: npt.ArrayLike | None = None,
                     periods_per_year: int = DAYS_PER_YEAR,
                     nav_base_units: int | None = None) -> LimitDecision:
    """Pre-trade Expected Shortfall limit: keep the target if its ES fits, else de-risk to the base asset.

    If :math:`\\mathrm{ES}(w) \\le` ``es_limit`` the target is approved unchanged (``scale = 1``).
    Otherwise the risky sleeve is scaled by the largest :math:`s \\in [0, 1]` with
    :math:`\\mathrm{ES}(s w) \\le` ``es_limit``, the rest of NAV going to the base asset.  All three
    measures are positively homogeneous of degree 1 in the weights (historical: scaling every
    scenario loss by :math:`s > 0` keeps their order; Gaussian and Cornish-Fisher: :math:`\\mu_p`
    and :math:`\\sigma_p` scale by :math:`s`, skewness and kurtosis do not change), so
    :math:`\\mathrm{ES}(s w) = s\\,\\mathrm{ES}(w)` and the root is exact:
    :math:`s^* = \\mathrm{limit}/\\mathrm{ES}(w)`.  Tolerance: the ES of the returned weights is
    recomputed and :math:`s` stepped down by a few ulps until it is ``<= es_limit`` in floating
    point, so ``es_after <= es_limit`` always holds and :math:`s` is within a relative
    :math:`10^{-12}` of :math:`s^*`.

    Parameters
    ----------
    target_weights : array_like, shape (n_assets,)
        The plan's post-trade risky-sleeve fractions of NAV (>= 0, sum <= 1).
    es_limit : float
        The vault's limit, a fraction of NAV (>= 0), for ``method``/``confidence``/``horizon_days``.
    method, confidence, horizon_days
        The ES the limit is stated in (default historical, 99 %, 1 day).
    returns, covariance, expected_returns, periods_per_year
        As for :func:`keeper.risk_report.portfolio_var_es`.
    nav_base_units : int, optional
        NAV in base-asset units, to state the figures in base units too.

    Returns
    -------
    LimitDecision
        ``approved_weights``, the scale and the reason (ES before/after, the limit).

    Raises
    ------
    ConfigError
        A negative or non-finite limit, or bad inputs (as for
        :func:`keeper.risk_report.portfolio_var_es`).
    InvalidPriceError, InsufficientHistoryError
        As for :func:`keeper.risk_report.portfolio_var_es`.
    """
    w = _check_weights(target_weights)
    limit = float(es_limit)
    if not (math.isfinite(limit) and limit >= 0.0):
        raise ConfigError(
            f"es_limit is {es_limit!r}; it must be a finite fraction of NAV >= 0 (e.g. 0.10 for 10 %)."
        )
    a = _check_confidence(confidence)
    h = _check_horizon(horizon_days)
    nav = _check_nav(nav_base_units)
    data = _inputs(w, returns, covariance, expected_returns, periods_per_year)

    def es_of(x: FloatArray) -> RiskMeasure:
        return _measure(x, method, a, h, data)

    before = es_of(w)
    label = f"{method} ES {a:.4g} {h}-day"
    if before.es <= limit:
        scale, after, approved = 1.0, before, w
        reason = (f"{label} of the target is {before.es:.6%} of NAV, within the limit {limit:.6%}: "
                  "target approved unchanged")
    else:
        scale = limit / before.es  # in [0, 1): before.es > limit >= 0
        approved = scale * w
        after = es_of(approved)
        step = float(np.finfo(np.float64).eps)
        while after.es > limit and scale > 0.0:
            scale = max(scale * (1.0 - step), 0.0) if step < 0.5 else 0.0
            step *= 2.0
            approved = scale * w
            after = es_of(approved)
        reason = (f"{label} of the target is {before.es:.6%} of NAV, above the limit {limit:.6%}: "
                  f"risky sleeve scaled by {scale:.9f} toward the base asset, {label} after "
                  f"{after.es:.6%}")
    return LimitDecision(
        approved_weights=_freeze(np.array(approved, dtype=np.float64)),
        target_weights=_freeze(w.copy()),
        scale=float(scale),
        within_limit=scale == 1.0,
        es_before=before.es,
        es_after=after.es,
        es_limit=limit,
        method=method,
        confidence=a,
        horizon_days=h,
        reason=reason,
        nav_base_units=nav,
        es_before_base_units=None if nav is None else to_base_units(before.es, nav),
        es_after_base_units=None if nav is None else to_base_units(after.es, nav),
        es_limit_base_units=None if nav is None else to_base_units(limit, nav),
        flags=tuple(dict.fromkeys(before.flags + after.flags)),
    )
