// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {IERC20Metadata} from "@openzeppelin/contracts/token/ERC20/extensions/IERC20Metadata.sol";
import {ERC4626} from "@openzeppelin/contracts/token/ERC20/extensions/ERC4626.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {ReentrancyGuard} from "@openzeppelin/contracts/utils/ReentrancyGuard.sol";
import {Math} from "@openzeppelin/contracts/utils/math/Math.sol";
import {AggregatorV3Interface} from "@chainlink/contracts/src/v0.8/shared/interfaces/AggregatorV3Interface.sol";

import {BlackScholes} from "./BlackScholes.sol";
import {ChainlinkReader} from "./libraries/ChainlinkReader.sol";
import {IOptionMarket} from "./interfaces/IOptionMarket.sol";

/// @title OptionMarket
/// @notice European, cash-settled calls and puts on whitelisted underlyings, settled in the base asset
/// (a USD stablecoin) at expiry from the underlying's Chainlink price feed. A series is
/// (underlying, strike, expiry, isCall). The market's liquidity pool is the writer of every option: LPs
/// deposit the base asset (ERC-4626 shares of this contract), earn the premiums and bear the payouts.
/// @dev Units. Strikes, spot and per-unit values are 1e18 fixed point in USD per whole underlying;
/// option amounts are 1e18 fixed point in whole underlyings (1e18 = an option on one token); premiums,
/// collateral and payouts are in base-asset units.
///
/// Payoffs at the settlement price P (per unit of amount):
///   put:  max(K − P, 0), fully collateralised by K;
///   call: min(max(P − K, 0), cap) with cap = K · callCapBps / 10_000, fully collateralised by cap
///   (a capped call is a call spread K / K + cap, valued as BS(K) − BS(K + cap)).
/// Collateral is locked when an option is bought and released when it is sold back or settled;
/// the unexercised part returns to the pool, i.e. to its LPs.
///
/// Quotes: Black-Scholes fair value (`BlackScholes`, rate 0: the base asset earns no interest here)
/// from the underlying's price feed and its implied-volatility feed, plus a half-spread when the market
/// sells and minus it when it buys back. The half-spread per unit is
///   fair · spreadBps  +  |Δ|·dS + ½·|Γ|·dS²  +  |vega| · volStep,   dS = spot · priceStepBps,
/// where priceStepBps (the price feed's deviation threshold) and volStep (the vol feed's step) are set
/// per underlying by the admin (`listUnderlying`): the quote moves by about one feed update at a time, and
/// a half-spread covering one update step on each side makes buying before a known round and selling
/// after it (or the reverse) a loss for the trader, not for the LPs. A quote refuses a feed answer older
/// than its heartbeat or non-positive, a volatility outside the library's domain, and a buy whose time to
/// expiry is outside [minTimeToExpiry, maxTimeToExpiry].
///
/// Series creation: a new series is opened (by `buy`) only by a holder of `SERIES_CREATOR_ROLE` (the
/// vault, the admin); anyone trades series that exist. Every unsettled series costs a slot of
/// `MAX_ACTIVE_SERIES` and is priced in every LP deposit and withdrawal (`totalAssets`), so opening one is
/// a listing decision: outsiders can neither fill the slots the vault needs nor grow the LPs' gas.
///
/// Implied-volatility feed: Chainlink `AggregatorV3Interface`, answer = annualised volatility scaled by
/// the feed's own decimals (18 in the local deployment: 0.8e18 = 80%).
///
/// Settlement price (the rule `settle`, `findSettlementRound` and the mark of an expired series share,
/// so an expired series is always marked at exactly what settlement pays). With E the expiry and H the
/// price heartbeat, the settlement round is, on phase-aware round ids (`ChainlinkReader`):
///   1. the round current at E (the last updated at or before E) if it is at most H old at E;
///   2. otherwise the first round updated after E, if it is at most H after E;
///   3. otherwise, once the time is past E + H (no round can land in (E, E + H] any more), the round
///      current at E however old it is (or, when the feed has none, the first round after E).
/// Until one of these holds (a stale round at E and no round yet in (E, E + H]), settlement and the
/// mark revert with `SettlementPending`. The choice never changes once made, so the payout is fixed.
/// Settlement and the expired mark start strictly after E (a round stamped E may still land in block E).
///
/// Not supported on purpose: writing by third parties (the pool writes), early exercise, transferable
/// positions (positions are a ledger per holder).
contract OptionMarket is IOptionMarket, ERC4626, AccessControl, ReentrancyGuard {
    using SafeERC20 for IERC20;
    using Math for uint256;

    /*//////////////////////////////////////////////////////////////
                               CONSTANTS
    //////////////////////////////////////////////////////////////*/

    uint256 internal constant BPS = 10_000;
    uint256 internal constant WAD = 1e18;
    uint8 internal constant DECIMALS_OFFSET = 6;
    /// @inheritdoc IOptionMarket
    uint256 public constant MAX_ACTIVE_SERIES = 64;
    /// @inheritdoc IOptionMarket
    /// @dev 20% spread at most.
    uint256 public constant MAX_SPREAD_BPS = 2_000;
    /// @inheritdoc IOptionMarket
    bytes32 public constant SERIES_CREATOR_ROLE = keccak256("SERIES_CREATOR_ROLE");
    /// @dev Bounds of the quote steps (`listUnderlying`): a 20% price step, a 100-point vol step.
    uint256 internal constant MAX_PRICE_STEP_BPS = 2_000;
    uint256 internal constant MAX_VOL_STEP = 1e18;

    /*//////////////////////////////////////////////////////////////
                               IMMUTABLES
    //////////////////////////////////////////////////////////////*/

    /// @inheritdoc IOptionMarket
    uint256 public immutable callCapBps;
    /// @dev 10^(36 − baseDecimals): (1e18 value per unit) × (1e18 amount) / SCALE = base units.
    uint256 private immutable _valueScale;

    /*//////////////////////////////////////////////////////////////
                                STORAGE
    //////////////////////////////////////////////////////////////*/

    /// @inheritdoc IOptionMarket
    mapping(address underlying => Underlying) public underlyingConfig;
    mapping(bytes32 seriesId => Series) private _series;
    /// @inheritdoc IOptionMarket
    mapping(bytes32 seriesId => mapping(address holder => uint256)) public positionOf;
    bytes32[] private _activeSeries;
    /// @inheritdoc IOptionMarket
    uint256 public lockedCollateral;
    /// @inheritdoc IOptionMarket
    uint256 public owedPayouts;
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

    /// @param baseAsset The stablecoin premiums, collateral and payouts are paid in (≤ 18 decimals).
    /// @param admin Holder of `DEFAULT_ADMIN_ROLE`.
    /// @param callCapBps_ Cap of a call's payout, bps of its strike (1 … 100_000).
    constructor(IERC20Metadata baseAsset, string memory name_, string memory symbol_, address admin, uint256 callCapBps_)
        ERC4626(baseAsset)
        ERC20(name_, symbol_)
    {
        if (callCapBps_ == 0 || callCapBps_ > 10 * BPS) revert LimitOutOfRange(callCapBps_, 10 * BPS);
        callCapBps = callCapBps_;
        _valueScale = 10 ** (36 - uint256(baseAsset.decimals()));
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        _setParams(100, 1 hours, 365 days);
    }

    /*//////////////////////////////////////////////////////////////
                                TRADERS
    //////////////////////////////////////////////////////////////*/

    /// @inheritdoc IOptionMarket
    function buy(
        address underlying,
        uint256 strike,
        uint256 expiry,
        bool isCall,
        uint256 amount,
        uint256 maxPremium,
        address receiver
    ) external nonReentrant returns (bytes32 seriesId, uint256 premium) {
        if (amount == 0) revert ZeroAmount();
        uint256 fair;
        (premium, fair) = quote(underlying, strike, expiry, isCall, amount, true);
        if (premium > maxPremium) revert PremiumAboveMax(premium, maxPremium);
        seriesId = _seriesOrCreate(underlying, strike, expiry, isCall);
        Series storage s = _series[seriesId];
        uint256 newInterest = s.openInterest + amount;
        uint256 collateral = _collateralFor(s, newInterest) - s.collateral;
        uint256 free = freeLiquidity();
        if (collateral > free) revert InsufficientLiquidity(collateral, free);
        s.openInterest = newInterest;
        s.collateral += collateral;
        lockedCollateral += collateral;
        positionOf[seriesId][receiver] += amount;
        IERC20(asset()).safeTransferFrom(msg.sender, address(this), premium);
        emit Bought(seriesId, msg.sender, receiver, amount, premium, fair, collateral);
    }

    /// @inheritdoc IOptionMarket
    function sell(bytes32 seriesId, uint256 amount, uint256 minPremium, address receiver)
        external
        nonReentrant
        returns (uint256 premium)
    {
        if (amount == 0) revert ZeroAmount();
        Series storage s = _existing(seriesId);
        if (block.timestamp >= s.expiry) revert ExpiryState(seriesId, s.expiry, block.timestamp);
        uint256 position = positionOf[seriesId][msg.sender];
        if (position < amount) revert InsufficientPosition(seriesId, position, amount);
        uint256 fair;
        (premium, fair) = _quoteSeries(s.underlying, s.strike, s.expiry, s.isCall, amount, false);
        if (premium < minPremium) revert PremiumBelowMin(premium, minPremium);
        uint256 newInterest = s.openInterest - amount;
        uint256 released = s.collateral - _collateralFor(s, newInterest);
        positionOf[seriesId][msg.sender] = position - amount;
        s.openInterest = newInterest;
        s.collateral -= released;
        lockedCollateral -= released;
        IERC20(asset()).safeTransfer(receiver, premium);
        emit Sold(seriesId, msg.sender, receiver, amount, premium, fair);
    }

    /// @inheritdoc IOptionMarket
    function settle(bytes32 seriesId, uint80 roundId) external nonReentrant {
        Series storage s = _existing(seriesId);
        if (s.settled) revert SettlementState(seriesId, true);
        (uint80 settlementRound, uint256 price) = _settlementRound(seriesId, s);
        if (roundId != settlementRound) revert NotSettlementRound(seriesId, roundId, settlementRound);
        uint256 payoff = _payoff(s.strike, s.isCall, price);
        uint256 owed = payoff.mulDiv(s.openInterest, _valueScale, Math.Rounding.Ceil);
        // Collateral covers the largest payoff, so owed ≤ collateral.
        lockedCollateral -= s.collateral;
        owedPayouts += owed;
        s.collateral = 0;
        s.settled = true;
        s.settlementPrice = price;
        s.payoffPerUnit = payoff;
        s.owed = owed;
        _removeActive(seriesId);
        emit Settled(seriesId, roundId, price, payoff, owed);
    }

    /// @inheritdoc IOptionMarket
    function exercise(bytes32 seriesId, address holder) external nonReentrant returns (uint256 payout) {
        Series storage s = _existing(seriesId);
        if (!s.settled) revert SettlementState(seriesId, false);
        uint256 amount = positionOf[seriesId][holder];
        if (amount == 0) return 0;
        payout = s.payoffPerUnit.mulDiv(amount, _valueScale, Math.Rounding.Floor);
        positionOf[seriesId][holder] = 0;
        s.openInterest -= amount;
        // The last holder releases the rounding dust of the ceil-rounded debt back to the pool.
        uint256 released = s.openInterest == 0 ? s.owed : payout;
        s.owed -= released;
        owedPayouts -= released;
        if (payout != 0) IERC20(asset()).safeTransfer(holder, payout);
        emit Exercised(seriesId, holder, amount, payout);
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
    function seriesId(address underlying, uint256 strike, uint256 expiry, bool isCall) public pure returns (bytes32) {
        return keccak256(abi.encode(underlying, strike, expiry, isCall));
    }

    /// @inheritdoc IOptionMarket
    function series(bytes32 id) external view returns (Series memory) {
        return _series[id];
    }

    /// @inheritdoc IOptionMarket
    function activeSeries() external view returns (bytes32[] memory) {
        return _activeSeries;
    }

    /// @inheritdoc IOptionMarket
    function freeLiquidity() public view returns (uint256) {
        uint256 balance = IERC20(asset()).balanceOf(address(this));
        uint256 committed = lockedCollateral + owedPayouts;
        return balance > committed ? balance - committed : 0;
    }

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
        (fair,) = _fairAndStep(underlying, strike, expiry, isCall);
    }

    /// @inheritdoc IOptionMarket
    function greeks(address underlying, uint256 strike, uint256 expiry) external view returns (BlackScholes.Greeks memory) {
        Underlying storage u = _listed(underlying);
        uint256 tte = expiry > block.timestamp ? expiry - block.timestamp : 0;
        return BlackScholes.greeks(
            BlackScholes.Inputs({spot: _spot(u), strike: strike, timeToExpiry: tte, volatility: _volatility(u), rate: 0})
        );
    }

    /// @inheritdoc IOptionMarket
    function positionValue(bytes32 id, uint256 amount) public view returns (uint256) {
        return _mark(id, amount, Math.Rounding.Floor);
    }

    /// @inheritdoc IOptionMarket
    function findSettlementRound(bytes32 id) external view returns (uint80 roundId) {
        (roundId,) = _settlementRound(id, _existing(id));
    }

    /// @notice LP NAV: base balance less the payouts owed and less the open options at their mark
    /// (rounded up: the pool values its liability conservatively), floored at zero. An expired series is
    /// marked at its settlement payout, so settling it never moves the NAV; while its settlement round is
    /// pending (at most a heartbeat after expiry, only when the round current at expiry was stale) this
    /// reverts with `SettlementPending`, and LP deposits and withdrawals wait.
    function totalAssets() public view override returns (uint256) {
        uint256 liability = owedPayouts;
        uint256 n = _activeSeries.length;
        for (uint256 i; i < n; ++i) {
            bytes32 id = _activeSeries[i];
            liability += _mark(id, _series[id].openInterest, Math.Rounding.Ceil);
        }
        uint256 balance = IERC20(asset()).balanceOf(address(this));
        return balance > liability ? balance - liability : 0;
    }

    /// @inheritdoc ERC4626
    /// @dev Capped by the free liquidity.
    function maxWithdraw(address owner) public view override returns (uint256) {
        return Math.min(super.maxWithdraw(owner), freeLiquidity());
    }

    /// @inheritdoc ERC4626
    /// @dev Capped by the shares the free liquidity can pay (rounded down).
    function maxRedeem(address owner) public view override returns (uint256) {
        return Math.min(super.maxRedeem(owner), _convertToShares(freeLiquidity(), Math.Rounding.Floor));
    }

    /*//////////////////////////////////////////////////////////////
                                INTERNAL
    //////////////////////////////////////////////////////////////*/

    function _decimalsOffset() internal pure override returns (uint8) {
        return DECIMALS_OFFSET;
    }

    /// @dev LP deposits and withdrawals are guarded like trades.
    function _deposit(address caller, address receiver, uint256 assets, uint256 shares) internal override nonReentrant {
        super._deposit(caller, receiver, assets, shares);
    }

    function _withdraw(address caller, address receiver, address owner, uint256 assets, uint256 shares)
        internal
        override
        nonReentrant
    {
        super._withdraw(caller, receiver, owner, assets, shares);
    }

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

    /// @dev Fair value per unit (1e18 USD) and the feed-step part of the half-spread per unit (1e18 USD,
    /// rounded up): |Δ|·dS + ½·|Γ|·dS² + |vega|·volStep with dS = spot · priceStepBps (contract NatSpec).
    /// At or after expiry: the intrinsic value at the latest price and no step.
    function _fairAndStep(address underlying, uint256 strike, uint256 expiry, bool isCall)
        internal
        view
        returns (uint256 fair, uint256 step)
    {
        Underlying storage u = _listed(underlying);
        if (strike < BlackScholes.MIN_PRICE || strike > BlackScholes.MAX_PRICE / 20) revert StrikeOutOfRange(strike);
        uint256 spot = _spot(u);
        if (block.timestamp >= expiry) return (_payoff(strike, isCall, spot), 0);
        BlackScholes.Inputs memory p = BlackScholes.Inputs({
            spot: spot,
            strike: strike,
            timeToExpiry: expiry - block.timestamp,
            volatility: _volatility(u),
            rate: 0
        });
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

    function _mark(bytes32 id, uint256 amount, Math.Rounding rounding) internal view returns (uint256) {
        if (amount == 0) return 0;
        Series storage s = _existing(id);
        uint256 perUnit;
        if (s.settled) {
            perUnit = s.payoffPerUnit;
        } else if (block.timestamp > s.expiry) {
            // Expired: exactly what settlement will pay (the settlement round's price), never the latest.
            (, uint256 price) = _settlementRound(id, s);
            perUnit = _payoff(s.strike, s.isCall, price);
        } else {
            (perUnit,) = _fairAndStep(s.underlying, s.strike, s.expiry, s.isCall);
        }
        return perUnit.mulDiv(amount, _valueScale, rounding);
    }

    function _absDiff(uint256 a, uint256 b) internal pure returns (uint256) {
        return a > b ? a - b : b - a;
    }

    /// @dev Collateral (base units, rounded up) for `interest` options of `s`: the largest payoff.
    function _collateralFor(Series storage s, uint256 interest) internal view returns (uint256) {
        uint256 perUnit = s.isCall ? s.strike * callCapBps / BPS : s.strike;
        return perUnit.mulDiv(interest, _valueScale, Math.Rounding.Ceil);
    }

    /// @dev Payoff per unit (1e18 USD) at `price`; a call's is capped at strike × callCapBps.
    function _payoff(uint256 strike, bool isCall, uint256 price) internal view returns (uint256) {
        if (!isCall) return strike > price ? strike - price : 0;
        if (price <= strike) return 0;
        return Math.min(price - strike, strike * callCapBps / BPS);
    }

    function _seriesOrCreate(address underlying, uint256 strike, uint256 expiry, bool isCall)
        internal
        returns (bytes32 id)
    {
        id = seriesId(underlying, strike, expiry, isCall);
        Series storage s = _series[id];
        if (s.underlying != address(0)) {
            if (s.settled) revert SettlementState(id, true);
            return id;
        }
        if (!hasRole(SERIES_CREATOR_ROLE, msg.sender)) revert SeriesCreationNotAllowed(msg.sender, id);
        if (_activeSeries.length >= MAX_ACTIVE_SERIES) revert TooManyActiveSeries(MAX_ACTIVE_SERIES);
        s.underlying = underlying;
        s.expiry = uint64(expiry);
        s.isCall = isCall;
        s.strike = strike;
        _activeSeries.push(id);
        emit SeriesCreated(id, underlying, strike, expiry, isCall);
    }

    function _removeActive(bytes32 id) internal {
        uint256 n = _activeSeries.length;
        for (uint256 i; i < n; ++i) {
            if (_activeSeries[i] == id) {
                _activeSeries[i] = _activeSeries[n - 1];
                _activeSeries.pop();
                return;
            }
        }
    }

    function _existing(bytes32 id) internal view returns (Series storage s) {
        s = _series[id];
        if (s.underlying == address(0)) revert UnknownSeries(id);
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


    /// @dev The settlement round of expired series `s` and its price (1e18 USD), by the rule in the
    /// contract NatSpec; reverts before or at expiry (`ExpiryState`), while pending (`SettlementPending`)
    /// and on a non-positive answer (`InvalidPrice`).
    function _settlementRound(bytes32 id, Series storage s) internal view returns (uint80 roundId, uint256 price) {
        uint256 expiry = s.expiry;
        if (block.timestamp <= expiry) revert ExpiryState(id, expiry, block.timestamp);
        Underlying storage u = underlyingConfig[s.underlying];
        uint256 heartbeat = u.priceHeartbeat;
        (uint80 before, uint256 beforeAt, uint80 next, uint256 nextAt) = ChainlinkReader.roundsAround(u.priceFeed, expiry);
        if (before != 0 && expiry - beforeAt <= heartbeat) {
            roundId = before; // 1. the round current at expiry, fresh
        } else if (next != 0 && nextAt - expiry <= heartbeat) {
            roundId = next; // 2. the first round after expiry, within a heartbeat
        } else if (block.timestamp > expiry + heartbeat && (before != 0 || next != 0)) {
            roundId = before != 0 ? before : next; // 3. nothing within a heartbeat after expiry: final
        } else {
            revert SettlementPending(id, expiry, expiry + heartbeat);
        }
        // slither-disable-next-line unused-return (the round's time was already checked by roundsAround above; a missing round answers 0 and reverts below)
        (int256 answer,) = ChainlinkReader.roundAt(u.priceFeed, roundId);
        if (answer <= 0) revert ChainlinkReader.InvalidPrice(address(u.priceFeed), answer);
        price = uint256(answer) * WAD / 10 ** u.priceDecimals;
    }
}
