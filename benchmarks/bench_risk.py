"""Benchmark of the VaR/ES modules (:mod:`keeper.risk_report`, :mod:`keeper.es_limit`) and :mod:`keeper.stress`.

Run with ``python benchmarks/bench_risk.py`` from the repository root.

Inputs: correlated Student-t(4) daily returns (seeded) for ``n`` assets over ``T`` days, weights
summing to 0.9 (10 % base asset).  Timed (wall clock, ``time.perf_counter_ns``, single-threaded BLAS,
one warm-up call, median over repeats):

* one measure per method (99 %, 1 day and 10 days),
* :func:`keeper.risk_report.risk_report` (3 methods x 2 confidences x 2 horizons = 12 measures),
* :func:`keeper.es_limit.enforce_es_limit` on a breach (historical ES, 99 %, 1 day),
* :func:`keeper.stress.run_stress_tests` on the shipped CSV, with and without loading the file.

Also printed: the largest relative gap between the sum of the Euler contributions and the total over
all 12 measures of every report.
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

from keeper.es_limit import enforce_es_limit  # noqa: E402
from keeper.risk_report import portfolio_var_es, risk_report  # noqa: E402
from keeper.stress import load_close_history, run_stress_tests  # noqa: E402

SEED = 20240601
CASES = ((3, 180), (9, 365), (9, 2000), (50, 2000))


def returns_for(rng: np.random.Generator, n: int, t: int) -> np.ndarray:
    mixing = np.eye(n) + 0.4 * rng.uniform(size=(n, n))
    return np.clip(rng.standard_t(4, size=(t, n)) @ mixing.T * 0.015, -0.9, None)


def median_us(fn, repeats: int) -> float:
    fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter_ns()
        fn()
        samples.append(time.perf_counter_ns() - start)
    return float(np.median(samples)) / 1e3


def main() -> None:
    rng = np.random.default_rng(SEED)
    print(f"{'n':>4}{'T':>6}  {'hist 1d':>9}{'hist 10d':>10}{'gauss':>8}{'CF 1d':>8}{'CF 10d':>8}"
          f"{'report':>9}{'limit':>8}  {'max |sum(contrib)-total|/total':>31}   (median µs)")
    for n, t in CASES:
        r = returns_for(rng, n, t)
        w = rng.uniform(0.1, 1.0, size=n)
        w *= 0.9 / w.sum()
        repeats = 200 if t <= 365 else 50
        timings = [
            median_us(lambda: portfolio_var_es(w, method="historical", returns=r), repeats),
            median_us(lambda: portfolio_var_es(w, method="historical", returns=r, horizon_days=10), repeats),
            median_us(lambda: portfolio_var_es(w, method="gaussian", returns=r), repeats),
            median_us(lambda: portfolio_var_es(w, method="cornish_fisher", returns=r), repeats),
            median_us(lambda: portfolio_var_es(w, method="cornish_fisher", returns=r, horizon_days=10),
                      repeats),
            median_us(lambda: risk_report(w, r), max(repeats // 5, 10)),
        ]
        es = portfolio_var_es(w, method="historical", returns=r).es
        timings.append(median_us(lambda: enforce_es_limit(w, 0.5 * es, returns=r), repeats))
        report = risk_report(w, r)
        gap = max(max(abs(m.var_contributions.sum() - m.var) / abs(m.var),
                      abs(m.es_contributions.sum() - m.es) / abs(m.es)) for m in report.measures)
        print(f"{n:>4}{t:>6}  " + "".join(f"{x:>{k}.0f}" for x, k in zip(timings, (9, 10, 8, 8, 8, 9, 8)))
              + f"  {gap:>31.2e}")

    history = load_close_history()
    symbols = ("BTC", "ETH", "BNB", "XRP", "ADA", "DOGE", "SOL", "TRX", "BCH")
    w = np.full(9, 0.1)
    cov = np.cov(returns_for(rng, 9, 365), rowvar=False) * 365
    load = median_us(load_close_history, 10)
    stress = median_us(lambda: run_stress_tests(w, symbols, cov, history=history, nav_base_units=10**13), 20)
    print(f"stress tests, 9 assets, 4 windows + 13 hypothetical: {stress:.0f} µs "
          f"(+ {load:.0f} µs to load the {len(history.dates)}-row CSV)")


if __name__ == "__main__":
    main()
