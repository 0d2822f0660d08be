"""Return and covariance estimation (chain-free: arrays in, frozen dataclass out).

The keeper sizes the vault's positions from an estimate of the covariance of
the assets' daily simple returns.  This module turns a price history into that
estimate and refuses, loudly, to return anything a downstream optimiser cannot
use (non-finite, singular or hopelessly ill-conditioned matrices).

Estimators (one interface: :func:`estimate_covariance` / :class:`EstimatorConfig`)
-------------------------------------------------------------------------------
* ``"sample"`` -- equally weighted, unbiased (``1/(T-1)``) sample covariance.
* ``"ewma"`` -- exponentially weighted with a half-life in days (RiskMetrics [1]_,
  reliability-weights bias correction [2]_).
* ``"ledoit_wolf"`` -- Ledoit-Wolf shrinkage of the maximum-likelihood (``1/T``)
  sample covariance towards the *scaled identity* :math:`\\mu I`,
  :math:`\\mu = \\operatorname{tr}(S)/n` [3]_; the intensity comes from
  scikit-learn's :func:`sklearn.covariance.ledoit_wolf_shrinkage`.

Every estimator accepts an explicit ``shrinkage`` intensity :math:`\\delta \\in [0, 1]`
(:func:`shrink_covariance`, same scaled-identity target), which the conditioning
gate (:func:`gated_covariance`) raises step by step when an estimate is too
ill-conditioned: estimate -> shrink harder -> diagonal (inverse volatility) -> hold.

Missing observations
--------------------
A missing observation is a ``NaN`` (a blank CSV cell, an asset not yet listed,
a calendar day the feed skipped: see :func:`reindex_daily` and
:func:`simple_returns_with_missing`).  Nothing is ever forward-filled: a return
is only formed between two consecutive observed prices, and the estimator's
``missing`` policy says what happens to rows with a ``NaN``:

* ``"raise"`` (default) -- :class:`~keeper.errors.MissingObservationError`;
* ``"drop_rows"`` -- use only rows where every asset is observed
  (``CovarianceEstimate.dropped_rows`` counts the others);
* ``"pairwise"`` -- each entry :math:`\\Sigma_{ij}` uses the rows where both
  assets are observed; the result need not be positive semi-definite, so it
  is always passed through :func:`repair_covariance` (reported in
  ``CovarianceEstimate.repair``).

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
import datetime as dt
import math
from dataclasses import dataclass
from typing import Any, Literal, Mapping, Sequence, get_args

import numpy as np
import numpy.typing as npt

from keeper.errors import (
    ConfigError,
    EstimatorConfigError,
    InsufficientHistoryError,
    InvalidPriceError,
    MissingObservationError,
    SingularCovarianceError,
)

__all__ = [
    "FloatArray",
    "IntArray",
    "Method",
    "MissingPolicy",
    "GateAction",
    "CovarianceEstimate",
    "RepairReport",
    "EstimatorConfig",
    "GateAttempt",
    "GateDecision",
    "DEFAULT_SHRINKAGE_STEPS",
    "simple_returns",
    "simple_returns_with_missing",
    "reindex_daily",
    "ewma_covariance",
    "sample_covariance",
    "ledoit_wolf_covariance",
    "estimate_covariance",
    "covariance_from_config",
    "shrink_covariance",
    "repair_covariance",
    "condition_number",
    "gated_covariance",
    "inverse_volatility_weights",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

Method = Literal["sample", "ewma", "ledoit_wolf"]
MissingPolicy = Literal["raise", "drop_rows", "pairwise"]
GateAction = Literal["accept", "shrink", "inverse_volatility", "hold"]

_METHODS: tuple[str, ...] = get_args(Method)
_MISSING_POLICIES: tuple[str, ...] = get_args(MissingPolicy)

_LN2 = math.log(2.0)
_DEFAULT_MAX_CONDITION_NUMBER = 1e10
_DEFAULT_EIGENVALUE_FLOOR = 1e-8  # smallest eigenvalue of a repaired *correlation* matrix
_ZERO_VARIANCE_RATIO = 1e-20  # a variance at most this times the largest counts as zero
DEFAULT_SHRINKAGE_STEPS: tuple[float, ...] = (0.1, 0.25, 0.5, 0.75)
"""Total shrinkage intensities the gate tries, in order, after the configured estimate."""


@dataclass(frozen=True)
class RepairReport:
    """What :func:`repair_covariance` changed.

    Attributes
    ----------
    eigenvalue_floor : float
        Floor applied to the eigenvalues of the *correlation* matrix
        (dimensionless; the eigenvalues of an ``n x n`` correlation matrix
        sum to ``n``).
    eigenvalues_lifted : int
        How many correlation eigenvalues were below the floor and raised to it
        (0: the matrix was returned unchanged apart from exact symmetrisation).
    min_eigenvalue_before : float
        Smallest eigenvalue of the input correlation matrix (negative if the
        input was not positive semi-definite).
    condition_number_before, condition_number_after : float
        2-norm condition number of the covariance matrix before and after the
        repair (``math.inf`` when the smallest eigenvalue is :math:`\\le 0`).
    max_abs_correlation_change : float
        Largest absolute change of an off-diagonal correlation.
    """

    eigenvalue_floor: float
    eigenvalues_lifted: int
    min_eigenvalue_before: float
    condition_number_before: float
    condition_number_after: float
    max_abs_correlation_change: float


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
        ``"sample"``, ``"ewma"`` or ``"ledoit_wolf"``.
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
        diagonal inverse-volatility fallback of :func:`gated_covariance`).
        ``None`` only for estimates built outside this module.
    repair : RepairReport or None
        Set when the matrix went through :func:`repair_covariance`
        (always for ``missing="pairwise"``), else ``None``.
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


@dataclass(frozen=True)
class EstimatorConfig:
    """How to estimate the covariance: a frozen value a config file can express.

    Every field is a plain scalar, so the class validates as a pydantic field
    (``TypeAdapter(EstimatorConfig).validate_python({...})`` or as a field of
    a pydantic model loaded from TOML/JSON) and can be built from a mapping
    with :meth:`from_mapping`.

    Attributes
    ----------
    method : {"sample", "ewma", "ledoit_wolf"}, default "ewma"
        Estimator, see the module docstring.
    half_life_days : float or None, default None
        EWMA half-life in observation periods (days for daily data), ``> 0``;
        ``math.inf`` gives equal weights.  Required for ``"ewma"`` and must be
        ``None`` for the other methods (which weight every row equally).
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
        :func:`gated_covariance` takes its own limit instead).

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

    def __post_init__(self) -> None:
        try:
            self._validate()
        except EstimatorConfigError:
            raise
        except ConfigError as exc:  # re-raised as a ValueError too, for pydantic (see the error's doc)
            raise EstimatorConfigError(str(exc)) from None

    def _validate(self) -> None:
        if self.method not in _METHODS:
            raise ConfigError(f"method is {self.method!r}; choose one of {list(_METHODS)}.")
        if self.method == "ewma":
            if self.half_life_days is None:
                raise ConfigError(
                    "method 'ewma' needs half_life_days (> 0, in days; math.inf for equal weights)."
                )
            _check_half_life(self.half_life_days)
        elif self.half_life_days is not None:
            raise ConfigError(
                f"half_life_days is {self.half_life_days!r} but method {self.method!r} weights every "
                "row equally; remove half_life_days or use method 'ewma'."
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
        :func:`inverse_volatility_weights`, not with the covariance optimiser;
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


def _check_shrinkage(shrinkage: Any) -> float:
    try:
        d = float(shrinkage)
    except (TypeError, ValueError):
        d = math.nan
    if not 0.0 <= d <= 1.0:
        raise ConfigError(
            f"shrinkage is {shrinkage!r}; it must be in [0, 1] (0: none, 1: the scaled identity)."
        )
    return d


def _check_eigenvalue_floor(eigenvalue_floor: Any) -> float:
    try:
        f = float(eigenvalue_floor)
    except (TypeError, ValueError):
        f = math.nan
    if not 0.0 < f < 1.0:
        raise ConfigError(
            f"eigenvalue_floor is {eigenvalue_floor!r}; it must be in (0, 1) (a floor on the "
            "eigenvalues of the correlation matrix, e.g. 1e-8)."
        )
    return f


def _check_missing(missing: Any) -> str:
    if missing not in _MISSING_POLICIES:
        raise ConfigError(
            f"missing is {missing!r}; choose one of {list(_MISSING_POLICIES)} "
            "(missing observations are never forward-filled)."
        )
    return str(missing)


def _locate_first(mask: npt.NDArray[np.bool_]) -> tuple[int, int]:
    """Return the (row, column) of the first ``True`` of a 2-D mask, row-major."""
    flat = int(np.argmax(mask))
    row, col = divmod(flat, mask.shape[1])
    return row, col


def _as_2d_float(array: npt.ArrayLike, name: str) -> FloatArray:
    """Convert to a 2-D float64 array or raise ``ConfigError`` on a bad shape."""
    out = np.asarray(array, dtype=np.float64)
    if out.ndim != 2 or out.shape[1] < 1:
        raise ConfigError(
            f"{name} must be a 2-D array of shape (n_observations, n_assets) with "
            f"n_assets >= 1; got shape {out.shape}. Pass one column per asset and "
            "one row per observation (oldest first)."
        )
    return out


def _freeze(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


# --------------------------------------------------------------------------- #
# Prices -> returns
# --------------------------------------------------------------------------- #
def simple_returns(prices: npt.ArrayLike) -> FloatArray:
    """Simple returns of a price history.

    .. math:: r_{t,i} = \\frac{p_{t,i}}{p_{t-1,i}} - 1

    Parameters
    ----------
    prices : array_like, shape (n_obs, n_assets)
        Strictly positive, finite prices; row 0 oldest.  Units are irrelevant
        (they cancel) but must be consistent within a column.

    Returns
    -------
    FloatArray, shape (n_obs - 1, n_assets)
        Dimensionless simple returns per observation period.

    Raises
    ------
    ConfigError
        If ``prices`` is not 2-D.
    InvalidPriceError
        If any price is non-finite, zero or negative (the message names the
        first offending row, column and value).  Use
        :func:`simple_returns_with_missing` for histories with gaps.
    InsufficientHistoryError
        If fewer than two price rows are given (no return can be formed).
    """
    p = _as_2d_float(prices, "prices")
    bad = ~(np.isfinite(p) & (p > 0.0))
    if bad.any():
        row, col = _locate_first(bad)
        raise InvalidPriceError(
            f"price at row {row}, column {col} is {p[row, col]!r}; prices must be "
            "finite and strictly > 0. Drop or repair that observation (check the "
            "oracle/feed for that asset) before estimating returns."
        )
    if p.shape[0] < 2:
        raise InsufficientHistoryError(
            f"got {p.shape[0]} price row(s); at least 2 are needed to form one "
            "return. Fetch a longer price history."
        )
    return p[1:] / p[:-1] - 1.0


def simple_returns_with_missing(prices: npt.ArrayLike) -> FloatArray:
    """Simple returns of a price history with gaps (``NaN`` = no observation).

    .. math:: r_{t,i} = \\frac{p_{t,i}}{p_{t-1,i}} - 1
              \\quad\\text{if both prices are observed, else } \\mathrm{NaN}

    A gap is never bridged: no return is formed across a missing price (a
    two-period return counted as one period would overstate the variance), and
    nothing is forward-filled.  One missing price therefore blanks the two
    returns around it; the estimator's ``missing`` policy then decides what to
    do with the ``NaN`` returns.

    Parameters
    ----------
    prices : array_like, shape (n_obs, n_assets)
        Prices, row 0 oldest; ``NaN`` marks a missing observation, every other
        entry must be finite and strictly positive.

    Returns
    -------
    FloatArray, shape (n_obs - 1, n_assets)
        Simple returns per period, ``NaN`` where either price is missing.

    Raises
    ------
    ConfigError
        If ``prices`` is not 2-D.
    InvalidPriceError
        If a present price is infinite, zero or negative (row, column, value).
    InsufficientHistoryError
        If fewer than two price rows are given.
    """
    p = _as_2d_float(prices, "prices")
    bad = ~np.isnan(p) & ~(np.isfinite(p) & (p > 0.0))
    if bad.any():
        row, col = _locate_first(bad)
        raise InvalidPriceError(
            f"price at row {row}, column {col} is {p[row, col]!r}; present prices must be "
            "finite and strictly > 0 (NaN marks a missing one). Repair that observation."
        )
    if p.shape[0] < 2:
        raise InsufficientHistoryError(
            f"got {p.shape[0]} price row(s); at least 2 are needed to form one "
            "return. Fetch a longer price history."
        )
    return p[1:] / p[:-1] - 1.0  # NaN propagates: a return needs both ends


def reindex_daily(
    dates: Sequence[dt.date],
    prices: npt.ArrayLike,
    start: dt.date | None = None,
    end: dt.date | None = None,
) -> tuple[tuple[dt.date, ...], FloatArray]:
    """Place a daily price history on the full calendar, ``NaN`` on missing days.

    A feed that skipped days (or a CSV without rows for them) would otherwise
    make :func:`simple_returns` treat a multi-day move as one day's return.

    Parameters
    ----------
    dates : sequence of datetime.date, length n_obs
        Strictly increasing observation dates.
    prices : array_like, shape (n_obs, n_assets)
        Prices on those dates (``NaN`` allowed).
    start, end : datetime.date, optional
        Calendar bounds (inclusive); default the first and last date.  Rows
        outside them are discarded.

    Returns
    -------
    (tuple of datetime.date, FloatArray of shape (n_days, n_assets))
        Every calendar day from ``start`` to ``end`` and the prices, ``NaN``
        where the input had no row.  Nothing is forward-filled.

    Raises
    ------
    ConfigError
        If ``prices`` is not 2-D, the lengths differ, the dates are not
        strictly increasing, or ``start > end``.
    """
    p = _as_2d_float(prices, "prices")
    if len(dates) != p.shape[0]:
        raise ConfigError(
            f"got {len(dates)} dates for {p.shape[0]} price rows; pass one date per row."
        )
    ordinals = np.array([d.toordinal() for d in dates], dtype=np.int64)
    if ordinals.size > 1 and np.any(np.diff(ordinals) <= 0):
        raise ConfigError("dates must be strictly increasing (no duplicates); sort the history first.")
    if ordinals.size == 0 and (start is None or end is None):
        raise ConfigError("an empty history needs explicit start and end dates.")
    first = start.toordinal() if start is not None else int(ordinals[0])
    last = end.toordinal() if end is not None else int(ordinals[-1])
    if first > last:
        raise ConfigError(f"start {start} is after end {end}.")
    out = np.full((last - first + 1, p.shape[1]), np.nan)
    inside = (ordinals >= first) & (ordinals <= last)
    out[ordinals[inside] - first] = p[inside]
    calendar = tuple(dt.date.fromordinal(o) for o in range(first, last + 1))
    return calendar, out


# --------------------------------------------------------------------------- #
# Matrix helpers: condition number, shrinkage, repair
# --------------------------------------------------------------------------- #
def _as_square(cov: npt.ArrayLike, name: str = "covariance") -> FloatArray:
    c = np.asarray(cov, dtype=np.float64)
    if c.ndim != 2 or c.shape[0] != c.shape[1] or c.shape[0] < 1:
        raise ConfigError(f"{name} must be a square (n, n) matrix with n >= 1; got shape {c.shape}.")
    if not np.all(np.isfinite(c)):
        row, col = _locate_first(~np.isfinite(c))
        raise ConfigError(f"{name}[{row}, {col}] is {c[row, col]!r}; every entry must be finite.")
    return c


def _condition_from_eigenvalues(eigenvalues: FloatArray) -> float:
    lam_min, lam_max = float(eigenvalues[0]), float(eigenvalues[-1])
    return lam_max / lam_min if lam_min > 0.0 else math.inf


def condition_number(cov: npt.ArrayLike) -> float:
    """2-norm condition number of a symmetric matrix.

    .. math:: \\kappa(\\Sigma) = \\lambda_{\\max} / \\lambda_{\\min}

    computed from the eigenvalues of :math:`(\\Sigma + \\Sigma^\\top)/2`.

    Parameters
    ----------
    cov : array_like, shape (n, n)
        Finite symmetric matrix (any units; :math:`\\kappa` is scale-free).

    Returns
    -------
    float
        :math:`\\ge 1`, or ``math.inf`` when :math:`\\lambda_{\\min} \\le 0`
        (singular or indefinite).

    Raises
    ------
    ConfigError
        If ``cov`` is not square or has a non-finite entry.
    """
    c = _as_square(cov)
    return _condition_from_eigenvalues(np.linalg.eigvalsh(0.5 * (c + c.T)))


def shrink_covariance(cov: npt.ArrayLike, shrinkage: float) -> FloatArray:
    """Convex combination of a covariance and the scaled identity.

    .. math:: \\Sigma_\\delta = (1-\\delta)\\,\\Sigma + \\delta\\,\\mu I,
              \\qquad \\mu = \\operatorname{tr}(\\Sigma)/n

    the Ledoit-Wolf target [3]_.  The trace (total variance) is preserved, the
    eigenvectors are unchanged and every eigenvalue moves towards
    :math:`\\mu`: :math:`\\lambda \\mapsto (1-\\delta)\\lambda + \\delta\\mu`, so the
    condition number decreases monotonically in :math:`\\delta`, reaching 1 at
    :math:`\\delta = 1`.  Scale-equivariant and permutation-equivariant.

    Parameters
    ----------
    cov : array_like, shape (n, n)
        Finite symmetric matrix (any units; the output has the same units).
    shrinkage : float
        Intensity :math:`\\delta \\in [0, 1]`.

    Returns
    -------
    FloatArray, shape (n, n)
        Exactly symmetric.

    Raises
    ------
    ConfigError
        Non-square or non-finite ``cov``; ``shrinkage`` outside ``[0, 1]``.
    """
    c = _as_square(cov)
    delta = _check_shrinkage(shrinkage)
    c = 0.5 * (c + c.T)
    mu = float(np.trace(c)) / c.shape[0]
    out = (1.0 - delta) * c
    out[np.diag_indices_from(out)] += delta * mu
    return out


def repair_covariance(
    cov: npt.ArrayLike, eigenvalue_floor: float = _DEFAULT_EIGENVALUE_FLOOR
) -> tuple[FloatArray, RepairReport]:
    """Nearest-in-spirit positive definite covariance with the same variances.

    The repair works on the correlation matrix so that the variances -- what
    inverse-volatility and risk-parity sizing depend on most -- are kept
    *exactly*, and so that the floor is scale-free (Rebonato-Jäckel [4]_):

    1. :math:`C = D^{-1/2} \\Sigma_s D^{-1/2}` with :math:`\\Sigma_s =
       (\\Sigma+\\Sigma^\\top)/2` and :math:`D = \\operatorname{diag}(\\Sigma_s)`;
    2. :math:`C = V \\Lambda V^\\top`; clip :math:`\\Lambda` from below at
       ``eigenvalue_floor``: :math:`C_1 = V \\max(\\Lambda, f) V^\\top`;
    3. restore the unit diagonal, :math:`C_2 = E^{-1/2} C_1 E^{-1/2}` with
       :math:`E = \\operatorname{diag}(C_1)`;
    4. :math:`\\Sigma' = D^{1/2} C_2 D^{1/2}`, diagonal set to
       :math:`\\operatorname{diag}(\\Sigma_s)` exactly.

    Steps 3-4 are congruences with positive diagonal matrices, so
    :math:`\\Sigma'` is positive definite; its correlation eigenvalues are at
    least :math:`f / \\max_i (C_1)_{ii}` (slightly below ``f`` because lifting
    eigenvalues raises the diagonal before step 3).  If no eigenvalue is below
    the floor the (symmetrised) input is returned unchanged.  Only the
    correlations move; the report states by how much.

    Parameters
    ----------
    cov : array_like, shape (n, n)
        Finite, (near-)symmetric matrix with a strictly positive diagonal, e.g.
        a pairwise-complete covariance (possibly indefinite).  Any units.
    eigenvalue_floor : float, default 1e-8
        Floor :math:`f \\in (0, 1)` for the correlation eigenvalues
        (dimensionless; they sum to ``n``).  It bounds the correlation
        condition number by about ``n / f``.

    Returns
    -------
    (FloatArray of shape (n, n), RepairReport)
        The repaired, exactly symmetric matrix and what changed.

    Raises
    ------
    ConfigError
        Non-square or non-finite ``cov``; floor outside ``(0, 1)``.
    SingularCovarianceError
        If a variance (diagonal entry) is :math:`\\le 0`: no repair can keep
        the variances then (a constant price series has zero variance).
    """
    c = _as_square(cov)
    floor = _check_eigenvalue_floor(eigenvalue_floor)
    c = 0.5 * (c + c.T)
    variances = np.diag(c).copy()
    if np.any(variances <= 0.0):
        i = int(np.argmax(variances <= 0.0))
        raise SingularCovarianceError(
            f"variance of asset {i} is {variances[i]!r}; repair_covariance keeps the variances "
            "and needs each to be > 0. Remove the asset (a constant price has zero variance) "
            "or fix its price history."
        )
    vols = np.sqrt(variances)
    corr = c / np.outer(vols, vols)
    np.fill_diagonal(corr, 1.0)
    eigenvalues, vectors = np.linalg.eigh(corr)
    lifted = int(np.count_nonzero(eigenvalues < floor))
    kappa_before = _condition_from_eigenvalues(np.linalg.eigvalsh(c))
    if lifted == 0:
        report = RepairReport(floor, 0, float(eigenvalues[0]), kappa_before, kappa_before, 0.0)
        return c, report
    clipped = (vectors * np.maximum(eigenvalues, floor)) @ vectors.T
    scale = 1.0 / np.sqrt(np.diag(clipped))
    corr_new = clipped * np.outer(scale, scale)
    corr_new = 0.5 * (corr_new + corr_new.T)
    np.fill_diagonal(corr_new, 1.0)
    out = corr_new * np.outer(vols, vols)
    np.fill_diagonal(out, variances)
    report = RepairReport(
        eigenvalue_floor=floor,
        eigenvalues_lifted=lifted,
        min_eigenvalue_before=float(eigenvalues[0]),
        condition_number_before=kappa_before,
        condition_number_after=_condition_from_eigenvalues(np.linalg.eigvalsh(out)),
        max_abs_correlation_change=float(np.max(np.abs(corr_new - corr))),
    )
    return out, report


def inverse_volatility_weights(volatilities: npt.ArrayLike) -> FloatArray:
    """Weights proportional to the inverse volatility (the diagonal fallback).

    .. math:: w_i = \\frac{1/\\sigma_i}{\\sum_j 1/\\sigma_j}

    This is the equal-risk-contribution portfolio when all correlations are
    equal (Maillard, Roncalli and Teïletche, "The properties of equally
    weighted risk contribution portfolios", J. Portfolio Management 36(4),
    2010), and what :func:`gated_covariance`'s ``"inverse_volatility"``
    action asks the caller to hold.

    Parameters
    ----------
    volatilities : array_like, shape (n_assets,)
        Strictly positive, finite volatilities (any common unit, e.g.
        ``CovarianceEstimate.volatilities``).

    Returns
    -------
    FloatArray, shape (n_assets,)
        Fractions of NAV, positive, summing to 1.

    Raises
    ------
    ConfigError
        If ``volatilities`` is not 1-D and non-empty, or an entry is not
        finite and > 0.
    """
    v = np.asarray(volatilities, dtype=np.float64)
    if v.ndim != 1 or v.size < 1:
        raise ConfigError(f"volatilities must be a non-empty 1-D array; got shape {v.shape}.")
    bad = ~(np.isfinite(v) & (v > 0.0))
    if bad.any():
        i = int(np.argmax(bad))
        raise ConfigError(
            f"volatility of asset {i} is {v[i]!r}; inverse-volatility weights need every "
            "volatility finite and > 0."
        )
    inverse = 1.0 / v
    return inverse / inverse.sum()


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

    (the reliability-weights estimator of :func:`ewma_covariance` on the
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


def _compute_base(returns: npt.ArrayLike, config: EstimatorConfig) -> _Base:
    r, observed = _observed_returns(returns, config.missing)
    half_life = float(config.half_life_days) if config.method == "ewma" else math.inf
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


def estimate_covariance(returns: npt.ArrayLike, method: Method = "ewma", **params: Any) -> CovarianceEstimate:
    """One entry point for every estimator: ``EstimatorConfig(method=method, **params)``.

    Example: ``estimate_covariance(r, "ewma", half_life_days=30)``,
    ``estimate_covariance(r, "ledoit_wolf", missing="drop_rows")``,
    ``estimate_covariance(r, "sample", shrinkage=0.2)``.

    Parameters
    ----------
    returns : array_like, shape (n_obs, n_assets)
        Simple returns per period, row 0 oldest (``NaN`` = missing).
    method : {"sample", "ewma", "ledoit_wolf"}, default "ewma"
        Estimator.
    **params
        Any other :class:`EstimatorConfig` field (``half_life_days``,
        ``periods_per_year``, ``missing``, ``min_observations``, ``shrinkage``,
        ``demean``, ``eigenvalue_floor``, ``max_condition_number``).

    Returns
    -------
    CovarianceEstimate
        See :func:`covariance_from_config`.

    Raises
    ------
    ConfigError
        Unknown parameter or invalid value; the errors of
        :func:`covariance_from_config` otherwise.
    """
    config = EstimatorConfig.from_mapping({"method": method, **params})
    return covariance_from_config(returns, config)


# --------------------------------------------------------------------------- #
# Named estimators (thin wrappers over EstimatorConfig)
# --------------------------------------------------------------------------- #
def ewma_covariance(
    returns: npt.ArrayLike,
    half_life_days: float,
    periods_per_year: int = 365,
    demean: bool = True,
    min_observations: int | None = None,
    max_condition_number: float = _DEFAULT_MAX_CONDITION_NUMBER,
    *,
    missing: MissingPolicy = "raise",
    shrinkage: float | None = None,
) -> CovarianceEstimate:
    """Exponentially weighted (EWMA) covariance of simple returns, annualised.

    With :math:`T` observations, ages :math:`a_t = T-1-t` (the newest row has
    age 0) and decay :math:`\\lambda = 2^{-1/h}` for half-life :math:`h`,

    .. math::

        w_t = \\frac{\\lambda^{a_t}}{\\sum_s \\lambda^{a_s}}, \\qquad
        \\mu = \\sum_t w_t r_t, \\qquad
        \\hat\\Sigma = P \\cdot \\frac{\\sum_t w_t (r_t-\\mu)(r_t-\\mu)^\\top}
                                      {1 - \\sum_t w_t^2},

    where :math:`P` is ``periods_per_year``.  The factor
    :math:`1/(1-\\sum_t w_t^2)` is the unbiased correction for reliability
    weights when the weighted mean is estimated; with equal weights
    (:math:`h \\to \\infty`) it equals :math:`T/(T-1)` and :math:`\\hat\\Sigma`
    is exactly ``periods_per_year * np.cov(returns, rowvar=False)``.  With
    ``demean=False`` the mean is taken as zero (RiskMetrics [1]_ convention)
    and no correction is applied: :math:`\\hat\\Sigma = P \\sum_t w_t r_t r_t^\\top`.

    The weights are computed in log space, :math:`\\ln w_t \\propto
    -a_t \\ln 2 / h`, which is exact for very long half-lives (no ``1 - λ``
    cancellation) and underflows gracefully to 0 for very old observations.
    Ages count rows of the input, so with ``missing="drop_rows"`` a dropped
    row still ages the older ones; with ``missing="pairwise"`` each pair's
    weights are renormalised over its common rows.
    Cost: :math:`O(T n^2)` for the weighted cross-product plus
    :math:`O(n^3)` for the eigenvalue check; no Python loop over observations.

    Parameters
    ----------
    returns : array_like, shape (n_obs, n_assets)
        Simple returns per period, row 0 oldest (see :func:`simple_returns`);
        ``NaN`` marks a missing observation (see ``missing``).
    half_life_days : float
        Half-life :math:`h > 0` in observation periods (days for daily data):
        the weight of an observation halves every ``h`` rows back in time.
        ``math.inf`` gives equal weights.
    periods_per_year : int, default 365
        Annualisation factor :math:`P > 0`.
    demean : bool, default True
        Remove the weighted mean (with the bias correction above) if True;
        assume a zero mean if False.
    min_observations : int, optional
        Minimum number of rows required; default ``max(n_assets + 1, 2)``
        (fewer rows than ``n_assets + 1`` cannot give a full-rank demeaned
        estimate).  Values below 2 are raised to 2.
    max_condition_number : float, default 1e10
        Largest acceptable 2-norm condition number of the result.
    missing : {"raise", "drop_rows", "pairwise"}, default "raise"
        Missing-data policy (module docstring); never forward-fills.
    shrinkage : float, optional
        Shrinkage intensity in ``[0, 1]`` towards the scaled identity
        (:func:`shrink_covariance`); default none.

    Returns
    -------
    CovarianceEstimate
        Annualised covariance, volatilities, correlation and diagnostics.

    Raises
    ------
    ConfigError
        If ``half_life_days <= 0`` (or NaN), ``periods_per_year <= 0``,
        ``max_condition_number <= 1`` or ``returns`` is not 2-D.
    MissingObservationError
        If a return is NaN and ``missing="raise"`` (an InvalidPriceError).
    InvalidPriceError
        If any return is infinite.
    InsufficientHistoryError
        If ``n_obs`` is below the required minimum.
    SingularCovarianceError
        If the smallest eigenvalue is :math:`\\le 0` or the condition number
        exceeds ``max_condition_number`` (e.g. two identical price series).

    References
    ----------
    .. [1] J.P. Morgan/Reuters, "RiskMetrics -- Technical Document", 1996, §5.2.
    """
    _check_half_life(half_life_days)  # validated first: the historical order of checks
    return covariance_from_config(
        returns,
        EstimatorConfig(
            method="ewma",
            half_life_days=float(half_life_days),
            periods_per_year=periods_per_year,
            missing=missing,
            min_observations=min_observations,
            shrinkage=shrinkage,
            demean=bool(demean),
            max_condition_number=max_condition_number,
        ),
    )


def sample_covariance(
    returns: npt.ArrayLike,
    periods_per_year: int = 365,
    min_observations: int | None = None,
    max_condition_number: float = _DEFAULT_MAX_CONDITION_NUMBER,
    *,
    missing: MissingPolicy = "raise",
    shrinkage: float | None = None,
) -> CovarianceEstimate:
    """Equally weighted (unbiased) sample covariance, annualised.

    .. math:: \\hat\\Sigma = \\frac{P}{T-1} \\sum_t (r_t-\\bar r)(r_t-\\bar r)^\\top

    i.e. ``periods_per_year * np.cov(returns, rowvar=False)``; this is
    :func:`ewma_covariance` with ``half_life_days = math.inf`` and the same
    validation, shapes and errors.

    Parameters
    ----------
    returns : array_like, shape (n_obs, n_assets)
        Simple returns per period, row 0 oldest (``NaN`` = missing).
    periods_per_year : int, default 365
        Annualisation factor.
    min_observations : int, optional
        As in :func:`ewma_covariance`.
    max_condition_number : float, default 1e10
        As in :func:`ewma_covariance`.
    missing : {"raise", "drop_rows", "pairwise"}, default "raise"
        As in :func:`ewma_covariance`.
    shrinkage : float, optional
        As in :func:`ewma_covariance`.

    Returns
    -------
    CovarianceEstimate
        With ``half_life_days == math.inf`` and ``method == "sample"``.
    """
    return covariance_from_config(
        returns,
        EstimatorConfig(
            method="sample",
            periods_per_year=periods_per_year,
            missing=missing,
            min_observations=min_observations,
            shrinkage=shrinkage,
            max_condition_number=max_condition_number,
        ),
    )


def ledoit_wolf_covariance(
    returns: npt.ArrayLike,
    periods_per_year: int = 365,
    *,
    shrinkage: float | None = None,
    demean: bool = True,
    missing: Literal["raise", "drop_rows"] = "raise",
    min_observations: int | None = None,
    max_condition_number: float = _DEFAULT_MAX_CONDITION_NUMBER,
) -> CovarianceEstimate:
    """Ledoit-Wolf shrinkage covariance towards the scaled identity, annualised.

    .. math::

        S = \\frac{1}{T} \\sum_t (r_t-\\bar r)(r_t-\\bar r)^\\top, \\qquad
        \\hat\\Sigma = P \\left[(1-\\delta) S + \\delta \\mu I\\right], \\qquad
        \\mu = \\operatorname{tr}(S)/n,

    with :math:`S` the maximum-likelihood sample covariance (divisor
    :math:`T`, as in [3]_ and scikit-learn) and :math:`\\delta \\in [0, 1]` the
    asymptotically optimal intensity of Ledoit and Wolf (2004), computed by
    :func:`sklearn.covariance.ledoit_wolf_shrinkage`.  The result equals
    ``periods_per_year * sklearn.covariance.LedoitWolf().fit(r).covariance_``.
    The target keeps the average variance but not each asset's: assets with
    very different volatilities are pulled towards the mean variance.
    It is positive definite whenever :math:`\\delta > 0`, even with fewer rows
    than assets, so the default minimum is 2 rows.

    Parameters
    ----------
    returns : array_like, shape (n_obs, n_assets)
        Simple returns per period, row 0 oldest.
    periods_per_year : int, default 365
        Annualisation factor :math:`P`.
    shrinkage : float, optional
        Override :math:`\\delta` (e.g. to shrink harder than Ledoit-Wolf).
    demean : bool, default True
        Centre the data (``assume_centered = not demean`` in scikit-learn).
    missing : {"raise", "drop_rows"}, default "raise"
        ``"pairwise"`` is not available: the intensity needs complete rows.
    min_observations : int, optional
        Fewest complete rows accepted; default 2.
    max_condition_number : float, default 1e10
        Largest acceptable condition number.

    Returns
    -------
    CovarianceEstimate
        ``method == "ledoit_wolf"``, ``shrinkage`` the intensity used,
        ``half_life_days == math.inf``.

    Raises
    ------
    ConfigError, MissingObservationError, InvalidPriceError,
    InsufficientHistoryError, SingularCovarianceError
        As in :func:`covariance_from_config`.
    """
    return covariance_from_config(
        returns,
        EstimatorConfig(
            method="ledoit_wolf",
            periods_per_year=periods_per_year,
            missing=missing,
            min_observations=min_observations,
            shrinkage=shrinkage,
            demean=bool(demean),
            max_condition_number=max_condition_number,
        ),
    )


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
    half_life = float(config.half_life_days) if config.method == "ewma" else math.inf
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
       ``missing="pairwise"`` already repaired by :func:`repair_covariance`),
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
       with :func:`inverse_volatility_weights`, which inverts nothing;
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
