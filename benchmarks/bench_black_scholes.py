"""Gas and accuracy of the on-chain Black-Scholes library (``contracts/BlackScholes.sol``) over its domain.

Run from the repository root::

    .venv/bin/python benchmarks/bench_black_scholes.py

On an Anvil process this script starts, ``BlackScholesHarness.priceGas`` and ``.greeksGas`` return the value
and the execution gas of the library call alone (``gasleft()`` around it: validation, the copy of the
inputs in memory and the arithmetic; not the external call's 21,000 + calldata). Every grid point is
priced as a call and as a put (``priceGas``) and once through ``greeksGas`` (both prices, deltas, gamma,
vega).

The grid covers what the contracts accept (``OptionMarket`` quotes and marks rate 0, any strike in
[1e-6, 5e10] USD, times to expiry down to the last second before expiry and up to 10 years, the vol
feed's answers within [0.1 %, 500 %]; the library itself also takes rates up to 100 %):
spot 100 and 43,000; strike/spot 0.05 … 20; τ 1 minute … 10 years; σ 0.1 % … 500 %; r 0, 5 %, 100 %.

Accuracy against the exact values of the same integer inputs (``tests/black_scholes_reference.py``,
60-digit ``decimal``): the largest |error|/(S + K), and the largest relative error where the exact price
is at least 1e-6·S ("material") and where it is at least 1e-3·S ("typical").
"""

from __future__ import annotations

import itertools
import statistics
import sys
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from black_scholes_reference import black_scholes_wad  # noqa: E402

from keeper.build import load_artifacts  # noqa: E402
from keeper.chain import AnvilProcess, DevSender, connect, dev_accounts  # noqa: E402

WAD = 10**18
YEAR = 365 * 86400
SPOTS = (100, 43_000)
MONEYNESS = ("0.05", "0.2", "0.5", "0.8", "0.95", "1", "1.05", "1.25", "2", "5", "20")  # K / S
SECONDS = (60, 3600, 86400, 7 * 86400, 30 * 86400, YEAR, 5 * YEAR, 10 * YEAR)
VOLS = ("0.001", "0.05", "0.2", "0.8", "3", "5")
RATES = ("0", "0.05", "1")
# The same script's output for the previous library (PRBMath SD59x18 ln/exp/sqrt and Hart's 5666 normal CDF
# in 1e18 fixed point, commit acaf5df), printed beside this run's figures.
PREVIOUS = {
    "gas per price": "min  4,947  median 15,043  max 32,148",
    "gas per greeks": "min  7,236  median 17,223  max 38,027",
    "max |price error| / (S + K)": "3.017e-16",
    "material": "8.786e-11",
    "typical": "2.192e-13",
    "max |call delta error|": "2.197e-13",
}


def wad(x: str | int) -> int:
    return int(Decimal(x) * WAD)


def grid() -> list[tuple[int, int, int, int, int]]:
    return [
        (wad(s), wad(Decimal(s) * Decimal(m)), t, wad(v), wad(r))
        for s, m, t, v, r in itertools.product(SPOTS, MONEYNESS, SECONDS, VOLS, RATES)
    ]


def stats(values: list[int]) -> str:
    return f"min {min(values):>6,d}  median {int(statistics.median(values)):>6,d}  max {max(values):>6,d}"


def main() -> None:
    node = AnvilProcess()
    try:
        w3 = connect(node.rpc_url)
        harness = DevSender(w3).deploy(dev_accounts()[0], load_artifacts()["BlackScholesHarness"])
        run(harness)
    finally:
        node.stop()


def run(harness) -> None:
    points = grid()
    price_gas: list[int] = []
    greeks_gas: list[int] = []
    worst_abs = Decimal(0)
    worst_rel = {"material": (Decimal(0), None), "typical": (Decimal(0), None)}
    worst_delta = Decimal(0)
    mismatch = 0
    for p in points:
        exact = black_scholes_wad(*p)
        g, gas = harness.functions.greeksGas(p).call()
        greeks_gas.append(gas)
        spot, strike = Decimal(p[0]) / WAD, Decimal(p[1]) / WAD
        for is_call, key, index in ((True, "call", 0), (False, "put", 1)):
            value, gas = harness.functions.priceGas(p, is_call).call()
            price_gas.append(gas)
            mismatch += value != g[index]
            err = abs(Decimal(value) / WAD - exact[key])
            worst_abs = max(worst_abs, err / (spot + strike))
            for label, floor in (("material", Decimal("1e-6")), ("typical", Decimal("1e-3"))):
                if exact[key] >= floor * spot and err / exact[key] > worst_rel[label][0]:
                    worst_rel[label] = (err / exact[key], p)
        worst_delta = max(worst_delta, abs(Decimal(g[2]) / WAD - exact["call_delta"]))
    print(f"{len(points)} grid points, {len(price_gas)} prices "
          f"(spot {SPOTS}, K/S {MONEYNESS[0]}..{MONEYNESS[-1]}, tau {SECONDS[0]} s..10 y, "
          f"vol {VOLS[0]}..{VOLS[-1]}, rate {RATES})")
    print(f"{'':45s} {'this library':>42s}   {'previous library':>36s}")
    print(f"{'gas per price  (library call)':45s} {stats(price_gas):>42s}   {PREVIOUS['gas per price']:>36s}")
    print(f"{'gas per greeks (library call)':45s} {stats(greeks_gas):>42s}   {PREVIOUS['gas per greeks']:>36s}")
    print(f"{'max |price error| / (S + K)':45s} {worst_abs:>42.3e}   {PREVIOUS['max |price error| / (S + K)']:>36s}")
    for label, floor in (("material", "1e-6"), ("typical", "1e-3")):
        rel, at = worst_rel[label]
        print(f"{f'max relative price error, price >= {floor} S':45s} {rel:>42.3e}   {PREVIOUS[label]:>36s}")
        print(f"    at (S, K, seconds, vol, rate) = {at}")
    print(f"{'max |call delta error|':45s} {worst_delta:>42.3e}   {PREVIOUS['max |call delta error|']:>36s}")
    print(f"price() != greeks() price at {mismatch} of {len(price_gas)} prices")


if __name__ == "__main__":
    main()
