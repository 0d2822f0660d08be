"""Compiled (numba) fast path of the risk-budgeting solver: validation, cyclical coordinate
descent with Newton steps for small problems, and the risk decomposition, in one call.

Called by :func:`keeper.risk_budgeting.solve_equal_risk_contribution` through :func:`_run_kernel`;
whatever the kernel cannot finish (``_KERNEL_SLOW``) or rejects (``_KERNEL_INVALID``) goes to the
damped-Newton path of :mod:`keeper.risk_budgeting`, which also raises the documented errors.
Algorithm and notation: :func:`_ccd_solve` (Spinu's objective in correlation space, the coordinate
update of Griveau-Billion, Richard & Roncalli [7]_).

The kernels are compiled with ``cache=True``: the first call of a process without an on-disk cache
compiles them (about 10 s on 2 cores, announced in one log line) and writes the machine code to
``__pycache__`` next to this module; later processes load it.  ``NUMBA_DISABLE_JIT=1`` runs the
same code as plain Python (CI runs the numeric tests once that way).

References
----------
.. [4] D. Chaves, J. Hsu, F. Li, O. Shakernia, "Efficient algorithms for
   computing risk parity portfolio weights", Journal of Investing 21(3), 2012.
.. [7] T. Griveau-Billion, J.-C. Richard, T. Roncalli, "A fast algorithm for
   computing high-dimensional risk parity portfolios", SSRN 2325255, 2013.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable

import numpy as np
import numpy.typing as npt
from numba import config as numba_config
from numba import njit
from numba import types as numba_types
from numba.np.linalg import _LAPACK as _numba_lapack
from scipy.linalg.lapack import spotrf as _scipy_spotrf

FloatArray = npt.NDArray[np.float64]

# Input limits shared with the reference path's validation (keeper.risk_budgeting).
_SYMMETRY_RTOL = 1e-10
_BUDGET_SUM_ATOL = 1e-9

# Status codes of :func:`_ccd_kernel`.
_KERNEL_OK = 0
# An input check failed: the reference path re-validates and raises the documented error.
_KERNEL_INVALID = 1
# Coordinate descent would not reach ``tol`` within ``max_iter`` sweeps (ill-conditioned
# correlation, round-off floor): the reference Newton path solves the problem instead.
_KERNEL_SLOW = 2
# Up to this size the positive-definiteness test is an unblocked LDL' (Cholesky) compiled into
# the kernel; above it, a float32 certificate (LAPACK ``spotrf``, _certifies_positive_definite),
# then, only if that proves nothing, LAPACK's blocked ``dpotrf`` (numba's ``np.linalg.cholesky``).
# The two tests take the same time at about n = 24 (1.6 µs); at n = 48 the certificate takes
# 8 µs, the LDL' 13 µs.
_KERNEL_CHOLESKY_MAX_N = 24
# Up to this size the kernel may switch from coordinate descent to Newton steps (compiled
# Cholesky): after _KERNEL_NEWTON_AFTER sweeps, when the last two sweeps together cut the
# budget error by less than _KERNEL_NEWTON_RATE.  On realistic correlations two sweeps cut
# it 15-100 times and coordinate descent is cheaper to the end (a Newton step costs 3-7
# sweeps at n = 5-20); on an ill-conditioned one they barely move it and Newton's quadratic
# convergence wins.
_KERNEL_NEWTON_MAX_N = 24
_KERNEL_NEWTON_AFTER = 3
_KERNEL_NEWTON_RATE = 0.1
# Sweeps over which the contraction of the budget error is measured, and the first sweep
# at which the kernel may give up because that rate cannot reach ``tol`` within the budget.
_RATE_WINDOW = 4
_RATE_FIRST_CHECK = 8
_LARGEST_FLOAT = float(np.finfo(np.float64).max)
_NO_BUDGET = np.empty(0, dtype=np.float64)
# Unit roundoffs of binary32 and binary64, and binary32's smallest normal number.
_U32 = 2.0**-24
_U64 = 2.0**-53
_TINY32 = float(np.finfo(np.float32).tiny)
# Largest |entry| of a correlation matrix computed in float64 from a positive definite
# covariance: |corr_ij| < 1 exactly, and each computed entry a_ij (v_i v_j) is within 2 roundings.
_CORRELATION_LIMIT = 1.0 + 2.0**-49
# LAPACK ?potrf through numba's wrapper of scipy's LAPACK (the function behind numba's
# np.linalg.cholesky), called on a buffer the kernel fills itself.
_spotrf = _numba_lapack().numba_xxpotrf(numba_types.float32)
_KIND_FLOAT32 = ord("s")
_LOWER = ord("L")

if numba_config.DISABLE_JIT:  # plain Python: numba's LAPACK wrapper is compiled code only

    def _spotrf_upper_rows(y: npt.NDArray[np.float32]) -> int:
        """LAPACK ``spotrf`` in place on the C-ordered ``y``'s upper triangle (the lower
        triangle of ``y.T`` in Fortran order): its ``info``, 0 iff every pivot is positive."""
        return int(_scipy_spotrf(y.T, lower=1, clean=0, overwrite_a=1)[1])

else:

    @njit(cache=True, nogil=True)
    def _spotrf_upper_rows(y: npt.NDArray[np.float32]) -> int:  # pragma: no cover - compiled
        """LAPACK ``spotrf`` in place on the C-ordered ``y``'s upper triangle (the lower
        triangle of ``y.T`` in Fortran order): its ``info``, 0 iff every pivot is positive."""
        n = y.shape[0]
        return _spotrf(_KIND_FLOAT32, _LOWER, n, y.ctypes, n)


@njit(cache=True, nogil=True)
def _cholesky_succeeds(a: FloatArray) -> bool:  # pragma: no cover - compiled
    """Unblocked in-place Cholesky ``a = R'R`` (``R`` upper, stored in ``a``'s upper
    triangle); ``True`` iff every pivot is positive, i.e. ``a`` is positive definite."""
    n = a.shape[0]
    for j in range(n):
        pivot = a[j, j]
        for k in range(j):
            pivot -= a[k, j] * a[k, j]
        if not pivot > 0.0:
            return False
        r = math.sqrt(pivot)
        a[j, j] = r
        for i in range(j + 1, n):
            s = a[j, i]
            for k in range(j):
                s -= a[k, j] * a[k, i]
            a[j, i] = s / r
    return True


@njit(cache=True, nogil=True)
def _ldl_succeeds(a: FloatArray) -> bool:  # pragma: no cover - compiled
    """In-place ``a = L D L'`` (the square-root-free Cholesky factorisation; ``D L'`` is
    stored in ``a``'s upper triangle, the strict lower triangle is not read); ``True`` iff
    every pivot ``d_k`` is positive, i.e. ``a`` is positive definite (``d_k`` is the
    square of the Cholesky pivot ``r_kk``).

    Right-looking by rows: row ``k`` of ``D L'`` scaled by ``1 / d_k`` is subtracted from
    each row below as a contiguous AXPY that vectorises; one division per row instead of
    one per entry and no square root (at n = 48, 13 µs instead of 15-20 µs for
    :func:`_cholesky_succeeds`).
    """
    n = a.shape[0]
    columns = np.uint64(n)  # unsigned indices: no negative-index wraparound, so loops vectorise
    for k in range(n):
        pivot = a[k, k]
        if not pivot > 0.0:
            return False
        inverse = 1.0 / pivot
        a_k = a[k]
        for i in range(k + 1, n):
            f = a_k[i] * inverse
            a_i = a[i]
            for j in range(np.uint64(i), columns):
                a_i[j] -= f * a_k[j]
    return True


@njit(cache=True, nogil=True)
def _is_positive_definite(a: FloatArray, inv_vols: FloatArray) -> bool:  # pragma: no cover
    """Cholesky test of the symmetric ``a`` (not modified); ``inv_vols`` is
    ``1 / sqrt(diag a)``.

    Up to ``_KERNEL_CHOLESKY_MAX_N`` the compiled unblocked Cholesky factorisation (in its
    square-root-free form, :func:`_ldl_succeeds`) of the correlation matrix ``a / (s s')``; above, first the float32 certificate
    (:func:`_certifies_positive_definite`, about half the time), and only if it proves
    nothing LAPACK ``dpotrf`` on ``a`` itself (numba's ``np.linalg.cholesky``, given the
    F-ordered view ``a.T``, which is ``a`` and is copied without a transposition), whose
    verdict stands.  ``a`` is positive definite iff its correlation matrix is (congruent by a
    positive diagonal).
    """
    n = a.shape[0]
    if n <= _KERNEL_CHOLESKY_MAX_N:
        corr = np.empty((n, n))
        for i in range(n):  # the upper triangle, all the Cholesky reads
            v = inv_vols[i]
            a_i, corr_i = a[i], corr[i]
            for j in range(i, n):
                corr_i[j] = a_i[j] * (v * inv_vols[j])
        return _ldl_succeeds(corr)
    if _certifies_positive_definite(a, inv_vols):
        return True
    try:
        np.linalg.cholesky(a.T)  # LAPACK dpotrf on a copy
    except Exception:  # numpy.linalg.LinAlgError: a pivot is not positive
        return False
    return True


@njit(cache=True, nogil=True)
def _certificate_shift(n: int) -> float:  # pragma: no cover - compiled
    """Shift ``c`` of :func:`_certifies_positive_definite` (derivation there): about
    ``n**2 * 2**-24``, 1.5e-4 at n = 50 and 2.4e-3 at n = 200."""
    g = (n + 2) * _U32 / (1.0 - (n + 2) * _U32)  # Higham's gamma_{n+2} in binary32
    trace = n * _CORRELATION_LIMIT * (1.0 + _U32)  # >= trace of the float32 matrix
    cholesky = g / (1.0 - g) * trace  # >= ||R'R - Y||_2
    conversion = n * _CORRELATION_LIMIT * (_U32 + 4.0 * _U64)  # >= ||Y - (corr - c I)||_F
    underflow = n * (n + 2) * _TINY32  # absolute errors of (gradual or flushed) underflow
    return (cholesky + conversion + underflow) * (1.0 + 2.0**-20)  # covers this sum's roundings


@njit(cache=True, nogil=True)
def _certifies_positive_definite(a: FloatArray, inv_vols: FloatArray) -> bool:  # pragma: no cover
    """``True`` only if the symmetric ``a`` is positive definite, proved by a Cholesky
    factorisation in binary32 of its shifted correlation matrix; ``False`` proves nothing.

    LAPACK ``spotrf`` (called in place on the one triangle it reads) on
    ``Y = fl32(D a D) - c I``, ``D = diag(inv_vols)``, ``c = _certificate_shift(n)``: about
    half the time of the float64 ``dpotrf`` test (twice the SIMD lanes, half the memory).
    ``False`` when a pivot is not positive (``a`` indefinite, or positive definite with a
    smallest correlation eigenvalue below about ``c``) or some ``|corr_ij|`` exceeds
    :data:`_CORRELATION_LIMIT` (impossible if ``a`` is positive definite); the caller then
    runs the float64 test, whose verdict stands.

    Proof (after S. M. Rump, "Verification of positive definiteness", BIT 46, 2006).  Let
    ``M = D a D`` exactly.  (1) Every entry of ``Y`` is within ``(u32 + 4 u64) L`` of
    ``M - c I`` (``L`` the limit above: two float64 roundings in ``M``, one in the shift, one
    float32 conversion), so ``||Y - (M - cI)||_2 <= ||.||_F <= n (u32 + 4 u64) L``.  (2) A
    Cholesky factorisation in binary32 that runs to completion, with its inner products in any
    order and without fast (Strassen-like) products -- blocked and recursive LAPACK/BLAS
    included -- returns ``R`` with ``R'R = Y + E``, ``|E| <= gamma_{n+1} |R'||R|`` (Demmel;
    Higham, *Accuracy and Stability of Numerical Algorithms*, 2nd ed., Thm 10.3); we take
    ``gamma_{n+2}`` for a division done as a product by a rounded reciprocal.  By
    Cauchy-Schwarz on the columns ``r_i`` of ``R``, ``|| |R'||R| ||_2 <= sum_i ||r_i||^2 =
    tr(Y + E)``, hence ``||E||_2 <= gamma/(1 - gamma) tr(Y)``, and ``tr(Y) <= n L (1 + u32)``.
    Underflow adds at most ``n + 2`` times the smallest normal to each entry.  (3) ``R`` has a
    positive diagonal, so ``R'R`` is positive definite and ``lambda_min(M) > c - ||E||_2 -
    ||Y - (M - cI)||_2 - underflow >= 0`` for the ``c`` of :func:`_certificate_shift`.  ``M``
    is congruent to ``a``, which is therefore positive definite.
    """
    n = a.shape[0]
    shift = _certificate_shift(n)
    y = np.empty((n, n), dtype=np.float32)
    too_large = 0
    for i in range(n):  # the upper triangle of y, the lower one of y in Fortran order
        v = inv_vols[i]
        a_i, y_i = a[i], y[i]
        diagonal = a_i[i] * (v * v)
        too_large += abs(diagonal) > _CORRELATION_LIMIT
        y_i[i] = diagonal - shift
        # Unsigned indices: no negative-index wraparound, so the loop vectorises.
        for j in range(np.uint64(i + 1), np.uint64(n)):
            m = a_i[j] * (v * inv_vols[j])
            too_large += abs(m) > _CORRELATION_LIMIT  # a is finite: no NaN here
            y_i[j] = m
    if too_large:
        return False
    # LAPACK spotrf in place, on the triangle written above: no copy of y, no finiteness scan
    # and no zeroing of the other triangle, as np.linalg.cholesky would do.  0: every pivot
    # positive; > 0: a pivot is not; < 0 (an invalid argument, impossible here): no proof.
    return _spotrf_upper_rows(y) == 0


@njit(cache=True, nogil=True)
def _asymmetry(a: FloatArray) -> float:  # pragma: no cover - compiled
    """:math:`\\sum_{i<j} (a_{ij} - a_{ji})^2`: ``0`` iff ``a`` is exactly symmetric, and
    NaN or ``inf`` if an off-diagonal entry is (or a difference overflows).

    Four rows at a time with four accumulators, so that the strided reads of the
    transposed entries are independent scalar loads (about one pass over ``a``;
    a vectorising compiler would turn them into gathers, three to four times slower).
    """
    n = a.shape[0]
    s0 = s1 = s2 = s3 = 0.0
    m = n - n % 4
    for i in range(0, m, 4):
        for p in range(i, i + 4):  # the 4 x 4 diagonal block
            for q in range(p + 1, i + 4):
                d = a[p, q] - a[q, p]
                s0 += d * d
        for j in range(i + 4, n):
            d0 = a[i, j] - a[j, i]
            d1 = a[i + 1, j] - a[j, i + 1]
            d2 = a[i + 2, j] - a[j, i + 2]
            d3 = a[i + 3, j] - a[j, i + 3]
            s0 += d0 * d0
            s1 += d1 * d1
            s2 += d2 * d2
            s3 += d3 * d3
    for p in range(m, n):
        for q in range(p + 1, n):
            d = a[p, q] - a[q, p]
            s0 += d * d
    return (s0 + s1) + (s2 + s3)


@njit(cache=True, nogil=True)
def _compensated_sum(a: FloatArray) -> float:  # pragma: no cover - compiled
    """Neumaier's compensated sum: error ~1 ulp of the total whatever ``a.size``
    (a plain loop commits up to ``n`` ulps, numpy's pairwise sum ~log2 n)."""
    total = 0.0
    carry = 0.0
    for v in a:
        t = total + v
        if abs(total) >= abs(v):
            carry += (total - t) + v
        else:
            carry += (v - t) + total
        total = t
    return total + carry


@njit(cache=True, nogil=True)
def _budget_error(x: FloatArray, sx: FloatArray, b: FloatArray) -> float:  # pragma: no cover
    """:math:`\\max_i |x_i (\\Sigma x)_i - (x^\\top \\Sigma x) b_i| / x^\\top \\Sigma x`,
    i.e. max |RRC - b|; ``inf`` unless :math:`x^\\top \\Sigma x > 0` (possible only if
    :math:`\\Sigma` is not positive definite)."""
    variance = 0.0
    for i in range(x.size):
        variance += x[i] * sx[i]
    if not variance > 0.0:
        return math.inf
    error = 0.0
    for i in range(x.size):
        e = abs(x[i] * sx[i] - variance * b[i])
        if e > error:
            error = e
    return error / variance


@njit(cache=True, nogil=True)
def _symv(a: FloatArray, x: FloatArray, out: FloatArray) -> None:  # pragma: no cover
    """``out = a @ x`` for a symmetric ``a``, as the sum of its rows scaled by ``x``:
    contiguous AXPYs that vectorise (row dot products are a serial reduction)."""
    n = x.size
    for i in range(n):
        out[i] = 0.0
    for j in range(n):
        xj = x[j]
        for i in range(n):
            out[i] += xj * a[j, i]


@njit(cache=True, nogil=True)
def _newton_step(
    a: FloatArray,
    inv_vols: FloatArray,
    b: FloatArray,
    y: FloatArray,
    cy: FloatArray,
    h: FloatArray,
    d: FloatArray,
) -> bool:  # pragma: no cover - compiled
    """Newton direction of Spinu's objective in correlation space: ``d = H^{-1} g`` with
    ``g = Cy - b/y``, ``H = C + diag(b/y^2)`` and ``C = a / (s s')`` (Cholesky in ``h``);
    ``False`` if ``H`` is not numerically positive definite.  The Newton iterate is
    ``y - d``."""
    n = y.size
    for i in range(n):
        d[i] = cy[i] - b[i] / y[i]
        for j in range(n):
            h[i, j] = a[i, j] * (inv_vols[i] * inv_vols[j])
        h[i, i] = 1.0 + b[i] / (y[i] * y[i])
    if not _cholesky_succeeds(h):  # h = R'R, R upper
        return False
    for i in range(n):  # R' z = g
        s = d[i]
        for k in range(i):
            s -= h[k, i] * d[k]
        d[i] = s / h[i, i]
    for i in range(n - 1, -1, -1):  # R d = z
        s = d[i]
        for k in range(i + 1, n):
            s -= h[i, k] * d[k]
        d[i] = s / h[i, i]
    return True


@njit(cache=True, nogil=True)
def _ccd_kernel_into(
    cov: FloatArray, budget: FloatArray, out: FloatArray, tol: float, max_sweeps: int, check_pd: bool
) -> tuple[int, float, int, float]:  # pragma: no cover - compiled
    """Validate, solve by cyclical coordinate descent and decompose risk, in one call.

    Parameters
    ----------
    cov : FloatArray, shape (n, n), C-contiguous
        Covariance as given (not yet symmetrised); never written.
    budget : FloatArray, shape (n,) or (0,)
        Risk budget as given, or empty for the equal budget ``1/n``.
    out : FloatArray, shape (4, n), C-contiguous
        Receives the result (see Returns); any content on entry.
    tol : float
        Target of :math:`\\max_i |RRC_i - b_i|`, certified at the returned weights
        :math:`w` with an exactly recomputed :math:`\\Sigma w` (the sweeps update
        :math:`\\Sigma x` incrementally): ``error <= tol`` whenever ``status`` is
        ``_KERNEL_OK``.
    max_sweeps : int
        Maximum number of coordinate-descent sweeps.
    check_pd : bool
        Test positive definiteness (Cholesky).

    Returns
    -------
    (status, sigma, sweeps, error)
        ``status``: ``_KERNEL_OK``, ``_KERNEL_INVALID`` (some check of
        ``_validate_covariance`` / ``_validate_budget`` fails) or
        ``_KERNEL_SLOW``.  For ``_KERNEL_OK``: ``out`` holds (rows) the
        weights, the normalised budget, the relative and the absolute risk
        contributions; ``sigma`` the volatility, ``error`` the achieved
        :math:`\\max_i |RRC_i - b_i|`.  ``sweeps`` is the number of sweeps.
        The array is filled by the kernel rather than returned by it: handing
        a new array back to Python costs more than the whole solve at n ~ 5.
    """
    n = cov.shape[0]
    # One allocation for the working vectors: vols, 1/vols, x, Σx (see _ccd_solve), then the
    # ring buffer of the last _RATE_WINDOW budget errors.
    work = np.empty(4 * n + _RATE_WINDOW)
    vols, inv_vols = work[:n], work[n : 2 * n]
    # The checks of _validate_covariance and _validate_budget; any failure sends the call to
    # the reference path, which raises the documented error (so their order is irrelevant).
    scale = 0.0
    for i in range(n):
        d = cov[i, i]
        if not (d > 0.0 and d <= _LARGEST_FLOAT):  # Cholesky fails at this pivot at the latest
            return _KERNEL_INVALID, 0.0, 0, 0.0
        scale = max(scale, d)
        vols[i] = math.sqrt(d)
        inv_vols[i] = 1.0 / vols[i]
    # Finiteness and symmetry of the off-diagonal entries in one pass.  The symmetry limit
    # is relative to the largest variance, not to max |Σ_ij| as in _validate_covariance:
    # never looser (equal for a positive semi-definite Σ), and a stricter failure only
    # costs the reference path; so is the sum of squares against the largest difference.
    asymmetry = _asymmetry(cov)
    limit = _SYMMETRY_RTOL * scale
    if not asymmetry <= limit * limit:  # NaN: a non-finite entry
        return _KERNEL_INVALID, 0.0, 0, 0.0
    if asymmetry == 0.0:
        return _ccd_solve(cov, work, budget, tol, max_sweeps, check_pd, out)
    symmetric = np.empty((n, n))
    for i in range(n):
        for j in range(n):
            symmetric[i, j] = (cov[i, j] + cov[j, i]) * 0.5
    return _ccd_solve(symmetric, work, budget, tol, max_sweeps, check_pd, out)


@njit(cache=True, nogil=True)
def _ccd_solve(
    a: FloatArray,
    work: FloatArray,
    budget: FloatArray,
    tol: float,
    max_sweeps: int,
    check_pd: bool,
    out: FloatArray,
) -> tuple[int, float, int, float]:  # pragma: no cover - compiled
    """:func:`_ccd_kernel_into` after the covariance checks, on the exactly symmetric ``a``;
    ``work`` (shape (4 n + _RATE_WINDOW,)) holds the volatilities and their inverses in its
    first ``2 n`` entries.

    Notes
    -----
    Algorithm: Griveau-Billion, Richard & Roncalli [7]_ on Spinu's objective in
    correlation space, :math:`f(y) = \\tfrac12 y^\\top C y - b^\\top \\ln y` with
    :math:`C = \\Sigma / (s s^\\top)`, :math:`y = s x`.  Minimising :math:`f`
    exactly in coordinate :math:`i` (:math:`C_{ii} = 1`) is the positive root of
    :math:`y_i^2 + c_i y_i - b_i = 0` with :math:`c_i = (Cy)_i - y_i`; after it
    :math:`Cy` changes by a multiple of row :math:`i` of :math:`C`, so a sweep
    costs :math:`O(n^2)`.  :math:`C` is never formed: the kernel keeps
    :math:`x` and :math:`\\Sigma x` (``(Cy)_i = (\\Sigma x)_i / s_i``) and
    updates the latter with row :math:`i` of :math:`\\Sigma` itself, one
    contiguous AXPY per coordinate.  Coordinate-wise exact minimisation is
    invariant to the diagonal change of variables, so the iterates are those
    of the correlation-space method; the scalar updates are made in
    correlation space, where the quadratic is well scaled.  Cyclical
    coordinate descent converges for this strictly convex, coordinate-wise
    smooth objective; on realistic (factor-model) correlations each sweep
    cuts the budget error about tenfold.  The error is checked after every
    sweep; if the contraction measured over the last ``_RATE_WINDOW`` sweeps
    cannot reach ``tol`` within ``max_sweeps``, the kernel stops early with
    ``_KERNEL_SLOW``.
    """
    n = a.shape[0]
    vols, inv_vols = work[:n], work[n : 2 * n]
    x, sx = work[2 * n : 3 * n], work[3 * n : 4 * n]  # x = y / s and Σx
    history = work[4 * n :]  # errors of the last sweeps, a ring buffer
    if check_pd and not _is_positive_definite(a, inv_vols):
        return _KERNEL_INVALID, 0.0, 0, 0.0
    b = out[1]
    if budget.size == 0:
        b[:] = 1.0 / n
    else:
        for i in range(n):
            if not (budget[i] > 0.0 and budget[i] <= _LARGEST_FLOAT):
                return _KERNEL_INVALID, 0.0, 0, 0.0
        total = _compensated_sum(budget)
        if abs(total - 1.0) > _BUDGET_SUM_ATOL:
            return _KERNEL_INVALID, 0.0, 0, 0.0
        for i in range(n):
            b[i] = budget[i] / total

    # Start: one step of the fixed-point map y_i <- b_i / (Cy)_i of Chaves et al. [4]_ from
    # y = b, when every (Cb)_i > 0 (the usual, positively correlated case; otherwise y = b),
    # scaled to y'Cy = 1 (the scale of the solution); exact for a diagonal or constant
    # correlation with equal budgets.  It costs one product with Σ and saves about one
    # sweep on realistic correlations.  In x = y / s: u = b / s, (Cb)_i = (Σu)_i / s_i, so
    # the map gives x_i = b_i / (Σu)_i.
    for i in range(n):
        x[i] = b[i] * inv_vols[i]
    _symv(a, x, sx)
    positive = True
    for i in range(n):
        positive = positive and sx[i] > 0.0
    if positive:
        for i in range(n):
            x[i] = b[i] / sx[i]
        _symv(a, x, sx)
    variance = 0.0
    for i in range(n):
        variance += x[i] * sx[i]
    start = 1.0 / math.sqrt(variance)
    for i in range(n):
        x[i] *= start
        sx[i] *= start
    error = _budget_error(x, sx, b)
    newton = n <= _KERNEL_NEWTON_MAX_N
    sweeps = 0  # sweeps and Newton steps
    certify = error <= tol
    while True:
        if certify:
            # Certify at the weights returned: their risk decomposition with an exactly
            # computed Σw (the sweeps update Σx incrementally), which is the result itself.
            sigma, w_error = _decompose(a, x, sx, b, out)
            if not sigma > 0.0:  # w'Σw <= 0: only without the positive-definiteness test
                return _KERNEL_INVALID, 0.0, sweeps, 0.0
            if w_error <= tol:
                return _KERNEL_OK, sigma, sweeps, w_error
            _symv(a, x, sx)  # not yet: resume from an exact Σx
            error = _budget_error(x, sx, b)
            certify = False
        if sweeps >= max_sweeps:
            break
        history[sweeps % _RATE_WINDOW] = error
        if (
            newton
            and sweeps >= _KERNEL_NEWTON_AFTER
            and error > _KERNEL_NEWTON_RATE * history[(sweeps - 2) % _RATE_WINDOW]
        ):
            # Small n: a Newton step (one n x n Cholesky) costs about one sweep and
            # converges quadratically; kept only if it lowers the (exact) error.
            sweeps += 1
            # The Newton workspace: allocated per step, off the common path.
            hessian = np.empty((n, n))
            trial = np.empty((5, n))
            gradient, y, cy, x_trial, sx_trial = trial[0], trial[1], trial[2], trial[3], trial[4]
            for i in range(n):
                y[i] = x[i] * vols[i]
                cy[i] = sx[i] * inv_vols[i]
            if _newton_step(a, inv_vols, b, y, cy, hessian, gradient):
                for i in range(n):
                    x_trial[i] = (y[i] - gradient[i]) * inv_vols[i]
                    newton = newton and x_trial[i] > 0.0
            else:
                newton = False
            if newton:
                _symv(a, x_trial, sx_trial)
                trial_error = _budget_error(x_trial, sx_trial, b)
                if trial_error < error:
                    x[:] = x_trial
                    sx[:] = sx_trial
                    error = trial_error
                    certify = error <= tol
                    continue
                newton = False
            continue  # the step was not taken: coordinate descent from here
        for i in range(n):
            y_old = x[i] * vols[i]
            c = sx[i] * inv_vols[i] - y_old
            root = math.sqrt(c * c + 4.0 * b[i])
            # Positive root of y^2 + c y - b_i, without cancellation for c > 0.
            y_new = 2.0 * b[i] / (c + root) if c > 0.0 else 0.5 * (root - c)
            x_new = y_new * inv_vols[i]
            step = x_new - x[i]
            x[i] = x_new
            for j in range(n):  # Σ symmetric: row i is column i
                sx[j] += step * a[i, j]
        sweeps += 1
        error = _budget_error(x, sx, b)
        certify = error <= tol
        if not certify and sweeps >= _RATE_FIRST_CHECK:
            rate = error / history[sweeps % _RATE_WINDOW]  # over the last _RATE_WINDOW sweeps
            if not rate < 1.0:
                break  # no progress: round-off floor or a hard problem
            if rate > 0.0 and (
                sweeps + _RATE_WINDOW * math.log(tol / error) / math.log(rate) > max_sweeps
            ):
                break
    return _KERNEL_SLOW, 0.0, sweeps, 0.0


@njit(cache=True, nogil=True)
def _decompose(
    a: FloatArray, x: FloatArray, sw: FloatArray, b: FloatArray, out: FloatArray
) -> tuple[float, float]:  # pragma: no cover - compiled
    """Weights ``w = x / sum(x)`` into ``out[0]``, :math:`RRC_i = w_i (\\Sigma w)_i / w'\\Sigma w`
    and :math:`RC_i = RRC_i \\sigma` into ``out[2]`` and ``out[3]`` (``sw`` receives
    :math:`\\Sigma w`); returns :math:`(\\sigma, \\max_i |RRC_i - b_i|)`, or ``(0, inf)`` if
    :math:`w'\\Sigma w \\le 0`."""
    n = x.size
    w = out[0]
    total = _compensated_sum(x)
    for i in range(n):
        w[i] = x[i] / total
    _symv(a, w, sw)
    variance = 0.0
    for i in range(n):
        variance += w[i] * sw[i]
    if not variance > 0.0:
        return 0.0, math.inf
    sigma = math.sqrt(variance)
    rrc, rc = out[2], out[3]
    error = 0.0
    for i in range(n):
        rrc[i] = w[i] * sw[i] / variance
        rc[i] = rrc[i] * sigma
        e = abs(rrc[i] - b[i])
        if e > error:
            error = e
    return sigma, error


def _ccd_kernel(
    cov: FloatArray, budget: FloatArray, tol: float, max_sweeps: int, check_pd: bool
) -> tuple[int, FloatArray, float, int, float]:
    """:func:`_ccd_kernel_into` with a new output array: ``(status, out, sigma, sweeps, error)``."""
    out = np.empty((4, cov.shape[0]))
    status, sigma, sweeps, error = _ccd_kernel_into(cov, budget, out, tol, max_sweeps, check_pd)
    return status, out, sigma, sweeps, error


# The compiled kernel for exactly the argument types the public call passes (C-contiguous
# float64 arrays, float, int, bool), called without the dispatcher's per-call type resolution
# (~1 µs, a fifth of a call at n ~ 5).  Set by the first call (_first_kernel_call).
_KERNEL_ENTRY: list[Callable[..., tuple[int, float, int, float]] | None] = [None]


def _announce_first_compile() -> None:
    """Logs one line before the first call compiles the kernel (no on-disk cache yet).

    numba compiles ``_ccd_kernel_into`` on its first call (about 10 s on a 2-core machine) and
    writes the machine code to its cache; later processes load it in milliseconds. The cache
    index is looked up where numba keeps it; if numba lays its cache out differently, nothing
    is logged.
    """
    cache = getattr(_ccd_kernel_into, "_cache", None)
    index = getattr(getattr(cache, "_cache_file", None), "_index_path", None)
    if index is not None and not os.path.exists(index):
        logging.getLogger(__name__).warning("compiling the solver kernel once, ~10 s (cached for later runs)")


def _compiled_entry_point() -> Callable[..., tuple[int, float, int, float]] | None:
    """The kernel's compiled entry point for the wrapper's argument types, if available.

    ``np.ascontiguousarray(..., dtype=np.float64)`` guarantees the array types except
    writeability; the kernel never writes its inputs, so a read-only array is safe too.
    ``None`` (keep using the dispatcher) if this numba version lays the dispatcher out
    differently.
    """
    matrix = numba_types.Array(numba_types.float64, 2, "C")
    signature = (
        matrix,
        numba_types.Array(numba_types.float64, 1, "C"),
        matrix,
        numba_types.float64,
        numba_types.int64,
        numba_types.boolean,
    )
    compiled = getattr(_ccd_kernel_into, "overloads", {}).get(signature)
    return getattr(compiled, "entry_point", None)


def _first_kernel_call(
    cov: FloatArray, budget: FloatArray, out: FloatArray, tol: float, max_sweeps: int, check_pd: bool
) -> tuple[int, float, int, float]:
    """:func:`_ccd_kernel_into` through numba's dispatcher (which compiles it, or loads it from
    the cache), then keeps its compiled entry point in ``_KERNEL_ENTRY`` for later calls (the
    dispatcher itself if there is none, e.g. with ``NUMBA_DISABLE_JIT=1``)."""
    _announce_first_compile()
    result = _ccd_kernel_into(cov, budget, out, tol, max_sweeps, check_pd)
    _KERNEL_ENTRY[0] = _compiled_entry_point() or _ccd_kernel_into
    return result
