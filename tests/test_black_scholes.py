"""Differential and property tests of contracts/BlackScholes.sol against a 60-digit reference.

The library is reached through ``BlackScholesHarness`` on a local Anvil; the reference is
``black_scholes_reference`` (Python ``decimal``, exact to far more digits than the 1e-18 fixed point, so
the tolerances below are the library's own documented bounds, nothing added for the reference). Grid:
spot 100 and 43,000; strike/spot 0.05 … 20; expiries 1 minute … 10 years; volatilities 0.1 % … 500 %;
rates 0, 5 % and 100 %; the domain's corners; 150 seeded random inputs over the whole domain. The
contract's approximation constants are checked to be those ``tools/black_scholes_coefficients.py`` derives.

Documented bounds (library NatSpec), derived from its parts: the two tail terms S·Q(|d1|) and
Kd·Q(|d2|) (Q ≤ ½ each) carry the relative error of the Mills-ratio rational (1.3e-17), of the exponential
(1.8e-19) and of the Q64+ fixed point (< 1e-19), and ln(S/K) is within 1e-19: |price error| ≤
0.5·1.4e-17·(S + K) + 1e-19·S < 1e-17·(S + K), plus the floors of K·e^(−rτ) and of the sum (2 wei).
"""

from __future__ import annotations

import itertools
import re
import sys
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import numpy as np

import pytest
from black_scholes_reference import _cf_upper_tail, _series_cdf, black_scholes_wad, cdf, inv_sqrt_2pi, pdf

from keeper import options
from keeper.build import load_artifacts
from keeper.chain import AnvilProcess, DevSender, call_raw, connect, decode_revert, dev_accounts

ROOT = Path(__file__).resolve().parents[1]
WAD = 10**18
YEAR = 365 * 86400
ABS_BOUND = Decimal("1e-17")  # × (S + K), plus ABS_WEI
ABS_WEI = 2
REL_BOUND = Decimal("1e-13")  # where the exact price ≥ REL_FLOOR × S
REL_FLOOR = Decimal("1e-6")
DELTA_BOUND = Decimal("1e-17") + Decimal(2) / WAD  # Q(|d1|) ≤ ½ with 1.4e-17 relative error, two floors
CDF_BOUND = Decimal("0.75e-17") + Decimal(1) / WAD  # ½ × 1.4e-17 + the final floor
GREEK_REL_BOUND = Decimal("1e-12")  # gamma and vega, plus one wei (see test_greeks_match_the_reference)

SPOTS = ("100", "43000")
MONEYNESS = ("0.05", "0.2", "0.8", "0.95", "1", "1.05", "1.25", "5", "20")  # K / S
EXPIRIES = (60, 3600, 7 * 86400, 30 * 86400, YEAR, 10 * YEAR)  # seconds
VOLS = ("0.001", "0.05", "0.8", "5")  # annualised
RATES = ("0", "0.05", "1")  # annualised, continuously compounded


@dataclass(frozen=True)
class Reference:
    call: float
    put: float
    call_delta: float
    put_delta: float
    gamma: float
    vega: float


def reference(spot: float, strike: float, seconds: int, vol: float, rate: float) -> Reference:
    """Black-Scholes in float64 from :mod:`keeper.options` (τ = seconds / 365 days): prices, deltas, gamma (per
    USD) and vega (per 1.00 vol). Used by the option-market tests, whose tolerances are float64 ones."""
    tau = seconds / YEAR
    call = options.greeks(spot, strike, tau, vol, rate, 0.0, True)
    put = options.greeks(spot, strike, tau, vol, rate, 0.0, False)
    return Reference(float(call.price), float(put.price), float(call.delta), float(put.delta), float(call.gamma),
                     float(call.vega))


def wad(x: str | Decimal | float) -> int:
    return int(Decimal(str(x)) * WAD)


def inputs(spot, strike, seconds: int, vol, rate) -> tuple[int, int, int, int, int]:
    return (wad(spot), wad(strike), seconds, wad(vol), wad(rate))


def grid():
    for s, m, t, v, r in itertools.product(SPOTS, MONEYNESS, EXPIRIES, VOLS, RATES):
        yield inputs(s, Decimal(s) * Decimal(m), t, v, r)


@pytest.fixture(scope="module")
def harness():
    node = AnvilProcess()
    w3 = connect(node.rpc_url)
    deployer = dev_accounts()[0]
    bs = DevSender(w3).deploy(deployer, load_artifacts()["BlackScholesHarness"])
    yield bs
    node.stop()


@pytest.fixture(scope="module")
def evaluated(harness):
    """(inputs, on-chain Greeks tuple, exact values) over the grid, computed once for the module."""
    return [(p, harness.functions.greeks(p).call(), black_scholes_wad(*p)) for p in grid()]


def test_reference_series_and_continued_fraction_agree_at_the_switch() -> None:
    from decimal import localcontext

    with localcontext() as ctx:
        ctx.prec = 60
        for x in ("5", "5.5", "6"):
            series = 1 - _series_cdf(Decimal(x))
            assert abs(series - _cf_upper_tail(Decimal(x))) <= Decimal("1e-45") * series


def test_prices_match_the_reference_within_the_documented_bound(evaluated) -> None:
    worst_abs = worst_rel = Decimal(0)
    for p, g, exact in evaluated:
        spot, strike = Decimal(p[0]) / WAD, Decimal(p[1]) / WAD
        for got, key in ((g[0], "call"), (g[1], "put")):
            err = abs(Decimal(got) / WAD - exact[key])
            assert err <= ABS_BOUND * (spot + strike) + Decimal(ABS_WEI) / WAD, (p, key, got, exact[key])
            worst_abs = max(worst_abs, err / (spot + strike))
            if exact[key] >= REL_FLOOR * spot:
                assert err <= REL_BOUND * exact[key], (p, key, got, exact[key])
                worst_rel = max(worst_rel, err / exact[key])
    print(f"\n{2 * len(evaluated)} prices: max |err|/(S+K) = {worst_abs:.3e}, max rel err (price ≥ 1e-6 S) = {worst_rel:.3e}")


def test_price_entry_point_agrees_with_greeks(harness, evaluated) -> None:
    for p, g, _ in evaluated[::7]:
        assert harness.functions.price(p, True).call() == g[0]  # same path: the same fixed-point code
        assert harness.functions.price(p, False).call() == g[1]


def test_put_call_parity_holds_exactly_in_integers(evaluated) -> None:
    for p, g, exact in evaluated:
        if g[0] == 0 or g[1] == 0:
            continue  # a clamp at 0 (a rounding below zero) is the one place the identity is not exact
        if p[4] == 0:
            # C − P = S − K: both prices share the one rounded tail term, so the identity is exact.
            assert g[0] - g[1] == p[0] - p[1], p
        else:
            # C − P = S − ⌊K·e^(−rτ)⌋ exactly; against the exact S − K·e^(−rτ) (= exact call − put): the
            # exponential's 1.8e-19 relative error on K plus that floor.
            gap = Decimal(g[0] - g[1]) / WAD - (exact["call"] - exact["put"])
            assert abs(gap) <= Decimal("1e-18") * Decimal(p[1]) / WAD + Decimal(1) / WAD, (p, gap)


def test_prices_are_monotone_in_spot_strike_volatility_and_time(harness) -> None:
    """Call rises with S, σ, τ and falls with K; put falls with S, rises with K, σ, τ (r = 0; with r > 0
    the put can fall with τ). A step whose exact change exceeds twice the absolute bound must move the
    on-chain price the same way, and no step may move it the wrong way by more than twice the bound."""
    base = {"spot": "100", "strike": "100", "seconds": 30 * 86400, "vol": "0.8", "rate": "0"}
    sweeps = {
        "spot": [str(x) for x in (20, 50, 80, 95, 99, 100, 101, 105, 125, 200, 500)],
        "strike": [str(x) for x in (20, 50, 80, 95, 99, 100, 101, 105, 125, 200, 500)],
        "vol": ["0.001", "0.01", "0.05", "0.2", "0.5", "0.8", "1.5", "3", "5"],
        "seconds": [60, 3600, 86400, 7 * 86400, 30 * 86400, YEAR, 5 * YEAR, 10 * YEAR],
    }
    # d(price)/d(variable) sign for (call, put).
    signs = {"spot": (1, -1), "strike": (-1, 1), "vol": (1, 1), "seconds": (1, 1)}
    for name, values in sweeps.items():
        rows = []
        for v in values:
            args = dict(base, **{name: v})
            p = inputs(args["spot"], args["strike"], args["seconds"], args["vol"], args["rate"])
            g = harness.functions.greeks(p).call()
            e = black_scholes_wad(*p)
            bound = 2 * (ABS_BOUND * (Decimal(p[0]) + Decimal(p[1])) + ABS_WEI)  # in wei
            rows.append((g, e, bound))
        for (g0, e0, b0), (g1, e1, b1) in zip(rows, rows[1:]):
            for index, key, sign in ((0, "call", signs[name][0]), (1, "put", signs[name][1])):
                moved = sign * (g1[index] - g0[index])
                exact_moved = sign * (e1[key] - e0[key]) * WAD
                assert moved >= -(b0 + b1), (name, key, g0[index], g1[index])
                if exact_moved > b0 + b1:
                    assert moved > 0, (name, key, g0[index], g1[index])


def test_deltas_match_the_reference(evaluated) -> None:
    worst = Decimal(0)
    for p, g, exact in evaluated:
        err = abs(Decimal(g[2]) / WAD - exact["call_delta"])
        assert err <= DELTA_BOUND, (p, g[2], exact["call_delta"])
        assert g[3] - g[2] == -WAD  # exact: put delta is call delta − 1 in integers
        assert 0 <= g[2] <= WAD
        worst = max(worst, err)
    print(f"\nmax |delta err| = {worst:.2e}")


def test_greeks_match_the_reference(evaluated) -> None:
    """Gamma and vega come from S·φ(d1) in 1e36 fixed point (the tail term's A times 1/√(2π): the
    exponential's 1.8e-19 and the constant's 1.3e-18 relative error, Q64 truncation) and are floored to 1e18
    at the end: |error| ≤ 1e-12 relative (a wide margin over those parts) plus one wei. Where both |d1| and
    |d2| exceed the clamp (9) they are 0 (φ(d1) < φ(9) ≈ 1.03e-18 there)."""
    worst = {"gamma": Decimal(0), "vega": Decimal(0)}
    for p, g, exact in evaluated:
        spot = Decimal(p[0]) / WAD
        if min(abs(exact["d1"]), abs(exact["d2"])) > 9:
            # The documented clamp: the density is 0 beyond |d| = 9, φ(9) ≈ 1.03e-18.
            # The error is then the exact value itself, within the documented φ(9)·S·√τ.
            assert g[4] == g[5] == 0
            assert exact["vega"] <= pdf(9) * spot * (Decimal(p[2]) / YEAR).sqrt()
            continue
        for name, got in (("gamma", g[4]), ("vega", g[5])):
            err = abs(Decimal(got) / WAD - exact[name])
            assert err <= GREEK_REL_BOUND * exact[name] + Decimal(1) / WAD, (name, p, got, exact[name])
            if exact[name] >= Decimal("1e-6"):
                worst[name] = max(worst[name], err / exact[name])
    print(f"\nmax rel gamma err = {worst['gamma']:.2e}, max rel vega err = {worst['vega']:.2e} (where ≥ 1e-6)")


def test_delta_and_vega_are_the_derivatives_of_the_on_chain_price(harness) -> None:
    for m, seconds, vol in itertools.product(("0.8", "1", "1.25"), (7 * 86400, YEAR), ("0.2", "0.8")):
        spot, strike, h = Decimal(100), 100 * Decimal(m), Decimal("1e-4")
        up = harness.functions.price(inputs(spot + h, strike, seconds, vol, 0), True).call()
        down = harness.functions.price(inputs(spot - h, strike, seconds, vol, 0), True).call()
        g = harness.functions.greeks(inputs(spot, strike, seconds, vol, 0)).call()
        # Central difference: truncation Γ'·h²/6 ~ 1e-9 and rounding 2·(1e-15 + 2 wei)/2h ~ 1e-11.
        assert abs(Decimal(up - down) / (2 * h) / WAD - Decimal(g[2]) / WAD) < Decimal("1e-6")
        up = harness.functions.price(inputs(spot, strike, seconds, Decimal(vol) + Decimal("1e-5"), 0), True).call()
        down = harness.functions.price(inputs(spot, strike, seconds, Decimal(vol) - Decimal("1e-5"), 0), True).call()
        assert abs(Decimal(up - down) / Decimal("2e-5") / WAD - Decimal(g[5]) / WAD) < Decimal("1e-6") * max(1, Decimal(g[5]) / WAD)


def test_normal_cdf_error_and_clamp(harness) -> None:
    worst = Decimal(0)
    for i in range(-400, 401, 3):
        x = Decimal(i) / 40
        got = harness.functions.normalCdf(wad(x)).call()
        err = abs(Decimal(got) / WAD - cdf(x))
        assert err <= CDF_BOUND, (x, got)
        worst = max(worst, err)
        if x >= 9:
            assert got == WAD
        elif x <= -9:
            assert got == 0
        # N(x) + N(−x) = 1 exactly in fixed point.
        assert got + harness.functions.normalCdf(-wad(x)).call() == WAD
    print(f"\nmax |N err| on [-10, 10] = {worst:.2e}")
    # e^0 = 1 exactly, times 1/√(2π) rounded to the wei.
    assert harness.functions.normalPdf(0).call() == int((inv_sqrt_2pi() * WAD).to_integral_value())
    assert harness.functions.normalPdf(wad(9)).call() == 0


def test_at_expiry_the_price_is_intrinsic(harness) -> None:
    g = harness.functions.greeks(inputs(120, 100, 0, "0.5", "0.05")).call()
    assert g[0] == wad(20) and g[1] == 0 and g[2] == WAD and g[3] == 0 and g[4] == 0 and g[5] == 0
    g = harness.functions.greeks(inputs(80, 100, 0, "0.5", 0)).call()
    assert g[0] == 0 and g[1] == wad(20) and g[2] == 0 and g[3] == -WAD


def test_no_arbitrage_bounds_on_the_grid(evaluated) -> None:
    """max(S − K·e^(−rτ), 0) ≤ call ≤ S and max(K·e^(−rτ) − S, 0) ≤ put ≤ K, to within the documented bound."""
    for p, g, _ in evaluated:
        spot, strike = Decimal(p[0]), Decimal(p[1])
        discounted = strike * (-(Decimal(p[4]) / WAD) * p[2] / YEAR).exp()
        slack = ABS_BOUND * (spot + strike) + ABS_WEI
        assert max(spot - discounted, 0) - slack <= g[0] <= spot, p
        assert max(discounted - spot, 0) - slack <= g[1] <= strike, p


@pytest.mark.parametrize(
    ("p", "which"),
    [
        ((0, wad(100), 86400, wad(0.5), 0), 0),
        ((wad(100), 10**11, 86400, wad(0.5), 0), 1),
        ((wad(100), wad(100), 10 * YEAR + 1, wad(0.5), 0), 2),
        ((wad(100), wad(100), 86400, wad("0.0009"), 0), 3),
        ((wad(100), wad(100), 86400, wad("5.01"), 0), 3),
        ((wad(100), wad(100), 86400, wad(0.5), wad("1.01")), 4),
    ],
)
def test_inputs_outside_the_domain_revert_with_the_failing_value(harness, p, which) -> None:
    fn = harness.functions.price(p, True)
    ok, data = call_raw(harness.w3, {"to": harness.address, "data": fn._encode_transaction_data()})
    assert not ok
    err = decode_revert(data)
    assert err.name == "BlackScholesInputOutOfRange"
    assert err.args[0] == which and err.args[1] == p[which]


def test_domain_corners_match_the_reference(harness) -> None:
    """Every corner of the domain: within the absolute bound and the no-arbitrage bounds, Greeks in range."""
    corners = itertools.product((10**12, 10**30), (10**12, 10**30), (1, 10 * YEAR), (10**15, 5 * WAD), (0, WAD))
    for spot, strike, seconds, vol, rate in corners:
        p = (spot, strike, seconds, vol, rate)
        g = harness.functions.greeks(p).call()
        exact = black_scholes_wad(*p)
        for got, key in ((g[0], "call"), (g[1], "put")):
            err = abs(Decimal(got) / WAD - exact[key])
            assert err <= ABS_BOUND * Decimal(spot + strike) / WAD + Decimal(ABS_WEI) / WAD, (p, key, got)
        assert g[0] <= spot and g[1] <= strike
        assert 0 <= g[2] <= WAD and g[4] >= 0 and g[5] >= 0


def test_library_constants_are_the_derived_ones() -> None:
    """Every approximation constant in the contract is what tools/black_scholes_coefficients.py derives."""
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import black_scholes_coefficients
    finally:
        sys.path.remove(str(ROOT / "tools"))
    source = (ROOT / "contracts" / "BlackScholes.sol").read_text()
    declared = {name: int(value) for name, value in re.findall(r"int256 private constant (\w+) = (-?\d+);", source)}
    assert declared == black_scholes_coefficients.constants()


def test_random_inputs_over_the_whole_domain_match_the_reference(harness) -> None:
    """Seeded random inputs, log-uniform over the whole domain (spot and strike 1e-6 … 1e12, 1 second …
    10 years, volatility 0.1 % … 500 %), rate 0 or uniform in [0, 100 %]: the documented bounds hold."""
    rng = np.random.default_rng(20251207)
    for i in range(150):
        spot = int(10 ** rng.uniform(12, 30))
        strike = int(spot * 10 ** rng.uniform(-1.5, 1.5)) if i % 3 else int(10 ** rng.uniform(12, 30))
        strike = min(max(strike, 10**12), 10**30)
        seconds = int(10 ** rng.uniform(0, np.log10(10 * YEAR)))
        vol = int(10 ** rng.uniform(15, np.log10(5e18)))
        rate = 0 if i % 2 else int(rng.uniform(0, 1) * WAD)
        p = (spot, strike, seconds, vol, rate)
        g = harness.functions.greeks(p).call()
        exact = black_scholes_wad(*p)
        s, k = Decimal(spot) / WAD, Decimal(strike) / WAD
        for got, key in ((g[0], "call"), (g[1], "put")):
            err = abs(Decimal(got) / WAD - exact[key])
            assert err <= ABS_BOUND * (s + k) + Decimal(ABS_WEI) / WAD, (p, key, got, exact[key])
            if exact[key] >= REL_FLOOR * s:
                # Plus the two 1-wei floors of the 1e18 output, which dominate for prices of a few 1e12 wei.
                assert err <= REL_BOUND * exact[key] + Decimal(ABS_WEI) / WAD, (p, key, got, exact[key])
        assert abs(Decimal(g[2]) / WAD - exact["call_delta"]) <= DELTA_BOUND, p
