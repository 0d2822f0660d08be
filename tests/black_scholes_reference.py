"""Black-Scholes in arbitrary precision (Python's ``decimal``, 60 significant digits by default).

The reference against which the on-chain fixed-point library (``contracts/BlackScholes.sol``) is checked
and from which ``tools/black_scholes_coefficients.py`` derives its approximations. ``decimal``'s ``exp``,
``ln`` and ``sqrt`` are correctly rounded at the context precision; the normal tail is computed here:

* ``|x| < 5``: Φ(x) = ½ + φ(x)·Σₙ x^(2n+1)/(1·3·…·(2n+1)) (Abramowitz & Stegun 26.2.11), a series of
  positive terms summed until a term is below 10^-(prec+5) of the sum; the tail Q(x) = 1 − Φ(x) loses at
  most 7 of the 60 digits to cancellation there (Q(5) ≈ 2.9e-7);
* ``|x| ≥ 5``: Laplace's continued fraction Q(x) = φ(x) / (x + 1/(x + 2/(x + 3/(x + …)))) (A&S 26.2.14),
  evaluated from the back with 600 levels, whose truncation error at x ≥ 5 is far below 1e-40 relative
  (checked against the series at the switch by ``tests/test_black_scholes.py``).

Every value is exact to well over 30 significant digits, which makes the reference's own error negligible
next to the 1e-18 resolution of the fixed point checked against it.
"""

from __future__ import annotations

from decimal import Decimal, getcontext, localcontext
from functools import lru_cache
from fractions import Fraction

PREC = 60
SERIES_LIMIT = Decimal(5)
CF_LEVELS = 600
SECONDS_PER_YEAR = 365 * 86400
WAD = 10**18


def _pi() -> Decimal:
    """π at the current precision (Machin's formula)."""
    with localcontext() as ctx:
        ctx.prec += 10

        def arctan_inv(n: int) -> Decimal:
            x = Decimal(1) / n
            x2 = x * x
            term, total, k = x, x, 1
            while True:
                term *= -x2
                add = term / (2 * k + 1)
                if abs(add) < Decimal(10) ** -(ctx.prec + 2):
                    break
                total += add
                k += 1
            return total

        value = 4 * (4 * arctan_inv(5) - arctan_inv(239))
    return +value


def inv_sqrt_2pi() -> Decimal:
    """1/√(2π) at the current precision."""
    return _inv_sqrt_2pi(getcontext().prec)


@lru_cache(maxsize=8)
def _inv_sqrt_2pi(prec: int) -> Decimal:
    with localcontext() as ctx:
        ctx.prec = prec
        return 1 / (2 * _pi()).sqrt()


def _series_cdf(x: Decimal) -> Decimal:
    """Φ(x) by the everywhere-convergent series (A&S 26.2.11)."""
    x2 = x * x
    term = x
    total = x
    n = 0
    eps = Decimal(10) ** -(getcontext().prec + 5)
    while True:
        n += 1
        term = term * x2 / (2 * n + 1)
        total += term
        if abs(term) < eps * abs(total) or term == 0:
            break
    return Decimal("0.5") + (-x2 / 2).exp() * inv_sqrt_2pi() * total


def _cf_upper_tail(x: Decimal) -> Decimal:
    """Q(x) = 1 − Φ(x) for x ≥ 5 by Laplace's continued fraction (A&S 26.2.14)."""
    b = x
    for k in range(CF_LEVELS, 0, -1):
        b = x + k / b
    return (-x * x / 2).exp() * inv_sqrt_2pi() / b


def upper_tail(x: Decimal | float | int) -> Decimal:
    """Q(x) = 1 − Φ(x) = Φ(−x), to the module's precision."""
    with localcontext() as ctx:
        ctx.prec = PREC
        x = Decimal(x)
        if x >= SERIES_LIMIT:
            return _cf_upper_tail(x)
        if x <= -SERIES_LIMIT:
            return 1 - _cf_upper_tail(-x)
        return 1 - _series_cdf(x)


def cdf(x: Decimal | float | int) -> Decimal:
    """Φ(x), the standard normal CDF."""
    return upper_tail(-Decimal(x))


def mills_ratio(x: Decimal | float | int) -> Decimal:
    """Q(x)·e^(x²/2) for x ≥ 0: the function the on-chain CDF approximates (Q = e^(−x²/2) × it)."""
    with localcontext() as ctx:
        ctx.prec = PREC
        x = Decimal(x)
        return upper_tail(x) * (x * x / 2).exp()


def pdf(x: Decimal | float | int) -> Decimal:
    with localcontext() as ctx:
        ctx.prec = PREC
        x = Decimal(x)
        return (-x * x / 2).exp() * inv_sqrt_2pi()


def _dec(value: int | Fraction) -> Decimal:
    value = Fraction(value)
    return Decimal(value.numerator) / Decimal(value.denominator)


def black_scholes_wad(spot_wad: int, strike_wad: int, seconds: int, vol_wad: int, rate_wad: int) -> dict[str, Decimal]:
    """Exact Black-Scholes values of the library's integer inputs, in quote units (not scaled).

    Inputs as the contract takes them: spot and strike 1e18 fixed point, seconds to expiry, volatility and
    rate 1e18 = 100 % (annualised, year of 365 days). τ = seconds / 31,536,000 exactly.
    Returns call, put, call_delta, put_delta, gamma (per quote unit), vega (per 1.00 volatility), and (τ > 0)
    d1, d2.
    """
    with localcontext() as ctx:
        ctx.prec = PREC
        s = _dec(Fraction(spot_wad, WAD))
        k = _dec(Fraction(strike_wad, WAD))
        sigma = _dec(Fraction(vol_wad, WAD))
        r = _dec(Fraction(rate_wad, WAD))
        tau = _dec(Fraction(seconds, SECONDS_PER_YEAR))
        kd = k * (-r * tau).exp()
        if seconds == 0:
            call = max(s - k, Decimal(0))
            put = max(k - s, Decimal(0))
            return {"call": call, "put": put, "call_delta": Decimal(int(s > k)), "put_delta": Decimal(int(s > k)) - 1,
                    "gamma": Decimal(0), "vega": Decimal(0)}
        sd = sigma * tau.sqrt()
        d1 = ((s / k).ln() + r * tau) / sd + sd / 2
        d2 = d1 - sd
        n1, n2 = cdf(d1), cdf(d2)
        call = s * n1 - kd * n2
        put = kd * cdf(-d2) - s * cdf(-d1)
        phi = pdf(d1)
        return {
            "call": call,
            "put": put,
            "call_delta": n1,
            "put_delta": n1 - 1,
            "gamma": phi / (s * sd),
            "vega": s * phi * tau.sqrt(),
            "d1": d1,
            "d2": d2,
        }
