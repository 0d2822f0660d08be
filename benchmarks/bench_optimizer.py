"""Benchmark of :func:`keeper.risk_budgeting.solve_equal_risk_contribution`, the bounded
:func:`keeper.constrained_risk_budgeting.solve_risk_budgeting` and :func:`keeper.allocation.allocate`.

Run with ``python benchmarks/bench_optimizer.py`` from the repository root.

Inputs are realistic crypto-like covariances: a correlation matrix from a
statistical factor model (one positive "market" factor plus a few sector
factors and idiosyncratic noise, normalised to unit diagonal) scaled by
annualised volatilities drawn uniformly in [0.3, 1.2].  For each size ``n``
the solver is timed (wall clock, ``time.perf_counter_ns``) on many
independent covariances after one warm-up call, single-threaded BLAS.

Printed per ``n``: median and 90th-percentile solve time in microseconds,
median and maximum iterations (coordinate-descent sweeps of the compiled
kernel, plus Newton iterations when Newton takes over), the worst budget error
``max_i |RRC_i - b_i|`` over all runs (equal budget), and the median time of
the damped-Newton path alone (``_newton_risk_budgeting``: the fallback for what
coordinate descent cannot finish, and the tests' reference) on the same
covariances.  The kernel's one-time JIT compilation (or cache load) happens in
the untimed warm-up call.

A second table times the constrained solver with binding bounds
(``l_i = 0.5/n``, ``u_i = 1.5/n`` on the sleeve, Dirichlet budgets) and
``allocate`` with those bounds and a volatility target of 0.3: median time,
median count of assets at a bound, worst free-asset error
``max_{i free} |RRC_i - kappa b_i|`` and worst bound violation.
(For the comparison with other libraries see ``bench_solvers.py``.)
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

from keeper.allocation import allocate  # noqa: E402
from keeper.constrained_risk_budgeting import solve_risk_budgeting  # noqa: E402
from keeper.risk_budgeting import _newton_risk_budgeting, solve_equal_risk_contribution  # noqa: E402
from keeper.risk_contributions import relative_risk_contributions  # noqa: E402

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


def bench(
    n: int, runs: int, rng: np.random.Generator
) -> tuple[float, float, float, int, float, float]:
    covariances = [factor_model_covariance(rng, n) for _ in range(runs)]
    budget = np.full(n, 1.0 / n)
    solve_equal_risk_contribution(covariances[0])  # warm-up (imports, JIT cache)
    _newton_risk_budgeting(covariances[0], None, 1e-12, 100)
    newton_us = np.empty(runs)
    for i, cov in enumerate(covariances):
        t0 = time.perf_counter_ns()
        _newton_risk_budgeting(cov, None, 1e-12, 100)
        newton_us[i] = (time.perf_counter_ns() - t0) / 1e3
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
        float(np.median(newton_us)),
    )


def bench_bounded(n: int, runs: int, rng: np.random.Generator) -> tuple[float, float, float, float, float]:
    covariances = [factor_model_covariance(rng, n) for _ in range(runs)]
    budgets = [rng.dirichlet(np.ones(n)) for _ in range(runs)]
    lower, upper = np.full(n, 0.5 / n), np.full(n, 1.5 / n)
    solve_risk_budgeting(covariances[0], budgets[0], (lower, upper))  # warm-up
    solve_us, allocate_us, active = np.empty(runs), np.empty(runs), np.empty(runs)
    worst_free, worst_violation = 0.0, 0.0
    for i, (cov, budget) in enumerate(zip(covariances, budgets)):
        t0 = time.perf_counter_ns()
        result = solve_risk_budgeting(cov, budget, (lower, upper))
        solve_us[i] = (time.perf_counter_ns() - t0) / 1e3
        t0 = time.perf_counter_ns()
        allocate(cov, budget, bounds=(lower, upper), volatility_target=0.3)
        allocate_us[i] = (time.perf_counter_ns() - t0) / 1e3
        w = result.weights
        bound = set(result.lower_bound_active) | set(result.upper_bound_active)
        active[i] = len(bound)
        free = np.array([j not in bound for j in range(n)])
        rrc = relative_risk_contributions(w, cov)
        if free.any():
            kappa = rrc[free].sum() / budget[free].sum()
            worst_free = max(worst_free, float(np.max(np.abs(rrc[free] - kappa * budget[free]))))
        worst_violation = max(worst_violation, float(np.max(lower - w)), float(np.max(w - upper)))
    return (
        float(np.median(solve_us)),
        float(np.median(allocate_us)),
        float(np.median(active)),
        worst_free,
        worst_violation,
    )


def main() -> None:
    rng = np.random.default_rng(SEED)
    print(f"numpy {np.__version__}, OPENBLAS_NUM_THREADS={os.environ['OPENBLAS_NUM_THREADS']}")
    header = (
        f"{'n':>5} {'runs':>6} {'median us':>11} {'p90 us':>10} "
        f"{'iters med':>9} {'iters max':>9} {'max|RRC-b|':>11} {'newton us':>10}"
    )
    print(header)
    print("-" * len(header))
    for n in SIZES:
        median, p90, it_med, it_max, err, newton = bench(n, RUNS[n], rng)
        print(
            f"{n:>5} {RUNS[n]:>6} {median:>11.1f} {p90:>10.1f} "
            f"{it_med:>9.0f} {it_max:>9d} {err:>11.1e} {newton:>10.1f}"
        )
    print()
    print("bounds l = 0.5/n, u = 1.5/n, Dirichlet budgets; allocate with volatility target 0.3")
    header = (
        f"{'n':>5} {'runs':>6} {'bounded us':>11} {'allocate us':>12} {'at bound':>9} "
        f"{'free err':>9} {'violation':>10}"
    )
    print(header)
    print("-" * len(header))
    for n in SIZES:
        runs = max(10, RUNS[n] // 10)
        solve_us, allocate_us, active, free_err, violation = bench_bounded(n, runs, rng)
        print(
            f"{n:>5} {runs:>6} {solve_us:>11.1f} {allocate_us:>12.1f} {active:>9.0f} "
            f"{free_err:>9.1e} {violation:>10.1e}"
        )


if __name__ == "__main__":
    main()
