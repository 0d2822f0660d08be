"""Named covariance estimators and inverse-volatility weights, for the tests only.

The keeper estimates through one entry point, :func:`keeper.conditioning_gate.gated_covariance`,
whose first rung is :func:`keeper.covariance.covariance_from_config`.  The named estimators that
``keeper.estimation`` exposed next to it (``ewma_covariance``, ``sample_covariance``,
``ledoit_wolf_covariance``, ``estimate_covariance``) were thin wrappers that built an
:class:`~keeper.covariance.EstimatorConfig` and called ``covariance_from_config``; nothing in the
keeper used them, so they live here with the same signatures, for the tests that state an
estimator by name.  Formulas, units and sources: the :mod:`keeper.covariance` module docstring.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from keeper.covariance import CovarianceEstimate, EstimatorConfig, Method, MissingPolicy, covariance_from_config
from keeper.errors import ConfigError

_DEFAULT_MAX_CONDITION_NUMBER = 1e10


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
    """``covariance_from_config(returns, EstimatorConfig(method="ewma", ...))``: the annualised EWMA
    covariance, half-life ``half_life_days`` in observation periods (``math.inf``: equal weights)."""
    try:
        half_life = float(half_life_days)
    except (TypeError, ValueError):
        half_life = math.nan
    if not half_life > 0.0:  # checked first, as keeper.estimation.ewma_covariance did
        raise ConfigError(
            f"half_life_days is {half_life_days!r}; it must be > 0 (use math.inf "
            "for equal weights). Fix the estimator configuration."
        )
    return covariance_from_config(
        returns,
        EstimatorConfig(
            method="ewma",
            half_life_days=half_life,
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
    """``covariance_from_config(returns, EstimatorConfig(method="sample", ...))``:
    ``periods_per_year * np.cov(returns, rowvar=False)`` (``half_life_days == math.inf``)."""
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
    """``covariance_from_config(returns, EstimatorConfig(method="ledoit_wolf", ...))``:
    ``periods_per_year * sklearn.covariance.LedoitWolf().fit(r).covariance_``."""
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


def estimate_covariance(returns: npt.ArrayLike, method: Method = "ewma", **params: Any) -> CovarianceEstimate:
    """``covariance_from_config(returns, EstimatorConfig.from_mapping({"method": method, **params}))``
    (unknown parameters raise, through :meth:`EstimatorConfig.from_mapping`)."""
    return covariance_from_config(returns, EstimatorConfig.from_mapping({"method": method, **params}))


def inverse_volatility_weights(volatilities: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """:math:`w_i = (1/\\sigma_i) / \\sum_j 1/\\sigma_j` from volatilities, shape (n_assets,) -> (n_assets,).

    The keeper's allocator takes the covariance instead
    (:func:`keeper.allocation.inverse_volatility_weights`); this form states the weights the gate's
    ``"inverse_volatility"`` action asks for directly from ``CovarianceEstimate.volatilities``.
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
