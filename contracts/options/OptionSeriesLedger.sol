// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {ReentrancyGuard} from "@openzeppelin/contracts/utils/ReentrancyGuard.sol";
import {Math} from "@openzeppelin/contracts/utils/math/Math.sol";

import {IOptionMarket} from "../interfaces/IOptionMarket.sol";
import {ChainlinkReader} from "../libraries/ChainlinkReader.sol";
import {OptionPricing} from "./OptionPricing.sol";

/// @title OptionSeriesLedger
/// @notice The series part of `OptionMarket`: series terms and state, holders' positions, the collateral
/// locked and the payouts owed, the marks, and settlement.
/// @dev Series creation: a new series is opened (by `buy`) only by a holder of `SERIES_CREATOR_ROLE` (the
/// vault, the admin); anyone trades series that exist. Every unsettled series costs a slot of
/// `MAX_ACTIVE_SERIES` and is priced in every LP deposit and withdrawal (`totalAssets`), so opening one is
/// a listing decision: outsiders can neither fill the slots the vault needs nor grow the LPs' gas.
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
abstract contract OptionSeriesLedger is OptionPricing, ReentrancyGuard {
    using Math for uint256;

    /*//////////////////////////////////////////////////////////////
                               CONSTANTS
    //////////////////////////////////////////////////////////////*/

    /// @inheritdoc IOptionMarket
    uint256 public constant MAX_ACTIVE_SERIES = 64;
    /// @inheritdoc IOptionMarket
    bytes32 public constant SERIES_CREATOR_ROLE = keccak256("SERIES_CREATOR_ROLE");

    /*//////////////////////////////////////////////////////////////
                                STORAGE
    //////////////////////////////////////////////////////////////*/

    mapping(bytes32 seriesId => Series) internal _series;
    /// @inheritdoc IOptionMarket
    mapping(bytes32 seriesId => mapping(address holder => uint256)) public positionOf;
    bytes32[] internal _activeSeries;
    /// @inheritdoc IOptionMarket
    uint256 public lockedCollateral;
    /// @inheritdoc IOptionMarket
    uint256 public owedPayouts;

    /*//////////////////////////////////////////////////////////////
                                 ANYONE
    //////////////////////////////////////////////////////////////*/

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
    function positionValue(bytes32 id, uint256 amount) public view returns (uint256) {
        return _mark(id, amount, Math.Rounding.Floor);
    }

    /// @inheritdoc IOptionMarket
    function findSettlementRound(bytes32 id) external view returns (uint80 roundId) {
        (roundId,) = _settlementRound(id, _existing(id));
    }

    /*//////////////////////////////////////////////////////////////
                                INTERNAL
    //////////////////////////////////////////////////////////////*/

    /// @dev What the pool owes, base units rounded up: the payouts owed plus every unsettled series' open
    /// interest at its mark (conservative for the LPs' NAV).
    function _liability() internal view returns (uint256 liability) {
        liability = owedPayouts;
        uint256 n = _activeSeries.length;
        for (uint256 i; i < n; ++i) {
            bytes32 id = _activeSeries[i];
            liability += _mark(id, _series[id].openInterest, Math.Rounding.Ceil);
        }
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
            perUnit = _fair(s.underlying, s.strike, s.expiry, s.isCall);
        }
        return perUnit.mulDiv(amount, _valueScale, rounding);
    }

    /// @dev Collateral (base units, rounded up) for `interest` options of `s`: the largest payoff.
    function _collateralFor(Series storage s, uint256 interest) internal view returns (uint256) {
        uint256 perUnit = s.isCall ? s.strike * callCapBps / BPS : s.strike;
        return perUnit.mulDiv(interest, _valueScale, Math.Rounding.Ceil);
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
