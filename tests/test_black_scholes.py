"""Differential tests of contracts/BlackScholes.sol against the keeper's float64 Black-Scholes (keeper.options).

The library is reached through ``BlackScholesHarness`` on a local Anvil. The documented bound (see the
library's NatSpec) is checked over a grid of moneyness 0.2 … 5, expiries 1 hour … 5 years,
volatilities 5% … 300% and rates 0 and 5%:

* |price error| ≤ 1e-14 × (S + K) everywhere on the grid;
* relative price error ≤ 1e-9 wherever the exact price is at least 1e-6 × S.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import pytest
from scipy.special import ndtr

from keeper import options
from keeper.build import load_artifacts
from keeper.chain import AnvilProcess, DevSender, call_raw, connect, decode_revert, dev_accounts
from tolerances import ELEMENTARY_ULPS, U, black_scholes_two_path_bounds

WAD = 10**18
YEAR = 365 * 86400
ABS_BOUND = 1e-14  # × (S + K)
REL_BOUND = 1e-9  # where price ≥ REL_FLOOR × S
REL_FLOOR = 1e-6

MONEYNESS = (0.2, 0.5, 0.8, 0.95, 1.0, 1.05, 1.25, 2.0, 5.0)  # K / S
EXPIRIES = (3600, 86400, 7 * 86400, 30 * 86400, YEAR, 5 * YEAR)  # seconds
VOLS = (0.05, 0.2, 0.8, 3.0)  # annualised
RATES = (0.0, 0.05)  # annualised, continuously compounded
SPOTS = (100.0, 43_000.0)  # USD


@dataclass(frozen=True)
class Reference:
    call: float
    put: float
    call_delta: float
    put_delta: float
    gamma: float
    vega: float


def reference(spot: float, strike: float, seconds: int, vol: float, rate: float) -> Reference:
    """Black-Scholes in float64 from :mod:`keeper.options`: prices, deltas, gamma (per USD) and vega (per 1.00 vol).

    Uses the same τ as the contract: ⌊seconds·1e18 / YEAR⌋ / 1e18 years.
    """
    tau = (seconds * WAD // YEAR) / WAD
    call = options.greeks(spot, strike, tau, vol, rate, 0.0, True)
    put = options.greeks(spot, strike, tau, vol, rate, 0.0, False)
    return Reference(float(call.price), float(put.price), float(call.delta), float(put.delta), float(call.gamma),
                     float(call.vega))


def wad(x: float) -> int:
    return int(round(x * WAD))


@pytest.fixture(scope="module")
def harness():
    node = AnvilProcess()
    w3 = connect(node.rpc_url)
    deployer = dev_accounts()[0]
    bs = DevSender(w3).deploy(deployer, load_artifacts()["BlackScholesHarness"])
    yield bs
    node.stop()


def inputs(spot: float, strike: float, seconds: int, vol: float, rate: float) -> tuple[int, int, int, int, int]:
    return (wad(spot), wad(strike), seconds, wad(vol), wad(rate))


def from_wad(x: int) -> float:
    return x / WAD


def test_prices_match_the_reference_within_the_documented_bound(harness) -> None:
    worst_abs = worst_rel = 0.0
    worst_at = None
    n = 0
    for spot, m, seconds, vol, rate in itertools.product(SPOTS, MONEYNESS, EXPIRIES, VOLS, RATES):
        strike = spot * m
        p = inputs(spot, strike, seconds, vol, rate)
        g = harness.functions.greeks(p).call()
        ref = reference(from_wad(p[0]), from_wad(p[1]), seconds, from_wad(p[3]), from_wad(p[4]))
        tau = (seconds * WAD // YEAR) / WAD
        for got, exact, is_call in ((g[0], ref.call, True), (g[1], ref.put, False)):
            err = abs(from_wad(got) - exact)
            scale = spot + strike
            # The float64 reference is itself only within its documented error of the exact price (erfc/ndtr
            # 5.7e-14 relative, exp/log ulps, the cancelling sum): the contract's bound plus that.
            ref_err = black_scholes_two_path_bounds(from_wad(p[0]), from_wad(p[1]), tau, from_wad(p[3]), from_wad(p[4]), 0.0,
                                       is_call)["price"]
            assert err <= ABS_BOUND * scale + ref_err, (spot, strike, seconds, vol, rate, got, exact)
            worst_abs = max(worst_abs, err / scale)
            if exact >= REL_FLOOR * spot:
                rel = err / exact
                if rel > worst_rel:
                    worst_rel, worst_at = rel, (spot, strike, seconds, vol, rate)
            n += 1
    print(f"\n{n} prices: max |err|/(S+K) = {worst_abs:.3e}, max rel err (price ≥ 1e-6 S) = {worst_rel:.3e} at {worst_at}")
    assert worst_rel <= REL_BOUND


def test_price_entry_point_agrees_with_greeks(harness) -> None:
    rng = np.random.default_rng(7)
    for _ in range(25):
        spot = float(rng.uniform(1, 50_000))
        p = inputs(spot, spot * float(rng.uniform(0.3, 3)), int(rng.integers(60, 3 * YEAR)), float(rng.uniform(0.01, 4)), 0.0)
        g = harness.functions.greeks(p).call()
        assert harness.functions.price(p, True).call() == g[0]  # same path: the same fixed-point code
        assert harness.functions.price(p, False).call() == g[1]


def test_put_call_parity_holds(harness) -> None:
    for spot, m, seconds, vol in itertools.product(SPOTS, MONEYNESS, EXPIRIES, VOLS):
        strike = spot * m
        # Rate 0: C − P = S − K to within the two floor roundings of the products.
        g = harness.functions.greeks(inputs(spot, strike, seconds, vol, 0.0)).call()
        assert abs((g[0] - g[1]) - (wad(spot) - wad(strike))) <= 2
        # Rate 5%: C − P = S − K·e^(−rτ).
        g = harness.functions.greeks(inputs(spot, strike, seconds, vol, 0.05)).call()
        tau = (seconds * WAD // YEAR) / WAD
        forward_gap = spot - strike * math.exp(-0.05 * tau)
        # The contract's bound, plus the float gap's own error (exp's ulps, the product, the difference).
        float_err = (ELEMENTARY_ULPS + 3) * U * (spot + strike)
        assert abs(from_wad(g[0] - g[1]) - forward_gap) <= 1e-14 * (spot + strike) + float_err


def test_greeks_match_the_reference(harness) -> None:
    worst = {"delta": 0.0, "gamma": 0.0, "vega": 0.0}
    for spot, m, seconds, vol, rate in itertools.product((100.0,), MONEYNESS, EXPIRIES, VOLS, RATES):
        p = inputs(spot, spot * m, seconds, vol, rate)
        g = harness.functions.greeks(p).call()
        ref = reference(spot, spot * m, seconds, vol, rate)
        tau = (seconds * WAD // YEAR) / WAD
        # Deltas are probabilities: absolute error, the contract's bound plus the float64 reference's own
        # documented error (N(d) by ndtr within 5.7e-14 relative, and d's roundings).
        call_err = black_scholes_two_path_bounds(spot, spot * m, tau, vol, rate, 0.0, True)["delta"]
        put_err = black_scholes_two_path_bounds(spot, spot * m, tau, vol, rate, 0.0, False)["delta"]
        assert abs(from_wad(g[2]) - ref.call_delta) <= 1e-15 * 10 + call_err
        assert abs(from_wad(g[3]) - ref.put_delta) <= 1e-15 * 10 + put_err
        assert g[3] - g[2] == -WAD  # exact: the contract computes put delta as call delta - 1 in integers
        worst["delta"] = max(worst["delta"], abs(from_wad(g[2]) - ref.call_delta))
        for name, got, exact, unit in (("gamma", g[4], ref.gamma, 1 / spot), ("vega", g[5], ref.vega, spot)):
            err = abs(from_wad(got) - exact)
            # Relative where the Greek is material, absolute (in its natural unit) elsewhere.
            assert err <= max(1e-9 * exact, 1e-14 * unit), (name, p, got, exact)
            if exact > 1e-6 * unit:
                worst[name] = max(worst[name], err / exact)
    print(f"\nmax |delta err| = {worst['delta']:.2e}, max rel gamma err = {worst['gamma']:.2e}, "
          f"max rel vega err = {worst['vega']:.2e}")


def test_delta_is_the_derivative_of_the_on_chain_price(harness) -> None:
    for m, seconds, vol in itertools.product((0.8, 1.0, 1.25), (7 * 86400, YEAR), (0.2, 0.8)):
        spot, strike, h = 100.0, 100.0 * m, 1e-4
        up = harness.functions.price(inputs(spot + h, strike, seconds, vol, 0.0), True).call()
        down = harness.functions.price(inputs(spot - h, strike, seconds, vol, 0.0), True).call()
        g = harness.functions.greeks(inputs(spot, strike, seconds, vol, 0.0)).call()
        assert abs((up - down) / (2 * h) / WAD - from_wad(g[2])) < 1e-6
        # Vega: central difference in volatility.
        up = harness.functions.price(inputs(spot, strike, seconds, vol + 1e-5, 0.0), True).call()
        down = harness.functions.price(inputs(spot, strike, seconds, vol - 1e-5, 0.0), True).call()
        assert abs((up - down) / 2e-5 / WAD - from_wad(g[5])) < 1e-6 * max(1.0, from_wad(g[5]))


def test_normal_cdf_error_and_clamp(harness) -> None:
    xs = np.linspace(-10, 10, 401)
    worst = 0.0
    for x in xs:
        got = harness.functions.normalCdf(wad(float(x))).call()
        exact = ndtr(wad(float(x)) / WAD)  # the normal CDF keeper.options uses
        worst = max(worst, abs(got / WAD - exact))
        if x >= 9:
            assert got == WAD
        elif x <= -9:
            assert got == 0
        # N(x) + N(−x) = 1 exactly in fixed point.
        assert got + harness.functions.normalCdf(-wad(float(x))).call() == WAD
    print(f"\nmax |N err| on [-10, 10] = {worst:.2e}")
    assert worst <= 1e-15
    # Solidity: e^0 = 1 exactly times its constant 1/sqrt(2 pi) rounded to the wei (relative 1e-18). The
    # float reference: fl(pi) (U), sqrt (U/2 of it, and U), the division (U), and the comparison's
    # conversion of the integer to float (U/2): 4U in all (~160 wei; the doubles here are 64 wei apart).
    assert harness.functions.normalPdf(0).call() == pytest.approx(WAD / math.sqrt(2 * math.pi), rel=4 * U)
    assert harness.functions.normalPdf(wad(9.0)).call() == 0


def test_at_expiry_the_price_is_intrinsic(harness) -> None:
    g = harness.functions.greeks(inputs(120.0, 100.0, 0, 0.5, 0.05)).call()
    assert g[0] == wad(20.0) and g[1] == 0 and g[2] == WAD and g[3] == 0 and g[4] == 0 and g[5] == 0
    g = harness.functions.greeks(inputs(80.0, 100.0, 0, 0.5, 0.0)).call()
    assert g[0] == 0 and g[1] == wad(20.0) and g[2] == 0 and g[3] == -WAD


def test_no_arbitrage_bounds_on_the_grid(harness) -> None:
    for m, seconds, vol in itertools.product(MONEYNESS, EXPIRIES, VOLS):
        spot, strike = 100.0, 100.0 * m
        g = harness.functions.greeks(inputs(spot, strike, seconds, vol, 0.0)).call()
        assert max(wad(spot) - wad(strike), 0) - 2 <= g[0] <= wad(spot)
        assert max(wad(strike) - wad(spot), 0) - 2 <= g[1] <= wad(strike)
        assert 0 <= g[2] <= WAD


@pytest.mark.parametrize(
    ("p", "which"),
    [
        ((0, wad(100), 86400, wad(0.5), 0), 0),
        ((wad(100), 10**11, 86400, wad(0.5), 0), 1),
        ((wad(100), wad(100), 10 * YEAR + 1, wad(0.5), 0), 2),
        ((wad(100), wad(100), 86400, wad(0.0009), 0), 3),
        ((wad(100), wad(100), 86400, wad(5.01), 0), 3),
        ((wad(100), wad(100), 86400, wad(0.5), wad(1.01)), 4),
    ],
)
def test_inputs_outside_the_domain_revert_with_the_failing_value(harness, p, which) -> None:
    fn = harness.functions.price(p, True)
    ok, data = call_raw(harness.w3, {"to": harness.address, "data": fn._encode_transaction_data()})
    assert not ok
    err = decode_revert(data)
    assert err.name == "BlackScholesInputOutOfRange"
    assert err.args[0] == which and err.args[1] == p[which]


def test_domain_corners_price_within_no_arbitrage_bounds(harness) -> None:
    corners = itertools.product((10**12, 10**30), (10**12, 10**30), (1, 10 * YEAR), (10**15, 5 * WAD))
    for spot, strike, seconds, vol in corners:
        g = harness.functions.greeks((spot, strike, seconds, vol, 0)).call()
        assert max(spot - strike, 0) - 2 <= g[0] <= spot
        assert max(strike - spot, 0) - 2 <= g[1] <= strike
        assert 0 <= g[2] <= WAD and g[4] >= 0 and g[5] >= 0
