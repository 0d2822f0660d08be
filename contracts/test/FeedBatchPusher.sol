// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {PushPriceFeed} from "./PushPriceFeed.sol";

/// @title FeedBatchPusher
/// @notice Pushes one answer to each of many `PushPriceFeed`s in one transaction (a replay's daily closes).
/// The pusher must own the feeds (`transferOwnership` to it); its own owner is the only caller. Local chains only.
contract FeedBatchPusher is Ownable {
    /// @notice `feeds` and `answers` differ in length.
    error LengthMismatch(uint256 feeds, uint256 answers);

    constructor(address owner_) Ownable(owner_) {}

    /// @notice `feeds[i].pushAnswer(answers[i])` for every i, in order.
    function push(PushPriceFeed[] calldata feeds, int256[] calldata answers) external onlyOwner {
        if (feeds.length != answers.length) revert LengthMismatch(feeds.length, answers.length);
        for (uint256 i; i < feeds.length; ++i) {
            feeds[i].pushAnswer(answers[i]);
        }
    }
}
