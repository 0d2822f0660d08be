"""The conditioning gate (chain-free): estimate the covariance, then fall back until it is
well conditioned -- shrink harder, then the diagonal (inverse volatility), then hold.

:func:`gated_covariance` is the keeper's covariance entry point (the decision policy and the
backtest call it on the window's daily simple returns, :func:`keeper.returns.simple_returns`);
it runs the estimator :class:`keeper.covariance.EstimatorConfig` describes and returns a
:class:`GateDecision` whose estimate, when there is one, is annualised like every
:class:`keeper.covariance.CovarianceEstimate`.  Data problems never raise; they become the
decision's reason.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np
import numpy.typing as npt

from keeper.covariance import (
    CovarianceEstimate,
    EstimatorConfig,
    _Base,
    _assemble,
    _build_estimate,
    _check_max_condition_number,
    _compute_base,
    _estimate_from_base,
    _observed_returns,
    _row_weights,
)
from keeper.covariance_repair import _check_shrinkage, condition_number
from keeper.errors import ConfigError, InsufficientHistoryError, InvalidPriceError, SingularCovarianceError
from keeper.returns import _as_2d_float

__all__ = [
    "GateAction",
    "GateAttempt",
    "GateDecision",
    "DEFAULT_SHRINKAGE_STEPS",
    "gated_covariance",
]

GateAction = Literal["accept", "shrink", "inverse_volatility", "hold"]

DEFAULT_SHRINKAGE_STEPS: tuple[float, ...] = (0.1, 0.25, 0.5, 0.75)
"""Total shrinkage intensities the gate tries, in order, after the configured estimate."""


@dataclass(frozen=True)
class GateAttempt:
    """One matrix the conditioning gate looked at.

    Attributes
    ----------
    stage : {"estimate", "shrink", "inverse_volatility"}
        ``"estimate"``: the configured estimator; ``"shrink"``: the same base
        matrix shrunk harder; ``"inverse_volatility"``: the diagonal fallback.
    shrinkage : float or None
        Total shrinkage intensity of this attempt (``None`` for the diagonal
        or when no matrix could be formed).
    condition_number : float or None
        2-norm condition number of the attempted (annualised) matrix, ``None``
        when no matrix could be formed.
    accepted : bool
        Whether the gate returned this attempt.
    note : str
        Why it was accepted or rejected.
    """

    stage: str
    shrinkage: float | None
    condition_number: float | None
    accepted: bool
    note: str


@dataclass(frozen=True)
class GateDecision:
    """Outcome of :func:`gated_covariance`.

    Attributes
    ----------
    action : {"accept", "shrink", "inverse_volatility", "hold"}
        ``"accept"``: the configured estimate passed the gate; ``"shrink"``: a
        harder-shrunk version passed; ``"inverse_volatility"``: only the
        diagonal is usable -- size positions with
        :func:`keeper.allocation.inverse_volatility_weights`, not with the
        covariance optimiser;
        ``"hold"``: no usable estimate -- keep the current positions.
    reason : str
        Human-readable account of the decision, for the journal.
    estimate : CovarianceEstimate or None
        The accepted estimate (diagonal for ``"inverse_volatility"``), ``None``
        for ``"hold"``.  For ``"accept"`` and ``"shrink"`` its condition number
        is at most ``max_condition_number``.
    max_condition_number : float
        The gate's limit.
    attempts : tuple of GateAttempt
        Every matrix looked at, in order.
    """

    action: GateAction
    reason: str
    estimate: CovarianceEstimate | None
    max_condition_number: float
    attempts: tuple[GateAttempt, ...]

    @property
    def condition_numbers(self) -> tuple[float, ...]:
        """Condition numbers of the attempts that formed a matrix, in order."""
        return tuple(a.condition_number for a in self.attempts if a.condition_number is not None)



# --------------------------------------------------------------------------- #
# Conditioning gate
# --------------------------------------------------------------------------- #
_DATA_ERRORS = (InvalidPriceError, InsufficientHistoryError, SingularCovarianceError)


def _describe(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"


def _diagonal_estimate(
    returns: npt.ArrayLike, config: EstimatorConfig, min_variance_observations: int
) -> CovarianceEstimate:
    """Per-asset variances from each asset's own observed returns, as a diagonal estimate."""
    r, observed = _observed_returns(returns, config.missing)
    n_total, n_assets = r.shape
    counts = observed.sum(axis=0).astype(np.int64)
    if counts.min() < min_variance_observations:
        short = [i for i in range(n_assets) if counts[i] < min_variance_observations]
        raise InsufficientHistoryError(
            f"asset(s) {short} have {counts[short].tolist()} observed returns; a variance needs "
            f"at least {min_variance_observations}. Fetch a longer history or drop the asset(s)."
        )
    half_life = config.half_life_periods
    v = _row_weights(n_total, half_life)
    m = observed.astype(np.float64)
    x = np.where(observed, r, 0.0)
    w = v @ m
    with np.errstate(divide="ignore", invalid="ignore"):
        if config.demean:
            mean = (v @ x) / w
            dev = np.where(observed, x - mean, 0.0)
            correction = 1.0 - ((v * v) @ m) / (w * w)
            variances = (v @ (dev * dev)) / w / correction
            usable = (w > 0.0) & (correction > 0.0)
        else:
            variances = (v @ (x * x)) / w
            usable = w > 0.0
    if not usable.all():
        i = int(np.argmin(usable))
        raise InsufficientHistoryError(
            f"asset {i}: effective number of observations is at most 1 at half-life "
            f"{half_life:g} periods; lengthen half_life_days or the history."
        )
    if not np.all(variances > 0.0):
        i = int(np.argmin(variances > 0.0))
        raise SingularCovarianceError(
            f"asset {i} has variance {variances[i]!r} (a constant price); inverse-volatility "
            "weights need every volatility > 0. Remove the asset or fix its price history."
        )
    any_row = observed.any(axis=1)
    return _build_estimate(
        np.diag(variances),
        half_life_days=half_life,
        n_observations=int(np.count_nonzero(any_row)),
        periods_per_year=int(config.periods_per_year),
        max_condition_number=math.inf,
        method=config.method,
        shrinkage=0.0,
        missing=config.missing,
        dropped_rows=int(n_total - np.count_nonzero(any_row)),
        pair_observations=np.diag(counts),
        repair=None,
    )


def gated_covariance(
    returns: npt.ArrayLike,
    config: EstimatorConfig,
    max_condition_number: float,
    *,
    shrinkage_steps: Sequence[float] = DEFAULT_SHRINKAGE_STEPS,
    min_variance_observations: int = 2,
) -> GateDecision:
    """Estimate, then fall back until the covariance is well conditioned.

    The ladder, stopping at the first rung that works (every rung recorded in
    ``GateDecision.attempts``):

    1. ``"accept"`` -- the estimate ``config`` describes (for
       ``missing="pairwise"`` already repaired by :func:`keeper.covariance_repair.repair_covariance`),
       if its condition number is at most ``max_condition_number``;
    2. ``"shrink"`` -- the same unshrunk matrix shrunk towards the scaled
       identity with each total intensity of ``shrinkage_steps`` above the one
       already used (the condition number falls monotonically in the
       intensity), the first one within the limit;
    3. ``"inverse_volatility"`` -- when no joint matrix could be formed (too
       few common rows, a singular pairwise repair) or no step was enough:
       a *diagonal* estimate of each asset's variance from its own observed
       returns (same weights as ``config``; for ``"ledoit_wolf"`` the unbiased
       equal-weight variance).  Its condition number is the ratio of the
       largest to the smallest variance and is not gated: the caller sizes
       with :func:`keeper.allocation.inverse_volatility_weights`, which inverts nothing;
    4. ``"hold"`` -- not even the variances are usable (an asset with fewer
       than ``min_variance_observations`` returns or a constant price, an
       infinite return, a ``NaN`` under ``missing="raise"``): no estimate,
       keep the current positions.

    A constant price (zero variance, e.g. a frozen feed) is never shrunk into
    an invented volatility: it skips rungs 1-2, fails rung 3 and holds.

    Data problems never raise; they become the decision's ``reason``.

    Parameters
    ----------
    returns : array_like, shape (n_obs, n_assets)
        Simple returns per period, row 0 oldest (``NaN`` = missing).
    config : EstimatorConfig
        The estimator to try first (its own ``max_condition_number`` is not
        used; the gate's limit is).
    max_condition_number : float
        Limit :math:`> 1` on the 2-norm condition number of an accepted
        (annualised) covariance.
    shrinkage_steps : sequence of float, default (0.1, 0.25, 0.5, 0.75)
        Strictly increasing total intensities in ``(0, 1]``; steps at or
        below the configured (or Ledoit-Wolf) intensity are skipped.
    min_variance_observations : int, default 2
        Fewest observed returns per asset for the diagonal fallback (>= 2).

    Returns
    -------
    GateDecision
        For ``"accept"``/``"shrink"`` the estimate is positive definite with
        condition number at most ``max_condition_number``.

    Raises
    ------
    ConfigError
        Bad ``config``, limit, steps or ``min_variance_observations``, or
        ``returns`` not 2-D (caller errors, not data problems).
    """
    if not isinstance(config, EstimatorConfig):
        raise ConfigError(f"config must be an EstimatorConfig, got {type(config).__name__}.")
    limit = _check_max_condition_number(max_condition_number)
    steps = tuple(_check_shrinkage(s) for s in shrinkage_steps)
    if any(s <= 0.0 for s in steps) or any(b <= a for a, b in zip(steps, steps[1:])):
        raise ConfigError(
            f"shrinkage_steps {list(shrinkage_steps)} must be strictly increasing intensities in (0, 1]."
        )
    if (
        isinstance(min_variance_observations, bool)
        or int(min_variance_observations) != min_variance_observations
        or min_variance_observations < 2
    ):
        raise ConfigError(
            f"min_variance_observations is {min_variance_observations!r}; it must be an integer >= 2."
        )
    r = _as_2d_float(returns, "returns")
    periods = int(config.periods_per_year)
    attempts: list[GateAttempt] = []
    why: str

    try:
        base: _Base | None = _compute_base(r, config)
    except _DATA_ERRORS as exc:
        base = None
        why = f"no {config.method} estimate ({_describe(exc)})"
        attempts.append(GateAttempt("estimate", None, None, False, why))

    if base is not None:
        first = float(config.shrinkage) if config.shrinkage is not None else base.fitted_shrinkage
        ladder = [("estimate", first)] + [("shrink", s) for s in steps if s > first]
        first_kappa: float | None = None
        why = ""
        for stage, shrinkage in ladder:
            try:
                estimate = _estimate_from_base(base, config, shrinkage, limit)
            except SingularCovarianceError as exc:
                try:
                    cov, _ = _assemble(base, shrinkage, config)
                    kappa: float | None = condition_number(cov * float(periods))
                except SingularCovarianceError:
                    kappa = None  # the pairwise repair itself failed (a zero variance)
                if kappa is None:
                    why = f"no usable {config.method} matrix ({_describe(exc)})"
                    attempts.append(GateAttempt(stage, shrinkage, None, False, why))
                    break
                if first_kappa is None:
                    first_kappa = kappa
                note = f"condition number {kappa:.3e} > limit {limit:.3e}"
                attempts.append(GateAttempt(stage, shrinkage, kappa, False, note))
                why = (
                    f"condition number of the {config.method} estimate {first_kappa:.3e} exceeds "
                    f"the limit {limit:.3e} and shrinkage up to {shrinkage:g} gives {kappa:.3e}"
                )
                continue
            kappa_ok = estimate.condition_number
            attempts.append(
                GateAttempt(stage, shrinkage, kappa_ok, True, f"condition number {kappa_ok:.3e} <= limit {limit:.3e}")
            )
            repaired = ""
            if estimate.repair is not None and estimate.repair.eigenvalues_lifted:
                repaired = (
                    f"; pairwise estimate repaired ({estimate.repair.eigenvalues_lifted} correlation "
                    f"eigenvalue(s) lifted to {estimate.repair.eigenvalue_floor:g}, largest correlation "
                    f"change {estimate.repair.max_abs_correlation_change:.3g})"
                )
            if estimate.notes:
                repaired += "; " + "; ".join(estimate.notes)
            if stage == "estimate":
                reason = (
                    f"{config.method} estimate accepted: condition number {kappa_ok:.3e} <= limit "
                    f"{limit:.3e} (shrinkage {shrinkage:g}){repaired}"
                )
                return GateDecision("accept", reason, estimate, limit, tuple(attempts))
            reason = (
                f"condition number of the {config.method} estimate {first_kappa:.3e} exceeds the limit "
                f"{limit:.3e}; shrinkage towards the scaled identity raised from {first:g} to {shrinkage:g} "
                f"gives {kappa_ok:.3e}{repaired}"
            )
            return GateDecision("shrink", reason, estimate, limit, tuple(attempts))

    try:
        diagonal = _diagonal_estimate(r, config, int(min_variance_observations))
    except _DATA_ERRORS as exc:
        detail = _describe(exc)
        note = "the diagonal fails the same way" if detail in why else f"no diagonal either ({detail})"
        attempts.append(GateAttempt("inverse_volatility", None, None, False, note))
        return GateDecision("hold", f"{why}; {note}; hold current positions", None, limit, tuple(attempts))
    kappa_diag = diagonal.condition_number
    note = f"diagonal of variances, condition number {kappa_diag:.3e} (not gated)"
    attempts.append(GateAttempt("inverse_volatility", None, kappa_diag, True, note))
    reason = f"{why}; falling back to inverse-volatility weights from the {note}"
    return GateDecision("inverse_volatility", reason, diagonal, limit, tuple(attempts))
