"""``keeper local-up``: one command that brings up a local system a keeper can tick against, and keeps it up.

Starts Anvil at the first day of a window of real daily closes (the shipped history), deploys the whole system
(:func:`keeper.deployment.deploy_system`: test tokens, push feeds, the real Uniswap V3 with the original
``SwapRouter`` or, with ``--router-kind swaprouter02``, ``SwapRouter02``, seeded pools, the vault;
and the option market), pushes every day's closes as feed rounds at their times (the history the keeper's
estimator needs), aligns every pool to the last close with real swaps (:class:`keeper.deployment.Arbitrageur`),
lets a depositor deposit, and mines a block one hour after the last close (where the demo's keeper reads). Then
starts a fresh journal (the old one belongs to a chain that is gone),
writes ``out/local/ethereum-local.json`` (its shell variables in ``ethereum-local.env``, the ABIs in
``out/local/abi/``) and a keeper config naming it (``out/local/keeper.toml``), prints the
commands that run a keeper against it, and waits until SIGINT/SIGTERM, when it stops Anvil.

Accounts are Anvil's dev accounts: 0 administers, 1 is the keeper, 2 the guardian, 3 the arbitrageur, 4 the
depositor (holding a further 1,000,000 test USDC).
"""

from __future__ import annotations

import datetime as dt
import signal
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from keeper.chain import ANVIL_KEYS, AnvilProcess, DevSender, connect, contract, dev_accounts, rpc
from keeper.data import DEFAULT_PRICES_CSV, load_prices
from keeper.demo import TICK_AFTER_CLOSE_SECONDS
from keeper.deployment import (BASE_DECIMALS, MAX_UINT256, Arbitrageur, deploy_options, deploy_system,
                               price_to_answer)
from keeper.errors import ConfigError
from keeper.networks import DeployedAsset, DeploymentRecord, RouterKind, record_path, write_abis


@dataclass(frozen=True)
class LocalUpOptions:
    """What ``keeper local-up`` brings up (units in the names).

    ``days`` of closes ending at ``end`` become feed rounds (at least the keeper's ``lookback_days`` + 1);
    ``deposit_usd`` is the depositor's first deposit; ``port`` Anvil's port (8545 by default, as the README's
    commands assume).
    """

    symbols: tuple[str, ...] = ("BTC", "ETH", "SOL")
    end: dt.date = dt.date(2022, 12, 31)
    days: int = 120
    deposit_usd: float = 100_000.0
    port: int = 8545
    lookback_days: int = 90
    out_dir: Path = Path("out/local")
    config_path: Path = Path("out/local/keeper.toml")
    journal_path: Path = Path("out/local/journal.sqlite")
    #: USDC the depositor holds besides the deposit (for the README's depositor commands).
    spare_usd: float = 1_000_000.0
    #: The Uniswap router deployed and given to the vault (``keeper.networks.ROUTER_KINDS``).
    router_kind: RouterKind = "swaprouter"
    data: Path = DEFAULT_PRICES_CSV


@dataclass(frozen=True)
class LocalSystem:
    """A running local system: its node (stop it with ``node.stop()``), record and config paths."""

    node: AnvilProcess
    record: Path
    config: Path


def bring_up(options: LocalUpOptions, say: Callable[[str], None] = print) -> LocalSystem:
    """Brings the system up (module doc) and returns it running; the caller stops ``node``.

    Raises
    ------
    ConfigError
        Fewer ``days`` than the lookback needs, a symbol the data lacks, or an unknown ``router_kind``.
    """
    if options.days < options.lookback_days + 1:
        raise ConfigError(f"--days {options.days} gives the estimator less than lookback_days + 1 = "
                          f"{options.lookback_days + 1} daily closes: raise --days or lower --lookback")
    table = load_prices(options.data, list(options.symbols), start=options.end - dt.timedelta(days=options.days - 1),
                        end=options.end)
    if len(table.dates) < options.lookback_days + 1:
        raise ConfigError(f"{options.data} has {len(table.dates)} days of {', '.join(options.symbols)} up to "
                          f"{options.end}; the keeper needs {options.lookback_days + 1}")
    node = AnvilProcess(port=options.port, timestamp=table.close_timestamp(0) - 3600)
    try:
        w3 = connect(node.rpc_url)
        deployer, keeper, guardian, arb_address, depositor = dev_accounts()[:5]
        tx = DevSender(w3)
        deployment = deploy_system(w3, deployer, keeper, guardian, table.symbols, table.prices[0],
                                   router_kind=options.router_kind)
        market = deploy_options(w3, deployment, deployer, [0.8] * len(deployment.assets))
        feeds = [contract(w3, "PushPriceFeed", a.feed) for a in deployment.assets]
        for day in range(1, len(table.dates)):
            rpc(w3, "evm_setNextBlockTimestamp", [table.close_timestamp(day)])
            for feed, price in zip(feeds, table.prices[day]):
                tx.transact(deployer, feed.functions.pushAnswer(price_to_answer(price)))
        arbitrageur = Arbitrageur(w3, deployment, arb_address, deployer)
        for asset, price in zip(deployment.assets, table.prices[-1]):
            arbitrageur.align(asset.token, price_to_answer(price))
        vault = contract(w3, "RiskParityVault", deployment.vault)
        base = contract(w3, "TestToken", deployment.base_asset)
        amount = int(options.deposit_usd * 10**BASE_DECIMALS)
        tx.transact(deployer, base.functions.mint(depositor, amount + int(options.spare_usd * 10**BASE_DECIMALS)))
        if amount > 0:
            tx.transact(depositor, base.functions.approve(vault.address, MAX_UINT256))
            tx.transact(depositor, vault.functions.deposit(amount, depositor))
        latest = w3.eth.get_block("latest")["timestamp"]
        rpc(w3, "evm_mine", [max(table.close_timestamp(len(table.dates) - 1) + TICK_AFTER_CLOSE_SECONDS, latest + 1)])
        record = DeploymentRecord(
            network="ethereum:local", chain_id=w3.eth.chain_id, vault=deployment.vault, quoter=deployment.quoter,
            router=deployment.swap_router, router_kind=deployment.router_kind, factory=deployment.factory,
            base_asset=deployment.base_asset, keeper=keeper, guardian=guardian, admin=deployer,
            option_market=market.market,
            assets=[DeployedAsset(a.symbol, a.token, a.feed, a.pool) for a in deployment.assets],
            block_number=w3.eth.block_number, sources={"all": "deployed by keeper local-up from the npm artifacts"},
        )
        path = record_path("ethereum:local", options.out_dir)
        record.to_json(path)
        write_abis(options.out_dir)
        # A new chain starts a new journal: an old one records transactions of a chain that no longer exists (and
        # the same deterministic transactions again would collide with them).
        for suffix in ("", "-wal", "-shm"):
            Path(str(options.journal_path) + suffix).unlink(missing_ok=True)
        options.config_path.parent.mkdir(parents=True, exist_ok=True)
        options.config_path.write_text(keeper_config_toml(node.rpc_url, path, options))
        say(f"anvil {node.rpc_url} (chain {record.chain_id}) at {table.dates[-1]} + 1 h, {len(table.dates)} daily "
            f"rounds of {', '.join(table.symbols)}, pools aligned to the last close")
        say(f"router {record.router} ({record.router_kind})")
        say(f"vault {record.vault}, depositor {depositor} deposited {options.deposit_usd:,.0f} USDC")
        say(f"wrote {path}, {path.with_suffix('.env')}, {options.out_dir / 'abi'}/, {options.config_path}")
        return LocalSystem(node=node, record=path, config=options.config_path)
    except BaseException:
        node.stop()
        raise


def keeper_config_toml(rpc_url: str, record: Path, options: LocalUpOptions) -> str:
    """The keeper config of the local system: the deployment file, the policy's history, the journal."""
    return (
        "# Written by `keeper local-up`: a keeper against the local system (chain id and addresses from the file).\n"
        "[chain]\n"
        f'rpc_url = "{rpc_url}"\n'
        f'deployment_file = "{record}"\n'
        'private_key_env = "KEEPER_PRIVATE_KEY"   # Anvil dev account 1, which holds KEEPER_ROLE\n'
        "\n[policy]\n"
        f"lookback_days = {options.lookback_days}\n"
        f'estimator = {{ method = "ewma", half_life_days = 30, min_observations = {min(30, options.lookback_days - 1)} }}\n'
        "\n[operations]\n"
        f'journal_path = "{options.journal_path}"\n'
        "interval_seconds = 3600\n"
    )


def run_local_up(options: LocalUpOptions) -> int:
    """``keeper local-up``: :func:`bring_up`, print the next commands, wait for SIGINT/SIGTERM, stop Anvil."""
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        system = bring_up(options, lambda line: print(line, flush=True))
        try:
            print(f"ready. In another shell:\n  export KEEPER_PRIVATE_KEY={ANVIL_KEYS[1]}\n"
                  f"  ./run keeper run --config {system.config} --once\n"
                  f"  ./run keeper status --config {system.config}\n"
                  "Ctrl-C stops the chain.", flush=True)
            while not stop.wait(0.5):
                pass
        finally:
            system.node.stop()
            print("anvil stopped", flush=True)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
