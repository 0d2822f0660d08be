"""EIP-1559 fee policy with hard caps: estimation from ``eth_feeHistory``, a base-fee gate, and the fee
bump of a replacement transaction.

Sources: EIP-1559 (``maxFeePerGas``, ``maxPriorityFeePerGas``; the base fee moves at most 12.5% per
block), ``eth_feeHistory`` (execution-apis: ``baseFeePerGas`` holds one entry more than the blocks asked
for, the base fee of the next block; ``reward`` the requested percentiles of each block's effective
priority fees), and geth's transaction pool (a replacement at the same nonce needs both fees at least
``PriceBump`` = 10% above the transaction it replaces).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

from keeper.errors import BaseFeeAboveGateError, ConfigError, GasPriceTooHighError, ReplacementFeeCapError

GWEI = 10**9
#: Scale of the integer multipliers below: 1e4 = ×1.
MULTIPLIER_SCALE = 10_000
#: The node's minimum fee bump for a replacement at the same nonce (geth ``txpool.pricebump`` = 10%).
NODE_MIN_BUMP_E4 = 11_000


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True)
class Fees:
    """EIP-1559 fees of one transaction, wei per gas."""

    max_fee_per_gas: int
    max_priority_fee_per_gas: int
    base_fee_per_gas: int


@dataclass(frozen=True)
class FeeHistory:
    """What ``eth_feeHistory`` says about the recent blocks.

    Attributes
    ----------
    next_base_fee_per_gas : int
        Base fee of the block after the newest one, wei per gas (the last ``baseFeePerGas`` entry).
    priority_fees_per_gas : tuple of int
        The requested percentile of each non-empty block's priority fees, wei per gas, oldest first.
    """

    next_base_fee_per_gas: int
    priority_fees_per_gas: tuple[int, ...]

    @classmethod
    def from_rpc(cls, result: dict[str, Any]) -> "FeeHistory":
        """Parses a raw ``eth_feeHistory`` result (hex quantities) requested with one percentile."""
        base_fees = result.get("baseFeePerGas") or []
        if not base_fees:
            raise GasPriceTooHighError("eth_feeHistory returned no base fee: the node does not support EIP-1559")
        rewards = result.get("reward") or []
        ratios = result.get("gasUsedRatio") or [1.0] * len(rewards)
        tips = tuple(int(r[0], 16) for r, used in zip(rewards, ratios) if r and used > 0)
        return cls(int(base_fees[-1], 16), tips)


@dataclass(frozen=True)
class FeePolicy:
    """Fees of a new transaction from the next block's base fee, refusing to pay above a cap.

    ``maxFeePerGas = min(cap, base fee × multiplier + tip)``: with the default multiplier 2 there is
    room for the base fee to double (six full blocks at +12.5%) while never exceeding the cap.
    Refuses when the base fee plus the tip alone is above the cap, and, when a gate is set, when the
    base fee is above the gate (the tick waits for cheaper blocks; a pending transaction is still
    replaced up to the cap).

    The tip is the ``priority_fee_percentile`` of the priority fees paid in each of the last
    ``fee_history_blocks`` non-empty blocks, median over those blocks, clipped to
    [``min_priority_fee_per_gas_wei``, ``max_priority_fee_per_gas_wei``]; with ``fee_history_blocks``
    = 0 (or no non-empty block) it is the cap ``max_priority_fee_per_gas_wei`` (resp. the floor).

    Parameters
    ----------
    max_fee_per_gas_wei : int
        Hard cap on ``maxFeePerGas``, wei per gas.
    max_priority_fee_per_gas_wei : int
        Cap on the tip (``maxPriorityFeePerGas``), wei per gas.
    base_fee_multiplier_e4 : int
        Base fee multiplier in ``maxFeePerGas``, 1e4 = ×1 (default ×2).
    base_fee_gate_wei : int or None
        Skip new transactions while the next base fee is above this, wei per gas.
    fee_history_blocks : int
        Blocks of ``eth_feeHistory`` behind the tip estimate; 0 pays the tip cap.
    priority_fee_percentile : float
        Percentile (0-100) of each block's priority fees.
    min_priority_fee_per_gas_wei : int
        Floor of the estimated tip, wei per gas.
    """

    max_fee_per_gas_wei: int
    max_priority_fee_per_gas_wei: int
    base_fee_multiplier_e4: int = 2 * MULTIPLIER_SCALE
    base_fee_gate_wei: int | None = None
    fee_history_blocks: int = 0
    priority_fee_percentile: float = 50.0
    min_priority_fee_per_gas_wei: int = 0

    def __post_init__(self) -> None:
        if self.max_fee_per_gas_wei <= 0 or self.max_priority_fee_per_gas_wei < 0:
            raise ConfigError(
                f"fee caps must be positive: max fee {self.max_fee_per_gas_wei} wei, "
                f"tip {self.max_priority_fee_per_gas_wei} wei"
            )
        if self.base_fee_multiplier_e4 < MULTIPLIER_SCALE:
            raise ConfigError(
                f"base fee multiplier {self.base_fee_multiplier_e4 / MULTIPLIER_SCALE} < 1: the transaction could not "
                "pay the base fee of the next block; set base_fee_multiplier >= 1"
            )
        if not 0 <= self.min_priority_fee_per_gas_wei <= self.max_priority_fee_per_gas_wei:
            raise ConfigError(
                f"tip floor {self.min_priority_fee_per_gas_wei} wei is outside [0, tip cap "
                f"{self.max_priority_fee_per_gas_wei} wei]: lower min_priority_fee_per_gas_gwei"
            )
        if not 0 <= self.priority_fee_percentile <= 100 or self.fee_history_blocks < 0:
            raise ConfigError(
                f"priority_fee_percentile {self.priority_fee_percentile} must be in [0, 100] and fee_history_blocks "
                f"{self.fee_history_blocks} >= 0"
            )

    @classmethod
    def from_gwei(
        cls,
        max_fee_gwei: float,
        priority_fee_gwei: float,
        *,
        base_fee_multiplier: float = 2.0,
        base_fee_gate_gwei: float | None = None,
        fee_history_blocks: int = 0,
        priority_fee_percentile: float = 50.0,
        min_priority_fee_gwei: float = 0.0,
    ) -> "FeePolicy":
        """A policy from amounts in gwei (multiplier as a plain factor, e.g. 2.0)."""
        return cls(
            int(round(max_fee_gwei * GWEI)),
            int(round(priority_fee_gwei * GWEI)),
            base_fee_multiplier_e4=int(round(base_fee_multiplier * MULTIPLIER_SCALE)),
            base_fee_gate_wei=None if base_fee_gate_gwei is None else int(round(base_fee_gate_gwei * GWEI)),
            fee_history_blocks=fee_history_blocks,
            priority_fee_percentile=priority_fee_percentile,
            min_priority_fee_per_gas_wei=int(round(min_priority_fee_gwei * GWEI)),
        )

    @classmethod
    def from_config(cls, config: Any) -> "FeePolicy":
        """The policy of a :class:`~keeper.config.KeeperConfig` (every fee field, in gwei there)."""
        return cls.from_gwei(
            config.transactions.max_fee_per_gas_gwei,
            config.transactions.max_priority_fee_per_gas_gwei,
            base_fee_multiplier=config.transactions.base_fee_multiplier,
            base_fee_gate_gwei=config.transactions.base_fee_gate_gwei,
            fee_history_blocks=config.transactions.fee_history_blocks,
            priority_fee_percentile=config.transactions.priority_fee_percentile,
            min_priority_fee_gwei=min(config.transactions.min_priority_fee_per_gas_gwei, config.transactions.max_priority_fee_per_gas_gwei),
        )

    def tip(self, history: FeeHistory | None) -> int:
        """Priority fee from ``history`` (median over blocks of the percentile), clipped; wei per gas."""
        if history is None or self.fee_history_blocks == 0:
            return self.max_priority_fee_per_gas_wei
        if not history.priority_fees_per_gas:
            return self.min_priority_fee_per_gas_wei
        estimate = int(statistics.median_low(history.priority_fees_per_gas))
        return min(max(estimate, self.min_priority_fee_per_gas_wei), self.max_priority_fee_per_gas_wei)

    def fees(self, base_fee_per_gas: int, priority_fee_per_gas: int | None = None, *, gate: bool = True) -> Fees:
        """Fees for a block whose base fee is ``base_fee_per_gas`` wei.

        Parameters
        ----------
        base_fee_per_gas : int
            Base fee of the block the transaction is meant for, wei per gas.
        priority_fee_per_gas : int, optional
            Tip, wei per gas, clipped to the tip cap; the cap itself when omitted.
        gate : bool
            Apply the base-fee gate (new transactions); replacements pass ``False``.

        Raises
        ------
        BaseFeeAboveGateError
            When a gate is set and ``base_fee_per_gas`` is above it.
        GasPriceTooHighError
            When ``base_fee_per_gas`` + tip exceeds the cap.
        """
        tip = self.max_priority_fee_per_gas_wei if priority_fee_per_gas is None else min(
            priority_fee_per_gas, self.max_priority_fee_per_gas_wei
        )
        if gate and self.base_fee_gate_wei is not None and base_fee_per_gas > self.base_fee_gate_wei:
            raise BaseFeeAboveGateError(base_fee_per_gas, self.base_fee_gate_wei)
        if base_fee_per_gas + tip > self.max_fee_per_gas_wei:
            raise GasPriceTooHighError(
                f"base fee {base_fee_per_gas / GWEI:.3f} gwei + tip {tip / GWEI:.3f} gwei exceeds the cap "
                f"{self.max_fee_per_gas_wei / GWEI:.3f} gwei: waiting for cheaper gas (raise "
                "max_fee_per_gas_gwei to pay more)"
            )
        headroom = base_fee_per_gas * self.base_fee_multiplier_e4 // MULTIPLIER_SCALE
        return Fees(min(self.max_fee_per_gas_wei, headroom + tip), tip, base_fee_per_gas)

    def estimate(self, w3: Any, *, gate: bool = True) -> Fees:
        """Fees for the next block from the node's ``eth_feeHistory`` (one round trip).

        Raises
        ------
        BaseFeeAboveGateError, GasPriceTooHighError
            As :meth:`fees`; also when the node reports no base fee.
        """
        method, params = self.fee_history_request()
        return self.fees_from_history(self.parse_fee_history(w3.provider.make_request(method, params)), gate=gate)

    def fee_history_request(self) -> tuple[str, list[Any]]:
        """The ``eth_feeHistory`` request (method, params) behind :meth:`estimate`, to send in a batch."""
        return "eth_feeHistory", [hex(max(self.fee_history_blocks, 1)), "latest", [self.priority_fee_percentile]]

    @staticmethod
    def parse_fee_history(response: dict[str, Any]) -> FeeHistory:
        """The node's response object to :meth:`fee_history_request`.

        Raises
        ------
        GasPriceTooHighError
            The node answered with an error or without a base fee: the transaction cannot be priced.
        """
        if "error" in response:
            raise GasPriceTooHighError(f"eth_feeHistory failed: {response['error']}; cannot price the transaction")
        return FeeHistory.from_rpc(response["result"])

    def fees_from_history(self, history: FeeHistory, *, gate: bool = True) -> Fees:
        """Fees for the block after ``history``'s newest: :meth:`fees` at its next base fee and :meth:`tip`.

        Raises
        ------
        BaseFeeAboveGateError, GasPriceTooHighError
            As :meth:`fees`.
        """
        return self.fees(history.next_base_fee_per_gas, self.tip(history), gate=gate)

    def bump(self, previous: Fees, market: Fees | None = None, factor_e4: int = 11_250) -> Fees:
        """Fees of a replacement for a transaction priced ``previous`` (same nonce).

        Both fees are multiplied by ``max(factor, 1.10)`` (the node's replacement minimum), rounded up and
        at least 1 wei more, so repeated bumps grow geometrically; each is also raised to the current
        market fees when those are higher; the result is clipped to the caps.

        Parameters
        ----------
        previous : Fees
            Fees of the transaction being replaced.
        market : Fees, optional
            Fresh fees for the next block (ungated estimate).
        factor_e4 : int
            Bump factor, 1e4 = ×1 (default ×1.125).

        Raises
        ------
        ReplacementFeeCapError
            When the caps leave less than the node's minimum bump: the node would refuse the replacement.
        """
        factor = max(factor_e4, NODE_MIN_BUMP_E4)
        old_tip, old_fee = previous.max_priority_fee_per_gas, previous.max_fee_per_gas
        tip = max(_ceil_div(old_tip * factor, MULTIPLIER_SCALE), old_tip + 1)
        max_fee = max(_ceil_div(old_fee * factor, MULTIPLIER_SCALE), old_fee + 1)
        if market is not None:
            tip = max(tip, market.max_priority_fee_per_gas)
            max_fee = max(max_fee, market.max_fee_per_gas)
        tip = min(tip, self.max_priority_fee_per_gas_wei)
        max_fee = min(max_fee, self.max_fee_per_gas_wei)
        need_tip = _ceil_div(old_tip * NODE_MIN_BUMP_E4, MULTIPLIER_SCALE)
        need_fee = _ceil_div(old_fee * NODE_MIN_BUMP_E4, MULTIPLIER_SCALE)
        if tip < need_tip or max_fee < need_fee or tip > max_fee:
            raise ReplacementFeeCapError(previous, self.max_fee_per_gas_wei, self.max_priority_fee_per_gas_wei)
        base = market.base_fee_per_gas if market is not None else previous.base_fee_per_gas
        return Fees(max_fee, tip, base)
