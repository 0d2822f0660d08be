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
    "RpcUnavailableError",
    "ShutdownRequestedError",
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
    """A swap quote is below the minimum output the keeper accepts.

    ``plan`` is the last plan quoted (:class:`keeper.planner.RebalancePlan`) when the quote-and-halve loop gave
    up, so that the tick can journal the legs the pools refused; None otherwise."""

    plan = None


class NavLossBudgetError(QuoteBelowBoundError):
    """The quoted legs would lose more against the oracle than the vault's rolling NAV-loss budget still allows
    (the vault would refuse the rebalance with ``NavLossBudgetExceeded``); the decision takes a smaller step."""


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


# --- Transactions: fees, nonces, submission, stuck and pending transactions ------------------------


class BaseFeeAboveGateError(GasPriceTooHighError):
    """The next block's base fee is above the configured gate: the tick waits for cheaper blocks.

    Attributes
    ----------
    base_fee_per_gas_wei, gate_wei : int
        The observed base fee and the gate, wei per gas.
    """

    def __init__(self, base_fee_per_gas_wei: int, gate_wei: int) -> None:
        self.base_fee_per_gas_wei = base_fee_per_gas_wei
        self.gate_wei = gate_wei
        super().__init__(
            f"next block base fee {base_fee_per_gas_wei / 1e9:.3f} gwei is above the gate {gate_wei / 1e9:.3f} gwei: "
            "skipping this tick until blocks are cheaper (raise base_fee_gate_gwei to trade anyway)"
        )


class ReplacementFeeCapError(GasPriceTooHighError):
    """A stuck transaction cannot be replaced: the fee caps leave less than the node's 10% minimum bump.

    Attributes
    ----------
    previous : Fees
        Fees of the transaction that would be replaced, wei per gas.
    max_fee_per_gas_wei, max_priority_fee_per_gas_wei : int
        The caps, wei per gas.
    """

    def __init__(self, previous: object, max_fee_per_gas_wei: int, max_priority_fee_per_gas_wei: int) -> None:
        self.previous = previous
        self.max_fee_per_gas_wei = max_fee_per_gas_wei
        self.max_priority_fee_per_gas_wei = max_priority_fee_per_gas_wei
        prev_fee = getattr(previous, "max_fee_per_gas", 0)
        prev_tip = getattr(previous, "max_priority_fee_per_gas", 0)
        super().__init__(
            f"cannot replace a transaction priced max fee {prev_fee / 1e9:.3f} gwei, tip {prev_tip / 1e9:.3f} gwei: "
            f"a replacement needs both 10% higher but the caps are {max_fee_per_gas_wei / 1e9:.3f} gwei and "
            f"{max_priority_fee_per_gas_wei / 1e9:.3f} gwei; waiting for the base fee to fall (or raise "
            "max_fee_per_gas_gwei / max_priority_fee_per_gas_gwei)"
        )


class NonceConflictError(KeeperError):
    """The keeper's nonce kept being taken by another sender of the same account while sending."""


class SubmissionError(KeeperError):
    """The node refused a signed transaction, or the submission endpoint could not be reached."""


class PendingTransactionError(KeeperError):
    """A journalled transaction of the keeper is still pending: no second one is sent for the same work."""


class TransactionStuckError(TransactionFailedError):
    """A sent transaction is still unmined after the wait (and any replacements); it stays journalled
    as live and is handled again by the next tick or by the reconciliation at start."""
class RpcUnavailableError(KeeperError):
    """Every configured RPC endpoint failed transiently (down, timing out, rate limiting) for one request."""


class ShutdownRequestedError(KeeperError):
    """A shutdown (SIGTERM/SIGINT) arrived before the tick reached the point of sending; nothing was sent."""


class PolicyInputError(ConfigError, ValueError):
    """An input of the decision policy (:mod:`keeper.policy`) is malformed: returns not (n_obs, n),
    symbols not unique or not one per column, weights not long-only fractions of NAV summing to at
    most 1, a budget or bound missing a symbol, a decision record that does not parse. Also a
    ``ValueError``."""


class OptionLegError(KeeperError):
    """An overlay order cannot become a vault ``OptionLeg`` (a written option, a close of a series the vault
    does not hold, too many legs)."""


class OptionPremiumBoundError(KeeperError):
    """The option market's ask (bid) lies beyond the vault's ``maxPremiumBps`` bound around the fair value."""


__all__ += [
    "BaseFeeAboveGateError",
    "ReplacementFeeCapError",
    "NonceConflictError",
    "SubmissionError",
    "PendingTransactionError",
    "TransactionStuckError",
    "MissingObservationError",
    "EstimatorConfigError",
    "AllocationFailedError",
    "OptionInputError",
    "BacktestDataError",
    "PolicyInputError",
    "OptionLegError",
    "OptionPremiumBoundError",
]
