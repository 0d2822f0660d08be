// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {AggregatorV3Interface} from "@chainlink/contracts/src/v0.8/shared/interfaces/AggregatorV3Interface.sol";

/// @title ChainlinkReader
/// @notice Reads of Chainlink `AggregatorV3Interface` feeds: the latest answer behind staleness, sign and
/// bound checks, an L2 sequencer uptime check with a grace period, and the rounds around a point in time,
/// aware of the proxy's aggregator phases.
/// @dev Round ids. A Chainlink proxy's round id is `(phaseId << 64) | aggregatorRoundId`: within one phase
/// the aggregator round ids are contiguous from 1 and their `updatedAt` non-decreasing; a new phase (a new
/// aggregator behind the proxy) starts again at aggregator round 1, so `roundId + 1` need not exist.
/// A feed without phases (phase 0, rounds from 1) is read the same way. A round that does not exist reads
/// as `updatedAt == 0`, whether the feed reverts or answers zeros for it.
/// Used by every contract of the project that reads a feed (`RiskParityVault`, `OptionMarket`), so a feed
/// failure reverts with the same error wherever it happens. Not checked on purpose: `answeredInRound`
/// (deprecated by Chainlink) and `startedAt` of price rounds.
library ChainlinkReader {
    /// @notice A feed's answer is older than its heartbeat allows, or from the future (`updatedAt` Unix
    /// seconds, `heartbeat` seconds).
    error StalePrice(address feed, uint256 updatedAt, uint256 heartbeat);
    /// @notice A feed answered zero or a negative value (in the feed's decimals).
    error InvalidPrice(address feed, int256 answer);
    /// @notice A feed's answer is outside the bounds set for it, all in the feed's decimals (`maxAnswer` 0:
    /// no upper bound).
    error PriceOutOfBounds(address feed, int256 answer, uint256 minAnswer, uint256 maxAnswer);
    /// @notice The L2 sequencer uptime feed reports the sequencer down (`status` 1), or an invalid round.
    error SequencerDown(address uptimeFeed, int256 status, uint256 startedAt);
    /// @notice The sequencer is up again since `startedAt`, less than `gracePeriod` seconds ago.
    error SequencerGracePeriod(address uptimeFeed, uint256 startedAt, uint256 gracePeriod);

    /// @notice Earlier phases `roundsAround` walks back through at most.
    uint256 internal constant MAX_PHASES_BACK = 4;
    uint256 private constant PHASE_OFFSET = 64;

    /// @notice Latest answer, refusing a non-positive answer, one outside [minAnswer, maxAnswer] (in the
    /// feed's own decimals; `maxAnswer` 0: no upper bound) and one older than `heartbeat` seconds.
    /// @dev The bounds catch a feed pinned at its aggregator's own min/max answer in a crash or spike.
    function latestChecked(AggregatorV3Interface feed, uint256 heartbeat, uint256 minAnswer, uint256 maxAnswer)
        internal
        view
        returns (uint256)
    {
        // slither-disable-next-line unused-return (roundId, startedAt, answeredInRound unused: answer and updatedAt are the checked fields; answeredInRound is deprecated by Chainlink)
        (, int256 answer,, uint256 updatedAt,) = feed.latestRoundData();
        if (answer <= 0) revert InvalidPrice(address(feed), answer);
        if (uint256(answer) < minAnswer || (maxAnswer != 0 && uint256(answer) > maxAnswer)) {
            revert PriceOutOfBounds(address(feed), answer, minAnswer, maxAnswer);
        }
        if (updatedAt > block.timestamp || block.timestamp - updatedAt > heartbeat) {
            revert StalePrice(address(feed), updatedAt, heartbeat);
        }
        return uint256(answer);
    }

    /// @notice Refuses while the L2 sequencer is down and for `gracePeriod` seconds after it came back up
    /// (Chainlink's sequencer uptime feed: answer 0 up, 1 down, `startedAt` the time of the last change).
    /// No check when `uptimeFeed` is the zero address (an L1 deployment).
    function checkSequencer(AggregatorV3Interface uptimeFeed, uint256 gracePeriod) internal view {
        if (address(uptimeFeed) == address(0)) return;
        // slither-disable-next-line unused-return (uptime feed: only status and startedAt carry meaning, per Chainlink's L2 sequencer feed docs)
        (, int256 status, uint256 startedAt,,) = uptimeFeed.latestRoundData();
        if (status != 0 || startedAt == 0) revert SequencerDown(address(uptimeFeed), status, startedAt);
        if (block.timestamp - startedAt < gracePeriod) {
            revert SequencerGracePeriod(address(uptimeFeed), startedAt, gracePeriod);
        }
    }

    /// @notice Answer and update time of round `id`; `updatedAt` is 0 when the round does not exist.
    function roundAt(AggregatorV3Interface feed, uint80 id) internal view returns (int256 answer, uint256 updatedAt) {
        // slither-disable-next-line unused-return (the round id is the argument; startedAt and answeredInRound are not part of the answer-at-round rule)
        try feed.getRoundData(id) returns (uint80, int256 a, uint256, uint256 u, uint80) {
            return (a, u);
        } catch {
            return (0, 0);
        }
    }

    /// @notice The last round updated at or before `t` (`before`, 0 when none) and the first round updated
    /// after `t` (`next`, 0 when none yet), with their update times, across phase boundaries.
    /// @dev Binary search inside a phase; an earlier phase's last round is found by doubling then
    /// bisection. At most `MAX_PHASES_BACK` earlier phases are visited.
    function roundsAround(AggregatorV3Interface feed, uint256 t)
        internal
        view
        returns (uint80 before, uint256 beforeAt, uint80 next, uint256 nextAt)
    {
        // slither-disable-next-line unused-return (only the latest round id and its update time are needed; the search reads answers later per round)
        (uint80 latest,,, uint256 latestAt,) = feed.latestRoundData();
        if (latestAt <= t) return (latest, latestAt, 0, 0);
        (next, nextAt) = (latest, latestAt);
        uint256 phase = latest >> PHASE_OFFSET;
        uint256 hi = uint64(latest);
        uint256 hiAt = latestAt;
        for (uint256 k;; ++k) {
            // Invariant: round (phase, hi), if hi != 0, was updated at hiAt > t, no later round was updated
            // at or before t, and (next, nextAt) is the earliest round known to be updated after t.
            if (hi != 0) {
                (, uint256 firstAt) = roundAt(feed, _id(phase, 1));
                if (firstAt != 0 && firstAt <= t) return _bisect(feed, t, phase, firstAt, hi, hiAt);
                if (firstAt != 0) (next, nextAt) = (_id(phase, 1), firstAt);
            }
            if (phase == 0 || k == MAX_PHASES_BACK) return (0, 0, next, nextAt);
            --phase;
            (hi, hiAt) = _lastRoundOf(feed, phase);
            if (hi != 0 && hiAt <= t) return (_id(phase, hi), hiAt, next, nextAt);
        }
    }

    /// @dev Within `phase`: round 1 (updated at `loAt`) is at or before t, round `hi` (at `hiAt`) after t.
    function _bisect(AggregatorV3Interface feed, uint256 t, uint256 phase, uint256 loAt, uint256 hi, uint256 hiAt)
        private
        view
        returns (uint80, uint256, uint80, uint256)
    {
        uint256 lo = 1;
        while (hi - lo > 1) {
            uint256 mid = (lo + hi) >> 1;
            (, uint256 roundTime) = roundAt(feed, _id(phase, mid));
            if (roundTime != 0 && roundTime <= t) (lo, loAt) = (mid, roundTime);
            else (hi, hiAt) = (mid, roundTime);
        }
        return (_id(phase, lo), loAt, _id(phase, hi), hiAt);
    }

    /// @dev Last aggregator round id of `phase` and its update time (0, 0 when the phase has no round).
    function _lastRoundOf(AggregatorV3Interface feed, uint256 phase) private view returns (uint256 lo, uint256 loAt) {
        (, loAt) = roundAt(feed, _id(phase, 1));
        if (loAt == 0) return (0, 0);
        lo = 1;
        uint256 hi = 2;
        // Doubling until a missing round, then bisection: (phase, lo) exists, (phase, hi) does not (or hi is
        // 2^64, past every aggregator round id).
        bool doubling = true;
        while (doubling || hi - lo > 1) {
            uint256 probe = doubling ? hi : (lo + hi) >> 1;
            (, uint256 roundTime) = roundAt(feed, _id(phase, probe));
            if (roundTime == 0) {
                (hi, doubling) = (probe, false);
            } else {
                (lo, loAt) = (probe, roundTime);
                if (doubling) {
                    hi = probe << 1;
                    doubling = hi < 1 << PHASE_OFFSET;
                }
            }
        }
    }

    function _id(uint256 phase, uint256 aggregatorRound) private pure returns (uint80) {
        return uint80((phase << PHASE_OFFSET) | aggregatorRound);
    }
}
