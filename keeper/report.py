"""The demo's report: performance and risk of the vault against holding BTC and an equal-weight basket,
risk contributions ex ante (after each rebalance) and realised, trading costs. Text, JSON and PNG.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from keeper.options_report import format_periods
from keeper.units import DAYS_PER_YEAR, SECONDS_PER_DAY, SECONDS_PER_YEAR



@dataclass
class DemoRecord:
    """Per-bar observations of a replay (daily unless ``bar_seconds`` says otherwise) and the keeper's ticks."""

    symbols: tuple[str, ...]
    #: Bar interval of the replayed data, seconds (volatility is annualised with 365 days / bar_seconds bars).
    bar_seconds: int = SECONDS_PER_DAY
    #: The keeper's annualised volatility target (None: none); the report sets the realised volatility beside it.
    volatility_target: float | None = None
    dates: list[dt.date] = field(default_factory=list)
    prices: list[np.ndarray] = field(default_factory=list)
    navs: list[float] = field(default_factory=list)
    share_prices: list[float] = field(default_factory=list)
    weights: list[np.ndarray] = field(default_factory=list)
    flows_usd: list[float] = field(default_factory=list)
    ticks: list[dict[str, Any]] = field(default_factory=list)
    rebalances: int = 0

    def add_day(self, date: dt.date, prices: np.ndarray, nav: float, share_price: float,
                weights: np.ndarray, flows_usd: float) -> None:
        self.dates.append(date)
        self.prices.append(np.asarray(prices, dtype=np.float64))
        self.navs.append(nav)
        self.share_prices.append(share_price)
        self.weights.append(np.asarray(weights, dtype=np.float64))
        self.flows_usd.append(flows_usd)

    def add_tick(self, date: dt.date, report: Any, post_trade_rrc: list[float] | None) -> None:
        entry: dict[str, Any] = {"date": date.isoformat(), "status": report.status, "reason": report.reason,
                                 "reason_code": report.reason_code}
        if report.status == "rebalanced":
            self.rebalances += 1
            ex = report.execution
            plan = report.plan
            value_out = sum(leg.oracle_amount_out for leg in ex.legs if leg.side == "sell")
            entry.update(
                tx_hash=ex.tx_hash,
                gas_used=ex.gas_used,
                legs=len(ex.legs),
                turnover_bps=plan.turnover_bps,
                nav_before=ex.nav_before,
                nav_after=ex.nav_after,
                target_weights=report.target_weights,
                rrc_target=report.relative_risk_contributions_target,
                rrc_post_trade=post_trade_rrc,
                ex_ante_volatility=report.ex_ante_volatility,
                leg_slippage_bps=[leg.realised_slippage_bps for leg in ex.legs],
                leg_values=[leg.oracle_amount_out if leg.side == "sell" else leg.amount_in for leg in ex.legs],
                sell_value=value_out,
                timings=report.timings,
            )
        self.ticks.append(entry)


    def add_overlay_step(self, date: dt.date, step: Any, keeper_report: Any) -> None:
        """Options mode: one overlay step (:class:`keeper.option_desk.OverlayStepReport`) as a tick; the ERC
        targets and covariance come from the keeper's tick; post-trade risk contributions are those of the
        delta-adjusted exposures (spot + option delta) after the transaction."""
        entry: dict[str, Any] = {"date": date.isoformat(), "status": "rebalanced" if step.status == "traded" else "skipped",
                                 "reason": step.reason or (step.plan.skip_reason if step.plan else None)}
        if step.status == "traded":
            self.rebalances += 1
            ex = step.execution
            plan = step.plan
            post = None
            if step.greeks_after and keeper_report.covariance is not None:
                w = np.array([step.greeks_after[s]["exposure_weight"] for s in self.symbols])
                cov = np.asarray(keeper_report.covariance)
                if w.sum() > 0:
                    w = w / w.sum()
                    post = (w * (cov @ w) / float(w @ cov @ w)).tolist()
            entry.update(
                tx_hash=ex.tx_hash,
                gas_used=ex.gas_used,
                legs=len(plan.legs) + len(plan.option_legs),
                option_legs=len(plan.option_legs),
                turnover_bps=plan.turnover_bps,
                nav_before=ex.nav_before,
                nav_after=ex.nav_after,
                target_weights=keeper_report.target_weights,
                rrc_target=keeper_report.relative_risk_contributions_target,
                rrc_post_trade=post,
                ex_ante_volatility=keeper_report.ex_ante_volatility,
                leg_slippage_bps=[leg.realised_slippage_bps for leg in ex.legs],
                leg_values=[leg.oracle_amount_out if leg.side == "sell" else leg.amount_in for leg in ex.legs],
                sell_value=sum(leg.oracle_amount_out for leg in ex.legs if leg.side == "sell"),
                premium_paid=step.premium_paid,
                premium_received=step.premium_received,
                timings=step.timings,
            )
        self.ticks.append(entry)


@dataclass
class OptionsRecord:
    """Options mode: implied vols pushed each day, the overlay's trades and settlements (base units)."""

    symbols: tuple[str, ...]
    vol_sources: dict[str, str]
    vol_derived: dict[str, bool]
    vol_dates: list[dt.date] = field(default_factory=list)
    vols: list[list[float]] = field(default_factory=list)
    vol_filled: list[list[bool]] = field(default_factory=list)
    options_value_usd: list[float] = field(default_factory=list)
    premium_paid: int = 0
    premium_received: int = 0
    settlement_payouts: int = 0
    puts_bought: int = 0
    puts_rolled: int = 0
    settlements: int = 0
    overlay_transactions: int = 0
    hedge_transactions: int = 0
    events: list[dict[str, Any]] = field(default_factory=list)
    #: Net delta per asset after each bar's step, fraction of NAV (options included), by date.
    net_delta: dict[dt.date, dict[str, float]] = field(default_factory=dict)

    def add_vols(self, date: dt.date, vols: list[float], filled: list[bool]) -> None:
        self.vol_dates.append(date)
        self.vols.append([float(v) for v in vols])
        self.vol_filled.append([bool(f) for f in filled])

    def add_day(self, options_value_usd: float) -> None:
        self.options_value_usd.append(float(options_value_usd))

    def add_net_delta(self, date: dt.date, net_delta: dict[str, float]) -> None:
        self.net_delta[date] = dict(net_delta)

    def add_step(self, date: dt.date, step: Any) -> None:
        for s in step.settlements:
            self.settlements += 1
            self.settlement_payouts += s.payout
            self.events.append({"date": date.isoformat(), "kind": "settled", "symbol": s.symbol, "strike": s.strike / 1e18,
                                "amount": s.amount / 1e18, "payout": s.payout})
        if step.status != "traded":
            return
        self.overlay_transactions += 1
        if step.plan is not None and step.plan.legs:
            self.hedge_transactions += 1
        for index, is_buy, amount, premium, fair in step.executed:
            leg = step.legs[index]
            if is_buy:
                self.premium_paid += premium
                self.puts_bought += 0 if leg.is_call else 1
            else:
                self.premium_received += premium
                self.puts_rolled += 1 if (not leg.is_call and leg.reason.startswith("roll")) else 0
            self.events.append({"date": date.isoformat(), "kind": "buy" if is_buy else "sell", "symbol": leg.symbol,
                                "strike": leg.strike / 1e18, "expiry": leg.expiry, "amount": amount / 1e18,
                                "premium": premium, "fair_value": fair, "reason": leg.reason})


def max_drawdown(series: np.ndarray) -> tuple[float, int, int]:
    """Largest peak-to-trough fall of ``series`` as a positive fraction, with peak and trough indices."""
    peaks = np.maximum.accumulate(series)
    dd = 1.0 - series / peaks
    trough = int(np.argmax(dd))
    peak = int(np.argmax(series[: trough + 1])) if trough > 0 else 0
    return float(dd[trough]), peak, trough


def annualised_volatility(series: np.ndarray, periods_per_year: float = DAYS_PER_YEAR) -> float:
    """std of the bar returns x √(bars a year): 365 for daily bars, 8,760 for hourly."""
    r = np.diff(series) / series[:-1]
    return float(np.std(r, ddof=1) * np.sqrt(periods_per_year)) if r.size > 1 else float("nan")


def realised_risk_contributions(weights: np.ndarray, prices: np.ndarray) -> np.ndarray:
    """Ex-post relative risk contributions of the risky sleeve.

    With sleeve weights ``w[t-1]`` (normalised to sum 1) and asset returns ``r[t]``, asset i contributes
    ``c_i,t = w_i,t-1 r_i,t`` to the sleeve return ``r_p,t = Σ_i c_i,t``; its share of the variance is
    ``cov(c_i, r_p) / var(r_p)`` (shares sum to 1).
    """
    sleeve = weights / np.maximum(weights.sum(axis=1, keepdims=True), 1e-18)
    r = prices[1:] / prices[:-1] - 1.0
    c = sleeve[:-1] * r
    rp = c.sum(axis=1)
    var = np.var(rp, ddof=1)
    return np.array([np.cov(c[:, i], rp, ddof=1)[0, 1] / var for i in range(c.shape[1])])


def _summary(name: str, series: np.ndarray, dates: list[dt.date], bar_seconds: int = SECONDS_PER_DAY) -> dict[str, Any]:
    dd, peak, trough = max_drawdown(series)
    if bar_seconds == SECONDS_PER_DAY:
        years = max((dates[-1] - dates[0]).days, 1) / DAYS_PER_YEAR
    else:  # the elapsed time of the bars (each label is a bar's open)
        years = max((len(series) - 1) * bar_seconds, 1) / SECONDS_PER_YEAR
    return {
        "name": name,
        "total_return": float(series[-1] / series[0] - 1.0),
        "annualised_return": float((series[-1] / series[0]) ** (1 / years) - 1.0),
        "annualised_volatility": annualised_volatility(series, SECONDS_PER_YEAR / bar_seconds),
        "max_drawdown": dd,
        "max_drawdown_peak": dates[peak].isoformat(),
        "max_drawdown_trough": dates[trough].isoformat(),
    }


def build_report(record: DemoRecord, out_dir: Path, replay_seconds: float, data_file: Path,
                 options: OptionsRecord | None = None, baseline: DemoRecord | None = None,
                 interrupted: str | None = None, comparison: dict[str, Any] | None = None) -> dict[str, Any]:
    """Computes the metrics, writes ``report.json`` and ``report.png`` into ``out_dir``, returns the report
    (with its text rendering under ``"text"``).

    Options mode: ``options`` adds the ``"options"`` section (premiums and payouts in USD, puts bought and
    rolled, implied-vol sources with the days carried forward); ``baseline`` is the same policy without
    options, whose share-price drawdown is reported beside the overlay's; ``comparison`` (``periods``, ``metrics``,
    ``saved`` of :func:`keeper.options_report.compare_runs`, ``series``) is the three-way comparison of the policy,
    the overlay and the same-net-delta control, stored as ``options.comparison`` and rendered as the backtest's
    overlay report renders it."""
    prices = np.array(record.prices)
    share = np.array(record.share_prices)
    weights = np.array(record.weights)
    n = len(record.symbols)
    btc_col = record.symbols.index("BTC") if "BTC" in record.symbols else 0
    btc = prices[:, btc_col] / prices[0, btc_col]
    r = prices[1:] / prices[:-1] - 1.0
    equal = np.concatenate([[1.0], np.cumprod(1.0 + r.mean(axis=1))])
    vault = share / share[0]

    rebal = [t for t in record.ticks if t["status"] == "rebalanced"]
    post = np.array([t["rrc_post_trade"] for t in rebal if t.get("rrc_post_trade")])
    target_rrc = np.array([t["rrc_target"] for t in rebal]) if rebal else np.zeros((0, n))
    budget = np.full(n, 1.0 / n)
    leg_slip = np.concatenate([t["leg_slippage_bps"] for t in rebal]) if rebal else np.zeros(0)
    leg_val = np.concatenate([t["leg_values"] for t in rebal]).astype(float) if rebal else np.zeros(0)
    turnover = np.array([t["turnover_bps"] for t in rebal]) if rebal else np.zeros(0)
    gas = np.array([t["gas_used"] for t in rebal]) if rebal else np.zeros(0)
    skipped: dict[str, int] = {}
    for t in record.ticks:
        if t["status"] != "rebalanced":
            # The tick's reason code (no_trade_needed, not_worth_trading, policy_hold, breaker:<name>, the
            # exception's class), else the first word of its reason.
            key = t.get("reason_code") or (t["reason"] or "").split(":")[0].split(" ")[0] or t["status"]
            skipped[key] = skipped.get(key, 0) + 1
    realised = realised_risk_contributions(weights, prices) if len(prices) > 2 else np.full(n, np.nan)
    report: dict[str, Any] = {
        "data_file": data_file.name,
        "start": record.dates[0].isoformat(),
        "end": record.dates[-1].isoformat(),
        "days": len(record.dates) if record.bar_seconds == SECONDS_PER_DAY
        else len(record.dates) * record.bar_seconds / SECONDS_PER_DAY,
        "bars": len(record.dates),
        "bar_seconds": record.bar_seconds,
        "assets": list(record.symbols),
        "final_nav_usd": record.navs[-1],
        "final_share_price_usd": record.share_prices[-1],
        "net_flows_usd": float(np.sum(record.flows_usd)),
        "strategies": [
            _summary("risk-parity vault (share price)", vault, record.dates, record.bar_seconds),
            _summary("hold BTC", btc, record.dates, record.bar_seconds),
            _summary("equal weight, rebalanced every bar, no costs" if record.bar_seconds != SECONDS_PER_DAY
                     else "equal weight, rebalanced daily, no costs", equal, record.dates, record.bar_seconds),
        ],
        "rebalances": len(rebal),
        "ticks": len(record.ticks),
        "skipped_ticks_by_reason": skipped,
        "turnover_total_pct_nav": float(turnover.sum() / 100.0),
        "turnover_mean_bps": float(turnover.mean()) if turnover.size else 0.0,
        "gas_total": int(gas.sum()),
        "gas_mean_per_rebalance": float(gas.mean()) if gas.size else 0.0,
        "avg_realised_slippage_bps_value_weighted": (
            float(np.sum(leg_slip * leg_val) / np.sum(leg_val)) if leg_val.size and leg_val.sum() > 0 else 0.0
        ),
        "ex_ante_rrc_target_max_abs_error": float(np.max(np.abs(target_rrc - budget))) if target_rrc.size else None,
        "ex_ante_rrc_post_trade_mean": post.mean(axis=0).tolist() if post.size else None,
        "ex_ante_rrc_post_trade_max_abs_deviation": float(np.max(np.abs(post - budget))) if post.size else None,
        "realised_rrc": dict(zip(record.symbols, realised.tolist())),
        "mean_weights": dict(zip(record.symbols, weights.mean(axis=0).tolist())),
        "replay_seconds": replay_seconds,
        "replayed_days_per_second": len(record.dates) / replay_seconds if replay_seconds > 0 else None,
        "series": {
            "dates": [d.isoformat() for d in record.dates],
            "nav_usd": record.navs,
            "share_price_usd": record.share_prices,
            "hold_btc": btc.tolist(),
            "equal_weight": equal.tolist(),
            "weights": weights.tolist(),
        },
        "rebalance_log": rebal,
    }
    if options is not None:
        report["options"] = _options_section(options, vault, baseline, record.dates)
        if comparison is not None:
            report["options"]["comparison"] = comparison
    if record.volatility_target is not None:
        report.update(_volatility_section(record, vault, rebal))
    if interrupted is not None:  # the replay was stopped by a signal: the report covers the bars replayed
        report["interrupted"] = interrupted
    report["text"] = _render(report)
    if interrupted is not None:
        report["text"] = (f"interrupted by {interrupted}: the report covers the {len(record.dates)} bars replayed\n"
                          + report["text"])
    (out_dir / "report.json").write_text(json.dumps(report, indent=1, default=str))
    _chart(record, report, out_dir / "report.png", vault, btc, equal, weights, post)
    report["files"] = [str(out_dir / "report.json"), str(out_dir / "report.png"), str(out_dir / "journal.sqlite")]
    return report


def _options_section(opt: OptionsRecord, vault: np.ndarray, baseline: DemoRecord | None,
                     dates: list[dt.date]) -> dict[str, Any]:
    usd = 10.0**6  # base units per USD (the local USDC has 6 decimals)
    filled = np.array(opt.vol_filled, dtype=bool) if opt.vol_filled else np.zeros((0, len(opt.symbols)), dtype=bool)
    dd, peak, trough = max_drawdown(vault)
    section: dict[str, Any] = {
        "premium_spent_usd": opt.premium_paid / usd,
        "premium_received_on_close_usd": opt.premium_received / usd,
        "settlement_payouts_usd": opt.settlement_payouts / usd,
        "payouts_received_usd": (opt.premium_received + opt.settlement_payouts) / usd,
        "net_premium_usd": (opt.premium_paid - opt.premium_received - opt.settlement_payouts) / usd,
        "puts_bought": opt.puts_bought,
        "puts_rolled": opt.puts_rolled,
        "settlements": opt.settlements,
        "overlay_transactions": opt.overlay_transactions,
        "hedge_transactions": opt.hedge_transactions,
        "final_options_value_usd": opt.options_value_usd[-1] if opt.options_value_usd else 0.0,
        "implied_vol_sources": {
            sym: {
                "source": opt.vol_sources[sym],
                "derived": opt.vol_derived[sym],
                "kind": ("derived from realised volatility (30-day realised x 1.2), not a market quote"
                         if opt.vol_derived[sym] else "Deribit DVOL / 100 as the ATM 30-day implied volatility"),
                "days_carried_forward": int(filled[:, i].sum()) if filled.size else 0,
                "mean": float(np.mean([v[i] for v in opt.vols])) if opt.vols else None,
            }
            for i, sym in enumerate(opt.symbols)
        },
        "max_drawdown_with_overlay": dd,
        "max_drawdown_with_overlay_window": [dates[peak].isoformat(), dates[trough].isoformat()],
        "total_return_with_overlay": float(vault[-1] / vault[0] - 1.0),
        "events": opt.events,
        "series": {"options_value_usd": opt.options_value_usd, "vols": opt.vols},
    }
    if baseline is not None:
        bare = np.array(baseline.share_prices) / baseline.share_prices[0]
        bdd, bpeak, btrough = max_drawdown(bare)
        section.update(
            max_drawdown_without_overlay=bdd,
            max_drawdown_without_overlay_window=[baseline.dates[bpeak].isoformat(), baseline.dates[btrough].isoformat()],
            total_return_without_overlay=float(bare[-1] / bare[0] - 1.0),
            share_price_without_overlay=baseline.share_prices,
            rebalances_without_overlay=baseline.rebalances,
        )
    return section


def _render_options(o: dict[str, Any]) -> list[str]:
    lines = [
        "",
        "option overlay (protective puts, delta-hedged exposures):",
        f"  premium spent ${o['premium_spent_usd']:,.0f}   payouts received ${o['payouts_received_usd']:,.0f} "
        f"(closing sales ${o['premium_received_on_close_usd']:,.0f}, settlements ${o['settlement_payouts_usd']:,.0f})",
        f"  puts bought {o['puts_bought']}, rolled {o['puts_rolled']}, settled {o['settlements']}; "
        f"{o['overlay_transactions']} transactions ({o['hedge_transactions']} with a spot hedge); "
        f"options held at the end ${o['final_options_value_usd']:,.0f}",
        f"  max drawdown with the overlay {o['max_drawdown_with_overlay']:.1%} "
        f"({o['max_drawdown_with_overlay_window'][0]} → {o['max_drawdown_with_overlay_window'][1]}), "
        f"return {o['total_return_with_overlay']:.1%}",
    ]
    if "max_drawdown_without_overlay" in o:
        lines.append(
            f"  max drawdown without the overlay {o['max_drawdown_without_overlay']:.1%} "
            f"({o['max_drawdown_without_overlay_window'][0]} → {o['max_drawdown_without_overlay_window'][1]}), "
            f"return {o['total_return_without_overlay']:.1%} "
            "(the same policy in spot only: same days, prices and flows)"
        )
    if "comparison" in o:
        c = o["comparison"]
        lines += ["", "policy without options, with the put overlay, and the same-net-delta control (spot and cash "
                  "holding the overlay run's net delta per asset); premiums and turnover in fractions of the NAV at "
                  "each window's start:"]
        lines += ["  " + line if line else "" for line in format_periods(c["periods"], c["metrics"], c["saved"])][:-1]
    for sym, v in o["implied_vol_sources"].items():
        lines.append(f"  {sym} implied vol: {v['kind']} [{v['source']}], {v['days_carried_forward']} days carried forward")
    return lines


def _volatility_section(record: DemoRecord, vault: np.ndarray, rebal: list[dict[str, Any]]) -> dict[str, Any]:
    """Realised against target volatility: the share price's annualised volatility over the replay, over each
    30-day window (RMS error against the target, in volatility points), and the targets' ex-ante volatility."""
    target = float(record.volatility_target)  # type: ignore[arg-type]
    periods = SECONDS_PER_YEAR / record.bar_seconds
    r = np.diff(vault) / vault[:-1]
    window = max(2, round(30 * SECONDS_PER_DAY / record.bar_seconds))
    out: dict[str, Any] = {
        "volatility_target": target,
        "realised_volatility": annualised_volatility(vault, periods),
        "ex_ante_volatility_of_targets_mean": (float(np.mean([t["ex_ante_volatility"] for t in rebal]))
                                               if rebal else None),
        "realised_volatility_30d_rms_error": None,
        "realised_volatility_30d_last": None,
    }
    if r.size >= window:
        rolling = np.lib.stride_tricks.sliding_window_view(r, window).std(axis=1, ddof=1) * np.sqrt(periods)
        out["realised_volatility_30d_rms_error"] = float(np.sqrt(np.mean((rolling - target) ** 2)))
        out["realised_volatility_30d_last"] = float(rolling[-1])
    return out


def _render(rep: dict[str, Any]) -> str:
    lines = [
        "",
        f"Risk-parity vault replay  {rep['start']} → {rep['end']}  ({rep['days']:g} days, {len(rep['assets'])} assets, {rep['data_file']})",
        f"final NAV ${rep['final_nav_usd']:,.0f}   share price ${rep['final_share_price_usd']:.4f}   net deposits ${rep['net_flows_usd']:,.0f}",
        "",
        f"{'strategy':44s} {'return':>9s} {'ann.vol':>9s} {'max DD':>9s}  drawdown window",
    ]
    for s in rep["strategies"]:
        lines.append(
            f"{s['name']:44s} {s['total_return']:9.1%} {s['annualised_volatility']:9.1%} {s['max_drawdown']:9.1%}"
            f"  {s['max_drawdown_peak']} → {s['max_drawdown_trough']}"
        )
    if rep.get("volatility_target") is not None:
        rms = rep["realised_volatility_30d_rms_error"]
        lines += ["", f"volatility target {rep['volatility_target']:.1%} (annualised): realised {rep['realised_volatility']:.1%} "
                  "over the replay" + (f", 30-day realised vs target RMS error {rms:.1%} points" if rms is not None
                                       else " (too short for 30-day windows)")]
    lines += [
        "",
        f"rebalances {rep['rebalances']} of {rep['ticks']} ticks; skipped: {rep['skipped_ticks_by_reason']}",
        f"turnover {rep['turnover_total_pct_nav']:.1f}% of NAV in total, {rep['turnover_mean_bps']:.0f} bps per rebalance",
        f"gas {rep['gas_total']:,} in total, {rep['gas_mean_per_rebalance']:,.0f} per rebalance",
        f"average realised slippage vs oracle {rep['avg_realised_slippage_bps_value_weighted']:.2f} bps (value-weighted, pool fee included)",
    ]
    if rep["ex_ante_rrc_target_max_abs_error"] is not None:
        lines.append(f"ex-ante risk contributions of the targets: max |RRC − 1/n| = {rep['ex_ante_rrc_target_max_abs_error']:.1e}")
    if rep["ex_ante_rrc_post_trade_max_abs_deviation"] is not None:
        lines.append(
            f"ex-ante risk contributions of the holdings after each rebalance: max |RRC − 1/n| = "
            f"{rep['ex_ante_rrc_post_trade_max_abs_deviation']:.4f}"
        )
        lines.append("  mean after rebalance: " + "  ".join(
            f"{s} {v:.3f}" for s, v in zip(rep["assets"], rep["ex_ante_rrc_post_trade_mean"])))
    lines.append("realised risk contributions:  " + "  ".join(f"{s} {v:.3f}" for s, v in rep["realised_rrc"].items()))
    if "options" in rep:
        lines += _render_options(rep["options"])
    if rep["replayed_days_per_second"]:
        lines.append(f"replay speed {rep['replayed_days_per_second']:.2f} bars/s ({rep['replay_seconds']:.0f} s)")
    return "\n".join(lines)


def _chart(record: DemoRecord, rep: dict[str, Any], path: Path, vault: np.ndarray, btc: np.ndarray,
           equal: np.ndarray, weights: np.ndarray, post: np.ndarray) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dates = record.dates
    fig, axes = plt.subplots(2, 2, figsize=(14, 9))
    ax = axes[0, 0]
    ax.plot(dates, vault, label="vault share price", lw=2)
    ax.plot(dates, btc, label="hold BTC", alpha=0.8)
    ax.plot(dates, equal, label="equal weight (daily, no costs)", alpha=0.8)
    ax.set_title("Value of 1 USD")
    ax.legend()
    ax.grid(alpha=0.3)
    ax = axes[0, 1]
    for series, label in ((vault, "vault"), (btc, "BTC"), (equal, "equal weight")):
        ax.plot(dates, series / np.maximum.accumulate(series) - 1.0, label=label)
    bare = rep.get("options", {}).get("share_price_without_overlay")
    if bare:
        b = np.array(bare)
        ax.plot(dates, b / np.maximum.accumulate(b) - 1.0, label="vault without the overlay", ls="--")
    ax.set_title("Drawdown")
    ax.legend()
    ax.grid(alpha=0.3)
    ax = axes[1, 0]
    ax.stackplot(dates, weights.T, labels=record.symbols)
    ax.set_title("Weights (fraction of NAV; the rest is the base asset)")
    ax.legend(loc="lower left", fontsize=7, ncol=3)
    ax = axes[1, 1]
    if post.size:
        rdates = [(dt.datetime if "T" in t["date"] else dt.date).fromisoformat(t["date"])
                  for t in rep["rebalance_log"] if t.get("rrc_post_trade")]
        for i, s in enumerate(record.symbols):
            ax.plot(rdates, post[:, i], marker=".", lw=0.8, label=s)
        ax.axhline(1.0 / len(record.symbols), color="k", ls="--", lw=1)
    ax.set_title("Ex-ante relative risk contributions after each rebalance")
    ax.grid(alpha=0.3)
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
