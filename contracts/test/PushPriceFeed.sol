// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {AggregatorV3Interface} from "@chainlink/contracts/src/v0.8/shared/interfaces/AggregatorV3Interface.sol";

/// @title PushPriceFeed
/// @notice Chainlink `AggregatorV3Interface` whose owner pushes answers; every push opens a new round
/// stamped with the block time, and the whole round history stays readable through `getRoundData`.
/// Local chains only. Round ids are encoded like a Chainlink proxy's, `(phaseId << 64) | aggregatorRoundId`:
/// phase 0 until the owner calls `startPhase` (a new aggregator behind the proxy), aggregator rounds
/// contiguous from 1 within each phase. A round that does not exist reverts (`RoundNotFound`).
contract PushPriceFeed is AggregatorV3Interface, Ownable {
    struct Round {
        int256 answer;
        uint64 updatedAt;
    }

    /// @notice The round does not exist.
    error RoundNotFound(uint80 roundId);

    event AnswerUpdated(int256 indexed current, uint256 indexed roundId, uint256 updatedAt);
    event PhaseStarted(uint16 phaseId);

    uint8 public immutable override decimals;
    string public override description;
    /// @notice Proxy round id of the latest round (0 before the first push).
    uint80 public latestRound;
    /// @notice Current phase; its first push opens aggregator round 1.
    uint16 public phaseId;
    uint64 private _aggregatorRound;
    mapping(uint80 roundId => Round) private _rounds;

    constructor(uint8 decimals_, string memory description_, address owner_) Ownable(owner_) {
        decimals = decimals_;
        description = description_;
    }

    /// @notice Opens a new round with `answer` (scaled by `decimals`) at the current block time.
    function pushAnswer(int256 answer) external onlyOwner {
        uint80 roundId = (uint80(phaseId) << 64) | ++_aggregatorRound;
        _rounds[roundId] = Round({answer: answer, updatedAt: uint64(block.timestamp)});
        latestRound = roundId;
        emit AnswerUpdated(answer, roundId, block.timestamp);
    }

    /// @notice Starts a new phase: the next push is round `(phaseId << 64) | 1`.
    function startPhase() external onlyOwner {
        ++phaseId;
        _aggregatorRound = 0;
        emit PhaseStarted(phaseId);
    }

    function version() external pure override returns (uint256) {
        return 4;
    }

    function getRoundData(uint80 roundId)
        public
        view
        override
        returns (uint80, int256 answer, uint256 startedAt, uint256 updatedAt, uint80 answeredInRound)
    {
        Round memory round = _rounds[roundId];
        if (round.updatedAt == 0) revert RoundNotFound(roundId);
        return (roundId, round.answer, round.updatedAt, round.updatedAt, roundId);
    }

    function latestRoundData()
        external
        view
        override
        returns (uint80, int256, uint256, uint256, uint80)
    {
        return getRoundData(latestRound);
    }
}
