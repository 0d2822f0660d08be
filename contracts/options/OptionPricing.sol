// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {Math} from "@openzeppelin/contracts/utils/math/Math.sol";
import {AggregatorV3Interface} from "@chainlink/contracts/src/v0.8/shared/interfaces/AggregatorV3Interface.sol";

import {BlackScholes} from "../BlackScholes.sol";
import {IOptionMarket} from "../interfaces/IOptionMarket.sol";
import {ChainlinkReader} from "../libraries/ChainlinkReader.sol";

/// @title OptionPricing
/// @notice The pricing part of `OptionMarket`: the whitelisted underlyings and their feeds, and the quotes.
/// @dev Quotes: Black-Scholes fair value (`BlackScholes`, rate 0: the base asset earns no interest here)
/// from the underlying's price feed and its implied-volatility feed, plus a half-spread when the market
/// sells and minus it when it buys back. The half-spread per unit is
///   fair · spreadBps  +  |Δ|·dS + ½·|Γ|·dS²  +  |vega| · volStep,   dS = spot · priceStepBps,
/// where priceStepBps (the price feed's deviation threshold) and volStep (the vol feed's step) are set
/// per underlying by the admin (`listUnderlying`): the quote moves by about one feed update at a time, and
/// a half-spread covering one update step on each side makes buying before a known round and selling
/// after it (or the reverse) a loss for the trader, not for the LPs. A quote refuses a feed answer older
/// than its heartbeat or non-positive (`ChainlinkReader`), a volatility outside the library's domain, and a
/// buy whose time to expiry is outside [minTimeToExpiry, maxTimeToExpiry].
///
/// Payoffs at the settlement price P (per unit of amount):
///   put:  max(K − P, 0), fully collateralised by K;
///   call: min(max(P − K, 0), cap) with cap = K · callCapBps / 10_000, fully collateralised by cap
///   (a capped call is a call spread K / K + cap, valued as BS(K) − BS(K + cap)).
///
/// Implied-volatility feed: Chainlink `AggregatorV3Interface`, answer = annualised volatility scaled by
/// the feed's own decimals (18 in the local deployment: 0.8e18 = 80%).
abstract contract OptionPricing is IOptionMarket, AccessControl {
    using Math for uint256;

    /*//////////////////////////////////////////////////////////////
                               CONSTANTS
    //////////////////////////////////////////////////////////////*/

    /// @dev 100% in basis points.
    uint256 internal constant BPS = 10_000;
    /// @dev 1.0 in 1e18 fixed point.
    uint256 internal constant WAD = 1e18;
    /// @inheritdoc IOptionMarket
    /// @dev 20% spread at most.
    uint256 public constant MAX_SPREAD_BPS = 2_000;
    /// @dev Bounds of the quote steps (`listUnderlying`): a 20% price step, a 100-point vol step.
    uint256 internal constant MAX_PRICE_STEP_BPS = 2_000;
    uint256 internal constant MAX_VOL_STEP = 1e18;

    /*//////////////////////////////////////////////////////////////
                               IMMUTABLES
    //////////////////////////////////////////////////////////////*/

    /// @inheritdoc IOptionMarket
    uint256 public immutable callCapBps;
    /// @dev 10^(36 − baseDecimals): (1e18 value per unit) × (1e18 amount) / SCALE = base units.
    uint256 internal immutable _valueScale;

    /*//////////////////////////////////////////////////////////////
                                STORAGE
    //////////////////////////////////////////////////////////////*/

    /// @inheritdoc IOptionMarket
    mapping(address underlying => Underlying) public underlyingConfig;
    /// @inheritdoc IOptionMarket
    uint256 public spreadBps;
    /// @inheritdoc IOptionMarket
    uint256 public minTimeToExpiry;
    /// @inheritdoc IOptionMarket
    uint256 public maxTimeToExpiry;
    /// @inheritdoc IOptionMarket
    AggregatorV3Interface public sequencerUptimeFeed;
    /// @inheritdoc IOptionMarket
    uint32 public sequencerGracePeriod;

    /*//////////////////////////////////////////////////////////////
                              CONSTRUCTOR
    //////////////////////////////////////////////////////////////*/

    /// @param baseDecimals Decimals of the base asset premiums and payouts are paid in (≤ 18).
    /// @param admin Holder of `DEFAULT_ADMIN_ROLE`.
    /// @param callCapBps_ Cap of a call's payout, bps of its strike (1 … 100_000).
    constructor(uint8 baseDecimals, address admin, uint256 callCapBps_) {
        if (callCapBps_ == 0 || callCapBps_ > 10 * BPS) revert LimitOutOfRange(callCapBps_, 10 * BPS);
        callCapBps = callCapBps_;
        _valueScale = 10 ** (36 - uint256(baseDecimals));
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        _setParams(100, 1 hours, 365 days);
    }

    /*//////////////////////////////////////////////////////////////
                               GOVERNANCE
    //////////////////////////////////////////////////////////////*/

    /// @inheritdoc IOptionMarket
    function listUnderlying(
        address underlying,
        AggregatorV3Interface priceFeed,
        uint32 priceHeartbeat,
        AggregatorV3Interface volFeed,
        uint32 volHeartbeat,
        uint16 priceStepBps,
        uint64 volStep
    ) external onlyRole(DEFAULT_ADMIN_ROLE) {
        if (priceHeartbeat == 0 || volHeartbeat == 0) revert ZeroHeartbeat(underlying);
        if (priceStepBps > MAX_PRICE_STEP_BPS) revert LimitOutOfRange(priceStepBps, MAX_PRICE_STEP_BPS);
        if (volStep > MAX_VOL_STEP) revert LimitOutOfRange(volStep, MAX_VOL_STEP);
        Underlying storage u = underlyingConfig[underlying];
        (u.priceFeed, u.volFeed, u.priceHeartbeat, u.volHeartbeat) = (priceFeed, volFeed, priceHeartbeat, volHeartbeat);
        (u.priceDecimals, u.volDecimals, u.listed) = (priceFeed.decimals(), volFeed.decimals(), true);
        (u.priceStepBps, u.volStep) = (priceStepBps, volStep);
        emit UnderlyingListed(underlying, address(priceFeed), address(volFeed), priceHeartbeat, volHeartbeat, priceStepBps, volStep);
    }

    /// @inheritdoc IOptionMarket
    function setAnswerBounds(address underlying, uint128 minPrice, uint128 maxPrice, uint128 minVol, uint128 maxVol)
        external
        onlyRole(DEFAULT_ADMIN_ROLE)
    {
        Underlying storage u = _listed(underlying);
        if (maxPrice != 0 && minPrice > maxPrice) revert LimitOutOfRange(minPrice, maxPrice);
        if (maxVol != 0 && minVol > maxVol) revert LimitOutOfRange(minVol, maxVol);
        (u.minPriceAnswer, u.maxPriceAnswer, u.minVolAnswer, u.maxVolAnswer) = (minPrice, maxPrice, minVol, maxVol);
        emit AnswerBoundsSet(underlying, minPrice, maxPrice, minVol, maxVol);
    }

    /// @inheritdoc IOptionMarket
    function setSequencer(AggregatorV3Interface uptimeFeed, uint32 gracePeriod) external onlyRole(DEFAULT_ADMIN_ROLE) {
        if (gracePeriod > 1 days) revert LimitOutOfRange(gracePeriod, 1 days);
        (sequencerUptimeFeed, sequencerGracePeriod) = (uptimeFeed, gracePeriod);
        emit SequencerSet(address(uptimeFeed), gracePeriod);
    }

    /// @inheritdoc IOptionMarket
    function setParams(uint256 spreadBps_, uint256 minTimeToExpiry_, uint256 maxTimeToExpiry_)
        external
        onlyRole(DEFAULT_ADMIN_ROLE)
    {
        _setParams(spreadBps_, minTimeToExpiry_, maxTimeToExpiry_);
    }

    /*//////////////////////////////////////////////////////////////
                                 VIEWS
    //////////////////////////////////////////////////////////////*/

    /// @inheritdoc IOptionMarket
    function quote(address underlying, uint256 strike, uint256 expiry, bool isCall, uint256 amount, bool isBuy)
        public
        view
        returns (uint256 premium, uint256 fairValue)
    {
        if (isBuy) {
            uint256 tte = expiry > block.timestamp ? expiry - block.timestamp : 0;
            if (tte < minTimeToExpiry || tte > maxTimeToExpiry) {
                revert ExpiryOutsideWindow(expiry, tte, minTimeToExpiry, maxTimeToExpiry);
            }
        }
        return _quoteSeries(underlying, strike, expiry, isCall, amount, isBuy);
    }

    /// @inheritdoc IOptionMarket
    function fairPrice(address underlying, uint256 strike, uint256 expiry, bool isCall) public view returns (uint256 fair) {
        return _fair(underlying, strike, expiry, isCall);
    }

    /// @inheritdoc IOptionMarket
    function greeks(address underlying, uint256 strike, uint256 expiry) external view returns (BlackScholes.Greeks memory) {
        Underlying storage u = _listed(underlying);
        uint256 tte = expiry > block.timestamp ? expiry - block.timestamp : 0;
        return BlackScholes.greeks(
            BlackScholes.Inputs({spot: _spot(u), strike: strike, timeToExpiry: tte, volatility: _volatility(u), rate: 0})
        );
    }

    /*//////////////////////////////////////////////////////////////
                                INTERNAL
    //////////////////////////////////////////////////////////////*/

    function _setParams(uint256 spread, uint256 minTte, uint256 maxTte) internal {
        if (spread > MAX_SPREAD_BPS) revert LimitOutOfRange(spread, MAX_SPREAD_BPS);
        if (maxTte > BlackScholes.MAX_TIME_TO_EXPIRY) revert LimitOutOfRange(maxTte, BlackScholes.MAX_TIME_TO_EXPIRY);
        if (minTte > maxTte) revert LimitOutOfRange(minTte, maxTte);
        spreadBps = spread;
        minTimeToExpiry = minTte;
        maxTimeToExpiry = maxTte;
        emit ParamsSet(spread, minTte, maxTte);
    }

    function _quoteSeries(address underlying, uint256 strike, uint256 expiry, bool isCall, uint256 amount, bool isBuy)
        internal
        view
        returns (uint256 premium, uint256 fairValue)
    {
        (uint256 perUnit, uint256 step) = _fairAndStep(underlying, strike, expiry, isCall);
        fairValue = perUnit.mulDiv(amount, _valueScale, Math.Rounding.Floor);
        // Per unit, scaled by BPS: fair · (1 ± spread) ± step (the step rounded up in _fairAndStep).
        uint256 stepScaled = step * BPS;
        if (isBuy) {
            premium = (perUnit * (BPS + spreadBps) + stepScaled).mulDiv(amount, _valueScale * BPS, Math.Rounding.Ceil);
        } else {
            uint256 bid = perUnit * (BPS - spreadBps);
            premium = bid > stepScaled ? (bid - stepScaled).mulDiv(amount, _valueScale * BPS, Math.Rounding.Floor) : 0;
        }
    }

    /// @dev Fair value per unit (1e18 USD): Black-Scholes prices only (a put: one; a capped call: two), the
    /// same values as `_fairAndStep`'s (`BlackScholes.price` and `.greeks` share one code path). At or after
    /// expiry: the intrinsic value at the latest price. What the marks (`positionValue`, the pool's
    /// liability, the vault's `totalAssets`) pay for.
    function _fair(address underlying, uint256 strike, uint256 expiry, bool isCall) internal view returns (uint256) {
        (, BlackScholes.Inputs memory p) = _pricingInputs(underlying, strike, expiry);
        // slither-disable-next-line incorrect-equality (timeToExpiry is clamped at 0 at and after expiry: 0 is exactly "expired")
        if (p.timeToExpiry == 0) return _payoff(strike, isCall, p.spot);
        if (!isCall) return BlackScholes.price(p, false);
        uint256 call = BlackScholes.price(p, true);
        p.strike = strike + strike * callCapBps / BPS;
        uint256 upper = BlackScholes.price(p, true);
        // Call prices fall with the strike, so the capped call's price is ≥ 0.
        return call > upper ? call - upper : 0;
    }

    /// @dev Fair value per unit (1e18 USD) and the feed-step part of the half-spread per unit (1e18 USD,
    /// rounded up): |Δ|·dS + ½·|Γ|·dS² + |vega|·volStep with dS = spot · priceStepBps (contract NatSpec).
    /// At or after expiry: the intrinsic value at the latest price and no step.
    function _fairAndStep(address underlying, uint256 strike, uint256 expiry, bool isCall)
        internal
        view
        returns (uint256 fair, uint256 step)
    {
        (Underlying storage u, BlackScholes.Inputs memory p) = _pricingInputs(underlying, strike, expiry);
        uint256 spot = p.spot;
        // slither-disable-next-line incorrect-equality (timeToExpiry is clamped at 0 at and after expiry: 0 is exactly "expired")
        if (p.timeToExpiry == 0) return (_payoff(strike, isCall, spot), 0);
        BlackScholes.Greeks memory g = BlackScholes.greeks(p);
        uint256 delta;
        uint256 gamma = g.gamma;
        uint256 vega = g.vega;
        if (!isCall) {
            fair = g.putPrice;
            delta = uint256(-g.putDelta);
        } else {
            // Capped call = call(K) − call(K + cap): its Greeks are the differences.
            p.strike = strike + strike * callCapBps / BPS;
            BlackScholes.Greeks memory h = BlackScholes.greeks(p);
            // Call deltas lie in [0, 1e18] and fall with the strike, so the capped call's price and delta are ≥ 0.
            fair = g.callPrice > h.callPrice ? g.callPrice - h.callPrice : 0;
            delta = _absDiff(uint256(g.callDelta), uint256(h.callDelta));
            gamma = _absDiff(gamma, h.gamma);
            vega = _absDiff(vega, h.vega);
        }
        uint256 ds = spot.mulDiv(u.priceStepBps, BPS, Math.Rounding.Ceil);
        step = delta.mulDiv(ds, WAD, Math.Rounding.Ceil) + gamma.mulDiv(ds * ds, 2 * WAD * WAD, Math.Rounding.Ceil)
            + vega.mulDiv(u.volStep, WAD, Math.Rounding.Ceil);
    }

    /// @dev The listed underlying's config and the Black-Scholes inputs of a series at the latest feed answers
    /// (rate 0); `timeToExpiry` is 0 at or after expiry (then only `spot` is meaningful). Reverts on a strike
    /// outside [MIN_PRICE, MAX_PRICE / 20] (the cap of a call at most 10× its strike stays in the domain).
    function _pricingInputs(address underlying, uint256 strike, uint256 expiry)
        internal
        view
        returns (Underlying storage u, BlackScholes.Inputs memory p)
    {
        u = _listed(underlying);
        if (strike < BlackScholes.MIN_PRICE || strike > BlackScholes.MAX_PRICE / 20) revert StrikeOutOfRange(strike);
        p.spot = _spot(u);
        p.strike = strike;
        if (block.timestamp >= expiry) return (u, p);
        p.timeToExpiry = expiry - block.timestamp;
        p.volatility = _volatility(u);
    }

    /// @dev Payoff per unit (1e18 USD) at `price`; a call's is capped at strike × callCapBps.
    function _payoff(uint256 strike, bool isCall, uint256 price) internal view returns (uint256) {
        if (!isCall) return strike > price ? strike - price : 0;
        if (price <= strike) return 0;
        return Math.min(price - strike, strike * callCapBps / BPS);
    }

    function _absDiff(uint256 a, uint256 b) internal pure returns (uint256) {
        return a > b ? a - b : b - a;
    }

    function _listed(address underlying) internal view returns (Underlying storage u) {
        u = underlyingConfig[underlying];
        if (!u.listed) revert UnderlyingNotListed(underlying);
    }

    /// @dev The underlying's price in 1e18 USD from its feed, after the sequencer, sign, bound and staleness checks.
    function _spot(Underlying storage u) internal view returns (uint256) {
        ChainlinkReader.checkSequencer(sequencerUptimeFeed, sequencerGracePeriod);
        uint256 answer = ChainlinkReader.latestChecked(u.priceFeed, u.priceHeartbeat, u.minPriceAnswer, u.maxPriceAnswer);
        return answer * WAD / 10 ** u.priceDecimals;
    }

    /// @dev The implied volatility in 1e18 (annualised) from its feed, checked against the library's domain.
    function _volatility(Underlying storage u) internal view returns (uint256 vol) {
        vol = ChainlinkReader.latestChecked(u.volFeed, u.volHeartbeat, u.minVolAnswer, u.maxVolAnswer) * WAD / 10 ** u.volDecimals;
        if (vol < BlackScholes.MIN_VOLATILITY || vol > BlackScholes.MAX_VOLATILITY) {
            revert VolatilityOutOfRange(address(u.volFeed), vol, BlackScholes.MIN_VOLATILITY, BlackScholes.MAX_VOLATILITY);
        }
    }
}
