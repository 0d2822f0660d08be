"""Side-by-side benchmark: our risk-budgeting solver against three reference libraries.

Run from the repository root, after ``.tools/uv/bin/uv sync --frozen --extra test --extra bench``::

    .venv/bin/python benchmarks/bench_solvers.py [--quick]

Solvers (each called through its documented API, at its default tolerance):

* **ours** -- :func:`keeper.risk_budgeting.solve_equal_risk_contribution(covariance, risk_budget)`,
  the full public call (input validation including the O(n^3) Cholesky test of positive
  definiteness, the compiled coordinate-descent kernel, risk decomposition, the
  ``TargetWeights`` record), tolerance ``max |RRC - b| <= 1e-12``; its ``.weights`` are what
  ``vanilla.design`` returns.  "ours no-PD" is the same call with
  ``check_positive_definite=False`` (every check but the Cholesky test, which none of the
  references performs).  "ours =rpp" is "ours" with ``tol`` set to the error
  riskparityportfolio reaches at its default tolerance on that problem (the comparison at
  equal accuracy with "rpp"); "=rpp no-PD" the same without the Cholesky test.  The kernel
  is compiled once (numba, ``cache=True``); the script prints that one-time cost (a fresh
  process with an empty cache directory, and the first call of this process) and then times
  warm calls only, like every other solver (one untimed warm-up call each).
* **riskparityportfolio** -- ``riskparityportfolio.vanilla.design(Sigma, b)``, the compiled
  (C++/Eigen, pybind11) cyclical coordinate descent behind ``RiskParityPortfolio`` without
  constraints; defaults ``tol=1e-4`` (on ``max |x_i (Cx)_i - b_i|`` in correlation space),
  ``maxiter=50``.  Also run at ``tol=1e-12, maxiter=100000`` ("rpp tight") for an
  accuracy-matched comparison.  The package's ``__init__`` imports ``jax`` (not a declared
  dependency); if that import fails, the compiled ``vanilla`` extension module is loaded
  directly from the installed package (same function) and the script says so.
* **skfolio** -- ``RiskBudgeting(risk_measure=RiskMeasure.VARIANCE, risk_budget=b).fit(X)``:
  CVXPY + Clarabel (skfolio's default, ``tol_gap_abs = tol_gap_rel = 1e-9``).  skfolio
  takes returns, not a covariance: ``X`` is built so that its sample covariance (ddof=1,
  skfolio's ``EmpiricalCovariance`` default) is exactly the benchmark covariance; the timed
  ``fit`` includes that estimation (an ``O(T n^2)`` product, microseconds to ~1 ms).
* **Riskfolio-Lib** -- ``Portfolio(returns=X)``, ``assets_stats(method_mu="hist",
  method_cov="hist")`` (untimed), then the timed ``rp_optimization(model="Classic",
  rm="MV", rf=0, b=b, hist=True)``: CVXPY with its default solver list (Clarabel first,
  solver defaults).

Problems.  For each ``n`` in 5, 10, 20, 50, 100, 200: the covariance is

* ``n <= 9``: the sample covariance (ddof=1) of real daily simple returns of the first ``n``
  assets of ``data/crypto_daily_close_binance_aligned.csv`` (BTC, ETH, BNB, XRP, ADA, ...,
  2020-08-12 to 2026-03-30, 2,051 days), and ``X`` is those returns;
* ``n >= 10``: a seeded statistical factor model (``bench_optimizer.factor_model_covariance``:
  a positive market factor, up to four sector factors, idiosyncratic noise, annualised
  volatilities in [0.3, 1.2], divided by 365 to daily), and ``X`` is 1,000 synthetic daily
  returns whitened to have exactly that sample covariance.

Two budgets each: equal (``b_i = 1/n``) and non-uniform (seeded Dirichlet(1), floored at
``0.1/n`` and renormalised).  Every solver gets the same covariance and budget.

Measured: per-call time as CPU time of the process (``time.process_time_ns``, robust to
other load on the machine) and as wall time.  The fast solvers (ours, riskparityportfolio) are
timed together in interleaved rounds, each round one batch of back-to-back calls per solver
(~0.2 ms) in a random order, so that all see the same machine conditions; the median over
rounds of batch time / batch size is reported.  The slow references are timed alone, one call
per sample.  Accuracy: ``max_i |RRC_i - b_i|`` of the returned weights, recomputed here with
plain numpy on the benchmark covariance (``RRC_i = w_i (Σw)_i / w'Σw``, after normalising the
weights to sum to 1).  Single-threaded BLAS.  The first table prints, per size, budget and
solver: time, time relative to "ours" and accuracy; the second, the equal-accuracy
comparisons as ``theirs / ours`` (> 1: ours is faster) with both errors.
"""

from __future__ import annotations

import os

# One BLAS thread: stable timings, and what the keeper runs with.  Before numpy is imported.
os.environ["OPENBLAS_NUM_THREADS"] = "1"
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse  # noqa: E402
import glob  # noqa: E402
import importlib.util  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_optimizer import factor_model_covariance  # noqa: E402

from keeper.data import load_prices  # noqa: E402
from keeper.risk_budgeting import solve_equal_risk_contribution  # noqa: E402

SIZES = (5, 10, 20, 50, 100, 200)
SEED = 20241128
SYNTHETIC_OBSERVATIONS = 1000
# Minimum total CPU time spent timing one solver on one problem, and repeat bounds.
MIN_TOTAL_NS = 300_000_000
MIN_REPEATS = {"fast": 21, "slow": 5}
MAX_REPEATS = {"fast": 301, "slow": 15}
# Target duration of one timed batch of back-to-back calls (see measure_interleaved).
BATCH_NS = 200_000


@dataclass
class Problem:
    n: int
    source: str
    budget_kind: str
    covariance: np.ndarray  # (n, n), daily
    returns: np.ndarray  # (T, n) with sample covariance (ddof=1) == covariance
    budget: np.ndarray  # (n,)


@dataclass
class Measurement:
    cpu_us: float
    wall_us: float
    error: float  # max |RRC - b|
    repeats: int


# --------------------------------------------------------------------------- #
# Problems
# --------------------------------------------------------------------------- #
def real_returns(n: int) -> np.ndarray:
    prices = load_prices().prices[:, :n]
    return prices[1:] / prices[:-1] - 1.0


def returns_with_covariance(rng: np.random.Generator, covariance: np.ndarray, t: int) -> np.ndarray:
    """(t, n) returns whose sample covariance (ddof=1) equals ``covariance`` to rounding."""
    n = covariance.shape[0]
    z = rng.standard_normal((t, n))
    z -= z.mean(axis=0)
    whitening = np.linalg.cholesky(z.T @ z / (t - 1))
    z = np.linalg.solve(whitening, z.T).T  # sample covariance I
    return z @ np.linalg.cholesky(covariance).T


def budgets(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    skewed = np.maximum(rng.dirichlet(np.ones(n)), 0.1 / n)
    return {"equal": np.full(n, 1.0 / n), "dirichlet": skewed / skewed.sum()}


def make_problems(sizes: tuple[int, ...]) -> list[Problem]:
    rng = np.random.default_rng(SEED)
    problems = []
    for n in sizes:
        if n <= 9:
            returns = real_returns(n)
            covariance = np.cov(returns, rowvar=False, ddof=1)
            source = f"real {n} assets"
        else:
            covariance = factor_model_covariance(rng, n) / 365.0
            returns = returns_with_covariance(rng, covariance, SYNTHETIC_OBSERVATIONS)
            source = "factor model"
        covariance = 0.5 * (covariance + covariance.T)
        for kind, budget in budgets(rng, n).items():
            problems.append(Problem(n, source, kind, covariance, returns, budget))
    return problems


def budget_error(weights: np.ndarray, covariance: np.ndarray, budget: np.ndarray) -> float:
    w = np.asarray(weights, dtype=np.float64).ravel()
    w = w / w.sum()
    sw = covariance @ w
    return float(np.max(np.abs(w * sw / (w @ sw) - budget)))


# --------------------------------------------------------------------------- #
# Solvers: name -> (speed class, factory(problem) -> zero-argument call returning weights)
# --------------------------------------------------------------------------- #
Solver = Callable[[Problem], Callable[[], np.ndarray]]


def ours_solver(check_pd: bool = True) -> Solver:
    """:func:`keeper.risk_budgeting.solve_equal_risk_contribution`, its weights (like
    ``vanilla.design``); ``check_pd=False`` skips the Cholesky test of positive definiteness."""

    def factory(problem: Problem) -> Callable[[], np.ndarray]:
        cov, b = problem.covariance, problem.budget
        return lambda: solve_equal_risk_contribution(cov, b, check_positive_definite=check_pd).weights

    return factory


ours = ours_solver()


def ours_at_accuracy_of(design: Callable[..., np.ndarray], check_pd: bool = True) -> Solver:
    """Ours with ``tol`` = the budget error riskparityportfolio reaches at its defaults on that
    problem."""

    def factory(problem: Problem) -> Callable[[], np.ndarray]:
        cov, b = problem.covariance, problem.budget
        tol = max(budget_error(design(cov, b), cov, b), 1e-15)
        return lambda: solve_equal_risk_contribution(cov, b, tol=tol, check_positive_definite=check_pd).weights

    return factory


def jit_cost() -> str:
    """One-time cost of the compiled kernel: cold compile in a fresh process, cache load here."""
    code = (
        "import time, numpy as np; t0 = time.perf_counter(); "
        "from keeper.risk_budgeting import solve_equal_risk_contribution as s; t1 = time.perf_counter(); "
        "s(np.array([[0.04, 0.01], [0.01, 0.09]])); t2 = time.perf_counter(); "
        "print(f'{t1 - t0:.2f} {t2 - t1:.2f}')"
    )
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        cold = subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True
        )
    t0 = time.perf_counter()
    solve_equal_risk_contribution(np.array([[0.04, 0.01], [0.01, 0.09]]))
    warm = time.perf_counter() - t0
    cold_text = (
        f"import {cold.stdout.split()[0]} s, first call (compiles) {cold.stdout.split()[1]} s"
        if cold.returncode == 0
        else f"failed: {cold.stderr.strip()[-200:]}"
    )
    return (
        f"ours: one-time JIT cost, fresh process with an empty NUMBA_CACHE_DIR: {cold_text}; "
        f"first call of this process (kernel loaded from the on-disk cache): {warm:.2f} s; "
        "all times below are warm calls"
    )


def load_riskparityportfolio() -> tuple[Callable[..., np.ndarray] | None, str]:
    try:
        import riskparityportfolio  # noqa: F401

        from riskparityportfolio.vanilla import design

        return design, f"riskparityportfolio {riskparityportfolio.__version__}"
    except ImportError as exc:
        spec = importlib.util.find_spec("riskparityportfolio")
        if spec is None or spec.submodule_search_locations is None:
            return None, f"riskparityportfolio not installed ({exc})"
        paths = glob.glob(str(Path(spec.submodule_search_locations[0]) / "vanilla.*.so"))
        if not paths:
            return None, f"riskparityportfolio unusable ({exc}) and no compiled vanilla module"
        module_spec = importlib.util.spec_from_file_location("vanilla", paths[0])
        assert module_spec is not None and module_spec.loader is not None
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
        return module.design, (
            f"riskparityportfolio: package import failed ({exc}); its compiled "
            f"vanilla.design loaded directly from {Path(paths[0]).name}"
        )


def load_skfolio() -> tuple[Solver | None, str]:
    try:
        import skfolio
        from skfolio import RiskMeasure
        from skfolio.optimization import RiskBudgeting
    except ImportError as exc:
        return None, f"skfolio not available ({exc})"

    def factory(problem: Problem) -> Callable[[], np.ndarray]:
        x, b = problem.returns, problem.budget

        def call() -> np.ndarray:
            model = RiskBudgeting(risk_measure=RiskMeasure.VARIANCE, risk_budget=b)
            return model.fit(x).weights_

        return call

    return factory, f"skfolio {skfolio.__version__} (CVXPY + Clarabel, tol_gap 1e-9)"


def load_riskfolio() -> tuple[Solver | None, str]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import pandas as pd
            import riskfolio
    except ImportError as exc:
        return None, f"Riskfolio-Lib not available ({exc})"

    def factory(problem: Problem) -> Callable[[], np.ndarray]:
        columns = [f"A{i}" for i in range(problem.n)]
        portfolio = riskfolio.Portfolio(returns=pd.DataFrame(problem.returns, columns=columns))
        portfolio.assets_stats(method_mu="hist", method_cov="hist")
        b = problem.budget.reshape(-1, 1)

        def call() -> np.ndarray:
            weights = portfolio.rp_optimization(model="Classic", rm="MV", rf=0, b=b, hist=True)
            if weights is None:
                raise RuntimeError("rp_optimization returned None (solver failure)")
            return weights.to_numpy().ravel()

        return call

    version = getattr(riskfolio, "__version__", "")
    return factory, f"Riskfolio-Lib {version} (CVXPY, solvers CLARABEL > ECOS > SCS ..., defaults)"


# --------------------------------------------------------------------------- #
# Timing
# --------------------------------------------------------------------------- #
def measure(call: Callable[[], np.ndarray], problem: Problem, speed: str) -> Measurement:
    """Times one solver alone (the slow references: milliseconds per call)."""
    return measure_interleaved({"": call}, problem, speed)[""]


def measure_interleaved(
    calls: dict[str, Callable[[], np.ndarray]], problem: Problem, speed: str
) -> dict[str, Measurement]:
    """Times several solvers on one problem in interleaved rounds, so that every solver
    sees the same machine conditions.

    In each round every solver runs one batch of back-to-back calls (in a seeded random
    order of solvers); a batch lasts about ``BATCH_NS``, so that its calls run warm, as in
    a loop of solves, and its time over its size is one sample.  Medians over rounds.
    """
    order = np.random.default_rng(SEED)
    names = list(calls)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        weights = {name: call() for name, call in calls.items()}  # warm-up (imports, caches)
        batch = {}
        for name, call in calls.items():
            t0 = time.perf_counter_ns()
            call()
            batch[name] = max(1, min(1000, BATCH_NS // max(1, time.perf_counter_ns() - t0)))
        cpu: dict[str, list[float]] = {name: [] for name in calls}
        wall: dict[str, list[float]] = {name: [] for name in calls}
        spent = dict.fromkeys(calls, 0)
        rounds = 0
        while rounds < MAX_REPEATS[speed] and (
            rounds < MIN_REPEATS[speed] or min(spent.values()) < MIN_TOTAL_NS
        ):
            for k in order.permutation(len(names)):
                name, call, size = names[k], calls[names[k]], batch[names[k]]
                c0, w0 = time.process_time_ns(), time.perf_counter_ns()
                for _ in range(size):
                    weights[name] = call()
                c1, w1 = time.process_time_ns(), time.perf_counter_ns()
                cpu[name].append((c1 - c0) / size)
                wall[name].append((w1 - w0) / size)
                spent[name] += c1 - c0
            rounds += 1
    return {
        name: Measurement(
            cpu_us=float(np.median(cpu[name])) / 1e3,
            wall_us=float(np.median(wall[name])) / 1e3,
            error=budget_error(weights[name], problem.covariance, problem.budget),
            repeats=rounds * batch[name],
        )
        for name in calls
    }


def fmt_time(us: float) -> str:
    return f"{us:10.1f}" if us < 1e5 else f"{us:10.0f}"


# Comparisons at equal accuracy: (reference row, our row).  riskparityportfolio at its
# default tolerance against ours at the error it reached; at 1e-12 against ours at 1e-12.
EQUAL_ACCURACY = (
    ("rpp", "ours =rpp"),
    ("rpp", "=rpp no-PD"),
    ("rpp tight", "ours"),
    ("rpp tight", "ours no-PD"),
    ("skfolio", "ours"),
    ("riskfolio", "ours"),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="sizes 5, 20, 200 only")
    args = parser.parse_args()
    sizes = (5, 20, 200) if args.quick else SIZES

    fast: list[tuple[str, Solver]] = [
        ("ours", ours),
        ("ours no-PD", ours_solver(check_pd=False)),
    ]
    slow: list[tuple[str, Solver]] = []
    notes = [
        "ours: keeper.risk_budgeting.solve_equal_risk_contribution, tol 1e-12 (default); "
        "ours no-PD: the same without the Cholesky test of positive definiteness",
        jit_cost(),
    ]
    design, note = load_riskparityportfolio()
    notes.append(note)
    if design is not None:
        fast += [
            ("ours =rpp", ours_at_accuracy_of(design)),
            ("=rpp no-PD", ours_at_accuracy_of(design, check_pd=False)),
            ("rpp", lambda p: (lambda: design(p.covariance, p.budget))),
            ("rpp tight", lambda p: (lambda: design(p.covariance, p.budget, 1e-12, 100_000))),
        ]
    for loader, name in ((load_skfolio, "skfolio"), (load_riskfolio, "riskfolio")):
        factory, note = loader()
        notes.append(note)
        if factory is not None:
            slow.append((name, factory))

    print(f"numpy {np.__version__}, OPENBLAS_NUM_THREADS={os.environ['OPENBLAS_NUM_THREADS']}")
    for note in notes:
        print(" -", note)
    print(
        "time: median CPU time per call in microseconds (wall in brackets), the fast solvers "
        "timed in interleaved rounds; ratio = this row / ours; error = max |RRC - b|"
    )
    header = (
        f"{'n':>4} {'covariance':<15} {'budget':<9} {'solver':<12} {'cpu us':>10} "
        f"{'(wall us)':>12} {'ratio':>9} {'max|RRC-b|':>11} {'reps':>5}"
    )
    print(header)
    print("-" * len(header))
    summary: list[tuple[Problem, dict[str, Measurement]]] = []
    for problem in make_problems(sizes):
        results = measure_interleaved(
            {name: factory(problem) for name, factory in fast}, problem, "fast"
        )
        for name, factory in slow:
            try:
                results[name] = measure(factory(problem), problem, "slow")
            except Exception as exc:  # a reference failing must not stop the others
                print(f"{problem.n:>4} {name}: failed: {type(exc).__name__}: {str(exc)[:80]}")
        reference = results["ours"]
        for name, result in results.items():
            print(
                f"{problem.n:>4} {problem.source:<15} {problem.budget_kind:<9} {name:<12} "
                f"{fmt_time(result.cpu_us)} ({fmt_time(result.wall_us)}) "
                f"{result.cpu_us / reference.cpu_us:>9.2f} {result.error:>11.1e} "
                f"{result.repeats:>5}"
            )
        summary.append((problem, results))
        sys.stdout.flush()

    print()
    print(
        "Equal accuracy: time ratio theirs / ours (> 1: ours faster); in brackets the errors "
        "max |RRC - b|, theirs / ours.  PD: ours with its Cholesky test of positive "
        "definiteness (the references test nothing); no-PD: ours without it."
    )
    pairs = [(r, o) for r, o in EQUAL_ACCURACY if any(r in m and o in m for _, m in summary)]
    print(f"{'n':>4} {'budget':<9} " + " ".join(f"{r + ' / ' + o:>30}" for r, o in pairs))
    for problem, m in summary:
        cells = []
        for r, o in pairs:
            if r in m and o in m:
                cells.append(
                    f"{m[r].cpu_us / m[o].cpu_us:>8.2f} ({m[r].error:.0e} / {m[o].error:.0e})"
                )
            else:
                cells.append("n/a")
        print(f"{problem.n:>4} {problem.budget_kind:<9} " + " ".join(f"{c:>30}" for c in cells))


if __name__ == "__main__":
    main()
