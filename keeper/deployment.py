"""Deployment of the whole system on a local chain, and the price-moving helpers a replay needs.

Deploys the base stablecoin and the risk assets (test ERC-20s), one push feed per asset, the real
Uniswap V3 (``UniswapV3Factory``, ``SwapRouter`` or ``SwapRouter02``,
``NonfungiblePositionManager``, ``QuoterV2``) from the
npm artifacts, one full-range pool per risk asset against the base asset seeded at the oracle price,
and the vault; Multicall3 is placed at its canonical address. Addresses are returned as a
:class:`Deployment` and can be written to JSON. A replay's daily harness work is batched:
:class:`FeedPusher` pushes every feed in one transaction, :class:`BatchArbitrageur` aligns every pool in one,
or both in one (:meth:`BatchArbitrageur.push_and_align`).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Sequence

from eth_abi import encode as abi_encode
from eth_utils import function_signature_to_4byte_selector
from web3 import Web3

from keeper.build import NODE_MODULES, Artifact, load_artifacts
from keeper.chain import DevSender, contract
from keeper.errors import ConfigError
from keeper.multicall import ensure_multicall3
from keeper.networks import ROUTER_KINDS, RouterKind, router_kind_value  # noqa: F401 - ROUTER_KINDS re-exported

Q96 = 2**96
#: Uniswap V3 bounds on sqrtPriceX96 (TickMath.MIN_SQRT_RATIO, MAX_SQRT_RATIO).
MIN_SQRT_RATIO = 4295128739
MAX_SQRT_RATIO = 1461446703485210103287273853667048180796877543004
#: Fee tier (hundredths of a bip) and tick spacing of the pools: 0.05%.
POOL_FEE = 500
TICK_SPACING = 10
MAX_TICK = 887272
FEED_DECIMALS = 8
BASE_DECIMALS = 6
RISK_DECIMALS = 18
#: Deviation threshold recorded for each feed, bps (Chainlink's BTC/USD and ETH/USD mainnet feeds: 0.5 %);
#: the vault's entry/exit fee is at least the largest listed one.
DEFAULT_DEVIATION_BPS = 50
#: One update step of the local implied-volatility feeds, annualised (0.01 = one vol point): the move that
#: makes such a feed publish, and the vol part of the option market's half-spread (``deploy_options``).
DEFAULT_VOL_STEP = 0.01
MAX_UINT256 = 2**256 - 1
#: The compiled ``SwapRouter02`` its npm package ships (deployed as is, never recompiled).
SWAP_ROUTER02_ARTIFACT = "@uniswap/swap-router-contracts/artifacts/contracts/SwapRouter02.sol/SwapRouter02.json"


@dataclass(frozen=True)
class RiskAssetDeployment:
    symbol: str
    token: str
    feed: str
    pool: str


@dataclass(frozen=True)
class Deployment:
    """Addresses of one deployed system (checksummed hex)."""

    chain_id: int
    base_asset: str
    vault: str
    factory: str
    swap_router: str
    position_manager: str
    quoter: str
    assets: list[RiskAssetDeployment] = field(default_factory=list)
    #: One of :data:`ROUTER_KINDS`: which Uniswap router ``swap_router`` is.
    router_kind: RouterKind = "swaprouter"

    def to_json(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def from_json(cls, path: Path) -> "Deployment":
        data = json.loads(path.read_text())
        data["assets"] = [RiskAssetDeployment(**a) for a in data["assets"]]
        return cls(**data)


def price_to_answer(price_usd: float) -> int:
    """USD price to a feed answer with :data:`FEED_DECIMALS` decimals (rounded to nearest)."""
    return int(round(Fraction(repr(float(price_usd))) * 10**FEED_DECIMALS))


def sqrt_price_x96(answer: int, risk_is_token0: bool, feed_decimals: int = FEED_DECIMALS) -> int:
    """Uniswap V3 ``sqrtPriceX96`` of a risk/base pool at the oracle price.

    The pool price is token1 per token0 in raw units. With P = answer / 10^feed_decimals USD per whole
    risk token, one raw risk unit is worth P × 10^(base_decimals − risk_decimals) raw base units.
    """
    num = answer * 10**BASE_DECIMALS
    den = 10 ** (feed_decimals + RISK_DECIMALS)
    if not risk_is_token0:
        num, den = den, num
    value = math.isqrt(num * Q96 * Q96 // den)
    return max(MIN_SQRT_RATIO + 1, min(MAX_SQRT_RATIO - 1, value))


def swap_router02_artifact() -> Artifact:
    """ABI and creation bytecode of Uniswap's ``SwapRouter02`` from ``@uniswap/swap-router-contracts``.

    Raises
    ------
    ConfigError
        The package is not installed (run ``npm ci``).
    """
    path = NODE_MODULES / SWAP_ROUTER02_ARTIFACT
    if not path.exists():
        raise ConfigError(f"compiled artifact of SwapRouter02 missing at {path}; run `npm ci`")
    data = json.loads(path.read_text())
    return Artifact("SwapRouter02", data["abi"], data["bytecode"])


def router_artifact(router_kind: str) -> Artifact:
    """The compiled Uniswap router of ``router_kind`` (one of :data:`ROUTER_KINDS`): ``SwapRouter`` from
    ``@uniswap/v3-periphery`` or ``SwapRouter02`` from ``@uniswap/swap-router-contracts``, as their npm packages
    ship them. Constructor arguments: ``SwapRouter(factory, WETH9)``; ``SwapRouter02(factoryV2, factoryV3,
    positionManager, WETH9)``.

    Raises
    ------
    ConfigError
        ``router_kind`` is unknown, or the package is not installed.
    """
    router_kind_value(router_kind)
    return swap_router02_artifact() if router_kind == "swaprouter02" else load_artifacts()["SwapRouter"]


def swap_router(w3: Web3, deployment: Deployment):
    """Handle on the deployment's router with the ABI of its kind (``SwapRouter`` or ``SwapRouter02``)."""
    return w3.eth.contract(address=Web3.to_checksum_address(deployment.swap_router),
                           abi=router_artifact(deployment.router_kind).abi)


def exact_input_single_args(router_kind: str, token_in: str, token_out: str, fee: int, recipient: str,
                            deadline: int, amount_in: int, min_amount_out: int, sqrt_price_limit_x96: int) -> tuple:
    """``exactInputSingle``'s parameter tuple for a router of ``router_kind``; ``SwapRouter02`` has no
    ``deadline`` field (the argument is then not sent). Amounts in the tokens' smallest units, ``deadline``
    Unix seconds, ``fee`` in hundredths of a bip."""
    if router_kind == "swaprouter02":
        return (token_in, token_out, fee, recipient, amount_in, min_amount_out, sqrt_price_limit_x96)
    return (token_in, token_out, fee, recipient, deadline, amount_in, min_amount_out, sqrt_price_limit_x96)


def deploy_system(
    w3: Web3,
    deployer: str,
    keeper: str,
    guardian: str,
    symbols: Sequence[str],
    initial_prices_usd: Sequence[float],
    pool_depth_usd: float = 50_000_000.0,
    heartbeat_seconds: int = 2 * 86400,
    deviation_bps: int = DEFAULT_DEVIATION_BPS,
    router_kind: RouterKind = "swaprouter",
) -> Deployment:
    """Deploys tokens, feeds, Uniswap V3, seeded pools and the vault; ``deployer`` administers all.

    Parameters
    ----------
    symbols, initial_prices_usd : sequences of length n_assets
        Risk assets and their first feed answers (USD per whole token).
    pool_depth_usd : float
        Value of each side of each pool's full-range position, USD.
    heartbeat_seconds : int
        Maximum oracle age the vault accepts, seconds.
    deviation_bps : int
        Deviation threshold recorded for every feed, bps; the vault's entry/exit fee is raised to it.
    router_kind : str
        One of :data:`ROUTER_KINDS`: the Uniswap router deployed and given to the vault.

    Raises
    ------
    ConfigError
        ``router_kind`` is not one of :data:`ROUTER_KINDS`, or an npm artifact is missing.
    """
    kind_value = router_kind_value(router_kind)
    arts = load_artifacts()
    tx = DevSender(w3)
    ensure_multicall3(w3)  # the keeper reads through Multicall3 at its canonical address
    base = tx.deploy(deployer, arts["TestToken"], "USD Coin (test)", "USDC", BASE_DECIMALS, deployer)
    # Uniswap's periphery wants a WETH9 address; no swap here touches ETH, so the base token stands in.
    factory = tx.deploy(deployer, arts["UniswapV3Factory"])
    npm = tx.deploy(
        deployer, arts["NonfungiblePositionManager"], factory.address, base.address, "0x" + "00" * 20
    )
    if router_kind == "swaprouter02":
        # SwapRouter02(factoryV2, factoryV3, positionManager, WETH9): no Uniswap V2 here, so its V2 swaps are
        # unusable; the vault calls only the V3 exactInputSingle.
        router = tx.deploy(deployer, router_artifact(router_kind), "0x" + "00" * 20, factory.address, npm.address,
                           base.address)
    else:
        router = tx.deploy(deployer, router_artifact(router_kind), factory.address, base.address)
    quoter = tx.deploy(deployer, arts["QuoterV2"], factory.address, base.address)
    vault = tx.deploy(
        deployer,
        arts["RiskParityVault"],
        base.address,
        "Risk Parity Vault",
        "rpUSDC",
        router.address,
        kind_value,
        deployer,
        keeper,
        guardian,
    )
    tx.transact(deployer, base.functions.approve(npm.address, MAX_UINT256))
    assets = []
    for symbol, price in zip(symbols, initial_prices_usd, strict=True):
        token = tx.deploy(deployer, arts["TestToken"], f"{symbol} (test)", symbol, RISK_DECIMALS, deployer)
        feed = tx.deploy(deployer, arts["PushPriceFeed"], FEED_DECIMALS, f"{symbol} / USD", deployer)
        answer = price_to_answer(price)
        tx.transact(deployer, feed.functions.pushAnswer(answer))
        pool = _create_seeded_pool(w3, tx, deployer, npm, base, token, answer, pool_depth_usd)
        tx.transact(deployer, vault.functions.listRiskAsset(token.address, feed.address, heartbeat_seconds, POOL_FEE, deviation_bps))
        assets.append(RiskAssetDeployment(symbol, token.address, feed.address, pool))
    return Deployment(
        chain_id=w3.eth.chain_id,
        base_asset=base.address,
        vault=vault.address,
        factory=factory.address,
        swap_router=router.address,
        position_manager=npm.address,
        quoter=quoter.address,
        assets=assets,
        router_kind=router_kind,
    )


def _create_seeded_pool(w3, tx: DevSender, deployer: str, npm, base, token, answer: int, depth_usd: float) -> str:
    risk_is_token0 = int(token.address, 16) < int(base.address, 16)
    token0, token1 = (token, base) if risk_is_token0 else (base, token)
    sqrt_p = sqrt_price_x96(answer, risk_is_token0)
    tx.transact(deployer, npm.functions.createAndInitializePoolIfNecessary(token0.address, token1.address, POOL_FEE, sqrt_p))
    base_amount = int(depth_usd * 10**BASE_DECIMALS)
    risk_amount = base_amount * 10 ** (FEED_DECIMALS + RISK_DECIMALS - BASE_DECIMALS) // answer
    tx.transact(deployer, base.functions.mint(deployer, base_amount))
    tx.transact(deployer, token.functions.mint(deployer, risk_amount))
    tx.transact(deployer, token.functions.approve(npm.address, MAX_UINT256))
    amount0, amount1 = (risk_amount, base_amount) if risk_is_token0 else (base_amount, risk_amount)
    tick = MAX_TICK // TICK_SPACING * TICK_SPACING
    tx.transact(
        deployer,
        npm.functions.mint(
            (token0.address, token1.address, POOL_FEE, -tick, tick, amount0, amount1, 0, 0, deployer, 2**64)
        ),
    )
    factory = contract(w3, "UniswapV3Factory", npm.functions.factory().call())
    return factory.functions.getPool(token0.address, token1.address, POOL_FEE).call()


class Arbitrageur:
    """Moves each pool to its oracle price with real swaps through the deployment's router.

    The arbitrageur holds ample base and risk tokens (minted by the deployer) and sells whichever side
    is cheap in the pool with ``sqrtPriceLimitX96`` set to the oracle price, so the swap stops exactly
    there.
    """

    def __init__(self, w3: Web3, deployment: Deployment, account: str, deployer: str, inventory_usd: float = 1e12):
        self.w3 = w3
        self.account = account
        self.tx = DevSender(w3)
        self.router = swap_router(w3, deployment)
        self.router_kind = deployment.router_kind
        self.base = contract(w3, "TestToken", deployment.base_asset)
        self.pools = {a.token: contract(w3, "UniswapV3Pool", a.pool) for a in deployment.assets}
        self.tokens = {a.token: contract(w3, "TestToken", a.token) for a in deployment.assets}
        self.inventory_usd = inventory_usd
        self.tx.transact(deployer, self.base.functions.mint(account, int(inventory_usd * 10**BASE_DECIMALS)))
        self.tx.transact(account, self.base.functions.approve(self.router.address, MAX_UINT256))
        for token in self.tokens.values():
            self.tx.transact(account, token.functions.approve(self.router.address, MAX_UINT256))
        self._deployer = deployer

    def align(self, token: str, answer: int) -> int:
        """Swaps so the ``token``/base pool's price equals ``answer`` (feed units). Returns gas used."""
        pool = self.pools[token]
        risk_is_token0 = int(token, 16) < int(self.base.address, 16)
        target = sqrt_price_x96(answer, risk_is_token0)
        current = pool.functions.slot0().call()[0]
        if current == target:
            return 0
        # Price (token1 per token0) above target: sell token0 into the pool, else sell token1.
        zero_for_one = current > target
        sell_risk = zero_for_one == risk_is_token0
        token_in = token if sell_risk else self.base.address
        token_out = self.base.address if sell_risk else token
        if sell_risk:
            balance = self.tokens[token].functions.balanceOf(self.account).call()
            needed = int(self.inventory_usd) * 10 ** (FEED_DECIMALS + RISK_DECIMALS) // answer
            if balance < needed // 2:
                self.tx.transact(self._deployer, self.tokens[token].functions.mint(self.account, needed))
                balance += needed
            amount_in = balance
        else:
            amount_in = self.base.functions.balanceOf(self.account).call()
        receipt = self.tx.transact(
            self.account,
            self.router.functions.exactInputSingle(
                exact_input_single_args(self.router_kind, token_in, token_out, POOL_FEE, self.account, 2**63,
                                        amount_in, 0, target)
            ),
        )
        return int(receipt["gasUsed"], 16)


#: Decimals of the implied-volatility feeds the local deployment uses: 1e18 = 100% annualised.
VOL_FEED_DECIMALS = 18


@dataclass(frozen=True)
class OptionsDeployment:
    """Addresses of a deployed :class:`OptionMarket` and its implied-volatility feeds (checksummed hex).

    ``vol_feeds`` maps each underlying token address to its volatility feed.
    """

    market: str
    vol_feeds: dict[str, str]

    def to_json(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def from_json(cls, path: Path) -> "OptionsDeployment":
        return cls(**json.loads(path.read_text()))


def vol_to_answer(vol: float) -> int:
    """Annualised volatility (0.8 = 80%) to a feed answer with :data:`VOL_FEED_DECIMALS` decimals."""
    return int(round(Fraction(repr(float(vol))) * 10**VOL_FEED_DECIMALS))


def deploy_options(
    w3: Web3,
    deployment: Deployment,
    deployer: str,
    implied_vols: Sequence[float],
    pool_liquidity_usd: float = 10_000_000.0,
    spread_bps: int = 100,
    call_cap_bps: int = 10_000,
    price_heartbeat_seconds: int = 2 * 86400,
    vol_heartbeat_seconds: int = 2 * 86400,
    min_time_to_expiry_seconds: int = 3600,
    max_time_to_expiry_seconds: int = 365 * 86400,
    connect_vault: bool = True,
    price_step_bps: int | None = None,
    vol_step: float = DEFAULT_VOL_STEP,
) -> OptionsDeployment:
    """Deploys an ``OptionMarket`` over the system's base asset, one push implied-volatility feed per risk
    asset, lists every asset with the price feed the vault uses, seeds the pool and connects the vault.

    Parameters
    ----------
    deployment : Deployment
        A system from :func:`deploy_system`; ``deployer`` must administer it (it mints the base asset).
    implied_vols : sequence of float, length n_assets
        First answer of each asset's volatility feed, annualised (0.8 = 80%), in ``deployment.assets`` order.
    pool_liquidity_usd : float
        Base asset the deployer deposits into the market's pool as its first LP, USD.
    spread_bps : int
        Market spread over (buys) and under (sells) the Black-Scholes fair value, bps.
    call_cap_bps : int
        A call's payout cap and collateral, bps of its strike.
    price_heartbeat_seconds, vol_heartbeat_seconds : int
        Largest age of a price / volatility answer the market accepts, seconds.
    min_time_to_expiry_seconds, max_time_to_expiry_seconds : int
        Window of times to expiry the market sells, seconds.
    connect_vault : bool
        Set the market as the vault's ``optionMarket`` (the deployer must be the vault's admin) and let the
        vault open new series (``SERIES_CREATOR_ROLE``).
    price_step_bps : int or None
        One update step of every price feed, bps of spot; the market's half-spread covers it (M-3: a trade
        across a feed round does not pay). ``None`` (default): each asset's deviation threshold as listed in
        the vault (``riskAssetConfig(token).deviationBps``, :data:`DEFAULT_DEVIATION_BPS` locally). 0 with
        ``vol_step`` 0: the spread alone.
    vol_step : float
        One update step of every volatility feed, annualised (0.01 = one vol point), covered the same way.
        The vault's default ``maxPremiumBps`` (2,000 bps) admits the asks these steps give the keeper's
        protective puts (5–17 % over fair for 20- to 25-delta puts of 7 to 35 days).

    Raises
    ------
    TransactionFailedError
        When a deployment or configuration transaction reverts (the message holds the decoded error).
    """
    arts = load_artifacts()
    tx = DevSender(w3)
    base = contract(w3, "TestToken", deployment.base_asset)
    market = tx.deploy(deployer, arts["OptionMarket"], base.address, "Option Pool LP", "opLP", deployer, call_cap_bps)
    tx.transact(
        deployer, market.functions.setParams(spread_bps, min_time_to_expiry_seconds, max_time_to_expiry_seconds)
    )
    vol_feeds: dict[str, str] = {}
    vault_view = contract(w3, "RiskParityVault", deployment.vault)
    for asset, vol in zip(deployment.assets, implied_vols, strict=True):
        step_bps = vault_view.functions.riskAssetConfig(asset.token).call()[6] if price_step_bps is None else price_step_bps
        feed = tx.deploy(deployer, arts["PushPriceFeed"], VOL_FEED_DECIMALS, f"{asset.symbol} implied vol", deployer)
        tx.transact(deployer, feed.functions.pushAnswer(vol_to_answer(vol)))
        tx.transact(
            deployer,
            market.functions.listUnderlying(
                asset.token, asset.feed, price_heartbeat_seconds, feed.address, vol_heartbeat_seconds,
                step_bps, int(round(Fraction(repr(float(vol_step))) * 10**18)),
            ),
        )
        vol_feeds[asset.token] = feed.address
    if pool_liquidity_usd > 0:
        amount = int(pool_liquidity_usd * 10**BASE_DECIMALS)
        tx.transact(deployer, base.functions.mint(deployer, amount))
        tx.transact(deployer, base.functions.approve(market.address, amount))
        tx.transact(deployer, market.functions.deposit(amount, deployer))
    if connect_vault:
        vault = contract(w3, "RiskParityVault", deployment.vault)
        tx.transact(deployer, vault.functions.setOptionMarket(market.address))
        role = market.functions.SERIES_CREATOR_ROLE().call()
        tx.transact(deployer, market.functions.grantRole(role, vault.address))
    return OptionsDeployment(market=market.address, vol_feeds=vol_feeds)


#: ``DEFAULT_ADMIN_ROLE`` of OpenZeppelin's AccessControl (bytes32 zero).
DEFAULT_ADMIN_ROLE = b"\x00" * 32


def place_behind_timelock(
    w3: Web3,
    admin: str,
    governed: Sequence[str],
    proposer: str,
    delay_seconds: int,
    executor: str | None = None,
) -> str:
    """Makes an OpenZeppelin ``TimelockController`` the only admin of the ``governed`` contracts.

    Deploys the timelock (its npm artifact's bytecode) with ``minDelay = delay_seconds``, ``proposer`` as
    its only proposer (and canceller), ``executor`` (default: the proposer) as its executor and no admin of
    its own, so that its own settings change only through itself. Then, on each governed AccessControl
    contract (the vault, the option market), grants ``DEFAULT_ADMIN_ROLE`` to the timelock and renounces it
    for ``admin``. From then on every admin action (listing or delisting an asset, replacing a feed,
    setting the option market or the limits, unpausing, granting roles, including moving the admin role
    itself) is a timelock operation: scheduled in public (``CallScheduled``), executable only after
    ``delay_seconds``, so depositors and LPs can leave before a change they do not accept takes effect.
    The keeper and guardian roles are untouched: the guardian still pauses at once.

    Parameters
    ----------
    admin : str
        Current holder of ``DEFAULT_ADMIN_ROLE`` on every governed contract.
    governed : sequence of str
        Addresses of AccessControl contracts to hand over.
    delay_seconds : int
        The timelock's minimum delay, seconds (> 0; 2 days is common on mainnet).

    Returns
    -------
    str
        The timelock's address.

    Raises
    ------
    ConfigError
        ``delay_seconds`` is not positive.
    TransactionFailedError
        A deployment or role transaction reverts (e.g. ``admin`` is not the admin).
    """
    if delay_seconds <= 0:
        raise ConfigError(f"delay_seconds must be > 0 seconds, got {delay_seconds}; omit the timelock instead")
    tx = DevSender(w3)
    executor = executor or proposer
    timelock = tx.deploy(admin, load_artifacts()["TimelockController"], int(delay_seconds), [proposer], [executor],
                         "0x" + "00" * 20)
    for address in governed:
        target = w3.eth.contract(address=Web3.to_checksum_address(address), abi=_ACCESS_CONTROL_ABI)
        tx.transact(admin, target.functions.grantRole(DEFAULT_ADMIN_ROLE, timelock.address))
        tx.transact(admin, target.functions.renounceRole(DEFAULT_ADMIN_ROLE, admin))
    return timelock.address


_ACCESS_CONTROL_ABI = [
    {"type": "function", "name": name, "stateMutability": "nonpayable", "outputs": [],
     "inputs": [{"name": "role", "type": "bytes32"}, {"name": "account", "type": "address"}]}
    for name in ("grantRole", "renounceRole")
]


#: ``FeedBatchPusher.push(feeds, answers)``'s selector.
_PUSH = function_signature_to_4byte_selector("push(address[],int256[])")


class FeedPusher:
    """Pushes one answer to every feed of a replay in one transaction (``FeedBatchPusher``).

    Deploys the pusher and hands it the ownership of ``feeds`` (``PushPriceFeed.transferOwnership``, from
    ``owner``, their current owner); :meth:`push` then opens one new round on every feed in one block, at the
    block's time, exactly as one ``pushAnswer`` per feed would at that time. Local chains only.
    """

    def __init__(self, w3: Web3, owner: str, feeds: Sequence[str]) -> None:
        self.w3 = w3
        self.tx = DevSender(w3)
        self.owner = owner
        self.feeds: list[str] = []
        self.contract = self.tx.deploy(owner, load_artifacts()["FeedBatchPusher"], owner)
        self.adopt(feeds)

    def adopt(self, feeds: Sequence[str]) -> None:
        """Takes over more feeds (owned by ``owner``); :meth:`push` then takes answers for these too, after the
        earlier ones."""
        for feed in feeds:
            feed = Web3.to_checksum_address(feed)
            self.tx.transact(self.owner,
                             contract(self.w3, "PushPriceFeed", feed).functions.transferOwnership(self.contract.address))
            self.feeds.append(feed)
        #: Gas limit per push: ~45k per feed (a new round: two storage slots, the latest round, an event).
        self.gas = 60_000 + 60_000 * len(self.feeds)

    def push(self, answers: Sequence[int]) -> None:
        """Opens one round on each feed with ``answers[i]`` (feed units), in one transaction.

        Raises
        ------
        TransactionFailedError
            The transaction reverted (the message carries the decoded error).
        """
        data = _PUSH + abi_encode(("address[]", "int256[]"), (self.feeds, [int(a) for a in answers]))
        self.tx.send(self.owner, self.contract.address, data, gas=self.gas)


#: ``PoolAligner.pushAndAlign(pusher, feeds, answers, targets)``: selector and argument types.
_PUSH_AND_ALIGN_TYPES = ("address", "address[]", "int256[]", "(address,address,uint160)[]")
_PUSH_AND_ALIGN = function_signature_to_4byte_selector(f"pushAndAlign({','.join(_PUSH_AND_ALIGN_TYPES)})")


class BatchArbitrageur:
    """Moves every pool of a deployment to its oracle price in one transaction (``PoolAligner``).

    Same trades as :class:`Arbitrageur` (each pool's cheap side sold with ``sqrtPriceLimitX96`` at the oracle
    price, so every pool ends exactly there), made by a contract that holds the inventory: ``inventory_usd`` of
    the base asset and, per risk asset, ``inventory_usd`` worth at a price ``1 / crash_cover`` of the first
    answer (enough for any replay of real prices). Local chains only.
    """

    def __init__(self, w3: Web3, deployment: Deployment, deployer: str, first_answers: Sequence[int],
                 inventory_usd: float = 1e12, crash_cover: int = 10**6) -> None:
        self.tx = DevSender(w3)
        self.deployer = deployer
        self.base = deployment.base_asset
        arts = load_artifacts()
        self.contract = self.tx.deploy(deployer, arts["PoolAligner"], deployment.swap_router, self.base, POOL_FEE,
                                       deployer)
        base = contract(w3, "TestToken", self.base)
        self.tx.transact(deployer, base.functions.mint(self.contract.address, int(inventory_usd * 10**BASE_DECIMALS)))
        for asset, answer in zip(deployment.assets, first_answers, strict=True):
            amount = int(inventory_usd) * crash_cover * 10 ** (FEED_DECIMALS + RISK_DECIMALS) // int(answer)
            self.tx.transact(deployer, contract(w3, "TestToken", asset.token).functions.mint(self.contract.address,
                                                                                            amount))
        self.tx.transact(deployer, self.contract.functions.approveRouter([a.token for a in deployment.assets]))
        self.assets = list(deployment.assets)
        #: Gas limit per alignment: a swap crossing no initialised tick costs ~110-150k; 250k per pool is ample.
        self.gas = 100_000 + 250_000 * len(self.assets)

    def align_all(self, answers: Sequence[int]) -> None:
        """Moves each pool to ``answers[i]`` (feed units, ``deployment.assets`` order) in one transaction.

        Raises
        ------
        TransactionFailedError
            The transaction reverted (the message carries the decoded error).
        """
        self.tx.transact(self.deployer, self.contract.functions.align(self._targets(answers)), gas=self.gas)

    def take_over(self, pusher: "FeedPusher") -> None:
        """Makes this arbitrageur's contract the owner of ``pusher``'s contract (for :meth:`push_and_align`)."""
        self.tx.transact(pusher.owner, pusher.contract.functions.transferOwnership(self.contract.address))
        self.pusher = pusher

    def push_and_align(self, feed_answers: Sequence[int], answers: Sequence[int]) -> None:
        """One transaction: the pusher taken over (:meth:`take_over`) pushes ``feed_answers`` (every feed it
        holds, in its order), then every pool moves to ``answers`` (prices, ``deployment.assets`` order).

        Raises
        ------
        TransactionFailedError
            The transaction reverted (the message carries the decoded error).
        """
        # Encoded here with eth_abi (web3's contract-function encoding costs tens of ms per call for these arrays).
        data = _PUSH_AND_ALIGN + abi_encode(_PUSH_AND_ALIGN_TYPES, (
            self.pusher.contract.address, self.pusher.feeds, [int(a) for a in feed_answers], self._targets(answers)))
        self.tx.send(self.deployer, self.contract.address, data, gas=self.gas + self.pusher.gas)

    def _targets(self, answers: Sequence[int]) -> list[tuple[str, str, int]]:
        return [(a.pool, a.token, sqrt_price_x96(int(p), int(a.token, 16) < int(self.base, 16)))
                for a, p in zip(self.assets, answers, strict=True)]
