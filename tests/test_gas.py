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


# --- Fee history, base-fee gate, replacement bumps ---------------------------------------------------

from keeper.config import KeeperConfig  # noqa: E402
from keeper.errors import BaseFeeAboveGateError, ConfigError, ReplacementFeeCapError  # noqa: E402
from keeper.gas import NODE_MIN_BUMP_E4, FeeHistory, Fees  # noqa: E402


class FakeProvider:
    """Answers ``eth_feeHistory`` with a fixed result and records the request."""

    def __init__(self, result):
        self.result = result
        self.requests = []

    def make_request(self, method, params):
        self.requests.append((method, params))
        return {"result": self.result} if self.result is not None else {"error": {"message": "unsupported"}}


class FakeW3:
    def __init__(self, result):
        self.provider = FakeProvider(result)


def history_result(base_fees_gwei, tips_gwei, ratios=None):
    return {
        "oldestBlock": "0x10",
        "baseFeePerGas": [hex(int(b * GWEI)) for b in base_fees_gwei],
        "reward": [[hex(int(t * GWEI))] for t in tips_gwei],
        "gasUsedRatio": ratios if ratios is not None else [0.5] * len(tips_gwei),
    }


def test_fee_history_parses_next_base_fee_and_skips_empty_blocks():
    result = history_result([10, 11, 12, 13], [1, 0, 3], ratios=[0.4, 0.0, 0.9])
    history = FeeHistory.from_rpc(result)
    assert history.next_base_fee_per_gas == 13 * GWEI  # one entry more than blocks: the next block's
    assert history.priority_fees_per_gas == (1 * GWEI, 3 * GWEI)  # the empty block's 0 is not a price
    with pytest.raises(GasPriceTooHighError, match="EIP-1559"):
        FeeHistory.from_rpc({"baseFeePerGas": [], "reward": []})


def test_tip_is_the_median_over_blocks_clipped_to_floor_and_cap():
    policy = FeePolicy.from_gwei(100, 2, fee_history_blocks=5, min_priority_fee_gwei=0.1)
    assert policy.tip(FeeHistory(GWEI, (5 * 10**8, 9 * 10**8, 7 * 10**8))) == 7 * 10**8
    assert policy.tip(FeeHistory(GWEI, (5 * GWEI, 9 * GWEI, 7 * GWEI))) == 2 * GWEI  # capped
    assert policy.tip(FeeHistory(GWEI, (1, 2, 3))) == 10**8  # floored
    assert policy.tip(FeeHistory(GWEI, ())) == 10**8  # no priced block: the floor
    assert FeePolicy.from_gwei(100, 2).tip(FeeHistory(GWEI, (1,))) == 2 * GWEI  # history off: the cap


def test_estimate_reads_fee_history_once_and_prices_the_next_block():
    w3 = FakeW3(history_result([20, 21, 22], [1, 1.5]))
    policy = FeePolicy.from_gwei(100, 2, fee_history_blocks=2, priority_fee_percentile=60, base_fee_multiplier=1.5)
    fees = policy.estimate(w3)
    assert w3.provider.requests == [("eth_feeHistory", ["0x2", "latest", [60]])]
    assert fees == Fees(22 * GWEI * 3 // 2 + GWEI, GWEI, 22 * GWEI)  # median_low of (1, 1.5) = 1 gwei
    with pytest.raises(GasPriceTooHighError, match="eth_feeHistory failed"):
        policy.estimate(FakeW3(None))


def test_base_fee_gate_refuses_new_transactions_with_the_values_but_not_replacements():
    policy = FeePolicy.from_gwei(200, 2, base_fee_gate_gwei=40)
    assert policy.fees(40 * GWEI).base_fee_per_gas == 40 * GWEI  # at the gate: allowed
    with pytest.raises(BaseFeeAboveGateError) as info:
        policy.fees(40 * GWEI + 1)
    err = info.value
    assert isinstance(err, GasPriceTooHighError)
    assert (err.base_fee_per_gas_wei, err.gate_wei) == (40 * GWEI + 1, 40 * GWEI)
    assert "40.000 gwei" in str(err) and "base_fee_gate_gwei" in str(err)
    assert policy.fees(150 * GWEI, gate=False).max_fee_per_gas == 200 * GWEI


def test_multiplier_sets_the_headroom_exactly():
    for mult, expected in ((1.0, 10 * GWEI + GWEI), (1.25, 12_500_000_000 + GWEI), (3.0, 31 * GWEI)):
        assert FeePolicy.from_gwei(500, 1, base_fee_multiplier=mult).fees(10 * GWEI).max_fee_per_gas == expected


def test_bump_is_at_least_the_node_minimum_and_geometric_until_the_cap():
    policy = FeePolicy.from_gwei(1_000, 50)
    fees = Fees(10 * GWEI, GWEI, 5 * GWEI)
    history = [fees]
    for _ in range(8):
        fees = policy.bump(fees, factor_e4=10_500)  # a factor below the node's 10% is raised to it
        history.append(fees)
    for old, new in zip(history, history[1:]):
        assert new.max_fee_per_gas * 10_000 >= old.max_fee_per_gas * NODE_MIN_BUMP_E4
        assert new.max_priority_fee_per_gas * 10_000 >= old.max_priority_fee_per_gas * NODE_MIN_BUMP_E4
        assert new.max_fee_per_gas <= old.max_fee_per_gas * 11 // 10 + 1  # exactly ×1.10, rounded up
    assert history[-1].max_fee_per_gas >= int(10 * GWEI * 1.1**8)


def test_bump_follows_the_market_when_it_is_higher_and_keeps_strict_increase_at_zero():
    policy = FeePolicy.from_gwei(500, 5)
    market = Fees(80 * GWEI, 3 * GWEI, 39 * GWEI)
    bumped = policy.bump(Fees(20 * GWEI, GWEI, 10 * GWEI), market)
    assert bumped == Fees(80 * GWEI, 3 * GWEI, 39 * GWEI)
    zero = policy.bump(Fees(7, 0, 3))
    assert zero.max_fee_per_gas == 8 and zero.max_priority_fee_per_gas == 1


def test_bump_refuses_when_the_caps_leave_less_than_ten_percent():
    policy = FeePolicy.from_gwei(105, 2)
    with pytest.raises(ReplacementFeeCapError) as info:
        policy.bump(Fees(100 * GWEI, GWEI, 40 * GWEI))
    assert "105.000" in str(info.value) and "10%" in str(info.value)
    with pytest.raises(ReplacementFeeCapError):  # tip already at its cap
        policy.bump(Fees(50 * GWEI, 2 * GWEI, 40 * GWEI))
    # Within the caps the bump is clipped, not refused.
    assert policy.bump(Fees(95 * GWEI, GWEI, 40 * GWEI), factor_e4=15_000).max_fee_per_gas == 105 * GWEI


def test_bump_property_random():
    """Refused exactly when a 10% bump of either fee does not fit under its cap; otherwise both fees rise
    by at least 10%, within the caps, tip <= max fee."""
    rng = np.random.default_rng(7)
    refused = 0
    for _ in range(2_000):
        cap = int(rng.integers(1, 1_000 * GWEI))
        tip_cap = int(rng.integers(0, min(10 * GWEI, cap) + 1))
        prev_fee = int(rng.integers(1, cap + 1))
        prev = Fees(prev_fee, int(rng.integers(0, min(tip_cap, prev_fee) + 1)), 0)
        need_fee = -(-prev.max_fee_per_gas * 11 // 10)
        need_tip = -(-prev.max_priority_fee_per_gas * 11 // 10)
        policy = FeePolicy(cap, tip_cap)
        if need_fee > cap or need_tip > tip_cap:
            with pytest.raises(ReplacementFeeCapError):
                policy.bump(prev, factor_e4=int(rng.integers(10_000, 30_000)))
            refused += 1
            continue
        new = policy.bump(prev, factor_e4=int(rng.integers(10_000, 30_000)))
        assert new.max_fee_per_gas <= cap and new.max_priority_fee_per_gas <= tip_cap
        assert new.max_fee_per_gas >= need_fee and new.max_priority_fee_per_gas >= need_tip
        assert new.max_priority_fee_per_gas <= new.max_fee_per_gas
    assert 50 < refused < 1_950


def test_policy_validation_and_from_config():
    with pytest.raises(ConfigError, match="multiplier"):
        FeePolicy.from_gwei(100, 2, base_fee_multiplier=0.9)
    with pytest.raises(ConfigError, match="tip floor"):
        FeePolicy.from_gwei(100, 2, min_priority_fee_gwei=3)
    with pytest.raises(ConfigError, match="percentile"):
        FeePolicy.from_gwei(100, 2, priority_fee_percentile=101)
    config = KeeperConfig(
        rpc_url="http://x", vault_address="0x" + "11" * 20, quoter_address="0x" + "22" * 20,
        max_fee_per_gas_gwei=80, max_priority_fee_per_gas_gwei=1.5, base_fee_gate_gwei=30,
        base_fee_multiplier=2.5, fee_history_blocks=4, priority_fee_percentile=25, min_priority_fee_per_gas_gwei=0.05,
    )
    policy = FeePolicy.from_config(config)
    assert policy == FeePolicy(80 * GWEI, 1_500_000_000, 25_000, 30 * GWEI, 4, 25.0, 50_000_000)
