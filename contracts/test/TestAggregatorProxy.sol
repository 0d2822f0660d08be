// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {AggregatorV3Interface} from "@chainlink/contracts/src/v0.8/shared/interfaces/AggregatorV3Interface.sol";

/// @title TestAggregator
/// @notice An aggregator behind a `TestAggregatorProxy`: its owner records rounds with explicit update times
/// (irregular, as deviation and heartbeat updates are), contiguous aggregator round ids from 1, times never
/// decreasing. A round that does not exist reverts, as an OCR2 aggregator's `getRoundData` does. Local chains only.
contract TestAggregator is Ownable {
    struct Round {
        int256 answer;
        uint64 updatedAt;
    }

    /// @notice The round does not exist.
    error NoDataPresent(uint80 roundId);
    /// @notice `updatedAt` is before the previous round's or after the current block.
    error UpdateTimeInvalid(uint256 updatedAt, uint256 previous, uint256 blockTimestamp);

    uint8 public immutable decimals;
    /// @notice Last aggregator round id (0 before the first).
    uint80 public latestRound;
    mapping(uint80 roundId => Round) private _rounds;

    constructor(uint8 decimals_, address owner_) Ownable(owner_) {
        decimals = decimals_;
    }

    /// @notice Records rounds `latestRound + 1 ..` with `answers[i]` updated at `updatedAt[i]` (Unix seconds).
    function record(int256[] calldata answers, uint64[] calldata updatedAt) external onlyOwner {
        uint80 id = latestRound;
        uint64 previous = id == 0 ? 0 : _rounds[id].updatedAt;
        for (uint256 i; i < answers.length; ++i) {
            if (updatedAt[i] < previous || updatedAt[i] > block.timestamp) {
                revert UpdateTimeInvalid(updatedAt[i], previous, block.timestamp);
            }
            previous = updatedAt[i];
            _rounds[++id] = Round({answer: answers[i], updatedAt: updatedAt[i]});
        }
        latestRound = id;
    }

    function getRoundData(uint80 roundId)
        public
        view
        returns (uint80, int256 answer, uint256 startedAt, uint256 updatedAt, uint80 answeredInRound)
    {
        Round memory round = _rounds[roundId];
        if (round.updatedAt == 0) revert NoDataPresent(roundId);
        return (roundId, round.answer, round.updatedAt, round.updatedAt, roundId);
    }

    function latestRoundData() external view returns (uint80, int256, uint256, uint256, uint80) {
        return getRoundData(latestRound);
    }
}

/// @title TestAggregatorProxy
/// @notice The round-id scheme of Chainlink's `EACAggregatorProxy`: `roundId = (phaseId << 64) | aggregatorRoundId`;
/// each `setAggregator` starts a new phase, and rounds of earlier phases stay readable through their aggregators
/// (`phaseAggregators`). Local chains only.
contract TestAggregatorProxy is AggregatorV3Interface, Ownable {
    uint256 private constant PHASE_OFFSET = 64;

    /// @notice No aggregator in the round id's phase.
    error PhaseNotFound(uint16 phaseId);

    uint8 public immutable override decimals;
    string public override description;
    uint16 public phaseId;
    mapping(uint16 phase => TestAggregator) public phaseAggregators;

    constructor(uint8 decimals_, string memory description_, address owner_) Ownable(owner_) {
        decimals = decimals_;
        description = description_;
    }

    /// @notice Points the proxy at `aggregator` as phase `phaseId + 1`.
    function setAggregator(TestAggregator aggregator) external onlyOwner {
        phaseAggregators[++phaseId] = aggregator;
    }

    function version() external pure override returns (uint256) {
        return 4;
    }

    function getRoundData(uint80 roundId)
        external
        view
        override
        returns (uint80, int256 answer, uint256 startedAt, uint256 updatedAt, uint80 answeredInRound)
    {
        uint16 phase = uint16(roundId >> PHASE_OFFSET);
        TestAggregator aggregator = phaseAggregators[phase];
        if (address(aggregator) == address(0)) revert PhaseNotFound(phase);
        uint80 aggregatorRound;
        (aggregatorRound, answer, startedAt, updatedAt, answeredInRound) =
            aggregator.getRoundData(uint80(uint64(roundId)));
        return (roundId, answer, startedAt, updatedAt, _proxyId(phase, answeredInRound));
    }

    function latestRoundData()
        external
        view
        override
        returns (uint80 roundId, int256 answer, uint256 startedAt, uint256 updatedAt, uint80 answeredInRound)
    {
        uint16 phase = phaseId;
        (roundId, answer, startedAt, updatedAt, answeredInRound) = phaseAggregators[phase].latestRoundData();
        return (_proxyId(phase, roundId), answer, startedAt, updatedAt, _proxyId(phase, answeredInRound));
    }

    function _proxyId(uint16 phase, uint80 aggregatorRound) private pure returns (uint80) {
        return uint80((uint256(phase) << PHASE_OFFSET) | aggregatorRound);
    }
}
