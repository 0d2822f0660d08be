"""Start-up checks of ``keeper run``, ``keeper simulate`` and ``keeper status``: is this the configured chain, is
there a contract at every configured address, does the key hold the vault's keeper role, do the quoter and the
router answer.

Each failed check is one line naming the problem and the fix; :func:`check_or_raise` raises them together as a
:class:`PreflightError` so the keeper never starts against the wrong chain (its journal would mix chains), a
vault address without code (a raw traceback, or a pool blamed later) or a key that cannot rebalance.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from web3 import Web3

from keeper.errors import KeeperError

#: Chain ids of the networks the project knows, for messages.
CHAIN_NAMES = {1: "Ethereum", 11155111: "Ethereum Sepolia", 421614: "Arbitrum Sepolia", 84532: "Base Sepolia",
               31337: "Anvil", 42161: "Arbitrum One", 8453: "Base"}

_FACTORY_ABI = [{"type": "function", "name": "factory", "stateMutability": "view", "inputs": [],
                 "outputs": [{"name": "", "type": "address"}]}]


class PreflightError(KeeperError):
    """One or more start-up checks failed; ``problems`` holds one line per failed check."""

    def __init__(self, problems: list["PreflightProblem"]) -> None:
        self.problems = problems
        super().__init__("start-up checks failed:\n" + "\n".join(f"  {p.line()}" for p in problems))


@dataclass(frozen=True)
class PreflightProblem:
    """A failed start-up check: ``check`` is its short name (``chain_id``, ``code``, ``keeper_role``,
    ``quoter``, ``router``), ``problem`` what is wrong, ``fix`` what to do."""

    check: str
    problem: str
    fix: str

    def line(self) -> str:
        return f"[{self.check}] {self.problem}; fix: {self.fix}"


def _chain_name(chain_id: int) -> str:
    name = CHAIN_NAMES.get(chain_id)
    return f"{chain_id} ({name})" if name else str(chain_id)


def preflight_problems(w3: Web3, chain: Any, keeper_address: str | None) -> list[PreflightProblem]:
    """Runs every start-up check against ``w3`` for the config's ``chain`` section; returns the failures.

    Parameters
    ----------
    chain : keeper.config.ChainSettings
        ``chain_id`` (checked when set), ``vault_address``, ``quoter_address``, ``option_market_address`` and
        ``router_address`` (each checked for code when set; the router defaults to the vault's ``swapRouter()``).
    keeper_address : str or None
        The address the keeper signs with; the role check is skipped when ``None`` (status without a key).

    Raises
    ------
    KeeperError
        Only when the node cannot be reached at all (the RPC layer's error).
    """
    problems: list[PreflightProblem] = []
    actual = int(w3.eth.chain_id)
    if chain.chain_id is not None and actual != chain.chain_id:
        return [PreflightProblem(
            "chain_id", f"rpc_url serves chain {_chain_name(actual)}, the config names {_chain_name(chain.chain_id)}",
            "point chain.rpc_url at a node of the configured chain, or correct chain.chain_id")]
    addresses = {"chain.vault_address": chain.vault_address, "chain.quoter_address": chain.quoter_address}
    if chain.option_market_address:
        addresses["chain.option_market_address"] = chain.option_market_address
    if getattr(chain, "router_address", None):
        addresses["chain.router_address"] = chain.router_address
    empty = set()
    for field, address in addresses.items():
        if len(w3.eth.get_code(Web3.to_checksum_address(address))) == 0:
            empty.add(field)
            problems.append(PreflightProblem(
                "code", f"{field} {address} has no contract code on chain {_chain_name(actual)}",
                f"set {field} to the deployed address (deployments/<network>.json, or chain.deployment_file)"))
    from keeper.multicall import MULTICALL3_ADDRESS

    if len(w3.eth.get_code(Web3.to_checksum_address(MULTICALL3_ADDRESS))) == 0:
        problems.append(PreflightProblem(
            "code", f"no Multicall3 at its canonical address {MULTICALL3_ADDRESS} on chain {_chain_name(actual)}: "
            "the keeper reads the chain through it", "on a local Anvil place it with "
            "keeper.multicall.ensure_multicall3 (keeper local-up and the deploy script do); every public network has it"))
    if "chain.vault_address" in empty:
        return problems
    from keeper.chain import contract

    vault = contract(w3, "RiskParityVault", chain.vault_address)
    try:
        role = vault.functions.KEEPER_ROLE().call()
        router = getattr(chain, "router_address", None) or vault.functions.swapRouter().call()
    except Exception as exc:  # noqa: BLE001 - any failure here means the address is not our vault
        return problems + [PreflightProblem(
            "code", f"chain.vault_address {chain.vault_address} does not answer as a RiskParityVault "
            f"({type(exc).__name__})", "set chain.vault_address to the vault (not the token, pool or router)")]
    if keeper_address is not None and not vault.functions.hasRole(role, Web3.to_checksum_address(keeper_address)).call():
        problems.append(PreflightProblem(
            "keeper_role", f"{keeper_address} does not hold KEEPER_ROLE on the vault {chain.vault_address}",
            f"have the vault's admin call grantRole(KEEPER_ROLE={'0x' + role.hex()}, {keeper_address}), "
            "or sign with the keeper's key (chain.private_key_env / chain.ape_account)"))
    factories = {}
    for check, field, address in (("quoter", "chain.quoter_address", chain.quoter_address),
                                  ("router", "the vault's swapRouter()", router)):
        if field in empty:
            continue
        try:
            factories[check] = w3.eth.contract(address=Web3.to_checksum_address(address), abi=_FACTORY_ABI) \
                .functions.factory().call()
        except Exception as exc:  # noqa: BLE001
            problems.append(PreflightProblem(
                check, f"{field} {address} does not answer factory() ({type(exc).__name__}): not a Uniswap V3 "
                f"{'QuoterV2' if check == 'quoter' else 'router'}",
                f"set it to the network's Uniswap V3 {'QuoterV2' if check == 'quoter' else 'SwapRouter02'} "
                "(keeper/networks.py lists them with their sources)"))
    if len(factories) == 2 and factories["quoter"] != factories["router"]:
        problems.append(PreflightProblem(
            "quoter", f"the quoter quotes pools of factory {factories['quoter']}, the vault swaps in pools of "
            f"{factories['router']}", "use the QuoterV2 of the same Uniswap deployment as the vault's router"))
    return problems


log = logging.getLogger("keeper")


def check_or_raise(w3: Web3, chain: Any, keeper_address: str | None) -> None:
    """:func:`preflight_problems`, raising :class:`PreflightError` when any check failed; logs one warning when
    ``chain.chain_id`` is not set (nothing then stops a keeper pointed at another chain)."""
    if chain.chain_id is None:
        log.warning("chain.chain_id is not set: a node of another chain would not be noticed; set chain.chain_id = "
                    "%d (the chain %s serves) or use chain.deployment_file", int(w3.eth.chain_id), chain.rpc_url)
    problems = preflight_problems(w3, chain, keeper_address)
    if problems:
        raise PreflightError(problems)
