"""Exception hierarchy of the keeper.

Every error the keeper raises on purpose derives from :class:`KeeperError`, so
a caller (the main loop, a CLI, a test) can separate *anticipated* failures --
a stale oracle, a singular covariance, a revert in simulation -- from genuine
bugs (``TypeError``, ``IndexError``, ...), which are deliberately left
un-wrapped.

Convention for messages: every message names (1) the observed value, (2) the
limit or expectation it violated and (3) what the operator should do about it.
"""

from __future__ import annotations

__all__ = [
    "KeeperError",
    "ConfigError",
    "StaleOracleError",
    "InvalidPriceError",
    "InsufficientHistoryError",
    "SingularCovarianceError",
    "SolverDidNotConvergeError",
    "GasPriceTooHighError",
    "SimulationRevertedError",
    "QuoteBelowBoundError",
    "TransactionFailedError",
    "MissingObservationError",
    "EstimatorConfigError",
]


class KeeperError(Exception):
    """Base of every error the keeper raises on purpose."""


class ConfigError(KeeperError):
    """A configuration value or call parameter is out of its admissible range."""


class StaleOracleError(KeeperError):
    """An oracle answer is older than the configured maximum age."""


class InvalidPriceError(KeeperError):
    """A price (or a return derived from it) is non-finite, zero or negative."""


class InsufficientHistoryError(KeeperError):
    """Fewer observations are available than the estimator needs."""


class SingularCovarianceError(KeeperError):
    """A covariance matrix is not (numerically) symmetric positive definite."""


class SolverDidNotConvergeError(KeeperError):
    """An iterative solver stopped before reaching its tolerance."""


class GasPriceTooHighError(KeeperError):
    """The network gas price exceeds the configured ceiling."""


class SimulationRevertedError(KeeperError):
    """A transaction reverted when simulated (``eth_call``) before sending."""


class QuoteBelowBoundError(KeeperError):
    """A swap quote is below the minimum output the keeper accepts."""


class TransactionFailedError(KeeperError):
    """A sent transaction was mined with a failure status or was dropped."""


class MissingObservationError(InvalidPriceError):
    """A price or return is missing (NaN) and the estimator's missing-data policy is ``"raise"``."""


class EstimatorConfigError(ConfigError, ValueError):
    """An estimator configuration value is invalid.

    Also a ``ValueError`` so that pydantic reports it as a validation error (with the field path)
    when the configuration is nested in a pydantic model loaded from a config file.
    """


class AllocationFailedError(KeeperError):
    """Every method of the allocator's fallback chain failed (no weights to return)."""


class OptionInputError(KeeperError, ValueError):
    """An option-pricing input is outside its domain (non-positive spot or strike, negative
    expiry or volatility, NaN, a target delta that no strike attains); also a ``ValueError``."""


class BacktestDataError(KeeperError):
    """A backtest's price data cannot support a replayed day (e.g. a held asset has no close)."""


__all__ += ["MissingObservationError", "EstimatorConfigError", "AllocationFailedError", "OptionInputError", "BacktestDataError"]


class OptionLegError(KeeperError):
    """An overlay order cannot become a vault ``OptionLeg`` (a written option, a close of a series the vault
    does not hold, too many legs)."""


class OptionPremiumBoundError(KeeperError):
    """The option market's ask (bid) lies beyond the vault's ``maxPremiumBps`` bound around the fair value."""


__all__ += ["OptionLegError", "OptionPremiumBoundError"]
