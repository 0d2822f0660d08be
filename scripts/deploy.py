"""Deploys the whole system (vault, option market, roles, listings, limits) and writes deployments/<network>.json
with the ABIs beside it in deployments/abi/.

With ape (any network of ape-config.yaml)::

    ape run deploy --network ethereum:local:foundry
    ape run deploy --network ethereum:sepolia:node --keeper 0xKEEPER --guardian 0xGUARDIAN
    ape run deploy --network arbitrum:sepolia:node --keeper 0x... --guardian 0x... --accept-unconfirmed

Without ape, against a running local Anvil (its dev accounts unlocked)::

    .venv/bin/python scripts/deploy.py --rpc-url http://127.0.0.1:8545 [--router-kind swaprouter02]

Local network (ethereum:local): everything is deployed fresh — test tokens, push feeds, the real Uniswap V3 from
the npm artifacts with one seeded pool per asset, the vault, the option market; dev account 0 administers,
1 is the keeper, 2 the guardian; the router is the original ``SwapRouter`` unless ``--router-kind swaprouter02``
deploys Uniswap's ``SwapRouter02`` (the testnets' router) instead. ``--timelock-delay SECONDS`` moves the vault's admin role to an OpenZeppelin
TimelockController.

Public networks (keeper/networks.py: Ethereum Sepolia, Arbitrum Sepolia, Base Sepolia): the network's own
Uniswap V3 factory, QuoterV2, position manager and router (``SwapRouter02``, the vault built for it unless
--router-kind says otherwise) and its Chainlink USD feeds (keeper.public_deployment
says what is deployed). The deployer's key comes from the environment variable named by --deployer-key-env
(default DEPLOYER_PRIVATE_KEY) or from an ape account (--account ALIAS, unlocked with
APE_ACCOUNTS_<ALIAS>_PASSPHRASE). A feed address keeper/networks.py marks unconfirmed is refused unless
--accept-unconfirmed; --feed SYMBOL=0x... adds or replaces one. ``--verify`` then verifies every contract deployed
(vault, option market, test tokens, implied-volatility feeds) on the network's explorer (keeper.verification;
the explorer URLs in ape-config.yaml's ``etherscan:`` section, the key in ETHERSCAN_API_KEY) and writes
``deployments/<network>.verification.json``; ``--verify-from`` that file verifies again without deploying (after
the explorer refused or the run was interrupted).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# This checkout's keeper package (not another installed copy): ape runs scripts from its own entry point.
sys.path.insert(0, str(ROOT))

from keeper.errors import ConfigError  # noqa: E402
from keeper.networks import ROUTER_KINDS  # noqa: E402

def deploy_local(rpc_url: str, symbols: list[str], pool_depth_usd: float, timelock_delay: int, out_dir: Path,
                 ape_network: str = "ethereum:local", router_kind: str = "swaprouter") -> Path:
    """The whole local system on an Anvil whose dev accounts are unlocked, its router of ``router_kind`` (one of
    ``keeper.networks.ROUTER_KINDS``); returns the record's path.

    Raises
    ------
    ConfigError
        An unknown ``router_kind`` or symbol.
    """
    from keeper.chain import connect, dev_accounts
    from keeper.data import load_prices
    from keeper.deployment import deploy_options, deploy_system, place_behind_timelock
    from keeper.networks import DeployedAsset, DeploymentRecord, record_path, write_abis

    w3 = connect(rpc_url)
    table = load_prices(symbols=symbols)
    owner, keeper, guardian = dev_accounts()[:3]
    deployment = deploy_system(w3, owner, keeper, guardian, table.symbols, table.prices[-1], pool_depth_usd,
                               router_kind=router_kind)
    market = deploy_options(w3, deployment, owner, [0.8] * len(deployment.assets))
    admin = owner
    if timelock_delay > 0:
        admin = place_behind_timelock(w3, owner, [deployment.vault, market.market], proposer=owner,
                                      delay_seconds=timelock_delay)
        print(f"timelock {admin} (delay {timelock_delay} s) administers the vault and the option market")
    record = DeploymentRecord(
        network=ape_network, chain_id=deployment.chain_id, vault=deployment.vault, quoter=deployment.quoter,
        router=deployment.swap_router, router_kind=deployment.router_kind, factory=deployment.factory,
        base_asset=deployment.base_asset, keeper=keeper, guardian=guardian, admin=admin, option_market=market.market,
        assets=[DeployedAsset(a.symbol, a.token, a.feed, a.pool) for a in deployment.assets],
        block_number=w3.eth.block_number, sources={"all": "deployed by scripts/deploy.py from the npm artifacts"},
    )
    path = record_path(ape_network, out_dir)
    record.to_json(path)
    write_abis(out_dir)
    # The older local layout (keeper.deployment.Deployment) beside it, for the demo helpers that read it.
    deployment.to_json(path.with_suffix(".deployment.json"))
    return path


def deployer_key(key_env: str, ape_account: str | None) -> str:
    """The deployer's private key (hex) from an ape account or the environment.

    Raises
    ------
    ConfigError
        Neither is available (the message names what to set).
    """
    if ape_account:
        from ape import accounts
        from eth_account import Account

        passphrase = os.environ.get(f"APE_ACCOUNTS_{ape_account}_PASSPHRASE")
        if passphrase is None:
            raise ConfigError(f"set APE_ACCOUNTS_{ape_account}_PASSPHRASE to unlock ape account {ape_account!r}")
        return Account.decrypt(accounts.load(ape_account).keyfile, passphrase).hex()
    key = os.environ.get(key_env)
    if not key:
        raise ConfigError(f"no deployer key: set {key_env} (hex private key) or pass --account ALIAS (an ape account)")
    return key


def deploy_public(rpc_url: str, ape_network: str, *, keeper: str, guardian: str, symbols: list[str] | None,
                  extra_feeds: dict[str, str], accept_unconfirmed: bool, router: str | None, router_kind: str | None,
                  key: str, pool_depth_usd: float, out_dir: Path, deployed: list | None = None) -> Path:
    """The system on a network with Uniswap V3 and Chainlink (keeper.public_deployment); returns the record's path.
    Every contract created is appended to ``deployed`` (``keeper.verification.DeployedContract``) when given.

    Raises
    ------
    ConfigError
        An unknown network, a symbol without a feed, an unconfirmed feed without ``accept_unconfirmed``.
    """
    from web3 import Web3

    from keeper.chain import connect
    from keeper.networks import network_addresses, record_path, write_abis
    from keeper.public_deployment import PublicDeployOptions, deploy_on_network
    from keeper.verification import RecordingSender

    network = network_addresses(ape_network)
    wanted = symbols or [s for s, f in network.price_feeds.items() if f is not None] + \
        [s for s in extra_feeds if s not in network.price_feeds]
    feeds: dict[str, str] = {}
    for symbol in wanted:
        if symbol in extra_feeds:
            feeds[symbol] = Web3.to_checksum_address(extra_feeds[symbol])
            continue
        listed = network.price_feeds.get(symbol)
        if listed is None:
            raise ConfigError(f"{ape_network} has no confirmed {symbol}/USD feed address in keeper/networks.py: "
                              f"pass --feed {symbol}=0x... from https://docs.chain.link/data-feeds/price-feeds/addresses")
        if listed.confidence != "official" and not accept_unconfirmed:
            raise ConfigError(f"the {symbol}/USD feed {listed.address} on {ape_network} is unconfirmed ({listed.source}); "
                              "check it, then pass --accept-unconfirmed (or --feed SYMBOL=0x...)")
        feeds[symbol] = listed.address
    w3 = connect(rpc_url)
    sender = RecordingSender(w3, key)
    options = PublicDeployOptions(feeds=feeds, router=router or network.router.address,
                                  router_kind=router_kind or network.router_kind, keeper=keeper, guardian=guardian,
                                  pool_depth_usd=pool_depth_usd)
    try:
        record = deploy_on_network(w3, sender, network, options, ape_network)
    finally:
        if deployed is not None:
            deployed.extend(sender.deployed)
    path = record_path(ape_network, out_dir)
    record.to_json(path)
    write_abis(out_dir)
    return path


def _feeds(values: tuple[str, ...] | list[str]) -> dict[str, str]:
    out = {}
    for value in values:
        symbol, sep, address = value.partition("=")
        if not sep or not address.startswith("0x"):
            raise ConfigError(f"--feed {value!r}: expected SYMBOL=0x<feed address>")
        out[symbol.strip().upper()] = address.strip()
    return out


def run(ape_network: str, rpc_url: str, *, explorer=None, **options) -> Path:  # noqa: ANN001 - ExplorerTarget
    """Dispatches to :func:`deploy_local` (``*:local``) or :func:`deploy_public`; prints and returns the record.
    With ``explorer`` (``keeper.verification.ExplorerTarget``) every contract deployed is then verified on it and
    the submissions are written to ``<record>.verification.json``.

    Raises
    ------
    ConfigError
        Bad options (the message names the fix); ``explorer`` given for a local network; a failed verification.
    """
    out_dir = Path(options.get("out_dir") or ROOT / "deployments")
    symbols = [s.strip().upper() for s in options["assets"].split(",")] if options.get("assets") else None
    deployed: list = []
    if ape_network.split(":")[1] == "local":
        if explorer is not None:
            raise ConfigError(f"--verify: {ape_network} has no explorer; verify on ethereum:sepolia, "
                              "arbitrum:sepolia or base:sepolia")
        path = deploy_local(rpc_url, symbols or ["BTC", "ETH", "SOL"], options.get("pool_depth_usd", 50e6),
                            options.get("timelock_delay", 0), out_dir, ":".join(ape_network.split(":")[:2]),
                            router_kind=options.get("router_kind") or "swaprouter")
    else:
        if not options.get("keeper") or not options.get("guardian"):
            raise ConfigError("a public network needs --keeper ADDRESS and --guardian ADDRESS (the deployer administers)")
        path = deploy_public(rpc_url, ape_network, keeper=options["keeper"], guardian=options["guardian"],
                             symbols=symbols, extra_feeds=_feeds(options.get("feed") or ()),
                             accept_unconfirmed=bool(options.get("accept_unconfirmed")), router=options.get("router"),
                             router_kind=options.get("router_kind"),
                             key=deployer_key(options.get("deployer_key_env") or "DEPLOYER_PRIVATE_KEY",
                                              options.get("account")),
                             pool_depth_usd=options.get("pool_depth_usd", 50e6), out_dir=out_dir,
                             deployed=deployed)
    import json

    record = json.loads(path.read_text())
    print(f"network {record['network']} (chain {record['chain_id']})\nvault {record['vault']}\n"
          f"option market {record['option_market']}\nquoter {record['quoter']}\nrouter {record['router']} "
          f"({record['router_kind']})\n" + "".join(f"{a['symbol']}: token {a['token']} feed {a['feed']} pool "
                                                  f"{a['pool']}\n" for a in record["assets"]) + f"wrote {path}")
    if explorer is not None:
        from keeper.verification import publish, write_results

        # Written first, so that a verification the explorer refuses can be retried with --verify-from.
        results_path = write_results(path.with_suffix(".verification.json"), deployed, [])
        print(f"wrote {write_results(results_path, deployed, publish(explorer, deployed))}")
    return path


def verify_from_file(path: Path, rpc_url: str, explorer) -> Path:  # noqa: ANN001 - keeper.verification.ExplorerTarget
    """Verifies again the contracts of a ``<record>.verification.json`` (after a refused or interrupted
    verification): each deploy transaction is first checked to carry this checkout's build; rewrites the file.

    Raises
    ------
    ConfigError
        A bad file, a deploy transaction not on the chain or built otherwise, a failed verification.
    """
    from keeper.build import load_artifacts
    from keeper.chain import connect
    from keeper.verification import check_deployed_code, load_deployed, publish, write_results

    deployed = load_deployed(path)
    check_deployed_code(connect(rpc_url), deployed, load_artifacts())
    print(f"wrote {write_results(Path(path), deployed, publish(explorer, deployed))}")
    return Path(path)


try:  # `ape run deploy`: a click command in ape's network context
    import click
    from ape.cli import ConnectedProviderCommand

    @click.command(cls=ConnectedProviderCommand, short_help="Deploy the vault system and write deployments/")
    @click.option("--assets", default=None, help="comma-separated symbols (default: the network's feeds; local BTC,ETH,SOL)")
    @click.option("--keeper", default=None, help="address given KEEPER_ROLE (public networks)")
    @click.option("--guardian", default=None, help="address given GUARDIAN_ROLE (public networks)")
    @click.option("--feed", multiple=True, help="SYMBOL=0x... Chainlink USD feed to use (repeatable)")
    @click.option("--accept-unconfirmed", is_flag=True, help="use feed addresses keeper/networks.py marks unconfirmed")
    @click.option("--router", default=None, help="router address (public networks; default: the network's SwapRouter02)")
    @click.option("--router-kind", type=click.Choice(ROUTER_KINDS), default=None,
                  help="the router's interface (default: the network's, swaprouter02; local: swaprouter)")
    @click.option("--account", default=None, help="ape account alias of the deployer (public networks)")
    @click.option("--deployer-key-env", default="DEPLOYER_PRIVATE_KEY", help="env var with the deployer's hex key")
    @click.option("--pool-depth-usd", type=float, default=None, help="each side of each seeded pool, USD")
    @click.option("--timelock-delay", type=int, default=0, help="local: seconds every admin action waits (0: none)")
    @click.option("--out-dir", type=click.Path(path_type=Path), default=None, help="default: deployments/")
    @click.option("--verify", is_flag=True,
                  help="verify every contract deployed on the network's explorer (ape-etherscan; ETHERSCAN_API_KEY)")
    @click.option("--verify-from", type=click.Path(path_type=Path), default=None,
                  help="deploy nothing; verify again the contracts of a deployments/<network>.verification.json")
    def cli(network, provider, verify, verify_from, **options):  # noqa: ANN001 - click's signature
        options = {k: v for k, v in options.items() if v is not None}
        try:
            explorer = None
            if verify or verify_from:  # refused before anything is sent: no explorer, no URL or no API key
                if network.name == "local":
                    raise ConfigError(f"--verify: {network.ecosystem.name}:local has no explorer; verify on "
                                      "ethereum:sepolia, arbitrum:sepolia or base:sepolia")
                from keeper.verification import explorer_target

                explorer = explorer_target(network)
            if verify_from is not None:
                verify_from_file(verify_from, provider.uri, explorer)
                return
            run(f"{network.ecosystem.name}:{network.name}", provider.uri, explorer=explorer, **options)
        except ConfigError as exc:
            raise click.ClickException(str(exc)) from exc
except ImportError:  # plain Python without ape
    pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rpc-url", default="http://127.0.0.1:8545")
    parser.add_argument("--assets", default="BTC,ETH,SOL", help="comma-separated symbols from the shipped data")
    parser.add_argument("--pool-depth-usd", type=float, default=50_000_000.0)
    parser.add_argument("--out-dir", type=Path, default=ROOT / "deployments")
    parser.add_argument("--timelock-delay", type=int, default=0,
                        help="seconds every admin action must wait (0: the deployer stays the admin)")
    parser.add_argument("--router-kind", choices=ROUTER_KINDS, default="swaprouter",
                        help="the Uniswap router deployed and given to the vault (default swaprouter)")
    args = parser.parse_args()
    try:
        run("ethereum:local", args.rpc_url, assets=args.assets, pool_depth_usd=args.pool_depth_usd,
            out_dir=args.out_dir, timelock_delay=args.timelock_delay, router_kind=args.router_kind)
    except ConfigError as exc:
        sys.exit(f"error: {exc}")


if __name__ == "__main__":
    main()
