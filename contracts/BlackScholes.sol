// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {SD59x18, sd} from "@prb/math/src/SD59x18.sol";

/// @title BlackScholes
/// @notice Black-Scholes (1973) prices and Greeks of European options in 18-decimal fixed point, with
/// `ln`, `exp` and `sqrt` from PRBMath's SD59x18 and the standard normal CDF from Hart's double-precision
/// rational approximation (Hart et al. 1968, algorithm 5666, as published by G. West, "Better
/// approximations to cumulative normal functions", Wilmott, 2005).
/// @dev Model: no dividends, continuously compounded risk-free `rate`, year of 365 days.
///   d1 = (ln(S/K) + (r + σ²/2)τ) / (σ√τ),  d2 = d1 − σ√τ,
///   call = S·N(d1) − K·e^(−rτ)·N(d2),      put = K·e^(−rτ)·N(−d2) − S·N(−d1),
///   Δcall = N(d1), Δput = N(d1) − 1, Γ = φ(d1) / (S·σ√τ), vega = S·φ(d1)·√τ.
///
/// Scales: spot, strike and prices are 1e18 fixed point in one quote unit (e.g. USD per whole
/// underlying); `volatility` and `rate` are annualised, 1e18 = 100%; `timeToExpiry` is in seconds;
/// deltas are 1e18 = 1; gamma is 1e18 fixed point per quote unit; vega is the price change per 1.00
/// (= 100 vol points) of volatility, 1e18 fixed point in quote units.
///
/// Domain (anything else reverts with `BlackScholesInputOutOfRange`):
///   spot, strike ∈ [1e12, 1e30] (1e-6 … 1e12 quote units: S/K·1e18 never rounds to zero),
///   volatility ∈ [MIN_VOLATILITY, MAX_VOLATILITY] = [0.1%, 500%],
///   timeToExpiry ∈ [0, MAX_TIME_TO_EXPIRY] = [0, 10 years], rate ∈ [0, MAX_RATE] = [0, 100%].
/// At `timeToExpiry == 0` the price is the intrinsic value and gamma and vega are zero.
///
/// Clamp: the CDF returns exactly 0 below −D_CLAMP and exactly 1 above D_CLAMP (D_CLAMP = 9), where
/// Φ(−9) ≈ 1.13e-19 is below one unit of the 1e18 scale; the density is 0 beyond the clamp as well
/// (φ(9) ≈ 1.03e-18).
///
/// Error bound: Hart's approximation is within 2e-16 of Φ on the whole line (absolute); evaluated in
/// 1e18 fixed point the CDF is within 1e-15 of Φ (absolute). Prices are therefore within
/// 1e-15·(S + K) plus a few units of the last place of the exact Black-Scholes value; the
/// differential test (tests/test_black_scholes.py) checks |error| ≤ 1e-14·(S + K) and a relative
/// error ≤ 1e-9 wherever the exact price is at least 1e-6·S, over a grid of moneyness 0.2 … 5,
/// expiries 1 hour … 5 years and volatilities 5% … 300%.
library BlackScholes {
    /*//////////////////////////////////////////////////////////////
                                 TYPES
    //////////////////////////////////////////////////////////////*/

    /// @notice Inputs of one valuation (scales in the library's NatSpec).
    /// @param spot Price of the underlying, 1e18 fixed point.
    /// @param strike Strike price, 1e18 fixed point.
    /// @param timeToExpiry Seconds until expiry.
    /// @param volatility Annualised implied volatility, 1e18 = 100%.
    /// @param rate Annualised continuously compounded risk-free rate, 1e18 = 100%.
    struct Inputs {
        uint256 spot;
        uint256 strike;
        uint256 timeToExpiry;
        uint256 volatility;
        uint256 rate;
    }

    /// @notice Prices and Greeks of the call and the put of one strike and expiry.
    /// @dev Gamma and vega are the same for the call and the put.
    struct Greeks {
        uint256 callPrice;
        uint256 putPrice;
        int256 callDelta;
        int256 putDelta;
        uint256 gamma;
        uint256 vega;
    }

    /*//////////////////////////////////////////////////////////////
                                 ERRORS
    //////////////////////////////////////////////////////////////*/

    /// @notice An input is outside the library's domain. `which`: 0 spot, 1 strike, 2 timeToExpiry,
    /// 3 volatility, 4 rate.
    error BlackScholesInputOutOfRange(uint256 which, uint256 value, uint256 min, uint256 max);

    /*//////////////////////////////////////////////////////////////
                               CONSTANTS
    //////////////////////////////////////////////////////////////*/

    int256 internal constant WAD = 1e18;
    uint256 internal constant SECONDS_PER_YEAR = 365 days;
    uint256 internal constant MIN_PRICE = 1e12;
    uint256 internal constant MAX_PRICE = 1e30;
    /// @dev 0.1% annualised.
    uint256 internal constant MIN_VOLATILITY = 0.001e18;
    /// @dev 500% annualised.
    uint256 internal constant MAX_VOLATILITY = 5e18;
    uint256 internal constant MAX_TIME_TO_EXPIRY = 10 * 365 days;
    /// @dev 100% annualised.
    uint256 internal constant MAX_RATE = 1e18;
    /// @dev Beyond ±9 the CDF is 0 or 1 to within Φ(−9) ≈ 1.13e-19, below one unit of 1e-18.
    int256 internal constant D_CLAMP = 9e18;
    /// @dev Below this, Hart's rational function; above, his continued fraction (5√2).
    int256 internal constant HART_SPLIT = 7.07106781186547e18;
    int256 internal constant SQRT_2PI = 2.506628274631000502e18;
    int256 internal constant INV_SQRT_2PI = 0.398942280401432678e18;

    // Hart 5666 numerator coefficients, highest degree first.
    int256 private constant P0 = 0.0352624965998911e18;
    int256 private constant P1 = 0.700383064443688e18;
    int256 private constant P2 = 6.37396220353165e18;
    int256 private constant P3 = 33.912866078383e18;
    int256 private constant P4 = 112.079291497871e18;
    int256 private constant P5 = 221.213596169931e18;
    int256 private constant P6 = 220.206867912376e18;
    // Hart 5666 denominator coefficients, highest degree first.
    int256 private constant Q0 = 0.0883883476483184e18;
    int256 private constant Q1 = 1.75566716318264e18;
    int256 private constant Q2 = 16.064177579207e18;
    int256 private constant Q3 = 86.7807322029461e18;
    int256 private constant Q4 = 296.564248779674e18;
    int256 private constant Q5 = 637.333633378831e18;
    int256 private constant Q6 = 793.826512519948e18;
    int256 private constant Q7 = 440.413735824752e18;

    /*//////////////////////////////////////////////////////////////
                                PRICING
    //////////////////////////////////////////////////////////////*/

    /// @notice Price of a call (`isCall`) or a put, 1e18 fixed point in quote units, never negative.
    function price(Inputs memory p, bool isCall) internal pure returns (uint256) {
        _validate(p);
        if (p.timeToExpiry == 0) return _intrinsic(p.spot, p.strike, isCall);
        (int256 d1, int256 d2,,) = _d(p);
        int256 s = int256(p.spot);
        int256 kd = _discountedStrike(p);
        int256 value = isCall
            ? s * normalCdf(d1) / WAD - kd * normalCdf(d2) / WAD
            : kd * normalCdf(-d2) / WAD - s * normalCdf(-d1) / WAD;
        return value > 0 ? uint256(value) : 0;
    }

    /// @notice Prices of the call and the put with their deltas, gamma and vega (scales in the NatSpec).
    function greeks(Inputs memory p) internal pure returns (Greeks memory g) {
        _validate(p);
        if (p.timeToExpiry == 0) {
            g.callPrice = _intrinsic(p.spot, p.strike, true);
            g.putPrice = _intrinsic(p.spot, p.strike, false);
            g.callDelta = p.spot > p.strike ? WAD : int256(0);
            g.putDelta = g.callDelta - WAD;
            return g;
        }
        (int256 d1, int256 d2, int256 sigmaSqrtT, int256 sqrtT) = _d(p);
        int256 s = int256(p.spot);
        int256 kd = _discountedStrike(p);
        int256 n1 = normalCdf(d1);
        int256 n2 = normalCdf(d2);
        // N(−x) = 1 − N(x) exactly in fixed point, so put and call share their rounding.
        int256 call = s * n1 / WAD - kd * n2 / WAD;
        int256 put = kd * (WAD - n2) / WAD - s * (WAD - n1) / WAD;
        g.callPrice = call > 0 ? uint256(call) : 0;
        g.putPrice = put > 0 ? uint256(put) : 0;
        g.callDelta = n1;
        g.putDelta = n1 - WAD;
        int256 pdf = normalPdf(d1);
        // S·σ√τ ≥ 1e12 × 1.7e11 > 0 on the domain, and pdf·1e36 ≤ 4e53: no overflow, no zero division.
        g.gamma = uint256(pdf * WAD * WAD / (s * sigmaSqrtT));
        // slither-disable-next-line divide-before-multiply (WAD fixed point: s·pdf/WAD is the WAD product, the truncation is < 1 wei of a WAD value before the next product; greeks() is a view)
        g.vega = uint256(s * pdf / WAD * sqrtT / WAD);
    }

    /*//////////////////////////////////////////////////////////////
                            NORMAL DISTRIBUTION
    //////////////////////////////////////////////////////////////*/

    /// @notice Standard normal CDF Φ(x), `x` and the result 1e18 fixed point; |error| ≤ 1e-15.
    /// @dev Exactly 0 for x ≤ −D_CLAMP and exactly 1e18 for x ≥ D_CLAMP.
    function normalCdf(int256 x) internal pure returns (int256) {
        if (x >= D_CLAMP) return WAD;
        if (x <= -D_CLAMP) return 0;
        return x >= 0 ? WAD - _upperTail(x) : _upperTail(-x);
    }

    /// @notice Standard normal density φ(x) = e^(−x²/2)/√(2π), 1e18 fixed point; 0 beyond ±D_CLAMP.
    function normalPdf(int256 x) internal pure returns (int256) {
        if (x >= D_CLAMP || x <= -D_CLAMP) return 0;
        return _expHalfSquare(x) * INV_SQRT_2PI / WAD;
    }

    /*//////////////////////////////////////////////////////////////
                                INTERNAL
    //////////////////////////////////////////////////////////////*/

    function _validate(Inputs memory p) private pure {
        if (p.spot < MIN_PRICE || p.spot > MAX_PRICE) revert BlackScholesInputOutOfRange(0, p.spot, MIN_PRICE, MAX_PRICE);
        if (p.strike < MIN_PRICE || p.strike > MAX_PRICE) {
            revert BlackScholesInputOutOfRange(1, p.strike, MIN_PRICE, MAX_PRICE);
        }
        if (p.timeToExpiry > MAX_TIME_TO_EXPIRY) {
            revert BlackScholesInputOutOfRange(2, p.timeToExpiry, 0, MAX_TIME_TO_EXPIRY);
        }
        if (p.volatility < MIN_VOLATILITY || p.volatility > MAX_VOLATILITY) {
            revert BlackScholesInputOutOfRange(3, p.volatility, MIN_VOLATILITY, MAX_VOLATILITY);
        }
        if (p.rate > MAX_RATE) revert BlackScholesInputOutOfRange(4, p.rate, 0, MAX_RATE);
    }

    /// @dev d1, d2, σ√τ and √τ for τ > 0 (all 1e18). |ln(S/K)| ≤ 41.5, σ√τ ∈ [1.7e-7, 15.9]: no overflow.
    function _d(Inputs memory p) private pure returns (int256 d1, int256 d2, int256 sigmaSqrtT, int256 sqrtT) {
        int256 tau = int256(p.timeToExpiry * uint256(WAD) / SECONDS_PER_YEAR);
        int256 vol = int256(p.volatility);
        sqrtT = sd(tau).sqrt().unwrap();
        sigmaSqrtT = vol * sqrtT / WAD;
        int256 lnMoneyness = sd(int256(p.spot * uint256(WAD) / p.strike)).ln().unwrap();
        int256 drift = (int256(p.rate) + vol * vol / (2 * WAD)) * tau / WAD;
        d1 = (lnMoneyness + drift) * WAD / sigmaSqrtT;
        d2 = d1 - sigmaSqrtT;
    }

    /// @dev K·e^(−rτ), 1e18 fixed point.
    function _discountedStrike(Inputs memory p) private pure returns (int256) {
        if (p.rate == 0) return int256(p.strike);
        int256 rt = int256(p.rate * p.timeToExpiry / SECONDS_PER_YEAR);
        return int256(p.strike) * sd(-rt).exp().unwrap() / WAD;
    }

    function _intrinsic(uint256 spot, uint256 strike, bool isCall) private pure returns (uint256) {
        if (isCall) return spot > strike ? spot - strike : 0;
        return strike > spot ? strike - spot : 0;
    }

    /// @dev e^(−x²/2) for |x| < D_CLAMP, 1e18 fixed point.
    function _expHalfSquare(int256 x) private pure returns (int256) {
        return sd(-(x * x / WAD) / 2).exp().unwrap();
    }

    /// @dev Φ(−x) = 1 − Φ(x) for 0 ≤ x < D_CLAMP by Hart 5666: e^(−x²/2)·P(x)/Q(x) below 5√2, the
    /// continued fraction e^(−x²/2) / (√(2π)·(x + 1/(x + 2/(x + 3/(x + 4/(x + 0.65)))))) above.
    function _upperTail(int256 x) private pure returns (int256) {
        int256 e = _expHalfSquare(x);
        if (x < HART_SPLIT) {
            int256 num = P0;
            num = num * x / WAD + P1;
            num = num * x / WAD + P2;
            num = num * x / WAD + P3;
            num = num * x / WAD + P4;
            num = num * x / WAD + P5;
            num = num * x / WAD + P6;
            int256 den = Q0;
            den = den * x / WAD + Q1;
            den = den * x / WAD + Q2;
            den = den * x / WAD + Q3;
            den = den * x / WAD + Q4;
            den = den * x / WAD + Q5;
            den = den * x / WAD + Q6;
            den = den * x / WAD + Q7;
            return e * num / den;
        }
        int256 b = x + 0.65e18;
        b = x + 4 * WAD * WAD / b;
        b = x + 3 * WAD * WAD / b;
        b = x + 2 * WAD * WAD / b;
        b = x + WAD * WAD / b;
        return e * WAD / (b * SQRT_2PI / WAD);
    }
}
