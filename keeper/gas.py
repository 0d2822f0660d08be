"""EIP-1559 fee policy with hard caps."""

from __future__ import annotations

from dataclasses import dataclass

from keeper.errors import GasPriceTooHighError

GWEI = 10**9


@dataclass(frozen=True)
class Fees:
    """EIP-1559 fees of one transaction, wei per gas."""

    max_fee_per_gas: int
    max_priority_fee_per_gas: int
    base_fee_per_gas: int


@dataclass(frozen=True)
class FeePolicy:
    """Fees from the latest base fee, refusing to pay above a cap.

    ``maxFeePerGas = min(cap, 2 × baseFee + tip)``: room for the base fee to double (it rises at most
    12.5% per block) while never exceeding the cap. Refuses when the base fee alone is above the cap.

    Parameters
    ----------
    max_fee_per_gas_wei : int
        Hard cap on ``maxFeePerGas``, wei per gas.
    max_priority_fee_per_gas_wei : int
        Tip, wei per gas.
    """

    max_fee_per_gas_wei: int
    max_priority_fee_per_gas_wei: int

    @classmethod
    def from_gwei(cls, max_fee_gwei: float, priority_fee_gwei: float) -> "FeePolicy":
        return cls(int(max_fee_gwei * GWEI), int(priority_fee_gwei * GWEI))

    def fees(self, base_fee_per_gas: int) -> Fees:
        """Fees for a block whose base fee is ``base_fee_per_gas`` wei.

        Raises
        ------
        GasPriceTooHighError
            When ``base_fee_per_gas`` + tip exceeds the cap.
        """
        tip = self.max_priority_fee_per_gas_wei
        if base_fee_per_gas + tip > self.max_fee_per_gas_wei:
            raise GasPriceTooHighError(
                f"base fee {base_fee_per_gas / GWEI:.3f} gwei + tip {tip / GWEI:.3f} gwei exceeds the cap "
                f"{self.max_fee_per_gas_wei / GWEI:.3f} gwei: waiting for cheaper gas (raise "
                "max_fee_per_gas_gwei to pay more)"
            )
        return Fees(min(self.max_fee_per_gas_wei, 2 * base_fee_per_gas + tip), tip, base_fee_per_gas)
