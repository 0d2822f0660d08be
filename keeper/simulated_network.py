"""Anvil set up like a public testnet: the testnet's chain id, Uniswap V3 and Chainlink-style feeds at the addresses
:mod:`keeper.networks` lists, so ``ape run deploy --network <the testnet>`` and the keeper run against it unchanged.

Each external contract is deployed normally (the real bytecode from the npm artifacts, constructed with the
testnet's addresses as its immutables), then its runtime code is placed at the listed address with
``anvil_setCode`` and its first storage slots copied with ``anvil_setStorageAt`` (the factory's owner, a router's
cache sentinel, the position manager's ERC-721 name and counters, a feed's owner and description). The factory's
``NoDelegateCall`` guard keeps ``address(this)`` of its deployment as an immutable: those 20 bytes of its runtime
code are rewritten to the listed address, and its fee tiers are copied with it. Feeds are :file:`PushPriceFeed`
(Chainlink's ``AggregatorV3Interface`` with the proxy's phase-encoded round ids) with a pushed round history.

The router: the network's kind (Uniswap lists ``SwapRouter02`` on these testnets), from its npm artifact
(``@uniswap/swap-router-contracts``), constructed as ``SwapRouter02(factoryV2, factoryV3, positionManager, WETH9)``
with the listed factory, position manager and WETH9 as its immutables; the network lists no Uniswap V2 factory,
so ``factoryV2`` is the zero address and only its V3 functions (the ones the vault calls) work. Its only
initialised storage, the ``amountInCached`` sentinel, is copied with it. The original ``SwapRouter``
(v3-periphery, ``SwapRouter(factory, WETH9)``) is placed instead when asked for. Multicall3, which every public
network has at its canonical address and the keeper reads through, is placed there too.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

from eth_abi import encode
from eth_utils import keccak
from web3 import Web3

from keeper.build import load_artifacts
from keeper.chain import DevSender, rpc
from keeper.deployment import router_artifact
from keeper.errors import ConfigError
from keeper.multicall import ensure_multicall3
from keeper.networks import NetworkAddresses, RouterKind

#: Storage slots copied with each placed contract (their initialised state lives in the first few).
COPIED_SLOTS = 32
#: Fee tiers (hundredths of a bip) the factory's constructor enables, and its ``feeAmountTickSpacing`` slot.
FACTORY_FEES = (500, 3000, 10_000)
FACTORY_FEE_MAPPING_SLOT = 4
ZERO_ADDRESS = "0x" + "00" * 20


def place(w3: Web3, source: str, target: str, patch_self_address: bool = False,
          extra_slots: Iterable[int] = ()) -> None:
    """Copies ``source``'s runtime code and first :data:`COPIED_SLOTS` storage slots (and ``extra_slots``) to
    ``target``. With ``patch_self_address`` every occurrence of ``source``'s 20 address bytes in the code becomes
    ``target``'s (an ``address(this)`` immutable)."""
    code = bytes(w3.eth.get_code(Web3.to_checksum_address(source)))
    if patch_self_address:
        code = code.replace(bytes.fromhex(source[2:].lower()), bytes.fromhex(target[2:].lower()))
    rpc(w3, "anvil_setCode", [target, "0x" + code.hex()])
    for slot in [*range(COPIED_SLOTS), *extra_slots]:
        value = bytes(w3.eth.get_storage_at(Web3.to_checksum_address(source), slot))
        if any(value):
            rpc(w3, "anvil_setStorageAt", [target, hex(slot), "0x" + value.rjust(32, b"\0").hex()])


def place_uniswap(w3: Web3, network: NetworkAddresses, deployer: str, router_kind: RouterKind) -> str:
    """Places factory, QuoterV2, position manager and the router of ``router_kind`` at ``network``'s addresses;
    returns the router's contract name (``"SwapRouter02"`` or ``"SwapRouter"``).

    Raises
    ------
    ConfigError
        A placed contract does not answer as deployed (its storage layout or immutables were not carried over).
    """
    arts = load_artifacts()
    tx = DevSender(w3)
    factory, weth9 = network.uniswap_factory.address, network.weth9.address
    built = tx.deploy(deployer, arts["UniswapV3Factory"])
    fee_slots = [int.from_bytes(keccak(encode(["uint256", "uint256"], [fee, FACTORY_FEE_MAPPING_SLOT])), "big")
                 for fee in FACTORY_FEES]
    place(w3, built.address, factory, patch_self_address=True, extra_slots=fee_slots)
    quoter = tx.deploy(deployer, arts["QuoterV2"], factory, weth9)
    place(w3, quoter.address, network.quoter_v2.address)
    npm = tx.deploy(deployer, arts["NonfungiblePositionManager"], factory, weth9, ZERO_ADDRESS)
    place(w3, npm.address, network.position_manager.address)
    artifact = router_artifact(router_kind)
    # Constructor arguments in order, each the value its same-named view answers (the router's immutables).
    if router_kind == "swaprouter02":
        immutables = {"factoryV2": ZERO_ADDRESS, "factory": factory,
                      "positionManager": network.position_manager.address, "WETH9": weth9}
    else:
        immutables = {"factory": factory, "WETH9": weth9}
    router = tx.deploy(deployer, artifact, *immutables.values())
    place(w3, router.address, network.router.address)
    placed_router = w3.eth.contract(address=Web3.to_checksum_address(network.router.address), abi=artifact.abi)
    for view, address in immutables.items():
        answer = getattr(placed_router.functions, view)().call()
        if answer.lower() != address.lower():
            raise ConfigError(f"the placed {artifact.name} answers {view}() = {answer}, expected {address}")
    placed = w3.eth.contract(address=Web3.to_checksum_address(factory), abi=arts["UniswapV3Factory"].abi)
    if placed.functions.feeAmountTickSpacing(500).call() != 10:
        raise ConfigError("the placed factory does not hold its fee tiers: storage layout changed")
    return artifact.name


def place_feeds(w3: Web3, network: NetworkAddresses, deployer: str,
                history: dict[str, Sequence[tuple[int, int]]]) -> dict[str, str]:
    """Places a push feed (8 decimals) at each listed feed address of the symbols in ``history`` and pushes its
    rounds: ``history[symbol]`` is ``[(unix_seconds, answer_e8), ...]`` in time order, each mined at its time
    (so the chain's clock ends at the last round). Returns ``{symbol: feed address}``.

    Raises
    ------
    ConfigError
        A symbol the network lists no feed address for.
    """
    arts = load_artifacts()
    tx = DevSender(w3)
    feeds: dict[str, Any] = {}
    for symbol in history:
        listed = network.price_feeds.get(symbol)
        if listed is None:
            raise ConfigError(f"{network.ape_network} lists no {symbol} feed address (keeper/networks.py)")
        built = tx.deploy(deployer, arts["PushPriceFeed"], 8, f"{symbol} / USD", deployer)
        place(w3, built.address, listed.address)
        feeds[symbol] = w3.eth.contract(address=Web3.to_checksum_address(listed.address), abi=arts["PushPriceFeed"].abi)
    rounds = sorted((t, s, a) for s, points in history.items() for t, a in points)
    for when, symbol, answer in rounds:
        if when > w3.eth.get_block("latest")["timestamp"]:
            rpc(w3, "evm_setNextBlockTimestamp", [when])
        tx.transact(deployer, feeds[symbol].functions.pushAnswer(int(answer)))
    return {s: f.address for s, f in feeds.items()}


def simulate_network(w3: Web3, network: NetworkAddresses, deployer: str,
                     history: dict[str, Sequence[tuple[int, int]]],
                     router_kind: RouterKind | None = None) -> dict[str, Any]:
    """Places Uniswap V3 and the feeds of ``network`` on the Anvil behind ``w3`` (started with the network's chain
    id, its dev accounts unlocked). ``router_kind`` defaults to the network's (``network.router_kind``).
    Returns what was placed: ``{"router": contract name, "feeds": {symbol: address}}``.

    Raises
    ------
    ConfigError
        The node's chain id is not the network's.
    """
    if w3.eth.chain_id != network.chain_id:
        raise ConfigError(f"start anvil with --chain-id {network.chain_id} to simulate {network.ape_network} "
                          f"(it serves {w3.eth.chain_id})")
    router = place_uniswap(w3, network, deployer, router_kind or network.router_kind)
    feeds = place_feeds(w3, network, deployer, history)
    ensure_multicall3(w3)  # at its canonical address, as on every public network
    return {"router": router, "feeds": feeds}


__all__ = ["place", "place_feeds", "place_uniswap", "simulate_network"]
