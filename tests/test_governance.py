"""Admin power behind a timelock: once the vault and the option market are administered by OpenZeppelin's
TimelockController, a compromised admin key can no longer act instantly (give itself the keeper role, point
the vault at another market, change the market's pricing); every such change is public and waits out the
delay, while the guardian can still pause at once."""

from __future__ import annotations

import pytest
from conftest import System

from keeper.chain import contract, rpc
from keeper.deployment import deploy_options, place_behind_timelock
from keeper.errors import ConfigError

DELAY = 2 * 86_400
ZERO = b"\x00" * 32


def test_admin_actions_wait_out_the_timelock(chain: System) -> None:
    w3, owner, attacker = chain.w3, chain.owner, chain.arb
    opts = deploy_options(w3, chain.deployment, owner, (0.6, 0.8, 1.0))
    market = contract(w3, "OptionMarket", opts.market)
    vault = chain.vault
    timelock = contract(w3, "TimelockController", place_behind_timelock(w3, owner, [vault.address, market.address],
                                                                      proposer=owner, delay_seconds=DELAY))
    keeper_role = vault.functions.KEEPER_ROLE().call()

    # The attack a compromised admin key ran before: make itself a keeper in one transaction. Now refused.
    err = chain.call_error(vault.functions.grantRole(keeper_role, attacker), owner)
    assert err.name == "AccessControlUnauthorizedAccount" and err.args[0].lower() == owner.lower()
    assert chain.call_error(market.functions.setParams(500, 3600, 86_400), owner).name == "AccessControlUnauthorizedAccount"
    assert not vault.functions.hasRole(ZERO, owner).call() and vault.functions.hasRole(ZERO, timelock.address).call()

    # Through the timelock: only the proposer may schedule, and nothing executes before the delay.
    data = vault.functions.grantRole(keeper_role, attacker)._encode_transaction_data()
    args = (vault.address, 0, data, ZERO, ZERO)
    assert chain.call_error(timelock.functions.schedule(*args, DELAY), attacker).name == "AccessControlUnauthorizedAccount"
    assert chain.call_error(timelock.functions.schedule(*args, DELAY - 1), owner).name == "TimelockInsufficientDelay"
    chain.tx.transact(owner, timelock.functions.schedule(*args, DELAY))
    op = timelock.functions.hashOperation(*args).call()
    assert timelock.functions.isOperationPending(op).call()  # public: depositors can leave meanwhile
    assert chain.call_error(timelock.functions.execute(*args), owner).name == "TimelockUnexpectedOperationState"
    rpc(w3, "evm_increaseTime", [DELAY - 60])
    rpc(w3, "evm_mine", [])
    assert chain.call_error(timelock.functions.execute(*args), owner).name == "TimelockUnexpectedOperationState"
    rpc(w3, "evm_increaseTime", [60])
    rpc(w3, "evm_mine", [])
    chain.tx.transact(owner, timelock.functions.execute(*args))
    assert vault.functions.hasRole(keeper_role, attacker).call() and timelock.functions.isOperationDone(op).call()

    # The guardian still pauses at once; unpausing is an admin action, so it waits too.
    chain.tx.transact(chain.guardian, vault.functions.pause())
    assert vault.functions.paused().call()
    assert chain.call_error(vault.functions.unpause(), owner).name == "AccessControlUnauthorizedAccount"


def test_a_timelock_without_delay_is_refused(chain: System) -> None:
    with pytest.raises(ConfigError, match="delay_seconds must be > 0"):
        place_behind_timelock(chain.w3, chain.owner, [chain.vault.address], proposer=chain.owner, delay_seconds=0)
