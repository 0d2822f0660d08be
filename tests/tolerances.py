"""Floating-point tolerances derived from error analysis, shared by the tests.

Two computations of the same quantity by different paths (NumPy vs ``math``, the compiled kernel vs
NumPy, a closed form vs a library, Solidity fixed point vs float) differ by the rounding errors of
each path, amplified by the condition number of what is computed. A tolerance here is such a bound:
a count of roundings times the unit roundoff, times a condition number the test computes from its
own inputs, never a number tuned until a test passed on one CPU. Each test that uses one says in a
comment which bound applies and why.

Sources: N. J. Higham, *Accuracy and Stability of Numerical Algorithms*, 2nd ed. (SIAM, 2002):
unit roundoff and the constant gamma_n (§2.2, Lemma 3.1), summation (§4.2), inner products (§3.1).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import erfcx
from scipy.stats import norm

#: Unit roundoff of IEEE-754 binary64 (round to nearest): |fl(x op y) - (x op y)| <= U |x op y|.
U = 2.0**-53

#: Largest error, in units of the last place, of an elementary function (exp, log) on either path
#: we compare: glibc's double exp/log are within 1 ulp; NumPy's float64 SIMD exp/log (AVX512F,
#: dispatched at run time by CPU model) were published with maximum errors of 2.52 and 3.83 ulp
#: (NumPy 1.20 release notes). sqrt is correctly rounded everywhere. One ulp of x is at most 2 U |x|.
ELEMENTARY_ULPS = 4

#: Bound on the relative error of the complementary error function as implemented by the libraries
#: we use (``math.erfc`` through the C library, ``scipy.special.ndtr``/``erfc`` from Cephes/xsf):
#: Cephes documents a peak relative error of 5.7e-14 for erfc on [0, 26.6] (its test range; beyond
#: it the result underflows). We take that figure for both paths.
ERFC_RELATIVE_ERROR = 5.7e-14


def gamma(n: int) -> float:
    """Higham's gamma_n = n U / (1 - n U): the relative error bound of ``n`` chained roundings."""
    if n < 0:
        raise ValueError(f"gamma(n) needs n >= 0, got {n}")
    return n * U / (1.0 - n * U)


def sum_rtol(n_terms: int, condition: float = 1.0) -> float:
    """Relative error bound of a sum of ``n_terms`` computed in any order (Higham eq. 4.4):
    ``gamma(n - 1) * sum|x_i| / |sum x_i|``; pass that ratio as ``condition`` (1 for same-sign terms).

    Two paths that sum in different orders (NumPy's pairwise sum vs a loop) differ by at most twice it.
    """
    return gamma(max(n_terms - 1, 0)) * condition


def dot_rtol(n_terms: int, condition: float = 1.0) -> float:
    """Relative error bound of an inner product of length ``n_terms`` (Higham eq. 3.5): ``gamma(n)``
    times ``sum|x_i y_i| / |sum x_i y_i|``, passed as ``condition``."""
    return gamma(n_terms) * condition


def quadratic_form_rtol(n: int, condition: float = 1.0) -> float:
    """Relative error bound of a quadratic/bilinear form ``x' A y`` of order ``n`` computed as
    ``x . (A y)`` (a matrix-vector product, then an inner product) in any summation order:
    ``fl(A y) = (A + dA) y`` with ``|dA| <= gamma(n)|A|`` (Higham eq. 3.11), then the dot adds
    ``gamma(n)``; ``(1 + gamma(n))^2 - 1 <= gamma(2n)`` (Lemma 3.3), so the error is at most
    ``gamma(2n) |x|'|A||y|``. Pass ``|x|'|A||y| / |x' A y|`` (:func:`quadratic_form_condition`)
    as ``condition``; it is 1 when every term is >= 0."""
    return gamma(2 * n) * condition


def quadratic_form_condition(x, a, y=None) -> float:
    """``|x|'|A||y| / |x' A y|`` (``y = x`` by default): the condition of a quadratic form, i.e.
    how much cancellation among its ``n^2`` terms amplifies their rounding errors."""
    import numpy as np

    x = np.asarray(x, dtype=float)
    a = np.asarray(a, dtype=float)
    y = x if y is None else np.asarray(y, dtype=float)
    return float(np.abs(x) @ np.abs(a) @ np.abs(y) / abs(x @ a @ y))


def matvec_condition(a, x) -> float:
    """``max_i (|A||x|)_i / |(A x)_i|``: the componentwise condition of a matrix-vector product,
    the worst amplification of the ``gamma(n)`` rounding of each component (Higham eq. 3.11)."""
    import numpy as np

    a = np.asarray(a, dtype=float)
    x = np.asarray(x, dtype=float)
    return float(np.max((np.abs(a) @ np.abs(x)) / np.abs(a @ x)))


def risk_contribution_rtol(weights, covariance) -> float:
    """Relative error bound of ONE evaluation of the risk decomposition at ``weights``: the
    portfolio volatility ``sigma = sqrt(w' S w)``, ``RC_i = w_i (S w)_i / sigma`` and
    ``RRC_i = w_i (S w)_i / (w' S w)``, in any summation order (NumPy/BLAS, the compiled kernel):
    ``(S w)_i`` is a length-n inner product, ``gamma(n) * matvec_condition``; ``w' S w`` a
    quadratic form, ``gamma(2n) * quadratic_form_condition`` (halved by the square root, and
    entering ``RC = RRC * sigma`` once more: 1.5 times); at most 5 further roundings (the
    product, the square root, sigma*sigma or *sigma, the division, the final scaling).
    Two paths differ by at most twice it."""
    n = len(weights)
    return (
        dot_rtol(n, matvec_condition(covariance, weights))
        + 1.5 * quadratic_form_rtol(n, quadratic_form_condition(weights, covariance))
        + 5 * U
    )


#: Bound on the relative error of the inverse normal CDF ``scipy.special.ndtri`` (Cephes ndtri.c, which
#: ``scipy.stats.norm.ppf`` calls): peak relative error 7.2e-16 on [0.125, 1] and 4.6e-16 on
#: [3e-308, 0.135] in Cephes' IEEE tests. ``ndtri(1 - a)`` and ``-ndtri(a)`` are two evaluations
#: (different rational approximations), so they may differ by twice it.
NDTRI_RELATIVE_ERROR = 7.2e-16


def covariance_atol(returns, weights=None, *, demean: bool = True, correction: float | None = None,
                    weight_rtol: float = U):
    """Per-entry absolute error bound of ONE evaluation of a (weighted) two-pass covariance
    c_ij = sum_t w_t d_ti d_tj / correction, d = r - (weighted mean), in any summation order: each term
    has <= 3 roundings (the centring, two products), the N-term sum gamma(N - 1), the division U; the
    error of the mean enters only to second order (sum_t w_t d_t = 0; Higham §1.9), and the weights'
    own relative error ``weight_rtol`` scales every term. So |error| <= (gamma(N + 4) + weight_rtol) times
    sum_t w_t |d_ti| |d_tj| / correction. ``weights`` default: 1/N (np.cov), correction 1 - sum w^2
    (= (N - 1)/N unweighted; pass 1.0 for the maximum-likelihood 1/N estimate)."""
    n_obs = returns.shape[0]
    w = np.full(n_obs, 1.0 / n_obs) if weights is None else np.asarray(weights, float) / np.sum(weights)
    d = np.abs(returns - w @ returns) if demean else np.abs(returns)
    if correction is None:
        correction = 1.0 - float(w @ w)
    return (d.T * w) @ d / correction * (gamma(n_obs + 4) + weight_rtol)


def ewma_weight_rtol(n_obs: int, half_life: float) -> float:
    """Relative error bound of normalised EWMA weights 2^(-age/h) computed as exp(age * (-ln2/h)) or
    0.5 ** (age/h): the argument's 2 roundings amplified by its size (<= (N - 1) ln2 / h), exp/pow
    (ELEMENTARY_ULPS), the N-term normalising sum (gamma(N - 1)) and the division."""
    return (ELEMENTARY_ULPS + 2 * (n_obs - 1) * math.log(2) / half_life + n_obs + 1) * U


def assert_entries_within(actual, expected, atol) -> None:
    """|actual - expected| <= atol entry by entry (atol an array of derived per-entry bounds)."""
    diff = np.abs(np.asarray(actual) - np.asarray(expected))
    excess = np.divide(diff, atol, out=np.zeros_like(diff), where=diff > 0)  # 0/0 (exact zeros) is fine
    assert np.all(excess <= 1.0), f"worst entry at {excess.max():.3g} x its bound"


def black_scholes_two_path_bounds(S: float, K: float, T: float, sigma: float, r: float, q: float, is_call: bool) -> dict[str, float]:
    """First-order bound on |scalar path - array path| (absolute, in each output's units) for each output
    of ``keeper.options.greeks`` (used by the options, hedging and Black-Scholes contract tests).

    The two paths evaluate the same formulas on the same doubles. They differ where they call different
    implementations: ``math.log``/``math.exp`` vs NumPy's (each within ``ELEMENTARY_ULPS`` ulp, so the
    two differ by up to ``2 * ELEMENTARY_ULPS`` ulp <= ``4 * ELEMENTARY_ULPS * U`` relative) and
    ``math.erfc`` vs ``scipy.special.ndtr`` for N(d) (each within ``ERFC_RELATIVE_ERROR``). Every
    arithmetic step is correctly rounded on both paths but may round differently once its inputs differ
    (at most ``2 U`` relative between the paths per step). Those differences are propagated with the
    condition number of each step: through d = (ln(S/K) + (r - q) T) / v + v / 2 into every N(d),
    n(d) and e^{-d^2/2} (relative sensitivity n(d)/N(d) and |d| per unit of d), and through the sums
    where terms cancel (the price S e^{-qT} N(d1) - K e^{-rT} N(d2), theta's three terms, and the
    erfcx difference of the out-of-the-money tail formula).
    """
    E = 4 * ELEMENTARY_ULPS * U  # relative difference of exp/log between the paths
    v = sigma * math.sqrt(T)  # identical on both paths (sqrt and * correctly rounded, same inputs)
    sign = 1.0 if is_call else -1.0
    log_fk = math.log(S / K) + (r - q) * T
    d1 = log_fk / v + 0.5 * v
    d2 = d1 - v
    # Absolute difference of d1 and d2: ln(S/K) differs by E relative; the sum, the division, the
    # half-v sum and d1 - v each round (2 U relative to their result, all below the same scale).
    delta_d = E * abs(math.log(S / K)) / v + 8 * U * ((abs(math.log(S / K)) + abs((r - q) * T)) / v + v)
    # The 1/sqrt2 scaling of the erfc argument rounds once more: U |d| on the argument.
    delta_d_arg = delta_d + U * max(abs(d1), abs(d2))

    def cdf_rel(d: float) -> float:  # N(sign d): implementations + argument sensitivity n(d)/N(sign d)
        hazard = math.exp(norm.logpdf(d) - norm.logcdf(sign * d))
        return 2 * ERFC_RELATIVE_ERROR + 4 * U + hazard * delta_d_arg

    def gauss_rel(d: float) -> float:  # e^{-d^2/2}: exp + argument sensitivity |d| + rounding of d*d/2
        return E + abs(d) * delta_d + 2 * U * d * d + 2 * U

    df_q_rel = E + 2 * U * abs(q * T)
    df_r_rel = E + 2 * U * abs(r * T)
    n1, n2 = norm.cdf(sign * d1), norm.cdf(sign * d2)
    pdf = norm.pdf(d1)
    fq, fr = math.exp(-q * T), math.exp(-r * T)
    n1_rel, n2_rel, pdf_rel = cdf_rel(d1), cdf_rel(d2), gauss_rel(d1)
    bounds = {
        "delta": fq * n1 * (df_q_rel + n1_rel + 4 * U),
        "gamma": fq * pdf / (S * v) * (df_q_rel + pdf_rel + 8 * U),
        "vega": S * fq * pdf * math.sqrt(T) * (df_q_rel + pdf_rel + 8 * U),
        "rho": K * T * fr * n2 * (df_r_rel + n2_rel + 6 * U),
    }
    if max(sign * d1, sign * d2) < 0.0:  # the switch of keeper.options._in_tail
        # Tail formula: V = sign K e^{-rT} e^{-d2^2/2} [erfcx(a) - erfcx(b)] / 2 with a = -sign d1/sqrt2,
        # b = -sign d2/sqrt2. scipy's erfcx is the same compiled function on both paths, so only the
        # argument difference propagates, through erfcx'(x) = 2 x erfcx(x) - 2/sqrt(pi), plus the
        # rounding of the subtraction, both relative to the (possibly small) difference D.
        a, b = -sign * d1 / math.sqrt(2.0), -sign * d2 / math.sqrt(2.0)
        ea, eb = float(erfcx(a)), float(erfcx(b))
        slope = abs(2 * a * ea - 2 / math.sqrt(math.pi)) + abs(2 * b * eb - 2 / math.sqrt(math.pi))
        d_rel = (slope * delta_d_arg / math.sqrt(2.0) + 4 * U * (ea + eb)) / abs(ea - eb)
        price = 0.5 * K * fr * math.exp(-0.5 * d2 * d2) * abs(ea - eb)
        bounds["price"] = price * (df_r_rel + gauss_rel(d2) + d_rel + 8 * U)
    else:
        term1, term2 = S * fq * n1, K * fr * n2
        price = abs(term1 - term2)
        bounds["price"] = term1 * (df_q_rel + n1_rel + 4 * U) + term2 * (df_r_rel + n2_rel + 4 * U) + 2 * U * price
    carry = abs(q * S * fq * n1)
    rate = abs(r * K * fr * n2)
    diffusion = S * fq * pdf * sigma / (2.0 * math.sqrt(T))
    theta = abs(sign * (q * S * fq * n1 - r * K * fr * n2) - diffusion)
    bounds["theta"] = (
        carry * (df_q_rel + n1_rel + 6 * U) + rate * (df_r_rel + n2_rel + 6 * U) + diffusion * (df_q_rel + pdf_rel + 10 * U)
        + 4 * U * theta
    )
    return bounds
