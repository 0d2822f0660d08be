"""Where the time of one public risk-budgeting call goes, against riskparityportfolio.

Run from the repository root (riskparityportfolio importable, as for ``bench_solvers.py``)::

    .venv/bin/python benchmarks/bench_solver_floors.py [--sizes 5,20,200]

On the problems of ``bench_solvers.py`` (same seed, equal and Dirichlet budgets), with ``tol``
set to the error riskparityportfolio reaches at its defaults (the "ours =rpp" comparison), it
times in interleaved rounds (median CPU time per call, ``time.process_time_ns``, batches of
back-to-back calls as in ``bench_solvers.measure_interleaved``):

* ``call``: ``solve_equal_risk_contribution(cov, b, tol=tol)``, the public call;
* ``kernel``: the compiled kernel's entry point with the same arguments (every check, the
  solve and the risk decomposition; no Python beyond the call itself), so ``call - kernel`` is
  the Python cost of the public call (argument checks, conversions, the fresh output array, the
  ``TargetWeights`` record, and the cache misses of that Python code after the kernel);
* ``kernel no-PD``: the same without the positive-definiteness test, so ``kernel -
  kernel no-PD`` is that test's cost;
* ``spotrf``: LAPACK ``spotrf`` alone on the float32 certificate matrix (n > 24; a copy of the
  prepared triangle, whose cost ``copy`` is printed and subtracted);
* ``symmetry``: the kernel's symmetry and finiteness pass (``_asymmetry``) alone;
* ``rpp``: ``riskparityportfolio.vanilla.design(cov, b)`` at its defaults.

The ratio ``rpp / call`` is the benchmark's "rpp / ours =rpp" column.
"""

from __future__ import annotations

import os

os.environ["OPENBLAS_NUM_THREADS"] = "1"
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse  # noqa: E402
import sys  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_solvers import (  # noqa: E402
    SIZES,
    Measurement,
    Problem,
    budget_error,
    load_riskparityportfolio,
    make_problems,
    measure_interleaved,
)

from keeper.risk_budgeting import solve_equal_risk_contribution  # noqa: E402
from keeper.risk_budgeting_kernel import (  # noqa: E402
    _KERNEL_CHOLESKY_MAX_N,
    _KERNEL_ENTRY,
    _asymmetry,
    _certificate_shift,
    _spotrf_upper_rows,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="comma-separated n")
    args = parser.parse_args()
    design, note = load_riskparityportfolio()
    if design is None:
        sys.exit(note)
    print(note)
    print("median CPU time per call, microseconds; Python = call - kernel; PD test = kernel - no-PD")
    header = (
        f"{'n':>4} {'budget':<9} {'call':>8} {'kernel':>8} {'no-PD':>8} {'Python':>7} "
        f"{'PD test':>8} {'spotrf':>8} {'symmetry':>8} {'rpp':>8} {'rpp/call':>8}"
    )
    print(header)
    print("-" * len(header))
    problems = make_problems(tuple(int(s) for s in args.sizes.split(",")))
    # The first problem is timed twice and its first result not printed: in a process's first
    # timings the public call alone came out 1.5-2 times slower than later (at n = 5 and 10,
    # whichever size came first).
    for k, problem in enumerate(problems[:1] + problems):
        cov = np.ascontiguousarray(problem.covariance)
        b = np.ascontiguousarray(problem.budget)
        n = problem.n
        tol = max(budget_error(design(cov, b), cov, b), 1e-15)
        solve_equal_risk_contribution(cov, b, tol=tol)  # loads the kernel, sets its entry point
        kernel = _KERNEL_ENTRY[0]
        assert kernel is not None
        out = np.empty((4, n))
        inv_vols = 1.0 / np.sqrt(np.diag(cov))
        prepared = np.asfortranarray(
            (cov * np.outer(inv_vols, inv_vols) - _certificate_shift(n) * np.eye(n)).astype(np.float32)
        ).T  # C-ordered view whose upper triangle is what the kernel hands to spotrf
        scratch = np.empty_like(prepared)

        def factorise() -> None:
            np.copyto(scratch, prepared)
            _spotrf_upper_rows(scratch)

        calls: dict[str, Callable[[], object]] = {
            "call": lambda: solve_equal_risk_contribution(cov, b, tol=tol),
            "kernel": lambda: kernel(cov, b, out, tol, 100, True),
            "no-PD": lambda: kernel(cov, b, out, tol, 100, False),
            "symmetry": lambda: _asymmetry(cov),
            "rpp": lambda: design(cov, b),
        }
        if n > _KERNEL_CHOLESKY_MAX_N:
            calls["spotrf"] = factorise
            calls["copy"] = lambda: np.copyto(scratch, prepared)
        m = {name: r.cpu_us for name, r in _timed(calls, problem).items()}
        if k == 0:
            continue
        spotrf = f"{m['spotrf'] - m['copy']:8.1f}" if "spotrf" in m else f"{'-':>8}"
        print(
            f"{n:>4} {problem.budget_kind:<9} {m['call']:8.1f} {m['kernel']:8.1f} {m['no-PD']:8.1f} "
            f"{m['call'] - m['kernel']:7.1f} {m['kernel'] - m['no-PD']:8.1f} {spotrf} "
            f"{m['symmetry']:8.1f} {m['rpp']:8.1f} {m['rpp'] / m['call']:8.2f}"
        )
        sys.stdout.flush()


def _timed(calls: dict[str, Callable[[], object]], problem: Problem) -> dict[str, Measurement]:
    """``measure_interleaved`` for calls that return anything (its error column is not used)."""
    weights = np.full(problem.n, 1.0 / problem.n)

    def returning_weights(call: Callable[[], object]) -> Callable[[], np.ndarray]:
        def timed() -> np.ndarray:
            call()
            return weights

        return timed

    return measure_interleaved({k: returning_weights(c) for k, c in calls.items()}, problem, "fast")


if __name__ == "__main__":
    main()
