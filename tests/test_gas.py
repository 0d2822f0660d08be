"""Unit tests of keeper.gas.FeePolicy: EIP-1559 fees under a hard cap."""

from __future__ import annotations

import re

import numpy as np
import pytest

from keeper.errors import GasPriceTooHighError, KeeperError
from keeper.gas import GWEI, FeePolicy


def random_policies(seed, n=2_000):
    rng = np.random.default_rng(seed)
    for _ in range(n):
        cap = int(rng.integers(1, 500 * GWEI))
        tip = int(rng.integers(0, 5 * GWEI))
        base = int(rng.integers(0, 600 * GWEI))
        yield FeePolicy(cap, tip), base


def test_fees_never_exceed_the_cap_and_cover_base_fee_plus_tip():
    accepted = 0
    for policy, base in random_policies(0):
        tip = policy.max_priority_fee_per_gas_wei
        if base + tip > policy.max_fee_per_gas_wei:
            continue
        fees = policy.fees(base)
        assert fees.max_fee_per_gas <= policy.max_fee_per_gas_wei
        assert fees.max_fee_per_gas >= base + tip
        assert fees.max_priority_fee_per_gas == tip
        assert fees.base_fee_per_gas == base
        # headroom for the base fee to double, unless the cap says otherwise
        assert fees.max_fee_per_gas == min(policy.max_fee_per_gas_wei, 2 * base + tip)
        accepted += 1
    assert accepted > 200


def test_refuses_exactly_when_base_fee_plus_tip_exceeds_the_cap():
    refused = 0
    for policy, base in random_policies(1):
        tip = policy.max_priority_fee_per_gas_wei
        if base + tip > policy.max_fee_per_gas_wei:
            with pytest.raises(GasPriceTooHighError):
                policy.fees(base)
            refused += 1
        else:
            policy.fees(base)
    assert refused > 200


def test_boundary_base_plus_tip_equal_to_cap_is_accepted_one_wei_more_is_not():
    policy = FeePolicy.from_gwei(100, 2)
    fees = policy.fees(98 * GWEI)
    assert fees.max_fee_per_gas == 100 * GWEI  # capped below 2 × base + tip
    with pytest.raises(GasPriceTooHighError):
        policy.fees(98 * GWEI + 1)


def test_cap_binds_only_when_doubled_base_fee_is_above_it():
    policy = FeePolicy.from_gwei(200, 2)
    assert policy.fees(10 * GWEI).max_fee_per_gas == 22 * GWEI
    assert policy.fees(150 * GWEI).max_fee_per_gas == 200 * GWEI


def test_error_message_names_base_fee_tip_and_cap():
    policy = FeePolicy.from_gwei(50, 1.5)
    with pytest.raises(GasPriceTooHighError) as info:
        policy.fees(int(49.25 * GWEI))
    message = str(info.value)
    assert isinstance(info.value, KeeperError)
    assert re.search(r"49\.250\b", message), message  # base fee
    assert re.search(r"1\.500\b", message), message  # tip
    assert re.search(r"50\.000\b", message), message  # cap
    assert "gwei" in message
    assert "max_fee_per_gas_gwei" in message  # what to change


def test_from_gwei_converts_to_wei():
    policy = FeePolicy.from_gwei(123.5, 0.25)
    assert policy.max_fee_per_gas_wei == 123_500_000_000
    assert policy.max_priority_fee_per_gas_wei == 250_000_000
