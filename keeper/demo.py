"""``keeper demo``: real price history replayed through the whole system on a local Anvil.

Starts Anvil at the first date of the window, deploys tokens, feeds, Uniswap V3 and the vault, has
three depositors deposit, then replays each bar (a day, or an hour of an hourly file: the bar is the data's,
:func:`keeper.data.load_prices`): push the closes to the feeds as new rounds, let an arbitrageur move every pool
to the oracle price with real swaps, process depositors' deposits and redemptions, and run the keeper's tick
(every ``rebalance_every_days`` days of bars, or ``rebalance_every_bars``). The keeper's policy gets the data's
``bar_seconds``: it samples the feeds' rounds every bar and annualises with 365 days / bar. Ends with a report
(:mod:`keeper.report`): text, PNG chart and JSON.

Input: the CSV goes through the one validation path of :mod:`keeper.price_panel` (as the backtest's); a window
with less history before it than the estimator's warm-up is refused with how much is needed. SIGINT (Ctrl-C) or
SIGTERM stops the replay after the current bar, stops Anvil and writes the report of the bars replayed so far
(``"interrupted"`` names the signal).

Options mode (``DemoOptions.options_mode``, ``keeper demo --options``) adds an ``OptionMarket``
(:func:`keeper.deployment.deploy_options`) whose implied-volatility feeds get one answer a day: BTC from
Deribit's DVOL (DVOL/100 as the ATM 30-day implied vol; a day without a value carries the last one
forward and is flagged), every other asset from the realised-volatility proxy
(:func:`keeper.implied_vol.realised_vol_proxy`, stated as derived in the report). The keeper runs in its
options mode (``option_market_address`` in its config, as a live keeper would): each tick estimates the
covariance and the ERC targets, and instead of a spot-only rebalance its
options path (:mod:`keeper.option_desk`) settles expired series (from the keeper's key, through
its write-ahead journal), plans the put overlay, decides the delta hedge and sends one
``rebalanceWithOptions``. The replay is then run twice more on fresh chains with the same days, prices and
flows, as ``keeper backtest --overlay-report`` compares: the same policy in spot only (no options), and the
same-net-delta control (spot and cash only, targeting each day the overlay run's net delta per asset,
:class:`keeper.strategies.NetDeltaControl`). The report compares the three over the replay and over each stress
window inside it (:func:`keeper.options_report.compare_runs`: max drawdown, return, realised vol, premium paid and
received, premium per point of drawdown saved, turnover).
"""

from __future__ import annotations

import bisect
import datetime as dt
import http.client
import itertools
import json
import logging
import urllib.parse
import signal
import sys
import threading
import time
import dataclasses
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from web3 import Web3
from web3.providers.base import JSONBaseProvider

from keeper.chain import ANVIL_KEYS, AnvilProcess, DevSender, connect, contract, dev_accounts, rpc
from keeper.config import ChainSettings, KeeperConfig, OperationsSettings, OptionsSettings, TransactionSettings
from keeper.covariance import EstimatorConfig
from keeper.policy_config import PolicyConfig
from keeper.data import DEFAULT_PRICES_CSV, PriceTable, load_prices
from keeper.price_panel import bars_for_seconds
from keeper.service import log_tick
from keeper.units import SECONDS_PER_DAY
from keeper.deployment import (
    BASE_DECIMALS,
    MAX_UINT256,
    VOL_FEED_DECIMALS,
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
from keeper.option_chain import read_option_book
from keeper.options_report import RunSeries, compare_runs, net_delta_fractions
from keeper.policy import fixed_target
from keeper.policy_decision import PolicyDecision
from keeper.report import DemoRecord, OptionsRecord, build_report
from keeper.stress import DEFAULT_WINDOWS
from keeper.strategies import DecisionContext, NetDeltaControl
from keeper.risk_contributions import relative_risk_contributions
from keeper.runner import Keeper, TickReport, _decision_context

#: Depositors' first deposits, USD.
INITIAL_DEPOSITS_USD = (400_000.0, 350_000.0, 250_000.0)


#: Seconds after each day's close at which the keeper reads (one hour: after every push and swap of the day).
TICK_AFTER_CLOSE_SECONDS = 3600

#: The replay's chain runs the Cancun rules, the EVM version the contracts are compiled for (``foundry.toml``).
#: Prague's EIP-2935 block-hash history contract adds a storage slot every block, and this Anvil rebuilds its
#: whole state trie per block, so each block of a Prague chain costs more than the last (≈ 2 µs of Anvil CPU per
#: block already mined: 10 ms per block after 5,000 blocks); a Cancun chain mines each block in constant time.
#: Cancun is the older rule set and enables nothing Prague forbids; the contracts use none of Prague's additions
#: (EIP-7702, the BLS precompiles, the history contract), and EIP-7623's calldata floor does not bind on the
#: keeper's transactions: the replay's figures, gas per rebalance included, are those of a Prague chain.
DEMO_ANVIL_ARGS = ("--hardfork", "cancun")


@dataclass
class DemoOptions:
    """Parameters of a replay. Dates are inclusive; ``None`` means the file's bounds."""

    data: Path = DEFAULT_PRICES_CSV
    symbols: Sequence[str] | None = None
    start: dt.date | None = dt.date(2022, 1, 1)
    end: dt.date | None = dt.date(2022, 12, 31)
    rebalance_every_days: float = 1
    #: Bars between keeper ticks; overrides ``rebalance_every_days`` (1 = every bar of an hourly file).
    rebalance_every_bars: int | None = None
    out_dir: Path = Path("out")
    half_life_days: float = 30.0
    lookback_days: int = 90
    drift_threshold_bps: float = 300.0
    cash_buffer_bps: float = 500.0
    #: Annualised ex-ante volatility target of the spot mode (fraction; None: fully invested ERC). 0.45 is the
    #: realised volatility of a 60/40 BTC/stable mix over the shipped aligned file's history before the default
    #: window (2020-08-11 .. 2021-12-31: 45.1 %; BTC alone 75.1 %, the untargeted nine-asset ERC 92.9 %, from
    #: ``keeper backtest``): the vault runs the nine-asset risk budget at the risk of a 60/40 BTC/cash holding.
    volatility_target: float | None = 0.45
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
    #: Also replay the same policy in spot only and the same-net-delta control (same days and flows) to compare.
    compare_without_overlay: bool = True
    #: Assets of the options mode when ``symbols`` is None: the three with listed option markets, which keeps
    #: the three replays of a year near three times the plain demo's wall time.
    options_symbols: Sequence[str] = ("BTC", "ETH", "SOL")


def run_demo(options: DemoOptions) -> dict:
    """Runs the replay and writes ``report.json``, ``report.png`` and the journal into ``options.out_dir``.

    Returns the report dictionary.

    Raises
    ------
    ConfigError
        Bad options or data (unknown asset, a blank cell, a window with less history before it than the
        estimator's warm-up: the message says how many bars are needed and the first start that has them).
    InvalidPriceError
        A bad close in the file (row and column named; :func:`keeper.price_panel.read_price_csv`).
    """
    say = options.progress or ((lambda s: None) if options.quiet else (lambda s: print(s, file=sys.stderr, flush=True)))
    if not options.rebalance_every_days > 0 or (options.rebalance_every_bars is not None
                                                and options.rebalance_every_bars < 1):
        raise ConfigError("rebalance_every_days must be > 0 and rebalance_every_bars at least 1")
    if options.lookback_days < 3:
        raise ConfigError(f"lookback_days is {options.lookback_days}; the estimator needs at least 3 days of history")
    symbols = options.symbols
    if symbols is None and options.options_mode:
        symbols = list(options.options_symbols)
    full = load_prices(options.data, symbols)
    if options.options_mode and not full.daily:
        raise ConfigError(f"{options.data}: the options mode replays daily closes (its implied vols are daily); "
                          f"this file has {full.bar_seconds}-second bars")
    unit = "days" if full.daily else f"bars of {full.bar_seconds} s"
    warmup = bars_for_seconds(options.lookback_days * SECONDS_PER_DAY, full.bar_seconds) + 1
    first = full.index_of(options.start) if options.start else warmup
    if first < warmup:
        earliest = full.label(min(warmup, len(full.dates) - 1))
        raise ConfigError(
            f"{options.data}: the replay from {options.start} has {first} {unit} of history before it; the "
            f"estimator's warm-up needs {warmup} ({options.lookback_days} days of returns + 1): start on or after "
            f"{earliest}, or shorten the lookback (--lookback)"
        )
    last = len(full.dates) - 1 if options.end is None else full.index_after(options.end)
    if last - first < 2:
        raise ConfigError(
            f"window {options.start}..{options.end} leaves {max(last - first + 1, 0)} {unit} to replay after the "
            f"{warmup}-bar warm-up (data {full.label(0)}..{full.label(len(full.dates) - 1)}); at least 3 are "
            "needed: choose a longer window"
        )
    table = full
    symbols = table.symbols
    begin = first - warmup
    out = options.out_dir
    out.mkdir(parents=True, exist_ok=True)
    journal_path = out / "journal.sqlite"

    say(f"replaying {len(symbols)} assets {', '.join(symbols)} from {table.label(first)} to {table.label(last)} "
        f"({last - first + 1} {unit}, {warmup} warm-up bars) from {options.data.name}")
    with _StopOnSignals() as stop:
        if not options.options_mode:
            record, replay_seconds, _ = _replay(options, table, first, last, begin, out, journal_path, say, None, stop)
            _check_reportable(record, stop)
            result = build_report(record, out, replay_seconds=replay_seconds, data_file=options.data,
                                  interrupted=stop.signal)
            say(result["text"])
            return result

        vols = _implied_vol_series(options, table)
        record, replay_seconds, opt = _replay(options, table, first, last, begin, out, journal_path, say,
                                              (options.overlay, vols), stop)
        _check_reportable(record, stop)
        return _options_report(options, table, first, last, begin, out, say, vols, record, replay_seconds, opt, stop)


def _options_report(options: DemoOptions, table: PriceTable, first: int, last: int, begin: int, out: Path,
                    say: Callable[[str], None], vols: dict[str, ImpliedVolSeries], record: DemoRecord,
                    replay_seconds: float, opt: OptionsRecord | None, stop: "_StopOnSignals") -> dict:
    """The options mode's comparison (as ``keeper backtest --overlay-report``): after the overlay run, the same
    policy in spot only (``policy/``), then the same-net-delta control (``control/``: spot and cash holding each
    day the overlay run's net delta per asset), each on a fresh chain with the same bars and flows; the report
    compares the three over the replay and the stress windows inside it."""
    policy = control = None
    if options.compare_without_overlay and stop.signal is None:
        # The overlay run's policy (its cash buffer, no volatility target) without options.
        spot = replace(options, cash_buffer_bps=options.options_cash_buffer_bps, volatility_target=None)
        say("replaying the same days with the same policy in spot only (no options)")
        for sub in ("policy", "control"):
            (out / sub).mkdir(parents=True, exist_ok=True)
        policy, seconds, _ = _replay(spot, table, first, last, begin, out / "policy", out / "policy" / "journal.sqlite",
                                     say, None, stop)
        replay_seconds += seconds
        if stop.signal is None:
            say("replaying the same days as the same-net-delta control (spot and cash, the overlay run's net delta)")
            control, seconds, _ = _replay(spot, table, first, last, begin, out / "control",
                                          out / "control" / "journal.sqlite", say, None, stop,
                                          control=NetDeltaControl("control", opt.net_delta))
            replay_seconds += seconds
        if stop.signal is not None:  # interrupted during a comparison replay: report the overlay run alone
            policy = control = None
    comparison = None
    if policy is not None and control is not None:
        comparison = _comparison(record, opt, policy, control)
    result = build_report(record, out, replay_seconds=replay_seconds, data_file=options.data, options=opt,
                          baseline=policy, comparison=comparison, interrupted=stop.signal)
    say(result["text"])
    return result


def _run_series(name: str, record: DemoRecord, opt: OptionsRecord | None = None) -> RunSeries:
    """A replay as the overlay report's :class:`~keeper.options_report.RunSeries`: the share price scaled to the
    first bar's NAV (depositors' flows do not move it), spot turnover per bar (fraction of NAV), cumulative premium
    paid and received (closing sales and settlement payouts), USD; net delta from the options record."""
    share = np.asarray(record.share_prices) / record.share_prices[0] * record.navs[0]
    turnover = np.zeros(len(record.dates))
    row = {d.isoformat(): i for i, d in enumerate(record.dates)}
    for tick in record.ticks:
        if tick["status"] == "rebalanced":
            turnover[row[tick["date"]]] += tick["turnover_bps"] / 1e4
    paid, received = np.zeros(len(record.dates)), np.zeros(len(record.dates))
    for e in opt.events if opt is not None else ():
        i = row[e["date"]]
        if e["kind"] == "buy":
            paid[i] += e["premium"] / 10**BASE_DECIMALS
        else:
            received[i] += (e["premium"] if e["kind"] == "sell" else e["payout"]) / 10**BASE_DECIMALS
    return RunSeries(name, list(record.dates), share, turnover, np.cumsum(paid), np.cumsum(received),
                     dict(opt.net_delta) if opt is not None else {})


def _comparison(record: DemoRecord, opt: OptionsRecord, policy: DemoRecord, control: DemoRecord) -> dict:
    """:func:`keeper.options_report.compare_runs` over the replay and each stress window
    (:data:`keeper.stress.DEFAULT_WINDOWS`) that lies inside it."""
    runs = {"policy": _run_series("policy", policy), "overlay": _run_series("overlay", record, opt),
            "control": _run_series("control", control)}
    start, end = record.dates[0], record.dates[-1]
    periods = {"demo window": {"start": start, "end": end}}
    for w in DEFAULT_WINDOWS:
        if start <= w.start and w.end <= end:
            periods[w.name] = {"start": w.start, "end": w.end}
    metrics, saved = compare_runs(runs, periods, whole_period="demo window")
    held = [[opt.net_delta[d][s] for s in record.symbols] for d in record.dates]
    return {"periods": periods, "metrics": metrics, "saved": saved,
            "series": {"dates": [d.isoformat() for d in record.dates],
                       **{f"share_price_{k}": list(r) for k, r in
                          (("policy", policy.share_prices), ("overlay", record.share_prices),
                           ("control", control.share_prices))},
                       "overlay_net_delta": held}}


def _check_reportable(record: DemoRecord, stop: "_StopOnSignals") -> None:
    if len(record.dates) < 2:
        raise ConfigError(f"{stop.signal or 'stopped'} after {len(record.dates)} replayed bar(s): a report needs two; "
                          "nothing written besides the journal")


class _StopOnSignals:
    """SIGINT and SIGTERM set ``signal`` (the signal's name) instead of ending the process, so that the replay
    stops after its current bar, Anvil is stopped and the report of the bars so far is written. A second signal
    ends the process as usual. Handlers are installed only in the main thread and restored on exit."""

    def __init__(self) -> None:
        self.signal: str | None = None
        self._previous: dict[int, object] = {}

    def _on_signal(self, signum: int, _frame: object) -> None:
        if self.signal is not None:  # the second one: stop now
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)
            return
        self.signal = signal.Signals(signum).name

    def __enter__(self) -> "_StopOnSignals":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._on_signal)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]


def _implied_vol_series(options: DemoOptions, table: PriceTable) -> dict[str, ImpliedVolSeries]:
    """BTC: DVOL/100 (flagged fills); the others: the realised-vol proxy (derived). One series per symbol."""
    out = {s: realised_vol_proxy(table, s) for s in table.symbols}
    if "BTC" in table.symbols:
        out["BTC"] = load_dvol(options.dvol)
    return out


def _replay(options: DemoOptions, table: PriceTable, first: int, last: int, begin: int, out: Path, journal_path: Path,
            say: Callable[[str], None],
            overlay: tuple[OverlayConfig, dict[str, ImpliedVolSeries]] | None,
            stop: "_StopOnSignals | None" = None,
            control: NetDeltaControl | None = None) -> tuple[DemoRecord, float, OptionsRecord | None]:
    """One replay on its own Anvil; ``overlay`` = (policy, implied-vol series) in options mode. A signal caught by
    ``stop`` ends the replay after the current bar (Anvil is stopped on the way out). ``control`` (spot mode only):
    the keeper targets that strategy's NAV fractions instead of its policy's (:class:`_NetDeltaKeeper`)."""
    symbols = table.symbols
    bar = table.bar_seconds
    # The keeper reads a fixed time after each close, before the next bar's close.
    tick_after_close = min(TICK_AFTER_CLOSE_SECONDS, bar // 2)
    tick_every = options.rebalance_every_bars or bars_for_seconds(options.rebalance_every_days * SECONDS_PER_DAY, bar)
    flows_every = bars_for_seconds(options.flows_every_days * SECONDS_PER_DAY, bar) if options.flows_every_days > 0 else 0
    lookback_bars = bars_for_seconds(options.lookback_days * SECONDS_PER_DAY, bar)
    for suffix in ("", "-wal", "-shm"):
        Path(str(journal_path) + suffix).unlink(missing_ok=True)
    t_start = time.perf_counter()
    with AnvilProcess(timestamp=table.close_timestamp(begin) - tick_after_close, extra_args=DEMO_ANVIL_ARGS) as node:
        # The harness (deployment, the daily push, the tick's block, flows, the day's reads) talks to Anvil over
        # its own lean connection; the keeper gets a web3 HTTP connection of its own, as it would live.
        w3 = Web3(_LocalRpc(node.rpc_url), middleware=[])
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
                                          min_observations=min(30, lookback_bars - 1),
                                          periods_per_year=round(table.periods_per_year)),
                lookback_days=options.lookback_days,
                bar_seconds=bar,
                weight_drift_bps=options.drift_threshold_bps,
                cash_buffer_bps=options.cash_buffer_bps if overlay is None else options.options_cash_buffer_bps,
                # The options mode compares the overlay with the same policy without puts, untargeted.
                volatility_target=options.volatility_target if overlay is None else None,
            ),
            options=OptionsSettings() if overlay is None else OptionsSettings(overlay=policy,
                                                                               hedge_trigger=options.hedge_trigger),
            transactions=TransactionSettings(slippage_budget_bps=options.slippage_budget_bps),
            operations=OperationsSettings(journal_path=journal_path),
        )
        if control is None:
            keeper = Keeper(config, w3=connect(node.rpc_url), private_key=ANVIL_KEYS[1], journal=Journal(journal_path))
        else:
            keeper = _NetDeltaKeeper(config, control, table, w3=connect(node.rpc_url), private_key=ANVIL_KEYS[1],
                                     journal=Journal(journal_path))
        record = DemoRecord(symbols=symbols, bar_seconds=bar,
                            volatility_target=options.volatility_target if overlay is None else None)
        one_share = 10 ** vault.functions.decimals().call()
        day_reads = _day_reads(w3, vault, one_share, overlay is not None)
        t_replay = time.perf_counter()
        n_days = last - first + 1
        try:
            for step, t in enumerate(range(first, last + 1)):
                if stop is not None and stop.signal is not None:
                    say(f"{stop.signal}: stopping after {step} {'days' if table.daily else 'bars'}; writing the report so far")
                    break
                ts = table.close_timestamp(t)
                # A daily bar is labelled by its date, another bar by the UTC date-time of its open.
                when = table.dates[t] if table.daily else dt.datetime.fromtimestamp(table.timestamps[t], dt.timezone.utc).replace(tzinfo=None)
                set_time(ts)
                answers = [price_to_answer(price) for price in table.prices[t]]
                feed_answers = answers
                if overlay is not None:
                    day_vols = [vol_series[sym].on(table.dates[t]) for sym in symbols]
                    feed_answers = answers + [vol_to_answer(vol) for vol, _ in day_vols]
                    opt_record.add_vols(table.dates[t], [v for v, _ in day_vols], [f for _, f in day_vols])
                # The closes (and vols) as new rounds, then every pool moved to its close: one transaction.
                arb.push_and_align(feed_answers, answers)
                flows = _depositor_flows(step, depositors, vault, tx, flows_every)
                # The keeper reads at a block a fixed time after the close (an hour for daily bars, half a bar for
                # shorter ones), the same offset every bar, so its grid (block time − k bars) falls after every
                # feed's push of each bar, whatever the seconds between the pushes and the swaps were.
                # The push's block is at ``ts`` exactly; only a depositor's transaction adds a later block.
                latest = w3.eth.get_block("latest")["timestamp"] if _flows_day(step, flows_every) else ts
                rpc(w3, "evm_mine", [max(ts + tick_after_close, latest + 1)])
                report = None
                if step % tick_every == 0:
                    report = keeper.run_once()
                    log_tick(report, min_level=logging.WARNING)  # skips that name an exception or a breaker
                overlay_step = None
                if overlay is not None and report is not None:
                    overlay_step = keeper.last_overlay_step  # this tick's step, if it ran one
                    keeper.last_overlay_step = None
                balances, nav, share_assets, options_value = day_reads()
                record.add_day(
                    date=when,
                    prices=table.prices[t],
                    nav=nav / 10**BASE_DECIMALS,
                    share_price=share_assets / 10**BASE_DECIMALS,
                    weights=_weights(balances, table.prices[t], nav),
                    flows_usd=flows,
                )
                if overlay is not None:
                    opt_record.add_day(options_value / 10**BASE_DECIMALS)
                    opt_record.add_net_delta(table.dates[t], _net_delta(keeper, report, balances, table.prices[t],
                                                                        day_vols, nav,
                                                                        max(ts + tick_after_close, latest + 1)))
                    if overlay_step is not None:
                        opt_record.add_step(table.dates[t], overlay_step)
                        record.add_overlay_step(table.dates[t], overlay_step, report)
                elif report is not None:
                    post = None
                    if report.status == "rebalanced" and report.covariance is not None:
                        w = _weights(balances, table.prices[t], nav)
                        post = relative_risk_contributions(w / w.sum(), np.asarray(report.covariance)).tolist()
                    record.add_tick(when, report, post)
                if step % 30 == 0 or t == last:
                    elapsed = time.perf_counter() - t_replay
                    say(f"  {table.label(t)}  bar {step + 1:4d}/{n_days}  NAV ${nav / 1e6:,.0f}  "
                        f"share {record.share_prices[-1]:.4f}  rebalances {record.rebalances}  "
                        f"({(step + 1) / max(elapsed, 1e-9):.1f} bars/s)")
        except Exception:  # noqa: BLE001 - a signal can kill Anvil mid-bar (Ctrl-C reaches its process group)
            if stop is None or stop.signal is None:
                raise
            say(f"{stop.signal}: the replay stopped during a bar; writing the report of the bars completed")
        replay_seconds = time.perf_counter() - t_replay
    return record, replay_seconds, opt_record


class _LocalRpc(JSONBaseProvider):
    """JSON-RPC over one kept-alive ``http.client`` connection to the replay's own Anvil: the same requests as
    web3's ``HTTPProvider``, at a fraction of its CPU per request (no session, adapter or caching layers).

    A kept-alive connection found closed or reset when reused is reopened and the request sent once more (the
    node closed it while idle); a failure on a fresh connection, and any other failure, is raised (``OSError``,
    ``http.client.HTTPException``).
    """

    def __init__(self, url: str, timeout_seconds: float = 120.0) -> None:
        super().__init__()
        parts = urllib.parse.urlsplit(url)
        self._address = (parts.hostname or "127.0.0.1", parts.port or 80)
        self._timeout = timeout_seconds
        self._conn: http.client.HTTPConnection | None = None
        self._ids = itertools.count()

    def make_request(self, method, params):  # type: ignore[override]
        request = {"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": params or []}
        try:
            body = json.dumps(request).encode()
        except TypeError:  # bytes, HexBytes, ...: web3's encoder
            body = self.encode_rpc_request(method, params)
        reused = self._conn is not None
        try:
            return self._post(body)
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            self._close()
            if not reused:
                raise
            return self._post(body)

    def _post(self, body: bytes) -> dict:
        if self._conn is None:
            self._conn = http.client.HTTPConnection(*self._address, timeout=self._timeout)
        self._conn.request("POST", "/", body=body, headers={"Content-Type": "application/json"})
        response = self._conn.getresponse()
        data = response.read()
        if response.status != 200:
            self._close()
            raise http.client.HTTPException(f"HTTP {response.status} from {self._address}: {data[:200]!r}")
        return json.loads(data)

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def is_connected(self, show_traceback: bool = False) -> bool:
        try:
            return "result" in self.make_request("web3_clientVersion", [])
        except (OSError, http.client.HTTPException):
            if show_traceback:
                raise
            return False


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


def _net_delta(keeper: Keeper, report, balances: Sequence[int], prices: np.ndarray,
               day_vols: Sequence[tuple[float, bool]], nav_base_units: int, mined_at: int) -> dict[str, float]:
    """Options mode: the vault's net delta per asset after the day's step, fraction of NAV
    (:func:`keeper.options_report.net_delta_fractions`, as the backtest records it): spot units and the option
    book read from the chain, deltas at the keeper's decision time (its tick's block, else the block mined for
    it) with the day's implied vols as the vol feeds answer them."""
    desk = keeper.overlay
    assert desk is not None
    book = read_option_book(desk.vault, desk.market, keeper.reader.assets)
    now = report.block_timestamp if report is not None and report.block_timestamp else mined_at
    symbols = keeper.reader.symbols
    vols = {s: vol_to_answer(v) / 10**VOL_FEED_DECIMALS for s, (v, _) in zip(symbols, day_vols)}
    units = np.array(balances[1:], dtype=np.float64) / 1e18
    return net_delta_fractions(symbols, units, prices, book, now, vols, nav_base_units / 10**BASE_DECIMALS)


class _NetDeltaKeeper(Keeper):
    """The keeper of the same-net-delta control: where its policy would trade toward a target, it trades toward
    ``control``'s NAV fractions for the bar's date instead (:class:`keeper.strategies.NetDeltaControl`, spot and
    cash only), through the same :func:`keeper.policy.fixed_target` decision, triggers, planner and cost gate as
    the backtest's control. A policy hold (the estimate refused) and a breaker's de-risking stay as they are. The
    tick's journal row carries the control's decision (its NAV fractions), not the policy's it replaced."""

    def __init__(self, config: KeeperConfig, control: NetDeltaControl, table: PriceTable, **kwargs) -> None:
        super().__init__(config, **kwargs)
        self.control = control
        self._table = table
        self._closes = [table.close_timestamp(t) for t in range(len(table.dates))]
        self._control_decision: PolicyDecision | None = None

    def plan_tick(self, timings: dict[str, float] | None = None, context: dict | None = None) -> TickReport:
        context = {} if context is None else context
        self._control_decision = None
        planned = super().plan_tick(timings, context)
        decision = self._control_decision
        if decision is None:
            return planned
        fields = dict(policy=decision.as_dict(), **_decision_context(decision))
        context.update(fields)  # the tick's final report is built from the context after the send
        return dataclasses.replace(planned, **fields)

    def decide(self, policy_decision: PolicyDecision | None, snapshot, state, timings, **kwargs):
        if policy_decision is not None and policy_decision.action != "hold":
            # The bar whose close the tick follows (the keeper reads a fixed time after each close).
            row = bisect.bisect_right(self._closes, snapshot.block_timestamp) - 1
            symbols = tuple(policy_decision.symbols)
            prices = np.asarray(snapshot.prices_usd, dtype=np.float64)
            # NetDeltaControl reads only the date and the symbols of its context.
            ctx = DecisionContext(self._table.dates[row], symbols, prices, prices[None, :],
                                  estimate=None)  # type: ignore[arg-type]
            allocation = self.control(ctx)
            policy_decision = fixed_target(symbols, allocation.nav_fractions, policy_decision.current_weights,
                                           policy_decision.covariance, self.policy,
                                           reason=f"{self.control.name}: fixed NAV fractions",
                                           nav_base_units=state.total_assets)
            self._control_decision = policy_decision
        return super().decide(policy_decision, snapshot, state, timings, **kwargs)


def _weights(balances: Sequence[int], prices: np.ndarray, nav_base_units: int) -> np.ndarray:
    """Fractions of NAV per risk asset (balances have 18 decimals; NAV has the base asset's 6)."""
    values = np.array(balances[1:], dtype=np.float64) / 1e18 * prices
    return values / (nav_base_units / 10**BASE_DECIMALS)


def _flows_day(step: int, every: int) -> bool:
    """Whether :func:`_depositor_flows` sends transactions on day ``step``."""
    return step == 0 or (every > 0 and step % every == 0)


def _depositor_flows(step: int, depositors: Sequence[str], vault, tx: DevSender, every: int) -> float:
    """Depositors' activity on day ``step``: initial deposits, then every ``every`` days one deposit and
    one redemption (of up to 20% of that depositor's shares, within ``maxRedeem``). Returns net USD in."""
    net = 0.0
    if not _flows_day(step, every):
        return net
    if step == 0:
        for who, usd in zip(depositors, INITIAL_DEPOSITS_USD):
            amount = int(usd * 10**BASE_DECIMALS)
            tx.transact(who, vault.functions.deposit(amount, who))
            net += usd
        return net
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
