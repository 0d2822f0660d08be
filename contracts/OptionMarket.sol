// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {IERC20Metadata} from "@openzeppelin/contracts/token/ERC20/extensions/IERC20Metadata.sol";
import {ERC4626} from "@openzeppelin/contracts/token/ERC20/extensions/ERC4626.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {Math} from "@openzeppelin/contracts/utils/math/Math.sol";

import {IOptionMarket} from "./interfaces/IOptionMarket.sol";
import {OptionPricing} from "./options/OptionPricing.sol";
import {OptionSeriesLedger} from "./options/OptionSeriesLedger.sol";

/// @title OptionMarket
/// @notice European, cash-settled calls and puts on whitelisted underlyings, settled in the base asset
/// (a USD stablecoin) at expiry from the underlying's Chainlink price feed. A series is
/// (underlying, strike, expiry, isCall). The market's liquidity pool is the writer of every option: LPs
/// deposit the base asset (ERC-4626 shares of this contract), earn the premiums and bear the payouts.
/// @dev Units. Strikes, spot and per-unit values are 1e18 fixed point in USD per whole underlying;
/// option amounts are 1e18 fixed point in whole underlyings (1e18 = an option on one token); premiums,
/// collateral and payouts are in base-asset units.
///
/// Split by concern: `OptionPricing` (underlyings, feeds, quotes, payoffs), `OptionSeriesLedger` (series,
/// positions, collateral and payouts owed, marks, the settlement rule) and this contract, the LP pool
/// (ERC-4626) and the trades that move its money (`buy`, `sell`, `exercise`).
/// Collateral is locked when an option is bought and released when it is sold back or settled;
/// the unexercised part returns to the pool, i.e. to its LPs.
///
/// Not supported on purpose: writing by third parties (the pool writes), early exercise, transferable
/// positions (positions are a ledger per holder).
contract OptionMarket is OptionSeriesLedger, ERC4626 {
    using SafeERC20 for IERC20;
    using Math for uint256;

    /*//////////////////////////////////////////////////////////////
                               CONSTANTS
    //////////////////////////////////////////////////////////////*/

    /// @dev LP shares have 6 more decimals than the base asset (virtual shares against the inflation attack).
    uint8 internal constant DECIMALS_OFFSET = 6;

    /*//////////////////////////////////////////////////////////////
                              CONSTRUCTOR
    //////////////////////////////////////////////////////////////*/

    /// @param baseAsset The stablecoin premiums, collateral and payouts are paid in (≤ 18 decimals).
    /// @param admin Holder of `DEFAULT_ADMIN_ROLE`.
    /// @param callCapBps_ Cap of a call's payout, bps of its strike (1 … 100_000).
    constructor(IERC20Metadata baseAsset, string memory name_, string memory symbol_, address admin, uint256 callCapBps_)
        OptionPricing(baseAsset.decimals(), admin, callCapBps_)
        ERC4626(baseAsset)
        ERC20(name_, symbol_)
    {}

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
                             LIQUIDITY POOL
    //////////////////////////////////////////////////////////////*/

    /// @inheritdoc IOptionMarket
    function freeLiquidity() public view returns (uint256) {
        uint256 balance = IERC20(asset()).balanceOf(address(this));
        uint256 committed = lockedCollateral + owedPayouts;
        return balance > committed ? balance - committed : 0;
    }

    /// @notice LP NAV: base balance less the payouts owed and less the open options at their mark
    /// (rounded up: the pool values its liability conservatively), floored at zero. An expired series is
    /// marked at its settlement payout, so settling it never moves the NAV; while its settlement round is
    /// pending (at most a heartbeat after expiry, only when the round current at expiry was stale) this
    /// reverts with `SettlementPending`, and LP deposits and withdrawals wait.
    function totalAssets() public view override returns (uint256) {
        uint256 liability = _liability();
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
}
