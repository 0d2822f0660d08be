// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {IERC20Metadata} from "@openzeppelin/contracts/token/ERC20/extensions/IERC20Metadata.sol";
import {ERC4626} from "@openzeppelin/contracts/token/ERC20/extensions/ERC4626.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {Pausable} from "@openzeppelin/contracts/utils/Pausable.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";
import {Math} from "@openzeppelin/contracts/utils/math/Math.sol";
import {AggregatorV3Interface} from "@chainlink/contracts/src/v0.8/shared/interfaces/AggregatorV3Interface.sol";
import {ISwapRouter} from "@uniswap/v3-periphery/contracts/interfaces/ISwapRouter.sol";
import {IV3SwapRouter} from "@uniswap/swap-router-contracts/contracts/interfaces/IV3SwapRouter.sol";

import {IOptionMarket} from "./interfaces/IOptionMarket.sol";
import {IRiskParityVault} from "./interfaces/IRiskParityVault.sol";
import {ChainlinkReader} from "./libraries/ChainlinkReader.sol";

/// @title RiskParityVault
/// @notice ERC-4626 vault over a USD stablecoin (the base asset) that holds a whitelist of risk assets,
/// each priced by a Chainlink `AggregatorV3Interface` feed. An off-chain keeper keeps the holdings at
/// equal risk contribution by calling `rebalance` with a list of Uniswap V3 swap legs; the vault itself
/// checks every leg against its own oracle prices and refuses trades that breach its bounds.
/// Through `rebalanceWithOptions` the keeper may also buy European options from an `IOptionMarket` (and
/// sell held ones back), each leg bounded against the market's on-chain Black-Scholes fair value.
/// @dev Valuation: `totalAssets()` = base balance + Σ balanceᵢ × priceᵢ + Σ option positions at their
/// `IOptionMarket.positionValue` mark (Black-Scholes before expiry, the payout once settled), in
/// base-asset units (floor).
/// A risk asset is valued as `balance × answer × 10^baseDecimals / 10^(tokenDecimals + feedDecimals)`.
/// Shares carry `DECIMALS_OFFSET` extra decimals (virtual shares, EIP-4626 inflation-attack defence).
/// Withdrawals pay base asset out of the vault's idle balance, so `maxWithdraw`/`maxRedeem` are capped
/// by that balance (the keeper keeps a cash buffer); `redeemInKind` is the exit that never depends on
/// liquidity, prices or the pause (it pays no option value).
/// Fees: an entry/exit fee kept by the vault on every share mint and burn (at least every listed feed's
/// deviation threshold, so oracle lag cannot be traded through shares), and management and performance
/// fees minted as shares to `feeRecipient`, accrued before every share mint or burn and every rebalance.
/// Keeper bounds: per call (slippage vs oracle, turnover, NAV loss) and per rolling window (NAV loss,
/// turnover, option premium; see `budgetSpent` for the exact bound over any window).
contract RiskParityVault is IRiskParityVault, ERC4626, AccessControl, Pausable, ReentrancyGuardTransient {
    using SafeERC20 for IERC20;
    using Math for uint256;

    /*//////////////////////////////////////////////////////////////
                                 TYPES
    //////////////////////////////////////////////////////////////*/

    /// @dev The scalar arguments of a rebalance (see `rebalanceWithOptions`).
    struct RebalanceBounds {
        uint256 minNavAfter;
        uint256 expectedEpoch;
        uint256 deadline;
    }

    /// @dev A rolling budget's bound (bps of NAV) and window (seconds); see `_budgets`.
    struct BudgetConfig {
        uint32 bps;
        uint32 period;
    }


    /*//////////////////////////////////////////////////////////////
                               CONSTANTS
    //////////////////////////////////////////////////////////////*/

    /// @inheritdoc IRiskParityVault
    bytes32 public constant KEEPER_ROLE = keccak256("KEEPER_ROLE");
    /// @inheritdoc IRiskParityVault
    bytes32 public constant GUARDIAN_ROLE = keccak256("GUARDIAN_ROLE");
    /// @dev 100% in basis points.
    uint256 internal constant BPS = 10_000;
    /// @dev Shares have 6 more decimals than the base asset: a donation attack must burn 1e6× what it steals.
    uint8 internal constant DECIMALS_OFFSET = 6;
    /// @dev Most risk assets listed at once. (internal: no getter, to keep the runtime code under EIP-170).
    uint256 internal constant MAX_ASSETS = 32;
    /// @dev Most swap legs per rebalance. (internal: no getter, to keep the runtime code under EIP-170).
    uint256 internal constant MAX_LEGS = 2 * MAX_ASSETS;
    /// @dev Upper bound of `maxSlippageBps`, bps. (internal: no getter, to keep the runtime code under EIP-170).
    uint256 internal constant MAX_SLIPPAGE_BPS_LIMIT = 1_000;
    /// @dev Upper bound of `maxTurnoverBps`, bps. (internal: no getter, to keep the runtime code under EIP-170).
    uint256 internal constant MAX_TURNOVER_BPS_LIMIT = 20_000;
    /// @dev Upper bound of `maxNavLossBps`, bps. (internal: no getter, to keep the runtime code under EIP-170).
    uint256 internal constant MAX_NAV_LOSS_BPS_LIMIT = 1_000;
    /// @inheritdoc IRiskParityVault
    uint256 public constant MAX_OPTION_LEGS = 8;
    /// @dev Upper bound of `maxPremiumBps`, bps of fair value. (internal: no getter, to keep the runtime code under EIP-170).
    uint256 internal constant MAX_PREMIUM_BPS_LIMIT = 2_000;
    /// @dev Upper bound of `premiumBudgetBps`, bps of NAV per window. (internal: no getter, to keep the runtime code under EIP-170).
    uint256 internal constant MAX_PREMIUM_BUDGET_BPS_LIMIT = 1_000;
    /// @dev Upper bound of `maxOpenSeries`. (internal: no getter, to keep the runtime code under EIP-170).
    uint256 internal constant MAX_OPEN_SERIES_LIMIT = 16;
    /// @dev Shortest window of a rolling budget, seconds. (internal: no getter, to keep the runtime code under EIP-170).
    uint256 internal constant MIN_PREMIUM_PERIOD = 1 hours;
    /// @dev Longest window of a rolling budget, seconds. (internal: no getter, to keep the runtime code under EIP-170).
    uint256 internal constant MAX_PREMIUM_PERIOD = 365 days;
    /// @inheritdoc IRiskParityVault
    uint256 public constant BUDGET_NAV_LOSS = 0;
    /// @inheritdoc IRiskParityVault
    uint256 public constant BUDGET_TURNOVER = 1;
    /// @inheritdoc IRiskParityVault
    uint256 public constant BUDGET_PREMIUM = 2;
    /// @inheritdoc IRiskParityVault
    uint256 public constant BUDGET_BUCKETS = 8;
    /// @dev Ring slots of a budget: the `BUDGET_BUCKETS + 1` buckets a window counts lie in 5 bucket pairs.
    uint256 internal constant BUDGET_PAIR_SLOTS = BUDGET_BUCKETS / 2 + 1;
    /// @dev Mask of one bucket's amount (112 bits; a charge that would overflow it reverts).
    uint256 internal constant BUCKET_AMOUNT_MASK = type(uint112).max;
    /// @dev Upper bound of the rolling NAV-loss budget, bps of NAV per window. (internal: no getter, to keep the runtime code under EIP-170).
    uint256 internal constant MAX_NAV_LOSS_BUDGET_BPS = 5_000;
    /// @dev Upper bound of the rolling turnover budget, bps of NAV per window. (internal: no getter, to keep the runtime code under EIP-170).
    uint256 internal constant MAX_TURNOVER_BUDGET_BPS = 200_000;
    /// @dev Upper bound of the entry/exit fee and of a feed's deviation threshold, bps. (internal: no getter, to keep the runtime code under EIP-170).
    uint256 internal constant MAX_ENTRY_EXIT_FEE_BPS = 500;
    /// @dev Upper bound of the management fee, bps of supply per 365 days. (internal: no getter, to keep the runtime code under EIP-170).
    uint256 internal constant MAX_MANAGEMENT_FEE_BPS = 500;
    /// @dev Upper bound of the performance fee, bps of the gain over the high-water mark. (internal: no getter, to keep the runtime code under EIP-170).
    uint256 internal constant MAX_PERFORMANCE_FEE_BPS = 3_000;

    /*//////////////////////////////////////////////////////////////
                               IMMUTABLES
    //////////////////////////////////////////////////////////////*/

    /// @inheritdoc IRiskParityVault
    ISwapRouter public immutable swapRouter;
    /// @inheritdoc IRiskParityVault
    RouterKind public immutable routerKind;
    uint8 private immutable _baseDecimals;

    /*//////////////////////////////////////////////////////////////
                                STORAGE
    //////////////////////////////////////////////////////////////*/

    address[] private _riskAssets;
    /// @inheritdoc IRiskParityVault
    mapping(address token => RiskAsset) public riskAssetConfig;
    // The epoch and the three per-call limits share one slot (a rebalance reads all four). The limits are
    // stored only by `_setLimits` after their bound checks (each bound is at most 20,000 < 2^16); the epoch
    // only by `_finishRebalance`, in checked uint64 arithmetic.
    /// @inheritdoc IRiskParityVault
    uint64 public rebalanceEpoch;
    /// @inheritdoc IRiskParityVault
    uint16 public maxSlippageBps;
    /// @inheritdoc IRiskParityVault
    uint16 public maxTurnoverBps;
    /// @inheritdoc IRiskParityVault
    uint16 public maxNavLossBps;
    /// @inheritdoc IRiskParityVault
    IOptionMarket public optionMarket;
    /// @inheritdoc IRiskParityVault
    uint256 public maxPremiumBps;
    /// @inheritdoc IRiskParityVault
    uint256 public maxOpenSeries;
    bytes32[] private _openSeries;
    /// @dev Per budget kind its bps and period in one slot (a charge reads both). Stored only by `_setBudget`,
    /// whose callers bound the bps (at most `MAX_TURNOVER_BUDGET_BPS` = 200,000) and which bounds the period (at
    /// most `MAX_PREMIUM_PERIOD`, 31,536,000 s): both below 2^32. Read through `budgetBps`/`budgetPeriod`.
    BudgetConfig[3] private _budgets;
    /// @dev Per budget, a ring of `BUDGET_PAIR_SLOTS` slots, each holding two consecutive buckets (ids 2p and
    /// 2p + 1, id = timestamp / width): `p << 224 | amount(2p + 1) << 112 | amount(2p)`, slot `p % BUDGET_PAIR_SLOTS`.
    /// The window's 9 buckets span at most 5 pairs, so a budget reads 5 slots instead of 9.
    uint256[BUDGET_PAIR_SLOTS][3] private _buckets;
    /// @inheritdoc IRiskParityVault
    uint256 public entryExitFeeBps;
    /// @inheritdoc IRiskParityVault
    mapping(bytes32 seriesId => uint256) public ownOptionAmount;
    // The fee settings and the accrual time share one slot (every fee accrual reads them all). The two fees
    // are stored only by `setFees` after their bound checks (at most 3,000 < 2^16); the time is a block
    // timestamp, below 2^40 until the year 36,812.
    /// @inheritdoc IRiskParityVault
    address public feeRecipient;
    /// @inheritdoc IRiskParityVault
    uint16 public managementFeeBps;
    /// @inheritdoc IRiskParityVault
    uint16 public performanceFeeBps;
    /// @inheritdoc IRiskParityVault
    uint40 public lastFeeAccrual;
    /// @inheritdoc IRiskParityVault
    uint256 public highWaterMark;
    /// @dev NAV + 1 computed at the start of the running deposit/mint/withdraw/redeem, valid until its
    /// transfer (`_deposit`/`_withdraw` clear it); 0 outside. Transient (EIP-1153): it never outlives the
    /// transaction, and a revert discards it. Saves the NAV the max check and the preview would recompute.
    uint256 private transient _navPlusOne;

    /*//////////////////////////////////////////////////////////////
                              CONSTRUCTOR
    //////////////////////////////////////////////////////////////*/

    /// @param baseAsset The USD stablecoin the vault accounts in.
    /// @param router Uniswap V3 router: the original `SwapRouter` or `SwapRouter02`, as `kind` says.
    /// @param kind Which router `router` is (the two encode `exactInputSingle` differently).
    /// @param admin Holder of `DEFAULT_ADMIN_ROLE` (governance).
    /// @param keeper Holder of `KEEPER_ROLE`.
    /// @param guardian Holder of `GUARDIAN_ROLE` (may pause).
    constructor(
        IERC20Metadata baseAsset,
        string memory name_,
        string memory symbol_,
        ISwapRouter router,
        RouterKind kind,
        address admin,
        address keeper,
        address guardian
    ) ERC4626(baseAsset) ERC20(name_, symbol_) {
        swapRouter = router;
        routerKind = kind;
        _baseDecimals = baseAsset.decimals();
        _approveRouter(address(baseAsset), type(uint256).max);
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        _grantRole(KEEPER_ROLE, keeper);
        _grantRole(GUARDIAN_ROLE, guardian);
        _setLimits(100, 10_000, 200);
        // Premium bound 2,000 bps: with the market's feed-step half-spread (50 bps price step, one vol point) the
        // ask of a 20- to 25-delta put of 7 to 35 days at 60–100 % vol is 5–17 % over fair; a lower bound refuses it.
        _setOptionLimits(2_000, 200, 30 days, 8);
        _setBudget(BUDGET_NAV_LOSS, 500, 1 days);
        _setBudget(BUDGET_TURNOVER, 50_000, 1 days);
        highWaterMark = 1e18 / 10 ** DECIMALS_OFFSET;
        lastFeeAccrual = uint40(block.timestamp); // < 2^40 until the year 36,812
    }

    /*//////////////////////////////////////////////////////////////
                               DEPOSITORS
    //////////////////////////////////////////////////////////////*/

    /// @inheritdoc ERC4626
    function deposit(uint256 assets, address receiver) public override whenNotPaused nonReentrant returns (uint256) {
        _beginShareChange();
        return super.deposit(assets, receiver);
    }

    /// @inheritdoc ERC4626
    function mint(uint256 shares, address receiver) public override whenNotPaused nonReentrant returns (uint256) {
        _beginShareChange();
        return super.mint(shares, receiver);
    }

    /// @inheritdoc ERC4626
    function withdraw(uint256 assets, address receiver, address owner)
        public
        override
        whenNotPaused
        nonReentrant
        returns (uint256)
    {
        _beginShareChange();
        return super.withdraw(assets, receiver, owner);
    }

    /// @inheritdoc ERC4626
    function redeem(uint256 shares, address receiver, address owner)
        public
        override
        whenNotPaused
        nonReentrant
        returns (uint256)
    {
        _beginShareChange();
        return super.redeem(shares, receiver, owner);
    }

    /// @inheritdoc IRiskParityVault
    function redeemInKind(uint256 shares, address receiver, address owner)
        external
        nonReentrant
        returns (uint256[] memory amounts)
    {
        if (msg.sender != owner) _spendAllowance(owner, msg.sender, shares);
        // Fees accrue first; without a price (a stale feed) only the management fee can (see `accrueFees`).
        try this.totalAssets() returns (uint256 nav) {
            _accrueFees(nav, true);
        } catch {
            _accrueFees(0, false);
        }
        // Fractions use the same virtual shares as ERC-4626 conversions, so they round in the vault's favour.
        uint256 supply = totalSupply() + 10 ** _decimalsOffset();
        uint256 paid = shares - _feeOnTotal(shares);
        uint256 n = _riskAssets.length;
        amounts = new uint256[](n + 1);
        amounts[0] = _balanceOf(asset()).mulDiv(paid, supply, Math.Rounding.Floor);
        for (uint256 i; i < n; ++i) {
            amounts[i + 1] = _balanceOf(_assetAt(i)).mulDiv(paid, supply, Math.Rounding.Floor);
        }
        // Burn before transferring so a reentrant token sees the reduced supply.
        _burn(owner, shares);
        IERC20(asset()).safeTransfer(receiver, amounts[0]);
        for (uint256 i; i < n; ++i) {
            if (amounts[i + 1] > 0) IERC20(_assetAt(i)).safeTransfer(receiver, amounts[i + 1]);
        }
        emit RedeemedInKind(owner, receiver, shares);
    }

    /*//////////////////////////////////////////////////////////////
                                 KEEPER
    //////////////////////////////////////////////////////////////*/

    /// @inheritdoc IRiskParityVault
    function rebalance(SwapLeg[] calldata legs, uint256 minNavAfter, uint256 expectedEpoch, uint256 deadline)
        external
        onlyRole(KEEPER_ROLE)
        whenNotPaused
        nonReentrant
        returns (uint256 navAfter)
    {
        if (legs.length == 0) revert InvalidLegCount(0, MAX_LEGS);
        return _rebalanceWithOptions(legs, _noOptionLegs(), RebalanceBounds(minNavAfter, expectedEpoch, deadline));
    }

    /// @inheritdoc IRiskParityVault
    function rebalanceWithOptions(
        SwapLeg[] calldata legs,
        OptionLeg[] calldata optionLegs,
        uint256 minNavAfter,
        uint256 expectedEpoch,
        uint256 deadline
    ) external onlyRole(KEEPER_ROLE) whenNotPaused nonReentrant returns (uint256 navAfter) {
        return _rebalanceWithOptions(legs, optionLegs, RebalanceBounds(minNavAfter, expectedEpoch, deadline));
    }

    /*//////////////////////////////////////////////////////////////
                                 ANYONE
    //////////////////////////////////////////////////////////////*/

    /// @inheritdoc IRiskParityVault
    function accrueFees() external nonReentrant {
        _accrueFees();
    }

    /// @inheritdoc IRiskParityVault
    function settleOption(bytes32 seriesId, uint80 roundId) external nonReentrant returns (uint256 payout) {
        if (!_removeOpenSeries(seriesId)) revert NotOpenSeries(seriesId);
        delete ownOptionAmount[seriesId];
        IOptionMarket market = optionMarket;
        if (!market.series(seriesId).settled) market.settle(seriesId, roundId);
        payout = market.exercise(seriesId, address(this));
        emit OptionSettled(seriesId, payout);
    }

    /*//////////////////////////////////////////////////////////////
                               GOVERNANCE
    //////////////////////////////////////////////////////////////*/

    /// @inheritdoc IRiskParityVault
    function listRiskAsset(address token, AggregatorV3Interface feed, uint32 heartbeat, uint24 poolFee, uint16 deviationBps)
        external
        onlyRole(DEFAULT_ADMIN_ROLE)
    {
        if (token == asset() || riskAssetConfig[token].listed || heartbeat == 0) revert AssetConfigInvalid(token);
        if (_riskAssets.length >= MAX_ASSETS) revert TooManyAssets(MAX_ASSETS);
        riskAssetConfig[token].tokenDecimals = IERC20Metadata(token).decimals();
        riskAssetConfig[token].poolFee = poolFee;
        riskAssetConfig[token].listed = true;
        _setFeed(token, feed, heartbeat, deviationBps);
        _riskAssets.push(token);
        _approveRouter(token, type(uint256).max);
        emit RiskAssetListed(token, address(feed), heartbeat, poolFee);
    }

    /// @inheritdoc IRiskParityVault
    function setRiskAssetFeed(address token, AggregatorV3Interface feed, uint32 heartbeat, uint16 deviationBps)
        external
        onlyRole(DEFAULT_ADMIN_ROLE)
    {
        _listed(token);
        _setFeed(token, feed, heartbeat, deviationBps);
    }

    /// @inheritdoc IRiskParityVault
    function delistRiskAsset(address token) external onlyRole(DEFAULT_ADMIN_ROLE) {
        _listed(token);
        delete riskAssetConfig[token];
        uint256 n = _riskAssets.length;
        for (uint256 i; i < n; ++i) {
            if (_riskAssets[i] == token) {
                _riskAssets[i] = _riskAssets[n - 1];
                _riskAssets.pop();
                break;
            }
        }
        emit RiskAssetDelisted(token);
    }

    /// @inheritdoc IRiskParityVault
    function setLimits(uint256 maxSlippageBps_, uint256 maxTurnoverBps_, uint256 maxNavLossBps_)
        external
        onlyRole(DEFAULT_ADMIN_ROLE)
    {
        _setLimits(maxSlippageBps_, maxTurnoverBps_, maxNavLossBps_);
    }

    /// @inheritdoc IRiskParityVault
    function setBudget(uint256 kind, uint256 budgetBps_, uint256 period) external onlyRole(DEFAULT_ADMIN_ROLE) {
        uint256 cap = kind == BUDGET_NAV_LOSS ? MAX_NAV_LOSS_BUDGET_BPS : MAX_TURNOVER_BUDGET_BPS;
        _checkLimit(kind, BUDGET_TURNOVER);
        _checkLimit(budgetBps_, cap);
        _setBudget(kind, budgetBps_, period);
    }

    /// @inheritdoc IRiskParityVault
    function setEntryExitFee(uint256 feeBps) external onlyRole(DEFAULT_ADMIN_ROLE) {
        _checkLimit(feeBps, MAX_ENTRY_EXIT_FEE_BPS);
        uint256 n = _riskAssets.length;
        for (uint256 i; i < n; ++i) {
            uint256 deviation = riskAssetConfig[_assetAt(i)].deviationBps;
            if (feeBps < deviation) revert FeeBelowDeviation(feeBps, deviation);
        }
        entryExitFeeBps = feeBps;
        emit EntryExitFeeSet(feeBps);
    }

    /// @inheritdoc IRiskParityVault
    function setFees(address recipient, uint256 managementBps, uint256 performanceBps)
        external
        onlyRole(DEFAULT_ADMIN_ROLE)
    {
        _checkLimit(managementBps, MAX_MANAGEMENT_FEE_BPS);
        _checkLimit(performanceBps, MAX_PERFORMANCE_FEE_BPS);
        if (recipient == address(0) && managementBps + performanceBps != 0) revert InvalidFeeRecipient(recipient);
        _accrueFees();
        feeRecipient = recipient;
        managementFeeBps = uint16(managementBps); // checked above: <= MAX_MANAGEMENT_FEE_BPS < 2^16
        performanceFeeBps = uint16(performanceBps); // checked above: <= MAX_PERFORMANCE_FEE_BPS < 2^16
        emit FeesSet(recipient, managementBps, performanceBps);
    }

    /// @inheritdoc IRiskParityVault
    function setOptionMarket(IOptionMarket market) external onlyRole(DEFAULT_ADMIN_ROLE) {
        if (_openSeries.length != 0) revert OptionPositionsOpen(_openSeries.length);
        optionMarket = market;
        emit OptionMarketSet(address(market));
    }

    /// @inheritdoc IRiskParityVault
    function setOptionLimits(
        uint256 maxPremiumBps_,
        uint256 premiumBudgetBps_,
        uint256 premiumPeriod_,
        uint256 maxOpenSeries_
    ) external onlyRole(DEFAULT_ADMIN_ROLE) {
        _setOptionLimits(maxPremiumBps_, premiumBudgetBps_, premiumPeriod_, maxOpenSeries_);
    }

    /// @inheritdoc IRiskParityVault
    function pause() external onlyRole(GUARDIAN_ROLE) {
        _pause();
    }

    /// @inheritdoc IRiskParityVault
    function unpause() external onlyRole(DEFAULT_ADMIN_ROLE) {
        _unpause();
    }

    /*//////////////////////////////////////////////////////////////
                                 VIEWS
    //////////////////////////////////////////////////////////////*/

    /// @notice Base balance plus every risk asset at its oracle price plus every option position at its
    /// mark (`optionsValue`), in base-asset units, rounded down.
    /// @dev Reverts with `StalePrice` or `InvalidPrice` if the feed of a held asset is stale or non-positive,
    /// and with the market's errors if a feed an open option is marked with is.
    function totalAssets() public view override returns (uint256 nav) {
        return _spotValue(new uint256[](2 * _riskAssets.length)) + _bookValue();
    }

    /// @inheritdoc IRiskParityVault
    function optionsValue() public view returns (uint256 value) {
        IOptionMarket market = optionMarket;
        uint256 n = _openSeries.length;
        for (uint256 i; i < n; ++i) {
            bytes32 id = _openSeries[i];
            value += market.positionValue(id, market.positionOf(id, address(this)));
        }
    }

    /// @inheritdoc IRiskParityVault
    function openSeries() external view returns (bytes32[] memory) {
        return _openSeries;
    }

    /// @inheritdoc IRiskParityVault
    function riskAssets() external view returns (address[] memory) {
        return _riskAssets;
    }

    /// @inheritdoc IRiskParityVault
    function holdings() external view returns (address[] memory tokens, uint256[] memory balances) {
        uint256 n = _riskAssets.length;
        tokens = new address[](n + 1);
        balances = new uint256[](n + 1);
        tokens[0] = asset();
        balances[0] = _balanceOf(tokens[0]);
        for (uint256 i; i < n; ++i) {
            tokens[i + 1] = _assetAt(i);
            balances[i + 1] = _balanceOf(_assetAt(i));
        }
    }

    /// @inheritdoc IRiskParityVault
    function oraclePrice(address token) external view returns (uint256 answer, uint8 feedDecimals) {
        RiskAsset memory config = _listed(token);
        return (_checkedAnswer(config), config.feedDecimals);
    }

    /// @inheritdoc IRiskParityVault
    function premiumBudgetBps() external view returns (uint256) {
        return _budgets[BUDGET_PREMIUM].bps;
    }

    /// @inheritdoc IRiskParityVault
    function premiumPeriod() external view returns (uint256) {
        return _budgets[BUDGET_PREMIUM].period;
    }

    /// @inheritdoc IRiskParityVault
    function budgetBps(uint256 kind) external view returns (uint256) {
        return _budgets[kind].bps;
    }

    /// @inheritdoc IRiskParityVault
    function budgetPeriod(uint256 kind) public view returns (uint256) {
        return _budgets[kind].period;
    }

    /// @inheritdoc IRiskParityVault
    function budgetSpent(uint256 kind) public view returns (uint256 spent) {
        uint256 current = block.timestamp / budgetPeriod(kind).ceilDiv(BUDGET_BUCKETS);
        // The window counts bucket ids current − 8 … current: pairs (current − 8) / 2 … current / 2, five slots.
        uint256 oldest = current < BUDGET_BUCKETS ? 0 : current - BUDGET_BUCKETS;
        for (uint256 i; i < BUDGET_PAIR_SLOTS; ++i) {
            uint256 slot = _buckets[kind][i];
            uint256 pair = slot >> 224;
            // A slot written for a pair outside the window holds nothing it counts; the ring never holds a
            // future pair. Id 2·pair counts when ≥ oldest; id 2·pair + 1 always does once its pair is in the window.
            if (2 * pair + 1 < oldest) continue;
            if (2 * pair >= oldest) spent += slot & BUCKET_AMOUNT_MASK;
            spent += (slot >> 112) & BUCKET_AMOUNT_MASK;
        }
    }

    /// @inheritdoc ERC4626
    /// @dev The net assets credited after the entry fee: assets − ⌈assets × fee / (10_000 + fee)⌉.
    function previewDeposit(uint256 assets) public view override returns (uint256) {
        return _convertToShares(assets - _feeOnTotal(assets), Math.Rounding.Floor);
    }

    /// @inheritdoc ERC4626
    /// @dev The assets for `shares` (rounded up) plus the entry fee on them (rounded up).
    function previewMint(uint256 shares) public view override returns (uint256) {
        uint256 assets = _convertToAssets(shares, Math.Rounding.Ceil);
        return assets + assets.mulDiv(entryExitFeeBps, BPS, Math.Rounding.Ceil);
    }

    /// @inheritdoc ERC4626
    /// @dev Shares for `assets` plus the exit fee on them (both rounded up).
    function previewWithdraw(uint256 assets) public view override returns (uint256) {
        return _convertToShares(assets + assets.mulDiv(entryExitFeeBps, BPS, Math.Rounding.Ceil), Math.Rounding.Ceil);
    }

    /// @inheritdoc ERC4626
    /// @dev The assets for `shares` (rounded down) less the exit fee: a − ⌈a × fee / (10_000 + fee)⌉.
    function previewRedeem(uint256 shares) public view override returns (uint256) {
        uint256 assets = _convertToAssets(shares, Math.Rounding.Floor);
        return assets - _feeOnTotal(assets);
    }

    /// @inheritdoc ERC4626
    /// @dev Zero while paused or while `totalAssets()` reverts (a stale or invalid feed): a deposit would revert.
    function maxDeposit(address receiver) public view override returns (uint256) {
        return _closed() ? 0 : super.maxDeposit(receiver);
    }

    /// @inheritdoc ERC4626
    /// @dev Zero while paused or while `totalAssets()` reverts.
    function maxMint(address receiver) public view override returns (uint256) {
        return _closed() ? 0 : super.maxMint(receiver);
    }

    /// @inheritdoc ERC4626
    /// @dev The owner's shares redeemed after the exit fee, capped by the idle base balance; zero while paused
    /// or while `totalAssets()` reverts.
    function maxWithdraw(address owner) public view override returns (uint256 assets) {
        if (_closed()) return 0;
        uint256 shares = balanceOf(owner);
        assets = previewRedeem(shares);
        // Both conversions round against the owner; step one unit down if the round trip needs more shares.
        if (assets != 0 && previewWithdraw(assets) > shares) --assets;
        assets = Math.min(assets, _balanceOf(asset()));
    }

    /// @inheritdoc ERC4626
    /// @dev Capped by the shares whose redemption after the exit fee the idle base balance pays (rounded
    /// down); zero while paused or while `totalAssets()` reverts.
    function maxRedeem(address owner) public view override returns (uint256) {
        if (_closed()) return 0;
        uint256 idle = _balanceOf(asset()).mulDiv(BPS + entryExitFeeBps, BPS, Math.Rounding.Floor);
        return Math.min(balanceOf(owner), _convertToShares(idle, Math.Rounding.Floor));
    }

    /*//////////////////////////////////////////////////////////////
                                INTERNAL
    //////////////////////////////////////////////////////////////*/

    function _decimalsOffset() internal pure override returns (uint8) {
        return DECIMALS_OFFSET;
    }

    /// @dev ERC-4626 conversion with the fee shares due now counted in the supply (previews stay exact).
    function _convertToShares(uint256 assets, Math.Rounding rounding) internal view override returns (uint256) {
        (uint256 nav, uint256 supply) = _navAndSupply();
        return assets.mulDiv(supply + 10 ** DECIMALS_OFFSET, nav + 1, rounding);
    }

    /// @dev ERC-4626 conversion with the fee shares due now counted in the supply (previews stay exact).
    function _convertToAssets(uint256 shares, Math.Rounding rounding) internal view override returns (uint256) {
        (uint256 nav, uint256 supply) = _navAndSupply();
        return shares.mulDiv(nav + 1, supply + 10 ** DECIMALS_OFFSET, rounding);
    }

    /// @dev NAV and the supply after the fee shares due now.
    function _navAndSupply() internal view returns (uint256 nav, uint256 supply) {
        uint256 cached = _navPlusOne;
        nav = cached != 0 ? cached - 1 : totalAssets();
        supply = totalSupply();
        (uint256 management, uint256 performance,) = _feeShares(nav, supply, true);
        supply += management + performance;
    }

    /// @dev Fee shares due now given `nav` and `supply`, and the high-water mark after them (see `accrueFees`);
    /// without `withNav` only the management fee.
    function _feeShares(uint256 nav, uint256 supply, bool withNav)
        internal
        view
        returns (uint256 management, uint256 performance, uint256 mark)
    {
        mark = highWaterMark;
        uint256 last = lastFeeAccrual;
        // slither-disable-next-line incorrect-equality (a timestamp the vault wrote: "already accrued in this block")
        if (last == block.timestamp) return (0, 0, mark);
        management = supply.mulDiv(managementFeeBps * (block.timestamp - last), BPS * 365 days);
        if (!withNav) return (management, 0, mark);
        uint256 virtualSupply = supply + management + 10 ** DECIMALS_OFFSET;
        uint256 price = (nav + 1).mulDiv(1e18, virtualSupply);
        if (price > mark) {
            uint256 performanceBps = performanceFeeBps;
            if (supply != 0 && performanceBps != 0) {
                uint256 feeAssets = (price - mark).mulDiv(virtualSupply, 1e18).mulDiv(performanceBps, BPS);
                performance = feeAssets.mulDiv(virtualSupply, nav + 1 - feeAssets);
                price = (nav + 1).mulDiv(1e18, virtualSupply + performance);
            }
            mark = price;
        }
    }

    function _accrueFees() internal {
        if (lastFeeAccrual != block.timestamp) _accrueFees(totalAssets(), true);
    }

    /// @dev Accrues the fees due on `nav` unless already accrued in this block.
    function _accrueFeesIfDue(uint256 nav) internal {
        if (lastFeeAccrual != block.timestamp) _accrueFees(nav, true);
    }

    /// @dev Start of every deposit/mint/withdraw/redeem: one NAV (reverting without a price), the fees due
    /// accrued on it, and the NAV kept for the max check and the preview until the transfer.
    function _beginShareChange() internal {
        uint256 nav = totalAssets();
        _accrueFeesIfDue(nav);
        _navPlusOne = nav + 1;
    }

    /// @dev The transfer of a deposit or mint changes NAV: the kept NAV ends here.
    function _deposit(address caller, address receiver, uint256 assets, uint256 shares) internal override {
        _navPlusOne = 0;
        super._deposit(caller, receiver, assets, shares);
    }

    /// @dev The transfer of a withdrawal or redemption changes NAV: the kept NAV ends here.
    function _withdraw(address caller, address receiver, address owner, uint256 assets, uint256 shares)
        internal
        override
    {
        _navPlusOne = 0;
        super._withdraw(caller, receiver, owner, assets, shares);
    }

    /// @dev Mints the fee shares due (see `_feeShares`) and moves the accrual time and the mark.
    function _accrueFees(uint256 nav, bool withNav) internal {
        (uint256 management, uint256 performance, uint256 mark) = _feeShares(nav, totalSupply(), withNav);
        lastFeeAccrual = uint40(block.timestamp); // < 2^40 until the year 36,812
        highWaterMark = mark;
        if (management + performance != 0) {
            _mint(feeRecipient, management + performance);
            emit FeesAccrued(management, performance, mark);
        }
    }

    /// @dev The fee part of a gross `amount` that includes it: ⌈amount × fee / (10_000 + fee)⌉.
    function _feeOnTotal(uint256 amount) internal view returns (uint256) {
        uint256 fee = entryExitFeeBps;
        return amount.mulDiv(fee, BPS + fee, Math.Rounding.Ceil);
    }

    /// @dev True while paused or while `totalAssets()` reverts (every share mint and burn would revert).
    function _closed() internal view returns (bool) {
        if (paused()) return true;
        if (_navPlusOne != 0) return false; // inside a share change whose NAV was just computed
        // slither-disable-next-line unused-return (a probe: only whether totalAssets() reverts matters)
        try this.totalAssets() returns (uint256) {
            return false;
        } catch {
            return true;
        }
    }

    /// @dev Sets the feed of listed `token`; raises the entry/exit fee to `deviationBps` when lower.
    function _setFeed(address token, AggregatorV3Interface feed, uint32 heartbeat, uint16 deviationBps) internal {
        if (heartbeat == 0) revert AssetConfigInvalid(token);
        _checkLimit(deviationBps, MAX_ENTRY_EXIT_FEE_BPS);
        RiskAsset storage config = riskAssetConfig[token];
        config.feed = feed;
        config.heartbeat = heartbeat;
        config.feedDecimals = feed.decimals();
        config.deviationBps = deviationBps;
        emit RiskAssetFeedSet(token, address(feed), heartbeat, deviationBps);
        if (entryExitFeeBps < deviationBps) {
            entryExitFeeBps = deviationBps;
            emit EntryExitFeeSet(deviationBps);
        }
    }

    /// @dev Sets rolling budget `kind`; what the old window still counts is carried into the current bucket of
    /// the new one (conservative: a charge never stops counting early because the period changed).
    function _setBudget(uint256 kind, uint256 bps, uint256 period) internal {
        if (period < MIN_PREMIUM_PERIOD || period > MAX_PREMIUM_PERIOD) revert LimitOutOfRange(period, MAX_PREMIUM_PERIOD);
        uint256 carried = budgetPeriod(kind) == 0 ? 0 : budgetSpent(kind);
        delete _buckets[kind];
        // Casts exact: the callers bound `bps` by at most 200,000 and `period` is bounded above; both < 2^32.
        _budgets[kind] = BudgetConfig(uint32(bps), uint32(period));
        if (carried != 0) _addToBucket(kind, carried);
        emit BudgetSet(kind, bps, period);
    }

    /// @dev Charges `amount` to budget `kind` against `budgetBps` of `nav`; returns the window's sum and the
    /// budget, and whether it fits (the caller reverts with its own error when not).
    function _charge(uint256 kind, uint256 amount, uint256 nav)
        internal
        returns (bool ok, uint256 spent, uint256 budget)
    {
        spent = budgetSpent(kind) + amount;
        budget = nav.mulDiv(_budgets[kind].bps, BPS, Math.Rounding.Floor);
        ok = spent <= budget;
        if (ok && amount != 0) _addToBucket(kind, amount);
    }

    /// @dev Adds `amount` to the current bucket of budget `kind`. The current pair's slot held an older pair
    /// (five pairs back or more: out of the window) unless its tag is the current pair; then it starts afresh.
    function _addToBucket(uint256 kind, uint256 amount) internal {
        uint256 current = block.timestamp / budgetPeriod(kind).ceilDiv(BUDGET_BUCKETS);
        uint256 pair = current / 2;
        // slither-disable-next-line weak-prng (not randomness: the ring slot of the current pair)
        uint256 i = pair % BUDGET_PAIR_SLOTS;
        uint256 slot = _buckets[kind][i];
        // slither-disable-next-line incorrect-equality (pair tags the vault wrote: "the slot holds this pair")
        if (slot >> 224 != pair) slot = pair << 224;
        // slither-disable-next-line weak-prng (not randomness: which half of the slot holds the current bucket)
        uint256 shift = (current % 2) * 112;
        uint256 held = ((slot >> shift) & BUCKET_AMOUNT_MASK) + amount;
        _checkLimit(held, BUCKET_AMOUNT_MASK);
        _buckets[kind][i] = (slot & ~(BUCKET_AMOUNT_MASK << shift)) | (held << shift);
    }

    /// @dev Reverts with `LimitOutOfRange(value, max)` when `value > max` (one revert site for every bound).
    function _checkLimit(uint256 value, uint256 max) internal pure {
        if (value > max) revert LimitOutOfRange(value, max);
    }

    function _setLimits(uint256 slippageBps, uint256 turnoverBps, uint256 navLossBps) internal {
        _checkLimit(slippageBps, MAX_SLIPPAGE_BPS_LIMIT);
        _checkLimit(turnoverBps, MAX_TURNOVER_BPS_LIMIT);
        _checkLimit(navLossBps, MAX_NAV_LOSS_BPS_LIMIT);
        // Checked above: each at most its limit (1,000, 20,000, 1,000), below 2^16.
        (maxSlippageBps, maxTurnoverBps, maxNavLossBps) = (uint16(slippageBps), uint16(turnoverBps), uint16(navLossBps));
        emit LimitsSet(slippageBps, turnoverBps, navLossBps);
    }

    function _setOptionLimits(uint256 premiumBps, uint256 premiumBudget, uint256 period, uint256 openSeriesCap) internal {
        _checkLimit(premiumBps, MAX_PREMIUM_BPS_LIMIT);
        _checkLimit(premiumBudget, MAX_PREMIUM_BUDGET_BPS_LIMIT);
        _checkLimit(openSeriesCap, MAX_OPEN_SERIES_LIMIT);
        _setBudget(BUDGET_PREMIUM, premiumBudget, period);
        maxPremiumBps = premiumBps;
        maxOpenSeries = openSeriesCap;
        emit OptionLimitsSet(premiumBps, premiumBudget, period, openSeriesCap);
    }

    /// @dev Keeper call preamble shared by both rebalance entry points: deadline, then epoch.
    function _checkCall(uint256 expectedEpoch, uint256 deadline) internal view {
        if (block.timestamp > deadline) revert DeadlinePassed(deadline, block.timestamp);
        uint256 epoch = rebalanceEpoch;
        if (expectedEpoch != epoch) revert EpochMismatch(expectedEpoch, epoch);
    }

    /// @dev NAV floor and NAV loss bound after the trades, then the epoch bump and the summary event.
    function _finishRebalance(
        RebalanceBounds memory b,
        uint256 navBefore,
        uint256 navAfter,
        uint256 turnoverBps,
        uint256 legCount
    ) internal {
        (uint256 epoch, uint256 minNavAfter) = (b.expectedEpoch, b.minNavAfter);
        if (navAfter < minNavAfter) revert NavBelowFloor(navAfter, minNavAfter);
        uint256 maxLoss = maxNavLossBps;
        if (navAfter < navBefore.mulDiv(BPS - maxLoss, BPS, Math.Rounding.Ceil)) {
            revert NavLossExceeded(navBefore, navAfter, maxLoss);
        }
        if (navAfter < navBefore) {
            (bool ok, uint256 spent, uint256 budget) = _charge(BUDGET_NAV_LOSS, navBefore - navAfter, navBefore);
            if (!ok) revert NavLossBudgetExceeded(spent, budget);
        }
        // epoch == rebalanceEpoch (`_checkCall`), so uint64(epoch) is exact; the increment is checked.
        rebalanceEpoch = uint64(epoch) + 1;
        emit Rebalanced(epoch, navBefore, navAfter, turnoverBps, legCount);
    }

    /// @dev An empty `OptionLeg[]` in calldata: `rebalance` is `rebalanceWithOptions` without option legs.
    function _noOptionLegs() internal pure returns (OptionLeg[] calldata none) {
        assembly ("memory-safe") {
            none.offset := 0
            none.length := 0
        }
    }

    /// @dev Body of `rebalance` and `rebalanceWithOptions` (its scalars in a struct: calldata arrays take two stack slots).
    function _rebalanceWithOptions(SwapLeg[] calldata legs, OptionLeg[] calldata optionLegs, RebalanceBounds memory b)
        internal
        returns (uint256 navAfter)
    {
        _checkCall(b.expectedEpoch, b.deadline);
        if (legs.length > MAX_LEGS) revert InvalidLegCount(legs.length, MAX_LEGS);
        if (optionLegs.length > MAX_OPTION_LEGS || legs.length + optionLegs.length == 0) {
            revert InvalidOptionLegCount(optionLegs.length, MAX_OPTION_LEGS);
        }
        if (optionLegs.length != 0 && address(optionMarket) == address(0)) revert OptionMarketNotSet();
        // Every feed is read once (`_price`); the NAV after uses the same prices, so it differs from the NAV
        // before only by what the legs changed.
        uint256[] memory answers = new uint256[](2 * _riskAssets.length);
        uint256 book = _bookValue();
        uint256 navBefore = _spotValue(answers) + book;
        _accrueFeesIfDue(navBefore); // minting fee shares keeps NAV

        uint256 turnoverBps;
        {
            (uint256[] memory oracleOut, uint256 swapValue) = _checkLegs(legs, answers);
            (uint256[] memory fairValues, uint256 optionValue) = _checkOptionLegs(optionLegs);
            turnoverBps = _checkTurnover(swapValue + optionValue, navBefore);
            _executeLegs(b.expectedEpoch, legs, oracleOut, b.deadline);
            _chargePremiumBudget(_executeOptionLegs(b.expectedEpoch, optionLegs, fairValues), navBefore);
        }
        // Swaps move no option position: without option legs the book keeps its mark (same block, same feeds).
        if (optionLegs.length != 0) {
            if (_openSeries.length > maxOpenSeries) revert TooManyOpenSeries(_openSeries.length, maxOpenSeries);
            book = _bookValue();
        }
        navAfter = _spotValue(answers) + book;
        _finishRebalance(b, navBefore, navAfter, turnoverBps, legs.length + optionLegs.length);
    }

    /// @dev Turnover, Σ traded value (base units) in bps of `navBefore` rounded up, against the cap; then
    /// charges the traded value to the rolling turnover budget.
    function _checkTurnover(uint256 tradedValue, uint256 navBefore) internal returns (uint256 turnoverBps) {
        // slither-disable-next-line incorrect-equality (division-by-zero guard: NAV 0 sets the maximum so the cap refuses; donations only raise NAV)
        turnoverBps = navBefore == 0 ? type(uint256).max : tradedValue.mulDiv(BPS, navBefore, Math.Rounding.Ceil);
        uint256 maxTurnover = maxTurnoverBps;
        if (turnoverBps > maxTurnover) revert TurnoverCapExceeded(turnoverBps, maxTurnover);
        (bool ok, uint256 spent, uint256 budget) = _charge(BUDGET_TURNOVER, tradedValue, navBefore);
        if (!ok) revert TurnoverBudgetExceeded(spent, budget);
    }

    /// @dev Validates every leg; returns each leg's oracle-fair output and Σ leg input value (base units).
    function _checkLegs(SwapLeg[] calldata legs, uint256[] memory answers)
        internal
        view
        returns (uint256[] memory oracleOut, uint256 tradedValue)
    {
        oracleOut = new uint256[](legs.length);
        // Each leg's asset is looked for from the index after the previous leg's (at most the length): legs
        // usually follow the list order (`_indexOf`).
        uint256 start = 0;
        uint256 keepBps = BPS - maxSlippageBps; // one read for every leg's bound
        for (uint256 i; i < legs.length; ++i) {
            uint256 valueIn;
            (valueIn, oracleOut[i], start) = _checkLeg(i, legs[i], answers, start, keepBps);
            tradedValue += valueIn;
            ++start;
        }
    }

    /// @dev Validates every option leg against the market's fair value (base units, floor) and the premium
    /// bound; returns each leg's fair value and their sum.
    function _checkOptionLegs(OptionLeg[] calldata optionLegs)
        internal
        view
        returns (uint256[] memory fairValues, uint256 totalFair)
    {
        fairValues = new uint256[](optionLegs.length);
        for (uint256 i; i < optionLegs.length; ++i) {
            OptionLeg calldata leg = optionLegs[i];
            if (leg.amount == 0) revert InvalidOptionLeg(i);
            _listed(leg.underlying);
            // slither-disable-next-line unused-return (the limit is bounded against the fair value; the quoted premium is enforced by the market at trade time)
            (, uint256 fair) = optionMarket.quote(leg.underlying, leg.strike, leg.expiry, leg.isCall, leg.amount, leg.isBuy);
            if (leg.isBuy) {
                // The bound rounds down: the keeper may never offer more than the exact bound.
                uint256 bound = fair.mulDiv(BPS + maxPremiumBps, BPS, Math.Rounding.Floor);
                if (leg.premiumLimit > bound) revert PremiumAboveFairBound(i, leg.premiumLimit, bound);
            } else {
                uint256 bound = fair.mulDiv(BPS - maxPremiumBps, BPS, Math.Rounding.Ceil);
                if (leg.premiumLimit < bound) revert PremiumBelowFairBound(i, leg.premiumLimit, bound);
            }
            fairValues[i] = fair;
            totalFair += fair;
        }
    }

    /// @dev Trades every option leg with the market; returns Σ premium paid (base units).
    function _executeOptionLegs(uint256 epoch, OptionLeg[] calldata optionLegs, uint256[] memory fairValues)
        internal
        returns (uint256 paid)
    {
        for (uint256 i; i < optionLegs.length; ++i) {
            (bytes32 id, uint256 premium) = _tradeOption(i, optionLegs[i]);
            if (optionLegs[i].isBuy) paid += premium;
            emit OptionLegExecuted(epoch, i, id, optionLegs[i].isBuy, optionLegs[i].amount, premium, fairValues[i]);
        }
    }

    function _tradeOption(uint256 i, OptionLeg calldata leg) internal returns (bytes32 id, uint256 premium) {
        IOptionMarket market = optionMarket;
        if (leg.isBuy) {
            IERC20(asset()).forceApprove(address(market), leg.premiumLimit);
            try market.buy(leg.underlying, leg.strike, leg.expiry, leg.isCall, leg.amount, leg.premiumLimit, address(this))
            returns (bytes32 boughtId, uint256 paid) {
                (id, premium) = (boughtId, paid);
            } catch (bytes memory reason) {
                revert OptionLegFailed(i, reason);
            }
            IERC20(asset()).forceApprove(address(market), 0);
            // Defence in depth: the market enforces the limit, the vault re-checks what it paid.
            if (premium > leg.premiumLimit) revert OptionPremiumExceeded(i, leg.premiumLimit, premium);
            ownOptionAmount[id] += leg.amount;
            _addOpenSeries(id);
        } else {
            id = market.seriesId(leg.underlying, leg.strike, leg.expiry, leg.isCall);
            try market.sell(id, leg.amount, leg.premiumLimit, address(this)) returns (uint256 received) {
                premium = received;
            } catch (bytes memory reason) {
                revert OptionLegFailed(i, reason);
            }
            if (premium < leg.premiumLimit) revert OptionPremiumExceeded(i, leg.premiumLimit, premium);
            // Only what the vault bought keeps a series open: a position gifted to the vault (even 1 wei,
            // ahead of this sell) neither holds a slot of `maxOpenSeries` nor is valued once the own part is sold.
            uint256 own = ownOptionAmount[id];
            own = own > leg.amount ? own - leg.amount : 0;
            ownOptionAmount[id] = own;
            if (own == 0) _removeOpenSeries(id);
        }
    }

    /// @dev Charges `paid` to the rolling premium budget, `premiumBudgetBps` of `navBefore` (floor).
    function _chargePremiumBudget(uint256 paid, uint256 navBefore) internal {
        if (paid == 0) return;
        (bool ok, uint256 spent, uint256 budget) = _charge(BUDGET_PREMIUM, paid, navBefore);
        if (!ok) revert PremiumBudgetExceeded(spent, budget);
    }

    function _addOpenSeries(bytes32 id) internal {
        uint256 n = _openSeries.length;
        for (uint256 i; i < n; ++i) {
            if (_openSeries[i] == id) return;
        }
        _openSeries.push(id);
    }

    /// @dev Removes `id` from the open series; false when it was not there.
    function _removeOpenSeries(bytes32 id) internal returns (bool) {
        uint256 n = _openSeries.length;
        for (uint256 i; i < n; ++i) {
            if (_openSeries[i] == id) {
                _openSeries[i] = _openSeries[n - 1];
                _openSeries.pop();
                return true;
            }
        }
        return false;
    }

    /// @dev Validates a leg and returns its input value (base units, floor), oracle-fair output (floor) and
    /// its risk asset's index (the scan starts at `hint`, at most the length; see `_indexOf`). The asset's price is
    /// the call's (`_price`); `keepBps` is `BPS - maxSlippageBps`.
    function _checkLeg(uint256 i, SwapLeg calldata leg, uint256[] memory answers, uint256 hint, uint256 keepBps)
        internal
        view
        returns (uint256 valueIn, uint256 fairOut, uint256 k)
    {
        address base = asset();
        if (leg.tokenIn == base) {
            k = _indexOf(leg.tokenOut, hint, answers.length / 2);
            (uint256 num, uint256 den) = _price(answers, k);
            valueIn = leg.amountIn;
            // fairOut = valueIn × 10^(tokenDecimals + feedDecimals) / (answer × 10^baseDecimals)
            fairOut = valueIn.mulDiv(den, num, Math.Rounding.Floor);
        } else if (leg.tokenOut == base) {
            k = _indexOf(leg.tokenIn, hint, answers.length / 2);
            valueIn = _value(answers, k, leg.amountIn);
            fairOut = valueIn;
        } else {
            revert InvalidLeg(i, leg.tokenIn, leg.tokenOut);
        }
        // The bound rounds up: the keeper may never ask for less than the exact bound.
        uint256 bound = fairOut.mulDiv(keepBps, BPS, Math.Rounding.Ceil);
        if (leg.minAmountOut < bound) revert MinAmountOutBelowOracleBound(i, leg.tokenOut, leg.minAmountOut, bound);
    }

    function _executeLegs(uint256 epoch, SwapLeg[] calldata legs, uint256[] memory oracleOut, uint256 deadline)
        internal
    {
        for (uint256 i; i < legs.length; ++i) {
            _swap(epoch, i, legs[i], oracleOut[i], deadline);
        }
    }

    function _swap(uint256 epoch, uint256 i, SwapLeg calldata leg, uint256 oracleOut, uint256 deadline) internal {
        address risk = leg.tokenIn == asset() ? leg.tokenOut : leg.tokenIn;
        uint24 fee = riskAssetConfig[risk].poolFee;
        // `SwapRouter.exactInputSingle(ExactInputSingleParams)`: a static struct encodes as its eight words
        // (tokenIn, tokenOut, fee, recipient, deadline, amountIn, amountOutMinimum, sqrtPriceLimitX96 = 0),
        // written in place after the selector. The leg is a static struct of four words in calldata whose two
        // addresses `_checkLeg` has read through the ABI decoder's checks (a dirty address reverted there).
        bytes memory data;
        bytes4 selector = ISwapRouter.exactInputSingle.selector;
        assembly ("memory-safe") {
            data := mload(0x40)
            mstore(data, 260) // 4 + 8 words
            mstore(add(data, 32), selector)
            calldatacopy(add(data, 36), leg, 64) // tokenIn, tokenOut
            mstore(add(data, 100), fee)
            mstore(add(data, 132), address())
            mstore(add(data, 164), deadline)
            calldatacopy(add(data, 196), add(leg, 64), 64) // amountIn, minAmountOut
            mstore(add(data, 260), 0)
            mstore(0x40, add(data, 320))
        }
        if (routerKind == RouterKind.SwapRouter02) _toRouter02(data);
        // slither-disable-next-line low-level-calls (one call site for two router ABIs; failure and a short answer revert)
        (bool ok, bytes memory answer) = address(swapRouter).call(data);
        if (!ok || answer.length < 32) revert LegSwapFailed(i, answer);
        uint256 amountOut;
        assembly ("memory-safe") {
            amountOut := mload(add(answer, 32)) // the first return word: amountOut
        }
        // Defence in depth: the router enforces amountOutMinimum, the vault re-checks what it was told.
        if (amountOut < leg.minAmountOut) revert SlippageExceeded(i, leg.tokenOut, leg.minAmountOut, amountOut);
        emit LegExecuted(epoch, i, leg.tokenIn, leg.tokenOut, leg.amountIn, amountOut, oracleOut);
    }

    /// @dev Rewrites `SwapRouter.exactInputSingle` calldata into `SwapRouter02.exactInputSingle` calldata in place:
    /// SwapRouter02's selector and the same parameter words without the fifth (`deadline`), which SwapRouter02
    /// does not take. There the vault's own check is the deadline: `_checkCall` reverts with `DeadlinePassed`
    /// before any leg, and every leg runs in that same block.
    function _toRouter02(bytes memory data) internal pure {
        bytes4 selector = IV3SwapRouter.exactInputSingle.selector;
        assembly ("memory-safe") {
            let words := add(data, 36) // after the length word and the 4-byte selector
            mstore(add(words, 128), mload(add(words, 160))) // amountIn
            mstore(add(words, 160), mload(add(words, 192))) // amountOutMinimum
            mstore(add(words, 192), mload(add(words, 224))) // sqrtPriceLimitX96
            mstore(data, 228) // 4 + 7 words
            mstore(add(data, 32), or(selector, and(mload(add(data, 32)), shr(32, not(0)))))
        }
    }

    /// @dev The router holds a standing allowance of the base asset and of every listed asset, so a leg makes no
    /// approval (an allowance written and consumed per leg costs about 4,000 gas net of its refund, and a
    /// maximum allowance is not decremented by `transferFrom`). Safe because Uniswap's routers only ever pull
    /// from their caller (the callback's payer is `msg.sender` of the swap call, and the callback checks that
    /// a genuine pool calls it), and this vault calls the router only in `_swap` with a checked leg; what a
    /// swap takes beyond its leg would still show as NAV loss against `maxNavLossBps` and the rolling budget.
    /// Delisting leaves the allowance (the vault never routes a token it does not list, and a stuck token's
    /// `approve` may revert, which must not block its delisting); relisting sets it again.
    function _approveRouter(address token, uint256 amount) internal {
        IERC20(token).forceApprove(address(swapRouter), amount);
    }

    function _listed(address token) internal view returns (RiskAsset memory config) {
        config = riskAssetConfig[token];
        if (!config.listed) revert AssetNotListed(token);
    }

    /// @dev Base balance + Σ balanceᵢ × answerᵢ over the listed assets, base-asset units (floor); balances are
    /// read anew, an asset's price only when it is held (`_price`). `answers` holds 2 words per listed asset
    /// (see `_price`), all 0 when new.
    function _spotValue(uint256[] memory answers) internal view returns (uint256 value) {
        // The two calls stay inline (not `_balanceOf`): this loop is every NAV's hot path.
        value = IERC20(asset()).balanceOf(address(this));
        uint256 n = answers.length / 2;
        for (uint256 i; i < n; ++i) {
            uint256 balance = IERC20(_assetAt(i)).balanceOf(address(this));
            if (balance != 0) value += _value(answers, i, balance);
        }
    }

    /// @dev The vault's balance of `token` (one call site for every balance read).
    function _balanceOf(address token) internal view returns (uint256) {
        return IERC20(token).balanceOf(address(this));
    }

    /// @dev `_riskAssets[i]` for an `i` the caller knows to be below the length (a loop over the list, or an
    /// index it returned), without the bounds check's extra read of the length (100 gas per warm access).
    function _assetAt(uint256 i) internal view returns (address token) {
        assembly ("memory-safe") {
            mstore(0, _riskAssets.slot)
            token := sload(add(keccak256(0, 32), i))
        }
    }

    /// @dev The option book at its mark (`optionsValue`), base-asset units; 0 without open series.
    function _bookValue() internal view returns (uint256) {
        return _openSeries.length != 0 ? optionsValue() : 0;
    }

    /// @dev Index of `token` in `_riskAssets`, whose length `n` the caller passes (the length of its price
    /// cache, see `_price`: the list does not change within a call); reverts with `AssetNotListed` when
    /// absent. The scan starts at `start` (at most `n`) and wraps around, so it visits every index once; a
    /// rebalance starts each leg's scan after the previous leg's index, and legs in list order find theirs
    /// in one step.
    function _indexOf(address token, uint256 start, uint256 n) internal view returns (uint256) {
        for (uint256 j; j < n; ++j) {
            uint256 i = start + j; // < 2n: start <= n, j < n
            if (i >= n) i -= n;
            if (_assetAt(i) == token) return i;
        }
        revert AssetNotListed(token);
    }

    /// @dev Price factors of `_riskAssets[k]`: num = answer × 10^baseDecimals and den = 10^(tokenDecimals +
    /// feedDecimals), kept in `answers[k]` and `answers[n + k]` (n = `answers.length / 2`, the list's length)
    /// once the feed was read through `_checkedAnswer` (every check; its answer is positive, so num = 0
    /// means "not read yet"). Within a rebalance every feed is thus read once, and the NAV before and after,
    /// and every leg's bound, use the same prices; a repeated valuation reads neither the config nor the feed.
    function _price(uint256[] memory answers, uint256 k) internal view returns (uint256 num, uint256 den) {
        uint256 n = answers.length / 2;
        num = answers[k];
        if (num == 0) {
            RiskAsset memory config = riskAssetConfig[_assetAt(k)];
            num = _checkedAnswer(config) * 10 ** _baseDecimals;
            den = 10 ** (uint256(config.tokenDecimals) + config.feedDecimals);
            answers[k] = num;
            answers[n + k] = den;
        } else {
            den = answers[n + k];
        }
    }

    /// @dev value = amount × answer × 10^baseDecimals / 10^(tokenDecimals + feedDecimals) of `_riskAssets[k]`,
    /// base-asset units, rounded down (`_price`).
    function _value(uint256[] memory answers, uint256 k, uint256 amount) internal view returns (uint256) {
        (uint256 num, uint256 den) = _price(answers, k);
        return amount.mulDiv(num, den, Math.Rounding.Floor);
    }

    /// @dev The feed's latest answer through `ChainlinkReader`, refusing non-positive answers (`InvalidPrice`)
    /// and answers older than the heartbeat or from the future (`StalePrice`). Not checked on purpose: answer
    /// bounds (0, 0: none; the vault's assets have no admin bounds) and an L2 sequencer (none on the vault).
    function _checkedAnswer(RiskAsset memory config) internal view returns (uint256) {
        return ChainlinkReader.latestChecked(config.feed, config.heartbeat, 0, 0);
    }
}
