// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {AggregatorV3Interface} from "@chainlink/contracts/src/v0.8/shared/interfaces/AggregatorV3Interface.sol";

import {BlackScholes} from "../BlackScholes.sol";

/// @title IOptionMarket
/// @notice European, cash-settled puts and capped calls on whitelisted underlyings, written by an ERC-4626
/// pool of the base asset (a USD stablecoin) and settled in it from the underlying's Chainlink price feed.
/// The implementation (`OptionMarket`) is also an OpenZeppelin ERC-4626 vault (LP shares): `deposit`,
/// `redeem`, `totalAssets` (the LP NAV) and the rest of `IERC4626` are not repeated here.
/// @dev Units used throughout:
/// - strikes, spot and values per unit: 1e18 fixed point, USD per whole underlying;
/// - option amounts: 1e18 fixed point, whole underlyings (1e18 = an option on one token);
/// - premiums, collateral, payouts, liquidity: base-asset units (the base token's smallest unit);
/// - implied volatility: 1e18 = 100% a year; `volStep` likewise (1e18 = 100 vol points);
/// - spreads and steps: bps (10_000 = 100%); times: Unix seconds; durations: seconds.
/// Feed failures revert with the errors of `ChainlinkReader` (one scheme for every contract of the project):
/// `StalePrice(feed, updatedAt, heartbeat)`, `InvalidPrice(feed, answer)`,
/// `PriceOutOfBounds(feed, answer, minAnswer, maxAnswer)`, `SequencerDown(uptimeFeed, status, startedAt)`,
/// `SequencerGracePeriod(uptimeFeed, startedAt, gracePeriod)`; invalid pricing inputs with
/// `BlackScholes.BlackScholesInputOutOfRange`.
interface IOptionMarket {
    /*//////////////////////////////////////////////////////////////
                                 TYPES
    //////////////////////////////////////////////////////////////*/

    /// @notice Feeds of one whitelisted underlying.
    /// @param priceFeed USD price of one whole underlying (the feed the vault uses).
    /// @param volFeed Annualised implied volatility, scaled by its own decimals.
    /// @param priceHeartbeat Largest age of a live price answer, seconds (also the settlement-round bound).
    /// @param volHeartbeat Largest age of a vol answer, seconds.
    /// @param priceDecimals The price feed's decimals.
    /// @param volDecimals The vol feed's decimals.
    /// @param listed True while the underlying is whitelisted.
    /// @param priceStepBps One price-feed update step (its deviation threshold), bps of spot.
    /// @param volStep One vol-feed update step, 1e18 = 100 vol points.
    /// @param minPriceAnswer Least price answer accepted live, in the feed's decimals (`setAnswerBounds`).
    /// @param maxPriceAnswer Largest price answer accepted live (0: no upper bound).
    /// @param minVolAnswer Least vol answer accepted, in the feed's decimals.
    /// @param maxVolAnswer Largest vol answer accepted (0: no upper bound).
    struct Underlying {
        AggregatorV3Interface priceFeed;
        AggregatorV3Interface volFeed;
        uint32 priceHeartbeat;
        uint32 volHeartbeat;
        uint8 priceDecimals;
        uint8 volDecimals;
        bool listed;
        uint16 priceStepBps;
        uint64 volStep;
        uint128 minPriceAnswer;
        uint128 maxPriceAnswer;
        uint128 minVolAnswer;
        uint128 maxVolAnswer;
    }

    /// @notice Terms and state of one series.
    /// @param underlying The underlying token (zero: the series does not exist).
    /// @param expiry Unix time of expiry, seconds.
    /// @param isCall Capped call (true) or put.
    /// @param settled True once `settle` ran.
    /// @param strike Strike, 1e18 USD per whole underlying.
    /// @param openInterest Options outstanding, 1e18 = one whole underlying.
    /// @param collateral Base units locked against the open interest (until settlement).
    /// @param settlementPrice Underlying price at expiry, 1e18 USD (0 until settled).
    /// @param payoffPerUnit Payout per whole underlying at settlement, 1e18 USD.
    /// @param owed Base units still owed to holders after settlement.
    struct Series {
        address underlying;
        uint64 expiry;
        bool isCall;
        bool settled;
        uint256 strike;
        uint256 openInterest;
        uint256 collateral;
        uint256 settlementPrice;
        uint256 payoffPerUnit;
        uint256 owed;
    }

    /*//////////////////////////////////////////////////////////////
                                 ERRORS
    //////////////////////////////////////////////////////////////*/

    /// @notice The implied volatility (1e18) is outside the pricing library's domain [min, max].
    error VolatilityOutOfRange(address feed, uint256 volatility, uint256 min, uint256 max);
    /// @notice The underlying is not whitelisted.
    error UnderlyingNotListed(address underlying);
    /// @notice Time to expiry (seconds) outside the quoting window [minTimeToExpiry, maxTimeToExpiry].
    error ExpiryOutsideWindow(uint256 expiry, uint256 timeToExpiry, uint256 minTimeToExpiry, uint256 maxTimeToExpiry);
    /// @notice The strike (1e18 USD) is outside the pricing library's domain.
    error StrikeOutOfRange(uint256 strike);
    /// @notice A trade of zero options.
    error ZeroAmount();
    /// @notice The premium asked (base units) is above the buyer's maximum.
    error PremiumAboveMax(uint256 premium, uint256 maxPremium);
    /// @notice The premium offered (base units) is below the seller's minimum.
    error PremiumBelowMin(uint256 premium, uint256 minPremium);
    /// @notice The pool's free liquidity (base units) cannot collateralise the trade.
    error InsufficientLiquidity(uint256 collateral, uint256 freeLiquidity);
    /// @notice The number of unsettled series reached `MAX_ACTIVE_SERIES`.
    error TooManyActiveSeries(uint256 maxActiveSeries);
    /// @notice The holder has fewer options of the series than asked (1e18 = one whole underlying).
    error InsufficientPosition(bytes32 seriesId, uint256 position, uint256 amount);
    /// @notice The series does not exist.
    error UnknownSeries(bytes32 seriesId);
    /// @notice The series has expired (no more trading) or has not yet (no settlement); times in seconds.
    error ExpiryState(bytes32 seriesId, uint256 expiry, uint256 timestamp);
    /// @notice The series is already settled, or not yet settled when exercising.
    error SettlementState(bytes32 seriesId, bool settled);
    /// @notice The named round is not the settlement round of the series (see `findSettlementRound`).
    error NotSettlementRound(bytes32 seriesId, uint80 roundId, uint80 settlementRoundId);
    /// @notice The settlement round is not known yet: the round current at expiry is stale and no round has
    /// landed within the heartbeat after expiry; known at the latest after `decidedAfter` (Unix seconds).
    error SettlementPending(bytes32 seriesId, uint256 expiry, uint256 decidedAfter);
    /// @notice Only `SERIES_CREATOR_ROLE` opens a new series.
    error SeriesCreationNotAllowed(address caller, bytes32 seriesId);
    /// @notice A limit is outside its allowed range (`value` above `maxValue`, or a min above its max).
    error LimitOutOfRange(uint256 value, uint256 maxValue);
    /// @notice A feed was listed with a zero heartbeat.
    error ZeroHeartbeat(address underlying);

    /*//////////////////////////////////////////////////////////////
                                 EVENTS
    //////////////////////////////////////////////////////////////*/

    /// @notice An underlying listed or re-configured (heartbeats in seconds, `priceStepBps` in bps,
    /// `volStep` 1e18 = 100 vol points).
    event UnderlyingListed(
        address indexed underlying,
        address priceFeed,
        address volFeed,
        uint32 priceHeartbeat,
        uint32 volHeartbeat,
        uint256 priceStepBps,
        uint256 volStep
    );
    /// @notice A new series (strike 1e18 USD, expiry Unix seconds).
    event SeriesCreated(bytes32 indexed seriesId, address indexed underlying, uint256 strike, uint256 expiry, bool isCall);
    /// @notice An option bought from the pool: `amount` 1e18 units; `premium`, `fairValue` and the extra
    /// `collateral` locked in base units.
    event Bought(
        bytes32 indexed seriesId,
        address indexed buyer,
        address indexed receiver,
        uint256 amount,
        uint256 premium,
        uint256 fairValue,
        uint256 collateral
    );
    /// @notice An option sold back to the pool: `amount` 1e18 units; `premium` and `fairValue` in base units.
    event Sold(
        bytes32 indexed seriesId,
        address indexed seller,
        address indexed receiver,
        uint256 amount,
        uint256 premium,
        uint256 fairValue
    );
    /// @notice A series settled at `roundId`: price and payoff per unit 1e18 USD, `owed` base units.
    event Settled(bytes32 indexed seriesId, uint80 roundId, uint256 settlementPrice, uint256 payoffPerUnit, uint256 owed);
    /// @notice A holder's payout paid: `amount` 1e18 units, `payout` base units.
    event Exercised(bytes32 indexed seriesId, address indexed holder, uint256 amount, uint256 payout);
    /// @notice Spread (bps of fair value) and the buy window (seconds) set.
    event ParamsSet(uint256 spreadBps, uint256 minTimeToExpiry, uint256 maxTimeToExpiry);
    /// @notice Live answer bounds set, in each feed's own decimals (a max of 0: no upper bound).
    event AnswerBoundsSet(
        address indexed underlying, uint256 minPriceAnswer, uint256 maxPriceAnswer, uint256 minVolAnswer, uint256 maxVolAnswer
    );
    /// @notice L2 sequencer uptime feed (zero: none) and grace period (seconds) set.
    event SequencerSet(address uptimeFeed, uint256 gracePeriod);

    /*//////////////////////////////////////////////////////////////
                                TRADERS
    //////////////////////////////////////////////////////////////*/

    /// @notice Buys `amount` options of a series from the pool, creating the series if needed (creation
    /// only by `SERIES_CREATOR_ROLE`).
    /// @param underlying Whitelisted underlying token.
    /// @param strike Strike, 1e18 USD per whole underlying.
    /// @param expiry Unix time of expiry; time to expiry must lie in [minTimeToExpiry, maxTimeToExpiry].
    /// @param isCall Capped call or put.
    /// @param amount Options bought, 1e18 = one whole underlying.
    /// @param maxPremium Most the buyer pays, base units.
    /// @param receiver Credited with the options.
    /// @return seriesId The series' id.
    /// @return premium Base units paid: (fair value + half-spread) × amount, rounded up (see `quote`).
    function buy(
        address underlying,
        uint256 strike,
        uint256 expiry,
        bool isCall,
        uint256 amount,
        uint256 maxPremium,
        address receiver
    ) external returns (bytes32 seriesId, uint256 premium);

    /// @notice Sells `amount` options (1e18 units) of the caller back to the pool before expiry.
    /// @param minPremium Least the seller accepts, base units.
    /// @param receiver Paid the premium.
    /// @return premium Base units paid to `receiver`: (fair value − half-spread) × amount, floored at zero,
    /// rounded down.
    function sell(bytes32 seriesId, uint256 amount, uint256 minPremium, address receiver) external returns (uint256 premium);

    /// @notice Settles an expired series at the underlying's price in its settlement round (the rule in the
    /// implementation's NatSpec; `findSettlementRound` returns it), which the caller names as `roundId`.
    /// Anyone may call, strictly after expiry. Releases the collateral and books the holders' payouts.
    function settle(bytes32 seriesId, uint80 roundId) external;

    /// @notice Pays `holder` the payout of their options of a settled series. Anyone may call.
    /// @return payout Base units paid (rounded down), zero when the holder holds none.
    function exercise(bytes32 seriesId, address holder) external returns (uint256 payout);

    /*//////////////////////////////////////////////////////////////
                               GOVERNANCE
    //////////////////////////////////////////////////////////////*/

    /// @notice Whitelists `underlying` (or updates its configuration) with its price and implied-volatility
    /// feeds, their heartbeats (seconds) and one update step of each, which the quote's half-spread covers:
    /// `priceStepBps` the price feed's deviation threshold (bps of spot, ≤ 2,000) and `volStep` the vol
    /// feed's step (1e18 = 100 vol points, ≤ 1e18). Admin only.
    function listUnderlying(
        address underlying,
        AggregatorV3Interface priceFeed,
        uint32 priceHeartbeat,
        AggregatorV3Interface volFeed,
        uint32 volHeartbeat,
        uint16 priceStepBps,
        uint64 volStep
    ) external;

    /// @notice Sets the bounds of a listed underlying's live answers, in each feed's own decimals (a max of
    /// 0: no upper bound). Quotes and marks before expiry refuse an answer outside them (`PriceOutOfBounds`);
    /// settlement does not (refusing the settlement round would lock the collateral). Admin only.
    function setAnswerBounds(address underlying, uint128 minPrice, uint128 maxPrice, uint128 minVol, uint128 maxVol)
        external;

    /// @notice Sets the L2 sequencer uptime feed (zero address: none) and its grace period (seconds, ≤ 1 day).
    /// Admin only.
    function setSequencer(AggregatorV3Interface uptimeFeed, uint32 gracePeriod) external;

    /// @notice Sets the spread (bps of fair value, ≤ `MAX_SPREAD_BPS`) and the window of times to expiry
    /// (seconds) for buys. Admin only.
    function setParams(uint256 spreadBps_, uint256 minTimeToExpiry_, uint256 maxTimeToExpiry_) external;

    /*//////////////////////////////////////////////////////////////
                                 VIEWS
    //////////////////////////////////////////////////////////////*/

    /// @notice Bound on unsettled series (each is marked in the LP NAV).
    function MAX_ACTIVE_SERIES() external view returns (uint256);

    /// @notice Largest `spreadBps`, bps of fair value.
    function MAX_SPREAD_BPS() external view returns (uint256);

    /// @notice Role that may open new series (the vault, the admin).
    function SERIES_CREATOR_ROLE() external view returns (bytes32);

    /// @notice A call pays at most `strike × callCapBps / 10_000` per unit (its collateral), bps.
    function callCapBps() external view returns (uint256);

    /// @notice Configuration of `underlying` (the fields of `Underlying`, in order).
    function underlyingConfig(address underlying)
        external
        view
        returns (
            AggregatorV3Interface priceFeed,
            AggregatorV3Interface volFeed,
            uint32 priceHeartbeat,
            uint32 volHeartbeat,
            uint8 priceDecimals,
            uint8 volDecimals,
            bool listed,
            uint16 priceStepBps,
            uint64 volStep,
            uint128 minPriceAnswer,
            uint128 maxPriceAnswer,
            uint128 minVolAnswer,
            uint128 maxVolAnswer
        );

    /// @notice Options of series `seriesId` held by `holder`, 1e18 = one whole underlying.
    function positionOf(bytes32 seriesId, address holder) external view returns (uint256);

    /// @notice Base units locked as collateral of unsettled series.
    function lockedCollateral() external view returns (uint256);

    /// @notice Base units owed to holders of settled series, not yet exercised.
    function owedPayouts() external view returns (uint256);

    /// @notice Spread, bps of fair value (a part of the half-spread; see `quote`).
    function spreadBps() external view returns (uint256);

    /// @notice Shortest time to expiry a buy accepts, seconds.
    function minTimeToExpiry() external view returns (uint256);

    /// @notice Longest time to expiry a buy accepts, seconds.
    function maxTimeToExpiry() external view returns (uint256);

    /// @notice Chainlink L2 sequencer uptime feed (zero: none, an L1 deployment).
    function sequencerUptimeFeed() external view returns (AggregatorV3Interface);

    /// @notice Seconds after the sequencer comes back up during which live prices are refused.
    function sequencerGracePeriod() external view returns (uint32);

    /// @notice Id of a series: keccak256 of its ABI-encoded terms (strike 1e18 USD, expiry Unix seconds).
    function seriesId(address underlying, uint256 strike, uint256 expiry, bool isCall) external pure returns (bytes32);

    /// @notice Terms and state of a series (all zero when it does not exist).
    function series(bytes32 id) external view returns (Series memory);

    /// @notice Unsettled series, in creation order (modulo swaps on removal).
    function activeSeries() external view returns (bytes32[] memory);

    /// @notice Base units neither locked as collateral nor owed to holders.
    function freeLiquidity() external view returns (uint256);

    /// @notice Premium of a trade with the pool and its fair value, both base units.
    /// @dev Buy: (fair + half-spread) × amount, rounded up; the time to expiry must be inside the window.
    /// Sell: (fair − half-spread) × amount floored at zero, rounded down. The half-spread per unit is
    /// fair · spreadBps + |Δ|·dS + ½·|Γ|·dS² + |vega|·volStep with dS = spot · priceStepBps. Reverts on stale
    /// or invalid feeds.
    /// @param amount Options, 1e18 = one whole underlying.
    /// @param isBuy True when the trader buys from the pool.
    /// @return premium Base units paid (buy) or received (sell).
    /// @return fairValue Black-Scholes value of `amount` options, base units, rounded down.
    function quote(address underlying, uint256 strike, uint256 expiry, bool isCall, uint256 amount, bool isBuy)
        external
        view
        returns (uint256 premium, uint256 fairValue);

    /// @notice Black-Scholes fair value of one option (1e18 = one whole underlying), 1e18 USD.
    /// @dev A call is the capped call BS(K) − BS(K + cap). At or after expiry, the intrinsic value at the
    /// latest price (an expired series is marked at its settlement price: `positionValue`).
    function fairPrice(address underlying, uint256 strike, uint256 expiry, bool isCall) external view returns (uint256 fair);

    /// @notice Prices and Greeks of the plain call and put of a strike and expiry (scales in `BlackScholes`).
    function greeks(address underlying, uint256 strike, uint256 expiry) external view returns (BlackScholes.Greeks memory);

    /// @notice Value of `amount` options (1e18 units) of a series in base units, rounded down: the payout
    /// once settled; after expiry but before settlement, the payout settlement will pay (reverts with
    /// `SettlementPending` while that round is not known); before expiry, the Black-Scholes fair value.
    /// This is the mark a holder (e.g. a vault) books.
    function positionValue(bytes32 id, uint256 amount) external view returns (uint256);

    /// @notice The settlement round of an expired series, the one to name in `settle`. Reverts before
    /// expiry (`ExpiryState`) and while pending (`SettlementPending`).
    function findSettlementRound(bytes32 id) external view returns (uint80 roundId);
}
