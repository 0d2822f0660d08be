"""Covariance estimation (chain-free: returns in, frozen dataclass out).

The keeper sizes the vault's positions from an estimate of the covariance of
the assets' daily simple returns (:func:`keeper.returns.simple_returns`).
This module turns returns into that estimate and refuses, loudly, to return
anything a downstream optimiser cannot use (non-finite, singular or hopelessly
ill-conditioned matrices).  The keeper calls it through the conditioning gate
(:func:`keeper.conditioning_gate.gated_covariance`), which falls back instead
of raising; :func:`covariance_from_config` is the estimator the gate's first
rung runs.

Estimators (one interface: :class:`EstimatorConfig` -> :func:`covariance_from_config`)
-------------------------------------------------------------------------------------
With :math:`T` rows of returns :math:`r_t` and :math:`P` = ``periods_per_year``:

* ``"sample"`` -- equally weighted, unbiased (``1/(T-1)``) sample covariance,
  :math:`\\hat\\Sigma = \\frac{P}{T-1} \\sum_t (r_t-\\bar r)(r_t-\\bar r)^\\top`,
  i.e. ``periods_per_year * np.cov(returns, rowvar=False)``: ``"ewma"`` with
  equal weights.
* ``"ewma"`` -- exponentially weighted with a half-life :math:`h` in days
  (RiskMetrics [1]_, reliability-weights bias correction [2]_).  With ages
  :math:`a_t = T-1-t` (the newest row has age 0) and decay
  :math:`\\lambda = 2^{-1/h}`,

  .. math::

      w_t = \\frac{\\lambda^{a_t}}{\\sum_s \\lambda^{a_s}}, \\qquad
      \\mu = \\sum_t w_t r_t, \\qquad
      \\hat\\Sigma = P \\cdot \\frac{\\sum_t w_t (r_t-\\mu)(r_t-\\mu)^\\top}
                                    {1 - \\sum_t w_t^2}.

  The factor :math:`1/(1-\\sum_t w_t^2)` is the unbiased correction for
  reliability weights when the weighted mean is estimated; with equal weights
  (:math:`h \\to \\infty`) it equals :math:`T/(T-1)` and :math:`\\hat\\Sigma`
  is exactly the sample covariance.  With ``demean=False`` the mean is taken
  as zero (RiskMetrics convention) and no correction is applied:
  :math:`\\hat\\Sigma = P \\sum_t w_t r_t r_t^\\top`.  The weights are computed
  in log space, :math:`\\ln w_t \\propto -a_t \\ln 2 / h`, which is exact for
  very long half-lives (no ``1 - λ`` cancellation) and underflows gracefully
  to 0 for very old observations.  Ages count rows of the input, so with
  ``missing="drop_rows"`` a dropped row still ages the older ones; with
  ``missing="pairwise"`` each pair's weights are renormalised over its common
  rows.  Cost: :math:`O(T n^2)` for the weighted cross-product plus
  :math:`O(n^3)` for the eigenvalue check; no Python loop over observations.
* ``"ledoit_wolf"`` -- Ledoit-Wolf shrinkage of the maximum-likelihood (``1/T``)
  sample covariance :math:`S` towards the *scaled identity* :math:`\\mu I`,
  :math:`\\mu = \\operatorname{tr}(S)/n` [3]_:
  :math:`\\hat\\Sigma = P[(1-\\delta) S + \\delta \\mu I]`, with the
  asymptotically optimal intensity :math:`\\delta` from scikit-learn's
  :func:`sklearn.covariance.ledoit_wolf_shrinkage`; the result equals
  ``periods_per_year * sklearn.covariance.LedoitWolf().fit(r).covariance_``.
  The target keeps the average variance but not each asset's.  It is positive
  definite whenever :math:`\\delta > 0`, even with fewer rows than assets, so
  the default minimum is 2 rows; ``"pairwise"`` is not available (the
  intensity needs complete rows).

* ``"garch"`` -- a *forecast* of the covariance over the next ``forecast_horizon_bars`` bars:
  GARCH(1,1) or GJR-GARCH per asset (``volatility_model``) fitted with the ``arch`` library, the
  standardised residuals correlated with EWMA weights of half-life ``half_life_days`` (integrated DCC),
  :math:`\\Sigma = D R D`; refitted every ``refit_every_bars`` bars of a sliding window, an asset whose
  fit fails falls back to its EWMA variance with the reason in ``CovarianceEstimate.notes``
  (:mod:`keeper.vol_forecast`).  Complete rows only (``"pairwise"`` is not available).

Every estimator accepts an explicit ``shrinkage`` intensity :math:`\\delta \\in [0, 1]`
(:func:`keeper.covariance_repair.shrink_covariance`, same scaled-identity target),
which the conditioning gate raises step by step when an estimate is too
ill-conditioned: estimate -> shrink harder -> diagonal (inverse volatility) -> hold.

Missing observations
--------------------
A missing observation is a ``NaN`` (see :func:`keeper.returns.reindex_daily` and
:func:`keeper.returns.simple_returns_with_missing`).  Nothing is ever
forward-filled, and the estimator's ``missing`` policy says what happens to
rows with a ``NaN``:

* ``"raise"`` (default) -- :class:`~keeper.errors.MissingObservationError`;
* ``"drop_rows"`` -- use only rows where every asset is observed
  (``CovarianceEstimate.dropped_rows`` counts the others);
* ``"pairwise"`` -- each entry :math:`\\Sigma_{ij}` uses the rows where both
  assets are observed; the result need not be positive semi-definite, so it
  is always passed through :func:`keeper.covariance_repair.repair_covariance`
  (reported in ``CovarianceEstimate.repair``).

``CovarianceEstimate.pair_observations[i, j]`` is the number of returns behind
each entry in every case.

Conventions
-----------
* Arrays are ``float64``; time runs down the rows (row ``0`` is the *oldest*
  observation, row ``-1`` the *newest*), assets run across the columns.
* Returns are simple (arithmetic) returns per observation period, e.g. daily.
* Covariances and volatilities are *annualised* by multiplying the per-period
  covariance by ``periods_per_year`` (square-root-of-time rule for volatility).
  Crypto assets trade every day, hence the default of 365.

References
----------
.. [1] J.P. Morgan/Reuters, "RiskMetrics -- Technical Document", 4th ed., 1996,
   section 5.2 (exponentially weighted moving-average covariance).
.. [2] NumPy documentation, ``numpy.cov`` with ``aweights``: for weights
   normalised to sum to one and ``ddof=1`` the normaliser is
   :math:`1 - \\sum_t w_t^2` -- the unbiased "reliability weights"
   correction used here when the weighted mean is removed.
.. [3] O. Ledoit and M. Wolf, "A well-conditioned estimator for
   large-dimensional covariance matrices", Journal of Multivariate Analysis
   88(2), 2004, pp. 365-411.
.. [4] R. Rebonato and P. Jäckel, "The most general methodology to create a
   valid correlation matrix for risk management and option pricing
   purposes", Journal of Risk 2(2), 2000 (eigenvalue clipping in correlation
   space, then rescaling to a unit diagonal).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal, Mapping, get_args

import numpy as np
import numpy.typing as npt

from keeper.covariance_repair import (
    _DEFAULT_EIGENVALUE_FLOOR,
    RepairReport,
    _check_eigenvalue_floor,
    _check_shrinkage,
    repair_covariance,
    shrink_covariance,
)
from keeper.errors import (
    ConfigError,
    EstimatorConfigError,
    InsufficientHistoryError,
    InvalidPriceError,
    MissingObservationError,
    SingularCovarianceError,
)
from keeper.returns import FloatArray, _as_2d_float, _locate_first

__all__ = [
    "FloatArray",
    "IntArray",
    "Method",
    "MissingPolicy",
    "VolatilityModel",
    "CovarianceEstimate",
    "EstimatorConfig",
    "covariance_from_config",
]

IntArray = npt.NDArray[np.int64]

Method = Literal["sample", "ewma", "ledoit_wolf", "garch"]
VolatilityModel = Literal["garch", "gjr"]
MissingPolicy = Literal["raise", "drop_rows", "pairwise"]

_METHODS: tuple[str, ...] = get_args(Method)
_VOLATILITY_MODELS: tuple[str, ...] = get_args(VolatilityModel)
_MISSING_POLICIES: tuple[str, ...] = get_args(MissingPolicy)

_LN2 = math.log(2.0)
_DEFAULT_MAX_CONDITION_NUMBER = 1e10
_ZERO_VARIANCE_RATIO = 1e-20  # a variance at most this times the largest counts as zero


@dataclass(frozen=True, eq=False)  # arrays: identity equality, no ambiguous ==
class CovarianceEstimate:
    """An annualised covariance estimate and its diagnostics.

    All arrays are read-only (``flags.writeable`` is ``False``) so that the
    frozen dataclass is immutable in depth, not just in its attributes.

    Attributes
    ----------
    covariance : FloatArray, shape (n_assets, n_assets)
        Annualised covariance :math:`\\Sigma` of simple returns, symmetric
        positive definite; units: (return per year)\\ :sup:`2`, i.e. a
        variance of 0.04 is a 20 % annualised volatility.
    volatilities : FloatArray, shape (n_assets,)
        Annualised volatilities :math:`\\sigma_i = \\sqrt{\\Sigma_{ii}}`
        (fraction per square-root year).
    correlation : FloatArray, shape (n_assets, n_assets)
        :math:`\\Sigma_{ij} / (\\sigma_i \\sigma_j)`, unit diagonal exactly.
    half_life_days : float
        Half-life of the exponential weights, in observation periods (days for
        daily data); ``math.inf`` for equal weights (sample covariance,
        Ledoit-Wolf).
    n_observations : int
        Number of return rows used: complete rows for ``missing="raise"`` or
        ``"drop_rows"``; rows with at least one observed asset for
        ``"pairwise"`` (see ``pair_observations`` for each entry).
    periods_per_year : int
        Annualisation factor applied to the per-period covariance.
    condition_number : float
        :math:`\\kappa(\\Sigma) = \\lambda_{\\max} / \\lambda_{\\min}` (2-norm).
    method : str
        ``"sample"``, ``"ewma"``, ``"ledoit_wolf"`` or ``"garch"``.
    shrinkage : float
        Total intensity :math:`\\delta \\in [0, 1]` of the shrinkage towards the
        scaled identity, :math:`(1-\\delta) S + \\delta \\frac{\\operatorname{tr} S}{n} I`,
        applied to the method's unshrunk matrix :math:`S` (the Ledoit-Wolf
        intensity for ``"ledoit_wolf"`` unless overridden; 0 means none).
    missing : str
        Missing-data policy used: ``"raise"``, ``"drop_rows"`` or ``"pairwise"``.
    dropped_rows : int
        Return rows discarded because an asset was missing (``"drop_rows"``) or
        because no asset was observed (``"pairwise"``); 0 for ``"raise"``.
    pair_observations : IntArray or None, shape (n_assets, n_assets)
        Number of returns behind each entry; the diagonal is each asset's own
        count.  Off-diagonal zeros mean the entry was not estimated (the
        diagonal inverse-volatility fallback of
        :func:`keeper.conditioning_gate.gated_covariance`).
        ``None`` only for estimates built outside this module.
    repair : RepairReport or None
        Set when the matrix went through :func:`repair_covariance`
        (always for ``missing="pairwise"``), else ``None``.
    notes : tuple of str
        What the estimator had to work around (``"garch"``: the assets whose fit fell back to EWMA and
        why); empty otherwise.
    """

    covariance: FloatArray
    volatilities: FloatArray
    correlation: FloatArray
    half_life_days: float
    n_observations: int
    periods_per_year: int
    condition_number: float
    method: str = "ewma"
    shrinkage: float = 0.0
    missing: str = "raise"
    dropped_rows: int = 0
    pair_observations: IntArray | None = None
    repair: RepairReport | None = None
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class EstimatorConfig:
    """How to estimate the covariance: a frozen value a config file can express.

    Every field is a plain scalar, so the class validates as a pydantic field
    (``TypeAdapter(EstimatorConfig).validate_python({...})`` or as a field of
    a pydantic model loaded from TOML/JSON) and can be built from a mapping
    with :meth:`from_mapping`.

    Attributes
    ----------
    method : {"sample", "ewma", "ledoit_wolf", "garch"}, default "ewma"
        Estimator, see the module docstring.
    half_life_days : float or None, default None
        EWMA half-life in days, ``> 0``; the weights decay per observation by
        :attr:`half_life_periods` = ``half_life_days * periods_per_year / 365``
        (the same number for daily bars, 24 times it for hourly ones; in
        observations when ``periods_per_year`` is not a multiple of 365);
        ``math.inf`` gives equal weights.  Required for ``"ewma"`` and
        ``"garch"`` (there: the residual correlation's weights and the
        fallback variance) and must be ``None`` for the other methods (which
        weight every row equally).
    periods_per_year : int, default 365
        Annualisation factor (365: crypto trades every calendar day).
    missing : {"raise", "drop_rows", "pairwise"}, default "raise"
        Policy for ``NaN`` returns (module docstring).  ``"pairwise"`` is not
        available for ``"ledoit_wolf"`` (its intensity formula needs complete
        rows).
    min_observations : int or None, default None
        Fewest returns accepted: for complete-row policies the number of rows
        kept, for ``"pairwise"`` every pair's common count.  Default
        ``max(n_assets + 1, 2)``; values below 2 are raised to 2.
    shrinkage : float or None, default None
        Explicit shrinkage intensity :math:`\\delta \\in [0, 1]` towards the
        scaled identity.  ``None``: the Ledoit-Wolf intensity for
        ``"ledoit_wolf"``, no shrinkage for ``"sample"`` and ``"ewma"``.
    demean : bool, default True
        Remove the (weighted) mean; ``False`` assumes a zero mean.
    eigenvalue_floor : float, default 1e-8
        Correlation-eigenvalue floor of :func:`repair_covariance`, in ``(0, 1)``,
        used for ``missing="pairwise"``.
    max_condition_number : float, default 1e10
        Largest 2-norm condition number an estimate may have, ``> 1``
        (:class:`~keeper.errors.SingularCovarianceError` beyond it;
        :func:`keeper.conditioning_gate.gated_covariance` takes its own limit instead).
    volatility_model : {"garch", "gjr"}, default "garch"
        ``"garch"`` only: GARCH(1,1) or GJR-GARCH(1,1,1) per asset.
    forecast_horizon_bars : int, default 1
        ``"garch"`` only: bars the forecast covers (the rebalance interval), ``>= 1``.
    refit_every_bars : int, default 20
        ``"garch"`` only: a fit is reused for up to this many bars of a sliding
        window (1: refit on every call), ``>= 1``.

    Raises
    ------
    EstimatorConfigError
        On construction, if any field is out of range or the combination is
        inconsistent (message names the field, the value and the fix).  A
        :class:`~keeper.errors.ConfigError` and a ``ValueError``, so pydantic
        turns it into a ``ValidationError`` with the field path.
    """

    method: Method = "ewma"
    half_life_days: float | None = None
    periods_per_year: int = 365
    missing: MissingPolicy = "raise"
    min_observations: int | None = None
    shrinkage: float | None = None
    demean: bool = True
    eigenvalue_floor: float = _DEFAULT_EIGENVALUE_FLOOR
    max_condition_number: float = _DEFAULT_MAX_CONDITION_NUMBER
    volatility_model: VolatilityModel = "garch"
    forecast_horizon_bars: int = 1
    refit_every_bars: int = 20

    def __post_init__(self) -> None:
        try:
            self._validate()
        except EstimatorConfigError:
            raise
        except ConfigError as exc:  # re-raised as a ValueError too, for pydantic (see the error's doc)
            raise EstimatorConfigError(str(exc)) from None

    @property
    def half_life_periods(self) -> float:
        """The EWMA half-life in observations (inf when neither EWMA nor GARCH, whose residual correlation and
        fallback variance use the same weights).

        On a calendar of bars that divide a 365-day year into whole days (``periods_per_year`` a multiple of 365:
        365 daily, 8,760 hourly) the half-life is in days, ``half_life_days x periods_per_year / 365``
        observations. Any other annualisation convention (252 trading days, 1 for per-period figures) says
        nothing about the bar's length, so there the half-life counts observations as given."""
        if self.method not in ("ewma", "garch") or self.half_life_days is None:
            return math.inf
        periods = float(self.periods_per_year)
        bars_per_day = periods / 365.0 if periods >= 365.0 and periods % 365.0 == 0.0 else 1.0
        return float(self.half_life_days) * bars_per_day

    def _validate(self) -> None:
        if self.method not in _METHODS:
            raise ConfigError(f"method is {self.method!r}; choose one of {list(_METHODS)}.")
        if self.method in ("ewma", "garch"):
            if self.half_life_days is None:
                raise ConfigError(
                    f"method {self.method!r} needs half_life_days (> 0, in days; math.inf for equal weights)."
                )
            _check_half_life(self.half_life_days)
        elif self.half_life_days is not None:
            raise ConfigError(
                f"half_life_days is {self.half_life_days!r} but method {self.method!r} weights every "
                "row equally; remove half_life_days or use method 'ewma'."
            )
        if self.volatility_model not in _VOLATILITY_MODELS:
            raise ConfigError(
                f"volatility_model is {self.volatility_model!r}; choose one of {list(_VOLATILITY_MODELS)}."
            )
        for name in ("forecast_horizon_bars", "refit_every_bars"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ConfigError(f"{name} is {value!r}; it must be an integer >= 1 (bars).")
        if self.missing == "pairwise" and self.method == "garch":
            raise ConfigError(
                "missing='pairwise' is not available for method 'garch' (the residual correlation needs "
                "complete rows); use missing='drop_rows'."
            )
        _check_periods_per_year(self.periods_per_year)
        if self.missing not in _MISSING_POLICIES:
            raise ConfigError(
                f"missing is {self.missing!r}; choose one of {list(_MISSING_POLICIES)} "
                "(missing observations are never forward-filled)."
            )
        if self.missing == "pairwise" and self.method == "ledoit_wolf":
            raise ConfigError(
                "missing='pairwise' is not available for method 'ledoit_wolf' (the Ledoit-Wolf "
                "intensity needs complete rows); use missing='drop_rows'."
            )
        if self.min_observations is not None and (
            isinstance(self.min_observations, bool)
            or int(self.min_observations) != self.min_observations
            or self.min_observations < 0
        ):
            raise ConfigError(
                f"min_observations is {self.min_observations!r}; it must be a non-negative integer "
                "or None (values below 2 are raised to 2)."
            )
        if self.shrinkage is not None:
            _check_shrinkage(self.shrinkage)
        if not isinstance(self.demean, (bool, np.bool_)):
            raise ConfigError(f"demean is {self.demean!r}; it must be True or False.")
        _check_eigenvalue_floor(self.eigenvalue_floor)
        _check_max_condition_number(self.max_condition_number)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> "EstimatorConfig":
        """Build from a mapping (e.g. a TOML table), rejecting unknown keys.

        Raises
        ------
        ConfigError
            For an unknown key or an invalid value.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise EstimatorConfigError(f"unknown estimator setting(s) {unknown}; known: {sorted(known)}.")
        return cls(**dict(values))


# --------------------------------------------------------------------------- #
# Parameter checks (each raises ConfigError naming the value and the fix)
# --------------------------------------------------------------------------- #
def _check_half_life(half_life_days: Any) -> float:
    try:
        h = float(half_life_days)
    except (TypeError, ValueError):
        h = math.nan
    if not h > 0.0:  # also rejects NaN
        raise ConfigError(
            f"half_life_days is {half_life_days!r}; it must be > 0 (use math.inf "
            "for equal weights). Fix the estimator configuration."
        )
    return h


def _check_periods_per_year(periods_per_year: Any) -> int:
    if (
        isinstance(periods_per_year, bool)
        or not isinstance(periods_per_year, (int, float, np.integer, np.floating))
        or int(periods_per_year) != periods_per_year
        or periods_per_year <= 0
    ):
        raise ConfigError(
            f"periods_per_year is {periods_per_year!r}; it must be a positive "
            "integer (365 for daily crypto data, 252 for exchange trading days)."
        )
    return int(periods_per_year)


def _check_max_condition_number(max_condition_number: Any) -> float:
    try:
        k = float(max_condition_number)
    except (TypeError, ValueError):
        k = math.nan
    if not k > 1.0:
        raise ConfigError(
            f"max_condition_number is {max_condition_number!r}; it must be > 1 "
            "(default 1e10)."
        )
    return k


def _freeze(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a



# --------------------------------------------------------------------------- #
# Estimation core
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class _Base:
    """Unshrunk per-period covariance plus what the estimate must report."""

    covariance: FloatArray  # per period, symmetric; may be indefinite for "pairwise"
    fitted_shrinkage: float  # Ledoit-Wolf intensity, 0 for the other methods
    half_life_days: float
    n_observations: int
    dropped_rows: int
    pair_observations: IntArray
    notes: tuple[str, ...] = ()


def _observed_returns(returns: npt.ArrayLike, missing: str) -> tuple[FloatArray, npt.NDArray[np.bool_]]:
    """Validate returns under a missing-data policy; return them and the observed mask."""
    r = _as_2d_float(returns, "returns")
    observed = ~np.isnan(r)
    if missing == "raise":
        bad = ~np.isfinite(r)
        if bad.any():
            row, col = _locate_first(bad)
            if np.isnan(r[row, col]):
                raise MissingObservationError(
                    f"return at row {row}, column {col} is nan (a missing observation) and the "
                    "missing-data policy is 'raise'. Pass missing='drop_rows' or 'pairwise' to "
                    "handle gaps explicitly, or repair the underlying prices."
                )
            raise InvalidPriceError(
                f"return at row {row}, column {col} is {r[row, col]!r}; returns must "
                "be finite. Repair the underlying prices (a zero, negative or missing "
                "price produces a non-finite return) before estimating the covariance."
            )
    else:
        bad = np.isinf(r)
        if bad.any():
            row, col = _locate_first(bad)
            raise InvalidPriceError(
                f"return at row {row}, column {col} is {r[row, col]!r}; returns must be finite "
                "(NaN marks a missing one). Repair the underlying prices."
            )
    return r, observed


def _row_weights(n_obs: int, half_life_days: float) -> FloatArray:
    """Unnormalised weights by age, newest row (age 0) has weight exactly 1."""
    ages = np.arange(n_obs - 1, -1, -1, dtype=np.float64)
    return np.exp(ages * (-_LN2 / half_life_days))  # underflows gracefully to 0


def _required(min_observations: int | None, n_assets: int, method: str) -> int:
    if min_observations is not None:
        return max(int(min_observations), 2)
    # Ledoit-Wolf is well-conditioned with fewer rows than assets: that is its purpose.
    return 2 if method == "ledoit_wolf" else max(n_assets + 1, 2)


def _complete_rows_base(
    r: FloatArray, observed: npt.NDArray[np.bool_], config: EstimatorConfig, half_life: float
) -> _Base:
    n_total, n_assets = r.shape
    keep = observed.all(axis=1)
    dropped = int(n_total - np.count_nonzero(keep))
    rows = r[keep] if dropped else r
    n_obs = rows.shape[0]
    required = _required(config.min_observations, n_assets, config.method)
    if n_obs < required:
        detail = ""
        if dropped:
            counts = observed.sum(axis=0)
            detail = (
                f" after dropping {dropped} of {n_total} rows with a missing asset (observations "
                f"per asset: {counts.tolist()})"
            )
        raise InsufficientHistoryError(
            f"got {n_obs} return observations for {n_assets} assets{detail}; at least "
            f"{required} are required. Fetch a longer price history or lower "
            "min_observations."
        )
    counts = np.full((n_assets, n_assets), n_obs, dtype=np.int64)

    if config.method == "ledoit_wolf":
        from sklearn.covariance import ledoit_wolf_shrinkage  # heavy import, only when used

        centred = rows - rows.mean(axis=0) if config.demean else rows
        cov = centred.T @ centred / n_obs  # maximum-likelihood S, as in Ledoit-Wolf (2004)
        fitted = float(ledoit_wolf_shrinkage(rows, assume_centered=not config.demean))
        return _Base(0.5 * (cov + cov.T), fitted, math.inf, n_obs, dropped, counts)

    # Ages count calendar rows, so a dropped row still ages the older observations.
    ages = (n_total - 1 - np.flatnonzero(keep)).astype(np.float64) if dropped else None
    if ages is None:
        weights = _row_weights(n_obs, half_life)
    else:
        weights = np.exp(ages * (-_LN2 / half_life))
    total = weights.sum()
    if not total > 0.0:
        raise InsufficientHistoryError(
            f"every kept row is so old that its weight underflows at half-life {half_life:g} "
            "periods. Lengthen half_life_days or use more recent data."
        )
    weights /= total
    if config.demean:
        mean = weights @ rows
        centred = rows - mean
        correction = 1.0 - float(weights @ weights)
        if not correction > 0.0:
            raise InsufficientHistoryError(
                f"effective sample size 1/sum(w^2) = {1.0 / (1.0 - correction):.3g} "
                "observation(s): the half-life "
                f"({half_life:g} periods) is too short to estimate a demeaned covariance. "
                "Lengthen half_life_days."
            )
        cov = (centred.T * weights) @ centred / correction
    else:
        cov = (rows.T * weights) @ rows
    return _Base(cov, 0.0, half_life, n_obs, dropped, counts)


def _pairwise_base(
    r: FloatArray, observed: npt.NDArray[np.bool_], config: EstimatorConfig, half_life: float
) -> _Base:
    """Pairwise-complete (weighted) covariance, O(T n^2), no loop over rows or pairs.

    With row weights :math:`v_t`, the mask :math:`m_{ti}` and
    :math:`x_{ti} = m_{ti} r_{ti}`, for the pair :math:`(i, j)`:
    :math:`W = \\sum v m_i m_j`, :math:`A_{ij} = \\sum v x_i m_j` (the pair's
    weighted sum of asset i), :math:`Q = \\sum v x_i x_j`,
    :math:`V = \\sum v^2 m_i m_j`, and

    .. math:: \\hat\\Sigma_{ij} = \\frac{Q/W - A_{ij}A_{ji}/W^2}{1 - V/W^2}

    (the reliability-weights estimator of ``"ewma"`` (module docstring) on the
    pair's common rows; :math:`Q/W` without demeaning).
    """
    n_total, n_assets = r.shape
    any_row = observed.any(axis=1)
    dropped = int(n_total - np.count_nonzero(any_row))
    m = observed.astype(np.float64)
    counts = (m.T @ m).round().astype(np.int64)
    required = _required(config.min_observations, n_assets, config.method)
    if counts.min() < required:
        i, j = np.unravel_index(int(np.argmin(counts)), counts.shape)
        raise InsufficientHistoryError(
            f"assets {i} and {j} are both observed in only {counts[i, j]} return rows; at least "
            f"{required} are required for every pair (missing='pairwise'). Fetch a longer "
            "history, drop the asset, or lower min_observations."
        )
    v = _row_weights(n_total, half_life)
    x = np.where(observed, r, 0.0)
    if config.demean:
        # Shift each column by its observed mean: covariances are shift-invariant and the
        # smaller magnitudes avoid cancellation in Q/W - A A^T / W^2.
        x -= x.sum(axis=0) / np.diagonal(counts)
        x *= m  # missing cells back to exactly 0
    xv = x * v[:, None]
    w = m.T @ (m * v[:, None])
    with np.errstate(divide="ignore", invalid="ignore"):
        if config.demean:
            a = xv.T @ m
            v2 = m.T @ (m * (v * v)[:, None])
            correction = 1.0 - v2 / (w * w)
            cov = (xv.T @ x / w - a * a.T / (w * w)) / correction
            bad = ~(w > 0.0) | ~(correction > 0.0)
        else:
            cov = xv.T @ x / w
            bad = ~(w > 0.0)
    if bad.any():
        i, j = _locate_first(bad)
        raise InsufficientHistoryError(
            f"assets {i} and {j}: the effective number of common observations is at most 1 "
            f"at half-life {half_life:g} periods; lengthen half_life_days or the history."
        )
    return _Base(0.5 * (cov + cov.T), 0.0, half_life, int(np.count_nonzero(any_row)), dropped, counts)


def _garch_base(r: FloatArray, observed: npt.NDArray[np.bool_], config: EstimatorConfig) -> _Base:
    """The per-bar forecast covariance of :func:`keeper.vol_forecast.garch_forecast_covariance` on complete rows."""
    from keeper.vol_forecast import garch_forecast_covariance  # imports arch only when used

    n_total, n_assets = r.shape
    keep = observed.all(axis=1)
    rows = r[keep]
    dropped = int(n_total - rows.shape[0])
    required = _required(config.min_observations, n_assets, config.method)
    if rows.shape[0] < required:
        raise InsufficientHistoryError(
            f"got {rows.shape[0]} complete return rows for {n_assets} assets (dropped {dropped}); at least "
            f"{required} are required. Fetch a longer price history or lower min_observations."
        )
    forecast = garch_forecast_covariance(
        rows, volatility_model=config.volatility_model, horizon_bars=int(config.forecast_horizon_bars),
        refit_every_bars=int(config.refit_every_bars), half_life_bars=config.half_life_periods,
        demean=bool(config.demean),
    )
    counts = np.full((n_assets, n_assets), rows.shape[0], dtype=np.int64)
    return _Base(forecast.covariance, 0.0, config.half_life_periods, int(rows.shape[0]), dropped, counts,
                 forecast.notes)


def _compute_base(returns: npt.ArrayLike, config: EstimatorConfig) -> _Base:
    r, observed = _observed_returns(returns, config.missing)
    if config.method == "garch":
        return _garch_base(r, observed, config)
    half_life = config.half_life_periods
    if config.missing == "pairwise":
        return _pairwise_base(r, observed, config, half_life)
    return _complete_rows_base(r, observed, config, half_life)


def _assemble(base: _Base, shrinkage: float, config: EstimatorConfig) -> tuple[FloatArray, RepairReport | None]:
    """Shrink the base by ``shrinkage`` and, for pairwise estimates, repair it.

    A zero variance is refused first: shrinkage would lift it to ``shrinkage * mu`` and
    hide a constant (e.g. frozen) price series behind an invented volatility.  "Zero" is
    relative: at most ``_ZERO_VARIANCE_RATIO`` times the largest variance (a volatility
    ratio of 1e-10, far below any traded asset's, well above rounding leftovers).
    """
    variances = np.diag(base.covariance)
    zero = ~(variances > _ZERO_VARIANCE_RATIO * float(np.max(variances)))
    if zero.any():
        i = int(np.argmax(zero))
        raise SingularCovarianceError(
            f"asset {i} has variance {variances[i]!r} over the estimation window (a constant "
            "price, e.g. a frozen feed); no shrinkage or repair can give it a meaningful "
            "volatility. Check that asset's oracle/price history or remove the asset."
        )
    cov = shrink_covariance(base.covariance, shrinkage) if shrinkage > 0.0 else base.covariance
    if config.missing == "pairwise":
        cov, report = repair_covariance(cov, config.eigenvalue_floor)
        return cov, report
    return cov, None


def _build_estimate(
    cov_per_period: FloatArray,
    *,
    half_life_days: float,
    n_observations: int,
    periods_per_year: int,
    max_condition_number: float,
    method: str = "ewma",
    shrinkage: float = 0.0,
    missing: str = "raise",
    dropped_rows: int = 0,
    pair_observations: IntArray | None = None,
    repair: RepairReport | None = None,
    notes: tuple[str, ...] = (),
) -> CovarianceEstimate:
    """Annualise, symmetrise, check the spectrum and package the estimate."""
    cov = cov_per_period * float(periods_per_year)
    cov = 0.5 * (cov + cov.T)
    eigenvalues = np.linalg.eigvalsh(cov)  # ascending
    lam_min = float(eigenvalues[0])
    lam_max = float(eigenvalues[-1])
    condition = lam_max / lam_min if lam_min > 0.0 else math.inf
    if not (lam_min > 0.0) or condition > max_condition_number:
        raise SingularCovarianceError(
            f"covariance is singular or ill-conditioned: min eigenvalue "
            f"{lam_min:.3e}, max eigenvalue {lam_max:.3e}, condition number "
            f"{condition:.3e} (limit {max_condition_number:.1e}, and the min "
            "eigenvalue must be > 0). Remove duplicated or perfectly collinear "
            "assets, use a longer history (more observations than assets), a "
            "longer half-life, shrinkage, or gated_covariance."
        )
    vols = np.sqrt(np.diag(cov))
    corr = cov / np.outer(vols, vols)
    corr = 0.5 * (corr + corr.T)
    np.fill_diagonal(corr, 1.0)
    if pair_observations is not None:
        pair_observations = _freeze(np.array(pair_observations, dtype=np.int64))
    return CovarianceEstimate(
        covariance=_freeze(cov),
        volatilities=_freeze(vols),
        correlation=_freeze(corr),
        half_life_days=float(half_life_days),
        n_observations=int(n_observations),
        periods_per_year=int(periods_per_year),
        condition_number=float(condition),
        method=method,
        shrinkage=float(shrinkage),
        missing=missing,
        dropped_rows=int(dropped_rows),
        pair_observations=pair_observations,
        repair=repair,
        notes=tuple(notes),
    )


def _estimate_from_base(
    base: _Base, config: EstimatorConfig, shrinkage: float, max_condition_number: float
) -> CovarianceEstimate:
    cov, report = _assemble(base, shrinkage, config)
    return _build_estimate(
        cov,
        half_life_days=base.half_life_days,
        n_observations=base.n_observations,
        periods_per_year=int(config.periods_per_year),
        max_condition_number=max_condition_number,
        method=config.method,
        shrinkage=shrinkage,
        missing=config.missing,
        dropped_rows=base.dropped_rows,
        pair_observations=base.pair_observations,
        repair=report,
        notes=base.notes,
    )


def covariance_from_config(returns: npt.ArrayLike, config: EstimatorConfig) -> CovarianceEstimate:
    """Estimate the annualised covariance as ``config`` describes.

    Parameters
    ----------
    returns : array_like, shape (n_obs, n_assets)
        Simple returns per period, row 0 oldest; ``NaN`` marks a missing
        observation (handled by ``config.missing``), ``±inf`` is invalid.
    config : EstimatorConfig
        Method, half-life, annualisation, missing-data policy, shrinkage.

    Returns
    -------
    CovarianceEstimate
        Annualised (``x config.periods_per_year``) and positive definite with
        condition number at most ``config.max_condition_number``.

    Raises
    ------
    ConfigError
        ``returns`` not 2-D, or ``config`` not an :class:`EstimatorConfig`.
    MissingObservationError
        A ``NaN`` under ``missing="raise"`` (subclass of InvalidPriceError).
    InvalidPriceError
        An infinite return.
    InsufficientHistoryError
        Fewer rows (or common rows per pair) than required, or an effective
        sample size of at most one.
    SingularCovarianceError
        Smallest eigenvalue :math:`\\le 0` or condition number above the limit;
        or a zero variance under ``missing="pairwise"``.
    """
    if not isinstance(config, EstimatorConfig):
        raise ConfigError(f"config must be an EstimatorConfig, got {type(config).__name__}.")
    base = _compute_base(returns, config)
    shrinkage = config.shrinkage if config.shrinkage is not None else base.fitted_shrinkage
    return _estimate_from_base(base, config, float(shrinkage), float(config.max_condition_number))
