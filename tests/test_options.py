"""Black-Scholes-Merton prices, Greeks and implied volatility (keeper.options).

Reference values come from three independent places: an independent library (``vollib``, whose
prices use Jaeckel's "Let's Be Rational" and whose analytical Greeks are scaled per 1 % of vol
and rate and per day), central finite differences of our own price, and model identities
(put-call parity, the implied-volatility round trip, the delta-strike round trip).
"""

from __future__ import annotations

import itertools
import math
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import log_ndtr, ndtr
from scipy.stats import norm
from vollib.black_scholes_merton import black_scholes_merton as vollib_price
from vollib.black_scholes_merton.greeks import analytical as vollib_greeks
from vollib.black_scholes_merton.implied_volatility import implied_volatility as vollib_iv

from keeper import options
from keeper.errors import KeeperError, OptionInputError, SolverDidNotConvergeError
from tolerances import ELEMENTARY_ULPS, ERFC_RELATIVE_ERROR, U, black_scholes_two_path_bounds, gamma

SPOTS = (50.0, 100.0, 30_000.0)
MONEYNESS = (0.5, 0.8, 0.95, 1.0, 1.05, 1.25, 2.0)
TENORS = (1 / 365, 7 / 365, 30 / 365, 0.5, 2.0)
VOLS = (0.05, 0.3, 0.8, 1.5)
RATES = ((0.0, 0.0), (0.05, 0.0), (0.03, 0.01), (-0.01, 0.02))


def _grid():
    rows = list(itertools.product(SPOTS, MONEYNESS, TENORS, VOLS, RATES, (True, False)))
    s = np.array([r[0] for r in rows])
    k = s * np.array([r[1] for r in rows])
    t = np.array([r[2] for r in rows])
    v = np.array([r[3] for r in rows])
    r = np.array([r[4][0] for r in rows])
    q = np.array([r[4][1] for r in rows])
    c = np.array([r[5] for r in rows])
    return s, k, t, v, r, q, c


# --------------------------------------------------------------------------- #
# Against vollib
# --------------------------------------------------------------------------- #
def test_price_and_greeks_match_vollib_on_a_grid():
    s, k, t, v, r, q, c = _grid()
    ours = options.greeks(s, k, t, v, r, q, c)
    for i in range(s.size):
        flag = "c" if c[i] else "p"
        args = (flag, s[i], k[i], t[i], r[i], v[i], q[i])
        ref_price = vollib_price(*args)
        # Prices: relative 1e-9 (tails far below 1e-300 of S are not in this grid), absolute 1e-12 S.
        assert ours.price[i] == pytest.approx(ref_price, rel=1e-9, abs=1e-12 * s[i]), args
        assert ours.delta[i] == pytest.approx(vollib_greeks.delta(*args), rel=1e-9, abs=1e-14), args
        assert ours.gamma[i] == pytest.approx(vollib_greeks.gamma(*args), rel=1e-9, abs=1e-18), args
        # vollib: vega and rho per 1 % (x0.01), theta per day (/365). Convert theirs back.
        assert ours.vega[i] == pytest.approx(vollib_greeks.vega(*args) * 100.0, rel=1e-9, abs=1e-12 * s[i]), args
        assert ours.rho[i] == pytest.approx(vollib_greeks.rho(*args) * 100.0, rel=1e-9, abs=1e-12 * s[i]), args
        assert ours.theta[i] == pytest.approx(vollib_greeks.theta(*args) * 365.0, rel=1e-9, abs=1e-10 * s[i]), args


@pytest.mark.parametrize(
    "S, K, T, sigma, is_call",
    [
        (100.0, 300.0, 0.01, 0.5, True),  # price ~ 1e-107
        (100.0, 30.0, 0.02, 0.5, False),
        (100.0, 100.01, 1e-6, 0.01, True),  # d ~ -10 at v = 1e-5
        (40_000.0, 80_000.0, 7 / 365, 0.6, True),
        (40_000.0, 20_000.0, 7 / 365, 0.6, False),
    ],
)
def test_deep_out_of_the_money_prices_keep_relative_precision(S, K, T, sigma, is_call):
    ref = vollib_price("c" if is_call else "p", S, K, T, 0.03, sigma, 0.01)
    ours = options.price(S, K, T, sigma, 0.03, 0.01, is_call)
    assert 0.0 < ref < 1e-6 * S
    assert ours == pytest.approx(ref, rel=1e-10)


# --------------------------------------------------------------------------- #
# Central finite differences
# --------------------------------------------------------------------------- #
option_inputs = st.tuples(
    st.floats(10.0, 100_000.0),  # S
    st.floats(0.6, 1.6),  # K / S
    st.floats(5 / 365, 3.0),  # T
    st.floats(0.1, 1.5),  # sigma
    st.floats(-0.02, 0.08),  # r
    st.floats(-0.02, 0.05),  # q
    st.booleans(),
)


@settings(max_examples=200, deadline=None)
@given(option_inputs)
def test_greeks_match_central_finite_differences(inputs):
    S, m, T, sigma, r, q, is_call = inputs
    K = S * m
    g = options.greeks(S, K, T, sigma, r, q, is_call)

    def p(**bump):
        args = dict(S=S, K=K, T=T, sigma=sigma, r=r, q=q, is_call=is_call)
        args.update(bump)
        return float(options.price(**args))

    # Steps on the natural scale of the price curve, S sigma sqrt(T), keep truncation ~ step^2.
    width = S * sigma * math.sqrt(T)
    hs = 1e-4 * width
    fd_delta = (p(S=S + hs) - p(S=S - hs)) / (2 * hs)
    hd = 1e-5 * width
    fd_gamma_from_delta = (
        float(options.delta(S + hd, K, T, sigma, r, q, is_call)) - float(options.delta(S - hd, K, T, sigma, r, q, is_call))
    ) / (2 * hd)
    hs2 = 1e-2 * width  # second difference: truncation ~ (hs2/width)^2, rounding ~ eps * price / hs2^2
    fd_gamma = (p(S=S + hs2) - 2 * p() + p(S=S - hs2)) / hs2**2
    hv = 1e-5
    fd_vega = (p(sigma=sigma + hv) - p(sigma=sigma - hv)) / (2 * hv)
    ht = 1e-6
    fd_theta = -(p(T=T + ht) - p(T=T - ht)) / (2 * ht)
    hr = 1e-6
    fd_rho = (p(r=r + hr) - p(r=r - hr)) / (2 * hr)

    scale = S  # absolute tolerances relative to the price scale
    assert g.delta == pytest.approx(fd_delta, rel=1e-6, abs=1e-8)
    assert g.gamma == pytest.approx(fd_gamma_from_delta, rel=1e-6, abs=1e-9 / S)
    assert g.gamma == pytest.approx(fd_gamma, rel=1e-3, abs=1e-6 / S + 1e-14 * S / hs2**2)
    assert g.vega == pytest.approx(fd_vega, rel=1e-6, abs=1e-8 * scale)
    assert g.theta == pytest.approx(fd_theta, rel=1e-5, abs=1e-7 * scale)
    assert g.rho == pytest.approx(fd_rho, rel=1e-5, abs=1e-7 * scale)


@settings(max_examples=200, deadline=None)
@given(option_inputs)
def test_put_call_parity(inputs):
    S, m, T, sigma, r, q, _ = inputs
    K = S * m
    call = options.greeks(S, K, T, sigma, r, q, True)
    put = options.greeks(S, K, T, sigma, r, q, False)
    forward_value = S * math.exp(-q * T) - K * math.exp(-r * T)
    # Each price is S e^{-qT} N(+-d1) - K e^{-rT} N(+-d2) (or the tail form, more accurate still): N within
    # ERFC_RELATIVE_ERROR, e^{-qT}, e^{-rT}, ln(S/K) within ELEMENTARY_ULPS each, and n(d) * (error of d)
    # <= max|x n(x)| * (a few U) since d's error is a few U times |d|. The two prices' absolute errors add,
    # so the parity residual is bounded by their scale S e^{-qT} + K e^{-rT}, whatever the cancellation.
    scale = S * math.exp(-q * T) + K * math.exp(-r * T)
    parity_abs = scale * (2 * ERFC_RELATIVE_ERROR + 8 * (ELEMENTARY_ULPS + 4) * U)
    assert call.price - put.price == pytest.approx(forward_value, rel=0, abs=parity_abs)
    # N(d1) + N(-d1) = 1: each within ERFC_RELATIVE_ERROR (plus the shared d, which cancels to first
    # order since n(d1) appears with opposite signs), times e^{-qT} (ELEMENTARY_ULPS) and two roundings.
    delta_rel = 2 * ERFC_RELATIVE_ERROR + 4 * ELEMENTARY_ULPS * U + gamma(2)
    assert call.delta - put.delta == pytest.approx(math.exp(-q * T), rel=delta_rel)
    # Same path: gamma and vega do not depend on the option's sign, so they are computed identically.
    assert call.gamma == put.gamma
    assert call.vega == put.vega
    assert call.rho - put.rho == pytest.approx(K * T * math.exp(-r * T), rel=1e-10)
    # d/dt of the forward value S e^{-qT} - K e^{-rT} is q S e^{-qT} - r K e^{-rT}.
    assert call.theta - put.theta == pytest.approx(q * S * math.exp(-q * T) - r * K * math.exp(-r * T), rel=1e-9, abs=1e-10 * S)


def test_greeks_function_equals_the_single_greek_functions_and_units_helpers():
    s, k, t, v, r, q, c = _grid()
    g = options.greeks(s, k, t, v, r, q, c)
    # Same path: greeks() and the single functions run the same array code on the same inputs.
    np.testing.assert_array_equal(g.price, options.price(s, k, t, v, r, q, c))
    np.testing.assert_array_equal(g.delta, options.delta(s, k, t, v, r, q, c))
    np.testing.assert_array_equal(g.gamma, options.gamma(s, k, t, v, r, q, c))
    np.testing.assert_array_equal(g.vega, options.vega(s, k, t, v, r, q, c))
    np.testing.assert_array_equal(g.theta, options.theta(s, k, t, v, r, q, c))
    np.testing.assert_array_equal(g.rho, options.rho(s, k, t, v, r, q, c))
    # Same path: theta / 365 * 365 is two roundings; vega * 0.01 * 100 three (0.01 is itself rounded).
    np.testing.assert_allclose(options.theta_per_day(s, k, t, v, r, q, c) * 365.0, g.theta, rtol=gamma(2))
    np.testing.assert_allclose(g.theta_per_day * 365.0, g.theta, rtol=gamma(2))
    np.testing.assert_allclose(g.vega_per_point * 100.0, g.vega, rtol=gamma(3))


# Below the normal range a result loses relative precision: a subnormal e^{-d^2/2} carries an absolute
# error of one subnormal spacing (2^-1074), which the following products scale by at most K e^{-rT}
# times the erfcx difference (< 1e6 on this grid).
_SUBNORMAL_ABS = 2.0**-1074 * 1e6


def test_scalar_fast_path_agrees_with_the_array_path():
    s, k, t, v, r, q, c = _grid()
    arrays = options.greeks(s, k, t, v, r, q, c)
    for i in range(0, s.size, 7):
        args = (float(s[i]), float(k[i]), float(t[i]), float(v[i]), float(r[i]), float(q[i]), bool(c[i]))
        one = options.greeks(*args)
        bounds = black_scholes_two_path_bounds(*args)
        for name in ("price", "delta", "gamma", "vega", "theta", "rho"):
            expected = float(getattr(arrays, name)[i])
            # First-order bound; the second-order remainder is at most bound^2 / |value| (relative bound squared).
            bound = bounds[name] * (1.0 + bounds[name] / max(abs(expected), _SUBNORMAL_ABS)) + _SUBNORMAL_ABS
            assert abs(float(getattr(one, name)) - expected) <= bound, (name, args, bound)
        # The single-output functions take the same fast path: bit-identical to greeks().
        assert float(options.price(*args)) == float(one.price)
    # Scalars the fast path declines (zero vol, invalid input) still get the array path's result or error.
    assert float(options.price(100.0, 90.0, 0.0, 0.3)) == 10.0
    with pytest.raises(OptionInputError, match="^K is"):
        options.greeks(100.0, -1.0, 1.0, 0.2)


def test_broadcasting_shapes_and_scalars():
    strikes = np.array([[80.0, 100.0, 120.0]])
    spots = np.array([[90.0], [110.0]])
    out = options.price(spots, strikes, 0.5, 0.4, is_call=np.array([[True], [False]]))
    assert out.shape == (2, 3)
    # The array path against the scalar fast path: the two-path bound derived above.
    one = (110.0, 120.0, 0.5, 0.4, 0.0, 0.0, False)
    assert abs(out[1, 2] - float(options.price(*one))) <= black_scholes_two_path_bounds(*one)["price"]
    scalar = options.delta(100.0, 100.0, 1.0, 0.2)
    assert isinstance(scalar, float) and 0.5 < scalar < 0.6
    assert options.greeks(100.0, 100.0, 1.0, 0.2).gamma.shape == ()


# --------------------------------------------------------------------------- #
# Limits: T = 0, sigma = 0
# --------------------------------------------------------------------------- #
def test_at_expiry_price_is_intrinsic_and_delta_a_step():
    K = np.array([90.0, 100.0, 110.0])
    calls = options.greeks(100.0, K, 0.0, 0.5, 0.05, 0.0, True)
    puts = options.greeks(100.0, K, 0.0, 0.5, 0.05, 0.0, False)
    np.testing.assert_array_equal(calls.price, [10.0, 0.0, 0.0])
    np.testing.assert_array_equal(puts.price, [0.0, 0.0, 10.0])
    np.testing.assert_array_equal(calls.delta, [1.0, 0.5, 0.0])
    np.testing.assert_array_equal(puts.delta, [0.0, -0.5, -1.0])
    for g in (calls, puts):
        np.testing.assert_array_equal(g.gamma, 0.0)
        np.testing.assert_array_equal(g.vega, 0.0)
        np.testing.assert_array_equal(g.rho, 0.0)
        assert np.isfinite(g.theta).all()


def test_zero_vol_prices_discounted_forward_intrinsic_and_is_the_small_vol_limit():
    S, T, r, q = 100.0, 0.5, 0.03, 0.03  # r == q: the forward is exactly S
    forward = S
    K = np.array([90.0, forward, 110.0])
    zero = options.greeks(S, K, T, 0.0, r, q, True)
    tiny = options.greeks(S, K, T, 1e-9, r, q, True)
    # The zero-vol price is S e^{-qT} - K e^{-rT} (NumPy's exp) against (F - K) e^{-rT} (math.exp): the
    # exponentials differ by up to 2 ELEMENTARY_ULPS ulp, and the subtraction turns that into an absolute
    # error on the scale (S + K) e^{-rT}, plus three roundings.
    zero_abs = (S + K.max()) * math.exp(-r * T) * (4 * ELEMENTARY_ULPS * U + gamma(3))
    np.testing.assert_allclose(zero.price, np.maximum(forward - K, 0.0) * math.exp(-r * T), rtol=0, atol=zero_abs)
    np.testing.assert_allclose(zero.price, tiny.price, rtol=1e-8, atol=1e-7)
    np.testing.assert_allclose(zero.delta, tiny.delta, rtol=1e-7, atol=1e-12)
    # e^{-qT} by NumPy vs math (2 ELEMENTARY_ULPS ulp apart), times N = 1 or 1/2 exactly, one rounding.
    np.testing.assert_allclose(
        zero.delta, [math.exp(-q * T), 0.5 * math.exp(-q * T), 0.0], rtol=4 * ELEMENTARY_ULPS * U + gamma(1)
    )
    np.testing.assert_allclose(zero.vega, tiny.vega, rtol=1e-7, atol=1e-12)  # S e^{-qT} sqrt(T/2pi) at the money
    np.testing.assert_allclose(zero.theta, tiny.theta, rtol=1e-7, atol=1e-6)  # diffusion term ~ sigma
    np.testing.assert_allclose(zero.rho, tiny.rho, rtol=1e-7, atol=1e-9)
    np.testing.assert_array_equal(zero.gamma, 0.0)


def test_price_is_monotone_and_bounded_deep_in_and_out_of_the_money():
    K = np.geomspace(1.0, 1e6, 400)
    c = options.price(1000.0, K, 0.25, 0.8, 0.02, 0.0, True)
    p = options.price(1000.0, K, 0.25, 0.8, 0.02, 0.0, False)
    assert (np.diff(c) <= 0).all() and (np.diff(p) >= 0).all()
    assert (c >= np.maximum(1000.0 - K * math.exp(-0.02 * 0.25), 0.0) - 1e-9).all() and (c <= 1000.0).all()
    assert (p >= 0.0).all() and (p <= K).all()


# --------------------------------------------------------------------------- #
# Invalid input
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(S=-1.0), "S"),
        (dict(S=0.0), "S"),
        (dict(K=0.0), "K"),
        (dict(K=np.array([100.0, np.nan])), "K[1]"),
        (dict(T=-0.1), "T"),
        (dict(sigma=np.array([0.2, -0.2])), "sigma[1]"),
        (dict(sigma=np.inf), "sigma"),
        (dict(r=np.nan), "r"),
        (dict(q=np.inf), "q"),
    ],
)
def test_invalid_inputs_raise_a_value_error_naming_the_argument(kwargs, name):
    args = dict(S=100.0, K=100.0, T=1.0, sigma=0.2, r=0.0, q=0.0, is_call=True)
    args.update(kwargs)
    for fn in (options.price, options.delta, options.gamma, options.vega, options.theta, options.rho, options.greeks):
        with pytest.raises(OptionInputError, match="^" + re.escape(name) + " is ") as info:
            fn(**args)
        assert isinstance(info.value, ValueError) and isinstance(info.value, KeeperError)


def test_is_call_must_be_boolean_and_shapes_must_broadcast():
    with pytest.raises(OptionInputError, match="is_call has dtype"):
        options.price(100.0, 100.0, 1.0, 0.2, is_call=np.array([1, 0]))
    with pytest.raises(OptionInputError, match="do not broadcast"):
        options.price(np.ones(2) * 100, np.ones(3) * 100, 1.0, 0.2)
    with pytest.raises(OptionInputError, match="S is"):
        options.price("abc", 100.0, 1.0, 0.2)


# --------------------------------------------------------------------------- #
# Implied volatility
# --------------------------------------------------------------------------- #
def test_implied_volatility_round_trip_across_a_grid_including_deep_otm_and_short_expiries():
    rng = np.random.default_rng(20240601)
    n = 20_000
    S = 100.0
    K = S * np.exp(rng.uniform(-2.5, 2.5, n))
    T = np.exp(rng.uniform(np.log(1 / 365 / 24), np.log(5.0), n))  # one hour to five years
    sigma = rng.uniform(0.02, 3.0, n)
    r, q = 0.03, 0.01
    c = rng.random(n) < 0.5
    p = options.price(S, K, T, sigma, r, q, c)
    iv = options.implied_volatility(p, S, K, T, r, q, c).vol
    # The time value (out-of-the-money part) carries the information: where it underflowed to 0,
    # or is below the rounding of an in-the-money price, no volatility can be recovered.
    intrinsic = np.maximum(np.where(c, 1.0, -1.0) * (S * np.exp(-q * T) - K * np.exp(-r * T)), 0.0)
    time_value = p - intrinsic
    informative = time_value > 1e-6 * np.maximum(p, 1e-300)
    informative &= p > 1e-250
    assert informative.sum() > 0.5 * n
    assert not np.isnan(iv[informative]).any()
    # Prices reproduced to 1e-10 relative (the target of the method).
    repriced = options.price(S, K[informative], T[informative], iv[informative], r, q, c[informative])
    np.testing.assert_allclose(repriced, p[informative], rtol=1e-10)
    # The vol itself to 1e-7 wherever a 1e-16 relative change of price moves vol by less than that.
    vega = options.vega(S, K, T, sigma, r, q, c)
    well_posed = informative & (vega * sigma > 1e-9 * p)
    np.testing.assert_allclose(iv[well_posed], sigma[well_posed], rtol=1e-7)


def test_implied_volatility_matches_vollib():
    cases = [(100.0, 80.0, 0.1, 0.45, "p"), (100.0, 130.0, 0.5, 0.9, "c"), (30_000.0, 31_000.0, 30 / 365, 0.6, "c")]
    for S, K, T, sigma, flag in cases:
        p = vollib_price(flag, S, K, T, 0.02, sigma, 0.0)
        assert options.implied_volatility(p, S, K, T, 0.02, 0.0, flag == "c").vol == pytest.approx(vollib_iv(p, S, K, T, 0.02, 0.0, flag), rel=1e-9)


def test_implied_volatility_status_per_option_and_vol_by_status():
    S, K, T, r = 100.0, 90.0, 0.5, 0.05
    intrinsic = S - K * math.exp(-r * T)
    OK, NO_TV, BELOW, ABOVE = (options.ImpliedVolStatus.OK, options.ImpliedVolStatus.NO_TIME_VALUE,
                               options.ImpliedVolStatus.BELOW_INTRINSIC, options.ImpliedVolStatus.ABOVE_UPPER_BOUND)
    # Deep in the money (K = 10, 0.5 y, 40 % vol): the time value ~ 1e-60 is far below one ulp of the price.
    deep_itm = options.price(S, 10.0, T, 0.4, r, 0.0, True)
    prices = np.array([intrinsic - 0.01, intrinsic, S, S + 1.0, 5.0, deep_itm, 0.0, intrinsic + 2.0])
    strikes = np.array([K, K, K, K, K, 10.0, K, K])
    calls = np.array([True, True, True, True, False, True, False, True])
    out = options.implied_volatility(prices, S, strikes, T, r, 0.0, calls)
    np.testing.assert_array_equal(out.status, [BELOW, NO_TV, ABOVE, ABOVE, OK, NO_TV, NO_TV, OK])
    np.testing.assert_array_equal(out.ok, out.status == OK)
    assert math.isnan(out.vol[0]) and math.isnan(out.vol[2]) and math.isnan(out.vol[3])
    assert out.vol[1] == 0.0 and out.vol[5] == 0.0 and out.vol[6] == 0.0  # the sigma -> 0 limit, flagged
    assert 0.0 < out.vol[4] < 1.0 and 0.0 < out.vol[7] < 1.0
    # The bounds reported are D max(F - K, 0) and S (calls), K D (puts); F = S e^{rT}, so D (F - K) = S - K D.
    assert out.lower_bound[0] == pytest.approx(intrinsic, rel=1e-15)
    assert out.upper_bound[0] == S and out.upper_bound[4] == pytest.approx(K * math.exp(-r * T), rel=1e-15)
    # A put at its upper bound K e^{-rT}; a scalar input gives scalar fields.
    put = options.implied_volatility(K * math.exp(-r * T), S, K, T, r, 0.0, False)
    assert put.status == ABOVE and math.isnan(put.vol) and np.ndim(put.vol) == 0 and np.ndim(put.status) == 0


@pytest.mark.parametrize(
    "price_, K, is_call, fragment",
    [
        (5.0, 90.0, True, "option_price is 5.0, below its discounted intrinsic value"),
        (100.0, 90.0, True, "option_price is 100.0, at or above its upper bound 100.0"),
        (0.0, 150.0, True, "option_price is 0.0, equal to its discounted intrinsic value 0.0 within rounding"),
    ],
)
def test_checked_vol_raises_naming_the_price_the_bound_and_the_status(price_, K, is_call, fragment):
    result = options.implied_volatility(price_, 100.0, K, 0.5, 0.0, 0.0, is_call)
    with pytest.raises(OptionInputError, match="^" + re.escape(fragment)) as info:
        result.checked_vol()
    assert options.ImpliedVolStatus(int(result.status)).name in str(info.value)


def test_checked_vol_names_the_first_bad_index_and_returns_the_vols_when_all_are_solved():
    good = options.price(100.0, np.array([90.0, 110.0]), 0.5, 0.6)
    result = options.implied_volatility(good, 100.0, np.array([90.0, 110.0]), 0.5)
    np.testing.assert_array_equal(result.checked_vol(), result.vol)
    grid = options.implied_volatility(np.array([[good[0], good[1]], [good[0], 200.0]]), 100.0, np.array([90.0, 110.0]), 0.5)
    with pytest.raises(OptionInputError, match=re.escape("option_price[1, 1] is 200.0") + ".*ABOVE_UPPER_BOUND.*1 of 4"):
        grid.checked_vol()


def test_implied_volatility_broadcasts_prices_against_scalars_and_mixed_shapes():
    S, r, q = 100.0, 0.03, 0.01
    strikes = np.array([[70.0, 95.0, 100.0, 130.0]])  # (1, 4)
    tenors = np.array([[0.1], [1.0], [3.0]])  # (3, 1)
    sigma = np.array([0.3, 0.6, 0.9, 1.2])  # (4,)
    prices = options.price(S, strikes, tenors, sigma, r, q, False)  # (3, 4)
    # Prices (3, 4) against scalar S, K of shape (1, 4), T of shape (3, 1); each entry equals the scalar solve.
    out = options.implied_volatility(prices, S, strikes, tenors, r, q, False)
    assert out.vol.shape == out.status.shape == (3, 4)
    for i, j in itertools.product(range(3), range(4)):
        one = options.implied_volatility(float(prices[i, j]), S, float(strikes[0, j]), float(tenors[i, 0]), r, q, False)
        assert out.vol[i, j] == one.vol  # same path on the same doubles: bit-identical
    np.testing.assert_allclose(out.vol, np.broadcast_to(sigma, (3, 4)), rtol=1e-9)
    # A 1-d array of prices against all-scalar S, K, T: the case that used to fail.
    row = options.implied_volatility(prices[1], S, 100.0, 1.0, r, q, False)
    assert row.vol.shape == (4,) and (row.status != options.ImpliedVolStatus.OK).sum() == 0
    # Prices (3, 1) against K (4,) and is_call (4,): (3, 4).
    atm = options.price(S, 100.0, 1.0, np.array([[0.2], [0.4], [0.8]]), r, q, True)
    wide = options.implied_volatility(atm, S, np.full(4, 100.0), 1.0, r, q, np.ones(4, dtype=bool))
    np.testing.assert_allclose(wide.vol, np.broadcast_to([[0.2], [0.4], [0.8]], (3, 4)), rtol=1e-12)
    with pytest.raises(OptionInputError, match=re.escape("do not broadcast") + ".*option_price\\(3,\\)"):
        options.implied_volatility(np.ones(3), S, np.full(2, 100.0), 1.0)


def _log_space_put(S: float, K: float, T: float, sigma: float, r: float, q: float) -> tuple[float, float]:
    """Reference put from an independent form, and its relative error bound.

    P = K e^{-rT} N(-d2) (1 - rho), rho = e^{x} N(-d1) / N(-d2), x = ln(F/K), evaluated in log space
    with ``scipy.special.log_ndtr`` and ``expm1``: no erfcx, no subtraction of the two price terms.
    Error: e^{-rT} within ELEMENTARY_ULPS ulp, N(-d2) within ERFC_RELATIVE_ERROR plus its sensitivity
    to d (hazard n/N times the error of d), and (1 - rho) within rho / (1 - rho) times rho's relative error.
    """
    v = sigma * math.sqrt(T)
    x = math.log(S / K) + (r - q) * T
    d1 = x / v + 0.5 * v
    d2 = d1 - v
    log_rho = x + float(log_ndtr(-d1)) - float(log_ndtr(-d2))
    value = K * math.exp(-r * T) * float(ndtr(-d2)) * -math.expm1(log_rho)
    E = 2 * ELEMENTARY_ULPS * U
    delta_d = (E + 4 * U) * (abs(math.log(S / K)) + abs((r - q) * T)) / v + 4 * U * v
    hazard = lambda d: math.exp(norm.logpdf(d) - norm.logcdf(-d))  # |d ln N(-d) / dd|
    cdf_rel = lambda d: ERFC_RELATIVE_ERROR + hazard(d) * delta_d + 2 * U
    rho = math.exp(log_rho)
    rho_rel = E + cdf_rel(d1) + cdf_rel(d2) + 4 * U
    return value, E + cdf_rel(d2) + rho / (1.0 - rho) * rho_rel + 4 * U


@pytest.mark.parametrize("total_vol", [0.5, 2.0, 10.0, 40.0, 74.0, 76.0, 80.0, 160.0, 1_000.0])
@pytest.mark.parametrize("K", [60.0, 100.0, 170.0])
def test_put_price_at_large_total_vol_matches_a_log_space_reference(total_vol, K):
    S, T, r, q = 100.0, 16.0, 0.02, 0.01
    sigma = total_vol / math.sqrt(T)
    ref, ref_rel = _log_space_put(S, K, T, sigma, r, q)
    # Ours (direct form, both N within ERFC_RELATIVE_ERROR plus the same d-sensitivity as the reference;
    # the put's larger term is >= half the price here, so the cancellation factor is <= 1 + 2 rho / (1 - rho)):
    # bounded by the reference's own bound, doubled for the subtraction. The two bounds add.
    tol = 3.0 * ref_rel
    for value in (options.price(S, K, T, sigma, r, q, False), options.price(np.array([S]), K, T, sigma, r, q, False)[0]):
        assert math.isfinite(value)
        assert value == pytest.approx(ref, rel=tol), (value, ref, tol)
    g = options.greeks(np.array([S]), K, T, sigma, r, q, False)
    assert np.isfinite([g.price, g.delta, g.gamma, g.vega, g.theta, g.rho]).all()


def test_put_price_tends_to_the_discounted_strike_as_total_vol_grows():
    # For sigma sqrt(T) >= 80 and |ln(F/K)| <= 1, N(d2) < N(-39) < 1e-300 and N(-d1) < 1e-300: the exact put
    # K e^{-rT} N(-d2) - S e^{-qT} N(-d1) is K e^{-rT} to far below one ulp. Ours: one rounding of the product
    # and NumPy's or math's exp (ELEMENTARY_ULPS ulp each side) against math.exp here.
    S, K, T, r, q = 100.0, 100.0, 16.0, 0.03, 0.01
    sigmas = np.array([20.0, 25.0, 50.0, 1e3, 1e6])  # sigma sqrt(T) from 80 to 4e6
    limit = K * math.exp(-r * T)
    rel = 4 * ELEMENTARY_ULPS * U + gamma(2)
    np.testing.assert_allclose(options.price(S, K, T, sigmas, r, q, False), limit, rtol=rel)
    assert float(options.price(S, K, T, 20.0, r, q, False)) == pytest.approx(limit, rel=rel)
    # The example of the report: at the money, r = q = 0, the put is worth the strike.
    assert float(options.price(100, 100, 16, 20, is_call=False)) == pytest.approx(100.0, rel=gamma(2))
    # Monotone in sigma up to the limit, and parity with the call (which has no such issue).
    s_grid = np.geomspace(0.01, 100.0, 400)
    puts = options.price(S, K, T, s_grid, r, q, False)
    calls = options.price(S, K, T, s_grid, r, q, True)
    assert np.isfinite(puts).all() and (np.diff(puts) >= -4 * U * limit).all() and (puts <= limit * (1 + rel)).all()
    # Parity residual: each price within a few ulp of the scale S e^{-qT} + K e^{-rT} (see test_put_call_parity).
    scale = S * math.exp(-q * T) + K * math.exp(-r * T)
    np.testing.assert_allclose(calls - puts, S * math.exp(-q * T) - limit, rtol=0,
                               atol=scale * (2 * ERFC_RELATIVE_ERROR + 8 * (ELEMENTARY_ULPS + 4) * U))


def test_implied_volatility_rejects_bad_inputs_and_reports_non_convergence():
    with pytest.raises(OptionInputError, match="^T is"):
        options.implied_volatility(1.0, 100.0, 100.0, 0.0)
    with pytest.raises(OptionInputError, match="^option_price is"):
        options.implied_volatility(-1.0, 100.0, 100.0, 1.0)
    with pytest.raises(OptionInputError, match="^option_price is"):
        options.implied_volatility(np.nan, 100.0, 100.0, 1.0)
    with pytest.raises(SolverDidNotConvergeError, match="did not converge"):
        options.implied_volatility(options.price(100.0, 150.0, 1.0, 0.4), 100.0, 150.0, 1.0, max_iter=1)


# --------------------------------------------------------------------------- #
# Strike for a target delta
# --------------------------------------------------------------------------- #
@settings(max_examples=200, deadline=None)
@given(
    st.floats(0.02, 0.95),
    st.floats(10.0, 100_000.0),
    st.floats(1 / 365, 2.0),
    st.floats(0.05, 2.0),
    st.floats(-0.02, 0.08),
    st.floats(0.0, 0.05),
    st.booleans(),
)
def test_strike_for_delta_round_trips_through_delta(abs_delta, S, T, sigma, r, q, is_call):
    target = abs_delta * math.exp(-q * T) * (1.0 if is_call else -1.0)
    K = options.strike_for_delta(target, S, T, sigma, r, q, is_call)
    assert K > 0.0
    assert options.delta(S, K, T, sigma, r, q, is_call) == pytest.approx(target, rel=1e-9, abs=1e-12)


def test_twenty_five_delta_put_is_out_of_the_money_and_bad_targets_are_refused():
    K = options.strike_for_delta(-0.25, 60_000.0, 30 / 365, 0.5, is_call=False)
    assert 50_000.0 < K < 60_000.0
    with pytest.raises(OptionInputError, match="^target_delta is"):
        options.strike_for_delta(0.25, 60_000.0, 30 / 365, 0.5, is_call=False)
    with pytest.raises(OptionInputError, match="^target_delta is"):
        options.strike_for_delta(1.0, 60_000.0, 30 / 365, 0.5, is_call=True)
    with pytest.raises(OptionInputError, match="^sigma is"):
        options.strike_for_delta(0.25, 60_000.0, 30 / 365, 0.0)
