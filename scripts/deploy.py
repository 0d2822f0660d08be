"""Deploys the whole system (tokens, push feeds, Uniswap V3 with seeded pools, the vault) to a local
chain whose dev accounts are unlocked (Anvil), and writes the addresses to a JSON file.

    .venv/bin/python scripts/deploy.py --rpc-url http://127.0.0.1:8545 --out deployment.json

``--router swaprouter02`` deploys Uniswap's ``SwapRouter02`` (the router of its testnet deployments) for
the vault instead of the original ``SwapRouter``.

Account roles: dev account 0 administers everything, 1 is the keeper, 2 the guardian. Initial prices
are the first closes of the shipped history. With ``--timelock-delay SECONDS`` the vault's admin role
moves to an OpenZeppelin TimelockController (dev account 0 proposes and executes), so every admin
action is scheduled in public and waits that long; the guardian still pauses at once.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from keeper.chain import connect, dev_accounts
from keeper.data import load_prices
from keeper.deployment import ROUTER_KINDS, deploy_system, place_behind_timelock


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rpc-url", default="http://127.0.0.1:8545")
    parser.add_argument("--assets", default="BTC,ETH,SOL", help="comma-separated symbols from the shipped data")
    parser.add_argument("--pool-depth-usd", type=float, default=50_000_000.0)
    parser.add_argument("--out", type=Path, default=Path("deployment.json"))
    parser.add_argument("--router", choices=ROUTER_KINDS, default="swaprouter",
                        help="Uniswap router the vault swaps through: the original SwapRouter or SwapRouter02 "
                             "(the router of Uniswap's testnet deployments)")
    parser.add_argument("--timelock-delay", type=int, default=0,
                        help="seconds every admin action must wait (0: the deployer stays the admin)")
    args = parser.parse_args()
    w3 = connect(args.rpc_url)
    table = load_prices(symbols=[s.strip() for s in args.assets.split(",")])
    owner, keeper, guardian = dev_accounts()[:3]
    deployment = deploy_system(w3, owner, keeper, guardian, table.symbols, table.prices[-1], args.pool_depth_usd,
                               router_kind=args.router)
    deployment.to_json(args.out)
    print(f"vault {deployment.vault}\nquoter {deployment.quoter}\nwrote {args.out}")
    if args.timelock_delay > 0:
        timelock = place_behind_timelock(w3, owner, [deployment.vault], proposer=owner,
                                         delay_seconds=args.timelock_delay)
        print(f"timelock {timelock} (delay {args.timelock_delay} s) administers the vault")


if __name__ == "__main__":
    main()
