// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title BlackScholes
/// @notice Black-Scholes (1973) prices and Greeks of European options in 18-decimal fixed point, computed
/// in binary fixed point (Q96: value × 2^96) with the library's own `ln`, `exp`, square root and normal
/// CDF; every constant is derived and its error printed by `tools/black_scholes_coefficients.py`.
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
///   spot, strike ∈ [1e12, 1e30] (1e-6 … 1e12 quote units),
///   volatility ∈ [MIN_VOLATILITY, MAX_VOLATILITY] = [0.1%, 500%],
///   timeToExpiry ∈ [0, MAX_TIME_TO_EXPIRY] = [0, 10 years], rate ∈ [0, MAX_RATE] = [0, 100%].
/// At `timeToExpiry == 0` the price is the intrinsic value and gamma and vega are zero.
///
/// Method. Write Q(x) = 1 − Φ(x) = e^(−x²/2)·M(x) for x ≥ 0 (M: the Mills ratio over √(2π)) and
/// A = S·e^(−d1²/2) = K·e^(−rτ)·e^(−d2²/2) (the identity S·φ(d1) = K·e^(−rτ)·φ(d2)). With H(d) = 1 if d > 0
/// else 0 and σ(d) = −1 if d > 0 else +1, N(d) = H(d) + σ(d)·e^(−d²/2)·M(|d|), hence
///   call = S·H(d1) − Kd·H(d2) + A·(σ(d1)·M(|d1|) − σ(d2)·M(|d2|)),
///   put  = Kd·(1 − H(d2)) − S·(1 − H(d1)) + A·(σ(d1)·M(|d1|) − σ(d2)·M(|d2|)),
/// with one exponential for both tails (A from whichever of |d1|, |d2| is smaller, so it never underflows
/// while the other term matters), no cancellation of large terms out of the money (a call with d1 ≤ 0 is
/// A·(M(|d1|) − M(|d2|))), and call − put = S − Kd exactly in integers.
///   ln(S/K): S·2^128/K = 2^e·m, m ∈ [1/√2, √2], ln m = 2z·g(z²), z = (m−1)/(m+1), g a (3, 3) rational
///     (max |error| of ln m 8.3e-20);
///   e^(−y): y = k·ln2 + f, |f| ≤ ln2/2, e^(−f) by the (6, 6) Padé approximant (relative error 1.8e-19);
///   M(x), 0 ≤ x < 9: an (8, 9) rational with M(0) = 1/2 exactly (relative error 1.3e-17);
///   √τ: integer Newton square root of t·2^192, then times 1/√(365 days).
/// Clamp: a tail term with |d| ≥ 9 is 0 (Q(9) ≈ 1.13e-19, below one unit of the 1e18 scale of N); where
/// both |d1| and |d2| are ≥ 9, gamma and vega are 0 (φ(9) ≈ 1.03e-18).
///
/// Error bound (checked by tests/test_black_scholes.py against a 60-digit reference over a grid of the
/// domain, its corners and random inputs): |price error| ≤ 1e-17·(S + K) + 2 wei (the two tail terms, each
/// ≤ ½·(S or K), carry the rational's 1.3e-17 relative error); relative error ≤ 1e-13 (plus the same 2 wei)
/// wherever the exact price is at least 1e-6·S; |delta error| ≤ 1e-17 + 2 wei; gamma and vega within 1e-12 relative + 1 wei.
/// call − put = S − ⌊K·e^(−rτ)⌋ exactly (when neither is clamped at 0).
/// Gas (benchmarks/bench_black_scholes.py): about 2,700 per price, at most 4,100; Greeks at most 4,600.
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
    /// @dev Beyond ±9 the CDF is 0 or 1 to within Φ(−9) ≈ 1.13e-19, below one unit of 1e-18 (1e18 scale).
    int256 internal constant D_CLAMP = 9e18;

    /// @dev 1.0 in Q96.
    int256 private constant ONE = 2 ** 96;
    /// @dev D_CLAMP in Q96.
    int256 private constant D_CLAMP_Q96 = 9 * 2 ** 96;

    // The constants below are printed by tools/black_scholes_coefficients.py (Q96 unless named otherwise).
    // e^x ≈ N(x)/N(−x), N(x) = Σ EXP_Cj·x^j: the (6, 6) Padé approximant.
    int256 private constant EXP_C0 = 79228162514264337593543950336;
    int256 private constant EXP_C1 = 39614081257132168796771975168;
    int256 private constant EXP_C2 = 9003200285711856544720903447;
    int256 private constant EXP_C3 = 1200426704761580872629453793;
    int256 private constant EXP_C4 = 100035558730131739385787816;
    int256 private constant EXP_C5 = 5001777936506586969289391;
    int256 private constant EXP_C6 = 119089950869204451649747;
    int256 private constant LN_P0 = 79228162514264337612594437067;
    int256 private constant LN_P1 = -102098625204124745096991924095;
    int256 private constant LN_P2 = 31767820221084587107376942283;
    int256 private constant LN_P3 = -1386671647494626184916792260;
    int256 private constant LN_Q0 = 79228162514264337593543950336;
    int256 private constant LN_Q1 = -128508012708879461784268292138;
    int256 private constant LN_Q2 = 58758191954491348753230366049;
    int256 private constant LN_Q3 = -6589442014423001228367770375;
    int256 private constant MILLS_P0 = 39614081257132168796771975168;
    int256 private constant MILLS_P1 = 52604194846998931173086772359;
    int256 private constant MILLS_P2 = 34822230754390745124677454908;
    int256 private constant MILLS_P3 = 14474522202366958842967019536;
    int256 private constant MILLS_P4 = 4077440373265856327011251429;
    int256 private constant MILLS_P5 = 792520641744822630609770624;
    int256 private constant MILLS_P6 = 103730262296396438760333879;
    int256 private constant MILLS_P7 = 8389599569385112864538004;
    int256 private constant MILLS_P8 = 323878502378830207200114;
    int256 private constant MILLS_Q0 = 79228162514264337593543950336;
    int256 private constant MILLS_Q1 = 168423317344909836835608730491;
    int256 private constant MILLS_Q2 = 164412744840348823281603961485;
    int256 private constant MILLS_Q3 = 96991418989997344745052799804;
    int256 private constant MILLS_Q4 = 38227065283544285776333897296;
    int256 private constant MILLS_Q5 = 10478994396659802715960231997;
    int256 private constant MILLS_Q6 = 2007585446325380652156174742;
    int256 private constant MILLS_Q7 = 260825006260967678669147389;
    int256 private constant MILLS_Q8 = 21029608584090700013673839;
    int256 private constant MILLS_Q9 = 811842999041801969378338;
    int256 private constant LN2_Q96 = 54916777467707473351141471128;
    int256 private constant INV_LN2_Q96 = 114302077158074026402637675937;
    int256 private constant SQRT2_Q96 = 112045541949572279837463876455;
    int256 private constant INV_SQRT_YEAR_Q96 = 14108351792113752943874740;
    int256 private constant INV_SQRT_2PI_WAD = 398942280401432678;

    /*//////////////////////////////////////////////////////////////
                                PRICING
    //////////////////////////////////////////////////////////////*/

    /// @notice Price of a call (`isCall`) or a put, 1e18 fixed point in quote units, never negative.
    function price(Inputs memory p, bool isCall) internal pure returns (uint256) {
        _validate(p);
        if (p.timeToExpiry == 0) return _intrinsic(p.spot, p.strike, isCall);
        (int256 call, int256 put,,,,) = _evaluate(p);
        int256 value = isCall ? call : put;
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
        (int256 call, int256 put, int256 a, int256 sN1, int256 sigmaSqrtT, int256 sqrtT) = _evaluate(p);
        g.callPrice = call > 0 ? uint256(call) : 0;
        g.putPrice = put > 0 ? uint256(put) : 0;
        unchecked {
            int256 s = int256(p.spot);
            // sN1 = S·N(d1) in 1e18·2^80.
            g.callDelta = (sN1 * WAD / s) >> 80;
            g.putDelta = g.callDelta - WAD;
            // a·(1/√(2π)) = S·φ(d1) with S and φ both 1e18 fixed point (product scale 1e36).
            int256 sPdf = a * INV_SQRT_2PI_WAD >> 64;
            // Γ = φ/(S·σ√τ): φ·1e36 = sPdf·1e18/S ≤ 4e35, ·2^96/σ√τ (σ√τ ≥ 1.7e-7·2^96) < 2^215, then /S.
            // slither-disable-next-line divide-before-multiply (the order keeps every intermediate below 2^255; the bounds are in the comment above)
            g.gamma = uint256(sPdf * WAD / s * ONE / sigmaSqrtT / s);
            // vega = S·φ·√τ: (S·φ in 1e36·2^-32 < 2^127) × √τ (Q96, < 2^98), then to 1e18 with one floor.
            g.vega = uint256((sPdf >> 32) * sqrtT / WAD >> 64);
        }
    }

    /*//////////////////////////////////////////////////////////////
                            NORMAL DISTRIBUTION
    //////////////////////////////////////////////////////////////*/

    /// @notice Standard normal CDF Φ(x), `x` and the result 1e18 fixed point; |error| ≤ 1e-18 + 1 wei.
    /// @dev Exactly 0 for x ≤ −D_CLAMP and exactly 1e18 for x ≥ D_CLAMP; Φ(x) + Φ(−x) = 1e18 exactly.
    function normalCdf(int256 x) internal pure returns (int256) {
        if (x >= D_CLAMP) return WAD;
        if (x <= -D_CLAMP) return 0;
        if (x == 0) return WAD / 2;
        unchecked {
            int256 a = (x < 0 ? -x : x) * ONE / WAD;
            // Q(|x|) = e^(−x²/2)·M(|x|): Q128 × Q80 → Q128, then to 1e18.
            // slither-disable-next-line divide-before-multiply (a is |x| converted from 1e18 to Q96 once; the floor is part of the stated error bound)
            int256 tail = (_expNeg(a * a >> 97) * _mills(a) >> 80) * WAD >> 128;
            return x > 0 ? WAD - tail : tail;
        }
    }

    /// @notice Standard normal density φ(x) = e^(−x²/2)/√(2π), 1e18 fixed point; 0 beyond ±D_CLAMP.
    function normalPdf(int256 x) internal pure returns (int256) {
        if (x >= D_CLAMP || x <= -D_CLAMP) return 0;
        unchecked {
            int256 a = (x < 0 ? -x : x) * ONE / WAD;
            // slither-disable-next-line divide-before-multiply (a is |x| converted from 1e18 to Q96 once; the floor is part of the stated error bound)
            return _expNeg(a * a >> 97) * INV_SQRT_2PI_WAD >> 128;
        }
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

    /// @dev Call and put (1e18, may be slightly negative from rounding), A = S·e^(−d1²/2) (1e18·2^64),
    /// S·N(d1) (1e18·2^80), σ√τ and √τ (Q96), for validated inputs with τ > 0.
    /// Magnitudes (domain bounds): |ln(S/K)| ≤ 41.5, rτ ≤ 10, σ√τ ∈ [1.7e-7, 15.9], so |x|·2^96 < 2^102,
    /// |d|·2^96 < 2^125; S, K < 2^100; A < 2^164; M < 2^79: every product below stays under 2^250.
    function _evaluate(Inputs memory p)
        private
        pure
        returns (int256 call, int256 put, int256 a, int256 sN1, int256 sigmaSqrtT, int256 sqrtT)
    {
        unchecked {
            int256 s = int256(p.spot);
            int256 kd = int256(p.strike);
            // √τ = √t / √(365 days), t·2^192 < 2^221.
            sqrtT = int256(_sqrt(p.timeToExpiry << 192)) * INV_SQRT_YEAR_Q96 >> 96;
            sigmaSqrtT = int256(p.volatility) * sqrtT / WAD;
            int256 x = _lnRatio(p.spot, p.strike);
            if (p.rate != 0) {
                int256 rt = int256((p.rate * p.timeToExpiry) << 96) / int256(SECONDS_PER_YEAR * 1e18);
                x += rt; // ln(S/Kd) = ln(S/K) + rτ
                kd = kd * _expNeg(rt) >> 128;
            }
            int256 d1 = x * ONE / sigmaSqrtT + sigmaSqrtT / 2;
            int256 d2 = d1 - sigmaSqrtT;
            int256 a1 = d1 < 0 ? -d1 : d1;
            int256 a2 = d2 < 0 ? -d2 : d2;
 // slither-disable-next-line uninitialized-local (every branch below assigns it before use)
            int256 bracket;
            if (a1 < D_CLAMP_Q96 || a2 < D_CLAMP_Q96) {
                // One exponential: S·e^(−d1²/2) = Kd·e^(−d2²/2); take the smaller |d| (the larger density).
                a = a1 <= a2 ? s * _expNeg(a1 * a1 >> 97) >> 64 : kd * _expNeg(a2 * a2 >> 97) >> 64;
                if (a1 < D_CLAMP_Q96) {
                    int256 m1 = _mills(a1);
                    bracket = d1 > 0 ? -m1 : m1;
                    sN1 = a * bracket >> 64;
                }
                if (a2 < D_CLAMP_Q96) {
                    int256 m2 = _mills(a2);
                    bracket -= d2 > 0 ? -m2 : m2;
                }
            }
            if (d1 > 0) sN1 += s << 80;
            int256 t = a * bracket >> 144;
            call = (d1 > 0 ? s : int256(0)) - (d2 > 0 ? kd : int256(0)) + t;
            put = (d2 > 0 ? int256(0) : kd) - (d1 > 0 ? int256(0) : s) + t;
        }
    }

    function _intrinsic(uint256 spot, uint256 strike, bool isCall) private pure returns (uint256) {
        if (isCall) return spot > strike ? spot - strike : 0;
        return strike > spot ? strike - spot : 0;
    }

    /// @dev ln(spot/strike) in Q96 for spot, strike ∈ [1e12, 1e30]: spot·2^128/strike ∈ [2^68, 2^188] keeps
    /// ≥ 68 significant bits; = 2^e·m with m ∈ [1/√2, √2], ln m = 2z·g(z²), z = (m − 1)/(m + 1).
    function _lnRatio(uint256 spot, uint256 strike) private pure returns (int256 r) {
        uint256 q;
        unchecked {
            q = (spot << 128) / strike;
        }
        uint256 msb = _msb(q);
        // Assembly for the arithmetic (the same SAR floors and SDIV truncation as Solidity's int256 `>>`, `/`).
        assembly ("memory-safe") {
            let one := shl(96, 1)
            let m := shr(sub(msb, 96), q)
            if lt(msb, 96) { m := shl(sub(96, msb), q) }
            let e := sub(msb, 128)
            let c := one
            if sgt(m, SQRT2_Q96) {
                c := shl(97, 1)
                e := add(e, 1)
            }
            let z := sdiv(mul(sub(m, c), one), add(m, c))
            let w := sar(96, mul(z, z))
            let num := add(sar(96, mul(add(sar(96, mul(add(sar(96, mul(LN_P3, w)), LN_P2), w)), LN_P1), w)), LN_P0)
            let den := add(sar(96, mul(add(sar(96, mul(add(sar(96, mul(LN_Q3, w)), LN_Q2), w)), LN_Q1), w)), LN_Q0)
            r := add(mul(e, LN2_Q96), sdiv(mul(mul(2, z), num), den))
        }
    }

    /// @dev e^(−y) in Q128 for 0 ≤ y ≤ 41 (Q96): y = k·ln2 + f, |f| ≤ ln2/2, e^(−f) = N(−f)/N(f).
    function _expNeg(int256 y) private pure returns (int256 r) {
        assembly ("memory-safe") {
            let k := sar(192, add(mul(y, INV_LN2_Q96), shl(191, 1)))
            let f := sub(y, mul(k, LN2_Q96))
            let f2 := sar(96, mul(f, f))
            let u := add(sar(96, mul(add(sar(96, mul(add(sar(96, mul(EXP_C6, f2)), EXP_C4), f2)), EXP_C2), f2)), EXP_C0)
            let v := add(sar(96, mul(add(sar(96, mul(EXP_C5, f2)), EXP_C3), f2)), EXP_C1)
            v := sar(96, mul(f, v))
            r := sdiv(shl(sub(128, k), sub(u, v)), add(u, v))
        }
    }

    /// @dev M(x) = Q(x)·e^(x²/2) in Q80 for 0 ≤ x < 9 (Q96): the (8, 9) rational; all coefficients > 0.
    /// Horner's rule in assembly: the same floor shifts (SAR) and truncating division as the Solidity
    /// `>>` and `/` on these positive int256 values, without the stack shuffling.
    function _mills(int256 x) private pure returns (int256 r) {
        assembly ("memory-safe") {
            let num := add(sar(96, mul(MILLS_P8, x)), MILLS_P7)
            num := add(sar(96, mul(num, x)), MILLS_P6)
            num := add(sar(96, mul(num, x)), MILLS_P5)
            num := add(sar(96, mul(num, x)), MILLS_P4)
            num := add(sar(96, mul(num, x)), MILLS_P3)
            num := add(sar(96, mul(num, x)), MILLS_P2)
            num := add(sar(96, mul(num, x)), MILLS_P1)
            num := add(sar(96, mul(num, x)), MILLS_P0)
            let den := add(sar(96, mul(MILLS_Q9, x)), MILLS_Q8)
            den := add(sar(96, mul(den, x)), MILLS_Q7)
            den := add(sar(96, mul(den, x)), MILLS_Q6)
            den := add(sar(96, mul(den, x)), MILLS_Q5)
            den := add(sar(96, mul(den, x)), MILLS_Q4)
            den := add(sar(96, mul(den, x)), MILLS_Q3)
            den := add(sar(96, mul(den, x)), MILLS_Q2)
            den := add(sar(96, mul(den, x)), MILLS_Q1)
            den := add(sar(96, mul(den, x)), MILLS_Q0)
            r := sdiv(shl(80, num), den)
        }
    }

    /// @dev ⌊√n⌋ for 2^192 ≤ n < 2^221: Newton's iteration from 2^(⌊log2 n⌋/2 + 1) > √n, whose relative
    /// error (≤ 1) squares each step (1 → 0.25 → 0.025 → 3e-4 → 5e-8 → 1e-15 → 6e-31 → < 2^-110); the last
    /// iterate is ⌊√n⌋ or ⌊√n⌋ + 1, and min(x, n/x) is ⌊√n⌋.
    function _sqrt(uint256 n) private pure returns (uint256 x) {
        uint256 msb = _msb(n);
        assembly ("memory-safe") {
            // slither-disable-next-line incorrect-shift (Yul shl(shift, value): 1 shifted left by msb/2 + 1, as intended)
            x := shl(add(shr(1, msb), 1), 1)
            x := shr(1, add(x, div(n, x)))
            x := shr(1, add(x, div(n, x)))
            x := shr(1, add(x, div(n, x)))
            x := shr(1, add(x, div(n, x)))
            x := shr(1, add(x, div(n, x)))
            x := shr(1, add(x, div(n, x)))
            x := shr(1, add(x, div(n, x)))
            let y := div(n, x)
            if lt(y, x) { x := y }
        }
    }

    /// @dev Index of the most significant set bit of x > 0 (binary search over 128, 64, …, 1 bits).
    function _msb(uint256 x) private pure returns (uint256 r) {
        assembly ("memory-safe") {
            r := shl(7, lt(0xffffffffffffffffffffffffffffffff, x))
            r := or(r, shl(6, lt(0xffffffffffffffff, shr(r, x))))
            r := or(r, shl(5, lt(0xffffffff, shr(r, x))))
            r := or(r, shl(4, lt(0xffff, shr(r, x))))
            r := or(r, shl(3, lt(0xff, shr(r, x))))
            r := or(r, shl(2, lt(0xf, shr(r, x))))
            r := or(r, shl(1, lt(0x3, shr(r, x))))
            r := or(r, lt(0x1, shr(r, x)))
        }
    }
}
