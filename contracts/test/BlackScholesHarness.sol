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

    /// @notice `price` and the execution gas of the library call alone (`gasleft()` before and after; the
    /// copy of the inputs into memory included, the external call's own cost not).
    function priceGas(BlackScholes.Inputs calldata p, bool isCall) external view returns (uint256 value, uint256 gasUsed) {
        BlackScholes.Inputs memory q = p;
        uint256 before = gasleft();
        value = BlackScholes.price(q, isCall);
        gasUsed = before - gasleft();
    }

    /// @notice `greeks` and the execution gas of the library call alone (as `priceGas`).
    function greeksGas(BlackScholes.Inputs calldata p) external view returns (BlackScholes.Greeks memory g, uint256 gasUsed) {
        BlackScholes.Inputs memory q = p;
        uint256 before = gasleft();
        g = BlackScholes.greeks(q);
        gasUsed = before - gasleft();
    }

    function normalCdf(int256 x) external pure returns (int256) {
        return BlackScholes.normalCdf(x);
    }

    function normalPdf(int256 x) external pure returns (int256) {
        return BlackScholes.normalPdf(x);
    }
}
