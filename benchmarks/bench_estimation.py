"""Benchmark of the covariance estimators (:func:`keeper.covariance.covariance_from_config`) and the
conditioning gate (:func:`keeper.conditioning_gate.gated_covariance`).

Run with ``python benchmarks/bench_estimation.py`` from the repository root.

Inputs are correlated Gaussian daily returns (one "market" factor plus noise,
daily volatilities 2-6 %), ``T`` rows by ``n`` assets; the ``gaps`` variants
blank the first third of the rows of half of the assets (late listings) and
1 % of the remaining cells at random.  Every timing is the median and the
minimum over repeated calls after one warm-up call (wall clock,
``time.perf_counter_ns``, single-threaded BLAS), in microseconds; on a shared
machine the minimum is the better guide to the cost itself.  The one-off cost of importing
scikit-learn (paid by the first Ledoit-Wolf call of a process) is printed
separately.  Each estimator's :class:`~keeper.covariance.EstimatorConfig` is built once, outside
the timed call, as the keeper builds its own.

Printed per (T, n): sample, EWMA (complete rows), EWMA pairwise (with gaps),
EWMA drop_rows (with gaps), Ledoit-Wolf, scikit-learn's ``LedoitWolf().fit``
for reference, and the gate (EWMA pairwise with gaps, limit 1e4).
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
from typing import Callable  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from keeper.conditioning_gate import gated_covariance  # noqa: E402
from keeper.covariance import EstimatorConfig, covariance_from_config  # noqa: E402

CASES = ((180, 3), (365, 9), (1000, 9), (3000, 9), (1000, 50))


def returns(n_obs: int, n_assets: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    market = rng.normal(size=(n_obs, 1))
    loadings = rng.uniform(0.5, 1.0, size=(1, n_assets))
    idio = rng.normal(size=(n_obs, n_assets))
    vols = rng.uniform(0.02, 0.06, size=n_assets)
    return (market @ loadings + 0.7 * idio) / 1.2 * vols


def with_gaps(r: np.ndarray, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = r.copy()
    n_obs, n_assets = out.shape
    out[: n_obs // 3, : n_assets // 2] = np.nan
    out[rng.random(out.shape) < 0.01] = np.nan
    return out


def timing_us(fn: Callable[[], object], repeats: int) -> str:
    """``"median/min"`` wall-clock microseconds over ``repeats`` calls after a warm-up."""
    fn()  # warm-up
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter_ns()
        fn()
        samples.append(time.perf_counter_ns() - t0)
    return f"{np.median(samples) / 1e3:.0f}/{np.min(samples) / 1e3:.0f}"


def main() -> None:
    t0 = time.perf_counter()
    from sklearn.covariance import LedoitWolf  # noqa: PLC0415 - timed on purpose

    print(f"scikit-learn import (one-off, first Ledoit-Wolf call): {time.perf_counter() - t0:.2f} s")
    header = ("T", "n", "sample", "ewma", "ewma_pairwise", "ewma_drop_rows", "ledoit_wolf", "sklearn_LW_fit", "gate")
    print(" ".join(f"{h:>14}" for h in header) + "   (median/min microseconds)")
    gate_config = EstimatorConfig("ewma", 30.0, missing="pairwise", min_observations=30)
    sample = EstimatorConfig("sample")
    ewma = EstimatorConfig("ewma", 30.0)
    ewma_drop_rows = EstimatorConfig("ewma", 30.0, missing="drop_rows", min_observations=30)
    ledoit_wolf = EstimatorConfig("ledoit_wolf")
    for n_obs, n_assets in CASES:
        r = returns(n_obs, n_assets)
        g = with_gaps(r)
        repeats = 200 if n_obs * n_assets <= 10_000 else 50
        row = [
            timing_us(lambda: covariance_from_config(r, sample), repeats),
            timing_us(lambda: covariance_from_config(r, ewma), repeats),
            timing_us(lambda: covariance_from_config(g, gate_config), repeats),
            timing_us(lambda: covariance_from_config(g, ewma_drop_rows), repeats),
            timing_us(lambda: covariance_from_config(r, ledoit_wolf), repeats),
            timing_us(lambda: LedoitWolf().fit(r), repeats),
            timing_us(lambda: gated_covariance(g, gate_config, 1e4), repeats),
        ]
        print(f"{n_obs:>14} {n_assets:>14} " + " ".join(f"{x:>14}" for x in row))


if __name__ == "__main__":
    main()
