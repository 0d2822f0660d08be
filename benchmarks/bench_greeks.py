"""Throughput of Black-Scholes-Merton price + Greeks: keeper.options vs vollib vs py_vollib_vectorized.

Run with ``python benchmarks/bench_greeks.py`` from the repository root, after
``.tools/uv/bin/uv sync --frozen --extra test --extra bench`` (``vollib`` comes with the test extra, ``py_vollib_vectorized``
with the bench extra).

Workload: ``n`` European options (half calls, half puts) with spot 100, strike 100 x exp(U[-0.5, 0.5]),
T ~ U[1 day, 2 years], sigma ~ U[0.1, 1.5], r = 0.03, q = 0.01, seeded. Each library computes the
price and the five Greeks (delta, gamma, vega, theta, rho) of every option:

* ``keeper.options.greeks`` -- one vectorised call;
* ``vollib`` (``vollib.black_scholes_merton``, pure Python + Jaeckel's price) -- a Python loop,
  six calls per option. For ``n >= 10,000`` only the first 2,000 options are timed and the rate is
  extrapolated linearly (a Python loop's cost is linear in ``n``); the table marks it ``*``;
* ``py_vollib_vectorized`` -- ``vectorized_black_scholes_merton`` + ``get_all_greeks``
  (``model="black_scholes_merton"``, ``return_as="numpy"/"dict"``), after one warm-up call for
  numba's compilation. Version 0.1.1 does not compile under the installed numba; see
  :func:`load_py_vollib_vectorized` for the minimal, benchmark-only fix.

Also timed: implied volatility of 10,000 options priced by ``keeper.options`` (ours vectorised,
vollib in a loop on 2,000 of them, py_vollib_vectorized's ``vectorized_implied_volatility``) with
the largest relative error of the recovered volatility.

Wall clock (``time.perf_counter``), best of a few repeats, single-threaded BLAS; the machine load
(``os.getloadavg``) is printed because it scales every number. Also printed: the largest
differences from ``keeper.options`` on the timed options, after converting the other libraries'
scales (vollib and py_vollib_vectorized: vega and rho per 1 %, theta per day). py_vollib_vectorized's
Greeks are finite differences with fixed bumps, and its Black-Scholes-Merton rho bumps r and q
together (carry fixed), a different Greek from ours (q fixed): expect its differences to be large.
"""

from __future__ import annotations

import os

os.environ["OPENBLAS_NUM_THREADS"] = "1"
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from keeper import options  # noqa: E402

SIZES = (1, 10_000, 1_000_000)
LOOP_SUBSET = 2_000
SEED = 20240601
R, Q = 0.03, 0.01


def workload(n: int) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(SEED)
    s = np.full(n, 100.0)
    k = 100.0 * np.exp(rng.uniform(-0.5, 0.5, n))
    t = rng.uniform(1 / 365, 2.0, n)
    sigma = rng.uniform(0.1, 1.5, n)
    is_call = np.arange(n) % 2 == 0
    return s, k, t, sigma, is_call


def best_of(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def time_ours(n: int) -> tuple[float, options.Greeks]:
    s, k, t, sigma, is_call = workload(n)
    if n == 1:
        s, k, t, sigma, is_call = float(s[0]), float(k[0]), float(t[0]), float(sigma[0]), bool(is_call[0])
        calls = 2_000
        elapsed = best_of(lambda: [options.greeks(s, k, t, sigma, R, Q, is_call) for _ in range(calls)], 3)
        return calls / elapsed, options.greeks(s, k, t, sigma, R, Q, is_call)
    repeats = 10 if n <= 10_000 else 3
    elapsed = best_of(lambda: options.greeks(s, k, t, sigma, R, Q, is_call), repeats)
    return n / elapsed, options.greeks(s, k, t, sigma, R, Q, is_call)


def time_vollib(n: int) -> tuple[float, bool, dict[str, np.ndarray]]:
    from vollib.black_scholes_merton import black_scholes_merton as price
    from vollib.black_scholes_merton.greeks import analytical as g

    s, k, t, sigma, is_call = workload(n)
    m = min(n, LOOP_SUBSET)
    flags = ["c" if c else "p" for c in is_call[:m]]
    rows = [(flags[i], float(s[i]), float(k[i]), float(t[i]), R, float(sigma[i]), Q) for i in range(m)]

    def run() -> list[tuple[float, ...]]:
        return [
            (price(*a), g.delta(*a), g.gamma(*a), g.vega(*a), g.theta(*a), g.rho(*a))
            for a in rows
        ]

    if n == 1:
        calls = 2_000
        elapsed = best_of(lambda: [run() for _ in range(calls)], 3)
        rate = calls / elapsed
    else:
        rate = m / best_of(run, 2)
    out = np.array(run())
    # Back to keeper.options' scales: vega and rho per 1.00, theta per year.
    ref = {"price": out[:, 0], "delta": out[:, 1], "gamma": out[:, 2], "vega": out[:, 3] * 100.0,
           "theta": out[:, 4] * 365.0, "rho": out[:, 5] * 100.0}
    return rate, m < n, ref


def load_py_vollib_vectorized():
    """Imports py_vollib_vectorized 0.1.1 and makes it run under the installed numba / cody_special.

    As installed by the bench extra it does not compile (numba 0.68): (1) its jitted ``black`` calls
    itself to map an in-the-money option to the out-of-the-money one, which numba 0.68 rejects
    ("cannot type infer runaway recursion"); (2) ``norm_cdf``, now from ``cody_special``, is a plain
    Python function that nopython code cannot call. Fix for the benchmark only, without touching the
    installed files: ``black`` is replaced by the same formula with the recursion unrolled (one
    level, as the original recurses at most once), ``cody_special``'s functions are jitted, and
    ``PY_LETS_BE_RATIONAL_ENABLE_NUMBA=yes`` enables numba in py_lets_be_rational.
    """
    import importlib
    import pkgutil
    import types

    os.environ["PY_LETS_BE_RATIONAL_ENABLE_NUMBA"] = "yes"
    import cody_special
    import numba
    import py_vollib_vectorized as pvv
    import py_vollib_vectorized.util.greeks_helpers as helpers
    from py_vollib_vectorized import _model_calls as calls

    normalised_black = calls.normalised_black

    @numba.njit
    def black(F, K, sigma, T, q):  # py_vollib_vectorized's black, recursion unrolled
        intrinsic = np.abs(np.maximum((K - F if q < 0 else F - K), 0.0))
        if q * (F - K) > 0:
            q = -q
            otm_intrinsic = np.abs(np.maximum((K - F if q < 0 else F - K), 0.0))
            return intrinsic + np.maximum(
                otm_intrinsic, (np.sqrt(F) * np.sqrt(K)) * normalised_black(np.log(F / K), sigma * np.sqrt(T), q)
            )
        return np.maximum(intrinsic, (np.sqrt(F) * np.sqrt(K)) * normalised_black(np.log(F / K), sigma * np.sqrt(T), q))

    calls.black = black
    modules = [helpers] + [importlib.import_module(f"cody_special.{m.name}") for m in pkgutil.iter_modules(cody_special.__path__)]
    for module in modules:
        for name in dir(module):
            obj = getattr(module, name)
            if isinstance(obj, types.FunctionType) and obj.__module__.startswith(("cody_special", "py_lets_be_rational")):
                setattr(module, name, numba.njit(obj))
    return pvv


def time_vectorized(n: int) -> tuple[float, dict[str, np.ndarray]]:
    pvv = load_py_vollib_vectorized()

    s, k, t, sigma, is_call = workload(n)
    flags = np.where(is_call, "c", "p")

    def run() -> dict[str, np.ndarray]:
        p = pvv.vectorized_black_scholes_merton(flags, s, k, t, R, sigma, Q, return_as="numpy")
        greeks = pvv.get_all_greeks(flags, s, k, t, R, sigma, Q, model="black_scholes_merton", return_as="dict")
        return {"price": np.asarray(p), **{name: np.asarray(v) for name, v in greeks.items()}}

    run()  # numba compilation
    if n == 1:
        calls = 200
        elapsed = best_of(lambda: [run() for _ in range(calls)], 3)
        rate = calls / elapsed
    else:
        rate = n / best_of(run, 3 if n <= 10_000 else 2)
    out = run()
    ref = {"price": out["price"], "delta": out["delta"], "gamma": out["gamma"], "vega": out["vega"] * 100.0,
           "theta": out["theta"] * 365.0, "rho": out["rho"] * 100.0}
    return rate, ref


def max_rel_diff(ours: options.Greeks, ref: dict[str, np.ndarray]) -> str:
    """Median / max of |ours - theirs| / max(|ours|, 1e-12) per quantity."""
    parts = []
    for name in ("price", "delta", "gamma", "vega", "theta", "rho"):
        a = np.atleast_1d(getattr(ours, name))[: ref[name].size]
        b = ref[name].ravel()
        rel = np.abs(a - b) / np.maximum(np.abs(a), 1e-12)
        parts.append(f"{name} {float(np.median(rel)):.0e}/{float(np.max(rel)):.0e}")
    return ", ".join(parts)


IV_N = 10_000


def iv_workload() -> tuple[np.ndarray, ...]:
    s, k, t, sigma, is_call = workload(IV_N)
    return options.price(s, k, t, sigma, R, Q, is_call), s, k, t, sigma, is_call


def iv_error(iv: np.ndarray) -> str:
    """Max relative vol error where the price carries the vol (time value > 1e-8 of the price),
    and how many of those came back NaN or raised."""
    prices, s, k, t, sigma, is_call = iv_workload()
    m = iv.size
    intrinsic = np.maximum(np.where(is_call, 1.0, -1.0) * (s * np.exp(-Q * t) - k * np.exp(-R * t)), 0.0)
    informative = ((prices - intrinsic) > 1e-8 * prices)[:m]
    err = np.abs(iv - sigma[:m]) / sigma[:m]
    failed = int(np.sum(np.isnan(iv) & informative))
    return f"max error {float(np.nanmax(err[informative])):.1e} on {int(informative.sum()):,} informative, {failed} failed"


def time_ours_iv() -> tuple[float, str]:
    prices, s, k, t, sigma, is_call = iv_workload()
    rate = IV_N / best_of(lambda: options.implied_volatility(prices, s, k, t, R, Q, is_call).vol, 3)
    return rate, iv_error(options.implied_volatility(prices, s, k, t, R, Q, is_call).vol)


def time_vollib_iv() -> tuple[float, str]:
    """vollib's implied volatility in a loop (first LOOP_SUBSET options). Must run before
    py_vollib_vectorized is imported: it replaces vollib's functions with its own."""
    from vollib.black_scholes_merton.implied_volatility import implied_volatility as vollib_iv

    prices, s, k, t, sigma, is_call = iv_workload()
    m = LOOP_SUBSET
    rows = [(float(prices[i]), float(s[i]), float(k[i]), float(t[i]), R, Q, "c" if is_call[i] else "p") for i in range(m)]
    def one(a: tuple) -> float:
        try:
            return vollib_iv(*a)
        except Exception:  # vollib raises for a price at or below intrinsic value
            return float("nan")

    rate = m / best_of(lambda: [one(a) for a in rows], 2)
    return rate, iv_error(np.array([one(a) for a in rows]))


def time_vectorized_iv() -> tuple[float, str]:
    pvv = load_py_vollib_vectorized()
    prices, s, k, t, sigma, is_call = iv_workload()
    flags = np.where(is_call, "c", "p")

    def run() -> np.ndarray:
        return np.asarray(pvv.vectorized_implied_volatility(
            prices, s, k, t, R, flags, Q, model="black_scholes_merton", return_as="numpy"
        )).ravel()

    try:
        run()
    except Exception as exc:  # numba.core.errors.TypingError: its IV code has the same recursion
        return float("nan"), f"not measured: does not compile under the installed numba ({type(exc).__name__})"
    rate = IV_N / best_of(run, 3)
    return rate, iv_error(run())


def main() -> None:
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; price + 5 Greeks per option")
    print(f"{'n':>9} | {'keeper.options':>16} | {'vollib (loop)':>16} | {'py_vollib_vect.':>16} | {'vs vollib':>9} | {'vs pvv':>7}")
    print(f"{'':>9} | {'options/s':>16} | {'options/s':>16} | {'options/s':>16} | {'speed-up':>9} | {'':>7}")
    notes = []
    # vollib first for every size: loading py_vollib_vectorized jits functions vollib may share.
    ours_runs = {n: time_ours(n) for n in SIZES}
    vollib_runs = {n: time_vollib(n) for n in SIZES}
    iv_runs = {"keeper.options": time_ours_iv(), "vollib (loop)*": time_vollib_iv()}
    pvv_runs = {n: time_vectorized(n) for n in SIZES}
    iv_runs["py_vollib_vectorized"] = time_vectorized_iv()
    for n in SIZES:
        ours_rate, ours = ours_runs[n]
        vollib_rate, extrapolated, vollib_ref = vollib_runs[n]
        pvv_rate, pvv_ref = pvv_runs[n]
        mark = "*" if extrapolated else " "
        print(f"{n:>9,} | {ours_rate:>16,.0f} | {vollib_rate:>15,.0f}{mark} | {pvv_rate:>16,.0f} | "
              f"{ours_rate / vollib_rate:>8.1f}x | {ours_rate / pvv_rate:>6.1f}x")
        notes.append(f"n={n:,}: relative difference (median/max) vs vollib: {max_rel_diff(ours, vollib_ref)}")
        notes.append(f"n={n:,}: relative difference (median/max) vs py_vollib_vectorized: {max_rel_diff(ours, pvv_ref)}")
    print(f"* timed on the first {LOOP_SUBSET:,} options and extrapolated linearly (Python loop).")
    for line in notes:
        print(line)
    print(f"\nimplied volatility of n = {IV_N:,} options priced by keeper.options (relative error of the vol):")
    for name, (rate, err) in iv_runs.items():
        shown = f"{rate:>12,.0f} options/s" if np.isfinite(rate) else f"{'-':>12}          "
        print(f"  {name:<22} {shown}   {err}")


if __name__ == "__main__":
    main()
