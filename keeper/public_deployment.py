"""Deployment of the system onto a network that already has Uniswap V3 and Chainlink feeds (the public testnets of
:mod:`keeper.networks`, or Anvil set up like one by :mod:`keeper.simulated_network`): what ``ape run deploy``
does on every network except the local one.

Deployed: a 6-decimal test stablecoin as the vault's base asset and one 18-decimal test token per risk asset
(testnet tokens have no reliable liquidity, so each gets its own full-range pool on the network's real Uniswap V3
factory, seeded at its real Chainlink feed's latest answer), the vault (listing every asset with its real feed,
heartbeat, pool fee and the feed's deviation threshold; its limits), the option market with one push
implied-volatility feed per asset (no public implied-volatility feed exists on these testnets), and the roles
(admin, keeper, guardian; the market's series creator is the vault). Transactions are signed locally with the
deployer's key (:class:`KeySender`) and sent raw, one at a time, each waited for.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Sequence

from eth_account import Account
from web3 import Web3

from keeper.build import Artifact, load_artifacts
from keeper.chain import call_raw, decode_revert, wait_for_receipt
from keeper.deployment import (BASE_DECIMALS, DEFAULT_DEVIATION_BPS, DEFAULT_VOL_STEP, MAX_TICK, MAX_UINT256,
                               POOL_FEE, RISK_DECIMALS, TICK_SPACING, VOL_FEED_DECIMALS, sqrt_price_x96)
from keeper.errors import ConfigError, TransactionFailedError
from keeper.networks import DeployedAsset, DeploymentRecord, NetworkAddresses, RouterKind, router_kind_value

#: ``factoryV2()``: answered by ``SwapRouter02`` (its Uniswap V2 factory immutable), not by the original
#: ``SwapRouter``, which tells the two interfaces apart on chain.
_FACTORY_V2_ABI = [{"type": "function", "name": "factoryV2", "stateMutability": "view", "inputs": [],
                    "outputs": [{"name": "", "type": "address"}]}]


class KeySender:
    """Signs transactions with one private key and sends them raw (EIP-1559 fees from the node), waiting for each
    receipt; the same ``send``/``transact``/``deploy`` surface as :class:`keeper.chain.DevSender`.

    Raises :class:`TransactionFailedError` with the decoded revert when a transaction reverts.
    """

    def __init__(self, w3: Web3, private_key: str, gas_margin: float = 1.3) -> None:
        self.w3 = w3
        self.account = Account.from_key(private_key)
        self.address = self.account.address
        self.gas_margin = gas_margin

    def send(self, to: str | None, data: bytes | str, value: int = 0) -> Any:
        data_hex = data if isinstance(data, str) else "0x" + data.hex()
        call: dict[str, Any] = {"from": self.address, "data": data_hex, "value": value}
        if to is not None:
            call["to"] = Web3.to_checksum_address(to)
        try:
            gas = self.w3.eth.estimate_gas(call)  # type: ignore[arg-type]
        except Exception as exc:  # noqa: BLE001 - a revert at estimation: decode it for the message
            ok, out = call_raw(self.w3, {k: (hex(v) if isinstance(v, int) else v) for k, v in call.items()})
            detail = decode_revert(out) if not ok else exc
            raise TransactionFailedError(f"transaction to {to} would revert: {detail}") from exc
        base_fee = int(self.w3.eth.get_block("latest").get("baseFeePerGas") or 0)
        tip = int(self.w3.eth.max_priority_fee)
        tx = {**call, "gas": int(gas * self.gas_margin) + 20_000, "nonce": self.w3.eth.get_transaction_count(self.address),
              "chainId": self.w3.eth.chain_id, "maxPriorityFeePerGas": tip, "maxFeePerGas": 2 * base_fee + tip,
              "type": 2}
        signed = self.account.sign_transaction(tx)
        tx_hash = self.w3.eth.send_raw_transaction(signed.raw_transaction)
        receipt = wait_for_receipt(self.w3, tx_hash, timeout_seconds=600)
        if int(receipt["status"], 16) != 1:
            raise TransactionFailedError(f"transaction 0x{bytes(tx_hash).hex()} to {to} reverted on chain")
        return receipt

    def transact(self, fn: Any, value: int = 0) -> Any:
        """Sends a bound web3 contract function call, e.g. ``token.functions.mint(a, 1)``."""
        return self.send(fn.address, fn._encode_transaction_data(), value=value)

    def deploy(self, artifact: Artifact, *args: Any) -> Any:
        """Deploys ``artifact`` with constructor ``args``; returns a web3 contract at its address."""
        factory = self.w3.eth.contract(abi=artifact.abi, bytecode=artifact.bytecode)
        receipt = self.send(None, factory._encode_constructor_data(*args))
        return self.w3.eth.contract(address=Web3.to_checksum_address(receipt["contractAddress"]), abi=artifact.abi)


@dataclass(frozen=True)
class PublicDeployOptions:
    """Choices of a deployment on a network with Uniswap V3 and Chainlink (units in the names).

    ``feeds`` maps each risk asset's symbol to its Chainlink USD feed; ``router`` / ``router_kind`` the Uniswap
    router the vault swaps through. ``pool_depth_usd`` is each side of each seeded pool's position;
    ``heartbeat_seconds`` the oldest feed answer the vault accepts (Chainlink's testnet USD feeds update at least
    daily); ``implied_vols`` the first answer of each asset's implied-volatility feed (annualised fraction).
    """

    feeds: dict[str, str]
    router: str
    router_kind: RouterKind
    keeper: str
    guardian: str
    pool_depth_usd: float = 50_000_000.0
    heartbeat_seconds: int = 86_400 + 3_600
    deviation_bps: int = DEFAULT_DEVIATION_BPS
    implied_vols: Sequence[float] | None = None
    option_pool_usd: float = 1_000_000.0
    max_slippage_bps: int = 100
    max_turnover_bps: int = 10_000
    max_nav_loss_bps: int = 200


def router_answers_as(w3: Web3, router: str, router_kind: str) -> bool:
    """Whether the contract at ``router`` has the interface of ``router_kind``: ``SwapRouter02`` answers
    ``factoryV2()``, the original ``SwapRouter`` has no such function (its call reverts).

    Raises
    ------
    ConfigError
        ``router_kind`` is not one of :data:`keeper.networks.ROUTER_KINDS`.
    """
    router_kind_value(router_kind)
    probe = w3.eth.contract(address=Web3.to_checksum_address(router), abi=_FACTORY_V2_ABI)
    try:
        probe.functions.factoryV2().call()
        answers_v2 = True
    except Exception:  # noqa: BLE001 - a revert (no such function) is the answer
        answers_v2 = False
    return answers_v2 == (router_kind == "swaprouter02")


def vault_constructor_args(artifact: Artifact, *, base: str, router: str, router_kind: str, admin: str, keeper: str,
                           guardian: str, name: str = "Risk Parity Vault", symbol: str = "rpUSDC") -> list[Any]:
    """The vault's constructor arguments in the order its ABI declares them (matched by parameter name, so a
    router-kind parameter is placed wherever the constructor has it, as its ``RouterKind`` enum value).

    Raises
    ------
    ConfigError
        A constructor parameter this function does not know; ``router_kind`` not a known kind.
    """
    constructor = next(item for item in artifact.abi if item.get("type") == "constructor")
    values = {"baseasset": base, "name_": name, "symbol_": symbol, "router": Web3.to_checksum_address(router),
              "admin": admin, "keeper": keeper, "guardian": guardian}
    args = []
    for inp in constructor["inputs"]:
        key = (inp.get("name") or "").lower()
        if "kind" in key:
            args.append(router_kind_value(router_kind))
        elif key in values:
            args.append(values[key])
        else:
            raise ConfigError(f"the vault constructor's parameter {inp.get('name')!r} is unknown to the deployment; "
                              "update keeper.public_deployment.vault_constructor_args")
    return args


def deploy_on_network(w3: Web3, sender: KeySender, network: NetworkAddresses, options: PublicDeployOptions,
                      ape_network: str) -> DeploymentRecord:
    """Deploys the whole system on ``network`` (module doc) and returns its record (not yet written).

    Raises
    ------
    ConfigError
        The node is another chain than ``network``; a feed or the router has no code; the router does not
        answer as ``options.router_kind`` (the message says what to do).
    TransactionFailedError
        A transaction reverted (the decoded custom error in the message).
    """
    if w3.eth.chain_id != network.chain_id:
        raise ConfigError(f"the node serves chain {w3.eth.chain_id}, {ape_network} is chain {network.chain_id}: "
                          "point the provider at the network's RPC")
    router_kind_value(options.router_kind)
    arts = load_artifacts()
    for what, address in [("router", options.router), ("factory", network.uniswap_factory.address),
                          ("quoter", network.quoter_v2.address), *[(f"{s} feed", f) for s, f in options.feeds.items()]]:
        if len(w3.eth.get_code(Web3.to_checksum_address(address))) == 0:
            raise ConfigError(f"the {what} address {address} has no code on chain {network.chain_id}: check "
                              "keeper/networks.py against the operator's documentation")
    if not router_answers_as(w3, options.router, options.router_kind):
        raise ConfigError(
            f"the router {options.router} does not answer as a {options.router_kind} (SwapRouter02 answers "
            "factoryV2(), the original SwapRouter does not): a vault built for the wrong interface could not swap; "
            f"pass the --router-kind of that router (the network lists {network.router_kind} at "
            f"{network.router.address})")
    feeds = {s: w3.eth.contract(address=Web3.to_checksum_address(f), abi=arts["PushPriceFeed"].abi)
             for s, f in options.feeds.items()}
    npm = w3.eth.contract(address=Web3.to_checksum_address(network.position_manager.address),
                          abi=arts["NonfungiblePositionManager"].abi)
    deployer = sender.address
    base = sender.deploy(arts["TestToken"], "USD Coin (test)", "USDC", BASE_DECIMALS, deployer)
    vault = sender.deploy(arts["RiskParityVault"], *vault_constructor_args(
        arts["RiskParityVault"], base=base.address, router=options.router, router_kind=options.router_kind,
        admin=deployer, keeper=options.keeper, guardian=options.guardian))
    sender.transact(base.functions.approve(npm.address, MAX_UINT256))
    assets: list[DeployedAsset] = []
    for symbol, feed in feeds.items():
        decimals = feed.functions.decimals().call()
        answer = feed.functions.latestRoundData().call()[1]
        if answer <= 0:
            raise ConfigError(f"the {symbol} feed {feed.address} answers {answer}: not a usable price")
        token = sender.deploy(arts["TestToken"], f"{symbol} (test)", symbol, RISK_DECIMALS, deployer)
        pool = _seed_pool(w3, sender, npm, network.uniswap_factory.address, base, token, answer, decimals,
                          options.pool_depth_usd)
        sender.transact(vault.functions.listRiskAsset(token.address, feed.address, options.heartbeat_seconds,
                                                      POOL_FEE, options.deviation_bps))
        assets.append(DeployedAsset(symbol, token.address, feed.address, pool))
    sender.transact(vault.functions.setLimits(options.max_slippage_bps, options.max_turnover_bps,
                                              options.max_nav_loss_bps))
    market = _deploy_market(w3, sender, arts, base, vault, assets, options)
    return DeploymentRecord(
        network=ape_network, chain_id=network.chain_id, vault=vault.address, quoter=network.quoter_v2.address,
        router=Web3.to_checksum_address(options.router), router_kind=options.router_kind,
        factory=network.uniswap_factory.address, base_asset=base.address, keeper=options.keeper,
        guardian=options.guardian, admin=deployer, option_market=market, sequencer_uptime_feed=(
            network.sequencer_uptime_feed.address if network.sequencer_uptime_feed else None),
        assets=assets, block_number=w3.eth.block_number,
        sources={"uniswap_factory": network.uniswap_factory.source, "quoter_v2": network.quoter_v2.source,
                 "router": network.router.source, "position_manager": network.position_manager.source,
                 **{f"feed_{s}": (network.price_feeds.get(s).source if network.price_feeds.get(s) else "--feed")
                    for s in options.feeds}},
    )


def _seed_pool(w3: Web3, sender: KeySender, npm: Any, factory: str, base: Any, token: Any, answer: int,
               feed_decimals: int, depth_usd: float) -> str:
    """Creates the token/base pool (fee :data:`POOL_FEE`) at the feed's price and adds a full-range position."""
    risk_is_token0 = int(token.address, 16) < int(base.address, 16)
    token0, token1 = (token, base) if risk_is_token0 else (base, token)
    sender.transact(npm.functions.createAndInitializePoolIfNecessary(
        token0.address, token1.address, POOL_FEE, sqrt_price_x96(answer, risk_is_token0, feed_decimals)))
    base_amount = int(Fraction(repr(float(depth_usd))) * 10**BASE_DECIMALS)
    risk_amount = base_amount * 10 ** (feed_decimals + RISK_DECIMALS - BASE_DECIMALS) // answer
    deployer = sender.address
    sender.transact(base.functions.mint(deployer, base_amount))
    sender.transact(token.functions.mint(deployer, risk_amount))
    sender.transact(token.functions.approve(npm.address, MAX_UINT256))
    amount0, amount1 = (risk_amount, base_amount) if risk_is_token0 else (base_amount, risk_amount)
    tick = MAX_TICK // TICK_SPACING * TICK_SPACING
    sender.transact(npm.functions.mint((token0.address, token1.address, POOL_FEE, -tick, tick, amount0, amount1, 0, 0,
                                        deployer, 2**64)))
    factory_abi = load_artifacts()["UniswapV3Factory"].abi
    return w3.eth.contract(address=Web3.to_checksum_address(factory), abi=factory_abi).functions.getPool(
        token0.address, token1.address, POOL_FEE).call()


def _deploy_market(w3: Web3, sender: KeySender, arts: dict[str, Artifact], base: Any, vault: Any,
                   assets: list[DeployedAsset], options: PublicDeployOptions) -> str:
    """The option market over the base asset: listed underlyings (real price feed, a push vol feed each), seeded
    pool, connected to the vault (the vault opens series)."""
    deployer = sender.address
    market = sender.deploy(arts["OptionMarket"], base.address, "Option Pool LP", "opLP", deployer, 10_000)
    vols = list(options.implied_vols or [0.8] * len(assets))
    for asset, vol in zip(assets, vols, strict=True):
        vol_feed = sender.deploy(arts["PushPriceFeed"], VOL_FEED_DECIMALS, f"{asset.symbol} implied vol", deployer)
        sender.transact(vol_feed.functions.pushAnswer(int(Fraction(repr(float(vol))) * 10**VOL_FEED_DECIMALS)))
        sender.transact(market.functions.listUnderlying(
            asset.token, asset.feed, options.heartbeat_seconds, vol_feed.address, options.heartbeat_seconds,
            options.deviation_bps, int(Fraction(repr(DEFAULT_VOL_STEP)) * 10**18)))
    if options.option_pool_usd > 0:
        amount = int(Fraction(repr(float(options.option_pool_usd))) * 10**BASE_DECIMALS)
        sender.transact(base.functions.mint(deployer, amount))
        sender.transact(base.functions.approve(market.address, amount))
        sender.transact(market.functions.deposit(amount, deployer))
    sender.transact(vault.functions.setOptionMarket(market.address))
    sender.transact(market.functions.grantRole(market.functions.SERIES_CREATOR_ROLE().call(), vault.address))
    return market.address


__all__ = ["KeySender", "PublicDeployOptions", "deploy_on_network", "router_answers_as", "vault_constructor_args"]
