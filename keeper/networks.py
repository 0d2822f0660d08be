"""Public networks the system deploys to, their external contracts with the source of every address, and the
deployment record (``deployments/<network>.json``) that ``ape run deploy`` writes and the keeper reads.

Every address below names where it was read. "official" is the operator's own documentation (Uniswap's
deployment tables, Chainlink's documentation); "unconfirmed" means the address was seen only in third-party
code and documentation and not on the operator's page: ``ape run deploy`` refuses an unconfirmed address unless
``--accept-unconfirmed`` is given (check it on https://docs.chain.link/data-feeds/price-feeds/addresses first);
``None`` means no source could be found and the deployer must supply the address (``--feed SYMBOL=0x...``).

The vault's router: Uniswap lists ``SwapRouter02`` (``@uniswap/swap-router-contracts``, whose
``exactInputSingle`` has no deadline field) on every testnet below; the original ``SwapRouter`` is not deployed
there. ``router_kind`` carries which one a network has; the vault takes it in its constructor (the
``RouterKind`` enum, whose values :data:`ROUTER_KINDS` lists in order).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from keeper.errors import ConfigError

#: A Uniswap V3 router's interface: ``"swaprouter"`` (``@uniswap/v3-periphery`` ``SwapRouter``, a deadline field
#: in ``exactInputSingle``) or ``"swaprouter02"`` (``@uniswap/swap-router-contracts`` ``SwapRouter02``, none).
RouterKind = Literal["swaprouter", "swaprouter02"]
#: The router kinds in the order of the vault's ``IRiskParityVault.RouterKind`` enum (``SwapRouter``,
#: ``SwapRouter02``): a kind's index is the enum value its constructor takes (:func:`router_kind_value`).
ROUTER_KINDS: tuple[RouterKind, ...] = ("swaprouter", "swaprouter02")
Confidence = Literal["official", "unconfirmed"]

_UNISWAP_ETHEREUM = ("https://docs.uniswap.org/contracts/v3/reference/deployments/ethereum-deployments "
                     "(Uniswap/docs content/protocols/v3/deployments/v3-ethereum-deployments.mdx)")
_UNISWAP_ARBITRUM = ("https://docs.uniswap.org/contracts/v3/reference/deployments/arbitrum-deployments "
                     "(Uniswap/docs content/protocols/v3/deployments/v3-arbitrum-deployments.mdx)")
_UNISWAP_BASE = ("https://docs.uniswap.org/contracts/v3/reference/deployments/base-deployments "
                 "(Uniswap/docs content/protocols/v3/deployments/v3-base-deployments.mdx)")
_CHAINLINK_API_REFERENCE = "https://docs.chain.link/data-feeds/api-reference (the Sepolia ETH/USD example)"
_THIRD_PARTY = ("not on a Chainlink page we could read; third-party integrations agree on it; confirm at "
                "https://docs.chain.link/data-feeds/price-feeds/addresses")


def router_kind_value(kind: str) -> int:
    """The vault's ``RouterKind`` enum value (uint8) of ``kind``: 0 for ``swaprouter``, 1 for ``swaprouter02``.

    Raises
    ------
    ConfigError
        ``kind`` is not one of :data:`ROUTER_KINDS`.
    """
    if kind not in ROUTER_KINDS:
        raise ConfigError(f"router kind {kind!r} is not one of {', '.join(ROUTER_KINDS)} (e.g. swaprouter02, the "
                          "router Uniswap lists on the testnets)")
    return ROUTER_KINDS.index(kind)  # type: ignore[arg-type]


@dataclass(frozen=True)
class SourcedAddress:
    """An external contract's address with where it was read and how sure that source is."""

    address: str
    source: str
    confidence: Confidence = "official"


@dataclass(frozen=True)
class NetworkAddresses:
    """The external contracts of one public network (ape's ``ecosystem:network`` name)."""

    ape_network: str
    chain_id: int
    uniswap_factory: SourcedAddress
    quoter_v2: SourcedAddress
    router: SourcedAddress
    router_kind: RouterKind
    position_manager: SourcedAddress
    #: Wrapped ether of the network (the periphery contracts' WETH9).
    weth9: SourcedAddress
    #: Chainlink USD price feed proxy by symbol (8 decimals); ``None``: no source found, supply it.
    price_feeds: dict[str, SourcedAddress | None]
    #: Chainlink L2 sequencer uptime feed; ``None`` where none is listed (L1, or not found for the testnet).
    sequencer_uptime_feed: SourcedAddress | None
    sequencer_note: str = ""
    #: Block explorer API of ape-etherscan for verification.
    explorer: str = ""


NETWORKS: dict[str, NetworkAddresses] = {
    "ethereum:sepolia": NetworkAddresses(
        ape_network="ethereum:sepolia",
        chain_id=11155111,
        uniswap_factory=SourcedAddress("0x0227628f3F023bb0B980b67D528571c95c6DaC1c", _UNISWAP_ETHEREUM),
        quoter_v2=SourcedAddress("0xEd1f6473345F45b75F8179591dd5bA1888cf2FB3", _UNISWAP_ETHEREUM),
        router=SourcedAddress("0x3bFA4769FB09eefC5a80d6E87c3B9C650f7Ae48E", _UNISWAP_ETHEREUM),
        router_kind="swaprouter02",
        position_manager=SourcedAddress("0x1238536071E1c677A632429e3655c799b22cDA52", _UNISWAP_ETHEREUM),
        weth9=SourcedAddress("0xfFf9976782d46CC05630D1f6eBAb18b2324d6B14", _UNISWAP_ETHEREUM),
        price_feeds={
            "ETH": SourcedAddress("0x694AA1769357215DE4FAC081bf1f309aDC325306", _CHAINLINK_API_REFERENCE),
            "BTC": SourcedAddress("0x1b44F3514812d835EB1BDB0acB33d3fA3351Ee43", _THIRD_PARTY, "unconfirmed"),
        },
        sequencer_uptime_feed=None,
        sequencer_note="an L1: no sequencer",
        explorer="https://sepolia.etherscan.io",
    ),
    "arbitrum:sepolia": NetworkAddresses(
        ape_network="arbitrum:sepolia",
        chain_id=421614,
        uniswap_factory=SourcedAddress("0x248AB79Bbb9bC29bB72f7Cd42F17e054Fc40188e", _UNISWAP_ARBITRUM),
        quoter_v2=SourcedAddress("0x2779a0CC1c3e0E44D2542EC3e79e3864Ae93Ef0B", _UNISWAP_ARBITRUM),
        router=SourcedAddress("0x101F443B4d1b059569D643917553c771E1b9663E", _UNISWAP_ARBITRUM),
        router_kind="swaprouter02",
        position_manager=SourcedAddress("0x6b2937Bde17889EDCf8fbD8dE31C3C2a70Bc4d65", _UNISWAP_ARBITRUM),
        weth9=SourcedAddress("0x980B62Da83eFf3D4576C647993b0c1D7faf17c73", _UNISWAP_ARBITRUM),
        price_feeds={
            "ETH": SourcedAddress("0xd30e2101a97dcbAeBCBC04F14C3f624E67A35165", _THIRD_PARTY, "unconfirmed"),
            "BTC": SourcedAddress("0x56a43EB56Da12C0dc1D972ACb089c06a5dEF8e69", _THIRD_PARTY, "unconfirmed"),
        },
        sequencer_uptime_feed=None,
        sequencer_note=("Chainlink's L2 sequencer page lists uptime feeds for mainnets; no Arbitrum Sepolia uptime "
                        "feed address could be confirmed: set one with --sequencer-feed when Chainlink lists it"),
        explorer="https://sepolia.arbiscan.io",
    ),
    "base:sepolia": NetworkAddresses(
        ape_network="base:sepolia",
        chain_id=84532,
        uniswap_factory=SourcedAddress("0x4752ba5DBc23f44D87826276BF6Fd6b1C372aD24", _UNISWAP_BASE),
        quoter_v2=SourcedAddress("0xC5290058841028F1614F3A6F0F5816cAd0df5E27", _UNISWAP_BASE),
        router=SourcedAddress("0x94cC0AaC535CCDB3C01d6787D6413C739ae12bc4", _UNISWAP_BASE),
        router_kind="swaprouter02",
        position_manager=SourcedAddress("0x27F971cb582BF9E50F397e4d29a5C7A34f11faA2", _UNISWAP_BASE),
        weth9=SourcedAddress("0x4200000000000000000000000000000000000006", _UNISWAP_BASE),
        price_feeds={
            "ETH": SourcedAddress("0x4aDC67696bA383F43DD60A9e78F2C97Fbbfc7cb1", _THIRD_PARTY, "unconfirmed"),
            # Third-party code gives two different BTC/USD addresses on Base Sepolia: none is taken.
            "BTC": None,
        },
        sequencer_uptime_feed=None,
        sequencer_note=("no Base Sepolia uptime feed address could be confirmed: set one with --sequencer-feed "
                        "when Chainlink lists it"),
        explorer="https://sepolia.basescan.org",
    ),
}


def network_addresses(ape_network: str) -> NetworkAddresses:
    """The :data:`NETWORKS` entry of ``ecosystem:network`` (a provider suffix is ignored).

    Raises
    ------
    ConfigError
        No entry: the message lists the known networks.
    """
    key = ":".join(ape_network.split(":")[:2])
    if key not in NETWORKS:
        raise ConfigError(f"no addresses for network {ape_network!r}; known: {', '.join(sorted(NETWORKS))} "
                          f"(a local chain deploys its own Uniswap and feeds: --network ethereum:local:foundry)")
    return NETWORKS[key]


@dataclass(frozen=True)
class DeployedAsset:
    """One listed risk asset of a deployment."""

    symbol: str
    token: str
    feed: str
    pool: str | None = None


@dataclass(frozen=True)
class DeploymentRecord:
    """What ``ape run deploy`` writes to ``deployments/<network>.json`` (checksummed hex addresses).

    ``abi_dir`` names the directory of the ABI files (``deployments/abi/<Contract>.json``), the same for every
    network.
    """

    network: str
    chain_id: int
    vault: str
    quoter: str
    router: str
    router_kind: RouterKind
    factory: str
    base_asset: str
    keeper: str
    guardian: str
    admin: str
    option_market: str | None = None
    sequencer_uptime_feed: str | None = None
    assets: list[DeployedAsset] = field(default_factory=list)
    block_number: int | None = None
    abi_dir: str = "deployments/abi"
    sources: dict[str, str] = field(default_factory=dict)

    def to_json(self, path: Path) -> None:
        """Writes the record to ``path`` and its shell variables (:meth:`shell_variables`) beside it (``.env``)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")
        path.with_suffix(".env").write_text(self.shell_variables())

    def shell_variables(self) -> str:
        """``NAME=0x...`` lines for ``source`` in a shell (``cast`` examples): CHAIN_ID, VAULT, USDC (the base
        asset), OPTION_MARKET, QUOTER, ROUTER, FACTORY and TOKEN_<SYMBOL> / FEED_<SYMBOL> per asset."""
        values = {"CHAIN_ID": str(self.chain_id), "VAULT": self.vault, "USDC": self.base_asset,
                  "OPTION_MARKET": self.option_market or "", "QUOTER": self.quoter, "ROUTER": self.router,
                  "FACTORY": self.factory}
        for asset in self.assets:
            values[f"TOKEN_{asset.symbol}"] = asset.token
            values[f"FEED_{asset.symbol}"] = asset.feed
        return "".join(f"{k}={v}\n" for k, v in values.items())


#: ABIs a depositor or operator needs, copied next to the deployment records (``deployments/abi/``).
DEPLOYMENT_ABIS = ("RiskParityVault", "OptionMarket", "TestToken", "IRiskParityVault", "IOptionMarket",
                   "PushPriceFeed", "QuoterV2")


def record_path(ape_network: str, out_dir: Path) -> Path:
    """``out_dir/<ecosystem>-<network>.json`` (``ethereum:sepolia`` -> ``ethereum-sepolia.json``)."""
    return Path(out_dir) / ("-".join(ape_network.split(":")[:2]) + ".json")


def write_abis(out_dir: Path) -> Path:
    """Copies the ABIs of :data:`DEPLOYMENT_ABIS` from keeper/abi/ (written by ``keeper build``) into
    ``out_dir/abi/``; returns that directory."""
    import shutil

    from keeper.abis import ABI_DIR

    target = Path(out_dir) / "abi"
    target.mkdir(parents=True, exist_ok=True)
    for name in DEPLOYMENT_ABIS:
        shutil.copyfile(ABI_DIR / f"{name}.json", target / f"{name}.json")
    return target


def load_deployment_record(path: Path) -> DeploymentRecord:
    """Reads ``deployments/<network>.json`` (or the local ``scripts/deploy.py`` output, which has no keeper).

    Raises
    ------
    ConfigError
        The file is missing, not JSON, or lacks ``vault``/``quoter``/``chain_id``.
    """
    try:
        data = json.loads(Path(path).read_text())
    except OSError as exc:
        raise ConfigError(f"chain.deployment_file {path}: cannot read it ({exc.strerror}); run `ape run deploy "
                          f"--network ...` first or give the addresses") from exc
    except ValueError as exc:
        raise ConfigError(f"chain.deployment_file {path} is not JSON: {exc}") from exc
    missing = [k for k in ("vault", "quoter", "chain_id") if not data.get(k)]
    if missing:
        raise ConfigError(f"chain.deployment_file {path} lacks {', '.join(missing)}: not a deployment record")
    assets = [DeployedAsset(**{k: a.get(k) for k in ("symbol", "token", "feed", "pool")}) for a in data.get("assets", [])]
    router_kind = data.get("router_kind", "swaprouter")
    if router_kind not in ROUTER_KINDS:
        raise ConfigError(f"chain.deployment_file {path}: router_kind {router_kind!r} is not one of "
                          f"{', '.join(ROUTER_KINDS)}")
    return DeploymentRecord(
        network=data.get("network", "ethereum:local"), chain_id=int(data["chain_id"]), vault=data["vault"],
        quoter=data["quoter"], router=data.get("router") or data.get("swap_router", ""),
        router_kind=router_kind, factory=data.get("factory", ""),
        base_asset=data.get("base_asset", ""), keeper=data.get("keeper", ""), guardian=data.get("guardian", ""),
        admin=data.get("admin", ""), option_market=data.get("option_market"),
        sequencer_uptime_feed=data.get("sequencer_uptime_feed"), assets=assets,
        block_number=data.get("block_number"), abi_dir=data.get("abi_dir", "deployments/abi"),
        sources=data.get("sources", {}),
    )
