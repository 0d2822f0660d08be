// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {AggregatorV3Interface} from "@chainlink/contracts/src/v0.8/shared/interfaces/AggregatorV3Interface.sol";
import {ISwapRouter} from "@uniswap/v3-periphery/contracts/interfaces/ISwapRouter.sol";

import {IOptionMarket} from "./IOptionMarket.sol";

/// @title IRiskParityVault
/// @notice ERC-4626 vault over a USD stablecoin (the base asset) that holds a whitelist of risk assets, each
/// priced by a Chainlink `AggregatorV3Interface` feed, and European options bought from an `IOptionMarket`.
/// An off-chain keeper keeps the holdings at equal risk contribution through `rebalance` /
/// `rebalanceWithOptions`; the vault checks every leg against its own oracle prices and rolling budgets.
/// The implementation (`RiskParityVault`) is also an OpenZeppelin ERC-4626 vault: `deposit`, `mint`,
/// `withdraw`, `redeem`, the previews, the `max*` views and `totalAssets` are those of `IERC4626` (with the
/// entry/exit fee in the previews) and are not repeated here.
/// @dev Units used throughout:
/// - values, NAV, premiums and budgets spent: base-asset units (the base token's smallest unit);
/// - token amounts: the token's smallest unit; option amounts: 1e18 = an option on one whole underlying;
/// - strikes: 1e18 fixed point, USD per whole underlying; `highWaterMark`: 1e18 fixed point assets per share;
/// - limits, fees and budgets: bps (10_000 = 100%); times: Unix seconds; durations and heartbeats: seconds.
/// Feed failures revert with the errors of `ChainlinkReader` (one scheme for every contract of the project):
/// `StalePrice(feed, updatedAt, heartbeat)` and `InvalidPrice(feed, answer)`; option marks may revert with
/// the `IOptionMarket` errors.
interface IRiskParityVault {
    /*//////////////////////////////////////////////////////////////
                                 TYPES
    //////////////////////////////////////////////////////////////*/

    /// @notice Which Uniswap V3 router the vault swaps through: the original `SwapRouter`
    /// (`@uniswap/v3-periphery`, `exactInputSingle` with a deadline field) or `SwapRouter02`
    /// (`@uniswap/swap-router-contracts`, the router of Uniswap's testnet deployments, no deadline field; the
    /// vault's own `DeadlinePassed` check enforces the rebalance deadline).
    enum RouterKind {
        SwapRouter,
        SwapRouter02
    }

    /// @notice Configuration of one whitelisted risk asset.
    /// @param feed Chainlink-compatible price feed quoting the asset in USD (= base-asset units).
    /// @param heartbeat Maximum age of the feed's answer, in seconds.
    /// @param poolFee Fee tier (hundredths of a bip) of the Uniswap V3 pool against the base asset.
    /// @param tokenDecimals The asset's ERC-20 decimals.
    /// @param feedDecimals The feed's decimals.
    /// @param listed True while the asset is whitelisted.
    /// @param deviationBps The feed's deviation threshold, bps: how far the market may move before the
    /// feed publishes a new answer (the largest oracle lag `entryExitFeeBps` must cover).
    struct RiskAsset {
        AggregatorV3Interface feed;
        uint32 heartbeat;
        uint24 poolFee;
        uint8 tokenDecimals;
        uint8 feedDecimals;
        bool listed;
        uint16 deviationBps;
    }

    /// @notice One swap of a rebalance: exactly one side is the base asset.
    /// @param tokenIn Token sold by the vault.
    /// @param tokenOut Token bought by the vault.
    /// @param amountIn Amount of `tokenIn` sold, in its smallest unit.
    /// @param minAmountOut Least acceptable amount of `tokenOut`, in its smallest unit.
    struct SwapLeg {
        address tokenIn;
        address tokenOut;
        uint256 amountIn;
        uint256 minAmountOut;
    }

    /// @notice One option trade of a rebalance with the `IOptionMarket`'s pool. The vault holds long
    /// options only: a buy opens or adds to a position, a sell closes (part of) a held one.
    /// @param underlying Whitelisted risk asset the option is written on.
    /// @param strike Strike, 1e18 fixed point in USD per whole underlying.
    /// @param expiry Unix time of expiry, seconds.
    /// @param isCall Call (capped, see `IOptionMarket`) or put.
    /// @param isBuy True to buy from the market, false to sell a held position back.
    /// @param amount Options traded, 1e18 = one whole underlying.
    /// @param premiumLimit Base units: the most paid (buy) or the least received (sell).
    struct OptionLeg {
        address underlying;
        uint256 strike;
        uint256 expiry;
        bool isCall;
        bool isBuy;
        uint256 amount;
        uint256 premiumLimit;
    }

    /*//////////////////////////////////////////////////////////////
                                 ERRORS
    //////////////////////////////////////////////////////////////*/

    /// @notice The token is neither the base asset nor a whitelisted risk asset.
    error AssetNotListed(address token);
    /// @notice A leg does not trade a risk asset against the base asset.
    error InvalidLeg(uint256 legIndex, address tokenIn, address tokenOut);
    /// @notice A rebalance was called with no legs or more than 64 (`MAX_LEGS`).
    error InvalidLegCount(uint256 legCount, uint256 maxLegs);
    /// @notice A leg's `minAmountOut` is below the oracle-fair output less `maxSlippageBps` (amounts in
    /// `tokenOut`'s smallest unit).
    error MinAmountOutBelowOracleBound(uint256 legIndex, address tokenOut, uint256 minAmountOut, uint256 oracleBound);
    /// @notice The swap of a leg reverted in the router (for instance its `amountOutMinimum` was not met), with
    /// the router's revert data; or the router answered less than one word (`reason` is then that answer).
    error LegSwapFailed(uint256 legIndex, bytes reason);
    /// @notice A leg returned less than its `minAmountOut` (amounts in `tokenOut`'s smallest unit).
    error SlippageExceeded(uint256 legIndex, address tokenOut, uint256 minAmountOut, uint256 amountOut);
    /// @notice The rebalance trades more than `maxTurnoverBps` of NAV (both bps).
    error TurnoverCapExceeded(uint256 turnoverBps, uint256 maxTurnoverBps);
    /// @notice NAV after the trades is below the keeper's floor (base units).
    error NavBelowFloor(uint256 navAfter, uint256 minNavAfter);
    /// @notice NAV after the trades (base units) fell more than `maxNavLossBps` (bps) below NAV before.
    error NavLossExceeded(uint256 navBefore, uint256 navAfter, uint256 maxNavLossBps);
    /// @notice The rebalance targets another epoch (a replay, or a race lost to another keeper).
    error EpochMismatch(uint256 expectedEpoch, uint256 currentEpoch);
    /// @notice The rebalance's deadline (Unix seconds) has passed.
    error DeadlinePassed(uint256 deadline, uint256 timestamp);
    /// @notice A limit is outside its allowed range (`value` above `maxValue`; for a budget period, outside
    /// [3,600, 31,536,000] seconds: one hour to 365 days).
    error LimitOutOfRange(uint256 value, uint256 maxValue);
    /// @notice A listing or feed change is invalid: the token is the base asset or already listed, or the
    /// heartbeat is zero.
    error AssetConfigInvalid(address token);
    /// @notice The whitelist is full.
    error TooManyAssets(uint256 maxAssets);
    /// @notice `rebalanceWithOptions` got more than `MAX_OPTION_LEGS` option legs, or no leg at all.
    error InvalidOptionLegCount(uint256 optionLegCount, uint256 maxOptionLegs);
    /// @notice An option leg trades a zero amount.
    error InvalidOptionLeg(uint256 legIndex);
    /// @notice No option market is set.
    error OptionMarketNotSet();
    /// @notice A buy leg's `premiumLimit` is above the fair value plus `maxPremiumBps` (base units).
    error PremiumAboveFairBound(uint256 legIndex, uint256 premiumLimit, uint256 bound);
    /// @notice A sell leg's `premiumLimit` is below the fair value less `maxPremiumBps` (base units).
    error PremiumBelowFairBound(uint256 legIndex, uint256 premiumLimit, uint256 bound);
    /// @notice The option trade of a leg reverted in the market.
    error OptionLegFailed(uint256 legIndex, bytes reason);
    /// @notice A leg's premium breached its `premiumLimit` (base units).
    error OptionPremiumExceeded(uint256 legIndex, uint256 premiumLimit, uint256 premium);
    /// @notice Premiums paid in the rolling window exceed `premiumBudgetBps` of NAV (base units; see
    /// `budgetSpent`).
    error PremiumBudgetExceeded(uint256 spentInWindow, uint256 budget);
    /// @notice NAV lost to rebalances in the rolling window exceeds its budget (base units; see `budgetSpent`).
    error NavLossBudgetExceeded(uint256 spentInWindow, uint256 budget);
    /// @notice Value traded by rebalances in the rolling window exceeds its budget (base units; see
    /// `budgetSpent`).
    error TurnoverBudgetExceeded(uint256 spentInWindow, uint256 budget);
    /// @notice The entry/exit fee would be below the largest deviation threshold of a listed feed, bps.
    error FeeBelowDeviation(uint256 feeBps, uint256 maxDeviationBps);
    /// @notice A management or performance fee needs a non-zero fee recipient.
    error InvalidFeeRecipient(address recipient);
    /// @notice More open option series than `maxOpenSeries` after the rebalance.
    error TooManyOpenSeries(uint256 openSeries, uint256 maxOpenSeries);
    /// @notice The vault holds no position in the series.
    error NotOpenSeries(bytes32 seriesId);
    /// @notice The option market cannot change while positions are open.
    error OptionPositionsOpen(uint256 openSeries);

    /*//////////////////////////////////////////////////////////////
                                 EVENTS
    //////////////////////////////////////////////////////////////*/

    /// @notice One executed leg. `oracleAmountOut` is the output the oracle prices imply.
    event LegExecuted(
        uint256 indexed epoch,
        uint256 legIndex,
        address indexed tokenIn,
        address indexed tokenOut,
        uint256 amountIn,
        uint256 amountOut,
        uint256 oracleAmountOut
    );
    /// @notice A completed rebalance. NAVs in base-asset units, turnover in bps of `navBefore`.
    event Rebalanced(uint256 indexed epoch, uint256 navBefore, uint256 navAfter, uint256 turnoverBps, uint256 legCount);
    /// @notice A risk asset whitelisted: heartbeat in seconds, pool fee in hundredths of a bip.
    event RiskAssetListed(address indexed token, address feed, uint32 heartbeat, uint24 poolFee);
    /// @notice A risk asset removed from the whitelist (its balance is valued at zero from then on).
    event RiskAssetDelisted(address indexed token);
    /// @notice The per-call rebalance bounds set, bps.
    event LimitsSet(uint256 maxSlippageBps, uint256 maxTurnoverBps, uint256 maxNavLossBps);
    /// @notice `shares` of `owner` redeemed in kind to `receiver`.
    event RedeemedInKind(address indexed owner, address indexed receiver, uint256 shares);
    /// @notice One executed option leg: premium paid (buy) or received (sell) and the fair value, base units.
    event OptionLegExecuted(
        uint256 indexed epoch,
        uint256 legIndex,
        bytes32 indexed seriesId,
        bool isBuy,
        uint256 amount,
        uint256 premium,
        uint256 fairValue
    );
    /// @notice An expired position settled and exercised: `payout` base units received.
    event OptionSettled(bytes32 indexed seriesId, uint256 payout);
    /// @notice The option market set (zero: options disabled).
    event OptionMarketSet(address market);
    /// @notice The option bounds set: premium bound (bps of fair value), premium budget (bps of NAV per
    /// window), window (seconds), cap on open series.
    event OptionLimitsSet(uint256 maxPremiumBps, uint256 premiumBudgetBps, uint256 premiumPeriod, uint256 maxOpenSeries);
    /// @notice A rolling budget (`BUDGET_NAV_LOSS`, `BUDGET_TURNOVER` or `BUDGET_PREMIUM`) was set.
    event BudgetSet(uint256 indexed kind, uint256 budgetBps, uint256 period);
    /// @notice A listed asset's feed was replaced.
    event RiskAssetFeedSet(address indexed token, address feed, uint32 heartbeat, uint16 deviationBps);
    /// @notice The entry/exit fee changed (set by the admin, or raised to a new feed's deviation threshold).
    event EntryExitFeeSet(uint256 feeBps);
    /// @notice The fee recipient and the management (bps per 365 days) and performance (bps of gains) fees set.
    event FeesSet(address recipient, uint256 managementFeeBps, uint256 performanceFeeBps);
    /// @notice Fee shares minted to `feeRecipient`; `highWaterMark` after them (see `highWaterMark`).
    event FeesAccrued(uint256 managementShares, uint256 performanceShares, uint256 highWaterMark);

    /*//////////////////////////////////////////////////////////////
                               DEPOSITORS
    //////////////////////////////////////////////////////////////*/

    /// @notice Burns `shares` of `owner` and sends `receiver` the same fraction of every holding
    /// (base asset and each listed risk asset), rounded down, after the exit fee: the fraction paid is that
    /// of `shares − ⌈shares × entryExitFeeBps / (10_000 + entryExitFeeBps)⌉` (the fee's slice stays in the
    /// vault). Needs no price and works while paused.
    /// Option positions are NOT paid in kind (they are not transferable) and nothing is paid for their value:
    /// a redeemer in kind forgoes their share of it, which stays with the remaining shares. Nor are delisted
    /// assets paid (see `delistRiskAsset`).
    /// @return amounts Amount sent of the base asset, then of each risk asset in `riskAssets()` order, each in
    /// the token's smallest unit.
    function redeemInKind(uint256 shares, address receiver, address owner) external returns (uint256[] memory amounts);

    /*//////////////////////////////////////////////////////////////
                                 KEEPER
    //////////////////////////////////////////////////////////////*/

    /// @notice Executes the swap legs of one rebalance through Uniswap V3, sells and buys in the given order.
    /// Keeper only.
    /// @dev Checks, in order: keeper role, not paused, deadline, epoch, legs (listed tokens, base on one side,
    /// `minAmountOut` within `maxSlippageBps` of the oracle-fair output, fresh oracles), turnover cap and
    /// budget; then swaps, then NAV floor, NAV loss bound and NAV-loss budget. Increments `rebalanceEpoch`.
    /// @param legs Swaps to make, executed in order (put sells first so buys are funded); 1 to 64.
    /// @param minNavAfter Least acceptable NAV after the trades, base-asset units.
    /// @param expectedEpoch Must equal `rebalanceEpoch`.
    /// @param deadline Unix time after which the call reverts.
    /// @return navAfter NAV after the trades, base-asset units.
    function rebalance(SwapLeg[] calldata legs, uint256 minNavAfter, uint256 expectedEpoch, uint256 deadline)
        external
        returns (uint256 navAfter);

    /// @notice `rebalance` with option legs beside the swap legs: swaps first, then option trades with
    /// `optionMarket`, under the same checks (keeper role, not paused, deadline, epoch, oracle bounds,
    /// turnover cap and budget counting each option leg's fair value, NAV floor, NAV loss bound and budget)
    /// and the option bounds: each buy's `premiumLimit` at most fair × (1 + maxPremiumBps) and each sell's at
    /// least fair × (1 − maxPremiumBps) (fair value from the market's Black-Scholes quote); premiums paid in
    /// the rolling window at most `premiumBudgetBps` of NAV before; at most `maxOpenSeries` series held after.
    /// Keeper only.
    /// @param legs Swaps, as in `rebalance` (may be empty).
    /// @param optionLegs Option trades, executed in order after the swaps (at most `MAX_OPTION_LEGS`).
    /// @param minNavAfter Least acceptable NAV after the trades (options at their mark), base-asset units.
    /// @param expectedEpoch Must equal `rebalanceEpoch`.
    /// @param deadline Unix time after which the call reverts.
    /// @return navAfter NAV after the trades, base-asset units.
    function rebalanceWithOptions(
        SwapLeg[] calldata legs,
        OptionLeg[] calldata optionLegs,
        uint256 minNavAfter,
        uint256 expectedEpoch,
        uint256 deadline
    ) external returns (uint256 navAfter);

    /*//////////////////////////////////////////////////////////////
                                 ANYONE
    //////////////////////////////////////////////////////////////*/

    /// @notice Mints the management and performance fee shares due since `lastFeeAccrual` to `feeRecipient`
    /// (at most once per block). Also runs first in every deposit, mint, withdraw, redeem, redeemInKind and
    /// rebalance, and before fees change, so nobody dodges or pays twice. Management: supply × bps × Δt /
    /// (10_000 × 365 days) shares (floor). Performance: with p the assets per share after those
    /// (1e18 fixed point, virtual shares included), performanceFeeBps of (p − highWaterMark) × supply in
    /// assets, paid as the shares worth that after the mint (floor); the mark rises to the price after the fee.
    /// `redeemInKind` while a feed is stale accrues only the management fee (the performance fee is deferred,
    /// the mark unchanged).
    function accrueFees() external;

    /// @notice Settles an expired option series the vault holds (if the market has not yet) at its settlement
    /// round `roundId` (see `IOptionMarket.settle`, `IOptionMarket.findSettlementRound`), collects the payout
    /// and closes the position. Anyone may call, also while paused.
    /// @return payout Base units received.
    function settleOption(bytes32 seriesId, uint80 roundId) external returns (uint256 payout);

    /*//////////////////////////////////////////////////////////////
                               GOVERNANCE
    //////////////////////////////////////////////////////////////*/

    /// @notice Whitelists `token`, priced by `feed` in USD (answers older than `heartbeat` seconds refused),
    /// traded in the `poolFee` pool (hundredths of a bip) against the base asset. Admin only.
    /// @param deviationBps The feed's deviation threshold, bps (at most 500);
    /// `entryExitFeeBps` is raised to it if lower.
    function listRiskAsset(address token, AggregatorV3Interface feed, uint32 heartbeat, uint24 poolFee, uint16 deviationBps)
        external;

    /// @notice Replaces the feed of a listed asset (also while the old feed is stale and the asset held):
    /// the asset is valued with `feed` from this call on. `entryExitFeeBps` is raised to `deviationBps` if
    /// lower. Admin only.
    function setRiskAssetFeed(address token, AggregatorV3Interface feed, uint32 heartbeat, uint16 deviationBps) external;

    /// @notice Removes `token` from the whitelist, whatever the vault holds of it (a donated wei, or a
    /// holding whose feed failed): from this call on the balance is valued at zero in `totalAssets`, is not
    /// paid by `redeemInKind` and cannot be traded; it stays in the vault (nobody can take it out) and counts
    /// again if the admin re-lists the asset with a working feed. Delisting a held asset therefore writes
    /// its value off: sell it first when its feed and pool still work. Admin only.
    function delistRiskAsset(address token) external;

    /// @notice Sets the per-call rebalance bounds, each in bps (at most 1,000,
    /// 20,000 and 1,000). Admin only.
    function setLimits(uint256 maxSlippageBps_, uint256 maxTurnoverBps_, uint256 maxNavLossBps_) external;

    /// @notice Sets rolling budget `kind` (`BUDGET_NAV_LOSS` or `BUDGET_TURNOVER`; the premium budget is set
    /// by `setOptionLimits`): at most `budgetBps_` of NAV in any window of `period` seconds (see `budgetSpent`).
    /// Changing the period keeps what was charged: the sum still counted is carried into the current bucket.
    /// Admin only.
    function setBudget(uint256 kind, uint256 budgetBps_, uint256 period) external;

    /// @notice Sets the fee on share mints and burns, bps: at least every listed feed's `deviationBps`, at most
    /// 500. Admin only.
    function setEntryExitFee(uint256 feeBps) external;

    /// @notice Sets the fee recipient, the management fee (bps per 365 days, at most 500)
    /// and the performance fee (bps of gains over the high-water mark, at most 3,000).
    /// Fees due under the old settings accrue first (so this reverts while `totalAssets()` does). Admin only.
    function setFees(address recipient, uint256 managementBps, uint256 performanceBps) external;

    /// @notice Sets the market option legs trade with (zero: options disabled); only while no option
    /// position is open. Admin only.
    function setOptionMarket(IOptionMarket market) external;

    /// @notice Sets the option bounds: premium bound (bps of fair value), premium budget (bps of NAV in any
    /// rolling window of `premiumPeriod_` seconds, see `budgetSpent`), and the cap on open series.
    /// Changing the period keeps what was spent (see `setBudget`). Admin only.
    function setOptionLimits(uint256 maxPremiumBps_, uint256 premiumBudgetBps_, uint256 premiumPeriod_, uint256 maxOpenSeries_)
        external;

    /// @notice Stops deposits, withdrawals and rebalances (`redeemInKind` and `settleOption` stay open).
    /// Guardian only.
    function pause() external;

    /// @notice Lifts the pause. Admin only.
    function unpause() external;

    /*//////////////////////////////////////////////////////////////
                               CONSTANTS
    //////////////////////////////////////////////////////////////*/

    /// @notice Role that may call `rebalance` and `rebalanceWithOptions`.
    function KEEPER_ROLE() external view returns (bytes32);
    /// @notice Role that may `pause`.
    function GUARDIAN_ROLE() external view returns (bytes32);
    /// @notice Most option legs per `rebalanceWithOptions`.
    function MAX_OPTION_LEGS() external view returns (uint256);
    /// @notice Index of the rolling budget of NAV lost to rebalances.
    function BUDGET_NAV_LOSS() external view returns (uint256);
    /// @notice Index of the rolling budget of value traded.
    function BUDGET_TURNOVER() external view returns (uint256);
    /// @notice Index of the rolling budget of option premium paid.
    function BUDGET_PREMIUM() external view returns (uint256);
    /// @notice Buckets per rolling window (see `budgetSpent`).
    function BUDGET_BUCKETS() external view returns (uint256);

    /*//////////////////////////////////////////////////////////////
                                 VIEWS
    //////////////////////////////////////////////////////////////*/

    /// @notice The Uniswap V3 router every leg trades through (`SwapRouter` or `SwapRouter02`, see `routerKind`);
    /// it holds a standing maximum allowance of the base asset and of every asset listed since deployment.
    function swapRouter() external view returns (ISwapRouter);
    /// @notice Which router `swapRouter` is (`RouterKind`), fixed at construction.
    function routerKind() external view returns (RouterKind);

    /// @notice Configuration of `token` (the fields of `RiskAsset`, in order; all zero when never listed).
    function riskAssetConfig(address token)
        external
        view
        returns (
            AggregatorV3Interface feed,
            uint32 heartbeat,
            uint24 poolFee,
            uint8 tokenDecimals,
            uint8 feedDecimals,
            bool listed,
            uint16 deviationBps
        );

    /// @notice Number of rebalances done; a rebalance must name it (replay protection).
    function rebalanceEpoch() external view returns (uint64);

    /// @notice Largest shortfall of a leg's `minAmountOut` below its oracle-fair output, bps.
    function maxSlippageBps() external view returns (uint16);

    /// @notice Largest Σ leg value (base units) per rebalance, bps of NAV before.
    function maxTurnoverBps() external view returns (uint16);

    /// @notice Largest fall of NAV across one rebalance, bps of NAV before.
    function maxNavLossBps() external view returns (uint16);

    /// @notice Market the option legs trade with (zero: options disabled).
    function optionMarket() external view returns (IOptionMarket);

    /// @notice Largest premium paid above (or received below) the market's fair value, bps of fair value.
    function maxPremiumBps() external view returns (uint256);

    /// @notice Largest number of option series held at once.
    function maxOpenSeries() external view returns (uint256);

    /// @notice Rolling budget `kind` (`BUDGET_*`): the most charged in any window of `budgetPeriod(kind)`,
    /// bps of NAV before the rebalance that charges.
    function budgetBps(uint256 kind) external view returns (uint256);

    /// @notice Length of the rolling window of budget `kind`, seconds.
    function budgetPeriod(uint256 kind) external view returns (uint256);

    /// @notice Fee on every share mint and burn (deposit, mint, withdraw, redeem, redeemInKind), bps of the
    /// net assets credited or paid; it stays in the vault. Never below any listed feed's `deviationBps`.
    function entryExitFeeBps() external view returns (uint256);

    /// @notice The vault's own long amount per option series, 1e18 units (gifted positions do not count).
    function ownOptionAmount(bytes32 seriesId) external view returns (uint256);

    /// @notice Receiver of the management and performance fee shares.
    function feeRecipient() external view returns (address);

    /// @notice Management fee: shares minted per second = supply × managementFeeBps / (10_000 × 365 days).
    function managementFeeBps() external view returns (uint16);

    /// @notice Performance fee, bps of the gain of assets per share over `highWaterMark`.
    function performanceFeeBps() external view returns (uint16);

    /// @notice Highest assets per share (1e18 fixed point, ERC-4626 virtual shares and asset included) the
    /// performance fee has been charged up to.
    function highWaterMark() external view returns (uint256);

    /// @notice Time of the last fee accrual, Unix seconds.
    function lastFeeAccrual() external view returns (uint40);

    /// @notice Σ over held option series of `IOptionMarket.positionValue` (Black-Scholes before expiry, the
    /// settlement payout after expiry, the payout once settled), base units, rounded down.
    function optionsValue() external view returns (uint256 value);

    /// @notice Ids of the option series the vault holds (see `IOptionMarket.series`).
    function openSeries() external view returns (bytes32[] memory);

    /// @notice The whitelisted risk assets, in listing order.
    function riskAssets() external view returns (address[] memory);

    /// @notice The vault's balances in one call: base asset, then each risk asset in `riskAssets()` order,
    /// each in the token's smallest unit.
    function holdings() external view returns (address[] memory tokens, uint256[] memory balances);

    /// @notice Oracle price of a listed risk asset: the feed's answer (in its own decimals) and decimals,
    /// after the sign and staleness checks.
    function oraclePrice(address token) external view returns (uint256 answer, uint8 feedDecimals);

    /// @notice Premium budget, bps of NAV per rolling window of `premiumPeriod` (= `budgetBps(BUDGET_PREMIUM)`).
    function premiumBudgetBps() external view returns (uint256);

    /// @notice Length of the premium budget's rolling window, seconds (= `budgetPeriod(BUDGET_PREMIUM)`).
    function premiumPeriod() external view returns (uint256);

    /// @notice What budget `kind` counts now, base units: the sum charged in the current bucket and the
    /// `BUDGET_BUCKETS` buckets before it (bucket width w = ⌈period / BUDGET_BUCKETS⌉, aligned to multiples of w).
    /// A charge is refused when it would take this sum above `budgetBps` of NAV before the charging rebalance.
    /// Guarantee: for ANY interval of length ≤ `budgetPeriod(kind)` (however placed against the buckets), the
    /// sum charged within it is at most `budgetBps(kind)` × NAV-before of the last charge in it / 10_000 —
    /// never twice the budget. A charge stops counting between 8w and 9w after it (≤ period × 9/8 + 9 s).
    function budgetSpent(uint256 kind) external view returns (uint256 spent);
}
