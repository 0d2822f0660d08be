"""Benchmark of :func:`keeper.optimizer.solve_equal_risk_contribution`.

Run with ``python benchmarks/bench_optimizer.py`` from the repository root.

Inputs are realistic crypto-like covariances: a correlation matrix from a
statistical factor model (one positive "market" factor plus a few sector
factors and idiosyncratic noise, normalised to unit diagonal) scaled by
annualised volatilities drawn uniformly in [0.3, 1.2].  For each size ``n``
the solver is timed (wall clock, ``time.perf_counter_ns``) on many
independent covariances after one warm-up call, single-threaded BLAS.

Printed per ``n``: median and 90th-percentile solve time in microseconds,
median and maximum Newton iterations, and the worst budget error
``max_i |RRC_i - b_i|`` over all runs (equal budget).
"""

from __future__ import annotations

import os

# Must precede the first numpy import: one BLAS thread gives stable timings
# and is what the keeper runs with.
os.environ["OPENBLAS_NUM_THREADS"] = "1"
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from keeper.optimizer import (  # noqa: E402
    relative_risk_contributions,
    solve_equal_risk_contribution,
)

SIZES = (5, 20, 50, 200)
RUNS = {5: 2000, 20: 1000, 50: 500, 200: 100}
SEED = 20240601


def factor_model_covariance(rng: np.random.Generator, n: int) -> np.ndarray:
    """Annualised covariance, shape (n, n): factor-model correlation x vols.

    ``R = D^{-1/2} (B B' + Psi) D^{-1/2}`` with a market factor loading
    ~ U[0.4, 1.0], ``k = min(4, max(1, n // 5))`` sector factors with loadings
    ~ N(0, 0.3^2), idiosyncratic variances ~ U[0.1, 0.6]; then
    ``Sigma = diag(v) R diag(v)`` with ``v ~ U[0.3, 1.2]`` (annualised vols).
    """
    k = min(4, max(1, n // 5))
    market = rng.uniform(0.4, 1.0, size=(n, 1))
    sectors = rng.normal(0.0, 0.3, size=(n, k))
    loadings = np.hstack([market, sectors])
    raw = loadings @ loadings.T + np.diag(rng.uniform(0.1, 0.6, size=n))
    d = np.sqrt(np.diag(raw))
    corr = raw / np.outer(d, d)
    vols = rng.uniform(0.3, 1.2, size=n)
    cov = corr * np.outer(vols, vols)
    return 0.5 * (cov + cov.T)


def bench(n: int, runs: int, rng: np.random.Generator) -> tuple[float, float, float, int, float]:
    covariances = [factor_model_covariance(rng, n) for _ in range(runs)]
    budget = np.full(n, 1.0 / n)
    solve_equal_risk_contribution(covariances[0])  # warm-up (imports, caches)
    times_us = np.empty(runs)
    iterations = np.empty(runs, dtype=np.int64)
    worst_error = 0.0
    for i, cov in enumerate(covariances):
        t0 = time.perf_counter_ns()
        result = solve_equal_risk_contribution(cov)
        times_us[i] = (time.perf_counter_ns() - t0) / 1e3
        iterations[i] = result.iterations
        # Independent check of the achieved budget error, outside the timing.
        error = float(np.max(np.abs(relative_risk_contributions(result.weights, cov) - budget)))
        worst_error = max(worst_error, error)
    return (
        float(np.median(times_us)),
        float(np.percentile(times_us, 90)),
        float(np.median(iterations)),
        int(iterations.max()),
        worst_error,
    )


def main() -> None:
    rng = np.random.default_rng(SEED)
    print(f"numpy {np.__version__}, OPENBLAS_NUM_THREADS={os.environ['OPENBLAS_NUM_THREADS']}")
    header = (
        f"{'n':>5} {'runs':>6} {'median us':>11} {'p90 us':>10} "
        f"{'iters med':>9} {'iters max':>9} {'max|RRC-b|':>11}"
    )
    print(header)
    print("-" * len(header))
    for n in SIZES:
        median, p90, it_med, it_max, err = bench(n, RUNS[n], rng)
        print(
            f"{n:>5} {RUNS[n]:>6} {median:>11.1f} {p90:>10.1f} "
            f"{it_med:>9.0f} {it_max:>9d} {err:>11.1e}"
        )


if __name__ == "__main__":
    main()
