// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {BlackScholes} from "../BlackScholes.sol";

/// @title BlackScholesHarness
/// @notice Exposes the `BlackScholes` library's internal functions as external views, for the
/// differential tests and the gas benchmark. Local chains only.
contract BlackScholesHarness {
    function price(BlackScholes.Inputs calldata p, bool isCall) external pure returns (uint256) {
        return BlackScholes.price(p, isCall);
    }

    function greeks(BlackScholes.Inputs calldata p) external pure returns (BlackScholes.Greeks memory) {
        return BlackScholes.greeks(p);
    }

    function normalCdf(int256 x) external pure returns (int256) {
        return BlackScholes.normalCdf(x);
    }

    function normalPdf(int256 x) external pure returns (int256) {
        return BlackScholes.normalPdf(x);
    }
}
