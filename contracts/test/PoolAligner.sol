// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {IUniswapV3Pool} from "@uniswap/v3-core/contracts/interfaces/IUniswapV3Pool.sol";
import {ISwapRouter} from "@uniswap/v3-periphery/contracts/interfaces/ISwapRouter.sol";
import {FeedBatchPusher} from "./FeedBatchPusher.sol";
import {PushPriceFeed} from "./PushPriceFeed.sol";

/// @title PoolAligner
/// @notice A replay's arbitrageur: moves many risk/base Uniswap V3 pools to target prices in one transaction.
/// For each pool it sells whichever side is cheap, its whole inventory of that token, through the router with
/// `sqrtPriceLimitX96` = the target, so the swap stops exactly at the target (what a per-pool arbitrage
/// transaction does). It holds its own inventory (minted to it); only its owner calls it. Local chains only.
contract PoolAligner is Ownable {
    /// @notice One pool to move: the risk token of a risk/base pool and the pool's target `sqrtPriceX96`.
    struct Target {
        IUniswapV3Pool pool;
        address token;
        uint160 sqrtPriceX96;
    }

    ISwapRouter public immutable router;
    address public immutable base;
    uint24 public immutable poolFee;

    constructor(ISwapRouter router_, address base_, uint24 poolFee_, address owner_) Ownable(owner_) {
        router = router_;
        base = base_;
        poolFee = poolFee_;
    }

    /// @notice Lets the router pull `tokens` (and the base asset) from this contract.
    function approveRouter(IERC20[] calldata tokens) external onlyOwner {
        IERC20(base).approve(address(router), type(uint256).max);
        for (uint256 i; i < tokens.length; ++i) {
            tokens[i].approve(address(router), type(uint256).max);
        }
    }

    /// @notice Moves every pool of `targets` to its target price, in order; a pool already there is skipped.
    function align(Target[] calldata targets) external onlyOwner {
        _align(targets);
    }

    /// @notice A replayed day in one transaction: `pusher.push(feeds, answers)` (this contract must own the
    /// pusher), then `align(targets)`; the same state as the two transactions in that order.
    function pushAndAlign(
        FeedBatchPusher pusher,
        PushPriceFeed[] calldata feeds,
        int256[] calldata answers,
        Target[] calldata targets
    ) external onlyOwner {
        pusher.push(feeds, answers);
        _align(targets);
    }

    function _align(Target[] calldata targets) private {
        for (uint256 i; i < targets.length; ++i) {
            Target calldata t = targets[i];
            (uint160 current,,,,,,) = t.pool.slot0();
            if (current == t.sqrtPriceX96) continue;
            // Price (token1 per token0) above the target: sell token0 into the pool, else token1.
            bool zeroForOne = current > t.sqrtPriceX96;
            bool riskIsToken0 = t.token < base;
            bool sellRisk = zeroForOne == riskIsToken0;
            address tokenIn = sellRisk ? t.token : base;
            router.exactInputSingle(
                ISwapRouter.ExactInputSingleParams({
                    tokenIn: tokenIn,
                    tokenOut: sellRisk ? base : t.token,
                    fee: poolFee,
                    recipient: address(this),
                    deadline: type(uint64).max,
                    amountIn: IERC20(tokenIn).balanceOf(address(this)),
                    amountOutMinimum: 0,
                    sqrtPriceLimitX96: t.sqrtPriceX96
                })
            );
        }
    }
}
