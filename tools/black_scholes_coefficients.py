"""Derives the approximation constants of ``contracts/BlackScholes.sol`` and prints them with their errors.

Run from the repository root::

    .venv/bin/python tools/black_scholes_coefficients.py

Everything is computed in Python's ``decimal`` at 60 digits against ``tests/black_scholes_reference.py``
(no float64 anywhere in a fit), then rounded to the library's binary fixed point (Q96: value × 2^96)
and evaluated again **in the same integer arithmetic the contract uses** (floor shifts, truncating
divisions), so the printed errors are those of the on-chain functions, fitting and rounding included.

1. ``e^(−f)`` for |f| ≤ ln2/2 after the reduction y = k·ln2 + f: the (6, 6) Padé approximant
   e^x ≈ N(x)/N(−x), N(x) = Σ_{j≤6} (12−j)!·6! / (12!·j!·(6−j)!) xʲ (exact rational coefficients; error
   (6!)²/(12!·13!)·|f|¹³ ≈ 1.8e-19 relative at the interval's end).
2. ``ln(m)`` for m ∈ [1/√2, √2]: z = (m−1)/(m+1), ln m = 2z·g(z²) with g(w) = atanh(√w)/√w approximated
   by a relative-minimax rational function of w on [0, (3 − 2√2)²].
3. The normal tail: Q(x) = e^(−x²/2)·M(x) for 0 ≤ x ≤ 9, where M(x) = Q(x)·e^(x²/2) (the Mills ratio over
   √(2π)) is approximated by a relative-minimax rational function P(x)/R(x) with P(0)/R(0) = 1/2 exactly.

Rational fits: Lawson's iteratively reweighted least squares (the linearised problem
P(xᵢ) − f(xᵢ)·R(xᵢ) = 0 weighted by 1/(f·R_previous), weights multiplied by the error each round), which
converges towards the minimax (equioscillating) solution; the maximum error is measured afterwards on a
dense grid, never assumed.
"""

from __future__ import annotations

import math
import sys
from decimal import Decimal, localcontext
from fractions import Fraction
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import black_scholes_reference as ref  # noqa: E402

PREC = 60
Q = 96
ONE = 1 << Q


def dec(x: int | Fraction | Decimal) -> Decimal:
    if isinstance(x, Fraction):
        return Decimal(x.numerator) / Decimal(x.denominator)
    return Decimal(x)


def solve(a: list[list[Decimal]], b: list[Decimal]) -> list[Decimal]:
    """Gaussian elimination with partial pivoting (square system)."""
    n = len(b)
    m = [row[:] + [bi] for row, bi in zip(a, b)]
    for c in range(n):
        p = max(range(c, n), key=lambda r: abs(m[r][c]))
        m[c], m[p] = m[p], m[c]
        for r in range(c + 1, n):
            f = m[r][c] / m[c][c]
            if f:
                for j in range(c, n + 1):
                    m[r][j] -= f * m[c][j]
    x = [Decimal(0)] * n
    for r in range(n - 1, -1, -1):
        x[r] = (m[r][n] - sum(m[r][j] * x[j] for j in range(r + 1, n))) / m[r][r]
    return x


def horner(coeffs: list[Decimal], x: Decimal) -> Decimal:
    """Σ coeffs[j]·xʲ (lowest degree first)."""
    acc = Decimal(0)
    for c in reversed(coeffs):
        acc = acc * x + c
    return acc


def fit_rational(f, lo: Decimal, hi: Decimal, m: int, n: int, nodes: int = 240, rounds: int = 60,
                 p0: Decimal | None = None):
    """Relative-minimax-like rational P/R (deg m, deg n, R(0) = 1) for f on [lo, hi], by Lawson's IRLS.

    The fit runs in t = (x − lo)/(hi − lo) ∈ [0, 1] for conditioning; the returned coefficients are in
    powers of t, with the map (lo, hi). ``p0`` fixes P(0) (then P(lo)/R(lo) = p0 exactly).
    """
    with localcontext() as ctx:
        ctx.prec = PREC
        ts = [(1 - Decimal(math.cos(math.pi * (i + 0.5) / nodes))) / 2 for i in range(nodes)]
        xs = [lo + (hi - lo) * t for t in ts]
        fs = [Decimal(f(x)) for x in xs]
        w = [Decimal(1) / nodes] * nodes
        rprev = [Decimal(1)] * nodes
        best = None
        for _ in range(rounds):
            rows = []
            rhs = []
            for t, fx, rp, wi in zip(ts, fs, rprev, w):
                scale = wi.sqrt() / (fx * rp)
                first = 0 if p0 is None else 1
                row = [t**k * scale for k in range(first, m + 1)] + [-fx * t**j * scale for j in range(1, n + 1)]
                rows.append(row)
                rhs.append((fx if p0 is None else fx - p0) * scale)
            k = len(rows[0])
            ata = [[sum(r[i] * r[j] for r in rows) for j in range(k)] for i in range(k)]
            atb = [sum(r[i] * b for r, b in zip(rows, rhs)) for i in range(k)]
            c = solve(ata, atb) if p0 is None else [p0] + solve(ata, atb)
            p, r = c[: m + 1], [Decimal(1)] + c[m + 1 :]
            errs = [abs(horner(p, t) / horner(r, t) / fx - 1) for t, fx in zip(ts, fs)]
            emax = max(errs)
            if best is None or emax < best[0]:
                best = (emax, p, r)
            rprev = [horner(r, t) for t in ts]
            w = [wi * e for wi, e in zip(w, errs)]
            total = sum(w)
            w = [wi / total for wi in w]
        return best


def to_x_coefficients(coeffs: list[Decimal], lo: Decimal, hi: Decimal) -> list[Decimal]:
    """Coefficients in powers of t = (x − lo)/(hi − lo) → in powers of x (lo must be 0)."""
    assert lo == 0
    return [c / (hi - lo) ** k for k, c in enumerate(coeffs)]


def quantize(coeffs: list[Decimal], scale: Decimal = Decimal(1)) -> list[int]:
    with localcontext() as ctx:
        ctx.prec = PREC
        return [int((c * scale * ONE).to_integral_value()) for c in coeffs]


def sar(x: int, k: int) -> int:
    return x >> k  # Python's >> on negative ints floors, as the EVM's SAR


def sdiv(a: int, b: int) -> int:
    """EVM SDIV: truncation toward zero."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


def horner_int(coeffs: list[int], x: int) -> int:
    acc = coeffs[-1]
    for c in reversed(coeffs[:-1]):
        acc = sar(acc * x, Q) + c
    return acc


# --------------------------------------------------------------------------- exp


def pade_exp_coefficients() -> list[Fraction]:
    n = 6
    return [Fraction(math.factorial(2 * n - j) * math.factorial(n),
                     math.factorial(2 * n) * math.factorial(j) * math.factorial(n - j)) for j in range(n + 1)]


# --------------------------------------------------------------------------- main

LN_DEGREES = (3, 3)
MILLS_DEGREES = (8, 9)
D_CLAMP = 9


def solidity_constants(name: str, values: list[int]) -> list[str]:
    return [f"    int256 private constant {name}{j} = {v};" for j, v in enumerate(values)]


def main() -> None:
    lines = derive(verbose=True)
    print("\n".join(lines))


def constants() -> dict[str, int]:
    """Name → integer value of every constant the library declares from this derivation."""
    out = {}
    for line in derive(verbose=False):
        name, value = line.split("constant ")[1].rstrip(";").split(" = ")
        out[name] = int(value)
    return out


def derive(verbose: bool) -> list[str]:
    """The Solidity constant declarations; with ``verbose``, each step's coefficients and errors printed."""
    print_ = print if verbose else (lambda *a, **k: None)
    with localcontext() as ctx:
        ctx.prec = PREC
        out: list[str] = []

        print_("1. exp(-f), |f| <= ln2/2: (6, 6) Pade, N(x) = sum c_j x^j, c_j in Q96")
        pade = pade_exp_coefficients()
        pq = [int(dec(c) * ONE + Decimal("0.5")) for c in pade]
        for j, c in enumerate(pade):
            print_(f"   c{j} = {c}")
        worst = Decimal(0)
        half_ln2 = Decimal(2).ln() / 2
        for i in range(-200, 201):
            f = half_ln2 * i / 200
            fi = int(f * ONE)
            f2 = sar(fi * fi, Q)
            u = pq[0] + sar(f2 * (pq[2] + sar(f2 * (pq[4] + sar(f2 * pq[6], Q)), Q)), Q)
            v = pq[1] + sar(f2 * (pq[3] + sar(f2 * pq[5], Q)), Q)
            fv = sar(fi * v, Q)
            got = Decimal((u - fv) << 128) / Decimal(u + fv) / Decimal(2**128)
            worst = max(worst, abs(got / (-dec(Fraction(fi, ONE))).exp() - 1))
        print_(f"   max rel err of the integer evaluation on 401 points: {worst:.3e}")
        out += solidity_constants("EXP_C", pq)

        m, n = LN_DEGREES
        wmax = (3 - 2 * Decimal(2).sqrt()) ** 2
        print_(f"2. ln: g(w) = atanh(sqrt w)/sqrt w, ({m},{n}) rational in w on [0, {wmax:.6f}]")

        def g(w: Decimal) -> Decimal:
            if w == 0:
                return Decimal(1)
            z = w.sqrt()
            return ((1 + z) / (1 - z)).ln() / (2 * z)

        emax, p, r = fit_rational(g, Decimal(0), wmax, m, n, nodes=80, rounds=40)
        pi_, ri = quantize(to_x_coefficients(p, Decimal(0), wmax)), quantize(to_x_coefficients(r, Decimal(0), wmax))
        print_(f"   fit: max rel err on the nodes {emax:.3e}")
        worst = Decimal(0)
        for i in range(2001):
            mm = Decimal(2).sqrt() / 2 + (Decimal(2).sqrt() - Decimal(2).sqrt() / 2) * i / 2000
            mi = int(mm * ONE)
            z = sdiv((mi - ONE) << Q, mi + ONE)
            w = sar(z * z, Q)
            got = sar(2 * z * sdiv(horner_int(pi_, w) << Q, horner_int(ri, w)), Q)
            worst = max(worst, abs(Decimal(got) / ONE - dec(Fraction(mi, ONE)).ln()))
        print_(f"   max |ln err| of the integer evaluation on 2,001 points of [1/sqrt2, sqrt2]: {worst:.3e}")
        out += solidity_constants("LN_P", pi_) + solidity_constants("LN_Q", ri)

        m, n = MILLS_DEGREES
        print_(f"3. Mills ratio M(x) = Q(x) e^(x^2/2), ({m},{n}) rational in x on [0, {D_CLAMP}]")
        # M(0) = 1/2 exactly (P(0) = 2^95 in Q96): at-the-money N(d1) − N(d2) = −e^(−d1²/2)·M(|d1|) −
        # e^(−d2²/2)·M(|d2|) + 1 adds the two errors of M near 0 instead of cancelling them.
        emax, p, r = fit_rational(ref.mills_ratio, Decimal(0), Decimal(D_CLAMP), m, n, nodes=200, rounds=40,
                                  p0=Decimal("0.5"))
        print_(f"   fit: max rel err on the nodes {emax:.3e}")
        pi_ = quantize(to_x_coefficients(p, Decimal(0), Decimal(D_CLAMP)))
        ri = quantize(to_x_coefficients(r, Decimal(0), Decimal(D_CLAMP)))
        worst = Decimal(0)
        for i in range(1801):
            x = Decimal(D_CLAMP) * i / 1800
            xi = int(x * ONE)
            got = Decimal((horner_int(pi_, xi) << 80) // horner_int(ri, xi)) / Decimal(2**80)
            worst = max(worst, abs(got / ref.mills_ratio(dec(Fraction(xi, ONE))) - 1))
        print_(f"   max rel err of the integer evaluation (result in Q80) on 1,801 points: {worst:.3e}")
        out += solidity_constants("MILLS_P", pi_) + solidity_constants("MILLS_Q", ri)

        print_("4. other constants (Q96)")
        for name, value in (("LN2", Decimal(2).ln()), ("INV_LN2", 1 / Decimal(2).ln()), ("SQRT2", Decimal(2).sqrt()),
                            ("INV_SQRT_YEAR", 1 / Decimal(ref.SECONDS_PER_YEAR).sqrt())):
            out.append(f"    int256 private constant {name}_Q96 = {int((value * ONE).to_integral_value())};")
        out.append(f"    int256 private constant INV_SQRT_2PI_WAD = {int((ref.inv_sqrt_2pi() * 10**18).to_integral_value())};")
        return out


if __name__ == "__main__":
    main()
