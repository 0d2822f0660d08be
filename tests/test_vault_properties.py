"""Stateful property test of RiskParityVault on one Anvil chain (hypothesis ``RuleBasedStateMachine``).

Each example starts from the same deployed state (``evm_snapshot`` taken when the machine starts,
``evm_revert`` in its teardown): the full system with its option market (``options_env.deploy_env``),
four depositors (alice, bob, carol and an attacker) funded with base and risk tokens, alice and bob
already in the vault. When the vault has ``setFees`` (management / performance fees), setup turns them on
(2 %/year, 10 %) for ``FEE_RECIPIENT``, who is then one more holder whose value others must not take.

Rules (random sequences of): deposit, mint, withdraw, redeem, redeemInKind by any depositor; a keeper
rebalance toward random target weights (legs built here, ``minAmountOut`` 90 bps under the oracle, Σ legs
≤ 30 % of NAV); option buys (``rebalanceWithOptions`` at the market's ask) and sells (at its bid) and
settlement of expired series by the attacker; feed rounds moving each price by up to ±20 % and each implied
vol by up to ±10 % (the arbitrageur then aligns the pools, 3 times in 4); time jumps (a minute up to 31 days:
beyond every expiry and every 2-day heartbeat); donations of base or risk tokens to the vault.

Invariants, after every step:

1. Value: an actor's value is base + Σ risk balance × raw feed answer + shares × the vault's share price
   (convertToAssets(10^36) / 10^36: whatever supply the vault counts, fee shares due included), exact
   fractions, time frozen across the action. A holder's own action (deposit, mint, withdraw, redeem,
   redeemInKind, donation) or the attacker's settleOption never raises its value by more than
   ``ROUNDING_WEI`` and never lowers another holder's (fee recipient included) by more than that; Σ of an
   actor's own-action gains since the last price move / time jump / keeper trade (its round trips) stays
   within ``ROUNDING_WEI`` per action. With an entry/exit fee read through the ABI (``entryExitFeeBps``
   or similar, 0 when absent) the actor loses at least the fee less its own remaining shares' slice of it.
2. Shares × price ≤ assets: convertToAssets(totalSupply) ≤ totalAssets; previewRedeem ≤ convertToAssets,
   previewDeposit ≤ convertToShares, previewMint ≥ convertToAssets, previewWithdraw ≥ convertToShares;
   and every actual deposit / mint / withdraw / redeem moves exactly the previewed amounts.
3. Views: max* never revert, stale feed or not (0 when the vault cannot take or pay). totalAssets,
   convertTo* and preview* never revert while every feed the holdings and open options are priced with is
   fresh and no settlement is pending; with a stale feed their reverts are counted in ``OBSERVED``.
4. max* honesty, stale feed or not: deposit(min(maxDeposit, balance)), withdraw(maxWithdraw),
   redeem(maxRedeem) and mint(min(maxMint, affordable)) as ``eth_call`` from each holder do not revert;
   the actual calls within max* (and the balance) the rules make do not revert either.
Also: Σ holder shares (fee recipient included) = totalSupply, and a redeemInKind pays exactly
⌊balance × (shares − exit fee shares) / (supply + 10^6)⌋ of every holding (stale feed or not).

``benchmarks/bench_vault_properties.py`` runs the same machine for ≥ 10,000 steps.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import pytest
from eth_abi import decode as abi_decode
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test
from web3 import Web3
from options_env import ACCOUNT_3, ACCOUNT_4, ACCOUNT_5, BPS, DAY, USDC, WAD, OptionsEnv, deploy_env

from keeper.chain import decode_revert, dev_accounts, rpc
from keeper.deployment import MAX_UINT256, Arbitrageur, price_to_answer, vol_to_answer
from keeper.errors import TransactionFailedError

VIRTUAL_SHARES = 10**6  # 10 ** the vault's _decimalsOffset
ANSWER_SCALE = 10 ** (18 + 8)  # risk token decimals + feed decimals
#: Largest value gain (base units, exact) an action may give its actor, or loss it may cause another holder:
#: per-asset floors in totalAssets and in the in-kind fractions (4 holdings, ≤ 1 wei each) plus one.
ROUNDING_WEI = 5
CARO, ATTACKER = dev_accounts()[6:8]
#: Candidate names of a fee getter (bps) in a future vault; read through the ABI when present.
FEE_NAMES = ("entryExitFeeBps", "entryFeeBps", "exitFeeBps", "feeBps")
FEE_RECIPIENT = dev_accounts()[8]
#: Shares valued at convertToAssets(PRICE_PROBE) / PRICE_PROBE: the vault's own share price (whatever supply
#: it counts, e.g. fee shares due), exact to < 10^-12 base units for any balance.
PRICE_PROBE = 10**36

CI_SETTINGS = settings(
    max_examples=10,
    stateful_step_count=20,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)

#: Counters shared with the benchmark: steps run, violations (recorded in non-strict mode) and the
#: views seen reverting while a held feed was stale (invariant 3's known finding).
STATS: Counter = Counter()
VIOLATIONS: list[str] = []
OBSERVED: Counter = Counter()


def _part(amount: int, frac: float) -> int:
    """⌊amount × frac⌋ exactly (a float product may round above ``amount``)."""
    return int(amount * Fraction(frac))


def _reason(err: str) -> str:
    """The custom error's name in a TransactionFailedError message (with a nested Error(string) text)."""
    match = re.search(r"(?:refused|\)): (\w+)\(", err)
    name = match.group(1) if match else err[-60:]
    text = re.search(r"x00([A-Za-z][ -~]{3,})'", err)
    return f"{name} {text.group(1)}" if text else name


def _abi_type(output: dict) -> str:
    """The eth_abi type string of an ABI output (structs as tuples)."""
    kind = output["type"]
    if kind.startswith("tuple"):
        return "(" + ",".join(_abi_type(c) for c in output["components"]) + ")" + kind[5:]
    return kind


@dataclass
class Revert:
    error: Any

    def __repr__(self) -> str:
        return f"Revert({self.error})"


@dataclass
class PropEnv(OptionsEnv):
    alice: str = ""
    bob: str = ""
    arbitrageur: Any = None
    actors: tuple[str, ...] = ()
    names: dict[str, str] = field(default_factory=dict)

    def calls(self, items: list[tuple[Any, str | None]]) -> list[Any]:
        """One JSON-RPC batch of eth_calls ``(bound function, sender)``; each result decoded or a :class:`Revert`."""
        if not items:
            return []
        requests = []
        for fn, sender in items:
            tx = {"to": fn.address, "data": fn._encode_transaction_data()}
            if sender:
                tx["from"] = sender
            requests.append(("eth_call", [tx, "latest"]))
        responses = self.w3.provider.make_batch_request(requests)
        assert isinstance(responses, list) and len(responses) == len(items), responses
        out = []
        for (fn, _), response in zip(items, responses):
            if "error" in response:
                data = response["error"].get("data")
                if isinstance(data, dict):
                    data = data.get("data")
                if not isinstance(data, str):
                    raise RuntimeError(f"eth_call failed without revert data: {response['error']}")
                out.append(Revert(decode_revert(data)))
            else:
                types = [_abi_type(o) for o in fn.abi["outputs"]]
                values = abi_decode(types, bytes.fromhex(response["result"][2:]))
                out.append(values[0] if len(values) == 1 else tuple(values))
        return out

    def call(self, fn: Any, sender: str | None = None) -> Any:
        return self.calls([(fn, sender)])[0]

    def has(self, name: str) -> bool:
        return any(item.get("name") == name and item.get("type") == "function" for item in self.vault.abi)


def _setup(env: PropEnv) -> None:
    tx, base, vault = env.tx, env.base, env.vault
    for who in env.actors:
        tx.transact(env.owner, base.functions.mint(who, 5_000_000 * USDC))
        tx.transact(who, base.functions.approve(vault.address, MAX_UINT256))
        for token in env.tokens:
            tx.transact(env.owner, token.functions.mint(who, 50 * WAD))
    if env.has("setFees"):  # management 2 %/year and performance 10 % to FEE_RECIPIENT, a holder like the others
        tx.transact(env.owner, vault.functions.setFees(FEE_RECIPIENT, 200, 1_000))
    tx.transact(env.alice, vault.functions.deposit(1_000_000 * USDC, env.alice))
    tx.transact(env.bob, vault.functions.deposit(300_000 * USDC, env.bob))


@pytest.fixture(scope="module")
def prop_env() -> PropEnv:
    env = make_env()
    yield env
    env.stop()


def make_env() -> PropEnv:
    actors = (ACCOUNT_4, ACCOUNT_5, CARO, ATTACKER)
    env = deploy_env(
        50_000_000, 10_000_000, PropEnv, alice=ACCOUNT_4, bob=ACCOUNT_5, actors=actors,
        names={ACCOUNT_4: "alice", ACCOUNT_5: "bob", CARO: "carol", ATTACKER: "attacker"},
    )
    try:
        env.arbitrageur = Arbitrageur(env.w3, env.system, ACCOUNT_3, env.owner)
        _setup(env)
    except BaseException:
        env.stop()
        raise
    return env


ACTOR = st.sampled_from(range(4))
FRACTION = st.one_of(st.just(1.0), st.floats(0.0, 1.0), st.just(1e-12))


def machine_class(env: PropEnv, strict: bool = True) -> type[RuleBasedStateMachine]:
    """The state machine over ``env``; ``strict=False`` records violations in ``VIOLATIONS`` and goes on."""
    vault = env.vault.functions
    market = env.market.functions
    tokens = [t.address for t in env.tokens]
    fee_fn = next((n for n in FEE_NAMES if env.has(n)), None)
    fee_recipient = env.call(vault.feeRecipient()) if env.has("feeRecipient") else None
    holders = env.actors + ((Web3.to_checksum_address(fee_recipient),) if fee_recipient and int(fee_recipient, 16) else ())
    names = {**env.names, **{h: "feeRecipient" for h in holders[len(env.actors):]}}

    class VaultMachine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.snapshot = rpc(env.w3, "evm_snapshot", [])
            STATS["examples"] += 1
            self.gains = {a: 0 for a in env.actors}  # Σ own-action value gains since the last market event
            self.actions = {a: 0 for a in env.actors}
            self.steps = 0
            self.log: list[str] = []

        def teardown(self) -> None:
            for line in self.log:
                name = line.split("(")[0]
                outcome = " ok" if line.endswith(" ok") else " refused" if " refused (" in line else ""
                STATS[f"rule {name}{outcome}"] += 1
                if " refused (" in line or " not settleable (" in line or " no quote (" in line:
                    STATS[f"{name}: {line.rsplit('(', 1)[-1].strip(')').strip()[:60]}"] += 1
            assert rpc(env.w3, "evm_revert", [self.snapshot])

        # ---------------------------------------------------------------- helpers

        def fail(self, message: str) -> None:
            message = f"{message} | steps: {self.log}"
            if strict:
                raise AssertionError(message)
            VIOLATIONS.append(message)

        def check(self, ok: bool, message: str) -> None:
            if not ok:
                self.fail(message)

        def now(self) -> int:
            return env.w3.eth.get_block("latest")["timestamp"]

        def freeze(self) -> None:
            rpc(env.w3, "evm_setNextBlockTimestamp", [self.now()])

        def send(self, sender: str, fn: Any) -> tuple[bool, str]:
            """Sends at the latest block's time (views before and after see the same clock)."""
            self.freeze()
            try:
                env.tx.transact(sender, fn)
                return True, ""
            except TransactionFailedError as exc:
                return False, str(exc)

        def market_event(self) -> None:
            for a in env.actors:
                self.gains[a] = 0
                self.actions[a] = 0

        def fresh(self) -> bool:
            """Every feed the holdings are priced with answers within its heartbeat; no settlement pending."""
            now = self.now()
            items: list[tuple[Any, str | None]] = [(t.functions.balanceOf(env.vault.address), None) for t in env.tokens]
            items += [(f.functions.latestRoundData(), None) for f in env.feeds + env.vol_feeds]
            items.append((vault.openSeries(), None))
            out = env.calls(items)
            balances, rounds, series = out[:3], out[3:9], out[9]
            held = {i for i, b in enumerate(balances) if b > 0}
            details = env.calls([(market.series(sid), None) for sid in series] + [(market.positionValue(sid, 1), None) for sid in series])
            optioned = {tokens.index(Web3.to_checksum_address(d[0])) for d in details[: len(series)]}
            if any(isinstance(r, Revert) for r in details[len(series):]):
                return False
            for i in held | optioned:
                if now - rounds[i][3] > 2 * DAY:
                    return False
            return all(now - rounds[3 + i][3] <= 2 * DAY for i in optioned)

        def values(self) -> dict[str, Fraction | None]:
            """Each actor's value (base units, exact); shares valued at the vault's own unrounded price."""
            items: list[tuple[Any, str | None]] = [(vault.totalAssets(), None), (vault.convertToAssets(PRICE_PROBE), None)]
            items += [(f.functions.latestRoundData(), None) for f in env.feeds]
            for a in holders:
                items.append((env.base.functions.balanceOf(a), None))
                items += [(t.functions.balanceOf(a), None) for t in env.tokens]
                items.append((vault.balanceOf(a), None))
            out = env.calls(items)
            total_assets, probe = out[0], out[1]
            answers = [r[1] for r in out[2:5]]
            result: dict[str, Any] = {}
            k = 5
            for a in holders:
                base, *bals, shares = out[k : k + 5]
                k += 5
                if isinstance(probe, Revert):
                    result[a] = None
                    continue
                value = Fraction(base) + sum(Fraction(b * p * USDC, ANSWER_SCALE) for b, p in zip(bals, answers))
                result[a] = value + Fraction(shares * probe, PRICE_PROBE)
                result[("fraction", a)] = None if isinstance(total_assets, Revert) else Fraction(shares * probe, PRICE_PROBE * (total_assets + 1))
            return result

        def check_values(self, actor: str, before: dict, after: dict, what: str, fee_assets: Fraction = Fraction(0)) -> Fraction | None:
            """Invariant 1 for an action of ``actor``; ``fee_assets`` is the entry/exit fee it paid (base units)."""
            if before[actor] is None or after[actor] is None:
                return None
            gain = after[actor] - before[actor]
            name = names[actor]
            self.check(gain <= ROUNDING_WEI, f"inv1: {name} gained {float(gain)} base units by {what}")
            if fee_assets and after[("fraction", actor)] is not None:
                # A fee kept by the vault: the payer loses it, less the slice its own remaining shares own.
                least = fee_assets * (1 - after[("fraction", actor)]) - ROUNDING_WEI
                self.check(-gain >= least, f"fee: {name} lost {float(-gain)} by {what}, less than the fee's {float(least)}")
            for other in holders:
                if other != actor and before[other] is not None and after[other] is not None:
                    loss = before[other] - after[other]
                    self.check(
                        loss <= ROUNDING_WEI,
                        f"inv1: {names[other]} lost {float(loss)} base units when {name} did {what}",
                    )
            self.gains[actor] += gain
            self.actions[actor] += 1
            self.check(
                self.gains[actor] <= ROUNDING_WEI * self.actions[actor],
                f"inv1: {name}'s round trips gained {float(self.gains[actor])} in {self.actions[actor]} actions",
            )
            return gain

        def fee_bps(self) -> int:
            """The entry/exit fee in bps, read through the ABI (0 when the vault has none)."""
            return int(env.call(getattr(vault, fee_fn)())) if fee_fn else 0

        def record(self, text: str) -> None:
            self.steps += 1
            STATS["steps"] += 1
            self.log.append(text)

        # ---------------------------------------------------------------- depositors

        @rule(i=ACTOR, amount=st.one_of(st.integers(1, 1_000), st.integers(1, 300_000 * USDC)))
        def deposit(self, i: int, amount: int) -> None:
            a = env.actors[i]
            self.record(f"deposit({env.names[a]}, {amount})")
            max_dep, preview, before_shares, base = env.calls(
                [(vault.maxDeposit(a), None), (vault.previewDeposit(amount), None), (vault.balanceOf(a), None),
                 (env.base.functions.balanceOf(a), None)]
            )
            before = self.values()
            ok, err = self.send(a, vault.deposit(amount, a))
            if not ok:
                if not isinstance(max_dep, Revert) and amount <= max_dep and amount <= base:
                    self.fail(f"inv4: deposit({amount}) ≤ maxDeposit {max_dep} (and the balance) reverted: {err}")
                return
            minted = env.call(vault.balanceOf(a)) - before_shares
            self.check(minted == preview, f"inv2: deposit({amount}) minted {minted}, previewDeposit said {preview}")
            fee = self.fee_bps()
            self.check_values(a, before, self.values(), f"deposit({amount})", Fraction(amount * fee, BPS + fee))

        @rule(i=ACTOR, shares=st.one_of(st.integers(1, 10**6), st.integers(1, 300_000 * USDC * VIRTUAL_SHARES)))
        def mint(self, i: int, shares: int) -> None:
            a = env.actors[i]
            self.record(f"mint({env.names[a]}, {shares})")
            max_mint, preview, base_before = env.calls(
                [(vault.maxMint(a), None), (vault.previewMint(shares), None), (env.base.functions.balanceOf(a), None)]
            )
            before = self.values()
            ok, err = self.send(a, vault.mint(shares, a))
            if not ok:
                affordable = not isinstance(preview, Revert) and preview <= base_before
                if not isinstance(max_mint, Revert) and shares <= max_mint and affordable:
                    self.fail(f"inv4: mint({shares}) ≤ maxMint {max_mint}, affordable, reverted: {err}")
                return
            paid = base_before - env.call(env.base.functions.balanceOf(a))
            self.check(paid == preview, f"inv2: mint({shares}) took {paid}, previewMint said {preview}")
            fee = self.fee_bps()
            self.check_values(a, before, self.values(), f"mint({shares})", Fraction(paid * fee, BPS + fee) - 1)

        @rule(i=ACTOR, frac=FRACTION)
        def withdraw(self, i: int, frac: float) -> None:
            a = env.actors[i]
            max_w = env.call(vault.maxWithdraw(a))
            if isinstance(max_w, Revert):
                self.record(f"withdraw({env.names[a]}) maxWithdraw reverted {max_w}")
                return
            amount = _part(max_w, frac)
            self.record(f"withdraw({env.names[a]}, {amount})")
            if amount == 0:
                return
            preview, shares_before = env.calls([(vault.previewWithdraw(amount), None), (vault.balanceOf(a), None)])
            before = self.values()
            ok, err = self.send(a, vault.withdraw(amount, a, a))
            if not ok:
                self.fail(f"inv4: withdraw({amount}) ≤ maxWithdraw {max_w} reverted: {err}")
                return
            burned = shares_before - env.call(vault.balanceOf(a))
            self.check(burned == preview, f"inv2: withdraw({amount}) burned {burned}, previewWithdraw said {preview}")
            self.check_values(a, before, self.values(), f"withdraw({amount})", Fraction(amount * self.fee_bps(), BPS) - 1)

        @rule(i=ACTOR, frac=FRACTION)
        def redeem(self, i: int, frac: float) -> None:
            a = env.actors[i]
            max_r = env.call(vault.maxRedeem(a))
            if isinstance(max_r, Revert):
                self.record(f"redeem({env.names[a]}) maxRedeem reverted {max_r}")
                return
            shares = _part(max_r, frac)
            self.record(f"redeem({env.names[a]}, {shares})")
            if shares == 0:
                return
            preview, base_before = env.calls([(vault.previewRedeem(shares), None), (env.base.functions.balanceOf(a), None)])
            before = self.values()
            ok, err = self.send(a, vault.redeem(shares, a, a))
            if not ok:
                self.fail(f"inv4: redeem({shares}) ≤ maxRedeem {max_r} reverted: {err}")
                return
            paid = env.call(env.base.functions.balanceOf(a)) - base_before
            self.check(paid == preview, f"inv2: redeem({shares}) paid {paid}, previewRedeem said {preview}")
            self.check_values(a, before, self.values(), f"redeem({shares})", Fraction(paid * self.fee_bps(), BPS) - 1)

        @rule(i=ACTOR, frac=FRACTION)
        def redeem_in_kind(self, i: int, frac: float) -> None:
            a = env.actors[i]
            balance = env.call(vault.balanceOf(a))
            shares = _part(balance, frac)
            self.record(f"redeemInKind({env.names[a]}, {shares})")
            if shares == 0:
                return
            items = [(vault.convertToAssets(PRICE_PROBE), None), (env.base.functions.balanceOf(env.vault.address), None)]
            items += [(t.functions.balanceOf(env.vault.address), None) for t in env.tokens]
            items += [(env.base.functions.balanceOf(a), None)] + [(t.functions.balanceOf(a), None) for t in env.tokens]
            pre = env.calls(items)
            before = self.values()
            ok, err = self.send(a, vault.redeemInKind(shares, a, a))
            if not ok:
                self.fail(f"redeemInKind({shares}) of a holder's own shares reverted: {err}")
                return
            post = env.calls(items[5:] + [(vault.totalSupply(), None)])
            # The supply the fractions use: after any fee shares minted first, before the burn.
            supply = post[-1] + shares + VIRTUAL_SHARES
            fee = self.fee_bps()
            fee_shares = -(-shares * fee // (BPS + fee))
            for k, held in enumerate(pre[1:5]):
                got = post[k] - pre[5 + k]
                want = held * (shares - fee_shares) // supply
                self.check(got == want, f"redeemInKind paid {got} of holding {k}, not its fraction {want}")
            fee_assets = Fraction(0) if isinstance(pre[0], Revert) else Fraction(fee_shares * pre[0], PRICE_PROBE) - 1
            self.check_values(a, before, self.values(), f"redeemInKind({shares})", fee_assets)

        @rule(i=ACTOR, asset=st.integers(0, 3), amount=st.one_of(st.integers(1, 1000), st.integers(1, 10**6 * USDC)))
        def donate(self, i: int, asset: int, amount: int) -> None:
            a = env.actors[i]
            token = env.base if asset == 3 else env.tokens[asset]
            if asset != 3:
                amount = amount * 10**12 // 40  # up to ~25e3 tokens scaled; capped by the balance below
            amount = min(amount, env.call(token.functions.balanceOf(a)))
            self.record(f"donate({env.names[a]}, {'base' if asset == 3 else 'risk%d' % asset}, {amount})")
            if amount == 0:
                return
            before = self.values()
            ok, err = self.send(a, token.functions.transfer(env.vault.address, amount))
            assert ok, err
            self.check_values(a, before, self.values(), f"donation of {amount}")

        # ---------------------------------------------------------------- keeper

        @rule(weights=st.lists(st.floats(0.0, 1.0), min_size=3, max_size=3), buffer=st.floats(0.05, 0.5))
        def rebalance(self, weights: list[float], buffer: float) -> None:
            self.record(f"rebalance({[round(w, 3) for w in weights]}, buffer={buffer:.3f})")
            nav = env.call(vault.totalAssets())
            if isinstance(nav, Revert) or nav == 0:
                return
            total = sum(weights) or 1.0
            items = [(t.functions.balanceOf(env.vault.address), None) for t in env.tokens]
            items += [(f.functions.latestRoundData(), None) for f in env.feeds]
            out = env.calls(items)
            bals, answers = out[:3], [r[1] for r in out[3:]]
            sells, buys = [], []
            budget = nav * 3 // 10  # Σ leg value per rebalance (the turnover cap is 100 % of NAV)
            for k in range(3):
                current = bals[k] * answers[k] * USDC // ANSWER_SCALE
                target = int(nav * (1 - buffer) * weights[k] / total)
                delta = target - current
                if abs(delta) < 10 * USDC:
                    continue
                if delta < 0:
                    amount_in = min(bals[k], -delta * ANSWER_SCALE // (answers[k] * USDC))
                    fair = amount_in * answers[k] * USDC // ANSWER_SCALE
                    sells.append((tokens[k], env.base.address, amount_in, fair * 9910 // BPS, fair))
                else:
                    fair = delta * ANSWER_SCALE // (answers[k] * USDC)
                    buys.append((env.base.address, tokens[k], delta, fair * 9910 // BPS, delta))
            legs = []
            for leg in sells + buys:
                if leg[4] <= budget:
                    budget -= leg[4]
                    legs.append(leg[:4])
            if not legs:
                return
            epoch = env.call(vault.rebalanceEpoch())
            ok, err = self.send(env.keeper, vault.rebalance(legs, 0, epoch, self.now() + 3600))
            self.log[-1] += " ok" if ok else f" refused ({_reason(err)})"
            self.market_event()

        @rule(asset=st.integers(0, 2), is_call=st.booleans(), moneyness=st.sampled_from([0.8, 0.9, 0.95, 1.0, 1.05, 1.1, 1.2]),
              days=st.integers(1, 30), budget=st.floats(0.0002, 0.004))
        def buy_option(self, asset: int, is_call: bool, moneyness: float, days: int, budget: float) -> None:
            self.record(f"buy_option({asset}, call={is_call}, {moneyness:.3f}, {days}d, {budget:.4f})")
            nav = env.call(vault.totalAssets())
            answer = env.call(env.feeds[asset].functions.latestRoundData())[1]
            if isinstance(nav, Revert):
                return
            strike = int(answer * moneyness) * 10**10 // 10**6 * 10**6  # 1e18 USD, coarse so series repeat
            expiry = self.now() + days * DAY
            expiry -= expiry % DAY
            one = env.call(market.quote(tokens[asset], strike, expiry, is_call, WAD, True))
            if isinstance(one, Revert) or one[0] == 0:
                return
            amount = max(1, int(WAD * nav * budget / one[0]))
            self.freeze()
            quote = env.call(market.quote(tokens[asset], strike, expiry, is_call, amount, True))
            if isinstance(quote, Revert):
                return
            leg = (tokens[asset], strike, expiry, is_call, True, amount, quote[0])
            ok, err = self.send(env.keeper, vault.rebalanceWithOptions([], [leg], 0, env.call(vault.rebalanceEpoch()), self.now() + 3600))
            self.log[-1] += " ok" if ok else f" refused ({_reason(err)})"
            self.market_event()

        @rule(pick=st.integers(0, 15), frac=st.floats(0.01, 1.0))
        def sell_option(self, pick: int, frac: float) -> None:
            series = env.call(vault.openSeries())
            self.record(f"sell_option({pick}, {frac:.3f})")
            if not series:
                return
            sid = series[pick % len(series)]
            s = env.call(market.series(sid))
            held = env.call(market.positionOf(sid, env.vault.address))
            amount = max(1, _part(held, frac))
            self.freeze()
            underlying, expiry, is_call, strike = Web3.to_checksum_address(s[0]), s[1], s[2], s[4]
            quote = env.call(market.quote(underlying, strike, expiry, is_call, amount, False))
            if isinstance(quote, Revert):
                self.log[-1] += f" no quote ({quote.error.name})"
                return
            leg = (underlying, strike, expiry, is_call, False, amount, quote[0])
            ok, err = self.send(env.keeper, vault.rebalanceWithOptions([], [leg], 0, env.call(vault.rebalanceEpoch()), self.now() + 3600))
            self.log[-1] += " ok" if ok else f" refused ({_reason(err)})"
            self.market_event()

        @rule(pick=st.integers(0, 15))
        def settle(self, pick: int) -> None:
            series = env.call(vault.openSeries())
            self.record(f"settle({pick})")
            if not series:
                return
            sid = series[pick % len(series)]
            round_id = env.call(market.findSettlementRound(sid))
            if isinstance(round_id, Revert):
                self.log[-1] += f" not settleable ({round_id.error.name})"
                return
            before = self.values()
            ok, err = self.send(ATTACKER, vault.settleOption(sid, round_id))
            self.check(ok, f"settleOption of an expired series with its settlement round reverted: {err}")
            self.log[-1] += " ok" if ok else " refused (settleOption)"
            if ok:
                self.check_values(ATTACKER, before, self.values(), "settleOption")

        # ---------------------------------------------------------------- market and clock

        @rule(moves=st.lists(st.floats(-0.2, 0.2), min_size=3, max_size=3), align=st.sampled_from([True, True, True, False]),
              vol_move=st.floats(-0.1, 0.1))
        def move_prices(self, moves: list[float], align: bool, vol_move: float) -> None:
            self.record(f"move_prices({[round(m, 3) for m in moves]}, align={align})")
            for k, move in enumerate(moves):
                answer = env.call(env.feeds[k].functions.latestRoundData())[1]
                new = max(int(answer * (1 + move)), 10**6)
                env.tx.transact(env.owner, env.feeds[k].functions.pushAnswer(new))
                vol = env.call(env.vol_feeds[k].functions.latestRoundData())[1]
                new_vol = min(max(int(vol * (1 + vol_move)), vol_to_answer(0.2)), vol_to_answer(2.0))
                env.tx.transact(env.owner, env.vol_feeds[k].functions.pushAnswer(new_vol))
                if align:
                    env.arbitrageur.align(tokens[k], new)
            self.market_event()

        @rule(seconds=st.sampled_from([60, 3600, DAY, 2 * DAY + 1, 3 * DAY, 12 * DAY, 31 * DAY]))
        def time_jump(self, seconds: int) -> None:
            self.record(f"time_jump({seconds})")
            rpc(env.w3, "evm_increaseTime", [seconds])
            rpc(env.w3, "evm_mine", [])
            self.market_event()

        # ---------------------------------------------------------------- invariants

        @invariant()
        def accounting(self) -> None:
            STATS["invariant_checks"] += 1
            items: list[tuple[Any, str | None]] = [(vault.totalSupply(), None), (vault.totalAssets(), None)]
            items += [(vault.balanceOf(a), None) for a in holders]
            out = env.calls(items)
            supply, total_assets, shares = out[0], out[1], out[2:]
            self.check(sum(shares) == supply, f"Σ holder shares {sum(shares)} ≠ totalSupply {supply}")
            shares = shares[: len(env.actors)]
            fresh = self.fresh()
            probes = sorted({1, 10**6, 123_456_789, *shares})
            asset_probes = [1, USDC, 123_456 * USDC]
            views: list[tuple[str, Any, str | None]] = [("totalAssets", vault.totalAssets(), None),
                                                        ("convertToAssets(totalSupply)", vault.convertToAssets(supply), None)]
            for s in probes:
                views += [(f"convertToAssets({s})", vault.convertToAssets(s), None), (f"previewRedeem({s})", vault.previewRedeem(s), None),
                          (f"previewMint({s})", vault.previewMint(s), None)]
            for x in asset_probes:
                views += [(f"convertToShares({x})", vault.convertToShares(x), None), (f"previewDeposit({x})", vault.previewDeposit(x), None),
                          (f"previewWithdraw({x})", vault.previewWithdraw(x), None)]
            for a in env.actors:
                views += [(f"maxDeposit({env.names[a]})", vault.maxDeposit(a), None), (f"maxMint({env.names[a]})", vault.maxMint(a), None),
                          (f"maxWithdraw({env.names[a]})", vault.maxWithdraw(a), None), (f"maxRedeem({env.names[a]})", vault.maxRedeem(a), None)]
            results = env.calls([(fn, sender) for _, fn, sender in views])
            named = {name: r for (name, _, _), r in zip(views, results)}
            reverted = [name for name, r in named.items() if isinstance(r, Revert)]
            max_reverted = [name for name in reverted if name.startswith("max")]
            if max_reverted:
                # max* must never revert (0 when the vault cannot take or pay), stale feed or not.
                self.fail(f"inv3: max views reverted (fresh={fresh}): {[(n, named[n]) for n in max_reverted]}")
            if reverted:
                if fresh:
                    self.fail(f"inv3: views reverted with every held feed fresh: {[(n, named[n]) for n in reverted]}")
                else:
                    for name in reverted:
                        OBSERVED[f"{name.split('(')[0]} reverted {named[name].error.name}"] += 1
            if not isinstance(total_assets, Revert):
                self.check(named["convertToAssets(totalSupply)"] <= total_assets,
                           f"inv2: convertToAssets(totalSupply) {named['convertToAssets(totalSupply)']} > totalAssets {total_assets}")
            for s in probes:
                c, r, m = named[f"convertToAssets({s})"], named[f"previewRedeem({s})"], named[f"previewMint({s})"]
                if not any(isinstance(x, Revert) for x in (c, r, m)):
                    self.check(r <= c, f"inv2: previewRedeem({s}) {r} > convertToAssets {c}")
                    self.check(m >= c, f"inv2: previewMint({s}) {m} < convertToAssets {c}")
            for x in asset_probes:
                c, d, w = named[f"convertToShares({x})"], named[f"previewDeposit({x})"], named[f"previewWithdraw({x})"]
                if not any(isinstance(y, Revert) for y in (c, d, w)):
                    self.check(d <= c, f"inv2: previewDeposit({x}) {d} > convertToShares {c}")
                    self.check(w >= c, f"inv2: previewWithdraw({x}) {w} < convertToShares {c}")
            if max_reverted:
                return
            # inv4: the amounts max* returns go through (eth_call from the holder), stale feed or not.
            bases = env.calls([(env.base.functions.balanceOf(a), None) for a in env.actors])
            honesty: list[tuple[str, Any, str]] = []
            for a, base in zip(env.actors, bases):
                n = env.names[a]
                dep = min(named[f"maxDeposit({n})"], base)
                if dep:
                    honesty.append((f"deposit({dep}) by {n}", vault.deposit(dep, a), a))
                    unit = named[f"previewDeposit({USDC})"]
                    mint = 0 if isinstance(unit, Revert) else min(named[f"maxMint({n})"], unit * max(dep // USDC - 1, 0))
                    if mint:
                        honesty.append((f"mint({mint}) by {n}", vault.mint(mint, a), a))
                if named[f"maxWithdraw({n})"]:
                    honesty.append((f"withdraw(maxWithdraw={named[f'maxWithdraw({n})']}) by {n}", vault.withdraw(named[f"maxWithdraw({n})"], a, a), a))
                if named[f"maxRedeem({n})"]:
                    honesty.append((f"redeem(maxRedeem={named[f'maxRedeem({n})']}) by {n}", vault.redeem(named[f"maxRedeem({n})"], a, a), a))
            for (what, _, _), r in zip(honesty, env.calls([(fn, s) for _, fn, s in honesty])):
                self.check(not isinstance(r, Revert), f"inv4: {what} reverted: {r}")

    return VaultMachine


def run_machine(env: PropEnv, config: settings, strict: bool = True) -> None:
    run_state_machine_as_test(machine_class(env, strict=strict), settings=config)


def test_vault_state_machine(prop_env: PropEnv) -> None:
    start = STATS["steps"]
    run_machine(prop_env, CI_SETTINGS)
    assert STATS["steps"] - start > 0
