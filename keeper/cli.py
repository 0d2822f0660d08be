"""Command line: ``keeper demo``, ``keeper run``, ``keeper status``, ``keeper simulate``, ``keeper build``,
``keeper backtest``, ``keeper decode-revert``.

Exit codes (every command):

* 0: done (``simulate``: the plan was simulated and mined on the fork, or the tick skipped with its reason).
* 1: ``run --once``: the tick failed with an error; ``simulate``: the rebalance would revert (reason printed).
* 2: refused input: an invalid config or argument, a missing key, undecodable revert data (one line, ``error: ...``).
* 3: a start-up check failed (wrong chain, no code at an address, no keeper role, quoter or router not
  answering): one line per failed check, each naming the fix (:mod:`keeper.preflight`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import signal
import sys
import threading
from typing import Any
from pathlib import Path

from keeper.errors import ConfigError, KeeperError
from keeper.networks import ROUTER_KINDS

#: Exit codes (module doc).
EXIT_OK, EXIT_FAILED, EXIT_REFUSED, EXIT_PREFLIGHT = 0, 1, 2, 3


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a YYYY-MM-DD date: {text!r}") from exc


def _fraction_or_none(text: str) -> float | None:
    if text.strip().lower() == "none":
        return None
    try:
        value = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a number or 'none': {text!r}") from exc
    if not 0 < value <= 5:
        raise argparse.ArgumentTypeError(f"{value:g} is not an annualised fraction in (0, 5] (0.45 = 45 %)")
    return value


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    parser = argparse.ArgumentParser(prog="keeper", description="Risk-parity vault keeper")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="replay real price history through the whole system on a local Anvil")
    demo.add_argument("--data", type=Path, default=None,
                      help="CSV of closes: a 'date' column of days or a time column (ts_utc, timestamp) of ISO 8601 "
                           "date-times (hourly or other regular bars), then one USD close column per asset")
    demo.add_argument("--assets", default=None, help="comma-separated symbols (default: every column)")
    demo.add_argument("--start", type=_date, default=dt.date(2022, 1, 1), help="first replayed day (default 2022-01-01)")
    demo.add_argument("--end", type=_date, default=dt.date(2022, 12, 31), help="last replayed day (default 2022-12-31)")
    demo.add_argument("--full", action="store_true", help="replay the whole file (ignores --start/--end)")
    demo.add_argument("--rebalance-every", type=float, default=1, help="days between keeper ticks (default 1)")
    demo.add_argument("--rebalance-every-bars", type=int, default=None,
                      help="bars between keeper ticks (overrides --rebalance-every; 1 = every bar of an hourly file)")
    demo.add_argument("--half-life", type=float, default=30.0, help="EWMA half-life, days (default 30)")
    demo.add_argument("--lookback", type=int, default=90, help="days of history per estimate (default 90)")
    demo.add_argument("--drift-bps", type=float, default=300.0, help="rebalance when weights drift this far, bps")
    demo.add_argument("--vol-target", type=_fraction_or_none, default=0.45,
                      help="annualised volatility target, a fraction (default 0.45: the realised vol of 60/40 "
                           "BTC/stable before 2022); 'none' for the fully invested ERC")
    demo.add_argument("--out", type=Path, default=Path("out"), help="directory for report.json/png and the journal")
    demo.add_argument("--quiet", action="store_true")
    demo.add_argument("--options", action="store_true",
                      help="options mode: protective-put overlay on an option market priced with DVOL (BTC) and a "
                           "realised-vol proxy (others), hedged to the budget; also replays the same policy without options "
                           "and a same-net-delta spot-and-cash control, and compares the three "
                           "(assets default to BTC,ETH,SOL)")

    run = sub.add_parser("run", help="run ticks on a schedule against a deployed vault")
    run.add_argument("--config", type=Path, required=True, help="JSON or TOML keeper config")
    run.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                      help="override a config field, e.g. --set policy.es_limit=0.08 (repeatable; keeper.config)")
    run.add_argument("--once", action="store_true", help="run one tick and exit")
    run.add_argument("--log-json", action="store_true", help="one JSON object per log line (or log_json in the config)")
    run.add_argument("--metrics-port", type=int, default=None, help="serve /metrics and /health here (overrides the config)")

    status = sub.add_parser("status", help="vault state, holdings and risk contributions, last ticks, pending transactions")
    status.add_argument("--config", type=Path, required=True, help="JSON or TOML keeper config")
    status.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                      help="override a config field, e.g. --set policy.es_limit=0.08 (repeatable; keeper.config)")
    status.add_argument("--ticks", type=int, default=10, help="how many of the last journalled ticks to show")
    status.add_argument("--address", default=None, help="keeper address (default: the configured key's)")
    status.add_argument("--json", action="store_true", help="print JSON instead of text")

    simulate = sub.add_parser("simulate", help="run one tick's exact plan on an Anvil fork and report the outcome")
    simulate.add_argument("--config", type=Path, required=True, help="JSON or TOML keeper config")
    simulate.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                      help="override a config field, e.g. --set policy.es_limit=0.08 (repeatable; keeper.config)")
    simulate.add_argument("--fork-url", required=True, help="RPC URL of the chain to fork (never written to)")
    simulate.add_argument("--keeper-address", default=None, help="address to impersonate (default: the configured key's)")
    simulate.add_argument("--json", action="store_true", help="print JSON instead of text")

    sub.add_parser("build", help="compile the contracts")

    up = sub.add_parser("local-up", help="bring up a local system a keeper can tick against (Anvil, deployment, feed "
                                         "history, aligned pools, a deposit) and keep it up until Ctrl-C")
    up.add_argument("--assets", default="BTC,ETH,SOL", help="comma-separated symbols of the shipped data (default BTC,ETH,SOL)")
    up.add_argument("--end", type=_date, default=dt.date(2022, 12, 31), help="last day of feed history (default 2022-12-31)")
    up.add_argument("--days", type=int, default=120, help="days of feed history (default 120; >= lookback + 1)")
    up.add_argument("--lookback", type=int, default=90, help="the keeper config's lookback_days (default 90)")
    up.add_argument("--deposit-usd", type=float, default=100_000.0, help="the depositor's deposit, USD (default 100,000)")
    up.add_argument("--port", type=int, default=8545, help="Anvil's port (default 8545)")
    up.add_argument("--out-dir", type=Path, default=Path("out/local"), help="deployment record, .env and ABIs (default out/local)")
    up.add_argument("--config-out", type=Path, default=Path("out/local/keeper.toml"), help="the keeper config written")
    up.add_argument("--journal", type=Path, default=Path("out/local/journal.sqlite"), help="the config's journal_path")
    up.add_argument("--router-kind", choices=ROUTER_KINDS, default="swaprouter",
                    help="the Uniswap router deployed for the vault: swaprouter (default) or swaprouter02")

    sub.add_parser("ape-env", help="print the exports `ape compile` / `ape run` need (the npm solc where no native "
                                   "one is installed): eval \"$(keeper ape-env)\"")

    decode = sub.add_parser("decode-revert", help="decode revert data (a custom error's selector and arguments) into "
                                                  "the error's name and values")
    decode.add_argument("data", help="revert data as hex, e.g. 0x91b46fd2000...; or only the 4-byte selector")
    decode.add_argument("args", nargs="*", help="with a bare selector: the ABI-encoded arguments as further hex words")

    bt = sub.add_parser("backtest", help="replay daily closes offline through the keeper's decision code")
    bt.add_argument("--data", type=Path, default=None,
                    help="CSV of closes: a 'date' column of days, or a time column (ts_utc, timestamp) of ISO 8601 "
                         "date-times for hourly or other regular bars; then one USD close column per asset "
                         "(default: the shipped daily Binance file; data/crypto_hourly_close_binance_btc_eth.csv "
                         "is hourly)")
    bt.add_argument("--assets", default=None, help="comma-separated symbols (default: every column)")
    bt.add_argument("--start", type=_date, default=None, help="first replayed day (default: once warmed up)")
    bt.add_argument("--end", type=_date, default=None, help="last replayed day (default: the file's last)")
    bt.add_argument("--out", type=Path, default=Path("out/backtest"), help="directory for the table, JSON, PNGs")
    bt.add_argument("--half-life", type=float, default=30.0, help="EWMA half-life, days (default 30)")
    bt.add_argument("--lookback", type=int, default=180,
                    help="days of history per estimate (default 180; x24 bars for hourly data)")
    bt.add_argument("--rebalance-every", type=float, default=1, help="days between ticks (default 1)")
    bt.add_argument("--rebalance-every-bars", type=int, default=None,
                    help="bars between ticks (overrides --rebalance-every; 1 = every bar, e.g. hourly)")
    bt.add_argument("--vol-target", type=float, default=0.5, help="annualised vol target of 'ERC vol' (default 0.5)")
    bt.add_argument("--drift-bps", type=float, default=300.0, help="weight-drift band, bps (default 300)")
    bt.add_argument("--rrc-band", type=float, default=0.05, help="risk-contribution drift band (default 0.05)")
    bt.add_argument("--rrc-budget-band", type=float, default=None,
                    help="relative band on max |RRC_i/b_i - 1|, fraction (e.g. 0.2; default off in the backtest)")
    bt.add_argument("--regime-distance", type=float, default=0.25, help="covariance-distance trigger (default 0.25)")
    bt.add_argument("--max-days", type=float, default=30.0,
                    help="time trigger, days (default 30; the policy holds it as max_seconds_between)")
    bt.add_argument("--risk-aversion", type=float, default=5.0, help="price of tracking variance (default 5)")
    bt.add_argument("--no-cost-gate", action="store_true", help="trade whenever a trigger fires")
    bt.add_argument("--pool-depth", type=float, default=250e6, help="base-side pool depth, USD (default 250e6)")
    bt.add_argument("--fee-pips", type=int, default=500, help="pool fee tier, hundredths of a bip (default 500)")
    bt.add_argument("--base-fee-gwei", type=float, default=20.0, help="gas base fee, gwei (default 20)")
    bt.add_argument("--eth-price", type=float, default=None, help="USD per ETH for gas (default: the data's ETH)")
    bt.add_argument("--walk-forward", action="store_true", help="also run the walk-forward evaluation")
    bt.add_argument("--options", action="store_true",
                    help="also run the options mode offline (the demo's put overlay and delta hedge, and the same "
                         "policy without puts); every asset needs implied vols (DVOL for BTC, a realised-vol proxy "
                         "for the others), e.g. --assets BTC,ETH,SOL")
    bt.add_argument("--overlay-report", action="store_true",
                    help="does the put overlay protect? the policy without options, with the insurance overlay, and a "
                         "spot+cash control holding the overlay's net delta, over --start..--end (default the first "
                         "DVOL day to the end) and the May 2021, LUNA and FTX windows; the overlay's parameters "
                         "chosen on data before 2022; writes overlay_report.{txt,json,png} to --out")
    bt.add_argument("--train-days", type=int, default=365, help="walk-forward training window, days")
    bt.add_argument("--test-days", type=int, default=180, help="walk-forward test window, days")
    bt.add_argument("--no-journal", action="store_true", help="do not write the decisions' SQLite journal")
    bt.add_argument("--estimator", choices=("ewma", "sample", "ledoit_wolf", "garch"), default="ewma",
                    help="covariance estimator of the decision policy (default ewma; --half-life is EWMA's, and for "
                         "garch the residual correlation's; garch wants --lookback 730)")
    bt.add_argument("--max-condition-number", type=float, default=1e10,
                    help="conditioning gate's limit on the covariance's condition number (default 1e10)")
    bt.add_argument("--es-limit", type=float, default=None,
                    help="Expected Shortfall limit, fraction of NAV (e.g. 0.08); the policy scales targets "
                         "above it toward the base asset (default: none)")
    bt.add_argument("--es-method", choices=("historical", "gaussian", "cornish_fisher"), default="historical",
                    help="measure of --es-limit (default historical)")
    bt.add_argument("--es-confidence", type=float, default=0.99, help="confidence of --es-limit (default 0.99)")
    bt.add_argument("--es-horizon", type=int, default=1, help="horizon of --es-limit, days (default 1)")
    bt.add_argument("--es-tolerance", type=float, default=0.1,
                    help="holdings above --es-limit by more than this fraction of it trigger a trade (default 0.1)")

    args = parser.parse_args(argv)
    from keeper.logs import configure_logging

    configure_logging(json_output=bool(getattr(args, "log_json", False)))
    try:
        if args.command == "demo":
            from keeper.data import DEFAULT_PRICES_CSV
            from keeper.demo import DemoOptions, run_demo

            logging.getLogger("keeper").setLevel(logging.WARNING)
            options = DemoOptions(
                data=args.data or DEFAULT_PRICES_CSV,
                symbols=[s.strip() for s in args.assets.split(",")] if args.assets else None,
                start=None if args.full else args.start,
                end=None if args.full else args.end,
                rebalance_every_days=args.rebalance_every,
                rebalance_every_bars=args.rebalance_every_bars,
                half_life_days=args.half_life,
                lookback_days=args.lookback,
                drift_threshold_bps=args.drift_bps,
                volatility_target=args.vol_target,
                out_dir=args.out,
                quiet=args.quiet,
                options_mode=args.options,
            )
            report = run_demo(options)
            print(f"\nwrote {', '.join(report['files'])}")
            if report.get("interrupted"):
                return 130 if report["interrupted"] == "SIGINT" else 143  # the shell's codes for those signals
        elif args.command == "run":
            from keeper.metrics import MetricsServer
            from keeper.service import make_metrics, run_forever, start_when_reachable, tick_and_log

            config = _config(args)
            if config.operations.log_json:
                configure_logging(json_output=True)
            port = config.operations.metrics_port if args.metrics_port is None else args.metrics_port
            if args.once:
                keeper = _checked_keeper(config)
                keeper.startup()
                report = tick_and_log(keeper)
                print(f"{report.status}: {report.reason or ''}")
                return 0 if report.status != "error" else 1
            # A node that is down at start is waited for (SIGTERM/SIGINT end the wait, exit 0).
            stop = threading.Event()
            handlers = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
            try:
                keeper = start_when_reachable(lambda: _checked_keeper(config), stop)
            finally:
                for sig, handler in handlers.items():
                    signal.signal(sig, handler)
            if keeper is None:
                logging.getLogger("keeper").info("keeper stopped before the chain became reachable")
                return 0
            server = None
            if port:
                keeper.metrics = make_metrics(config, keeper.w3.provider)
                server = MetricsServer(keeper.metrics, config.operations.metrics_host, port)
                logging.getLogger("keeper").info("metrics on %s/metrics, health on %s/health", server.url, server.url)
            return run_forever(keeper, metrics_server=server)
        elif args.command == "status":
            from keeper.status import collect_status, format_status

            result = collect_status(_config(args), last_ticks=args.ticks, keeper_address=args.address, preflight=True)
            print(json.dumps(result, indent=2, default=str) if args.json else format_status(result))
        elif args.command == "simulate":
            from keeper.simulate import format_simulation, simulate_on_fork

            from keeper.chain import connect
            from keeper.preflight import check_or_raise

            config = _config(args)
            check_or_raise(connect(args.fork_url), config.chain, args.keeper_address or _key_address(config))
            result = simulate_on_fork(config, args.fork_url, keeper_address=args.keeper_address)
            print(json.dumps(result, indent=2, default=str) if args.json else format_simulation(result))
            return EXIT_OK if result["status"] != "reverted" else EXIT_FAILED
        elif args.command == "local-up":
            from keeper.local_up import LocalUpOptions, run_local_up

            return run_local_up(LocalUpOptions(
                symbols=tuple(s.strip().upper() for s in args.assets.split(",")), end=args.end, days=args.days,
                lookback_days=args.lookback, deposit_usd=args.deposit_usd, port=args.port, out_dir=args.out_dir,
                config_path=args.config_out, journal_path=args.journal, router_kind=args.router_kind))
        elif args.command == "ape-env":
            from keeper.ape_env import main as ape_env_main

            ape_env_main()
        elif args.command == "decode-revert":
            from keeper.revert import decode_revert_text

            print(decode_revert_text(args.data, args.args))
        elif args.command == "build":
            from keeper.build import main as build_main

            build_main()
        elif args.command == "backtest":
            _backtest(args)
    except KeeperError as exc:
        from keeper.preflight import PreflightError

        print(f"error: {exc}", file=sys.stderr)
        return EXIT_PREFLIGHT if isinstance(exc, PreflightError) else EXIT_REFUSED
    return EXIT_OK


def _key_address(config: Any) -> str:
    """Address of the configured keeper key (:meth:`keeper.config.KeeperConfig.private_key`)."""
    from eth_account import Account

    return Account.from_key(config.private_key()).address


def _checked_keeper(config: Any) -> Any:
    """A :class:`keeper.runner.Keeper` built after the start-up checks passed on its RPC endpoint.

    Raises
    ------
    PreflightError
        A check failed (wrong chain, no code, no keeper role, quoter or router silent).
    """
    from keeper.chain import connect_failover
    from keeper.preflight import check_or_raise
    from keeper.runner import Keeper

    w3 = connect_failover(config)
    check_or_raise(w3, config.chain, _key_address(config))
    return Keeper(config, w3=w3)


def _config(args: argparse.Namespace) -> Any:
    """The keeper config of ``--config`` with the ``--set`` overrides applied (:func:`keeper.config.with_overrides`)."""
    from keeper.config import load_config, with_overrides

    config = load_config(args.config)
    return with_overrides(config, args.set) if args.set else config


def _backtest(args: argparse.Namespace) -> None:
    """``keeper backtest``: the strategies side by side, optionally the walk-forward; writes ``--out``."""
    import json
    import time

    from keeper.price_panel import DEFAULT_BACKTEST_CSV, load_price_panel
    from keeper.backtest import BacktestConfig, run_backtest
    from keeper.strategies import default_strategies
    from keeper.backtest_report import format_table, write_outputs
    from keeper.costs import GasModel, PoolModel
    from keeper.triggers import TriggerPolicy

    data = args.data or DEFAULT_BACKTEST_CSV
    t0 = time.perf_counter()
    if args.overlay_report:
        _overlay_report(args, data)
        return
    panel = load_price_panel(data, [s.strip() for s in args.assets.split(",")] if args.assets else None, args.end)
    config = BacktestConfig(
        half_life_days=args.half_life,
        lookback_days=args.lookback,
        min_observations=min(30, panel.bars(args.lookback)),
        bar_seconds=panel.bar_seconds,
        rebalance_every_days=args.rebalance_every,
        rebalance_every_bars=args.rebalance_every_bars,
        policy=TriggerPolicy(weight_drift_bps=args.drift_bps, rrc_band=args.rrc_band,
                             rrc_budget_band=args.rrc_budget_band,
                             regime_distance=args.regime_distance, max_seconds_between=args.max_days * 86_400,
                             cost_aware=not args.no_cost_gate, risk_aversion=args.risk_aversion,
                             es_trigger_tolerance=args.es_tolerance),
        pools=PoolModel(fee_pips=args.fee_pips, depth_usd=args.pool_depth),
        gas=GasModel(base_fee_gwei=args.base_fee_gwei, eth_price_usd=args.eth_price),
        estimator_method=args.estimator,
        max_condition_number=args.max_condition_number,
        es_limit=args.es_limit,
        es_method=args.es_method,
        es_confidence=args.es_confidence,
        es_horizon_days=args.es_horizon,
    )
    strategies = default_strategies(args.vol_target, symbols=panel.symbols)
    if args.options and not panel.daily:
        raise ConfigError(f"{data}: --options replays daily closes (the implied vols are daily); this file has "
                          f"{panel.bar_seconds}-second bars")
    if args.options:
        import dataclasses

        from keeper.backtest import BacktestOptions
        from keeper.strategies import RiskParity
        from keeper.data import load_prices
        from keeper.demo import DemoOptions
        from keeper.implied_vol import load_dvol, realised_vol_proxy

        # The demo's options mode offline: DVOL for BTC, the stated realised-vol proxy for the others; the same
        # policy with the hedge but no puts is the baseline that isolates what the puts do.
        demo = DemoOptions()
        table = load_prices(data, list(panel.symbols))
        vols = {s: realised_vol_proxy(table, s) for s in panel.symbols}
        if "BTC" in vols:
            vols["BTC"] = load_dvol(demo.dvol)
        config = dataclasses.replace(config, options=BacktestOptions(
            implied_vols=vols, overlay=demo.overlay, hedge_trigger=demo.hedge_trigger))
        strategies += [
            RiskParity("ERC + puts", demo.options_cash_buffer_bps, with_options=True),
            RiskParity("ERC hedge, no puts", demo.options_cash_buffer_bps, with_options=True,
                       overlay=dataclasses.replace(demo.overlay, max_put_assets=0, covered_calls=False)),
        ]
    run = run_backtest(panel, strategies, config, args.start, args.end)
    doc = write_outputs(run, args.out, data, journal=not args.no_journal)
    print(doc["table"])
    if run["calendar_gaps"]:
        print(f"note: calendar gaps (returns span them): {run['calendar_gaps']}")
    span = (f"{run['days']} days" if panel.daily
            else f"{run['bars']} bars of {panel.bar_seconds} s ({run['days']:.1f} days)")
    print(f"\nreplayed {span} x {len(run['results'])} strategies in {run['seconds']:.1f} s "
          f"({run['speed_asset_days_per_second']:,.0f} asset-{'days' if panel.daily else 'bars'}/s)")
    if args.walk_forward:
        from keeper.walkforward import WalkForwardConfig, format_windows, walk_forward

        wf = walk_forward(panel, config, WalkForwardConfig(train_days=args.train_days, test_days=args.test_days),
                          args.start, args.end)
        text = format_windows(wf.windows) + "\n\n" + format_table([wf.result])
        (args.out / "walkforward.txt").write_text(text + "\n")
        (args.out / "walkforward.json").write_text(json.dumps(
            {"windows": [w.as_dict() for w in wf.windows],
             "metrics": {k: v for k, v in wf.result.metrics.items() if k != "realised_rrc"},
             "seconds": wf.seconds}, indent=1, default=str))
        print("\nwalk-forward (out of sample):\n" + text)
        doc["files"] += [str(args.out / "walkforward.txt"), str(args.out / "walkforward.json")]
    print(f"\nwrote {', '.join(doc['files'])} in {time.perf_counter() - t0:.0f} s")


def _overlay_report(args: argparse.Namespace, data: Any) -> None:
    """``keeper backtest --overlay-report``: :func:`keeper.options_report.run_overlay_report` on the shipped data."""
    import dataclasses
    import time

    from keeper.data import load_prices
    from keeper.demo import DemoOptions
    from keeper.implied_vol import load_dvol, realised_vol_proxy
    from keeper.options_report import OverlayReportConfig, run_overlay_report, write_report
    from keeper.price_panel import load_price_panel

    t0 = time.perf_counter()
    config = OverlayReportConfig(lookback_days=args.lookback)
    if args.assets:
        config = dataclasses.replace(config, assets=tuple(s.strip() for s in args.assets.split(",")))
    if args.start:
        config = dataclasses.replace(config, start=args.start)
    if args.end:
        config = dataclasses.replace(config, end=args.end)
    panel = load_price_panel(data, list(config.assets), config.end)
    table = load_prices(data, list(panel.symbols))
    vols = {s: realised_vol_proxy(table, s) for s in panel.symbols}
    if "BTC" in vols:
        vols["BTC"] = load_dvol(DemoOptions().dvol)
    report = run_overlay_report(panel, vols, config)
    files = write_report(report, args.out)
    print(open(files[0]).read())
    print(f"wrote {', '.join(files)} in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    sys.exit(main())
