"""``keeper demo``: real price history replayed through the whole system on a local Anvil.

Starts Anvil at the first date of the window, deploys tokens, feeds, Uniswap V3 and the vault, has
three depositors deposit, then replays each day: push the closes to the feeds as new rounds, let an
arbitrageur move every pool to the oracle price with real swaps, process depositors' deposits and
redemptions, and run the keeper's tick (every ``rebalance_every_days`` days). Ends with a report
(:mod:`keeper.report`): text, PNG chart and JSON.

Options mode (``DemoOptions.options_mode``, ``keeper demo --options``) adds an ``OptionMarket``
(:func:`keeper.deployment.deploy_options`) whose implied-volatility feeds get one answer a day: BTC from
Deribit's DVOL (DVOL/100 as the ATM 30-day implied vol; a day without a value carries the last one
forward and is flagged), every other asset from the realised-volatility proxy
(:func:`keeper.implied_vol.realised_vol_proxy`, stated as derived in the report). The keeper runs in its
options mode (``option_market_address`` in its config, as a live keeper would): each tick estimates the
covariance and the ERC targets, and instead of a spot-only rebalance its
options path (:mod:`keeper.option_desk`) settles expired series (from the keeper's key, through
its write-ahead journal), plans the put overlay, decides the delta hedge and sends one
``rebalanceWithOptions``. The replay is then run a second time on
a fresh chain with the same days, prices, volatilities, flows and hedge policy but no puts
(``max_put_assets = 0``): the report compares the drawdowns of the two share prices.
"""

from __future__ import annotations

import datetime as dt
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from keeper.chain import ANVIL_KEYS, AnvilProcess, DevSender, connect, contract, dev_accounts, rpc
from keeper.config import ChainSettings, KeeperConfig, OperationsSettings, OptionsSettings, TransactionSettings
from keeper.covariance import EstimatorConfig
from keeper.policy_config import PolicyConfig
from keeper.data import DEFAULT_PRICES_CSV, PriceTable, load_prices
from keeper.deployment import (
    BASE_DECIMALS,
    MAX_UINT256,
    BatchArbitrageur,
    FeedPusher,
    deploy_options,
    deploy_system,
    price_to_answer,
    vol_to_answer,
)
from keeper.errors import ConfigError
from keeper.hedging import HedgeTriggerConfig
from keeper.overlay import OverlayConfig
from keeper.implied_vol import DEFAULT_DVOL_CSV, ImpliedVolSeries, load_dvol, realised_vol_proxy
from keeper.journal import Journal
from keeper.multicall import Call, call_encoded, decode_aggregate3, decode_uint, encode_aggregate3, selector, uint_word
from keeper.report import DemoRecord, OptionsRecord, build_report
from keeper.risk_contributions import relative_risk_contributions
from keeper.runner import Keeper

#: Depositors' first deposits, USD.
INITIAL_DEPOSITS_USD = (400_000.0, 350_000.0, 250_000.0)


#: Seconds after each day's close at which the keeper reads (one hour: after every push and swap of the day).
TICK_AFTER_CLOSE_SECONDS = 3600

@dataclass
class DemoOptions:
    """Parameters of a replay. Dates are inclusive; ``None`` means the file's bounds."""

    data: Path = DEFAULT_PRICES_CSV
    symbols: Sequence[str] | None = None
    start: dt.date | None = dt.date(2022, 1, 1)
    end: dt.date | None = dt.date(2022, 12, 31)
    rebalance_every_days: int = 1
    out_dir: Path = Path("out")
    half_life_days: float = 30.0
    lookback_days: int = 90
    drift_threshold_bps: float = 300.0
    cash_buffer_bps: float = 500.0
    slippage_budget_bps: float = 50.0
    pool_depth_usd: float = 50_000_000.0
    flows_every_days: int = 30
    quiet: bool = False
    progress: Callable[[str], None] | None = field(default=None, repr=False)
    #: Options mode (module doc): option market, daily implied vols, overlay step, run without the overlay too.
    options_mode: bool = False
    #: Overlay policy of the options mode: 25-delta 30-day puts on the two largest risk contributors, half the
    #: spot units, rolled 5 days before expiry, at most 100 bps of NAV of premium per roll.
    overlay: OverlayConfig = field(default_factory=lambda: OverlayConfig(
        put_delta=-0.25, tenor_days=30.0, roll_before_days=5.0, premium_budget_bps=100.0, max_put_assets=2,
        hedge_ratio=0.5, max_open_series=6))
    hedge_trigger: HedgeTriggerConfig = field(default_factory=HedgeTriggerConfig)
    #: Cash buffer of the options mode, bps of NAV: the delta hedge buys spot against the puts' negative delta.
    options_cash_buffer_bps: float = 1500.0
    dvol: Path = DEFAULT_DVOL_CSV
    #: Also replay without the overlay (same days and flows) to compare drawdowns.
    compare_without_overlay: bool = True
    #: Assets of the options mode when ``symbols`` is None: the three with listed option markets, which keeps
    #: the two replays of a year near twice the plain demo's wall time.
    options_symbols: Sequence[str] = ("BTC", "ETH", "SOL")


def run_demo(options: DemoOptions) -> dict:
    """Runs the replay and writes ``report.json``, ``report.png`` and the journal into ``options.out_dir``.

    Returns the report dictionary.

    Raises
    ------
    ConfigError
        Bad options or data (unknown asset, window too short for the estimator's warm-up).
    """
    say = options.progress or ((lambda s: None) if options.quiet else (lambda s: print(s, file=sys.stderr, flush=True)))
    if options.rebalance_every_days < 1:
        raise ConfigError("rebalance_every_days must be at least 1")
    symbols = options.symbols
    if symbols is None and options.options_mode:
        symbols = list(options.options_symbols)
    full = load_prices(options.data, symbols)
    first = full.index_of(options.start) if options.start else 0
    warmup = options.lookback_days + 1
    if first < warmup:
        if options.start is not None and first > 0:
            say(f"note: only {first} days of history before {options.start}; the replay starts later to warm up")
        first = warmup
    last = len(full.dates) - 1
    if options.end is not None:
        last = int(np.searchsorted(np.array([d.toordinal() for d in full.dates]), options.end.toordinal(), "right")) - 1
    if last - first < 2:
        raise ConfigError(
            f"window {options.start}..{options.end} leaves {max(last - first + 1, 0)} days after a "
            f"{warmup}-day warm-up; choose a later start or a longer window"
        )
    table = full
    symbols = table.symbols
    begin = first - warmup
    out = options.out_dir
    out.mkdir(parents=True, exist_ok=True)
    journal_path = out / "journal.sqlite"

    say(f"replaying {len(symbols)} assets {', '.join(symbols)} from {table.dates[first]} to {table.dates[last]} "
        f"({last - first + 1} days, {warmup} warm-up days) from {options.data.name}")
    if not options.options_mode:
        record, replay_seconds, _ = _replay(options, table, first, last, begin, out, journal_path, say, None)
        result = build_report(record, out, replay_seconds=replay_seconds, data_file=options.data)
        say(result["text"])
        return result

    vols = _implied_vol_series(options, table)
    record, replay_seconds, opt = _replay(options, table, first, last, begin, out, journal_path, say, (options.overlay, vols))
    baseline = None
    if options.compare_without_overlay:
        say("replaying the same days without the overlay (no puts, same hedge policy and flows)")
        bare = out / "without_overlay"
        bare.mkdir(parents=True, exist_ok=True)
        no_puts = replace(options.overlay, max_put_assets=0, covered_calls=False)
        baseline, seconds_bare, _ = _replay(options, table, first, last, begin, bare, bare / "journal.sqlite", say,
                                            (no_puts, vols))
        replay_seconds += seconds_bare
    result = build_report(record, out, replay_seconds=replay_seconds, data_file=options.data, options=opt,
                          baseline=baseline)
    say(result["text"])
    return result


def _implied_vol_series(options: DemoOptions, table: PriceTable) -> dict[str, ImpliedVolSeries]:
    """BTC: DVOL/100 (flagged fills); the others: the realised-vol proxy (derived). One series per symbol."""
    out = {s: realised_vol_proxy(table, s) for s in table.symbols}
    if "BTC" in table.symbols:
        out["BTC"] = load_dvol(options.dvol)
    return out


def _replay(options: DemoOptions, table: PriceTable, first: int, last: int, begin: int, out: Path, journal_path: Path,
            say: Callable[[str], None],
            overlay: tuple[OverlayConfig, dict[str, ImpliedVolSeries]] | None) -> tuple[DemoRecord, float, OptionsRecord | None]:
    """One replay on its own Anvil; ``overlay`` = (policy, implied-vol series) in options mode."""
    symbols = table.symbols
    for suffix in ("", "-wal", "-shm"):
        Path(str(journal_path) + suffix).unlink(missing_ok=True)
    t_start = time.perf_counter()
    with AnvilProcess(timestamp=table.close_timestamp(begin) - 3600) as node:
        w3 = connect(node.rpc_url)
        accounts = dev_accounts()
        deployer, keeper_addr, guardian, arb_addr = accounts[:4]
        depositors = accounts[4:7]
        tx = DevSender(w3)
        deployment = deploy_system(
            w3, deployer, keeper_addr, guardian, symbols, table.prices[begin], pool_depth_usd=options.pool_depth_usd
        )
        deployment.to_json(out / "deployment.json")
        feeds = [contract(w3, "PushPriceFeed", a.feed) for a in deployment.assets]
        vault = contract(w3, "RiskParityVault", deployment.vault)
        base = contract(w3, "TestToken", deployment.base_asset)
        # The harness's daily work is batched (one transaction pushes every feed and aligns every pool); the
        # keeper's own path is untouched.
        pusher = FeedPusher(w3, deployer, [f.address for f in feeds])
        arb = BatchArbitrageur(w3, deployment, deployer, [price_to_answer(p) for p in table.prices[begin]])

        def set_time(ts: int) -> None:
            rpc(w3, "evm_setNextBlockTimestamp", [ts])

        # Warm-up: the feeds accumulate the history the estimator needs (no trading yet).
        for t in range(begin + 1, first):
            set_time(table.close_timestamp(t))
            pusher.push([price_to_answer(price) for price in table.prices[t]])
        opt_record = None
        if overlay is not None:
            policy, vol_series = overlay
            first_vols = [vol_series[sym].on(table.dates[first])[0] for sym in symbols]
            opt_deployment = deploy_options(w3, deployment, deployer, first_vols)
            opt_deployment.to_json(out / "options_deployment.json")
            pusher.adopt([opt_deployment.vol_feeds[a.token] for a in deployment.assets])
            opt_record = OptionsRecord(
                symbols=symbols,
                vol_sources={sym: vol_series[sym].source for sym in symbols},
                vol_derived={sym: bool(vol_series[sym].derived) for sym in symbols},
            )
        arb.take_over(pusher)
        say(f"deployed and warmed up in {time.perf_counter() - t_start:.1f} s; vault {deployment.vault}")

        for who, usd in zip(depositors, INITIAL_DEPOSITS_USD):
            tx.transact(deployer, base.functions.mint(who, int(usd * 10**BASE_DECIMALS) * 10))
            tx.transact(who, base.functions.approve(vault.address, MAX_UINT256))

        config = KeeperConfig(
            chain=ChainSettings(rpc_url=node.rpc_url, vault_address=deployment.vault, quoter_address=deployment.quoter,
                                # Options mode: spot and options in one decision (delta-adjusted targets).
                                option_market_address=None if overlay is None else opt_deployment.market),
            policy=PolicyConfig(
                estimator=EstimatorConfig(method="ewma", half_life_days=options.half_life_days,
                                          min_observations=min(30, options.lookback_days - 1)),
                lookback_days=options.lookback_days,
                weight_drift_bps=options.drift_threshold_bps,
                cash_buffer_bps=options.cash_buffer_bps if overlay is None else options.options_cash_buffer_bps,
            ),
            options=OptionsSettings() if overlay is None else OptionsSettings(overlay=policy,
                                                                               hedge_trigger=options.hedge_trigger),
            transactions=TransactionSettings(slippage_budget_bps=options.slippage_budget_bps),
            operations=OperationsSettings(journal_path=journal_path),
        )
        keeper = Keeper(config, w3=w3, private_key=ANVIL_KEYS[1], journal=Journal(journal_path))
        record = DemoRecord(symbols=symbols)
        one_share = 10 ** vault.functions.decimals().call()
        day_reads = _day_reads(w3, vault, one_share, overlay is not None)
        t_replay = time.perf_counter()
        n_days = last - first + 1
        for step, t in enumerate(range(first, last + 1)):
            ts = table.close_timestamp(t)
            set_time(ts)
            answers = [price_to_answer(price) for price in table.prices[t]]
            feed_answers = answers
            if overlay is not None:
                day_vols = [vol_series[sym].on(table.dates[t]) for sym in symbols]
                feed_answers = answers + [vol_to_answer(vol) for vol, _ in day_vols]
                opt_record.add_vols(table.dates[t], [v for v, _ in day_vols], [f for _, f in day_vols])
            # The closes (and vols) as new rounds, then every pool moved to its close: one transaction.
            arb.push_and_align(feed_answers, answers)
            flows = _depositor_flows(step, depositors, vault, tx, options.flows_every_days)
            # The keeper reads at a block one hour after the close, the same offset every day, so its daily
            # grid (block time − k days) falls after every feed's push of each day, whatever the seconds
            # between the pushes and the swaps were.
            try:
                rpc(w3, "evm_mine", [ts + TICK_AFTER_CLOSE_SECONDS])
            except RuntimeError:  # the day's blocks already passed that time (an hour of wall clock): next second
                rpc(w3, "evm_mine", [w3.eth.get_block("latest")["timestamp"] + 1])
            report = None
            if step % options.rebalance_every_days == 0:
                report = keeper.run_once()
            overlay_step = None
            if overlay is not None and report is not None:
                overlay_step = keeper.last_overlay_step  # this tick's step, if it ran one
                keeper.last_overlay_step = None
            balances, nav, share_assets, options_value = day_reads()
            record.add_day(
                date=table.dates[t],
                prices=table.prices[t],
                nav=nav / 10**BASE_DECIMALS,
                share_price=share_assets / 10**BASE_DECIMALS,
                weights=_weights(balances, table.prices[t], nav),
                flows_usd=flows,
            )
            if overlay is not None:
                opt_record.add_day(options_value / 10**BASE_DECIMALS)
                if overlay_step is not None:
                    opt_record.add_step(table.dates[t], overlay_step)
                    record.add_overlay_step(table.dates[t], overlay_step, report)
            elif report is not None:
                post = None
                if report.status == "rebalanced" and report.covariance is not None:
                    w = _weights(balances, table.prices[t], nav)
                    post = relative_risk_contributions(w / w.sum(), np.asarray(report.covariance)).tolist()
                record.add_tick(table.dates[t], report, post)
            if step % 30 == 0 or t == last:
                elapsed = time.perf_counter() - t_replay
                say(f"  {table.dates[t]}  day {step + 1:4d}/{n_days}  NAV ${nav / 1e6:,.0f}  "
                    f"share {record.share_prices[-1]:.4f}  rebalances {record.rebalances}  "
                    f"({(step + 1) / max(elapsed, 1e-9):.1f} days/s)")
        replay_seconds = time.perf_counter() - t_replay
    return record, replay_seconds, opt_record


def _day_reads(w3, vault, one_share: int, with_options: bool) -> Callable[[], tuple[list[int], int, int, int]]:
    """The demo's end-of-day reads of the vault in one Multicall3 ``eth_call`` (encoded once): balances of
    ``holdings()`` (base first), ``totalAssets()``, ``convertToAssets(one_share)``, ``optionsValue()`` (0 when
    ``with_options`` is False)."""
    views = [selector("holdings()"), selector("totalAssets()"),
             selector("convertToAssets(uint256)") + uint_word(one_share)]
    if with_options:
        views.append(selector("optionsValue()"))
    calldata = encode_aggregate3([Call.to(vault.address, v, False) for v in views])

    def read() -> tuple[list[int], int, int, int]:
        results = decode_aggregate3(call_encoded(w3, calldata))
        holdings = results[0][1]
        at = decode_uint(holdings, 1) // 32
        balances = [decode_uint(holdings, at + 1 + i) for i in range(decode_uint(holdings, at))]
        options_value = decode_uint(results[3][1]) if with_options else 0
        return balances, decode_uint(results[1][1]), decode_uint(results[2][1]), options_value

    return read


def _weights(balances: Sequence[int], prices: np.ndarray, nav_base_units: int) -> np.ndarray:
    """Fractions of NAV per risk asset (balances have 18 decimals; NAV has the base asset's 6)."""
    values = np.array(balances[1:], dtype=np.float64) / 1e18 * prices
    return values / (nav_base_units / 10**BASE_DECIMALS)


def _depositor_flows(step: int, depositors: Sequence[str], vault, tx: DevSender, every: int) -> float:
    """Depositors' activity on day ``step``: initial deposits, then every ``every`` days one deposit and
    one redemption (of up to 20% of that depositor's shares, within ``maxRedeem``). Returns net USD in."""
    net = 0.0
    if step == 0:
        for who, usd in zip(depositors, INITIAL_DEPOSITS_USD):
            amount = int(usd * 10**BASE_DECIMALS)
            tx.transact(who, vault.functions.deposit(amount, who))
            net += usd
        return net
    if every <= 0 or step % every:
        return 0.0
    k = step // every
    giver = depositors[k % len(depositors)]
    taker = depositors[(k + 1) % len(depositors)]
    amount = int(50_000 * 10**BASE_DECIMALS)
    tx.transact(giver, vault.functions.deposit(amount, giver))
    net += amount / 10**BASE_DECIMALS
    shares = min(vault.functions.balanceOf(taker).call() // 5, vault.functions.maxRedeem(taker).call())
    if shares > 0:
        assets = vault.functions.previewRedeem(shares).call()
        tx.transact(taker, vault.functions.redeem(shares, taker, taker))
        net -= assets / 10**BASE_DECIMALS
    return net
